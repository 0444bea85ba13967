/*
 * The workers' resolver (see dns.h): one c-ares channel driven by the worker's edge-triggered
 * loop, and the cache in front of it.
 *
 * c-ares tells which sockets it uses through its socket state callback: each is registered with
 * the loop for reading and writing, edge-triggered, and removed when c-ares closes it. Event
 * callbacks only mark the socket and queue the resolver's task; the task hands the marks to
 * ares_process_fd(). Edge triggering means an edge is never repeated, and c-ares reads a TCP
 * socket once per call (1.18 reads the length, then the body, in separate calls), so the task
 * keeps calling it for a socket until the socket has nothing more to read. Likewise c-ares only
 * writes a TCP query when told the socket is writable: a socket that asks to write gets one try
 * at once, since its writable edge may be long gone. The loop timer is armed for the earliest of
 * c-ares' own timeouts and the lookups' deadlines after every call into c-ares, so every wait
 * has a timer.
 *
 * A cache entry is in flight (its query running, its waiters listed, off the LRU list, never
 * evicted) or answered (on the LRU list until it is evicted or asked again after expiring). A
 * query that passes its deadline is given up: its waiters get the timeout now, and c-ares' late
 * callback only frees it. Addresses are handed out in reference-counted arrays, one per port
 * asked, so a cache hit costs no allocation and an answer outlives the entry it came from.
 */
#include "net/dns.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/time.h>

#include "core/assert.h"
#include "core/log.h"
#include "core/macros.h"
#include "net/resolver_priv.h"

#define TTL_MIN_MS 1000
#define TTL_MAX_MS 300000
#define NEGATIVE_MS 5000
#define PORTS_MAX 4     /* per-port answers an entry keeps; older ones live on in their reqs */
#define DRAIN_ROUNDS 64 /* reads of one socket per task run before others get a turn */

/* Tests set ARES_FLAG_USEVC to drive the TCP path. */
static int extra_ares_flags;

struct fy_dns_answer {
    uint32_t refs;
    uint32_t n;
    uint16_t port;
    struct fy_dns_answer *next; /* the entry's answers (the entry holds one reference each) */
    struct fy_addr a[];
};

struct query;

struct fy_dns_entry {
    struct fy_dns_entry *hnext;         /* hash bucket */
    struct fy_dns_entry *lprev, *lnext; /* LRU list, most recent first; unlinked while in flight */
    struct query *q;                    /* the query in flight, or NULL */
    struct fy_dns_req *waiters;
    uint64_t expires;     /* loop ms */
    struct fy_addr *base; /* the answer, port 0; NULL for a failure */
    uint32_t nbase;
    struct fy_dns_answer *ports;
    int status;      /* 0, or the failure's -errno */
    int ares_status; /* a failure's c-ares status, for its message */
    uint32_t hash;
    char name[]; /* lower case */
};

struct query {
    struct fy_dns *d;
    struct fy_dns_entry *e;    /* NULL once given up (deadline passed, resolver freed) */
    struct query *prev, *next; /* d's live queries, oldest (earliest deadline) first */
    uint64_t deadline;
};

struct sock {
    struct fy_pollable p;
    struct fy_dns *d;
    struct sock *next;
    int fd;
    bool want_write; /* c-ares has data queued for it (TCP) */
    bool rd, wr;     /* readiness not yet handed to c-ares */
};

struct fy_dns {
    struct fy_loop *loop;
    ares_channel ch;
    struct fy_task task;   /* runs c-ares: socket readiness, timeouts, deadlines */
    struct fy_timer timer; /* the earliest c-ares timeout or query deadline */
    bool timer_due;
    bool closing;
    struct sock *socks;
    struct fy_dns_entry **buckets;
    uint32_t nbuckets; /* a power of two */
    struct fy_dns_entry *lru_head, *lru_tail;
    uint32_t nentries, cache_max;
    struct query *qhead, *qtail;
    uint32_t nqueries; /* every query c-ares still runs, given-up ones included */
    uint32_t inflight_max;
    struct fy_dns_req *inline_req; /* the lookup starting a query: answered in place, no wake */
    uint64_t timeout_ms;
    char asked[128]; /* who is asked, for messages */
};

