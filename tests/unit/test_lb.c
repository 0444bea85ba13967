/*
 * Unit tests for src/proxy/lb.c and lb_hash.c: each algorithm's share of picks against the
 * weights, smoothness, rendezvous hashing under removal and unusable servers, the usable rules
 * (down, ejected, max-conns, tried, backups) for every algorithm, and passive ejection with its
 * backoff. Groups are built by hand: no configuration file is involved. Random test keys come
 * from fixed seeds, printed by each test that draws them, so every run is the same.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proxy/lb.h"
#include "proxy/lb_priv.h"

#define MAXS 256
#define NOW 1000000ULL

static const enum fy_balance all_balances[] = {FY_LB_ROUND_ROBIN, FY_LB_LEAST_CONN, FY_LB_P2C,
                                               FY_LB_HASH, FY_LB_STICKY};

/* A group of servers "http://10.0.0.ID:80" and one worker's balancer over it. Not copyable: the
 * servers point back into it. */
struct tg {
    struct fy_group g;
    struct fy_server sv[MAXS];
    struct fy_server_state st[MAXS];
    char url[MAXS][32];
    struct fy_lb lb;
};

/* ids: the servers' URL numbers (NULL: 1..n); weights: NULL for all 1; the last nbackup are
 * backups. */
static void tg_init(struct tg *t, enum fy_balance bal, uint32_t n, const uint32_t *ids,
                    const uint32_t *weights, uint32_t nbackup)
{
    cr_assert(n <= MAXS && nbackup <= n);
    memset(t, 0, sizeof(*t));
    t->g.name = "web";
    t->g.balance = bal;
    t->g.servers = t->sv;
    t->g.nservers = n;
    t->g.nprimary = n - nbackup;
    for (uint32_t i = 0; i < n; i++) {
        snprintf(t->url[i], sizeof(t->url[i]), "http://10.0.0.%u:80", ids ? ids[i] : i + 1);
        t->sv[i].index = i;
        t->sv[i].url = t->url[i];
        t->sv[i].weight = weights ? weights[i] : 1;
        t->sv[i].backup = i >= n - nbackup;
        t->sv[i].group = &t->g;
        t->sv[i].state = &t->st[i];
    }
    bool ok = false;
    t->g.lb = fy_lb_shared_build(&t->g, &ok);
    cr_assert(ok);
    cr_assert_eq(t->g.lb != NULL, bal == FY_LB_HASH);
    cr_assert_eq(fy_lb_init(&t->lb, &t->g, 42), 0);
}

static void tg_fini(struct tg *t)
{
    fy_lb_destroy(&t->lb);
    fy_lb_shared_free(t->g.lb);
}

static struct fy_server *pick_tried(struct tg *t, const uint32_t *tried, uint32_t ntried)
{
    struct fy_lb_req req = {.tried = tried, .ntried = ntried, .now_ms = NOW};
    return fy_lb_pick(&t->lb, &req);
}

static struct fy_server *pick(struct tg *t)
{
    return pick_tried(t, NULL, 0);
}

static struct fy_server *pick_hash(struct tg *t, uint64_t h)
{
    struct fy_lb_req req = {.hash = h, .has_hash = true, .now_ms = NOW};
    return fy_lb_pick(&t->lb, &req);
}

static unsigned active_of(const struct tg *t, uint32_t i)
{
    return __atomic_load_n(&t->st[i].active, __ATOMIC_RELAXED);
}

static uint64_t key_rng = 0x243f6a8885a308d3ULL;

/* Restarts the test keys at `seed` and says so, so a failure can be replayed. */
static void key_seed(const char *test, uint64_t seed)
{
    key_rng = seed;
    fprintf(stderr, "test_lb %s: keys from seed 0x%016llx\n", test, (unsigned long long)seed);
}

/* Test keys: splitmix64 of a counter, independent of the code under test's own hash. */
static uint64_t next_key(void)
{
    uint64_t x = (key_rng += 0x9e3779b97f4a7c15ULL);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* |observed/expected - 1| <= tol[i] for each server, expected = total * w[i] / sum(w). */
static void expect_shares(const unsigned *count, const uint32_t *w, const double *tol, uint32_t n,
                          unsigned total)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < n; i++)
        sum += w[i];
    for (uint32_t i = 0; i < n; i++) {
        double expected = (double)total * w[i] / (double)sum;
        double rel = count[i] / expected - 1;
        cr_expect(rel <= tol[i] && rel >= -tol[i],
                  "server %u (weight %u): %u picks, expected %.0f (%+.3f, tolerance %.3f)", i, w[i],
                  count[i], expected, rel, tol[i]);
    }
}

static const uint32_t w1234[] = {1, 2, 3, 4};
static const double tol5[] = {0.05, 0.05, 0.05, 0.05};

/* Picks with each connection released at once (outcome OK). */
static void count_released(struct tg *t, unsigned npicks, bool hashed, unsigned *count)
{
    for (unsigned k = 0; k < npicks; k++) {
        struct fy_server *s = hashed ? pick_hash(t, next_key()) : pick(t);
        cr_assert_not_null(s);
        count[s->index]++;
        fy_lb_release(&t->lb, s, FY_LB_OK, NOW);
    }
}

/* ---- shares of picks ---- */

