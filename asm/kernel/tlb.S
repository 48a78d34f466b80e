// asm/kernel/tlb.S: TLB flushes and the shootdown IPIs, as on i386 SMP 2.4.
//
// Mirrors arch/i386/kernel/smp.c (2.4.18) and include/asm-i386/mmu_context.h.
//
// Data (all guarded as in Linux):
//   cpu_tlbstate[NR_CPUS] {active_mm, state}   per CPU, written by its owner
//   flush_cpumask, flush_mm, flush_va           guarded by tlbstate_lock
//   call_data_*                                 guarded by call_lock
//   cpu_online_map                              set at boot
//
// The initiator of a shootdown sends the IPI (kernel service call: the
// local APIC's ICR write) and spins until every target has acknowledged, with
// the lock held and interrupts ON.  Targets take the IPI only at an
// instruction boundary with EFLAGS.IF=1 (the machine enforces it), run the
// handler below, and acknowledge.  Time spent spinning is counted in the
// `tlb_ack_wait` and `call_function_wait` ranges.
//
//   cpu_has_pge, mmu_cr4_features               set at boot
//
// Global pages: with cpu_has_pge (boot option pge, default with tlb=p3) the
// kernel's PTEs carry _PAGE_GLOBAL and survive CR3 loads; __flush_tlb_all
// is then __flush_tlb_global, a CR3 reload with CR4.PGE turned off around
// it.  Under tlb=qemu QEMU drops global entries on a CR3 load anyway
// (docs/architecture.md).

#define TLBSTATE_OK 1
#define TLBSTATE_LAZY 2
#define FLUSH_ALL 0xffffffff

// void smp_invalidate_interrupt(void)   INVALIDATE_TLB_VECTOR handler.  IF=0.
smp_invalidate_interrupt:
        mov ecx, esp
        and ecx, 0xffffe000
        mov ecx, dword ptr [ecx + TI_CPU]
        bt dword ptr [flush_cpumask], ecx
        jnc 9f
        mov eax, dword ptr [flush_mm]
        cmp eax, dword ptr [cpu_tlbstate + ecx*8]
        jne 2f
        cmp dword ptr [cpu_tlbstate + ecx*8 + 4], TLBSTATE_OK
        jne 3f
        mov eax, dword ptr [flush_va]
        cmp eax, FLUSH_ALL
        jne 1f
        mov eax, cr3
        mov cr3, eax                    // local_flush_tlb()
        jmp 2f
1:      invlpg [eax]                    // __flush_tlb_one(flush_va)
        jmp 2f
3:      mov eax, ecx
        call leave_mm
        mov ecx, esp
        and ecx, 0xffffe000
        mov ecx, dword ptr [ecx + TI_CPU]
2:      lock btr dword ptr [flush_cpumask], ecx     // acknowledge
9:      ret

// void leave_mm(int cpu)   EAX = cpu.  Lazy TLB: stop receiving flush IPIs
// for the borrowed mm and switch to swapper_pg_dir.
leave_mm:
        mov edx, dword ptr [cpu_tlbstate + eax*8]
        lock btr dword ptr [edx + MM_CPU_VM_MASK], eax
        mov edx, SWAPPER_PG_DIR_PA
        mov cr3, edx
        ret

// static void flush_tlb_others(unsigned long cpumask, struct mm_struct *mm,
//                              unsigned long va)   EAX, EDX, ECX.  Spins.
flush_tlb_others:
        push ebx
        push esi
        push edi
        mov ebx, eax
        mov esi, edx
        mov edi, ecx
        lea eax, [tlbstate_lock]
        call _spin_lock
        mov dword ptr [flush_mm], esi
        mov dword ptr [flush_va], edi
        lock or dword ptr [flush_cpumask], ebx
        mov eax, SVC_SEND_IPI           // send_IPI_mask(cpumask, INVALIDATE_TLB_VECTOR)
        mov ecx, INVALIDATE_TLB_VECTOR
        int KSVC_VECTOR
        .spin tlb_ack_wait
flush_tlb_others_wait:
        pause
        cmp dword ptr [flush_cpumask], 0
        jne flush_tlb_others_wait
        .endspin
        mov dword ptr [flush_mm], 0
        mov dword ptr [flush_va], 0
        lea eax, [tlbstate_lock]
        call _spin_unlock
        pop edi
        pop esi
        pop ebx
        ret