/* ---- answers ---- */

static struct fy_dns_answer *answer_new(const struct fy_addr *a, uint32_t n, uint16_t port)
{
    struct fy_dns_answer *ans = malloc(sizeof(*ans) + (size_t)n * sizeof(ans->a[0]));
    if (!ans)
        return NULL;
    ans->refs = 1;
    ans->n = n;
    ans->port = port;
    ans->next = NULL;
    memcpy(ans->a, a, (size_t)n * sizeof(ans->a[0]));
    for (uint32_t i = 0; i < n; i++)
        fy_resolver_set_port(&ans->a[i], port);
    return ans;
}

static void answer_put(struct fy_dns_answer *ans)
{
    FY_ASSERT(ans->refs > 0);
    if (--ans->refs == 0)
        free(ans);
}

/* The entry's answer with `port`, made on first use; NULL when memory runs out. */
static struct fy_dns_answer *answer_for_port(struct fy_dns_entry *e, uint16_t port)
{
    struct fy_dns_answer **pp = &e->ports;
    unsigned n = 0;
    for (; *pp; pp = &(*pp)->next, n++)
        if ((*pp)->port == port)
            return *pp;
    struct fy_dns_answer *ans = answer_new(e->base, e->nbase, port);
    if (!ans)
        return NULL;
    ans->next = e->ports;
    e->ports = ans;
    if (n + 1 > PORTS_MAX) {
        /* A name asked with many ports keeps the most recent few: memory stays bounded. */
        struct fy_dns_answer *p = e->ports;
        while (p->next->next)
            p = p->next;
        answer_put(p->next);
        p->next = NULL;
    }
    return ans;
}

static void entry_drop_answer(struct fy_dns_entry *e)
{
    while (e->ports) {
        struct fy_dns_answer *next = e->ports->next;
        answer_put(e->ports);
        e->ports = next;
    }
    free(e->base);
    e->base = NULL;
    e->nbase = 0;
}

/* At most FY_DNS_MAX_ADDRS of a normalized list, in place: half for each family when both answer
 * (a dual-stack name keeps its IPv6 fallback), the rest to whichever has more. */
static uint32_t cap_addrs(struct fy_addr *a, uint32_t n)
{
    if (n <= FY_DNS_MAX_ADDRS)
        return n;
    uint32_t n4 = 0;
    while (n4 < n && a[n4].ss.ss_family == AF_INET)
        n4++;
    uint32_t n6 = n - n4, half = FY_DNS_MAX_ADDRS / 2;
    uint32_t take4 = n4 < half ? n4 : n6 < half ? FY_DNS_MAX_ADDRS - n6 : half;
    if (take4 > n4)
        take4 = n4;
    uint32_t take6 = FY_DNS_MAX_ADDRS - take4;
    if (take6 > n6)
        take6 = n6;
    memmove(&a[take4], &a[n4], take6 * sizeof(*a));
    return take4 + take6;
}

/* ---- requests ---- */