Test(lb, round_robin_follows_weights)
{
    struct tg t;
    tg_init(&t, FY_LB_ROUND_ROBIN, 4, NULL, w1234, 0);
    unsigned count[4] = {0};
    count_released(&t, 10000, false, count);
    expect_shares(count, w1234, tol5, 4, 10000);
    tg_fini(&t);
}

Test(lb, least_conn_released_follows_weights)
{
    /* With every connection released at once all servers are idle: the tie-break alone decides,
     * and it must follow the weights. */
    struct tg t;
    tg_init(&t, FY_LB_LEAST_CONN, 4, NULL, w1234, 0);
    unsigned count[4] = {0};
    count_released(&t, 10000, false, count);
    expect_shares(count, w1234, tol5, 4, 10000);
    tg_fini(&t);
}

/* p2c draws at random: over 10,000 picks the weight-1 server's count has a relative standard
 * deviation of about 3%, so a 5% bound would be a 1.7 sigma test. 100,000 picks make it 5 sigma
 * (about 0.95%), so a failure means a bias, not bad luck. */
Test(lb, p2c_released_follows_weights)
{
    struct tg t;
    tg_init(&t, FY_LB_P2C, 4, NULL, w1234, 0);
    unsigned count[4] = {0};
    count_released(&t, 100000, false, count);
    expect_shares(count, w1234, tol5, 4, 100000);
    tg_fini(&t);
}

Test(lb, p2c_prefers_the_less_loaded)
{
    struct tg t;
    tg_init(&t, FY_LB_P2C, 2, NULL, NULL, 0);
    __atomic_store_n(&t.st[0].active, 10, __ATOMIC_RELAXED);
    /* With two servers both are always drawn, so the idle one always wins. */
    for (int k = 0; k < 100; k++) {
        struct fy_server *s = pick(&t);
        cr_assert_eq(s->index, 1);
        fy_lb_release(&t.lb, s, FY_LB_OK, NOW);
    }
    tg_fini(&t);
}

/*
 * Rendezvous hashing gives each server exactly its weight's share of the key space, so what is
 * left is sampling noise: over K keys a server with share p gets K p keys with a relative
 * standard deviation sigma = sqrt((1 - p) / (K p)). Each weight set is chosen so that ±5% is at
 * least 2.5 sigma; a ring with 160 points per weight (the previous algorithm) was off by up to
 * 9-13% on such sets, and a hash that ignored the weights would be off by 33% or more.
 */
static void hash_shares(const char *test, uint64_t seed, uint32_t n, const uint32_t *w,
                        unsigned keys)
{
    struct tg t;
    tg_init(&t, FY_LB_HASH, n, NULL, w, 0);
    key_seed(test, seed);
    unsigned count[MAXS] = {0};
    double tol[MAXS];
    for (uint32_t i = 0; i < n; i++)
        tol[i] = 0.05;
    count_released(&t, keys, true, count);
    uint64_t sum = 0;
    for (uint32_t i = 0; i < n; i++)
        sum += w ? w[i] : 1;
    fprintf(stderr, "test_lb %s: %u keys, observed/expected - 1:", test, keys);
    for (uint32_t i = 0; i < n; i++)
        fprintf(stderr, " %+.4f", count[i] / ((double)keys * (w ? w[i] : 1) / (double)sum) - 1);
    fprintf(stderr, "\n");
    uint32_t ones[MAXS];
    for (uint32_t i = 0; i < n; i++)
        ones[i] = w ? w[i] : 1;
    expect_shares(count, ones, tol, n, keys);
    tg_fini(&t);
}

/* Weights 1, 1, 2 over 10,000 keys: sigma 1.73% for p = 1/4 (5% = 2.9 sigma), 1.0% for p = 1/2
 * (5 sigma). */
Test(lb, hash_follows_weights_1_1_2)
{
    static const uint32_t w[] = {1, 1, 2};
    hash_shares("hash_follows_weights_1_1_2", 0x5eed000000000112ULL, 3, w, 10000);
}

/* Five equal servers over 10,000 keys: p = 1/5, sigma 2.0%, so 5% is 2.5 sigma. */
Test(lb, hash_follows_equal_weights_5)
{
    hash_shares("hash_follows_equal_weights_5", 0x5eed000000000005ULL, 5, NULL, 10000);
}

/* Weights 1, 2, 3, 4 over 100,000 keys: the weight-1 server (p = 1/10) has sigma 0.95%, so 5%
 * is 5.3 sigma; the others more. */
Test(lb, hash_follows_weights_1234)
{
    hash_shares("hash_follows_weights_1234", 0x5eed000000001234ULL, 4, w1234, 100000);
}

Test(lb, hash_without_key_is_round_robin)
{
    struct tg t;
    tg_init(&t, FY_LB_HASH, 4, NULL, w1234, 0);
    unsigned count[4] = {0};
    count_released(&t, 10, false, count);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(count[i], w1234[i]);
    tg_fini(&t);
}

