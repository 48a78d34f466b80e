"""Fault injection: plans, the should_fail() decision, and the injection
points.  Mirrors lib/fault-inject.c (the fault_attr knobs and the order
should_fail checks them in), mm/page_alloc.c's fail_page_alloc,
block/blk-core.c's fail_make_request and lib/usercopy.c's fail_usercopy, plus
points Linux has no knob for but the 2002 thread argued about (a page
evicted at a named moment, a sibling thread's munmap + re-mmap, a lost or
late TLB shootdown IPI, an extra preemption inside a symbol range).

What this file owns
  - Plan: a TOML fault plan (docs/faults.md): [[fault]] entries, each one
    injection with Linux's knobs.  load_plan() validates every key; a bad
    plan is a PlanError whose text is one line naming the file and the key.
  - FaultAttr: struct fault_attr and should_fail().  Its random draws come
    from a generator derived from the run's seed and the entry's index and
    kind (never from machine.rng, so a plan does not perturb the schedule's
    draws, and adding an entry does not perturb the others').
  - The injections (one class per `fault = "..."` kind) and Faults (k.faults):
    the named kernel points, the counters (calls, fired, and what each firing
    did), the "FAULT_INJECTION: forcing a failure" reports.

The named kernel points (places in the Python kernel; a hook line there calls
`yield from k.faults.at(NAME, task, ...)`):
    write_path.after_prefault   write_begin is about to run: the source was
                                faulted in (fault_in_pages_readable, the
                                __get_user pair, get_user_pages), no page
                                lock is held.
    write_path.before_copy      the page-cache page is locked and prepared,
                                the copy (and its kmap) is next.
Guest-level points are kernel symbols: a code hook on the routine's
instructions (preempt, fail_usercopy).

Rules
  - Nothing here runs unless a plan was applied: the hooks cost one call.
  - An injection does what the kernel itself would do (reclaim's unmap with
    its TLB flush, a real munmap by a thread sharing the mm, a real bad user
    address for a failed copy, a device error): the checkers then judge the
    kernel, never the injector.
  - Deterministic: same seed, same plan, same firings.
"""
import fnmatch
import os
import random
import sys

from vm import x86

from . import page_alloc as pa
from .bug import KernelBug
from .schema import SchemaError, read_toml

PLAN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        'scenarios', 'plans')

POINTS = {
    'write_path.after_prefault': 'the source buffer was faulted in, no page lock held yet',
    'write_path.before_copy': 'the page-cache page is locked and prepared; the copy is next',
}

# The fault_attr knobs (lib/fault-inject.c), with this lab's defaults.
ATTR_KEYS = {
    'probability': 100,   # percent; Linux's default is 0 (an entry in a plan should inject)
    'interval': 1,        # fail every interval-th eligible call
    'times': 1,           # failures left; -1 = no limit
    'space': 0,           # size units to let pass before failing
    'fail_nth': 0,        # per task: its nth call fails (Linux /proc/<pid>/fail-nth)
    'tasks': None,        # task filter: names (fnmatch) of the tasks allowed to fail
    'require': None,      # stack filter: a symbol / kernel routine (or a list)
    'require_start': None, 'require_end': None,
    'reject': None, 'reject_start': None, 'reject_end': None,
    'verbose': 1,         # 0 silent, 1 one line, 2 with the stack
}
COMMON_KEYS = set(ATTR_KEYS) | {'fault', 'name'}
VERBOSE_BURST = 10        # reports per entry (printk_ratelimit's burst)


class PlanError(ValueError):
    """A bad fault plan: str() is the one-line reason (file: key: what)."""


# ---- plans ---------------------------------------------------------------------

class Plan:
    """A validated fault plan."""

    def __init__(self, where, data):
        self.path = where
        self.name = data.get('name') or os.path.splitext(os.path.basename(str(where)))[0]
        self.description = data.get('description', '')
        self.boot = dict(data.get('boot', {}))
        self.scenario = data.get('scenario')
        self.faults = [dict(f) for f in data.get('fault', [])]
        self.expect = dict(data.get('expect', {}))

    def expected(self, write_path):
        """The outcome this plan expects for `write_path`, or None."""
        return self.expect.get(write_path, self.expect.get('default'))

    def __repr__(self):
        return f'<Plan {self.name}: {len(self.faults)} faults>'


PLAN_KEYS = {'name', 'description', 'boot', 'fault', 'scenario', 'notes', 'expect'}


def load_plan(source, base_dir=None):
    """A Plan from a path (absolute, relative to base_dir, or to scenarios/,
    e.g. "plans/evict_after_prefault.toml"), a dict (an inline [plan]
    table) or a Plan.  PlanError (one line) on anything wrong."""
    if isinstance(source, Plan):
        return source
    if isinstance(source, dict):
        validate_plan('[plan]', source)
        return Plan('[plan]', source)
    if not isinstance(source, str):
        raise PlanError(f'plan: {source!r}: not a plan (allowed: a path, or a table)')
    path = resolve_plan_path(source, base_dir)
    try:
        data = read_toml(path, 'fault plan')
    except SchemaError as e:
        raise PlanError(str(e)) from None
    validate_plan(path, data)
    return Plan(path, data)


