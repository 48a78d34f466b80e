"""Files, the page cache and the read path (minikernel/fs.py, filemap.py).

User programs (asm/user/ft_*.S) check what they read and exit non-zero on
any difference; the tests also look at the machine itself: page cache
pages in RAM, struct page fields, the disk's blocks, the block layer's
counters.  Expected bytes come from pattern() below, the same formula the
programs compute in guest code.

The write path proper (the six designs) is not this file's: AtomicWritePath
is a stand-in with 2.5.34's copy (kmap_atomic + __copy_from_user, no
fallback), plugged in as k.write_paths.
"""
import functools

import pytest

from minikernel.binfmt import assemble_program
from minikernel.bug import KernelBug
from minikernel.kernel import ASM_DIR, ROOT, Kernel
from minikernel.layout import KM_USER0
from minikernel.page_alloc import PG_dirty, PG_locked, PG_uptodate
from minikernel.sched import TI_PREEMPT_COUNT
from minikernel.task import Guest

PAGE = 4096
MiB = 1 << 20
PROGRAMS = ('ft_rw', 'ft_mmap', 'ft_efault', 'ft_samepage')
O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_EXCL = 0, 1, 2, 0o100, 0o200


def pattern(n, seed):
    """The bytes ft_rw / ft_mmap write and expect."""
    return bytes((7 * i + 3 * (i >> 8) + 11 * (i >> 12) + seed) & 0xFF for i in range(n))


@functools.cache
def programs():
    return {p: assemble_program(p, ROOT, ASM_DIR) for p in PROGRAMS}


class AtomicWritePath:
    """write_page() the 2.5.34 way without its fallback: prefault the
    source, __grab_cache_page, prepare_write, kmap_atomic(KM_USER0) +
    __copy_from_user, commit_write what was copied; a short copy is an
    error.  `skew` copies from buf + skew (a deliberately wrong kernel, for
    the oracle's tests)."""

    def __init__(self, k, skew=0):
        self.k = k
        self.skew = skew

    def write_page(self, task, file, index, offset, segs, nbytes):
        buf = segs[0][0]
        k, fm = self.k, self.k.filemap
        if (yield Guest('fault_in_pages_readable', buf, nbytes)) != 0:
            return -14
        pfn = yield from fm.grab_cache_page(task, file.mapping, index)
        if pfn is None:
            return -12
        err = yield from fm.block_prepare_write(task, pfn, offset, offset + nbytes)
        if err:
            fm.unlock_page(task, pfn)
            fm.page_cache_release(pfn)
            return err
        kaddr = yield Guest('kmap_atomic', k.page_to_guest(pfn), KM_USER0)
        left = yield Guest('__copy_from_user', kaddr + offset, buf + self.skew, nbytes)
        yield Guest('kunmap_atomic', kaddr, KM_USER0)
        copied = nbytes - left
        if copied:
            yield from fm.generic_commit_write(task, pfn, offset, offset + copied)
        fm.unlock_page(task, pfn)
        fm.page_cache_release(pfn)
        return copied if copied else -14


def boot(write_path=AtomicWritePath, **options):
    opts = {'mem': 64 * MiB, 'highmem': 32 * MiB, 'max_cycles': 2_000_000_000}
    opts.update(options)
    k = Kernel(opts, programs())
    k.write_paths = write_path(k)
    return k


def has_kmap(k):
    return 'kmap' in k.image.symbols


def kthread(k, name, body, start=0):
    """A kernel thread running generator function body(task)."""
    return k.kernel_thread(name, 0, body, start=start)


def flags(k, pfn):
    return k.page_alloc.page_flags(pfn)


def ram_page(k, pfn):
    return bytes(k.machine.read(pfn << 12, PAGE))


def bugs(k):
    return [r['message'] for r in k.reports if r['kind'] in ('bug', 'oops', 'corruption')]


# ---- write, read back ------------------------------------------------------------

