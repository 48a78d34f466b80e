"""Self-test of the emulated hardware: the properties the lab relies on,
each shown by a small guest program on a bare Machine (no minikernel).

What this file owns
  - Rig: a bare machine with hand-built page tables and GDT in guest RAM
    (layout below), the guest routines of SELFTEST_S assembled at CODE, and
    helpers to edit PTEs and call a routine on one CPU.  tests/ and the
    benchmark (kmaplab/bench.py) build on it too.
  - One check per property, returning (ok, detail):
      (a) tlb_shootdown        a stale TLB entry survives a remote PTE change
                               until an IPI makes the CPU run invlpg
      (b) user_reads_kernel    ring 3 reading a supervisor page: #PF, U=1 P=1 W=0
      (c) kernel_write_ro      ring 0 writing a read-only page with CR0.WP: #PF W=1 P=1 U=0
      (d) accessed_dirty       the MMU sets A on a read, A|D on a write, in guest PTEs
      (e) many_faults          10,000 page faults in a row all arrive as #PF (#1883)
      (f) determinism          same seed -> same schedule and RAM; another seed -> another
      (g) irq_waits_for_sti    a pending IPI is not taken while IF=0, but right after sti
      (h) exact_count          instruction counts equal the program's, across quanta and
                               across a #PF in the middle of `rep movsd`
      (j) cr3_reload_flushes   a stale entry is used until a CR3 reload drops it
      (k) stale_survives_context_restore  ring 3 and back through the engine's
                               template restore does not flush the TLB
      (i) pf_w_<kind>          one per kind of store (SSE, x87, string, stack, cmpxchg8b,
                               read-modify-write ...) and a few loads: the rebuilt #PF
                               error code has W exactly for the writes, on a not-present
                               page and on a present read-only one (capstone 5.0.x, the
                               old rule, calls many of these stores reads)
  - run_all(out): run them all, one `PASS name: detail` / `FAIL name: detail`
    line each; True iff all pass (`kmaplab selftest`).

Rules
  - vm/ knows nothing about Linux: these routines are plain x86; vector
    numbers and addresses here are this file's own choices.
  - A check never raises for a hardware misbehaviour: it returns (False, why).
"""
import hashlib
import time

from . import x86
from .asm import assemble
from .machine import Machine
from .policy import RoundRobin, SeededRandom

# Physical layout of the rig.  Below 4 MiB virtual == physical (one page table).
#
#   0x00001000  PGDIR    page directory: PDE 0 -> PT0, P|W|U (the PTEs decide)
#   0x00002000  PT0      maps 0..4 MiB identically, supervisor P|W
#   0x00003000  GDT      x86.flat_gdt()
#   0x00010000  CODE     SELFTEST_S (user-accessible, so ring 3 can run it)
#   0x00040000  STACKS   one kernel stack page per CPU, ESP at the top
#   0x000c0000  USTACK   the ring-3 stack page (user)
#   0x00100000  DATA     scratch pages for the checks (supervisor unless changed)
#   0x00400000  FAR      frames above 4 MiB: not mapped, for remapping to
PGDIR = 0x1000
PT0 = 0x2000
GDT = 0x3000
CODE = 0x10000
CODE_MAX = 0x30000
STACKS = 0x40000
USTACK = 0xC0000
DATA = 0x100000
FAR = 0x400000
RAM = 8 << 20

IPI_VECTOR = 0xFD      # the shootdown IPI's vector in these checks
SYSCALL_VECTOR = 0x80

