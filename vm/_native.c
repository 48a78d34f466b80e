/*
 * vm/_native.c: the hooks Unicorn calls on every translated block and trap,
 * written in C so that counting and trap capture cost no Python call.
 *
 * One `kcpu` struct per emulated CPU, owned by vm/cpu.py (allocated with
 * ctypes; vm/native.py mirrors this layout field by field, and
 * tests/test_native.py checks the offsets).
 *
 * Invariants
 *  - `executed` counts retired guest instructions.  A block's instructions
 *    are added when the block is entered (UC_HOOK_BLOCK), from the
 *    instruction-start bitmap of the image that holds it; when a trap or hlt
 *    ends a block early, the instructions from EIP to the block end are taken
 *    back (kcpu_settle), so the count is exact at every stop.
 *  - A `rep` string instruction is one block per iteration in TCG, plus a
 *    last pass that finds ECX=0: N iterations count N+1.  Deterministic, and
 *    exact across a fault in the middle.
 *  - Outside every code region (a runaway guest executing data or a zero
 *    page: no image says where its instructions start) a block counts as
 *    its length in bytes, an upper bound of its instructions (an x86
 *    instruction is at least one byte), and a trap in it takes back the
 *    bytes from EIP on.  Simulated time then runs at least as fast as the
 *    guest really executes, so max_cycles bounds the host's work on such
 *    code too (with 1 per block, a 512-instruction block of zero bytes
 *    cost one cycle).  No shipped scenario runs such code (unknown_blocks
 *    is 0 in all of them).
 *  - Block counts are cached per (address, size); `gen` is bumped whenever
 *    a code region changes (another program's image), which drops the cache.
 *  - Emulation stops only at block boundaries (limit reached, interrupt
 *    window open) or at a trap.  Both are deterministic.  With run-ahead
 *    armed (ahead_q, vm/machine.py) a limit boundary below ahead_stop is
 *    not a stop: the limit moves on by min(ahead_q, ahead_cap - clock), as
 *    the machine's loop would have given, and the block goes on as the
 *    first block of a new run would (interrupt check, count).
 *  - The Unicorn #1883 fix: after every exception, `old_exception` in the
 *    CPU state is reset to -1 through a context save/patch/restore, so the
 *    next fault arrives as #PF and not as #DF (the offset is found at
 *    start-up).  A software `int n` does not set it: no fix needed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define KCPU_MAX_REGIONS 8
#define KCPU_MAX_RANGES 32
#define KCPU_CACHE 1024         /* per-block instruction counts, direct mapped */
#define EFLAGS_IF 0x200
#define UC_X86_REG_EFLAGS 25
#define UC_X86_REG_EIP 26

enum stop_reason { STOP_NONE = 0, STOP_LIMIT = 1, STOP_IRQ = 2, STOP_TRAP = 3 };

typedef int (*uc_stop_fn)(void *uc);
typedef int (*uc_ctx_fn)(void *uc, void *ctx);
typedef int (*uc_reg_read_fn)(void *uc, int regid, void *value);

typedef struct {
    uint32_t base;          /* first virtual address the bitmap covers */
    uint32_t size;          /* bytes covered */
    const uint8_t *bits;    /* bit i set: an instruction starts at base+i */
} code_region;

typedef struct {
    uint32_t lo, hi;        /* [lo, hi) virtual addresses */
    uint64_t count;         /* instructions retired inside */
} insn_range;

typedef struct {
    uint32_t addr, size;    /* the block */
    uint32_t n, gen;        /* its instruction count, valid while gen == kcpu.gen */
} count_entry;

