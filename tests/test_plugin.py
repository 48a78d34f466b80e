"""The pytest plugin (kmaplab/pytest_plugin.py): a test outside the repo's
tests/ directory gets the `lab` fixture through the pytest11 entry point."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, 'docs', 'examples', 'test_my_design.py')


def test_the_example_runs_from_outside_the_repo_with_the_lab_fixture(tmp_path):
    shutil.copy(EXAMPLE, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith('PYTEST')}
    env['KMAPLAB_OUT'] = str(tmp_path / 'out')
    r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-rA',
                        'test_my_design.py'], cwd=tmp_path, capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert '2 passed' in r.stdout
    assert not os.path.exists(os.path.join(tmp_path, 'conftest.py'))


def test_a_failing_lab_test_prints_the_replay_command(tmp_path):
    (tmp_path / 'test_fail.py').write_text(
        "def test_it(lab):\n"
        "    lab.run('same-page-write', variant='write_path=atomic_fallback').expect('completed')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith('PYTEST')}
    env['KMAPLAB_OUT'] = str(tmp_path / 'out')
    r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'test_fail.py'],
                       cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 1
    assert 'expected completed' in r.stdout and 'deadlock' in r.stdout
    assert 'kmaplab replay' in r.stdout and 'kmaplab inject' in r.stdout
