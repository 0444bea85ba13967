/*
 * Unit tests for src/net/dns.c, the workers' resolver, against the DNS responder thread of
 * dns_responder.h (UDP and TCP on 127.0.0.1) and a real struct fy_loop run until the lookups'
 * wake tasks have fired: literals and localhost answered at once, names refused at once, the
 * answer's order and ports, cache hits without a query, TTLs clamped and expiry (the cache's
 * clock moved by hand), lookups of one name sharing one query, failures cached, a silent server
 * timed out by the loop timer, requests released or the resolver freed with lookups pending, the
 * LRU bound, the in-flight bound, and TCP answers read until the socket is empty (what
 * edge-triggered epoll needs). dns.c is included to reach its cache and test hooks.
 */
#include "../../src/net/dns.c"

#include <criterion/criterion.h>
#include <time.h>

#include "dns_responder.h"

static struct fy_loop L;
static struct fy_dns *DNS;
static struct fy_resolver_conf RC;
static struct fy_timer guard;
static bool guard_hit;
static int fired, want;

struct lk {
    struct fy_task task;
    struct fy_dns_req req;
    int fired;
};

static void on_wake(struct fy_task *t)
{
    struct lk *l = container_of(t, struct lk, task);
    l->fired++;
    if (++fired >= want)
        fy_loop_quit(&L);
}

static void on_guard(struct fy_timer *t)
{
    (void)t;
    guard_hit = true;
    fy_loop_quit(&L);
}

/* Runs the loop until n wake tasks have run, or ms passed; true when the wakes came first. */
static bool run_until(int n, uint64_t ms)
{
    fired = 0;
    want = n;
    guard_hit = false;
    L.quit = false;
    fy_loop_update_time(&L);
    fy_loop_timer_set(&L, &guard, ms);
    fy_loop_run(&L);
    fy_loop_timer_del(&L, &guard);
    return !guard_hit;
}

static int lookup(struct lk *l, const char *host, uint16_t port)
{
    l->task.fn = on_wake;
    return fy_dns_lookup(DNS, &l->req, host, (uint32_t)strlen(host), port, &l->task);
}

static void start(void)
{
    char err[256];
    DNS = fy_dns_new(&L, &RC, err, sizeof(err));
    cr_assert_not_null(DNS, "%s", err);
}

static void suite_init(void)
{
    cr_assert_eq(fy_loop_init(&L), 0);
    fy_timer_init(&guard, on_guard);
    dns_start();
    RC = (struct fy_resolver_conf){.servers = D.servers, .timeout_ms = 2000};
}

static void suite_fini(void)
{
    fy_dns_free(DNS);
    DNS = NULL;
    fy_loop_destroy(&L);
    dns_stop();
}

TestSuite(dns, .init = suite_init, .fini = suite_fini, .timeout = 30);

static const char *fmt(const struct fy_addr *a)
{
    static char buf[8][64];
    static int k;
    char *b = buf[k++ % 8];
    fy_addr_format((const struct sockaddr *)&a->ss, b, 64);
    return b;
}

