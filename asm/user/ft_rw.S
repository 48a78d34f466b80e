// asm/user/ft_rw.S: write a pattern to a file, read it back, compare.
//
// ft_rw path size wchunk rchunk seed
//   wchunk > 0: open(path, O_CREAT|O_RDWR|O_TRUNC), write `size` bytes of
//   pattern(seed) from an anonymous buffer in pieces of `wchunk` bytes (so
//   pieces straddle page boundaries and end mid-page), lseek(fd, 0).
//   wchunk = 0: open(path, O_RDONLY) a file that already holds the pattern.
//   Then read it back in pieces of `rchunk` into a second buffer, check that
//   read() at end of file returns 0, compare, close.
//   seed = -1: the source buffer is never touched by the program (its pages
//   are not even faulted in) and the file must read back as zeros.
// pattern(i) = (7*i + 3*(i >> 8) + 11*(i >> 12) + seed) & 0xff
// Exit code: 0 ok; 10 open, 11 mmap, 12 write, 13 lseek, 14 read,
// 15 read at EOF, 16 compare, 17 close.

_start:
        mov eax, dword ptr [esp + 4]
        mov dword ptr [rw_path], eax
        mov eax, dword ptr [esp + 8]
        mov dword ptr [rw_size], eax
        mov eax, dword ptr [esp + 12]
        mov dword ptr [rw_wchunk], eax
        mov eax, dword ptr [esp + 16]
        mov dword ptr [rw_rchunk], eax
        mov eax, dword ptr [esp + 20]
        mov dword ptr [rw_seed], eax

        mov ebx, dword ptr [rw_path]            // fd = open(path, flags, 0644)
        xor ecx, ecx                            // O_RDONLY
        cmp dword ptr [rw_wchunk], 0
        je 1f
        mov ecx, 0x242                          // O_CREAT | O_TRUNC | O_RDWR
1:      mov edx, 0x1a4
        call sys_open
        test eax, eax
        js rw_fail10
        mov dword ptr [rw_fd], eax

        call rw_map_buffer
        mov dword ptr [rw_src], eax
        call rw_map_buffer
        mov dword ptr [rw_dst], eax

        cmp dword ptr [rw_wchunk], 0
        je rw_read
        cmp dword ptr [rw_seed], -1
        je rw_write
        xor ecx, ecx                            // fill the source buffer
2:      cmp ecx, dword ptr [rw_size]
        jae rw_write
        mov eax, ecx
        call rw_pattern
        mov edx, dword ptr [rw_src]
        mov byte ptr [edx + ecx], al
        inc ecx
        jmp 2b

rw_write:
        xor esi, esi                            // offset written so far
3:      mov ecx, dword ptr [rw_size]
        sub ecx, esi
        jz 4f
        mov edx, dword ptr [rw_wchunk]
        cmp edx, ecx
        jbe 5f
        mov edx, ecx
5:      mov ecx, dword ptr [rw_src]
        add ecx, esi
        mov ebx, dword ptr [rw_fd]
        push edx
        call sys_write
        pop edx
        cmp eax, edx
        jne rw_fail12
        add esi, eax
        jmp 3b
4:      mov ebx, dword ptr [rw_fd]              // lseek(fd, 0, SEEK_SET)
        xor ecx, ecx
        xor edx, edx
        call rw_sys_lseek
        test eax, eax
        jnz rw_fail13

rw_read:
        xor esi, esi                            // offset read so far
6:      mov ecx, dword ptr [rw_size]
        sub ecx, esi
        jz 7f
        mov edx, dword ptr [rw_rchunk]
        cmp edx, ecx
        jbe 8f
        mov edx, ecx
8:      mov ecx, dword ptr [rw_dst]
        add ecx, esi
        mov ebx, dword ptr [rw_fd]
        call sys_read
        test eax, eax
        jle rw_fail14
        add esi, eax
        jmp 6b
7:      mov ebx, dword ptr [rw_fd]              // read at EOF: 0
        mov ecx, dword ptr [rw_dst]
        mov edx, 1
        call sys_read
        test eax, eax
        jnz rw_fail15

        xor ecx, ecx                            // compare
9:      cmp ecx, dword ptr [rw_size]
        jae 10f
        mov eax, ecx
        call rw_pattern
        mov edx, dword ptr [rw_dst]
        cmp byte ptr [edx + ecx], al
        jne rw_fail16
        inc ecx
        jmp 9b
10:     mov ebx, dword ptr [rw_fd]
        call sys_close
        test eax, eax
        jnz rw_fail17
        xor ebx, ebx
        call sys_exit

rw_fail10: mov ebx, 10
        jmp rw_die
rw_fail12: mov ebx, 12
        jmp rw_die
rw_fail13: mov ebx, 13
        jmp rw_die
rw_fail14: mov ebx, 14
        jmp rw_die
rw_fail15: mov ebx, 15
        jmp rw_die
rw_fail16: mov ebx, 16
        jmp rw_die
rw_fail17: mov ebx, 17
rw_die: call sys_exit

// void *rw_map_buffer(void): mmap2(0, size, PROT_READ|PROT_WRITE,
// MAP_PRIVATE|MAP_ANONYMOUS, -1, 0); exits with 11 on failure.
rw_map_buffer:
        mov eax, dword ptr [rw_size]
        call mmap_anon
        cmp eax, -4096
        jae 1f
        ret
1:      mov ebx, 11
        call sys_exit

// unsigned char rw_pattern(unsigned i)   EAX -> AL.  Clobbers EDX.
rw_pattern:
        cmp dword ptr [rw_seed], -1
        je 1f
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
        add eax, dword ptr [rw_seed]
        pop ecx
        ret
1:      xor eax, eax
        ret

// off_t lseek(int fd, off_t offset, int whence)   EBX, ECX, EDX (nr 19).
rw_sys_lseek:
        mov eax, 19
        int 0x80
        ret

        .align 4
rw_path:   .long 0
rw_size:   .long 0
rw_wchunk: .long 0
rw_rchunk: .long 0
rw_seed:   .long 0
rw_fd:     .long 0
rw_src:    .long 0
rw_dst:    .long 0
