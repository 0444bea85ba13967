/*
 * ROUTE and RESPOND (see session.h, docs/internals/session.md): the request's facts (request id,
 * normalised path, Host), the request hooks, the route match and its action: a redirect or fixed
 * response sent as ferry's own response, or the path rewrite and the upstream_request hooks of a
 * proxied route. Also the template variables and the exchange as hooks see it.
 */
#include "proxy/session_priv.h"

#include <string.h>

#include "core/macros.h"
#include "filters/hdr_rules.h"
#include "http/date.h"
#include "http/h1_writer.h"
#include "http/path.h"
#include "net/addr.h"
#include "net/tls.h"
#include "proxy/worker.h"
/* ---- request head towards the upstream ---- */

/* $tls_*: what TLS says about the client connection, computed on first use. */
struct tls_vars {
    char subject[256], fingerprint[65], verify[128];
    const char *verify_text;
    uint32_t subject_len, fingerprint_len;
};

static const char *sess_tls_var(void *arg, enum fy_tvar var, uint32_t *len)
{
    struct fy_session *s = arg;
    const struct fy_sock *sk = s->client_sock;
    const char *v = NULL;
    if (!s->tls || !sk)
        return NULL;
    bool cert_var = var == FY_TV_TLS_CLIENT_SUBJECT || var == FY_TV_TLS_CLIENT_FINGERPRINT ||
                    var == FY_TV_TLS_CLIENT_VERIFY;
    if (cert_var && !s->tls_vars) {
        struct tls_vars *t = (struct tls_vars *)sess_scratch_alloc(s, sizeof(*t));
        if (!t)
            return NULL;
        t->subject_len = (uint32_t)fy_tls_peer_subject(sk, t->subject, sizeof(t->subject));
        t->fingerprint_len =
            (uint32_t)fy_tls_peer_fingerprint(sk, t->fingerprint, sizeof(t->fingerprint));
        t->verify_text = fy_tls_peer_verify(sk, t->verify, sizeof(t->verify));
        s->tls_vars = t;
    }
    switch (var) {
    case FY_TV_TLS_VERSION:
        v = s->tls_version;
        break;
    case FY_TV_TLS_CIPHER:
        v = s->tls_cipher;
        break;
    case FY_TV_TLS_SERVER_NAME:
        v = fy_tls_server_name(sk);
        break;
    case FY_TV_TLS_CLIENT_SUBJECT:
        *len = s->tls_vars->subject_len;
        return s->tls_vars->subject;
    case FY_TV_TLS_CLIENT_FINGERPRINT:
        *len = s->tls_vars->fingerprint_len;
        return s->tls_vars->fingerprint;
    case FY_TV_TLS_CLIENT_VERIFY:
        v = s->tls_vars->verify_text;
        break;
    default:
        break;
    }
    *len = v ? (uint32_t)strlen(v) : 0;
    return v;
}

/* What the route's templates see of this request. */
void sess_template_vars(struct fy_session *s, struct fy_tctx *v)
{
    memset(v, 0, sizeof(*v));
    v->host = s->host;
    v->host_len = s->host_len;
    v->scheme = s->tls ? "https" : "http";
    v->scheme_len = s->tls ? 5 : 4;
    v->lazy = sess_tls_var;
    v->lazy_arg = s;
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
    sess_template_vars(s, &v);
    char *p = sess_scratch_alloc(s, fy_template_max_len(t, &v) + 1);
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
    char *t = sess_scratch_alloc(s, (size_t)head_len + rest + tail_len + 2 + s->query_len);
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
        sess_template_vars(s, &v);
        v.subject = s->path;
        v.ovector = ov;
        v.ncaptures = (uint32_t)n;
        char *mid = sess_scratch_alloc(s, fy_template_max_len(&rw->replacement, &v) + 1);
        if (!mid)
            return -1;
        uint32_t mid_len = (uint32_t)fy_template_render(&rw->replacement, &v, mid);
        /* head = path before the match + replacement, tail = path after the match */
        uint32_t before = (uint32_t)ov[0], after = (uint32_t)ov[1];
        char *head = sess_scratch_alloc(s, (size_t)before + mid_len + 1);
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
        char *h = sess_scratch_alloc(s, (size_t)wl + 2);
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

enum fy_hook_result sess_run_hooks(struct fy_session *s, enum hook_point p, struct fy_msg *m)
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
            sess_slog(s, FY_LOG_WARN, "the %s hook failed", h->name);
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
        /* ... and without a trailing dot: "a.com." names a.com, as routing takes it */
        if (s->host_len > 1 && s->host[s->host_len - 1] == '.')
            s->host_len--;
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
    char *out = plen <= sizeof(s->path_inline) ? s->path_inline : sess_scratch_alloc(s, plen);
    if (!out)
        return -1;
    int n = fy_path_normalize(m->target, plen, out);
    if (n < 0)
        return -1;
    s->path = out;
    s->path_len = (uint32_t)n;
    return 0;
}