def test_write_then_read_back_across_page_boundaries():
    k = boot(read_path='atomic')
    size = 3 * PAGE + 1234
    t = k.spawn('rw', 'ft_rw', ['out', size, 1000, 777, 5])
    assert k.run() == 'finished'
    assert t.exit_code == 0 and t.killed_by is None, t.exit_code
    assert bugs(k) == []
    inode = k.vfs.lookup('out')
    assert inode.size == size
    c = k.filemap.counters
    assert c['file_write_bytes'] == size and c['file_read_bytes'] == size
    assert c['read_atomic_copies'] > 0 and c['read_kmap_copies'] == 0
    # The page cache as Linux has it: mapping/index set, the cache's one
    # reference, uptodate and dirty (nothing was written back yet), unlocked.
    assert sorted(inode.mapping.pages) == [0, 1, 2, 3]
    for index, pfn in inode.mapping.pages.items():
        page = k.page_alloc.mem_map[pfn]
        assert int(page['mapping']) == inode.mapping.guest and int(page['index']) == index
        assert k.page_alloc.page_count(pfn) == 1
        f = flags(k, pfn)
        assert f & (1 << PG_uptodate) and f & (1 << PG_dirty) and not f & (1 << PG_locked)
        assert ram_page(k, pfn)[:min(PAGE, size - index * PAGE)] == \
            pattern(size, 5)[index * PAGE:(index + 1) * PAGE]
        assert k.page_alloc.PageHighMem(pfn)          # GFP_HIGHUSER


def test_writeback_at_sync_puts_the_data_on_the_disk():
    k = boot()
    size = 2 * PAGE + 300
    t = k.spawn('rw', 'ft_rw', ['out', size, PAGE, PAGE, 9])
    assert k.run() == 'finished' and t.exit_code == 0
    inode = k.vfs.lookup('out')
    assert inode.on_disk == set()
    assert k.disk.peek(inode.first_block, 3) == bytes(3 * PAGE)
    writes = k.blockdev.counters['bio_writes']
    k.finish()                                         # the sync kernel thread
    assert bugs(k) == []
    assert k.filemap.counters['sync_pages_written'] == 3
    assert k.blockdev.counters["bio_writes"] == writes + 1        # one multi-page bio (mpage_writepages)
    assert k.disk.peek(inode.first_block, 3) == pattern(size, 9) + bytes(3 * PAGE - size)
    assert inode.on_disk == {0, 1, 2}
    assert not any(flags(k, pfn) & (1 << PG_dirty) for pfn in inode.mapping.pages.values())


def test_full_page_writes_read_nothing_partial_ones_read_or_zero():
    k = boot()
    k.vfs.create_file('f', pattern(3 * PAGE, 1))
    inode = k.vfs.lookup('f')
    seen = {}

    def body(task):
        fm = k.filemap
        reads = k.blockdev.counters['bio_reads']
        p0 = yield from fm.grab_cache_page(task, inode.mapping, 0)
        assert (yield from fm.block_prepare_write(task, p0, 0, PAGE)) == 0
        seen['full_reads'] = k.blockdev.counters['bio_reads'] - reads
        assert not fm.PageUptodate(p0)
        yield from fm.generic_commit_write(task, p0, 0, PAGE)
        seen['p0'] = flags(k, p0)
        p1 = yield from fm.grab_cache_page(task, inode.mapping, 1)
        assert (yield from fm.block_prepare_write(task, p1, 100, 200)) == 0
        seen['partial_reads'] = k.blockdev.counters['bio_reads'] - reads
        seen['p1'] = ram_page(k, p1)
        yield from fm.generic_commit_write(task, p1, 100, 200)
        p5 = yield from fm.grab_cache_page(task, inode.mapping, 5)     # a hole past EOF
        assert (yield from fm.block_prepare_write(task, p5, 10, 20)) == 0
        seen['hole_reads'] = k.blockdev.counters['bio_reads'] - reads
        seen['p5'] = ram_page(k, p5)
        yield from fm.generic_commit_write(task, p5, 10, 20)
        for pfn in (p0, p1, p5):
            fm.unlock_page(task, pfn)
            fm.page_cache_release(pfn)
    kthread(k, 'prep', body)
    assert k.run() == 'finished'
    assert seen['full_reads'] == 0
    assert seen['p0'] & (1 << PG_uptodate) and seen['p0'] & (1 << PG_dirty)
    assert seen['partial_reads'] == 1 and seen['p1'] == pattern(3 * PAGE, 1)[PAGE:2 * PAGE]
    assert seen['hole_reads'] == 1                 # no more: the hole was zeroed, not read
    assert seen['p5'][:10] == bytes(10) and seen['p5'][20:] == bytes(PAGE - 20)
    assert k.filemap.counters['prepare_write_zeroed'] == 1
    assert inode.size == 5 * PAGE + 20


