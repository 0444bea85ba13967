/*
 * HTTP/1 output: serialises message heads and frames body data (Content-Length, chunked,
 * close-delimited) into an output queue of iovecs that is flushed with writev. Body data is
 * referenced, not copied: the producer keeps it in place until the queue reports it flushed.
 */
#ifndef FY_H1_WRITER_H
#define FY_H1_WRITER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/buf.h"
#include "http/msg.h"

struct fy_sock;

#define FY_OUTQ_IOV 48

enum fy_framing {
    FY_FRAME_NONE,    /* no body (HEAD, 1xx, 204, 304, Content-Length: 0) */
    FY_FRAME_LENGTH,  /* Content-Length */
    FY_FRAME_CHUNKED, /* chunked coding, re-framed by ferry */
    FY_FRAME_CLOSE,   /* delimited by closing the connection */
    FY_FRAME_TUNNEL,  /* raw bytes after an upgrade */
};

struct fy_outq {
    struct iovec iov[FY_OUTQ_IOV];
    uint8_t n, first; /* entries [first, n) are pending */
    uint8_t nscratch;
    struct fy_buf *head;               /* serialised head, released once flushed */
    char scratch[FY_OUTQ_IOV / 3][24]; /* chunk-size lines */
};

struct fy_h1_writer {
    struct fy_outq q;
    enum fy_framing framing;
    bool finished; /* the body end has been queued */
    uint64_t body_sent;
};

void fy_h1w_init(struct fy_h1_writer *w);

/* Releases the head buffer; pending data is dropped. */
void fy_h1w_reset(struct fy_h1_writer *w);

static inline bool fy_h1w_pending(const struct fy_h1_writer *w)
{
    return w->q.first < w->q.n;
}

/* Starts a head in a fresh buffer (or the current unflushed one). Returns the buffer to append the
 * serialised head to, or NULL when out of memory. fy_h1w_head_done() queues it. */
struct fy_buf *fy_h1w_head_begin(struct fy_h1_writer *w);
void fy_h1w_head_done(struct fy_h1_writer *w, struct fy_buf *b, size_t from);

/* Appends "Name: value\r\n" to b if it fits; returns false if the head would overflow. */
bool fy_h1w_put_field(struct fy_buf *b, const char *name, size_t nlen, const char *value,
                      size_t vlen);
bool fy_h1w_put(struct fy_buf *b, const char *s, size_t n);

/* Writes v in decimal to out (at least 21 bytes); returns the length. No NUL. */
size_t fy_u64_to_dec(uint64_t v, char *out);

/* Queues body data with the writer's framing; `last` queues the end (e.g. "0\r\n\r\n").
 * Returns 0, or -1 if the queue is too full (flush first; callers size batches to avoid it). */
int fy_h1w_body(struct fy_h1_writer *w, const struct iovec *iov, int n, bool last);

/* Queues bytes that are copied into the head buffer (interim responses, error bodies). */
int fy_h1w_copy(struct fy_h1_writer *w, const char *p, size_t n);

/* Writes as much as possible. Returns 0 when everything is flushed, FY_AGAIN, or -errno. */
int fy_h1w_flush(struct fy_h1_writer *w, struct fy_sock *s);

/* Bytes still queued. */
size_t fy_h1w_queued(const struct fy_h1_writer *w);

#endif
