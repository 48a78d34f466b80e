"""Tests for vm/asm.py (the guest assembler) and vm/symbols.py.

Expected addresses come from capstone disassembling the output, and expected
line numbers from searching the fixture text (tests/asm_fixtures/), never
from numbers copied out of a previous run.
"""
import os

import capstone
import pytest
from keystone import Ks, KS_ARCH_X86, KS_MODE_32, KS_OPT_SYNTAX_INTEL

import vm.asm as vm_asm
from vm.asm import AsmError, assemble, assemble_files
from vm.symbols import Symbolizer

FIXTURES = os.path.join(os.path.dirname(__file__), 'asm_fixtures')
BASE = 0xC0100000
CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)


def asm(text, base=BASE, **kw):
    return assemble([('t.S', text)], base, **kw)


def insn(image, addr):
    """(mnemonic, op_str, size) of the instruction at addr, by capstone."""
    off = addr - image.base
    i = next(CS.disasm(image.code[off:off + 15], addr, 1))
    return i.mnemonic, i.op_str, i.size


def target(image, addr):
    return int(insn(image, addr)[1], 0)


def src_line(name, needle):
    """1-based number of the fixture line containing needle (exactly once)."""
    with open(os.path.join(FIXTURES, name)) as f:
        hits = [n for n, ln in enumerate(f, 1) if needle in ln]
    assert len(hits) == 1, (name, needle, hits)
    return hits[0]


@pytest.fixture(scope='module')
def image():
    return assemble_files(['main.S', 'lib.S'], BASE, root=FIXTURES)


# ---- line and address mapping -------------------------------------------------

def test_labels_point_at_the_right_instructions(image):
    s = image.symbols
    assert insn(image, s['kmap_atomic'])[:2] == ('mov', 'eax, dword ptr [esp + 4]')
    assert insn(image, s['__copy_user'])[:2] == ('rep movsd', 'dword ptr es:[edi], dword ptr [esi]')
    assert insn(image, s['flush_tlb_one'])[:2] == ('invlpg', 'byte ptr [eax]')
    assert insn(image, s['helper'])[:2] == ('mov', 'eax, 0x400')       # LAST_PKMAP
    assert image.code[s['pkmap_count'] - BASE:][:8] == bytes.fromhex('0000000000040000')
    assert image.code[s['.Lmsg'] - BASE:].startswith(b'a; b // c /* d */\0')
    assert s['pkmap_count'] % 4 == 0


def test_line_info_across_files_and_includes(image):
    s = image.symbols
    assert image.line_at(s['kmap_atomic']) == ('main.S', src_line('main.S', 'dword ptr [esp + 4]'))
    assert image.line_at(s['helper'] + 1) == ('inc/helpers.inc', src_line('inc/helpers.inc', 'mov eax'))
    assert image.line_at(s['lib_entry']) == ('lib.S', src_line('lib.S', 'call kmap_atomic'))
    assert image.line_at(image.base + image.size) is None


def test_every_line_entry_matches_source_and_capstone(image):
    sources = {}
    for addr, size, file, line, is_insn, text in image.lines:
        if file not in sources:
            with open(os.path.join(FIXTURES, file)) as f:
                sources[file] = f.read().split('\n')
        assert text in sources[file][line - 1]
        if is_insn and not text.startswith('.align'):
            assert insn(image, addr)[2] == size, text
    spans = [(a, a + n) for a, n, *_ in image.lines]
    assert spans == sorted(spans) and all(b <= c for (_, b), (c, _) in zip(spans, spans[1:]))
    assert spans[-1][1] == image.base + image.size


def test_cross_file_calls_and_push_offset(image):
    s = image.symbols
    call = s['lib_entry']
    assert insn(image, call)[0] == 'call' and target(image, call) == s['kmap_atomic']
    push = call + insn(image, call)[2]
    assert insn(image, push) == ('push', hex(s['pkmap_count']), 5)
    assert target(image, push + 5) == s['helper']


