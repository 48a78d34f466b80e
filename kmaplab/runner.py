"""Run one variant of a scenario: boot, spawn the tasks, run, judge.

The outcome comes only from what the machine did: the reports the kernel
and its checkers filed during the run (BUG, Oops, OOM kill, deadlock,
corruption found by the data oracle ...) and how the run ended (finished,
stalled, or out of simulated time).  Nothing here knows what a scenario is
"supposed" to show; the expectation is read from the scenario file and
compared afterwards.

Result (one per variant): scenario, seed, variant, outcome, findings (every
outcome kind seen), expected, ok, why (the failed parts of the
expectation), counters (flat name -> number), reports, console, wall_s,
cpu_s (host CPU seconds of this process for the variant: the machine is
shared, so this, not wall_s, is the run's cost).
"""
import os
import time

from minikernel import binfmt
from minikernel.binfmt import assemble_program
from minikernel.costs import NUMAQ_LINE_TRANSFER
from vm import asm as vm_asm
from vm.asm import AsmError
from minikernel.faults import apply_plan, load_plan

from . import expr
from . import programs as real
from . import scenario as scenario_mod
from minikernel.kernel import ASM_DIR, ROOT, Kernel

# Outcome kinds by precedence: the first one present is "the" outcome.
PRECEDENCE = ('corruption', 'deadlock', 'no_progress', 'oom', 'crash', 'bug', 'killed', 'failed',
              'timeout')
REPORT_KIND = {'bug': 'bug', 'oops': 'bug', 'deadlock': 'deadlock', 'oom': 'oom',
               'corruption': 'corruption', 'crash': 'crash', 'no_progress': 'no_progress',
               'kill': 'killed', 'wrong_answer': 'failed'}
DEFAULT_MAX_CYCLES = 2_000_000_000
DEFAULT_TIMEOUT = 600.0         # host seconds per variant; --timeout / KMAPLAB_TIMEOUT change it
GRACE = 2.0                     # seconds the machine loop gets to stop before the run is unwound


class HostTimeout(BaseException):
    """The wall-clock guard unwinding a run stuck outside the machine loop
    (a BaseException: no `except Exception` in the kernel may swallow it)."""


def host_timeout():
    """The per-variant wall-clock budget in seconds (0: none): --timeout,
    else the KMAPLAB_TIMEOUT environment variable, else DEFAULT_TIMEOUT."""
    v = os.environ.get('KMAPLAB_TIMEOUT')
    try:
        return float(v) if v not in (None, '') else DEFAULT_TIMEOUT
    except ValueError:
        raise ValueError(f'KMAPLAB_TIMEOUT={v!r}: not a number of seconds') from None


class WallGuard:
    """A host-side budget for one run: after `seconds` of wall-clock time
    the machine is asked to stop (machine.stopped, checked by its loop
    between quanta); if the run has not come back GRACE seconds later (a
    loop in Python kernel code), HostTimeout unwinds it.  Uses SIGALRM, so
    it guards runs on the main thread only (the CLI, pool workers); it does
    nothing elsewhere.  What fired is in self.what (the task, CPU and
    guest EIP as of that moment: wall-clock, so not deterministic)."""

    def __init__(self, k, seconds):
        self.k, self.seconds, self.fired, self.what = k, seconds, 0, None

    def __enter__(self):
        import signal
        import threading
        self.active = bool(self.seconds) and threading.current_thread() is threading.main_thread()
        if self.active:
            self.old = signal.signal(signal.SIGALRM, self._alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds, GRACE)
        return self

    def __exit__(self, *exc):
        if self.active:
            import signal
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old)
        return False

    def _alarm(self, signum, frame):
        self.fired += 1
        if self.fired == 1:
            self.what = running_now(self.k)
            self.k.machine.stopped = 'host timeout'
        else:
            import signal
            signal.setitimer(signal.ITIMER_REAL, 0)
            raise HostTimeout()


