/* fpu_keep: x87 and SSE registers survive system calls, page faults and
 * preemption (musl, static, built with zig).
 *
 *   fpu_keep N     loads xmm5 (4 lanes of pid * 0x01010101) and st(0)
 *                  (pid * 1.5), then N times: a system call, a page fault
 *                  on a fresh anonymous page, a busy loop the timer
 *                  preempts; reads both registers back each time.  Prints
 *                  "fpu_keep: ok" and exits 0, or exits 1 (xmm) / 2 (x87).
 * The loop body uses no floating point, so the compiler leaves xmm5 and
 * the x87 stack alone.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 16;
    unsigned want = (unsigned)getpid() * 0x01010101u;
    double x = (double)getpid() * 1.5;
    char *area = mmap(0, (size_t)n * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED)
        return 3;
    __asm__ volatile("movd %0, %%xmm5\n\tpshufd $0, %%xmm5, %%xmm5\n\tfldl %1" :: "r"(want), "m"(x) : "xmm5");
    for (int i = 0; i < n; i++) {
        unsigned got[4];
        double y;
        getpid();                                   /* a system call */
        area[(size_t)i * 4096] = (char)i;           /* a page fault */
        for (volatile int j = 0; j < 20000; j++)    /* room for the timer */
            ;
        __asm__ volatile("movdqu %%xmm5, %0\n\tfstl %1" : "=m"(got), "=m"(y));
        if (got[0] != want || got[1] != want || got[2] != want || got[3] != want)
            return 1;
        if (memcmp(&y, &x, sizeof y))
            return 2;
    }
    write(1, "fpu_keep: ok\n", 13);
    return 0;
}
