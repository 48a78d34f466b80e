// asm/kernel/entry.S: the guest side of kernel entry and exit.
//
// Mirrors arch/i386/kernel/entry.S (2.4) in role.  Traps do not run guest
// code here (Unicorn delivers them to the host, see docs/architecture.md):
// the Python engine saves the interrupted context and runs the handler.
// What stays in guest code is what the CPU would execute around that:
//
//   ret_to_python   the return address of every routine the kernel calls
//                   from Python (Guest request): `int KRET_VECTOR` hands
//                   EAX back to the generator that asked.
//   restore_all     the way back to user mode: pops pt_regs (2.4 layout:
//                   ebx ecx edx esi edi ebp eax ds es orig_eax, then the
//                   iret frame eip cs eflags esp ss) and iretd to ring 3.
//   cpu_idle_halt   the idle loop's body: sti; hlt.  Runs with the idle
//                   task's stack; an interrupt wakes it.
//
// Register convention for every routine called from Python: regparm(3)
// (arguments in EAX, EDX, ECX; result in EAX; EBX ESI EDI EBP preserved).

ret_to_python:
        int KRET_VECTOR
        BUG                     // never resumed

// void restore_all(void)  ESP = &pt_regs.  Does not return.
restore_all:
        pop ebx
        pop ecx
        pop edx
        pop esi
        pop edi
        pop ebp
        pop eax
        pop ds
        pop es
        add esp, 4              // orig_eax
        iretd

// void cpu_idle_halt(void)  Sleeps until an interrupt.  May be interrupted.
cpu_idle_halt:
        sti
        hlt
        ret
