/*
 * The proxied exchange state machine; see session.h and docs/internals/session.md.
 *
 *   CONNECT --> EXCHANGE --(101)--> TUNNEL
 *      |            |                 |
 *      +------------+-----------------+--> DONE (log, release upstream, free)
 *
 * EXCHANGE pumps the request body upstream and the response downstream at the same time, each
 * side moving data by reference and stopping when its consumer is full (backpressure).
 * I/O callbacks only queue the session; everything happens in session_run().
 */
#include "proxy/session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/assert.h"
#include "core/macros.h"
#include "core/log.h"
#include "filters/hdr_rules.h"
#include "net/addr.h"
#include "proxy/connpool.h"
#include "proxy/worker.h"

#define FY_SESSION_STATES(X)                                                                       \
    X(CONNECT, "obtaining an upstream connection")                                                 \
    X(EXCHANGE, "sending the request, relaying the response")                                      \
    X(TUNNEL, "relaying upgraded bytes both ways")                                                 \
    X(DONE, "finished")

enum session_state {
#define X(id, text) S_##id,
    FY_SESSION_STATES(X)
#undef X
};

struct scratch {
    struct scratch *next;
    char data[];
};

struct fy_session {
    struct fy_session *next_free; /* on the free list */
    struct fy_task task;
    struct fy_timer timer;
    struct fy_worker *w;
    const struct fy_downstream_ops *ops;
    void *ds;
    struct fy_msg req;
    struct sockaddr_storage client;
    char client_ip[64]; /* the client's address as text, for X-Forwarded-For */
    struct fy_upconn *up;
    struct scratch *scratch;
    enum session_state state;
    int status;
    int attempts;
    bool reused;
    bool prepared;
    bool is_head;
    bool timed_out;
    bool detached;
    /* request side */
    bool req_last_queued, req_done, req_spans_out, req_body_started, sent_continue;
    bool req_starved; /* waiting for the client's body bytes */
    /* response side */
    bool got_response_bytes, head_sent, resp_spans_out, ds_blocked, resp_last_sent;
    /* tunnel */
    bool up_eof, client_eof;
    bool up_write_failed; /* a request write failed (reset): an upstream EOF is not a clean end */
    uint8_t full_reads;   /* upstream reads that filled the buffer: a large body is coming */
    uint64_t bytes_in, bytes_out;
    uint64_t start_us, up_start_us, up_head_us;
};

static void session_run(struct fy_task *t);

static void on_timer(struct fy_timer *t)
{
    struct fy_session *s = container_of(t, struct fy_session, timer);
    s->timed_out = true;
    fy_loop_queue(&s->w->loop, &s->task);
}

void fy_session_wake(struct fy_session *s)
{
    fy_loop_queue(&s->w->loop, &s->task);
}

void fy_session_output_flushed(struct fy_session *s)
{
    s->ds_blocked = false;
    fy_loop_queue(&s->w->loop, &s->task);
}

void fy_session_detach(struct fy_session *s)
{
    s->detached = true;
    s->ds = NULL;
    /* The client connection and its output queue are gone: no span of ours is out any more. */
    s->resp_spans_out = false;
    s->ds_blocked = false;
    fy_loop_queue(&s->w->loop, &s->task);
}

/*
 * Diagnostics about one exchange, in one format everywhere:
 *   warn ferry: client 127.0.0.1:51234 "GET /path HTTP/1.1" upstream http://10.0.0.1:3000: <what>
 * so a line names the client, the request and the upstream without reading the access log.
 */