def test_new_ks_refuses_an_instance_that_reads_decimals_as_hex(monkeypatch):
    # ks_option() forces MCAsmInfo's radix to 16: the state an instance is in
    # when ks_open's uninitialised radix happens to read 16
    hexy = Ks(KS_ARCH_X86, KS_MODE_32)
    hexy.syntax = KS_OPT_SYNTAX_INTEL
    assert not vm_asm._radix_ok(hexy)
    assert vm_asm._radix_ok(vm_asm._new_ks())
    made = []

    def always_hex(arch, mode):
        ks = Ks(arch, mode)
        ks.syntax = KS_OPT_SYNTAX_INTEL
        made.append(ks)
        return ks
    monkeypatch.setattr(vm_asm, 'Ks', always_hex)
    with pytest.raises(RuntimeError, match='as hex'):
        vm_asm._new_ks(tries=3)
    assert len(made) == 3


def test_decimal_immediates_are_decimal():
    assert asm('mov ecx, 1024\n').code == b'\xb9\x00\x04\x00\x00'


def test_error_line_is_found_with_decimal_numbers_before_it():
    # _locate's keystone instance has a symbol resolver, i.e. radix 16: read
    # as hex, `int 200` (0x200) failed and took the blame for line 2
    with pytest.raises(AsmError) as e:
        asm('int 200\nmov eax, [ebx+ecx*3]\n')
    assert e.value.line == 2


def test_bytes_equal_plain_keystone():
    src = 'a: mov eax, offset b\nrep movsl\njne a\nmov ebx, [b]\nb: .long a\n'
    plain = 'a: mov eax, b\nrep movs dword ptr es:[edi], dword ptr [esi]\njne a\nmov ebx, [b]\nb: .long a\n'
    enc, _ = vm_asm._new_ks().asm(plain, BASE, as_bytes=True)
    assert asm(src).code == enc


# ---- labels and addresses -------------------------------------------------------

def test_numeric_local_labels(image):
    s = image.symbols
    jne = s['kmap_atomic'] + 16                       # mov, mov, cmp: 4 + 5 + 7
    assert insn(image, jne)[0] == 'jne'
    assert insn(image, target(image, jne))[:2] == ('shl', 'eax, 0xc')     # 1f
    img = asm('1: nop\n1: jmp 1b\njmp 1f\n1: jmp 1b\n')
    assert [target(img, BASE + a) for a in (1, 3, 5)] == [BASE + 1, BASE + 5, BASE + 5]
    assert img.symbols == {}
    assert not any(k.startswith('__kas') for k in image.symbols)


def test_numeric_labels_do_not_cross_sources():
    with pytest.raises(AsmError) as e:
        assemble([('a.S', 'jmp 1f\n'), ('b.S', '1: ret\n')], BASE)
    assert str(e.value) == "a.S:1: '1f': no local label '1:' after this line"


def test_address_versus_memory_operands():
    img = asm('mov eax, offset x\nmov eax, [x]\nlea eax, [x + 4]\n'
              'mov dword ptr [x], 1\ncmp dword ptr [x + 4], 0\npush offset x\nx: .long 0\n')
    x = img.symbols['x']
    addrs = [a for a, *_ in img.lines]
    got = [insn(img, a)[:2] for a in addrs[:-1]]
    assert got == [('mov', f'eax, {x:#x}'), ('mov', f'eax, dword ptr [{x:#x}]'),
                   ('lea', f'eax, [{x + 4:#x}]'), ('mov', f'dword ptr [{x:#x}], 1'),
                   ('cmp', f'dword ptr [{x + 4:#x}], 0'), ('push', f'{x:#x}')]


def test_forward_branches_reach_their_labels():
    img = asm('jmp f\njne f\ncall f\nloop g\ng: jecxz h\nh: .space 300\nf: ret\n')
    f, g, h = img.symbols['f'], img.symbols['g'], img.symbols['h']
    assert [target(img, a) for a, *_ in img.lines[:5]] == [f, f, f, g, h]
    assert [insn(img, a)[2] for a, *_ in img.lines[:3]] == [5, 6, 5]   # rel32 forms


