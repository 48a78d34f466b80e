"""The page cache, page locking, readpage/writepage and the generic read
path: mm/filemap.c of 2.5.34 (September 2002), with the block-level parts
of fs/buffer.c it leans on (block_prepare_write, generic_commit_write,
block_read_full_page, block_write_full_page) for a file system whose block
is one page.

What this file owns
  - AddressSpace (struct address_space): one file's page cache, index ->
    pfn.  Its `guest` is a small kmalloc'd lowmem object: the value of
    page->mapping for its pages, so page->mapping means what it means in
    Linux (vmscan tells file pages from anonymous ones by it).
  - For a page in the cache: page->mapping and page->index are set, and the
    cache holds one reference (page_count), as in Linux.  Whoever gets the
    page from find_get_page / grab_cache_page holds one more, dropped with
    page_cache_release.
  - PG_locked (the page lock), PG_uptodate, PG_dirty and PG_error of page
    cache pages.  Sleepers on a page lock wait on one of NR_WAIT_TABLE
    hashed wait queues (2.5's page_waitqueue / zone->wait_table): waking a
    bucket wakes everyone in it, each re-checks its own page.
  - The lock owner of each locked page (lock_owner): Linux does not track
    it; we do, so a sleeper's task.waiting_on is ('page_lock', pfn,
    owner) and the deadlock detector can draw the wait-for graph.
  - generic_file_read with file_read_actor (boot option read_path), and the
    frame of generic_file_write; the per-page work of a write is the
    write_paths module's (one of the six designs).
  - filemap_nopage, for mmap of a file.
  - Writeback: writepage, sync_inodes, and the two hooks reclaim uses
    (writepage_for_reclaim, remove_from_page_cache).  The LRU lists are
    vmscan's: this file only calls k.lru_cache_add for a new cache page.

Locks and rules
  - The cache's dicts change only inside one Python step (no yield), which
    stands for mapping->page_lock (2.5's spinlock): find_get_page and
    add_to_page_cache never sleep.
  - lock_page may sleep; calling it with preempt_count > 0 is reported as
    2.6's "BUG: sleeping function called from invalid context" (the
    might_sleep() check), then it goes on, as Linux does.
  - readpage and writepage are called with the page locked and unlock it
    when the I/O is over (the block layer's completion does it in Linux;
    here the task waits for the disk and unlocks).  block_prepare_write
    reads with the page locked and leaves it locked.
  - The contents of page cache pages (GFP_HIGHUSER, so usually highmem) are
    touched only by guest code through a kmap and by the disk's DMA: Python
    never reads or writes them (the data oracle, a checker, reads them).
  - A file block is one page.  A block that was never written is a hole:
    readpage zero-fills it (guest code) instead of reading the disk.
  - PG_uptodate is set by readpage and by commit_write, never by
    prepare_write (2.5's buffer_head is uptodate then, the page not:
    `prepared` stands for that buffer state).  So a page a write holds
    locked stays !PageUptodate until commit_write, and a fault on an mmap
    of it sleeps in filemap_nopage's lock_page: the same-page deadlock.
"""
from .bug import KernelBug
from .layout import KM_USER0, PAGE_OFFSET, PAGE_SIZE
from .memory import VM_SHARED, VM_WRITE
from .page_alloc import (GFP_HIGHUSER, PAGE_WORDS, PG_dirty, PG_error, PG_locked, PG_uptodate,
                         W_FLAGS)
from .sched import WaitQueue
from .task import Charge, Guest

PAGE = PAGE_SIZE
BIO_MAX_PAGES = 256          # include/linux/bio.h (2.5): pages in one bio
PAGE_SHIFT = 12
_LOCKED = 1 << PG_locked
NR_WAIT_TABLE = 64               # hashed page wait queues (2.5: per zone, sized by memory)
ADDRESS_SPACE_SIZE = 16          # the guest object page->mapping points at
EIO, ENOMEM, EFAULT, EEXIST, EFBIG, ENOSPC = 5, 12, 14, 17, 27, 28


def iov_slice(iov, skip, n):
    """The segments [(addr, len)] of `n` bytes of the iovec `iov`, after the
    first `skip` bytes (2.5's iov_base walk in generic_file_write)."""
    out = []
    for base, length in iov:
        if skip >= length:
            skip -= length
            continue
        take = min(length - skip, n)
        if take:
            out.append((base + skip, take))
        n -= take
        skip = 0
        if not n:
            break
    return out


