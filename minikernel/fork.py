"""Process creation: fork, vfork, clone without CLONE_VM.

Mirrors kernel/fork.c of 2.4.18 (do_fork, copy_mm -> dup_mmap,
copy_files) with 2.5's CLONE_PARENT_SETTID / CLONE_CHILD_SETTID; the page
tables are copied by MemoryManager.copy_page_range (mm/memory.c), which
write-protects private writable pages in parent and child (copy on write),
shares shared mappings, duplicates swap entries (swap_duplicate) and, under
reclaim=rmap, adds a pte_chain for every PTE the child gets.

What this file owns
  - do_fork(): the new task_struct (its own 8 KiB kernel stack), a new mm
    with its own page directory (mm_alloc copies the kernel PDEs from
    swapper_pg_dir, as pgd_alloc does), the VMAs and PTEs of the parent's
    mm (dup_mmap, under the parent's mmap_sem held for writing), a copy of
    the fd table (copy_files: the same struct files, one more reference
    each), the signal actions and mask (copy_sighand), the TLS array and
    the FPU state (copy_thread: the parent's registers saved into the
    child's area by a guest fxsave), the exit signal (clone's CSIGNAL
    bits; SIGCHLD for fork and vfork), the parent/child links, and the
    child's return value 0.
  - The process limit: nr_threads against max_threads (boot option
    `max_tasks`; default as 2.4's fork_init, mempages / 16): fork returns
    -EAGAIN beyond it.  A zombie counts until it is reaped, as in Linux.
  - Where the child runs: the lab has no load balancing, so a child goes
    to the CPU with the fewest tasks that are runnable or running, the
    parent's on a tie (what 2.5's sched_balance_exec ends up doing).

Rules
  - do_fork runs in the parent's context and may sleep (mmap_sem, page
    allocation for page tables, the TLB flush's IPIs).
  - The parent's PTEs are write-protected before its TLBs are flushed
    (flush_tlb_mm at the end of dup_mmap, 2.4): until the flush, another
    CPU running the parent's threads may still write through a stale TLB
    entry, exactly as on the hardware.
  - vfork is fork here (POSIX allows it): the parent does not wait for the
    child's exec or exit.
"""
from .task import Charge, Frame, Guest

EAGAIN, ENOMEM = 11, 12
CSIGNAL = 0xFF                  # the exit signal sent to the parent
CLONE_VM = 0x100
CLONE_VFORK = 0x4000
CLONE_PARENT_SETTID = 0x100000
CLONE_CHILD_CLEARTID = 0x200000
CLONE_CHILD_SETTID = 0x1000000


