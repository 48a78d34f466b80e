"""The mini-kernel core, checked through what the emulated machine did:
locking semantics, signals, system-call argument checks, preemption,
swap, reclaim, pte_chains, and the allocator's two answers to OOM."""
import pytest

from kmaplab import scenario
from kmaplab.runner import run_variant, boot as boot_scenario
from minikernel.binfmt import assemble_program
from minikernel.kernel import ASM_DIR, ROOT, Kernel
from minikernel.task import Guest

MiB = 1 << 20
_progs = {}


def prog(*names):
    for n in names:
        if n not in _progs:
            _progs[n] = assemble_program(n, ROOT, ASM_DIR)
    return {n: _progs[n] for n in names}


def reports(k, kind):
    return [r['message'] for r in k.reports if r['kind'] == kind]


# ---- locking ---------------------------------------------------------------

def test_rwsem_a_queued_writer_blocks_new_readers():
    """rwsem-spinlock semantics: reader A holds; writer B queues; reader C
    arriving after B waits for B, not just for A."""
    k = Kernel(dict(cpus=1, mem=32 * MiB))
    sem = k.mm.mm_alloc().mmap_sem
    order = []

    def a(task):
        yield from sem.down_read(task)
        order.append('A in')
        yield from k.sleep_for(task, 200_000)
        order.append('A out')
        sem.up_read(task)

    def b(task):
        yield from sem.down_write(task)
        order.append('B in')
        yield from k.sleep_for(task, 100_000)
        order.append('B out')
        sem.up_write(task)

    def c(task):
        yield from sem.down_read(task)
        order.append('C in')
        sem.up_read(task)

    k.kernel_thread('a', 0, a)
    k.kernel_thread('b', 0, b, start=50_000)
    k.kernel_thread('c', 0, c, start=100_000)
    assert k.run(max_cycles=10_000_000) == 'finished'
    assert order == ['A in', 'A out', 'B in', 'B out', 'C in']


def test_recursive_read_with_a_writer_queued_deadlocks_with_its_graph():
    k = Kernel(dict(cpus=1, mem=32 * MiB))
    sem = k.mm.mm_alloc().mmap_sem

    def reader(task):
        yield from sem.down_read(task)
        yield from k.sleep_for(task, 100_000)
        yield from sem.down_read(task)          # not recursive: the writer is queued

    def writer(task):
        yield from sem.down_write(task)

    k.kernel_thread('reader', 0, reader)
    k.kernel_thread('writer', 0, writer, start=50_000)
    assert k.run(max_cycles=10_000_000) == 'deadlock'
    rep = [r for r in k.reports if r['kind'] == 'deadlock'][0]
    assert 'cycle: reader/' in rep['message']
    assert any(g.startswith('writer/') and 'held by reader/' in g for g in rep['graph'])


# ---- signals, argument checks, preemption ------------------------------------

@pytest.mark.parametrize('mode, what', [(0, 'accessing 0xc0000000 (protection, read)'),
                                        (1, 'accessing 0x60000000 (not present, write)')])
def test_user_access_to_kernel_or_unmapped_memory_is_sigsegv(mode, what):
    k = Kernel(dict(cpus=1, mem=32 * MiB), programs=prog('segv', 'hello'))
    bad = k.spawn('bad', 'segv', [mode])
    good = k.spawn('good', 'hello', [])
    assert k.run() == 'finished'                # the machine goes on
    assert bad.killed_by[0] == 'SIGSEGV' and bad.exit_code == -1
    msg = reports(k, 'kill')[0]
    label = 'kernel_read' if mode == 0 else 'unmapped_write'
    assert f'SIGSEGV at {label} (asm/user/segv.S:' in msg and what in msg
    assert good.exit_code == 0 and bytes(good.console) == b'hello from cpu 0\n'


def test_a_bad_user_pointer_is_efault_not_a_crash():
    k = Kernel(dict(cpus=1, mem=32 * MiB), programs=prog('segv'))
    t = k.spawn('t', 'segv', [2])
    assert k.run() == 'finished'
    assert t.exit_code == 14 and t.killed_by is None
    assert not reports(k, 'oops') and not reports(k, 'bug')


def test_the_timer_preempts_user_mode():
    k = Kernel(dict(cpus=1, mem=32 * MiB, tick=50_000), programs=prog('spin'))
    a = k.spawn('a', 'spin', [400_000])
    b = k.spawn('b', 'spin', [400_000])
    assert k.run() == 'finished'
    assert a.exit_code == b.exit_code == 0
    assert a.counters['switches'] >= 3 and b.counters['switches'] >= 3   # they took turns
    assert k.irq.counters['timer_irqs'] > 10


def test_preempt_full_preempts_kernel_guest_code_and_none_does_not():
    for preempt, expect in (('full', True), ('none', False)):
        k = Kernel(dict(cpus=1, mem=32 * MiB, tick=20_000, preempt=preempt))
        seen = {}

        def long(task):
            yield Guest('__delay', 300_000)          # kernel guest code, interrupts on
            seen['long_done'] = k.machine.time(0)

        def short(task):
            seen['short_ran'] = k.machine.time(0)
            return 0
            yield

        k.kernel_thread('long', 0, long)
        k.kernel_thread('short', 0, short, start=10_000)
        assert k.run(max_cycles=50_000_000) == 'finished'
        assert (seen['short_ran'] < seen['long_done']) is expect, preempt


