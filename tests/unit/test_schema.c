/* Unit tests for src/conf/schema*.c: listeners:, routes and upstreams: compiled field by field,
 * and one test per documented mistake with its exact "LINE:COL: message". Every structure is
 * freed by fy_config_free() (run under ASan/LeakSanitizer). */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "conf/conf.h"
#include "conf/template.h"
#include "conf/yaml.h"
#include "net/tls.h"

#include "yaml_fixture.h"

static void setup(void)
{
    yaml_fixture_setup("/tmp/ferry-schema-XXXXXX");
}

#define OK(text) cr_assert_eq(load(text), 0, "%s", ERRS ? ERRS : "")

/* A valid file around one route (line 3) and a group `api` of one server. */
#define ROUTE(r)                                                                                   \
    "listeners:\n"                                                                                 \
    "  - listen: 127.0.0.1:0\n"                                                                    \
    "    routes:\n" r "upstreams:\n"                                                               \
    "  api: { servers: [http://127.0.0.1:9] }\n"

TestSuite(schema, .init = setup, .fini = teardown);

static const struct fy_route *route(uint32_t i)
{
    cr_assert_geq(C.nlisteners, 1);
    cr_assert_lt(i, C.listeners[0].nroutes);
    return &C.listeners[0].routes[i];
}

Test(schema, listeners_and_their_addresses)
{
    OK("listeners:\n"
       "  - listen: 127.0.0.1:0\n"
       "  - listen: [127.0.0.1:18081, \"[::1]:18081\"]\n"
       "    routes:\n"
       "      - respond: { status: 204 }\n");
    cr_assert_eq(C.nlisteners, 2);
    const struct fy_listener_conf *a = &C.listeners[0], *b = &C.listeners[1];
    cr_assert_eq(a->naddrs, 1);
    cr_assert_str_eq(a->addr_texts[0], "127.0.0.1:0");
    cr_assert_eq(a->nroutes, 0, "no routes: the runtime answers 404");
    char want[200];
    snprintf(want, sizeof(want), "%s:2", PATH_);
    cr_assert_str_eq(a->where, want);
    cr_assert_eq(b->naddrs, 2);
    cr_assert_eq(b->addrs[0].ss.ss_family, AF_INET);
    cr_assert_eq(b->addrs[1].ss.ss_family, AF_INET6);
    cr_assert_str_eq(b->addr_texts[1], "[::1]:18081");
    cr_assert_eq(b->nroutes, 1);
    cr_assert_eq(b->routes[0].index, 0);
    snprintf(want, sizeof(want), "%s:5", PATH_);
    cr_assert_str_eq(b->routes[0].where, want);
    cr_assert_null(C.listen_text, "no quick-mode listener");
    cr_assert_eq(C.ngroups, 0);
}

Test(schema, match_conditions)
{
    OK(ROUTE("      - match:\n"
             "          host: [API.Example.com, \"*.example.org\", \"[::1]\", 10.0.0.1]\n"
             "          path-prefix: /v1/\n"
             "          path-regex: \"^/v1/(\\\\w+)/(\\\\d+)$\"\n"
             "          methods: [GET, POST]\n"
             "          headers: { X-Env: prod, X-Debug: true, X-Trace: { regex: \"^[0-9a-f]+$\" "
             "} }\n"
             "          query: { v: \"2\", beta: true }\n"
             "        upstream: api\n"
             "      - match: { host: one.example, path: /exact, methods: DELETE }\n"
             "        upstream: api\n"
             "      - upstream: api\n"));
    const struct fy_route *r = route(0);
    cr_assert(r->has_match);
    const struct fy_match *m = &r->match;
    cr_assert_eq(m->nhosts, 4);
    cr_assert_str_eq(m->hosts[0], "api.example.com", "lower-cased");
    cr_assert_str_eq(m->hosts[1], "*.example.org");
    cr_assert_str_eq(m->hosts[2], "[::1]");
    cr_assert_str_eq(m->path_prefix, "/v1/");
    cr_assert_null(m->path);
    cr_assert_not_null(m->path_regex);
    cr_assert_str_eq(m->path_regex_src, "^/v1/(\\w+)/(\\d+)$");
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(m->path_regex, NULL);
    cr_assert_eq(pcre2_match(m->path_regex, (PCRE2_SPTR) "/v1/orders/42", 13, 0, 0, md, NULL), 3);
    pcre2_match_data_free(md);
    cr_assert_eq(m->nmethods, 2);
    cr_assert_str_eq(m->methods[1], "POST");
    cr_assert_eq(m->nheaders, 3);
    cr_assert_str_eq(m->headers[0].name, "X-Env");
    cr_assert_eq(m->headers[0].name_len, 5);
    cr_assert_eq(m->headers[0].kind, FY_VM_EQUALS);
    cr_assert_str_eq(m->headers[0].value, "prod");
    cr_assert_eq(m->headers[0].value_len, 4);
    cr_assert_eq(m->headers[1].kind, FY_VM_PRESENT);
    cr_assert_eq(m->headers[2].kind, FY_VM_REGEX);
    cr_assert_not_null(m->headers[2].re);
    cr_assert_eq(m->nquery, 2);
    cr_assert_eq(m->query[0].kind, FY_VM_EQUALS, "a quoted \"2\" is a value");
    cr_assert_str_eq(m->query[0].value, "2");
    cr_assert_eq(m->query[1].kind, FY_VM_PRESENT);

    r = route(1);
    cr_assert_str_eq(r->match.path, "/exact");
    cr_assert_eq(r->match.nmethods, 1, "one method is a list of one");
    cr_assert_str_eq(r->match.hosts[0], "one.example");
    r = route(2);
    cr_assert_not(r->has_match, "no match: every request");
    cr_assert_eq(r->index, 2);
}

