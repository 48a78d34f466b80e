"""kmaplab explore: search the interleavings of a scenario for a schedule
whose outcome is not the expected one, save it, shrink it, replay it
(docs/explore.md).

    kmaplab explore SCENARIO [--strategy random|pct|bounded] [--depth d]
                    [--preemptions c] [--runs N] [--jobs J] [--all] [--seed S]
                    [--window W] [--set k=v ...] [--variant k=v,...]
                    [--out F] [--no-shrink] [--json]
    kmaplab run SCENARIO --schedule F          (replay; kmaplab/cli.py)

What this file owns
  - The scheduling points: which kernel events (Kernel.trace_event, through
    k.point_hook) and which guest routines (one-address code hooks on their
    first instruction) announce a point to the machine, and their labels.
  - Schedules: a spec (an initial CPU priority order, changes anchored to
    points, and for PCT/random the strategy's own parameters) turned into
    vm.policy.Priorities.  A change reorders the CPUs, or preempts the task
    running on the point's CPU (its time slice ends there: the local timer
    fires at that point, and the kernel preempts it if it may), or both.
    A CPU is a "thread" of PCT: n is the number of CPUs; the tasks sharing
    a CPU are reached through preemptions.
  - The strategies: seeded random at every point, PCT with depth d
    (Burckhardt et al., ASPLOS 2010: random priorities, d-1 random change
    points among k steps), and preemption-bounded search (CHESS's iterative
    context bounding: every schedule with 0 changes, then 1, ... up to c).
  - Runs on the campaign's process pool (kmaplab/inject.py _execute_pool).
  - Shrinking a failing schedule to the fewest changes that still fail the
    same way (ddmin), the schedule file (JSON) and its replay.
  - The report: runs, schedules per second, hit rate, steps k and CPUs n,
    the PCT bound 1/(n k^(d-1)) beside the measured hit rate.

Rules
  - A run is a function of its job (scenario, variant, seed, overrides,
    spec): the same result whatever --jobs.  "The first failure" is the one
    with the lowest run index, not the first to finish.
  - Random draws come from the strategy's own generators, seeded by --seed
    and the run index; machine.rng (the kernel's) is untouched.
  - A schedule file replays bit-identically: same points in the same order
    (checked point by point: the first difference stops the run with a
    one-line reason), same outcome, same counters (checked by digest).
  - Bad input (scenario, variant, option, a schedule file that is not one or
    does not match the scenario) is a ValueError with a one-line reason.
"""
import base64
import itertools
import json
import os
import random
import struct
import sys
import time
import zlib

from minikernel.faults import USER_POINTER
from minikernel.kernel import BOOT_OPTIONS
from minikernel.write_paths import FUSED_COPIES
from vm.policy import Priorities
from vm.spares import Spares

from . import inject, options, runner
from . import scenario as scn_mod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMAT = 'kmaplab-schedule/1'
MAX_TRACE_BYTES = 64 << 20         # a schedule file's decoded point trace at most
STRATEGIES = ('random', 'pct', 'bounded')
DEFAULTS = dict(window=20_000, quantum=1000, runs=200, depth=2, preemptions=2, seed=0)
RANDOM_SWITCH = 0.5          # random: at each point, the chance of a new random order
RANDOM_PREEMPT = 0.02        # random: at each point, the chance of a preemption there

# Kernel events that are scheduling points -> the label's detail field.
EVENT_POINTS = {
    'syscall': 'name', 'syscall_exit': 'name', 'page_fault': None, 'fault_resolved': None,
    'fixup': None, 'rwsem': 'op', 'spin_lock': None, 'lock_page': None, 'unlock_page': None,
    'pte_zap': None, 'reclaim_unmap': None, 'swap_out': None, 'swap_in': None,
    'ipi_sent': None, 'ipi_received': None, 'context_switch': None, 'wakeup': None,
    'disk_read': None, 'disk_write': None, 'disk_done': 'op', 'preempt': None, 'exit': None,
}
# Guest routines whose first instruction is a scheduling point (kmap and friends).
GUEST_POINTS = ('kmap', 'kunmap', 'kmap_high', 'kunmap_high', 'flush_all_zero_pkmaps',
                'kmap_atomic', 'kunmap_atomic', 'kmap_local_page', 'kunmap_local')
# Guest routines whose return to kernel Python code is a scheduling point,
# labelled ret:NAME: the user accesses (the kernel has just touched user
# memory, which other CPUs and reclaim may change before it goes on).
RETURN_POINTS = frozenset(USER_POINTER) | frozenset(FUSED_COPIES)


# ---- scheduling points ------------------------------------------------------------------------

def event_label(event, fields):
    """The point label of a kernel event, or None if it is not a point."""
    if event not in EVENT_POINTS:
        return None
    key = EVENT_POINTS[event]
    return f'{event}:{fields.get(key)}' if key else event


