"""out/report.md: the verdicts first, then one section per scenario.

What this file owns
  - markdown(results, verdicts, wall, plots): the report's text.
      1. The verdicts table (kmaplab/verdicts.py): claim, source, the
         thread's number, ours, verdict, why, the command that reproduces it.
      2. Per scenario: what the thread claimed and the numbers of the time,
         its verdicts, its plots embedded, then its results: one row per
         variant over all seeds (outcomes; each counter as median with
         min..max), measured counters and modelled ones (anything computed
         from costs.py unit costs: cycles, cycles per byte) in separate
         tables, and a reproduce and a trace command per row.
  - group(results): {(scenario, variant key): [results of each seed]}.

Nothing here decides an outcome or a verdict: it formats what the run and
verdicts.py produced.
"""
import collections
import json
import statistics

from . import scenario as scn_mod

MODELLED_KEYS = ('cycles', 'cycles_per_byte')


def is_modelled(key):
    """Counters derived from the cost model's unit costs (costs.py), not counted."""
    return key in MODELLED_KEYS or 'cycles' in key


def label(variant):
    return ' '.join(f'{k}={v}' for k, v in variant.items()) or '(default)'


def group(results):
    out = collections.OrderedDict()
    for r in results:
        out.setdefault((r['scenario'], json.dumps(r['variant'], sort_keys=True)), []).append(r)
    return out


def fmt_num(v):
    if isinstance(v, float) and not v.is_integer():
        return f'{v:.3g}' if abs(v) < 1000 else f'{v:,.0f}'
    return f'{int(v):,}'


def stat_cell(rs, key):
    vals = sorted(r['counters'].get(key, 0) for r in rs)
    if not vals:
        return ''
    m = statistics.median(vals)
    if vals[0] == vals[-1]:
        return fmt_num(m)
    return f'{fmt_num(m)} ({fmt_num(vals[0])}..{fmt_num(vals[-1])})'


def outcome_cell(rs):
    c = collections.Counter(r['outcome'] for r in rs)
    text = ', '.join(f'{o}' + (f' x{n}' if len(rs) > 1 else '') for o, n in c.most_common())
    missed = [r for r in rs if not r['ok']]
    if missed:
        text += f' **(missed on seed {", ".join(str(r["seed"]) for r in missed)})**'
    return text


def commands(scenario, variant, seed):
    v = ','.join(f'{k}={x}' for k, x in variant.items())
    sel = f' --variant {v}' if v else ''
    return (f'`kmaplab run {scenario}{sel} --seed {seed}`',
            f'`kmaplab trace {scenario}{sel} --seed {seed} --events-only`')


def _esc(text):
    return str(text).replace('|', '\\|').replace('\n', ' ')


def verdict_table(verdicts):
    lines = ['| claim | source | the thread | ours | verdict | why | reproduce |',
             '|---|---|---|---|---|---|---|']
    for v in verdicts:
        ours = v['lab'] + (' *(modelled)*' if v.get('modelled') else '')
        cmd = f'`{v["reproduce"]}`' if v.get('reproduce') else '-'
        lines.append('| ' + ' | '.join(_esc(x) for x in (
            v['claim'], v['source'], v['thread'], ours, f'**{v["verdict"]}**', v['why'], cmd)) + ' |')
    return lines


