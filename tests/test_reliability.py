"""Issue 17: every class of bad input an adversarial user found gives exit
code 2 and one line naming the file and the key (or, for guest
misbehaviour, a reported outcome): never a traceback, never a hang.

One test per input class.  Most run the command line in-process
(kmaplab.cli.main): a traceback there is an exception out of main(), which
fails the test."""
import os

import pytest

from kmaplab import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER = os.path.join(ROOT, 'asm', 'user')
TASK = '[[task]]\nprogram = "hello"\n'


def kmaplab(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def scenario(tmp_path, text, name='s.toml'):
    f = tmp_path / name
    f.write_text(text) if isinstance(text, str) else f.write_bytes(text)
    return str(f)


def bad(capsys, tmp_path, text, *needles, cmd='run'):
    """Load a scenario: exit 2, one line on stderr, naming the file and needles."""
    path = scenario(tmp_path, text)
    code, out, err = kmaplab(capsys, cmd, path)
    assert code == 2, (code, out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert path in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


@pytest.mark.parametrize('text, key', [
    ('name = "x"\nmachine = 5\n' + TASK, 'machine'),
    ('name = "x"\nboot = [1, 2]\n' + TASK, 'boot'),
    ('name = "x"\nfull = 1\n' + TASK, 'full'),
    ('name = "x"\nexpect = "completed"\n' + TASK, 'expect'),
    ('name = "x"\nreport = [1]\n' + TASK, 'report'),
    ('name = "x"\nexclude = 1\n' + TASK, 'exclude'),
    ('name = "x"\n' + TASK + '[expect]\ncase = 1\n', 'expect.case'),
    ('name = "x"\ntask = 1\n', 'task'),
    ('name = "x"\nvariant = 1\n' + TASK, 'variant'),
    ('name = "x"\nfile = 1\n' + TASK, 'file'),
    ('name = "x"\n' + TASK + '[full]\nsweep = 1\n', 'full.sweep'),
    ('name = "x"\n' + TASK + '[[expect.case]]\nwhen = 1\n', 'expect.case[0].when'),
    ('name = 5\n' + TASK, 'name'),
])
def test_a_section_of_the_wrong_type(capsys, tmp_path, text, key):
    bad(capsys, tmp_path, text, f': {key}: ', 'allowed:')


def test_also_as_a_string(capsys, tmp_path):
    bad(capsys, tmp_path, 'name = "x"\n' + TASK + '[expect]\nalso = "bug"\n', 'expect.also', 'a list')


def test_thread_of_as_a_list(capsys, tmp_path):
    bad(capsys, tmp_path, 'name = "x"\n' + TASK + TASK + 'thread_of = ["hello"]\n',
        'task[1].thread_of', 'is not a string')


@pytest.mark.parametrize('key', ['count', 'start'])
def test_count_and_start_as_strings(capsys, tmp_path, key):
    bad(capsys, tmp_path, 'name = "x"\n' + TASK + f'{key} = "3"\n', f'task[0].{key}', 'not an integer')


@pytest.mark.parametrize('arg', ['{nosuch}', '{0}', '{cpu.real}', '{', '{cpu!r:>{n}}', '{cpu[0]}'])
def test_an_unknown_placeholder_in_args(capsys, tmp_path, arg):
    bad(capsys, tmp_path, 'name = "x"\n' + TASK + f'args = ["{arg}"]\n', 'task[0].args[0]')


@pytest.mark.parametrize('check', ['"a" + 1 > cpus', 'cpus[0] > 1', 'cpus.real > 1',
                                   '__import__("os")', '[c for c in x]', 'lambda: 1',
                                   '9**9**9 > 0', '1/0 > cpus', 'x if y else z', 'open("f")'])
def test_checks_outside_the_safe_language_are_a_load_error(capsys, tmp_path, check):
    text = 'name = "x"\n' + TASK + f'[expect]\nchecks = [{check!r}]\n'.replace("'", "'''")
    bad(capsys, tmp_path, text, 'expect.checks[0]')


def test_checks_that_fail_at_run_time_are_a_failed_check_not_a_traceback():
    from kmaplab import expr
    for text, env in [('x + s > 0', dict(x=1, s='a')), ('x // y', dict(x=1, y=0)),
                      ('x ** 64 * x ** 64 > 0', dict(x=1 << 40)), ('nosuch > 0', {}),
                      ('abs(x, x) > 0', dict(x=1))]:
        with pytest.raises(expr.ExprError):
            expr.evaluate(expr.compile_check(text), env, text)
    assert expr.evaluate(expr.compile_check('min(a, b) <= 3 and not c'), dict(a=1, b=5, c=0)) is True


def test_a_deeply_nested_array(capsys, tmp_path):
    text = 'name = "x"\n' + TASK + 'args = ' + '[' * 2000 + ']' * 2000 + '\n'
    bad(capsys, tmp_path, text, 'nested')
    text = 'name = "x"\n' + TASK + 'args = ' + '[' * 10 + ']' * 10 + '\n'
    bad(capsys, tmp_path, text, 'task[0].args[0]')


def test_a_huge_file_size_does_not_allocate(capsys, tmp_path):
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bad(capsys, tmp_path, 'name = "x"\n[[file]]\nname = "f"\nsize = "100G"\n' + TASK,
        'file[0].size', 'out of range')
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000   # KiB


@pytest.mark.parametrize('key, text', [
    ('task[0].count', TASK + 'count = -1\n'),
    ('file[0].size', '[[file]]\nname = "f"\nsize = -4096\n' + TASK),
    ('boot.watchdog', '[boot]\nwatchdog = -5\n' + TASK),
    ('machine.highmem', '[machine]\nhighmem = -1\n' + TASK),
    ('boot.cost.fork', '[boot]\n"cost.fork" = -1\n' + TASK),
    ('boot.tick', '[boot]\ntick = 0\n' + TASK),
    ('machine.quantum', '[machine]\nquantum = 10000000000\n' + TASK),
    ('sweep.disk_latency', TASK + '[sweep]\ndisk_latency = [1, -1]\n'),
])
def test_negative_and_out_of_range_numbers(capsys, tmp_path, key, text):
    bad(capsys, tmp_path, 'name = "x"\n' + text, key, 'out of range')


def test_args_as_a_string(capsys, tmp_path):
    bad(capsys, tmp_path, 'name = "x"\n' + TASK + 'args = "abc"\n', 'task[0].args', 'not a list')


def test_64_bit_args(capsys, tmp_path):
    bad(capsys, tmp_path, 'name = "x"\n' + TASK + 'args = [0x100000000]\n', 'task[0].args[0]')


def test_a_plans_boot_keys_are_checked(capsys, tmp_path):
    plan = tmp_path / 'p.toml'
    plan.write_text('[boot]\ntick = "fast"\n')
    bad(capsys, tmp_path, f'name = "x"\nplan = "{plan}"\n' + TASK, 'boot.tick', 'not an integer')
    plan.write_text('[boot]\nnosuch = 1\n')
    bad(capsys, tmp_path, f'name = "x"\nplan = "{plan}"\n' + TASK, 'boot.nosuch', 'unknown option')


def test_a_plan_naming_a_missing_scenario(capsys, tmp_path):
    plan = tmp_path / 'p.toml'
    plan.write_text('scenario = "no-such-workload"\n')
    code, out, err = kmaplab(capsys, 'inject', 'hello', '--plan', plan)
    assert code == 2 and 'no-such-workload' in err and str(plan) in err


def test_a_file_that_is_not_utf8(capsys, tmp_path):
    bad(capsys, tmp_path, b'name = "x"\n# caf\xe9\n' + TASK.encode(), ':2:', 'not UTF-8')


def test_report_scenarios_with_a_file(capsys, tmp_path):
    path = scenario(tmp_path, 'name = "x"\nbogus = 1\n' + TASK)
    code, out, err = kmaplab(capsys, 'report', '--scenarios', path, '--out', tmp_path / 'o')
    assert code == 2 and path in err and 'bogus' in err


def test_an_empty_file_name(capsys):
    code, out, err = kmaplab(capsys, 'run', '')
    assert code == 2 and len(err.strip().splitlines()) == 1 and 'Traceback' not in err
    code, out, err = kmaplab(capsys, 'inject', 'hello', '--plan', '')
    assert code == 2 and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize('text, needle', [
    ('[[file]]\nname = "/x"\nhost = "../../../../../../etc/passwd"\n', 'leaves'),
    ('[[file]]\nname = "/x"\nhost = "/etc/passwd"\n', 'a relative path'),
    ('[[file]]\nname = "/x"\nhost = "big.bin"\n', 'bytes (allowed: at most 128M'),
    ('[[file]]\nname = "/x"\nhost = 5\n', 'file[0].host: 5 is not a string'),
    ('[[file]]\nname = "/x"\nsize = 1\nmode = 0o10000\n', 'file[0].mode: 4096 is out of range'),
    ('[[file]]\nname = "/x"\nsize = 1\nfill = "noise"\n', 'file[0].fill'),
    ('[[file]]\nname = "/x"\nsize = 1\n[[task]]\nexec = "/x"\nargv = ' + str(['a'] * 65) + '\n',
     'task[1].argv'),
    ('[[file]]\nname = "/x"\nsize = 1\n[[task]]\nexec = "/x"\nenv = [1]\n', 'task[1].env[0]'),
    ('[[task]]\nprogram = "hello"\ncpu = "rr2"\n', 'task[1].cpu'),
    ('[[task]]\nprogram = "hello"\nafter = 3\n', 'task[1].after'),
    ('[[expect.output]]\ntask = "hello"\ncontains = 5\n', 'expect.output[0].contains'),
    ('[[expect.file]]\nname = "/a"\nsame_as = "/b"\nx = 1\n', 'expect.file[0].x: unknown key'),
])
def test_real_program_keys_by_type_range_and_place(capsys, tmp_path, text, needle):
    """[[file]] host= resolves beside the scenario (or build/) and may not
    leave it; a host file larger than the file system's region (here a
    sparse 129M file: nothing is read) is refused before anything is
    allocated; every new key has its type and range."""
    with open(tmp_path / 'big.bin', 'wb') as f:
        f.truncate(129 << 20)
    bad(capsys, tmp_path, 'name = "x"\n' + TASK + text, needle)


def test_a_swap_bigger_than_the_disk(capsys):
    code, out, err = kmaplab(capsys, 'run', 'hello', '--cpus', 1, '--set', 'swap=1G')
    assert code == 2 and 'swap' in err and 'disk_blocks' in err and 'beyond the disk' not in err


@pytest.fixture
def program():
    made = []

    def write(text):
        path = os.path.join(USER, f'zz_rel_{len(made)}.S')
        with open(path, 'w') as f:
            f.write(text)
        made.append(path)
        return os.path.basename(path)[:-2]
    yield write
    for p in made:
        os.remove(p)


@pytest.mark.parametrize('text, needle', [
    ('', ':1: no _start'),
    ('foo:\n        nop\n', ':1: no _start'),
    ('_start:\n        .space -1\n', ':2: .space -1'),
    ('_start:\n        .space 0x7fffffff\n', ':2: .space'),
    ('_start:\n#include "../../../../../../etc/passwd"\n', ':2: cannot include'),
    ('_start:\n#include "/etc/passwd"\n', 'outside the project'),
])
def test_asm_errors_have_file_and_line(capsys, tmp_path, program, text, needle):
    name = program(text)
    path = scenario(tmp_path, f'name = "x"\n[[task]]\nprogram = "{name}"\n')
    code, out, err = kmaplab(capsys, 'run', path)
    assert code == 2 and f'asm/user/{name}.S' in err and needle in err, err
    assert 'root:' not in err                       # nothing of /etc/passwd


def test_a_program_outside_asm_user(capsys, tmp_path):
    bad(capsys, tmp_path, 'name = "x"\n[[task]]\nprogram = "../../tests/conftest"\n',
        'task[0].program')


def test_bad_schedule_files(capsys, tmp_path):
    f = tmp_path / 'sched.json'
    for text, needle in [('[' * 5000 + ']' * 5000, 'nested'), (b'\xff\xfe', 'not UTF-8'),
                         ('{"format": "kmaplab-schedule/1", "seed": "x"}', 'seed')]:
        f.write_bytes(text if isinstance(text, bytes) else text.encode())
        code, out, err = kmaplab(capsys, 'run', 'hello', '--schedule', f)
        assert code == 2 and needle in err and str(f) in err, err


# ---- a property-based fuzz of scenario files (bounded: a few seconds) ---------------------

from hypothesis import HealthCheck, given, settings, strategies as st   # noqa: E402

from kmaplab import scenario as scn_mod                                    # noqa: E402
from minikernel.schema import SchemaError                                  # noqa: E402

_scalars = st.one_of(st.integers(-(1 << 64), 1 << 64), st.booleans(), st.floats(allow_nan=False),
                     st.text(max_size=12), st.sampled_from(['96M', '1G', 'each', 'kmap', '{cpu}',
                                                            'hello', 'completed', '-1', '100G', 'rr',
                                                            '/etc/passwd', '../../../etc/passwd',
                                                            'workloads/nolibc', '/f', 'random']))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
_keys = st.sampled_from(['name', 'machine', 'boot', 'task', 'sweep', 'expect', 'file', 'variant',
                         'full', 'exclude', 'report', 'plan', 'cpus', 'mem', 'highmem', 'args',
                         'count', 'start', 'cpu', 'thread_of', 'program', 'size', 'checks', 'also',
                         'case', 'when', 'outcome', 'tick', 'cost.fork', 'write_path', 'x',
                         'host', 'mode', 'fill', 'exec', 'argv', 'env', 'after', 'output',
                         'contains', 'same_as'])


def _toml(value):
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, float)):
        return repr(value) if abs(value) < 1 << 63 or isinstance(value, float) else '0'
    if isinstance(value, str):
        return '"' + value.encode('unicode_escape').decode().replace('"', '\\"') + '"'
    if isinstance(value, list):
        return '[' + ', '.join(_toml(v) for v in value) + ']'
    return '{' + ', '.join(f'{_toml(k)} = {_toml(v)}' for k, v in value.items()) + '}'


