"""The time model: what Python kernel steps cost, in cycles.

Guest instructions count one cycle each (vm/_native.c counts them exactly).
Kernel work done in Python is charged from this one table, so that a design
that takes more kernel steps (a page-table walk in get_user_pages, a swap-in)
costs simulated time the way it would cost real time.  The numbers are
orders of magnitude for a 2002 PIII/P4 (about 1 GHz, so 1 cycle ~ 1 ns), not
measurements; every scenario reports them beside its counters, and any of
them can be overridden with the boot option cost.NAME=N.

Device latencies are machine settings, not kernel costs: disk_latency and
ipi_latency (boot options of the same names).

MODEL_COSTS is the other half of the time model: unit costs of hardware
events that the machine counts but does not charge (TLB misses of the
modelled TLB, cache-line transfers, IPI deliveries).  The report's model.*
numbers are counts x these unit costs (kmaplab/runner.py model_cycles), next
to the measured counts, each with its sensitivity (unit cost halved and
doubled); docs/costs.md gives every unit cost's source.  Override with the
boot option model.NAME=N.
"""
COSTS = {
    'syscall_entry': 100,       # int 0x80 + SAVE_ALL + dispatch (guest stubs add their own)
    'fault_entry': 150,         # #PF delivery, error code, do_page_fault prologue
    'irq_entry': 100,           # interrupt delivery + do_IRQ
    'find_vma': 40,             # rb-tree walk
    'pte_walk': 30,             # one pgd/pte lookup in Python kernel code
    'pte_update': 20,           # set_pte / ptep_get_and_clear
    'page_alloc': 200,          # __alloc_pages fast path
    'page_free': 100,
    'schedule': 300,            # pick next + bookkeeping (switch_to's guest code is extra)
    'wake_up': 100,
    'rwsem_op': 50,             # down_read / up_read uncontended
    'page_cache_lookup': 80,    # find_get_page
    'lock_page': 40,
    'rmap_add': 60,             # page_add_rmap: pte_chain insert
    'rmap_remove': 60,
    'scan_page': 50,            # one page on an LRU list looked at by reclaim
    'scan_pte': 20,             # one PTE looked at by swap_out's virtual scan
    'swap_slot': 80,            # get_swap_page / swap_free
    'oom_select': 2000,         # select_bad_process over the task list
    'exec': 5000,               # loading a program image
    'fork': 5000,
}


MODEL_COSTS = {
    'insn': 1,                  # a retired guest instruction (P6: about one per cycle)
    'tlb_walk': 30,             # a TLB miss: two-level walk, PDE and PTE from L1/L2
    'line_transfer': 150,       # a cache line moving between CPUs on the P3 SMP front-side bus
    'ipi_delivery': 1000,       # an IPI over the P6 APIC bus (serial, ~1 us)
}

# A second machine for the sensitivity of the line cost: NUMA-Q, where the
# line comes from a remote quad over the IQ-Link (docs/costs.md).
NUMAQ_LINE_TRANSFER = 2500


def make_model_costs(overrides=None):
    """The model's unit costs with model.NAME overrides applied."""
    costs = dict(MODEL_COSTS)
    for name, value in (overrides or {}).items():
        if name not in costs:
            raise ValueError(f"unknown model cost {name!r} (known: {', '.join(sorted(costs))})")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f'model.{name}={value!r}: a number of cycles')
        costs[name] = value
    return costs


def make_costs(overrides=None):
    """The cost table with boot-option overrides applied."""
    costs = dict(COSTS)
    for name, value in (overrides or {}).items():
        if name not in costs:
            raise ValueError(f"unknown cost {name!r} (known: {', '.join(sorted(costs))})")
        costs[name] = int(value)
    return costs
