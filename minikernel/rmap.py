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
from .page_alloc import PAGE_WORDS, PG_dirty, PG_swapcache, W_MAPCOUNT, W_PTE_CHAIN

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
        key = (mm, va)
        entries = self.maps.get(pfn)
        if entries is None:
            entries = self.maps[pfn] = {}
        elif key in entries:
            raise KernelBug(f'page_add_rmap: pfn {pfn:#x} is already mapped at {va:#x}')
        c = self.counters
        c['rmap_add'] += 1
        words = k.page_alloc.page_words_signed
        w = pfn * PAGE_WORDS
        words[w + W_MAPCOUNT] += 1                                    # _mapcount++
        chain = 0
        if self.use_chains:
            chain = k.slab.kmalloc(PTE_CHAIN_SIZE, 'pte_chain')
            if chain is None:
                c['pte_chain_alloc_failed'] += 1
                k.report('warning', 'pte_chain allocation failed: ZONE_NORMAL exhausted')
                chain = 0
            else:
                # kmalloc objects are 8-byte aligned in lowmem: two words;
                # page->pte_chain is a word of mem_map (u32 view)
                page = k.page_alloc.page_words
                ram, r = k.machine.ram_words, (chain - k.PAGE_OFFSET) >> 2
                ram[r] = page[w + W_PTE_CHAIN]                          # ->next
                ram[r + 1] = pte_pa + k.PAGE_OFFSET                     # ->ptep
                page[w + W_PTE_CHAIN] = chain
                c['pte_chains'] += 1
                c['pte_chain_bytes'] += PTE_CHAIN_SIZE
                if c['pte_chain_bytes'] > c['pte_chain_bytes_peak']:
                    c['pte_chain_bytes_peak'] = c['pte_chain_bytes']
        entries[key] = chain

    def page_remove_rmap(self, pfn, mm, va):
        """page_remove_rmap(): a PTE that mapped the page is gone."""
        k = self.k
        self.counters['rmap_remove'] += 1
        entries = self.maps.get(pfn, _NO_MAPPERS)
        try:
            chain = entries.pop((mm, va))
        except KeyError:
            raise KernelBug(f'page_remove_rmap: pfn {pfn:#x} is not mapped at {va:#x}') from None
        if chain:
            self._unlink_chain(pfn, chain)
        if not entries:
            del self.maps[pfn]
        mc = k.page_alloc.page_words_signed
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
        page, head = k.page_alloc.page_words, pfn * PAGE_WORDS + W_PTE_CHAIN   # page->pte_chain
        prev, cur = None, page[head]
        while cur and cur != chain:
            prev, cur = cur, words[(cur - offset) >> 2]
        if cur != chain:
            raise KernelBug('page_remove_rmap: pte_chain entry not on the page\'s chain')
        nxt = words[(chain - offset) >> 2]
        if prev is None:
            page[head] = nxt
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
