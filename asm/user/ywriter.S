// asm/user/ywriter.S: write a file page by page, yielding the CPU after
// every write().
//
//   ywriter PATH NPAGES TAG
// open(PATH, O_CREAT|O_WRONLY|O_TRUNC); a one-page anonymous buffer filled
// with the byte TAG; NPAGES times: write(fd, buf, 4096) (a fresh page-cache
// page each time), sched_yield(); close.  With another runnable task on
// the CPU, every write is followed by a context switch.
// Exit code: 0 ok; 20 open, 21 mmap, 22 a short write.

_start:
        mov ebx, dword ptr [esp + 4]            // PATH
        mov ecx, 0x241                          // O_CREAT | O_TRUNC | O_WRONLY
        mov edx, 0x1a4
        call sys_open
        test eax, eax
        js 7f
        mov dword ptr [fd], eax
        mov eax, 4096
        call mmap_anon
        cmp eax, 0xfffff000
        jae 8f
        mov dword ptr [buf], eax
        mov edi, eax                            // memset(buf, TAG, 4096)
        mov eax, dword ptr [esp + 12]
        mov ecx, 4096
        cld
        rep stosb
        mov esi, dword ptr [esp + 8]            // pages left
1:      test esi, esi
        jz 2f
        mov ebx, dword ptr [fd]
        mov ecx, dword ptr [buf]
        mov edx, 4096
        call sys_write
        cmp eax, 4096
        jne 9f
        call sys_sched_yield
        dec esi
        jmp 1b
2:      mov ebx, dword ptr [fd]
        call sys_close
        xor ebx, ebx
        call sys_exit
7:      mov ebx, 20
        call sys_exit
8:      mov ebx, 21
        call sys_exit
9:      mov ebx, 22
        call sys_exit

fd:     .long 0
buf:    .long 0