// void flush_tlb_mm(struct mm_struct *mm)   EAX = mm.  Spins.
flush_tlb_mm:
        push ebx
        mov ecx, esp
        and ecx, 0xffffe000
        mov ecx, dword ptr [ecx + TI_CPU]
        mov ebx, dword ptr [eax + MM_CPU_VM_MASK]
        btr ebx, ecx                    // cpu_mask = mm->cpu_vm_mask & ~(1 << cpu)
        cmp eax, dword ptr [cpu_tlbstate + ecx*8]
        jne 1f                          // current->active_mm != mm
        cmp dword ptr [cpu_tlbstate + ecx*8 + 4], TLBSTATE_OK
        jne 2f
        mov edx, cr3
        mov cr3, edx                    // local_flush_tlb()
        jmp 1f
2:      push eax
        mov eax, ecx
        call leave_mm
        pop eax
1:      test ebx, ebx
        jz 3f
        mov edx, eax
        mov eax, ebx
        mov ecx, FLUSH_ALL
        call flush_tlb_others
3:      pop ebx
        ret

// void flush_tlb_page(struct mm_struct *mm, unsigned long va)  EAX, EDX.  Spins.
// (2.4 takes the vma; only vma->vm_mm is used.)
flush_tlb_page:
        push ebx
        push esi
        mov esi, edx
        mov ecx, esp
        and ecx, 0xffffe000
        mov ecx, dword ptr [ecx + TI_CPU]
        mov ebx, dword ptr [eax + MM_CPU_VM_MASK]
        btr ebx, ecx
        cmp eax, dword ptr [cpu_tlbstate + ecx*8]
        jne 1f
        cmp dword ptr [cpu_tlbstate + ecx*8 + 4], TLBSTATE_OK
        jne 2f
        invlpg [esi]                    // __flush_tlb_one(va)
        jmp 1f
2:      push eax
        mov eax, ecx
        call leave_mm
        pop eax
1:      test ebx, ebx
        jz 3f
        mov edx, eax
        mov eax, ebx
        mov ecx, esi
        call flush_tlb_others
3:      pop esi
        pop ebx
        ret

// void __flush_tlb_all(void)   include/asm-i386/pgalloc.h (2.4.18): with
// cpu_has_pge __flush_tlb_global(): CR4.PGE off, CR3 reload, CR4.PGE on
// (a CR4 write that changes PGE drops every entry, global ones too); else
// __flush_tlb(), a CR3 reload.  Clobbers EAX, EDX.
__flush_tlb_all:
        cmp dword ptr [cpu_has_pge], 0
        je 1f
        mov edx, dword ptr [mmu_cr4_features]
        and edx, 0xffffff7f             // ~X86_CR4_PGE
        mov cr4, edx                    // turn off PGE
        mov eax, cr3
        mov cr3, eax                    // flush TLB
        mov edx, dword ptr [mmu_cr4_features]
        mov cr4, edx                    // turn PGE back on
        ret
1:      mov eax, cr3
        mov cr3, eax                    // __flush_tlb()
        ret

// static void do_flush_tlb_all_local(void)
do_flush_tlb_all_local:
        call __flush_tlb_all
        mov ecx, esp
        and ecx, 0xffffe000
        mov eax, dword ptr [ecx + TI_CPU]
        cmp dword ptr [cpu_tlbstate + eax*8 + 4], TLBSTATE_LAZY
        jne 1f
        call leave_mm
1:      ret

// void flush_tlb_all(void)   smp_call_function(flush_tlb_all_ipi, 0, 1, 1) +
// the local flush.  Waits for every other CPU.  Spins.
flush_tlb_all:
        lea eax, [do_flush_tlb_all_local]
        xor edx, edx
        mov ecx, 1
        call smp_call_function
        call do_flush_tlb_all_local
        ret