SELFTEST_S = r'''
// Guest routines for vm/selftest.py.  Ring-0 routines are entered from
// Python (cpu.enter) with their arguments in registers and end with `hlt`,
// the result in EAX.

// u32 read_x(EDX va)
read_x:
        mov eax, dword ptr [edx]
        hlt

// void write_x(EDX va, EAX value)
write_x:
        mov dword ptr [edx], eax
        hlt

// u32 set_pte_flush(ECX pte address, EAX new pte, EDX va): set a PTE, flush
// the local TLB entry only, read through the new mapping.
set_pte_flush:
        mov dword ptr [ecx], eax
        invlpg [edx]
        mov eax, dword ptr [edx]
        hlt

// u32 flush_one(EDX va): the shootdown handler: invlpg, read through it.
flush_one:
        invlpg [edx]
        mov eax, dword ptr [edx]
        hlt

// void idle_spin(void): enable interrupts and spin until one comes.
idle_spin:
        sti
idle_loop:
        jmp idle_loop

// void cli_spin(ECX n): n loop iterations with IF=0, then sti and spin.
cli_spin:
        cli
1:      dec ecx
        jnz 1b
        sti
after_sti:
        jmp after_sti

// void count_loop(ECX n): 1 + 3n + 1 instructions (the hlt retires).
count_loop:
        mov eax, 0
count_loop_body:
        add eax, 1
        dec ecx
        jnz count_loop_body
count_loop_end:
        hlt

// void halt_idle(void): an idle loop: sti; hlt until an interrupt.
halt_idle:
        sti
        hlt
        jmp halt_idle

// void copy_dwords(ESI src, EDI dst, ECX n): 3 + (n + 1) + 1 instructions:
// QEMU runs `rep movsd` one iteration per pass, plus one pass finding ECX=0.
copy_dwords:
        cld
        nop
        nop
        rep movsd
        hlt

// void fault_loop(EDX va, EBX pte address, ECX n): n times: read va (not
// present: faults until Python maps it), unmap it again, flush it.
fault_loop:
1:      mov eax, dword ptr [edx]
        mov dword ptr [ebx], 0
        invlpg [edx]
        dec ecx
        jnz 1b
        hlt

// void racy_inc(EDX counters, ECX n): n times: counters[0] += 1 without a
// lock, and counters[1] += 1 under the spinlock counters[2] (lock xchg).
// The jumps put a block boundary, where a quantum may end, between each
// load and its store.
racy_inc:
1:      mov eax, dword ptr [edx]
        jmp 2f
2:      inc eax
        mov dword ptr [edx], eax
3:      mov eax, 1
        xchg eax, dword ptr [edx + 8]
        test eax, eax
        jnz 3b
        mov eax, dword ptr [edx + 4]
        jmp 4f
4:      inc eax
        mov dword ptr [edx + 4], eax
        mov dword ptr [edx + 8], 0
        dec ecx
        jnz 1b
        hlt

// void to_user(EAX eip, EDX esp): iretd to ring 3 with IF=0.
to_user:
        push offset USER_DS
        push edx
        push 0x2
        push offset USER_CS
        push eax
// void ret_user(ESP = &{eip, cs, eflags, esp, ss}): user segments, iretd.
ret_user:
        mov ds, word ptr [esp + 16]
        mov es, word ptr [esp + 16]
        iretd

// u32 reload_cr3_read(EDX va): a CR3 reload (local_flush_tlb), read va.
reload_cr3_read:
        mov eax, cr3
        mov cr3, eax
        mov eax, dword ptr [edx]
        hlt

// ring 3: read [EBX], then `int 0x80`.
user_read:
        mov eax, dword ptr [ebx]
        int 0x80

// ring 3: write ECX to [EBX], then `int 0x80`.
user_write:
        mov dword ptr [ebx], ecx
        int 0x80

// ring 3: system calls forever (EAX = 20 each time).
user_syscalls:
        mov eax, 20
        int 0x80
        jmp user_syscalls

// ring 3: hlt is privileged: #GP.
user_hlt:
        hlt

// ud2: #UD anywhere.
do_ud2:
        ud2
'''


