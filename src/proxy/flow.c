/*
 * One exchange's record and its JSON line; see flow.h. Heads are copied into one block each
 * (fields array first, then the strings), bodies grow by doubling up to max_body so a small body
 * never costs a max_body allocation.
 */
#include "proxy/flow.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "net/addr.h"

#define ERROR_MAX 512
#define BODY_FIRST_ALLOC 4096

struct fy_flow *fy_flow_new(uint64_t max_body)
{
    struct fy_flow *f = calloc(1, sizeof(*f));
    if (f)
        f->max_body = max_body;
    return f;
}

static void head_clear(struct fy_flow_head *h)
{
    free(h->block);
    memset(h, 0, sizeof(*h));
}

void fy_flow_free(struct fy_flow *f)
{
    if (!f)
        return;
    head_clear(&f->req);
    head_clear(&f->resp);
    free(f->req_body.data);
    free(f->resp_body.data);
    free(f->error);
    free(f);
}

void fy_flow_set_id(struct fy_flow *f, const char *id, size_t len)
{
    if (len > sizeof(f->id) - 1)
        len = sizeof(f->id) - 1;
    memcpy(f->id, id, len);
    f->id[len] = '\0';
}

void fy_flow_set_start(struct fy_flow *f, uint64_t wall_us, uint64_t mono_us)
{
    f->wall_start_us = wall_us;
    f->t[FY_FLOW_START] = mono_us;
}

void fy_flow_mark(struct fy_flow *f, enum fy_flow_point p, uint64_t mono_us)
{
    if ((unsigned)p < FY_FLOW_NPOINTS)
        f->t[p] = mono_us;
}

static char *take(char **p, const char *s, size_t n)
{
    char *d = *p;
    if (n)
        memcpy(d, s, n);
    *p += n;
    return d;
}

/* Copies m's visible fields plus `extra` bytes of strings the caller fills (after the fields'
 * strings, at *extra_at) into a fresh block for h. */
static int head_copy(struct fy_flow_head *h, const struct fy_msg *m, size_t extra, char **extra_at)
{
    size_t nf = 0, strings = extra;
    for (uint32_t i = 0; i < m->nhdrs; i++)
        if (!m->hdrs[i].removed) {
            nf++;
            strings += (size_t)m->hdrs[i].name_len + m->hdrs[i].value_len;
        }
    char *block = malloc(nf * sizeof(struct fy_flow_field) + strings + 1);
    if (!block)
        return -1;
    head_clear(h);
    h->block = block;
    h->fields = (struct fy_flow_field *)block;
    char *p = block + nf * sizeof(struct fy_flow_field);
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        const struct fy_hdr *src = &m->hdrs[i];
        if (src->removed)
            continue;
        struct fy_flow_field *d = &h->fields[h->nfields++];
        d->name = take(&p, src->name, src->name_len);
        d->name_len = src->name_len;
        d->value = take(&p, src->value, src->value_len);
        d->value_len = src->value_len;
    }
    *extra_at = p;
    h->version_minor = m->version_minor;
    h->set = true;
    return 0;
}

/* The authority without the scheme's default port: "a.test:443" for https is "a.test". */
static size_t strip_default_port(const char *scheme, const char *a, size_t n)
{
    const char *def = !strcasecmp(scheme, "https")  ? ":443"
                      : !strcasecmp(scheme, "http") ? ":80"
                                                    : NULL;
    if (!def)
        return n;
    size_t dl = strlen(def);
    if (n > dl && !memcmp(a + n - dl, def, dl) && a[n - dl - 1] != ':')
        return n - dl;
    return n;
}

int fy_flow_set_request(struct fy_flow *f, const struct fy_msg *m, const char *scheme,
                        const char *authority, size_t authority_len)
{
    const char *t = m->target;
    size_t tl = m->target_len;
    size_t sl = strlen(scheme);
    size_t al = strip_default_port(scheme, authority, authority_len);
    bool origin = tl && t[0] == '/';
    bool asterisk = tl == 1 && t[0] == '*';
    size_t url_len = origin || asterisk ? sl + 3 + al + (origin ? tl : 0) : tl;
    char *p;
    if (head_copy(&f->req, m, m->method_len + url_len, &p) < 0)
        return -1;
    f->req.method = take(&p, m->method, m->method_len);
    f->req.method_len = m->method_len;
    f->req.url = p;
    if (origin || asterisk) {
        take(&p, scheme, sl);
        take(&p, "://", 3);
        take(&p, authority, al);
        if (origin)
            take(&p, t, tl);
    } else {
        take(&p, t, tl);
    }
    f->req.url_len = (uint32_t)url_len;
    return 0;
}

int fy_flow_set_response(struct fy_flow *f, const struct fy_msg *m)
{
    char *p;
    if (head_copy(&f->resp, m, m->reason_len, &p) < 0)
        return -1;
    f->resp.status = m->status;
    f->resp.reason = take(&p, m->reason, m->reason_len);
    f->resp.reason_len = m->reason_len;
    return 0;
}

