// asm/user/stormer.S: fill a buffer, wait, then write it out page by page.
//
//   stormer PATH NPAGES SLEEP_MS TAG
// mmap2s NPAGES anonymous pages and writes a word into each (so they exist,
// and under memory pressure go out to swap), sleeps SLEEP_MS milliseconds
// (every stormer wakes at the same moment: the storm), then for each page:
// lseek(fd, 0) + write(fd, page, 4096): the kernel reads every page of the
// buffer, so each write starts with a swap-in fault in the prefault.
// Exit code: 0 ok; 50 open/mmap, 51 a write returned less than 4096.

_start:
        mov eax, dword ptr [esp + 8]
        mov dword ptr [npages], eax
        mov eax, dword ptr [esp + 12]
        mov dword ptr [ms], eax
        mov eax, dword ptr [esp + 16]
        mov dword ptr [tag], eax
        mov ebx, dword ptr [esp + 4]
        mov ecx, 0x241                          // O_CREAT | O_TRUNC | O_WRONLY
        mov edx, 0x1a4
        call sys_open
        test eax, eax
        js fail
        mov dword ptr [fd], eax
        mov eax, dword ptr [npages]
        shl eax, 12
        call mmap_anon
        cmp eax, 0xfffff000
        jae fail
        mov dword ptr [buf], eax
        xor ecx, ecx                            // touch every page
1:      cmp ecx, dword ptr [npages]
        jae 2f
        mov edx, ecx
        shl edx, 12
        add edx, dword ptr [buf]
        mov eax, ecx
        xor eax, dword ptr [tag]
        mov dword ptr [edx], eax
        inc ecx
        jmp 1b
2:      mov eax, dword ptr [ms]
        call msleep
        xor esi, esi                            // the storm
3:      cmp esi, dword ptr [npages]
        jae 4f
        mov ebx, dword ptr [fd]                 // lseek(fd, 0, SEEK_SET)
        xor ecx, ecx
        xor edx, edx
        mov eax, 19
        int 0x80
        mov ebx, dword ptr [fd]
        mov ecx, esi
        shl ecx, 12
        add ecx, dword ptr [buf]
        mov edx, 4096
        call sys_write
        cmp eax, 4096
        jne short_write
        inc esi
        jmp 3b
4:      xor ebx, ebx
        call sys_exit
fail:
        mov ebx, 50
        call sys_exit
short_write:
        mov ebx, 51
        call sys_exit

        .align 4
fd:     .long 0
npages: .long 0
ms:     .long 0
tag:    .long 0
buf:    .long 0
