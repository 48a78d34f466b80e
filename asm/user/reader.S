// asm/user/reader.S: read a file from start to end, again and again (cat).
//
//   reader PATH ROUNDS [PAUSE]
// ROUNDS times: open(PATH, O_RDONLY), read() it 4096 bytes at a time into
// one buffer until read() returns 0, close; after each read, PAUSE turns of
// a user-mode loop (default 0: think time, no syscall).  A file bigger than the free
// memory streams through the page cache: every page read is a new page
// cache page, and reclaim keeps taking the oldest clean ones (the streaming
// load of "dbench 64 on mem=48m").
// Exit code: 0 ok; 30 open failed, 31 read failed.

_start:
        mov eax, dword ptr [esp + 4]
        mov dword ptr [rd_path], eax
        mov eax, dword ptr [esp + 8]
        mov dword ptr [rd_rounds], eax
        cmp dword ptr [esp], 3
        jb rd_round
        mov eax, dword ptr [esp + 12]
        mov dword ptr [rd_pause], eax
rd_round:
        cmp dword ptr [rd_rounds], 0
        je rd_ok
        dec dword ptr [rd_rounds]
        mov ebx, dword ptr [rd_path]
        xor ecx, ecx                            // O_RDONLY
        xor edx, edx
        call sys_open
        test eax, eax
        js rd_fail30
        mov dword ptr [rd_fd], eax
1:      mov ebx, dword ptr [rd_fd]
        lea ecx, [rd_buf]
        mov edx, 4096
        call sys_read
        test eax, eax
        js rd_fail31
        jz 2f
        mov ecx, dword ptr [rd_pause]           // think time
        jecxz 1b
3:      dec ecx
        jnz 3b
        jmp 1b
2:
        mov ebx, dword ptr [rd_fd]
        call sys_close
        jmp rd_round
rd_ok:  xor ebx, ebx
        jmp rd_die
rd_fail30: mov ebx, 30
        jmp rd_die
rd_fail31: mov ebx, 31
rd_die: call sys_exit

        .align 4
rd_path:   .long 0
rd_rounds: .long 0
rd_fd:     .long 0
rd_pause:  .long 0
        .align 4096
rd_buf:    .space 4096
