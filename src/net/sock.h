/*
 * A connected socket behind a transport vtable. Plain TCP is the only transport today; TLS will be
 * a second vtable with the same contract, so nothing above this layer calls read(2)/writev(2).
 * Readiness is tracked edge-triggered: rd_ready/wr_ready are set by epoll events and cleared when
 * the transport reports it would block (or returned a short count, which means the same for TCP).
 */
#ifndef FY_SOCK_H
#define FY_SOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "core/loop.h"

struct fy_sock;

/* >0 bytes read, 0 end of stream, FY_AGAIN, or -errno. */
typedef ssize_t fy_sock_read_fn(struct fy_sock *s, void *buf, size_t len);
/* >=0 bytes written, FY_AGAIN, or -errno. */
typedef ssize_t fy_sock_writev_fn(struct fy_sock *s, const struct iovec *iov, int iovcnt);
/* Sends end-of-stream (FIN) after pending data. */
typedef void fy_sock_shutdown_fn(struct fy_sock *s);
/* Releases the transport's state and the fd. */
typedef void fy_sock_close_fn(struct fy_sock *s);

struct fy_transport {
    fy_sock_read_fn *read;
    fy_sock_writev_fn *writev;
    fy_sock_shutdown_fn *shutdown_write;
    fy_sock_close_fn *close;
};

struct fy_sock {
    struct fy_pollable pollable; /* must stay first */
    int fd;
    bool rd_ready;
    bool wr_ready;
    bool eof_pending; /* epoll saw RDHUP/HUP/ERR: a read will report it, never wait for an edge */
    const struct fy_transport *tp;
    struct fy_loop *loop;
    struct fy_task *owner; /* queued on every event */
};

extern const struct fy_transport fy_plain_transport;

/* Wraps a non-blocking connected (or connecting) fd and registers it with the loop. On failure the
 * fd is closed and -errno returned. */
int fy_sock_open(struct fy_sock *s, struct fy_loop *loop, int fd, struct fy_task *owner);

/* Unregisters and closes; the struct may be freed afterwards. Safe to call twice. */
void fy_sock_close(struct fy_sock *s);

static inline ssize_t fy_sock_read(struct fy_sock *s, void *buf, size_t len)
{
    return s->tp->read(s, buf, len);
}

static inline ssize_t fy_sock_writev(struct fy_sock *s, const struct iovec *iov, int n)
{
    return s->tp->writev(s, iov, n);
}

/* Starts a non-blocking TCP connect to addr. Returns a fd (connect in progress or done), or -errno.
 */
struct sockaddr;
int fy_sock_connect_start(const struct sockaddr *addr, unsigned addrlen);

/* The peer hung up: a FIN with no unread byte before it, or a reset. Looks without consuming
 * (MSG_PEEK on the TCP socket, below any transport), so bytes still unread, such as a pipelined
 * request, say "not hung up". Meant for a connection that is not being read from. */
bool fy_sock_peer_gone(struct fy_sock *s);

/* After the socket became writable: 0 if the connect succeeded, else -errno (SO_ERROR). */
int fy_sock_connect_result(struct fy_sock *s);

#endif
