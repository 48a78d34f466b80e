/* nolibc_sys: checks the file and process system calls a C library uses,
 * with Linux's errors for bad arguments, without a C library: mkdir,
 * open(at), write, dup/dup2/fcntl, stat64, pread64, _llseek, ioctl (ENOTTY),
 * getdents64, rename, unlink, rmdir, /dev/null, /dev/zero, uname,
 * getrandom, clock_gettime, mprotect (split, EINVAL, ENOMEM), an unknown
 * call (ENOSYS).  Prints "nolibc_sys: failed=N", then stores into the page
 * it made read-only: the kernel must kill it there (SIGSEGV, a write).
 */
#include "nolibc.h"

static int failed;
static void check(int ok, const char *what)
{
    if (!ok) { failed++; out("FAIL "); out(what); out("\n"); }
}

static char buf[1024];
static u32 st[24];

enum { O_WRONLY = 1, O_RDWR = 2, O_CREAT = 0100, O_DIRECTORY = 0200000 };
#define AT_FDCWD (-100)

void __attribute__((used)) cmain(u32 *sp)
{
    (void)sp;
    check(sys3(39, (long)"/d", 0755, 0) == 0, "mkdir");
    check(sys3(39, (long)"/d", 0755, 0) == -17, "mkdir EEXIST");
    check(sys3(39, (long)"/nope/x", 0755, 0) == -2, "mkdir ENOENT");
    long fd = sys3(5, (long)"/d/f", O_CREAT | O_WRONLY, 0644);
    check(fd >= 3, "open O_CREAT");
    check(sys3(4, fd, (long)"hello world", 11) == 11, "write");
    check(sys3(63, fd, 9, 0) == 9, "dup2");
    check(sys3(4, 9, (long)"!", 1) == 1, "write dup2");
    check(sys3(55, 9, 1, 0) == 0, "F_GETFD");
    check(sys3(55, 9, 2, 1) == 0 && sys3(55, 9, 1, 0) == 1, "F_SETFD");
    check((sys3(55, fd, 3, 0) & 3) == O_WRONLY, "F_GETFL");
    check(sys3(55, 77, 3, 0) == -9, "fcntl EBADF");
    check(sys3(6, fd, 0, 0) == 0 && sys3(6, 9, 0, 0) == 0, "close");
    check(sys3(6, 9, 0, 0) == -9, "close EBADF");
    check(sys3(195, (long)"/d/f", (long)st, 0) == 0, "stat64");
    check(st[11] == 12 && (st[4] & 0170000) == 0100000, "stat64 size/mode");
    check(sys3(195, (long)"/d/missing", (long)st, 0) == -2, "stat64 ENOENT");
    check(sys3(195, (long)"/d/f/x", (long)st, 0) == -20, "stat64 ENOTDIR");
    fd = sys5(295, AT_FDCWD, (long)"d/f", 0, 0, 0);
    check(fd >= 3, "openat");
    check(sys5(180, fd, (long)buf, 5, 6, 0) == 5 && buf[0] == 'w' && buf[4] == 'd', "pread64");
    unsigned long long res = 99;
    check(sys5(140, fd, 0, 2, (long)&res, 0) == 0 && res == 2, "_llseek");
    check(sys3(3, fd, (long)buf, 3) == 3 && buf[0] == 'l' && buf[2] == 'o', "read after llseek");
    check(sys3(54, fd, 0x5401, (long)buf) == -25, "ioctl ENOTTY");
    check(sys3(197, fd, (long)st, 0) == 0 && st[11] == 12, "fstat64");
    sys3(6, fd, 0, 0);
    long dfd = sys3(5, (long)"/d", O_DIRECTORY, 0);
    check(dfd >= 3, "open dir");
    check(sys3(4, dfd, (long)"x", 1) == -9, "write dir EBADF");
    long n = sys3(220, dfd, (long)buf, sizeof buf);
    int dot = 0, dotdot = 0, f = 0;
    for (long off = 0; off < n; ) {
        unsigned short reclen = *(unsigned short *)(buf + off + 16);
        const char *name = buf + off + 19;
        dot += streq(name, "."); dotdot += streq(name, ".."); f += streq(name, "f");
        off += reclen;
    }
    check(n > 0 && dot == 1 && dotdot == 1 && f == 1, "getdents64");
    check(sys3(220, dfd, (long)buf, sizeof buf) == 0, "getdents64 end");
    sys3(6, dfd, 0, 0);
    check(sys3(38, (long)"/d/f", (long)"/d/g", 0) == 0, "rename");
    check(sys3(5, (long)"/d/f", 0, 0) == -2, "renamed away");
    check(sys3(40, (long)"/d", 0, 0) == -39, "rmdir ENOTEMPTY");
    check(sys3(10, (long)"/d", 0, 0) == -21, "unlink EISDIR");
    check(sys3(10, (long)"/d/g", 0, 0) == 0, "unlink");
    check(sys3(40, (long)"/d", 0, 0) == 0, "rmdir");
    check(sys3(195, (long)"/d", (long)st, 0) == -2, "rmdir gone");
    fd = sys3(5, (long)"/dev/null", O_WRONLY, 0);
    check(sys3(4, fd, (long)buf, 100) == 100, "/dev/null");
    fd = sys3(5, (long)"/dev/zero", 0, 0);
    buf[0] = 1;
    check(sys3(3, fd, (long)buf, 16) == 16 && buf[0] == 0 && buf[15] == 0, "/dev/zero");
    long d1 = sys3(41, 1, 0, 0);
    check(d1 >= 3 && sys3(4, d1, (long)"dup\n", 4) == 4, "dup stdout");
    check(sys3(122, (long)buf, 0, 0) == 0 && streq(buf, "Linux") && streq(buf + 4 * 65, "i686"), "uname");
    check(sys3(355, (long)buf, 16, 0) == 16, "getrandom");
    check(sys3(199, 0, 0, 0) == 0, "getuid32");
    check(sys3(265, 1, (long)st, 0) == 0 && (st[0] | st[1]) != 0, "clock_gettime");
    check(sys3(999, 0, 0, 0) == -38, "ENOSYS");
    fd = sys3(5, (long)"/big", O_CREAT | O_RDWR, 0644);     /* past the first 4 MiB extent */
    check(sys5(181, fd, (long)"tail", 4, (4 << 20) + 4094, 0) == 4, "pwrite64 past 4 MiB");
    check(sys3(197, fd, (long)st, 0) == 0 && st[11] == (4 << 20) + 4098, "size past 4 MiB");
    check(sys5(180, fd, (long)buf, 8, (4 << 20) + 4092, 0) == 6 && buf[0] == 0 && buf[2] == 't'
          && buf[5] == 'l', "pread64 past 4 MiB");
    sys3(6, fd, 0, 0);
    char *m = (char *)sys6(192, 0, 3 * 4096, 3, 0x22, -1, 0);
    m[0] = 1; m[4096] = 2; m[8192] = 3;
    check(sys3(125, (long)m + 4096, 4096, 1) == 0, "mprotect");
    check(sys3(125, (long)m + 1, 4096, 1) == -22, "mprotect EINVAL");
    check(sys3(125, 0x10000000, 4096, 1) == -12, "mprotect ENOMEM");
    check(m[4096] == 2 && m[8192] == 3, "mprotect keeps data");
    m[8192] = 4;
    out("nolibc_sys: failed="); outn(failed); out("\n");
    ((volatile char *)m)[4096] = 5;              /* SIGSEGV: the page is read-only now */
    out("nolibc_sys: not killed\n");
    sys3(252, 0, 0, 0);
}

__asm__(".globl _start\n_start:\n\tmov %esp, %eax\n\tand $-16, %esp\n\tsub $12, %esp\n"
        "\tpush %eax\n\tcall cmain\n\thlt\n");
