// asm/kernel/uaccess.S: copies between user and kernel space.
//
// Mirrors arch/i386/lib/usercopy.c and include/asm-i386/uaccess.h (2.4/2.5):
// `rep movsl` then `rep movsb`, each with an exception-table entry.  A fault
// on the user side goes to do_page_fault; if it cannot be resolved (bad
// address, or a fault in atomic context with atomic_fault=fixup), the
// handler continues at the fixup, which computes the bytes not copied and
// (for copy_from_user) zeroes the rest of the kernel buffer.
//
// All routines: regparm(3), EAX = bytes NOT copied (0 = complete), may
// sleep (the fault may), clobber ECX EDX.  access_ok(addr, n) is
// addr + n <= PAGE_OFFSET without wrapping.

// unsigned long copy_from_user(void *to, const void __user *from, unsigned long n)
copy_from_user:
        push ebx
        mov ebx, edx
        add ebx, ecx
        jc copy_from_user_bad
        cmp ebx, PAGE_OFFSET
        ja copy_from_user_bad
        pop ebx
        jmp __copy_from_user
copy_from_user_bad:                     // memset(to, 0, n); return n
        pop ebx
        push edi
        push ecx
        mov edi, eax
        xor eax, eax
        rep stosb
        pop eax
        pop edi
        ret

// unsigned long __copy_from_user(void *to, const void __user *from, unsigned long n)
// __copy_user_zeroing: no access_ok; the uncopied tail of `to` is zeroed.
__copy_from_user:
        push esi
        push edi
        push ebx
        mov edi, eax
        mov esi, edx
        mov ebx, ecx
        and ebx, 3
        shr ecx, 2
cfu_movsl:
        rep movsl
        mov ecx, ebx
cfu_movsb:
        rep movsb
cfu_done:
        mov eax, ecx
        pop ebx
        pop edi
        pop esi
        ret
cfu_fix_movsl:
        lea ecx, [ebx + ecx*4]
cfu_fix_movsb:
        push ecx
        xor eax, eax
        rep stosb
        pop ecx
        jmp cfu_done
        .extable cfu_movsl, cfu_fix_movsl
        .extable cfu_movsb, cfu_fix_movsb

// unsigned long __copy_from_user_inatomic(void *to, const void __user *from, unsigned long n)
// 2.6.19's __copy_from_user_ll_nozero: no zeroing, for callers that retry.
__copy_from_user_inatomic:
        push esi
        push edi
        push ebx
        mov edi, eax
        mov esi, edx
        mov ebx, ecx
        and ebx, 3
        shr ecx, 2
cfui_movsl:
        rep movsl
        mov ecx, ebx
cfui_movsb:
        rep movsb
cfui_done:
        mov eax, ecx
        pop ebx
        pop edi
        pop esi
        ret
cfui_fix_movsl:
        lea ecx, [ebx + ecx*4]
        jmp cfui_done
        .extable cfui_movsl, cfui_fix_movsl
        .extable cfui_movsb, cfui_done

// unsigned long copy_to_user(void __user *to, const void *from, unsigned long n)
copy_to_user:
        push ebx
        mov ebx, eax
        add ebx, ecx
        jc ctu_bad
        cmp ebx, PAGE_OFFSET
        ja ctu_bad
        pop ebx
        jmp __copy_to_user
ctu_bad:                                // return n: nothing copied
        pop ebx
        mov eax, ecx
        ret

// unsigned long __copy_to_user(void __user *to, const void *from, unsigned long n)
// __copy_user (2.4/2.5): no access_ok, the caller checked the range (e.g.
// generic_file_read's access_ok at entry).  Used by file_read_actor.
__copy_to_user:
        push esi
        push edi
        push ebx
        mov edi, eax
        mov esi, edx
        mov ebx, ecx
        and ebx, 3
        shr ecx, 2
ctu_movsl:
        rep movsl
        mov ecx, ebx
ctu_movsb:
        rep movsb
ctu_done:
        mov eax, ecx
        pop ebx
        pop edi
        pop esi
        ret
