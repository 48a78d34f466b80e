// asm/user/mapper.S: map a shared file region, hold it, let it go.
//
//   mapper PATH NPAGES SLEEP_MS
// open(PATH, O_RDONLY); mmap2(0, NPAGES pages, PROT_READ,
// MAP_SHARED | MAP_POPULATE, fd, 0): every page of the region is mapped
// into this process at once (2.5.46 MAP_POPULATE), as a database maps its
// shared memory; then sleeps SLEEP_MS milliseconds holding the mapping, and
// exits.  Many mappers of one region: one PTE per page per process, and with
// rmap one pte_chain per PTE, in lowmem.
// Exit code: 0 ok; 60 open, 61 mmap.

_start:
        mov eax, dword ptr [esp + 8]
        shl eax, 12
        mov dword ptr [len], eax
        mov eax, dword ptr [esp + 12]
        mov dword ptr [ms], eax
        mov ebx, dword ptr [esp + 4]
        xor ecx, ecx
        xor edx, edx
        call sys_open
        test eax, eax
        js fail_open
        mov edi, eax
        xor ebx, ebx
        mov ecx, dword ptr [len]
        mov edx, 1                              // PROT_READ
        mov esi, 0x8001                         // MAP_SHARED | MAP_POPULATE
        xor ebp, ebp
        call sys_mmap2
        cmp eax, 0xfffff000
        jae fail_mmap
        mov eax, dword ptr [ms]
        call msleep
        xor ebx, ebx
        call sys_exit
fail_open:
        mov ebx, 60
        call sys_exit
fail_mmap:
        mov ebx, 61
        call sys_exit

        .align 4
len:    .long 0
ms:     .long 0
