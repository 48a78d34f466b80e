// asm/user/fpu.S: x87 and SSE registers survive kernel entries and switches.
//
//   fpu LOOPS SPIN
// Loads xmm0-xmm7, seven x87 stack slots, the x87 control word and MXCSR
// with values derived from its pid, then LOOPS times: a system call, a page
// fault (a store to a fresh anonymous page), SPIN iterations of a busy loop
// (where the timer preempts it for other tasks on the CPU), and checks every
// register.  Exits 0, or 1 + the number of the first register found wrong
// (xmm 0-7 -> 1-8, x87 st(i) -> 11-17, control word 20, MXCSR 21, setup 30).

_start:
        mov eax, dword ptr [esp + 4]
        mov dword ptr [loops], eax
        mov eax, dword ptr [esp + 8]
        mov dword ptr [spin], eax
        mov eax, dword ptr [loops]
        shl eax, 12
        call mmap_anon
        mov edi, 30
        cmp eax, 0xfffff000
        jae fail
        mov dword ptr [area], eax
        call sys_getpid
        mov dword ptr [mypid], eax
        imul ebx, eax, 0x01010101               // xmm i = pid * 0x01010101 + i, 4 lanes
        mov eax, ebx
        movd xmm0, eax
        inc eax
        movd xmm1, eax
        inc eax
        movd xmm2, eax
        inc eax
        movd xmm3, eax
        inc eax
        movd xmm4, eax
        inc eax
        movd xmm5, eax
        inc eax
        movd xmm6, eax
        inc eax
        movd xmm7, eax
        pshufd xmm0, xmm0, 0
        pshufd xmm1, xmm1, 0
        pshufd xmm2, xmm2, 0
        pshufd xmm3, xmm3, 0
        pshufd xmm4, xmm4, 0
        pshufd xmm5, xmm5, 0
        pshufd xmm6, xmm6, 0
        pshufd xmm7, xmm7, 0
        mov eax, dword ptr [mypid]              // x87: st(i) = pid * 100 + 6 - i
        imul eax, eax, 100
        mov ecx, 7
1:      mov dword ptr [tmp], eax
        fild dword ptr [tmp]
        inc eax
        dec ecx
        jnz 1b
        mov eax, dword ptr [mypid]              // control word: RC = toward zero, or down
        and eax, 1
        shl eax, 10
        or eax, 0x0b7f
        mov word ptr [want_cw], ax
        fldcw word ptr [want_cw]
        mov eax, dword ptr [mypid]              // MXCSR: RC from the pid, flush-to-zero
        and eax, 3
        shl eax, 13
        or eax, 0x9f80
        mov dword ptr [want_mxcsr], eax
        ldmxcsr dword ptr [want_mxcsr]
        xor esi, esi                            // the loop
2:      call sys_getpid                         // a system call
        mov eax, esi                            // a page fault
        shl eax, 12
        add eax, dword ptr [area]
        mov dword ptr [eax], esi
        mov ecx, dword ptr [spin]               // room for the timer
3:      dec ecx
        jnz 3b
        call check
        inc esi
        cmp esi, dword ptr [loops]
        jb 2b
        xor ebx, ebx
        call sys_exit
fail:
        mov ebx, edi
        call sys_exit

// check: exit with the number of the first register that is not as loaded.
check:
        imul ebx, dword ptr [mypid], 0x01010101
        mov edi, 1
        movups xmmword ptr [xbuf], xmm0
        call check_xbuf
        movups xmmword ptr [xbuf], xmm1
        call check_xbuf
        movups xmmword ptr [xbuf], xmm2
        call check_xbuf
        movups xmmword ptr [xbuf], xmm3
        call check_xbuf
        movups xmmword ptr [xbuf], xmm4
        call check_xbuf
        movups xmmword ptr [xbuf], xmm5
        call check_xbuf
        movups xmmword ptr [xbuf], xmm6
        call check_xbuf
        movups xmmword ptr [xbuf], xmm7
        call check_xbuf
        mov edi, 11
        imul ebx, dword ptr [mypid], 100
        add ebx, 6
        fld st(0)
        call check_st
        fld st(1)
        call check_st
        fld st(2)
        call check_st
        fld st(3)
        call check_st
        fld st(4)
        call check_st
        fld st(5)
        call check_st
        fld st(6)
        call check_st
        mov edi, 20
        fnstcw word ptr [tmp]
        mov ax, word ptr [tmp]
        cmp ax, word ptr [want_cw]
        jne fail
        mov edi, 21
        stmxcsr dword ptr [tmp]
        mov eax, dword ptr [tmp]
        cmp eax, dword ptr [want_mxcsr]
        jne fail
        ret

// check_xbuf: the four lanes in xbuf equal EBX; then EBX++, EDI++.
check_xbuf:
        cmp dword ptr [xbuf], ebx
        jne fail
        cmp dword ptr [xbuf + 4], ebx
        jne fail
        cmp dword ptr [xbuf + 8], ebx
        jne fail
        cmp dword ptr [xbuf + 12], ebx
        jne fail
        inc ebx
        inc edi
        ret

// check_st: pop the copy just pushed into tmp, compare with EBX; EBX--, EDI++.
check_st:
        fistp dword ptr [tmp]
        cmp dword ptr [tmp], ebx
        jne fail
        dec ebx
        inc edi
        ret

        .align 16
xbuf:   .space 16
loops:  .long 0
spin:   .long 0
area:   .long 0
mypid:  .long 0
tmp:    .long 0
want_cw: .long 0
want_mxcsr: .long 0