def resolve_plan_path(name, base_dir=None):
    scen = os.path.dirname(PLAN_DIR)
    cands = [name] if os.path.isabs(name) else \
        [os.path.join(d, name) for d in (base_dir, os.getcwd(), scen, PLAN_DIR) if d]
    if not name.endswith('.toml'):
        cands.append(os.path.join(PLAN_DIR, name + '.toml'))
    for c in cands:
        if os.path.isfile(c):
            return c
    raise PlanError(f'{name}: no such plan file (looked in {", ".join(dict.fromkeys(cands))})')


def validate_plan(path, data):
    for k in data:
        if k not in PLAN_KEYS:
            raise PlanError(f'{path}: {k}: unknown key (allowed: {", ".join(sorted(PLAN_KEYS))})')
    faults = data.get('fault', [])
    if not isinstance(faults, list) or not all(isinstance(f, dict) for f in faults):
        raise PlanError(f'{path}: fault: must be an array of tables ([[fault]])')
    if not isinstance(data.get('boot', {}), dict):
        raise PlanError(f'{path}: boot: must be a table of boot options')
    for k in ('name', 'description', 'scenario', 'notes'):
        if k in data and not isinstance(data[k], str):
            raise PlanError(f'{path}: {k}: {data[k]!r} is not a string')
    from .kernel import check_option       # kernel.py imports this module
    for k, v in data.get('boot', {}).items():
        try:
            check_option(k, v, f'{path}: boot.{k}')
        except SchemaError as e:
            raise PlanError(str(e)) from None
    for i, f in enumerate(faults):
        _validate_fault(path, f'fault[{i}].', f)
    _validate_expect(path, data.get('expect', {}))


def _validate_expect(path, expect):
    """[expect]: the outcome each write path should have under the plan
    (keys: write path names or "default")."""
    from .write_paths import DESIGNS
    if not isinstance(expect, dict):
        raise PlanError(f'{path}: expect: a table of write path = "outcome"')
    for k, v in expect.items():
        if k != 'default' and k not in DESIGNS:
            raise PlanError(f'{path}: expect.{k}: not a write path (allowed: default, '
                            f'{", ".join(DESIGNS)})')
        if not isinstance(v, str):
            raise PlanError(f'{path}: expect.{k}: {v!r} is not an outcome name')


def _validate_fault(path, where, f):
    kind = f.get('fault')
    if kind not in KINDS:
        raise PlanError(f'{path}: {where}fault: {kind!r} is not a fault kind '
                        f'(known: {", ".join(sorted(KINDS))})')
    cls = KINDS[kind]
    allowed = COMMON_KEYS | set(cls.KEYS)
    if cls.NO_TASK:
        allowed -= {'tasks', 'fail_nth'}
    for k in f:
        if k not in allowed:
            raise PlanError(f'{path}: {where}{k}: unknown key for fault "{kind}" '
                            f'(allowed: {", ".join(sorted(allowed))})')
    for k, v in f.items():
        problem = _check_value(k, v, cls)
        if problem:
            raise PlanError(f'{path}: {where}{k}: {v!r}: {problem}')
    for k in cls.REQUIRED:
        if k not in f:
            raise PlanError(f'{path}: {where}{k}: missing (fault "{kind}" needs it)')


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_value(key, v, cls):
    """What is wrong with value v of `key` (a string), or None."""
    if key == 'probability' and not (_is_int(v) and 0 <= v <= 100):
        return 'a percentage, 0 to 100'
    if key in ('interval',) and not (_is_int(v) and v >= 1):
        return 'a positive integer'
    if key == 'times' and not (_is_int(v) and v >= -1):
        return 'a count, or -1 for no limit'
    if key in ('space', 'fail_nth') and not (_is_int(v) and v >= 0):
        return 'a non-negative integer'
    if key == 'verbose' and v not in (0, 1, 2):
        return '0, 1 or 2'
    if key in ('tasks', 'require', 'reject') and not _str_or_list(v):
        return 'a name or a list of names'
    if key.endswith('_start') or key.endswith('_end'):
        if not (_is_int(v) or isinstance(v, str)):
            return 'an address or a kernel symbol'
    if key in ('name', 'fault') and not isinstance(v, str):
        return 'a string'
    if key in cls.KEYS:
        return cls.check(key, v)
    return None


def _str_or_list(v):
    return isinstance(v, str) or isinstance(v, list) and all(isinstance(x, str) for x in v)


def _as_list(v):
    return [] if v is None else [v] if isinstance(v, str) else list(v)


# ---- should_fail ---------------------------------------------------------------