/* One of n servers leaves: only its keys move (about 1/n, bound 1/n + 5%). */
static void removal_moves_only_its_keys(uint32_t n, uint64_t seed)
{
    char name[32];
    snprintf(name, sizeof(name), "hash_removal_%u", n);
    key_seed(name, seed);
    unsigned most = 0;
    for (uint32_t gone = 0; gone < n; gone++) {
        struct tg all, rest;
        uint32_t ids[MAXS], rest_ids[MAXS], m = 0;
        for (uint32_t i = 0; i < n; i++) {
            ids[i] = i + 1;
            if (i != gone)
                rest_ids[m++] = i + 1;
        }
        tg_init(&all, FY_LB_HASH, n, ids, NULL, 0);
        tg_init(&rest, FY_LB_HASH, m, rest_ids, NULL, 0);
        unsigned moved = 0, moved_others = 0;
        for (int k = 0; k < 10000; k++) {
            uint64_t h = next_key();
            struct fy_server *a = pick_hash(&all, h), *b = pick_hash(&rest, h);
            fy_lb_release(&all.lb, a, FY_LB_OK, NOW);
            fy_lb_release(&rest.lb, b, FY_LB_OK, NOW);
            if (strcmp(a->url, b->url) != 0) {
                moved++;
                if (a->index != gone)
                    moved_others++;
            } else {
                cr_assert_neq(a->index, gone); /* the removed server's keys all moved */
            }
        }
        cr_expect_eq(moved_others, 0, "N=%u, without server %u: %u keys of others moved", n, gone,
                     moved_others);
        cr_expect_leq(moved / 10000.0, 1.0 / n + 0.05, "N=%u, without server %u: %u keys moved", n,
                      gone, moved);
        most = moved > most ? moved : most;
        tg_fini(&all);
        tg_fini(&rest);
    }
    fprintf(stderr, "%s: at most %.4f of the keys moved (1/N = %.4f), none of another server\n",
            name, most / 10000.0, 1.0 / n);
}

Test(lb, hash_removal_5)
{
    removal_moves_only_its_keys(5, 0x5eed0000000000a5ULL);
}

Test(lb, hash_removal_10)
{
    removal_moves_only_its_keys(10, 0x5eed0000000000aaULL);
}

Test(lb, hash_unusable_moves_only_its_keys_like_removal)
{
    struct tg all, rest;
    const uint32_t rest_ids[] = {1, 2, 4, 5, 6};
    tg_init(&all, FY_LB_HASH, 6, NULL, NULL, 0);
    tg_init(&rest, FY_LB_HASH, 5, rest_ids, NULL, 0);
    key_seed("hash_unusable_moves_only_its_keys_like_removal", 0x5eed00000000d0d0ULL);
    uint64_t keys[5000];
    uint32_t before[5000];
    for (int k = 0; k < 5000; k++) {
        keys[k] = next_key();
        struct fy_server *s = pick_hash(&all, keys[k]);
        before[k] = s->index;
        fy_lb_release(&all.lb, s, FY_LB_OK, NOW);
    }
    __atomic_store_n(&all.st[2].down, true, __ATOMIC_RELEASE);
    unsigned moved = 0;
    for (int k = 0; k < 5000; k++) {
        struct fy_server *s = pick_hash(&all, keys[k]), *r = pick_hash(&rest, keys[k]);
        cr_assert_neq(s->index, 2);
        if (before[k] != 2)
            cr_assert_eq(s->index, before[k], "key %d moved off a usable server", k);
        else
            moved++;
        /* Where the key goes when its server leaves the group. */
        cr_assert_str_eq(s->url, r->url);
        fy_lb_release(&all.lb, s, FY_LB_OK, NOW);
        fy_lb_release(&rest.lb, r, FY_LB_OK, NOW);
    }
    cr_expect_gt(moved, 0);
    /* Back up: every key returns to where it was. */
    __atomic_store_n(&all.st[2].down, false, __ATOMIC_RELEASE);
    for (int k = 0; k < 5000; k++) {
        struct fy_server *s = pick_hash(&all, keys[k]);
        cr_assert_eq(s->index, before[k]);
        fy_lb_release(&all.lb, s, FY_LB_OK, NOW);
    }
    /* Tried is unusable for this exchange only: the same rule. */
    const uint32_t tried[] = {3};
    for (int k = 0; k < 1000; k++) {
        struct fy_lb_req req = {
            .hash = keys[k], .has_hash = true, .tried = tried, .ntried = 1, .now_ms = NOW};
        struct fy_server *s = fy_lb_pick(&all.lb, &req);
        cr_assert(s->index != 3);
        if (before[k] != 3)
            cr_assert_eq(s->index, before[k]);
        fy_lb_release(&all.lb, s, FY_LB_NEUTRAL, NOW);
    }
    tg_fini(&all);
    tg_fini(&rest);
}

/* A down server's keys go to the others in proportion to their weights (a ring would hand them
 * to its neighbours on the ring). Weights 1, 1, 2, 2 and the down server 4: over 100,000 keys
 * about 40,000 move, a weight-1 server should get 1/6 of them, sigma 1.1%, so 5% is 4.5 sigma. */
Test(lb, hash_unusable_keys_spread_by_weight)
{
    const uint32_t w[] = {1, 1, 2, 2, 4};
    struct tg t;
    tg_init(&t, FY_LB_HASH, 5, NULL, w, 0);
    key_seed("hash_unusable_keys_spread_by_weight", 0x5eed000000005bedULL);
    unsigned count[4] = {0}, moved = 0;
    for (int k = 0; k < 100000; k++) {
        uint64_t h = next_key();
        struct fy_server *s = pick_hash(&t, h);
        fy_lb_release(&t.lb, s, FY_LB_OK, NOW);
        if (s->index != 4)
            continue;
        __atomic_store_n(&t.st[4].down, true, __ATOMIC_RELEASE);
        s = pick_hash(&t, h);
        __atomic_store_n(&t.st[4].down, false, __ATOMIC_RELEASE);
        count[s->index]++;
        moved++;
        fy_lb_release(&t.lb, s, FY_LB_OK, NOW);
    }
    fprintf(stderr, "hash_unusable_keys_spread_by_weight: %u moved: %u %u %u %u\n", moved, count[0],
            count[1], count[2], count[3]);
    expect_shares(count, w, tol5, 4, moved);
    tg_fini(&t);
}

