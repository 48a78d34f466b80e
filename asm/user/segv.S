// asm/user/segv.S: touch what a user program may not.
//
//   segv MODE
// MODE 0: read kernel memory (0xC0000000): #PF with U=1, P=1 -> SIGSEGV.
// MODE 1: write to an address with no mapping (0x60000000) -> SIGSEGV.
// MODE 2: write(1, 0xC0000000, 16): the kernel refuses the pointer: the
//         program exits with -ret (14 for -EFAULT).
// Modes 0 and 1 never reach their exit(99).

_start:
        mov eax, dword ptr [esp + 4]
        cmp eax, 1
        je 1f
        cmp eax, 2
        je 2f
kernel_read:
        mov eax, dword ptr [0xC0000000]
        jmp 9f
1:
unmapped_write:
        mov dword ptr [0x60000000], 1
        jmp 9f
2:      mov ebx, 1
        mov ecx, 0xC0000000
        mov edx, 16
        call sys_write
        neg eax
        mov ebx, eax
        call sys_exit
9:      mov ebx, 99
        call sys_exit
