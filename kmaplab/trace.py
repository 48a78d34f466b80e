"""`kmaplab trace`: the tracer (what is traced, and how entries are made).

What this file owns
  - Filters: which CPUs, tasks, routines (--symbols), rings, window, which
    event categories (--events, in the spirit of QEMU's -d), and whether
    instructions are traced at all.
  - Tracer: the consumer of vm/trace.py's per-run records and of the kernel's
    trace_event() calls.  It turns records into Insn entries (sequence
    number, simulated time, CPU, task, ring, EIP symbolized with file:line,
    bytes, disassembly, the registers the instruction changed, its memory
    accesses with virtual and physical address) and into Events, synthesizes
    the events Python cannot see (kmap slot map/unmap/wrap, TLB flushes, IPI
    acknowledgements, a kmap_atomic slot reused under a sleeping holder) from
    one-address hooks on the kernel's labels, samples counters (free pages
    per zone, pkmap slots in use) at every CPU run's end, and hands
    everything, in order, to one sink.
  - Sink: the interface of the output formats, which live beside it:
    trace_text.py (text, jsonl), trace_perfetto.py (Perfetto protobuf and
    legacy JSON), trace_tenet.py (Tenet, one file per task); the command in
    trace_cmd.py; the bench rows in trace_bench.py.

Rules
  - Tracing never changes the run: the tracer only reads guest state and
    kernel objects (tests/test_trace.py compares counters with and without).
  - Sequence numbers count the guest instructions all CPUs retired before
    an entry; an event made by Python between two runs gets the number of
    the instruction that comes next, one made by a Python hook during a run
    (a checker) the number of the instruction about to run (a MARK record
    puts it in place).  They do not depend on the filters.
  - Entries reach the sink in sequence order: a run's records are decoded
    right after the run, and kernel events happen between runs.
  - A user mistake (a bad filter, no such symbol or variant, an unwritable
    --out) is a ValueError with a one-line reason (exit code 2).
"""
import bisect
import fnmatch
import os
import re

import capstone
from capstone import x86_const as cx

from minikernel import layout
from minikernel.irq import (CALL_FUNCTION_VECTOR, DISK_VECTOR, INVALIDATE_TLB_VECTOR, LOCAL_TIMER_VECTOR,
                            RESCHEDULE_VECTOR)
from minikernel.kernel import ROOT
from vm import trace as vtrace
from vm.symbols import Symbolizer


REGS = vtrace.REGS
_CS_REG = REGS.index('cs')
_CR3_REG = REGS.index('cr3')
_ESP_REG = REGS.index('esp')
PF_P, PF_W, PF_U = 1, 2, 4
ADDR_KEYS = {'address', 'eip', 'va', 'vaddr', 'fixup', 'mask', 'entry', 'cr2', 'pa', 'vector'}
SYM_KEYS = ('eip', 'fixup')
VECTOR_NAMES = {LOCAL_TIMER_VECTOR: 'LOCAL_TIMER', CALL_FUNCTION_VECTOR: 'CALL_FUNCTION',
                RESCHEDULE_VECTOR: 'RESCHEDULE', INVALIDATE_TLB_VECTOR: 'INVALIDATE_TLB', DISK_VECTOR: 'DISK'}
_STACK_INSNS = {cx.X86_INS_PUSH, cx.X86_INS_POP, cx.X86_INS_CALL, cx.X86_INS_RET,
                cx.X86_INS_PUSHFD, cx.X86_INS_POPFD, cx.X86_INS_PUSHAL, cx.X86_INS_POPAL,
                cx.X86_INS_IRETD, cx.X86_INS_LEAVE, cx.X86_INS_ENTER}
_PAGE_OFFSET = layout.PAGE_OFFSET
_REC_WORDS = vtrace.REC_DTYPE.itemsize // 4
_MEM_READ = vtrace.MEM_READ
# --events: the categories of events (QEMU -d style); 'insn' is the instructions.
CATEGORY_EVENTS = {
    'fault': ('page_fault', 'fault_resolved', 'fixup'),
    'ipi': ('ipi_sent', 'ipi_received', 'ipi_ack', 'ipi_done'),
    'tlb': ('tlb_flush',),
    'sched': ('context_switch', 'preempt', 'wakeup', 'exit'),
    'kmap': ('kmap_atomic', 'kunmap_atomic', 'pkmap_map', 'pkmap_wrap', 'pkmap_sleep', 'kunmap_high',
             'kmap_local', 'kunmap_local', 'kmap_slot_reused', 'kmap_wrong_page'),
    'syscall': ('syscall', 'syscall_exit'),
    'lock': ('rwsem', 'spin_lock', 'lock_page', 'unlock_page'),
    'mm': ('pte_zap', 'reclaim_unmap', 'swap_in', 'swap_out'),
    'disk': ('disk_read', 'disk_write', 'disk_done'),
    'report': ('report', 'trace_dropped'),
}
CATEGORIES = tuple(CATEGORY_EVENTS) + ('insn',)
_CATEGORY_OF = {name: cat for cat, names in CATEGORY_EVENTS.items() for name in names}


