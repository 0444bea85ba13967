/*
 * Lua hooks (lua: on a listener or a route, quick --lua; docs/lua.md): the script's on_request,
 * on_response and on_log on the session's hook points, and resp:filter_body() as a body filter.
 *
 * States: each worker keeps one Lua state per script and generation (gen_open, at startup and
 * on each reload, so a reload's new script serves the new exchanges while the old one finishes
 * its own); a state is only ever used by its worker's thread.
 *
 * Which script: a route's replaces its listener's. The listener's on_request runs before
 * routing (it may change the path or Host, and so the route); when the matched route has its
 * own script, that one's on_request runs next, and its on_response and on_log are the ones that
 * run. A route's script needs an upstream: ferry's own answers have no response body to filter.
 *
 * Body filters: resp:filter_body(fn) makes the chain decode the upstream's body (gzip, deflate,
 * br, zstd; bounded by max-decoded-size and max-ratio), run fn on each decoded chunk, and, when
 * the upstream's body was encoded, encode what fn returns for the client (its Accept-Encoding
 * against the route's or listener's compress: preference, else the default one). A body the
 * client gets unencoded may still be compressed by compress:, which runs after this hook.
 *
 * Errors: a script's error, or a budget or memory overrun, is logged with the script's FILE:LINE.
 * With on-error: fail (the default) the exchange fails with 500, or, once the head was sent, the
 * client connection is closed; with on-error: pass the exchange goes on as if the hook had not
 * run (a failing body filter passes the rest of the body through unchanged).
 */
#include "filters/lua_hook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "filters/accept_encoding.h"
#include "filters/codec.h"
#include "filters/codec_filter.h"
#include "filters/compress.h"
#include "lua/lua_exchange.h"
#include "lua/lua_vm.h"
#include "net/addr.h"

/* ---- states, per worker and generation ---- */

struct lua_gen {
    uint32_t n;
    struct fy_lua *vm[]; /* by the script's slot; NULL when it could not be opened */
};

static void open_script(struct lua_gen *g, const struct fy_lua_conf *lc)
{
    if (!lc || lc->slot >= g->n)
        return;
    struct fy_lua_limits lim = {.instructions = lc->max_instructions,
                                .memory = (size_t)lc->max_memory};
    char err[512];
    g->vm[lc->slot] = fy_lua_open(lc->file, &lim, err, sizeof(err));
    if (!g->vm[lc->slot])
        fy_error("lua: %s (the script of %s); its exchanges fail", err, lc->where);
}

static void *lua_gen_open(const struct fy_conf *c)
{
    if (!c->nlua)
        return NULL;
    struct lua_gen *g = calloc(1, sizeof(*g) + c->nlua * sizeof(g->vm[0]));
    if (!g) {
        fy_error("lua: out of memory for the scripts' states");
        return NULL;
    }
    g->n = c->nlua;
    for (uint32_t i = 0; i < c->nlisteners; i++) {
        const struct fy_listener_conf *l = &c->listeners[i];
        open_script(g, l->lua);
        for (uint32_t r = 0; r < l->nroutes; r++)
            open_script(g, l->routes[r].lua);
    }
    return g;
}

static void lua_gen_close(void *data)
{
    struct lua_gen *g = data;
    for (uint32_t i = 0; i < g->n; i++)
        fy_lua_close(g->vm[i]);
    free(g);
}

/* ---- one exchange ---- */

struct lua_xch {
    const struct fy_lua_conf *conf;
    struct fy_lua *vm;
    struct fy_lua_x lx;
    struct fy_lua_xview view;
};

static unsigned hook_slot(void)
{
    return fy_hook_index(&fy_lua_hook);
}

static struct lua_xch *xch_of(struct fy_exchange *x)
{
    return x->data[hook_slot()];
}

static void xch_release(struct fy_exchange *x)
{
    struct lua_xch *e = xch_of(x);
    if (e && e->vm)
        fy_lua_x_release(e->vm, &e->lx);
    x->data[hook_slot()] = NULL;
}

