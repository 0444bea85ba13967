/*
 * Unit tests for src/proxy/router.c: route precedence request by request, path-regex captures,
 * agreement of the index with a linear scan of fy_route_matches() over random route sets, and a
 * large listener whose lookups must stay cheap. The .c is included so FY_ROUTER_TOUCH can count
 * the routes a lookup checks.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static __thread unsigned touched; /* per thread: see Test(router, threads) */
#define FY_ROUTER_TOUCH() (touched++)
#include "../../src/proxy/router.c"

#include "core/macros.h"
#include "http/path.h"

/* ---- regexes, compiled as the config loader does; shared by routes, freed at the end ---- */

static struct {
    char *src;
    pcre2_code *re;
} rx_cache[256];
static int nrx;

static fy_regex *rx(const char *src)
{
    for (int i = 0; i < nrx; i++)
        if (strcmp(rx_cache[i].src, src) == 0)
            return rx_cache[i].re;
    int err;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)src, PCRE2_ZERO_TERMINATED, 0, &err, &off, NULL);
    cr_assert_not_null(re, "regex %s", src);
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* no JIT on this machine: pcre2 interprets */
    cr_assert_lt(nrx, (int)FY_ARRAY_LEN(rx_cache));
    rx_cache[nrx].src = strdup(src);
    rx_cache[nrx].re = re;
    return rx_cache[nrx++].re;
}

static void rx_free_all(void)
{
    for (int i = 0; i < nrx; i++) {
        free(rx_cache[i].src);
        pcre2_code_free(rx_cache[i].re);
    }
    nrx = 0;
}

/* ---- routes from a compact description ---- */

struct rspec {
    const char *hosts;   /* space-separated */
    const char *path;    /* exact */
    const char *prefix;  /* path-prefix */
    const char *regex;   /* path-regex */
    const char *methods; /* space-separated */
    /* ';'-separated conditions: "name" present, "name=value" equals, "name~regex" regex */
    const char *headers;
    const char *query;
    bool catch_all; /* has_match = false */
};

static char **split(const char *s, char sep, uint32_t *n)
{
    *n = 0;
    if (!s || !*s)
        return NULL;
    char **v = calloc(strlen(s) + 1, sizeof(*v));
    cr_assert_not_null(v);
    const char *p = s;
    for (;;) {
        const char *e = strchr(p, sep);
        size_t len = e ? (size_t)(e - p) : strlen(p);
        v[(*n)++] = strndup(p, len);
        if (!e)
            break;
        p = e + 1;
    }
    return v;
}

