/* main.S: first file of the multi-file fixture for tests/test_asm.py.
 * The tests find lines by searching this text, so it may be edited freely.
 */
#include "defs.h"

        .globl kmap_atomic
        .type kmap_atomic, @function
kmap_atomic:                            // void *kmap_atomic(struct page *page)
        mov eax, dword ptr [esp + 4]
        mov ecx, offset pkmap_count
        cmp dword ptr [pkmap_count + 4], 0
        jne 1f
        BUG
1:      shl eax, PAGE_SHIFT
        ret

__copy_user:                            ; Linux's __copy_user, i386
        rep movsl
0:      mov ecx, edx
1:      rep movsb
2:      ret
3:      lea ecx, [ecx + edx*4]
        jmp 2b
        .extable 0b, 3b
        .extable 1b, 2b

spin_lock:
        .spin spin_lock_wait
1:      mov eax, 1
        lock xchg dword ptr [ecx], eax
        test eax, eax
        jnz 1b
        .endspin
        ret

flush_tlb_one:
        invlpg [eax]
        mov eax, cr3
        mov cr3, eax
        int 0x81
        hlt
        iret

        .align 4
pkmap_count:
        .long 0, LAST_PKMAP
.Lmsg:  .asciz "a; b // c /* d */"
