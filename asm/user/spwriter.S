// asm/user/spwriter.S: write() a file page from an mmap of that page, again
// and again (the same-page write of the same-page-write scenario, in a loop).
//
//   spwriter PATH COUNT ITER [PAUSE]
// fd = open(PATH, O_RDWR); p = mmap2(0, 4096, PROT_READ, MAP_SHARED, fd, 0);
// ITER times: lseek(fd, 0, SEEK_SET); write(fd, p, COUNT); then PAUSE turns
// of a user-mode loop (default 0: think time between writes, no syscall).  The file's page
// 0 is copied onto itself: its bytes never change.  Whether the source is
// present when the copy runs depends on what else the machine does (reclaim
// may take the page between the kernel's prefault and its lock_page).
// A write may fail with -EFAULT when another task cut the file under the
// mapping (ftruncate): the loop goes on.
// Exit code: 0 every write returned COUNT or -EFAULT; 1 one returned
// something else; 10 open, 11 mmap.

_start:
        mov eax, dword ptr [esp + 8]
        mov dword ptr [sw_count], eax
        mov eax, dword ptr [esp + 12]
        mov dword ptr [sw_iter], eax
        cmp dword ptr [esp], 4
        jb 2f
        mov eax, dword ptr [esp + 16]
        mov dword ptr [sw_pause], eax
2:
        mov ebx, dword ptr [esp + 4]
        mov ecx, 2                              // O_RDWR
        xor edx, edx
        call sys_open
        test eax, eax
        js sw_fail10
        mov dword ptr [sw_fd], eax
        push ebp
        xor ebx, ebx
        mov ecx, 4096
        mov edx, 1                              // PROT_READ
        mov esi, 1                              // MAP_SHARED
        mov edi, dword ptr [sw_fd]
        xor ebp, ebp
        call sys_mmap2
        pop ebp
        cmp eax, -4096
        jae sw_fail11
        mov dword ptr [sw_map], eax
1:      cmp dword ptr [sw_iter], 0
        je sw_ok
        dec dword ptr [sw_iter]
        mov ebx, dword ptr [sw_fd]              // lseek(fd, 0, SEEK_SET)
        xor ecx, ecx
        xor edx, edx
        mov eax, 19
        int 0x80
        mov ebx, dword ptr [sw_fd]              // write(fd, p, count)
        mov ecx, dword ptr [sw_map]
        mov edx, dword ptr [sw_count]
        call sys_write
        cmp eax, dword ptr [sw_count]
        je 3f
        cmp eax, -14                            // -EFAULT: the file was cut under the
        je 3f                                   // mapping (a truncate): go on
        mov ebx, 1
        jmp sw_die
3:      mov ecx, dword ptr [sw_pause]           // think time
        jecxz 1b
4:      dec ecx
        jnz 4b
        jmp 1b
sw_ok:  xor ebx, ebx
        jmp sw_die
sw_fail10: mov ebx, 10
        jmp sw_die
sw_fail11: mov ebx, 11
sw_die: call sys_exit

        .align 4
sw_count: .long 0
sw_iter:  .long 0
sw_fd:    .long 0
sw_map:   .long 0
sw_pause: .long 0