static void free_strv(char **v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static struct fy_kv_match *parse_kv(const char *s, uint32_t *n)
{
    char **items = split(s, ';', n);
    if (!*n)
        return NULL;
    struct fy_kv_match *kv = calloc(*n, sizeof(*kv));
    cr_assert_not_null(kv);
    for (uint32_t i = 0; i < *n; i++) {
        char *it = items[i];
        char *op = strpbrk(it, "=~");
        kv[i].kind = !op ? FY_VM_PRESENT : *op == '=' ? FY_VM_EQUALS : FY_VM_REGEX;
        kv[i].name = strndup(it, op ? (size_t)(op - it) : strlen(it));
        kv[i].name_len = (uint32_t)strlen(kv[i].name);
        if (op) {
            kv[i].value = strdup(op + 1);
            kv[i].value_len = (uint32_t)strlen(kv[i].value);
        }
        if (kv[i].kind == FY_VM_REGEX)
            kv[i].re = rx(kv[i].value);
    }
    free_strv(items, *n);
    return kv;
}

static void free_kv(struct fy_kv_match *kv, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free(kv[i].name);
        free(kv[i].value);
    }
    free(kv);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void make_route(struct fy_route *rt, uint32_t index, const struct rspec *sp)
{
    memset(rt, 0, sizeof(*rt));
    rt->index = index;
    rt->has_match = !sp->catch_all;
    struct fy_match *m = &rt->match;
    m->hosts = split(sp->hosts, ' ', &m->nhosts);
    m->path = dup_or_null(sp->path);
    m->path_prefix = dup_or_null(sp->prefix);
    if (sp->regex) {
        m->path_regex = rx(sp->regex);
        m->path_regex_src = strdup(sp->regex);
    }
    m->methods = split(sp->methods, ' ', &m->nmethods);
    m->headers = parse_kv(sp->headers, &m->nheaders);
    m->query = parse_kv(sp->query, &m->nquery);
}

static void make_listener(struct fy_listener_conf *l, const struct rspec *specs, uint32_t n)
{
    memset(l, 0, sizeof(*l));
    l->routes = calloc(n ? n : 1, sizeof(*l->routes));
    cr_assert_not_null(l->routes);
    l->nroutes = n;
    for (uint32_t i = 0; i < n; i++)
        make_route(&l->routes[i], i, &specs[i]);
    l->router = fy_router_build(l);
    cr_assert_not_null(l->router);
}

static void free_listener(struct fy_listener_conf *l)
{
    fy_router_free(l->router);
    for (uint32_t i = 0; i < l->nroutes; i++) {
        struct fy_match *m = &l->routes[i].match;
        free_strv(m->hosts, m->nhosts);
        free(m->path);
        free(m->path_prefix);
        free(m->path_regex_src);
        free_strv(m->methods, m->nmethods);
        free_kv(m->headers, m->nheaders);
        free_kv(m->query, m->nquery);
    }
    free(l->routes);
    memset(l, 0, sizeof(*l));
}

/* ---- requests ---- */

/* A request as the session would present it. Points into itself: never copied. */
struct treq {
    struct fy_msg msg;
    char text[1024]; /* method and "Name: value" lines, cut in place */
    char host[256];
    char path[1024];
    struct fy_route_req req;
};

/* host: the Host field as received (NULL: none); hdrs: "Name: value" lines separated by '\n'. */
static void mkreq(struct treq *t, const char *method, const char *host, const char *target,
                  const char *hdrs)
{
    memset(&t->req, 0, sizeof(t->req));
    fy_msg_init(&t->msg);
    snprintf(t->text, sizeof(t->text), "%s\n%s", method, hdrs ? hdrs : "");
    char *nl = strchr(t->text, '\n');
    *nl = 0;
    t->msg.method = t->text;
    t->msg.method_len = (uint32_t)strlen(t->text);
    if (host) {
        cr_assert_eq(fy_msg_add(&t->msg, "Host", 4, host, (uint32_t)strlen(host), FY_TOK_HOST), 0);
        t->req.host = t->host;
        t->req.host_len = fy_route_host_key(host, (uint32_t)strlen(host), t->host);
    }
    for (char *line = nl + 1; *line;) {
        char *end = strchr(line, '\n');
        if (end)
            *end = 0;
        char *colon = strchr(line, ':');
        cr_assert_not_null(colon, "bad header line %s", line);
        char *v = colon + 1;
        while (*v == ' ')
            v++;
        cr_assert_eq(fy_msg_add(&t->msg, line, (uint32_t)(colon - line), v, (uint32_t)strlen(v),
                                fy_token_lookup(line, (size_t)(colon - line))),
                     0);
        if (!end)
            break;
        line = end + 1;
    }
    const char *q = strchr(target, '?');
    uint32_t plen = q ? (uint32_t)(q - target) : (uint32_t)strlen(target);
    cr_assert_lt(plen, sizeof(t->path));
    int n = fy_path_normalize(target, plen, t->path);
    cr_assert_geq(n, 0, "bad path %s", target);
    t->req.path = t->path;
    t->req.path_len = (uint32_t)n;
    if (q) {
        t->req.query = q + 1;
        t->req.query_len = (uint32_t)strlen(q + 1);
    }
    t->req.msg = &t->msg;
}

static void freereq(struct treq *t)
{
    fy_msg_free(&t->msg);
}

/* The reference: the first route in file order that fy_route_matches accepts. */
static int linear(const struct fy_listener_conf *l, const struct fy_route_req *req,
                  struct fy_route_result *out)
{
    for (uint32_t i = 0; i < l->nroutes; i++)
        if (fy_route_matches(&l->routes[i], req, out))
            return (int)l->routes[i].index;
    return -1;
}

static int routed(const struct fy_listener_conf *l, const struct fy_route_req *req,
                  struct fy_route_result *out)
{
    touched = 0;
    if (!fy_router_match(l->router, req, out)) {
        cr_assert_null(out->route);
        return -1;
    }
    return (int)out->route->index;
}

static void assert_same_result(const struct fy_route_result *a, const struct fy_route_result *b,
                               const char *what)
{
    cr_assert_eq(a->route, b->route, "%s: route", what);
    cr_assert_eq(a->ncaptures, b->ncaptures, "%s: ncaptures", what);
    if (a->route)
        cr_assert(memcmp(a->ovector, b->ovector, sizeof(a->ovector)) == 0, "%s: ovector", what);
}

/* ---- (1) precedence ---- */

static const struct rspec precedence_routes[] = {
    /* 0 */ {.hosts = "api.example.com", .path = "/exact"},
    /* 1 */ {.hosts = "*.example.com", .prefix = "/exact"},
    /* 2 */ {.hosts = "api.example.com", .prefix = "/v1/", .methods = "GET HEAD"},
    /* 3 */ {.hosts = "api.example.com", .regex = "^/v1/(users)/([0-9]+)$"},
    /* 4 */ {.hosts = "api.example.com", .prefix = "/v1/", .headers = "X-Debug"},
    /* 5 */ {.hosts = "api.example.com", .prefix = "/v1/", .headers = "X-Env=prod"},
    /* 6 */ {.hosts = "api.example.com", .prefix = "/v1/", .headers = "User-Agent~curl/[0-9]"},
    /* 7 */ {.hosts = "api.example.com", .path = "/search", .query = "q;lang=en"},
    /* 8 */ {.hosts = "api.example.com", .path = "/search", .query = "q=hello world"},
    /* 9 */ {.hosts = "api.example.com", .path = "/search", .query = "id~^[0-9]+$"},
    /* 10 */ {.hosts = "static.example.org *.cdn.example.org", .prefix = "/"},
    /* 11 */ {.hosts = "*.example.org", .path = "/health"},
    /* 12 */ {.hosts = "*.example.net", .prefix = "/w/"},
    /* 13 */ {.hosts = "a.example.net", .prefix = "/"},
    /* 14 */ {.path = "/health"},
    /* 15 */ {.methods = "DELETE"},
    /* 16 */ {.path = "/admin", .headers = "X-Admin=yes"},
    /* 17 */ {.hosts = "[::1]", .prefix = "/"},
    /* 18 */ {.hosts = "localhost", .path = "/exact", .methods = "GET"},
    /* 19 */ {.hosts = "api.example.com", .path = "/both", .prefix = "/bo", .regex = "h$"},
    /* 20 */ {.hosts = "api.example.com", .path = "/bothx", .prefix = "/bo", .regex = "y$"},
    /* 21 */ {.hosts = "api.example.com", .path = "/both2", .prefix = "/x"},
    /* 22 */ {.hosts = "api.example.com", .regex = "^/re/", .headers = "X-Env=prod;X-Debug"},
    /* 23 */ {.catch_all = true},
};

struct rcase {
    const char *method, *host, *target, *hdrs;
    int want; /* route index, -1: none */
};

static const struct rcase precedence_cases[] = {
    /* exact host and path; Host compared lower-cased and without its port */
    {"GET", "api.example.com", "/exact", NULL, 0},
    {"GET", "API.Example.COM:8443", "/exact", NULL, 0},
    {"GET", "api.example.com", "/exact?x=1", NULL, 0},
    {"GET", "api.example.com", "/a/../exact", NULL, 0},
    {"GET", "api.example.com", "/%65xact", NULL, 0},
    /* prefix after exact; wildcards cover subdomains at any depth, not the apex */
    {"GET", "api.example.com", "/exactly", NULL, 1},
    {"GET", "www.example.com", "/exact", NULL, 1},
    {"GET", "a.b.example.com", "/exact/x", NULL, 1},
    {"GET", "example.com", "/exact", NULL, 23},
    {"GET", "xexample.com", "/exact", NULL, 23},
    /* first match wins: the prefix route 2 shadows the regex route 3 for GET */
    {"GET", "api.example.com", "/v1/users/7", NULL, 2},
    {"HEAD", "api.example.com", "/v1/x", NULL, 2},
    {"POST", "api.example.com", "/v1/users/7", NULL, 3},
    {"get", "api.example.com", "/v1/users/7", NULL, 3}, /* methods are case-sensitive */
    {"GET", "api.example.com", "/v1", NULL, 23},        /* "/v1/" is a byte prefix */
    {"GET", "api.example.com", "/v1%2F", NULL, 23},     /* an encoded slash is no slash */
    /* headers */
    {"POST", "api.example.com", "/v1/x", "x-debug: ", 4},
    {"POST", "api.example.com", "/v1/x", "X-Env: prod", 5},
    {"POST", "api.example.com", "/v1/x", "X-Env: Prod", 23},
    {"POST", "api.example.com", "/v1/x", "X-Env: dev\nX-ENV: prod", 5},
    {"POST", "api.example.com", "/v1/x", "X-Env: prod\nX-Debug: 1", 4},
    {"POST", "api.example.com", "/v1/x", "User-Agent: my curl/8.1", 6},
    {"POST", "api.example.com", "/v1/x", "User-Agent: curl/x", 23},
    {"POST", "api.example.com", "/v1/x", "X-Envy: prod", 23},
    {"GET", "api.example.com", "/re/1", "X-Env: prod", 23},
    {"GET", "api.example.com", "/re/1", "X-Debug: 1\nX-Env: prod", 22},
    /* query */
    {"GET", "api.example.com", "/search?q=1&lang=en", NULL, 7},
    {"GET", "api.example.com", "/search?lang=en&q", NULL, 7},
    {"GET", "api.example.com", "/search?q=1;lang=en", NULL, 23},
    {"GET", "api.example.com", "/search?q=hello+world", NULL, 8},
    {"GET", "api.example.com", "/search?q=hello%20world", NULL, 8},
    {"GET", "api.example.com", "/search?%71=hello+world", NULL, 8},
    {"GET", "api.example.com", "/search?q=hello+world&lang=en", NULL, 7},
    {"GET", "api.example.com", "/search?q=hello", NULL, 23},
    {"GET", "api.example.com", "/search?id=abc&id=42", NULL, 9},
    {"GET", "api.example.com", "/search?id=4%32", NULL, 9},
    {"GET", "api.example.com", "/search?id=4+2", NULL, 23},
    {"GET", "api.example.com", "/search?", NULL, 23},
    {"GET", "api.example.com", "/search", NULL, 23},
    /* a list of hosts, exact and wildcard; the earlier route wins where both cover a host */
    {"GET", "static.example.org", "/a", NULL, 10},
    {"GET", "x.cdn.example.org", "/health", NULL, 10},
    {"GET", "cdn.example.org", "/health", NULL, 11},
    {"GET", "foo.example.org", "/health", NULL, 11},
    {"GET", "example.org", "/health", NULL, 14},
    {"GET", "a.example.net", "/w/1", NULL, 12},
    {"GET", "a.example.net", "/z", NULL, 13},
    {"GET", "b.example.net", "/z", NULL, 23},
    /* no Host: only host-less routes */
    {"GET", NULL, "/health", NULL, 14},
    {"GET", NULL, "/exact", NULL, 23},
    {"GET", "", "/exact", NULL, 23},
    {"DELETE", "api.example.com", "/exact", NULL, 0},
    {"DELETE", "example.com", "/anything", NULL, 15},
    {"GET", "any.host", "/a/../admin", "X-Admin: yes", 16},
    {"GET", "any.host", "/%61dmin", "X-Admin: yes", 16},
    {"GET", "any.host", "/admin", "X-Admin: no", 23},
    {"GET", "[::1]:8080", "/x", NULL, 17},
    {"GET", "LOCALHOST:80", "/exact", NULL, 18},
    {"POST", "localhost", "/exact", NULL, 23},
    /* every path condition given must hold */
    {"GET", "api.example.com", "/both", NULL, 19},
    {"GET", "api.example.com", "/bothx", NULL, 23},
    {"GET", "api.example.com", "/both2", NULL, 23},
};

static void run_cases(const struct fy_listener_conf *l, const struct rcase *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct rcase *c = &cases[i];
        struct treq t;
        mkreq(&t, c->method, c->host, c->target, c->hdrs);
        struct fy_route_result a = {0}, b = {0}; /* linear() leaves b alone when nothing matches */
        int got = routed(l, &t.req, &a), ref = linear(l, &t.req, &b);
        cr_expect_eq(got, c->want, "%s %s %s [%s]: route %d, want %d", c->method,
                     c->host ? c->host : "(no host)", c->target, c->hdrs ? c->hdrs : "", got,
                     c->want);
        cr_expect_eq(ref, c->want, "%s %s %s: linear scan says %d, want %d", c->method,
                     c->host ? c->host : "(no host)", c->target, ref, c->want);
        assert_same_result(&a, &b, c->target);
        freereq(&t);
    }
}

