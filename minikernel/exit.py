"""Task exit: do_exit, exit statuses, wait4, and the release of what a
dead task held.

Mirrors kernel/exit.c (2.4.18 / 2.5: do_exit, exit_notify,
forget_original_parent, sys_wait4, release_task).  A task exits by calling exit(2), by a fatal
signal delivered at the return to user mode (SIGSEGV, SIGKILL from the OOM
killer), or by dying in the kernel (Oops, BUG).

Rules
  - do_exit never returns: it marks the task TASK_ZOMBIE and schedules away;
    the kernel stack is freed at the switch (it is still in use until then).
  - The mm is released when its last user exits (mmput -> exit_mmap).
  - Locks a dying task holds are NOT released (Linux does not either): a
    task that dies holding mmap_sem leaves it held, and the deadlock
    detector will say so.
  - The wait status is Linux's: (code & 0xff) << 8 for exit(code), the
    signal number for a task killed by a signal (SIGSEGV 11 for a fault,
    SIGKILL 9 for the OOM killer or kill -9, ...).
  - A zombie stays until its parent reaps it with wait4 (release_task).
    Its children are reparented to init (forget_original_parent); the lab
    has no init process, so the child reaper is the kernel itself: an
    orphan, and a task the scenario spawned, is released as soon as it
    exits (what init's wait loop does), counted in orphans_reparented /
    reaped_by_init.  The parent is sent SIGCHLD (minikernel/signal.py):
    ignored by default, or run by its handler; a wait4 sleeper is woken.
"""
from .sched import WaitQueue
from .signal import CLD_EXITED, CLD_KILLED, ERESTARTSYS
from .task import TASK_ZOMBIE

ECHILD, EINTR, EFAULT, EINVAL = 10, 4, 14, 22
WNOHANG, WUNTRACED = 1, 2
WALL, WCLONE = 0x40000000, 0x80000000
RUSAGE_SIZE = 72                  # struct rusage on i386

SIGNALS = {'SIGHUP': 1, 'SIGINT': 2, 'SIGQUIT': 3, 'SIGILL': 4, 'SIGTRAP': 5, 'SIGABRT': 6,
           'SIGBUS': 7, 'SIGFPE': 8, 'SIGKILL': 9, 'SIGUSR1': 10, 'SIGSEGV': 11, 'SIGUSR2': 12,
           'SIGPIPE': 13, 'SIGALRM': 14, 'SIGTERM': 15, 'SIGSTKFLT': 16, 'SIGCHLD': 17,
           'SIGCONT': 18, 'SIGSTOP': 19, 'SIGTSTP': 20, 'SIGTTIN': 21, 'SIGTTOU': 22,
           'SIGURG': 23, 'SIGXCPU': 24, 'SIGXFSZ': 25, 'SIGVTALRM': 26, 'SIGPROF': 27,
           'SIGWINCH': 28, 'SIGIO': 29, 'SIGPWR': 30, 'SIGSYS': 31}
SIGNAL_NAMES = {v: n for n, v in SIGNALS.items()}


