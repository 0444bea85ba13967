/*
 * The response body through the filter chain (proxy/body_filter.h), once a response hook added a
 * filter: EXCHANGE's path for a filtered body, beside relay_body's zero-copy one.
 *
 * The upstream's spans are pushed into the chain; the chain's sink is what the client gets, one
 * span at a time. While the client holds the sink's bytes nothing more is pushed, and while a
 * batch of upstream spans is not through the chain nothing more is read from the upstream, so a
 * slow client slows the upstream and memory stays at the chain's buffers. The upstream's spans
 * are never handed to the client here (the chain copied what it took), so the upstream buffer
 * can be released whenever the session ends.
 *
 * Flushing: a compressor holds bytes until it has a block's worth. When the upstream pauses with
 * bytes in the chain, a flush follows FLUSH_DELAY_MS later (unless the body ended first), so
 * server-sent events and slow pages keep flowing while a fast body, whose reads pause only for
 * microseconds between segments, is not cut into many small blocks.
 */
#include "proxy/session_priv.h"

#include "proxy/flow.h"

#define FLUSH_DELAY_MS 10

static void on_flush_timer(struct fy_timer *t)
{
    struct fy_session *s = container_of(t, struct fy_session, bf_timer);
    t->deadline = 0; /* not armed: sess_bf_paused may arm it again */
    s->bf_flush_due = true;
    fy_loop_queue(&s->w->loop, &s->task);
}

void sess_bf_init(struct fy_session *s)
{
    fy_bf_chain_init(&s->bf);
    fy_timer_init(&s->bf_timer, on_flush_timer);
}

int sess_bf_send_head(struct fy_session *s, struct fy_msg *m)
{
    if (!fy_bf_chain_active(&s->bf))
        return s->ops->send_head(s->ds, m);
    /* The filters change the body's length: the downstream frames it (chunked, or close for an
     * HTTP/1.0 client; the Content-Length field went in prepare_response). The upstream reader
     * keeps using the head's length to frame what it reads, so it is hidden from the downstream
     * for the call only. */
    int64_t length = m->content_length;
    bool chunked = m->chunked;
    m->content_length = -1;
    m->chunked = true;
    int rc = s->ops->send_head(s->ds, m);
    m->content_length = length;
    m->chunked = chunked;
    return rc;
}

/* Hands the sink's bytes to the client. Returns 0 (flushed: the sink is open again), 1 (the client
 * holds them) or -1 (the client failed). */
static int send_sink(struct fy_session *s)
{
    struct iovec iov;
    fy_bf_chain_take(&s->bf, &iov);
    bool last = s->bf.ended;
    s->bytes_out += iov.iov_len;
    sess_capture_resp_body(s, &iov, 1);
    int rc = s->ops->send_body(s->ds, &iov, iov.iov_len ? 1 : 0, last);
    if (rc < 0 && rc != FY_AGAIN) {
        sess_client_failed(s, 0);
        return -1;
    }
    s->resp_last_sent = last;
    if (rc == FY_AGAIN) {
        s->resp_spans_out = true;
        s->ds_blocked = true;
        return 1;
    }
    fy_bf_chain_taken(&s->bf);
    return 0;
}

/* Pushes what is left of the current batch. Returns 0 (through), FY_AGAIN (the sink is full) or
 * <0 (a filter failed). */
static int push_batch(struct fy_session *s)
{
    struct fy_h1_reader *rd = &s->up->rd;
    bool last = fy_uh1_done(s->up);
    int rc = 0;
    while (s->bf_span < (uint32_t)rd->nspans) {
        const struct iovec *v = &rd->spans[s->bf_span];
        const uint8_t *p = (const uint8_t *)v->iov_base + s->bf_off;
        size_t len = v->iov_len - s->bf_off;
        unsigned flags = last && s->bf_span + 1 == (uint32_t)rd->nspans ? FY_BF_END : 0;
        rc = fy_bf_chain_push(&s->bf, &p, &len, flags);
        s->bf_off = v->iov_len - len;
        if (rc != 0)
            return rc;
        s->bf_span++;
        s->bf_off = 0;
    }
    if (last && rd->nspans == 0) {
        size_t len = 0;
        const uint8_t *p = (const uint8_t *)""; /* never NULL: pointer arithmetic on it is UB */
        rc = fy_bf_chain_push(&s->bf, &p, &len, FY_BF_END);
        if (rc != 0)
            return rc;
    }
    s->bf_batch = false;
    s->bf_dirty = true;
    return 0;
}

int sess_bf_pump(struct fy_session *s)
{
    for (;;) {
        int rc = 0;
        if (s->bf_batch) {
            rc = push_batch(s);
        } else if (s->bf_flush_due && !s->bf.ended) {
            size_t len = 0;
            const uint8_t *p = (const uint8_t *)""; /* never NULL: pointer arithmetic on it is UB */
            rc = fy_bf_chain_push(&s->bf, &p, &len, FY_BF_FLUSH);
            if (rc == 0) {
                s->bf_flush_due = false;
                s->bf_dirty = false;
            }
        } else {
            s->bf_flush_due = false;
        }
        if (rc < 0 && rc != FY_AGAIN) {
            /* Before any of the body went out, the head may still be only queued (it leaves
             * with the first body bytes): then the client gets a proper error instead of a
             * connection closed under a 200. */
            bool retracted =
                s->bytes_out == 0 && s->ops->retract_head && s->ops->retract_head(s->ds);
            sess_slog(s, FY_LOG_WARN, "the response body filter failed: %s; %s",
                      s->bf.err[0] ? s->bf.err : "unknown error",
                      retracted ? "answering with an error instead"
                                : "closing the client connection");
            if (retracted) {
                int status = s->bf.err_status ? s->bf.err_status : 502;
                s->head_sent = false;
                sess_fail_exchange(s, status,
                                   status == 500 ? "a response body filter failed"
                                                 : "the upstream server sent a response body "
                                                   "that could not be processed");
            } else {
                sess_finish(s, false, false);
            }
            return -1;
        }
        /* The sink's bytes go out when it is full, after a flush, at the end, and when a batch is
         * through with something made (a compressor's block). */
        if (s->bf.sink_len || s->bf.ended) {
            int sent = send_sink(s);
            if (sent != 0 || s->resp_last_sent)
                return sent;
            continue; /* the sink is open again: go on with the batch */
        }
        FY_ASSERT(rc == 0); /* FY_AGAIN comes only from a sink holding bytes */
        if (!s->bf_batch && !s->bf_flush_due)
            return 0;
    }
}

