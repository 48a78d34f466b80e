"""kmaplab report: every scenario, every variant; the findings of the lab.

What this file owns
  - Running all scenarios' variants on a process pool or on Ray
    (--backend ray; results depend on neither the backend nor the job
    count: each variant is a deterministic run), with a progress bar.
  - The host CPU seconds of each run (cpu_s), per scenario and in total.
  - Each variant runs with several seeds (SEEDS, FULL_SEEDS with --full):
    tables give the median and min..max.
  - The findings table and the verdicts on the terminal, out/report.json
    (top-level `verdicts`, kmaplab/verdicts.py, and every result with its
    memory time series), out/report.md (report_md.py: the verdicts first,
    then a section per scenario) and the PNG plots (report_plots.py).

Rules
  - Nothing is lost: results go to out/.partial/ as they come; the files in
    out/ are replaced only when the whole report is done, so an interrupted
    or failed report leaves the previous one intact.
  - Exit code 1 if any variant missed its scenario's expectation.
"""
import json
import os
import shutil
import sys
import time

from . import inject, options, outfiles, verdicts
from . import scenario as scn_mod
from .runner import run_variant

ORDER = ('hello', 'kmap-scaling', 'kernel-compile', 'dbench', 'sleep-in-atomic', 'dont-unmap', 'munmap-race', 'swapin-storm',
         'gup-pin', 'same-page-write', 'kmap-local', 'reclaim')
RESULT_KEYS = ('scenario', 'seed', 'variant', 'outcome', 'findings', 'expected', 'ok', 'why',
               'counters', 'series', 'wall_s', 'cpu_s')
SEEDS = 3              # seeds per variant in the default report (min/median/max)
FULL_SEEDS = 5         # with --full


def _job(j):
    """One variant and seed in a worker process (j: index, path, variant,
    seed, overrides): the JSON-able part of its result, with its index."""
    scn = scn_mod.load(j['path'])
    r = run_variant(scn, j['variant'], seed=j['seed'], overrides=j['overrides'])
    out = {k: r[k] for k in RESULT_KEYS}
    out['index'] = j['index']
    out['schedule'] = r['kernel'].config.get('schedule')
    out['reports'] = report_reasons(r['reports'])
    out['console'] = r['console'][:20]
    return out


def report_reasons(reports, limit=20):
    """The kernel's reports that explain an outcome (BUG, Oops, deadlock
    with its wait-for graph, OOM, corruption ...): kind, message, graph."""
    return [{k: v for k, v in rep.items() if k in ('kind', 'message', 'graph')}
            for rep in reports if rep['kind'] not in ('fault', 'warning')][:limit]


def plan(names, full, seeds=1):
    """[(scenario, variant, seed, overrides)] to run, in the mission's order
    of scenarios.  seeds: runs per variant.  The first is the scenario as
    written (its seed, its interleaving: round robin unless it says); the
    others use the next seeds with the seeded random interleaving
    (schedule=random: which CPU runs next and for how long come from the
    machine's generator), so min..max is the spread over interleavings.
    With round robin the seed changes nothing, so rr seeds would repeat."""
    jobs = []
    for name in sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        scn = scn_mod.find(name)
        base = scn.options({}).get('seed', 0)
        for v in scn.variants(full=full):
            own = scn.options(v).get('schedule')
            for i in range(seeds):
                over = {} if i == 0 or own is not None else {'schedule': 'random'}
                jobs.append((scn, v, base + i, over))
    return jobs


def _available(name):
    """False (with a note) for a scenario whose host files this machine
    lacks (busybox without root/dpkg: build/busybox/STATUS says why)."""
    try:
        scn_mod.find(name)
    except scn_mod.MissingFile as e:
        print(f'report: leaving out {name}: {e}')
        return False
    return True


def run_all(names=None, jobs=None, full=False, out_dir='out', progress=True, seeds=None,
            backend='pool', address=None):
    """Run the report on a process pool or on Ray (backend 'ray': a local
    Ray, or `address` / RAY_ADDRESS); returns (results, wall seconds).
    The results are in plan order whatever the backend and job count."""
    names = names or [n for n in scn_mod.list_names() if _available(n)]
    seeds = seeds or (FULL_SEEDS if full else SEEDS)
    todo = plan(names, full, seeds)
    partial = os.path.join(out_dir, '.partial')
    os.makedirs(partial, exist_ok=True)
    log = open(os.path.join(partial, 'results.jsonl'), 'w')
    t0 = time.perf_counter()
    results = [None] * len(todo)
    workers = jobs or os.cpu_count() or 1
    work = [dict(index=i, path=scn.path, variant=v, seed=seed, overrides=over)
            for i, (scn, v, seed, over) in enumerate(todo)]
    with _Progress(len(todo), progress) as bar:
        runs = inject.execute(work, workers, backend, address, _job)
        try:
            for r in runs:
                results[r.pop('index')] = r
                log.write(json.dumps(r, sort_keys=True) + '\n')
                log.flush()
                bar.advance(f'{r["scenario"]} {_label(r["variant"])} seed {r["seed"]}: {r["outcome"]}')
        finally:
            runs.close()
    log.close()
    return results, time.perf_counter() - t0


