// asm/user/clonefpu.S: a thread starts with its parent's x87/SSE registers.
//
// Loads xmm0 and the x87 control word, clone(CLONE_VM)s a thread, and
// changes both right away; the thread checks it got the values of the
// moment of the clone (fpu__copy) and reports through a shared flag.
// Exits 0 if the thread saw the parent's values, 1 if not, 2 on setup errors.

_start:
        mov eax, 8192
        call mmap_anon
        cmp eax, 0xfffff000
        jae setup_fail
        lea ecx, [eax + 8192]                   // the thread's stack
        mov eax, 0x12345678
        movd xmm0, eax
        fldcw word ptr [cw_parent]
        mov ebx, 0x100                          // CLONE_VM
        mov eax, 120                            // clone, inline: the child has no return address
        int 0x80
        test eax, eax
        jz child
        js setup_fail
        mov eax, 0x0badf00d                     // the parent moves on
        movd xmm0, eax
        fldcw word ptr [cw_other]
1:      cmp dword ptr [flag], 0
        jne 2f
        call sys_sched_yield
        jmp 1b
2:      xor ebx, ebx
        cmp dword ptr [flag], 1
        je 3f
        mov ebx, 1
3:      call sys_exit

child:
        mov dword ptr [flag], 2
        movd eax, xmm0
        cmp eax, 0x12345678
        jne 4f
        fnstcw word ptr [cw_seen]
        mov ax, word ptr [cw_seen]
        cmp ax, word ptr [cw_parent]
        jne 4f
        mov dword ptr [flag], 1
4:      xor ebx, ebx
        mov eax, 1
        int 0x80

setup_fail:
        mov ebx, 2
        call sys_exit

        .align 4
flag:      .long 0
cw_parent: .long 0x0f7f
cw_other:  .long 0x037f
cw_seen:   .long 0