ctu_fix_movsl:
        lea ecx, [ebx + ecx*4]
        jmp ctu_done
        .extable ctu_movsl, ctu_fix_movsl
        .extable ctu_movsb, ctu_done

// int __get_user_1(const char __user *p)   EAX = 0 or -EFAULT, EDX = the byte.
__get_user_1:
gu1_load:
        movzx edx, byte ptr [eax]
        xor eax, eax
        ret
gu1_fix:
        xor edx, edx
        mov eax, -14
        ret
        .extable gu1_load, gu1_fix

// int __get_user_4(const u32 __user *p)   EAX = 0 or -EFAULT, EDX = the word.
__get_user_4:
gu4_load:
        mov edx, dword ptr [eax]
        xor eax, eax
        ret
gu4_fix:
        xor edx, edx
        mov eax, -14
        ret
        .extable gu4_load, gu4_fix

// int __put_user_1(char __user *p, char v)   EAX = 0 or -EFAULT.
__put_user_1:
pu1_store:
        mov byte ptr [eax], dl
        xor eax, eax
        ret
pu1_fix:
        mov eax, -14
        ret
        .extable pu1_store, pu1_fix

// int __put_user_4(u32 __user *p, u32 v)   EAX = 0 or -EFAULT.
__put_user_4:
pu4_store:
        mov dword ptr [eax], edx
        xor eax, eax
        ret
pu4_fix:
        mov eax, -14
        ret
        .extable pu4_store, pu4_fix

// unsigned long clear_user(void __user *to, unsigned long n)  EAX = bytes not cleared.
clear_user:
        push ebx
        mov ebx, eax
        add ebx, edx
        jc cu_bad
        cmp ebx, PAGE_OFFSET
        ja cu_bad
        pop ebx
        jmp __clear_user
cu_bad:                                 // return n: nothing cleared
        pop ebx
        mov eax, edx
        ret

// unsigned long __clear_user(void *to, unsigned long n)   EAX = bytes not cleared.
// No access_ok.  Also the memset(kaddr + off, 0, n) of block_prepare_write
// and block_write_full_page on a kmap_atomic'd page (fs/buffer.c, 2.5.34):
// the same `rep stosl; rep stosb`, and a kmapped page cannot fault.
__clear_user:
        push edi
        push ebx
        mov edi, eax
        mov ecx, edx
        mov ebx, ecx
        and ebx, 3
        shr ecx, 2
        xor eax, eax
cu_stosl:
        rep stosd
        mov ecx, ebx
cu_stosb:
        rep stosb
cu_done:
        mov eax, ecx
        pop ebx
        pop edi
        ret
cu_fix_stosl:
        lea ecx, [ebx + ecx*4]
        jmp cu_done
        .extable cu_stosl, cu_fix_stosl
        .extable cu_stosb, cu_done

// long strncpy_from_user(char *dst, const char __user *src, long count)
// EAX = length copied (without the NUL), or -EFAULT.  2.4/2.5
// arch/i386/lib/usercopy.c: `if (access_ok(VERIFY_READ, src, 1))
// __do_strncpy_from_user(...)`, else -EFAULT: src + 1 <= PAGE_OFFSET.
strncpy_from_user:
        cmp edx, PAGE_OFFSET
        jb 4f
        mov eax, -14                                // -EFAULT: a kernel address
        ret
4:      push esi
        push edi
        mov edi, eax
        mov esi, edx
        mov edx, ecx
        test ecx, ecx
        jz 2f
1:
sfu_load:
        lodsb
        stosb
        test al, al
        jz 2f
        dec ecx
        jnz 1b
2:      sub edx, ecx
        mov eax, edx
3:      pop edi
        pop esi
        ret
sfu_fix:
        mov eax, -14
        jmp 3b
        .extable sfu_load, sfu_fix

// int fault_in_pages_readable(const char __user *uaddr, int size)
// include/linux/pagemap.h (2.5.34): __get_user of the first byte and, if the
// range crosses a page, of the last.  EAX = 0 or -EFAULT.  May sleep.
fault_in_pages_readable:
        push ebx
        lea ebx, [eax + edx - 1]
        push eax
        call __get_user_1
        pop ecx
        test eax, eax
        jnz 1f
        xor ecx, ebx
        and ecx, 0xfffff000
        jz 1f
        mov eax, ebx
        call __get_user_1