class FaultAttr:
    """struct fault_attr and should_fail_ex() (lib/fault-inject.c), in
    Linux's order: the task's fail-nth, probability 0, the task filter,
    times, space, interval, the random draw, the stack filter."""

    def __init__(self, spec, rng, faults):
        g = lambda k: spec.get(k, ATTR_KEYS[k])                       # noqa: E731
        self.fail_nth = g('fail_nth')
        self.probability = spec.get('probability', 0 if self.fail_nth else 100)
        self.interval, self.times, self.space = g('interval'), g('times'), g('space')
        self.verbose = g('verbose')
        self.tasks = _as_list(g('tasks'))
        self.count = 0
        self.nth = {}                     # task -> fail-nth countdown
        self.rng = rng
        self.require = faults.ranges(spec, 'require')
        self.reject = faults.ranges(spec, 'reject')

    def task_ok(self, task):
        """fail_task(): in task context and selected (make-it-fail)."""
        if not self.tasks:
            return True
        return task is not None and any(fnmatch.fnmatchcase(task.name, p) for p in self.tasks)

    def should_fail(self, task, size, stack):
        if self.fail_nth and task is not None and self.task_ok(task):
            left = self.nth.setdefault(task, self.fail_nth)
            if left:
                self.nth[task] = left - 1
                return left == 1 and self._fail()
        if self.probability == 0:
            return False
        if self.tasks and not self.task_ok(task):
            return False
        if self.times == 0:
            return False
        if self.space > size:
            self.space -= size
            return False
        if self.interval > 1:
            self.count += 1
            if self.count % self.interval:
                return False
        if self.probability <= self.rng.randrange(100):
            return False
        if not self._stack_ok(stack):
            return False
        return self._fail()

    def _fail(self):
        if self.times > 0:
            self.times -= 1
        return True

    def _stack_ok(self, stack):
        """fail_stacktrace(): no frame in a reject range, one in a require
        range (if any is given).  `stack` is a list of guest addresses and
        kernel routine names, innermost first."""
        if not self.require and not self.reject:
            return True
        found = not self.require
        for item in stack() if callable(stack) else stack:
            if _in_ranges(item, self.reject):
                return False
            if _in_ranges(item, self.require):
                found = True
        return found


def _in_ranges(item, ranges):
    for r in ranges:
        if isinstance(r, str):
            if r == item:
                return True
        elif isinstance(item, int) and r[0] <= item < r[1]:
            return True
    return False


# ---- the injections -------------------------------------------------------------

class Injection:
    """One [[fault]] entry, installed in a kernel.  Subclasses say which keys
    they take (KEYS, REQUIRED), check their values (check) and hook
    themselves in (install)."""
    KEYS = {}
    REQUIRED = ()
    NO_TASK = False

    def __init__(self, faults, index, spec, seed):
        self.f = faults
        self.k = faults.k
        self.spec = spec
        self.index = index
        self.kind = spec['fault']
        self.opts = {key: spec.get(key, default) for key, default in self.KEYS.items()}
        self.label = spec.get('name') or self.default_label()
        rng = random.Random(f'kmaplab-fault:{seed}:{index}:{self.kind}')
        self.attr = FaultAttr(spec, rng, faults)
        self.counters = dict(calls=0, fired=0)

    def default_label(self):
        at = self.opts.get('at')
        return f'{self.kind}@{at}' if isinstance(at, str) else self.kind

    @classmethod
    def check(cls, key, value):
        return None

    def install(self):
        """Hook into the kernel / machine."""

    def effect(self, what, n=1):
        self.counters[what] = self.counters.get(what, 0) + n

    def decide(self, task, size=1, stack=None, where=''):
        """should_fail() for this entry, counted and (verbose) reported."""
        self.counters['calls'] += 1
        if stack is None:
            stack = lambda: self.f.stack(task)                        # noqa: E731
        if not self.attr.should_fail(task, size, stack):
            return False
        self.counters['fired'] += 1
        self.f.dump(self, task, where, stack)
        return True


def _symbol_check(value):
    if not _str_or_list(value):
        return 'a kernel symbol or a list of them'
    return None


# -- fail_page_alloc (mm/page_alloc.c should_fail_alloc_page) ----------------------

_GFP_HIGHMEM, _GFP_WAIT = pa.__GFP_HIGHMEM, pa.__GFP_WAIT     # (no name mangling in classes)
GFP_NAMES = {name: getattr(pa, name) for name in dir(pa)
             if name.startswith(('GFP_', '__GFP_')) and isinstance(getattr(pa, name), int)}


class PageAllocFail(Injection):
    """The allocation returns NULL.  Filters before should_fail, as
    should_fail_alloc_page: min_order, ignore_gfp_highmem, ignore_gfp_wait,
    and ours: zone (the first zone the gfp mask allows), order, gfp (flags
    that must all be set).  size = 1 << order."""
    KEYS = {'zone': None, 'min_order': 0, 'order': None, 'gfp': None,
            'ignore_gfp_highmem': False, 'ignore_gfp_wait': False}

    @classmethod
    def check(cls, key, v):
        if key == 'zone' and v not in pa.ZONE_NAMES:
            return f'a zone ({", ".join(pa.ZONE_NAMES)})'
        if key in ('min_order', 'order') and not (_is_int(v) and 0 <= v < pa.MAX_ORDER):
            return f'an order, 0 to {pa.MAX_ORDER - 1}'
        if key == 'gfp':
            names = _as_list(v) if _str_or_list(v) else [None]
            bad = [n for n in names if n not in GFP_NAMES]
            if bad:
                return f'GFP flag names (e.g. __GFP_HIGHMEM, GFP_HIGHUSER); not {bad[0]!r}'
        if key.startswith('ignore_') and not isinstance(v, bool):
            return 'true or false'
        return None

    def install(self):
        self.f.alloc_hooks.append(self)
        self.mask = 0
        for n in _as_list(self.opts['gfp']):
            self.mask |= GFP_NAMES[n]

    def eligible(self, gfp, order):
        o = self.opts
        if order < o['min_order'] or (o['order'] is not None and order != o['order']):
            return False
        if o['ignore_gfp_highmem'] and gfp & _GFP_HIGHMEM:
            return False
        if o['ignore_gfp_wait'] and gfp & _GFP_WAIT:
            return False
        if gfp & self.mask != self.mask:
            return False
        if o['zone'] is not None:
            zones = self.k.page_alloc.zonelist(gfp)
            return bool(zones) and zones[0].name == o['zone']
        return True


