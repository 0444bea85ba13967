/*
 * c-ares behind fy_resolve() and struct fy_reresolver; see resolver.h. Both drive c-ares the
 * same way: its sockets from ares_getsock(), its timers from ares_timeout(), I/O and timers run
 * by ares_process_fd(). fy_resolve() loops on poll() until its one lookup ends or its deadline
 * passes; the re-resolver hands the same sockets to the caller's poll() and never waits itself.
 * A re-resolution round uses a fresh channel, destroyed when the round ends: no socket stays
 * open between rounds, and a changed /etc/resolv.conf is read again. The address lists, channel
 * settings and error texts are shared with the workers' resolver (net/dns.c) through
 * resolver_priv.h.
 */
#include "net/resolver.h"

#include <arpa/inet.h>
#include <ares.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"
#include "net/resolver_priv.h"

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void fmt_duration(char *out, size_t size, uint64_t ms)
{
    if (ms % 1000 == 0)
        snprintf(out, size, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(out, size, "%llums", (unsigned long long)ms);
}

/* ---- address lists ---- */

/* IPv4 before IPv6, then address bytes, then port: the order every answer is stored in. */
static int cmp_addr(const void *pa, const void *pb)
{
    const struct fy_addr *a = pa, *b = pb;
    int fa = a->ss.ss_family, fb = b->ss.ss_family;
    if (fa != fb)
        return fa == AF_INET ? -1 : fb == AF_INET ? 1 : fa - fb;
    int c = 0;
    if (fa == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        c = memcmp(&x->sin_addr, &y->sin_addr, sizeof(x->sin_addr));
        if (!c)
            c = (int)ntohs(x->sin_port) - (int)ntohs(y->sin_port);
    } else if (fa == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        c = memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
        if (!c)
            c = (int)ntohs(x->sin6_port) - (int)ntohs(y->sin6_port);
        if (!c)
            c = x->sin6_scope_id < y->sin6_scope_id ? -1 : x->sin6_scope_id > y->sin6_scope_id;
    }
    return c;
}

uint32_t fy_resolver_normalize(struct fy_addr *a, uint32_t n)
{
    if (n < 2)
        return n;
    qsort(a, n, sizeof(*a), cmp_addr);
    uint32_t out = 1;
    for (uint32_t i = 1; i < n; i++)
        if (cmp_addr(&a[out - 1], &a[i]))
            a[out++] = a[i];
    return out;
}

bool fy_resolver_same(const struct fy_addr *a, uint32_t na, const struct fy_addr *b, uint32_t nb)
{
    if (na != nb)
        return false;
    if (na == 0)
        return true;
    /* Sorted copies: the callers' lists may be in any order. */
    struct fy_addr *x = malloc(2 * (size_t)na * sizeof(*x));
    if (!x)
        return false; /* reported as a change: a rebuild is the safe side */
    struct fy_addr *y = x + na;
    memcpy(x, a, na * sizeof(*x));
    memcpy(y, b, na * sizeof(*y));
    uint32_t nx = fy_resolver_normalize(x, na), ny = fy_resolver_normalize(y, na);
    bool same = nx == ny;
    for (uint32_t i = 0; same && i < nx; i++)
        same = cmp_addr(&x[i], &y[i]) == 0;
    free(x);
    return same;
}

void fy_resolver_set_port(struct fy_addr *a, uint16_t port)
{
    if (a->ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&a->ss)->sin_port = htons(port);
    else if (a->ss.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons(port);
}

static void store(struct fy_addr *a, const struct sockaddr *sa, size_t len, uint16_t port)
{
    memset(a, 0, sizeof(*a));
    memcpy(&a->ss, sa, len);
    a->len = (socklen_t)len;
    fy_resolver_set_port(a, port);
}

uint32_t fy_resolver_from_ares(const struct ares_addrinfo *res, uint16_t port, struct fy_addr **out,
                               bool *oom)
{
    *out = NULL;
    *oom = false;
    uint32_t n = 0;
    for (const struct ares_addrinfo_node *p = res ? res->nodes : NULL; p; p = p->ai_next)
        n += p->ai_family == AF_INET || p->ai_family == AF_INET6;
    if (n == 0)
        return 0;
    struct fy_addr *a = calloc(n, sizeof(*a));
    if (!a) {
        *oom = true;
        return 0;
    }
    uint32_t k = 0;
    for (const struct ares_addrinfo_node *p = res->nodes; p; p = p->ai_next) {
        size_t len = p->ai_family == AF_INET    ? sizeof(struct sockaddr_in)
                     : p->ai_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                : 0;
        if (len && p->ai_addrlen >= len)
            store(&a[k++], p->ai_addr, len, port);
    }
    *out = a;
    return fy_resolver_normalize(a, k);
}

static void format_list(const struct fy_addr *a, uint32_t n, char *buf, size_t size)
{
    size_t len = 0;
    buf[0] = 0;
    for (uint32_t i = 0; i < n && len + 1 < size; i++) {
        char one[INET6_ADDRSTRLEN + 8];
        fy_addr_format((const struct sockaddr *)&a[i].ss, one, sizeof(one));
        int w = snprintf(buf + len, size - len, "%s%s", i ? ", " : "", one);
        if (w < 0)
            break;
        len += (size_t)w;
    }
    if (len >= size && size > 4)
        memcpy(buf + size - 4, "...", 4);
}

/* ---- names that need no DNS ---- */

const char *fy_resolver_bare_host(const char *host, char *buf, size_t size)
{
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        host++;
        n -= 2;
    }
    if (n == 0 || n >= size)
        return NULL;
    memcpy(buf, host, n);
    buf[n] = 0;
    return buf;
}

/* getaddrinfo with AI_NUMERICHOST parses a literal (and an IPv6 scope) without any lookup. */
int fy_resolver_parse_literal(const char *host, uint16_t port, struct fy_addr *a)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_flags = AI_NUMERICHOST};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return -1;
    int rc = -1;
    if ((res->ai_family == AF_INET || res->ai_family == AF_INET6) &&
        res->ai_addrlen <= sizeof(a->ss)) {
        store(a, res->ai_addr, res->ai_addrlen, port);
        rc = 0;
    }
    freeaddrinfo(res);
    return rc;
}

