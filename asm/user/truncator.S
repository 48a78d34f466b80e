// asm/user/truncator.S: cut a file to nothing and grow it back, again and again.
//
//   truncator PATH SIZE ITER
// fd = open(PATH, O_RDWR); ITER times: ftruncate(fd, 0); ftruncate(fd, SIZE).
// Shrinking a file is vmtruncate: every mapping of its pages goes (PTEs
// zapped, TLBs flushed) and the pages leave the page cache; the file grows
// back as a hole (zeros).
// Exit code: 0 ok; 50 open; 51 an ftruncate failed.

_start:
        mov eax, dword ptr [esp + 8]
        mov dword ptr [tr_size], eax
        mov eax, dword ptr [esp + 12]
        mov dword ptr [tr_iter], eax
        mov ebx, dword ptr [esp + 4]
        mov ecx, 2                              // O_RDWR
        xor edx, edx
        call sys_open
        test eax, eax
        js tr_fail50
        mov dword ptr [tr_fd], eax
1:      cmp dword ptr [tr_iter], 0
        je tr_ok
        dec dword ptr [tr_iter]
        mov ebx, dword ptr [tr_fd]              // ftruncate(fd, 0)
        xor ecx, ecx
        mov eax, 93
        int 0x80
        test eax, eax
        jnz tr_fail51
        mov ebx, dword ptr [tr_fd]              // ftruncate(fd, SIZE)
        mov ecx, dword ptr [tr_size]
        mov eax, 93
        int 0x80
        test eax, eax
        jnz tr_fail51
        jmp 1b
tr_ok:  xor ebx, ebx
        jmp tr_die
tr_fail50: mov ebx, 50
        jmp tr_die
tr_fail51: mov ebx, 51
tr_die: call sys_exit

        .align 4
tr_size: .long 0
tr_iter: .long 0
tr_fd:   .long 0
