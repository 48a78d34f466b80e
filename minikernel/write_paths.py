"""The six write() designs from the 2002 thread and after: the per-page
body of generic_file_write (filemap.py calls write_page for each piece).

Boot option write_path picks one; mmap_sem_in_write=read additionally
holds mm->mmap_sem for reading from the prefault to the end of the copy
(the rwsem is not recursive: a fault in that window takes it again).

  kmap             2.4.18: prefault the first and last byte with __get_user
                   ("somewhat racily", Andrew), lock the page, kmap(page),
                   __copy_from_user (may fault and sleep: not atomic),
                   commit_write, kunmap.  Every new page takes a pkmap slot;
                   the pool wraps and every wrap is a global TLB flush.
  dont_unmap       Andrew Morton's proposal (July 2002): atomic_inc
                   mm->dont_unmap_pages (reclaim skips the mm), prefault with
                   __get_user, lock the page, kmap_atomic(KM_USER0) +
                   __copy_from_user, kunmap_atomic, atomic_dec.  With the
                   2002 fault handler (atomic_fault=sleep) a fault in the copy
                   sleeps inside kmap_atomic; with 2.5.34's it comes back
                   short and the write fails with -EFAULT.
  gup_pin          Martin Bligh: get_user_pages pins the user pages (a walk
                   of the page tables under mmap_sem, faulting them in), the
                   copy goes through kernel mappings of both pages
                   (kmap_atomic KM_USER1 for the user page, KM_USER0 for the
                   cache page): no user access, so no fault, in the copy.
  atomic_fallback  2.5.34 (merged): fault_in_pages_readable, lock the page,
                   kmap_atomic + __copy_from_user with faults refused; on a
                   short copy kmap() + __copy_from_user again, with the page
                   still locked (the source may be an mmap of this very page:
                   the fault then takes lock_page on it, self-deadlock).
  perform_write    2.6.24 generic_perform_write (Morton, Piggin): fault in,
                   write_begin (lock), copy with page faults disabled, write_end
                   (unlock); if nothing was copied, retry with a single segment
                   after faulting in again: no fault is ever taken with the
                   page locked.
  kmap_local       v5.11 (Gleixner): perform_write's structure with
                   kmap_local_page: the mapping is the task's own (per-task
                   slot stack, saved and restored at context switch), so
                   preemption inside it is fine; faults are refused with
                   pagefault_disable (not preempt_disable).

Rules: write_page is a generator called with inode->i_sem held; it gets
the piece of the user's iovec for one page as segments [(addr, len)] (one
for write(), maybe several for writev()) and returns the bytes copied into
the page cache (0 stops the write, a negative errno fails it); it leaves no
page locked and no kmap held.  As in 2.5.34 and 2.6.24, the prefault covers
only the FIRST segment (fault_in_pages_readable(buf, bytes) on the current
iov_base; iov_iter_fault_in_readable): a later segment that is not present
faults inside the copy, i.e. inside kmap_atomic.
"""
from vm import x86

from .layout import KM_USER0, KM_USER1
from .memory import MM_DONT_UNMAP
from .task import Charge, Guest

EFAULT, ENOMEM = 14, 12
PAGE = 4096
DESIGNS = ('kmap', 'dont_unmap', 'gup_pin', 'atomic_fallback', 'perform_write', 'kmap_local')
# The fused guest routines (kmap + user copy + kunmap in one call, as the
# Linux helpers of those names): user accesses like __copy_from_user.
FUSED_COPIES = ('filemap_copy_from_user_atomic', 'iov_iter_copy_from_user_atomic',
                'copy_page_from_iter_local')