static void slog(struct fy_session *s, enum fy_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void slog(struct fy_session *s, enum fy_log_level level, const char *fmt, ...)
{
    if (level < fy_log_min_level)
        return;
    char what[512], client[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    fy_addr_format((const struct sockaddr *)&s->client, client, sizeof(client));
    const struct fy_msg *m = &s->req;
    int tlen = m->target_len > 200 ? 200 : (int)m->target_len;
    fy_log(level, "client %s \"%.*s %.*s%s HTTP/1.%d\" upstream %s: %s", client, (int)m->method_len,
           m->method, tlen, m->target, m->target_len > 200 ? "..." : "", m->version_minor,
           s->w->cfg->upstream_text, what);
}

static char *scratch_alloc(struct fy_session *s, size_t n)
{
    struct scratch *b = malloc(sizeof(*b) + n);
    if (!b)
        return NULL;
    b->next = s->scratch;
    s->scratch = b;
    return b->data;
}

/*
 * Sets the list field `tok` to its current elements followed by `value`: several fields of one
 * name form one comma-separated list (RFC 9110 5.3), so all of them are joined, in order, with one
 * copy into session scratch memory (linear in the total length, however many fields there are).
 */
static int append_to_list(struct fy_session *s, struct fy_msg *m, enum fy_token tok,
                          const char *name, uint32_t nlen, const char *value, uint32_t vlen)
{
    size_t total = vlen;
    uint32_t count = 0;
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        const struct fy_hdr *h = &m->hdrs[i];
        if (!h->removed && h->tok == tok) {
            total += h->value_len + 2;
            count++;
        }
    }
    if (count == 0)
        return fy_msg_set_tok(m, tok, name, nlen, value, vlen);
    char *p = scratch_alloc(s, total), *out = p;
    if (!p)
        return -1;
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        const struct fy_hdr *h = &m->hdrs[i];
        if (h->removed || h->tok != tok)
            continue;
        memcpy(out, h->value, h->value_len);
        out += h->value_len;
        *out++ = ',';
        *out++ = ' ';
    }
    memcpy(out, value, vlen);
    return fy_msg_set_tok(m, tok, name, nlen, p, (uint32_t)total);
}

/*
 * Finished sessions wait on a per-thread free list with their request's storage (header array
 * and string block), which the next session hands to the client's reader in exchange for the
 * new request: a keep-alive request then costs no allocation. FY_NO_FREELIST frees for real.
 */
#define SESSION_FREELIST_MAX 1024

static __thread struct fy_session *free_sessions;
static __thread unsigned nfree_sessions;

static struct fy_session *session_alloc(void)
{
    struct fy_session *s = free_sessions;
    if (!s)
        return calloc(1, sizeof(*s));
    free_sessions = s->next_free;
    nfree_sessions--;
    /* Everything but the request's storage starts from zero. */
    struct fy_msg req = s->req;
    memset(s, 0, sizeof(*s));
    s->req = req;
    return s;
}

static void session_release(struct fy_session *s)
{
#ifndef FY_NO_FREELIST
    if (nfree_sessions < SESSION_FREELIST_MAX) {
        fy_msg_reset(&s->req);
        s->next_free = free_sessions;
        free_sessions = s;
        nfree_sessions++;
        return;
    }
#endif
    fy_msg_free(&s->req);
    free(s);
}

void fy_session_freelist_release(void)
{
    while (free_sessions) {
        struct fy_session *s = free_sessions;
        free_sessions = s->next_free;
        fy_msg_free(&s->req);
        free(s);
    }
    nfree_sessions = 0;
}

struct fy_session *fy_session_start(struct fy_worker *w, const struct fy_downstream_ops *ops,
                                    void *ds, struct fy_msg *req, const struct sockaddr *client,
                                    uint64_t start_us)
{
    struct fy_session *s = session_alloc();
    if (!s)
        return NULL;
    s->w = w;
    s->ops = ops;
    s->ds = ds;
    fy_msg_move(&s->req, req);
    memcpy(&s->client, client,
           client->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                         : sizeof(struct sockaddr_in));
    s->task.fn = session_run;
    fy_timer_init(&s->timer, on_timer);
    s->state = S_CONNECT;
    s->start_us = start_us;
    s->is_head = s->req.method_len == 4 && memcmp(s->req.method, "HEAD", 4) == 0;
    w->nsessions++;
    fy_loop_queue_front(&w->loop, &s->task);
    return s;
}

/* ---- request head towards the upstream ---- */

static bool rule_owns(struct fy_session *s, enum fy_token t)
{
    return fy_tokmask_has(s->w->req_rule_mask, t);
}