static struct fy_dns_entry *entry_of(const char *name)
{
    return cache_find(DNS, name, strlen(name), hash_name(name, strlen(name)));
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Looks host up and expects an answer at once with status st (and err, when not NULL). */
static void expect_now(const char *host, int st, const char *err)
{
    struct lk l = {0};
    cr_assert_eq(lookup(&l, host, 80), 0, "%s answered at once", host);
    cr_assert_eq(l.req.status, st, "%s: status %d: %s", host, l.req.status, l.req.err);
    if (err)
        cr_assert_str_eq(l.req.err, err, "%s", host);
    fy_dns_req_release(&l.req);
}

Test(dns, literals_and_localhost_answered_at_once)
{
    start();
    struct lk a = {0}, b = {0}, c = {0}, d = {0};
    cr_assert_eq(lookup(&a, "10.0.0.1", 80), 0);
    cr_assert_eq(a.req.status, 0);
    cr_assert_eq(a.req.naddrs, 1);
    cr_assert_str_eq(fmt(&a.req.addrs[0]), "10.0.0.1:80");
    cr_assert_eq(lookup(&b, "::1", 443), 0);
    cr_assert_str_eq(fmt(&b.req.addrs[0]), "[::1]:443");
    cr_assert_eq(lookup(&c, "[2001:db8::5]", 8080), 0);
    cr_assert_str_eq(fmt(&c.req.addrs[0]), "[2001:db8::5]:8080");
    cr_assert_eq(lookup(&d, "LocalHost", 9000), 0);
    cr_assert_eq(d.req.naddrs, 2);
    cr_assert_str_eq(fmt(&d.req.addrs[0]), "127.0.0.1:9000", "IPv4 first");
    cr_assert_str_eq(fmt(&d.req.addrs[1]), "[::1]:9000");
    /* A req is reused: its previous answer is released by the next lookup. */
    cr_assert_eq(lookup(&d, "localhost.", 1), 0);
    cr_assert_str_eq(fmt(&d.req.addrs[0]), "127.0.0.1:1");
    expect_now("[10.0.0.1]", -EINVAL, "not a valid IPv6 address");
    expect_now("1.2.3.999", -EINVAL, "not a valid IPv4 address");
    expect_now("::zz", -EINVAL, "not a valid IPv6 address");
    expect_now("[]", -EINVAL, "not a valid IP address");
    cr_assert_eq(atomic_load(&D.queries), 0, "no DNS query");
    cr_assert_null(L.rq_head, "no wake queued");
    cr_assert_eq(DNS->nentries, 0, "literals are not cached");
    fy_dns_req_release(&a.req);
    fy_dns_req_release(&b.req);
    fy_dns_req_release(&c.req);
    fy_dns_req_release(&d.req);
    fy_dns_req_release(&d.req); /* idempotent */
    struct fy_dns_req zero = {0};
    fy_dns_req_release(&zero);
}

Test(dns, bad_names_refused_at_once)
{
    start();
    char name[300];
    memset(name, 'a', sizeof(name));
    for (int i = 63; i < 254; i += 64)
        name[i] = '.';
    name[254] = 0; /* 254 bytes */
    expect_now(name, -EINVAL, "host name longer than 253 bytes");
    expect_now("", -EINVAL, "empty host name");
    expect_now("a..b", -EINVAL, "empty label in the host name");
    expect_now(".a", -EINVAL, "empty label in the host name");
    expect_now("bad name.test", -EINVAL,
               "the host name may only hold letters, digits, '-', '_' and dots");
    char label[80];
    memset(label, 'x', 64);
    strcpy(label + 64, ".test");
    expect_now(label, -EINVAL, "a label of the host name is longer than 63 bytes");
    struct lk l = {0};
    cr_assert_eq(fy_dns_lookup(DNS, &l.req, "a\0b", 3, 80, &l.task), 0);
    cr_assert_eq(l.req.status, -EINVAL, "a NUL inside the name");
    cr_assert_eq(atomic_load(&D.queries), 0);
    /* 253 bytes (a trailing dot besides) is a name: it is asked. */
    name[253] = '.';
    l.task.fn = on_wake;
    cr_assert_eq(fy_dns_lookup(DNS, &l.req, name, 254, 80, &l.task), FY_AGAIN);
    cr_assert(run_until(1, 5000));
    cr_assert_eq(l.req.status, -ENOENT, "%s", l.req.err);
    fy_dns_req_release(&l.req);
}

Test(dns, name_answered_asynchronously_in_order_then_served_from_the_cache)
{
    start();
    dns_set("multi.test", "10.0.0.2", "::2", "10.0.0.1");
    struct lk a = {0}, b = {0}, c = {0};
    cr_assert_eq(lookup(&a, "multi.test", 3000), FY_AGAIN);
    cr_assert_null(L.rq_head, "never called inline");
    cr_assert(run_until(1, 5000), "answered");
    cr_assert_eq(a.fired, 1);
    cr_assert_eq(a.req.status, 0, "%s", a.req.err);
    cr_assert_eq(a.req.naddrs, 3);
    cr_assert_str_eq(fmt(&a.req.addrs[0]), "10.0.0.1:3000");
    cr_assert_str_eq(fmt(&a.req.addrs[1]), "10.0.0.2:3000");
    cr_assert_str_eq(fmt(&a.req.addrs[2]), "[::2]:3000");
    int asked = atomic_load(&D.queries);
    cr_assert_eq(asked, 2, "A and AAAA: %d", asked);

    /* Hits: at once, any case, another port; the same port shares the same addresses. */
    cr_assert_eq(lookup(&b, "MULTI.Test", 443), 0);
    cr_assert_eq(b.req.status, 0);
    cr_assert_eq(b.req.naddrs, 3);
    cr_assert_str_eq(fmt(&b.req.addrs[0]), "10.0.0.1:443");
    cr_assert_str_eq(fmt(&b.req.addrs[2]), "[::2]:443");
    cr_assert_eq(lookup(&c, "multi.test", 3000), 0);
    cr_assert_eq(c.req.addrs, a.req.addrs, "a hit allocates nothing");
    cr_assert_eq(atomic_load(&D.queries), asked, "no new query");
    cr_assert_null(L.rq_head);
    fy_dns_req_release(&a.req);
    fy_dns_req_release(&b.req);
    fy_dns_req_release(&c.req);
}

Test(dns, ttl_clamped_and_an_expired_name_asked_again)
{
    start();
    dns_set("ttl.test", "10.0.0.1", NULL, NULL);
    dns_set_ttl("ttl.test", 120);
    dns_set("zero.test", "10.0.0.2", NULL, NULL); /* TTL 0 */
    dns_set("long.test", "10.0.0.3", NULL, NULL);
    dns_set_ttl("long.test", 100000);
    struct lk a = {0}, b = {0}, c = {0}, d = {0};
    cr_assert_eq(lookup(&a, "ttl.test", 80), FY_AGAIN);
    cr_assert_eq(lookup(&b, "zero.test", 80), FY_AGAIN);
    cr_assert_eq(lookup(&c, "long.test", 80), FY_AGAIN);
    cr_assert(run_until(3, 5000));
    uint64_t now = L.now_ms;
    struct fy_dns_entry *e = entry_of("ttl.test");
    cr_assert_not_null(e);
    cr_assert(e->expires <= now + 120000 && e->expires + 2000 > now + 120000, "TTL 120 s");
    e = entry_of("zero.test");
    cr_assert(e->expires <= now + 1000 && e->expires + 2000 > now + 1000, "at least 1 s");
    e = entry_of("long.test");
    cr_assert(e->expires <= now + 300000 && e->expires + 2000 > now + 300000, "at most 300 s");

    /* The clock passes the TTL: the next lookup asks again and sees the new address, while the
     * request holding the old answer still reads it. */
    int asked = atomic_load(&D.queries);
    dns_set("ttl.test", "10.0.0.9", NULL, NULL);
    entry_of("ttl.test")->expires = L.now_ms;
    cr_assert_eq(lookup(&d, "ttl.test", 80), FY_AGAIN);
    cr_assert(run_until(1, 5000));
    cr_assert_eq(atomic_load(&D.queries), asked + 2);
    cr_assert_str_eq(fmt(&d.req.addrs[0]), "10.0.0.9:80");
    cr_assert_str_eq(fmt(&a.req.addrs[0]), "10.0.0.1:80", "the old answer outlives the refresh");
    fy_dns_req_release(&a.req);
    fy_dns_req_release(&b.req);
    fy_dns_req_release(&c.req);
    fy_dns_req_release(&d.req);
}

Test(dns, concurrent_lookups_share_one_query)
{
    start();
    dns_set("co.test", "10.0.0.7", "::7", NULL);
    struct lk l[3] = {0};
    cr_assert_eq(lookup(&l[0], "co.test", 80), FY_AGAIN);
    cr_assert_eq(lookup(&l[1], "CO.test", 80), FY_AGAIN);
    cr_assert_eq(lookup(&l[2], "co.test", 443), FY_AGAIN);
    cr_assert(run_until(3, 5000));
    cr_assert_eq(atomic_load(&D.queries), 2, "one query (A and AAAA) for three lookups");
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(l[i].fired, 1);
        cr_assert_eq(l[i].req.status, 0, "%s", l[i].req.err);
        cr_assert_eq(l[i].req.naddrs, 2);
    }
    cr_assert_str_eq(fmt(&l[0].req.addrs[0]), "10.0.0.7:80");
    cr_assert_str_eq(fmt(&l[2].req.addrs[1]), "[::7]:443");
    for (int i = 0; i < 3; i++)
        fy_dns_req_release(&l[i].req);
}