Test(schema, proxy_route_and_its_options)
{
    setenv("FERRY_SCHEMA_TOKEN", "t0k", 1);
    OK("listeners:\n"
       "  - listen: 127.0.0.1:0\n"
       "    routes:\n"
       "      - match: { path-prefix: /v1/ }\n"
       "        upstream: api\n"
       "        path-rewrite: { strip-prefix: /v1 }\n"
       "        host: preserve\n"
       "        request-headers:\n"
       "          add: { X-A: b }\n"
       "          set: { Authorization: \"Bearer ${env:FERRY_SCHEMA_TOKEN}\", X-Id: $request_id "
       "}\n"
       "          remove: [Cookie, User-Agent]\n"
       "        response-headers: { set: { Via: x }, always: true }\n"
       "        connect-timeout: 2s\n"
       "        upstream-timeout: 1m\n"
       "        max-body-size: 1m\n"
       "        abort-on-client-close: off\n"
       "      - upstream: web\n"
       "        path-rewrite: { replace-prefix: /v1, with: /v2 }\n"
       "        host: backend.internal\n"
       "        max-body-size: 0\n"
       "      - match: { path-regex: \"^/u/(.*)$\" }\n"
       "        upstream: web\n"
       "        path-rewrite: { regex: \"^/u/(.*)$\", replacement: \"/users/$1\" }\n"
       "        max-body-size: unlimited\n"
       "        request-headers: { set: { X-User: $1 } }\n"
       "upstreams:\n"
       "  web: { servers: [http://127.0.0.1:8] }\n"
       "  api: { servers: [http://127.0.0.1:9] }\n");
    cr_assert_eq(C.ngroups, 2);
    const struct fy_route *r = route(0);
    cr_assert_eq(r->action, FY_ACT_PROXY);
    cr_assert_eq(r->group, &C.groups[1], "resolved after the whole file");
    cr_assert_str_eq(r->group->name, "api");
    cr_assert_eq(r->rewrite.kind, FY_RW_STRIP_PREFIX);
    cr_assert_str_eq(r->rewrite.prefix, "/v1");
    cr_assert_eq(r->host_mode, FY_HOST_PRESERVE);
    /* removes, then sets, then adds, whatever the order of the keys */
    const struct fy_hrules *q = &r->request_rules;
    cr_assert_eq(q->n, 5);
    cr_assert_eq(q->items[0].op, FY_RULE_REMOVE);
    cr_assert_str_eq(q->items[0].name, "Cookie");
    cr_assert_eq(q->items[0].tok, FY_TOK_OTHER);
    cr_assert_eq(q->items[1].tok, FY_TOK_USER_AGENT);
    cr_assert_eq(q->items[2].op, FY_RULE_SET);
    cr_assert_str_eq(q->items[2].name, "Authorization");
    cr_assert_eq(q->items[2].name_len, 13);
    cr_assert_str_eq(q->items[2].value.constant, "Bearer t0k");
    cr_assert_str_eq(q->items[2].value.source, "Bearer ${env:FERRY_SCHEMA_TOKEN}");
    cr_assert_null(q->items[3].value.constant);
    cr_assert_eq(q->items[3].value.segs[0].var, FY_TV_REQUEST_ID);
    cr_assert_eq(q->items[4].op, FY_RULE_ADD);
    cr_assert_str_eq(q->items[4].value.constant, "b");
    cr_assert_eq(q->mask, fy_tokmask_bit(FY_TOK_USER_AGENT));
    cr_assert_not(q->always);
    cr_assert_eq(r->response_rules.n, 1);
    cr_assert(r->response_rules.always);
    cr_assert_eq(r->response_rules.mask, fy_tokmask_bit(FY_TOK_VIA));
    cr_assert_eq(r->limits.connect_timeout, 2000);
    cr_assert_eq(r->limits.upstream_timeout, 60000);
    cr_assert_eq(r->limits.max_body_size, 1 << 20);
    cr_assert_eq(r->limits.abort_on_client_close, 0);

    r = route(1);
    cr_assert_eq(r->group, &C.groups[0]);
    cr_assert_eq(r->rewrite.kind, FY_RW_REPLACE_PREFIX);
    cr_assert_str_eq(r->rewrite.prefix, "/v1");
    cr_assert_str_eq(r->rewrite.with, "/v2");
    cr_assert_eq(r->host_mode, FY_HOST_VALUE);
    cr_assert_str_eq(r->host_value.constant, "backend.internal");
    cr_assert_eq(r->limits.max_body_size, UINT64_MAX, "0 is unlimited");
    cr_assert_eq(r->limits.connect_timeout, 0, "inherit");
    cr_assert_eq(r->limits.abort_on_client_close, -1, "inherit");

    r = route(2);
    cr_assert_eq(r->rewrite.kind, FY_RW_REGEX);
    cr_assert_not_null(r->rewrite.re);
    cr_assert_eq(r->rewrite.replacement.segs[1].var, FY_TV_CAPTURE);
    cr_assert_eq(r->limits.max_body_size, UINT64_MAX);
    cr_assert_eq(r->request_rules.items[0].value.segs[0].capture, 1);
    cr_assert_eq(r->host_mode, FY_HOST_UPSTREAM, "the default");
}

