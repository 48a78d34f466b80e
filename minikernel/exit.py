"""Task exit: do_exit, and the release of what a dead task held.

Mirrors kernel/exit.c (2.5).  A task exits by calling exit(2), by a fatal
signal delivered at the return to user mode (SIGSEGV, SIGKILL from the OOM
killer), or by dying in the kernel (Oops, BUG).

Rules
  - do_exit never returns: it marks the task TASK_ZOMBIE and schedules away;
    the kernel stack is freed at the switch (it is still in use until then).
  - The mm is released when its last user exits (mmput -> exit_mmap).
  - Locks a dying task holds are NOT released (Linux does not either): a
    task that dies holding mmap_sem leaves it held, and the deadlock
    detector will say so.
"""
from .task import TASK_ZOMBIE


class Exit:
    def __init__(self, kernel):
        self.k = kernel
        self.exited = []          # (pid, name, code, killed_by)

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
        task.state = TASK_ZOMBIE
        k.engine.account(k.machine.cpus[task.cpu], task)
        self.exited.append((task.pid, task.name, code, task.killed_by))
        k.task_exited(task)
        while True:
            yield from k.sched.schedule(task)

    def release_task_stack(self, task):
        """The dead task's kernel stack (called once nothing runs on it)."""
        if task.kstack_pfn is not None:
            self.k.page_alloc.free_pages(task.kstack_pfn, 1)
            task.kstack_pfn = None
