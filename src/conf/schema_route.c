/*
 * One route of a listener: its match conditions, its one action (upstream, redirect or respond),
 * path rewriting, the Host sent upstream, header rules and per-route limits. Captures ($1) are
 * allowed in a route's templates only when its match has a path-regex, and only up to the
 * pattern's number of groups, so a template can never name a capture that cannot exist.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "conf/schema.h"

#include "proxy/capture.h"
#include "conf/template.h"

/* ---- match ---- */

/* A host condition: a DNS name (letters, digits, '-', dots between labels), an IPv4 address, or
 * an IPv6 address in brackets, optionally behind a leading "*." wildcard label; no port. */
static const char *host_problem(const char *h)
{
    if (h[0] == '[') {
        size_t n = strlen(h);
        char inner[64];
        struct in6_addr a6;
        if (h[n - 1] != ']')
            return strchr(h, ']') ? "no port in a host condition (the port is the listener's)"
                                  : "an IPv6 address ends with ']'";
        if (n - 2 >= sizeof(inner))
            return "not an IPv6 address";
        memcpy(inner, h + 1, n - 2);
        inner[n - 2] = 0;
        return inet_pton(AF_INET6, inner, &a6) == 1 ? NULL : "not an IPv6 address";
    }
    if (strchr(h, ':'))
        return "no port in a host condition (the port is the listener's; an IPv6 address goes "
               "in brackets)";
    const char *name = h;
    if (h[0] == '*') {
        if (h[1] != '.' || !h[2])
            return "a wildcard is a leading '*.' label (*.example.com)";
        name = h + 2;
    }
    if (!*name)
        return "empty host";
    for (const char *p = name; *p; p++) {
        if (*p == '*')
            return "a wildcard is a leading '*.' label (*.example.com)";
        if (*p == '.' && (p == name || p[1] == '.' || !p[1]))
            return "empty label (two dots, or a dot at the start or end)";
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.')
            return "a host name has letters, digits, '-' and '.'";
    }
    return NULL;
}

