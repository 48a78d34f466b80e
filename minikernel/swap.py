"""Swap: the swap area on the disk, swap entries in PTEs, the swap cache,
and the swap-in fault.

Mirrors mm/swapfile.c, mm/swap_state.c and do_swap_page() in mm/memory.c
(2.4.18 / 2.5).

What this file owns
  - One swap area: `swap` bytes (boot option) of disk blocks taken at boot;
    slot 0 is the header and never used.  swap_map[offset] counts the
    references to a slot (PTEs + the swap cache), as in Linux.
  - Swap entries in not-present PTEs, i386 2.4 encoding:
        SWP_ENTRY(type, offset) = (type << 1) | (offset << 8), bit 0 clear
  - The swap cache (swapper_space): entry -> page, with PG_swapcache set and
    page->index = entry; it holds one page reference.
  - do_swap_page: find the page in the swap cache or read it from the disk
    (the task sleeps for the I/O), then map it.

Rules
  - get_swap_page / swap_free / swap_duplicate never sleep.
  - A swap-in read error (fault injection) kills the faulting task with
    SIGBUS, as 2.4's do_swap_page returning -1 would.
  - The data oracle is told of every page that goes out and comes back
    (oracle.anon_swapped_out / anon_swapped_in), so a page that does not
    come back with its bytes is reported as corruption.
"""
from vm import x86

from .bug import KernelBug
from .page_alloc import PG_dirty, PG_swapcache, PG_uptodate, PG_writeback
from .task import Charge

PAGE = 4096


def swp_entry(offset, type_=0):
    return (type_ << 1) | (offset << 8)


def swp_offset(entry):
    return entry >> 8


def is_swap_pte(pte):
    return pte != 0 and not pte & x86.PTE_P


