"""The data oracle (minikernel/oracle.py): silent on clean runs, and it
catches what it is there to catch: a byte flipped in a page cache page, on
the disk, a write() that stored other bytes than the user buffer held, an
anonymous page that came back from swap different.
"""
from minikernel.fs import File, O_RDONLY
from minikernel.layout import USER_TEXT
from minikernel.memory import VMA, VM_READ, VM_SHARED
from minikernel.page_alloc import GFP_HIGHUSER
from minikernel.sched import WaitQueue

from test_filemap import PAGE, AtomicWritePath, boot, pattern


def corruption(k):
    return [r for r in k.reports if r['kind'] == 'corruption']


def run_writer(size=3 * PAGE + 500, seed=5, **kw):
    k = boot(**kw)
    t = k.spawn('rw', 'ft_rw', ['out', size, 1000, 1000, seed])
    assert k.run() == 'finished'
    return k, t


def test_a_clean_run_is_not_reported():
    size = 3 * PAGE + 500
    k, t = run_writer(size)
    k.vfs.create_file('boot', pattern(PAGE, 1))
    assert t.exit_code == 0
    k.finish()                                   # check, sync, check the disk
    assert corruption(k) == []
    c = k.oracle.counters
    assert c['oracle_bytes'] == size and c['oracle_writes'] == 13
    assert c['oracle_pages_checked'] >= 2 * 4 and c['oracle_mismatches'] == 0


def test_a_flipped_byte_in_the_page_cache_is_reported_with_its_offset():
    k, t = run_writer()
    inode = k.vfs.lookup('out')
    pfn = inode.mapping.pages[1]
    k.machine.ram[(pfn << 12) + 904] ^= 0xFF                   # file offset 4096 + 904
    assert k.oracle.check_all() == 1
    (rep,) = corruption(k)
    assert rep['file'] == 'out' and rep['offset'] == 5000
    want = pattern(5016, 5)[5000:5016]
    assert rep['expected'] == want.hex()
    assert rep['actual'] == (bytes([want[0] ^ 0xFF]) + want[1:]).hex()
    assert 'offset 0x1388' in rep['message'] and f'pfn {pfn:#x}' in rep['message']


def test_a_corrupted_block_of_an_uncached_page_is_reported():
    k = boot()
    k.vfs.create_file('cold', pattern(3 * PAGE, 2))
    inode = k.vfs.lookup('cold')
    assert k.oracle.check_all() == 0
    block = inode.block(2)
    data = bytearray(k.disk.store[block])
    data[7] ^= 1
    k.disk.store[block] = bytes(data)
    assert k.oracle.check_all() == 1
    (rep,) = corruption(k)
    assert rep['offset'] == 2 * PAGE + 7 and f'disk block {block}' in rep['message']


def test_after_writeback_the_disk_alone_is_checked():
    k, t = run_writer()
    k.finish()
    assert corruption(k) == []
    inode = k.vfs.lookup('out')
    block = inode.block(0)
    k.disk.store[block] = b'\x00' + k.disk.store[block][1:]
    assert k.oracle.check_files() == 0                          # the cache is still right
    assert k.oracle.check_files(disk_only=True) == 1
    assert corruption(k)[0]['offset'] == 0


def test_a_write_that_stores_other_bytes_is_caught():
    k, t = run_writer(size=2 * PAGE + 100, seed=9, write_path=lambda k: AtomicWritePath(k, skew=1))
    assert t.exit_code == 16                                    # its own compare failed too
    k.finish()
    reps = corruption(k)
    assert reps and reps[0]['offset'] == 0
    assert reps[0]['expected'] == pattern(16, 9).hex()
    assert reps[0]['actual'] == pattern(17, 9)[1:].hex()
    assert len(reps) <= 4                                       # a few, then a count


def test_an_untouched_source_buffer_snapshots_as_zeros():
    k, t = run_writer(size=2 * PAGE + 10, seed=-1)
    assert t.exit_code == 0
    k.finish()
    assert corruption(k) == [] and k.oracle.counters['oracle_bytes'] == 2 * PAGE + 10


