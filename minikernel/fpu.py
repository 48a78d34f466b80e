"""The x87/SSE state of user tasks: eager fxsave/fxrstor at context switch.

Mirrors Linux v4.14 arch/x86/include/asm/fpu/internal.h and
arch/x86/kernel/fpu/core.c (eager FPU, the only mode since v4.14):
switch_fpu_prepare saves the outgoing task's registers with fxsave,
switch_fpu_finish restores the incoming task's with fxrstor unless this
CPU's registers still hold exactly that state (fpu_fpregs_owner_ctx[cpu] is
the task and its last_cpu is this CPU: e.g. A -> kswapd -> A).  Both run in
guest code (asm/kernel/switch.S, from __switch_to), so their instructions
are counted.  Why eager and not 2.4's lazy CR0.TS/#NM scheme: see
docs/architecture.md ("CPU state a user program owns").

Invariants
  - A task's state lives in its 512-byte, 16-byte aligned fxsave area
    (thread_info + TI_FPU_STATE, see sched.py) whenever it is not running;
    while it runs, the CPU's registers are the truth.
  - fpu_initialized is 1 for tasks that run user code (set at exec and
    clone), 0 for kernel threads and the idle tasks: their switches neither
    save nor restore, and the owner's registers stay loaded.
  - Kernel code never uses the FPU (the engine's entries keep the
    registers: vm/cpu.py), so between a switch out and a switch in of the
    same task on the same CPU nothing else can change them unless another
    task with a state was switched in (which changes the owner).

Locks: none (per-task state; the owner array is per CPU and written by that
CPU with interrupts off, in __switch_to).  fpu__copy / fpu__clear run guest
code and may not sleep.
"""
import struct

from .sched import FPU_STATE_SIZE, TI_FPU_INITIALIZED, TI_FPU_LAST_CPU, TI_FPU_STATE
from .task import Guest

X87_FCW_DEFAULT = 0x037F        # fninit's control word: all exceptions masked, 64-bit precision
MXCSR_DEFAULT = 0x1F80          # all SSE exceptions masked, round to nearest


def init_fxstate():
    """fpstate_init_fxstate(): the fxsave image of a fresh FPU."""
    img = bytearray(FPU_STATE_SIZE)
    struct.pack_into('<H', img, 0, X87_FCW_DEFAULT)      # fxsave.cwd
    struct.pack_into('<I', img, 24, MXCSR_DEFAULT)       # fxsave.mxcsr
    return bytes(img)


class Fpu:
    def __init__(self, kernel):
        self.k = kernel

    def _ti_pa(self, task, off):
        return task.thread_info - self.k.PAGE_OFFSET + off

    def init(self, task):
        """fpu__initialize() for a task that will run user code: the fresh
        state in its area, not in any CPU's registers (last_cpu -1).  The
        task is not running.  No lock."""
        m = self.k.machine
        m.write(self._ti_pa(task, TI_FPU_STATE), init_fxstate())
        m.write32(self._ti_pa(task, TI_FPU_INITIALIZED), 1)
        m.write32(self._ti_pa(task, TI_FPU_LAST_CPU), 0xFFFFFFFF)

    def init_kernel_thread(self, task):
        """A kernel thread (or idle task) has no FPU state to switch."""
        m = self.k.machine
        m.write32(self._ti_pa(task, TI_FPU_INITIALIZED), 0)
        m.write32(self._ti_pa(task, TI_FPU_LAST_CPU), 0xFFFFFFFF)

    def copy(self, parent, child):
        """fpu__copy() (fork/clone, v4.14): the child starts with the
        parent's current registers, saved straight into the child's area by
        a guest fxsave (the parent is current on this CPU).  Generator."""
        m = self.k.machine
        m.write32(self._ti_pa(child, TI_FPU_LAST_CPU), 0xFFFFFFFF)
        if not m.read32(self._ti_pa(parent, TI_FPU_INITIALIZED)):
            self.init(child)
            return
        m.write32(self._ti_pa(child, TI_FPU_INITIALIZED), 1)
        yield Guest('fpu__copy', child.thread_info, irqs=False)

    def clear(self, task):
        """fpu__clear() (exec, v4.14): the current task's state and
        registers become the fresh state.  Generator."""
        self.init(task)
        yield Guest('fpu__restore', task.thread_info, irqs=False)
