"""The assembler's disk cache (vm/asm.py DISK_CACHE_DIR): what a new
process reads back is the image it would assemble."""
import os

import capstone

from vm.asm import assemble_files

BASE = 0xC0100000
_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)


def insn(image, addr):
    off = addr - image.base
    i = next(_CS.disasm(image.code[off:off + 16], addr))
    return i.mnemonic, i.op_str


def test_disk_cache_gives_the_same_image_and_misses_on_a_changed_include(tmp_path, monkeypatch):
    """assemble_files through DISK_CACHE_DIR (a new process finds the image
    on disk): the image read back equals the assembled one field by field;
    an #include whose contents changed is a miss."""
    from vm import asm as vm_asm
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'k.h').write_text('#define K 7\n')
    (src / 'a.S').write_text('#include "k.h"\nf:\n  mov eax, K\n1: jmp 1b\n.spin s\n  pause\n.endspin\n'
                             'g: .long f\n')
    monkeypatch.setattr(vm_asm, 'DISK_CACHE_DIR', str(tmp_path / 'cache'))
    fields = ('base', 'code', 'symbols', 'lines', 'extable', 'bugs', 'ranges', 'specials', 'insn_bitmap')
    a = assemble_files(['a.S'], BASE, {'X': 1}, root=str(src))
    assert len(os.listdir(tmp_path / 'cache')) == 1
    vm_asm._FILES.clear()                                  # as in a new process
    b = assemble_files(['a.S'], BASE, {'X': 1}, root=str(src))
    assert b is not a and all(getattr(a, f) == getattr(b, f) for f in fields)
    vm_asm._FILES.clear()
    (src / 'k.h').write_text('#define K 9\n')              # same size, other contents
    c = assemble_files(['a.S'], BASE, {'X': 1}, root=str(src))
    assert insn(c, BASE)[:2] == ('mov', 'eax, 9')
