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
  Priorities(order, ...)  schedule exploration (kmaplab/explore.py): the
                          CPUs in a priority order; the highest one that is
                          less than `window` cycles ahead of the slowest
                          runs.  At scheduling points (Machine.sched_point)
                          the order may change: from a list of changes
                          anchored to points (replay, shrinking, bounded
                          search) or from a decide() function (PCT, random).
                          It records every point, so a replay can say where
                          a run departs from the recorded one.

A scheduling point is (cpu, label): the label is the driver's, opaque here.
Its anchor is (cpu, label, n): the n-th point with that label on that CPU,
which survives small changes elsewhere in the schedule better than a global
step number does.
"""


class RoundRobin:
    name = 'rr'

    def __init__(self, quantum=1000):
        if quantum < 1:
            raise ValueError('quantum must be >= 1')
        self.quantum = quantum

    def pick(self, machine):
        return machine.slowest(), self.quantum      # one C call (vm/_run.c Clock)


class SeededRandom:
    name = 'random'

    def __init__(self, quantum=1000):
        if quantum < 1:
            raise ValueError('quantum must be >= 1')
        self.quantum = quantum

    def pick(self, machine):
        times = machine.times()
        horizon = min(times) + self.quantum
        choices = [i for i, t in enumerate(times) if t < horizon]
        cpu = machine.rng.choice(choices)
        return cpu, machine.rng.randint(1, self.quantum)


class Priorities:
    """The interleaving as a priority order over CPUs (PCT's scheduler, with a
    bounded lead).

    order     CPU indexes, highest priority first (every CPU once).
    changes   {(cpu, label, n): (new order or None, tick)}: at that point
              the order becomes the new one (the point's CPU ends its run
              if it is no longer first), and with tick the point's CPU's
              timer fires there (on_tick).
    decide    optional fn(policy, cpu, label, step) -> (new order or None,
              tick) or None, asked at every point without a change of its
              own.
    on_tick   fn(machine, cpu) for a tick (default machine.tick_now: the
              local timer fires at this point; the driver gives it meaning).
    window    how far (cycles) a CPU may run ahead of the slowest one: the
              highest-priority CPU runs until it is `window` ahead, then the
              next one runs, `quantum` cycles at a time.  No CPU is ever
              starved, and no CPU waits longer than real hardware could make
              it wait (an interrupt storm, an SMI, a preempted vCPU).
    expect    optional list of point codes (see code()) of a recorded run:
              the first point that differs stops the machine with the
              reason 'schedule diverged: ...'.
    """
    name = 'priorities'

    def __init__(self, order, changes=None, decide=None, window=20_000, quantum=1000,
                 expect=None, labels=None, on_tick=None):
        if window < 1 or quantum < 1:
            raise ValueError('window and quantum must be >= 1')
        self.order = list(order)
        self.changes = dict(changes or {})
        self.decide = decide
        self.on_tick = on_tick or (lambda machine, cpu: machine.tick_now(cpu))
        self.window, self.quantum = window, quantum
        self.expect = expect
        self.labels = list(labels or [])            # label table: code = index * 32 + cpu
        self._label_index = {lab: i for i, lab in enumerate(self.labels)}
        self.points = []                            # the code of every point, in order
        self.seen = {}                              # (cpu, label) -> points so far
        self.applied = []                           # (step, cpu, label, n, order, tick) taken
        self.diverged = None

    def code(self, cpu, label):
        i = self._label_index.get(label)
        if i is None:
            i = self._label_index[label] = len(self.labels)
            self.labels.append(label)
        return i * 32 + cpu

    def describe(self, code):
        return f'{self.labels[code // 32]} on CPU{code % 32}'

    def pick(self, machine):
        times = machine.times()
        horizon = min(times) + self.window
        for rank, cpu in enumerate(self.order):
            if times[cpu] < horizon:
                break
        if rank == 0:
            return cpu, horizon - times[cpu]
        ahead = min(times[c] for c in self.order[:rank])
        return cpu, max(self.quantum, ahead - self.window - times[cpu] + 1)

    def on_point(self, machine, cpu, label):
        """A scheduling point on `cpu`: record it, apply its change (if any).
        True: end `cpu`'s run here."""
        step = len(self.points)
        code = self.code(cpu, label)
        self.points.append(code)
        n = self.seen[(cpu, label)] = self.seen.get((cpu, label), 0) + 1
        if self.expect is not None and self._diverges(machine, step, code):
            return True
        change = self.changes.get((cpu, label, n))
        if change is None and self.decide is not None:
            change = self.decide(self, cpu, label, step)
        if change is None:
            return False
        new, tick = change
        new = self.order if new is None else list(new)
        if new == self.order and not tick:
            return False
        self.order = new
        self.applied.append((step, cpu, label, n, tuple(new), bool(tick)))
        if tick:
            self.on_tick(machine, cpu)
        return self.order[0] != cpu

    def _diverges(self, machine, step, code):
        exp = self.expect
        if step < len(exp) and exp[step] == code:
            return False
        was = self.describe(exp[step]) if step < len(exp) else 'no more points (the run had ended)'
        self.diverged = (f'schedule diverged at step {step}: the file has {was}, '
                         f'the run has {self.describe(code)}')
        machine.stop(self.diverged)
        return True


POLICIES = {'rr': RoundRobin, 'random': SeededRandom}


def make_policy(name, quantum):
    try:
        return POLICIES[name](quantum)
    except KeyError:
        raise ValueError(f"unknown schedule policy {name!r} (allowed: {', '.join(POLICIES)})") from None
