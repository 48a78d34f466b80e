"""Spinlocks shared with guest asm, and the rw-semaphore behind mmap_sem.

Spinlock: a u32 word in lowmem, 0 = unlocked, 1 = locked, taken by guest asm
with `lock xchg` (asm/kernel/lib.S: _spin_lock).  Python kernel code takes
the same word: if it is free, the Python step takes it atomically (no guest
instruction runs during a Python step); if not, it runs the guest spin loop,
so time spent spinning is real guest instructions on that CPU.

RWSemaphore: lib/rwsem-spinlock.c (2.5) semantics, which the munmap-race
scenario depends on:
  - down_read succeeds at once only if no writer holds it AND nobody is
    queued; otherwise the reader queues (FIFO).  So with a writer queued, a
    second down_read by a task that already holds the lock for reading
    sleeps forever: the rwsem is not recursive.
  - down_write succeeds only if nobody holds it and nobody is queued.
  - On release, the head of the queue is granted: one writer, or every
    reader up to the next writer.
Holders are tracked per task for the deadlock detector's wait-for graph.
"""
from .bug import KernelBug
from .sched import WaitQueue
from .task import Charge, Guest


class SpinLock:
    """spinlock_t shared with guest asm.  As in 2.5, holding one raises the
    holder's preempt count (spin_lock = preempt_disable + the lock)."""

    def __init__(self, kernel, name, va):
        self.k = kernel
        self.name = name
        self.va = va                     # kernel virtual address of the word
        self.pa = va - kernel.PAGE_OFFSET
        if self.pa & 3:
            raise KernelBug(f'spinlock {name} at {va:#x} is not 4-byte aligned')
        self.word = self.pa >> 2         # its index in Machine.ram_words
        self.owner = None                # task that took it from Python (None if guest)

    def locked(self):
        return self.k.machine.ram_words[self.word] != 0

    def trylock(self, task):
        """spin_trylock(): take it if free.  Never sleeps, never spins.
        The word is read and written through the machine's 32-bit view of
        RAM (the same bytes as Machine.read32/write32)."""
        k = self.k
        words = k.machine.ram_words
        if words[self.word]:
            return False
        words[self.word] = 1
        k.sched.add_preempt_count(task, 1)
        self.owner = task
        return True

    def lock(self, task):
        """spin_lock(): generator; spins in guest code while it is held."""
        self.k.trace_event('spin_lock', task=task, lock=self.name)
        if not self.trylock(task):
            yield Guest('_spin_lock', self.va)
            self.owner = task

    def unlock(self, task):
        """spin_unlock() (the preempt check happens at the next yield)."""
        k = self.k
        words = k.machine.ram_words
        if not words[self.word]:
            raise KernelBug(f'spin_unlock: {self.name} is not locked')
        self.owner = None
        words[self.word] = 0
        k.sched.add_preempt_count(task, -1)


class RWSemaphore:
    """struct rw_semaphore (rwsem-spinlock flavour)."""

    def __init__(self, kernel, name):
        self.k = kernel
        self.name = name
        self.activity = 0                # >0 readers, -1 writer, 0 free
        self.readers = []                # tasks holding it for reading
        self.writer = None
        self.queue = []                  # (task, 'read'|'write'), FIFO
        self.wq = None
        self._where_read = f'down_read({name})'     # might_sleep's report

    def __repr__(self):
        return f'<rwsem {self.name} activity={self.activity} queued={len(self.queue)}>'

    def holders(self):
        return list(self.readers) + ([self.writer] if self.writer else [])

    def down_read(self, task):
        """Generator.  May sleep."""
        if not self.down_read_fast(task):
            yield from self._wait(task, 'read')

    def down_read_fast(self, task):
        """down_read() up to the point where it would sleep: might_sleep, the
        cost (charged on the spot, as Engine._advance applies a Charge), and
        __down_read's uncontended case (no writer, nobody queued): True if
        the lock is now held for reading.  False: the reader must queue, the
        caller goes on with `yield from sem.down_read_slow(task)`.  The two
        together are down_read(), without a generator for the common case
        (the page fault takes mmap_sem this way).  Never sleeps."""
        k = self.k
        k.sched.might_sleep(task, self._where_read)
        if k.tracer is not None or k.point_hook is not None:    # someone listens
            k.trace_event('rwsem', task=task, op='down_read', lock=self.name)
        k.machine.charge(task.cpu, k.costs['rwsem_op'])
        if self.activity >= 0 and not self.queue:
            self.activity += 1
            self.readers.append(task)
            return True
        return False

    def down_read_slow(self, task):
        """The rest of down_read() after down_read_fast() said False: queue
        and sleep until granted.  Generator.  May sleep."""
        yield from self._wait(task, 'read')

    def down_write(self, task):
        """Generator.  May sleep."""
        self.k.sched.might_sleep(task, f'down_write({self.name})')
        k = self.k
        if k.tracer is not None or k.point_hook is not None:    # someone listens
            k.trace_event('rwsem', task=task, op='down_write', lock=self.name)
        yield from self._charge()
        if self.activity == 0 and not self.queue:
            self.activity = -1
            self.writer = task
            return
        yield from self._wait(task, 'write')

    def up_read(self, task):
        """Never sleeps (wakes the queue's head when the last reader leaves)."""
        try:
            self.readers.remove(task)
        except ValueError:
            raise KernelBug(f'up_read: {task} does not hold {self.name} for reading') from None
        self.activity -= 1
        if self.activity == 0 and self.queue:
            self._grant()
        k = self.k
        if k.tracer is not None or k.point_hook is not None:    # someone listens
            k.trace_event('rwsem', task=task, op='up_read', lock=self.name)

    def up_write(self, task):
        if self.writer is not task:
            raise KernelBug(f'up_write: {task} does not hold {self.name} for writing')
        self.writer = None
        self.activity = 0
        self._grant()
        k = self.k
        if k.tracer is not None or k.point_hook is not None:    # someone listens
            k.trace_event('rwsem', task=task, op='up_write', lock=self.name)

    def _charge(self):
        yield Charge(self.k.costs['rwsem_op'])

    def _wait(self, task, mode):
        entry = [task, mode, False]          # granted flag set by _grant
        self.queue.append(entry)
        sched = self.k.sched
        wq = self._waitqueue()
        yield from sched.wait_event(task, wq, lambda: entry[2], what=('rwsem', self, mode))

    def _waitqueue(self):
        if self.wq is None:
            self.wq = WaitQueue(self.name)
        return self.wq

    def _grant(self):
        """__rwsem_do_wake: a writer at the head gets it alone; otherwise
        every reader up to the next writer."""
        if not self.queue:
            return
        woken = []
        if self.queue[0][1] == 'write':
            entry = self.queue.pop(0)
            self.activity, self.writer = -1, entry[0]
            entry[2] = True
            woken.append(entry[0])
        else:
            while self.queue and self.queue[0][1] == 'read':
                entry = self.queue.pop(0)
                self.activity += 1
                self.readers.append(entry[0])
                entry[2] = True
                woken.append(entry[0])
        for t in woken:
            self.k.sched.wake_up_process(t)

    def waiting(self, task):
        return any(e[0] is task for e in self.queue)
