"""Real programs in scenario files (kmaplab/programs.py): [[file]] host=,
[[task]] exec=/argv=/env=/after=, cpu = "rr", and the host's answers
([[expect.output]], [[expect.file]]) checked at run time."""
import os

import pytest

from kmaplab import runner
from kmaplab import scenario as scn_mod
from minikernel.kernel import ROOT

NOLIBC = os.path.join(ROOT, 'build', 'workloads', 'nolibc')


def needs_nolibc():
    if not os.path.exists(NOLIBC):
        pytest.skip(f'{NOLIBC} not built (make setup builds it with zig)')


def write(tmp_path, text, name='s.toml'):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


BASE = '''
name = "t"
[machine]
cpus = 2
[[file]]
name = "/bin/nolibc"
host = "workloads/nolibc"
mode = 0o755
[[file]]
name = "/data/r"
size = "40K"
fill = "random"
seed = 5
[[task]]
name = "first"
exec = "/bin/nolibc"
argv = ["nolibc", "x"]
env = ["A=1"]
cpu = "rr"
[[task]]
name = "second"
exec = "/bin/nolibc"
argv = ["nolibc", "y", "z"]
cpu = "rr"
after = "first"
'''


def test_exec_tasks_argv_env_after_and_answers(tmp_path):
    needs_nolibc()
    path = write(tmp_path, BASE + '''
[expect]
outcome = "completed"
checks = ["tasks_exited == 2", "host_checks == 4"]
[[expect.output]]
task = "first"
contains = "nolibc: argc=2 nolibc x env=1 failed=0\\n"
[[expect.output]]
task = "second"
contains = "argc=3 nolibc y z env=0"
[[expect.file]]
name = "/data/r"
same_as = "/data/r"
''')
    scn = scn_mod.load(path)
    r = runner.run_variant(scn, {})
    assert r['ok'], r['why']
    k = r['kernel']
    first, second = k.scenario_tasks['first'][0], k.scenario_tasks['second'][0]
    assert (first.cpu, second.cpu) == (0, 1)             # cpu = "rr"
    assert first.pid < second.pid
    assert r['output'][f'first/{first.pid}'].startswith('nolibc: argc=2')


def test_a_wrong_answer_is_a_failed_outcome(tmp_path):
    needs_nolibc()
    path = write(tmp_path, BASE + '''
[[file]]
name = "/data/other"
size = "8K"
[[expect.output]]
task = "first"
contains = "{sha256:/data/r}"
[[expect.file]]
name = "/data/r"
same_as = "/data/other"
''')
    r = runner.run_variant(scn_mod.load(path), {})
    assert r['outcome'] == 'failed' and not r['ok']
    wrong = [x['message'] for x in r['reports'] if x['kind'] == 'wrong_answer']
    assert any('output does not contain' in m for m in wrong)
    assert any('/data/r: 40960 bytes in the page cache, expected 8192' in m for m in wrong)
    assert any('on the disk' in m for m in wrong)


@pytest.mark.parametrize('extra, why', [
    ('[[file]]\nname = "/x"\nhost = "../../etc/passwd"\n', 'leaves'),
    ('[[file]]\nname = "/x"\nhost = "no/such/file"\n', 'not found'),
    ('[[file]]\nname = "/x"\nhost = "workloads/nolibc"\nsize = 3\n', 'not both'),
    ('[[file]]\nname = "/x"\nsize = 3\nmode = "rwx"\n', 'mode'),
    ('[[task]]\nexec = "/bin/nope"\n', 'not a [[file]]'),
    ('[[task]]\nexec = "/bin/nolibc"\nargv = "x"\n', "argv: 'x' is not a list"),
    ('[[task]]\nexec = "/bin/nolibc"\nafter = "later"\n', 'not an earlier task'),
    ('[[task]]\nprogram = "hello"\nargv = ["a"]\n', 'only with exec'),
    ('[[expect.output]]\ntask = "nobody"\ncontains = "x"\n', "task: 'nobody' is not a task"),
    ('[[expect.output]]\ntask = "first"\ncontains = "{sha256:/nope}"\n', 'is not a [[file]]'),
    ('[[expect.file]]\nname = "/a"\n', 'same_as'),
])
def test_bad_real_program_keys_are_one_line_errors(tmp_path, extra, why):
    needs_nolibc()
    path = write(tmp_path, BASE + extra)
    with pytest.raises(scn_mod.ScenarioError) as e:
        scn_mod.load(path)
    assert why in str(e.value) and '\n' not in str(e.value)


def test_a_malformed_elf_in_a_scenario_is_exit_2(tmp_path):
    (tmp_path / 'bad.elf').write_bytes(b'\x7fELF\x01\x01\x01' + bytes(60))
    path = write(tmp_path, '''
name = "t"
[[file]]
name = "/bin/bad"
host = "bad.elf"
[[task]]
exec = "/bin/bad"
''')
    import subprocess
    import sys
    p = subprocess.run([sys.executable, '-m', 'kmaplab.cli', 'run', path], capture_output=True,
                       text=True, cwd=ROOT)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and 'ELF' in p.stderr