Test(schema, redirect_and_respond)
{
    OK(ROUTE("      - match: { path: /old }\n"
             "        redirect: { location: \"https://new.example$request_uri\" }\n"
             "      - match: { path-regex: \"^/p/(\\\\d+)$\" }\n"
             "        redirect: { status: 308, location: /posts/$1 }\n"
             "      - respond:\n"
             "          status: 404\n"
             "          body: \"no route for $path\\n\"\n"
             "          headers: { Cache-Control: no-store, X-Why: none }\n"
             "          content-type: application/json\n"
             "        response-headers: { set: { X-A: b } }\n"
             "      - respond: {}\n"));
    const struct fy_route *r = route(0);
    cr_assert_eq(r->action, FY_ACT_REDIRECT);
    cr_assert_eq(r->status, 302, "the default");
    cr_assert_eq(r->location.segs[1].var, FY_TV_REQUEST_URI);
    r = route(1);
    cr_assert_eq(r->status, 308);
    cr_assert_eq(r->location.segs[1].var, FY_TV_CAPTURE);
    r = route(2);
    cr_assert_eq(r->action, FY_ACT_RESPOND);
    cr_assert_eq(r->status, 404);
    cr_assert_str_eq(r->body.source, "no route for $path\n");
    cr_assert_eq(r->body.segs[1].var, FY_TV_PATH);
    cr_assert_eq(r->respond_headers.n, 2);
    cr_assert_eq(r->respond_headers.items[0].op, FY_RULE_SET);
    cr_assert_str_eq(r->respond_headers.items[1].name, "X-Why");
    cr_assert_str_eq(r->content_type, "application/json");
    cr_assert_eq(r->response_rules.n, 1);
    cr_assert_null(r->group);
    r = route(3);
    cr_assert_eq(r->status, 200);
    cr_assert_str_eq(r->body.constant, "");
    cr_assert_null(r->content_type);
}

/* FNV-1a 64 of the URL as written, the documented cookie id. */
static void cookie_id(const char *url, char out[17])
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *url; url++)
        h = (h ^ (unsigned char)*url) * 0x100000001b3ull;
    snprintf(out, 17, "%016" PRIx64, h);
}

Test(schema, upstream_groups)
{
    OK(ROUTE("      - upstream: app\n") "  app:\n"
                                        "    balance: least-conn\n"
                                        "    servers:\n"
                                        "      - { url: http://127.0.0.1:3003, backup: true, "
                                        "max-conns: 100 }\n"
                                        "      - url: http://127.0.0.1:3000\n"
                                        "        weight: 3\n"
                                        "      - http://127.0.0.1:3001/\n"
                                        "      - http://[::1]\n"
                                        "    health: { path: /health, interval: 2s, timeout: "
                                        "500ms, rise: 1, fall: 4, expect: [200-299, 404] }\n"
                                        "    retries: 2\n"
                                        "    max-fails: 0\n"
                                        "    fail-timeout: 30s\n"
                                        "  h: { balance: { hash: \"header:X-User\" }, servers: "
                                        "[http://127.0.0.1:1] }\n"
                                        "  c: { balance: { hash: \"cookie:sid\" }, servers: "
                                        "[http://127.0.0.1:1] }\n"
                                        "  i: { balance: { hash: client-ip }, servers: "
                                        "[http://127.0.0.1:1] }\n"
                                        "  s: { balance: { sticky: { cookie: srv } }, servers: "
                                        "[http://127.0.0.1:1] }\n"
                                        "  p: { balance: p2c, health: {}, servers: "
                                        "[http://127.0.0.1:1] }\n");
    cr_assert_eq(C.ngroups, 7);
    const struct fy_group *g = &C.groups[0];
    cr_assert_str_eq(g->name, "api");
    cr_assert_eq(g->balance, FY_LB_ROUND_ROBIN, "the default");
    cr_assert_eq(g->retries, 1);
    cr_assert_eq(g->max_fails, 3);
    cr_assert_eq(g->fail_timeout, 10000);
    cr_assert_not(g->health.enabled);
    cr_assert_eq(g->nservers, 1);
    cr_assert_eq(g->servers[0].weight, 1);
    cr_assert_eq(g->servers[0].group, g);
    cr_assert_null(g->servers[0].state);
    cr_assert_null(g->lb);

    g = &C.groups[1];
    cr_assert_str_eq(g->name, "app");
    cr_assert_eq(g->index, 1);
    char want[200];
    snprintf(want, sizeof(want), "%s:7", PATH_);
    cr_assert_str_eq(g->where, want);
    cr_assert_eq(route(0)->group, g);
    cr_assert_eq(g->balance, FY_LB_LEAST_CONN);
    cr_assert_eq(g->nservers, 4);
    cr_assert_eq(g->nprimary, 3, "primaries first, in file order, then backups");
    const struct fy_server *s = g->servers;
    cr_assert_str_eq(s[0].url, "http://127.0.0.1:3000");
    cr_assert_eq(s[0].weight, 3);
    cr_assert_str_eq(s[0].authority, "127.0.0.1:3000");
    cr_assert_str_eq(s[0].host, "127.0.0.1");
    cr_assert_eq(s[0].port, 3000);
    cr_assert_eq(s[0].addr.ss.ss_family, AF_INET);
    cr_assert_eq(s[0].index, 0);
    cr_assert_str_eq(s[1].authority, "127.0.0.1:3001", "a trailing / is no path");
    cr_assert_str_eq(s[2].authority, "[::1]", "no port written: none in the authority");
    cr_assert_str_eq(s[2].host, "[::1]");
    cr_assert_eq(s[2].port, 80);
    cr_assert_eq(s[2].addr.ss.ss_family, AF_INET6);
    cr_assert_str_eq(s[3].url, "http://127.0.0.1:3003");
    cr_assert(s[3].backup);
    cr_assert_eq(s[3].max_conns, 100);
    cr_assert_eq(s[3].index, 3);
    char id[17];
    cookie_id("http://127.0.0.1:3003", id);
    cr_assert_str_eq(s[3].cookie_id, id);
    cr_assert_eq(strlen(s[0].cookie_id), 16);
    cr_assert(g->health.enabled);
    cr_assert_str_eq(g->health.path, "/health");
    cr_assert_eq(g->health.interval, 2000);
    cr_assert_eq(g->health.timeout, 500);
    cr_assert_eq(g->health.rise, 1);
    cr_assert_eq(g->health.fall, 4);
    cr_assert_eq(g->health.nexpect, 2);
    cr_assert_eq(g->health.expect[0][0], 200);
    cr_assert_eq(g->health.expect[0][1], 299);
    cr_assert_eq(g->health.expect[1][0], 404);
    cr_assert_eq(g->health.expect[1][1], 404);
    cr_assert_eq(g->retries, 2);
    cr_assert_eq(g->max_fails, 0);
    cr_assert_eq(g->fail_timeout, 30000);

    g = &C.groups[2];
    cr_assert_eq(g->balance, FY_LB_HASH);
    cr_assert_eq(g->hash_key, FY_HK_HEADER);
    cr_assert_str_eq(g->hash_name, "X-User");
    cr_assert_eq(g->hash_name_len, 6);
    cr_assert_eq(C.groups[3].hash_key, FY_HK_COOKIE);
    cr_assert_str_eq(C.groups[3].hash_name, "sid");
    cr_assert_eq(C.groups[4].hash_key, FY_HK_CLIENT_IP);
    cr_assert_null(C.groups[4].hash_name);
    cr_assert_eq(C.groups[5].balance, FY_LB_STICKY);
    cr_assert_str_eq(C.groups[5].sticky_cookie, "srv");
    g = &C.groups[6];
    cr_assert_eq(g->balance, FY_LB_P2C);
    cr_assert(g->health.enabled, "health: {} enables the defaults");
    cr_assert_str_eq(g->health.path, "/");
    cr_assert_eq(g->health.interval, 5000);
    cr_assert_eq(g->health.timeout, 2000);
    cr_assert_eq(g->health.rise, 2);
    cr_assert_eq(g->health.fall, 3);
    cr_assert_eq(g->health.nexpect, 1);
    cr_assert_eq(g->health.expect[0][0], 200);
    cr_assert_eq(g->health.expect[0][1], 399);
}