class Exit:
    def __init__(self, kernel):
        self.k = kernel
        self.exited = []          # (pid, name, code, killed_by)
        self.counters = dict(exits=0, zombies_reaped=0, orphans_reparented=0, reaped_by_init=0,
                             wait4_sleeps=0, killed_by_signal=0)

    def do_exit(self, task, code):
        """do_exit(): generator that does not return."""
        k = self.k
        task.exit_code = code
        k.trace_event('exit', task=task, code=code)
        mm = task.mm
        if mm is not None:
            task.mm = None
            mm.users -= 1
            if mm.users == 0:
                yield from k.mm.exit_mmap(task, mm)
        if task.files is not None:
            yield from k.files_exit(task)
        if task.kbuf_pfn is not None:
            k.page_alloc.free_pages(task.kbuf_pfn, 0)
            task.kbuf_pfn = None
        task.exit_status = self.wait_status(task, code)
        self.counters['exits'] += 1
        task.state = TASK_ZOMBIE
        k.engine.account(k.machine.cpus[task.cpu], task)
        self.exited.append((task.pid, task.name, code, task.killed_by))
        self.exit_notify(task)
        k.task_exited(task)
        while True:
            yield from k.sched.schedule(task)

    def wait_status(self, task, code):
        if task.killed_by is not None:
            self.counters['killed_by_signal'] += 1
            return SIGNALS.get(task.killed_by[0], SIGNALS['SIGKILL']) & 0x7F
        return (code & 0xFF) << 8

    def exit_notify(self, task):
        """exit_notify(): the children go to the reaper; the parent is sent
        the exit signal (do_notify_parent: SIGCHLD, ignored by default, run
        by a handler if it has one) and a wait4 sleeper is woken; with no
        parent, init reaps at once."""
        for child in task.children:
            child.parent = None
            self.counters['orphans_reparented'] += 1
            if child.state == TASK_ZOMBIE:
                self.release_task(child)
                self.counters['reaped_by_init'] += 1
        task.children = []
        parent = task.parent
        if parent is None or not parent.alive:
            self.release_task(task)
            self.counters['reaped_by_init'] += 1
        else:
            code = CLD_KILLED if task.killed_by is not None else CLD_EXITED
            status = task.exit_status & 0x7F if code == CLD_KILLED else task.exit_status >> 8 & 0xFF
            self.k.signals.send_sig(parent, task.exit_signal, f'{task.name}/{task.pid} exited',
                                    code=code, pid=task.tgid, status=status)
            if parent.wait_chldexit is not None:
                self.k.sched.wake_up(parent.wait_chldexit)

    def release_task(self, task):
        """release_task(): the zombie is gone (nr_threads drops)."""
        task.reaped = True
        if task.parent is not None and task in task.parent.children:
            task.parent.children.remove(task)

    def sys_wait4(self, task, pid, stat_addr, options, ru):
        """sys_wait4() (2.4.18): pid > 0 that child, -1 (or a process group,
        the lab has one) any child.  Sleeps interruptibly until a child is a
        zombie; WNOHANG returns 0 instead.  Generator -> pid or -errno."""
        k = self.k
        if options & ~(WNOHANG | WUNTRACED | WALL | WCLONE):
            return -EINVAL
        if pid >= 0x80000000:
            pid -= 1 << 32
        if task.wait_chldexit is None:
            task.wait_chldexit = WaitQueue(f'wait_chldexit {task.pid}')

        def kids():
            return [c for c in task.children if pid <= 0 or c.pid == pid]

        def zombie():
            return next((c for c in kids() if c.state == TASK_ZOMBIE), None)

        while True:
            if not kids():
                return -ECHILD
            z = zombie()
            if z is not None:
                break
            if options & WNOHANG:
                return 0
            self.counters['wait4_sleeps'] += 1
            ok = yield from k.sched.wait_event_interruptible(
                task, task.wait_chldexit, lambda: zombie() is not None or not kids(),
                what=('wait4', pid))
            if not ok and k.signals.signal_pending(task):
                return -ERESTARTSYS
        if ru:
            if (yield from k.syscalls.copy_to_user(task, ru, bytes(RUSAGE_SIZE))):
                return -EFAULT
        if stat_addr:
            if (yield from k.syscalls.copy_to_user(task, stat_addr,
                                                   (z.exit_status & 0xFFFF).to_bytes(4, 'little'))):
                return -EFAULT
        self.release_task(z)
        self.counters['zombies_reaped'] += 1
        return z.pid

    def release_task_stack(self, task):
        """The dead task's kernel stack (called once nothing runs on it)."""
        if task.kstack_pfn is not None:
            self.k.page_alloc.free_pages(task.kstack_pfn, 1)
            task.kstack_pfn = None
