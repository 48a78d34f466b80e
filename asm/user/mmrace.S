// asm/user/mmrace.S: Andrea Arcangeli's munmap race, as two threads.
//
//   mmrace ROLE SRC DST NPAGES ITER ADDR
// Both threads map the file SRC at the fixed address ADDR (MAP_PRIVATE,
// read-only, NPAGES pages), so the source buffer always holds SRC's bytes.
//   ROLE 0 (writer):   ITER times: lseek(dst, 0) + write(dst, ADDR, NPAGES*4096).
//   ROLE 1 (remapper): ITER times: mmap2(ADDR, len, PROT_READ,
//                      MAP_PRIVATE|MAP_FIXED, src, 0) over the mapping: the
//                      kernel unmaps the old one (zapping its PTEs, flushing
//                      the TLBs) and maps the file again, under mmap_sem held
//                      for writing, so the address is never unmapped and the
//                      bytes there never change; only the PTEs go away.
// A kernel whose write() is correct copies SRC's bytes whatever the timing.
// Exit code: 0 ok; 30 open, 31 mmap, 32 a write came back short or failed.

_start:
        mov ebx, dword ptr [esp + 8]            // src = open(SRC, O_RDONLY)
        xor ecx, ecx
        xor edx, edx
        call sys_open
        test eax, eax
        js fail_open
        mov dword ptr [src], eax
        mov eax, dword ptr [esp + 16]
        shl eax, 12
        mov dword ptr [len], eax
        mov eax, dword ptr [esp + 20]
        mov dword ptr [iter], eax
        mov eax, dword ptr [esp + 24]
        mov dword ptr [addr], eax
        cmp dword ptr [esp + 4], 0
        jne remapper
        mov ebx, dword ptr [esp + 12]           // dst = open(DST, O_CREAT|O_WRONLY|O_TRUNC)
        mov ecx, 0x241
        mov edx, 0x1a4
        call sys_open
        test eax, eax
        js fail_open
        mov dword ptr [dst], eax
        call map_src
        xor esi, esi
1:      cmp esi, dword ptr [iter]
        jae done
        mov ebx, dword ptr [dst]                // lseek(dst, 0, SEEK_SET)
        xor ecx, ecx
        xor edx, edx
        mov eax, 19
        int 0x80
        mov ebx, dword ptr [dst]
        mov ecx, dword ptr [addr]
        mov edx, dword ptr [len]
        call sys_write
        cmp eax, dword ptr [len]
        jne fail_write
        inc esi
        jmp 1b

remapper:
        call map_src
        xor esi, esi
1:      cmp esi, dword ptr [iter]
        jae done
        call map_src
        inc esi
        jmp 1b

done:
        xor ebx, ebx
        call sys_exit

// map_src: mmap2(ADDR, len, PROT_READ, MAP_PRIVATE | MAP_FIXED, src, 0)
map_src:
        push esi
        push ebp
        mov ebx, dword ptr [addr]
        mov ecx, dword ptr [len]
        mov edx, 1
        mov esi, 0x12
        mov edi, dword ptr [src]
        xor ebp, ebp
        call sys_mmap2
        pop ebp
        pop esi
        cmp eax, dword ptr [addr]
        jne fail_mmap
        ret

fail_open:
        mov ebx, 30
        call sys_exit
fail_mmap:
        mov ebx, 31
        call sys_exit
fail_write:
        mov ebx, 32
        call sys_exit

src:    .long 0
dst:    .long 0
len:    .long 0
iter:   .long 0
addr:   .long 0
