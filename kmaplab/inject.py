"""kmaplab inject and kmaplab campaign: run scenarios under fault plans.

    kmaplab inject SCENARIO [--plan F] [--seed N] [--set k=v ...] [--json]
    kmaplab campaign [--seeds N] [--jobs J] [--plans DIR] [--out DIR]
                     [--write-paths a,b] [--backend pool|ray] [--fresh]

What this file owns
  - run_one(): boot one variant, apply a plan (minikernel/faults.py), run,
    judge (kmaplab/runner.py's judge and counters), and say which checker
    fired and how often each injection point fired.
  - The replay command of a run: `kmaplab inject SCENARIO --plan F --seed N
    --set ...`, which reproduces the same outcome and counters.
  - Campaigns: seeds x plans x write paths on a process pool (or Ray), with
    a progress bar, results appended to OUT/results.jsonl as each run ends
    (so an interrupted campaign resumes where it stopped), the matrix
    (write path x plan -> outcome counts) against the plans' [expect], and
    OUT/failures.txt with a replay command per run that found something.

Rules
  - A run's record is a function of (plan, workload, write path, seed) only:
    the same whatever the job count or backend (wall_s aside).
  - Bad input (unknown scenario, bad plan, bad option) is a one-line error
    and exit code 2 (raised as ValueError to the CLI).
"""
import collections
import hashlib
import json
import os
import shlex
import sys
import time

from minikernel.faults import PLAN_DIR, PlanError, load_plan
from minikernel.write_paths import DESIGNS

from . import options, runner
from . import outfiles
from . import scenario as scn_mod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The kernel each design was proposed for: Andrew's dont_unmap (July 2002)
# predates 2.5.32's in_atomic() test in do_page_fault, so its copy may sleep.
ERA = {'dont_unmap': {'atomic_fault': 'sleep'}}
DEFAULT_SEEDS = 3


# ---- one run ------------------------------------------------------------------------

def run_one(scn, variant=None, seed=0, plan=None, overrides=None):
    """Boot `scn`'s variant with `plan` (a path / dict / Plan; default: the
    scenario's own `plan`, if any), run it, judge it.  Returns a dict:
    the runner's fields (outcome, findings, counters, reports ...) plus
    plan, faults (per injection point: calls, fired, effects), never_fired,
    checkers (checker -> reports filed) and expected/ok under the plan."""
    variant = dict(variant or {})
    plan = _resolve_plan(scn, plan)
    t0 = time.perf_counter()
    k = runner.boot(scn, variant, seed, overrides, plan=plan)
    faults = k.faults
    end, counters, outcome, findings = runner.run_kernel(k)
    expected, ok, why = _expectation(scn, plan, variant, k, outcome, findings, counters)
    return dict(scenario=scn.name, path=scn.path, seed=k.config['seed'], variant=variant,
                write_path=k.config['write_path'], plan=plan.name if plan else None,
                plan_path=plan.path if plan else None, outcome=outcome,
                findings=sorted(findings), expected=expected, ok=ok, why=why,
                checkers=checkers_fired(k.reports), faults=faults.summary(),
                never_fired=faults.never_fired(), counters=counters, reports=k.reports,
                end=end, wall_s=round(time.perf_counter() - t0, 3), kernel=k)


def _resolve_plan(scn, plan):
    if plan is None:
        plan = getattr(scn, 'plan', None)
    if plan is None:
        return None
    return checked(load_plan(plan, base_dir=os.path.dirname(os.path.abspath(scn.path))))


def checked(plan):
    """The plan, once its [expect] names only outcomes the runner knows."""
    for wp, outcome in plan.expect.items():
        if outcome not in scn_mod.OUTCOMES:
            raise PlanError(f'{plan.path}: expect.{wp}: {outcome!r} is not an outcome '
                            f'(allowed: {", ".join(scn_mod.OUTCOMES)})')
    if plan.scenario:
        workload_path(plan)
    return plan


