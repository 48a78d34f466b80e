// asm/user/forker.S: fork under memory pressure, every copy checked.
//
//   forker NPAGES NCHILD PASSES TAG
// The parent mmap2s NPAGES anonymous pages and writes a word derived from
// (page, 0xff, TAG) at the start and in the middle of each.  It forks NCHILD
// children.  Child i first checks every page shows the parent's words, then
// PASSES times writes (page, i, TAG) into the odd pages (copy on write: its
// own copies) and reads every page back: odd pages its own words, even pages
// still the parent's (shared with the parent and every sibling, so reclaim
// swaps out shared pages and the next pass swaps them in).  Meanwhile the
// parent writes (page, 0, TAG) into its odd pages, reaps every child with
// wait4 (each must exit 0) and checks all its pages.
// Exit code 0: every word as expected; 3: a word was wrong; 4: a child
// failed; 5: mmap failed; 6: fork failed.

_start:
        mov ebp, esp
        mov eax, dword ptr [ebp + 4]
        mov dword ptr [npages], eax
        mov eax, dword ptr [ebp + 8]
        mov dword ptr [nchild], eax
        mov eax, dword ptr [ebp + 12]
        mov dword ptr [passes], eax
        mov eax, dword ptr [ebp + 16]
        mov dword ptr [tag], eax
        mov eax, dword ptr [npages]
        shl eax, 12
        call mmap_anon
        cmp eax, 0xfffff000
        jae fail5
        mov dword ptr [base], eax
        mov eax, 0xff                       // the parent's first words, all pages
        mov edx, 0
        mov ecx, 1
        call fill
        xor esi, esi
1:      cmp esi, dword ptr [nchild]
        jae parent
        call sys_fork
        test eax, eax
        js fail6
        jz child
        inc esi
        jmp 1b

// child number ESI+1
child:
        inc esi
        mov eax, 0xff                       // all pages still the parent's
        mov edx, 0
        mov ecx, 1
        call check
        xor edi, edi
2:      cmp edi, dword ptr [passes]
        jae ok
        mov eax, esi                        // own words in the odd pages
        mov edx, 1
        mov ecx, 2
        call fill
        mov eax, esi
        mov edx, 1
        mov ecx, 2
        call check
        mov eax, 0xff                       // the shared even pages
        mov edx, 0
        mov ecx, 2
        call check
        inc edi
        jmp 2b

parent:
        mov eax, 0                          // own words in the odd pages
        mov edx, 1
        mov ecx, 2
        call fill
        xor esi, esi
3:      cmp esi, dword ptr [nchild]
        jae 4f
        mov ebx, -1
        lea ecx, [status]
        xor edx, edx
        push esi
        xor esi, esi
        call sys_wait4
        pop esi
        test eax, eax
        js fail4
        cmp dword ptr [status], 0
        jne fail4
        inc esi
        jmp 3b
4:      mov eax, 0
        mov edx, 1
        mov ecx, 2
        call check
        mov eax, 0xff
        mov edx, 0
        mov ecx, 2
        call check
ok:     xor ebx, ebx
        call sys_exit
fail3:  mov ebx, 3
        call sys_exit
fail4:  mov ebx, 4
        call sys_exit
fail5:  mov ebx, 5
        call sys_exit
fail6:  mov ebx, 6
        call sys_exit

// fill(who=EAX, first=EDX, step=ECX): pages first, first+step, ... get expected(page, who)
fill:
        push ebx
        push edi
        mov dword ptr [whose], eax
        mov dword ptr [step], ecx
        mov edi, edx
1:      cmp edi, dword ptr [npages]
        jae 2f
        call expected
        mov ebx, edi
        shl ebx, 12
        add ebx, dword ptr [base]
        mov dword ptr [ebx], eax
        mov dword ptr [ebx + 2048], eax
        add edi, dword ptr [step]
        jmp 1b
2:      pop edi
        pop ebx
        ret

// check(who=EAX, first=EDX, step=ECX): exits 3 on a wrong word
check:
        push ebx
        push edi
        mov dword ptr [whose], eax
        mov dword ptr [step], ecx
        mov edi, edx
1:      cmp edi, dword ptr [npages]
        jae 2f
        call expected
        mov ebx, edi
        shl ebx, 12
        add ebx, dword ptr [base]
        cmp dword ptr [ebx], eax
        jne fail3
        cmp dword ptr [ebx + 2048], eax
        jne fail3
        add edi, dword ptr [step]
        jmp 1b
2:      pop edi
        pop ebx
        ret

// expected(page=EDI, who=[whose]) = (page * 2654435761) ^ (who << 24) ^ TAG   -> EAX
expected:
        push edx
        mov eax, edi
        mov edx, 0x9E3779B1              // 2654435761, the golden-ratio multiplier
        mul edx
        mov edx, dword ptr [whose]
        shl edx, 24
        xor eax, edx
        xor eax, dword ptr [tag]
        pop edx
        ret

        .align 4
npages: .long 0
nchild: .long 0
passes: .long 0
tag:    .long 0
base:   .long 0
whose:    .long 0
step:   .long 0
status: .long 0
