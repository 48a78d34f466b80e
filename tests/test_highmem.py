"""kmap, kmap_atomic, kmap_local and the user copies, executed as guest code.

Each test boots a small kernel and runs kernel threads whose bodies are
sequences of Guest() calls into asm/kernel/highmem.S and uaccess.S: what is
checked is what the emulated CPUs did.
"""
import struct

from minikernel import page_alloc as gfp
from minikernel.kernel import Kernel
from minikernel.layout import KM_USER0, PAGE_OFFSET
from minikernel.memory import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from minikernel.task import Guest

MiB = 1 << 20


def boot(**opts):
    base = dict(cpus=2, mem=64 * MiB, highmem=32 * MiB, pkmap=16)
    base.update(opts)
    return Kernel(base)


def high_page(k):
    pfn = k.page_alloc.alloc_pages_fast(gfp.GFP_HIGHUSER, 0)
    assert pfn is not None and pfn >= k.highstart_pfn
    return pfn


def lowmem_buffer(k):
    pfn = k.page_alloc.alloc_pages_fast(gfp.GFP_KERNEL, 0)
    return pfn, PAGE_OFFSET + (pfn << 12)


def run(k, limit=200_000_000):
    end = k.run(max_cycles=limit)
    return end


def bugs(k):
    return [r['message'] for r in k.reports if r['kind'] in ('bug', 'oops')]


def test_kmap_write_reads_back_through_kmap_atomic_on_another_cpu():
    k = boot()
    page = k.page_to_guest(high_page(k))
    buf_pfn, buf = lowmem_buffer(k)
    done = {}

    def writer(task):
        vaddr = yield Guest('kmap', page)
        yield Guest('memset', vaddr, 0x5A, 4096)
        done['vaddr'] = vaddr              # only now: the CPUs really run concurrently
        yield Guest('kunmap', page)

    def reader(task):
        while 'vaddr' not in done:
            yield from k.sleep_for(task, 10_000)
        vaddr = yield Guest('kmap_atomic', page, KM_USER0)
        done['atomic'] = vaddr
        yield Guest('memcpy', buf, vaddr, 4096)
        yield Guest('kunmap_atomic', vaddr, KM_USER0)

    k.kernel_thread('writer', 0, writer)
    k.kernel_thread('reader', 1, reader)
    assert run(k) == 'finished'
    assert k.PAGE_OFFSET <= done['vaddr'] - 0x3F800000 or done['vaddr'] >= k.pkmap_base
    assert k.pkmap_base <= done['vaddr'] < k.pkmap_base + 16 * 4096
    assert done['atomic'] >= 0xFFC00000
    assert bytes(k.machine.read(buf_pfn << 12, 4096)) == b'\x5a' * 4096
    c = k.highmem.counters
    assert c['kmap_high_calls'] == 1 and c['kmap_atomic_calls'] == 1
    assert not bugs(k)


def test_pool_exhaustion_sleeps_and_kunmap_wakes():
    k = boot(pkmap=16)
    pages = [k.page_to_guest(high_page(k)) for _ in range(17)]
    state = {}

    def hog(task):
        for p in pages[:16]:
            yield Guest('kmap', p)
        state['full'] = True
        while 'waiter_asleep' not in state:
            yield from k.sleep_for(task, 20_000)
        yield Guest('kunmap', pages[0])
        state['released'] = True

    def waiter(task):
        while 'full' not in state:
            yield from k.sleep_for(task, 10_000)
        k.machine.schedule(k.machine.time(1) + 50_000, lambda: state.update(waiter_asleep=True))
        vaddr = yield Guest('kmap', pages[16])
        state['vaddr'] = vaddr
        state['woken_after_release'] = state.get('released', False)

    k.kernel_thread('hog', 0, hog)
    k.kernel_thread('waiter', 1, waiter)
    assert run(k) == 'finished'
    c = k.highmem.counters
    assert c['kmap_sleeps'] >= 1
    assert state['woken_after_release']
    # the slot it got was pages[0]'s old one, freed by the wrap's flush
    assert k.pkmap_base <= state['vaddr'] < k.pkmap_base + 16 * 4096
    assert c['pool_wraps'] >= 1 and c['global_flushes'] >= 1
    assert not bugs(k)


