"""Instruction tracing (vm/trace.py, kmaplab/trace.py): what the C hooks
record, that tracing never changes a run, the filters, the formats, and the
sleep-in-atomic story in a text trace.

Machine-level tests run small guest routines on vm.selftest's Rig, whose
results are known instruction by instruction; kernel-level tests trace the
hello scenario and small workloads.
"""
import collections
import io
import json
import os

import pytest

from kmaplab import scenario as scn_mod
from kmaplab import trace as ktrace
from kmaplab import trace_perfetto as kperfetto
from kmaplab import trace_tenet as ktenet
from kmaplab import trace_text as ktext
from kmaplab.runner import run_variant
from minikernel import layout
from vm import trace as vtrace
from vm import x86
from vm.selftest import CODE, DATA, FAR, Rig

MiB = 1 << 20


class Keep:
    """A vm.trace consumer keeping every run's records."""

    def __init__(self, enabled=True):
        self.runs = []
        self.enabled = enabled

    def before_run(self, cpu, budget):
        return self.enabled

    def after_run(self, cpu, trap, recs, mems, stop, dropped):
        self.runs.append((trap, recs, mems, stop, dropped))


def _reg(rec, name):
    return int(rec['regs'][vtrace.REGS.index(name)])


# ---- the machine side ------------------------------------------------------------

def test_records_give_eip_icount_registers_before_and_physical_accesses():
    rig = Rig()
    rig.set_pte(DATA, FAR | x86.PTE_P | x86.PTE_W)                 # DATA -> FAR: VA != PA
    rig.set_pte(DATA + 0x1000, (FAR + 0x1000) | x86.PTE_P | x86.PTE_W)
    rig.m.write(FAR, bytes(range(12)))
    keep = Keep()
    mt = vtrace.MachineTrace(rig.m, keep)
    mt.set_ranges([(CODE, CODE + 0x10000)])
    mt.attach()
    mt.on()
    trap = rig.call(0, 'copy_dwords', esi=DATA, edi=DATA + 0x1000, ecx=3)
    assert trap.kind == 'hlt'
    _, recs, mems, stop, dropped = keep.runs[-1]
    insns = recs[recs['kind'] == vtrace.INSN]
    # cld, nop, nop, 3 iterations + the ECX=0 pass of rep movsd, hlt: 8, counted from 0
    assert insns['icount'].tolist() == list(range(8))
    assert insns['seq'].tolist() == list(range(8))                 # one CPU: seq == icount
    start = rig.sym('copy_dwords')
    assert insns['eip'].tolist()[:4] == [start, start + 1, start + 2, start + 3]
    movs = insns[3:6]
    assert [_reg(r, 'ecx') for r in movs] == [3, 2, 1]             # registers BEFORE each pass
    assert [_reg(r, 'esi') for r in movs] == [DATA, DATA + 4, DATA + 8]
    assert movs['nmem'].tolist() == [2, 2, 2]
    assert mems['type'].tolist() == [vtrace.MEM_READ, vtrace.MEM_WRITE] * 3
    assert mems['pa'].tolist()[:2] == [FAR, FAR + 0x1000]          # physical, not DATA
    assert mems['value'].tolist()[:2] == [0x03020100, 0x03020100]
    assert dropped == 0 and stop[vtrace.REGS.index('ecx')] == 0


def test_exit_hook_closes_a_range_left_by_falling_through():
    rig = Rig()
    keep = Keep()
    mt = vtrace.MachineTrace(rig.m, keep)
    body, end = rig.sym('count_loop_body'), rig.sym('count_loop_end')
    mt.set_ranges([(body, end)])
    mt.attach()
    mt.on()
    rig.call(0, 'count_loop', ecx=2)
    recs = keep.runs[-1][1]
    kinds = recs['kind'].tolist()
    assert kinds == [vtrace.INSN] * 6 + [vtrace.STATE]             # 2 x (add, dec, jnz), then out
    state = recs[-1]
    assert state['eip'] == end and state['icount'] == 7            # mov eax,0 is untraced (icount 0)
    assert _reg(state, 'eax') == 2 and _reg(state, 'ecx') == 0


