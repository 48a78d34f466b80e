"""Issue 15 part 5: fidelity fixes found in an audit, each shown on the
emulated machine (guest code and the kernel's interrupt and scheduling
paths), each able to fail.

  - kmap/kunmap BUG in interrupt context (2.4.18 highmem.h in_interrupt());
  - kunmap_atomic's HIGHMEM_DEBUG check masks the address with PAGE_MASK;
  - strncpy_from_user does access_ok first (-EFAULT on a kernel address);
  - preempt_schedule marks PREEMPT_ACTIVE: a task preempted after it set
    its state to sleep stays on the run queue;
  - reschedule IPIs to another CPU are counted and delayed as IPIs.
"""
from minikernel import page_alloc as gfp
from minikernel.irq import LOCAL_TIMER_VECTOR
from minikernel.kernel import Kernel
from minikernel.layout import KM_USER0, PAGE_OFFSET
from minikernel.sched import WaitQueue
from minikernel.task import Guest

MiB = 1 << 20
EFAULT = 14


def boot(**opts):
    base = dict(cpus=1, mem=64 * MiB, highmem=32 * MiB, pkmap=16)
    base.update(opts)
    return Kernel(base)


def bugs(k):
    return [r['message'] for r in k.reports if r['kind'] in ('bug', 'oops')]


def high_page(k):
    pfn = k.page_alloc.alloc_pages_fast(gfp.GFP_HIGHUSER, 0)
    assert pfn is not None and pfn >= k.highstart_pfn
    return pfn


def test_kmap_from_an_interrupt_handler_is_a_bug():
    """The timer interrupt's handler (between irq_enter and irq_exit) calls
    kmap: the guest's in_interrupt() check BUGs, as 2.4's highmem.h."""
    k = boot(tick=20_000)
    page = k.page_to_guest(high_page(k))
    orig, seen = k.irq.handle_irq, {}

    def handle_irq(task, vector):
        if vector == LOCAL_TIMER_VECTOR and task is not None and not task.idle and not seen:
            seen['count'] = k.sched.preempt_count(task)
            yield Guest('kmap', page, irqs=False)
        yield from orig(task, vector)
    k.irq.handle_irq = handle_irq

    def body(task):
        yield Guest('__delay', 100_000)

    k.kernel_thread('t', 0, body)
    k.run(max_cycles=20_000_000)
    assert seen['count'] == 1 << 16                     # irq_enter: HARDIRQ_OFFSET
    assert any('kernel BUG at asm/kernel/highmem.S' in m for m in bugs(k)), bugs(k)


def test_kmap_outside_interrupts_is_no_bug():
    k = boot()
    page = k.page_to_guest(high_page(k))

    def body(task):
        yield Guest('kmap', page)
        yield Guest('kunmap', page)

    k.kernel_thread('t', 0, body)
    assert k.run(max_cycles=20_000_000) == 'finished'
    assert not bugs(k)


def test_kunmap_atomic_debug_check_takes_the_page_of_the_address():
    """HIGHMEM_DEBUG kunmap_atomic(kvaddr + offset): vaddr = kvaddr &
    PAGE_MASK is the slot's address, so no BUG, and the PTE is cleared."""
    k = boot(debug_highmem=True)
    page = k.page_to_guest(high_page(k))
    out = {}

    def body(task):
        vaddr = yield Guest('kmap_atomic', page, KM_USER0)
        out['vaddr'] = vaddr
        yield Guest('kunmap_atomic', vaddr + 0x234, KM_USER0)
        out['after'] = yield Guest('kmap_atomic', page, KM_USER0)   # the slot is free again
        yield Guest('kunmap_atomic', out['after'], KM_USER0)

    k.kernel_thread('t', 0, body)
    assert k.run(max_cycles=20_000_000) == 'finished'
    assert out['vaddr'] == out['after'] and out['vaddr'] >= 0xFFC00000
    assert not bugs(k), bugs(k)


def test_strncpy_from_user_refuses_a_kernel_address():
    """access_ok(VERIFY_READ, src, 1) first: a source in kernel space gives
    -EFAULT and copies nothing (it used to copy kernel memory)."""
    k = boot()
    src_pfn = k.page_alloc.alloc_pages_fast(gfp.GFP_KERNEL, 0)
    dst_pfn = k.page_alloc.alloc_pages_fast(gfp.GFP_KERNEL, 0)
    k.machine.write(src_pfn << 12, b'kernel secret\0')
    k.machine.write(dst_pfn << 12, bytes(64))
    out = {}

    def body(task):
        out['r'] = yield Guest('strncpy_from_user', PAGE_OFFSET + (dst_pfn << 12),
                               PAGE_OFFSET + (src_pfn << 12), 32)

    k.kernel_thread('t', 0, body)
    assert k.run(max_cycles=20_000_000) == 'finished'
    assert out['r'] & 0xFFFFFFFF == (-EFAULT) & 0xFFFFFFFF
    assert bytes(k.machine.read(dst_pfn << 12, 64)) == bytes(64)


def test_a_task_preempted_before_its_schedule_stays_runnable():
    """preempt=full: a task that set TASK_UNINTERRUPTIBLE (prepare_to_wait)
    and is preempted before it reaches schedule() stays on the run queue
    (PREEMPT_ACTIVE), runs again, finds its condition true and finishes.
    Without PREEMPT_ACTIVE, schedule() would take it off the queue and
    nothing would ever wake it."""
    k = boot(preempt='full', tick=20_000)
    wq = WaitQueue('test')
    state = {}

    def waiter(task):
        k.sched.prepare_to_wait(task, wq)
        yield Guest('__delay', 300_000)                    # preempted in here
        state['preempt_count_after'] = k.sched.preempt_count(task)
        k.sched.finish_wait(task, wq)                      # the condition held: no sleep
        state['waiter'] = True

    def hog(task):
        yield Guest('__delay', 300_000)
        state['hog'] = True

    k.kernel_thread('waiter', 0, waiter)
    k.kernel_thread('hog', 0, hog, start=10_000)
    assert k.run(max_cycles=50_000_000) == 'finished'
    assert k.irq.counters['preemptions'] >= 1
    assert state == dict(waiter=True, hog=True, preempt_count_after=0)
    assert not bugs(k)


def test_reschedule_ipi_is_counted_and_delayed():
    """A wake-up of a task on another (idle) CPU sends it a reschedule IPI:
    in ipis_sent, and the woken task runs no earlier than ipi_latency after
    the wake-up."""
    latency = 300_000                  # less than a tick (1,000,000): the idle CPU
                                       # could also find the task at its next tick
    k = boot(cpus=2, ipi_latency=latency)
    wq = WaitQueue('test')
    t = {}

    def sleeper(task):
        yield from k.sched.wait_event(task, wq, lambda: 'woken' in t)
        t['ran'] = k.machine.time(1)

    def waker(task):
        yield Guest('__delay', 50_000)
        t['woken'] = k.machine.time(0)
        k.sched.wake_up(wq)

    k.kernel_thread('sleeper', 1, sleeper)
    k.kernel_thread('waker', 0, waker, start=10_000)
    sent_before = k.irq.counters['reschedule_ipis_sent']
    assert k.run(max_cycles=50_000_000) == 'finished'
    assert k.irq.counters['reschedule_ipis_sent'] - sent_before >= 1
    assert k.machine.cpus[0].counters['ipis_sent'] >= 1
    assert t['ran'] - t['woken'] >= latency
