// asm/user/vwriter.S: fill a two-page buffer, wait, then writev() it.
//
//   vwriter PATH SLEEP_MS TAG
// mmap2s an 8 KiB anonymous buffer, fills it with pattern(TAG), sleeps
// SLEEP_MS milliseconds (while other tasks may push the buffer out to
// swap), then writev(fd, {buf, 16}, {buf + 4096, 4000}, 2): both segments go
// into the same page-cache page.  The kernel prefaults only the first
// segment, so the copy of the second one faults inside the kernel's copy,
// i.e. inside kmap_atomic if the design uses it.
// pattern(i) = (i * 7 + TAG) & 0xff
// Exit code: 0 ok; 40 open/mmap, 41 writev returned less than 4016.

_start:
        mov ebx, dword ptr [esp + 4]
        mov ecx, 0x241                          // O_CREAT | O_TRUNC | O_WRONLY
        mov edx, 0x1a4
        call sys_open
        test eax, eax
        js fail
        mov dword ptr [fd], eax
        mov eax, dword ptr [esp + 8]
        mov dword ptr [ms], eax
        mov eax, dword ptr [esp + 12]
        mov dword ptr [tag], eax
        mov eax, 8192
        call mmap_anon
        cmp eax, 0xfffff000
        jae fail
        mov dword ptr [buf], eax
        mov edi, eax
        xor ecx, ecx
1:      cmp ecx, 8192
        jae 2f
        mov eax, ecx
        imul eax, eax, 7
        add eax, dword ptr [tag]
        mov byte ptr [edi + ecx], al
        inc ecx
        jmp 1b
2:      mov eax, dword ptr [ms]
        call msleep
        mov eax, dword ptr [buf]                // the iovec
        mov dword ptr [iov], eax
        mov dword ptr [iov + 4], 16
        add eax, 4096
        mov dword ptr [iov + 8], eax
        mov dword ptr [iov + 12], 4000
        mov ebx, dword ptr [fd]
        lea ecx, [iov]
        mov edx, 2
        mov eax, 146                            // writev
        int 0x80
        cmp eax, 4016
        jne short_write
        mov ebx, dword ptr [fd]
        call sys_close
        xor ebx, ebx
        call sys_exit
fail:
        mov ebx, 40
        call sys_exit
short_write:
        mov ebx, 41
        call sys_exit

        .align 4
fd:     .long 0
ms:     .long 0
tag:    .long 0
buf:    .long 0
iov:    .long 0, 0, 0, 0