def test_reading_a_boot_file_sleeps_for_disk_dma():
    k = boot()
    size = 3 * PAGE + 100
    data = pattern(size, 3)
    k.vfs.create_file('data', data)
    t = k.spawn('r', 'ft_rw', ['data', size, 0, 1000, 3])
    assert k.run() == 'finished' and t.exit_code == 0
    c, b = k.filemap.counters, k.blockdev.counters
    assert c['readpage_io'] == 4 and c['readpage_holes'] == 0
    assert b['bio_reads'] >= 4 and b['io_wait_sleeps'] == b['bio_reads']
    assert t.counters['sleeps'] >= 4
    assert k.disk.counters['blocks_read'] == b['bio_reads']
    inode = k.vfs.lookup('data')
    for index, pfn in inode.mapping.pages.items():     # what the DMA brought in
        assert ram_page(k, pfn) == (data + bytes(PAGE))[index * PAGE:(index + 1) * PAGE]
        assert not flags(k, pfn) & (1 << PG_dirty)


def test_truncate_drops_the_cache_and_old_blocks_read_as_holes():
    k = boot()
    k.vfs.create_file('f', pattern(5 * PAGE, 7))
    r = k.spawn('r', 'ft_rw', ['f', 5 * PAGE, 0, PAGE, 7])
    w = k.spawn('w', 'ft_rw', ['f', PAGE + 10, 300, 500, 2], start=50_000_000)
    assert k.run() == 'finished'
    assert r.exit_code == 0 and w.exit_code == 0, (r.exit_code, w.exit_code)
    inode = k.vfs.lookup('f')
    assert inode.size == PAGE + 10 and sorted(inode.mapping.pages) == [0, 1]
    assert k.vfs.counters()['fs_truncates'] == 1
    k.finish()
    assert bugs(k) == []
    assert k.disk.peek(inode.block(1))[:10] == pattern(PAGE + 10, 2)[PAGE:]
    assert k.disk.peek(inode.block(1))[10:] == bytes(PAGE - 10)     # not the old data


def test_two_writers_on_two_cpus():
    k = boot(cpus=2)
    a = k.spawn('a', 'ft_rw', ['a', 5 * PAGE + 7, 3000, 4096, 1], cpu=0)
    b = k.spawn('b', 'ft_rw', ['b', 4 * PAGE - 1, 5000, 999, 2], cpu=1)
    assert k.run() == 'finished'
    assert a.exit_code == 0 and b.exit_code == 0
    k.finish()
    assert bugs(k) == []
    for name, size, seed in (('a', 5 * PAGE + 7, 1), ('b', 4 * PAGE - 1, 2)):
        inode = k.vfs.lookup(name)
        assert k.disk.peek(inode.first_block, 6)[:size] == pattern(size, seed)


# ---- mmap -----------------------------------------------------------------------------

