/*
 * The proxied exchange state machine; see session.h and docs/internals/session.md.
 *
 *   ROUTE --> CONNECT --> EXCHANGE --(101)--> TUNNEL
 *     |          ^ |           |                 |
 *     |   (retry)+-+           |                 |
 *     +--> RESPOND ------------+-----------------+--> DONE (log, release upstream, free)
 *
 * ROUTE picks the route (and answers redirects, fixed responses and refusals through RESPOND, so
 * none of them takes an upstream connection); CONNECT picks a server of the route's group and
 * obtains a connection; a failure before the upstream saw anything goes back to CONNECT for
 * another server, within the group's retries and the worker's retry budget.
 *
 * EXCHANGE pumps the request body upstream and the response downstream at the same time, each
 * side moving data by reference and stopping when its consumer is full (backpressure).
 * I/O callbacks only queue the session; everything happens in session_run().
 */
#include "proxy/session_priv.h"

#include "proxy/flow.h"

#include "net/tls.h"

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
#include "proxy/upstream_h1.h"
#include "proxy/worker.h"

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
    s->client_sock = NULL;
    s->x.client_sock = NULL;
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
void sess_slog(struct fy_session *s, enum fy_log_level level, const char *fmt, ...)
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
    int tlen;
    const char *target = s->orig_target ? s->orig_target : m->target;
    uint32_t target_len = s->orig_target ? s->orig_target_len : m->target_len;
    tlen = target_len > 200 ? 200 : (int)target_len;
    char dest[300] = "-";
    if (s->last_server)
        snprintf(dest, sizeof(dest), "%s", s->last_server->url);
    else if (s->group)
        snprintf(dest, sizeof(dest), "%s", s->group->name);
    else if (s->has_fwd)
        sess_forward_describe(s, dest, sizeof(dest));
    fy_log(level, "client %s \"%.*s %.*s%s HTTP/1.%d\" upstream %s: %s", client, (int)m->method_len,
           m->method, tlen, target, target_len > 200 ? "..." : "", m->version_minor, dest, what);
}

/* fy_scratch_fn for header rules. */
char *sess_scratch_fn(void *ctx, size_t n)
{
    return sess_scratch_alloc(ctx, n);
}

char *sess_scratch_alloc(struct fy_session *s, size_t n)
{
    struct scratch *b = malloc(sizeof(*b) + n);
    if (!b)
        return NULL;
    b->next = s->scratch;
    s->scratch = b;
    return b->data;
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
                                    uint64_t start_us, uint32_t listener,
                                    const struct fy_fwd_target *fwd)
{
    struct fy_session *s = session_alloc();
    if (!s)
        return NULL;
    if (fwd && fwd->host_len < sizeof(s->fwd_host)) {
        s->fwd = *fwd;
        memcpy(s->fwd_host, fwd->host, fwd->host_len);
        s->fwd_host[fwd->host_len] = '\0';
        s->fwd.host = s->fwd_host;
        s->fwd.sni = NULL;
        if (fwd->sni && strlen(fwd->sni) < sizeof(s->fwd_sni)) {
            strcpy(s->fwd_sni, fwd->sni);
            s->fwd.sni = s->fwd_sni;
        }
        s->has_fwd = true;
    }
    s->w = w;
    s->ops = ops;
    s->ds = ds;
    s->client_sock = ops->transport(ds);
    if (s->client_sock && fy_tls_active(s->client_sock)) {
        s->tls = true;
        s->tls_version = fy_tls_version(s->client_sock);
        s->tls_cipher = fy_tls_cipher(s->client_sock);
    }
    fy_msg_move(&s->req, req);
    memcpy(&s->client, client,
           client->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                         : sizeof(struct sockaddr_in));
    s->task.fn = session_run;
    fy_timer_init(&s->timer, on_timer);
    sess_bf_init(s);
    fy_bf_chain_init(&s->rbf);
    s->gen = fy_worker_gen_acquire(w);
    s->cfg = &s->gen->conf->settings;
    s->listener = &s->gen->conf->listeners[listener];
    s->abort_on_close = w->cfg->abort_on_client_close;
    s->state = S_ROUTE;
    s->start_us = start_us;
    s->is_head = s->req.method_len == 4 && memcmp(s->req.method, "HEAD", 4) == 0;
    w->nsessions++;
    fy_loop_queue_front(&w->loop, &s->task);
    return s;
}

