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
#include "conf/template.h"
#include "filters/hdr_rules.h"
#include "http/date.h"
#include "http/path.h"
#include "net/addr.h"
#include "proxy/connpool.h"
#include "proxy/hooks.h"
#include "proxy/lb.h"
#include "proxy/router.h"
#include "proxy/upstream_h1.h"
#include "proxy/worker.h"

#define PATH_INLINE 256 /* normalised paths up to this long need no allocation */

#define FY_SESSION_STATES(X)                                                                       \
    X(ROUTE, "matching the request to a route")                                                    \
    X(RESPOND, "sending a response ferry makes itself")                                            \
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
    struct fy_exchange x; /* what hooks see (hooks.h) */
    struct fy_session *next_free; /* on the free list */
    struct fy_task task;
    struct fy_timer timer;
    struct fy_worker *w;
    struct fy_wgen *gen; /* the generation this exchange runs on, from start to end */
    const struct fy_config *cfg; /* &gen->conf->settings: a reload does not change them */
    const struct fy_listener_conf *listener;
    const struct fy_route *route;
    const struct fy_group *group;
    struct fy_server *server; /* picked for the current attempt (counted by the balancer) */
    const struct fy_server *last_server; /* the one used last: for the log */
    struct fy_connpool *pool; /* the worker's pool for server */
    uint32_t tried[FY_LB_MAX_TRIED];
    uint32_t ntried;
    uint32_t addr_i; /* which of the server's addresses the attempt uses */
    struct fy_session *qprev, *qnext; /* in its group's queue (gen->queues) */
    bool queued;
    uint64_t queue_deadline_us;
    /* hooks */
    uint8_t route_step; /* enum route_step */
    unsigned hook_next; /* the hook of the current point to run next */
    bool hook_waiting;  /* a hook returned WAIT: until fy_exchange_resume() */
    int hook_status;    /* fy_exchange_respond() */
    const char *hook_body;
    uint32_t hook_body_len;
    const struct fy_downstream_ops *ops;
    void *ds;
    struct fy_msg req;
    const char *orig_target; /* the target as received (for the log), owned by req */
    uint32_t orig_target_len;
    const char *path; /* normalised path, no query (path_inline or scratch) */
    uint32_t path_len;
    const char *query; /* after '?', in req's target as received; NULL if none */
    uint32_t query_len;
    const char *host; /* the client's Host without port, as received; NULL if none */
    uint32_t host_len;
    struct fy_route_result match;
    struct fy_msg resp; /* RESPOND: the response ferry makes */
    char date[40], clen[24];
    uint64_t connect_timeout, upstream_timeout;
    char request_id[33];
    struct sockaddr_storage client;
    char client_ip[64]; /* the client's address as text (X-Forwarded-For, $client_ip); lazy */
    const char *orig_host; /* the client's Host value, owned by req; NULL if none */
    uint32_t orig_host_len;
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
    bool server_failed; /* the current attempt failed on the server's side (passive health) */
    bool set_sticky;    /* the response carries the sticky cookie of the server used */
    bool abort_on_close;
    /* request side */
    bool req_last_queued, req_done, req_spans_out, req_body_started, sent_continue;
    bool req_starved; /* waiting for the client's body bytes */
    /* response side */
    bool got_response_bytes, head_sent, resp_spans_out, ds_blocked, resp_last_sent;
    /* tunnel */
    bool up_eof, client_eof;
    bool up_write_failed; /* a request write failed (reset): an upstream EOF is not a clean end */
    uint64_t bytes_in, bytes_out;
    uint64_t start_us, up_start_us, up_head_us;
    char path_inline[PATH_INLINE];
};

static void session_run(struct fy_task *t);

enum route_step { RS_START, RS_REQUEST_HOOKS, RS_UPSTREAM_HOOKS };

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
    int tlen;
    const char *target = s->orig_target ? s->orig_target : m->target;
    uint32_t target_len = s->orig_target ? s->orig_target_len : m->target_len;
    tlen = target_len > 200 ? 200 : (int)target_len;
    fy_log(level, "client %s \"%.*s %.*s%s HTTP/1.%d\" upstream %s: %s", client, (int)m->method_len,
           m->method, tlen, target, target_len > 200 ? "..." : "", m->version_minor,
           s->last_server ? s->last_server->url : s->group ? s->group->name : "-", what);
}

static char *scratch_alloc(struct fy_session *s, size_t n);

/* fy_scratch_fn for header rules. */
static char *scratch_fn(void *ctx, size_t n)
{
    return scratch_alloc(ctx, n);
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
                                    uint64_t start_us, uint32_t listener)
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

/* ---- request head towards the upstream ---- */

/* What the route's templates see of this request. */
static void template_vars(struct fy_session *s, struct fy_tctx *v)
{
    memset(v, 0, sizeof(*v));
    v->host = s->host;
    v->host_len = s->host_len;
    v->scheme = "http";
    v->scheme_len = 4;
    if (!s->client_ip[0])
        fy_addr_format_host((struct sockaddr *)&s->client, s->client_ip, sizeof(s->client_ip));
    v->client_ip = s->client_ip;
    v->client_ip_len = (uint32_t)strlen(s->client_ip);
    v->request_id = s->request_id;
    v->request_id_len = (uint32_t)strlen(s->request_id);
    v->method = s->req.method;
    v->method_len = s->req.method_len;
    v->path = s->path;
    v->path_len = s->path_len;
    v->query = s->query;
    v->query_len = s->query_len;
    v->request_uri = s->orig_target;
    v->request_uri_len = s->orig_target_len;
    if (s->match.ncaptures) {
        v->subject = s->path;
        v->ovector = s->match.ovector;
        v->ncaptures = s->match.ncaptures;
    }
}

