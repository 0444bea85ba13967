/* The per-thread pipe pool; see pipe.h. */
#include "net/pipe.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "core/assert.h"

/* Pooled pipes per thread. Each one counts against the user's pipe pages even when empty, so
 * the pool keeps only what a few concurrent large bodies reuse. */
#define PIPE_POOL_MAX 16

static __thread struct fy_pipe *pool;
static __thread unsigned npool;

static void pipe_close(struct fy_pipe *p)
{
    close(p->rd);
    close(p->wr);
    free(p);
}

struct fy_pipe *fy_pipe_get(void)
{
#ifndef FY_NO_FREELIST
    if (pool) {
        struct fy_pipe *p = pool;
        pool = p->next_free;
        npool--;
        p->next_free = NULL;
        return p;
    }
#endif
    struct fy_pipe *p = malloc(sizeof(*p));
    if (!p)
        return NULL;
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        free(p);
        return NULL;
    }
    p->rd = fds[0];
    p->wr = fds[1];
    p->held = 0;
    p->next_free = NULL;
    /* A refusal (the per-user limit) leaves the default size; what counts is what was granted. */
    (void)fcntl(p->wr, F_SETPIPE_SZ, FY_PIPE_SIZE);
    int cap = fcntl(p->wr, F_GETPIPE_SZ);
    if (cap < FY_PIPE_MIN_SIZE) {
        pipe_close(p);
        return NULL;
    }
    p->cap = (uint32_t)cap;
    return p;
}

void fy_pipe_put(struct fy_pipe *p)
{
    if (!p)
        return;
    /* The user's count is what keeps one exchange's bytes from reaching the next: check it
     * against the kernel's (one ioctl per large body). */
    int queued = -1;
    int rc = ioctl(p->rd, FIONREAD, &queued);
    FY_ASSERT(rc == 0 && (uint32_t)queued == p->held);
#ifndef FY_NO_FREELIST
    if (p->held == 0 && npool < PIPE_POOL_MAX) {
        p->next_free = pool;
        pool = p;
        npool++;
        return;
    }
#endif
    pipe_close(p);
}

void fy_pipe_pool_release(void)
{
    while (pool) {
        struct fy_pipe *p = pool;
        pool = p->next_free;
        pipe_close(p);
    }
    npool = 0;
}