static void body_add(struct fy_flow_body *b, uint64_t max, const struct iovec *iov, int n)
{
    for (int i = 0; i < n; i++) {
        size_t len = iov[i].iov_len;
        b->size += len;
        uint64_t room = b->stopped ? 0 : max - b->captured;
        if (!room || !len)
            continue;
        size_t copy = len < room ? len : (size_t)room;
        if (b->captured + copy > b->cap) {
            uint64_t cap = b->cap ? b->cap : BODY_FIRST_ALLOC;
            while (cap < b->captured + copy)
                cap *= 2;
            if (cap > max)
                cap = max;
            char *d = realloc(b->data, (size_t)cap);
            if (!d) {
                max = b->captured; /* keep what we have; count the rest */
                continue;
            }
            b->data = d;
            b->cap = cap;
        }
        memcpy(b->data + b->captured, iov[i].iov_base, copy);
        b->captured += copy;
    }
}

void fy_flow_req_body_skipped(struct fy_flow *f, uint64_t n)
{
    f->req_body.size += n;
    f->req_body.stopped = true;
}

void fy_flow_resp_body_skipped(struct fy_flow *f, uint64_t n)
{
    f->resp_body.size += n;
    f->resp_body.stopped = true;
}

void fy_flow_req_body(struct fy_flow *f, const struct iovec *iov, int n)
{
    body_add(&f->req_body, f->max_body, iov, n);
}

void fy_flow_resp_body(struct fy_flow *f, const struct iovec *iov, int n)
{
    body_add(&f->resp_body, f->max_body, iov, n);
}

static void copy_addr(struct sockaddr_storage *d, const struct sockaddr *sa)
{
    size_t len = sa->sa_family == AF_INET6  ? sizeof(struct sockaddr_in6)
                 : sa->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                            : sizeof(sa->sa_family);
    memset(d, 0, sizeof(*d));
    memcpy(d, sa, len);
}

void fy_flow_set_client(struct fy_flow *f, const struct sockaddr *sa)
{
    copy_addr(&f->client, sa);
    f->has_client = true;
}

void fy_flow_set_server(struct fy_flow *f, const struct sockaddr *sa)
{
    copy_addr(&f->server, sa);
    f->has_server = true;
}

static void copy_str(char *d, size_t size, const char *s)
{
    snprintf(d, size, "%s", s ? s : "");
}

void fy_flow_set_tls(struct fy_flow *f, const char *version, const char *cipher, const char *sni)
{
    f->tls = true;
    copy_str(f->tls_version, sizeof(f->tls_version), version);
    copy_str(f->tls_cipher, sizeof(f->tls_cipher), cipher);
    copy_str(f->tls_sni, sizeof(f->tls_sni), sni);
}

void fy_flow_set_error(struct fy_flow *f, const char *sentence)
{
    free(f->error);
    f->error = strndup(sentence, ERROR_MAX);
}

bool fy_flow_redacted(const char *name, size_t len, const char *const *names, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (strlen(names[i]) == len && !strncasecmp(names[i], name, len))
            return true;
    return false;
}

/* ---- JSON ---- */

static void put_addr(struct fy_json_writer *w, const char *key, bool has,
                     const struct sockaddr_storage *ss)
{
    fy_json_key(w, key);
    if (!has) {
        fy_json_null(w);
        return;
    }
    char ip[64];
    size_t n = fy_addr_format_host((const struct sockaddr *)ss, ip, sizeof(ip));
    fy_json_obj_begin(w);
    fy_json_key(w, "ip");
    fy_json_str(w, ip, n);
    fy_json_key(w, "port");
    fy_json_int(w, fy_addr_port((const struct sockaddr *)ss));
    fy_json_obj_end(w);
}

static void put_fields(struct fy_json_writer *w, const struct fy_flow_head *h,
                       const char *const *redact, uint32_t nredact)
{
    fy_json_key(w, "headers");
    fy_json_arr_begin(w);
    for (uint32_t i = 0; i < h->nfields; i++) {
        const struct fy_flow_field *fl = &h->fields[i];
        fy_json_arr_begin(w);
        fy_json_str(w, fl->name, fl->name_len);
        if (fy_flow_redacted(fl->name, fl->name_len, redact, nredact))
            fy_json_str(w, "[redacted]", 10);
        else
            fy_json_str(w, fl->value, fl->value_len);
        fy_json_arr_end(w);
    }
    fy_json_arr_end(w);
}

static void put_version(struct fy_json_writer *w, uint8_t minor)
{
    char v[16];
    int n = snprintf(v, sizeof(v), "HTTP/1.%u", minor);
    fy_json_key(w, "http_version");
    fy_json_str(w, v, (size_t)n);
}

