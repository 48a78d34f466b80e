// asm/kernel/highmem.S: kmap_atomic / kunmap_atomic and the page helpers
// built on them.
//
// Mirrors arch/i386/mm/highmem.c (2.5.34) and include/linux/highmem.h.
//
// struct page * is the kernel virtual address of the page's entry in
// mem_map (32 bytes each, MEM_MAP_VA); pfn = (page - mem_map) >> 5, so
// pfn << 12 = (page - mem_map) << 7.
//
// kmap_atomic(page, type): per-CPU fixmap slot
//   idx = type + KM_TYPE_NR * smp_processor_id()
//   vaddr = __fix_to_virt(FIX_KMAP_BEGIN + idx)
//   set_pte(kmap_pte - idx, mk_pte(page, kmap_prot)); __flush_tlb_one(vaddr)
// with the preempt count raised (2.5.34: "for in_atomic in do_page_fault").
// Without debug_highmem, kunmap_atomic only drops the preempt count: the PTE
// stays, so a task that sleeps holding a slot and finds it reused by
// another task on the same CPU silently accesses the wrong page.

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
kunmap_atomic:
        cmp dword ptr [debug_highmem], 0
        je 9f
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

        .align 4
highmem_start_page:     .long 0         // struct page * of the first highmem frame
debug_highmem:          .long 0         // boot option debug_highmem
