/*
 * vm/_tlb.c: the modelled TLB of boot option tlb=p3 (vm/tlb.py drives it).
 *
 * Unicorn runs in UC_TLB_VIRTUAL mode: every miss of QEMU's own soft TLB
 * calls ktlb_fill_hook (UC_HOOK_TLB_FILL).  Behind QEMU's soft TLB sits the
 * model: per CPU an ITLB and a DTLB for 4 KiB pages and one each for 4 MiB
 * pages, with a capacity and ways (the Pentium III's by default, vm/tlb.py),
 * round-robin replacement per set, global entries.  A fill that the model
 * holds is served from the model (no walk, not a miss); any other fill walks
 * the two-level page tables in guest RAM exactly as QEMU's walker does
 * (qemu/target/i386/excp_helper.c handle_mmu_fault, non-PAE): A bit of the
 * PDE on the way, A (and D on a write) of the final entry after the checks,
 * U/S and R/W with CR0.WP, CR2 and the error code on a fault.
 *
 * Invariants
 *  - QEMU's soft TLB holds a subset of the model: every entry QEMU has was
 *    filled through this hook from a model entry, and whenever the model
 *    drops an entry QEMU drops it too: CR3 loads, invlpg and CR4 writes
 *    flush QEMU's TLB by themselves (cpu_x86_update_cr3/cr4, helper_invlpg);
 *    an eviction calls tlb_flush_page (4 KiB) or tlb_flush (4 MiB: QEMU
 *    keeps 4 KiB pieces of it).  So a translation the model dropped is never
 *    used again without a walk.
 *  - QEMU gets only the permissions the model grants for the kind of
 *    access it asked for (a fetch fill gets EXEC, plus READ/WRITE only if
 *    the DTLB holds the page too), so an ITLB miss cannot hide behind a
 *    DTLB fill and the other way round.  WRITE is granted only when the
 *    entry's D bit is set, so the first write walks again and sets D.
 *  - The model sees CR3 loads, CR4 writes and invlpg through one-address
 *    code hooks on those instructions of the kernel image (they run before
 *    the instruction).  Nothing else changes CR3/CR4 while the guest runs.
 *  - Replacement does not depend on hits (QEMU's hits are invisible here):
 *    round robin per set, so miss counts are exact for that policy.
 *  - Counts are measurements of the model: misses[I/D][kernel/user page].
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PTE_P 0x001u
#define PTE_W 0x002u
#define PTE_U 0x004u
#define PTE_A 0x020u
#define PTE_D 0x040u
#define PTE_PS 0x080u
#define PTE_G 0x100u
#define CR4_PSE 0x10u
#define CR4_PAE 0x20u
#define CR4_PGE 0x80u
#define PF_P 1u
#define PF_W 2u
#define PF_U 4u
#define MEM_READ 16
#define MEM_WRITE 17
#define MEM_FETCH 18
#define PROT_READ 1u
#define PROT_WRITE 2u
#define PROT_EXEC 4u
#define VEC_PF 14
#define STOP_TRAP 3

enum { T_I4K = 0, T_D4K = 1, T_I4M = 2, T_D4M = 3, T_N = 4 };

typedef int (*uc_reg_fn)(void *uc, int regid, void *value);
typedef void (*flush_page_fn)(void *cpu, uint64_t addr);
typedef void (*flush_all_fn)(void *cpu);

typedef struct {
    uint64_t paddr;
    uint32_t perms;
} uc_tlb_entry;

typedef struct {
    uint32_t key;           /* page number + 1; 0 = empty */
    uint32_t pte;           /* frame | P | W | U (PDE & PTE combined) | D | G */
} tent;

typedef struct {
    uint32_t entries;       /* 0 = unlimited */
    uint32_t ways;
    uint32_t sets;
    uint32_t shift;         /* 12 or 22 */
    tent *e;                /* sets*ways, or one per page number when unlimited */
    uint32_t *next;         /* per set: round-robin victim */
    uint32_t *log;          /* unlimited: page numbers filled, for flushes */
    uint32_t nlog, caplog;
} tarray;

