/*
 * vm/_run.c: the CPU run/trap round trip and the machine's clocks in C
 * (the Python module vm._run, used by vm/cpu.py and vm/machine.py).
 *
 * Trap: why a run stopped, decoded (kind, vector, eip, cr2, error, cpl,
 *   detail; `user`).  Made here by Runner.run, or by Python.
 *
 * Runner (one per emulated CPU)
 *   regs: the state registers as of the last stop (or entry), one dict
 *       {name: value} for the Runner's life: vm/cpu.py's CPU.regs is this
 *       object.  A read updates it in place, an entry writes what it set.
 *   run(budget, then=None) -> trap
 *       arms the kcpu (limit = executed + budget, no trap, no stop reason),
 *       calls uc_emu_start once from regs['eip'], reads the state
 *       registers with one uc_reg_read_batch into a preallocated block and
 *       regs, takes back the instructions of an early-ended block
 *       (kcpu_settle) where the stop was a trap, hlt or an error, adds 1 +
 *       the quantum boundaries the block hook's run-ahead crossed to the
 *       CPU's counters['runs'] (set_counts; vm/machine.py), and returns
 *       the decoded Trap (decode(): the rules of vm/cpu.py CPU.run; it
 *       bumps the CPU's faults_* counters and sets its halted flag at a
 *       hlt).  trap is None when a Python hook raised (CPU.run raises it).
 *       A #PF carries QEMU's CR2 and error 0: the error code (and the
 *       modelled TLB's CR2) is CPU.run's.  then(trap) may answer with a
 *       next entry (budget, eip, esp, eflags, eax, edx, ecx, pa, *words):
 *       enter_frame and a second run, whose Trap is returned (the engine's
 *       chained guest calls, minikernel/entry.py).  Before set_decode:
 *       (status, stop_reason, trap vector, regs), undecoded.
 *   enter(eax, ebx, ecx, edx, esi, edi, ebp, esp, eip, eflags)
 *       one uc_reg_write_batch of the entry registers.
 *   enter_frame(eip, esp, eflags, eax, edx, ecx, pa, *words)
 *       the words at guest physical pa (a guest call's return address and
 *       arguments, or pt_regs), ring0(regs['cr3']) if regs['cs'] is a
 *       ring-3 selector, then enter(eax, 0, ecx, edx, 0, 0, 0, esp, eip,
 *       eflags), and regs updated as CPU.enter_call does: one call.
 *   read_state() -> regs, read now.
 *   set_template(ctx_restore, template, cr3_off)
 *       the ring-0 template (a uc_context address, vm/cpu.py boot: the
 *       prefix of the boot context before the x87/SSE state, its size
 *       field cut to that prefix)
 *   ring0(cr3)
 *       ring 3 -> ring 0 through the template: patch its CR3, restore it
 *       (one memcpy of the prefix: the FPU state and what follows it stay
 *       the CPU's).  Returns Unicorn's status (0: done).
 *   reg(id) -> one 32-bit register (for hooks that run mid-block).
 *
 * Clock (one per machine): the CPUs' clocks, time(i) = executed(i) +
 *   extra[i] (extra: cycles charged, a uint64 array Python indexes through
 *   ctypes), the halted flags and each kcpu's irq_pending.  now() and the
 *   slowest CPU (argmin, ties to the lowest index) are one C call each;
 *   all_halted() too, and idle(): the run loop's halted-CPU pick
 *   (Machine._while_halted and _idle_to in one call).  With at most 32
 *   CPUs a scan in C costs less than keeping a heap.
 *
 * Rules
 *  - Nothing here knows Unicorn's headers or links against it: the entry
 *    points (uc_emu_start, uc_reg_read_batch, uc_reg_write_batch,
 *    kcpu_settle) come in as addresses from Python, as vm/_native.c's do.
 *  - `kcpu_head` is the first part of vm/_native.c's kcpu; vm/native.py
 *    checks at import that the offsets agree (head_offsets()).
 *  - The GIL is held during emu_start: Python hooks (tracing, fault
 *    injection) that Unicorn calls back through ctypes take it again on
 *    the same thread, which is allowed.
 *  - Exactly the same state is produced as by the Python path it replaced:
 *    the same registers, the same settle rule.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <structmember.h>

#define MAX_REGS 16
#define MAX_CPUS 32

enum stop_reason { STOP_NONE = 0, STOP_LIMIT = 1, STOP_IRQ = 2, STOP_TRAP = 3 };

/* The first fields of vm/_native.c's kcpu, in order. */
typedef struct {
    uint64_t executed;
    uint64_t limit;
    int32_t trap;
    int32_t stop_reason;
    uint32_t blk_addr;
    uint32_t blk_size;
    uint32_t blk_count;
} kcpu_head;

typedef int (*emu_start_fn)(void *uc, uint64_t begin, uint64_t until, uint64_t timeout, size_t count);
typedef int (*reg_batch_fn)(void *uc, int *regs, void **vals, int count);
typedef void (*settle_fn)(void *kcpu, uint32_t eip);
typedef int (*ctx_fn)(void *uc, void *ctx);
typedef const char *(*strerror_fn)(int err);

/* ---- Trap ---------------------------------------------------------------- */

/* Why a run stopped, decoded (vm/cpu.py documents the kinds).  Created by
 * Runner.run (and by Python: Trap(kind, vector=None, eip=0, cr2=0, error=0,
 * cpl=0, detail='')); its fields are writable (CPU.run fills a #PF's error
 * code). */
typedef struct {
    PyObject_HEAD
    PyObject *kind;             /* an interned str */
    PyObject *vector;           /* an int or None */
    PyObject *detail;           /* a str */
    unsigned int eip, cr2;
    int error, cpl;
} Trap;

static PyTypeObject TrapType;

/* interned kinds, and the counters a decoded exception bumps */
enum { K_QUANTUM, K_IRQ, K_PF, K_INT, K_HLT, K_GP, K_UD, K_DE, K_DF, K_EXC, K_ERROR, NKINDS };
static const char *const kind_names[NKINDS] = {"quantum", "irq", "pf", "int", "hlt", "gp", "ud", "de",
                                               "df", "exception", "error"};
