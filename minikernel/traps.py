"""Traps that are not page faults, and the way back to user mode.

Mirrors arch/i386/kernel/traps.c (do_general_protection, do_invalid_op,
die) and the ret_from_sys_call / ret_from_intr path of entry.S.

Rules
  - A trap from user mode is the task's fault: it gets a signal (SIGSEGV,
    SIGILL, SIGFPE), which kills it at the return to user mode, and the
    machine goes on.  The same trap from kernel code is the kernel's bug:
    `ud2` at a BUG() site reports "kernel BUG at file:line", anything else
    an Oops; both kill the task (do_exit), as Linux does.
  - Every path back to user mode goes through from_user(): pending kill ->
    do_exit; need_resched -> schedule(); then restore_all.
"""

VEC_NP = 11                # segment not present

_USER_SIGNAL = {'gp': 'SIGSEGV', 'ud': 'SIGILL', 'de': 'SIGFPE', 'int': 'SIGSEGV',
                'exception': 'SIGSEGV', 'df': 'SIGSEGV', 'error': 'SIGSEGV'}


class Traps:
    def __init__(self, kernel):
        self.k = kernel

    def from_user(self, task, handler, kind, value=None):
        """Run a handler entered from user mode, then ret_from_sys_call:
        deliver a fatal signal, reschedule if asked, run do_signal for a
        pending signal with a handler or a system call to restart
        (minikernel/signal.py).  Generator; returns the
        handler's value (EAX for a system call).  handler None: it already
        ran and returned `value` (entry.py's system call fast path, which
        found work to do); only ret_from_sys_call is left."""
        k = self.k
        if handler is not None:
            # the entry's cost, charged on the spot (as Engine._advance applies a Charge)
            k.machine.charge(task.cpu, k.costs['syscall_entry' if kind == 'syscall' else 'irq_entry'])
            task.orig_eax = task.uregs['eax'] if kind == 'syscall' else -1
            value = yield from handler
        signalled = False
        while True:
            if task.killed_by is not None:
                yield from k.exit.do_exit(task, -1)
            if k.sched.need_resched(task):
                yield from k.sched.schedule(task)
                continue
            if not signalled and k.signals.work_pending(task, kind, value):
                signalled = True                # do_signal: one signal per return
                value = yield from k.signals.do_signal(task, kind, value)
                continue
            return value

    def user_trap(self, task, trap):
        """An exception from user mode (not a page fault): a signal."""
        sig = _USER_SIGNAL.get(trap.kind, 'SIGSEGV')
        what = {'int': f'int {trap.vector:#x} (no such gate for user mode)',
                'error': f'unemulatable state: {trap.detail}'}.get(trap.kind, trap.kind.upper())
        self.k.kill_task(task, sig, f'{sig} ({what}) at {self.k.describe_user(task, trap.eip)}')
        return None
        yield

    def kernel_trap(self, task, trap, regs):
        """An exception in kernel guest code.  A #GP or #NP at an instruction
        with an exception-table entry (restore_all's segment reloads) goes to
        its fixup (do_general_protection / do_segment_not_present:
        fixup_exception); anything else is BUG() or an Oops and the task
        dies.  Generator; returns the fixup EIP."""
        k = self.k
        if trap.kind == 'gp' or (trap.kind == 'exception' and trap.vector == VEC_NP):
            fixup = k.search_exception_tables(trap.eip)
            if fixup is not None:
                return fixup
        if trap.kind == 'ud' and trap.eip in k.image.bugs:
            f, line = k.image.bugs[trap.eip]
            k.report('bug', f'kernel BUG at {f}:{line}! ({k.describe(trap.eip)}, '
                            f'{task.name}/{task.pid} on CPU{task.cpu})', task=task)
        elif trap.kind == 'error':
            k.report('crash', f'machine check: {trap.detail} at {k.describe(trap.eip)}', task=task)
        else:
            k.oops(task, f'{trap.kind} in kernel at {k.describe(trap.eip)}', report=True)
        yield from k.exit.do_exit(task, -1)
