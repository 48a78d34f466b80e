"""The command line: bad input is one line on stderr and exit code 2, never a
traceback; --json prints the documented fields; exit 0/1 follow the
expectations."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KMAPLAB = [sys.executable, '-m', 'kmaplab.cli']


def run(*args, cwd=ROOT):
    p = subprocess.run(KMAPLAB + list(args), capture_output=True, text=True, cwd=cwd, timeout=300)
    return p.returncode, p.stdout, p.stderr


def write(tmp_path, text, name='s.toml'):
    f = tmp_path / name
    f.write_text(text)
    return str(f)


GOOD_TASK = '[[task]]\nprogram = "hello"\n'


@pytest.mark.parametrize('text, needle', [
    ('name = \n', 'not valid TOML'),
    ('name = "x"\nbogus = 1\n' + GOOD_TASK, 'bogus: unknown key'),
    ('name = "x"\n[machine]\ncpus = "two"\n' + GOOD_TASK, "machine.cpus: 'two' is not an integer"),
    ('name = "x"\n[boot]\nwrite_path = "fast"\n' + GOOD_TASK, "boot.write_path: 'fast' is not allowed"),
    ('name = "x"\n[[task]]\nprogram = "nosuch"\n', "no program 'nosuch'"),
    ('name = "x"\n' + GOOD_TASK + '[expect]\noutcome = "fine"\n', "expect.outcome: 'fine'"),
    ('name = "x"\n' + GOOD_TASK + '[sweep]\ncpus = 2\n', 'sweep.cpus: 2 is not a list'),
])
def test_bad_scenario_files_are_one_line_and_exit_2(tmp_path, text, needle):
    code, out, err = run('run', write(tmp_path, text))
    assert code == 2 and needle in err and 'Traceback' not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize('args, needle', [
    (['run', 'hello', '--set', 'cpus=99'], 'cpus: 99 is out of range'),
    (['run', 'hello', '--set', 'nosuch=1'], 'nosuch: unknown option'),
    (['run', 'no-such-scenario'], 'no such scenario'),
    (['frobnicate'], 'invalid choice'),
    (['inject', 'hello', '--plan', '/nonexistent/plan.toml'], 'no such plan file'),
])
def test_bad_options_are_one_line_and_exit_2(args, needle):
    code, out, err = run(*args)
    assert code == 2 and needle in err and 'Traceback' not in err


def test_an_assembly_error_names_file_and_line(tmp_path):
    (tmp_path / 'zz_broken_test.S').write_text('_start:\n        mov eax, 1\n        frobnicate eax\n')
    code, out, err = run('run', write(tmp_path, 'name = "x"\n[[task]]\nprogram = "zz_broken_test.S"\n'))
    assert code == 2 and 'Traceback' not in err
    assert 'zz_broken_test.S:3:' in err


def test_json_lines_have_the_documented_fields_and_repeat():
    code, out, err = run('run', 'hello', '--cpus', '2', '--json')
    code2, out2, _ = run('run', 'hello', '--cpus', '2', '--json')
    assert code == 0 == code2
    a, b = json.loads(out), json.loads(out2)
    assert set(a) == {'scenario', 'seed', 'variant', 'outcome', 'findings', 'expected', 'ok', 'why',
                      'reports', 'counters', 'wall_s', 'output', 'memory_sha256'}
    assert sorted(a['output'].values()) == ['hello from cpu 0\n', 'hello from cpu 1\n']
    for key in ('instructions', 'page_faults', 'kmap_high_calls', 'pool_wraps', 'global_flushes',
                'ipis_sent', 'oom_kills', 'swap_outs', 'swap_ins'):
        assert key in a['counters'], key
    a.pop('wall_s'), b.pop('wall_s')
    assert a == b


def test_a_missed_expectation_exits_1(tmp_path):
    text = 'name = "x"\n' + GOOD_TASK + '[expect]\noutcome = "deadlock"\n'
    code, out, err = run('run', write(tmp_path, text))
    assert code == 1 and 'NOT AS EXPECTED' in out