def running_now(k):
    """What the machine was doing: 'task/pid on CPUn at SYMBOL' per busy CPU."""
    out = []
    m = k.machine
    cpus = [m.running] if getattr(m, 'running', None) is not None else range(len(m.cpus))
    for i in cpus:
        t = k.sched.current[i]
        if t is None or getattr(t, 'idle', False):
            continue
        eip = m.cpus[i].regs.get('eip')
        where = k.describe(eip) if eip else '?'
        if eip and eip < k.PAGE_OFFSET and t.program is not None:
            sym = t.program.image.symbol_at(eip)
            where = f'{sym[0]}+{sym[1]:#x} (user)' if sym else f'user {eip:#010x}'
        out.append(f'{t.name}/{t.pid} on CPU{i} at {where}')
    return '; '.join(out) or 'all CPUs idle'

_programs = {}
binfmt.BITMAP_CACHE_DIR = os.path.join(ROOT, 'build', 'cache')   # ELF instruction bitmaps
vm_asm.DISK_CACHE_DIR = os.path.join(ROOT, 'build', 'cache')     # assembled images (kernel, programs)


def program_image(name, scn_path=None):
    """The assembled image of a [[task]] program (asm/user/<name>.S, or a
    file NAME.S beside the scenario file scn_path), cached per source file.
    AsmError (file:line) if it does not assemble or has no entry point."""
    if not name.endswith('.S'):
        if name not in _programs:
            _programs[name] = _entry_checked(assemble_program(name, ROOT, ASM_DIR),
                                             f'asm/user/{name}.S')
        return _programs[name]
    from vm.asm import assemble_files
    from minikernel.binfmt import USER_TEXT
    path = scenario_mod.program_path(scn_path, name)
    key = (path, os.path.getmtime(path))
    if key not in _programs:
        _programs[key] = _entry_checked(
            assemble_files([path, os.path.join(ASM_DIR, 'user', 'lib.S')], USER_TEXT), path)
    return _programs[key]


def _entry_checked(image, source):
    if '_start' not in image.symbols:
        raise AsmError(source, 1, 'no _start label (the entry point)')
    return image


def boot(scn, variant, seed=None, overrides=None, plan=None, spares=None):
    """Boot the kernel for one variant, create its files, spawn its tasks
    and install its fault plan (the scenario's, or `plan`): not run yet.
    spares (vm/spares.py): build the machine on the hardware of an earlier
    boot of the same variant, options and plan (k.machine.release() gives
    it back)."""
    opts = scn.options(variant, overrides, seed)
    opts.setdefault('max_cycles', DEFAULT_MAX_CYCLES)
    plan_arg = plan
    plan = plan if plan is not None else scn.plan
    if plan is not None:
        plan = load_plan(plan, base_dir=os.path.dirname(os.path.abspath(scn.path)))
        for key, value in plan.boot.items():
            opts.setdefault(key, value)
    programs = {p: program_image(p, scn.path) for p in scn.programs()}
    key = None
    if spares is not None:            # the same key: the same boot, the same hooks
        key = repr((os.path.abspath(scn.path), sorted(variant.items()), sorted(opts.items()),
                    plan_arg))
    k = Kernel(opts, programs, spares=spares, spares_key=key)
    k.scenario_params = scn.params(variant, overrides)
    create_files(k, scn)
    spawn_tasks(k, scn)
    if scn.expect.get('output') or scn.expect.get('file'):
        k.host_answers = real.answers(scn, scn.file_bytes)
    if plan is not None:
        apply_plan(k, plan, k.config['seed'])
    return k


def create_files(k, scn):
    for spec in scn.files:
        data = scn.file_bytes(spec['name'])
        max_size = scenario_mod.parse_size(spec.get('max_size', max(len(data), 4 << 20)),
                                           f'{scn.path}: file {spec["name"]}')
        inode = k.vfs.create_file(spec['name'], data, max_size=max_size)
        if 'mode' in spec:
            inode.mode = (inode.mode & ~0o7777) | spec['mode']


