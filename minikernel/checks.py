"""Checkers that run in every scenario, and the deadlock detector.

  - sleep in atomic context: sched.schedule() reports "BUG: scheduling
    while atomic" (see sched.py); counted here.
  - guest checks: kmap slot misuse and the like, detected by guest asm and
    reported through the SVC_CHECK service.
  - deadlock: when no CPU has anything to run and no I/O or timer is
    pending, every sleeping task is waiting for something that will not
    come.  The report is the wait-for graph: each sleeper, what it waits
    on, who holds that, and any cycle.
  - frame accounting: page_alloc.check() (free lists vs mem_map).
  - kmap_atomic slot misuse without debug_highmem (KmapSlots): the same
    per-CPU fixmap slot mapped again while its first holder is still
    inside its kmap_atomic section (it slept there, or nested the same
    km_type).  One-address code hooks on kmap_atomic / kunmap_atomic:
    nothing runs elsewhere.  With debug_highmem the guest BUGs instead.
  - the NMI watchdog (Watchdog): a CPU that stays in kernel guest code,
    with no return to Python kernel code (no guest routine returning, no
    fault, no service call; interrupts do not count) for more than the boot
    option `watchdog` cycles is reported as Linux's "BUG: soft lockup", with
    the symbolized EIP and what it spins on, and the run stops.
  - OOM while swap is free (at the end of the run): every OOM kill filed
    while free swap was > 0 is flagged (Andrea's prediction for pinned mms).
"""
from .layout import FIXMAP_PT_BASE, KM_TYPES
from .task import TASK_UNINTERRUPTIBLE

CHECK_NAMES = {1: 'kmap_atomic slot reused while held', 2: 'kmap_local out of order',
               3: 'pkmap_count went to 0 without a flush', 4: 'kunmap of an unmapped page'}


class Checks:
    def __init__(self, kernel):
        self.k = kernel
        self.counters = dict(guest_checks=0, deadlocks=0, kmap_slot_reuses=0, soft_lockups=0,
                             oom_with_free_swap=0)
        self.watchdog = Watchdog(kernel, self.counters)
        self.kmap_slots = KmapSlots(kernel, self.counters)

    def touch_watchdog(self, cpu):
        """The CPU came back to Python kernel code (touch_softlockup_watchdog)."""
        self.watchdog.last[cpu] = self.k.machine.time(cpu)

    def finish(self):
        """End of run: flag each OOM kill that left swap free."""
        for r in list(self.k.reports):
            if r['kind'] == 'oom' and r.get('free_swap_kb', 0) > 0:
                self.counters['oom_with_free_swap'] += 1
                self.k.report('bug', f'OOM with free swap: {r.get("victim", "a task")} was killed '
                                     f'while {r["free_swap_kb"]} kB of swap were free',
                              check='oom with free swap', free_swap_kb=r['free_swap_kb'])

    def guest_check(self, task, code, a, b, eip):
        self.counters['guest_checks'] += 1
        name = CHECK_NAMES.get(code, f'check {code}')
        self.k.report('bug', f'{name} ({a:#x}, {b:#x}) at {self.k.describe(eip)}', task=task,
                      check=name)

    def waits_for(self, task):
        """(description, [holder tasks]) of what a sleeping task waits on."""
        w = task.waiting_on
        if isinstance(w, tuple) and w and w[0] == 'rwsem':
            sem, mode = w[1], w[2]
            return f'{sem.name} ({mode}; held by {len(sem.holders())}, {len(sem.queue)} queued)', sem.holders()
        if isinstance(w, tuple) and w and w[0] == 'page_lock':
            return f'lock_page(pfn {w[1]:#x})', [h for h in [w[2]() if callable(w[2]) else w[2]] if h]
        if isinstance(w, tuple):
            return ' '.join(str(x) for x in w), []
        return repr(w), []

    def deadlock(self):
        """Report a deadlock if tasks sleep and nothing can wake them."""
        k = self.k
        sleepers = [t for t in k.sched.tasks.values()
                    if t.state == TASK_UNINTERRUPTIBLE and not t.daemon]
        if not sleepers:
            return None
        if k.disk.inflight:
            return None
        self.counters['deadlocks'] += 1
        graph = []
        edges = {}
        for t in sleepers:
            what, holders = self.waits_for(t)
            edges[t] = holders
            hold = ', '.join(f'{h.name}/{h.pid}' for h in holders) or 'nobody running'
            graph.append(f'{t.name}/{t.pid} waits on {what} <- held by {hold}')
        cycle = _find_cycle(edges)
        msg = 'deadlock: no task can run and no I/O or timer is pending'
        if cycle:
            msg += '; cycle: ' + ' -> '.join(f'{t.name}/{t.pid}' for t in cycle)
        k.report('deadlock', msg, graph=graph)
        return 'deadlock'