# -- the disk: fail_make_request, latency spikes ------------------------------------

class _DiskFault(Injection):
    KEYS = {'op': 'any', 'area': 'any'}
    NO_TASK = True            # decided in the disk: no task to filter on

    @classmethod
    def check(cls, key, v):
        if key == 'op' and v not in ('read', 'write', 'any'):
            return 'read, write or any'
        if key == 'area' and v not in ('swap', 'file', 'any'):
            return 'swap, file or any'
        if key == 'cycles' and not (_is_int(v) and v > 0):
            return 'a positive number of cycles'
        return None

    def matches(self, req):
        o = self.opts
        if o['op'] != 'any' and req.op != o['op']:
            return False
        if o['area'] == 'any':
            return True
        return self.f.disk_area(req.block) == o['area']


class MakeRequestFail(_DiskFault):
    """fail_make_request: the disk completes the request with an error and
    no data moves (Disk.fail_next).  Decided at completion, in interrupt
    context: there is no task (a `tasks` filter never matches)."""

    def install(self):
        self.f.disk_fail.append(self)

    def __call__(self, req):
        return self.matches(req) and self.decide(None, req.nblocks, stack=(), where=_req(req))


class DiskLatency(_DiskFault):
    """A latency spike: the request takes `cycles` more (Disk.extra_latency),
    decided at submission."""
    KEYS = dict(_DiskFault.KEYS, cycles=None)
    REQUIRED = ('cycles',)

    def install(self):
        self.f.disk_latency.append(self)

    def __call__(self, req):
        if self.matches(req) and self.decide(None, req.nblocks, stack=(), where=_req(req)):
            return self.opts['cycles']
        return 0


def _req(req):
    return f'disk {req.op} block {req.block}'


# -- IPIs: lost or late (Machine.ipi_filter) -----------------------------------------

class IpiFault(Injection):
    """A TLB-shootdown (or other) IPI from `from_cpu` to `to_cpu` is lost
    (ipi_lost) or arrives `cycles` late (ipi_delay).  The sender's current
    task is the task the filters see; its guest EIP is the stack."""
    KEYS = {'vector': 'tlb', 'from_cpu': None, 'to_cpu': None, 'cycles': None}

    @classmethod
    def check(cls, key, v):
        if key == 'vector' and v not in VECTORS:
            return f'one of {", ".join(VECTORS)}'
        if key in ('from_cpu', 'to_cpu') and not (_is_int(v) and v >= 0):
            return 'a CPU number'
        if key == 'cycles' and not (_is_int(v) and v > 0):
            return 'a positive number of cycles'
        return None

    def install(self):
        if self.kind == 'ipi_delay' and self.opts['cycles'] is None:
            raise PlanError(f'{self.label}: cycles: missing (ipi_delay needs it)')
        self.f.ipi_hooks.append(self)

    def __call__(self, src, dst, vector):
        """None: not this entry's; 'drop'; or a delay in cycles."""
        o = self.opts
        if VECTORS[o['vector']] and vector not in VECTORS[o['vector']]:
            return None
        if o['from_cpu'] is not None and src != o['from_cpu']:
            return None
        if o['to_cpu'] is not None and dst != o['to_cpu']:
            return None
        task = self.k.sched.current[src]
        eip = self.k.machine.cpus[src].regs.get('eip')
        if not self.decide(task, 1, stack=lambda: self.f.stack(task, eip),
                           where=f'IPI {vector:#x} CPU{src} -> CPU{dst}'):
            return None
        return 'drop' if self.kind == 'ipi_lost' else o['cycles']


def _vectors():
    from .irq import CALL_FUNCTION_VECTOR, INVALIDATE_TLB_VECTOR, RESCHEDULE_VECTOR
    return {'tlb': (INVALIDATE_TLB_VECTOR, CALL_FUNCTION_VECTOR),
            'invalidate': (INVALIDATE_TLB_VECTOR,), 'call_function': (CALL_FUNCTION_VECTOR,),
            'reschedule': (RESCHEDULE_VECTOR,), 'any': ()}


VECTORS = _vectors()


# -- forced eviction of a user page at a named kernel point ------------------------------

