"""The hardware properties the lab relies on (vm/selftest.py), as tests, and
the `kmaplab selftest` report format."""
import pytest

from vm import selftest


@pytest.mark.parametrize('name,check', selftest.CHECKS, ids=[n for n, _ in selftest.CHECKS])
def test_property(name, check):
    ok, detail = check()
    assert ok, f'{name}: {detail}'


def test_run_all_reports_one_line_per_check_and_fails_on_a_failure(monkeypatch):
    monkeypatch.setattr(selftest, 'CHECKS', [
        ('good', lambda: (True, 'fine')),
        ('bad', lambda: (False, 'broken')),
        ('crash', lambda: 1 / 0),
    ])
    lines = []
    assert selftest.run_all(lines.append) is False
    assert lines == ['PASS good: fine', 'FAIL bad: broken',
                     'FAIL crash: ZeroDivisionError: division by zero']


def test_run_all_true_when_all_pass(monkeypatch):
    monkeypatch.setattr(selftest, 'CHECKS', [('a', lambda: (True, 'x')), ('b', lambda: (True, 'y'))])
    lines = []
    assert selftest.run_all(lines.append) is True
    assert lines == ['PASS a: x', 'PASS b: y']


def test_cli_selftest_exit_code(monkeypatch, capsys):
    from kmaplab.cli import main
    monkeypatch.setattr(selftest, 'CHECKS', [('a', lambda: (True, 'x'))])
    assert main(['selftest']) == 0
    monkeypatch.setattr(selftest, 'CHECKS', [('a', lambda: (False, 'x'))])
    assert main(['selftest']) == 1
    assert capsys.readouterr().out.splitlines() == ['PASS a: x', 'FAIL a: x']


def test_determinism_sees_the_lost_updates():
    """The racy program really races (otherwise (f) would prove little):
    the unlocked counter loses updates, the locked one does not."""
    _, _, counts, end = selftest.racy_run(seed=1, cpus=3, n=300)
    assert end == 'finished'
    assert counts[1] == 900
    assert counts[0] < 900


def test_stale_tlb_is_per_cpu_not_global():
    """Without any remote change, both CPUs see the same data: the stale read
    in check_tlb_shootdown comes from CPU1's own TLB, not from RAM."""
    rig = selftest.Rig(cpus=2)
    rig.m.write32(selftest.DATA, 0xABCD)
    for i in (0, 1):
        assert rig.call(i, 'read_x', edx=selftest.DATA).kind == 'hlt'
        assert rig.cpus[i].regs['eax'] == 0xABCD


def test_bench_runs_every_row_quickly(capsys):
    """`kmaplab bench --json` at a tiny duration: every row measures, the
    JSON object is complete (the numbers themselves are not checked)."""
    import json
    from kmaplab import bench
    assert bench.run_bench(json_out=True, seconds=0.02) == 0
    d = json.loads(capsys.readouterr().out)
    assert d['errors'] == []
    names = [r['name'] for r in d['rows']]
    # 12 machine + 4 real runs + 5 kernel round trips + 3 scaling + explore + 6 tracing + 3 TLB
    # + the assembler
    assert len(names) == 35 and names[0].startswith('raw Unicorn')
    assert any(n.startswith('explore: one munmap-race run') for n in names)
    assert any(n.startswith('host CPU per CPU-page, 32 / 4 CPUs') for n in names)
    assert any(n.startswith('assemble 2,400 lines') for n in names)
    assert any(n.startswith('real run / raw: kmap-scaling') for n in names)
    assert any(n.startswith('kernel: getpid') for n in names)
    assert any(n.startswith('tlb=p3 CPU time / tlb=qemu') for n in names)
    assert any('naive' in n for n in names)
    assert all(r['value'] > 0 for r in d['rows'])
    assert d['raw_insn_per_s'] > 0 and d['target']['ratio'] > 0
    assert {r['unit'] for r in d['rows']} == {'insn/s', 'us', '%'}


def test_bench_reports_a_failing_row(capsys):
    from kmaplab import bench

    def broken(b):
        raise RuntimeError('no such device')
    assert bench.run_bench(rows=[broken], seconds=0.01) == 1
    assert 'ERROR broken: RuntimeError: no such device' in capsys.readouterr().out
