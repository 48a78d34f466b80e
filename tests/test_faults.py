"""Fault injection (minikernel/faults.py), the always-on checkers it relies
on (minikernel/checks.py), `kmaplab inject` and campaigns (kmaplab/inject.py).

Each test says what the kernel should do under the fault and checks it on
the machine: the outcome the runner judges, the reports, the counters of
the injection points (a point that did not fire tested nothing).
"""
import pytest

from minikernel.faults import PlanError, apply_plan, load_plan

PAGE = 4096

EVICT = {'fault': [{'fault': 'evict_page', 'at': 'write_path.after_prefault', 'page': 'buf'}]}


# ---- the same-page write under forced eviction -------------------------------------

def samepage(boot_kernel, write_path, plan=EVICT, seed=1):
    k = boot_kernel(write_path=write_path)
    f = apply_plan(k, plan, seed)
    k.vfs.create_file('f', bytes((i * 13 + 3) & 0xFF for i in range(PAGE)))
    t = k.spawn('w', 'ft_samepage', ['f', 100])
    return k, f, t, k.run()


def test_evict_after_prefault_makes_atomic_fallback_deadlock_on_its_own_page_lock(boot_kernel):
    """Evicted after the prefault, the page comes back to the cache as a NEW
    locked !uptodate page (grab_cache_page); the atomic copy comes back
    short, the fallback kmap + copy faults on the mmap of that very page and
    filemap_nopage sleeps on the lock its own task holds."""
    k, f, t, end = samepage(boot_kernel, 'atomic_fallback')
    assert f.summary()[0]['fired'] == 1 and f.summary()[0].get('evicted') == 1
    assert end == 'deadlock'
    rep = [r for r in k.reports if r['kind'] == 'deadlock'][0]
    assert f'cycle: w/{t.pid} -> w/{t.pid}' in rep['message']
    assert t.waiting_on[0] == 'page_lock' and k.filemap.lock_owner[t.waiting_on[1]] is t
    assert k.write_paths.counters['fallback_copies'] == 1


@pytest.mark.parametrize('write_path', ['perform_write', 'kmap_local'])
def test_evict_after_prefault_perform_write_retries_and_completes(boot_kernel, write_path):
    """perform_write never faults with the page locked: the short copy
    commits nothing, unlocks, faults the source in again (reading the new
    page) and copies."""
    k, f, t, end = samepage(boot_kernel, write_path)
    assert f.summary()[0]['fired'] == 1 and f.summary()[0].get('evicted') == 1
    assert end == 'finished' and t.exit_code == 0
    assert k.write_paths.counters['perform_write_retries'] == 1
    k.finish()
    assert [r for r in k.reports if r['kind'] in ('bug', 'corruption', 'deadlock')] == []


def test_without_the_eviction_atomic_fallback_completes(boot_kernel):
    """The control: the prefault brings the page in uptodate, the atomic
    copy succeeds, nothing to deadlock on."""
    k, f, t, end = samepage(boot_kernel, 'atomic_fallback', plan={'fault': []})
    assert end == 'finished' and t.exit_code == 0
    assert k.write_paths.counters['fallback_copies'] == 0


def test_eviction_skips_a_dont_unmap_pinned_mm(boot_kernel):
    k, f, t, end = samepage(boot_kernel, 'dont_unmap')
    s = f.summary()[0]
    assert s['fired'] == 1 and s.get('pinned') == 1 and 'evicted' not in s
    assert end == 'finished' and t.exit_code == 0


# ---- plans: validation -----------------------------------------------------------------

