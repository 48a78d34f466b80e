// asm/user/pipeline.S: `producer | consumer` with pipe, fork, dup2, execve.
//
//   pipeline MODE NBYTES
// MODE 0: pipe(); fork a producer that dup2s the write end onto fd 1 and
//         writes NBYTES of a pattern (byte i = i * 7 + 3) in 1000-byte writes,
//         then exits; fork a consumer that dup2s the read end onto fd 0 and
//         execs /bin/pipecheck NBYTES (which reads fd 0 to EOF and checks
//         every byte).  The parent closes both ends and reaps both: exit 0
//         when both exited 0.
// MODE 1: SIGPIPE: the read end is closed, a write must kill the writer
//         with SIGPIPE (the parent sees status 13) .
// Exit codes: 0 ok, 5..9 which check failed.

_start:
        mov eax, dword ptr [esp + 8]
        mov dword ptr [nbytes], eax
        cmp dword ptr [esp + 4], 1
        je mode_sigpipe
        lea ebx, [fds]
        call sys_pipe
        test eax, eax
        jnz fail5
        call sys_fork
        test eax, eax
        js fail5
        jz producer
        mov dword ptr [pid1], eax
        call sys_fork
        test eax, eax
        js fail5
        jz consumer
        mov dword ptr [pid2], eax
        mov ebx, dword ptr [fds]
        call sys_close
        mov ebx, dword ptr [fds + 4]
        call sys_close
        mov ebx, dword ptr [pid1]
        lea ecx, [status]
        xor edx, edx
        call sys_waitpid
        cmp dword ptr [status], 0
        jne fail6
        mov ebx, dword ptr [pid2]
        lea ecx, [status]
        xor edx, edx
        call sys_waitpid
        cmp dword ptr [status], 0
        jne fail7
        jmp ok

producer:
        mov ebx, dword ptr [fds + 4]
        mov ecx, 1
        call sys_dup2
        cmp eax, 1
        jne fail8
        mov ebx, dword ptr [fds]
        call sys_close
        mov ebx, dword ptr [fds + 4]
        call sys_close
        xor esi, esi                        // bytes written
1:      cmp esi, dword ptr [nbytes]
        jae ok
        xor edi, edi                        // fill one chunk
2:      lea eax, [esi + edi]
        imul eax, eax, 7
        add eax, 3
        mov byte ptr [chunk + edi], al
        inc edi
        cmp edi, 1000
        jb 2b
        mov edx, dword ptr [nbytes]
        sub edx, esi
        cmp edx, 1000
        jbe 3f
        mov edx, 1000
3:      mov ebx, 1
        lea ecx, [chunk]
        call sys_write
        test eax, eax
        jle fail9
        add esi, eax
        jmp 1b

consumer:
        mov ebx, dword ptr [fds]
        xor ecx, ecx
        call sys_dup2
        test eax, eax
        jnz fail8
        mov ebx, dword ptr [fds]
        call sys_close
        mov ebx, dword ptr [fds + 4]
        call sys_close
        lea ebx, [check_path]
        lea ecx, [check_argv]
        xor edx, edx
        mov eax, dword ptr [nbytes_str_p]
        call sys_execve
        jmp fail9

mode_sigpipe:
        lea ebx, [fds]
        call sys_pipe
        test eax, eax
        jnz fail5
        mov ebx, dword ptr [fds]
        call sys_close                      // no reader
        call sys_fork
        test eax, eax
        js fail5
        jnz 1f
        mov ebx, dword ptr [fds + 4]
        lea ecx, [chunk]
        mov edx, 10
        call sys_write                      // SIGPIPE kills us here
        mov ebx, 99
        call sys_exit
1:      mov ebx, eax
        lea ecx, [status]
        xor edx, edx
        call sys_waitpid
        cmp dword ptr [status], 13
        jne fail6
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
nbytes:       .long 0
fds:          .long 0, 0
pid1:         .long 0
pid2:         .long 0
status:       .long 0
nbytes_str_p: .long 0
check_argv:   .long check_name, 0
check_path:   .asciz "/bin/pipecheck"
check_name:   .asciz "pipecheck"
chunk:        .space 1000
