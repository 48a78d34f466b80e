"""Bounded memory hooks in our Unicorn build (tools/unicorn/patches/
0002-bounded-mem-hooks.patch): a UC_HOOK_MEM_READ/WRITE/READ_AFTER hook
limited to a physical range sends only the accesses to the pages it covers
through Unicorn's slow path (a flag in their TLB entries), and still
reports exactly what it reported before.

The oracle is the same guest run with one UNBOUNDED hook (which, as in
stock Unicorn, sends every access of code translated while it exists
through the slow path and so sees every access): the bounded hooks must
report exactly its events whose physical start address HOOK_BOUND_CHECK
puts in their range, in the same order.  The run covers code translated
before the hooks were added (no code flush), TLB entries filled before
them (one made stale by a PTE change without invlpg, so a flush would
show), ring 0 and ring 3 (two mmu_idx), entries evicted to the victim TLB
and swapped back, accesses crossing a page, and deleting the hooks.  A
build without the patch (checked: 0001 alone) fails it: code translated
before a bounded hook never calls it (its loads and stores keep the fast
path).
"""
import ctypes

from unicorn.unicorn_const import (UC_HOOK_MEM_READ, UC_HOOK_MEM_READ_AFTER, UC_HOOK_MEM_WRITE,
                                   UC_MEM_READ, UC_MEM_READ_AFTER, UC_MEM_WRITE)

from vm import native, selftest as st
from vm import x86

# uc_cb_hookmem_t (the Python binding does not take UC_HOOK_MEM_READ_AFTER)
HOOKMEM = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_int,
                           ctypes.c_int64, ctypes.c_void_p)

SWEEP_S = r'''
// void hk_sweep(ESI va, ECX n): at each of n dwords from va: loads and
// stores of 1, 2 and 4 bytes, aligned and not (one crossing into the next
// dword, and at a page's last dword into the next page), a read-modify-write
// and a locked xchg.  hk_sweep_user is the same in ring 3.
hk_sweep:
        call hk_sweep_body
        hlt
hk_sweep_user:
        call hk_sweep_body
        int 0x80
hk_sweep_body:
1:      mov eax, dword ptr [esi]
        mov dword ptr [esi], eax
        mov bl, byte ptr [esi + 1]
        mov byte ptr [esi + 3], bl
        mov bx, word ptr [esi + 1]
        mov word ptr [esi + 2], bx
        mov edx, dword ptr [esi + 2]
        mov dword ptr [esi + 2], edx
        add dword ptr [esi], 3
        xchg dword ptr [esi], eax
        add esi, 4
        dec ecx
        jnz 1b
        ret
'''

F = st.FAR                                  # the frames the data pages map
V0, V1, V2, V3 = (st.DATA + i * 0x1000 for i in range(4))
FRAMES = {V0: F + 0x2000, V1: F, V2: F + 0x1000, V3: F + 0x3000}
G = F + 0x4000                              # V1's frame after the stale-entry remap
ALIASES = (V1 + 0x100000, V1 + 0x200000)    # same TLB index as V1 (256/512 entries)
ALIAS_FRAME = F + 0x5000
# (types, first, last): physical, inclusive, as uc_hook_add takes them
RANGES = (
    (UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE | UC_HOOK_MEM_READ_AFTER, F + 0x100, F + 0x11f),
    (UC_HOOK_MEM_WRITE, F + 0x1ffc, F + 0x2003),          # ends of two frames
    (UC_HOOK_MEM_READ_AFTER, F + 0x2800, F + 0x2803),
    (UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, F, F + 3),     # a frame's first bytes
)
KIND = {UC_MEM_READ: UC_HOOK_MEM_READ, UC_MEM_WRITE: UC_HOOK_MEM_WRITE,
        UC_MEM_READ_AFTER: UC_HOOK_MEM_READ_AFTER}
PTE_UW = x86.PTE_P | x86.PTE_W | x86.PTE_U


def _reported(event):
    """Whether a bounded hook of RANGES reports `event` (HOOK_BOUND_CHECK on
    the access's physical start address)."""
    access, pa = event[1], event[2]
    return any(KIND.get(access, 0) & types and lo <= pa <= hi for types, lo, hi in RANGES)


def _run(bounded):
    """The guest run; returns its hook events [(step, access, pa, size, value)]."""
    rig = st.Rig(cpus=1, source=st.SELFTEST_S + SWEEP_S)
    cpu = rig.cpus[0]
    for va, pa in FRAMES.items():
        rig.set_pte(va, pa | PTE_UW)
    for va in ALIASES:
        rig.set_pte(va, ALIAS_FRAME | PTE_UW)
    events, step = [], ['']

    @HOOKMEM
    def hook(uc, access, address, size, value, data):
        events.append((step[0], access, address, size, value))
    fn = ctypes.cast(hook, ctypes.c_void_p).value

    def run(name, ring3=False, **regs):
        step[0] = name
        t = rig.to_user(0, 'hk_sweep_user', **regs) if ring3 else rig.call(0, 'hk_sweep', **regs)
        assert t.kind == ('int' if ring3 else 'hlt'), t

    sweep = dict(esi=V0, ecx=3 * 1024)          # V0..V2, the last access crossing into V3
    # before any hook: translate the sweep, fill the TLB (rings 0 and 3)
    run('fill', **sweep)
    run('fill3', ring3=True, **sweep)
    assert events == []
    rig.set_pte(V1, G | PTE_UW)                 # no invlpg: the entries for V1 stay F
    if bounded:
        handles = [native.hook_add(cpu.uc, t, fn, 0, lo, hi) for t, lo, hi in RANGES]
    else:
        handles = [native.hook_add(cpu.uc, UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE
                                   | UC_HOOK_MEM_READ_AFTER, fn, 0)]
        cpu.uc.ctl_flush_tb()                   # what the lab does: code must see it
    run('old code', **sweep)
    run('old code ring 3', ring3=True, **sweep)
    for i, va in enumerate(ALIASES):            # evict V1's entry to the victim TLB
        run(f'alias {i}', esi=va, ecx=1024)
    run('victim', esi=V1, ecx=1024)
    step[0] = 'new code'                        # translated now (rep movsd)
    rig.call(0, 'copy_dwords', esi=V1 + 0xf0, edi=V2 + 0xff0, ecx=16)
    for h in handles:
        native.hook_del(cpu.uc, h)
    run('deleted', **sweep)
    return events


def test_bounded_hooks_report_exactly_what_an_unbounded_hook_sees_in_range():
    everything = _run(bounded=False)
    bounded = _run(bounded=True)
    expected = [e for e in everything if _reported(e)]
    steps = {e[0] for e in expected}
    # the run exercises what it says: each phase reports something
    assert steps == {'old code', 'old code ring 3', 'victim', 'new code'}, steps
    # the stale entry: V1's events are at F although its PTE now says G
    assert any(F + 0x100 <= e[2] <= F + 0x11f for e in expected if e[0] == 'old code')
    assert any(e[1] == UC_MEM_READ_AFTER for e in expected)
    assert not [e for e in everything if e[0] == 'deleted']
    assert bounded == expected