class WritePaths:
    def __init__(self, kernel):
        self.k = kernel
        self.fm = kernel.filemap
        self.design = kernel.config['write_path']
        self.hold_mmap_sem = kernel.config['mmap_sem_in_write'] == 'read'
        self._body = getattr(self, '_' + self.design)
        self.counters = dict(write_pages=0, short_atomic_copies=0, fallback_copies=0,
                             perform_write_retries=0, gup_pages=0, write_efault=0)

    def write_page(self, task, file, index, offset, segs, nbytes):
        """One piece of a write: `nbytes` from the user segments `segs` into
        page `index` of the file at `offset`.  Generator -> bytes copied or
        -errno."""
        self.counters['write_pages'] += 1
        faults = self.k.faults
        if faults.point_hooks:                   # write_context keeps it for injections only
            faults.write_context(task, segs=segs, nbytes=nbytes, index=index)
        mm = task.mm
        if self.hold_mmap_sem:
            yield from mm.mmap_sem.down_read(task)
        try:
            copied = yield from self._body(task, file, index, offset, segs, nbytes)
        finally:
            if self.hold_mmap_sem:
                mm.mmap_sem.up_read(task)
        if copied < 0 and copied == -EFAULT:
            self.counters['write_efault'] += 1
        return copied

    # ---- shared steps -------------------------------------------------------

    def _prefault_2_4(self, task, segs):
        """__get_user of the first and the last byte of the first segment
        (2.4.18 / Andrew's pseudocode; the result is ignored, as there)."""
        buf, n = segs[0]
        yield Guest('__get_user_1', buf)
        yield Guest('__get_user_1', buf + n - 1)

    def _fault_in(self, segs):
        """fault_in_pages_readable(buf, bytes) of the first segment (2.5.34);
        iov_iter_fault_in_readable (2.6.24) does the same.  -> 0/-EFAULT."""
        buf, n = segs[0]
        r = yield Guest('fault_in_pages_readable', buf, n)
        return -EFAULT if r else 0

    def _copy_segs(self, routine, dst, segs):
        """filemap_copy_from_user_iovec: copy segment after segment with
        `routine` (a __copy_from_user flavour) into kernel address `dst`,
        stopping at the first short copy.  Generator -> bytes copied."""
        done = 0
        for addr, n in segs:
            left = yield Guest(routine, dst + done, addr, n)
            done += n - left
            if left:
                break
        return done

    def _begin(self, task, file, index, offset, nbytes):
        """write_begin: __grab_cache_page (locked) + prepare_write.
        Generator -> pfn, or -errno."""
        fm, faults = self.fm, self.k.faults
        if faults.point_hooks:                   # Faults.at does nothing without them
            yield from faults.at('write_path.after_prefault', task)
        pfn = yield from fm.grab_cache_page(task, file.inode.mapping, index)
        if pfn is None:
            return -ENOMEM
        err = yield from fm.block_prepare_write(task, pfn, offset, offset + nbytes)
        if err:
            fm.unlock_page(task, pfn)
            fm.page_cache_release(pfn)
            return err
        if faults.point_hooks:
            yield from faults.at('write_path.before_copy', task)
        return pfn

    def _end(self, task, pfn, offset, copied):
        """commit_write + unlock_page + page_cache_release."""
        fm = self.fm
        if copied > 0:
            yield from fm.generic_commit_write(task, pfn, offset, offset + copied)
        fm.unlock_page(task, pfn)
        fm.page_cache_release(pfn)

    def _page(self, pfn):
        return self.k.page_to_guest(pfn)

    # ---- kmap (2.4.18) ------------------------------------------------------

    def _kmap(self, task, file, index, offset, segs, nbytes):
        fm = self.fm
        buf, n = segs[0]                                     # _prefault_2_4, inline
        yield Guest('__get_user_1', buf)
        yield Guest('__get_user_1', buf + n - 1)
        pfn = yield from self._begin(task, file, index, offset, nbytes)
        if pfn < 0:
            return pfn
        page = self._page(pfn)
        kaddr = yield Guest('kmap', page)                   # 2.4's prepare_write kmaps
        if len(segs) == 1:                                   # _copy_segs of one segment, inline
            left = nbytes - n + (yield Guest('__copy_from_user', kaddr + offset, buf, n))
        else:
            left = nbytes - (yield from self._copy_segs('__copy_from_user', kaddr + offset, segs))
        if not left:
            yield from fm.generic_commit_write(task, pfn, offset, offset + nbytes)
        yield Guest('kunmap', page)                          # unlock: kunmap, UnlockPage
        fm.unlock_page(task, pfn)
        fm.page_cache_release(pfn)
        return -EFAULT if left else nbytes

    # ---- dont_unmap (Andrew Morton, July 2002) ---------------------------------

    def _dont_unmap(self, task, file, index, offset, segs, nbytes):
        mm = task.mm
        self._pin(mm, +1)                          # atomic_inc(&mm->dont_unmap_pages)
        try:
            yield from self._prefault_2_4(task, segs)
            pfn = yield from self._begin(task, file, index, offset, nbytes)
            if pfn < 0:
                return pfn
            copied = yield from self._copy_in(pfn, offset, segs, 'filemap_copy_from_user_atomic',
                                              'kmap_atomic', '__copy_from_user')
            left = nbytes - copied
            if left:
                self.counters['short_atomic_copies'] += 1
            yield from self._end(task, pfn, offset, 0 if left else nbytes)
        finally:
            self._pin(mm, -1)                      # atomic_dec
        return -EFAULT if left else nbytes

    def _pin(self, mm, delta):
        """atomic_inc/dec of the guest mm_struct's dont_unmap_pages."""
        pa = mm.guest - self.k.PAGE_OFFSET + MM_DONT_UNMAP
        self.k.machine.write32(pa, self.k.machine.read32(pa) + delta)

    # ---- gup_pin (Martin Bligh) --------------------------------------------------

    def _gup_pin(self, task, file, index, offset, segs, nbytes):
        k, mm = self.k, task.mm
        pinned = []
        yield from mm.mmap_sem.down_read(task)
        for addr, n in segs:
            pages = yield from self.get_user_pages(task, mm, addr, n)
            if pages is None:
                break
            pinned.append((addr, n, pages))
        mm.mmap_sem.up_read(task)
        if len(pinned) < len(segs):
            for _, _, pages in pinned:
                for p in pages:
                    k.put_page(p)
            return -EFAULT
        try:
            pfn = yield from self._begin(task, file, index, offset, nbytes)
            if pfn < 0:
                return pfn
            dst = yield Guest('kmap_atomic', self._page(pfn), KM_USER0)
            done = 0
            for addr, n, pages in pinned:
                yield from self._copy_pinned(dst + offset + done, addr, n, pages)
                done += n
            yield Guest('kunmap_atomic', dst, KM_USER0)
            yield from self._end(task, pfn, offset, nbytes)
        finally:
            for _, _, pages in pinned:
                for p in pages:
                    k.put_page(p)
        return nbytes

    def _copy_pinned(self, dst, addr, n, pages):
        """memcpy from pinned user pages through KM_USER1 kmap_atomics."""
        done = 0
        for upfn in pages:
            uoff = (addr + done) & (PAGE - 1)
            m = min(PAGE - uoff, n - done)
            src = yield Guest('kmap_atomic', self._page(upfn), KM_USER1)
            yield Guest('memcpy', dst + done, src + uoff, m)
            yield Guest('kunmap_atomic', src, KM_USER1)
            done += m

    def get_user_pages(self, task, mm, addr, nbytes):
        """get_user_pages() (2.4/2.5 mm/memory.c): for each page of the
        range, follow_page under page_table_lock and get_page, in guest code
        (asm/kernel/memory.S follow_page_get: the walk costs what it
        executes); if it is not present, handle_mm_fault, then try again.
        mmap_sem held for reading.  Generator -> [pfn] (one reference each),
        or None if an address is bad."""
        k = self.k
        pages = []
        va = addr & ~(PAGE - 1)
        end = addr + nbytes
        vma = None
        while va < end:
            if vma is None or va >= vma.end:          # find_extend_vma, once per vma
                vma = mm.find_vma(va)
                if vma is None or vma.start > va:
                    for p in pages:
                        k.put_page(p)
                    return None
                yield Charge(k.costs['find_vma'])
            page = yield Guest('follow_page_get', mm.guest, va)
            if not page:
                r = yield from k.mm.handle_mm_fault(task, mm, vma, va, False)
                if r <= 0:
                    for p in pages:
                        k.put_page(p)
                    return None
                continue
            self.counters['gup_pages'] += 1
            pages.append(k.page_alloc.page_to_pfn(page))
            va += PAGE
        return pages

    # ---- atomic_fallback (2.5.34) ------------------------------------------------

    def _atomic_fallback(self, task, file, index, offset, segs, nbytes):
        buf, n = segs[0]                                             # _fault_in, inline:
        yield Guest('fault_in_pages_readable', buf, n)               # result ignored (2.5.34)
        pfn = yield from self._begin(task, file, index, offset, nbytes)
        if pfn < 0:
            return pfn
        page = self._page(pfn)
        copied = yield from self._copy_in(pfn, offset, segs, 'filemap_copy_from_user_atomic',
                                          'kmap_atomic', '__copy_from_user')
        left = nbytes - copied
        if left:                                                     # do it the slow way
            self.counters['short_atomic_copies'] += 1
            self.counters['fallback_copies'] += 1
            kaddr = yield Guest('kmap', page)
            copied = yield from self._copy_segs('__copy_from_user', kaddr + offset, segs)
            left = nbytes - copied
            yield Guest('kunmap', page)
        yield from self._end(task, pfn, offset, 0 if left else nbytes)
        return -EFAULT if left else nbytes

    # ---- perform_write (2.6.24) and kmap_local (v5.11) -------------------------------

    def _perform_write(self, task, file, index, offset, segs, nbytes):
        return (yield from self._retry_loop(task, file, index, offset, segs, nbytes,
                                            self._copy_atomic))

    def _kmap_local(self, task, file, index, offset, segs, nbytes):
        return (yield from self._retry_loop(task, file, index, offset, segs, nbytes,
                                            self._copy_local))

    def _retry_loop(self, task, file, index, offset, segs, nbytes, copy):
        """generic_perform_write's loop for one page: fault in, write_begin,
        copy with faults refused, write_end; on copied == 0 unlock and go
        again with a single segment (after faulting it in again).  A partial
        copy into a page that is not uptodate commits nothing
        (block_write_end)."""
        while True:
            if (yield from self._fault_in(segs)):
                return -EFAULT
            pfn = yield from self._begin(task, file, index, offset, nbytes)
            if pfn < 0:
                return pfn
            copied = yield from copy(pfn, offset, segs)
            if copied < nbytes and not self.fm.PageUptodate(pfn):
                copied = 0
            yield from self._end(task, pfn, offset, copied)
            if copied:
                return copied
            self.counters['perform_write_retries'] += 1
            self.counters['short_atomic_copies'] += 1
            segs = segs[:1]                          # iov_iter_single_seg_count
            nbytes = segs[0][1]

    def _copy_atomic(self, pfn, offset, segs):
        """iov_iter_copy_from_user_atomic: kmap_atomic + __copy_from_user_inatomic."""
        return (yield from self._copy_in(pfn, offset, segs, 'iov_iter_copy_from_user_atomic',
                                         'kmap_atomic', '__copy_from_user_inatomic', True))

    def _copy_local(self, pfn, offset, segs):
        """kmap_local_page + pagefault_disable + __copy_from_user_inatomic."""
        return (yield from self._copy_in(pfn, offset, segs, 'copy_page_from_iter_local',
                                         'kmap_local_page', '__copy_from_user_inatomic', True))

    def _copy_in(self, pfn, offset, segs, fused, kmap, copy, nofault=False):
        """Copy the segments into page `pfn` at `offset` under one kmap of
        flavour `kmap`: one guest call of the fused routine (the Linux
        helper) for a single segment, else the kmap, one `copy` per segment
        (filemap_copy_from_user_iovec), the kunmap.  -> bytes copied."""
        page = self._page(pfn)
        if len(segs) == 1:
            buf, n = segs[0]
            left = yield Guest(fused, page, offset, buf, stack=(n,))
            return n - left
        kaddr = yield Guest(kmap, page, KM_USER0)
        if nofault:
            yield Guest('pagefault_disable')
        copied = yield from self._copy_segs(copy, kaddr + offset, segs)
        if nofault:
            yield Guest('pagefault_enable')
        if kmap == 'kmap_atomic':
            yield Guest('kunmap_atomic', kaddr, KM_USER0)
        else:
            yield Guest('kunmap_local', kaddr)
        return copied
