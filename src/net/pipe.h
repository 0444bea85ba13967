/*
 * Kernel pipes for zero-copy relays (splice(2) through fy_sock's splice_in/splice_out), from a
 * per-thread pool. A pipe moves body bytes from one socket to another without them entering user
 * space; what it holds is kernel memory, bounded by its capacity, and counted by its user in
 * `held` (the pipe itself cannot be asked). Only an empty pipe goes back to the pool: one that
 * still holds bytes belongs to an exchange that was cut, and its bytes must never reach the next
 * user, so it is closed.
 */
#ifndef FY_PIPE_H
#define FY_PIPE_H

#include <stdint.h>

/*
 * The capacity asked for (F_SETPIPE_SZ). 256 KiB: 64 page slots, enough for what a loopback or
 * LAN socket hands over in one splice (the kernel fills one slot per received fragment, so a
 * pipe may be "full" well below its byte capacity), while an exchange pins at most this much
 * kernel memory. The default per-user soft limit (fs.pipe-user-pages-soft, 64 MiB) then allows
 * 256 such pipes per user before the kernel shrinks new ones; a pipe smaller than
 * FY_PIPE_MIN_SIZE is refused, and the caller copies instead.
 */
#define FY_PIPE_SIZE (256 * 1024)
#define FY_PIPE_MIN_SIZE (64 * 1024)

struct fy_pipe {
    int rd, wr;    /* O_NONBLOCK | O_CLOEXEC ends */
    uint32_t cap;  /* the capacity the kernel granted, in bytes */
    uint32_t held; /* bytes in the pipe: the user adds what it spliced in, subtracts what out */
    struct fy_pipe *next_free;
};

/* An empty pipe (held == 0), from this thread's pool or new. The caller owns it until
 * fy_pipe_put(). NULL when none can be had (out of fds or memory, or the kernel granted less than
 * FY_PIPE_MIN_SIZE): the caller falls back to copying. */
struct fy_pipe *fy_pipe_get(void);

/* Gives the pipe back: to this thread's pool when it is empty and the pool has room (never with
 * FY_NO_FREELIST), else closed. NULL ok. The caller must not use it afterwards. */
void fy_pipe_put(struct fy_pipe *p);

/* Closes this thread's pooled pipes; called when a worker exits. */
void fy_pipe_pool_release(void);

#endif
