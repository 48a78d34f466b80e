/*
 * vm/_debug.c: the debugger's hooks (vm/debug.py), in C so that a machine
 * under gdb runs at Unicorn speed between stops.
 *
 * One `dbg_state` per machine (breakpoints, watchpoints, which CPUs single-
 * step) and one `dbg_cpu` per CPU (the user data of its hooks).  vm/debug.py
 * mirrors both layouts with ctypes.
 *
 * Invariants
 *  - dbg_code_hook is a UC_HOOK_CODE over the whole address space, added
 *    before the CPU translates anything under the debugger (vm/debug.py
 *    flushes the translation cache once when it attaches).  It calls back
 *    into Python only before an instruction at a breakpoint address, or on
 *    a CPU whose step bit is set.  It never stops the emulation, never
 *    changes a register and never ends a block: the translated blocks, the
 *    instruction counts, the quanta and the interrupt windows are those of
 *    a run without the debugger, so the schedule is the same.
 *  - dbg_mem_hook (UC_HOOK_MEM_READ|WRITE over the whole address space, only
 *    while a watchpoint exists) compares PHYSICAL ranges (vm/debug.py
 *    translates the watched virtual address once, when it is set): a watch
 *    on pkmap_count[n] sees a write through any mapping of that word.  A
 *    hit is recorded for the CPU and its step bit set: the stop is reported
 *    before its next instruction, after the access (as an x86 data
 *    breakpoint does).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define DBG_MAX_BP 64
#define DBG_MAX_WP 16
#define DBG_MAX_CPUS 32

#define UC_MEM_READ 16
#define UC_MEM_WRITE 17

typedef void (*dbg_cb)(void *uc, uint32_t cpu, uint32_t addr);

typedef struct {
    uint32_t lo, hi;        /* physical [lo, hi) */
    uint32_t kind;          /* bit 0: writes, bit 1: reads */
    uint32_t va;            /* the address gdb set it on (reported back) */
} dbg_watch;

typedef struct {
    uint32_t nbp;
    uint32_t step_mask;     /* bit i: call back before CPU i's next instruction */
    uint32_t bp[DBG_MAX_BP];
    uint32_t nwp;
    uint32_t pad;
    dbg_watch wp[DBG_MAX_WP];
    dbg_cb cb;
    uint32_t hit_va[DBG_MAX_CPUS];   /* last watchpoint hit per CPU (its va) */
    uint32_t hit_kind[DBG_MAX_CPUS]; /* 0 none, 1 write, 2 read */
} dbg_state;

typedef struct {
    dbg_state *s;
    uint32_t cpu;
    uint32_t pad;
} dbg_cpu;

void dbg_code_hook(void *uc, uint64_t address, uint32_t size, dbg_cpu *c)
{
    dbg_state *s = c->s;
    (void)size;
    if (s->step_mask & (1u << c->cpu)) {
        s->cb(uc, c->cpu, (uint32_t)address);
        return;
    }
    for (uint32_t i = 0; i < s->nbp; i++) {
        if (s->bp[i] == (uint32_t)address) {
            s->cb(uc, c->cpu, (uint32_t)address);
            return;
        }
    }
}

/* Unicorn 2.1 gives memory hooks the PHYSICAL address of an access when
 * paging is on (tests/test_gdb.py checks a watchpoint through it), so the
 * watched ranges are compared as they are: every mapping of a word hits. */
void dbg_mem_hook(void *uc, int type, uint64_t address, int size, int64_t value, dbg_cpu *c)
{
    dbg_state *s = c->s;
    uint32_t kind = type == UC_MEM_WRITE ? 1 : type == UC_MEM_READ ? 2 : 0;
    (void)uc;
    (void)value;
    if (!kind)
        return;
    uint64_t lo = address, hi = address + (uint32_t)size;
    for (uint32_t i = 0; i < s->nwp; i++) {
        const dbg_watch *w = &s->wp[i];
        if ((w->kind & kind) && lo < w->hi && w->lo < hi) {
            s->hit_va[c->cpu] = w->va;
            s->hit_kind[c->cpu] = kind;
            s->step_mask |= 1u << c->cpu;
            return;
        }
    }
}

static PyMethodDef debug_methods[] = {{NULL, NULL, 0, NULL}};

static struct PyModuleDef debug_module = {
    PyModuleDef_HEAD_INIT, "_debug",
    "The debugger's Unicorn hooks (see vm/debug.py).", -1, debug_methods
};

PyMODINIT_FUNC PyInit__debug(void)
{
    return PyModule_Create(&debug_module);
}
