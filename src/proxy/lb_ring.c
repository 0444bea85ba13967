/*
 * The consistent-hash ring of a FY_LB_HASH group (ketama-like) and fy_lb_hash. Each server owns
 * FY_LB_POINTS_PER_WEIGHT points per unit of weight, placed at the hash of "URL#i": a server's
 * points depend only on its own URL and weight, so adding or removing one server moves only the
 * keys whose nearest point it owns. Primaries and backups get separate rings so a backup never
 * owns a primary's keys.
 *
 * Bound: a tier whose weights would need more than FY_LB_RING_MAX_POINTS points gets that many,
 * shared in proportion to weight (at least one per server), so a ring stays under
 * FY_LB_RING_MAX_POINTS + nservers points (16 bytes each) however large the weights are. The
 * price is that changing such a group's total weight moves more keys than the ideal.
 */
#include "proxy/lb_priv.h"

#include <stdlib.h>
#include <string.h>

#include "core/assert.h"

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= FNV_PRIME;
    }
    return h;
}

/* FNV-1a alone mixes its last bytes poorly into the high bits, and ring points of one server
 * differ only there: murmur3's finaliser spreads every input bit over the whole word. */
static uint64_t fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

uint64_t fy_lb_hash(const void *data, size_t len)
{
    return fmix64(fnv1a(FNV_OFFSET, data, len));
}

/* fy_lb_hash("URL#i") without building the string (URLs have no length limit). */
static uint64_t point_hash(const char *url, uint32_t i)
{
    char digits[10];
    size_t n = 0;
    do {
        digits[sizeof(digits) - 1 - n++] = (char)('0' + i % 10);
        i /= 10;
    } while (i);
    uint64_t h = fnv1a(FNV_OFFSET, url, strlen(url));
    h = fnv1a(h, "#", 1);
    h = fnv1a(h, digits + sizeof(digits) - n, n);
    return fmix64(h);
}

static int cmp_point(const void *a, const void *b)
{
    const struct fy_lb_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return (x->server > y->server) - (x->server < y->server);
}

static uint64_t tier_weight(const struct fy_group *g, uint32_t lo, uint32_t hi)
{
    uint64_t w = 0;
    for (uint32_t i = lo; i < hi; i++)
        w += g->servers[i].weight;
    return w;
}

static uint32_t server_points(uint32_t weight, uint64_t total_weight)
{
    if (total_weight <= FY_LB_RING_MAX_POINTS / FY_LB_POINTS_PER_WEIGHT)
        return weight * FY_LB_POINTS_PER_WEIGHT;
    uint64_t n = (uint64_t)weight * FY_LB_RING_MAX_POINTS / total_weight;
    return n ? (uint32_t)n : 1;
}

static size_t tier_points(const struct fy_group *g, uint32_t lo, uint32_t hi)
{
    uint64_t tw = tier_weight(g, lo, hi);
    size_t n = 0;
    for (uint32_t i = lo; i < hi; i++)
        n += server_points(g->servers[i].weight, tw);
    return n;
}

static struct fy_lb_point *fill_tier(const struct fy_group *g, uint32_t lo, uint32_t hi,
                                     struct fy_lb_point *out, struct fy_lb_ring *ring)
{
    uint64_t tw = tier_weight(g, lo, hi);
    struct fy_lb_point *p = out;
    for (uint32_t s = lo; s < hi; s++) {
        uint32_t n = server_points(g->servers[s].weight, tw);
        for (uint32_t i = 0; i < n; i++)
            *p++ = (struct fy_lb_point){point_hash(g->servers[s].url, i), s};
    }
    ring->points = out;
    ring->npoints = (uint32_t)(p - out);
    qsort(out, ring->npoints, sizeof(*out), cmp_point);
    return p;
}

struct fy_lb_shared *fy_lb_shared_build(const struct fy_group *g, bool *ok)
{
    *ok = true;
    if (g->balance != FY_LB_HASH)
        return NULL;
    FY_ASSERT(g->nprimary <= g->nservers);
    size_t np = tier_points(g, 0, g->nprimary);
    size_t nb = tier_points(g, g->nprimary, g->nservers);
    struct fy_lb_shared *sh = calloc(1, sizeof(*sh));
    if (!sh)
        goto fail_sh;
    /* One extra point so an empty group still gets a valid (unused) block. */
    sh->block = malloc((np + nb + 1) * sizeof(*sh->block));
    if (!sh->block)
        goto fail_block;
    struct fy_lb_point *end = fill_tier(g, 0, g->nprimary, sh->block, &sh->tier[0]);
    fill_tier(g, g->nprimary, g->nservers, end, &sh->tier[1]);
    return sh;

fail_block:
    free(sh);
fail_sh:
    *ok = false;
    return NULL;
}

void fy_lb_shared_free(struct fy_lb_shared *sh)
{
    if (!sh)
        return;
    free(sh->block);
    free(sh);
}

uint32_t fy_lb_ring_first(const struct fy_lb_ring *r, uint64_t h)
{
    uint32_t lo = 0, hi = r->npoints;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->points[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == r->npoints ? 0 : lo;
}