def test_hooks_added_later_see_code_translated_earlier():
    """Switching tracing on flushes the translation cache: a block that ran
    (and was translated) before the hooks existed is traced afterwards."""
    rig = Rig()
    rig.call(0, 'count_loop', ecx=5)                               # translated, untraced
    keep = Keep()
    mt = vtrace.MachineTrace(rig.m, keep)
    mt.set_ranges([(CODE, CODE + 0x10000)])
    mt.attach()
    mt.on()
    rig.call(0, 'count_loop', ecx=5)
    assert (keep.runs[-1][1]['kind'] == vtrace.INSN).sum() == 1 + 3 * 5 + 1
    mt.off()
    rig.call(0, 'count_loop', ecx=5)
    assert len(keep.runs[-1][1]) == 0                              # attached, hooks gone
    mt.detach()
    n = len(keep.runs)
    rig.call(0, 'count_loop', ecx=5)
    assert len(keep.runs) == n                                     # CPU.run no longer wrapped


def test_tracing_off_for_a_run_records_nothing_and_counts_stay_exact():
    rig = Rig()
    keep = Keep(enabled=False)
    mt = vtrace.MachineTrace(rig.m, keep)
    mt.set_ranges([(CODE, CODE + 0x10000)])
    mt.attach()
    mt.on()
    before = rig.cpus[0].instructions
    rig.call(0, 'count_loop', ecx=10)
    assert len(keep.runs[-1][1]) == 0
    assert rig.cpus[0].instructions - before == 1 + 3 * 10 + 1


# ---- tracing a kernel ---------------------------------------------------------------

def _trace(name='hello', sink=None, filters=None, variant=None, overrides=None, seed=None):
    s = scn_mod.find(name)
    sink = sink or ktext.JsonlSink(io.StringIO())
    tracer = ktrace.Tracer(sink, filters or ktrace.Filters(), dict(scenario=s.name))
    r = run_variant(s, variant or s.variants()[0], seed=seed,
                    overrides=overrides if overrides is not None else {'cpus': 2}, tracer=tracer)
    tracer.close(r)
    return r, sink


def _jsonl(sink):
    return [json.loads(line) for line in sink.out.getvalue().splitlines()]


def _counters(r):
    return {k: v for k, v in r['counters'].items()}


@pytest.fixture(scope='module')
def hello_full():
    r, sink = _trace()
    return r, _jsonl(sink)


def test_tracing_does_not_change_hello(hello_full):
    s = scn_mod.find('hello')
    plain = run_variant(s, {}, overrides={'cpus': 2})
    r, entries = hello_full
    assert _counters(r) == _counters(plain)
    assert r['outcome'] == plain['outcome'] == 'completed'
    insns = [e for e in entries if e['type'] == 'insn']
    retired = sum(1 for e in insns if e['retired'])
    assert retired == plain['counters']['instructions']            # every instruction, once


SWAP_WRITER = '''
name = "swapwriter"
description = "test: a writer (kmap path, small pool: wraps, IPIs) and a hog that swaps"
[machine]
cpus = 2
mem = "21M"
highmem = "4M"
[boot]
swap = "16M"
disk_latency = 5000
write_path = "kmap"
pkmap = 16
[[task]]
name = "writer"
program = "writer"
args = ["f", 40, 4096, 5]
cpu = 0
[[task]]
name = "hog"
program = "hog"
args = [4800, 1, 0x77]
cpu = 1
[expect]
outcome = "completed"
'''


@pytest.fixture(scope='module')
def swap_writer(tmp_path_factory):
    path = tmp_path_factory.mktemp('scn') / 'swapwriter.toml'
    path.write_text(SWAP_WRITER)
    s = scn_mod.find(str(path))
    plain = run_variant(s, {}, seed=3)
    c = plain['counters']
    assert c['swap_outs'] > 0 and c['swap_ins'] > 0 and c['ipis_sent'] > 0 and c['global_flushes'] > 0
    return s, plain