static void put_body(struct fy_json_writer *w, const struct fy_flow_body *b)
{
    fy_json_key(w, "body");
    fy_json_obj_begin(w);
    fy_json_key(w, "size");
    fy_json_int(w, (int64_t)b->size);
    fy_json_key(w, "captured");
    fy_json_int(w, (int64_t)b->captured);
    const char *d = b->data ? b->data : "";
    bool text = fy_utf8_valid(d, (size_t)b->captured);
    fy_json_key(w, "encoding");
    fy_json_cstr(w, text ? "utf8" : "base64");
    fy_json_key(w, "data");
    if (text)
        fy_json_str(w, d, (size_t)b->captured);
    else
        fy_json_base64(w, d, (size_t)b->captured);
    fy_json_obj_end(w);
}

/* Milliseconds from point a to point b, or -1 when either was not reached. */
static void put_span(struct fy_json_writer *w, const char *key, uint64_t a, uint64_t b)
{
    fy_json_key(w, key);
    if (!a || !b)
        fy_json_int(w, -1);
    else
        fy_json_fixed(w, b > a ? (double)(b - a) / 1000.0 : 0.0, 3);
}

static void put_start(struct fy_json_writer *w, uint64_t wall_us)
{
    fy_json_key(w, "start");
    if (!wall_us) {
        fy_json_null(w);
        return;
    }
    time_t s = (time_t)(wall_us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char b[40];
    int n = snprintf(b, sizeof(b), "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (unsigned)(wall_us % 1000000));
    fy_json_str(w, b, (size_t)n);
}

int fy_flow_to_json(const struct fy_flow *f, const char *const *redact, uint32_t nredact,
                    struct fy_json_writer *w)
{
    const uint64_t *t = f->t;
    fy_json_obj_begin(w);
    fy_json_key(w, "id");
    fy_json_cstr(w, f->id);
    put_start(w, f->wall_start_us);
    put_addr(w, "client", f->has_client, &f->client);
    put_addr(w, "server", f->has_server, &f->server);

    fy_json_key(w, "tls");
    if (f->tls) {
        fy_json_obj_begin(w);
        fy_json_key(w, "version");
        fy_json_cstr(w, f->tls_version);
        fy_json_key(w, "cipher");
        fy_json_cstr(w, f->tls_cipher);
        fy_json_key(w, "sni");
        fy_json_cstr(w, f->tls_sni[0] ? f->tls_sni : NULL);
        fy_json_obj_end(w);
    } else {
        fy_json_null(w);
    }

    fy_json_key(w, "request");
    if (f->req.set) {
        fy_json_obj_begin(w);
        fy_json_key(w, "method");
        fy_json_str(w, f->req.method, f->req.method_len);
        fy_json_key(w, "url");
        fy_json_str(w, f->req.url, f->req.url_len);
        put_version(w, f->req.version_minor);
        put_fields(w, &f->req, redact, nredact);
        put_body(w, &f->req_body);
        fy_json_obj_end(w);
    } else {
        fy_json_null(w);
    }

    fy_json_key(w, "response");
    if (f->resp.set) {
        fy_json_obj_begin(w);
        fy_json_key(w, "status");
        fy_json_int(w, f->resp.status);
        fy_json_key(w, "reason");
        fy_json_str(w, f->resp.reason, f->resp.reason_len);
        put_version(w, f->resp.version_minor);
        put_fields(w, &f->resp, redact, nredact);
        put_body(w, &f->resp_body);
        fy_json_obj_end(w);
    } else {
        fy_json_null(w);
    }

    /* A pooled connection has no connect or TLS points: the request went out when it was
     * taken (SEND_START); a new one's request went out when it was ready. */
    uint64_t send_from = t[FY_FLOW_SEND_START] ? t[FY_FLOW_SEND_START]
                         : t[FY_FLOW_TLS_DONE] ? t[FY_FLOW_TLS_DONE]
                                               : t[FY_FLOW_CONNECTED];
    fy_json_key(w, "timings");
    fy_json_obj_begin(w);
    fy_json_key(w, "dns");
    fy_json_int(w, -1); /* names are resolved ahead of time, never during an exchange */
    put_span(w, "connect", t[FY_FLOW_CONNECT_START], t[FY_FLOW_CONNECTED]);
    put_span(w, "ssl", t[FY_FLOW_TLS_DONE] ? t[FY_FLOW_CONNECTED] : 0, t[FY_FLOW_TLS_DONE]);
    put_span(w, "send", send_from, t[FY_FLOW_SENT]);
    put_span(w, "wait", t[FY_FLOW_SENT], t[FY_FLOW_FIRST_BYTE]);
    put_span(w, "receive", t[FY_FLOW_FIRST_BYTE], t[FY_FLOW_END]);
    put_span(w, "total", t[FY_FLOW_START], t[FY_FLOW_END]);
    fy_json_obj_end(w);

    fy_json_key(w, "error");
    fy_json_cstr(w, f->error);
    fy_json_obj_end(w);
    fy_json_raw(w, "\n", 1);
    return w->failed ? -1 : 0;
}