def category(name):
    """The --events category of an event name ('disk_read' ... 'disk'; an
    event no table names is 'other', shown unless categories are chosen)."""
    got = _CATEGORY_OF.get(name)
    if got is None and name.startswith('disk_'):
        return 'disk'
    return got or 'other'


def parse_events(text):
    """--events 'fault,ipi,insn' -> the set of categories (None: all)."""
    if text is None:
        return None
    cats = set(_split(text))
    bad = sorted(cats - set(CATEGORIES))
    if bad or not cats:
        raise ValueError(f'--events {text!r}: categories are {",".join(CATEGORIES)} '
                         f'(--events help lists the events of each)')
    return cats


_LABEL_ONLY = re.compile(r'^\s*[\w.$]+:\s*(//.*)?$')
_COMMENT = re.compile(r'^\s*(//|/\*|\*|# )')


# ---- filters --------------------------------------------------------------------

def parse_window(text):
    """'FROM:TO[,FROM:TO...]' -> (unit, [(lo, hi)]); unit 'seq' (sequence
    numbers) or 'time' (a 'c' suffix: simulated cycles), the same for every
    range.  Either end of a range may be empty (hi None: to the end)."""
    if text is None:
        return None
    units, out = set(), []
    for item in _split(text):
        unit, lo, hi = _parse_range(text, item)
        units.add(unit)
        out.append((lo, hi))
    if not out:
        raise ValueError(f'--window {text!r}: expected FROM:TO')
    if len(units) > 1:
        raise ValueError(f'--window {text!r}: all in sequence numbers or all in cycles (c suffix)')
    return units.pop(), sorted(out, key=lambda r: r[0])


def _parse_range(text, item):
    if item.count(':') != 1:
        raise ValueError(f'--window {text!r}: expected FROM:TO (sequence numbers, or cycles with a c suffix)')
    ends, units = [], set()
    for part in item.split(':'):
        part = part.strip().replace('_', '')
        if not part:
            ends.append(None)
            continue
        unit = 'time' if part[-1] in 'cC' else 'seq'
        num = part[:-1] if unit == 'time' else part
        if not num.isdigit():
            raise ValueError(f'--window {text!r}: {part!r} is not a number (e.g. 1000:5000 or 20000c:90000c)')
        ends.append(int(num))
        units.add(unit)
    if len(units) > 1:
        raise ValueError(f'--window {text!r}: {item!r} mixes sequence numbers and cycles')
    lo, hi = ends[0] or 0, ends[1]
    if hi is not None and hi <= lo:
        raise ValueError(f'--window {text!r}: in {item!r}, TO must be greater than FROM')
    return (units.pop() if units else 'seq'), lo, hi


def _split(text):
    return [p.strip() for p in (text or '').split(',') if p.strip()]


class Filters:
    """What to trace.  cpus: set of CPU indexes or None (all); tasks: names,
    pids or name/pid globs, or None; symbols: routine names or globs, or
    None; kernel/user: rings; window: parse_window(); events_only; memory;
    categories: parse_events() (None: every event; without 'insn' no
    instructions are traced)."""

    def __init__(self, cpus=None, tasks=None, symbols=None, kernel=False, user=False,
                 window=None, events_only=False, memory=True, categories=None):
        self.cpus = None if cpus is None else set(cpus)
        self.categories = categories
        if categories is not None and 'insn' not in categories:
            events_only = True
        self.tasks = tasks
        self.symbols = symbols
        self.kernel, self.user = kernel, user
        self.window = window
        self.events_only = events_only
        self.memory = memory

    @classmethod
    def from_args(cls, args):
        cpus = None
        if args.cpu:
            try:
                cpus = {int(c, 0) for c in _split(args.cpu)}
            except ValueError:
                raise ValueError(f'--cpu {args.cpu!r}: expected CPU numbers, e.g. 0,2') from None
        return cls(cpus, _split(args.task) or None, _split(args.symbols) or None, args.kernel,
                   args.user, parse_window(args.window), args.events_only, not args.no_mem,
                   parse_events(getattr(args, 'events', None)))

    def event_ok(self, name):
        return self.categories is None or category(name) in self.categories

    def check(self, ncpus):
        for c in self.cpus or ():
            if not 0 <= c < ncpus:
                raise ValueError(f'--cpu {c}: the machine has CPUs 0..{ncpus - 1}')

    def task_ok(self, task):
        if self.tasks is None or task is None:
            return self.tasks is None
        label = f'{task.name}/{task.pid}'
        return any(p == str(task.pid) or fnmatch.fnmatchcase(task.name, p)
                   or fnmatch.fnmatchcase(label, p) for p in self.tasks)

    def mentions(self, fields):
        """Does an event name a task of --task in a field ('next=vwriter/2',
        'holder=vwriter/2')?  Such events of other tasks are shown too."""
        if self.tasks is None:
            return True
        for v in fields.values():
            if isinstance(v, str) and '/' in v and ' ' not in v:
                name, _, pid = v.rpartition('/')
                if pid.isdigit() and any(p == pid or fnmatch.fnmatchcase(name, p)
                                         or fnmatch.fnmatchcase(v, p) for p in self.tasks):
                    return True
        return False

    def cpu_ok(self, cpu):
        return self.cpus is None or cpu is None or cpu in self.cpus

    def in_window(self, seq, t):
        w = self.window
        if w is None:
            return True
        v = seq if w[0] == 'seq' else t
        return any(v >= lo and (hi is None or v < hi) for lo, hi in w[1])

    def window_bounds(self):
        """(lo, hi) covering every range of the window (hi None: open)."""
        w = self.window[1]
        his = [hi for _, hi in w]
        return w[0][0], None if None in his else max(his)

    def describe(self):
        d = {}
        for key in ('tasks', 'symbols', 'window'):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        if self.categories is not None:
            d['events'] = sorted(self.categories)
        if self.cpus is not None:
            d['cpus'] = sorted(self.cpus)
        for key in ('kernel', 'user', 'events_only'):
            if getattr(self, key):
                d[key] = True
        if not self.memory:
            d['memory'] = False
        return d