/* Rewrites the client's head into what the upstream sees: Host, forwarding fields, rules. */
static int prepare_request(struct fy_session *s)
{
    const struct fy_config *cfg = s->w->cfg;
    struct fy_msg *m = &s->req;
    struct fy_hdr *host = fy_msg_find_tok(m, FY_TOK_HOST);
    const char *orig_host = host ? host->value : NULL;
    uint32_t orig_host_len = host ? host->value_len : 0;

    if (!rule_owns(s, FY_TOK_HOST)) {
        const char *h = cfg->upstream_authority;
        uint32_t hl = (uint32_t)strlen(h);
        if (cfg->host_mode == FY_HOST_VALUE) {
            h = cfg->host_value;
            hl = (uint32_t)strlen(h);
        } else if (cfg->host_mode == FY_HOST_PRESERVE && orig_host) {
            h = orig_host;
            hl = orig_host_len;
        }
        if (fy_msg_set_tok(m, FY_TOK_HOST, "Host", 4, h, hl) < 0)
            return -1;
    }
    if (cfg->x_forwarded_for && !rule_owns(s, FY_TOK_X_FORWARDED_FOR)) {
        size_t iplen =
            fy_addr_format_host((struct sockaddr *)&s->client, s->client_ip, sizeof(s->client_ip));
        if (append_to_list(s, m, FY_TOK_X_FORWARDED_FOR, "X-Forwarded-For", 15, s->client_ip,
                           (uint32_t)iplen) < 0)
            return -1;
    }
    if (cfg->x_forwarded_proto && !rule_owns(s, FY_TOK_X_FORWARDED_PROTO) &&
        fy_msg_set_tok(m, FY_TOK_X_FORWARDED_PROTO, "X-Forwarded-Proto", 17, "http", 4) < 0)
        return -1;
    if (cfg->x_forwarded_host && !rule_owns(s, FY_TOK_X_FORWARDED_HOST) && orig_host &&
        fy_msg_set_tok(m, FY_TOK_X_FORWARDED_HOST, "X-Forwarded-Host", 16, orig_host,
                       orig_host_len) < 0)
        return -1;
    if (cfg->via && !rule_owns(s, FY_TOK_VIA) &&
        append_to_list(s, m, FY_TOK_VIA, "Via", 3, m->version_minor ? "1.1 ferry" : "1.0 ferry",
                       9) < 0)
        return -1;
    /* Expect is answered by ferry itself (100 Continue when the body is wanted). */
    for (uint32_t i = 0; i < m->nhdrs; i++)
        if (m->hdrs[i].tok == FY_TOK_EXPECT)
            m->hdrs[i].removed = true;
    return fy_hdr_rules_apply(&cfg->request_rules, m);
}

/* Serialises the request head into the upstream writer and sets the body framing. */
static int queue_request_head(struct fy_session *s)
{
    struct fy_msg *m = &s->req;
    struct fy_h1_writer *wr = &s->up->wr;
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
    s->req_last_queued = wr->framing == FY_FRAME_NONE;
    if (s->req_last_queued)
        wr->finished = true;
    return 0;
}

/* ---- ending ---- */

static void log_exchange(struct fy_session *s)
{
    if (s->w->alog.fd < 0)
        return; /* --access-log off */
    struct fy_log_entry e = {0};
    e.client = (struct sockaddr *)&s->client;
    e.method = s->req.method;
    e.method_len = s->req.method_len;
    e.target = s->req.target;
    e.target_len = s->req.target_len;
    e.version_minor = (int8_t)s->req.version_minor;
    e.status = s->status;
    e.bytes_in = s->bytes_in;
    e.bytes_out = s->bytes_out;
    e.upstream = s->up_start_us ? (const struct sockaddr *)&s->w->cfg->upstream.ss : NULL;
    if (s->w->alog.format == FY_ALOG_COMBINED) /* the only format that prints them */
        fy_log_entry_agent(&e, &s->req);
    uint64_t now = s->w->loop.now_us;
    e.upstream_us = s->up_start_us ? (s->up_head_us ? s->up_head_us : now) - s->up_start_us : 0;
    e.total_us = now - s->start_us;
    fy_accesslog_write(&s->w->alog, &e);
}

/* Gives the upstream connection back (to the pool or closed), and with it up->in. No span into
 * that buffer may still be out with the downstream: finish() has the downstream flush or drop
 * them first. */
static void release_upstream(struct fy_session *s, bool reusable)
{
    struct fy_upconn *up = s->up;
    if (!up)
        return;
    FY_ASSERT(!s->resp_spans_out);
    s->up = NULL;
    if (reusable) {
        fy_connpool_put(&s->w->pool, up);
    } else {
        fy_upconn_close(up);
    }
}

