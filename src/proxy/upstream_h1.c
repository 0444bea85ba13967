/* HTTP/1.1 to upstream servers; see upstream_h1.h. */
#include "proxy/upstream_h1.h"

#include "core/assert.h"
#include "core/buf.h"
#include "http/h1_writer.h"
#include "http/tokens.h"

void fy_uh1_begin(struct fy_upconn *up, bool is_head)
{
    up->head_reported = up->spans_pending = up->got_bytes = false;
    up->full_reads = 0;
    up->bytes_read = 0;
    up->rd.no_body = is_head;
}

int fy_uh1_send_head(struct fy_upconn *up, const struct fy_msg *m, bool *body_follows)
{
    struct fy_h1_writer *wr = &up->wr;
    /* Sized for this head: the client's head may be as large as --max-header-size allows. */
    size_t need = (size_t)m->method_len + m->target_len + 13 + fy_msg_fields_size(m) + 64;
    struct fy_buf *b = fy_h1w_head_begin(wr, need);
    if (!b)
        return -1;
    size_t from = b->end;
    bool ok = fy_h1w_put(b, m->method, m->method_len) && fy_h1w_put(b, " ", 1) &&
              fy_h1w_put(b, m->target, m->target_len) && fy_h1w_put(b, " HTTP/1.1\r\n", 11);
    for (uint32_t i = 0; ok && i < m->nhdrs; i++) {
        const struct fy_hdr *h = &m->hdrs[i];
        if (h->removed || h->tok == FY_TOK_CONTENT_LENGTH)
            continue;
        ok = fy_h1w_put_field(b, h->name, h->name_len, h->value, h->value_len);
    }
    if (m->chunked) {
        ok = ok && fy_h1w_put(b, "Transfer-Encoding: chunked\r\n", 28);
        wr->framing = FY_FRAME_CHUNKED;
    } else if (m->content_length >= 0) {
        char digits[24];
        size_t n = fy_u64_to_dec((uint64_t)m->content_length, digits);
        ok = ok && fy_h1w_put_field(b, "Content-Length", 14, digits, n);
        wr->framing = m->content_length > 0 ? FY_FRAME_LENGTH : FY_FRAME_NONE;
    } else {
        wr->framing = FY_FRAME_NONE;
    }
    if (m->upgrade)
        ok = ok && fy_h1w_put(b, "Connection: upgrade\r\n", 21);
    ok = ok && fy_h1w_put(b, "\r\n", 2);
    if (!ok)
        return -1;
    fy_h1w_head_done(wr, b, from);
    *body_follows = wr->framing != FY_FRAME_NONE;
    if (!*body_follows)
        wr->finished = true;
    return 0;
}

void fy_uh1_send_body(struct fy_upconn *up, const struct iovec *iov, int n, bool last)
{
    /* The session keeps one batch out at a time, which always fits the queue. */
    int rc = fy_h1w_body(&up->wr, iov, n, last);
    FY_ASSERT(rc == 0);
}

bool fy_uh1_pending(const struct fy_upconn *up)
{
    return fy_h1w_pending(&up->wr);
}

int fy_uh1_flush(struct fy_upconn *up)
{
    if (!up->sock.wr_ready)
        return FY_AGAIN;
    return fy_h1w_flush(&up->wr, &up->sock);
}

void fy_uh1_next_message(struct fy_upconn *up, bool is_head)
{
    fy_h1r_next(&up->rd);
    up->rd.no_body = is_head;
    up->head_reported = up->spans_pending = false;
}

bool fy_uh1_done(const struct fy_upconn *up)
{
    return up->rd.state == FY_H1R_DONE;
}

bool fy_uh1_got_bytes(const struct fy_upconn *up)
{
    return up->got_bytes;
}

uint64_t fy_uh1_bytes_read(const struct fy_upconn *up)
{
    return up->bytes_read;
}

bool fy_uh1_reusable(const struct fy_upconn *up)
{
    return up->rd.msg.keep_alive && !up->rd.eof_body && fy_buf_len(up->in) == 0;
}

void fy_uh1_switch_to_tunnel(struct fy_upconn *up)
{
    up->wr.framing = FY_FRAME_TUNNEL;
}