static char *scratch(void *ctx, size_t n)
{
    return fy_exchange_alloc(ctx, n);
}

/* The request as the script sees it: the fields point into the request head. */
static void fill_view(struct lua_xch *e, struct fy_exchange *x, struct fy_msg *m)
{
    struct fy_lua_xview *v = &e->view;
    v->method = m->method;
    v->method_len = m->method_len;
    v->path = m->target;
    v->path_len = m->target_len;
    v->scheme = x->tls ? "https" : "http";
    v->scheme_len = x->tls ? 5 : 4;
    v->host = x->orig_host ? x->orig_host : "";
    v->host_len = x->orig_host ? x->orig_host_len : 0;
    /* The name without the port, as nginx's $host: "a.com:8080" -> "a.com", "[::1]:80" -> "[::1]".
     */
    for (uint32_t i = v->host_len; i > 0; i--) {
        char c = v->host[i - 1];
        if (c == ':') {
            v->host_len = i - 1;
            break;
        }
        if (c == ']' || c == '.')
            break;
    }
    v->client_ip = x->client_ip;
    v->client_ip_len = x->client_ip_len;
    v->req = m;
    v->alloc = scratch;
    v->alloc_ctx = x;
}

/* Starts the exchange on script lc (the listener's, or the route's replacing it). NULL: none
 * (the state could not be opened, or out of memory): *failed says whether that fails the
 * exchange. */
static struct lua_xch *xch_start(struct fy_exchange *x, const struct fy_lua_conf *lc,
                                 struct fy_msg *m, bool *failed)
{
    xch_release(x);
    *failed = false;
    const struct lua_gen *g = x->gen_data ? x->gen_data[hook_slot()] : NULL;
    struct fy_lua *vm = g && lc->slot < g->n ? g->vm[lc->slot] : NULL;
    struct lua_xch *e = vm ? (struct lua_xch *)fy_exchange_alloc(x, sizeof(*e)) : NULL;
    if (!e) {
        *failed = !lc->on_error_pass;
        return NULL;
    }
    memset(e, 0, sizeof(*e));
    e->conf = lc;
    e->vm = vm;
    fy_lua_x_init(&e->lx);
    fill_view(e, x, m);
    x->data[hook_slot()] = e;
    return e;
}

/* A script error: logged with its FILE:LINE; the hook's result per on-error. */
static enum fy_hook_result script_failed(struct fy_exchange *x, struct lua_xch *e, const char *hook)
{
    fy_warn("lua: %s: %s (client %s, request %s; on-error: %s)", hook, e->lx.err, x->client_ip,
            x->request_id ? x->request_id : "-", e->conf->on_error_pass ? "pass" : "fail");
    return e->conf->on_error_pass ? FY_HOOK_CONTINUE : FY_HOOK_ERROR;
}

static struct fy_bfilter *lua_filter_new(struct fy_exchange *x, struct lua_xch *e, bool request);

static enum fy_hook_result run_on_request(struct fy_exchange *x, struct lua_xch *e,
                                          struct fy_msg *m)
{
    switch (fy_lua_on_request(e->vm, &e->lx, &e->view)) {
    case FY_LUA_ERROR:
        return script_failed(x, e, "on_request");
    case FY_LUA_RESPONDED: {
        struct fy_msg *f = fy_exchange_respond_with(x, e->lx.respond_status, e->lx.respond_body,
                                                    e->lx.respond_body_len);
        if (!f || fy_lua_respond_fields(e->vm, &e->lx, &e->view, f) < 0)
            return FY_HOOK_ERROR;
        return FY_HOOK_DONE;
    }
    case FY_LUA_CONTINUE:
        break;
    }
    if (e->lx.method_changed) {
        m->method = e->view.method;
        m->method_len = e->view.method_len;
    }
    if (e->lx.path_changed) {
        m->target = e->view.path;
        m->target_len = e->view.path_len;
        x->retarget = true;
    }
    if (e->lx.host_changed) {
        if (fy_msg_set_tok(m, FY_TOK_HOST, "Host", 4, e->view.host, e->view.host_len) < 0)
            return FY_HOOK_ERROR;
        x->retarget = true;
    }
    /* req:filter_body(): the request body as it was sent (a request's Content-Encoding is not
     * undone), through the script on its way upstream. Only once: a route's script that takes
     * over does not stack a second filter on the listener's. */
    if (fy_lua_wants_request_body(&e->lx) && x->request_body_filters &&
        !fy_bf_chain_active(x->request_body_filters)) {
        struct fy_bfilter *rf = lua_filter_new(x, e, true);
        if (!rf || fy_bf_chain_add(x->request_body_filters, rf) < 0)
            return FY_HOOK_ERROR;
    }
    return FY_HOOK_CONTINUE;
}