static PyObject *kinds[NKINDS];
static PyObject *empty_str;
static PyObject *faults_key[NKINDS];    /* faults_pf, faults_gp, faults_ud; others: faults_other */
static PyObject *faults_other, *hook_exc_name, *one, *key_runs;
static PyObject *key_cs, *key_cr3, *key_eax, *key_edx, *key_ecx, *key_esp, *key_eip, *key_eflags;

static PyObject *trap_new(int kind, PyObject *vector, uint32_t eip, uint32_t cr2, int cpl, PyObject *detail)
{
    Trap *t = PyObject_New(Trap, &TrapType);
    if (!t)
        return NULL;
    Py_INCREF(kinds[kind]);
    t->kind = kinds[kind];
    Py_INCREF(vector);
    t->vector = vector;
    Py_INCREF(detail);
    t->detail = detail;
    t->eip = eip;
    t->cr2 = cr2;
    t->error = 0;
    t->cpl = cpl;
    return (PyObject *)t;
}

static PyObject *Trap_tp_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"kind", "vector", "eip", "cr2", "error", "cpl", "detail", NULL};
    PyObject *kind, *vector = Py_None, *detail = empty_str;
    unsigned long long eip = 0, cr2 = 0;
    long long error = 0;
    int cpl = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "U|OKKLiU", kwl, &kind, &vector, &eip, &cr2, &error, &cpl,
                                     &detail))
        return NULL;
    Trap *t = (Trap *)type->tp_alloc(type, 0);
    if (!t)
        return NULL;
    Py_INCREF(kind);
    PyUnicode_InternInPlace(&kind);
    t->kind = kind;
    Py_INCREF(vector);
    t->vector = vector;
    Py_INCREF(detail);
    t->detail = detail;
    t->eip = (unsigned int)eip;
    t->cr2 = (unsigned int)cr2;
    t->error = (int)error;
    t->cpl = cpl;
    return (PyObject *)t;
}

