"""Declarative checking of the lab's input files: boot options, fault plans,
scenarios, schedules.

A schema is a tree of specs.  Each spec checks one value and knows how to say
what is allowed; `spec.check(value, where)` returns the value normalised
(a size "96M" -> 100663296) or raises SchemaError whose text is one line:

    "<where>: <value>: <what is wrong> (allowed: <what is allowed>)"

where `where` is "file: key.path" (e.g. "s.toml: task[0].count").  A
section is a Table of key -> spec: adding a key to a file format is one
entry in its table (key, type, range, meaning), and its error messages and
documentation (describe()) follow.

Invariants
  - checking never allocates more than the input's own size and never
    recurses deeper than the schema (a value nested deeper than its spec
    allows is refused at the first level that does not take a list/table);
  - every integer has a range: nothing the user writes reaches the machine
    unbounded;
  - read_toml/read_json turn every way a file can be unreadable (missing,
    a directory, not UTF-8, not TOML/JSON, nested past the parser's stack)
    into one SchemaError line naming the file.
No locks; runs before anything boots.
"""
import json
import os
import re
import tomllib

MAX_DEPTH = 64                # arrays/tables nested deeper than this: refused before parsing


class SchemaError(ValueError):
    """A bad input file or option: str() is the one-line reason."""


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _fmt_int(n):
    if n is None:
        return ''
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f'{n >> 30}G' if n % (1 << 30) == 0 else f'{n >> 20}M'
    return f'{n:,}'.replace(',', '_') if abs(n) >= 100_000 else str(n)


class Spec:
    meaning = ''

    def allowed(self):
        raise NotImplementedError

    def check(self, value, where):
        raise NotImplementedError

    def fail(self, where, value, problem):
        raise SchemaError(f'{where}: {_short(value)} {problem} (allowed: {self.allowed()})')


class Int(Spec):
    """An integer in [lo, hi] (booleans are not integers)."""

    def __init__(self, lo=None, hi=None, meaning=''):
        self.lo, self.hi, self.meaning = lo, hi, meaning

    def allowed(self):
        lo, hi = _fmt_int(self.lo), _fmt_int(self.hi)
        if self.lo is not None and self.hi is not None:
            return f'an integer from {lo} to {hi}'
        if self.lo is not None:
            return f'an integer >= {lo}'
        if self.hi is not None:
            return f'an integer <= {hi}'
        return 'an integer'

    def in_range(self, n):
        return (self.lo is None or n >= self.lo) and (self.hi is None or n <= self.hi)

    def check(self, value, where):
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(where, value, 'is not an integer')
        if not self.in_range(value):
            self.fail(where, value, 'is out of range')
        return value


_SIZE = re.compile(r'^(\d{1,15})\s*([KMG]?)$', re.I)


