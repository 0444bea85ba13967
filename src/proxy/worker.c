/* Worker threads: accept, drain on shutdown; see worker.h. */
#include "proxy/worker.h"

#include "filters/htpasswd.h"
#include "net/dns.h"
#include "net/tls.h"
#include "proxy/fwd_pools.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/assert.h"
#include "core/buf.h"
#include "core/macros.h"
#include "core/log.h"
#include "net/pipe.h"
#include "proxy/health.h"
#include "proxy/lb.h"
#include "proxy/router.h"
#include "proxy/client_h1.h"
#include "proxy/handshake.h"
#include "proxy/session.h"

static uint64_t reader_body_limit(const struct fy_conf *c);
static void adopt_reload(struct fy_worker *w);

static void on_accept(struct fy_task *t);

static void on_accept_retry(struct fy_timer *t)
{
    struct fy_wlistener *l = container_of(t, struct fy_wlistener, retry);
    fy_loop_queue(&l->w->loop, &l->accept_task);
}

static void on_accept(struct fy_task *t)
{
    struct fy_wlistener *l = container_of(t, struct fy_wlistener, accept_task);
    struct fy_worker *w = l->w;
    if (w->draining || l->fd < 0)
        return;
    /* Bounded per wakeup so one busy listener cannot starve established connections. */
    for (int i = 0; i < 256; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN) {
                l->sock.rd_ready = false;
                return;
            }
            /* Out of descriptors (or memory): the connections waiting in the kernel's queue
             * raise no new edge, so accepting resumes on a timer, once closed connections have
             * given descriptors back. The warning says so once a minute at most. */
            int err = errno;
            if (w->loop.now_ms - l->warned_ms >= 60000 || !l->warned_ms) {
                l->warned_ms = w->loop.now_ms ? w->loop.now_ms : 1;
                if (err == EMFILE || err == ENFILE)
                    fy_warn("cannot accept: %s (raise the open files limit); retrying every "
                            "100 ms",
                            strerror(err));
                else
                    fy_warn("accept failed: %s; retrying every 100 ms", strerror(err));
            }
            fy_loop_timer_set(&w->loop, &l->retry, 100);
            return;
        }
        if (w->nclients >= w->cfg->max_connections) {
            /* Over the limit: refuse this one, keep serving the others. */
            close(fd);
            continue;
        }
        struct fy_tls_server *tls =
            l->listener != FY_LSN_GONE ? w->gen->conf->listeners[l->listener].tls : NULL;
        if (tls)
            fy_handshake_start(w, l, fd, (struct sockaddr *)&peer, len, tls);
        else
            fy_client_accept(w, l, fd, (struct sockaddr *)&peer, len);
    }
    fy_loop_queue(&w->loop, &l->accept_task);
}

/* ---- listening sockets ---- */

static void lsn_close(struct fy_wlistener *l)
{
    if (l->fd >= 0) {
        /* Out of epoll first: epoll watches the open file, not the fd number, so a listening
         * socket that lives on elsewhere (another worker's copy of a kept address, a process
         * that inherited it) would otherwise keep waking this loop after close(2). */
        fy_loop_del(&l->w->loop, l->fd);
        fy_sock_close(&l->sock);
        l->fd = -1;
    }
}

static void lsn_free(struct fy_wlistener *l)
{
    lsn_close(l);
    fy_loop_unqueue(&l->w->loop, &l->accept_task);
    fy_loop_timer_del(&l->w->loop, &l->retry);
    free(l);
}

