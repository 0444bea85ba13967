/*
 * The balancers of lb.h: which server of a group an attempt goes to, and what its outcome does
 * to the server's passive health. Every algorithm works on one tier at a time (primaries, then
 * backups when no primary is a candidate), so "backups only when needed" holds for all of them.
 * Shared state (struct fy_server_state) is only touched with atomics and never locked: a choice
 * may be stale by the time it is made, and the one limit that must hold, max-conns, is enforced
 * by reserving the connection with a compare-and-swap after choosing.
 */
#include "proxy/lb.h"

#include <inttypes.h>
#include <stdlib.h>

#include "core/assert.h"
#include "core/log.h"
#include "proxy/lb_priv.h"

#define NONE UINT32_MAX
#define MAX_LOST 8 /* reservations lost to other workers before a pick gives up */

struct pick {
    struct fy_lb *lb;
    const struct fy_lb_req *req;
    /* Servers that filled up between being chosen and being reserved: excluded like tried. */
    uint32_t lost[MAX_LOST];
    uint32_t nlost;
};

static bool listed(const uint32_t *list, uint32_t n, uint32_t i)
{
    for (uint32_t k = 0; k < n; k++)
        if (list[k] == i)
            return true;
    return false;
}

bool fy_lb_usable(const struct fy_server *s, uint64_t now_ms, bool ignore_full)
{
    const struct fy_server_state *st = s->state;
    if (__atomic_load_n(&st->down, __ATOMIC_ACQUIRE))
        return false;
    if (now_ms < __atomic_load_n(&st->ejected_until_ms, __ATOMIC_ACQUIRE))
        return false;
    return ignore_full || !s->max_conns ||
           __atomic_load_n(&st->active, __ATOMIC_RELAXED) < s->max_conns;
}

static bool candidate(const struct pick *pk, uint32_t i)
{
    const struct fy_lb_req *req = pk->req;
    return !listed(req->tried, req->ntried, i) && !listed(pk->lost, pk->nlost, i) &&
           fy_lb_usable(&pk->lb->group->servers[i], req->now_ms, false);
}

static unsigned active(const struct fy_server *s)
{
    return __atomic_load_n(&s->state->active, __ATOMIC_RELAXED);
}

/* a/wa < b/wb, without division or floats. */
static bool lighter(unsigned a, uint32_t wa, unsigned b, uint32_t wb)
{
    return (uint64_t)a * wb < (uint64_t)b * wa;
}

/* xorshift64*: per worker, so no shared state; quality is ample for choosing servers. */
static uint64_t rng_next(struct fy_lb *lb)
{
    uint64_t x = lb->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    lb->rng = x;
    return x * 0x2545f4914f6cdd1dULL;
}

/* Narrows a round-robin to some candidates (least-conn: the least loaded). */
typedef bool only_fn(const struct pick *pk, uint32_t i, const void *arg);

/* Smooth weighted round-robin (nginx) over the candidates of [lo, hi) for which `only` holds. */
static uint32_t swrr(struct pick *pk, uint32_t lo, uint32_t hi, only_fn *only, const void *arg)
{
    const struct fy_server *sv = pk->lb->group->servers;
    int64_t *cur = pk->lb->current;
    int64_t total = 0;
    uint32_t best = NONE;
    for (uint32_t i = lo; i < hi; i++) {
        if (!candidate(pk, i) || (only && !only(pk, i, arg)))
            continue;
        cur[i] += sv[i].weight;
        total += sv[i].weight;
        if (best == NONE || cur[i] > cur[best])
            best = i;
    }
    if (best != NONE)
        cur[best] -= total;
    return best;
}

static bool no_heavier(const struct pick *pk, uint32_t i, const void *arg)
{
    const struct fy_server *sv = pk->lb->group->servers, *best = arg;
    return !lighter(active(best), best->weight, active(&sv[i]), sv[i].weight);
}

static uint32_t least_conn(struct pick *pk, uint32_t lo, uint32_t hi)
{
    const struct fy_server *sv = pk->lb->group->servers;
    uint32_t best = NONE;
    for (uint32_t i = lo; i < hi; i++) {
        if (candidate(pk, i) && (best == NONE || lighter(active(&sv[i]), sv[i].weight,
                                                         active(&sv[best]), sv[best].weight)))
            best = i;
    }
    if (best == NONE)
        return NONE;
    /* Round-robin among the equally loaded, or idle equal servers would all go to the first.
     * Counts move under us: the tie set is re-read, and may come out empty. */
    uint32_t tied = swrr(pk, lo, hi, no_heavier, &sv[best]);
    return tied != NONE ? tied : best;
}

