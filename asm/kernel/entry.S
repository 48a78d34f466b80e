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
//   restore_all     the way back to user mode: pops pt_regs (2.6.29 layout:
//                   ebx ecx edx esi edi ebp eax ds es fs gs orig_eax, then
//                   the iret frame eip cs eflags esp ss) and iretd to ring 3.
//                   A segment selector whose descriptor is no longer valid
//                   (a TLS entry cleared meanwhile) faults in the pop; the
//                   fixup loads 0 instead, as RESTORE_REGS's .fixup does.
//   cpu_idle_halt   the idle loop's body: sti; hlt.  Runs with the idle
//                   task's stack; an interrupt wakes it.
//
// Register convention for every routine called from Python: regparm(3)
// (arguments in EAX, EDX, ECX; result in EAX; EBX ESI EDI EBP preserved).

ret_to_python:
        int KRET_VECTOR
        BUG                     // never resumed

// void restore_all(void)  ESP = &pt_regs.  Does not return.
// Mirrors RESTORE_REGS + irq_return of arch/x86/kernel/entry_32.S (2.6.29).
restore_all:
        pop ebx
        pop ecx
        pop edx
        pop esi
        pop edi
        pop ebp
        pop eax
restore_ds:
        pop ds
restore_es:
        pop es
restore_fs:
        pop fs
restore_gs:
        pop gs
        add esp, 4              // orig_eax
        iretd
        .extable restore_ds, restore_ds_fix
        .extable restore_es, restore_es_fix
        .extable restore_fs, restore_fs_fix
        .extable restore_gs, restore_gs_fix
restore_ds_fix:
        mov dword ptr [esp], 0
        jmp restore_ds
restore_es_fix:
        mov dword ptr [esp], 0
        jmp restore_es
restore_fs_fix:
        mov dword ptr [esp], 0
        jmp restore_fs
restore_gs_fix:
        mov dword ptr [esp], 0
        jmp restore_gs

// void cpu_idle_halt(void)  Sleeps until an interrupt.  May be interrupted.
cpu_idle_halt:
        sti
        hlt
        ret
