// asm/kernel/lib.S: spinlocks and preemption helpers shared by guest code.
//
// spinlock_t is one u32: 0 unlocked, 1 locked.  spin_lock is 2.5's
// preempt_disable() + _raw_spin_lock(): the preempt count goes up first, so
// a task holding a spinlock is atomic (it is never preempted, a page fault
// there takes the no_context path with atomic_fault=fixup, and sleeping
// there is reported as "scheduling while atomic").  The lock is taken with
// `xchg` (locked by definition on x86); contention spins on a plain read
// with `pause` as include/asm-i386/spinlock.h does, so a contended lock
// costs guest instructions on the spinning CPU.  Hot locks (kmap_lock) have
// their own copy of the spin loop, as 2.4 puts one per call site in
// .text.lock, so their spinning is counted separately.
// Python kernel code shares the same words (minikernel/locking.py).

// void _spin_lock(spinlock_t *lock)   EAX = lock.  Clobbers ECX, EDX.  Never sleeps.
_spin_lock:
        mov ecx, esp
        and ecx, 0xffffe000
        inc dword ptr [ecx + TI_PREEMPT_COUNT]      // preempt_disable()
1:      mov edx, 1
        xchg dword ptr [eax], edx
        test edx, edx
        jnz 2f
        ret
        .spin spinlock_wait
2:      pause
        cmp dword ptr [eax], 0
        jne 2b
        .endspin
        jmp 1b

// void _spin_unlock(spinlock_t *lock)   EAX = lock.  Clobbers ECX.  Never sleeps.
// 2.5's spin_unlock: the release, then preempt_enable() (which may preempt).
_spin_unlock:
        mov dword ptr [eax], 0
        jmp preempt_enable

// void preempt_enable(void)   Clobbers ECX (and EAX if it reschedules).
// dec the preempt count; at 0 with TIF_NEED_RESCHED set, preempt_schedule().
preempt_enable:
        mov ecx, esp
        and ecx, 0xffffe000
        dec dword ptr [ecx + TI_PREEMPT_COUNT]
        jnz 1f
        test dword ptr [ecx + TI_FLAGS], _TIF_NEED_RESCHED
        jz 1f
        push eax
        mov eax, SVC_PREEMPT_SCHEDULE
        int KSVC_VECTOR
        pop eax
1:      ret

// void *memset(void *dst, int c, size_t n)   EAX, EDX, ECX -> EAX.  Kernel memory only.
memset:
        push edi
        push eax
        mov edi, eax
        mov eax, edx
        rep stosb
        pop eax
        pop edi
        ret

// void *memcpy(void *dst, const void *src, size_t n)   EAX, EDX, ECX -> EAX.
memcpy:
        push esi
        push edi
        push eax
        mov edi, eax
        mov esi, edx
        mov edx, ecx
        shr ecx, 2
        rep movsl
        mov ecx, edx
        and ecx, 3
        rep movsb
        pop eax
        pop edi
        pop esi
        ret

// void __delay(unsigned long loops)   EAX.  Busy-waits with interrupts as they are.
__delay:
1:      dec eax
        jnz 1b
        ret

// long probe_kernel_read32(const u32 *addr)   EAX -> EAX = the word, EDX = 0,
// or EDX = -EFAULT if the read faulted (exception-table fixup).
probe_kernel_read32:
probe_load:
        mov eax, dword ptr [eax]
        xor edx, edx
        ret
probe_fix:
        xor eax, eax
        mov edx, -14
        ret
        .extable probe_load, probe_fix