1:      pop ebx
        ret

// int fault_in_pages_writeable(char __user *uaddr, int size)
// __put_user(0, ...) of the first byte and, across a page, of the last.
fault_in_pages_writeable:
        push ebx
        lea ebx, [eax + edx - 1]
        push eax
        xor edx, edx
        call __put_user_1
        pop ecx
        test eax, eax
        jnz 1f
        xor ecx, ebx
        and ecx, 0xfffff000
        jz 1f
        mov eax, ebx
        xor edx, edx
        call __put_user_1
1:      pop ebx
        ret

// void pagefault_disable(void) / pagefault_enable(void)   (2.6.20; v5.x's
// current->pagefault_disabled).  While raised, a fault in kernel mode goes
// straight to the exception-table fixup, whatever atomic_fault says, and
// preemption stays allowed.  Clobber ECX.
pagefault_disable:
        mov ecx, esp
        and ecx, 0xffffe000
        inc dword ptr [ecx + TI_PAGEFAULT_DISABLED]
        ret
pagefault_enable:
        mov ecx, esp
        and ecx, 0xffffe000
        dec dword ptr [ecx + TI_PAGEFAULT_DISABLED]
        ret

// ---- one page piece of a write(), copied into a page-cache page ------------
// The per-page copies of mm/filemap.c, each with its own kmap flavour.
// EAX = struct page *, EDX = offset in the page, ECX = user source,
// [esp+4] = bytes.  EAX = bytes NOT copied.

// size_t filemap_copy_from_user (2.5.34), its atomic half: kmap_atomic(KM_USER0)
// + __copy_from_user (zeroes the uncopied tail) + kunmap_atomic.  The kmap()
// fallback on a short copy is the caller's.  May fault (atomic_fault decides).
filemap_copy_from_user_atomic:
        push ebx
        push esi
        push edi
        mov esi, ecx
        mov edi, edx
        mov ebx, dword ptr [esp + 16]
        mov edx, KM_USER0
        call kmap_atomic
        push eax
        add eax, edi
        mov edx, esi
        mov ecx, ebx
        call __copy_from_user
        mov ebx, eax
        pop eax
        mov edx, KM_USER0
        call kunmap_atomic
        mov eax, ebx
        pop edi
        pop esi
        pop ebx
        ret

// size_t iov_iter_copy_from_user_atomic (2.6.24): kmap_atomic(KM_USER0) +
// __copy_from_user_inatomic (no zeroing) + kunmap_atomic.  Faults are
// refused by the raised preempt count (2.6.20 pagefault_disable).
iov_iter_copy_from_user_atomic:
        push ebx
        push esi
        push edi
        mov esi, ecx
        mov edi, edx
        mov ebx, dword ptr [esp + 16]
        mov edx, KM_USER0
        call kmap_atomic
        push eax
        call pagefault_disable
        mov eax, dword ptr [esp]
        add eax, edi
        mov edx, esi
        mov ecx, ebx
        call __copy_from_user_inatomic
        mov ebx, eax
        call pagefault_enable
        pop eax
        mov edx, KM_USER0
        call kunmap_atomic
        mov eax, ebx
        pop edi
        pop esi
        pop ebx
        ret

// size_t copy_page_from_iter_local (the v5.11+ shape): kmap_local_page +
// pagefault_disable + __copy_from_user_inatomic + pagefault_enable +
// kunmap_local.  Preemption stays allowed throughout.
copy_page_from_iter_local:
        push ebx
        push esi
        push edi
        mov esi, ecx
        mov edi, edx
        mov ebx, dword ptr [esp + 16]
        call kmap_local_page
        push eax
        call pagefault_disable
        mov eax, dword ptr [esp]
        add eax, edi
        mov edx, esi
        mov ecx, ebx
        call __copy_from_user_inatomic
        mov ebx, eax
        call pagefault_enable
        pop eax
        call kunmap_local
        mov eax, ebx
        pop edi
        pop esi
        pop ebx
        ret