def _expectation(scn, plan, variant, k, outcome, findings, counters):
    """(expected, ok, why): the plan's [expect] for this write path if it
    has one, else the scenario's own expectation."""
    exp = plan.expected(k.config['write_path']) if plan is not None else None
    if exp is None:
        ok, why = runner.check_expectation(scn, variant, outcome, findings, counters, k.config,
                                           getattr(k, 'scenario_params', None))
        return scn.expectation(variant)[0], ok, why
    ok = outcome == exp
    return exp, ok, [] if ok else [f'outcome {outcome}, the plan expects {exp}']


def find_scenario(name):
    """scenario.find(), also accepting a path relative to scenarios/ (e.g.
    plans/workloads/fi-writer.toml, the campaign workloads)."""
    try:
        return scn_mod.find(name)
    except scn_mod.ScenarioError:
        for cand in (name, name + '.toml'):
            path = os.path.join(scn_mod.SCENARIO_DIR, cand)
            if os.path.isfile(path):
                return scn_mod.load(path)
        raise


# ---- which checker fired -------------------------------------------------------------

def checker_name(r):
    """The checker behind a report, or None (not a finding)."""
    kind, msg = r['kind'], r['message']
    if r.get('check'):
        return r['check']
    named = {'deadlock': 'deadlock (wait-for graph)', 'corruption': 'data oracle',
             'no_progress': 'allocator no-progress detector', 'oom': 'OOM killer',
             'oops': 'Oops', 'failed': 'user program exit code', 'crash': 'crash'}
    if kind in named:
        return named[kind]
    if kind == 'kill':
        return f'killed ({r.get("signal", "signal")})'
    if kind == 'bug':
        for needle, name in (('scheduling while atomic', 'sleep in atomic (schedule)'),
                             ('sleeping function called from invalid context', 'might_sleep'),
                             ('frame accounting', 'frame accounting'),
                             ('kernel BUG at', 'guest BUG()')):
            if needle in msg:
                return name
        return 'BUG'
    return None


def checkers_fired(reports):
    c = collections.Counter(n for n in map(checker_name, reports) if n)
    return dict(sorted(c.items()))


# ---- replay -------------------------------------------------------------------------------

def replay_command(scn_path, plan, seed, settings):
    """The one line that replays a run: kmaplab inject SCENARIO --plan F
    --seed N --set k=v ... (an inline plan is written to out/plans/ first)."""
    scen = _short_scenario(scn_path)
    parts = ['kmaplab', 'inject', scen]
    ppath = _plan_path(plan)
    if ppath:
        parts += ['--plan', ppath]
    parts += ['--seed', str(seed)]
    for k, v in sorted(settings.items()):
        parts += ['--set', f'{k}={_fmt(v)}']
    return ' '.join(shlex.quote(p) for p in parts)


def _short_scenario(path):
    path = os.path.abspath(path)
    if os.path.dirname(path) == scn_mod.SCENARIO_DIR:
        return os.path.basename(path)[:-5]
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def _plan_path(plan):
    if plan is None:
        return None
    if isinstance(plan, dict):
        return _write_inline_plan(plan)
    p = plan.path if hasattr(plan, 'path') else str(plan)
    if p == '[plan]':
        return _write_inline_plan({'fault': plan.faults, 'boot': plan.boot})
    p = os.path.abspath(p) if os.path.exists(p) else p
    return os.path.relpath(p, ROOT) if str(p).startswith(ROOT + os.sep) else str(p)


def _write_inline_plan(data):
    """An inline plan as a file under out/plans/, named by its content."""
    text = _to_toml(data)
    name = hashlib.sha256(text.encode()).hexdigest()[:10]
    d = os.path.join(ROOT, options.out_dir('plans'))   # out/ of the source tree, or $KMAPLAB_OUT
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f'inline-{name}.toml')
    with open(path, 'w') as f:
        f.write(text)
    return os.path.relpath(path, ROOT)