class Fork:
    def __init__(self, kernel):
        self.k = kernel
        total_pages = kernel.config['mem'] >> 12
        self.max_threads = kernel.config['max_tasks'] or max(16, total_pages // 16)
        self.counters = dict(forks=0, fork_eagain=0, fork_enomem=0, fork_ptes_copied=0,
                             fork_swap_ptes=0, fork_pte_chain_bytes=0, fork_instructions=0,
                             fork_cycles=0, nr_threads_peak=0)

    def nr_threads(self):
        return sum(1 for t in self.k.sched.tasks.values() if not t.reaped)

    def _child_cpu(self, parent):
        sched = self.k.sched
        best, load = parent.cpu, None
        order = [parent.cpu] + [c for c in range(len(sched.rq)) if c != parent.cpu]
        for c in order:
            n = len(sched.rq[c]) + (0 if sched.current[c].idle else 1)
            if load is None or n < load:
                best, load = c, n
        return best

    def do_fork(self, parent, flags, newsp, parent_tidptr=0, child_tidptr=0):
        """do_fork() without CLONE_VM.  Generator -> the child's pid or -errno."""
        k = self.k
        cpu = k.machine.cpus[parent.cpu]
        insns0, cycles0 = cpu.instructions, k.machine.time(parent.cpu)
        if self.nr_threads() >= self.max_threads:
            self.counters['fork_eagain'] += 1
            return -EAGAIN
        yield Charge(k.costs['fork'])
        child = k.sched.new_task(parent.name, None, self._child_cpu(parent), may_fail=True)
        if child is None:
            self.counters['fork_enomem'] += 1
            return -ENOMEM
        mm = yield from self.copy_mm(parent, child)
        if mm is None:
            k.sched.forget_task(child)
            self.counters['fork_enomem'] += 1
            return -ENOMEM
        child.mm = child.active_mm = mm
        child.program = parent.program
        child.forked = True
        child.origin = parent.origin or parent
        child.parent = parent
        child.pgrp = parent.pgrp
        parent.children.append(child)
        k.vfs.copy_files(child, parent)
        k.signals.copy_sighand(parent, child)
        child.exit_signal = flags & CSIGNAL
        k.tls.copy_thread(parent, child)        # copy_thread: the TLS array
        yield from k.fpu.copy(parent, child)    # copy_thread: fpu__copy (guest fxsave)
        regs = dict(parent.uregs, eax=0)
        if newsp:
            regs['esp'] = newsp
        child.uregs = regs
        if flags & CLONE_CHILD_CLEARTID:
            child.clear_child_tid = child_tidptr
        if flags & CLONE_PARENT_SETTID and parent_tidptr:
            yield Guest('__put_user_4', parent_tidptr, child.pid)
        set_tid = child_tidptr if flags & CLONE_CHILD_SETTID else 0
        child.frames.append(Frame(k.traps.from_user(child, self.ret_from_fork(child, set_tid),
                                                    'syscall'), 'syscall'))
        if k.in_workload(parent):                  # O(1): a fork loop stays linear
            k.add_workload(child)
        self.counters['forks'] += 1
        k.trace_event('fork', task=parent, child=f'{child.name}/{child.pid}', cpu=child.cpu)
        k.sched.start(child)
        self.counters['nr_threads_peak'] = max(self.counters['nr_threads_peak'], self.nr_threads())
        if cpu.index == parent.cpu:
            self.counters['fork_instructions'] += cpu.instructions - insns0
        self.counters['fork_cycles'] += k.machine.time(parent.cpu) - cycles0
        return child.pid

    def ret_from_fork(self, child, set_tid):
        """ret_from_fork -> schedule_tail: CLONE_CHILD_SETTID's put_user runs
        in the child, on its own (copy-on-write) address space."""
        if set_tid:
            yield Guest('__put_user_4', set_tid, child.pid)
        return 0

    def copy_mm(self, parent, child):
        """copy_mm() -> mm_alloc + dup_mmap.  Generator -> the new mm or None."""
        k = self.k
        old = parent.mm
        mm = k.mm.mm_alloc()
        if mm is None:
            return None
        mm.program = old.program
        mm.start_brk, mm.brk = old.start_brk, old.brk
        chain_bytes = k.rmap.counters['pte_chain_bytes']
        yield from old.mmap_sem.down_write(parent)
        ok = True
        try:
            ok = yield from self.dup_mmap(parent, mm, old)
        finally:
            old.mmap_sem.up_write(parent)
        self.counters['fork_pte_chain_bytes'] += k.rmap.counters['pte_chain_bytes'] - chain_bytes
        if not ok:
            mm.users = 0
            yield from k.mm.exit_mmap(parent, mm)
            k.reap_mms()
            return None
        return mm

    def dup_mmap(self, task, mm, old):
        """dup_mmap() (2.4.18): each VMA copied, then its page range; the
        parent's TLBs flushed at the end.  Generator -> False on ENOMEM."""
        k = self.k
        from .memory import VMA
        ok = True
        for v in old.vmas:
            vma = VMA(mm, v.start, v.end, v.flags, v.file, v.pgoff, v.name)
            mm.insert_vma(vma)
            r = yield from k.mm.copy_page_range(task, mm, old, vma)
            if r < 0:
                ok = False
                break
        yield from k.mm.flush_tlb_mm(task, old)
        return ok
