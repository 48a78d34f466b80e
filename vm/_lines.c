/*
 * vm/_lines.c: cache-line transfers between CPUs on chosen physical ranges
 * (vm/lines.py drives it).
 *
 * A MESI-like directory per cache line of the watched ranges, shared by all
 * CPUs: the CPU holding the line Modified (owner), and the CPUs holding it
 * Shared (a bit mask).  Every guest load and store to a watched range comes
 * here (UC_HOOK_MEM_READ/WRITE limited to that range, physical addresses):
 *   load by c:  c holds it: nothing.  Another CPU holds it Modified: the
 *               line moves (a HITM snoop): one transfer; both share it.
 *               Otherwise c adds itself to the sharers (from memory).
 *   store by c: c owns it: nothing.  Another CPU holds it (M or S): a
 *               read-for-ownership invalidates them: one transfer (unless
 *               c's own load just now moved it: a locked read-modify-write
 *               is one RFO on a P6).  c becomes the owner.
 * The first touch of a line (held by nobody) is not a transfer: it comes
 * from memory.  Lines are never evicted (the watched words are few and
 * hot).  Transfers are counted per group (the range's group) and per
 * receiving CPU.
 *
 * Invariants: owner and sharers describe exactly the accesses seen so far;
 * the hooks only read guest state and never stop the emulation.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KL_MAX_RANGES 32
#define KL_MAX_GROUPS 16
#define KL_MAX_CPUS 32
#define MEM_WRITE 17

typedef struct {
    uint32_t lo, hi;        /* physical [lo, hi) */
    uint32_t group;
    uint32_t first;         /* index of its first line in the state arrays */
} kl_range;

typedef struct {
    uint32_t owner;         /* cpu + 1 holding it Modified, 0 none */
    uint32_t sharers;       /* bit per CPU holding it Shared */
    uint32_t moved_by_load; /* cpu + 1 whose load just moved it here, 0 none */
} kl_line;

typedef struct {
    /* vm/lines.py KLines mirrors this head */
    uint64_t transfers[KL_MAX_GROUPS][KL_MAX_CPUS];
    uint64_t accesses[KL_MAX_GROUPS];
    uint32_t nranges, line_shift, nlines, pad;
    kl_range ranges[KL_MAX_RANGES];
    kl_line *lines;
} klines;

typedef struct {
    klines *l;
    uint32_t cpu;
    uint32_t range;
} klines_site;

void klines_mem_hook(void *uc, int type, uint64_t address, int size, int64_t value,
                     klines_site *s)
{
    (void)uc; (void)size; (void)value;
    klines *l = s->l;
    kl_range *r = &l->ranges[s->range];
    uint32_t pa = (uint32_t)address;
    if (pa < r->lo || pa >= r->hi)
        return;
    uint32_t idx = r->first + ((pa >> l->line_shift) - (r->lo >> l->line_shift));
    kl_line *ln = &l->lines[idx];
    uint32_t me = s->cpu + 1, bit = 1u << s->cpu;
    l->accesses[r->group]++;
    if (type == MEM_WRITE) {
        if (ln->owner == me)
            return;
        int others = (ln->owner && ln->owner != me) || (ln->sharers & ~bit);
        if (others && ln->moved_by_load != me)
            l->transfers[r->group][s->cpu]++;
        ln->owner = me;
        ln->sharers = 0;
        ln->moved_by_load = 0;
        return;
    }
    if (ln->owner == me || (ln->sharers & bit)) {
        ln->moved_by_load = 0;
        return;
    }
    if (ln->owner) {
        l->transfers[r->group][s->cpu]++;
        ln->sharers = (1u << (ln->owner - 1)) | bit;
        ln->owner = 0;
        ln->moved_by_load = me;
        return;
    }
    ln->sharers |= bit;
    ln->moved_by_load = 0;
}

klines *klines_new(uint32_t line_shift)
{
    klines *l = calloc(1, sizeof *l);
    if (l)
        l->line_shift = line_shift;
    return l;
}

/* Add a watched range; returns its index or -1. */
int klines_add(klines *l, uint32_t lo, uint32_t hi, uint32_t group)
{
    if (l->nranges >= KL_MAX_RANGES || group >= KL_MAX_GROUPS || hi <= lo)
        return -1;
    uint32_t n = ((hi - 1) >> l->line_shift) - (lo >> l->line_shift) + 1;
    kl_line *lines = realloc(l->lines, (size_t)(l->nlines + n) * sizeof(kl_line));
    if (!lines)
        return -1;
    memset(lines + l->nlines, 0, (size_t)n * sizeof(kl_line));
    l->lines = lines;
    kl_range *r = &l->ranges[l->nranges];
    r->lo = lo;
    r->hi = hi;
    r->group = group;
    r->first = l->nlines;
    l->nlines += n;
    return (int)l->nranges++;
}

void klines_free(klines *l)
{
    if (l) {
        free(l->lines);
        free(l);
    }
}

static PyMethodDef lines_methods[] = {{NULL, NULL, 0, NULL}};

static struct PyModuleDef lines_module = {
    PyModuleDef_HEAD_INIT, "_lines",
    "Cache-line transfer counting; reached through ctypes (vm/lines.py).",
    -1, lines_methods,
};

PyMODINIT_FUNC PyInit__lines(void)
{
    return PyModule_Create(&lines_module);
}
