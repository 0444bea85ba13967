/*
 * The schema's node readers (typed scalars, mappings with known keys, "one or a list"), the
 * listeners (addresses, routes, and their tls: block, compiled by schema_tls.c), the resolution of
 * upstream names once the whole file is read, and fy_listeners_free(). Routes are in
 * schema_route.c, header rules in schema_hdr.c, upstream groups in schema_upstream.c.
 */
#include "conf/schema.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "conf/template.h"
#include "core/log.h"
#include "http/tokens.h"
#include "conf/forward.h"
#include "proxy/capture.h"
#include "net/tls.h"

/* ---- node readers ---- */

static const char *key_text(const yaml_node_t *k)
{
    return k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : NULL;
}

size_t fy_sc_npairs(const yaml_node_t *map)
{
    if (map->type != YAML_MAPPING_NODE)
        return 0;
    return (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
}

const yaml_node_t *fy_sc_pair(struct fy_yaml_loader *l, const yaml_node_t *map, size_t i,
                              const yaml_node_t **value)
{
    const yaml_node_pair_t *p = &map->data.mapping.pairs.start[i];
    *value = yaml_document_get_node(&l->doc, p->value);
    return yaml_document_get_node(&l->doc, p->key);
}

/* "a, b or c" for messages. */
static void join_keys(char *out, size_t size, const char *const *keys, size_t n)
{
    size_t len = 0;
    out[0] = 0;
    for (size_t i = 0; i < n && len < size; i++)
        len += (size_t)snprintf(out + len, size - len, "%s%s",
                                i == 0       ? ""
                                : i + 1 == n ? " or "
                                             : ", ",
                                keys[i]);
}

bool fy_sc_keys(struct fy_yaml_loader *l, const yaml_node_t *map, const char *what,
                const char *const *keys, size_t nkeys)
{
    if (map->type != YAML_MAPPING_NODE) {
        char list[512];
        join_keys(list, sizeof(list), keys, nkeys);
        fy_yaml_report(l, map->start_mark, "%s expects a mapping (keys: %s), got %s", what, list,
                       fy_yaml_node_kind(map));
        return false;
    }
    size_t n = fy_sc_npairs(map);
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *v;
        const yaml_node_t *k = fy_sc_pair(l, map, i, &v);
        const char *key = key_text(k);
        if (!key) {
            fy_yaml_report(l, k->start_mark, "%s: expected a key name, got %s", what,
                           fy_yaml_node_kind(k));
            continue;
        }
        bool known = false;
        for (size_t j = 0; j < nkeys && !known; j++)
            known = !strcmp(key, keys[j]);
        if (!known) {
            const char *near = fy_yaml_suggest(key, keys, nkeys);
            char list[512];
            join_keys(list, sizeof(list), keys, nkeys);
            if (near)
                fy_yaml_report(l, k->start_mark, "unknown key '%s' in %s (did you mean %s?)", key,
                               what, near);
            else
                fy_yaml_report(l, k->start_mark, "unknown key '%s' in %s (expected %s)", key, what,
                               list);
            continue;
        }
        for (size_t j = 0; j < i; j++) {
            const yaml_node_t *pv;
            const yaml_node_t *pk = fy_sc_pair(l, map, j, &pv);
            if (key_text(pk) && !strcmp(key_text(pk), key)) {
                fy_yaml_report(l, k->start_mark,
                               "duplicate key '%s' in %s (first given at line %zu)", key, what,
                               pk->start_mark.line + 1);
                break;
            }
        }
    }
    return true;
}

const yaml_node_t *fy_sc_key(struct fy_yaml_loader *l, const yaml_node_t *map, const char *key)
{
    size_t n = fy_sc_npairs(map);
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *v;
        const yaml_node_t *k = fy_sc_pair(l, map, i, &v);
        if (key_text(k) && !strcmp(key_text(k), key))
            return k;
    }
    return NULL;
}

const yaml_node_t *fy_sc_get(struct fy_yaml_loader *l, const yaml_node_t *map, const char *key)
{
    size_t n = fy_sc_npairs(map);
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *v;
        const yaml_node_t *k = fy_sc_pair(l, map, i, &v);
        if (key_text(k) && !strcmp(key_text(k), key))
            return v;
    }
    return NULL;
}