class Swap:
    def __init__(self, kernel, nbytes):
        self.k = kernel
        self.nslots = max(2, nbytes // PAGE) if nbytes else 1     # slot 0: the header; swap=0: none
        self.first_block = kernel.alloc_boot_blocks(self.nslots)
        self.swap_map = [0] * self.nslots               # plain ints: read per PTE unmapped
        self.swap_map[0] = 1 << 30                     # the header: never handed out
        self.nr_free = self.nslots - 1
        self.cursor = 1
        self.cache = {}                                # entry -> pfn (swapper_space)
        self.io_wait = {}                              # entry -> pfn being read (locked)
        self.counters = dict(swap_outs=0, swap_ins=0, swap_cache_hits=0, swap_read_errors=0,
                             swap_faults_shared=0,
                             swap_slots_total=self.nslots - 1)

    # ---- slots ------------------------------------------------------------

    def get_swap_page(self):
        """get_swap_page(): a free slot (count 1), or 0 if swap is full.
        Scans from a cursor, as scan_swap_map does."""
        if self.nr_free == 0:
            return 0
        smap = self.swap_map
        start = (self.cursor - 1) % (self.nslots - 1) + 1     # slots start.., then 1..start-1
        try:
            off = smap.index(0, start)
        except ValueError:
            try:
                off = smap.index(0, 1, start)
            except ValueError:
                raise KernelBug('get_swap_page: nr_free > 0 but no free slot') from None
        smap[off] = 1
        self.nr_free -= 1
        self.cursor = off + 1
        return swp_entry(off)

    def swap_duplicate(self, entry):
        off = swp_offset(entry)
        if not 0 < off < self.nslots or self.swap_map[off] <= 0:
            raise KernelBug(f'swap_duplicate: bad swap entry {entry:#x}')
        self.swap_map[off] += 1

    def swap_free(self, entry):
        """swap_free(): drop one reference; the slot is free at zero."""
        off = swp_offset(entry)
        if not 0 < off < self.nslots or self.swap_map[off] <= 0:
            raise KernelBug(f'swap_free: bad swap entry {entry:#x}')
        self.swap_map[off] -= 1
        if self.swap_map[off] == 0:
            self.nr_free += 1

    def swap_free_entry(self, pte):
        """A swap PTE was zapped (munmap, exit)."""
        self.swap_free(pte & ~1)

    def free_bytes(self):
        return self.nr_free * PAGE

    # ---- the swap cache -----------------------------------------------------

    def add_to_swap_cache(self, pfn, entry):
        """add_to_swap_cache(): the page now stands for the slot; +1 ref."""
        pa = self.k.page_alloc
        if pa.test_page_flag(pfn, PG_swapcache):
            raise KernelBug(f'add_to_swap_cache: pfn {pfn:#x} already in the swap cache')
        self.k.page_ref(pfn)
        pa.set_page_flag(pfn, PG_swapcache)
        pa.set_page_index(pfn, entry)
        self.cache[entry] = pfn

    def delete_from_swap_cache(self, pfn):
        """delete_from_swap_cache(): drop the slot's cache entry, its slot
        reference and the cache's page reference."""
        entry = self.k.page_alloc.page_index(pfn)
        if self.cache.get(entry) != pfn:
            raise KernelBug(f'delete_from_swap_cache: pfn {pfn:#x} not cached at {entry:#x}')
        if self.k.page_alloc.test_page_flag(pfn, PG_writeback):
            raise KernelBug(f'delete_from_swap_cache: pfn {pfn:#x} is under writeback')
        del self.cache[entry]
        self.k.page_alloc.clear_page_flag(pfn, PG_swapcache)
        self.k.page_alloc.set_page_index(pfn, 0)
        self.swap_free(entry)
        self.k.put_page(pfn)

    def add_to_swap(self, pfn):
        """add_to_swap() (2.5): give an anonymous page a slot and put it in
        the swap cache, dirty.  False if swap is full."""
        entry = self.get_swap_page()
        if not entry:
            return False
        self.add_to_swap_cache(pfn, entry)
        self.k.page_alloc.set_page_flag(pfn, PG_uptodate)
        self.k.page_alloc.set_page_flag(pfn, PG_dirty)
        return True

    def swap_writepage(self, task, pfn):
        """swap_writepage(): write the page to its slot, PG_writeback set
        for the duration (reclaim and can_share_swap_page keep off it).
        Generator -> 0/-EIO."""
        pa = self.k.page_alloc
        entry = pa.page_index(pfn)
        pa.clear_page_flag(pfn, PG_dirty)
        pa.set_page_flag(pfn, PG_writeback)
        self.counters['swap_outs'] += 1
        if self.k.oracle is not None:
            self.k.oracle.anon_swapped_out(entry, pfn)
        self.k.trace_event('swap_out', task=task, pfn=pfn, entry=entry)
        err = yield from self.k.blockdev.bio_rw(task, 'write', self.first_block + swp_offset(entry), pfn)
        pa.clear_page_flag(pfn, PG_writeback)
        return err

    def peek_entry(self, pte):
        """The 4096 bytes a swap PTE stands for (for the oracle: RAM if the
        page is still in the swap cache, else the slot on the disk)."""
        entry = pte & ~1
        pfn = self.cache.get(entry)
        if pfn is not None:
            return bytes(self.k.machine.read(pfn << 12, PAGE))
        return self.k.disk.peek(self.first_block + swp_offset(entry))

    # ---- the swap-in fault --------------------------------------------------

    def do_swap_page(self, task, mm, vma, address, pte_pa, pte, write):
        """do_swap_page() (2.4.18).  Generator -> VM_FAULT_*.  May sleep."""
        from .memory import VM_FAULT_MAJOR, VM_FAULT_MINOR, VM_FAULT_OOM
        k = self.k
        entry = pte & ~1
        va = address & ~(PAGE - 1)
        pfn = self.cache.get(entry)
        if self.swap_map[swp_offset(entry)] - (pfn is not None) > 1:
            self.counters['swap_faults_shared'] += 1       # another PTE (a fork) has it too
        major = False
        if pfn is not None:
            self.counters['swap_cache_hits'] += 1
            k.page_ref(pfn)
            yield from self._wait_read(task, entry)
        else:
            pfn = yield from self._read_swap_page(task, entry)
            if pfn is None:
                return VM_FAULT_OOM
            if pfn < 0:
                k.kill_task(task, 'SIGBUS', f'swap read error at {address:#010x}')
                return VM_FAULT_MINOR
            major = True
        if k.mm.read_pte(pte_pa) != pte:          # another thread got here first
            k.put_page(pfn)
            return VM_FAULT_MINOR
        self.swap_free(entry)
        writable = write and self._exclusive(pfn)
        if writable:
            self.delete_from_swap_cache(pfn)
        flags = x86.PTE_P | x86.PTE_U | x86.PTE_A | ((x86.PTE_W | x86.PTE_D) if writable else 0)
        k.mm.write_pte(pte_pa, (pfn << 12) | flags)
        k.page_add_anon(pfn, mm, va, pte_pa)
        k.machine.charge(task.cpu, k.costs['pte_update'])       # = yield Charge(...)
        return VM_FAULT_MAJOR if major else VM_FAULT_MINOR

    def _exclusive(self, pfn):
        """can_share_swap_page() (2.5): nobody else maps it or its slot."""
        pa = self.k.page_alloc
        if pa.test_page_flag(pfn, PG_writeback):
            return False
        entry = pa.page_index(pfn)
        slot = self.swap_map[swp_offset(entry)] if pa.test_page_flag(pfn, PG_swapcache) else 0
        return pa.page_count(pfn) <= 2 and slot <= 1

    def _read_swap_page(self, task, entry):
        """read_swap_cache_async + wait: a new page in the swap cache, read
        from the slot while the page is locked.  Generator -> pfn (one
        reference for the caller), None if out of memory, -1 on I/O error."""
        k = self.k
        pfn = yield from k.alloc_page(task, k.gfp.GFP_HIGHUSER)
        if pfn is None:
            return None
        if entry in self.cache:                  # raced with another reader
            k.put_page(pfn)
            other = self.cache[entry]
            k.page_ref(other)
            yield from self._wait_read(task, entry)
            return other
        self.swap_duplicate(entry)
        self.add_to_swap_cache(pfn, entry)
        fm = k.filemap
        fm.trylock_page(task, pfn)                   # a new page: the lock is free
        self.io_wait[entry] = pfn
        self.counters['swap_ins'] += 1
        k.trace_event('swap_in', task=task, pfn=pfn, entry=entry)
        k.lru_cache_add(pfn)
        err = yield from k.blockdev.bio_rw(task, 'read', self.first_block + swp_offset(entry), pfn)
        del self.io_wait[entry]
        fm.unlock_page(task, pfn)                    # wakes _wait_read's sleepers
        if err:
            self.counters['swap_read_errors'] += 1
            self.delete_from_swap_cache(pfn)
            k.put_page(pfn)
            return -1
        k.page_alloc.set_page_flag(pfn, PG_uptodate)
        if k.oracle is not None:
            k.oracle.anon_swapped_in(entry, pfn)
        return pfn

    def _wait_read(self, task, entry):
        """wait_on_page_locked() on a page whose read from the slot is still
        running (someone else's swap-in).  The caller holds a reference."""
        pfn = self.io_wait.get(entry)
        if pfn is not None:
            yield from self.k.filemap.wait_on_page_locked(task, pfn)
