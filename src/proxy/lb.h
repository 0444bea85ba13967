/*
 * Load balancing over one upstream group (nginx's get/free peer): pick() chooses a server for an
 * attempt, release() reports how the attempt went. One struct fy_lb per group per worker holds
 * the per-thread state (round-robin weights, random state), so picking takes no lock; what all
 * workers share lives in struct fy_server_state (atomics: connections in use, health, ejection)
 * and in the group's immutable struct fy_lb_shared (the servers' rendezvous ids), built once
 * per configuration generation.
 *
 * Which servers may be picked: a server is usable when its active check does not say down, it is
 * not passively ejected, it is below max-conns, and this exchange has not tried it yet. Backup
 * servers are only picked when no primary is usable. Algorithms (group.balance):
 *   round-robin  smooth weighted round-robin (nginx): over any window the picks follow the weights
 *   least-conn   fewest connections in use relative to weight (ties: round-robin order)
 *   p2c          two random usable servers (weighted), the one with fewer connections per weight
 *   hash         weighted rendezvous hashing of a key (client-ip, header:NAME, cookie:NAME, path):
 *                each candidate scores -ln(u) / weight, u a hash of (key, server URL), lowest
 *                wins. Shares follow the weights exactly (up to sampling); when one of N servers
 *                leaves or is unusable only its keys (about 1/N) move, spread over the others by
 *                weight. O(servers) per pick, fine up to a few hundred servers
 *   sticky       the server named by the sticky cookie when it is usable, else round-robin (the
 *                session then sets the cookie to the server it used)
 *
 * Ownership: a fy_lb points into its group (same generation) and is freed before it.
 */
#ifndef FY_LB_H
#define FY_LB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"

#define FY_LB_MAX_EJECT_MS (5 * 60 * 1000) /* the ejection backoff stops doubling here */
#define FY_LB_MAX_TRIED 16                 /* attempts one exchange can make (1 + retries) */

struct fy_lb_req {
    uint64_t hash;                  /* FY_LB_HASH: fy_lb_hash() of the key */
    bool has_hash;                  /* false (key absent): hash picks like round-robin */
    const struct fy_server *prefer; /* FY_LB_STICKY: the cookie's server, or NULL */
    const uint32_t *tried;          /* server indices this exchange already tried */
    uint32_t ntried;
    uint64_t now_ms; /* fy_conf_now_ms() */
};

enum fy_lb_outcome {
    FY_LB_OK,      /* a response came (any status) */
    FY_LB_FAILED,  /* connect failed, refused, reset or timed out: counts towards ejection */
    FY_LB_NEUTRAL, /* not the server's fault (the client left): no health effect */
};

struct fy_lb_algo; /* the algorithm's pick/release (lb.c) */

struct fy_lb {
    const struct fy_group *group;
    const struct fy_lb_algo *algo;
    uint64_t rng;     /* xorshift state, per worker */
    int64_t *current; /* smooth round-robin: current weight of each server */
};

/* Prepares the per-worker state of group g. Returns 0 or -1 (out of memory). */
int fy_lb_init(struct fy_lb *lb, const struct fy_group *g, uint64_t seed);
void fy_lb_destroy(struct fy_lb *lb);

/* Picks a server and counts a connection in use on it (state->active). NULL: no usable server
 * (every one down, ejected, full or tried). */
struct fy_server *fy_lb_pick(struct fy_lb *lb, const struct fy_lb_req *req);

/* Ends an attempt on s (from fy_lb_pick): uncounts the connection and applies the outcome to
 * passive health. Logs a server's ejection (warn) with its group, URL and how long. */
void fy_lb_release(struct fy_lb *lb, struct fy_server *s, enum fy_lb_outcome outcome,
                   uint64_t now_ms);

/* Usable for a new attempt at now_ms (ignoring max-conns when `ignore_full`). */
bool fy_lb_usable(const struct fy_server *s, uint64_t now_ms, bool ignore_full);

/* The group's shared data (rendezvous ids for FY_LB_HASH; NULL is valid for the others and
 * returned with *ok set true). Returns NULL with *ok false when out of memory. */
struct fy_lb_shared *fy_lb_shared_build(const struct fy_group *g, bool *ok);
void fy_lb_shared_free(struct fy_lb_shared *sh);

/* A 64-bit hash of a key (well mixed: also used for rendezvous ids and cookie ids). */
uint64_t fy_lb_hash(const void *data, size_t len);

#endif
