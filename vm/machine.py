"""The emulated SMP machine: RAM, CPUs, the clock, interrupts, devices.

What this file owns
  - Guest RAM: one anonymous, lazily backed host mapping (MAP_NORESERVE),
    mapped into every CPU's Unicorn instance with mem_map_ptr.  Untouched
    guest memory costs the host nothing.
  - Simulated time.  Each CPU has its own clock in cycles: instructions it
    retired plus cycles charged to it (kernel costs, idle time).  "Now" for
    the machine is the smallest CPU clock; an event scheduled at time T fires
    once every CPU has reached T.
  - Interrupt lines: per-CPU pending vectors.  A pending vector is taken only
    at a block boundary while EFLAGS.IF=1 (the C block hook checks), so a CPU
    spinning with interrupts off really does not take an IPI.
  - The run loop: the interleaving policy (vm/policy.py) picks the CPU and its
    budget; the driver (the kernel) runs that CPU for the budget.
  - Run-ahead (1-CPU machines, round robin): a quantum boundary inside a
    guest run where this loop would do nothing but give the same CPU its
    next quantum (no event due, below the time limit, the driver not
    finished, no stop, no scheduling point, no schedule log) is crossed by
    the C block hook without stopping (vm/_native.c, kcpu.ahead_*): the
    same instructions, clocks and boundaries as a stop and a new step, and
    counters['runs'] counts each crossing as the run it replaces.  Armed
    per step when the driver has `run_ahead = True`, which promises to
    call end_run_ahead() when its finished() may turn true during a step;
    stop() and a scheduling point that ends the run disarm it, schedule()
    moves its stop to the new event: a Python hook that runs during a
    crossing run (vm/cpu.py hook_code) changes what a boundary reads only
    through these.  `machine.run_ahead = False`: every boundary stops (a
    tracer that records each run, vm/trace.py).  After a guest run the
    driver takes its step's end from `machine.ahead.ahead_end` while
    `machine.ahead` is set (a crossing moves it); a boundary it reaches in
    its own code (kernel Python between guest runs) it crosses itself
    with ahead_end(), under the same rules.
  - Scheduling points: the driver may announce that something meaningful
    happened on the running CPU (sched_point(label), the label opaque here);
    a policy with on_point() may answer by ending that CPU's run there (the
    driver returns at its next boundary, guest code at its next block).

Rules
  - Single host thread, so every guest instruction is atomic and a run is a
    function of (seed, config): the one random generator is `self.rng`.
  - vm/ knows x86 and devices, never Linux: vectors, costs and what a trap
    means are the driver's business.
"""
import ctypes
import heapq
import mmap
import random

from . import _run
from . import spares as spares_mod
from .cpu import CPU
from .devices import Disk, Timer
from .lines import LineModel
from .policy import RoundRobin
from .tlb import TLB_MODES, parse_geometry

MAX_CPUS = 32
MAX_RAM = 3 << 30
MAP_NORESERVE = getattr(mmap, 'MAP_NORESERVE', 0x4000)   # Linux value; Python < 3.13 lacks it


def anonymous_ram(size):
    """A lazily backed host mapping of `size` bytes: pages cost host memory
    only once touched, so a 3 GiB guest is free until it is used."""
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)