Test(router, precedence)
{
    struct fy_listener_conf l;
    make_listener(&l, precedence_routes, FY_ARRAY_LEN(precedence_routes));
    run_cases(&l, precedence_cases, FY_ARRAY_LEN(precedence_cases));
    free_listener(&l);
    rx_free_all();
    fy_router_thread_release();
}

Test(router, no_match)
{
    static const struct rspec routes[] = {
        {.hosts = "a.com", .path = "/"},
        {.hosts = "*.a.com", .prefix = "/p/"},
        {.prefix = "/only/", .methods = "GET"},
    };
    static const struct rcase cases[] = {
        {"GET", "a.com", "/", NULL, 0},     {"GET", "a.com", "/x", NULL, -1},
        {"GET", "b.com", "/", NULL, -1},    {"GET", "x.a.com", "/p/", NULL, 1},
        {"GET", "x.a.com", "/p", NULL, -1}, {"GET", NULL, "/only/x", NULL, 2},
        {"PUT", NULL, "/only/x", NULL, -1},
    };
    struct fy_listener_conf l;
    make_listener(&l, routes, FY_ARRAY_LEN(routes));
    run_cases(&l, cases, FY_ARRAY_LEN(cases));
    free_listener(&l);

    /* A listener without routes routes nothing. */
    make_listener(&l, NULL, 0);
    run_cases(&l, cases + 2, 1);
    free_listener(&l);
    rx_free_all();
}

