"""`kmaplab bench`: how fast the emulated machine is, against raw Unicorn.

What this file owns
  - ROWS: the benchmark, a list of row functions.  Each takes the Bench
    (which keeps what earlier rows measured, e.g. the raw rate the ratios
    use) and returns a list of Row: raw Unicorn, CPU.run, Machine.run,
    round trips on the bare rig, real runs (kmap-scaling, reclaim) paired
    with raw Unicorn, kernel round trips (getpid, demand-zero fault,
    context switch) against one bare emu_start, host CPU per CPU-page on 4
    and 32 CPUs (kmap-scaling atomic_fallback: is host cost linear in
    CPUs?), one exploration run of scenarios/explore/munmap-race.toml
    (CPU time; runs/s per core), tracing speeds.
  - run_bench(json_out): measure every row once, on this machine, in this
    run, and print a table (or one JSON object).

Rules
  - Every number is measured here and now: nothing is copied from an
    earlier run.  A row runs for about SECONDS of wall time and reports its
    fastest slice: the host is shared, the fastest slice is the least
    disturbed.  The target ratio is measured in alternating slices of raw
    and Machine (the median of the pairs), so that a change of load during
    the run cannot flatter or spoil it.
  - The machine rows run the same guest loop (vm.selftest's count_loop:
    add, dec, jnz; blocks of 3 instructions, the worst case for per-block
    costs) on the same page tables (vm.selftest.Rig), paging on.
  - The real-run and kernel rows measure CPU time (time.process_time), not
    wall time: the host is shared.  A real run is booted untimed and run to
    its end in k.run calls of REAL_STEP simulated cycles, in slices that
    alternate with raw Unicorn;
    a kernel round trip is the CPU time of N2 - N1 more operations of
    asm/user/kbench.S (runs of N1 and N2, so boot, exec and exit cancel).
  - A raw chunk keeps a reference to its rig: the RAM Unicorn runs on must
    outlive the Unicorn instance.
"""
import json
import platform
import statistics
import time

import unicorn
from unicorn import Uc, UC_ARCH_X86, UC_MODE_32, UC_PROT_ALL
from unicorn import x86_const as ux

from vm import native, x86
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
    chunk.rig = rig                                  # the RAM Unicorn runs on lives as long as chunk
    chunk()                                          # translate once
    return chunk


def _raw_count_chunk(q):
    """Raw Unicorn cut into emu_start(count=q) quanta (until 0: an until
    address would make Unicorn retranslate the block ending there after
    every quantum, see _bare_emu_start)."""
    rig = Rig()
    uc = _raw_uc(rig)
    start = rig.sym('count_loop')
    uc.reg_write(ux.UC_X86_REG_ECX, 0)              # 2^32 iterations: never ends
    uc.reg_write(ux.UC_X86_REG_EIP, start)

    def chunk():
        for _ in range(20):
            uc.emu_start(uc.reg_read(ux.UC_X86_REG_EIP), 0, count=q)
        return 20 * q
    chunk.rig = rig                                  # keep the RAM alive (see _raw_long_chunk)
    return chunk


def _bare_emu_start(until=False):
    """One bare emu_start (raw Unicorn, no hooks) of one instruction, as
    the lab makes them (vm/_run.c: until 0, the run ends at a trap): a
    `hlt`.  The unit the kernel round trips are also given in.  until=True:
    the `mov` before count_loop_body, stopped by an until address instead;
    Unicorn then drops the translated block that ends there after every
    run (softmmu/cpus.c uc_exit_invalidate_iter: its code exits the
    emulation), so each such emu_start translates it again.
    -> CPU seconds each."""
    rig = Rig()
    uc = _raw_uc(rig)
    if until:
        start, end = rig.sym('count_loop'), rig.sym('count_loop_body')   # mov eax, 0
    else:
        start, end = rig.sym('count_loop_end'), 0                        # hlt
    uc.emu_start(start, end)
    if uc.reg_read(ux.UC_X86_REG_EIP) != (end or start + 1):
        raise RuntimeError('bare emu_start: did not stop where expected')
    best = None
    for _ in range(3):
        n, t0 = 2000, time.process_time()
        for _ in range(n):
            uc.emu_start(start, end)
        dt = (time.process_time() - t0) / n
        best = dt if best is None else min(best, dt)
    del rig
    return best


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


# ---- real runs and kernel round trips ----------------------------------------------

REAL_RUNS = (('kmap-scaling', dict(cpus=4, write_path='kmap', pkmap=1024)),
             ('reclaim', dict(reclaim='swap_out')))
REAL_STEP = 200_000        # simulated cycles per k.run() call of a real-run slice


