"""Processes: the per-call-site kmap profile, fork with copy-on-write,
wait4 and exit statuses, signals, pipes, execve (issue 13).

Every number asserted here is what the emulated machine did: guest kmaps
counted at their entry with the return address the guest pushed, PTEs read
back from guest RAM, exit statuses a guest parent got from wait4."""
import pytest

from minikernel.kernel import Kernel
from test_kernel import MiB, prog, reports


# ---- per-call-site kmap counters -------------------------------------------

@pytest.mark.parametrize('write_path, read_path', [('kmap', 'kmap'), ('atomic_fallback', 'atomic')])
def test_kmap_calls_are_attributed_to_their_callers(write_path, read_path):
    k = Kernel(dict(cpus=2, mem=64 * MiB, highmem=32 * MiB, write_path=write_path,
                    read_path=read_path), programs=prog('writer', 'reader'))
    w = k.spawn('w', 'writer', ['out', 64, 4096, 7], cpu=0)
    r = k.spawn('r', 'reader', ['out', 3], cpu=1, start=200_000_000)
    assert k.run() == 'finished' and w.exit_code == 0 and r.exit_code == 0
    c = k.highmem.counters
    for prefix in ('kmap_high_calls', 'kmap_atomic_calls'):
        per_site = sum(v for key, v in c.items() if key.startswith(prefix + '.'))
        assert per_site == c[prefix]
    if write_path == 'kmap':
        assert c['kmap_high_calls.generic_file_write'] == 64
        assert c['kmap_high_calls.file_read_actor'] == 3 * 64
    else:
        assert c['kmap_atomic_calls.filemap_copy_from_user_atomic'] == 64
        assert c['kmap_atomic_calls.file_read_actor'] == 3 * 64
        assert 'kmap_high_calls.file_read_actor' not in c
    assert c['kmap_atomic_calls.do_anonymous_page'] >= 1     # clear_user_highpage, inlined


# ---- fork, wait4, exit statuses, kill ---------------------------------------

def procs(mode, n=0, cpus=2, **opts):
    k = Kernel(dict(dict(cpus=cpus, mem=32 * MiB, highmem=16 * MiB), **opts), programs=prog('procs'))
    t = k.spawn('p', 'procs', [mode, n], cpu=0)
    end = k.run(max_cycles=2_000_000_000)
    k.finish()                  # frame accounting: every page freed or accounted for
    return k, t, end


def test_fork_children_exit_codes_come_back_through_wait4():
    k, t, end = procs(0, 6)
    assert end == 'finished' and t.exit_code == 0
    assert k.fork.counters['forks'] == 6 and k.exit.counters['zombies_reaped'] == 6
    kids = [c for c in k.sched.tasks.values() if c.forked]
    assert sorted(c.exit_status for c in kids) == [i << 8 for i in range(1, 7)]
    assert 1 in {c.cpu for c in kids}                   # the idle CPU takes children
    assert all(c.reaped for c in kids)
    assert not reports(k, 'bug')


def test_a_child_killed_by_a_fault_has_status_sigsegv():
    k, t, end = procs(1)
    assert end == 'finished' and t.exit_code == 0
    assert any('SIGSEGV' in m for m in reports(k, 'kill'))
    assert not reports(k, 'bug')


def test_kill_sigterm_ends_a_spinning_child_with_status_15():
    k, t, end = procs(2)
    assert end == 'finished' and t.exit_code == 0
    assert any('SIGTERM' in m for m in reports(k, 'signal'))


def test_copy_on_write_keeps_parent_and_child_copies_apart():
    k, t, end = procs(5)
    assert end == 'finished' and t.exit_code == 0
    c = k.mm.counters
    assert c['cow_pages_copied'] >= 1 and c['cow_reuses'] >= 1
    assert k.mm.counters['tlb_flush_mm'] >= 1
    assert not reports(k, 'bug')


def test_wait4_echild_and_wnohang():
    k, t, end = procs(6)
    assert end == 'finished' and t.exit_code == 0


def test_an_orphan_is_reparented_to_init():
    k, t, end = procs(4)
    assert end == 'finished' and t.exit_code == 0
    assert k.exit.counters['orphans_reparented'] >= 1
    grandchild = max(k.sched.tasks.values(), key=lambda x: x.pid)
    assert grandchild.exit_status == 0 and grandchild.reaped