def test_boot_zones_for_highmem_and_a_3_gib_machine():
    k = Kernel(dict(cpus=1, mem=128 * MiB, highmem=96 * MiB))
    zones = {z.name: z.present_pages for z in k.page_alloc.zones}
    assert zones == {'DMA': 4096, 'Normal': 4096, 'HighMem': 24576}
    assert '96MB HIGHMEM available.' in k.boot_log
    big = Kernel(dict(cpus=2, mem=3 << 30))
    zones = {z.name: z.present_pages for z in big.page_alloc.zones}
    assert zones == {'DMA': 4096, 'Normal': 225280, 'HighMem': 557056}


# ---- swap and reclaim ----------------------------------------------------------

@pytest.mark.parametrize('reclaim', ['rmap', 'swap_out'])
def test_swap_out_and_in_preserve_data(reclaim):
    """Two hogs that check their own memory, more than the machine holds."""
    k = Kernel(dict(cpus=2, mem=20 * MiB, reclaim=reclaim, disk_latency=20_000),
               programs=prog('hog'))
    hogs = [k.spawn(f'hog{i}', 'hog', [2500, 2, 0x100 + i], cpu=i) for i in range(2)]
    assert k.run() == 'finished'
    k.finish()
    assert [h.exit_code for h in hogs] == [0, 0]
    assert k.swap.counters['swap_outs'] > 500 and k.swap.counters['swap_ins'] > 500
    assert not reports(k, 'corruption') and not reports(k, 'bug')


def _writer_under_pressure(write_path, reclaim):
    """A writer (256 pages from a 4-page buffer) beside a hog bigger than
    the machine: reclaim runs while the write path copies."""
    k = Kernel(dict(cpus=2, mem=20 * MiB, reclaim=reclaim, write_path=write_path,
                    atomic_fault='fixup', disk_latency=20_000), programs=prog('writer', 'hog'))
    w = k.spawn('w', 'writer', ['out', 256, 16384, 0x42, 2], cpu=0, start=3_000_000)
    h = k.spawn('h', 'hog', [4700, 1, 0x17], cpu=1)
    end = k.run()
    k.finish()
    return k, end, w, h


FAST = [('atomic_fallback', 'rmap'), ('kmap', 'swap_out')]
ALL = [(w, r) for w in ('kmap', 'dont_unmap', 'gup_pin', 'atomic_fallback', 'perform_write',
                        'kmap_local') for r in ('rmap', 'swap_out')]


@pytest.mark.parametrize('write_path, reclaim',
                         [pytest.param(*c, marks=() if c in FAST else pytest.mark.slow) for c in ALL])
def test_every_write_path_is_correct_under_memory_pressure(write_path, reclaim):
    k, end, w, h = _writer_under_pressure(write_path, reclaim)
    assert end == 'finished' and w.exit_code == 0 and h.exit_code == 0
    assert k.vmscan.counters['pages_reclaimed'] > 0
    assert k.oracle.counters['oracle_bytes'] == 2 * 256 * 4096
    assert not reports(k, 'corruption') and not reports(k, 'bug')


@pytest.mark.parametrize('reclaim', ['rmap', 'swap_out'])
def test_pte_chains_come_out_of_zone_normal(reclaim):
    """Two mappers of one shared 2 MiB file: with rmap every PTE costs an
    8-byte pte_chain from kmalloc, i.e. from ZONE_NORMAL pages; with 2.4's
    swap_out there are none."""
    k = Kernel(dict(cpus=1, mem=64 * MiB, highmem=44 * MiB, reclaim=reclaim),
               programs=prog('mapper'))
    k.vfs.create_file('shm', bytes(range(256)) * 8192, max_size=2 * MiB)
    maps = [k.spawn(f'm{i}', 'mapper', ['shm', 512, 20], start=i * 30_000_000) for i in range(2)]
    before = k.page_alloc.counters()
    assert k.run() == 'finished'
    after = k.page_alloc.counters()
    assert [m.exit_code for m in maps] == [0, 0]
    peak = k.rmap.counters['pte_chain_bytes_peak']
    slab_normal = after['pgalloc_normal'] - before['pgalloc_normal']
    if reclaim == 'rmap':
        assert peak >= 2 * 512 * 8
        assert slab_normal >= 2 * 512 * 8 // 4096        # the chains' pages, at least
        assert k.rmap.counters['pte_chain_bytes'] == 0     # all freed at exit
    else:
        assert peak == 0


def _storm(policy, write_path='dont_unmap'):
    k = Kernel(dict(cpus=1, mem=20 * MiB, swap=64 * MiB, disk_latency=20_000,
                    write_path=write_path, oom_policy=policy, atomic_fault='fixup'),
               programs=prog('stormer'))
    tasks = [k.spawn(f's{i}', 'stormer', [f'out{i}', 2400, 300, 3]) for i in range(2)]
    end = k.run()
    k.finish()
    return k, end, tasks


@pytest.mark.slow
def test_pinned_swapin_storm_kill_reports_free_swap():
    k, end, tasks = _storm('kill')
    oom = reports(k, 'oom')
    assert oom and 'free swap' in oom[0]
    assert k.vmscan.counters['free_swap_kb_at_oom'] > 10_000


@pytest.mark.slow
def test_pinned_swapin_storm_loop_reports_no_progress():
    k, end, tasks = _storm('loop')
    assert end == 'no progress'
    assert reports(k, 'no_progress')