bool fy_sc_is_null(const yaml_node_t *v)
{
    return v->type == YAML_SCALAR_NODE && v->data.scalar.length == 0 &&
           v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

size_t fy_sc_nitems(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what)
{
    if (v->type == YAML_SCALAR_NODE)
        return 1;
    if (v->type == YAML_SEQUENCE_NODE)
        return (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    fy_yaml_report(l, v->start_mark, "%s expects a value or a list of values, got %s", what,
                   fy_yaml_node_kind(v));
    return 0;
}

const yaml_node_t *fy_sc_item(struct fy_yaml_loader *l, const yaml_node_t *v, size_t i)
{
    if (v->type == YAML_SCALAR_NODE)
        return v;
    return yaml_document_get_node(&l->doc, v->data.sequence.items.start[i]);
}

const char *fy_sc_raw(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what)
{
    if (v->type != YAML_SCALAR_NODE) {
        fy_yaml_report(l, v->start_mark, "%s expects a single value, got %s", what,
                       fy_yaml_node_kind(v));
        return NULL;
    }
    const char *s = (const char *)v->data.scalar.value;
    if (strlen(s) != v->data.scalar.length) {
        fy_yaml_report(l, v->start_mark, "%s: a value cannot contain a NUL byte", what);
        return NULL;
    }
    return s;
}

char *fy_sc_string(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what)
{
    const char *raw = fy_sc_raw(l, v, what);
    if (!raw)
        return NULL;
    enum fy_expand_error e;
    char *why;
    char *s = fy_expand(raw, l->base_dir, &e, &why);
    if (s)
        return s;
    if (e == FY_EXPAND_NO_ENV)
        fy_yaml_report(l, v->start_mark, "%s: environment variable %s is not set", what,
                       why ? why : "?");
    else if (e == FY_EXPAND_NO_FILE)
        fy_yaml_report(l, v->start_mark, "%s: cannot read ${file:...} %s", what, why ? why : "");
    else if (e == FY_EXPAND_MALFORMED)
        fy_yaml_report(l, v->start_mark, "%s: malformed ${env:NAME} or ${file:PATH} in '%s'", what,
                       raw);
    else
        fy_yaml_report(l, v->start_mark, "out of memory");
    free(why);
    return NULL;
}

int fy_sc_duration(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what, uint64_t *out)
{
    char *s = fy_sc_string(l, v, what);
    if (!s)
        return -1;
    uint64_t ms;
    int rc = fy_parse_duration(s, &ms);
    if (rc < 0)
        fy_yaml_report(l, v->start_mark, "%s expects a duration like 500ms, 10s or 2m, got '%s'",
                       what, (const char *)v->data.scalar.value);
    else
        *out = ms;
    free(s);
    return rc;
}

int fy_sc_u32(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what, uint32_t min,
              uint32_t max, uint32_t *out)
{
    char *s = fy_sc_string(l, v, what);
    if (!s)
        return -1;
    char *end;
    unsigned long long n = strtoull(s, &end, 10);
    int rc = 0;
    if (*s < '0' || *s > '9' || *end || n < min || n > max) {
        fy_yaml_report(l, v->start_mark, "%s expects a number from %u to %u, got '%s'", what, min,
                       max, (const char *)v->data.scalar.value);
        rc = -1;
    } else {
        *out = (uint32_t)n;
    }
    free(s);
    return rc;
}

int fy_sc_bool(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what, bool *out)
{
    char *s = fy_sc_string(l, v, what);
    if (!s)
        return -1;
    int rc = 0;
    if (!strcmp(s, "true") || !strcmp(s, "on"))
        *out = true;
    else if (!strcmp(s, "false") || !strcmp(s, "off"))
        *out = false;
    else
        rc = -1;
    if (rc < 0)
        fy_yaml_report(l, v->start_mark, "%s expects true or false (or on/off), got '%s'", what,
                       (const char *)v->data.scalar.value);
    free(s);
    return rc;
}

int fy_sc_template(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what, unsigned flags,
                   struct fy_template *t)
{
    const char *raw = fy_sc_raw(l, v, what);
    if (!raw)
        return -1;
    char err[512];
    if (fy_template_compile(t, raw, flags, l->base_dir, err, sizeof(err)) < 0) {
        fy_yaml_report(l, v->start_mark, "%s: %s", what, err);
        return -1;
    }
    return 0;
}

fy_regex *fy_sc_regex(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what, char **src)
{
    char *pattern = fy_sc_string(l, v, what);
    if (!pattern)
        return NULL;
    int code;
    PCRE2_SIZE offset;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &code, &offset, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
            snprintf((char *)msg, sizeof(msg), "error %d", code);
        fy_yaml_report(l, v->start_mark, "%s '%s': %s at offset %zu", what, pattern, (char *)msg,
                       (size_t)offset);
        free(pattern);
        return NULL;
    }
    /* A JIT failure (no JIT on this CPU, or out of executable memory) is not an error: pcre2
     * then runs the pattern with its interpreter, only slower. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    if (src)
        *src = pattern;
    else
        free(pattern);
    return re;
}

uint32_t fy_sc_regex_groups(const fy_regex *re)
{
    uint32_t n = 0;
    if (pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &n) != 0)
        return 0;
    return n;
}

void fy_sc_check_captures(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what,
                          const struct fy_template *t, const fy_regex *re)
{
    int max = 0; /* $0, the whole match, always exists */
    for (uint32_t i = 0; i < t->nsegs; i++)
        if (t->segs[i].var == FY_TV_CAPTURE && t->segs[i].capture > max)
            max = t->segs[i].capture;
    uint32_t groups = re ? fy_sc_regex_groups(re) : 0;
    if ((uint32_t)max > groups)
        fy_yaml_report(l, v->start_mark, "%s: $%d but the regex has %u group%s", what, max, groups,
                       groups == 1 ? "" : "s");
}

char *fy_sc_where(struct fy_yaml_loader *l, const yaml_node_t *v)
{
    char *w;
    if (asprintf(&w, "%s:%zu", l->path, v->start_mark.line + 1) < 0)
        return NULL;
    return w;
}

bool fy_sc_is_token(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!fy_is_tchar((unsigned char)s[i]))
            return false;
    return true;
}