Test(router, removed_header_is_invisible)
{
    static const struct rspec routes[] = {
        {.headers = "X-Env=prod"},
        {.headers = "X-Env"},
        {.catch_all = true},
    };
    struct fy_listener_conf l;
    make_listener(&l, routes, FY_ARRAY_LEN(routes));
    struct treq t;
    mkreq(&t, "GET", "h", "/", "X-Env: prod\nX-Env: dev");
    struct fy_route_result res;
    cr_expect_eq(routed(&l, &t.req, &res), 0);
    fy_msg_find(&t.msg, "X-Env", 5)->removed = true;
    cr_expect_eq(routed(&l, &t.req, &res), 1);
    fy_msg_remove(&t.msg, "x-env", 5);
    cr_expect_eq(routed(&l, &t.req, &res), 2);
    freereq(&t);
    free_listener(&l);
    rx_free_all();
}

Test(router, host_key)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"Example.COM:8080", "example.com"},
        {"example.com", "example.com"},
        {"[::1]:80", "[::1]"},
        {"[FE80::1]", "[fe80::1]"},
        {"10.0.0.1:443", "10.0.0.1"},
        {"a:", "a"},
        {"", ""},
    };
    for (size_t i = 0; i < FY_ARRAY_LEN(cases); i++) {
        char out[64];
        uint32_t n = fy_route_host_key(cases[i].in, (uint32_t)strlen(cases[i].in), out);
        cr_expect(n == strlen(cases[i].want) && memcmp(out, cases[i].want, n) == 0, "%s: got %.*s",
                  cases[i].in, (int)n, out);
    }
}

