/*
 * Access log formatting and per-worker buffering; see accesslog.h. Formatting avoids printf on the
 * hot path except for the timestamp, which is cached per second.
 */
#include <stddef.h>
#include "proxy/accesslog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http/h1_writer.h"
#include "net/addr.h"

#define LOG_BUF_SIZE (64 * 1024)
#define LINE_MAX_LEN (8 * 1024)
#define PRETTY_MAX_LEN (48 * 1024) /* -vv: two heads and two bodies' beginnings */

static void on_flush_timer(struct fy_timer *t)
{
    struct fy_accesslog *l =
        (struct fy_accesslog *)((char *)t - offsetof(struct fy_accesslog, flush_timer));
    fy_accesslog_flush(l);
}

int fy_accesslog_init(struct fy_accesslog *l, struct fy_loop *loop, int fd,
                      enum fy_log_format format, unsigned verbose)
{
    memset(l, 0, sizeof(*l));
    l->fd = fd;
    l->format = format;
    l->verbose = format == FY_ALOG_PRETTY ? verbose : 0;
    l->loop = loop;
    fy_timer_init(&l->flush_timer, on_flush_timer);
    if (fd < 0)
        return 0;
    l->cap = LOG_BUF_SIZE;
    l->buf = malloc(l->cap);
    l->immediate = isatty(fd);
    const char *no_color = getenv("NO_COLOR"); /* https://no-color.org */
    l->color = l->immediate && (!no_color || !*no_color);
    return l->buf ? 0 : -1;
}

void fy_accesslog_flush(struct fy_accesslog *l)
{
    size_t off = 0;
    while (off < l->len) {
        ssize_t n = write(l->fd, l->buf + off, l->len - off);
        if (n <= 0)
            break; /* a broken log must not stop the proxy */
        off += (size_t)n;
    }
    l->len = 0;
    fy_loop_timer_stop(&l->flush_timer);
}

void fy_accesslog_destroy(struct fy_accesslog *l)
{
    if (l->fd >= 0 && l->len)
        fy_accesslog_flush(l);
    fy_loop_timer_del(l->loop, &l->flush_timer);
    free(l->buf);
    l->buf = NULL;
}

struct out {
    char *p, *end;
};