def _stale_pkmap_read(drop_ipi):
    """CPU1 touches P1 through its pkmap slot and kunmaps it (count 1: its
    TLB may still hold the entry).  CPU0 then maps pages until the pool
    wraps: flush_all_zero_pkmaps clears the slot and shoots down every TLB.
    CPU1 reads the old address again."""
    k = boot(pkmap=16)
    p1 = high_page(k)
    page1 = k.page_to_guest(p1)
    others = [k.page_to_guest(high_page(k)) for _ in range(16)]
    state = {}
    if drop_ipi:
        k.machine.ipi_filter = lambda src, dst, vec: None if dst == 1 else 0

    def cpu1(task):
        vaddr = yield Guest('kmap', page1)
        yield Guest('memset', vaddr, 0x11, 4096)
        yield Guest('probe_kernel_read32', vaddr)       # the TLB now holds it
        yield Guest('kunmap', page1)
        state['vaddr'] = vaddr
        while not (k.highmem.counters['global_flushes'] and (drop_ipi or 'cpu0_done' in state)):
            yield Guest('__delay', 200)       # interrupts on: the shootdown IPI lands here
        word = yield Guest('probe_kernel_read32', vaddr)
        state['word'] = word
        state['err'] = task_reg_edx(k, task)

    def cpu0(task):
        while 'vaddr' not in state:
            yield from k.sleep_for(task, 5_000)
        for p in others:
            yield Guest('kmap', p)
            yield Guest('kunmap', p)
        state['cpu0_done'] = True

    k.kernel_thread('cpu1', 1, cpu1)
    k.kernel_thread('cpu0', 0, cpu0, workload=False)
    k.run(max_cycles=3_000_000)
    return k, state


def task_reg_edx(k, task):
    return k.machine.cpus[task.cpu].regs['edx']


def test_dropped_shootdown_leaves_a_stale_pkmap_entry():
    k, state = _stale_pkmap_read(drop_ipi=True)
    # the slot's PTE is gone, but CPU1 still reads P1's bytes through its TLB
    assert k.highmem.pkmap_pte((state['vaddr'] - k.pkmap_base) >> 12) == 0
    assert state['word'] == 0x11111111 and state['err'] == 0
    assert k.machine.counters['ipis_dropped'] >= 1
    assert 'cpu0_done' not in state          # the initiator still waits for the ack


def test_shootdown_removes_the_stale_entry():
    k, state = _stale_pkmap_read(drop_ipi=False)
    assert state.get('cpu0_done') and k.highmem.counters['global_flushes'] >= 1
    # CPU1 sees what the slot maps NOW (unmapped: a fault; or a new page), never P1
    pte = k.highmem.pkmap_pte((state['vaddr'] - k.pkmap_base) >> 12)
    if pte == 0:
        assert state['err'] == (-14) & 0xFFFFFFFF
    else:
        now = struct.unpack('<I', k.machine.read(pte & 0xFFFFF000, 4))[0]
        assert state['err'] == 0 and state['word'] == now != 0x11111111


def _user_copy_across_absent_page(atomic_fault):
    k = boot(cpus=1, atomic_fault=atomic_fault)
    mm = k.mm.mm_alloc()
    kpage_pfn = high_page(k)
    kpage = k.page_to_guest(kpage_pfn)
    buf_pfn, buf = lowmem_buffer(k)
    k.machine.write(buf_pfn << 12, bytes(range(256)) * 16)
    out = {}

    def body(task):
        addr = yield from k.mm.do_mmap(task, mm, 0, 8192, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS)
        left = yield Guest('copy_to_user', addr, buf, 4096)   # page 1 present, page 2 not
        assert left == 0
        vaddr = yield Guest('kmap_atomic', kpage, KM_USER0)
        out['left'] = yield Guest('__copy_from_user_inatomic', vaddr, addr + 4096 - 100, 200)
        yield Guest('kunmap_atomic', vaddr, KM_USER0)

    k.kernel_thread('copier', 0, body, mm=mm)
    assert run(k) == 'finished'
    return k, out


