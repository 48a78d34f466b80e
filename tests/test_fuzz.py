"""The syscall fuzzer (issue 17): random system calls (numbers 0-400, hostile
arguments) from user programs, under the merged write designs.

Pass condition: no host traceback, no hang, and no kernel BUG or Oops: a
hostile system call is the program's problem (an errno, a SIGSEGV kill),
never the kernel's.  Each boot runs under max_cycles (60M): a program that
maps over its own code and runs into zero pages ends there (outcome
timeout, end 'time limit'); the wall-clock guard (300 s, far above what
max_cycles costs even on a loaded host) firing is a hang, a failure.
Every random number comes from one seeded generator (random.Random(SEED)),
so a failure replays with the printed scenario file.

    make test-slow            FUZZ_PROGRAMS (default 10^4) programs
    pytest tests/test_fuzz.py -k small     a few dozen, in make test
"""
import collections
import os
import random
import time

import pytest

from kmaplab import runner, scenario as scn_mod

SEED = 17
DESIGNS = ('atomic_fallback', 'perform_write', 'kmap_local')
PER_BOOT = 8                 # programs (tasks) per boot
CALLS = 6                    # system calls per program
_IMPLEMENTED = []


def implemented():
    """The system call numbers the kernel implements (its sys_call_table,
    read from a booted kernel once): 70% of the calls come from these."""
    if not _IMPLEMENTED:
        k = runner.boot(scn_mod.find('hello'), {})
        _IMPLEMENTED.extend(sorted(k.syscalls.table))
    return _IMPLEMENTED
HOSTILE = (0, 1, 2, 3, 4, 7, 8, 0xFFF, 0x1000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFF000,
           0xC0000000, 0xBFFFF000, 0xBFFFFFF0, 0x08048000, 0x08049000, 0x40000000, 0x90000000,
           0x3FFFF000, 0xFFFFFFFE, 0x22, 0x8022, 0x21, 0x8021, 0x10, 0x100, 0x200)


def _arg(rng):
    r = rng.random()
    if r < 0.6:
        return rng.choice(HOSTILE)
    if r < 0.8:
        return rng.randrange(0, 64)
    return rng.getrandbits(32)


def program(rng):
    """One fuzz program's args: CALLS x (nr, a1..a6)."""
    args = []
    for _ in range(CALLS):
        nr = rng.choice(implemented()) if rng.random() < 0.7 else rng.randrange(0, 401)
        if nr in (1, 252) and rng.random() < 0.8:        # exit: mostly not, or programs end at once
            nr = 20
        args += [nr] + [_arg(rng) for _ in range(6)]
    return [a - (1 << 32) if a >= 1 << 31 else a for a in args]


def boot_file(tmp_path, rng, i, design):
    lines = ['name = "fuzz"', '[machine]', 'cpus = 2', 'mem = "64M"', 'highmem = "32M"',
             '[boot]', f'write_path = "{design}"', 'max_cycles = 60_000_000', 'swap = "16M"',
             '[[file]]', 'name = "f"', 'size = "16K"']
    for n in range(PER_BOOT):
        args = ', '.join(str(a) for a in program(rng))
        lines += ['[[task]]', f'name = "fz{n}"', 'program = "fuzz"', f'cpu = {n % 2}',
                  f'args = [{args}]']
    path = tmp_path / f'fuzz{i}.toml'
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


def fuzz(tmp_path, programs, seed=SEED, timeout=300):
    """Run `programs` fuzz programs; returns (boots, outcome counter,
    task-end counter, syscalls made, failures [(file, design, why)], CPU
    seconds).  A host exception is a failure (kept, not raised: the run
    goes on and counts)."""
    import traceback
    rng = random.Random(seed)
    outcomes, ends, failures = collections.Counter(), collections.Counter(), []
    syscalls = 0
    t0 = time.process_time()
    boots = (programs + PER_BOOT - 1) // PER_BOOT
    for i in range(boots):
        design = DESIGNS[i % len(DESIGNS)]
        path = boot_file(tmp_path, rng, i, design)
        bad = []
        try:
            k = runner.boot(scn_mod.load(path), {})
            end, counters, outcome, findings = runner.run_kernel(k, timeout=timeout)
        except Exception as e:                 # a host traceback: the fuzzer's first finding
            outcome, end, k = 'host traceback', None, None
            bad.append(f'host traceback: {traceback.format_exception_only(e)[-1].strip()}')
        outcomes[outcome] += 1
        if k is not None:
            syscalls += counters.get('syscalls', 0)
            for t in k.workload:
                ends['killed' if t.killed_by else 'running' if t.alive else
                     'exit 0' if t.exit_code == 0 else 'exit !0'] += 1
            bad += [r['message'] for r in k.reports if r['kind'] in ('bug', 'oops', 'crash')]
        if end == 'host timeout':
            bad.append('host timeout (a hang)')
        if bad:
            failures.append((path, design, bad[0]))
            keep = tmp_path.parent / 'fuzz-failures'
            keep.mkdir(exist_ok=True)
            (keep / os.path.basename(path)).write_text(open(path).read())
        else:
            os.remove(path)
    return boots, outcomes, ends, syscalls, failures, time.process_time() - t0


def _check(tmp_path, programs):
    boots, outcomes, ends, syscalls, failures, cpu_s = fuzz(tmp_path, programs)
    print(f'\nfuzz: {boots * PER_BOOT} programs in {boots} boots ({", ".join(DESIGNS)} in turn), '
          f'{syscalls} system calls, {cpu_s:.1f} CPU s; outcomes {dict(outcomes)}; '
          f'task ends {dict(ends)}; failures {len(failures)}')
    for f in failures[:20]:
        print('  ', *f)
    assert not failures, failures[:5]


def test_small_syscall_fuzz(tmp_path):
    _check(tmp_path, 24)


@pytest.mark.slow
def test_syscall_fuzz(tmp_path):
    _check(tmp_path, int(os.environ.get('FUZZ_PROGRAMS', 10_000)))
