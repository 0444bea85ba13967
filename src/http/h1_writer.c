/* HTTP/1 output queue and body framing; see h1_writer.h. */
#include "http/h1_writer.h"

#include <string.h>

#include "core/assert.h"
#include "net/sock.h"

void fy_h1w_init(struct fy_h1_writer *w)
{
    /* Only the control fields: the iovec and scratch arrays are written before being read. */
    w->q.n = w->q.first = w->q.nscratch = 0;
    w->q.head = NULL;
    w->framing = FY_FRAME_NONE;
    w->finished = false;
    w->written = 0;
    w->body_sent = 0;
    w->direct_left = 0;
}

static void release_heads(struct fy_outq *q)
{
    while (q->head) {
        struct fy_buf *b = q->head;
        q->head = b->next_free;
        fy_buf_put(b);
    }
}

void fy_h1w_reset(struct fy_h1_writer *w)
{
    release_heads(&w->q);
    fy_h1w_init(w);
}

static int push(struct fy_outq *q, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (q->n == FY_OUTQ_IOV)
        return -1;
    q->iov[q->n].iov_base = (void *)p;
    q->iov[q->n].iov_len = n;
    q->n++;
    return 0;
}

struct fy_buf *fy_h1w_head_begin(struct fy_h1_writer *w, size_t need)
{
    struct fy_outq *q = &w->q;
    if (q->head && fy_buf_room(q->head) >= need)
        return q->head;
    struct fy_buf *b = fy_buf_get(need > FY_BUF_SIZE ? need : FY_BUF_SIZE);
    if (!b)
        return NULL;
    b->next_free = q->head; /* owned by this writer: the link chains its head buffers */
    q->head = b;
    return b;
}

void fy_h1w_head_done(struct fy_h1_writer *w, struct fy_buf *b, size_t from)
{
    FY_ASSERT(b == w->q.head && from <= b->end);
    /* Adjacent pieces of the head buffer merge into one iovec. */
    struct fy_outq *q = &w->q;
    if (q->n > q->first) {
        struct iovec *last = &q->iov[q->n - 1];
        if ((char *)last->iov_base + last->iov_len == b->data + from) {
            last->iov_len += b->end - from;
            return;
        }
    }
    push(q, b->data + from, b->end - from);
}

bool fy_h1w_put(struct fy_buf *b, const char *s, size_t n)
{
    if (fy_buf_room(b) < n)
        return false;
    fy_buf_append(b, s, n);
    return true;
}

bool fy_h1w_put_field(struct fy_buf *b, const char *name, size_t nlen, const char *value,
                      size_t vlen)
{
    if (fy_buf_room(b) < nlen + vlen + 4)
        return false;
    char *p = b->data + b->end;
    memcpy(p, name, nlen);
    p += nlen;
    *p++ = ':';
    *p++ = ' ';
    memcpy(p, value, vlen);
    p += vlen;
    *p++ = '\r';
    *p++ = '\n';
    b->end += (uint32_t)(nlen + vlen + 4);
    return true;
}

size_t fy_u64_to_dec(uint64_t v, char *out)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

int fy_h1w_copy(struct fy_h1_writer *w, const char *p, size_t n)
{
    if (n > FY_BUF_SIZE)
        return -1;
    struct fy_buf *b = fy_h1w_head_begin(w, n);
    if (!b)
        return -1;
    size_t from = b->end;
    fy_buf_append(b, p, n);
    fy_h1w_head_done(w, b, from);
    return 0;
}

/* The size line of a chunk of `size` bytes, in one of the queue's scratch slots. */
static int push_chunk_size(struct fy_outq *q, uint64_t size)
{
    if (q->nscratch == sizeof(q->scratch) / sizeof(q->scratch[0]) || q->n == FY_OUTQ_IOV)
        return -1;
    static const char hex[] = "0123456789abcdef";
    char tmp[24];
    int len = 0;
    do {
        tmp[len++] = hex[size & 15];
        size >>= 4;
    } while (size);
    char *line = q->scratch[q->nscratch++];
    for (int i = 0; i < len; i++)
        line[i] = tmp[len - 1 - i];
    line[len] = '\r';
    line[len + 1] = '\n';
    return push(q, line, (size_t)len + 2);
}

