"""Schedule exploration (kmaplab/explore.py, vm/policy.py Priorities):
scheduling points, the priority policy, PCT / random / bounded search,
shrinking, schedule files and their replay, and the finds of issue 9 on the
workloads of scenarios/explore/ (no fault plan, no scripted timing).

Each find is a test with its budget (the runs it may take).  The fast ones
use the strategy that finds it in a few runs; the rest, and "nothing to
find within the same budget", are marked slow (make test-slow).  The
hit rates against the PCT bound are in docs/explore.md.
"""
import glob
import json
import os

import pytest

from kmaplab import explore as ex
from kmaplab import runner
from kmaplab import scenario as scn_mod
from kmaplab.cli import main
from vm.machine import Machine
from vm.policy import Priorities

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MUNMAP = 'explore/munmap-race.toml'
SLOT = 'explore/sleep-in-atomic.toml'
TRUNC = 'explore/same-page-truncate.toml'
RECLAIM = 'explore/same-page-reclaim.toml'
SCHEDULES = sorted(glob.glob(os.path.join(ROOT, 'scenarios', 'schedules', '*.json')))
DONT_UNMAP_SLEEP = {'write_path': 'dont_unmap', 'atomic_fault': 'sleep'}
DONT_UNMAP_FIXUP = {'write_path': 'dont_unmap', 'atomic_fault': 'fixup'}
PERFORM_WRITE = {'write_path': 'perform_write', 'atomic_fault': 'fixup'}
ATOMIC_FALLBACK = {'write_path': 'atomic_fallback', 'atomic_fault': 'fixup'}


def scenario(name):
    return scn_mod.load(os.path.join(ROOT, 'scenarios', name))


def options(strategy, runs, **kw):
    o = dict(strategy=strategy, runs=runs, jobs=1, all=False, target=None, shrink=True, seed=0,
             window=ex.DEFAULTS['window'], quantum=ex.DEFAULTS['quantum'],
             depth=ex.DEFAULTS['depth'], preemptions=ex.DEFAULTS['preemptions'])
    o.update(kw)
    return o


def explore(name, variant, strategy, runs, **kw):
    return ex.explore(scenario(name), variant, None, {}, options(strategy, runs, **kw))


# ---- the policy on a bare machine -------------------------------------------------------------

class PointDriver:
    """A Machine.run driver that runs no guest code: each step charges its
    budget in slices of 100 cycles and announces a point 'tick' after
    each (so a policy can end the step there)."""

    def __init__(self, m, until):
        self.m, self.until, self.steps = m, until, []

    def step(self, cpu, budget):
        done = 0
        while done < budget and not self.m.yield_cpu:
            n = min(100, budget - done)
            self.m.charge(cpu.index, n)
            done += n
            self.m.sched_point('tick')
        self.steps.append((cpu.index, done))

    def finished(self):
        return self.until()

    def stalled(self):
        return 'stalled'


def run_points(policy, cycles=20_000, cpus=2):
    m = Machine(cpus=cpus, ram=1 << 20, policy=policy)
    d = PointDriver(m, lambda: m.now() >= cycles)
    m.run(d)
    return m, d


def test_the_top_cpu_runs_until_it_is_a_window_ahead_then_the_other_in_quanta():
    m, d = run_points(Priorities([1, 0], window=5000, quantum=1000))
    assert d.steps[0] == (1, 5000)                   # CPU1 first, a whole window ahead
    assert set(d.steps[1::2]) == {(0, 1000)}         # then CPU0 one quantum at a time,
    assert set(d.steps[2::2]) == {(1, 1000)}         # and CPU1 again as soon as it may
    assert 4000 <= m.time(1) - m.time(0) <= 5000     # the lead: never more than the window


def test_a_change_anchored_to_a_point_reorders_and_ends_the_run_there():
    policy = Priorities([0, 1], changes={(0, 'tick', 3): ((1, 0), False)}, window=5000,
                        quantum=1000)
    m, d = run_points(policy)
    assert d.steps[0] == (0, 300)                    # ended at CPU0's third point
    assert d.steps[1] == (1, 5000)                   # CPU1 runs a window past the slowest (itself)
    assert policy.applied == [(2, 0, 'tick', 3, (1, 0), False)]


