/*
 * Active health checks; see health.h. One probe at a time per checked server (a target): the
 * configuration guarantees timeout < interval, so a probe always ends before the next is due.
 * Each target has one timer (the next check while idle, the probe's deadline while probing) and
 * one task. Socket events and the timer only flag and queue the task (loop.h's rule); the task
 * does the I/O and may close the probe's socket.
 *
 *   IDLE --timer--> CONNECTING --writable--> SENDING --sent--> READING --status line--> IDLE
 *     ^                  |                      |                 |                      |
 *     +--- failure: refused, reset, timeout, malformed, status outside expect ----------+
 *
 * A finished probe (either way) is counted in the server's shared state and the next one is
 * due one interval after this one started, so the period does not drift with the probe's time.
 */
#include "proxy/health.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/assert.h"
#include "core/log.h"
#include "core/macros.h"
#include "net/sock.h"
#include "net/tls.h"

/* A status line longer than this is taken as malformed: a server answering health checks has a
 * short one, and a bound keeps a target's buffer in the struct. */
#define HC_LINE_MAX 512
/* What is read and thrown away after the status line, so a small response is consumed before the
 * close (closing with unread bytes makes the kernel send a reset). */
#define HC_DRAIN_MAX 16384
/* The first checks after a start are spread over at most this long (and half an interval). */
#define HC_SPREAD_MAX_MS 1000

enum hc_phase { HC_IDLE, HC_CONNECTING, HC_TLS, HC_SENDING, HC_READING };

struct hc_target {
    struct fy_health_checker *hc;
    const struct fy_group *group;
    struct fy_server *server;
    char *req; /* the request, built once */
    uint32_t req_len;
    enum hc_phase phase;
    bool timer_fired;
    struct fy_timer timer;
    struct fy_task task;
    struct fy_sock sock;                  /* fd -1 while idle */
    struct fy_tls_session_slot *tls_slot; /* https servers: probes resume the last session */
    uint64_t start_ms;                    /* when the current (or last) probe started */
    uint32_t sent;
    uint32_t in_len;
    char in[HC_LINE_MAX];
};

struct fy_health_checker {
    struct fy_loop *loop;
    struct hc_target *targets;
    uint32_t ntargets;
};

/* ---- the status line ---- */

/* Parses "HTTP/1.x SSS reason\r\n" at the start of buf (RFC 9112 section 4: a 3-digit status,
 * 100 to 599; the reason may be empty, its SP too, as many servers send). Returns 1 with
 * *status set, 0 when more bytes are needed, -1 when malformed. */
static int parse_status_line(const char *buf, size_t len, int *status)
{
    static const char version[] = "HTTP/1.";
    for (size_t i = 0; i < len && i < 12; i++) {
        char c = buf[i];
        bool ok;
        if (i < 7)
            ok = c == version[i];
        else if (i == 7 || i >= 10)
            ok = c >= '0' && c <= '9';
        else if (i == 8)
            ok = c == ' ';
        else
            ok = c >= '1' && c <= '5';
        if (!ok)
            return -1;
    }
    for (size_t i = 12; i < len; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c == '\r') {
            if (i + 1 == len)
                return 0;
            if (buf[i + 1] != '\n')
                return -1;
            *status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
            return 1;
        }
        if (i == 12 && c != ' ')
            return -1;
        /* reason-phrase = *( HTAB / SP / VCHAR / obs-text ): no other control character */
        if (c != '\t' && (c < 0x20 || c == 0x7f))
            return -1;
    }
    return 0;
}

static bool status_expected(const struct fy_health *h, int status)
{
    for (uint32_t i = 0; i < h->nexpect; i++)
        if (status >= h->expect[i][0] && status <= h->expect[i][1])
            return true;
    return false;
}

/* ---- the server's state ---- */

/* Counts one finished check on the shared state and logs a transition. Only this loop writes
 * hc_ok/hc_fail (atomics anyway: the struct's contract); other workers read only `down`. */
static void record(struct hc_target *t, bool ok, const char *why)
{
    struct fy_server_state *st = t->server->state;
    const struct fy_health *h = &t->group->health;
    bool down = __atomic_load_n(&st->down, __ATOMIC_RELAXED);
    if (ok) {
        __atomic_store_n(&st->hc_fail, 0, __ATOMIC_RELAXED);
        unsigned n = __atomic_load_n(&st->hc_ok, __ATOMIC_RELAXED);
        if (n < UINT_MAX)
            n++;
        __atomic_store_n(&st->hc_ok, n, __ATOMIC_RELAXED);
        if (down && n >= h->rise) {
            __atomic_store_n(&st->down, false, __ATOMIC_RELEASE);
            fy_info("upstream group %s: server %s is up again (health check passed %u time%s)",
                    t->group->name, t->server->url, n, n == 1 ? "" : "s");
        }
        return;
    }
    __atomic_store_n(&st->hc_ok, 0, __ATOMIC_RELAXED);
    unsigned n = __atomic_load_n(&st->hc_fail, __ATOMIC_RELAXED);
    if (n < UINT_MAX)
        n++;
    __atomic_store_n(&st->hc_fail, n, __ATOMIC_RELAXED);
    if (!down && n >= h->fall) {
        __atomic_store_n(&st->down, true, __ATOMIC_RELEASE);
        fy_warn("upstream group %s: server %s is down (health check %s: %s; %u in a row)",
                t->group->name, t->server->url, h->path, why, n);
    } else {
        fy_debug("upstream group %s: server %s: health check %s failed: %s (%u in a row)",
                 t->group->name, t->server->url, h->path, why, n);
    }
}