/* ---- (2) captures ---- */

Test(router, captures)
{
    static const struct rspec routes[] = {
        {.regex = "^/u/([a-z]+)/(\\d+)(/x)?$"},
        {.regex = "^/(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)(l)$"},
        {.prefix = "/p"},
        {.regex = "/(m)id"},
    };
    struct fy_listener_conf l;
    make_listener(&l, routes, FY_ARRAY_LEN(routes));
    struct fy_route_result res, ref;
    struct treq t;

    mkreq(&t, "GET", NULL, "/u/%62ob/42", NULL); /* captures are over the normalised path */
    cr_assert_eq(routed(&l, &t.req, &res), 0);
    cr_expect_eq(res.ncaptures, 3); /* the unset (/x)? at the end is not counted */
    size_t want[] = {0, 9, 3, 6, 7, 9};
    for (int i = 0; i < 6; i++)
        cr_expect_eq(res.ovector[i], want[i], "ovector[%d] = %zu", i, res.ovector[i]);
    for (int i = 6; i < 2 * FY_ROUTE_MAX_CAPTURES; i++)
        cr_expect_eq(res.ovector[i], PCRE2_UNSET, "ovector[%d]", i);
    linear(&l, &t.req, &ref);
    assert_same_result(&res, &ref, "captures");
    freereq(&t);

    /* More groups than FY_ROUTE_MAX_CAPTURES: the first ten pairs. */
    mkreq(&t, "GET", NULL, "/abcdefghijkl", NULL);
    cr_assert_eq(routed(&l, &t.req, &res), 1);
    cr_expect_eq(res.ncaptures, FY_ROUTE_MAX_CAPTURES);
    for (int i = 1; i < FY_ROUTE_MAX_CAPTURES; i++)
        cr_expect(res.ovector[2 * i] == (size_t)i && res.ovector[2 * i + 1] == (size_t)i + 1,
                  "pair %d", i);
    freereq(&t);

    /* No regex: no captures, and nothing left over from the previous match. */
    mkreq(&t, "GET", NULL, "/p", NULL);
    cr_assert_eq(routed(&l, &t.req, &res), 2);
    cr_expect_eq(res.ncaptures, 0);
    for (int i = 0; i < 2 * FY_ROUTE_MAX_CAPTURES; i++)
        cr_expect_eq(res.ovector[i], PCRE2_UNSET);
    freereq(&t);

    /* Unanchored: the match may start anywhere. */
    mkreq(&t, "GET", NULL, "/x/mid", NULL);
    cr_assert_eq(routed(&l, &t.req, &res), 3);
    cr_expect(res.ncaptures == 2 && res.ovector[0] == 2 && res.ovector[2] == 3);
    freereq(&t);

    free_listener(&l);
    rx_free_all();
    fy_router_thread_release();
}

