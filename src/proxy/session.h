/*
 * One proxied exchange (request in, response out) as an explicit state machine. The session talks
 * to its client through struct fy_downstream_ops, never to a socket, so an HTTP/1 connection today
 * and an HTTP/2 stream later drive the same object. The session owns its upstream connection.
 *
 * Body data crosses the session by reference, in both directions, and the owner of the memory
 * frees it only once the other side has let go:
 *  - spans from body_read() point into the downstream's input; they stay valid until the session
 *    calls body_consumed(), done(), or the downstream detaches the session.
 *  - spans given to send_body() point into the upstream connection's input buffer; the downstream
 *    may reference them until it reports them flushed (send_body returned 0, or a later
 *    fy_session_output_flushed()) or until done() returns: done(clean=false) drops every span
 *    still queued, so the session may release the upstream buffer right after it. The session
 *    never releases that buffer while a span is out (asserted), and a detached downstream holds
 *    none (its queue went with the connection).
 *  - a pipe given to send_pipe() stays the session's: the downstream moves bytes out of it during
 *    the call and keeps nothing of it.
 */
#ifndef FY_SESSION_H
#define FY_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "core/loop.h"
#include "http/h1_writer.h"
#include "http/msg.h"

struct fy_session;
struct fy_worker;
struct fy_upconn;

/*
 * What the session needs from whoever carries the client side (HTTP/1 connection, H2 stream).
 * `ds` is the downstream's own pointer. None of these run the downstream's work inline or free
 * anything the session still uses; they record and queue.
 */

/* Up to `max` spans of request body. Returns the count (0 with *last at the end), FY_AGAIN (the
 * downstream wakes the session when data arrives), or <0: the client failed; then *status is
 * 400/408/413 for a bad body or 0 if the client went away. */
typedef int fy_ds_body_read_fn(void *ds, struct iovec *iov, int max, bool *last, int *status);
/* The spans of the last body_read() were written upstream: their memory may be reused. */
typedef void fy_ds_body_consumed_fn(void *ds);
/* Interim response (100 Continue, 103...). Returns 0, -ENOSPC (too large: not sent), or <0
 * (client gone). */
typedef int fy_ds_send_interim_fn(void *ds, const struct fy_msg *m);
/* Final response head; the downstream picks its own framing from the head's framing fields.
 * Returns 0, -ENOSPC (the rewritten head does not fit FY_BUF_SIZE bytes: nothing was queued, the
 * session answers 502), or another <0 (client gone). */
typedef int fy_ds_send_head_fn(void *ds, struct fy_msg *resp);
/* Body (or tunnel) bytes, referenced until flushed (see above): 0 = flushed, FY_AGAIN = queued
 * (fy_session_output_flushed() follows), <0 = client gone or the batch could not be queued. */
typedef int fy_ds_send_body_fn(void *ds, const struct iovec *iov, int n, bool last);
/* Body bytes waiting in a pipe (the session's; its read end is borrowed for the call only):
 * moves up to `len` of them to the client, with the response's framing, after everything queued
 * before. Returns the bytes taken from the pipe (>0), FY_AGAIN (none; fy_session_output_flushed()
 * follows), or <0 (client gone). Only called when the client's transport can splice
 * (fy_ds_transport_fn); a downstream without this op gets every body through send_body. */
typedef ssize_t fy_ds_send_pipe_fn(void *ds, int pipe_rd, size_t len);
/* Error response before any head was sent; `extra` (may be NULL; read during the call only)
 * holds fields to add to its head. Returns the body bytes queued (for the log). */
typedef int fy_ds_send_error_fn(void *ds, int status, const char *text, const struct fy_msg *extra);
/* Takes back the final response head queued by send_head while none of it has reached the
 * client (and no body span was queued after it): true, and the session may answer with
 * send_error instead; false once it is on its way. NULL: cannot. */
typedef bool fy_ds_retract_head_fn(void *ds);
/* The request body limit of the route picked (bytes, 0 = unlimited): a longer body fails the
 * body_read() that crosses it with status 413. Only called before the first body_read(). */
typedef void fy_ds_limit_body_fn(void *ds, uint64_t max);
/* The session is finished; `clean` is false when the client connection must be closed (e.g. the
 * upstream died mid-body). clean=true is only used once all spans were flushed; with clean=false
 * the downstream drops every queued span before returning. The downstream forgets the session
 * pointer. */
typedef void fy_ds_done_fn(void *ds, bool clean);

/* The client connection's transport, for what TLS says about it (net/tls.h): valid while the
 * session is attached. */
typedef const struct fy_sock *fy_ds_transport_fn(void *ds);

struct fy_downstream_ops {
    fy_ds_transport_fn *transport;
    fy_ds_limit_body_fn *limit_body;
    fy_ds_body_read_fn *body_read;
    fy_ds_body_consumed_fn *body_consumed;
    fy_ds_send_interim_fn *send_interim;
    fy_ds_send_head_fn *send_head;
    fy_ds_send_body_fn *send_body;
    fy_ds_send_pipe_fn *send_pipe; /* NULL: cannot */
    fy_ds_send_error_fn *send_error;
    fy_ds_retract_head_fn *retract_head; /* NULL: cannot */
    fy_ds_done_fn *done;
};

/*
 * Where a forward proxy's request goes, as the downstream learnt it: the absolute-form URL's
 * scheme and authority (GET http://host:port/...), a CONNECT's authority, or, inside an
 * intercepted CONNECT tunnel, the tunnel's destination. Copied by fy_session_start(); only used
 * by a route that forwards (a forward listener's), which answers 400 when there is none.
 */
struct fy_fwd_target {
    const char *host; /* a name or an IP literal (IPv6 without brackets) */
    uint32_t host_len;
    uint16_t port;
    bool tls;         /* https: TLS to the destination, its certificate verified for `host` */
    const char *sni;  /* tls: the name to send and verify instead of host (an intercepted
                       * tunnel's SNI); NULL = host */
    bool connect;     /* a CONNECT: a tunnel to the destination */
    bool answered;    /* CONNECT: the client was already told 200 (an interception's sniff) */
    bool intercepted; /* the request came through an intercepted tunnel (its URL is https) */
};

/* Creates a session for a parsed request that came in on listener `listener` (its index in the
 * worker's current generation) and queues it to run. `req` is moved into the session
 * (fy_msg_move: the caller's msg is left empty, holding storage to reuse for its next message).
 * `fwd` (may be NULL; read during the call only) is the forward proxy's destination.
 * Returns NULL when out of memory (the caller answers 500). */
struct fy_session *fy_session_start(struct fy_worker *w, const struct fy_downstream_ops *ops,
                                    void *ds, struct fy_msg *req, const struct sockaddr *client,
                                    uint64_t start_us, uint32_t listener,
                                    const struct fy_fwd_target *fwd);

/* Does a client hang-up while the upstream thinks abandon this exchange (the route's
 * abort-on-client-close, else the global one)? */
bool fy_session_abort_on_client_close(const struct fy_session *s);

/* Queues the session to run again (new data, room in buffers). Never runs it inline. */
void fy_session_wake(struct fy_session *s);

/* The downstream wrote out everything the session gave it; the session may reuse those bytes. */
void fy_session_output_flushed(struct fy_session *s);

/* The client connection is going away: abandon the exchange without touching the downstream. */
void fy_session_detach(struct fy_session *s);

/* Frees this thread's list of finished sessions; called when a worker exits. */
void fy_session_freelist_release(void);

#endif
