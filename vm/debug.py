"""The machine's debug unit: breakpoints, watchpoints and single-step on
every CPU, with a stop reported synchronously from inside the emulation.

What this file owns
  - The hooks of vm/_debug.c on each CPU (a code hook over the whole address
    space, and a memory hook while a watchpoint exists), the tables they
    read (ctypes mirrors of `dbg_state` / `dbg_cpu`), and the callback they
    call.
  - Virtual -> physical translation for a debugger, through one CPU's
    current CR3 (no A/D side effects).

How a stop works (and why it leaves the run unchanged)
  One host thread runs every CPU in turn.  When a CPU reaches a breakpoint,
  or its step bit is set, or a watched physical range was accessed, the C
  hook calls `on_stop(cpu, eip, why)` before the instruction, from inside
  that CPU's uc_emu_start.  `on_stop` serves the debugger (vm/gdbstub.py)
  and returns to let the machine go on.  While it runs, no guest
  instruction executes anywhere: the whole machine is stopped at instruction
  boundaries (the other CPUs are between two runs).  The hooks never stop
  Unicorn, never end a block and never touch the clocks, so the translated
  blocks, instruction counts, quanta, interrupt windows and therefore the
  schedule are those of the same run without a debugger (tests/test_gdb.py
  compares the counters).

Rules
  - attach() before the machine runs under the debugger: the code cache is
    flushed once so that every block is translated with the code hook.
  - A stop handler may read and write memory and general registers of any
    CPU; it must not change EIP or segment registers of the CPU it stopped
    on (Unicorn is inside a block) and must not raise.
  - vm/ knows no Linux: addresses are numbers; names come from the caller.
"""
import ctypes

from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE
from unicorn import x86_const as ux

from . import _debug, native, x86

MAX_BP = 64
MAX_WP = 16
MAX_CPUS = 32

WATCH_WRITE, WATCH_READ, WATCH_ACCESS = 1, 2, 3

_lib = ctypes.CDLL(_debug.__file__)
_CODE_HOOK = ctypes.cast(_lib.dbg_code_hook, ctypes.c_void_p).value
_MEM_HOOK = ctypes.cast(_lib.dbg_mem_hook, ctypes.c_void_p).value
_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32)


class _Watch(ctypes.Structure):
    _fields_ = [('lo', ctypes.c_uint32), ('hi', ctypes.c_uint32),
                ('kind', ctypes.c_uint32), ('va', ctypes.c_uint32)]


class _State(ctypes.Structure):
    _fields_ = [
        ('nbp', ctypes.c_uint32),
        ('step_mask', ctypes.c_uint32),
        ('bp', ctypes.c_uint32 * MAX_BP),
        ('nwp', ctypes.c_uint32),
        ('pad', ctypes.c_uint32),
        ('wp', _Watch * MAX_WP),
        ('cb', ctypes.c_void_p),
        ('hit_va', ctypes.c_uint32 * MAX_CPUS),
        ('hit_kind', ctypes.c_uint32 * MAX_CPUS),
    ]


class _Cpu(ctypes.Structure):
    _fields_ = [('s', ctypes.c_void_p), ('cpu', ctypes.c_uint32), ('pad', ctypes.c_uint32)]


class DebugError(Exception):
    """A request the debug unit cannot honour (too many breakpoints, ...)."""


class Stop:
    """Why a CPU stopped: kind 'break', 'step' or 'watch' (then watch_va
    and access 'write' / 'read')."""
    __slots__ = ('cpu', 'eip', 'kind', 'watch_va', 'access')

    def __init__(self, cpu, eip, kind, watch_va=None, access=None):
        self.cpu, self.eip, self.kind, self.watch_va, self.access = cpu, eip, kind, watch_va, access

    def __repr__(self):
        w = f' watch={self.watch_va:#x}/{self.access}' if self.kind == 'watch' else ''
        return f'<Stop cpu{self.cpu} {self.kind} eip={self.eip:#x}{w}>'


