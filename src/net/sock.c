/* Plain TCP transport and socket registration; see sock.h. */
#include "net/sock.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/assert.h"

static void on_sock_event(struct fy_pollable *p, uint32_t events)
{
    struct fy_sock *s = (struct fy_sock *)p;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        s->eof_pending = true;
    /* EPOLLIN/RDHUP/HUP/ERR all mean "a read will not block"; OUT/HUP/ERR the same for writes.
     * Marking both on any event costs at most one EAGAIN and never loses a wakeup. */
    s->rd_ready = true;
    s->wr_ready = true;
    if (s->owner)
        fy_loop_queue(s->loop, s->owner);
}

/* The result of a non-blocking socket call (already retried on EINTR): the count, or FY_AGAIN
 * with the caller's readiness flag cleared, or -errno. */
static ssize_t io_result(ssize_t n, bool *ready)
{
    if (n >= 0)
        return n;
    if (errno == EAGAIN) {
        *ready = false;
        return FY_AGAIN;
    }
    return -errno;
}

static ssize_t plain_read(struct fy_sock *s, void *buf, size_t len)
{
    ssize_t n;
    do /* recv/sendmsg go straight to the socket layer, skipping the VFS work of read/writev */
        n = recv(s->fd, buf, len, 0);
    while (n < 0 && errno == EINTR);
    /* A short read drained the socket and epoll reports new data with a new edge; but an end of
     * stream that arrived with the data gets no edge of its own. */
    if (n > 0 && (size_t)n < len && !s->eof_pending)
        s->rd_ready = false;
    return io_result(n, &s->rd_ready);
}

static ssize_t plain_writev(struct fy_sock *s, const struct iovec *iov, int iovcnt)
{
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    ssize_t n;
    do
        n = sendmsg(s->fd, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return io_result(n, &s->wr_ready);
}

static int plain_shutdown(struct fy_sock *s)
{
    return shutdown(s->fd, SHUT_WR) < 0 && errno != ENOTCONN ? -errno : 0;
}

static int plain_handshake(struct fy_sock *s)
{
    (void)s;
    return 0;
}

static const char *plain_alpn(const struct fy_sock *s, unsigned *len)
{
    (void)s;
    *len = 0;
    return NULL;
}

/* Unlike a short read, a short splice does not prove the socket drained: the pipe fills one slot
 * per received fragment and may have run out of slots first. So rd_ready stays set, and the next
 * call tells (EAGAIN: the socket is empty, or the pipe is full; the caller knows which, as it
 * counts what the pipe holds, and only a socket that is empty waits for an edge). */
static ssize_t plain_splice_in(struct fy_sock *s, int pipe_wr, size_t len)
{
    ssize_t n;
    do
        n = splice(s->fd, NULL, pipe_wr, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    while (n < 0 && errno == EINTR);
    return io_result(n, &s->rd_ready);
}

static ssize_t plain_splice_out(struct fy_sock *s, int pipe_rd, size_t len)
{
    ssize_t n;
    do
        n = splice(pipe_rd, NULL, s->fd, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    while (n < 0 && errno == EINTR);
    return io_result(n, &s->wr_ready);
}

static void plain_close(struct fy_sock *s)
{
    close(s->fd);
}

const struct fy_transport fy_plain_transport = {
    .name = "tcp",
    .read = plain_read,
    .writev = plain_writev,
    .shutdown = plain_shutdown,
    .handshake = plain_handshake,
    .alpn = plain_alpn,
    .peer_gone = fy_sock_tcp_peer_gone,
    .splice_in = plain_splice_in,
    .splice_out = plain_splice_out,
    .close = plain_close,
};

int fy_sock_open(struct fy_sock *s, struct fy_loop *loop, int fd, struct fy_task *owner)
{
    s->pollable.on_event = on_sock_event;
    s->fd = fd;
    s->tp = &fy_plain_transport;
    s->ctx = NULL;
    s->loop = loop;
    s->owner = owner;
    s->rd_ready = false;
    s->wr_ready = false;
    s->eof_pending = false;
    int err = fy_loop_add(loop, fd, &s->pollable);
    if (err < 0) {
        close(fd);
        s->fd = -1;
        return err;
    }
    return 0;
}

int fy_sock_move(struct fy_sock *to, struct fy_sock *from, struct fy_task *owner)
{
    *to = *from;
    to->owner = owner;
    from->fd = -1;
    from->ctx = NULL;
    /* Events are dispatched before tasks run (core/loop.c), so no event for `from` is still
     * pending when a task moves it. MOD re-arms the edge: readiness that is already there is
     * reported again, so nothing is lost in the move. */
    int err = fy_loop_mod(to->loop, to->fd, &to->pollable);
    if (err < 0) {
        fy_sock_close(to);
        return err;
    }
    return 0;
}

void fy_sock_shutdown_tcp(struct fy_sock *s)
{
    shutdown(s->fd, SHUT_WR);
}

void fy_sock_close(struct fy_sock *s)
{
    if (s->fd < 0)
        return;
    /* close(2) removes the fd from epoll; the explicit DEL is not needed. */
    s->tp->close(s);
    s->fd = -1;
    s->ctx = NULL;
    s->tp = &fy_plain_transport;
    s->rd_ready = s->wr_ready = false;
}

int fy_sock_connect_start(const struct sockaddr *addr, unsigned addrlen)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, addr, addrlen) < 0 && errno != EINPROGRESS) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

int fy_sock_connect_result(struct fy_sock *s)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return -errno;
    return err ? -err : 0;
}

ssize_t fy_sock_peek(struct fy_sock *s, void *buf, size_t len)
{
    ssize_t n;
    do
        n = recv(s->fd, buf, len, MSG_PEEK);
    while (n < 0 && errno == EINTR);
    return io_result(n, &s->rd_ready);
}

bool fy_sock_tcp_peer_gone(struct fy_sock *s)
{
    char byte;
    ssize_t n;
    do
        n = recv(s->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n == 0)
        return true;
    return n < 0 && errno != EAGAIN;
}
