"""Scenario files: what to boot, what to run, what to sweep, what to expect.

A scenario is a TOML file (docs/scenarios.md has the full format):

    name = "hello"
    description = "every CPU prints hello"
    [machine]            cpus, mem, highmem, seed, quantum, schedule
    [boot]               any boot option of minikernel.kernel.BOOT_OPTIONS
    [[file]]             name, size, seed: a file on the disk at boot, holding
                         pattern(i) = (i * 13 + seed) & 0xff (or all zeros
                         with seed = -1); max_size (default: its size, at
                         least 4M)
    [[task]]             name, program (asm/user/<program>.S, or a file
                         "x.S" beside the scenario), args, cpu (int or "each"), start,
                         thread_of (share the mm of an earlier task), count;
                         string args may say {cpu} and {n} (the CPU and the
                         copy number of this instance)
    [params]             name = default: scenario parameters (an integer or a
                         string), swept like boot options and named as
                         {name} in task args/argv/env and count (not booted)
    [sweep]              key = [values...]: one variant per combination
    [[variant]]          or: an explicit list of variants (tables of options)
    [[exclude]]          combinations of the sweep not to run (tables that match
                         a variant's keys), e.g. a setting that cannot matter
    [full.sweep]         the sweep `kmaplab report --full` uses instead
    [report]             counters = [...] (the key counters shown), claim and
                         reference (what the 2002 thread said, the numbers of
                         the time: printed beside the results in report.md)
    [expect]             outcome, also, checks (predicates on counters)
    [[expect.case]]      when = {key = value, ...}: overrides for variants

Loading checks every key and value; any error is a ScenarioError whose
text is one line: "file: key: what is wrong (what is allowed)".
Sizes may be written "96M", "1G", "4K" or as integers.
"""
import itertools
import os
import random
import re
import string

from minikernel import schema
from minikernel.fs import FS_REGION_BYTES
from minikernel.kernel import BOOT_OPTIONS, check_option, option_spec  # noqa: F401 (BOOT_OPTIONS: re-export)
from minikernel.schema import (Any, Choice, Int, ListOf, OneOf, SchemaError, Size, Str, Table)

from . import expr
from . import programs as real

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIO_DIR = os.path.join(ROOT, 'scenarios')
USER_ASM_DIR = os.path.join(ROOT, 'asm', 'user')
OUTCOMES = ('completed', 'bug', 'oom', 'deadlock', 'no_progress', 'corruption', 'killed',
            'failed', 'timeout', 'crash')
MACHINE_KEYS = {'cpus', 'mem', 'highmem', 'seed', 'quantum', 'schedule'}
SIZE_KEYS = {'mem', 'highmem', 'swap', 'fs_extent'}
ARG_PLACEHOLDERS = ('cpu', 'n')      # {cpu}, {n} in a task's string args
MAX_FILE_SIZE = FS_REGION_BYTES      # a [[file]]: the file system's region of the disk
MAX_ARG_BLOCK = 4000                 # a task's args on its initial stack (one kernel page)
MAX_FILE_COUNT = 4096                # files one [[file]] with count makes
MAX_TASKS = 4096                     # task instances of one variant (count x CPUs, summed)


class ScenarioError(SchemaError):
    """A bad scenario file or option: str() is the one-line reason."""


class MissingFile(ScenarioError):
    """A [[file]] host= that is not on this machine (e.g. busybox where it
    could not be fetched): tests skip such a scenario, the report leaves
    it out with the reason."""


def parse_size(value, where):
    n = schema.parse_size(value)
    if n is None:
        raise ScenarioError(f'{where}: {value!r} is not a size (e.g. 128M, 1G, 4096)')
    return n


# ---- the schema: one table per section (key -> type, range, meaning) -------------------------

def _option(key):
    """Any boot option (machine/boot sections, sweep values, variants)."""
    return option_spec(key)


def _sweep_axis(key):
    spec = option_spec(key)
    return ListOf(spec, min_len=1, max_len=256, meaning=f'the values of {key} to sweep') \
        if spec else None