typedef struct {
    /* -- counters (vm/tlb.py KTlb mirrors this header) -- */
    uint64_t misses[2][2];  /* [0 ITLB, 1 DTLB][0 supervisor page, 1 user page] */
    uint64_t walk_faults;   /* walks that ended in #PF */
    uint64_t rewalks;       /* walks through a held entry: D clear on a write, or a permission miss */
    uint64_t evictions;
    uint64_t cr3_loads;
    uint64_t full_flushes;  /* CR4 writes toggling PGE/PSE/PAE: everything goes, globals too */
    uint64_t invlpgs;
    uint64_t global_refills;/* misses on pages a full flush dropped, not walked since */
    uint64_t refills;       /* QEMU soft-TLB fills served by the model (not misses) */
    uint64_t qemu_flush_page, qemu_flush_all;
    uint32_t fault_cr2, fault_err;
    /* -- configuration and state -- */
    int32_t *trap;          /* the kcpu's trap and stop_reason (vm/_native.c) */
    int32_t *stop_reason;
    uint8_t *ram;
    uint64_t ram_size;
    void *cpu;              /* QEMU's CPUState of this instance */
    uc_reg_fn reg_read, reg_write;
    flush_page_fn flush_page;
    flush_all_fn flush_all;
    int32_t reg_cs, reg_cr0, reg_cr2, reg_cr3, reg_cr4;
    uint32_t pad;
    tarray t[T_N];
    uint32_t *dropped;      /* keys ((pn << 2) | array) full flushes dropped, not walked since */
    uint32_t ndropped, capdropped;
} ktlb;

static int t_init(tarray *a, uint32_t entries, uint32_t ways, uint32_t shift)
{
    memset(a, 0, sizeof *a);
    a->shift = shift;
    a->entries = entries;
    if (entries == 0) {                     /* unlimited */
        a->ways = 0;
        a->sets = 0;
        a->e = calloc((size_t)1 << (32 - shift), sizeof(tent));
        a->caplog = 1024;
        a->log = malloc(a->caplog * sizeof(uint32_t));
        return a->e && a->log ? 0 : -1;
    }
    if (ways == 0 || ways > entries || entries % ways)
        return -1;
    a->ways = ways;
    a->sets = entries / ways;
    a->e = calloc(entries, sizeof(tent));
    a->next = calloc(a->sets, sizeof(uint32_t));
    return a->e && a->next ? 0 : -1;
}

static void t_free(tarray *a)
{
    free(a->e);
    free(a->next);
    free(a->log);
}

static tent *t_find(tarray *a, uint32_t pn)
{
    if (!a->ways) {
        tent *e = &a->e[pn];
        return e->key ? e : NULL;
    }
    tent *e = &a->e[(pn % a->sets) * a->ways];
    for (uint32_t w = 0; w < a->ways; w++)
        if (e[w].key == pn + 1)
            return &e[w];
    return NULL;
}

/* Put (pn, pte) in; returns the key of the entry it evicted, or 0. */
static uint32_t t_insert(tarray *a, uint32_t pn, uint32_t pte)
{
    if (!a->ways) {
        tent *e = &a->e[pn];
        if (!e->key) {
            if (a->nlog == a->caplog) {
                uint32_t *n = realloc(a->log, 2 * a->caplog * sizeof(uint32_t));
                if (!n)
                    abort();
                a->log = n;
                a->caplog *= 2;
            }
            a->log[a->nlog++] = pn;
        }
        e->key = pn + 1;
        e->pte = pte;
        return 0;
    }
    uint32_t set = pn % a->sets;
    tent *e = &a->e[set * a->ways];
    for (uint32_t w = 0; w < a->ways; w++)
        if (e[w].key == pn + 1) {
            e[w].pte = pte;
            return 0;
        }
    for (uint32_t w = 0; w < a->ways; w++)
        if (!e[w].key) {
            e[w].key = pn + 1;
            e[w].pte = pte;
            return 0;
        }
    uint32_t v = a->next[set];
    a->next[set] = (v + 1) % a->ways;
    uint32_t old = e[v].key;
    e[v].key = pn + 1;
    e[v].pte = pte;
    return old;
}

#define MAX_DROPPED 4096

/* Remember a key a full flush dropped (once; at most MAX_DROPPED). */
static void note_dropped(ktlb *t, uint32_t key)
{
    for (uint32_t i = 0; i < t->ndropped; i++)
        if (t->dropped[i] == key)
            return;
    if (t->ndropped >= MAX_DROPPED)
        return;
    if (t->ndropped == t->capdropped) {
        uint32_t cap = t->capdropped ? 2 * t->capdropped : 256;
        uint32_t *n = realloc(t->dropped, cap * sizeof(uint32_t));
        if (!n)
            return;
        t->dropped = n;
        t->capdropped = cap;
    }
    t->dropped[t->ndropped++] = key;
}