static int render(struct fy_session *s, const struct fy_template *t, const char **out,
                  uint32_t *len)
{
    if (t->constant) {
        *out = t->constant;
        *len = t->constant_len;
        return 0;
    }
    struct fy_tctx v;
    template_vars(s, &v);
    char *p = scratch_alloc(s, fy_template_max_len(t, &v) + 1);
    if (!p)
        return -1;
    *len = (uint32_t)fy_template_render(t, &v, p);
    *out = p;
    return 0;
}

/* Sets the target sent upstream to head + path[skip..] + tail + the query. */
static int set_target(struct fy_session *s, const char *head, uint32_t head_len, uint32_t skip,
                      const char *tail, uint32_t tail_len)
{
    uint32_t rest = s->path_len - skip;
    char *t = scratch_alloc(s, (size_t)head_len + rest + tail_len + 2 + s->query_len);
    if (!t)
        return -1;
    char *o = t;
    memcpy(o, head, head_len);
    o += head_len;
    memcpy(o, s->path + skip, rest);
    o += rest;
    memcpy(o, tail, tail_len);
    o += tail_len;
    if (o == t || t[0] != '/') {
        /* An origin-form target starts with '/', whatever the rewrite left. */
        memmove(t + 1, t, (size_t)(o - t));
        t[0] = '/';
        o++;
    }
    if (s->query) {
        *o++ = '?';
        memcpy(o, s->query, s->query_len);
        o += s->query_len;
    }
    s->req.target = t;
    s->req.target_len = (uint32_t)(o - t);
    return 0;
}

/*
 * The route's path rewrite, on the normalised path (the query is kept as received):
 *   strip-prefix /v1          /v1/users -> /users, /v1 -> /
 *   replace-prefix /v1 -> /v2 /v1/users -> /v2/users
 *   regex + replacement       the part the regex matched is replaced (anchor it to replace the
 *                             whole path); $1.. are the regex's captures
 */
static int rewrite_target(struct fy_session *s)
{
    const struct fy_path_rewrite *rw = &s->route->rewrite;
    if (rw->kind == FY_RW_NONE)
        return 0;
    if (rw->kind == FY_RW_REGEX) {
        size_t ov[2 * FY_ROUTE_MAX_CAPTURES];
        int n = fy_regex_match(rw->re, s->path, s->path_len, ov, FY_ROUTE_MAX_CAPTURES);
        if (n <= 0)
            return 0;
        struct fy_tctx v;
        template_vars(s, &v);
        v.subject = s->path;
        v.ovector = ov;
        v.ncaptures = (uint32_t)n;
        char *mid = scratch_alloc(s, fy_template_max_len(&rw->replacement, &v) + 1);
        if (!mid)
            return -1;
        uint32_t mid_len = (uint32_t)fy_template_render(&rw->replacement, &v, mid);
        /* head = path before the match + replacement, tail = path after the match */
        uint32_t before = (uint32_t)ov[0], after = (uint32_t)ov[1];
        char *head = scratch_alloc(s, (size_t)before + mid_len + 1);
        if (!head)
            return -1;
        memcpy(head, s->path, before);
        memcpy(head + before, mid, mid_len);
        return set_target(s, head, before + mid_len, s->path_len, s->path + after,
                          s->path_len - after);
    }
    size_t pl = strlen(rw->prefix);
    if (s->path_len < pl || memcmp(s->path, rw->prefix, pl))
        return 0; /* the route matched on something else: nothing to take off */
    const char *with = rw->kind == FY_RW_REPLACE_PREFIX ? rw->with : "";
    uint32_t wl = (uint32_t)strlen(with);
    uint32_t skip = (uint32_t)pl;
    /* Keep exactly one '/' where the two meet: /v1/ -> /v2/ and /v1 -> /v2 both work. */
    if (wl && with[wl - 1] == '/' && skip < s->path_len && s->path[skip] == '/')
        skip++;
    else if (wl && with[wl - 1] != '/' && skip < s->path_len && s->path[skip] != '/' &&
             rw->prefix[pl - 1] == '/') {
        /* The prefix took its '/' along and the replacement has none: put it back. */
        char *h = scratch_alloc(s, (size_t)wl + 2);
        if (!h)
            return -1;
        memcpy(h, with, wl);
        h[wl++] = '/';
        with = h;
    }
    return set_target(s, with, wl, skip, "", 0);
}

/* Runs the hooks of one point from s->hook_next on. Returns CONTINUE when all ran, else what the
 * hook that stopped returned (for WAIT, s->hook_next is that hook: it runs again on resume). */
enum hook_point { HP_REQUEST, HP_UPSTREAM_REQUEST, HP_UPSTREAM_SELECT, HP_RESPONSE };

