"""One emulated x86-32 CPU: a Unicorn instance sharing the machine's RAM.

What this file owns
  - The Unicorn instance, its C hooks (vm/_native.c) and the per-CPU
    counters they keep.
  - Turning whatever stopped a run into a decoded Trap (vm/_run.c decodes
    it in the same C call as the run): the page-fault error code is rebuilt here (Unicorn does not expose it), the #1883 double-fault
    bug is worked around here, the STI shadow is kept here (watch_sti and
    vm/_native.c), and nothing above this file sees a Unicorn quirk.
  - The ring-0 template context saved at boot, the only way back from ring 3
    (Unicorn refuses privilege changes through reg_write).  The restore
    keeps the CPU's x87/SSE state (the span of the context that holds it is
    found at start-up): only the template's bytes before that span are
    restored (boot); a kernel entry does not touch the FPU on x86.
  - With the machine's tlb='p3', the CPU's TlbModel (vm/tlb.py): its walk's
    faults come back from vm/_run.c as UC_ERR_EXCEPTION with the kcpu's trap
    set to #PF (STOP_TRAP), and become the same Trap('pf') as QEMU's, with
    the model's CR2 and error code (pf_error_code).

Rules
  - Nothing here writes CR3 through reg_write after boot: that would flush
    the TLB behind the guest's back.  CR3 changes only by a guest `mov cr3`;
    the template's CR3 is patched to the current value before each restore
    (context_restore copies state and does not flush, as on a trap).
  - Guest time on this CPU is `instructions` (exact, see _native.c).
"""
import ctypes
import struct
import sys

import capstone
from capstone import x86_const as cx
from unicorn import Uc, UcError, UC_ARCH_X86, UC_ERR_INSN_INVALID, UC_MODE_32, UC_PROT_ALL
from unicorn import UC_HOOK_BLOCK, UC_HOOK_INTR, UC_HOOK_CODE
from unicorn.unicorn_const import UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH
from unicorn import x86_const as ux
from unicorn.unicorn_py3.unicorn import uclib


from . import _pyhook, _run, native, x86
from .tlb import TlbModel

# Registers read at every stop and written at every entry, in this order.
GPRS = ('eax', 'ebx', 'ecx', 'edx', 'esi', 'edi', 'ebp', 'esp')
_REG_IDS = {
    'eax': ux.UC_X86_REG_EAX, 'ebx': ux.UC_X86_REG_EBX, 'ecx': ux.UC_X86_REG_ECX,
    'edx': ux.UC_X86_REG_EDX, 'esi': ux.UC_X86_REG_ESI, 'edi': ux.UC_X86_REG_EDI,
    'ebp': ux.UC_X86_REG_EBP, 'esp': ux.UC_X86_REG_ESP, 'eip': ux.UC_X86_REG_EIP,
    'eflags': ux.UC_X86_REG_EFLAGS, 'cs': ux.UC_X86_REG_CS, 'cr3': ux.UC_X86_REG_CR3,
    'cr2': ux.UC_X86_REG_CR2, 'ds': ux.UC_X86_REG_DS, 'es': ux.UC_X86_REG_ES,
    'ss': ux.UC_X86_REG_SS, 'fs': ux.UC_X86_REG_FS, 'gs': ux.UC_X86_REG_GS,
}
# QEMU's physical-range invalidation inside libunicorn (x86 targets are
# built as x86_64; unicorn==2.1.4 is pinned): a RAM address of ours is its
# guest physical address (one RAM block, mapped at 0: CPU.__init__).
_tb_invalidate_phys_range = getattr(uclib, 'tb_invalidate_phys_range_x86_64', None)
if _tb_invalidate_phys_range is not None:
    _tb_invalidate_phys_range.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64]
    _tb_invalidate_phys_range.restype = None

STATE_REGS = GPRS + ('eip', 'eflags', 'cs', 'cr3', 'fs', 'gs')
ENTRY_REGS = GPRS + ('eip', 'eflags')


# Why a run stopped, decoded (vm/_run.c; Python may build one too:
# Trap(kind, vector=None, eip=0, cr2=0, error=0, cpl=0, detail='')).
#   kind: 'quantum'   budget used up (at a block boundary)
#         'irq'       an interrupt is pending and EFLAGS.IF is set
#         'pf'        page fault: cr2, error (PF_P|PF_W|PF_U rebuilt)
#         'int'       software interrupt `int vector` (eip is past it)
#         'hlt'       hlt executed (eip is past it)
#         'gp', 'ud', 'de', 'df', 'exception': other exceptions (eip at it)
#         'error'     Unicorn refused to go on (detail says why)
#   trap.user: cpl == 3.  Its fields are writable.
Trap = _run.Trap


# Read-modify-write instructions (on a memory destination).
_RMW = frozenset('add adc sub sbb and or xor inc dec neg not shl sal shr sar rol ror rcl rcr '
                 'shld shrd xchg xadd cmpxchg cmpxchg8b bts btr btc'.split())

