"""kmaplab: the command line.

    kmaplab scenarios
    kmaplab new NAME [--dir D]
    kmaplab run SCENARIO [--seed N] [--cpus N] [--set key=value ...] [--variant k=v,...] [--json]
                [--schedule F]
    kmaplab run SCENARIO --gdb [HOST:]PORT [--variant k=v,...]   (docs/debugging.md)
    kmaplab image [SCENARIO] --out DIR [--variant k=v,...]
    kmaplab explore SCENARIO [--strategy random|pct|bounded] [--runs N] [--jobs J] [--all] ...
    kmaplab selftest
    kmaplab bench [--json]
    kmaplab trace SCENARIO [--format text|jsonl|perfetto|tenet] [--out F] [--events CAT,...] [filters]
    kmaplab inject SCENARIO [--plan F] [--seed N] [--set key=value ...] [--json]
    kmaplab report [--out DIR] [--full] [--jobs J] [--scenarios a,b]
    kmaplab campaign [--seeds N] [--jobs J] [--plans DIR] [--out DIR] [--backend pool|ray]

Exit codes: 0 every variant met its expectation (or the command succeeded),
1 one did not, 2 bad input (a one-line reason on stderr, never a traceback).
"""
import argparse
import json
import os
import sys
from importlib import metadata

from vm.asm import AsmError

from . import explore
from . import image
from . import inject
from . import options
from . import report
from . import scenario as scn_mod
from . import runner
from . import trace_cmd
from .options import UsageError
from .runner import run_variant, sensitivity_lines


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


# The shared helpers under their old names (explore and inject take them as arguments).
_value = options.value
_variants = options.variants_of


def version():
    try:
        v = metadata.version('kmaplab')
    except metadata.PackageNotFoundError:
        v = 'unknown'
    import unicorn
    return f'kmaplab {v} (unicorn {unicorn.__version__}, Python {sys.version.split()[0]})'


SCENARIO_DIRS = (('', 'the scenarios of the report (kmaplab run NAME)'),
                 ('explore', 'scenarios for kmaplab explore (correct behaviour expected; '
                             'run or explore them by path)'))


def cmd_scenarios(args):
    """Every runnable scenario directory: the report's (by name), then
    scenarios/explore/ (by path)."""
    for sub, what in SCENARIO_DIRS:
        d = os.path.join(scn_mod.SCENARIO_DIR, sub)
        files = sorted(f for f in os.listdir(d) if f.endswith('.toml'))
        rel = os.path.relpath(d, os.getcwd())
        print(f'# {rel if sub else "scenarios"}/: {what}')
        for f in files:
            s = scn_mod.load(os.path.join(d, f))
            label = f[:-5] if not sub else os.path.join(rel, f)
            print(f'{label:18} {s.description}' if not sub else f'{label}\n{"":18} {s.description}')
        print()
    print('# scenarios/plans/: fault plans (kmaplab inject SCENARIO --plan F); '
          'scenarios/schedules/: recorded schedules (kmaplab run SCENARIO --schedule F)')
    return 0


def cmd_new(args):
    from .templates import write_new
    paths = write_new(args.name, args.dir)
    for p in paths:
        print(f'wrote {p}')
    print(f'run it: kmaplab run {paths[0]}')
    return 0


def cmd_run(args):
    if args.schedule and args.gdb is not None:
        raise UsageError('--gdb and --schedule: one at a time (a replayed schedule is not served to gdb)')
    if args.schedule:
        return explore.cmd_replay(args, _print_human)
    s = scn_mod.find(args.scenario)
    if args.gdb is not None:
        return _run_gdb(s, args)
    variants, overrides = options.variants_of(s, args)
    variants = options.select(s, variants, args.variant)
    all_ok = True
    for v in variants:
        r = run_variant(s, v, seed=args.seed, overrides=overrides)
        all_ok &= r['ok']
        if args.json:
            print(json.dumps(json_record(r), sort_keys=True))
        else:
            _print_human(r, first=v is variants[0], keys=s.report_keys)
    return 0 if all_ok else 1


def json_record(r):
    """One --json line: the result with the reasons, as report.json has
    them (why: the failed parts of the expectation; findings; reports: the
    kernel's BUG/Oops/deadlock/OOM texts with a deadlock's wait-for cycle)."""
    out = {k: r[k] for k in ('scenario', 'seed', 'variant', 'outcome', 'findings', 'expected',
                             'ok', 'why', 'counters', 'wall_s')}
    out['output'] = r.get('output', {})       # each task's console output, bounded
    out['reports'] = report.report_reasons(r['reports'])
    out.update(runner.memory_hash(r))
    return out