Test(lb, hash_backups_only_when_no_primary_and_give_back)
{
    struct tg t;
    tg_init(&t, FY_LB_HASH, 4, NULL, NULL, 2);
    key_seed("hash_backups_only_when_no_primary_and_give_back", 0x5eed00000000bac0ULL);
    uint64_t keys[1000];
    uint32_t before[1000];
    for (int k = 0; k < 1000; k++) {
        keys[k] = next_key();
        struct fy_server *s = pick_hash(&t, keys[k]);
        cr_assert_lt(s->index, 2);
        before[k] = s->index;
        fy_lb_release(&t.lb, s, FY_LB_OK, NOW);
    }
    /* One primary left: it takes everything, the backups nothing. */
    __atomic_store_n(&t.st[0].down, true, __ATOMIC_RELEASE);
    for (int k = 0; k < 1000; k++) {
        struct fy_server *s = pick_hash(&t, keys[k]);
        cr_assert_eq(s->index, 1);
        fy_lb_release(&t.lb, s, FY_LB_OK, NOW);
    }
    __atomic_store_n(&t.st[1].ejected_until_ms, NOW + 1, __ATOMIC_RELEASE);
    unsigned count[4] = {0};
    uint32_t on_backup[1000];
    for (int k = 0; k < 1000; k++) {
        struct fy_server *s = pick_hash(&t, keys[k]);
        count[s->index]++;
        on_backup[k] = s->index;
        fy_lb_release(&t.lb, s, FY_LB_OK, NOW);
    }
    cr_expect(count[2] > 400 && count[3] > 400, "%u, %u", count[2], count[3]);
    /* Among the backups too a key keeps its server. */
    for (int k = 0; k < 1000; k++) {
        struct fy_server *s = pick_hash(&t, keys[k]);
        cr_assert_eq(s->index, on_backup[k]);
        fy_lb_release(&t.lb, s, FY_LB_OK, NOW);
    }
    /* The primaries are back: every key returns to its primary. */
    __atomic_store_n(&t.st[0].down, false, __ATOMIC_RELEASE);
    __atomic_store_n(&t.st[1].ejected_until_ms, 0, __ATOMIC_RELEASE);
    for (int k = 0; k < 1000; k++) {
        struct fy_server *s = pick_hash(&t, keys[k]);
        cr_assert_eq(s->index, before[k]);
        fy_lb_release(&t.lb, s, FY_LB_OK, NOW);
    }
    tg_fini(&t);
}

/* A key's server depends on the URLs and weights only: not on the build of the group, nor on
 * the order the servers are listed in (workers and reloads agree). */
Test(lb, hash_is_the_same_across_groups_and_orders)
{
    const uint32_t ids_a[] = {1, 2, 3, 4, 5}, w_a[] = {1, 2, 3, 4, 5};
    const uint32_t ids_b[] = {4, 2, 5, 1, 3}, w_b[] = {4, 2, 5, 1, 3};
    struct tg a, a2, b;
    tg_init(&a, FY_LB_HASH, 5, ids_a, w_a, 0);
    tg_init(&a2, FY_LB_HASH, 5, ids_a, w_a, 0);
    tg_init(&b, FY_LB_HASH, 5, ids_b, w_b, 0);
    key_seed("hash_is_the_same_across_groups_and_orders", 0x5eed00000000511bULL);
    for (int k = 0; k < 10000; k++) {
        uint64_t h = next_key();
        struct fy_server *x = pick_hash(&a, h), *y = pick_hash(&a2, h), *z = pick_hash(&b, h);
        cr_assert_eq(x->index, y->index, "key %016llx", (unsigned long long)h);
        cr_assert_str_eq(x->url, z->url, "key %016llx", (unsigned long long)h);
        fy_lb_release(&a.lb, x, FY_LB_OK, NOW);
        fy_lb_release(&a2.lb, y, FY_LB_OK, NOW);
        fy_lb_release(&b.lb, z, FY_LB_OK, NOW);
    }
    tg_fini(&a);
    tg_fini(&a2);
    tg_fini(&b);
}

/* Pinned results: a change of fy_lb_hash or of the score would move every deployed key on the
 * next upgrade, so it must be deliberate. Keys "key-0" .. "key-19" over servers 1..5, weights
 * 1..5. */
Test(lb, hash_results_are_pinned)
{
    const uint32_t w[] = {1, 2, 3, 4, 5};
    static const char expect[] = "23233311214044432420"; /* server index per key */
    struct tg t;
    tg_init(&t, FY_LB_HASH, 5, NULL, w, 0);
    char got[21] = {0};
    for (int k = 0; k < 20; k++) {
        char key[16];
        int n = snprintf(key, sizeof(key), "key-%d", k);
        struct fy_server *s = pick_hash(&t, fy_lb_hash(key, (size_t)n));
        got[k] = (char)('0' + s->index);
        fy_lb_release(&t.lb, s, FY_LB_OK, NOW);
    }
    cr_expect_str_eq(got, expect);
    cr_expect_eq(fy_lb_hash("http://10.0.0.1:80", 18), 0xd9eb4e5ab98014b4ULL);
    tg_fini(&t);
}