class _MachineFull:
    """Every instruction and memory access recorded by the C hooks, plus
    the point hooks, without the Python decoding (for a long workload)."""

    def __init__(self):
        self.records = 0

    def attach(self, k):
        self.mt = vtrace.MachineTrace(k.machine, Keep())
        self.mt.consumer = self
        self.mt.set_ranges([(0, 1 << 32)])
        img = k.image
        self.mt.set_points([img.symbols['kmap_atomic'], img.symbols['kunmap_atomic']]
                           + img.specials['invlpg'] + img.specials['mov_cr3'])
        self.mt.attach()
        self.mt.on()

    def before_run(self, cpu, budget):
        return True

    def after_run(self, cpu, trap, recs, mems, stop, dropped):
        assert dropped == 0
        self.records += len(recs)

    def close(self, r=None):
        self.mt.detach()
        return dict(instructions=self.records, dropped=0)


@pytest.mark.parametrize('how', ['machine-full', 'events-only', 'symbols'])
def test_tracing_does_not_change_a_swapping_writer(swap_writer, how):
    """A writer on the kmap path (pool wraps: global flushes, IPIs) and a
    hog that swaps: the same seed gives the same counters and outcome
    traced or not (every instruction hooked in C, or events, or routines)."""
    s, plain = swap_writer
    if how == 'machine-full':
        tracer = _MachineFull()
    else:
        f = ktrace.Filters(events_only=True) if how == 'events-only' else \
            ktrace.Filters(symbols=['kmap_atomic', '__copy_from_user*', 'flush_tlb_all'])
        tracer = ktrace.Tracer(ktext.TextSink(io.StringIO()), f, {})
    traced = run_variant(s, {}, seed=3, tracer=tracer)
    summary = tracer.close(traced)
    assert _counters(traced) == _counters(plain)
    assert traced['outcome'] == plain['outcome'] == 'completed'
    assert summary['dropped'] == 0
    if how != 'events-only':
        assert summary['instructions'] > 0
    else:                       # the machine-wide story of a pool wrap, and swapping
        text = tracer.sink.out.getvalue()
        for name in ('pkmap_wrap', 'ipi_sent', 'ipi_received', 'ipi_ack', 'ipi_done', 'swap_out',
                     'swap_in', 'reclaim_unmap', 'disk_write', 'wakeup'):
            assert f'* {name} ' in text, name
        assert 'kind=global how="flush_tlb_all' in text


@pytest.mark.slow
def test_full_decoded_trace_does_not_change_a_swapping_writer(swap_writer):
    s, plain = swap_writer
    tracer = ktrace.Tracer(ktext.JsonlSink(io.StringIO()), ktrace.Filters(), {})
    traced = run_variant(s, {}, seed=3, tracer=tracer)
    tracer.close(traced)
    assert _counters(traced) == _counters(plain)


def test_the_same_seed_gives_the_same_trace(hello_full):
    _, first = hello_full
    _, sink = _trace()
    assert _jsonl(sink) == first


def test_entries_are_in_sequence_order_with_time_and_task(hello_full):
    _, entries = hello_full
    body = [e for e in entries if e['type'] in ('insn', 'event')]
    seqs = [e['seq'] for e in body]
    assert seqs == sorted(seqs)
    insns = [e for e in body if e['type'] == 'insn']
    assert {e['cpu'] for e in insns} == {0, 1}
    assert {e['ring'] for e in insns} == {0, 3}
    for e in insns[:50]:
        assert e['task'].count('/') >= 1 and e['time'] >= 0
    # the first instruction of the run: nothing retired anywhere before it
    assert insns[0]['seq'] == 0


def test_a_faulting_instruction_is_traced_as_not_retired_then_retried(hello_full):
    _, entries = hello_full
    i = next(i for i, e in enumerate(entries) if e['type'] == 'event' and e['event'] == 'page_fault'
             and e['args']['eip'] >= layout.PAGE_OFFSET)
    fault = entries[i]
    before = [e for e in entries[:i] if e['type'] == 'insn' and e['cpu'] == fault['cpu']]
    assert before[-1]['eip'] == fault['args']['eip'] and before[-1]['retired'] is False
    assert before[-1]['regs'] is None and before[-1]['seq'] == fault['seq']
    # the handler runs guest code of its own (clearing the new page) before the retry
    retry = next(e for e in entries[i:] if e['type'] == 'insn' and e['cpu'] == fault['cpu']
                 and e['eip'] == fault['args']['eip'])
    assert retry['retired'] and retry['seq'] > fault['seq'] and retry['task'] == fault['task']
    resolved = [e for e in entries[i:] if e['type'] == 'event' and e['cpu'] == fault['cpu']
                and e['event'] in ('fault_resolved', 'fixup')]
    assert resolved and fault['seq'] <= resolved[0]['seq'] <= retry['seq']


