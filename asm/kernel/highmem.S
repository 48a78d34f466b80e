// asm/kernel/highmem.S: kmap/kunmap, kmap_atomic/kunmap_atomic,
// kmap_local_page/kunmap_local, and the page helpers built on them.
//
// Mirrors mm/highmem.c (2.4.18: kmap_high, map_new_virtual,
// flush_all_zero_pkmaps, kunmap_high), include/asm-i386/highmem.h and
// arch/i386/mm/highmem.c (2.5.34: kmap_atomic), mm/highmem.c (v5.11:
// kmap_local_page, kunmap_local, __kmap_local_sched_out/in).
//
// struct page * is the kernel virtual address of the page's entry in
// mem_map (32 bytes each, MEM_MAP_VA); pfn = (page - mem_map) >> 5, so
// pfn << 12 = (page - mem_map) << 7.  page->virtual is at PG_VIRTUAL.
//
// The PKMAP pool (persistent kmaps), guarded by kmap_lock:
//   pkmap_count[n]: 0 = unmapped and flushed since: usable;
//                   1 = no users, but mapped since the last flush: NOT usable
//                       (another CPU may still have it in its TLB);
//                   n > 1 = n - 1 users.
//   last_pkmap_nr: where map_new_virtual looks next.  When it wraps to 0,
//   flush_all_zero_pkmaps() unmaps every count-1 slot and calls
//   flush_tlb_all(): IPIs to every other CPU and a wait for all of them,
//   with kmap_lock held.
//   pkmap_map_wait: tasks that found no free slot sleep there (kernel
//   service calls); kunmap_high wakes them when a count drops to 1.
//
// kmap_atomic(page, type): a per-CPU fixmap slot per km_type, with the
// preempt count raised (2.5.34: "for in_atomic in do_page_fault").  Without
// debug_highmem, kunmap_atomic only drops the preempt count: the PTE stays,
// so a task that sleeps holding a slot and finds it reused by another task
// on the same CPU silently accesses the wrong page.
//
// kmap_local_page(page): a per-task stack of slots (KM_MAX_IDX per CPU,
// after the km_type slots in the fixmap); preemption and faults allowed
// inside; __switch_to clears the outgoing task's local PTEs and restores
// the incoming task's (asm/kernel/switch.S).

// void *kmap(struct page *page)   EAX -> EAX.  May sleep.  Clobbers ECX.
// include/asm-i386/highmem.h (2.4.18): `if (in_interrupt()) out_of_line_bug();`
// in_interrupt(): the softirq/hardirq fields of preempt_count (2.5).
kmap:
        mov ecx, esp
        and ecx, 0xffffe000
        test dword ptr [ecx + TI_PREEMPT_COUNT], IRQ_MASK
        jz 1f
        BUG                                         // kmap from interrupt context
1:      cmp eax, dword ptr [highmem_start_page]
        jae kmap_high
        sub eax, MEM_MAP_VA                         // page_address(lowmem page)
        shl eax, 7
        add eax, PAGE_OFFSET
        ret

// void kunmap(struct page *page)   EAX.  Clobbers ECX.  `if (in_interrupt())
// out_of_line_bug();` as kmap.
kunmap:
        mov ecx, esp
        and ecx, 0xffffe000
        test dword ptr [ecx + TI_PREEMPT_COUNT], IRQ_MASK
        jz 1f
        BUG                                         // kunmap from interrupt context
1:      cmp eax, dword ptr [highmem_start_page]
        jae kunmap_high
        ret

// void *kmap_high(struct page *page)   EAX -> EAX.  May sleep.  Takes kmap_lock.
// "For highmem pages, we can't trust virtual until after we have the lock."
kmap_high:
        push ebx
        push esi
        mov ebx, eax
        call kmap_lock_acquire
        mov eax, dword ptr [ebx + PG_VIRTUAL]
        test eax, eax
        jnz 1f
        mov eax, ebx
        call map_new_virtual
1:      mov ecx, eax
        sub ecx, PKMAP_BASE
        shr ecx, 12                                 // PKMAP_NR(vaddr)
        inc dword ptr [pkmap_count + ecx*4]
        cmp dword ptr [pkmap_count + ecx*4], 2
        jge 2f
        BUG                                         // pkmap_count[nr] < 2
2:      mov esi, eax
        call kmap_lock_release
        mov eax, esi
        pop esi
        pop ebx
        ret

// static unsigned long map_new_virtual(struct page *page)   EAX -> EAX.
// kmap_lock held on entry and exit (dropped while sleeping).  May sleep.
map_new_virtual:
        push ebx
        push esi
        push edi
        mov edi, eax
