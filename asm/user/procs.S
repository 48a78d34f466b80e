// asm/user/procs.S: fork, wait4, exit statuses, kill, copy on write.
//
//   procs MODE [N]
// MODE 0 (exit):   fork N children; child i exits with code i+1; the parent
//                  reaps them with wait4(-1) and checks each status is
//                  (code << 8) and that every pid came back once.
// MODE 1 (segv):   the child writes to address 0; waitpid must give the
//                  status SIGSEGV (11).
// MODE 2 (kill):   the child spins in user mode; the parent kill(child,
//                  SIGTERM)s it; waitpid must give status 15.
// MODE 3 (bomb):   every process forks until fork fails, then exits: 0 if
//                  the failure was -EAGAIN (the max_tasks limit), 7 if not.
// MODE 4 (orphan): the child forks a grandchild and exits; the grandchild
//                  waits until getppid() is 1 (reparented to init) and
//                  exits 0.
// MODE 5 (cow):    the parent writes a word in an anonymous page and forks;
//                  the child overwrites it and checks its copy; the parent,
//                  after wait4, checks that its copy kept its value.
// MODE 6 (echild): wait4 without children must be -ECHILD (10); WNOHANG
//                  with a running child must be 0.
// Exit code 0: as expected; 5..13: which check failed.

_start:
        mov eax, dword ptr [esp + 4]
        mov ecx, dword ptr [esp + 8]
        mov dword ptr [nkids], ecx
        cmp eax, 1
        je mode_segv
        cmp eax, 2
        je mode_kill
        cmp eax, 3
        je mode_bomb
        cmp eax, 4
        je mode_orphan
        cmp eax, 5
        je mode_cow
        cmp eax, 6
        je mode_echild

mode_exit:
        xor esi, esi                        // i
1:      cmp esi, dword ptr [nkids]
        jae 3f
        call sys_fork
        test eax, eax
        jz 2f                               // the child
        js fail5
        mov dword ptr [pids + esi*4], eax
        inc esi
        jmp 1b
2:      lea ebx, [esi + 1]
        call sys_exit
3:
4:      mov esi, dword ptr [reaped]
        cmp esi, dword ptr [nkids]
        jae 8f
        mov ebx, -1
        lea ecx, [status]
        xor edx, edx
        xor esi, esi                        // no rusage
        call sys_wait4
        test eax, eax
        js fail6
        xor ecx, ecx                        // find the child's index
5:      cmp ecx, dword ptr [nkids]
        jae fail7
        cmp dword ptr [pids + ecx*4], eax
        je 6f
        inc ecx
        jmp 5b
6:      mov dword ptr [pids + ecx*4], 0     // each pid once
        inc ecx
        shl ecx, 8
        cmp dword ptr [status], ecx
        jne fail8
        inc dword ptr [reaped]
        jmp 4b
8:      mov ebx, -1                         // no child left: -ECHILD
        lea ecx, [status]
        xor edx, edx
        xor esi, esi
        call sys_wait4
        cmp eax, -10
        jne fail9
        jmp ok

mode_segv:
        call sys_fork
        test eax, eax
        js fail5
        jnz 1f
child_segv:
        mov dword ptr [0], 1
        mov ebx, 99
        call sys_exit
1:      mov ebx, eax
        lea ecx, [status]
        xor edx, edx
        call sys_waitpid
        test eax, eax
        js fail6
        cmp dword ptr [status], 11
        jne fail8
        jmp ok

mode_kill:
        call sys_fork
        test eax, eax
        js fail5
        jnz 1f
2:      jmp 2b                              // the child spins in user mode
1:      mov edi, eax
        mov eax, 2                          // let it run a little
        call msleep
        mov ebx, edi
        mov ecx, 15
        call sys_kill
        test eax, eax
        jnz fail6
        mov ebx, edi
        lea ecx, [status]
        xor edx, edx
        call sys_waitpid
        cmp eax, edi
        jne fail7
        cmp dword ptr [status], 15
        jne fail8
        mov ebx, edi                        // a reaped pid: -ESRCH
        xor ecx, ecx
        call sys_kill
        cmp eax, -3
        jne fail9
        jmp ok

mode_bomb:
1:      call sys_fork
        test eax, eax
        jns 1b                              // parent and child both go on
        cmp eax, -11
        jne fail7
        jmp ok

mode_orphan:
        call sys_fork
        test eax, eax
        js fail5
        jnz 3f
        call sys_fork                       // the child
        test eax, eax
        js fail5
        jnz ok                              // the child exits at once
1:      mov eax, 1                          // the grandchild
        call msleep
        call sys_getppid
        cmp eax, 1
        jne 1b
        jmp ok
3:      mov ebx, eax
        lea ecx, [status]
        xor edx, edx
        call sys_waitpid
        test eax, eax
        js fail6
        jmp ok

mode_cow:
        mov eax, 4096
        call mmap_anon
        cmp eax, 0xfffff000
        jae fail5
        mov edi, eax
        mov dword ptr [edi], 0x11111111
        call sys_fork
        test eax, eax
        js fail5
        jnz 1f
        cmp dword ptr [edi], 0x11111111     // the child sees the parent's word
        jne fail10
        mov dword ptr [edi], 0x22222222     // copy on write
        cmp dword ptr [edi], 0x22222222
        jne fail11
        jmp ok
1:      mov ebx, eax
        lea ecx, [status]
        xor edx, edx
        call sys_waitpid
        test eax, eax
        js fail6
        cmp dword ptr [status], 0
        jne fail8
        cmp dword ptr [edi], 0x11111111     // the parent's copy is untouched
        jne fail12
        mov dword ptr [edi], 0x33333333     // now the only user: reused in place
        cmp dword ptr [edi], 0x33333333
        jne fail13
        jmp ok

mode_echild:
        mov ebx, -1
        lea ecx, [status]
        xor edx, edx
        xor esi, esi
        call sys_wait4
        cmp eax, -10
        jne fail6
        call sys_fork
        test eax, eax
        js fail5
        jnz 1f
        mov eax, 5
        call msleep
        jmp ok
1:      mov edi, eax
        mov ebx, -1
        lea ecx, [status]
        mov edx, 1                          // WNOHANG
        xor esi, esi
        call sys_wait4
        test eax, eax
        jnz fail7
        mov ebx, edi
        lea ecx, [status]
        xor edx, edx
        call sys_waitpid
        cmp eax, edi
        jne fail8
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
fail10: mov ebx, 10
        call sys_exit
fail11: mov ebx, 11
        call sys_exit
fail12: mov ebx, 12
        call sys_exit
fail13: mov ebx, 13
        call sys_exit

        .align 4
nkids:  .long 0
status: .long 0
reaped: .long 0
pids:   .space 4 * 64
