// asm/user/lib.S: the user-side C library of kmaplab programs, in asm.
//
// Each sys_* stub takes the Linux i386 syscall arguments in EBX, ECX, EDX,
// ESI, EDI, EBP (as `int 0x80` wants them) and returns EAX.  Helpers use
// regparm(3) like the kernel: EAX, EDX, ECX in, EAX out.

sys_exit:       mov eax, 1
                int 0x80
                hlt                     // not reached
sys_read:       mov eax, 3
                int 0x80
                ret
sys_write:      mov eax, 4
                int 0x80
                ret
sys_open:       mov eax, 5
                int 0x80
                ret
sys_close:      mov eax, 6
                int 0x80
                ret
sys_getpid:     mov eax, 20
                int 0x80
                ret
sys_munmap:     mov eax, 91
                int 0x80
                ret
sys_clone:      mov eax, 120
                int 0x80
                ret
sys_sched_yield: mov eax, 158
                int 0x80
                ret
sys_nanosleep:  mov eax, 162
                int 0x80
                ret
sys_mmap2:      mov eax, 192
                int 0x80
                ret
sys_getcpu:     mov eax, 318
                int 0x80
                ret
sys_fork:       mov eax, 2
                int 0x80
                ret
sys_waitpid:    mov eax, 7
                int 0x80
                ret
sys_execve:     mov eax, 11
                int 0x80
                ret
sys_kill:       mov eax, 37
                int 0x80
                ret
sys_pipe:       mov eax, 42
                int 0x80
                ret
sys_dup2:       mov eax, 63
                int 0x80
                ret
sys_getppid:    mov eax, 64
                int 0x80
                ret
sys_wait4:      mov eax, 114
                int 0x80
                ret

// int strlen(const char *s)   EAX -> EAX
strlen:
        mov edx, eax
1:      cmp byte ptr [edx], 0
        je 2f
        inc edx
        jmp 1b
2:      sub edx, eax
        mov eax, edx
        ret

// char *utoa(unsigned v, char *buf_end)   EAX, EDX: writes the decimal digits
// ending just before buf_end; returns a pointer to the first digit.
utoa:
        push ebx
        mov ecx, edx
        mov ebx, 10
1:      xor edx, edx
        div ebx
        add dl, '0'
        dec ecx
        mov byte ptr [ecx], dl
        test eax, eax
        jnz 1b
        mov eax, ecx
        pop ebx
        ret

// void puts_fd(int fd, const char *s)   EAX, EDX: write(fd, s, strlen(s))
puts_fd:
        push ebx
        push ecx
        mov ebx, eax
        mov eax, edx
        push edx
        call strlen
        pop ecx
        mov edx, eax
        call sys_write
        pop ecx
        pop ebx
        ret

// void *mmap_anon(size_t len)   EAX -> EAX: mmap2(0, len, PROT_READ|PROT_WRITE,
// MAP_PRIVATE|MAP_ANONYMOUS, -1, 0); an address, or -errno (>= 0xfffff000).
mmap_anon:
        push ebx
        push esi
        push edi
        push ebp
        mov ecx, eax
        xor ebx, ebx
        mov edx, 3
        mov esi, 0x22
        mov edi, -1
        xor ebp, ebp
        call sys_mmap2
        pop ebp
        pop edi
        pop esi
        pop ebx
        ret

// void msleep(unsigned ms)   EAX: nanosleep({ms / 1000, ms % 1000 * 1000000}).
msleep:
        push ebx
        xor edx, edx
        mov ecx, 1000
        div ecx
        mov dword ptr [msleep_ts], eax
        imul edx, edx, 1000000
        mov dword ptr [msleep_ts + 4], edx
        lea ebx, [msleep_ts]
        xor ecx, ecx
        call sys_nanosleep
        pop ebx
        ret

        .align 4
msleep_ts: .long 0, 0
sys_set_thread_area: mov eax, 243
                int 0x80
                ret
sys_get_thread_area: mov eax, 244
                int 0x80
                ret