bool fy_resolver_is_literal(const char *host)
{
    char buf[256];
    struct fy_addr a;
    const char *h = fy_resolver_bare_host(host, buf, sizeof(buf));
    return h && fy_resolver_parse_literal(h, 0, &a) == 0;
}

/* 127.0.0.1, then ::1 (tried after it, as the old getaddrinfo path preferred IPv4). */
bool fy_resolver_is_localhost(const char *h)
{
    return !strcasecmp(h, "localhost") || !strcasecmp(h, "localhost.");
}

void fy_resolver_localhost(struct fy_addr out[2], uint16_t port)
{
    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    store(&out[0], (const struct sockaddr *)&v4, sizeof(v4), port);
    store(&out[1], (const struct sockaddr *)&v6, sizeof(v6), port);
}

static int localhost_addrs(uint16_t port, struct fy_addr **addrs, uint32_t *naddrs)
{
    struct fy_addr *a = calloc(2, sizeof(*a));
    if (!a)
        return -1;
    fy_resolver_localhost(a, port);
    *addrs = a;
    *naddrs = 2;
    return 0;
}

/* ---- channels ---- */

static pthread_once_t library_once = PTHREAD_ONCE_INIT;
static int library_status = ARES_SUCCESS;

/* ares_library_init() is not thread-safe (a plain counter): the main thread and every worker open
 * channels, so it runs once for the process and is never undone (on Linux it holds nothing). */
static void library_init(void)
{
    library_status = ares_library_init(ARES_LIB_INIT_ALL);
}

/* A channel asking rc's servers (or the system's). The per-try timeout is a third of the whole
 * budget: c-ares doubles it on the second try, so two tries end about when rc->timeout_ms does;
 * the callers also cancel at that deadline, whatever c-ares does. */