class EvictPage(Injection):
    """At kernel point `at`, evict the user page `page` ("buf": the first
    page of the write's source, "buf_end": its last, or an address) the way
    reclaim would: unmap it from every PTE (try_to_unmap_one: ptep_get_and_
    clear, flush_tlb_page, a swap entry for an anonymous page), write it if
    dirty, and free it: a page-cache page leaves the cache, an anonymous
    page the swap cache.  So the next access faults and finds a NEW page
    (not uptodate, for a file) or reads it back from swap.  An mm pinned by
    dont_unmap_pages is skipped, as reclaim skips it (honour_pins)."""
    KEYS = {'at': None, 'page': 'buf', 'honour_pins': True}
    REQUIRED = ('at',)

    @classmethod
    def check(cls, key, v):
        if key == 'at' and v not in POINTS:
            return f'a kernel point ({", ".join(POINTS)})'
        if key == 'page' and not (v in ('buf', 'buf_end') or _is_int(v)):
            return 'buf, buf_end, or a user address'
        if key == 'honour_pins' and not isinstance(v, bool):
            return 'true or false'
        return None

    def install(self):
        self.f.point_hooks.setdefault(self.opts['at'], []).append(self)

    def fire(self, task, ctx):
        va = _user_va(self.opts['page'], ctx)
        if va is None or task.mm is None:
            return
        if not self.decide(task, 1, where=f'{self.opts["at"]} page {va:#x}'):
            return
        result = yield from evict_user_page(self.k, task, task.mm, va, self.opts['honour_pins'])
        self.effect(result)


def _user_va(page, ctx):
    if page == 'buf':
        return ctx['buf'] & ~0xFFF if 'buf' in ctx else None
    if page == 'buf_end':
        return (ctx['buf'] + max(ctx.get('buflen', 1), 1) - 1) & ~0xFFF if 'buf' in ctx else None
    return page & ~0xFFF


def evict_user_page(k, task, mm, va, honour_pins=True):
    """Reclaim one user page now (what shrink_cache would do to it, with
    the page locked from before its PTEs are cleared until it is written).
    Generator -> 'evicted', or why not: 'not_resident', 'pinned', 'busy',
    'swap_full', 'still_mapped', 'in_use'.  May sleep (flushes, writeback)."""
    pte_pa = k.mm.pte_offset(mm, va)
    pte = k.mm.read_pte(pte_pa) if pte_pa is not None else 0
    if not pte & x86.PTE_P or pte >> 12 == k.mm.zero_pfn:
        return 'not_resident'
    pfn = pte >> 12
    fm = k.filemap
    if k.page_alloc.page_flags(pfn) & (1 << pa.PG_writeback) or not fm.trylock_page(task, pfn):
        return 'busy'
    try:
        file_page = k.vmscan._is_file_page(pfn)
        if not file_page and not k.page_alloc.test_page_flag(pfn, pa.PG_swapcache):
            if not k.swap.add_to_swap(pfn):
                return 'swap_full'
        pinned = False
        for m, v in list(k.rmap.mappers(pfn)):
            if honour_pins and m.dont_unmap_pages:
                pinned = True
                continue
            yield from m.page_table_lock.lock(task)
            yield from k.vmscan._unmap_pte(task, m, v, pfn)
            m.page_table_lock.unlock(task)
        if k.rmap.mapcount(pfn) > 0:
            return 'pinned' if pinned else 'still_mapped'
        return (yield from _free_unmapped(k, task, pfn, file_page))
    finally:
        if fm.lock_owner.get(pfn) is task:
            fm.unlock_page(task, pfn)


def _free_unmapped(k, task, pfn, file_page):
    """shrink_cache's end for one unmapped page, locked by the caller:
    write it if dirty, unlock it, then drop it from its cache if nobody else
    holds it.  Generator."""
    fm = k.filemap
    k.page_ref(pfn)                                   # ours, while we sleep
    try:
        if file_page:
            if fm.PageDirty(pfn):
                yield from k.vfs.writepage_for_reclaim(task, pfn)     # unlocks it
        elif k.page_alloc.test_page_flag(pfn, pa.PG_dirty):
            yield from k.swap.swap_writepage(task, pfn)
    finally:
        k.put_page(pfn)
    if fm.lock_owner.get(pfn) is task:
        fm.unlock_page(task, pfn)
    flags = k.page_alloc.page_flags(pfn)
    busy = (1 << pa.PG_locked) | (1 << pa.PG_writeback) | (1 << pa.PG_dirty)
    if flags & busy or k.page_alloc.page_count(pfn) != 1 or k.rmap.mapcount(pfn) > 0:
        return 'in_use'
    if file_page:
        if k.filemap.page_mapping(pfn) is None:
            return 'in_use'
        k.vfs.remove_from_page_cache(pfn)
    elif flags & (1 << pa.PG_swapcache):
        k.swap.delete_from_swap_cache(pfn)
    return 'evicted'


# -- a sibling thread's munmap + re-mmap --------------------------------------------------