def _to_toml(data):
    lines = []
    for key in ('name', 'description'):
        if key in data:
            lines.append(f'{key} = {_fmt_toml(data[key])}')
    if data.get('boot'):
        lines.append('[boot]')
        lines += [f'{k} = {_fmt_toml(v)}' for k, v in data['boot'].items()]
    for f in data.get('fault', []):
        lines.append('[[fault]]')
        lines += [f'{k} = {_fmt_toml(v)}' for k, v in f.items()]
    return '\n'.join(lines) + '\n'


def _fmt_toml(v):
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, (list, tuple)):
        return '[' + ', '.join(_fmt_toml(x) for x in v) + ']'
    return json.dumps(v) if isinstance(v, str) else str(v)


def _fmt(v):
    return ('true' if v else 'false') if isinstance(v, bool) else str(v)


# ---- kmaplab inject ---------------------------------------------------------------------------

def cmd_inject(args, variants_of):
    """Run every variant of the scenario (pinned by --set) under the plan.
    Exit 0: every variant met the expectation and every point fired."""
    s = find_scenario(args.scenario)
    plan = _resolve_plan(s, args.plan)
    if plan is None:
        raise PlanError(f'{args.scenario}: no --plan given and the scenario has none')
    variants, overrides = variants_of(s, args)
    good = True
    for v in variants:
        r = run_one(s, v, seed=args.seed if args.seed is not None else 0, plan=plan,
                    overrides=overrides)
        r['replay'] = replay_command(s.path, plan, r['seed'], dict(v, **overrides))
        good &= r['ok'] and not r['never_fired']
        if args.json:
            print(json.dumps(json_record(r), sort_keys=True))
        else:
            print_inject(r)
    return 0 if good else 1


def json_record(r):
    keys = ('scenario', 'seed', 'variant', 'write_path', 'plan', 'outcome', 'findings', 'expected',
            'ok', 'checkers', 'faults', 'never_fired', 'counters', 'replay', 'wall_s')
    return dict({k: r[k] for k in keys if k in r}, **runner.memory_hash(r))


def print_inject(r):
    label = ' '.join(f'{k}={v}' for k, v in r['variant'].items()) or '(default)'
    print(f'== {r["scenario"]} {label} write_path={r["write_path"]} seed={r["seed"]} '
          f'plan={r["plan"]}')
    for rep in r['reports']:
        if rep['kind'] in ('fault',):
            continue
        print(f'  {rep["kind"]}: {rep["message"]}')
        for g in rep.get('graph', []):
            print(f'      {g}')
    verdict = 'ok' if r['ok'] else 'NOT AS EXPECTED: ' + '; '.join(r['why'])
    print(f'outcome: {r["outcome"]} (expected {r["expected"]}) -> {verdict}')
    fired = ', '.join(f'{k} x{v}' for k, v in r['checkers'].items()) or 'none'
    print(f'checkers fired: {fired}')
    print('injection points:')
    for f in r['faults']:
        extra = '  '.join(f'{k} {v}' for k, v in f.items() if k not in ('label', 'kind', 'calls',
                                                                          'fired'))
        note = '   <- NEVER FIRED: this plan tested nothing here' if not f['fired'] else ''
        print(f'  {f["label"]:44} calls {f["calls"]:6}  fired {f["fired"]:4}  {extra}{note}')
    print(f'replay: {r["replay"]}')
    print(f'wall {r["wall_s"]}s')


# ---- campaigns ---------------------------------------------------------------------------------

def campaign_plans(plans_dir):
    """The plans of a campaign: every *.toml directly in plans_dir, by name.
    Each names its workload (`scenario = ...`)."""
    if not os.path.isdir(plans_dir):
        raise ValueError(f'--plans {plans_dir}: not a directory')
    plans = [checked(load_plan(os.path.join(plans_dir, f))) for f in sorted(os.listdir(plans_dir))
             if f.endswith('.toml')]
    if not plans:
        raise ValueError(f'--plans {plans_dir}: no plan files (*.toml)')
    names = collections.Counter(p.name for p in plans)
    dup = [n for n, c in names.items() if c > 1]
    if dup:
        raise ValueError(f'--plans {plans_dir}: two plans are named {dup[0]!r}')
    for p in plans:
        if not p.scenario:
            raise PlanError(f'{p.path}: scenario: missing (the workload a campaign runs it on)')
        workload_path(p)
    return sorted(plans, key=lambda p: (p.name != 'none', p.name))