def test_mmap_shared_reads_the_file_and_a_store_reaches_the_disk():
    k = boot()
    size = 2 * PAGE + 300
    k.vfs.create_file('data', pattern(size, 3))
    faults = k.mm.counters['major_faults']
    t = k.spawn('m', 'ft_mmap', ['data', size, 3, PAGE + 1, 0x5A])
    assert k.run() == 'finished' and t.exit_code == 0, t.exit_code
    assert k.mm.counters['major_faults'] - faults >= 3     # text + three file pages
    inode = k.vfs.lookup('data')
    pfn = inode.mapping.pages[1]
    assert flags(k, pfn) & (1 << PG_dirty)                # from the PTE's D bit at munmap
    assert k.page_alloc.page_count(pfn) == 1 and k.rmap.mapcount(pfn) == 0
    k.finish()
    block = k.disk.peek(inode.block(1))
    want = bytearray(pattern(size, 3)[PAGE:2 * PAGE])
    want[1] = 0x5A
    assert block == bytes(want)
    assert bugs(k) == []


def test_a_store_beyond_eof_in_the_last_page_does_not_reach_the_disk():
    k = boot()
    size = PAGE + 300
    k.vfs.create_file('data', pattern(size, 3))
    t = k.spawn('m', 'ft_mmap', ['data', size, 3, size + 5, 0x77])
    assert k.run() == 'finished' and t.exit_code == 0
    inode = k.vfs.lookup('data')
    assert ram_page(k, inode.mapping.pages[1])[305] == 0x77       # in the page cache
    k.finish()
    assert k.disk.peek(inode.block(1)) == pattern(size, 3)[PAGE:] + bytes(PAGE - 300)
    assert bugs(k) == []


def test_nopage_sleeps_on_a_locked_page_that_is_not_uptodate():
    k = boot()
    size = PAGE
    k.vfs.create_file('data', pattern(size, 4))
    inode = k.vfs.lookup('data')
    held = {}

    def holder(task):
        fm = k.filemap
        pfn = yield from fm.grab_cache_page(task, inode.mapping, 0)   # locked, not uptodate
        held['pfn'] = pfn
        yield from k.sleep_for(task, 20_000_000)
        yield from fm.readpage(task, pfn)                            # reads, unlocks
        fm.page_cache_release(pfn)
    h = kthread(k, 'holder', holder)
    u = k.spawn('m', 'ft_mmap', ['data', size, 4, 0, 4], start=100_000)
    assert k.run(10_000_000) == 'time limit'
    pfn = held['pfn']
    assert k.filemap.lock_owner[pfn] is h
    assert u.state == 'D' and u.waiting_on[:2] == ('page_lock', pfn)
    what, holders = k.checks.waits_for(u)
    assert holders == [h] and f'{pfn:#x}' in what
    assert k.run() == 'finished'
    assert u.exit_code == 0 and k.filemap.counters['lock_page_waits'] >= 1
    assert pfn not in k.filemap.lock_owner


class KmapFallbackWritePath(AtomicWritePath):
    """The atomic copy (no prefault), then 2.5.34's fallback when it comes
    back short: the same copy with faults allowed (kmap + __copy_from_user),
    page still locked.  `first` is the atomic copy's routine."""
    first = '__copy_from_user'

    def write_page(self, task, file, index, offset, segs, nbytes):
        buf = segs[0][0]
        k, fm = self.k, self.k.filemap
        pfn = yield from fm.grab_cache_page(task, file.mapping, index)
        yield from fm.block_prepare_write(task, pfn, offset, offset + nbytes)
        page = k.page_to_guest(pfn)
        kaddr = yield Guest('kmap_atomic', page, KM_USER0)
        left = yield Guest(self.first, kaddr + offset, buf, nbytes)
        yield Guest('kunmap_atomic', kaddr, KM_USER0)
        if left:
            kaddr = yield Guest('kmap', page)
            left = yield Guest('__copy_from_user', kaddr + offset, buf, nbytes)
            yield Guest('kunmap', page)
        yield from fm.generic_commit_write(task, pfn, offset, offset + nbytes - left)
        fm.unlock_page(task, pfn)
        fm.page_cache_release(pfn)
        return nbytes - left