int fy_resolver_channel_open(const struct fy_resolver_conf *rc, const struct ares_options *extra,
                             int extra_mask, ares_channel *ch, char *err, size_t errlen)
{
    static char hosts_then_dns[] = "fb", dns_only[] = "b";
    uint64_t per_try = rc->timeout_ms / 3;
    if (per_try < 50)
        per_try = 50;
    if (per_try > 60000)
        per_try = 60000;
    struct ares_options o;
    if (extra)
        o = *extra;
    else
        memset(&o, 0, sizeof(o));
    o.timeout = (int)per_try;
    o.tries = 2;
    /* Custom servers replace the system's resolution entirely, /etc/hosts included: what they
     * answer is what ferry uses (and tests see only their test server). */
    o.lookups = rc->servers ? dns_only : hosts_then_dns;
    int mask = extra_mask | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_LOOKUPS;
    pthread_once(&library_once, library_init);
    int st = library_status;
    if (st != ARES_SUCCESS)
        return fy_errf(err, errlen, "cannot start the resolver: %s", ares_strerror(st));
    st = ares_init_options(ch, &o, mask);
    if (st != ARES_SUCCESS)
        return fy_errf(err, errlen, "cannot start the resolver: %s", ares_strerror(st));
    if (rc->servers && (st = ares_set_servers_ports_csv(*ch, rc->servers)) != ARES_SUCCESS) {
        ares_destroy(*ch);
        return fy_errf(err, errlen, "resolvers '%s': %s", rc->servers, ares_strerror(st));
    }
    return 0;
}

static int open_channel(const struct fy_resolver_conf *rc, ares_channel *ch, char *err,
                        size_t errlen)
{
    return fy_resolver_channel_open(rc, NULL, 0, ch, err, errlen);
}

void fy_resolver_describe_servers(ares_channel ch, bool custom, char *buf, size_t size)
{
    size_t len = (size_t)snprintf(buf, size, "%s", custom ? "" : "/etc/hosts, ");
    struct ares_addr_port_node *list = NULL;
    if (ares_get_servers_ports(ch, &list) != ARES_SUCCESS)
        list = NULL;
    bool any = false;
    for (struct ares_addr_port_node *s = list; s && len + 1 < size; s = s->next) {
        char ip[INET6_ADDRSTRLEN];
        if (!inet_ntop(s->family, &s->addr, ip, sizeof(ip)))
            continue;
        int w = snprintf(buf + len, size - len, s->family == AF_INET6 ? "%s[%s]:%d" : "%s%s:%d",
                         any ? ", " : "", ip, s->udp_port ? s->udp_port : 53);
        if (w < 0)
            break;
        len += (size_t)w;
        any = true;
    }
    if (list)
        ares_free_data(list);
    if (!any)
        snprintf(buf, size, "%s", custom ? "no DNS server" : "/etc/hosts, no DNS server");
}

const char *fy_resolver_why(int status, uint64_t timeout_ms, char *buf, size_t size)
{
    char d[32];
    switch (status) {
    case ARES_ENOTFOUND:
        return "no such name";
    case ARES_ENODATA:
    case ARES_SUCCESS: /* an answer without one A or AAAA record */
        return "the name has no IPv4 or IPv6 address";
    case ARES_ETIMEOUT:
    case ARES_ECANCELLED:
        fmt_duration(d, sizeof(d), timeout_ms);
        snprintf(buf, size, "no answer (timed out after %s)", d);
        return buf;
    case ARES_ESERVFAIL:
        return "the DNS server failed (SERVFAIL)";
    case ARES_EREFUSED:
        return "the DNS server refused the query";
    case ARES_ECONNREFUSED:
        return "cannot reach the DNS server (connection refused)";
    case ARES_EBADNAME:
        return "not a valid host name";
    case ARES_ENOMEM:
        return "out of memory";
    default:
        return ares_strerror(status);
    }
}

/* ares_getsock() as pollfds; returns how many (at most max). */
static int channel_pollfds(ares_channel ch, struct pollfd *out, int max)
{
    ares_socket_t socks[ARES_GETSOCK_MAXNUM];
    /* Bits tested unsigned: ARES_GETSOCK_WRITABLE shifts a signed 1 into the sign bit. */
    unsigned bits = (unsigned)ares_getsock(ch, socks, ARES_GETSOCK_MAXNUM);
    int n = 0;
    for (int i = 0; i < ARES_GETSOCK_MAXNUM && n < max; i++) {
        short ev = 0;
        if (bits >> i & 1)
            ev |= POLLIN;
        if (bits >> (i + ARES_GETSOCK_MAXNUM) & 1)
            ev |= POLLOUT;
        if (!ev)
            continue;
        out[n++] = (struct pollfd){.fd = socks[i], .events = ev};
    }
    return n;
}