/* ---- listeners ---- */

/* The same socket address (port 0 never clashes: each bind gets its own port). */
static bool same_addr(const struct fy_addr *a, const struct fy_addr *b)
{
    if (a->ss.ss_family != b->ss.ss_family || fy_addr_port((const struct sockaddr *)&a->ss) == 0)
        return false;
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
               !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
    }
    return false;
}

static void load_addr(struct fy_yaml_loader *l, struct fy_listener_conf *lc, const yaml_node_t *v)
{
    char *text = fy_sc_string(l, v, "listen");
    if (!text)
        return;
    uint32_t i = lc->naddrs++;
    lc->addr_texts[i] = text;
    char why[200];
    if (fy_addr_parse(text, &lc->addrs[i], why, sizeof(why)) < 0) {
        fy_yaml_report(l, v->start_mark, "listen '%s': %s", (const char *)v->data.scalar.value,
                       why);
        return;
    }
    for (size_t k = 0; k < l->nseen; k++)
        if (same_addr(&l->seen[k].addr, &lc->addrs[i])) {
            fy_yaml_report(l, v->start_mark, "duplicate listener address %s (also at line %zu)",
                           text, l->seen[k].line);
            return;
        }
    struct fy_seen_addr *seen = realloc(l->seen, (l->nseen + 1) * sizeof(*seen));
    if (!seen) {
        fy_yaml_report(l, v->start_mark, "out of memory");
        return;
    }
    l->seen = seen;
    seen[l->nseen++] = (struct fy_seen_addr){.addr = lc->addrs[i], .line = v->start_mark.line + 1};
}

static const char *const listener_keys[] = {"listen",    "routes",  "tls",      "forward",
                                            "intercept", "capture", "compress", "lua"};