Test(schema, unused_groups_are_fine)
{
    OK(ROUTE("      - respond: { status: 204 }\n") "  spare: { servers: [http://127.0.0.1:2] }\n");
    cr_assert_eq(C.ngroups, 2);
}

/* ---- one test per documented mistake ---- */

Test(schema, unknown_key)
{
    EXPECT_ONE_ERROR(ROUTE("      - match: { pth: /x }\n        upstream: api\n"),
                     "4:18: unknown key 'pth' in match (did you mean path?)");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n        colour: blue\n"),
                     "5:9: unknown key 'colour' in a route (expected match, upstream, redirect, "
                     "respond, path-rewrite, host, request-headers, response-headers, "
                     "connect-timeout, upstream-timeout, max-body-size, "
                     "abort-on-client-close, capture, compress or lua)");
    EXPECT_ONE_ERROR("listeners:\n  - listen: 127.0.0.1:0\n    rotues: []\n",
                     "3:5: unknown key 'rotues' in a listener (did you mean routes?)");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n") "  web: { servers: [http://127.0.0.1:1], "
                                                      "retry: 2 }\n",
                     "7:41: unknown key 'retry' in an upstream (expected servers, balance, health, "
                     "retries, max-fails, fail-timeout, max-queue, queue-timeout or tls)");
    cr_assert_eq(load("listenrs: []\n"), 2);
    cr_assert_str_eq(errors(), "1:1: unknown key 'listenrs' (did you mean listeners?)\n"
                               "1:1: missing key upstream: the server to forward to (upstream: "
                               "http://HOST:PORT)\n");
}

Test(schema, wrong_type)
{
    EXPECT_ONE_ERROR("listeners: { listen: 127.0.0.1:0 }\n",
                     "1:12: listeners expects a list of listeners (- listen: ADDR:PORT), got a "
                     "mapping");
    EXPECT_ONE_ERROR(ROUTE("      - match: /x\n        upstream: api\n"),
                     "4:16: match expects a mapping (keys: host, path, path-prefix, path-regex, "
                     "methods, headers or query), got a scalar");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: [api]\n"),
                     "4:19: upstream expects a single value, got a sequence");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n        request-headers: { set: [X-A] }\n"),
                     "5:33: request-headers set expects a mapping of field names to values ({ "
                     "X-Name: value }), got a sequence");
}

Test(schema, bad_duration)
{
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n        upstream-timeout: soon\n"),
                     "5:27: upstream-timeout expects a duration like 500ms, 10s or 2m, got "
                     "'soon'");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n") "  w: { servers: [http://127.0.0.1:1], "
                                                      "health: { interval: 1s } }\n",
                     "7:47: health timeout (2s) must be shorter than its interval (1s)");
}

Test(schema, bad_size)
{
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n        max-body-size: lots\n"),
                     "5:24: max-body-size expects a size (e.g. 10m) or unlimited, got 'lots'");
}