/* Drop entries: all of them (keep_global 0) or the non-global ones.
 * With `note`, remember what went (for global_refills). */
static void t_flush(ktlb *t, int which, int keep_global, int note)
{
    tarray *a = &t->t[which];
    if (!a->ways) {
        uint32_t k = 0;
        for (uint32_t i = 0; i < a->nlog; i++) {
            tent *e = &a->e[a->log[i]];
            if (!e->key)
                continue;
            if (keep_global && (e->pte & PTE_G)) {
                a->log[k++] = a->log[i];
                continue;
            }
            if (note)
                note_dropped(t, ((e->key - 1) << 2) | (uint32_t)which);
            e->key = 0;
        }
        a->nlog = k;
        return;
    }
    for (uint32_t i = 0; i < a->entries; i++) {
        tent *e = &a->e[i];
        if (!e->key || (keep_global && (e->pte & PTE_G)))
            continue;
        if (note)
            note_dropped(t, ((e->key - 1) << 2) | (uint32_t)which);
        e->key = 0;
    }
}

static int take_dropped(ktlb *t, uint32_t key)
{
    for (uint32_t i = 0; i < t->ndropped; i++)
        if (t->dropped[i] == key) {
            t->dropped[i] = t->dropped[--t->ndropped];
            return 1;
        }
    return 0;
}

static inline uint32_t rd32(ktlb *t, uint32_t pa)
{
    uint32_t v = 0;
    if ((uint64_t)pa + 4 <= t->ram_size)
        memcpy(&v, t->ram + pa, 4);
    return v;
}

static inline void wr32(ktlb *t, uint32_t pa, uint32_t v)
{
    if ((uint64_t)pa + 4 <= t->ram_size)
        memcpy(t->ram + pa, &v, 4);
}

static inline int allowed(uint32_t pte, int user, int write)
{
    /* CR0.WP is always set on this machine (vm/cpu.py boot) */
    if (user && !(pte & PTE_U))
        return 0;
    if (write && !(pte & PTE_W))
        return 0;
    return 1;
}

static inline uint64_t frame_of(const tent *e, int large, uint32_t va)
{
    if (large)
        return (uint64_t)((e->pte & 0xFFC00000u) | (va & 0x003FF000u));
    return (uint64_t)(e->pte & 0xFFFFF000u);
}

/* The entry for va in the I (0) or D (1) side, 4 KiB first. */
static tent *lookup(ktlb *t, int side, uint32_t va, int *large)
{
    tent *e = t_find(&t->t[side], va >> 12);
    *large = 0;
    if (!e) {
        e = t_find(&t->t[side + 2], va >> 22);
        *large = e != NULL;
    }
    return e;
}

/* The permissions QEMU may cache for va: what the kind asked for, plus
 * what the other side of the model already holds. */
static uint32_t grant(ktlb *t, uint32_t va, int fetch, int user, uint32_t pte, uint64_t frame)
{
    uint32_t perms = 0;
    int large;
    if (fetch) {
        perms |= PROT_EXEC;
        tent *d = lookup(t, 1, va, &large);
        if (d && allowed(d->pte, user, 0) && frame_of(d, large, va) == frame) {
            perms |= PROT_READ;
            if (allowed(d->pte, user, 1) && (d->pte & PTE_D))
                perms |= PROT_WRITE;
        }
    } else {
        perms |= PROT_READ;
        if (allowed(pte, user, 1) && (pte & PTE_D))
            perms |= PROT_WRITE;
        tent *i = lookup(t, 0, va, &large);
        if (i && allowed(i->pte, user, 0) && frame_of(i, large, va) == frame)
            perms |= PROT_EXEC;
    }
    return perms;
}

static void evicted(ktlb *t, int which, uint32_t key)
{
    if (!key)
        return;
    t->evictions++;
    if (which < T_I4M) {
        t->qemu_flush_page++;
        t->flush_page(t->cpu, (uint64_t)(key - 1) << 12);
    } else {
        t->qemu_flush_all++;
        t->flush_all(t->cpu);
    }
}