/* Answers req with a failure; returns -1. */
static int req_fail(struct fy_dns_req *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int req_fail(struct fy_dns_req *req, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(req->err, sizeof(req->err), fmt, ap);
    va_end(ap);
    req->status = status;
    req->addrs = NULL;
    req->naddrs = 0;
    return -1;
}

/* Answers req with ans, taking over one reference the caller had. */
static void req_take(struct fy_dns_req *req, struct fy_dns_answer *ans)
{
    req->held = ans;
    req->addrs = ans->a;
    req->naddrs = ans->n;
    req->status = 0;
    req->err[0] = 0;
}

/* Answers req from an answered entry. */
static void req_fill(struct fy_dns *d, struct fy_dns_req *req, struct fy_dns_entry *e)
{
    if (e->status < 0) {
        char tmp[64];
        req_fail(req, e->status, "%s (asked %s)",
                 fy_resolver_why(e->ares_status, d->timeout_ms, tmp, sizeof(tmp)), d->asked);
        return;
    }
    struct fy_dns_answer *ans = answer_for_port(e, req->port);
    if (!ans) {
        req_fail(req, -ENOMEM, "out of memory");
        return;
    }
    ans->refs++;
    req_take(req, ans);
}

static void waiter_add(struct fy_dns_entry *e, struct fy_dns_req *req)
{
    req->entry = e;
    req->prev = NULL;
    req->next = e->waiters;
    if (e->waiters)
        e->waiters->prev = req;
    e->waiters = req;
}

static void waiter_del(struct fy_dns_req *req)
{
    struct fy_dns_entry *e = req->entry;
    if (req->prev)
        req->prev->next = req->next;
    else
        e->waiters = req->next;
    if (req->next)
        req->next->prev = req->prev;
    req->entry = NULL;
    req->prev = req->next = NULL;
}

void fy_dns_req_release(struct fy_dns_req *req)
{
    if (req->entry)
        waiter_del(req);
    if (req->held) {
        answer_put(req->held);
        req->held = NULL;
    }
    req->addrs = NULL;
    req->naddrs = 0;
    req->wake = NULL;
}

/* ---- the cache ---- */

static uint32_t hash_name(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static void lru_unlink(struct fy_dns *d, struct fy_dns_entry *e)
{
    if (e->lprev)
        e->lprev->lnext = e->lnext;
    else if (d->lru_head == e)
        d->lru_head = e->lnext;
    if (e->lnext)
        e->lnext->lprev = e->lprev;
    else if (d->lru_tail == e)
        d->lru_tail = e->lprev;
    e->lprev = e->lnext = NULL;
}

static void lru_push(struct fy_dns *d, struct fy_dns_entry *e)
{
    e->lprev = NULL;
    e->lnext = d->lru_head;
    if (d->lru_head)
        d->lru_head->lprev = e;
    else
        d->lru_tail = e;
    d->lru_head = e;
}

static struct fy_dns_entry *cache_find(struct fy_dns *d, const char *name, size_t n, uint32_t h)
{
    for (struct fy_dns_entry *e = d->buckets[h & (d->nbuckets - 1)]; e; e = e->hnext)
        if (e->hash == h && !memcmp(e->name, name, n) && !e->name[n])
            return e;
    return NULL;
}

static void entry_free(struct fy_dns *d, struct fy_dns_entry *e)
{
    struct fy_dns_entry **pp = &d->buckets[e->hash & (d->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(d, e);
    entry_drop_answer(e);
    d->nentries--;
    free(e);
}

/* A new in-flight entry for name; NULL (with req failed) when the cache holds only names in
 * flight or memory runs out. */
static struct fy_dns_entry *entry_new(struct fy_dns *d, struct fy_dns_req *req, const char *name,
                                      size_t n, uint32_t h)
{
    if (d->nentries >= d->cache_max) {
        if (!d->lru_tail) {
            req_fail(req, -EBUSY, "too many lookups in flight");
            return NULL;
        }
        entry_free(d, d->lru_tail);
    }
    struct fy_dns_entry *e = calloc(1, sizeof(*e) + n + 1);
    if (!e) {
        req_fail(req, -ENOMEM, "out of memory");
        return NULL;
    }
    memcpy(e->name, name, n);
    e->hash = h;
    e->hnext = d->buckets[h & (d->nbuckets - 1)];
    d->buckets[h & (d->nbuckets - 1)] = e;
    d->nentries++;
    return e;
}

static int status_of(int ares_status)
{
    switch (ares_status) {
    case ARES_SUCCESS: /* an answer without one usable address */
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
        return -ENOENT;
    case ARES_ETIMEOUT:
    case ARES_ECANCELLED:
        return -ETIMEDOUT;
    case ARES_ENOMEM:
        return -ENOMEM;
    case ARES_EBADNAME:
        return -EINVAL;
    default:
        return -EIO;
    }
}

/* Ends e's lookup with addrs[0..n) (normalized, port 0, now owned by e) or, when n is 0, with
 * ares_status's failure, and answers every waiter; their wake tasks are queued, except the one
 * of the lookup that started the query if it is still running (it returns 0 instead). */
static void entry_complete(struct fy_dns *d, struct fy_dns_entry *e, int ares_status,
                           struct fy_addr *addrs, uint32_t n, uint64_t ttl_ms)
{
    uint64_t now = d->loop->now_ms;
    e->q = NULL;
    entry_drop_answer(e);
    if (n) {
        e->base = addrs;
        e->nbase = n;
        e->status = 0;
        e->ares_status = ARES_SUCCESS;
        ttl_ms = ttl_ms < TTL_MIN_MS ? TTL_MIN_MS : ttl_ms > TTL_MAX_MS ? TTL_MAX_MS : ttl_ms;
        e->expires = now + ttl_ms;
    } else {
        free(addrs);
        e->status = status_of(ares_status);
        e->ares_status = ares_status;
        /* Out of memory says nothing about the name: the next lookup tries again. */
        e->expires = now + (e->status == -ENOMEM ? 0 : NEGATIVE_MS);
    }
    lru_push(d, e);
    while (e->waiters) {
        struct fy_dns_req *req = e->waiters;
        waiter_del(req);
        req_fill(d, req, e);
        if (req != d->inline_req && req->wake)
            fy_loop_queue(d->loop, req->wake);
    }
}

/* ---- c-ares ---- */

static void query_unlink(struct fy_dns *d, struct query *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else if (d->qhead == q)
        d->qhead = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else if (d->qtail == q)
        d->qtail = q->prev;
    q->prev = q->next = NULL;
}

static void on_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    (void)timeouts;
    struct query *q = arg;
    struct fy_dns *d = q->d;
    struct fy_dns_entry *e = q->e;
    d->nqueries--;
    if (e)
        query_unlink(d, q);
    free(q);
    if (!e || d->closing) {
        if (res)
            ares_freeaddrinfo(res);
        return;
    }
    struct fy_addr *addrs = NULL;
    bool oom = false;
    uint32_t n = 0;
    uint64_t ttl_s = TTL_MAX_MS / 1000;
    if (status == ARES_SUCCESS) {
        n = fy_resolver_from_ares(res, 0, &addrs, &oom);
        n = cap_addrs(addrs, n);
        /* The answer lives as long as its shortest record, CNAMEs on the way included. */
        for (const struct ares_addrinfo_node *p = res ? res->nodes : NULL; p; p = p->ai_next)
            if (p->ai_ttl >= 0 && (uint64_t)p->ai_ttl < ttl_s)
                ttl_s = (uint64_t)p->ai_ttl;
        for (const struct ares_addrinfo_cname *c = res ? res->cnames : NULL; c; c = c->next)
            if (c->ttl >= 0 && (uint64_t)c->ttl < ttl_s)
                ttl_s = (uint64_t)c->ttl;
    }
    if (res)
        ares_freeaddrinfo(res);
    entry_complete(d, e, oom ? ARES_ENOMEM : status, addrs, n, ttl_s * 1000);
}

static struct sock *sock_find(struct fy_dns *d, int fd)
{
    for (struct sock *s = d->socks; s; s = s->next)
        if (s->fd == fd)
            return s;
    return NULL;
}

static void on_sock_event(struct fy_pollable *p, uint32_t events)
{
    struct sock *s = container_of(p, struct sock, p);
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
        s->rd = true;
    if ((events & (EPOLLOUT | EPOLLERR)) && s->want_write)
        s->wr = true;
    if (s->rd || s->wr)
        fy_loop_queue(s->d->loop, &s->d->task);
}

/* c-ares opens, changes or closes a socket; called from inside c-ares, so it only (un)registers
 * and queues the task. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct fy_dns *d = data;
    struct sock *s = sock_find(d, fd);
    if (!readable && !writable) {
        if (!s)
            return;
        fy_loop_del(d->loop, fd); /* before c-ares closes it */
        struct sock **pp = &d->socks;
        while (*pp != s)
            pp = &(*pp)->next;
        *pp = s->next;
        free(s);
        return;
    }
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s) {
            fy_warn("dns: out of memory for a DNS socket; its lookups will time out");
            return;
        }
        s->p.on_event = on_sock_event;
        s->d = d;
        s->fd = fd;
        int rc = fy_loop_add(d->loop, fd, &s->p);
        if (rc < 0) {
            fy_warn("dns: cannot watch a DNS socket: %s; its lookups will time out", strerror(-rc));
            free(s);
            return;
        }
        s->next = d->socks;
        d->socks = s;
    }
    /* A TCP query queued on a socket that is already writable gets no new edge: try it now. */
    if (writable && !s->want_write) {
        s->wr = true;
        fy_loop_queue(d->loop, &d->task);
    }
    s->want_write = writable != 0;
}