OPTIONS_ALLOWED = 'any boot option (docs/scenarios.md), cost.NAME'
OUTCOME = Choice(OUTCOMES, 'an outcome kind')
CHECK = Str(max_len=expr.MAX_LEN, meaning='a check expression (kmaplab/expr.py)')
ARG = OneOf(Int(-(1 << 31), (1 << 32) - 1), Str(max_len=4096, nonempty=False),
            meaning='a 32-bit integer or a string')

PARAM = OneOf(Int(0, 1 << 31), Str(max_len=256), meaning='an integer or a string')
MACHINE = Table({k: _option(k) for k in sorted(MACHINE_KEYS)},
                meaning='the machine: cpus, mem, highmem, seed, quantum, schedule')
BOOT = Table(extra=_option, extra_allowed=OPTIONS_ALLOWED, meaning='boot options')
FILE = Table({
    'name': Str(max_len=255, meaning='the file name on the disk'),
    'size': Size(0, MAX_FILE_SIZE, 'bytes of data at boot'),
    'seed': Int(-1, 255, 'byte i = (i * 13 + seed) & 0xff; -1: zeros'),
    'max_size': Size(4096, MAX_FILE_SIZE, 'the extent the file may grow to'),
    'fill': Choice(('pattern', 'random'), 'pattern: the seed pattern; random: random.Random(seed)'),
    'host': Str(max_len=4096, meaning='a host file (relative to the scenario, else build/; '
                                      'confined to them) copied in, instead of size/seed'),
    'mode': Int(0, 0o7777, 'permission bits, e.g. 0o755'),
    'count': Int(1, MAX_FILE_COUNT, 'that many files: {i} in the name is 0 .. count-1, the seed '
                                    'seed + i'),
}, required=('name',), meaning='a file on the disk at boot')
TASK = Table({
    'name': Str(max_len=64, meaning='the task name (default: the program)'),
    'program': Str(max_len=255, meaning='a user program: asm/user/<program>.S'),
    'args': ListOf(ARG, max_len=1000, meaning='the program\'s arguments ({cpu} and {n} expand)'),
    'cpu': OneOf(Int(0, 31), Choice(('each', 'rr')),
                 meaning='a CPU number, "each", or "rr" (the n-th task on CPU n % cpus)'),
    'start': Int(0, 10 ** 13, 'the simulated time (cycles) it becomes runnable'),
    'thread_of': Str(max_len=64, meaning='share the mm of an earlier task'),
    'count': OneOf(Int(1, 1024), Str(max_len=64),
                   meaning='copies per CPU: 1 to 1024, or "{name}" of an integer [params] entry'),
    'exec': Str(max_len=255, meaning='an ELF binary: the lab path of a [[file]] (instead of program)'),
    'argv': ListOf(Str(max_len=4096, nonempty=False), max_len=64, meaning='argv of exec'),
    'env': ListOf(Str(max_len=4096, nonempty=False), max_len=64, meaning='the environment of exec'),
    'after': Str(max_len=64, meaning='start when that earlier task has exited'),
}, meaning='a user task (program or exec)')
EXPECT_FIELDS = {
    'outcome': OUTCOME,
    'also': ListOf(OUTCOME, max_len=len(OUTCOMES), meaning='outcome kinds that must also be seen'),
    'not': ListOf(OUTCOME, max_len=len(OUTCOMES), meaning='outcome kinds that must not be seen'),
    'checks': ListOf(CHECK, max_len=256, meaning='predicates on counters, options, variant keys'),
}
CASE = Table(dict(EXPECT_FIELDS, when=Table(extra=lambda k: Any(), extra_allowed='sweep keys',
                                            meaning='the variant keys this case applies to')),
             required=('when',), meaning='an override of [expect] for some variants')
OUTPUT = Table({'task': Str(max_len=64, meaning='a task name'),
                'contains': Str(max_len=4096, meaning='text ({sha256:/lab/path} expands)')},
               required=('task', 'contains'), meaning='text a task\'s console output holds')