# void hook(uc_engine *uc, uint64_t address, uint32_t size, void *user_data)
# hook_code's C callback (vm/_pyhook.c): calls the hook's Python function
_PY_CODE_HOOK = ctypes.cast(ctypes.CDLL(_pyhook.__file__).kpy_code_hook, ctypes.c_void_p).value

_PF = sys.intern('pf')



def _ctx_bytes(ctx):
    return ctypes.string_at(ctx.context, ctx.size)


def _fpu_values(uc, k):
    """Write a recognisable x87/SSE state (variant k) into `uc`."""
    uc.reg_write(ux.UC_X86_REG_FPCW, (0x37F, 0x27F)[k])
    uc.reg_write(ux.UC_X86_REG_FPSW, (0x0000, 0x3800)[k])
    uc.reg_write(ux.UC_X86_REG_FPTAG, (0xFFFF, 0x0000)[k])
    uc.reg_write(ux.UC_X86_REG_MXCSR, (0x1F80, 0x1F00)[k])
    for i in range(8):
        uc.reg_write(getattr(ux, f'UC_X86_REG_XMM{i}'), (0, (0x0123456789ABCDEF << 64 | 0xFEDCBA9876543210) ^ i)[k])
        uc.reg_write(getattr(ux, f'UC_X86_REG_FP{i}'), ((0, 0), (0x8000000000000001 + i, 0x3FFF + i))[k])


def _load_kernel_segments(uc):
    """CS, DS, ES, SS: the kernel's (each load reads its GDT descriptor and
    sets the descriptor's Accessed bit in memory)."""
    uc.reg_write(ux.UC_X86_REG_CS, x86.KERNEL_CS)
    for seg in (ux.UC_X86_REG_DS, ux.UC_X86_REG_ES, ux.UC_X86_REG_SS):
        uc.reg_write(seg, x86.KERNEL_DS)


def _find_fpu_span(uc):
    """[lo, hi) of the bytes of a uc_context that hold the x87/SSE state
    (QEMU's CPUX86State from fpstt to the XMM registers): the bytes that
    change when only FPU registers are written, minus those that differ
    between two saves of the same state (uninitialised padding)."""
    a = _ctx_bytes(uc.context_save())
    noise = {i for i, (x, y) in enumerate(zip(a, _ctx_bytes(uc.context_save()))) if x != y}
    _fpu_values(uc, 1)
    b = _ctx_bytes(uc.context_save())
    _fpu_values(uc, 0)
    diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y and i not in noise]
    if not diff:
        raise RuntimeError('cannot locate the FPU state in the Unicorn context')
    return min(diff), max(diff) + 1


def _find_error_code_offset():
    """Offset inside a uc_context of the error code QEMU computed for the
    last exception (CPUX86State.error_code): a scratch instance with paging
    takes a read fault and a write fault on a not-present page and a write
    fault on a present read-only page (CR0.WP); the one field that holds
    0, 2 and 3 in the three contexts saved in the INTR hook."""
    seen = []

    def intr(u, intno, _):
        seen.append((intno, _ctx_bytes(u.context_save())))
        u.emu_stop()
    cases = ((b'\x8b\x03', 0x5000, 0), (b'\x89\x03', 0x5000, 2), (b'\x89\x03', 0x6000, 3))
    for code, ebx, _ in cases:                  # mov eax, [ebx] / mov [ebx], eax; one
        uc = Uc(UC_ARCH_X86, UC_MODE_32)        # instance each (#1883)
        uc.mem_map(0, 0x20000, UC_PROT_ALL)
        uc.mem_write(0x10000, struct.pack('<I', 0x11000 | 7))                  # PDE 0
        uc.mem_write(0x11000, b''.join(struct.pack('<I', (i << 12) | 7) for i in range(32)))
        uc.mem_write(0x11000 + 4 * 5, struct.pack('<I', 0))                    # 0x5000: not present
        uc.mem_write(0x11000 + 4 * 6, struct.pack('<I', 0x6000 | 5))           # 0x6000: read-only
        uc.reg_write(ux.UC_X86_REG_CR3, 0x10000)
        uc.reg_write(ux.UC_X86_REG_CR0, x86.CR0_PE | x86.CR0_WP | x86.CR0_PG)
        uc.hook_add(UC_HOOK_INTR, intr)
        uc.mem_write(0x1000, code)
        uc.reg_write(ux.UC_X86_REG_EBX, ebx)
        uc.emu_start(0x1000, 0x1002)
    if [i for i, _ in seen] != [x86.VEC_PF] * 3:
        raise RuntimeError(f'page-fault probe took {[i for i, _ in seen]}; unicorn version not supported')
    size = min(len(c) for _, c in seen)
    found = [o for o in range(0, size - 3, 4)
             if all(struct.unpack_from('<i', c, o)[0] == want for (_, c), (_, _, want) in zip(seen, cases))]
    if len(found) != 1:
        raise RuntimeError(f'cannot locate the error code in the Unicorn context (candidates {found})')
    return found[0]


