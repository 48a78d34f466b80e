"""Signals: sending, the signal frame on the user stack, sigreturn, sigsuspend.

Mirrors kernel/signal.c (2.4.18: send_sig_info, ignored_signal,
sys_rt_sigsuspend; 2.6's saved_sigmask for the mask sigsuspend installs)
and arch/i386/kernel/signal.c (2.4.18: do_signal, handle_signal,
setup_frame, setup_rt_frame, setup_sigcontext, restore_sigcontext,
sys_sigreturn, sys_rt_sigreturn).

Per task (minikernel/task.py): sigactions (signal -> the 20-byte kernel
struct sigaction of rt_sigaction: handler, flags, restorer, mask), sigmask
(blocked, 64 bits), sigpending (64 bits), siginfo (signal -> (code, pid,
status) of the pending one), saved_sigmask (sigsuspend's mask to restore
after the handler), orig_eax (the system call number for a restart, -1
when there is none).

Rules
  - A signal whose action is the default runs the default action at once:
    ignore (SIGCHLD, SIGCONT, SIGURG, SIGWINCH, and the stop signals: no
    job control here) or kill (Kernel.kill_task: the task dies at its
    return to user mode, woken from an interruptible sleep).  SIG_IGN drops
    it.  A signal with a handler is made pending; a task in an
    interruptible sleep (wait4, a pipe, sigsuspend, nanosleep) is woken if
    the signal is not blocked, and its system call returns -ERESTARTSYS
    (restarted when the handler has SA_RESTART) or -ERESTARTNOHAND
    (sigsuspend: -EINTR once a handler ran).
  - do_signal runs at the return to user mode (Traps.from_user), once per
    return, after need_resched: the lowest pending unblocked signal gets a
    frame on the user stack, written with the guest's copy_to_user (a bad
    stack is SIGSEGV, as force_sigsegv), and the task resumes in its
    handler with the signal blocked (unless SA_NODEFER) plus sa_mask.  The
    frame returns through sa_restorer (SA_RESTORER, glibc's) or the
    retcode on the stack (popl %eax; movl $119,%eax; int $0x80), and
    sigreturn restores every register and the mask from the frame.
  - The frame's fpstate pointer is NULL, as 2.4 writes it for a task that
    has not used the FPU: the registers are not saved in the frame.  A
    handler that uses the x87/SSE registers would change the interrupted
    code's; sigreturn ignores a non-NULL fpstate (docs/architecture.md).
  - No sigaltstack (SA_ONSTACK is ignored), no real-time signal queueing:
    one pending instance per signal, as 2.4 for signals below SIGRTMIN.

Locks: none; per-task state changed by the task itself or by a sender
with the run loop's one Python step (siglock in Linux).  do_signal, the
frame setup and sigreturn run guest copy_*_user and may fault (and sleep).
"""
import struct

from .sched import WaitQueue
from .task import Charge

SIGKILL, SIGSEGV, SIGPIPE, SIGCHLD, SIGCONT, SIGSTOP = 9, 11, 13, 17, 18, 19
SIGTSTP, SIGTTIN, SIGTTOU, SIGURG, SIGWINCH = 20, 21, 22, 23, 28
NSIG = 64
SIG_DFL, SIG_IGN = 0, 1
SA_SIGINFO, SA_RESTORER, SA_ONSTACK = 0x4, 0x04000000, 0x08000000
SA_RESTART, SA_NODEFER, SA_RESETHAND = 0x10000000, 0x40000000, 0x80000000
EINTR, ESRCH, EINVAL, EFAULT = 4, 3, 22, 14
ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND = 512, 513, 514
RESTARTS = (-ERESTARTSYS, -ERESTARTNOINTR, -ERESTARTNOHAND)
SI_USER, CLD_EXITED, CLD_KILLED = 0, 1, 2
NR_SIGRETURN, NR_RT_SIGRETURN = 119, 173
UNBLOCKABLE = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1))
DEFAULT_IGNORE = {SIGCHLD, SIGCONT, SIGURG, SIGWINCH, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU}
EFLAGS_USER = 0x40DD5            # the flags sigreturn takes from the frame (FIX_EFLAGS)
TF = 0x100
USER_DS = 0x2B