def test_registers_changed_and_memory_with_virtual_addresses(hello_full):
    _, entries = hello_full
    insns = [e for e in entries if e['type'] == 'insn']
    push = next(e for e in insns if e['asm'].startswith('push ') and e['retired'] and e['regs'])
    assert set(push['regs']) >= {'esp'}
    (w,) = [m for m in push['mem'] if m['op'] == 'w']
    assert w['va'] == push['regs']['esp'] and w['size'] == 4
    assert w['pa'] == w['va'] - layout.PAGE_OFFSET                 # kernel stack: lowmem direct map
    sym = next(e for e in insns if e['sym'].startswith('kmap_atomic'))
    assert sym['file'] == 'asm/kernel/highmem.S' and sym['line'] > 0
    user = next(e for e in insns if e['ring'] == 3)
    assert user['file'] and user['file'].startswith('asm/user/')


def test_events_include_switches_kmap_slots_tlb_flushes_and_syscalls(hello_full):
    _, entries = hello_full
    names = {e['event'] for e in entries if e['type'] == 'event'}
    assert {'context_switch', 'page_fault', 'fault_resolved', 'syscall', 'exit', 'kmap_atomic',
            'kunmap_atomic', 'tlb_flush', 'disk_read'} <= names
    inv = [e for e in entries if e['type'] == 'event' and e['event'] == 'tlb_flush'
           and e['args'].get('how') == 'invlpg']
    ka = [e for e in entries if e['type'] == 'event' and e['event'] == 'kmap_atomic']
    assert any(f['args']['va'] == k['args']['vaddr'] for f in inv for k in ka)


def test_sequence_numbers_do_not_depend_on_the_filters(hello_full):
    _, full = hello_full
    r, sink = _trace(filters=ktrace.Filters(symbols=['kmap_atomic']))
    part = [e for e in _jsonl(sink) if e['type'] == 'insn']
    assert part and {e['sym'].split('+')[0] for e in part} == {'kmap_atomic'}
    same = {(e['seq'], e['eip']) for e in full if e['type'] == 'insn' and e['sym'].startswith('kmap_atomic')}
    assert {(e['seq'], e['eip']) for e in part} == same


def test_filters_cpu_task_ring_and_window(hello_full):
    _, full = hello_full
    full_insns = [e for e in full if e['type'] == 'insn']
    _, sink = _trace(filters=ktrace.Filters(cpus={1}, user=True))
    got = [e for e in _jsonl(sink) if e['type'] in ('insn', 'event')]
    assert got and all(e['cpu'] in (1, None) for e in got)
    assert {e['ring'] for e in got if e['type'] == 'insn'} == {3}
    _, sink = _trace(filters=ktrace.Filters(tasks=['hello0']))
    got = _jsonl(sink)
    assert {e['task'].split('/')[0] for e in got if e['type'] == 'insn'} == {'hello0'}
    events = [e for e in got if e['type'] == 'event']
    assert any(e['task'] != events[0]['task'] for e in events)     # a switch *to* hello0 ...
    for e in events:                                   # ... names it; machine events have no task
        assert e['task'] is None or e['task'].startswith('hello0/') or \
            any(str(v).startswith('hello0/') for v in e['args'].values())
    lo, hi = full_insns[100]['seq'], full_insns[400]['seq']
    _, sink = _trace(filters=ktrace.Filters(window=ktrace.parse_window(f'{lo}:{hi}')))
    seqs = [e['seq'] for e in _jsonl(sink) if e['type'] in ('insn', 'event')]
    assert seqs and min(seqs) >= lo and max(seqs) < hi
    assert len([e for e in _jsonl(sink) if e['type'] == 'insn']) == \
        len([e for e in full_insns if lo <= e['seq'] < hi])
    t0 = full_insns[200]['time']
    _, sink = _trace(filters=ktrace.Filters(window=ktrace.parse_window(f'{t0}c:{t0 + 50}c')))
    times = [e['time'] for e in _jsonl(sink) if e['type'] == 'insn']
    assert times and all(t0 <= t < t0 + 50 for t in times)


