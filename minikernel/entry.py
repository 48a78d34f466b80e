"""The engine: runs tasks on CPUs, turns traps into kernel frames.

Mirrors arch/i386/kernel/entry.S and traps.c in role: system_call,
page_fault, the interrupt entry, ret_from_intr / ret_from_sys_call,
restore_all.  It is the machine's driver: vm.Machine calls step(cpu, budget).

Invariants
  - A task is in exactly one of: user mode (no frames, task.in_user), kernel
    guest code (top frame has .guest set and is the one running), or kernel
    Python code (top frame ready to be resumed with .value/.throw).
  - A guest context that a trap interrupted is saved in the new frame's
    .saved and restored, exactly, when that frame returns: nothing else
    writes the CPU's registers.
  - User registers live in task.uregs while the task is in the kernel (with
    %fs and %gs, read at every entry); the way back to user mode is the
    guest `restore_all` stub (pop, segment reloads with fixups, iretd).
  - Only schedule() switches tasks (SwitchTo), so every switch goes through
    the guest __switch_to and switch_mm code.
"""
import functools

from .bug import KernelBug
from .task import Charge, Frame, Guest, SwitchTo, TASK_ZOMBIE

# pt_regs, as on i386 2.6.29 (arch/x86/include/asm/ptrace.h: 2.4's layout plus
# fs and gs, which hold the TLS selectors); restore_all pops it.
PT_REGS = ('ebx', 'ecx', 'edx', 'esi', 'edi', 'ebp', 'eax', 'ds', 'es', 'fs', 'gs', 'orig_eax',
           'eip', 'cs', 'eflags', 'esp', 'ss')
PT_REGS_SIZE = 4 * len(PT_REGS)
assert PT_REGS == ('ebx', 'ecx', 'edx', 'esi', 'edi', 'ebp', 'eax', 'ds', 'es', 'fs', 'gs',
                   'orig_eax', 'eip', 'cs', 'eflags', 'esp', 'ss')      # return_to_user's order
RED_ZONE = 64          # room for the "hardware" frame under an interrupted context

KRET_VECTOR = 0x82     # `int 0x82` in ret_to_python: a Guest() routine returned
KSVC_VECTOR = 0x81     # `int 0x81`: a kernel service call from guest asm
SYSCALL_VECTOR = 0x80

USER_CS, USER_DS = 0x23, 0x2B