static bool fault(ktlb *t, void *uc, uint32_t va, uint32_t err)
{
    t->walk_faults++;
    t->fault_cr2 = va;
    t->fault_err = err;
    uint32_t cr2 = va;
    t->reg_write(uc, t->reg_cr2, &cr2);
    *t->trap = VEC_PF;
    *t->stop_reason = STOP_TRAP;
    return false;
}

/* UC_HOOK_TLB_FILL: QEMU's soft TLB missed on `address`. */
bool ktlb_fill_hook(void *uc, uint64_t address, int type, uc_tlb_entry *out, ktlb *t)
{
    uint32_t va = (uint32_t)address & 0xFFFFF000u;
    int fetch = type == MEM_FETCH, write = type == MEM_WRITE;
    int side = fetch ? 0 : 1;
    uint32_t cs = 0;
    t->reg_read(uc, t->reg_cs, &cs);
    int user = (cs & 3) == 3;
    int large;
    tent *e = lookup(t, side, va, &large);
    if (e) {
        if (allowed(e->pte, user, write) && (!write || (e->pte & PTE_D))) {
            t->refills++;
            out->paddr = frame_of(e, large, va);
            out->perms = grant(t, va, fetch, user, e->pte, out->paddr);
            return true;
        }
        /* D clear on a write, or not allowed: the entry goes (a #PF would
         * invalidate it too, SDM 4.10.4.1) and the walk decides.  QEMU
         * may hold the old translation under another MMU index. */
        t->rewalks++;
        e->key = 0;
        t->qemu_flush_page++;
        t->flush_page(t->cpu, va);
        if (large)
            t->qemu_flush_all++, t->flush_all(t->cpu);
    }
    /* The walk (non-PAE), as handle_mmu_fault. */
    uint32_t cr3 = 0, cr4 = 0;
    t->reg_read(uc, t->reg_cr3, &cr3);
    t->reg_read(uc, t->reg_cr4, &cr4);
    uint32_t err_wu = (write ? PF_W : 0) | (user ? PF_U : 0);
    uint32_t pde_pa = (cr3 & 0xFFFFF000u) + ((va >> 20) & 0xFFCu);
    uint32_t pde = rd32(t, pde_pa);
    if (!(pde & PTE_P))
        return fault(t, uc, (uint32_t)address, err_wu);
    uint32_t ent, ent_pa, flags;
    int is_large = (pde & PTE_PS) && (cr4 & CR4_PSE);
    if (is_large) {
        ent = pde;
        ent_pa = pde_pa;
        flags = pde & (PTE_W | PTE_U);
    } else {
        if (!(pde & PTE_A)) {
            pde |= PTE_A;
            wr32(t, pde_pa, pde);
        }
        ent_pa = (pde & 0xFFFFF000u) + ((va >> 10) & 0xFFCu);
        ent = rd32(t, ent_pa);
        if (!(ent & PTE_P))
            return fault(t, uc, (uint32_t)address, err_wu);
        flags = pde & ent & (PTE_W | PTE_U);
    }
    if (!allowed(flags, user, write))
        return fault(t, uc, (uint32_t)address, err_wu | PF_P);
    if (!(ent & PTE_A) || (write && !(ent & PTE_D))) {
        ent |= PTE_A | (write ? PTE_D : 0);
        wr32(t, ent_pa, ent);
    }
    uint32_t g = (ent & PTE_G) && (cr4 & CR4_PGE) ? PTE_G : 0;
    uint32_t pte = (ent & (is_large ? 0xFFC00000u : 0xFFFFF000u)) | PTE_P | flags
                   | (ent & PTE_D) | g;
    int which = side + (is_large ? 2 : 0);
    uint32_t pn = is_large ? va >> 22 : va >> 12;
    if (!e)
        t->misses[side][(flags & PTE_U) ? 1 : 0]++;
    if (t->ndropped && take_dropped(t, (pn << 2) | (uint32_t)which))
        t->global_refills++;
    evicted(t, which, t_insert(&t->t[which], pn, pte));
    tent tmp = {pn + 1, pte};
    out->paddr = frame_of(&tmp, is_large, va);
    out->perms = grant(t, va, fetch, user, pte, out->paddr);
    return true;
}