# ---- what the code is: routines, symbols, decoded instructions --------------------

def _label_opens_routine(src, lineno, name):
    """The project's asm convention (style.md): a routine starts with a
    comment (its prototype); a label right after a comment line, or first
    in its file, opens a routine; any other label is a place inside the
    routine above it."""
    pat = re.compile(rf'(^|\s){re.escape(name)}:')
    i = lineno - 1
    while i >= 0 and i >= lineno - 12 and not pat.search(src[i]):
        i -= 1
    if i < 0 or not pat.search(src[i]):
        return False
    i -= 1
    while i >= 0 and (not src[i].strip() or _LABEL_ONLY.match(src[i])):
        i -= 1
    return i < 0 or bool(_COMMENT.match(src[i]))


def routine_starts(image):
    """Sorted [(address, name)] of the labels of `image` that open a routine."""
    texts, out = {}, []
    for name, addr in image.symbols.items():
        loc = image.line_at(addr)
        if loc is None or name.startswith('.'):
            continue
        file, line = loc
        if file not in texts:
            try:
                with open(os.path.join(ROOT, file)) as f:
                    texts[file] = f.read().split('\n')
            except OSError:
                texts[file] = []
        if _label_opens_routine(texts[file], line, name):
            out.append((addr, name))
    return sorted(set(out))


class InsnInfo:
    """What does not change between executions of one instruction (text:
    its middle columns, made by the text sink once)."""
    __slots__ = ('where', 'sym', 'file', 'line', 'routine', 'raw', 'asm', 'memops', 'stack', 'image',
                 'text')


class Code:
    """Symbols, routines and decoded instructions of the kernel image and
    the user programs, cached per address."""

    def __init__(self, k):
        self.k = k
        self.kernel = k.image
        self.programs = {name: p.image for name, p in k.binfmt.programs.items()}
        self._routines = {}
        self._symbolizers = {id(k.image): k.symbolizer}
        self._cache = {}
        self.kernel_info = {}       # eip -> InsnInfo, kernel image only (the decoder's fast path)
        self._md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
        self._md.detail = True

    def image_for(self, task, eip):
        if self.kernel.contains(eip):
            return self.kernel
        prog = getattr(task, 'program', None) if task is not None else None
        if prog is not None and prog.image.contains(eip):
            return prog.image
        return None

    def routines(self, image):
        key = id(image)
        if key not in self._routines:
            starts = routine_starts(image)
            self._routines[key] = ([a for a, _ in starts], [n for _, n in starts])
        return self._routines[key]

    def routine_of(self, image, addr):
        addrs, names = self.routines(image)
        i = bisect.bisect_right(addrs, addr) - 1
        return names[i] if i >= 0 else None

    def symbol_range(self, image, addr):
        """[addr, start of the next routine) in image."""
        addrs, _ = self.routines(image)
        i = bisect.bisect_right(addrs, addr)
        return addr, addrs[i] if i < len(addrs) else image.base + image.size

    def describe(self, task, addr):
        image = self.image_for(task, addr)
        if image is None:
            return f'{addr:#010x}'
        sym = self._symbolizers.get(id(image))
        if sym is None:
            sym = self._symbolizers[id(image)] = Symbolizer([image])
        return sym.describe(addr)

    def info(self, task, eip, size, cr3, cpu):
        image = self.image_for(task, eip)
        key = (id(image), eip) if image is not None else None
        got = self._cache.get(key) if key else None
        if got is None:
            got = self._decode(image, task, eip, size, cr3, cpu)
            if key:
                self._cache[key] = got
        return got

    def _decode(self, image, task, eip, size, cr3, cpu):
        info = InsnInfo()
        info.image, info.text = image, None
        if image is not None:
            off = eip - image.base
            raw = image.code[off:off + (size or 15)]
            loc = image.line_at(eip)
            sym = image.symbol_at(eip)
        else:
            raw = cpu.read_virt(cr3, eip, max(size, 1)) or b''
            loc = sym = None
        info.raw = bytes(raw)
        info.file, info.line = loc if loc else (None, None)
        info.sym = (f'{sym[0]}+{sym[1]:#x}' if sym[1] else sym[0]) if sym else f'{eip:#010x}'
        info.where = f'{info.sym} ({info.file}:{info.line})' if loc else info.sym
        info.routine = (self.routine_of(image, eip) if image is not None else None) or info.sym
        info.asm, info.memops, info.stack = '(bad)', (), False
        for insn in self._md.disasm(info.raw, eip, 1):
            info.raw = info.raw[:insn.size]
            info.asm = f'{insn.mnemonic} {insn.op_str}'.strip()
            info.memops = tuple(self._memop(insn, op) for op in insn.operands if op.type == cx.X86_OP_MEM)
            info.stack = insn.id in _STACK_INSNS
        return info

    @staticmethod
    def _memop(insn, op):
        m = op.mem
        base = insn.reg_name(m.base) if m.base else None
        index = insn.reg_name(m.index) if m.index else None
        base = REGS.index(base) if base in REGS else None
        index = REGS.index(index) if index in REGS else None
        return base, index, m.scale, m.disp, op.access