SAME_FILE = Table({'name': Str(max_len=255, meaning='a lab path'),
                   'same_as': Str(max_len=255, meaning='a [[file]] of this scenario'),
                   'text': Str(max_len=4096, meaning='the exact text ({sha256:/lab/path} expands)')},
                  required=('name',), meaning='a lab file that holds a [[file]]\'s bytes, or a text')
EXPECT = Table(dict(EXPECT_FIELDS, case=ListOf(CASE, max_len=256),
                    output=ListOf(OUTPUT, max_len=256, meaning='[[expect.output]] tables'),
                    file=ListOf(SAME_FILE, max_len=256, meaning='[[expect.file]] tables')),
               meaning='what each variant should show')
SWEEP = Table(extra=_sweep_axis, extra_allowed=OPTIONS_ALLOWED, meaning='axes: option = [values]')
REPORT = Table({'counters': ListOf(Str(max_len=128), max_len=64),
                'claim': Str(max_len=100_000, nonempty=False),
                'reference': Str(max_len=100_000, nonempty=False)},
               meaning='what report.md shows')
PLAN_REF = OneOf(Str(max_len=4096), Table(extra=lambda k: Any(), extra_allowed='plan keys'),
                 meaning='a fault plan: a path, or an inline table')
SCENARIO = Table({
    'name': Str(max_len=128, meaning='the scenario name'),
    'description': Str(max_len=1000, nonempty=False),
    'notes': Str(max_len=100_000, nonempty=False),
    'machine': MACHINE,
    'boot': BOOT,
    'file': ListOf(FILE, max_len=256, meaning='[[file]] tables'),
    'task': ListOf(TASK, min_len=1, max_len=256, meaning='[[task]] tables'),
    'sweep': SWEEP,
    'variant': ListOf(Table(extra=_option, extra_allowed=OPTIONS_ALLOWED, nonempty=True),
                      max_len=1024, meaning='[[variant]] tables'),
    'exclude': ListOf(Table(extra=lambda k: Any(), extra_allowed='sweep axes', nonempty=True),
                      max_len=1024, meaning='[[exclude]] tables'),
    'full': Table({'sweep': SWEEP}),
    'report': REPORT,
    'expect': EXPECT,
    'plan': PLAN_REF,
    'oracle': Table(extra=lambda k: Any(), extra_allowed='anything'),
    'params': Table(extra=lambda k: PARAM, extra_allowed='parameter names',
                    meaning='scenario parameters: name = default, swept like options, {name} in '
                            'args/argv/count'),
}, required=('name', 'task'))


