"""kmaplab report: every scenario, every variant; the findings of the lab.

What this file owns
  - Running all scenarios' variants on a process pool (results do not
    depend on the job count: each variant is a deterministic run), with a
    progress bar.
  - The findings table on the terminal, out/report.json (every result),
    out/report.md (each scenario's results beside what the 2002 thread
    claimed and the numbers of the time, from the scenario's [report]
    table), and PNG plots (global flushes and IPIs against CPUs per design;
    instructions per byte per design; reclaim scan cost).

Rules
  - Nothing is lost: results go to out/.partial/ as they come; the files in
    out/ are replaced only when the whole report is done, so an interrupted
    or failed report leaves the previous one intact.
  - Exit code 1 if any variant missed its scenario's expectation.
"""
import concurrent.futures as cf
import json
import os
import shutil
import sys
import time

from . import options
from . import scenario as scn_mod
from .runner import run_variant

ORDER = ('hello', 'kmap-scaling', 'sleep-in-atomic', 'dont-unmap', 'munmap-race', 'swapin-storm',
         'gup-pin', 'same-page-write', 'kmap-local', 'reclaim')
RESULT_KEYS = ('scenario', 'seed', 'variant', 'outcome', 'findings', 'expected', 'ok', 'why',
               'counters', 'wall_s')


def _job(path, variant, full):
    """One variant in a worker process: the JSON-able part of its result."""
    scn = scn_mod.load(path)
    r = run_variant(scn, variant)
    out = {k: r[k] for k in RESULT_KEYS}
    out['reports'] = report_reasons(r['reports'])
    out['console'] = r['console'][:20]
    return out


def report_reasons(reports, limit=20):
    """The kernel's reports that explain an outcome (BUG, Oops, deadlock
    with its wait-for graph, OOM, corruption ...): kind, message, graph."""
    return [{k: v for k, v in rep.items() if k in ('kind', 'message', 'graph')}
            for rep in reports if rep['kind'] not in ('fault', 'warning')][:limit]


def plan(names, full):
    """[(scenario, variant)] to run, in the mission's order of scenarios."""
    jobs = []
    for name in sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        scn = scn_mod.find(name)
        for v in scn.variants(full=full):
            jobs.append((scn, v))
    return jobs


def run_all(names=None, jobs=None, full=False, out_dir='out', progress=True):
    """Run the report; returns (results, wall seconds)."""
    names = names or [n for n in scn_mod.list_names()]
    todo = plan(names, full)
    partial = os.path.join(out_dir, '.partial')
    os.makedirs(partial, exist_ok=True)
    log = open(os.path.join(partial, 'results.jsonl'), 'w')
    t0 = time.perf_counter()
    results = [None] * len(todo)
    workers = jobs or os.cpu_count() or 1
    with _Progress(len(todo), progress) as bar, cf.ProcessPoolExecutor(workers) as pool:
        futs = {pool.submit(_job, scn.path, v, full): i for i, (scn, v) in enumerate(todo)}
        for fut in cf.as_completed(futs):
            i = futs[fut]
            r = fut.result()
            results[i] = r
            log.write(json.dumps(r, sort_keys=True) + '\n')
            log.flush()
            bar.advance(f'{r["scenario"]} {_label(r["variant"])}: {r["outcome"]}')
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
    """(scenario, variant, outcome, expected, ok, key counters) per result."""
    rows = []
    for r in results:
        scn = scn_mod.find(r['scenario'])
        keys = scn.report_keys or []
        counters = ', '.join(f'{k}={_fmt(r["counters"].get(k))}' for k in keys)
        rows.append((r['scenario'], _label(r['variant']), r['outcome'], r['expected'],
                     'ok' if r['ok'] else 'MISSED', counters))
    return rows


def _fmt(v):
    if isinstance(v, float):
        return f'{v:.3g}'
    return str(v)


def print_table(results, wall):
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f'kmaplab findings ({len(results)} runs, {wall:.0f} s)', show_lines=False)
    for col in ('scenario', 'variant', 'outcome', 'expected', '', 'key counters'):
        t.add_column(col, overflow='fold')
    for row in table_rows(results):
        t.add_row(*row)
    Console(width=200).print(t)
    missed = [r for r in results if not r['ok']]
    for r in missed:
        print(f'MISSED {r["scenario"]} {_label(r["variant"])}: {"; ".join(r["why"])}')


# ---- report.md ------------------------------------------------------------------

