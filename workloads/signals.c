/* signals: handlers run on a real signal frame and sigreturn restores the
 * interrupted context (musl, static, built with zig).
 *
 *   signals N   forks N children that exit with codes 1..N; the parent
 *               waits for them with sigsuspend and a SIGCHLD handler (as
 *               busybox sh's `wait`), reaps each with waitpid(WNOHANG),
 *               then: raise(SIGUSR1) with an SA_SIGINFO handler (si_signo,
 *               si_pid, the ucontext pointer), a blocked SIGUSR2 delivered
 *               when sigprocmask unblocks it, a read of a pipe interrupted
 *               by SIGCHLD with SA_RESTART (the read restarts and gets the
 *               child's byte) and without (EINTR), and SIGTERM from a child
 *               caught by a handler.  Registers held across each delivery
 *               are checked.  Prints "signals: ok" and exits 0, or exits
 *               with the number of the failed check.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int chld, usr1, usr2, term, info_ok;

static void on_chld(int sig) { if (sig == SIGCHLD) chld++; }
static void on_usr2(int sig) { if (sig == SIGUSR2) usr2++; }
static void on_term(int sig) { if (sig == SIGTERM) term++; }
static void on_usr1(int sig, siginfo_t *si, void *uc)
{
    if (sig == SIGUSR1 && si->si_signo == SIGUSR1 && si->si_pid == getpid() && uc)
        info_ok = 1;
    usr1++;
}

static int fail(int n) { return n; }

static int catch(int sig, void (*fn)(int), int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    return sigaction(sig, &sa, 0);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? argv[1][0] - '0' : 4;
    sigset_t block, old, none;
    sigemptyset(&none);
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    if (catch(SIGCHLD, on_chld, 0))
        return fail(10);
    sigprocmask(SIG_BLOCK, &block, &old);
    for (int i = 1; i <= n; i++) {
        pid_t p = fork();
        if (p < 0)
            return fail(11);
        if (p == 0)
            _exit(i);
    }
    int reaped = 0, sum = 0;
    unsigned magic = 0x5eed1234u;
    while (reaped < n) {
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
            if (!WIFEXITED(st))
                return fail(12);
            sum += WEXITSTATUS(st);
            reaped++;
        }
        if (reaped < n) {
            int r = sigsuspend(&none);              /* returns -1 EINTR after the handler */
            if (r != -1 || errno != EINTR)
                return fail(13);
        }
    }
    __asm__ volatile("" : "+r"(magic));
    if (sum != n * (n + 1) / 2 || chld < 1 || magic != 0x5eed1234u)
        return fail(14);
    sigprocmask(SIG_SETMASK, &old, 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, 0);
    raise(SIGUSR1);
    if (usr1 != 1 || !info_ok)
        return fail(15);

    catch(SIGUSR2, on_usr2, 0);
    sigemptyset(&block);
    sigaddset(&block, SIGUSR2);
    sigprocmask(SIG_BLOCK, &block, 0);
    raise(SIGUSR2);
    if (usr2 != 0)
        return fail(16);
    sigprocmask(SIG_UNBLOCK, &block, 0);
    if (usr2 != 1)
        return fail(17);

    /* a pipe read interrupted by SIGCHLD: restarted with SA_RESTART */
    for (int restart = 1; restart >= 0; restart--) {
        int fds[2];
        char c = 0;
        if (pipe(fds))
            return fail(18);
        catch(SIGCHLD, on_chld, restart ? SA_RESTART : 0);
        int before = chld;
        pid_t p = fork();
        if (p == 0) {
            /* the parent is asleep in read when this child exits; a
             * grandchild writes the byte after its parent is gone */
            if (fork() == 0) {
                for (volatile int j = 0; j < 400000; j++)
                    ;
                write(fds[1], "x", 1);
                _exit(0);
            }
            for (volatile int j = 0; j < 100000; j++)
                ;
            _exit(0);
        }
        close(fds[1]);
        ssize_t r = read(fds[0], &c, 1);
        if (restart && (r != 1 || c != 'x' || chld != before + 1))
            return fail(19);
        if (!restart && !(r == -1 && errno == EINTR && chld == before + 1))
            return fail(20);
        waitpid(p, 0, 0);
        close(fds[0]);
    }

    catch(SIGTERM, on_term, 0);
    pid_t me = getpid();
    pid_t p = fork();
    if (p == 0) {
        kill(me, SIGTERM);
        _exit(0);
    }
    while (!term)
        ;
    waitpid(p, 0, 0);
    write(1, "signals: ok\n", 12);
    return 0;
}
