/* Unit tests for src/proxy/flow.c: the builders, the JSON line field by field (read back with the
 * project's JSON reader), redaction, body truncation and base64, the URL from scheme and
 * authority. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>

#include "core/json.h"
#include "proxy/flow.h"

static struct fy_msg req_msg(const char *method, const char *target)
{
    struct fy_msg m;
    fy_msg_init(&m);
    m.method = method;
    m.method_len = (uint32_t)strlen(method);
    m.target = target;
    m.target_len = (uint32_t)strlen(target);
    m.version_minor = 1;
    return m;
}

static void add(struct fy_msg *m, const char *n, const char *v)
{
    cr_assert_eq(fy_msg_add(m, n, (uint32_t)strlen(n), v, (uint32_t)strlen(v), FY_TOK_OTHER), 0);
}

static struct fy_json_doc *DOC;

static const struct fy_json *to_json(const struct fy_flow *f, const char *const *redact, uint32_t n)
{
    struct fy_json_writer w;
    fy_json_writer_init(&w, 16 << 20);
    cr_assert_eq(fy_flow_to_json(f, redact, n, &w), 0);
    cr_assert_gt(w.len, 1);
    cr_assert_eq(w.p[w.len - 1], '\n');
    cr_assert_null(memchr(w.p, '\n', w.len - 1), "one line");
    struct fy_json_error e;
    fy_json_doc_free(DOC);
    DOC = fy_json_parse(w.p, w.len, NULL, &e);
    cr_assert_not_null(DOC, "%u:%u: %s in %.*s", e.line, e.col, e.msg, (int)w.len, w.p);
    fy_json_writer_free(&w);
    return fy_json_root(DOC);
}

static void fini(void)
{
    fy_json_doc_free(DOC);
    DOC = NULL;
}

TestSuite(flow, .fini = fini);

static const char *str_of(const struct fy_json *o, const char *key)
{
    const struct fy_json *v = fy_json_get_type(o, key, FY_JSON_STRING);
    cr_assert_not_null(v, "%s is a string", key);
    return v->str;
}

static double num_of(const struct fy_json *o, const char *key)
{
    double d;
    cr_assert(fy_json_get_num(o, key, &d), "%s is a number", key);
    return d;
}

static const struct fy_json *obj_of(const struct fy_json *o, const char *key)
{
    const struct fy_json *v = fy_json_get_type(o, key, FY_JSON_OBJECT);
    cr_assert_not_null(v, "%s is an object", key);
    return v;
}

static void expect_field(const struct fy_json *headers, uint32_t i, const char *n, const char *v)
{
    const struct fy_json *h = headers->child;
    for (uint32_t k = 0; k < i && h; k++)
        h = h->next;
    cr_assert_not_null(h);
    cr_assert_eq(h->type, FY_JSON_ARRAY);
    cr_assert_eq(h->n, 2);
    cr_assert_str_eq(h->child->str, n);
    cr_assert_str_eq(h->child->next->str, v);
}

static struct fy_flow *full_flow(void)
{
    struct fy_flow *f = fy_flow_new(1 << 20);
    cr_assert_not_null(f);
    fy_flow_set_id(f, "4f2c000000000000000000000000abcd", 32);
    /* 2026-12-02T13:20:03.123456Z */
    fy_flow_set_start(f, 1796217603123456ull, 1000000);
    struct sockaddr_in c = {.sin_family = AF_INET, .sin_port = htons(50312)};
    inet_pton(AF_INET, "127.0.0.1", &c.sin_addr);
    fy_flow_set_client(f, (struct sockaddr *)&c);
    struct sockaddr_in6 s = {.sin6_family = AF_INET6, .sin6_port = htons(443)};
    inet_pton(AF_INET6, "2001:db8::1", &s.sin6_addr);
    fy_flow_set_server(f, (struct sockaddr *)&s);
    fy_flow_set_tls(f, "TLSv1.3", "TLS_AES_128_GCM_SHA256", "example.com");

    struct fy_msg m = req_msg("POST", "/a?b=1");
    add(&m, "Host", "example.com");
    add(&m, "Authorization", "Bearer secret");
    add(&m, "X-Gone", "hidden");
    m.hdrs[2].removed = true;
    add(&m, "cookie", "a=1");
    cr_assert_eq(fy_flow_set_request(f, &m, "https", "example.com:443", 15), 0);
    fy_msg_free(&m); /* the flow copied everything */

    struct fy_msg r;
    fy_msg_init(&r);
    r.status = 201;
    r.reason = "Created";
    r.reason_len = 7;
    r.version_minor = 0;
    add(&r, "Content-Type", "text/plain");
    add(&r, "Set-Cookie", "s=2");
    cr_assert_eq(fy_flow_set_response(f, &r), 0);
    fy_msg_free(&r);

    struct iovec iov[2] = {{"hel", 3}, {"lo", 2}};
    fy_flow_req_body(f, iov, 2);
    struct iovec riov = {"ok\n", 3};
    fy_flow_resp_body(f, &riov, 1);

    fy_flow_mark(f, FY_FLOW_CONNECT_START, 1000100);
    fy_flow_mark(f, FY_FLOW_CONNECTED, 1000520);
    fy_flow_mark(f, FY_FLOW_TLS_DONE, 1001820);
    fy_flow_mark(f, FY_FLOW_SENT, 1001830);
    fy_flow_mark(f, FY_FLOW_FIRST_BYTE, 1004030);
    fy_flow_mark(f, FY_FLOW_END, 1004530);
    return f;
}

