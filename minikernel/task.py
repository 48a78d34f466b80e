"""task_struct, kernel frames, and the requests kernel code yields.

Execution model (SimPy-style, see docs/architecture.md)
  A task's kernel-side control flow is a stack of Python generators
  (`Task.frames`).  Between two yields, Python kernel code runs atomically:
  no guest instruction executes anywhere.  It yields requests to the engine
  (minikernel/entry.py):

    Guest(routine, eax, edx, ecx)   run a guest routine (regparm(3) arguments)
                                    on this task's kernel stack; resumes the
                                    generator with the routine's EAX.
    Charge(cycles)                  the kernel spends `cycles` on this CPU.
    SwitchTo(next)                  only from schedule(): leave this task
                                    suspended here and run `next`.

  A guest routine may trap (page fault, service call, interrupt): the engine
  saves its registers in the frame and pushes the handler's generator on
  top; when the handler returns, the routine continues (or jumps to its
  exception-table fixup).  So a fault that sleeps for swap I/O in the middle
  of a guest `rep movsl` is just a generator that yields.

Frame kinds and what their return value means
  'syscall'  (from user)   EAX for the user
  'fault'    (from user)   ignored: the instruction is retried
  'kfault'   (kernel guest) None: retry; an int: continue at that fixup EIP
  'service'  (kernel guest) EAX for the guest, which continues after `int`
  'irq'      (any)          ignored: the interrupted context continues
  'main'     (kernel thread body / first entry) the task exits when it returns

Task states (Linux names): TASK_RUNNING, TASK_UNINTERRUPTIBLE, TASK_ZOMBIE.
"""

import inspect

TASK_RUNNING = 'R'
TASK_UNINTERRUPTIBLE = 'D'
TASK_ZOMBIE = 'Z'


class Guest:
    """Request: run the guest routine at `routine` (a symbol name or an
    address) with EAX, EDX, ECX = the first three arguments and `stack` the
    rest, pushed right to left (Linux's regparm(3)); `irqs` is the EFLAGS.IF
    the routine starts with.  `then`: another Guest to run once this one
    returns, as if the generator had yielded it at once and dropped this
    one's EAX (two calls of one Linux routine, switch_mm then switch_to):
    the engine calls it without resuming the generator, which gets the
    last one's EAX."""
    __slots__ = ('routine', 'eax', 'edx', 'ecx', 'irqs', 'stack', 'then')

    def __init__(self, routine, eax=0, edx=0, ecx=0, irqs=True, stack=(), then=None):
        self.routine, self.eax, self.edx, self.ecx, self.irqs = routine, eax, edx, ecx, irqs
        self.stack = stack
        self.then = then

    def __repr__(self):
        return f'Guest({self.routine}, {self.eax:#x}, {self.edx:#x}, {self.ecx:#x})'


def nosleep(fn):
    """Mark a sys_* handler that is a plain function, not a generator: it
    makes no guest call, charges nothing and cannot sleep (getpid).  The
    system call paths call it directly (Syscalls.call_nosleep, entry.py's
    fast path) instead of driving a generator."""
    if inspect.isgeneratorfunction(fn):
        raise TypeError(f'{fn.__name__}: a nosleep handler is a plain function')
    fn.nosleep = True
    return fn


class Charge:
    """Request: spend `cycles` of kernel time on this CPU (from costs.py)."""
    __slots__ = ('cycles', 'what')

    def __init__(self, cycles, what=''):
        self.cycles, self.what = cycles, what


class SwitchTo:
    """Request (schedule() only): suspend the current task here, run `next`."""
    __slots__ = ('next',)

    def __init__(self, next_task):
        self.next = next_task


class Frame:
    """One level of a task's kernel control flow."""
    __slots__ = ('gen', 'kind', 'saved', 'guest', 'value', 'throw', 'where', 'routine', 'then')

    def __init__(self, gen, kind, where=None):
        self.gen = gen          # the generator
        self.kind = kind        # see module docstring
        self.saved = None       # guest registers of the context this frame interrupted
        self.guest = False      # True while this frame's Guest request is running
        self.value = None       # value to send at the next resume
        self.throw = None       # exception to throw in at the next resume
        self.where = where      # trap eip (for reports)
        self.routine = None     # the last Guest routine this frame called
        self.then = None        # the Guest to call when the running one returns (Guest.then)


class Task:
    """A task_struct.  The guest-visible part is thread_info at the bottom of
    the 8 KiB kernel stack (see minikernel/sched.py for its layout)."""

    def __init__(self, pid, name, mm, cpu, kstack_pfn, kstack_va):
        self.pid = pid
        self.tgid = pid
        self.name = name
        self.mm = mm                # MM or None (kernel thread)
        self.active_mm = mm
        self.cpu = cpu              # the CPU it runs on (per-CPU run queues, no migration)
        self.kstack_pfn = kstack_pfn
        self.thread_info = kstack_va        # bottom of the stack
        self.kstack_top = kstack_va + 8192  # stacks grow down from here
        self.state = TASK_RUNNING
        self.frames = []            # kernel frames, innermost last
        self.uregs = None           # user registers while in the kernel (pt_regs)
        self.in_user = False        # running (or about to run) user code
        self.on_rq = False
        self.timeslice = 0
        self.keeps_place = False    # preempted by a wake-up: back right after the waker
        self.exit_code = None
        self.killed_by = None       # e.g. ('SIGSEGV', detail) once killed
        self.waiting_on = None      # what it sleeps on (for the wait-for graph)
        self.console = bytearray()  # write(1/2, ...) output
        self.files = None           # open file table
        self.kbuf_pfn = None        # a lowmem bounce page for syscall arguments
        self.program = None         # the user image it runs (for symbolizing)
        self.idle = False
        self.daemon = False         # a kernel thread that sleeps waiting for work (kswapd)
        # processes (kernel/fork.c, kernel/exit.c)
        self.parent = None          # the task that forked it (None: a child of init)
        self.children = []          # forked children not yet reaped
        self.pgrp = pid
        self.forked = False         # created by fork (its exit status is its parent's business)
        self.origin = None          # a forked task: the first ancestor that was not forked
        self.exit_status = None     # the wait status: (code << 8) or the signal number
        self.reaped = False         # released (wait4, or init for orphans and spawned tasks)
        self.wait_chldexit = None   # WaitQueue its wait4 sleeps on (made at first use)
        self.interruptible = False  # sleeping in TASK_INTERRUPTIBLE: a fatal signal wakes it
        self.clear_child_tid = 0
        # signals (minikernel/signal.py)
        self.sigactions = {}        # signal -> the 20-byte struct sigaction of rt_sigaction
        self.sigmask = 0            # blocked signals (bit sig-1)
        self.sigpending = 0         # pending signals that have a handler
        self.siginfo = {}           # signal -> (si_code, si_pid, si_status) of the pending one
        self.saved_sigmask = None   # the mask sigsuspend replaced, restored by the handler's sigreturn
        self.orig_eax = -1          # the system call being returned from (restart), -1: none
        self.sigsuspend_wq = None   # WaitQueue rt_sigsuspend sleeps on (made at first use)
        self.exit_signal = 17       # SIGCHLD: what the parent is sent at exit (clone's CSIGNAL)
        self.counters = dict(syscalls=0, faults=0, sleeps=0, switches=0, instructions=0)

    def __repr__(self):
        return f'<Task {self.pid} {self.name} {self.state}>'

    @property
    def alive(self):
        return self.state != TASK_ZOMBIE
