/*
 * upstreams: groups of servers, their balancing, retries, passive ejection and active health
 * check, compiled into struct fy_group. Servers are stored primaries first (file order), then
 * backups (file order), so a balancer scans servers[0..nprimary) before the rest. Server names
 * are resolved once the whole file is read (fy_schema_resolve_servers), blocking, on the main
 * thread, with the file's resolvers and resolve-timeout. A group with an https:// server gets a
 * TLS context (its tls: block, schema_tls.c) once the whole file is read. Server states
 * (fy_server.state) and balancer data (fy_group.lb) stay NULL: the generation creates them
 * (fy_conf_build).
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/schema.h"
#include "net/resolver.h"
#include "net/tls.h"

/* ---- servers ---- */

/* 64-bit FNV-1a: a stable name for a server in sticky cookies, the same in every worker and
 * every generation as long as the URL is written the same way. */
static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* http[s]://HOST[:PORT][/] into s (url, host, port, authority); the address comes later
 * (fy_schema_resolve_servers). Returns 0 or -1 (reported). */
static int parse_url(struct fy_yaml_loader *l, const yaml_node_t *v, struct fy_server *s)
{
    const char *url = s->url, *raw = (const char *)v->data.scalar.value;
    bool https = fy_sc_is_https(url);
    if (!https && strncasecmp(url, "http://", 7)) {
        fy_yaml_report(l, v->start_mark,
                       "server '%s': expected a URL like http://10.0.0.1:3000 or "
                       "https://api.internal",
                       raw);
        return -1;
    }
    const char *rest = url + (https ? 8 : 7);
    size_t n = strcspn(rest, "/?#");
    if (rest[n] && strcmp(rest + n, "/")) {
        fy_yaml_report(l, v->start_mark,
                       "server '%s': a server URL has no path; use path-rewrite on the route", raw);
        return -1;
    }
    char auth[300], host[300];
    if (n == 0 || n >= sizeof(auth)) {
        fy_yaml_report(l, v->start_mark, "server '%s': %s", raw,
                       n ? "host too long" : "missing host (write http://HOST:PORT)");
        return -1;
    }
    memcpy(auth, rest, n);
    auth[n] = 0;
    if (strchr(auth, '@')) {
        fy_yaml_report(l, v->start_mark,
                       "server '%s': a server URL has no user or password (send credentials with "
                       "a request-header rule: Authorization)",
                       raw);
        return -1;
    }
    const char *port = NULL;
    if (auth[0] == '[') {
        const char *close = strchr(auth, ']');
        if (!close || (close[1] && close[1] != ':')) {
            fy_yaml_report(l, v->start_mark, "server '%s': expected [IPv6]:PORT", raw);
            return -1;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(close - auth + 1), auth);
        port = close[1] ? close + 2 : NULL;
    } else {
        const char *colon = strchr(auth, ':');
        if (colon && strchr(colon + 1, ':')) {
            fy_yaml_report(l, v->start_mark,
                           "server '%s': an IPv6 address goes in brackets: http://[ADDR]:PORT",
                           raw);
            return -1;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(colon ? colon - auth : (long)n), auth);
        port = colon ? colon + 1 : NULL;
    }
    if (!host[0] || !strcmp(host, "[]")) {
        fy_yaml_report(l, v->start_mark, "server '%s': missing host (write http://HOST:PORT)", raw);
        return -1;
    }
    size_t plen = port ? strlen(port) : 2;
    unsigned long p = port ? 0 : https ? 443 : 80;
    if (port && (plen == 0 || plen > 5 || strspn(port, "0123456789") != plen ||
                 (p = strtoul(port, NULL, 10)) > 65535)) {
        fy_yaml_report(l, v->start_mark,
                       "server '%s': port must be a number from 0 to 65535, got '%s'", raw, port);
        return -1;
    }
    s->port = (uint16_t)p;
    if (s->port == 0) {
        fy_yaml_report(l, v->start_mark, "server '%s': port 0 cannot be connected to", raw);
        return -1;
    }
    s->host = strdup(host);
    s->authority = strdup(auth); /* the default Host: as written, port only when written */
    snprintf(s->cookie_id, sizeof(s->cookie_id), "%016" PRIx64, fnv1a(url));
    if (!s->host || !s->authority) {
        fy_yaml_report(l, v->start_mark, "out of memory");
        return -1;
    }
    return 0;
}