class AddressSpace:
    """struct address_space: the page cache of one inode."""

    def __init__(self, host, guest, seq):
        self.host = host           # the Inode (fs.py)
        self.guest = guest         # kernel va of the lowmem object: page->mapping
        self.seq = seq             # creation order: writeback walks mappings in it
        self.pages = {}            # index -> pfn

    def __repr__(self):
        return f'<address_space {self.host.name}: {len(self.pages)} pages>'


class Filemap:
    """The page cache subsystem of one kernel (k.filemap)."""

    def __init__(self, kernel):
        self.k = kernel
        self.mappings = {}                       # guest va -> AddressSpace
        self.wait_table = [WaitQueue(f'page_wait[{i}]') for i in range(NR_WAIT_TABLE)]
        self.lock_owner = {}                     # pfn -> task holding PG_locked
        self.prepared = set()                    # pfns whose block prepare_write made valid
        self.counters = dict(
            page_cache_pages=0, page_cache_hits=0, page_cache_misses=0, page_cache_adds=0,
            page_cache_removes=0, readpage_io=0, readpage_holes=0, writepage_io=0,
            prepare_write_reads=0, prepare_write_zeroed=0, lock_page_waits=0,
            read_atomic_copies=0, read_atomic_short=0, read_kmap_copies=0,
            file_read_bytes=0, file_write_bytes=0, sync_pages_written=0)

    # ---- struct page fields (lowmem kernel data) ---------------------------

    def _test(self, pfn, bit):
        """PageX(): page->flags as a word of mem_map (test_page_flag's read)."""
        return bool(self.k.page_alloc.page_words[pfn * PAGE_WORDS + W_FLAGS] >> bit & 1)

    def PageLocked(self, pfn):
        return self._test(pfn, PG_locked)

    def PageUptodate(self, pfn):
        return self._test(pfn, PG_uptodate)

    def PageDirty(self, pfn):
        return self._test(pfn, PG_dirty)

    def SetPageUptodate(self, pfn):
        self.k.page_alloc.set_page_flag(pfn, PG_uptodate)

    def page_mapping(self, pfn):
        """page->mapping as an AddressSpace (None: not in a file's cache)."""
        return self.mappings.get(self.k.page_alloc.page_mapping(pfn))

    def page_index(self, pfn):
        return self.k.page_alloc.page_index(pfn)

    def new_mapping(self, host):
        """An empty address_space for a new inode (None if lowmem is out)."""
        guest = self.k.slab.kmalloc(ADDRESS_SPACE_SIZE, 'address_space')
        if guest is None:
            return None
        self.k.machine.write(guest - PAGE_OFFSET, bytes(ADDRESS_SPACE_SIZE))
        mapping = AddressSpace(host, guest, len(self.mappings))
        self.mappings[guest] = mapping
        return mapping

    # ---- the cache: lookup, insert, remove (never sleep) --------------------

    def find_get_page(self, mapping, index):
        """find_get_page(): the cached page at `index` with a reference
        taken, or None.  Never sleeps; callers charge 'page_cache_lookup'."""
        pfn = mapping.pages.get(index)
        if pfn is None:
            self.counters['page_cache_misses'] += 1
            return None
        self.counters['page_cache_hits'] += 1
        self.k.page_ref(pfn)
        return pfn

    def add_to_page_cache(self, task, pfn, mapping, index):
        """add_to_page_cache_lru() (2.5.34): insert a new page, locked (for
        `task`), with the cache's reference; then onto vmscan's LRU.
        Returns 0, or -EEXIST if another page got there first.  Never
        sleeps."""
        if index in mapping.pages:
            return -EEXIST
        pa = self.k.page_alloc
        if pa.test_page_flag(pfn, PG_locked):
            raise KernelBug(f'add_to_page_cache: pfn {pfn:#x} is already locked')
        pa.set_page_flag(pfn, PG_locked)
        self.lock_owner[pfn] = task
        self.k.page_ref(pfn)
        pa.set_page_mapping(pfn, mapping.guest)
        pa.set_page_index(pfn, index)
        mapping.pages[index] = pfn
        self.counters['page_cache_adds'] += 1
        self.counters['page_cache_pages'] += 1
        lru_cache_add = getattr(self.k, 'lru_cache_add', None)
        if lru_cache_add is not None:
            lru_cache_add(pfn)
        return 0

    def _unhash(self, pfn):
        """__remove_from_page_cache(): out of the mapping, page->mapping
        cleared.  The cache's reference is the caller's to drop."""
        mapping = self.page_mapping(pfn)
        if mapping is None:
            raise KernelBug(f'remove_from_page_cache: pfn {pfn:#x} is not in a page cache')
        index = self.page_index(pfn)
        if mapping.pages.get(index) != pfn:
            raise KernelBug(f'remove_from_page_cache: pfn {pfn:#x} is not at index {index} '
                            f'of {mapping.host.name}')
        del mapping.pages[index]
        self.k.page_alloc.set_page_mapping(pfn, 0)
        self.k.page_alloc.set_page_index(pfn, 0)
        self.prepared.discard(pfn)
        self.counters['page_cache_removes'] += 1
        self.counters['page_cache_pages'] -= 1

    def remove_from_page_cache(self, pfn):
        """Reclaim's hook (2.4 shrink_cache: __remove_inode_page +
        page_cache_release): drop a clean, unmapped, unlocked page from its
        cache together with the cache's reference (which frees it when that
        was the last).  Never sleeps.  BUG on a dirty, locked or mapped page:
        its data would be lost."""
        k = self.k
        if self.PageDirty(pfn) or self.PageLocked(pfn) or k.rmap.mapcount(pfn) > 0:
            raise KernelBug(f'remove_from_page_cache: pfn {pfn:#x} is dirty, locked or mapped '
                            f'(flags {k.page_alloc.page_flags(pfn):#x})')
        self._unhash(pfn)
        k.put_page(pfn)

    def page_cache_release(self, pfn):
        """page_cache_release() = put_page().  Never sleeps."""
        self.k.put_page(pfn)

    # ---- the page lock -----------------------------------------------------

    def _page_waitqueue(self, pfn):
        return self.wait_table[pfn % NR_WAIT_TABLE]

    def trylock_page(self, task, pfn):
        """TestSetPageLocked(): take the page lock if it is free.  Never sleeps.
        page->flags is read and written as a word of mem_map (what
        test_page_flag/set_page_flag do, without their calls: reclaim
        takes and drops page locks once per PTE it looks at)."""
        fw = self.k.page_alloc.page_words
        w = pfn * PAGE_WORDS + W_FLAGS
        flags = fw[w]
        if flags & _LOCKED:
            return False
        fw[w] = flags | _LOCKED
        self.lock_owner[pfn] = task
        return True

    def lock_page(self, task, pfn):
        """lock_page() (2.5.34 __lock_page): sleep until PG_locked is clear,
        then set it.  Generator; may sleep (TASK_UNINTERRUPTIBLE); a task
        that already holds the page's lock sleeps forever (self-deadlock,
        as in Linux)."""
        self.k.sched.might_sleep(task, 'mm/filemap.c:lock_page')
        self.k.trace_event('lock_page', task=task, pfn=pfn)
        yield Charge(self.k.costs['lock_page'])
        if self.trylock_page(task, pfn):
            return
        self.counters['lock_page_waits'] += 1
        what = ('page_lock', pfn, lambda: self.lock_owner.get(pfn))
        yield from self.k.sched.wait_event(task, self._page_waitqueue(pfn),
                                           lambda: not self.PageLocked(pfn), what=what)
        # No yield since wait_event saw the bit clear: nobody took it since.
        self.trylock_page(task, pfn)

    def unlock_page(self, task, pfn):
        """unlock_page(): clear PG_locked, wake the page's wait queue.
        Never sleeps.  BUG if the page is not locked."""
        k = self.k
        fw = k.page_alloc.page_words
        w = pfn * PAGE_WORDS + W_FLAGS
        flags = fw[w]
        if not flags & _LOCKED:
            raise KernelBug(f'unlock_page: pfn {pfn:#x} is not locked')
        fw[w] = flags & ~_LOCKED
        self.lock_owner.pop(pfn, None)
        wq = self.wait_table[pfn % NR_WAIT_TABLE]           # _page_waitqueue
        if wq.tasks:
            k.sched.wake_up(wq)
        if k.tracer is not None or k.point_hook is not None:    # someone listens
            k.trace_event('unlock_page', task=task, pfn=pfn)

    def wait_on_page_locked(self, task, pfn):
        """wait_on_page_locked(): sleep until the page is unlocked, without
        taking the lock.  Generator; may sleep."""
        self.k.sched.might_sleep(task, 'mm/filemap.c:wait_on_page_locked')
        if not self.PageLocked(pfn):
            return
        what = ('page_lock', pfn, lambda: self.lock_owner.get(pfn))
        yield from self.k.sched.wait_event(task, self._page_waitqueue(pfn),
                                           lambda: not self.PageLocked(pfn), what=what)

    def _assert_locked(self, pfn, fn):
        if not self.PageLocked(pfn):
            raise KernelBug(f'{fn}: pfn {pfn:#x} is not locked')

    # ---- find or create a page ---------------------------------------------

    def grab_cache_page(self, task, mapping, index):
        """__grab_cache_page() (2.5.34): the page at `index`, locked, with a
        reference for the caller: find_lock_page, or a new GFP_HIGHUSER page
        added to the cache (locked, not uptodate).  Generator -> pfn, or
        None when out of memory.  May sleep (lock_page, the allocator)."""
        k = self.k
        while True:
            yield Charge(k.costs['page_cache_lookup'])
            pfn = self.find_get_page(mapping, index)
            if pfn is not None:
                yield from self.lock_page(task, pfn)
                if self.page_mapping(pfn) is mapping and self.page_index(pfn) == index:
                    return pfn
                self.unlock_page(task, pfn)           # truncated while we slept
                self.page_cache_release(pfn)
                continue
            new = yield from k.alloc_page(task, GFP_HIGHUSER)
            if new is None:
                return None
            if self.add_to_page_cache(task, new, mapping, index) == 0:
                return new
            self.page_cache_release(new)              # someone added it meanwhile

    # ---- block I/O: one file block per page ---------------------------------

    def _zero_segments(self, task, pfn, ranges):
        """memset(kaddr + start, 0, end - start) for each (start, end) on a
        kmap_atomic(KM_USER0) mapping of the page: guest code.  Never
        sleeps."""
        page = self.k.page_to_guest(pfn)
        kaddr = yield Guest('kmap_atomic', page, KM_USER0)
        for start, end in ranges:
            if end > start:
                yield Guest('__clear_user', kaddr + start, end - start)
        yield Guest('kunmap_atomic', kaddr, KM_USER0)

    def _read_block(self, task, inode, index, pfn):
        """get_block + submit_bh(READ) + wait: the block's data into the
        frame by disk DMA (the task sleeps), or zeros for a hole (guest
        clear_user_highpage).  The page stays locked.  Generator -> 0/-EIO."""
        k = self.k
        if index not in inode.on_disk:
            self.counters['readpage_holes'] += 1
            yield Guest('clear_user_highpage', k.page_to_guest(pfn), 0)
            return 0
        self.counters['readpage_io'] += 1
        err = yield from k.blockdev.bio_rw(task, 'read', inode.block(index), pfn)
        return -EIO if err else 0

    def readpage(self, task, pfn):
        """a_ops->readpage = block_read_full_page (2.5.34): called with the
        page locked; reads it, sets PG_uptodate (PG_error on an I/O error)
        and unlocks it.  Generator -> 0 or -EIO; sleeps for the disk."""
        self._assert_locked(pfn, 'readpage')
        mapping = self.page_mapping(pfn)
        err = yield from self._read_block(task, mapping.host, self.page_index(pfn), pfn)
        pa = self.k.page_alloc
        if err:
            pa.set_page_flag(pfn, PG_error)
        else:
            pa.clear_page_flag(pfn, PG_error)
            pa.set_page_flag(pfn, PG_uptodate)
        self.unlock_page(task, pfn)
        return err

    def writepage(self, task, pfn, wait=True):
        """a_ops->writepage = block_write_full_page (2.5.34): called with
        the page locked; clears PG_dirty, zeroes the part of the last page
        beyond i_size ("it may be mmapped"), starts the write; the page is
        unlocked when the I/O completes (end_buffer_async_write).  A page
        wholly beyond i_size is not written.  With wait, sleeps until then.
        Generator -> 0 or -EIO (the page is dirty again)."""
        k = self.k
        go = yield from self._writepage_prepare(task, pfn)
        if not go:
            return 0
        inode, index = self.page_mapping(pfn).host, self.page_index(pfn)
        result = {}
        yield Charge(100)
        k.blockdev.submit(task, 'write', inode.block(index), pfn, 1,
                          self._end_write(task, inode, [(pfn, index)], result))
        if not wait:
            return 0
        yield from self.wait_on_page_locked(task, pfn)
        return -EIO if result.get('err') else 0

    def _writepage_prepare(self, task, pfn):
        """The page-level half of block_write_full_page, page locked: clear
        PG_dirty; a page wholly beyond i_size is unlocked and not written;
        the last page's part beyond i_size is zeroed.  Generator -> True if
        the page is to be written."""
        self._assert_locked(pfn, 'writepage')
        inode, index = self.page_mapping(pfn).host, self.page_index(pfn)
        self.k.page_alloc.clear_page_flag(pfn, PG_dirty)
        end_index, tail = inode.size >> PAGE_SHIFT, inode.size & (PAGE - 1)
        if index > end_index or (index == end_index and not tail):
            self.unlock_page(task, pfn)
            return False
        if index == end_index:
            yield from self._zero_segments(task, pfn, [(tail, PAGE)])
        self.counters['writepage_io'] += 1
        return True

    def _end_write(self, task, inode, pages, result):
        """end_buffer_async_write / mpage_end_io_write for [(pfn, index)]:
        on error PG_error and dirty again, else the block is on the disk;
        each page is unlocked."""
        k = self.k

        def end_io(req):
            result['err'] = req.error
            for pfn, index in pages:
                if req.error:
                    k.page_alloc.set_page_flag(pfn, PG_error)
                    self.set_page_dirty(pfn)
                else:
                    inode.on_disk.add(index)
                self.unlock_page(task, pfn)
        return end_io

    def _submit_bio(self, task, inode, pages):
        """mpage_bio_submit (2.5 fs/mpage.c): one write request for pages
        [(pfn, index)] of consecutive indexes on consecutive blocks (one
        extent per file), scatter-gather over their frames."""
        yield Charge(100)
        self.k.blockdev.submit(task, 'write', inode.block(pages[0][1]), [p for p, _ in pages],
                               len(pages), self._end_write(task, inode, pages, {}))

    def set_page_dirty(self, pfn):
        """set_page_dirty() (2.5 __set_page_dirty_nobuffers).  Never sleeps."""
        self.k.page_alloc.set_page_flag(pfn, PG_dirty)

    # ---- prepare_write / commit_write -----------------------------------------

    def block_prepare_write(self, task, pfn, from_, to):
        """block_prepare_write() (fs/buffer.c, 2.4/2.5.34), page locked:
        make the page's block valid before [from_, to) is copied in.  A page
        already uptodate needs nothing; a block on the disk is read first
        unless the write covers the whole page; a new block (a hole) gets
        the parts outside [from_, to) zeroed through kmap_atomic.  The page
        stays locked.  Generator -> 0 or -EIO; may sleep (the read)."""
        self._assert_locked(pfn, 'block_prepare_write')
        if not 0 <= from_ <= to <= PAGE:
            raise KernelBug(f'block_prepare_write: bad range {from_}..{to}')
        if self.PageUptodate(pfn):
            self.prepared.add(pfn)
            return 0
        mapping = self.page_mapping(pfn)
        inode, index = mapping.host, self.page_index(pfn)
        if index in inode.on_disk:
            if from_ > 0 or to < PAGE:
                self.counters['prepare_write_reads'] += 1
                if (yield from self._read_block(task, inode, index, pfn)):
                    self.k.page_alloc.set_page_flag(pfn, PG_error)
                    return -EIO
        elif from_ > 0 or to < PAGE:
            self.counters['prepare_write_zeroed'] += 1
            yield from self._zero_segments(task, pfn, [(to, PAGE), (0, from_)])
        self.prepared.add(pfn)
        return 0

    def generic_commit_write(self, task, pfn, from_, to):
        """generic_commit_write() (fs/buffer.c, 2.5.34), page locked: the
        bytes [from_, to) are in the page.  The page becomes uptodate if its
        block is now wholly valid (prepared, or fully written), dirty, and
        i_size grows to cover `to`.  Generator -> 0; never sleeps."""
        self._assert_locked(pfn, 'generic_commit_write')
        yield Charge(self.k.costs['pte_update'])
        mapping = self.page_mapping(pfn)
        inode, index = mapping.host, self.page_index(pfn)
        if pfn in self.prepared or (from_ == 0 and to == PAGE):
            self.SetPageUptodate(pfn)
        self.prepared.discard(pfn)
        self.set_page_dirty(pfn)
        pos = (index << PAGE_SHIFT) + to
        if pos > inode.size:
            inode.size = pos
        return 0

    # ---- mmap: nopage ------------------------------------------------------

    def page_cache_read(self, task, mapping, index):
        """page_cache_read() (2.5.34): allocate, add, readpage.  Generator ->
        0 (also when someone else added the page first), -ENOMEM or -EIO."""
        k = self.k
        pfn = yield from k.alloc_page(task, GFP_HIGHUSER)
        if pfn is None:
            return -ENOMEM
        if self.add_to_page_cache(task, pfn, mapping, index):
            self.page_cache_release(pfn)
            return 0
        err = yield from self.readpage(task, pfn)
        self.page_cache_release(pfn)
        return err

    def filemap_nopage(self, task, vma, pgoff):
        """filemap_nopage() (2.5.34).  Generator -> (pfn, major) with a
        reference for the PTE; (None, None) for SIGBUS (beyond i_size, or an
        I/O error), (None, True) when out of memory.

        A cached page that is not uptodate is locked before being read: a
        task that holds that very page's lock (a write copying from an mmap
        of the page it is writing) sleeps here forever."""
        k = self.k
        inode = vma.file.inode
        mapping = inode.mapping
        major = False
        while True:
            size = (inode.size + PAGE - 1) >> PAGE_SHIFT
            if pgoff >= size and vma.mm is task.mm:
                return None, None
            k.machine.charge(task.cpu, k.costs['page_cache_lookup'])    # = yield Charge(...)
            pfn = self.find_get_page(mapping, pgoff)
            if pfn is None:                                   # no_cached_page
                err = yield from self.page_cache_read(task, mapping, pgoff)
                if err == -ENOMEM:
                    return None, True
                if err:
                    return None, None
                major = True
                continue                                      # retry_find
            if not self.PageUptodate(pfn):                    # page_not_uptodate
                yield from self.lock_page(task, pfn)
                if self.page_mapping(pfn) is None:            # truncated meanwhile
                    self.unlock_page(task, pfn)
                    self.page_cache_release(pfn)
                    continue
                if self.PageUptodate(pfn):
                    self.unlock_page(task, pfn)
                else:
                    major = True
                    if (yield from self.readpage(task, pfn)) or not self.PageUptodate(pfn):
                        self.page_cache_release(pfn)
                        return None, None
            self._mapped_for_write(vma, inode, pgoff)
            return pfn, major

    def _mapped_for_write(self, vma, inode, pgoff):
        """Tell the data oracle that user stores may now change this page
        behind write()'s back (a shared writable mapping)."""
        oracle = getattr(self.k, 'oracle', None)
        if oracle is not None and vma.flags & VM_SHARED and vma.flags & VM_WRITE:
            oracle.shared_writable(inode, pgoff)

    # ---- read() ---------------------------------------------------------------

    def generic_file_read(self, task, file, buf, count):
        """do_generic_file_read() (2.5.34) with file_read_actor: copy from
        the page cache to user `buf`, reading pages in as needed (the task
        sleeps for the disk).  The caller did access_ok(buf, count).
        Generator -> bytes copied, or -errno if none were."""
        k = self.k
        inode = file.inode
        mapping = inode.mapping
        index, offset = file.pos >> PAGE_SHIFT, file.pos & (PAGE - 1)
        written, error = 0, 0
        while count:
            isize = inode.size
            end_index = isize >> PAGE_SHIFT
            if index > end_index:
                break
            nr = PAGE
            if index == end_index:
                nr = isize & (PAGE - 1)
                if nr <= offset:
                    break
            nr -= offset
            if k.sched.need_resched(task):                    # cond_resched()
                yield from k.sched.schedule(task)
            pfn, error = yield from self._get_uptodate_page(task, mapping, index)
            if pfn is None:
                break
            ret, error = yield from self._file_read_actor(task, pfn, offset, buf, min(nr, count))
            self._mark_accessed(pfn)
            self.page_cache_release(pfn)
            written += ret
            buf += ret
            count -= ret
            offset += ret
            index += offset >> PAGE_SHIFT
            offset &= PAGE - 1
            if error or ret < nr:
                break
        file.pos = (index << PAGE_SHIFT) + offset
        if getattr(k, 'oracle', None) is not None:
            k.oracle.read_done(file, written)
        self.counters['file_read_bytes'] += written
        return written if written else error

    def _get_uptodate_page(self, task, mapping, index):
        """The find_page / page_not_up_to_date / readpage / no_cached_page
        part of do_generic_file_read.  Generator -> (pfn with a reference,
        0) or (None, -errno)."""
        k = self.k
        while True:
            yield Charge(k.costs['page_cache_lookup'])
            pfn = self.find_get_page(mapping, index)
            if pfn is None:                                   # no_cached_page
                pfn = yield from k.alloc_page(task, GFP_HIGHUSER)
                if pfn is None:
                    return None, -ENOMEM
                if self.add_to_page_cache(task, pfn, mapping, index):
                    self.page_cache_release(pfn)
                    continue                                  # -EEXIST: find_page
            elif self.PageUptodate(pfn):
                return pfn, 0
            else:                                             # page_not_up_to_date
                yield from self.lock_page(task, pfn)
                if self.page_mapping(pfn) is None:
                    self.unlock_page(task, pfn)
                    self.page_cache_release(pfn)
                    continue
                if self.PageUptodate(pfn):
                    self.unlock_page(task, pfn)
                    return pfn, 0
            err = yield from self.readpage(task, pfn)         # readpage:
            if not err and self.PageUptodate(pfn):
                return pfn, 0
            self.page_cache_release(pfn)
            return None, -EIO

    def _file_read_actor(self, task, pfn, offset, buf, size):
        """file_read_actor(): copy `size` bytes at `offset` of the page to
        user `buf`.  No lock held; may sleep (the kmap copy faults).
        read_path=kmap is 2.4.18's: kmap + __copy_to_user + kunmap.
        read_path=atomic is Andrew Morton's conversion (2.5.33-akpm,
        <3D771064.B1E989C7@zip.com.au>, merged in 2.5.34):
        fault_in_pages_writeable(buf, size) (__put_user(0) of the first byte
        and, across a page, of the last), then kmap_atomic(KM_USER0) +
        __copy_to_user + kunmap_atomic; a short atomic copy (the patch's
        printk "Unexpected page fault": counted as read_atomic_short) or a
        failed fault-in falls back to the slow way, 2.4.18's kmap copy.
        Generator -> (copied, 0 or -EFAULT)."""
        page = self.k.page_to_guest(pfn)
        if self.k.config['read_path'] == 'atomic':
            if (yield Guest('fault_in_pages_writeable', buf, size)) == 0:
                kaddr = yield Guest('kmap_atomic', page, KM_USER0)
                left = yield Guest('__copy_to_user', buf, kaddr + offset, size)
                yield Guest('kunmap_atomic', kaddr, KM_USER0)
                if left == 0:
                    self.counters['read_atomic_copies'] += 1
                    return size, 0
                self.counters['read_atomic_short'] += 1
        self.counters['read_kmap_copies'] += 1
        kaddr = yield Guest('kmap', page)
        left = yield Guest('__copy_to_user', buf, kaddr + offset, size)
        yield Guest('kunmap', page)
        if left:
            return size - left, -EFAULT
        return size, 0

    def _mark_accessed(self, pfn):
        mark = getattr(self.k, 'mark_page_accessed', None)
        if mark is not None:
            mark(pfn)

    # ---- write(): the frame; the per-page work is k.write_paths' -------------

    def generic_file_write(self, task, file, iov, count):
        """generic_file_write() (2.5.34, iovec flavour), the loop without
        its body: take inode->i_sem, walk the range page by page and let the
        boot's write design (k.write_paths.write_page) copy each piece into
        the page cache; release i_sem.  `iov` is the user's segments
        [(base, len)] (one for write(), several for writev()); the caller
        did access_ok on each.  Generator -> bytes written, or -errno if
        none were; may sleep.

        write_page(task, file, index, offset, segs, bytes) gets the piece of
        the iovec that goes into this page, as segments, and returns the
        bytes it copied (0: stop; negative: an error that stops the write).
        The data oracle snapshots the user buffers here, at entry, and
        learns the result in the same Python step as up(i_sem)."""
        k = self.k
        inode = file.inode
        oracle = getattr(k, 'oracle', None)
        rec = oracle.write_begin(task, file, iov, count) if oracle is not None else None
        yield from inode.i_sem.down_write(task)
        inode.exec_image = None                 # exec no longer knows its contents (binfmt.py)
        pos = inode.size if file.append else file.pos
        written, status = 0, 0
        if pos >= inode.max_size:
            status, count = -EFBIG, 0
        else:
            count = min(count, inode.max_size - pos)
        if rec is not None:
            oracle.write_at(rec, pos)                   # the oracle's own position, compared
        while count:
            index, offset = pos >> PAGE_SHIFT, pos & (PAGE - 1)
            nbytes = min(PAGE - offset, count)
            segs = iov_slice(iov, written, nbytes)
            if not inode.get_block(index):                    # get_block(create): disk full
                status = -ENOSPC
                break
            copied = yield from self._write_paths().write_page(task, file, index, offset, segs,
                                                               nbytes)
            if copied > nbytes:
                raise KernelBug(f'write_page copied {copied} of {nbytes} bytes')
            if copied <= 0:
                status = copied
                break
            written += copied
            pos += copied
            count -= copied
            if k.sched.need_resched(task):                    # cond_resched()
                yield from k.sched.schedule(task)
        file.pos = pos
        inode.i_sem.up_write(task)
        if rec is not None:
            oracle.write_end(rec, written)
        self.counters['file_write_bytes'] += written
        return written if written else status

    def _write_paths(self):
        wp = getattr(self.k, 'write_paths', None)
        if wp is None:
            raise KernelBug('generic_file_write: no write path (k.write_paths) at this boot')
        return wp

    # ---- writeback ---------------------------------------------------------

    def sync_inodes(self, task):
        """sync_inodes() / filemap_fdatawrite() + filemap_fdatawait() for
        every file: start the write of each dirty page cache page in file
        and index order, then wait for them all.  As 2.5's writepages =
        mpage_writepages, pages of consecutive indexes on consecutive disk
        blocks go to the disk as one request of up to BIO_MAX_PAGES pages
        (a file's extents need not be adjacent: a new bio where they end).  Pages
        dirtied only through a PTE are found once the PTE's dirty bit moved
        to the page (at unmap), as in 2.5.  The wait goes from the last
        page started back to the first: the disk is first come first served,
        so the first wait sleeps until the whole batch is written and the
        others find their page unlocked (one sleep per batch instead of a
        sleep and a wake-up per page; a page still locked, e.g. behind a
        delayed request, is waited for).  Generator -> pages written;
        sleeps for the disk."""
        started = []
        for mapping in sorted(self.mappings.values(), key=lambda m: m.seq):
            bio = []                                  # [(pfn, index)] of the bio being built
            for index in sorted(mapping.pages):
                pfn = mapping.pages.get(index)
                if pfn is None or not self.PageDirty(pfn):
                    continue
                self.k.page_ref(pfn)
                yield from self.lock_page(task, pfn)
                if self.page_mapping(pfn) is mapping and self.PageDirty(pfn):
                    started.append(pfn)
                    host = mapping.host                   # mpage_writepage: a new bio when the
                    if bio and (index != bio[-1][1] + 1 or len(bio) == BIO_MAX_PAGES    # block is not
                                or host.block(index) != host.block(bio[-1][1]) + 1):   # the next one
                        yield from self._submit_bio(task, mapping.host, bio)
                        bio = []
                    if (yield from self._writepage_prepare(task, pfn)):
                        bio.append((pfn, index))
                else:
                    self.unlock_page(task, pfn)
                    self.page_cache_release(pfn)
            if bio:
                yield from self._submit_bio(task, mapping.host, bio)
        written = 0
        for pfn in reversed(started):
            yield from self.wait_on_page_locked(task, pfn)
        for pfn in started:
            if not self.k.page_alloc.test_page_flag(pfn, PG_error):
                written += 1
            self.page_cache_release(pfn)
        self.counters['sync_pages_written'] += written
        return written

    def writepage_for_reclaim(self, task, pfn):
        """Reclaim's pageout() (2.5 shrink_list) for a page cache page it
        holds locked, with a reference: writepage if it is still dirty and
        in the cache (writepage unlocks it), else unlock it.  Generator ->
        'written', 'clean' or 'error'; sleeps for the disk."""
        if self.page_mapping(pfn) is None or not self.PageDirty(pfn):
            self.unlock_page(task, pfn)
            return 'clean'
        err = yield from self.writepage(task, pfn)
        return 'error' if err else 'written'

    def dirty_pages(self):
        return sum(1 for m in self.mappings.values() for pfn in m.pages.values()
                   if self.PageDirty(pfn))

    # ---- truncate ---------------------------------------------------------------

    def truncate_inode_pages(self, task, mapping, start=0):
        """truncate_inode_pages(mapping, start * PAGE_SIZE) (2.4): lock each
        page from index `start` on, drop its dirt and take it out of the
        cache, dropping the cache's reference.  The caller made sure no PTE
        maps them.  Generator; may sleep."""
        for index in sorted(i for i in mapping.pages if i >= start):
            pfn = mapping.pages.get(index)
            if pfn is None:
                continue
            self.k.page_ref(pfn)
            yield from self.lock_page(task, pfn)
            if self.page_mapping(pfn) is mapping:
                self.k.page_alloc.clear_page_flag(pfn, PG_dirty)
                self.k.page_alloc.clear_page_flag(pfn, PG_uptodate)
                self._unhash(pfn)
                self.page_cache_release(pfn)                  # the cache's reference
            self.unlock_page(task, pfn)
            self.page_cache_release(pfn)
