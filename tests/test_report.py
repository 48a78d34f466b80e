"""kmaplab report (kmaplab/report.py): CPU seconds per scenario and in
total, and the same results whatever the backend (process pool or Ray) and
job count."""
import json

import pytest

from kmaplab import report
from kmaplab.cli import main

SMALL = 'hello,same-page-write'
HOST = ('wall_s', 'cpu_s')          # host-dependent: everything else must be identical


def _results(out):
    data = json.loads((out / 'report.json').read_text())
    return [{k: v for k, v in r.items() if k not in HOST} for r in data['results']]


def test_report_prints_cpu_seconds_per_scenario_and_total(tmp_path, capsys):
    assert main(['report', '--scenarios', SMALL, '--seeds', '1', '--jobs', '1', '--out', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith('CPU seconds:'))
    data = json.loads((tmp_path / 'report.json').read_text())
    by, total = report.cpu_seconds(data['results'])
    assert set(by) == {'hello', 'same-page-write'}
    assert all(r['cpu_s'] > 0 for r in data['results'])
    assert f'total {total:.1f} CPU-s for {len(data["results"])} runs' in line
    assert 'CPU-s' in (tmp_path / 'report.md').read_text()


@pytest.mark.slow
def test_report_results_do_not_depend_on_the_job_count(tmp_path):
    assert main(['report', '--scenarios', SMALL, '--seeds', '1', '--jobs', '1', '--out', str(tmp_path / 'a')]) == 0
    assert main(['report', '--scenarios', SMALL, '--seeds', '1', '--jobs', '2', '--out', str(tmp_path / 'b')]) == 0
    assert _results(tmp_path / 'a') == _results(tmp_path / 'b')


@pytest.mark.slow
def test_report_and_explore_on_a_local_ray_match_the_pool(tmp_path, capsys):
    ray = pytest.importorskip('ray')
    try:
        assert main(['report', '--scenarios', SMALL, '--seeds', '1', '--jobs', '2', '--out', str(tmp_path / 'p')]) == 0
        assert main(['report', '--scenarios', SMALL, '--seeds', '1', '--jobs', '2', '--backend', 'ray',
                     '--out', str(tmp_path / 'r')]) == 0
        assert _results(tmp_path / 'p') == _results(tmp_path / 'r')
        capsys.readouterr()
        args = ['explore', 'explore/munmap-race.toml', '--variant', 'write_path=dont_unmap,atomic_fault=sleep',
                '--strategy', 'random', '--runs', '6', '--all', '--jobs', '2', '--json', '--no-shrink']
        main(args + ['--out', str(tmp_path / 'p.json')])
        pool = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith('{')]
        main(args + ['--backend', 'ray', '--out', str(tmp_path / 'r.json')])
        on_ray = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith('{')]
    finally:
        ray.shutdown()
    for s in pool + on_ray:
        for k in ('elapsed_s', 'schedules_per_s', 'runs_per_core_s', 'schedule', 'replay'):
            s.pop(k, None)
    assert pool and pool == on_ray
