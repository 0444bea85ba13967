/* A forward proxy's destination pools, hashed and bounded; see fwd_pools.h. */
#include "proxy/fwd_pools.h"

#include <stdlib.h>
#include <string.h>

#include "core/assert.h"
#include "core/macros.h"
#include "net/tls.h"

#define NBUCKETS 2048 /* a power of two, twice FY_FWD_POOLS_MAX */

struct entry {
    struct fy_connpool pool;     /* first: the pointer handed out */
    struct entry *hnext;         /* bucket chain */
    struct entry *lprev, *lnext; /* the unheld list, most recently released first */
    uint64_t hash;
    uint32_t holders;
    /* The key, compared without formatting text on every request: the TLS context by identity
     * (a reference is held, so its address cannot be reused by another one while the entry
     * lives) and the name sent and verified. */
    struct fy_tls_client *tls;
    char *tls_name;
};

struct fy_fwd_pools {
    struct fy_loop *loop;
    const struct fy_h1r_limits *limits;
    uint32_t max_idle;
    uint64_t idle_ms;
    uint32_t n;
    struct entry *unheld_head, *unheld_tail;
    struct entry *buckets[NBUCKETS];
};

struct fy_fwd_pools *fy_fwd_pools_new(struct fy_loop *loop, const struct fy_h1r_limits *limits,
                                      uint32_t max_idle, uint64_t idle_ms)
{
    struct fy_fwd_pools *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->loop = loop;
    t->limits = limits;
    t->max_idle = max_idle;
    t->idle_ms = idle_ms;
    return t;
}

static void unheld_unlink(struct fy_fwd_pools *t, struct entry *e)
{
    if (e->lprev)
        e->lprev->lnext = e->lnext;
    else
        t->unheld_head = e->lnext;
    if (e->lnext)
        e->lnext->lprev = e->lprev;
    else
        t->unheld_tail = e->lprev;
    e->lprev = e->lnext = NULL;
}

static void entry_free(struct fy_fwd_pools *t, struct entry *e)
{
    struct entry **pp = &t->buckets[e->hash & (NBUCKETS - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    fy_connpool_destroy(&e->pool);
    fy_tls_client_unref(e->tls);
    free(e->tls_name);
    free(e);
    t->n--;
}

void fy_fwd_pools_free(struct fy_fwd_pools *t)
{
    if (!t)
        return;
    for (uint32_t b = 0; b < NBUCKETS; b++)
        while (t->buckets[b]) {
            FY_ASSERT(t->buckets[b]->holders == 0);
            entry_free(t, t->buckets[b]);
        }
    free(t);
}

/* FNV-1a over the address bytes, the TLS context's identity and the name. */
static uint64_t hash_key(const struct fy_pool_key *k)
{
    uint64_t h = 1469598103934665603ull;
    const unsigned char *p = (const unsigned char *)&k->addr->ss;
    for (socklen_t i = 0; i < k->addr->len; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    uintptr_t tls = (uintptr_t)k->tls;
    for (size_t i = 0; i < sizeof(tls); i++, tls >>= 8)
        h = (h ^ (tls & 0xff)) * 1099511628211ull;
    for (const char *n = k->tls ? k->tls_name : NULL; n && *n; n++)
        h = (h ^ (unsigned char)*n) * 1099511628211ull;
    return h;
}

static bool same_key(const struct entry *e, const struct fy_pool_key *k)
{
    const struct fy_addr *a = k->addr;
    if (e->pool.addr.len != a->len || memcmp(&e->pool.addr.ss, &a->ss, a->len) || e->tls != k->tls)
        return false;
    return !k->tls || !strcmp(e->tls_name, k->tls_name ? k->tls_name : "");
}

struct fy_connpool *fy_fwd_pools_get(struct fy_fwd_pools *t, const struct fy_pool_key *key)
{
    uint64_t h = hash_key(key);
    for (struct entry *e = t->buckets[h & (NBUCKETS - 1)]; e; e = e->hnext) {
        if (e->hash == h && same_key(e, key)) {
            if (e->holders++ == 0)
                unheld_unlink(t, e);
            return &e->pool;
        }
    }
    /* Bounded: the least recently used pool nobody holds goes, with its idle connections. */
    if (t->n >= FY_FWD_POOLS_MAX && t->unheld_tail) {
        struct entry *old = t->unheld_tail;
        unheld_unlink(t, old);
        entry_free(t, old);
    }
    char text[1400];
    fy_pool_key_text(key, text, sizeof(text));
    struct entry *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    if (key->tls && !(e->tls_name = strdup(key->tls_name ? key->tls_name : ""))) {
        free(e);
        return NULL;
    }
    if (fy_connpool_init_key(&e->pool, t->loop, key, text, t->limits, t->max_idle, t->idle_ms) <
        0) {
        free(e->tls_name);
        free(e);
        return NULL;
    }
    e->tls = key->tls ? fy_tls_client_ref((struct fy_tls_client *)key->tls) : NULL;
    e->hash = h;
    e->holders = 1;
    e->hnext = t->buckets[h & (NBUCKETS - 1)];
    t->buckets[h & (NBUCKETS - 1)] = e;
    t->n++;
    return &e->pool;
}

void fy_fwd_pools_release(struct fy_fwd_pools *t, struct fy_connpool *p)
{
    struct entry *e = container_of(p, struct entry, pool);
    FY_ASSERT(e->holders > 0);
    if (--e->holders)
        return;
    e->lprev = NULL;
    e->lnext = t->unheld_head;
    if (t->unheld_head)
        t->unheld_head->lprev = e;
    else
        t->unheld_tail = e;
    t->unheld_head = e;
}

uint32_t fy_fwd_pools_count(const struct fy_fwd_pools *t)
{
    return t->n;
}