Test(schema, bad_address)
{
    EXPECT_ONE_ERROR("listeners:\n  - listen: \"::1:8080\"\n",
                     "2:13: listen '::1:8080': an IPv6 address goes in brackets: write [::1]:8080");
    EXPECT_ONE_ERROR("listeners:\n  - routes: []\n",
                     "2:5: a listener needs listen: the address to accept clients on (listen: "
                     "127.0.0.1:8080)");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n") "  w: { servers: [\"http://::1:80\"] }\n",
                     "7:18: server 'http://::1:80': an IPv6 address goes in brackets: "
                     "http://[ADDR]:PORT");
}

Test(schema, unknown_upstream_name)
{
    EXPECT_ONE_ERROR(ROUTE("      - upstream: apx\n") "  web: { servers: [http://127.0.0.1:1] }\n",
                     "4:19: unknown upstream 'apx' (did you mean api? defined: api, web)");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: db\n") "  web: { servers: [http://127.0.0.1:1] }\n",
                     "4:19: unknown upstream 'db' (defined: api, web)");
    EXPECT_ONE_ERROR("listeners:\n  - listen: 127.0.0.1:0\n    routes: [{ upstream: api }]\n",
                     "3:26: unknown upstream 'api' (no upstreams: are defined; add upstreams: { "
                     "api: { servers: [http://HOST:PORT] } })");
}

Test(schema, duplicate_listener_address)
{
    EXPECT_ONE_ERROR("listeners:\n"
                     "  - listen: 127.0.0.1:18080\n"
                     "  - listen: [\"[::1]:18080\", 127.0.0.1:18080]\n",
                     "3:29: duplicate listener address 127.0.0.1:18080 (also at line 2)");
    EXPECT_ONE_ERROR("listeners:\n  - listen: [127.0.0.1:18080, 127.0.0.1:18080]\n",
                     "2:31: duplicate listener address 127.0.0.1:18080 (also at line 2)");
    OK("listeners:\n  - listen: 127.0.0.1:0\n  - listen: 127.0.0.1:0\n"); /* port 0: two ports */
}

Test(schema, bad_regex)
{
    EXPECT_ONE_ERROR(ROUTE("      - match: { path-regex: \"^/(a\" }\n        upstream: api\n"),
                     "4:30: path-regex '^/(a': missing closing parenthesis at offset 4");
    EXPECT_ONE_ERROR(ROUTE("      - match: { headers: { X-A: { regex: \"[\" } } }\n"
                           "        upstream: api\n"),
                     "4:43: regex '[': missing terminating ] for character class at offset 1");
    EXPECT_ONE_ERROR(ROUTE("      - match: { path-regex: \"^/(a)$\" }\n"
                           "        redirect: { location: /b/$2 }\n"),
                     "5:31: location: $2 but the regex has 1 group");
}

Test(schema, bad_redirect_status)
{
    EXPECT_ONE_ERROR(ROUTE("      - redirect: { status: 305, location: /x }\n"),
                     "4:29: redirect status must be 301, 302, 303, 307 or 308, got 305");
    EXPECT_ONE_ERROR(ROUTE("      - redirect: { status: 301 }\n"),
                     "4:19: redirect needs location: where to send the client (location: /new)");
    EXPECT_ONE_ERROR(ROUTE("      - respond: { status: 101 }\n"),
                     "4:28: respond status must be from 200 to 599 (1xx are not final), got 101");
}

Test(schema, two_actions)
{
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n        respond: { status: 200 }\n"),
                     "5:9: a route has one action; this one has both upstream: and respond:");
    EXPECT_ONE_ERROR(ROUTE("      - respond: { status: 200 }\n        host: preserve\n"),
                     "5:9: host only applies to routes with upstream: (this one has respond:)");
}

Test(schema, no_action)
{
    EXPECT_ONE_ERROR(ROUTE("      - match: { path: /x }\n"),
                     "4:9: a route needs one action: upstream: NAME, redirect: { location: ... } "
                     "or respond: { status: ... }");
}

Test(schema, bad_header_name)
{
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n"
                           "        request-headers: { set: { \"X A\": b } }\n"),
                     "5:35: request-headers set: 'X A' is not a valid header field name");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n"
                           "        response-headers: { remove: [Content-Length] }\n"),
                     "5:38: response-headers remove: Content-Length is managed by ferry (message "
                     "framing and connection fields cannot be set or removed)");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n"
                           "        request-headers: { add: { Host: x } }\n"),
                     "5:35: request-headers add: Host is managed by the route's host: key (host: "
                     "VALUE sends another, host: preserve keeps the client's)");
    EXPECT_ONE_ERROR(ROUTE("      - match: { headers: { \"a b\": true } }\n        upstream: "
                           "api\n"),
                     "4:29: headers: 'a b' is not a valid header field name");
}

Test(schema, header_value_with_a_newline)
{
    write_file("two", "a\nb\n");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n"
                           "        request-headers: { set: { X-A: \"${file:two}\" } }\n"),
                     "5:40: request-headers set X-A: a header value cannot contain CR, LF or "
                     "other control characters");
}

Test(schema, unset_env)
{
    unsetenv("FERRY_SCHEMA_UNSET");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n"
                           "        request-headers: { set: { X-A: \"${env:FERRY_SCHEMA_UNSET}\" } "
                           "}\n"),
                     "5:40: request-headers set X-A: environment variable FERRY_SCHEMA_UNSET is "
                     "not set");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n") "  w: { servers: "
                                                      "[\"${env:FERRY_SCHEMA_UNSET}\"] }\n",
                     "7:18: url: environment variable FERRY_SCHEMA_UNSET is not set");
}

Test(schema, unreadable_file)
{
    cr_assert_eq(load(ROUTE("      - respond: { body: \"${file:nope}\" }\n")), 1);
    char want[512];
    snprintf(want, sizeof(want),
             "4:26: body: cannot read ${file:...} %s/nope: No such file or directory\n", DIR_);
    cr_assert_str_eq(errors(), want);
    write_file("body", "hello $host\n");
    OK(ROUTE("      - respond: { body: \"${file:body}\" }\n"));
    cr_assert_str_eq(route(0)->body.constant, "hello $host", "file text is not re-scanned");
}