/* Serialises the request head towards the upstream (upstream_h1.c). */
int sess_queue_request_head(struct fy_session *s)
{
    bool body_follows;
    if (fy_uh1_send_head(s->up, &s->req, &body_follows) < 0)
        return -1;
    s->req_last_queued = !body_follows;
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
    e.target = s->orig_target ? s->orig_target : s->req.target;
    e.target_len = s->orig_target ? s->orig_target_len : s->req.target_len;
    e.version_minor = (int8_t)s->req.version_minor;
    char urlbuf[1024]; /* the whole URL, most of the time (else exchange memory) */
    if (s->w->alog.format == FY_ALOG_PRETTY && !s->has_fwd && s->orig_host && e.target_len &&
        e.target[0] == '/') {
        /* The readable log shows whole URLs, a reverse proxy's too. */
        size_t n = s->orig_host_len + e.target_len + 16;
        char *url = n <= sizeof(urlbuf) ? urlbuf : sess_scratch_alloc(s, n);
        if (url) {
            int len = snprintf(url, n, "%s://%.*s%.*s", s->tls ? "https" : "http",
                               (int)s->orig_host_len, s->orig_host, (int)e.target_len, e.target);
            if (len > 0 && (size_t)len < n) {
                e.target = url;
                e.target_len = (uint32_t)len;
            }
        }
    } else if (s->has_fwd && !s->fwd.connect) {
        /* A forward proxy logs the whole URL asked for, as Squid does. */
        size_t n = s->fwd.host_len + e.target_len + 40;
        char *url = n <= sizeof(urlbuf) ? urlbuf : sess_scratch_alloc(s, n);
        if (url) {
            bool v6 = memchr(s->fwd.host, ':', s->fwd.host_len) != NULL;
            char port[8] = "";
            if (s->fwd.port != (s->fwd.tls ? 443 : 80))
                snprintf(port, sizeof(port), ":%u", s->fwd.port);
            int len = snprintf(url, n, "%s://%s%.*s%s%s%.*s", s->fwd.tls ? "https" : "http",
                               v6 ? "[" : "", (int)s->fwd.host_len, s->fwd.host, v6 ? "]" : "",
                               port, (int)e.target_len, e.target);
            if (len > 0 && (size_t)len < n) {
                e.target = url;
                e.target_len = (uint32_t)len;
            }
        }
    }
    e.status = s->status;
    e.bytes_in = s->bytes_in;
    e.bytes_out = s->bytes_out;
    e.upstream = s->up_start_us && s->addrs && s->addr_i < s->naddrs
                     ? (const struct sockaddr *)&s->addrs[s->addr_i].ss
                     : NULL;
    e.request_id = s->request_id[0] ? s->request_id : NULL;
    e.tls_version = s->tls_version;
    e.tls_cipher = s->tls_cipher;
    char subject[256], fingerprint[65];
    if (s->client_sock && s->w->alog.format == FY_ALOG_JSON) {
        e.tls_server_name = fy_tls_server_name(s->client_sock);
        if (fy_tls_peer_subject(s->client_sock, subject, sizeof(subject)))
            e.tls_client_subject = subject;
        if (e.tls_client_subject &&
            fy_tls_peer_fingerprint(s->client_sock, fingerprint, sizeof(fingerprint)))
            e.tls_client_sha256 = fingerprint;
    }
    if (s->w->alog.format == FY_ALOG_COMBINED) /* the only format that prints them */
        fy_log_entry_agent(&e, &s->req);
    uint64_t now = s->w->loop.now_us;
    e.upstream_us = s->up_start_us ? (s->up_head_us ? s->up_head_us : now) - s->up_start_us : 0;
    e.total_us = now - s->start_us;
    e.content_type = s->resp_ctype;
    e.content_type_len = (uint32_t)strlen(s->resp_ctype);
    e.flow = s->flow;
    fy_accesslog_write(&s->w->alog, &e);
}

