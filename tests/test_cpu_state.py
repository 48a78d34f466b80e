"""CPU state a user program owns: TLS segments (set_thread_area, %gs in
pt_regs, per-CPU GDT), x87/SSE registers across kernel entries and context
switches, CR4.OSFXSR.  Checked by asm programs that verify their own
registers (asm/user/tls.S, asm/user/fpu.S) and exit with the number of the
first check that failed."""
from minikernel.binfmt import assemble_program
from minikernel.kernel import ASM_DIR, ROOT, Kernel

MiB = 1 << 20
_progs = {}


def prog(*names):
    for n in names:
        if n not in _progs:
            _progs[n] = assemble_program(n, ROOT, ASM_DIR)
    return {n: _progs[n] for n in names}


def test_tls_per_task_per_cpu_across_syscalls_and_preemption():
    """Four tasks, two per CPU, each with its own TLS block behind %gs:
    set_thread_area picks entry 6 and writes it back, get_thread_area gives
    the descriptor back, Linux's errors (EINVAL, EFAULT, ESRCH), %gs:[0] is
    the task's own across system calls, yields and timer preemption on both
    CPUs at once (a shared GDT fails this), and a cleared entry makes the
    return to user mode load a null %gs (restore_all's fixup)."""
    k = Kernel(dict(cpus=2, mem=32 * MiB, tick=50_000), programs=prog('tls'))
    ts = [k.spawn(f't{i}', 'tls', [60_000], cpu=i % 2) for i in range(4)]
    assert k.run(max_cycles=200_000_000) == 'finished'
    assert [t.exit_code for t in ts] == [0, 0, 0, 0], [t.killed_by for t in ts]
    assert all(t.counters['switches'] >= 4 for t in ts)          # they were preempted
    assert not [r for r in k.reports if r['kind'] in ('oops', 'bug')]
    assert k.syscalls.counters['sys_set_thread_area'] == 4 * 8


def test_fpu_and_sse_state_survive_syscalls_and_page_faults():
    """xmm0-7, seven x87 registers, the x87 control word and MXCSR are the
    same after every system call and page fault (the ring-0 template
    restore used to bring its own FPU state along).  Running SSE2 at all
    needs CR4.OSFXSR."""
    k = Kernel(dict(cpus=1, mem=32 * MiB), programs=prog('fpu'))
    t = k.spawn('t', 'fpu', [20, 100])
    assert k.run(max_cycles=50_000_000) == 'finished'
    assert t.exit_code == 0 and t.killed_by is None
    assert t.counters['syscalls'] >= 20 and t.counters['faults'] >= 20


def test_fpu_and_sse_state_survive_preemption_by_other_tasks_on_the_cpu():
    """Three tasks with different x87/SSE values on one CPU, preempted by
    the timer in the middle of their loops: each gets its own registers
    back (fxsave/fxrstor in __switch_to, guest code)."""
    k = Kernel(dict(cpus=1, mem=32 * MiB, tick=20_000), programs=prog('fpu'))
    ts = [k.spawn(f't{i}', 'fpu', [20, 20_000]) for i in range(3)]
    assert k.run(max_cycles=100_000_000) == 'finished'
    assert [t.exit_code for t in ts] == [0, 0, 0], [t.killed_by for t in ts]
    assert all(t.counters['switches'] >= 5 for t in ts)          # preempted mid-loop


def test_a_thread_starts_with_its_parents_fpu_registers():
    """clone(CLONE_VM) copies the parent's live x87/SSE state into the
    child's area (fpu__copy, a guest fxsave); the parent changing its
    registers afterwards does not reach the child."""
    k = Kernel(dict(cpus=1, mem=32 * MiB), programs=prog('clonefpu'))
    t = k.spawn('t', 'clonefpu', [])
    assert k.run(max_cycles=50_000_000) == 'finished'
    assert t.exit_code == 0, t.killed_by


def test_a_c_program_keeps_xmm_and_x87_across_syscalls_faults_and_preemption():
    """The issue's done-when: workloads/fpu_keep.c (zig, musl, static) run
    twice on one CPU with a short tick, each keeping a value in xmm5 and in
    st(0) across system calls, page faults and preemption by the other."""
    import os
    import pytest
    path = os.path.join(ROOT, 'build', 'workloads', 'fpu_keep')
    if not os.path.exists(path):
        pytest.skip(f'{path} not built (make setup builds it with zig)')
    with open(path, 'rb') as f:
        data = f.read()
    k = Kernel(dict(cpus=1, mem=64 * MiB, tick=20_000))
    k.vfs.create_file('fpu_keep', data)
    ts = [k.spawn_exec(f'f{i}', '/fpu_keep', ['fpu_keep', '24']) for i in range(2)]
    assert k.run(max_cycles=500_000_000) == 'finished'
    assert [t.exit_code for t in ts] == [0, 0], [t.killed_by for t in ts]
    assert all(bytes(t.console) == b'fpu_keep: ok\n' for t in ts)
    assert all(t.counters['switches'] >= 4 and t.counters['faults'] >= 24 for t in ts)