/* Weights up to UINT32_MAX: exact in a double, no overflow, shares still follow. Over 10,000
 * keys the 1:3 pair has sigma 1.73% on the smaller (5% = 2.9 sigma); the weight-1 server
 * expects 10,000 / 4,000,001 keys. */
Test(lb, hash_huge_weights)
{
    const uint32_t w[] = {1000000, 3000000, 1};
    struct tg t;
    tg_init(&t, FY_LB_HASH, 3, NULL, w, 0);
    key_seed("hash_huge_weights", 0x5eed00000000b16bULL);
    unsigned count[3] = {0};
    count_released(&t, 10000, true, count);
    expect_shares(count, w, tol5, 2, 10000 - count[2]);
    cr_expect_leq(count[2], 2);
    tg_fini(&t);
    const uint32_t wmax[] = {UINT32_MAX, UINT32_MAX, UINT32_MAX - 1};
    tg_init(&t, FY_LB_HASH, 3, NULL, wmax, 0);
    unsigned cmax[3] = {0};
    count_released(&t, 30000, true, cmax);
    /* p = 1/3 over 30,000 keys: sigma 0.82%. */
    expect_shares(cmax, wmax, tol5, 3, 30000);
    tg_fini(&t);
}

/* What one pick costs with n candidates (printed, never asserted: not a timed test). */
static void time_picks(uint32_t n)
{
    struct tg *t = malloc(sizeof(*t));
    cr_assert_not_null(t);
    tg_init(t, FY_LB_HASH, n, NULL, NULL, 0);
    key_seed("hash_pick_cost", 0x5eed00000000c057ULL);
    const int picks = 200000;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int k = 0; k < picks; k++)
        fy_lb_release(&t->lb, pick_hash(t, next_key()), FY_LB_OK, NOW);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / picks;
    fprintf(stderr, "hash_pick_cost: %u servers: %.0f ns per pick and release (%.1f ns/server)\n",
            n, ns, ns / n);
    tg_fini(t);
    free(t);
}

Test(lb, hash_pick_cost)
{
    time_picks(4);
    time_picks(16);
    time_picks(64);
    time_picks(256);
}

/* ---- smooth round-robin ---- */

Test(lb, round_robin_exact_per_cycle)
{
    struct tg t;
    tg_init(&t, FY_LB_ROUND_ROBIN, 4, NULL, w1234, 0);
    for (int cycle = 0; cycle < 50; cycle++) {
        unsigned count[4] = {0};
        count_released(&t, 10, false, count);
        for (int i = 0; i < 4; i++)
            cr_assert_eq(count[i], w1234[i], "cycle %d, server %d", cycle, i);
    }
    tg_fini(&t);
}

Test(lb, round_robin_is_smooth)
{
    struct tg t;
    const uint32_t w[] = {5, 1, 1};
    tg_init(&t, FY_LB_ROUND_ROBIN, 3, NULL, w, 0);
    unsigned run = 0, longest = 0, count[3] = {0};
    for (int k = 0; k < 7 * 100; k++) {
        struct fy_server *s = pick(&t);
        count[s->index]++;
        run = s->index == 0 ? run + 1 : 0;
        longest = run > longest ? run : longest;
        fy_lb_release(&t.lb, s, FY_LB_OK, NOW);
    }
    /* nginx's sequence is a a b a c a a: at most 4 in a row across two cycles, never 5. */
    cr_expect_lt(longest, 5);
    cr_expect_eq(count[0], 500);
    cr_expect_eq(count[1], 100);
    cr_expect_eq(count[2], 100);
    tg_fini(&t);
}

/* ---- least-conn ---- */

Test(lb, least_conn_avoids_busy_server)
{
    struct tg t;
    tg_init(&t, FY_LB_LEAST_CONN, 3, NULL, NULL, 0);
    struct fy_server *held[20];
    for (int k = 0; k < 20; k++) {
        held[k] = &t.sv[0];
        __atomic_fetch_add(&t.st[0].active, 1, __ATOMIC_RELAXED);
    }
    unsigned count[3] = {0};
    count_released(&t, 300, false, count);
    cr_expect_eq(count[0], 0);
    cr_expect_eq(count[1], 150);
    cr_expect_eq(count[2], 150);
    /* Connections held open on the others fill them up to server 0's load, then all share. */
    struct fy_server *s;
    for (int k = 0; k < 40; k++) {
        s = pick(&t);
        cr_assert_not_null(s);
    }
    cr_expect_eq(active_of(&t, 0), 20);
    cr_expect_eq(active_of(&t, 1), 20);
    cr_expect_eq(active_of(&t, 2), 20);
    for (int k = 0; k < 20; k++)
        fy_lb_release(&t.lb, held[k], FY_LB_OK, NOW);
    for (int k = 0; k < 20; k++) {
        s = pick(&t);
        cr_assert_eq(s->index, 0);
    }
    tg_fini(&t);
}

Test(lb, least_conn_relative_to_weight)
{
    struct tg t;
    const uint32_t w[] = {1, 3};
    tg_init(&t, FY_LB_LEAST_CONN, 2, NULL, w, 0);
    for (int k = 0; k < 400; k++)
        cr_assert_not_null(pick(&t));
    cr_expect_eq(active_of(&t, 0), 100);
    cr_expect_eq(active_of(&t, 1), 300);
    tg_fini(&t);
}

