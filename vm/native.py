"""ctypes view of vm/_native.c: the per-CPU `kcpu` struct and the hooks.

KCpu mirrors `kcpu` in vm/_native.c field by field; tests/test_native.py
checks the layout against the C side's behaviour.  The hooks are registered
with Unicorn's C API directly (uc_hook_add with a C function pointer), so no
Python runs when they fire.
"""
import ctypes

from unicorn.unicorn_py3.unicorn import uclib, uc_hook_h

from . import _native, _run

_lib = ctypes.CDLL(_native.__file__)

MAX_REGIONS = 8
MAX_RANGES = 32

STOP_NONE, STOP_LIMIT, STOP_IRQ, STOP_TRAP = 0, 1, 2, 3


class CodeRegion(ctypes.Structure):
    _fields_ = [('base', ctypes.c_uint32), ('size', ctypes.c_uint32), ('bits', ctypes.c_void_p)]


class InsnRange(ctypes.Structure):
    _fields_ = [('lo', ctypes.c_uint32), ('hi', ctypes.c_uint32), ('count', ctypes.c_uint64)]


CACHE = 1024


class CountEntry(ctypes.Structure):
    _fields_ = [('addr', ctypes.c_uint32), ('size', ctypes.c_uint32),
                ('n', ctypes.c_uint32), ('gen', ctypes.c_uint32)]


class KCpu(ctypes.Structure):
    _fields_ = [
        ('executed', ctypes.c_uint64),
        ('limit', ctypes.c_uint64),
        ('trap', ctypes.c_int32),
        ('stop_reason', ctypes.c_int32),
        ('blk_addr', ctypes.c_uint32),
        ('blk_size', ctypes.c_uint32),
        ('blk_count', ctypes.c_uint32),
        ('old_exc_off', ctypes.c_int32),
        ('irq_pending', ctypes.c_int32),
        ('nregions', ctypes.c_uint32),
        ('unknown_blocks', ctypes.c_uint64),
        ('emu_stop', ctypes.c_void_p),
        ('ctx_save', ctypes.c_void_p),
        ('ctx_restore', ctypes.c_void_p),
        ('reg_read', ctypes.c_void_p),
        ('ctx', ctypes.c_void_p),
        ('regions', CodeRegion * MAX_REGIONS),
        ('nranges', ctypes.c_uint32),
        ('pad', ctypes.c_uint32),
        ('ranges', InsnRange * MAX_RANGES),
        ('gen', ctypes.c_uint32),
        ('pad2', ctypes.c_uint32),
        ('cache', CountEntry * CACHE),
        ('sti_shadow', ctypes.c_uint32),
        ('pad3', ctypes.c_uint32),
        ('sti_shadows', ctypes.c_uint64),
        ('rng_lo', ctypes.c_uint32),
        ('rng_hi', ctypes.c_uint32),
        ('ahead_q', ctypes.c_uint64),
        ('ahead_stop', ctypes.c_uint64),
        ('ahead_cap', ctypes.c_uint64),
        ('ahead_end', ctypes.c_uint64),
        ('extra', ctypes.c_void_p),
        ('crossed', ctypes.c_uint64),
    ]


def _fn(name):
    return ctypes.cast(getattr(_lib, name), ctypes.c_void_p).value


BLOCK_HOOK = _fn('kcpu_block_hook')
INTR_HOOK = _fn('kcpu_intr_hook')
COUNT_HOOK = _fn('kcpu_count_hook')
STI_HOOK = _fn('kcpu_sti_hook')
_settle = _lib.kcpu_settle
_settle.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
_settle.restype = None


def _unicorn_patches():
    """The patches of kmaplab's Unicorn build this process loaded
    (tools/unicorn/build.py; its uc_kmaplab_patches()), '' for a stock
    library.  The patches change the host's cost, never what the guest
    sees, so the lab runs on either; `kmaplab bench` says which."""
    fn = getattr(uclib, 'uc_kmaplab_patches', None)
    if fn is None:
        return ''
    fn.restype = ctypes.c_char_p
    fn.argtypes = []
    return fn().decode()


UNICORN_PATCHES = _unicorn_patches()

UC_EMU_STOP = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p).value
UC_CTX_SAVE = ctypes.cast(uclib.uc_context_save, ctypes.c_void_p).value
UC_CTX_RESTORE = ctypes.cast(uclib.uc_context_restore, ctypes.c_void_p).value
UC_REG_READ = ctypes.cast(uclib.uc_reg_read, ctypes.c_void_p).value