def workload_path(plan):
    """The workload scenario file of a plan (its `scenario` key: a scenario
    name, or a path relative to scenarios/ or to the plan's directory)."""
    name = plan.scenario
    cands = [name] if name.endswith('.toml') else [name, name + '.toml']
    for base in (os.path.dirname(os.path.abspath(plan.path)), scn_mod.SCENARIO_DIR, os.getcwd()):
        for c in cands:
            p = os.path.join(base, c)
            if os.path.isfile(p):
                return os.path.abspath(p)
    raise PlanError(f'{plan.path}: scenario: {name!r}: no such scenario file')


def _digest(*paths):
    h = hashlib.sha256(json.dumps(ERA, sort_keys=True).encode())
    for p in paths:
        with open(p, 'rb') as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def campaign_jobs(plans, write_paths, seeds):
    jobs = []
    for plan in plans:
        wl = workload_path(plan)
        ident = _digest(plan.path, wl)
        for wp in write_paths:
            for seed in range(seeds):
                jobs.append(dict(key=f'{plan.name}|{wp}|{seed}', ident=ident, plan=plan.path,
                                 plan_name=plan.name, scenario=wl, write_path=wp, seed=seed))
    return jobs


def run_job(job):
    """One campaign run (in a worker process or a Ray task): a record with
    nothing host-dependent in it but wall_s."""
    s = scn_mod.load(job['scenario'])
    settings = dict(ERA.get(job['write_path'], {}), write_path=job['write_path'])
    r = run_one(s, {}, seed=job['seed'], plan=job['plan'], overrides=settings)
    counters = r['counters']
    return dict(key=job['key'], ident=job['ident'], plan=job['plan_name'],
                write_path=job['write_path'], seed=job['seed'], outcome=r['outcome'],
                expected=r['expected'], ok=r['ok'], findings=r['findings'],
                checkers=r['checkers'], faults=r['faults'], never_fired=r['never_fired'],
                counters=counters, counters_digest=counters_digest(counters),
                replay=replay_command(s.path, job['plan'], job['seed'], settings),
                wall_s=r['wall_s'])


def counters_digest(counters):
    return hashlib.sha256(json.dumps(counters, sort_keys=True).encode()).hexdigest()[:16]


def _execute_pool(todo, jobs, fn=None):
    """Run the jobs through fn (default run_job, a top-level function: the
    workers import it), yielding records as they complete (in-process for
    one job; else a spawn process pool)."""
    fn = fn or run_job
    if jobs <= 1:
        for j in todo:
            yield fn(j)
        return
    import concurrent.futures as cf
    import multiprocessing
    ctx = multiprocessing.get_context('spawn')
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as ex:
        futs = [ex.submit(fn, j) for j in todo]
        try:
            for fut in cf.as_completed(futs):
                yield fut.result()
        except BaseException:
            for fut in futs:
                fut.cancel()
            raise


def execute(todo, jobs, backend='pool', address=None, fn=None):
    """Run the jobs through fn (default run_job) on `backend`: 'pool' (a
    process pool, in-process for one job) or 'ray' (Ray tasks).  Yields the
    records as they complete; callers order them by their own key, so the
    results are the same whatever the backend and job count."""
    if backend == 'ray':
        return _execute_ray(todo, jobs, address, fn)
    if backend != 'pool':
        raise ValueError(f'--backend {backend!r}: pool or ray')
    return _execute_pool(todo, jobs, fn)


def _execute_ray(todo, jobs, address=None, fn=None):
    """The same jobs as Ray tasks (a local Ray instance, or the cluster at
    `address` / RAY_ADDRESS)."""
    try:
        import ray
    except ImportError:
        raise ValueError('--backend ray: ray is not installed (pip install -e ".[ray]")') from None
    address = address or os.environ.get('RAY_ADDRESS')
    if not ray.is_initialized():
        kw = dict(address=address) if address else dict(num_cpus=max(jobs, 1))
        ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False, **kw)
    remote = ray.remote(fn or run_job)
    pending = [remote.remote(j) for j in todo]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        for ref in pending:                 # stopped early (a find): drop the rest
            ray.cancel(ref)