static void put(struct out *o, const char *s, size_t n)
{
    if ((size_t)(o->end - o->p) < n)
        n = (size_t)(o->end - o->p);
    memcpy(o->p, s, n);
    o->p += n;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_u64(struct out *o, uint64_t v)
{
    char digits[24];
    put(o, digits, fy_u64_to_dec(v, digits));
}

/* Seconds with millisecond precision: "0.003". */
static void put_secs(struct out *o, uint64_t us)
{
    put_u64(o, us / 1000000);
    char frac[4] = {'.', (char)('0' + us / 100000 % 10), (char)('0' + us / 10000 % 10),
                    (char)('0' + us / 1000 % 10)};
    put(o, frac, 4);
}

/* Escapes quotes, backslashes and control bytes so a hostile request cannot forge log lines.
 * Escaped text of at most `max` bytes (an escape never cut): a field longer than that ends in
 * "...". The budgets below keep every field of a line inside LINE_MAX_LEN, so a long target
 * or User-Agent can never cut off the status and the rest, or the end of a JSON object. */
#define MAX_TARGET 4096
#define MAX_AGENT 1024 /* User-Agent, Referer */
#define MAX_SHORT 256  /* method, SNI */
#define MAX_SUBJECT 512

static size_t esc_len(unsigned char c, bool json)
{
    if (c == '"' || c == '\\')
        return 2;
    if (c < 0x20 || c == 0x7f || (json && c >= 0x80))
        return json ? 6 : 4;
    return 1;
}

static void put_esc(struct out *o, unsigned char c, bool json)
{
    static const char hex[] = "0123456789abcdef";
    size_t el = esc_len(c, json);
    if ((size_t)(o->end - o->p) < el)
        return;
    if (el == 1) {
        *o->p++ = (char)c;
    } else if (el == 2) {
        *o->p++ = '\\';
        *o->p++ = (char)c;
    } else {
        *o->p++ = '\\';
        if (json) {
            memcpy(o->p, "u00", 3);
            o->p += 3;
        } else {
            *o->p++ = 'x';
        }
        *o->p++ = hex[c >> 4];
        *o->p++ = hex[c & 15];
    }
}

static void put_escaped(struct out *o, const char *s, size_t n, bool json, size_t max)
{
    size_t avail = (size_t)(o->end - o->p), budget = max < avail ? max : avail, used = 0;
    for (size_t i = 0; i < n; i++) {
        size_t el = esc_len((unsigned char)s[i], json);
        if (used + el + 3 > budget) {
            /* Room is short: the rest goes whole if it fits, else the field ends in "...". */
            size_t need = 0;
            for (size_t k = i; k < n && used + need <= budget; k++)
                need += esc_len((unsigned char)s[k], json);
            if (used + need <= budget) {
                for (; i < n; i++)
                    put_esc(o, (unsigned char)s[i], json);
            } else {
                put(o, "...", 3);
            }
            return;
        }
        put_esc(o, (unsigned char)s[i], json);
        used += el;
    }
}

static __thread time_t cached_sec;
static __thread char cached_clf[32], cached_iso[32];

static void refresh_time(void)
{
    time_t now = time(NULL);
    if (now == cached_sec)
        return;
    cached_sec = now;
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(cached_clf, sizeof(cached_clf), "%d/%b/%Y:%H:%M:%S +0000", &tm);
    strftime(cached_iso, sizeof(cached_iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void fy_log_entry_agent(struct fy_log_entry *e, struct fy_msg *req)
{
    struct fy_hdr *ref = fy_msg_find_tok(req, FY_TOK_REFERER);
    struct fy_hdr *ua = fy_msg_find_tok(req, FY_TOK_USER_AGENT);
    if (ref) {
        e->referer = ref->value;
        e->referer_len = ref->value_len;
    }
    if (ua) {
        e->user_agent = ua->value;
        e->user_agent_len = ua->value_len;
    }
}

void fy_accesslog_write(struct fy_accesslog *l, const struct fy_log_entry *e)
{
    if (l->fd < 0)
        return;
    if (l->format == FY_ALOG_PRETTY) {
        size_t max = l->verbose ? PRETTY_MAX_LEN : LINE_MAX_LEN;
        if (l->cap - l->len < max)
            fy_accesslog_flush(l);
        l->len += (uint32_t)fy_accesslog_pretty(l->buf + l->len, max, e, l->color, l->verbose);
        goto written;
    }
    if (l->cap - l->len < LINE_MAX_LEN)
        fy_accesslog_flush(l);
    refresh_time();
    struct out o = {l->buf + l->len, l->buf + l->len + LINE_MAX_LEN - 1};
    char addr[64];
    const char *method = e->method ? e->method : "-";
    size_t mlen = e->method ? e->method_len : 1;
    const char *target = e->target ? e->target : "-";
    size_t tlen = e->target ? e->target_len : 1;
    if (l->format == FY_ALOG_JSON) {
        puts_(&o, "{\"time\":\"");
        puts_(&o, cached_iso);
        puts_(&o, "\",\"client\":\"");
        fy_addr_format(e->client, addr, sizeof(addr));
        puts_(&o, addr);
        puts_(&o, "\",\"method\":\"");
        put_escaped(&o, method, mlen, true, MAX_SHORT);
        puts_(&o, "\",\"target\":\"");
        put_escaped(&o, target, tlen, true, MAX_TARGET);
        puts_(&o, e->version_minor < 0 ? "\",\"protocol\":\"-\",\"status\":"
                  : e->version_minor   ? "\",\"protocol\":\"HTTP/1.1\",\"status\":"
                                       : "\",\"protocol\":\"HTTP/1.0\",\"status\":");
        put_u64(&o, (uint64_t)e->status);
        puts_(&o, ",\"bytes_in\":");
        put_u64(&o, e->bytes_in);
        puts_(&o, ",\"bytes_out\":");
        put_u64(&o, e->bytes_out);
        puts_(&o, ",\"upstream\":\"");
        if (e->upstream) {
            fy_addr_format(e->upstream, addr, sizeof(addr));
            puts_(&o, addr);
        } else {
            puts_(&o, "-");
        }
        puts_(&o, "\",\"upstream_time\":");
        put_secs(&o, e->upstream_us);
        puts_(&o, ",\"total_time\":");
        put_secs(&o, e->total_us);
        puts_(&o, ",\"request_id\":\"");
        puts_(&o, e->request_id ? e->request_id : "-");
        if (e->tls_version) {
            puts_(&o, "\",\"tls\":\"");
            puts_(&o, e->tls_version);
            puts_(&o, "\",\"tls_cipher\":\"");
            puts_(&o, e->tls_cipher ? e->tls_cipher : "-");
            if (e->tls_server_name) {
                puts_(&o, "\",\"sni\":\"");
                put_escaped(&o, e->tls_server_name, strlen(e->tls_server_name), true, MAX_SHORT);
            }
            if (e->tls_client_subject) {
                puts_(&o, "\",\"client_cert\":\"");
                put_escaped(&o, e->tls_client_subject, strlen(e->tls_client_subject), true,
                            MAX_SUBJECT);
                if (e->tls_client_sha256) {
                    puts_(&o, "\",\"client_cert_sha256\":\"");
                    puts_(&o, e->tls_client_sha256);
                }
            }
        }
        puts_(&o, "\"}\n");
    } else {
        fy_addr_format_host(e->client, addr, sizeof(addr));
        puts_(&o, addr);
        puts_(&o, " - - [");
        puts_(&o, cached_clf);
        puts_(&o, "] \"");
        if (e->method) {
            /* What was read of the request line; "-" for a request that has none (nginx). */
            put_escaped(&o, method, mlen, false, MAX_SHORT);
            puts_(&o, " ");
            put_escaped(&o, target, tlen, false, MAX_TARGET);
            puts_(&o, e->version_minor < 0 ? " -\" "
                      : e->version_minor   ? " HTTP/1.1\" "
                                           : " HTTP/1.0\" ");
        } else {
            puts_(&o, "-\" ");
        }
        put_u64(&o, (uint64_t)e->status);
        puts_(&o, " ");
        put_u64(&o, e->bytes_out);
        puts_(&o, " \"");
        if (e->referer)
            put_escaped(&o, e->referer, e->referer_len, false, MAX_AGENT);
        else
            puts_(&o, "-");
        puts_(&o, "\" \"");
        if (e->user_agent)
            put_escaped(&o, e->user_agent, e->user_agent_len, false, MAX_AGENT);
        else
            puts_(&o, "-");
        puts_(&o, "\" in=");
        put_u64(&o, e->bytes_in);
        puts_(&o, " up=");
        if (e->upstream) {
            fy_addr_format(e->upstream, addr, sizeof(addr));
            puts_(&o, addr);
        } else {
            puts_(&o, "-");
        }
        puts_(&o, " ut=");
        put_secs(&o, e->upstream_us);
        puts_(&o, " rt=");
        put_secs(&o, e->total_us);
        puts_(&o, " id=");
        puts_(&o, e->request_id ? e->request_id : "-");
        if (e->tls_version) {
            puts_(&o, " tls=");
            puts_(&o, e->tls_version);
            puts_(&o, "/");
            puts_(&o, e->tls_cipher ? e->tls_cipher : "-");
        }
        puts_(&o, "\n");
    }
    if (o.p == o.end)
        o.p[-1] = '\n';
    l->len = (uint32_t)(o.p - l->buf);
written:
    if (l->immediate)
        fy_accesslog_flush(l);
    else if (l->flush_timer.deadline == 0)
        fy_loop_timer_set(l->loop, &l->flush_timer, 1000);
}