/* Before routing: the listener's script. */
static enum fy_hook_result lua_request(struct fy_exchange *x, struct fy_msg *m)
{
    const struct fy_lua_conf *lc = x->listener ? x->listener->lua : NULL;
    if (!lc)
        return FY_HOOK_CONTINUE;
    bool failed;
    struct lua_xch *e = xch_start(x, lc, m, &failed);
    if (!e)
        return failed ? FY_HOOK_ERROR : FY_HOOK_CONTINUE;
    return run_on_request(x, e, m);
}

/* After routing: a route's own script takes over. */
static enum fy_hook_result lua_upstream_request(struct fy_exchange *x, struct fy_msg *m)
{
    const struct fy_lua_conf *lc = x->route ? x->route->lua : NULL;
    if (!lc)
        return FY_HOOK_CONTINUE;
    struct lua_xch *cur = xch_of(x);
    if (cur && cur->conf == lc)
        return FY_HOOK_CONTINUE;
    bool failed;
    struct lua_xch *e = xch_start(x, lc, m, &failed);
    if (!e)
        return failed ? FY_HOOK_ERROR : FY_HOOK_CONTINUE;
    return run_on_request(x, e, m);
}

/* ---- the body filter: decoded chunks through the script's function ---- */

struct lua_filter {
    struct fy_bfilter f;
    struct lua_xch *e;
    struct fy_exchange *x;
    bool request;     /* req:filter_body()'s function, else resp:filter_body()'s */
    const char *pend; /* what the function returned, not yet passed on (the script's memory,
                       * valid until the next call) */
    size_t pend_len;
    bool called_last; /* the function got last = true */
    bool passing;     /* it failed with on-error: pass: the rest goes through unchanged */
};

/* Copies pend into the output buffer, passing it on as it fills. */
static int drain_pending(struct lua_filter *lf)
{
    while (lf->pend_len) {
        size_t avail;
        uint8_t *o = fy_bf_space(&lf->f, &avail);
        if (!avail) {
            int rc = fy_bf_pass(&lf->f, 0);
            if (rc)
                return rc;
            continue;
        }
        size_t k = lf->pend_len < avail ? lf->pend_len : avail;
        memcpy(o, lf->pend, k);
        fy_bf_produced(&lf->f, k);
        lf->pend += k;
        lf->pend_len -= k;
    }
    return 0;
}