static void Trap_dealloc(Trap *t)
{
    Py_XDECREF(t->kind);
    Py_XDECREF(t->vector);
    Py_XDECREF(t->detail);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyObject *Trap_get_user(Trap *t, void *closure)
{
    (void)closure;
    return PyBool_FromLong(t->cpl == 3);
}

static PyObject *Trap_repr(Trap *t)
{
    char extra[64] = "", vec[32] = "", mid[48];
    if (PyUnicode_Check(t->kind) && PyUnicode_CompareWithASCIIString(t->kind, "pf") == 0)
        snprintf(extra, sizeof extra, " cr2=0x%x err=0x%x", t->cr2, (unsigned)t->error);
    if (t->vector != Py_None) {
        long v = PyLong_AsLong(t->vector);
        if (v == -1 && PyErr_Occurred())
            return NULL;
        snprintf(vec, sizeof vec, v < 0 ? " vec=-0x%lx" : " vec=0x%lx", v < 0 ? -v : v);
    }
    snprintf(mid, sizeof mid, " eip=0x%x cpl=%d", t->eip, t->cpl);
    return PyUnicode_FromFormat("<Trap %U%s%s%s>", t->kind, vec, mid, extra);
}

static PyObject *Trap_reduce(Trap *t, PyObject *unused)
{
    (void)unused;
    return Py_BuildValue("(O(OOIIiiO))", (PyObject *)Py_TYPE(t), t->kind, t->vector, t->eip, t->cr2, t->error,
                         t->cpl, t->detail);
}

static PyMethodDef Trap_methods[] = {
    {"__reduce__", (PyCFunction)Trap_reduce, METH_NOARGS, "pickle support"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Trap_members[] = {
    {"kind", T_OBJECT_EX, offsetof(Trap, kind), 0, "quantum, irq, pf, int, hlt, gp, ud, de, df, exception, error"},
    {"vector", T_OBJECT_EX, offsetof(Trap, vector), 0, "the vector, or None"},
    {"detail", T_OBJECT_EX, offsetof(Trap, detail), 0, "why Unicorn refused (kind error)"},
    {"eip", T_UINT, offsetof(Trap, eip), 0, "EIP at the stop"},
    {"cr2", T_UINT, offsetof(Trap, cr2), 0, "the faulting address (pf)"},
    {"error", T_INT, offsetof(Trap, error), 0, "the #PF error code"},
    {"cpl", T_INT, offsetof(Trap, cpl), 0, "the privilege level at the stop"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Trap_getset[] = {
    {"user", (getter)Trap_get_user, NULL, "stopped in ring 3", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TrapType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vm._run.Trap",
    .tp_basicsize = sizeof(Trap),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Trap(kind, vector=None, eip=0, cr2=0, error=0, cpl=0, detail=''): why a run stopped",
    .tp_new = Trap_tp_new,
    .tp_dealloc = (destructor)Trap_dealloc,
    .tp_repr = (reprfunc)Trap_repr,
    .tp_members = Trap_members,
    .tp_methods = Trap_methods,
    .tp_getset = Trap_getset,
};

static int init_kinds(void)
{
    for (int i = 0; i < NKINDS; i++) {
        kinds[i] = PyUnicode_InternFromString(kind_names[i]);
        if (!kinds[i])
            return -1;
    }
    faults_key[K_PF] = PyUnicode_InternFromString("faults_pf");
    faults_key[K_GP] = PyUnicode_InternFromString("faults_gp");
    faults_key[K_UD] = PyUnicode_InternFromString("faults_ud");
    faults_other = PyUnicode_InternFromString("faults_other");
    hook_exc_name = PyUnicode_InternFromString("_hook_exception");
    empty_str = PyUnicode_InternFromString("");
    one = PyLong_FromLong(1);
    key_runs = PyUnicode_InternFromString("runs");
    key_cs = PyUnicode_InternFromString("cs");
    key_cr3 = PyUnicode_InternFromString("cr3");
    key_eax = PyUnicode_InternFromString("eax");
    key_edx = PyUnicode_InternFromString("edx");
    key_ecx = PyUnicode_InternFromString("ecx");
    key_esp = PyUnicode_InternFromString("esp");
    key_eip = PyUnicode_InternFromString("eip");
    key_eflags = PyUnicode_InternFromString("eflags");
    if (!key_runs || !key_cs || !key_cr3 || !key_eax || !key_edx || !key_ecx || !key_esp || !key_eip || !key_eflags)
        return -1;
    if (!faults_key[K_PF] || !faults_key[K_GP] || !faults_key[K_UD] || !faults_other || !hook_exc_name ||
        !empty_str || !one)
        return -1;
    return 0;
}

/* counters[key] += by (a key the CPU's dict has) */
static int bump_by(PyObject *counters, PyObject *key, uint64_t by)
{
    PyObject *v = PyDict_GetItemWithError(counters, key);
    if (!v) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, key);
        return -1;
    }
    PyObject *d = by == 1 ? (Py_INCREF(one), one) : PyLong_FromUnsignedLongLong(by);
    if (!d)
        return -1;
    PyObject *n = PyNumber_Add(v, d);
    Py_DECREF(d);
    if (!n)
        return -1;
    int r = PyDict_SetItem(counters, key, n);
    Py_DECREF(n);
    return r;
}

static int bump(PyObject *counters, PyObject *key)
{
    return bump_by(counters, key, 1);
}

/* ---- Runner ------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    void *uc;
    kcpu_head *k;
    emu_start_fn emu_start;
    reg_batch_fn read_batch, write_batch;
    settle_fn settle;
    int nstate, nentry, eip_slot;
    int state_ids[MAX_REGS], entry_ids[MAX_REGS];
    uint32_t state[MAX_REGS], entry[MAX_REGS];
    void *state_ptrs[MAX_REGS], *entry_ptrs[MAX_REGS];
    uint32_t narrow_mask;       /* state slots read as 16 bits: cleared first */
    PyObject *names[MAX_REGS];  /* interned state register names */
    PyObject *last[MAX_REGS];   /* state_dict: each register's int object of the last read */
    uint32_t last_val[MAX_REGS];
    uint64_t runs;
    ctx_fn ctx_restore;             /* the ring-0 template (set_template) */
    char *tpl;
    long cr3_off;
    /* the trap decode (set_decode): off until configured */
    int decode;
    int cs_slot, eflags_slot;
    int model;                      /* tlb='p3': a walk of the model stops with an error status */
    int err_insn_invalid;           /* UC_ERR_INSN_INVALID: Unicorn's #UD */
    int cr2_id;                     /* UC_X86_REG_CR2 */
    uint8_t *halted;                /* this CPU's halted flag (the machine's array) */
    const int32_t *irq_pending;     /* this CPU's kcpu.irq_pending */
    strerror_fn strerror;           /* uc_strerror */
    PyObject *uc_obj;               /* the binding's Uc: _hook_exception */
    PyObject *counters;             /* the CPU's counters dict */
    char *ram;                      /* guest RAM (set_ram): enter_frame's stack words */
    uint64_t ram_size;
    PyObject *kernel_cs;            /* the ring-0 CS selector (set_ram) */
    uint64_t *crossed;              /* kcpu.crossed (set_counts): run-ahead's boundaries */
    PyObject *regs;                 /* the registers as of the last stop: one dict for the
                                     * Runner's life (vm/cpu.py CPU.regs is this object) */
} Runner;

static int read_ids(PyObject *seq, int *ids, int *n)
{
    PyObject *fast = PySequence_Fast(seq, "register ids: a sequence");
    if (!fast)
        return -1;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(fast);
    if (len > MAX_REGS) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "too many registers");
        return -1;
    }
    for (Py_ssize_t i = 0; i < len; i++)
        ids[i] = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
    *n = (int)len;
    Py_DECREF(fast);
    return PyErr_Occurred() ? -1 : 0;
}

static int Runner_init(Runner *self, PyObject *args, PyObject *kw)
{
    unsigned long long uc, k, emu, rd, wr, st;
    PyObject *names, *state_ids, *entry_ids, *narrow;
    int eip_slot;
    (void)kw;
    if (!PyArg_ParseTuple(args, "KKKKKKOOOOi", &uc, &k, &emu, &rd, &wr, &st, &names, &state_ids,
                          &entry_ids, &narrow, &eip_slot))
        return -1;
    self->uc = (void *)(uintptr_t)uc;
    self->k = (kcpu_head *)(uintptr_t)k;
    self->emu_start = (emu_start_fn)(uintptr_t)emu;
    self->read_batch = (reg_batch_fn)(uintptr_t)rd;
    self->write_batch = (reg_batch_fn)(uintptr_t)wr;
    self->settle = (settle_fn)(uintptr_t)st;
    if (read_ids(state_ids, self->state_ids, &self->nstate) < 0 ||
        read_ids(entry_ids, self->entry_ids, &self->nentry) < 0)
        return -1;
    if (PySequence_Size(names) != self->nstate || eip_slot < 0 || eip_slot >= self->nstate) {
        PyErr_SetString(PyExc_ValueError, "one name per state register; eip among them");
        return -1;
    }
    self->eip_slot = eip_slot;
    Py_XSETREF(self->regs, PyDict_New());
    if (!self->regs)
        return -1;
    for (int i = 0; i < self->nstate; i++) {
        PyObject *n = PySequence_GetItem(names, i);
        if (!n)
            return -1;
        PyUnicode_InternInPlace(&n);
        Py_XSETREF(self->names[i], n);
        PyObject *zero = PyLong_FromLong(0);
        int r = zero ? PyDict_SetItem(self->regs, n, zero) : -1;
        Py_XDECREF(zero);
        if (r < 0)
            return -1;
        self->state_ptrs[i] = &self->state[i];
    }
    for (int i = 0; i < self->nentry; i++)
        self->entry_ptrs[i] = &self->entry[i];
    self->narrow_mask = 0;
    Py_ssize_t nn = PySequence_Size(narrow);
    for (Py_ssize_t i = 0; i < nn; i++) {
        PyObject *o = PySequence_GetItem(narrow, i);
        if (!o)
            return -1;
        long slot = PyLong_AsLong(o);
        Py_DECREF(o);
        if (slot >= 0 && slot < self->nstate)
            self->narrow_mask |= 1u << slot;
    }
    return PyErr_Occurred() ? -1 : 0;
}

static void Runner_dealloc(Runner *self)
{
    Py_CLEAR(self->uc_obj);
    Py_CLEAR(self->counters);
    Py_CLEAR(self->kernel_cs);
    Py_CLEAR(self->regs);
    for (int i = 0; i < MAX_REGS; i++) {
        Py_CLEAR(self->names[i]);
        Py_CLEAR(self->last[i]);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Read the state registers into self->regs, in place: a register whose
 * value and dict entry are those of the last read is left alone (CR3, the
 * segments, often EBP/ESI/EDI; ints are immutable); any other entry (a new
 * value, or one Python wrote meanwhile) is set.  Returns the dict, a new
 * reference. */
static PyObject *state_dict(Runner *self)
{
    for (int i = 0; i < self->nstate; i++)
        if (self->narrow_mask & (1u << i))
            self->state[i] = 0;
    int err = self->read_batch(self->uc, self->state_ids, self->state_ptrs, self->nstate);
    if (err)
        return PyErr_Format(PyExc_RuntimeError, "uc_reg_read_batch failed: error %d", err);
    PyObject *d = self->regs;
    for (int i = 0; i < self->nstate; i++) {
        PyObject *v = self->last[i];
        if (v && self->last_val[i] == self->state[i]) {
            PyObject *cur = PyDict_GetItemWithError(d, self->names[i]);
            if (cur == v)
                continue;
            if (!cur && PyErr_Occurred())
                return NULL;
            Py_INCREF(v);
        } else {
            v = PyLong_FromUnsignedLong(self->state[i]);
            if (!v)
                return NULL;
            Py_INCREF(v);
            Py_XSETREF(self->last[i], v);
            self->last_val[i] = self->state[i];
        }
        int r = PyDict_SetItem(d, self->names[i], v);
        Py_DECREF(v);
        if (r < 0)
            return NULL;
    }
    Py_INCREF(d);
    return d;
}

static PyObject *Runner_read_state(Runner *self, PyObject *unused)
{
    (void)unused;
    return state_dict(self);
}

/* The Trap that ended a run (vm/cpu.py CPU.run's rules, which this is in
 * C): None if a Python hook raised (CPU.run raises it; nothing counted).
 * A #PF comes back with CR2 (QEMU's; 0 under the model) and error 0:
 * CPU.run computes the error code (and the model's CR2). */
static PyObject *decode(Runner *self, int status, int reason, int vec)
{
    PyObject *exc = PyObject_GetAttr(self->uc_obj, hook_exc_name);
    if (!exc)
        return NULL;
    Py_DECREF(exc);
    if (exc != Py_None)
        Py_RETURN_NONE;
    uint32_t eip = self->state[self->eip_slot];
    int cpl = (int)(self->state[self->cs_slot] & 3);
    PyObject *vo, *t;
    if (vec >= 32 && status == 0 && reason == STOP_TRAP) {
        if (!(vo = PyLong_FromLong(vec)))
            return NULL;
        t = trap_new(K_INT, vo, eip, 0, cpl, empty_str);
        Py_DECREF(vo);
        return t;
    }
    int model_pf = self->model && vec == 14 && reason == STOP_TRAP;
    if (status != 0 && !model_pf) {
        if (status == self->err_insn_invalid) {      /* Unicorn's way of saying #UD (ud2) */
            if (bump(self->counters, faults_key[K_UD]) < 0 || !(vo = PyLong_FromLong(6)))
                return NULL;
            t = trap_new(K_UD, vo, eip, 0, cpl, empty_str);
            Py_DECREF(vo);
            return t;
        }
        PyObject *detail = PyUnicode_DecodeASCII(self->strerror(status), (Py_ssize_t)strlen(self->strerror(status)),
                                                 "replace");
        if (!detail)
            return NULL;
        t = trap_new(K_ERROR, Py_None, eip, 0, cpl, detail);
        Py_DECREF(detail);
        return t;
    }
    if (reason == STOP_LIMIT)
        return trap_new(K_QUANTUM, Py_None, eip, 0, cpl, empty_str);
    if (reason == STOP_IRQ)
        return trap_new(K_IRQ, Py_None, eip, 0, cpl, empty_str);
    if (reason == STOP_NONE) {
        /* a hlt in sti's shadow with an interrupt pending: it wakes at once */
        if (*self->irq_pending && self->state[self->eflags_slot] & 0x200)
            return trap_new(K_IRQ, Py_None, eip, 0, cpl, empty_str);
        *self->halted = 1;
        return trap_new(K_HLT, Py_None, eip, 0, cpl, empty_str);
    }
    if (!(vo = PyLong_FromLong(vec)))
        return NULL;
    int kind;
    PyObject *key = NULL;
    uint32_t cr2 = 0;
    if (vec == 14) {
        kind = K_PF;
        key = faults_key[K_PF];
        if (!self->model) {
            uint64_t v = 0;
            void *p = &v;
            int err = self->read_batch(self->uc, &self->cr2_id, &p, 1);
            if (err) {
                Py_DECREF(vo);
                return PyErr_Format(PyExc_RuntimeError, "uc_reg_read_batch failed: error %d", err);
            }
            cr2 = (uint32_t)v;
        }
    } else if (vec >= 32) {
        kind = K_INT;
    } else {
        kind = vec == 0 ? K_DE : vec == 6 ? K_UD : vec == 8 ? K_DF : vec == 13 ? K_GP : K_EXC;
        key = kind == K_GP || kind == K_UD ? faults_key[kind] : faults_other;
    }
    if (key && bump(self->counters, key) < 0) {
        Py_DECREF(vo);
        return NULL;
    }
    t = trap_new(kind, vo, eip, cr2, cpl, empty_str);
    Py_DECREF(vo);
    return t;
}

static int enter_frame(Runner *self, PyObject *const *args, Py_ssize_t nargs);

/* One emu_start from the current EIP for up to `budget` instructions: arm
 * the kcpu, run, count the run(s), read the registers into self->regs,
 * settle, decode.  Returns the Trap (None: a Python hook raised), or
 * before set_decode the tuple (status, stop_reason, trap vector, regs). */
static PyObject *run_once(Runner *self, unsigned long long eip, unsigned long long budget)
{
    kcpu_head *k = self->k;
    k->limit = k->executed + budget;
    k->trap = -1;
    k->stop_reason = STOP_NONE;
    k->blk_count = 0;
    if (self->crossed)
        *self->crossed = 0;
    self->runs++;
    int status = self->emu_start(self->uc, eip, 0, 0, 0);
    /* counters['runs']: this run and each boundary run-ahead crossed
     * (each would have been a run of its own) */
    if (self->crossed && bump_by(self->counters, key_runs, 1 + *self->crossed) < 0)
        return NULL;
    PyObject *regs = state_dict(self);
    if (!regs)
        return NULL;
    int reason = k->stop_reason;
    if (status != 0 || (reason != STOP_LIMIT && reason != STOP_IRQ))
        self->settle(k, self->state[self->eip_slot]);
    if (!self->decode)
        return Py_BuildValue("(iiiN)", status, reason, (int)k->trap, regs);
    Py_DECREF(regs);
    return decode(self, status, reason, (int)k->trap);
}

/* run(budget, then=None): run from regs['eip'] (the last stop, or the
 * last entry).  `then`: a callable asked with the Trap when the run
 * stopped (not when a hook raised); it returns None (done: the Trap is
 * the result) or (budget, eip, esp, eflags, eax, edx, ecx, pa, *words):
 * enter_frame(eip, ...) and run again for `budget`, whose Trap is the
 * result.  It is asked once per call.  The caller learns that a second
 * run happened from its own callback. */
static PyObject *Runner_run(Runner *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2)
        return PyErr_Format(PyExc_TypeError, "run(budget, then=None)");
    unsigned long long budget = PyLong_AsUnsignedLongLongMask(args[0]);
    PyObject *then = nargs > 1 && args[1] != Py_None ? args[1] : NULL;
    PyObject *o = PyDict_GetItemWithError(self->regs, key_eip);
    if (!o)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_KeyError, "eip");
    unsigned long long eip = PyLong_AsUnsignedLongLongMask(o);
    if (PyErr_Occurred())
        return NULL;
    PyObject *trap = run_once(self, eip, budget);
    if (!trap || !then || !self->decode || trap == Py_None)
        return trap;
    PyObject *next = PyObject_CallOneArg(then, trap);
    if (!next || next == Py_None) {
        Py_XDECREF(next);
        if (!next) {
            Py_DECREF(trap);
            return NULL;
        }
        return trap;
    }
    Py_DECREF(trap);
    if (!PyTuple_Check(next) || PyTuple_GET_SIZE(next) < 8) {
        Py_DECREF(next);
        return PyErr_Format(PyExc_TypeError, "run: then() returns None or (budget, eip, esp, eflags, eax, "
                                             "edx, ecx, pa, *words)");
    }
    budget = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(next, 0));
    eip = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(next, 1));
    if (PyErr_Occurred() || enter_frame(self, &PyTuple_GET_ITEM(next, 1), PyTuple_GET_SIZE(next) - 1) < 0) {
        Py_DECREF(next);
        return NULL;
    }
    Py_DECREF(next);
    return run_once(self, eip, budget);
}

