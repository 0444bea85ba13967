/*
 * stress_exchange: a randomized whole-exchange test of client_h1 + session + connpool in one
 * process. ferry workers run in their own threads on a loopback listener; the main thread drives
 * scripted clients and a scripted upstream with non-blocking sockets and poll(). Every exchange has
 * a unique id carried in its request target, and every byte either side produces (bodies, tunnel
 * bytes, filler header values) is derived from that id, so the clients and the upstream check at
 * byte level that they only ever receive their own exchange's bytes: a foreign byte is a
 * cross-client leak, reported with the id it came from when its record tag is visible.
 *
 * A seeded PRNG picks each exchange's script: method, framing, sizes up to 1 MiB, 101 tunnels,
 * and faults on either side (stalls past the timeouts, aborts and resets mid-body, half-closes,
 * malformed heads and chunked bodies, readers that stop reading with a small receive buffer).
 * Exchange N's script is a pure function of the seed and N, so --seed replays the scripts (the
 * interleaving of events is not replayed); --exchange N reruns one script alone, --trace N prints
 * its events, and --cfault/--ufault/--skip steer the fault mix. Exchanges without an injected
 * fault must complete exactly; with a fault, ferry's own 4xx/5xx or a cut connection are fine, a
 * complete-looking wrong response never is.
 *
 * At the end the workers are drained and stopped, and the test checks that ferry kept no client or
 * session, closed every upstream connection and leaked no file descriptor; in the sanitizer build
 * LeakSanitizer checks memory at exit. The test runs in a forked child, so a sanitizer report, an
 * assertion abort or an "error ferry:" log line still ends with the seed that replays it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "filters/builtin.h"
#include "conf/config.h"
#include "core/log.h"
#include "core/loop.h"
#include "net/addr.h"
#include "net/listener.h"
#include "proxy/worker.h"

/* ferry's timeouts for the run (ms): short, so that stalls resolve quickly. The scripts' benign
 * delays stay far below them and their stalls far above, so outcomes do not depend on luck.
 * The body timeout is longer than the upstream timeout on purpose: in a tunnel both measure the
 * same inactivity, and only when the session's timer fires first does a tunnel end while its
 * client, not reading, still has bytes queued (one of the known cross-client leak paths). */
#define T_HEADER 500
#define T_BODY 1000
#define T_UPSTREAM 500
#define T_SEND 1500
#define T_IDLE 5000
#define T_DRAIN 2000

#define EXCHANGE_DEADLINE_MS 20000 /* an exchange still running after this is stuck */
#define SMALL_SOCKBUF 16384        /* worker 0's client sockets (the kernel doubles it) */
#define MAX_CLIENTS 256
#define MAX_STEPS 32
#define MAX_FAILURE_LINES 20

/* ---- clock, PRNG ---- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static uint64_t rng_next(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ULL;
    return mix64(*s);
}

static uint64_t rng_below(uint64_t *s, uint64_t n)
{
    return n ? rng_next(s) % n : 0;
}

static uint64_t rng_range(uint64_t *s, uint64_t lo, uint64_t hi)
{
    return lo + rng_below(s, hi - lo + 1);
}

static bool rng_pct(uint64_t *s, unsigned pct)
{
    return rng_below(s, 100) < pct;
}

/* ---- scripts ---- */

#define METHODS(X)                                                                                 \
    X(GET, "GET")                                                                                  \
    X(HEAD, "HEAD")                                                                                \
    X(POST_CL, "POST")                                                                             \
    X(POST_CHUNKED, "POST")                                                                        \
    X(UPGRADE, "GET")

enum method {
#define X(id, text) M_##id,
    METHODS(X)
#undef X
        M_COUNT
};
static const char *const method_text[] = {
#define X(id, text) text,
    METHODS(X)
#undef X
};
static const char *const method_name[] = {
#define X(id, text) #id,
    METHODS(X)
#undef X
};

/* How the upstream frames its response body (a tunnel has none). */
enum ukind { UK_CL, UK_CHUNKED, UK_CLOSE };
static const char *const ukind_name[] = {"length", "chunked", "close"};

/* Client behaviours. The first ones are benign: the exchange must still complete exactly. */
#define CFAULTS(X)                                                                                 \
    X(NONE)                                                                                        \
    X(PAUSE_SHORT)     /* stop reading for less than any timeout */                                \
    X(SPLIT_HEAD)      /* request head in pieces with small gaps */                                \
    X(HALFCLOSE_AFTER) /* shutdown(SHUT_WR) after the request: ferry may abandon it (499) */       \
    X(PAUSE_LONG)      /* stop reading past --upstream-timeout, within --send-timeout */           \
    X(PAUSE_FOREVER)   /* stop reading past --send-timeout */                                      \
    X(CLOSE)           /* close mid-response */                                                    \
    X(RST)             /* reset mid-response */                                                    \
    X(BAD_CHUNK)       /* chunked body turns malformed after the response head, reader paused */   \
    X(HALFCLOSE_BODY)  /* shutdown(SHUT_WR) mid request body */                                    \
    X(BODY_STALL)      /* request body stops past --body-timeout */                                \
    X(SLOW_HEAD)       /* request head takes longer than --header-timeout */                       \
    X(RST_EARLY)       /* reset right after sending the request */                                 \
    X(NO_FIN)          /* tunnel: never half-close */

enum cfault {
#define X(id) CF_##id,
    CFAULTS(X)
#undef X
        CF_COUNT
};
static const char *const cfault_name[] = {
#define X(id) #id,
    CFAULTS(X)
#undef X
};
#define CF_LAST_BENIGN CF_SPLIT_HEAD

/* Upstream behaviours. */
#define UFAULTS(X)                                                                                 \
    X(NONE)                                                                                        \
    X(DELAY)       /* benign pause mid-body */                                                     \
    X(STALL_HEAD)  /* no head for longer than --upstream-timeout */                                \
    X(BAD_HEAD)    /* malformed response head */                                                   \
    X(HUGE_HEAD)   /* response head over 16 KiB */                                                 \
    X(ABORT_HEAD)  /* close in the middle of the head */                                           \
    X(STALL_BODY)  /* body stops for longer than --upstream-timeout */                             \
    X(ABORT_BODY)  /* close mid-body */                                                            \
    X(RST_BODY)    /* reset mid-body */                                                            \
    X(SHORT_CL)    /* fewer bytes than Content-Length, then close */                               \
    X(BAD_CHUNK)   /* malformed chunk size line mid-body */                                        \
    X(HALFCLOSE)   /* shutdown(SHUT_WR) mid-body, keeps reading */                                 \
    X(EARLY_CLOSE) /* whole response before the request body, then close without reading it */

enum ufault {
#define X(id) UF_##id,
    UFAULTS(X)
#undef X
        UF_COUNT
};
static const char *const ufault_name[] = {
#define X(id) #id,
    UFAULTS(X)
#undef X
};

static bool ufault_pre_head(int f)
{
    return f >= UF_STALL_HEAD && f <= UF_ABORT_HEAD;
}

static bool ufault_post_head(int f)
{
    return f >= UF_STALL_BODY && f <= UF_HALFCLOSE;
}

/* Client script steps, run in order; the response is read alongside. */
enum op {
    OP_HEAD_TO,     /* send the request head up to byte a */
    OP_BODY_TO,     /* send the request body up to byte a */
    OP_END,         /* end the body (last chunk) */
    OP_SLEEP,       /* a ms */
    OP_WAIT_RESP,   /* until a response bytes arrived (or the response ended) */
    OP_WAIT_TUNNEL, /* until the 101 arrived (or the response ended) */
    OP_TSEND_TO,    /* tunnel: send client bytes up to a */
    OP_PAUSE,       /* stop reading */
    OP_RESUME,      /* read again */
    OP_BADCHUNK,    /* a malformed chunk size line */
    OP_SHUT,        /* shutdown(SHUT_WR) */
    OP_CLOSE,       /* close the connection */
    OP_RST,         /* reset the connection */
};

struct step {
    uint8_t op;
    uint64_t a;
};

struct spec {
    uint64_t id;
    int method, ukind, ufault, cfault;
    bool http10, expect, early, interim, uclose, strict;
    uint64_t n;  /* response body (tunnel: upstream-to-client bytes) */
    uint64_t b;  /* request body (tunnel: client-to-upstream bytes) */
    uint64_t ua; /* upstream fault offset in the body (BAD_HEAD: variant, ABORT_HEAD: head byte) */
    int ud;      /* upstream delay or stall, ms */
    int fill;    /* X-Fill length in the response head */
    int qfill;   /* X-Req-Fill length in the request head */
    int rcvbuf;  /* receive buffer for a connection this exchange opens (0 = default) */
    uint64_t cpause_at;
    int cpause_ms;
    struct step steps[MAX_STEPS];
    int nsteps;
};

/* ---- options, global state, failures ---- */

struct opts {
    unsigned long long seed;
    double seconds;
    long iterations;
    int clients;
    int workers;
    enum fy_log_level log_level;
    bool fork;
    uint64_t only_ids[16]; /* replay these exchanges' scripts alone, in order, on one connection */
    int nonly;
    uint64_t trace_id;         /* print the events of this exchange */
    int force_cf, force_uf;    /* -1, or the fault every script gets (--cfault, --ufault) */
    uint32_t skip_cf, skip_uf; /* faults never chosen (--skip), as bit masks */
};

static struct opts opt = {.seconds = 0,
                          .iterations = 0,
                          .clients = 32,
                          .workers = 2,
                          .log_level = FY_LOG_ERROR,
                          .force_cf = -1,
                          .force_uf = -1};

enum outcome { OUT_COMPLETE, OUT_ERROR, OUT_TRUNCATED, OUT_ABANDONED, OUT_FAILED, OUT_COUNT };
static const char *const outcome_name[] = {"complete", "error status", "cut", "abandoned",
                                           "failed"};

static struct {
    uint64_t rng;
    uint64_t next_id;
    long started, finished, strict_ok;
    long outcome[OUT_COUNT];
    long cf[CF_COUNT], uf[UF_COUNT], method[M_COUNT];
    long nconns, nups;
    uint64_t bytes_down, bytes_up;
    int failures;
    bool stop_new;
    struct sockaddr_in ferry_addr;
} g;

