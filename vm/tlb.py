"""The modelled TLB (machine option tlb='p3'): the Python side of vm/_tlb.c.

What this file owns
  - The TLB geometry (Geometry): entries and ways of the ITLB and DTLB for
    4 KiB pages and for 4 MiB pages.  The default is the Pentium III's, as
    its CPUID leaf 2 reports it (Intel SDM vol. 2A, CPUID, table "Encoding
    of CPUID Leaf 2 Descriptors": 01h ITLB 4 KiB 4-way 32 entries, 02h ITLB
    4 MiB fully associative 2 entries, 03h DTLB 4 KiB 4-way 64 entries,
    04h DTLB 4 MiB 4-way 8 entries; the P6 family returns 01h 02h 03h 04h).
    Entries 0 means unlimited (the differential tests against QEMU's walker).
  - Putting one CPU's Unicorn instance in UC_TLB_VIRTUAL mode with the C
    fill hook, and the one-address hooks on the kernel image's `mov cr3`,
    `mov cr4` and `invlpg` (watch()), which tell the model about flushes.
  - The model's counters (counts, not cycles): misses per side and per
    page kind, walks that faulted, evictions, flushes.

Rules
  - QEMU's soft TLB never holds a translation the model dropped (see the
    invariants in vm/_tlb.c); the guest sees the model's translations only.
  - Replacement is round robin per set (QEMU's TLB hits are invisible to a
    fill hook, so no policy that depends on hits can be modelled exactly).
  - QEMU's CPUState pointer, needed to flush one page of QEMU's TLB on an
    eviction, is read out of Unicorn's own tcg_flush_softmmu_tlb (its first
    instruction loads uc->cpu); an unknown build of Unicorn refuses tlb=p3.
"""
import ctypes

import capstone
from capstone import x86_const as cx
from unicorn import UC_TLB_VIRTUAL
from unicorn import x86_const as ux
from unicorn.unicorn_const import UC_HOOK_CODE, UC_HOOK_TLB_FILL
from unicorn.unicorn_py3.unicorn import uclib

from . import _tlb, native

_lib = ctypes.CDLL(_tlb.__file__)

# (entries, ways) of I4K, D4K, I4M, D4M: the Pentium III (see above).
P3_GEOMETRY = ((32, 4), (64, 4), (2, 2), (8, 4))
UNLIMITED = ((0, 0),) * 4
ARRAYS = ('itlb', 'dtlb', 'itlb_4m', 'dtlb_4m')

TLB_MODES = ('qemu', 'p3')

# The model's counters (TlbModel.counters): misses of the ITLB/DTLB on
# supervisor (kernel) and user pages; walks that faulted; re-walks through a
# held entry (D clear on a write, permission); evictions; full flushes by a
# CR4.PGE (PSE, PAE) change; misses that refill what the last full flush
# dropped.  CR3 loads and invlpg are counted by the kernel image's point
# counters already (cr3_loads, invlpg).
COUNTERS = ('itlb_misses_kernel', 'itlb_misses_user', 'dtlb_misses_kernel', 'dtlb_misses_user',
            'tlb_walk_faults', 'tlb_rewalks', 'tlb_evictions', 'tlb_pge_flushes',
            'tlb_global_refills')


class KTlb(ctypes.Structure):
    """The counters at the head of `ktlb` (vm/_tlb.c), in order."""
    _fields_ = [
        ('misses', (ctypes.c_uint64 * 2) * 2),
        ('walk_faults', ctypes.c_uint64),
        ('rewalks', ctypes.c_uint64),
        ('evictions', ctypes.c_uint64),
        ('cr3_loads', ctypes.c_uint64),
        ('full_flushes', ctypes.c_uint64),
        ('invlpgs', ctypes.c_uint64),
        ('global_refills', ctypes.c_uint64),
        ('refills', ctypes.c_uint64),
        ('qemu_flush_page', ctypes.c_uint64),
        ('qemu_flush_all', ctypes.c_uint64),
        ('fault_cr2', ctypes.c_uint32),
        ('fault_err', ctypes.c_uint32),
        ('trap', ctypes.c_void_p),
        ('stop_reason', ctypes.c_void_p),
        ('ram', ctypes.c_void_p),
        ('ram_size', ctypes.c_uint64),
        ('cpu', ctypes.c_void_p),
        ('reg_read', ctypes.c_void_p),
        ('reg_write', ctypes.c_void_p),
        ('flush_page', ctypes.c_void_p),
        ('flush_all', ctypes.c_void_p),
        ('reg_cs', ctypes.c_int32),
        ('reg_cr0', ctypes.c_int32),
        ('reg_cr2', ctypes.c_int32),
        ('reg_cr3', ctypes.c_int32),
        ('reg_cr4', ctypes.c_int32),
    ]


