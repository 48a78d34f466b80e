"""Reverse mappings: which PTEs map a page.

Mirrors mm/rmap.c of 2.5.27 (the first rmap, Rik van Riel's): each mapped
page has a chain of `struct pte_chain { struct pte_chain *next; pte_t *ptep; }`,
8 bytes of lowmem per mapping PTE (kmalloc from ZONE_NORMAL), with its head
in page->pte_chain.  That memory is the cost Andrea Arcangeli pointed at:
many tasks mapping one big shared region exhaust ZONE_NORMAL.

With reclaim=swap_out (2.4) there are no pte_chains: reclaim finds PTEs by
walking page tables, and this module only keeps page->_mapcount.  The
Python-side map (pfn -> [(mm, va)]) exists in both modes for the checkers
and for rmap's try_to_unmap; swap_out never looks at it.

Rules
  - page_add_rmap / page_remove_rmap run with the PTE change (the caller
    holds what Linux would: mm->page_table_lock); they never sleep.
  - A page whose _mapcount goes below -1 is a KernelBug.
"""
from .bug import KernelBug
from .page_alloc import PAGE_WORDS, PG_dirty, PG_swapcache, W_MAPCOUNT

PTE_CHAIN_SIZE = 8
_NO_MAPPERS = {}           # mappers_now of an unmapped page (never changed)


class Rmap:
    def __init__(self, kernel):
        self.k = kernel
        self.use_chains = kernel.config['reclaim'] == 'rmap'
        self.maps = {}              # pfn -> {(mm, va): chain_va}, in the order mapped
        self.counters = dict(pte_chains=0, pte_chain_bytes=0, pte_chain_bytes_peak=0,
                             pte_chain_alloc_failed=0,
                             rmap_add=0, rmap_remove=0)

    def page_add_rmap(self, pfn, mm, va, pte_pa, anon):
        """page_add_rmap(): one more PTE maps the page."""
        k = self.k
        entries = self.maps.setdefault(pfn, {})
        if (mm, va) in entries:
            raise KernelBug(f'page_add_rmap: pfn {pfn:#x} is already mapped at {va:#x}')
        self.counters['rmap_add'] += 1
        pa = k.page_alloc
        pa.page_words_signed[pfn * PAGE_WORDS + W_MAPCOUNT] += 1          # _mapcount++
        chain = 0
        if self.use_chains:
            chain = k.slab.kmalloc(PTE_CHAIN_SIZE, 'pte_chain')
            if chain is None:
                self.counters['pte_chain_alloc_failed'] += 1
                k.report('warning', 'pte_chain allocation failed: ZONE_NORMAL exhausted')
                chain = 0
            else:
                # kmalloc objects are 8-byte aligned in lowmem: two words
                words, w = k.machine.ram_words, (chain - k.PAGE_OFFSET) >> 2
                words[w] = pa.page_pte_chain(pfn)                       # ->next
                words[w + 1] = pte_pa + k.PAGE_OFFSET                   # ->ptep
                pa.set_page_pte_chain(pfn, chain)
                self.counters['pte_chains'] += 1
                self.counters['pte_chain_bytes'] += PTE_CHAIN_SIZE
                if self.counters['pte_chain_bytes'] > self.counters['pte_chain_bytes_peak']:
                    self.counters['pte_chain_bytes_peak'] = self.counters['pte_chain_bytes']
        entries[(mm, va)] = chain

    def page_remove_rmap(self, pfn, mm, va):
        """page_remove_rmap(): a PTE that mapped the page is gone."""
        k = self.k
        self.counters['rmap_remove'] += 1
        pa = k.page_alloc
        entries = self.maps.get(pfn, {})
        try:
            chain = entries.pop((mm, va))
        except KeyError:
            raise KernelBug(f'page_remove_rmap: pfn {pfn:#x} is not mapped at {va:#x}') from None
        if chain:
            self._unlink_chain(pfn, chain)
        if not entries:
            self.maps.pop(pfn, None)
        mc = pa.page_words_signed
        w = pfn * PAGE_WORDS + W_MAPCOUNT
        count = mc[w] - 1
        mc[w] = count
        if count < -1:
            raise KernelBug(f'page_remove_rmap: pfn {pfn:#x} mapcount went below zero')

    def _unlink_chain(self, pfn, chain):
        k = self.k
        # The walk reads each entry's next word through the machine's 32-bit
        # view of RAM (kmalloc objects are 8-byte aligned in lowmem): a
        # chain is as long as the page's mappers (49 in reclaim).
        words, offset = k.machine.ram_words, k.PAGE_OFFSET
        prev, cur = None, k.page_alloc.page_pte_chain(pfn)
        while cur and cur != chain:
            prev, cur = cur, words[(cur - offset) >> 2]
        if cur != chain:
            raise KernelBug('page_remove_rmap: pte_chain entry not on the page\'s chain')
        nxt = words[(chain - offset) >> 2]
        if prev is None:
            k.page_alloc.set_page_pte_chain(pfn, nxt)
        else:
            words[(prev - offset) >> 2] = nxt
        k.slab.kfree(chain)
        self.counters['pte_chains'] -= 1
        self.counters['pte_chain_bytes'] -= PTE_CHAIN_SIZE

    def mappers(self, pfn):
        """[(mm, va)] of the PTEs that map the page (rmap's pte_chain walk)."""
        return list(self.maps.get(pfn, _NO_MAPPERS))

    def mappers_now(self, pfn):
        """mappers() without the copy: the page's (mm, va) keys as they are,
        for a walk that neither sleeps nor changes a mapping
        (page_referenced).  Read only."""
        return self.maps.get(pfn, _NO_MAPPERS)

    def mapcount(self, pfn):
        return self.k.page_alloc.page_mapcount(pfn) + 1

    def pte_dirty(self, pfn):
        """The hardware dirty bit of a PTE being dropped moves to the page."""
        self.k.page_alloc.set_page_flag(pfn, PG_dirty)

    def in_swap_cache(self, pfn):
        return self.k.page_alloc.test_page_flag(pfn, PG_swapcache)
