/*
 * vm/_pyhook.c: the UC_HOOK_CODE callback behind CPU.hook_code (vm/cpu.py).
 *
 * Unicorn calls kpy_code_hook, which calls the hook's Python function
 * fn(cpu, address) with one vectorcall: no ctypes callback (its argument
 * conversion and Python wrapper cost more than most hooks' bodies; the
 * kmap_atomic / kunmap_atomic hooks run at every page a fault clears).
 * Reached through ctypes like vm/_native.c (vm/cpu.py takes its address).
 *
 * user_data is a Python list `cell` = [fn, handle, cpu, on_error], kept
 * alive by the CPU for its lifetime (vm/cpu.py hook_code).
 *
 * Invariants
 *  - The hook takes the GIL (PyGILState_Ensure): Runner.run (vm/_run.c)
 *    calls emu_start with it held, which makes that cheap, but the
 *    binding's uc.emu_start (a ctypes call) releases it.
 *  - fn None (a hook removed, or one of an earlier life: vm/spares.py):
 *    nothing runs.  fn may set cell[0] while it runs (unhook_code from
 *    inside a hook): it is held for the call.
 *  - An exception fn raises goes to on_error(exc), which keeps it for
 *    CPU.run to raise and stops the emulation (what the ctypes callback
 *    did); no Python error is left set when Unicorn goes on.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

void kpy_code_hook(void *uc, uint64_t address, uint32_t size, PyObject *cell)
{
    (void)uc; (void)size;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *fn = PyList_GET_ITEM(cell, 0);
    if (fn == Py_None) {
        PyGILState_Release(gil);
        return;
    }
    Py_INCREF(fn);
    PyObject *addr = PyLong_FromUnsignedLongLong(address);
    PyObject *r = NULL;
    if (addr != NULL) {
        PyObject *args[2] = {PyList_GET_ITEM(cell, 2), addr};
        r = PyObject_Vectorcall(fn, args, 2, NULL);
        Py_DECREF(addr);
    }
    Py_DECREF(fn);
    if (r != NULL) {
        Py_DECREF(r);
        PyGILState_Release(gil);
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *handled = PyObject_CallOneArg(PyList_GET_ITEM(cell, 3), value ? value : Py_None);
    if (handled == NULL)
        PyErr_WriteUnraisable(PyList_GET_ITEM(cell, 3));
    Py_XDECREF(handled);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    PyGILState_Release(gil);
}

static struct PyModuleDef pyhook_module = {
    PyModuleDef_HEAD_INIT, "_pyhook",
    "The C callback of CPU.hook_code's Python hooks; reached through ctypes (vm/cpu.py).",
    -1, NULL,
};

PyMODINIT_FUNC PyInit__pyhook(void)
{
    return PyModule_Create(&pyhook_module);
}
