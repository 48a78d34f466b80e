"""System calls, with Linux i386 numbers (arch/i386/kernel/entry.S, 2.5).

Arguments come in EBX, ECX, EDX, ESI, EDI, EBP; the result goes back in
EAX (negative errno on failure).  Every user pointer is checked (access_ok)
and copied with the guest's copy_*_user, so a bad pointer is -EFAULT, never
a crash of the host or the kernel.

Supported: exit 1, fork 2, read 3, write 4, open 5, close 6, waitpid 7,
execve 11, lseek 19, getpid 20, kill 37, getppid 64, munmap 91, wait4 114, clone 120,
writev 146, sched_yield 158, nanosleep 162, vfork 190, mmap2 192,
set_thread_area 243 and get_thread_area 244 (minikernel/tls.py),
sigreturn 119, rt_sigreturn 173, rt_sigsuspend 179, tkill 238, tgkill 270
(minikernel/signal.py),
exit_group 252, getcpu 318, pipe 42, pipe2 331, dup 41, dup2 63.  Anything else: -ENOSYS.

Rules: each sys_* is a generator taking (task, args) and returning EAX;
it may sleep.  A handler marked @nosleep (minikernel/task.py) is a plain
function instead: no guest call, no request (getpid); `nosleep` maps its
number to it, and entry.py's system call fast path runs it without a frame.
"""
import struct

from .memory import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_EXEC, PROT_READ, PROT_WRITE
from .signal import SIG_DFL
from .task import Charge, Guest, nosleep

EPERM, ENOENT, ESRCH, EBADF, EAGAIN, ENOMEM, EFAULT, ENODEV, EINVAL, ESPIPE, ENOSYS = \
    1, 2, 3, 9, 11, 12, 14, 19, 22, 29, 38
NR_OPEN = 256
SIGCHLD = 17
# Signals whose default action is to ignore them (or stop, which the lab
# does not model): kill(2) of these changes nothing.

CLONE_VM = 0x100
UIO_MAXIOV = 512                   # what fits the syscall buffer page (Linux: 1024)
NS_PER_CYCLE = 1                   # the time model's 1 GHz
PAGE = 4096


