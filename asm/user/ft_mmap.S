// asm/user/ft_mmap.S: map a file MAP_SHARED, check it, store into it.
//
// ft_mmap path size seed store_off store_val
//   open(path, O_RDWR); p = mmap2(0, size, PROT_READ|PROT_WRITE, MAP_SHARED,
//   fd, 0); every byte p[i] must be pattern(i) (as ft_rw writes it); then
//   p[store_off] = store_val, munmap(p, size) (the PTE's dirty bit reaches
//   the page there), close.
// pattern(i) = (7*i + 3*(i >> 8) + 11*(i >> 12) + seed) & 0xff
// Exit code: 0 ok; 10 open, 11 mmap, 16 compare, 18 munmap, 17 close.

_start:
        mov eax, dword ptr [esp + 8]
        mov dword ptr [mm_size], eax
        mov eax, dword ptr [esp + 12]
        mov dword ptr [mm_seed], eax
        mov eax, dword ptr [esp + 16]
        mov dword ptr [mm_store_off], eax
        mov eax, dword ptr [esp + 20]
        mov dword ptr [mm_store_val], eax

        mov ebx, dword ptr [esp + 4]            // fd = open(path, O_RDWR)
        mov ecx, 2
        xor edx, edx
        call sys_open
        test eax, eax
        js mm_fail10
        mov dword ptr [mm_fd], eax

        push ebp                                // p = mmap2(0, size, 3, MAP_SHARED, fd, 0)
        xor ebx, ebx
        mov ecx, dword ptr [mm_size]
        mov edx, 3
        mov esi, 1
        mov edi, dword ptr [mm_fd]
        xor ebp, ebp
        call sys_mmap2
        pop ebp
        cmp eax, -4096
        jae mm_fail11
        mov dword ptr [mm_p], eax

        xor ecx, ecx                            // compare through the mapping
1:      cmp ecx, dword ptr [mm_size]
        jae 2f
        mov eax, ecx
        call mm_pattern
        mov edx, dword ptr [mm_p]
        cmp byte ptr [edx + ecx], al
        jne mm_fail16
        inc ecx
        jmp 1b
2:      mov edx, dword ptr [mm_p]               // the store
        add edx, dword ptr [mm_store_off]
        mov eax, dword ptr [mm_store_val]
        mov byte ptr [edx], al

        mov ebx, dword ptr [mm_p]
        mov ecx, dword ptr [mm_size]
        call sys_munmap
        test eax, eax
        jnz mm_fail18
        mov ebx, dword ptr [mm_fd]
        call sys_close
        test eax, eax
        jnz mm_fail17
        xor ebx, ebx
        call sys_exit

mm_fail10: mov ebx, 10
        jmp mm_die
mm_fail11: mov ebx, 11
        jmp mm_die
mm_fail16: mov ebx, 16
        jmp mm_die
mm_fail17: mov ebx, 17
        jmp mm_die
mm_fail18: mov ebx, 18
mm_die: call sys_exit

// unsigned char mm_pattern(unsigned i)   EAX -> AL.  Clobbers EDX.
mm_pattern:
        push ecx
        mov ecx, eax
        imul edx, eax, 7
        shr eax, 8
        lea eax, [eax + eax*2]
        add edx, eax
        mov eax, ecx
        shr eax, 12
        imul eax, eax, 11
        add eax, edx
        add eax, dword ptr [mm_seed]
        pop ecx
        ret

        .align 4
mm_size:      .long 0
mm_seed:      .long 0
mm_store_off: .long 0
mm_store_val: .long 0
mm_fd:        .long 0
mm_p:         .long 0