static const char *const server_keys[] = {"url", "weight", "backup", "max-conns", "server-name"};

/* Loads one server; returns its URL node when the URL parsed (its host is to be resolved). */
static const yaml_node_t *load_server(struct fy_yaml_loader *l, struct fy_server *s,
                                      const yaml_node_t *v)
{
    s->weight = 1;
    const yaml_node_t *url = v, *name = NULL;
    if (v->type == YAML_MAPPING_NODE) {
        fy_sc_keys(l, v, "a server", server_keys, NKEYS(server_keys));
        url = fy_sc_get(l, v, "url");
        if (!url) {
            fy_yaml_report(l, v->start_mark,
                           "a server needs url: where it is (url: http://10.0.0.1:3000)");
            return NULL;
        }
        const yaml_node_t *n;
        if ((n = fy_sc_get(l, v, "weight")))
            fy_sc_u32(l, n, "weight", 1, 1000, &s->weight);
        if ((n = fy_sc_get(l, v, "backup")))
            fy_sc_bool(l, n, "backup", &s->backup);
        if ((n = fy_sc_get(l, v, "max-conns")))
            fy_sc_u32(l, n, "max-conns", 0, 1u << 24, &s->max_conns);
        if ((name = fy_sc_get(l, v, "server-name")))
            s->tls_name = fy_sc_server_name(l, name, "server-name");
    } else if (v->type != YAML_SCALAR_NODE) {
        fy_yaml_report(l, v->start_mark,
                       "a server is a URL or { url: ..., weight: N, backup: true }, got %s",
                       fy_yaml_node_kind(v));
        return NULL;
    }
    s->url = fy_sc_string(l, url, "url");
    if (name && s->url && !fy_sc_is_https(s->url))
        fy_yaml_report(l, name->start_mark,
                       "server-name is the name an https:// server's certificate is checked "
                       "against; %s is not https://",
                       s->url);
    return s->url && parse_url(l, url, s) == 0 ? url : NULL;
}

/* Loads the servers in file order, then stores them primaries first. */
static void load_servers(struct fy_yaml_loader *l, struct fy_group *g, const yaml_node_t *v,
                         const yaml_node_t *group)
{
    size_t n = fy_sc_nitems(l, v, "servers");
    if (n == 0 && v->type != YAML_MAPPING_NODE)
        fy_yaml_report(l, v->start_mark, "servers: the list is empty");
    if (n == 0)
        return;
    struct fy_server *file = calloc(n, sizeof(*file));
    size_t *lines = calloc(n, sizeof(*lines));
    const yaml_node_t **urls = calloc(n, sizeof(*urls));
    struct fy_server_ref *refs = realloc(l->servers, (l->nservers + n) * sizeof(*refs));
    if (refs)
        l->servers = refs;
    g->servers = calloc(n, sizeof(*g->servers));
    if (!file || !lines || !urls || !refs || !g->servers) {
        free(file);
        free(lines);
        free(urls);
        fy_yaml_report(l, v->start_mark, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *it = fy_sc_item(l, v, i);
        urls[i] = load_server(l, &file[i], it);
        lines[i] = it->start_mark.line + 1;
        for (size_t j = 0; j < i && file[i].authority; j++)
            if (file[j].authority && !strcasecmp(file[j].authority, file[i].authority)) {
                fy_yaml_report(l, it->start_mark,
                               "server %s is listed twice in upstream %s (also at line %zu)",
                               file[i].url, g->name ? g->name : "?", lines[j]);
                break;
            }
    }
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < n; i++)
            if (file[i].backup == (pass == 1)) {
                struct fy_server *s = &g->servers[g->nservers];
                *s = file[i];
                s->index = g->nservers++;
                g->nprimary += !s->backup;
                /* g->servers is final: its entries' addresses stay valid for the second pass. */
                if (urls[i])
                    l->servers[l->nservers++] = (struct fy_server_ref){s, urls[i]};
            }
    free(file);
    free(lines);
    free(urls);
    if (g->nprimary == 0)
        fy_yaml_report(l, group->start_mark,
                       "upstream %s has only backup servers: at least one server must not be a "
                       "backup",
                       g->name ? g->name : "?");
}

