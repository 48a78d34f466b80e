// asm/kernel/lib.S: spinlocks and small helpers shared by all guest code.
//
// spinlock_t is one u32: 0 unlocked, 1 locked.  Taken with `xchg` (locked
// by definition on x86), spinning on a plain read with `pause` as
// include/asm-i386/spinlock.h does, so a contended lock costs guest
// instructions on the spinning CPU (counted in the `spin` ranges).
// Python kernel code shares the same words (minikernel/locking.py).

// void _spin_lock(spinlock_t *lock)   EAX = lock.  Clobbers EDX.  Never sleeps.
_spin_lock:
        mov edx, 1
        xchg dword ptr [eax], edx
        test edx, edx
        jnz _spin_lock_wait
        ret
_spin_lock_wait:
        pause
        cmp dword ptr [eax], 0
        jne _spin_lock_wait
        jmp _spin_lock
_spin_lock_end:

// void _spin_unlock(spinlock_t *lock)   EAX = lock.  Never sleeps.
_spin_unlock:
        mov dword ptr [eax], 0
        ret