class Rig:
    """A bare machine for hardware checks (see the layout above).

    cpus, ram and the keywords go to Machine.  Every CPU is booted with the
    same page tables and its own kernel stack, and counts instructions
    exactly in the image (set_code_region).
    """

    def __init__(self, cpus=1, ram=RAM, source=SELFTEST_S, cr4=0, **machine_kw):
        self.m = Machine(cpus=cpus, ram=ram, **machine_kw)
        m = self.m
        m.write32(PGDIR, PT0 | x86.PTE_P | x86.PTE_W | x86.PTE_U)
        m.write(PT0, b''.join(((i << 12) | x86.PTE_P | x86.PTE_W).to_bytes(4, 'little')
                              for i in range(1024)))
        m.write(GDT, x86.flat_gdt())
        self.image = assemble([('vm/selftest.S', source)], CODE,
                              dict(USER_CS=x86.USER_CS, USER_DS=x86.USER_DS))
        if self.image.size > CODE_MAX - CODE:
            raise ValueError('selftest image too large')
        m.write(CODE, self.image.code)
        for va in range(CODE, CODE + self.image.size + 0xFFF, 0x1000):
            self.set_pte(va, va | x86.PTE_P | x86.PTE_W | x86.PTE_U)
        self.set_pte(USTACK, USTACK | x86.PTE_P | x86.PTE_W | x86.PTE_U)
        for cpu in m.cpus:
            cpu.boot(PGDIR, GDT, 8 * x86.GDT_ENTRIES, self.kstack(cpu.index), cr4=cr4)
            cpu.set_code_region(0, self.image.base, self.image.size, self.image.insn_bitmap)
            cpu.watch_tlb_events(self.image)
            cpu.watch_sti(self.image)

    @property
    def cpus(self):
        return self.m.cpus

    def sym(self, name):
        return self.image.symbols[name]

    @staticmethod
    def kstack(i):
        return STACKS + (i + 1) * 0x1000 - 16

    # ---- page tables (VA < 4 MiB) ---------------------------------------

    @staticmethod
    def pte_pa(va):
        if not 0 <= va < 4 << 20:
            raise ValueError(f'the rig maps only 0..4 MiB, not {va:#x}')
        return PT0 + 4 * (va >> 12)

    def pte(self, va):
        return self.m.read32(self.pte_pa(va))

    def set_pte(self, va, value):
        self.m.write32(self.pte_pa(va), value)

    # ---- running ----------------------------------------------------------

    def enter(self, i, name, eflags=x86.EFLAGS_RESERVED, **regs):
        """Point CPU i at routine `name` (ring 0, IF=0 unless eflags says)."""
        self.cpus[i].enter(self.sym(name), self.kstack(i), eflags, **regs)

    def call(self, i, name, budget=10_000_000, **regs):
        """Run routine `name` on CPU i to its first stop; returns the Trap."""
        self.enter(i, name, **regs)
        return self.cpus[i].run(budget)

    def to_user(self, i, name, **regs):
        """Run ring-3 code at `name` on CPU i (through to_user's iretd) to its
        first stop; returns the Trap.  EAX and EDX are to_user's: the user
        code gets the other registers given."""
        return self.call(i, 'to_user', eax=self.sym(name), edx=USTACK + 0x1000 - 16, **regs)

    def ram_hash(self):
        return hashlib.sha256(self.m.ram).hexdigest()


class Driver:
    """A Machine.run driver for the checks: runs the picked CPU for its
    budget and records its traps.  `on_irq(cpu, vector, trap)` is called
    when an interrupt is taken; a CPU that halts is done; `until()` ends
    the run (default: every CPU done); any other trap stops the machine."""

    def __init__(self, machine, on_irq=None, until=None):
        self.m = machine
        self.on_irq = on_irq
        self.until = until
        self.done = [False] * len(machine.cpus)
        self.traps = []             # (cpu, Trap), in order

    def step(self, cpu, budget):
        t = cpu.run(budget)
        if t.kind == 'quantum':
            return
        self.traps.append((cpu.index, t))
        if t.kind == 'irq' and self.on_irq:
            self.on_irq(cpu, self.m.next_irq(cpu.index), t)
        elif t.kind == 'hlt':
            self.done[cpu.index] = True
        else:
            self.m.stop(f'cpu{cpu.index}: unexpected {t!r}')

    def finished(self):
        return self.until() if self.until else all(self.done)

    def stalled(self):
        return 'stalled'


def _pattern(value):
    return value.to_bytes(4, 'little') * 1024


# ---- (a) ---------------------------------------------------------------------

def check_tlb_shootdown():
    """CPU0 remaps X and flushes locally; CPU1 keeps reading the old frame
    through its TLB until an IPI makes it run invlpg."""
    rig = Rig(cpus=2)
    m, x, old, new = rig.m, DATA, 0x11111111, 0x22222222
    m.write(DATA, _pattern(old))
    m.write(FAR, _pattern(new))
    t1 = rig.call(1, 'read_x', edx=x)                       # CPU1 caches X -> DATA
    before = rig.cpus[1].regs['eax']
    t0 = rig.call(0, 'set_pte_flush', ecx=rig.pte_pa(x), eax=FAR | x86.PTE_P | x86.PTE_W, edx=x)
    cpu0_sees = rig.cpus[0].regs['eax']
    rig.call(1, 'read_x', edx=x)
    stale = rig.cpus[1].regs['eax']
    if (t1.kind, t0.kind) != ('hlt', 'hlt'):
        return False, f'setup did not run: {t1!r} {t0!r}'

    taken = {}

    def on_irq(cpu, vector, trap):
        taken.update(vector=vector, eip=trap.eip)
        rig.enter(cpu.index, 'flush_one', edx=x)            # the guest IPI handler
    rig.enter(1, 'idle_spin')
    m.send_ipi(0, [1], IPI_VECTOR)
    d = Driver(m, on_irq, until=lambda: d.done[1])
    end = m.run(d, max_cycles=m.now() + 100_000)
    after = rig.cpus[1].regs['eax']
    ok = (before == old and cpu0_sees == new and stale == old and end == 'finished'
          and taken.get('vector') == IPI_VECTOR and after == new)
    return ok, (f'CPU0 reads {cpu0_sees:#x} after its invlpg, CPU1 still reads {stale:#x} '
                f'(stale TLB); IPI {taken.get("vector", 0):#x} taken at {taken.get("eip", 0):#x}, '
                f'after the handler\'s invlpg CPU1 reads {after:#x} ({end})')


