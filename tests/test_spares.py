"""Spare hardware (vm/spares.py): exploration runs built on the Unicorn
instances, RAM and translated kernel code of the worker's earlier runs give
exactly what runs on fresh machines give: counters (digest), outcome,
findings, reports, the point trace and the guest RAM left (sha256)."""
import os

import pytest

from kmaplab import explore as ex
from minikernel.kernel import Kernel
from vm.spares import Spares

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MUNMAP = os.path.join(ROOT, 'scenarios', 'explore', 'munmap-race.toml')
SLEEP = dict(write_path='dont_unmap', atomic_fault='sleep')
FIXUP = dict(write_path='dont_unmap', atomic_fault='fixup')
OPTS = dict(ex.DEFAULTS, depth=2)


def _jobs():
    """Schedules of two variants, interleaved; PCT draws 3 and 5 of the
    sleep variant hit the race (bug), draw 5 of the fixup one fails."""
    out = []
    for i in range(6):
        for variant in (SLEEP, FIXUP) if i in (3, 5) else (SLEEP,):
            tgt = dict(scenario=MUNMAP, variant=variant, seed=0, overrides={})
            out.append(dict(ex.job(i, tgt, ex.pct_spec(i, 2, OPTS, 270)), memory=True))
    return out


def _strip(rec):
    return {k: v for k, v in rec.items() if k not in ('wall_s', 'cpu_s')}


def test_runs_on_spare_hardware_equal_runs_on_fresh_machines():
    jobs = _jobs()
    spares = Spares()
    reused = [ex.run_job(j, spares=spares) for j in jobs]
    fresh = [ex.run_job(j, spares=None) for j in jobs]
    assert spares.created == 2 and spares.taken == len(jobs) - 2     # one set per variant
    outcomes = [r['outcome'] for r in fresh]
    assert 'bug' in outcomes and 'failed' in outcomes and 'completed' in outcomes
    for a, b in zip(reused, fresh):
        assert _strip(a) == _strip(b), f'run {a["index"]} {a["spec"]}'
        assert a['memory_sha256'] == b['memory_sha256']


def _kernel(spares, key, **opts):
    return Kernel(dict(dict(cpus=2, mem=16 << 20, highmem=8 << 20), **opts), spares=spares,
                  spares_key=key)


def test_a_boot_with_other_hooks_under_the_same_key_is_refused():
    """The key must name the boot: debug_highmem drops the Python kmap_atomic
    hooks (minikernel/checks.py), so a second boot under the same key
    registers other hooks, and its first run stops with the reason."""
    spares = Spares()
    k = _kernel(spares, 'k')
    k.run(max_cycles=1000)
    k.machine.release()
    k2 = _kernel(spares, 'k', debug_highmem=True)
    assert spares.taken == 1
    with pytest.raises(RuntimeError, match='other hooks'):
        k2.run(max_cycles=1000)
    k2.machine.release()              # refused hardware is not given back
    assert spares.take(k2.machine._spares_key) is None


@pytest.mark.parametrize('mincore', [True, False], ids=['mincore', 'madvise'])
def test_release_zeroes_the_ram_and_resets_the_cpus(mincore, monkeypatch):
    """Every byte of RAM reads zero again: resident pages cleared in place
    (mincore), the others dropped; or, without mincore, all dropped."""
    from vm import spares as spares_mod
    if not mincore:
        monkeypatch.setattr(spares_mod, '_mincore', None)
    spares = Spares()
    k = _kernel(spares, 'k')
    k.run(max_cycles=200_000)
    m = k.machine
    assert any(c.instructions for c in m.cpus)
    ram, cpus = m.ram, list(m.cpus)
    assert ram[:m.ram_size].count(0) < m.ram_size
    m.release()
    assert ram[:m.ram_size].count(0) == m.ram_size
    k2 = _kernel(spares, 'k')
    assert k2.machine.ram is ram and k2.machine.cpus == cpus
    assert all(c.instructions == 0 and not any(c.counters.values()) for c in cpus)


def _cpu_state(cpu):
    """The CPU's state as a uc_context holds it (without the context's own
    header: its size, mode, memory snapshot fields)."""
    import ctypes
    ctx = cpu.uc.context_save()
    data = ctypes.c_size_t.from_address(ctypes.cast(ctx.context, ctypes.c_void_p).value).value
    return ctypes.string_at(ctx.context, ctx.size)[ctx.size - data:]


def test_a_boot_on_spare_hardware_leaves_the_cpus_and_ram_as_a_fresh_boot():
    """CPU.boot on a reset CPU booted alike before restores the state that
    boot saved instead of writing the registers again: the same CPU state,
    and the same RAM (the GDT descriptors' Accessed bits, which the segment
    loads set, included)."""
    spares = Spares()
    _kernel(spares, 'k').machine.release()
    spare = _kernel(spares, 'k')
    fresh = _kernel(None, None)
    assert spares.taken == 1
    assert all(c._booted is not None for c in spare.machine.cpus)
    for a, b in zip(spare.machine.cpus, fresh.machine.cpus):
        assert _cpu_state(a) == _cpu_state(b)
    assert spare.machine.ram[:16 << 20] == fresh.machine.ram[:16 << 20]


def _suspended_kernel_generators():
    import gc
    return sum(1 for o in gc.get_objects() if type(o).__name__ == 'generator'
               and o.gi_frame is not None and f'{os.sep}minikernel{os.sep}' in o.gi_code.co_filename)


def test_no_kernel_generator_of_a_released_run_is_left_to_the_garbage_collector():
    """A deadlocked run leaves tasks inside mmap_sem sections; run_job closes
    their generators before the release (runner.discard), so no finally
    block of theirs runs later, at garbage collection, against hardware that
    is then another run's."""
    import gc
    variant = dict(SLEEP, mmap_sem_in_write='read')
    tgt = dict(scenario=MUNMAP, variant=variant, seed=0, overrides={})
    gc.collect()
    gc.disable()                       # the run's object cycles stay uncollected: visible below
    try:
        before = _suspended_kernel_generators()
        rec = ex.run_job(ex.job(3, tgt, ex.pct_spec(3, 2, OPTS, 270)), spares=Spares())
        assert rec['outcome'] == 'deadlock'
        assert _suspended_kernel_generators() == before
    finally:
        gc.enable()
