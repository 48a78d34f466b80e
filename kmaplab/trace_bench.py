"""Tracing speeds for `kmaplab bench` (kmaplab/bench.py calls trace_rows(bench))."""
import io

from minikernel import layout
from vm import trace as vtrace

from .trace import Filters, Sink, Tracer
from .trace_text import TextSink


BENCH_CYCLES = 30_000            # simulated cycles per measured chunk (per CPU)


def _bench_kernel():
    """A kernel-mode workload on 2 CPUs that never ends: kmap_atomic a
    highmem page, copy 1 KiB out of it, kunmap_atomic, memset, again
    (about 300 instructions per return to Python, as in the scenarios)."""
    from minikernel import page_alloc as gfp
    from minikernel.kernel import Kernel
    from minikernel.task import Guest
    k = Kernel(dict(cpus=2, mem=64 << 20, highmem=32 << 20, pkmap=16, seed=1))
    for cpu in range(2):
        page = k.page_to_guest(k.page_alloc.alloc_pages_fast(gfp.GFP_HIGHUSER, 0))
        buf = layout.PAGE_OFFSET + (k.page_alloc.alloc_pages_fast(gfp.GFP_KERNEL, 0) << 12)

        def body(task, page=page, buf=buf):
            while True:
                vaddr = yield Guest('kmap_atomic', page, layout.KM_USER0)
                yield Guest('memcpy', buf, vaddr, 1024)
                yield Guest('kunmap_atomic', vaddr, layout.KM_USER0)
                yield Guest('memset', buf, 0x5A, 64)
        k.kernel_thread(f'bench{cpu}', cpu, body)
    return k


class _Counting(Sink):
    def __init__(self):
        self.n = 0

    def insn(self, x):
        self.n += 1


class _Collect:
    """A vm.trace consumer that keeps the raw records (no decoding)."""

    def __init__(self):
        self.records = 0

    def before_run(self, cpu, budget):
        return True

    def after_run(self, cpu, trap, recs, mems, stop, dropped):
        self.records += len(recs)


def _measure(b, mode):
    """(instructions/s, instructions in the first chunk) for one mode."""
    k = _bench_kernel()
    hold = None
    if mode == 'c-collect':
        hold = vtrace.MachineTrace(k.machine, _Collect())
        hold.set_ranges([(0, 1 << 32)])
        hold.attach()
        hold.on()
    elif mode in ('c-text', 'c-decode', 'events'):
        sink = TextSink(io.StringIO()) if mode == 'c-text' else _Counting()
        hold = Tracer(sink, Filters(events_only=mode == 'events'))
        hold.attach(k)
    elif mode == 'naive':
        hold = vtrace.NaiveTrace(k.machine)
        hold.on()
    state = {'until': 0}

    def chunk():
        before = sum(c.instructions for c in k.machine.cpus)
        state['until'] += BENCH_CYCLES
        k.run(max_cycles=state['until'])
        if mode == 'c-text':
            hold.sink.out.seek(0)
            hold.sink.out.truncate()
        elif mode == 'naive':
            hold.log.clear()
        return sum(c.instructions for c in k.machine.cpus) - before
    first = chunk()
    n, dt = b.timed(chunk)
    return n / dt, first


def trace_rows(b):
    """Rows for kmaplab bench: the same kernel workload untraced, traced by
    the C hooks (raw records; decoded; as text), events only, and by the
    naive Python tracer.  Also checks that tracing did not change the run
    (the first chunk retires the same instructions in every mode)."""
    from .bench import Row            # bench.py imports this module lazily
    modes = [('untraced', 'trace: kernel workload, untraced'),
             ('events', 'trace: events only (kmap/TLB points, kernel events)'),
             ('c-collect', 'trace: C hooks, every instruction + memory, raw records'),
             ('c-decode', 'trace: C hooks + decoded entries (no output)'),
             ('c-text', 'trace: C hooks + decoded + text format'),
             ('naive', 'trace: naive Python UC_HOOK_CODE + MEM hooks')]
    rates, firsts, rows = {}, {}, []
    for mode, name in modes:
        rates[mode], firsts[mode] = _measure(b, mode)
        rows.append(Row(name, rates[mode], 'insn/s'))
    naive = rates['naive']
    for r, (mode, _) in zip(rows, modes):
        if mode.startswith('c-'):
            r.note = f'{rates[mode] / naive:.1f}x the naive tracer'
        elif mode == 'untraced':
            r.note = 'kmap_atomic + memcpy + kunmap_atomic + memset, 2 CPUs'
    if len(set(firsts.values())) != 1:
        raise RuntimeError(f'tracing changed the run: instructions per first chunk {firsts}')
    rows[0].note += f'; same run traced and untraced ({firsts["untraced"]} insns per chunk)'
    return rows