static void load_hosts(struct fy_yaml_loader *l, struct fy_match *m, const yaml_node_t *v)
{
    size_t n = fy_sc_nitems(l, v, "host");
    if (n == 0)
        return;
    m->hosts = calloc(n, sizeof(*m->hosts));
    if (!m->hosts) {
        fy_yaml_report(l, v->start_mark, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *it = fy_sc_item(l, v, i);
        char *h = fy_sc_string(l, it, "host");
        if (!h)
            continue;
        for (char *p = h; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        const char *why = host_problem(h);
        if (why)
            fy_yaml_report(l, it->start_mark, "host '%s': %s", (const char *)it->data.scalar.value,
                           why);
        m->hosts[m->nhosts++] = h;
    }
}

static void load_methods(struct fy_yaml_loader *l, struct fy_match *m, const yaml_node_t *v)
{
    size_t n = fy_sc_nitems(l, v, "methods");
    if (n == 0)
        return;
    m->methods = calloc(n, sizeof(*m->methods));
    if (!m->methods) {
        fy_yaml_report(l, v->start_mark, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *it = fy_sc_item(l, v, i);
        char *s = fy_sc_string(l, it, "methods");
        if (!s)
            continue;
        if (!fy_sc_is_token(s, strlen(s)))
            fy_yaml_report(l, it->start_mark, "methods: '%s' is not a method name (GET, POST...)",
                           s);
        m->methods[m->nmethods++] = s;
    }
}

static char *load_path(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what)
{
    char *s = fy_sc_string(l, v, what);
    if (s && s[0] != '/')
        fy_yaml_report(l, v->start_mark, "%s must start with '/', got '%s'", what, s);
    return s;
}

static const char *const kv_keys[] = {"regex"};

/* headers: / query: a mapping name -> "value" (equals), true (present) or { regex: ... }. */
static void load_kv(struct fy_yaml_loader *l, struct fy_kv_match **out, uint32_t *nout,
                    const yaml_node_t *v, const char *what, bool header)
{
    if (v->type != YAML_MAPPING_NODE) {
        fy_yaml_report(l, v->start_mark,
                       "%s expects a mapping of names to conditions ({ X-Name: value }), got %s",
                       what, fy_yaml_node_kind(v));
        return;
    }
    size_t n = fy_sc_npairs(v);
    if (n == 0)
        return;
    *out = calloc(n, sizeof(**out));
    if (!*out) {
        fy_yaml_report(l, v->start_mark, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *val;
        const yaml_node_t *k = fy_sc_pair(l, v, i, &val);
        char *name = fy_sc_string(l, k, what);
        if (!name)
            continue;
        struct fy_kv_match *kv = &(*out)[(*nout)++];
        kv->name = name;
        kv->name_len = (uint32_t)strlen(name);
        if (header ? !fy_sc_is_token(name, kv->name_len) : kv->name_len == 0)
            fy_yaml_report(l, k->start_mark, "%s: '%s' is not a valid %s", what, name,
                           header ? "header field name" : "parameter name");
        for (uint32_t j = 0; j + 1 < *nout; j++)
            if (header ? fy_name_eq((*out)[j].name, (*out)[j].name_len, name, kv->name_len)
                       : !strcmp((*out)[j].name, name))
                fy_yaml_report(l, k->start_mark, "%s: %s is given twice", what, name);
        if (val->type == YAML_MAPPING_NODE) {
            kv->kind = FY_VM_REGEX;
            if (!fy_sc_keys(l, val, "a condition", kv_keys, NKEYS(kv_keys)))
                continue;
            const yaml_node_t *re = fy_sc_get(l, val, "regex");
            if (!re)
                fy_yaml_report(l, val->start_mark, "%s: %s: a condition mapping is { regex: ... }",
                               what, name);
            else
                kv->re = fy_sc_regex(l, re, "regex", &kv->value);
            if (kv->value)
                kv->value_len = (uint32_t)strlen(kv->value);
            continue;
        }
        if (val->type == YAML_SCALAR_NODE && val->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
            (!strcmp((const char *)val->data.scalar.value, "true") ||
             !strcmp((const char *)val->data.scalar.value, "false") || fy_sc_is_null(val))) {
            if (!strcmp((const char *)val->data.scalar.value, "true"))
                kv->kind = FY_VM_PRESENT;
            else
                fy_yaml_report(l, val->start_mark,
                               "%s: %s: a condition is a value (\"...\"), true (present) or { "
                               "regex: ... }",
                               what, name);
            continue;
        }
        kv->kind = FY_VM_EQUALS;
        kv->value = fy_sc_string(l, val, what);
        if (kv->value)
            kv->value_len = (uint32_t)strlen(kv->value);
    }
}

static const char *const match_keys[] = {"host",    "path",    "path-prefix", "path-regex",
                                         "methods", "headers", "query"};

static void load_match(struct fy_yaml_loader *l, struct fy_match *m, const yaml_node_t *v)
{
    if (!fy_sc_keys(l, v, "match", match_keys, NKEYS(match_keys)))
        return;
    const yaml_node_t *n;
    if ((n = fy_sc_get(l, v, "host")))
        load_hosts(l, m, n);
    if ((n = fy_sc_get(l, v, "path")))
        m->path = load_path(l, n, "path");
    if ((n = fy_sc_get(l, v, "path-prefix"))) {
        m->path_prefix = load_path(l, n, "path-prefix");
        if (m->path)
            fy_yaml_report(l, fy_sc_key(l, v, "path-prefix")->start_mark,
                           "match has both path and path-prefix: give one (path is the whole "
                           "path, path-prefix its beginning)");
    }
    if ((n = fy_sc_get(l, v, "path-regex")))
        m->path_regex = fy_sc_regex(l, n, "path-regex", &m->path_regex_src);
    if ((n = fy_sc_get(l, v, "methods")))
        load_methods(l, m, n);
    if ((n = fy_sc_get(l, v, "headers")))
        load_kv(l, &m->headers, &m->nheaders, n, "headers", true);
    if ((n = fy_sc_get(l, v, "query")))
        load_kv(l, &m->query, &m->nquery, n, "query", false);
}

/* ---- templates with captures ---- */

/* Loads a template, allowing captures of `re` when there is one. */
static void load_tpl(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what,
                     const fy_regex *re, bool header, struct fy_template *t)
{
    if (fy_sc_template(l, v, what, re ? FY_TPL_CAPTURES : 0, t) < 0)
        return;
    fy_sc_check_captures(l, v, what, t, re);
    if (header && !fy_sc_header_value_ok(t))
        fy_yaml_report(l, v->start_mark, "%s cannot contain CR, LF or other control characters",
                       what);
}

/* ---- actions ---- */

static const char *const redirect_keys[] = {"status", "location"};

static void load_redirect(struct fy_yaml_loader *l, struct fy_route *rt, const yaml_node_t *v)
{
    rt->status = 302;
    if (!fy_sc_keys(l, v, "redirect", redirect_keys, NKEYS(redirect_keys)))
        return;
    const yaml_node_t *n = fy_sc_get(l, v, "status");
    uint32_t st;
    if (n && fy_sc_u32(l, n, "redirect status", 0, 999, &st) == 0) {
        if (st == 301 || st == 302 || st == 303 || st == 307 || st == 308)
            rt->status = (int)st;
        else
            fy_yaml_report(l, n->start_mark,
                           "redirect status must be 301, 302, 303, 307 or 308, got %u", st);
    }
    n = fy_sc_get(l, v, "location");
    if (!n)
        fy_yaml_report(l, v->start_mark,
                       "redirect needs location: where to send the client (location: /new)");
    else
        load_tpl(l, n, "location", rt->match.path_regex, true, &rt->location);
}

static const char *const respond_keys[] = {"status", "body", "headers", "content-type"};

static void load_respond(struct fy_yaml_loader *l, struct fy_route *rt, const yaml_node_t *v)
{
    char err[128];
    rt->status = 200;
    if (!fy_sc_keys(l, v, "respond", respond_keys, NKEYS(respond_keys)))
        return;
    const yaml_node_t *n = fy_sc_get(l, v, "status");
    uint32_t st;
    if (n && fy_sc_u32(l, n, "respond status", 0, 999, &st) == 0) {
        if (st >= 200 && st <= 599)
            rt->status = (int)st;
        else
            fy_yaml_report(l, n->start_mark,
                           "respond status must be from 200 to 599 (1xx are not final), got %u",
                           st);
    }
    const fy_regex *re = rt->match.path_regex;
    if ((n = fy_sc_get(l, v, "body")))
        load_tpl(l, n, "body", re, false, &rt->body);
    else if (fy_template_compile(&rt->body, "", 0, NULL, err, sizeof(err)) < 0)
        fy_yaml_report(l, v->start_mark, "%s", err);
    if ((n = fy_sc_get(l, v, "headers")))
        fy_schema_load_hsets(l, &rt->respond_headers, n, "respond headers", true, re);
    if ((n = fy_sc_get(l, v, "content-type"))) {
        rt->content_type = fy_sc_string(l, n, "content-type");
        for (const char *p = rt->content_type; p && *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) {
                fy_yaml_report(l, n->start_mark, "content-type cannot contain control characters");
                break;
            }
    }
}

static void load_upstream_name(struct fy_yaml_loader *l, struct fy_route *rt, const yaml_node_t *v)
{
    char *name = fy_sc_string(l, v, "upstream");
    if (!name)
        return;
    struct fy_upstream_ref *refs = realloc(l->refs, (l->nrefs + 1) * sizeof(*refs));
    if (!refs) {
        free(name);
        fy_yaml_report(l, v->start_mark, "out of memory");
        return;
    }
    l->refs = refs;
    refs[l->nrefs++] = (struct fy_upstream_ref){.route = rt, .name = name, .mark = v->start_mark};
}

/* ---- path-rewrite ---- */

static const char *const rewrite_keys[] = {"strip-prefix", "replace-prefix", "with", "regex",
                                           "replacement"};

/* `replace-prefix: /v2` alone replaces the route's own path-prefix (Envoy's prefix_rewrite);
 * with `with:` it names the prefix to take off explicitly. */
static void load_rewrite(struct fy_yaml_loader *l, struct fy_path_rewrite *rw,
                         const struct fy_match *match, const yaml_node_t *v)
{
    if (!fy_sc_keys(l, v, "path-rewrite", rewrite_keys, NKEYS(rewrite_keys)))
        return;
    const yaml_node_t *strip = fy_sc_get(l, v, "strip-prefix"),
                      *repl = fy_sc_get(l, v, "replace-prefix"), *with = fy_sc_get(l, v, "with"),
                      *re = fy_sc_get(l, v, "regex"), *rep = fy_sc_get(l, v, "replacement");
    if (!!strip + !!repl + !!re != 1) {
        fy_yaml_report(l, v->start_mark,
                       "path-rewrite takes one of strip-prefix: /P, replace-prefix: /P with: "
                       "/Q, or regex: RE replacement: /R");
        return;
    }
    if (with && !repl)
        fy_yaml_report(l, fy_sc_key(l, v, "with")->start_mark, "with: goes with replace-prefix:");
    if (rep && !re)
        fy_yaml_report(l, fy_sc_key(l, v, "replacement")->start_mark,
                       "replacement: goes with regex:");
    if (strip) {
        rw->kind = FY_RW_STRIP_PREFIX;
        rw->prefix = load_path(l, strip, "strip-prefix");
    } else if (repl) {
        rw->kind = FY_RW_REPLACE_PREFIX;
        if (with) {
            rw->prefix = load_path(l, repl, "replace-prefix");
            rw->with = load_path(l, with, "with");
        } else if (match->path_prefix) {
            rw->prefix = strdup(match->path_prefix);
            rw->with = load_path(l, repl, "replace-prefix");
        } else {
            fy_yaml_report(l, v->start_mark,
                           "replace-prefix: /NEW replaces the route's path-prefix, and this route "
                           "has none: add match: { path-prefix: /OLD } or write "
                           "replace-prefix: /OLD with: /NEW");
        }
    } else {
        rw->kind = FY_RW_REGEX;
        rw->re = fy_sc_regex(l, re, "regex", NULL);
        if (!rep)
            fy_yaml_report(l, v->start_mark,
                           "regex needs replacement: the new path (replacement: /users/$1)");
        else if (rw->re)
            load_tpl(l, rep, "replacement", rw->re, true, &rw->replacement);
    }
}

/* ---- the route ---- */

static void load_host(struct fy_yaml_loader *l, struct fy_route *rt, const yaml_node_t *v)
{
    const char *raw = fy_sc_raw(l, v, "host");
    if (!raw)
        return;
    if (!strcmp(raw, "upstream")) {
        rt->host_mode = FY_HOST_UPSTREAM;
        return;
    }
    if (!strcmp(raw, "preserve")) {
        rt->host_mode = FY_HOST_PRESERVE;
        return;
    }
    rt->host_mode = FY_HOST_VALUE;
    if (fy_sc_template(l, v, "host", FY_TPL_NO_VARS, &rt->host_value) < 0)
        return;
    const char *h = rt->host_value.constant;
    bool ok = h && *h;
    for (const char *p = h; ok && *p; p++)
        ok = (unsigned char)*p > ' ' && *p != 0x7f;
    if (!ok)
        fy_yaml_report(l, v->start_mark, "host expects upstream, preserve or a host name, got '%s'",
                       raw);
}

static void load_limits(struct fy_yaml_loader *l, struct fy_route_limits *lim,
                        const yaml_node_t *route)
{
    const yaml_node_t *n;
    if ((n = fy_sc_get(l, route, "connect-timeout")))
        fy_sc_duration(l, n, "connect-timeout", &lim->connect_timeout);
    if ((n = fy_sc_get(l, route, "upstream-timeout")))
        fy_sc_duration(l, n, "upstream-timeout", &lim->upstream_timeout);
    if ((n = fy_sc_get(l, route, "max-body-size"))) {
        char *s = fy_sc_string(l, n, "max-body-size");
        uint64_t b;
        if (s && !strcmp(s, "unlimited"))
            lim->max_body_size = UINT64_MAX;
        else if (s && fy_parse_size(s, &b) == 0)
            lim->max_body_size = b ? b : UINT64_MAX; /* 0 is unlimited, as for the global key */
        else if (s)
            fy_yaml_report(l, n->start_mark,
                           "max-body-size expects a size (e.g. 10m) or unlimited, got '%s'",
                           (const char *)n->data.scalar.value);
        free(s);
    }
    if ((n = fy_sc_get(l, route, "abort-on-client-close"))) {
        bool b;
        if (fy_sc_bool(l, n, "abort-on-client-close", &b) == 0)
            lim->abort_on_client_close = b;
    }
}

static const char *const route_keys[] = {"match",
                                         "upstream",
                                         "redirect",
                                         "respond",
                                         "path-rewrite",
                                         "host",
                                         "request-headers",
                                         "response-headers",
                                         "connect-timeout",
                                         "upstream-timeout",
                                         "max-body-size",
                                         "abort-on-client-close",
                                         "capture",
                                         "compress",
                                         "lua"};

/* Keys that only mean something for a request sent upstream. */
static const char *const proxy_only_keys[] = {
    "path-rewrite",
    "host",
    "request-headers",
    "connect-timeout",
    "upstream-timeout",
    "abort-on-client-close",
    "compress", /* ferry's own responses are not compressed */
    "lua" /* a route's script runs once the route matched, for an upstream's exchange */};

static const char *const action_keys[] = {"upstream", "redirect", "respond"};

void fy_schema_load_route(struct fy_yaml_loader *l, struct fy_route *rt, const yaml_node_t *v)
{
    rt->host_mode = FY_HOST_UPSTREAM;
    rt->limits.abort_on_client_close = -1;
    if (!fy_sc_keys(l, v, "a route", route_keys, NKEYS(route_keys)))
        return;
    rt->where = fy_sc_where(l, v);
    const yaml_node_t *n;
    if ((n = fy_sc_get(l, v, "match"))) {
        rt->has_match = true;
        load_match(l, &rt->match, n);
    }

    const yaml_node_t *act[3];
    int nact = 0, which = -1;
    for (int i = 0; i < 3; i++)
        if ((act[i] = fy_sc_get(l, v, action_keys[i]))) {
            if (nact == 1)
                fy_yaml_report(l, fy_sc_key(l, v, action_keys[i])->start_mark,
                               "a route has one action; this one has both %s: and %s:",
                               action_keys[which], action_keys[i]);
            nact++;
            if (which < 0)
                which = i;
        }
    if (nact == 0)
        fy_yaml_report(l, v->start_mark,
                       "a route needs one action: upstream: NAME, redirect: { location: ... } "
                       "or respond: { status: ... }");
    rt->action = which == 1 ? FY_ACT_REDIRECT : which == 2 ? FY_ACT_RESPOND : FY_ACT_PROXY;
    if (which == 0)
        load_upstream_name(l, rt, act[0]);
    else if (which == 1)
        load_redirect(l, rt, act[1]);
    else if (which == 2)
        load_respond(l, rt, act[2]);
    if (which > 0)
        for (size_t i = 0; i < NKEYS(proxy_only_keys); i++)
            if ((n = fy_sc_key(l, v, proxy_only_keys[i])))
                fy_yaml_report(l, n->start_mark,
                               "%s only applies to routes with upstream: (this one has %s:)",
                               proxy_only_keys[i], action_keys[which]);

    const fy_regex *caps = rt->match.path_regex;
    if ((n = fy_sc_get(l, v, "path-rewrite")) && which <= 0)
        load_rewrite(l, &rt->rewrite, &rt->match, n);
    if ((n = fy_sc_get(l, v, "host")) && which <= 0)
        load_host(l, rt, n);
    if ((n = fy_sc_get(l, v, "request-headers")) && which <= 0)
        fy_schema_load_hrules(l, &rt->request_rules, n, "request-headers", false, caps);
    if ((n = fy_sc_get(l, v, "response-headers")))
        fy_schema_load_hrules(l, &rt->response_rules, n, "response-headers", true, caps);
    load_limits(l, &rt->limits, v);
    if ((n = fy_sc_get(l, v, "capture")))
        rt->capture = fy_schema_load_capture(l, n);
    if ((n = fy_sc_get(l, v, "compress")))
        rt->compress = fy_schema_load_compress(l, n);
    if ((n = fy_sc_get(l, v, "lua")))
        rt->lua = fy_schema_load_lua(l, n);
}

static void free_kv(struct fy_kv_match *kv, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free(kv[i].name);
        free(kv[i].value);
        pcre2_code_free(kv[i].re);
    }
    free(kv);
}

void fy_route_free(struct fy_route *rt)
{
    struct fy_match *m = &rt->match;
    for (uint32_t i = 0; i < m->nhosts; i++)
        free(m->hosts[i]);
    free(m->hosts);
    free(m->path);
    free(m->path_prefix);
    pcre2_code_free(m->path_regex);
    free(m->path_regex_src);
    for (uint32_t i = 0; i < m->nmethods; i++)
        free(m->methods[i]);
    free(m->methods);
    free_kv(m->headers, m->nheaders);
    free_kv(m->query, m->nquery);
    free(rt->rewrite.prefix);
    free(rt->rewrite.with);
    pcre2_code_free(rt->rewrite.re);
    fy_template_free(&rt->rewrite.replacement);
    fy_template_free(&rt->host_value);
    fy_capture_unref(rt->capture);
    rt->capture = NULL;
    fy_compress_conf_free(rt->compress);
    rt->compress = NULL;
    fy_lua_conf_free(rt->lua);
    rt->lua = NULL;
    fy_hrules_free(&rt->request_rules);
    fy_hrules_free(&rt->response_rules);
    fy_hrules_free(&rt->respond_headers);
    fy_template_free(&rt->location);
    fy_template_free(&rt->body);
    free(rt->content_type);
    free(rt->where);
    memset(rt, 0, sizeof(*rt));
}
