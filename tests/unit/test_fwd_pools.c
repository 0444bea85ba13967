/* Unit tests for src/proxy/fwd_pools.c: one pool per destination address and TLS identity,
 * found again by hashing; bounded by evicting the least recently released pool nobody holds,
 * never a held one. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>

#include "core/loop.h"
#include "proxy/fwd_pools.h"

static struct fy_loop loop;
static struct fy_h1r_limits limits = {.max_line = 8192, .max_head = 16384, .max_fields = 100};

static void init(void)
{
    cr_assert_eq(fy_loop_init(&loop), 0);
}

static void fini(void)
{
    fy_loop_destroy(&loop);
}

TestSuite(fwd_pools, .init = init, .fini = fini);

static struct fy_addr addr(uint32_t ip, uint16_t port)
{
    struct fy_addr a;
    memset(&a, 0, sizeof(a));
    struct sockaddr_in *in = (struct sockaddr_in *)&a.ss;
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = htonl(ip);
    in->sin_port = htons(port);
    a.len = sizeof(*in);
    return a;
}

Test(fwd_pools, same_destination_same_pool)
{
    struct fy_fwd_pools *t = fy_fwd_pools_new(&loop, &limits, 8, 1000);
    cr_assert_not_null(t);
    struct fy_addr a = addr(0x7f000001, 80), b = addr(0x7f000001, 81);
    struct fy_pool_key ka = {.addr = &a}, kb = {.addr = &b};
    struct fy_connpool *p1 = fy_fwd_pools_get(t, &ka);
    struct fy_connpool *p2 = fy_fwd_pools_get(t, &ka);
    struct fy_connpool *p3 = fy_fwd_pools_get(t, &kb);
    cr_assert_eq(p1, p2);
    cr_assert_neq(p1, p3);
    cr_assert_eq(fy_fwd_pools_count(t), 2);
    fy_fwd_pools_release(t, p1);
    fy_fwd_pools_release(t, p2);
    fy_fwd_pools_release(t, p3);
    /* released pools stay (their idle connections are worth keeping) until the bound */
    cr_assert_eq(fy_fwd_pools_get(t, &ka), p1);
    fy_fwd_pools_release(t, p1);
    fy_fwd_pools_free(t);
}

Test(fwd_pools, bounded_without_evicting_held_pools)
{
    struct fy_fwd_pools *t = fy_fwd_pools_new(&loop, &limits, 8, 1000);
    struct fy_addr first = addr(0x0a000001, 443);
    struct fy_pool_key kf = {.addr = &first};
    struct fy_connpool *held = fy_fwd_pools_get(t, &kf); /* held throughout */
    struct fy_addr a1 = addr(0x0a000002, 443);
    struct fy_pool_key k1 = {.addr = &a1};
    struct fy_connpool *oldest = fy_fwd_pools_get(t, &k1);
    fy_fwd_pools_release(t, oldest); /* the least recently released */
    for (uint32_t i = 0; i < 3 * FY_FWD_POOLS_MAX; i++) {
        struct fy_addr a = addr(0x0b000000 + i, 443);
        struct fy_pool_key k = {.addr = &a};
        struct fy_connpool *p = fy_fwd_pools_get(t, &k);
        cr_assert_not_null(p);
        fy_fwd_pools_release(t, p);
        cr_assert_leq(fy_fwd_pools_count(t), FY_FWD_POOLS_MAX);
    }
    /* the held pool survived every eviction: the same object is found again */
    cr_assert_eq(fy_fwd_pools_get(t, &kf), held);
    fy_fwd_pools_release(t, held);
    fy_fwd_pools_release(t, held);
    fy_fwd_pools_free(t);
}