@pytest.mark.parametrize('fault,needle', [
    ({'fault': 'evict_pages', 'at': 'write_path.after_prefault'}, "fault[0].fault: 'evict_pages'"),
    ({'fault': 'evict_page', 'at': 'write_path.nowhere'}, 'fault[0].at:'),
    ({'fault': 'evict_page'}, 'fault[0].at: missing'),
    ({'fault': 'evict_page', 'at': 'write_path.after_prefault', 'probabilty': 5},
     'fault[0].probabilty: unknown key'),
    ({'fault': 'fail_page_alloc', 'probability': 101}, 'fault[0].probability: 101'),
    ({'fault': 'fail_page_alloc', 'zone': 'Highmem'}, 'fault[0].zone'),
    ({'fault': 'fail_page_alloc', 'gfp': ['__GFP_HIGHMEN']}, '__GFP_HIGHMEN'),
    ({'fault': 'ipi_lost', 'vector': 'nmi'}, 'fault[0].vector'),
    ({'fault': 'fail_usercopy', 'at': 'memcpy'}, 'fault[0].at'),
])
def test_a_bad_plan_is_one_line_naming_the_key(fault, needle):
    with pytest.raises(PlanError) as e:
        load_plan({'fault': [fault]})
    msg = str(e.value)
    assert needle in msg and '\n' not in msg


def test_a_plan_file_error_names_the_file(tmp_path):
    p = tmp_path / 'bad.toml'
    p.write_text('[[fault]]\nfault = "fail_page_alloc"\ntimes = -2\n')
    with pytest.raises(PlanError, match=r'bad\.toml: fault\[0\]\.times: -2'):
        load_plan(str(p))
    p.write_text('frobnicate = 1\n')
    with pytest.raises(PlanError, match=r'bad\.toml: frobnicate: unknown key'):
        load_plan(str(p))
    with pytest.raises(PlanError, match='no such plan'):
        load_plan(str(tmp_path / 'missing.toml'))


# ---- should_fail: Linux's knobs in Linux's order ------------------------------------------

class _Ranges:
    def ranges(self, spec, prefix):
        return [spec[prefix]] if spec.get(prefix) else []


class _Task:
    def __init__(self, name):
        self.name = name


def attr(**spec):
    import random
    from minikernel.faults import FaultAttr
    return FaultAttr(spec, random.Random(0), _Ranges())


def fires(a, n, task=None, size=1, stack=()):
    return [a.should_fail(task, size, stack) for _ in range(n)]


def test_times_interval_space_probability():
    assert fires(attr(), 3) == [True, False, False]                     # times = 1 by default
    assert fires(attr(times=-1, interval=3), 7) == [False, False, True] * 2 + [False]
    assert fires(attr(times=2, interval=2), 6) == [False, True, False, True, False, False]
    assert fires(attr(times=-1, space=3), 5, size=1) == [False, False, True, True, True]  # space > size
    assert fires(attr(times=-1, probability=0), 50) == [False] * 50
    some = fires(attr(times=-1, probability=30), 1000)
    assert 230 < sum(some) < 370                                          # drawn from the seeded rng
    assert some == fires(attr(times=-1, probability=30), 1000)            # and deterministic


def test_task_filter_and_fail_nth():
    a = attr(times=-1, tasks=['w*'])
    assert fires(a, 2, _Task('writer')) == [True, True]
    assert fires(a, 2, _Task('hog')) == [False, False]
    assert fires(a, 1, None) == [False]                                   # interrupt context
    b = attr(fail_nth=3)                      # the task's 3rd call fails; probability 0 after
    w = _Task('w')
    assert fires(b, 6, w) == [False, False, True, False, False, False]
    c = attr(fail_nth=2, tasks=['w'])
    assert fires(c, 3, _Task('x')) == [False] * 3 and fires(c, 3, w) == [False, True, False]


def test_the_interval_counts_only_calls_that_passed_the_earlier_checks():
    a = attr(times=-1, interval=2, tasks=['w'])
    w, x = _Task('w'), _Task('x')
    got = [a.should_fail(t, 1, ()) for t in (w, x, x, w, x, w, w)]
    assert got == [False, False, False, True, False, False, True]


def test_stack_filter_require_and_reject():
    assert fires(attr(times=-1, require='grab_cache_page'), 1, stack=['x', 'grab_cache_page']) == [True]
    assert fires(attr(times=-1, require='grab_cache_page'), 1, stack=['x', 'filemap_nopage']) == [False]
    assert fires(attr(times=-1, reject='filemap_nopage'), 1, stack=['filemap_nopage']) == [False]
    a = attr(times=1, require='y')
    assert fires(a, 2, stack=['x']) == [False, False] and a.times == 1    # a miss spends no time


# ---- the injection points, each on a run ---------------------------------------------------

