"""The process-level system calls real programs make at startup and while
they run, beyond the core set of syscalls.py: kernel/sys.c (uname, the
uid/gid calls, getrlimit, set_tid_address), kernel/signal.c (rt_sigaction,
rt_sigprocmask: the actions and the mask minikernel/signal.py delivers with),
kernel/time.c and posix-timers.c (time, gettimeofday, clock_gettime and
its 64-bit twin, from the lab clock), drivers/char/random.c (getrandom from
the machine's seeded generator), kernel/futex.c's set_robust_list, and
mprotect (mm/mprotect.c, the work is MemoryManager.do_mprotect).

Rules: each sys_* is a generator (task, args) -> EAX; structures go out
with guest copy_to_user.  Everybody is root (uid 0).  The lab clock is the
CPU's cycle count at the time model's 1 GHz (1 cycle = 1 ns), from boot
(the epoch): deterministic, like everything else.
"""
import struct

from .task import nosleep

EPERM, EFAULT, EINVAL = 1, 14, 22
PAGE = 4096
NS_PER_CYCLE = 1
RLIM_INFINITY = 0xFFFFFFFF
RLIMIT_STACK, RLIMIT_NOFILE, RLIM_NLIMITS = 3, 7, 16
NSIG = 64
SIGKILL, SIGSTOP = 9, 19
SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
UTS = ('Linux', 'kmaplab', '2.5.34-kmaplab', '#1 SMP', 'i686', '(none)')