Test(flow, json_line_has_every_field)
{
    struct fy_flow *f = full_flow();
    const struct fy_json *j = to_json(f, NULL, 0);
    cr_assert_str_eq(str_of(j, "id"), "4f2c000000000000000000000000abcd");
    cr_assert_str_eq(str_of(j, "start"), "2026-12-02T13:20:03.123456Z");
    const struct fy_json *c = obj_of(j, "client");
    cr_assert_str_eq(str_of(c, "ip"), "127.0.0.1");
    cr_assert_eq(num_of(c, "port"), 50312);
    const struct fy_json *s = obj_of(j, "server");
    cr_assert_str_eq(str_of(s, "ip"), "2001:db8::1");
    cr_assert_eq(num_of(s, "port"), 443);
    const struct fy_json *tls = obj_of(j, "tls");
    cr_assert_str_eq(str_of(tls, "version"), "TLSv1.3");
    cr_assert_str_eq(str_of(tls, "cipher"), "TLS_AES_128_GCM_SHA256");
    cr_assert_str_eq(str_of(tls, "sni"), "example.com");

    const struct fy_json *rq = obj_of(j, "request");
    cr_assert_str_eq(str_of(rq, "method"), "POST");
    cr_assert_str_eq(str_of(rq, "url"), "https://example.com/a?b=1");
    cr_assert_str_eq(str_of(rq, "http_version"), "HTTP/1.1");
    const struct fy_json *h = fy_json_get_type(rq, "headers", FY_JSON_ARRAY);
    cr_assert_eq(h->n, 3, "a removed field is not captured");
    expect_field(h, 0, "Host", "example.com");
    expect_field(h, 1, "Authorization", "Bearer secret");
    expect_field(h, 2, "cookie", "a=1");
    const struct fy_json *b = obj_of(rq, "body");
    cr_assert_eq(num_of(b, "size"), 5);
    cr_assert_eq(num_of(b, "captured"), 5);
    cr_assert_str_eq(str_of(b, "encoding"), "utf8");
    cr_assert_str_eq(str_of(b, "data"), "hello");

    const struct fy_json *rs = obj_of(j, "response");
    cr_assert_eq(num_of(rs, "status"), 201);
    cr_assert_str_eq(str_of(rs, "reason"), "Created");
    cr_assert_str_eq(str_of(rs, "http_version"), "HTTP/1.0");
    h = fy_json_get_type(rs, "headers", FY_JSON_ARRAY);
    cr_assert_eq(h->n, 2);
    expect_field(h, 1, "Set-Cookie", "s=2");
    cr_assert_str_eq(str_of(obj_of(rs, "body"), "data"), "ok\n");

    const struct fy_json *t = obj_of(j, "timings");
    cr_assert_eq(num_of(t, "dns"), -1);
    cr_assert_float_eq(num_of(t, "connect"), 0.42, 1e-9);
    cr_assert_float_eq(num_of(t, "ssl"), 1.3, 1e-9);
    cr_assert_float_eq(num_of(t, "send"), 0.01, 1e-9);
    cr_assert_float_eq(num_of(t, "wait"), 2.2, 1e-9);
    cr_assert_float_eq(num_of(t, "receive"), 0.5, 1e-9);
    cr_assert_float_eq(num_of(t, "total"), 4.53, 1e-9);
    cr_assert_eq(fy_json_get(j, "error")->type, FY_JSON_NULL);
    fy_flow_free(f);
}