def test_fail_page_alloc_filters_zone_order_gfp(boot_kernel):
    from minikernel import page_alloc as pa
    k = boot_kernel()
    f = apply_plan(k, {'fault': [{'fault': 'fail_page_alloc', 'zone': 'HighMem', 'min_order': 0,
                                  'times': 2}]})
    assert not f.should_fail_alloc_page(None, pa.GFP_KERNEL, 0)           # zone Normal first
    assert f.should_fail_alloc_page(None, pa.GFP_HIGHUSER, 0)
    assert f.should_fail_alloc_page(None, pa.GFP_HIGHUSER, 1)
    assert not f.should_fail_alloc_page(None, pa.GFP_HIGHUSER, 0)         # times used up
    k2 = boot_kernel()
    f2 = apply_plan(k2, {'fault': [{'fault': 'fail_page_alloc', 'gfp': '__GFP_HIGHMEM',
                                    'ignore_gfp_wait': True, 'times': -1}]})
    assert not f2.should_fail_alloc_page(None, pa.GFP_HIGHUSER, 0)        # it may wait
    assert f2.should_fail_alloc_page(None, pa.__GFP_HIGHMEM, 0)


def test_page_alloc_fail_in_grab_cache_page_fails_the_write_cleanly(lab):
    r = lab.run('plans/workloads/fi-writer.toml', plan='plans/page_alloc_fail.toml',
                write_path='atomic_fallback')
    assert r['outcome'] == 'failed' and r['ok']
    assert r['faults'][0]['fired'] == 1 and r['faults'][0]['failed_allocations'] == 1
    assert set(r['checkers']) == {'user program exit code'}               # nothing leaked
    fault = [x for x in r['reports'] if x['kind'] == 'fault'][0]
    assert 'gfp' in fault['message']


def test_swap_read_error_kills_with_sigbus(lab):
    r = lab.run('plans/workloads/fi-writer.toml', plan='plans/swap_read_error.toml',
                write_path='perform_write')
    evict, fail = r['faults']
    assert evict['fired'] >= 1 and evict.get('evicted', 0) >= 1
    assert fail['fired'] == 1
    assert r['outcome'] == 'killed'
    assert any('swap read error' in x['message'] for x in r['reports'] if x['kind'] == 'kill')
    assert r['counters']['swap_read_errors'] == 1


def test_disk_latency_spike_costs_cycles_not_correctness(lab):
    slow = lab.run('plans/workloads/fi-writer.toml', plan='plans/disk_latency_spike.toml',
                   write_path='atomic_fallback')
    base = lab.run('plans/workloads/fi-writer.toml', plan='plans/swap_read_error.toml',
                   write_path='atomic_fallback', seed=0)
    assert slow['outcome'] == 'completed'
    spikes = slow['faults'][1]['fired']
    assert spikes >= 1 and slow['counters']['cycles'] > base['counters']['cycles'] + 2_000_000


def test_lost_ipi_soft_lockup_names_the_spin(lab):
    r = lab.run('plans/workloads/fi-writer.toml', plan='plans/ipi_lost.toml', write_path='kmap')
    assert r['outcome'] == 'bug' and r['end'] == 'soft lockup'
    locks = [x['message'] for x in r['reports'] if x.get('check') == 'soft lockup']
    assert locks and all('NMI watchdog: BUG: soft lockup - CPU#' in m for m in locks)
    assert any('spinning on' in m for m in locks), locks
    assert r['faults'][0]['ipis_dropped'] == 1
    ok = lab.run('plans/workloads/fi-writer.toml', plan='plans/ipi_lost.toml',
                 write_path='atomic_fallback')
    assert ok['outcome'] == 'completed' and ok['never_fired'] == ['ipi_lost']


LATE_IPI = {'fault': [{'fault': 'ipi_delay', 'vector': 'tlb', 'cycles': 300_000, 'times': -1}]}


def test_ipi_delay_makes_the_sender_spin(lab):
    late = lab.run('plans/workloads/fi-writer.toml', plan=LATE_IPI, write_path='kmap')
    base = lab.run('plans/workloads/fi-writer.toml', plan='plans/none.toml', write_path='kmap')
    assert late['outcome'] == base['outcome'] == 'completed'
    assert late['faults'][0]['ipis_delayed'] >= 1
    assert late['counters']['spin_call_function_wait'] > base['counters']['spin_call_function_wait'] + 100_000