def virtual_address(info, regs, typ, pa):
    """The virtual address of an access at physical `pa`, from the operands
    of the instruction and the registers before it: the candidate (an
    operand's effective address, or ESP for push/pop/call/ret/iret) nearest
    to an address with pa's page offset, preferring operands that read
    (write) for a read (write).  None when nothing is within 64 bytes."""
    want = capstone.CS_AC_READ if typ == vtrace.MEM_READ else capstone.CS_AC_WRITE
    off = pa & 0xFFF
    best, best_d = None, 64
    for base, index, scale, disp, access in info.memops:
        ea = disp
        if base is not None:
            ea += regs[base]
        if index is not None:
            ea += regs[index] * scale
        delta = ((off - ea + 2048) & 0xFFF) - 2048      # from ea to the nearest match
        d = abs(delta) + (0 if access & want else 32)
        if d < best_d:
            best, best_d = (ea + delta) & 0xFFFFFFFF, d
    if info.stack:
        esp = regs[_ESP_REG]
        delta = ((off - esp + 2048) & 0xFFF) - 2048
        if abs(delta) < best_d:
            best = (esp + delta) & 0xFFFFFFFF
    return best


# ---- entries ------------------------------------------------------------------------

class Insn:
    """One traced instruction.  regs: the changed registers (name, new
    value), or None when the state after it is not known (it faulted, or
    was the last one before the trace was cut); mem: (op 'r'/'w', va or
    None, pa, size, value)."""
    __slots__ = ('seq', 'time', 'cpu', 'task', 'ring', 'eip', 'info', 'before', 'after',
                 'next_eip', 'regs', 'mem', 'retired')


class Event:
    __slots__ = ('seq', 'time', 'cpu', 'task', 'name', 'fields')

    def __init__(self, seq, t, cpu, task, name, fields):
        self.seq, self.time, self.cpu, self.task, self.name, self.fields = seq, t, cpu, task, name, fields