def load_results(path):
    """Records already in results.jsonl (a torn last line is ignored)."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            out[(rec['key'], rec['ident'])] = rec
    return out


def run_campaign(plans, write_paths, seeds, jobs, out, backend='pool', address=None,
                 progress=None, fresh=False):
    """Run (or resume) a campaign.  Returns the records of its jobs, by key."""
    os.makedirs(out, exist_ok=True)
    final = os.path.join(out, 'results.jsonl')
    # --fresh: the new records go to results.jsonl.new, which replaces the
    # old file only once the campaign has finished: an interrupted fresh
    # campaign leaves the earlier results (and the reports made from them) whole.
    path = final + '.new' if fresh else final
    if fresh and os.path.exists(path):
        os.remove(path)
    all_jobs = campaign_jobs(plans, write_paths, seeds)
    have = load_results(path)
    todo = [j for j in all_jobs if (j['key'], j['ident']) not in have]
    if progress:
        progress.start(len(all_jobs), len(all_jobs) - len(todo))
    runs = execute(todo, jobs, backend, address)
    try:
        with open(path, 'a') as f:
            for rec in runs:
                f.write(json.dumps(rec, sort_keys=True) + '\n')
                f.flush()
                have[(rec['key'], rec['ident'])] = rec
                if progress:
                    progress.advance(rec)
    finally:
        if progress:
            progress.stop()
    if fresh:
        with open(path, 'a') as f:
            os.fsync(f.fileno())
        os.replace(path, final)
    return {j['key']: have[(j['key'], j['ident'])] for j in all_jobs
            if (j['key'], j['ident']) in have}


# ---- the matrix --------------------------------------------------------------------------------

def matrix(plans, write_paths, records):
    """{(write_path, plan): Counter(outcome)} and the cells whose outcomes
    are not all the plan's expected one: [(write_path, plan, expected)]."""
    cells, wrong = {}, []
    for plan in plans:
        for wp in write_paths:
            recs = [r for r in records.values() if r['plan'] == plan.name and r['write_path'] == wp]
            c = collections.Counter(_cell_outcome(r) for r in recs)
            cells[(wp, plan.name)] = c
            exp = plan.expected(wp)
            if exp is not None and recs and {r['outcome'] for r in recs} != {exp}:
                wrong.append((wp, plan.name, exp))
    return cells, wrong


def _cell_outcome(r):
    """A run's outcome in the matrix: a plan none of whose faults fired
    tested nothing, so its run is NOT-FIRED, never "ok"."""
    if r.get('faults') and not any(f['fired'] for f in r['faults']):
        return 'not_fired'
    return r['outcome']


ABBREV = {'completed': 'ok', 'deadlock': 'DEADLOCK', 'corruption': 'CORRUPT', 'bug': 'BUG',
          'oom': 'OOM', 'no_progress': 'NO-PROGRESS', 'killed': 'KILLED', 'failed': 'FAILED',
          'timeout': 'TIMEOUT', 'crash': 'CRASH', 'not_fired': 'NOT-FIRED'}


def format_cell(counter, exp):
    if not counter:
        return '-'
    parts = [f'{n} {ABBREV.get(o, o)}' for o, n in sorted(counter.items(), key=lambda x: -x[1])]
    real = set(counter) - {'not_fired'}
    mark = '' if exp is None or real <= {exp} else ' !'
    return ' '.join(parts) + mark


def format_matrix(plans, write_paths, cells, cell=None):
    """The matrix as text lines: a row per write path, a column per plan;
    cell(write_path, plan) gives each cell's text (default: outcome counts)."""
    cell = cell or (lambda wp, p: format_cell(cells[(wp, p.name)], p.expected(wp)))
    head = ['write path'] + [p.name for p in plans]
    rows = [[wp] + [cell(wp, p) for p in plans] for wp in write_paths]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    fmt = lambda r: '  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip()   # noqa: E731
    return [fmt(head), fmt(['-' * w for w in widths])] + [fmt(r) for r in rows]