static PyObject *Runner_enter(Runner *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != self->nentry)
        return PyErr_Format(PyExc_TypeError, "enter takes %d registers", self->nentry);
    for (int i = 0; i < self->nentry; i++)
        self->entry[i] = (uint32_t)PyLong_AsUnsignedLongLongMask(args[i]);
    if (PyErr_Occurred())
        return NULL;
    int err = self->write_batch(self->uc, self->entry_ids, self->entry_ptrs, self->nentry);
    if (err)
        return PyErr_Format(PyExc_RuntimeError, "uc_reg_write_batch failed: error %d", err);
    Py_RETURN_NONE;
}

static PyObject *Runner_set_decode(Runner *self, PyObject *args)
{
    PyObject *uc, *counters;
    int cs_slot, eflags_slot, model, insn_invalid, cr2_id;
    unsigned long long halted, pending, strerror;
    if (!PyArg_ParseTuple(args, "OO!iiiiiKKK", &uc, &PyDict_Type, &counters, &cs_slot, &eflags_slot, &model,
                          &insn_invalid, &cr2_id, &halted, &pending, &strerror))
        return NULL;
    if (cs_slot < 0 || cs_slot >= self->nstate || eflags_slot < 0 || eflags_slot >= self->nstate ||
        !halted || !pending || !strerror)
        return PyErr_Format(PyExc_ValueError, "set_decode: bad slots or addresses");
    Py_INCREF(uc);
    Py_XSETREF(self->uc_obj, uc);
    Py_INCREF(counters);
    Py_XSETREF(self->counters, counters);
    self->cs_slot = cs_slot;
    self->eflags_slot = eflags_slot;
    self->model = model;
    self->err_insn_invalid = insn_invalid;
    self->cr2_id = cr2_id;
    self->halted = (uint8_t *)(uintptr_t)halted;
    self->irq_pending = (const int32_t *)(uintptr_t)pending;
    self->strerror = (strerror_fn)(uintptr_t)strerror;
    self->decode = 1;
    Py_RETURN_NONE;
}