class _RealRun:
    """A scenario variant booted (untimed) and run REAL_STEP simulated
    cycles at a time.  step() -> (instructions, CPU s); .ended is k.run's
    last answer once it is not 'time limit'."""

    def __init__(self, name, variant):
        from . import scenario as scn_mod
        from .runner import boot
        self.k = boot(scn_mod.find(name), variant)
        self.ended = None

    def step(self):
        m = self.k.machine
        before = sum(c.instructions for c in m.cpus)
        t0 = time.process_time()
        end = self.k.run(m.now() + REAL_STEP)
        dt = time.process_time() - t0
        if end != 'time limit':
            self.ended = end
        return sum(c.instructions for c in m.cpus) - before, dt


def _cpu_slice(fn, seconds, stop=lambda: False):
    """Call fn() -> (units, CPU s) until `seconds` of CPU or stop(): (units, CPU s)."""
    units = spent = 0
    while (spent < seconds or not units) and not stop():
        u, dt = fn()
        units, spent = units + u, spent + dt
    return units, spent


def _timed_cpu(chunk):
    """A wall-clock chunk() -> units as (units, CPU s)."""
    def fn():
        t0 = time.process_time()
        u = chunk()
        return u, time.process_time() - t0
    return fn


def row_real(b):
    """Guest instructions per CPU-second of real runs (kmap-scaling with 4
    CPUs and kmap; reclaim with swap_out), from boot to their end (a bench
    shorter than SECONDS, as in the tests, stops after b.seconds of CPU):
    slices of b.seconds / PAIRS of CPU alternate with as much CPU of raw
    Unicorn on the loop, so the ratio's two rates see the same host.  The
    rate is the whole run's (instructions / CPU s): a run's phases differ
    by three orders of magnitude (reclaim's make_pages_present is Python
    kernel work with no guest instruction), so a median of slices, or the
    first seconds of a run, would stand for one phase, not the run."""
    raw = _timed_cpu(_raw_long_chunk())
    rows = []
    for name, variant in REAL_RUNS:
        run = _RealRun(name, variant)
        budget = float('inf') if b.seconds >= SECONDS else b.seconds
        ins = cpu = raw_units = raw_cpu = 0
        while run.ended is None and cpu < budget:
            i, t = _cpu_slice(run.step, b.seconds / PAIRS, stop=lambda: run.ended is not None)
            u, rt = _cpu_slice(raw, t)
            ins, cpu, raw_units, raw_cpu = ins + i, cpu + t, raw_units + u, raw_cpu + rt
        if run.ended not in (None, 'finished'):
            raise RuntimeError(f'{name}: {run.ended}')
        label = f'{name} ({", ".join(f"{k}={v}" for k, v in variant.items())})'
        what = 'whole run' if run.ended else f'first {cpu:.2f} CPU-s'
        rows.append(Row(f'real run: {label}', ins / cpu, 'insn/s',
                        f'guest insns per CPU-second, {what}: {ins:,} insns in {cpu:.2f} s'))
        rows.append(Row(f'real run / raw: {label}', 100 * (ins / cpu) / (raw_units / raw_cpu), '%',
                        f'raw Unicorn in alternating slices of equal CPU time ({raw_cpu:.2f} s)'))
    return rows


SCALE_CPUS = (4, 32)
SCALE_PAGES = 128          # pages each writer of the scaling rows writes (the scenario: 1024)


def _scaling_run(ncpu, pages):
    """kmap-scaling, write_path=atomic_fallback, `ncpu` CPUs, each writer
    writing `pages` pages: host CPU seconds of k.run() (boot and the final
    writeback left out) per CPU-page."""
    import copy
    from . import scenario as scn_mod
    from .runner import boot
    scn = copy.deepcopy(scn_mod.find('kmap-scaling'))
    for t in scn.tasks:
        t['args'] = [t['args'][0], pages] + list(t['args'][2:])
    k = boot(scn, dict(cpus=ncpu, write_path='atomic_fallback', pkmap=1024))
    t0 = time.process_time()
    end = k.run()
    dt = time.process_time() - t0
    if end != 'finished':
        raise RuntimeError(f'kmap-scaling on {ncpu} CPUs: {end}')
    return dt / (ncpu * pages)


def row_scaling(b):
    """Host cost per CPU-page as the machine grows: kmap-scaling with
    atomic_fallback (no pool, no global flush: the guest work per page is
    the same on every size) on SCALE_CPUS CPUs, in alternating runs; the
    median of each and the median of the pairs' ratios."""
    lo, hi = SCALE_CPUS
    pages = max(2, round(SCALE_PAGES * min(1.0, b.seconds / SECONDS)))   # short runs: tests
    a, c, ratios = [], [], []
    for _ in range(3):
        x, y = _scaling_run(lo, pages), _scaling_run(hi, pages)
        a.append(x)
        c.append(y)
        ratios.append(y / x)
    label = f'kmap-scaling atomic_fallback, {pages} pages per CPU'
    return [Row(f'host CPU per CPU-page, {lo} CPUs ({label})', statistics.median(a) * 1e6, 'us',
                'k.run() CPU time / (CPUs x pages)'),
            Row(f'host CPU per CPU-page, {hi} CPUs', statistics.median(c) * 1e6, 'us', ''),
            Row(f'host CPU per CPU-page, {hi} / {lo} CPUs', 100 * statistics.median(ratios), '%',
                'median of 3 alternating pairs; 100% = linear in CPUs')]