class InsnSite(ctypes.Structure):
    _fields_ = [('t', ctypes.c_void_p), ('base', ctypes.c_int32), ('index', ctypes.c_int32),
                ('scale', ctypes.c_int32), ('disp', ctypes.c_int32)]


_lib.ktlb_new.argtypes = [ctypes.c_void_p]
_lib.ktlb_new.restype = ctypes.c_void_p
_lib.ktlb_held.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
_lib.ktlb_held.restype = ctypes.c_uint32
_lib.ktlb_holds.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
_lib.ktlb_holds.restype = ctypes.c_int
_lib.ktlb_free.argtypes = [ctypes.c_void_p]
_lib.ktlb_free.restype = None


def _fn(lib, name):
    return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value


FILL_HOOK = _fn(_lib, 'ktlb_fill_hook')
CR3_HOOK = _fn(_lib, 'ktlb_cr3_hook')
CR4_HOOK = _fn(_lib, 'ktlb_cr4_hook')
INVLPG_HOOK = _fn(_lib, 'ktlb_invlpg_hook')

_CPU_OFFSET = None


def _uc_cpu_offset():
    """Offset of `cpu` in Unicorn's uc_struct, from the first instruction of
    tcg_flush_softmmu_tlb_x86_64 (`mov rdi, [rdi + off]`)."""
    global _CPU_OFFSET
    if _CPU_OFFSET is None:
        try:
            fn = _fn(uclib, 'tcg_flush_softmmu_tlb_x86_64')
            _fn(uclib, 'tlb_flush_page_x86_64')
            _fn(uclib, 'tlb_flush_x86_64')
        except AttributeError:
            raise RuntimeError('tlb=p3: this Unicorn build does not export its TLB flush functions')
        code = ctypes.string_at(fn, 7)
        if code[:3] != b'\x48\x8b\xbf':
            raise RuntimeError(f'tlb=p3: unknown Unicorn build (tcg_flush_softmmu_tlb starts {code.hex()})')
        _CPU_OFFSET = int.from_bytes(code[3:7], 'little', signed=True)
    return _CPU_OFFSET


def parse_geometry(spec):
    """'p3', 'unlimited', or 'I,IW,D,DW[,I4M,I4MW,D4M,D4MW]' -> geometry tuple."""
    if spec in (None, 'p3'):
        return P3_GEOMETRY
    if spec == 'unlimited':
        return UNLIMITED
    try:
        nums = [int(x) for x in str(spec).split(',')]
    except ValueError:
        nums = []
    if len(nums) not in (4, 8):
        raise ValueError(f"TLB geometry {spec!r}: 'p3', 'unlimited' or entries,ways for ITLB,DTLB"
                         " [and the 4 MiB ITLB,DTLB]")
    nums += [n for pair in P3_GEOMETRY[2:] for n in pair][:8 - len(nums)]
    geo = tuple((nums[i], nums[i + 1]) for i in range(0, 8, 2))
    for name, (entries, ways) in zip(ARRAYS, geo):
        if entries and (ways <= 0 or entries % ways):
            raise ValueError(f'TLB geometry: {name} has {entries} entries in {ways} ways')
        if entries < 0:
            raise ValueError(f'TLB geometry: {name} has {entries} entries')
    return geo