/*
 * Ends the exchange: tells the downstream (unless detached), then releases the upstream, logs, and
 * marks DONE. The order is the ownership rule: body spans given to send_body() point into up->in,
 * and only done() guarantees the downstream holds none of them any more (a clean end has them all
 * flushed; an unclean one makes the downstream drop them). Releasing first would let the client
 * flush bytes from a buffer that already belongs to another exchange.
 */
static void finish(struct fy_session *s, bool upstream_reusable, bool client_clean)
{
    if (s->state == S_DONE)
        return;
    /* A clean end is only reached once every span was flushed. */
    FY_ASSERT(!client_clean || !s->resp_spans_out || !s->ds);
    if (s->ds)
        s->ops->done(s->ds, client_clean);
    s->ds = NULL;
    s->resp_spans_out = false; /* flushed or dropped by done(), or gone with a detached client */
    s->ds_blocked = false;
    release_upstream(s, upstream_reusable);
    log_exchange(s);
    s->state = S_DONE;
}

/* Fails the exchange with `status` if nothing was sent to the client yet, else cuts the client
 * connection so a partial response can never look complete. */
static void fail_exchange(struct fy_session *s, int status, const char *text)
{
    if (s->state == S_DONE)
        return;
    if (!s->head_sent && s->ds) {
        s->status = status;
        /* The downstream decides keep-alive vs close itself. */
        int body = s->ops->send_error(s->ds, status, text);
        s->bytes_out += body > 0 ? (uint64_t)body : 0;
        finish(s, false, true);
    } else {
        finish(s, false, false);
    }
}

