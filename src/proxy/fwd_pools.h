/*
 * A forward proxy's upstream pools: one struct fy_connpool per destination address and TLS
 * settings (struct fy_pool_key), made on first use, per worker (no locks). Unlike a reverse
 * proxy's pools, which the configuration lists, destinations are whatever clients ask for, so
 * lookups are hashed and the table is bounded: past FY_FWD_POOLS_MAX pools, the least recently
 * used pool that no session holds is freed with its idle connections.
 *
 * Ownership: fy_fwd_pools_get() returns a pool with one more holder; the session keeps using it
 * (its connection points to it) until fy_fwd_pools_release(). A held pool is never freed, so an
 * upstream connection's pool pointer stays valid while its session runs; an idle connection
 * belongs to its pool and is closed with it.
 */
#ifndef FY_FWD_POOLS_H
#define FY_FWD_POOLS_H

#include <stdint.h>

#include "core/loop.h"
#include "http/h1_reader.h"
#include "proxy/connpool.h"

#define FY_FWD_POOLS_MAX 1024

struct fy_fwd_pools;

/* `limits` (responses) must outlive the table. NULL when out of memory. */
struct fy_fwd_pools *fy_fwd_pools_new(struct fy_loop *loop, const struct fy_h1r_limits *limits,
                                      uint32_t max_idle, uint64_t idle_ms);

/* Frees every pool and closes their idle connections; none may be held any more. NULL is fine. */
void fy_fwd_pools_free(struct fy_fwd_pools *t);

/* The pool for key (made when there is none), held once more. NULL: out of memory. */
struct fy_connpool *fy_fwd_pools_get(struct fy_fwd_pools *t, const struct fy_pool_key *key);

/* A holder of p is done with it. */
void fy_fwd_pools_release(struct fy_fwd_pools *t, struct fy_connpool *p);

/* How many pools exist (for tests and logs). */
uint32_t fy_fwd_pools_count(const struct fy_fwd_pools *t);

#endif