def _find_cycle(edges):
    """A cycle in the wait-for graph {task: [tasks it waits for]}, or None."""
    for start in edges:
        path, seen = [start], {start}
        node = start
        while True:
            nxt = [h for h in edges.get(node, []) if h in edges]
            if not nxt:
                break
            node = nxt[0]
            if node in seen:
                return path[path.index(node):] + [node]
            path.append(node)
            seen.add(node)
    return None


class KmapSlots:
    """kmap_atomic slot misuse, checked from the host: per (CPU, km_type),
    who mapped the slot last and has not unmapped it.  A second
    kmap_atomic of the slot while that holder (alive) has not called
    kunmap_atomic is "slot reused while held": either the holder slept
    inside its atomic section and another task on the CPU took the slot,
    or the holder nested the same km_type."""

    def __init__(self, kernel, counters):
        self.k = kernel
        self.counters = counters
        self.held = {}                # (cpu, type) -> (task, page, caller)
        if kernel.config['debug_highmem']:
            return                    # the guest's own check (BUG) is on
        self.highmem_start = kernel.machine.read32(kernel.image.symbols['highmem_start_page']
                                                   - kernel.PAGE_OFFSET)
        self._ret_to_python = kernel.image.symbols.get('ret_to_python')
        for name, fn in (('kmap_atomic', self._map), ('kunmap_atomic', self._unmap)):
            addr = kernel.image.symbols.get(name)
            if addr is not None:
                for cpu in kernel.machine.cpus:
                    cpu.hook_code(addr, addr + 1, fn)

    # The two hooks run at every kmap_atomic / kunmap_atomic (each page a
    # fault clears): they read only what the check needs, and name a caller
    # only when a report needs it.

    def _map(self, cpu, addr):
        page = cpu.get_reg('eax')
        if page < self.highmem_start:
            return                    # lowmem: page_address, no slot
        kmtype = cpu.get_reg('edx')
        task = self.k.sched.current[cpu.index]
        slot = (cpu.index, kmtype)
        old = self.held.get(slot)
        caller = self._caller(cpu, task)
        self.held[slot] = (task, page, caller)
        if old is None or not old[0].alive:
            return
        k = self.k
        self.counters['kmap_slot_reuses'] += 1
        t0, p0, c0 = old
        c0, caller = self._where(c0), self._where(caller)
        k.report('bug', f'kmap_atomic slot reused while held: {_km(kmtype)} on CPU{cpu.index} '
                        f'holds pfn {self._pfn(p0):#x} for {t0.name}/{t0.pid} (mapped from {c0}); '
                        f'{task.name}/{task.pid} maps pfn {self._pfn(page):#x} there from {caller}',
                 task=task, check='kmap_atomic slot reused while held')

    def _unmap(self, cpu, addr):
        kvaddr = cpu.get_reg('eax')
        if kvaddr < FIXMAP_PT_BASE:
            return                    # a lowmem page: nothing was mapped
        slot = (cpu.index, cpu.get_reg('edx'))
        held = self.held.get(slot)
        if held is not None and held[0] is self.k.sched.current[cpu.index]:
            del self.held[slot]

    def _where(self, caller):
        """_caller's answer as text (a return address is named only when a
        report needs it: the hook runs at every kmap_atomic)."""
        return self.k.describe(caller) if isinstance(caller, int) else caller

    def _caller(self, cpu, task):
        """Where kmap_atomic was called from: the return address on the stack
        (an int, see _where), or the Python kernel routine that asked for it
        (a Guest request of `task`, the current one): the innermost
        generator of its newest frame that has one."""
        ret = self.k.machine.read32(cpu.get_reg('esp') - self.k.PAGE_OFFSET)
        if ret != self._ret_to_python:
            return ret
        for f in reversed(task.frames):
            g, name = f.gen, None
            while g is not None and hasattr(g, 'gi_code'):
                name, g = g.gi_code.co_name, g.gi_yieldfrom
            if name:
                return name
        return '?'

    def _pfn(self, page):
        return (page - self.k.page_alloc.memmap_virt) // 32