class TlbModel:
    """One CPU's modelled TLB.  Created by vm.cpu.CPU when the machine runs
    with tlb='p3'; `k` is the CPU's kcpu (its trap/stop fields are set when
    a walk faults)."""

    def __init__(self, cpu, geometry=P3_GEOMETRY):
        self.geometry = geometry
        flat = (ctypes.c_uint32 * 8)(*[n for pair in geometry for n in pair])
        ptr = _lib.ktlb_new(flat)
        if not ptr:
            raise ValueError(f'TLB geometry {geometry}: cannot build it')
        self.ptr = ptr
        self.t = KTlb.from_address(ptr)
        uc = cpu.uc
        off = _uc_cpu_offset()
        t = self.t
        t.cpu = ctypes.c_void_p.from_address(uc._uch.value + off).value
        t.trap = ctypes.addressof(cpu.k) + native.KCpu.trap.offset
        t.stop_reason = ctypes.addressof(cpu.k) + native.KCpu.stop_reason.offset
        t.ram = cpu.machine.ram_ptr
        t.ram_size = cpu.machine.ram_size
        t.reg_read = native.UC_REG_READ
        t.reg_write = ctypes.cast(uclib.uc_reg_write, ctypes.c_void_p).value
        t.flush_page = _fn(uclib, 'tlb_flush_page_x86_64')
        t.flush_all = _fn(uclib, 'tlb_flush_x86_64')
        t.reg_cs, t.reg_cr0, t.reg_cr2 = ux.UC_X86_REG_CS, ux.UC_X86_REG_CR0, ux.UC_X86_REG_CR2
        t.reg_cr3, t.reg_cr4 = ux.UC_X86_REG_CR3, ux.UC_X86_REG_CR4
        self._sites = []           # keep the InsnSite structs alive
        uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        native.hook_add(uc, UC_HOOK_TLB_FILL, FILL_HOOK, ptr)
        self._uc = uc
        self._md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
        self._md.detail = True

    def watch(self, kind, address, code):
        """Tell the model about the instruction at `address` (its bytes in
        `code`): kind 'mov_cr3', 'mov_cr4' or 'invlpg'."""
        if kind == 'mov_cr3':
            native.hook_add(self._uc, UC_HOOK_CODE, CR3_HOOK, self.ptr, address, address)
            return
        insn = next(self._md.disasm(bytes(code), address), None)
        if insn is None:
            raise ValueError(f'{kind} at {address:#x}: cannot decode')
        site = InsnSite(t=self.ptr, base=-1, index=-1, scale=1, disp=0)
        if kind == 'invlpg':
            mem = insn.operands[0].mem
            site.base = _reg_id(insn, mem.base)
            site.index = _reg_id(insn, mem.index)
            site.scale, site.disp = mem.scale, mem.disp
            fn = INVLPG_HOOK
        elif kind == 'mov_cr4':
            src = insn.operands[1]
            if src.type != cx.X86_OP_REG:
                raise ValueError(f'mov cr4 at {address:#x}: source is not a register')
            site.base = _reg_id(insn, src.reg)
            fn = CR4_HOOK
        else:
            raise ValueError(f'unknown TLB event {kind!r}')
        self._sites.append(site)
        native.hook_add(self._uc, UC_HOOK_CODE, fn, ctypes.addressof(site), address, address)

    def fault(self):
        """(cr2, error code) of the last walk that faulted."""
        return self.t.fault_cr2, self.t.fault_err

    def counters(self):
        """The model's counts (see COUNTERS)."""
        t = self.t
        m = t.misses
        return {
            'itlb_misses_kernel': m[0][0], 'itlb_misses_user': m[0][1],
            'dtlb_misses_kernel': m[1][0], 'dtlb_misses_user': m[1][1],
            'tlb_walk_faults': t.walk_faults, 'tlb_rewalks': t.rewalks,
            'tlb_evictions': t.evictions, 'tlb_pge_flushes': t.full_flushes,
            'tlb_global_refills': t.global_refills,
        }

    def misses(self):
        m = self.t.misses
        return m[0][0] + m[0][1] + m[1][0] + m[1][1]

    def held(self, array, global_only=False):
        return _lib.ktlb_held(self.ptr, ARRAYS.index(array), int(global_only))

    def holds(self, array, va):
        return bool(_lib.ktlb_holds(self.ptr, ARRAYS.index(array), va))

    def __del__(self):
        ptr, self.ptr = getattr(self, 'ptr', None), None
        if ptr:
            _lib.ktlb_free(ptr)


_REG_IDS = {n: getattr(ux, 'UC_X86_REG_' + n.upper())
            for n in ('eax', 'ebx', 'ecx', 'edx', 'esi', 'edi', 'ebp', 'esp')}


def _reg_id(insn, reg):
    if not reg:
        return -1
    name = insn.reg_name(reg)
    if name not in _REG_IDS:
        raise ValueError(f'{insn.mnemonic} {insn.op_str}: register {name} not supported')
    return _REG_IDS[name]