/* Matching needs its per-thread state; after a release it is made again. */
Test(router, thread_release_then_match)
{
    static const struct rspec routes[] = {{.regex = "^/(r)"}};
    struct fy_listener_conf l;
    make_listener(&l, routes, 1);
    struct treq t;
    mkreq(&t, "GET", NULL, "/r", NULL);
    struct fy_route_result res;
    fy_router_thread_release();
    fy_router_thread_release();
    cr_expect_eq(routed(&l, &t.req, &res), 0);
    fy_router_thread_release();
    cr_expect_eq(routed(&l, &t.req, &res), 0);
    cr_expect_eq(res.ncaptures, 2);
    freereq(&t);
    free_listener(&l);
    rx_free_all();
    fy_router_thread_release();
}

/* ---- (3) agreement with a linear scan over random route sets ---- */

static uint64_t next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

#define PICK(x, arr) ((arr)[next(x) % FY_ARRAY_LEN(arr)])

static const char *const v_hosts[] = {"a.com",     "b.com", "x.a.com", "y.x.a.com", "*.a.com",
                                      "*.x.a.com", "c.org", "*.org",   "*.c.org"};
static const char *const v_paths[] = {"/", "/a", "/a/", "/a/b", "/ab", "/b", "/a/b/c", ""};
static const char *const v_regex[] = {"^/a", "b$", "/a/(b)", "^/$", "(x)?c", "^/(a)(/b)?"};
static const char *const v_methods[] = {"GET", "POST", "get", "GET POST"};
static const char *const v_headers[] = {"X-A", "X-A=1", "X-A~^[0-9]", "X-B=two", "X-A;X-B=two"};
static const char *const v_query[] = {"q", "q=1", "q~x", "r=a b", "q;r~^a"};
static const char *const r_hosts[] = {"a.com",   "b.com",       "x.a.com", "y.x.a.com",
                                      "z.a.com", "z.y.x.a.com", "A.COM",   "q.c.org",
                                      "c.org",   "org",         "com",     NULL};
static const char *const r_paths[] = {"/",      "/a",       "/a/",  "/a/b", "/ab", "/b",
                                      "/a/b/c", "/a/b/c/d", "/abc", "/x",   "/c",  "/a/./b"};
static const char *const r_hdrs[] = {NULL, "X-A: 1", "X-A: 2x", "x-b: two", "X-A: a\nX-B: two"};
static const char *const r_query[] = {NULL, "q", "q=1", "q=x1", "r=a+b", "q=2&r=a%20b"};
static const char *const r_methods[] = {"GET", "POST", "get", "PUT"};

struct rbuf {
    char hosts[64];
    struct rspec spec;
};

