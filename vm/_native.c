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
 *  - A `rep` string instruction is one block per iteration in TCG: each
 *    iteration counts as one instruction, as QEMU's icount does.
 *  - Emulation stops only at block boundaries (limit reached, interrupt
 *    window open) or at a trap.  Both are deterministic.
 *  - The Unicorn #1883 fix: after every trap, `old_exception` in the CPU
 *    state is reset to -1 through a context save/patch/restore, so the next
 *    fault arrives as #PF and not as #DF (the offset is found at start-up).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define KCPU_MAX_REGIONS 8
#define KCPU_MAX_RANGES 32
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
    uint64_t unknown_blocks;/* blocks outside every region (counted as 1 insn) */
    uc_stop_fn emu_stop;
    uc_ctx_fn ctx_save;
    uc_ctx_fn ctx_restore;
    uc_reg_read_fn reg_read;
    void *ctx;              /* scratch uc_context for the #1883 fix */
    code_region regions[KCPU_MAX_REGIONS];
    uint32_t nranges;
    uint32_t pad;
    insn_range ranges[KCPU_MAX_RANGES];
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
    return 1;
}

static void credit_ranges(kcpu *c, uint32_t addr, uint32_t size, uint32_t n)
{
    for (uint32_t i = 0; i < c->nranges; i++) {
        insn_range *r = &c->ranges[i];
        if (addr >= r->lo && addr < r->hi) {
            if (addr + size <= r->hi) {
                r->count += n;
            } else {
                int known;
                r->count += count_starts(c, addr, r->hi - addr, &known);
            }
        }
    }
}

/* UC_HOOK_BLOCK: the only hook on the hot path. */
void kcpu_block_hook(void *uc, uint64_t address, uint32_t size, kcpu *c)
{
    if (c->executed >= c->limit) {
        c->stop_reason = STOP_LIMIT;
        c->blk_count = 0;
        c->emu_stop(uc);
        return;
    }
    if (c->irq_pending) {
        uint32_t eflags = 0;
        c->reg_read(uc, UC_X86_REG_EFLAGS, &eflags);
        if (eflags & EFLAGS_IF) {
            c->stop_reason = STOP_IRQ;
            c->blk_count = 0;
            c->emu_stop(uc);
            return;
        }
    }
    int known;
    uint32_t n = count_starts(c, (uint32_t)address, size, &known);
    if (!known)
        c->unknown_blocks++;
    c->blk_addr = (uint32_t)address;
    c->blk_size = size;
    c->blk_count = n;
    c->executed += n;
    if (c->nranges)
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
        if (!known)
            n = 0;
        if (n > c->blk_count)
            n = c->blk_count;
        c->executed -= n;
        for (uint32_t i = 0; i < c->nranges; i++) {
            insn_range *r = &c->ranges[i];
            if (c->blk_addr >= r->lo && c->blk_addr < r->hi)
                r->count -= n <= r->count ? n : r->count;
        }
    }
    c->blk_count = 0;
}

/* UC_HOOK_INTR: every exception and `int n`.  Record it and stop. */
void kcpu_intr_hook(void *uc, uint32_t intno, kcpu *c)
{
    c->trap = (int32_t)intno;
    c->stop_reason = STOP_TRAP;
    if (c->old_exc_off >= 0 && c->ctx) {
        int32_t none = -1;
        c->ctx_save(uc, c->ctx);
        memcpy((char *)c->ctx + c->old_exc_off, &none, sizeof none);
        c->ctx_restore(uc, c->ctx);
    }
    c->emu_stop(uc);
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
