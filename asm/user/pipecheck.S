// asm/user/pipecheck.S: read fd 0 to EOF, check byte i is i * 7 + 3.
//
//   pipecheck
// Exit code 0: every byte as expected and at least one read; 3: a wrong
// byte; 4: a read error.  (The count is checked by whoever knows it: the
// exit code is 0 only at EOF.)

_start:
        xor esi, esi                        // bytes seen
1:      xor ebx, ebx
        lea ecx, [buf]
        mov edx, 3000
        call sys_read
        test eax, eax
        js 8f
        jz 9f
        xor edi, edi
2:      lea edx, [esi + edi]
        imul edx, edx, 7
        add edx, 3
        cmp byte ptr [buf + edi], dl
        jne 7f
        inc edi
        cmp edi, eax
        jb 2b
        add esi, eax
        mov dword ptr [seen], esi
        jmp 1b
7:      mov ebx, 3
        call sys_exit
8:      mov ebx, 4
        call sys_exit
9:      xor ebx, ebx
        call sys_exit

        .align 4
seen:   .long 0
buf:    .space 3000