/* enter_frame(eip, esp, eflags, eax, edx, ecx, pa, *words): write
 * `words` (32-bit, little-endian, each taken mod 2**32) at guest physical
 * `pa` (a host store into RAM, as Machine.write), come back to ring 0
 * through the template if regs['cs'] has RPL 3 (ring0(regs['cr3'])), then
 * enter(eax, 0, ecx, edx, 0, 0, 0, esp, eip, eflags): a guest call's
 * stack, or pt_regs for restore_all, and its entry in one call.  The
 * Runner's regs (the CPU's dict as of its last stop) are updated as
 * CPU.enter_call does: cs (after ring 0), eax, edx, ecx, esp, eip, eflags.
 * Returns 0, or -1 with an exception. */
static int enter_frame(Runner *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 7) {
        PyErr_Format(PyExc_TypeError, "enter_frame(eip, esp, eflags, eax, edx, ecx, pa, *words)");
        return -1;
    }
    if (!self->ram) {
        PyErr_Format(PyExc_RuntimeError, "enter_frame: no RAM (set_ram first)");
        return -1;
    }
    PyObject *regs = self->regs;
    int user = 0;
    uint32_t cr3 = 0;
    PyObject *o = PyDict_GetItemWithError(regs, key_cs);
    if (o) {
        long cs = PyLong_AsLong(o);
        if (cs == -1 && PyErr_Occurred())
            return -1;
        user = (cs & 3) != 0;
    } else if (PyErr_Occurred()) {
        return -1;
    }
    if (user) {
        o = PyDict_GetItemWithError(regs, key_cr3);
        if (!o) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_KeyError, "cr3");
            return -1;
        }
        cr3 = (uint32_t)PyLong_AsUnsignedLongLongMask(o);
    }
    uint32_t v[6];
    for (int i = 0; i < 6; i++)
        v[i] = (uint32_t)PyLong_AsUnsignedLongLongMask(args[i]);
    long long pa = PyLong_AsLongLong(args[6]);
    if (PyErr_Occurred())
        return -1;
    Py_ssize_t n = nargs - 7;
    if (n > 64) {
        PyErr_Format(PyExc_ValueError, "enter_frame: at most 64 words");
        return -1;
    }
    if (pa < 0 || (uint64_t)pa + 4 * (uint64_t)n > self->ram_size) {
        PyErr_Format(PyExc_IndexError, "enter_frame: %zd words at %#llx: outside RAM", n, pa);
        return -1;
    }
    uint32_t words[64];
    for (Py_ssize_t i = 0; i < n; i++)
        words[i] = (uint32_t)PyLong_AsUnsignedLongLongMask(args[7 + i]);
    if (PyErr_Occurred())
        return -1;
    if (self->nentry != 10) {
        PyErr_Format(PyExc_RuntimeError, "enter_frame: the entry registers are not the 10 of vm/cpu.py");
        return -1;
    }
    memcpy(self->ram + pa, words, 4 * (size_t)n);       /* x86 and the host: little-endian */
    if (user) {
        if (!self->tpl) {
            PyErr_Format(PyExc_RuntimeError, "ring0: no template (boot first)");
            return -1;
        }
        memcpy(self->tpl + self->cr3_off, &cr3, sizeof cr3);
        int st = self->ctx_restore(self->uc, self->tpl);
        if (st) {
            PyErr_Format(PyExc_RuntimeError, "ring0: uc_context_restore failed: error %d", st);
            return -1;
        }
        if (PyDict_SetItem(regs, key_cs, self->kernel_cs) < 0)
            return -1;
    }
    /* ENTRY_REGS: eax ebx ecx edx esi edi ebp esp eip eflags */
    uint32_t e[10] = {v[3], 0, v[5], v[4], 0, 0, 0, v[1], v[0], v[2]};
    memcpy(self->entry, e, sizeof e);
    int err = self->write_batch(self->uc, self->entry_ids, self->entry_ptrs, self->nentry);
    if (err) {
        PyErr_Format(PyExc_RuntimeError, "uc_reg_write_batch failed: error %d", err);
        return -1;
    }
    if (PyDict_SetItem(regs, key_eax, args[3]) < 0 || PyDict_SetItem(regs, key_edx, args[4]) < 0 ||
        PyDict_SetItem(regs, key_ecx, args[5]) < 0 || PyDict_SetItem(regs, key_esp, args[1]) < 0 ||
        PyDict_SetItem(regs, key_eip, args[0]) < 0 || PyDict_SetItem(regs, key_eflags, args[2]) < 0)
        return -1;
    return 0;
}

