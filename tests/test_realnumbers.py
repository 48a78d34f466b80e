"""Issue 14: the thread's real numbers.  The named designs (boot option
`design`: 2.4.18 mainline, Andrew's kmap patches), scenario [params] (a
swept number of clients or jobs), files that give their disk extents back
at unlink, the dbench scenario and the verdict rules on dbench and
kernel-compile results."""
import os
import subprocess
import sys

import pytest

from kmaplab import options, runner, verdicts
from kmaplab import scenario as scn_mod
from minikernel.kernel import DESIGNS, ROOT, parse_config

DBCLIENT = os.path.join(ROOT, 'build', 'workloads', 'dbclient')
KCC = os.path.join(ROOT, 'build', 'workloads', 'kcc')


def needs(path):
    if not os.path.exists(path):
        pytest.skip(f'{path} not built (make setup builds it with zig)')


# ---- the named designs -------------------------------------------------------------------------

def test_a_design_sets_the_read_and_write_paths_together():
    cfg, _ = parse_config({'design': 'mainline-2.4.18'})
    assert (cfg['write_path'], cfg['read_path']) == ('kmap', 'kmap')
    cfg, _ = parse_config({'design': 'akpm-kmap'})
    assert (cfg['write_path'], cfg['read_path'], cfg['atomic_fault']) == ('atomic_fallback', 'atomic', 'fixup')
    cfg, _ = parse_config({'design': 'akpm-kmap', 'write_path': 'atomic_fallback'})   # agreeing is fine
    assert cfg['design'] == 'akpm-kmap'


def test_a_design_contradicted_by_an_option_is_a_one_line_error():
    with pytest.raises(ValueError) as e:
        parse_config({'design': 'akpm-kmap', 'read_path': 'kmap'})
    assert 'design=akpm-kmap sets read_path=atomic' in str(e.value) and '\n' not in str(e.value)
    with pytest.raises(ValueError):
        parse_config({'design': 'andrew'})


def test_variant_selection_sees_through_a_design():
    scn = scn_mod.find('dbench')
    vs = scn.variants()
    assert [v['design'] for v in vs] == list(DESIGNS)
    assert options.select(scn, vs, 'write_path=kmap') == [{'design': 'mainline-2.4.18'}]
    assert options.select(scn, vs, 'read_path=atomic') == [{'design': 'akpm-kmap'}]


# ---- [params] ----------------------------------------------------------------------------------

PARAMS = '''
name = "p"
[machine]
cpus = 2
[params]
per_cpu = 2
tag = "x"
[[task]]
name = "w"
program = "writer"
args = ["{tag}{cpu}.{n}", 4, 4096, 1]
cpu = "each"
count = "{per_cpu}"
[sweep]
per_cpu = [1, 3]
[expect]
checks = ["tasks_exited == cpus * per_cpu"]
'''


def test_params_are_swept_counted_and_substituted_but_not_booted(tmp_path):
    p = tmp_path / 's.toml'
    p.write_text(PARAMS)
    scn = scn_mod.load(str(p))
    assert scn.variants() == [{'per_cpu': 1}, {'per_cpu': 3}]
    assert 'per_cpu' not in scn.options({'per_cpu': 3})
    r = runner.run_variant(scn, {"per_cpu": 3})
    assert r['ok'], r['why']
    assert r['counters']['tasks_exited'] == 6
    k = r['kernel']
    assert sorted(t.name for t in k.scenario_tasks['w']) == ['w0.0', 'w0.1', 'w0.2', 'w1.0', 'w1.1', 'w1.2']
    assert {'x0.0', 'x1.2'} <= set(k.vfs.inodes)              # args say {tag}{cpu}.{n}


@pytest.mark.parametrize('edit, why', [
    (('per_cpu = 2', 'cpus = 2'), 'not a free name'),
    (('per_cpu = 2', 'per_cpu = true'), 'an integer from 0'),
    (('count = "{per_cpu}"', 'count = "{tag}"'), 'count'),
    (('count = "{per_cpu}"', 'count = 0'), 'count'),
    (('per_cpu = [1, 3]', 'per_cpu = ["a"]'), 'is not a int'),
    (('"{tag}{cpu}.{n}"', '"{nope}"'), '{nope}'),
])
def test_bad_params_are_one_line_errors(tmp_path, edit, why):
    p = tmp_path / 's.toml'
    p.write_text(PARAMS.replace(*edit))
    with pytest.raises(scn_mod.ScenarioError) as e:
        scn_mod.load(str(p))
    assert why in str(e.value) and '\n' not in str(e.value)


