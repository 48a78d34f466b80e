"""Time series of the memory state, sampled at CPU 0's timer tick.

Linux keeps no history of free pages (/proc/meminfo is a snapshot; sar
samples it from user space); the lab keeps one so a report can show
ZONE_NORMAL running down under reclaim and the pkmap pool filling up.

What this file owns
  - VmStat.sample(now): called by do_IRQ for LOCAL_TIMER on CPU 0 (in
    interrupt context; takes no lock, never sleeps: it only reads).  Appends
    (simulated time, free pages per zone, pkmap slots in use) to the series.
    pkmap slots in use = entries of the guest's pkmap_count[] that are not
    0 (read from guest memory; the guest owns the array).
  - series(limit): the series as lists, thinned to at most `limit` points
    (every k-th sample plus the last): deterministic, simulated time only.

Invariant: samples are in time order; one per tick of CPU 0 (tick= boot
option), so the same seed and options give the same series.
"""
import numpy as np

from .layout import PAGE_OFFSET
from .page_alloc import _ZONE_KEYS


class VmStat:
    def __init__(self, kernel):
        self.k = kernel
        self.t, self.free, self.pkmap = [], {key: [] for key in _ZONE_KEYS}, []
        self._pkmap_pa = kernel.image.symbols['pkmap_count'] - PAGE_OFFSET
        self.counters = {}

    def sample(self, now):
        """One sample at simulated time `now` (CPU 0's clock)."""
        k = self.k
        self.t.append(now)
        for z, key in zip(k.page_alloc.zones, _ZONE_KEYS):
            self.free[key].append(z.free_pages)
        raw = k.machine.read(self._pkmap_pa, 4 * k.last_pkmap)
        self.pkmap.append(int(np.count_nonzero(np.frombuffer(bytes(raw), dtype='<u4'))))

    def series(self, limit=400):
        n = len(self.t)
        step = max(1, -(-n // limit))
        idx = list(range(0, n, step))
        if n and idx[-1] != n - 1:
            idx.append(n - 1)
        out = {'time_cycles': [self.t[i] for i in idx], 'pkmap_in_use': [self.pkmap[i] for i in idx]}
        for key, vals in self.free.items():
            out[f'free_{key}'] = [vals[i] for i in idx]
        return out