class Scenario:
    def __init__(self, path, data):
        self.path = path
        self.name = data['name']
        self.description = data.get('description', '')
        self.machine = data.get('machine', {})
        self.boot = data.get('boot', {})
        self.tasks = data.get('task', [])
        self.sweep = data.get('sweep', {})
        self.explicit = data.get('variant', [])
        self.files = expand_files(data.get('file', []))
        self.plan = data.get('plan')
        self.expect = data.get('expect', {})
        self.report = data.get('report', {})
        self.report_keys = self.report.get('counters', [])
        self.full_sweep = data.get('full', {}).get('sweep')
        self.exclude = data.get('exclude', [])
        self.oracle = data.get('oracle', {})
        self.notes = data.get('notes', '')
        self.param_defaults = data.get('params', {})

    def params(self, variant, overrides=None):
        """The scenario parameters for one variant: [params] with the
        variant's and the overrides' values of those keys."""
        out = dict(self.param_defaults)
        for src in (variant, overrides or {}):
            out.update({k: v for k, v in src.items() if k in out})
        return out

    def programs(self):
        return sorted({t['program'] for t in self.tasks if 'program' in t})

    def file_bytes(self, name):
        """The bytes of the [[file]] at lab path `name` (host files read
        once per scenario object)."""
        cache = self.__dict__.setdefault('_file_cache', {})
        key = '/' + name.strip('/')
        if key not in cache:
            spec = next(f for f in self.files if '/' + f['name'].strip('/') == key)
            cache[key] = file_data(spec, f'{self.path}: file {spec["name"]}', self.path)
        return cache[key]

    def variants(self, full=False):
        """The explicit [[variant]] list, or every combination of the sweep
        axes ([full.sweep] with full=True, if the file has one), in file
        order: [dict]."""
        if self.explicit:
            return [dict(v) for v in self.explicit]
        sweep = self.full_sweep if full and self.full_sweep else self.sweep
        keys = list(sweep)
        if not keys:
            return [{}]
        combos = [dict(zip(keys, combo)) for combo in itertools.product(*(sweep[k] for k in keys))]
        return [v for v in combos
                if not any(all(v.get(k) == val for k, val in ex.items()) for ex in self.exclude)]

    def options(self, variant, overrides=None, seed=None):
        """Boot options for one variant: machine, boot, the variant's
        values, then --set overrides, then --seed."""
        opts = dict(self.machine)
        opts.update(self.boot)
        opts.update(variant)
        opts.update(overrides or {})
        for k in self.param_defaults:
            opts.pop(k, None)
        if seed is not None:
            opts['seed'] = seed
        for k in SIZE_KEYS:
            if k in opts and opts[k] is not None:
                opts[k] = parse_size(opts[k], f'{self.path}: {k}')
        return opts

    def expectation(self, variant):
        """(outcome, also, checks, not) for a variant: [expect] with the
        first matching [[expect.case]] applied."""
        e = self.expect
        outcome, also, checks, nots = e.get('outcome', 'completed'), e.get('also', []), \
            list(e.get('checks', [])), e.get('not', [])
        for case in e.get('case', []):
            if all(variant.get(k) == v for k, v in case['when'].items()):
                outcome = case.get('outcome', outcome)
                also = case.get('also', also)
                checks = checks + list(case.get('checks', []))
                nots = case.get('not', nots)
                break
        return outcome, also, checks, nots


def expand_files(files):
    """[[file]] entries with count = N become N entries: {i} in the name
    is 0 .. N-1 and the seed is seed + i (its own pattern phase, or its own
    random stream, per file)."""
    out = []
    for f in files:
        n = f.get('count', 1)
        for i in range(n):
            g = {k: v for k, v in f.items() if k != 'count'}
            if n > 1:
                g['name'] = f['name'].replace('{i}', str(i))
                g['seed'] = f.get('seed', 0) + i
            out.append(g)
    return out


def program_path(scn_path, program):
    """The source of a [[task]] program: asm/user/<program>.S, or, for a
    name ending in .S (your own program), that file beside the scenario."""
    if program.endswith('.S'):
        return os.path.join(os.path.dirname(os.path.abspath(scn_path)), program)
    return os.path.join(USER_ASM_DIR, program + '.S')