def spawn_tasks(k, scn):
    by_name = {}
    ncpu = k.config['cpus']
    params = getattr(k, 'scenario_params', None) or scn.params({})
    k.scenario_tasks = {}                  # task name -> its instances (kmaplab/programs.py)
    for index, spec in enumerate(scn.tasks):
        count = spec.get('count', 1)
        if isinstance(count, str):
            count = params[count[1:-1]]
        cpu = spec.get('cpu', 0)
        cpus = range(ncpu) if cpu == 'each' else [index % ncpu if cpu == 'rr' else cpu]
        base = real.task_name(spec)
        for cpu in cpus:
            if cpu >= ncpu:
                raise ValueError(f'{scn.path}: task {base}: cpu {cpu} but the machine has {ncpu}')
            for n in range(count):
                name = base
                if len(cpus) > 1:
                    name += str(cpu)
                if count > 1:
                    name += f'.{n}'
                parent = by_name.get(spec.get('thread_of'))
                args = [a.format(cpu=cpu, n=n, **params) if isinstance(a, str) else a
                        for a in spec.get('args', [])]
                after = by_name.get(spec.get('after'))
                if 'exec' in spec:
                    argv = [a.format(cpu=cpu, n=n, **params) for a in spec.get('argv', [])] \
                        or [os.path.basename(spec['exec'])]
                    env = [a.format(cpu=cpu, n=n, **params) for a in spec.get('env', [])]
                    t = k.spawn_exec(name, spec['exec'], argv, env, cpu=cpu,
                                     start=spec.get('start', 0), after=after)
                else:
                    t = k.spawn(name, spec['program'], args, cpu=cpu, start=spec.get('start', 0),
                                share_mm_with=parent, after=after)
                by_name.setdefault(base, t)
                k.scenario_tasks.setdefault(base, []).append(t)


def judge(k, end):
    """(outcome, findings) from the reports and how the run ended."""
    findings = set()
    for r in k.reports:
        kind = REPORT_KIND.get(r['kind'])
        if kind == 'killed' and r.get('signal') == 'SIGKILL' and r.get('oom'):
            kind = 'oom'
        if kind:
            findings.add(kind)
    if end in ('time limit', 'host timeout'):
        findings.add('timeout')
    for t in k.workload:
        if t.killed_by is None and t.exit_code not in (0, None) and not t.forked:
            findings.add('failed')
            k.report('failed', f'{t.name}/{t.pid} ({t.program.name if t.program else "kthread"}) '
                               f'exited with code {t.exit_code}', task=t)
    for kind in PRECEDENCE:
        if kind in findings:
            return kind, findings
    return 'completed', findings


def collect_counters(k):
    """The flat counter map: machine, CPUs (summed), every subsystem."""
    m = k.machine
    c = {}
    c['instructions'] = sum(cpu.instructions for cpu in m.cpus)
    c['cycles'] = max(m.time(i) for i in range(len(m.cpus)))
    for key in m.cpus[0].counters:
        c[key] = sum(cpu.counters[key] for cpu in m.cpus)
    c['invlpg'] = sum(int(v.value) for cpu in m.cpus for a, v in cpu.point_counters.items()
                      if cpu.point_kind[a] == 'invlpg')
    c['cr3_loads'] = sum(int(v.value) for cpu in m.cpus for a, v in cpu.point_counters.items()
                         if cpu.point_kind[a] == 'mov_cr3')
    for name in k.image.ranges:
        c[f'spin_{name}'] = sum(cpu.range_count(name) for cpu in m.cpus)
    for sub in k.subsystems():
        counts = sub.counters                 # a dict, a property (computed: read once) or a method
        for key, v in (counts if isinstance(counts, dict) else counts()).items():
            c[key] = c.get(key, 0) + int(v)
    for key, v in k.disk.counters.items():
        c['disk_' + key] = v
    if m.lines is not None:                   # cache-line transfers (vm/lines.py)
        c.update(m.lines.counters())
        for i in range(len(m.cpus)):
            c[f'line_transfers_cpu{i}'] = m.lines.transfers(cpu=i)
    if m.cpus[0].tlb is not None:             # tlb=p3: the model's counts (vm/tlb.py)
        for i, cpu in enumerate(m.cpus):
            tc = cpu.tlb.counters()
            for key, v in tc.items():
                c[key] = c.get(key, 0) + int(v)
            c[f'tlb_misses_cpu{i}'] = cpu.tlb.misses()
            c[f'tlb_global_refills_cpu{i}'] = int(tc['tlb_global_refills'])
            c[f'tlb_pge_flushes_cpu{i}'] = int(tc['tlb_pge_flushes'])
        c['tlb_misses'] = sum(cpu.tlb.misses() for cpu in m.cpus)
        flushes = c.get('global_flushes', 0)      # flush_tlb_all calls (minikernel/highmem.py)
        for i, cpu in enumerate(m.cpus):           # the refills each one cost on every CPU
            c[f'tlb_refills_per_global_flush_cpu{i}'] = (
                round(c[f'tlb_global_refills_cpu{i}'] / flushes, 1) if flushes else 0)
    written = c.get('file_write_bytes', 0)
    c['insns_per_byte'] = round(c['instructions'] / written, 3) if written else 0
    c['cycles_per_byte'] = round(c['cycles'] / written, 3) if written else 0
    io = written + c.get('file_read_bytes', 0)          # dbench's MB/s: read + written, per
    c['io_mb_per_s'] = round(io * 1000 / c['cycles'], 3) if c['cycles'] else 0   # simulated second
    c.update(model_cycles(c, k))
    c['console_lines'] = sum(bytes(t.console).count(b'\n') for t in k.sched.tasks.values())
    c['tasks_exited'] = len(k.exit.exited)
    c['reports'] = len(k.reports)
    return c