/* ---- sticky ---- */

Test(lb, sticky_keeps_preferred_and_falls_back)
{
    struct tg t, other;
    tg_init(&t, FY_LB_STICKY, 4, NULL, NULL, 1);
    tg_init(&other, FY_LB_STICKY, 4, NULL, NULL, 0);
    struct fy_lb_req req = {.prefer = &t.sv[2], .now_ms = NOW};
    for (int k = 0; k < 20; k++) {
        struct fy_server *s = fy_lb_pick(&t.lb, &req);
        cr_assert_eq(s, &t.sv[2]);
        fy_lb_release(&t.lb, s, FY_LB_OK, NOW);
    }
    __atomic_store_n(&t.st[2].ejected_until_ms, NOW + 1, __ATOMIC_RELEASE);
    unsigned count[4] = {0};
    for (int k = 0; k < 30; k++) {
        struct fy_server *s = fy_lb_pick(&t.lb, &req);
        count[s->index]++;
        fy_lb_release(&t.lb, s, FY_LB_OK, NOW);
    }
    cr_expect_eq(count[0], 15);
    cr_expect_eq(count[1], 15);
    req.now_ms = NOW + 1; /* the ejection is over */
    cr_expect_eq(fy_lb_pick(&t.lb, &req), &t.sv[2]);
    /* Tried this exchange: fall back too. */
    const uint32_t tried[] = {2};
    req.tried = tried;
    req.ntried = 1;
    cr_expect_neq(fy_lb_pick(&t.lb, &req), &t.sv[2]);
    /* A server of another group (a stale cookie after a reload) is not followed. */
    req = (struct fy_lb_req){.prefer = &other.sv[2], .now_ms = NOW};
    cr_expect_eq(fy_lb_pick(&t.lb, &req)->group, &t.g);
    /* A backup named by the cookie waits until no primary is usable. */
    req.prefer = &t.sv[3];
    cr_expect_lt(fy_lb_pick(&t.lb, &req)->index, 3);
    for (int i = 0; i < 3; i++)
        __atomic_store_n(&t.st[i].down, true, __ATOMIC_RELEASE);
    cr_expect_eq(fy_lb_pick(&t.lb, &req), &t.sv[3]);
    tg_fini(&t);
    tg_fini(&other);
}

/* ---- what may be picked, for every algorithm ---- */

static struct fy_server *pick_any(struct tg *t, const uint32_t *tried, uint32_t ntried)
{
    struct fy_lb_req req = {
        .hash = next_key(), .has_hash = true, .tried = tried, .ntried = ntried, .now_ms = NOW};
    return fy_lb_pick(&t->lb, &req);
}

Test(lb, backups_only_when_no_primary_usable)
{
    for (size_t b = 0; b < sizeof(all_balances) / sizeof(all_balances[0]); b++) {
        struct tg t;
        /* 0, 1 primaries; 2 backup */
        tg_init(&t, all_balances[b], 3, NULL, NULL, 1);
        t.sv[1].max_conns = 1;
        for (int k = 0; k < 100; k++) {
            struct fy_server *s = pick_any(&t, NULL, 0);
            cr_assert_lt(s->index, 2, "balance %d", all_balances[b]);
            fy_lb_release(&t.lb, s, FY_LB_OK, NOW);
        }
        __atomic_store_n(&t.st[0].down, true, __ATOMIC_RELEASE);
        for (int k = 0; k < 20; k++) {
            struct fy_server *s = pick_any(&t, NULL, 0);
            cr_assert_eq(s->index, 1, "balance %d", all_balances[b]);
            fy_lb_release(&t.lb, s, FY_LB_OK, NOW);
        }
        /* 0 down and 1 ejected / full / tried: each sends the attempt to the backup. */
        __atomic_store_n(&t.st[1].ejected_until_ms, NOW + 1, __ATOMIC_RELEASE);
        cr_assert_eq(pick_any(&t, NULL, 0), &t.sv[2], "balance %d", all_balances[b]);
        fy_lb_release(&t.lb, &t.sv[2], FY_LB_OK, NOW);
        __atomic_store_n(&t.st[1].ejected_until_ms, 0, __ATOMIC_RELEASE);
        struct fy_server *one = pick_any(&t, NULL, 0);
        cr_assert_eq(one, &t.sv[1], "balance %d", all_balances[b]);
        cr_assert_eq(pick_any(&t, NULL, 0), &t.sv[2], "balance %d (1 full)", all_balances[b]);
        fy_lb_release(&t.lb, &t.sv[2], FY_LB_OK, NOW);
        fy_lb_release(&t.lb, one, FY_LB_OK, NOW);
        const uint32_t tried[] = {1};
        cr_assert_eq(pick_any(&t, tried, 1), &t.sv[2], "balance %d", all_balances[b]);
        fy_lb_release(&t.lb, &t.sv[2], FY_LB_OK, NOW);
        /* The primary is back: the backup stops at once. */
        __atomic_store_n(&t.st[0].down, false, __ATOMIC_RELEASE);
        const uint32_t tried1[] = {1};
        cr_assert_eq(pick_any(&t, tried1, 1), &t.sv[0], "balance %d", all_balances[b]);
        fy_lb_release(&t.lb, &t.sv[0], FY_LB_OK, NOW);
        __atomic_store_n(&t.st[2].down, true, __ATOMIC_RELEASE);
        __atomic_store_n(&t.st[0].down, true, __ATOMIC_RELEASE);
        cr_assert_null(pick_any(&t, tried, 1), "balance %d", all_balances[b]);
        tg_fini(&t);
    }
}