def test_routines_extend_over_their_internal_labels():
    from minikernel.kernel import Kernel
    k = Kernel(dict(cpus=1, mem=32 * MiB, highmem=8 * MiB))
    code = ktrace.Code(k)
    sym = k.image.symbols
    lo, hi = code.symbol_range(k.image, sym['__copy_from_user'])
    assert lo < sym['cfu_movsl'] < sym['cfu_fix_movsl'] < hi     # internal labels inside
    assert hi == sym['__copy_from_user_inatomic']                 # the next routine
    lo, hi = code.symbol_range(k.image, sym['map_new_virtual'])
    assert sym['pkmap_wrap'] < hi and sym['mnv_found'] < hi
    assert code.routine_of(k.image, sym['pkmap_wrap']) == 'map_new_virtual'


@pytest.mark.parametrize('text, err', [
    ('5:1', 'greater'), ('1c:5', 'mixes'), ('x:9', 'not a number'), ('12', 'FROM:TO'),
    ('1:2,5c:9c', 'all in'),
])
def test_bad_windows_are_one_line_errors(text, err):
    with pytest.raises(ValueError, match=err):
        ktrace.parse_window(text)


def _cli(args, capsys):
    from kmaplab.cli import main
    code = main(['trace'] + args)
    return code, capsys.readouterr()


def test_cli_bad_input_exits_2_with_one_line(capsys, tmp_path):
    for args, msg in ((['hello', '--symbols', 'no_such_routine*'], 'no routine or label'),
                      (['hello', '--window', '9:3'], 'greater'),
                      (['hello', '--cpu', '7'], 'CPUs 0..'),
                      (['hello', '--variant', 'cpus=3'], 'no variant matches'),
                      (['hello', '--out', str(tmp_path / 'no' / 'dir' / 'f')], 'cannot write')):
        code, out = _cli(args, capsys)
        assert code == 2, args
        assert msg in out.err and out.err.count('\n') == 1 and 'Traceback' not in out.err


# ---- formats ------------------------------------------------------------------------------

def test_text_format_is_aligned_one_line_per_entry(capsys, tmp_path):
    out = tmp_path / 'h.txt'
    code, err = _cli(['hello', '--cpus', '1', '--out', str(out)], capsys)
    assert code == 0 and 'outcome completed' in err.err
    lines = out.read_text().splitlines()
    body = [ln for ln in lines if not ln.startswith('#')]
    insns = [ln for ln in body if ln[42] in '03']                  # the ring column; '*': an event
    assert len(insns) > 1000 and len(body) > len(insns)
    assert all(ln[10] == ' ' and ln[22] == ' ' and ln[41] == ' ' and ln[42] in '03*' for ln in body)
    assert any('kmap_atomic (asm/kernel/highmem.S:' in ln for ln in insns)
    assert any(' * page_fault ' in ln for ln in body)


IPI_SCENARIO = '''
name = "ipis"
description = "two writers, a 32-slot pool: wraps, global flushes, IPIs"
[machine]
cpus = 2
mem = "32M"
highmem = "16M"
[boot]
pkmap = 32
tick = 100000
write_path = "kmap"
[[task]]
name = "writer"
program = "writer"
args = ["out{cpu}", 48, 4096, 7]
cpu = "each"
'''


def _ipi_trace(tmp_path, sink):
    path = tmp_path / 'ipis.toml'
    path.write_text(IPI_SCENARIO)
    s = scn_mod.load(str(path))
    tracer = ktrace.Tracer(sink, ktrace.Filters(symbols=['kmap_high']), dict(scenario=s.name))
    r = run_variant(s, {}, tracer=tracer)
    tracer.close(r)
    assert r['outcome'] == 'completed' and r['counters']['ipis_sent'] > 0
    return r


def _nested_in_order(events, begin, end, key):
    """Begin/end pairs per track: every end closes an open slice, none is left open,
    timestamps never go back on a track."""
    depth, last = {}, {}
    for e in events:
        k = key(e)
        if begin(e) or end(e):
            assert e['ts'] >= last.get(k, 0), f'time goes back on track {k}'
            last[k] = e['ts']
        if begin(e):
            depth[k] = depth.get(k, 0) + 1
        elif end(e):
            assert depth.get(k, 0) > 0, f'an end with no open slice on track {k}'
            depth[k] -= 1
    assert all(v == 0 for v in depth.values())


