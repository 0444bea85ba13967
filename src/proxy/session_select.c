/*
 * CONNECT (see session.h, docs/internals/session.md): picking a server of the route's group with
 * its balancer (hash key, sticky cookie, the servers already tried), the max-conns queue, the
 * upstream_select hooks, obtaining a connection from the worker's pool for the server's address,
 * and retries: the server's next address, then another server within the group's retries and
 * the worker's retry budget.
 */
#include "proxy/session_priv.h"

#include "proxy/flow.h"

#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "net/addr.h"
#include "net/tls.h"
#include "proxy/connpool.h"
#include "proxy/lb.h"
#include "proxy/upstream_h1.h"
#include "proxy/worker.h"
/* ---- the max-conns queue (per worker and group, oldest first) ---- */

void sess_queue_remove(struct fy_session *s)
{
    if (!s->queued)
        return;
    struct fy_wqueue *q = &s->gen->queues[s->group->index];
    if (s->qprev)
        s->qprev->qnext = s->qnext;
    else
        q->head = s->qnext;
    if (s->qnext)
        s->qnext->qprev = s->qprev;
    else
        q->tail = s->qprev;
    s->qprev = s->qnext = NULL;
    s->queued = false;
    q->n--;
}

static void queue_append(struct fy_session *s)
{
    struct fy_wqueue *q = &s->gen->queues[s->group->index];
    s->qprev = q->tail;
    s->qnext = NULL;
    if (q->tail)
        q->tail->qnext = s;
    else
        q->head = s;
    q->tail = s;
    q->n++;
    s->queued = true;
}

/* A connection of the group ended in this worker: the oldest waiting session tries again. */
static void queue_wake(struct fy_session *s)
{
    struct fy_wqueue *q = &s->gen->queues[s->group->index];
    if (q->head)
        fy_loop_queue(&s->w->loop, &q->head->task);
}

/* Ends the current attempt's claim on its server: the balancer uncounts the connection and
 * learns whether the server failed. */
void sess_release_server(struct fy_session *s)
{
    if (!s->server)
        return;
    enum fy_lb_outcome o = s->server_failed ? FY_LB_FAILED
                           : s->up_head_us  ? FY_LB_OK
                                            : FY_LB_NEUTRAL;
    fy_lb_release(&s->gen->lbs[s->group->index], s->server, o, fy_conf_now_ms());
    s->server_failed = false;
    s->server = NULL;
    queue_wake(s);
}

/*
 * Tries another server of the group after the current one failed before the exchange reached
 * it in any way that matters: within the group's retries and the worker's retry budget (so
 * retries cannot multiply an outage). Returns true when a retry was set up.
 */
bool sess_retry_elsewhere(struct fy_session *s, const char *why)
{
    if (!s->group || s->ntried > s->group->retries || s->ntried >= FY_LB_MAX_TRIED ||
        s->group->nservers < 2 || !fy_worker_retry_allowed(s->w))
        return false;
    sess_slog(s, FY_LOG_INFO, "%s; retrying on another server", why);
    sess_release_upstream(s, false);
    sess_release_server(s);
    s->server = NULL;
    s->reused = false;
    s->req_last_queued = s->req_done = false;
    s->up_write_failed = false;
    s->got_response_bytes = false;
    s->timed_out = false;
    s->state = S_CONNECT;
    fy_loop_timer_stop(&s->timer);
    fy_loop_queue(&s->w->loop, &s->task);
    return true;
}

/* A connection attempt failed: the upstream saw nothing, so any request may go elsewhere: first
 * to the server's next address (a name with several), then to another server. A failed TLS
 * handshake (a certificate that does not verify, say) counts the same: no request was sent. */