def markdown(results, wall):
    by = {}
    for r in sorted(results, key=lambda r: ORDER.index(r['scenario']) if r['scenario'] in ORDER
                    else len(ORDER)):
        by.setdefault(r['scenario'], []).append(r)
    ok = sum(r['ok'] for r in results)
    lines = ['# kmaplab findings', '',
             f'{len(results)} runs of {len(by)} scenarios, {ok} as expected; '
             f'{wall:.0f} s of wall time.', '',
             'Each scenario: what the 2002 thread claimed, the numbers of the time, '
             'and what this machine did (outcome and the counters that tell).  '
             'Regenerate with `make report`.', '',
             '| scenario | variant | outcome | expected | |', '|---|---|---|---|---|']
    lines += [f'| {sc} | {v} | {o} | {e} | {ok} |' for sc, v, o, e, ok, _ in table_rows(results)]
    lines.append('')
    for name, rs in by.items():
        scn = scn_mod.find(name)
        rep = scn.report
        lines += [f'## {name}', '', scn.description, '']
        if rep.get('claim'):
            lines += ['**The thread:** ' + rep['claim'].strip(), '']
        if rep.get('reference'):
            lines += ['**The numbers of the time:** ' + rep['reference'].strip(), '']
        keys = scn.report_keys or []
        lines.append('| ' + ' | '.join(['variant', 'outcome', 'expected'] + keys) + ' |')
        lines.append('|---' * (3 + len(keys)) + '|')
        for r in rs:
            cells = [_label(r['variant']), r['outcome'] + ('' if r['ok'] else ' **(missed)**'),
                     r['expected']] + [_fmt(r['counters'].get(k)) for k in keys]
            lines.append('| ' + ' | '.join(cells) + ' |')
        lines.append('')
        for derived in _derived(name, rs):
            lines.append(f'- {derived}')
        notable = [rep_ for r in rs for rep_ in r['reports']
                   if rep_['kind'] in ('deadlock', 'oom', 'corruption', 'no_progress')][:3]
        for n in notable:
            lines.append(f'- `{n["kind"]}`: {n["message"]}')
        lines.append('')
    return '\n'.join(lines)


def _derived(name, rs):
    """A few numbers computed across variants (ratios the thread argued about)."""
    out = []
    if name == 'kmap-scaling':
        for cpus in sorted({r['variant'].get('cpus') for r in rs}):
            f = {r['variant'].get('pkmap'): r['counters'].get('global_flushes', 0) for r in rs
                 if r['variant'].get('cpus') == cpus and r['variant'].get('write_path') == 'kmap'}
            if f.get(4096):
                out.append(f'{cpus} CPUs: global flushes with 1024 slots / with 4096 slots = '
                           f'{f.get(1024, 0)} / {f[4096]} = {f.get(1024, 0) / f[4096]:.1f}x')
    if name == 'gup-pin':
        c = {r['variant'].get('write_path'): r['counters'] for r in rs}
        if 'gup_pin' in c and 'atomic_fallback' in c and c['atomic_fallback'].get('cycles_per_byte'):
            ratio = c['gup_pin']['cycles_per_byte'] / c['atomic_fallback']['cycles_per_byte']
            out.append(f'gup_pin costs {ratio:.2f}x the cycles per byte of atomic_fallback')
    if name == 'reclaim':
        for r in rs:
            c = r['counters']
            if c.get('pages_reclaimed'):
                out.append(f'{_label(r["variant"])}: {c["pages_scanned"] / c["pages_reclaimed"]:.1f} '
                           f'pages scanned and {c["ptes_visited"] / c["pages_reclaimed"]:.0f} PTEs '
                           f'visited per page reclaimed')
    return out


# ---- plots ------------------------------------------------------------------------

def plots(results, out_dir):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    written = []
    ks = [r for r in results if r['scenario'] == 'kmap-scaling']
    if ks:
        written.append(_plot_flushes(plt, ks, out_dir))
        written.append(_plot_insns_per_byte(plt, results, out_dir))
    rc = [r for r in results if r['scenario'] == 'reclaim']
    if rc:
        written.append(_plot_reclaim(plt, rc, out_dir))
    return written


