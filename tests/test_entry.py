"""The system call fast path (minikernel/entry.py _system_call, @nosleep
handlers) and the ring-0 transition in C (vm/_run.c Runner.ring0): the
machine must end in exactly the state the frame path leaves."""
import pytest

from kmaplab.runner import collect_counters, program_image
from minikernel.task import nosleep


def _kbench(fast, tasks, n):
    """1 CPU, `tasks` kbench getpid loops of n calls (two tasks share the CPU:
    the tick's need_resched sends some returns through schedule())."""
    from minikernel.kernel import Kernel
    k = Kernel({'mem': 64 << 20, 'highmem': 32 << 20, 'cpus': 1, 'max_cycles': 2_000_000_000},
               {'kbench': program_image('kbench')})
    k.engine.fast_syscalls = fast
    ts = [k.spawn(f'kbench{i}', 'kbench', [0, n]) for i in range(tasks)]
    end = k.run()
    assert end == 'finished' and [t.exit_code for t in ts] == [0] * tasks
    state = dict(collect_counters(k), memory=k.machine.memory_digest(), times=k.machine.times(),
                 tasks=[dict(t.counters) for t in ts], syscalls=dict(k.syscalls.counters))
    return state, k.engine.fast_taken


@pytest.mark.parametrize('tasks', [1, 2])
def test_getpid_fast_path_leaves_the_machine_as_the_frame_path_does(tasks):
    slow, taken_slow = _kbench(False, tasks, 400)
    fast, taken = _kbench(True, tasks, 400)
    assert taken_slow == 0
    assert taken >= 300 * tasks                 # most calls took it
    assert fast == slow                         # every counter, clock and byte of RAM
    assert fast['syscalls']['sys_getpid'] == 400 * tasks
    if tasks == 2:
        assert fast['context_switches'] > 2     # some returns went through schedule()


def test_nosleep_refuses_a_generator():
    def sys_x(self, task, args):
        return 0
        yield
    with pytest.raises(TypeError):
        nosleep(sys_x)


def _yields(chain_in_c, ahead, n=300):
    """1 CPU, two kbench sched_yield loops: every yield a context switch
    (switch_mm + __switch_to chained: Guest.then)."""
    from minikernel.kernel import Kernel
    k = Kernel({'mem': 64 << 20, 'highmem': 32 << 20, 'cpus': 1, 'max_cycles': 2_000_000_000},
               {'kbench': program_image('kbench')})
    k.engine.chain_in_c = chain_in_c
    k.machine.run_ahead = ahead
    ts = [k.spawn(f'kbench{i}', 'kbench', [2, n]) for i in range(2)]
    end = k.run()
    assert end == 'finished' and [t.exit_code for t in ts] == [0, 0]
    state = dict(collect_counters(k), memory=k.machine.memory_digest(), times=k.machine.times(),
                 tasks=[dict(t.counters) for t in ts])
    return state, k.engine.chained


@pytest.mark.parametrize('ahead', [False, True])
def test_chained_switch_routines_leave_the_machine_as_two_requests_do(ahead):
    """__switch_to started from vm/_run.c as switch_mm returns (Engine._chain)
    vs from the step loop (Engine._advance's chain branch): the same steps."""
    python, none = _yields(False, ahead)
    in_c, chained = _yields(True, ahead)
    assert none == 0 and chained >= 100
    assert in_c == python                       # every counter, clock and byte of RAM
    assert in_c["context_switches"] >= 100