/* ---- balance ---- */

static const char *const balance_names[] = {"round-robin", "least-conn", "p2c", "hash", "sticky"};
static const char *const balance_keys[] = {"hash", "sticky"};
static const char *const sticky_keys[] = {"cookie"};

/* A header or cookie name after "header:" / "cookie:". */
static char *take_token(struct fy_yaml_loader *l, const yaml_node_t *v, const char *name,
                        const char *what)
{
    if (!fy_sc_is_token(name, strlen(name))) {
        fy_yaml_report(l, v->start_mark, "%s: '%s' is not a valid %s name", what, name,
                       strncmp(what, "cookie", 6) ? "header field" : "cookie");
        return NULL;
    }
    char *s = strdup(name);
    if (!s)
        fy_yaml_report(l, v->start_mark, "out of memory");
    return s;
}

static void load_hash(struct fy_yaml_loader *l, struct fy_group *g, const yaml_node_t *v)
{
    g->balance = FY_LB_HASH;
    char *key = fy_sc_string(l, v, "hash");
    if (!key)
        return;
    if (!strcmp(key, "client-ip")) {
        g->hash_key = FY_HK_CLIENT_IP;
    } else if (!strcmp(key, "path")) {
        g->hash_key = FY_HK_PATH;
    } else if (!strncmp(key, "header:", 7)) {
        g->hash_key = FY_HK_HEADER;
        g->hash_name = take_token(l, v, key + 7, "hash header");
    } else if (!strncmp(key, "cookie:", 7)) {
        g->hash_key = FY_HK_COOKIE;
        g->hash_name = take_token(l, v, key + 7, "cookie");
    } else {
        fy_yaml_report(l, v->start_mark,
                       "hash expects client-ip, path, header:NAME or cookie:NAME, got '%s'", key);
    }
    if (g->hash_name)
        g->hash_name_len = (uint32_t)strlen(g->hash_name);
    free(key);
}

static void load_balance(struct fy_yaml_loader *l, struct fy_group *g, const yaml_node_t *v)
{
    if (v->type == YAML_SCALAR_NODE) {
        const char *s = fy_sc_raw(l, v, "balance");
        if (!s)
            return;
        if (!strcmp(s, "round-robin"))
            g->balance = FY_LB_ROUND_ROBIN;
        else if (!strcmp(s, "least-conn"))
            g->balance = FY_LB_LEAST_CONN;
        else if (!strcmp(s, "p2c"))
            g->balance = FY_LB_P2C;
        else if (!strcmp(s, "hash"))
            fy_yaml_report(l, v->start_mark, "hash needs a key: balance: { hash: client-ip }");
        else if (!strcmp(s, "sticky"))
            fy_yaml_report(l, v->start_mark,
                           "sticky needs a cookie: balance: { sticky: { cookie: NAME } }");
        else if (fy_yaml_suggest(s, balance_names, NKEYS(balance_names)))
            fy_yaml_report(l, v->start_mark, "unknown balance '%s' (did you mean %s?)", s,
                           fy_yaml_suggest(s, balance_names, NKEYS(balance_names)));
        else
            fy_yaml_report(l, v->start_mark,
                           "balance expects round-robin, least-conn, p2c, { hash: KEY } or { "
                           "sticky: { cookie: NAME } }, got '%s'",
                           s);
        return;
    }
    if (!fy_sc_keys(l, v, "balance", balance_keys, NKEYS(balance_keys)))
        return;
    const yaml_node_t *hash = fy_sc_get(l, v, "hash"), *sticky = fy_sc_get(l, v, "sticky");
    if (!!hash + !!sticky != 1) {
        fy_yaml_report(l, v->start_mark,
                       "balance takes one of { hash: KEY } or { sticky: { cookie: NAME } }");
        return;
    }
    if (hash) {
        load_hash(l, g, hash);
        return;
    }
    g->balance = FY_LB_STICKY;
    if (!fy_sc_keys(l, sticky, "sticky", sticky_keys, NKEYS(sticky_keys)))
        return;
    const yaml_node_t *cookie = fy_sc_get(l, sticky, "cookie");
    if (!cookie) {
        fy_yaml_report(l, sticky->start_mark,
                       "sticky needs cookie: the cookie naming the server (cookie: srv)");
        return;
    }
    char *name = fy_sc_string(l, cookie, "cookie");
    if (name)
        g->sticky_cookie = take_token(l, cookie, name, "cookie");
    free(name);
}