static void connect_failed_as(struct fy_session *s, const char *why, const char *answer)
{
    if (s->addrs && s->addr_i + 1 < s->naddrs) {
        char addr[80];
        fy_addr_format((const struct sockaddr *)&s->addrs[s->addr_i].ss, addr, sizeof(addr));
        sess_slog(s, FY_LOG_INFO, "%s (%s); trying the %s's next address", why, addr,
                  s->x.forward ? "destination" : "server");
        sess_release_upstream(s, false);
        s->addr_i++;
        if (s->x.forward) {
            if (!sess_forward_next_addr(s))
                return; /* no address left that may be used: answered */
        } else {
            s->pool = s->gen->pools[s->group->index][s->server->pool_slot + s->addr_i];
        }
        s->attempts = 0;
        s->timed_out = false;
        fy_loop_timer_stop(&s->timer);
        fy_loop_queue(&s->w->loop, &s->task);
        return;
    }
    s->server_failed = true;
    if (sess_retry_elsewhere(s, why))
        return;
    sess_slog(s, FY_LOG_WARN, "%s", why);
    if (s->x.forward && s->tls_fail[0]) {
        /* A forward proxy's client is the one who needs the reason (an intercepting proxy's
         * user sees it in the page); a reverse proxy keeps its upstreams' details to itself. An
         * address that refused the connection does not hide a certificate that failed. */
        char text[300];
        snprintf(text, sizeof(text), "the TLS handshake with the destination failed: %s",
                 s->tls_fail);
        sess_fail_exchange(s, 502, text);
        return;
    }
    sess_fail_exchange(s, 502, answer);
}

static void connect_failed(struct fy_session *s, const char *why)
{
    connect_failed_as(s, why, "could not connect to the upstream server");
}

/* TLS towards an https server, once TCP is connected: 0 done, FY_AGAIN, or -1 (failed and
 * handled). The connect timer bounds the handshake too. */
static int upstream_tls(struct fy_session *s, struct fy_upconn *up)
{
    if (!up->tls_started) {
        int rc = fy_tls_connect(&up->sock, s->up_tls, s->up_tls_name, s->pool->tls_slot);
        if (rc < 0) {
            connect_failed(s, "cannot start TLS: out of memory");
            return -1;
        }
        up->tls_started = true;
        if (fy_tls_client_insecure(s->up_tls))
            sess_slog(s, FY_LOG_WARN,
                      "the upstream's TLS certificate is not verified (insecure-skip-verify): "
                      "anyone on the path can read and change this connection");
    }
    if (s->timed_out) {
        s->timed_out = false;
        char why[128];
        snprintf(why, sizeof(why), "TLS handshake timed out after %llu ms",
                 (unsigned long long)s->connect_timeout);
        snprintf(s->tls_fail, sizeof(s->tls_fail), "no answer within %llu ms (connect-timeout)",
                 (unsigned long long)s->connect_timeout);
        connect_failed_as(s, why, "the TLS handshake with the upstream server failed");
        return -1;
    }
    int rc = fy_sock_handshake(&up->sock);
    if (rc == FY_AGAIN)
        return FY_AGAIN;
    if (rc < 0) {
        char why[256];
        snprintf(why, sizeof(why), "TLS handshake with %s failed: %s", s->up_tls_name,
                 fy_tls_error(&up->sock));
        snprintf(s->tls_fail, sizeof(s->tls_fail), "%s", fy_tls_error(&up->sock));
        connect_failed_as(s, why, "the TLS handshake with the upstream server failed");
        return -1;
    }
    return 0;
}

/* ---- CONNECT ---- */

/* The value of cookie `name` in the request's Cookie fields, or NULL. */
static const char *find_cookie(struct fy_msg *m, const char *name, uint32_t nlen, uint32_t *vlen)
{
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        const struct fy_hdr *h = &m->hdrs[i];
        if (h->removed || !fy_name_eq(h->name, h->name_len, "Cookie", 6))
            continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *eq = memchr(p, '=', (size_t)(end - p));
            const char *semi = memchr(p, ';', (size_t)(end - p));
            if (!semi)
                semi = end;
            if (eq && eq < semi && (uint32_t)(eq - p) == nlen && !memcmp(p, name, nlen)) {
                const char *v = eq + 1;
                uint32_t l = (uint32_t)(semi - v);
                if (l >= 2 && v[0] == '"' && v[l - 1] == '"') {
                    v++;
                    l -= 2;
                }
                *vlen = l;
                return v;
            }
            p = semi;
        }
    }
    return NULL;
}