/* A listening socket around fd, which it owns from now on (closed on failure too). */
static struct fy_wlistener *lsn_open(struct fy_worker *w, int fd, const struct fy_addr *addr,
                                     uint32_t listener, int *rc)
{
    struct fy_wlistener *l = calloc(1, sizeof(*l));
    if (!l) {
        close(fd);
        *rc = -ENOMEM;
        return NULL;
    }
    l->w = w;
    l->fd = -1;
    l->addr = *addr;
    l->listener = listener;
    l->accept_task.fn = on_accept;
    fy_timer_init(&l->retry, on_accept_retry);
    *rc = fy_sock_open(&l->sock, &w->loop, fd, &l->accept_task);
    if (*rc < 0) {
        free(l); /* fy_sock_open closed fd */
        return NULL;
    }
    l->fd = fd;
    return l;
}

static bool same_addr(const struct fy_addr *a, const struct fy_addr *b)
{
    return a->len == b->len && !memcmp(&a->ss, &b->ss, a->len);
}

/* ---- generations ---- */

static void wgen_free(struct fy_wgen *g)
{
    if (!g)
        return;
    for (unsigned i = 0; i < fy_nhooks; i++)
        if (g->hook_gen[i] && fy_hooks[i]->gen_close)
            fy_hooks[i]->gen_close(g->hook_gen[i]);
    if (g->lbs)
        for (uint32_t i = 0; i < g->conf->ngroups; i++)
            fy_lb_destroy(&g->lbs[i]);
    if (g->pools)
        for (uint32_t i = 0; i < g->conf->ngroups; i++)
            free(g->pools[i]);
    free(g->lbs);
    free(g->pools);
    free(g->queues);
    fy_conf_unref(g->conf);
    free(g);
}

/* This worker's runtime for generation c (takes a reference on c). */
static struct fy_wgen *wgen_create(struct fy_worker *w, struct fy_conf *c)
{
    struct fy_wgen *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->conf = fy_conf_ref(c);
    g->lbs = calloc(c->ngroups ? c->ngroups : 1, sizeof(*g->lbs));
    g->pools = calloc(c->ngroups ? c->ngroups : 1, sizeof(*g->pools));
    g->queues = calloc(c->ngroups ? c->ngroups : 1, sizeof(*g->queues));
    if (!g->lbs || !g->pools || !g->queues)
        goto fail;
    const struct fy_config *s = &c->settings;
    for (uint32_t i = 0; i < c->ngroups; i++) {
        const struct fy_group *grp = &c->groups[i];
        if (fy_lb_init(&g->lbs[i], grp, fy_worker_random(w)) < 0)
            goto fail;
        g->pools[i] = calloc(grp->npool_slots ? grp->npool_slots : 1, sizeof(*g->pools[i]));
        if (!g->pools[i])
            goto fail;
        for (uint32_t k = 0; k < grp->nservers; k++) {
            const struct fy_server *sv = &grp->servers[k];
            for (uint32_t a = 0; a < sv->naddrs; a++) {
                struct fy_pool_key key = {&sv->addrs[a], sv->tls, sv->tls_name};
                struct fy_connpool *p = fy_pools_get(&w->pools, &w->loop, &key, &w->resp_limits,
                                                     s->pool_max_idle, s->pool_idle_timeout);
                if (!p)
                    goto fail;
                g->pools[i][sv->pool_slot + a] = p;
            }
        }
    }
    for (unsigned i = 0; i < fy_nhooks; i++)
        if (fy_hooks[i]->gen_open)
            g->hook_gen[i] = fy_hooks[i]->gen_open(c);
    return g;
fail:
    wgen_free(g);
    return NULL;
}

static bool gen_uses_pool(const struct fy_wgen *g, const struct fy_connpool *p)
{
    for (uint32_t i = 0; i < g->conf->ngroups; i++)
        for (uint32_t k = 0; k < g->conf->groups[i].npool_slots; k++)
            if (g->pools[i][k] == p)
                return true;
    return false;
}

static bool pool_in_use(const struct fy_connpool *p, void *ctx)
{
    const struct fy_worker *w = ctx;
    if (w->gen && gen_uses_pool(w->gen, p))
        return true;
    for (const struct fy_wgen *g = w->retired; g; g = g->next_retired)
        if (gen_uses_pool(g, p))
            return true;
    return false;
}

