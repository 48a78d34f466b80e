"""Kernel service calls: what guest asm asks of the Python kernel.

Guest code executes `int KSVC_VECTOR` (0x81) with the service number in
EAX and arguments in EBX, ECX, EDX, ESI; the result comes back in EAX and
the guest continues after the `int`.  This stands for the few places where
the asm needs the rest of the kernel: sending an IPI (the local APIC's ICR
write), sleeping on and waking a wait queue (schedule()), preempting.

Rules
  - A service runs in the context of the calling task, with the guest's
    interrupt flag: it may sleep only where the Linux code it stands for may.
  - An unknown service number is a kernel bug (reported, task killed).
"""
from .task import Charge

SVC_SEND_IPI = 1          # EBX = cpumask, ECX = vector
SVC_PREPARE_WAIT = 2      # EBX = wait queue id: add current, TASK_UNINTERRUPTIBLE
SVC_SCHEDULE = 3          # schedule(); returns when woken
SVC_FINISH_WAIT = 4       # EBX = wait queue id
SVC_WAKE_UP = 5           # EBX = wait queue id
SVC_PREEMPT_SCHEDULE = 6  # preempt_schedule(): count reached 0 with need_resched
SVC_CHECK = 7             # EBX = checker code, ECX/EDX = details: a guest-side check fired
SVC_ALLOC_PAGE = 8        # alloc_page(GFP_HIGHUSER): EAX = struct page * or 0; may sleep

SERVICES = {
    'SVC_SEND_IPI': SVC_SEND_IPI, 'SVC_PREPARE_WAIT': SVC_PREPARE_WAIT,
    'SVC_SCHEDULE': SVC_SCHEDULE, 'SVC_FINISH_WAIT': SVC_FINISH_WAIT,
    'SVC_WAKE_UP': SVC_WAKE_UP, 'SVC_PREEMPT_SCHEDULE': SVC_PREEMPT_SCHEDULE,
    'SVC_CHECK': SVC_CHECK, 'SVC_ALLOC_PAGE': SVC_ALLOC_PAGE,
}


class Services:
    def __init__(self, kernel):
        self.k = kernel
        self.waitqueues = {}      # id -> WaitQueue (registered by the subsystems)
        self.counters = dict(service_calls=0)

    def register_waitqueue(self, wq_id, wq):
        self.waitqueues[wq_id] = wq

    def dispatch(self, task, regs):
        """Generator: run service regs['eax'] for `task`; returns EAX."""
        k = self.k
        self.counters['service_calls'] += 1
        nr, a, b = regs['eax'], regs['ebx'], regs['ecx']
        if nr == SVC_SEND_IPI:
            targets = [c for c in range(len(k.machine.cpus)) if a >> c & 1]
            k.trace_event('ipi_sent', task=task, mask=a, vector=b)
            k.machine.send_ipi(task.cpu, targets, b)
            return 0
        if nr == SVC_PREPARE_WAIT:
            k.sched.prepare_to_wait(task, self.waitqueues[a])
            return 0
        if nr == SVC_SCHEDULE:
            task.counters['sleeps'] += 1
            yield from k.sched.schedule(task)
            return 0
        if nr == SVC_FINISH_WAIT:
            k.sched.finish_wait(task, self.waitqueues[a])
            return 0
        if nr == SVC_WAKE_UP:
            yield Charge(k.costs['wake_up'])
            k.sched.wake_up(self.waitqueues[a])
            return 0
        if nr == SVC_PREEMPT_SCHEDULE:
            if k.config['preempt'] == 'full' and k.sched.preempt_count(task) == 0:
                k.irq.counters['preemptions'] += 1
                yield from k.sched.preempt_schedule(task)
            return 0
        if nr == SVC_ALLOC_PAGE:
            pfn = yield from k.alloc_page(task, k.gfp.GFP_HIGHUSER)
            return k.page_to_guest(pfn) if pfn is not None else 0
        if nr == SVC_CHECK:
            k.checks.guest_check(task, a, b, regs['edx'], regs['eip'])
            return 0
        k.report('bug', f'unknown kernel service {nr} from {k.describe(regs["eip"])}', task=task)
        yield from k.exit.do_exit(task, -1)