class SiblingMunmap(Injection):
    """At kernel point `at`, a thread sharing the writer's mm (a kernel thread
    with use_mm, on CPU `cpu`: default the next CPU) takes mmap_sem for
    writing, munmaps the pages of the write's source [buf, buf + nbytes) and
    (remap = "same") maps the same object at the same address again
    (MAP_FIXED): the mapping changes, the bytes do not (Andrea's race).
    drop_cache = true also evicts the now unmapped file pages from the page
    cache, as memory pressure may, so the next fault must read the disk.
    The writer waits until the sibling is done or blocked (on mmap_sem)."""
    KEYS = {'at': None, 'remap': 'same', 'cpu': None, 'drop_cache': False}
    REQUIRED = ('at',)
    POLL = 5_000                  # cycles between the writer's looks at the sibling
    MAX_POLLS = 2_000

    @classmethod
    def check(cls, key, v):
        if key == 'at' and v not in POINTS:
            return f'a kernel point ({", ".join(POINTS)})'
        if key == 'remap' and v not in ('same', 'none'):
            return 'same or none'
        if key == 'cpu' and not (_is_int(v) and v >= 0):
            return 'a CPU number'
        if key == 'drop_cache' and not isinstance(v, bool):
            return 'true or false'
        return None

    def install(self):
        self.f.point_hooks.setdefault(self.opts['at'], []).append(self)

    def fire(self, task, ctx):
        mm = task.mm
        if mm is None or 'buf' not in ctx:
            return
        start = ctx['buf'] & ~0xFFF
        end = (ctx['buf'] + max(ctx.get('buflen', 1), 1) + 0xFFF) & ~0xFFF
        vma = mm.find_vma(start)
        if vma is None or vma.start > start:
            return
        end = min(end, vma.end)
        if not self.decide(task, (end - start) >> 12, where=f'{self.opts["at"]} '
                                                             f'{start:#x}-{end:#x}'):
            return
        cpu = self.opts['cpu'] if self.opts['cpu'] is not None else \
            (task.cpu + 1) % self.k.config['cpus']
        if cpu >= self.k.config['cpus']:
            raise KernelBug(f'fault {self.label}: cpu {cpu}: the machine has '
                            f'{self.k.config["cpus"]}')
        state = {'done': False}
        sib = self.k.kernel_thread(f'{task.name}-sibling', cpu,
                                   lambda t: self._sibling(t, mm, start, end, vma, state),
                                   mm=mm, start=self.k.machine.time(task.cpu), workload=False)
        yield from self._wait(task, sib, state)

    def _sibling(self, t, mm, start, end, vma, state):
        """The sibling thread: munmap + mmap(MAP_FIXED) under mmap_sem."""
        from .memory import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, VM_SHARED
        k = self.k
        yield from mm.mmap_sem.down_write(t)
        yield from k.mm.do_munmap(t, mm, start, end - start)
        self.effect('munmaps')
        if self.opts['remap'] == 'same':
            flags = MAP_FIXED | (MAP_SHARED if vma.flags & VM_SHARED else MAP_PRIVATE)
            if vma.file is None:
                flags |= MAP_ANONYMOUS
            pgoff = vma.pgoff + ((start - vma.start) >> 12)
            r = yield from k.mm.do_mmap(t, mm, start, end - start, _prot(vma.flags), flags,
                                        vma.file, pgoff, name=vma.name)
            self.effect('remaps' if r == start else 'remap_failed')
        mm.mmap_sem.up_write(t)
        if self.opts['drop_cache'] and vma.file is not None:
            yield from self._drop_cache(t, vma, start, end)
        state['done'] = True
        return 0

    def _drop_cache(self, t, vma, start, end):
        k = self.k
        mapping = vma.file.inode.mapping
        for va in range(start, end, 4096):
            pfn = mapping.pages.get(vma.pgoff + ((va - vma.start) >> 12))
            if pfn is None or k.rmap.mapcount(pfn) > 0:
                continue
            self.effect((yield from _free_unmapped(k, t, pfn, True)))

    def _wait(self, task, sib, state):
        """Until the sibling is done, dead, or sleeping (e.g. queued on the
        mmap_sem the writer holds for reading)."""
        for _ in range(self.MAX_POLLS):
            yield from self.k.sleep_for(task, self.POLL)
            if state['done'] or not sib.alive or sib.state == 'D':
                return


def _prot(vflags):
    from .memory import PROT_EXEC, PROT_READ, PROT_WRITE, VM_EXEC, VM_READ, VM_WRITE
    return ((PROT_READ if vflags & VM_READ else 0) | (PROT_WRITE if vflags & VM_WRITE else 0)
            | (PROT_EXEC if vflags & VM_EXEC else 0))


# -- guest-level points: code hooks on kernel symbols ----------------------------------------

class _GuestPoint(Injection):
    KEYS = {'at': None}
    REQUIRED = ('at',)

    @classmethod
    def check(cls, key, v):
        if key == 'at':
            return _symbol_check(v)
        return None

    def install(self):
        self.handles = []
        for lo, hi in self.f.symbol_ranges(self.opts['at'], self.label):
            self.handles.extend(self.f.code_hook(lo, hi, self.hit, self.per_address))

    per_address = False

    def hit(self, cpu, addr):
        task = self.k.sched.current[cpu.index]
        if task is None or task.idle:
            return
        if self.decide(task, 1, stack=lambda: self.f.stack(task, addr),
                       where=f'CPU{cpu.index} at {self.k.describe(addr)}'):
            self.act(cpu, task, addr)
            if self.attr.times == 0 and not self.attr.fail_nth:
                self.f.unhook(self.handles)       # spent: no more Python calls here
                self.handles = []


class Preempt(_GuestPoint):
    """An extra preemption at an instruction inside the routine(s) `at`:
    need_resched is set and a reschedule interrupt raised on that CPU; it
    is taken at the next block boundary with IF=1, and the kernel preempts
    if it may (preempt=full, preempt_count 0), as for a timer tick."""

    def act(self, cpu, task, addr):
        from .irq import RESCHEDULE_VECTOR
        self.k.sched.set_need_resched(task)
        self.k.machine.raise_irq(cpu.index, RESCHEDULE_VECTOR)
        self.effect('interrupts_raised')