/* Gives the upstream connection back (to the pool or closed), and with it up->in. No span into
 * that buffer may still be out with the downstream: sess_finish() has the downstream flush or drop
 * them first. */
void sess_release_upstream(struct fy_session *s, bool reusable)
{
    struct fy_upconn *up = s->up;
    if (!up)
        return;
    FY_ASSERT(!s->resp_spans_out);
    s->up = NULL;
    if (reusable) {
        fy_connpool_put(s->pool, up);
    } else {
        fy_upconn_close(up);
    }
}

/* The log hooks, once per exchange (a hook releases its per-exchange state there). */
static void run_log_hooks(struct fy_session *s)
{
    bool any = false;
    for (unsigned i = 0; i < fy_nhooks; i++)
        any |= fy_hooks[i]->log != NULL;
    if (!any || !s->x.cfg)
        return; /* no hook has seen this exchange (it ended before the request hooks) */
    struct fy_exchange_log e = {0};
    e.req = &s->req;
    if (s->head_sent && s->up && s->state != S_RESPOND)
        e.resp = &s->up->rd.msg;
    else if (s->head_sent && s->state == S_RESPOND)
        e.resp = &s->resp;
    e.status = s->status;
    uint64_t now = s->w->loop.now_us;
    e.duration_us = now - s->start_us;
    e.upstream_first_byte_us = s->up_head_us && s->up_start_us ? s->up_head_us - s->up_start_us : 0;
    e.upstream_connect_us =
        !s->reused && s->up_ready_us && s->up_start_us ? s->up_ready_us - s->up_start_us : 0;
    e.bytes_in = s->bytes_in;
    e.bytes_out = s->bytes_out;
    if (s->up_start_us && s->addrs && s->addr_i < s->naddrs)
        e.upstream = (const struct sockaddr *)&s->addrs[s->addr_i].ss;
    e.tls_version = s->tls_version;
    e.tls_sni = s->client_sock ? fy_tls_server_name(s->client_sock) : NULL;
    e.request_id = s->request_id[0] ? s->request_id : NULL;
    e.route = s->route ? s->route->where : NULL;
    s->x.route = s->route;
    s->x.server = s->server;
    for (unsigned i = 0; i < fy_nhooks; i++)
        if (fy_hooks[i]->log)
            fy_hooks[i]->log(&s->x, &e);
}

/*
 * Ends the exchange: tells the downstream (unless detached), then releases the upstream, logs, and
 * marks DONE. The order is the ownership rule: body spans given to send_body() point into up->in,
 * and only done() guarantees the downstream holds none of them any more (a clean end has them all
 * flushed; an unclean one makes the downstream drop them). Releasing first would let the client
 * flush bytes from a buffer that already belongs to another exchange.
 */
void sess_finish(struct fy_session *s, bool upstream_reusable, bool client_clean)
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
    sess_splice_release(s); /* a cut exchange's pipe still holds bytes: closed, never pooled */
    run_log_hooks(s);       /* before the release: the response head lives in the upconn */
    sess_release_upstream(s, upstream_reusable);
    sess_release_server(s);
    log_exchange(s);
    sess_capture_end(s);
    s->state = S_DONE;
}

/* The fields a ferry-made error response carries besides its own: the route's response rules
 * marked `always` (so CORS headers survive a 502), and Retry-After on a 503. */