# The model's events: (counter, unit cost).  Counts are measured by the
# machine; model.* are counts x unit costs (minikernel/costs.py MODEL_COSTS).
MODEL_EVENTS = (('instructions', 'insn'), ('tlb_misses', 'tlb_walk'),
                ('line_transfers', 'line_transfer'), ('ipis_received', 'ipi_delivery'))
SENSITIVE = ('tlb_walk', 'line_transfer', 'ipi_delivery')


def _model_total(c, costs, charged, disk):
    return sum(c.get(n, 0) * costs[u] for n, u in MODEL_EVENTS) + charged + disk


def model_cycles(c, k):
    """model_cycles = instructions x insn + TLB misses x tlb_walk + line
    transfers x line_transfer + IPIs delivered x ipi_delivery + the charged
    kernel steps (costs.py) + disk time (requests x disk_latency): modelled
    cycles of work, summed over CPUs (idle time is not work).  With the
    headline model_cycles_per_byte for writes and its sensitivity: the same
    with each unit cost halved (_half_UNIT) and doubled (_double_UNIT), and
    with a NUMA-Q remote line (_numaq).  Counts missing (tlb=qemu has no
    TLB misses) count 0."""
    m = k.machine
    costs = k.config['model_costs']
    charged = sum(m.charged)
    disk = (k.disk.counters.get('reads', 0) + k.disk.counters.get('writes', 0)) * k.disk.latency
    out = {'model_charged_cycles': charged, 'model_disk_cycles': disk}
    total = _model_total(c, costs, charged, disk)
    out['model_cycles'] = total
    written = c.get('file_write_bytes', 0)
    if written:
        out['model_cycles_per_byte'] = round(total / written, 4)
        for unit in SENSITIVE:
            for tag, f in (('half', 0.5), ('double', 2)):
                alt = dict(costs, **{unit: costs[unit] * f})
                out[f'model_cycles_per_byte_{tag}_{unit}'] = round(
                    _model_total(c, alt, charged, disk) / written, 4)
        numaq = dict(costs, line_transfer=NUMAQ_LINE_TRANSFER)
        out['model_cycles_per_byte_numaq'] = round(_model_total(c, numaq, charged, disk) / written, 4)
    return out


def sensitivity_lines(c):
    """One line per unit cost: the modelled cycles per byte with it halved
    and doubled (for the human output and report.md)."""
    if 'model_cycles_per_byte' not in c:
        return []
    lines = [f"model_cycles_per_byte={c['model_cycles_per_byte']} (modelled: counts x unit costs, "
             f"docs/costs.md)"]
    for unit in SENSITIVE:
        lo, hi = c[f'model_cycles_per_byte_half_{unit}'], c[f'model_cycles_per_byte_double_{unit}']
        lines.append(f'  sensitivity {unit} x0.5 .. x2: {lo} .. {hi}')
    lines.append(f"  with a NUMA-Q remote line: {c['model_cycles_per_byte_numaq']}")
    return lines


def check_expectation(scn, variant, outcome, findings, counters, config=None, params=None):
    """(ok, why): compare with the scenario's [expect] for this variant
    (checks see the boot options, the [params], the counters, the variant)."""
    exp_outcome, also, checks, nots = scn.expectation(variant)
    why = []
    if outcome != exp_outcome:
        why.append(f'outcome {outcome}, expected {exp_outcome}')
    for a in also:
        if a not in findings:
            why.append(f'expected also {a}')
    for n in nots:
        if n in findings:
            why.append(f'unexpected {n}')
    env = {k: v for k, v in (config or {}).items() if v is not None}
    env.update(params if params is not None else scn.params(variant))
    env.update(counters)
    env.update(variant)
    for text in checks:
        try:
            if not expr.evaluate(expr.compile_check(text), env, text):
                why.append(f'check failed: {text}')
        except expr.ExprError as e:
            why.append(f'check {e}')
    return not why, why


