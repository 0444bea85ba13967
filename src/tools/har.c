/*
 * `ferry har FILE [-o OUT]`: converts a capture file (docs/capture.md) to HAR 1.2, one entry per
 * captured exchange in file order, streamed (the output is written as entries are made, so a
 * large capture needs no more memory than its longest line).
 *
 * Choices the HAR spec leaves open: send/wait/receive of an exchange that never got that far
 * are 0 (the spec forbids -1 there); `connect` includes `ssl` (as the spec asks); `blocked` is
 * the rest of the total (reading the request, routing, waiting for a connection); a binary
 * request body is base64 in postData.text with "_encoding": "base64"; an exchange without a
 * response has status 0 and its error in "_error". Fields beyond HAR's start with '_'.
 *
 * A line that is not a record is reported on stderr as FILE:LINE:COL and skipped; the output
 * is still a valid HAR of the other lines, and the exit status is 0. Records without a request
 * (refused before a request line was read) are left out, and counted on stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "conf/config.h"
#include "core/json.h"
#include "filters/codec.h"
#include "tools/capfile.h"
#include "tools/tools.h"

#define FLUSH_BYTES (256 * 1024)

struct har_out {
    int fd;
    const char *path;
    struct fy_json_writer w;
    bool failed;
};

static void out_flush(struct har_out *o)
{
    size_t off = 0;
    while (!o->failed && off < o->w.len) {
        ssize_t n = write(o->fd, o->w.p + off, o->w.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "ferry har: cannot write %s: %s\n", o->path,
                    n < 0 ? strerror(errno) : "short write");
            o->failed = true;
            break;
        }
        off += (size_t)n;
    }
    /* Streaming: the text so far is out; the writer keeps its comma state (json.h). */
    o->w.len = 0;
}

static const char *str_or(const struct fy_json *o, const char *key, const char *def)
{
    const struct fy_json *v = fy_json_get_type(o, key, FY_JSON_STRING);
    return v ? v->str : def;
}

static double num_or(const struct fy_json *o, const char *key, double def)
{
    double d;
    return fy_json_get_num(o, key, &d) ? d : def;
}

/* An integer field of the record, or def when it is missing or out of [lo, hi] (a capture file
 * is input: 1e300 must not become an undefined conversion). */
static int64_t int_or(const struct fy_json *o, const char *key, int64_t lo, int64_t hi, int64_t def)
{
    double d = num_or(o, key, (double)def);
    return d >= (double)lo && d <= (double)hi ? (int64_t)d : def;
}

static void put_kv(struct fy_json_writer *w, const char *n, size_t nl, const char *v, size_t vl)
{
    fy_json_obj_begin(w);
    fy_json_key(w, "name");
    fy_json_str(w, n, nl);
    fy_json_key(w, "value");
    fy_json_str(w, v, vl);
    fy_json_obj_end(w);
}