static void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void failf(const char *fmt, ...)
{
    g.failures++;
    g.stop_new = true; /* let the exchanges in flight end, start no more */
    if (g.failures > MAX_FAILURE_LINES)
        return;
    char msg[3000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "stress_exchange: FAILED seed=%llu: %s\n", opt.seed, msg);
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* --trace ID: one line per event of that exchange, on stderr. */
#define TRACE(id, ...)                                                                             \
    do {                                                                                           \
        if (opt.trace_id && (id) == opt.trace_id) {                                                \
            fprintf(stderr, "trace %" PRId64 ".%06" PRId64 " ", mono_us() / 1000000,               \
                    mono_us() % 1000000);                                                          \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

static void describe_spec(const struct spec *sp, char *out, size_t cap)
{
    snprintf(out, cap,
             "exchange %" PRIu64 " [%s%s k=%s n=%" PRIu64 " b=%" PRIu64 " uf=%s@%" PRIu64
             "/%dms cf=%s@%" PRIu64 "/%dms%s%s%s%s rcvbuf=%d%s]",
             sp->id, method_name[sp->method], sp->http10 ? " HTTP/1.0" : "", ukind_name[sp->ukind],
             sp->n, sp->b, ufault_name[sp->ufault], sp->ua, sp->ud, cfault_name[sp->cfault],
             sp->cpause_at, sp->cpause_ms, sp->early ? " early" : "", sp->interim ? " 103" : "",
             sp->expect ? " expect" : "", sp->uclose ? " conn-close" : "", sp->rcvbuf,
             sp->strict ? " strict" : "");
}

/* ---- id-derived bytes ---- */

/*
 * A stream (direction marker + exchange id) is a sequence of 32-byte records
 * "<marker><id:10>:<record:10> <9 letters>\n", the letters hashed from id and record number. Any
 * 32 consecutive bytes name the exchange they belong to, which is what a leak report shows.
 * Markers: '#' response body, '$' request body, '%' tunnel upstream-to-client, '&' the other way.
 */
#define REC 32

static void put_dec(char *p, uint64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

static void record(char marker, uint64_t id, uint64_t r, char *out)
{
    out[0] = marker;
    put_dec(out + 1, id, 10);
    out[11] = ':';
    put_dec(out + 12, r, 10);
    out[22] = ' ';
    uint64_t h = mix64(id * 0x9e3779b97f4a7c15ULL ^ r ^ ((uint64_t)(unsigned char)marker << 56));
    for (int i = 0; i < 8; i++) {
        out[23 + i] = (char)('a' + h % 26);
        h /= 26;
    }
    out[31] = '\n';
}

static void pattern(char marker, uint64_t id, uint64_t off, char *dst, size_t n)
{
    char rec[REC];
    uint64_t cur = UINT64_MAX;
    while (n) {
        uint64_t r = off / REC;
        size_t in = (size_t)(off % REC);
        if (r != cur) {
            record(marker, id, r, rec);
            cur = r;
        }
        size_t k = REC - in < n ? REC - in : n;
        memcpy(dst, rec + in, k);
        dst += k;
        off += k;
        n -= k;
    }
}

/* Index of the first byte of p that is not the stream's byte at off + index, or n. */
static size_t pattern_check(char marker, uint64_t id, uint64_t off, const char *p, size_t n)
{
    char tmp[4096];
    size_t done = 0;
    while (done < n) {
        size_t k = n - done < sizeof(tmp) ? n - done : sizeof(tmp);
        pattern(marker, id, off + done, tmp, k);
        if (memcmp(tmp, p + done, k) != 0) {
            for (size_t i = 0; i < k; i++)
                if (tmp[i] != p[done + i])
                    return done + i;
        }
        done += k;
    }
    return n;
}

/* Header values derived from an id (hex digits), to check heads byte by byte too. */
static void fill_value(uint64_t id, char tag, size_t len, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++)
        out[i] = hex[(mix64(id * 31 + (uint64_t)tag * 7919 + i / 16) >> ((i % 16) * 4)) & 15];
}

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_add(struct sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(struct sbuf *s, const char *fmt, ...)
{
    if (s->len + 1 >= s->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(s->p + s->len, s->cap - s->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        s->len = s->len + (size_t)n < s->cap ? s->len + (size_t)n : s->cap - 1;
}

static void sb_escaped(struct sbuf *s, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch >= 32 && ch < 127 && ch != '"' && ch != '\\')
            sb_add(s, "%c", ch);
        else if (ch == '\n')
            sb_add(s, "\\n");
        else if (ch == '\r')
            sb_add(s, "\\r");
        else
            sb_add(s, "\\x%02x", ch);
    }
}

/* Describes the bytes around p[at] (n bytes valid) against what the stream should hold there, and
 * names the exchange the received bytes belong to if a record tag is in sight. */
static void describe_mismatch(char marker, uint64_t id, uint64_t off, const char *p, size_t n,
                              size_t at, char *out, size_t cap)
{
    struct sbuf s = {out, 0, cap};
    out[0] = 0;
    size_t from = at > 16 ? at - 16 : 0;
    size_t to = at + 48 < n ? at + 48 : n;
    char want[64];
    pattern(marker, id, off + from, want, to - from);
    sb_add(&s, "at stream offset %" PRIu64 ": got \"", off + at);
    sb_escaped(&s, p + from, to - from);
    sb_add(&s, "\", want \"");
    sb_escaped(&s, want, to - from);
    sb_add(&s, "\"");
    size_t scan_from = at > 40 ? at - 40 : 0;
    size_t scan_to = at + 72 < n ? at + 72 : n;
    for (size_t i = scan_from; i + 12 <= scan_to; i++) {
        if (!strchr("#$%&", p[i]) || p[i] == 0 || p[i + 11] != ':')
            continue;
        bool digits = true;
        for (int k = 1; k <= 10; k++)
            digits = digits && p[i + k] >= '0' && p[i + k] <= '9';
        if (!digits)
            continue;
        uint64_t other = strtoull((const char *)p + i + 1, NULL, 10);
        if (other != id || p[i] != marker) {
            sb_add(&s,
                   " -- these are bytes of exchange %" PRIu64 " (stream '%c'): CROSS-EXCHANGE LEAK",
                   other, p[i]);
            break;
        }
    }
}

/* ---- HTTP heads ---- */

struct head {
    int minor;
    int status;
    char method[16];
    char target[600];
    int64_t clen;
    bool chunked, te_other, conn_close, conn_upgrade, has_upgrade, via_ferry, plain_text;
    bool has_id;
    uint64_t id;
    const char *fill, *qfill;
    size_t fill_len, qfill_len;
    bool has_fill, has_qfill;
};

static bool tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool lower_eq(const char *p, size_t n, const char *s)
{
    return strlen(s) == n && strncasecmp(p, s, n) == 0;
}

/* Parses a complete head (including the final CRLF CRLF) strictly. Returns 0, or -1 with *why. */
static int parse_head(const char *p, size_t len, bool request, struct head *h, const char **why)
{
    memset(h, 0, sizeof(*h));
    h->clen = -1;
    const char *end = p + len - 2; /* the final empty line */
    const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
    if (!eol) {
        *why = "no start line";
        return -1;
    }
    size_t l = (size_t)(eol - p);
    if (request) {
        const char *sp1 = memchr(p, ' ', l);
        const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
        if (!sp1 || !sp2 || (size_t)(sp1 - p) >= sizeof(h->method) ||
            (size_t)(sp2 - sp1 - 1) >= sizeof(h->target)) {
            *why = "bad request line";
            return -1;
        }
        memcpy(h->method, p, (size_t)(sp1 - p));
        memcpy(h->target, sp1 + 1, (size_t)(sp2 - sp1 - 1));
        if ((size_t)(eol - sp2 - 1) != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
            (sp2[8] != '0' && sp2[8] != '1')) {
            *why = "bad request version";
            return -1;
        }
        h->minor = sp2[8] - '0';
    } else {
        if (l < 13 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ' ||
            p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9' ||
            p[12] != ' ') {
            *why = "bad status line";
            return -1;
        }
        h->minor = p[7] - '0';
        h->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
        for (size_t i = 13; i < l; i++)
            if ((unsigned char)p[i] < 32 && p[i] != '\t') {
                *why = "control byte in the reason phrase";
                return -1;
            }
    }
    const char *q = eol + 2;
    while (q < end) {
        eol = memmem(q, (size_t)(end - q) + 2, "\r\n", 2);
        if (!eol || eol == q) {
            *why = "bad field line";
            return -1;
        }
        const char *colon = memchr(q, ':', (size_t)(eol - q));
        if (!colon || colon == q) {
            *why = "field line without a name";
            return -1;
        }
        for (const char *c = q; c < colon; c++)
            if (!tchar(*c)) {
                *why = "bad field name";
                return -1;
            }
        const char *v = colon + 1;
        const char *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        for (const char *c = v; c < ve; c++)
            if (((unsigned char)*c < 32 && *c != '\t') || *c == 127) {
                *why = "control byte in a field value";
                return -1;
            }
        size_t nl = (size_t)(colon - q), vl = (size_t)(ve - v);
        if (lower_eq(q, nl, "content-length")) {
            int64_t val = 0;
            if (vl == 0 || vl > 15) {
                *why = "bad Content-Length";
                return -1;
            }
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9') {
                    *why = "bad Content-Length";
                    return -1;
                }
                val = val * 10 + (v[i] - '0');
            }
            if (h->clen >= 0 && h->clen != val) {
                *why = "conflicting Content-Length";
                return -1;
            }
            h->clen = val;
        } else if (lower_eq(q, nl, "transfer-encoding")) {
            if (lower_eq(v, vl, "chunked") && !h->chunked)
                h->chunked = true;
            else
                h->te_other = true;
        } else if (lower_eq(q, nl, "connection")) {
            const char *t = v;
            while (t < ve) {
                const char *c = memchr(t, ',', (size_t)(ve - t));
                const char *te = c ? c : ve;
                const char *ts = t;
                while (ts < te && *ts == ' ')
                    ts++;
                const char *tend = te;
                while (tend > ts && tend[-1] == ' ')
                    tend--;
                if (lower_eq(ts, (size_t)(tend - ts), "close"))
                    h->conn_close = true;
                else if (lower_eq(ts, (size_t)(tend - ts), "upgrade"))
                    h->conn_upgrade = true;
                t = c ? c + 1 : ve;
            }
        } else if (lower_eq(q, nl, "upgrade")) {
            h->has_upgrade = true;
        } else if (lower_eq(q, nl, "via")) {
            h->via_ferry = h->via_ferry || memmem(v, vl, "ferry", 5) != NULL;
        } else if (lower_eq(q, nl, "content-type")) {
            h->plain_text = vl >= 10 && strncasecmp(v, "text/plain", 10) == 0;
        } else if (lower_eq(q, nl, "x-ex-id")) {
            char tmp[24];
            if (vl == 0 || vl >= sizeof(tmp) || h->has_id) {
                *why = "bad X-Ex-Id";
                return -1;
            }
            memcpy(tmp, v, vl);
            tmp[vl] = 0;
            char *e;
            h->id = strtoull(tmp, &e, 10);
            if (*e) {
                *why = "bad X-Ex-Id";
                return -1;
            }
            h->has_id = true;
        } else if (lower_eq(q, nl, "x-fill")) {
            h->fill = v;
            h->fill_len = vl;
            h->has_fill = true;
        } else if (lower_eq(q, nl, "x-req-fill")) {
            h->qfill = v;
            h->qfill_len = vl;
            h->has_qfill = true;
        }
        q = eol + 2;
    }
    return 0;
}

static bool fill_ok(uint64_t id, char tag, size_t want, bool has, const char *v, size_t vl)
{
    if (!want)
        return !has;
    if (!has || vl != want)
        return false;
    char tmp[8192];
    if (want > sizeof(tmp))
        return false;
    fill_value(id, tag, want, tmp);
    return memcmp(tmp, v, want) == 0;
}

/* ---- framed bodies ---- */

enum { BR_NONE, BR_LEN, BR_CHUNK, BR_EOF };
enum { CS_SIZE, CS_DATA, CS_DATA_CR, CS_DATA_LF, CS_TRAILER };

struct bodyrd {
    int mode;
    int cs;
    uint64_t left;
    char line[64];
    size_t ll;
    bool done;
    uint64_t total;
};

static void body_init(struct bodyrd *b, int mode, uint64_t len)
{
    memset(b, 0, sizeof(*b));
    b->mode = mode;
    b->left = len;
    b->done = mode == BR_NONE || (mode == BR_LEN && len == 0);
}

typedef bool body_sink_fn(void *arg, const char *p, size_t n);

/* Feeds framed bytes; body data goes to `sink`. Returns the bytes consumed (it stops at the end of
 * the body), or -1 on a framing error (*why set) or when the sink refused (*why NULL). */
static ssize_t body_feed(struct bodyrd *b, const char *p, size_t n, body_sink_fn *sink, void *arg,
                         const char **why)
{
    size_t i = 0;
    *why = NULL;
    while (i < n && !b->done) {
        if (b->mode == BR_LEN || b->mode == BR_EOF) {
            size_t k = n - i;
            if (b->mode == BR_LEN && k > b->left)
                k = (size_t)b->left;
            if (!sink(arg, p + i, k))
                return -1;
            i += k;
            b->total += k;
            if (b->mode == BR_LEN) {
                b->left -= k;
                b->done = b->left == 0;
            }
            continue;
        }
        switch (b->cs) {
        case CS_SIZE:
        case CS_TRAILER: {
            char c = p[i++];
            if (b->ll >= sizeof(b->line) - 1) {
                *why = "chunk line too long";
                return -1;
            }
            b->line[b->ll++] = c;
            if (c != '\n')
                break;
            if (b->ll < 2 || b->line[b->ll - 2] != '\r') {
                *why = "chunk line without CRLF";
                return -1;
            }
            size_t ll = b->ll - 2;
            b->ll = 0;
            if (b->cs == CS_TRAILER) {
                if (ll == 0)
                    b->done = true;
                break;
            }
            if (ll == 0 || ll > 15) {
                *why = "bad chunk size";
                return -1;
            }
            uint64_t sz = 0;
            for (size_t k = 0; k < ll; k++) {
                char d = b->line[k];
                int v = d >= '0' && d <= '9'   ? d - '0'
                        : d >= 'a' && d <= 'f' ? d - 'a' + 10
                        : d >= 'A' && d <= 'F' ? d - 'A' + 10
                                               : -1;
                if (v < 0) {
                    *why = "bad chunk size";
                    return -1;
                }
                sz = sz * 16 + (uint64_t)v;
            }
            if (sz == 0) {
                b->cs = CS_TRAILER;
            } else {
                b->left = sz;
                b->cs = CS_DATA;
            }
            break;
        }
        case CS_DATA: {
            size_t k = n - i < b->left ? n - i : (size_t)b->left;
            if (!sink(arg, p + i, k))
                return -1;
            i += k;
            b->total += k;
            b->left -= k;
            if (!b->left)
                b->cs = CS_DATA_CR;
            break;
        }
        case CS_DATA_CR:
            if (p[i++] != '\r') {
                *why = "chunk data not followed by CRLF";
                return -1;
            }
            b->cs = CS_DATA_LF;
            break;
        case CS_DATA_LF:
            if (p[i++] != '\n') {
                *why = "chunk data not followed by CRLF";
                return -1;
            }
            b->cs = CS_SIZE;
            break;
        }
    }
    return (ssize_t)i;
}

/* ---- script generation ---- */

static uint64_t pick_size(uint64_t *r, uint64_t max)
{
    unsigned k = (unsigned)rng_below(r, 100);
    uint64_t v;
    if (k < 15)
        v = rng_below(r, 64);
    else if (k < 55)
        v = rng_range(r, 64, 4096);
    else if (k < 85)
        v = rng_range(r, 4096, 65536);
    else
        v = rng_range(r, 65536, 1 << 20);
    return v > max ? max : v;
}

static void add_step(struct spec *sp, int op, uint64_t a)
{
    if (sp->nsteps < MAX_STEPS)
        sp->steps[sp->nsteps++] = (struct step){(uint8_t)op, a};
}

/* A request body sent in a few pieces with small gaps (well under --body-timeout), or at once. */
static void add_body(struct spec *sp, uint64_t *r, uint64_t from, uint64_t to, bool paced)
{
    if (paced && to > from && rng_pct(r, 40)) {
        int pieces = (int)rng_range(r, 2, 5);
        for (int i = 1; i < pieces; i++) {
            uint64_t at = from + (to - from) * (uint64_t)i / (uint64_t)pieces;
            add_step(sp, OP_BODY_TO, at);
            add_step(sp, OP_SLEEP, rng_range(r, 0, 15));
        }
    }
    add_step(sp, OP_BODY_TO, to);
}

static const uint64_t HEAD_ALL = UINT64_MAX;

/* Exchange `id`'s script depends only on the seed and the id, whatever order the connections ask
 * for them in, so a seed replays the same set of scripts. */
static void gen_spec(struct spec *sp, uint64_t id)
{
    memset(sp, 0, sizeof(*sp));
    sp->id = id;
    uint64_t rs = mix64(opt.seed ^ mix64(sp->id));
    uint64_t *r = &rs;
    unsigned m = (unsigned)rng_below(r, 100);
    sp->method = m < 40   ? M_GET
                 : m < 46 ? M_HEAD
                 : m < 62 ? M_POST_CL
                 : m < 82 ? M_POST_CHUNKED
                          : M_UPGRADE;
    unsigned k = (unsigned)rng_below(r, 100);
    sp->ukind = k < 40 ? UK_CL : k < 80 ? UK_CHUNKED : UK_CLOSE;
    sp->n = pick_size(r, sp->method == M_UPGRADE ? 512 * 1024 : 1 << 20);
    sp->b = sp->method == M_POST_CL || sp->method == M_POST_CHUNKED ? pick_size(r, 256 * 1024)
            : sp->method == M_UPGRADE                               ? pick_size(r, 128 * 1024)
                                                                    : 0;
    sp->fill = rng_pct(r, 30) ? (int)rng_range(r, 1, 3000) : 0;
    sp->qfill = rng_pct(r, 30) ? (int)rng_range(r, 1, 2000) : 0;
    sp->interim = sp->method != M_UPGRADE && rng_pct(r, 10);
    sp->uclose = sp->method != M_UPGRADE && rng_pct(r, 10);
    sp->rcvbuf = rng_pct(r, 30) ? (int)rng_range(r, 2048, 32768) : 0;

    /* The client side first: some faults need a particular request. */
    unsigned c = (unsigned)rng_below(r, 100);
    if (c < 50) {
        sp->cfault = CF_NONE;
    } else if (c < 60) {
        sp->cfault = CF_PAUSE_SHORT;
    } else if (c < 63) {
        sp->cfault = sp->method == M_UPGRADE ? CF_NONE : CF_HALFCLOSE_AFTER;
    } else if (c < 67) {
        sp->cfault = CF_SPLIT_HEAD;
    } else {
        static const int faults[] = {
            CF_PAUSE_LONG, CF_PAUSE_LONG, CF_PAUSE_FOREVER, CF_CLOSE,
            CF_RST,        CF_BAD_CHUNK,  CF_BAD_CHUNK,     CF_HALFCLOSE_BODY,
            CF_BODY_STALL, CF_SLOW_HEAD,  CF_RST_EARLY,     CF_NO_FIN};
        sp->cfault = faults[rng_below(r, sizeof(faults) / sizeof(faults[0]))];
    }
    if ((opt.skip_cf >> sp->cfault) & 1)
        sp->cfault = CF_NONE;
    if (opt.force_cf >= 0)
        sp->cfault = opt.force_cf; /* the switch below adapts the request to it */
    if (sp->cfault == CF_HALFCLOSE_AFTER && sp->method == M_UPGRADE)
        sp->cfault = CF_NONE;
    switch (sp->cfault) {
    case CF_BAD_CHUNK:
        /* The buggy path: the response head is out, the client's socket is full, then the body
         * turns malformed. So: chunked, an early and large response, a small receive buffer. */
        sp->method = M_POST_CHUNKED;
        sp->b = rng_range(r, 16 * 1024, 128 * 1024);
        sp->early = rng_pct(r, 85);
        if (sp->ukind == UK_CLOSE && rng_pct(r, 50))
            sp->ukind = UK_CHUNKED;
        sp->n = rng_range(r, 256 * 1024, 1 << 20);
        sp->rcvbuf = (int)rng_range(r, 2048, 8192);
        break;
    case CF_HALFCLOSE_BODY:
    case CF_BODY_STALL:
        if (sp->method != M_POST_CL && sp->method != M_POST_CHUNKED)
            sp->method = rng_pct(r, 50) ? M_POST_CL : M_POST_CHUNKED;
        if (sp->b < 1024)
            sp->b = rng_range(r, 1024, 128 * 1024);
        if (rng_pct(r, 50)) {
            sp->n = rng_range(r, 128 * 1024, 1 << 20);
            sp->rcvbuf = (int)rng_range(r, 2048, 8192);
        }
        break;
    case CF_PAUSE_LONG:
    case CF_PAUSE_FOREVER:
    case CF_PAUSE_SHORT:
        if (sp->method == M_HEAD)
            sp->method = M_GET;
        if (sp->cfault != CF_PAUSE_SHORT && rng_pct(r, 70))
            sp->n = rng_range(r, 128 * 1024, sp->method == M_UPGRADE ? 512 * 1024 : 1 << 20);
        sp->rcvbuf = (int)rng_range(r, 2048, 16384);
        break;
    case CF_NO_FIN:
        sp->method = M_UPGRADE;
        sp->interim = sp->uclose = false;
        if (sp->n > 512 * 1024)
            sp->n = 512 * 1024;
        break;
    default:
        break;
    }
    bool post = sp->method == M_POST_CL || sp->method == M_POST_CHUNKED;
    bool tunnel = sp->method == M_UPGRADE;
    if (tunnel)
        sp->interim = sp->uclose = false;
    if (!post && !tunnel)
        sp->b = 0;
    if (sp->method == M_HEAD && sp->ukind == UK_CLOSE)
        sp->ukind = UK_CL;
    sp->http10 =
        !tunnel && sp->method != M_POST_CHUNKED && sp->cfault != CF_BAD_CHUNK && rng_pct(r, 8);
    sp->expect = post && !sp->http10 && rng_pct(r, 20);
    if (post && sp->cfault != CF_BAD_CHUNK)
        sp->early = rng_pct(r, 30);

    /* Then the upstream. */
    uint64_t body = sp->method == M_HEAD ? 0 : sp->n;
    unsigned u = (unsigned)rng_below(r, 100);
    if (opt.force_uf == UF_NONE || opt.force_uf == UF_DELAY)
        u = opt.force_uf == UF_NONE ? 0 : 60;
    else if (opt.force_uf > 0)
        u = 99;
    if (u < 55) {
        sp->ufault = UF_NONE;
    } else if (u < 63 && !((opt.skip_uf >> UF_DELAY) & 1)) {
        /* Inside the body: a pause after its last byte would follow a response ferry already
         * considers complete. Without a body the pause comes before the head. */
        sp->ufault = UF_DELAY;
        sp->ua = rng_below(r, body);
        sp->ud = (int)rng_range(r, 5, 50);
    } else {
        int cand[16], nc = 0;
        cand[nc++] = UF_STALL_HEAD;
        cand[nc++] = UF_BAD_HEAD;
        cand[nc++] = UF_HUGE_HEAD;
        cand[nc++] = UF_ABORT_HEAD;
        if (body > 0) {
            cand[nc++] = UF_STALL_BODY;
            cand[nc++] = UF_ABORT_BODY;
            cand[nc++] = UF_RST_BODY;
            cand[nc++] = UF_HALFCLOSE;
            if (!tunnel && sp->ukind == UK_CL)
                cand[nc++] = UF_SHORT_CL;
            if (!tunnel && sp->ukind == UK_CHUNKED)
                cand[nc++] = UF_BAD_CHUNK;
        }
        if (post)
            cand[nc++] = UF_EARLY_CLOSE;
        sp->ufault = cand[rng_below(r, (uint64_t)nc)];
        if ((opt.skip_uf >> sp->ufault) & 1)
            sp->ufault = UF_NONE;
        for (int i = 0; i < nc && opt.force_uf >= 0; i++)
            if (cand[i] == opt.force_uf)
                sp->ufault = opt.force_uf; /* when it applies to this request */
        switch (sp->ufault) {
        case UF_STALL_HEAD:
            sp->ud = (int)rng_range(r, 1500, 1700);
            break;
        case UF_BAD_HEAD:
            sp->ua = rng_below(r, 3);
            break;
        case UF_ABORT_HEAD:
            sp->ua = rng_below(r, 200);
            break;
        case UF_STALL_BODY:
            sp->ud = (int)rng_range(r, 1200, 1500);
            sp->ua = rng_below(r, body);
            break;
        case UF_EARLY_CLOSE:
            sp->early = true;
            break;
        default:
            sp->ua = rng_below(r, body);
            break;
        }
    }
    bool benign_up = sp->ufault == UF_NONE || sp->ufault == UF_DELAY ||
                     (sp->ufault == UF_HALFCLOSE && (tunnel || sp->ukind == UK_CLOSE));
    sp->strict = sp->cfault <= CF_LAST_BENIGN && benign_up;

    /* The client's script. A paced request body stops the upstream timer each time ferry waits
     * for its bytes, which would make the moment an upstream stall is noticed vary: only
     * exchanges without an upstream fault pace their bodies. */
    bool paced = sp->ufault == UF_NONE || sp->ufault == UF_DELAY;
    uint64_t total_resp = sp->n + 200;
    if (sp->cfault == CF_SPLIT_HEAD) {
        int pieces = (int)rng_range(r, 2, 4);
        for (int i = 1; i < pieces; i++) {
            add_step(sp, OP_HEAD_TO, rng_range(r, 1, 60) * (uint64_t)i);
            add_step(sp, OP_SLEEP, rng_range(r, 1, 30));
        }
    } else if (sp->cfault == CF_SLOW_HEAD) {
        add_step(sp, OP_HEAD_TO, rng_range(r, 1, 40));
        add_step(sp, OP_SLEEP, (uint64_t)T_HEADER + rng_range(r, 400, 600));
    }
    add_step(sp, OP_HEAD_TO, HEAD_ALL);
    if (tunnel) {
        add_step(sp, OP_WAIT_TUNNEL, 0);
        switch (sp->cfault) {
        case CF_PAUSE_SHORT:
        case CF_PAUSE_LONG:
        case CF_PAUSE_FOREVER: {
            uint64_t c1 = rng_below(r, sp->b + 1);
            add_step(sp, OP_TSEND_TO, c1);
            sp->cpause_at = rng_below(r, sp->n / 2 + 1);
            /* Long: past the tunnel's inactivity limit (upstream timeout), within the client's
             * (body timeout), so ferry ends the tunnel with the reader paused. */
            sp->cpause_ms = sp->cfault == CF_PAUSE_SHORT ? (int)rng_range(r, 5, 100)
                            : sp->cfault == CF_PAUSE_LONG
                                ? (int)rng_range(r, T_UPSTREAM + 100, T_BODY - 50)
                                : (int)rng_range(r, 2000, 2600);
            add_step(sp, OP_WAIT_RESP, sp->cpause_at);
            add_step(sp, OP_PAUSE, 0);
            add_step(sp, OP_SLEEP, (uint64_t)sp->cpause_ms);
            add_step(sp, OP_RESUME, 0);
            add_step(sp, OP_TSEND_TO, sp->b);
            add_step(sp, OP_SHUT, 0);
            break;
        }
        case CF_CLOSE:
        case CF_RST:
            add_step(sp, OP_TSEND_TO, rng_below(r, sp->b + 1));
            sp->cpause_at = rng_below(r, sp->n + 1);
            add_step(sp, OP_WAIT_RESP, sp->cpause_at);
            add_step(sp, sp->cfault == CF_CLOSE ? OP_CLOSE : OP_RST, 0);
            break;
        case CF_NO_FIN:
            add_step(sp, OP_TSEND_TO, sp->b);
            break;
        case CF_RST_EARLY:
            add_step(sp, OP_RST, 0);
            break;
        case CF_HALFCLOSE_BODY:
        case CF_BODY_STALL:
        case CF_BAD_CHUNK:
        case CF_HALFCLOSE_AFTER:
            break; /* not generated for tunnels */
        default:
            add_step(sp, OP_TSEND_TO, sp->b);
            add_step(sp, OP_SHUT, 0);
            break;
        }
        return;
    }
    if (sp->cfault == CF_RST_EARLY) {
        if (post)
            add_body(sp, r, 0, rng_below(r, sp->b + 1), false);
        add_step(sp, OP_RST, 0);
        return;
    }
    if (post) {
        switch (sp->cfault) {
        case CF_BAD_CHUNK: {
            uint64_t b1 = rng_below(r, sp->b / 2 + 1);
            add_body(sp, r, 0, b1, false);
            if (sp->early) {
                sp->cpause_at = rng_range(r, 100, 64 * 1024);
                add_step(sp, OP_WAIT_RESP, sp->cpause_at);
                add_step(sp, OP_PAUSE, 0);
                add_body(sp, r, b1, rng_range(r, b1, sp->b), false);
                /* Long enough for ferry's socket to fill, short enough that its body/send
                 * timers (re-armed by this activity) do not close the connection first. */
                add_step(sp, OP_SLEEP, rng_range(r, 50, 250));
                add_step(sp, OP_BADCHUNK, rng_below(r, 2));
                sp->cpause_ms = (int)rng_range(r, 10, 400);
                add_step(sp, OP_SLEEP, (uint64_t)sp->cpause_ms);
                add_step(sp, OP_RESUME, 0);
            } else {
                add_step(sp, OP_SLEEP, rng_range(r, 0, 50));
                add_step(sp, OP_BADCHUNK, rng_below(r, 2));
            }
            return;
        }
        case CF_HALFCLOSE_BODY:
        case CF_BODY_STALL: {
            uint64_t b1 = rng_below(r, sp->b);
            add_body(sp, r, 0, b1, false);
            bool pause = sp->early && rng_pct(r, 60);
            if (pause) {
                sp->cpause_at = rng_range(r, 100, 64 * 1024);
                add_step(sp, OP_WAIT_RESP, sp->cpause_at);
                add_step(sp, OP_PAUSE, 0);
                add_step(sp, OP_SLEEP, rng_range(r, 50, 200));
            }
            if (sp->cfault == CF_HALFCLOSE_BODY) {
                add_step(sp, OP_SHUT, 0);
                sp->cpause_ms = (int)rng_range(r, 10, 400);
                add_step(sp, OP_SLEEP, (uint64_t)sp->cpause_ms);
                add_step(sp, OP_RESUME, 0);
            } else {
                sp->cpause_ms = T_BODY + (int)rng_range(r, 400, 700);
                add_step(sp, OP_SLEEP, (uint64_t)sp->cpause_ms);
                add_step(sp, OP_RESUME, 0);
                add_body(sp, r, b1, sp->b, false);
                add_step(sp, OP_END, 0);
            }
            return;
        }
        default:
            add_body(sp, r, 0, sp->b, paced);
            add_step(sp, OP_END, 0);
            break;
        }
    }
    switch (sp->cfault) {
    case CF_PAUSE_SHORT:
    case CF_PAUSE_LONG:
    case CF_PAUSE_FOREVER:
        sp->cpause_at = rng_below(r, total_resp);
        sp->cpause_ms = sp->cfault == CF_PAUSE_SHORT  ? (int)rng_range(r, 5, 100)
                        : sp->cfault == CF_PAUSE_LONG ? (int)rng_range(r, 700, 1200)
                                                      : (int)rng_range(r, 2000, 2600);
        add_step(sp, OP_WAIT_RESP, sp->cpause_at);
        add_step(sp, OP_PAUSE, 0);
        add_step(sp, OP_SLEEP, (uint64_t)sp->cpause_ms);
        add_step(sp, OP_RESUME, 0);
        break;
    case CF_CLOSE:
    case CF_RST:
        sp->cpause_at = rng_below(r, total_resp);
        add_step(sp, OP_WAIT_RESP, sp->cpause_at);
        add_step(sp, sp->cfault == CF_CLOSE ? OP_CLOSE : OP_RST, 0);
        break;
    case CF_HALFCLOSE_AFTER:
        add_step(sp, OP_SHUT, 0);
        break;
    default:
        break;
    }
}

static uint64_t expected_len(const struct spec *sp)
{
    if (sp->method == M_HEAD)
        return 0;
    /* A close-delimited body (or a tunnel direction) ends where the upstream stops sending. */
    bool eof_framed = sp->method == M_UPGRADE || sp->ukind == UK_CLOSE;
    if (eof_framed && (sp->ufault == UF_HALFCLOSE || sp->ufault == UF_ABORT_BODY))
        return sp->ua;
    return sp->n;
}

/* ---- the scripted upstream ---- */

enum { R_HEAD, R_BODY, R_WAIT, R_TUNNEL };
enum { W_IDLE, W_WAIT, W_SEND, W_DONE };

struct uspec {
    uint64_t id, n, b, a;
    int m, k, f, d, e, i, c, h, q, z;
};

struct ups {
    int fd;
    bool dead;
    int rst, wst;
    char ib[65536];
    size_t ib_len;
    struct bodyrd br;
    struct uspec sp;
    bool have, strict, tunnel, is_head, keepalive;
    uint64_t req_got;
    bool req_done, rd_eof, shut;
    char *head;
    size_t head_len, head_off, head_limit;
    uint64_t body_len, body_off, chunk_left;
    bool fault_pending, end_queued;
    int64_t wake_at;
    char ob[32768];
    size_t ob_len, ob_off;
    uint64_t rng;
    int nreq;
    short events;
    int64_t wake;
};

static struct ups **ups;
static int nups, ups_cap;

static bool parse_target(const char *t, struct uspec *u)
{
    memset(u, 0, sizeof(*u));
    if (strncmp(t, "/x/", 3) != 0)
        return false;
    char *end;
    u->id = strtoull(t + 3, &end, 10);
    if (*end != '?')
        return false;
    const char *p = end + 1;
    while (*p) {
        char key = *p;
        if (p[1] != '=')
            return false;
        uint64_t v = strtoull(p + 2, &end, 10);
        if (end == p + 2)
            return false;
        switch (key) {
        case 'm':
            u->m = (int)v;
            break;
        case 'k':
            u->k = (int)v;
            break;
        case 'n':
            u->n = v;
            break;
        case 'b':
            u->b = v;
            break;
        case 'f':
            u->f = (int)v;
            break;
        case 'a':
            u->a = v;
            break;
        case 'd':
            u->d = (int)v;
            break;
        case 'e':
            u->e = (int)v;
            break;
        case 'i':
            u->i = (int)v;
            break;
        case 'c':
            u->c = (int)v;
            break;
        case 'h':
            u->h = (int)v;
            break;
        case 'q':
            u->q = (int)v;
            break;
        case 'z':
            u->z = (int)v;
            break;
        default:
            return false;
        }
        p = end;
        if (*p == '&')
            p++;
        else if (*p)
            return false;
    }
    return u->m >= 0 && u->m < M_COUNT && u->f >= 0 && u->f < UF_COUNT && u->k >= 0 && u->k <= 2;
}

static void ups_close(struct ups *u, bool rst)
{
    if (u->dead)
        return;
    if (rst) {
        struct linger lg = {1, 0};
        setsockopt(u->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(u->fd);
    u->fd = -1;
    u->dead = true;
}

static void ups_fail(struct ups *u, const char *what, ...) __attribute__((format(printf, 2, 3)));
static void ups_fail(struct ups *u, const char *what, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, what);
    vsnprintf(msg, sizeof(msg), what, ap);
    va_end(ap);
    char d[700] = "exchange ?";
    if (u->have) {
        struct spec sp; /* the client's script, regenerated: it depends on the seed and id only */
        gen_spec(&sp, u->sp.id);
        describe_spec(&sp, d, sizeof(d));
    }
    failf("upstream, %s: %s", d, msg);
    ups_close(u, false);
}

/* Reports a failure of the upstream side and returns from the (void) caller. */
#define UPS_FAIL(u, ...)                                                                           \
    do {                                                                                           \
        ups_fail(u, __VA_ARGS__);                                                                  \
        return;                                                                                    \
    } while (0)

static void ups_build_head(struct ups *u)
{
    struct uspec *s = &u->sp;
    size_t cap = 64 * 1024;
    struct sbuf b = {malloc(cap), 0, cap};
    if (!b.p) {
        fprintf(stderr, "stress_exchange: out of memory\n");
        exit(2);
    }
    if (s->i)
        sb_add(&b, "HTTP/1.1 103 Early Hints\r\nX-Ex-Id: %" PRIu64 "\r\n\r\n", s->id);
    if (s->f == UF_BAD_HEAD) {
        /* Heads any strict reader must refuse: a bad status code, a field line without a colon,
         * conflicting lengths. */
        if (s->a == 0)
            sb_add(&b, "HTTP/1.1 2x0 OK\r\nX-Ex-Id: %" PRIu64 "\r\nContent-Length: 0\r\n\r\n",
                   s->id);
        else if (s->a == 1)
            sb_add(&b, "HTTP/1.1 200 OK\r\nX-Ex-Id: %" PRIu64 "\r\nBroken field line\r\n\r\n",
                   s->id);
        else
            sb_add(&b,
                   "HTTP/1.1 200 OK\r\nX-Ex-Id: %" PRIu64
                   "\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n",
                   s->id);
    } else {
        if (u->tunnel)
            sb_add(&b, "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                       "Upgrade: websocket\r\n");
        else
            sb_add(&b, "HTTP/1.1 200 OK\r\n");
        sb_add(&b, "X-Ex-Id: %" PRIu64 "\r\n", s->id);
        if (s->h > 0 && s->h <= 8000) {
            char fv[8192];
            fill_value(s->id, 'f', (size_t)s->h, fv);
            sb_add(&b, "X-Fill: %.*s\r\n", s->h, fv);
        }
        if (!u->tunnel) {
            if (s->k == UK_CL)
                sb_add(&b, "Content-Length: %" PRIu64 "\r\n", s->n);
            else if (s->k == UK_CHUNKED)
                sb_add(&b, "Transfer-Encoding: chunked\r\n");
            if (s->c || s->k == UK_CLOSE || s->f == UF_EARLY_CLOSE)
                sb_add(&b, "Connection: close\r\n");
        }
        if (s->f == UF_HUGE_HEAD) {
            char v[1001];
            memset(v, 'h', 1000);
            v[1000] = 0;
            for (int i = 0; i < 20; i++)
                sb_add(&b, "X-Huge-%02d: %s\r\n", i, v);
        }
        sb_add(&b, "\r\n");
    }
    free(u->head);
    u->head = b.p;
    u->head_len = b.len;
    u->head_off = 0;
    u->head_limit = b.len;
    if (s->f == UF_ABORT_HEAD)
        u->head_limit = s->a < b.len ? (size_t)s->a : b.len - 1;
}

static void ups_start_response(struct ups *u, int64_t now)
{
    ups_build_head(u);
    u->body_len = u->is_head ? 0 : u->sp.n;
    u->body_off = 0;
    u->chunk_left = 0;
    u->end_queued = false;
    u->fault_pending = u->sp.f == UF_DELAY || ufault_post_head(u->sp.f);
    u->wst = W_SEND;
    if (u->sp.f == UF_STALL_HEAD || (u->sp.f == UF_DELAY && u->body_len == 0)) {
        u->wst = W_WAIT;
        u->wake_at = now + u->sp.d;
        u->fault_pending = false;
    }
}

/* The response is out: next request, or close as the script says. */
static void ups_response_done(struct ups *u)
{
    TRACE(u->sp.id, "upstream fd %d: response sent", u->fd);
    u->wst = W_DONE;
    if (u->sp.f == UF_EARLY_CLOSE) {
        ups_close(u, false);
        return;
    }
    if (!u->keepalive && !u->shut) {
        shutdown(u->fd, SHUT_WR);
        u->shut = true;
    }
    if (u->tunnel && u->rd_eof) {
        if (u->strict && u->req_got != u->sp.b)
            ups_fail(u, "tunnel carried %" PRIu64 " of %" PRIu64 " client bytes", u->req_got,
                     u->sp.b);
        ups_close(u, false);
    }
}

static bool ups_input(struct ups *u, int64_t now);

/* Ready for the next request on this connection. Inside ups_input() the caller's loop parses
 * what is left; elsewhere `reparse` parses the bytes that already arrived. */
static void ups_next_request(struct ups *u, int64_t now, bool reparse)
{
    u->have = false;
    u->rst = R_HEAD;
    u->wst = W_IDLE;
    u->req_done = false;
    u->req_got = 0;
    free(u->head);
    u->head = NULL;
    if (reparse && u->ib_len)
        ups_input(u, now);
}

static void ups_request_done(struct ups *u, int64_t now)
{
    TRACE(u->sp.id, "upstream fd %d: request body complete (%" PRIu64 " bytes)", u->fd, u->req_got);
    u->req_done = true;
    u->rst = R_WAIT;
    if (u->req_got != u->sp.b) {
        ups_fail(u, "the request body ended complete after %" PRIu64 " of %" PRIu64 " bytes",
                 u->req_got, u->sp.b);
        return;
    }
    if (u->wst == W_IDLE)
        ups_start_response(u, now);
    else if (u->wst == W_DONE && u->keepalive)
        ups_next_request(u, now, false);
}

static bool ups_sink(void *arg, const char *p, size_t n)
{
    struct ups *u = arg;
    char marker = u->tunnel ? '&' : '$';
    size_t bad = pattern_check(marker, u->sp.id, u->req_got, p, n);
    if (bad < n) {
        char d[1024];
        describe_mismatch(marker, u->sp.id, u->req_got, p, n, bad, d, sizeof(d));
        ups_fail(u, "foreign byte in the %s %s", u->tunnel ? "tunnel" : "request body", d);
        return false;
    }
    if (u->req_got + n > u->sp.b) {
        ups_fail(u, "%s longer than the %" PRIu64 " bytes the client sent",
                 u->tunnel ? "tunnel" : "request body", u->sp.b);
        return false;
    }
    u->req_got += n;
    g.bytes_up += n;
    return true;
}

static void ups_on_head(struct ups *u, struct head *h, int64_t now)
{
    if (!parse_target(h->target, &u->sp)) {
        ups_fail(u, "request for an unknown target \"%s\"", h->target);
        return;
    }
    u->have = true;
    u->nreq++;
    TRACE(u->sp.id, "upstream fd %d: request head (request %d on this connection)", u->fd, u->nreq);
    struct uspec *s = &u->sp;
    u->strict = s->z;
    u->tunnel = s->m == M_UPGRADE;
    u->is_head = s->m == M_HEAD;
    /* Keep the connection exactly when ferry may pool it, so that a connection this upstream
     * closes is never handed to an innocent exchange. */
    u->keepalive = !u->tunnel && s->k != UK_CLOSE && !s->c && s->f != UF_EARLY_CLOSE;
    u->req_got = 0;
    u->req_done = false;
    u->rng = mix64(s->id ^ 0xabcdef);
    if (strcmp(h->method, method_text[s->m]) != 0 || h->minor != 1)
        UPS_FAIL(u, "request line \"%s %s\" does not match the script", h->method, h->target);
    if (!h->has_id || h->id != s->id)
        UPS_FAIL(u, "request head carries X-Ex-Id %" PRIu64 " for target %s", h->id, h->target);
    if (!fill_ok(s->id, 'q', (size_t)s->q, h->has_qfill, h->qfill, h->qfill_len))
        UPS_FAIL(u, "X-Req-Fill value is not this exchange's (%zu bytes)", h->qfill_len);
    int mode = BR_NONE;
    if (s->m == M_POST_CL) {
        if (h->chunked || h->clen != (int64_t)s->b)
            UPS_FAIL(u, "request framing: Content-Length %" PRId64 ", want %" PRIu64, h->clen,
                     s->b);
        mode = s->b ? BR_LEN : BR_NONE;
    } else if (s->m == M_POST_CHUNKED) {
        if (!h->chunked || h->clen >= 0)
            UPS_FAIL(u, "request framing: want chunked");
        mode = BR_CHUNK;
    } else if (h->chunked || h->clen > 0) {
        UPS_FAIL(u, "request without a body arrived with one");
    }
    if (h->te_other)
        UPS_FAIL(u, "unexpected Transfer-Encoding");
    if (u->tunnel && (!h->has_upgrade || !h->conn_upgrade))
        UPS_FAIL(u, "upgrade request without Connection: upgrade / Upgrade");
    if (u->tunnel) {
        u->rst = R_TUNNEL;
        ups_start_response(u, now);
        return;
    }
    body_init(&u->br, mode, s->b);
    u->rst = R_BODY;
    if (s->e)
        ups_start_response(u, now);
    if (u->br.done)
        ups_request_done(u, now);
}

/* Parses what arrived. Returns false when the connection is gone. */
static bool ups_input(struct ups *u, int64_t now)
{
    size_t off = 0;
    while (off < u->ib_len && !u->dead) {
        if (u->rst == R_HEAD) {
            char *e = memmem(u->ib + off, u->ib_len - off, "\r\n\r\n", 4);
            if (!e) {
                if (off == 0 && u->ib_len == sizeof(u->ib))
                    ups_fail(u, "request head larger than %zu bytes", sizeof(u->ib));
                break;
            }
            size_t hl = (size_t)(e + 4 - (u->ib + off));
            struct head h;
            const char *why;
            if (parse_head(u->ib + off, hl, true, &h, &why) < 0) {
                char d[600];
                struct sbuf s = {d, 0, sizeof(d)};
                sb_escaped(&s, u->ib + off, hl < 200 ? hl : 200);
                ups_fail(u, "malformed request head from ferry (%s): \"%s\"", why, d);
                break;
            }
            off += hl;
            ups_on_head(u, &h, now);
        } else if (u->rst == R_BODY) {
            const char *why;
            ssize_t k = body_feed(&u->br, u->ib + off, u->ib_len - off, ups_sink, u, &why);
            if (k < 0) {
                if (why)
                    ups_fail(u, "request body framing from ferry: %s", why);
                break;
            }
            off += (size_t)k;
            if (u->br.done)
                ups_request_done(u, now);
        } else if (u->rst == R_TUNNEL) {
            if (!ups_sink(u, u->ib + off, u->ib_len - off))
                break;
            off = u->ib_len;
        } else {
            char d[300];
            struct sbuf s = {d, 0, sizeof(d)};
            sb_escaped(&s, u->ib + off, u->ib_len - off < 80 ? u->ib_len - off : 80);
            ups_fail(u, "%zu bytes after the request, before its response ended: \"%s\"",
                     u->ib_len - off, d);
            break;
        }
    }
    if (u->dead)
        return false;
    memmove(u->ib, u->ib + off, u->ib_len - off);
    u->ib_len -= off;
    return true;
}

static void ups_eof(struct ups *u, int err)
{
    u->rd_eof = true;
    if (!u->have && u->rst == R_HEAD && u->ib_len == 0) {
        ups_close(u, false); /* an idle connection closed by ferry's pool */
        return;
    }
    if (u->tunnel) {
        if (u->wst == W_DONE) {
            if (u->strict && u->req_got != u->sp.b)
                ups_fail(u, "tunnel carried %" PRIu64 " of %" PRIu64 " client bytes", u->req_got,
                         u->sp.b);
            ups_close(u, false);
        }
        return; /* the client half-closed; finish our direction */
    }
    if (u->strict && (!u->req_done || u->wst != W_DONE)) {
        ups_fail(u,
                 "ferry %s the upstream connection mid-exchange (request %s: %" PRIu64
                 " of %" PRIu64 " body bytes; response %s; request %d on this connection)",
                 err ? "reset" : "closed", u->req_done ? "done" : "in progress", u->req_got,
                 u->sp.b, u->wst == W_DONE ? "done" : "in progress", u->nreq);
        return;
    }
    ups_close(u, false);
}

static void ups_fault(struct ups *u, int64_t now)
{
    u->fault_pending = false;
    switch (u->sp.f) {
    case UF_DELAY:
    case UF_STALL_BODY:
        u->wst = W_WAIT;
        u->wake_at = now + u->sp.d;
        break;
    case UF_ABORT_BODY:
    case UF_SHORT_CL:
        ups_close(u, false);
        break;
    case UF_RST_BODY:
        ups_close(u, true);
        break;
    case UF_BAD_CHUNK:
        memcpy(u->ob, "zz\r\n", 4);
        u->ob_len = 4;
        u->end_queued = true;
        u->body_len = u->body_off; /* nothing more after the bad line */
        break;
    case UF_HALFCLOSE:
        shutdown(u->fd, SHUT_WR);
        u->shut = true;
        u->wst = W_DONE;
        if (u->tunnel && u->rd_eof)
            ups_close(u, false);
        break;
    default:
        break;
    }
}

/* Everything of the response has been staged (and, once the output buffer is empty, sent). */
static bool ups_all_staged(const struct ups *u)
{
    bool chunked_body = !u->tunnel && !u->is_head && u->sp.k == UK_CHUNKED;
    return u->wst == W_SEND && u->head_off >= u->head_len && !u->fault_pending &&
           u->body_off >= u->body_len && (u->end_queued || !chunked_body);
}

static void ups_after_response(struct ups *u, int64_t now)
{
    ups_response_done(u);
    if (!u->dead && u->wst == W_DONE && u->req_done && u->keepalive)
        ups_next_request(u, now, true);
}

/* Stages the next bytes of the response; called with an empty output buffer. */
static void ups_fill(struct ups *u, int64_t now)
{
    if (u->head_off < u->head_len) {
        if (u->head_off >= u->head_limit) {
            ups_close(u, false); /* ABORT_HEAD */
            return;
        }
        size_t k = u->head_limit - u->head_off;
        if (k > sizeof(u->ob))
            k = sizeof(u->ob);
        memcpy(u->ob, u->head + u->head_off, k);
        u->head_off += k;
        u->ob_len = k;
        if (u->sp.f == UF_BAD_HEAD || u->sp.f == UF_HUGE_HEAD) {
            /* Nothing follows a head ferry must refuse; wait for ferry to close. */
            if (u->head_off == u->head_len) {
                u->body_len = 0;
                u->end_queued = true;
                u->fault_pending = false;
            }
        }
        return;
    }
    if (u->fault_pending && u->body_off == u->sp.a) {
        ups_fault(u, now);
        return;
    }
    uint64_t stop = u->fault_pending && u->sp.a > u->body_off ? u->sp.a : u->body_len;
    if (u->body_off < stop) {
        char marker = u->tunnel ? '%' : '#';
        if (!u->tunnel && u->sp.k == UK_CHUNKED) {
            size_t o = 0;
            if (u->chunk_left == 0) {
                uint64_t sz = rng_range(&u->rng, 1, 20000);
                if (sz > stop - u->body_off)
                    sz = stop - u->body_off;
                o = (size_t)snprintf(u->ob, sizeof(u->ob), "%" PRIx64 "\r\n", sz);
                u->chunk_left = sz;
            }
            size_t k = sizeof(u->ob) - o - 2;
            if (k > u->chunk_left)
                k = (size_t)u->chunk_left;
            pattern(marker, u->sp.id, u->body_off, u->ob + o, k);
            o += k;
            u->body_off += k;
            u->chunk_left -= k;
            if (u->chunk_left == 0) {
                memcpy(u->ob + o, "\r\n", 2);
                o += 2;
            }
            u->ob_len = o;
        } else {
            uint64_t k = stop - u->body_off;
            if (k > sizeof(u->ob))
                k = sizeof(u->ob);
            pattern(marker, u->sp.id, u->body_off, u->ob, (size_t)k);
            u->body_off += k;
            u->ob_len = (size_t)k;
        }
        return;
    }
    if (!u->end_queued) {
        u->end_queued = true;
        if (!u->tunnel && !u->is_head && u->sp.k == UK_CHUNKED) {
            memcpy(u->ob, "0\r\n\r\n", 5);
            u->ob_len = 5;
            return;
        }
    }
    ups_after_response(u, now);
}

static void ups_step(struct ups *u, int64_t now)
{
    bool capped = true; /* left the loop with work possibly left: come back at once */
    for (int rounds = 0; rounds < 64 && !u->dead; rounds++) {
        bool progress = false;
        if (u->wst == W_WAIT && now >= u->wake_at) {
            u->wst = W_SEND;
            progress = true;
        }
        if (u->wst == W_SEND) {
            if (u->ob_off == u->ob_len) {
                u->ob_off = u->ob_len = 0;
                ups_fill(u, now); /* always moves: stages bytes or changes state */
                if (u->dead)
                    return;
                progress = true;
            }
            if (u->ob_off < u->ob_len) {
                ssize_t w = send(u->fd, u->ob + u->ob_off, u->ob_len - u->ob_off, MSG_NOSIGNAL);
                TRACE(u->sp.id, "upstream fd %d send %zu -> %zd%s", u->fd, u->ob_len - u->ob_off, w,
                      w < 0 ? strerror(errno) : "");
                if (w > 0) {
                    u->ob_off += (size_t)w;
                    progress = true;
                    /* Done as soon as the last byte is out: ferry, in another thread, may read
                     * it and close the connection before this loop comes round again. */
                    if (u->ob_off == u->ob_len && ups_all_staged(u)) {
                        ups_after_response(u, now);
                        if (u->dead)
                            return;
                    }
                } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                    if (u->strict && !u->tunnel)
                        UPS_FAIL(u, "ferry reset the upstream connection mid-response: %s",
                                 strerror(errno));
                    ups_close(u, false);
                    return;
                }
            }
        }
        if (!u->rd_eof && u->ib_len < sizeof(u->ib)) {
            ssize_t r = recv(u->fd, u->ib + u->ib_len, sizeof(u->ib) - u->ib_len, 0);
            if (u->have && (r >= 0 || errno != EAGAIN))
                TRACE(u->sp.id, "upstream fd %d recv -> %zd %s (req %" PRIu64 "/%" PRIu64 ")",
                      u->fd, r, r < 0 ? strerror(errno) : "", u->req_got, u->sp.b);
            if (r > 0) {
                u->ib_len += (size_t)r;
                if (!ups_input(u, now))
                    return;
                progress = true;
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                ups_eof(u, r == 0 ? 0 : errno);
                if (u->dead)
                    return;
                progress = true;
            }
        }
        if (!progress) {
            capped = false;
            break;
        }
    }
    if (u->dead)
        return;
    u->events = 0;
    if (!u->rd_eof)
        u->events |= POLLIN;
    if (u->wst == W_SEND)
        u->events |= POLLOUT;
    u->wake = u->wst == W_WAIT ? u->wake_at : 0;
    if (capped || (u->wst == W_SEND && u->ob_off == u->ob_len))
        u->wake = now;
}

static void ups_accept(int lfd, int64_t now)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct ups *u = calloc(1, sizeof(*u));
        if (!u) {
            fprintf(stderr, "stress_exchange: out of memory\n");
            exit(2);
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        u->fd = fd;
        u->rst = R_HEAD;
        u->wst = W_IDLE;
        if (nups == ups_cap) {
            ups_cap = ups_cap ? ups_cap * 2 : 64;
            ups = realloc(ups, (size_t)ups_cap * sizeof(*ups));
            if (!ups) {
                fprintf(stderr, "stress_exchange: out of memory\n");
                exit(2);
            }
        }
        ups[nups++] = u;
        g.nups++;
        ups_step(u, now);
    }
}

static void ups_reap(void)
{
    int j = 0;
    for (int i = 0; i < nups; i++) {
        if (ups[i]->dead) {
            free(ups[i]->head);
            free(ups[i]);
        } else {
            ups[j++] = ups[i];
        }
    }
    nups = j;
}

/* ---- scripted clients ---- */

enum { I_HEAD, I_BODY, I_END, I_AFTER };

struct client {
    int fd;
    bool connecting, dead;
    int left; /* further exchanges this connection may carry */
    struct spec sp;
    bool active;
    int64_t start, deadline;
    /* request side */
    char *head;
    size_t head_len, head_sent;
    int step;
    int64_t step_until;
    uint64_t body_sent, chunk_left, tsent;
    char ob[16384];
    size_t ob_len, ob_off;
    bool out_dead, shut, we_closed;
    uint64_t rng;
    /* response side */
    char ib[65536];
    size_t ib_len;
    int ist;
    struct bodyrd br;
    int status;
    bool is_tunnel, is_error, conn_close, in_ended, paused, failed;
    uint64_t wire, got, explen;
    char errbody[320];
    size_t errlen;
    short events;
    int64_t wake;
};

static struct client *clients[MAX_CLIENTS];

static void ex_fail(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ex_fail(struct client *c, const char *fmt, ...)
{
    char msg[2048], d[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    describe_spec(&c->sp, d, sizeof(d));
    failf("client, %s: %s", d, msg);
    c->failed = true;
}

static void client_build_head(struct client *c)
{
    struct spec *sp = &c->sp;
    size_t cap = 8192;
    struct sbuf b = {malloc(cap), 0, cap};
    if (!b.p) {
        fprintf(stderr, "stress_exchange: out of memory\n");
        exit(2);
    }
    sb_add(&b,
           "%s /x/%" PRIu64 "?m=%d&k=%d&n=%" PRIu64 "&b=%" PRIu64 "&f=%d&a=%" PRIu64
           "&d=%d&e=%d&i=%d&c=%d&h=%d&q=%d&z=%d HTTP/1.%d\r\n",
           method_text[sp->method], sp->id, sp->method, sp->ukind, sp->n, sp->b, sp->ufault, sp->ua,
           sp->ud, sp->early, sp->interim, sp->uclose, sp->fill, sp->qfill, sp->strict,
           sp->http10 ? 0 : 1);
    sb_add(&b, "Host: stress.test\r\nUser-Agent: stress_exchange\r\nX-Ex-Id: %" PRIu64 "\r\n",
           sp->id);
    if (sp->qfill) {
        char fv[2048];
        fill_value(sp->id, 'q', (size_t)sp->qfill, fv);
        sb_add(&b, "X-Req-Fill: %.*s\r\n", sp->qfill, fv);
    }
    if (sp->method == M_POST_CL)
        sb_add(&b, "Content-Length: %" PRIu64 "\r\n", sp->b);
    else if (sp->method == M_POST_CHUNKED)
        sb_add(&b, "Transfer-Encoding: chunked\r\n");
    if (sp->expect)
        sb_add(&b, "Expect: 100-continue\r\n");
    if (sp->method == M_UPGRADE)
        sb_add(&b, "Connection: upgrade\r\nUpgrade: websocket\r\n");
    sb_add(&b, "\r\n");
    free(c->head);
    c->head = b.p;
    c->head_len = b.len;
}

static void client_start_exchange(struct client *c, int64_t now)
{
    uint64_t prev = c->sp.id;
    ++g.next_id;
    gen_spec(&c->sp, opt.nonly ? opt.only_ids[(g.next_id - 1) % (uint64_t)opt.nonly] : g.next_id);
    if (opt.trace_id && c->sp.id == opt.trace_id) {
        char d[700];
        describe_spec(&c->sp, d, sizeof(d));
        TRACE(c->sp.id, "client fd %d: %s starts, after exchange %" PRIu64 " on this connection",
              c->fd, d, prev);
    }
    g.started++;
    g.cf[c->sp.cfault]++;
    g.uf[c->sp.ufault]++;
    g.method[c->sp.method]++;
    client_build_head(c);
    c->active = true;
    c->start = now;
    c->deadline = now + EXCHANGE_DEADLINE_MS;
    c->head_sent = 0;
    c->step = 0;
    c->step_until = 0;
    c->body_sent = c->chunk_left = c->tsent = 0;
    c->ob_len = c->ob_off = 0;
    c->rng = mix64(c->sp.id ^ 0x5151);
    c->ist = I_HEAD;
    c->status = 0;
    c->is_tunnel = c->is_error = c->conn_close = c->paused = c->failed = false;
    c->wire = c->got = 0;
    c->explen = expected_len(&c->sp);
    c->errlen = 0;
}

static bool client_open(struct client *c, int64_t now)
{
    memset(c, 0, sizeof(*c));
    c->left = (int)rng_range(&g.rng, 0, 3); /* keep-alive reuse is timing-dependent anyway */
    if (opt.nonly)
        c->left = opt.nonly - 1;
    client_start_exchange(c, now);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        failf("socket: %s", strerror(errno));
        return false;
    }
    /* Without it, Nagle holds a small body piece until ferry's delayed ACK, which reads as a
     * stall of ferry, and a reset that follows discards the held bytes. */
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (c->sp.rcvbuf) {
        /* A small receive window makes a paused reader fill ferry's socket quickly. */
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &c->sp.rcvbuf, sizeof(c->sp.rcvbuf));
    }
    if (connect(c->fd, (struct sockaddr *)&g.ferry_addr, sizeof(g.ferry_addr)) < 0) {
        if (errno != EINPROGRESS) {
            failf("connect to ferry: %s", strerror(errno));
            close(c->fd);
            return false;
        }
        c->connecting = true;
    }
    g.nconns++;
    return true;
}

static bool client_sink(void *arg, const char *p, size_t n)
{
    struct client *c = arg;
    if (c->is_error) {
        if (c->errlen + n > sizeof(c->errbody)) {
            ex_fail(c, "error response body longer than %zu bytes", sizeof(c->errbody));
            return false;
        }
        memcpy(c->errbody + c->errlen, p, n);
        c->errlen += n;
        return true;
    }
    char marker = c->is_tunnel ? '%' : '#';
    size_t bad = pattern_check(marker, c->sp.id, c->got, p, n);
    if (bad < n) {
        char d[1024];
        describe_mismatch(marker, c->sp.id, c->got, p, n, bad, d, sizeof(d));
        ex_fail(c, "foreign byte in the %s %s", c->is_tunnel ? "tunnel" : "response body", d);
        return false;
    }
    if (c->got + n > c->explen) {
        ex_fail(c, "%" PRIu64 " body bytes, the upstream sent only %" PRIu64, c->got + n,
                c->explen);
        return false;
    }
    c->got += n;
    g.bytes_down += n;
    return true;
}

static void client_response_done(struct client *c)
{
    c->ist = c->conn_close || c->sp.http10 ? I_AFTER : I_END;
    if (c->is_error) {
        char pre[8];
        snprintf(pre, sizeof(pre), "%d ", c->status);
        if (c->br.mode != BR_NONE &&
            (c->errlen < 5 || memcmp(c->errbody, pre, 4) != 0 || c->errbody[c->errlen - 1] != '\n'))
            ex_fail(c, "error response %d has a body that is not ferry's: \"%.*s\"", c->status,
                    (int)(c->errlen < 80 ? c->errlen : 80), c->errbody);
        return;
    }
    if (!c->is_tunnel && c->got != c->explen)
        ex_fail(c, "complete-looking response with %" PRIu64 " of %" PRIu64 " body bytes", c->got,
                c->explen);
}

static bool client_on_head(struct client *c, const struct head *h)
{
    struct spec *sp = &c->sp;
    c->status = h->status;
    if (h->minor != 1) {
        ex_fail(c, "response is not HTTP/1.1");
        return false;
    }
    if (h->status >= 100 && h->status < 200 && h->status != 101) {
        if (sp->http10) {
            ex_fail(c, "interim %d sent to an HTTP/1.0 client", h->status);
            return false;
        }
        if (h->status == 103 && (!sp->interim || !h->has_id || h->id != sp->id)) {
            ex_fail(c, "103 that is not this exchange's (X-Ex-Id %" PRIu64 ")", h->id);
            return false;
        }
        if (h->status == 100 && (!sp->expect || h->has_id)) {
            ex_fail(c, "unexpected 100 Continue");
            return false;
        }
        if (h->status != 100 && h->status != 103) {
            ex_fail(c, "unexpected interim status %d", h->status);
            return false;
        }
        return true;
    }
    int mode;
    if (h->status == 101 || h->status == 200) {
        if (!h->has_id || h->id != sp->id) {
            ex_fail(c, "%d response head carries X-Ex-Id %s%" PRIu64 ": not this exchange's",
                    h->status, h->has_id ? "" : "(none) ", h->id);
            return false;
        }
        if (!fill_ok(sp->id, 'f', (size_t)sp->fill, h->has_fill, h->fill, h->fill_len)) {
            ex_fail(c, "X-Fill value is not this exchange's (%zu bytes)", h->fill_len);
            return false;
        }
        if (!h->via_ferry) {
            ex_fail(c, "response without Via: ferry");
            return false;
        }
        if ((h->status == 101) != (sp->method == M_UPGRADE)) {
            ex_fail(c, "status %d for a %s request", h->status, method_name[sp->method]);
            return false;
        }
        if (h->status == 101) {
            c->is_tunnel = true;
            mode = BR_EOF;
        } else if (sp->method == M_HEAD) {
            mode = BR_NONE;
        } else if (h->chunked) {
            mode = BR_CHUNK;
        } else if (h->clen >= 0) {
            mode = BR_LEN;
        } else {
            mode = BR_EOF;
        }
    } else if (h->status == 400 || h->status == 408 || h->status == 413 || h->status == 500 ||
               h->status == 502 || h->status == 504) {
        if (h->has_id || !h->plain_text || h->clen < 0 || h->chunked) {
            ex_fail(c, "%d response that is not one of ferry's own", h->status);
            return false;
        }
        c->is_error = true;
        /* An error to a HEAD request has no body, unless ferry answered before it had the
         * request line (a head that timed out), when it cannot know the method. */
        mode = sp->method == M_HEAD && c->head_sent == c->head_len ? BR_NONE : BR_LEN;
    } else {
        ex_fail(c, "unexpected status %d", h->status);
        return false;
    }
    if (h->te_other) {
        ex_fail(c, "unexpected Transfer-Encoding");
        return false;
    }
    if (sp->http10 && h->chunked) {
        ex_fail(c, "chunked response to an HTTP/1.0 client");
        return false;
    }
    c->conn_close = h->conn_close;
    body_init(&c->br, mode, h->clen > 0 ? (uint64_t)h->clen : 0);
    c->ist = I_BODY;
    if (c->br.done)
        client_response_done(c);
    return !c->failed;
}

static void client_input(struct client *c)
{
    size_t off = 0;
    while (off < c->ib_len && !c->failed) {
        if (c->ist == I_HEAD) {
            char *e = memmem(c->ib + off, c->ib_len - off, "\r\n\r\n", 4);
            if (!e) {
                if (off == 0 && c->ib_len == sizeof(c->ib))
                    ex_fail(c, "response head larger than %zu bytes", sizeof(c->ib));
                break;
            }
            size_t hl = (size_t)(e + 4 - (c->ib + off));
            struct head h;
            const char *why;
            if (parse_head(c->ib + off, hl, false, &h, &why) < 0) {
                char d[600];
                struct sbuf s = {d, 0, sizeof(d)};
                sb_escaped(&s, c->ib + off, hl < 200 ? hl : 200);
                ex_fail(c, "malformed response head (%s): \"%s\"", why, d);
                break;
            }
            off += hl;
            client_on_head(c, &h);
        } else if (c->ist == I_BODY) {
            const char *why;
            ssize_t k = body_feed(&c->br, c->ib + off, c->ib_len - off, client_sink, c, &why);
            if (k < 0) {
                if (why)
                    ex_fail(c, "response framing: %s", why);
                break;
            }
            off += (size_t)k;
            if (c->br.done)
                client_response_done(c);
        } else {
            char d[600];
            describe_mismatch('#', c->sp.id, 0, c->ib + off, c->ib_len - off, 0, d, sizeof(d));
            ex_fail(c, "%zu bytes after a complete response: %s", c->ib_len - off, d);
            break;
        }
    }
    memmove(c->ib, c->ib + off, c->ib_len - off);
    c->ib_len -= off;
}

static void client_close_fd(struct client *c, bool rst)
{
    if (c->fd < 0)
        return;
    if (rst) {
        struct linger lg = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(c->fd);
    c->fd = -1;
}

/* Stages request bytes for the current step, or completes non-output steps. Called with an
 * empty output buffer. Returns true on progress. */
static bool client_run_step(struct client *c, int64_t now)
{
    struct spec *sp = &c->sp;
    if (c->step >= sp->nsteps)
        return false;
    struct step *st = &sp->steps[c->step];
    switch (st->op) {
    case OP_HEAD_TO: {
        size_t to = st->a > c->head_len ? c->head_len : (size_t)st->a;
        if (c->out_dead || c->head_sent >= to) {
            c->step++;
            return true;
        }
        size_t k = to - c->head_sent < sizeof(c->ob) ? to - c->head_sent : sizeof(c->ob);
        memcpy(c->ob, c->head + c->head_sent, k);
        c->head_sent += k;
        c->ob_len = k;
        return true;
    }
    case OP_BODY_TO: {
        if (c->out_dead || c->body_sent >= st->a) {
            c->step++;
            return true;
        }
        size_t o = 0;
        if (sp->method == M_POST_CHUNKED) {
            if (c->chunk_left == 0) {
                uint64_t sz = rng_range(&c->rng, 1, 12000);
                if (sz > st->a - c->body_sent)
                    sz = st->a - c->body_sent;
                o = (size_t)snprintf(c->ob, sizeof(c->ob), "%" PRIx64 "\r\n", sz);
                c->chunk_left = sz;
            }
            size_t k = sizeof(c->ob) - o - 2;
            if (k > c->chunk_left)
                k = (size_t)c->chunk_left;
            pattern('$', sp->id, c->body_sent, c->ob + o, k);
            o += k;
            c->body_sent += k;
            c->chunk_left -= k;
            if (!c->chunk_left) {
                memcpy(c->ob + o, "\r\n", 2);
                o += 2;
            }
        } else {
            uint64_t k = st->a - c->body_sent;
            if (k > sizeof(c->ob))
                k = sizeof(c->ob);
            pattern('$', sp->id, c->body_sent, c->ob, (size_t)k);
            c->body_sent += k;
            o = (size_t)k;
        }
        c->ob_len = o;
        return true;
    }
    case OP_TSEND_TO: {
        if (c->out_dead || !c->is_tunnel || c->tsent >= st->a) {
            c->step++;
            return true;
        }
        uint64_t k = st->a - c->tsent;
        if (k > sizeof(c->ob))
            k = sizeof(c->ob);
        pattern('&', sp->id, c->tsent, c->ob, (size_t)k);
        c->tsent += k;
        c->ob_len = (size_t)k;
        return true;
    }
    case OP_END:
        if (!c->out_dead && sp->method == M_POST_CHUNKED) {
            memcpy(c->ob, "0\r\n\r\n", 5);
            c->ob_len = 5;
        }
        c->step++;
        return true;
    case OP_BADCHUNK:
        if (!c->out_dead) {
            static const char *const bad[] = {"zz\r\n", "fffffffffffffffffffffff\r\n"};
            const char *s = bad[st->a % 2];
            c->ob_len = strlen(s);
            memcpy(c->ob, s, c->ob_len);
        }
        c->step++;
        return true;
    case OP_SLEEP:
        if (!c->step_until) {
            c->step_until = now + (int64_t)st->a;
            return true;
        }
        if (now < c->step_until)
            return false;
        c->step_until = 0;
        c->step++;
        return true;
    case OP_WAIT_RESP:
        if (!c->step_until)
            c->step_until = now + 5000; /* never wait forever for bytes that may not come */
        if (c->wire >= st->a || c->in_ended || c->ist >= I_END || now >= c->step_until) {
            c->step_until = 0;
            c->step++;
            return true;
        }
        return false;
    case OP_WAIT_TUNNEL:
        if (c->is_tunnel) {
            c->step++;
            return true;
        }
        if (c->in_ended || c->ist >= I_END) {
            c->step = sp->nsteps; /* no tunnel: nothing left to send */
            return true;
        }
        return false;
    case OP_PAUSE:
        c->paused = true;
        c->step++;
        return true;
    case OP_RESUME:
        c->paused = false;
        c->step++;
        return true;
    case OP_SHUT:
        if (!c->out_dead && !c->shut)
            shutdown(c->fd, SHUT_WR);
        c->shut = true;
        c->step++;
        return true;
    case OP_CLOSE:
    case OP_RST:
        client_close_fd(c, st->op == OP_RST);
        c->we_closed = true;
        c->step = sp->nsteps;
        return true;
    }
    return false;
}

static int client_outcome(const struct client *c)
{
    if (c->failed)
        return OUT_FAILED;
    if (c->ist == I_END || c->ist == I_AFTER)
        return c->is_error ? OUT_ERROR : OUT_COMPLETE;
    if (c->ist == I_BODY && c->br.mode == BR_EOF && c->in_ended)
        return c->got == c->explen ? OUT_COMPLETE : OUT_TRUNCATED;
    return c->we_closed ? OUT_ABANDONED : OUT_TRUNCATED;
}

/* Checks the outcome against what the script allows. */
static void client_judge(struct client *c, int out)
{
    struct spec *sp = &c->sp;
    if (out == OUT_FAILED)
        return;
    const char *problem = NULL;
    char tmp[200];
    int want_status = sp->method == M_UPGRADE ? 101 : 200;
    if (sp->strict) {
        if (out != OUT_COMPLETE || c->status != want_status)
            problem = "an exchange without an injected fault did not complete";
        else if (c->got != c->explen)
            problem = "an exchange without an injected fault has the wrong length";
    } else if (sp->cfault <= CF_LAST_BENIGN && ufault_pre_head(sp->ufault)) {
        int st = sp->ufault == UF_STALL_HEAD ? 504 : 502;
        if (out != OUT_ERROR || c->status != st) {
            snprintf(tmp, sizeof(tmp), "the upstream failed before its head: want %d from ferry",
                     st);
            problem = tmp;
        }
    } else if (sp->cfault <= CF_LAST_BENIGN && ufault_post_head(sp->ufault) &&
               sp->method != M_UPGRADE) {
        bool ok = out == OUT_TRUNCATED || (out == OUT_ERROR && c->status == 502) ||
                  (out == OUT_COMPLETE && c->explen == sp->ua && c->got == sp->ua);
        if (!ok)
            problem = "the upstream failed mid-body: the response must be cut (or a 502)";
    }
    if (out == OUT_ERROR && c->status == 400 && sp->cfault <= CF_LAST_BENIGN)
        problem = "400 for a well-formed request";
    if (problem) {
        ex_fail(c,
                "%s; got %s (status %d, %" PRIu64 " of %" PRIu64 " body bytes, %" PRIu64
                " bytes received)",
                problem, outcome_name[out], c->status, c->got, c->explen, c->wire);
        out = OUT_FAILED;
    }
    g.outcome[out]++;
    if (sp->strict && out == OUT_COMPLETE)
        g.strict_ok++;
}

/* Ends the current exchange; keeps the connection for the next one when it is clean. */
static void client_end_exchange(struct client *c, int64_t now)
{
    int out = client_outcome(c);
    TRACE(c->sp.id, "client fd %d: exchange over: %s", c->fd, outcome_name[out]);
    client_judge(c, out);
    out = c->failed ? OUT_FAILED : out;
    g.finished++;
    c->active = false;
    /* After an early response ferry may still be forwarding the request body when the client
     * is done with it; a fault of the next exchange (a reset) would then cut an innocent one. */
    bool reuse = out == OUT_COMPLETE && c->ist == I_END && c->sp.strict && !c->sp.http10 &&
                 !c->sp.early && !c->shut && !c->in_ended && !c->we_closed && c->fd >= 0 &&
                 c->left > 0 && !g.stop_new && c->sp.method != M_UPGRADE && c->ib_len == 0;
    if (reuse) {
        c->left--;
        client_start_exchange(c, now);
        return;
    }
    client_close_fd(c, false);
    c->dead = true;
}

static void client_eof(struct client *c)
{
    c->in_ended = true;
    c->paused = false;
    if (c->ist == I_AFTER)
        return;
    if (!c->is_tunnel)
        c->step = c->sp.nsteps; /* the response is over: the rest of the script is moot */
}

static void client_step(struct client *c, int64_t now)
{
    bool capped = true; /* left the loop with work possibly left: come back at once */
    for (int rounds = 0; rounds < 256 && c->active; rounds++) {
        bool progress = false;
        if (c->connecting) {
            int err = 0;
            socklen_t len = sizeof(err);
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            struct pollfd p = {c->fd, POLLOUT, 0};
            if (err) {
                failf("connect to ferry: %s", strerror(err));
                c->failed = true;
                c->in_ended = true;
            } else if (poll(&p, 1, 0) <= 0) {
                break;
            }
            c->connecting = false;
            progress = true;
        }
        if (c->fd >= 0 && c->ob_off < c->ob_len && !c->out_dead) {
            ssize_t w = send(c->fd, c->ob + c->ob_off, c->ob_len - c->ob_off, MSG_NOSIGNAL);
            TRACE(c->sp.id, "client fd %d step %d send %zu -> %zd %s", c->fd, c->step,
                  c->ob_len - c->ob_off, w, w < 0 ? strerror(errno) : "");
            if (w > 0) {
                c->ob_off += (size_t)w;
                progress = true;
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                c->out_dead = true;
                progress = true;
            }
        }
        if (c->ob_off == c->ob_len) {
            c->ob_off = c->ob_len = 0;
            if (c->fd >= 0 || c->we_closed)
                progress = client_run_step(c, now) || progress;
        }
        if (c->fd >= 0 && !c->paused && !c->in_ended && c->ib_len < sizeof(c->ib)) {
            ssize_t r = recv(c->fd, c->ib + c->ib_len, sizeof(c->ib) - c->ib_len, 0);
            if (r >= 0 || errno != EAGAIN)
                TRACE(c->sp.id, "client fd %d recv -> %zd %s (state %d, body %" PRIu64 ")", c->fd,
                      r, r < 0 ? strerror(errno) : "", c->ist, c->got);
            if (r > 0) {
                c->ib_len += (size_t)r;
                c->wire += (uint64_t)r;
                client_input(c);
                progress = true;
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                client_eof(c);
                progress = true;
            }
        }
        bool script_done = c->step >= c->sp.nsteps && c->ob_off == c->ob_len;
        bool over = c->failed || c->we_closed || (c->in_ended && (script_done || c->out_dead)) ||
                    (c->ist == I_END && (script_done || c->out_dead));
        if (!over && now >= c->deadline) {
            ex_fail(c,
                    "did not finish within %d ms (step %d/%d op %d, step_until %+" PRId64
                    " ms, response state %d, %" PRIu64 " bytes received, %" PRIu64
                    " body bytes, paused=%d, out %zu/%zu, events %d, ended=%d)",
                    EXCHANGE_DEADLINE_MS, c->step, c->sp.nsteps,
                    c->step < c->sp.nsteps ? c->sp.steps[c->step].op : -1,
                    c->step_until ? c->step_until - now : 0, c->ist, c->wire, c->got, c->paused,
                    c->ob_off, c->ob_len, c->events, c->in_ended);
            over = true;
        }
        if (over) {
            if (c->out_dead && c->sp.strict && !c->failed && c->ist != I_AFTER)
                ex_fail(c, "ferry closed the connection while the request was being sent");
            client_end_exchange(c, now);
            progress = true;
        }
        if (!progress) {
            capped = false;
            break;
        }
    }
    if (!c->active)
        return;
    c->events = 0;
    if (c->fd >= 0) {
        if (c->connecting || (c->ob_off < c->ob_len && !c->out_dead))
            c->events |= POLLOUT;
        if (!c->paused && !c->in_ended && c->ib_len < sizeof(c->ib))
            c->events |= POLLIN;
    }
    c->wake = c->deadline;
    if (c->step_until && c->step_until < c->wake)
        c->wake = c->step_until;
    if (capped)
        c->wake = now;
}

/* ---- ferry in this process ---- */

struct ferry {
    struct fy_config cfg;
    struct fy_conf *conf;
    struct fy_worker *workers;
    int nworkers;
};

static int ferry_start(struct ferry *f, unsigned port)
{
    fy_config_defaults(&f->cfg);
    struct fy_config *cfg = &f->cfg;
    char up[64];
    snprintf(up, sizeof(up), "127.0.0.1:%u", port);
    /* Filled in directly rather than parsed: loopback addresses need no resolver. */
    struct sockaddr_in lo = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    memcpy(&cfg->listen.ss, &lo, sizeof(lo));
    cfg->listen.len = sizeof(lo);
    lo.sin_port = htons((uint16_t)port);
    memcpy(&cfg->upstream.ss, &lo, sizeof(lo));
    cfg->upstream.len = sizeof(lo);
    cfg->listen_text = strdup("127.0.0.1:0");
    char text[80];
    snprintf(text, sizeof(text), "http://%s", up);
    cfg->upstream_text = strdup(text);
    cfg->upstream_authority = strdup(up);
    cfg->workers = opt.workers;
    cfg->access_log = FY_ALOG_OFF;
    cfg->log_level = opt.log_level;
    cfg->header_timeout = T_HEADER;
    cfg->body_timeout = T_BODY;
    cfg->upstream_timeout = T_UPSTREAM;
    cfg->send_timeout = T_SEND;
    cfg->idle_timeout = T_IDLE;
    cfg->connect_timeout = 2000;
    cfg->drain_timeout = T_DRAIN;
    cfg->pool_idle_timeout = T_IDLE;
    /* Client input buffers then have the 16 KiB size of upstream buffers and come from the same
     * free list, so a buffer released too early is soon reused by another exchange. */
    cfg->max_header_size = 8192;
    fy_log_min_level = opt.log_level;
    fy_filters_register_builtin();
    char berr[600];
    f->conf = fy_conf_build(cfg, NULL, berr, sizeof(berr));
    if (!f->conf)
        return -1;
    struct fy_addr *laddr = &f->conf->listeners[0].addrs[0];
    f->workers = calloc((size_t)opt.workers, sizeof(*f->workers));
    if (!f->workers)
        return -1;
    for (int i = 0; i < opt.workers; i++) {
        int fd = fy_listener_open(laddr);
        if (fd < 0) {
            fprintf(stderr, "stress_exchange: listen: %s\n", strerror(-fd));
            return -1;
        }
        if (i % 2 == 0) {
            /* Accepted sockets inherit these. On loopback a client socket's send buffer
             * otherwise grows to megabytes and swallows a whole response, so a paused reader
             * would never leave spans in ferry's output queue; worker 1 keeps the default. */
            int sz = SMALL_SOCKBUF;
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
        }
        int rc = fy_worker_init(&f->workers[i], f->conf, i, &fd, 1, -1);
        if (rc < 0) {
            fprintf(stderr, "stress_exchange: worker init: %s\n", strerror(-rc));
            return -1;
        }
        f->nworkers++;
    }
    for (int i = 0; i < f->nworkers; i++) {
        int rc = pthread_create(&f->workers[i].thread, NULL, fy_worker_main, &f->workers[i]);
        if (rc != 0) {
            fprintf(stderr, "stress_exchange: pthread_create: %s\n", strerror(rc));
            exit(2);
        }
    }
    memcpy(&g.ferry_addr, &laddr->ss, sizeof(g.ferry_addr));
    return 0;
}

#if defined(__SANITIZE_THREAD__)
#define STRESS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define STRESS_TSAN 1
#endif
#endif

/* Clients and sessions still alive in the workers, read while they run. The counters are plain
 * fields written by the worker threads; a relaxed atomic read is enough to wait for them to
 * settle, but TSan rightly calls it a race, so a TSan build just waits. */
static long ferry_busy(const struct ferry *f)
{
#ifdef STRESS_TSAN
    (void)f;
    return -1;
#else
    long n = 0;
    for (int i = 0; i < f->nworkers; i++)
        n += (long)__atomic_load_n(&f->workers[i].nclients, __ATOMIC_RELAXED) +
             (long)__atomic_load_n(&f->workers[i].nsessions, __ATOMIC_RELAXED);
    return n;
#endif
}

/* ---- the driver ---- */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static struct pollfd *pfds;
static int *pidx;
static int pcap;

static void poll_add(int *n, int fd, short events, int idx)
{
    if (*n == pcap) {
        pcap = pcap ? pcap * 2 : 256;
        pfds = realloc(pfds, (size_t)pcap * sizeof(*pfds));
        pidx = realloc(pidx, (size_t)pcap * sizeof(*pidx));
        if (!pfds || !pidx) {
            fprintf(stderr, "stress_exchange: out of memory\n");
            exit(2);
        }
    }
    pfds[*n] = (struct pollfd){fd, events, 0};
    pidx[*n] = idx;
    (*n)++;
}

/* One poll() round over the upstream listener, the clients and the upstream connections. */
static void drive_once(int lfd, int64_t now, bool with_clients)
{
    int n = 0;
    int64_t wake = now + 50;
    poll_add(&n, lfd, POLLIN, -1);
    if (with_clients) {
        for (int i = 0; i < opt.clients; i++) {
            struct client *c = clients[i];
            if (!c || !c->active)
                continue;
            if (c->events && c->fd >= 0)
                poll_add(&n, c->fd, c->events, i);
            if (c->wake < wake)
                wake = c->wake;
        }
    }
    int cl_end = n;
    for (int i = 0; i < nups; i++) {
        struct ups *u = ups[i];
        if (u->events)
            poll_add(&n, u->fd, u->events, i);
        if (u->wake && u->wake < wake)
            wake = u->wake;
    }
    int timeout = wake > now ? (int)(wake - now) : 0;
    int rc = poll(pfds, (nfds_t)n, timeout);
    if (rc < 0 && errno != EINTR) {
        fprintf(stderr, "stress_exchange: poll: %s\n", strerror(errno));
        exit(2);
    }
    now = mono_ms();
    int before = nups;
    if (pfds[0].revents)
        ups_accept(lfd, now);
    static char *stepped;
    static int stepped_cap;
    if (stepped_cap < nups + 1) {
        stepped_cap = nups + 64;
        stepped = realloc(stepped, (size_t)stepped_cap);
        if (!stepped)
            exit(2);
    }
    memset(stepped, 0, (size_t)stepped_cap);
    for (int i = before; i < nups; i++)
        stepped[i] = 1; /* stepped by ups_accept */
    for (int k = 1; k < cl_end; k++) {
        struct client *c = clients[pidx[k]];
        if (pfds[k].revents && c && c->active)
            client_step(c, now);
    }
    if (with_clients) {
        for (int i = 0; i < opt.clients; i++) {
            struct client *c = clients[i];
            if (c && c->active && now >= c->wake)
                client_step(c, now);
        }
    }
    for (int k = cl_end; k < n; k++) {
        if (pidx[k] < nups && pfds[k].revents && !ups[pidx[k]]->dead) {
            stepped[pidx[k]] = 1;
            ups_step(ups[pidx[k]], now);
        }
    }
    for (int i = 0; i < nups; i++)
        if (!stepped[i] && !ups[i]->dead && ups[i]->wake && now >= ups[i]->wake)
            ups_step(ups[i], now);
    ups_reap();
}

static int listen_upstream(unsigned *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 1024) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static const char *ups_state(const struct ups *u, char *buf, size_t cap)
{
    snprintf(buf, cap, "exchange %" PRIu64 " read-state %d write-state %d req %" PRIu64 "/%" PRIu64,
             u->have ? u->sp.id : 0, u->rst, u->wst, u->req_got, u->sp.b);
    return buf;
}

static int run(void)
{
    signal(SIGPIPE, SIG_IGN);
    g.rng = opt.seed;
    if (opt.nonly) {
        opt.iterations = opt.nonly;
        opt.clients = 1;
    }
    printf("stress_exchange: seed=%llu seconds=%g iterations=%ld clients=%d workers=%d\n", opt.seed,
           opt.seconds, opt.iterations, opt.clients, opt.workers);
    fflush(stdout);
    int fds_before = count_fds();
    unsigned port = 0;
    int lfd = listen_upstream(&port);
    if (lfd < 0) {
        fprintf(stderr, "stress_exchange: cannot listen for the upstream: %s\n", strerror(errno));
        return 2;
    }
    struct ferry f = {0};
    if (ferry_start(&f, port) < 0)
        return 2;

    int64_t t0 = mono_ms();
    int64_t t_end = opt.seconds > 0 ? t0 + (int64_t)(opt.seconds * 1000) : INT64_MAX;
    for (;;) {
        int64_t now = mono_ms();
        if ((opt.iterations && g.started >= opt.iterations) || now >= t_end)
            g.stop_new = true;
        int active = 0;
        for (int i = 0; i < opt.clients; i++) {
            struct client *c = clients[i];
            if (c && !c->active) {
                free(c->head);
                free(c);
                clients[i] = c = NULL;
            }
            if (!c && !g.stop_new) {
                c = malloc(sizeof(*c));
                if (!c)
                    exit(2);
                if (!client_open(c, now)) {
                    free(c->head);
                    free(c);
                    c = NULL;
                    continue;
                }
                clients[i] = c;
                client_step(c, now);
            }
            if (clients[i] && clients[i]->active)
                active++;
        }
        if (g.stop_new && !active)
            break;
        drive_once(lfd, now, true);
    }
    for (int i = 0; i < opt.clients; i++) {
        if (clients[i]) {
            free(clients[i]->head);
            free(clients[i]);
            clients[i] = NULL;
        }
    }

    /* Every client has closed. ferry must settle: no client connection, no session, and no
     * upstream connection in the middle of an exchange (idle pooled ones are fine). */
    int64_t settle_end = mono_ms() + 6000;
    long busy = 0;
    int mid = 0;
    for (;;) {
        int64_t now = mono_ms();
        busy = ferry_busy(&f);
        mid = 0;
        for (int i = 0; i < nups; i++)
            if (ups[i]->have || ups[i]->ib_len)
                mid++;
        if ((busy == 0 || (busy < 0 && now >= settle_end - 3000)) && mid == 0)
            break;
        if (now >= settle_end)
            break;
        drive_once(lfd, now, false);
    }
    if (busy > 0)
        failf("after every client closed, ferry still holds %ld client connection(s) and "
              "session(s)",
              busy);
    for (int i = 0; i < nups && mid; i++) {
        char b[200];
        if (ups[i]->have || ups[i]->ib_len)
            failf("after every client closed, an upstream connection is still mid-exchange (%s)",
                  ups_state(ups[i], b, sizeof(b)));
    }

    /* Drain and stop the workers. With no client left the drain must not need its timeout. */
    int64_t stop_t = mono_ms();
    for (int i = 0; i < f.nworkers; i++)
        fy_loop_request_stop(&f.workers[i].loop);
    for (int i = 0; i < f.nworkers; i++)
        pthread_join(f.workers[i].thread, NULL);
    int64_t stop_ms = mono_ms() - stop_t;
    if (stop_ms >= T_DRAIN - 200)
        failf("the workers took %" PRId64 " ms to stop: the drain waited for connections left",
              stop_ms);
    for (int i = 0; i < f.nworkers; i++) {
        if (f.workers[i].nclients || f.workers[i].nsessions)
            failf("worker %d stopped with %u client(s) and %u session(s)", i, f.workers[i].nclients,
                  f.workers[i].nsessions);
        fy_worker_destroy(&f.workers[i]);
    }
    free(f.workers);

    /* ferry closed its pooled connections on the way out: the upstream must see every one end. */
    int64_t close_end = mono_ms() + 3000;
    while (nups > 0 && mono_ms() < close_end)
        drive_once(lfd, mono_ms(), false);
    for (int i = 0; i < nups; i++) {
        char b[200];
        failf("ferry never closed an upstream connection (%s)", ups_state(ups[i], b, sizeof(b)));
        ups_close(ups[i], false);
    }
    ups_reap();
    free(ups);
    ups = NULL;
    close(lfd);
    free(pfds);
    free(pidx);
    fy_conf_unref(f.conf);
    fy_config_free(&f.cfg);
    int fds_after = count_fds();
    if (fds_before >= 0 && fds_after != fds_before)
        failf("%d file descriptor(s) open before the run, %d after", fds_before, fds_after);

    double secs = (double)(mono_ms() - t0) / 1000.0;
    printf("stress_exchange: outcomes:");
    for (int i = 0; i < OUT_COUNT; i++)
        printf(" %s=%ld", outcome_name[i], g.outcome[i]);
    printf("; strict exchanges completed exactly: %ld\n", g.strict_ok);
    printf("stress_exchange: methods:");
    for (int i = 0; i < M_COUNT; i++)
        printf(" %s=%ld", method_name[i], g.method[i]);
    printf("\nstress_exchange: client faults:");
    for (int i = 0; i < CF_COUNT; i++)
        printf(" %s=%ld", cfault_name[i], g.cf[i]);
    printf("\nstress_exchange: upstream faults:");
    for (int i = 0; i < UF_COUNT; i++)
        printf(" %s=%ld", ufault_name[i], g.uf[i]);
    printf("\nstress_exchange: %ld connections, %ld upstream connections, %.1f MB to clients, "
           "%.1f MB to the upstream, %.1f s\n",
           g.nconns, g.nups, (double)g.bytes_down / 1e6, (double)g.bytes_up / 1e6, secs);
    printf("stress_exchange: %ld exchanges, %d failed, seed=%llu\n", g.finished, g.failures,
           opt.seed);
    fflush(stdout);
    return g.failures ? 1 : 0;
}

/* ---- supervisor: runs the test in a child so any death still reports the seed ---- */

static bool line_is_bad(const char *l, size_t n, const char **what)
{
    static const struct {
        const char *needle, *what;
    } bad[] = {
        {"error ferry:", "ferry logged an error"},
        {"ERROR: AddressSanitizer", "AddressSanitizer report"},
        {"ERROR: LeakSanitizer", "LeakSanitizer report"},
        {"runtime error:", "UndefinedBehaviorSanitizer report"},
        {"WARNING: ThreadSanitizer", "ThreadSanitizer report"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (memmem(l, n, bad[i].needle, strlen(bad[i].needle))) {
            *what = bad[i].what;
            return true;
        }
    return false;
}

static int supervise(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        perror("stress_exchange: pipe");
        return 2;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("stress_exchange: fork");
        return 2;
    }
    if (pid == 0) {
        dup2(p[1], STDERR_FILENO);
        close(p[0]);
        close(p[1]);
        exit(run());
    }
    close(p[1]);
    /* A hung child is killed well after its own deadlines would have fired. */
    double budget = opt.seconds > 0 ? opt.seconds : 60;
    int64_t limit = mono_ms() + (int64_t)(budget * 1000) + 60000;
    char line[8192];
    size_t ll = 0;
    const char *bad = NULL;
    char bad_line[300] = "";
    bool hung = false;
    for (;;) {
        struct pollfd pf = {p[0], POLLIN, 0};
        int rc = poll(&pf, 1, 1000);
        if (rc == 0) {
            if (mono_ms() > limit && !hung) {
                hung = true;
                kill(pid, SIGKILL);
            }
            continue;
        }
        char buf[4096];
        ssize_t r = read(p[0], buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        ssize_t w = write(STDERR_FILENO, buf, (size_t)r);
        (void)w;
        for (ssize_t i = 0; i < r; i++) {
            if (ll < sizeof(line))
                line[ll++] = buf[i];
            if (buf[i] != '\n')
                continue;
            const char *what;
            if (!bad && line_is_bad(line, ll, &what)) {
                bad = what;
                snprintf(bad_line, sizeof(bad_line), "%.*s", (int)(ll - 1), line);
            }
            ll = 0;
        }
    }
    close(p[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    char why[600];
    if (hung)
        snprintf(why, sizeof(why), "the run hung and was killed");
    else if (WIFSIGNALED(st))
        snprintf(why, sizeof(why), "killed by signal %d (%s)%s%s", WTERMSIG(st),
                 strsignal(WTERMSIG(st)), bad ? ": " : "", bad ? bad : "");
    else if (bad)
        snprintf(why, sizeof(why), "%s: %s", bad, bad_line);
    else if (WEXITSTATUS(st) != 0)
        snprintf(why, sizeof(why), "exit status %d (see above)", WEXITSTATUS(st));
    else
        return 0;
    fprintf(stderr,
            "stress_exchange: FAILED seed=%llu: %s\nstress_exchange: replay with: "
            "stress_exchange --seed %llu",
            opt.seed, why, opt.seed);
    if (opt.seconds > 0)
        fprintf(stderr, " --seconds %g", opt.seconds);
    if (opt.iterations)
        fprintf(stderr, " --iterations %ld", opt.iterations);
    if (opt.force_cf >= 0)
        fprintf(stderr, " --cfault %s", cfault_name[opt.force_cf]);
    if (opt.force_uf >= 0)
        fprintf(stderr, " --ufault %s", ufault_name[opt.force_uf]);
    for (int k = 1; k < CF_COUNT; k++)
        if ((opt.skip_cf >> k) & 1)
            fprintf(stderr, " --skip %s", cfault_name[k]);
    for (int k = 1; k < UF_COUNT; k++)
        if ((opt.skip_uf >> k) & 1)
            fprintf(stderr, " --skip %s", ufault_name[k]);
    fprintf(stderr, " --clients %d --workers %d\n", opt.clients, opt.workers);
    return 1;
}

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: stress_exchange [--seed N] [--seconds S] [--iterations N] [--clients N]\n"
        "                       [--workers N] [--exchange ID[,ID...]] [--trace ID]\n"
        "                       [--cfault NAME] [--ufault NAME] [--skip NAME]... [--log-level L]\n"
        "                       [--no-fork]\n"
        "  --seed N        PRNG seed for the scripts (default: from the clock; printed)\n"
        "  --seconds S     start exchanges for S seconds (default 30 unless --iterations)\n"
        "  --iterations N  start N exchanges (with --seconds: whichever ends first)\n"
        "  --clients N     concurrent client connections (default 32, at most %d)\n"
        "  --workers N     ferry worker threads (default 2)\n"
        "  --exchange ID[,ID...]  run only these exchanges' scripts (same seed), alone,\n"
        "                  in order on one connection while keep-alive allows\n"
        "  --trace ID      print the client's and the upstream's events of exchange ID\n"
        "  --cfault NAME   give every script this client fault (bad_chunk, pause_long...)\n"
        "  --ufault NAME   give every script this upstream fault where it applies\n"
        "  --skip NAME     never choose this fault (repeatable; a name of either side)\n"
        "  --log-level L   ferry's log level (default error: any error line fails the run)\n"
        "  --no-fork       run in this process (for a debugger)\n",
        MAX_CLIENTS);
}

int main(int argc, char **argv)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    opt.seed = (unsigned long long)(ts.tv_sec * 1000003LL + ts.tv_nsec / 1000) ^
               ((unsigned long long)getpid() << 20);
    opt.fork = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--no-fork")) {
            opt.fork = false;
        } else if (v && !strcmp(a, "--seed")) {
            opt.seed = strtoull(v, NULL, 0);
            i++;
        } else if (v && !strcmp(a, "--seconds")) {
            opt.seconds = strtod(v, NULL);
            i++;
        } else if (v && !strcmp(a, "--iterations")) {
            opt.iterations = strtol(v, NULL, 10);
            i++;
        } else if (v && !strcmp(a, "--exchange")) {
            for (const char *p = v; *p && opt.nonly < 16; p++) {
                char *e;
                opt.only_ids[opt.nonly++] = strtoull(p, &e, 10);
                p = e;
                if (*p != ',')
                    break;
            }
            i++;
        } else if (v && (!strcmp(a, "--cfault") || !strcmp(a, "--ufault"))) {
            bool client = !strcmp(a, "--cfault");
            int n = client ? CF_COUNT : UF_COUNT;
            const char *const *names = client ? cfault_name : ufault_name;
            int *dst = client ? &opt.force_cf : &opt.force_uf;
            for (int k = 0; k < n; k++)
                if (!strcasecmp(v, names[k]))
                    *dst = k;
            if (*dst < 0) {
                fprintf(stderr, "stress_exchange: unknown fault %s\n", v);
                return 2;
            }
            i++;
        } else if (v && !strcmp(a, "--skip")) {
            bool found = false;
            for (int k = 1; k < CF_COUNT; k++)
                if (!strcasecmp(v, cfault_name[k])) {
                    opt.skip_cf |= 1u << k;
                    found = true;
                }
            for (int k = 1; k < UF_COUNT; k++)
                if (!strcasecmp(v, ufault_name[k])) {
                    opt.skip_uf |= 1u << k;
                    found = true;
                }
            if (!found) {
                fprintf(stderr, "stress_exchange: unknown fault %s\n", v);
                return 2;
            }
            i++;
        } else if (v && !strcmp(a, "--trace")) {
            opt.trace_id = strtoull(v, NULL, 10);
            i++;
        } else if (v && !strcmp(a, "--clients")) {
            opt.clients = atoi(v);
            i++;
        } else if (v && !strcmp(a, "--workers")) {
            opt.workers = atoi(v);
            i++;
        } else if (v && !strcmp(a, "--log-level")) {
            if (fy_log_parse_level(v, &opt.log_level) < 0) {
                usage(stderr);
                return 2;
            }
            i++;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (opt.clients < 1 || opt.clients > MAX_CLIENTS || opt.workers < 1 || opt.workers > 64) {
        usage(stderr);
        return 2;
    }
    if (opt.seconds <= 0 && opt.iterations <= 0)
        opt.seconds = 30;
    return opt.fork ? supervise() : run();
}
