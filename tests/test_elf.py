"""Static i386 ELF binaries as guest user programs (minikernel/binfmt.py):
loading, the initial stack and auxv, brk, malformed files, ENOSYS counts.

The binaries come from `make setup` (workloads/build.py: zig for the C
programs, Debian's busybox-static:i386 where the machine allows it); a test
that needs one that is missing is skipped with the reason.
"""
import os
import struct

import pytest

from minikernel.binfmt import ElfError, parse_elf
from minikernel.kernel import ROOT, Kernel

WORKLOADS = os.path.join(ROOT, 'build', 'workloads')


def workload(name):
    path = os.path.join(WORKLOADS, name)
    if not os.path.exists(path):
        pytest.skip(f'{path} not built (make setup builds it with zig)')
    with open(path, 'rb') as f:
        return f.read()


def run_elf(data, argv, envp=(), files=(), **options):
    k = Kernel(dict(options))
    k.vfs.create_file('prog', data)
    for name, content in files:
        k.vfs.create_file(name, content)
    t = k.spawn_exec('p', '/prog', argv, envp)
    end = k.run()
    k.finish()
    return k, t, end, b''.join(bytes(x.console) for x in k.sched.tasks.values()).decode('latin-1')


def test_nolibc_gets_argv_envp_auxv_bss_and_brk():
    """The program checks argc/argv/envp, AT_PAGESZ/ENTRY/PHNUM/RANDOM/
    PLATFORM/UID, a zeroed 4 KiB .bss, .data, brk growth and mmap2, and
    exits with the number of failed checks."""
    k, t, end, out = run_elf(workload('nolibc'), ['prog', 'a', 'bb'], ['PATH=/bin', 'HOME=/'])
    assert end == 'finished'
    assert out == 'nolibc: argc=3 prog a bb env=2 failed=0\n'
    assert t.exit_code == 0 and t.killed_by is None
    assert k.syscalls.counters['sys_brk'] == 2
    assert t.counters['instructions'] > 1000


def test_elf_text_is_demand_paged_from_the_page_cache():
    """Text pages arrive by faults through filemap_nopage: the file's pages
    are in its page cache after the run, read from the disk."""
    k, t, end, out = run_elf(workload('nolibc'), ['prog'])
    inode = k.vfs.lookup('prog')
    assert inode.mapping.pages, 'no page of the executable went through the page cache'
    assert k.disk.counters['reads'] >= 1
    assert k.mm.counters['major_faults'] >= 1


def test_elf_symbols_name_user_addresses():
    data = workload('filehash')
    prog = parse_elf(data, 'filehash')
    addr = prog.image.symbols['sha256_process']
    from vm.symbols import Symbolizer
    assert Symbolizer([prog.image]).name(addr + 3) == 'sha256_process+0x3'
    assert prog.image.is_insn(prog.entry)


def test_the_instruction_bitmap_marks_every_instruction_of_a_linear_sweep():
    """The bitmap is built once per binary (cached by sha256) and marks the
    entry point and each function start of .symtab."""
    data = workload('filehash')
    a = parse_elf(data, 'x')
    assert parse_elf(data, 'y') is a
    starts = [v for n, v in a.image.symbols.items() if not n.startswith('.')]
    assert starts and all(a.image.is_insn(v) for v in starts)


def _minimal_elf(e_machine=3, entry=0x8048080, loads=((0x8048000, 0, 0x100, 0x100, 5),), size=0x100):
    """A hand-made ELF header + PT_LOADs (vaddr, offset, filesz, memsz, flags)."""
    phoff = 52
    hdr = bytearray(b'\x7fELF\x01\x01\x01' + bytes(9))
    hdr += struct.pack('<HHIIIIIHHHHHH', 2, e_machine, 1, entry, phoff, 0, 0, 52, 32, len(loads), 40, 0, 0)
    for va, off, fs, ms, fl in loads:
        hdr += struct.pack('<8I', 1, off, va, va, fs, ms, fl, 0x1000)
    hdr += bytes(max(0, size - len(hdr)))
    hdr[0x80:0x82] = b'\xeb\xfe'               # jmp .
    return bytes(hdr)