class InatomicFallbackWritePath(KmapFallbackWritePath):
    first = '__copy_from_user_inatomic'


def samepage_run(write_path, cached):
    k = boot(write_path=write_path)
    if not has_kmap(k):
        pytest.skip('kmap() is not in the kernel image yet')
    k.vfs.create_file('f', pattern(PAGE, 3))
    if cached:
        k.spawn('r', 'ft_rw', ['f', PAGE, 0, PAGE, 3])
    t = k.spawn('w', 'ft_samepage', ['f', 100], start=50_000_000)
    return k, t, k.run()


def test_writing_a_page_from_its_own_mmap_deadlocks_if_it_was_not_uptodate():
    """filemap_nopage locks a cached page that is not uptodate.  A write
    into a page that was not cached holds a new page locked, and it stays
    !PageUptodate until commit_write (prepare_write only makes its block
    valid), so the fallback copy's fault on the mmap of that very page never
    returns."""
    k, t, end = samepage_run(KmapFallbackWritePath, cached=False)
    assert end == 'deadlock'
    rep = [r for r in k.reports if r['kind'] == 'deadlock'][0]
    assert f'cycle: w/{t.pid} -> w/{t.pid}' in rep['message']
    assert t.waiting_on[0] == 'page_lock'


@pytest.mark.parametrize('write_path,clean', [(KmapFallbackWritePath, False),
                                              (InatomicFallbackWritePath, True)])
def test_writing_a_page_from_its_own_mmap_once_it_is_uptodate(write_path, clean):
    """Uptodate before the write: the fault maps the page, no deadlock.  But
    the short atomic copy of 2.5.34's filemap_copy_from_user is the zeroing
    __copy_from_user: it zeroes the destination, which is the source, and
    the fallback copies those zeros: the data oracle sees the file's bytes
    turn to zeros.  The non-zeroing __copy_from_user_inatomic (2.6.19) is
    clean."""
    k, t, end = samepage_run(write_path, cached=True)
    assert end == 'finished' and t.exit_code == 0
    k.finish()
    reps = [r for r in k.reports if r['kind'] == 'corruption']
    if clean:
        assert bugs(k) == []
    else:
        assert reps and reps[0]['offset'] == 0 and reps[0]['actual'] == bytes(16).hex()


def test_lock_page_on_a_page_we_hold_deadlocks_with_a_cycle():
    k = boot()
    k.vfs.create_file('data', pattern(PAGE, 0))
    inode = k.vfs.lookup('data')

    def body(task):
        pfn = yield from k.filemap.grab_cache_page(task, inode.mapping, 0)
        yield from k.filemap.lock_page(task, pfn)                      # never returns
    t = kthread(k, 'selfish', body)
    assert k.run() == 'deadlock'
    rep = [r for r in k.reports if r['kind'] == 'deadlock'][0]
    assert f'cycle: selfish/{t.pid} -> selfish/{t.pid}' in rep['message']
    assert any('lock_page' in line and f'held by selfish/{t.pid}' in line for line in rep['graph'])
    k.finish()                                   # no sync after a deadlock; no false corruption
    assert [r for r in k.reports if r['kind'] == 'corruption'] == []