def one_variant(s, args):
    """(variant, overrides) for a command that runs or builds one variant
    (run --gdb, image): --variant must leave exactly one."""
    variants, overrides = options.variants_of(s, args)
    variants = options.select(s, variants, args.variant)
    if len(variants) > 1:
        listed = ' | '.join(options.label(v, ',') for v in variants[:12])
        raise UsageError(f'{s.name} has {len(variants)} variants; choose one with --variant '
                         f'KEY=VALUE,... ({listed})')
    return variants[0], overrides


def _run_gdb(s, args):
    from . import gdb
    address = gdb.parse_address(args.gdb)
    variant, overrides = one_variant(s, args)
    if args.gdb_timeout is not None and args.gdb_timeout <= 0:
        raise UsageError('--gdb-timeout must be positive')
    try:
        r = gdb.run_gdb(s, variant, args.seed, overrides, address, timeout=args.gdb_timeout,
                        elf_dir=args.gdb_elf)
    except gdb.GdbError as e:
        raise UsageError(f'gdb: {e}') from None
    if args.json:
        print(json.dumps(json_record(r), sort_keys=True))
    else:
        _print_human(r, first=True)
    return 0 if r['ok'] else 1


def _print_human(r, first, keys=()):
    """A result for people: boot log (first), console, reports, outcome,
    the basic counters, the scenario's [report] counters (`keys`) and the
    kmap calls by caller (Bligh's profile: kmap_high_calls.CALLER)."""
    if first:
        print('\n'.join(r['boot_log']))
    print()
    label = ' '.join(f'{k}={v}' for k, v in r['variant'].items()) or '(default)'
    print(f'== {r["scenario"]} {label} seed={r["seed"]}')
    for name, cpu, line in r['console']:
        print(f'[{name}@cpu{cpu}] {line}')
    for rep in r['reports']:
        print(f'  {rep["kind"]}: {rep["message"]}')
        for g in rep.get('graph', []):
            print(f'      {g}')
    verdict = 'ok' if r['ok'] else 'NOT AS EXPECTED: ' + '; '.join(r['why'])
    print(f'outcome: {r["outcome"]} (expected {r["expected"]}) -> {verdict}')
    c = r['counters']
    basic = ('instructions', 'cycles', 'page_faults', 'context_switches', 'ipis_sent', 'invlpg')
    print('  ' + '  '.join(f'{k}={c.get(k, 0)}' for k in basic) + f'  wall={r["wall_s"]}s')
    if 'tlb_misses' in c:          # tlb=p3: the modelled TLB's counts
        print('  ' + '  '.join(f'{k}={c[k]}' for k in ('tlb_misses', 'itlb_misses_kernel',
              'itlb_misses_user', 'dtlb_misses_kernel', 'dtlb_misses_user', 'tlb_pge_flushes',
              'tlb_global_refills') + tuple(k for k in ('line_transfers',) if k in c)))
    for line in sensitivity_lines(c):
        print('  ' + line)
    more = [k for k in keys if k not in basic and k in c and '.' not in k]
    if more:
        print('  ' + '  '.join(f'{k}={c[k]}' for k in more))
    for prefix in ('kmap_high_calls', 'kmap_atomic_calls'):
        callers = sorted(((k.split('.', 1)[1], v) for k, v in c.items()
                          if k.startswith(prefix + '.') and v), key=lambda x: (-x[1], x[0]))
        if callers:
            print(f'  {prefix} by caller: ' + ', '.join(f'{n} {v}' for n, v in callers))


def cmd_selftest(args):
    from vm.selftest import run_all
    return 0 if run_all(print) else 1


def cmd_bench(args):
    from .bench import run_bench
    return run_bench(json_out=args.json)


