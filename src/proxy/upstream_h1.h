/*
 * HTTP/1.1 towards an upstream server over one pooled connection (struct fy_upconn): the request
 * head's serialisation and body framing, and the response read and parsed into events. The
 * session (session.c) decides what to do with them; it never touches the codec. A synthetic
 * response, a cache hit, CONNECT or an HTTP/2 upstream are other sources of the same events
 * (H2O's split of proxy.c and http1client.c).
 *
 * Ownership: spans of a BODY event point into up->in. They stay valid until the next call of
 * fy_uh1_next() on that connection, which the caller makes only once the downstream flushed or
 * dropped them; nothing else moves up->in meanwhile.
 */
#ifndef FY_UPSTREAM_H1_H
#define FY_UPSTREAM_H1_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "http/msg.h"
#include "proxy/connpool.h"

/* ---- request ---- */

/* Prepares the connection for a new exchange (per-exchange parse state). */
void fy_uh1_begin(struct fy_upconn *up, bool is_head);

/* Serialises the request head (Content-Length or chunked framing from req). *body_follows is
 * false when the request has no body (then the request is complete once flushed). Returns 0, or
 * -1 when out of memory. */
int fy_uh1_send_head(struct fy_upconn *up, const struct fy_msg *req, bool *body_follows);

/* Queues request body spans (referenced until fy_uh1_flush() returned 0); `last` ends the body. */
void fy_uh1_send_body(struct fy_upconn *up, const struct iovec *iov, int n, bool last);

/* Bytes of the request are queued. */
bool fy_uh1_pending(const struct fy_upconn *up);

/* Writes what is queued: 0 when all of it left, FY_AGAIN when the socket is full (or not
 * writable yet), <0 (-errno) when the connection failed. */
int fy_uh1_flush(struct fy_upconn *up);

/* ---- response ---- */

enum fy_uh1_event {
    FY_UH1_AGAIN,     /* nothing new until the socket is readable again */
    FY_UH1_HEAD,      /* up->rd.msg is a complete head: interim (1xx) or final */
    FY_UH1_BODY,      /* up->rd.spans[0..nspans) of body; the body ended if fy_uh1_done() */
    FY_UH1_INVALID,   /* a malformed response (up->rd.err_text says how) */
    FY_UH1_TOO_LARGE, /* a head that does not fit the connection's buffer */
    FY_UH1_CLOSED,    /* closed or reset before the response ended; *err = 0 or -errno */
};

/* The next event of the response. `eof_ends_body`: a close ends a close-delimited body (false
 * once a request write failed: the close may then hide a reset). */
enum fy_uh1_event fy_uh1_next(struct fy_upconn *up, bool eof_ends_body, int *err);

/* After an interim head: parse the next message of the same response. */
void fy_uh1_next_message(struct fy_upconn *up, bool is_head);

/* The response ended (its last BODY event was returned). */
bool fy_uh1_done(const struct fy_upconn *up);

/* Bytes of this response were received (the upstream may have acted on the request). */
bool fy_uh1_got_bytes(const struct fy_upconn *up);

/* Bytes read so far on this exchange (progress, for the upstream timeout). */
uint64_t fy_uh1_bytes_read(const struct fy_upconn *up);

/* The connection can carry another exchange once this one ended: the response allowed
 * keep-alive, was not close-delimited, and nothing unread follows it. */
bool fy_uh1_reusable(const struct fy_upconn *up);

/*
 * Splicing the response body (session_splice.c): instead of fy_uh1_next(), which it replaces for
 * the rest of the body, the caller moves body bytes from the socket into a pipe itself.
 *
 * fy_uh1_body_spliceable(): the current response's body can continue that way now: its head was
 * reported, every body byte read so far was returned in BODY events (up->in holds nothing, so
 * nothing is skipped), and the reader knows where the body ends without seeing it (Content-Length
 * or close-delimited; not chunked). *left is how many bytes it still has (UINT64_MAX: until the
 * close).
 */
bool fy_uh1_body_spliceable(const struct fy_upconn *up, uint64_t *left);

/* Moves up to `max` body bytes from the socket into `pipe_wr`, never past the body's end, so a
 * response that follows on the connection stays in the socket. Like fy_uh1_next(), the call
 * tells that the spans of the last BODY event are no longer used. Returns the bytes moved (>0;
 * fy_uh1_done() once the last one came), 0 at the end of the stream (fy_uh1_done() tells a
 * close-delimited body's normal end from a close before the end; `eof_ends_body` as for
 * fy_uh1_next()), FY_AGAIN (socket empty or pipe full), or -errno. */
ssize_t fy_uh1_splice_body(struct fy_upconn *up, int pipe_wr, size_t max, bool eof_ends_body);

/* After a 101: bytes go raw both ways from now on. */
void fy_uh1_switch_to_tunnel(struct fy_upconn *up);

#endif
