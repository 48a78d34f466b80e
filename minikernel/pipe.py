"""Pipes: fs/pipe.c of 2.4.18, and the fd calls a shell needs around them
(pipe, dup, dup2).

What this file owns
  - struct pipe_inode_info: one page of lowmem (__get_free_page: the pipe
    buffer, PIPE_SIZE = 4096) used as a ring (start, len), the readers and
    writers counts, the waiting readers/writers counts, one wait queue for
    both sides, and the pipe semaphore (PIPE_SEM, a sleeping lock held
    across each read or write, released while waiting).
  - PipeFile: the struct file of each end (f_count references: fork and
    dup take one, close and exit drop one; the last drop of an end is
    pipe_read_release / pipe_write_release, which wakes the other side;
    when both sides are gone the page is freed).
  - pipe_read / pipe_write as 2.4.18: a reader with nothing to read sleeps
    while there are writers (0 = EOF once there are none); a writer sleeps
    for room, each write of at most PIPE_BUF (4096) bytes is atomic; a
    write with no reader left is -EPIPE plus SIGPIPE (default action:
    the writer dies, a `signal` report).  The bytes move between the user
    buffer and the pipe page by the guest's copy_to_user / copy_from_user
    (the page is kernel lowmem: no kmap); Python never touches them.

Locks and rules
  - pipe.sem is held across every copy (they may fault and sleep); the
    sleeps are interruptible: a signal ends them (-ERESTARTSYS, restarted
    or -EINTR by do_signal, or the bytes already moved).
  - A pipe read or write never holds the sem while sleeping on the queue
    (pipe_wait: up, schedule, down), so the other side can always run.
"""
from .locking import RWSemaphore
from .sched import WaitQueue
from .signal import ERESTARTSYS, SIGPIPE
from .task import Guest

PIPE_SIZE = 4096
PIPE_BUF = 4096
EBADF, EAGAIN, EFAULT, EINVAL, ENFILE, EPIPE, ESPIPE = 9, 11, 14, 22, 23, 32, 29
O_RDONLY, O_WRONLY, O_NONBLOCK, O_CLOEXEC = 0, 1, 0o4000, 0o2000000
NR_OPEN = 256


class Pipe:
    """pipe_inode_info."""

    def __init__(self, kernel, pfn, ino):
        self.k = kernel
        self.pfn = pfn
        self.base = kernel.PAGE_OFFSET + (pfn << 12)
        self.start = 0
        self.len = 0
        self.readers = self.writers = 0
        self.waiting_readers = self.waiting_writers = 0
        self.wait = WaitQueue(f'pipe_wait:{ino}')
        self.sem = RWSemaphore(kernel, f'pipe_sem:{ino}')
        self.ino = ino

    @property
    def free(self):
        return PIPE_SIZE - self.len

    @property
    def end(self):
        return (self.start + self.len) & (PIPE_SIZE - 1)


class PipeInode:
    """What stat sees of a pipe (a FIFO of pipefs)."""
    kind = 'fifo'

    def __init__(self, ino):
        self.ino, self.name = ino, f'pipe:[{ino}]'
        self.mode = 0o010600                 # S_IFIFO | 0600
        self.nlink, self.size, self.mtime = 1, 0, 0


class PipeFile:
    """The struct file of one end of a pipe."""

    def __init__(self, pipes, pipe, flags):
        self.pipes, self.pipe, self.flags = pipes, pipe, flags
        self.count = 0                       # references: the fds that hold it
        self.name = f'pipe:[{pipe.ino}]'
        self.inode = PipeInode(pipe.ino)
        self.pos = 0

    @property
    def readable(self):
        return self.flags & 3 == O_RDONLY

    @property
    def writable(self):
        return self.flags & 3 == O_WRONLY

    def get_file(self):
        self.count += 1

    def fput(self):
        self.count -= 1
        if self.count == 0:
            self.pipes.release(self)

    def read(self, task, buf, count):
        return (yield from self.pipes.pipe_read(task, self, buf, count))

    def write(self, task, buf, count):
        return (yield from self.pipes.pipe_write(task, self, buf, count))

    def __repr__(self):
        return f'<{self.name} {"r" if self.readable else "w"}>'


