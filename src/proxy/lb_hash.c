/*
 * What FY_LB_HASH groups share and how they score servers (weighted rendezvous hashing, highest
 * random weight): for a key, every candidate server i gets score_i = -ln(u_i) / weight_i with
 * u_i uniform in (0, 1) from a hash of (key, id_i), and the lowest score wins. -ln(u) is
 * exponential with rate 1, so score_i is exponential with rate weight_i and server i wins with
 * probability weight_i / (sum of the candidates' weights): exactly the weights, with no ring
 * granularity. A server's score depends only on the key and its own id and weight, so removing
 * one (or skipping it as unusable or tried) moves only the keys it won, and those spread over the
 * others in proportion to weight. Also fy_lb_hash, used for keys, ids and sticky cookies.
 */
#include "proxy/lb_priv.h"

#include <math.h>
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

/* FNV-1a alone mixes its last bytes poorly into the high bits: murmur3's finaliser spreads every
 * input bit over the whole word. */
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

/*
 * The (key, id) pair to 64 bits. A plain fmix64(key ^ id) would feed every server the same key
 * with a fixed XOR difference, a structure a multiply-xorshift mixer does not fully hide; the
 * 128-bit product (wyhash's "mum") is non-linear in both words at once, then fmix64 avalanches.
 */
static uint64_t pair_hash(uint64_t key, uint64_t id)
{
    unsigned __int128 m =
        (unsigned __int128)(key ^ 0xa0761d6478bd642fULL) * (id ^ 0xe7037ed1a0b428dbULL);
    return fmix64((uint64_t)m ^ (uint64_t)(m >> 64));
}

double fy_lb_score(uint64_t key, uint64_t id, uint32_t weight)
{
    /* u = (j + 0.5) / 2^52, j the top 52 bits: every step is exact in a double (j + 0.5 needs 53
     * bits), so u is strictly inside (0, 1) and -log(u) is finite and > 0. 2^52 levels are far
     * finer than any share a weight can ask for. */
    double u = ((double)(pair_hash(key, id) >> 12) + 0.5) * 0x1p-52;
    /* A weight of 0 is refused by the configuration; here it counts as 1 rather than divide by
     * 0. Any uint32_t weight is exact in a double, so huge weights cannot overflow. */
    return -log(u) / (double)(weight ? weight : 1);
}

struct fy_lb_shared *fy_lb_shared_build(const struct fy_group *g, bool *ok)
{
    *ok = true;
    if (g->balance != FY_LB_HASH)
        return NULL;
    FY_ASSERT(g->nprimary <= g->nservers);
    struct fy_lb_shared *sh = malloc(sizeof(*sh) + (size_t)g->nservers * sizeof(sh->id[0]));
    if (!sh) {
        *ok = false;
        return NULL;
    }
    sh->nservers = g->nservers;
    for (uint32_t i = 0; i < g->nservers; i++)
        sh->id[i] = fy_lb_hash(g->servers[i].url, strlen(g->servers[i].url));
    return sh;
}

void fy_lb_shared_free(struct fy_lb_shared *sh)
{
    free(sh);
}