def expected_shape(plans, write_paths):
    """The expected matrix (the plans' [expect]) as text lines."""
    return format_matrix(plans, write_paths, None,
                         lambda wp, p: ABBREV.get(p.expected(wp), p.expected(wp) or '?'))


def write_reports(out, plans, write_paths, records, cells, wrong):
    """results.json (sorted, without wall_s: the same bytes whatever the job
    count), failures.txt (each run that found something, with its replay),
    matrix.txt."""
    recs = [dict((k, v) for k, v in records[key].items() if k != 'wall_s')
            for key in sorted(records)]
    stage = outfiles.new_stage(out)                 # the three files change as one set
    with open(os.path.join(stage, 'results.json'), 'w') as f:
        json.dump(recs, f, sort_keys=True, indent=1)
    with open(os.path.join(stage, 'failures.txt'), 'w') as f:
        for r in recs:
            if r['outcome'] != 'completed' or not r['ok']:
                tag = '' if r['ok'] else f'  [UNEXPECTED: the plan expects {r["expected"]}]'
                f.write(f'{r["key"]}: {r["outcome"]} ({", ".join(r["checkers"]) or "-"}){tag}\n'
                        f'    {r["replay"]}\n')
    with open(os.path.join(stage, 'matrix.txt'), 'w') as f:
        f.write('\n'.join(format_matrix(plans, write_paths, cells)) + '\n')
    outfiles.publish(out, stage, ['results.json', 'failures.txt', 'matrix.txt'])


# ---- progress -----------------------------------------------------------------------------------

class Progress:
    """A progress bar (rich, on a terminal) or a line every ~10%."""

    def __init__(self, stream=None, label='campaign'):
        self.stream = stream or sys.stderr
        self.label = label
        self.bar = None

    def start(self, total, done):
        self.total, self.done, self.t0, self.step = total, done, time.perf_counter(), max(total // 10, 1)
        if self.stream.isatty():
            try:
                from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RP,
                                           TextColumn, TimeRemainingColumn)
                self.bar = RP(TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
                              TimeRemainingColumn(), TextColumn('{task.description}'),
                              transient=True)
                self.bar.start()
                self.task = self.bar.add_task('', total=total, completed=done)
            except ImportError:
                self.bar = None
        if done:
            print(f'{self.label}: resuming, {done} of {total} runs already done', file=self.stream)

    def advance(self, rec):
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=f'{rec["key"]}: {rec["outcome"]}')
        elif self.done % self.step == 0 or self.done == self.total:
            print(f'{self.label}: {self.done}/{self.total} runs', file=self.stream, flush=True)

    def stop(self):
        if self.bar is not None:
            self.bar.stop()


# ---- kmaplab campaign ------------------------------------------------------------------------------

def cmd_campaign(args):
    args.out = args.out or options.out_dir('campaign')
    plans = campaign_plans(args.plans)
    wps = _write_paths(args.write_paths)
    if args.seeds < 1 or args.jobs < 1:
        raise ValueError('--seeds and --jobs must be at least 1')
    t0 = time.perf_counter()
    print(f'campaign: {len(plans)} plans x {len(wps)} write paths x {args.seeds} seeds, '
          f'{args.jobs} jobs ({args.backend}); results in {args.out}')
    print('  era: ' + ', '.join(f'{wp}: {" ".join(f"{k}={v}" for k, v in o.items())}'
                                for wp, o in ERA.items()))
    try:
        records = run_campaign(plans, wps, args.seeds, args.jobs, args.out, args.backend,
                               args.ray_address, Progress(), fresh=args.fresh)
    except KeyboardInterrupt:
        have = len(load_results(os.path.join(args.out, 'results.jsonl')))
        print(f'campaign: interrupted; {have} runs saved in {args.out}/results.jsonl: '
              f'run the same command again to resume', file=sys.stderr)
        return 130
    cells, wrong = matrix(plans, wps, records)
    write_reports(args.out, plans, wps, records, cells, wrong)
    print_campaign(plans, wps, records, cells, wrong, time.perf_counter() - t0, args)
    return 0 if not wrong else 1