int64_t fy_h1w_direct_begin(struct fy_h1_writer *w, uint64_t avail)
{
    FY_ASSERT(w->framing != FY_FRAME_NONE && !w->finished && avail > 0 && avail < INT64_MAX);
    if (w->framing != FY_FRAME_CHUNKED)
        return (int64_t)avail;
    if (w->direct_left == 0) {
        if (push_chunk_size(&w->q, avail) < 0)
            return -1;
        w->direct_left = avail;
    }
    return (int64_t)(avail < w->direct_left ? avail : w->direct_left);
}

void fy_h1w_direct_done(struct fy_h1_writer *w, uint64_t n)
{
    w->body_sent += n;
    if (w->framing != FY_FRAME_CHUNKED || n == 0)
        return;
    FY_ASSERT(n <= w->direct_left);
    w->direct_left -= n;
    /* The queue was empty for the direct write, so there is room for the CRLF. */
    if (w->direct_left == 0)
        push(&w->q, "\r\n", 2);
}

int fy_h1w_body(struct fy_h1_writer *w, const struct iovec *iov, int n, bool last)
{
    struct fy_outq *q = &w->q;
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    if (q->n + n + 3 > FY_OUTQ_IOV && q->first > 0) {
        /* Partly flushed: move the pending entries to the front to make room. */
        memmove(q->iov, q->iov + q->first, (size_t)(q->n - q->first) * sizeof(q->iov[0]));
        q->n = (uint8_t)(q->n - q->first);
        q->first = 0;
    }
    if (q->n + n + 3 > FY_OUTQ_IOV)
        return -1;
    if (w->framing == FY_FRAME_NONE) {
        total = 0;
        n = 0;
    }
    FY_ASSERT(w->direct_left == 0); /* a direct chunk is never left open under queued data */
    if (w->framing == FY_FRAME_CHUNKED && total > 0 && push_chunk_size(q, total) < 0)
        return -1;
    for (int i = 0; i < n; i++)
        push(q, iov[i].iov_base, iov[i].iov_len);
    w->body_sent += total;
    if (w->framing == FY_FRAME_CHUNKED) {
        if (total > 0 && last)
            push(q, "\r\n0\r\n\r\n", 7);
        else if (total > 0)
            push(q, "\r\n", 2);
        else if (last)
            push(q, "0\r\n\r\n", 5);
    }
    if (last)
        w->finished = true;
    return 0;
}

size_t fy_h1w_queued(const struct fy_h1_writer *w)
{
    size_t n = 0;
    for (int i = w->q.first; i < w->q.n; i++)
        n += w->q.iov[i].iov_len;
    return n;
}

int fy_h1w_flush(struct fy_h1_writer *w, struct fy_sock *s)
{
    struct fy_outq *q = &w->q;
    while (q->first < q->n) {
        ssize_t n = fy_sock_writev(s, &q->iov[q->first], q->n - q->first);
        if (n < 0)
            return (int)n;
        w->written += (uint64_t)n;
        size_t left = (size_t)n;
        while (q->first < q->n && left >= q->iov[q->first].iov_len) {
            left -= q->iov[q->first].iov_len;
            q->first++;
        }
        if (q->first < q->n) {
            q->iov[q->first].iov_base = (char *)q->iov[q->first].iov_base + left;
            q->iov[q->first].iov_len -= left;
            s->wr_ready = false; /* a short write means the socket buffer is full */
            return FY_AGAIN;
        }
    }
    q->first = q->n = q->nscratch = 0;
    release_heads(q);
    return 0;
}

void fy_h1w_mark(const struct fy_h1_writer *w, struct fy_h1w_mark *m)
{
    const struct fy_outq *q = &w->q;
    m->written = w->written;
    m->body_sent = w->body_sent;
    m->direct_left = w->direct_left;
    m->pending = (uint8_t)(q->n - q->first);
    m->last_len = m->pending ? q->iov[q->n - 1].iov_len : 0;
    m->nscratch = q->nscratch;
    m->framing = w->framing;
    m->finished = w->finished;
}

bool fy_h1w_rewind(struct fy_h1_writer *w, const struct fy_h1w_mark *m)
{
    struct fy_outq *q = &w->q;
    /* Nothing written since the mark: the entries pending then are untouched (a compaction
     * moves them, but keeps them the last `pending` before what came after). */
    if (w->written != m->written || q->n - q->first < m->pending)
        return false;
    q->n = (uint8_t)(q->first + m->pending);
    if (m->pending)
        q->iov[q->n - 1].iov_len = m->last_len;
    q->nscratch = m->nscratch;
    w->framing = m->framing;
    w->finished = m->finished;
    w->body_sent = m->body_sent;
    w->direct_left = m->direct_left;
    return true;
}