/* Pools of addresses no generation of this worker uses any more: a reload removed the server
 * (or its name moved), so their idle connections go and the pools with them. Runs when a
 * generation is replaced or freed, never per request. */
static void prune_pools(struct fy_worker *w)
{
    fy_pools_prune(&w->pools, pool_in_use, w);
}

struct fy_wgen *fy_worker_gen_acquire(struct fy_worker *w)
{
    w->gen->users++;
    return w->gen;
}

void fy_worker_gen_release(struct fy_worker *w, struct fy_wgen *gen)
{
    FY_ASSERT(gen->users > 0);
    if (--gen->users || gen == w->gen)
        return;
    /* The last session of a replaced generation: it goes now. */
    for (struct fy_wgen **p = &w->retired; *p; p = &(*p)->next_retired) {
        if (*p == gen) {
            *p = gen->next_retired;
            break;
        }
    }
    wgen_free(gen);
    prune_pools(w);
}

/* ---- retry budget ---- */

#define BUDGET_WINDOW_MS 10000
#define BUDGET_SHARE 5        /* retries stay under 1/5 of the requests of the last window */
#define BUDGET_MIN_RETRIES 10 /* per window, so a quiet worker can still retry */

static void budget_roll(struct fy_worker *w)
{
    uint64_t win = w->loop.now_us / 1000 / BUDGET_WINDOW_MS;
    if (win == w->budget_window)
        return;
    bool adjacent = win == w->budget_window + 1;
    w->budget_requests[1] = adjacent ? w->budget_requests[0] : 0;
    w->budget_retries[1] = adjacent ? w->budget_retries[0] : 0;
    w->budget_requests[0] = w->budget_retries[0] = 0;
    w->budget_window = win;
}

void fy_worker_count_request(struct fy_worker *w)
{
    budget_roll(w);
    w->budget_requests[0]++;
}

bool fy_worker_retry_allowed(struct fy_worker *w)
{
    budget_roll(w);
    uint32_t req = w->budget_requests[0] + w->budget_requests[1];
    uint32_t ret = w->budget_retries[0] + w->budget_retries[1];
    uint32_t allowed = req / BUDGET_SHARE;
    if (allowed < BUDGET_MIN_RETRIES)
        allowed = BUDGET_MIN_RETRIES;
    if (ret >= allowed)
        return false;
    w->budget_retries[0]++;
    return true;
}