Test(dns, no_such_name_is_an_error_and_cached)
{
    start();
    dns_set("empty.test", NULL, NULL, NULL);
    struct lk a = {0}, b = {0};
    cr_assert_eq(lookup(&a, "api.internal", 80), FY_AGAIN);
    cr_assert_eq(lookup(&b, "empty.test", 80), FY_AGAIN);
    cr_assert(run_until(2, 5000));
    char want_err[256];
    snprintf(want_err, sizeof(want_err), "no such name (asked %s)", D.servers);
    cr_assert_eq(a.req.status, -ENOENT);
    cr_assert_str_eq(a.req.err, want_err);
    cr_assert_null(a.req.addrs);
    char want_empty[256];
    snprintf(want_empty, sizeof(want_empty), "the name has no IPv4 or IPv6 address (asked %s)",
             D.servers);
    cr_assert_eq(b.req.status, -ENOENT);
    cr_assert_str_eq(b.req.err, want_empty);

    int asked = atomic_load(&D.queries);
    for (int i = 0; i < 5; i++)
        expect_now("api.internal", -ENOENT, want_err);
    expect_now("empty.test", -ENOENT, want_empty);
    cr_assert_eq(atomic_load(&D.queries), asked, "a flood of lookups costs no query");
    struct fy_dns_entry *e = entry_of("api.internal");
    cr_assert(e->expires <= L.now_ms + 5000 && e->expires + 2000 > L.now_ms + 5000, "5 s");
    fy_dns_req_release(&a.req);
    fy_dns_req_release(&b.req);
}