# ---- (b), (c) ----------------------------------------------------------------

def check_user_reads_kernel():
    """Ring 3 reading a supervisor page: #PF with U=1, P=1, W=0."""
    rig = Rig()
    t = rig.to_user(0, 'user_read', ebx=DATA)
    want = x86.PF_U | x86.PF_P
    ok = (t.kind == 'pf' and t.cpl == 3 and t.cr2 == DATA and t.error == want
          and t.eip == rig.sym('user_read'))
    return ok, f'{t!r} (want pf cpl=3 cr2={DATA:#x} err={want:#x})'


def check_kernel_write_ro():
    """Ring 0 writing a read-only page with CR0.WP set: #PF with W=1, P=1, U=0."""
    rig = Rig()
    rig.set_pte(DATA, DATA | x86.PTE_P)
    t = rig.call(0, 'write_x', edx=DATA, eax=5)
    want = x86.PF_W | x86.PF_P
    ok = (t.kind == 'pf' and t.cpl == 0 and t.cr2 == DATA and t.error == want
          and rig.m.read32(DATA) == 0)
    return ok, f'{t!r} (want pf cpl=0 cr2={DATA:#x} err={want:#x}), memory unchanged'


# ---- (d) -----------------------------------------------------------------------

def check_accessed_dirty():
    """The emulated MMU writes A on a read and A|D on a write into the
    guest's PTEs (and A into the PDE)."""
    rig = Rig()
    r, w, rw = DATA, DATA + 0x1000, DATA + 0x2000
    ad = x86.PTE_A | x86.PTE_D
    for va in (r, w, rw):
        rig.set_pte(va, va | x86.PTE_P | x86.PTE_W)
    rig.m.write32(PGDIR, rig.m.read32(PGDIR) & ~x86.PTE_A)
    clean = [rig.pte(va) & ad for va in (r, w, rw)]
    rig.call(0, 'read_x', edx=r)
    rig.call(0, 'write_x', edx=w, eax=1)
    rig.call(0, 'read_x', edx=rw)
    mid = rig.pte(rw) & ad
    rig.call(0, 'write_x', edx=rw, eax=1)             # read first, then write
    got = [rig.pte(va) & ad for va in (r, w, rw)]
    pde_a = rig.m.read32(PGDIR) & x86.PTE_A
    ok = clean == [0, 0, 0] and got == [x86.PTE_A, ad, ad] and mid == x86.PTE_A and pde_a
    return ok, (f'read -> {got[0]:#x}, write -> {got[1]:#x}, read then write -> '
                f'{mid:#x} then {got[2]:#x}, PDE.A={bool(pde_a)}')


# ---- (e) -----------------------------------------------------------------------

def check_many_faults(n=10_000):
    """n page faults in a row all arrive as #PF with the right CR2 and error
    code (Unicorn #1883 would turn the 2nd into #DF and stop at the 3rd)."""
    rig = Rig()
    cpu, x = rig.cpus[0], DATA
    rig.set_pte(x, 0)
    rig.enter(0, 'fault_loop', edx=x, ebx=rig.pte_pa(x), ecx=n)
    pf, bad = 0, None
    t0 = time.perf_counter()
    while True:
        t = cpu.run(1_000_000)
        if t.kind == 'pf' and t.cr2 == x and t.error == 0:
            pf += 1
            rig.set_pte(x, x | x86.PTE_P | x86.PTE_W)          # resolve, re-run
            continue
        if t.kind != 'hlt':
            bad = t
        break
    us = (time.perf_counter() - t0) / max(pf, 1) * 1e6
    ok = pf == n and bad is None and cpu.regs['ecx'] == 0
    why = f', then {bad!r}' if bad else ''
    return ok, (f'{pf}/{n} faults arrived as #PF (err=0 cr2={x:#x}){why}; '
                f'{us:.0f} us per fault round trip; 2nd fault without the fix: {_second_fault_unfixed()}')


