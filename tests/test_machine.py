"""vm.Machine and vm.CPU on their own: trap decoding, the rebuilt #PF error
code, devices, the event queue, policies, lazily backed RAM, counters.

Guest code is vm/selftest.py's Rig (bare page tables, no kernel)."""

import pytest

from vm import x86
from vm.machine import Machine
from vm.policy import RoundRobin, SeededRandom, make_policy
from vm.selftest import DATA, FAR, SELFTEST_S, Driver, Rig

FLAGS_RW = x86.PTE_P | x86.PTE_W


class ClockDriver:
    """Machine.run driver that runs no guest code: a step just charges the
    budget, so only time, events and devices are exercised."""

    def __init__(self, m, until):
        self.m, self.until, self.steps = m, until, []

    def step(self, cpu, budget):
        self.steps.append((cpu.index, budget))
        self.m.charge(cpu.index, budget)

    def finished(self):
        return self.until()

    def stalled(self):
        return 'stalled'


# ---- traps -----------------------------------------------------------------------

def test_int80_from_ring3_is_an_int_trap_past_the_instruction():
    rig = Rig()
    t = rig.to_user(0, 'user_read', ebx=rig.sym('user_read'))     # reads its own code: allowed
    assert (t.kind, t.vector, t.cpl, t.user) == ('int', 0x80, 3, True)
    assert t.eip == rig.sym('user_read') + 2 + 2                  # mov eax,[ebx] ; int 0x80
    assert rig.cpus[0].regs['cs'] == x86.USER_CS


def test_back_to_ring0_after_ring3_through_the_template():
    rig = Rig()
    assert rig.to_user(0, 'user_read', ebx=rig.sym('user_read')).cpl == 3
    rig.m.write32(DATA, 77)
    t = rig.call(0, 'read_x', edx=DATA)                           # cpu.enter from ring 3
    assert (t.kind, t.cpl) == ('hlt', 0)
    assert rig.cpus[0].regs['eax'] == 77


def test_hlt_in_ring0_stops_past_it_and_marks_the_cpu_halted():
    rig = Rig()
    t = rig.call(0, 'read_x', edx=DATA)
    assert t.kind == 'hlt' and t.eip == rig.sym('read_x') + 3      # mov eax,[edx] is 2 bytes + hlt
    assert rig.cpus[0].halted


def test_hlt_in_ring3_is_gp_at_the_instruction():
    rig = Rig()
    t = rig.to_user(0, 'user_hlt')
    assert (t.kind, t.vector, t.eip, t.cpl) == ('gp', x86.VEC_GP, rig.sym('user_hlt'), 3)
    assert rig.cpus[0].counters['faults_gp'] == 1


def test_ud2_is_ud_at_the_instruction():
    rig = Rig()
    t = rig.call(0, 'do_ud2')
    assert (t.kind, t.vector, t.eip) == ('ud', x86.VEC_UD, rig.sym('do_ud2'))
    assert rig.cpus[0].counters['faults_ud'] == 1


def test_quantum_stops_at_a_block_boundary_near_the_budget():
    rig = Rig()
    cpu = rig.cpus[0]
    rig.enter(0, 'count_loop', ecx=1000)
    t = cpu.run(100)
    assert t.kind == 'quantum'
    assert 100 <= cpu.instructions < 100 + 4                        # at most one loop block over
    assert t.eip == rig.sym('count_loop_body')


# ---- the rebuilt #PF error code -----------------------------------------------------

@pytest.mark.parametrize('faulting,want_w', [('dst', True), ('src', False)])
def test_rep_movsd_pf_error_code_w_bit(faulting, want_w):
    rig = Rig()
    src, dst = DATA, DATA + 0x10000
    bad = (dst if faulting == 'dst' else src) + 0x1000               # second page of that side
    rig.set_pte(bad, 0)
    t = rig.call(0, 'copy_dwords', esi=src, edi=dst, ecx=2048)
    assert t.kind == 'pf' and t.cr2 == bad
    assert t.eip == rig.sym('copy_dwords') + 3                      # at rep movsd
    assert t.error == (x86.PF_W if want_w else 0)
    assert rig.cpus[0].regs['ecx'] == 1024                           # the first page was copied