# The register that holds the user pointer at entry of each user-access routine.
USER_POINTER = {
    'copy_from_user': 'edx', '__copy_from_user': 'edx', '__copy_from_user_inatomic': 'edx',
    'copy_to_user': 'eax', '__copy_to_user': 'eax', 'clear_user': 'eax',
    '__get_user_1': 'eax', '__get_user_4': 'eax', '__put_user_1': 'eax', '__put_user_4': 'eax',
    'strncpy_from_user': 'edx', 'fault_in_pages_readable': 'eax',
    'fault_in_pages_writeable': 'eax',
}
BAD_USER_ADDRESS = 0              # the NULL page: below every VMA, so bad_area


class UsercopyFail(_GuestPoint):
    """fail_usercopy: the user-access routine fails as on a bad address: at
    its first instruction, the user pointer register is pointed at the NULL
    page, so the access faults, do_page_fault finds no VMA and the exception
    table's fixup returns "nothing copied" (copy_from_user zeroes the kernel
    buffer, as lib/usercopy.c does on failure)."""
    KEYS = {'at': ['__copy_from_user', '__copy_from_user_inatomic', 'copy_from_user']}
    REQUIRED = ()
    per_address = True

    @classmethod
    def check(cls, key, v):
        if key == 'at':
            bad = [s for s in _as_list(v) if s not in USER_POINTER] if _str_or_list(v) else [v]
            if bad:
                return f'user-access routines ({", ".join(sorted(USER_POINTER))})'
        return None

    def install(self):
        syms = self.k.image.symbols
        self.routine_at = {syms[n]: n for n in _as_list(self.opts['at']) if n in syms}
        super().install()

    def act(self, cpu, task, addr):
        cpu.set_reg(USER_POINTER[self.routine_at[addr]], BAD_USER_ADDRESS)
        self.effect('short_copies')


KINDS = {
    'fail_page_alloc': PageAllocFail,
    'fail_make_request': MakeRequestFail,
    'disk_latency': DiskLatency,
    'ipi_lost': IpiFault,
    'ipi_delay': IpiFault,
    'evict_page': EvictPage,
    'sibling_munmap': SiblingMunmap,
    'preempt': Preempt,
    'fail_usercopy': UsercopyFail,
}


# ---- k.faults ------------------------------------------------------------------------------