/* ---- one probe ---- */

/* Ends the probe in progress (if any) without counting it: its socket and queued task go. */
static void probe_abort(struct hc_target *t)
{
    fy_sock_close(&t->sock);
    fy_loop_unqueue(t->hc->loop, &t->task);
    t->phase = HC_IDLE;
}

/* The probe has its outcome: close, count, and arm the next one. */
static void probe_done(struct hc_target *t, bool ok, const char *why)
{
    struct fy_loop *loop = t->hc->loop;
    probe_abort(t);
    record(t, ok, why);
    uint64_t elapsed = loop->now_ms - t->start_ms;
    uint64_t interval = t->group->health.interval;
    fy_loop_timer_set(loop, &t->timer, elapsed < interval ? interval - elapsed : 0);
}

static void probe_failed_errno(struct hc_target *t, const char *doing, int err)
{
    char why[128];
    if (err == ECONNREFUSED)
        snprintf(why, sizeof(why), "connection refused");
    else if (err == ECONNRESET)
        snprintf(why, sizeof(why), "connection reset");
    else
        snprintf(why, sizeof(why), "%s: %s", doing, strerror(err));
    probe_done(t, false, why);
}

static void probe_start(struct hc_target *t)
{
    struct fy_loop *loop = t->hc->loop;
    const struct fy_addr *a = &t->server->addr;
    t->start_ms = loop->now_ms;
    t->sent = t->in_len = 0;
    int fd = fy_sock_connect_start((const struct sockaddr *)&a->ss, a->len);
    if (fd < 0) {
        probe_failed_errno(t, "cannot connect", -fd);
        return;
    }
    int rc = fy_sock_open(&t->sock, loop, fd, &t->task);
    if (rc < 0) {
        probe_failed_errno(t, "cannot register the socket", -rc);
        return;
    }
    t->phase = HC_CONNECTING;
    fy_loop_timer_set(loop, &t->timer, t->group->health.timeout);
}

/* After the status line: throw away what has already arrived, within a bound. */
static void drain(struct hc_target *t)
{
    char scratch[4096];
    for (size_t total = 0; total < HC_DRAIN_MAX; total += sizeof(scratch))
        if (fy_sock_read(&t->sock, scratch, sizeof(scratch)) < (ssize_t)sizeof(scratch))
            return;
}

/* Reads until the status line is complete (then the probe ends) or the socket would block. */
static void probe_read(struct hc_target *t)
{
    for (;;) {
        ssize_t n = fy_sock_read(&t->sock, t->in + t->in_len, sizeof(t->in) - t->in_len);
        if (n == FY_AGAIN)
            return;
        if (n == 0) {
            probe_done(t, false, "connection closed before a status line");
            return;
        }
        if (n < 0) {
            probe_failed_errno(t, "cannot read", (int)-n);
            return;
        }
        t->in_len += (uint32_t)n;
        int status = 0;
        int r = parse_status_line(t->in, t->in_len, &status);
        if (r < 0) {
            probe_done(t, false, "malformed status line");
            return;
        }
        if (r == 0) {
            if (t->in_len == sizeof(t->in)) {
                probe_done(t, false, "status line too long");
                return;
            }
            continue;
        }
        drain(t);
        char why[32];
        snprintf(why, sizeof(why), "status %d", status);
        probe_done(t, status_expected(&t->group->health, status), why);
        return;
    }
}

static void target_run(struct fy_task *task)
{
    struct hc_target *t = container_of(task, struct hc_target, task);
    if (t->timer_fired) {
        t->timer_fired = false;
        if (t->phase == HC_IDLE) {
            probe_start(t);
        } else {
            char why[64];
            snprintf(why, sizeof(why), "timed out after %" PRIu64 " ms", t->group->health.timeout);
            probe_done(t, false, why);
        }
        return;
    }
    switch (t->phase) {
    case HC_IDLE:
        return;
    case HC_CONNECTING: {
        if (!t->sock.wr_ready)
            return;
        int rc = fy_sock_connect_result(&t->sock);
        if (rc < 0) {
            probe_failed_errno(t, "cannot connect", -rc);
            return;
        }
        t->phase = HC_SENDING;
        if (t->server->tls) {
            /* Checked the way requests go: over TLS, verified like them. */
            if (fy_tls_connect(&t->sock, t->server->tls, t->server->tls_name, t->tls_slot) < 0) {
                probe_done(t, false, "cannot start TLS: out of memory");
                return;
            }
            t->phase = HC_TLS;
        }
    }
    /* fall through */
    case HC_TLS:
        if (t->phase == HC_TLS) {
            int rc = fy_sock_handshake(&t->sock);
            if (rc == FY_AGAIN)
                return;
            if (rc < 0) {
                char why[220];
                snprintf(why, sizeof(why), "TLS handshake failed: %s", fy_tls_error(&t->sock));
                probe_done(t, false, why);
                return;
            }
            t->phase = HC_SENDING;
        }
    /* fall through */
    case HC_SENDING:
        while (t->sent < t->req_len) {
            struct iovec iov = {t->req + t->sent, t->req_len - t->sent};
            ssize_t n = fy_sock_writev(&t->sock, &iov, 1);
            if (n == FY_AGAIN)
                return;
            if (n < 0) {
                probe_failed_errno(t, "cannot send", (int)-n);
                return;
            }
            t->sent += (uint32_t)n;
        }
        t->phase = HC_READING;
    /* fall through */
    case HC_READING:
        probe_read(t);
        return;
    }
}

