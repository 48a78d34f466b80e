"""report.md and report.json (kmaplab/report.py, report_md.py, verdicts.py):
verdicts come from the numbers of the run, the verdicts open report.md,
several runs per variant with their spread, measured and modelled apart."""
import json

from kmaplab import report, verdicts

KEYS = {'claim', 'source', 'thread', 'lab', 'verdict', 'why', 'reproduce', 'trace', 'scenario', 'modelled'}


def _ks(cpus, wp, pool, **c):
    base = dict(global_flushes=0, pool_wraps=0, kmap_high_calls=0, ipis_sent=0, instructions=10 ** 6,
                cycles=10 ** 7, file_write_bytes=cpus << 22, kmap_lock_spin_insns=0)
    base.update(c)
    v = dict(cpus=cpus, write_path=wp)
    if pool:
        v['pkmap'] = pool
    return dict(scenario='kmap-scaling', variant=v, seed=0, outcome='completed', ok=True, counters=base)


def _pool_verdict(f1024, f4096, w1024, w4096):
    rs = [_ks(16, 'kmap', 1024, global_flushes=f1024, pool_wraps=w1024, kmap_high_calls=16384),
          _ks(16, 'kmap', 4096, global_flushes=f4096, pool_wraps=w4096, kmap_high_calls=16384)]
    return next(v for v in verdicts.verdicts(rs) if v['claim'].startswith('Pool 1024'))


def test_the_pool_verdict_follows_the_numbers():
    ten = _pool_verdict(100, 10, 100, 10)
    assert ten['verdict'] == 'reproduced' and '10.0x' in ten['lab']
    four = _pool_verdict(16, 4, 16, 4)
    assert four['verdict'] == 'partly' and 'stream fresh pages' in four['why'] and '4.0x' in four['lab']
    same = _pool_verdict(10, 10, 10, 10)
    assert same['verdict'] == 'not reproduced'


def test_every_claim_has_a_verdict_with_the_fields_even_without_results():
    vs = verdicts.verdicts([])
    assert len(vs) == len(verdicts.RULES) >= 13
    for v in vs:
        assert set(v) == KEYS and v['verdict'] in verdicts.VERDICTS


def test_a_small_report_opens_with_the_verdicts_and_gives_the_spread(tmp_path):
    results, wall = report.run_all(['same-page-write', 'hello'], jobs=2, out_dir=str(tmp_path),
                                   progress=False, seeds=2)
    assert len(results) == 2 * 5
    assert {r['schedule'] for r in results} == {'rr', 'random'}       # seed 0 as written, then random
    report.write_outputs(results, wall, str(tmp_path))
    md = (tmp_path / 'report.md').read_text()
    head = md.split('\n## ', 2)
    assert head[1].startswith('Verdicts') and '| claim | source | the thread | ours | verdict | why |' in head[1]
    same = [line for line in head[1].splitlines() if 'self-deadlocks' in line][0]
    assert '**reproduced**' in same and 'kmaplab run same-page-write' in same
    assert 'Measured (counts' in md and 'Modelled (simulated time' in md
    assert '`kmaplab trace same-page-write --variant write_path=perform_write --seed 0 --events-only`' in md
    data = json.loads((tmp_path / 'report.json').read_text())
    assert all(set(v) == KEYS for v in data['verdicts'])
    assert 'x2' in md                                            # outcomes counted over the runs