BASE = {'name': 'x', 'task': [{'program': 'hello', 'cpu': 'each'}],
        'machine': {'cpus': 2, 'mem': '64M', 'highmem': '32M'}, 'sweep': {'write_path': ['kmap']},
        'expect': {'outcome': 'completed', 'checks': ['tasks_exited == cpus']}}


def _mutate(base, path, value):
    out = dict(base)
    node = out
    for k in path[:-1]:
        cur = node.get(k)
        cur = dict(cur[0]) if isinstance(cur, list) and cur and isinstance(cur[0], dict) else \
            dict(cur) if isinstance(cur, dict) else {}
        node[k] = [cur] if k in ('task', 'file', 'variant', 'exclude', 'case') else cur
        node = cur
    node[path[-1]] = value
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.lists(_keys, min_size=1, max_size=3), value=_values)
def test_fuzzed_scenario_files_load_or_fail_in_one_line(tmp_path_factory, path, value):
    """A valid scenario with one key (at any depth) replaced by any TOML
    value: it loads (and its variants and options can be computed), or it
    is refused with one line naming the file; nothing else."""
    data = _mutate(BASE, path, value)
    text = '\n'.join(f'{_toml(k)} = {_toml(v)}' for k, v in data.items()) + '\n'
    f = tmp_path_factory.mktemp('fz') / 's.toml'
    f.write_text(text)
    try:
        s = scn_mod.load(str(f))
    except SchemaError as e:
        assert str(f) in str(e) and '\n' not in str(e)
        return
    for v in s.variants():
        try:
            s.options(v)
        except SchemaError as e:
            assert '\n' not in str(e)
        s.expectation(v)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=200))
