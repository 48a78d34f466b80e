// asm/user/ft_samepage.S: write() a file page from an mmap of that page.
//
// ft_samepage path count
//   fd = open(path, O_RDWR); p = mmap2(0, 4096, PROT_READ, MAP_SHARED, fd, 0)
//   (not touched: its page is not in the page cache yet unless someone read
//   it); write(fd, p, count) at offset 0: the copy's source faults on the
//   very page the write holds locked (the 2.5.34 same-page deadlock when
//   count is a whole page, so the page is not read before the copy).
// Exit code: 0 the write returned count; 1 it returned something else;
// 2 -EFAULT; 10 open, 11 mmap.

_start:
        mov eax, dword ptr [esp + 8]
        mov dword ptr [sp_count], eax
        mov ebx, dword ptr [esp + 4]
        mov ecx, 2                              // O_RDWR
        xor edx, edx
        call sys_open
        test eax, eax
        js sp_fail10
        mov dword ptr [sp_fd], eax
        push ebp
        xor ebx, ebx
        mov ecx, 4096
        mov edx, 1                              // PROT_READ
        mov esi, 1                              // MAP_SHARED
        mov edi, dword ptr [sp_fd]
        xor ebp, ebp
        call sys_mmap2
        pop ebp
        cmp eax, -4096
        jae sp_fail11
        mov ecx, eax                            // write(fd, p, count)
        mov ebx, dword ptr [sp_fd]
        mov edx, dword ptr [sp_count]
        call sys_write
        xor ebx, ebx
        cmp eax, dword ptr [sp_count]
        je sp_die
        mov ebx, 2
        cmp eax, -14
        je sp_die
        mov ebx, 1
        jmp sp_die
sp_fail10: mov ebx, 10
        jmp sp_die
sp_fail11: mov ebx, 11
sp_die: call sys_exit

        .align 4
sp_count: .long 0
sp_fd:    .long 0
