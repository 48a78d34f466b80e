// asm/user/ft_efault.S: read() into bad user buffers.
//
// ft_efault path mode
//   fd = open(path, O_RDONLY) of a file of at least 200 bytes, then:
//   - read(fd, 0xc0000000, 16) must be -EFAULT (access_ok refuses it);
//   mode >= 1: read(fd, 0x20000000, 16), an unmapped user address, must be
//     -EFAULT (the copy faults, do_page_fault finds no VMA, the exception
//     table fixup makes the copy short);
//   mode >= 2: read(fd, p + 4096 - 100, 200) with only the page at p mapped
//     must return 100 (the bytes before the hole), leaving f_pos at 100.
// Exit code: 0 ok; 10 open, 1, 2, 3, 4 the check that failed, 11 mmap.

_start:
        mov eax, dword ptr [esp + 8]
        mov dword ptr [ef_mode], eax
        mov ebx, dword ptr [esp + 4]
        xor ecx, ecx
        xor edx, edx
        call sys_open
        test eax, eax
        js ef_fail10
        mov dword ptr [ef_fd], eax

        mov ebx, eax                            // a kernel address
        mov ecx, 0xc0000000
        mov edx, 16
        call sys_read
        cmp eax, -14
        jne ef_fail1
        cmp dword ptr [ef_mode], 1
        jb ef_done

        mov ebx, dword ptr [ef_fd]              // an unmapped user address
        mov ecx, 0x20000000
        mov edx, 16
        call sys_read
        cmp eax, -14
        jne ef_fail2
        cmp dword ptr [ef_mode], 2
        jb ef_done

        mov eax, 4096                           // p = mmap2(0, 4096, RW, PRIVATE|ANON)
        call mmap_anon
        cmp eax, -4096
        jae ef_fail11
        mov ebx, dword ptr [ef_fd]              // 100 bytes fit before the hole
        lea ecx, [eax + 4096 - 100]
        mov edx, 200
        call sys_read
        cmp eax, 100
        jne ef_fail3
        mov ebx, dword ptr [ef_fd]              // lseek(fd, 0, SEEK_CUR) == 100
        xor ecx, ecx
        mov edx, 1
        mov eax, 19
        int 0x80
        cmp eax, 100
        jne ef_fail4

ef_done:
        xor ebx, ebx
        call sys_exit
ef_fail1: mov ebx, 1
        jmp ef_die
ef_fail2: mov ebx, 2
        jmp ef_die
ef_fail3: mov ebx, 3
        jmp ef_die
ef_fail4: mov ebx, 4
        jmp ef_die
ef_fail10: mov ebx, 10
        jmp ef_die
ef_fail11: mov ebx, 11
ef_die: call sys_exit

        .align 4
ef_mode: .long 0
ef_fd:   .long 0
