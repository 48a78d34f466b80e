"""Interrupts: the local timer, the TLB and call-function IPIs, reschedule
IPIs, and the disk's completion interrupt.

Mirrors arch/i386/kernel/irq.c do_IRQ and the SMP vectors of
include/asm-i386/hw_irq.h (2.4): LOCAL_TIMER_VECTOR 0xef,
CALL_FUNCTION_VECTOR 0xfb, RESCHEDULE_VECTOR 0xfc, INVALIDATE_TLB_VECTOR
0xfd; the disk is IRQ 14 at FIRST_EXTERNAL_VECTOR 0x20 + 14.

Rules
  - Handlers run with interrupts off (interrupt gates): their guest code
    is entered with IF=0 and no other vector nests.
  - The IPI handlers are guest code (asm/kernel/tlb.S): the flush and the
    acknowledgement are instructions on the receiving CPU.
  - do_IRQ runs between irq_enter() and irq_exit() (2.5: preempt_count +=
    HARDIRQ_OFFSET), so in_interrupt() holds in the handlers, guest code
    included (kmap/kunmap BUG on it, as 2.4's highmem.h).
  - On the way out to kernel code, with preempt=full, a task whose
    preempt_count is 0 and whose time slice ran out is preempted
    (sched.preempt_schedule, PREEMPT_ACTIVE); with preempt=none only the
    way to user mode reschedules.
  - A reschedule IPI to another CPU is an IPI like the others
    (Machine.send_ipi: counted in ipis_sent, ipi_latency late, seen by fault
    injection); to the CPU that runs the waker, smp_send_reschedule is not
    called (2.4 reschedule_idle), need_resched is enough: its interrupt
    line is raised at once, as before.
"""
from .sched import HARDIRQ_OFFSET
from .task import Charge, Guest

LOCAL_TIMER_VECTOR = 0xEF
CALL_FUNCTION_VECTOR = 0xFB
RESCHEDULE_VECTOR = 0xFC
INVALIDATE_TLB_VECTOR = 0xFD
DISK_VECTOR = 0x20 + 14


class Interrupts:
    def __init__(self, kernel):
        self.k = kernel
        self.counters = dict(timer_irqs=0, tlb_ipis_handled=0, call_function_ipis_handled=0,
                             reschedule_ipis=0, reschedule_ipis_sent=0, disk_irqs=0,
                             preemptions=0)

    def send_reschedule(self, cpu):
        """smp_send_reschedule(): kick `cpu` out of idle / into schedule().
        From another CPU (the one running now): an IPI, counted and
        delayed as every IPI (Machine.send_ipi); from `cpu` itself, or from
        no CPU (a machine event), the interrupt line is raised at once."""
        m = self.k.machine
        src = m.running
        if src is None or src == cpu:
            m.raise_irq(cpu, RESCHEDULE_VECTOR)
        else:
            self.counters['reschedule_ipis_sent'] += 1
            m.send_ipi(src, [cpu], RESCHEDULE_VECTOR)

    def do_IRQ(self, task, vector):
        """Handle one vector on task's CPU, between irq_enter() and
        irq_exit().  Generator."""
        sched = self.k.sched
        if task is not None:
            sched.add_preempt_count(task, HARDIRQ_OFFSET)        # irq_enter()
        yield from self.handle_irq(task, vector)
        if task is not None:
            sched.add_preempt_count(task, -HARDIRQ_OFFSET)       # irq_exit()

    def handle_irq(self, task, vector):
        """The body of do_IRQ for one vector.  Generator; in_interrupt()."""
        k = self.k
        yield Charge(k.costs['irq_entry'])
        if vector == LOCAL_TIMER_VECTOR:
            self.counters['timer_irqs'] += 1
            if task is not None and task.cpu == 0:      # the memory time series (vmstat.py)
                k.vmstat.sample(k.machine.time(0))
            k.sched.scheduler_tick(task, k.tick_period)
            k.run_timers()
        elif vector == INVALIDATE_TLB_VECTOR:
            self.counters['tlb_ipis_handled'] += 1
            k.trace_event('ipi_received', task=task, vector=vector)
            yield Guest('smp_invalidate_interrupt', irqs=False)
        elif vector == CALL_FUNCTION_VECTOR:
            self.counters['call_function_ipis_handled'] += 1
            k.trace_event('ipi_received', task=task, vector=vector)
            yield Guest('smp_call_function_interrupt', irqs=False)
        elif vector == RESCHEDULE_VECTOR:
            self.counters['reschedule_ipis'] += 1
        elif vector == DISK_VECTOR:
            self.counters['disk_irqs'] += 1
            k.blockdev.end_requests()
        else:
            k.report('warning', f'unexpected interrupt vector {vector:#x} on CPU{task.cpu}')

    def irq_frame(self, task, vector, saved):
        """An interrupt taken in kernel mode (guest code whose registers are
        `saved`, or a Python yield point if saved is None).  Generator."""
        k = self.k
        yield from self.do_IRQ(task, vector)
        if k.config['preempt'] != 'full' or not k.sched.need_resched(task) or task.idle:
            return
        if saved is not None and not saved['eflags'] & 0x200:
            return
        if k.sched.preempt_count(task) != 0:
            return
        self.counters['preemptions'] += 1
        k.trace_event('preempt', task=task, eip=saved['eip'] if saved else None)
        yield from k.sched.preempt_schedule(task)
