// asm/user/kbench.S: kernel round trips for `kmaplab bench` (kmaplab/bench.py).
//
//   kbench MODE N
// MODE 0: N getpid() calls.  MODE 1: mmap2 N anonymous pages and write one
// word to each, in order (N demand-zero faults).  MODE 2: N sched_yield()
// calls (with a second kbench on the CPU, each one is a context switch).
// Exit code 0; 4 if the mmap failed.

_start:
        mov ebp, esp
        mov esi, dword ptr [ebp + 8]    // n
        mov eax, dword ptr [ebp + 4]    // mode
        cmp eax, 1
        je faults
        cmp eax, 2
        je yields
        test esi, esi
        jz done
1:      call sys_getpid
        dec esi
        jnz 1b
        jmp done
faults:
        mov eax, esi
        shl eax, 12
        jz done
        call mmap_anon
        cmp eax, 0xfffff000
        jae mmap_failed
2:      mov dword ptr [eax], esi
        add eax, 4096
        dec esi
        jnz 2b
        jmp done
yields:
        test esi, esi
        jz done
3:      call sys_sched_yield
        dec esi
        jnz 3b
done:
        xor ebx, ebx
        call sys_exit
mmap_failed:
        mov ebx, 4
        call sys_exit
