"""Page reclaim: the LRU lists, kswapd, direct reclaim, swap_out (2.4) or
rmap (2.5), and what the allocator does when nothing can be reclaimed.

Mirrors mm/vmscan.c of 2.4.18 (Andrea Arcangeli's VM: shrink_cache,
refill_inactive, swap_out -> swap_out_mm -> try_to_swap_out) and 2.5.27
(Rik van Riel's rmap: page_referenced, try_to_unmap -> try_to_unmap_one),
and the slow path of __alloc_pages with two answers to "no memory and
nothing reclaimable" (boot option oom_policy):
  kill   Andrea's VM: out_of_memory() kills the task with the worst
         badness (SIGKILL), reporting how much swap was still free;
  loop   2002 mainline: the allocator yields and retries forever; when no
         page has been freed for a long time the no-progress detector
         reports it (with what every task is doing) and stops the run.

Reclaim modes (boot option reclaim):
  swap_out  find mapped pages by walking every mm's page tables from a
            cursor (mm->swap_address), aging on the hardware accessed bit
            (test-and-clear), unmapping old ones into the swap cache.  Cost
            grows with the virtual address space scanned (PTEs visited).
  rmap      find a page's PTEs through its pte_chain (8 bytes of lowmem
            each: rmap.py), test-and-clear their accessed bits, unmap with
            try_to_unmap_one (trylock of mm->page_table_lock).
Both honour Andrew Morton's mm->dont_unmap_pages: a pinned mm's pages are
never unmapped (the dont_unmap write path).

Locks and rules
  - The LRU lists are guarded by pagemap_lru_lock in Linux; here Python
    steps are atomic.  Reclaim sleeps for writeback I/O and runs guest TLB
    shootdowns; it never holds a spinlock across a sleep.
  - A page being reclaimed is locked (TestSetPageLocked, as 2.4's
    try_to_swap_out and 2.5's shrink_list do) from before its PTEs are
    cleared until the TLB flushes are done and it is written: another
    reclaimer skips it, so it cannot be freed and reused while some CPU
    may still hold a TLB entry for it.
  - Every unmapping is followed by flush_tlb_page (guest code, IPIs to the
    CPUs in mm->cpu_vm_mask).
"""
from collections import OrderedDict

import numpy as np

from vm import x86

from . import page_alloc as pa
from .bug import KernelBug
from .page_alloc import __GFP_WAIT as GFP_WAIT
from .sched import WaitQueue
from .task import Charge

DEF_PRIORITY = 6
SWAP_CLUSTER_MAX = 32
TASK_SIZE = 0xC0000000
SWAP_SUCCESS, SWAP_AGAIN, SWAP_FAIL = 0, 1, 2
NO_PROGRESS_ROUNDS = 64
_WRITEBACK = 1 << pa.PG_writeback
_REFERENCED = 1 << pa.PG_referenced
_LRU = 1 << pa.PG_lru
_ACTIVE = 1 << pa.PG_active
_SWAPCACHE = 1 << pa.PG_swapcache
_SCAN_PY = 16          # swap_out_mm: PTEs tested in plain Python before a numpy step


