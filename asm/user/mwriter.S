// asm/user/mwriter.S: writev() a file's two pages out of a private mapping.
//
//   mwriter SRC DST
// p = mmap2(0, 8192, PROT_READ, MAP_PRIVATE, open(SRC, O_RDONLY), 0), not
// touched; then writev(open(DST, O_CREAT|O_TRUNC|O_WRONLY),
// {p, 16}, {p + 4096, 4000}, 2): both segments go into page 0 of DST.  The
// kernel prefaults only the first segment (2.5.34's fault_in_pages_readable
// of the current iovec), so the copy of the second one faults on a page of
// SRC that is not in the page cache yet: inside kmap_atomic, a disk read.
// Exit code: 0 ok; 70 open/mmap; 71 writev returned less than 4016.

_start:
        mov ebx, dword ptr [esp + 4]            // src = open(SRC, O_RDONLY)
        xor ecx, ecx
        xor edx, edx
        call sys_open
        test eax, eax
        js mw_fail
        mov dword ptr [mw_src], eax
        mov ebx, dword ptr [esp + 8]            // dst = open(DST, O_CREAT|O_TRUNC|O_WRONLY)
        mov ecx, 0x241
        mov edx, 0x1a4
        call sys_open
        test eax, eax
        js mw_fail
        mov dword ptr [mw_dst], eax
        push ebp
        xor ebx, ebx                            // mmap2(0, 8192, PROT_READ, MAP_PRIVATE, src, 0)
        mov ecx, 8192
        mov edx, 1
        mov esi, 2
        mov edi, dword ptr [mw_src]
        xor ebp, ebp
        call sys_mmap2
        pop ebp
        cmp eax, 0xfffff000
        jae mw_fail
        mov dword ptr [mw_iov], eax             // the iovec
        mov dword ptr [mw_iov + 4], 16
        add eax, 4096
        mov dword ptr [mw_iov + 8], eax
        mov dword ptr [mw_iov + 12], 4000
        mov ebx, dword ptr [mw_dst]
        lea ecx, [mw_iov]
        mov edx, 2
        mov eax, 146                            // writev
        int 0x80
        cmp eax, 4016
        jne mw_short
        xor ebx, ebx
        call sys_exit
mw_fail:
        mov ebx, 70
        call sys_exit
mw_short:
        mov ebx, 71
        call sys_exit

        .align 4
mw_src: .long 0
mw_dst: .long 0
mw_iov: .long 0, 0, 0, 0