def _find_context_offsets():
    """Offsets inside a uc_context of CR3, of `old_exception` (#1883) and
    the span of the x87/SSE state.

    Found on a private scratch instance: CR3 by writing two values with
    paging off; old_exception as the 32-bit field that goes from -1 to 13
    when a #GP is taken; the FPU span by _find_fpu_span; the error code by
    _find_error_code_offset.  Returns (cr3_off, old_exc_off, (fpu_lo,
    fpu_hi), err_off).
    """
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x10000, UC_PROT_ALL)
    fpu = _find_fpu_span(uc)
    uc.reg_write(ux.UC_X86_REG_CR3, 0x12345000)
    a = _ctx_bytes(uc.context_save())
    uc.reg_write(ux.UC_X86_REG_CR3, 0x54321000)
    b = _ctx_bytes(uc.context_save())
    cr3 = [i for i in range(0, len(a) - 3, 4)
           if struct.unpack_from('<I', a, i)[0] == 0x12345000
           and struct.unpack_from('<I', b, i)[0] == 0x54321000]
    # mov ax, 0xfff8 ; mov ds, ax  -> #GP (selector beyond the GDT limit)
    uc.mem_write(0x1000, b'\x66\xb8\xf8\xff\x8e\xd8')
    seen = {}

    def intr(u, intno, _):
        seen['after'] = _ctx_bytes(u.context_save())
        seen['intno'] = intno
        u.emu_stop()
    before = b
    uc.hook_add(UC_HOOK_INTR, intr)
    uc.emu_start(0x1000, 0x1006)
    after = seen.get('after', b'')
    old = [i for i in range(0, min(len(before), len(after)) - 3, 4)
           if struct.unpack_from('<i', before, i)[0] == -1
           and struct.unpack_from('<i', after, i)[0] == seen.get('intno')]
    if len(cr3) != 1 or len(old) != 1:
        raise RuntimeError(f'cannot locate CR3/old_exception in the Unicorn context '
                           f'(candidates {cr3}, {old}); unicorn version not supported')
    if fpu[0] <= cr3[0] < fpu[1] or fpu[0] <= old[0] < fpu[1] or fpu[1] - fpu[0] > 4096:
        raise RuntimeError(f'implausible FPU span {fpu} in the Unicorn context; '
                           f'unicorn version not supported')
    return cr3[0], old[0], fpu, _find_error_code_offset()


_OFFSETS = None


def context_offsets():
    global _OFFSETS
    if _OFFSETS is None:
        _OFFSETS = _find_context_offsets()
    return _OFFSETS


# Host bytes of translated code per CPU (Unicorn's default is 1 GiB each).
# The lab's own code (kernel, programs, busybox) translates to a few MiB; a
# runaway guest executing data or zero pages translates a new block every
# few hundred bytes, and without a cap the host's memory grew past 1 GiB.
# When the buffer is full QEMU flushes every block and translates again:
# the guest sees nothing (instruction counts, traps, timing are the same).
TCG_BUFFER = 64 << 20


_MD = []


def _disassembler():
    """The process's capstone handle (x86-32, with operand details): it
    keeps no state between calls, so every CPU shares one."""
    if not _MD:
        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
        md.detail = True
        _MD.append(md)
    return _MD[0]