uint64_t fy_worker_random(struct fy_worker *w)
{
    /* xorshift64*: ids and seeds need spread, not secrecy. */
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

void fy_worker_check_drained(struct fy_worker *w)
{
    if (w->draining && w->nclients == 0 && w->nsessions == 0)
        fy_loop_quit(&w->loop);
}

static void on_drain_timeout(struct fy_timer *t)
{
    struct fy_worker *w = container_of(t, struct fy_worker, drain_timer);
    if (w->nclients)
        fy_warn("drain timeout: closing %u connection(s) still in progress", w->nclients);
    fy_handshake_close_all(w);
    while (w->clients)
        fy_client_kill(w->clients);
    fy_worker_check_drained(w);
    if (w->nsessions == 0)
        fy_loop_quit(&w->loop);
}

static void on_stop(struct fy_loop *loop)
{
    struct fy_worker *w = loop->owner;
    w->draining = true;
    /* Stop accepting first so the kernel refuses new connections on this socket. */
    for (uint32_t i = 0; i < w->nlsn; i++)
        lsn_close(w->lsn[i]);
    fy_handshake_close_all(w); /* nothing was asked on them yet */
    struct fy_client *c = w->clients;
    while (c) {
        struct fy_client *next = fy_client_next(c);
        fy_client_drain(c);
        c = next;
    }
    fy_loop_timer_set(loop, &w->drain_timer, w->cfg->drain_timeout);
    fy_worker_check_drained(w);
}

static void poke_main(struct fy_worker *w)
{
    if (w->notify_fd < 0)
        return;
    uint64_t one = 1;
    ssize_t n = write(w->notify_fd, &one, sizeof(one));
    (void)n;
}

static void on_notify(struct fy_loop *loop, unsigned bits)
{
    struct fy_worker *w = loop->owner;
    if (bits & FY_WORKER_FLUSH) {
        unsigned gen = __atomic_load_n(&w->flush_req, __ATOMIC_ACQUIRE);
        fy_accesslog_flush(&w->alog);
        __atomic_store_n(&w->flush_done, gen, __ATOMIC_RELEASE);
        poke_main(w);
    }
    if (bits & FY_WORKER_RELOAD)
        adopt_reload(w);
    if (bits & FY_WORKER_QUIT) {
        /* fy_worker_main closes what is left once the loop has returned. */
        fy_loop_quit(loop);
    }
}

static void reload_free(struct fy_worker_reload *r)
{
    for (uint32_t i = 0; i < r->nfds; i++)
        if (r->fds[i] >= 0)
            close(r->fds[i]);
    fy_conf_unref(r->conf);
    free(r->fds);
    free(r);
}

/* Takes the listening sockets of generation c: a socket of an address that stays is kept (with
 * its queue of pending connections), a new address gets its fd from r, a removed one is closed
 * and its connections drained. Returns 0, or -1 (out of memory: nothing changed). */
static int adopt_listeners(struct fy_worker *w, struct fy_worker_reload *r)
{
    struct fy_conf *c = r->conf;
    struct fy_wlistener **next = calloc(r->nfds ? r->nfds : 1, sizeof(*next));
    if (!next)
        return -1;
    bool *kept = calloc(w->nlsn ? w->nlsn : 1, sizeof(*kept));
    if (!kept) {
        free(next);
        return -1;
    }
    uint32_t k = 0;
    for (uint32_t li = 0; li < c->nlisteners; li++) {
        for (uint32_t a = 0; a < c->listeners[li].naddrs && k < r->nfds; a++, k++) {
            const struct fy_addr *addr = &c->listeners[li].addrs[a];
            if (r->fds[k] < 0) {
                for (uint32_t i = 0; i < w->nlsn && !next[k]; i++) {
                    if (!kept[i] && same_addr(&w->lsn[i]->addr, addr)) {
                        kept[i] = true;
                        next[k] = w->lsn[i];
                    }
                }
                if (!next[k]) {
                    fy_warn("reload: no listening socket for %s in worker %d", "an address", w->id);
                    continue;
                }
            } else {
                int rc;
                next[k] = lsn_open(w, r->fds[k], addr, li, &rc);
                r->fds[k] = -1; /* owned (or closed) by lsn_open */
                if (!next[k]) {
                    fy_warn("reload: worker %d cannot watch a new listening socket: %s", w->id,
                            strerror(-rc));
                    continue;
                }
                fy_loop_queue(&w->loop, &next[k]->accept_task);
            }
            next[k]->listener = li;
        }
    }
    for (uint32_t i = 0; i < w->nlsn; i++) {
        if (kept[i])
            continue;
        struct fy_wlistener *l = w->lsn[i];
        lsn_close(l);
        l->listener = FY_LSN_GONE;
        l->next_gone = w->gone_lsn;
        w->gone_lsn = l;
        for (struct fy_client *cl = w->clients; cl;) {
            struct fy_client *n = fy_client_next(cl);
            if (fy_client_listener(cl) == l)
                fy_client_drain(cl);
            cl = n;
        }
    }
    /* Compact: a failed slot above is left out. */
    uint32_t n = 0;
    for (uint32_t i = 0; i < k; i++)
        if (next[i])
            next[n++] = next[i];
    free(kept);
    free(w->lsn);
    w->lsn = next;
    w->nlsn = n;
    return 0;
}

/* The worker's settings that follow a generation (see fy_worker_init). */
static void apply_settings(struct fy_worker *w, const struct fy_conf *c)
{
    const struct fy_config *cfg = &c->settings;
    w->cfg = cfg;
    w->req_limits.max_line = cfg->max_request_line;
    w->req_limits.max_head = cfg->max_header_size + 1024 > w->client_in_size
                                 ? w->client_in_size - 1024 /* the buffer class is fixed */
                                 : cfg->max_header_size;
    w->req_limits.max_fields = cfg->max_headers;
    w->req_limits.max_body = reader_body_limit(c);
}

static void adopt_reload(struct fy_worker *w)
{
    struct fy_worker_reload *r = __atomic_exchange_n(&w->pending_reload, NULL, __ATOMIC_ACQ_REL);
    if (!r)
        return;
    unsigned generation = r->conf->generation;
    struct fy_wgen *g = w->draining ? NULL : wgen_create(w, r->conf);
    if (!g || adopt_listeners(w, r) < 0) {
        if (!w->draining)
            fy_error("reload: worker %d is out of memory; it keeps the old configuration", w->id);
        if (g)
            wgen_free(g);
        reload_free(r);
        __atomic_store_n(&w->reload_done, generation, __ATOMIC_RELEASE);
        poke_main(w);
        return;
    }
    reload_free(r); /* closes nothing: adopt_listeners took every fd */
    struct fy_wgen *old = w->gen;
    w->gen = g;
    apply_settings(w, g->conf);
    if (w->id == 0) {
        /* The checks follow the new groups; up/down and the counts live in the server states,
         * which servers that stay share with the old generation. */
        fy_health_stop(w->health);
        w->health = fy_health_start(&w->loop, g->conf);
    }
    if (old->users == 0) {
        wgen_free(old);
    } else {
        old->next_retired = w->retired;
        w->retired = old;
    }
    prune_pools(w);
    __atomic_store_n(&w->reload_done, generation, __ATOMIC_RELEASE);
    poke_main(w);
}

void fy_worker_request_reload(struct fy_worker *w, struct fy_worker_reload *r)
{
    struct fy_worker_reload *prev = __atomic_exchange_n(&w->pending_reload, r, __ATOMIC_ACQ_REL);
    if (prev)
        reload_free(prev); /* never adopted; superseded */
    fy_loop_notify(&w->loop, FY_WORKER_RELOAD);
}

bool fy_worker_reloaded(const struct fy_worker *w, unsigned generation)
{
    return __atomic_load_n(&w->reload_done, __ATOMIC_ACQUIRE) >= generation ||
           __atomic_load_n(&w->exited, __ATOMIC_ACQUIRE);
}

void fy_worker_request_flush(struct fy_worker *w, unsigned gen)
{
    __atomic_store_n(&w->flush_req, gen, __ATOMIC_RELEASE);
    fy_loop_notify(&w->loop, FY_WORKER_FLUSH);
}

bool fy_worker_flushed(const struct fy_worker *w, unsigned gen)
{
    return __atomic_load_n(&w->flush_done, __ATOMIC_ACQUIRE) == gen ||
           __atomic_load_n(&w->exited, __ATOMIC_ACQUIRE);
}

void fy_worker_request_quit(struct fy_worker *w)
{
    fy_loop_notify(&w->loop, FY_WORKER_QUIT);
}

bool fy_worker_exited(const struct fy_worker *w)
{
    return __atomic_load_n(&w->exited, __ATOMIC_ACQUIRE);
}

/* The body limit the client's reader enforces: the largest any route allows (0 = unlimited), so
 * a route may raise the global limit; the session applies the route's own once it is known. */
static uint64_t reader_body_limit(const struct fy_conf *c)
{
    uint64_t max = c->settings.max_body_size;
    if (!max)
        return 0;
    for (uint32_t li = 0; li < c->nlisteners; li++) {
        for (uint32_t r = 0; r < c->listeners[li].nroutes; r++) {
            uint64_t l = c->listeners[li].routes[r].limits.max_body_size;
            if (l == UINT64_MAX)
                return 0;
            if (l > max)
                max = l;
        }
    }
    return max;
}

static void close_fds(const int *fds, uint32_t from, uint32_t n)
{
    for (uint32_t i = from; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* The forward proxy's per-worker state: after the connections that use it (the minted
 * certificates are referenced by their connections, the pools by their sessions). */
static void forward_state_free(struct fy_worker *w)
{
    fy_fwd_pools_free(w->fwd_pools);
    w->fwd_pools = NULL;
    fy_dns_free(w->dns);
    w->dns = NULL;
    fy_tls_mint_free(w->mint);
    w->mint = NULL;
    fy_auth_cache_free(w->auth_cache);
    w->auth_cache = NULL;
}

/* The auth cache's clock: the loop's (refreshed every wakeup). */
static uint64_t loop_now_ms(void *loop)
{
    return ((struct fy_loop *)loop)->now_ms;
}

int fy_worker_init(struct fy_worker *w, struct fy_conf *conf, int id, const int *fds, uint32_t nfds,
                   int alog_fd)
{
    memset(w, 0, sizeof(*w));
    w->notify_fd = -1;
    uint32_t opened = 0;
    int rc = fy_loop_init(&w->loop);
    if (rc < 0)
        goto fail_fds;
    w->loop.owner = w;
    w->loop.on_stop = on_stop;
    w->loop.on_notify = on_notify;
    const struct fy_config *cfg = &conf->settings;
    w->cfg = cfg;
    w->id = id;
    w->rng = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)(id + 1) << 32) ^ fy_conf_now_ms() ^
             (uint64_t)(uintptr_t)w;
    w->req_limits = (struct fy_h1r_limits){
        .max_line = cfg->max_request_line,
        .max_head = cfg->max_header_size,
        .max_fields = cfg->max_headers,
        .max_body = reader_body_limit(conf),
    };
    /* A client's input buffer holds a whole head (plus the first body bytes): its size is a
     * buffer class so keep-alive requests recycle it instead of malloc'ing one each. */
    w->client_in_size =
        cfg->max_header_size + 1024 > FY_BUF_SIZE ? cfg->max_header_size + 1024 : FY_BUF_SIZE;
    fy_buf_add_class(w->client_in_size, 4096);
    /* Upstream heads get the buffer size as their limit; a larger one is a 502. */
    w->resp_limits = (struct fy_h1r_limits){
        .max_line = FY_BUF_SIZE, .max_head = FY_BUF_SIZE - 1, .max_fields = 1000, .max_body = 0};
    fy_timer_init(&w->drain_timer, on_drain_timeout);
    /* The forward proxy's resolver and destination pools (cheap until used). A resolver that
     * cannot start is reported when a forward request needs it. */
    char why[200];
    w->dns = fy_dns_new(&w->loop, &cfg->resolver, why, sizeof(why));
    if (!w->dns)
        fy_debug("worker %d: no resolver for forward proxying: %s", id, why);
    w->fwd_pools =
        fy_fwd_pools_new(&w->loop, &w->resp_limits, cfg->pool_max_idle, cfg->pool_idle_timeout);
    w->auth_cache =
        fy_auth_cache_new(FY_AUTH_CACHE_ENTRIES, FY_AUTH_CACHE_TTL_MS, loop_now_ms, &w->loop);
    if (!w->fwd_pools || !w->auth_cache) {
        rc = -ENOMEM;
        goto fail_loop;
    }
    w->gen = wgen_create(w, conf);
    if (!w->gen) {
        rc = -ENOMEM;
        goto fail_loop;
    }
    if (fy_accesslog_init(&w->alog, &w->loop, alog_fd, cfg->access_log_format, cfg->verbose) < 0) {
        rc = -ENOMEM;
        goto fail_gen;
    }
    w->lsn = calloc(nfds ? nfds : 1, sizeof(*w->lsn));
    if (!w->lsn) {
        rc = -ENOMEM;
        goto fail_alog;
    }
    uint32_t k = 0;
    for (uint32_t li = 0; li < conf->nlisteners; li++) {
        for (uint32_t a = 0; a < conf->listeners[li].naddrs && k < nfds; a++, k++) {
            opened = k + 1; /* lsn_open owns fds[k] from here, also on failure */
            struct fy_wlistener *l = lsn_open(w, fds[k], &conf->listeners[li].addrs[a], li, &rc);
            if (!l)
                goto fail_lsn;
            w->lsn[w->nlsn++] = l;
        }
    }
    close_fds(fds, k, nfds); /* more fds than addresses: not ours to keep */
    return 0;

fail_lsn:
    for (uint32_t i = 0; i < w->nlsn; i++)
        lsn_free(w->lsn[i]);
    free(w->lsn);
    w->lsn = NULL;
    w->nlsn = 0;
fail_alog:
    fy_accesslog_destroy(&w->alog);
fail_gen:
    wgen_free(w->gen);
    w->gen = NULL;
    fy_pools_free(&w->pools);
fail_loop:
    forward_state_free(w);
    fy_loop_destroy(&w->loop);
fail_fds:
    close_fds(fds, opened, nfds);
    return rc;
}