static bool idempotent(const struct fy_msg *m)
{
    static const char *const safe[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
    for (size_t i = 0; i < sizeof(safe) / sizeof(safe[0]); i++)
        if (m->method_len == strlen(safe[i]) && !memcmp(m->method, safe[i], m->method_len))
            return true;
    return false;
}

/*
 * The upstream connection failed. A pooled connection the upstream closed while we were reusing
 * it fails before any response byte: if the request is idempotent and no body byte was taken from
 * the client, the upstream cannot have acted on it differently than on a retry, so retry once on a
 * fresh connection. Anything else is a 502 (or a cut client connection mid-response).
 */
static void upstream_failed(struct fy_session *s, int err, const char *what)
{
    if (s->reused && !s->got_response_bytes && !s->req_body_started && idempotent(&s->req) &&
        s->attempts < 2) {
        slog(s, FY_LOG_DEBUG, "reused connection failed while %s (%s); retrying on a new one", what,
             err ? strerror(-err) : "closed");
        release_upstream(s, false);
        s->reused = false;
        s->req_last_queued = s->req_done = false;
        s->state = S_CONNECT;
        fy_loop_queue(&s->w->loop, &s->task);
        return;
    }
    slog(s, FY_LOG_WARN, "upstream failed while %s (%s)%s", what,
         err ? strerror(-err) : "connection closed",
         s->head_sent ? "; closing the client connection" : "");
    fail_exchange(s, 502, "the upstream server closed the connection or sent an invalid response");
}

static void client_failed(struct fy_session *s, int status)
{
    if (status && !s->head_sent && s->ds) {
        fail_exchange(s, status,
                      status == 413   ? "request body too large"
                      : status == 408 ? "timed out reading the request body"
                                      : "malformed request body");
        if (s->state == S_DONE)
            return;
    }
    s->status = s->status ? s->status : 499;
    finish(s, false, false);
}

/* ---- CONNECT ---- */

static void step_connect(struct fy_session *s)
{
    struct fy_worker *w = s->w;
    if (!s->up) {
        s->attempts++;
        s->up = s->attempts == 1 ? fy_connpool_get(&w->pool, &s->task) : NULL;
        s->reused = s->up != NULL;
        if (!s->up) {
            int err = 0;
            s->up = fy_connpool_connect(&w->pool, &s->task, &err);
            if (!s->up) {
                slog(s, FY_LOG_WARN, "cannot connect: %s", strerror(-err));
                fail_exchange(s, 502, "could not connect to the upstream server");
                return;
            }
            fy_loop_timer_set(&w->loop, &s->timer, w->cfg->connect_timeout);
        }
        if (!s->up_start_us)
            s->up_start_us = w->loop.now_us;
        if (!s->prepared) {
            s->prepared = true;
            if (prepare_request(s) < 0) {
                fail_exchange(s, 500, "out of memory");
                return;
            }
        }
    }
    struct fy_upconn *up = s->up;
    if (!up->connected) {
        if (s->timed_out) {
            slog(s, FY_LOG_WARN, "connect timed out after %llu ms",
                 (unsigned long long)w->cfg->connect_timeout);
            fail_exchange(s, 502, "timed out connecting to the upstream server");
            return;
        }
        if (!up->sock.wr_ready)
            return;
        int rc = fy_sock_connect_result(&up->sock);
        if (rc < 0) {
            slog(s, FY_LOG_WARN, "cannot connect: %s", strerror(-rc));
            fail_exchange(s, 502, "could not connect to the upstream server");
            return;
        }
        up->connected = true;
    }
    if (queue_request_head(s) < 0) {
        fail_exchange(s, 500, "out of memory");
        return;
    }
    if (!up->in)
        up->in = fy_buf_get(FY_BUF_SIZE);
    if (!up->in) {
        fail_exchange(s, 500, "out of memory");
        return;
    }
    up->rd.no_body = s->is_head;
    s->state = S_EXCHANGE;
    s->timed_out = false;
    fy_loop_timer_set(&w->loop, &s->timer, w->cfg->upstream_timeout);
}

/* ---- EXCHANGE ---- */

/* Returns 1 on progress, 0 when blocked, -1 when the session changed state. Body spans are
 * pulled before flushing so a request head and its first body bytes leave in one writev. */
static int pump_request(struct fy_session *s)
{
    struct fy_upconn *up = s->up;
    int progress = 0;
    if (s->req_done)
        return 0;
    s->req_starved = false;
    for (;;) {
        bool starved = false;
        if (!s->req_spans_out && !s->req_last_queued) {
            if (!s->ds)
                return -1;
            if (s->req.expect_continue && !s->sent_continue && !s->got_response_bytes) {
                s->sent_continue = true;
                struct fy_msg cont;
                fy_msg_init(&cont);
                cont.status = 100;
                cont.version_minor = 1;
                if (s->ops->send_interim(s->ds, &cont) < 0) {
                    client_failed(s, 0);
                    return -1;
                }
            }
            struct iovec iov[FY_H1R_MAX_SPANS];
            bool last = false;
            int status = 0;
            int n = s->ops->body_read(s->ds, iov, FY_H1R_MAX_SPANS, &last, &status);
            if (n == FY_AGAIN) {
                starved = true;
            } else if (n < 0) {
                client_failed(s, status);
                return -1;
            } else {
                s->req_body_started = true;
                for (int i = 0; i < n; i++)
                    s->bytes_in += iov[i].iov_len;
                int rc = fy_h1w_body(&up->wr, iov, n, last);
                FY_ASSERT(rc == 0);
                s->req_spans_out = n > 0;
                s->req_last_queued = last;
                progress = 1;
            }
        }
        if (fy_h1w_pending(&up->wr)) {
            if (!up->sock.wr_ready)
                return progress;
            int rc = fy_h1w_flush(&up->wr, &up->sock);
            if (rc == FY_AGAIN)
                return progress;
            if (rc < 0) {
                if (s->got_response_bytes) {
                    /* It answered early and stopped reading; let the response finish. The
                     * write error may have eaten the reset's report, so from here on the
                     * connection's end no longer proves a close-delimited body complete. */
                    s->req_done = true;
                    s->req_last_queued = false;
                    s->up_write_failed = true;
                    return 1;
                }
                upstream_failed(s, rc, "sending the request");
                return -1;
            }
            progress = 1;
        }
        if (s->req_spans_out) {
            s->req_spans_out = false;
            if (s->ds)
                s->ops->body_consumed(s->ds);
            continue;
        }
        if (s->req_last_queued) {
            s->req_done = true;
            return 1;
        }
        if (starved) {
            s->req_starved = true;
            return progress;
        }
    }
}

/* Applies ferry's response policy to the upstream head: hop-by-hop removal, Via, rules. */
static int prepare_response(struct fy_session *s, struct fy_msg *m)
{
    const struct fy_config *cfg = s->w->cfg;
    struct fy_hdr *upgrade = m->status == 101 ? fy_msg_find_tok(m, FY_TOK_UPGRADE) : NULL;
    fy_msg_strip_hop_by_hop(m);
    if (upgrade)
        upgrade->removed = false;
    if (cfg->via && !fy_tokmask_has(s->w->resp_rule_mask, FY_TOK_VIA) &&
        append_to_list(s, m, FY_TOK_VIA, "Via", 3, m->version_minor ? "1.1 ferry" : "1.0 ferry",
                       9) < 0)
        return -1;
    return fy_hdr_rules_apply(&cfg->response_rules, m);
}

/* Acts on what the last parse produced. Returns 0 to keep parsing, 1 when blocked on the
 * downstream, -1 when the session changed state. */
static int handle_parsed(struct fy_session *s)
{
    struct fy_h1_reader *rd = &s->up->rd;
    if (rd->state == FY_H1R_ERROR) {
        slog(s, FY_LOG_WARN, "invalid response from the upstream: %s", rd->err_text);
        fail_exchange(s, 502, "the upstream server sent an invalid response");
        return -1;
    }
    if (rd->state == FY_H1R_HEAD)
        return 0;
    if (!s->head_sent) {
        struct fy_msg *m = &rd->msg;
        if (m->status < 200 && m->status != 101) {
            /* Interim response: relay (ferry already sent its own 100 if the client asked). */
            if (!(m->status == 100 && (s->sent_continue || !s->req.expect_continue))) {
                fy_msg_strip_hop_by_hop(m);
                int rc = s->ops->send_interim(s->ds, m);
                if (rc == -ENOSPC) {
                    /* Interim responses are advisory: one too large to relay is dropped. */
                    slog(s, FY_LOG_WARN, "dropped a %d interim response too large to relay",
                         m->status);
                } else if (rc < 0) {
                    client_failed(s, 0);
                    return -1;
                }
            }
            fy_h1r_next(rd);
            rd->no_body = s->is_head;
            return 0;
        }
        s->status = m->status;
        s->up_head_us = s->w->loop.now_us;
        if (m->status == 101 && !s->req.upgrade) {
            fail_exchange(s, 502, "the upstream server sent an invalid response");
            return -1;
        }
        if (prepare_response(s, m) < 0) {
            fail_exchange(s, 500, "out of memory");
            return -1;
        }
        int rc = s->ops->send_head(s->ds, m);
        if (rc == -ENOSPC) {
            slog(s, FY_LOG_WARN,
                 "the upstream's response head is larger than %u bytes once rewritten for the "
                 "client",
                 (unsigned)FY_BUF_SIZE);
            fail_exchange(s, 502, "the upstream server sent a response head that is too large");
            return -1;
        }
        if (rc < 0) {
            client_failed(s, 0);
            return -1;
        }
        s->head_sent = true;
        if (m->status == 101) {
            s->up->wr.framing = FY_FRAME_TUNNEL;
            s->state = S_TUNNEL;
            fy_loop_queue(&s->w->loop, &s->task);
            return -1;
        }
    }
    if (rd->nspans == 0 && rd->state != FY_H1R_DONE)
        return 0;
    bool last = rd->state == FY_H1R_DONE;
    for (int i = 0; i < rd->nspans; i++)
        s->bytes_out += rd->spans[i].iov_len;
    int rc = s->ops->send_body(s->ds, rd->spans, rd->nspans, last);
    if (rc < 0 && rc != FY_AGAIN) {
        client_failed(s, 0);
        return -1;
    }
    s->resp_last_sent = last;
    if (rc == FY_AGAIN) {
        s->resp_spans_out = true;
        s->ds_blocked = true;
        return 1;
    }
    return 0;
}

static void response_complete(struct fy_session *s)
{
    struct fy_upconn *up = s->up;
    bool reusable = s->req_done && s->req_last_queued && up->rd.msg.keep_alive &&
                    !up->rd.eof_body && fy_buf_len(up->in) == 0;
    /* A response that overtook its request body leaves unread body on the client side. */
    finish(s, reusable, s->req_done && s->req_last_queued);
}

static int pump_response(struct fy_session *s)
{
    struct fy_upconn *up = s->up;
    int progress = 0;
    if (s->resp_spans_out) {
        if (s->ds_blocked)
            return 0;
        s->resp_spans_out = false;
        progress = 1;
    }
    if (s->resp_last_sent) {
        if (!s->req_done)
            return progress; /* finish sending the request first (pump_request ends it) */
        response_complete(s);
        return -1;
    }
    struct fy_buf *in = up->in;
    for (;;) {
        if (in->start < in->end && up->rd.state != FY_H1R_DONE) {
            size_t n = fy_h1r_execute(&up->rd, in->data + in->start, in->end - in->start);
            in->start += (uint32_t)n;
            int rc = handle_parsed(s);
            if (rc < 0)
                return -1;
            if (rc > 0)
                return 1;
            if (s->resp_last_sent) {
                if (!s->req_done)
                    return 1;
                response_complete(s);
                return -1;
            }
            if (n > 0 || up->rd.state == FY_H1R_BODY)
                continue;
        }
        if (!up->sock.rd_ready)
            return progress;
        if (in->start == in->end) {
            in->start = in->end = 0;
            if (s->full_reads >= 2 && in->cap < FY_BIG_BUF_SIZE) {
                /* A large body is streaming: fewer, larger reads and writes cost less CPU. */
                struct fy_buf *big = fy_buf_get(FY_BIG_BUF_SIZE);
                if (big) {
                    fy_buf_put(in);
                    up->in = in = big;
                }
            }
        } else if (fy_buf_room(in) == 0) {
            fy_buf_compact(in);
            if (fy_buf_room(in) == 0) {
                slog(s, FY_LOG_WARN, "the upstream sent a response head larger than %u bytes",
                     (unsigned)in->cap);
                fail_exchange(s, 502, "the upstream server sent an invalid response");
                return -1;
            }
        }
        size_t room = fy_buf_room(in);
        ssize_t r = fy_sock_read(&up->sock, in->data + in->end, room);
        if (r > 0) {
            in->end += (uint32_t)r;
            s->got_response_bytes = true;
            s->full_reads += (size_t)r == room;
            progress = 1;
            continue;
        }
        if (r == FY_AGAIN)
            return progress;
        if (r == 0 && up->rd.state == FY_H1R_BODY && up->rd.eof_body && !s->up_write_failed) {
            /* The close ends a close-delimited body: a normal end, not a failure. */
            fy_h1r_eof(&up->rd);
            up->rd.nspans = 0;
            int rc = handle_parsed(s);
            if (rc < 0)
                return -1;
            if (rc > 0)
                return 1;
            FY_ASSERT(s->resp_last_sent);
            if (!s->req_done)
                return 1;
            response_complete(s);
            return -1;
        }
        upstream_failed(s, (int)(r == 0 ? 0 : r),
                        s->head_sent ? "sending the response body" : "waiting for the response");
        return -1;
    }
}

static void step_exchange(struct fy_session *s)
{
    if (s->timed_out) {
        s->timed_out = false;
        if (!s->head_sent) {
            slog(s, FY_LOG_WARN, "the upstream did not answer within %llu ms",
                 (unsigned long long)s->w->cfg->upstream_timeout);
            fail_exchange(s, 504, "the upstream server did not answer in time");
        } else {
            slog(s, FY_LOG_WARN,
                 "the upstream stalled for %llu ms while sending the response "
                 "body; closing the client connection",
                 (unsigned long long)s->w->cfg->upstream_timeout);
            finish(s, false, false);
        }
        return;
    }
    bool moved = false;
    for (;;) {
        int a = pump_request(s);
        if (a < 0 || s->state != S_EXCHANGE)
            return;
        int b = pump_response(s);
        if (b < 0 || s->state != S_EXCHANGE)
            return;
        if (!a && !b)
            break;
        moved = true;
    }
    /* The upstream timeout measures the upstream's silence: it restarts on any progress and
     * does not run while the client is the one holding things up. */
    if (s->ds_blocked || (s->req_starved && !s->req_done))
        fy_loop_timer_stop(&s->timer); /* the client's body/send timeouts apply instead */
    else if (moved || s->timer.deadline == 0)
        fy_loop_timer_set(&s->w->loop, &s->timer, s->w->cfg->upstream_timeout);
}

/* ---- TUNNEL ---- */

static void step_tunnel(struct fy_session *s)
{
    struct fy_upconn *up = s->up;
    struct fy_buf *in = up->in;
    if (s->timed_out) {
        slog(s, FY_LOG_INFO, "tunnel idle for %llu ms; closing it",
             (unsigned long long)s->w->cfg->upstream_timeout);
        finish(s, false, false);
        return;
    }
    bool progress = true;
    while (progress && s->state == S_TUNNEL) {
        progress = false;
        /* upstream -> client */
        if (s->resp_spans_out && !s->ds_blocked) {
            s->resp_spans_out = false;
            in->start = in->end = 0;
        }
        if (!s->resp_spans_out && !s->resp_last_sent) {
            if (in->start < in->end) {
                struct iovec iov = {in->data + in->start, in->end - in->start};
                s->bytes_out += iov.iov_len;
                in->start = in->end;
                int rc = s->ops->send_body(s->ds, &iov, 1, false);
                if (rc < 0 && rc != FY_AGAIN) {
                    finish(s, false, false);
                    return;
                }
                s->resp_spans_out = rc == FY_AGAIN;
                s->ds_blocked = rc == FY_AGAIN;
                if (!s->resp_spans_out)
                    in->start = in->end = 0;
                progress = true;
            } else if (up->sock.rd_ready) {
                in->start = in->end = 0;
                ssize_t r = fy_sock_read(&up->sock, in->data, in->cap);
                if (r > 0) {
                    in->end = (uint32_t)r;
                    progress = true;
                } else if (r == 0 || r != FY_AGAIN) {
                    s->up_eof = true;
                    s->resp_last_sent = true;
                    if (s->ops->send_body(s->ds, NULL, 0, true) < 0 && !s->client_eof) {
                        finish(s, false, false);
                        return;
                    }
                    progress = true;
                }
            }
        }
        /* client -> upstream */
        if (fy_h1w_pending(&up->wr)) {
            int rc = up->sock.wr_ready ? fy_h1w_flush(&up->wr, &up->sock) : FY_AGAIN;
            if (rc < 0 && rc != FY_AGAIN) {
                finish(s, false, false);
                return;
            }
            if (rc == 0) {
                progress = true;
                if (s->req_spans_out) {
                    s->req_spans_out = false;
                    s->ops->body_consumed(s->ds);
                }
            }
        } else if (!s->client_eof) {
            struct iovec iov[FY_H1R_MAX_SPANS];
            bool last = false;
            int status = 0;
            int n = s->ops->body_read(s->ds, iov, FY_H1R_MAX_SPANS, &last, &status);
            if (n > 0) {
                for (int i = 0; i < n; i++)
                    s->bytes_in += iov[i].iov_len;
                fy_h1w_body(&up->wr, iov, n, false);
                s->req_spans_out = true;
                progress = true;
            } else if (n != FY_AGAIN) {
                s->client_eof = true;
                up->sock.tp->shutdown_write(&up->sock);
                progress = true;
            }
        }
        if (s->client_eof && s->up_eof && !s->resp_spans_out) {
            finish(s, false, false);
            return;
        }
    }
    fy_loop_timer_set(&s->w->loop, &s->timer, s->w->cfg->upstream_timeout);
}

static void session_free(struct fy_session *s)
{
    struct fy_worker *w = s->w;
    fy_loop_timer_del(&w->loop, &s->timer);
    fy_loop_unqueue(&w->loop, &s->task);
    while (s->scratch) {
        struct scratch *n = s->scratch->next;
        free(s->scratch);
        s->scratch = n;
    }
    session_release(s);
    w->nsessions--;
    fy_worker_check_drained(w);
}

static void session_run(struct fy_task *t)
{
    struct fy_session *s = container_of(t, struct fy_session, task);
    if (s->detached && s->state != S_DONE) {
        s->status = s->status ? s->status : 499;
        finish(s, false, false);
    }
    if (s->state == S_CONNECT)
        step_connect(s);
    if (s->state == S_EXCHANGE)
        step_exchange(s);
    if (s->state == S_TUNNEL)
        step_tunnel(s);
    if (s->state == S_DONE)
        session_free(s);
}