def _write_paths(spec):
    if not spec:
        return list(DESIGNS)
    wps = [w.strip() for w in spec.split(',') if w.strip()]
    bad = [w for w in wps if w not in DESIGNS]
    if bad:
        raise ValueError(f'--write-paths: {bad[0]!r} is not a write path ({", ".join(DESIGNS)})')
    return wps


def print_campaign(plans, wps, records, cells, wrong, elapsed, args):
    print()
    print('outcomes (write path x plan; runs per outcome; "!" = not what the plan expects; '
          'NOT-FIRED = no fault of the plan fired: the run tested nothing):')
    for line in format_matrix(plans, wps, cells):
        print('  ' + line)
    print()
    print('expected shape (the plans\' [expect]):')
    for line in expected_shape(plans, wps):
        print('  ' + line)
    never = sorted({f'{r["plan"]}: {lab}' for r in records.values() for lab in r['never_fired']
                    if all(lab in r2['never_fired'] for r2 in records.values()
                           if r2['plan'] == r['plan'])})
    if never:
        print()
        print('injection points that never fired in any run (they tested nothing):')
        for n in never:
            print(f'  {n}')
    found = [r for r in records.values() if r['outcome'] != 'completed']
    busy = sum(r['wall_s'] for r in records.values())
    print()
    print(f'{len(records)} runs, {len(found)} found something (replay commands in '
          f'{args.out}/failures.txt); {len(records) / busy if busy else 0:.2f} runs/s per core, '
          f'{elapsed:.1f}s wall')
    if wrong:
        print(f'shape: {len(wrong)} cell(s) differ from the expected shape:')
        for wp, plan, exp in wrong:
            print(f'  {wp} x {plan}: {format_cell(cells[(wp, plan)], exp)} (expected {exp})')
    else:
        print('shape: as expected')


def add_parsers(sub):
    i = sub.add_parser('inject', help='run a scenario under a fault plan (docs/faults.md)')
    i.add_argument('scenario', metavar='SCENARIO',
                   help='a scenario name (kmaplab scenarios), a path to a .toml file, or a '
                        'workload of scenarios/plans/workloads/')
    i.add_argument('--plan', metavar='FILE', help='a fault plan (TOML); default: the scenario\'s own')
    i.add_argument('--seed', type=int, metavar='N',
                   help="the machine's seed (all randomness, faults included, comes from it)")
    i.add_argument('--cpus', type=int, metavar='N', help='the machine size (= --set cpus=N)')
    i.add_argument('--set', action='append', metavar='KEY=VALUE',
                   help='a boot option or machine key (repeatable), e.g. write_path=kmap')
    i.add_argument('--json', action='store_true',
                   help='one JSON line per variant (memory_sha256: the final guest RAM\'s hash)')
    c = sub.add_parser('campaign', help='seeds x fault plans x write paths, with the outcome matrix')
    c.add_argument('--seeds', type=int, default=DEFAULT_SEEDS, metavar='N',
                   help=f'seeds per cell (default {DEFAULT_SEEDS})')
    c.add_argument('--jobs', type=int, default=os.cpu_count() or 1, metavar='J',
                   help='worker processes (default: one per core)')
    c.add_argument('--plans', default=PLAN_DIR, metavar='DIR', help='the fault plans (default scenarios/plans)')
    c.add_argument('--out', default=None, metavar='DIR', help='results directory (default out/campaign)')
    c.add_argument('--write-paths', metavar='A,B,...', help='comma-separated (default: all six)')
    c.add_argument('--backend', choices=('pool', 'ray'), default='pool',
                   help='a local process pool, or Ray (same results, byte for byte)')
    c.add_argument('--ray-address', help='a Ray cluster (default: RAY_ADDRESS, else a local Ray)')
    c.add_argument('--fresh', action='store_true', help='forget earlier results in --out')