/* What the group's balancer needs from this request: the hash key or the sticky server. */
static void balancer_request(struct fy_session *s, struct fy_lb_req *lr)
{
    const struct fy_group *g = s->group;
    memset(lr, 0, sizeof(*lr));
    lr->tried = s->tried;
    lr->ntried = s->ntried;
    lr->now_ms = fy_conf_now_ms();
    if (g->balance == FY_LB_HASH) {
        const char *k = NULL;
        uint32_t kl = 0;
        switch (g->hash_key) {
        case FY_HK_CLIENT_IP: {
            struct fy_tctx v;
            sess_template_vars(s, &v);
            k = v.client_ip;
            kl = v.client_ip_len;
            break;
        }
        case FY_HK_PATH:
            k = s->path;
            kl = s->path_len;
            break;
        case FY_HK_HEADER: {
            struct fy_hdr *h = fy_msg_find(&s->req, g->hash_name, g->hash_name_len);
            if (h) {
                k = h->value;
                kl = h->value_len;
            }
            break;
        }
        case FY_HK_COOKIE:
            k = find_cookie(&s->req, g->hash_name, g->hash_name_len, &kl);
            break;
        }
        if (k) {
            lr->hash = fy_lb_hash(k, kl);
            lr->has_hash = true;
        }
    } else if (g->balance == FY_LB_STICKY) {
        uint32_t vl = 0;
        const char *v =
            find_cookie(&s->req, g->sticky_cookie, (uint32_t)strlen(g->sticky_cookie), &vl);
        for (uint32_t i = 0; v && i < g->nservers; i++)
            if (vl == 16 && !memcmp(g->servers[i].cookie_id, v, 16))
                lr->prefer = &g->servers[i];
    }
}

/* Is some server left that is only full (at max-conns), so waiting could help? */
static bool only_full(const struct fy_session *s, uint64_t now_ms)
{
    const struct fy_group *g = s->group;
    for (uint32_t i = 0; i < g->nservers; i++) {
        bool tried = false;
        for (uint32_t k = 0; k < s->ntried && !tried; k++)
            tried = s->tried[k] == i;
        if (!tried && fy_lb_usable(&g->servers[i], now_ms, true))
            return true;
    }
    return false;
}

/* No server has room: wait in the group's queue (woken when a connection of the group ends in
 * this worker, and every QUEUE_POLL_MS for the other workers' ones), or 503 when the queue is
 * full or the wait is over. Returns true while waiting. */
#define QUEUE_POLL_MS 20
static bool wait_in_queue(struct fy_session *s, uint64_t now_ms)
{
    const struct fy_group *g = s->group;
    uint64_t now_us = s->w->loop.now_us;
    if (!s->queued) {
        if (!g->max_queue || !only_full(s, now_ms) || s->gen->queues[g->index].n >= g->max_queue) {
            if (only_full(s, now_ms))
                sess_slog(s, FY_LOG_WARN,
                          "every server of upstream group %s is at max-conns and %s", g->name,
                          g->max_queue ? "the queue is full" : "it has no queue");
            return false;
        }
        queue_append(s);
        s->queue_deadline_us = now_us + g->queue_timeout * 1000;
        sess_slog(s, FY_LOG_INFO,
                  "every server of upstream group %s is at max-conns; waiting (%u in "
                  "this worker's queue)",
                  g->name, s->gen->queues[g->index].n);
    } else if (now_us >= s->queue_deadline_us) {
        sess_queue_remove(s);
        sess_slog(s, FY_LOG_WARN,
                  "waited %llu ms for a server of upstream group %s below max-conns",
                  (unsigned long long)g->queue_timeout, g->name);
        return false;
    }
    s->timed_out = false;
    fy_loop_timer_set(&s->w->loop, &s->timer, QUEUE_POLL_MS);
    return true;
}

/* Picks the server for the next attempt. Returns false when there is none yet: the exchange
 * failed, or it waits in the queue. */