void *fy_worker_main(void *arg)
{
    struct fy_worker *w = arg;
    for (uint32_t i = 0; i < w->nlsn; i++)
        fy_loop_queue(&w->loop, &w->lsn[i]->accept_task);
    /* One loop checks every server: a probe per server and interval whatever the worker count. */
    if (w->id == 0)
        w->health = fy_health_start(&w->loop, w->gen->conf);
    fy_loop_run(&w->loop);
    fy_health_stop(w->health); /* its sockets and timers are on the loop */
    w->health = NULL;
    /* The loop has ended (drained, drain timeout, or a loop failure). Killing a client detaches
     * its session, which finishes and frees itself in its own task: run those tasks here, since
     * the loop no longer does, before the pool and the free lists go. */
    if (w->nclients)
        fy_warn("stopping now: closing %u connection(s) still in progress", w->nclients);
    fy_handshake_close_all(w);
    while (w->clients)
        fy_client_kill(w->clients);
    fy_loop_run_pending(&w->loop);
    FY_ASSERT(w->nclients == 0 && w->nsessions == 0);
    FY_ASSERT(!w->retired); /* every session ended, so did their generations */
    fy_pools_free(&w->pools);
    forward_state_free(w);
    fy_accesslog_flush(&w->alog);
    /* The free lists are per thread: give their memory back before the thread ends. */
    fy_buf_freelist_release();
    fy_client_io_freelist_release();
    fy_session_freelist_release();
    fy_pipe_pool_release();
    fy_router_thread_release();
    __atomic_store_n(&w->exited, true, __ATOMIC_RELEASE);
    poke_main(w);
    return NULL;
}

void fy_worker_destroy(struct fy_worker *w)
{
    fy_accesslog_destroy(&w->alog);
    for (uint32_t i = 0; i < w->nlsn; i++)
        lsn_free(w->lsn[i]);
    free(w->lsn);
    w->lsn = NULL;
    w->nlsn = 0;
    while (w->gone_lsn) {
        struct fy_wlistener *l = w->gone_lsn;
        w->gone_lsn = l->next_gone;
        lsn_free(l);
    }
    struct fy_worker_reload *r = w->pending_reload;
    if (r) /* handed over but never adopted */
        reload_free(r);
    fy_pools_free(&w->pools); /* a thread that never ran still has its pools */
    forward_state_free(w);
    wgen_free(w->gen);
    w->gen = NULL;
    fy_loop_destroy(&w->loop);
}