/* ---- health ---- */

static const char *const health_keys[] = {"path", "interval", "timeout", "rise", "fall", "expect"};

/* "200-399" or "204" into lo..hi. */
static int parse_status_range(const char *s, uint16_t *lo, uint16_t *hi)
{
    char *end;
    unsigned long a = strtoul(s, &end, 10), b = a;
    if (end == s || *s < '0' || *s > '9')
        return -1;
    if (*end == '-') {
        const char *t = end + 1;
        if (*t < '0' || *t > '9')
            return -1;
        b = strtoul(t, &end, 10);
    }
    if (*end || a < 100 || b > 599 || a > b)
        return -1;
    *lo = (uint16_t)a;
    *hi = (uint16_t)b;
    return 0;
}

static void load_expect(struct fy_yaml_loader *l, struct fy_health *h, const yaml_node_t *v)
{
    size_t n = fy_sc_nitems(l, v, "expect");
    if (n == 0) {
        if (v->type == YAML_SEQUENCE_NODE)
            fy_yaml_report(l, v->start_mark, "expect: the list is empty");
        return;
    }
    uint16_t(*ranges)[2] = calloc(n, sizeof(*ranges));
    if (!ranges) {
        fy_yaml_report(l, v->start_mark, "out of memory");
        return;
    }
    free(h->expect);
    h->expect = ranges;
    h->nexpect = 0;
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *it = fy_sc_item(l, v, i);
        char *s = fy_sc_string(l, it, "expect");
        if (!s)
            continue;
        if (parse_status_range(s, &ranges[h->nexpect][0], &ranges[h->nexpect][1]) == 0)
            h->nexpect++;
        else
            fy_yaml_report(l, it->start_mark,
                           "expect: '%s' is not a status (200) or a range of statuses (200-399) "
                           "from 100 to 599",
                           s);
        free(s);
    }
}