def install_points(k):
    """Make k's meaningful events scheduling points: the kernel's events
    through k.point_hook, the guest's kmap routines through one-address
    code hooks (on the routines' first instruction: they cost nothing
    elsewhere), and the returns of the user accesses through the engine's
    ret_hook (at the `int` in ret_to_python that hands a routine's result
    back to Python: the point a code hook there would announce, without a
    Python callback from Unicorn on every return)."""
    m = k.machine

    def hook(event, task, fields):
        label = event_label(event, fields)
        if label is not None:
            m.sched_point(label)
    k.point_hook = hook

    def ret(cpu, routine):
        if routine in RETURN_POINTS:
            m.sched_point('ret:' + routine, cpu.index)
    k.engine.ret_hook = ret
    for name in GUEST_POINTS:
        fn = lambda c, a, name=name: m.sched_point(name, c.index)
        addr = k.image.symbols.get(name)
        if addr is None:
            continue
        for cpu in m.cpus:
            cpu.hook_code(addr, addr + 1, fn)


# ---- specs and policies -----------------------------------------------------------------------

def pct_decider(spec):
    """PCT's change points: the initial priorities are d .. d+n-1 (in the
    spec's order); at global step steps[i] the running CPU's priority drops
    to d-1-i, below every initial one (the paper's "priority i at k_i"),
    and the task running there is preempted: the thread at the change
    point loses the processor whether it shares its CPU or not."""
    d = spec['depth']
    prio = {cpu: d + len(spec['order']) - 1 - r for r, cpu in enumerate(spec['order'])}
    at = {s: d - 1 - i for i, s in enumerate(spec['steps'])}

    def decide(policy, cpu, label, step):
        if step not in at:
            return None
        prio[cpu] = at[step]
        return sorted(prio, key=lambda c: -prio[c]), True
    return decide


def random_decider(spec):
    """Random at scheduling points: at each point, with probability p, a
    random CPU goes to the top of the order, and with probability
    preempt_p the task running on the point's CPU is preempted."""
    rng = random.Random(f'kmaplab-explore:{spec["seed"]}')
    p, pp = spec.get('p', RANDOM_SWITCH), spec.get('preempt_p', RANDOM_PREEMPT)

    def decide(policy, cpu, label, step):
        new = None
        if rng.random() < p:
            top = rng.randrange(len(policy.order))
            new = [top] + [c for c in policy.order if c != top]
        preempt = rng.random() < pp
        return (new, preempt) if new is not None or preempt else None
    return decide


DECIDERS = {'pct': pct_decider, 'random': random_decider}


def make_policy(spec, expect=None, labels=None, on_tick=None):
    changes = {(c['cpu'], c['label'], c['n']): (tuple(c['order']), bool(c.get('preempt')))
               for c in spec.get('changes', ())}
    make = DECIDERS.get(spec['strategy'])
    return Priorities(spec['order'], changes, make(spec) if make else None, spec['window'],
                      spec['quantum'], expect=expect, labels=labels, on_tick=on_tick)


# ---- one run ----------------------------------------------------------------------------------

def run_schedule(scn, variant, seed, overrides, spec, spares=None):
    """Boot the variant, run it under `spec`, judge it (runner.run_variant
    with the policy installed).  Returns (result, policy).  spares: build
    the machine on an earlier run's hardware (vm/spares.py; the caller
    releases r['kernel'].machine)."""
    box = {}

    def setup(k):
        box['policy'] = install(k, spec)
    r = runner.run_variant(scn, variant, seed, overrides, setup=setup, spares=spares)
    return r, box['policy']


def install(k, spec, expect=None, labels=None):
    """Put the spec's policy on k's machine and turn the points on."""
    ncpu = len(k.machine.cpus)
    if sorted(spec['order']) != list(range(ncpu)):
        raise ValueError(f'schedule order {spec["order"]} does not name the {ncpu} CPUs '
                         f'of this machine')
    def preempt(machine, cpu):
        k.sched.end_timeslice(cpu)
        machine.tick_now(cpu)
    policy = make_policy(spec, expect, labels, on_tick=preempt)
    k.machine.policy = policy
    install_points(k)
    return policy


_SCENARIOS = {}       # path -> ((mtime_ns, size), Scenario): one load per worker process


def _scenario(path):
    """inject.find_scenario(path), parsed once per process while the file
    stays the same (a Scenario is not changed by running it; its host
    files are read once per object)."""
    try:
        st = os.stat(path)
    except OSError:
        return inject.find_scenario(path)
    key = (st.st_mtime_ns, st.st_size)
    hit = _SCENARIOS.get(path)
    if hit is None or hit[0] != key:
        hit = _SCENARIOS[path] = (key, inject.find_scenario(path))
    return hit[1]


# The worker's spare hardware (vm/spares.py): each run of a variant is built
# on the Unicorn instances, RAM and translated kernel code of the worker's
# previous run of it, reset (tests/test_spares.py: the same records and
# memory as on fresh machines).
SPARES = Spares()