static enum fy_hook_result run_hooks(struct fy_session *s, enum hook_point p, struct fy_msg *m)
{
    s->x.route = s->route;
    s->x.server = s->server;
    for (; s->hook_next < fy_nhooks; s->hook_next++) {
        const struct fy_hook *h = fy_hooks[s->hook_next];
        fy_hook_fn *fn = p == HP_REQUEST            ? h->request
                         : p == HP_UPSTREAM_REQUEST ? h->upstream_request
                         : p == HP_UPSTREAM_SELECT  ? h->upstream_select
                                                    : h->response;
        if (!fn)
            continue;
        enum fy_hook_result r = fn(&s->x, m);
        if (r == FY_HOOK_CONTINUE)
            continue;
        if (r == FY_HOOK_ERROR)
            slog(s, FY_LOG_WARN, "the %s hook failed", h->name);
        if (r != FY_HOOK_WAIT)
            s->hook_next = 0;
        return r;
    }
    s->hook_next = 0;
    return FY_HOOK_CONTINUE;
}

/* Rewrites the client's head into what the upstream sees: the path, the request id, then the
 * upstream_request hooks (forwarding fields, header rules). Once per exchange; fields that
 * depend on the server (Host) come from the upstream_select hooks of each attempt. */
static int prepare_request(struct fy_session *s)
{
    struct fy_msg *m = &s->req;
    if (rewrite_target(s) < 0)
        return -1;
    if (fy_msg_set(m, "X-Request-Id", 12, s->request_id, (uint32_t)strlen(s->request_id)) < 0)
        return -1;
    /* Expect is answered by ferry itself (100 Continue when the body is wanted). */
    for (uint32_t i = 0; i < m->nhdrs; i++)
        if (m->hdrs[i].tok == FY_TOK_EXPECT)
            m->hdrs[i].removed = true;
    return 0;
}

/* Serialises the request head towards the upstream (upstream_h1.c). */
static int queue_request_head(struct fy_session *s)
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
    e.status = s->status;
    e.bytes_in = s->bytes_in;
    e.bytes_out = s->bytes_out;
    e.upstream = s->up_start_us && s->last_server
                     ? (const struct sockaddr *)&s->last_server->addrs[s->addr_i].ss
                     : NULL;
    e.request_id = s->request_id[0] ? s->request_id : NULL;
    if (s->w->alog.format == FY_ALOG_COMBINED) /* the only format that prints them */
        fy_log_entry_agent(&e, &s->req);
    uint64_t now = s->w->loop.now_us;
    e.upstream_us = s->up_start_us ? (s->up_head_us ? s->up_head_us : now) - s->up_start_us : 0;
    e.total_us = now - s->start_us;
    fy_accesslog_write(&s->w->alog, &e);
}

/* ---- the max-conns queue (per worker and group, oldest first) ---- */

static void queue_remove(struct fy_session *s)
{
    if (!s->queued)
        return;
    struct fy_wqueue *q = &s->gen->queues[s->group->index];
    if (s->qprev)
        s->qprev->qnext = s->qnext;
    else
        q->head = s->qnext;
    if (s->qnext)
        s->qnext->qprev = s->qprev;
    else
        q->tail = s->qprev;
    s->qprev = s->qnext = NULL;
    s->queued = false;
    q->n--;
}

static void queue_append(struct fy_session *s)
{
    struct fy_wqueue *q = &s->gen->queues[s->group->index];
    s->qprev = q->tail;
    s->qnext = NULL;
    if (q->tail)
        q->tail->qnext = s;
    else
        q->head = s;
    q->tail = s;
    q->n++;
    s->queued = true;
}

/* A connection of the group ended in this worker: the oldest waiting session tries again. */
static void queue_wake(struct fy_session *s)
{
    struct fy_wqueue *q = &s->gen->queues[s->group->index];
    if (q->head)
        fy_loop_queue(&s->w->loop, &q->head->task);
}

/* Ends the current attempt's claim on its server: the balancer uncounts the connection and
 * learns whether the server failed. */
static void release_server(struct fy_session *s)
{
    if (!s->server)
        return;
    enum fy_lb_outcome o = s->server_failed ? FY_LB_FAILED
                           : s->up_head_us  ? FY_LB_OK
                                            : FY_LB_NEUTRAL;
    fy_lb_release(&s->gen->lbs[s->group->index], s->server, o, fy_conf_now_ms());
    s->server_failed = false;
    s->server = NULL;
    queue_wake(s);
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
        fy_connpool_put(s->pool, up);
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
    release_server(s);
    log_exchange(s);
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
        template_vars(s, &v);
        fy_hrules_apply(&s->route->response_rules, extra, &v, scratch_fn, s);
        any = true;
    }
    return any;
}

/* Fails the exchange with `status` if nothing was sent to the client yet, else cuts the client
 * connection so a partial response can never look complete. */