Test(dns, a_server_that_never_answers_times_out_by_the_loop_timer)
{
    RC.timeout_ms = 200;
    start();
    atomic_store(&D.silent, true);
    struct lk a = {0};
    uint64_t t0 = mono_ms();
    cr_assert_eq(lookup(&a, "app.test", 80), FY_AGAIN);
    cr_assert_neq(DNS->timer.deadline, 0, "a timer for the wait");
    cr_assert(run_until(1, 5000), "the timeout ended the lookup");
    uint64_t took = mono_ms() - t0;
    cr_assert_geq(took, 190, "took %llu ms", (unsigned long long)took);
    cr_assert_lt(took, 1500, "bounded by timeout_ms: took %llu ms", (unsigned long long)took);
    char want_err[256];
    snprintf(want_err, sizeof(want_err), "no answer (timed out after 200ms) (asked %s)", D.servers);
    cr_assert_eq(a.req.status, -ETIMEDOUT);
    cr_assert_str_eq(a.req.err, want_err);
    int asked = atomic_load(&D.queries);
    expect_now("app.test", -ETIMEDOUT, want_err);
    cr_assert_eq(atomic_load(&D.queries), asked, "the timeout is cached too");
    fy_dns_req_release(&a.req);
}

Test(dns, a_request_released_while_pending_is_never_woken)
{
    start();
    dns_set("rel.test", "10.0.0.5", NULL, NULL);
    struct lk a = {0}, b = {0};
    cr_assert_eq(lookup(&a, "rel.test", 80), FY_AGAIN);
    fy_dns_req_release(&a.req);
    fy_dns_req_release(&a.req);
    /* b joins the same query: once b is woken, the answer has been handed out. */
    cr_assert_eq(lookup(&b, "rel.test", 80), FY_AGAIN);
    cr_assert(run_until(1, 5000));
    cr_assert_eq(b.req.status, 0, "%s", b.req.err);
    cr_assert_eq(a.fired, 0, "the released request is not woken");
    cr_assert_null(a.req.addrs);
    cr_assert_eq(atomic_load(&D.queries), 2, "the query went on for b");
    cr_assert_null(L.rq_head);
    fy_dns_req_release(&b.req);
}