static bool select_server(struct fy_session *s)
{
    struct fy_lb_req lr;
    balancer_request(s, &lr);
    struct fy_server *sv = fy_lb_pick(&s->gen->lbs[s->group->index], &lr);
    if (!sv && wait_in_queue(s, lr.now_ms))
        return false;
    sess_queue_remove(s);
    if (!sv) {
        if (s->ntried == 0 || only_full(s, lr.now_ms)) {
            sess_slog(s, FY_LOG_WARN, "no server of upstream group %s is available",
                      s->group->name);
            sess_fail_exchange(s, 503, "no upstream server is available");
        } else {
            sess_fail_exchange(s, 502, "could not connect to the upstream server");
        }
        return false;
    }
    s->server = sv;
    s->last_server = sv;
    s->timed_out = false; /* a queue wait's poll is not a connect timeout */
    s->addr_i = 0;
    s->addrs = sv->addrs;
    s->naddrs = sv->naddrs;
    s->up_tls = sv->tls;
    s->up_tls_name = sv->tls_name;
    s->pool = s->gen->pools[s->group->index][sv->pool_slot];
    s->tried[s->ntried++] = sv->index;
    s->set_sticky = s->group->balance == FY_LB_STICKY && lr.prefer != sv;
    s->attempts = 0;
    /* Per-attempt fields (Host). These hooks cannot wait: a server is already counted. */
    if (sess_run_hooks(s, HP_UPSTREAM_SELECT, &s->req) != FY_HOOK_CONTINUE) {
        sess_fail_exchange(s, 500, "internal error in an upstream_select hook");
        return false;
    }
    return true;
}

void sess_step_connect(struct fy_session *s)
{
    struct fy_worker *w = s->w;
    if (s->x.forward) {
        if (!s->pool && sess_forward_select(s) <= 0)
            return;
    } else if (!s->server && !select_server(s)) {
        return;
    }
    if (!s->up) {
        s->attempts++;
        s->up = s->attempts == 1 ? fy_connpool_get(s->pool, &s->task) : NULL;
        s->reused = s->up != NULL;
        if (!s->up) {
            int err = 0;
            s->up = fy_connpool_connect(s->pool, &s->task, &err);
            if (!s->up) {
                char why[128];
                snprintf(why, sizeof(why), "cannot connect: %s", strerror(-err));
                connect_failed(s, why);
                return;
            }
            fy_loop_timer_set(&w->loop, &s->timer, s->connect_timeout);
            sess_capture_mark(s, FY_FLOW_CONNECT_START);
        }
        if (!s->up_start_us)
            s->up_start_us = w->loop.now_us;
    }
    struct fy_upconn *up = s->up;
    if (!up->connected) {
        if (s->timed_out) {
            s->timed_out = false;
            char why[128];
            snprintf(why, sizeof(why), "connect timed out after %llu ms",
                     (unsigned long long)s->connect_timeout);
            connect_failed(s, why);
            return;
        }
        if (!up->sock.wr_ready)
            return;
        int rc = fy_sock_connect_result(&up->sock);
        if (rc < 0) {
            char why[128];
            snprintf(why, sizeof(why), "cannot connect: %s", strerror(-rc));
            connect_failed(s, why);
            return;
        }
        up->connected = true;
        sess_capture_mark(s, FY_FLOW_CONNECTED);
    }
    if (s->fwd.connect) {
        sess_forward_tunnel(s); /* a tunnel carries the client's own TLS, if any */
        return;
    }
    if (!up->secure) {
        if (s->up_tls && upstream_tls(s, up) != 0)
            return;
        up->secure = true;
        if (s->up_tls)
            sess_capture_mark(s, FY_FLOW_TLS_DONE);
    }
    sess_capture_mark(s, FY_FLOW_SEND_START);
    s->up_ready_us = w->loop.now_us;
    if (sess_queue_request_head(s) < 0) {
        sess_fail_exchange(s, 500, "out of memory");
        return;
    }
    if (!up->in)
        up->in = fy_buf_get(FY_BUF_SIZE);
    if (!up->in) {
        sess_fail_exchange(s, 500, "out of memory");
        return;
    }
    fy_uh1_begin(up, s->is_head);
    s->state = S_EXCHANGE;
    s->timed_out = false;
    fy_loop_timer_set(&w->loop, &s->timer, s->upstream_timeout);
}