static bool fd_readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLERR | POLLHUP));
}

/* Reads fd through c-ares until it has nothing more (edge-triggered: no second edge comes for
 * what is left), or DRAIN_ROUNDS times, then yields and comes back in another task run. */
static void drain(struct fy_dns *d, int fd)
{
    for (int i = 0; i < DRAIN_ROUNDS; i++) {
        ares_process_fd(d->ch, fd, ARES_SOCKET_BAD);
        /* c-ares may have closed it (a socket opened again with the same number is as good). */
        if (!sock_find(d, fd) || !fd_readable(fd))
            return;
    }
    struct sock *s = sock_find(d, fd);
    FY_ASSERT(s);
    s->rd = true;
    fy_loop_queue(d->loop, &d->task);
}

static void arm_timer(struct fy_dns *d)
{
    uint64_t now = d->loop->now_ms, wait = UINT64_MAX;
    struct timeval tv;
    if (ares_timeout(d->ch, NULL, &tv))
        /* Rounded up, and one more for the loop's clock read at its wakeup: waking before
         * c-ares' timer is due would only spin. */
        wait = (uint64_t)tv.tv_sec * 1000 + ((uint64_t)tv.tv_usec + 999) / 1000 + 1;
    if (d->qhead) {
        uint64_t left = d->qhead->deadline > now ? d->qhead->deadline - now : 0;
        if (left < wait)
            wait = left;
    }
    if (wait == UINT64_MAX)
        fy_loop_timer_stop(&d->timer);
    else
        fy_loop_timer_set(d->loop, &d->timer, wait);
}

