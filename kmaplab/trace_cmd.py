"""The `trace` subcommand (docs/tracing.md): arguments, sinks, the run."""
import os
import sys

from . import options
from . import scenario as scn_mod
from .trace import CATEGORIES, CATEGORY_EVENTS, Filters, Tracer, _open
from .trace_perfetto import PerfettoProtoSink, PerfettoSink
from .trace_tenet import TenetSink
from .trace_text import JsonlSink, TextSink

FORMATS = ('text', 'jsonl', 'perfetto', 'perfetto-json', 'tenet')


def make_sink(fmt, out, name):
    """The sink for --format and an output path (None: stdout); `name`
    names default files (tenet)."""
    if fmt not in FORMATS:
        raise ValueError(f'--format {fmt!r}: one of {", ".join(FORMATS)}')
    if fmt == 'tenet':
        return TenetSink(out or f'{name}.tenet')
    if fmt == 'perfetto':
        return PerfettoProtoSink(_open_binary(out) if out else sys.stdout.buffer)
    stream = _open(out) if out else sys.stdout
    return {'text': TextSink, 'jsonl': JsonlSink, 'perfetto-json': PerfettoSink}[fmt](stream)


def _open_binary(path):
    try:
        return open(path, 'wb')
    except OSError as e:
        raise ValueError(f'cannot write {path}: {e.strerror}') from None


# ---- the command ------------------------------------------------------------------------

def add_parser(sub):
    """The `trace` subcommand's arguments (kmaplab/cli.py)."""
    t = sub.add_parser('trace', help='trace a scenario instruction by instruction (docs/tracing.md)',
                       description='Trace one variant of a scenario (by default the first; '
                                   '--variant picks, --all-variants traces each) into a file under '
                                   'out/trace/ (--out FILE, or --out - for stdout).')
    t.add_argument('scenario', metavar='SCENARIO',
                   help='a scenario name (kmaplab scenarios) or a path to a .toml file')
    t.add_argument('--seed', type=int, metavar='N',
                   help="the machine's seed (all randomness comes from it; default: the scenario's)")
    t.add_argument('--cpus', type=int, metavar='N',
                   help='the machine size: how many CPUs it has (as in run; the filter is --cpu)')
    t.add_argument('--set', action='append', metavar='KEY=VALUE',
                   help='a boot option or machine key (repeatable); a swept key pins that axis')
    t.add_argument('--variant', metavar='KEY=VALUE,...',
                   help='trace the variants with these swept values (default: the first variant)')
    t.add_argument('--all-variants', action='store_true',
                   help='trace every selected variant, one file each')
    t.add_argument('--out', metavar='FILE',
                   help="output file ('-': stdout; tenet: the prefix of one file per task); "
                        "default out/trace/SCENARIO[-VARIANT].EXT")
    t.add_argument('--format', default='text', choices=FORMATS,
                   help='text (aligned lines), jsonl (one JSON object a line), perfetto (native '
                        'TrackEvent protobuf for ui.perfetto.dev), perfetto-json (the legacy JSON), '
                        'tenet (one file per task)')
    t.add_argument('--cpu', metavar='N,...',
                   help='a filter: show only these CPUs (the machine size is --cpus)')
    t.add_argument('--task', metavar='NAME,...', help='only these tasks (names, pids, globs)')
    t.add_argument('--symbols', metavar='NAME,...', help="only these routines (names or globs)")
    t.add_argument('--kernel', action='store_true', help='only kernel code (ring 0)')
    t.add_argument('--user', action='store_true', help='only user code (ring 3)')
    t.add_argument('--window', metavar='FROM:TO,...',
                   help='sequence numbers, or simulated cycles with a c suffix (1000c:9000c)')
    t.add_argument('--events', metavar='CAT,...',
                   help='what to trace, as QEMU -d: insn (instructions) and event categories '
                        f'({",".join(CATEGORIES)}); default: everything; --events help lists them')
    t.add_argument('--events-only', action='store_true',
                   help='kernel events only, no instructions (= every category but insn)')
    t.add_argument('--no-mem', action='store_true', help='do not record memory accesses')
    return t