mnv_start:
        mov esi, LAST_PKMAP                         // count
mnv_next:
        mov eax, dword ptr [last_pkmap_nr]
        inc eax
        and eax, LAST_PKMAP_MASK
        mov dword ptr [last_pkmap_nr], eax
        jnz 1f
pkmap_wrap:
        call flush_all_zero_pkmaps
        mov esi, LAST_PKMAP
        xor eax, eax
1:      cmp dword ptr [pkmap_count + eax*4], 0
        je mnv_found                                // a usable entry
        dec esi
        jnz mnv_next
kmap_sleep:                                         // sleep for somebody to unmap theirs
        mov eax, SVC_PREPARE_WAIT
        mov ebx, PKMAP_WAIT_ID
        int KSVC_VECTOR                             // TASK_UNINTERRUPTIBLE, on pkmap_map_wait
        call kmap_lock_release
        mov eax, SVC_SCHEDULE
        int KSVC_VECTOR
        mov eax, SVC_FINISH_WAIT
        mov ebx, PKMAP_WAIT_ID
        int KSVC_VECTOR
        call kmap_lock_acquire
        mov eax, dword ptr [edi + PG_VIRTUAL]       // somebody else might have mapped it
        test eax, eax
        jnz mnv_out
        jmp mnv_start
mnv_found:
        mov ecx, edi
        sub ecx, MEM_MAP_VA
        shl ecx, 7
        or ecx, KMAP_PROT
        mov dword ptr [PKMAP_PTE + eax*4], ecx      // set_pte(&pkmap_page_table[nr], ...)
        mov dword ptr [pkmap_count + eax*4], 1
        shl eax, 12
        add eax, PKMAP_BASE                         // PKMAP_ADDR(nr)
        mov dword ptr [edi + PG_VIRTUAL], eax       // page->virtual = vaddr
mnv_out:
        pop edi
        pop esi
        pop ebx
        ret

// static void flush_all_zero_pkmaps(void)   kmap_lock held.  Spins (flush_tlb_all).
flush_all_zero_pkmaps:
        xor ecx, ecx
1:      cmp dword ptr [pkmap_count + ecx*4], 1
        jne 2f
        mov dword ptr [pkmap_count + ecx*4], 0
        mov eax, dword ptr [PKMAP_PTE + ecx*4]
        test eax, eax
        jnz 3f
        BUG                                         // sanity check: pte_none
3:      mov dword ptr [PKMAP_PTE + ecx*4], 0        // pte_clear(): no atomic op needed,
        shr eax, 12                                 // nobody can reach it without kmap_lock
        shl eax, 5
        add eax, MEM_MAP_VA
        mov dword ptr [eax + PG_VIRTUAL], 0         // page->virtual = NULL
2:      inc ecx
        cmp ecx, LAST_PKMAP
        jne 1b
        cmp dword ptr [pkmap_flush_local], 0
        jne 4f
        call flush_tlb_all
        ret
4:      call __flush_tlb_all                        // boot option pkmap_flush=local (not
        ret                                         // Linux): the other CPUs' next CR3 load

// void kunmap_high(struct page *page)   EAX.  Takes kmap_lock.  Never sleeps.
kunmap_high:
        push ebx
        push esi
        mov ebx, eax
        call kmap_lock_acquire
        mov eax, dword ptr [ebx + PG_VIRTUAL]
        test eax, eax
        jnz 1f
        BUG                                         // kunmap of a page that is not kmapped
1:      sub eax, PKMAP_BASE
        shr eax, 12
        xor esi, esi                                // need_wakeup
        dec dword ptr [pkmap_count + eax*4]
        jnz 2f
        BUG                                         // must never go down to zero without a TLB flush
2:      cmp dword ptr [pkmap_count + eax*4], 1
        jne 3f
        mov esi, dword ptr [pkmap_map_wait]         // waitqueue_active(): kmap_lock guards it
3:      call kmap_lock_release
        test esi, esi
        jz 4f
        mov eax, SVC_WAKE_UP                        // wake_up, race-free outside the lock
        mov ebx, PKMAP_WAIT_ID
        int KSVC_VECTOR
4:      pop esi
        pop ebx
        ret

// spin_lock(&kmap_lock) / spin_unlock(&kmap_lock), with their own spin loop.
// Clobber ECX, EDX.
kmap_lock_acquire:
        mov ecx, esp
        and ecx, 0xffffe000
        inc dword ptr [ecx + TI_PREEMPT_COUNT]