static void on_timer(struct fy_timer *t)
{
    struct fy_dns *d = container_of(t, struct fy_dns, timer);
    d->timer_due = true;
    fy_loop_queue(d->loop, &d->task);
}

static void run(struct fy_task *t)
{
    struct fy_dns *d = container_of(t, struct fy_dns, task);
    for (;;) {
        /* From the head each time: c-ares may close and open sockets in any call. */
        struct sock *s = d->socks;
        while (s && !s->rd && !s->wr)
            s = s->next;
        if (!s)
            break;
        int fd = s->fd;
        bool rd = s->rd, wr = s->wr;
        s->rd = s->wr = false;
        if (wr)
            ares_process_fd(d->ch, ARES_SOCKET_BAD, fd);
        if (rd && sock_find(d, fd))
            drain(d, fd);
    }
    if (d->timer_due) {
        d->timer_due = false;
        ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* c-ares' timeouts */
    }
    /* Lookups past their deadline are given up: timeout_ms bounds the whole lookup, whatever
     * c-ares' retries, servers and search domains would still take. */
    uint64_t now = d->loop->now_ms;
    while (d->qhead && d->qhead->deadline <= now) {
        struct query *q = d->qhead;
        struct fy_dns_entry *e = q->e;
        query_unlink(d, q);
        q->e = NULL;
        entry_complete(d, e, ARES_ETIMEOUT, NULL, 0, 0);
    }
    arm_timer(d);
}

