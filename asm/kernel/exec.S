// asm/kernel/exec.S: execve's argument copy, fs/exec.c (2.4.18).
//
// struct linux_binprm, the part this code uses (lowmem, the caller's):
//   BPRM_P     p: where the next string ends, an offset into the
//              MAX_ARG_PAGES * PAGE_SIZE argument area (strings are copied
//              from the top down: the filename, then envp, then argv)
//   BPRM_KDS   1 while the source is kernel memory (copy_strings_kernel's
//              set_fs(KERNEL_DS)): no access_ok on the array and strings
//   BPRM_PAGE  struct page *page[MAX_ARG_PAGES], 0 until a string reaches it
//
// copy_strings allocates each argument page on first use
// (alloc_page(GFP_HIGHUSER): highmem when there is some) and copies every
// piece of every string with kmap / copy_from_user / kunmap: one kmap
// (kmap_high for a highmem page) per string piece, as in 2.4.18.  This was
// Martin Bligh's biggest kmap_high caller on a kernel compile (2.27 M of
// 3.76 M calls); the lab counts it as kmap_high_calls.copy_strings.
// Boot option copy_strings=kmapped_page (word copy_strings_kmapped) is
// Andrew Morton's version in his kmap patches (2.5.25-akpm, Jul 2002,
// <3D2BC6DB.B60E010D@zip.com.au>; 2.5.x kept it): the page stays kmapped
// while consecutive pieces land in it (kmapped_page), so one kmap per
// argument page instead of one per string.

// int count(char **argv, int max)   EAX, EDX -> EAX: the number of
// pointers before the NULL, -EFAULT, or -E2BIG past max.  May sleep (faults).
count:
        push ebx
        push esi
        push edi
        mov esi, eax
        mov edi, edx
        xor ebx, ebx
        test esi, esi
        jz 3f                               // argv == NULL: no arguments
1:      cmp esi, PAGE_OFFSET - 4
        ja 4f
        mov eax, esi
        call __get_user_4
        test eax, eax
        jnz 5f
        test edx, edx
        jz 3f
        add esi, 4
        inc ebx
        cmp ebx, edi
        jb 1b
        mov eax, -7                         // -E2BIG
        jmp 6f
3:      mov eax, ebx
        jmp 6f
4:      mov eax, -14
        jmp 6f
5:      mov eax, -14
6:      pop edi
        pop esi
        pop ebx
        ret

// long strnlen_user(const char __user *s, long n)   EAX, EDX -> EAX: the
// length with the NUL, 0 on a fault (or a kernel address), more than n if
// the string is longer.  __strnlen_user: no address check (KERNEL_DS).
strnlen_user:
        cmp eax, PAGE_OFFSET
        jb __strnlen_user
        xor eax, eax
        ret
__strnlen_user:
        push edi
        mov edi, eax
        xor eax, eax
1:
snu_load:
        cmp byte ptr [edi + eax], 0
        je 2f
        inc eax
        cmp eax, edx
        jbe 1b
        jmp 3f                              // longer than n
2:      inc eax
3:      pop edi
        ret
snu_fix:
        xor eax, eax
        jmp 3b
        .extable snu_load, snu_fix

// int copy_strings(int argc, char **argv, struct linux_binprm *bprm)
// EAX, EDX, ECX -> EAX = 0, -EFAULT, -E2BIG or -ENOMEM.  fs/exec.c
// (2.4.18).  May sleep (page allocation, kmap_high, user faults).
// Numeric labels only up to the kmap call: the per-caller kmap profile
// credits the nearest symbol before the return address.
        .equ CS_ARGV, 0
        .equ CS_BPRM, 4
        .equ CS_STR, 8
        .equ CS_LEN, 12
        .equ CS_POS, 16
        .equ CS_SLOT, 20
        .equ CS_NEW, 24
        .equ CS_PAGE, 28
        .equ CS_ERR, 32
        .equ CS_KMAPPED, 36                 // kmapped_page: the page kmapped now, or 0
        .equ CS_KADDR, 40                   // its kernel address
copy_strings:
        push ebx
        push esi
        push edi
        push ebp
        sub esp, 44
        mov dword ptr [esp + CS_KMAPPED], 0
        mov ebp, eax                        // argc
        mov dword ptr [esp + CS_ARGV], edx
        mov dword ptr [esp + CS_BPRM], ecx
10:                                  // the next string
        dec ebp                             // while (argc-- > 0)
        js cs_ok
        mov eax, dword ptr [esp + CS_ARGV]
        lea eax, [eax + ebp*4]
        mov ecx, dword ptr [esp + CS_BPRM]
        cmp dword ptr [ecx + BPRM_KDS], 0
        jne 1f
        cmp eax, PAGE_OFFSET - 4
        ja cs_efault
1:      call __get_user_4                   // get_user(str, argv + argc)
        test eax, eax
        jnz cs_efault
        mov dword ptr [esp + CS_STR], edx
        mov eax, edx
        mov ecx, dword ptr [esp + CS_BPRM]
        mov edx, dword ptr [ecx + BPRM_P]
        cmp dword ptr [ecx + BPRM_KDS], 0
        jne 2f
        call strnlen_user                   // len = strnlen_user(str, bprm->p)
        jmp 3f