def run_job(job, spares=SPARES):
    """One exploration run (in a worker process): a record with nothing
    host-dependent in it but wall_s and cpu_s.  spares=None: a fresh
    machine."""
    scn = _scenario(job['scenario'])
    r, policy = run_schedule(scn, job['variant'], job['seed'], job['overrides'], job['spec'],
                             spares=spares)
    k = r['kernel']
    rec = dict(index=job['index'], spec=job['spec'], outcome=r['outcome'], ok=r['ok'],
               why=r['why'], expected=r['expected'], findings=r['findings'],
               steps=len(policy.points), cpus=len(k.machine.cpus),
               tasks=sum(1 for t in k.sched.tasks.values() if t.program is not None),
               applied=[_change(a) for a in policy.applied], trace=encode_trace(policy),
               digest=inject.counters_digest(r['counters']), wall_s=r['wall_s'],
               cpu_s=r['cpu_s'])
    if not r['ok']:
        rec['counters'] = r['counters']
        rec['reports'] = [rep['message'] for rep in r['reports']
                          if rep['kind'] not in ('fault', 'warning')][:5]
    if job.get('memory'):                  # tests: the guest RAM the run left
        rec['memory_sha256'] = k.machine.memory_digest()
    c0 = time.process_time()
    runner.discard(k)                      # nothing of k runs later on the released hardware
    k.machine.release()
    rec['cpu_s'] = round(rec['cpu_s'] + time.process_time() - c0, 3)
    return rec


def _change(applied):
    step, cpu, label, n, order, preempt = applied
    return dict(step=step, cpu=cpu, label=label, n=n, order=list(order), preempt=preempt)


# ---- point traces (the replay's check, the bounded search's candidates) -----------------------

def encode_trace(policy):
    """The run's points, compact: the label table and the codes (label
    index * 32 + cpu) as zlib-compressed little-endian u32, base64."""
    raw = struct.pack(f'<{len(policy.points)}I', *policy.points)
    return dict(steps=len(policy.points), labels=list(policy.labels),
                codes=base64.b64encode(zlib.compress(raw, 9)).decode())