Test(lb, max_conns_is_a_limit)
{
    for (size_t b = 0; b < sizeof(all_balances) / sizeof(all_balances[0]); b++) {
        struct tg t;
        tg_init(&t, all_balances[b], 3, NULL, NULL, 0);
        for (int i = 0; i < 3; i++)
            t.sv[i].max_conns = (unsigned)i + 1;
        for (int k = 0; k < 6; k++)
            cr_assert_not_null(pick_any(&t, NULL, 0), "balance %d, pick %d", all_balances[b], k);
        for (uint32_t i = 0; i < 3; i++) {
            cr_assert_eq(active_of(&t, i), i + 1, "balance %d", all_balances[b]);
            cr_assert(!fy_lb_usable(&t.sv[i], NOW, false));
            cr_assert(fy_lb_usable(&t.sv[i], NOW, true));
        }
        cr_assert_null(pick_any(&t, NULL, 0), "balance %d", all_balances[b]);
        fy_lb_release(&t.lb, &t.sv[1], FY_LB_NEUTRAL, NOW);
        cr_assert_eq(pick_any(&t, NULL, 0), &t.sv[1], "balance %d", all_balances[b]);
        tg_fini(&t);
    }
}

Test(lb, tried_servers_are_skipped)
{
    for (size_t b = 0; b < sizeof(all_balances) / sizeof(all_balances[0]); b++) {
        struct tg t;
        tg_init(&t, all_balances[b], 3, NULL, NULL, 0);
        const uint32_t tried[] = {2, 0, 1};
        for (int k = 0; k < 50; k++) {
            struct fy_server *s = pick_any(&t, tried, 2);
            cr_assert_eq(s->index, 1, "balance %d", all_balances[b]);
            fy_lb_release(&t.lb, s, FY_LB_OK, NOW);
        }
        cr_assert_null(pick_any(&t, tried, 3), "balance %d", all_balances[b]);
        for (uint32_t i = 0; i < 3; i++)
            cr_assert_eq(active_of(&t, i), 0);
        tg_fini(&t);
    }
}

Test(lb, nothing_usable_is_null)
{
    for (size_t b = 0; b < sizeof(all_balances) / sizeof(all_balances[0]); b++) {
        struct tg t;
        tg_init(&t, all_balances[b], 2, NULL, NULL, 0);
        __atomic_store_n(&t.st[0].down, true, __ATOMIC_RELEASE);
        __atomic_store_n(&t.st[1].ejected_until_ms, NOW + 5, __ATOMIC_RELEASE);
        cr_assert_null(pick_any(&t, NULL, 0), "balance %d", all_balances[b]);
        tg_fini(&t);
    }
}

/* ---- passive health ---- */

static int saved_stderr = -1;
static FILE *captured;

static void capture_start(void)
{
    captured = tmpfile();
    cr_assert_not_null(captured);
    saved_stderr = dup(STDERR_FILENO);
    dup2(fileno(captured), STDERR_FILENO);
}

/* What was logged since capture_start(), in buf. */
static const char *capture_end(char *buf, size_t len)
{
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    rewind(captured);
    size_t n = fread(buf, 1, len - 1, captured);
    buf[n] = '\0';
    fclose(captured);
    return buf;
}

static void fail_n(struct tg *t, uint32_t i, int n, uint64_t now)
{
    for (int k = 0; k < n; k++) {
        __atomic_fetch_add(&t->st[i].active, 1, __ATOMIC_RELAXED);
        fy_lb_release(&t->lb, &t->sv[i], FY_LB_FAILED, now);
    }
}