static void fmt_ms(char *out, size_t size, uint64_t ms)
{
    if (ms % 1000 == 0)
        snprintf(out, size, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(out, size, "%llums", (unsigned long long)ms);
}

static void load_health(struct fy_yaml_loader *l, struct fy_health *h, const yaml_node_t *v)
{
    *h = (struct fy_health){
        .enabled = true, .interval = 5000, .timeout = 2000, .rise = 2, .fall = 3};
    h->path = strdup("/");
    h->expect = calloc(1, sizeof(*h->expect));
    if (!h->path || !h->expect) {
        fy_yaml_report(l, v->start_mark, "out of memory");
        return;
    }
    h->expect[0][0] = 200;
    h->expect[0][1] = 399;
    h->nexpect = 1;
    if (fy_sc_is_null(v) || !fy_sc_keys(l, v, "health", health_keys, NKEYS(health_keys)))
        return;
    const yaml_node_t *n;
    if ((n = fy_sc_get(l, v, "path"))) {
        char *p = fy_sc_string(l, n, "health path");
        if (p && p[0] != '/')
            fy_yaml_report(l, n->start_mark, "health path must start with '/', got '%s'", p);
        if (p) {
            free(h->path);
            h->path = p;
        }
    }
    if ((n = fy_sc_get(l, v, "interval")) && fy_sc_duration(l, n, "interval", &h->interval) == 0 &&
        h->interval == 0)
        fy_yaml_report(l, n->start_mark, "interval must be more than 0");
    if ((n = fy_sc_get(l, v, "timeout")))
        fy_sc_duration(l, n, "timeout", &h->timeout);
    if (h->timeout >= h->interval && h->interval) {
        char t[32], i[32];
        fmt_ms(t, sizeof(t), h->timeout);
        fmt_ms(i, sizeof(i), h->interval);
        fy_yaml_report(l, (n ? n : v)->start_mark,
                       "health timeout (%s) must be shorter than its interval (%s)", t, i);
    }
    if ((n = fy_sc_get(l, v, "rise")))
        fy_sc_u32(l, n, "rise", 1, 100, &h->rise);
    if ((n = fy_sc_get(l, v, "fall")))
        fy_sc_u32(l, n, "fall", 1, 100, &h->fall);
    if ((n = fy_sc_get(l, v, "expect")))
        load_expect(l, h, n);
}

/* ---- groups ---- */

static const char *const group_keys[] = {"servers",   "balance",       "health",
                                         "retries",   "max-fails",     "fail-timeout",
                                         "max-queue", "queue-timeout", "tls"};

static void load_group(struct fy_yaml_loader *l, struct fy_group *g, const yaml_node_t *name,
                       const yaml_node_t *v)
{
    g->balance = FY_LB_ROUND_ROBIN;
    g->retries = 1;
    g->max_fails = 3;
    g->fail_timeout = 10000;
    g->max_queue = 100;
    g->queue_timeout = 5000;
    if (!fy_sc_keys(l, v, "an upstream", group_keys, NKEYS(group_keys)))
        return;
    const yaml_node_t *n = fy_sc_get(l, v, "servers");
    if (!n || fy_sc_is_null(n))
        fy_yaml_report(l, v->start_mark,
                       "upstream %s needs servers: the list of its server URLs (servers: "
                       "[http://10.0.0.1:3000])",
                       g->name ? g->name : "?");
    else
        load_servers(l, g, n, v);
    if ((n = fy_sc_get(l, v, "balance")))
        load_balance(l, g, n);
    if ((n = fy_sc_get(l, v, "health")))
        load_health(l, &g->health, n);
    if ((n = fy_sc_get(l, v, "retries")))
        fy_sc_u32(l, n, "retries", 0, 10, &g->retries);
    if ((n = fy_sc_get(l, v, "max-fails")))
        fy_sc_u32(l, n, "max-fails", 0, 1000, &g->max_fails);
    if ((n = fy_sc_get(l, v, "fail-timeout")))
        fy_sc_duration(l, n, "fail-timeout", &g->fail_timeout);
    if ((n = fy_sc_get(l, v, "max-queue")))
        fy_sc_u32(l, n, "max-queue", 0, 1u << 20, &g->max_queue);
    if ((n = fy_sc_get(l, v, "queue-timeout")))
        fy_sc_duration(l, n, "queue-timeout", &g->queue_timeout);
    fy_schema_load_group_tls(l, g, name, fy_sc_key(l, v, "tls"), fy_sc_get(l, v, "tls"));
}

static bool valid_group_name(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return false;
    return true;
}

void fy_schema_load_upstreams(struct fy_yaml_loader *l, const yaml_node_t *v)
{
    if (fy_sc_is_null(v))
        return;
    if (v->type != YAML_MAPPING_NODE) {
        fy_yaml_report(l, v->start_mark,
                       "upstreams expects a mapping of names to groups (api: { servers: "
                       "[http://HOST:PORT] }), got %s",
                       fy_yaml_node_kind(v));
        return;
    }
    size_t n = fy_sc_npairs(v);
    if (n == 0)
        return;
    struct fy_config *c = l->c;
    c->groups = calloc(n, sizeof(*c->groups));
    if (!c->groups) {
        fy_yaml_report(l, v->start_mark, "out of memory");
        return;
    }
    c->ngroups = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *val;
        const yaml_node_t *k = fy_sc_pair(l, v, i, &val);
        struct fy_group *g = &c->groups[i];
        g->index = (uint32_t)i;
        const char *name = fy_sc_raw(l, k, "an upstream name");
        if (name && !valid_group_name(name)) {
            fy_yaml_report(l, k->start_mark,
                           "upstream name '%s': use letters, digits, '-', '_' and '.'", name);
        } else if (name) {
            for (size_t j = 0; j < i; j++)
                if (c->groups[j].name && !strcmp(c->groups[j].name, name)) {
                    const yaml_node_t *pv;
                    fy_yaml_report(l, k->start_mark,
                                   "duplicate upstream '%s' (first given at line %zu)", name,
                                   fy_sc_pair(l, v, j, &pv)->start_mark.line + 1);
                    name = NULL;
                    break;
                }
            if (name && !(g->name = strdup(name)))
                fy_yaml_report(l, k->start_mark, "out of memory");
        }
        g->where = fy_sc_where(l, k);
        load_group(l, g, k, val);
    }
}