class Engine:
    def __init__(self, kernel):
        self.k = kernel
        self.m = kernel.machine
        self._since = [0] * len(kernel.machine.cpus)   # instructions at the last switch
        # Per CPU: kernel Python code runs with interrupts off (schedule()'s
        # spin_lock_irq(&rq->lock) up to the switch).
        self.irqs_off = [False] * len(kernel.machine.cpus)
        self._symbols = kernel.image.symbols
        self._ret_to_python = kernel.symbol('ret_to_python')
        self._restore_all = kernel.symbol('restore_all')
        self.fast_syscalls = True      # _system_call's fast path (off: every call in a frame, for comparison)
        self.fast_taken = 0            # system calls that took it
        # fn(cpu, routine) or None: called as a Guest() routine's `int` in
        # ret_to_python hands its result back, before the frame takes it
        # (kmaplab/explore.py's ret: points; a code hook there would cost a
        # Python callback from Unicorn on every return)
        self.ret_hook = None
        self._chain_at = None          # (cpu, task, frame, step end) of the run _chain answers for
        self.chain_in_c = True         # chained routines started from vm/_run.c (off: by _advance, for comparison)
        self.chained = 0               # routines _chain started

    @functools.cached_property
    def _watchdog_last(self):
        """Checks' watchdog.last (each CPU's last return to Python; the
        checks are made after the engine)."""
        return self.k.checks.watchdog.last

    # ---- the driver interface (vm.Machine.run) --------------------------

    def step(self, cpu, budget):
        """Run `cpu` for up to `budget` cycles of simulated time."""
        m, i = self.m, cpu.index
        time_, current, pending = m.time, self.k.sched.current, m.pending
        end = time_(i) + budget
        while m.stopped is None and not m.yield_cpu:      # yield_cpu: a scheduling point ended the run
            now = time_(i)
            if now >= end:
                # the machine's run-ahead (1 CPU): its loop would only
                # start the next step here; 0: back to the loop
                end = m.ahead is not None and m.ahead_end(i, now)
                if not end:
                    return
            task = current[i]
            frames = task.frames
            top = frames[-1] if frames else None
            if task.in_user or (top is not None and top.guest):
                end = self._run_guest(cpu, task, end - now, end, top)
                if not end:
                    return
            elif top is None:
                raise KernelBug(f'{task} has no kernel frame and is not in user mode')
            else:
                if pending[i]:                  # _maybe_interrupt's first test, without the call
                    self._maybe_interrupt(cpu, task)
                self._advance(cpu, task)

    # ---- guest execution and traps ---------------------------------------

    def _run_guest(self, cpu, task, budget, end, top):
        """Run guest code; returns the step's end in this CPU's time
        (`end`, or later where the machine's run-ahead crossed a quantum
        boundary: vm/machine.py), 0 when this CPU's step should end.
        `top`: the task's top frame (None in user mode); a routine of it
        with a chain (Guest.then) runs with _chain as the run's then."""
        if top is not None and top.then is not None and not task.in_user and self.chain_in_c:
            self._chain_at = (cpu, task, top, end)
            trap = cpu.run(budget, self._chain)
        else:
            trap = cpu.run(budget)
        m = self.m
        if m.ahead is not None:
            end = m.ahead.ahead_end
        kind = trap.kind
        if kind == 'quantum' or kind == 'hlt':
            return 0
        if kind == 'irq':
            self._take_irq(cpu, task)
            return end
        # back in Python: progress (Checks.touch_watchdog, without the call)
        i = cpu.index
        self._watchdog_last[i] = now = m.time(i)
        user = trap.cpl == 3
        if user and kind == 'int' and trap.vector == SYSCALL_VECTOR:
            self._system_call(cpu, task, now, end)
            return end
        if kind == 'int' and not user:
            if trap.vector == KRET_VECTOR:
                top = task.frames[-1]
                if self.ret_hook is not None:
                    self.ret_hook(cpu, top.routine)
                top.guest = False
                top.value = cpu.regs['eax']
                return end
            if trap.vector == KSVC_VECTOR:
                regs = dict(cpu.regs)
                self._push(task, self.k.services.dispatch(task, regs), 'service', regs, trap.eip)
                return end
        if user:
            self._enter_from_user(cpu, task, trap)
        else:
            self._kernel_trap(cpu, task, trap)
        return end

    def _chain(self, trap):
        """vm/_run.c asks at the stop of a routine whose frame has a chain
        (Guest.then): if the step would go on from this stop straight to
        the chain's next routine, its entry (budget, then enter_frame's
        arguments), else None (the stop comes back to _run_guest as any).
        The same steps as that way: the return (`int KRET_VECTOR` in ring
        0; the watchdog), the step loop's checks (stop, scheduling point,
        end of step or run-ahead, an interrupt pending: left to Python),
        _advance's chain branch and _call_guest."""
        if trap.kind != 'int' or trap.cpl or trap.vector != KRET_VECTOR or self.ret_hook is not None:
            return None                 # (a ret_hook: the return goes through _run_guest)
        cpu, task, f, end = self._chain_at
        m, i = self.m, cpu.index
        now = m.time(i)
        if m.stopped is not None or m.yield_cpu or m.pending[i]:
            return None
        ahead = m.ahead
        if ahead is not None:
            end = ahead.ahead_end
        if now >= end:
            end = ahead is not None and m.ahead_end(i, now)
            if not end:
                return None
        self._watchdog_last[i] = now
        req = f.then
        f.then = None
        self.chained += 1
        return (end - now,) + self._guest_entry(task, f, req)

    def _enter_from_user(self, cpu, task, trap):
        """A trap from ring 3 other than a system call: save pt_regs, push
        the handler's frame."""
        task.uregs = dict(cpu.regs)
        task.in_user = False
        k = self.k
        if trap.kind == 'pf':
            task.counters['faults'] += 1
            gen = k.mm.do_page_fault(task, trap.cr2, trap.error, trap.eip)
        else:
            gen = k.traps.user_trap(task, trap)
        self._push(task, k.traps.from_user(task, gen, 'fault'), 'fault', None, trap.eip)

    def _system_call(self, cpu, task, now, end):
        """`int 0x80` from ring 3 (system_call): save pt_regs, push the
        system call's frame; or, for a handler that cannot sleep
        (Syscalls.nosleep: no guest call, no request), run it at once
        instead of as a frame: the same steps in the same order as the
        frame path (from_user's syscall_entry charge, orig_eax,
        Syscalls.call_nosleep, the ret_from_sys_call checks, restore_all),
        taken only where the frame path would reach them with nothing in
        between: the step would go on (not stopped, no yield_cpu, time
        left: `now` is this CPU's time, `end` the step's end) and no
        interrupt is pending (_maybe_interrupt would take it first).
        Linux's own fast path: no work flag set -> restore_all.  Work to do
        (a kill, need_resched, a signal) goes on in a frame
        (Traps.from_user without a handler), advanced at once, as the frame
        path would.  fast_taken counts the fast path's calls."""
        task.uregs = u = dict(cpu.regs)
        task.in_user = False
        k, m, i = self.k, self.m, cpu.index
        task.counters['syscalls'] += 1
        cpu.counters['syscalls'] += 1
        fn = k.syscalls.nosleep.get(u['eax'])
        if fn is None or not self.fast_syscalls or m.stopped is not None or m.yield_cpu or \
                m.pending[i] or now >= end:
            self._push(task, k.traps.from_user(task, k.syscalls.system_call(task, u), 'syscall'), 'syscall',
                       None, u['eip'])
            return
        self.fast_taken += 1
        m.charge(i, k.costs['syscall_entry'])
        task.orig_eax = u['eax']
        value = k.syscalls.call_nosleep(task, u, fn)
        if task.killed_by is not None or k.sched.need_resched(task) or \
                k.signals.work_pending(task, 'syscall', value):
            self._push(task, k.traps.from_user(task, None, 'syscall', value), 'syscall', None, u['eip'])
            self._advance(cpu, task)
            return
        u['eax'] = (value or 0) & 0xFFFFFFFF
        self.return_to_user(cpu, task)

    def _kernel_trap(self, cpu, task, trap):
        """A trap in kernel guest code: a fault to handle, or a kernel bug.
        A trap in restore_all (the task is already marked in_user: a segment
        reload that faults, sent to its fixup) is handled like any other;
        the way back into restore_all marks the task in_user again."""
        regs = dict(cpu.regs)
        if task.in_user:
            task.in_user = False
            regs['to_user'] = True
        if trap.kind == 'pf':
            gen = self.k.mm.do_page_fault(task, trap.cr2, trap.error, trap.eip, regs)
            self._push(task, gen, 'kfault', regs, trap.eip)
        else:
            self._push(task, self.k.traps.kernel_trap(task, trap, regs), 'kfault', regs, trap.eip)

    def _take_irq(self, cpu, task):
        """Deliver the highest pending vector: from user mode, from kernel
        guest code (its registers saved in the frame), or at a yield of
        kernel Python code (nothing to save)."""
        vector = self.m.next_irq(cpu.index)
        if vector is None:
            return
        irq = self.k.irq
        if task.in_user:
            task.uregs = dict(cpu.regs)
            task.in_user = False
            gen = self.k.traps.from_user(task, irq.do_IRQ(task, vector), 'irq')
            self._push(task, gen, 'irq', None, cpu.regs['eip'])
        elif task.frames[-1].guest:
            regs = dict(cpu.regs)
            self._push(task, irq.irq_frame(task, vector, regs), 'irq', regs, regs['eip'])
        else:
            self._push(task, irq.irq_frame(task, vector, None), 'irq', None, None)

    def _maybe_interrupt(self, cpu, task):
        """Kernel Python code runs with the interrupt flag of the context it
        came from: take a pending interrupt at this yield boundary if that
        flag is set (as the guest would at a block boundary), unless the CPU
        is inside a context switch (irqs_off)."""
        if not self.m.pending[cpu.index] or task.frames[-1].kind == 'irq' or self.irqs_off[cpu.index]:
            return
        for f in reversed(task.frames):
            if f.saved is not None:
                if not f.saved['eflags'] & 0x200:
                    return
                break
        self._take_irq(cpu, task)

    def _push(self, task, gen, kind, saved, where):
        f = Frame(gen, kind, where)
        f.saved = saved
        task.frames.append(f)

    # ---- advancing kernel Python code -------------------------------------

    def _advance(self, cpu, task):
        """Resume the top frame's generator until it asks for something the
        machine must do (a guest call, a switch) or returns.  Charges are
        applied on the spot: a Charge is time passing on this CPU, not a
        point where anything else could run (interrupts are taken at the
        next boundary of the step loop)."""
        f = task.frames[-1]
        value, exc = f.value, f.throw
        f.value = f.throw = None
        req = f.then
        if req is not None:             # the rest of a chain (Guest.then): asked for already
            f.then = None
            if exc is None:
                self._call_guest(cpu, task, f, req)
                return
        gen, charge, i = f.gen, self.m.charge, cpu.index
        try:
            req = gen.throw(exc) if exc is not None else gen.send(value)
            while type(req) is Charge:
                charge(i, req.cycles)
                req = gen.send(None)
        except StopIteration as stop:
            task.frames.pop()
            self._frame_done(cpu, task, f, stop.value)
            return
        if type(req) is Guest:
            self._call_guest(cpu, task, f, req)
        elif type(req) is SwitchTo:
            self._switch(cpu, task, req.next)
        else:
            code = gen.gi_code
            raise KernelBug(f'{code.co_filename}:{gen.gi_frame.f_lineno if gen.gi_frame else "?"}: '
                            f'kernel code yielded {req!r}, not a request')

    def _call_guest(self, cpu, task, frame, req):
        cpu.enter_frame(*self._guest_entry(task, frame, req))

    def _guest_entry(self, task, frame, req):
        """The Guest request `req` of `frame` as enter_frame's arguments
        (the frame marked as running it)."""
        k = self.k
        routine, stack = req.routine, req.stack
        addr = self._symbols.get(routine) if isinstance(routine, str) else routine
        if addr is None:
            addr = k.symbol(routine)                  # KernelBug: no such symbol
        # where the call's stack starts: under the innermost interrupted
        # guest context, else under pt_regs
        for f in reversed(task.frames):
            if f.saved is not None:
                esp = f.saved['esp'] - RED_ZONE
                break
        else:
            esp = task.kstack_top - PT_REGS_SIZE - 16
        if esp - task.thread_info < 1024:
            raise KernelBug(f'kernel stack overflow in {task}')
        esp = (esp & ~3) - 4 * (len(stack) + 1)
        frame.guest = True
        frame.routine = routine
        frame.then = req.then
        # the entry, then the return address (ret_to_python) and the stack arguments
        return (addr, esp, 0x202 if req.irqs else 0x002, req.eax, req.edx, req.ecx,
                esp - k.PAGE_OFFSET, self._ret_to_python) + tuple(stack)

    def _switch(self, cpu, prev, next_task):
        """The switch itself; interrupts are on again once `next_task` is
        current (finish_task_switch's spin_unlock_irq(&rq->lock))."""
        sched = self.k.sched
        self.account(cpu, prev)
        sched.current[cpu.index] = next_task
        self.irqs_off[cpu.index] = False
        next_task.counters['switches'] += 1
        self.k.set_user_code(cpu, next_task)

    def account(self, cpu, task):
        """Credit the instructions the CPU retired since the last switch to
        `task` (per-task instruction counts)."""
        now = cpu.k.executed
        task.counters['instructions'] += now - self._since[cpu.index]
        self._since[cpu.index] = now

    def _frame_done(self, cpu, task, f, value):
        kind = f.kind
        if kind == 'main':
            raise KernelBug(f'{task}: the main frame returned (it must end in do_exit)')
        if task.state == TASK_ZOMBIE:
            return
        if f.saved is not None:                # back into interrupted guest code
            regs = f.saved
            if kind == 'kfault' and value is not None:
                regs = dict(regs, eip=value)
            elif kind == 'service':
                regs = dict(regs, eax=(value or 0) & 0xFFFFFFFF)
            cpu.resume(regs)
            if regs.get('to_user'):
                task.in_user = True
            return
        if task.frames:                        # an interrupt taken at a Python yield
            if kind != 'irq':
                raise KernelBug(f'{task}: a {kind} frame returned into Python kernel code')
            return
        if kind == 'syscall':
            task.uregs['eax'] = (value or 0) & 0xFFFFFFFF
        self.return_to_user(cpu, task)

    def return_to_user(self, cpu, task):
        """restore_all: write pt_regs under the stack top and iret through
        the guest stub."""
        u = task.uregs
        g = u.get
        eax = g('eax', 0)
        base = task.kstack_top - PT_REGS_SIZE
        # PT_REGS order (each word taken mod 2**32); orig_eax = eax, the
        # segments the user ones
        cpu.enter_frame(self._restore_all, base, 0x002, 0, 0, 0, base - self.k.PAGE_OFFSET,
                        u['ebx'], u['ecx'], u['edx'], u['esi'], u['edi'], u['ebp'], eax,
                        USER_DS, USER_DS, g('fs', 0), g('gs', 0), eax, u['eip'], USER_CS,
                        u['eflags'], u['esp'], USER_DS)
        task.in_user = True
