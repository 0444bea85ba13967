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
    struct fy_buf *head;               /* serialised heads (newest first, chained through
                                        * next_free), all released once the queue is flushed */
    char scratch[FY_OUTQ_IOV / 3][24]; /* chunk-size lines */
};

struct fy_h1_writer {
    struct fy_outq q;
    enum fy_framing framing;
    bool finished; /* the body end has been queued */
    uint64_t body_sent;
    uint64_t direct_left; /* chunked: bytes of the open direct chunk still to be written */
    uint64_t written;     /* bytes written to the socket, ever (fy_h1w_mark) */
};

/* A point in the writer's queue (before a response head is queued), to take back what was queued
 * after it while none of it has reached the socket. */
struct fy_h1w_mark {
    uint64_t written, body_sent, direct_left;
    size_t last_len; /* the last pending iovec's length (a head can merge into it) */
    uint8_t pending, nscratch;
    enum fy_framing framing;
    bool finished;
};

void fy_h1w_mark(const struct fy_h1_writer *w, struct fy_h1w_mark *m);

/* Drops everything queued after the mark and restores the framing, if no byte was written since
 * the mark (true); false, with nothing changed, once some were. The head buffers stay until the
 * next flush or reset (whatever still points into them was before the mark). */
bool fy_h1w_rewind(struct fy_h1_writer *w, const struct fy_h1w_mark *m);

void fy_h1w_init(struct fy_h1_writer *w);

/* Releases the head buffer; pending data is dropped. */
void fy_h1w_reset(struct fy_h1_writer *w);

static inline bool fy_h1w_pending(const struct fy_h1_writer *w)
{
    return w->q.first < w->q.n;
}

/* Starts a head of up to `need` bytes: returns a buffer with at least that much room (the current
 * unflushed head buffer when it has the room, else a new one of at least FY_BUF_SIZE bytes chained
 * to it, so queued iovecs into older ones stay valid), or NULL when out of memory. The writer owns
 * the buffer; fy_h1w_head_done() queues what was appended. */
struct fy_buf *fy_h1w_head_begin(struct fy_h1_writer *w, size_t need);
void fy_h1w_head_done(struct fy_h1_writer *w, struct fy_buf *b, size_t from);

/* Appends "Name: value\r\n" to b if it fits; returns false if the head would overflow. */
bool fy_h1w_put_field(struct fy_buf *b, const char *name, size_t nlen, const char *value,
                      size_t vlen);
bool fy_h1w_put(struct fy_buf *b, const char *s, size_t n);

/* Writes v in decimal to out (at least 21 bytes); returns the length. No NUL. */
size_t fy_u64_to_dec(uint64_t v, char *out);

/* Queues body data with the writer's framing; `last` queues the end (e.g. "0\r\n\r\n"). The
 * spans are referenced until flushed or the writer is reset. Returns 0, or -1 (nothing queued) if
 * even after compacting the queue there is no room for n spans plus framing: callers keep at most
 * one batch of FY_H1R_MAX_SPANS spans out, which always fits. */
int fy_h1w_body(struct fy_h1_writer *w, const struct iovec *iov, int n, bool last);

/*
 * Body bytes the caller writes to the socket itself, not through the queue (spliced from a pipe):
 * fy_h1w_direct_begin(w, avail), with `avail` bytes ready to go, queues the framing that must
 * precede them (chunked: the size line of a chunk of exactly `avail` bytes, when no chunk is
 * open) and returns how many may be written directly (<= avail), but only once the queue has been
 * flushed; -1 when the queue has no room. fy_h1w_direct_done(w, n) records n of them written and
 * queues what follows a completed chunk (its CRLF). The body ends as usual with fy_h1w_body(last),
 * once no direct chunk is open.
 */
int64_t fy_h1w_direct_begin(struct fy_h1_writer *w, uint64_t avail);
void fy_h1w_direct_done(struct fy_h1_writer *w, uint64_t n);

/* Queues bytes that are copied into the head buffer (interim responses, error bodies); at most
 * FY_BUF_SIZE bytes. Returns 0 or -1. */
int fy_h1w_copy(struct fy_h1_writer *w, const char *p, size_t n);

/* Writes as much as possible. Returns 0 when everything is flushed, FY_AGAIN, or -errno. */
int fy_h1w_flush(struct fy_h1_writer *w, struct fy_sock *s);

/* Bytes still queued. */
size_t fy_h1w_queued(const struct fy_h1_writer *w);

#endif
