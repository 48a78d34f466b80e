"""workloads/build.py: the C workloads are the same bytes wherever they are
built (strip_debug drops zig's DWARF, which names the build directories)."""
import os
import shutil
import subprocess
import sys

import pytest

from minikernel.binfmt import parse_elf
from minikernel.kernel import ROOT

sys.path.insert(0, os.path.join(ROOT, 'workloads'))
import build  # noqa: E402  (workloads/build.py)

BUILT = os.path.join(ROOT, 'build', 'workloads', 'filehash')


def _sections(data):
    import struct
    shoff, = struct.unpack_from('<I', data, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from('<HHH', data, 0x2e)
    shdrs = [struct.unpack_from('<10I', data, shoff + i * shentsize) for i in range(shnum)]
    names = shdrs[shstrndx][4]
    return [data[names + sh[0]:data.index(b'\0', names + sh[0])].decode() for sh in shdrs]


def test_a_build_elsewhere_gives_the_same_bytes_without_debug_sections(tmp_path):
    if not os.path.exists(BUILT):
        pytest.skip(f'{BUILT} not built (make setup builds it with zig)')
    shutil.copy(os.path.join(ROOT, 'workloads', 'filehash.c'), tmp_path)
    cmd = [sys.executable, '-m', 'ziglang', 'cc', *build.ZIG_FLAGS, '-o', 'fh', 'filehash.c']
    subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    raw = (tmp_path / 'fh').read_bytes()
    stripped = build.strip_debug(raw)
    assert any(n.startswith('.debug') for n in _sections(raw))
    assert not any(n.startswith('.debug') for n in _sections(stripped))
    assert '.symtab' in _sections(stripped) and len(stripped) < len(raw)
    assert stripped == open(BUILT, 'rb').read()
    assert build.strip_debug(stripped) == stripped
    a, b = parse_elf(raw, 'raw'), parse_elf(stripped, 'stripped')
    assert a.entry == b.entry and a.image.code == b.image.code
    assert a.image.symbols == b.image.symbols


def test_strip_debug_refuses_what_is_not_elf32():
    with pytest.raises(ValueError, match='not a 32-bit'):
        build.strip_debug(b'#!/bin/sh\n')