void sess_bf_paused(struct fy_session *s)
{
    if (fy_bf_chain_active(&s->bf) && s->bf_dirty && !s->bf.ended && !s->bf_timer.deadline)
        fy_loop_timer_set(&s->w->loop, &s->bf_timer, FLUSH_DELAY_MS);
}

void sess_bf_free(struct fy_session *s)
{
    fy_loop_timer_del(&s->w->loop, &s->bf_timer);
    fy_bf_chain_free(&s->bf);
    fy_bf_chain_free(&s->rbf);
}

/* ---- the request body ---- */

void sess_rbf_frame(struct fy_session *s)
{
    if (!fy_bf_chain_active(&s->rbf))
        return;
    /* The filters may change the body's length: it goes upstream chunked. The client's reader
     * keeps its own framing of what it reads. */
    fy_msg_remove(&s->req, "Content-Length", 14);
    s->req.content_length = -1;
    s->req.chunked = true;
}

/* Pushes what is left of the client's batch. Returns 0 (through: its spans were given back),
 * FY_AGAIN (the sink is full) or <0 (a filter failed). */
static int push_request_batch(struct fy_session *s)
{
    int rc = 0;
    while (s->rbf_span < (uint32_t)s->rbf_n) {
        const struct iovec *v = &s->rbf_iov[s->rbf_span];
        const uint8_t *p = (const uint8_t *)v->iov_base + s->rbf_off;
        size_t len = v->iov_len - s->rbf_off;
        unsigned flags = s->rbf_last && s->rbf_span + 1 == (uint32_t)s->rbf_n ? FY_BF_END : 0;
        rc = fy_bf_chain_push(&s->rbf, &p, &len, flags);
        s->rbf_off = v->iov_len - len;
        if (rc != 0)
            return rc;
        s->rbf_span++;
        s->rbf_off = 0;
    }
    if (s->rbf_last && s->rbf_n == 0) {
        size_t len = 0;
        const uint8_t *p = (const uint8_t *)"";
        if ((rc = fy_bf_chain_push(&s->rbf, &p, &len, FY_BF_END)) != 0)
            return rc;
    }
    s->rbf_have = false;
    s->rbf_end_pushed = s->rbf_last;
    if (s->ds)
        s->ops->body_consumed(s->ds); /* the chain copied what it took */
    return 0;
}

/*
 * The request body through its chain, pump_request's way: client batch -> chain -> the sink's
 * span on the upstream writer -> flushed -> the sink open again. The client's spans are given
 * back as soon as the chain took them, so backpressure is the sink: while its span is not
 * written upstream nothing more is pushed, and so nothing more is read from the client.
 */
int sess_rbf_pump(struct fy_session *s)
{
    struct fy_upconn *up = s->up;
    int progress = 0;
    if (s->req_done)
        return 0;
    s->req_starved = false;
    for (;;) {
        if (fy_uh1_pending(up)) {
            int rc = fy_uh1_flush(up);
            if (rc == FY_AGAIN)
                return progress;
            if (rc < 0)
                return sess_request_write_failed(s, rc);
            progress = 1;
        }
        if (s->rbf_sent) {
            s->rbf_sent = false;
            fy_bf_chain_taken(&s->rbf);
        }
        if (s->req_last_queued) {
            s->req_done = true;
            sess_capture_mark(s, FY_FLOW_SENT);
            return 1;
        }
        bool starved = false;
        if (!s->rbf_have && !s->rbf_end_pushed) {
            bool last;
            int n = sess_read_request_body(s, s->rbf_iov, &last);
            if (n == FY_AGAIN) {
                starved = true;
            } else if (n < 0) {
                return -1;
            } else {
                s->rbf_have = true;
                s->rbf_n = n;
                s->rbf_last = last;
                s->rbf_span = 0;
                s->rbf_off = 0;
                progress = 1;
            }
        }
        int rc = s->rbf_have ? push_request_batch(s) : 0;
        if (rc < 0 && rc != FY_AGAIN) {
            sess_slog(s, FY_LOG_WARN, "the request body filter failed: %s",
                      s->rbf.err[0] ? s->rbf.err : "unknown error");
            if (s->head_sent)
                sess_finish(s, false, false);
            else
                sess_fail_exchange(s, 500, "the request body filter failed");
            return -1;
        }
        /* The sink's bytes go upstream when it is full, at the end, and after each batch. */
        if (s->rbf.sink_len || (s->rbf.ended && !s->req_last_queued)) {
            struct iovec iov;
            fy_bf_chain_take(&s->rbf, &iov);
            bool last = s->rbf.ended;
            fy_uh1_send_body(up, &iov, iov.iov_len ? 1 : 0, last);
            s->rbf_sent = true;
            s->req_last_queued = last;
            progress = 1;
            continue;
        }
        if (starved) {
            s->req_starved = true;
            return progress;
        }
        if (rc == 0 && !s->rbf_have && !s->rbf_end_pushed)
            continue; /* read the next batch */
        return progress;
    }
}