PREEMPT = {'boot': {'preempt': 'full'},
           'fault': [{'fault': 'preempt', 'at': ['cfu_movsl', 'cfui_movsl'], 'tasks': ['wa', 'wb'],
                      'interval': 300, 'times': 100, 'verbose': 0}]}


@pytest.mark.parametrize('write_path,preempted', [('kmap_local', True), ('atomic_fallback', False)])
def test_preempt_inside_the_copy(lab, write_path, preempted):
    r = lab.run('plans/workloads/fi-writer.toml', plan=PREEMPT, write_path=write_path,
                schedule='rr')          # wa and wb both runnable when the firings land
    c = r['counters']
    assert r['outcome'] == 'completed' and r['faults'][0]['fired'] == 100
    if preempted:                    # preempted inside kmap_local_page ... kunmap_local
        assert c['switches_in_kmap_local'] > 0
    else:          # kmap_atomic raised preempt_count: the preemption waits for a later
        # interrupt outside the section (need_resched stays set), never inside it
        assert c['switches_in_kmap_local'] == 0 and c['sleep_in_atomic_bugs'] == 0
        assert k_preemptions(r) < r['faults'][0]['fired'] // 10


def k_preemptions(r):
    return r['kernel'].irq.counters['preemptions']


def test_fail_usercopy_fallback_survives_kmap_does_not(lab):
    r = lab.run('plans/workloads/fi-writer.toml', plan='plans/fail_usercopy.toml',
                write_path='atomic_fallback')
    assert r['outcome'] == 'completed' and r['faults'][0]['short_copies'] == 1
    assert r['counters']['fallback_copies'] >= 1
    k = lab.run('plans/workloads/fi-writer.toml', plan='plans/fail_usercopy.toml', write_path='kmap')
    assert k['outcome'] == 'failed' and k['counters']['write_efault'] >= 1
    g = lab.run('plans/workloads/fi-writer.toml', plan='plans/fail_usercopy.toml',
                write_path='gup_pin')
    assert g['outcome'] == 'completed' and g['never_fired'] == [g['faults'][0]['label']]


def test_sibling_munmap_breaks_dont_unmap_only(lab):
    d = lab.run('plans/workloads/fi-mmwriter.toml', plan='plans/sibling_munmap_at_copy.toml',
                write_path='dont_unmap', atomic_fault='sleep')
    s = d['faults'][0]
    assert s['fired'] == 2 and s['munmaps'] == 2 and s['remaps'] == 2
    assert d['outcome'] == 'bug'
    assert d['checkers'].get('might_sleep') and d['checkers'].get('sleep in atomic (schedule)')
    a = lab.run('plans/workloads/fi-mmwriter.toml', plan='plans/sibling_munmap_at_copy.toml',
                write_path='atomic_fallback')
    assert a['outcome'] == 'completed' and a['counters']['fallback_copies'] >= 1


def test_sibling_munmap_with_mmap_sem_held_waits_for_the_writer(lab):
    """mmap_sem_in_write=read: the sibling's down_write queues behind the
    writer; the copy does not fault (the munmap has not happened yet)."""
    r = lab.run('plans/workloads/fi-mmwriter.toml', plan='plans/sibling_munmap_at_copy.toml',
                write_path='dont_unmap', atomic_fault='sleep', mmap_sem_in_write='read')
    assert r['outcome'] == 'completed' and r['faults'][0]['munmaps'] == 2


# ---- checkers --------------------------------------------------------------------------------

def _spin_forever(k, cpu=0):
    from minikernel.task import Guest
    word = k.slab.kmalloc(4, 'test lock')
    k.machine.write32(word - k.PAGE_OFFSET, 1)                    # held by nobody: never freed

    def body(task):
        yield Guest('_spin_lock', word)
    return k.kernel_thread('spinner', cpu, body), word