class Machine:
    """An SMP x86-32 machine.

    cpus: 1..32.  ram: bytes of guest physical memory (<= 3 GiB, page aligned).
    seed: the seed of the one random generator.  policy: the interleaving.
    ipi_latency: cycles from an IPI being sent to it being pending at the target.
    tlb: 'qemu' (QEMU's soft TLB and walker) or 'p3' (the modelled TLB of vm/tlb.py,
    with tlb_geometry: 'p3', 'unlimited' or entries,ways per array).
    """

    def __init__(self, cpus=1, ram=64 << 20, seed=0, policy=None, ipi_latency=200,
                 tlb='qemu', tlb_geometry=None, spares=None, spares_key=None):
        if not 1 <= cpus <= MAX_CPUS:
            raise ValueError(f'cpus must be 1..{MAX_CPUS}, not {cpus}')
        if ram % 4096 or not 1 << 20 <= ram <= MAX_RAM:
            raise ValueError(f'ram must be a multiple of 4 KiB between 1 MiB and 3 GiB, not {ram}')
        self.ram_size = ram
        # spares (vm/spares.py): build on the RAM and CPUs of a machine that
        # is done, if one of this shape and key was released; else on fresh
        # hardware that release() will give to them
        if tlb != 'qemu':
            spares = None                # the modelled TLB is not reusable
        self._spares, self._spares_key = spares, (spares_key, cpus, ram)
        self._hw = spares.take(self._spares_key) if spares is not None else None
        self._ran = False
        self.kept_code = []              # keep_code: (pa, size)
        if self._hw is not None:
            hw = self._hw
            self.ram, self._ram_c, self.ram_ptr, self.ram_words = (hw.ram, hw.ram_c, hw.ram_ptr,
                                                                    hw.ram_words)
        else:
            self.ram = anonymous_ram(ram)
            self._ram_c = (ctypes.c_char * ram).from_buffer(self.ram)
            self.ram_ptr = ctypes.addressof(self._ram_c)
            # The same RAM as 32-bit words (the host is little-endian, as
            # x86): read32/write32 of an aligned word index it (no bytes object).
            self.ram_words = memoryview(self.ram).cast('I')
        self.seed = seed
        self.rng = random.Random(seed)
        self.policy = policy or RoundRobin()
        self.ipi_latency = ipi_latency
        if tlb not in TLB_MODES:
            raise ValueError(f"tlb must be one of {', '.join(TLB_MODES)}, not {tlb!r}")
        self.tlb = tlb                   # 'qemu': QEMU's soft TLB; 'p3': the model (vm/tlb.py)
        self.tlb_geometry = parse_geometry(tlb_geometry)
        self.lines = None                # the cache-line model, if watch_lines() was called
        # Cycles charged to each CPU beyond instructions, and the halted
        # flags: C arrays, so that the clocks (vm/_run.c Clock) are one C
        # call: time(i), now(), the slowest CPU, all halted.
        self.extra = (ctypes.c_int64 * cpus)()
        self.halted = (ctypes.c_uint8 * cpus)()
        if self._hw is not None:
            self.cpus = self._hw.cpus
            for c in self.cpus:
                c.reset(self)
        else:
            self.cpus = [CPU(self, i) for i in range(cpus)]
            if spares is not None:
                for c in self.cpus:
                    c.make_reusable()
                self._hw = spares_mod.Hardware(self.ram, self._ram_c, self.ram_ptr,
                                               self.ram_words, self.cpus)
                spares.created += 1
        self._clock = _run.Clock([ctypes.addressof(c.k) + type(c.k).executed.offset for c in self.cpus],
                                 ctypes.addressof(self.extra), ctypes.addressof(self.halted),
                                 [ctypes.addressof(c.k) + type(c.k).irq_pending.offset for c in self.cpus])
        self.time = self._clock.time         # the methods below, in C
        self.now = self._clock.now
        self.slowest = self._clock.slowest
        self.times = self._clock.times
        self.all_halted = self._clock.all_halted
        self._idle = self._clock.idle        # _while_halted + _idle_to in one call
        self._oneshot = 0                # events in the queue that are not periodic
        self.charged = [0] * cpus        # cycles charge()d by the driver (not idle), per CPU
        self.pending = [set() for _ in range(cpus)]
        self._events = []                # heap of (time, seq, periodic, fn, args)
        self._seq = 0
        self.devices = []
        self.timers = []                 # per-CPU local timers (add_timers)
        self.counters = dict(ipis_dropped=0)
        self.schedule_log = []           # (cpu, budget) picks, for replay and determinism tests
        self.log_schedule = False
        self.running = None              # index of the CPU the driver is stepping, else None
        self.yield_cpu = False           # set by sched_point: end the running CPU's step
        self.stopped = None              # set by stop(reason)
        self._idle_round = None          # _while_halted: the limit idle CPUs catch up to (Python path)
        self.ipi_filter = None           # fault injection: fn(src, dst, vector) -> delay
                                         # in cycles, or None to drop the IPI
        self.run_ahead = True            # False: every quantum boundary is a stop (tracers, debuggers)
        self.ahead = None                # the running CPU's kcpu while run-ahead is armed

    def watch_lines(self):
        """The machine's cache-line model (vm/lines.py), created on first use."""
        if self.lines is None:
            self.lines = LineModel(self)
        return self.lines

    # ---- physical memory ----------------------------------------------

    def read(self, pa, n):
        return self.ram[pa:pa + n]

    def write(self, pa, data):
        self.ram[pa:pa + len(data)] = data

    def memory_digest(self):
        """sha256 (hex) of all guest RAM, byte 0 to ram_size: what a user
        compares to check that two runs left the same memory (hashed from
        the mapping in place: untouched pages read as the zero page, no copy)."""
        import hashlib
        return hashlib.sha256(self.ram).hexdigest()

    def read32(self, pa):
        if pa & 3 or not 0 <= pa < self.ram_size:
            return int.from_bytes(self.ram[pa:pa + 4], 'little')
        return self.ram_words[pa >> 2]

    def write32(self, pa, value):
        if pa & 3 or not 0 <= pa < self.ram_size:
            self.ram[pa:pa + 4] = (value & 0xFFFFFFFF).to_bytes(4, 'little')
        else:
            self.ram_words[pa >> 2] = value & 0xFFFFFFFF

    # ---- reuse (vm/spares.py) -------------------------------------------

    def keep_code(self, pa, size):
        """Physical [pa, pa + size) holds code that a later machine built
        on this one's hardware (spares) will likely boot again (a kernel
        image): its translations are kept at release() and checked byte
        for byte at that machine's first run.  Without spares: nothing."""
        self.kept_code.append((pa, size))

    def release(self):
        """Done with this machine: give its RAM and CPUs to its spares
        (zeroed, reset by the next machine).  The machine and everything
        reading its RAM or CPUs must not be used afterwards.  Without
        spares: nothing."""
        spares_mod.release(self)

    # ---- time -----------------------------------------------------------

    # time, now, slowest, times and all_halted are vm/_run.c's Clock methods
    # (set in __init__); these are their definitions.

    def time(self, cpu):
        """Cycles elapsed on `cpu` (an index)."""
        return self.cpus[cpu].k.executed + self.extra[cpu]

    def now(self):
        """The slowest CPU's clock."""
        return min(self.time(i) for i in range(len(self.cpus)))

    def slowest(self):
        """The CPU with the smallest clock, the lowest index on ties."""
        return min(range(len(self.cpus)), key=self.time)

    def times(self):
        return [self.time(i) for i in range(len(self.cpus))]

    def all_halted(self):
        return all(self.halted)

    def charge(self, cpu, cycles):
        """Charge `cycles` of non-instruction time to `cpu`."""
        self.charged[cpu] += cycles
        self.extra[cpu] += cycles

    def schedule(self, at, fn, *args, periodic=False):
        """Call fn(*args) once every CPU's clock has reached `at`."""
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, periodic, fn, args))
        if not periodic:
            self._oneshot += 1
        k = self.ahead
        if k is not None and at < k.ahead_cap:          # run-ahead stops at the new event
            k.ahead_cap = at
            k.ahead_stop = min(k.ahead_stop, at)

    def next_event_time(self):
        return self._events[0][0] if self._events else None

    def only_periodic_events(self):
        return self._oneshot == 0

    def _fire_due(self, now):
        events = self._events
        while events and events[0][0] <= now:
            _, _, periodic, fn, args = heapq.heappop(events)
            if not periodic:
                self._oneshot -= 1
            fn(*args)

    # ---- interrupts -----------------------------------------------------

    def raise_irq(self, cpu, vector):
        """Make `vector` pending on `cpu`; taken at its next block boundary
        with IF=1 (or when it next halts with IF=1)."""
        self.pending[cpu].add(vector)
        self.cpus[cpu].k.irq_pending = 1
        self.halted[cpu] = 0

    def next_irq(self, cpu):
        """The highest pending vector on `cpu` (x86: higher vector, higher
        priority), removed from the pending set; None if none."""
        p = self.pending[cpu]
        if not p:
            return None
        v = max(p)
        p.discard(v)
        if not p:
            self.cpus[cpu].k.irq_pending = 0
        self.cpus[cpu].counters['interrupts'] += 1
        return v

    def send_ipi(self, src, dests, vector):
        """Inter-processor interrupt from `src` to each CPU in `dests`:
        pending at the target `ipi_latency` cycles after the sender's now."""
        at = self.time(src) + self.ipi_latency
        for d in dests:
            self.cpus[src].counters['ipis_sent'] += 1
            delay = 0
            if self.ipi_filter is not None:
                delay = self.ipi_filter(src, d, vector)
                if delay is None:
                    self.counters['ipis_dropped'] += 1
                    continue
            self.schedule(at + delay, self._deliver_ipi, d, vector)

    def _deliver_ipi(self, cpu, vector):
        self.cpus[cpu].counters['ipis_received'] += 1
        self.raise_irq(cpu, vector)

    # ---- devices --------------------------------------------------------

    def add_disk(self, nblocks, latency, vector, irq_cpu=0):
        disk = Disk(self, nblocks, latency, vector, irq_cpu)
        self.devices.append(disk)
        return disk

    def add_timers(self, period, vector):
        """A periodic local timer on every CPU, first tick after `period`."""
        timers = [Timer(self, i, period, vector) for i in range(len(self.cpus))]
        self.devices.extend(timers)
        self.timers = timers
        return timers

    def tick_now(self, cpu):
        """`cpu`'s local timer fires now and keeps its period from here (a
        different phase of the timer against the code: what a schedule
        explorer chooses, as the hardware's timing would)."""
        self.timers[cpu].fire_now()

    # ---- the run loop ---------------------------------------------------

    def sched_point(self, label, cpu=None):
        """Something meaningful happened on the running CPU (`label`, opaque
        to vm).  A policy with on_point(machine, cpu, label) -> bool may end
        that CPU's run here: the driver's step returns at its next boundary
        (yield_cpu), guest code stops at its next block boundary (limit 0).
        Points outside a step (event callbacks) are not points."""
        on_point = getattr(self.policy, 'on_point', None)
        if on_point is None or self.running is None:
            return
        cpu = self.running if cpu is None else cpu
        if on_point(self, cpu, label):
            self.yield_cpu = True
            self.end_run_ahead()
            self.cpus[cpu].k.limit = 0

    def stop(self, reason):
        """Ask run() to return after the current step."""
        self.stopped = reason
        self.end_run_ahead()

    def end_run_ahead(self):
        """No more run-ahead in this step: the next quantum boundary stops
        (the driver's finished() may have turned true, or run() must
        return)."""
        k = self.ahead
        if k is not None:
            k.ahead_q = 0
            self.ahead = None

    def ahead_end(self, i, now):
        """Run-ahead at a boundary the driver reached in its own code
        (CPU `i`'s clock `now` >= its step's end, between guest runs): the
        end of the step the loop would start (min(quantum, next event -
        now) from now), or 0: return to the loop."""
        k = self.ahead
        if k is None or not k.ahead_q or now >= k.ahead_stop or self.halted[i]:
            return 0
        end = now + min(k.ahead_q, k.ahead_cap - now)
        k.ahead_end = end
        return end

    def _arm_ahead(self, k, quantum, end, nxt, max_cycles):
        """Run-ahead for the step about to run on kcpu `k`, which ends at
        clock `end` (see the top of the file)."""
        never = (1 << 64) - 1
        cap = never if nxt is None else nxt
        k.ahead_cap = cap
        k.ahead_stop = cap if max_cycles is None else min(cap, max_cycles)
        k.ahead_end = end
        k.ahead_q = quantum
        self.ahead = k

    # _while_halted and _idle_to are the definitions of the run loop's
    # halted-CPU pick; run() calls them as one C call (vm/_run.c Clock.idle,
    # which reads `pending` as each kcpu's irq_pending: raise_irq and
    # next_irq keep it equal to bool(pending[i])).

    def _while_halted(self, cpu, budget, nxt):
        """The policy picked a halted CPU with nothing pending.  It idles
        until the next event or the time of the slowest CPU that can still
        act (run, or take an interrupt), whichever comes first: nothing can
        wake it before then.  Past that it stays where it is, so it takes a
        device interrupt or an IPI on time rather than a lead late, and the
        slowest active CPU runs the budget instead (up to the next event).
        -> (cpu to run, budget) or (None, None) when the time was spent
        idling."""
        t = self.time(cpu)
        halted, pending = self.halted, self.pending
        active = [i for i in range(len(self.cpus)) if not halted[i] or pending[i]]
        limit = min([self.time(i) for i in active] + ([nxt] if nxt is not None else []),
                    default=t + budget)          # nothing can wake it: the budget passes
        if t < limit or not active:
            self.extra[cpu] += min(budget, limit - t) if t < limit else budget
            if t < limit and active:
                self._idle_round = limit
            return None, None
        slow = min(active, key=self.time)
        if nxt is not None:
            budget = min(budget, nxt - self.time(slow))
        return slow, max(budget, 1)

    def _idle_to(self, limit):
        """Round robin's idle CPUs catching up, in one go: with RoundRobin
        the slowest CPU runs next, so while idle CPUs (halted, nothing
        pending) lag behind `limit` (the slowest CPU that can act, or the
        next event) the loop does nothing but idle them, one quantum of one
        CPU per pass, until each is exactly at `limit`; no event falls due
        and nothing else moves before the last one gets there.  This sets
        that end state at once: one O(CPUs) pass instead of one per CPU
        and quantum (the host cost of idle CPUs at 32 CPUs)."""
        halted, pending, extra, time_ = self.halted, self.pending, self.extra, self.time
        for i in range(len(self.cpus)):
            if halted[i] and not pending[i]:
                t = time_(i)
                if t < limit:
                    extra[i] += limit - t

    def run(self, driver, max_cycles=None):
        """Drive the machine until driver.finished(), stop(), or `max_cycles`
        of simulated time.  Returns the stop reason (a string)."""
        self.stopped = None
        if self._hw is not None and not self._ran:
            spares_mod.first_run(self)        # carried translations checked, hooks compared
        ncpu = len(self.cpus)
        rr = type(self.policy) is RoundRobin
        # run-ahead (the top of the file): one CPU, round robin, a driver
        # that keeps its promise, nobody watching every run
        ahead = ncpu == 1 and rr and self.run_ahead and getattr(driver, 'run_ahead', False)
        try:
            return self._loop(driver, max_cycles, ahead)
        finally:
            self.end_run_ahead()

    def _loop(self, driver, max_cycles, ahead):
        ncpu = len(self.cpus)
        now_, time_, all_halted, events = self.now, self.time, self.all_halted, self._events
        halted, pending, cpus, extra = self.halted, self.pending, self.cpus, self.extra
        pick, idle = self.policy.pick, self._idle
        rr = type(self.policy) is RoundRobin
        while self.stopped is None:
            now = now_()
            if events and events[0][0] <= now:
                self._fire_due(now)
            if driver.finished():
                return 'finished'
            if max_cycles is not None and now >= max_cycles:
                return 'time limit'
            if self._oneshot == 0 and all_halted():
                reason = driver.stalled()
                if reason:
                    return reason
            cpu, budget = pick(self)
            nxt = events[0][0] if events else None
            t = time_(cpu)
            if nxt is not None and nxt > t:
                budget = min(budget, nxt - t)
            budget = max(budget, 1)
            if self.log_schedule:
                self.schedule_log.append((cpu, budget))
            c = cpus[cpu]
            if halted[cpu] and not pending[cpu]:
                if nxt is not None and all_halted():
                    for i in range(ncpu):          # everyone waits: skip to the event
                        extra[i] += max(0, nxt - time_(i))
                    continue
                # _while_halted, then the rest of the idling round at once
                # (_idle_to): only where the passes it replaces are
                # invisible: round robin (no random draws per pick), no
                # schedule log, a CPU running (stalled() is not asked), the
                # time limit not inside the round.  One C call (idle).
                fast = rr and not self.log_schedule
                picked = idle(cpu, budget, -1 if nxt is None else nxt,
                              (-1 if max_cycles is None else max_cycles) if fast else -2)
                if picked is None:
                    continue
                cpu, budget = picked
                c = cpus[cpu]
            self.running, self.yield_cpu = cpu, False
            if ahead and not self.log_schedule:
                self._arm_ahead(c.k, self.policy.quantum, t + budget, nxt, max_cycles)
            driver.step(c, budget)
            self.running = None
            if self.ahead is not None:
                self.end_run_ahead()
        return self.stopped