typedef struct {
    uint64_t executed;      /* instructions retired (exact at every stop) */
    uint64_t limit;         /* stop at the first block boundary with executed >= limit */
    int32_t trap;           /* -1, or the intno of the trap that stopped the run */
    int32_t stop_reason;    /* enum stop_reason */
    uint32_t blk_addr;      /* last block entered */
    uint32_t blk_size;
    uint32_t blk_count;     /* instructions credited for that block */
    int32_t old_exc_off;    /* offset of old_exception in a uc_context, or -1 */
    int32_t irq_pending;    /* nonzero: stop at a block boundary once EFLAGS.IF=1 */
    uint32_t nregions;
    uint64_t unknown_blocks;/* blocks outside every region (counted by their bytes) */
    uc_stop_fn emu_stop;
    uc_ctx_fn ctx_save;
    uc_ctx_fn ctx_restore;
    uc_reg_read_fn reg_read;
    void *ctx;              /* scratch uc_context for the #1883 fix */
    code_region regions[KCPU_MAX_REGIONS];
    uint32_t nranges;
    uint32_t pad;
    insn_range ranges[KCPU_MAX_RANGES];
    uint32_t gen;           /* bumped whenever the regions change: drops the cache */
    uint32_t pad2;
    count_entry cache[KCPU_CACHE];
    uint32_t sti_shadow;    /* address after an `sti` just executed, or 0 */
    uint32_t pad3;
    uint64_t sti_shadows;   /* interrupts held back one instruction by the shadow */
    uint32_t rng_lo, rng_hi;/* [lo, hi) covering every range (set with them): most
                             * blocks lie outside and skip credit_ranges */
    /* Run-ahead (vm/machine.py Machine.run, 1-CPU machines): a limit
     * boundary where the machine's loop would do nothing but give this CPU
     * its next quantum is crossed here, without stopping.  ahead_q 0: off. */
    uint64_t ahead_q;       /* the quantum the policy would give */
    uint64_t ahead_stop;    /* stop at a boundary with clock >= this (next event, time limit) */
    uint64_t ahead_cap;     /* the next event's time: a quantum ends there at the latest */
    uint64_t ahead_end;     /* the clock at which the current step ends (moved at each crossing) */
    const int64_t *extra;   /* this CPU's charged cycles (the machine's extra[i]): clock = executed + *extra */
    uint64_t crossed;       /* boundaries crossed so (Runner.run counts each as a run) */
} kcpu;

static uint32_t count_starts(const kcpu *c, uint32_t addr, uint32_t size, int *known)
{
    for (uint32_t r = 0; r < c->nregions; r++) {
        const code_region *reg = &c->regions[r];
        if (addr - reg->base < reg->size) {
            uint32_t lo = addr - reg->base, hi = lo + size, n = 0;
            if (hi > reg->size)
                hi = reg->size;
            for (uint32_t i = lo; i < hi; i++)
                n += (reg->bits[i >> 3] >> (i & 7)) & 1;
            *known = 1;
            return n;
        }
    }
    *known = 0;
    return size ? size : 1;     /* outside every image: its length in bytes (see the top) */
}

/* Of the instructions of [addr, addr+size) (n in all), how many start in
 * [lo, hi).  A block may start before a range and run into it (a loop
 * entered by falling through), or run past its end.  Outside every code
 * region a block's count is credited to a range only at its start. */
static uint32_t starts_in(const kcpu *c, uint32_t addr, uint32_t size, uint32_t n,
                          uint32_t lo, uint32_t hi)
{
    uint64_t end = (uint64_t)addr + size;
    uint64_t a = addr > lo ? addr : lo, b = end < hi ? end : hi;
    if (a >= b)
        return 0;
    if (a == addr && b == end)
        return n;
    int known;
    uint32_t k = count_starts(c, (uint32_t)a, (uint32_t)(b - a), &known);
    return known ? k : a == addr;
}

static void credit_ranges(kcpu *c, uint32_t addr, uint32_t size, uint32_t n)
{
    for (uint32_t i = 0; i < c->nranges; i++) {
        insn_range *r = &c->ranges[i];
        r->count += starts_in(c, addr, size, n, r->lo, r->hi);
    }
}

/* UC_HOOK_BLOCK: the only hook on the hot path.
 * The interrupt shadow of `sti` (SDM vol. 2, STI: "the processor responds
 * to the external interrupt after executing the next instruction"): an
 * interrupt pending when the block right after an sti starts waits for
 * that block, which TCG translates as one instruction (a TB translated
 * with HF_INHIBIT_IRQ ends after its first instruction).  kcpu_sti_hook
 * marks the address; a stop for the limit keeps the mark for the next run. */
