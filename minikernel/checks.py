"""Checkers that run in every scenario, and the deadlock detector.

  - sleep in atomic context: sched.schedule() reports "BUG: scheduling
    while atomic" (see sched.py); counted here.
  - guest checks: kmap slot misuse and the like, detected by guest asm and
    reported through the SVC_CHECK service.
  - deadlock: when no CPU has anything to run and no I/O or timer is
    pending, every sleeping task is waiting for something that will not
    come.  The report is the wait-for graph: each sleeper, what it waits
    on, who holds that, and any cycle.
  - frame accounting: page_alloc.check() (free lists vs mem_map).
"""
from .task import TASK_UNINTERRUPTIBLE

CHECK_NAMES = {1: 'kmap_atomic slot reused while held', 2: 'kmap_local out of order',
               3: 'pkmap_count went to 0 without a flush', 4: 'kunmap of an unmapped page'}


class Checks:
    def __init__(self, kernel):
        self.k = kernel
        self.counters = dict(guest_checks=0, deadlocks=0)

    def guest_check(self, task, code, a, b, eip):
        self.counters['guest_checks'] += 1
        name = CHECK_NAMES.get(code, f'check {code}')
        self.k.report('bug', f'{name} ({a:#x}, {b:#x}) at {self.k.describe(eip)}', task=task,
                      check=name)

    def waits_for(self, task):
        """(description, [holder tasks]) of what a sleeping task waits on."""
        w = task.waiting_on
        if isinstance(w, tuple) and w and w[0] == 'rwsem':
            sem, mode = w[1], w[2]
            return f'{sem.name} ({mode}; held by {len(sem.holders())}, {len(sem.queue)} queued)', sem.holders()
        if isinstance(w, tuple) and w and w[0] == 'page_lock':
            return f'lock_page(pfn {w[1]:#x})', [h for h in [w[2]() if callable(w[2]) else w[2]] if h]
        if isinstance(w, tuple):
            return ' '.join(str(x) for x in w), []
        return repr(w), []

    def deadlock(self):
        """Report a deadlock if tasks sleep and nothing can wake them."""
        k = self.k
        sleepers = [t for t in k.sched.tasks.values()
                    if t.state == TASK_UNINTERRUPTIBLE and not t.daemon]
        if not sleepers:
            return None
        if k.disk.inflight:
            return None
        self.counters['deadlocks'] += 1
        graph = []
        edges = {}
        for t in sleepers:
            what, holders = self.waits_for(t)
            edges[t] = holders
            hold = ', '.join(f'{h.name}/{h.pid}' for h in holders) or 'nobody running'
            graph.append(f'{t.name}/{t.pid} waits on {what} <- held by {hold}')
        cycle = _find_cycle(edges)
        msg = 'deadlock: no task can run and no I/O or timer is pending'
        if cycle:
            msg += '; cycle: ' + ' -> '.join(f'{t.name}/{t.pid}' for t in cycle)
        k.report('deadlock', msg, graph=graph)
        return 'deadlock'


def _find_cycle(edges):
    """A cycle in the wait-for graph {task: [tasks it waits for]}, or None."""
    for start in edges:
        path, seen = [start], {start}
        node = start
        while True:
            nxt = [h for h in edges.get(node, []) if h in edges]
            if not nxt:
                break
            node = nxt[0]
            if node in seen:
                return path[path.index(node):] + [node]
            path.append(node)
            seen.add(node)
    return None