def _plot_flushes(plt, ks, out_dir):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (path, pool), style in _series(ks):
        pts = sorted((r['variant']['cpus'], r['counters']) for r in ks
                     if r['variant'].get('write_path') == path and r['variant'].get('pkmap') == pool)
        xs = [p[0] for p in pts]
        a1.plot(xs, [p[1].get('global_flushes', 0) for p in pts], style, label=f'{path}, {pool} slots')
        a2.plot(xs, [p[1].get('ipis_sent', 0) for p in pts], style, label=f'{path}, {pool} slots')
    for ax, title in ((a1, 'global TLB flushes (flush_tlb_all)'), (a2, 'IPIs sent')):
        ax.set_xscale('log', base=2)
        ax.set_xlabel('CPUs (each writes 4 MiB of new pages)')
        ax.set_title(title)
        ax.grid(alpha=0.3)
    a1.legend(fontsize=8)
    fig.suptitle('kmap-scaling: the cost of the pkmap pool')
    fig.tight_layout()
    path = os.path.join(out_dir, 'flushes_ipis.png')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _series(ks):
    combos = sorted({(r['variant'].get('write_path'), r['variant'].get('pkmap')) for r in ks})
    styles = ['o-', 's--', '^-', 'v--', 'd-', 'x--']
    return [(c, styles[i % len(styles)]) for i, c in enumerate(combos)]


def _plot_insns_per_byte(plt, results, out_dir):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ks = [r for r in results if r['scenario'] == 'kmap-scaling' and r['variant'].get('pkmap') == 1024]
    for path in sorted({r['variant'].get('write_path') for r in ks}):
        pts = sorted((r['variant']['cpus'], r['counters'].get('insns_per_byte', 0)) for r in ks
                     if r['variant'].get('write_path') == path)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], 'o-', label=path)
    for r, color in zip([r for r in results if r['scenario'] == 'gup-pin'], ('gray', 'black')):
        ax.axhline(r['counters'].get('insns_per_byte', 0), linestyle=':', linewidth=1, color=color,
                   label=f'gup-pin scenario, {r["variant"].get("write_path")} (1 CPU)')
    ax.set_xscale('log', base=2)
    ax.set_xlabel('CPUs')
    ax.set_ylabel('guest instructions per byte written')
    ax.set_title('instructions per byte, by write design (pool 1024)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out_dir, 'insns_per_byte.png')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_reclaim(plt, rc, out_dir):
    keys = [('pages_scanned', 'pages scanned'), ('ptes_visited', 'PTEs visited'),
            ('instructions', 'instructions (whole run)'),
            ('pte_chain_bytes_peak', 'pte_chain bytes (peak)')]
    fig, axes = plt.subplots(1, len(keys), figsize=(13, 3.8))
    names = [r['variant'].get('reclaim') for r in rc]
    for ax, (key, title) in zip(axes, keys):
        ax.bar(names, [r['counters'].get(key, 0) for r in rc], color=['#4477aa', '#cc6677'][:len(rc)])
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
    fig.suptitle('reclaim: 2.4 swap_out (virtual scan) vs 2.5 rmap (pte_chains), same pressure')
    fig.tight_layout()
    path = os.path.join(out_dir, 'reclaim.png')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- the command ------------------------------------------------------------------

def write_outputs(results, wall, out_dir):
    """Everything into out/.partial, then moved into out/ in one go."""
    partial = os.path.join(out_dir, '.partial')
    with open(os.path.join(partial, 'report.json'), 'w') as f:
        json.dump(dict(wall_s=round(wall, 1), results=results), f, indent=1, sort_keys=True)
    with open(os.path.join(partial, 'report.md'), 'w') as f:
        f.write(markdown(results, wall))
    pngs = plots(results, partial)
    for name in ['report.json', 'report.md'] + [os.path.basename(p) for p in pngs]:
        os.replace(os.path.join(partial, name), os.path.join(out_dir, name))
    shutil.rmtree(partial, ignore_errors=True)
    return [os.path.join(out_dir, n) for n in ['report.json', 'report.md']] + \
        [os.path.join(out_dir, os.path.basename(p)) for p in pngs]


def cmd_report(args):
    args.out = args.out or options.out_dir()
    names = args.scenarios.split(',') if args.scenarios else None
    if names:
        for n in names:
            scn_mod.find(n)                      # bad names: exit 2 before any work
    results, wall = run_all(names, jobs=args.jobs, full=args.full, out_dir=args.out)
    print_table(results, wall)
    files = write_outputs(results, wall, args.out)
    print(f'wrote {", ".join(files)}  ({wall:.0f} s)')
    return 0 if all(r['ok'] for r in results) else 1


def add_parser(sub):
    r = sub.add_parser('report', help='run every scenario: verdicts, findings table, JSON, plots, report.md')
    r.add_argument('--out', default=None, metavar='DIR', help='where to write (default out/)')
    r.add_argument('--full', action='store_true', help='the bigger sweeps and more seeds')
    r.add_argument('--jobs', type=int, metavar='J', help='worker processes (default: one per core)')
    r.add_argument('--scenarios', metavar='A,B,...', help='a comma-separated subset')
