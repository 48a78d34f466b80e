"""The block layer: submit a request to the disk, sleep until it completes.

Mirrors the role of ll_rw_block / submit_bio + wait_on_buffer (2.4/2.5):
the task that needs the data sleeps in TASK_UNINTERRUPTIBLE; the disk's
completion interrupt (irq.py -> end_requests) runs the completion, which
wakes it.  The disk itself (vm/devices.py) DMAs whole 4 KiB blocks.

Rules
  - bio_read/bio_write may sleep: never call them in atomic context (the
    sleep-in-atomic checker reports it if it happens).
  - A request that fails (fault injection: a swap read error) returns
    -EIO to the sleeper.
"""
from .sched import WaitQueue


class BlockDev:
    def __init__(self, kernel, disk):
        self.k = kernel
        self.disk = disk
        self.counters = dict(bio_reads=0, bio_writes=0, io_wait_sleeps=0, io_errors=0)

    def submit(self, task, op, block, pfn, nblocks, done):
        """Queue a request without waiting; done(req) runs at completion.
        `pfn` is the first of `nblocks` contiguous frames, or a list of
        one frame per block (a multi-page bio: scatter-gather)."""
        self.counters['bio_reads' if op == 'read' else 'bio_writes'] += 1
        if isinstance(pfn, int):
            self.k.trace_event('disk_' + op, task=task, block=block, pfn=pfn)
            return self.disk.submit(op, block, pfn << 12, nblocks, done, task.cpu)
        self.k.trace_event('disk_' + op, task=task, block=block, pfn=pfn[0], nblocks=nblocks)
        return self.disk.submit(op, block, [p << 12 for p in pfn], nblocks, done, task.cpu)

    def bio_rw(self, task, op, block, pfn, nblocks=1):
        """Submit and sleep until done.  Generator -> 0 or -EIO."""
        state = {'done': False, 'error': False}
        wq = WaitQueue(f'bio {op} block {block}')

        def done(req):
            state['done'], state['error'] = True, req.error
            self.k.sched.wake_up(wq)

        self.k.machine.charge(task.cpu, 100)      # = yield Charge(100) (task.py), on the spot
        self.submit(task, op, block, pfn, nblocks, done)
        self.counters['io_wait_sleeps'] += 1
        yield from self.k.sched.wait_event(task, wq, lambda: state['done'], what=('io', op, block))
        if state['error']:
            self.counters['io_errors'] += 1
            return -5
        return 0

    def end_requests(self):
        """The disk interrupt: run the completion of every finished request."""
        k = self.k
        for req in self.disk.reap():
            if k.tracer is not None or k.point_hook is not None:    # someone listens
                k.trace_event('disk_done', op=req.op, block=req.block)
            req.done(req)