/* A request hook changed the target or Host: the path, query and host again, from the new head.
 * The access log keeps the target as the client sent it. */
static int retarget(struct fy_session *s)
{
    const char *target = s->orig_target;
    uint32_t target_len = s->orig_target_len;
    s->x.retarget = false;
    s->query = NULL;
    s->query_len = 0;
    s->host = NULL;
    s->host_len = 0;
    int rc = request_facts(s);
    s->orig_target = target;
    s->orig_target_len = target_len;
    s->x.orig_host = s->orig_host;
    s->x.orig_host_len = s->orig_host_len;
    if (rc < 0)
        sess_fail_exchange(s, 500, "a hook set an invalid request target");
    return rc;
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

bool sess_has_request_body(const struct fy_msg *m)
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
    /* A hook's answer: its fields first (one of them may be the Content-Type). */
    for (uint32_t i = 0; s->hook_status && i < s->hook_fields.nhdrs; i++) {
        const struct fy_hdr *h = &s->hook_fields.hdrs[i];
        if (!h->removed &&
            fy_msg_add(resp, h->name, h->name_len, h->value, h->value_len, h->tok) < 0)
            goto oom;
    }
    if ((blen || content_type) && !fy_msg_find(resp, "Content-Type", 12)) {
        const char *ct = content_type ? content_type : "text/plain; charset=utf-8";
        if (fy_msg_add(resp, "Content-Type", 12, ct, (uint32_t)strlen(ct), FY_TOK_OTHER) < 0)
            goto oom;
    }
    fy_http_date(s->date);
    if (fy_msg_add(resp, "Date", 4, s->date, (uint32_t)strlen(s->date), FY_TOK_OTHER) < 0)
        goto oom;
    if (extra) {
        struct fy_tctx v;
        sess_template_vars(s, &v);
        if (fy_hrules_apply(extra, resp, &v, sess_scratch_fn, s) < 0)
            goto oom;
    }
    if (sess_run_hooks(s, HP_RESPONSE, resp) != FY_HOOK_CONTINUE)
        goto oom;
    status = resp->status;
    if (status < 200 || status == 204 || status == 304) {
        /* No content, and no Content-Length: a 204 must not carry one (RFC 9110 8.6), and a
         * 304's would describe the representation, not this empty message. */
        blen = 0;
        resp->content_length = 0;
    } else {
        resp->content_length = blen;
        size_t dl = fy_u64_to_dec(blen, s->clen);
        if (fy_msg_add(resp, "Content-Length", 14, s->clen, (uint32_t)dl, FY_TOK_CONTENT_LENGTH) <
            0)
            goto oom;
    }
    s->status = status;
    sess_capture_response(s, resp);
    int rc = s->ops->send_head(s->ds, resp);
    if (rc < 0) {
        if (rc == -ENOSPC) {
            sess_fail_exchange(s, 500, "the configured response does not fit a response head");
            return;
        }
        sess_client_failed(s, 0);
        return;
    }
    s->head_sent = true;
    struct iovec iov = {(void *)body, s->is_head ? 0 : blen};
    s->bytes_out += iov.iov_len;
    sess_capture_resp_body(s, &iov, 1);
    rc = s->ops->send_body(s->ds, &iov, iov.iov_len ? 1 : 0, true);
    if (rc < 0 && rc != FY_AGAIN) {
        sess_client_failed(s, 0);
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
    sess_fail_exchange(s, 500, "out of memory");
}

/* A redirect or fixed-response route. */
/* A location written as a path on this site ("/go/$1": one '/', then not a second one) that
 * renders to "//evil.example" or "/\\evil.example" would be a network-path reference to another
 * host (browsers read '\\' as '/'): a capture or variable from the request made it so. Its run
 * of leading slashes becomes one. A location written as "//host/..." is left alone. */
static void local_redirect_stays_local(const struct fy_template *t, char *p, uint32_t *len)
{
    const char *src = t->source;
    if (t->constant || !src || src[0] != '/' || src[1] == '/' || src[1] == '\\')
        return;
    uint32_t n = *len, i = 1;
    while (i < n && (p[i] == '/' || p[i] == '\\'))
        i++;
    if (i == 1)
        return;
    memmove(p + 1, p + i, n - i);
    *len = n - (i - 1);
}

static void start_respond(struct fy_session *s)
{
    const struct fy_route *r = s->route;
    const char *body = "", *loc = NULL;
    uint32_t blen = 0, llen = 0;
    if (r->action == FY_ACT_REDIRECT) {
        if (render(s, &r->location, &loc, &llen) < 0) {
            sess_fail_exchange(s, 500, "out of memory");
            return;
        }
        if (!r->location.constant) {
            local_redirect_stays_local(&r->location, (char *)loc, &llen);
            fy_field_value_sanitize((char *)loc, llen);
        }
    } else if (render(s, &r->body, &body, &blen) < 0) {
        sess_fail_exchange(s, 500, "out of memory");
        return;
    }
    const char *ct = r->action == FY_ACT_RESPOND && !r->content_type ? "text/plain; charset=utf-8"
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
        if (!s->flow && !s->route)
            sess_capture_begin(s); /* answered before routing: the listener's capture */
        if (s->hook_status)
            send_own_response(s, s->hook_status, s->hook_body, s->hook_body_len, NULL, 0, NULL,
                              NULL);
        else
            sess_fail_exchange(s, 500, "a hook ended the exchange without a response");
        return false;
    case FY_HOOK_ERROR:
        break;
    }
    sess_fail_exchange(s, 500, "internal error in a request hook");
    return false;
}

