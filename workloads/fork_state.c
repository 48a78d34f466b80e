/* fork_state: fork copies the FPU registers and the TLS array; execve
 * starts the new image with the fresh FPU state and no TLS entries
 * (copy_thread / fpu__copy at fork, flush_thread / fpu__clear at exec).
 * musl, static, built with zig.
 *
 *   fork_state        loads xmm5 (0x5eed0000 + lane) and st(0) (2.5), sets
 *                     TLS entry 7 (base 0x12345000) with set_thread_area,
 *                     forks and changes xmm5 and st(0) in the parent
 *                     before the child runs; the child checks it got the
 *                     values of the fork, and entry 7, then
 *                     execs "/fork_state fresh"; the parent waits for it and
 *                     prints "fork_state: ok", or exits with the child's
 *                     failure code.
 *   fork_state fresh  checks, before anything else runs: FCW 0x037F, MXCSR
 *                     0x1F80, an empty x87 stack, xmm5 zero, entry 7 empty.
 */
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

struct user_desc {
    unsigned entry_number, base_addr, limit, flags;
};

static unsigned char fx[512] __attribute__((aligned(16)));

static int tls7(struct user_desc *u)
{
    memset(u, 0, sizeof *u);
    u->entry_number = 7;
    return syscall(SYS_get_thread_area, u);
}

int main(int argc, char **argv, char **envp)
{
    struct user_desc u;
    __asm__ volatile("fxsave %0" : "=m"(fx));
    if (argc > 1 && !strcmp(argv[1], "fresh")) {
        unsigned short fcw;
        unsigned mxcsr, x5[4];
        memcpy(&fcw, fx, 2);
        memcpy(&mxcsr, fx + 24, 4);
        memcpy(x5, fx + 160 + 5 * 16, 16);
        if (fcw != 0x037F || mxcsr != 0x1F80)
            return 40;
        if (fx[4] != 0)                              /* abridged tag word: all empty */
            return 41;
        if (x5[0] | x5[1] | x5[2] | x5[3])
            return 42;
        if (tls7(&u) || u.base_addr || u.limit || u.flags != 0x28)
            return 43;
        return 0;
    }
    u.entry_number = 7;
    u.base_addr = 0x12345000;
    u.limit = 0xfff;
    u.flags = 0x41;                                  /* seg_32bit, useable */
    if (syscall(SYS_set_thread_area, &u))
        return 30;
    unsigned want[4] = {0x5eed0000, 0x5eed0001, 0x5eed0002, 0x5eed0003};
    double x = 2.5;
    __asm__ volatile("movdqu %0, %%xmm5\n\tfldl %1" :: "m"(want), "m"(x) : "xmm5");
    pid_t p = fork();
    if (p == 0) {
        unsigned got[4];
        double y;
        __asm__ volatile("movdqu %%xmm5, %0\n\tfstpl %1" : "=m"(got), "=m"(y));
        if (memcmp(got, want, sizeof got))
            _exit(31);
        if (y != 2.5)
            _exit(32);
        if (tls7(&u) || u.base_addr != 0x12345000 || u.limit != 0xfff)
            _exit(33);
        char *args[] = {"fork_state", "fresh", 0};
        execve("/fork_state", args, envp);
        _exit(34);
    }
    unsigned other[4] = {1, 2, 3, 4};               /* the parent's registers change before */
    double z = -7.0;                                /* the child runs: not the child's */
    __asm__ volatile("movdqu %0, %%xmm5\n\tfstp %%st(0)\n\tfldl %1" :: "m"(other), "m"(z) : "xmm5");
    int st;
    if (p < 0 || waitpid(p, &st, 0) != p || !WIFEXITED(st))
        return 35;
    if (WEXITSTATUS(st))
        return WEXITSTATUS(st);
    write(1, "fork_state: ok\n", 15);
    return 0;
}