1:      mov edx, 1
        xchg dword ptr [kmap_lock], edx
        test edx, edx
        jnz 2f
        ret
        .spin kmap_lock_wait
2:      pause
        cmp dword ptr [kmap_lock], 0
        jne 2b
        .endspin
        jmp 1b

kmap_lock_release:
        mov dword ptr [kmap_lock], 0
        push eax
        call preempt_enable
        pop eax
        ret

// void *kmap_atomic(struct page *page, enum km_type type)   EAX, EDX -> EAX.
// Never sleeps.  Clobbers ECX, EDX.
kmap_atomic:
        mov ecx, esp
        and ecx, 0xffffe000
        inc dword ptr [ecx + TI_PREEMPT_COUNT]      // inc_preempt_count()
        cmp eax, dword ptr [highmem_start_page]
        jae 1f
        sub eax, MEM_MAP_VA                         // page_address(lowmem page)
        shl eax, 7
        add eax, PAGE_OFFSET
        ret
1:      push ebx
        mov ecx, dword ptr [ecx + TI_CPU]
        imul ecx, ecx, KM_TYPE_NR
        add ecx, edx                                // idx
        shl ecx, 2
        mov ebx, KMAP_PTE
        sub ebx, ecx                                // kmap_pte - idx
        cmp dword ptr [debug_highmem], 0
        je 2f
        cmp dword ptr [ebx], 0
        je 2f
        BUG                                         // slot in use (HIGHMEM_DEBUG)
2:      sub eax, MEM_MAP_VA
        shl eax, 7
        or eax, KMAP_PROT
        mov dword ptr [ebx], eax                    // set_pte()
        mov eax, ecx
        shl eax, 10                                 // idx << PAGE_SHIFT
        neg eax
        add eax, KMAP_VADDR0                        // __fix_to_virt(FIX_KMAP_BEGIN + idx)
        invlpg [eax]                                // __flush_tlb_one(vaddr)
        pop ebx
        ret

// void kunmap_atomic(void *kvaddr, enum km_type type)   EAX, EDX.  Never sleeps.
// HIGHMEM_DEBUG (2.5.34): vaddr = kvaddr & PAGE_MASK, so a kvaddr inside
// the page (kmap_atomic's result plus an offset) is the slot's address.
kunmap_atomic:
        cmp dword ptr [debug_highmem], 0
        je 9f
        and eax, 0xfffff000                         // vaddr = kvaddr & PAGE_MASK
        cmp eax, FIXADDR_START
        jb 9f                                       // a lowmem page: nothing mapped
        mov ecx, esp
        and ecx, 0xffffe000
        mov ecx, dword ptr [ecx + TI_CPU]
        imul ecx, ecx, KM_TYPE_NR
        add ecx, edx
        shl ecx, 2
        push eax
        mov eax, ecx
        shl eax, 10
        neg eax
        add eax, KMAP_VADDR0
        cmp eax, dword ptr [esp]
        je 1f
        BUG                                         // vaddr != __fix_to_virt(FIX_KMAP_BEGIN+idx)
1:      pop eax
        mov edx, KMAP_PTE
        sub edx, ecx
        mov dword ptr [edx], 0                      // pte_clear(kmap_pte - idx)
        invlpg [eax]                                // __flush_tlb_one(vaddr)
9:      mov ecx, esp
        and ecx, 0xffffe000
        dec dword ptr [ecx + TI_PREEMPT_COUNT]      // dec_preempt_count()
        ret

// void clear_user_highpage(struct page *page, unsigned long vaddr)   EAX, EDX.
// kmap_atomic(page, KM_USER0); clear_page; kunmap_atomic.  Never sleeps.
clear_user_highpage:
        push edi
        mov edx, KM_USER0
        call kmap_atomic
        mov edi, eax
        mov edx, eax
        xor eax, eax
        mov ecx, 1024
        rep stosd
        mov eax, edx
        mov edx, KM_USER0
        call kunmap_atomic
        pop edi
        ret

// void copy_user_highpage(struct page *to, struct page *from, unsigned long vaddr)
// EAX, EDX, ECX.  KM_USER0 for the source, KM_USER1 for the destination.
copy_user_highpage:
        push esi
        push edi
        push ebx
        mov ebx, eax
        mov eax, edx
        mov edx, KM_USER0
        call kmap_atomic
        mov esi, eax
        mov eax, ebx
        mov edx, KM_USER1
        call kmap_atomic
        mov edi, eax
        mov ebx, eax
        mov ecx, 1024
        rep movsl
        mov eax, ebx
        mov edx, KM_USER1
        call kunmap_atomic
        lea eax, [esi - 4096]
        mov edx, KM_USER0
        call kunmap_atomic
        pop ebx
        pop edi
        pop esi
        ret


