// asm/user/hello.S: print "hello from cpu N" and exit.
//
// Asks the kernel which CPU it runs on (getcpu, nr 318), formats the line
// on its stack and writes it to stdout.

_start:
        sub esp, 16
        mov ebx, esp                    // &cpu
        xor ecx, ecx
        xor edx, edx
        call sys_getcpu
        test eax, eax
        jnz fail
        mov eax, 1
        lea edx, [msg]
        call puts_fd
        mov eax, dword ptr [esp]
        lea edx, [numbuf_end]
        call utoa
        mov ecx, eax                    // write(1, digits, numbuf_end - digits + 1)
        lea edx, [numbuf_end + 1]
        sub edx, eax
        mov ebx, 1
        call sys_write
        xor ebx, ebx
        call sys_exit
fail:
        mov ebx, 1
        call sys_exit

msg:    .asciz "hello from cpu "
numbuf: .space 12
numbuf_end: .byte 10