def test_fuzzed_bytes_load_or_fail_in_one_line(tmp_path_factory, raw):
    f = tmp_path_factory.mktemp('fz') / 's.toml'
    f.write_bytes(raw)
    with pytest.raises(SchemaError) as e:
        scn_mod.load(str(f))
    assert str(f) in str(e.value) and '\n' not in str(e.value)


# ---- the host-side budget -------------------------------------------------------------------

SPIN = 'name = "spin"\n[[task]]\nprogram = "spin"\nargs = [0]\n'      # counts 2^32 loops


def test_timeout_ends_a_runaway_guest_with_what_was_running(capsys, tmp_path):
    code, out, err = kmaplab(capsys, 'run', scenario(tmp_path, SPIN), '--timeout', 1)
    assert code == 1 and 'outcome: timeout' in out
    assert 'host timeout: 1 s' in out and 'spin/' in out and 'on CPU0 at _start+' in out


def test_timeout_unwinds_a_loop_outside_the_machine_loop(tmp_path):
    """A Python loop that never returns to the machine loop (what tick = 0
    was): unwound GRACE seconds after the deadline, outcome timeout."""
    from kmaplab import runner, scenario as scn_mod
    s = scn_mod.load(scenario(tmp_path, SPIN))
    k = runner.boot(s, {})

    def stuck(cpu, budget):
        while True:
            pass
    k.step = stuck
    end, counters, outcome, findings = runner.run_kernel(k, timeout=0.5)
    assert end == 'host timeout' and outcome == 'timeout'
    assert 'unwound' in k.reports[-1]['message']