Test(flow, redaction_replaces_values_of_listed_names_in_any_case)
{
    struct fy_flow *f = full_flow();
    const char *const redact[] = {"authorization", "COOKIE", "set-cookie"};
    const struct fy_json *j = to_json(f, redact, 3);
    const struct fy_json *h = fy_json_get_type(obj_of(j, "request"), "headers", FY_JSON_ARRAY);
    expect_field(h, 0, "Host", "example.com");
    expect_field(h, 1, "Authorization", "[redacted]");
    expect_field(h, 2, "cookie", "[redacted]");
    h = fy_json_get_type(obj_of(j, "response"), "headers", FY_JSON_ARRAY);
    expect_field(h, 0, "Content-Type", "text/plain");
    expect_field(h, 1, "Set-Cookie", "[redacted]");
    /* the flow itself keeps the values (the pretty log decides for itself) */
    cr_assert_eq(f->req.fields[1].value_len, 13);
    cr_assert(fy_flow_redacted("Set-Cookie", 10, redact, 3));
    cr_assert(!fy_flow_redacted("Set-Cookie2", 11, redact, 3));
    fy_flow_free(f);
}

Test(flow, bodies_are_cut_at_max_body_and_the_rest_counted)
{
    struct fy_flow *f = fy_flow_new(10);
    struct fy_msg m = req_msg("PUT", "/");
    cr_assert_eq(fy_flow_set_request(f, &m, "http", "a.test", 6), 0);
    char chunk[7] = "abcdefg";
    struct iovec iov[3] = {{chunk, 7}, {chunk, 7}, {chunk, 7}};
    fy_flow_req_body(f, iov, 3);
    fy_flow_req_body(f, iov, 1);
    cr_assert_eq(f->req_body.size, 28);
    cr_assert_eq(f->req_body.captured, 10);
    cr_assert_leq(f->req_body.cap, 10, "never buffers more than max-body");
    const struct fy_json *b = obj_of(obj_of(to_json(f, NULL, 0), "request"), "body");
    cr_assert_eq(num_of(b, "size"), 28);
    cr_assert_eq(num_of(b, "captured"), 10);
    cr_assert_str_eq(str_of(b, "data"), "abcdefgabc");
    fy_msg_free(&m);
    fy_flow_free(f);
}

Test(flow, max_body_zero_captures_nothing)
{
    struct fy_flow *f = fy_flow_new(0);
    struct iovec iov = {"abc", 3};
    fy_flow_resp_body(f, &iov, 1);
    cr_assert_eq(f->resp_body.size, 3);
    cr_assert_eq(f->resp_body.captured, 0);
    cr_assert_null(f->resp_body.data);
    fy_flow_free(f);
}

Test(flow, binary_bodies_are_base64)
{
    struct fy_flow *f = fy_flow_new(100);
    struct fy_msg r;
    fy_msg_init(&r);
    r.status = 200;
    cr_assert_eq(fy_flow_set_response(f, &r), 0);
    struct iovec iov = {"\x00\xff\x10\x80", 4};
    fy_flow_resp_body(f, &iov, 1);
    const struct fy_json *b = obj_of(obj_of(to_json(f, NULL, 0), "response"), "body");
    cr_assert_str_eq(str_of(b, "encoding"), "base64");
    cr_assert_str_eq(str_of(b, "data"), "AP8QgA==");
    cr_assert_eq(num_of(b, "captured"), 4);
    fy_msg_free(&r);
    fy_flow_free(f);
}