class CPU:
    """An emulated CPU.  Created and booted by vm.Machine."""

    def __init__(self, machine, index):
        self.machine = machine
        self.index = index
        self.ram = machine.ram
        self.uc = Uc(UC_ARCH_X86, UC_MODE_32)
        self.uc.ctl_set_tcg_buffer_size(TCG_BUFFER)   # before anything initialises the engine
        self.uc.mem_map_ptr(0, machine.ram_size, UC_PROT_ALL, machine.ram_ptr)
        self._pristine_ctx = self.uc.context_save()   # the CPU state as created (reset)
        self.k = native.KCpu()
        self.kptr = ctypes.addressof(self.k)
        self.k.trap = -1
        self.k.limit = 0
        self.cr3_off, self.k.old_exc_off, self._fpu_span, self._err_off = context_offsets()
        self._scratch = self.uc.context_save()
        self.k.ctx = ctypes.cast(self._scratch.context, ctypes.c_void_p).value
        # QEMU's error code of the last exception, in the context the INTR
        # hook saved (pf_error_code reads it; a view, not a copy)
        self._hw_error = ctypes.c_int32.from_address(self.k.ctx + self._err_off)
        self.k.emu_stop = native.UC_EMU_STOP
        self.k.ctx_save = native.UC_CTX_SAVE
        self.k.ctx_restore = native.UC_CTX_RESTORE
        self.k.reg_read = native.UC_REG_READ
        native.hook_add(self.uc, UC_HOOK_BLOCK, native.BLOCK_HOOK, self.kptr)
        native.hook_add(self.uc, UC_HOOK_INTR, native.INTR_HOOK, self.kptr)
        self._uch = self.uc._uch
        # The round trip in C (vm/_run.c): one call runs to the next stop and
        # returns the state registers; one call writes the entry registers.
        self._runner = native.runner(self.uc, self.kptr, STATE_REGS, [_REG_IDS[r] for r in STATE_REGS],
                                     [_REG_IDS[r] for r in ENTRY_REGS], narrow=('cs', 'fs', 'gs'))
        self._run = self._runner.run
        self._flushed_at = 0       # _runner.runs at the last flush_code_cache
        self._enter = self._runner.enter
        # enter_frame is the C call itself (the method below documents it)
        self.enter_frame = self._runner.enter_frame
        self._md = _disassembler()
        self._decoded = {}         # (eip, code bytes) -> capstone insn: faulting instructions
        self._template = None
        # tlb='p3': the modelled TLB behind QEMU's (vm/tlb.py); None: QEMU's walker
        self.tlb = (TlbModel(self, machine.tlb_geometry) if getattr(machine, 'tlb', 'qemu') == 'p3'
                    else None)
        self._code_bitmaps = [None] * native.MAX_REGIONS   # keep the buffers alive
        self._py_hooks = []        # hook_code's cells (vm/_pyhook.c's user data), kept alive
        self.point_counters = {}   # address -> ctypes.c_uint64 (invlpg, mov cr3, ...)
        self.point_kind = {}       # address -> 'invlpg' | 'cr3' | ...
        self.ranges = {}           # name -> index into k.ranges
        self.regs = self._runner.regs    # as of the last stop: the Runner's one dict, kept
        self.regs.update(dict.fromkeys(STATE_REGS, 0))
        self._halted = machine.halted     # the machine's C array (vm/_run.c Clock reads it)
        self.counters = dict(interrupts=0, ipis_sent=0, ipis_received=0,
                             faults_pf=0, faults_gp=0, faults_ud=0, faults_other=0,
                             syscalls=0, service_calls=0, runs=0)
        self._configure_runner()
        # Reuse (vm/spares.py): hooks installed in earlier lives of this
        # instance, by key, and the keys this life registered before its
        # first run (in order); the pristine state reset() goes back to.
        self._kept = {}            # key -> [objects of earlier lives' hooks with that key]
        self._taken = {}           # key -> how many of them this life took
        self.hook_keys = []        # (key, reused) registered this life, in order
        self.boot_phase = True     # before the machine's first run: hooks may be taken over
        self._pristine = None      # (uc context, KCpu bytes, scratch context bytes)
        self._fresh = True         # the state as created (or reset to it): boot() not yet run
        self._booted = None        # (boot's arguments, the state it made) on the state as created

    def _configure_runner(self):
        """Point the C run path at this life's counters dict, halted flag
        and RAM: run() returns (Trap, regs), the decode in C (vm/_run.c)
        counts the faults in `counters` and sets the halted flag at a hlt;
        enter_frame writes into the machine's RAM.  Again after reset()."""
        r, index = self._runner, self.index
        r.set_decode(self.uc, self.counters, STATE_REGS.index('cs'), STATE_REGS.index('eflags'),
                     int(self.tlb is not None), UC_ERR_INSN_INVALID, ux.UC_X86_REG_CR2,
                     ctypes.addressof(self._halted) + index,
                     self.kptr + type(self.k).irq_pending.offset, native.UC_STRERROR)
        r.set_ram(self.machine.ram_ptr, self.machine.ram_size, x86.KERNEL_CS)
        # run-ahead (vm/machine.py Machine.run): the clock the block hook
        # reads, and counters['runs'] counted in C (1 + boundaries crossed)
        self.k.extra = ctypes.addressof(self.machine.extra) + 8 * index
        self.k.ahead_q = 0
        r.set_counts(self.kptr + type(self.k).crossed.offset)

    def make_reusable(self):
        """Save the state reset() restores: the instance's CPU state as
        created (before boot), the kcpu struct and the scratch context.
        Called by vm/spares.py on a CPU just created."""
        if self.tlb is not None:
            raise ValueError('a CPU with the modelled TLB (tlb=p3) is not reusable')
        self._pristine = (self._pristine_ctx, ctypes.string_at(self.kptr, ctypes.sizeof(self.k)),
                          _ctx_bytes(self._scratch))

    def reset(self, machine):
        """This CPU, created for an earlier machine on the same RAM, as if
        created now for `machine`: the CPU state as created (registers, CRs,
        segments, FPU: one uc_context restore of the state QEMU keeps), an
        empty TLB, a fresh kcpu, no counts.  What stays is the instance, its
        hooks (a later hook_code/count_at/watch_sti/hook_once with the same
        key takes over the earlier one: vm/spares.py checks every life
        registers the same keys in the same order) and the translations
        the machine's release kept (vm/spares.py: only those whose bytes
        are unchanged).  Python hooks of earlier lives do nothing until
        registered again."""
        if self._pristine is None:
            raise ValueError('reset() of a CPU that was not made reusable')
        ctx, kbytes, scratch = self._pristine
        self.machine = machine
        self.uc.context_restore(ctx)
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
        ctypes.memmove(self.kptr, kbytes, len(kbytes))
        ctypes.memmove(self.k.ctx, scratch, len(scratch))
        for cells in self._kept.values():
            for obj in cells:
                if isinstance(obj, list):                  # a Python hook's [fn]
                    obj[0] = None
                elif isinstance(obj, ctypes.c_uint64):     # a count_at counter
                    obj.value = 0
        self._taken = {}
        self.hook_keys = []
        self.boot_phase = True
        self._code_bitmaps = [None] * native.MAX_REGIONS
        self._template = None
        self._fresh = True
        self.point_counters = {}
        self.point_kind = {}
        self.ranges = {}
        self.regs.update(dict.fromkeys(STATE_REGS, 0))
        self._halted = machine.halted
        self.counters = dict.fromkeys(self.counters, 0)
        self._configure_runner()

    def hook_once(self, key, install):
        """A hook this life wants under `key` (hashable): before the first
        run, the object an earlier life's install() returned for the same
        key, if this instance has one not yet taken; else install() (which
        adds the hook and returns what must stay alive with it).  Returns
        (object, reused).  Registrations before the first run are recorded
        in hook_keys (vm/spares.py compares them between lives)."""
        cells = self._kept.setdefault(key, [])
        n = self._taken.get(key, 0) if self.boot_phase else len(cells)
        reused = n < len(cells)
        if not reused:
            cells.append(install())
            n = len(cells) - 1
        self._taken[key] = n + 1
        if self.boot_phase:
            self.hook_keys.append((key, reused))
        return cells[n], reused

    # ---- boot -------------------------------------------------------------

    def boot(self, cr3, gdt_va, gdt_size, esp, cr4=0):
        """Turn on paging with `cr3` (and `cr4`, e.g. PSE, OSFXSR), load the
        GDT at linear `gdt_va`, load the kernel segments, put the FPU in its
        fninit state, and save the ring-0 template context.  The page tables
        must already map `gdt_va`.  CR0 has MP and NE (native x87 errors),
        as Linux sets them on a CPU with an FPU."""
        uc = self.uc
        args = (cr3, gdt_va, gdt_size, esp, cr4)
        if self._booted is not None and self._booted[0] == args and self._fresh:
            # Spare hardware (vm/spares.py), reset to the state as created,
            # booted alike before (the same spares key: the same boot, so the
            # same page tables and GDT in RAM): the writes below would make
            # the state they made then, which that boot saved.  The segment
            # loads are done again: loading a descriptor sets its Accessed
            # bit in the GDT (in RAM, which the reset zeroed).
            self._template = self._booted[1]
            uc.context_restore(self._template)
            _load_kernel_segments(uc)
        else:
            uc.reg_write(ux.UC_X86_REG_CR3, cr3)
            uc.reg_write(ux.UC_X86_REG_CR4, cr4)
            uc.reg_write(ux.UC_X86_REG_CR0, x86.CR0_PE | x86.CR0_MP | x86.CR0_ET | x86.CR0_NE
                         | x86.CR0_WP | x86.CR0_PG)
            _fpu_values(uc, 0)
            uc.reg_write(ux.UC_X86_REG_GDTR, (0, gdt_va, gdt_size - 1, 0))
            _load_kernel_segments(uc)
            uc.reg_write(ux.UC_X86_REG_FS, 0)
            uc.reg_write(ux.UC_X86_REG_GS, 0)
            uc.reg_write(ux.UC_X86_REG_ESP, esp)
            uc.reg_write(ux.UC_X86_REG_EFLAGS, x86.EFLAGS_RESERVED)
            self._template = uc.context_save()
            self._booted = (args, self._template) if self._fresh and self._pristine else None
        self._fresh = False
        self._tpl_addr = ctypes.cast(self._template.context, ctypes.c_void_p).value
        # The part of the template a kernel entry restores: the bytes before
        # the x87/SSE span (registers, segments with their hidden parts,
        # hflags with the CPL, CR0-CR4, GDTR/IDTR).  A uc_context restore
        # copies its own `context_size` bytes (the size_t it starts with), so
        # a copy of that prefix with the size cut to it restores only the
        # prefix: the FPU registers and what follows them (MSRs, the
        # exception fields QEMU sets at each exception) stay the CPU's own.
        lo = self._fpu_span[0]
        whole = ctypes.c_size_t.from_address(self._tpl_addr).value
        header = self._template.size - whole            # sizeof(struct uc_context)
        if not (0 < header <= self.cr3_off and self.cr3_off + 4 <= lo <= self._template.size):
            raise RuntimeError('unexpected Unicorn context layout; unicorn version not supported')
        self._tpl_prefix = ctypes.create_string_buffer(ctypes.string_at(self._tpl_addr, lo), lo)
        ctypes.c_size_t.from_buffer(self._tpl_prefix).value = lo - header
        self._runner.set_template(native.UC_CTX_RESTORE, ctypes.addressof(self._tpl_prefix), self.cr3_off)
        self._ring0 = self._runner.ring0
        self.regs.update(cr3=cr3, cs=x86.KERNEL_CS, esp=esp, eflags=x86.EFLAGS_RESERVED)

    # ---- code maps and hooks ----------------------------------------------

    def set_code_region(self, slot, base, size, bitmap):
        """Tell the block counter where instructions start in [base, base+size):
        bit i of `bitmap` (bytes) set means one starts at base+i."""
        buf = ctypes.create_string_buffer(bytes(bitmap), max(len(bitmap), 1))
        self._code_bitmaps[slot] = buf
        r = self.k.regions[slot]
        r.base, r.size, r.bits = base, size, ctypes.addressof(buf)
        self.k.nregions = max(self.k.nregions, slot + 1)
        self.k.gen += 1                      # drop the per-block count cache

    def clear_code_region(self, slot):
        r = self.k.regions[slot]
        r.base, r.size = 0, 0
        self.k.gen += 1

    def watch_tlb_events(self, image):
        """With the modelled TLB (tlb='p3'): hook the `mov cr3`, `mov cr4` and
        `invlpg` instructions of `image` (an assembled vm.asm Image), so the
        model sees every flush.  Nothing to do with QEMU's TLB."""
        if self.tlb is None:
            return
        for kind in ('mov_cr3', 'mov_cr4', 'invlpg'):
            for addr in image.specials.get(kind, ()):
                off = addr - image.base
                self.tlb.watch(kind, addr, image.code[off:off + 16])

    def watch_sti(self, image):
        """The interrupt shadow of every `sti` of `image` (an assembled
        vm.asm Image): a one-address C hook on each marks the next
        instruction, which retires before a pending interrupt is taken
        (vm/_native.c kcpu_block_hook).  Unicorn keeps no shadow itself."""
        for addr in image.specials.get('sti', ()):
            self.hook_once(('sti', addr), lambda addr=addr: native.hook_add(
                self.uc, UC_HOOK_CODE, native.STI_HOOK, self.kptr, addr, addr))

    def count_at(self, address, kind):
        """Count executions of the instruction at `address` (a one-address C
        hook: costs nothing elsewhere)."""
        def install():
            c = ctypes.c_uint64(0)
            native.hook_add(self.uc, UC_HOOK_CODE, native.COUNT_HOOK, ctypes.addressof(c),
                            address, address)
            return c
        ctr, _ = self.hook_once(('count', address), install)
        self.point_counters[address] = ctr
        self.point_kind[address] = kind
        return ctr

    def add_range(self, name, lo, hi):
        """Count instructions retired in [lo, hi) (e.g. a spin loop)."""
        i = self.k.nranges
        if i >= native.MAX_RANGES:
            raise RuntimeError('too many instruction ranges')
        self.k.ranges[i].lo, self.k.ranges[i].hi, self.k.ranges[i].count = lo, hi, 0
        k = self.k
        k.rng_lo, k.rng_hi = (lo, hi) if i == 0 else (min(k.rng_lo, lo), max(k.rng_hi, hi))
        k.nranges = i + 1
        self.ranges[name] = i

    def range_count(self, name):
        return self.k.ranges[self.ranges[name]].count

    def hook_code(self, lo, hi, fn):
        """Call fn(cpu, address) before each instruction in [lo, hi) runs (a
        Python UC_HOOK_CODE: it costs only inside the range).  fn may change
        general registers (set_reg), not EIP.  The translation cache is
        flushed, so code translated earlier sees the hook.  Returns a handle."""
        uc = self.uc

        def install():
            def on_error(e):                    # fn raised: run() raises it again
                if uc._hook_exception is None:  # the binding's own convention
                    uc._hook_exception = e
                uc.emu_stop()
            # [fn (None: a hook of an earlier life, or removed), the hook's
            # handle, this CPU, on_error]: vm/_pyhook.c's kpy_code_hook calls
            # fn(cpu, address) from C (no ctypes callback, no Python
            # wrapper).  Kept for the CPU's lifetime (a hook may remove
            # itself while it runs).
            cell = [None, None, self, on_error]
            cell[1] = native.hook_add(uc, UC_HOOK_CODE, _PY_CODE_HOOK, id(cell), lo, hi - 1)
            self._py_hooks.append(cell)
            return cell
        cell, reused = self.hook_once(('code', lo, hi), install)
        cell[0] = fn
        if not reused:
            self.flush_code_cache()
        return cell[1]

    def unhook_code(self, handle):
        """Remove a hook_code hook (allowed from inside a hook)."""
        for key, cells in self._kept.items():
            for i, cell in enumerate(cells):
                if isinstance(cell, list) and cell[1] == handle:
                    cell[0] = None
                    del cells[i]                  # no later life takes it over
                    self._taken[key] -= 1
                    break
        native.hook_del(self.uc, handle)

    def flush_code_cache(self):
        """Drop all translated code (a hook must see code translated before
        it).  The TLB is not touched.  Nothing to do when this instance has
        run no guest code since its last flush (or since it was created):
        Unicorn translates only inside emu_start, which only run() calls
        (the boot's hooks are installed before the first run)."""
        runs = self._runner.runs
        if runs != self._flushed_at:
            self.uc.ctl_flush_tb()
            self._flushed_at = runs

    def invalidate_code(self, pa, size):
        """Drop the translations of guest code with a byte in physical
        [pa, pa + size): a frame got new contents behind this instance's
        back (another CPU's store, DMA, a host write), and instruction
        fetch is coherent on x86.  QEMU's own tb_invalidate_phys_range
        (what a store of this CPU to a code page runs): exact, costs only
        where code was translated.  uc_ctl_remove_cache cannot do it: it
        takes a virtual address and fills the TLB (walks, A bits) to
        translate it.  Neither the TLB nor other frames' code is touched;
        without the symbol (another Unicorn build) the whole cache goes."""
        if _tb_invalidate_phys_range is None:
            self.flush_code_cache()
            return
        _tb_invalidate_phys_range(self._uch, pa, pa + size)

    @property
    def halted(self):
        """Stopped in `hlt` with nothing pending (cleared by an interrupt
        raised on this CPU, or by the driver)."""
        return bool(self._halted[self.index])

    @halted.setter
    def halted(self, value):
        self._halted[self.index] = 1 if value else 0

    # ---- time -----------------------------------------------------------

    @property
    def instructions(self):
        return self.k.executed

    # ---- register access ------------------------------------------------

    def read_state(self):
        return self._runner.read_state()             # self.regs, read now

    def enter(self, eip, esp, eflags=x86.EFLAGS_RESERVED | x86.EFLAGS_IF, **gprs):
        """Start ring-0 code at `eip` with `esp` (and any GPRs given).  If the
        CPU is in ring 3, come back to ring 0 through the template first."""
        regs = self.regs
        if regs.get('cs', 0) & 3:
            self._to_ring0()
        g = gprs.get
        self._enter(g('eax', 0), g('ebx', 0), g('ecx', 0), g('edx', 0), g('esi', 0), g('edi', 0),
                    g('ebp', 0), esp, eip, eflags)
        if gprs:
            regs.update(gprs)
        regs['esp'], regs['eip'], regs['eflags'] = esp, eip, eflags

    def enter_call(self, eip, esp, eflags, eax, edx, ecx):
        """enter() with EAX, EDX, ECX given and the other GPRs 0 (a call
        with regparm(3) arguments), without the keyword dictionary."""
        regs = self.regs
        if regs.get('cs', 0) & 3:
            self._to_ring0()
        self._enter(eax, 0, ecx, edx, 0, 0, 0, esp, eip, eflags)
        regs['eax'], regs['edx'], regs['ecx'] = eax, edx, ecx
        regs['esp'], regs['eip'], regs['eflags'] = esp, eip, eflags

    def enter_frame(self, eip, esp, eflags, eax, edx, ecx, pa, *words):
        """Write `words` (32-bit, each mod 2**32) at guest physical `pa` (a
        host store, as Machine.write: the stack a call starts with), then
        enter_call(eip, esp, eflags, eax, edx, ecx): one C call (vm/_run.c
        enter_frame), ring 3 -> 0 through the template and the regs
        bookkeeping included.  (Each CPU's instance attribute is the C
        method itself: this is its definition.)"""
        self._runner.enter_frame(eip, esp, eflags, eax, edx, ecx, pa, *words)

    def resume(self, state):
        """Continue a ring-0 context saved by read_state (GPRs, EIP, EFLAGS)."""
        if self.regs.get('cs', 0) & 3:
            self._to_ring0()
        self._enter(*[state[r] for r in ENTRY_REGS])
        self.regs.update({r: state[r] for r in ENTRY_REGS})

    def set_reg(self, name, value):
        self.uc.reg_write(_REG_IDS[name], value)
        self.regs[name] = value

    def get_reg(self, name):
        return self._runner.reg(_REG_IDS[name])

    def _to_ring0(self):
        """Ring 3 -> ring 0 through the template, as a trap would: CR3 and
        the x87/SSE registers stay what they are (only the template's prefix
        before the FPU span is restored, with the current CR3 in it)."""
        status = self._ring0(self.regs['cr3'])        # vm/_run.c Runner.ring0
        if status != 0:
            raise UcError(status)
        self.regs['cs'] = x86.KERNEL_CS

    # ---- running ----------------------------------------------------------

    def run(self, budget, then=None):
        """Run guest code from the current EIP for up to `budget` instructions
        (stopping at a block boundary) and return the Trap that stopped it.
        then(trap): asked at the stop; None, or the next entry (budget,
        eip, esp, eflags, eax, edx, ecx, pa, *words: enter_frame's) and its
        run, whose Trap is returned (vm/_run.c Runner.run)."""
        # vm/_run.c: counters['runs'] += 1 (+ the boundaries run-ahead
        # crossed: vm/machine.py), arm the limit, emu_start, read the
        # registers into self.regs, settle a block a trap/hlt/error ended
        # early (the instructions from EIP on did not retire), and decode
        # the stop (Runner decode: the rules are written out there): a
        # Trap, None if a Python hook raised.
        trap = self._run(budget, then)
        regs = self.regs
        if trap is None:                             # from a Python hook (tracing, faults)
            exc, self.uc._hook_exception = self.uc._hook_exception, None
            raise exc
        if trap.kind is _PF:
            # QEMU's CR2 is in the trap; tlb='p3': a walk of the model
            # (vm/_tlb.c) that faulted stopped the emulation with an error
            # status and the kcpu's trap set to #PF: the same #PF, with the
            # model's CR2 and error code
            if self.tlb is not None:
                cr2, hw = self.tlb.fault()
                trap.cr2 = cr2
            else:
                cr2, hw = trap.cr2, None
            trap.error = self.pf_error_code(cr2, regs, hw)
        return trap

    # ---- the page-fault error code ------------------------------------------

    def pf_error_code(self, cr2, regs, model=None):
        """The #PF error code.
        tlb='p3': `model` is the error code of the model's walk (vm/_tlb.c),
        exact for P, U and W of the access that faulted; the one correction
        is the read-modify-write rule below.
        tlb='qemu': Unicorn does not hand it to the hook, but QEMU leaves
        the one it computed in the CPU state, which the INTR hook saved
        (k.ctx, for the #1883 fix); U is CPL.  P is QEMU's (set exactly
        when the PDE and PTE were present: no walk for a not-present page).
        W:
          - a present page the access may reach (CPL 0, or a user page)
            can only fault for a write: non-PAE i386 has no NX, so the one
            protection left is R/W (WP for ring 0);
          - otherwise QEMU's W bit, which is exact for every store (it is
            the access that faulted), or, for a not-present page, a
            read-modify-write of a memory operand on CR2's page: TCG does
            the load first and reports a read, the lab counts the access as
            the write it is (as it always did), so the first touch of a
            fresh page by `inc [m]` or `lock cmpxchg` maps a writable page.
        """
        if model is not None:
            err = model
            if not err & (x86.PF_P | x86.PF_W) and self._faulting_insn_is_rmw(cr2, regs):
                err |= x86.PF_W
            return err
        hw = self._hw_error.value
        user = regs['cs'] & 3
        err = x86.PF_U if user else 0
        if hw & x86.PF_P:
            # QEMU sets P exactly when the PDE and the PTE were present
            # (handle_mmu_fault: do_fault_protect, do_fault_rsvd)
            err |= x86.PF_P
            if not user:
                return err | x86.PF_W
            pde, pte, _ = x86.walk(self.ram, regs['cr3'], cr2)
            if pde & pte & x86.PTE_U or hw & x86.PF_W:
                err |= x86.PF_W
            return err
        if hw & x86.PF_W or self._faulting_insn_is_rmw(cr2, regs):
            err |= x86.PF_W
        return err

    def _decode(self, eip, cr3):
        """The instruction at eip (capstone, with details), cached by its
        address and bytes; None if it cannot be fetched or decoded."""
        code = self.read_virt(cr3, eip, 16)
        if not code:
            return None
        key = (eip, code)
        insn = self._decoded.get(key)
        if insn is None and key not in self._decoded:
            insn = next(self._md.disasm(code, eip), None)
            if len(self._decoded) >= 4096:
                self._decoded.clear()
            self._decoded[key] = insn
        return insn

    def _faulting_insn_is_rmw(self, cr2, regs):
        """Is the faulting instruction a read-modify-write of a memory
        operand on CR2's page?  Its destination (operand 0; for xchg either
        operand) is memory and the mnemonic is one of _RMW (capstone's
        operand access flags are not trusted: 5.0.x calls the destination
        of cmpxchg, cmpxchg8b and rol a read)."""
        insn = self._decode(regs['eip'], regs['cr3'])
        if insn is None or insn.mnemonic.split()[-1] not in _RMW:
            return False
        ops = insn.operands
        cands = ops if insn.mnemonic.split()[-1] == 'xchg' else ops[:1]
        page = cr2 >> 12
        for op in cands:
            if op.type != cx.X86_OP_MEM:
                continue
            ea = self._effective_address(insn, op, regs)
            if ea is not None and (ea >> 12 == page or ((ea + op.size - 1) & 0xFFFFFFFF) >> 12 == page):
                return True
        return False

    def _effective_address(self, insn, op, regs):
        m = op.mem
        ea = m.disp
        if m.base:
            name = insn.reg_name(m.base)
            if name not in regs:
                return None
            ea += regs[name]
        if m.index:
            name = insn.reg_name(m.index)
            if name not in regs:
                return None
            ea += regs[name] * m.scale
        return ea & 0xFFFFFFFF

    def read_virt(self, cr3, va, size):
        """Read guest virtual memory through the page tables (no A/D side
        effects); None where unmapped.  For decoding and tracing only."""
        out = bytearray()
        while size > 0:
            pa = x86.translate(self.ram, cr3, va)
            if pa is None or pa >= len(self.ram):
                return bytes(out) if out else None
            n = min(size, x86.PAGE_SIZE - (va & 0xFFF))
            out += self.ram[pa:pa + n]
            va, size = va + n, size - n
        return bytes(out)