void kcpu_block_hook(void *uc, uint64_t address, uint32_t size, kcpu *c)
{
    if (__builtin_expect(c->executed >= c->limit, 0)) {
        /* Run-ahead: the machine's loop at this boundary would fire no
         * event (clock < next event), not hit the time limit, and give
         * this CPU min(quantum, next event - clock) more: do that here and
         * go on as a new run would (the interrupt check, then the count). */
        uint64_t t;
        if (c->ahead_q && (t = c->executed + (uint64_t)*c->extra) < c->ahead_stop) {
            uint64_t b = c->ahead_cap - t < c->ahead_q ? c->ahead_cap - t : c->ahead_q;
            c->limit = c->executed + b;
            c->ahead_end = t + b;
            c->crossed++;
        } else {
            c->stop_reason = STOP_LIMIT;
            c->blk_count = 0;
            c->emu_stop(uc);
            return;
        }
    }
    uint32_t shadow = c->sti_shadow;
    c->sti_shadow = 0;
    if (__builtin_expect(c->irq_pending, 0)) {
        uint32_t eflags = 0;
        c->reg_read(uc, UC_X86_REG_EFLAGS, &eflags);
        if (eflags & EFLAGS_IF) {
            if (shadow == (uint32_t)address && shadow) {
                c->sti_shadows++;
            } else {
                c->stop_reason = STOP_IRQ;
                c->blk_count = 0;
                c->emu_stop(uc);
                return;
            }
        }
    }
    uint32_t a = (uint32_t)address, n;
    count_entry *e = &c->cache[(a ^ (a >> 10)) & (KCPU_CACHE - 1)];
    if (e->addr == a && e->size == size && e->gen == c->gen) {
        n = e->n;
    } else {
        int known;
        n = count_starts(c, a, size, &known);
        if (!known)
            c->unknown_blocks++;
        else
            e->addr = a, e->size = size, e->n = n, e->gen = c->gen;
    }
    c->blk_addr = (uint32_t)address;
    c->blk_size = size;
    c->blk_count = n;
    c->executed += n;
    if (c->nranges && (uint32_t)address < c->rng_hi && (uint64_t)address + size > c->rng_lo)
        credit_ranges(c, (uint32_t)address, size, n);
}

/* Take back the instructions of the current block from `eip` on: they did
 * not retire (the trap hit at eip, or hlt/int left eip just past itself). */
void kcpu_settle(kcpu *c, uint32_t eip)
{
    if (c->blk_count == 0)
        return;
    if (eip - c->blk_addr < c->blk_size) {
        int known;
        uint32_t rest = c->blk_addr + c->blk_size - eip;
        uint32_t n = count_starts(c, eip, rest, &known);
        if (n > c->blk_count)
            n = c->blk_count;
        c->executed -= n;
        for (uint32_t i = 0; n && i < c->nranges; i++) {
            insn_range *r = &c->ranges[i];
            uint32_t back = starts_in(c, eip, rest, n, r->lo, r->hi);
            r->count -= back <= r->count ? back : r->count;
        }
    }
    c->blk_count = 0;
}

/* UC_HOOK_INTR: every exception and `int n`.  Record it and stop. */
void kcpu_intr_hook(void *uc, uint32_t intno, kcpu *c)
{
    c->trap = (int32_t)intno;
    c->stop_reason = STOP_TRAP;
    /* `int n` (n >= 32: no exception has such a vector) leaves
     * old_exception alone (QEMU's raise_interrupt2 runs check_exception
     * only for exceptions), and it is -1 since every exception's stop
     * reset it: nothing to fix, and its error code is nobody's.  The
     * save/patch/restore copies the whole CPU state twice (~5.6 KB). */
    if (intno < 32 && c->old_exc_off >= 0 && c->ctx) {
        int32_t none = -1;
        c->ctx_save(uc, c->ctx);
        memcpy((char *)c->ctx + c->old_exc_off, &none, sizeof none);
        c->ctx_restore(uc, c->ctx);
    }
    c->emu_stop(uc);
}

/* One-address UC_HOOK_CODE on an `sti` (1 byte): the next instruction is
 * in its interrupt shadow (see kcpu_block_hook). */
void kcpu_sti_hook(void *uc, uint64_t address, uint32_t size, kcpu *c)
{
    (void)uc;
    c->sti_shadow = (uint32_t)address + size;
}

/* One-address UC_HOOK_CODE on an invlpg / mov cr3: count it. */
void kcpu_count_hook(void *uc, uint64_t address, uint32_t size, uint64_t *counter)
{
    (void)uc; (void)address; (void)size;
    (*counter)++;
}

static PyMethodDef native_methods[] = {{NULL, NULL, 0, NULL}};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "_native",
    "C hooks for kmaplab's emulated CPUs; reached through ctypes (vm/native.py).",
    -1, native_methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    return PyModule_Create(&native_module);
}