Test(lb, passive_ejection_and_backoff)
{
    struct tg t;
    tg_init(&t, FY_LB_ROUND_ROBIN, 2, NULL, NULL, 0);
    t.g.max_fails = 3;
    t.g.fail_timeout = 1000;
    char log[2048];
    capture_start();
    fail_n(&t, 0, 2, NOW);
    cr_assert(fy_lb_usable(&t.sv[0], NOW, false));
    fail_n(&t, 0, 1, NOW);
    capture_end(log, sizeof(log));
    cr_expect_str_eq(log, "warn ferry: upstream group web: server http://10.0.0.1:80 ejected "
                          "for 1000 ms after 3 consecutive failures\n");
    cr_assert_eq(t.st[0].ejected_until_ms, NOW + 1000);
    cr_assert_eq(t.st[0].ejections, 1);
    cr_assert_eq(t.st[0].fails, 0);
    cr_assert(!fy_lb_usable(&t.sv[0], NOW + 999, false));
    cr_assert(fy_lb_usable(&t.sv[0], NOW + 1000, false));
    for (int k = 0; k < 10; k++)
        cr_assert_eq(pick(&t), &t.sv[1]);
    /* Failures of attempts that were in flight at the ejection do not count again. */
    fail_n(&t, 0, 5, NOW + 10);
    cr_assert_eq(t.st[0].ejections, 1);
    cr_assert_eq(t.st[0].fails, 0);
    /* Each consecutive ejection doubles, up to the cap. */
    uint64_t now = NOW + 1000, expect = 2000;
    for (int e = 1; e < 12; e++) {
        fail_n(&t, 0, 3, now);
        cr_assert_eq(t.st[0].ejections, (unsigned)e + 1);
        cr_assert_eq(t.st[0].ejected_until_ms, now + expect, "ejection %d", e + 1);
        now += expect;
        expect = expect * 2 < FY_LB_MAX_EJECT_MS ? expect * 2 : FY_LB_MAX_EJECT_MS;
    }
    cr_assert_eq(t.st[0].ejected_until_ms - (now - FY_LB_MAX_EJECT_MS), FY_LB_MAX_EJECT_MS);
    /* A response resets the streak and the backoff, and says so once. */
    capture_start();
    __atomic_fetch_add(&t.st[0].active, 1, __ATOMIC_RELAXED);
    fy_lb_release(&t.lb, &t.sv[0], FY_LB_OK, now);
    __atomic_fetch_add(&t.st[0].active, 1, __ATOMIC_RELAXED);
    fy_lb_release(&t.lb, &t.sv[0], FY_LB_OK, now);
    capture_end(log, sizeof(log));
    cr_expect_str_eq(log, "info ferry: upstream group web: server http://10.0.0.1:80 is healthy "
                          "again\n");
    cr_assert_eq(t.st[0].ejections, 0);
    fail_n(&t, 0, 3, now);
    cr_assert_eq(t.st[0].ejected_until_ms, now + 1000);
    tg_fini(&t);
}

Test(lb, ok_resets_the_failure_streak)
{
    struct tg t;
    tg_init(&t, FY_LB_ROUND_ROBIN, 1, NULL, NULL, 0);
    t.g.max_fails = 3;
    t.g.fail_timeout = 1000;
    for (int k = 0; k < 5; k++) {
        fail_n(&t, 0, 2, NOW);
        __atomic_fetch_add(&t.st[0].active, 1, __ATOMIC_RELAXED);
        fy_lb_release(&t.lb, &t.sv[0], FY_LB_OK, NOW);
        /* Neutral outcomes neither count nor reset. */
        __atomic_fetch_add(&t.st[0].active, 1, __ATOMIC_RELAXED);
        fy_lb_release(&t.lb, &t.sv[0], FY_LB_NEUTRAL, NOW);
    }
    cr_assert_eq(t.st[0].fails, 0);
    cr_assert_eq(t.st[0].ejections, 0);
    cr_assert_eq(t.st[0].ejected_until_ms, 0);
    fail_n(&t, 0, 2, NOW);
    __atomic_fetch_add(&t.st[0].active, 1, __ATOMIC_RELAXED);
    fy_lb_release(&t.lb, &t.sv[0], FY_LB_NEUTRAL, NOW);
    fail_n(&t, 0, 1, NOW);
    cr_assert_eq(t.st[0].ejected_until_ms, NOW + 1000);
    tg_fini(&t);
}

Test(lb, max_fails_zero_never_ejects)
{
    struct tg t;
    tg_init(&t, FY_LB_ROUND_ROBIN, 1, NULL, NULL, 0);
    t.g.fail_timeout = 1000;
    fail_n(&t, 0, 100, NOW);
    cr_assert_eq(t.st[0].ejected_until_ms, 0);
    cr_assert(fy_lb_usable(&t.sv[0], NOW, false));
    tg_fini(&t);
}

Test(lb, active_never_underflows)
{
    struct tg t;
    tg_init(&t, FY_LB_LEAST_CONN, 2, NULL, NULL, 0);
    struct fy_server *s = pick(&t);
    cr_assert_eq(active_of(&t, s->index), 1);
    fy_lb_release(&t.lb, s, FY_LB_OK, NOW);
    fy_lb_release(&t.lb, s, FY_LB_FAILED, NOW);
    fy_lb_release(&t.lb, s, FY_LB_NEUTRAL, NOW);
    cr_assert_eq(active_of(&t, s->index), 0);
    /* Still the least loaded, not UINT_MAX connections deep. */
    unsigned count[2] = {0};
    count_released(&t, 10, false, count);
    cr_expect_eq(count[0], 5);
    cr_expect_eq(count[1], 5);
    tg_fini(&t);
}

Test(lb, init_seeds_and_allocates)
{
    struct fy_group g = {.name = "empty"};
    struct fy_lb lb;
    cr_assert_eq(fy_lb_init(&lb, &g, 0), 0);
    cr_assert_neq(lb.rng, 0);
    cr_assert_not_null(lb.current);
    fy_lb_destroy(&lb);
    cr_assert_null(lb.current);
    struct fy_lb a, b;
    cr_assert_eq(fy_lb_init(&a, &g, 1), 0);
    cr_assert_eq(fy_lb_init(&b, &g, 2), 0);
    cr_assert_neq(a.rng, b.rng);
    fy_lb_destroy(&a);
    fy_lb_destroy(&b);
    bool ok = false;
    cr_assert_null(fy_lb_shared_build(&g, &ok));
    cr_assert(ok);
    g.balance = FY_LB_HASH;
    struct fy_lb_shared *sh = fy_lb_shared_build(&g, &ok);
    cr_assert(ok);
    cr_assert_not_null(sh);
    cr_assert_eq(sh->nservers, 0);
    fy_lb_shared_free(sh);
    fy_lb_shared_free(NULL);
}