// void *kmap_local_page(struct page *page)   EAX -> EAX.  Never sleeps; the
// mapping survives preemption and page faults of this task (v5.11).
kmap_local_page:
        cmp eax, dword ptr [highmem_start_page]
        jae 1f
        sub eax, MEM_MAP_VA
        shl eax, 7
        add eax, PAGE_OFFSET
        ret
1:      push ebx
        push esi
        mov esi, esp
        and esi, 0xffffe000
        inc dword ptr [esi + TI_PREEMPT_COUNT]      // preempt_disable()
        mov ecx, dword ptr [esi + TI_KMAP_IDX]
        inc ecx                                     // kmap_local_idx_push()
        cmp ecx, KM_MAX_IDX
        jb 2f
        BUG                                         // BUG_ON(idx >= KM_MAX_IDX)
2:      mov dword ptr [esi + TI_KMAP_IDX], ecx
        dec ecx                                     // this mapping's stack slot
        mov edx, dword ptr [esi + TI_CPU]
        shl edx, 4                                  // KM_MAX_IDX * smp_processor_id()
        add edx, ecx                                // idx
        shl edx, 2
        mov ebx, KMAP_LOCAL_PTE
        sub ebx, edx                                // kmap_pte - idx
        cmp dword ptr [ebx], 0
        je 3f
        BUG                                         // BUG_ON(!pte_none(*(kmap_pte - idx)))
3:      sub eax, MEM_MAP_VA
        shl eax, 7
        or eax, KMAP_PROT
        mov dword ptr [ebx], eax                    // set_pte
        mov dword ptr [esi + TI_KMAP_PTEVAL + ecx*4], eax   // kmap_ctrl.pteval[idx]
        mov eax, edx
        shl eax, 10
        neg eax
        add eax, KMAP_LOCAL_VADDR0                  // __fix_to_virt(FIX_KMAP_LOCAL_BEGIN + idx)
        invlpg [eax]                                // arch_kmap_local_post_map
        call preempt_enable
        pop esi
        pop ebx
        ret

// void kunmap_local(void *vaddr)   EAX.  Strictly the reverse order of the
// maps: anything else is reported (WARN_ON_ONCE) and, as in Linux, the TOP
// slot is the one cleared.  Never sleeps.
kunmap_local:
        and eax, 0xfffff000
        cmp eax, KMAP_LOCAL_VADDR_LO
        jb 9f                                       // not a local slot (a lowmem page)
        cmp eax, KMAP_LOCAL_VADDR0
        ja 9f
        push ebx
        push esi
        push edi
        mov edi, eax
        mov esi, esp
        and esi, 0xffffe000
        inc dword ptr [esi + TI_PREEMPT_COUNT]
        mov ecx, dword ptr [esi + TI_KMAP_IDX]
        dec ecx                                     // the top slot
        mov edx, dword ptr [esi + TI_CPU]
        shl edx, 4
        add edx, ecx
        shl edx, 2
        mov eax, edx
        shl eax, 10
        neg eax
        add eax, KMAP_LOCAL_VADDR0                  // where the top slot is mapped
        cmp eax, edi
        je 1f
        push eax
        push ecx
        push edx
        mov ecx, edi                                // WARN: unmap out of stack order
        mov edx, eax
        mov eax, SVC_CHECK
        mov ebx, 2
        int KSVC_VECTOR
        pop edx
        pop ecx
        pop eax
1:      mov ebx, KMAP_LOCAL_PTE
        sub ebx, edx
        mov dword ptr [ebx], 0                      // pte_clear
        invlpg [eax]                                // arch_kmap_local_post_unmap
        mov dword ptr [esi + TI_KMAP_PTEVAL + ecx*4], 0
        mov dword ptr [esi + TI_KMAP_IDX], ecx      // kmap_local_idx_pop()
        call preempt_enable
        pop edi
        pop esi
        pop ebx
9:      ret

        .data                           // kernel data: on its own pages (vm/asm.py)
        .align 4
highmem_start_page:     .long 0         // struct page * of the first highmem frame
debug_highmem:          .long 0         // boot option debug_highmem
pkmap_flush_local:      .long 0         // boot option pkmap_flush=local
kmap_lock:              .long 0
last_pkmap_nr:          .long 0
pkmap_map_wait:         .long 0         // number of sleepers (kept by the wait queue)
pkmap_count:            .space 4 * LAST_PKMAP
