// asm/user/spin.S: burn CPU in user mode, then say how far it got.
//
//   spin LOOPS
// Counts to LOOPS in a register (no system call on the way, so only the
// timer can take the CPU away), then writes "done\n" and exits 0.

_start:
        mov ecx, dword ptr [esp + 4]
1:      dec ecx
        jnz 1b
        mov eax, 1
        lea edx, [done_msg]
        call puts_fd
        xor ebx, ebx
        call sys_exit

done_msg: .asciz "done\n"
