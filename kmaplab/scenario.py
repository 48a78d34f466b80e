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
import tomllib

from minikernel.kernel import BOOT_OPTIONS

from . import programs as real

SCENARIO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'scenarios')
USER_ASM_DIR = os.path.join(os.path.dirname(SCENARIO_DIR), 'asm', 'user')
OUTCOMES = ('completed', 'bug', 'oom', 'deadlock', 'no_progress', 'corruption', 'killed',
            'failed', 'timeout', 'crash')
MACHINE_KEYS = {'cpus', 'mem', 'highmem', 'seed', 'quantum', 'schedule'}
TOP_KEYS = {'name', 'description', 'machine', 'boot', 'task', 'sweep', 'expect', 'plan',
            'report', 'notes', 'oracle', 'file', 'variant', 'full', 'exclude'}
REPORT_KEYS = {'counters', 'claim', 'reference'}
FILE_KEYS = {'name', 'size', 'seed', 'max_size', 'fill'} | real.FILE_KEYS
TASK_KEYS = {'name', 'program', 'args', 'cpu', 'start', 'thread_of', 'count'} | real.TASK_KEYS
EXPECT_KEYS = {'outcome', 'also', 'checks', 'case', 'not'} | real.EXPECT_KEYS
CASE_KEYS = {'when', 'outcome', 'also', 'checks', 'not'}
SIZE_KEYS = {'mem', 'highmem', 'swap'}
_SIZE = re.compile(r'^(\d+)\s*([KMG]?)$', re.I)


class ScenarioError(ValueError):
    """A bad scenario file or option: str() is the one-line reason."""


class MissingFile(ScenarioError):
    """A [[file]] host= that is not on this machine (e.g. busybox where it
    could not be fetched): tests skip such a scenario, the report leaves
    it out with the reason."""


def parse_size(value, where):
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = _SIZE.match(value.strip())
        if m:
            return int(m.group(1)) << {'': 0, 'K': 10, 'M': 20, 'G': 30}[m.group(2).upper()]
    raise ScenarioError(f'{where}: {value!r} is not a size (e.g. 128M, 1G, 4096)')


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
        self.files = data.get('file', [])
        self.plan = data.get('plan')
        self.expect = data.get('expect', {})
        self.report = data.get('report', {})
        self.report_keys = self.report.get('counters', [])
        self.full_sweep = data.get('full', {}).get('sweep')
        self.exclude = data.get('exclude', [])
        self.oracle = data.get('oracle', {})
        self.notes = data.get('notes', '')

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
    try:
        with open(path, 'rb') as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f'{path}: not valid TOML: {e}') from None
    except OSError as e:
        raise ScenarioError(f'{path}: {e.strerror}') from None
    validate(path, data)
    return Scenario(path, data)


def _check_keys(path, where, got, allowed):
    for k in got:
        if k not in allowed:
            raise ScenarioError(f'{path}: {where}{k}: unknown key (allowed: {", ".join(sorted(allowed))})')


def _check_option(path, where, key, value):
    if key in MACHINE_KEYS - {'mem', 'highmem'} or key in BOOT_OPTIONS or key.startswith('cost.'):
        if key in SIZE_KEYS:
            parse_size(value, f'{path}: {where}{key}')
            return
        if key.startswith('cost.'):
            if not isinstance(value, int):
                raise ScenarioError(f'{path}: {where}{key}: a cost is a number of cycles')
            return
        default, kind = BOOT_OPTIONS[key]
        if isinstance(kind, tuple) and value not in kind:
            raise ScenarioError(f'{path}: {where}{key}: {value!r} is not allowed '
                                f'(allowed: {", ".join(map(str, kind))})')
        if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise ScenarioError(f'{path}: {where}{key}: {value!r} is not an integer')
        if kind is bool and not isinstance(value, bool):
            raise ScenarioError(f'{path}: {where}{key}: {value!r} is not true/false')
        return
    if key in SIZE_KEYS:
        parse_size(value, f'{path}: {where}{key}')
        return
    raise ScenarioError(f'{path}: {where}{key}: unknown option (allowed: '
                        f'{", ".join(sorted(set(BOOT_OPTIONS) | MACHINE_KEYS))}, cost.NAME)')