static int lua_filter_push(struct fy_bfilter *f, const uint8_t **in, size_t *len, unsigned flags)
{
    struct lua_filter *lf = (struct lua_filter *)f;
    for (;;) {
        int rc = drain_pending(lf);
        if (rc)
            return rc;
        if (lf->called_last || (*len == 0 && !(flags & FY_BF_END)))
            return fy_bf_pass(f, lf->called_last ? flags : flags & FY_BF_FLUSH);
        bool last = (flags & FY_BF_END) != 0;
        const char *chunk = (const char *)*in;
        size_t n = *len;
        *in += n;
        *len = 0;
        if (lf->passing) {
            lf->pend = chunk;
            lf->pend_len = n;
            lf->called_last = last;
            continue;
        }
        const char *out;
        size_t out_len;
        enum fy_lua_rc lrc =
            lf->request
                ? fy_lua_filter_request(lf->e->vm, &lf->e->lx, chunk, n, last, &out, &out_len)
                : fy_lua_filter(lf->e->vm, &lf->e->lx, chunk, n, last, &out, &out_len);
        if (lrc == FY_LUA_ERROR) {
            fy_warn("lua: %s body filter: %s (client %s, request %s; on-error: %s)",
                    lf->request ? "request" : "response", lf->e->lx.err, lf->x->client_ip,
                    lf->x->request_id ? lf->x->request_id : "-",
                    lf->e->conf->on_error_pass ? "pass" : "fail");
            if (!lf->e->conf->on_error_pass) {
                if (!f->chain->err_status)
                    f->chain->err_status = 500; /* the script's fault, not the upstream's */
                return fy_bf_fail(f, "%s", lf->e->lx.err);
            }
            lf->passing = true;
            out = chunk;
            out_len = n;
        }
        lf->pend = out;
        lf->pend_len = out_len;
        lf->called_last = last;
    }
}

static const struct fy_bf_ops lua_filter_ops = {"lua body filter", lua_filter_push, NULL};

static struct fy_bfilter *lua_filter_new(struct fy_exchange *x, struct lua_xch *e, bool request)
{
    struct lua_filter *lf = calloc(1, sizeof(*lf));
    if (!lf)
        return NULL;
    lf->f.ops = &lua_filter_ops;
    lf->f.name = request ? "lua request body filter" : "lua response body filter";
    lf->e = e;
    lf->x = x;
    lf->request = request;
    return &lf->f;
}

/* The coding the client gets for a re-encoded body, as compress: would pick it. */
static enum fy_coding client_coding(struct fy_exchange *x, uint8_t *level)
{
    static const uint8_t default_prefer[] = {FY_CODING_ZSTD, FY_CODING_BR, FY_CODING_GZIP};
    const struct fy_compress_conf *cc = x->route && x->route->compress ? x->route->compress
                                        : x->listener                  ? x->listener->compress
                                                                       : NULL;
    const uint8_t *prefer = default_prefer;
    int n = 3;
    if (cc && cc->on) {
        prefer = cc->prefer;
        n = cc->nprefer;
    }
    unsigned enabled = 0;
    for (int i = 0; i < n; i++)
        enabled |= 1u << prefer[i];
    struct fy_accept_enc ae;
    fy_compress_client_ae(x, &ae);
    enum fy_coding c = fy_ae_pick(&ae, enabled, prefer, n);
    static const uint8_t default_level[FY_CODING_COUNT] = {0, 6, 6, 4, 3};
    *level = cc && cc->on && cc->level[c] ? cc->level[c] : default_level[c];
    return c;
}

/* The chain for a body the script filters: decoder, the script, encoder. Returns 0, 1 when the
 * body cannot be filtered (it goes out as it is), or -1 (out of memory). */