def test_user_write_to_readonly_user_page_error_code():
    rig = Rig()
    rig.set_pte(DATA, DATA | x86.PTE_P | x86.PTE_U)
    t = rig.to_user(0, 'user_write', ebx=DATA, ecx=1)
    assert t.kind == 'pf' and t.error == x86.PF_P | x86.PF_W | x86.PF_U


def test_user_read_not_present_error_code():
    rig = Rig()
    rig.set_pte(DATA, 0)
    t = rig.to_user(0, 'user_read', ebx=DATA)
    assert t.kind == 'pf' and t.error == x86.PF_U and t.cr2 == DATA


def test_pf_redirect_by_writing_eip_and_resume_after_fix():
    """Resolve a fault from Python (map the page) and re-run: the faulting
    instruction completes, as a kernel's fault handler would have it."""
    rig = Rig()
    rig.set_pte(DATA, 0)
    rig.m.write32(FAR, 0x5150)
    assert rig.call(0, 'read_x', edx=DATA).kind == 'pf'
    rig.set_pte(DATA, FAR | FLAGS_RW)
    assert rig.cpus[0].run(1000).kind == 'hlt'
    assert rig.cpus[0].regs['eax'] == 0x5150


# ---- disk ---------------------------------------------------------------------------

def _pattern(byte):
    return bytes([byte]) * 4096


def test_disk_fifo_latency_dma_zero_reads_and_vector():
    m = Machine(cpus=2, ram=1 << 20)
    disk = m.add_disk(nblocks=16, latency=1000, vector=0x40, irq_cpu=1)
    m.write(0x10000, _pattern(0xA5))
    m.write(0x30000, _pattern(0xFF))
    w = disk.submit('write', 3, 0x10000, 1, None, cpu=0)            # t=0    -> 1000
    m.charge(0, 500)
    r1 = disk.submit('read', 3, 0x20000, 1, None, cpu=0)            # t=500  -> 2000 (queued)
    r2 = disk.submit('read', 7, 0x30000, 1, None, cpu=1)            # t=0    -> 3000 (queued)
    m.write(0x10000, _pattern(0x5A))           # the write's DMA happens at completion
    seen = []

    def until():
        for req in disk.completed[len(seen):]:
            seen.append((req, m.now()))
        return len(seen) == 3
    assert m.run(ClockDriver(m, until), max_cycles=10_000) == 'finished'
    assert [(req, now) for req, now in seen] == [(w, 1000), (r1, 2000), (r2, 3000)]
    assert [req.completes for req in (w, r1, r2)] == [1000, 2000, 3000]
    assert disk.peek(3) == _pattern(0x5A)
    assert m.read(0x20000, 4096) == _pattern(0x5A)                 # DMA into RAM
    assert m.read(0x30000, 4096) == bytes(4096)                     # never written: zeros
    assert m.pending[1] == {0x40} and not m.pending[0]
    assert m.cpus[1].k.irq_pending == 1
    assert disk.reap() == [w, r1, r2] and disk.inflight == 0 and disk.reap() == []
    assert disk.counters['reads'] == 2 and disk.counters['writes'] == 1


def test_disk_rejects_bad_requests():
    m = Machine(cpus=1, ram=1 << 20)
    disk = m.add_disk(nblocks=4, latency=10, vector=0x40)
    with pytest.raises(ValueError):
        disk.submit('read', 3, 0, 2, None, cpu=0)
    with pytest.raises(ValueError):
        disk.submit('erase', 0, 0, 1, None, cpu=0)


def test_disk_completion_interrupts_the_guest():
    rig = Rig(cpus=1)
    m = rig.m
    disk = m.add_disk(nblocks=4, latency=5000, vector=0x41)
    disk.load(1, b'hello')
    disk.submit('read', 1, DATA, 1, None, cpu=0)
    rig.enter(0, 'idle_spin')
    got = []
    d = Driver(m, on_irq=lambda cpu, vec, t: (got.append((vec, m.time(0))), m.stop('irq')))
    assert m.run(d, max_cycles=100_000) == 'irq'
    assert got[0][0] == 0x41 and 5000 <= got[0][1] < 5000 + 4
    assert m.read(DATA, 6) == b'hello\0'