def _second_fault_unfixed():
    """What the second fault arrives as with the #1883 fix turned off
    (informational: tells whether Unicorn still has the bug)."""
    rig = Rig()
    cpu = rig.cpus[0]
    cpu.k.old_exc_off = -1
    rig.set_pte(DATA, 0)
    kinds = [rig.call(0, 'read_x', edx=DATA).kind]
    cpu.enter(rig.sym('read_x'), rig.kstack(0), edx=DATA)
    kinds.append(cpu.run(1000).kind)
    return kinds[1] if kinds[0] == 'pf' else f'first was {kinds[0]}'


# ---- (f) -----------------------------------------------------------------------

def racy_run(seed, cpus=4, n=500, quantum=40):
    """racy_inc on every CPU under SeededRandom(quantum): returns
    (schedule log, RAM hash, [racy counter, locked counter], end reason)."""
    rig = Rig(cpus=cpus, seed=seed, policy=SeededRandom(quantum))
    m = rig.m
    m.log_schedule = True
    for i in range(cpus):
        rig.enter(i, 'racy_inc', edx=DATA, ecx=n)
    end = m.run(Driver(m), max_cycles=50_000_000)
    counts = [m.read32(DATA), m.read32(DATA + 4)]
    return list(m.schedule_log), rig.ram_hash(), counts, end


def check_determinism(cpus=4, n=500):
    """Same seed: same schedule and RAM; another seed: another schedule.
    The lock keeps its counter exact; the unlocked counter loses updates
    under both seeds (the interleaving is real: fewer than cpus * n)."""
    a = racy_run(1, cpus, n)
    b = racy_run(1, cpus, n)
    c = racy_run(2, cpus, n)
    total = cpus * n
    ok = (a[3] == b[3] == c[3] == 'finished' and a[0] == b[0] and a[1] == b[1]
          and a[2] == b[2] and a[0] != c[0] and a[2][1] == c[2][1] == total
          and a[2][0] < total and c[2][0] < total)
    return ok, (f'seed 1 twice: {len(a[0])} picks, schedules '
                f'{"identical" if a[0] == b[0] else "DIFFER"}, RAM sha256 '
                f'{"identical" if a[1] == b[1] else "DIFFERS"} ({a[1][:12]}); seed 2: '
                f'schedule {"differs" if a[0] != c[0] else "IDENTICAL"}; unlocked counter '
                f'{a[2][0]} / {c[2][0]}, locked {a[2][1]} / {c[2][1]} of {total}')


# ---- (g) -----------------------------------------------------------------------

def check_irq_waits_for_sti(n=2000, quantum=50):
    """An IPI sent to a CPU spinning with IF=0 stays pending across every
    quantum boundary and is taken after `sti` and the one instruction in
    its shadow (the `jmp` to itself at after_sti)."""
    rig = Rig(cpus=2, policy=RoundRobin(quantum))
    m, cpu1 = rig.m, rig.cpus[1]
    rig.call(0, 'read_x', edx=DATA)          # CPU0: the sender, then halted
    rig.enter(1, 'cli_spin', ecx=n)          # IF=0
    start = cpu1.instructions
    at = m.time(0) + m.ipi_latency
    m.send_ipi(0, [1], IPI_VECTOR)
    mark = {}
    m.schedule(at, lambda: mark.update(runs=cpu1.counters['runs'], insns=cpu1.instructions - start))
    taken = {}

    def on_irq(cpu, vector, trap):
        taken.update(vector=vector, eip=trap.eip, at=cpu.instructions - start,
                     quanta=cpu.counters['runs'] - mark.get('runs', 0))
        m.stop('irq taken')
    end = m.run(Driver(m, on_irq), max_cycles=10 * n)
    # cli, n * (dec, jnz), sti, and the jmp in sti's shadow: x86 retires
    # the instruction after sti before it takes the interrupt
    expect_at = 1 + 2 * n + 1 + 1
    ok = (end == 'irq taken' and taken.get('vector') == IPI_VECTOR and 'runs' in mark
          and taken.get('eip') == rig.sym('after_sti') and taken.get('at') == expect_at
          and taken['quanta'] > 1)
    return ok, (f'IPI pending on CPU1 from its instruction {mark.get("insns")}, kept pending '
                f'with IF=0 over {taken.get("quanta", 0) - 1} quantum boundaries; taken at '
                f'{taken.get("eip", 0):#x} (after_sti={rig.sym("after_sti"):#x}) after '
                f'{taken.get("at")} instructions (want {expect_at} = cli + {n} iterations + sti + '
                f'the jmp in its shadow)')


