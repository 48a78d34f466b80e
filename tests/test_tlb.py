"""The modelled TLB (tlb=p3, vm/tlb.py + vm/_tlb.c).

Differential tests: with unlimited capacity and no global pages the model
must be invisible: every scenario gives the same outcome, the same counters
(instructions, cycles, faults, ...) and the same final guest RAM (A/D bits
included) as QEMU's own walker and soft TLB.  A bounded subset runs in
`make test`; every variant of every scenario is the slow test."""
import hashlib

import pytest

from kmaplab import scenario
from kmaplab.runner import run_variant
from minikernel.kernel import parse_config
from vm.tlb import COUNTERS, P3_GEOMETRY, UNLIMITED, parse_geometry

MODEL_INVISIBLE = {'tlb': 'p3', 'tlb_geometry': 'unlimited', 'pge': False}


def _run(name, variant, overrides):
    r = run_variant(scenario.find(name), variant, overrides=overrides)
    k = r.pop('kernel')
    ram = hashlib.sha256(bytes(k.machine.ram)).hexdigest()
    counters = {c: v for c, v in r['counters'].items()
                if c not in COUNTERS and not c.startswith(('tlb_misses', 'tlb_global_refills_cpu',
                                                           'tlb_pge_flushes_cpu', 'tlb_refills_per',
                                                           'model_'))}
    return r['outcome'], r['findings'], counters, ram, r['counters']


def _differential(name, variant):
    q = _run(name, variant, {'tlb': 'qemu'})
    p = _run(name, variant, MODEL_INVISIBLE)
    assert q[0] == p[0], f'{name} {variant}: outcome {q[0]} under qemu, {p[0]} under the model'
    assert q[1] == p[1]
    diff = {c: (q[2][c], p[2].get(c)) for c in q[2] if q[2][c] != p[2].get(c)}
    assert not diff, f'{name} {variant}: counters differ (qemu, model): {diff}'
    assert q[3] == p[3], f'{name} {variant}: final guest RAM differs'
    assert p[4]['tlb_misses'] > 0 and p[4]['tlb_evictions'] == 0


FAST = [('hello', {}), ('gup-pin', {'write_path': 'gup_pin'}),
        ('same-page-write', {'write_path': 'atomic_fallback'}),
        ('same-page-write', {'write_path': 'perform_write'})]


@pytest.mark.parametrize('name, variant', FAST, ids=[f'{n}-{"-".join(map(str, v.values()))}'
                                                    for n, v in FAST])
def test_model_with_unlimited_capacity_is_invisible(name, variant):
    _differential(name, variant)


def _all_variants():
    for name in scenario.list_names():
        for v in scenario.find(name).variants():
            yield pytest.param(name, v, id=f'{name}-' + '-'.join(map(str, v.values())))


@pytest.mark.slow
@pytest.mark.parametrize('name, variant', list(_all_variants()))
def test_model_is_invisible_on_every_scenario(name, variant):
    _differential(name, variant)


def test_p3_counts_misses_per_cpu_and_is_deterministic():
    a = _run('hello', {}, {'tlb': 'p3'})
    b = _run('hello', {}, {'tlb': 'p3'})
    assert a[4] == b[4] and a[3] == b[3]
    c = a[4]
    assert c['tlb_misses'] == sum(c[f'tlb_misses_cpu{i}'] for i in range(4))
    assert c['itlb_misses_kernel'] > 0 and c['dtlb_misses_kernel'] > 0
    assert c['dtlb_misses_user'] > 0 and c['itlb_misses_user'] > 0


def test_geometry_option():
    assert parse_geometry('p3') == P3_GEOMETRY
    assert parse_geometry('unlimited') == UNLIMITED
    assert parse_geometry('16,2,32,4') == ((16, 2), (32, 4), (2, 2), (8, 4))
    for bad in ('x', '64,3,64,4', '1,2,3'):
        with pytest.raises(ValueError):
            parse_config({'tlb': 'p3', 'tlb_geometry': bad})
    with pytest.raises(ValueError):
        parse_config({'tlb': 'p4'})
    assert parse_config({'tlb': 'p3'})[0]['pge'] is True
    assert parse_config({})[0]['pge'] is False


def test_smaller_tlb_misses_more():
    small = _run('gup-pin', {'write_path': 'gup_pin'}, {'tlb': 'p3', 'tlb_geometry': '8,2,8,2'})
    p3 = _run('gup-pin', {'write_path': 'gup_pin'}, {'tlb': 'p3'})
    assert small[0] == p3[0] == 'completed'
    assert small[4]['tlb_misses'] > p3[4]['tlb_misses']
    assert small[4]['tlb_evictions'] > p3[4]['tlb_evictions']