/* A CR3 load (one-address code hook on `mov cr3, r32`): the non-global
 * entries go (all of them if CR4.PGE is clear: then none is global). */
void ktlb_cr3_hook(void *uc, uint64_t address, uint32_t size, ktlb *t)
{
    (void)address; (void)size; (void)uc;
    t->cr3_loads++;
    for (int i = 0; i < T_N; i++)
        t_flush(t, i, 1, 0);
}

typedef struct {
    ktlb *t;
    int32_t base, index;    /* Unicorn register ids, -1 = none */
    int32_t scale;
    int32_t disp;
} insn_site;

/* `invlpg m`: drop the entries for that page, global or not. */
void ktlb_invlpg_hook(void *uc, uint64_t address, uint32_t size, insn_site *s)
{
    (void)address; (void)size;
    ktlb *t = s->t;
    uint32_t ea = (uint32_t)s->disp, v = 0;
    if (s->base >= 0) {
        t->reg_read(uc, s->base, &v);
        ea += v;
    }
    if (s->index >= 0) {
        v = 0;
        t->reg_read(uc, s->index, &v);
        ea += v * (uint32_t)s->scale;
    }
    t->invlpgs++;
    for (int side = 0; side < 2; side++) {
        tent *e = t_find(&t->t[side], ea >> 12);
        if (e)
            e->key = 0;
        e = t_find(&t->t[side + 2], ea >> 22);
        if (e) {                            /* QEMU holds 4 KiB pieces of it */
            e->key = 0;
            t->qemu_flush_all++;
            t->flush_all(t->cpu);
        }
    }
}

/* `mov cr4, r32`: a change of PGE (or PSE/PAE) flushes everything, global
 * entries included (SDM vol. 3, 4.10.4.1).  QEMU flushes its own TLB. */
void ktlb_cr4_hook(void *uc, uint64_t address, uint32_t size, insn_site *s)
{
    (void)address; (void)size;
    ktlb *t = s->t;
    uint32_t now = 0, next = 0;
    t->reg_read(uc, t->reg_cr4, &now);
    t->reg_read(uc, s->base, &next);
    if ((now ^ next) & (CR4_PGE | CR4_PSE | CR4_PAE)) {
        t->full_flushes++;
        for (int i = 0; i < T_N; i++)
            t_flush(t, i, 0, 1);
    }
}

/* Geometry: entries and ways of I4K, D4K, I4M, D4M (entries 0 = unlimited). */
ktlb *ktlb_new(const uint32_t *geometry)
{
    ktlb *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    static const uint32_t shifts[T_N] = {12, 12, 22, 22};
    for (int i = 0; i < T_N; i++)
        if (t_init(&t->t[i], geometry[2 * i], geometry[2 * i + 1], shifts[i])) {
            for (int j = 0; j <= i; j++)
                t_free(&t->t[j]);
            free(t);
            return NULL;
        }
    return t;
}

void ktlb_free(ktlb *t)
{
    if (!t)
        return;
    for (int i = 0; i < T_N; i++)
        t_free(&t->t[i]);
    free(t->dropped);
    free(t);
}

/* How many entries are held now, per array (for tests and reports). */
uint32_t ktlb_held(ktlb *t, int which, int global_only)
{
    tarray *a = &t->t[which];
    uint32_t n = 0;
    if (!a->ways) {
        for (uint32_t i = 0; i < a->nlog; i++) {
            tent *e = &a->e[a->log[i]];
            n += e->key && (!global_only || (e->pte & PTE_G));
        }
        return n;
    }
    for (uint32_t i = 0; i < a->entries; i++)
        n += a->e[i].key && (!global_only || (a->e[i].pte & PTE_G));
    return n;
}

/* Is va held by array `which`?  1 if so. */
int ktlb_holds(ktlb *t, int which, uint32_t va)
{
    tarray *a = &t->t[which];
    return t_find(a, va >> a->shift) != NULL;
}

static PyMethodDef tlb_methods[] = {{NULL, NULL, 0, NULL}};

static struct PyModuleDef tlb_module = {
    PyModuleDef_HEAD_INIT, "_tlb",
    "The modelled TLB (tlb=p3); reached through ctypes (vm/tlb.py).",
    -1, tlb_methods,
};

PyMODINIT_FUNC PyInit__tlb(void)
{
    return PyModule_Create(&tlb_module);
}
