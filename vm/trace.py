"""Instruction tracing, the machine side: C-backed trace buffers per CPU.

What this file owns
  - KTrace, the ctypes mirror of `ktrace` in vm/_native.c, and REC_DTYPE /
    MEM_DTYPE, the numpy mirrors of its records (kt_rec, kt_mem).
  - MachineTrace(machine, consumer): the C hooks on every traced CPU, the
    buffers they fill, and the hand-over of each run's records:
      set_ranges(ranges)   trace every instruction in these [lo, hi) virtual
                           ranges (None: no instruction tracing at all)
      set_points(addrs)    one-address hooks: a POINT record (registers) each
                           time one of these instructions is about to run
      mark(cpu, eip)       from a Python hook during a run: a MARK record
      attach() / detach()  start / stop handing runs to the consumer
      on() / off()         install / remove every hook (between runs only;
                           the consumer's before_run may call them)
    consumer.before_run(cpu, budget) -> bool   record this run of this CPU?
    consumer.after_run(cpu, trap, recs, mems, stop_regs, dropped)
  - NaiveTrace: the reference a C tracer is measured against (kmaplab bench):
    one Python call per instruction (UC_HOOK_CODE) and per memory access.

How it works
  - Code hooks are limited to the traced ranges, so code outside them runs
    as translated without any hook call; a hook added after a block was
    translated does not fire in that block, so every change of hooks flushes
    every traced CPU's translation cache.  A run ends at a block boundary or
    a trap whatever is hooked: tracing does not change the run (a test
    compares the counters with and without it).
  - While attached, CPU.run is wrapped on the instance (no cost when
    detached): before the run the buffers are sized for its budget and the
    consumer may switch this CPU's recording off for it (a task filter);
    after it, the run's records go to the consumer, with the registers at
    the stop (the after-state of a last traced instruction).
  - Records, in the order they were made (see vm/_native.c):
      INSN   seq, icount, eip, size, regs BEFORE the instruction, and its
             memory accesses (physical address, size, value)
      STATE  regs after leaving traced code (the after-state of the INSN
             just before it when icount == that INSN's icount + 1)
      POINT  a watched address was reached: regs before it
      MARK   mark(): a place in the run for something Python did mid-run
             (a Python hook), with its exact seq and icount; no regs
    An INSN whose icount equals the CPU's count at the stop did not retire:
    it faulted and will run again.

Rules
  - vm/ knows nothing of Linux: ranges and points are plain addresses.
  - Hooks only read guest state.
  - Memory-hook addresses are physical (paging on); the virtual address of
    an access is reconstructed from the instruction's operands by the
    consumer (kmaplab/trace.py).
"""
import ctypes

import numpy as np
from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE
from unicorn import x86_const as ux
from unicorn.unicorn_py3.unicorn import uclib

from . import native

NREGS = 11
MAX_RANGES = 64
MAX_CPUS = 32
REGS = ('eax', 'ebx', 'ecx', 'edx', 'esi', 'edi', 'ebp', 'esp', 'eflags', 'cs', 'cr3')
_REG_IDS = [getattr(ux, f'UC_X86_REG_{r.upper()}') for r in REGS]
INSN, STATE, POINT, MARK = 0, 1, 2, 3
MEM_READ, MEM_WRITE = 16, 17
MIN_CAP = 4096
MAX_CAP = 1 << 20              # records per CPU per run (80 bytes each; 3 accesses of 24 each)

REC_DTYPE = np.dtype([('seq', '<u8'), ('icount', '<u8'), ('kind', '<u4'), ('eip', '<u4'),
                      ('size', '<u4'), ('nmem', '<u4'), ('mem_first', '<u4'),
                      ('regs', '<u4', (NREGS,))])
MEM_DTYPE = np.dtype([('rec', '<u4'), ('type', '<u4'), ('pa', '<u4'), ('size', '<u4'),
                      ('value', '<u8')])


_NO_RECS = np.zeros(0, REC_DTYPE)
_NO_MEMS = np.zeros(0, MEM_DTYPE)