UC_EMU_START = ctypes.cast(uclib.uc_emu_start, ctypes.c_void_p).value
UC_REG_READ_BATCH = ctypes.cast(uclib.uc_reg_read_batch, ctypes.c_void_p).value
UC_REG_WRITE_BATCH = ctypes.cast(uclib.uc_reg_write_batch, ctypes.c_void_p).value
UC_STRERROR = ctypes.cast(uclib.uc_strerror, ctypes.c_void_p).value
KCPU_SETTLE = _fn('kcpu_settle')


def _check_head():
    """vm/_run.c sees the first fields of kcpu through its own kcpu_head:
    the offsets must be KCpu's."""
    for name, off in _run.head_offsets().items():
        if getattr(KCpu, name).offset != off:
            raise RuntimeError(f'vm/_run.c kcpu_head.{name} at {off}, vm/_native.c has it at '
                               f'{getattr(KCpu, name).offset}: rebuild (make setup)')


_check_head()


def runner(uc, kcpu_ptr, names, state_ids, entry_ids, narrow=()):
    """A vm/_run.c Runner for one CPU: run(eip, budget) -> (status,
    stop_reason, trap, regs dict), enter(*entry registers), read_state().
    `narrow`: names of state registers Unicorn reads as 16 bits."""
    names = tuple(names)
    return _run.Runner(ctypes.cast(uc._uch, ctypes.c_void_p).value, kcpu_ptr, UC_EMU_START, UC_REG_READ_BATCH, UC_REG_WRITE_BATCH,
                       KCPU_SETTLE, names, list(state_ids), list(entry_ids),
                       [names.index(n) for n in narrow], names.index('eip'))


def settle(kcpu_ptr, eip):
    """Take back the current block's instructions from `eip` on."""
    _settle(kcpu_ptr, eip)


def hook_add(uc, htype, fn_addr, user_data, begin=1, end=0):
    """Register a C hook `fn_addr` with `user_data` (an address) on `uc`."""
    handle = uc_hook_h()
    status = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), htype,
                               ctypes.c_void_p(fn_addr), ctypes.c_void_p(user_data),
                               ctypes.c_uint64(begin), ctypes.c_uint64(end))
    if status != 0:
        raise RuntimeError(f'uc_hook_add failed: error {status}')
    return handle.value


def hook_del(uc, handle):
    uclib.uc_hook_del(uc._uch, handle)


_hook_nosync = getattr(uclib, 'uc_kmaplab_hook_nosync', None)
if _hook_nosync is not None:
    _hook_nosync.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    _hook_nosync.restype = ctypes.c_int


def hook_nosync(uc, handle):
    """Declare that data memory hook `handle` reads no CPU state (no
    register, no emu_stop): our Unicorn build (patch 0005-hook-nosync) then
    skips the guest-PC sync it makes before such a hook.  A no-op on a
    build without it, where the hook costs the sync and sees the same."""
    if _hook_nosync is not None and _hook_nosync(uc._uch, handle) != 0:
        raise RuntimeError('uc_kmaplab_hook_nosync: not a data memory hook')


class RegFile:
    """Fast batch access to a fixed list of 32-bit registers of one Unicorn
    instance: one ctypes call per read or write of the whole list.  Segment
    registers are read as 16 bits by Unicorn: their slots are cleared first."""

    def __init__(self, uc, regids, narrow=()):
        self._uch = uc._uch
        self.n = len(regids)
        self._ids = (ctypes.c_int32 * self.n)(*regids)
        self._vals = (ctypes.c_uint32 * self.n)()
        self._ptrs = (ctypes.c_void_p * self.n)(
            *[ctypes.addressof(self._vals) + 4 * i for i in range(self.n)])
        self._narrow = [i for i, r in enumerate(regids) if r in narrow]
        self._read_batch = uclib.uc_reg_read_batch
        self._write_batch = uclib.uc_reg_write_batch

    def read(self):
        vals = self._vals
        for i in self._narrow:
            vals[i] = 0
        status = self._read_batch(self._uch, self._ids, self._ptrs, self.n)
        if status != 0:
            raise RuntimeError(f'uc_reg_read_batch failed: error {status}')
        return list(vals)

    def write(self, values):
        vals = self._vals
        for i, v in enumerate(values):
            vals[i] = v & 0xFFFFFFFF
        status = self._write_batch(self._uch, self._ids, self._ptrs, self.n)
        if status != 0:
            raise RuntimeError(f'uc_reg_write_batch failed: error {status}')