def test_a_fork_bomb_ends_at_the_run_limit_with_fork_held_at_max_tasks():
    """Every process forks until fork fails, then exits: the survivors keep
    forking, so the bomb never ends by itself.  fork returns -EAGAIN at
    max_tasks (zombies count until reaped), and the run ends at its cycle
    limit: a reported outcome, not a host hang."""
    k = Kernel(dict(cpus=2, mem=32 * MiB, highmem=16 * MiB, max_tasks=24), programs=prog('procs'))
    t = k.spawn('p', 'procs', [3, 0], cpu=0)
    assert k.run(max_cycles=2_000_000) == 'time limit'
    c = k.fork.counters
    assert c['fork_eagain'] > 0 and c['nr_threads_peak'] == 24
    assert k.exit.counters['reaped_by_init'] > 0
    assert not reports(k, 'bug')


@pytest.mark.parametrize('reclaim', ['rmap', 'swap_out'])
def test_fork_under_memory_pressure_keeps_every_copy(reclaim):
    """A parent and 4 children share 1200 pages copy-on-write; the children
    write the odd pages, so the even ones stay shared and get swapped out
    and in while each process checks every word."""
    k = Kernel(dict(cpus=2, mem=16 * MiB, highmem=8 * MiB, reclaim=reclaim, disk_latency=20_000),
               programs=prog('forker'))
    t = k.spawn('f', 'forker', [1200, 4, 2, 0x5A5A], cpu=0)
    assert k.run() == 'finished'
    k.finish()
    assert t.exit_code == 0
    assert k.fork.counters['forks'] == 4
    assert k.mm.counters['cow_pages_copied'] >= 4 * 600
    assert k.swap.counters['swap_outs'] > 0 and k.swap.counters['swap_ins'] > 0
    if reclaim == 'rmap':
        assert k.fork.counters['fork_pte_chain_bytes'] >= 8 * 1200
    assert not reports(k, 'corruption') and not reports(k, 'bug')


# ---- execve --------------------------------------------------------------------

def execer(mode, **opts):
    k = Kernel(dict(dict(cpus=2, mem=32 * MiB, highmem=16 * MiB), **opts),
               programs=prog('execer', 'echoargs'))
    k.vfs.create_file('notelf', b'just some bytes\n')
    k.vfs.lookup('notelf').mode = 0o100755      # executable, but not an ELF: -ENOEXEC
    t = k.spawn('e', 'execer', [mode], cpu=0)
    end = k.run(max_cycles=2_000_000_000)
    k.finish()                  # frame accounting: every page freed or accounted for
    return k, t, end


@pytest.mark.parametrize('write_path', ['kmap', 'atomic_fallback'])
def test_execve_copies_arguments_through_kmap_in_copy_strings(write_path):
    k, t, end = execer(0, write_path=write_path)
    assert end == 'finished' and t.exit_code == 0
    out = ''.join(text for _, _, pid, text in k.console if pid != t.pid)
    assert out == 'echoargs\nhello\nworld\nPATH=/bin\n'
    c = k.highmem.counters
    # the filename, one env string and three arguments: one kmap each, all highmem
    assert c['kmap_high_calls.copy_strings'] == 5
    assert k.exec.counters['execs'] == 1 and k.exec.counters['exec_arg_pages'] == 1
    assert not reports(k, 'bug')


def test_execve_errors_come_back_to_the_caller():
    k, t, end = execer(1)
    assert end == 'finished' and t.exit_code == 0
    assert k.exec.counters['exec_failed'] == 4
    assert k.page_alloc.nr_free_pages() > 0 and not reports(k, 'bug')


def test_exec_replaces_the_program_and_frees_the_old_mm():
    k, t, end = execer(2)
    assert end == 'finished' and t.exit_code == 3       # echoargs exits with its argc
    k.finish()
    assert not reports(k, 'bug')


# ---- pipes ---------------------------------------------------------------------

def pipeline(mode, nbytes, cpus=2, **opts):
    k = Kernel(dict(dict(cpus=cpus, mem=32 * MiB, highmem=16 * MiB), **opts),
               programs=prog('pipeline', 'pipecheck'))
    t = k.spawn('sh', 'pipeline', [mode, nbytes], cpu=0)
    end = k.run(max_cycles=2_000_000_000)
    k.finish()                  # frame accounting: every page freed or accounted for
    return k, t, end


@pytest.mark.parametrize('cpus', [1, 2])
def test_a_pipe_carries_every_byte_from_producer_to_an_execd_consumer(cpus):
    k, t, end = pipeline(0, 50_000, cpus)
    assert end == 'finished' and t.exit_code == 0
    c = k.pipes.counters
    assert c['pipe_bytes'] == 2 * 50_000                   # written and read
    assert c['pipe_write_waits'] > 0                       # a 4 KiB pipe blocks the writer
    consumer = [x for x in k.sched.tasks.values() if x.name == 'pipecheck']
    assert len(consumer) == 1 and consumer[0].exit_status == 0
    assert k.page_alloc.nr_free_pages() > 0 and not reports(k, 'bug')


