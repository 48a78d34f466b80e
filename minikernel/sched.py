"""Tasks, per-CPU run queues, schedule(), wait queues, preemption.

Mirrors kernel/sched.c of 2.5 (O(1) era) in shape, kept simple: one FIFO run
queue per CPU, a fixed time slice, no load balancing (a task stays on the
CPU it was created on; scenarios pin tasks with `cpu=`).

thread_info (include/asm-i386/thread_info.h, 2.5), at the bottom of each
8 KiB kernel stack, read and written by guest asm (GET_THREAD_INFO is
`esp & ~8191`); offsets are also in the kernel image's defines:
    0  task           pid of the owning task
    4  exec_domain    (unused, 0)
    8  flags          TIF_* bits (TIF_NEED_RESCHED = 3)
   12  status
   16  cpu
   20  preempt_count  >0: atomic context (kmap_atomic raises it, 2.5.34)
   24  pagefault_disabled  >0: faults go to the fixup (2.6.20 pagefault_disable;
                  access_ok uses PAGE_OFFSET, so addr_limit's slot is free)
   28  kmap_idx       kmap_local stack depth (v5.11 kmap_ctrl.idx)
   32  kmap_pteval[16]  the PTEs of this task's local mappings
  After thread_info, in the same 8 KiB block (2.4 keeps its whole
  task_struct, thread_struct included, there; these are 2.6's
  thread_struct fields):
   96  tls_array[3]   the TLS descriptors (GDT entries 6-8), desc_struct
                  {a, b} each; load_TLS copies them into the CPU's GDT
  120  fpu_initialized  nonzero: a user context whose x87/SSE state is
                  switched (v4.14 fpu->initialized; 0 for kernel threads)
  124  fpu_last_cpu   the CPU whose registers still hold this state, or -1
                  (v4.14 fpu->last_cpu)
  128  fpu_state      512 bytes, 16-aligned: the fxsave image (v4.14
                  fpu->state.fxsave)
  640  (end)

Rules
  - schedule() is the only place a task switch happens; it runs the guest's
    switch_mm and __switch_to, then yields SwitchTo.
  - "BUG: scheduling while atomic" is checked on every schedule() from a
    context with preempt_count > 0 and reported (with the guest EIP that got
    us here), then the switch happens anyway, as in 2.5/2.6.
  - Sleeping: prepare_to_wait (task on the queue, state D), re-check the
    condition, schedule(), finish_wait.  Python steps are atomic, so no
    wake-up can be lost between the check and the sleep.
"""
from collections import deque

from .bug import KernelBug
from .task import Guest, SwitchTo, Task, TASK_RUNNING, TASK_UNINTERRUPTIBLE, TASK_ZOMBIE

TI_TASK = 0
TI_FLAGS = 8
TI_CPU = 16
TI_PREEMPT_COUNT = 20
# preempt_count's fields (include/asm-i386/hardirq.h, 2.5/2.6.0): bits 0-7
# the preemption count, 8-15 softirq, 16-23 hardirq (irq_enter adds
# HARDIRQ_OFFSET); in_interrupt() is any of softirq/hardirq; PREEMPT_ACTIVE
# marks a task inside preempt_schedule().
SOFTIRQ_OFFSET = 1 << 8
HARDIRQ_OFFSET = 1 << 16
IRQ_MASK = 0x00FFFF00               # SOFTIRQ_MASK | HARDIRQ_MASK: in_interrupt()
PREEMPT_ACTIVE = 0x4000000
TI_PAGEFAULT_DISABLED = 24
TI_KMAP_IDX = 28
TI_KMAP_PTEVAL = 32
TI_TLS_ARRAY = 96
TI_FPU_INITIALIZED = 120
TI_FPU_LAST_CPU = 124
TI_FPU_STATE = 128
FPU_STATE_SIZE = 512
TI_SIZE = 640
TIF_NEED_RESCHED = 3

MIGHT_SLEEP_REPORTS = 10       # BUG reports filed per kind (sleep in atomic, might_sleep);
                               # every occurrence is counted