def parse_size(value):
    """An integer, or "4096" / "4K" / "96M" / "1G" -> bytes; None if neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = _SIZE.match(value.strip())
        if m:
            return int(m.group(1)) << {'': 0, 'K': 10, 'M': 20, 'G': 30}[m.group(2).upper()]
    return None


class Size(Int):
    """A size in bytes: an integer or a string like "96M" (K, M, G)."""

    def allowed(self):
        lo = _fmt_int(self.lo) if self.lo is not None else '0'
        return f'a size from {lo} to {_fmt_int(self.hi)} (e.g. 4096, "64K", "96M", "1G")' \
            if self.hi is not None else f'a size >= {lo} (e.g. 4096, "64K", "96M", "1G")'

    def check(self, value, where):
        n = parse_size(value)
        if n is None:
            self.fail(where, value, 'is not a size')
        if not self.in_range(n):
            self.fail(where, value, 'is out of range')
        return n


class Bool(Spec):
    def __init__(self, meaning=''):
        self.meaning = meaning

    def allowed(self):
        return 'true or false'

    def check(self, value, where):
        if not isinstance(value, bool):
            self.fail(where, value, 'is not true/false')
        return value


class Str(Spec):
    """A string of at most max_len characters (nonempty: at least one)."""

    def __init__(self, max_len=4096, nonempty=True, meaning=''):
        self.max_len, self.nonempty, self.meaning = max_len, nonempty, meaning

    def allowed(self):
        return f'a string of {1 if self.nonempty else 0} to {self.max_len} characters'

    def check(self, value, where):
        if not isinstance(value, str):
            self.fail(where, value, 'is not a string')
        if len(value) > self.max_len or self.nonempty and not value:
            self.fail(where, value, 'has the wrong length')
        return value


class Choice(Spec):
    def __init__(self, values, meaning=''):
        self.values, self.meaning = tuple(values), meaning

    def allowed(self):
        return ', '.join(map(str, self.values))

    def check(self, value, where):
        if not any(type(value) is type(v) and value == v for v in self.values):
            self.fail(where, value, 'is not allowed')
        return value


class OneOf(Spec):
    """The first of several specs that accepts the value."""

    def __init__(self, *specs, meaning=''):
        self.specs, self.meaning = specs, meaning

    def allowed(self):
        return '; or '.join(s.allowed() for s in self.specs)

    def check(self, value, where):
        problem = 'is not allowed'
        for s in self.specs:
            try:
                return s.check(value, where)
            except SchemaError as e:
                if 'is out of range' in str(e):
                    problem = 'is out of range'
        self.fail(where, value, problem)


class Any(Spec):
    """Anything TOML can say (free-form notes)."""

    def __init__(self, meaning=''):
        self.meaning = meaning

    def allowed(self):
        return 'anything'

    def check(self, value, where):
        return value


class ListOf(Spec):
    """A list of items, each checked by `item`; min_len..max_len of them."""

    def __init__(self, item, min_len=0, max_len=4096, meaning=''):
        self.item, self.min_len, self.max_len, self.meaning = item, min_len, max_len, meaning

    def allowed(self):
        n = f'{self.min_len} to {self.max_len}'
        return f'a list of {n} items, each {self.item.allowed()}'

    def check(self, value, where):
        if not isinstance(value, list):
            self.fail(where, value, 'is not a list')
        if not self.min_len <= len(value) <= self.max_len:
            self.fail(where, value, f'has {len(value)} items')
        return [self.item.check(v, f'{where}[{i}]') for i, v in enumerate(value)]


class Table(Spec):
    """A table (TOML [section] or inline {...}) of known keys.

    fields: key -> Spec; required: keys that must be there; extra(key) ->
    Spec or None, for open tables (boot options, sweep axes): None means
    the key is unknown.  extra_allowed: how to describe the open keys."""

    def __init__(self, fields=None, required=(), extra=None, extra_allowed='', meaning='',
                 nonempty=False, name='a table'):
        self.fields, self.required = dict(fields or {}), tuple(required)
        self.extra, self.extra_allowed, self.meaning = extra, extra_allowed, meaning
        self.nonempty, self.name = nonempty, name

    def allowed(self):
        return self.name

    def keys_allowed(self):
        keys = sorted(self.fields)
        if self.extra_allowed:
            keys.append(self.extra_allowed)
        return ', '.join(keys)

    def spec_for(self, key):
        if key in self.fields:
            return self.fields[key]
        return self.extra(key) if self.extra else None

    def check(self, value, where):
        if not isinstance(value, dict):
            self.fail(where, value, 'is not a table')
        if self.nonempty and not value:
            self.fail(where, value, 'is empty')
        prefix = f'{where}.' if not where.endswith(': ') else where
        out = {}
        for k, v in value.items():
            spec = self.spec_for(k)
            if spec is None:
                raise SchemaError(f'{prefix}{k}: unknown key (allowed: {self.keys_allowed()})')
            out[k] = spec.check(v, f'{prefix}{k}')
        for k in self.required:
            if k not in value:
                spec = self.fields[k]
                raise SchemaError(f'{prefix}{k}: missing ({spec.meaning or spec.allowed()})')
        return out


def table_rows(table):
    """(key, allowed, meaning) for each known key of a Table: the
    documentation of a section."""
    return [(k, s.allowed(), s.meaning) for k, s in table.fields.items()]


# ---- reading files --------------------------------------------------------------------------

def _nesting(text):
    """The deepest bracket nesting outside strings and comments (a cheap
    upper bound for TOML and JSON: the parsers recurse once per level)."""
    depth = deepest = 0
    quote = None
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if quote:
            if c == '\\' and quote in ('"', '"""'):
                i += 2
                continue
            if text.startswith(quote, i):
                i += len(quote)
                quote = None
                continue
        elif c in '"\'':
            quote = text[i:i + 3] if text.startswith(c * 3, i) else c
            i += len(quote)
            continue
        elif c == '#':
            j = text.find('\n', i)
            i = n if j < 0 else j
            continue
        elif c in '[{':
            depth += 1
            deepest = max(deepest, depth)
        elif c in ']}':
            depth -= 1
        i += 1
    return deepest


def read_text(path, what='file'):
    """The UTF-8 text of a file, or SchemaError naming the file (and the
    line of a byte that is not UTF-8)."""
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except IsADirectoryError:
        raise SchemaError(f'{path}: is a directory, not a {what}') from None
    except OSError as e:
        raise SchemaError(f'{path or "(empty file name)"}: {e.strerror}') from None
    try:
        return raw.decode('utf-8')
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b'\n') + 1
        raise SchemaError(f'{path}:{line}: not UTF-8 text (byte {raw[e.start]:#04x} '
                          f'at offset {e.start})') from None


def read_toml(path, what='TOML file'):
    """A TOML file as a dict, or SchemaError (one line, naming the file)."""
    text = read_text(path, what)
    if _nesting(text) > MAX_DEPTH:
        raise SchemaError(f'{path}: arrays or tables nested more than {MAX_DEPTH} deep')
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SchemaError(f'{path}: not valid TOML: {e}') from None
    except RecursionError:
        raise SchemaError(f'{path}: arrays or tables nested too deeply') from None


def read_json(path, what='JSON file'):
    text = read_text(path, what)
    if _nesting(text) > MAX_DEPTH:
        raise SchemaError(f'{path}: arrays or objects nested more than {MAX_DEPTH} deep')
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SchemaError(f'{path}: not JSON: {e.msg} (line {e.lineno})') from None
    except RecursionError:
        raise SchemaError(f'{path}: arrays or objects nested too deeply') from None


def inside(path, roots):
    """True if the real path of `path` is under one of `roots` (symlinks
    resolved): path confinement for files a scenario names."""
    real = os.path.realpath(path)
    for r in roots:
        r = os.path.realpath(r)
        if real == r or real.startswith(r.rstrip(os.sep) + os.sep):
            return True
    return False