def test_a_write_with_no_reader_is_sigpipe():
    k, t, end = pipeline(1, 0)
    assert end == 'finished' and t.exit_code == 0
    assert k.pipes.counters['epipe'] == 1
    assert any('SIGPIPE' in m for m in reports(k, 'signal'))


# ---- C programs (musl, zig): FPU/TLS at fork and exec, signal handlers ---------

def c_program(name, argv, cpus):
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, 'build', 'workloads', name)
    if not os.path.exists(path):
        pytest.skip(f'{path} not built (make setup builds it with zig)')
    with open(path, 'rb') as f:
        data = f.read()
    k = Kernel(dict(cpus=cpus, mem=64 * MiB))
    k.vfs.create_file(name, data)
    k.vfs.lookup(name).mode = 0o100755
    t = k.spawn_exec(name, '/' + name, argv)
    assert k.run(max_cycles=2_000_000_000) == 'finished'
    return k, t


@pytest.mark.parametrize('cpus', [1, 2])
def test_fork_copies_fpu_and_tls_and_exec_starts_fresh(cpus):
    """workloads/fork_state.c: the forked child sees the xmm5, st(0) and TLS
    entry of the fork although the parent changed its registers before the
    child ran (fpu__copy, copy_thread); the child's execve starts the new
    image with FCW 0x37F, MXCSR 0x1F80, an empty x87 stack, xmm5 zero and
    the TLS entry empty (fpu__clear, flush_thread), and its bss cleared
    (padzero: musl's static TLS setup reads it)."""
    k, t = c_program('fork_state', ['fork_state'], cpus)
    assert t.exit_code == 0, (t.exit_code, t.killed_by)    # 31..34 child, 40..43 exec'd image
    assert bytes(t.console) == b'fork_state: ok\n'
    assert k.fork.counters['forks'] == 1 and k.exec.counters['execs'] == 1
    assert not reports(k, 'bug') and not reports(k, 'kill')


@pytest.mark.parametrize('cpus', [1, 2])
def test_signal_handlers_run_on_a_frame_and_sigreturn_restores_the_context(cpus):
    """workloads/signals.c: SIGCHLD handlers with sigsuspend (busybox sh's
    `wait`), an SA_SIGINFO handler (siginfo, ucontext), a blocked signal
    delivered at sigprocmask's unblock, a pipe read interrupted by SIGCHLD
    restarted with SA_RESTART and -EINTR without, SIGTERM caught; every
    handler returns through sigreturn/rt_sigreturn into the interrupted
    code with its registers (the program checks them)."""
    k, t = c_program('signals', ['signals', '4'], cpus)
    assert t.exit_code == 0, (t.exit_code, t.killed_by)
    assert bytes(t.console) == b'signals: ok\n'
    c = k.signals.counters
    assert c['signals_delivered'] == c['sigreturns'] >= 6
    assert c['syscalls_restarted'] == 1 and c['sigsuspends'] >= 1 and c['bad_sigframes'] == 0
    assert not reports(k, 'bug')



def test_a_busybox_fork_bomb_is_held_at_max_tasks_and_dies_out():
    """Bad input from a real shell: busybox sh running `f() { f | f & }; f`
    with max_tasks=32.  fork returns -EAGAIN once 32 tasks exist (zombies
    count), the shells that cannot fork give up and exit, and the run
    finishes: an outcome, not a host hang."""
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, 'build', 'busybox', 'busybox')
    if not os.path.exists(path):
        pytest.skip(f'{path} not fetched (make setup, as root with dpkg)')
    with open(path, 'rb') as f:
        data = f.read()
    k = Kernel(dict(cpus=2, mem=64 * MiB, max_tasks=32))
    k.vfs.create_file('bin/sh', data)
    k.vfs.lookup('bin/sh').mode = 0o100755
    k.spawn_exec('bomb', '/bin/sh', ['sh', '-c', 'f() { f | f & }; f'], ['PATH=/bin'])
    assert k.run(max_cycles=300_000_000) == 'finished'
    c = k.fork.counters
    assert c['fork_eagain'] > 0 and c['nr_threads_peak'] == 32
    assert not reports(k, 'bug') and not reports(k, 'deadlock')