def _plain(v):
    """A field value as JSON-able data, fixed now (kernel objects change)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if callable(v) and hasattr(v, '__qualname__'):
        return v.__qualname__                  # a function: its name, never its address
    return _HOST_ADDR.sub('', str(v))          # no host addresses: traces are bit-identical


_HOST_ADDR = re.compile(r' at 0x[0-9a-fA-F]+')


_LABELS = {}


def _label(task):
    """'name/pid' (cached per task: it is on every line)."""
    if task is None:
        return '-'
    got = _LABELS.get(task)
    if got is None or got[0] != task.name:
        got = _LABELS[task] = (task.name, f'{task.name}/{task.pid}')
    return got[1]


# ---- the tracer -------------------------------------------------------------------------

class Tracer:
    """Connects a kernel (kernel.tracer, vm.trace.MachineTrace) to a sink.
    Use: run_variant(..., tracer=Tracer(sink, filters)); then close()."""

    def __init__(self, sink, filters=None, meta=None):
        self.sink = sink
        self.f = filters or Filters()
        self.meta = dict(meta or {})
        self.k = None
        self.mt = None
        self.counts = dict(instructions=0, events=0, dropped=0)
        self._user_images = None

    # ---- attaching ----------------------------------------------------------

    def attach(self, k):
        self.k = k
        m = k.machine
        self.f.check(len(m.cpus))
        self.code = Code(k)
        self.points = KernelPoints(self)
        ranges = None if self.f.events_only else self._ranges()
        self.mt = vtrace.MachineTrace(m, self, cpus=self.f.cpus,
                                      memory=self.f.memory and not self.f.events_only)
        self.mt.set_ranges(ranges)
        self.mt.set_points(self.points.addresses())
        w = self.f.window
        if w is not None and w[0] == 'seq':
            self.mt.set_window(*self.f.window_bounds())
        n = len(m.cpus)
        self._task, self._t0, self._extra = [None] * n, [0] * n, [0] * n
        self._running = None            # the CPU in a run (events made mid-run by Python hooks)
        self._marked = {}               # MARK record index -> [Event] of the current run
        self._samples = 0               # vmstat samples handed to the sink
        self.mt.attach()
        if self._window_near(None, 0):
            self.mt.on()
        k.tracer = self
        self.sink.begin(dict(self.meta, seed=k.config['seed'], cpus=n, filters=self.f.describe(),
                             regs=list(REGS), time_unit='cycles'))

    def _ranges(self):
        """[lo, hi) ranges for the code hooks from --symbols, --kernel, --user."""
        f = self.f
        ring_lo = 0 if f.user or not f.kernel else layout.PAGE_OFFSET
        ring_hi = layout.PAGE_OFFSET if f.user and not f.kernel else 1 << 32
        if f.symbols is None:
            return [(ring_lo, ring_hi)]
        out, self._user_images = [], set()
        for pat in f.symbols:
            hits = self._symbol_ranges(pat)
            if not hits:
                raise ValueError(f'--symbols {pat!r}: no routine or label of that name '
                                 f'(kernel: asm/kernel/*.S; programs: {", ".join(sorted(self.code.programs))})')
            for image, lo, hi in hits:
                if image is not self.code.kernel:
                    self._user_images.add(id(image))
                lo, hi = max(lo, ring_lo), min(hi, ring_hi)
                if lo < hi:
                    out.append((lo, hi))
        if not out:
            raise ValueError('--symbols with --kernel/--user: nothing left to trace')
        return out

    def _symbol_ranges(self, pat):
        images = [self.code.kernel] + [self.code.programs[p] for p in sorted(self.code.programs)]
        hits = []
        for image in images:
            for name, addr in sorted(image.symbols.items(), key=lambda x: x[1]):
                if fnmatch.fnmatchcase(name, pat) and image.contains(addr):
                    lo, hi = self.code.symbol_range(image, addr)
                    hits.append((image, lo, hi))
        return hits

    def close(self, result=None):
        """Detach from the machine and finish the sink (returns the counts)."""
        if self.mt is not None:
            self.mt.detach()
        if self.k is not None and self.k.tracer is self:
            self.k.tracer = None
        summary = dict(self.counts)
        if result is not None:
            summary.update(outcome=result['outcome'], expected=result['expected'], ok=result['ok'])
        self.sink.end(summary)
        return summary

    # ---- the window: hooks only near it --------------------------------------

    def _total(self):
        return sum(c.k.executed for c in self.k.machine.cpus)

    def _window_near(self, cpu, budget):
        """Is the window open, or could this run reach it?"""
        w = self.f.window
        if w is None:
            return True
        m = self.k.machine
        if w[0] == 'seq':
            now = self._total()
        else:
            now = min(m.time(i) for i in range(len(m.cpus))) if cpu is None else m.time(cpu.index)
        end = now + budget + 1024
        return any(end >= lo and (hi is None or now < hi) for lo, hi in w[1])

    # ---- vm.trace consumer -------------------------------------------------------

    def before_run(self, cpu, budget):
        i = cpu.index
        task = self.k.sched.current[i]
        self._task[i], self._t0[i], self._extra[i] = task, self.k.machine.time(i), self.k.machine.extra[i]
        if self.f.window is not None:
            self.mt.on() if self._window_near(cpu, budget) else self.mt.off()
        self._running = cpu
        return self.f.task_ok(task)

    def after_run(self, cpu, trap, recs, mems, stop, dropped):
        i = cpu.index
        self._running = None
        task = self._task[i]
        vs = self.k.vmstat
        while self._samples < len(vs.t):                                 # memory samples (vmstat.py)
            n = self._samples
            self.sink.counter_sample(vs.t[n], {z: v[n] for z, v in vs.free.items()}, vs.pkmap[n])
            self._samples += 1
        self.sink.span(i, task, self._t0[i], self.k.machine.time(i))     # every task: the timeline
        if len(recs):
            self._decode(cpu, task, recs, mems, stop)
        if dropped:
            self.counts['dropped'] += dropped
            self._emit(Event(self._total(), self.k.machine.time(i), i, task, 'trace_dropped',
                             {'records': dropped}))

    def _decode(self, cpu, task, recs, mems, stop):
        """One run's records -> Insn entries and point events, in order.
        Records are read as rows of 32-bit words (one tolist per run).  The
        after-state of an instruction is the next INSN or STATE record, or
        the stop, when that is the next instruction (icount + 1)."""
        n, i = len(recs), cpu.index
        rows = recs.view('<u4').reshape(n, _REC_WORDS).tolist()
        rows.append([0, 0] + [cpu.k.executed & 0xFFFFFFFF, cpu.k.executed >> 32, vtrace.STATE,
                              cpu.regs['eip'], 0, 0, 0] + list(stop))
        mem = mems.view('<u4').reshape(len(mems), 6).tolist() if len(mems) else ()
        nxt, later = [0] * n, n
        for j in range(n - 1, -1, -1):          # the next INSN/STATE record (or the stop)
            nxt[j] = later
            if rows[j][4] < vtrace.POINT:
                later = j
        executed, extra = cpu.k.executed, self._extra[i]
        user_ok = self._user_images is None or (task is not None and task.program is not None
                                                and id(task.program.image) in self._user_images)
        windowed = self.f.window is not None
        marked, self._marked = self._marked, {}
        info_of, sink, points = self.code.info, self.sink, self.points
        kinfo, held_by = self.code.kernel_info, points.held_by
        count = 0
        for j in range(n):
            w = rows[j]
            k = w[4]
            if k != vtrace.INSN:
                if k == vtrace.POINT:
                    points.hit(i, task, w[0] | w[1] << 32, w[2] + (w[3] << 32) + extra, w[5], w[9:])
                elif k == vtrace.MARK:
                    for e in marked.get(j, ()):
                        self._emit(e)
                continue
            eip, ic = w[5], w[2] | w[3] << 32
            if eip < _PAGE_OFFSET and not user_ok:
                continue
            if windowed and not self.f.in_window(w[0] | w[1] << 32, ic + extra):
                continue
            x = Insn()
            x.seq, x.time, x.cpu, x.task, x.eip = w[0] | w[1] << 32, ic + extra, i, task, eip
            x.before = before = w[9:]
            x.ring = before[_CS_REG] & 3
            info = kinfo.get(eip)
            if info is None:
                info = info_of(task, eip, w[6], before[_CR3_REG], cpu)
                if eip >= _PAGE_OFFSET and info.image is not None:
                    kinfo[eip] = info
            x.info = info
            x.retired = ic < executed
            a = rows[nxt[j]]
            if (a[2] | a[3] << 32) == ic + 1:
                x.after = after = a[9:]
                x.next_eip = a[5]
                x.regs = [(r, v) for r, v, b in zip(REGS, after, before) if v != b] if after != before else []
            else:
                x.after = x.next_eip = x.regs = None
            if w[7]:
                x.mem = [('r' if m[1] == _MEM_READ else 'w', virtual_address(info, before, m[1], m[2]),
                          m[2], m[3], m[4] | m[5] << 32) for m in mem[w[8]:w[8] + w[7]]]
                if task in held_by:
                    points.check_access(x)
            else:
                x.mem = ()
            count += 1
            sink.insn(x)
        self.counts['instructions'] += count

    # ---- kernel events -------------------------------------------------------------

    def event(self, name, task, fields):
        """kernel.trace_event(): an event made by Python kernel code, between
        runs, or mid-run by a Python hook (then it is placed at the
        instruction about to run, and emitted with the run's records)."""
        cpu = task.cpu if task is not None else fields.get('cpu')
        m = self.k.machine
        fields = {key: _plain(v) for key, v in fields.items() if v is not None}
        for key in SYM_KEYS:
            if isinstance(fields.get(key), int):
                fields[key + '_at'] = self.code.describe(task, fields[key])
        if name == 'page_fault' and task is not None:
            fields['in_atomic'] = self.k.sched.preempt_count(task)
        if fields.get('vector') in VECTOR_NAMES:
            fields['vector_name'] = VECTOR_NAMES[fields['vector']]
        run = self._running
        if run is not None:
            got = self.mt.mark(run.index, run.get_reg('eip'))
            if got is not None:
                idx, seq, icount = got
                e = Event(seq, icount + self._extra[run.index], run.index, task, name, fields)
                self._marked.setdefault(idx, []).append(e)
                return
        t = m.time(cpu) if cpu is not None else m.now()
        self._emit(Event(self._total(), t, cpu, task, name, fields))

    def wanted(self, cpu, task, seq, t):
        """Would an entry of this CPU and task, at this place, pass the filters?"""
        f = self.f
        return f.cpu_ok(cpu) and (task is None or f.task_ok(task)) and f.in_window(seq, t)

    def _emit(self, e):
        f = self.f
        if not (f.event_ok(e.name) and f.cpu_ok(e.cpu)
                and (e.task is None or f.task_ok(e.task) or f.mentions(e.fields))
                and f.in_window(e.seq, e.time)):
            return
        self.counts['events'] += 1
        self.sink.event(e)


# ---- events synthesized from kernel labels -------------------------------------------

class KernelPoints:
    """One-address hooks on kernel labels whose execution is an event
    Python cannot see (kmap slots, TLB flushes, IPI acknowledgements), and
    a slot-reuse check over them.  Each handler gets the registers before
    the instruction at the label."""

    def __init__(self, tracer):
        self.t = tracer
        k = tracer.k
        self.k = k
        sym = k.image.symbols
        self.handlers = {}
        for name, fn in (('kmap_atomic', self._kmap_atomic), ('kunmap_atomic', self._kunmap_atomic),
                         ('mnv_found', self._pkmap_map), ('pkmap_wrap', self._pkmap_wrap),
                         ('kmap_sleep', self._pkmap_sleep), ('kunmap_high', self._kunmap_high),
                         ('kmap_local_page', self._kmap_local), ('kunmap_local', self._kunmap_local),
                         ('flush_tlb_all', self._flush_tlb_all),
                         ('flush_tlb_others', self._flush_tlb_others)):
            if name in sym:
                self.handlers[sym[name]] = fn
        for addr in k.image.specials.get('invlpg', ()):
            self.handlers[addr] = self._invlpg
        for addr in k.image.specials.get('mov_cr3', ()):
            self.handlers[addr] = self._cr3
        for routine, target, name, vector in (
                ('smp_invalidate_interrupt', 'flush_cpumask', 'ipi_ack', INVALIDATE_TLB_VECTOR),
                ('smp_call_function_interrupt', 'call_data_started', 'ipi_ack', CALL_FUNCTION_VECTOR),
                ('smp_call_function_interrupt', 'call_data_finished', 'ipi_done', CALL_FUNCTION_VECTOR)):
            addr = self._find_ack(routine, target)
            if addr is not None:
                self.handlers[addr] = lambda c, task, r, eip, n=name, v=vector: (
                    n, {'vector': v, 'vector_name': VECTOR_NAMES[v]})
        self.always = {sym[n] for n in ('kmap_atomic', 'kunmap_atomic') if n in sym}
        self.where = {}            # label address -> its description
        self.holders = {}          # (cpu, slot idx) -> [(task, pfn)]: kmap_atomic not yet undone
        self.held_by = {}          # task -> {page: (vaddr, pfn)}, from holders
        self.reported = set()
        self.highmem_start = k.machine.read32(sym['highmem_start_page'] - layout.PAGE_OFFSET) \
            if 'highmem_start_page' in sym else 0

    def addresses(self):
        return list(self.handlers)

    def _find_ack(self, routine, target):
        """The instruction of `routine` that writes `target` with a lock
        prefix: the acknowledgement of an IPI."""
        sym = self.k.image.symbols
        if routine not in sym or target not in sym:
            return None
        code = self.t.code
        lo, hi = code.symbol_range(code.kernel, sym[routine])
        img = code.kernel
        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
        md.detail = True
        for insn in md.disasm(img.code[lo - img.base:hi - img.base], lo):
            if cx.X86_PREFIX_LOCK in insn.prefix and any(
                    op.type == cx.X86_OP_MEM and op.mem.disp & 0xFFFFFFFF == sym[target]
                    for op in insn.operands):
                return insn.address
        return None

    def hit(self, cpu, task, seq, t, eip, regs):
        """A watched label was reached.  Outside the filters only the slot
        bookkeeping runs (a reuse by a filtered-out task may name a traced one)."""
        fn = self.handlers.get(eip)
        if fn is None or (eip not in self.always and not self.t.wanted(cpu, task, seq, t)):
            return
        got = fn(cpu, task, dict(zip(REGS, regs)), eip)
        if not got:
            return
        where = self.where.get(eip)
        if where is None:
            where = self.where[eip] = self.t.code.describe(task, eip)
        for name, fields in (got if isinstance(got, list) else [got]):
            fields['routine'] = where
            self.t._emit(Event(seq, t, cpu, task, name, fields))

    # ---- the handlers: (name, fields), a list of them, or None ----------------

    def _pfn(self, page):
        try:
            return self.k.page_alloc.page_to_pfn(page)
        except Exception:           # not a struct page: shown as the raw pointer
            return None

    def _slot(self, cpu, typ):
        idx = cpu * layout.KM_TYPE_NR + typ
        name = layout.KM_TYPES[typ] if 0 <= typ < len(layout.KM_TYPES) else str(typ)
        return idx, name, layout.fix_to_virt(layout.FIX_KMAP_BEGIN + idx)

    def _kmap_atomic(self, cpu, task, r, eip):
        """kmap_atomic(page, type): map a per-CPU fixmap slot.  A slot still
        held by another task (it has not called kunmap_atomic: it slept
        inside its atomic section) is reused: reported."""
        page, typ = r['eax'], r['edx']
        pfn = self._pfn(page)
        if page < self.highmem_start:
            return 'kmap_atomic', {'pfn': pfn, 'lowmem': True}
        idx, slot, vaddr = self._slot(cpu, typ)
        out = [('kmap_atomic', {'slot': slot, 'vaddr': vaddr, 'pfn': pfn})]
        held = [h for h in self.holders.get((cpu, idx), []) if h[0] is not task and h[0].alive]
        for other, opfn in held:
            if ('reuse', other, idx, opfn) in self.reported:
                continue                    # once per holding: the first reuse tells it
            self.reported.add(('reuse', other, idx, opfn))
            note = (f'{_label(other)} still holds this slot (no kunmap_atomic yet): its accesses '
                    f'through {vaddr:#010x} now reach pfn {pfn:#x}, not {opfn:#x}') \
                if pfn is not None and opfn is not None else ''
            out.append(('kmap_slot_reused', {'slot': slot, 'vaddr': vaddr, 'pfn': pfn,
                                             'holder': _label(other), 'holder_pfn': opfn, 'note': note}))
        self.holders[(cpu, idx)] = held + [(task, pfn)]
        self._index_holders()
        return out

    def _kunmap_atomic(self, cpu, task, r, eip):
        vaddr, typ = r['eax'], r['edx']
        idx, slot, _ = self._slot(cpu, typ)
        if vaddr < layout.FIXMAP_PT_BASE:
            return 'kunmap_atomic', {'vaddr': vaddr, 'lowmem': True}
        self.holders[(cpu, idx)] = [h for h in self.holders.get((cpu, idx), []) if h[0] is not task]
        self._index_holders()
        return 'kunmap_atomic', {'slot': slot, 'vaddr': vaddr}

    def _pkmap_map(self, cpu, task, r, eip):
        nr = r['eax']
        return 'pkmap_map', {'nr': nr, 'vaddr': self.k.pkmap_base + nr * layout.PAGE_SIZE,
                             'pfn': self._pfn(r['edi'])}

    def _pkmap_wrap(self, cpu, task, r, eip):
        return 'pkmap_wrap', {'note': 'last_pkmap_nr wrapped: flush_all_zero_pkmaps + flush_tlb_all'}

    def _pkmap_sleep(self, cpu, task, r, eip):
        return 'pkmap_sleep', {'note': 'no free pkmap slot: sleeping on pkmap_map_wait'}

    def _kunmap_high(self, cpu, task, r, eip):
        return 'kunmap_high', {'pfn': self._pfn(r['eax'])}

    def _kmap_local(self, cpu, task, r, eip):
        return 'kmap_local', {'pfn': self._pfn(r['eax'])}

    def _kunmap_local(self, cpu, task, r, eip):
        return 'kunmap_local', {'vaddr': r['eax']}

    def _flush_tlb_all(self, cpu, task, r, eip):
        return 'tlb_flush', {'kind': 'global', 'how': 'flush_tlb_all: IPI to every other CPU + local'}

    def _flush_tlb_others(self, cpu, task, r, eip):
        va = r['ecx']
        return 'tlb_flush', {'kind': 'remote', 'mask': r['eax'],
                             'va': 'all' if va == 0xFFFFFFFF else va}

    def _invlpg(self, cpu, task, r, eip):
        info = self.t.code.info(task, eip, 0, 0, None)
        va = None
        if info.memops:
            base, index, scale, disp, _ = info.memops[0]
            va = (disp + (r[REGS[base]] if base is not None else 0)
                  + (r[REGS[index]] * scale if index is not None else 0)) & 0xFFFFFFFF
        return 'tlb_flush', {'kind': 'local', 'how': 'invlpg', 'va': va}

    def _cr3(self, cpu, task, r, eip):
        return 'tlb_flush', {'kind': 'local', 'how': 'mov cr3 (whole TLB)'}

    # ---- the slot-reuse check on traced accesses ---------------------------------

    def _index_holders(self):
        """held_by: task -> {slot page: (vaddr, pfn it mapped there)}."""
        self.held_by.clear()
        for (cpu, idx), held in self.holders.items():
            vaddr = layout.fix_to_virt(layout.FIX_KMAP_BEGIN + idx)
            for task, pfn in held:
                if pfn is not None:
                    self.held_by.setdefault(task, {})[vaddr >> 12] = (vaddr, pfn)

    def check_access(self, x):
        """An access by a holder of a kmap_atomic slot, through the slot's
        address, that reaches another page than the one it mapped: the
        wrong bytes (reported once per holder, slot, page and direction)."""
        pages = self.held_by.get(x.task)
        if not pages:
            return
        for op, va, pa, size, value in x.mem:
            got = pages.get(va >> 12) if va is not None else None
            if got is not None and pa >> 12 != got[1]:
                self._wrong_page(x, op, got[0], got[1], pa)

    def _wrong_page(self, x, op, vaddr, pfn, pa):
        key = (x.task, vaddr, pa >> 12, op)
        if key in self.reported:
            return
        self.reported.add(key)
        what = 'writes' if op == 'w' else 'reads'
        self.t._emit(Event(x.seq, x.time, x.cpu, x.task, 'kmap_wrong_page', {
            'vaddr': vaddr, 'mapped_pfn': pfn, 'reached_pfn': pa >> 12, 'op': op,
            'note': f'{_label(x.task)} {what} through the slot it mapped to pfn {pfn:#x}, but it now '
                    f'maps pfn {pa >> 12:#x} (another task reused the slot): wrong bytes '
                    f'(reported once; see the memory accesses)'}))


# ---- the sink interface -------------------------------------------------------------------
#
# A sink gets begin(meta), then span(cpu, task, t0, t1) for each run of a
# task on a CPU, insn(Insn), event(Event) and counter_sample(time, free,
# pkmap) in sequence order, then end(summary).

class Sink:
    def begin(self, meta):
        pass

    def span(self, cpu, task, t0, t1):
        pass

    def insn(self, x):
        pass

    def event(self, e):
        pass

    def counter_sample(self, t, free, pkmap):
        """A memory sample (minikernel/vmstat.py) at simulated time t:
        free pages per zone {'dma', 'normal', 'high'}, pkmap slots in use."""
        pass

    def end(self, summary):
        pass


def _open(path):
    try:
        return open(path, 'w')
    except OSError as e:
        raise ValueError(f'cannot write {path}: {e.strerror}') from None