# ---- timers and the event queue ----------------------------------------------------------

def test_timers_tick_every_period_on_their_own_cpu():
    m = Machine(cpus=2, ram=1 << 20)
    timers = m.add_timers(period=1000, vector=0xEF)
    assert m.run(ClockDriver(m, lambda: m.now() >= 5000), max_cycles=10_000) == 'finished'
    assert [t.ticks for t in timers] == [5, 5]
    assert m.pending == [{0xEF}, {0xEF}]
    assert m.only_periodic_events()


def test_timer_interrupts_reach_the_guest_at_tick_times():
    rig = Rig(cpus=2, policy=RoundRobin(300))
    m = rig.m
    m.add_timers(period=2000, vector=0xEF)
    for i in range(2):
        rig.enter(i, 'idle_spin')
    seen = []

    def on_irq(cpu, vec, trap):
        seen.append((cpu.index, vec, m.time(cpu.index)))
        rig.enter(cpu.index, 'idle_spin')
    d = Driver(m, on_irq, until=lambda: len(seen) >= 6)
    assert m.run(d, max_cycles=100_000) == 'finished'
    for i in range(2):
        mine = [t for c, v, t in seen if c == i]
        assert all(v == 0xEF for c, v, t in seen)
        assert len(mine) == 3
        for k, t in enumerate(mine, 1):
            assert 2000 * k <= t < 2000 * k + 10


def test_events_fire_when_the_slowest_cpu_reaches_them():
    m = Machine(cpus=2, ram=1 << 20, policy=RoundRobin(700))
    fired = []
    m.charge(0, 5000)                               # CPU0 far ahead: must not fire it
    m.schedule(1000, lambda: fired.append(('a', m.time(0), m.time(1))))
    m.schedule(1000, lambda: fired.append(('b', m.time(0), m.time(1))))   # same time: FIFO
    m.schedule(400, lambda: fired.append(('c', m.time(0), m.time(1))))
    assert m.run(ClockDriver(m, lambda: len(fired) == 3), max_cycles=10_000) == 'finished'
    assert fired == [('c', 5000, 400), ('a', 5000, 1000), ('b', 5000, 1000)]


def test_budget_is_capped_at_the_next_event():
    m = Machine(cpus=1, ram=1 << 20, policy=RoundRobin(10_000))
    m.schedule(2500, lambda: None)
    d = ClockDriver(m, lambda: m.now() >= 2500)
    m.run(d, max_cycles=100_000)
    assert d.steps == [(0, 2500)]


def test_all_halted_skips_to_the_next_event():
    """CPUs halted with IF=1 cost nothing while waiting: time jumps to the
    IPI, which wakes the target."""
    rig = Rig(cpus=2)
    m = rig.m
    for i in range(2):
        rig.enter(i, 'halt_idle')
        assert rig.cpus[i].run(1000).kind == 'hlt'
    m.ipi_latency = 50_000
    m.send_ipi(0, [1], 0xFD)
    got = []
    d = Driver(m, on_irq=lambda cpu, vec, t: (got.append((cpu.index, vec)), m.stop('woken')))
    runs = [c.counters['runs'] for c in rig.cpus]
    assert m.run(d, max_cycles=1_000_000) == 'woken'
    assert got == [(1, 0xFD)]
    assert [c.counters['runs'] for c in rig.cpus] == [runs[0], runs[1] + 1]   # no spinning
    assert m.time(1) >= 50_000 and rig.cpus[1].instructions < 20
    assert rig.cpus[0].counters['ipis_sent'] == 1 and rig.cpus[1].counters['ipis_received'] == 1


def test_highest_pending_vector_first():
    m = Machine(cpus=1, ram=1 << 20)
    for v in (0x30, 0xEF, 0x41):
        m.raise_irq(0, v)
    assert [m.next_irq(0) for _ in range(4)] == [0xEF, 0x41, 0x30, None]
    assert m.cpus[0].k.irq_pending == 0
    assert m.cpus[0].counters['interrupts'] == 3


