/*
 * Allocation failure injection for unit tests: while fail_allocs is non-zero, malloc, calloc and
 * realloc return NULL (failed_allocs counts the refusals). Include it in one test file per test
 * binary, since it replaces the allocator of the whole binary. Sanitizer builds own the
 * allocator: there FY_NO_ALLOC_INJECTION is defined and nothing is replaced, so tests skip
 * their injected part.
 */
#ifndef FY_TEST_FAIL_ALLOC_H
#define FY_TEST_FAIL_ALLOC_H

#include <stddef.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define FY_NO_ALLOC_INJECTION 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FY_NO_ALLOC_INJECTION 1
#endif

/* Setting fail_allocs is harmless (and does nothing) in sanitizer builds. */
static volatile int fail_allocs __attribute__((unused));
static volatile unsigned failed_allocs __attribute__((unused));

#ifndef FY_NO_ALLOC_INJECTION
/* glibc's own entry points, which the replacements below forward to. */
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t n);

void *malloc(size_t n)
{
    if (fail_allocs) {
        failed_allocs++;
        return NULL;
    }
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    if (fail_allocs) {
        failed_allocs++;
        return NULL;
    }
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    if (fail_allocs) {
        failed_allocs++;
        return NULL;
    }
    return __libc_realloc(p, n);
}
#endif

#endif