class Debugger:
    """The debug unit of a Machine.  on_stop(Stop) is called inside the
    emulation (see the top of this file); it may call the methods below."""

    def __init__(self, machine, on_stop):
        if len(machine.cpus) > MAX_CPUS:
            raise DebugError(f'at most {MAX_CPUS} CPUs')
        self.m = machine
        self.on_stop = on_stop
        self.s = _State()
        self._cb = _CB(self._hook)              # keep the thunk alive
        self.s.cb = ctypes.cast(self._cb, ctypes.c_void_p).value
        self._cpus = [_Cpu(ctypes.addressof(self.s), i) for i in range(len(machine.cpus))]
        self.breakpoints = []                   # addresses, in insertion order
        self.watches = []                       # (va, length, kind, [(pa_lo, pa_hi)])
        self._mem_hooks = None                  # per-CPU handles while watches exist
        self.error = None                       # an exception raised by on_stop
        self.attached = False

    # ---- attach / detach ----------------------------------------------

    def attach(self):
        """Install the code hook on every CPU (before it runs under the
        debugger) and drop the translated code, so every block sees it."""
        for cpu, c in zip(self.m.cpus, self._cpus):
            native.hook_add(cpu.uc, UC_HOOK_CODE, _CODE_HOOK, ctypes.addressof(c))
            cpu.flush_code_cache()
        self.attached = True

    def release(self):
        """Forget every breakpoint, watchpoint and step: the hooks stay but
        never call back again (the machine runs on at hook cost)."""
        self.breakpoints.clear()
        self.s.nbp = 0
        self.s.step_mask = 0
        self.watches.clear()
        self._sync_watches()

    # ---- breakpoints and stepping --------------------------------------

    def add_breakpoint(self, addr):
        addr &= 0xFFFFFFFF
        if addr in self.breakpoints:
            return
        if len(self.breakpoints) >= MAX_BP:
            raise DebugError(f'at most {MAX_BP} breakpoints')
        self.breakpoints.append(addr)
        self._sync_breakpoints()

    def remove_breakpoint(self, addr):
        addr &= 0xFFFFFFFF
        if addr in self.breakpoints:
            self.breakpoints.remove(addr)
            self._sync_breakpoints()

    def _sync_breakpoints(self):
        for i, a in enumerate(self.breakpoints):
            self.s.bp[i] = a
        self.s.nbp = len(self.breakpoints)

    def set_step(self, cpus):
        """Call back before the next instruction of each CPU in `cpus` (for
        the CPU stopped in the hook: after the instruction it stopped at)."""
        mask = 0
        for i in cpus:
            mask |= 1 << i
        self.s.step_mask = mask

    # ---- watchpoints ----------------------------------------------------

    def add_watch(self, cpu, va, length, kind):
        """Watch [va, va+length) as mapped by `cpu`'s page tables now: the
        physical bytes behind it, through whatever mapping the guest uses.
        Returns the physical pieces; DebugError if a page is not mapped."""
        if len(self.watches) >= MAX_WP:
            raise DebugError(f'at most {MAX_WP} watchpoints')
        pieces = []
        a, end = va, va + length
        while a < end:
            stop = min(end, (a & ~0xFFF) + 0x1000)
            pa = self.translate(cpu, a)
            if pa is None:
                raise DebugError(f'{a:#x} is not mapped on CPU {cpu}')
            pieces.append((pa, pa + stop - a))
            a = stop
        if len(self.watches) + len(pieces) > MAX_WP:
            raise DebugError(f'at most {MAX_WP} watched pieces')
        self.watches.append((va, length, kind, pieces))
        self._sync_watches()
        return pieces

    def remove_watch(self, va, length, kind):
        for w in self.watches:
            if w[:3] == (va, length, kind):
                self.watches.remove(w)
                break
        self._sync_watches()

    def _sync_watches(self):
        n = 0
        for va, _, kind, pieces in self.watches:
            for lo, hi in pieces:
                w = self.s.wp[n]
                w.lo, w.hi, w.kind, w.va = lo, hi, kind, va
                n += 1
        self.s.nwp = n
        if n and self._mem_hooks is None:
            self._mem_hooks = [native.hook_add(cpu.uc, UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE,
                                               _MEM_HOOK, ctypes.addressof(c))
                               for cpu, c in zip(self.m.cpus, self._cpus)]
        elif not n and self._mem_hooks is not None:
            for cpu, h in zip(self.m.cpus, self._mem_hooks):
                native.hook_del(cpu.uc, h)
            self._mem_hooks = None

    # ---- memory through a CPU's page tables ----------------------------

    def cr3(self, cpu):
        return self.m.cpus[cpu].uc.reg_read(ux.UC_X86_REG_CR3)

    def translate(self, cpu, va):
        """Physical address of `va` under CPU `cpu`'s current CR3, or None."""
        cr3 = self.cr3(cpu)
        if not self.m.cpus[cpu].uc.reg_read(ux.UC_X86_REG_CR0) & x86.CR0_PG:
            return va if va < self.m.ram_size else None
        pa = x86.translate(self.m.ram, cr3, va & 0xFFFFFFFF)
        return pa if pa is not None and pa < self.m.ram_size else None

    def read_virt(self, cpu, va, n):
        """Bytes at [va, va+n) as CPU `cpu` sees them; shorter (possibly
        empty) where a page is not mapped."""
        out = bytearray()
        while n > 0:
            pa = self.translate(cpu, va)
            if pa is None:
                break
            k = min(n, 0x1000 - (va & 0xFFF), self.m.ram_size - pa)
            out += self.m.read(pa, k)
            va, n = va + k, n - k
        return bytes(out)

    def write_virt(self, cpu, va, data):
        """Write through CPU `cpu`'s mapping; False if a page is unmapped
        (nothing written then).  Code already translated does not see the
        new bytes (nothing is flushed inside a stop)."""
        pieces, a, rest = [], va, bytes(data)
        while rest:
            pa = self.translate(cpu, a)
            if pa is None:
                return False
            k = min(len(rest), 0x1000 - (a & 0xFFF))
            pieces.append((pa, rest[:k]))
            a, rest = a + k, rest[k:]
        for pa, chunk in pieces:
            self.m.write(pa, chunk)
        return True

    # ---- the callback ---------------------------------------------------

    def _hook(self, _uc, cpu, eip):
        s = self.s
        bit = 1 << cpu
        kind = s.hit_kind[cpu]
        if kind:
            stop = Stop(cpu, eip, 'watch', s.hit_va[cpu], 'write' if kind == 1 else 'read')
            s.hit_kind[cpu] = 0
        elif s.step_mask & bit:
            stop = Stop(cpu, eip, 'step')
        else:
            stop = Stop(cpu, eip, 'break')
        s.step_mask &= ~bit
        try:
            self.on_stop(stop)
        except BaseException as e:       # noqa: BLE001 - must not unwind through C
            self.error = e
            self.release()
            self.m.stop('debugger error')
            self.m.cpus[cpu].k.limit = 0