@pytest.mark.parametrize('data, why', [
    (_minimal_elf()[:40], 'not an ELF file'),
    (_minimal_elf(e_machine=62), 'not i386'),
    (_minimal_elf(entry=0x9000000), 'entry point'),
    (_minimal_elf(loads=((0x8048000, 0, 0x100, 0x2000, 5), (0x8049000, 0, 0x100, 0x100, 6))),
     'overlapping segments'),
    (_minimal_elf(loads=((0x8048000, 0, 0x5000, 0x5000, 5),)), 'truncated'),
    (b'#!/bin/sh\n', 'not an ELF file'),
])
def test_malformed_elf_is_a_one_line_error(data, why):
    with pytest.raises(ElfError) as e:
        parse_elf(data, 'bad')
    assert why in str(e.value) and '\n' not in str(e.value)
    k = Kernel({})
    k.vfs.create_file('bad', data)
    if data[:4] == b'\x7fELF':
        with pytest.raises(ValueError):
            k.spawn_exec('p', '/bad', ['bad'])


def test_a_minimal_elf_loads():
    assert parse_elf(_minimal_elf(), 'ok').entry == 0x8048080


def test_unimplemented_syscall_is_enosys_and_counted():
    """busybox (glibc) asks for set_thread_area at startup, or musl's
    filehash for others; whatever is not implemented shows up as enosys.NNN.
    The nolibc program only uses implemented calls: none."""
    k, t, end, out = run_elf(workload('nolibc'), ['prog'])
    assert not any(key.startswith('enosys.') for key in k.syscalls.counters)
    from minikernel.syscalls import ENOSYS
    k2 = Kernel({})
    regs = dict(eax=999, ebx=0, ecx=0, edx=0, esi=0, edi=0, ebp=0)
    gen = k2.syscalls.system_call(k2.sched.idle[0], regs)
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == -ENOSYS
    assert k2.syscalls.counters['enosys.999'] == 1


def test_file_and_process_syscalls_with_linux_errors():
    """nolibc_sys checks ~60 results of mkdir/open/openat/dup2/fcntl/stat64/
    pread64/pwrite64/_llseek/ioctl/getdents64/rename/unlink/rmdir, /dev/null,
    /dev/zero, uname, getrandom, clock_gettime, mprotect and ENOSYS, then
    stores into the page it made read-only: it must die there, of a write."""
    k, t, end, out = run_elf(workload('nolibc_sys'), ['nolibc_sys'])
    assert 'nolibc_sys: failed=0\n' in out, out
    assert 'dup\n' in out                       # dup(1) is the console too
    assert 'not killed' not in out
    assert t.killed_by is not None and 'protection, write' in t.killed_by[1]
    c = k.vfs.counters()
    assert c['fs_extents_added'] >= 1           # /big grew past its first 4 MiB extent
    assert not any(r['kind'] == 'corruption' for r in k.reports)
    assert k.syscalls.counters['enosys.999'] == 1
    assert k.mm.counters['mprotect_ptes'] >= 1


def test_fds_0_to_2_are_the_console_and_dup2_replaces_them():
    k = Kernel({})
    k.vfs.create_file('prog', workload('nolibc'))
    task = k.spawn_exec('p', '/prog', ['prog'])
    assert [task.files.fds[i].inode for i in (0, 1, 2)] == [k.vfs.console] * 3
    assert k.vfs.lookup_path('dev/null').dev == 'null'


def test_directories_at_boot_and_paths():
    k = Kernel({})
    k.vfs.create_file('/data/sub/f', b'x')
    assert k.vfs.lookup('/data/sub/f').size == 1
    assert k.vfs.lookup('/data/./sub/../sub/f') is k.vfs.lookup('data/sub/f')
    assert set(k.vfs.dirs['data'].children) == {'sub'}
    with pytest.raises(ValueError):
        k.vfs.create_file('/data/sub', b'')