def validate(path, data):
    _check_keys(path, '', data, TOP_KEYS)
    if not isinstance(data.get('name'), str):
        raise ScenarioError(f'{path}: name: missing or not a string')
    for section in ('machine', 'boot'):
        for k, v in data.get(section, {}).items():
            _check_option(path, f'{section}.', k, v)
    tasks = data.get('task', [])
    if not tasks:
        raise ScenarioError(f'{path}: task: a scenario needs at least one [[task]]')
    names = set()
    for i, t in enumerate(tasks):
        where = f'task[{i}].'
        _check_keys(path, where, t, TASK_KEYS)
        if 'exec' in t:
            pass                                   # an ELF binary: kmaplab/programs.py checks it
        elif not isinstance(t.get('program'), str):
            raise ScenarioError(f'{path}: {where}program: missing or not a string (or exec)')
        elif t['program'].endswith('.S'):
            if not os.path.exists(program_path(path, t['program'])):
                raise ScenarioError(f'{path}: {where}program: no file {t["program"]!r} beside the scenario')
        elif not os.path.exists(program_path(path, t['program'])):
            known = sorted(f[:-2] for f in os.listdir(USER_ASM_DIR)
                           if f.endswith('.S') and f != 'lib.S')
            raise ScenarioError(f'{path}: {where}program: no program {t["program"]!r} in asm/user/ '
                                f'(known: {", ".join(known)})')
        cpu = t.get('cpu', 0)
        if not (cpu in ('each', 'rr') or isinstance(cpu, int) and not isinstance(cpu, bool) and cpu >= 0):
            raise ScenarioError(f'{path}: {where}cpu: {cpu!r} (allowed: a CPU number, "each" or "rr")')
        if t.get('thread_of') is not None and t['thread_of'] not in names:
            raise ScenarioError(f'{path}: {where}thread_of: {t["thread_of"]!r} is not an earlier task')
        for a in t.get('args', []):
            if not isinstance(a, (int, str)) or isinstance(a, bool):
                raise ScenarioError(f'{path}: {where}args: {a!r} (allowed: integers and strings)')
        names.add(real.task_name(t))
    _check_keys(path, 'full.', data.get('full', {}), {'sweep'})
    for i, ex in enumerate(data.get('exclude', [])):
        if not isinstance(ex, dict) or not ex:
            raise ScenarioError(f'{path}: exclude[{i}]: a table of sweep values')
        for k in ex:
            if k not in data.get('sweep', {}) and k not in data.get('full', {}).get('sweep', {}):
                raise ScenarioError(f'{path}: exclude[{i}].{k}: not a sweep axis')
    for where, sweep in (('sweep.', data.get('sweep', {})),
                         ('full.sweep.', data.get('full', {}).get('sweep', {}))):
        for k, vals in sweep.items():
            if not isinstance(vals, list) or not vals:
                raise ScenarioError(f'{path}: {where}{k}: must be a non-empty list')
            for v in vals:
                _check_option(path, where, k, v)
    _check_keys(path, 'report.', data.get('report', {}), REPORT_KEYS)
    if data.get('sweep') and data.get('variant'):
        raise ScenarioError(f'{path}: variant: give either [sweep] or [[variant]], not both')
    for i, v in enumerate(data.get('variant', [])):
        if not isinstance(v, dict) or not v:
            raise ScenarioError(f'{path}: variant[{i}]: a table of options')
        for k, val in v.items():
            _check_option(path, f'variant[{i}].', k, val)
    for i, f in enumerate(data.get('file', [])):
        _check_keys(path, f'file[{i}].', f, FILE_KEYS)
        if not isinstance(f.get('name'), str) or not f['name']:
            raise ScenarioError(f'{path}: file[{i}].name: missing or not a string')
        parse_size(f.get('size', 0), f'{path}: file[{i}].size')
        if 'max_size' in f:
            parse_size(f['max_size'], f'{path}: file[{i}].max_size')
        if not isinstance(f.get('seed', 0), int):
            raise ScenarioError(f'{path}: file[{i}].seed: an integer')
        if f.get('fill', 'pattern') not in ('pattern', 'random'):
            raise ScenarioError(f'{path}: file[{i}].fill: {f["fill"]!r} (allowed: pattern, random)')
    real.validate(path, data, ScenarioError, MissingFile)
    if data.get('plan') is not None:
        from minikernel.faults import PlanError, load_plan
        try:
            load_plan(data['plan'], base_dir=os.path.dirname(os.path.abspath(path)))
        except PlanError as err:
            raise ScenarioError(f'{path}: plan: {err}') from None
    e = data.get('expect', {})
    _check_keys(path, 'expect.', e, EXPECT_KEYS)
    _check_expect(path, 'expect.', e)
    for i, case in enumerate(e.get('case', [])):
        _check_keys(path, f'expect.case[{i}].', case, CASE_KEYS)
        if not isinstance(case.get('when'), dict):
            raise ScenarioError(f'{path}: expect.case[{i}].when: missing (a table of sweep values)')
        _check_expect(path, f'expect.case[{i}].', case)


def _check_expect(path, where, e):
    o = e.get('outcome')
    if o is not None and o not in OUTCOMES:
        raise ScenarioError(f'{path}: {where}outcome: {o!r} (allowed: {", ".join(OUTCOMES)})')
    for a in e.get('also', []) + e.get('not', []):
        if a not in OUTCOMES:
            raise ScenarioError(f'{path}: {where}also: {a!r} (allowed: {", ".join(OUTCOMES)})')
    for c in e.get('checks', []):
        if not isinstance(c, str):
            raise ScenarioError(f'{path}: {where}checks: {c!r} is not a string')
        try:
            compile(c, '<check>', 'eval')
        except SyntaxError:
            raise ScenarioError(f'{path}: {where}checks: {c!r} is not a valid expression') from None
