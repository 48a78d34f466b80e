"""Spare hardware: the RAM and CPUs (Unicorn instances, with their hooks and
translated code) of machines that are done, kept to build the next machine
of the same shape without creating instances or translating again.

What this file owns
  - Spares: per key (the caller's: same key => the same boot, so the same
    hooks in the same order), at most `limit` sets of hardware, the most
    recently used kept.  Machine(spares=S, spares_key=K) takes one set if
    there is one (else creates fresh hardware and makes it reusable), and
    Machine.release() gives it back.
  - What a machine built on spare hardware is: the same as one built on
    fresh hardware, as far as the guest and every count can tell.
      * RAM: all zero again: the resident pages (mincore(2): those the
        last machine touched) are cleared in place, the others get
        madvise(MADV_DONTNEED) (never touched, or in the host's swap: the
        private anonymous mapping then reads as zero there, as a fresh
        one does).  Without mincore: MADV_DONTNEED of all of it, which
        makes the next machine fault every page in again (~200 host page
        faults, 0.6 ms, an exploration run).
      * Each CPU: its CPU state as created (one uc_context restore: QEMU's
        CPUX86State up to end_reset_fields, i.e. all architectural state),
        an empty TLB, a fresh kcpu (counts, code regions, ranges, the
        block-count cache) and no counts (CPU.reset).  CPU.boot with the
        arguments of the first life's boot restores the state that boot
        saved (the writes would make it again) and loads the segments
        again (the loads set the GDT descriptors' Accessed bits in RAM).
      * Translations: at release, every translation outside the ranges the
        driver declared with Machine.keep_code is dropped (QEMU's own
        tb_invalidate_phys_range, CPU.invalidate_code), and the bytes of
        those ranges are copied.  At the next machine's first run those
        bytes are compared with the RAM it booted: the translations of
        every byte that differs are dropped too.  So every translation that
        survives was made from exactly the bytes that are in RAM: QEMU keeps
        translations coherent with guest stores, and the lab with host
        writes to code (invalidate_code); a translation is a function of
        its bytes, the CPU mode and the hooks present (the same, below).
      * Hooks: hooks live as long as the instance (deleting one would make
        Unicorn drop and re-walk the code it covered).  The machine's
        hooks register through CPU.hook_once: a registration with the key
        of an earlier life's hook takes that hook over (a Python hook's
        function, a counter zeroed, a line-model site pointed at the new
        model); earlier lives' Python hooks not taken do nothing.  At the
        first run the keys each CPU registered are compared with the first
        life's: the same keys in the same order, or RuntimeError (the
        caller keyed two different boots alike).  Hooks registered after
        the first run are always new ones (their order among the others is
        then the order a fresh machine would have).
  - Not reusable: tlb='p3' (its model's state lives beside the instance),
    a machine a tracer or debugger attached hooks to outside hook_once (the
    caller does not release those: kmaplab/explore.py runs neither).

Rules
  - One thread: Spares is per process (an exploration worker).
  - After release() nothing of the old machine's driver may touch the RAM
    or the CPUs (they are the next machine's): the caller stops whatever
    could run later first (kmaplab/runner.py discard closes the kernel's
    suspended generators, whose finally blocks would otherwise run at
    garbage collection, in the middle of a later run).
  - tests/test_spares.py: several schedules in sequence on reused hardware
    give byte-identical counters, point traces, findings and guest RAM to
    the same schedules each on fresh hardware.
"""
import ctypes
import mmap

MADV_DONTNEED = getattr(mmap, 'MADV_DONTNEED', 4)
PAGE = mmap.PAGESIZE


class Hardware:
    """One set: the RAM (the mapping and its views) and the CPUs; `carried`
    the kept code ranges (pa, size, bytes at release); `boot_keys` each
    CPU's hook keys registered before the first run, of the first life."""

    def __init__(self, ram, ram_c, ram_ptr, ram_words, cpus):
        self.ram, self.ram_c, self.ram_ptr, self.ram_words = ram, ram_c, ram_ptr, ram_words
        self.cpus = cpus
        self.carried = []
        self.boot_keys = None
        self.lives = 0