# struct sigcontext (asm-i386/sigcontext.h): 22 words.
SIGCONTEXT = struct.Struct('<22I')
SIGCONTEXT_SIZE = SIGCONTEXT.size                   # 88
FPSTATE_SIZE = 624                                  # struct _fpstate (the frame keeps its room)
# struct sigframe: pretcode, sig, sc, fpstate, extramask[1], retcode[8]
SF_SC = 8
SF_EXTRAMASK = SF_SC + SIGCONTEXT_SIZE + FPSTATE_SIZE
SF_RETCODE = SF_EXTRAMASK + 4
SIGFRAME_SIZE = SF_RETCODE + 8                      # 732
# struct rt_sigframe: pretcode, sig, pinfo, puc, info (128), uc, fpstate, retcode[8];
# struct ucontext: uc_flags, uc_link, uc_stack (12), uc_mcontext (sigcontext), uc_sigmask (8).
SIGINFO_SIZE = 128
RT_INFO = 16
RT_UC = RT_INFO + SIGINFO_SIZE
RT_SC = RT_UC + 20
RT_SIGMASK = RT_SC + SIGCONTEXT_SIZE
RT_RETCODE = RT_SIGMASK + 8 + FPSTATE_SIZE
RT_SIGFRAME_SIZE = RT_RETCODE + 8                   # 892


def sigbit(sig):
    return 1 << (sig - 1)