def test_lock_page_in_atomic_context_is_reported():
    k = boot()
    k.vfs.create_file('data', pattern(PAGE, 0))
    inode = k.vfs.lookup('data')
    got = {}

    def body(task):
        fm = k.filemap
        pfn = yield from fm.grab_cache_page(task, inode.mapping, 0)
        fm.unlock_page(task, pfn)
        k.sched.write_ti(task, TI_PREEMPT_COUNT, 1)          # as inside kmap_atomic
        yield from fm.lock_page(task, pfn)
        k.sched.write_ti(task, TI_PREEMPT_COUNT, 0)
        got['owner'] = fm.lock_owner.get(pfn)
        fm.unlock_page(task, pfn)
        fm.page_cache_release(pfn)
    t = kthread(k, 'atomic', body)
    assert k.run() == 'finished'
    assert got['owner'] is t
    msgs = bugs(k)
    assert len(msgs) == 1 and 'sleeping function called from invalid context' in msgs[0]
    assert k.sched.counters['might_sleep_bugs'] == 1


def test_i_sem_is_held_across_a_write_and_its_holder_shown():
    k = boot()
    k.vfs.create_file('f', pattern(PAGE, 0))
    inode = k.vfs.lookup('f')

    def holder(task):
        yield from inode.i_sem.down_write(task)
        yield from k.sleep_for(task, 20_000_000)
        inode.i_sem.up_write(task)
    h = kthread(k, 'holder', holder)
    w = k.spawn('w', 'ft_rw', ['f', 100, 100, 100, 1], start=100_000)
    assert k.run(10_000_000) == 'time limit'
    assert w.state == 'D' and w.waiting_on[0] == 'rwsem'
    assert k.checks.waits_for(w)[1] == [h]
    assert k.run() == 'finished' and w.exit_code == 0


# ---- read(): the copy-out ------------------------------------------------------

def test_read_into_a_kernel_address_is_efault():
    k = boot()
    k.vfs.create_file('data', pattern(300, 0))
    t = k.spawn('e', 'ft_efault', ['data', 0])
    assert k.run() == 'finished' and t.exit_code == 0, t.exit_code
    assert k.vfs.counters()['fs_efaults'] == 1


def test_read_into_unmapped_user_memory_is_efault_or_short():
    k = boot()
    if not has_kmap(k):
        pytest.skip('kmap() is not in the kernel image yet')
    k.vfs.create_file('data', pattern(300, 0))
    t = k.spawn('e', 'ft_efault', ['data', 2])
    assert k.run() == 'finished' and t.exit_code == 0, t.exit_code
    assert k.filemap.counters['read_kmap_copies'] == 2     # the atomic copy failed twice
    assert k.mm.counters['exception_fixups'] >= 2
    assert t.killed_by is None


@pytest.mark.parametrize('read_path', ['atomic', 'kmap'])
def test_read_paths_copy_the_same_bytes(read_path):
    k = boot(read_path=read_path)
    if read_path == 'kmap' and not has_kmap(k):
        pytest.skip('kmap() is not in the kernel image yet')
    size = 4 * PAGE + 17
    k.vfs.create_file('data', pattern(size, 6))
    t = k.spawn('r', 'ft_rw', ['data', size, 0, 1500, 6])
    assert k.run() == 'finished' and t.exit_code == 0
    c = k.filemap.counters
    if read_path == 'atomic':
        assert c['read_atomic_copies'] > 0 and c['read_kmap_copies'] == 0
    else:
        assert c['read_kmap_copies'] > 0 and c['read_atomic_copies'] == 0
    assert bugs(k) == []


# ---- the fd layer ------------------------------------------------------------------

