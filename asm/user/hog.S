// asm/user/hog.S: a memory hog that checks its own memory.
//
//   hog NPAGES PASSES TAG
// mmap2s NPAGES anonymous pages, then PASSES times: writes a word derived
// from (page, pass, TAG) at the start and in the middle of every page, and
// reads every page back checking the previous pass's words first.  Exit
// code 0: every word read back as written; 3: a word was wrong (the kernel
// lost or mixed up a page, e.g. across swap); 4: mmap failed.

_start:
        mov ebp, esp
        mov eax, dword ptr [ebp + 4]    // npages
        shl eax, 12                     // len
        call mmap_anon
        cmp eax, 0xfffff000
        jae mmap_failed
        mov dword ptr [base], eax
        xor esi, esi                    // pass
pass_loop:
        cmp esi, dword ptr [ebp + 8]
        jae done
        xor edi, edi                    // page
page_loop:
        cmp edi, dword ptr [ebp + 4]
        jae next_pass
        mov ebx, edi
        shl ebx, 12
        add ebx, dword ptr [base]       // the page's address
        test esi, esi
        jz 1f
        lea eax, [esi - 1]              // check the previous pass's words
        call expected
        cmp dword ptr [ebx], eax
        jne bad
        cmp dword ptr [ebx + 2048], eax
        jne bad
1:      mov eax, esi
        call expected
        mov dword ptr [ebx], eax
        mov dword ptr [ebx + 2048], eax
        inc edi
        jmp page_loop
next_pass:
        inc esi
        jmp pass_loop
done:
        xor ebx, ebx
        call sys_exit
bad:
        mov ebx, 3
        call sys_exit
mmap_failed:
        mov ebx, 4
        call sys_exit

// expected(pass=EAX) with EDI = page: (page * 2654435761) ^ (pass << 24) ^ TAG
expected:
        push edx
        mov edx, eax
        shl edx, 24
        mov eax, edi
        imul eax, eax, 0x9E3779B1
        xor eax, edx
        xor eax, dword ptr [ebp + 12]
        pop edx
        ret

base:   .long 0