def build_parser():
    p = _Parser(prog='kmaplab', description='a laboratory for the 2002 "scalable kmap" debate',
                epilog='exit codes: 0 every variant met its expectation (or the command succeeded), '
                       '1 one did not, 2 bad input')
    p.add_argument('--version', action='version', version=version(),
                   help='the kmaplab, Unicorn and Python versions')
    sub = p.add_subparsers(dest='cmd', required=True, parser_class=_Parser, metavar='COMMAND')
    sub.add_parser('scenarios', help='list every runnable scenario (scenarios/, scenarios/explore/)')
    r = sub.add_parser('run', help='run a scenario\'s variants and judge each against its expectation')
    r.add_argument('scenario', metavar='SCENARIO',
                   help='a scenario name (kmaplab scenarios) or a path to a .toml file')
    r.add_argument('--seed', type=int, metavar='N',
                   help="the machine's seed (all randomness comes from it; default: the scenario's)")
    r.add_argument('--cpus', type=int, metavar='N',
                   help='the machine size: how many CPUs it has (= --set cpus=N)')
    r.add_argument('--set', action='append', metavar='KEY=VALUE',
                   help='a boot option or machine key, e.g. write_path=kmap or pkmap=4096 '
                        '(repeatable); a swept key pins that axis')
    r.add_argument('--variant', metavar='KEY=VALUE,...',
                   help='run only the variants with these swept values, e.g. write_path=kmap,cpus=4')
    r.add_argument('--json', action='store_true',
                   help='one JSON line per variant: outcome, reasons (why, reports), counters, '
                        'memory_sha256 (the final guest RAM: equal for equal seeds)')
    r.add_argument('--schedule', metavar='FILE', help='replay a schedule file of kmaplab explore')
    r.add_argument('--gdb', metavar='[HOST:]PORT',
                   help='serve gdb on this port (0: any free one) and wait for it before the '
                        'first guest instruction; one variant (docs/debugging.md)')
    r.add_argument('--gdb-timeout', type=float, metavar='SECONDS',
                   help='with --gdb: give up when gdb has not connected or spoken for SECONDS '
                        '(default: wait)')
    r.add_argument('--gdb-elf', metavar='DIR', default=None,
                   help='with --gdb: where to write the ELF files gdb loads (default out/gdb)')
    sub.add_parser('selftest', help='check the emulated hardware properties the lab relies on')
    b = sub.add_parser('bench', help='speed against raw Unicorn')
    b.add_argument('--json', action='store_true', help='one JSON object instead of the table')
    n = sub.add_parser('new', help='write NAME.toml and NAME.S: a commented scenario and a user '
                                   'program to start from')
    n.add_argument('name', metavar='NAME', help='the scenario and program name')
    n.add_argument('--dir', default='.', help='where to write them (default: here)')
    trace_cmd.add_parser(sub)
    image.add_parser(sub)
    inject.add_parsers(sub)
    report.add_parser(sub)
    explore.add_parser(sub)
    for name in ('run', 'trace', 'inject', 'campaign', 'report', 'explore'):
        sub.choices[name].add_argument(
            '--timeout', type=float, metavar='SECONDS',
            help=f'host wall-clock budget per variant (default {runner.DEFAULT_TIMEOUT:g}; 0: none); '
                 'a variant past it ends with outcome timeout')
    return p


COMMANDS = {'scenarios': cmd_scenarios, 'run': cmd_run, 'selftest': cmd_selftest, 'bench': cmd_bench,
            'new': cmd_new, 'trace': lambda args: trace_cmd.cmd_trace(args),
            'image': lambda args: image.cmd_image(args, one_variant),
            'inject': lambda args: inject.cmd_inject(args, _variants),
            'campaign': lambda args: inject.cmd_campaign(args),
            'report': lambda args: report.cmd_report(args),
            'explore': lambda args: explore.cmd_explore(args, _variants, _value)}


def main(argv=None):
    saved = os.environ.get('KMAPLAB_TIMEOUT')
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, 'timeout', None) is not None:
            if not 0 <= args.timeout <= 10 ** 7:
                raise UsageError(f'--timeout {args.timeout:g}: seconds from 0 (none) to 10^7')
            os.environ['KMAPLAB_TIMEOUT'] = repr(args.timeout)    # pool workers inherit it
        return COMMANDS[args.cmd](args)
    except (scn_mod.ScenarioError, ValueError, AsmError) as e:
        print(f'kmaplab: {e}', file=sys.stderr)
        return 2
    except OSError as e:
        name = e.filename if e.filename not in (None, '') else '(empty file name)'
        print(f'kmaplab: {name}: {e.strerror or e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('kmaplab: interrupted', file=sys.stderr)
        return 130
    finally:
        if saved is None:
            os.environ.pop('KMAPLAB_TIMEOUT', None)
        else:
            os.environ['KMAPLAB_TIMEOUT'] = saved


if __name__ == '__main__':
    sys.exit(main())
