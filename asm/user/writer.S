// asm/user/writer.S: write a file with a known pattern, piece by piece.
//
//   writer PATH NPAGES CHUNK TAG [ROUNDS]
// open(PATH, O_CREAT|O_WRONLY|O_TRUNC); fill a CHUNK-byte anonymous buffer
// with pattern(TAG); write it again and again until NPAGES * 4096 bytes are
// in the file (every write lands on fresh page-cache pages: the kmap path
// takes a new pkmap slot for each); ROUNDS times (default 1), going back to
// offset 0 with lseek between rounds; close.
// pattern(i) = (i * 31 + TAG) & 0xff
// Exit code: 0 ok; 20 open, 21 mmap, 22 a write returned less than CHUNK.

_start:
        mov ebx, dword ptr [esp + 4]            // PATH
        mov ecx, 0x241                          // O_CREAT | O_TRUNC | O_WRONLY
        mov edx, 0x1a4
        call sys_open
        test eax, eax
        js fail_open
        mov dword ptr [fd], eax
        mov eax, dword ptr [esp + 8]
        shl eax, 12
        mov dword ptr [total], eax
        mov eax, dword ptr [esp + 12]
        mov dword ptr [chunk], eax
        mov eax, dword ptr [esp + 16]
        mov dword ptr [tag], eax
        mov dword ptr [rounds], 1
        cmp dword ptr [esp], 5
        jb 5f
        mov eax, dword ptr [esp + 20]
        mov dword ptr [rounds], eax
5:

        mov eax, dword ptr [chunk]              // buf = an anonymous CHUNK bytes
        call mmap_anon
        cmp eax, 0xfffff000
        jae fail_mmap
        mov dword ptr [buf], eax

        mov edi, eax                            // fill it
        xor ecx, ecx
1:      cmp ecx, dword ptr [chunk]
        jae 2f
        mov eax, ecx
        imul eax, eax, 31
        add eax, dword ptr [tag]
        mov byte ptr [edi + ecx], al
        inc ecx
        jmp 1b

2:      xor esi, esi                            // bytes written
3:      cmp esi, dword ptr [total]
        jb 6f
        dec dword ptr [rounds]
        jz 4f
        mov ebx, dword ptr [fd]                 // lseek(fd, 0, SEEK_SET): next round
        xor ecx, ecx
        xor edx, edx
        mov eax, 19
        int 0x80
        xor esi, esi
6:
        mov ebx, dword ptr [fd]
        mov ecx, dword ptr [buf]
        mov edx, dword ptr [chunk]
        call sys_write
        cmp eax, dword ptr [chunk]
        jne fail_write
        add esi, eax
        jmp 3b
4:      mov ebx, dword ptr [fd]
        call sys_close
        xor ebx, ebx
        call sys_exit

fail_open:
        mov ebx, 20
        call sys_exit
fail_mmap:
        mov ebx, 21
        call sys_exit
fail_write:
        mov ebx, 22
        call sys_exit

fd:     .long 0
total:  .long 0
chunk:  .long 0
tag:    .long 0
buf:    .long 0
rounds: .long 0