class Syscalls:
    def __init__(self, kernel):
        self.k = kernel
        self.table = {
            1: self.sys_exit, 3: self.sys_read, 4: self.sys_write, 5: self.sys_open,
            6: self.sys_close, 19: self.sys_lseek, 93: self.sys_ftruncate, 20: self.sys_getpid, 91: self.sys_munmap,
            120: self.sys_clone, 146: self.sys_writev, 158: self.sys_sched_yield, 162: self.sys_nanosleep,
            45: self.sys_brk, 192: self.sys_mmap2, 252: self.sys_exit_group, 318: self.sys_getcpu,
            243: kernel.tls.sys_set_thread_area, 244: kernel.tls.sys_get_thread_area,
            2: self.sys_fork, 190: self.sys_vfork, 7: self.sys_waitpid, 114: self.sys_wait4,
            37: self.sys_kill, 64: self.sys_getppid, 11: self.sys_execve,
            42: self.sys_pipe, 331: self.sys_pipe2,
            119: kernel.signals.sys_sigreturn, 173: kernel.signals.sys_rt_sigreturn,
            179: kernel.signals.sys_rt_sigsuspend, 238: kernel.signals.sys_tkill,
            270: kernel.signals.sys_tgkill,
        }
        self.counters = {}
        from .fs_calls import FsCalls          # the calls real programs make (busybox, libc)
        from .sys_misc import MiscCalls
        for more in (FsCalls(kernel, self), MiscCalls(kernel, self)):
            for nr, fn in more.table().items():
                self.table.setdefault(nr, fn)
        self.nosleep = {nr: fn for nr, fn in self.table.items() if getattr(fn, 'nosleep', False)}

    def system_call(self, task, regs):
        """system_call: dispatch on EAX.  Generator -> EAX."""
        nr = regs['eax']
        fn = self.nosleep.get(nr)
        if fn is not None:
            return self.call_nosleep(task, regs, fn)
        args = (regs['ebx'], regs['ecx'], regs['edx'], regs['esi'], regs['edi'], regs['ebp'])
        fn = self.table.get(nr)
        name = fn.__name__ if fn else f'sys_{nr}'
        self.counters[name] = self.counters.get(name, 0) + 1
        k = self.k
        if k.tracer is not None or k.point_hook is not None:
            k.trace_event('syscall', task=task, nr=nr, name=name, args=args)
        if fn is None:
            key = f'enosys.{nr}'                 # what a program asked for that is not here
            self.counters[key] = self.counters.get(key, 0) + 1
            return -ENOSYS
        ret = yield from fn(task, args)
        if k.tracer is not None or k.point_hook is not None:
            k.trace_event('syscall_exit', task=task, name=name, ret=ret)
        return ret

    def call_nosleep(self, task, regs, fn):
        """system_call for a `nosleep` handler (a plain function: no guest
        call, no request, cannot sleep): the same counters and trace
        events.  Not a generator; entry.py's fast path calls it directly.
        -> EAX."""
        args = (regs['ebx'], regs['ecx'], regs['edx'], regs['esi'], regs['edi'], regs['ebp'])
        name = fn.__name__
        counters, k = self.counters, self.k
        counters[name] = counters.get(name, 0) + 1
        if k.tracer is not None or k.point_hook is not None:
            k.trace_event('syscall', task=task, nr=regs['eax'], name=name, args=args)
        ret = fn(task, args)
        if k.tracer is not None or k.point_hook is not None:
            k.trace_event('syscall_exit', task=task, name=name, ret=ret)
        return ret

    # ---- helpers ----------------------------------------------------------

    def copy_from_user(self, task, uaddr, n):
        """Copy n (<= 4096) bytes from user space through the guest's
        copy_from_user into the task's lowmem buffer.  Generator ->
        bytes, or None on a fault."""
        k = self.k
        kbuf = k.task_kbuf(task)
        left = yield Guest('copy_from_user', kbuf, uaddr, n)
        if left:
            return None
        return k.machine.read(kbuf - k.PAGE_OFFSET, n)

    def copy_to_user(self, task, uaddr, data):
        k = self.k
        kbuf = k.task_kbuf(task)
        k.machine.write(kbuf - k.PAGE_OFFSET, data)
        left = yield Guest('copy_to_user', uaddr, kbuf, len(data))
        return -EFAULT if left else 0

    # ---- process --------------------------------------------------------

    def sys_exit(self, task, args):
        yield from self.k.exit.do_exit(task, args[0] & 0xFF)

    def sys_exit_group(self, task, args):
        for t in self.k.sched.tasks.values():
            if t is not task and t.tgid == task.tgid and t.alive:
                self.k.kill_task(t, 'SIGKILL', 'exit_group')
        yield from self.k.exit.do_exit(task, args[0] & 0xFF)

    @nosleep
    def sys_getpid(self, task, args):
        return task.tgid

    def sys_getcpu(self, task, args):
        """getcpu(unsigned *cpu, unsigned *node, ...) (2.6.19, nr 318)."""
        cpu_p, node_p = args[0], args[1]
        if cpu_p:
            if (yield from self.copy_to_user(task, cpu_p, struct.pack('<I', task.cpu))):
                return -EFAULT
        if node_p:
            if (yield from self.copy_to_user(task, node_p, struct.pack('<I', 0))):
                return -EFAULT
        return 0

    def sys_sched_yield(self, task, args):
        yield from self.k.sched.schedule(task)
        return 0

    def sys_nanosleep(self, task, args):
        req = yield from self.copy_from_user(task, args[0], 8)
        if req is None:
            return -EFAULT
        sec, nsec = struct.unpack('<ii', req)
        if sec < 0 or not 0 <= nsec < 1_000_000_000:
            return -EINVAL
        cycles = (sec * 1_000_000_000 + nsec) // NS_PER_CYCLE
        yield from self.k.sleep_for(task, cycles)
        return 0

    def sys_clone(self, task, args):
        """clone(flags, newsp, parent_tidptr, tls, child_tidptr): with
        CLONE_VM a thread on the parent's CPU; without, fork (kernel/fork.py).
        The child returns 0 from the call."""
        flags, newsp = args[0], args[1]
        if not flags & CLONE_VM:
            return (yield from self.k.fork.do_fork(task, flags, newsp, args[2], args[4]))
        yield Charge(self.k.costs['fork'])
        child = self.k.clone_thread(task, newsp)
        if child is None:
            return -ENOMEM
        yield from self.k.fpu.copy(task, child)        # copy_thread: fpu__copy
        return child.pid

    def sys_fork(self, task, args):
        return (yield from self.k.fork.do_fork(task, SIGCHLD, 0))

    def sys_vfork(self, task, args):
        """vfork(): a fork here (the parent does not wait for the child)."""
        return (yield from self.k.fork.do_fork(task, SIGCHLD, 0))

    def sys_wait4(self, task, args):
        return (yield from self.k.exit.sys_wait4(task, args[0], args[1], args[2], args[3]))

    def sys_waitpid(self, task, args):
        return (yield from self.k.exit.sys_wait4(task, args[0], args[1], args[2], 0))

    def sys_execve(self, task, args):
        """execve(filename, argv, envp): minikernel/exec.py."""
        return (yield from self.k.exec.do_execve(task, args[0], args[1], args[2]))

    def sys_pipe(self, task, args):
        return (yield from self.k.pipes.sys_pipe(task, args[0]))

    def sys_pipe2(self, task, args):
        return (yield from self.k.pipes.sys_pipe(task, args[0], args[1]))

    @nosleep
    def sys_getppid(self, task, args):
        """getppid(): 1 (init) for an orphan or a task the scenario spawned."""
        return task.parent.tgid if task.parent is not None else 1

    def sys_kill(self, task, args):
        """kill(pid, sig): send_sig to each target (minikernel/signal.py):
        a handler runs on a signal frame; the default action of a
        terminating signal kills the target at its return to user mode
        (waking it from an interruptible sleep); SIGCHLD, SIGCONT, SIGURG,
        SIGWINCH and the stop signals are ignored (no job control).  pid > 0
        one process; 0 the caller's process group; -1 every user process
        but the caller; < -1 the process group -pid.  A handler runs in the
        process's first thread only."""
        from .exit import SIGNAL_NAMES
        k = self.k
        pid, sig = args[0], args[1]
        if pid >= 0x80000000:
            pid -= 1 << 32
        if not 0 <= sig <= 64:
            return -EINVAL
        live = [t for t in k.sched.tasks.values() if t.mm is not None and not t.reaped
                and not t.idle]
        if pid > 0:
            targets = [t for t in live if t.tgid == pid]
        elif pid == -1:
            targets = [t for t in live if t.tgid != task.tgid]
        else:
            grp = task.pgrp if pid == 0 else -pid
            targets = [t for t in live if t.pgrp == grp]
        if not targets:
            return -ESRCH
        yield Charge(k.costs['wake_up'])
        if sig == 0:
            return 0
        name = SIGNAL_NAMES.get(sig, f'SIG{sig}')
        for t in targets:
            if t.pid == t.tgid or k.signals.action(t, sig)[0] == SIG_DFL:
                k.signals.send_sig(t, sig, f'{name} from {task.name}/{task.pid}', pid=task.tgid)
        return 0

    # ---- memory ---------------------------------------------------------

    def sys_mmap2(self, task, args):
        """mmap2(addr, len, prot, flags, fd, pgoff)."""
        addr, length, prot, flags, fd, pgoff = args
        k, mm = self.k, task.mm
        if length == 0 or prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC):
            return -EINVAL
        if not flags & (MAP_SHARED | MAP_PRIVATE):
            return -EINVAL
        file = None
        if not flags & MAP_ANONYMOUS and hasattr(self._file(task, fd), 'pipe'):
            return -ENODEV
        if not flags & MAP_ANONYMOUS:
            file = k.vfs.mmap_file(task, fd) if k.vfs else None
            if file is None:
                return -EBADF
        yield from mm.mmap_sem.down_write(task)
        try:
            r = yield from k.mm.do_mmap(task, mm, addr, length, prot, flags, file, pgoff,
                                        name=getattr(file, 'name', '[anon]'))
        finally:
            mm.mmap_sem.up_write(task)
        return r

    def sys_brk(self, task, args):
        """sys_brk() (mm/mmap.c 2.4.18): below start_brk or into another
        mapping, nothing changes; shrinking unmaps; growing extends the
        anonymous heap VMA (do_brk, merged with the one below when they
        touch).  Returns the new (or unchanged) break."""
        from .memory import VMA, VM_READ, VM_WRITE
        brk, mm = args[0], task.mm
        if mm is None or not mm.start_brk or brk < mm.start_brk:
            return mm.brk if mm is not None else 0
        newbrk = (brk + PAGE - 1) & ~(PAGE - 1)
        oldbrk = (mm.brk + PAGE - 1) & ~(PAGE - 1)
        if newbrk == oldbrk:
            mm.brk = brk
            return brk
        yield from mm.mmap_sem.down_write(task)
        try:
            if brk <= mm.brk:
                yield from self.k.mm.do_munmap(task, mm, newbrk, oldbrk - newbrk)
                mm.brk = brk
                return brk
            if newbrk > self.k.PAGE_OFFSET or any(v.start < newbrk + PAGE and v.end > oldbrk
                                                  for v in mm.vmas):
                return mm.brk
            below = next((v for v in mm.vmas if v.end == oldbrk and v.file is None
                          and v.flags == VM_READ | VM_WRITE and v.name == '[heap]'), None)
            if below is not None:
                below.end = newbrk
            else:
                mm.insert_vma(VMA(mm, oldbrk, newbrk, VM_READ | VM_WRITE, None, 0, '[heap]'))
            mm.brk = brk
            return brk
        finally:
            mm.mmap_sem.up_write(task)

    def sys_munmap(self, task, args):
        addr, length = args[0], args[1]
        k, mm = self.k, task.mm
        if addr & (PAGE - 1) or addr >= k.PAGE_OFFSET or length == 0:
            return -EINVAL
        yield from mm.mmap_sem.down_write(task)
        try:
            r = yield from k.mm.do_munmap(task, mm, addr, length)
        finally:
            mm.mmap_sem.up_write(task)
        return r

    # ---- files ----------------------------------------------------------

    def _file(self, task, fd):
        """The fd table's file for fd, or None."""
        files = task.files
        return files.fds.get(fd) if files is not None else None

    def sys_write(self, task, args):
        fd, buf, count = args[0], args[1], args[2]
        f = self._file(task, fd)
        if f is not None and hasattr(f, 'pipe'):
            if not f.writable:
                return -EBADF
            return (yield from f.write(task, buf, count))
        if self.k.vfs is None:
            return -EBADF
        return (yield from self.k.vfs.sys_write(task, fd, buf, count))

    def sys_writev(self, task, args):
        """writev(fd, iov, iovcnt): the iovec is copied in and each segment
        checked (rw_copy_check_uvector), then generic_file_write walks it."""
        fd, iov_addr, iovcnt = args[0], args[1], args[2]
        if not 0 < iovcnt <= UIO_MAXIOV:
            return -EINVAL if iovcnt else 0
        raw = yield from self.copy_from_user(task, iov_addr, 8 * iovcnt)
        if raw is None:
            return -EFAULT
        iov = list(struct.iter_unpack('<II', raw))
        f = self._file(task, fd)
        pipe = f is not None and hasattr(f, 'pipe')
        if pipe and not f.writable:
            return -EBADF
        if pipe:
            total = 0
            for base, n in iov:
                r = yield from f.write(task, base, n)
                if r < 0:
                    return total if total else r
                total += r
            return total
        if self.k.vfs is None:
            return -EBADF
        return (yield from self.k.vfs.sys_writev(task, fd, iov))

    def sys_read(self, task, args):
        fd, buf, count = args[0], args[1], args[2]
        f = self._file(task, fd)
        if f is not None and hasattr(f, 'pipe'):
            if not f.readable:
                return -EBADF
            return (yield from f.read(task, buf, count))
        if self.k.vfs is None:
            return -EBADF
        return (yield from self.k.vfs.sys_read(task, fd, buf, count))

    def sys_open(self, task, args):
        if self.k.vfs is None:
            return -ENOENT
        k = self.k
        kbuf = k.task_kbuf(task)
        n = yield Guest('strncpy_from_user', kbuf, args[0], 255)
        if n >= 0x80000000:
            return -EFAULT
        path = k.machine.read(kbuf - k.PAGE_OFFSET, n).decode('latin-1')
        return (yield from k.vfs.sys_open(task, path, args[1], args[2]))

    def sys_close(self, task, args):
        if self.k.vfs is None:
            return -EBADF
        return (yield from self.k.vfs.sys_close(task, args[0]))

    def sys_lseek(self, task, args):
        if hasattr(self._file(task, args[0]), 'pipe'):
            return -ESPIPE
        if self.k.vfs is None:
            return -EBADF
        return (yield from self.k.vfs.sys_lseek(task, args[0], args[1], args[2]))

    def sys_ftruncate(self, task, args):
        if self.k.vfs is None:
            return -EBADF
        return (yield from self.k.vfs.sys_ftruncate(task, args[0], args[1]))
