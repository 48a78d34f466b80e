"""Interleaving policies: which CPU runs next, and for how many cycles.

A policy is an object with pick(machine) -> (cpu_index, budget).  It may use
machine.rng (the one seeded generator) and nothing else random.  The machine
caps the budget at the next event, so interrupts and I/O completions land on
time whatever the policy.

  RoundRobin(quantum)     the CPU furthest behind in simulated time runs next,
                          ties to the lowest index; with equal quanta this is
                          round robin, and CPU clocks never drift apart by
                          more than one quantum.
  SeededRandom(quantum)   a random CPU among those less than one quantum
                          ahead of the slowest, for a random budget in
                          [1, quantum]: a different seed, a different
                          interleaving; the same seed, the same one.
"""


class RoundRobin:
    name = 'rr'

    def __init__(self, quantum=1000):
        if quantum < 1:
            raise ValueError('quantum must be >= 1')
        self.quantum = quantum

    def pick(self, machine):
        n = len(machine.cpus)
        best, best_t = 0, machine.time(0)
        for i in range(1, n):
            t = machine.time(i)
            if t < best_t:
                best, best_t = i, t
        return best, self.quantum


class SeededRandom:
    name = 'random'

    def __init__(self, quantum=1000):
        if quantum < 1:
            raise ValueError('quantum must be >= 1')
        self.quantum = quantum

    def pick(self, machine):
        times = [machine.time(i) for i in range(len(machine.cpus))]
        horizon = min(times) + self.quantum
        choices = [i for i, t in enumerate(times) if t < horizon]
        cpu = machine.rng.choice(choices)
        return cpu, machine.rng.randint(1, self.quantum)


POLICIES = {'rr': RoundRobin, 'random': SeededRandom}


def make_policy(name, quantum):
    try:
        return POLICIES[name](quantum)
    except KeyError:
        raise ValueError(f"unknown schedule policy {name!r} (allowed: {', '.join(POLICIES)})") from None
