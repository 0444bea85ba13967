/*
 * A DNS server for unit tests, on 127.0.0.1 (UDP and TCP on one port, no network): A and AAAA
 * answers from a table the test changes at run time, NXDOMAIN for an unknown name, a TTL per
 * name, a silent mode (every query dropped: a server that never answers) and one name whose
 * queries are dropped. It counts the
 * queries it gets. One thread; start it in a suite's .init and stop it in .fini. Shared by
 * test_resolver.c and test_dns.c.
 *
 * A TCP answer goes out as one write of its length and body, and the A and AAAA answers of one
 * name usually arrive together: a client reading a TCP socket once per readiness edge is left
 * with unread answers (what test_dns checks its edge-triggered reading against).
 */
#ifndef FY_TEST_DNS_RESPONDER_H
#define FY_TEST_DNS_RESPONDER_H

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_NAMES 16
#define MAX_RECS 4
#define MAX_TCP 8

struct record {
    char name[64];
    int nv4, nv6;
    uint32_t ttl;
    struct in_addr v4[MAX_RECS];
    struct in6_addr v6[MAX_RECS];
};

struct tcp_client {
    int fd;
    size_t len;
    unsigned char buf[600];
};

static struct {
    int fd, tcp_fd;
    uint16_t port;
    pthread_t thread;
    pthread_mutex_t mu;
    struct record names[MAX_NAMES];
    int nnames;
    char drop[64]; /* queries for this name get no answer */
    struct tcp_client tcp[MAX_TCP];
    atomic_bool silent; /* drop every query: a server that never answers */
    atomic_bool stop;
    atomic_int queries;     /* every query, UDP and TCP */
    atomic_int tcp_queries; /* those that came over TCP */
    char servers[32];       /* "127.0.0.1:PORT" */
} D = {.mu = PTHREAD_MUTEX_INITIALIZER};

static struct record *dns_record(const char *name)
{
    for (int i = 0; i < D.nnames; i++)
        if (!strcasecmp(D.names[i].name, name))
            return &D.names[i];
    return NULL;
}

/* Sets (or, with no address, clears to "exists but has no address") name's records; TTL 0. */
static inline void dns_set(const char *name, const char *a1, const char *a2, const char *a3)
{
    pthread_mutex_lock(&D.mu);
    struct record *r = dns_record(name);
    if (!r) {
        cr_assert_lt(D.nnames, MAX_NAMES);
        r = &D.names[D.nnames++];
        snprintf(r->name, sizeof(r->name), "%s", name);
    }
    r->nv4 = r->nv6 = 0;
    r->ttl = 0;
    const char *as[] = {a1, a2, a3};
    for (int i = 0; i < 3; i++) {
        if (!as[i])
            continue;
        if (strchr(as[i], ':'))
            cr_assert_eq(inet_pton(AF_INET6, as[i], &r->v6[r->nv6++]), 1);
        else
            cr_assert_eq(inet_pton(AF_INET, as[i], &r->v4[r->nv4++]), 1);
    }
    pthread_mutex_unlock(&D.mu);
}

/* Queries for name (NULL: none) are dropped from now on. */
static inline void dns_drop(const char *name)
{
    pthread_mutex_lock(&D.mu);
    snprintf(D.drop, sizeof(D.drop), "%s", name ? name : "");
    pthread_mutex_unlock(&D.mu);
}

/* The TTL of every record of name (set with dns_set first). */
static inline void dns_set_ttl(const char *name, uint32_t ttl)
{
    pthread_mutex_lock(&D.mu);
    struct record *r = dns_record(name);
    cr_assert_not_null(r);
    r->ttl = ttl;
    pthread_mutex_unlock(&D.mu);
}

static void put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

/* One answer to one query (RFC 1035 4.1): the question copied back, then the records; an
 * unknown name is NXDOMAIN. Returns the length, or 0 to drop a malformed query. */
static size_t answer(const unsigned char *q, size_t n, unsigned char *out)
{
    if (n < 12 || (q[2] & 0x80) || q[4] != 0 || q[5] != 1)
        return 0;
    char name[256];
    size_t nl = 0, p = 12;
    while (p < n && q[p]) {
        size_t len = q[p++];
        if (len > 63 || p + len > n || nl + len + 2 > sizeof(name))
            return 0;
        if (nl)
            name[nl++] = '.';
        memcpy(name + nl, q + p, len);
        nl += len;
        p += len;
    }
    name[nl] = 0;
    if (p + 5 > n)
        return 0;
    size_t qend = p + 5; /* the root label, QTYPE, QCLASS */
    unsigned qtype = (unsigned)q[p + 1] << 8 | q[p + 2];
    memcpy(out, q, qend);
    out[2] = 0x80 | (q[2] & 0x01); /* QR, RD copied */
    out[3] = 0x80;                 /* RA, NOERROR */
    memset(out + 6, 0, 6);
    size_t len = qend;
    pthread_mutex_lock(&D.mu);
    if (!strcasecmp(name, D.drop)) {
        pthread_mutex_unlock(&D.mu);
        return 0;
    }
    const struct record *r = dns_record(name);
    unsigned an = 0;
    if (!r) {
        out[3] |= 3; /* NXDOMAIN */
    } else {
        int count = qtype == 1 ? r->nv4 : qtype == 28 ? r->nv6 : 0;
        for (int i = 0; i < count; i++, an++) {
            unsigned char *rr = out + len;
            put16(rr, 0xc00c); /* the name: a pointer to the question's */
            put16(rr + 2, qtype);
            put16(rr + 4, 1);
            put16(rr + 6, r->ttl >> 16);
            put16(rr + 8, r->ttl & 0xffff);
            size_t dl = qtype == 1 ? 4 : 16;
            put16(rr + 10, (unsigned)dl);
            memcpy(rr + 12, qtype == 1 ? (const void *)&r->v4[i] : (const void *)&r->v6[i], dl);
            len += 12 + dl;
        }
    }
    pthread_mutex_unlock(&D.mu);
    put16(out + 6, an);
    return len;
}