def test_irq_not_taken_with_if_clear():
    rig = Rig()
    rig.m.raise_irq(0, 0x30)
    t = rig.call(0, 'count_loop', ecx=100)          # IF=0: runs to the end
    assert t.kind == 'hlt'
    rig.enter(0, 'idle_spin')                          # sti: taken
    t = rig.cpus[0].run(1000)
    assert t.kind == 'irq' and t.eip == rig.sym('idle_loop')


# ---- policies --------------------------------------------------------------------------

def test_round_robin_picks_the_slowest_cpu_lowest_index_on_ties():
    m = Machine(cpus=3, ram=1 << 20)
    rr = RoundRobin(123)
    for i, c in enumerate((300, 100, 200)):
        m.charge(i, c)
    assert rr.pick(m) == (1, 123)
    m.charge(1, 100)
    assert rr.pick(m) == (1, 123)                     # 300, 200, 200: tie -> lowest index
    m.charge(1, 1)
    assert rr.pick(m) == (2, 123)


def _idle_python(m, cpu, budget, nxt, idle_to_max):
    """Clock.idle's definition: Machine._while_halted, then _idle_to."""
    m._idle_round = None
    picked = m._while_halted(cpu, budget, nxt)
    if picked[0] is None:
        limit = m._idle_round
        if (limit is not None and idle_to_max != -2 and not m.all_halted()
                and (idle_to_max == -1 or limit <= idle_to_max)):
            m._idle_to(limit)
        return None
    return picked


def test_idle_in_c_is_while_halted_then_idle_to():
    """The run loop's halted-CPU pick in C (Clock.idle) gives the pick and
    the clocks the Python definitions give, on random machine states."""
    import random
    rng = random.Random(16)
    machines = {n: [Machine(cpus=n, ram=1 << 20) for _ in range(2)] for n in (1, 2, 3, 5, 8)}
    for _ in range(1000):
        n = rng.choice(list(machines))
        ms = machines[n]
        clocks = [rng.choice((0, 500, 1000, rng.randrange(3000))) for _ in range(n)]
        halted = [rng.random() < 0.6 for _ in range(n)]
        pend = [rng.random() < 0.15 for _ in range(n)]
        cpu = rng.randrange(n)
        halted[cpu], pend[cpu] = True, False
        budget = rng.choice((1, 200, 1000))
        nxt = rng.choice((None, None, rng.randrange(4000)))
        cap = rng.choice((-2, -1, rng.randrange(4000)))
        for m in ms:
            for i in range(n):
                m.extra[i] = clocks[i]
                m.pending[i].clear()
                m.cpus[i].k.irq_pending = 0
                if pend[i]:
                    m.raise_irq(i, 0x30)
                m.halted[i] = halted[i]
        c_pick = ms[0]._idle(cpu, budget, -1 if nxt is None else nxt, cap)
        py_pick = _idle_python(ms[1], cpu, budget, nxt, cap)
        assert c_pick == py_pick and ms[0].times() == ms[1].times(), (clocks, halted, pend, cpu,
                                                                       budget, nxt, cap)


def _random_picks(seed, n=200, quantum=100):
    """(cpu, budget) picks, each checked to be among the CPUs less than a
    quantum ahead of the slowest; also how often it was the lowest such."""
    m = Machine(cpus=4, ram=1 << 20, seed=seed)
    p = SeededRandom(quantum)
    out, lowest = [], 0
    for _ in range(n):
        times = [m.time(i) for i in range(4)]
        eligible = [i for i, t in enumerate(times) if t < min(times) + quantum]
        cpu, budget = p.pick(m)
        assert cpu in eligible
        lowest += cpu == eligible[0]
        out.append((cpu, budget))
        m.charge(cpu, budget)
    return out, lowest / n


def test_seeded_random_is_reproducible_and_seed_dependent():
    (a, low), (b, _), (c, _) = _random_picks(5), _random_picks(5), _random_picks(6)
    assert a == b
    assert [cpu for cpu, _ in a] != [cpu for cpu, _ in c]
    assert [budget for _, budget in a] != [budget for _, budget in c]
    assert all(1 <= budget <= 100 for _, budget in a)
    assert low < 0.8                                  # really random among the eligible


