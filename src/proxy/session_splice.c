/*
 * The response body without copies: once a plain-to-plain body turns out large, the session
 * moves it upstream socket -> pipe -> client socket with splice(2) (the transports' splice ops),
 * instead of reading it into up->in and writing it out of there. See docs/internals/splice.md.
 *
 *   upstream socket --fy_uh1_splice_body()--> pipe (held bytes) --send_pipe()--> client socket
 *        never past the body's end                bounded by its      the client's framing
 *        (the next response stays in the socket)  capacity            (chunk lines, CRLFs)
 *
 * Invariants: the session owns the pipe, and `held` is exactly what it holds (net/pipe.c checks
 * against the kernel before pooling it); the switch happens only when up->in holds no byte and
 * every span was flushed, so the bytes keep their order; the body's end goes the usual way
 * (fy_uh1_next() reports the completed message and relay_body() sends the last of it).
 */
#include "proxy/session_priv.h"

#include "proxy/flow.h"

#include "net/pipe.h"

/* Whatever needs the body's bytes in user space: the body filter chain, and capture until it
 * has max-body bytes (header hooks act on heads only and do not count). */
static bool response_body_filtered(const struct fy_session *s)
{
    return fy_bf_chain_active(&s->bf) ||
           sess_capture_wants_body(s); /* capture takes bytes until max-body: then a pipe may */
}

/* Everything that must hold for the bytes to bypass user space. */
bool sess_can_splice(const struct fy_session *s)
{
    return s->cfg->splice && s->ds && s->ops->send_pipe && s->client_sock &&
           fy_sock_can_splice(s->client_sock) && fy_sock_can_splice(&s->up->sock) &&
           !response_body_filtered(s);
}

/* Large enough to win: a pipe costs two syscalls per batch like a copy does, and saves the two
 * copies, which only pay once batches are large. A Content-Length body is judged by its length;
 * a close-delimited one by its reads: two that filled the buffer say a bulk sender (a trickling
 * stream, such as server-sent events, would only pay the pipe's overhead). */
static bool worth_splicing(const struct fy_session *s, uint64_t left)
{
    if (left == UINT64_MAX)
        return s->up->full_reads >= 2;
    return (uint64_t)s->up->rd.msg.content_length >= s->cfg->splice_min_size;
}

/* Called before each read of the response body: switches to splicing when the body qualifies.
 * Decided once per response (a failure to get a pipe is not retried every read). */
bool sess_splice_start(struct fy_session *s)
{
    uint64_t left;
    if (s->splice_tried || !s->head_sent || !fy_uh1_body_spliceable(s->up, &left) ||
        !worth_splicing(s, left) || !sess_can_splice(s))
        return false;
    s->splice_tried = true;
    s->pipe = fy_pipe_get();
    if (!s->pipe)
        return false; /* out of fds or pipe pages: the copy path still works */
    s->splicing = true;
    return true;
}

/* Returns 1 on progress, 0 when blocked, -1 when the session changed state. When the body has
 * all been delivered to the client the pipe goes back and s->splicing ends: the caller goes on
 * with fy_uh1_next(), which reports the end. */
int sess_pump_splice(struct fy_session *s)
{
    struct fy_upconn *up = s->up;
    struct fy_pipe *p = s->pipe;
    int progress = 0;
    for (;;) {
        bool moved = false;
        /* pipe -> client: first, so the pipe has room for the next read */
        if (p->held > 0 && !s->ds_blocked) {
            if (!s->ds)
                return -1;
            ssize_t n = s->ops->send_pipe(s->ds, p->rd, p->held);
            if (n == FY_AGAIN) {
                s->ds_blocked = true; /* the pipe fills, then upstream reads stop: backpressure */
            } else if (n <= 0) {
                sess_client_failed(s, 0);
                return -1;
            } else {
                p->held -= (uint32_t)n;
                s->bytes_out += (uint64_t)n;
                if (s->flow) /* the capture had all it keeps: count what went past */
                    fy_flow_resp_body_skipped(s->flow, (uint64_t)n);
                moved = true;
            }
        }
        /* upstream -> pipe, within the pipe's room and the body's end */
        if (!fy_uh1_done(up) && p->held < p->cap && up->sock.rd_ready) {
            ssize_t n = fy_uh1_splice_body(up, p->wr, p->cap - p->held, !s->up_write_failed);
            if (n > 0) {
                p->held += (uint32_t)n;
                moved = true;
            } else if (n == FY_AGAIN) {
                /* A pipe's slots can fill before its bytes do, so with bytes in it the refusal may
                 * be the pipe's, with data still in the socket and no edge to come: try again
                 * once the pipe drained (the readiness rule lets the caller say so). */
                if (p->held > 0)
                    up->sock.rd_ready = true;
            } else if (n == 0 && fy_uh1_done(up)) {
                moved = true; /* a close-delimited body ended */
            } else {
                sess_upstream_failed(s, n == 0 ? 0 : (int)n, "sending the response body");
                return -1;
            }
        }
        if (p->held == 0 && fy_uh1_done(up)) {
            sess_splice_release(s);
            return 1;
        }
        if (!moved)
            return progress;
        progress = 1;
    }
}

/* Gives the pipe back: pooled when empty, closed when the exchange was cut with bytes in it. */
void sess_splice_release(struct fy_session *s)
{
    fy_pipe_put(s->pipe);
    s->pipe = NULL;
    s->splicing = false;
}