static int add_body_filters(struct fy_exchange *x, struct lua_xch *e, struct fy_msg *m)
{
    if (m->status == 206) {
        /* A part of the representation (of its encoded bytes, when it has a coding): it cannot
         * be decoded alone, and a changed length would no longer match its Content-Range. */
        fy_debug("lua: %s: a 206 (partial content) is not filtered (client %s, request %s)",
                 e->conf->where, x->client_ip, x->request_id ? x->request_id : "-");
        return 1;
    }
    int coding = fy_content_coding(m);
    if (coding < 0) {
        fy_warn("lua: %s: the response's Content-Encoding cannot be decoded; its body is not "
                "filtered (client %s, request %s)",
                e->conf->where, x->client_ip, x->request_id ? x->request_id : "-");
        return 1;
    }
    struct fy_bf_chain *c = x->body_filters;
    if (coding != FY_CODING_IDENTITY) {
        struct fy_bfilter *dec =
            fy_decode_filter_new((enum fy_coding)coding, e->conf->max_decoded, e->conf->max_ratio);
        if (!dec || fy_bf_chain_add(c, dec) < 0)
            return -1;
    }
    struct fy_bfilter *lf = lua_filter_new(x, e, false);
    if (!lf || fy_bf_chain_add(c, lf) < 0)
        return -1;
    if (coding != FY_CODING_IDENTITY) {
        /* Encoded by the upstream: encoded again, as the client accepts it. */
        fy_msg_remove(m, "Content-Encoding", 16);
        uint8_t level;
        enum fy_coding out = client_coding(x, &level);
        if (out != FY_CODING_IDENTITY) {
            struct fy_bfilter *enc = fy_encode_filter_new(out, level);
            if (!enc || fy_bf_chain_add(c, enc) < 0)
                return -1;
            const char *name = fy_coding_name(out);
            if (fy_msg_add(m, "Content-Encoding", 16, name, (uint32_t)strlen(name), FY_TOK_OTHER) <
                0)
                return -1;
        }
        if (fy_compress_vary(m) < 0)
            return -1;
    }
    /* The bytes differ from the upstream's: its strong validator and byte ranges no longer
     * describe them. */
    struct fy_hdr *etag = fy_msg_find(m, "ETag", 4);
    if (etag && etag->value_len && etag->value[0] == '"') {
        char *w = fy_exchange_alloc(x, etag->value_len + 2);
        if (!w)
            return -1;
        memcpy(w, "W/", 2);
        memcpy(w + 2, etag->value, etag->value_len);
        etag->value = w;
        etag->value_len += 2;
    }
    fy_msg_remove(m, "Accept-Ranges", 13);
    return 0;
}

static enum fy_hook_result lua_response(struct fy_exchange *x, struct fy_msg *m)
{
    struct lua_xch *e = xch_of(x);
    if (!e || e->lx.responded)
        return FY_HOOK_CONTINUE; /* no script, or its own answer */
    e->view.resp = m;
    if (fy_lua_on_response(e->vm, &e->lx, &e->view) == FY_LUA_ERROR)
        return script_failed(x, e, "on_response");
    if (!fy_lua_wants_body(&e->lx) || !x->body_filters)
        return FY_HOOK_CONTINUE; /* no body for this client (HEAD, 204, 304, ferry's own) */
    return add_body_filters(x, e, m) < 0 ? FY_HOOK_ERROR : FY_HOOK_CONTINUE;
}

static void lua_log(struct fy_exchange *x, const struct fy_exchange_log *in)
{
    struct lua_xch *e = xch_of(x);
    if (!e)
        return;
    char upstream[64];
    if (in->upstream && fy_addr_format(in->upstream, upstream, sizeof(upstream)) == 0)
        upstream[0] = '\0';
    struct fy_lua_log_info info = {
        .status = in->status,
        .duration_us = in->duration_us,
        .upstream_connect_us = in->upstream_connect_us,
        .upstream_first_byte_us = in->upstream_first_byte_us,
        .bytes_in = in->bytes_in,
        .bytes_out = in->bytes_out,
        .upstream = in->upstream && upstream[0] ? upstream : NULL,
        .tls_version = in->tls_version,
        .tls_sni = in->tls_sni,
        .request_id = in->request_id,
        .route = in->route,
    };
    /* The script reads the heads only (on_log changes nothing). */
    e->view.resp = (struct fy_msg *)in->resp;
    fy_lua_on_log(e->vm, &e->lx, &e->view, &info);
    xch_release(x);
}

const struct fy_hook fy_lua_hook = {
    .name = "lua",
    .request = lua_request,
    .upstream_request = lua_upstream_request,
    .response = lua_response,
    .log = lua_log,
    .gen_open = lua_gen_open,
    .gen_close = lua_gen_close,
};
