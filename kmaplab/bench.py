"""`kmaplab bench`: how fast the emulated machine is, against raw Unicorn.

What this file owns
  - ROWS: the benchmark, a list of row functions.  Each takes the Bench
    (which keeps what earlier rows measured, e.g. the raw rate the ratios
    use) and returns a list of Row.  Later issues append kernel-level rows
    (syscalls/s through the minikernel, write() per byte, tracing speed).
  - run_bench(json_out): measure every row once, on this machine, in this
    run, and print a table (or one JSON object).

Rules
  - Every number is measured here and now: nothing is copied from an
    earlier run.  A row runs for about SECONDS of wall time and reports its
    fastest slice: the host is shared, the fastest slice is the least
    disturbed.  The target ratio is measured in alternating slices of raw
    and Machine (the median of the pairs), so that a change of load during
    the run cannot flatter or spoil it.
  - All rows run the same guest loop (vm.selftest's count_loop: add, dec,
    jnz; blocks of 3 instructions, the worst case for per-block costs) on
    the same page tables (vm.selftest.Rig), paging on.
"""
import json
import platform
import statistics
import time

import unicorn
from unicorn import Uc, UC_ARCH_X86, UC_MODE_32, UC_PROT_ALL
from unicorn import x86_const as ux

from vm import x86
from vm.policy import RoundRobin
from vm.selftest import DATA, GDT, PGDIR, Rig

SECONDS = 0.7          # wall time per measured row
SLICES = 5             # a row's rate is its fastest slice's (Bench.timed)
PAIRS = 7              # raw/Machine slice pairs for the target ratio (Bench.paired)
TARGET = 0.30          # the aim: Machine, 1 CPU, quantum 10,000 >= 30% of raw


class Row:
    """One line of the table.  unit 'insn/s' (higher is better), 'us' (a
    round trip; lower is better) or '%' (a ratio measured directly)."""

    def __init__(self, name, value, unit, note=''):
        self.name, self.value, self.unit, self.note = name, value, unit, note

    def as_dict(self, raw_ips):
        d = dict(name=self.name, value=round(self.value, 3), unit=self.unit, note=self.note)
        if raw_ips and self.unit == 'insn/s':
            d['ratio_to_raw'] = round(self.value / raw_ips, 4)
        elif raw_ips and self.unit == 'us':
            d['raw_insns_equivalent'] = round(self.value * 1e-6 * raw_ips)
        return d


class Bench:
    """Measurement helpers and what the rows measured so far."""

    def __init__(self, seconds=SECONDS):
        self.seconds = seconds
        self.raw_ips = None            # raw Unicorn on the loop: the table's reference
        self.target_ratio = None       # Machine 1 CPU q10,000 / raw, paired

    def _slice(self, chunk, seconds):
        done, t0 = 0, time.perf_counter()
        while True:
            done += chunk()
            dt = time.perf_counter() - t0
            if dt >= seconds:
                return done, dt

    def timed(self, chunk):
        """Call chunk() (returns the work units it did) for about `seconds`
        in SLICES slices; returns (units, wall seconds) of the fastest."""
        runs = [self._slice(chunk, self.seconds / SLICES) for _ in range(SLICES)]
        return max(runs, key=lambda r: r[0] / r[1])

    def paired(self, a, b):
        """Alternate slices of chunk a and chunk b; the median over PAIRS of
        rate(b) / rate(a)."""
        ratios = []
        for _ in range(PAIRS):
            na, ta = self._slice(a, self.seconds / PAIRS)
            nb, tb = self._slice(b, self.seconds / PAIRS)
            ratios.append((nb / tb) / (na / ta))
        return statistics.median(ratios)


# ---- the workloads ------------------------------------------------------------------

