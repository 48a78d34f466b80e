// asm/user/echoargs.S: print argv and envp, one per line; exit with argc.
//
//   echoargs ARG...
// The initial stack as execve builds it: argc, argv[], NULL, envp[], NULL.

_start:
        mov ebp, esp
        mov esi, 1                          // argv[i]
1:      mov edx, dword ptr [ebp + esi*4]
        test edx, edx
        jz 2f
        mov eax, 1
        call puts_fd
        mov eax, 1
        lea edx, [newline]
        call puts_fd
        inc esi
        jmp 1b
2:      inc esi                             // envp[]
3:      mov edx, dword ptr [ebp + esi*4]
        test edx, edx
        jz 4f
        mov eax, 1
        call puts_fd
        mov eax, 1
        lea edx, [newline]
        call puts_fd
        inc esi
        jmp 3b
4:      mov ebx, dword ptr [ebp]
        call sys_exit

newline: .asciz "\n"