# ---- (j), (k) -------------------------------------------------------------------

def _stale_then(mode, between):
    """DATA cached by a ring-0 read, its PTE pointed at FAR without a flush;
    a ring-0 read of DATA after `between(rig)`, which returns the routine
    for that read.  Returns (first read, read after) on tlb=`mode`."""
    rig = Rig(tlb=mode)
    m = rig.m
    m.write32(DATA, 0xA0)
    m.write32(FAR, 0xF0)
    first = rig.call(0, 'read_x', edx=DATA) and rig.cpus[0].regs['eax']
    rig.set_pte(DATA, FAR | x86.PTE_P | x86.PTE_W)      # no invlpg, no CR3 load
    name = between(rig)
    t = rig.call(0, name, edx=DATA)
    return first, rig.cpus[0].regs['eax'] if t.kind == 'hlt' else t


def check_cr3_reload_flushes():
    """A non-global entry cached before its PTE changed: the next read is
    still stale (the TLB holds it), a CR3 reload drops it and the read
    after it sees the new frame; under tlb=qemu and tlb=p3."""
    out = {}
    for mode in ('qemu', 'p3'):
        _, stale = _stale_then(mode, lambda rig: 'read_x')
        _, fresh = _stale_then(mode, lambda rig: 'reload_cr3_read')
        out[mode] = (stale, fresh)
    ok = all(v == (0xA0, 0xF0) for v in out.values())
    return ok, '; '.join(f'tlb={mode}: without a flush {s:#x} (stale), after mov cr3 {f:#x}'
                         if isinstance(s, int) and isinstance(f, int) else f'tlb={mode}: {s!r} {f!r}'
                         for mode, (s, f) in out.items())


def check_stale_survives_context_restore():
    """The engine's way back from ring 3 (a context_restore of the ring-0
    template, vm/cpu.py) is not a TLB flush: an entry made stale before a
    trip to user mode and back is still used by ring 0 after it, as on x86
    (a trap does not flush the TLB); under tlb=qemu and tlb=p3."""
    def via_user(rig):
        t = rig.to_user(0, 'user_read', ebx=USTACK)
        via_user.trap = t
        return 'read_x'
    out = {}
    for mode in ('qemu', 'p3'):
        via_user.trap = None
        out[mode] = (_stale_then(mode, via_user)[1], via_user.trap)
    ok = all(v == 0xA0 and t is not None and t.kind == 'int' and t.cpl == 3
             for v, t in out.values())
    return ok, '; '.join(f'tlb={mode}: ring 3 ran ({t!r}), then ring 0 reads '
                         f'{v:#x} (stale: {"yes" if v == 0xA0 else "NO"})' if isinstance(v, int)
                         else f'tlb={mode}: {v!r}' for mode, (v, t) in out.items())


# ---- (h) -----------------------------------------------------------------------

def check_exact_count(n=1000, budget=7):
    """Instruction counts match the program: a loop run in tiny quanta, and
    a `rep movsd` interrupted by a #PF on its destination and resumed."""
    rig = Rig()
    cpu = rig.cpus[0]
    start = cpu.instructions
    rig.enter(0, 'count_loop', ecx=n)
    stops = 0
    while (t := cpu.run(budget)).kind == 'quantum':
        stops += 1
    loop = cpu.instructions - start
    want_loop = 1 + 3 * n + 1

    ndw, fault_page = 4096, 2                  # 4 pages; the 3rd destination page faults
    src, dst = DATA, DATA + 0x10000
    rig.set_pte(dst + fault_page * 0x1000, 0)
    start = cpu.instructions
    rig.enter(0, 'copy_dwords', esi=src, edi=dst, ecx=ndw)
    f = cpu.run(1_000_000)
    at_fault = cpu.instructions - start
    left = cpu.regs['ecx']
    done_dw = fault_page * 1024
    rig.set_pte(dst + fault_page * 0x1000, (dst + fault_page * 0x1000) | x86.PTE_P | x86.PTE_W)
    end = cpu.run(1_000_000)
    total = cpu.instructions - start
    want_fault, want_total = 3 + done_dw, 3 + ndw + 1 + 1
    ok = (t.kind == 'hlt' and loop == want_loop and f.kind == 'pf' and f.error & x86.PF_W
          and left == ndw - done_dw and at_fault == want_fault and end.kind == 'hlt'
          and total == want_total)
    return ok, (f'loop: {loop} retired (want {want_loop}) over {stops + 1} quanta of {budget}; '
                f'rep movsd: {at_fault} at the #PF (want {want_fault}, ECX={left}), '
                f'{total} in all (want {want_total} = 3 + {ndw} iterations + the ECX=0 pass + hlt)')