void sess_step_respond(struct fy_session *s)
{
    if (s->ds_blocked)
        return; /* fy_session_output_flushed() wakes us */
    s->resp_spans_out = false;
    /* The request body (if any) was never read: the connection cannot carry another request. */
    sess_finish(s, false, !sess_has_request_body(&s->req));
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
    x->tls = s->tls;
    x->client_sock = s->client_sock;
    x->listener = s->listener;
    x->req = &s->req;
    x->n_accept_encoding = 0;
    for (uint32_t i = 0; i < s->req.nhdrs && x->n_accept_encoding < FY_MAX_ACCEPT_ENCODING; i++) {
        const struct fy_hdr *h = &s->req.hdrs[i];
        if (!h->removed && h->name_len == 15 && strncasecmp(h->name, "Accept-Encoding", 15) == 0) {
            x->accept_encoding[x->n_accept_encoding].value = h->value;
            x->accept_encoding[x->n_accept_encoding++].len = h->value_len;
        }
    }
    x->gen_data = s->gen->hook_gen;
}

/* Matches the route and starts its action. Returns true for a proxied route. */
static bool route_request(struct fy_session *s)
{
    struct fy_route_req rq = {.path = s->path,
                              .path_len = s->path_len,
                              .msg = &s->req,
                              .query = s->query,
                              .query_len = s->query_len};
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
        sess_slog(s, FY_LOG_INFO, "no route matches");
        sess_fail_exchange(s, 404, "no route matches this request");
        return false;
    }
    s->route = s->match.route;
    sess_capture_begin(s);
    apply_route_limits(s);
    uint64_t limit = body_limit(s);
    if (limit && s->req.content_length > 0 && (uint64_t)s->req.content_length > limit) {
        sess_fail_exchange(s, 413, "request body too large");
        return false;
    }
    if (sess_has_request_body(&s->req))
        s->ops->limit_body(s->ds, limit);
    if (s->route->action == FY_ACT_FORWARD) {
        if (!sess_forward_route(s))
            return false;
        if (s->fwd.connect)
            return true; /* no request goes to the destination: a tunnel does */
    } else if (s->route->action != FY_ACT_PROXY) {
        start_respond(s);
        return false;
    }
    s->group = s->route->group;
    if (prepare_request(s) < 0) {
        sess_fail_exchange(s, 500, "out of memory");
        return false;
    }
    return true;
}