KBENCH_MODES = (('getpid() syscall round trip', 0, 1, 'syscalls'),
                ('anonymous demand-zero fault', 1, 1, 'faults'),
                ('context switch (sched_yield, 2 tasks on 1 CPU)', 2, 2, 'switches'))


KBENCH_MIN_OPS = {0: 2000, 1: 100, 2: 300}     # mode -> fewest extra operations measured


def _kbench(mode, n, tasks):
    """Boot a 1-CPU kernel with `tasks` kbench MODE N programs; run it to
    the end.  -> (CPU s of the run, syscalls, faults, switches)."""
    from minikernel.kernel import Kernel
    from .runner import program_image
    k = Kernel({'mem': 64 << 20, 'highmem': 32 << 20, 'cpus': 1, 'max_cycles': 4_000_000_000},
               {'kbench': program_image('kbench')})
    ts = [k.spawn(f'kbench{i}', 'kbench', [mode, n]) for i in range(tasks)]
    t0 = time.process_time()
    end = k.run()
    dt = time.process_time() - t0
    if end != 'finished' or any(t.exit_code != 0 for t in ts):
        raise RuntimeError(f'kbench mode {mode}: {end}, exit codes {[t.exit_code for t in ts]}')
    c = {key: sum(t.counters[key] for t in ts) for key in ('syscalls', 'faults', 'switches')}
    return dt, c


def row_kernel(b):
    """Kernel-level round trips through the minikernel, in CPU us, and as
    multiples of one bare emu_start measured here: the cost of N more
    operations (runs of N1 and N2, the difference, so boot, exec and exit
    cancel out), the median of three."""
    bare = _bare_emu_start()
    rows = [Row('bare emu_start (raw Unicorn, one instruction: hlt, until 0)', bare * 1e6, 'us',
                'the unit below; how vm/_run.c starts every run'),
            Row('emu_start with an until address (one instruction)', _bare_emu_start(until=True) * 1e6,
                'us', 'Unicorn retranslates the block ending at until after every run')]
    for label, mode, tasks, key in KBENCH_MODES:
        # the yielders need a long enough run to overlap (the second one
        # execs from the disk while the first one yields to nobody)
        n1 = 500 if mode == 2 else 20
        # at least ~20 ms of extra work, above the noise of two separate
        # boots even in a quick run (a getpid costs ~10 us since the fast path)
        n2 = n1 + max(KBENCH_MIN_OPS[mode], int(3000 * b.seconds))
        per = []
        for _ in range(3):
            t1, c1 = _kbench(mode, n1, tasks)
            t2, c2 = _kbench(mode, n2, tasks)
            ops = c2[key] - c1[key]
            if ops <= 0:
                raise RuntimeError(f'kbench mode {mode}: no {key} counted')
            per.append(max(t2 - t1, 0.0) / ops)
        us = statistics.median(per) * 1e6
        rows.append(Row(f'kernel: {label}', us, 'us', f'= {us / (bare * 1e6):.0f} bare emu_starts'))
    return rows


EXPLORE_SCENARIO = 'scenarios/explore/munmap-race.toml'
EXPLORE_VARIANT = dict(write_path='perform_write', atomic_fault='fixup')
EXPLORE_GOAL = 100         # issue 16: runs per second per core


def row_explore(b):
    """Exploration speed: CPU time of one `kmaplab explore` run of
    scenarios/explore/munmap-race.toml (perform_write, PCT d=2 schedules,
    as a worker runs them: explore.run_job, boot + run + judge), the median
    over the runs of about `seconds` of CPU after one untimed probe run
    (imports, parsing, assembling: a worker pays them once)."""
    import os
    from . import explore
    path = os.path.join(explore.ROOT, EXPLORE_SCENARIO)
    opts = dict(explore.DEFAULTS, depth=2)
    tgt = dict(scenario=path, variant=EXPLORE_VARIANT, seed=0, overrides={})
    probe = explore.run_job(explore.job(0, tgt, dict(explore.base_spec('pct', 2, opts), depth=1,
                                                     k=0, steps=[])))
    per, spent, i = [], 0.0, 1
    while spent < b.seconds or len(per) < 3:
        spec = explore.pct_spec(i, 2, opts, probe['steps'])
        t0 = time.process_time()
        explore.run_job(explore.job(i, tgt, spec))
        dt = time.process_time() - t0
        per.append(dt)
        spent, i = spent + dt, i + 1
    us = statistics.median(per) * 1e6
    return [Row('explore: one munmap-race run (perform_write, pct)', us, 'us',
                f'= {1e6 / us:.1f} runs/s per core (goal >= {EXPLORE_GOAL}), median of {len(per)}')]