def test_perfetto_json_tids_from_1_metadata_cat_nesting_flows_counters(tmp_path):
    out = io.StringIO()
    _ipi_trace(tmp_path, kperfetto.PerfettoSink(out))
    events = json.loads(out.getvalue())['traceEvents']
    meta = [e for e in events if e['ph'] == 'M']
    assert meta and all(e.get('cat') for e in meta)
    names = {(e['pid'], e['tid']): e['args']['name'] for e in meta if e['name'] == 'thread_name'}
    assert names[(1, 1)] == 'CPU 0' and names[(1, 2)] == 'CPU 1'
    assert all(e['tid'] != 0 for e in events if e['ph'] in 'BEi')
    assert any(v.startswith('writer0/') for v in names.values())            # a track per task
    _nested_in_order(events, lambda e: e['ph'] == 'B', lambda e: e['ph'] == 'E', lambda e: (e['pid'], e.get('tid')))
    assert {'task', 'routine'} <= {e['cat'] for e in events if e['ph'] == 'B'}
    starts = {e['id'] for e in events if e['ph'] == 's'}
    ends = {e['id'] for e in events if e['ph'] == 'f'}
    assert starts and starts == ends
    sent = [e for e in events if e['ph'] == 'i' and e['name'] == 'ipi_sent']
    assert sent and any(e['ph'] == 's' and e['ts'] == sent[0]['ts'] for e in events)
    counters = {e['name'] for e in events if e['ph'] == 'C'}
    assert {'free pages: ZONE_NORMAL', 'pkmap slots in use'} <= counters


def test_perfetto_protobuf_decodes_with_the_protobuf_definitions(tmp_path):
    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace, TrackEvent
    buf = io.BytesIO()
    r = _ipi_trace(tmp_path, kperfetto.PerfettoProtoSink(buf))
    trace = Trace.FromString(buf.getvalue())
    tracks = {p.track_descriptor.uuid: p.track_descriptor for p in trace.packet
              if p.HasField('track_descriptor')}
    threads = {d.thread.thread_name: d.thread.tid for d in tracks.values() if d.HasField('thread')}
    assert threads['CPU 0'] == 1 and threads['CPU 1'] == 2                   # CPU 0 has its own track
    assert any(n.startswith('writer1/') for n in threads)                    # a track per task
    counters = {d.name: u for u, d in tracks.items() if d.HasField('counter')}
    assert {'free pages: ZONE_NORMAL', 'pkmap slots in use'} <= set(counters)
    evs = [p for p in trace.packet if p.HasField('track_event')]
    assert all(p.track_event.track_uuid in tracks for p in evs)
    by_type = collections.Counter(p.track_event.type for p in evs)
    assert by_type[TrackEvent.TYPE_SLICE_BEGIN] == by_type[TrackEvent.TYPE_SLICE_END] > 0
    _nested_in_order([dict(ts=p.timestamp, t=p.track_event.type, u=p.track_event.track_uuid) for p in evs],
                     lambda e: e['t'] == TrackEvent.TYPE_SLICE_BEGIN,
                     lambda e: e['t'] == TrackEvent.TYPE_SLICE_END, lambda e: e['u'])
    ipi = [p.track_event for p in evs if p.track_event.name == 'ipi_sent']
    received = {f for p in evs if p.track_event.name == 'ipi_received' for f in p.track_event.terminating_flow_ids}
    assert ipi and all(f in received for e in ipi for f in e.flow_ids)     # IPIs are flows
    assert len(received) == r['counters']['ipis_received'] or len(received) > 0
    pk = [p.track_event.counter_value for p in evs if p.track_event.track_uuid == counters['pkmap slots in use']]
    assert pk and max(pk) <= 32