class KTrace(ctypes.Structure):
    """Mirror of `ktrace` in vm/_native.c, field by field."""
    _fields_ = [
        ('cpu', ctypes.c_void_p),
        ('reg_read_batch', ctypes.c_void_p),
        ('enabled', ctypes.c_uint32),
        ('open', ctypes.c_uint32),
        ('cur', ctypes.c_uint32),
        ('nothers', ctypes.c_uint32),
        ('others', ctypes.c_void_p * MAX_CPUS),
        ('regids', ctypes.c_int32 * NREGS),
        ('pad', ctypes.c_uint32),
        ('recs', ctypes.c_void_p),
        ('nrec', ctypes.c_uint32),
        ('cap', ctypes.c_uint32),
        ('mems', ctypes.c_void_p),
        ('nmem', ctypes.c_uint32),
        ('mcap', ctypes.c_uint32),
        ('dropped', ctypes.c_uint64),
        ('ram', ctypes.c_void_p),
        ('ram_size', ctypes.c_uint64),
        ('seq_lo', ctypes.c_uint64),
        ('seq_hi', ctypes.c_uint64),
        ('nranges', ctypes.c_uint32),
        ('pad2', ctypes.c_uint32),
        ('lo', ctypes.c_uint32 * MAX_RANGES),
        ('hi', ctypes.c_uint32 * MAX_RANGES),
    ]


def _fn(name):
    return ctypes.cast(getattr(native._lib, name), ctypes.c_void_p).value


CODE_HOOK = _fn('ktrace_code_hook')
EXIT_HOOK = _fn('ktrace_exit_hook')
BLOCK_HOOK = _fn('ktrace_block_hook')
POINT_HOOK = _fn('ktrace_point_hook')
MEM_HOOK = _fn('ktrace_mem_hook')
_mark = native._lib.ktrace_mark
_mark.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
_mark.restype = ctypes.c_int64
UC_REG_READ_BATCH = ctypes.cast(uclib.uc_reg_read_batch, ctypes.c_void_p).value


def merge_ranges(ranges):
    """Sorted, overlapping or touching [lo, hi) ranges merged."""
    out = []
    for lo, hi in sorted((lo, hi) for lo, hi in ranges if hi > lo):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [tuple(r) for r in out]


class _CpuTrace:
    """One CPU's ktrace, its buffers and its hook handles."""

    def __init__(self, machine, cpu):
        self.cpu = cpu
        self.k = KTrace()
        k = self.k
        k.cpu = cpu.kptr
        k.reg_read_batch = UC_REG_READ_BATCH
        k.enabled = 1
        k.cur = 0xFFFFFFFF
        others = [c for c in machine.cpus if c is not cpu]
        k.nothers = len(others)
        for i, c in enumerate(others):
            k.others[i] = ctypes.addressof(c.k) + type(c.k).executed.offset
        for i, r in enumerate(_REG_IDS):
            k.regids[i] = r
        k.ram = machine.ram_ptr
        k.ram_size = machine.ram_size
        k.seq_lo, k.seq_hi = 0, (1 << 64) - 1
        self.addr = ctypes.addressof(k)
        self.recs = self.mems = None
        self._size(MIN_CAP)
        self.hooks = []

    def _size(self, cap):
        if self.recs is not None and len(self.recs) >= cap:
            return
        self.recs = np.zeros(cap, REC_DTYPE)
        self.mems = np.zeros(3 * cap, MEM_DTYPE)
        self.k.recs, self.k.cap = self.recs.ctypes.data, cap
        self.k.mems, self.k.mcap = self.mems.ctypes.data, 3 * cap

    def prepare(self, budget):
        """Room for every record a run of `budget` instructions can make:
        an INSN and a STATE per instruction, one block of overshoot."""
        k = self.k
        if 2 * (budget + 1024) > k.cap and k.cap < MAX_CAP:
            self._size(min(MAX_CAP, 2 * (budget + 1024)))
        k.nrec = k.nmem = k.dropped = k.open = 0
        k.cur = 0xFFFFFFFF

    def take(self):
        n, m = self.k.nrec, self.k.nmem
        if not n:
            return _NO_RECS, _NO_MEMS, int(self.k.dropped)
        return self.recs[:n].copy(), self.mems[:m].copy(), int(self.k.dropped)

    def add(self, htype, fn, begin=1, end=0):
        self.hooks.append(native.hook_add(self.cpu.uc, htype, fn, self.addr, begin, end))

    def remove_all(self):
        for h in self.hooks:
            native.hook_del(self.cpu.uc, h)
        self.hooks = []


