/*
 * FY_ASSERT: cheap invariant checks that stay on in every build (like Varnish's AN/AZ). A failed
 * assertion is a ferry bug: it prints where and aborts so the core dump shows the state.
 */
#ifndef FY_ASSERT_H
#define FY_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define FY_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (__builtin_expect(!(cond), 0)) {                                                        \
            fprintf(stderr, "error ferry: assertion failed: %s at %s:%d\n", #cond, __FILE__,       \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Return codes shared by every layer: 0 = done, FY_AGAIN = would block, other negative values are
 * -errno. FY_AGAIN lies outside the errno range on purpose: a raw -EAGAIN from a syscall wrapper
 * must never pass for "try again later" without going through the transport's readiness. */
#define FY_AGAIN (-4096)

#endif