/* ---- Instruction tracing: the C side of vm/trace.py --------------------
 *
 * One `ktrace` per traced CPU, allocated and filled by vm/trace.py (ctypes;
 * its KTrace mirrors this layout field by field, tests/test_trace.py checks
 * the record layout by tracing known code).  The hooks are installed only
 * while tracing is on:
 *   ktrace_code_hook   UC_HOOK_CODE limited to one traced range [lo, hi):
 *                      an INSN record: global sequence number, this CPU's
 *                      instruction count before it, EIP, size, and the
 *                      registers BEFORE the instruction.
 *   ktrace_exit_hook   UC_HOOK_CODE on the first address after a range (a
 *                      block falling through out of it): a STATE record,
 *                      the registers after the last traced instruction.
 *   ktrace_block_hook  UC_HOOK_BLOCK: a block starting outside every range
 *                      right after a traced instruction gets a STATE record.
 *   ktrace_point_hook  one-address UC_HOOK_CODE on a watched label: a POINT
 *                      record with the registers (kmap slots, TLB flushes).
 *   ktrace_mem_hook    UC_HOOK_MEM_READ|WRITE: the access (physical address,
 *                      size, value) attached to the current INSN record.
 *   ktrace_mark        called from Python during a run (a Python hook made
 *                      a kernel event): a MARK record at the instruction
 *                      about to run, so the event gets its exact place.
 * Rules
 *  - The hooks read guest state and never write it nor stop the emulation:
 *    tracing does not change the run.
 *  - The global sequence number of an instruction is the number of guest
 *    instructions all CPUs retired before it (CPUs run one at a time), so
 *    it does not depend on what is traced.
 *  - A full buffer drops records and counts them; vm/trace.py sizes the
 *    buffers from the run's budget so that this does not happen.
 */
#define KT_NREGS 11
#define KT_MAX_RANGES 64
#define KT_MAX_CPUS 32
#define KT_NONE 0xffffffffu
#define KT_MEM_READ 16          /* UC_MEM_READ */

enum kt_kind { KT_INSN = 0, KT_STATE = 1, KT_POINT = 2, KT_MARK = 3 };

typedef int (*uc_reg_batch_fn)(void *uc, const int *regs, void **vals, int count);

typedef struct {
    uint64_t seq;           /* instructions retired machine-wide before this one */
    uint64_t icount;        /* instructions retired on this CPU before this one */
    uint32_t kind;          /* enum kt_kind */
    uint32_t eip;
    uint32_t size;          /* instruction bytes (INSN) */
    uint32_t nmem;          /* memory accesses, from mem_first in the mem buffer */
    uint32_t mem_first;
    uint32_t regs[KT_NREGS];/* before the instruction (INSN, POINT), now (STATE) */
} kt_rec;

typedef struct {
    uint32_t rec;           /* index of its INSN record */
    uint32_t type;          /* 16 read, 17 write (uc_mem_type) */
    uint32_t pa;            /* physical address (paging on: hooks see physical) */
    uint32_t size;
    uint64_t value;         /* read: the bytes in RAM before the read */
} kt_mem;

typedef struct {
    kcpu *cpu;
    uc_reg_batch_fn reg_read_batch;
    uint32_t enabled;       /* 0: every hook returns at once */
    uint32_t open;          /* the last record is an INSN still waiting for its after-state */
    uint32_t cur;           /* INSN record that memory accesses attach to, or KT_NONE */
    uint32_t nothers;
    const uint64_t *others[KT_MAX_CPUS];  /* the other CPUs' `executed` */
    int32_t regids[KT_NREGS];
    uint32_t pad;
    kt_rec *recs;
    uint32_t nrec, cap;
    kt_mem *mems;
    uint32_t nmem, mcap;
    uint64_t dropped;       /* records or accesses lost to a full buffer */
    const uint8_t *ram;
    uint64_t ram_size;
    uint64_t seq_lo, seq_hi;/* only INSN records with seq in [lo, hi) */
    uint32_t nranges;
    uint32_t pad2;
    uint32_t lo[KT_MAX_RANGES], hi[KT_MAX_RANGES];
} ktrace;

/* This CPU's retired count before the instruction at `addr` of the current
 * block (the block hook credited the whole block on entry). */
static uint64_t kt_icount(const kcpu *c, uint32_t addr)
{
    uint64_t before = c->executed - c->blk_count;
    uint32_t off = addr - c->blk_addr;
    if (off && off < c->blk_size) {
        int known;
        uint32_t n = count_starts(c, c->blk_addr, off, &known);
        if (known)
            before += n < c->blk_count ? n : c->blk_count;
    }
    return before;
}

static uint64_t kt_others(const ktrace *t)
{
    uint64_t s = 0;
    for (uint32_t i = 0; i < t->nothers; i++)
        s += *t->others[i];
    return s;
}