def test_a_preemption_anchored_to_a_point_fires_that_cpus_timer_there():
    ticks = []
    policy = Priorities([0, 1], changes={(0, 'tick', 3): (None, True)}, window=5000,
                        quantum=1000, on_tick=lambda m, cpu: ticks.append((cpu, m.time(cpu))))
    m, d = run_points(policy)
    assert ticks == [(0, 300)]                       # at CPU0's third point, once
    assert d.steps[0] == (0, 5000)                   # the order did not change: CPU0 goes on
    assert policy.applied == [(2, 0, 'tick', 3, (0, 1), True)]


def test_a_timer_fired_early_keeps_its_period_from_there():
    m = Machine(cpus=1, ram=1 << 20)
    timer, = m.add_timers(1000, 0xEF)
    m.charge(0, 300)
    m.tick_now(0)
    assert m.pending[0] == {0xEF} and timer.next_at == 1300
    m.next_irq(0)
    m.charge(0, 800)
    m._fire_due(m.now())                              # t=1100: the old 1000 tick is gone
    assert not m.pending[0] and timer.ticks == 1
    m.charge(0, 200)
    m._fire_due(m.now())                              # t=1300: the re-phased one
    assert m.pending[0] == {0xEF} and timer.ticks == 2


def test_replay_stops_at_the_first_point_that_differs_from_the_recording():
    rec = Priorities([0, 1], window=5000)
    run_points(rec, cycles=3000)
    bad = list(rec.points)
    bad[7] = rec.code(1, 'tick')                     # the file says CPU1 where CPU0 ran
    policy = Priorities([0, 1], window=5000, expect=bad, labels=rec.labels)
    m, _ = run_points(policy, cycles=3000)
    assert m.stopped.startswith('schedule diverged at step 7: the file has tick on CPU1, '
                                'the run has tick on CPU0')


def test_pct_demotes_the_running_cpu_below_every_initial_priority():
    decide = ex.pct_decider(dict(order=[2, 0, 1], depth=3, steps=[5, 9]))
    policy = Priorities([2, 0, 1])
    assert decide(policy, 2, 'x', 4) is None
    assert decide(policy, 2, 'x', 5) == ([0, 1, 2], True)    # CPU2 drops to priority d-1 = 2,
    assert decide(policy, 0, 'x', 9) == ([1, 2, 0], True)    # its task preempted; CPU0 to 1


def test_bounded_children_add_one_change_after_the_last_one():
    policy = Priorities([0, 1], window=5000)
    run_points(policy, cycles=1500)
    k = len(policy.points)
    rec = dict(spec=dict(strategy='bounded', order=[0, 1], changes=[], window=5000, quantum=1000),
               trace=ex.encode_trace(policy))
    kids = ex.children(rec)
    assert len(kids) == 2 * k                         # per point: the other CPU on top, a preemption
    assert [c['changes'][0]['step'] for c in kids] == [s for s in range(k) for _ in (0, 1)]
    assert [c['changes'][0]['preempt'] for c in kids[:2]] == [False, True]
    grand = ex.children(dict(rec, spec=kids[6]))
    assert min(c['changes'][1]['step'] for c in grand) == 4


def test_shrinking_tries_each_half_of_a_change_that_reorders_and_preempts():
    a = dict(step=5, cpu=0, label='kmap', n=1, order=[1, 0], preempt=True)
    b = dict(step=9, cpu=1, label='kunmap', n=1, order=[0, 1], preempt=True)
    assert ex._halves([a, b], 0, [0, 1]) == [[dict(a, order=[0, 1]), b],
                                             [dict(a, preempt=False), b]]
    assert ex._halves([a, b], 1, [0, 1]) == [[a, dict(b, order=[1, 0])],
                                             [a, dict(b, preempt=False)]]
    assert ex._halves([dict(a, preempt=False)], 0, [0, 1]) == []      # one part only
    assert ex._halves([dict(a, order=[0, 1])], 0, [0, 1]) == []