/* A candidate of [lo, hi) other than `skip`, drawn with probability proportional to weight. */
static uint32_t weighted_draw(struct pick *pk, uint32_t lo, uint32_t hi, uint32_t skip)
{
    const struct fy_server *sv = pk->lb->group->servers;
    uint64_t total = 0;
    for (uint32_t i = lo; i < hi; i++)
        if (i != skip && candidate(pk, i))
            total += sv[i].weight;
    if (!total)
        return NONE;
    /* The modulo bias is below total / 2^64: nothing next to the weights' own coarseness. */
    uint64_t r = rng_next(pk->lb) % total;
    uint32_t last = NONE;
    for (uint32_t i = lo; i < hi; i++) {
        if (i == skip || !candidate(pk, i))
            continue;
        if (r < sv[i].weight)
            return i;
        r -= sv[i].weight;
        last = i;
    }
    return last; /* a server became unusable between the two passes */
}

static uint32_t p2c(struct pick *pk, uint32_t lo, uint32_t hi)
{
    const struct fy_server *sv = pk->lb->group->servers;
    uint32_t a = weighted_draw(pk, lo, hi, NONE);
    if (a == NONE)
        return NONE;
    uint32_t b = weighted_draw(pk, lo, hi, a);
    /* On a tie the first draw wins, so idle servers are picked exactly in weight proportion. */
    if (b != NONE && lighter(active(&sv[b]), sv[b].weight, active(&sv[a]), sv[a].weight))
        return b;
    return a;
}

/*
 * Weighted rendezvous hashing over the candidates of [lo, hi): the lowest fy_lb_score wins
 * (lb_hash.c). O(hi - lo) scores per pick, one log() each: fine for groups of up to a few hundred
 * servers. Equal scores (a 2^-52 event) go to the smaller id, so the winner does not depend on the
 * order the servers are listed in.
 */
static uint32_t rendezvous(struct pick *pk, const struct fy_lb_shared *sh, uint32_t lo, uint32_t hi)
{
    const struct fy_server *sv = pk->lb->group->servers;
    uint64_t key = pk->req->hash;
    uint32_t best = NONE;
    double best_score = 0;
    for (uint32_t i = lo; i < hi; i++) {
        if (!candidate(pk, i))
            continue;
        double s = fy_lb_score(key, sh->id[i], sv[i].weight);
        if (best == NONE || s < best_score || (s == best_score && sh->id[i] < sh->id[best])) {
            best = i;
            best_score = s;
        }
    }
    return best;
}

/* The sticky cookie's server if it belongs to this tier and may take the attempt. */
static uint32_t preferred(const struct pick *pk, uint32_t lo, uint32_t hi)
{
    const struct fy_group *g = pk->lb->group;
    const struct fy_server *p = pk->req->prefer;
    if (!p || p->group != g || p->index >= g->nservers || &g->servers[p->index] != p)
        return NONE;
    if (p->index < lo || p->index >= hi || !candidate(pk, p->index))
        return NONE;
    return p->index;
}

/*
 * The algorithms, one entry each (nginx's peer get/free): `pick` chooses among the usable
 * servers [lo, hi) of one tier (primaries, then backups) and returns NONE when it has no
 * opinion (the smooth round-robin then decides); `release` (optional) hears how an attempt went.
 * Accounting (connections in use, passive ejection) is common to all and stays in
 * fy_lb_release.
 */
struct fy_lb_algo {
    const char *name;
    uint32_t (*pick)(struct pick *pk, int tier, uint32_t lo, uint32_t hi);
    void (*release)(struct fy_lb *lb, const struct fy_server *s, enum fy_lb_outcome o);
};

static uint32_t pick_none(struct pick *pk, int tier, uint32_t lo, uint32_t hi)
{
    (void)pk, (void)tier, (void)lo, (void)hi;
    return NONE;
}

static uint32_t pick_least_conn(struct pick *pk, int tier, uint32_t lo, uint32_t hi)
{
    (void)tier;
    return least_conn(pk, lo, hi);
}

static uint32_t pick_p2c(struct pick *pk, int tier, uint32_t lo, uint32_t hi)
{
    (void)tier;
    return p2c(pk, lo, hi);
}

static uint32_t pick_hash(struct pick *pk, int tier, uint32_t lo, uint32_t hi)
{
    (void)tier;
    const struct fy_lb_shared *sh = pk->lb->group->lb;
    if (!pk->req->has_hash || !sh)
        return NONE; /* no key: round-robin */
    FY_ASSERT(sh->nservers == pk->lb->group->nservers);
    return rendezvous(pk, sh, lo, hi);
}

static uint32_t pick_sticky(struct pick *pk, int tier, uint32_t lo, uint32_t hi)
{
    (void)tier;
    return preferred(pk, lo, hi);
}

static const struct fy_lb_algo algos[] = {
    [FY_LB_ROUND_ROBIN] = {"round-robin", pick_none, NULL},
    [FY_LB_LEAST_CONN] = {"least-conn", pick_least_conn, NULL},
    [FY_LB_P2C] = {"p2c", pick_p2c, NULL},
    [FY_LB_HASH] = {"hash", pick_hash, NULL},
    [FY_LB_STICKY] = {"sticky", pick_sticky, NULL},
};

/* tier 0: primaries, tier 1: backups. */
static uint32_t pick_tier(struct pick *pk, int tier)
{
    const struct fy_group *g = pk->lb->group;
    uint32_t lo = tier ? g->nprimary : 0, hi = tier ? g->nservers : g->nprimary;
    uint32_t i = pk->lb->algo->pick(pk, tier, lo, hi);
    return i != NONE ? i : swrr(pk, lo, hi, NULL, NULL);
}