def test_copy_from_user_in_atomic_comes_back_short_with_fixup():
    k, out = _user_copy_across_absent_page('fixup')
    assert out['left'] == 100
    assert k.mm.counters['exception_fixups'] == 1
    assert not bugs(k)


def test_copy_from_user_in_atomic_completes_with_the_sleeping_semantics():
    k, out = _user_copy_across_absent_page('sleep')
    assert out['left'] == 0
    assert k.mm.counters['exception_fixups'] == 0


def test_kmap_local_survives_preemption():
    k = boot(cpus=1, preempt='full', tick=20_000)
    pa, pb = high_page(k), high_page(k)
    buf_pfn, buf = lowmem_buffer(k)
    state = {}

    def a(task):
        vaddr = yield Guest('kmap_local_page', k.page_to_guest(pa))
        yield Guest('memset', vaddr, 0xAA, 4096)
        yield Guest('__delay', 200_000)                 # preempted in here
        yield Guest('memcpy', buf, vaddr, 4096)
        yield Guest('kunmap_local', vaddr)
        state['a_vaddr'] = vaddr

    def b(task):
        vaddr = yield Guest('kmap_local_page', k.page_to_guest(pb))
        state['b_vaddr'] = vaddr
        yield Guest('memset', vaddr, 0xBB, 4096)
        yield Guest('kunmap_local', vaddr)

    k.kernel_thread('a', 0, a)
    k.kernel_thread('b', 0, b, start=50_000)
    assert run(k) == 'finished'
    assert k.irq.counters['preemptions'] >= 1
    assert state['a_vaddr'] == state['b_vaddr']          # the same slot, by turns
    assert bytes(k.machine.read(buf_pfn << 12, 4096)) == b'\xaa' * 4096
    assert not bugs(k)


def test_kmap_local_out_of_order_unmap_is_reported():
    k = boot(cpus=1)
    p1, p2 = k.page_to_guest(high_page(k)), k.page_to_guest(high_page(k))

    def body(task):
        v1 = yield Guest('kmap_local_page', p1)
        v2 = yield Guest('kmap_local_page', p2)
        yield Guest('kunmap_local', v1)
        yield Guest('kunmap_local', v2)

    k.kernel_thread('t', 0, body)
    run(k)
    assert any('kmap_local out of order' in m for m in bugs(k))


def test_debug_highmem_reports_a_slot_reused_while_held():
    k = boot(cpus=1, debug_highmem=True)
    p1, p2 = k.page_to_guest(high_page(k)), k.page_to_guest(high_page(k))

    def body(task):
        yield Guest('kmap_atomic', p1, KM_USER0)
        yield Guest('kmap_atomic', p2, KM_USER0)      # the slot is still in use

    k.kernel_thread('t', 0, body)
    run(k)
    msgs = bugs(k)
    assert any('kernel BUG at asm/kernel/highmem.S' in m for m in msgs), msgs


def test_without_debug_highmem_the_guest_is_silent_and_the_slot_checker_reports():
    k = boot(cpus=1, debug_highmem=False)
    high_pfns = [high_page(k), high_page(k)]
    p1, p2 = (k.page_to_guest(p) for p in high_pfns)

    def body(task):
        yield Guest('kmap_atomic', p1, KM_USER0)
        yield Guest('kmap_atomic', p2, KM_USER0)
        yield Guest('kunmap_atomic', 0xFFFFE000, KM_USER0)
        yield Guest('kunmap_atomic', 0xFFFFE000, KM_USER0)

    k.kernel_thread('t', 0, body)
    assert run(k) == 'finished'                 # the guest does not notice (no DEBUG_HIGHMEM)
    msgs = bugs(k)
    assert not any('kernel BUG' in m for m in msgs), msgs
    # ... the host-side checker (minikernel/checks.py KmapSlots) does
    assert [m for m in msgs if 'kmap_atomic slot reused while held' in m] == [
        'kmap_atomic slot reused while held: KM_USER0 on CPU0 holds pfn '
        f'{high_pfns[0]:#x} for t/2 (mapped from body); t/2 maps pfn {high_pfns[1]:#x} there '
        'from body'], msgs