static void on_timer(struct fy_timer *timer)
{
    struct hc_target *t = container_of(timer, struct hc_target, timer);
    t->timer_fired = true;
    fy_loop_queue(t->hc->loop, &t->task);
}

/* ---- start and stop ---- */

static char *build_request(const struct fy_server *s, const struct fy_health *h, uint32_t *len)
{
    static const char fmt[] = "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ferry-health-check\r\n"
                              "Connection: close\r\n\r\n";
    int n = snprintf(NULL, 0, fmt, h->path, s->authority);
    if (n < 0)
        return NULL;
    char *req = malloc((size_t)n + 1);
    if (!req)
        return NULL;
    snprintf(req, (size_t)n + 1, fmt, h->path, s->authority);
    *len = (uint32_t)n;
    return req;
}

/* A group without a check (now) cannot leave a server down: a reload may have turned the check
 * off while the carried-over state said down. */
static void release_unchecked(struct fy_conf *conf)
{
    for (uint32_t g = 0; g < conf->ngroups; g++) {
        const struct fy_group *grp = &conf->groups[g];
        if (grp->health.enabled)
            continue;
        for (uint32_t i = 0; i < grp->nservers; i++) {
            struct fy_server_state *st = grp->servers[i].state;
            __atomic_store_n(&st->hc_ok, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&st->hc_fail, 0, __ATOMIC_RELAXED);
            if (__atomic_exchange_n(&st->down, false, __ATOMIC_ACQ_REL))
                fy_info("upstream group %s: server %s is up again (health checks are off)",
                        grp->name, grp->servers[i].url);
        }
    }
}

struct fy_health_checker *fy_health_start(struct fy_loop *loop, struct fy_conf *conf)
{
    release_unchecked(conf);
    uint32_t n = 0;
    for (uint32_t g = 0; g < conf->ngroups; g++)
        if (conf->groups[g].health.enabled)
            n += conf->groups[g].nservers;
    if (!n)
        return NULL;
    struct fy_health_checker *hc = calloc(1, sizeof(*hc));
    if (!hc)
        goto fail;
    hc->loop = loop;
    hc->targets = calloc(n, sizeof(*hc->targets));
    if (!hc->targets)
        goto fail_hc;
    /* Evenly spaced first checks from a random phase: N servers do not fire at once, and neither
     * do several ferry processes started together. */
    uint64_t phase = fy_conf_now_ms() ^ ((uint64_t)(uintptr_t)hc >> 4);
    for (uint32_t g = 0; g < conf->ngroups; g++) {
        const struct fy_group *grp = &conf->groups[g];
        if (!grp->health.enabled)
            continue;
        for (uint32_t i = 0; i < grp->nservers; i++) {
            struct hc_target *t = &hc->targets[hc->ntargets];
            t->hc = hc;
            t->group = grp;
            t->server = &grp->servers[i];
            t->req = build_request(t->server, &grp->health, &t->req_len);
            if (t->server->tls)
                t->tls_slot = fy_tls_session_slot_new();
            if (!t->req)
                goto fail_targets;
            t->sock.fd = -1;
            t->task.fn = target_run;
            fy_timer_init(&t->timer, on_timer);
            uint64_t spread = grp->health.interval / 2;
            if (spread > HC_SPREAD_MAX_MS)
                spread = HC_SPREAD_MAX_MS;
            spread++;
            uint64_t delay = (phase + (uint64_t)hc->ntargets * spread / n) % spread;
            fy_loop_timer_set(loop, &t->timer, delay);
            hc->ntargets++;
        }
    }
    return hc;

fail_targets:
    fy_health_stop(hc);
    goto fail;
fail_hc:
    free(hc);
fail:
    fy_error("active health checks are off: out of memory");
    return NULL;
}

void fy_health_stop(struct fy_health_checker *hc)
{
    if (!hc)
        return;
    for (uint32_t i = 0; i < hc->ntargets; i++) {
        struct hc_target *t = &hc->targets[i];
        probe_abort(t);
        fy_loop_timer_del(hc->loop, &t->timer);
        free(t->req);
        fy_tls_session_slot_free(t->tls_slot);
    }
    free(hc->targets);
    free(hc);
}