static PyObject *Runner_enter_frame(Runner *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (enter_frame(self, args, nargs) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Runner_get_regs(Runner *self, void *closure)
{
    (void)closure;
    Py_INCREF(self->regs);
    return self->regs;
}

static PyObject *Runner_set_ram(Runner *self, PyObject *args)
{
    unsigned long long ram, size;
    PyObject *kernel_cs;
    if (!PyArg_ParseTuple(args, "KKO!", &ram, &size, &PyLong_Type, &kernel_cs))
        return NULL;
    self->ram = (char *)(uintptr_t)ram;
    self->ram_size = size;
    Py_INCREF(kernel_cs);
    Py_XSETREF(self->kernel_cs, kernel_cs);
    Py_RETURN_NONE;
}

static PyObject *Runner_set_counts(Runner *self, PyObject *arg)
{
    unsigned long long a = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    if (!self->decode)
        return PyErr_Format(PyExc_RuntimeError, "set_counts: set_decode first (the counters dict)");
    self->crossed = (uint64_t *)(uintptr_t)a;
    Py_RETURN_NONE;
}

static PyObject *Runner_set_template(Runner *self, PyObject *args)
{
    unsigned long long restore, tpl;
    long cr3_off;
    if (!PyArg_ParseTuple(args, "KKl", &restore, &tpl, &cr3_off))
        return NULL;
    if (cr3_off < 0 || !restore || !tpl)
        return PyErr_Format(PyExc_ValueError, "bad template");
    self->ctx_restore = (ctx_fn)(uintptr_t)restore;
    self->tpl = (char *)(uintptr_t)tpl;
    self->cr3_off = cr3_off;
    Py_RETURN_NONE;
}

static PyObject *Runner_ring0(Runner *self, PyObject *arg)
{
    uint32_t cr3 = (uint32_t)PyLong_AsUnsignedLongMask(arg);
    if (PyErr_Occurred())
        return NULL;
    if (!self->tpl)
        return PyErr_Format(PyExc_RuntimeError, "ring0: no template (boot first)");
    memcpy(self->tpl + self->cr3_off, &cr3, sizeof cr3);
    return PyLong_FromLong(self->ctx_restore(self->uc, self->tpl));
}

static PyObject *Runner_reg(Runner *self, PyObject *arg)
{
    int id = (int)PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred())
        return NULL;
    uint64_t v = 0;             /* segment registers are written as 16 bits */
    void *p = &v;
    int err = self->read_batch(self->uc, &id, &p, 1);
    if (err)
        return PyErr_Format(PyExc_RuntimeError, "uc_reg_read_batch failed: error %d", err);
    return PyLong_FromUnsignedLong((uint32_t)v);
}

static PyObject *Runner_get_runs(Runner *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->runs);
}