@pytest.mark.parametrize('space', [200, 300])   # keystone: misencodes / "invalid fixup"
def test_short_only_branch_out_of_range(space):
    with pytest.raises(AsmError, match=r'^t\.S:2: .*out of range'):
        asm(f'nop\njecxz f\n.space {space}\nf: ret\n')


def test_symbol_at_prefers_real_names():
    img = asm('nop\n.Lx: start: nop\nnop\nmid: .Ly: nop\n')
    assert img.symbol_at(BASE + 1) == ('start', 0)
    assert img.symbol_at(BASE + 2) == ('start', 1)
    assert img.symbol_at(BASE + 3) == ('mid', 0)
    assert img.symbol_at(BASE) is None and img.symbol_at(BASE + 4) is None
    assert img.symbols == {'.Lx': BASE + 1, 'start': BASE + 1, 'mid': BASE + 3, '.Ly': BASE + 3}


# ---- annotations, specials, bitmap ------------------------------------------------

def test_extable(image):
    s = image.symbols
    cu = s['__copy_user']               # rep movsl; 0: mov; 1: rep movsb; 2: ret; 3: lea
    fault0, fault1, ret2, fix3 = cu + 2, cu + 4, cu + 6, cu + 7
    assert insn(image, fault1)[0] == 'rep movsb' and insn(image, fix3)[0] == 'lea'
    assert image.extable == {fault0: fix3, fault1: ret2}


def test_bug(image):
    s = image.symbols
    bugs = list(image.bugs.items())
    assert bugs == [(s['kmap_atomic'] + 18, ('main.S', src_line('main.S', 'BUG')))]
    assert insn(image, bugs[0][0])[0] == 'ud2'


def test_spin_range(image):
    lo, hi = image.ranges['spin_lock_wait']
    assert lo == image.symbols['spin_lock']
    assert insn(image, hi)[0] == 'ret' and insn(image, hi - 2)[0] == 'jne'


def test_specials(image):
    sp = image.specials
    f = image.symbols['flush_tlb_one']
    assert sp['invlpg'] == [f]
    assert sp['mov_cr3'] == [f + 6]          # not the read, mov eax, cr3 at f + 3
    assert sp['int'] == [f + 9] and sp['hlt'] == [f + 11] and sp['iret'] == [f + 12]
    assert insn(image, f + 12)[0] == 'iretd'


def test_insn_bitmap_excludes_data(image):
    bits = image.insn_bitmap
    starts = {i for i in range(image.size) if (bits[i >> 3] >> (i & 7)) & 1}
    expect = set()
    for addr, size, file, line, is_insn, text in image.lines:
        if is_insn:
            off = addr - image.base
            expect |= {a - image.base for a, *_ in CS.disasm_lite(image.code[off:off + size], addr)}
    assert starts == expect
    pk = image.symbols['pkmap_count'] - image.base
    assert not starts & set(range(pk, pk + 8 + 18))          # .long and .asciz
    assert image.symbols['kmap_atomic'] - image.base in starts
    assert len(bits) == (image.size + 7) // 8


def test_alignment_padding_after_code_is_code():
    img = asm('nop\n.align 16\nret\n.byte 1\n.align 4\n.long 2\n')
    assert [ln[4] for ln in img.lines] == [True, True, True, False, False, False]
    assert img.is_insn(BASE + 1) and not img.is_insn(BASE + 0x12)


# ---- rewrites of keystone quirks ---------------------------------------------------

@pytest.mark.parametrize('src, hexcode', [
    ('rep movsl', 'f3a5'), ('rep movsd', 'f3a5'), ('movsl', 'a5'), ('rep stosl', 'f3ab'),
    ('lodsl', 'ad'), ('repe cmpsl', 'f3a7'), ('iret', 'cf'), ('pushf', '9c'), ('popf', '9d'),
    ('push ds', '1e'), ('pop es', '07'), ('rep stosb', 'f3aa'), ('lock xchg [ecx], eax', 'f08701'),
])
def test_rewrites(src, hexcode):
    assert asm(src).code.hex() == hexcode


# ---- preprocessing ----------------------------------------------------------------