Test(flow, an_empty_flow_writes_nulls_and_minus_one)
{
    struct fy_flow *f = fy_flow_new(100);
    fy_flow_set_error(f, "the client closed the connection before sending a request");
    const struct fy_json *j = to_json(f, NULL, 0);
    cr_assert_str_eq(str_of(j, "id"), "");
    cr_assert_eq(fy_json_get(j, "start")->type, FY_JSON_NULL);
    cr_assert_eq(fy_json_get(j, "client")->type, FY_JSON_NULL);
    cr_assert_eq(fy_json_get(j, "server")->type, FY_JSON_NULL);
    cr_assert_eq(fy_json_get(j, "tls")->type, FY_JSON_NULL);
    cr_assert_eq(fy_json_get(j, "request")->type, FY_JSON_NULL);
    cr_assert_eq(fy_json_get(j, "response")->type, FY_JSON_NULL);
    const struct fy_json *t = obj_of(j, "timings");
    const char *keys[] = {"dns", "connect", "ssl", "send", "wait", "receive", "total"};
    for (int i = 0; i < 7; i++)
        cr_assert_eq(num_of(t, keys[i]), -1, "%s", keys[i]);
    cr_assert_str_eq(str_of(j, "error"),
                     "the client closed the connection before sending a request");
    fy_flow_free(f);
}

Test(flow, url_from_scheme_authority_and_target)
{
    struct {
        const char *scheme, *authority, *target, *url;
    } cases[] = {
        {"https", "x.test:443", "/p", "https://x.test/p"},
        {"https", "x.test:8443", "/p?q=1", "https://x.test:8443/p?q=1"},
        {"http", "x.test:80", "/", "http://x.test/"},
        {"http", "x.test:443", "/", "http://x.test:443/"},
        {"http", "[::1]:80", "/a", "http://[::1]/a"},
        {"http", "proxy.test", "http://other.test:81/z", "http://other.test:81/z"},
        {"http", "x.test", "*", "http://x.test"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fy_flow *f = fy_flow_new(0);
        struct fy_msg m = req_msg("GET", cases[i].target);
        cr_assert_eq(fy_flow_set_request(f, &m, cases[i].scheme, cases[i].authority,
                                         strlen(cases[i].authority)),
                     0);
        cr_assert_eq(f->req.url_len, strlen(cases[i].url), "%s", cases[i].url);
        cr_assert(!memcmp(f->req.url, cases[i].url, f->req.url_len), "%.*s vs %s",
                  (int)f->req.url_len, f->req.url, cases[i].url);
        fy_msg_free(&m);
        fy_flow_free(f);
    }
}

Test(flow, pooled_connection_timings_use_send_start)
{
    struct fy_flow *f = fy_flow_new(0);
    fy_flow_set_start(f, 1, 100);
    fy_flow_mark(f, FY_FLOW_SEND_START, 300);
    fy_flow_mark(f, FY_FLOW_SENT, 1300);
    fy_flow_mark(f, FY_FLOW_FIRST_BYTE, 2300);
    fy_flow_mark(f, FY_FLOW_END, 2400);
    const struct fy_json *t = obj_of(to_json(f, NULL, 0), "timings");
    cr_assert_eq(num_of(t, "connect"), -1);
    cr_assert_eq(num_of(t, "ssl"), -1);
    cr_assert_float_eq(num_of(t, "send"), 1, 1e-9);
    cr_assert_float_eq(num_of(t, "wait"), 1, 1e-9);
    cr_assert_float_eq(num_of(t, "receive"), 0.1, 1e-9);
    cr_assert_float_eq(num_of(t, "total"), 2.3, 1e-9);
    fy_flow_free(f);
}

Test(flow, spliced_bytes_are_counted_and_stop_the_capture)
{
    struct fy_flow *f = fy_flow_new(100);
    struct iovec a = {"head", 4}, b = {"tail", 4};
    fy_flow_resp_body(f, &a, 1);
    fy_flow_resp_body_skipped(f, 1000);
    fy_flow_resp_body(f, &b, 1);
    cr_assert_eq(f->resp_body.size, 1008);
    cr_assert_eq(f->resp_body.captured, 4, "data stays a prefix of the body");
    cr_assert(!memcmp(f->resp_body.data, "head", 4));
    fy_flow_req_body_skipped(f, 7);
    cr_assert_eq(f->req_body.size, 7);
    cr_assert_eq(f->req_body.captured, 0);
    fy_flow_free(f);
}