static PyMethodDef Runner_methods[] = {
    {"run", (PyCFunction)(void (*)(void))Runner_run, METH_FASTCALL,
     "run(budget, then=None) -> Trap: one emu_start from regs['eip'] (two with then), registers read"},
    {"enter", (PyCFunction)(void (*)(void))Runner_enter, METH_FASTCALL,
     "enter(*entry registers): one batch write"},
    {"read_state", (PyCFunction)Runner_read_state, METH_NOARGS, "the state registers as a dict"},
    {"reg", (PyCFunction)Runner_reg, METH_O, "reg(id): one 32-bit register"},
    {"set_decode", (PyCFunction)Runner_set_decode, METH_VARARGS,
     "set_decode(uc, counters, cs_slot, eflags_slot, model, UC_ERR_INSN_INVALID, UC_X86_REG_CR2, "
     "&halted[i], &kcpu.irq_pending, uc_strerror): run() returns (Trap or None, regs)"},
    {"enter_frame", (PyCFunction)(void (*)(void))Runner_enter_frame, METH_FASTCALL,
     "enter_frame(eip, esp, eflags, eax, edx, ecx, pa, *words): stack words, ring 0, entry"},
    {"set_ram", (PyCFunction)Runner_set_ram, METH_VARARGS, "set_ram(address, size, kernel_cs): guest RAM"},
    {"set_counts", (PyCFunction)Runner_set_counts, METH_O,
     "set_counts(&kcpu.crossed): run() adds 1 + run-ahead's crossings to counters['runs']"},
    {"set_template", (PyCFunction)Runner_set_template, METH_VARARGS,
     "set_template(ctx_restore, template, cr3_off)"},
    {"ring0", (PyCFunction)Runner_ring0, METH_O,
     "ring0(cr3): back to ring 0 through the template (its prefix before the x87/SSE state)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Runner_getset[] = {
    {"runs", (getter)Runner_get_runs, NULL, "emu_start calls made by run()", NULL},
    {"regs", (getter)Runner_get_regs, NULL, "the registers as of the last stop or entry: one dict, kept", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RunnerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vm._run.Runner",
    .tp_basicsize = sizeof(Runner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Runner(uc, kcpu, emu_start, reg_read_batch, reg_write_batch, kcpu_settle, "
              "state_names, state_ids, entry_ids, narrow_slots, eip_slot)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Runner_init,
    .tp_dealloc = (destructor)Runner_dealloc,
    .tp_methods = Runner_methods,
    .tp_getset = Runner_getset,
};

/* ---- Clock ---------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    int n;
    const uint64_t *executed[MAX_CPUS];
    uint64_t *extra;            /* n entries, owned by Python (a ctypes int64 array: sums wrap right) */
    uint8_t *halted;            /* n entries, owned by Python (a ctypes array) */
    const int32_t *irq_pending[MAX_CPUS];   /* kcpu.irq_pending: a vector is pending */
} Clock;

static int Clock_init(Clock *self, PyObject *args, PyObject *kw)
{
    PyObject *ptrs, *pend;
    unsigned long long extra, halted;
    (void)kw;
    if (!PyArg_ParseTuple(args, "OKKO", &ptrs, &extra, &halted, &pend))
        return -1;
    Py_ssize_t n = PySequence_Size(ptrs);
    if (n < 1 || n > MAX_CPUS || PySequence_Size(pend) != n) {
        PyErr_SetString(PyExc_ValueError, "1..32 CPUs, an irq_pending address for each");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PySequence_GetItem(ptrs, i);
        if (!o)
            return -1;
        self->executed[i] = (const uint64_t *)(uintptr_t)PyLong_AsUnsignedLongLong(o);
        Py_DECREF(o);
        o = PySequence_GetItem(pend, i);
        if (!o)
            return -1;
        self->irq_pending[i] = (const int32_t *)(uintptr_t)PyLong_AsUnsignedLongLong(o);
        Py_DECREF(o);
    }
    self->n = (int)n;
    self->extra = (uint64_t *)(uintptr_t)extra;
    self->halted = (uint8_t *)(uintptr_t)halted;
    return PyErr_Occurred() ? -1 : 0;
}

static inline uint64_t ctime_of(const Clock *c, int i)
{
    return *c->executed[i] + c->extra[i];
}

static PyObject *Clock_time(Clock *self, PyObject *arg)
{
    long i = PyLong_AsLong(arg);
    if (i < 0 || i >= self->n) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_IndexError, "no such CPU");
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(ctime_of(self, (int)i));
}

static PyObject *Clock_now(Clock *self, PyObject *unused)
{
    (void)unused;
    uint64_t best = ctime_of(self, 0);
    for (int i = 1; i < self->n; i++) {
        uint64_t t = ctime_of(self, i);
        if (t < best)
            best = t;
    }
    return PyLong_FromUnsignedLongLong(best);
}

static PyObject *Clock_slowest(Clock *self, PyObject *unused)
{
    (void)unused;
    int bi = 0;
    uint64_t best = ctime_of(self, 0);
    for (int i = 1; i < self->n; i++) {
        uint64_t t = ctime_of(self, i);
        if (t < best)
            best = t, bi = i;
    }
    return PyLong_FromLong(bi);
}

static PyObject *Clock_all_halted(Clock *self, PyObject *unused)
{
    (void)unused;
    for (int i = 0; i < self->n; i++)
        if (!self->halted[i])
            Py_RETURN_FALSE;
    Py_RETURN_TRUE;
}

static PyObject *Clock_times(Clock *self, PyObject *unused)
{
    (void)unused;
    PyObject *l = PyList_New(self->n);
    if (!l)
        return NULL;
    for (int i = 0; i < self->n; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(ctime_of(self, i));
        if (!v) {
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, i, v);
    }
    return l;
}

/* A CPU that can act: running, or halted with a vector pending. */
static inline int can_act(const Clock *c, int i)
{
    return !c->halted[i] || *c->irq_pending[i];
}

/* idle(cpu, budget, nxt, idle_to_max): the round robin pick fell on `cpu`,
 * halted with nothing pending, and not every CPU is halted with an event
 * due (vm/machine.py Machine.run; _while_halted and _idle_to there are the
 * definitions in Python, this is them in one C call).  nxt: the next
 * event's time or -1.  Let `limit` be the smallest clock of a CPU that can
 * act, or nxt if smaller.  If `cpu` lags `limit`, it idles up to it (at
 * most `budget`) and, when idle_to_max >= limit (-2: never; -1: no cap),
 * so does every other CPU that is halted with nothing pending and not all
 * are halted: returns None.  With no CPU able to act, the budget passes
 * (up to nxt if that comes first): None.  Otherwise the slowest CPU that can act (lowest index on ties)
 * runs: returns (that CPU, budget capped at nxt, at least 1). */
static PyObject *Clock_idle(Clock *self, PyObject *args)
{
    int cpu;
    long long budget, nxt, idle_to_max;
    if (!PyArg_ParseTuple(args, "iLLL", &cpu, &budget, &nxt, &idle_to_max))
        return NULL;
    if (cpu < 0 || cpu >= self->n) {
        PyErr_SetString(PyExc_IndexError, "no such CPU");
        return NULL;
    }
    int64_t t = (int64_t)ctime_of(self, cpu);
    int slow = -1;
    int64_t slow_t = 0;
    for (int i = 0; i < self->n; i++) {
        if (!can_act(self, i))
            continue;
        int64_t ti = (int64_t)ctime_of(self, i);
        if (slow < 0 || ti < slow_t)
            slow = i, slow_t = ti;
    }
    if (slow < 0) {                 /* nothing can wake it but an event: the budget passes */
        if (nxt >= 0 && t < nxt && nxt - t < budget)
            budget = nxt - t;
        self->extra[cpu] += (uint64_t)budget;
        Py_RETURN_NONE;
    }
    int64_t limit = slow_t;
    if (nxt >= 0 && nxt < limit)
        limit = nxt;
    if (t < limit) {
        self->extra[cpu] += (uint64_t)(budget < limit - t ? budget : limit - t);
        int all = 1;
        for (int i = 0; i < self->n; i++)
            if (!self->halted[i])
                all = 0;
        if (idle_to_max != -2 && !all && (idle_to_max == -1 || limit <= idle_to_max)) {
            for (int i = 0; i < self->n; i++) {
                if (!can_act(self, i)) {
                    int64_t ti = (int64_t)ctime_of(self, i);
                    if (ti < limit)
                        self->extra[i] += (uint64_t)(limit - ti);
                }
            }
        }
        Py_RETURN_NONE;
    }
    if (nxt >= 0 && nxt - slow_t < budget)
        budget = nxt - slow_t;
    return Py_BuildValue("iL", slow, budget > 1 ? budget : 1LL);
}

static PyMethodDef Clock_methods[] = {
    {"idle", (PyCFunction)Clock_idle, METH_VARARGS,
     "idle(cpu, budget, nxt, idle_to_max): a halted CPU picked (see vm/_run.c)"},
    {"time", (PyCFunction)Clock_time, METH_O, "time(i): CPU i's clock"},
    {"now", (PyCFunction)Clock_now, METH_NOARGS, "the slowest CPU's clock"},
    {"slowest", (PyCFunction)Clock_slowest, METH_NOARGS, "the slowest CPU (lowest index on ties)"},
    {"all_halted", (PyCFunction)Clock_all_halted, METH_NOARGS, "every CPU halted"},
    {"times", (PyCFunction)Clock_times, METH_NOARGS, "every CPU's clock, a list"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ClockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vm._run.Clock",
    .tp_basicsize = sizeof(Clock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Clock([address of each kcpu.executed], address of extra[], address of halted[])",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Clock_init,
    .tp_methods = Clock_methods,
};

/* ---- module ---------------------------------------------------------------- */

static PyObject *head_offsets(PyObject *m, PyObject *unused)
{
    (void)m; (void)unused;
    return Py_BuildValue("{sksksksksksksk}", "executed", (unsigned long)offsetof(kcpu_head, executed),
                         "limit", (unsigned long)offsetof(kcpu_head, limit),
                         "trap", (unsigned long)offsetof(kcpu_head, trap),
                         "stop_reason", (unsigned long)offsetof(kcpu_head, stop_reason),
                         "blk_addr", (unsigned long)offsetof(kcpu_head, blk_addr),
                         "blk_size", (unsigned long)offsetof(kcpu_head, blk_size),
                         "blk_count", (unsigned long)offsetof(kcpu_head, blk_count));
}

static PyMethodDef run_methods[] = {
    {"head_offsets", head_offsets, METH_NOARGS, "offsets of the kcpu fields this module uses"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef run_module = {
    PyModuleDef_HEAD_INIT, "_run",
    "The CPU run/trap round trip and the machine's clocks in C (vm/_run.c).", -1, run_methods,
};

PyMODINIT_FUNC PyInit__run(void)
{
    if (init_kinds() < 0 || PyType_Ready(&TrapType) < 0 || PyType_Ready(&RunnerType) < 0 ||
        PyType_Ready(&ClockType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&run_module);
    if (!m)
        return NULL;
    Py_INCREF(&RunnerType);
    Py_INCREF(&ClockType);
    Py_INCREF(&TrapType);
    if (PyModule_AddObject(m, "Trap", (PyObject *)&TrapType) < 0 ||
        PyModule_AddObject(m, "Runner", (PyObject *)&RunnerType) < 0 ||
        PyModule_AddObject(m, "Clock", (PyObject *)&ClockType) < 0)
        return NULL;
    return m;
}
