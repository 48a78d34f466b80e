// asm/kernel/memory.S: get_user_pages' inner step in guest code.
//
// Mirrors mm/memory.c (2.4.18): follow_page() walks the two-level page
// tables of an mm by hand (pgd_offset, pmd_offset folded, pte_offset through
// the direct map: 2.4 keeps page tables in lowmem), and get_user_pages()
// does, for each page, spin_lock(&mm->page_table_lock); follow_page();
// get_page(); spin_unlock().  The rest of get_user_pages (find_vma, the
// handle_mm_fault retry when follow_page finds nothing) is Python
// (minikernel/write_paths.py), as the rest of the mm is.
//
// Locks: page_table_lock taken and released here (a spinlock: may spin,
// never sleeps).  The caller holds mm->mmap_sem for reading.
// Data: struct page is PAGE_STRUCT_SIZE bytes at MEM_MAP_VA + pfn * size;
// page->count at PG_COUNT.

// struct page *follow_page_get(struct mm_struct *mm, unsigned long address)
// EAX = mm, EDX = address.  2.4.18 get_user_pages' loop body with write=0:
// the page with a reference taken (get_page), or 0 if not present.
follow_page_get:
        push ebx
        push esi
        mov ebx, eax
        mov esi, edx
        lea eax, [ebx + MM_PAGE_TABLE_LOCK]
        call _spin_lock                         // spin_lock(&mm->page_table_lock)
        mov eax, ebx
        mov edx, esi
        call follow_page
        test eax, eax
        jz 1f
        lock inc dword ptr [eax + PG_COUNT]     // get_page(map)
1:      push eax
        lea eax, [ebx + MM_PAGE_TABLE_LOCK]
        call _spin_unlock                       // spin_unlock(&mm->page_table_lock)
        pop eax
        pop esi
        pop ebx
        ret

// static struct page *follow_page(struct mm_struct *mm, unsigned long address)
// EAX = mm, EDX = address (write = 0).  page_table_lock held.  Clobbers ECX.
// pgd_bad/pmd_bad are not checked: this kernel never makes a bad entry.
follow_page:
        mov ecx, dword ptr [eax + MM_PGD]       // pgd = pgd_offset(mm, address)
        mov eax, edx
        shr eax, 22
        mov ecx, dword ptr [ecx + eax*4]        // pmd = *pgd (folded)
        test ecx, 1
        jz 9f                                   // pmd_none
        and ecx, 0xfffff000
        add ecx, PAGE_OFFSET                    // pte_offset(): __va(pmd_page(*pmd))
        mov eax, edx
        shr eax, 12
        and eax, 0x3ff
        mov ecx, dword ptr [ecx + eax*4]        // pte = *ptep
        test ecx, 1
        jz 9f                                   // !pte_present(pte)
        shr ecx, 12                             // pte_page(pte) = mem_map + pfn
        imul ecx, ecx, PAGE_STRUCT_SIZE
        lea eax, [ecx + MEM_MAP_VA]
        ret
9:      xor eax, eax
        ret
