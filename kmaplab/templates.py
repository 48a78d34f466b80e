"""`kmaplab new NAME`: a commented scenario and a user program to start from.

Writes NAME.toml and NAME.S into a directory (default: the current one);
the scenario runs the program (a task per CPU) under two write paths, and
both run as written: `kmaplab run NAME.toml`.  Existing files are never
overwritten (exit code 2).
"""
import os
import re

SCENARIO = '''\
# {name}.toml: a kmaplab scenario (the format: docs/scenarios.md).
# Run it:    kmaplab run {name}.toml            (every variant, judged)
#            kmaplab run {name}.toml --json     (one JSON line per variant)
# Trace it:  kmaplab trace {name}.toml --variant write_path=kmap --events kmap,tlb,ipi
name = "{name}"
description = "{name}: each CPU writes a file through write() (edit me)"
notes = """
What this scenario is for, and what the thread said about it.
"""

# The machine: CPUs, RAM and how much of it is highmem (above 896 MiB on a
# real i386; here any split).  seed: all randomness of a run comes from it.
[machine]
cpus = 2
mem = "64M"
highmem = "32M"

# Boot options (any of minikernel.kernel.BOOT_OPTIONS; `kmaplab run --set
# key=value` overrides them): the design under test is one of them.
[boot]
disk_latency = 20000            # cycles per disk request (1 GHz: 20 us)

# Files on the disk at boot: pattern(i) = (i * 13 + seed) & 0xff.
# [[file]]
# name = "input"
# size = "64K"
# seed = 3

# The user programs.  program = "{name}.S" is the file beside this one
# (a bare name means asm/user/<name>.S).  cpu = "each": one task per CPU;
# args may say {{cpu}} and {{n}}.
[[task]]
name = "{name}"
program = "{name}.S"
args = ["out{{cpu}}", 16]       # the file to write, how many pages
cpu = "each"

# One variant per combination of the sweep (run --variant k=v picks some).
[sweep]
write_path = ["kmap", "atomic_fallback"]

# What must happen: the outcome (completed, bug, oom, deadlock, no_progress,
# corruption, killed, failed, timeout) and checks on the counters
# (`kmaplab run {name}.toml --json` shows them all).
[expect]
outcome = "completed"
checks = ["tasks_exited == cpus", "file_write_bytes == 16 * 4096 * cpus"]

[[expect.case]]
when = {{write_path = "atomic_fallback"}}
checks = ["kmap_high_calls == 0"]

# What report.md shows for it (kmaplab report --scenarios {name}.toml).
[report]
counters = ["kmap_high_calls", "global_flushes", "page_faults", "instructions"]
claim = """
(the claim of the thread this scenario tests)
"""
'''

PROGRAM = '''\
// {name}.S: a kmaplab user program (32-bit x86, Intel syntax, assembled
// with asm/user/lib.S: sys_* stubs take the Linux i386 syscall arguments in
// EBX, ECX, EDX ...; helpers take EAX, EDX, ECX and return EAX).
//
//   {name} PATH NPAGES
// open(PATH, O_CREAT|O_WRONLY|O_TRUNC); write NPAGES pages of 'x' one page
// per write(); print "{name}: done" on stdout; exit 0.
// Exit code: 0 ok; 10 open failed; 11 a write returned less than a page.
// At _start, [esp] = argc, [esp + 4] = argv[0] = PATH, [esp + 8] = NPAGES
// (kmaplab passes integers as numbers, strings as pointers).

_start:
        mov ebx, dword ptr [esp + 4]            // PATH
        mov ecx, 0x241                          // O_CREAT | O_TRUNC | O_WRONLY
        mov edx, 0x1a4                          // 0644
        call sys_open
        test eax, eax
        js fail_open
        mov dword ptr [fd], eax
        mov esi, dword ptr [esp + 8]            // pages left

        lea edi, [page]                         // fill the page with 'x'
        xor ecx, ecx
1:      mov byte ptr [edi + ecx], 0x78
        inc ecx
        cmp ecx, 4096
        jb 1b

2:      test esi, esi
        jz 3f
        mov ebx, dword ptr [fd]                 // write(fd, page, 4096)
        lea ecx, [page]
        mov edx, 4096
        call sys_write
        cmp eax, 4096
        jne fail_write
        dec esi
        jmp 2b

3:      mov ebx, dword ptr [fd]
        call sys_close
        mov eax, 1                              // puts_fd(1, msg)
        lea edx, [msg]
        call puts_fd
        xor ebx, ebx
        call sys_exit
fail_open:
        mov ebx, 10
        call sys_exit
fail_write:
        mov ebx, 11
        call sys_exit

msg:    .asciz "{name}: done\\n"
fd:     .long 0
        .align 4096
page:   .space 4096
'''

_NAME = re.compile(r'^[A-Za-z][A-Za-z0-9_-]{0,40}$')


def write_new(name, directory='.'):
    """Write NAME.toml and NAME.S into directory; returns their paths."""
    if not _NAME.match(name):
        raise ValueError(f'new {name!r}: a name is a letter then letters, digits, - or _ '
                         f'(at most 41 characters)')
    if not os.path.isdir(directory):
        raise ValueError(f'new: {directory}: no such directory')
    paths = [os.path.join(directory, f'{name}.toml'), os.path.join(directory, f'{name}.S')]
    for p in paths:
        if os.path.exists(p):
            raise ValueError(f'new: {p} exists (not overwritten)')
    texts = [SCENARIO.format(name=name), PROGRAM.format(name=name)]
    for p, text in zip(paths, texts):
        try:
            with open(p, 'x') as f:
                f.write(text)
        except OSError as e:
            raise ValueError(f'new: cannot write {p}: {e.strerror}') from None
    return paths
