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
  - the per-call-site profile (Bligh's shape, `kmap_high_calls.copy_strings`):
    a one-address hook at the entry of kmap_high, kmap_atomic and
    kmap_local_page reads the return address the guest pushed.  A return
    into a guest routine credits that routine (file_read_actor's kmap is
    the guest copy routine that called it); a return into ret_to_python, or
    into a page helper Python called directly (copy_user_highpage,
    clear_user_highpage: 2.4 inlines them into their callers), credits the
    Python kernel function that issued the Guest request (the innermost
    generator of the running frame: do_wp_page, file_read_actor, ...;
    every write path's Python side is generic_file_write).  kmap() of a
    highmem page tail-jumps to kmap_high, so its caller is kmap's caller.
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


# counter prefix -> the entry label whose callers are counted
CALLER_COUNTED = {
    'kmap_high_calls': 'kmap_high',
    'kmap_atomic_calls': 'kmap_atomic',
    'kmap_local_calls': 'kmap_local_page',
}
# Guest page helpers 2.4 inlines into their callers: credit the caller.
PAGE_HELPERS = ('copy_user_highpage', 'clear_user_highpage')
# Python files whose functions are one Linux function for the profile.
PY_SITE_BY_FILE = {'write_paths.py': 'generic_file_write'}


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
        self._ret_to_python = img.symbols['ret_to_python']
        self._helpers = {img.symbols[h]: h for h in PAGE_HELPERS}
        self._sites = {}            # (prefix, return address or python name) -> calls
        self._site_names = {}       # code object -> its name in the profile (_python_site)
        for prefix, label in CALLER_COUNTED.items():
            addr = img.symbols[label]
            for cpu in kernel.machine.cpus:
                cpu.hook_code(addr, addr + 1, self._caller_hook(prefix))

    def _caller_hook(self, prefix):
        """The hook at a kmap entry: credit the call site (see the top)."""
        read32, sites, k = self.k.machine.read32, self._sites, self.k
        ret_to_python, helpers = self._ret_to_python, self._helpers
        from_python = {}            # return address -> credit the Python caller? (cached)

        def hook(cpu, addr):
            ret = read32(cpu.get_reg('esp') - PAGE_OFFSET)
            py = from_python.get(ret)
            if py is None:
                py = from_python[ret] = (ret == ret_to_python or (k.image.symbol_at(ret) or ('', 0))[0]
                                         in helpers.values())
            key = (prefix, self._python_site(cpu.index)) if py else (prefix, ret)
            sites[key] = sites.get(key, 0) + 1
        return hook

    def _python_site(self, cpu):
        """The Python kernel function whose Guest request is running on `cpu`."""
        task = self.k.sched.current[cpu]
        if not task.frames:
            return '?'
        gen = task.frames[-1].gen
        while True:
            inner = getattr(gen, 'gi_yieldfrom', None)
            if inner is None:
                break
            gen = inner
        code = gen.gi_code
        name = self._site_names.get(code)
        if name is None:
            fname = code.co_filename.rsplit('/', 1)[-1]
            name = self._site_names[code] = PY_SITE_BY_FILE.get(fname) or code.co_name.lstrip('_')
        return name

    def caller_profile(self):
        """{'kmap_high_calls.copy_strings': n, ...}: calls per caller."""
        out = {}
        for (prefix, site), n in self._sites.items():
            name = site if isinstance(site, str) else (self.k.image.symbol_at(site) or (f'{site:#x}', 0))[0]
            key = f'{prefix}.{name}'
            out[key] = out.get(key, 0) + n
        return out

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
        c.update(self.caller_profile())
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
