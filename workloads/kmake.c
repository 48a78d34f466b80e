/* kmake: make -j for the kernel-compile workload (musl, static, zig).
 *
 *   kmake -j N -n JOBS FLAGS...
 *
 * Makes /obj and /tmp, compiles /src/f<k>.c into /obj/f<k>.o for k = 0 .. JOBS-1, running at
 * most N compilers at once, as `make -j N` does: each job is fork +
 * execve("/bin/cc", ["cc", FLAGS..., "-c", "-o", OBJ, SRC], environ)
 * (make passes its whole environment on), reaped with wait4.  Then it
 * links: fork + execve("/bin/ld", ["ld", "-o", "/obj/vmlinux", OBJ...]).
 * Prints "kmake: JOBS jobs, -j N, all ok" and exits 0, or exits 1 on the
 * first failed job.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static pid_t spawn(char **argv)
{
    pid_t pid = fork();
    if (pid == 0) {
        execve(argv[0], argv, environ);
        printf("kmake: execve %s failed\n", argv[0]);
        _exit(127);
    }
    return pid;
}

static int reap(void)
{
    int status;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0)
        return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 5 || strcmp(argv[1], "-j") || strcmp(argv[3], "-n")) {
        printf("usage: kmake -j N -n JOBS FLAGS...\n");
        return 2;
    }
    int par = atoi(argv[2]), jobs = atoi(argv[4]), nflags = argc - 5;
    if (par < 1 || jobs < 1) {
        printf("kmake: -j and -n want positive numbers\n");
        return 2;
    }
    mkdir("/obj", 0755);                       /* EEXIST is fine */
    mkdir("/tmp", 0755);
    char **cc = malloc((nflags + 7) * sizeof *cc);
    char **objs = malloc((jobs + 4) * sizeof *objs);
    int running = 0, failed = 0;
    for (int k = 0; k < jobs; k++) {
        char *src = malloc(32), *obj = malloc(32);
        snprintf(src, 32, "/src/f%d.c", k);
        snprintf(obj, 32, "/obj/f%d.o", k);
        objs[3 + k] = obj;
        int n = 0;
        cc[n++] = "/bin/cc";
        for (int i = 0; i < nflags; i++)
            cc[n++] = argv[5 + i];
        cc[n++] = "-c";
        cc[n++] = "-o";
        cc[n++] = obj;
        cc[n++] = src;
        cc[n] = NULL;
        if (running == par) {
            failed |= reap();
            running--;
        }
        if (spawn(cc) < 0) {
            printf("kmake: fork failed\n");
            return 1;
        }
        running++;
    }
    while (running--)
        failed |= reap();
    if (failed) {
        printf("kmake: a job failed\n");
        return 1;
    }
    objs[0] = "/bin/ld";
    objs[1] = "-o";
    objs[2] = "/obj/vmlinux";
    objs[3 + jobs] = NULL;
    spawn(objs);
    if (reap() != 0) {
        printf("kmake: ld failed\n");
        return 1;
    }
    printf("kmake: %d jobs, -j %d, all ok\n", jobs, par);
    return 0;
}
