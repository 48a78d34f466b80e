// asm/kernel/switch.S: __switch_to, the guest half of a context switch.
//
// Mirrors arch/i386/kernel/process.c __switch_to in role.  The register
// switch itself is the engine's (it restores the next task's saved
// context); what must run as guest code is what touches the MMU and the
// CPU's tables: switch_mm (asm/kernel/tlb.S); the x87/SSE registers,
// eagerly (switch_fpu_prepare / switch_fpu_finish, v4.14: fxsave of the
// outgoing task, fxrstor of the incoming one unless this CPU still holds
// its state); load_TLS, the next task's three TLS descriptors into this
// CPU's GDT (2.6.0); and, for kmap_local,
// clearing the outgoing task's local PTEs and restoring the incoming
// task's (v5.11 __kmap_local_sched_out/in, called from __switch_to via
// kmap_local_sched_out / kmap_local_sched_in).
// Both tasks run on this CPU (no migration inside a kmap_local section).

// void __switch_to(struct thread_info *prev, struct thread_info *next)  EAX, EDX.
// Interrupts off.  Clobbers ECX, EDX.
__switch_to:
        push esi
        push edi
        mov esi, eax
        mov edi, edx
        mov eax, esi
        mov edx, dword ptr [esi + TI_CPU]
        call switch_fpu_prepare                     // switch_fpu_prepare(prev, cpu)
        mov eax, edi
        mov edx, dword ptr [edi + TI_CPU]
        call load_TLS                               // load_TLS(next, cpu)
        mov eax, esi
        call __kmap_local_sched_out
        mov eax, edi
        call __kmap_local_sched_in
        mov eax, edi
        mov edx, dword ptr [edi + TI_CPU]
        call switch_fpu_finish                      // switch_fpu_finish(next, cpu)
        pop edi
        pop esi
        ret

// void __kmap_local_sched_out(struct thread_info *ti)   EAX.  pte_clear + flush
// for each of the task's local mappings.
__kmap_local_sched_out:
        push ebx
        mov ecx, dword ptr [eax + TI_KMAP_IDX]
        test ecx, ecx
        jz 2f
        mov ebx, dword ptr [eax + TI_CPU]
        shl ebx, 4                                  // KM_MAX_IDX * cpu
1:      dec ecx
        lea eax, [ebx + ecx]                        // idx of slot i
        shl eax, 2
        mov edx, KMAP_LOCAL_PTE
        sub edx, eax
        mov dword ptr [edx], 0                      // pte_clear
        shl eax, 10
        neg eax
        add eax, KMAP_LOCAL_VADDR0
        invlpg [eax]                                // arch_kmap_local_post_unmap
        test ecx, ecx
        jnz 1b
2:      pop ebx
        ret

// void __kmap_local_sched_in(struct thread_info *ti)   EAX.  set_pte from the
// saved pteval + flush for each of the task's local mappings.
__kmap_local_sched_in:
        push ebx
        push esi
        mov esi, eax
        mov ecx, dword ptr [esi + TI_KMAP_IDX]
        test ecx, ecx
        jz 2f
        mov ebx, dword ptr [esi + TI_CPU]
        shl ebx, 4
1:      dec ecx
        lea eax, [ebx + ecx]
        shl eax, 2
        mov edx, KMAP_LOCAL_PTE
        sub edx, eax
        push eax
        mov eax, dword ptr [esi + TI_KMAP_PTEVAL + ecx*4]
        mov dword ptr [edx], eax                    // set_pte(kmap_pte - idx, pteval)
        pop eax
        shl eax, 10
        neg eax
        add eax, KMAP_LOCAL_VADDR0
        invlpg [eax]                                // arch_kmap_local_post_map
        test ecx, ecx
        jnz 1b
2:      pop esi
        pop ebx
        ret

// void load_TLS(struct thread_info *t, unsigned int cpu)   EAX, EDX.
// Mirrors 2.6.0 include/asm-i386/desc.h load_TLS: cpu_gdt_table[cpu][6..8] =
// t->tls_array[0..2].  Interrupts off (or preemption off: the CPU's own GDT).
// Clobbers ECX, EDX.
load_TLS:
        shl edx, CPU_GDT_SHIFT
        add edx, CPU_GDT_TABLE + 8 * GDT_ENTRY_TLS_MIN
        mov ecx, dword ptr [eax + TI_TLS_ARRAY]
        mov dword ptr [edx], ecx
        mov ecx, dword ptr [eax + TI_TLS_ARRAY + 4]
        mov dword ptr [edx + 4], ecx
        mov ecx, dword ptr [eax + TI_TLS_ARRAY + 8]
        mov dword ptr [edx + 8], ecx
        mov ecx, dword ptr [eax + TI_TLS_ARRAY + 12]
        mov dword ptr [edx + 12], ecx
        mov ecx, dword ptr [eax + TI_TLS_ARRAY + 16]
        mov dword ptr [edx + 16], ecx
        mov ecx, dword ptr [eax + TI_TLS_ARRAY + 20]
        mov dword ptr [edx + 20], ecx
        ret

// void switch_fpu_prepare(struct thread_info *prev, int cpu)   EAX, EDX.
// Mirrors v4.14 arch/x86/include/asm/fpu/internal.h switch_fpu_prepare:
// a task with FPU state saves its registers (fxsave keeps them loaded, so
// they stay valid for this CPU: last_cpu = cpu).  Interrupts off.
switch_fpu_prepare:
        cmp dword ptr [eax + TI_FPU_INITIALIZED], 0
        je 1f
        fxsave [eax + TI_FPU_STATE]                 // copy_fpregs_to_fpstate
        mov dword ptr [eax + TI_FPU_LAST_CPU], edx
        ret
1:      mov dword ptr [eax + TI_FPU_LAST_CPU], -1
        ret

// void switch_fpu_finish(struct thread_info *next, int cpu)   EAX, EDX.
// Mirrors v4.14 switch_fpu_finish: a task with FPU state gets its registers
// back with fxrstor, unless this CPU's registers still hold them
// (fpregs_state_valid: it was the last owner here, and nothing else was
// loaded since); then it owns them (fpregs_activate).  Interrupts off.
switch_fpu_finish:
        cmp dword ptr [eax + TI_FPU_INITIALIZED], 0
        je 2f
        cmp dword ptr [fpu_fpregs_owner_ctx + edx*4], eax
        jne 1f
        cmp dword ptr [eax + TI_FPU_LAST_CPU], edx
        je 3f
1:      fxrstor [eax + TI_FPU_STATE]                // copy_kernel_to_fpregs
3:      mov dword ptr [fpu_fpregs_owner_ctx + edx*4], eax
2:      ret

// void fpu__copy(struct thread_info *dst)   EAX.  Mirrors v4.14 fpu__copy
// for fxsr: the current task's live registers straight into the child's
// area.  Interrupts off.
fpu__copy:
        fxsave [eax + TI_FPU_STATE]
        ret

// void fpu__restore(struct thread_info *ti)   EAX.  The current task's
// registers from its area (fpu__clear's copy_init_fpstate_to_fpregs after
// the area was reset).  Interrupts off.  Clobbers EDX.
fpu__restore:
        fxrstor [eax + TI_FPU_STATE]
        mov edx, dword ptr [eax + TI_CPU]
        mov dword ptr [fpu_fpregs_owner_ctx + edx*4], eax
        ret

        .align 4
fpu_fpregs_owner_ctx: .space 4 * NR_CPUS      // per CPU: whose state the registers hold
