"""Every scenario meets its own expectation, variant by variant.

The expectation lives in the scenario file ([expect], [[expect.case]]);
these tests run the variants and assert what the runner judged from the
machine.  The quick variants run in `make test`; the long ones are marked
slow (`make test-slow`), and `make report` runs them all."""
import pytest

from kmaplab import scenario
from kmaplab.runner import run_variant

FAST = {
    'hello': None,
    'same-page-write': None,
    'munmap-race': None,
    'gup-pin': None,
    'kmap-local': None,
    'stale-pkmap': None,
    'kmap-scaling': [{'cpus': 2, 'write_path': p, 'pkmap': 1024}
                     for p in ('kmap', 'atomic_fallback', 'kmap_local')],
    'busybox': [{'cpus': 2, 'write_path': 'kmap'}],
    'c-workload': [{'cpus': 2}],
    'shell': [{'cpus': 2, 'write_path': 'kmap', 'reclaim': 'rmap'},
              {'cpus': 1, 'write_path': 'atomic_fallback', 'reclaim': 'rmap'}],
}


def cases():
    for name in scenario.list_names():
        try:
            scn = scenario.find(name)
        except scenario.MissingFile as e:          # busybox where it could not be fetched
            yield pytest.param(name, {}, marks=pytest.mark.skip(reason=str(e)), id=name)
            continue
        fast = FAST.get(name, [])
        fast = scn.variants() if name in FAST and fast is None else fast
        for v in scn.variants():
            marks = () if v in fast else pytest.mark.slow
            yield pytest.param(name, v, marks=marks, id=f'{name}-' + '-'.join(map(str, v.values())))
        for v in fast:
            if v not in scn.variants():
                yield pytest.param(name, v, id=f'{name}-' + '-'.join(map(str, v.values())))


@pytest.mark.parametrize('name, variant', list(cases()))
def test_scenario_meets_its_expectation(name, variant):
    r = run_variant(scenario.find(name), variant)
    assert r['ok'], f'{name} {variant}: {r["outcome"]}: {r["why"]}; replay: ' \
                    f'kmaplab run {name} ' + ' '.join(f'--set {k}={v}' for k, v in variant.items())


def test_same_seed_same_lines():
    s = scenario.find('munmap-race')
    v = s.variants()[0]
    a, b = run_variant(s, v, seed=5), run_variant(s, v, seed=5)
    for key in ('outcome', 'counters', 'variant', 'seed'):
        assert a[key] == b[key]
