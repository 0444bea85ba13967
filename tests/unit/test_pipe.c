/* Unit tests for src/net/pipe.c: the pipe pool recycles only empty pipes. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "net/pipe.h"

static void fini(void)
{
    fy_pipe_pool_release();
}

TestSuite(pipe_pool, .fini = fini);

Test(pipe_pool, pipes_are_non_blocking_and_large)
{
    struct fy_pipe *p = fy_pipe_get();
    cr_assert_not_null(p);
    cr_assert_eq(p->held, 0);
    cr_assert_geq(p->cap, FY_PIPE_MIN_SIZE);
    cr_assert(fcntl(p->rd, F_GETFL) & O_NONBLOCK);
    cr_assert(fcntl(p->wr, F_GETFL) & O_NONBLOCK);
    cr_assert(fcntl(p->rd, F_GETFD) & FD_CLOEXEC);
    char c;
    cr_assert_eq(read(p->rd, &c, 1), -1);
    cr_assert_eq(errno, EAGAIN);
    fy_pipe_put(p);
}

Test(pipe_pool, an_empty_pipe_is_reused_one_with_bytes_is_closed)
{
    struct fy_pipe *p = fy_pipe_get();
    int rd = p->rd;
    fy_pipe_put(p);
    struct fy_pipe *q = fy_pipe_get();
#ifdef FY_NO_FREELIST
    (void)rd;
#else
    cr_assert_eq(q, p, "an empty pipe goes back to the pool");
    cr_assert_eq(q->rd, rd);
#endif
    cr_assert_eq(write(q->wr, "abc", 3), 3);
    q->held = 3;
    int qrd = q->rd;
    fy_pipe_put(q); /* holds bytes: closed, never handed out again */
    cr_assert_eq(fcntl(qrd, F_GETFD), -1, "the pipe with bytes was not closed");
    struct fy_pipe *r = fy_pipe_get();
    cr_assert_not_null(r);
    char c;
    cr_assert_eq(read(r->rd, &c, 1), -1, "a new user got another exchange's bytes");
    fy_pipe_put(r);
}