/* Same host as an earlier server of the pass: its answer (or failure) again, with this port,
 * rather than asking DNS again (a dead resolver would cost resolve-timeout per server). */
static int reuse(const struct fy_server_ref *refs, size_t i, struct fy_server *s)
{
    for (size_t j = 0; j < i; j++) {
        const struct fy_server *t = refs[j].server;
        if (strcasecmp(t->host, s->host))
            continue;
        if (!t->naddrs)
            return -1;
        if (!(s->addrs = malloc(t->naddrs * sizeof(*s->addrs))))
            return 0;
        s->naddrs = t->naddrs;
        for (uint32_t k = 0; k < t->naddrs; k++) {
            s->addrs[k] = t->addrs[k];
            struct sockaddr *sa = (struct sockaddr *)&s->addrs[k].ss;
            if (sa->sa_family == AF_INET)
                ((struct sockaddr_in *)sa)->sin_port = htons(s->port);
            else
                ((struct sockaddr_in6 *)sa)->sin6_port = htons(s->port);
        }
        return 1;
    }
    return 0;
}

void fy_schema_resolve_servers(struct fy_yaml_loader *l)
{
    const struct fy_resolver_conf *rc = &l->c->resolver;
    for (size_t i = 0; i < l->nservers; i++) {
        struct fy_server *s = l->servers[i].server;
        const yaml_node_t *v = l->servers[i].node;
        const char *raw = (const char *)v->data.scalar.value;
        int again = reuse(l->servers, i, s);
        char why[300];
        if (again < 0) {
            fy_yaml_report(l, v->start_mark, "server '%s': cannot resolve %s (as above)", raw,
                           s->host);
            continue;
        }
        if (!again &&
            fy_resolve(rc, s->host, s->port, &s->addrs, &s->naddrs, why, sizeof(why)) < 0) {
            fy_yaml_report(l, v->start_mark, "server '%s': %s", raw, why);
            continue;
        }
        if (!s->naddrs) {
            fy_yaml_report(l, v->start_mark, "out of memory");
            continue;
        }
        s->addr = s->addrs[0];
    }
    free(l->servers);
    l->servers = NULL;
    l->nservers = 0;
}

void fy_groups_free(struct fy_group *gs, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        struct fy_group *g = &gs[i];
        for (uint32_t s = 0; s < g->nservers; s++) {
            free(g->servers[s].url);
            free(g->servers[s].authority);
            free(g->servers[s].host);
            free(g->servers[s].addrs);
            free(g->servers[s].tls_name);
        }
        fy_tls_client_unref(g->tls);
        free(g->servers);
        free(g->name);
        free(g->where);
        free(g->hash_name);
        free(g->sticky_cookie);
        free(g->health.path);
        free(g->health.expect);
    }
    free(gs);
}
