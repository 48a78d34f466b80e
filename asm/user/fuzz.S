// asm/user/fuzz.S: the syscall fuzzer's program (tests/test_fuzz.py).
//
//   fuzz NR A1 A2 A3 A4 A5 A6 [NR A1 A2 A3 A4 A5 A6 ...]
// Makes each system call in turn (eax = NR, ebx ecx edx esi edi ebp = A1..A6),
// whatever it returns, then exits 0.  A clone()d child goes on with the same
// list (the cursor is in the shared data), so hostile flags and stacks are
// exercised too: any crash is the program's, reported as a kill.

_start:
        lea eax, [esp + 4]
        mov dword ptr [fz_cursor], eax
        mov eax, dword ptr [esp]
        mov dword ptr [fz_left], eax
fz_next:
        cmp dword ptr [fz_left], 7
        jb fz_done
        mov eax, dword ptr [fz_cursor]
        add dword ptr [fz_cursor], 28
        sub dword ptr [fz_left], 7
        mov ebx, dword ptr [eax + 4]
        mov ecx, dword ptr [eax + 8]
        mov edx, dword ptr [eax + 12]
        mov esi, dword ptr [eax + 16]
        mov edi, dword ptr [eax + 20]
        mov ebp, dword ptr [eax + 24]
        mov eax, dword ptr [eax]
        int 0x80
        jmp fz_next
fz_done:
        xor ebx, ebx
        call sys_exit

fz_cursor: .long 0
fz_left:   .long 0