Test(dns, free_with_lookups_pending)
{
    start();
    dns_set("held.test", "10.0.0.6", NULL, NULL);
    struct lk held = {0}, a = {0}, b = {0};
    cr_assert_eq(lookup(&held, "held.test", 81), FY_AGAIN);
    cr_assert(run_until(1, 5000));
    atomic_store(&D.silent, true);
    cr_assert_eq(lookup(&a, "a.test", 80), FY_AGAIN);
    cr_assert_eq(lookup(&b, "b.test", 80), FY_AGAIN);
    cr_assert_eq(lookup(&a, "a.test", 80), FY_AGAIN, "a pending req reused");
    fy_dns_free(DNS);
    DNS = NULL;
    cr_assert_null(L.rq_head, "nobody woken");
    cr_assert_str_eq(fmt(&held.req.addrs[0]), "10.0.0.6:81", "answers outlive the resolver");
    fy_dns_req_release(&a.req);
    fy_dns_req_release(&b.req);
    fy_dns_req_release(&held.req);
    cr_assert_eq(a.fired + b.fired, 0);
}

Test(dns, the_cache_is_bounded_least_recently_used_first)
{
    start();
    DNS->cache_max = 3;
    const char *names[] = {"c1.test", "c2.test", "c3.test", "c4.test"};
    for (int i = 0; i < 4; i++)
        dns_set(names[i], i % 2 ? "10.0.1.1" : "10.0.1.2", NULL, NULL);
    struct lk l[4] = {0}, again = {0};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(lookup(&l[i], names[i], 80), FY_AGAIN);
        cr_assert(run_until(1, 5000));
    }
    cr_assert_eq(lookup(&again, "c1.test", 80), 0, "c1 used again: c2 is now the oldest");
    fy_dns_req_release(&again.req);
    cr_assert_eq(lookup(&l[3], "c4.test", 80), FY_AGAIN);
    cr_assert(run_until(1, 5000));
    cr_assert_eq(DNS->nentries, 3);
    cr_assert_null(entry_of("c2.test"), "c2 evicted");
    cr_assert_not_null(entry_of("c1.test"));
    cr_assert_not_null(entry_of("c3.test"));
    cr_assert_not_null(entry_of("c4.test"));
    cr_assert_str_eq(fmt(&l[1].req.addrs[0]), "10.0.1.1:80", "an evicted answer stays held");
    int asked = atomic_load(&D.queries);
    cr_assert_eq(lookup(&again, "c2.test", 80), FY_AGAIN, "asked again");
    cr_assert(run_until(1, 5000));
    cr_assert_eq(atomic_load(&D.queries), asked + 2);
    cr_assert_null(entry_of("c3.test"), "then c3 was the oldest");
    fy_dns_req_release(&again.req);
    for (int i = 0; i < 4; i++)
        fy_dns_req_release(&l[i].req);
}

Test(dns, lookups_in_flight_are_bounded_and_never_evicted)
{
    RC.timeout_ms = 200;
    start();
    atomic_store(&D.silent, true);
    DNS->cache_max = 2;
    struct lk p1 = {0}, p2 = {0}, p3 = {0}, p1b = {0};
    cr_assert_eq(lookup(&p1, "p1.test", 80), FY_AGAIN);
    cr_assert_eq(lookup(&p2, "p2.test", 80), FY_AGAIN);
    cr_assert_eq(lookup(&p3, "p3.test", 80), 0, "the cache holds only names in flight");
    cr_assert_eq(p3.req.status, -EBUSY);
    cr_assert_str_eq(p3.req.err, "too many lookups in flight");
    DNS->cache_max = FY_DNS_CACHE_MAX;
    DNS->inflight_max = 2;
    cr_assert_eq(lookup(&p3, "p3.test", 80), 0);
    cr_assert_eq(p3.req.status, -EBUSY);
    cr_assert_str_eq(p3.req.err, "too many lookups in flight (at most 2)");
    cr_assert_eq(lookup(&p1b, "p1.test", 80), FY_AGAIN, "joining a query in flight is fine");
    cr_assert(run_until(3, 5000));
    cr_assert_eq(p1.req.status, -ETIMEDOUT);
    cr_assert_eq(p1b.req.status, -ETIMEDOUT);
    cr_assert_eq(p2.req.status, -ETIMEDOUT);
    fy_dns_req_release(&p1.req);
    fy_dns_req_release(&p1b.req);
    fy_dns_req_release(&p2.req);
    fy_dns_req_release(&p3.req);
}