def markdown(results, verdicts, wall, plots=None, seeds=None, cpu_s=None):
    """plots: {scenario: [(png file name, caption)]}."""
    plots = plots or {}
    groups = group(results)
    by_scn = collections.OrderedDict()
    for (name, _), rs in groups.items():
        by_scn.setdefault(name, []).append(rs)
    ok = sum(r['ok'] for r in results)
    counts = collections.Counter(v['verdict'] for v in verdicts)
    nseeds = seeds or max((len(rs) for rs in groups.values()), default=1)
    lines = ['# kmaplab: the 2002 "scalable kmap" thread, claim by claim', '',
             f'{len(groups)} variants of {len(by_scn)} scenarios, {nseeds} run(s) each '
             f'({len(results)} runs, {ok} met their scenario\'s expectation); {wall:.0f} s of wall time'
             + (f', {cpu_s:.0f} CPU-s.  ' if cpu_s is not None else '.  ') +
             'Regenerate with `make report` (`kmaplab report --full`: bigger sweeps, more seeds).', '',
             'Each variant\'s first run is the scenario as written (its seed, round-robin interleaving); '
             'the others take the next seeds with the seeded random interleaving (`--set schedule=random '
             '--seed N`: which CPU runs next and for how long come from the machine\'s generator).  '
             'Tables give the median over the runs and min..max where they differ: the spread over '
             'interleavings.', '',
             '## Verdicts', '',
             'One row per claim of the thread, judged by a rule on the numbers this run produced '
             '(kmaplab/verdicts.py): **reproduced** (direction and order of magnitude match), '
             '**partly** (the direction matches, the size or a part does not), **not reproduced**, '
             '**outside the model** (no workload or mechanism for it yet).  *Modelled* marks numbers '
             'that rest on the cost model\'s unit costs (minikernel/costs.py) rather than on counts.', '',
             'Summary: ' + ', '.join(f'{counts[v]} {v}' for v in ('reproduced', 'partly', 'not reproduced',
                                                                    'outside the model') if counts[v]), '']
    lines += verdict_table(verdicts)
    lines.append('')
    for name, variant_groups in by_scn.items():
        lines += _section(name, variant_groups, [v for v in verdicts if v['scenario'] == name],
                          plots.get(name, []))
    return '\n'.join(lines) + '\n'


def _section(name, variant_groups, verdicts, plots):
    scn = scn_mod.find(name)
    rep = scn.report
    out = [f'## {name}', '', scn.description, '']
    if rep.get('claim'):
        out += ['**The thread:** ' + rep['claim'].strip(), '']
    if rep.get('reference'):
        out += ['**The numbers of the time:** ' + rep['reference'].strip(), '']
    for v in verdicts:
        out += [f'**Verdict: {v["verdict"]}** ({v["claim"]}): {v["lab"]}. {v["why"]}', '']
    for png, caption in plots:
        out += [f'![{caption}]({png})', '']
    keys = list(scn.report_keys or [])
    measured = [k for k in keys if not is_modelled(k)]
    modelled = [k for k in keys if is_modelled(k)]
    for k in MODELLED_KEYS:
        if k not in modelled:
            modelled.append(k)
    head = ['variant', 'outcome (expected)'] + measured + ['reproduce / trace']
    out += ['Measured (counts of what the machine did; median over the runs, min..max where they differ):', '',
            '| ' + ' | '.join(head) + ' |', '|---' * len(head) + '|']
    for rs in variant_groups:
        r0 = rs[0]
        run, trace = commands(name, r0['variant'], r0['seed'])
        cells = [label(r0['variant']), f'{outcome_cell(rs)} ({r0["expected"]})'] + \
            [stat_cell(rs, k) for k in measured] + [f'{run}<br>{trace}']
        out.append('| ' + ' | '.join(_esc(c) if '`' not in c else c for c in cells) + ' |')
    out += ['', 'Modelled (simulated time from the cost model\'s unit costs, not counts):', '',
            '| ' + ' | '.join(['variant'] + modelled) + ' |', '|---' * (1 + len(modelled)) + '|']
    for rs in variant_groups:
        out.append('| ' + ' | '.join([label(rs[0]['variant'])] + [stat_cell(rs, k) for k in modelled]) + ' |')
    out.append('')
    notable = [rep_ for rs in variant_groups for r in rs[:1] for rep_ in r.get('reports', [])
               if rep_['kind'] in ('deadlock', 'oom', 'corruption', 'no_progress', 'bug')][:3]
    for n in notable:
        out.append(f'- `{n["kind"]}`: {_esc(n["message"])}')
    out.append('')
    return out
