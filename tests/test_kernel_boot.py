"""The kernel boots and runs user programs end to end (hello scenario)."""
from kmaplab import scenario
from kmaplab.runner import run_variant


def test_hello_runs_on_every_cpu():
    s = scenario.find('hello')
    r = run_variant(s, {}, overrides={'cpus': 4})
    lines = sorted(line for _, _, line in r['console'])
    assert lines == [f'hello from cpu {i}' for i in range(4)]
    assert r['outcome'] == 'completed' and r['ok'], r['why']


def test_hello_is_deterministic():
    s = scenario.find('hello')
    a = run_variant(s, {}, overrides={'cpus': 2, 'schedule': 'random'}, seed=3)
    b = run_variant(s, {}, overrides={'cpus': 2, 'schedule': 'random'}, seed=3)
    assert a['counters'] == b['counters']