static kt_rec *kt_append(ktrace *t, uint32_t kind, uint32_t eip, uint64_t icount)
{
    if (t->nrec >= t->cap) {
        t->dropped++;
        return NULL;
    }
    kt_rec *r = &t->recs[t->nrec];
    r->seq = kt_others(t) + icount;
    r->icount = icount;
    r->kind = kind;
    r->eip = eip;
    r->size = 0;
    r->nmem = 0;
    r->mem_first = t->nmem;
    return r;
}

static void kt_regs_zero(kt_rec *r)
{
    memset(r->regs, 0, sizeof r->regs);
}

static void kt_regs(void *uc, ktrace *t, kt_rec *r)
{
    void *ptrs[KT_NREGS];
    for (int i = 0; i < KT_NREGS; i++) {
        r->regs[i] = 0;             /* segment registers are read as 16 bits */
        ptrs[i] = &r->regs[i];
    }
    t->reg_read_batch(uc, t->regids, ptrs, KT_NREGS);
}

static int kt_live(const ktrace *t)
{
    return t->enabled && t->cpu->stop_reason == STOP_NONE;
}

static void kt_close(void *uc, ktrace *t, uint32_t eip, uint64_t icount)
{
    t->cur = KT_NONE;
    if (!t->open)
        return;
    t->open = 0;
    kt_rec *r = kt_append(t, KT_STATE, eip, icount);
    if (r) {
        kt_regs(uc, t, r);
        t->nrec++;
    }
}

void ktrace_code_hook(void *uc, uint64_t address, uint32_t size, ktrace *t)
{
    if (!kt_live(t))
        return;
    uint64_t ic = kt_icount(t->cpu, (uint32_t)address);
    t->cur = KT_NONE;
    t->open = 0;
    kt_rec *r = kt_append(t, KT_INSN, (uint32_t)address, ic);
    if (!r)
        return;
    if (r->seq < t->seq_lo || r->seq >= t->seq_hi)
        return;
    r->size = size;
    kt_regs(uc, t, r);
    t->cur = t->nrec++;
    t->open = 1;
}

void ktrace_exit_hook(void *uc, uint64_t address, uint32_t size, ktrace *t)
{
    (void)size;
    if (kt_live(t))
        kt_close(uc, t, (uint32_t)address, kt_icount(t->cpu, (uint32_t)address));
}

void ktrace_block_hook(void *uc, uint64_t address, uint32_t size, ktrace *t)
{
    (void)size;
    t->cur = KT_NONE;
    if (!t->open || !kt_live(t))
        return;
    uint32_t a = (uint32_t)address;
    for (uint32_t i = 0; i < t->nranges; i++)
        if (a >= t->lo[i] && a < t->hi[i]) {
            t->open = 0;            /* the next INSN record holds the after-state */
            return;
        }
    kt_close(uc, t, a, kt_icount(t->cpu, a));
}

void ktrace_point_hook(void *uc, uint64_t address, uint32_t size, ktrace *t)
{
    (void)size;
    if (t->cpu->stop_reason != STOP_NONE)
        return;
    kt_rec *r = kt_append(t, KT_POINT, (uint32_t)address, kt_icount(t->cpu, (uint32_t)address));
    if (r) {
        kt_regs(uc, t, r);
        t->nrec++;
    }
}

void ktrace_mem_hook(void *uc, int type, uint64_t address, int size, int64_t value, ktrace *t)
{
    (void)uc;
    if (t->cur == KT_NONE || size <= 0 || size > 8)
        return;
    if (t->nmem >= t->mcap) {
        t->dropped++;
        return;
    }
    kt_mem *m = &t->mems[t->nmem];
    m->rec = t->cur;
    m->type = (uint32_t)type;
    m->pa = (uint32_t)address;
    m->size = (uint32_t)size;
    m->value = (uint64_t)value;
    if (type == KT_MEM_READ) {
        m->value = 0;
        if (address + (uint64_t)size <= t->ram_size)
            memcpy(&m->value, t->ram + address, (size_t)size);   /* little-endian host */
    }
    t->recs[t->cur].nmem++;
    t->nmem++;
}

/* A MARK record for the instruction at `eip` of the current block (from a
 * Python hook, mid-run).  Returns its index, or -1 if the buffer is full. */
int64_t ktrace_mark(ktrace *t, uint32_t eip)
{
    kt_rec *r = kt_append(t, KT_MARK, eip, kt_icount(t->cpu, eip));
    if (!r)
        return -1;
    kt_regs_zero(r);
    return (int64_t)t->nrec++;
}