def test_bad_timeout_values(capsys):
    for v in ('-1', 'abc', '1e9'):
        code, out, err = kmaplab(capsys, 'run', 'hello', '--timeout', v)
        assert code == 2 and '--timeout' in err


def test_timeout_does_not_leak_into_later_runs(capsys):
    kmaplab(capsys, 'run', 'hello', '--cpus', 1, '--timeout', 5)
    assert 'KMAPLAB_TIMEOUT' not in os.environ


# ---- memory-management syscalls: Linux's range checks ----------------------------------------

# (Linux's range checks of munmap/mmap2: tests/test_reliability_min.py)

def _populate_run(tmp_path, max_cycles):
    from kmaplab import runner, scenario as scn_mod
    call = [192, 0, 0x7ffff002, 2, 0x8031, -1, 0]
    path = scenario(tmp_path, f'name = "x"\n[machine]\nmem = "32M"\n[boot]\nmax_cycles = {max_cycles}\n'
                              '[[task]]\nprogram = "fuzz"\nargs = ' + str(call) + '\n')
    k = runner.boot(scn_mod.load(path), {})
    end, counters, outcome, findings = runner.run_kernel(k, timeout=600)
    assert not [r for r in k.reports if r['kind'] in ('bug', 'oops')]
    return k, end, outcome