# ---- (i) ---------------------------------------------------------------------

# (name, instruction(s) storing to or loading from [edx] (stos/movs: [edi];
# push: the stack at edx), 'store' | 'rmw' | 'load').  Ring 0, CR0.WP set.
PF_W_KINDS = [
    ('mov', 'mov dword ptr [edx], eax', 'store'),
    ('movups', 'movups xmmword ptr [edx], xmm0', 'store'),
    ('movupd', 'movupd xmmword ptr [edx], xmm0', 'store'),
    ('movaps', 'movaps xmmword ptr [edx], xmm0', 'store'),
    ('movdqu', 'movdqu xmmword ptr [edx], xmm0', 'store'),
    ('movlpd', 'movlpd qword ptr [edx], xmm0', 'store'),
    ('movlps', 'movlps qword ptr [edx], xmm0', 'store'),
    ('movhps', 'movhps qword ptr [edx], xmm0', 'store'),
    ('movhpd', 'movhpd qword ptr [edx], xmm0', 'store'),
    ('movq_xmm', 'movq qword ptr [edx], xmm0', 'store'),
    ('movq_mmx', 'movq qword ptr [edx], mm0', 'store'),
    ('movd_mmx', 'movd dword ptr [edx], mm0', 'store'),
    ('movd_xmm', 'movd dword ptr [edx], xmm0', 'store'),
    ('movss', 'movss dword ptr [edx], xmm0', 'store'),
    ('movsd_sse', 'movsd qword ptr [edx], xmm0', 'store'),
    ('movntps', 'movntps xmmword ptr [edx], xmm0', 'store'),
    ('movntpd', 'movntpd xmmword ptr [edx], xmm0', 'store'),
    ('movntdq', 'movntdq xmmword ptr [edx], xmm0', 'store'),
    ('movnti', 'movnti dword ptr [edx], eax', 'store'),
    ('movntq', 'movntq qword ptr [edx], mm0', 'store'),
    ('stmxcsr', 'stmxcsr dword ptr [edx]', 'store'),
    ('fst', 'fst dword ptr [edx]', 'store'),
    ('fstp', 'fstp qword ptr [edx]', 'store'),
    ('fstp_m80', 'fstp tbyte ptr [edx]', 'store'),
    ('fist', 'fist word ptr [edx]', 'store'),
    ('fistp', 'fistp dword ptr [edx]', 'store'),
    ('fisttp', 'fisttp dword ptr [edx]', 'store'),
    ('fbstp', 'fbstp tbyte ptr [edx]', 'store'),
    ('fnstcw', 'fnstcw word ptr [edx]', 'store'),
    ('fnstsw', 'fnstsw word ptr [edx]', 'store'),
    ('fnstenv', 'fnstenv [edx]', 'store'),
    ('fnsave', 'fnsave [edx]', 'store'),
    ('fxsave', 'fxsave [edx]', 'store'),
    ('stosd', 'mov edi, edx\n        stosd', 'store'),
    ('movsd_string', 'mov edi, edx\n        mov esi, esp\n        movsd', 'store'),
    ('push', 'mov esp, edx\n        add esp, 4\n        push eax', 'store'),
    ('pop_mem', 'pop dword ptr [edx]', 'store'),
    ('setcc', 'sete byte ptr [edx]', 'store'),
    ('cmpxchg8b', 'cmpxchg8b qword ptr [edx]', 'rmw'),
    ('cmpxchg', 'lock cmpxchg dword ptr [edx], ecx', 'rmw'),
    ('xchg', 'xchg dword ptr [edx], eax', 'rmw'),
    ('add', 'add dword ptr [edx], eax', 'rmw'),
    ('rol', 'rol dword ptr [edx], 1', 'rmw'),
    ('load', 'mov eax, dword ptr [edx]', 'load'),
    ('load_movups', 'movups xmm0, xmmword ptr [edx]', 'load'),
    ('load_fld', 'fld dword ptr [edx]', 'load'),
    ('load_add', 'add eax, dword ptr [edx]', 'load'),
]
PF_W_TARGET = DATA + 0x800          # 16-byte aligned, room for fnsave/fxsave