Test(schema, server_url)
{
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n") "  w: { servers: [ftp://127.0.0.1:1] }\n",
                     "7:18: server 'ftp://127.0.0.1:1': expected a URL like http://10.0.0.1:3000 "
                     "or https://api.internal");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n") "  w: { servers: [http://127.0.0.1:1/api] "
                                                      "}\n",
                     "7:18: server 'http://127.0.0.1:1/api': a server URL has no path; use "
                     "path-rewrite on the route");
}

Test(schema, backup_only_group)
{
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n") "  w:\n"
                                                      "    servers:\n"
                                                      "      - { url: http://127.0.0.1:1, "
                                                      "backup: true }\n",
                     "8:5: upstream w has only backup servers: at least one server must not be a "
                     "backup");
}

Test(schema, more_mistakes)
{
    EXPECT_ONE_ERROR(ROUTE("      - match: { host: \"a.*.com\" }\n        upstream: api\n"),
                     "4:24: host 'a.*.com': a wildcard is a leading '*.' label (*.example.com)");
    EXPECT_ONE_ERROR(ROUTE("      - match: { host: \"a.com:80\" }\n        upstream: api\n"),
                     "4:24: host 'a.com:80': no port in a host condition (the port is the "
                     "listener's; an IPv6 address goes in brackets)");
    EXPECT_ONE_ERROR(ROUTE("      - match: { path: x }\n        upstream: api\n"),
                     "4:24: path must start with '/', got 'x'");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n        path-rewrite: { strip-prefix: /a, "
                           "regex: x }\n"),
                     "5:23: path-rewrite takes one of strip-prefix: /P, replace-prefix: /P with: "
                     "/Q, or regex: RE replacement: /R");
    EXPECT_ONE_ERROR(ROUTE("      - respond: { body: \"$1\" }\n"),
                     "4:26: body: captures like $1 need a path-regex (write $$ for a literal $)");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n") "  w: { balance: round-robbin, servers: "
                                                      "[http://127.0.0.1:1] }\n",
                     "7:17: unknown balance 'round-robbin' (did you mean round-robin?)");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n") "  w: { retries: 11, servers: "
                                                      "[http://127.0.0.1:1] }\n",
                     "7:17: retries expects a number from 0 to 10, got '11'");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n") "  w: { servers: [http://127.0.0.1:1, "
                                                      "http://127.0.0.1:1] }\n",
                     "7:38: server http://127.0.0.1:1 is listed twice in upstream w (also at "
                     "line 7)");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n") "  \"a b\": { servers: [http://127.0.0.1:1] "
                                                      "}\n",
                     "7:3: upstream name 'a b': use letters, digits, '-', '_' and '.'");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n") "  w: { servers: [http://127.0.0.1:1], "
                                                      "health: { expect: [600] } }\n",
                     "7:58: expect: '600' is not a status (200) or a range of statuses "
                     "(200-399) from 100 to 599");
}

Test(schema, quick_mode_keys_with_listeners)
{
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\nlisteners:\n  - listen: 127.0.0.1:0\n",
                     "1:1: listen/upstream are the one-listener shorthand; with listeners: put "
                     "the address in a listener");
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\nupstreams: { api: { servers: "
                     "[http://127.0.0.1:1] } }\n",
                     "2:1: upstreams: need listeners: that route to them (or use upstream: for "
                     "one server)");
    EXPECT_ONE_ERROR("listeners:\n  - listen: 127.0.0.1:0\nlisteners: []\n",
                     "3:1: duplicate key 'listeners' (first given at line 1)");
    /* without listeners, the quick mode is unchanged */
    OK("upstream: http://127.0.0.1:1\n");
    cr_assert_eq(C.nlisteners, 0);
}

Test(schema, every_error_of_a_file_is_freed)
{
    /* Many half-built structures at once: LeakSanitizer checks fy_config_free() gets them. */
    cr_assert_gt(
        load(ROUTE("      - match: { host: [a.com, \"b:1\"], path-regex: \"(\", headers: "
                   "{ X: { regex: \"(\" } } }\n"
                   "        upstream: nope\n"
                   "        path-rewrite: { regex: \"(x)\", replacement: /$2 }\n"
                   "        request-headers: { set: { X-A: $nope }, remove: [\"b c\"] "
                   "}\n"
                   "      - respond: { status: 1, body: $x }\n"
                   "        redirect: { location: $$ }\n") "  w:\n"
                                                           "    servers: [http://x.invalid:1, "
                                                           "{ url: http://127.0.0.1:1, "
                                                           "weight: 0 }]\n"
                                                           "    balance: { hash: "
                                                           "\"header:a b\" }\n"
                                                           "    health: { path: x, "
                                                           "expect: [1-2] }\n"),
        5);
}

/* ---- TLS ---- */

/* A listener (line 2) with a tls: block (line 3) and the group `api`. */
#define TLS_LISTENER(block)                                                                        \
    "listeners:\n"                                                                                 \
    "  - listen: 127.0.0.1:0\n"                                                                    \
    "    tls:\n" block "    routes: [{ upstream: api }]\n"                                         \
    "upstreams:\n"                                                                                 \
    "  api: { servers: [http://127.0.0.1:9] }\n"

Test(schema, https_servers)
{
    OK(ROUTE(
        "      - upstream: s\n") "  s:\n"
                                 "    servers:\n"
                                 "      - https://127.0.0.1\n"
                                 "      - { url: \"https://[::1]:8443\", server-name: "
                                 "api.internal }\n"
                                 "      - http://127.0.0.1:3000\n"
                                 "    tls: { server-name: group.internal }\n"
                                 "  t: { servers: [\"https://[::1]\", https://localhost:9] }\n");
    const struct fy_group *g = &C.groups[1];
    cr_assert_not_null(g->tls, "an https:// server gives the group a context");
    cr_assert_not(fy_tls_client_insecure(g->tls));
    const struct fy_server *s = g->servers;
    cr_assert_str_eq(s[0].authority, "127.0.0.1", "no port written: none in the Host");
    cr_assert_eq(s[0].port, 443, "https's default port");
    cr_assert_eq(s[0].tls, g->tls, "borrowed from the group");
    cr_assert_str_eq(s[0].tls_name, "group.internal", "the group's server-name");
    cr_assert_eq(s[1].port, 8443);
    cr_assert_str_eq(s[1].tls_name, "api.internal", "the server's own server-name wins");
    cr_assert_eq(s[1].tls, g->tls);
    cr_assert_null(s[2].tls, "http and https mix in one group");
    cr_assert_null(s[2].tls_name);
    g = &C.groups[2];
    cr_assert_not_null(g->tls, "no tls: block: the defaults");
    cr_assert_str_eq(g->servers[0].tls_name, "::1", "the URL's host, without brackets");
    cr_assert_str_eq(g->servers[0].host, "[::1]");
    cr_assert_str_eq(g->servers[1].tls_name, "localhost");
    cr_assert_null(C.groups[0].tls, "http only: no context");
}

Test(schema, insecure_skip_verify)
{
    OK(ROUTE("      - upstream: api\n") "  s:\n"
                                        "    servers: [https://127.0.0.1:1]\n"
                                        "    tls: { insecure-skip-verify: true }\n"
                                        "  d: { servers: [https://127.0.0.1:2] }\n"
                                        "  v:\n"
                                        "    servers: [https://127.0.0.1:3]\n"
                                        "    tls: { insecure-skip-verify: false }\n"
                                        "insecure-skip-verify: on\n");
    cr_assert(fy_tls_client_insecure(C.groups[1].tls));
    cr_assert(fy_tls_client_insecure(C.groups[2].tls),
              "the top-level key is the default of every group, even written after them");
    cr_assert_not(fy_tls_client_insecure(C.groups[3].tls), "a group's own setting wins");
}

Test(schema, tls_file_paths_are_relative_to_the_file)
{
    /* No https:// group uses it, so nothing reads it: only the path is checked. */
    OK(ROUTE("      - upstream: api\n") "upstream-ca: certs/ca.pem\n");
    char want[256];
    snprintf(want, sizeof(want), "%s/certs/ca.pem", DIR_);
    cr_assert_str_eq(C.upstream_ca, want);
    OK(ROUTE("      - upstream: api\n") "upstream-ca: /etc/ssl/ca.pem\n");
    cr_assert_str_eq(C.upstream_ca, "/etc/ssl/ca.pem");
}

Test(schema, listener_tls_mistakes)
{
    EXPECT_ONE_ERROR(TLS_LISTENER("      certificates: [{ cert: a.pem, key: a.key }]\n"
                                  "      min-versoin: \"1.3\"\n"),
                     "5:7: unknown key 'min-versoin' in listener tls (did you mean min-version?)");
    EXPECT_ONE_ERROR(TLS_LISTENER("      certificates: [{ cert: a.pem, key: a.key }]\n"
                                  "      client-ca: ca.pem\n"
                                  "      client-auth: requird\n"),
                     "6:20: unknown client-auth 'requird' (did you mean required?)");
    EXPECT_ONE_ERROR(TLS_LISTENER("      certificates: [{ cert: a.pem, key: a.key }]\n"
                                  "      client-ca: ca.pem\n"
                                  "      client-auth: always\n"),
                     "6:20: client-auth expects none, optional or required, got 'always'");
    EXPECT_ONE_ERROR(TLS_LISTENER("      certificates: [{ cert: a.pem, key: a.key }]\n"
                                  "      client-auth: required\n"),
                     "5:20: client-auth: required needs client-ca: the CA certificates (PEM) that "
                     "client certificates are verified against");
    EXPECT_ONE_ERROR(TLS_LISTENER("      certificates: [{ cert: a.pem, key: a.key }]\n"
                                  "      client-ca: ca.pem\n"),
                     "5:18: client-ca without client-auth: optional or required asks no client for "
                     "a certificate");
    EXPECT_ONE_ERROR(TLS_LISTENER("      min-version: \"1.2\"\n"),
                     "4:7: tls: needs certificates: at least one { cert: FILE, key: FILE } (the "
                     "first is for clients that send no server name)");
    EXPECT_ONE_ERROR(TLS_LISTENER("      certificates: []\n"),
                     "4:21: certificates: the list is empty");
    EXPECT_ONE_ERROR(TLS_LISTENER("      certificates:\n"
                                  "        - { cert: a.pem, key: a.key }\n"
                                  "        - { cert: b.pem }\n"),
                     "6:11: a certificate needs cert: and key: (the PEM files: { cert: site.pem, "
                     "key: site.key })");
    EXPECT_ONE_ERROR(TLS_LISTENER("      certificates: [{ cert: a.pem, key: a.key, chain: c.pem "
                                  "}]\n"),
                     "4:49: unknown key 'chain' in a certificate (expected cert or key)");
    EXPECT_ONE_ERROR(TLS_LISTENER("      certificates: [{ cert: a.pem, key: a.key }]\n"
                                  "      min-version: \"1.4\"\n"),
                     "5:20: min-version expects 1.2 or 1.3 (1.0 and 1.1 are accepted, not "
                     "advised), got '1.4'");
    EXPECT_ONE_ERROR(TLS_LISTENER("      certificates: [{ cert: a.pem, key: a.key }]\n"
                                  "      session-timeout: 500ms\n"),
                     "5:24: session-timeout must be from 1s to 168h (7 days, the longest a TLS "
                     "1.3 ticket may live), got '500ms'");
    EXPECT_ONE_ERROR(TLS_LISTENER("      certificates: [{ cert: a.pem, key: a.key }]\n"
                                  "      session-cache-size: 0\n"),
                     "5:27: session-cache-size expects a number from 1 to 16777216, got '0'");
    EXPECT_ONE_ERROR(TLS_LISTENER("      certificates: [{ cert: a.pem, key: \"\" }]\n"),
                     "4:42: key expects a file path, got an empty value");
    EXPECT_ONE_ERROR(TLS_LISTENER("      certificates: [{ cert: a.pem, key: a.key }]\n"
                                  "      ciphers: \"\"\n"),
                     "5:16: ciphers: the list is empty (leave the key out for the default)");
    EXPECT_ONE_ERROR("listeners:\n  - listen: 127.0.0.1:0\n    tls:\n",
                     "3:9: tls: needs certificates: (tls: { certificates: [{ cert: site.pem, key: "
                     "site.key }] })");
}

Test(schema, upstream_tls_mistakes)
{
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n") "  w:\n"
                                                      "    servers: [http://127.0.0.1:1]\n"
                                                      "    tls: { ca: ca.pem }\n",
                     "9:5: tls: needs an https:// server: upstream w has only http:// servers "
                     "(write https://HOST[:PORT] to speak TLS to them)");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n") "  w:\n"
                                                      "    servers: [https://127.0.0.1:1]\n"
                                                      "    tls: { ca: ca.pem, verify: false }\n",
                     "9:24: unknown key 'verify' in upstream tls (expected ca, cert, key, "
                     "server-name, insecure-skip-verify, min-version, ciphers or ciphersuites)");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n") "  w:\n"
                                                      "    servers: [https://127.0.0.1:1]\n"
                                                      "    tls: { cert: client.pem }\n",
                     "9:18: a client certificate needs both cert: and key: (the certificate and "
                     "its private key, PEM)");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n") "  w:\n"
                                                      "    servers: [https://127.0.0.1:1]\n"
                                                      "    tls: { insecure-skip-verify: yes }\n",
                     "9:34: insecure-skip-verify expects true or false (or on/off), got 'yes'");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n") "  w:\n"
                                                      "    servers: [https://127.0.0.1:1]\n"
                                                      "    tls: { server-name: \"api:443\" }\n",
                     "9:25: server-name 'api:443': expected the host name the certificate is for "
                     "(api.internal) or an IP address, without port or brackets");
    EXPECT_ONE_ERROR(ROUTE("      - upstream: api\n") "  w:\n"
                                                      "    servers:\n"
                                                      "      - { url: http://127.0.0.1:1, "
                                                      "server-name: a.example }\n",
                     "9:49: server-name is the name an https:// server's certificate is checked "
                     "against; http://127.0.0.1:1 is not https://");
}

