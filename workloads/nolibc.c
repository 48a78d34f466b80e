/* nolibc: a static i386 program without a C library (built with
 * -nostdlib).  It checks what the ELF loader hands a new process: argc,
 * argv, envp and the auxiliary vector on the initial stack, a zeroed .bss,
 * writable .data, brk, and an anonymous mmap2; then prints what it found
 * and exits with the number of failed checks.  Only int $0x80 system calls.
 */
#include "nolibc.h"

static u32 zeroed[1024];                 /* .bss: 4 KiB, must read as zeros */
static u32 data_word = 0x1234abcd;       /* .data */
static int failed;

static void check(int ok, const char *what)
{
    if (!ok) { failed++; out("FAIL "); out(what); out("\n"); }
}

void __attribute__((used)) cmain(u32 *sp)
{
    u32 argc = sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    u32 nenv = 0;
    while (envp[nenv]) nenv++;
    u32 *auxv = (u32 *)(envp + nenv + 1);
    u32 pagesz = 0, entry = 0, phnum = 0, random = 0, platform = 0, uid = 99;
    for (u32 *a = auxv; a[0]; a += 2) {
        if (a[0] == 6) pagesz = a[1];
        if (a[0] == 9) entry = a[1];
        if (a[0] == 5) phnum = a[1];
        if (a[0] == 25) random = a[1];
        if (a[0] == 15) platform = a[1];
        if (a[0] == 11) uid = a[1];
    }
    check(pagesz == 4096, "AT_PAGESZ");
    check(entry != 0, "AT_ENTRY");
    check(phnum >= 2, "AT_PHNUM");
    check(random != 0, "AT_RANDOM");
    check(platform != 0 && ((char *)platform)[0] == 'i', "AT_PLATFORM");
    check(uid == 0, "AT_UID");
    for (u32 i = 0; i < 1024; i++)
        check(zeroed[i] == 0, "bss zero");
    check(data_word == 0x1234abcd, "data");
    data_word++;
    u32 brk0 = sys3(45, 0, 0, 0);
    u32 brk1 = sys3(45, brk0 + 8192, 0, 0);
    check(brk1 == brk0 + 8192, "brk grows");
    ((volatile char *)brk0)[8191] = 1;
    u32 m = sys6(192, 0, 65536, 3, 0x22, -1, 0);
    check(m < 0xfffff000u, "mmap2");
    ((volatile u32 *)m)[100] = 7;
    out("nolibc: argc="); outn(argc);
    for (u32 i = 0; i < argc; i++) { out(" "); out(argv[i]); }
    out(" env="); outn(nenv);
    out(" failed="); outn(failed); out("\n");
    sys3(252, failed, 0, 0);
}

__asm__(".globl _start\n_start:\n\tmov %esp, %eax\n\tand $-16, %esp\n\tsub $12, %esp\n"
        "\tpush %eax\n\tcall cmain\n\thlt\n");
