"""Command-line values shared by the subcommands: --set, --cpus, --variant.

What this file owns
  - value(text): a --set/--variant value as the scenario files spell it
    (true/false, integers in any base, sizes 4K/96M/1G, else the string).
  - variants_of(scenario, args): the variants to run after --set/--cpus
    (an override of a swept key pins that axis) and the overrides left.
  - select(scenario, variants, spec): the variants --variant k=v,... picks.
  - out_dir(): where commands put files by default (out/, or $KMAPLAB_OUT:
    the test suite points it at a temporary directory).

Imports point down only: cli, trace_cmd, explore, inject import this file;
it imports nothing of kmaplab but scenario.py (no import circle).
"""
import json
import os

from minikernel.kernel import BOOT_OPTIONS, DESIGNS

from . import scenario as scn_mod


class UsageError(ValueError):
    """A bad command line: str() is the one-line reason (exit code 2)."""


def out_dir(*parts):
    """The default output directory (out/ in the current directory, or
    $KMAPLAB_OUT), joined with parts."""
    return os.path.join(os.environ.get('KMAPLAB_OUT') or 'out', *parts)


def value(v):
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


def parse_set(items, flag='--set'):
    """['k=v', ...] -> {k: value(v)}."""
    out = {}
    for item in items or []:
        if '=' not in item:
            raise UsageError(f'{flag} {item!r}: expected key=value')
        k, v = item.split('=', 1)
        if not k.strip():
            raise UsageError(f'{flag} {item!r}: expected key=value')
        out[k.strip()] = value(v.strip())
    return out


def parse_spec(spec, flag='--variant'):
    """'k=v,k2=v2' -> {k: value(v)}."""
    return parse_set([p.strip() for p in (spec or '').split(',') if p.strip()], flag)


def variants_of(s, args):
    """(variants, overrides): the scenario's variants with --set/--cpus
    applied (an override of a swept key pins that axis; duplicates
    dropped), and the overrides of keys no variant sets."""
    overrides = parse_set(getattr(args, 'set', None))
    if getattr(args, 'cpus', None) is not None:
        overrides['cpus'] = args.cpus
    variants = s.variants()
    pinned = [dict(v, **{k: overrides[k] for k in v if k in overrides}) for v in variants]
    seen, out = set(), []
    for v in pinned:
        key = json.dumps(v, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(v)
    for k in overrides:
        scn_mod._check_value('--set', '', k, overrides[k], s.param_defaults)
    return out, {k: v for k, v in overrides.items() if not any(k in v2 for v2 in variants)}


def _effective(scn, variant, key):
    """The value of `key` in this variant: its own, a [params] value, the scenario's, the one
    its named design sets (design=akpm-kmap selects write_path=atomic_fallback),
    else the boot option's default."""
    opts = scn.options(variant)
    if key in opts:
        return opts[key]
    if key in scn.param_defaults:
        return scn.params(variant)[key]
    if key in DESIGNS.get(opts.get('design'), {}):
        return DESIGNS[opts['design']][key]
    return BOOT_OPTIONS.get(key, (None,))[0]


def select(scn, variants, spec, flag='--variant'):
    """The variants matching spec 'k=v,...' (all of them without it); a key
    a variant does not set is compared with the scenario's value, else the
    boot option's default.  No match: a UsageError listing the variants."""
    if not spec:
        return variants
    want = parse_spec(spec, flag)
    out = [v for v in variants if all(_effective(scn, v, k) == val for k, val in want.items())]
    if not out:
        known = '; '.join(label(v, ',') for v in variants[:12])
        more = f' ... {len(variants)} in all' if len(variants) > 12 else ''
        raise UsageError(f'{flag} {spec}: no variant matches (variants: {known}{more})')
    return out


def label(variant, sep=' '):
    return sep.join(f'{k}={v}' for k, v in variant.items()) or '(default)'