/* Milliseconds until c-ares' next timer, at most cap_ms (rounded up so poll() does not wake
 * just before it and spin). */
static int channel_wait_ms(ares_channel ch, uint64_t cap_ms)
{
    struct timeval cap = {.tv_sec = (time_t)(cap_ms / 1000),
                          .tv_usec = (suseconds_t)(cap_ms % 1000) * 1000},
                   tv;
    const struct timeval *t = ares_timeout(ch, &cap, &tv);
    uint64_t ms = (uint64_t)t->tv_sec * 1000 + (uint64_t)(t->tv_usec + 999) / 1000;
    return ms > cap_ms ? (int)cap_ms : (int)ms;
}

/* Hands c-ares what poll() saw; with nothing ready, lets it run its timers. */
static void channel_process(ares_channel ch, const struct pollfd *fds, int n)
{
    bool any = false;
    for (int i = 0; i < n; i++) {
        if (!fds[i].revents)
            continue;
        any = true;
        ares_socket_t rd =
            fds[i].revents & (POLLIN | POLLERR | POLLHUP) ? fds[i].fd : ARES_SOCKET_BAD;
        ares_socket_t wr = fds[i].revents & (POLLOUT | POLLERR) ? fds[i].fd : ARES_SOCKET_BAD;
        ares_process_fd(ch, rd, wr);
    }
    if (!any)
        ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

const struct ares_addrinfo_hints fy_resolver_hints = {
    .ai_flags = ARES_AI_NOSORT,
    .ai_family = AF_UNSPEC,
    .ai_socktype = SOCK_STREAM,
};

/* ---- blocking resolution ---- */

struct lookup {
    bool done, oom;
    int status;
    uint16_t port;
    struct fy_addr *addrs;
    uint32_t n;
};

static void lookup_done(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    (void)timeouts;
    struct lookup *lk = arg;
    lk->done = true;
    lk->status = status;
    if (status == ARES_SUCCESS)
        lk->n = fy_resolver_from_ares(res, lk->port, &lk->addrs, &lk->oom);
    if (res)
        ares_freeaddrinfo(res);
}

int fy_resolve(const struct fy_resolver_conf *rc, const char *host, uint16_t port,
               struct fy_addr **addrs, uint32_t *naddrs, char *err, size_t errlen)
{
    *addrs = NULL;
    *naddrs = 0;
    char buf[256];
    const char *h = fy_resolver_bare_host(host, buf, sizeof(buf));
    if (!h)
        return fy_errf(err, errlen, "cannot resolve '%s': %s", host,
                       *host ? "name too long" : "empty name");
    struct fy_addr one;
    if (fy_resolver_parse_literal(h, port, &one) == 0) {
        if (!(*addrs = malloc(sizeof(one))))
            return fy_errf(err, errlen, "out of memory");
        **addrs = one;
        *naddrs = 1;
        return 0;
    }
    if (fy_resolver_is_localhost(h))
        return localhost_addrs(port, addrs, naddrs) < 0 ? fy_errf(err, errlen, "out of memory") : 0;
    ares_channel ch;
    if (open_channel(rc, &ch, err, errlen) < 0)
        return -1;
    struct lookup lk = {.port = port};
    ares_getaddrinfo(ch, h, NULL, &fy_resolver_hints, lookup_done, &lk);
    uint64_t deadline = now_ms() + rc->timeout_ms;
    while (!lk.done) {
        uint64_t now = now_ms();
        if (now >= deadline) {
            ares_cancel(ch); /* calls lookup_done with ARES_ECANCELLED */
            break;
        }
        struct pollfd fds[ARES_GETSOCK_MAXNUM];
        int n = channel_pollfds(ch, fds, ARES_GETSOCK_MAXNUM);
        int rc_poll = poll(fds, (nfds_t)n, channel_wait_ms(ch, deadline - now));
        if (rc_poll < 0 && errno != EINTR) {
            int e = errno;
            ares_cancel(ch);
            ares_destroy(ch);
            free(lk.addrs);
            return fy_errf(err, errlen, "cannot resolve %s: poll: %s", h, strerror(e));
        }
        channel_process(ch, fds, rc_poll > 0 ? n : 0);
    }
    if (lk.status == ARES_SUCCESS && lk.n > 0) {
        ares_destroy(ch);
        *addrs = lk.addrs;
        *naddrs = lk.n;
        return 0;
    }
    char servers[256], tmp[64];
    fy_resolver_describe_servers(ch, rc->servers != NULL, servers, sizeof(servers));
    ares_destroy(ch);
    free(lk.addrs);
    return fy_errf(err, errlen, "cannot resolve %s: %s (asked %s)", h,
                   lk.oom ? "out of memory"
                          : fy_resolver_why(lk.status, rc->timeout_ms, tmp, sizeof(tmp)),
                   servers);
}

/* ---- re-resolution ---- */

struct watch {
    struct fy_reresolver *r;
    char *host;
    uint16_t port;
    struct fy_addr *cur; /* normalized */
    uint32_t ncur;
};

struct fy_reresolver {
    struct fy_resolver_conf rc; /* servers owned */
    struct watch **w;           /* pointers: a callback's arg must survive growing the array */
    size_t nw, cap;
    ares_channel ch;
    bool in_round;
    bool quiet;       /* clearing or freeing: cancelled lookups are not failures */
    unsigned pending; /* lookups of the round still running */
    uint64_t next_round, deadline;
    bool changed;
};

struct fy_reresolver *fy_reresolver_new(const struct fy_resolver_conf *rc, char *err, size_t errlen)
{
    struct fy_reresolver *r = calloc(1, sizeof(*r));
    if (!r) {
        fy_errf(err, errlen, "out of memory");
        return NULL;
    }
    r->rc = *rc;
    r->rc.servers = NULL;
    if (rc->servers && !(r->rc.servers = strdup(rc->servers))) {
        free(r);
        fy_errf(err, errlen, "out of memory");
        return NULL;
    }
    /* Check the server list now, where the caller can still report it. */
    ares_channel probe;
    if (open_channel(&r->rc, &probe, err, errlen) < 0) {
        free(r->rc.servers);
        free(r);
        return NULL;
    }
    ares_destroy(probe);
    r->next_round = now_ms() + r->rc.interval_ms;
    return r;
}

static void end_round(struct fy_reresolver *r)
{
    if (!r->in_round)
        return;
    r->quiet = true;
    ares_destroy(r->ch); /* runs every pending callback (ARES_EDESTRUCTION) */
    r->quiet = false;
    r->in_round = false;
    r->pending = 0;
}

void fy_reresolver_clear(struct fy_reresolver *r)
{
    end_round(r);
    for (size_t i = 0; i < r->nw; i++) {
        free(r->w[i]->host);
        free(r->w[i]->cur);
        free(r->w[i]);
    }
    r->nw = 0;
    r->next_round = now_ms() + r->rc.interval_ms;
}

void fy_reresolver_free(struct fy_reresolver *r)
{
    if (!r)
        return;
    fy_reresolver_clear(r);
    free(r->w);
    free(r->rc.servers);
    free(r);
}

void fy_reresolver_add(struct fy_reresolver *r, const char *host, uint16_t port,
                       const struct fy_addr *current, uint32_t ncurrent)
{
    if (fy_resolver_is_literal(host))
        return;
    for (size_t i = 0; i < r->nw; i++)
        if (r->w[i]->port == port && !strcasecmp(r->w[i]->host, host))
            return;
    if (r->nw == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        struct watch **grown = realloc(r->w, cap * sizeof(*grown));
        if (!grown)
            goto oom;
        r->w = grown;
        r->cap = cap;
    }
    struct watch *w = calloc(1, sizeof(*w));
    if (!w)
        goto oom;
    w->r = r;
    w->port = port;
    w->host = strdup(host);
    w->cur = ncurrent ? malloc(ncurrent * sizeof(*w->cur)) : NULL;
    if (!w->host || (ncurrent && !w->cur)) {
        free(w->host);
        free(w->cur);
        free(w);
        goto oom;
    }
    if (ncurrent)
        memcpy(w->cur, current, ncurrent * sizeof(*w->cur));
    w->ncur = fy_resolver_normalize(w->cur, ncurrent);
    r->w[r->nw++] = w;
    return;
oom:
    fy_warn("re-resolution: out of memory, %s is not watched", host);
}

static void watch_done(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    (void)timeouts;
    struct watch *w = arg;
    struct fy_reresolver *r = w->r;
    r->pending--;
    struct fy_addr *a = NULL;
    bool oom = false;
    uint32_t n = status == ARES_SUCCESS ? fy_resolver_from_ares(res, w->port, &a, &oom) : 0;
    if (res)
        ares_freeaddrinfo(res);
    if (r->quiet && (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED)) {
        free(a);
        return;
    }
    char now[512], tmp[64];
    format_list(w->cur, w->ncur, now, sizeof(now));
    if (n == 0) {
        /* Serving the last good addresses beats serving none: a DNS outage must not take the
         * upstream away. */
        char servers[256];
        fy_resolver_describe_servers(r->ch, r->rc.servers != NULL, servers, sizeof(servers));
        fy_warn("re-resolving %s: %s (asked %s); still using %s", w->host,
                oom ? "out of memory" : fy_resolver_why(status, r->rc.timeout_ms, tmp, sizeof(tmp)),
                servers, w->ncur ? now : "no address");
        free(a);
        return;
    }
    if (fy_resolver_same(a, n, w->cur, w->ncur)) {
        free(a);
        return;
    }
    char next[512];
    format_list(a, n, next, sizeof(next));
    fy_info("%s now resolves to %s (was %s)", w->host, next, w->ncur ? now : "nothing");
    free(w->cur);
    w->cur = a;
    w->ncur = n;
    r->changed = true;
}

static void start_round(struct fy_reresolver *r, uint64_t now)
{
    r->next_round = now + r->rc.interval_ms;
    char err[256];
    if (open_channel(&r->rc, &r->ch, err, sizeof(err)) < 0) {
        fy_warn("re-resolution: %s", err);
        return;
    }
    r->in_round = true;
    r->deadline = now + r->rc.timeout_ms;
    r->pending = (unsigned)r->nw;
    /* A callback may run before ares_getaddrinfo() returns (an /etc/hosts answer): pending
     * counts the whole round first so it cannot reach 0 early. */
    for (size_t i = 0; i < r->nw; i++)
        ares_getaddrinfo(r->ch, r->w[i]->host, NULL, &fy_resolver_hints, watch_done, r->w[i]);
}

int fy_reresolver_pollfds(struct fy_reresolver *r, struct pollfd *out, int max, int *timeout_ms)
{
    if (!r->rc.interval_ms || !r->nw)
        return 0;
    uint64_t now = now_ms();
    uint64_t due = r->in_round ? r->deadline : r->next_round;
    uint64_t wait = due > now ? due - now : 0;
    int n = 0;
    if (r->in_round) {
        n = channel_pollfds(r->ch, out, max);
        wait = (uint64_t)channel_wait_ms(r->ch, wait);
    }
    if (wait > 86400000)
        wait = 86400000; /* poll() takes an int */
    if (*timeout_ms < 0 || (uint64_t)*timeout_ms > wait)
        *timeout_ms = (int)wait;
    return n;
}

bool fy_reresolver_process(struct fy_reresolver *r, const struct pollfd *fds, int n)
{
    if (!r->rc.interval_ms || !r->nw)
        return false;
    uint64_t now = now_ms();
    if (r->in_round) {
        channel_process(r->ch, fds, n);
        if (r->pending && now >= r->deadline)
            ares_cancel(r->ch); /* each lookup still running ends with ARES_ECANCELLED: a warning */
        if (!r->pending)
            end_round(r);
    }
    if (!r->in_round && now >= r->next_round) {
        start_round(r, now);
        if (r->in_round && !r->pending)
            end_round(r);
    }
    bool changed = r->changed;
    r->changed = false;
    return changed;
}