class Spares:
    def __init__(self, limit=2):
        self.limit = limit
        self._sets = {}                 # key -> [Hardware], most recently used last
        self.taken = self.created = 0   # how many machines were built on spare / fresh hardware

    def take(self, key):
        """A set for `key`, or None."""
        sets = self._sets.get(key)
        if not sets:
            return None
        hw = sets.pop()
        if not sets:
            del self._sets[key]
        self.taken += 1
        return hw

    def put(self, key, hw):
        """Keep `hw` for `key`; the least recently used sets go beyond limit."""
        self._sets.setdefault(key, []).append(hw)
        self._sets[key] = self._sets.pop(key)          # most recently used last
        while sum(len(v) for v in self._sets.values()) > self.limit:
            oldest = next(iter(self._sets))
            self._sets[oldest].pop(0)
            if not self._sets[oldest]:
                del self._sets[oldest]

    def clear(self):
        self._sets.clear()


def first_run(machine):
    """The machine's first run is about to start: drop the carried
    translations of bytes that differ from the RAM booted, and check the
    hooks (see the top).  Then hooks registered later are new ones."""
    hw = machine._hw
    keep = set(machine.kept_code)
    for pa, size, old in hw.carried:
        if (pa, size) not in keep:
            for cpu in machine.cpus:
                cpu.invalidate_code(pa, size)
            continue
        for lo, hi in _differing(old, machine.ram[pa:pa + size]):
            for cpu in machine.cpus:
                cpu.invalidate_code(pa + lo, hi - lo)
    hw.carried = []
    keys = [[k for k, _ in cpu.hook_keys] for cpu in machine.cpus]
    if hw.boot_keys is None:
        hw.boot_keys = keys
    elif keys != hw.boot_keys:
        machine._hw = None                       # not given back: its hooks are not all taken over
        raise RuntimeError('spare hardware: this boot registered other hooks than the first '
                           'machine built on it (Machine spares_key must name the boot)')
    for cpu in machine.cpus:
        cpu.boot_phase = False
    machine._ran = True


def release(machine):
    """Give the machine's hardware back to its spares (see the top)."""
    hw = machine._hw
    machine._hw = None
    if hw is None or machine._spares is None:
        return
    ram = machine.ram
    if machine._ran:
        kept_ranges = sorted(machine.kept_code)
        hw.carried = [(pa, size, bytes(ram[pa:pa + size])) for pa, size in kept_ranges]
    else:                                        # never ran: nothing new translated
        kept_ranges = sorted((pa, size) for pa, size, _ in hw.carried)
    at = 0
    for pa, size in kept_ranges + [(machine.ram_size, 0)]:
        if pa > at:
            for cpu in machine.cpus:
                cpu.invalidate_code(at, pa - at)
        at = max(at, pa + size)
    zero_ram(machine)
    hw.lives += 1
    machine._spares.put(machine._spares_key, hw)


def zero_ram(machine):
    """Make the machine's RAM read as zero again (see the top): memset of
    the resident runs of pages, or madvise(MADV_DONTNEED) of it all."""
    import numpy as np
    size = machine.ram_size
    vec = (ctypes.c_ubyte * ((size + PAGE - 1) // PAGE))()
    if _mincore is None or _mincore(machine.ram_ptr, size, vec) != 0:
        machine.ram.madvise(MADV_DONTNEED)
        return
    at = 0
    for lo, hi in _runs(np.flatnonzero(np.frombuffer(vec, np.uint8) & 1)) + [(len(vec), 0)]:
        if lo > at:                  # not resident: never touched, or in the host's swap
            machine.ram.madvise(MADV_DONTNEED, at * PAGE, (lo - at) * PAGE)
        if hi > lo:
            ctypes.memset(machine.ram_ptr + lo * PAGE, 0, (hi - lo) * PAGE)
        at = max(at, hi)


def _libc_mincore():
    try:
        fn = ctypes.CDLL(None, use_errno=True).mincore
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_mincore = _libc_mincore()


def _runs(d):
    """[(lo, hi)] of the runs of consecutive integers in the sorted array d."""
    import numpy as np
    if not len(d):
        return []
    breaks = np.flatnonzero(np.diff(d) > 1)
    starts = np.concatenate(([d[0]], d[breaks + 1]))
    ends = np.concatenate((d[breaks], [d[-1]])) + 1
    return list(zip(starts.tolist(), ends.tolist()))


def _differing(a, b):
    """[(lo, hi)] of the byte runs where a and b (equal lengths) differ."""
    import numpy as np
    return _runs(np.flatnonzero(np.frombuffer(a, np.uint8) != np.frombuffer(b, np.uint8)))