def test_comments_keep_line_numbers():
    img = asm('/* one\n two */ nop ; three\n// four\n.ascii "x;//y"   // five\nret\n')
    assert [(ln[3], ln[5]) for ln in img.lines] == [(1, 'nop'), (4, '.ascii "x;//y"'), (5, 'ret')]
    assert img.code == b'\x90x;//y\xc3'


def test_defines_and_includes(tmp_path):
    (tmp_path / 'sub').mkdir()
    (tmp_path / 'sub' / 'k.h').write_text('#define K 7\n#define J (K * 2)\n')
    (tmp_path / 'a.S').write_text('#include "sub/k.h"\nmov eax, K + J + BOOT\n')
    img = assemble_files([str(tmp_path / 'a.S')], BASE, {'BOOT': 0x100}, root=str(tmp_path))
    assert insn(img, BASE)[:2] == ('mov', f'eax, {7 + 14 + 0x100:#x}')
    assert img.lines[0][2:4] == ('a.S', 2)
    (tmp_path / 'b.S').write_text('nop\n#include "sub/k.h"\n#define K 8\n')
    with pytest.raises(AsmError) as e:
        assemble_files(['b.S'], BASE, root=str(tmp_path))
    assert str(e.value) == "b.S:3: 'K' redefined as 8 (was 7 at sub/k.h:1)"


def test_error_in_included_file_names_that_file(tmp_path):
    (tmp_path / 'bad.h').write_text('// ok\n\n  frob eax\n')
    with pytest.raises(AsmError) as e:
        assemble([('x/top.S', 'nop\n#include "../bad.h"\n')], BASE, root=str(tmp_path))
    assert (e.value.file, e.value.line) == ('bad.h', 3)
    assert 'Invalid mnemonic' in e.value.message


@pytest.mark.parametrize('bad, message', [
    ('mov eax, lbl', "bare label 'lbl' as an operand is ambiguous"),
    ('push lbl', "bare label 'lbl'"),
    ('jmp dword ptr lbl', "bare label 'lbl'"),
    ('lgdt [lbl]', 'lgdt is not supported'),
    ('lidt [eax]', 'lidt is not supported'),
    ('mov eax, [nowhere]', "undefined symbol 'nowhere'"),
    ('call nowhere', "undefined symbol 'nowhere'"),
    ('lbl: nop', "duplicate label 'lbl' (first defined at t.S:1)"),
    ('.p2align 4', 'unknown directive .p2align'),
    ('.align 6', 'power of two'),
    ('frob eax', 'Invalid mnemonic'),
    ('mov [eax], 1', 'Invalid operand'),
    ('#ifdef X', "unsupported preprocessor directive '#ifdef'"),
    ('# define Y 1', "unsupported preprocessor directive '# define'"),
    ('#define F(x) x', 'only object-like constants'),
    ('mov eax, 1 # note', "unexpected '#'"),
    ('jmp 2b', "no local label '2:' before this line"),
    ('.extable lbl, nowhere', ".extable: 'nowhere' is not a label"),
    ('.extable dat, lbl', 'the fault label is not on an instruction'),
    ('.endspin', '.endspin without .spin'),
    ('.equ Q, lbl', "label 'lbl' in .equ"),
    ('jecxz distant', 'target out of range'),
    ('__kas_1: nop', 'reserved'),
    ('.ascii "open', 'unterminated string'),
])
def test_rejected_constructs_report_file_and_line(bad, message):
    src = f'lbl: nop\ndat: .long 0\n{bad}\nret\n.space 200\ndistant: ret\n'
    with pytest.raises(AsmError) as e:
        asm(src)
    assert (e.value.file, e.value.line) == ('t.S', 3)
    assert message in e.value.message
    assert str(e.value) == f't.S:3: {e.value.message}'


def test_unclosed_spin_and_comment():
    with pytest.raises(AsmError, match=r'^t\.S:2: \.spin w without \.endspin$'):
        asm('nop\n.spin w\nnop\n')
    with pytest.raises(AsmError, match=r'^t\.S:3: unterminated comment$'):
        asm('nop\nnop\n/* never\nclosed\n')


