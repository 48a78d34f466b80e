"""Devices: a block disk with DMA and latency, and per-CPU local timers.

The disk is the only thing on the machine besides page tables and lowmem
kernel data that touches guest RAM from Python: its DMA copies whole blocks
between RAM and the backing store when a request completes.

Disk model: one request at a time, first come first served.  A request
submitted at time t completes at max(t, busy_until) + latency; the disk then
copies the data (DMA) and raises its interrupt vector on `irq_cpu`.  A
request's memory is one physical range or, for a scatter-gather request
(a multi-page bio), one physical address per block.  The
driver reaps completed requests in its interrupt handler.  The backing store
is sparse (a dict of 4 KiB blocks): never-written blocks read as zeros.
"""
BLOCK_SIZE = 4096


class DiskRequest:
    __slots__ = ('op', 'block', 'pa', 'nblocks', 'done', 'error', 'submitted', 'completes', 'tag')

    def __init__(self, op, block, pa, nblocks, done, tag=None):
        self.op, self.block, self.pa, self.nblocks = op, block, pa, nblocks
        self.done, self.tag, self.error = done, tag, False
        self.submitted = self.completes = 0

    def __repr__(self):
        pa = f'{self.pa:#x}' if isinstance(self.pa, int) else f'[{len(self.pa)} pages]'
        return f'<DiskRequest {self.op} block {self.block}+{self.nblocks} pa {pa}>'

    def block_pa(self, i):
        """Physical address of the request's i-th block."""
        return self.pa + i * BLOCK_SIZE if isinstance(self.pa, int) else self.pa[i]


class Disk:
    def __init__(self, machine, nblocks, latency, vector, irq_cpu=0):
        self.machine = machine
        self.nblocks = nblocks
        self.latency = latency
        self.vector = vector
        self.irq_cpu = irq_cpu
        self.store = {}
        self.busy_until = 0
        self.completed = []
        self.inflight = 0
        self.fail_next = None        # fault injection: callable(req) -> bool (fail it)
        self.extra_latency = None    # fault injection: callable(req) -> extra cycles
        self.counters = dict(reads=0, writes=0, blocks_read=0, blocks_written=0, errors=0)

    def submit(self, op, block, pa, nblocks, done, cpu, tag=None):
        """Queue a 'read' or 'write' of `nblocks` blocks at `block` to/from
        physical address `pa` (or a list of one address per block: scatter-
        gather); `done(req)` is called when the driver reaps it.
        `cpu` is the submitting CPU (its clock is the submission time)."""
        if op not in ('read', 'write'):
            raise ValueError(f'disk op must be read or write, not {op!r}')
        if block < 0 or block + nblocks > self.nblocks:
            raise ValueError(f'disk request beyond the disk: block {block}+{nblocks} of {self.nblocks}')
        if not isinstance(pa, int) and len(pa) != nblocks:
            raise ValueError(f'scatter-gather request: {len(pa)} addresses for {nblocks} blocks')
        req = DiskRequest(op, block, pa, nblocks, done, tag)
        now = self.machine.time(cpu)
        req.submitted = now
        extra = self.extra_latency(req) if self.extra_latency else 0
        req.completes = max(now, self.busy_until) + self.latency + extra
        self.busy_until = req.completes
        self.inflight += 1
        self.machine.schedule(req.completes, self._complete, req)
        return req

    def _complete(self, req):
        if self.fail_next and self.fail_next(req):
            req.error = True
            self.counters['errors'] += 1
        elif req.op == 'read':
            for i in range(req.nblocks):
                data = self.store.get(req.block + i)
                pa = req.block_pa(i)
                self.machine.ram[pa:pa + BLOCK_SIZE] = data if data is not None else bytes(BLOCK_SIZE)
            self.counters['reads'] += 1
            self.counters['blocks_read'] += req.nblocks
        else:
            for i in range(req.nblocks):
                pa = req.block_pa(i)
                self.store[req.block + i] = bytes(self.machine.ram[pa:pa + BLOCK_SIZE])
            self.counters['writes'] += 1
            self.counters['blocks_written'] += req.nblocks
        self.completed.append(req)
        self.machine.raise_irq(self.irq_cpu, self.vector)

    def reap(self):
        """Completed requests since the last reap (called by the driver's
        interrupt handler); their callbacks are the driver's to run."""
        done, self.completed = self.completed, []
        self.inflight -= len(done)
        return done

    def load(self, block, data):
        """Put `data` on the disk before boot (the image a scenario ships)."""
        for i in range(0, len(data), BLOCK_SIZE):
            chunk = bytes(data[i:i + BLOCK_SIZE]).ljust(BLOCK_SIZE, b'\0')
            self.store[block + i // BLOCK_SIZE] = chunk

    def peek(self, block, nblocks=1):
        """The stored bytes of blocks (for checkers; zeros where never written)."""
        return b''.join(self.store.get(block + i, bytes(BLOCK_SIZE)) for i in range(nblocks))


class Timer:
    """A CPU's local APIC timer: raises `vector` on `cpu` every `period` cycles."""

    def __init__(self, machine, cpu, period, vector):
        self.machine, self.cpu, self.period, self.vector = machine, cpu, period, vector
        self.ticks = 0
        self._arm(machine.time(cpu) + period)

    def _arm(self, at):
        self.next_at = at
        self.machine.schedule(at, self._tick, at, periodic=True)

    def _tick(self, at):
        if at != self.next_at:
            return                          # the timer was re-phased by fire_now
        self.fire_now(at)

    def fire_now(self, at=None):
        """Raise the vector now; the next tick is a period from `at` (default:
        the CPU's time)."""
        at = self.machine.time(self.cpu) if at is None else at
        self.ticks += 1
        self.machine.raise_irq(self.cpu, self.vector)
        self._arm(at + self.period)