/* Room to read into: an emptied buffer restarts at 0 (and grows for a large body), a partial
 * head is moved to the front. False when a head fills the whole buffer. */
static bool make_room(struct fy_upconn *up)
{
    struct fy_buf *in = up->in;
    if (in->start == in->end) {
        in->start = in->end = 0;
        if (up->full_reads >= 2 && in->cap < FY_BIG_BUF_SIZE) {
            /* A large body is streaming: fewer, larger reads and writes cost less CPU. */
            struct fy_buf *big = fy_buf_get(FY_BIG_BUF_SIZE);
            if (big) {
                fy_buf_put(in);
                up->in = big;
            }
        }
        return true;
    }
    if (fy_buf_room(in) == 0)
        fy_buf_compact(in);
    return fy_buf_room(in) > 0;
}

enum fy_uh1_event fy_uh1_next(struct fy_upconn *up, bool eof_ends_body, int *err)
{
    struct fy_h1_reader *rd = &up->rd;
    *err = 0;
    if (up->spans_pending) {
        /* The caller is done with the spans it was given. */
        up->spans_pending = false;
        rd->nspans = 0;
    }
    for (;;) {
        if (up->head_reported && (rd->nspans > 0 || rd->state == FY_H1R_DONE)) {
            up->spans_pending = true;
            return FY_UH1_BODY;
        }
        struct fy_buf *in = up->in;
        if (in->start < in->end && rd->state != FY_H1R_DONE) {
            size_t n = fy_h1r_execute(rd, in->data + in->start, in->end - in->start);
            in->start += (uint32_t)n;
            if (rd->state == FY_H1R_ERROR)
                return FY_UH1_INVALID;
            if (rd->state != FY_H1R_HEAD && !up->head_reported) {
                up->head_reported = true;
                return FY_UH1_HEAD;
            }
            if (n > 0 || rd->nspans > 0 || rd->state == FY_H1R_DONE)
                continue;
        }
        if (!up->sock.rd_ready)
            return FY_UH1_AGAIN;
        if (!make_room(up))
            return FY_UH1_TOO_LARGE;
        in = up->in;
        size_t room = fy_buf_room(in);
        ssize_t r = fy_sock_read(&up->sock, in->data + in->end, room);
        if (r > 0) {
            in->end += (uint32_t)r;
            up->got_bytes = true;
            up->bytes_read += (uint64_t)r;
            up->full_reads += (size_t)r == room && up->full_reads < 255;
            continue;
        }
        if (r == FY_AGAIN)
            return FY_UH1_AGAIN;
        if (r == 0 && rd->state == FY_H1R_BODY && rd->eof_body && eof_ends_body) {
            /* The close ends a close-delimited body: a normal end, not a failure. */
            fy_h1r_eof(rd);
            rd->nspans = 0;
            continue;
        }
        *err = (int)(r == 0 ? 0 : r);
        return FY_UH1_CLOSED;
    }
}

bool fy_uh1_body_spliceable(const struct fy_upconn *up, uint64_t *left)
{
    const struct fy_h1_reader *rd = &up->rd;
    if (!up->head_reported || rd->state != FY_H1R_BODY || fy_buf_len(up->in) > 0)
        return false;
    /* Spans of the last BODY event count as taken (the caller is done with them). */
    if (rd->nspans > 0 && !up->spans_pending)
        return false;
    *left = fy_h1r_body_left(rd);
    return *left > 0;
}

ssize_t fy_uh1_splice_body(struct fy_upconn *up, int pipe_wr, size_t max, bool eof_ends_body)
{
    struct fy_h1_reader *rd = &up->rd;
    up->spans_pending = false;
    rd->nspans = 0;
    uint64_t left = fy_h1r_body_left(rd);
    FY_ASSERT(left > 0 && fy_buf_len(up->in) == 0);
    ssize_t n = fy_sock_splice_in(&up->sock, pipe_wr, left < max ? (size_t)left : max);
    if (n > 0) {
        up->got_bytes = true;
        up->bytes_read += (uint64_t)n;
        fy_h1r_body_skipped(rd, (uint64_t)n);
    } else if (n == 0 && rd->eof_body && eof_ends_body) {
        fy_h1r_eof(rd); /* the close ends a close-delimited body: a normal end */
    }
    return n;
}
