/*
 * LD_PRELOAD shim that counts heap allocations (malloc, calloc, realloc, the aligned variants)
 * of the process it is loaded into, for tests that check the allocation budget of the hot path.
 * On SIGUSR2 it appends "<total>\n" to the file named by ALLOC_COUNT_FILE, using only
 * async-signal-safe calls. It forwards to glibc's __libc_* entry points, so no dlsym recursion.
 */
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t align, size_t n);

static unsigned long count;

static void bump(void)
{
    __atomic_add_fetch(&count, 1, __ATOMIC_RELAXED);
}

void *malloc(size_t n)
{
    bump();
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
    bump();
    return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
    bump();
    return __libc_realloc(p, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    bump();
    return __libc_memalign(align, n);
}

void *memalign(size_t align, size_t n)
{
    bump();
    return __libc_memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    bump();
    void *p = __libc_memalign(align, n);
    if (!p)
        return 12; /* ENOMEM */
    *out = p;
    return 0;
}

static char path[512];

static void on_usr2(int sig)
{
    (void)sig;
    char digits[32];
    int n = 0;
    unsigned long v = __atomic_load_n(&count, __ATOMIC_RELAXED);
    char tmp[32];
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++)
        digits[i] = tmp[n - 1 - i];
    digits[n++] = '\n';
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        ssize_t w = write(fd, digits, (size_t)n);
        (void)w;
        close(fd);
    }
}

__attribute__((constructor)) static void init(void)
{
    const char *p = getenv("ALLOC_COUNT_FILE");
    if (!p || strlen(p) >= sizeof(path))
        return;
    memcpy(path, p, strlen(p) + 1);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr2;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR2, &sa, NULL);
}