def test_memoized():
    a = asm('nop\nret\n')
    assert asm('nop\nret\n') is a and asm('nop\nret\n', base=BASE + 0x1000) is not a


def test_files_reused_until_one_changes(tmp_path):
    """assemble_files keeps the image of unchanged files (no re-reading at
    every boot) and assembles again when a file or an #include changes."""
    (tmp_path / 'k.h').write_text('#define K 7\n')
    (tmp_path / 'a.S').write_text('#include "k.h"\nmov eax, K\n')
    a = assemble_files(['a.S'], BASE, {'X': 1}, root=str(tmp_path))
    assert assemble_files(['a.S'], BASE, {'X': 1}, root=str(tmp_path)) is a
    assert assemble_files(['a.S'], BASE, {'X': 2}, root=str(tmp_path)) is not a
    (tmp_path / 'k.h').write_text('#define K 0x99\n')
    b = assemble_files(['a.S'], BASE, {'X': 1}, root=str(tmp_path))
    assert b is not a and insn(b, BASE)[:2] == ('mov', 'eax, 0x99')
    (tmp_path / 'a.S').write_text('#include "k.h"\nnop\nmov eax, K\n')
    c = assemble_files(['a.S'], BASE, {'X': 1}, root=str(tmp_path))
    assert insn(c, BASE)[0] == 'nop' and insn(c, BASE + 1)[:2] == ('mov', 'eax, 0x99')


def test_a_few_thousand_lines():
    """2,400 lines with forward and local branches and data referring to
    labels assemble to one line record per source line (how fast: `kmaplab
    bench`, row "assemble 2,400 lines": no timed tests)."""
    from kmaplab.bench import asm_source
    img = asm(asm_source())
    assert len(img.lines) == 300 * 8
    f1 = img.symbols['f1']
    assert insn(img, img.symbols['f0'])[0] == 'push'
    assert img.symbols['d0'] < f1 and int.from_bytes(
        img.code[img.symbols['d0'] + 4 - BASE:img.symbols['d0'] + 8 - BASE], 'little') == img.symbols['f0']


# ---- the symbolizer ------------------------------------------------------------------

def test_describe(image):
    sym = Symbolizer([image])
    k = image.symbols['kmap_atomic']
    line = src_line('main.S', 'dword ptr [esp + 4]')
    assert sym.describe(k) == f'kmap_atomic (main.S:{line})'
    assert sym.describe(k + 0x12) == f'kmap_atomic+0x12 (main.S:{src_line("main.S", "BUG")})'
    assert sym.describe(0x08048123) == '0x08048123'
    assert sym.name(image.symbols['.Lmsg'] + 2) == '.Lmsg+0x2'


def test_listing_and_disasm(image):
    sym = Symbolizer([image])
    k = image.symbols['kmap_atomic']
    line = src_line('main.S', 'dword ptr [esp + 4]')
    rows = list(sym.listing(image, k, k + 9))
    assert rows == [
        f'{k:08x} <kmap_atomic> 8b 44 24 04   mov eax, dword ptr [esp + 4]   ; main.S:{line}',
        f'{k + 4:08x} <kmap_atomic+0x4> b9 {(image.symbols["pkmap_count"]).to_bytes(4, "little").hex(" ")}'
        f'   mov ecx, {image.symbols["pkmap_count"]:#x}   ; main.S:{line + 1}']
    assert sym.disasm_at(image, k) == ('mov eax, dword ptr [esp + 4]', 4)
    assert sym.disasm(b'\xf3\xa5', 0x1000) == ('rep movsd dword ptr es:[edi], dword ptr [esi]', 2)
    data = list(sym.listing(image, image.symbols['pkmap_count'], image.symbols['.Lmsg']))
    assert data == [f'{image.symbols["pkmap_count"]:08x} <pkmap_count> 00 00 00 00 00 04 00 00'
                    f'   .long 0, LAST_PKMAP   ; main.S:{src_line("main.S", ".long 0")}']
