/*
 * Configuration generations: building one from parsed settings, and its reference count. See
 * conf.h for the lifetime rules.
 */
#include "conf/conf.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conf/forward.h"
#include "conf/schema.h"
#include "conf/template.h"
#include "core/log.h"
#include "net/addr.h"
#include "net/tls.h"
#include "proxy/lb.h"
#include "proxy/router.h"

uint64_t fy_conf_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct fy_conf *fy_conf_ref(struct fy_conf *c)
{
    __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
    return c;
}

static void state_unref(struct fy_server_state *st)
{
    if (st && __atomic_sub_fetch(&st->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(st);
}

static int quick_rules(struct fy_hrules *out, const struct fy_header_rules *in);

static void hrules_free(struct fy_hrules *r)
{
    for (uint32_t i = 0; i < r->n; i++) {
        free(r->items[i].name);
        fy_template_free(&r->items[i].value);
    }
    free(r->items);
    memset(r, 0, sizeof(*r));
}

/* Frees what fy_conf_build added to the parsed settings (indexes, shared state); the parsed
 * structures themselves go with fy_config_free(). */
static void conf_free(struct fy_conf *c)
{
    for (uint32_t i = 0; i < c->nlisteners; i++) {
        fy_router_free(c->listeners[i].router);
        c->listeners[i].router = NULL;
    }
    for (uint32_t g = 0; g < c->ngroups; g++) {
        struct fy_group *grp = &c->groups[g];
        fy_lb_shared_free(grp->lb);
        grp->lb = NULL;
        for (uint32_t i = 0; i < grp->nservers; i++) {
            state_unref(grp->servers[i].state);
            grp->servers[i].state = NULL;
        }
    }
    fy_config_free(&c->settings);
    hrules_free(&c->global_request_rules);
    hrules_free(&c->global_response_rules);
    free(c);
}

void fy_conf_unref(struct fy_conf *c)
{
    if (c && __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
        conf_free(c);
}

struct fy_group *fy_conf_group(const struct fy_conf *c, const char *name)
{
    for (uint32_t i = 0; i < c->ngroups; i++)
        if (!strcmp(c->groups[i].name, name))
            return &c->groups[i];
    return NULL;
}

/* A template that is one fixed text (already expanded: never scanned for variables). */
static int template_literal(struct fy_template *t, const char *text)
{
    memset(t, 0, sizeof(*t));
    size_t len = strlen(text);
    t->block = strdup(text);
    t->source = strdup(text);
    t->segs = calloc(1, sizeof(*t->segs));
    if (!t->block || !t->source || !t->segs)
        return -1;
    t->nsegs = 1;
    t->segs[0] = (struct fy_tseg){.var = FY_TV_LITERAL, .len = (uint32_t)len, .text = t->block};
    t->constant = t->block;
    t->constant_len = (uint32_t)len;
    return 0;
}

/* Quick-mode header rules (--set-header, --remove-header...) as route rules, in the same order. */
static int quick_rules(struct fy_hrules *out, const struct fy_header_rules *in)
{
    memset(out, 0, sizeof(*out));
    if (!in->n)
        return 0;
    out->items = calloc(in->n, sizeof(*out->items));
    if (!out->items)
        return -1;
    for (uint32_t i = 0; i < in->n; i++) {
        const struct fy_header_rule *r = &in->items[i];
        struct fy_hrule *h = &out->items[out->n++];
        h->op = r->value ? FY_RULE_SET : FY_RULE_REMOVE;
        h->name = strndup(r->name, r->name_len);
        if (!h->name)
            return -1;
        h->name_len = r->name_len;
        h->tok = fy_token_lookup(r->name, r->name_len);
        if (h->tok != FY_TOK_OTHER)
            out->mask |= fy_tokmask_bit(h->tok);
        if (r->value && template_literal(&h->value, r->value) < 0)
            return -1;
    }
    return 0;
}

/*
 * Quick mode (--listen, --upstream and the flags) compiles into the file's shape: one listener,
 * one route that matches everything, one group "default" of one server. Passive ejection is off:
 * taking the only server out would turn a hiccup into 503s for everyone. The TLS contexts were
 * built by fy_args_parse() (so -t checks the certificates) and move to the listener and group.
 */
/* Quick mode's forward proxy: one listener, its forward settings (compiled by fy_args_parse()),
 * and the forwarding route with the command line's header rules. */
static int build_quick_forward(struct fy_config *s)
{
    struct fy_listener_conf *l = calloc(1, sizeof(*l));
    s->listeners = l;
    if (!l)
        return -1;
    s->nlisteners = 1;
    l->forward = s->quick_forward;
    s->quick_forward = NULL;
    if (!l->forward) { /* settings made without fy_args_parse() */
        char err[256];
        if (fy_conf_quick_forward(s, err, sizeof(err)) != FY_ARGS_OK)
            return -1;
        l->forward = s->quick_forward;
        s->quick_forward = NULL;
    }
    l->addrs = calloc(1, sizeof(*l->addrs));
    l->addr_texts = calloc(1, sizeof(*l->addr_texts));
    l->where = strdup("command line");
    if (!l->addrs || !l->addr_texts || !l->where)
        return -1;
    l->naddrs = 1;
    l->tls = s->quick_tls;
    s->quick_tls = NULL;
    l->addrs[0] = s->listen;
    if (!(l->addr_texts[0] = strdup(s->listen_text)) || fy_forward_add_route(l) < 0)
        return -1;
    struct fy_route *r = &l->routes[0];
    return quick_rules(&r->request_rules, &s->request_rules) < 0 ||
                   quick_rules(&r->response_rules, &s->response_rules) < 0
               ? -1
               : 0;
}

/* --capture FILE: every exchange, bodies up to 1 MiB, nothing redacted; --compress: compress:
 * with its defaults. */
static int quick_capture(struct fy_config *s, struct fy_listener_conf *l, char *err, size_t errlen)
{
    if (s->compress && !(l->compress = fy_compress_conf_default()))
        return -1;
    if (s->lua && !(l->lua = fy_lua_conf_new(s->lua, "--lua", err, errlen)))
        return -1;
    if (!s->capture)
        return 0;
    l->capture = fy_conf_capture_open(s->capture, 1024 * 1024, NULL, 0, err, errlen);
    return l->capture ? 0 : -1;
}

static int build_quick(struct fy_config *s, char *err, size_t errlen)
{
    if (s->forward)
        return build_quick_forward(s) < 0 ? -1 : quick_capture(s, s->listeners, err, errlen);
    struct fy_listener_conf *l = calloc(1, sizeof(*l));
    struct fy_group *g = calloc(1, sizeof(*g));
    s->listeners = l;
    s->groups = g;
    if (!l || !g)
        return -1;
    s->nlisteners = 1;
    s->ngroups = 1;
    g->name = strdup("default");
    g->where = strdup("command line");
    g->servers = calloc(1, sizeof(*g->servers));
    if (!g->name || !g->where || !g->servers)
        return -1;
    g->nservers = g->nprimary = 1;
    g->balance = FY_LB_ROUND_ROBIN;
    g->retries = 0;
    g->max_queue = 100;
    g->queue_timeout = 5000;
    struct fy_server *sv = &g->servers[0];
    sv->url = strdup(s->upstream_text);
    sv->authority = strdup(s->upstream_authority);
    sv->host = strdup(s->upstream_authority);
    if (!sv->url || !sv->authority || !sv->host)
        return -1;
    char *colon = strrchr(sv->host, ':');
    if (colon && !strchr(colon, ']'))
        *colon = '\0';
    sv->port = fy_addr_port((const struct sockaddr *)&s->upstream.ss);
    sv->addr = s->upstream;
    sv->addrs = malloc(sizeof(*sv->addrs));
    if (!sv->addrs)
        return -1;
    sv->addrs[0] = s->upstream;
    sv->naddrs = 1;
    sv->weight = 1;
    sv->group = g;
    if (!strncmp(sv->url, "https://", 8)) {
        g->tls = s->quick_upstream_tls;
        s->quick_upstream_tls = NULL;
        if (!g->tls) { /* settings made without fy_args_parse(): the defaults */
            char err[256];
            struct fy_tls_client_opts o = {.ca = s->upstream_ca,
                                           .insecure_skip_verify = s->insecure_skip_verify};
            if (fy_conf_tls_init(err, sizeof(err)) < 0 ||
                !(g->tls = fy_tls_client_new(&o, err, sizeof(err))))
                return -1;
        }
        sv->tls = g->tls;
        /* The name the certificate must have: the host, without an IPv6 address's brackets. */
        size_t hl = strlen(sv->host);
        sv->tls_name =
            sv->host[0] == '[' && hl >= 2 ? strndup(sv->host + 1, hl - 2) : strdup(sv->host);
        if (!sv->tls_name)
            return -1;
    }

    l->addrs = calloc(1, sizeof(*l->addrs));
    l->addr_texts = calloc(1, sizeof(*l->addr_texts));
    l->routes = calloc(1, sizeof(*l->routes));
    l->where = strdup("command line");
    if (!l->addrs || !l->addr_texts || !l->routes || !l->where)
        return -1;
    l->naddrs = 1;
    l->tls = s->quick_tls;
    s->quick_tls = NULL;
    l->addrs[0] = s->listen;
    l->addr_texts[0] = strdup(s->listen_text);
    l->nroutes = 1;
    struct fy_route *r = &l->routes[0];
    r->where = strdup("command line");
    if (!l->addr_texts[0] || !r->where)
        return -1;
    r->action = FY_ACT_PROXY;
    r->group = g;
    r->host_mode = s->host_mode;
    if (s->host_mode == FY_HOST_VALUE && template_literal(&r->host_value, s->host_value) < 0)
        return -1;
    r->limits.abort_on_client_close = -1;
    if (quick_rules(&r->request_rules, &s->request_rules) < 0 ||
        quick_rules(&r->response_rules, &s->response_rules) < 0)
        return -1;
    return quick_capture(s, l, err, errlen);
}

/* The state of the server with the same group name and URL in `prev`, or NULL. */
static struct fy_server_state *previous_state(const struct fy_conf *prev, const struct fy_group *g,
                                              const struct fy_server *sv)
{
    if (!prev)
        return NULL;
    const struct fy_group *pg = fy_conf_group(prev, g->name);
    if (!pg)
        return NULL;
    for (uint32_t i = 0; i < pg->nservers; i++)
        if (!strcmp(pg->servers[i].url, sv->url) && pg->servers[i].state)
            return pg->servers[i].state;
    return NULL;
}

struct fy_conf *fy_conf_build(struct fy_config *settings, const struct fy_conf *prev, char *err,
                              size_t errlen)
{
    snprintf(err, errlen, "out of memory");
    struct fy_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->settings = *settings;
    memset(settings, 0, sizeof(*settings));
    fy_config_defaults(settings); /* the caller's struct stays safe to free */
    c->refs = 1;
    c->generation = prev ? prev->generation + 1 : 1;
    struct fy_config *s = &c->settings;
    if (!s->nlisteners) {
        if (build_quick(s, err, errlen) < 0)
            goto fail;
    } else if (quick_rules(&c->global_request_rules, &s->request_rules) < 0 ||
               quick_rules(&c->global_response_rules, &s->response_rules) < 0) {
        goto fail;
    }
    c->listeners = s->listeners;
    c->nlisteners = s->nlisteners;
    c->groups = s->groups;
    c->ngroups = s->ngroups;
    /* Each script gets a slot: a worker keeps one Lua state per slot and generation. */
    for (uint32_t i = 0; i < c->nlisteners; i++) {
        struct fy_listener_conf *l = &c->listeners[i];
        if (l->lua)
            l->lua->slot = c->nlua++;
        for (uint32_t r = 0; r < l->nroutes; r++)
            if (l->routes[r].lua)
                l->routes[r].lua->slot = c->nlua++;
    }
    for (uint32_t g = 0; g < c->ngroups; g++) {
        struct fy_group *grp = &c->groups[g];
        grp->index = g;
        grp->npool_slots = 0;
        for (uint32_t i = 0; i < grp->nservers; i++) {
            struct fy_server *sv = &grp->servers[i];
            sv->index = i;
            sv->group = grp;
            if (!sv->naddrs) { /* the address alone (a server made without the resolver) */
                sv->addrs = malloc(sizeof(*sv->addrs));
                if (!sv->addrs)
                    goto fail;
                sv->addrs[0] = sv->addr;
                sv->naddrs = 1;
            }
            sv->pool_slot = grp->npool_slots;
            grp->npool_slots += sv->naddrs;
            struct fy_server_state *st = previous_state(prev, grp, sv);
            if (st) {
                __atomic_add_fetch(&st->refs, 1, __ATOMIC_RELAXED);
            } else {
                st = calloc(1, sizeof(*st));
                if (!st)
                    goto fail;
                st->refs = 1;
            }
            sv->state = st;
        }
        bool ok;
        grp->lb = fy_lb_shared_build(grp, &ok);
        if (!ok)
            goto fail;
    }
    for (uint32_t i = 0; i < c->nlisteners; i++) {
        c->listeners[i].router = fy_router_build(&c->listeners[i]);
        if (!c->listeners[i].router)
            goto fail;
    }
    return c;
fail:
    conf_free(c);
    return NULL;
}