class Faults:
    """The fault-injection state of one kernel (k.faults)."""

    def __init__(self, kernel):
        self.k = kernel
        self.plan = None
        self.injections = []
        self.point_hooks = {}         # kernel point -> [Injection]
        self.context = {}             # task -> what its write_page is writing
        self.alloc_hooks = []
        self.disk_fail = []
        self.disk_latency = []
        self.ipi_hooks = []
        self.reports = 0
        self.counters = dict(faults_injected=0)

    # -- hooks the kernel calls ----------------------------------------------------

    def write_context(self, task, **ctx):
        """write_page() says what it is writing (segs: the user segments
        [(addr, len)], nbytes, index): the context the write_path.* points
        hand to their injections, with buf/buflen = the first segment (the
        one the write paths prefault)."""
        if self.point_hooks:
            segs = ctx.get('segs') or [(0, 0)]
            self.context[task] = dict(ctx, buf=segs[0][0], buflen=segs[0][1])

    def at(self, point, task, **ctx):
        """A named kernel point.  Generator; nothing happens without a plan."""
        hooks = self.point_hooks.get(point)
        if not hooks:
            return
        ctx = dict(self.context.get(task, {}), **ctx)
        for inj in hooks:
            yield from inj.fire(task, ctx)

    def should_fail_alloc_page(self, task, gfp, order):
        """fail_page_alloc: True if this allocation must return NULL."""
        for inj in self.alloc_hooks:
            if inj.eligible(gfp, order) and inj.decide(task, 1 << order,
                                                       where=f'gfp {gfp:#x} order {order}'):
                inj.effect('failed_allocations')
                return True
        return False

    # -- machine hooks ---------------------------------------------------------------

    def _disk_fail(self, req):
        return any(inj(req) for inj in self.disk_fail)

    def _disk_latency(self, req):
        return sum(inj(req) for inj in self.disk_latency)

    def _ipi_filter(self, src, dst, vector):
        delay = 0
        for inj in self.ipi_hooks:
            r = inj(src, dst, vector)
            if r == 'drop':
                inj.effect('ipis_dropped')
                return None
            if r:
                inj.effect('ipis_delayed')
                delay += r
        return delay

    def disk_area(self, block):
        sw = self.k.swap
        if sw is not None and sw.first_block <= block < sw.first_block + sw.nslots:
            return 'swap'
        return 'file'

    def code_hook(self, lo, hi, fn, per_address):
        """Python code hooks on every CPU over [lo, hi) (one per instruction
        start if per_address, so only the entry point fires)."""
        addrs = [(lo, lo + 1)] if per_address else [(lo, hi)]
        return [(cpu, cpu.hook_code(a, b, fn)) for cpu in self.k.machine.cpus for a, b in addrs]

    def unhook(self, handles):
        for cpu, h in handles:
            cpu.unhook_code(h)

    # -- symbols and stacks ------------------------------------------------------------

    def symbol_ranges(self, names, where):
        """[(lo, hi)] of kernel symbols: a symbol runs to the next one."""
        img = self.k.image
        addrs = sorted(set(img.symbols.values()) | {img.base + img.size})
        out = []
        for name in _as_list(names):
            if name not in img.symbols:
                raise PlanError(f'{where}: {name!r} is not a kernel symbol')
            lo = img.symbols[name]
            hi = next(a for a in addrs if a > lo)
            out.append((lo, hi))
        return out

    def ranges(self, spec, prefix):
        """The require/reject filter of an entry: routine names (matched
        against Python kernel routines and guest symbols) and [lo, hi)
        address ranges."""
        out = []
        for name in _as_list(spec.get(prefix)):
            out.append(name)
            if name in self.k.image.symbols:
                out.extend(self.symbol_ranges(name, prefix))
        lo, hi = spec.get(prefix + '_start'), spec.get(prefix + '_end')
        if lo is not None or hi is not None:
            out.append((self._addr(lo, 0), self._addr(hi, 1 << 32)))
        return out

    def _addr(self, v, default):
        if v is None:
            return default
        if isinstance(v, str):
            if v not in self.k.image.symbols:
                raise PlanError(f'{v!r} is not a kernel symbol')
            return self.k.image.symbols[v]
        return v

    def stack(self, task, eip=None):
        """The 'stack trace' the require/reject filters look at, innermost
        first: a guest EIP, the Python kernel routines being run (this
        call's own, then the task's generator chain), and the guest
        contexts the task's frames interrupted."""
        out = [] if eip is None else [eip]
        live = _live_kernel_routines()
        for frame in reversed(task.frames if task is not None else []):
            chain = live if live and frame is task.frames[-1] else _generator_chain(frame.gen)
            out.extend(chain)
            if frame.saved is not None:
                out.append(frame.saved['eip'])
        return out


    # -- reports --------------------------------------------------------------------------

    def dump(self, inj, task, where, stack):
        """fail_dump(): "FAULT_INJECTION: forcing a failure." (verbose 1),
        with the stack (verbose 2); at most VERBOSE_BURST per entry."""
        self.counters['faults_injected'] += 1
        a = inj.attr
        if a.verbose == 0 or inj.counters['fired'] > VERBOSE_BURST:
            return
        msg = (f'FAULT_INJECTION: forcing a failure. name {inj.label}, interval {a.interval}, '
               f'probability {a.probability}, space {a.space}, times {a.times}: {where}')
        extra = {}
        if a.verbose > 1:
            items = stack() if callable(stack) else stack
            extra['stack'] = [self.k.describe(x) if isinstance(x, int) else x for x in items]
        self.k.report('fault', msg, task=task, fault=inj.label, **extra)

    def summary(self):
        """Per entry: label, kind, calls, fired and what the firings did."""
        return [dict(label=i.label, kind=i.kind, **i.counters) for i in self.injections]

    def never_fired(self):
        return [i.label for i in self.injections if i.counters['fired'] == 0]


def apply_plan(kernel, plan, seed=None):
    """Install `plan` (a Plan, a path, or an inline dict) in a booted kernel,
    before it runs.  `seed` (default: the boot's seed) seeds the plan's
    random draws.  Returns kernel.faults.  PlanError on a bad plan."""
    plan = load_plan(plan)
    if getattr(kernel, 'faults', None) is None:
        kernel.faults = Faults(kernel)
    f = kernel.faults
    if f.plan is not None:
        raise PlanError(f'{plan.path}: a plan ({f.plan.name}) is already applied to this kernel')
    f.plan = plan
    seed = kernel.config['seed'] if seed is None else seed
    for i, spec in enumerate(plan.faults):
        inj = KINDS[spec['fault']](f, i, spec, seed)
        try:
            inj.install()
        except PlanError as e:
            raise PlanError(f'{plan.path}: fault[{i}]: {e}') from None
        f.injections.append(inj)
    m = kernel.machine
    if f.disk_fail:
        kernel.disk.fail_next = f._disk_fail
    if f.disk_latency:
        kernel.disk.extra_latency = f._disk_latency
    if f.ipi_hooks:
        m.ipi_filter = f._ipi_filter
    return f


_KERNEL_DIR = os.path.dirname(os.path.abspath(__file__))
_NOT_ROUTINES = {os.path.join(_KERNEL_DIR, n) for n in ('faults.py', 'checks.py')}
_ENGINE = os.path.join(_KERNEL_DIR, 'entry.py')


def _live_kernel_routines():
    """The Python kernel routines on the host stack right now (when a point
    in Python code fires), innermost first, without the injector's own."""
    out = []
    f = sys._getframe(1)
    while f is not None:
        fn = f.f_code.co_filename
        if fn == _ENGINE:
            break
        if fn.startswith(_KERNEL_DIR) and fn not in _NOT_ROUTINES:
            out.append(f.f_code.co_name)
        f = f.f_back
    return out


def _generator_chain(gen):
    """A suspended frame's routines, innermost first (its yield-from chain)."""
    out = []
    while gen is not None and hasattr(gen, 'gi_code'):
        out.append(gen.gi_code.co_name)
        gen = gen.gi_yieldfrom
    return out[::-1]