/*
 * ROUTE, in three steps a WAITing hook can pause between: the request hooks (before routing),
 * routing and the route's action, then the upstream_request hooks (before a server is picked).
 */
void sess_step_route(struct fy_session *s)
{
    if (s->hook_waiting)
        return; /* fy_exchange_resume() clears it */
    if (s->route_step == RS_START) {
        fy_worker_count_request(s->w);
        take_request_id(s);
        if (request_facts(s) < 0) {
            sess_slog(s, FY_LOG_INFO,
                      "rejected with 400: invalid request target (malformed percent-encoding)");
            sess_fail_exchange(s, 400, "invalid request target (malformed percent-encoding)");
            return;
        }
        fill_exchange(s);
        if (sess_has_request_body(&s->req))
            s->x.request_body_filters = &s->rbf;
        s->route_step = RS_REQUEST_HOOKS;
    }
    if (s->route_step == RS_REQUEST_HOOKS) {
        if (!hooks_done(s, sess_run_hooks(s, HP_REQUEST, &s->req)))
            return;
        if (s->x.retarget && retarget(s) < 0)
            return;
        if (!route_request(s))
            return;
        s->route_step = RS_UPSTREAM_HOOKS;
    }
    if (!hooks_done(s, sess_run_hooks(s, HP_UPSTREAM_REQUEST, &s->req)))
        return;
    s->x.request_body_filters = NULL;
    sess_rbf_frame(s);
    s->state = S_CONNECT;
}

/* ---- the exchange seen by hooks ---- */

char *fy_exchange_alloc(struct fy_exchange *x, size_t n)
{
    return sess_scratch_alloc(container_of(x, struct fy_session, x), n);
}

void fy_exchange_vars(struct fy_exchange *x, struct fy_tctx *out)
{
    sess_template_vars(container_of(x, struct fy_session, x), out);
}

int fy_exchange_respond(struct fy_exchange *x, int status, const char *body)
{
    struct fy_session *s = container_of(x, struct fy_session, x);
    size_t n = body ? strlen(body) : 0;
    char *copy = sess_scratch_alloc(s, n + 1);
    if (!copy)
        return -1;
    memcpy(copy, body ? body : "", n + 1);
    s->hook_status = status;
    s->hook_body = copy;
    s->hook_body_len = (uint32_t)n;
    return 0;
}

struct fy_msg *fy_exchange_respond_with(struct fy_exchange *x, int status, const char *body,
                                        size_t len)
{
    struct fy_session *s = container_of(x, struct fy_session, x);
    char *copy = sess_scratch_alloc(s, len + 1);
    if (!copy)
        return NULL;
    if (len)
        memcpy(copy, body, len);
    copy[len] = '\0';
    s->hook_status = status;
    s->hook_body = copy;
    s->hook_body_len = (uint32_t)len;
    fy_msg_reset(&s->hook_fields);
    return &s->hook_fields;
}

void fy_exchange_resume(struct fy_exchange *x)
{
    struct fy_session *s = container_of(x, struct fy_session, x);
    s->hook_waiting = false;
    fy_loop_queue(&s->w->loop, &s->task);
}