class VMScan:
    def __init__(self, kernel):
        self.k = kernel
        self.mode = kernel.config['reclaim']
        self.oom_policy = kernel.config['oom_policy']
        self.active = OrderedDict()          # pfn -> None; oldest first
        self.inactive = OrderedDict()
        self.kswapd_wait = WaitQueue('kswapd_wait')
        self.kswapd = None
        self.swap_mm_index = 0               # swap_out's cursor into the mm list
        self.fail_rounds = 0                 # allocator retries without progress
        self.last_free = 0
        self._np_ram = None                  # guest RAM as numpy words (_np_words)
        self.counters = dict(pages_scanned=0, pages_reclaimed=0, ptes_visited=0,
                             pages_unmapped=0, pages_activated=0, unmap_skipped_pinned=0,
                             unmap_trylock_failed=0, pinned_unmaps=0, writebacks=0, direct_reclaims=0,
                             kswapd_runs=0, oom_kills=0, alloc_retries=0, alloc_failed=0,
                             swap_full=0, free_swap_kb_at_oom=0)

    # ---- the LRU --------------------------------------------------------

    def _flags(self, pfn):
        return self.k.page_alloc.page_flags(pfn)

    def _ram_words(self):
        """Guest RAM as 32-bit words (the machine's view), for reading and
        test-and-clearing PTEs in the scan loops: the same bytes as
        mm.read_pte/write_pte."""
        return self.k.machine.ram_words

    def _is_file_page(self, pfn):
        """In a file's page cache (page->mapping set, not the swap cache)."""
        p = self.k.page_alloc
        return p.page_mapping(pfn) != 0 and not p.page_flags(pfn) & (1 << pa.PG_swapcache)

    def _set(self, pfn, bit, on):
        if on:
            self.k.page_alloc.set_page_flag(pfn, bit)
        else:
            self.k.page_alloc.clear_page_flag(pfn, bit)

    def lru_cache_add(self, pfn):
        """lru_cache_add(): a new page goes to the inactive list's head."""
        fw = self.k.page_alloc.page_words
        w = pfn * pa.PAGE_WORDS + pa.W_FLAGS
        flags = fw[w]
        if flags & _LRU:
            return
        fw[w] = flags | _LRU                                    # SetPageLRU
        self.inactive[pfn] = None

    def lru_del(self, pfn):
        """lru_cache_del(): off whichever list it is on (ClearPageLRU,
        ClearPageActive: one word of page->flags, as lru_cache_add)."""
        fw = self.k.page_alloc.page_words
        w = pfn * pa.PAGE_WORDS + pa.W_FLAGS
        flags = fw[w]
        if not flags & _LRU:
            return
        self.active.pop(pfn, None)
        self.inactive.pop(pfn, None)
        fw[w] = flags & ~(_LRU | _ACTIVE)

    def activate(self, pfn):
        self.inactive.pop(pfn, None)
        self.active[pfn] = None
        self._set(pfn, pa.PG_active, True)
        self.counters['pages_activated'] += 1

    def _rotate(self, pfn):
        """Back to the head of the inactive list (looked at last), if it is
        still on it."""
        if self.inactive.pop(pfn, 0) is None:
            self.inactive[pfn] = None

    def refill_inactive(self, nr):
        """refill_inactive() (2.4.18): move pages from the active list's
        tail to the inactive list; a referenced one gets another round."""
        for _ in range(min(nr, len(self.active))):
            pfn, _ = self.active.popitem(last=False)
            if self._flags(pfn) & (1 << pa.PG_referenced):
                self._set(pfn, pa.PG_referenced, False)
                self.active[pfn] = None
                continue
            self._set(pfn, pa.PG_active, False)
            self.inactive[pfn] = None

    # ---- the allocator's slow path --------------------------------------

    def wakeup_kswapd(self):
        if self.kswapd is not None and self.kswapd_wait.tasks:
            self.k.sched.wake_up(self.kswapd_wait)

    def alloc_pages_slow(self, task, gfp, order):
        """__alloc_pages after the fast path failed.  Generator -> pfn/None."""
        k = self.k
        self.wakeup_kswapd()
        pfn = k.page_alloc.alloc_pages_pass(gfp, order, pa.WMARK_MIN)
        if pfn is not None or not gfp & GFP_WAIT:
            if pfn is None:
                self.counters['alloc_failed'] += 1
            return pfn
        if task.killed_by is not None and task.mm is not None:
            return k.page_alloc.alloc_pages_pass(gfp, order, pa.WMARK_NONE)   # PF_MEMDIE
        while True:
            self.counters['direct_reclaims'] += 1
            progress = yield from self.try_to_free_pages(task, gfp)
            pfn = k.page_alloc.alloc_pages_pass(gfp, order, pa.WMARK_MIN)
            if pfn is not None:
                self.fail_rounds = 0
                return pfn
            if task.killed_by is not None:
                self.counters['alloc_failed'] += 1
                return None
            if progress:
                continue
            self.counters['alloc_retries'] += 1
            if self.oom_policy == 'kill':
                killed = yield from self.out_of_memory(task)
                if not killed:
                    self.counters['alloc_failed'] += 1
                    return None
                yield from k.sleep_for(task, 100_000)       # let the victim exit
            else:
                yield from self._loop_round(task)

    def _loop_round(self, task):
        """2002 mainline: yield the CPU and try again, forever.  Report no
        progress when no page has been freed for NO_PROGRESS_ROUNDS rounds."""
        k = self.k
        free = k.page_alloc.nr_free_pages()
        if free > self.last_free:
            self.fail_rounds = 0
        self.last_free = free
        self.fail_rounds += 1
        if self.fail_rounds == NO_PROGRESS_ROUNDS:
            self._report_no_progress()
        yield from k.sleep_for(task, 20_000)

    def _report_no_progress(self):
        k = self.k
        lines = []
        for t in k.sched.tasks.values():
            if t.alive:
                what = k.checks.waits_for(t)[0] if t.waiting_on else 'running (allocator retry loop)'
                lines.append(f'{t.name}/{t.pid}: {what}')
        k.report('no_progress', f'no progress: the allocator retried {NO_PROGRESS_ROUNDS} times '
                                f'without a page freed; free swap {k.swap.free_bytes() >> 10} kB, '
                                f'free pages {k.page_alloc.nr_free_pages()}',
                 graph=lines, free_swap_kb=k.swap.free_bytes() >> 10)
        k.machine.stop('no progress')

    # ---- OOM ----------------------------------------------------------------

    def badness(self, t):
        """badness() (2.4 oom_kill.c), simplified: the task's virtual size in
        pages; 0 for kernel threads and the already dying."""
        if t.mm is None or t.killed_by is not None or not t.alive:
            return 0
        return sum((v.end - v.start) >> 12 for v in t.mm.vmas) + t.mm.rss

    def out_of_memory(self, task):
        """out_of_memory() -> oom_kill(): SIGKILL the worst task.  Generator
        -> True if someone was killed."""
        k = self.k
        yield Charge(k.costs['oom_select'])
        victims = sorted(k.sched.tasks.values(), key=lambda t: (-self.badness(t), t.pid))
        if not victims or self.badness(victims[0]) == 0:
            return False
        v = victims[0]
        self.counters['oom_kills'] += 1
        free_swap = k.swap.free_bytes() >> 10 if k.swap else 0
        if self.counters['oom_kills'] == 1:
            self.counters['free_swap_kb_at_oom'] = free_swap
        total_swap = (k.swap.nslots - 1) * 4 if k.swap else 0
        k.report('oom', f'Out of Memory: Killed process {v.pid} ({v.name}); free swap '
                        f'{free_swap} kB of {total_swap} kB, free pages '
                        f'{k.page_alloc.nr_free_pages()}', task=task,
                 free_swap_kb=free_swap, victim=f'{v.name}/{v.pid}')
        k.kill_task(v, 'SIGKILL', 'Out of Memory', oom=True)
        return True

    # ---- try_to_free_pages ----------------------------------------------------

    def try_to_free_pages(self, task, gfp):
        """try_to_free_pages_zone() (2.4.18): shrink the caches at
        decreasing priority until SWAP_CLUSTER_MAX pages are free.
        Generator -> True if that many were freed."""
        nr = SWAP_CLUSTER_MAX
        for priority in range(DEF_PRIORITY, 0, -1):
            self.refill_inactive(nr * 2)
            nr = yield from self.shrink_cache(task, nr, priority, gfp)
            if nr <= 0:
                return True
        return False

    def shrink_cache(self, task, nr_pages, priority, gfp):
        """shrink_cache(): scan the inactive list from its tail.  Generator
        -> the pages still to free.

        The scan's per-page cost is charged with k.machine.charge on the
        task's CPU: exactly what `yield Charge(...)` does (Engine._advance
        applies a Charge on the spot and resumes the generator), without
        passing up and down the generator chain of the allocation that got
        here (a dozen frames each way, once per page scanned)."""
        k = self.k
        fm = k.filemap
        inactive, counters = self.inactive, self.counters
        fw, mc = k.page_alloc.page_words, k.page_alloc.page_words_signed
        trylock, unlock, rotate = fm.trylock_page, fm.unlock_page, self._rotate
        charge, cpu, scan_cost = k.machine.charge, task.cpu, k.costs['scan_page']
        rmap_mode = self.mode == 'rmap'
        mappers_of, unmap_checks = k.rmap.mappers, self._try_to_unmap_checks
        max_scan = max(len(inactive) // priority, nr_pages)
        max_mapped = SWAP_CLUSTER_MAX << (DEF_PRIORITY - priority)
        while max_scan > 0 and inactive and nr_pages > 0:
            max_scan -= 1
            pfn = next(iter(inactive))
            counters['pages_scanned'] += 1
            charge(cpu, scan_cost)                              # = yield Charge(scan_page)
            w = pfn * pa.PAGE_WORDS
            if fw[w + pa.W_FLAGS] & _WRITEBACK or not trylock(task, pfn):
                rotate(pfn)
                continue
            if mc[w + pa.W_MAPCOUNT] + 1 > 0:                   # page_mapped()
                if rmap_mode:
                    if self.page_referenced(pfn):               # 2.5.27 shrink_list:
                        self.activate(pfn)                      # referenced: activate
                        unlock(task, pfn)
                        continue
                    # add_to_swap, then try_to_unmap (a generator only once
                    # a PTE is to go: a pinned mm's pages are walked again
                    # and again without one)
                    if (not fw[w + pa.W_FLAGS] & _SWAPCACHE and not fw[w + pa.W_MAPPING]
                            and not k.swap.add_to_swap(pfn)):  # anonymous, no slot
                        counters['swap_full'] += 1
                        self.activate(pfn)
                        unlock(task, pfn)
                        continue
                    mappers = mappers_of(pfn)
                    result, i = unmap_checks(task, pfn, mappers, 0, SWAP_SUCCESS)
                    if i < len(mappers):
                        result = yield from self._try_to_unmap_rest(task, pfn, mappers, i, result)
                    if result != SWAP_SUCCESS:
                        rotate(pfn)
                        unlock(task, pfn)
                        continue
                else:
                    unlock(task, pfn)
                    max_mapped -= 1
                    rotate(pfn)
                    if max_mapped <= 0:
                        yield from self.swap_out(task, priority)
                        max_mapped = SWAP_CLUSTER_MAX << (DEF_PRIORITY - priority)
                    continue
            freed = yield from self._free_unmapped(task, pfn)
            if freed:
                nr_pages -= 1
        return nr_pages

    def _free_unmapped(self, task, pfn):
        """An unmapped page on the inactive list, locked by the caller: write
        it if dirty, unlock it, drop it from its cache if clean and nobody
        else holds it.  A reference is held throughout (page_cache_get in
        shrink_cache), so the page cannot be freed under us while its write
        sleeps.  Generator -> True if freed."""
        k = self.k
        fm = k.filemap
        swapcache = bool(self._flags(pfn) & (1 << pa.PG_swapcache))
        if not swapcache and not self._is_file_page(pfn):
            fm.unlock_page(task, pfn)
            self._rotate(pfn)
            return False
        k.page_ref(pfn)
        try:
            if self._flags(pfn) & (1 << pa.PG_dirty):
                self.counters['writebacks'] += 1
                if swapcache:
                    yield from k.swap.swap_writepage(task, pfn)
                else:
                    yield from k.vfs.writepage_for_reclaim(task, pfn)    # unlocks it
            if fm.lock_owner.get(pfn) is task:
                fm.unlock_page(task, pfn)
            busy = (1 << pa.PG_dirty) | (1 << pa.PG_locked) | (1 << pa.PG_writeback)
            if (k.page_alloc.page_count(pfn) != 2 or k.rmap.mapcount(pfn) > 0
                    or self._flags(pfn) & busy
                    or bool(self._flags(pfn) & (1 << pa.PG_swapcache)) != swapcache):
                self._rotate(pfn)
                return False
            self.lru_del(pfn)
            if swapcache:
                k.swap.delete_from_swap_cache(pfn)
            else:
                k.vfs.remove_from_page_cache(pfn)
            self.counters['pages_reclaimed'] += 1
            return True
        finally:
            k.put_page(pfn)                       # frees it if it left its cache

    # ---- rmap (2.5.27) ------------------------------------------------------

    def page_referenced(self, pfn):
        """page_referenced(): test-and-clear the accessed bit of every PTE
        on the page's pte_chain (and PG_referenced).  Never sleeps: the
        PTEs are found and changed as words of guest RAM (pte_offset's
        walk, without its calls), and ptes_visited counts them all at the
        end."""
        k = self.k
        refs = 0
        fw = k.page_alloc.page_words
        w = pfn * pa.PAGE_WORDS + pa.W_FLAGS
        if fw[w] & _REFERENCED:
            fw[w] &= ~_REFERENCED                             # ClearPageReferenced
            refs += 1
        words = self._ram_words()
        mappers = k.rmap.mappers_now(pfn)
        for mm, va in mappers:
            pde = words[(mm.pgd_pa >> 2) + (va >> 22)]
            if not pde & x86.PTE_P:                           # (cannot happen: mapped)
                raise KernelBug(f'page_referenced: no page table for {va:#x}')
            i = ((pde & x86.PTE_FRAME) >> 2) + ((va >> 12) & 1023)
            pte = words[i]
            if pte & x86.PTE_A:
                words[i] = pte & ~x86.PTE_A                   # ptep_test_and_clear_young
                refs += 1
        self.counters['ptes_visited'] += len(mappers)
        return refs

    def try_to_unmap(self, task, pfn):
        """try_to_unmap(): every PTE on the chain (as it was when the walk
        began).  Generator -> SWAP_*."""
        mappers = self.k.rmap.mappers(pfn)
        result, i = self._try_to_unmap_checks(task, pfn, mappers, 0, SWAP_SUCCESS)
        if i < len(mappers):
            result = yield from self._try_to_unmap_rest(task, pfn, mappers, i, result)
        return result

    def _try_to_unmap_checks(self, task, pfn, mappers, i, result):
        """try_to_unmap's loop from mappers[i] up to the next PTE that goes:
        (the result so far, its index) with its mm->page_table_lock taken,
        or (the result, len(mappers)) if none does.  A PTE that stays makes
        the result its SWAP_AGAIN/SWAP_FAIL.  Never sleeps (a pinned mm's
        pages are walked again and again without a generator)."""
        checks = self._try_to_unmap_one_checks
        n = len(mappers)
        while i < n:
            mm, va = mappers[i]
            r = checks(task, pfn, mm, va)
            if r is None:                       # page_table_lock held: unmap
                return result, i
            if r != SWAP_SUCCESS:
                result = r
            i += 1
        return result, n

    def _try_to_unmap_rest(self, task, pfn, mappers, i, result):
        """try_to_unmap from mappers[i], whose PTE goes (its mm's
        page_table_lock held): unmap it, then go on.  Generator -> SWAP_*."""
        n = len(mappers)
        while i < n:
            mm, va = mappers[i]
            yield from self._unmap_pte(task, mm, va, pfn)
            mm.page_table_lock.unlock(task)
            result, i = self._try_to_unmap_checks(task, pfn, mappers, i + 1, result)
        return result

    def try_to_unmap_one(self, task, pfn, mm, va):
        """try_to_unmap_one() (2.5.27) + the dont_unmap_pages check of the
        dont_unmap design.  Generator -> SWAP_*."""
        r = self._try_to_unmap_one_checks(task, pfn, mm, va)
        if r is not None:
            return r
        yield from self._unmap_pte(task, mm, va, pfn)
        mm.page_table_lock.unlock(task)
        return SWAP_SUCCESS

    def _try_to_unmap_one_checks(self, task, pfn, mm, va):
        """try_to_unmap_one up to the unmapping: SWAP_AGAIN or SWAP_FAIL if
        the PTE stays, None with mm->page_table_lock taken if it goes.
        Never sleeps (try_to_unmap calls it without a generator, the common
        case under a pinned mm)."""
        self.counters['ptes_visited'] += 1
        if mm.dont_unmap_pages:
            self.counters['unmap_skipped_pinned'] += 1
            return SWAP_AGAIN
        if not mm.page_table_lock.trylock(task):
            self.counters['unmap_trylock_failed'] += 1
            return SWAP_AGAIN
        vma = mm.find_vma(va)
        if vma is None or vma.start > va or vma.flags & 0x2000:     # VM_LOCKED
            mm.page_table_lock.unlock(task)
            return SWAP_FAIL
        return None

    def _unmap_pte(self, task, mm, va, pfn, pte_pa=None):
        """ptep_get_and_clear + the swap entry + dirty + rss-- +
        page_cache_release, then flush_tlb_page: the common end of
        try_to_unmap_one and try_to_swap_out, with mm->page_table_lock held.
        The PTE change is one Python step (no fault path can see a half-done
        one, as page_table_lock ensures in Linux); the flush after it is
        guest code, during which other CPUs may still use their TLB entry.
        pte_pa: the PTE's physical address if the caller has it (else the
        walk finds it).  Generator -> False if the PTE no longer maps the
        page (it changed while we slept on an earlier PTE of the chain)."""
        k = self.k
        if pte_pa is None:
            pte_pa = k.mm.pte_offset(mm, va)
            if pte_pa is None:
                return False
        words = self._ram_words()
        pte = words[pte_pa >> 2]                      # read_pte
        if not pte & x86.PTE_P or pte >> 12 != pfn:
            return False
        if mm.dont_unmap_pages:                       # checker: the design's invariant
            self.counters['pinned_unmaps'] += 1
            k.report('bug', f'reclaim unmapped {va:#x} of a pinned mm (dont_unmap_pages '
                            f'{mm.dont_unmap_pages})', task=task)
        new = 0
        if k.page_alloc.page_words[pfn * pa.PAGE_WORDS + pa.W_FLAGS] & _SWAPCACHE:
            new = k.page_alloc.page_index(pfn)
            k.swap.swap_duplicate(new)
        words[pte_pa >> 2] = new                      # write_pte (a swap entry is < 2^32)
        k.unmap_page_pte(mm, va, pte)
        self.counters['pages_unmapped'] += 1
        if k.tracer is not None or k.point_hook is not None:    # someone listens
            k.trace_event('reclaim_unmap', task=task, pfn=pfn, va=va)
        k.machine.charge(task.cpu, k.costs['pte_update'])       # = yield Charge(pte_update)
        yield from k.mm.flush_tlb_page(task, mm, va)
        return True

    # ---- swap_out (2.4.18) ----------------------------------------------------

    def swap_out(self, task, priority):
        """swap_out(): walk the mm list from the cursor, each mm from its
        swap_address.  Generator -> True if SWAP_CLUSTER_MAX pages went."""
        k = self.k
        mms = [mm for mm in k.mms if mm.vmas]
        if not mms:
            return False
        count = SWAP_CLUSTER_MAX
        for _ in range(len(mms)):
            self.swap_mm_index %= len(mms)
            mm = mms[self.swap_mm_index]
            if mm.swap_address >= TASK_SIZE:
                mm.swap_address = 0
            if mm.dont_unmap_pages:
                self.counters['unmap_skipped_pinned'] += 1
                self.swap_mm_index += 1
                continue
            count = yield from self.swap_out_mm(task, mm, count)
            if count <= 0:
                return True
            self.swap_mm_index += 1
        return False

    def swap_out_mm(self, task, mm, count):
        """swap_out_mm() -> swap_out_vma -> pgd -> pmd -> pte.

        The scan reads one page table's PTEs straight from guest RAM until
        the next one that maps a page (a long run of empty PTEs in one numpy
        step); the page directory entry is read again after each PTE that
        maps a page (try_to_swap_out may sleep), as the per-PTE walk did.
        The scan's cost is charged with k.machine.charge on the task's CPU,
        once per run of PTEs: exactly what `yield Charge(...)` did (see
        shrink_cache), and nothing reads this CPU's clock between two PTEs
        of a run, so the time is the same as a charge per PTE wherever it is
        observed."""
        k = self.k
        address = mm.swap_address
        cost, pending = k.costs['scan_pte'], 0
        words, zero_pfn, counters = self._ram_words(), k.mm.zero_pfn, self.counters
        charge, cpu = k.machine.charge, task.cpu
        checks, unmap = self._try_to_swap_out_checks, self._try_to_swap_out_unmap
        first_mapped = self._first_mapped_pte
        pgd = mm.pgd_pa >> 2
        for vma in list(mm.vmas):
            if vma.end <= address:
                continue
            va = max(address, vma.start)
            while va < vma.end:
                pde = words[pgd + (va >> 22)]
                if not pde & x86.PTE_P:
                    va = (va | 0x3FFFFF) + 1
                    continue
                n = (min(vma.end, (va | 0x3FFFFF) + 1) - va + 4095) >> 12     # PTEs to stop
                i = ((pde & x86.PTE_FRAME) >> 2) + ((va >> 12) & 1023)
                j = first_mapped(words, i, i + n, zero_pfn)
                if j < 0:                           # none maps a page: all visited
                    counters['ptes_visited'] += n
                    pending += cost * n
                    va += n << 12
                    continue
                counters['ptes_visited'] += j - i + 1
                pending += cost * (j - i + 1)
                va += (j - i) << 12
                pte = words[j]
                charge(cpu, pending)                # = yield Charge(pending)
                pending = 0
                freeable = checks(task, mm, vma, j << 2, pte)
                if freeable is None:
                    freeable = yield from unmap(task, mm, va, pte >> 12, j << 2)
                count -= freeable
                if count <= 0:
                    mm.swap_address = va + 4096
                    return count
                va += 4096                          # it may have slept: read the PDE again
        if pending:
            charge(cpu, pending)
        mm.swap_address = TASK_SIZE
        return count

    def _first_mapped_pte(self, words, i, end, zero_pfn):
        """The index of the first word in words[i:end] that is a present PTE
        mapping a page other than the zero page, or -1.  A plain loop over
        the first few, then one numpy step over the rest of the table."""
        stop = min(end, i + _SCAN_PY)
        while i < stop:
            pte = words[i]
            if pte & x86.PTE_P and pte >> 12 != zero_pfn:
                return i
            i += 1
        if i >= end:
            return -1
        seg = self._np_words()[i:end]
        hit = (seg & x86.PTE_P).astype(bool)
        hit &= (seg >> 12) != zero_pfn
        if not hit.any():
            return -1
        return i + int(hit.argmax())

    def _np_words(self):
        """Guest RAM as a numpy array of 32-bit words (the same bytes as
        Machine.ram_words), made once."""
        w = self._np_ram
        if w is None:
            w = self._np_ram = np.frombuffer(self.k.machine.ram, dtype='<u4')
        return w

    def try_to_swap_out(self, task, mm, vma, va, pte_pa, pte):
        """try_to_swap_out() (2.4.18).  Generator -> 1 if the page may now
        be freeable, else 0.  swap_out_mm calls its two halves itself, the
        second only when the page is to be unmapped."""
        freeable = self._try_to_swap_out_checks(task, mm, vma, pte_pa, pte)
        if freeable is None:
            freeable = yield from self._try_to_swap_out_unmap(task, mm, va, pte >> 12)
        return freeable

    def _try_to_swap_out_checks(self, task, mm, vma, pte_pa, pte):
        """try_to_swap_out up to the unmapping: 0 if the page stays (a
        young one is aged: the accessed bit cleared, PG_referenced set), the
        page unlocked again; None if it goes, with the page lock and
        mm->page_table_lock taken.  Never sleeps.  page->flags and the PTE
        are read and written as words of guest RAM (the same bytes as
        page_flags/set_page_flag and read_pte/write_pte)."""
        k = self.k
        pfn = pte >> 12
        fw = k.page_alloc.page_words
        w = pfn * pa.PAGE_WORDS + pa.W_FLAGS
        flags = fw[w]
        if flags & _WRITEBACK or not k.filemap.trylock_page(task, pfn):
            return 0                                            # TryLockPage
        if vma.flags & 0x2000 or pte & x86.PTE_A:               # VM_LOCKED, or young
            if pte & x86.PTE_A:
                self._ram_words()[pte_pa >> 2] = pte & ~x86.PTE_A   # ptep_test_and_clear_young
            fw[w] |= _REFERENCED                                # mark_page_accessed
            k.filemap.unlock_page(task, pfn)                    # UnlockPage
            return 0
        if (not flags & _SWAPCACHE
                and not fw[pfn * pa.PAGE_WORDS + pa.W_MAPPING]   # not a file page
                and not k.swap.add_to_swap(pfn)):
            self.counters['swap_full'] += 1
            k.filemap.unlock_page(task, pfn)
            return 0
        if not mm.page_table_lock.trylock(task):
            self.counters['unmap_trylock_failed'] += 1
            k.filemap.unlock_page(task, pfn)
            return 0
        return None

    def _try_to_swap_out_unmap(self, task, mm, va, pfn, pte_pa=None):
        """try_to_swap_out's end, page lock and mm->page_table_lock held:
        unmap (TLB flush in guest code), unlock both.  Generator -> 1 if
        the page may now be freeable, else 0."""
        k = self.k
        try:
            yield from self._unmap_pte(task, mm, va, pfn, pte_pa)
            mm.page_table_lock.unlock(task)
            return 1 if k.page_alloc.page_count(pfn) <= 2 else 0
        finally:
            k.filemap.unlock_page(task, pfn)                    # UnlockPage

    # ---- kswapd -----------------------------------------------------------------

    def start_kswapd(self, cpu=0):
        """kswapd: a kernel thread that balances the zones when woken."""
        self.kswapd = self.k.kernel_thread('kswapd', cpu, self._kswapd_main, workload=False)
        self.kswapd.daemon = True

    def _kswapd_main(self, task):
        k = self.k
        while True:
            yield from k.sched.wait_event(task, self.kswapd_wait,
                                          lambda: k.page_alloc.any_zone_below_low,
                                          what=('kswapd_wait',))
            self.counters['kswapd_runs'] += 1
            for _ in range(8):
                ok = yield from self.try_to_free_pages(task, pa.GFP_KSWAPD)
                if not k.page_alloc.any_zone_below_low or not ok:
                    break
            yield from k.sleep_for(task, 200_000)