static void random_spec(uint64_t *x, struct rbuf *b)
{
    memset(b, 0, sizeof(*b));
    struct rspec *s = &b->spec;
    if (next(x) % 40 == 0) {
        s->catch_all = true;
        return;
    }
    if (next(x) % 4 != 0) {
        snprintf(b->hosts, sizeof(b->hosts), "%s", PICK(x, v_hosts));
        if (next(x) % 3 == 0) {
            size_t n = strlen(b->hosts);
            snprintf(b->hosts + n, sizeof(b->hosts) - n, " %s", PICK(x, v_hosts));
        }
        s->hosts = b->hosts;
    }
    if (next(x) % 4 == 0)
        s->path = PICK(x, v_paths);
    if (next(x) % 10 < 3)
        s->prefix = PICK(x, v_paths);
    if (next(x) % 5 == 0)
        s->regex = PICK(x, v_regex);
    if (next(x) % 5 == 0)
        s->methods = PICK(x, v_methods);
    if (next(x) % 5 == 0)
        s->headers = PICK(x, v_headers);
    if (next(x) % 7 == 0)
        s->query = PICK(x, v_query);
}

Test(router, agrees_with_linear_scan, .timeout = 60)
{
    uint64_t seed = 0x5eed0f1e77ull, x = seed;
    fprintf(stderr, "router agrees_with_linear_scan: seed 0x%llx\n", (unsigned long long)seed);
    unsigned matched = 0, total = 0;
    for (int set = 0; set < 300; set++) {
        struct rbuf bufs[30];
        struct rspec specs[30];
        uint32_t n = 1 + (uint32_t)(next(&x) % 30);
        for (uint32_t i = 0; i < n; i++) {
            random_spec(&x, &bufs[i]);
            specs[i] = bufs[i].spec;
        }
        struct fy_listener_conf l;
        make_listener(&l, specs, n);
        for (int k = 0; k < 30; k++) {
            char target[128];
            const char *q = PICK(&x, r_query);
            snprintf(target, sizeof(target), "%s%s%s", PICK(&x, r_paths), q ? "?" : "", q ? q : "");
            const char *method = PICK(&x, r_methods), *host = PICK(&x, r_hosts);
            const char *hdrs = PICK(&x, r_hdrs);
            struct treq t;
            mkreq(&t, method, host, target, hdrs);
            struct fy_route_result a = {0},
                                   b = {0}; /* linear() leaves b alone when nothing matches */
            int got = routed(&l, &t.req, &a), ref = linear(&l, &t.req, &b);
            cr_assert_eq(got, ref, "seed 0x%llx set %d request %d: %s %s %s: index %d, scan %d",
                         (unsigned long long)seed, set, k, method, host ? host : "-", target, got,
                         ref);
            assert_same_result(&a, &b, target);
            cr_assert_leq(touched, l.nroutes);
            matched += got >= 0;
            total++;
            freereq(&t);
        }
        free_listener(&l);
    }
    /* Both outcomes must be common, or the test proves little. */
    cr_expect(matched > total / 10 && matched < total - total / 10, "%u of %u matched", matched,
              total);
    rx_free_all();
    fy_router_thread_release();
}

/* ---- (4) a large listener ---- */

#define BIG_HOSTS 100
#define BIG_ROUTES 1000

/* Route j serves host h(j % 100) (every host of the form h7, h27... by a wildcard only) with a
 * path kind set by j / 100: exact, prefix or (a tenth) regex, so no two routes share a request. */
struct big {
    char hosts[BIG_ROUTES][32], paths[BIG_ROUTES][32];
    struct rspec specs[BIG_ROUTES + 2];
};

static bool big_wild(uint32_t host)
{
    return host % 20 == 7;
}

static void big_request(uint32_t j, char *host, char *target)
{
    uint32_t h = j % BIG_HOSTS, kind = j / BIG_HOSTS;
    sprintf(host, big_wild(h) ? "sub.h%u.example.com" : "h%u.example.com", h);
    if (kind == 9)
        sprintf(target, "/re%u/123", j);
    else
        sprintf(target, "/svc%u/x", j);
}