def test_seeded_random_never_runs_a_cpu_a_quantum_ahead():
    m = Machine(cpus=3, ram=1 << 20, seed=1)
    p = SeededRandom(50)
    m.charge(2, 50)
    assert all(p.pick(m)[0] != 2 for _ in range(200))


def test_make_policy():
    assert isinstance(make_policy('rr', 10), RoundRobin)
    assert isinstance(make_policy('random', 10), SeededRandom)
    with pytest.raises(ValueError):
        make_policy('fifo', 10)
    with pytest.raises(ValueError):
        RoundRobin(0)


# ---- RAM --------------------------------------------------------------------------------

def _rss_kib():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise RuntimeError('no VmRSS')


def test_3gib_ram_is_lazily_backed():
    before = _rss_kib()
    m = Machine(cpus=2, ram=3 << 30)
    m.write32(m.ram_size - 4, 0xDEADBEEF)
    assert m.read32(m.ram_size - 4) == 0xDEADBEEF
    assert m.read32(2 << 30) == 0
    grew = _rss_kib() - before
    del m
    assert grew < 256 * 1024, f'RSS grew by {grew} KiB'


def test_ram_is_shared_between_cpus():
    rig = Rig(cpus=2)
    rig.call(0, 'write_x', edx=DATA, eax=0x600D)
    rig.call(1, 'read_x', edx=DATA)
    assert rig.cpus[1].regs['eax'] == 0x600D
    assert rig.m.read32(DATA) == 0x600D


def test_machine_rejects_bad_configs():
    with pytest.raises(ValueError):
        Machine(cpus=0)
    with pytest.raises(ValueError):
        Machine(cpus=33)
    with pytest.raises(ValueError):
        Machine(ram=(1 << 20) + 1)
    with pytest.raises(ValueError):
        Machine(ram=(3 << 30) + 4096)


# ---- counters ---------------------------------------------------------------------------

def _invlpg_in(rig, routine):
    lo = rig.sym(routine)
    return next(a for a in rig.image.specials['invlpg'] if a >= lo)


def test_count_at_counts_exactly_the_executions_of_invlpg():
    rig = Rig()
    cpu = rig.cpus[0]
    loop_ctr = cpu.count_at(_invlpg_in(rig, 'fault_loop'), 'invlpg')
    other_ctr = cpu.count_at(_invlpg_in(rig, 'flush_one'), 'invlpg')
    rig.set_pte(DATA, 0)
    rig.enter(0, 'fault_loop', edx=DATA, ebx=rig.pte_pa(DATA), ecx=37)
    faults = 0
    while (t := cpu.run(10_000)).kind == 'pf':
        faults += 1
        rig.set_pte(DATA, DATA | FLAGS_RW)
    assert t.kind == 'hlt' and faults == 37
    assert loop_ctr.value == 37
    assert other_ctr.value == 0
    assert cpu.point_kind[_invlpg_in(rig, 'fault_loop')] == 'invlpg'


def test_add_range_counts_a_spin_loop_exactly():
    rig = Rig()
    cpu = rig.cpus[0]
    body, end = rig.sym('count_loop_body'), rig.sym('count_loop_end')
    cpu.add_range('body', body, end)
    cpu.add_range('add_only', body, body + 3)        # `add eax, 1` is 3 bytes
    cpu.add_range('elsewhere', rig.sym('cli_spin'), rig.sym('after_sti'))
    # the loop is entered by falling through from `mov eax, 0`: its first
    # block starts before the range
    assert rig.call(0, 'count_loop', ecx=50).kind == 'hlt'
    assert cpu.range_count('body') == 150
    assert cpu.range_count('add_only') == 50
    assert cpu.range_count('elsewhere') == 0
    rig.enter(0, 'count_loop', ecx=50)                  # again, in tiny quanta
    while cpu.run(4).kind == 'quantum':
        pass
    assert cpu.range_count('body') == 300
    assert cpu.range_count('add_only') == 100


