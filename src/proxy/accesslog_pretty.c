/*
 * The readable access log (access-log-format: pretty, --log-format pretty): one aligned line per
 * exchange, for a person watching traffic go by (seed 004, mitmdump's view):
 *
 *   13:20:03.123 127.0.0.1:50312   GET     200  https://example.com/a?b=1  text/html 1.2k 4ms
 *
 * coloured when the log is a terminal (status by class, dim time and client). With verbose 1
 * (-v) the request and response heads follow, indented, `>` for what the client sent and `<`
 * for what it got; with verbose 2 (-vv) the bodies too, up to PRETTY_BODY_MAX bytes each: text
 * as it is (control bytes escaped), anything else summarised. Heads and bodies come from the
 * exchange's flow record (proxy/flow.h), which the session keeps when the log asks for them.
 * Everything the client controls is escaped, so a request cannot forge log lines or send
 * terminal escapes.
 */
#include "proxy/accesslog.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include "net/addr.h"
#include "proxy/flow.h"

#define PRETTY_BODY_MAX 4096

#define C_RESET "\033[0m"
#define C_DIM "\033[2m"
#define C_BOLD "\033[1m"
#define C_GREEN "\033[32m"
#define C_CYAN "\033[36m"
#define C_YELLOW "\033[33m"
#define C_RED "\033[31m"

struct pout {
    char *p, *end;
};

static void pput(struct pout *o, const char *s, size_t n)
{
    if ((size_t)(o->end - o->p) < n)
        n = (size_t)(o->end - o->p);
    memcpy(o->p, s, n);
    o->p += n;
}

static void pputs(struct pout *o, const char *s)
{
    pput(o, s, strlen(s));
}

static void pprintf(struct pout *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pprintf(struct pout *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->p, (size_t)(o->end - o->p), fmt, ap);
    va_end(ap);
    if (n > 0)
        o->p += (size_t)n < (size_t)(o->end - o->p) ? (size_t)n : (size_t)(o->end - o->p);
}

/* The length of the valid UTF-8 sequence of 2 to 4 bytes at p (at most n bytes), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;
    if (!len || p[0] > 0xf4 || len > n)
        return 0;
    for (size_t k = 1; k < len; k++)
        if ((p[k] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* Printable ASCII and valid UTF-8 as they are; control bytes, DEL and any other byte (a lone
 * 0x9b is a CSI to some terminals) as \xNN: never a terminal escape. Tabs are kept in bodies. */
static void put_clean(struct pout *o, const char *s, size_t n, bool keep_tabs)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n && o->p < o->end;) {
        unsigned char c = u[i];
        size_t len = c >= 0x80 ? utf8_len(u + i, n - i) : 1;
        if (len > 1) {
            pput(o, s + i, len);
            i += len;
        } else if ((c < 0x20 && !(keep_tabs && c == '\t')) || c >= 0x7f) {
            char x[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            pput(o, x, 4);
            i++;
        } else {
            *o->p++ = (char)c;
            i++;
        }
    }
}

static void put_size(struct pout *o, uint64_t n)
{
    if (n < 1024)
        pprintf(o, "%llub", (unsigned long long)n);
    else if (n < 1024 * 1024)
        pprintf(o, "%.1fk", (double)n / 1024);
    else if (n < 1024ull * 1024 * 1024)
        pprintf(o, "%.1fm", (double)n / (1024 * 1024));
    else
        pprintf(o, "%.1fg", (double)n / (1024.0 * 1024 * 1024));
}

static void put_duration(struct pout *o, uint64_t us)
{
    if (us < 1000)
        pprintf(o, "%lluus", (unsigned long long)us);
    else if (us < 10000000)
        pprintf(o, "%llums", (unsigned long long)(us / 1000));
    else
        pprintf(o, "%.1fs", (double)us / 1e6);
}

static const char *status_color(int status)
{
    return status >= 500 ? C_RED : status >= 400 ? C_YELLOW : status >= 300 ? C_CYAN : C_GREEN;
}

static void put_head(struct pout *o, const struct fy_flow_head *h, bool request, bool color)
{
    const char *mark = request ? "    > " : "    < ";
    if (color)
        pputs(o, C_DIM);
    pputs(o, mark);
    if (request) {
        put_clean(o, h->method, h->method_len, false);
        pputs(o, " ");
        put_clean(o, h->url, h->url_len, false);
        pprintf(o, " HTTP/1.%u\n", h->version_minor);
    } else {
        pprintf(o, "HTTP/1.%u %u ", h->version_minor, h->status);
        put_clean(o, h->reason, h->reason_len, false);
        pputs(o, "\n");
    }
    for (uint32_t i = 0; i < h->nfields; i++) {
        pputs(o, mark);
        put_clean(o, h->fields[i].name, h->fields[i].name_len, false);
        pputs(o, ": ");
        put_clean(o, h->fields[i].value, h->fields[i].value_len, false);
        pputs(o, "\n");
    }
    if (color)
        pputs(o, C_RESET);
}

