/*
 * A connected socket behind a transport vtable (HAProxy's xprt_ops, Redis' ConnectionType are the
 * models): plain TCP here, TLS in net/tls.c. Nothing above this layer calls recv/send/SSL_*.
 *
 * The readiness rule. rd_ready/wr_ready are set by every epoll event (edge-triggered; any event
 * sets both, and queues the owner). An operation that returns FY_AGAIN clears the flag of the
 * direction the caller asked for: read clears rd_ready, writev/shutdown clear wr_ready, whichever
 * way the transport itself waits (TLS may need to write to read: a key update, or to read to
 * write). Since any event sets both flags, the caller that waits for "its" flag is woken by the
 * edge the transport needs, retries, and the transport proceeds. So callers test only their own
 * flag and never look at TLS. A read that returned data keeps rd_ready set (TLS may hold more
 * decrypted bytes than the kernel shows); plain TCP clears it on a short read, since the kernel
 * then has nothing left and a new edge will come.
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
/* >=0 bytes written (may be short), FY_AGAIN, or -errno. */
typedef ssize_t fy_sock_writev_fn(struct fy_sock *s, const struct iovec *iov, int iovcnt);

struct fy_transport {
    const char *name; /* "tcp", "tls": for logs */
    /* A graceful close calls shutdown first: TLS has a close_notify to send. (TCP's FIN comes
     * with close(2) anyway, so it saves the call.) */
    bool shutdown_before_close;
    fy_sock_read_fn *read;
    fy_sock_writev_fn *writev;
    /* The graceful end of our output after the bytes written so far: TLS sends close_notify,
     * then TCP a FIN. Reading stays possible. 0 done, FY_AGAIN (call again when wr_ready), or
     * -errno. */
    int (*shutdown)(struct fy_sock *s);
    /* One step of the handshake: 0 when done (also for TCP, which has none), FY_AGAIN (call
     * again on the next event), or FY_ETLS (fy_tls_error() says why) / -errno. */
    int (*handshake)(struct fy_sock *s);
    /* The protocol ALPN selected, NULL (len 0) when none was. */
    const char *(*alpn)(const struct fy_sock *s, unsigned *len);
    /* The peer hung up (see fy_sock_peer_gone). */
    bool (*peer_gone)(struct fy_sock *s);
    /* Zero-copy relay through a pipe; NULL when the transport cannot (TLS: the bytes must pass
     * through user space to be decrypted). Same results as read/writev. */
    ssize_t (*splice_in)(struct fy_sock *s, int pipe_wr, size_t len);  /* socket -> pipe */
    ssize_t (*splice_out)(struct fy_sock *s, int pipe_rd, size_t len); /* pipe -> socket */
    /* Releases the transport's state and closes the fd. Sends nothing more: a TLS connection
     * closed without fy_sock_shutdown() first ends without close_notify, which tells a client
     * that a close-delimited body was cut (what an aborted exchange must say). */
    void (*close)(struct fy_sock *s);
};

/* A TLS failure (net/tls.c); distinct from every -errno. */
#define FY_ETLS (-4097)

struct fy_sock {
    struct fy_pollable pollable; /* must stay first */
    int fd;
    bool rd_ready;
    bool wr_ready;
    bool eof_pending; /* epoll saw RDHUP/HUP/ERR: a read will report it, never wait for an edge */
    const struct fy_transport *tp;
    void *ctx; /* the transport's per-socket state (TLS: the SSL object); NULL for TCP */
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

static inline int fy_sock_shutdown(struct fy_sock *s)
{
    return s->tp->shutdown(s);
}

static inline int fy_sock_handshake(struct fy_sock *s)
{
    return s->tp->handshake(s);
}

/* The transport can relay through a pipe (splice_in and splice_out); false for TLS. */
static inline bool fy_sock_can_splice(const struct fy_sock *s)
{
    return s->tp->splice_in && s->tp->splice_out;
}

/* Moves up to len bytes from the socket into the pipe's write end (fy_sock_can_splice() only).
 * Results as for read: >0, 0 at end of stream, FY_AGAIN (the socket is empty or the pipe full:
 * only the caller, which counts what the pipe holds, can tell), -errno. Readiness: FY_AGAIN
 * clears rd_ready, a short splice does not (the pipe may have been the limit). */
static inline ssize_t fy_sock_splice_in(struct fy_sock *s, int pipe_wr, size_t len)
{
    return s->tp->splice_in(s, pipe_wr, len);
}

/* Moves up to len bytes from the pipe's read end to the socket. Same results and readiness as
 * writev: >=0 (may be short), FY_AGAIN, -errno. */
static inline ssize_t fy_sock_splice_out(struct fy_sock *s, int pipe_rd, size_t len)
{
    return s->tp->splice_out(s, pipe_rd, len);
}

/* FIN after the bytes written so far, below the transport (no TLS close_notify): how an
 * exchange cut short ends its output while still draining the peer's input. */
void fy_sock_shutdown_tcp(struct fy_sock *s);

/* Moves an open socket to `to` (its new home, e.g. from the handshake stage to a protocol
 * handler), whose events then queue `owner`. `from` must not be used afterwards. Returns 0 or
 * -errno (then the socket is closed). */
int fy_sock_move(struct fy_sock *to, struct fy_sock *from, struct fy_task *owner);

/* Starts a non-blocking TCP connect to addr. Returns a fd (connect in progress or done), or -errno.
 */
struct sockaddr;
int fy_sock_connect_start(const struct sockaddr *addr, unsigned addrlen);

/* The peer hung up: a FIN (or TLS close_notify) with no unread byte before it, or a reset.
 * Looks without consuming application bytes, so bytes still unread, such as a pipelined request,
 * say "not hung up". Meant for a connection that is not being read from. */
static inline bool fy_sock_peer_gone(struct fy_sock *s)
{
    return s->tp->peer_gone(s);
}

/* Copies up to len bytes the peer sent without consuming them, below any transport (the accept
 * stage looks at a connection's first byte before choosing one). Same results as read. */
ssize_t fy_sock_peek(struct fy_sock *s, void *buf, size_t len);

/* The TCP-level check behind fy_sock_peer_gone (MSG_PEEK on the socket). */
bool fy_sock_tcp_peer_gone(struct fy_sock *s);

/* After the socket became writable: 0 if the connect succeeded, else -errno (SO_ERROR). */
int fy_sock_connect_result(struct fy_sock *s);

#endif