def test_a_huge_map_populate_is_bounded_by_max_cycles(tmp_path):
    """mmap2(0, 0x7ffff002, PROT_WRITE, MAP_SHARED|MAP_FIXED|MAP_ANONYMOUS|MAP_POPULATE):
    make_pages_present charges each page's fault to the task's CPU and
    stops at max_cycles, so the run ends at the cycle limit (end 'time
    limit', outcome timeout), never by the host's wall-clock guard, with
    most of the 2 GiB mapping still not populated."""
    k, end, outcome = _populate_run(tmp_path, 3_000_000)
    assert (end, outcome) == ('time limit', 'timeout')
    assert 3_000_000 <= k.machine.time(0) < 3_100_000
    t = next(t for t in k.workload if t.name == 'fuzz')
    def present(va):
        pa = k.mm.pte_offset(t.mm, va)
        return pa is not None and k.mm.read_pte(pa) & 1
    assert present(0x1000)
    assert not present(0x7FFFE000)                  # stopped early: the end never populated


def test_a_runaway_into_zero_pages_is_bounded_by_max_cycles(tmp_path):
    """The same mmap with the limit past the populate: the program's code
    (0x08048000) was replaced by the shared zero-filled mapping, so the
    guest executes zero bytes (add [eax], al) page after page, code no
    image describes.  Such blocks count their bytes (vm/_native.c), so the
    run still ends at max_cycles: 'time limit', not the host guard."""
    k, end, outcome = _populate_run(tmp_path, 16_100_000)
    assert (end, outcome) == ('time limit', 'timeout')
    cpu = k.machine.cpus[0]
    assert cpu.k.unknown_blocks > 100
    assert cpu.instructions > 100 * cpu.k.unknown_blocks     # bytes, not 1 per block