class _Progress:
    def __init__(self, total, enabled):
        self.total, self.enabled, self.done = total, enabled and sys.stderr.isatty(), 0
        self._rich = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import Progress
            self._rich = Progress(transient=True)
            self._rich.__enter__()
            self._task = self._rich.add_task('kmaplab report', total=self.total)
        return self

    def advance(self, text):
        self.done += 1
        if self._rich is not None:
            self._rich.update(self._task, advance=1, description=text[:60])
        else:
            print(f'[{self.done}/{self.total}] {text}', file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._rich is not None:
            self._rich.__exit__(*exc)


def _label(variant):
    return ' '.join(f'{k}={v}' for k, v in variant.items()) or '(default)'


# ---- the findings table -----------------------------------------------------

def table_rows(results):
    """(scenario, variant, outcomes over seeds, expected, ok, key counters
    as medians) per variant."""
    from .report_md import group, outcome_cell, stat_cell
    rows = []
    for (name, _), rs in group(results).items():
        scn = scn_mod.find(name)
        keys = scn.report_keys or []
        counters = ', '.join(f'{k}={stat_cell(rs, k)}' for k in keys)
        rows.append((name, _label(rs[0]['variant']), outcome_cell(rs).replace('**', ''), rs[0]['expected'],
                     'ok' if all(r['ok'] for r in rs) else 'MISSED', counters))
    return rows


def print_table(results, wall, verdicts=()):
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f'kmaplab findings ({len(results)} runs, {wall:.0f} s)', show_lines=False)
    for col in ('scenario', 'variant', 'outcome', 'expected', '', 'key counters (median over seeds)'):
        t.add_column(col, overflow='fold')
    for row in table_rows(results):
        t.add_row(*row)
    console = Console(width=200)
    console.print(t)
    if verdicts:
        v = Table(title='verdicts on the thread\'s claims (out/report.md explains each)')
        for col in ('claim', 'the thread', 'ours', 'verdict'):
            v.add_column(col, overflow='fold')
        for x in verdicts:
            v.add_row(x['claim'], x['thread'], x['lab'], x['verdict'])
        console.print(v)
    print(cpu_summary(results))
    missed = [r for r in results if not r['ok']]
    for r in missed:
        print(f'MISSED {r["scenario"]} {_label(r["variant"])} seed {r["seed"]}: {"; ".join(r["why"])}')


def cpu_seconds(results):
    """{scenario: host CPU seconds of its runs} (in the order run) and the
    total: what the report costs, whatever the load and job count."""
    by = {}
    for r in results:
        by[r['scenario']] = by.get(r['scenario'], 0.0) + r.get('cpu_s', 0.0)
    return by, sum(by.values())


def cpu_summary(results):
    by, total = cpu_seconds(results)
    parts = ', '.join(f'{name} {s:.1f}' for name, s in by.items())
    return f'CPU seconds: {parts}; total {total:.1f} CPU-s for {len(results)} runs'


# ---- the command ------------------------------------------------------------------

def write_outputs(results, wall, out_dir, verdict_list=None):
    """Everything into a new hidden set directory, then made the current
    set of out/ in one step (kmaplab/outfiles.py): a kill at any moment
    leaves the previous report.json, report.md and plots whole."""
    from .report_md import markdown
    from .report_plots import plots
    stage = outfiles.new_stage(out_dir)
    verdict_list = verdict_list if verdict_list is not None else verdicts.verdicts(results)
    with open(os.path.join(stage, 'report.json'), 'w') as f:
        json.dump(dict(wall_s=round(wall, 1), verdicts=verdict_list, results=results), f, indent=1,
                  sort_keys=True)
    figures = plots(results, stage, verdict_list)
    with open(os.path.join(stage, 'report.md'), 'w') as f:
        f.write(markdown(results, verdict_list, wall, figures, cpu_s=cpu_seconds(results)[1]))
    pngs = [os.path.basename(name) for figs in figures.values() for name, _ in figs]
    files = outfiles.publish(out_dir, stage, ['report.json', 'report.md'] + pngs)
    shutil.rmtree(os.path.join(out_dir, '.partial'), ignore_errors=True)
    return files


def cmd_report(args):
    args.out = args.out or options.out_dir()
    if args.seeds is not None and args.seeds < 1:
        raise ValueError('--seeds must be at least 1')
    names = args.scenarios.split(',') if args.scenarios else None
    if names:
        for n in names:
            scn_mod.find(n)                      # bad names: exit 2 before any work
    results, wall = run_all(names, jobs=args.jobs, full=args.full, out_dir=args.out, seeds=args.seeds,
                            backend=args.backend, address=args.ray_address)
    verdict_list = verdicts.verdicts(results)
    print_table(results, wall, verdict_list)
    files = write_outputs(results, wall, args.out, verdict_list)
    print(f'wrote {", ".join(files)}  ({wall:.0f} s, {cpu_seconds(results)[1]:.1f} CPU-s)')
    return 0 if all(r['ok'] for r in results) else 1


def add_parser(sub):
    r = sub.add_parser('report', help='run every scenario: verdicts, findings table, JSON, plots, report.md')
    r.add_argument('--out', default=None, metavar='DIR', help='where to write (default out/)')
    r.add_argument('--full', action='store_true', help='the bigger sweeps and more seeds')
    r.add_argument('--jobs', type=int, metavar='J', help='worker processes (default: one per core)')
    r.add_argument('--scenarios', metavar='A,B,...', help='a comma-separated subset')
    r.add_argument('--seeds', type=int, metavar='N',
                   help=f'seeds per variant (default {SEEDS}, {FULL_SEEDS} with --full)')
    r.add_argument('--backend', choices=('pool', 'ray'), default='pool',
                   help='where the runs go: a process pool, or Ray (the same results)')
    r.add_argument('--ray-address', metavar='ADDRESS',
                   help='a Ray cluster (default: RAY_ADDRESS, else a local Ray)')