class Pipes:
    """The pipe file system of one kernel (k.pipes)."""

    def __init__(self, kernel):
        self.k = kernel
        self.next_ino = 1
        self.counters = dict(pipes=0, pipe_reads=0, pipe_writes=0, pipe_bytes=0,
                             pipe_read_waits=0, pipe_write_waits=0, epipe=0)

    # ---- creation and release ------------------------------------------------

    def do_pipe(self, task):
        """do_pipe(): a pipe page and two files.  -> (rfile, wfile) or -errno."""
        k = self.k
        pfn = k.page_alloc.alloc_pages_fast(k.gfp.GFP_KERNEL, 0)
        if pfn is None:
            return -ENFILE
        pipe = Pipe(k, pfn, self.next_ino)
        self.next_ino += 1
        pipe.readers = pipe.writers = 1
        self.counters['pipes'] += 1
        return PipeFile(self, pipe, O_RDONLY), PipeFile(self, pipe, O_WRONLY)

    def release(self, f):
        """pipe_read_release / pipe_write_release (the last reference of
        an end): the other side is woken; the page goes with the last end."""
        p = f.pipe
        if f.readable:
            p.readers -= 1
        else:
            p.writers -= 1
        self.k.sched.wake_up(p.wait)
        if p.readers == 0 and p.writers == 0:
            self.k.page_alloc.free_pages(p.pfn, 0)
            p.pfn = None

    # ---- sleeping ---------------------------------------------------------------

    def pipe_wait(self, task, p):
        """pipe_wait(): release the sem, sleep interruptibly once on the
        pipe's queue, take the sem again.  Generator."""
        k = self.k
        p.sem.up_write(task)
        if not k.signals.signal_pending(task):
            k.sched.prepare_to_wait(task, p.wait, ('pipe', p.ino))
            task.interruptible = True
            task.counters['sleeps'] += 1
            try:
                yield from k.sched.schedule(task)
            finally:
                task.interruptible = False
                k.sched.finish_wait(task, p.wait)
        yield from p.sem.down_write(task)

    # ---- read and write (2.4.18) --------------------------------------------------

    def pipe_read(self, task, f, buf, count):
        """pipe_read().  Generator -> bytes read, 0 at EOF, or -errno."""
        k = self.k
        p = f.pipe
        if count == 0:
            return 0
        self.counters['pipe_reads'] += 1
        yield from p.sem.down_write(task)
        read = 0
        ret = 0
        try:
            while True:                                   # do_more_read
                if p.len == 0:
                    if not p.writers:
                        break
                    if f.flags & O_NONBLOCK:
                        ret = -EAGAIN
                        break
                    interrupted = False
                    while True:
                        p.waiting_readers += 1
                        self.counters['pipe_read_waits'] += 1
                        yield from self.pipe_wait(task, p)
                        p.waiting_readers -= 1
                        if k.signals.signal_pending(task):
                            interrupted = True
                            break
                        if p.len or not p.writers:
                            break
                    if interrupted:
                        ret = -ERESTARTSYS
                        break
                    if p.len == 0:                        # no writers left
                        break
                while count > 0 and p.len:
                    chars = min(PIPE_SIZE - p.start, count, p.len)   # PIPE_MAX_RCHUNK
                    left = yield Guest('copy_to_user', buf, p.base + p.start, chars)
                    if left:
                        ret = -EFAULT
                        break
                    read += chars
                    p.start = (p.start + chars) & (PIPE_SIZE - 1)
                    p.len -= chars
                    count -= chars
                    buf += chars
                if ret:
                    break
                if not p.len:
                    p.start = 0                           # cache behaviour optimization
                if count and p.waiting_writers and not f.flags & O_NONBLOCK:
                    k.sched.wake_up(p.wait)               # wake_up_interruptible_sync
                    continue                              # goto do_more_read
                k.sched.wake_up(p.wait)                   # room for the writers
                break
        finally:
            p.sem.up_write(task)
        self.counters['pipe_bytes'] += read
        return read if read else ret

    def pipe_write(self, task, f, buf, count):
        """pipe_write().  Generator -> bytes written or -errno (-EPIPE with
        SIGPIPE when no reader is left)."""
        k = self.k
        p = f.pipe
        if count == 0:
            return 0
        self.counters['pipe_writes'] += 1
        yield from p.sem.down_write(task)
        written = 0
        ret = 0
        sigpipe = False
        try:
            if not p.readers:
                sigpipe = True
            else:
                need = count if count <= PIPE_BUF else 1  # POSIX: <= PIPE_BUF is atomic
                while p.free < need and not sigpipe:
                    if f.flags & O_NONBLOCK:
                        ret = -EAGAIN
                        break
                    p.waiting_writers += 1
                    self.counters['pipe_write_waits'] += 1
                    yield from self.pipe_wait(task, p)
                    p.waiting_writers -= 1
                    if k.signals.signal_pending(task):
                        ret = -ERESTARTSYS
                        break
                    if not p.readers:
                        sigpipe = True
                while not ret and not sigpipe and count > 0:
                    space = p.free
                    if space:
                        chars = min(PIPE_SIZE - p.end, count, space)   # PIPE_MAX_WCHUNK
                        left = yield Guest('copy_from_user', p.base + p.end, buf, chars)
                        if left:
                            ret = -EFAULT
                            break
                        written += chars
                        p.len += chars
                        count -= chars
                        buf += chars
                        continue
                    if f.flags & O_NONBLOCK:
                        break
                    while not p.free:
                        k.sched.wake_up(p.wait)           # wake_up_interruptible_sync
                        p.waiting_writers += 1
                        self.counters['pipe_write_waits'] += 1
                        yield from self.pipe_wait(task, p)
                        p.waiting_writers -= 1
                        if k.signals.signal_pending(task):
                            ret = -ERESTARTSYS
                            break
                        if not p.readers:
                            sigpipe = True
                            break
                k.sched.wake_up(p.wait)                   # data for the readers
        finally:
            p.sem.up_write(task)
        self.counters['pipe_bytes'] += written
        if sigpipe and not written:
            self.counters['epipe'] += 1
            k.signals.send_sig(task, SIGPIPE, f'SIGPIPE: write to {f.name} with no reader')
            return -EPIPE
        return written if written else ret

    # ---- system calls ----------------------------------------------------------------

    def sys_pipe(self, task, fds_addr, flags=0):
        """pipe(int fds[2]) and pipe2(fds, flags) (2.6.27: O_CLOEXEC,
        O_NONBLOCK).  Generator -> 0 or -errno."""
        k = self.k
        if flags & ~(O_CLOEXEC | O_NONBLOCK):
            return -EINVAL
        r = self.do_pipe(task)
        if isinstance(r, int):
            return r
        rf, wf = r
        rf.flags |= flags & O_NONBLOCK
        wf.flags |= flags & O_NONBLOCK
        files = task.files
        fd0 = files.install(rf)
        fd1 = files.install(wf) if fd0 is not None else None
        if fd1 is None:
            if fd0 is not None:
                yield from k.vfs.sys_close(task, fd0)
            else:
                self.release(rf)
            self.release(wf)
            return -24                                    # EMFILE
        err = yield from k.syscalls.copy_to_user(task, fds_addr,
                                                 fd0.to_bytes(4, 'little') + fd1.to_bytes(4, 'little'))
        if err:
            yield from k.vfs.sys_close(task, fd0)
            yield from k.vfs.sys_close(task, fd1)
            return -EFAULT
        if flags & O_CLOEXEC:
            files.close_on_exec.update((fd0, fd1))
        return 0