Test(dns, many_answers_at_once_over_udp)
{
    start();
    char names[12][16];
    struct lk l[12] = {0};
    for (int i = 0; i < 12; i++) {
        snprintf(names[i], sizeof(names[i]), "u%d.test", i);
        dns_set(names[i], "10.0.2.1", "::1", NULL);
    }
    for (int i = 0; i < 12; i++)
        cr_assert_eq(lookup(&l[i], names[i], 80), FY_AGAIN);
    cr_assert(run_until(12, 5000), "every answer read");
    for (int i = 0; i < 12; i++) {
        cr_assert_eq(l[i].req.status, 0, "%s: %s", names[i], l[i].req.err);
        fy_dns_req_release(&l[i].req);
    }
}

Test(dns, tcp_answers_read_until_the_socket_is_empty)
{
    extra_ares_flags = ARES_FLAG_USEVC;
    start();
    char names[6][16];
    struct lk l[6] = {0};
    for (int i = 0; i < 6; i++) {
        snprintf(names[i], sizeof(names[i]), "t%d.test", i);
        dns_set(names[i], "10.0.3.1", "::3", NULL);
    }
    for (int i = 0; i < 6; i++)
        cr_assert_eq(lookup(&l[i], names[i], 80), FY_AGAIN);
    uint64_t t0 = mono_ms();
    cr_assert(run_until(6, 5000), "every answer read");
    cr_assert_lt(mono_ms() - t0, 1000, "no answer waited for a retry");
    cr_assert_geq(atomic_load(&D.tcp_queries), 12, "over TCP");
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(l[i].req.status, 0, "%s: %s", names[i], l[i].req.err);
        cr_assert_eq(l[i].req.naddrs, 2);
        fy_dns_req_release(&l[i].req);
    }
}

Test(dns, a_tcp_query_queued_on_a_connected_socket_is_sent)
{
    extra_ares_flags = ARES_FLAG_USEVC;
    start();
    /* slow.test keeps the connection open and busy: its query is never answered. */
    dns_drop("slow.test");
    dns_set("t0.test", "10.0.3.1", NULL, NULL);
    dns_set("t1.test", "10.0.3.2", NULL, NULL);
    struct lk slow = {0}, a = {0}, b = {0};
    cr_assert_eq(lookup(&slow, "slow.test", 80), FY_AGAIN);
    cr_assert_eq(lookup(&a, "t0.test", 80), FY_AGAIN);
    cr_assert(run_until(1, 5000));
    cr_assert_eq(a.req.status, 0, "%s", a.req.err);
    /* The socket's writable edge is long gone: the new query must still go out. */
    uint64_t t0 = mono_ms();
    cr_assert_eq(lookup(&b, "t1.test", 80), FY_AGAIN);
    cr_assert(run_until(1, 5000));
    cr_assert_lt(mono_ms() - t0, 300, "sent at once, not at the retry (666 ms)");
    cr_assert_eq(b.req.status, 0, "%s", b.req.err);
    cr_assert_str_eq(fmt(&b.req.addrs[0]), "10.0.3.2:80");
    cr_assert_eq(slow.fired, 0);
    fy_dns_req_release(&slow.req);
    fy_dns_req_release(&a.req);
    fy_dns_req_release(&b.req);
}