def _km(kmtype):
    return KM_TYPES[kmtype] if 0 <= kmtype < len(KM_TYPES) else f'km_type {kmtype}'


# What a CPU in a .spin range waits for: range -> (register holding the word's
# address, or a kernel symbol, what it is).
SPIN_WORDS = {'spinlock_wait': ('eax', 'spinlock'), 'kmap_lock_wait': ('kmap_lock', 'kmap_lock'),
              'tlb_ack_wait': ('flush_cpumask', 'TLB flush acknowledgements (flush_cpumask)'),
              'call_function_wait': ('call_data_wait', 'smp_call_function acknowledgements')}


class Watchdog:
    """The soft-lockup detector (kernel/watchdog.c): every watchdog/4 cycles
    (an event, like the NMI/hrtimer that drives Linux's), each CPU that is
    not halted, not in user mode and not in Python kernel code, and has not
    come back to Python for `watchdog` cycles, is stuck."""

    def __init__(self, kernel, counters):
        self.k = kernel
        self.counters = counters
        self.thresh = kernel.config['watchdog']
        self.last = [0] * kernel.config['cpus']
        if self.thresh:
            self.period = max(self.thresh // 4, 1000)
            kernel.machine.schedule(self.period, self._check, self.period, periodic=True)

    def _check(self, at):
        k = self.k
        stuck = []
        for i, cpu in enumerate(k.machine.cpus):
            task = k.sched.current[i]
            busy = (task is not None and not cpu.halted and not task.in_user and task.frames
                    and task.frames[-1].guest)
            if not busy:
                self.last[i] = k.machine.time(i)
            elif k.machine.time(i) - self.last[i] > self.thresh:
                stuck.append((i, cpu, task))
        for i, cpu, task in stuck:
            self._lockup(i, cpu, task)
        if stuck:
            k.machine.stop('soft lockup')
        else:
            k.machine.schedule(at + self.period, self._check, at + self.period, periodic=True)

    def _lockup(self, i, cpu, task):
        k = self.k
        self.counters['soft_lockups'] += 1
        stuck = k.machine.time(i) - self.last[i]
        eip = cpu.regs['eip']
        k.report('bug', f'NMI watchdog: BUG: soft lockup - CPU#{i} stuck for {stuck} cycles! '
                        f'[{task.name}:{task.pid}] EIP at {k.describe(eip)}{self._spinning(cpu, eip)}',
                 task=task, check='soft lockup', eip=eip)

    def _spinning(self, cpu, eip):
        """', spinning on <what> (<value>)' when EIP is in a .spin range."""
        k = self.k
        for name, (lo, hi) in k.image.ranges.items():
            if lo <= eip < hi and name in SPIN_WORDS:
                where, what = SPIN_WORDS[name]
                va = cpu.regs.get(where) if where in cpu.regs else k.image.symbols.get(where)
                if va is None or va < k.PAGE_OFFSET:
                    return f', spinning in {name}'
                value = k.machine.read32(va - k.PAGE_OFFSET)
                return f', spinning on {what} at {self._lock_name(va)} = {value:#x}'
        return ''

    def _lock_name(self, va):
        """A kernel symbol, an mm's page_table_lock, or the address."""
        for mm in self.k.mms:
            if mm.page_table_lock.va == va:
                return mm.page_table_lock.name
        return self.k.symbolizer.name(va)