def test_open_close_lseek_errors():
    k = boot()
    k.vfs.create_file('f', pattern(100, 0))
    got = {}

    def body(task):
        v = k.vfs
        got['enoent'] = yield from v.sys_open(task, 'nope', O_RDONLY, 0)
        got['eexist'] = yield from v.sys_open(task, '/f', O_CREAT | O_EXCL | O_RDWR, 0)
        got['einval'] = yield from v.sys_open(task, 'f', 3, 0)
        fd = yield from v.sys_open(task, 'f', O_WRONLY, 0)
        got['fd'] = fd
        got['read_wronly'] = yield from v.sys_read(task, fd, 0x1000, 10)
        got['seek_end'] = yield from v.sys_lseek(task, fd, -10 & 0xFFFFFFFF, 2)
        got['seek_neg'] = yield from v.sys_lseek(task, fd, -200 & 0xFFFFFFFF, 1)
        got['close'] = yield from v.sys_close(task, fd)
        got['close2'] = yield from v.sys_close(task, fd)
        got['write_badfd'] = yield from v.sys_write(task, fd, 0x1000, 1)
        got['mmap_badfd'] = v.mmap_file(task, fd)
        got['creat'] = yield from v.sys_open(task, 'new', O_CREAT | O_RDWR, 0)
    kthread(k, 'sys', body)
    assert k.run() == 'finished'
    assert got == dict(enoent=-2, eexist=-17, einval=-22, fd=3, read_wronly=-9, seek_end=90,
                       seek_neg=-22, close=0, close2=-9, write_badfd=-9, mmap_badfd=None, creat=3)
    assert k.vfs.lookup('new').size == 0


def test_threads_share_the_fd_table_processes_do_not():
    k = boot()
    a = k.spawn('a', 'ft_rw', ['x', 1, 1, 1, 0])
    b = k.spawn('b', 'ft_rw', ['y', 1, 1, 1, 0], share_mm_with=a)
    c = k.spawn('c', 'ft_rw', ['z', 1, 1, 1, 0])
    assert b.files is a.files and a.files.users == 2
    assert c.files is not a.files


def test_create_file_rejects_bad_requests():
    k = boot()
    k.vfs.create_file('a', b'x')
    with pytest.raises(ValueError, match='already exists'):
        k.vfs.create_file('a', b'y')
    with pytest.raises(ValueError, match='max_size'):
        k.vfs.create_file('b', bytes(3 * PAGE), max_size=2 * PAGE)
    with pytest.raises(ValueError, match='a path of components'):
        k.vfs.create_file('d/../e', b'')
    with pytest.raises(ValueError, match='no room'):
        k.vfs.create_file('huge', b'', max_size=1 << 30)


# ---- reclaim's hooks ------------------------------------------------------------------

def test_reclaim_writes_a_dirty_page_then_drops_it():
    k = boot()
    k.vfs.create_file('f', pattern(2 * PAGE, 8))
    inode = k.vfs.lookup('f')
    got = {}

    def body(task):
        fm = k.filemap
        pfn = yield from fm.grab_cache_page(task, inode.mapping, 0)
        yield from fm.block_prepare_write(task, pfn, 0, 10)
        yield from fm.generic_commit_write(task, pfn, 0, 10)
        fm.unlock_page(task, pfn)
        try:
            fm.remove_from_page_cache(pfn)
        except KernelBug as e:
            got['dirty_bug'] = e.message
        assert fm.trylock_page(task, pfn)                               # reclaim locks it first
        got['written'] = yield from k.vfs.writepage_for_reclaim(task, pfn)
        got['unlocked'] = not fm.PageLocked(pfn)                        # writepage unlocked it
        assert fm.trylock_page(task, pfn)
        got['clean'] = yield from fm.writepage_for_reclaim(task, pfn)
        got['unlocked'] &= not fm.PageLocked(pfn)
        fm.page_cache_release(pfn)                                     # our reference
        got['count'] = k.page_alloc.page_count(pfn)
        k.vfs.remove_from_page_cache(pfn)
        got['freed'] = k.page_alloc.page_count(pfn)
    kthread(k, 'reclaim', body)
    assert k.run() == 'finished'
    assert 'dirty' in got['dirty_bug'] and got['unlocked']
    assert got['written'] == 'written' and got['clean'] == 'clean'
    assert got['count'] == 1 and got['freed'] == 0
    assert inode.mapping.pages == {}
    assert k.disk.peek(inode.block(0)) == pattern(2 * PAGE, 8)[:PAGE]