class Signals:
    def __init__(self, kernel):
        self.k = kernel
        self.counters = dict(signals_sent=0, signals_ignored=0, signals_delivered=0,
                             sigreturns=0, sigsuspends=0, syscalls_restarted=0, bad_sigframes=0)

    # ---- the task's actions ---------------------------------------------------------

    def action(self, task, sig):
        """(handler, flags, restorer, mask) of the task's struct sigaction for sig."""
        raw = task.sigactions.get(sig)
        if raw is None:
            return SIG_DFL, 0, 0, 0
        return struct.unpack('<IIIQ', raw)

    def copy_sighand(self, parent, child):
        """copy_sighand() + the blocked mask (fork): the child's actions and
        mask are the parent's, nothing pending."""
        child.sigactions = dict(parent.sigactions)
        child.sigmask = parent.sigmask

    def flush_signal_handlers(self, task):
        """flush_signal_handlers() (exec): every handler back to SIG_DFL;
        SIG_IGN stays; the mask and pending signals stay."""
        for sig in list(task.sigactions):
            if self.action(task, sig)[0] != SIG_IGN:
                del task.sigactions[sig]
        task.saved_sigmask = None

    def signal_pending(self, task):
        """signal_pending(): a fatal signal, or a pending unblocked one."""
        return task.killed_by is not None or bool(task.sigpending & ~task.sigmask)

    # ---- sending ------------------------------------------------------------------------

    def send_sig(self, task, sig, why, code=SI_USER, pid=0, status=0):
        """send_sig_info(): the default action at once (ignore or kill),
        dropped if SIG_IGN, else pending and the task woken from an
        interruptible sleep.  No lock; never sleeps."""
        from .exit import SIGNAL_NAMES
        if not task.alive or sig == 0:
            return
        self.counters['signals_sent'] += 1
        handler = self.action(task, sig)[0] if sig not in (SIGKILL, SIGSTOP) else SIG_DFL
        if handler == SIG_IGN or (handler == SIG_DFL and sig in DEFAULT_IGNORE):
            self.counters['signals_ignored'] += 1
            return
        if handler == SIG_DFL:
            name = SIGNAL_NAMES.get(sig, f'SIG{sig}')
            self.k.kill_task(task, name, why, kind='signal')
            return
        task.sigpending |= sigbit(sig)
        task.siginfo[sig] = (code, pid, status)
        self.k.trace_event('signal', task=task, sig=sig, why=why)
        if task.interruptible and sigbit(sig) & ~task.sigmask:
            self.k.sched.wake_up_process(task)

    # ---- delivery (arch/i386/kernel/signal.c) --------------------------------------------

    def work_pending(self, task, kind, value):
        """What ret_from_sys_call checks before restore_all."""
        return bool(task.sigpending & ~task.sigmask) or (kind == 'syscall' and value in RESTARTS
                                                        and task.orig_eax >= 0)

    def do_signal(self, task, kind, value):
        """do_signal(): deliver the lowest pending unblocked signal to its
        handler, with the system call restart rules of handle_signal.
        Generator -> the value to return in EAX (for a system call)."""
        k = self.k
        u = task.uregs
        ready = task.sigpending & ~task.sigmask
        restart = kind == 'syscall' and value in RESTARTS and task.orig_eax >= 0
        if not ready:
            if restart:                         # no handler ran: restart the call
                self.counters['syscalls_restarted'] += 1
                u['eip'] = (u['eip'] - 2) & 0xFFFFFFFF
                return task.orig_eax
            return value
        sig = (ready & -ready).bit_length()
        task.sigpending &= ~sigbit(sig)
        info = task.siginfo.pop(sig, (SI_USER, 0, 0))
        handler, flags, restorer, mask = self.action(task, sig)
        if handler in (SIG_DFL, SIG_IGN):       # the action changed while it was pending
            if handler == SIG_DFL and sig not in DEFAULT_IGNORE:
                from .exit import SIGNAL_NAMES
                name = SIGNAL_NAMES.get(sig, f'SIG{sig}')
                k.kill_task(task, name, f'{name} (default action at delivery)', kind='signal')
            elif restart:
                self.counters['syscalls_restarted'] += 1
                u['eip'] = (u['eip'] - 2) & 0xFFFFFFFF
                return task.orig_eax
            return value
        if restart:
            if value == -ERESTARTNOHAND or (value == -ERESTARTSYS and not flags & SA_RESTART):
                value = -EINTR
            else:
                self.counters['syscalls_restarted'] += 1
                value = task.orig_eax
                u['eip'] = (u['eip'] - 2) & 0xFFFFFFFF
        if kind == 'syscall':
            u['eax'] = value & 0xFFFFFFFF
        task.orig_eax = -1
        oldset = task.saved_sigmask if task.saved_sigmask is not None else task.sigmask
        task.saved_sigmask = None
        if flags & SA_SIGINFO:
            ok = yield from self.setup_rt_frame(task, sig, handler, flags, restorer, oldset, info)
        else:
            ok = yield from self.setup_frame(task, sig, handler, flags, restorer, oldset)
        if not ok:
            self.counters['bad_sigframes'] += 1
            k.kill_task(task, 'SIGSEGV', f'SIGSEGV: cannot write the frame of signal {sig} '
                                         f'at {task.uregs["esp"]:#010x}')
            return value
        self.counters['signals_delivered'] += 1
        if flags & SA_RESETHAND:
            task.sigactions.pop(sig, None)
        if not flags & SA_NODEFER:
            task.sigmask = (task.sigmask | mask | sigbit(sig)) & ~UNBLOCKABLE
        k.trace_event('signal_deliver', task=task, sig=sig, handler=handler)
        return task.uregs['eax']

    def _sigcontext(self, task, oldmask):
        """setup_sigcontext(): the interrupted user registers."""
        u = task.uregs
        return SIGCONTEXT.pack(u.get('gs', 0) & 0xFFFF, u.get('fs', 0) & 0xFFFF, USER_DS, USER_DS,
                               u['edi'], u['esi'], u['ebp'], u['esp'], u['ebx'], u['edx'],
                               u['ecx'], u['eax'] & 0xFFFFFFFF, 0, 0, u['eip'], 0x23,
                               u['eflags'], u['esp'], USER_DS, 0, oldmask & 0xFFFFFFFF, 0)

    def _enter_handler(self, task, frame, sig, handler, regparm):
        u = task.uregs
        u['esp'] = frame
        u['eip'] = handler
        u['eax'] = sig                     # 2.6: regparm(3) handlers get sig in %eax
        u['edx'], u['ecx'] = regparm
        u['eflags'] &= ~TF

    def setup_frame(self, task, sig, handler, flags, restorer, oldset):
        """setup_frame() (2.4.18): struct sigframe below the user stack
        pointer, 8-byte aligned.  Generator -> True, or False if the stack
        cannot be written."""
        frame = (task.uregs['esp'] - SIGFRAME_SIZE) & ~7
        pretcode = restorer if flags & SA_RESTORER else frame + SF_RETCODE
        buf = (struct.pack('<Ii', pretcode, sig) + self._sigcontext(task, oldset)
               + bytes(FPSTATE_SIZE) + struct.pack('<I', oldset >> 32 & 0xFFFFFFFF)
               + struct.pack('<HIH', 0xB858, NR_SIGRETURN, 0x80CD))
        if (yield from self.k.syscalls.copy_to_user(task, frame, buf)):
            return False
        self._enter_handler(task, frame, sig, handler, (0, 0))
        return True

    def setup_rt_frame(self, task, sig, handler, flags, restorer, oldset, info):
        """setup_rt_frame() (2.4.18): struct rt_sigframe with the siginfo
        and a ucontext.  Generator -> True, or False."""
        frame = (task.uregs['esp'] - RT_SIGFRAME_SIZE) & ~7
        pretcode = restorer if flags & SA_RESTORER else frame + RT_RETCODE
        code, pid, status = info
        siginfo = struct.pack('<iiiiII', sig, 0, code, pid, 0, status).ljust(SIGINFO_SIZE, b'\0')
        uc = struct.pack('<IIIII', 0, 0, 0, 2, 0)          # uc_stack.ss_flags = SS_DISABLE
        buf = (struct.pack('<IiII', pretcode, sig, frame + RT_INFO, frame + RT_UC) + siginfo + uc
               + self._sigcontext(task, oldset) + struct.pack('<Q', oldset) + bytes(FPSTATE_SIZE)
               + struct.pack('<BIHB', 0xB8, NR_RT_SIGRETURN, 0x80CD, 0))
        if (yield from self.k.syscalls.copy_to_user(task, frame, buf)):
            return False
        self._enter_handler(task, frame, sig, handler, (frame + RT_INFO, frame + RT_UC))
        return True

    def restore_sigcontext(self, task, raw):
        """restore_sigcontext(): the registers from the frame; the user
        may change the general registers, EIP, ESP and the flags in
        EFLAGS_USER; CS and SS stay user segments; fs and gs go through
        restore_all's fixups.  -> EAX of the frame."""
        (gs, fs, _es, _ds, edi, esi, ebp, esp, ebx, edx, ecx, eax, _trapno, _err, eip, _cs,
         eflags, _esp2, _ss, _fpstate, _oldmask, _cr2) = SIGCONTEXT.unpack(raw)
        u = dict(task.uregs)
        u.update(edi=edi, esi=esi, ebp=ebp, esp=esp, ebx=ebx, edx=edx, ecx=ecx, eip=eip,
                 fs=fs & 0xFFFF, gs=gs & 0xFFFF,
                 eflags=(u['eflags'] & ~EFLAGS_USER) | (eflags & EFLAGS_USER))
        task.uregs = u
        task.orig_eax = -1                 # no restart after sigreturn
        return eax

    def _badframe(self, task, what):
        self.counters['bad_sigframes'] += 1
        self.k.kill_task(task, 'SIGSEGV', f'SIGSEGV: {what} with a bad frame at '
                                         f'{task.uregs["esp"]:#010x}')
        return 0

    def sys_sigreturn(self, task, args):
        """sys_sigreturn() (2.4.18): the frame is 8 bytes under ESP (the
        handler's return popped pretcode, the retcode popped sig).
        Generator -> the interrupted context's EAX."""
        frame = (task.uregs['esp'] - 8) & 0xFFFFFFFF
        raw = yield from self.k.syscalls.copy_from_user(task, frame, SF_RETCODE)
        if raw is None:
            return self._badframe(task, 'sigreturn')
        self.counters['sigreturns'] += 1
        lo = struct.unpack_from('<I', raw, SF_SC + SIGCONTEXT_SIZE - 8)[0]
        hi = struct.unpack_from('<I', raw, SF_EXTRAMASK)[0]
        task.sigmask = (lo | hi << 32) & ~UNBLOCKABLE
        return self.restore_sigcontext(task, raw[SF_SC:SF_SC + SIGCONTEXT_SIZE])

    def sys_rt_sigreturn(self, task, args):
        """sys_rt_sigreturn() (2.4.18): the frame is 4 bytes under ESP.
        Generator -> the interrupted context's EAX."""
        frame = (task.uregs['esp'] - 4) & 0xFFFFFFFF
        raw = yield from self.k.syscalls.copy_from_user(task, frame, RT_SIGMASK + 8)
        if raw is None:
            return self._badframe(task, 'rt_sigreturn')
        self.counters['sigreturns'] += 1
        task.sigmask = struct.unpack_from('<Q', raw, RT_SIGMASK)[0] & ~UNBLOCKABLE
        return self.restore_sigcontext(task, raw[RT_SC:RT_SC + SIGCONTEXT_SIZE])

    def sys_rt_sigsuspend(self, task, args):
        """rt_sigsuspend(mask, sigsetsize): sleep with `mask` blocked until
        a signal is pending; the old mask comes back with the handler's
        sigreturn (saved_sigmask).  Generator -> -ERESTARTNOHAND (-EINTR
        once the handler ran)."""
        if args[1] != 8:
            return -EINVAL
        raw = yield from self.k.syscalls.copy_from_user(task, args[0], 8)
        if raw is None:
            return -EFAULT
        self.counters['sigsuspends'] += 1
        task.saved_sigmask = task.sigmask
        task.sigmask = struct.unpack('<Q', raw)[0] & ~UNBLOCKABLE
        if task.sigsuspend_wq is None:
            task.sigsuspend_wq = WaitQueue(f'sigsuspend {task.pid}')
        yield from self.k.sched.wait_event_interruptible(task, task.sigsuspend_wq, lambda: False,
                                                         what=('sigsuspend', task.pid))
        return -ERESTARTNOHAND

    def sys_tkill(self, task, args):
        """tkill(tid, sig) (2.5.4; musl's raise): send_sig to one thread.
        Generator -> 0 or -errno."""
        return (yield from self._tgkill(task, None, args[0], args[1]))

    def sys_tgkill(self, task, args):
        """tgkill(tgid, tid, sig) (2.5.75).  Generator -> 0 or -errno."""
        return (yield from self._tgkill(task, args[0], args[1], args[2]))

    def _tgkill(self, task, tgid, tid, sig):
        from .exit import SIGNAL_NAMES
        if not 0 <= sig <= NSIG or tid <= 0 or tid >= 0x80000000:
            return -EINVAL
        t = self.k.sched.tasks.get(tid)
        if t is None or not t.alive or t.idle or t.mm is None or (tgid is not None and t.tgid != tgid):
            return -ESRCH
        yield Charge(self.k.costs['wake_up'])
        if sig:
            name = SIGNAL_NAMES.get(sig, f'SIG{sig}')
            self.send_sig(t, sig, f'{name} from {task.name}/{task.pid}', pid=task.tgid)
        return 0