def file_data(spec, where, scn_path=None):
    """The bytes of a [[file]]: a host file (host=, kmaplab/programs.py), or
    pattern(i) = (i * 13 + seed) & 0xff, or with fill = "random" bytes of
    random.Random(seed) (no period: a misplaced page shows)."""
    if 'host' in spec:
        with open(real.host_path(scn_path, spec['host'], ScenarioError), 'rb') as f:
            return f.read()
    size = parse_size(spec.get('size', 0), where)
    seed = spec.get('seed', 0)
    if spec.get('fill') == 'random':
        return random.Random(seed).randbytes(size)
    if seed == -1:
        return bytes(size)
    period = bytes((i * 13 + seed) & 0xFF for i in range(256))
    return (period * (size // 256 + 1))[:size]


def find(name_or_path):
    """A scenario name (scenarios/<name>.toml) or a path to a file."""
    if os.path.sep in name_or_path or name_or_path.endswith('.toml'):
        path = name_or_path
    else:
        path = os.path.join(SCENARIO_DIR, f'{name_or_path}.toml')
    if not os.path.exists(path):
        known = ', '.join(list_names())
        raise ScenarioError(f'{name_or_path}: no such scenario (known: {known})')
    return load(path)


def list_names():
    return sorted(f[:-5] for f in os.listdir(SCENARIO_DIR) if f.endswith('.toml'))


def load(path):
    """A scenario file, fully checked (ScenarioError, one line, on anything
    wrong): nothing runs before every key is known to be good."""
    try:
        data = schema.read_toml(path, 'scenario file')
        validate(path, data)
    except ScenarioError:
        raise
    except SchemaError as e:
        raise ScenarioError(str(e)) from None
    return Scenario(path, data)


def _check_option(path, where, key, value):
    """One boot option (--set, or a key of a scenario section)."""
    try:
        check_option(key, value, f'{path}: {where}{key}')
    except ScenarioError:
        raise
    except SchemaError as e:
        raise ScenarioError(str(e)) from None


def _check_value(path, where, key, value, params):
    """A swept, variant or --set value: a [params] entry's (the type of its
    default) or a boot option's."""
    if key in params:
        if not isinstance(value, type(params[key])) or isinstance(value, bool):
            raise ScenarioError(f'{path}: {where}{key}: {value!r} is not a '
                                f'{type(params[key]).__name__} like its default')
        return
    _check_option(path, where, key, value)


def _split_params(path, data):
    """Check [params] names and the [params] values of [sweep], [full.sweep]
    and [[variant]]; return a copy of data without those values (the schema
    checks the rest as boot options)."""
    params = data.get('params', {})
    if not isinstance(params, dict) or not params:
        return data, {}
    for k in params:
        if not re.fullmatch(r'[a-z_][a-z0-9_]*', k) or k in BOOT_OPTIONS or k in MACHINE_KEYS \
                or k in ARG_PLACEHOLDERS:
            raise ScenarioError(f'{path}: params.{k}: not a free name (lower-case, not a boot option, '
                                f'cpu or n)')
        PARAM.check(params[k], f'{path}: params.{k}')
    data = dict(data)
    for sect, where in (('sweep', 'sweep.'), ('full', 'full.sweep.')):
        table = data.get(sect)
        if sect == 'full' and isinstance(table, dict):
            sweep = table.get('sweep')
        else:
            sweep = table
        if not isinstance(sweep, dict):
            continue
        for k, vals in sweep.items():
            if k in params and isinstance(vals, list):
                if not vals:
                    raise ScenarioError(f'{path}: {where}{k}: must be a non-empty list')
                for v in vals:
                    _check_value(path, where, k, v, params)
        rest = {k: v for k, v in sweep.items() if k not in params}
        data[sect] = dict(table, sweep=rest) if sect == 'full' else rest
    if isinstance(data.get('variant'), list):
        out = []
        for i, v in enumerate(data['variant']):
            if isinstance(v, dict):
                for k, val in v.items():
                    if k in params:
                        _check_value(path, f'variant[{i}].', k, val, params)
                v = {k: val for k, val in v.items() if k not in params} or {'seed': 0}
            out.append(v)
        data['variant'] = out
    return data, params


def validate(path, data):
    """Check every key of a scenario by the schema, then what the schema
    cannot say: programs exist, thread_of names an earlier task, args
    placeholders, exclude keys are sweep axes, checks compile."""
    checked, params = _split_params(path, data)
    SCENARIO.check(checked, f'{path}: ')
    for i, f in enumerate(data.get('file', [])):
        if f.get('count', 1) > 1 and ('{i}' not in f['name'] or 'host' in f):
            raise ScenarioError(f'{path}: file[{i}].count: {f["count"]} files need {{i}} in the name '
                                f'(and no host)')
    names = set()
    for i, t in enumerate(data['task']):
        where = f'{path}: task[{i}].'
        count = t.get('count', 1)
        if isinstance(count, str):
            name = count[1:-1] if count.startswith('{') and count.endswith('}') else None
            if name not in params or not isinstance(params[name], int) or params[name] < 1:
                raise ScenarioError(f'{where}count: {count!r} is not an integer (allowed: 1 to 1024, or '
                                    f'"{{name}}" of an integer [params] entry)')
        for key in ('argv', 'env'):
            for j, a in enumerate(t.get(key, [])):
                _check_placeholders(f'{where}{key}[{j}]', a, params)
        if 'exec' in t:
            names.add(real.task_name(t))           # an ELF binary: real.validate checks it
            continue
        if 'program' not in t:
            raise ScenarioError(f'{where}program: missing (allowed: program = "<name>" or '
                                f'exec = "<a [[file]]>")')
        src = program_path(path, t['program'])
        if t['program'].endswith('.S'):
            base = os.path.dirname(os.path.abspath(path))
            if not schema.inside(src, [base, ROOT]):
                raise ScenarioError(f'{where}program: {t["program"]!r} is outside the scenario\'s '
                                    f'directory and the project (allowed: a file beside the scenario)')
            if not os.path.exists(src):
                raise ScenarioError(f'{where}program: no file {t["program"]!r} beside the scenario')
        elif not os.path.exists(src) or not schema.inside(src, [USER_ASM_DIR]):
            known = sorted(f[:-2] for f in os.listdir(USER_ASM_DIR)
                           if f.endswith('.S') and f != 'lib.S')
            raise ScenarioError(f'{where}program: no program {t["program"]!r} in asm/user/ '
                                f'(known: {", ".join(known)})')
        if t.get('thread_of') is not None and t['thread_of'] not in names:
            raise ScenarioError(f'{where}thread_of: {t["thread_of"]!r} is not an earlier task '
                                f'(allowed: {", ".join(sorted(names)) or "none yet"})')
        for j, a in enumerate(t.get('args', [])):
            if isinstance(a, str):
                _check_placeholders(f'{where}args[{j}]', a, params)
        block = 8 + sum(4 + (len(a.encode()) + 16 if isinstance(a, str) else 0)
                        for a in t.get('args', []))
        if block > MAX_ARG_BLOCK:
            raise ScenarioError(f'{where}args: about {block} bytes on the initial stack '
                                f'(allowed: at most {MAX_ARG_BLOCK}: exec copies them from one page)')
        names.add(real.task_name(t))
    sweep_keys = set(data.get('sweep', {})) | set(data.get('full', {}).get('sweep', {}))
    for i, ex in enumerate(data.get('exclude', [])):
        for k in ex:
            if k not in sweep_keys:
                raise ScenarioError(f'{path}: exclude[{i}].{k}: not a sweep axis '
                                    f'(allowed: {", ".join(sorted(sweep_keys)) or "none"})')
    if data.get('sweep') and data.get('variant'):
        raise ScenarioError(f'{path}: variant: give either [sweep] or [[variant]], not both')
    real.validate(path, data, ScenarioError, MissingFile)
    if data.get('plan') is not None:
        from minikernel.faults import PlanError, load_plan
        try:
            load_plan(data['plan'], base_dir=os.path.dirname(os.path.abspath(path)))
        except PlanError as err:
            raise ScenarioError(f'{path}: plan: {err}') from None
    e = data.get('expect', {})
    _check_expect(path, 'expect.', e)
    for i, case in enumerate(e.get('case', [])):
        _check_expect(path, f'expect.case[{i}].', case)


def _check_placeholders(where, text, params=None):
    """A string arg may name {cpu}, {n} and the [params] (and {{ }} for
    braces), nothing else."""
    params = params or {}
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(text)
                  if f is not None]
    except ValueError as e:
        raise ScenarioError(f'{where}: {text!r}: {e} (allowed: {{cpu}}, {{n}}, {{{{ and }}}})') from None
    for f, spec, conv in fields:
        if f not in ARG_PLACEHOLDERS and f not in params or spec or conv:
            f = f + (f'!{conv}' if conv else '') + (f':{spec}' if spec else '')
            raise ScenarioError(f'{where}: {text!r}: unknown placeholder {{{f}}} '
                                f'(allowed: {{cpu}}, {{n}}, {{{{ and }}}})')
    try:
        text.format(cpu=0, n=0, **params)
    except (ValueError, KeyError, IndexError, AttributeError) as e:
        raise ScenarioError(f'{where}: {text!r}: {e} (allowed: {{cpu}}, {{n}})') from None


def _check_expect(path, where, e):
    for i, c in enumerate(e.get('checks', [])):
        try:
            expr.compile_check(c)
        except expr.ExprError as err:
            raise ScenarioError(f'{path}: {where}checks[{i}]: {err}') from None