def test_watchdog_reports_a_soft_lockup_and_stops(boot_kernel):
    k = boot_kernel(watchdog=2_000_000)
    t, word = _spin_forever(k)
    assert k.run() == 'soft lockup'
    rep = [r for r in k.reports if r.get('check') == 'soft lockup']
    assert len(rep) == 1
    msg = rep[0]['message']
    assert msg.startswith('NMI watchdog: BUG: soft lockup - CPU#0 stuck for ')
    assert f'[spinner:{t.pid}]' in msg and '_spin_lock' in msg
    assert f'spinning on spinlock at {word:#010x} = 0x1' in msg
    assert k.machine.time(0) < 4_000_000                       # caught within ~thresh + period


def test_watchdog_off(boot_kernel):
    k = boot_kernel(watchdog=0)
    _spin_forever(k)
    assert k.run(3_000_000) == 'time limit'
    assert not [r for r in k.reports if r.get('check') == 'soft lockup']


def test_a_task_sleeping_in_a_fault_is_not_a_lockup(lab):
    """Waiting for the disk is progress: the watchdog only counts time a CPU
    spends in one guest routine without coming back to Python."""
    r = lab.run('plans/workloads/fi-writer.toml', plan='plans/disk_latency_spike.toml',
                write_path='perform_write', watchdog=1_000_000)
    assert r['outcome'] == 'completed'


def test_kmap_slot_checker_sees_a_slot_taken_by_another_task(boot_kernel):
    """A task sleeps inside kmap_atomic (the 2002 handler's bug); another task
    on the same CPU maps the same KM_USER0 slot."""
    from minikernel.layout import KM_USER0
    from minikernel.task import Guest
    k = boot_kernel()
    pa = k.page_alloc
    p1, p2 = (pa.alloc_pages_fast(k.gfp.GFP_HIGHUSER, 0) for _ in range(2))

    def sleeper(task):
        kaddr = yield Guest('kmap_atomic', k.page_to_guest(p1), KM_USER0)
        yield from k.sleep_for(task, 100_000)                     # scheduling while atomic
        yield Guest('kunmap_atomic', kaddr, KM_USER0)
        k.sched.add_preempt_count(task, 0)

    def other(task):
        kaddr = yield Guest('kmap_atomic', k.page_to_guest(p2), KM_USER0)
        yield Guest('kunmap_atomic', kaddr, KM_USER0)
    a = k.kernel_thread('a', 0, sleeper)
    b = k.kernel_thread('b', 0, other, start=10_000)
    k.run()
    reuse = [r['message'] for r in k.reports if r.get('check') == 'kmap_atomic slot reused while held']
    assert reuse == [f'kmap_atomic slot reused while held: KM_USER0 on CPU0 holds pfn {p1:#x} '
                     f'for a/{a.pid} (mapped from sleeper); b/{b.pid} maps pfn {p2:#x} there '
                     f'from other']
    assert k.checks.counters['kmap_slot_reuses'] == 1


def test_kmap_slot_checker_is_quiet_on_correct_nesting(lab):
    r = lab.run('plans/workloads/fi-writer.toml', plan='plans/none.toml', write_path='gup_pin')
    assert r['outcome'] == 'completed' and r['counters']['kmap_slot_reuses'] == 0


def test_oom_with_free_swap_is_flagged(boot_kernel):
    k = boot_kernel()
    k.report('oom', 'Out of Memory: Killed process 3 (w); free swap 4096 kB', free_swap_kb=4096,
             victim='w/3')
    k.report('oom', 'Out of Memory: Killed process 4 (x); free swap 0 kB', free_swap_kb=0,
             victim='x/4')
    k.checks.finish()
    flagged = [r['message'] for r in k.reports if r.get('check') == 'oom with free swap']
    assert flagged == ['OOM with free swap: w/3 was killed while 4096 kB of swap were free']


# ---- kmaplab inject -----------------------------------------------------------------------------

def test_inject_cli_reports_points_and_checkers(capsys):
    from kmaplab.cli import main
    rc = main(['inject', 'same-page-write', '--seed', '2', '--set', 'write_path=atomic_fallback'])
    out = capsys.readouterr().out
    assert rc == 0
    assert 'outcome: deadlock (expected deadlock) -> ok' in out
    assert 'checkers fired: deadlock (wait-for graph) x1' in out
    assert 'evict_page@write_path.after_prefault' in out and 'evicted 1' in out
    assert ('replay: kmaplab inject same-page-write --plan scenarios/plans/evict_after_prefault.toml '
            '--seed 2 --set write_path=atomic_fallback') in out