/* ---- lookups ---- */

/* Checks a host name (not a literal) and lower-cases it into key; returns 0, or -1 with req
 * failed. */
static int check_name(struct fy_dns_req *req, const char *h, size_t n, char *key)
{
    size_t bare = n && h[n - 1] == '.' ? n - 1 : n;
    if (bare == 0)
        return req_fail(req, -EINVAL, "empty host name");
    if (bare > FY_DNS_NAME_MAX)
        return req_fail(req, -EINVAL, "host name longer than %d bytes", FY_DNS_NAME_MAX);
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c == '.') {
            if (label == 0)
                return req_fail(req, -EINVAL, "empty label in the host name");
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
            label++;
        } else if (c >= 'A' && c <= 'Z') {
            c = (unsigned char)(c - 'A' + 'a');
            label++;
        } else {
            return req_fail(req, -EINVAL,
                            "the host name may only hold letters, digits, '-', '_' and dots");
        }
        if (label > 63)
            return req_fail(req, -EINVAL, "a label of the host name is longer than 63 bytes");
        key[i] = (char)c;
    }
    key[n] = 0;
    return 0;
}

/* Literals and localhost: answered without DNS into an answer of the req's own. Returns 1 when
 * host was one (req answered), 0 when it is a name to look up. */
static int answer_without_dns(struct fy_dns_req *req, const char *host, uint32_t n, uint16_t port)
{
    char buf[FY_DNS_NAME_MAX + 8];
    bool bracketed = n >= 2 && host[0] == '[' && host[n - 1] == ']';
    bool numeric = n > 0, colon = false;
    for (uint32_t i = 0; i < n; i++) {
        numeric &= (host[i] >= '0' && host[i] <= '9') || host[i] == '.';
        colon |= host[i] == ':';
    }
    struct fy_addr a[2];
    uint32_t na = 0;
    if (bracketed || colon || numeric) {
        if (bracketed) {
            host++;
            n -= 2;
        }
        if (n == 0 || n >= sizeof(buf) || memchr(host, 0, n)) {
            req_fail(req, -EINVAL, "not a valid IP address");
            return 1;
        }
        memcpy(buf, host, n);
        buf[n] = 0;
        if (fy_resolver_parse_literal(buf, port, &a[0]) < 0 ||
            (bracketed && a[0].ss.ss_family != AF_INET6)) {
            req_fail(req, -EINVAL,
                     bracketed || colon ? "not a valid IPv6 address" : "not a valid IPv4 address");
            return 1;
        }
        na = 1;
    } else if (n == 9 || n == 10) {
        memcpy(buf, host, n);
        buf[n] = 0;
        if (!fy_resolver_is_localhost(buf))
            return 0;
        fy_resolver_localhost(a, port);
        na = 2;
    } else {
        return 0;
    }
    struct fy_dns_answer *ans = answer_new(a, na, port);
    if (!ans) {
        req_fail(req, -ENOMEM, "out of memory");
        return 1;
    }
    req_take(req, ans);
    return 1;
}

/* Starts e's query with req as its first waiter. Returns 0 when it was answered at once
 * (/etc/hosts), FY_AGAIN when it runs, or 0 with req failed. */
static int start_query(struct fy_dns *d, struct fy_dns_entry *e, struct fy_dns_req *req)
{
    struct query *q = calloc(1, sizeof(*q));
    if (!q) {
        req_fail(req, -ENOMEM, "out of memory");
        return 0;
    }
    q->d = d;
    q->e = e;
    q->deadline = d->loop->now_ms + d->timeout_ms;
    q->prev = d->qtail;
    if (d->qtail)
        d->qtail->next = q;
    else
        d->qhead = q;
    d->qtail = q;
    d->nqueries++;
    e->q = q;
    lru_unlink(d, e);
    waiter_add(e, req);
    d->inline_req = req;
    ares_getaddrinfo(d->ch, e->name, NULL, &fy_resolver_hints, on_answer, q);
    d->inline_req = NULL;
    arm_timer(d);
    return req->entry ? FY_AGAIN : 0;
}

