/*
 * Shared inside src/proxy between lb.c (picking) and lb_hash.c (hashing, rendezvous scores): the
 * layout of struct fy_lb_shared. It is immutable once built, so workers read it without locks; it
 * lives as long as its group's generation.
 */
#ifndef FY_LB_PRIV_H
#define FY_LB_PRIV_H

#include <stdint.h>

#include "proxy/lb.h"

/* FY_LB_HASH: each server's rendezvous id, fy_lb_hash() of its URL, by server index. The id
 * depends on the URL only, so a server keeps its keys whatever its position in the group. */
struct fy_lb_shared {
    uint32_t nservers;
    uint64_t id[];
};

/* Weighted rendezvous score of server `id` with `weight` for key hash `key`: -ln(u) / weight,
 * u in (0, 1) a hash of (key, id). Lowest wins. Plain double arithmetic in one function, so
 * every worker and every thread gets the same bits for the same inputs. */
double fy_lb_score(uint64_t key, uint64_t id, uint32_t weight);

#endif