def test_set_of_a_param_pins_it_from_the_command_line():
    out = subprocess.run([sys.executable, '-m', 'kmaplab.cli', 'run', 'dbench', '--set', 'per_cpu=x'],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and 'per_cpu' in out.stderr and 'Traceback' not in out.stderr


# ---- dbench ------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def small_dbench():
    """Both designs, 4 CPUs, one client per CPU (the scenario's shape, smaller)."""
    needs(DBCLIENT)
    scn = scn_mod.find('dbench')
    return [runner.run_variant(scn, v, overrides={'cpus': 4, 'per_cpu': 1}) for v in scn.variants()]


def test_dbench_completes_with_the_oracle_clean_on_both_designs(small_dbench):
    for r in small_dbench:
        c = r['counters']
        assert r['outcome'] == 'completed' and r['ok'], r['why']
        assert c['oracle_mismatches'] == 0 and c['tasks_exited'] == 4
        assert c['file_write_bytes'] == c['file_read_bytes'] > 4 * 2 * 2 * 16384
        assert c['fs_extents_freed'] == 4 * 2 * 2               # every unlinked file gave its extent back
        assert c['io_mb_per_s'] == round((c['file_write_bytes'] + c['file_read_bytes']) * 1000 / c['cycles'], 3)


def test_dbench_kmap_high_callers_follow_the_design(small_dbench):
    mainline, akpm = small_dbench
    c = mainline['counters']
    assert c['kmap_high_calls.file_read_actor'] == c['read_kmap_copies'] > 0
    assert c['kmap_high_calls.generic_file_write'] > 0
    assert c['read_atomic_copies'] == 0
    a = akpm['counters']
    assert a['kmap_high_calls'] == 0 and a['read_kmap_copies'] == 0
    assert a['read_atomic_copies'] == c['read_kmap_copies']            # same reads, other path
    assert a['kmap_atomic_calls'] > 0


def test_the_dbench_verdicts_come_from_the_runs(small_dbench):
    vs = {v['claim']: v for v in verdicts.verdicts(small_dbench)}
    thr = vs['dbench 512 throughput with the kmap_atomic copy patches']
    prof = vs['kmap locking dominates the profile on 16 CPUs (dbench 512)']
    for v in (thr, prof):
        assert v['verdict'] in verdicts.VERDICTS and v['reproduce'].startswith('kmaplab run dbench')
    assert 'MB per simulated second' in thr['lab'] and thr['modelled']


def _db(design, mb, lock=0, **c):
    base = dict(io_mb_per_s=mb, instructions=10 ** 6, kmap_lock_spin_insns=lock, tasks_exited=64, cpus=16,
                kmap_high_calls=100, pool_wraps=1, kmap_sleeps=0, global_flushes=1)
    base.update(c)
    return dict(scenario='dbench', variant={'design': design}, seed=0, outcome='completed', ok=True,
                counters=base)


@pytest.mark.parametrize('mb_after, verdict', [(47.0, 'reproduced'), (33.5, 'partly'), (32.4, 'not reproduced'),
                                               (30.0, 'not reproduced')])
def test_the_throughput_verdict_follows_the_ratio(mb_after, verdict):
    rs = [_db('mainline-2.4.18', 32.3), _db('akpm-kmap', mb_after)]
    v = verdicts.rule_dbench_throughput(rs)
    assert v['verdict'] == verdict


def test_the_profile_verdict_follows_the_lock_share():
    assert verdicts.rule_dbench_profile([_db('mainline-2.4.18', 1, lock=640_000)])['verdict'] == 'reproduced'
    assert verdicts.rule_dbench_profile([_db('mainline-2.4.18', 1, lock=100_000)])['verdict'] == 'partly'
    assert verdicts.rule_dbench_profile([_db('mainline-2.4.18', 1, lock=1_000)])['verdict'] == 'not reproduced'


def test_the_throughput_verdict_says_when_only_the_cost_model_sees_it():
    m = _db('mainline-2.4.18', 32.3, file_write_bytes=1000, model_cycles_per_byte=10.0,
            model_cycles_per_byte_numaq=13.0)
    a = _db('akpm-kmap', 32.4, file_write_bytes=1000, model_cycles_per_byte=9.8, model_cycles_per_byte_numaq=9.9)
    v = verdicts.rule_dbench_throughput([m, a])
    assert v['verdict'] == 'partly' and v['modelled'] and '1.313x with a NUMA-Q remote line' in v['lab']
    a['counters']['model_cycles_per_byte_numaq'] = 12.9
    assert verdicts.rule_dbench_throughput([m, a])['verdict'] == 'not reproduced'


# ---- files across extents, exec'd C programs, kernel-compile -----------------------------------

def test_sync_writes_a_file_across_extents_that_are_not_adjacent():
    """8 KiB extents: the objects and ld's vmlinux grow over extents that
    freed .s files' extents sit between, so a file's blocks are not
    contiguous: mpage_writepages must start a new bio where an extent ends
    (before: vmlinux's pages landed on the objects' blocks; the data
    oracle checks the disk after the final sync)."""
    needs(KCC)
    scn = scn_mod.find('kernel-compile')
    r = runner.run_variant(scn, {'design': 'akpm-kmap', 'pkmap': 1024},
                           overrides={'jobs': 3, 'par': 2, 'fs_extent': 8192})
    assert r['ok'], r['why']
    c = r['counters']
    assert c['oracle_mismatches'] == 0 and c['fs_extents_freed'] == 3 and c['fs_extents_added'] > 3




@pytest.fixture(scope='module')
def small_compile():
    needs(KCC)
    scn = scn_mod.find('kernel-compile')
    return {v['design']: runner.run_variant(scn, v, overrides={'jobs': 2, 'par': 2})
            for v in scn.variants() if v['pkmap'] == 1024}


def test_kernel_compile_runs_fork_exec_and_the_oracle_is_clean(small_compile):
    for r in small_compile.values():
        c = r['counters']
        assert r['outcome'] == 'completed' and r['ok'], r['why']
        assert c['tasks_exited'] == 1 + 3 * 2 + 1                 # make, 2 x (cc, cc1, as), ld
        assert c['oracle_mismatches'] == 0 and c['host_checks'] >= 1
        assert c['kmap_high_calls.file_read_actor' if r['variant']['design'] == 'mainline-2.4.18'
                 else 'kmap_atomic_calls.file_read_actor'] > 0


def test_copy_strings_kmaps_per_string_in_mainline_and_per_page_with_andrews_patches(small_compile):
    m, a = small_compile['mainline-2.4.18']['counters'], small_compile['akpm-kmap']['counters']
    # 2.4.18: one kmap per string piece: make passes 68 environment strings to every exec
    assert m['kmap_high_calls.copy_strings'] >= 7 * 68
    # kmapped_page: one kmap per argument page touched (a few per exec)
    assert 0 < a['kmap_high_calls.copy_strings'] <= 7 * 4
    assert a['kmap_high_calls'] == a['kmap_high_calls.copy_strings']       # reads and writes are atomic


def _kc(design, pool, **c):
    base = dict(global_flushes=0, pool_wraps=0, kmap_new_mappings=377, kmap_high_calls=5315, cycles=30_496_210,
                instructions=24_771_151)
    base.update(c)
    return dict(scenario='kernel-compile', variant={'design': design, 'pkmap': pool}, seed=0,
                outcome='completed', ok=True, counters=base)


def _kc_verdicts(**over):
    prof = {'kmap_high_calls.copy_strings': 4052, 'kmap_high_calls.file_read_actor': 1087,
            'kmap_high_calls.generic_file_write': 176}
    rs = [_kc('mainline-2.4.18', 1024, **dict(prof, **over.get('m1024', {}))),
          _kc('mainline-2.4.18', 4096, **over.get('m4096', {})),
          _kc('akpm-kmap', 1024, **dict({'kmap_high_calls': 147, 'cycles': 30_300_068,
                                         'instructions': 24_278_065, 'kmap_high_calls.copy_strings': 147},
                                        **over.get('a1024', {})))]
    return {v['claim'].split()[0]: v for v in verdicts.verdicts(rs)}


def test_the_kernel_compile_verdicts_follow_the_numbers():
    v = _kc_verdicts()
    assert v['kunmap_high']['verdict'] == 'reproduced' and 'copy_strings 4,052 (76%)' in v['kunmap_high']['lab']
    assert v['Atomic']['verdict'] == 'reproduced' and '(36.2x)' in v['Atomic']['lab']
    assert v['...']['verdict'] == 'reproduced' and '+0.6%' in v['...']['lab'] and v['...']['modelled']
    assert v['Pool']['verdict'] == 'not reproduced' and 'neither pool wrapped' in v['Pool']['why']
    assert v['Pool']['reproduce'] == 'kmaplab run kernel-compile --variant design=mainline-2.4.18,pkmap=1024'
    v = _kc_verdicts(m1024=dict(global_flushes=40, kmap_new_mappings=41_000), m4096=dict(global_flushes=4))
    assert v['Pool']['verdict'] == 'reproduced' and '(10.0x)' in v['Pool']['lab']
    v = _kc_verdicts(a1024=dict(kmap_high_calls=4000, cycles=40_000_000))
    assert v['Atomic']['verdict'] == 'partly' and v['...']['verdict'] == 'not reproduced'