static void fail_exchange(struct fy_session *s, int status, const char *text)
{
    if (s->state == S_DONE)
        return;
    if (!s->head_sent && s->ds) {
        s->status = status;
        struct fy_msg extra;
        fy_msg_init(&extra);
        bool any = error_fields(s, status, &extra);
        /* The downstream decides keep-alive vs close itself. */
        int body = s->ops->send_error(s->ds, status, text, any ? &extra : NULL);
        fy_msg_free(&extra);
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
 * Tries another server of the group after the current one failed before the exchange reached
 * it in any way that matters: within the group's retries and the worker's retry budget (so
 * retries cannot multiply an outage). Returns true when a retry was set up.
 */
static bool retry_elsewhere(struct fy_session *s, const char *why)
{
    if (!s->group || s->ntried > s->group->retries || s->ntried >= FY_LB_MAX_TRIED ||
        s->group->nservers < 2 || !fy_worker_retry_allowed(s->w))
        return false;
    slog(s, FY_LOG_INFO, "%s; retrying on another server", why);
    release_upstream(s, false);
    release_server(s);
    s->server = NULL;
    s->reused = false;
    s->req_last_queued = s->req_done = false;
    s->up_write_failed = false;
    s->got_response_bytes = false;
    s->timed_out = false;
    s->state = S_CONNECT;
    fy_loop_timer_stop(&s->timer);
    fy_loop_queue(&s->w->loop, &s->task);
    return true;
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
static void upstream_failed(struct fy_session *s, int err, const char *what)
{
    bool replayable = !s->got_response_bytes && !s->req_body_started && idempotent(&s->req);
    if (s->reused && replayable && s->attempts < 2) {
        slog(s, FY_LOG_DEBUG, "reused connection failed while %s (%s); retrying on a new one", what,
             err ? strerror(-err) : "closed");
        release_upstream(s, false);
        s->reused = false;
        s->req_last_queued = s->req_done = false;
        s->state = S_CONNECT;
        fy_loop_queue(&s->w->loop, &s->task);
        return;
    }
    s->server_failed = !s->got_response_bytes || !s->head_sent;
    char why[160];
    snprintf(why, sizeof(why), "upstream failed while %s (%s)", what,
             err ? strerror(-err) : "connection closed");
    if (replayable && retry_elsewhere(s, why))
        return;
    slog(s, FY_LOG_WARN, "%s%s", why, s->head_sent ? "; closing the client connection" : "");
    fail_exchange(s, 502, "the upstream server closed the connection or sent an invalid response");
}

/* A connection attempt failed: the upstream saw nothing, so any request may go elsewhere: first
 * to the server's next address (a name with several), then to another server. */
static void connect_failed(struct fy_session *s, const char *why)
{
    if (s->server && s->addr_i + 1 < s->server->naddrs) {
        char addr[80];
        fy_addr_format((const struct sockaddr *)&s->server->addrs[s->addr_i].ss, addr,
                       sizeof(addr));
        slog(s, FY_LOG_INFO, "%s (%s); trying the server's next address", why, addr);
        release_upstream(s, false);
        s->addr_i++;
        s->pool = s->gen->pools[s->group->index][s->server->pool_slot + s->addr_i];
        s->attempts = 0;
        s->timed_out = false;
        fy_loop_timer_stop(&s->timer);
        fy_loop_queue(&s->w->loop, &s->task);
        return;
    }
    s->server_failed = true;
    if (retry_elsewhere(s, why))
        return;
    slog(s, FY_LOG_WARN, "%s", why);
    fail_exchange(s, 502, "could not connect to the upstream server");
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

/* ---- ROUTE ---- */

/* A random id of 32 hex digits (128 bits, like nginx's $request_id). */
static void make_request_id(struct fy_session *s)
{
    static const char hex[] = "0123456789abcdef";
    for (int half = 0; half < 2; half++) {
        uint64_t x = fy_worker_random(s->w);
        for (int i = 0; i < 16; i++, x >>= 4)
            s->request_id[half * 16 + i] = hex[x & 15];
    }
    s->request_id[32] = '\0';
}

/* A client's X-Request-Id is kept when trusted and sane (visible ASCII, at most 128 bytes, so it
 * cannot break a log line); else ferry makes one. */
static void take_request_id(struct fy_session *s)
{
    if (s->cfg->trust_request_id) {
        struct fy_hdr *h = fy_msg_find(&s->req, "X-Request-Id", 12);
        if (h && h->value_len > 0 && h->value_len < sizeof(s->request_id)) {
            bool ok = true;
            for (uint32_t i = 0; i < h->value_len && ok; i++)
                ok = h->value[i] > 0x20 && h->value[i] < 0x7f && h->value[i] != '"';
            if (ok) {
                memcpy(s->request_id, h->value, h->value_len);
                s->request_id[h->value_len] = '\0';
                return;
            }
        }
    }
    make_request_id(s);
}

/* Splits the target into normalised path and query, and notes the Host. Returns 0, or -1 for a
 * target whose path cannot be normalised (a malformed %-escape). */
static int request_facts(struct fy_session *s)
{
    struct fy_msg *m = &s->req;
    s->orig_target = m->target;
    s->orig_target_len = m->target_len;
    struct fy_hdr *host = fy_msg_find_tok(m, FY_TOK_HOST);
    if (host) {
        s->orig_host = host->value;
        s->orig_host_len = host->value_len;
        s->host = host->value;
        s->host_len = host->value_len;
        /* $host is the name without the port: "[::1]:80" -> "[::1]", "a.com:80" -> "a.com" */
        for (uint32_t i = s->host_len; i > 0; i--) {
            char c = s->host[i - 1];
            if (c == ':') {
                s->host_len = i - 1;
                break;
            }
            if (c == ']' || c == '.')
                break;
        }
    }
    const char *q = memchr(m->target, '?', m->target_len);
    uint32_t plen = q ? (uint32_t)(q - m->target) : m->target_len;
    if (q) {
        s->query = q + 1;
        s->query_len = m->target_len - plen - 1;
    }
    if (plen == 0 || m->target[0] != '/') {
        /* asterisk-form (OPTIONS *): matched as is */
        s->path = m->target;
        s->path_len = plen;
        return 0;
    }
    char *out = plen <= sizeof(s->path_inline) ? s->path_inline : scratch_alloc(s, plen);
    if (!out)
        return -1;
    int n = fy_path_normalize(m->target, plen, out);
    if (n < 0)
        return -1;
    s->path = out;
    s->path_len = (uint32_t)n;
    return 0;
}

/* The route's settings over the globals. */
static void apply_route_limits(struct fy_session *s)
{
    const struct fy_config *cfg = s->cfg;
    const struct fy_route_limits *l = &s->route->limits;
    s->connect_timeout = l->connect_timeout ? l->connect_timeout : cfg->connect_timeout;
    s->upstream_timeout = l->upstream_timeout ? l->upstream_timeout : cfg->upstream_timeout;
    if (l->abort_on_client_close >= 0)
        s->abort_on_close = l->abort_on_client_close;
}

/* The request body limit in force: the route's, else the global one (0 = unlimited). */
static uint64_t body_limit(const struct fy_session *s)
{
    uint64_t l = s->route->limits.max_body_size;
    if (l == UINT64_MAX)
        return 0;
    return l ? l : s->cfg->max_body_size;
}

static bool has_request_body(const struct fy_msg *m)
{
    return m->chunked || m->content_length > 0;
}

/* A response ferry makes itself for a redirect or fixed-response route: head and body go to the
 * downstream like an upstream's, so the route's response rules apply to it as well. */
/* Sends a response ferry makes (a redirect or fixed-response route, a hook's answer): head and
 * body go to the downstream like an upstream's, and the response hooks (the route's response
 * rules) apply to it as well. `location` may be NULL; `extra` holds more fields (may be NULL). */
static void send_own_response(struct fy_session *s, int status, const char *body, uint32_t blen,
                              const char *location, uint32_t llen, const char *content_type,
                              const struct fy_hrules *extra)
{
    struct fy_msg *resp = &s->resp;
    fy_msg_init(resp);
    resp->status = (uint16_t)status;
    resp->version_minor = 1;
    if (location && fy_msg_add(resp, "Location", 8, location, llen, FY_TOK_OTHER) < 0)
        goto oom;
    if (blen || content_type) {
        const char *ct = content_type ? content_type : "text/plain; charset=utf-8";
        if (fy_msg_add(resp, "Content-Type", 12, ct, (uint32_t)strlen(ct), FY_TOK_OTHER) < 0)
            goto oom;
    }
    fy_http_date(s->date);
    if (fy_msg_add(resp, "Date", 4, s->date, (uint32_t)strlen(s->date), FY_TOK_OTHER) < 0)
        goto oom;
    if (extra) {
        struct fy_tctx v;
        template_vars(s, &v);
        if (fy_hrules_apply(extra, resp, &v, scratch_fn, s) < 0)
            goto oom;
    }
    if (run_hooks(s, HP_RESPONSE, resp) != FY_HOOK_CONTINUE)
        goto oom;
    resp->content_length = blen;
    size_t dl = fy_u64_to_dec(blen, s->clen);
    if (fy_msg_add(resp, "Content-Length", 14, s->clen, (uint32_t)dl, FY_TOK_CONTENT_LENGTH) < 0)
        goto oom;
    s->status = status;
    int rc = s->ops->send_head(s->ds, resp);
    if (rc < 0) {
        if (rc == -ENOSPC) {
            fail_exchange(s, 500, "the configured response does not fit a response head");
            return;
        }
        client_failed(s, 0);
        return;
    }
    s->head_sent = true;
    struct iovec iov = {(void *)body, s->is_head ? 0 : blen};
    s->bytes_out += iov.iov_len;
    rc = s->ops->send_body(s->ds, &iov, iov.iov_len ? 1 : 0, true);
    if (rc < 0 && rc != FY_AGAIN) {
        client_failed(s, 0);
        return;
    }
    s->resp_last_sent = true;
    s->resp_spans_out = rc == FY_AGAIN;
    s->ds_blocked = rc == FY_AGAIN;
    s->state = S_RESPOND;
    fy_loop_timer_stop(&s->timer);
    fy_loop_queue(&s->w->loop, &s->task);
    return;
oom:
    fail_exchange(s, 500, "out of memory");
}

/* A redirect or fixed-response route. */
static void start_respond(struct fy_session *s)
{
    const struct fy_route *r = s->route;
    const char *body = "", *loc = NULL;
    uint32_t blen = 0, llen = 0;
    if (r->action == FY_ACT_REDIRECT) {
        if (render(s, &r->location, &loc, &llen) < 0) {
            fail_exchange(s, 500, "out of memory");
            return;
        }
    } else if (render(s, &r->body, &body, &blen) < 0) {
        fail_exchange(s, 500, "out of memory");
        return;
    }
    const char *ct = r->action == FY_ACT_RESPOND && !r->content_type
                         ? "text/plain; charset=utf-8"
                         : r->content_type;
    send_own_response(s, r->status, body, blen, loc, llen, ct, &r->respond_headers);
}

/* Acts on what a hook chain returned. Returns true to go on with the exchange. */
static bool hooks_done(struct fy_session *s, enum fy_hook_result r)
{
    switch (r) {
    case FY_HOOK_CONTINUE:
        return true;
    case FY_HOOK_WAIT:
        s->hook_waiting = true;
        fy_loop_timer_stop(&s->timer);
        return false;
    case FY_HOOK_DONE:
        if (s->hook_status)
            send_own_response(s, s->hook_status, s->hook_body, s->hook_body_len, NULL, 0, NULL,
                              NULL);
        else
            fail_exchange(s, 500, "a hook ended the exchange without a response");
        return false;
    case FY_HOOK_ERROR:
        break;
    }
    fail_exchange(s, 500, "internal error in a request hook");
    return false;
}

static void step_respond(struct fy_session *s)
{
    if (s->ds_blocked)
        return; /* fy_session_output_flushed() wakes us */
    s->resp_spans_out = false;
    /* The request body (if any) was never read: the connection cannot carry another request. */
    finish(s, false, !has_request_body(&s->req));
}

/* The exchange's public view for hooks. */
static void fill_exchange(struct fy_session *s)
{
    struct fy_exchange *x = &s->x;
    x->cfg = s->cfg;
    x->conf = s->gen->conf;
    x->client = (const struct sockaddr *)&s->client;
    if (!s->client_ip[0])
        fy_addr_format_host((struct sockaddr *)&s->client, s->client_ip, sizeof(s->client_ip));
    x->client_ip = s->client_ip;
    x->client_ip_len = (uint32_t)strlen(s->client_ip);
    x->orig_host = s->orig_host;
    x->orig_host_len = s->orig_host_len;
    x->request_id = s->request_id;
}

/* Matches the route and starts its action. Returns true for a proxied route. */
static bool route_request(struct fy_session *s)
{
    struct fy_route_req rq = {.path = s->path, .path_len = s->path_len, .msg = &s->req,
                              .query = s->query, .query_len = s->query_len};
    char hostkey[256];
    if (s->host) {
        if (s->orig_host_len < sizeof(hostkey)) {
            rq.host = hostkey;
            rq.host_len = fy_route_host_key(s->orig_host, s->orig_host_len, hostkey);
        } else {
            rq.host = ""; /* no route names a host that long */
            rq.host_len = 0;
        }
    }
    if (!fy_router_match(s->listener->router, &rq, &s->match)) {
        slog(s, FY_LOG_INFO, "no route matches");
        fail_exchange(s, 404, "no route matches this request");
        return false;
    }
    s->route = s->match.route;
    apply_route_limits(s);
    uint64_t limit = body_limit(s);
    if (limit && s->req.content_length > 0 && (uint64_t)s->req.content_length > limit) {
        fail_exchange(s, 413, "request body too large");
        return false;
    }
    if (has_request_body(&s->req))
        s->ops->limit_body(s->ds, limit);
    if (s->route->action != FY_ACT_PROXY) {
        start_respond(s);
        return false;
    }
    s->group = s->route->group;
    if (prepare_request(s) < 0) {
        fail_exchange(s, 500, "out of memory");
        return false;
    }
    return true;
}

/*
 * ROUTE, in three steps a WAITing hook can pause between: the request hooks (before routing),
 * routing and the route's action, then the upstream_request hooks (before a server is picked).
 */
static void step_route(struct fy_session *s)
{
    if (s->hook_waiting)
        return; /* fy_exchange_resume() clears it */
    if (s->route_step == RS_START) {
        fy_worker_count_request(s->w);
        take_request_id(s);
        if (request_facts(s) < 0) {
            fail_exchange(s, 400, "invalid request target (malformed percent-encoding)");
            return;
        }
        fill_exchange(s);
        s->route_step = RS_REQUEST_HOOKS;
    }
    if (s->route_step == RS_REQUEST_HOOKS) {
        if (!hooks_done(s, run_hooks(s, HP_REQUEST, &s->req)))
            return;
        if (!route_request(s))
            return;
        s->route_step = RS_UPSTREAM_HOOKS;
    }
    if (!hooks_done(s, run_hooks(s, HP_UPSTREAM_REQUEST, &s->req)))
        return;
    s->prepared = true;
    s->state = S_CONNECT;
}

/* ---- CONNECT ---- */

/* The value of cookie `name` in the request's Cookie fields, or NULL. */
static const char *find_cookie(struct fy_msg *m, const char *name, uint32_t nlen, uint32_t *vlen)
{
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        const struct fy_hdr *h = &m->hdrs[i];
        if (h->removed || !fy_name_eq(h->name, h->name_len, "Cookie", 6))
            continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *eq = memchr(p, '=', (size_t)(end - p));
            const char *semi = memchr(p, ';', (size_t)(end - p));
            if (!semi)
                semi = end;
            if (eq && eq < semi && (uint32_t)(eq - p) == nlen && !memcmp(p, name, nlen)) {
                const char *v = eq + 1;
                uint32_t l = (uint32_t)(semi - v);
                if (l >= 2 && v[0] == '"' && v[l - 1] == '"') {
                    v++;
                    l -= 2;
                }
                *vlen = l;
                return v;
            }
            p = semi;
        }
    }
    return NULL;
}

/* What the group's balancer needs from this request: the hash key or the sticky server. */
static void balancer_request(struct fy_session *s, struct fy_lb_req *lr)
{
    const struct fy_group *g = s->group;
    memset(lr, 0, sizeof(*lr));
    lr->tried = s->tried;
    lr->ntried = s->ntried;
    lr->now_ms = fy_conf_now_ms();
    if (g->balance == FY_LB_HASH) {
        const char *k = NULL;
        uint32_t kl = 0;
        switch (g->hash_key) {
        case FY_HK_CLIENT_IP: {
            struct fy_tctx v;
            template_vars(s, &v);
            k = v.client_ip;
            kl = v.client_ip_len;
            break;
        }
        case FY_HK_PATH:
            k = s->path;
            kl = s->path_len;
            break;
        case FY_HK_HEADER: {
            struct fy_hdr *h = fy_msg_find(&s->req, g->hash_name, g->hash_name_len);
            if (h) {
                k = h->value;
                kl = h->value_len;
            }
            break;
        }
        case FY_HK_COOKIE:
            k = find_cookie(&s->req, g->hash_name, g->hash_name_len, &kl);
            break;
        }
        if (k) {
            lr->hash = fy_lb_hash(k, kl);
            lr->has_hash = true;
        }
    } else if (g->balance == FY_LB_STICKY) {
        uint32_t vl = 0;
        const char *v = find_cookie(&s->req, g->sticky_cookie, (uint32_t)strlen(g->sticky_cookie),
                                    &vl);
        for (uint32_t i = 0; v && i < g->nservers; i++)
            if (vl == 16 && !memcmp(g->servers[i].cookie_id, v, 16))
                lr->prefer = &g->servers[i];
    }
}

/* Is some server left that is only full (at max-conns), so waiting could help? */
static bool only_full(const struct fy_session *s, uint64_t now_ms)
{
    const struct fy_group *g = s->group;
    for (uint32_t i = 0; i < g->nservers; i++) {
        bool tried = false;
        for (uint32_t k = 0; k < s->ntried && !tried; k++)
            tried = s->tried[k] == i;
        if (!tried && fy_lb_usable(&g->servers[i], now_ms, true))
            return true;
    }
    return false;
}

/* No server has room: wait in the group's queue (woken when a connection of the group ends in
 * this worker, and every QUEUE_POLL_MS for the other workers' ones), or 503 when the queue is
 * full or the wait is over. Returns true while waiting. */
#define QUEUE_POLL_MS 20
static bool wait_in_queue(struct fy_session *s, uint64_t now_ms)
{
    const struct fy_group *g = s->group;
    uint64_t now_us = s->w->loop.now_us;
    if (!s->queued) {
        if (!g->max_queue || !only_full(s, now_ms) ||
            s->gen->queues[g->index].n >= g->max_queue) {
            if (only_full(s, now_ms))
                slog(s, FY_LOG_WARN, "every server of upstream group %s is at max-conns and %s",
                     g->name, g->max_queue ? "the queue is full" : "it has no queue");
            return false;
        }
        queue_append(s);
        s->queue_deadline_us = now_us + g->queue_timeout * 1000;
        slog(s, FY_LOG_INFO, "every server of upstream group %s is at max-conns; waiting (%u in "
             "this worker's queue)", g->name, s->gen->queues[g->index].n);
    } else if (now_us >= s->queue_deadline_us) {
        queue_remove(s);
        slog(s, FY_LOG_WARN, "waited %llu ms for a server of upstream group %s below max-conns",
             (unsigned long long)g->queue_timeout, g->name);
        return false;
    }
    s->timed_out = false;
    fy_loop_timer_set(&s->w->loop, &s->timer, QUEUE_POLL_MS);
    return true;
}

/* Picks the server for the next attempt. Returns false when there is none yet: the exchange
 * failed, or it waits in the queue. */
static bool select_server(struct fy_session *s)
{
    struct fy_lb_req lr;
    balancer_request(s, &lr);
    struct fy_server *sv = fy_lb_pick(&s->gen->lbs[s->group->index], &lr);
    if (!sv && wait_in_queue(s, lr.now_ms))
        return false;
    queue_remove(s);
    if (!sv) {
        if (s->ntried == 0 || only_full(s, lr.now_ms)) {
            slog(s, FY_LOG_WARN, "no server of upstream group %s is available", s->group->name);
            fail_exchange(s, 503, "no upstream server is available");
        } else {
            fail_exchange(s, 502, "could not connect to the upstream server");
        }
        return false;
    }
    s->server = sv;
    s->last_server = sv;
    s->timed_out = false; /* a queue wait's poll is not a connect timeout */
    s->addr_i = 0;
    s->pool = s->gen->pools[s->group->index][sv->pool_slot];
    s->tried[s->ntried++] = sv->index;
    s->set_sticky = s->group->balance == FY_LB_STICKY && lr.prefer != sv;
    s->attempts = 0;
    /* Per-attempt fields (Host). These hooks cannot wait: a server is already counted. */
    if (run_hooks(s, HP_UPSTREAM_SELECT, &s->req) != FY_HOOK_CONTINUE) {
        fail_exchange(s, 500, "internal error in an upstream_select hook");
        return false;
    }
    return true;
}

static void step_connect(struct fy_session *s)
{
    struct fy_worker *w = s->w;
    if (!s->server && !select_server(s))
        return;
    if (!s->up) {
        s->attempts++;
        s->up = s->attempts == 1 ? fy_connpool_get(s->pool, &s->task) : NULL;
        s->reused = s->up != NULL;
        if (!s->up) {
            int err = 0;
            s->up = fy_connpool_connect(s->pool, &s->task, &err);
            if (!s->up) {
                char why[128];
                snprintf(why, sizeof(why), "cannot connect: %s", strerror(-err));
                connect_failed(s, why);
                return;
            }
            fy_loop_timer_set(&w->loop, &s->timer, s->connect_timeout);
        }
        if (!s->up_start_us)
            s->up_start_us = w->loop.now_us;
    }
    struct fy_upconn *up = s->up;
    if (!up->connected) {
        if (s->timed_out) {
            s->timed_out = false;
            char why[128];
            snprintf(why, sizeof(why), "connect timed out after %llu ms",
                     (unsigned long long)s->connect_timeout);
            connect_failed(s, why);
            return;
        }
        if (!up->sock.wr_ready)
            return;
        int rc = fy_sock_connect_result(&up->sock);
        if (rc < 0) {
            char why[128];
            snprintf(why, sizeof(why), "cannot connect: %s", strerror(-rc));
            connect_failed(s, why);
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
    fy_uh1_begin(up, s->is_head);
    s->state = S_EXCHANGE;
    s->timed_out = false;
    fy_loop_timer_set(&w->loop, &s->timer, s->upstream_timeout);
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

/* The sticky cookie naming the server used, for a client that did not name it. */
static int add_sticky_cookie(struct fy_session *s, struct fy_msg *m)
{
    const char *name = s->group->sticky_cookie;
    size_t n = strlen(name) + 1 + 16 + sizeof("; Path=/; HttpOnly") - 1;
    char *v = scratch_alloc(s, n + 1);
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
    /* Response hooks return CONTINUE or ERROR (waiting on a response arrives with body
     * filters). */
    return run_hooks(s, HP_RESPONSE, m) == FY_HOOK_CONTINUE ? 0 : -1;
}

/* A response head from the upstream. Returns 0 to go on reading, -1 when the session changed
 * state (failed, or became a tunnel). */
static int on_response_head(struct fy_session *s)
{
    struct fy_upconn *up = s->up;
    struct fy_msg *m = &up->rd.msg;
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
        fy_uh1_next_message(up, s->is_head);
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
    bool reusable = s->req_done && s->req_last_queued && fy_uh1_reusable(s->up);
    /* A response that overtook its request body leaves unread body on the client side. */
    finish(s, reusable, s->req_done && s->req_last_queued);
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
        progress = 1;
    }
    for (;;) {
        if (s->resp_last_sent) {
            if (!s->req_done)
                return progress; /* finish sending the request first (pump_request ends it) */
            response_complete(s);
            return -1;
        }
        uint64_t before = fy_uh1_bytes_read(up);
        int err;
        enum fy_uh1_event ev = fy_uh1_next(up, !s->up_write_failed, &err);
        s->got_response_bytes = fy_uh1_got_bytes(up);
        progress |= fy_uh1_bytes_read(up) != before;
        switch (ev) {
        case FY_UH1_AGAIN:
            return progress;
        case FY_UH1_HEAD:
            if (on_response_head(s) < 0)
                return -1;
            progress = 1;
            continue;
        case FY_UH1_BODY: {
            int rc = relay_body(s);
            if (rc < 0)
                return -1;
            if (rc > 0)
                return 1;
            progress = 1;
            continue;
        }
        case FY_UH1_INVALID:
            slog(s, FY_LOG_WARN, "invalid response from the upstream: %s", up->rd.err_text);
            fail_exchange(s, 502, "the upstream server sent an invalid response");
            return -1;
        case FY_UH1_TOO_LARGE:
            slog(s, FY_LOG_WARN, "the upstream sent a response head larger than %u bytes",
                 (unsigned)up->in->cap);
            fail_exchange(s, 502, "the upstream server sent an invalid response");
            return -1;
        case FY_UH1_CLOSED:
            upstream_failed(s, err,
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
            slog(s, FY_LOG_WARN, "the upstream did not answer within %llu ms",
                 (unsigned long long)s->upstream_timeout);
            fail_exchange(s, 504, "the upstream server did not answer in time");
        } else {
            slog(s, FY_LOG_WARN,
                 "the upstream stalled for %llu ms while sending the response "
                 "body; closing the client connection",
                 (unsigned long long)s->upstream_timeout);
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
        fy_loop_timer_set(&s->w->loop, &s->timer, s->upstream_timeout);
}

/* ---- TUNNEL ---- */

static void step_tunnel(struct fy_session *s)
{
    struct fy_upconn *up = s->up;
    struct fy_buf *in = up->in;
    if (s->timed_out) {
        slog(s, FY_LOG_INFO, "tunnel idle for %llu ms; closing it",
             (unsigned long long)s->upstream_timeout);
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
        if (fy_uh1_pending(up)) {
            int rc = fy_uh1_flush(up);
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
                fy_uh1_send_body(up, iov, n, false);
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
    fy_loop_timer_set(&s->w->loop, &s->timer, s->upstream_timeout);
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
    queue_remove(s);
    fy_msg_free(&s->resp);
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
        finish(s, false, false);
    }
    if (s->state == S_ROUTE)
        step_route(s);
    if (s->state == S_RESPOND)
        step_respond(s);
    if (s->state == S_CONNECT)
        step_connect(s);
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

/* ---- the exchange seen by hooks ---- */

char *fy_exchange_alloc(struct fy_exchange *x, size_t n)
{
    return scratch_alloc(container_of(x, struct fy_session, x), n);
}

void fy_exchange_vars(struct fy_exchange *x, struct fy_tctx *out)
{
    template_vars(container_of(x, struct fy_session, x), out);
}

int fy_exchange_respond(struct fy_exchange *x, int status, const char *body)
{
    struct fy_session *s = container_of(x, struct fy_session, x);
    size_t n = body ? strlen(body) : 0;
    char *copy = scratch_alloc(s, n + 1);
    if (!copy)
        return -1;
    memcpy(copy, body ? body : "", n + 1);
    s->hook_status = status;
    s->hook_body = copy;
    s->hook_body_len = (uint32_t)n;
    return 0;
}

void fy_exchange_resume(struct fy_exchange *x)
{
    struct fy_session *s = container_of(x, struct fy_session, x);
    s->hook_waiting = false;
    fy_loop_queue(&s->w->loop, &s->task);
}