def decode_trace(trace, where='schedule'):
    try:
        d = zlib.decompressobj()
        raw = d.decompress(base64.b64decode(trace['codes']), MAX_TRACE_BYTES)
        if d.unconsumed_tail:
            raise ValueError(f'{where}: trace: more than {MAX_TRACE_BYTES} bytes of points')
        codes = list(struct.unpack(f'<{len(raw) // 4}I', raw))
        labels = list(trace['labels'])
    except (KeyError, TypeError, ValueError, zlib.error, struct.error):
        raise ValueError(f'{where}: trace: not a point trace written by kmaplab explore') from None
    if len(codes) != trace.get('steps') or any(c // 32 >= len(labels) for c in codes):
        raise ValueError(f'{where}: trace: inconsistent (steps or labels do not match the codes)')
    return codes, labels


# ---- strategies: the specs of the runs --------------------------------------------------------

def base_spec(strategy, ncpu, opts):
    return dict(strategy=strategy, order=list(range(ncpu)), changes=[], window=opts['window'],
                quantum=opts['quantum'])


def random_spec(i, ncpu, opts):
    """Run i of the random strategy: a random initial order, a random new
    top CPU at each point with probability RANDOM_SWITCH."""
    rng = random.Random(f'kmaplab-random:{opts["seed"]}:{i}')
    spec = base_spec('random', ncpu, opts)
    rng.shuffle(spec['order'])
    spec.update(seed=f'{opts["seed"]}:{i}', p=RANDOM_SWITCH)
    return spec


def pct_spec(i, ncpu, opts, k):
    """Run i of PCT(d): random initial priorities, d-1 change points drawn
    uniformly among the k steps measured on the unperturbed run."""
    rng = random.Random(f'kmaplab-pct:{opts["seed"]}:{i}')
    spec = base_spec('pct', ncpu, opts)
    rng.shuffle(spec['order'])
    spec.update(depth=opts['depth'], k=k,
                steps=[rng.randrange(max(k, 1)) for _ in range(opts['depth'] - 1)])
    return spec


def children(rec):
    """Bounded search: the schedules with one more change than `rec`'s, at
    each of its points after its last change: each other CPU on top, and
    a preemption of the task running on the point's CPU."""
    codes, labels = decode_trace(rec['trace'])
    spec = rec['spec']
    first = spec['changes'][-1]['step'] + 1 if spec['changes'] else 0
    order, seen, out = list(spec['order']), {}, []
    at = {c['step']: c['order'] for c in spec['changes']}
    for step, code in enumerate(codes):
        cpu, label = code % 32, labels[code // 32]
        n = seen[(cpu, label)] = seen.get((cpu, label), 0) + 1
        order = list(at.get(step, order))
        if step < first:
            continue
        for top in order[1:]:
            new = [top] + [c for c in order if c != top]
            change = dict(step=step, cpu=cpu, label=label, n=n, order=new, preempt=False)
            out.append(dict(spec, changes=spec['changes'] + [change]))
        change = dict(step=step, cpu=cpu, label=label, n=n, order=list(order), preempt=True)
        out.append(dict(spec, changes=spec['changes'] + [change]))
    return out


# ---- running many: the campaign pool ----------------------------------------------------------

def job(index, target, spec):
    return dict(target, index=index, spec=spec, key=f'explore|{index}')


def run_batch(jobs, nworkers, is_find, stop_first, progress=None, backend='pool', address=None):
    """Run the jobs on the pool (or Ray: backend='ray', a local Ray or
    `address` / RAY_ADDRESS); returns their records by index.  With
    stop_first, stop once the lowest-index find is known (every job before
    it has finished): its records and those of the jobs before it."""
    recs, best = {}, None
    if progress:
        progress.start(len(jobs), 0)
    runs = inject.execute(jobs, nworkers, backend, address, run_job)
    try:
        for rec in runs:
            recs[rec['index']] = rec
            if progress:
                progress.advance(dict(key=f'run {rec["index"]}', outcome=rec['outcome']))
            if is_find(rec) and (best is None or rec['index'] < best):
                best = rec['index']
            if stop_first and best is not None and all(j['index'] in recs for j in jobs
                                                        if j['index'] < best):
                break
    finally:
        runs.close()
        if progress:
            progress.stop()
    if stop_first and best is not None:
        recs = {i: r for i, r in recs.items() if i <= best}
    return recs


def _backend(opts):
    return opts.get('backend', 'pool'), opts.get('ray_address')


# ---- exploring one variant --------------------------------------------------------------------

def finder(target):
    """is_find(rec): the outcome is one of `target` (a set), or, without a
    target, a departure from the correct behaviour that the scenario does
    not already expect: neither completed nor the expected outcome.  (A
    schedule under which a scripted scenario's race does not happen is no
    find; one under which a design known to BUG also corrupts data is.)"""
    if target:
        return lambda rec: rec['outcome'] in target
    return lambda rec: rec['outcome'] not in ('completed', rec['expected'])


def explore(scn, variant, seed, overrides, opts, progress=None):
    """Search the schedules of one variant.  opts: strategy, runs, jobs,
    all, target, window, quantum, depth, preemptions, seed, shrink.
    Returns the summary (see summarize) with the find, shrunk, if any."""
    t0 = time.perf_counter()
    boot_opts = scn.options(variant, overrides, seed)
    ncpu, seed = boot_opts.get('cpus', 1), boot_opts.get('seed', 0)
    tgt = dict(scenario=os.path.abspath(scn.path), variant=variant, seed=seed, overrides=overrides)
    is_find = finder(opts.get('target'))
    search = {'random': _search_random, 'pct': _search_pct, 'bounded': _search_bounded}
    recs = search[opts['strategy']](tgt, ncpu, opts, is_find, progress)
    elapsed = time.perf_counter() - t0
    finds = sorted((r for r in recs.values() if is_find(r)), key=lambda r: r['index'])
    found = finds[0] if finds else None
    shrunk = None
    if found is not None and opts.get('shrink', True):
        shrunk = shrink(tgt, found, is_find, opts)
    return summarize(scn, tgt, opts, recs, finds, shrunk, elapsed)


def _stop_first(opts):
    return not opts.get('all')


def _search_random(tgt, ncpu, opts, is_find, progress):
    jobs = [job(i, tgt, random_spec(i, ncpu, opts)) for i in range(opts['runs'])]
    return run_batch(jobs, opts['jobs'], is_find, _stop_first(opts), progress, *_backend(opts))


def _search_pct(tgt, ncpu, opts, is_find, progress):
    """Run 0 is unperturbed (no change point): it measures k, the number
    of steps, from which the change points of runs 1.. are drawn."""
    probe = run_job(job(0, tgt, base_spec('pct', ncpu, dict(opts, depth=1))
                        | dict(depth=1, k=0, steps=[])))
    recs = {0: probe}
    if is_find(probe) and _stop_first(opts) or opts['runs'] <= 1:
        return recs
    k = probe['steps']
    jobs = [job(i, tgt, pct_spec(i, ncpu, opts, k)) for i in range(1, opts['runs'])]
    recs.update(run_batch(jobs, opts['jobs'], is_find, _stop_first(opts), progress,
                          *_backend(opts)))
    return recs


def _search_bounded(tgt, ncpu, opts, is_find, progress):
    """CHESS's iterative context bounding: every initial order with no
    change, then every schedule with one more change than a schedule of
    the level before, up to --preemptions; --runs caps the total."""
    orders = list(itertools.permutations(range(ncpu))) if ncpu <= 4 else \
        [list(range(i, ncpu)) + list(range(i)) for i in range(ncpu)]
    specs = [dict(base_spec('bounded', ncpu, opts), order=list(o)) for o in orders]
    recs, level = {}, 0
    while specs and len(recs) < opts['runs']:
        specs = specs[:opts['runs'] - len(recs)]
        jobs = [job(len(recs) + i, tgt, s) for i, s in enumerate(specs)]
        got = run_batch(jobs, opts['jobs'], is_find, _stop_first(opts), progress, *_backend(opts))
        recs.update(got)
        if _stop_first(opts) and any(is_find(r) for r in got.values()) \
                or level == opts['preemptions']:
            break
        level += 1
        specs = [c for r in sorted(got.values(), key=lambda r: r['index'])
                 for c in children(r)]
    return recs


# ---- shrinking --------------------------------------------------------------------------------

def shrink(tgt, found, is_find, opts):
    """ddmin over the changes the failing run made: the fewest changes
    (kept in their order, anchored to their points) that still give the
    same outcome; then, for each change that both reorders the CPUs and
    preempts, whether one of the two is enough.  Returns dict(rec, tries,
    before, after)."""
    spec = dict(base_spec('replay', len(found['spec']['order']), found['spec']),
                order=found['spec']['order'], changes=found['applied'])
    same = lambda r: is_find(r) and r['outcome'] == found['outcome']      # noqa: E731
    best = run_job(job(0, tgt, spec))
    tries = 1
    if not same(best):
        raise ValueError(f'{found["outcome"]} schedule does not replay from its changes: '
                         f'run {found["index"]} is not deterministic')
    changes, n = list(spec['changes']), 2
    while changes:
        parts = _split(changes, n)
        cands = [[c for j, p in enumerate(parts) if j != i for c in p] for i in range(len(parts))]
        if n == 2 and [] not in cands:
            cands.insert(0, [])
        jobs = [job(i, tgt, dict(spec, changes=c)) for i, c in enumerate(cands)]
        nworkers = opts['jobs'] if len(jobs) > 3 else 1           # no pool for 2 or 3 runs
        backend = _backend(opts) if nworkers > 1 else ('pool', None)
        got = run_batch(jobs, nworkers, same, True, None, *backend)
        tries += len(got)
        hit = min((i for i, r in got.items() if same(r)), default=None)
        if hit is not None:
            changes, best = cands[hit], got[hit]
            n = max(n - 1, 2)
        elif n >= len(changes):
            break
        else:
            n = min(2 * n, len(changes))
    changes = list(best['applied'])
    for i in range(len(changes)):                 # then the fewest parts of each change
        for cand in _halves(changes, i, spec['order']):
            r = run_job(job(0, tgt, dict(spec, changes=cand)))
            tries += 1
            if same(r):
                changes, best = cand, r
                break
    return dict(rec=best, tries=tries, before=len(found['applied']), after=len(best['applied']))


def _halves(changes, i, initial):
    """Change i both reorders the CPUs and preempts: the two schedules
    with one of those parts dropped (the order left as it was before it)."""
    c = changes[i]
    before = changes[i - 1]['order'] if i else list(initial)
    if not c['preempt'] or list(c['order']) == list(before):
        return []
    return [changes[:i] + [dict(c, order=list(before))] + changes[i + 1:],
            changes[:i] + [dict(c, preempt=False)] + changes[i + 1:]]


def _split(items, n):
    size, extra = divmod(len(items), n)
    out, i = [], 0
    for j in range(n):
        m = size + (1 if j < extra else 0)
        out.append(items[i:i + m])
        i += m
    return [p for p in out if p]


# ---- the report -------------------------------------------------------------------------------

def pct_bound(n, k, d):
    """PCT's guarantee: one run finds a bug of depth d with probability at
    least 1/(n k^(d-1)) (Burckhardt et al., ASPLOS 2010, Theorem 1)."""
    return 1.0 / (n * max(k, 1) ** (d - 1)) if n else 0.0


def summarize(scn, tgt, opts, recs, finds, shrunk, elapsed):
    rs = sorted(recs.values(), key=lambda r: r['index'])
    steps = [r['steps'] for r in rs] or [0]
    k = sum(steps) / len(steps)
    n = rs[0]['cpus'] if rs else 0
    busy = sum(r.get('cpu_s', r['wall_s']) for r in rs)      # CPU time: the host is shared
    return dict(scenario=scn.name, path=_rel(tgt['scenario']), variant=tgt['variant'],
                seed=tgt['seed'], overrides=tgt['overrides'], strategy=opts['strategy'],
                window=opts['window'], depth=opts['depth'], preemptions=opts['preemptions'],
                runs=len(rs), budget=opts['runs'], all=bool(opts.get('all')),
                target=sorted(opts['target']) if opts.get('target') else None, finds=len(finds), hit_rate=len(finds) / len(rs) if rs else 0.0,
                steps_mean=round(k, 1), steps_min=min(steps), steps_max=max(steps),
                cpus=n, tasks=rs[0]['tasks'] if rs else 0,
                pct_bound=pct_bound(n, k, opts['depth']), elapsed_s=round(elapsed, 2),
                schedules_per_s=round(len(rs) / elapsed, 2) if elapsed else 0.0,
                runs_per_core_s=round(len(rs) / busy, 2) if busy else 0.0,
                found=finds[0] if finds else None, shrunk=shrunk)


def print_summary(s, out=None):
    p = lambda *a: print(*a, file=out or sys.stdout)      # noqa: E731
    label = ' '.join(f'{k}={v}' for k, v in s['variant'].items()) or '(default)'
    p(f'== explore {s["path"]} {label} seed={s["seed"]}')
    extra = {'pct': f'depth d={s["depth"]}', 'bounded': f'preemptions c<={s["preemptions"]}',
             'random': f'p={RANDOM_SWITCH} at each point'}[s['strategy']]
    p(f'  strategy {s["strategy"]} ({extra}), window {s["window"]} cycles; '
      f'n = {s["cpus"]} CPUs, {s["tasks"]} tasks')
    stop = 'all runs' if s['all'] else 'stopping at the first find'
    p(f'  runs {s["runs"]} of {s["budget"]} ({stop}); {s["schedules_per_s"]} schedules/s '
      f'({s["elapsed_s"]} s wall, {s["runs_per_core_s"]} runs/s per core)')
    p(f'  steps k per run: mean {s["steps_mean"]}, min {s["steps_min"]}, max {s["steps_max"]}')
    note = '' if s['all'] else ' (stopped at the first find: --all measures it)'
    p(f'  hit rate {s["finds"]}/{s["runs"]} = {100 * s["hit_rate"]:.2f}%{note}; PCT bound for '
      f'd={s["depth"]}: 1/(n k^(d-1)) = {100 * s["pct_bound"]:.4f}%')
    f = s['found']
    if f is None:
        what = ', '.join(sorted(s['target'])) if s.get('target') else 'no outcome but completed or expected'
        p(f'  found nothing ({what}) in {s["runs"]} schedules')
        return
    p(f'  found: run {f["index"]}: {f["outcome"]} (expected {f["expected"]}), '
      f'{len(f["applied"])} change(s) of the CPU order or preemption(s)')
    for line in f.get('reports', [])[:3]:
        p(f'    {line[:160]}')
    sh = s['shrunk']
    if sh:
        p(f'  shrunk: {sh["before"]} -> {sh["after"]} change(s) in {sh["tries"]} runs')
        before = sh['rec']['spec']['order']
        for c in sh['rec']['applied']:
            parts = ([] if c['order'] == list(before) else [f'order {c["order"]}']) \
                + (['preempt'] if c.get('preempt') else [])
            before = c['order']
            p(f'    at step {c["step"]}: {c["label"]} #{c["n"]} on CPU{c["cpu"]} -> {", ".join(parts)}')


def _rel(path):
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


# ---- schedule files ---------------------------------------------------------------------------

def schedule_record(s):
    """The file of a summary's find (the shrunk schedule if there is one)."""
    rec = s['shrunk']['rec'] if s['shrunk'] else s['found']
    spec = rec['spec']
    return dict(format=FORMAT, scenario=s['path'], variant=s['variant'], seed=s['seed'],
                overrides=s['overrides'], order=spec['order'], window=spec['window'],
                quantum=spec['quantum'], changes=rec['applied'],
                found_by=dict(strategy=s['strategy'], run=s['found']['index'], runs=s['runs'],
                              depth=s['depth'], preemptions=s['preemptions'],
                              explore_seed=s.get('explore_seed', 0),
                              changes_before_shrinking=len(s['found']['applied'])),
                outcome=rec['outcome'], expected=rec['expected'], why=rec['why'],
                reports=rec.get('reports', []), counters_digest=rec['digest'],
                counters=rec.get('counters', {}), trace=rec['trace'])


def save_schedule(s, path):
    data = schedule_record(s)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write('\n')
    return path


def default_out(s):
    v = '-'.join(f'{val}' for val in s['variant'].values())
    name = f'{s["scenario"]}{"-" + v if v else ""}-{s["strategy"]}.json'
    return options.out_dir('schedules', name)


SCHEDULE_KEYS = {'format', 'scenario', 'variant', 'seed', 'overrides', 'order', 'window', 'quantum',
                 'changes', 'found_by', 'outcome', 'expected', 'why', 'reports',
                 'counters_digest', 'counters', 'trace'}


def _schedule_schema():
    from minikernel.kernel import option_spec
    from minikernel.schema import Any, Bool, Choice, Int, ListOf, Str, Table
    cpu = Int(0, 31, 'a CPU number')
    options = Table(extra=option_spec, extra_allowed='boot options')
    return Table({
        'format': Choice((FORMAT,)), 'scenario': Str(max_len=4096), 'variant': options,
        'seed': Int(0, (1 << 63) - 1), 'overrides': OneOfNone(options),
        'order': ListOf(cpu, min_len=1, max_len=32), 'window': Int(1, 10 ** 12),
        'quantum': Int(1, 1_000_000),
        'changes': ListOf(Table({'cpu': cpu, 'label': Str(max_len=256), 'n': Int(0, 10 ** 12),
                                 'order': ListOf(cpu, max_len=32), 'preempt': Bool(),
                                 'step': Int(0, 10 ** 12)},
                                required=('cpu', 'label', 'n', 'order')), max_len=100_000),
        'trace': Table(extra=lambda k: Any()), 'outcome': Str(max_len=64),
        'counters_digest': Str(max_len=64),
        **{k: Any() for k in ('found_by', 'expected', 'why', 'reports', 'counters')},
    }, required=('scenario', 'variant', 'seed', 'order', 'window', 'quantum', 'changes', 'trace',
                 'outcome', 'counters_digest'))


def OneOfNone(spec):
    from minikernel.schema import Choice, OneOf
    return OneOf(spec, Choice([None]))


def load_schedule(path):
    """A schedule file, checked by its schema: ValueError with a one-line
    reason naming the file and the key."""
    from minikernel.schema import read_json
    data = read_json(path, 'schedule file')
    if not isinstance(data, dict) or data.get('format') != FORMAT:
        raise ValueError(f'{path}: not a schedule file (format {FORMAT!r} expected)')
    _schedule_schema().check(data, f'{path}: ')
    decode_trace(data['trace'], path)
    return data


def replay(data, scn=None, tracer=None):
    """Run a schedule file's schedule.  Returns the runner's result with
    `diverged` (None, or the one-line reason the run left the file)."""
    scn = scn or inject.find_scenario(_abs(data['scenario']))
    codes, labels = decode_trace(data['trace'])
    spec = dict(strategy='replay', order=data['order'], changes=data['changes'],
                window=data['window'], quantum=data['quantum'])
    box = {}

    def setup(k):
        box['policy'] = install(k, spec, expect=codes, labels=labels)
    r = runner.run_variant(scn, data['variant'], seed=data['seed'],
                           overrides=data.get('overrides') or {}, tracer=tracer, setup=setup)
    r['diverged'] = _divergence(data, r, box['policy'], codes)
    r['points'] = len(box['policy'].points)
    return r


def _divergence(data, r, policy, codes):
    if policy.diverged:
        return policy.diverged
    if len(policy.points) < len(codes):
        return (f'schedule diverged at step {len(policy.points)}: the file has '
                f'{policy.describe(codes[len(policy.points)])}, the run had ended ({r["outcome"]})')
    if r['outcome'] != data['outcome']:
        return f'same points, but outcome {r["outcome"]} where the file has {data["outcome"]}'
    if inject.counters_digest(r['counters']) != data['counters_digest']:
        return 'same points and outcome, but the counters differ from the file\'s'
    return None


def _abs(path):
    return path if os.path.isabs(path) else os.path.join(ROOT, path)


# ---- the command line -------------------------------------------------------------------------

def add_parser(sub):
    e = sub.add_parser('explore', help='search the interleavings for a schedule under which a design '
                                       'is not correct (docs/explore.md)')
    e.add_argument('scenario', metavar='SCENARIO',
                   help='a scenario name or a path (scenarios/explore/ holds ones for exploring)')
    e.add_argument('--strategy', choices=STRATEGIES, default='pct',
                   help='random, pct (default: probabilistic concurrency testing) or bounded '
                        '(preemption bounding)')
    e.add_argument('--runs', type=int, default=DEFAULTS['runs'], help='schedules to try at most')
    e.add_argument('--depth', type=int, default=DEFAULTS['depth'], help='PCT bug depth d')
    e.add_argument('--preemptions', type=int, default=DEFAULTS['preemptions'],
                   help='bounded: at most c changes (CPU reorderings or preemptions)')
    e.add_argument('--jobs', type=int, default=os.cpu_count() or 1, help='worker processes')
    e.add_argument('--all', action='store_true', help='run all --runs schedules (hit rate)')
    e.add_argument('--seed', type=int, help='the scenario seed (the kernel\'s)')
    e.add_argument('--explore-seed', type=int, default=DEFAULTS['seed'],
                   help='the strategy\'s own seed')
    e.add_argument('--window', type=int, default=DEFAULTS['window'],
                   help='cycles a CPU may run ahead of the slowest')
    e.add_argument('--target', metavar='OUTCOME,...',
                   help='comma-separated outcomes that count as a find (default: a departure from '
                        'the correct behaviour the scenario does not expect: any outcome but completed '
                        'and the expected one)')
    e.add_argument('--set', action='append', metavar='KEY=VALUE',
                   help='a boot option or machine key (repeatable)')
    e.add_argument('--cpus', type=int, help='the machine size (= --set cpus=N)')
    e.add_argument('--variant', metavar='KEY=VALUE,...', help='only the variants with these values')
    e.add_argument('--out', metavar='FILE', help='where to save the schedule found (default out/schedules/...)')
    e.add_argument('--no-shrink', action='store_true', help='keep the find as found')
    e.add_argument('--json', action='store_true', help='one JSON object per variant')
    e.add_argument('--backend', choices=('pool', 'ray'), default='pool',
                   help='where the runs go: a process pool, or Ray (the same results)')
    e.add_argument('--ray-address', metavar='ADDRESS',
                   help='a Ray cluster (default: RAY_ADDRESS, else a local Ray)')


def explore_options(args):
    if args.runs < 1 or args.jobs < 1 or args.depth < 1 or args.preemptions < 0:
        raise ValueError('--runs, --jobs and --depth must be at least 1, --preemptions at least 0')
    if args.window < 1:
        raise ValueError('--window must be at least 1 cycle')
    target = None
    if args.target:
        target = {t.strip() for t in args.target.split(',') if t.strip()}
        bad = sorted(target - set(scn_mod.OUTCOMES))
        if bad:
            raise ValueError(f'--target {bad[0]!r}: not an outcome ({", ".join(scn_mod.OUTCOMES)})')
    return dict(strategy=args.strategy, runs=args.runs, jobs=args.jobs, all=args.all,
                target=target, window=args.window, quantum=DEFAULTS['quantum'], depth=args.depth,
                preemptions=args.preemptions, seed=args.explore_seed, shrink=not args.no_shrink,
                backend=args.backend, ray_address=args.ray_address)


def select_variants(scn, variants, spec, parse_value):
    """The variants matching --variant k=v,... (all of them without it); a
    key a variant does not set is compared with the scenario's value, else
    the boot option's default."""
    if not spec:
        return variants
    want = {}
    for item in spec.split(','):
        if '=' not in item:
            raise ValueError(f'--variant {item!r}: expected key=value')
        k, v = item.split('=', 1)
        want[k.strip()] = parse_value(v.strip())
    out = [v for v in variants if all(_effective(scn, v, k) == val for k, val in want.items())]
    if not out:
        known = '; '.join(','.join(f'{k}={x}' for k, x in v.items()) for v in variants)
        raise ValueError(f'--variant {spec}: no variant matches (variants: {known})')
    return out


def _effective(scn, variant, key):
    opts = scn.options(variant)
    return opts[key] if key in opts else BOOT_OPTIONS.get(key, (None,))[0]


def cmd_explore(args, variants_of, parse_value):
    """Explore every selected variant.  Exit 1 when a schedule broke the
    expectation (a find), 0 when nothing was found."""
    s = inject.find_scenario(args.scenario)
    opts = explore_options(args)
    variants, overrides = variants_of(s, args)
    variants = select_variants(s, variants, args.variant, parse_value)
    if args.out and len(variants) > 1:
        raise ValueError('--out names one file: select one variant with --variant')
    any_found = False
    for v in variants:
        summary = explore(s, v, args.seed, overrides, opts,
                          progress=None if args.json else inject.Progress(label='explore'))
        summary['explore_seed'] = opts['seed']
        if summary['found'] is not None:
            any_found = True
            summary['schedule'] = save_schedule(summary, args.out or default_out(summary))
            summary['replay'] = f'kmaplab run {summary["path"]} --schedule {summary["schedule"]}'
        if args.json:
            print(json.dumps(json_summary(summary), sort_keys=True))
        else:
            print_summary(summary)
            if summary['found'] is not None:
                print(f'  schedule: {summary["schedule"]}')
                print(f'  replay: {summary["replay"]}')
    return 1 if any_found else 0


def json_summary(s):
    out = {k: v for k, v in s.items() if k not in ('found', 'shrunk')}
    f = s['shrunk']['rec'] if s['shrunk'] else s['found']
    if f is not None:
        out['found'] = dict(run=s['found']['index'], outcome=f['outcome'], expected=f['expected'],
                            changes=f['applied'], reports=f.get('reports', []),
                            changes_before_shrinking=len(s['found']['applied']))
    return out


def cmd_replay(args, print_human):
    """kmaplab run SCENARIO --schedule F: replay a schedule file.  Exit 0
    when the run reproduced the recorded outcome and counters (a recorded
    find is expected to break the scenario's expectation: that is what it
    shows); a run that leaves the file is exit 2 with the reason."""
    if args.seed is not None or args.set or args.cpus is not None:
        raise ValueError('--schedule: the file pins the seed, the variant and the options '
                         '(no --seed, --set or --cpus)')
    data = load_schedule(args.schedule)
    s = inject.find_scenario(args.scenario)
    if os.path.abspath(s.path) != os.path.abspath(_abs(data['scenario'])):
        raise ValueError(f'{args.schedule}: recorded on {data["scenario"]}, not {_rel(s.path)}')
    r = replay(data, s)
    if r['diverged']:
        raise ValueError(f'{args.schedule}: {r["diverged"]}')
    if args.json:
        rec = {k: r[k] for k in ('scenario', 'seed', 'variant', 'outcome', 'expected', 'ok', 'counters',
                                 'wall_s')}
        rec['reproduced'] = True
        print(json.dumps(rec, sort_keys=True))
    else:
        print_human(r, first=True)
        print(f'reproduced: {args.schedule} replayed as recorded ({r["points"]} points, '
              f'{len(data["changes"])} change(s), outcome {data["outcome"]}, same counters)')
    return 0