def _raw_uc(rig):
    """A plain Unicorn instance on the rig's RAM and page tables: no hooks at all."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map_ptr(0, rig.m.ram_size, UC_PROT_ALL, rig.m.ram_ptr)
    uc.reg_write(ux.UC_X86_REG_CR3, PGDIR)
    uc.reg_write(ux.UC_X86_REG_CR0, x86.CR0_PE | x86.CR0_WP | x86.CR0_PG | 0x10)
    uc.reg_write(ux.UC_X86_REG_GDTR, (0, GDT, 8 * x86.GDT_ENTRIES - 1, 0))
    uc.reg_write(ux.UC_X86_REG_CS, x86.KERNEL_CS)
    for seg in (ux.UC_X86_REG_DS, ux.UC_X86_REG_ES, ux.UC_X86_REG_SS):
        uc.reg_write(seg, x86.KERNEL_DS)
    uc.reg_write(ux.UC_X86_REG_ESP, rig.kstack(0))
    return uc


def _raw_long_chunk(iters=2_000_000):
    """Raw Unicorn, one emu_start to an `until` address per chunk."""
    rig = Rig()
    uc = _raw_uc(rig)
    start, end = rig.sym('count_loop'), rig.sym('count_loop_end')

    def chunk():
        uc.reg_write(ux.UC_X86_REG_ECX, iters)
        uc.emu_start(start, end)
        return 1 + 3 * iters
    chunk()                                          # translate once
    return chunk


def _raw_count_chunk(q):
    """Raw Unicorn cut into emu_start(count=q) quanta."""
    rig = Rig()
    uc = _raw_uc(rig)
    start, end = rig.sym('count_loop'), rig.sym('count_loop_end')
    uc.reg_write(ux.UC_X86_REG_ECX, 0)              # 2^32 iterations: never ends
    uc.reg_write(ux.UC_X86_REG_EIP, start)

    def chunk():
        for _ in range(20):
            uc.emu_start(uc.reg_read(ux.UC_X86_REG_EIP), end, count=q)
        return 20 * q
    return chunk


class _SpinDriver:
    """Machine.run driver: every CPU runs the loop; never finishes."""

    def step(self, cpu, budget):
        cpu.run(budget)

    def finished(self):
        return False

    def stalled(self):
        return 'stalled'


def _machine_chunk(ncpu, q):
    """vm.Machine.run with the loop on every CPU, 200 quanta per CPU per chunk."""
    rig = Rig(cpus=ncpu, policy=RoundRobin(q))
    m, drv = rig.m, _SpinDriver()
    for i in range(ncpu):
        rig.enter(i, 'count_loop', ecx=0)

    def chunk():
        before = sum(c.instructions for c in m.cpus)
        m.run(drv, max_cycles=m.now() + 200 * q)
        return sum(c.instructions for c in m.cpus) - before
    chunk()
    return chunk


# ---- rows -------------------------------------------------------------------------

def row_raw(b):
    """Raw Unicorn: one long emu_start (the reference), then count= quanta
    (Unicorn counts those with a per-instruction hook)."""
    n, dt = b.timed(_raw_long_chunk())
    b.raw_ips = n / dt
    rows = [Row('raw Unicorn, no hooks, one long emu_start', b.raw_ips, 'insn/s', 'until=address')]
    for q in (10_000, 1_000):
        n, dt = b.timed(_raw_count_chunk(q))
        rows.append(Row(f'raw Unicorn, emu_start(count={q:,})', n / dt, 'insn/s',
                        'count= adds a per-instruction hook'))
    return rows


def row_cpu(b):
    """vm.CPU.run alone (C block hook counting, trap capture), no Machine
    loop: one long run to the loop's hlt, then quanta of 10,000."""
    rig = Rig()
    cpu = rig.cpus[0]

    def long_run():
        before = cpu.instructions
        rig.enter(0, 'count_loop', ecx=2_000_000)
        cpu.run(1 << 40)
        return cpu.instructions - before
    long_run()
    n, dt = b.timed(long_run)
    rows = [Row('vm.CPU.run, 1 CPU, one long run', n / dt, 'insn/s', 'block hook counts exactly')]

    rig.enter(0, 'count_loop', ecx=0)

    def quanta():
        before = cpu.instructions
        for _ in range(20):
            cpu.run(10_000)
        return cpu.instructions - before
    n, dt = b.timed(quanta)
    rows.append(Row('vm.CPU.run, 1 CPU, quantum 10,000', n / dt, 'insn/s',
                    'plus emu_start and registers per run'))
    return rows


def row_machine(b):
    """vm.Machine.run with 1 and 8 CPUs at quanta 10,000 and 1,000, the loop
    on every CPU; instructions/s summed over the CPUs."""
    rows = []
    for ncpu in (1, 8):
        for q in (10_000, 1_000):
            n, dt = b.timed(_machine_chunk(ncpu, q))
            rows.append(Row(f'vm.Machine.run, {ncpu} CPU{"s" if ncpu > 1 else ""}, quantum {q:,}',
                            n / dt, 'insn/s', 'summed over CPUs'))
    return rows


def row_target(b):
    """The issue's aim, measured in alternating slices: Machine, 1 CPU,
    quantum 10,000 over raw Unicorn."""
    b.target_ratio = b.paired(_raw_long_chunk(), _machine_chunk(1, 10_000))
    return [Row('Machine 1 CPU q10,000 / raw, alternating slices', 100 * b.target_ratio, '%',
                f'median of {PAIRS} pairs')]


def row_page_fault(b):
    """A not-present #PF resolved in Python (map the PTE) and resumed; the
    guest unmaps and invlpg's the page after each access (3 instructions
    of guest work per fault)."""
    rig = Rig()
    cpu, x = rig.cpus[0], DATA
    rig.set_pte(x, 0)
    rig.enter(0, 'fault_loop', edx=x, ebx=rig.pte_pa(x), ecx=0)
    present = x | x86.PTE_P | x86.PTE_W

    def chunk():
        for _ in range(200):
            t = cpu.run(1_000_000)
            if t.kind != 'pf':
                raise RuntimeError(f'page-fault bench: unexpected {t!r}')
            rig.set_pte(x, present)
        return 200
    n, dt = b.timed(chunk)
    return [Row('page fault: #PF -> Python resolves -> resume', dt / n * 1e6, 'us',
                'rebuilt error code included')]