def test_add_range_is_settled_on_a_fault_inside_the_range():
    rig = Rig()
    cpu = rig.cpus[0]
    lo = rig.sym('fault_loop')
    cpu.add_range('loop', lo, lo + 2)                   # only `mov eax, [edx]`
    rig.set_pte(DATA, 0)
    rig.enter(0, 'fault_loop', edx=DATA, ebx=rig.pte_pa(DATA), ecx=5)
    faults = 0
    while (t := cpu.run(10_000)).kind == 'pf':
        faults += 1
        assert cpu.range_count('loop') == faults - 1   # the faulting read did not retire
        rig.set_pte(DATA, DATA | FLAGS_RW)
    assert faults == 5 and cpu.range_count('loop') == 5


def test_instruction_count_without_a_code_region_is_an_upper_bound():
    """Outside every code region a block counts its length in bytes (and
    unknown_blocks says how many such blocks ran): never fewer than the
    instructions really retired (x86 instructions are at least one byte),
    never more than the bytes of the blocks entered; so max_cycles bounds
    a runaway guest in code no image describes (vm/_native.c)."""
    from unicorn import UC_HOOK_BLOCK
    exact_rig = Rig()
    exact_rig.call(0, 'count_loop', ecx=10)
    exact = exact_rig.cpus[0].instructions
    rig = Rig()
    cpu = rig.cpus[0]
    cpu.clear_code_region(0)
    sizes = []
    cpu.uc.hook_add(UC_HOOK_BLOCK, lambda uc, addr, size, _: sizes.append(size))
    before = cpu.k.unknown_blocks
    rig.call(0, 'count_loop', ecx=10)
    assert cpu.k.unknown_blocks - before == len(sizes) > 10
    assert exact < cpu.instructions <= sum(sizes)
    assert cpu.instructions > cpu.k.unknown_blocks


def test_counts_are_deterministic_across_identical_runs():
    def run():
        rig = Rig(cpus=3, seed=9, policy=SeededRandom(30))
        for i in range(3):
            rig.enter(i, 'racy_inc', edx=DATA, ecx=100)
        rig.m.run(Driver(rig.m), max_cycles=10_000_000)
        return [c.instructions for c in rig.cpus], [rig.m.time(i) for i in range(3)], rig.ram_hash()
    assert run() == run()


def test_rig_source_assembles_with_every_routine():
    rig = Rig()
    for name in ('read_x', 'write_x', 'set_pte_flush', 'flush_one', 'idle_spin', 'cli_spin',
                 'count_loop', 'copy_dwords', 'fault_loop', 'racy_inc', 'to_user', 'ret_user'):
        assert name in rig.image.symbols
    assert 'ret_user' in SELFTEST_S


def _run_code_at(rig, pa):
    rig.cpus[0].enter(pa, rig.kstack(0))
    assert rig.cpus[0].run(1000).kind == 'hlt'
    return rig.cpus[0].regs['eax']


def test_invalidate_code_drops_exactly_the_stale_translations_of_one_frame():
    """A host write to a frame does not reach Unicorn's translations of it
    (the stale code runs); invalidate_code on that frame makes the new code
    run, and leaves another frame's translations alone."""
    rig = Rig()
    a, b = DATA, DATA + 0x1000
    code = lambda v: b'\xb8' + v.to_bytes(4, 'little') + b'\xf4'        # noqa: E731  mov eax,v; hlt
    rig.m.write(a, code(1))
    rig.m.write(b, code(10))
    assert (_run_code_at(rig, a), _run_code_at(rig, b)) == (1, 10)
    rig.m.write(a, code(2))
    rig.m.write(b, code(20))
    assert (_run_code_at(rig, a), _run_code_at(rig, b)) == (1, 10)       # both stale
    rig.cpus[0].invalidate_code(a, 0x1000)
    assert (_run_code_at(rig, a), _run_code_at(rig, b)) == (2, 10)       # only a's dropped
    rig.cpus[0].flush_code_cache()
    assert _run_code_at(rig, b) == 20


def test_hook_code_sees_code_translated_before_it_and_skips_a_needless_flush():
    """hook_code flushes the translations, so a hook added after the code
    ran fires; with no run since the last flush there is nothing to flush
    (Unicorn translates only inside emu_start) and none is made."""
    rig = Rig()
    cpu = rig.cpus[0]
    flushes = []
    real = cpu.uc.ctl_flush_tb
    cpu.uc.ctl_flush_tb = lambda: (flushes.append(1), real())
    body = rig.sym('count_loop_body')
    assert rig.call(0, 'count_loop', ecx=3).kind == 'hlt'            # translated, no hook
    hits = []
    cpu.hook_code(body, body + 1, lambda c, a: hits.append(a))
    cpu.hook_code(body, body + 1, lambda c, a: hits.append(-a))      # nothing ran since
    assert len(flushes) == 1
    assert rig.call(0, 'count_loop', ecx=3).kind == 'hlt'
    assert hits == [body, -body] * 3