static void load_routes(struct fy_yaml_loader *l, struct fy_listener_conf *lc,
                        const yaml_node_t *routes);

static void load_listener(struct fy_yaml_loader *l, struct fy_listener_conf *lc,
                          const yaml_node_t *v)
{
    if (!fy_sc_keys(l, v, "a listener", listener_keys, NKEYS(listener_keys)))
        return;
    lc->where = fy_sc_where(l, v);
    const yaml_node_t *listen = fy_sc_get(l, v, "listen");
    if (!listen || fy_sc_is_null(listen)) {
        fy_yaml_report(l, v->start_mark,
                       "a listener needs listen: the address to accept clients on "
                       "(listen: 127.0.0.1:8080)");
    } else {
        size_t n = fy_sc_nitems(l, listen, "listen");
        if (n == 0 && listen->type == YAML_SEQUENCE_NODE)
            fy_yaml_report(l, listen->start_mark, "listen: the list is empty");
        lc->addrs = calloc(n ? n : 1, sizeof(*lc->addrs));
        lc->addr_texts = calloc(n ? n : 1, sizeof(*lc->addr_texts));
        if (!lc->addrs || !lc->addr_texts) {
            fy_yaml_report(l, listen->start_mark, "out of memory");
            return;
        }
        for (size_t i = 0; i < n; i++)
            load_addr(l, lc, fy_sc_item(l, listen, i));
    }
    const yaml_node_t *tls = fy_sc_get(l, v, "tls");
    if (tls)
        fy_schema_load_listener_tls(l, lc, fy_sc_key(l, v, "tls"), tls);
    const yaml_node_t *cap = fy_sc_get(l, v, "capture");
    if (cap)
        lc->capture = fy_schema_load_capture(l, cap);
    const yaml_node_t *comp = fy_sc_get(l, v, "compress");
    if (comp)
        lc->compress = fy_schema_load_compress(l, comp);
    const yaml_node_t *lua = fy_sc_get(l, v, "lua");
    if (lua)
        lc->lua = fy_schema_load_lua(l, lua);
    load_routes(l, lc, fy_sc_get(l, v, "routes"));
    const yaml_node_t *fwd = fy_sc_get(l, v, "forward");
    const yaml_node_t *icp = fy_sc_get(l, v, "intercept");
    if (fwd || icp)
        fy_schema_load_forward(l, lc, fwd ? fy_sc_key(l, v, "forward") : NULL, fwd,
                               icp ? fy_sc_key(l, v, "intercept") : NULL, icp);
}

static void load_routes(struct fy_yaml_loader *l, struct fy_listener_conf *lc,
                        const yaml_node_t *routes)
{
    if (!routes || fy_sc_is_null(routes))
        return; /* no routes: every request gets 404 (the runtime's "no route") */
    if (routes->type != YAML_SEQUENCE_NODE) {
        fy_yaml_report(l, routes->start_mark, "routes expects a list of routes, got %s",
                       fy_yaml_node_kind(routes));
        return;
    }
    size_t n = (size_t)(routes->data.sequence.items.top - routes->data.sequence.items.start);
    if (n == 0)
        return;
    lc->routes = calloc(n, sizeof(*lc->routes));
    if (!lc->routes) {
        fy_yaml_report(l, routes->start_mark, "out of memory");
        return;
    }
    lc->nroutes = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        struct fy_route *rt = &lc->routes[i];
        rt->index = (uint32_t)i;
        fy_schema_load_route(l, rt, fy_sc_item(l, routes, i));
    }
}

void fy_schema_load_listeners(struct fy_yaml_loader *l, const yaml_node_t *v)
{
    if (v->type != YAML_SEQUENCE_NODE) {
        fy_yaml_report(l, v->start_mark,
                       "listeners expects a list of listeners (- listen: ADDR:PORT), got %s",
                       fy_yaml_node_kind(v));
        return;
    }
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (n == 0) {
        fy_yaml_report(l, v->start_mark,
                       "listeners: the list is empty (each listener is - listen: ADDR:PORT)");
        return;
    }
    struct fy_config *c = l->c;
    c->listeners = calloc(n, sizeof(*c->listeners));
    if (!c->listeners) {
        fy_yaml_report(l, v->start_mark, "out of memory");
        return;
    }
    c->nlisteners = (uint32_t)n;
    for (size_t i = 0; i < n; i++)
        load_listener(l, &c->listeners[i], fy_sc_item(l, v, i));
}