def test_shrinking_splits_keep_every_item_once():
    items = list(range(7))
    for n in (2, 3, 7):
        parts = ex._split(items, n)
        assert [x for p in parts for x in p] == items and len(parts) == n


# ---- scheduling points in a real run ----------------------------------------------------------

def test_a_run_announces_syscalls_faults_locks_kmaps_ipis_and_io_as_points():
    scn = scenario(MUNMAP)
    spec = ex.base_spec('bounded', 2, ex.DEFAULTS)
    r, policy = ex.run_schedule(scn, DONT_UNMAP_SLEEP, 0, {}, spec)
    kinds = {policy.labels[c // 32].split(':')[0] for c in policy.points}
    assert {'syscall', 'syscall_exit', 'page_fault', 'rwsem', 'lock_page', 'kmap_atomic',
            'kunmap_atomic', 'pte_zap', 'ipi_sent', 'ipi_received', 'wakeup', 'context_switch',
            'disk_read', 'disk_done', 'ret'} <= kinds
    rets = {policy.labels[c // 32] for c in policy.points if policy.labels[c // 32].startswith('ret:')}
    assert {'ret:__get_user_1', 'ret:filemap_copy_from_user_atomic'} <= rets and rets <= {'ret:' + r for r in ex.RETURN_POINTS}
    assert 100 < len(policy.points) < 1000            # k stays small: hundreds, not millions
    assert r['outcome'] == 'completed'


def test_round_robin_does_not_hit_the_races_the_explorer_finds():
    """The finds below need the explorer: the plain schedule misses them."""
    scn = scenario(MUNMAP)
    for v in (DONT_UNMAP_SLEEP, DONT_UNMAP_FIXUP):
        assert runner.run_variant(scn, v)['outcome'] == 'completed'
    r = runner.run_variant(scenario(SLOT), {'atomic_fault': 'sleep'})
    assert r['outcome'] == 'bug' and r['counters']['kmap_slot_reuses'] == 0
    assert runner.run_variant(scenario(RECLAIM), {'write_path': 'atomic_fallback'})['outcome'] \
        == 'completed'


# ---- the finds (fast: the strategy that needs few runs) ---------------------------------------

def test_pct_finds_the_munmap_race_on_dont_unmap_within_100_runs():
    s = explore(MUNMAP, DONT_UNMAP_SLEEP, 'pct', 100)
    f = s['found']
    assert f is not None and f['outcome'] == 'bug' and f['index'] < 100
    assert any('sleeping function called from invalid context' in m for m in f['reports'])
    assert s['cpus'] == 2 and s['runs'] == f['index'] + 1
    assert s['pct_bound'] == pytest.approx(1 / (2 * s['steps_mean']), rel=1e-3)
    assert s['hit_rate'] > s['pct_bound']


def test_random_then_shrinking_leaves_one_change_and_the_race_in_the_copy():
    """Dozens of random changes shrink to one, and the run it leaves is
    Andrea's race: the writer's copy faults inside kmap_atomic and the 2002
    handler sleeps on mmap_sem there."""
    s = explore(MUNMAP, DONT_UNMAP_SLEEP, 'random', 20)
    assert s['found'] is not None and len(s['found']['applied']) > 10
    sh = s['shrunk']
    assert sh['after'] == 1 and sh['rec']['outcome'] == 'bug'
    assert any('sleeping function called from invalid context at down_read(mmap_sem' in m
               and 'writer/' in m and 'cfu_movsl' in m for m in sh['rec']['reports'])


def test_pct_finds_the_slot_reuse_under_the_2002_fault_handler_within_20_runs():
    s = explore(SLOT, {'atomic_fault': 'sleep'}, 'pct', 20)
    f = s['found']
    assert f is not None and f['outcome'] == 'corruption'
    assert any('kmap_atomic slot reused while held' in m for m in f['reports'])


def test_a_find_is_the_same_whatever_the_job_count():
    one = explore(SLOT, {'atomic_fault': 'sleep'}, 'random', 10, shrink=False)
    two = explore(SLOT, {'atomic_fault': 'sleep'}, 'random', 10, shrink=False, jobs=2)
    assert one['found']['index'] == two['found']['index']
    assert one['found']['digest'] == two['found']['digest'] and one['runs'] == two['runs']


# ---- schedule files ---------------------------------------------------------------------------

def test_the_finds_are_shipped():
    names = {os.path.basename(p) for p in SCHEDULES}
    assert {'munmap-race-dont_unmap-sleep.json', 'munmap-race-dont_unmap-fixup.json',
            'sleep-in-atomic-slot-reuse.json', 'same-page-reclaim-atomic_fallback.json'} <= names


@pytest.mark.parametrize('path', SCHEDULES, ids=os.path.basename)
def test_a_shipped_schedule_replays_bit_identically(path):
    data = ex.load_schedule(path)
    r = ex.replay(data)
    assert r['diverged'] is None
    assert r['outcome'] == data['outcome'] != data['expected']
    assert r['points'] == data['trace']['steps']
    assert r['counters'] == data['counters']


def test_a_schedule_that_no_longer_fits_stops_at_the_first_difference(tmp_path):
    data = ex.load_schedule(os.path.join(ROOT, 'scenarios', 'schedules',
                                         'munmap-race-dont_unmap-sleep.json'))
    data['changes'][0]['n'] -= 1                     # the change one kmap_atomic too early
    r = ex.replay(data)
    assert r['diverged'].startswith('schedule diverged at step ')
    assert 'the file has' in r['diverged'] and 'the run has' in r['diverged']


def test_kmaplab_run_schedule_replays_and_says_so(capsys):
    path = os.path.join(ROOT, 'scenarios', 'schedules', 'sleep-in-atomic-slot-reuse.json')
    rc = main(['run', os.path.join(ROOT, 'scenarios', SLOT), '--schedule', path])
    out = capsys.readouterr().out
    assert rc == 0                                   # it reproduced the recorded outcome
    assert 'outcome: corruption (expected bug)' in out
    assert 'reproduced: ' in out and 'outcome corruption, same counters' in out


def test_bad_schedule_input_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / 'bad.json'
    bad.write_text('{"format": "something else"}')
    scen = os.path.join(ROOT, 'scenarios', MUNMAP)
    assert main(['run', scen, '--schedule', str(bad)]) == 2
    assert 'not a schedule file' in capsys.readouterr().err
    good = os.path.join(ROOT, 'scenarios', 'schedules', 'sleep-in-atomic-slot-reuse.json')
    assert main(['run', scen, '--schedule', good]) == 2          # recorded on another scenario
    assert 'recorded on scenarios/explore/sleep-in-atomic.toml' in capsys.readouterr().err
    data = json.loads(open(good).read())
    data['changes'][0]['n'] += 1000          # a preemption that never comes: the run leaves the file
    tampered = tmp_path / 'tampered.json'
    tampered.write_text(json.dumps(data))
    assert main(['run', os.path.join(ROOT, 'scenarios', SLOT), '--schedule', str(tampered)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('kmaplab: ') and 'schedule diverged at step' in err and '\n' == err[-1]


def test_bad_explore_input_is_one_line_and_exit_2(capsys):
    assert main(['explore', MUNMAP, '--target', 'explosion']) == 2
    assert "'explosion': not an outcome" in capsys.readouterr().err
    assert main(['explore', MUNMAP, '--variant', 'write_path=kmap']) == 2
    assert 'no variant matches' in capsys.readouterr().err
    assert main(['explore', MUNMAP, '--strategy', 'dfs']) == 2


def test_kmaplab_explore_saves_the_find_and_prints_the_report(tmp_path, capsys):
    out = tmp_path / 's.json'
    rc = main(['explore', SLOT, '--variant', 'atomic_fault=sleep', '--strategy', 'pct',
               '--runs', '20', '--jobs', '1', '--out', str(out)])
    text = capsys.readouterr().out
    assert rc == 1
    for needle in ('n = 2 CPUs', 'schedules/s', 'steps k per run', 'hit rate', 'PCT bound',
                   'found: run', 'replay: kmaplab run'):
        assert needle in text
    assert ex.replay(ex.load_schedule(str(out)))['diverged'] is None


# ---- what exploring found in the lab itself: the idle loop's lost wake-up ------------------------

SAFE_HALT = """
safe_halt:
        sti
        hlt
        ret
jmp_halt:
        jmp 1f
1:      hlt
        ret
"""


def test_an_interrupt_between_sti_and_hlt_wakes_the_hlt_as_the_sti_shadow_does():
    """An explore run (same-page-truncate, perform_write, random) deadlocked:
    CPU1's idle task checked its run queue, its step ended between the sti
    and the hlt of cpu_idle_halt, CPU0 woke a task onto CPU1 (reschedule
    IPI), and CPU1 took the IPI before its hlt, then halted for good.  x86
    holds interrupts for one instruction after sti: the hlt retires first
    and the interrupt wakes it.  (The idle loop also enters cpu_idle_halt
    with interrupts off now, as 2.5's default_idle does.)"""
    from vm.selftest import Rig
    rig = Rig(source=SAFE_HALT)
    cpu = rig.cpus[0]
    rig.enter(0, 'safe_halt')                        # IF=0, as default_idle
    assert cpu.run(1).kind == 'quantum'              # the step ends after the sti
    assert cpu.regs['eip'] == rig.sym('safe_halt') + 1
    rig.m.raise_irq(0, 0x30)                         # a wake-up meanwhile
    t = cpu.run(100)
    assert (t.kind, t.eip) == ('irq', rig.sym('safe_halt') + 2)     # past the hlt
    assert cpu.instructions == 2                     # sti and hlt retired
    assert rig.m.next_irq(0) == 0x30
    rig.enter(0, 'jmp_halt', eflags=0x202)           # no sti before the hlt: no shadow
    assert cpu.run(1).kind == 'quantum'
    rig.m.raise_irq(0, 0x30)
    t = cpu.run(100)
    assert (t.kind, t.eip) == ('irq', rig.sym('jmp_halt') + 2)      # taken before the hlt


# ---- ftruncate and vmtruncate (what the truncate workload needs) ------------------------------

def test_ftruncate_unmaps_the_pages_past_the_end_and_the_file_reads_back_as_cut(boot_kernel):
    """mapper holds a MAP_SHARED|MAP_POPULATE mapping of 3 pages; a kernel
    thread cuts the file to 4196 bytes: the PTEs of pages 1 and 2 go, the
    pages leave the cache, the tail of page 1 from byte 100 is zeros; the
    data oracle agrees at the end."""
    k = boot_kernel(cpus=2)
    data = bytes((i * 13 + 5) & 0xFF for i in range(3 * 4096))
    inode = k.vfs.create_file('f', data)
    m = k.spawn('m', 'mapper', ['f', 3, 2], cpu=1)
    seen = {}

    def cut(task):
        yield from k.sleep_for(task, 1_000_000)            # the mapper has its pages by then
        seen['mapped'] = k.rmap.mapcount(inode.mapping.pages[2])
        seen['ret'] = yield from k.vfs.do_truncate(task, inode, 4096 + 100)
        seen['cached'] = sorted(inode.mapping.pages)
        seen['ptes'] = [k.mm.read_pte(k.mm.pte_offset(m.mm, v.start + i * 4096))
                        for v in m.mm.vmas if getattr(v.file, 'inode', None) is inode
                        for i in range(3)]
        return 0
    k.kernel_thread('cut', 0, cut)
    assert k.run() == 'finished'
    k.finish()
    assert seen['mapped'] == 1 and seen['ret'] == 0
    assert seen['cached'] == [0, 1] and seen['ptes'][0] and seen['ptes'][1] and not seen['ptes'][2]
    assert inode.size == 4196 and not [r for r in k.reports if r['kind'] == 'corruption']
    assert k.oracle.file_page(inode, 1)[0][:100] == data[4096:4196]
    assert k.oracle.file_page(inode, 1)[0][100:] == bytes(3996)


def test_the_same_page_write_and_a_racing_truncate_complete_on_every_design():
    scn = scenario(TRUNC)
    for v in scn.variants():
        r = runner.run_variant(scn, v)
        assert r['outcome'] == 'completed', (v, r['reports'][:2])
        assert r['counters']['fs_truncates'] >= 100


# ---- the budgets of every strategy (slow) -----------------------------------------------------

BUDGET = 200


@pytest.mark.slow
@pytest.mark.parametrize('strategy', ex.STRATEGIES)
@pytest.mark.parametrize('variant,outcome',
                         [(DONT_UNMAP_SLEEP, 'bug'), (DONT_UNMAP_FIXUP, 'failed')],
                         ids=['dont_unmap-sleep', 'dont_unmap-fixup'])
def test_every_strategy_finds_the_munmap_race_within_the_budget(strategy, variant, outcome):
    s = explore(MUNMAP, variant, strategy, BUDGET, jobs=2)
    assert s['found'] is not None and s['found']['outcome'] == outcome
    assert s['shrunk']['after'] <= 2


@pytest.mark.slow
@pytest.mark.parametrize('strategy', ex.STRATEGIES)
def test_every_strategy_finds_the_slot_reuse_within_the_budget(strategy):
    s = explore(SLOT, {'atomic_fault': 'sleep'}, strategy, BUDGET, jobs=2)
    assert s['found'] is not None and s['found']['outcome'] == 'corruption'


@pytest.mark.slow
@pytest.mark.parametrize('strategy', ex.STRATEGIES)
@pytest.mark.parametrize('name,variant', [(MUNMAP, PERFORM_WRITE), (MUNMAP, ATOMIC_FALLBACK),
                                          (SLOT, {'atomic_fault': 'fixup'}),
                                          (TRUNC, {'write_path': 'perform_write'})],
                         ids=['munmap-perform_write', 'munmap-atomic_fallback', 'slot-fixup',
                              'truncate-perform_write'])
def test_nothing_to_find_on_the_correct_designs_within_the_same_budget(strategy, name, variant):
    s = explore(name, variant, strategy, BUDGET, jobs=2, all=True)
    assert s['runs'] == BUDGET and s['finds'] == 0


@pytest.mark.slow
@pytest.mark.parametrize('strategy', ex.STRATEGIES)
def test_a_truncate_cannot_make_the_same_page_deadlock_i_sem_serializes_them(strategy):
    """The same budget finds no deadlock on atomic_fallback (nor kmap):
    the truncate never lands between the prefault and grab_cache_page."""
    for wp in ('atomic_fallback', 'kmap'):
        s = explore(TRUNC, {'write_path': wp}, strategy, 100, jobs=2, all=True)
        assert s['finds'] == 0


# ---- the same-page deadlock under reclaim (slow: ~300k points and ~9 s per run) ---------------

RECLAIM_BUDGET = 24


@pytest.mark.slow
def test_pct_finds_the_same_page_deadlock_under_reclaim_on_atomic_fallback():
    """One preemption right after the writer's prefault, reclaim evicts the
    source page while the writer is off its CPU, and the writer deadlocks
    on the lock of the page it is writing (a new, not uptodate page)."""
    s = explore(RECLAIM, {'write_path': 'atomic_fallback'}, 'pct', RECLAIM_BUDGET, jobs=2)
    f = s['found']
    assert f is not None and f['outcome'] == 'deadlock'
    assert any('w/2 -> w/2' in m for m in f['reports'])
    (change,) = s['shrunk']['rec']['applied']
    assert change['label'] == 'ret:fault_in_pages_readable' and change['cpu'] == 0
    assert change['preempt'] and change['order'] == s['shrunk']['rec']['spec']['order']


@pytest.mark.slow
def test_nothing_to_find_on_perform_write_under_reclaim_within_the_same_budget():
    s = explore(RECLAIM, {'write_path': 'perform_write'}, 'pct', RECLAIM_BUDGET, jobs=2, all=True)
    assert s['runs'] == RECLAIM_BUDGET and s['finds'] == 0
