"""vm/machine.py's run-ahead: on a 1-CPU machine a quantum boundary where
the loop would only give the CPU its next quantum is crossed without a
stop (in the C block hook, or in the engine between guest runs).  The
machine must end in exactly the state the stops leave: counters (runs
included), clocks, per-task counts and every byte of RAM."""
import pytest

from kmaplab.runner import collect_counters, program_image


def _kbench(ahead, mode, n, tasks=2, cpus=1):
    from minikernel.kernel import Kernel
    k = Kernel({'mem': 64 << 20, 'highmem': 32 << 20, 'cpus': cpus, 'max_cycles': 2_000_000_000},
               {'kbench': program_image('kbench')})
    k.machine.run_ahead = ahead
    ts = [k.spawn(f'kbench{i}', 'kbench', [mode, n]) for i in range(tasks)]
    end = k.run()
    assert end == 'finished' and [t.exit_code for t in ts] == [0] * tasks
    state = dict(collect_counters(k), memory=k.machine.memory_digest(), times=k.machine.times(),
                 tasks=[dict(t.counters) for t in ts])
    return state, sum(c._runner.runs for c in k.machine.cpus)


@pytest.mark.parametrize('mode', [1, 2])          # demand-zero faults, sched_yield switches
def test_run_ahead_leaves_the_machine_as_the_stops_do(mode):
    stops, starts_off = _kbench(False, mode, 300)
    ahead, starts_on = _kbench(True, mode, 300)
    assert ahead == stops                         # every counter, clock and byte of RAM
    assert ahead['runs'] == starts_off            # 'runs' still counts one per quantum
    if mode == 1:                                 # rep stosd of 1,024 crosses every fault's quantum
        assert starts_on <= starts_off - 250
    else:
        assert starts_on < starts_off


def test_run_ahead_is_off_on_two_cpus():
    from minikernel.kernel import Kernel
    k = Kernel({'mem': 64 << 20, 'highmem': 32 << 20, 'cpus': 2, 'max_cycles': 2_000_000_000},
               {'kbench': program_image('kbench')})
    seen = []
    step = k.step

    def spy(cpu, budget):
        seen.append(k.machine.ahead)
        step(cpu, budget)
    k.step = spy
    k.spawn('kbench0', 'kbench', [1, 20])
    assert k.run() == 'finished'
    assert seen and all(a is None for a in seen)


def test_machine_run_without_a_promising_driver_stops_at_every_boundary():
    """A driver without run_ahead = True (it did not promise end_run_ahead)
    gets every quantum as a step of its own."""
    from vm.machine import Machine

    class Driver:
        def __init__(self):
            self.steps = 0

        def finished(self):
            return self.steps >= 5

        def stalled(self):
            return None

        def step(self, cpu, budget):
            assert m.ahead is None
            self.steps += 1
            m.charge(cpu.index, budget)
    m = Machine(cpus=1, ram=1 << 20)
    d = Driver()
    assert m.run(d) == 'finished' and d.steps == 5