static void tcp_close(struct tcp_client *c)
{
    close(c->fd);
    c->fd = -1;
    c->len = 0;
}

/* Answers every whole query in c's buffer; closes c on EOF or a bad length. */
static void tcp_read(struct tcp_client *c)
{
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, MSG_DONTWAIT);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN)
            return;
        tcp_close(c);
        return;
    }
    c->len += (size_t)n;
    for (;;) {
        if (c->len < 2)
            return;
        size_t ql = (size_t)c->buf[0] << 8 | c->buf[1];
        if (ql == 0 || ql + 2 > sizeof(c->buf)) {
            tcp_close(c);
            return;
        }
        if (c->len < ql + 2)
            return;
        atomic_fetch_add(&D.queries, 1);
        atomic_fetch_add(&D.tcp_queries, 1);
        unsigned char out[2 + 1024];
        size_t len = atomic_load(&D.silent) ? 0 : answer(c->buf + 2, ql, out + 2);
        if (len) {
            put16(out, (unsigned)len);
            ssize_t w = send(c->fd, out, len + 2, MSG_NOSIGNAL);
            (void)w;
        }
        memmove(c->buf, c->buf + ql + 2, c->len - ql - 2);
        c->len -= ql + 2;
    }
}

static void *dns_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&D.stop)) {
        struct pollfd pfd[2 + MAX_TCP];
        pfd[0] = (struct pollfd){.fd = D.fd, .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = D.tcp_fd, .events = POLLIN};
        for (int i = 0; i < MAX_TCP; i++)
            pfd[2 + i] = (struct pollfd){.fd = D.tcp[i].fd, .events = POLLIN};
        if (poll(pfd, 2 + MAX_TCP, 20) <= 0)
            continue;
        if (pfd[1].revents & POLLIN) {
            int fd = accept4(D.tcp_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            int i = 0;
            while (fd >= 0 && i < MAX_TCP && D.tcp[i].fd >= 0)
                i++;
            /* Answers go out at once, not after the client's delayed ACK of the previous one. */
            int one = 1;
            if (fd >= 0)
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            if (fd >= 0 && i < MAX_TCP)
                D.tcp[i].fd = fd;
            else if (fd >= 0)
                close(fd);
        }
        for (int i = 0; i < MAX_TCP; i++)
            if (D.tcp[i].fd >= 0 && pfd[2 + i].revents)
                tcp_read(&D.tcp[i]);
        if (!(pfd[0].revents & POLLIN))
            continue;
        unsigned char q[512], out[1024];
        struct sockaddr_storage from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(D.fd, q, sizeof(q), 0, (struct sockaddr *)&from, &fl);
        if (n <= 0)
            continue;
        atomic_fetch_add(&D.queries, 1);
        if (atomic_load(&D.silent))
            continue;
        size_t len = answer(q, (size_t)n, out);
        if (len)
            sendto(D.fd, out, len, 0, (struct sockaddr *)&from, fl);
    }
    return NULL;
}

/* Binds UDP and TCP on one free port of 127.0.0.1 and starts the thread. */
static inline void dns_start(void)
{
    for (int attempt = 0;; attempt++) {
        cr_assert_lt(attempt, 20, "no port free for UDP and TCP at once");
        D.fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(D.fd, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        cr_assert_eq(bind(D.fd, (struct sockaddr *)&a, sizeof(a)), 0);
        socklen_t al = sizeof(a);
        getsockname(D.fd, (struct sockaddr *)&a, &al);
        D.tcp_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(D.tcp_fd, 0);
        if (bind(D.tcp_fd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(D.tcp_fd, 8) == 0) {
            D.port = ntohs(a.sin_port);
            break;
        }
        close(D.tcp_fd);
        close(D.fd);
    }
    snprintf(D.servers, sizeof(D.servers), "127.0.0.1:%u", D.port);
    D.nnames = 0;
    D.drop[0] = 0;
    for (int i = 0; i < MAX_TCP; i++)
        D.tcp[i] = (struct tcp_client){.fd = -1};
    atomic_store(&D.silent, false);
    atomic_store(&D.stop, false);
    atomic_store(&D.queries, 0);
    atomic_store(&D.tcp_queries, 0);
    cr_assert_eq(pthread_create(&D.thread, NULL, dns_main, NULL), 0);
}

static inline void dns_stop(void)
{
    atomic_store(&D.stop, true);
    pthread_join(D.thread, NULL);
    for (int i = 0; i < MAX_TCP; i++)
        if (D.tcp[i].fd >= 0)
            tcp_close(&D.tcp[i]);
    close(D.tcp_fd);
    close(D.fd);
}

#endif