def run_kernel(k, timeout=None):
    """Run a booted kernel to its end, write back, judge.  Returns (end,
    counters, outcome, findings): the counters of the run itself (before
    the final writeback) and the data oracle's verdicts (they come at
    finish).  After `timeout` host seconds (default host_timeout()) the
    run ends with outcome timeout and a report of what was running."""
    timeout = host_timeout() if timeout is None else timeout
    guard = WallGuard(k, timeout)
    unwound = False
    with guard:
        try:
            end = k.run()
        except HostTimeout:
            end, unwound = 'host timeout', True
    if guard.fired:
        end = 'host timeout'
        k.report('timeout', f'host timeout: {timeout:g} s of wall-clock time '
                            f'({"unwound: stuck outside the machine loop; " if unwound else ""}'
                            f'running: {guard.what}) [wall-clock guard: not deterministic]')
    counters = collect_counters(k)
    if end != 'host timeout':
        k.finish()
    if k.oracle is not None:
        counters.update({key: int(v) for key, v in k.oracle.counters.items()})
    answers = getattr(k, 'host_answers', None)
    if answers is not None and k.finished():
        tasks = k.scenario_tasks
        n = real.check(k, *answers, tasks, 'run') + real.check(k, [], answers[1], tasks, 'disk')
        counters['host_checks'] = n
    outcome, findings = judge(k, end)
    return end, counters, outcome, findings


def run_variant(scn, variant, seed=None, overrides=None, tracer=None, setup=None, spares=None):
    """Boot, run and judge one variant.  setup(k), if given, runs between
    boot and run (kmaplab/explore.py puts a schedule's policy there).
    spares: see boot (the caller releases k.machine when done with it)."""
    t0, c0 = time.perf_counter(), time.process_time()
    k = boot(scn, variant, seed, overrides, spares=spares)
    if setup is not None:
        setup(k)
    if tracer is not None:
        tracer.attach(k)
    end, counters, outcome, findings = run_kernel(k)
    ok, why = check_expectation(scn, variant, outcome, findings, counters, k.config,
                                getattr(k, 'scenario_params', None))
    exp = scn.expectation(variant)
    return dict(scenario=scn.name, seed=k.config['seed'], variant=variant, outcome=outcome,
                findings=sorted(findings), expected=exp[0], ok=ok, why=why, counters=counters,
                reports=k.reports, console=_console(k), output=real.outputs_of(k),
                boot_log=k.boot_log, series=k.vmstat.series(),
                wall_s=round(time.perf_counter() - t0, 3), cpu_s=round(time.process_time() - c0, 3),
                kernel=k)


def discard(k):
    """Done with kernel k (kmaplab/explore.py, before its machine's
    release): close every task's suspended kernel generators now.  Their
    finally blocks (up_write, finish_wait, a pin dropped ...) write to k's
    machine; at garbage collection, later, that machine's RAM and CPUs may
    already be another run's (vm/spares.py).  What they do now, the
    release wipes.  Errors in them are ignored: the run's result was taken."""
    idle = [t for t in k.sched.idle if t is not None]
    for t in list(k.sched.tasks.values()) + idle:
        for f in reversed(t.frames):
            try:
                f.gen.close()
            except BaseException:        # noqa: BLE001 - see above
                pass


def memory_hash(r):
    """{'memory_sha256': sha256 of the guest RAM as the run left it}: the
    same seed and options must give the same hash (a determinism check from
    the command line); {} for a result without its kernel."""
    k = r.get('kernel')
    return {'memory_sha256': k.machine.memory_digest()} if k is not None else {}


def _console(k):
    out = []
    for t in sorted(k.sched.tasks.values(), key=lambda t: t.pid):
        text = bytes(t.console[:real.OUTPUT_LIMIT]).decode('latin-1')
        for line in text.splitlines():
            out.append((t.name, t.cpu, line))
    return out