class WaitQueue:
    """wait_queue_head_t.  `guest_word`, if given, is the physical address of
    a u32 kept equal to the number of waiters, so guest asm can test
    waitqueue_active() without a service call."""

    def __init__(self, name, kernel=None, guest_word=None):
        self.name = name
        self.tasks = []
        self.k = kernel
        self.guest_word = guest_word

    def add(self, task):
        if task not in self.tasks:
            self.tasks.append(task)
            self._sync()

    def remove(self, task):
        if task in self.tasks:
            self.tasks.remove(task)
            self._sync()

    def _sync(self):
        if self.guest_word is not None:
            self.k.machine.write32(self.guest_word, len(self.tasks))

    def __repr__(self):
        return f'<wq {self.name}: {len(self.tasks)} waiting>'


class Scheduler:
    def __init__(self, kernel, ncpus):
        self.k = kernel
        self.rq = [deque() for _ in range(ncpus)]
        self.current = [None] * ncpus
        self.idle = [None] * ncpus
        self.tasks = {}               # pid -> Task
        self.next_pid = 1
        self._m = kernel.machine                       # read_ti / write_ti: its ram_words
        self._ti_base = kernel.PAGE_OFFSET
        self.counters = dict(context_switches=0, wakeups=0, wakeup_preemptions=0, preemptions=0,
                             sleep_in_atomic_bugs=0, might_sleep_bugs=0,
                             switches_in_kmap_local=0)

    # ---- task creation ------------------------------------------------

    def new_task(self, name, mm, cpu, idle=False, may_fail=False):
        """Allocate the kernel stack (order 1, lowmem) and thread_info.
        With may_fail (fork), None when lowmem has no two free pages."""
        k = self.k
        pfn = k.page_alloc.alloc_pages_fast(k.gfp.GFP_KERNEL, 1)
        if pfn is None:
            if may_fail:
                return None
            raise KernelBug('out of lowmem for a kernel stack')
        ti_va = k.PAGE_OFFSET + (pfn << 12)
        k.machine.write((pfn << 12), bytes(8192))
        if idle:
            pid = 0
        else:
            pid = self.next_pid
            self.next_pid += 1
        task = Task(pid, name, mm, cpu, pfn, ti_va)
        task.idle = idle
        task.timeslice = k.config['timeslice']
        self.write_ti(task, TI_TASK, pid)
        self.write_ti(task, TI_CPU, cpu)
        self.write_ti(task, TI_FPU_LAST_CPU, 0xFFFFFFFF)    # no FPU state until exec/clone
        if not idle:
            self.tasks[pid] = task
        return task

    def forget_task(self, task):
        """A task that never ran (a failed fork): free its stack, drop it."""
        self.tasks.pop(task.pid, None)
        task.reaped = True
        self.k.page_alloc.free_pages(task.kstack_pfn, 1)
        task.kstack_pfn = None

    # thread_info words: thread_info is page aligned in lowmem and every TI_*
    # offset is a multiple of 4, so each is one index into the machine's
    # 32-bit view of RAM (Machine.read32/write32's aligned case, without
    # the call); another offset goes through read32/write32.

    def write_ti(self, task, off, value):
        if off & 3:
            self.k.machine.write32(task.thread_info - self.k.PAGE_OFFSET + off, value)
        else:
            self._m.ram_words[(task.thread_info - self._ti_base + off) >> 2] = value & 0xFFFFFFFF

    def read_ti(self, task, off):
        if off & 3:
            return self.k.machine.read32(task.thread_info - self.k.PAGE_OFFSET + off)
        return self._m.ram_words[(task.thread_info - self._ti_base + off) >> 2]

    def need_resched(self, task):
        return bool(self._m.ram_words[(task.thread_info - self._ti_base + TI_FLAGS) >> 2] & (1 << TIF_NEED_RESCHED))

    def set_need_resched(self, task):
        words, j = self._m.ram_words, (task.thread_info - self._ti_base + TI_FLAGS) >> 2
        words[j] = words[j] | (1 << TIF_NEED_RESCHED)

    def clear_need_resched(self, task):
        words, j = self._m.ram_words, (task.thread_info - self._ti_base + TI_FLAGS) >> 2
        words[j] = words[j] & ~(1 << TIF_NEED_RESCHED)

    def add_preempt_count(self, task, delta):
        """preempt_count() += delta: one word of thread_info (8 KiB aligned),
        read and written through the machine's 32-bit view of RAM (what
        read_ti/write_ti do, without their calls: spinlocks take this path)."""
        k = self.k
        words = k.machine.ram_words
        i = (task.thread_info - k.PAGE_OFFSET + TI_PREEMPT_COUNT) >> 2
        words[i] = (words[i] + delta) & 0xFFFFFFFF

    def pagefault_disabled(self, task):
        return self.read_ti(task, TI_PAGEFAULT_DISABLED) != 0

    def in_atomic(self, task):
        """in_atomic() || pagefault_disabled(): what do_page_fault checks
        before it may sleep."""
        return self.preempt_count(task) > 0 or self.pagefault_disabled(task)

    def preempt_count(self, task):
        v = self.read_ti(task, TI_PREEMPT_COUNT)
        return v - (1 << 32) if v & 0x80000000 else v

    def preempt_active(self, task):
        return bool(self.read_ti(task, TI_PREEMPT_COUNT) & PREEMPT_ACTIVE)

    def preempt_schedule(self, task):
        """preempt_schedule() (2.5.34 kernel/sched.c): the caller checked
        preempt_count 0 with interrupts on.  preempt_count is PREEMPT_ACTIVE
        across schedule(), so a task preempted after it set its state to
        sleep (between prepare_to_wait and its own schedule()) stays on the
        run queue; again while TIF_NEED_RESCHED is set.  Generator."""
        while True:
            self.add_preempt_count(task, PREEMPT_ACTIVE)
            yield from self.schedule(task)
            self.add_preempt_count(task, -PREEMPT_ACTIVE)
            if not self.need_resched(task):
                return

    def start(self, task):
        """Make a new task runnable on its CPU."""
        task.state = TASK_RUNNING
        self._enqueue(task)
        self._kick(task.cpu)

    # ---- wake-ups -------------------------------------------------------

    def wake_up(self, wq):
        """wake_up(): every task sleeping on `wq` becomes runnable."""
        for t in list(wq.tasks):
            self.wake_up_process(t)

    def wake_up_process(self, task):
        """try_to_wake_up(): runnable again, on its own CPU's queue; that CPU
        is told to reschedule (an IPI if it is another CPU) if it is idle,
        or if the woken task should preempt what runs there."""
        if task.state != TASK_UNINTERRUPTIBLE:
            return
        self.k.trace_event('wakeup', task=task, was_waiting_on=task.waiting_on)
        task.state = TASK_RUNNING
        task.waiting_on = None
        self.counters['wakeups'] += 1
        if self.current[task.cpu] is not task:
            self._enqueue(task)
            self._kick(task.cpu, task)

    def _enqueue(self, task):
        if not task.on_rq and not task.idle:
            self.rq[task.cpu].append(task)
            task.on_rq = True

    def _kick(self, cpu, woken=None):
        """reschedule_idle() (2.4): an idle CPU, or one whose task is going
        to sleep, reschedules; so does one whose task has less of its time
        slice left than the task just woken (preemption_goodness: the
        sleeper kept its slice, the CPU hog used it up): the woken task
        runs next, and the one it preempts right after it (2.5's O(1)
        scheduler keeps it in the active array; a task whose slice ran out
        goes to the back).  With slices no longer than a tick (the default) every
        slice is full, and a wake-up never preempts."""
        cur = self.current[cpu]
        if cur is None:
            return
        if cur.idle or cur.state != TASK_RUNNING:
            self.set_need_resched(cur)
            self.k.irq.send_reschedule(cpu)
        elif woken is not None and woken.timeslice > cur.timeslice:
            rq = self.rq[cpu]
            rq.remove(woken)
            rq.appendleft(woken)
            cur.keeps_place = True
            self.counters['wakeup_preemptions'] += 1
            self.set_need_resched(cur)
            self.k.irq.send_reschedule(cpu)

    # ---- sleeping -------------------------------------------------------

    def prepare_to_wait(self, task, wq, what=None):
        wq.add(task)
        task.state = TASK_UNINTERRUPTIBLE
        task.waiting_on = what if what is not None else wq

    def finish_wait(self, task, wq):
        task.state = TASK_RUNNING
        task.waiting_on = None
        wq.remove(task)

    def wait_event_interruptible(self, task, wq, cond, what=None):
        """wait_event_interruptible(): as wait_event, but a signal wakes the
        task too (a fatal one, or a pending unblocked one with a handler:
        signal_pending).  Generator -> True if cond() holds, False if
        interrupted (the caller returns -ERESTARTSYS or -EINTR)."""
        pending = self.k.signals.signal_pending
        task.interruptible = True
        try:
            yield from self.wait_event(task, wq, lambda: cond() or pending(task), what)
        finally:
            task.interruptible = False
        return bool(cond())

    def wait_event(self, task, wq, cond, what=None):
        """wait_event(): sleep on `wq` until cond() holds.  Generator."""
        while not cond():
            self.prepare_to_wait(task, wq, what)
            if cond():
                self.finish_wait(task, wq)
                break
            task.counters['sleeps'] += 1
            yield from self.schedule(task)
            self.finish_wait(task, wq)

    # ---- schedule -------------------------------------------------------

    def schedule(self, task):
        """schedule(): pick the next task on this CPU and switch to it.
        Generator; returns when `task` runs again (never, if it is dead)."""
        cpu = task.cpu
        pc = self.read_ti(task, TI_PREEMPT_COUNT)        # preempt_count(), read once
        preempted = bool(pc & PREEMPT_ACTIVE)
        if not task.idle and pc & ~PREEMPT_ACTIVE and task.state != TASK_ZOMBIE:
            self._sleep_in_atomic(task)
        self.k.machine.charge(cpu, self.k.costs['schedule'])    # on the spot, as _advance would
        rq = self.rq[cpu]
        self.clear_need_resched(task)
        # 2.5.34: `if (prev->state != TASK_RUNNING && !(preempt_count() &
        # PREEMPT_ACTIVE)) deactivate_task(prev)`: a preempted task stays
        # queued whatever its state (it has not reached its own schedule())
        if (task.state == TASK_RUNNING or preempted and task.state != TASK_ZOMBIE) \
                and not task.idle and not task.on_rq:
            if task.keeps_place:            # its slice is not used up: next after the waker
                rq.insert(min(1, len(rq)), task)
            else:
                rq.append(task)
            task.on_rq = True
        task.keeps_place = False
        nxt = rq.popleft() if rq else self.idle[cpu]
        nxt.on_rq = False
        if nxt is task:
            return
        yield from self.context_switch(task, nxt)

    def context_switch(self, prev, nxt):
        """switch_mm (lazy TLB for kernel threads) + __switch_to, in guest
        code, with interrupts off from here to the switch (schedule() holds
        rq->lock with spin_lock_irq in Linux): an interrupt taken between the
        two guest calls would schedule again in the middle of this switch."""
        k = self.k
        cpu = prev.cpu
        k.engine.irqs_off[cpu] = True
        self.counters['context_switches'] += 1
        if self.read_ti(prev, TI_KMAP_IDX):
            self.counters['switches_in_kmap_local'] += 1      # prev holds local kmaps
        if k.tracer is not None or k.point_hook is not None:
            k.trace_event('context_switch', task=prev, next=f'{nxt.name}/{nxt.pid}', prev_state=prev.state,
                          waits_on=prev.waiting_on)
        prev_mm = prev.active_mm
        # switch_mm (or enter_lazy_tlb) then __switch_to, one request: the
        # engine calls the second as the first returns (Guest.then), as
        # context_switch calls both with nothing in between
        switch_to = Guest('__switch_to', prev.thread_info, nxt.thread_info, irqs=False)
        if nxt.mm is None:
            nxt.active_mm = prev_mm               # enter_lazy_tlb
            if prev_mm is not None:
                switch_to = Guest('enter_lazy_tlb', prev_mm.guest, 0, cpu, irqs=False, then=switch_to)
        else:
            nxt.active_mm = nxt.mm
            switch_to = Guest('switch_mm', prev_mm.guest if prev_mm else 0, nxt.mm.guest, cpu, irqs=False,
                              then=switch_to)
        yield switch_to
        # Atomic from here to the switch.  prev may have been woken while the
        # guest code above ran (it was current, so not queued): queue it now.
        if (prev.state == TASK_RUNNING or self.preempt_active(prev) and prev.state != TASK_ZOMBIE) \
                and not prev.idle and not prev.on_rq:
            self._enqueue(prev)
            if nxt.idle:
                self.set_need_resched(nxt)
        if prev.state == TASK_ZOMBIE:
            k.exit.release_task_stack(prev)
        yield SwitchTo(nxt)

    def might_sleep(self, task, where):
        """__might_sleep() (2.5.x): a routine that may sleep was called with
        the preempt count raised (inside kmap_atomic, under a spinlock).
        Reported as "BUG: sleeping function called from invalid context";
        execution goes on, as in Linux.  Never sleeps."""
        # preempt_count(): an aligned word of thread_info (every down_read
        # and lock_page asks: read it without read_ti's calls)
        v = self._m.ram_words[(task.thread_info - self._ti_base + TI_PREEMPT_COUNT) >> 2]
        if v == 0 or v & 0x80000000 or task.idle:      # count <= 0
            return
        count = v
        self.counters['might_sleep_bugs'] += 1
        if self.counters['might_sleep_bugs'] > MIGHT_SLEEP_REPORTS:
            return                                  # counted, not reported again
        eip = next((f.saved['eip'] for f in reversed(task.frames) if f.saved is not None), None)
        ctx = f' (guest context {self.k.describe(eip)})' if eip is not None else ''
        self.k.report('bug', f'BUG: sleeping function called from invalid context at {where}: '
                             f'in_atomic():1 (preempt_count {count:#x}), {task.name}/{task.pid} '
                             f'on CPU{task.cpu}{ctx}', task=task)

    def _sleep_in_atomic(self, task):
        """2.6's "BUG: scheduling while atomic: comm/pid/0x%08x", reported with
        the guest context that led here and the CPU."""
        self.counters['sleep_in_atomic_bugs'] += 1
        if self.counters['sleep_in_atomic_bugs'] > MIGHT_SLEEP_REPORTS:
            return                                  # counted, not reported again
        eip = None
        for f in reversed(task.frames):
            if f.saved is not None:
                eip = f.saved['eip']
                break
        where = self.k.describe(eip) if eip is not None else 'kernel Python code'
        self.k.report('bug', f'BUG: scheduling while atomic: {task.name}/{task.pid}/'
                      f'0x{self.preempt_count(task) & 0xFFFFFFFF:08x} on CPU{task.cpu}, '
                      f'at {where}', task=task)

    # ---- timer ----------------------------------------------------------

    def scheduler_tick(self, task, period):
        """Charge the tick to the running task's slice; when it runs out,
        need_resched (acted on at return to user, or in the kernel with
        preempt=full when preempt_count is 0)."""
        if task.idle:
            if self.rq[task.cpu]:
                self.set_need_resched(task)
            return
        task.timeslice -= period
        if task.timeslice <= 0:
            task.timeslice = self.k.config['timeslice']
            if self.rq[task.cpu]:
                self.set_need_resched(task)

    def end_timeslice(self, cpu):
        """The running task's slice is used up: the next tick on `cpu` asks
        for a reschedule (if another task is runnable there).  For schedule
        exploration: a preemption placed at a chosen point."""
        task = self.current[cpu]
        if not task.idle:
            task.timeslice = 0

    def runnable(self):
        return [t for t in self.tasks.values() if t.state == TASK_RUNNING]