static bool error_fields(struct fy_session *s, int status, struct fy_msg *extra)
{
    bool any = false;
    if (status == 503) {
        fy_msg_add(extra, "Retry-After", 11, "5", 1, FY_TOK_OTHER);
        any = true;
    }
    if (s->route && s->route->response_rules.always && s->route->response_rules.n) {
        struct fy_tctx v;
        sess_template_vars(s, &v);
        fy_hrules_apply(&s->route->response_rules, extra, &v, sess_scratch_fn, s);
        any = true;
    }
    return any;
}

/* Fails the exchange with `status` if nothing was sent to the client yet, else cuts the client
 * connection so a partial response can never look complete. */
void sess_fail_exchange(struct fy_session *s, int status, const char *text)
{
    if (s->state == S_DONE)
        return;
    if (s->has_fwd && s->fwd.answered) {
        /* The client was told 200 for its CONNECT already (interception's sniff): its
         * connection is a tunnel now, and no HTTP response may appear in it (RFC 9110 9.3.6).
         * It closes; the log line keeps the status and the reason was logged. */
        s->status = status;
        sess_capture_error(s, status, text);
        sess_finish(s, false, false);
        return;
    }
    if (!s->head_sent && s->ds) {
        s->status = status;
        sess_capture_error(s, status, text);
        struct fy_msg extra;
        fy_msg_init(&extra);
        bool any = error_fields(s, status, &extra);
        /* The downstream decides keep-alive vs close itself. */
        int body = s->ops->send_error(s->ds, status, text, any ? &extra : NULL);
        fy_msg_free(&extra);
        s->bytes_out += body > 0 ? (uint64_t)body : 0;
        sess_finish(s, false, true);
    } else {
        sess_finish(s, false, false);
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
 * fresh connection to the same server (not the server's fault). A fresh connection that failed
 * the same way may go to another server, on the same conditions. A request that carried body
 * bytes (a POST the upstream may have processed) is never sent twice. Anything else is a 502 (or
 * a cut client connection mid-response).
 */
void sess_upstream_failed(struct fy_session *s, int err, const char *what)
{
    bool replayable = !s->got_response_bytes && !s->req_body_started && idempotent(&s->req);
    if (s->reused && replayable && s->attempts < 2) {
        sess_slog(s, FY_LOG_DEBUG, "reused connection failed while %s (%s); retrying on a new one",
                  what, err ? strerror(-err) : "closed");
        sess_release_upstream(s, false);
        s->reused = false;
        s->req_last_queued = s->req_done = false;
        s->up_write_failed = false;
        s->state = S_CONNECT;
        fy_loop_queue(&s->w->loop, &s->task);
        return;
    }
    s->server_failed = !s->got_response_bytes || !s->head_sent;
    char why[160];
    snprintf(why, sizeof(why), "upstream failed while %s (%s)", what,
             err ? strerror(-err) : "connection closed");
    if (replayable && sess_retry_elsewhere(s, why))
        return;
    sess_slog(s, FY_LOG_WARN, "%s%s", why, s->head_sent ? "; closing the client connection" : "");
    sess_fail_exchange(s, 502,
                       "the upstream server closed the connection or sent an invalid response");
}

void sess_client_failed(struct fy_session *s, int status)
{
    if (status && !s->head_sent && s->ds) {
        sess_fail_exchange(s, status,
                           status == 413   ? "request body too large"
                           : status == 408 ? "timed out reading the request body"
                                           : "malformed request body");
        if (s->state == S_DONE)
            return;
    }
    s->status = s->status ? s->status : 499;
    sess_finish(s, false, false);
}

/* ---- EXCHANGE ---- */

/* Expect: 100-continue: ferry's own 100 before the first body read. Returns 0, or -1 when the
 * client failed (the session ended). */
static int send_continue(struct fy_session *s)
{
    if (s->req.expect_continue && !s->sent_continue && !s->got_response_bytes) {
        s->sent_continue = true;
        struct fy_msg cont;
        fy_msg_init(&cont);
        cont.status = 100;
        cont.version_minor = 1;
        if (s->ops->send_interim(s->ds, &cont) < 0) {
            sess_client_failed(s, 0);
            return -1;
        }
    }
    return 0;
}

int sess_read_request_body(struct fy_session *s, struct iovec *iov, bool *last)
{
    if (!s->ds)
        return -1;
    if (send_continue(s) < 0)
        return -1;
    int status = 0;
    *last = false;
    int n = s->ops->body_read(s->ds, iov, FY_H1R_MAX_SPANS, last, &status);
    if (n == FY_AGAIN)
        return FY_AGAIN;
    if (n < 0) {
        sess_client_failed(s, status);
        return -1;
    }
    s->req_body_started = true;
    for (int i = 0; i < n; i++)
        s->bytes_in += iov[i].iov_len;
    sess_capture_req_body(s, iov, n);
    return n;
}

/* A request write failed with rc: pump_request's result. */
int sess_request_write_failed(struct fy_session *s, int rc)
{
    /* An upstream may answer early (a 413 to a large upload) and close without reading the
     * rest: the write then fails with a reset, but the answer is still queued in the socket
     * and comes out of the next reads (RFC 9112 9.3 lets a server do this; the client gets
     * the answer, not a 502). So stop sending and let the response side read: if nothing was
     * queued, the read reports the end and sess_upstream_failed() decides (a retry included)
     * as it would have here. The write error may have eaten the reset's report, so from here
     * on the connection's end no longer proves a close-delimited body complete. */
    s->req_done = true;
    sess_capture_mark(s, FY_FLOW_SENT);
    s->req_last_queued = false;
    s->up_write_failed = true;
    s->up_write_err = rc;
    return 1;
}

/* Returns 1 on progress, 0 when blocked, -1 when the session changed state. Body spans are
 * pulled before flushing so a request head and its first body bytes leave in one writev. */
static int pump_request(struct fy_session *s)
{
    if (fy_bf_chain_active(&s->rbf))
        return sess_rbf_pump(s);
    struct fy_upconn *up = s->up;
    int progress = 0;
    if (s->req_done)
        return 0;
    s->req_starved = false;
    for (;;) {
        bool starved = false;
        if (!s->req_spans_out && !s->req_last_queued) {
            struct iovec iov[FY_H1R_MAX_SPANS];
            bool last;
            int n = sess_read_request_body(s, iov, &last);
            if (n == FY_AGAIN) {
                starved = true;
            } else if (n < 0) {
                return -1;
            } else {
                fy_uh1_send_body(up, iov, n, last);
                s->req_spans_out = n > 0;
                s->req_last_queued = last;
                progress = 1;
            }
        }
        if (fy_uh1_pending(up)) {
            int rc = fy_uh1_flush(up);
            if (rc == FY_AGAIN)
                return progress;
            if (rc < 0)
                return sess_request_write_failed(s, rc);
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
            sess_capture_mark(s, FY_FLOW_SENT);
            return 1;
        }
        if (starved) {
            s->req_starved = true;
            return progress;
        }
    }
}

/* The sticky cookie naming the server used, for a client that did not name it. */
static int add_sticky_cookie(struct fy_session *s, struct fy_msg *m)
{
    const char *name = s->group->sticky_cookie;
    size_t n = strlen(name) + 1 + 16 + sizeof("; Path=/; HttpOnly") - 1;
    char *v = sess_scratch_alloc(s, n + 1);
    if (!v)
        return -1;
    int len = snprintf(v, n + 1, "%s=%.16s; Path=/; HttpOnly", name, s->server->cookie_id);
    return fy_msg_add(m, "Set-Cookie", 10, v, (uint32_t)len, FY_TOK_OTHER);
}

/* Applies ferry's response policy to the upstream head: hop-by-hop removal, the sticky cookie,
 * then the response hooks (Via, the route's rules). */
static int prepare_response(struct fy_session *s, struct fy_msg *m)
{
    struct fy_hdr *upgrade = m->status == 101 ? fy_msg_find_tok(m, FY_TOK_UPGRADE) : NULL;
    fy_msg_strip_hop_by_hop(m);
    if (upgrade)
        upgrade->removed = false;
    if (s->set_sticky && add_sticky_cookie(s, m) < 0)
        return -1;
    /* A body the client will get can go through filters the hooks add. */
    bool body = m->status >= 200 && m->status != 204 && m->status != 304 && !s->is_head;
    s->x.body_filters = body ? &s->bf : NULL;
    /* Response hooks return CONTINUE or ERROR (a hook that waits on a response is for later). */
    enum fy_hook_result r = sess_run_hooks(s, HP_RESPONSE, m);
    s->x.body_filters = NULL;
    /* A filtered body's length is not known before its end: the head says so from here on (the
     * capture and the pretty log see what the client gets). */
    if (fy_bf_chain_active(&s->bf))
        fy_msg_remove(m, "Content-Length", 14);
    return r == FY_HOOK_CONTINUE ? 0 : r == FY_HOOK_ERROR ? -2 : -1;
}

/* A response head from the upstream. Returns 0 to go on reading, -1 when the session changed
 * state (failed, or became a tunnel). */
static int on_response_head(struct fy_session *s)
{
    struct fy_upconn *up = s->up;
    struct fy_msg *m = &up->rd.msg;
    if (m->status < 200 && m->status != 101) {
        /* Interim responses are bounded like every other input: each one restarts the upstream
         * timeout, so an endless stream of them would hold the exchange forever. */
        if (++s->ninterim > FY_MAX_INTERIM) {
            sess_slog(s, FY_LOG_WARN, "the upstream sent more than %d interim (1xx) responses",
                      FY_MAX_INTERIM);
            sess_fail_exchange(s, 502, "the upstream server sent an invalid response");
            return -1;
        }
        /* Interim response: relay (ferry already sent its own 100 if the client asked). */
        if (!(m->status == 100 && (s->sent_continue || !s->req.expect_continue))) {
            fy_msg_strip_hop_by_hop(m);
            int rc = s->ops->send_interim(s->ds, m);
            if (rc == -ENOSPC) {
                /* Interim responses are advisory: one too large to relay is dropped. */
                sess_slog(s, FY_LOG_WARN, "dropped a %d interim response too large to relay",
                          m->status);
            } else if (rc < 0) {
                sess_client_failed(s, 0);
                return -1;
            }
        }
        fy_uh1_next_message(up, s->is_head);
        return 0;
    }
    s->status = m->status;
    s->up_head_us = s->w->loop.now_us;
    sess_capture_mark(s, FY_FLOW_FIRST_BYTE);
    if (m->status == 101 && (!s->req.upgrade || !fy_msg_upgrade_offered(&s->req, m))) {
        /* A switch the client did not ask for, or to a protocol it did not offer (nor
         * --upgrade-protocols allowed), is never tunnelled (RFC 9110 7.8, 15.2.2). */
        sess_slog(s, FY_LOG_WARN, "the upstream switched protocols (101) %s",
                  !s->req.upgrade ? "for a request that asked for no upgrade"
                                  : "to a protocol the request did not offer");
        sess_fail_exchange(s, 502, "the upstream server sent an invalid response");
        return -1;
    }
    int prep = prepare_response(s, m);
    if (prep < 0) {
        sess_fail_exchange(s, 500, prep == -2 ? "a response hook failed" : "out of memory");
        return -1;
    }
    s->status = m->status; /* what the client gets: a hook may have changed it */
    sess_capture_response(s, m);
    int rc = sess_bf_send_head(s, m);
    if (rc == -ENOSPC) {
        sess_slog(s, FY_LOG_WARN,
                  "the upstream's response head is larger than %u bytes once rewritten for the "
                  "client",
                  (unsigned)FY_BUF_SIZE);
        sess_fail_exchange(s, 502, "the upstream server sent a response head that is too large");
        return -1;
    }
    if (rc < 0) {
        sess_client_failed(s, 0);
        return -1;
    }
    s->head_sent = true;
    if (m->status == 101) {
        fy_uh1_switch_to_tunnel(up);
        s->state = S_TUNNEL;
        fy_loop_queue(&s->w->loop, &s->task);
        return -1;
    }
    return 0;
}

/* Response body spans to the client. Returns 0 when they were flushed, 1 when they wait in the
 * downstream's queue (fy_session_output_flushed() follows), -1 when the client failed. */
static int relay_body(struct fy_session *s)
{
    struct fy_h1_reader *rd = &s->up->rd;
    bool last = fy_uh1_done(s->up);
    for (int i = 0; i < rd->nspans; i++)
        s->bytes_out += rd->spans[i].iov_len;
    sess_capture_resp_body(s, rd->spans, rd->nspans);
    int rc = s->ops->send_body(s->ds, rd->spans, rd->nspans, last);
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
    return 0;
}

static void response_complete(struct fy_session *s)
{
    bool reusable = s->req_done && s->req_last_queued && fy_uh1_reusable(s->up);
    /* A response that overtook its request body leaves unread body on the client side. */
    sess_finish(s, reusable, s->req_done && s->req_last_queued);
}

/* Returns 1 on progress, 0 when blocked, -1 when the session changed state. */
static int pump_response(struct fy_session *s)
{
    struct fy_upconn *up = s->up;
    int progress = 0;
    if (s->resp_spans_out) {
        if (s->ds_blocked)
            return 0;
        s->resp_spans_out = false;
        if (fy_bf_chain_active(&s->bf))
            fy_bf_chain_taken(&s->bf);
        progress = 1;
    }
    for (;;) {
        if (!s->resp_last_sent && (s->bf_batch || s->bf_flush_due)) {
            int rc = sess_bf_pump(s);
            if (rc != 0)
                return rc;
            progress = 1;
        }
        if (s->resp_last_sent) {
            if (!s->req_done)
                return progress; /* sess_finish sending the request first (pump_request ends it) */
            response_complete(s);
            return -1;
        }
        if (s->splicing || sess_splice_start(s)) {
            int rc = sess_pump_splice(s);
            if (rc < 0)
                return -1;
            progress |= rc;
            if (s->splicing)
                return progress;
            /* The whole body went through the pipe: fy_uh1_next() reports its end. */
        }
        uint64_t before = fy_uh1_bytes_read(up);
        int err;
        enum fy_uh1_event ev = fy_uh1_next(up, !s->up_write_failed, &err);
        s->got_response_bytes = fy_uh1_got_bytes(up);
        progress |= fy_uh1_bytes_read(up) != before;
        switch (ev) {
        case FY_UH1_AGAIN:
            sess_bf_paused(s);
            return progress;
        case FY_UH1_HEAD:
            if (on_response_head(s) < 0)
                return -1;
            progress = 1;
            continue;
        case FY_UH1_BODY: {
            if (fy_bf_chain_active(&s->bf)) {
                s->bf_batch = true; /* sess_bf_pump pushes it, at the top of the loop */
                s->bf_span = 0;
                s->bf_off = 0;
                continue;
            }
            int rc = relay_body(s);
            if (rc < 0)
                return -1;
            if (rc > 0)
                return 1;
            progress = 1;
            continue;
        }
        case FY_UH1_INVALID:
            sess_slog(s, FY_LOG_WARN, "invalid response from the upstream: %s", up->rd.err_text);
            sess_fail_exchange(s, 502, "the upstream server sent an invalid response");
            return -1;
        case FY_UH1_TOO_LARGE:
            sess_slog(s, FY_LOG_WARN, "the upstream sent a response head larger than %u bytes",
                      (unsigned)up->in->cap);
            sess_fail_exchange(s, 502, "the upstream server sent an invalid response");
            return -1;
        case FY_UH1_CLOSED:
            if (s->up_write_failed && !s->got_response_bytes)
                sess_upstream_failed(s, err ? err : s->up_write_err, "sending the request");
            else
                sess_upstream_failed(s, err,
                                     s->head_sent ? "sending the response body"
                                                  : "waiting for the response");
            return -1;
        }
    }
}

static void step_exchange(struct fy_session *s)
{
    if (s->timed_out) {
        s->timed_out = false;
        if (!s->head_sent) {
            sess_slog(s, FY_LOG_WARN, "the upstream did not answer within %llu ms",
                      (unsigned long long)s->upstream_timeout);
            sess_fail_exchange(s, 504, "the upstream server did not answer in time");
        } else {
            sess_slog(s, FY_LOG_WARN,
                      "the upstream stalled for %llu ms while sending the response "
                      "body; closing the client connection",
                      (unsigned long long)s->upstream_timeout);
            sess_finish(s, false, false);
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
        fy_loop_timer_set(&s->w->loop, &s->timer, s->upstream_timeout);
}

/* ---- TUNNEL ---- */

static void step_tunnel(struct fy_session *s)
{
    struct fy_upconn *up = s->up;
    struct fy_buf *in = up->in;
    if (s->timed_out) {
        sess_slog(s, FY_LOG_INFO, "tunnel idle for %llu ms; closing it",
                  (unsigned long long)s->upstream_timeout);
        sess_finish(s, false, false);
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
                    sess_finish(s, false, false);
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
                        sess_finish(s, false, false);
                        return;
                    }
                    progress = true;
                }
            }
        }
        /* client -> upstream */
        if (fy_uh1_pending(up)) {
            int rc = fy_uh1_flush(up);
            if (rc < 0 && rc != FY_AGAIN) {
                sess_finish(s, false, false);
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
                fy_uh1_send_body(up, iov, n, false);
                s->req_spans_out = true;
                progress = true;
            } else if (n != FY_AGAIN) {
                s->client_eof = true;
                (void)fy_sock_shutdown(&up->sock);
                progress = true;
            }
        }
        if (s->client_eof && s->up_eof && !s->resp_spans_out) {
            sess_finish(s, false, false);
            return;
        }
    }
    fy_loop_timer_set(&s->w->loop, &s->timer, s->upstream_timeout);
}

static void session_free(struct fy_session *s)
{
    struct fy_worker *w = s->w;
    fy_loop_timer_del(&w->loop, &s->timer);
    sess_bf_free(s); /* after done(): the downstream no longer references the sink */
    fy_loop_unqueue(&w->loop, &s->task);
    while (s->scratch) {
        struct scratch *n = s->scratch->next;
        free(s->scratch);
        s->scratch = n;
    }
    sess_queue_remove(s);
    sess_forward_release(s);
    sess_capture_drop(s); /* a session freed before it ended (never, but never leak) */
    fy_msg_free(&s->resp);
    fy_msg_free(&s->hook_fields);
    fy_worker_gen_release(w, s->gen);
    session_release(s);
    w->nsessions--;
    fy_worker_check_drained(w);
}

static void session_run(struct fy_task *t)
{
    struct fy_session *s = container_of(t, struct fy_session, task);
    if (s->detached && s->state != S_DONE) {
        s->status = s->status ? s->status : 499;
        sess_finish(s, false, false);
    }
    if (s->state == S_ROUTE)
        sess_step_route(s);
    if (s->state == S_RESPOND)
        sess_step_respond(s);
    if (s->state == S_CONNECT)
        sess_step_connect(s);
    if (s->state == S_EXCHANGE)
        step_exchange(s);
    if (s->state == S_TUNNEL)
        step_tunnel(s);
    if (s->state == S_DONE)
        session_free(s);
}

bool fy_session_abort_on_client_close(const struct fy_session *s)
{
    return s->abort_on_close;
}