Test(router, thousand_routes, .timeout = 60)
{
    static struct big b;
    for (uint32_t j = 0; j < BIG_ROUTES; j++) {
        uint32_t h = j % BIG_HOSTS, kind = j / BIG_HOSTS;
        struct rspec *s = &b.specs[j];
        memset(s, 0, sizeof(*s));
        sprintf(b.hosts[j], big_wild(h) ? "*.h%u.example.com" : "h%u.example.com", h);
        s->hosts = b.hosts[j];
        if (kind < 5) {
            sprintf(b.paths[j], "/svc%u/x", j);
            s->path = b.paths[j];
        } else if (kind < 9) {
            sprintf(b.paths[j], "/svc%u/", j);
            s->prefix = b.paths[j];
        } else {
            sprintf(b.paths[j], "^/re%u/([0-9]+)$", j);
            s->regex = b.paths[j];
        }
    }
    b.specs[BIG_ROUTES] = (struct rspec){.path = "/health"};
    b.specs[BIG_ROUTES + 1] = (struct rspec){.catch_all = true};
    struct fy_listener_conf l;
    make_listener(&l, b.specs, BIG_ROUTES + 2);

    for (uint32_t j = 0; j < BIG_ROUTES; j++) {
        char host[64], target[64];
        big_request(j, host, target);
        struct treq t;
        mkreq(&t, "GET", host, target, NULL);
        struct fy_route_result res, ref;
        cr_assert_eq(routed(&l, &t.req, &res), (int)j, "%s %s", host, target);
        /* The trie finds the route itself first; the host's regex route comes later in the file,
         * so it is not even run, and no other host's route is looked at. */
        cr_assert_eq(touched, 1, "%s %s: %u routes checked", host, target, touched);
        cr_assert_eq(linear(&l, &t.req, &ref), (int)j);
        assert_same_result(&res, &ref, target);
        if (j / BIG_HOSTS == 9)
            cr_assert(res.ncaptures == 2 && res.ovector[2] == strlen(target) - 3);
        freereq(&t);
    }

    /* Near misses and other hosts: the host-less routes, and agreement with the scan. */
    uint64_t x = 42;
    for (int k = 0; k < 2000; k++) {
        char host[64], target[64];
        uint32_t j = (uint32_t)(next(&x) % BIG_ROUTES);
        big_request(j, host, target);
        switch (next(&x) % 6) {
        case 0: { /* the path of another host's route */
            char other[64];
            big_request((j + 1) % BIG_ROUTES, other, target);
            break;
        }
        case 1:
            strcpy(target, "/health");
            break;
        case 2: /* the apex of a wildcard */
            sprintf(host, "h%u.example.com", 7 + 20 * (uint32_t)(next(&x) % 5));
            break;
        case 3:
            strcat(target, "y");
            break;
        case 4:
            strcpy(host, "unknown.example.com");
            break;
        default:
            break;
        }
        struct treq t;
        mkreq(&t, "GET", host, target, NULL);
        struct fy_route_result res, ref;
        int got = routed(&l, &t.req, &res), want = linear(&l, &t.req, &ref);
        cr_assert_eq(got, want, "%s %s", host, target);
        /* At most the host's regex route and one host-less route; an exact route whose path
         * the walk went past (case 3) is not looked at. */
        cr_assert_leq(touched, 2, "%s %s: %u routes checked", host, target, touched);
        freereq(&t);
    }
    free_listener(&l);
    rx_free_all();
    fy_router_thread_release();
}

/* ---- threads: each has its own match data ---- */

static struct fy_listener_conf thread_listener;

static void *thread_main(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    int bad = 0;
    for (int k = 0; k < 2000; k++) {
        char target[64];
        snprintf(target, sizeof(target), "/t%u/%d", (unsigned)(id + (uintptr_t)k) % 4, k);
        struct treq t;
        mkreq(&t, "GET", NULL, target, NULL);
        struct fy_route_result res;
        bool ok = fy_router_match(thread_listener.router, &t.req, &res);
        unsigned want = (unsigned)(id + (uintptr_t)k) % 4;
        char digits[16];
        int dn = snprintf(digits, sizeof(digits), "%d", k);
        if (!ok || res.route->index != want || res.ncaptures != 2 ||
            res.ovector[3] - res.ovector[2] != (size_t)dn)
            bad++;
        freereq(&t);
    }
    fy_router_thread_release();
    return (void *)(uintptr_t)bad;
}

Test(router, threads)
{
    static const struct rspec routes[] = {
        {.regex = "^/t0/([0-9]+)$"},
        {.regex = "^/t1/([0-9]+)$"},
        {.regex = "^/t2/([0-9]+)$"},
        {.regex = "^/t3/([0-9]+)$"},
    };
    make_listener(&thread_listener, routes, FY_ARRAY_LEN(routes));
    pthread_t th[4];
    for (uintptr_t i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, thread_main, (void *)i), 0);
    for (int i = 0; i < 4; i++) {
        void *bad;
        pthread_join(th[i], &bad);
        cr_expect_eq((uintptr_t)bad, 0, "thread %d: %lu wrong results", i,
                     (unsigned long)(uintptr_t)bad);
    }
    free_listener(&thread_listener);
    rx_free_all();
}
