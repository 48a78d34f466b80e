// asm/kernel/switch.S: __switch_to, the guest half of a context switch.
//
// Mirrors arch/i386/kernel/process.c __switch_to in role.  The register
// switch itself is the engine's (it restores the next task's saved
// context); what must run as guest code is what touches the MMU: switch_mm
// (asm/kernel/tlb.S) and, for kmap_local, clearing the outgoing task's local
// PTEs and restoring the incoming task's (v5.11 __kmap_local_sched_out/in).

// void __switch_to(struct thread_info *prev, struct thread_info *next)  EAX, EDX.
__switch_to:
        ret