/* ---- after the file ---- */

void fy_schema_resolve(struct fy_yaml_loader *l)
{
    struct fy_config *c = l->c;
    fy_schema_resolve_servers(l);
    fy_schema_finish_forward(l);
    for (uint32_t g = 0; g < c->ngroups; g++)
        for (uint32_t s = 0; s < c->groups[g].nservers; s++)
            c->groups[g].servers[s].group = &c->groups[g];
    for (size_t i = 0; i < l->nrefs; i++) {
        struct fy_upstream_ref *r = &l->refs[i];
        uint32_t g = 0;
        while (g < c->ngroups && (!c->groups[g].name || strcmp(c->groups[g].name, r->name)))
            g++;
        if (g < c->ngroups) {
            r->route->group = &c->groups[g];
            continue;
        }
        char defined[512];
        size_t len = 0;
        defined[0] = 0;
        for (uint32_t k = 0; k < c->ngroups && len < sizeof(defined); k++)
            if (c->groups[k].name)
                len += (size_t)snprintf(defined + len, sizeof(defined) - len, "%s%s",
                                        len ? ", " : "", c->groups[k].name);
        const char *names[64];
        size_t nn = 0;
        for (uint32_t k = 0; k < c->ngroups && nn < 64; k++)
            if (c->groups[k].name)
                names[nn++] = c->groups[k].name;
        const char *near = fy_yaml_suggest(r->name, names, nn);
        if (!c->ngroups)
            fy_yaml_report(l, r->mark,
                           "unknown upstream '%s' (no upstreams: are defined; add upstreams: { "
                           "%s: { servers: [http://HOST:PORT] } })",
                           r->name, r->name);
        else if (near)
            fy_yaml_report(l, r->mark, "unknown upstream '%s' (did you mean %s? defined: %s)",
                           r->name, near, defined);
        else
            fy_yaml_report(l, r->mark, "unknown upstream '%s' (defined: %s)", r->name, defined);
    }
    /* Last: a group's TLS failure should not hide the mistakes above, and the warning about a
     * group that does not verify its servers is only given for a file that will be used. */
    fy_schema_build_group_tls(l);
}

void fy_schema_loader_done(struct fy_yaml_loader *l)
{
    for (size_t i = 0; i < l->nrefs; i++)
        free(l->refs[i].name);
    free(l->refs);
    free(l->seen);
    free(l->servers);
    for (size_t i = 0; i < l->ngtls; i++) {
        free(l->gtls[i].ca);
        free(l->gtls[i].cert);
        free(l->gtls[i].key);
        free(l->gtls[i].ciphers);
        free(l->gtls[i].ciphersuites);
    }
    free(l->gtls);
    if (l->nfwds)
        fy_schema_finish_forward(l); /* frees them; builds nothing after an error */
    l->refs = NULL;
    l->seen = NULL;
    l->servers = NULL;
    l->gtls = NULL;
    l->nrefs = l->nseen = l->nservers = l->ngtls = 0;
}

void fy_listeners_free(struct fy_listener_conf *ls, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        struct fy_listener_conf *lc = &ls[i];
        for (uint32_t a = 0; a < lc->naddrs; a++)
            free(lc->addr_texts[a]);
        free(lc->addr_texts);
        free(lc->addrs);
        for (uint32_t r = 0; r < lc->nroutes; r++)
            fy_route_free(&lc->routes[r]);
        free(lc->routes);
        free(lc->where);
        fy_tls_server_unref(lc->tls);
        fy_forward_conf_free(lc->forward);
        fy_capture_unref(lc->capture);
        fy_compress_conf_free(lc->compress);
        fy_lua_conf_free(lc->lua);
    }
    free(ls);
}
