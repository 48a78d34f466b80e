// asm/user/execer.S: execve from a forked child, and execve's errors.
//
//   execer MODE
// MODE 0: fork; the child execs /bin/echoargs with 3 arguments and one
//         environment string; the parent checks the child's status is
//         3 << 8 (echoargs exits with its argc... here 3).
// MODE 1: execve's errors, each must come back to the caller:
//         a missing file -ENOENT, a data file "notelf" -ENOEXEC, a bad argv
//         pointer -EFAULT, an argument longer than the 128 KiB argument
//         area -E2BIG; then the process still runs and exits 0.
// MODE 2: exec itself (no fork) into echoargs with no environment.
// Exit code 0: as expected; 5..12: which check failed.

_start:
        mov eax, dword ptr [esp + 4]
        cmp eax, 1
        je mode_errors
        cmp eax, 2
        je mode_self

        call sys_fork
        test eax, eax
        js fail5
        jnz 1f
        lea ebx, [echo_path]
        lea ecx, [echo_argv]
        lea edx, [echo_envp]
        call sys_execve
        mov ebx, 99                         // exec failed
        call sys_exit
1:      mov ebx, eax
        lea ecx, [status]
        xor edx, edx
        call sys_waitpid
        test eax, eax
        js fail6
        cmp dword ptr [status], 0x300
        jne fail7
        jmp ok

mode_self:
        lea ebx, [echo_path]
        lea ecx, [echo_argv]
        xor edx, edx
        call sys_execve
        jmp fail5

mode_errors:
        lea ebx, [missing_path]
        lea ecx, [echo_argv]
        xor edx, edx
        call sys_execve
        cmp eax, -2
        jne fail5
        lea ebx, [data_path]
        lea ecx, [echo_argv]
        xor edx, edx
        call sys_execve
        cmp eax, -8
        jne fail6
        lea ebx, [echo_path]
        mov ecx, 0xC0000000
        xor edx, edx
        call sys_execve
        cmp eax, -14
        jne fail7
        mov eax, 34 * 4096                  // a 34-page string of 'a'
        call mmap_anon
        cmp eax, 0xfffff000
        jae fail8
        mov edi, eax
        mov dword ptr [big_argv + 4], eax
        mov ecx, 34 * 4096 - 1
        mov al, 'a'
        rep stosb
        mov byte ptr [edi], 0
        lea ebx, [echo_path]
        lea ecx, [big_argv]
        xor edx, edx
        call sys_execve
        cmp eax, -7
        jne fail9
        jmp ok

ok:     xor ebx, ebx
        call sys_exit
fail5:  mov ebx, 5
        call sys_exit
fail6:  mov ebx, 6
        call sys_exit
fail7:  mov ebx, 7
        call sys_exit
fail8:  mov ebx, 8
        call sys_exit
fail9:  mov ebx, 9
        call sys_exit

        .align 4
status:       .long 0
echo_argv:    .long arg0, arg1, arg2, 0
echo_envp:    .long env0, 0
big_argv:     .long arg0, 0, 0
echo_path:    .asciz "/bin/echoargs"
missing_path: .asciz "/bin/nosuchprogram"
data_path:    .asciz "/notelf"
arg0:         .asciz "echoargs"
arg1:         .asciz "hello"
arg2:         .asciz "world"
env0:         .asciz "PATH=/bin"