EXT = {'text': '.txt', 'jsonl': '.jsonl', 'perfetto': '.pftrace', 'perfetto-json': '.json',
       'tenet': '.tenet'}


def default_path(s, variant, fmt, several):
    name = s.name
    if several and variant:
        name += '-' + '-'.join(f'{k}={v}' for k, v in variant.items())
    return options.out_dir('trace', name + EXT[fmt])


def _human_size(n):
    for unit in ('bytes', 'KB', 'MB', 'GB'):
        if n < 1024 or unit == 'GB':
            return f'{n:.0f} {unit}' if unit == 'bytes' else f'{n:.1f} {unit}'
        n /= 1024


def _file_stats(paths):
    """(lines, bytes) of the files written (lines: for text formats)."""
    lines = size = 0
    for p in paths:
        size += os.path.getsize(p)
        if not p.endswith('.pftrace'):
            with open(p, 'rb') as f:
                lines += sum(chunk.count(b'\n') for chunk in iter(lambda: f.read(1 << 20), b''))
    return lines, size


def cmd_trace(args):
    from .runner import run_variant
    if args.events and args.events.strip() == 'help':
        for cat, names in CATEGORY_EVENTS.items():
            print(f'{cat:8} {", ".join(names)}')
        print(f'{"insn":8} every traced instruction (registers changed, memory accesses)')
        return 0
    s = scn_mod.find(args.scenario)
    variants, overrides = options.variants_of(s, args)
    chosen = options.select(s, variants, args.variant)
    todo = chosen if args.all_variants else chosen[:1]
    to_stdout = args.out == '-'
    if to_stdout and len(todo) > 1:
        raise ValueError('--out -: one variant at a time on stdout (use --variant, or a file)')
    if args.out and not to_stdout and len(todo) > 1 and args.format != 'tenet':
        root, ext = os.path.splitext(args.out)
    filters = Filters.from_args(args)
    if len(variants) > 1:
        which = 'each of' if args.all_variants else 'the first of'
        print(f'kmaplab trace: {s.name}: tracing {which} {len(chosen)} selected variant(s) '
              f'({len(variants)} in the sweep; --variant k=v,... picks, --all-variants traces each)',
              file=sys.stderr)
    rc = 0
    for variant in todo:
        if to_stdout:
            out = None
        elif args.out and len(todo) == 1:
            out = args.out
        elif args.out:
            out = f'{root}-{options.label(variant, "-")}{ext}'
        else:
            out = default_path(s, variant, args.format, len(variants) > 1)
            os.makedirs(os.path.dirname(out), exist_ok=True)
        rc = max(rc, _trace_one(s, variant, overrides, args, filters, out, run_variant))
    return rc


def _trace_one(s, variant, overrides, args, filters, out, run_variant):
    sink = make_sink(args.format, out, s.name)
    meta = dict(scenario=s.name, variant=variant, seed=args.seed)
    tracer = Tracer(sink, filters, meta)
    result = None
    try:
        try:
            result = run_variant(s, variant, seed=args.seed, overrides=overrides, tracer=tracer)
        finally:
            summary = tracer.close(result)
            if getattr(sink, 'out', None) not in (None, sys.stdout, sys.stdout.buffer):
                sink.out.close()
    except BrokenPipeError:             # `kmaplab trace ... --out - | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    label = options.label(variant)
    if isinstance(sink, TenetSink):
        paths = list(sink.paths)
    else:
        paths = [out] if out else []
    where = ', '.join(paths) or ('stdout' if out is None and not isinstance(sink, TenetSink)
                                 else 'no file (no instruction traced)')
    size = ''
    if paths:
        lines, nbytes = _file_stats(paths)
        size = f' ({lines:,} lines, {_human_size(nbytes)})' if lines else f' ({_human_size(nbytes)})'
    print(f'kmaplab trace: {s.name} {label}: outcome {result["outcome"]} (expected {result["expected"]}); '
          f'{summary["instructions"]:,} instructions, {summary["events"]:,} events -> {where}{size}',
          file=sys.stderr)
    return 0 if result['ok'] else 1