class MachineTrace:
    """Instruction tracing on `machine` (see the module comment).  `cpus`:
    the CPU indexes to trace (default all); `memory`: record memory
    accesses (UC_HOOK_MEM_* on every access of a traced CPU)."""

    def __init__(self, machine, consumer, cpus=None, memory=True):
        self.m = machine
        self.consumer = consumer
        idx = range(len(machine.cpus)) if cpus is None else sorted(set(cpus))
        self.cpus = {i: _CpuTrace(machine, machine.cpus[i]) for i in idx}
        self.memory = memory
        self.ranges = None
        self.points = []
        self.active = False
        self.attached = False

    # ---- configuration ----------------------------------------------------

    def set_ranges(self, ranges):
        """Trace every instruction in these [lo, hi) ranges (merged; at most
        64), or none with None.  Takes effect at once (hooks re-installed,
        translation caches flushed) if tracing is on."""
        if ranges is not None:
            ranges = merge_ranges(ranges)
            if len(ranges) > MAX_RANGES:
                raise ValueError(f'{len(ranges)} separate address ranges to trace; at most {MAX_RANGES}')
            for t in self.cpus.values():
                t.k.nranges = len(ranges)
                for i, (lo, hi) in enumerate(ranges):
                    t.k.lo[i], t.k.hi[i] = lo, min(hi, 0xFFFFFFFF)
        self.ranges = ranges
        self._reinstall()

    def set_points(self, addresses):
        self.points = sorted(set(addresses))
        self._reinstall()

    def mark(self, cpu_index, eip):
        """During a run of that CPU (from a Python hook): a MARK record for
        the instruction at `eip`, about to run.  Returns (record index,
        seq, icount), or None (CPU not traced, or buffer full)."""
        t = self.cpus.get(cpu_index)
        if t is None:
            return None
        i = _mark(t.addr, eip)
        if i < 0:
            return None
        r = t.recs[i]
        return int(i), int(r['seq']), int(r['icount'])

    def set_window(self, seq_lo=0, seq_hi=None):
        """Record INSN records only for sequence numbers in [seq_lo, seq_hi)."""
        for t in self.cpus.values():
            t.k.seq_lo = seq_lo
            t.k.seq_hi = (1 << 64) - 1 if seq_hi is None else seq_hi

    # ---- switching on and off ---------------------------------------------

    def attach(self):
        if not self.attached:
            self.attached = True
            for t in self.cpus.values():
                t.cpu.run = self._wrap(t)
                t.cpu.machine.run_ahead = False     # one record per run: every boundary a run

    def detach(self):
        self.off()
        if self.attached:
            self.attached = False
            for t in self.cpus.values():
                t.cpu.__dict__.pop('run', None)
                t.cpu.machine.run_ahead = True

    def on(self):
        if not self.active:
            self.active = True
            self._install()

    def off(self):
        if self.active:
            self.active = False
            self._uninstall()

    def _reinstall(self):
        if self.active:
            self._uninstall()
            self._install()

    def _install(self):
        for t in self.cpus.values():
            for a in self.points:           # first: a POINT record precedes the INSN at its address
                t.add(UC_HOOK_CODE, POINT_HOOK, a, a)
            if self.ranges is not None:
                for lo, hi in self.ranges:
                    t.add(UC_HOOK_CODE, CODE_HOOK, lo, min(hi, 0xFFFFFFFF) - 1)
                    if hi <= 0xFFFFFFFF:
                        t.add(UC_HOOK_CODE, EXIT_HOOK, hi, hi)
                t.add(UC_HOOK_BLOCK, BLOCK_HOOK)
                if self.memory:
                    t.add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, MEM_HOOK)
            t.cpu.flush_code_cache()

    def _uninstall(self):
        for t in self.cpus.values():
            t.remove_all()
            t.cpu.flush_code_cache()

    def _wrap(self, t):
        cpu, run = t.cpu, type(t.cpu).run

        def traced_run(budget, then=None):
            # `then` (a chained next entry) is not taken: one record per
            # run, and the caller goes on as without it (vm/_run.c)
            t.prepare(budget)
            t.k.enabled = 1 if self.consumer.before_run(cpu, budget) else 0
            trap = run(cpu, budget)
            recs, mems, dropped = t.take()
            stop = cpu.regs
            self.consumer.after_run(cpu, trap, recs, mems,
                                    tuple(stop[r] for r in REGS) if len(recs) else None, dropped)
            return trap
        return traced_run


class NaiveTrace:
    """The naive tracer (for the benchmark only): a Python UC_HOOK_CODE call
    per instruction reading the same registers, and a Python call per memory
    access, appending tuples to `log`."""

    def __init__(self, machine, memory=True):
        self.m = machine
        self.log = []
        self.handles = []
        self.memory = memory

    def on(self):
        for cpu in self.m.cpus:
            regs = native.RegFile(cpu.uc, _REG_IDS)
            log = self.log

            def code(uc, address, size, _, regs=regs, log=log):
                log.append((address, size, regs.read()))

            def mem(uc, access, address, size, value, _, log=log):
                log.append((access, address, size, value))
            self.handles.append((cpu, cpu.uc.hook_add(UC_HOOK_CODE, code)))
            if self.memory:
                self.handles.append((cpu, cpu.uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, mem)))
            cpu.flush_code_cache()

    def off(self):
        for cpu, h in self.handles:
            cpu.uc.hook_del(h)
            cpu.flush_code_cache()
        self.handles = []