// int smp_call_function(void (*func)(void *), void *info, int wait)
// EAX, EDX, ECX.  Runs func(info) on every other online CPU; with wait,
// returns only when all have finished.  Spins with call_lock held.
smp_call_function:
        push ebx
        push esi
        push edi
        mov esi, eax
        mov edi, edx
        mov ebx, ecx
        mov eax, dword ptr [nr_online_cpus]
        dec eax
        jz 9f
        lea eax, [call_lock]
        call _spin_lock
        mov dword ptr [call_data_func], esi
        mov dword ptr [call_data_info], edi
        mov dword ptr [call_data_started], 0
        mov dword ptr [call_data_finished], 0
        mov dword ptr [call_data_wait], ebx
        mov ecx, esp                    // send_IPI_allbutself(CALL_FUNCTION_VECTOR)
        and ecx, 0xffffe000
        mov ecx, dword ptr [ecx + TI_CPU]
        mov ebx, dword ptr [cpu_online_map]
        btr ebx, ecx
        mov eax, SVC_SEND_IPI
        mov ecx, CALL_FUNCTION_VECTOR
        int KSVC_VECTOR
        mov ecx, dword ptr [nr_online_cpus]
        dec ecx
        .spin call_function_wait
smp_call_function_started:
        pause
        cmp dword ptr [call_data_started], ecx
        jne smp_call_function_started
        cmp dword ptr [call_data_wait], 0
        je 1f
smp_call_function_finished:
        pause
        cmp dword ptr [call_data_finished], ecx
        jne smp_call_function_finished
        .endspin
1:      lea eax, [call_lock]
        call _spin_unlock
9:      xor eax, eax
        pop edi
        pop esi
        pop ebx
        ret

// void smp_call_function_interrupt(void)   CALL_FUNCTION_VECTOR handler.  IF=0.
smp_call_function_interrupt:
        push ebx
        push esi
        mov ebx, dword ptr [call_data_func]
        mov eax, dword ptr [call_data_info]
        mov esi, dword ptr [call_data_wait]
        lock inc dword ptr [call_data_started]
        call ebx
        test esi, esi
        jz 1f
        lock inc dword ptr [call_data_finished]
1:      pop esi
        pop ebx
        ret

// void switch_mm(struct mm_struct *prev, struct mm_struct *next, int cpu)
// EAX, EDX, ECX.  include/asm-i386/mmu_context.h (2.4).
switch_mm:
        cmp eax, edx
        je 2f
        test eax, eax
        jz 1f
        lock btr dword ptr [eax + MM_CPU_VM_MASK], ecx   // stop flush IPIs for prev
1:      mov dword ptr [cpu_tlbstate + ecx*8 + 4], TLBSTATE_OK
        mov dword ptr [cpu_tlbstate + ecx*8], edx
        lock bts dword ptr [edx + MM_CPU_VM_MASK], ecx
        mov eax, dword ptr [edx + MM_PGD]
        sub eax, PAGE_OFFSET
        mov cr3, eax                    // load_cr3(next->pgd)
        ret
2:      mov dword ptr [cpu_tlbstate + ecx*8 + 4], TLBSTATE_OK
        lock bts dword ptr [edx + MM_CPU_VM_MASK], ecx
        jc 3f
        // We were in lazy TLB mode and leave_mm disabled flush IPIs: flush now.
        mov eax, dword ptr [edx + MM_PGD]
        sub eax, PAGE_OFFSET
        mov cr3, eax
3:      ret

// void enter_lazy_tlb(struct mm_struct *mm, int unused, int cpu)   EAX, -, ECX.
enter_lazy_tlb:
        cmp dword ptr [cpu_tlbstate + ecx*8 + 4], TLBSTATE_OK
        jne 1f
        mov dword ptr [cpu_tlbstate + ecx*8 + 4], TLBSTATE_LAZY
1:      ret

        .data                           // kernel data: on its own pages (vm/asm.py)
        .align 4
cpu_tlbstate:   .space 8 * NR_CPUS
flush_cpumask:  .long 0
flush_mm:       .long 0
flush_va:       .long 0
tlbstate_lock:  .long 0
call_lock:      .long 0
call_data_func: .long 0
call_data_info: .long 0
call_data_started: .long 0
call_data_finished: .long 0
call_data_wait: .long 0
cpu_online_map: .long 0
nr_online_cpus: .long 0
cpu_has_pge:    .long 0
mmu_cr4_features: .long 0