def row_syscall(b):
    """`int 0x80` from ring 3, back to ring 3 through the ring-0 template
    (context restore) and a guest iretd, as the kernel returns to user mode."""
    rig = Rig()
    cpu, m = rig.cpus[0], rig.m
    t = rig.to_user(0, 'user_syscalls')
    frame = rig.kstack(0) - 20
    ret_user = rig.sym('ret_user')

    def chunk():
        nonlocal t
        for _ in range(200):
            if t.kind != 'int' or t.vector != 0x80 or not t.user:
                raise RuntimeError(f'syscall bench: unexpected {t!r}')
            r = cpu.regs
            m.write(frame, b''.join(v.to_bytes(4, 'little') for v in
                                    (r['eip'], x86.USER_CS, r['eflags'], r['esp'], x86.USER_DS)))
            cpu.enter(ret_user, frame, x86.EFLAGS_RESERVED, eax=0, ebx=r['ebx'], ecx=r['ecx'],
                      edx=r['edx'], esi=r['esi'], edi=r['edi'], ebp=r['ebp'])
            t = cpu.run(1_000_000)
        return 200
    n, dt = b.timed(chunk)
    return [Row('syscall: int 0x80 (ring 3) -> Python -> iretd to ring 3', dt / n * 1e6, 'us',
                'template context restore + guest iretd')]


def row_trace(b):
    """Tracing speeds (kmaplab/trace_bench.py): capture, decode, text, and the
    naive one-Python-call-per-instruction tracer on the same workload."""
    from .trace_bench import trace_rows
    return trace_rows(b)


ROWS = [row_raw, row_cpu, row_machine, row_target, row_page_fault, row_syscall, row_trace]


# ---- output -----------------------------------------------------------------------

READING = """
reading: raw Unicorn counts nothing.  CPU.run one long run / raw = the cost of
exact counting (a C hook on every translated block; this loop's blocks are 3
instructions, the worst case).  quantum 10,000 / one long run = the cost of
each stop and start (emu_start, registers, Python).  Machine / CPU.run = the
policy and event loop.  A round trip costs as much as the raw instructions shown."""


def _fmt_value(row):
    if row.unit == 'insn/s':
        return f'{row.value / 1e6:10.2f} M insn/s'
    if row.unit == '%':
        return f'{row.value:10.1f} %       '
    return f'{row.value:10.1f} us      '


def _fmt_ratio(row, raw):
    if not raw or row.unit == '%':
        return ''
    if row.unit == 'insn/s':
        return f'{100 * row.value / raw:6.1f}% of raw'
    return f'= {row.value * 1e-6 * raw / 1e3:,.0f}k raw insns'


def run_bench(json_out=False, rows=None, seconds=SECONDS):
    """Measure every row function in `rows` (default ROWS); print a table,
    or with json_out one JSON object.  Returns 0, or 1 if a row failed."""
    b = Bench(seconds)
    out, errors, t0 = [], [], time.perf_counter()
    for fn in rows or ROWS:
        try:
            out.extend(fn(b))
        except Exception as e:          # one broken row must not hide the others
            errors.append(f'{fn.__name__}: {type(e).__name__}: {e}')
    wall = time.perf_counter() - t0
    ratio = b.target_ratio
    met = None if ratio is None else ratio >= TARGET
    if json_out:
        print(json.dumps(dict(
            rows=[r.as_dict(b.raw_ips) for r in out], raw_insn_per_s=b.raw_ips,
            target=dict(what='Machine 1 CPU quantum 10,000 / raw, alternating slices',
                        min_ratio=TARGET, ratio=None if ratio is None else round(ratio, 4), met=met),
            errors=errors, wall_s=round(wall, 2), unicorn=unicorn.__version__,
            python=platform.python_version(), machine=platform.machine()), sort_keys=True))
    else:
        _print_table(out, b.raw_ips)
        print(READING)
        if ratio is not None:
            print(f'target: Machine, 1 CPU, quantum 10,000 at {100 * ratio:.1f}% of raw '
                  f'(aim >= {100 * TARGET:.0f}%): {"met" if met else "NOT met"}')
        for e in errors:
            print(f'ERROR {e}')
        print(f'({wall:.1f} s, unicorn {unicorn.__version__}, Python {platform.python_version()})')
    return 1 if errors else 0


def _print_table(rows, raw):
    width = max([len(r.name) for r in rows] + [10])
    for r in rows:
        print(f'{r.name:<{width}}  {_fmt_value(r)}  {_fmt_ratio(r, raw):>22}  {r.note}')