static void trim(const char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

/* A capture's header: a [name, value] pair of strings. */
static bool is_field(const struct fy_json *h)
{
    return h->type == FY_JSON_ARRAY && h->n == 2 && h->child->type == FY_JSON_STRING &&
           h->child->next->type == FY_JSON_STRING;
}

static void put_headers(struct fy_json_writer *w, const struct fy_json *headers)
{
    fy_json_key(w, "headers");
    fy_json_arr_begin(w);
    if (headers && headers->type == FY_JSON_ARRAY)
        for (const struct fy_json *h = headers->child; h; h = h->next)
            if (is_field(h))
                put_kv(w, h->child->str, h->child->len, h->child->next->str, h->child->next->len);
    fy_json_arr_end(w);
}

/* Cookie: "a=1; b=2" -> one cookie each. */
static void put_request_cookies(struct fy_json_writer *w, const struct fy_json *headers)
{
    fy_json_key(w, "cookies");
    fy_json_arr_begin(w);
    if (headers && headers->type == FY_JSON_ARRAY)
        for (const struct fy_json *h = headers->child; h; h = h->next) {
            if (!is_field(h) || strcasecmp(h->child->str, "cookie"))
                continue;
            const char *s = h->child->next->str, *end = s + h->child->next->len;
            while (s < end) {
                const char *semi = memchr(s, ';', (size_t)(end - s));
                const char *pe = semi ? semi : end;
                const char *eq = memchr(s, '=', (size_t)(pe - s));
                if (eq) {
                    const char *n = s, *v = eq + 1;
                    size_t nl = (size_t)(eq - s), vl = (size_t)(pe - v);
                    trim(&n, &nl);
                    trim(&v, &vl);
                    if (nl)
                        put_kv(w, n, nl, v, vl);
                }
                s = pe + (semi ? 1 : 0);
            }
        }
    fy_json_arr_end(w);
}

/* Set-Cookie: "n=v; Path=/; Domain=d; Secure; HttpOnly" -> one cookie per field. */
static void put_response_cookies(struct fy_json_writer *w, const struct fy_json *headers)
{
    fy_json_key(w, "cookies");
    fy_json_arr_begin(w);
    if (headers && headers->type == FY_JSON_ARRAY)
        for (const struct fy_json *h = headers->child; h; h = h->next) {
            if (!is_field(h) || strcasecmp(h->child->str, "set-cookie"))
                continue;
            const char *s = h->child->next->str, *end = s + h->child->next->len;
            const char *semi = memchr(s, ';', (size_t)(end - s));
            const char *pe = semi ? semi : end;
            const char *eq = memchr(s, '=', (size_t)(pe - s));
            if (!eq)
                continue;
            const char *n = s, *v = eq + 1;
            size_t nl = (size_t)(eq - s), vl = (size_t)(pe - v);
            trim(&n, &nl);
            trim(&v, &vl);
            if (!nl)
                continue;
            fy_json_obj_begin(w);
            fy_json_key(w, "name");
            fy_json_str(w, n, nl);
            fy_json_key(w, "value");
            fy_json_str(w, v, vl);
            bool secure = false, http_only = false;
            for (s = semi ? semi + 1 : end; s < end;) {
                semi = memchr(s, ';', (size_t)(end - s));
                pe = semi ? semi : end;
                const char *a = s;
                size_t al = (size_t)(pe - s);
                trim(&a, &al);
                eq = memchr(a, '=', al);
                size_t kl = eq ? (size_t)(eq - a) : al;
                const char *av = eq ? eq + 1 : "";
                size_t avl = eq ? al - kl - 1 : 0;
                if (kl == 4 && !strncasecmp(a, "path", 4)) {
                    fy_json_key(w, "path");
                    fy_json_str(w, av, avl);
                } else if (kl == 6 && !strncasecmp(a, "domain", 6)) {
                    fy_json_key(w, "domain");
                    fy_json_str(w, av, avl);
                } else if (kl == 6 && !strncasecmp(a, "secure", 6)) {
                    secure = true;
                } else if (kl == 8 && !strncasecmp(a, "httponly", 8)) {
                    http_only = true;
                }
                s = pe + (semi ? 1 : 0);
            }
            fy_json_key(w, "httpOnly");
            fy_json_bool(w, http_only);
            fy_json_key(w, "secure");
            fy_json_bool(w, secure);
            fy_json_obj_end(w);
        }
    fy_json_arr_end(w);
}

/* "?a=1&b" -> [{a,1},{b,""}], as written (not percent-decoded), up to any '#'. */
static void put_query(struct fy_json_writer *w, const char *url)
{
    fy_json_key(w, "queryString");
    fy_json_arr_begin(w);
    const char *q = strchr(url, '?');
    if (q) {
        const char *end = strchr(q, '#');
        if (!end)
            end = q + strlen(q);
        for (const char *s = q + 1; s < end;) {
            const char *amp = memchr(s, '&', (size_t)(end - s));
            const char *pe = amp ? amp : end;
            const char *eq = memchr(s, '=', (size_t)(pe - s));
            if (pe > s)
                put_kv(w, s, (size_t)((eq ? eq : pe) - s), eq ? eq + 1 : "",
                       eq ? (size_t)(pe - eq - 1) : 0);
            s = pe + (amp ? 1 : 0);
        }
    }
    fy_json_arr_end(w);
}

/* "2026-12-02T13:20:03.123456Z" -> "2026-12-02T13:20:03.123Z" (HAR wants milliseconds). */
static void put_started(struct fy_json_writer *w, const char *start)
{
    char b[32] = "1970-01-01T00:00:00.000Z";
    size_t n = start ? strlen(start) : 0;
    if (n >= 20 && n < sizeof(b) && start[19] == '.' && start[n - 1] == 'Z') {
        memcpy(b, start, 20);
        size_t frac = n - 21; /* digits after the point */
        for (size_t i = 0; i < 3; i++)
            b[20 + i] = i < frac ? start[20 + i] : '0';
        b[23] = 'Z';
        b[24] = '\0';
    } else if (n == 20 && start[19] == 'Z') {
        memcpy(b, start, 19);
        memcpy(b + 19, ".000Z", 6);
    }
    fy_json_key(w, "startedDateTime");
    fy_json_cstr(w, b);
}

static const char *mime_of(const struct fy_json *headers, const char *def)
{
    const struct fy_json *ct = fy_capfile_header(headers, "content-type");
    return ct ? ct->str : def;
}

static void put_request(struct fy_json_writer *w, const struct fy_json *rq)
{
    const struct fy_json *headers = fy_json_get_type(rq, "headers", FY_JSON_ARRAY);
    const char *url = str_or(rq, "url", "");
    fy_json_key(w, "request");
    fy_json_obj_begin(w);
    fy_json_key(w, "method");
    fy_json_cstr(w, str_or(rq, "method", ""));
    fy_json_key(w, "url");
    fy_json_cstr(w, url);
    fy_json_key(w, "httpVersion");
    fy_json_cstr(w, str_or(rq, "http_version", "HTTP/1.1"));
    put_request_cookies(w, headers);
    put_headers(w, headers);
    put_query(w, url);
    struct fy_capbody b;
    if (fy_capfile_body(fy_json_get(rq, "body"), &b) == 0 && b.size > 0) {
        fy_json_key(w, "postData");
        fy_json_obj_begin(w);
        fy_json_key(w, "mimeType");
        fy_json_cstr(w, mime_of(headers, ""));
        fy_json_key(w, "text");
        fy_json_str(w, b.text, b.text_len);
        if (b.base64) {
            fy_json_key(w, "_encoding");
            fy_json_cstr(w, "base64");
        }
        if (b.captured < b.size) {
            fy_json_key(w, "_captured");
            fy_json_int(w, (int64_t)b.captured);
        }
        fy_json_obj_end(w);
    }
    fy_json_key(w, "headersSize");
    fy_json_int(w, -1);
    fy_json_key(w, "bodySize");
    fy_json_int(w, (int64_t)b.size);
    fy_json_obj_end(w);
}

/* HAR's content is the body as the page got it: decoded from the Content-Encoding the wire
 * carried (Chrome's HAR does the same; bodySize stays the encoded size, `compression` the bytes
 * saved). Only a body captured whole, in one coding ferry knows, and within a bound (a capture is
 * not trusted more than an upstream is). Returns the decoded bytes (malloc'd) or NULL. */
#define HAR_DECODE_MAX ((uint64_t)64 << 20)

static char *decoded_body(const struct fy_json *headers, const struct fy_capbody *b, size_t *len)
{
    const struct fy_json *ce = fy_capfile_header(headers, "content-encoding");
    if (!ce || b->size == 0 || b->captured < b->size)
        return NULL;
    const char *v = ce->str;
    size_t n = ce->len;
    while (n && (*v == ' ' || *v == '\t'))
        v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    int coding = fy_coding_parse(v, n);
    if (coding <= FY_CODING_IDENTITY)
        return NULL;
    char *raw;
    size_t raw_len;
    if (fy_capfile_body_bytes(b, &raw, &raw_len) < 0)
        return NULL;
    struct fy_codec *d = fy_decoder_new((enum fy_coding)coding, HAR_DECODE_MAX, 0);
    size_t cap = raw_len * 4 + 4096, used = 0;
    char *out = d ? malloc(cap) : NULL;
    const uint8_t *in = (const uint8_t *)raw;
    size_t in_len = raw_len;
    enum fy_codec_rc rc = FY_CODEC_MORE;
    while (out && rc != FY_CODEC_DONE && rc != FY_CODEC_ERROR) {
        if (cap - used < 4096) {
            char *bigger = realloc(out, cap * 2);
            if (!bigger)
                break;
            out = bigger;
            cap *= 2;
        }
        uint8_t *o = (uint8_t *)out + used;
        size_t avail = cap - used;
        rc = fy_codec_run(d, &in, &in_len, &o, &avail, FY_CODEC_END);
        used = (size_t)((char *)o - out);
    }
    fy_codec_free(d);
    free(raw);
    if (rc != FY_CODEC_DONE || in_len) {
        free(out);
        return NULL; /* corrupt, truncated, too large: shown as captured */
    }
    *len = used;
    return out;
}

static void put_response(struct fy_json_writer *w, const struct fy_json *rs, const char *error)
{
    const struct fy_json *headers = rs ? fy_json_get_type(rs, "headers", FY_JSON_ARRAY) : NULL;
    fy_json_key(w, "response");
    fy_json_obj_begin(w);
    fy_json_key(w, "status");
    fy_json_int(w, rs ? int_or(rs, "status", 0, 999, 0) : 0);
    fy_json_key(w, "statusText");
    fy_json_cstr(w, rs ? str_or(rs, "reason", "") : "");
    fy_json_key(w, "httpVersion");
    fy_json_cstr(w, rs ? str_or(rs, "http_version", "HTTP/1.1") : "");
    put_response_cookies(w, headers);
    put_headers(w, headers);
    struct fy_capbody b;
    if (!rs || fy_capfile_body(fy_json_get(rs, "body"), &b) < 0)
        memset(&b, 0, sizeof(b));
    fy_json_key(w, "content");
    fy_json_obj_begin(w);
    size_t plain_len = 0;
    char *plain = rs ? decoded_body(headers, &b, &plain_len) : NULL;
    fy_json_key(w, "size");
    fy_json_int(w, (int64_t)(plain ? plain_len : b.size));
    if (plain) {
        fy_json_key(w, "compression");
        fy_json_int(w, (int64_t)plain_len - (int64_t)b.size);
    }
    fy_json_key(w, "mimeType");
    fy_json_cstr(w, mime_of(headers, "x-unknown"));
    if (plain) {
        fy_json_key(w, "text");
        if (fy_utf8_valid(plain, plain_len)) {
            fy_json_str(w, plain, plain_len);
        } else {
            fy_json_base64(w, plain, plain_len);
            fy_json_key(w, "encoding");
            fy_json_cstr(w, "base64");
        }
        free(plain);
    } else if (b.size > 0) {
        fy_json_key(w, "text");
        fy_json_str(w, b.text, b.text_len);
        if (b.base64) {
            fy_json_key(w, "encoding");
            fy_json_cstr(w, "base64");
        }
        if (b.captured < b.size) {
            fy_json_key(w, "_captured");
            fy_json_int(w, (int64_t)b.captured);
        }
    }
    fy_json_obj_end(w);
    const struct fy_json *loc = fy_capfile_header(headers, "location");
    fy_json_key(w, "redirectURL");
    fy_json_str(w, loc ? loc->str : "", loc ? loc->len : 0);
    fy_json_key(w, "headersSize");
    fy_json_int(w, -1);
    fy_json_key(w, "bodySize");
    fy_json_int(w, rs ? (int64_t)b.size : -1);
    if (error) {
        fy_json_key(w, "_error");
        fy_json_cstr(w, error);
    }
    fy_json_obj_end(w);
}

static void put_entry(struct fy_json_writer *w, const struct fy_json *rec)
{
    const struct fy_json *rq = fy_json_get_type(rec, "request", FY_JSON_OBJECT);
    const struct fy_json *rs = fy_json_get_type(rec, "response", FY_JSON_OBJECT);
    const struct fy_json *t = fy_json_get_type(rec, "timings", FY_JSON_OBJECT);
    const struct fy_json *server = fy_json_get_type(rec, "server", FY_JSON_OBJECT);
    const struct fy_json *client = fy_json_get_type(rec, "client", FY_JSON_OBJECT);
    const struct fy_json *tls = fy_json_get_type(rec, "tls", FY_JSON_OBJECT);
    const char *error = str_or(rec, "error", NULL);

    double dns = num_or(t, "dns", -1), connect = num_or(t, "connect", -1);
    double ssl = num_or(t, "ssl", -1), send = num_or(t, "send", -1);
    double wait = num_or(t, "wait", -1), receive = num_or(t, "receive", -1);
    double total = num_or(t, "total", -1);
    send = send < 0 ? 0 : send;
    wait = wait < 0 ? 0 : wait;
    receive = receive < 0 ? 0 : receive;
    if (connect >= 0 && ssl > 0)
        connect += ssl; /* HAR 1.2: connect includes ssl */
    double parts = (dns > 0 ? dns : 0) + (connect > 0 ? connect : 0) + send + wait + receive;
    double time = total >= 0 ? total : parts;
    double blocked = time - parts;
    if (blocked < 0) {
        blocked = 0;
        time = parts; /* keep time equal to the sum of the parts, as HAR readers expect */
    }

    fy_json_obj_begin(w);
    put_started(w, str_or(rec, "start", NULL));
    fy_json_key(w, "time");
    fy_json_fixed(w, time, 3);
    put_request(w, rq);
    put_response(w, rs, error);
    fy_json_key(w, "cache");
    fy_json_obj_begin(w);
    fy_json_obj_end(w);
    fy_json_key(w, "timings");
    fy_json_obj_begin(w);
    fy_json_key(w, "blocked");
    fy_json_fixed(w, blocked, 3);
    fy_json_key(w, "dns");
    fy_json_fixed(w, dns, 3);
    fy_json_key(w, "connect");
    fy_json_fixed(w, connect, 3);
    fy_json_key(w, "ssl");
    fy_json_fixed(w, ssl, 3);
    fy_json_key(w, "send");
    fy_json_fixed(w, send, 3);
    fy_json_key(w, "wait");
    fy_json_fixed(w, wait, 3);
    fy_json_key(w, "receive");
    fy_json_fixed(w, receive, 3);
    fy_json_obj_end(w);
    const char *sip = str_or(server, "ip", NULL);
    if (sip) {
        fy_json_key(w, "serverIPAddress");
        fy_json_cstr(w, sip);
        fy_json_key(w, "_serverPort");
        fy_json_int(w, int_or(server, "port", 0, 65535, 0));
    }
    fy_json_key(w, "_id");
    fy_json_cstr(w, str_or(rec, "id", ""));
    if (client) {
        fy_json_key(w, "_clientIPAddress");
        fy_json_cstr(w, str_or(client, "ip", ""));
        fy_json_key(w, "_clientPort");
        fy_json_int(w, int_or(client, "port", 0, 65535, 0));
    }
    if (tls) {
        fy_json_key(w, "_tls");
        fy_json_obj_begin(w);
        fy_json_key(w, "version");
        fy_json_cstr(w, str_or(tls, "version", ""));
        fy_json_key(w, "cipher");
        fy_json_cstr(w, str_or(tls, "cipher", ""));
        fy_json_key(w, "sni");
        fy_json_cstr(w, str_or(tls, "sni", NULL));
        fy_json_obj_end(w);
    }
    if (error) {
        fy_json_key(w, "_error");
        fy_json_cstr(w, error);
    }
    fy_json_obj_end(w);
}

static int usage(void)
{
    fprintf(stderr, "usage: ferry har FILE [-o OUT]\n"
                    "  converts a capture file (JSON lines) to HAR 1.2 on stdout, or into OUT\n");
    return 1;
}

int fy_cmd_har(int argc, char **argv)
{
    const char *in = NULL, *outp = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) {
            if (++i >= argc) {
                fprintf(stderr, "ferry har: %s needs a file name\n", argv[i - 1]);
                return usage();
            }
            outp = argv[i];
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage();
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "ferry har: unknown option %s\n", argv[i]);
            return usage();
        } else if (in) {
            fprintf(stderr, "ferry har: one capture file only (got %s and %s)\n", in, argv[i]);
            return usage();
        } else {
            in = argv[i];
        }
    }
    if (!in)
        return usage();

    char err[512];
    struct fy_capfile cf;
    if (fy_capfile_open(&cf, in, err, sizeof(err)) < 0) {
        fprintf(stderr, "ferry har: %s\n", err);
        return 1;
    }
    struct har_out o = {.fd = STDOUT_FILENO, .path = "stdout"};
    if (outp) {
        o.path = outp;
        o.fd = open(outp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (o.fd < 0) {
            fprintf(stderr, "ferry har: cannot write %s: %s\n", outp, strerror(errno));
            fy_capfile_close(&cf);
            return 1;
        }
    }
    fy_json_writer_init(&o.w, (size_t)1 << 32);
    struct fy_json_writer *w = &o.w;
    fy_json_obj_begin(w);
    fy_json_key(w, "log");
    fy_json_obj_begin(w);
    fy_json_key(w, "version");
    fy_json_cstr(w, "1.2");
    fy_json_key(w, "creator");
    fy_json_obj_begin(w);
    fy_json_key(w, "name");
    fy_json_cstr(w, "ferry");
    fy_json_key(w, "version");
    fy_json_cstr(w, FERRY_VERSION);
    fy_json_obj_end(w);
    fy_json_key(w, "pages");
    fy_json_arr_begin(w);
    fy_json_arr_end(w);
    fy_json_key(w, "entries");
    fy_json_arr_begin(w);

    unsigned long long bad = 0, no_request = 0, entries = 0;
    struct fy_json_doc *doc;
    int r;
    bool read_failed = false;
    while ((r = fy_capfile_next(&cf, &doc, err, sizeof(err))) != 0) {
        if (r < 0) {
            fprintf(stderr, "ferry har: %s (line skipped)\n", err);
            bad++;
            if (ferror(cf.fp)) {
                read_failed = true;
                break;
            }
            continue;
        }
        const struct fy_json *rec = fy_json_root(doc);
        const struct fy_json *rq = fy_json_get_type(rec, "request", FY_JSON_OBJECT);
        if (!rq) {
            if (!fy_json_get(rec, "request"))
                fprintf(stderr, "ferry har: %s:%llu: not a capture record (no \"request\")\n", in,
                        (unsigned long long)cf.lineno);
            no_request++;
        } else if (!fy_json_get_type(rq, "method", FY_JSON_STRING) ||
                   !fy_json_get_type(rq, "url", FY_JSON_STRING)) {
            fprintf(stderr, "ferry har: %s:%llu: the request has no method or url (skipped)\n", in,
                    (unsigned long long)cf.lineno);
            bad++;
        } else {
            put_entry(w, rec);
            entries++;
        }
        fy_json_doc_free(doc);
        if (w->failed) {
            fprintf(stderr, "ferry har: out of memory at %s:%llu\n", in,
                    (unsigned long long)cf.lineno);
            break;
        }
        if (w->len >= FLUSH_BYTES)
            out_flush(&o);
    }
    fy_json_arr_end(w);
    fy_json_obj_end(w);
    fy_json_obj_end(w);
    fy_json_raw(w, "\n", 1);
    bool failed = w->failed || read_failed;
    out_flush(&o);
    failed |= o.failed;
    if (no_request)
        fprintf(stderr, "ferry har: %llu exchange%s without a request left out\n", no_request,
                no_request == 1 ? "" : "s");
    if (bad)
        fprintf(stderr, "ferry har: %llu bad line%s skipped, %llu entr%s written\n", bad,
                bad == 1 ? "" : "s", entries, entries == 1 ? "y" : "ies");
    fy_json_writer_free(w);
    fy_capfile_close(&cf);
    if (outp && close(o.fd) < 0 && !failed) {
        fprintf(stderr, "ferry har: cannot write %s: %s\n", outp, strerror(errno));
        failed = true;
    }
    return failed ? 1 : 0;
}