def test_user_memory_is_read_through_the_page_tables():
    k = boot()
    k.vfs.create_file('f', pattern(2 * PAGE, 4))
    t = k.spawn('rw', 'ft_rw', ['x', 1, 1, 1, 0])               # not run: nothing present
    code = t.program.image.code
    assert k.oracle.read_user(t, USER_TEXT + 10, 32) == code[10:42]        # from the disk
    file = File(k, k.vfs.lookup('f'), O_RDONLY)
    t.mm.insert_vma(VMA(t.mm, 0x40000000, 0x40002000, VM_READ | VM_SHARED, file, 0, 'f'))
    assert k.oracle.read_user(t, 0x40000ff0, 32) == pattern(2 * PAGE, 4)[0xff0:0x1010]
    assert k.oracle.read_user(t, 0x50000000, 8) == bytes(8)                # no mapping


def test_a_write_in_flight_at_the_check_may_hold_old_or_new_bytes():
    class StuckAfterOnePage(AtomicWritePath):
        """Copies the first page, then sleeps forever inside write()."""
        def write_page(self, task, file, index, offset, segs, nbytes):
            if index == 0:
                return (yield from super().write_page(task, file, index, offset, segs, nbytes))
            never = WaitQueue('never')
            yield from self.k.sched.wait_event(task, never, lambda: False, what=('never',))
    k = boot(write_path=StuckAfterOnePage)
    k.vfs.create_file('out', pattern(3 * PAGE, 1))
    t = k.spawn('rw', 'ft_rw', ['out', 2 * PAGE, 2 * PAGE, PAGE, 2])
    assert k.run() == 'deadlock'
    k.finish()
    assert corruption(k) == []
    inode = k.vfs.lookup('out')
    pfn = inode.mapping.pages[0]
    k.machine.ram[(pfn << 12) + 5] ^= 0x80                      # neither old nor new
    assert k.oracle.check_all() == 1


def test_an_anonymous_page_must_come_back_from_swap_unchanged():
    k = boot()
    pfn = k.page_alloc.alloc_pages_fast(GFP_HIGHUSER, 0)
    k.machine.ram[pfn << 12:(pfn + 1) << 12] = pattern(PAGE, 3)
    k.oracle.anon_swapped_out(0x100, pfn)
    k.oracle.anon_swapped_in(0x100, pfn)
    assert corruption(k) == []
    k.machine.ram[(pfn << 12) + 100] ^= 1
    k.oracle.anon_swapped_in(0x100, pfn)
    (rep,) = corruption(k)
    assert 'swap entry 0x100' in rep['message'] and k.oracle.counters['oracle_anon_mismatches'] == 1


def test_the_file_offset_is_the_oracles_own_not_the_kernels():
    """A kernel that loses track of f_pos (simulated: the second write()
    starts 100 bytes early) is caught: the oracle keeps each file's offset
    and size in its own model (reads, writes, lseek, pread/pwrite), so the
    misplaced write is reported and the file check finds the bytes it
    overwrote.  An oracle that took the kernel's f_pos would agree with it."""
    k = boot()
    real = k.filemap.generic_file_write
    calls = []

    def losing_f_pos(task, file, iov, count):
        calls.append(file.pos)
        if len(calls) == 2:
            file.pos -= 100                                     # the kernel bug
        return (yield from real(task, file, iov, count))
    k.filemap.generic_file_write = losing_f_pos
    t = k.spawn('rw', 'ft_rw', ['out', 3 * PAGE, 1000, 1000, 5])
    assert k.run() == 'finished'
    k.finish()
    reps = corruption(k)
    assert any('starts at offset 0x384, the file\'s model says 0x3e8' in r['message'] for r in reps), reps
    assert any(r.get('offset') == 900 and 'expected' in r for r in reps), reps
    assert k.oracle.counters['oracle_misplaced_writes'] == len(calls) - 1   # every write after it


def test_the_model_offset_follows_lseek_and_reads_on_a_clean_run():
    """ft_rw writes, lseek(fd, 0)s and reads back: the model's offset
    follows (lseek against its own size, reads by what they returned) and
    nothing is reported on a correct kernel."""
    k, t = run_writer(size=2 * PAGE + 300, seed=3)
    k.finish()
    assert corruption(k) == [] and k.oracle.counters['oracle_misplaced_writes'] == 0
