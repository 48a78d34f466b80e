/* dbclient: one client of a dbench-like load (musl, static, built with zig).
 *
 *   dbclient DIR ITERS NFILES MAXKB SEED
 *
 * The shape of dbench's client (dbench 1.x, client.txt): each client works
 * in its own directory and, ITERS times, creates NFILES files, writes each
 * in pieces of 4 to 64 KiB up to a size of 16 to MAXKB KiB, checks its
 * size with fstat, reads it back in pieces of 4 to 64 KiB and checks every
 * byte, closes it; then stats and unlinks them.  At the end it removes its
 * directory and prints one line: "DIR: W written R read".  Exit 0, or 1
 * with a message on the first error or wrong byte.
 *
 * Sizes come from a small LCG seeded with SEED: the same arguments give
 * the same system calls.  File byte o of a file holds (o * 7 + key) & 0xff
 * (key from the client, iteration and file): one 64 KiB + 256 buffer
 * filled once per file serves every write, and a read is checked with one
 * memcmp against it.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PIECE_MAX (64 * 1024)

static uint32_t rng;

static uint32_t next(void)
{
    rng = rng * 1103515245u + 12345u;
    return rng >> 8;
}

static uint32_t between(uint32_t lo, uint32_t hi)      /* lo..hi inclusive */
{
    return lo + next() % (hi - lo + 1);
}

static int fail(const char *what, const char *path)
{
    printf("dbclient: %s %s\n", what, path);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        printf("usage: dbclient DIR ITERS NFILES MAXKB SEED\n");
        return 2;
    }
    const char *dir = argv[1];
    int iters = atoi(argv[2]), nfiles = atoi(argv[3]);
    uint32_t maxkb = (uint32_t)atoi(argv[4]);
    rng = (uint32_t)atoi(argv[5]) * 2654435761u + 1;
    if (maxkb < 16)
        maxkb = 16;
    unsigned char *pattern = malloc(PIECE_MAX + 256), *back = malloc(PIECE_MAX);
    if (!pattern || !back)
        return fail("malloc", dir);
    if (mkdir(dir, 0755) != 0)
        return fail("mkdir", dir);
    unsigned long long written = 0, got = 0;
    char path[256];
    for (int it = 0; it < iters; it++) {
        for (int f = 0; f < nfiles; f++) {
            snprintf(path, sizeof path, "%s/f%d.%d", dir, it, f);
            uint32_t key = next() & 0xff;
            for (uint32_t i = 0; i < PIECE_MAX + 256; i++)
                pattern[i] = (unsigned char)(i * 7 + key);
            int fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0644);
            if (fd < 0)
                return fail("create", path);
            uint32_t size = between(16, maxkb) * 1024, off = 0;
            while (off < size) {
                uint32_t n = between(1, 16) * 4096;
                if (n > size - off)
                    n = size - off;
                if (write(fd, pattern + (off & 255), n) != (ssize_t)n)
                    return fail("write", path);
                off += n;
            }
            written += size;
            struct stat st;
            if (fstat(fd, &st) != 0 || st.st_size != (off_t)size)
                return fail("fstat size", path);
            if (lseek(fd, 0, SEEK_SET) != 0)
                return fail("lseek", path);
            off = 0;
            while (off < size) {
                uint32_t n = between(1, 16) * 4096;
                if (n > size - off)
                    n = size - off;
                if (read(fd, back, n) != (ssize_t)n)
                    return fail("read", path);
                if (memcmp(back, pattern + (off & 255), n) != 0)
                    return fail("wrong bytes read back from", path);
                off += n;
            }
            got += size;
            if (close(fd) != 0)
                return fail("close", path);
        }
        for (int f = 0; f < nfiles; f++) {
            struct stat st;
            snprintf(path, sizeof path, "%s/f%d.%d", dir, it, f);
            if (stat(path, &st) != 0)
                return fail("stat", path);
            if (unlink(path) != 0)
                return fail("unlink", path);
        }
    }
    if (rmdir(dir) != 0)
        return fail("rmdir", dir);
    printf("%s: %llu written %llu read\n", dir, written, got);
    return 0;
}