def test_inject_says_when_a_point_never_fired(capsys, tmp_path):
    from kmaplab.cli import main
    p = tmp_path / 'nothing.toml'
    p.write_text('[[fault]]\nfault = "ipi_lost"\n')
    rc = main(['inject', 'plans/workloads/fi-samepage.toml', '--plan', str(p)])
    out = capsys.readouterr().out
    assert rc == 1 and 'NEVER FIRED' in out


@pytest.mark.parametrize('argv,needle', [
    (['inject', 'same-page-write', '--plan', 'nope.toml'], 'no such plan file'),
    (['inject', 'no-such-scenario', '--plan', 'plans/none.toml'], 'no such scenario'),
    (['inject', 'hello'], 'no --plan given'),
    (['campaign', '--plans', '/nonexistent'], 'not a directory'),
    (['campaign', '--write-paths', 'kmap,fast'], "'fast' is not a write path"),
])
def test_inject_and_campaign_bad_input_is_exit_2(capsys, argv, needle):
    from kmaplab.cli import main
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count('\n') == 1


def test_a_bad_plan_key_is_exit_2_naming_file_and_key(capsys, tmp_path):
    from kmaplab.cli import main
    p = tmp_path / 'typo.toml'
    p.write_text('[[fault]]\nfault = "evict_page"\nat = "write_path.after_prefault"\ntimse = 3\n')
    assert main(['inject', 'same-page-write', '--plan', str(p)]) == 2
    err = capsys.readouterr().err
    assert 'typo.toml: fault[0].timse: unknown key' in err


def test_replay_command_reproduces_outcome_and_counters(capsys):
    import json
    import shlex
    from kmaplab.cli import main
    from kmaplab.inject import run_job
    from kmaplab.inject import campaign_jobs, campaign_plans
    from minikernel.faults import PLAN_DIR
    plans = [p for p in campaign_plans(PLAN_DIR) if p.name == 'sibling_munmap_at_copy']
    job = [j for j in campaign_jobs(plans, ['dont_unmap'], 2) if j['seed'] == 1][0]
    rec = run_job(job)
    assert rec['outcome'] == 'bug'
    argv = shlex.split(rec['replay'])
    assert argv[:2] == ['kmaplab', 'inject'] and '--seed' in argv
    capsys.readouterr()
    main(argv[1:] + ['--json'])
    again = json.loads(capsys.readouterr().out.splitlines()[0])
    assert again['outcome'] == rec['outcome'] and again['counters'] == rec['counters']
    assert again['faults'] == rec['faults']


# ---- campaigns ------------------------------------------------------------------------------------

def tiny_plans(tmp_path):
    """Two fast plans on the same-page workload."""
    import shutil
    from minikernel.faults import PLAN_DIR
    d = tmp_path / 'plans'
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(f'{PLAN_DIR}/evict_after_prefault.toml', d)
    (d / 'none.toml').write_text('name = "none"\nscenario = "plans/workloads/fi-samepage"\n'
                                 '[expect]\ndefault = "completed"\n')
    return d


def campaign(tmp_path, out, *extra):
    from kmaplab.cli import main
    return main(['campaign', '--plans', str(tiny_plans(tmp_path)), '--out', str(out),
                 '--write-paths', 'atomic_fallback,perform_write', '--seeds', '2', *extra])


