"""kmaplab's Unicorn build (tools/unicorn): the lab runs on it, and its
patches keep what the guest sees.

0001-notdirty lets a guest store skip notdirty_write once its page holds
no translated code; translating code on the page must make every entry
that writes it slow again, whatever virtual address the entry is for
(upstream QEMU's tlb_reset_dirty_range_all), or a store through another
mapping (a kmap of a user code page) would leave a stale translation.
The raw-Unicorn tests below fail on a build that cleans entries without
re-protecting them; on stock Unicorn they pass (it never cleans one)."""
import importlib.util
import os
import struct

import pytest
from unicorn import UC_ARCH_X86, UC_HOOK_BLOCK, UC_HOOK_MEM_WRITE, UC_MODE_32, UC_PROT_ALL, Uc
from unicorn.x86_const import (UC_X86_REG_CR0, UC_X86_REG_EAX, UC_X86_REG_CR3, UC_X86_REG_EBX,
                               UC_X86_REG_ECX, UC_X86_REG_EIP, UC_X86_REG_ESP)

from vm import native

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build_module():
    spec = importlib.util.spec_from_file_location(
        'unicorn_build', os.path.join(ROOT, 'tools', 'unicorn', 'build.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_lab_runs_on_our_unicorn_build():
    """`make setup` installed the patched library this checkout describes."""
    assert native.UNICORN_PATCHES, 'stock unicorn loaded: make setup installs tools/unicorn/build.py'
    assert native.UNICORN_PATCHES == _build_module().expected_patches()


def test_cache_key_covers_every_patch(tmp_path, monkeypatch):
    b = _build_module()
    key = b.cache_key()
    extra = tmp_path / 'patches'
    extra.mkdir()
    for p in b.patches():
        (extra / os.path.basename(p)).write_bytes(open(p, 'rb').read())
    monkeypatch.setattr(b, 'HERE', str(tmp_path))
    assert b.cache_key() == key
    (extra / '9999-more.patch').write_text('--- a/x\n+++ b/x\n')
    assert b.cache_key() != key


CODE, PAGE_P, ALIAS, STACK = 0x1000, 0x5000, 0x400000, 0x9000
PGDIR, PT0, PT1 = 0x10000, 0x11000, 0x12000


def _paged_machine(program):
    """A 32-bit CPU with paging on: the first 4 MiB identity-mapped, and
    ALIAS a second mapping of physical page PAGE_P."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x20000, UC_PROT_ALL)
    uc.mem_write(PGDIR, struct.pack('<II', PT0 | 7, PT1 | 7))
    uc.mem_write(PT0, b''.join(struct.pack('<I', (i << 12) | 7) for i in range(0x20)))
    uc.mem_write(PT1, struct.pack('<I', PAGE_P | 7))
    uc.reg_write(UC_X86_REG_CR3, PGDIR)
    uc.reg_write(UC_X86_REG_CR0, 0x80000011)
    uc.reg_write(UC_X86_REG_ESP, STACK)
    uc.mem_write(CODE, program)
    return uc


def _routine_writer(via, rounds):
    """x86: a data store to `via` + 0x800 first (the entry for `via` gets
    cleaned: no code on the page yet), then `rounds` times: write
    `mov eax, i; ret` at `via`, call it at PAGE_P (identity), ebx += eax."""
    code = bytearray()
    code += b'\xc7\x05' + struct.pack('<II', via + 0x800, 0x1234)     # mov dword [via+0x800], 0x1234
    code += b'\x31\xdb'                                               # xor ebx, ebx
    for i in range(1, rounds + 1):
        code += b'\xc6\x05' + struct.pack('<I', via) + b'\xb8'       # mov byte [via], 0xb8
        code += b'\xc7\x05' + struct.pack('<II', via + 1, i)         # mov dword [via+1], i
        code += b'\xc6\x05' + struct.pack('<I', via + 5) + b'\xc3'   # mov byte [via+5], 0xc3
        code += b'\xb9' + struct.pack('<I', PAGE_P)                  # mov ecx, PAGE_P
        code += b'\xff\xd1'                                          # call ecx
        code += b'\x01\xc3'                                          # add ebx, eax
    code += b'\xf4'                                                  # hlt
    return bytes(code)


@pytest.mark.parametrize('via', [PAGE_P, ALIAS], ids=['same-mapping', 'other-mapping'])
def test_code_rewritten_after_a_data_store_runs_anew(via):
    """Every round's new routine runs, not the first one translated: the
    stores that rewrite it go through an entry that was cleaned before the
    page held code (through the same mapping or another)."""
    rounds = 6
    program = _routine_writer(via, rounds)
    uc = _paged_machine(program)
    uc.emu_start(CODE, CODE + len(program) - 1)
    assert uc.reg_read(UC_X86_REG_EBX) == sum(range(1, rounds + 1))


FRAME_A, FRAME_B, VPAGE = 0x6000, 0x7000, 0x8000


def test_a_store_after_eviction_walks_again_as_stock_unicorn_did():
    """The TLB decides hits, not the dirty tracking: stock Unicorn's stores
    never hit an executable entry in the victim TLB (its TLB_NOTDIRTY was
    never cleared, and the victim lookup compares the whole word), so a
    store after the entry was evicted walks the page tables again and
    sees a changed PTE.  0001 cleans such entries; the lookup keeps the
    old rule, or counters change (a walk sets A/D bits; a shipped
    exploration schedule replayed with 3 more swap_full).  Here: a store
    through VPAGE (-> FRAME_A), a store 1 MiB above (the same slot of the
    256-entry TLB: VPAGE's entry goes to the victim TLB), the PTE moved to
    FRAME_B without invlpg, a store through VPAGE again: it lands in
    FRAME_B."""
    conflict = VPAGE + (256 << 12)
    code = (b'\xc7\x05' + struct.pack('<II', VPAGE, 0x11111111)       # mov [VPAGE], 0x11111111
            + b'\xc7\x05' + struct.pack('<II', conflict, 0x33333333)  # mov [VPAGE+1M], ...
            + b'\xf4')                                                 # hlt
    uc = _paged_machine(code)
    uc.mem_map(0x100000, 0x200000, UC_PROT_ALL)                         # PT0 covers 4 MiB
    uc.mem_write(PT0 + (VPAGE >> 12) * 4, struct.pack('<I', FRAME_A | 7))
    uc.mem_write(PT0 + (conflict >> 12) * 4, struct.pack('<I', conflict | 7))
    uc.emu_start(CODE, CODE + len(code) - 1)
    uc.mem_write(PT0 + (VPAGE >> 12) * 4, struct.pack('<I', FRAME_B | 7))   # no invlpg
    again = b'\xc7\x05' + struct.pack('<II', VPAGE + 4, 0x22222222) + b'\xf4'
    uc.mem_write(CODE + 0x100, again)
    uc.emu_start(CODE + 0x100, CODE + 0x100 + len(again) - 1)
    assert struct.unpack('<I', uc.mem_read(FRAME_B + 4, 4))[0] == 0x22222222
    assert struct.unpack('<I', uc.mem_read(FRAME_A + 4, 4))[0] == 0


def _spin(rounds):
    """mov ecx, rounds; L: pause; dec ecx; jnz L"""
    return b'\xb9' + struct.pack('<I', rounds) + b'\xf3\x90' + b'\x49' + b'\x75\xfb'


@pytest.mark.parametrize('stop_at', [None, 3, 4], ids=['whole', 'stop-before-dec', 'stop-before-pause'])
def test_pause_still_ends_its_block(stop_at):
    """0003-pause: `pause` no longer leaves the CPU loop but still ends its
    block, so a spin enters the same blocks (the block hook counts the
    same instructions) and a stop from the block hook lands at the same
    instruction, with the same registers, as on stock Unicorn (where this
    passes too)."""
    rounds = 5
    code = _spin(rounds)
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x1000, UC_PROT_ALL)
    uc.mem_write(0, code)
    blocks = []

    def block(uc, addr, size, _):
        if len(blocks) == stop_at:
            uc.emu_stop()
            return
        blocks.append((addr, size))
    uc.hook_add(UC_HOOK_BLOCK, block)
    uc.emu_start(0, len(code))
    expect = [(0, 7), (7, 3)] + [(5, 2), (7, 3)] * (rounds - 1)
    if stop_at is None:
        assert blocks == expect
        assert uc.reg_read(UC_X86_REG_ECX) == 0 and uc.reg_read(UC_X86_REG_EIP) == len(code)
    else:
        assert blocks == expect[:stop_at]
        assert uc.reg_read(UC_X86_REG_EIP) == expect[stop_at][0]
        assert uc.reg_read(UC_X86_REG_ECX) == rounds - expect[:stop_at].count((7, 3))


def _identity_16m():
    """A 32-bit CPU with paging on and the first 16 MiB identity-mapped
    (page tables at 0x11000-0x14fff), nothing run yet."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 16 << 20, UC_PROT_ALL)
    for t in range(4):
        uc.mem_write(PGDIR + 4 * t, struct.pack('<I', (PT0 + (t << 12)) | 7))
        uc.mem_write(PT0 + (t << 12), b''.join(struct.pack('<I', (((t << 10) + i) << 12) | 7)
                                               for i in range(1024)))
    uc.reg_write(UC_X86_REG_CR3, PGDIR)
    uc.reg_write(UC_X86_REG_CR0, 0x80000011)
    uc.reg_write(UC_X86_REG_ESP, STACK)
    return uc


def _run_at(uc, where, code):
    uc.mem_write(where, code)
    uc.emu_start(where, where + len(code) - 1)


def _load(addr):
    return b'\xa1' + struct.pack('<I', addr)          # mov eax, [addr]


RELOAD_CR3 = b'\x0f\x20\xd8\x0f\x22\xd8'               # mov eax, cr3; mov cr3, eax


@pytest.mark.parametrize('pause', [0, 0.15], ids=['at-once', 'after-150ms'])
def test_the_soft_tlb_keeps_its_size_whatever_the_history_and_the_clock(pause):
    """0004-tlb-fixed-size: QEMU doubles a TLB that a flush finds more than
    70% used and shrinks it only once 100 ms of the host's wall clock have
    passed, so the same guest accesses evicted different entries by the
    host's speed and the instance's past.  Here a run fills 240 of the 256
    entries and reloads CR3 (stock grows to 512); after `pause` seconds
    another reload (stock: still 512 at once, 64 after 150 ms), a load
    through VPAGE (-> FRAME_A), nine loads at 1 MiB steps above it (one
    slot of a 256-entry TLB: VPAGE's entry goes to the 8-entry victim TLB
    and out of it), the PTE moved to FRAME_B without invlpg, and a load
    through VPAGE again.  With 256 entries always it walks the page tables
    and reads FRAME_B; stock reads the stale FRAME_A at once (its 512-entry
    TLB spreads the nine over two slots and the victim TLB keeps VPAGE)
    and FRAME_B after the pause."""
    import time
    uc = _identity_16m()
    uc.mem_write(FRAME_A, b'AAAA')
    uc.mem_write(FRAME_B, b'BBBB')
    uc.mem_write(PT0 + (VPAGE >> 12) * 4, struct.pack('<I', FRAME_A | 7))
    _run_at(uc, CODE, b''.join(_load((0x200 + i) << 12) for i in range(240)) + RELOAD_CR3 + b'\xf4')
    time.sleep(pause)
    probe = RELOAD_CR3 + _load(VPAGE) + b''.join(_load(VPAGE + (k << 20)) for k in range(1, 10))
    _run_at(uc, CODE, probe + b'\xf4')
    uc.mem_write(PT0 + (VPAGE >> 12) * 4, struct.pack('<I', FRAME_B | 7))   # no invlpg
    _run_at(uc, CODE + 0x800, _load(VPAGE) + b'\xf4')
    assert struct.pack('<I', uc.reg_read(UC_X86_REG_EAX)) == b'BBBB'


def _three_stores():
    """mov [0x2000], 1; mov [0x2004], 2; mov [0x2008], 3; hlt: one block."""
    return b''.join(b'\xc7\x05' + struct.pack('<II', 0x2000 + 4 * i, i + 1) for i in range(3)) + b'\xf4'


@pytest.mark.parametrize('marks', [(False,), (True,), (True, False)],
                         ids=['sync', 'nosync', 'nosync-then-sync'])
def test_a_nosync_hook_sees_the_same_accesses_without_the_pc_sync(marks):
    """0005-hook-nosync: a data memory hook marked with
    native.hook_nosync is called for exactly the same accesses, values and
    order, but Unicorn no longer syncs the guest PC before it, so EIP read
    inside it is the block's, not the store's (that is the saving: the
    sync searches the translated code).  A hook without the mark on the
    same access still gets the exact EIP.  Fails on a build without the
    patch (the nosync hook sees the exact EIP)."""
    code = _three_stores()
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x4000, UC_PROT_ALL)
    uc.mem_write(CODE, code)
    seen = {i: [] for i in range(len(marks))}

    def hook(uc, access, addr, size, value, i):
        seen[i].append((addr, size, value, uc.reg_read(UC_X86_REG_EIP)))
    for i, nosync in enumerate(marks):
        h = uc.hook_add(UC_HOOK_MEM_WRITE, hook, i, 0x2000, 0x2fff)
        if nosync:
            native.hook_nosync(uc, h)
    uc.emu_start(CODE, CODE + len(code) - 1)
    stores = [(0x2000 + 4 * i, 4, i + 1) for i in range(3)]
    exact = [CODE + 10 * i for i in range(3)]
    for i, nosync in enumerate(marks):
        assert [e[:3] for e in seen[i]] == stores
        eips = [e[3] for e in seen[i]]
        if nosync and i == 0:
            assert eips[1:] != exact[1:], 'the PC was synced before a nosync hook'
        else:
            assert eips == exact
