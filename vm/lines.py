"""Cache-line transfers between CPUs: the Python side of vm/_lines.c.

What this file owns
  - LineModel: one per machine, shared by every CPU.  Physical ranges are
    watched in named groups (watch()); every guest load and store to them
    feeds a MESI-like owner/sharers directory per cache line, which counts
    the times a line moves to another CPU (a HITM snoop or a read for
    ownership).  Counts, not cycles: the time model prices them.
  - The line size: 32 bytes, the P6 family's (Intel SDM vol. 3, "Cache
    line size": 32 bytes for the P6 family and the Pentium; 64 from the
    Pentium 4 on).  The machine emulated is a Pentium III.

Rules
  - vm/ knows no Linux: the groups' names and ranges come from the driver.
  - The hooks are C, limited to each range (Unicorn memory hooks see
    physical addresses once paging is on); they never change the run.
  - Only guest accesses are seen: a word the Python kernel reads or writes
    directly (machine.read32/write32) does not move a line.
  - On a one-CPU machine no line can move to another CPU: the groups are
    kept (every count is 0, exactly what the hooks would count) but no
    hook is installed.
  - Cost: in our Unicorn build (tools/unicorn/patches/0002) a memory hook
    limited to a range sends only the loads and stores to the physical
    pages it covers through Unicorn's slow-path helpers (about 25 ns more
    per access); stock Unicorn 2.1.4 sends every access of all code
    translated while any such hook exists (tcg_uc_has_hookmem).  Before
    calling a memory hook Unicorn syncs the guest PC (cpu_restore_state: a
    search of the translated code); the hooks here read no CPU state, so
    they are marked (native.hook_nosync, patch 0005) and skip it.
"""
import ctypes

from unicorn.unicorn_const import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE

from . import _lines, native

_lib = ctypes.CDLL(_lines.__file__)
_lib.klines_new.argtypes = [ctypes.c_uint32]
_lib.klines_new.restype = ctypes.c_void_p
_lib.klines_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32]
_lib.klines_add.restype = ctypes.c_int
_lib.klines_free.argtypes = [ctypes.c_void_p]
_lib.klines_free.restype = None
HOOK = ctypes.cast(_lib.klines_mem_hook, ctypes.c_void_p).value

LINE_SIZE = 32
MAX_GROUPS = 16
MAX_CPUS = 32


class KLines(ctypes.Structure):
    _fields_ = [('transfers', (ctypes.c_uint64 * MAX_CPUS) * MAX_GROUPS),
                ('accesses', ctypes.c_uint64 * MAX_GROUPS)]


class Site(ctypes.Structure):
    _fields_ = [('l', ctypes.c_void_p), ('cpu', ctypes.c_uint32), ('range', ctypes.c_uint32)]


class LineModel:
    """Cache-line ownership across the machine's CPUs."""

    def __init__(self, machine, line_size=LINE_SIZE):
        self.machine = machine
        self.ptr = _lib.klines_new(line_size.bit_length() - 1)
        if not self.ptr:
            raise MemoryError('line model')
        self.k = KLines.from_address(self.ptr)
        self.groups = []             # group index -> name
        self._sites = []

    def watch(self, group, pa, size):
        """Count line transfers of physical [pa, pa+size) under `group`."""
        if group not in self.groups:
            if len(self.groups) >= MAX_GROUPS:
                raise ValueError('too many line groups')
            self.groups.append(group)
        g = self.groups.index(group)
        r = _lib.klines_add(self.ptr, pa, pa + size, g)
        if r < 0:
            raise ValueError(f'cannot watch {group} at {pa:#x}+{size}')
        if len(self.machine.cpus) < 2:
            return                        # nothing to count (see the top)
        for cpu in self.machine.cpus:
            def install(cpu=cpu):
                site = Site(l=self.ptr, cpu=cpu.index, range=r)
                h = native.hook_add(cpu.uc, UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, HOOK,
                                    ctypes.addressof(site), pa, pa + size - 1)
                native.hook_nosync(cpu.uc, h)     # the hook reads no register
                return site
            # a CPU reused from an earlier machine (vm/spares.py) may have
            # this hook already: its site is pointed at this model
            site, reused = cpu.hook_once(('lines', pa, size, r), install)
            site.l, site.cpu, site.range = self.ptr, cpu.index, r
            self._sites.append(site)
            if not reused:
                cpu.flush_code_cache()    # translated code must see the hook

    def transfers(self, group=None, cpu=None):
        """Line transfers (to `cpu`, of `group`; None = all)."""
        gs = range(len(self.groups)) if group is None else [self.groups.index(group)]
        cs = range(len(self.machine.cpus)) if cpu is None else [cpu]
        return sum(self.k.transfers[g][c] for g in gs for c in cs)

    def counters(self):
        out = {'line_transfers': self.transfers()}
        for name in self.groups:
            out[f'line_transfers_{name}'] = self.transfers(name)
        return out

    def __del__(self):
        ptr, self.ptr = getattr(self, 'ptr', None), None
        if ptr:
            _lib.klines_free(ptr)