# ---- the C run path's pieces (vm/_run.c) ------------------------------------------

def test_trap_type_built_from_python_has_the_decoded_fields():
    from vm.cpu import Trap
    t = Trap('pf', 14, 0xC0100000, 0x1234, 6, 3)
    assert (t.kind, t.vector, t.eip, t.cr2, t.error, t.cpl, t.user, t.detail) == \
        ('pf', 14, 0xC0100000, 0x1234, 6, 3, True, '')
    assert repr(t) == '<Trap pf vec=0xe eip=0xc0100000 cpl=3 cr2=0x1234 err=0x6>'
    q = Trap('quantum', eip=0)
    assert (q.vector, q.user, repr(q)) == (None, False, '<Trap quantum eip=0x0 cpl=0>')
    t.error = 7                                   # CPU.run fills a #PF's error code
    assert t.error == 7
    import pickle
    u = pickle.loads(pickle.dumps(Trap('error', eip=5, cpl=3, detail='why')))
    assert (u.kind, u.vector, u.eip, u.cpl, u.detail) == ('error', None, 5, 3, 'why')


def test_hook_code_runs_under_the_bindings_emu_start_too():
    """vm/_pyhook.c takes the GIL itself: the binding's uc.emu_start (a
    ctypes call, which releases it) reaches a hook_code hook as CPU.run
    does, and a hook that raises stops the run with its exception."""
    rig = Rig()
    cpu = rig.cpus[0]
    body = rig.sym('count_loop_body')
    hits = []
    cpu.hook_code(body, body + 1, lambda c, a: hits.append((c, a)))
    cpu.k.limit = 1 << 62                     # CPU.run arms it: the block hook stops at it
    rig.enter(0, 'count_loop', ecx=3)
    cpu.uc.emu_start(rig.sym('count_loop'), rig.sym('count_loop_end'))
    assert hits == [(cpu, body)] * 3

    def boom(_cpu, _addr):
        raise RuntimeError('from the hook')
    cpu.hook_code(body, body + 1, boom)
    rig.enter(0, 'count_loop', ecx=3)
    with pytest.raises(RuntimeError, match='from the hook'):
        cpu.uc.emu_start(rig.sym('count_loop'), rig.sym('count_loop_end'))


def test_a_python_hook_exception_is_raised_and_nothing_is_counted():
    rig = Rig()
    cpu = rig.cpus[0]

    def boom(_cpu, _addr):
        raise RuntimeError('from the hook')
    cpu.hook_code(rig.sym('read_x'), rig.sym('read_x') + 1, boom)
    before = dict(cpu.counters)
    with pytest.raises(RuntimeError, match='from the hook'):
        rig.call(0, 'read_x', edx=DATA)
    assert {k: v for k, v in cpu.counters.items() if k != 'runs'} == \
        {k: v for k, v in before.items() if k != 'runs'}
    assert not cpu.halted


def test_enter_frame_writes_the_stack_words_then_enters_ring0():
    rig = Rig()
    cpu = rig.cpus[0]
    assert rig.to_user(0, 'user_read', ebx=rig.sym('user_read')).cpl == 3
    rig.m.write32(DATA, 1234)
    esp = FAR & ~0xFFF                            # a page of RAM for the words
    cpu.enter_frame(rig.sym('read_x'), esp, x86.EFLAGS_RESERVED, 0, DATA, 0, esp, 0x11, -1, 1 << 33)
    assert [rig.m.read32(esp + 4 * i) for i in range(3)] == [0x11, 0xFFFFFFFF, 0]
    assert cpu.regs['cs'] == x86.KERNEL_CS
    t = cpu.run(100)
    assert (t.kind, t.cpl, cpu.regs['eax']) == ('hlt', 0, 1234)