int fy_dns_lookup(struct fy_dns *d, struct fy_dns_req *req, const char *host, uint32_t host_len,
                  uint16_t port, struct fy_task *wake)
{
    fy_dns_req_release(req);
    req->port = port;
    req->wake = wake;
    if (answer_without_dns(req, host, host_len, port))
        return 0;
    char key[FY_DNS_NAME_MAX + 2];
    if (host_len > FY_DNS_NAME_MAX + 1) {
        req_fail(req, -EINVAL, "host name longer than %d bytes", FY_DNS_NAME_MAX);
        return 0;
    }
    if (check_name(req, host, host_len, key) < 0)
        return 0;
    uint32_t h = hash_name(key, host_len);
    struct fy_dns_entry *e = cache_find(d, key, host_len, h);
    if (e && e->q) {
        waiter_add(e, req);
        return FY_AGAIN;
    }
    if (e && d->loop->now_ms < e->expires) {
        lru_unlink(d, e);
        lru_push(d, e);
        req_fill(d, req, e);
        return 0;
    }
    if (d->nqueries >= d->inflight_max) {
        req_fail(req, -EBUSY, "too many lookups in flight (at most %u)", d->inflight_max);
        return 0;
    }
    if (!e && !(e = entry_new(d, req, key, host_len, h)))
        return 0;
    return start_query(d, e, req);
}

/* ---- the resolver ---- */

struct fy_dns *fy_dns_new(struct fy_loop *loop, const struct fy_resolver_conf *rc, char *err,
                          size_t errlen)
{
    struct fy_dns *d = calloc(1, sizeof(*d));
    if (!d) {
        fy_errf(err, errlen, "out of memory");
        return NULL;
    }
    d->loop = loop;
    d->timeout_ms = rc->timeout_ms;
    d->cache_max = FY_DNS_CACHE_MAX;
    d->inflight_max = FY_DNS_MAX_INFLIGHT;
    d->nbuckets = FY_DNS_CACHE_MAX;
    d->task.fn = run;
    fy_timer_init(&d->timer, on_timer);
    d->buckets = calloc(d->nbuckets, sizeof(*d->buckets));
    if (!d->buckets) {
        free(d);
        fy_errf(err, errlen, "out of memory");
        return NULL;
    }
    struct ares_options o;
    memset(&o, 0, sizeof(o));
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = d;
    int mask = ARES_OPT_SOCK_STATE_CB;
    if (extra_ares_flags) {
        o.flags = extra_ares_flags;
        mask |= ARES_OPT_FLAGS;
    }
    if (fy_resolver_channel_open(rc, &o, mask, &d->ch, err, errlen) < 0) {
        free(d->buckets);
        free(d);
        return NULL;
    }
    fy_resolver_describe_servers(d->ch, rc->servers != NULL, d->asked, sizeof(d->asked));
    return d;
}

void fy_dns_free(struct fy_dns *d)
{
    if (!d)
        return;
    d->closing = true;
    for (uint32_t i = 0; i < d->nbuckets; i++)
        for (struct fy_dns_entry *e = d->buckets[i]; e; e = e->hnext)
            while (e->waiters)
                waiter_del(e->waiters);
    /* Runs every query's callback (ARES_EDESTRUCTION: each frees its query) and reports each
     * socket closed (each is unregistered). */
    ares_destroy(d->ch);
    FY_ASSERT(d->nqueries == 0);
    while (d->socks) {
        struct sock *s = d->socks;
        d->socks = s->next;
        fy_loop_del(d->loop, s->fd);
        free(s);
    }
    fy_loop_unqueue(d->loop, &d->task);
    fy_loop_timer_del(d->loop, &d->timer);
    for (uint32_t i = 0; i < d->nbuckets; i++)
        while (d->buckets[i])
            entry_free(d, d->buckets[i]);
    free(d->buckets);
    free(d);
}
