/* nolibc.h: int $0x80 system calls and output for the -nostdlib workloads. */
typedef unsigned int u32;

static long sys3(long nr, long a, long b, long c)
{
    long r;
    __asm__ volatile ("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return r;
}

static long sys6(long nr, long a, long b, long c, long d, long e, long f)
{
    long r;
    __asm__ volatile ("push %%ebp\n\tmov %7, %%ebp\n\tint $0x80\n\tpop %%ebp"
                      : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e), "g"(f)
                      : "memory");
    return r;
}

static u32 slen(const char *s) { u32 n = 0; while (((volatile const char *)s)[n]) n++; return n; }
static void out(const char *s) { sys3(4, 1, (long)s, slen(s)); }
static void outn(u32 v)
{
    char b[12]; int i = 11; b[i] = 0;
    do { b[--i] = '0' + v % 10; v /= 10; } while (v);
    out(b + i);
}


static long sys5(long nr, long a, long b, long c, long d, long e)
{
    long r;
    __asm__ volatile ("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e)
                      : "memory");
    return r;
}

static int streq(const char *a, const char *b)
{
    while (*a && *a == *b) { a++; b++; }
    return *a == *b;
}