/* ---- the command line around a file with listeners ---- */

static enum fy_args_result parse(char *err, size_t errlen, FILE *out, ...)
{
    char *argv[16] = {(char *)"ferry"};
    int argc = 1;
    va_list ap;
    va_start(ap, out);
    for (char *a; (a = va_arg(ap, char *));)
        argv[argc++] = a;
    va_end(ap);
    fy_config_free(&C);
    fy_config_defaults(&C);
    return fy_args_parse(&C, argc, argv, err, errlen, out);
}

Test(schema, args_with_listeners)
{
    write_file("ferry.yaml", ROUTE("      - upstream: api\n"));
    char err[512] = "";
    cr_assert_eq(parse(err, sizeof(err), stdout, "-c", PATH_, NULL), FY_ARGS_OK, "%s", err);
    cr_assert_eq(C.nlisteners, 1, "no --upstream needed");
    cr_assert_null(C.listen_text);
    cr_assert_eq(parse(err, sizeof(err), stdout, "-c", PATH_, "--listen", "127.0.0.1:1", NULL),
                 FY_ARGS_ERROR);
    char want[512];
    snprintf(want, sizeof(want),
             "--listen: listen/upstream are the one-listener shorthand; with listeners: put the "
             "address in a listener of %s",
             PATH_);
    cr_assert_str_eq(err, want);
    cr_assert_eq(
        parse(err, sizeof(err), stdout, "--upstream=http://127.0.0.1:1", "-c", PATH_, NULL),
        FY_ARGS_ERROR);
    cr_assert_not_null(strstr(err, "--upstream: listen/upstream are the one-listener"));
    cr_assert_eq(parse(err, sizeof(err), stdout, "-c", PATH_, "--tls-cert", "a.pem", NULL),
                 FY_ARGS_ERROR);
    snprintf(want, sizeof(want),
             "--tls-cert: tls-cert/tls-key are the one-listener shorthand; with listeners: put the "
             "certificate in the tls: block of a listener of %s",
             PATH_);
    cr_assert_str_eq(err, want);
}