def test_campaign_matrix_failures_and_same_results_whatever_the_jobs(tmp_path, capsys):
    assert campaign(tmp_path / 'a', tmp_path / 'one', '--jobs', '1') == 0
    out = capsys.readouterr().out
    assert 'shape: as expected' in out
    row = [ln for ln in out.splitlines() if ln.strip().startswith('atomic_fallback')][0]
    assert '2 DEADLOCK' in row and '2 ok' in row
    fails = (tmp_path / 'one' / 'failures.txt').read_text()
    assert fails.count('evict_after_prefault|atomic_fallback|') == 2
    assert 'kmaplab inject plans/workloads/fi-samepage.toml --plan' not in fails  # paths from the root
    assert '--set write_path=atomic_fallback' in fails
    assert campaign(tmp_path / 'b', tmp_path / 'two', '--jobs', '2') == 0
    one = (tmp_path / 'one' / 'results.json').read_text()
    two = (tmp_path / 'two' / 'results.json').read_text()
    assert one.replace(str(tmp_path / 'a'), '') == two.replace(str(tmp_path / 'b'), '')


def test_campaign_resumes_where_it_stopped(tmp_path, capsys, monkeypatch):
    from kmaplab import inject
    out = tmp_path / 'out'
    calls = []
    real = inject.Progress.advance

    def advance(self, rec):
        calls.append(rec['key'])
        real(self, rec)
        if len(calls) == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(inject.Progress, 'advance', advance)
    assert campaign(tmp_path, out, '--jobs', '1') == 130
    assert 'run the same command again to resume' in capsys.readouterr().err
    lines = (out / 'results.jsonl').read_text().splitlines()
    assert len(lines) == 3
    with open(out / 'results.jsonl', 'a') as f:
        f.write('{"key": "torn')                                  # killed mid-line
    monkeypatch.setattr(inject.Progress, 'advance', real)
    ran = []
    real_run = inject.run_job
    monkeypatch.setattr(inject, 'run_job', lambda j: ran.append(j['key']) or real_run(j))
    assert campaign(tmp_path, out, '--jobs', '1') == 0
    assert len(ran) == 8 - 3 and not set(ran) & set(calls)
    assert 'resuming, 3 of 8 runs already done' in capsys.readouterr().err


@pytest.mark.slow
def test_the_shipped_campaign_has_the_expected_shape(tmp_path, capsys):
    from kmaplab.cli import main
    assert main(['campaign', '--seeds', '1', '--out', str(tmp_path), '--jobs', '2']) == 0
    assert 'shape: as expected' in capsys.readouterr().out


@pytest.mark.slow
def test_campaign_on_a_local_ray(tmp_path, capsys):
    ray = pytest.importorskip('ray')
    try:
        assert campaign(tmp_path / 'p', tmp_path / 'pool', '--jobs', '1') == 0
        assert campaign(tmp_path / 'r', tmp_path / 'ray', '--jobs', '2', '--backend', 'ray') == 0
    finally:
        ray.shutdown()
    a = (tmp_path / 'pool' / 'results.json').read_text().replace(str(tmp_path / 'p'), '')
    b = (tmp_path / 'ray' / 'results.json').read_text().replace(str(tmp_path / 'r'), '')
    assert a == b


# ---- the pytest integration itself ------------------------------------------------------------------

pytest_plugins = ['pytester']


def test_a_failing_lab_test_prints_its_replay_command(pytester):
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    pytester.makeconftest(open(os.path.join(here, 'conftest.py')).read())
    pytester.makepyfile('''
        def test_it(lab):
            r = lab.run('same-page-write', seed=5, write_path='atomic_fallback')
            assert r['outcome'] == 'completed'
    ''')
    res = pytester.runpytest('-p', 'no:cacheprovider')
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(['*kmaplab replay*',
                              '*seed 5: kmaplab inject same-page-write --plan '
                              'scenarios/plans/evict_after_prefault.toml --seed 5 '
                              '--set write_path=atomic_fallback*'])


def test_disk_faults_have_no_task_filter():
    with pytest.raises(PlanError, match=r'fault\[0\]\.tasks: unknown key for fault "fail_make_request"'):
        load_plan({'fault': [{'fault': 'fail_make_request', 'tasks': ['w']}]})


def test_a_plan_expecting_an_unknown_outcome_is_exit_2(capsys, tmp_path):
    from kmaplab.cli import main
    p = tmp_path / 'x.toml'
    p.write_text('[expect]\nkmap = "explodes"\n')
    assert main(['inject', 'same-page-write', '--plan', str(p)]) == 2
    assert "x.toml: expect.kmap: 'explodes' is not an outcome" in capsys.readouterr().err
