"""The README tour on a fresh clone (tools/tour): every command exits 0
with bounded output.  Slow (a clone, make setup, the whole tour)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tour_commands_are_parsed_from_the_readme():
    sys.path.insert(0, os.path.join(ROOT, 'tools'))
    import importlib.machinery
    tour = importlib.machinery.SourceFileLoader('tour', os.path.join(ROOT, 'tools', 'tour')).load_module()
    cmds = tour.tour_commands(os.path.join(ROOT, 'README.md'))
    assert len(cmds) >= 10 and all('  #' not in c and not c.endswith('\\') for c in cmds)
    assert any(c.startswith('.venv/bin/kmaplab run scenarios/explore/same-page-reclaim.toml --schedule')
               for c in cmds)


@pytest.mark.slow
def test_every_tour_command_exits_0_on_a_fresh_clone():
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'tour')], capture_output=True,
                       text=True)
    print(r.stdout)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