def test_tenet_writes_one_file_per_task_with_eip_on_every_line(tmp_path):
    sink = ktenet.TenetSink(str(tmp_path / 'h.log'))
    _trace(sink=sink, overrides={'cpus': 2})
    names = sorted(os.path.basename(p) for p in sink.paths)
    assert 'h.hello0-2.log' in names and 'h.hello1-3.log' in names, names
    assert not any('cpu' in n for n in names)
    lines = (tmp_path / 'h.hello0-2.log').read_text().splitlines()
    first = dict(kv.split('=', 1) for kv in lines[0].split(','))
    assert {'eax', 'ebx', 'ecx', 'edx', 'esi', 'edi', 'ebp', 'esp', 'eip'} <= set(first)
    for ln in lines:
        parts = ln.split(',')
        assert any(p.startswith('eip=0x') for p in parts)
        for p in parts:
            key, val = p.split('=', 1)
            if key in ('mr', 'mw'):
                addr, data = val.split(':')
                int(addr, 16), bytes.fromhex(data)
            else:
                int(val, 16)


@pytest.mark.slow
def test_tenet_gap_lines_carry_the_bystanders_writes_through_the_reused_slot(tmp_path):
    """sleep-in-atomic, 2002 handler: vwriter sleeps holding KM_USER0; writer
    reuses the slot and copies through it; vwriter's file shows writer's
    writes at the slot address on the line where vwriter resumes.  (Slow:
    writer copies 4 M instructions' worth through __copy_from_user.)"""
    s = scn_mod.find('sleep-in-atomic')
    sink = ktenet.TenetSink(str(tmp_path / 's.log'))
    tracer = ktrace.Tracer(sink, ktrace.Filters(symbols=['kmap_atomic', '__copy_from_user'],
                                                tasks=['vwriter', 'writer']), {})
    r = run_variant(s, {'atomic_fault': 'sleep'}, tracer=tracer)
    tracer.close(r)
    assert r['outcome'] == 'corruption'
    holder = [p for p in sink.paths if '.vwriter-' in p][0]
    other = [p for p in sink.paths if '.writer-' in p][0]
    slot = 'mw=0xffffb'
    gap = [ln for ln in open(holder).read().splitlines() if ln.count(slot) >= 4]
    assert gap, 'no gap line with the bystander\'s writes through the slot'
    theirs = set()
    with open(other) as f:
        for ln in f:
            if slot in ln:
                theirs.update(p for p in ln.rstrip().split(',') if p.startswith(slot))
    ours = [p for p in gap[0].split(',') if p.startswith(slot)]
    assert set(ours) <= theirs                        # exactly values the bystander wrote there


# ---- the done-when: sleep in atomic ---------------------------------------------------------

def test_sleep_in_atomic_text_trace_tells_the_story():
    """The fault inside __copy_from_user inside kmap_atomic, the sleep,
    writer's kmap_atomic reusing the slot, and the wrong bytes copied."""
    s = scn_mod.find('sleep-in-atomic')
    sink = ktext.TextSink(io.StringIO())
    tracer = ktrace.Tracer(sink, ktrace.Filters(symbols=['kmap_atomic', '__copy_from_user'],
                                                tasks=['vwriter']), {})
    r = run_variant(s, {'atomic_fault': 'sleep'}, tracer=tracer)
    tracer.close(r)
    text = sink.out.getvalue()
    assert r['outcome'] == 'corruption'
    lines = text.splitlines()

    def first(pred, start=0):
        return next(i for i in range(start, len(lines)) if pred(lines[i]))
    fault = first(lambda ln: '* page_fault' in ln and 'IN ATOMIC' in ln and 'cfu_movsl' in ln)
    assert 'vwriter' in lines[fault]
    mapped = max(i for i in range(fault) if '* kmap_atomic' in lines[i] and 'vwriter' in lines[i])
    assert 'KM_USER0' in lines[mapped]
    sleep = first(lambda ln: '* context_switch' in ln and 'prev_state=D' in ln, fault)
    assert 'vwriter' in lines[sleep] and 'next=writer' in lines[sleep]
    reuse = first(lambda ln: '* kmap_slot_reused' in ln, sleep)
    assert 'holder=vwriter' in lines[reuse] and 'writer' in lines[reuse].split('*')[0]
    wrong = first(lambda ln: '* kmap_wrong_page' in ln, reuse)
    assert 'vwriter' in lines[wrong] and 'op=w' in lines[wrong]
    copy = lines[wrong + 1]
    assert 'cfu_movsl' in copy and ' w ffffb' in copy or ' w fff' in copy