2:      call __strnlen_user
3:      test eax, eax
        jz cs_efault
        mov ecx, dword ptr [esp + CS_BPRM]
        cmp dword ptr [ecx + BPRM_P], eax
        jb cs_e2big                         // bprm->p < len
        sub dword ptr [ecx + BPRM_P], eax   // bprm->p -= len
        mov dword ptr [esp + CS_LEN], eax
        mov eax, dword ptr [ecx + BPRM_P]
        mov dword ptr [esp + CS_POS], eax   // pos = bprm->p
11:                                  // the next piece of this string
        mov eax, dword ptr [esp + CS_LEN]
        test eax, eax
        jle 10b
        mov eax, dword ptr [esp + CS_POS]
        mov esi, eax
        and esi, 4095                       // offset = pos % PAGE_SIZE
        shr eax, 12                         // i = pos / PAGE_SIZE
        mov ecx, dword ptr [esp + CS_BPRM]
        lea edi, [ecx + BPRM_PAGE + eax*4]
        mov dword ptr [esp + CS_SLOT], edi
        mov dword ptr [esp + CS_NEW], 0
        mov eax, dword ptr [edi]            // page = bprm->page[i]
        test eax, eax
        jnz 12f
        mov eax, SVC_ALLOC_PAGE             // page = alloc_page(GFP_HIGHUSER)
        int KSVC_VECTOR
        mov edi, dword ptr [esp + CS_SLOT]
        mov dword ptr [edi], eax            // bprm->page[i] = page
        test eax, eax
        jz cs_enomem
        mov dword ptr [esp + CS_NEW], 1
12:
        mov dword ptr [esp + CS_PAGE], eax
        cmp eax, dword ptr [esp + CS_KMAPPED]
        je 13f                              // if (page != kmapped_page) {
        mov eax, dword ptr [esp + CS_KMAPPED]
        test eax, eax
        jz 14f
        call kunmap                         //   if (kmapped_page) kunmap(kmapped_page)
14:     mov eax, dword ptr [esp + CS_PAGE]
        mov dword ptr [esp + CS_KMAPPED], eax   // kmapped_page = page
        call kmap                           //   kaddr = kmap(kmapped_page) }
        mov dword ptr [esp + CS_KADDR], eax
13:     mov edi, dword ptr [esp + CS_KADDR]
        cmp dword ptr [esp + CS_NEW], 0
        je 4f
        test esi, esi
        jz 4f
        push edi                            // if (new && offset) memset(kaddr, 0, offset)
        mov ecx, esi
        xor eax, eax
        rep stosb
        pop edi
4:      mov ebx, 4096
        sub ebx, esi                        // bytes_to_copy = PAGE_SIZE - offset
        cmp ebx, dword ptr [esp + CS_LEN]
        jbe 5f
        mov ebx, dword ptr [esp + CS_LEN]   // bytes_to_copy = len
        cmp dword ptr [esp + CS_NEW], 0
        je 5f
        push edi                            // memset(kaddr+offset+len, 0, PAGE_SIZE-offset-len)
        add edi, esi
        add edi, ebx
        mov ecx, 4096
        sub ecx, esi
        sub ecx, ebx
        xor eax, eax
        rep stosb
        pop edi
5:      lea eax, [edi + esi]                // copy_from_user(kaddr + offset, str, bytes_to_copy)
        mov edx, dword ptr [esp + CS_STR]
        mov ecx, ebx
        mov edi, dword ptr [esp + CS_BPRM]
        cmp dword ptr [edi + BPRM_KDS], 0
        jne 6f
        call copy_from_user
        jmp 7f
6:      call __copy_from_user
7:      mov dword ptr [esp + CS_ERR], eax
        cmp dword ptr [copy_strings_kmapped], 0
        jne 15f
        mov eax, dword ptr [esp + CS_PAGE]
        call kunmap                         // kunmap(page) after every piece (2.4.18)
        mov dword ptr [esp + CS_KMAPPED], 0
15:     cmp dword ptr [esp + CS_ERR], 0
        jne cs_efault
        add dword ptr [esp + CS_POS], ebx
        add dword ptr [esp + CS_STR], ebx
        sub dword ptr [esp + CS_LEN], ebx
        jmp 11b
cs_ok:  xor eax, eax
        jmp cs_out
cs_efault:
        mov eax, -14
        jmp cs_out
cs_e2big:
        mov eax, -7
        jmp cs_out
cs_enomem:
        mov eax, -12
cs_out: mov ebx, eax
        mov eax, dword ptr [esp + CS_KMAPPED]
        test eax, eax
        jz 16f
        call kunmap                         // out: if (kmapped_page) kunmap(kmapped_page)
16:     mov eax, ebx
        add esp, 44
        pop ebp
        pop edi
        pop esi
        pop ebx
        ret

        .data
        .align 4
copy_strings_kmapped:   .long 0         // boot option copy_strings=kmapped_page