class MiscCalls:
    def __init__(self, kernel, syscalls):
        self.k = kernel
        self.sc = syscalls

    def table(self):
        ids = self.sys_getuid
        return {13: self.sys_time, 24: ids, 47: ids, 49: ids, 50: ids, 199: ids, 200: ids,
                201: ids, 202: ids, 78: self.sys_gettimeofday, 122: self.sys_uname,
                125: self.sys_mprotect, 174: self.sys_rt_sigaction, 175: self.sys_rt_sigprocmask,
                191: self.sys_ugetrlimit, 224: self.sys_gettid, 258: self.sys_set_tid_address,
                265: self.sys_clock_gettime, 311: self.sys_set_robust_list,
                355: self.sys_getrandom, 403: self.sys_clock_gettime64, 60: self.sys_umask}

    def put_user(self, task, uaddr, data):
        return (yield from self.sc.copy_to_user(task, uaddr, data))

    # ---- identity -----------------------------------------------------------

    @nosleep
    def sys_getuid(self, task, args):
        """getuid/geteuid/getgid/getegid (16- and 32-bit): root."""
        return 0

    @nosleep
    def sys_umask(self, task, args):
        """umask(mask) -> the old mask (recorded; file modes ignore it)."""
        old = task.__dict__.get('umask', 0o022)
        task.umask = args[0] & 0o777
        return old

    @nosleep
    def sys_gettid(self, task, args):
        return task.pid

    @nosleep
    def sys_set_tid_address(self, task, args):
        """set_tid_address(tidptr): recorded (clear_child_tid); -> the tid."""
        task.clear_child_tid = args[0]
        return task.pid

    @nosleep
    def sys_set_robust_list(self, task, args):
        if args[1] != 12:                       # sizeof(struct robust_list_head)
            return -EINVAL
        task.robust_list = args[0]
        return 0

    def sys_uname(self, task, args):
        data = b''.join(f.encode().ljust(65, b'\0') for f in UTS)
        return (yield from self.put_user(task, args[0], data))

    def sys_ugetrlimit(self, task, args):
        res = args[0]
        if res >= RLIM_NLIMITS:
            return -EINVAL
        cur = {RLIMIT_STACK: 8 << 20, RLIMIT_NOFILE: 256}.get(res, RLIM_INFINITY)
        return (yield from self.put_user(task, args[1], struct.pack('<II', cur, cur)))

    # ---- signals: actions and the blocked mask --------------------------------------

    def sys_rt_sigaction(self, task, args):
        """rt_sigaction(sig, act, oact, sigsetsize): the kernel struct
        sigaction (handler, flags, restorer, mask) the task's signals are
        delivered with (minikernel/signal.py)."""
        sig, act, oact, size = args[:4]
        if size != 8 or not 1 <= sig <= NSIG:
            return -EINVAL
        table = task.sigactions
        old = table.get(sig, bytes(20))
        if act:
            new = yield from self.sc.copy_from_user(task, act, 20)
            if new is None:
                return -EFAULT
            if sig in (SIGKILL, SIGSTOP):
                return -EINVAL
        if oact:
            err = yield from self.put_user(task, oact, old)
            if err:
                return err
        if act:
            table[sig] = new
        return 0

    def sys_rt_sigprocmask(self, task, args):
        how, uset, oset, size = args[:4]
        if size != 8:
            return -EINVAL
        mask = task.sigmask
        new = mask
        if uset:
            raw = yield from self.sc.copy_from_user(task, uset, 8)
            if raw is None:
                return -EFAULT
            s = struct.unpack('<Q', raw)[0] & ~((1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1)))
            if how == SIG_BLOCK:
                new = mask | s
            elif how == SIG_UNBLOCK:
                new = mask & ~s
            elif how == SIG_SETMASK:
                new = s
            else:
                return -EINVAL
        if oset:
            err = yield from self.put_user(task, oset, struct.pack('<Q', mask))
            if err:
                return err
        task.sigmask = new
        return 0

    # ---- time ---------------------------------------------------------------------

    def now_ns(self, task):
        return self.k.machine.time(task.cpu) * NS_PER_CYCLE

    def sys_time(self, task, args):
        t = self.now_ns(task) // 1_000_000_000
        if args[0]:
            err = yield from self.put_user(task, args[0], struct.pack('<I', t))
            if err:
                return err
        return t

    def sys_gettimeofday(self, task, args):
        ns = self.now_ns(task)
        if args[0]:
            err = yield from self.put_user(task, args[0], struct.pack('<II', ns // 10**9,
                                                                      ns % 10**9 // 1000))
            if err:
                return err
        if args[1]:
            err = yield from self.put_user(task, args[1], bytes(8))
            if err:
                return err
        return 0

    def _clock(self, task, clk):
        if clk > 11 and clk < 0x80000000:
            return None
        return self.now_ns(task)

    def sys_clock_gettime(self, task, args):
        ns = self._clock(task, args[0])
        if ns is None:
            return -EINVAL
        return (yield from self.put_user(task, args[1], struct.pack('<II', ns // 10**9, ns % 10**9)))

    def sys_clock_gettime64(self, task, args):
        ns = self._clock(task, args[0])
        if ns is None:
            return -EINVAL
        return (yield from self.put_user(task, args[1], struct.pack('<qq', ns // 10**9, ns % 10**9)))

    # ---- randomness, memory ----------------------------------------------------------

    def sys_getrandom(self, task, args):
        """getrandom(buf, count, flags): bytes from Machine.rng (seeded),
        copied out a page at a time."""
        buf, count, flags = args[0], args[1], args[2]
        if flags & ~7:
            return -EINVAL
        count = min(count, 33554431)
        done = 0
        rng = self.k.machine.rng
        while done < count:
            n = min(PAGE, count - done)
            err = yield from self.put_user(task, buf + done, bytes(rng.getrandbits(8) for _ in range(n)))
            if err:
                return done if done else err
            done += n
        return done

    def sys_mprotect(self, task, args):
        start, length, prot = args[0], args[1], args[2]
        mm = task.mm
        yield from mm.mmap_sem.down_write(task)
        try:
            return (yield from self.k.mm.do_mprotect(task, mm, start, length, prot))
        finally:
            mm.mmap_sem.up_write(task)