/* Counts the connection unless max-conns was reached since the server was chosen. */
static bool reserve(struct fy_server *s)
{
    unsigned *a = &s->state->active;
    if (!s->max_conns) {
        __atomic_fetch_add(a, 1, __ATOMIC_RELAXED);
        return true;
    }
    unsigned cur = __atomic_load_n(a, __ATOMIC_RELAXED);
    do {
        if (cur >= s->max_conns)
            return false;
    } while (
        !__atomic_compare_exchange_n(a, &cur, cur + 1, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return true;
}

struct fy_server *fy_lb_pick(struct fy_lb *lb, const struct fy_lb_req *req)
{
    struct pick pk = {.lb = lb, .req = req};
    struct fy_server *sv = lb->group->servers;
    for (;;) {
        uint32_t i = pick_tier(&pk, 0);
        if (i == NONE)
            i = pick_tier(&pk, 1);
        if (i == NONE)
            return NULL;
        if (reserve(&sv[i]))
            return &sv[i];
        if (pk.nlost == MAX_LOST)
            return NULL;
        pk.lost[pk.nlost++] = i;
    }
}

static uint64_t backoff_ms(uint64_t base, unsigned ejections)
{
    uint64_t ms = base < FY_LB_MAX_EJECT_MS ? base : FY_LB_MAX_EJECT_MS;
    /* ms == 0 would loop once per ejection for nothing. */
    while (ms && ejections-- && ms < FY_LB_MAX_EJECT_MS)
        ms *= 2;
    return ms < FY_LB_MAX_EJECT_MS ? ms : FY_LB_MAX_EJECT_MS;
}

static void failed(const struct fy_group *g, struct fy_server *s, uint64_t now_ms)
{
    struct fy_server_state *st = s->state;
    /* Attempts in flight when the server was ejected fail too: counting them would eject it
     * again at once, with a doubled backoff, for one outage. */
    if (now_ms < __atomic_load_n(&st->ejected_until_ms, __ATOMIC_ACQUIRE))
        return;
    unsigned n = __atomic_add_fetch(&st->fails, 1, __ATOMIC_RELAXED);
    if (!g->max_fails || n < g->max_fails)
        return;
    /* Whoever resets the count ejects, so failures racing in from several workers eject once. */
    if (!__atomic_compare_exchange_n(&st->fails, &n, 0, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return;
    unsigned e = __atomic_fetch_add(&st->ejections, 1, __ATOMIC_RELAXED);
    uint64_t ms = backoff_ms(g->fail_timeout, e);
    __atomic_store_n(&st->ejected_until_ms, now_ms + ms, __ATOMIC_RELEASE);
    fy_warn("upstream group %s: server %s ejected for %" PRIu64 " ms after %u consecutive "
            "failures",
            g->name, s->url, ms, n);
}

void fy_lb_release(struct fy_lb *lb, struct fy_server *s, enum fy_lb_outcome outcome,
                   uint64_t now_ms)
{
    struct fy_server_state *st = s->state;
    unsigned a = __atomic_load_n(&st->active, __ATOMIC_RELAXED);
    /* An unmatched release is a caller bug, but wrapping to UINT_MAX would mark the server full
     * (and least loaded never again) for good: the count stops at 0. */
    while (a && !__atomic_compare_exchange_n(&st->active, &a, a - 1, true, __ATOMIC_RELAXED,
                                             __ATOMIC_RELAXED))
        ;
    switch (outcome) {
    case FY_LB_OK:
        __atomic_store_n(&st->fails, 0, __ATOMIC_RELAXED);
        if (__atomic_exchange_n(&st->ejections, 0, __ATOMIC_RELAXED))
            fy_info("upstream group %s: server %s is healthy again", lb->group->name, s->url);
        break;
    case FY_LB_FAILED:
        failed(lb->group, s, now_ms);
        break;
    case FY_LB_NEUTRAL:
        break;
    }
    if (lb->algo->release)
        lb->algo->release(lb, s, outcome);
}

/* splitmix64: spreads a small or patterned seed (a worker number) over the whole state. */
static uint64_t mix_seed(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

int fy_lb_init(struct fy_lb *lb, const struct fy_group *g, uint64_t seed)
{
    lb->group = g;
    lb->algo = (unsigned)g->balance < sizeof(algos) / sizeof(algos[0]) ? &algos[g->balance]
                                                                       : &algos[FY_LB_ROUND_ROBIN];
    lb->rng = mix_seed(seed);
    if (!lb->rng) /* xorshift stays at 0 forever */
        lb->rng = 0x9e3779b97f4a7c15ULL;
    /* calloc(0) may return NULL, which would read as out of memory. */
    lb->current = calloc(g->nservers ? g->nservers : 1, sizeof(*lb->current));
    return lb->current ? 0 : -1;
}

void fy_lb_destroy(struct fy_lb *lb)
{
    free(lb->current);
    lb->current = NULL;
}
