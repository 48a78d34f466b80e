// asm/user/tls.S: set_thread_area / get_thread_area, and %gs across kernel
// entries and context switches.
//
//   tls LOOPS
// Points a TLS segment (entry -1: the kernel picks 6) at a block holding its
// pid, loads %gs with it, and checks that %gs:[0] is its pid after a system
// call, across LOOPS iterations with sched_yield and timer preemption by
// other tasks with their own TLS, and that Linux's errors come back.  Last,
// clears the entry while %gs still selects it: the return to user mode
// loads 0 instead (restore_all's fixup).  Exits 0, or the number of the
// first check that failed.

_start:
        mov eax, dword ptr [esp + 4]
        mov dword ptr [loops], eax
        call sys_getpid
        mov dword ptr [mypid], eax
        and eax, 3                          // block = &blocks[pid & 3]
        shl eax, 4
        lea ebx, [blocks + eax]
        mov ecx, dword ptr [mypid]
        mov dword ptr [ebx], ecx
        mov dword ptr [desc + 4], ebx       // base_addr
        mov dword ptr [desc], -1            // entry_number: pick one
        mov dword ptr [desc + 8], 0xfffff   // limit
        mov dword ptr [desc + 12], 0x51     // seg_32bit, limit_in_pages, useable
        lea ebx, [desc]
        call sys_set_thread_area
        mov edi, 1
        test eax, eax
        jnz fail
        mov edi, 2
        cmp dword ptr [desc], 6             // written back: the first free entry
        jne fail
        mov ax, 0x33                        // (6 << 3) | 3
        mov gs, ax
        mov edi, 3
        call check_gs
        call sys_getpid
        mov edi, 4
        call check_gs
        mov edi, 5                          // get_thread_area gives back what was set
        mov dword ptr [desc2], 6
        lea ebx, [desc2]
        call sys_get_thread_area
        test eax, eax
        jnz fail
        mov eax, dword ptr [desc2 + 4]
        cmp eax, dword ptr [desc + 4]
        jne fail
        cmp dword ptr [desc2 + 8], 0xfffff
        jne fail
        cmp dword ptr [desc2 + 12], 0x51
        jne fail
        mov edi, 6                          // entry 5: -EINVAL
        mov dword ptr [desc2], 5
        lea ebx, [desc2]
        call sys_set_thread_area
        cmp eax, -22
        jne fail
        mov edi, 7                          // entry 9: -EINVAL
        mov dword ptr [desc2], 9
        lea ebx, [desc2]
        call sys_set_thread_area
        cmp eax, -22
        jne fail
        mov edi, 8                          // a bad pointer: -EFAULT
        mov ebx, 0xc0001000
        call sys_set_thread_area
        cmp eax, -14
        jne fail
        mov edi, 9
        mov dword ptr [desc2], 3
        lea ebx, [desc2]
        call sys_get_thread_area
        cmp eax, -22
        jne fail
        mov edi, 10
        xor ebx, ebx
        call sys_get_thread_area
        cmp eax, -14
        jne fail
        mov edi, 11                         // entries 7, 8, then none free: -ESRCH
        mov dword ptr [desc2], -1
        lea ebx, [desc2]
        call sys_set_thread_area
        test eax, eax
        jnz fail
        cmp dword ptr [desc2], 7
        jne fail
        mov dword ptr [desc2], -1
        lea ebx, [desc2]
        call sys_set_thread_area
        test eax, eax
        jnz fail
        cmp dword ptr [desc2], 8
        jne fail
        mov dword ptr [desc2], -1
        lea ebx, [desc2]
        call sys_set_thread_area
        cmp eax, -3
        jne fail
        mov edi, 12                         // the loop: %gs:[0] stays ours
        mov esi, dword ptr [loops]
1:      call check_gs
        mov eax, gs
        cmp eax, 0x33
        jne fail
        test esi, 0xfff
        jnz 2f
        call sys_sched_yield
2:      dec esi
        jnz 1b
        mov edi, 13                         // clear entry 6 while %gs selects it
        mov dword ptr [desc2], 6
        mov dword ptr [desc2 + 4], 0
        mov dword ptr [desc2 + 8], 0
        mov dword ptr [desc2 + 12], 0x28    // read_exec_only, seg_not_present: LDT_empty
        lea ebx, [desc2]
        call sys_set_thread_area
        test eax, eax
        jnz fail
        mov edi, 14                         // the way back loaded a null selector
        mov eax, gs
        test eax, eax
        jnz fail
        xor ebx, ebx
        call sys_exit
fail:
        mov ebx, edi
        call sys_exit

// check_gs: exit with EDI unless %gs:[0] is our pid.
check_gs:
        mov eax, dword ptr gs:[0]
        cmp eax, dword ptr [mypid]
        jne fail
        ret

        .align 4
loops:  .long 0
mypid:  .long 0
desc:   .long 0, 0, 0, 0
desc2:  .long 0, 0, 0, 0
blocks: .space 64