/* Text: valid UTF-8 without NUL or other control bytes than tab, CR and LF. */
static bool is_text(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        if (c < 0x80) {
            if ((c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7f)
                return false;
            i++;
            continue;
        }
        size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
        if (!len || c > 0xf4)
            return false;
        if (i + len > n)
            return true; /* cut at the capture limit in the middle of a character */
        for (size_t k = 1; k < len; k++)
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
        i += len;
    }
    return true;
}

static void put_body(struct pout *o, const struct fy_flow_body *b, bool request, const char *ctype,
                     size_t ctype_len, bool color)
{
    if (b->size == 0)
        return;
    const char *mark = request ? "    > " : "    < ";
    size_t shown = b->captured < PRETTY_BODY_MAX ? (size_t)b->captured : PRETTY_BODY_MAX;
    if (color)
        pputs(o, C_DIM);
    if (!b->data || !is_text((const unsigned char *)b->data, shown)) {
        pputs(o, mark);
        pprintf(o, "[binary body: %llu bytes", (unsigned long long)b->size);
        if (ctype_len) {
            pputs(o, ", ");
            put_clean(o, ctype, ctype_len, false);
        }
        pputs(o, "]\n");
    } else {
        pputs(o, mark);
        const char *p = b->data, *end = b->data + shown;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *stop = nl ? nl : end;
            size_t n = (size_t)(stop - p);
            if (n && stop[-1] == '\r')
                n--;
            put_clean(o, p, n, true);
            pputs(o, "\n");
            p = nl ? nl + 1 : end;
            if (p < end)
                pputs(o, mark);
        }
        if (b->size > shown) {
            pputs(o, mark);
            pprintf(o, "... (%llu more bytes)\n", (unsigned long long)(b->size - shown));
        }
    }
    if (color)
        pputs(o, C_RESET);
}

/* The response's Content-Type as the flow recorded it (for the summary of a binary body). */
static void flow_ctype(const struct fy_flow *f, const char **ct, size_t *len)
{
    *ct = NULL;
    *len = 0;
    for (uint32_t i = 0; f->resp.set && i < f->resp.nfields; i++)
        if (f->resp.fields[i].name_len == 12 &&
            !strncasecmp(f->resp.fields[i].name, "Content-Type", 12)) {
            *ct = f->resp.fields[i].value;
            *len = f->resp.fields[i].value_len;
        }
}

size_t fy_accesslog_pretty(char *buf, size_t cap, const struct fy_log_entry *e, bool color,
                           unsigned verbose)
{
    struct pout o = {buf, buf + cap - 1};
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    char addr[64];
    fy_addr_format(e->client, addr, sizeof(addr));
    if (color)
        pputs(&o, C_DIM);
    pprintf(&o, "%02d:%02d:%02d.%03d %-21s ", tm.tm_hour, tm.tm_min, tm.tm_sec,
            (int)(tv.tv_usec / 1000), addr);
    if (color)
        pputs(&o, C_RESET C_BOLD);
    char method[16] = "-";
    if (e->method)
        snprintf(method, sizeof(method), "%.*s", e->method_len > 15 ? 15 : (int)e->method_len,
                 e->method);
    put_clean(&o, method, strlen(method), false);
    for (size_t i = strlen(method); i < 7; i++)
        pputs(&o, " ");
    if (color)
        pputs(&o, C_RESET);
    pputs(&o, " ");
    if (color)
        pputs(&o, status_color(e->status));
    pprintf(&o, "%3d", e->status);
    if (color)
        pputs(&o, C_RESET);
    pputs(&o, "  ");
    if (e->target)
        put_clean(&o, e->target, e->target_len > 2000 ? 2000 : e->target_len, false);
    else
        pputs(&o, "-");
    pputs(&o, "  ");
    if (e->content_type_len) {
        /* the media type without its parameters: "text/html" */
        size_t n = 0;
        while (n < e->content_type_len && e->content_type[n] != ';' && n < 60)
            n++;
        put_clean(&o, e->content_type, n, false);
        pputs(&o, " ");
    }
    put_size(&o, e->bytes_out);
    pputs(&o, " ");
    put_duration(&o, e->total_us);
    pputs(&o, "\n");
    const struct fy_flow *f = e->flow;
    if (verbose >= 1 && f) {
        const char *ct;
        size_t ctl;
        flow_ctype(f, &ct, &ctl);
        if (f->req.set)
            put_head(&o, &f->req, true, color);
        if (verbose >= 2)
            put_body(&o, &f->req_body, true, NULL, 0, color);
        if (f->resp.set)
            put_head(&o, &f->resp, false, color);
        if (verbose >= 2)
            put_body(&o, &f->resp_body, false, ct, ctl, color);
    }
    if (o.p == o.end)
        o.p[-1] = '\n';
    return (size_t)(o.p - buf);
}