Test(schema, quick_mode_tls_keys)
{
    EXPECT_ONE_ERROR("listeners:\n  - listen: 127.0.0.1:0\ntls-key: a.key\n",
                     "3:1: tls-cert/tls-key are the one-listener shorthand; with listeners: put "
                     "the certificate in a listener's tls: block");
    /* Both or neither: checked once the command line is applied too, at the file's key. */
    write_file("ferry.yaml", "upstream: http://127.0.0.1:1\ntls-cert: site.pem\n");
    char err[512] = "";
    cr_assert_eq(parse(err, sizeof(err), stdout, "-c", PATH_, NULL), FY_ARGS_FILE_ERROR, "%s", err);
    char want[512];
    snprintf(want, sizeof(want),
             "%s:2:11: tls-cert needs tls-key too: the certificate's private key\n", PATH_);
    cr_assert_str_eq(C.file_errors, want);
    snprintf(want, sizeof(want), "%s/site.pem", DIR_);
    cr_assert_str_eq(C.tls_cert, want, "relative to the file's directory");
    /* The same key from the command line: a command-line error. */
    cr_assert_eq(parse(err, sizeof(err), stdout, "-c", PATH_, "--tls-cert", "x.pem", NULL),
                 FY_ARGS_ERROR);
    cr_assert_str_eq(err, "--tls-cert needs --tls-key too: the certificate's private key");
    cr_assert_str_eq(C.tls_cert, "x.pem", "relative to the working directory");
    write_file("ferry.yaml", "upstream: http://127.0.0.1:1\nupstream-ca: ca.pem\n");
    cr_assert_eq(parse(err, sizeof(err), stdout, "-c", PATH_, NULL), FY_ARGS_FILE_ERROR);
    snprintf(want, sizeof(want),
             "%s:2:14: upstream-ca applies to an https:// upstream, and http://127.0.0.1:1 is not "
             "one\n",
             PATH_);
    cr_assert_str_eq(C.file_errors, want);
}

Test(schema, print_config_with_listeners)
{
    write_file("ferry.yaml", ROUTE("      - upstream: api\n") "workers: 3\n");
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    char err[512] = "";
    cr_assert_eq(parse(err, sizeof(err), mem, "--print-config", "-c", PATH_, NULL), FY_ARGS_EXIT_OK,
                 "%s", err);
    fclose(mem);
    cr_assert_not_null(strstr(text, "\nworkers: 3\n"));
    cr_assert_null(strstr(text, "\nlisten:"), "the shorthand is not printed:\n%s", text);
    cr_assert_null(strstr(text, "\nupstream:"));
    char want[256];
    snprintf(want, sizeof(want), "\n# listeners: and upstreams: are printed as written in %s\n",
             PATH_);
    cr_assert_not_null(strstr(text, want), "%s", text);
    free(text);
}
