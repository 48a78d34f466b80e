"""The Python side of kmap: what the guest asm in asm/kernel/highmem.S
needs from the rest of the kernel, and the counters it is measured by.

The algorithms themselves (kmap_high, map_new_virtual,
flush_all_zero_pkmaps, kunmap_high, kmap_atomic, kmap_local_page) are guest
code; Python never maps or unmaps a kmap slot.  This file owns:
  - pkmap_map_wait, the wait queue the asm sleeps on when the pool is full
    (through the PREPARE_WAIT / SCHEDULE / FINISH_WAIT services), whose
    number of sleepers is mirrored into the guest word `pkmap_map_wait` so
    kunmap_high can test waitqueue_active() under kmap_lock;
  - the counters: each is the number of times a CPU executed a given
    instruction of the image (a one-address C hook, free elsewhere):
    kmap_high calls, new mappings, pool wraps, flush_all_zero_pkmaps,
    global flushes (flush_tlb_all), kmap sleeps, kmap_atomic and
    kmap_local calls, shootdowns; and the instructions spent in the spin
    loops (kmap_lock, TLB acknowledgements, call_function waits);
  - a read-only view of the pool for checkers and tests.
"""
from .layout import PAGE_OFFSET
from .sched import WaitQueue

PKMAP_WAIT_ID = 1

# counter name -> the label whose executions it counts
COUNTED_LABELS = {
    'kmap_high_calls': 'kmap_high',
    'kmap_new_mappings': 'mnv_found',
    'pool_wraps': 'pkmap_wrap',
    'flush_all_zero_pkmaps': 'flush_all_zero_pkmaps',
    'global_flushes': 'flush_tlb_all',
    'kmap_sleeps': 'kmap_sleep',
    'kunmap_high_calls': 'kunmap_high',
    'kmap_atomic_calls': 'kmap_atomic',
    'kmap_local_calls': 'kmap_local_page',
    'tlb_shootdowns': 'flush_tlb_others',
    'smp_call_functions': 'smp_call_function',
}


class Highmem:
    def __init__(self, kernel):
        self.k = kernel
        img = kernel.image
        word = img.symbols['pkmap_map_wait'] - PAGE_OFFSET
        self.pkmap_map_wait = WaitQueue('pkmap_map_wait', kernel, guest_word=word)
        kernel.services.register_waitqueue(PKMAP_WAIT_ID, self.pkmap_map_wait)
        self._hooks = {}
        for name, label in COUNTED_LABELS.items():
            addr = img.symbols[label]
            self._hooks[name] = [cpu.count_at(addr, 'label') for cpu in kernel.machine.cpus]

    @property
    def counters(self):
        c = {name: sum(int(h.value) for h in hooks) for name, hooks in self._hooks.items()}
        img, m = self.k.image, self.k.machine
        c['kmap_lock_spin_insns'] = sum(cpu.range_count('kmap_lock_wait') for cpu in m.cpus)
        c['tlb_ack_wait_insns'] = sum(cpu.range_count('tlb_ack_wait') for cpu in m.cpus)
        c['call_function_wait_insns'] = sum(cpu.range_count('call_function_wait') for cpu in m.cpus)
        for cpu in m.cpus:
            for addr, ctr in cpu.point_counters.items():
                if cpu.point_kind[addr] == 'invlpg':
                    name, _ = img.symbol_at(addr)
                    key = f'invlpg_{name}'
                    c[key] = c.get(key, 0) + int(ctr.value)
        return c

    # ---- a read-only view for checkers and tests -------------------------

    def pkmap_count(self, nr):
        return self.k.machine.read32(self.k.image.symbols['pkmap_count'] - PAGE_OFFSET + 4 * nr)

    def pkmap_pte(self, nr):
        return self.k.machine.read32(self.k.pkmap_pt_pa + 4 * nr)

    def last_pkmap_nr(self):
        return self.k.machine.read32(self.k.image.symbols['last_pkmap_nr'] - PAGE_OFFSET)

    def page_virtual(self, pfn):
        return int(self.k.page_alloc.mem_map[pfn]['virtual'])