# ---- determinism ----------------------------------------------------------------------------

def test_two_traces_in_two_processes_are_byte_identical(tmp_path):
    """The same trace command in two processes with different Python hash
    seeds (and so different object addresses and set orders): the trace
    files are byte for byte the same, and what a context switch says a
    task waits on is printed by name."""
    import subprocess
    import sys
    outs = []
    for hashseed in ('1', '2'):
        out = tmp_path / f't{hashseed}.txt'
        p = subprocess.run([sys.executable, '-m', 'kmaplab.cli', 'trace', 'munmap-race', '--variant',
                            'write_path=dont_unmap,atomic_fault=sleep', '--out', str(out),
                            '--events-only'], cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, PYTHONHASHSEED=hashseed))
        assert p.returncode in (0, 1), p.stderr
        outs.append(out.read_bytes())
    assert outs[0].count(b'context_switch') > 100 and b'waits_on=' in outs[0]
    assert b' at 0x' not in outs[0]
    assert outs[0] == outs[1]


@pytest.mark.slow
def test_two_traces_of_the_same_run_are_byte_identical(capsys, tmp_path):
    """Context switches name what a task waits on (wait queues, timers,
    rwsems): by name, never by a host address."""
    outs = []
    for i in range(2):
        out = tmp_path / f't{i}.txt'
        code, _, err = kmaplab(capsys, 'trace', 'sleep-in-atomic', '--variant', 'atomic_fault=sleep',
                               '--out', out, '--events-only')
        assert code in (0, 1), err
        outs.append(out.read_bytes())
    assert b'context_switch' in outs[0] and b' at 0x' not in outs[0]
    assert outs[0] == outs[1]


def test_threads_cloned_in_a_loop_cost_linear_bookkeeping(tmp_path):
    """A program that clones 140 threads (each goes on with the shared list):
    the workload bookkeeping is O(1) per spawn (the list of workload tasks
    is walked once, not once per spawn or per exit); the run completes."""
    from kmaplab import runner, scenario as scn_mod

    class Walks(list):
        walks = 0

        def __iter__(self):
            Walks.walks += 1
            return super().__iter__()
    call = [120, 0x100, 0, 0, 0, 0, 0] * 140
    path = scenario(tmp_path, 'name = "x"\n[[task]]\nprogram = "fuzz"\nargs = ' + str(call) + '\n')
    k = runner.boot(scn_mod.load(path), {})
    k.workload = Walks(k.workload)
    end, counters, outcome, findings = runner.run_kernel(k, timeout=120)
    assert outcome == 'completed', (outcome, k.reports[-3:])
    assert len(k.workload) == 141 and k._workload_alive() == 0
    assert Walks.walks <= 2, Walks.walks


def test_json_memory_hash_is_the_same_for_the_same_run():
    """`kmaplab run --json` carries memory_sha256, the final guest RAM's
    hash: two separate processes (different Python hash seeds) running the
    same scenario and seed print the same hash per variant; variants that
    end differently (deadlock, BUG, completed) print different ones, so the
    hash does see memory."""
    import json
    import subprocess
    import sys
    runs = []
    for hashseed in ('1', '2'):
        p = subprocess.run([sys.executable, '-m', 'kmaplab.cli', 'run', 'munmap-race', '--seed', '5',
                            '--json'], cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, PYTHONHASHSEED=hashseed))
        assert p.returncode in (0, 1), p.stderr
        runs.append([(json.dumps(r['variant'], sort_keys=True), r['memory_sha256'])
                     for r in map(json.loads, p.stdout.splitlines())])
    assert len(runs[0]) == 5 and runs[0] == runs[1]
    assert len({h for _, h in runs[0]}) == 5
    assert all(len(h) == 64 for _, h in runs[0])