def _pf_w_source():
    return SELFTEST_S + ''.join(f'\npf_w_{name}:\n        {text}\n        hlt\n'
                                for name, text, _ in PF_W_KINDS)


def _capstone_says_write(image, name):
    """The old rule: does capstone 5 mark a memory operand of the faulting
    instruction (the last one of the routine before hlt) as written?"""
    import capstone
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    md.detail = True
    start = image.symbols[f'pf_w_{name}']
    insns = list(md.disasm(bytes(image.code[start - image.base:start - image.base + 32]), start))
    last = next(i for i, nxt in zip(insns, insns[1:]) if nxt.mnemonic == 'hlt')
    if last.mnemonic in ('push', 'call', 'pushal', 'pushfd'):
        return True                     # the old rule's stack-write special case
    return any(op.type == capstone.x86_const.X86_OP_MEM and op.access & capstone.CS_AC_WRITE
               for op in last.operands)


def _check_pf_w(name, kind):
    """The #PF error code of one kind of access, on a not-present page and
    (for writes) on a present read-only page: W set exactly for stores and
    read-modify-writes, P as the PTE says, U clear (ring 0).  Under
    tlb='qemu' (rebuilt from QEMU's saved error code) and under tlb='p3'
    (the model's walk, vm/_tlb.c, gives it): both must agree."""
    va = PF_W_TARGET
    want_w = kind != 'load'
    cases = [('not present', 0)] + ([('present read-only', DATA | x86.PTE_P)] if want_w else [])
    seen = []
    for mode in ('qemu', 'p3'):
        rig = Rig(source=_pf_w_source(), cr4=x86.CR4_OSFXSR | x86.CR4_OSXMMEXCPT, tlb=mode)
        for what, pte in cases:
            rig.set_pte(va, pte)
            t = rig.call(0, f'pf_w_{name}', edx=va, eax=0x1234, ecx=0)
            if t.kind != 'pf' or t.cr2 >> 12 != va >> 12:
                return False, f'tlb={mode}, {what}: expected a #PF on {va:#x}, got {t!r}'
            w, p = bool(t.error & x86.PF_W), bool(t.error & x86.PF_P)
            if w != want_w or p != bool(pte) or t.error & x86.PF_U:
                return False, (f'tlb={mode}, {what}: error code {t.error:#x}, '
                               f'want W={int(want_w)} P={int(bool(pte))} U=0')
            if mode == 'qemu':
                seen.append(f'{what} {t.error:#x}')
    old = _capstone_says_write(rig.image, name)
    verdict = '' if old == want_w else (' (capstone calls it a read)' if want_w else
                                        ' (capstone calls it a write)')
    return True, f'{kind}: ' + ', '.join(seen) + ' (tlb=qemu and tlb=p3)' + verdict


def _pf_w_check(name, kind):
    def check():
        return _check_pf_w(name, kind)
    check.__name__ = f'check_pf_w_{name}'
    return check


CHECKS = [
    ('tlb_shootdown', check_tlb_shootdown),
    ('user_reads_kernel', check_user_reads_kernel),
    ('kernel_write_ro', check_kernel_write_ro),
    ('accessed_dirty', check_accessed_dirty),
    ('many_faults', check_many_faults),
    ('determinism', check_determinism),
    ('irq_waits_for_sti', check_irq_waits_for_sti),
    ('exact_count', check_exact_count),
    ('cr3_reload_flushes', check_cr3_reload_flushes),
    ('stale_survives_context_restore', check_stale_survives_context_restore),
] + [(f'pf_w_{name}', _pf_w_check(name, kind)) for name, _, kind in PF_W_KINDS]


def run_all(out=print):
    """Run every check; `out` gets one PASS/FAIL line each.  True iff all pass."""
    all_ok = True
    for name, fn in CHECKS:
        try:
            ok, detail = fn()
        except Exception as e:          # a crash is a failure of that check, not of the run
            ok, detail = False, f'{type(e).__name__}: {e}'
        all_ok &= bool(ok)
        out(f'{"PASS" if ok else "FAIL"} {name}: {detail}')
    return all_ok


# The modelled TLB's checks (tlb='p3') live in their own file, which builds
# on the Rig above: imported last for that reason.
from .selftest_tlb import CHECKS as _TLB_CHECKS  # noqa: E402

CHECKS += _TLB_CHECKS