def row_trace(b):
    """Tracing speeds (kmaplab/trace_bench.py): capture, decode, text, and the
    naive one-Python-call-per-instruction tracer on the same workload."""
    from .trace_bench import trace_rows
    return trace_rows(b)


def asm_source(functions=300):
    """A program of `functions` x 8 lines (labels, memory operands, local
    and forward branches, data with symbol references): the assembler
    row's input, and tests/test_asm.py's."""
    body = []
    for i in range(functions):
        body += [f'f{i}:', 'push ebp', 'mov eax, dword ptr [esp + 8]', f'cmp dword ptr [d{i}], 0',
                 f'jne f{(i + 1) % functions}', '1: lea ecx, [ecx + 4]', 'jecxz 1b', 'ret',
                 f'd{i}: .long 0, f{i}']
    return '\n'.join(body) + '\n'


def row_asm(b):
    """The assembler (vm/asm.py, keystone underneath): CPU time to assemble
    a 2,400-line program (the fastest of a few; a new image each time, no
    cache), as us.  Moved here from a wall-clock assertion in the tests."""
    from vm.asm import assemble
    text = asm_source()
    best, t_end = None, time.perf_counter() + b.seconds
    while best is None or time.perf_counter() < t_end:
        c0 = time.process_time()
        assemble([('bench.S', text)], 0xC0100000)
        dt = time.process_time() - c0
        best = dt if best is None else min(best, dt)
    return [Row('assemble 2,400 lines (vm/asm.py)', best * 1e6, 'us', 'CPU time, fastest')]


# Scenario variants of the report the TLB rows run (a bounded subset: one
# gup write, a 2-CPU kmap run with global flushes, a kmap_local run).
TLB_BENCH = (('gup-pin', {'write_path': 'gup_pin'}),
             ('kmap-scaling', {'cpus': 2, 'write_path': 'kmap', 'pkmap': 1024}),
             ('kmap-local', {'write_path': 'kmap_local'}))


def row_tlb_modes(b):
    """The same report scenarios under tlb=qemu and under the modelled TLB
    (tlb=p3, vm/tlb.py): guest instructions per CPU second each way, and the
    model's CPU time against QEMU's (issue 15's limit: at most 150%).  CPU
    time (process_time): the host is shared."""
    from . import scenario
    from .runner import run_variant
    out, secs = [], {}
    cases = TLB_BENCH if b.seconds >= 0.1 else (('hello', {}),)     # a quick check: one small run
    for mode in ('qemu', 'p3'):
        insns, t = 0, 0.0
        for name, variant in cases:
            t0 = time.process_time()
            r = run_variant(scenario.find(name), variant, overrides={'tlb': mode})
            t += time.process_time() - t0
            insns += r['counters']['instructions']
        secs[mode] = t
        out.append(Row(f'report scenarios, tlb={mode} ({len(cases)} variants)', insns / t,
                       'insn/s', f'{t:.2f} s CPU'))
    out.append(Row('tlb=p3 CPU time / tlb=qemu', 100 * secs['p3'] / secs['qemu'], '%',
                   'the modelled TLB\'s cost (limit 150%)'))
    return out


ROWS = [row_raw, row_cpu, row_machine, row_target, row_page_fault, row_syscall, row_real, row_kernel,
        row_scaling, row_explore, row_trace, row_tlb_modes, row_asm]


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
            unicorn_patches=native.UNICORN_PATCHES, python=platform.python_version(), machine=platform.machine()), sort_keys=True))
    else:
        _print_table(out, b.raw_ips)
        print(READING)
        if ratio is not None:
            print(f'target: Machine, 1 CPU, quantum 10,000 at {100 * ratio:.1f}% of raw '
                  f'(aim >= {100 * TARGET:.0f}%): {"met" if met else "NOT met"}')
        for e in errors:
            print(f'ERROR {e}')
        build = f'patches {native.UNICORN_PATCHES}' if native.UNICORN_PATCHES else 'stock'
        print(f'({wall:.1f} s, unicorn {unicorn.__version__} ({build}), Python {platform.python_version()})')
    return 1 if errors else 0


def _print_table(rows, raw):
    width = max([len(r.name) for r in rows] + [10])
    for r in rows:
        print(f'{r.name:<{width}}  {_fmt_value(r)}  {_fmt_ratio(r, raw):>22}  {r.note}')
