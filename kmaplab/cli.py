"""kmaplab: the command line.

    kmaplab scenarios
    kmaplab run SCENARIO [--seed N] [--cpus N] [--set key=value ...] [--json] [--schedule F]
    kmaplab explore SCENARIO [--strategy random|pct|bounded] [--runs N] [--jobs J] [--all] ...
    kmaplab selftest
    kmaplab bench [--json]
    kmaplab trace SCENARIO [--format text|jsonl|perfetto|tenet] [--out F] [filters]
    kmaplab inject SCENARIO [--plan F] [--seed N] [--set key=value ...] [--json]
    kmaplab report [--out DIR] [--full] [--jobs J] [--scenarios a,b]
    kmaplab campaign [--seeds N] [--jobs J] [--plans DIR] [--out DIR] [--backend pool|ray]

Exit codes: 0 every variant met its expectation (or the command succeeded),
1 one did not, 2 bad input (a one-line reason on stderr, never a traceback).
"""
import argparse
import json
import sys

from vm.asm import AsmError

from . import explore
from . import inject
from . import report
from . import scenario as scn_mod
from . import trace
from .runner import run_variant


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _parse_set(items):
    out = {}
    for item in items or []:
        if '=' not in item:
            raise UsageError(f'--set {item!r}: expected key=value')
        k, v = item.split('=', 1)
        out[k.strip()] = _value(v.strip())
    return out


def _value(v):
    low = v.lower()
    if low in ('true', 'false'):
        return low == 'true'
    try:
        return int(v, 0)
    except ValueError:
        pass
    if v[-1:].upper() in 'KMG' and v[:-1].isdigit():
        return scn_mod.parse_size(v, '--set')
    return v


def cmd_scenarios(args):
    for name in scn_mod.list_names():
        s = scn_mod.find(name)
        print(f'{name:18} {s.description}')
    return 0


def _variants(s, args):
    overrides = _parse_set(args.set)
    if args.cpus is not None:
        overrides['cpus'] = args.cpus
    variants = s.variants()
    # an override of a swept key pins that axis
    pinned = [dict(v, **{k: overrides[k] for k in v if k in overrides}) for v in variants]
    seen, out = set(), []
    for v in pinned:
        key = json.dumps(v, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(v)
    for k in overrides:
        scn_mod._check_option('--set', '', k, overrides[k])
    return out, {k: v for k, v in overrides.items() if not any(k in v2 for v2 in variants)}


def cmd_run(args):
    if args.schedule:
        return explore.cmd_replay(args, _print_human)
    s = scn_mod.find(args.scenario)
    variants, overrides = _variants(s, args)
    all_ok = True
    for v in variants:
        r = run_variant(s, v, seed=args.seed, overrides=overrides)
        all_ok &= r['ok']
        if args.json:
            print(json.dumps({k: r[k] for k in ('scenario', 'seed', 'variant', 'outcome', 'expected',
                                                'ok', 'counters', 'wall_s')}, sort_keys=True))
        else:
            _print_human(r, first=v is variants[0])
    return 0 if all_ok else 1


def _print_human(r, first):
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
    keys = ('instructions', 'cycles', 'page_faults', 'context_switches', 'ipis_sent', 'invlpg')
    print('  ' + '  '.join(f'{k}={c.get(k, 0)}' for k in keys) + f'  wall={r["wall_s"]}s')


def cmd_selftest(args):
    from vm.selftest import run_all
    return 0 if run_all(print) else 1


def cmd_bench(args):
    from .bench import run_bench
    return run_bench(json_out=args.json)


def build_parser():
    p = _Parser(prog='kmaplab', description='a laboratory for the 2002 "scalable kmap" debate')
    sub = p.add_subparsers(dest='cmd', required=True, parser_class=_Parser)
    sub.add_parser('scenarios', help='list the scenarios')
    r = sub.add_parser('run', help='run a scenario (a name or a .toml path)')
    r.add_argument('scenario')
    r.add_argument('--seed', type=int)
    r.add_argument('--cpus', type=int)
    r.add_argument('--set', action='append', metavar='KEY=VALUE')
    r.add_argument('--json', action='store_true')
    r.add_argument('--schedule', metavar='F', help='replay a schedule file of kmaplab explore')
    sub.add_parser('selftest', help='check the emulated hardware properties the lab relies on')
    b = sub.add_parser('bench', help='speed against raw Unicorn')
    b.add_argument('--json', action='store_true')
    trace.add_parser(sub)
    inject.add_parsers(sub)
    report.add_parser(sub)
    explore.add_parser(sub)
    return p


COMMANDS = {'scenarios': cmd_scenarios, 'run': cmd_run, 'selftest': cmd_selftest, 'bench': cmd_bench,
            'trace': lambda args: trace.cmd_trace(args),
            'inject': lambda args: inject.cmd_inject(args, _variants),
            'campaign': lambda args: inject.cmd_campaign(args),
            'report': lambda args: report.cmd_report(args),
            'explore': lambda args: explore.cmd_explore(args, _variants, _value)}


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.cmd](args)
    except (UsageError, scn_mod.ScenarioError, ValueError, AsmError) as e:
        print(f'kmaplab: {e}', file=sys.stderr)
        return 2
    except OSError as e:
        print(f'kmaplab: {e.filename or ""}: {e.strerror}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('kmaplab: interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
