/*
 * Shared inside src/proxy between lb.c (picking) and lb_ring.c (the consistent-hash ring): the
 * layout of struct fy_lb_shared. A ring is immutable once built, so workers read it without
 * locks; it lives as long as its group's generation.
 */
#ifndef FY_LB_PRIV_H
#define FY_LB_PRIV_H

#include <stdint.h>

#include "proxy/lb.h"

/* Total points of one ring stay at most this (or nservers if that is larger): see lb_ring.c. */
#define FY_LB_RING_MAX_POINTS (160 * 256)
#define FY_LB_POINTS_PER_WEIGHT 160

struct fy_lb_point {
    uint64_t hash;
    uint32_t server; /* index in the group */
};

/* Points sorted by hash (then server, so equal hashes order the same on every build). */
struct fy_lb_ring {
    const struct fy_lb_point *points;
    uint32_t npoints; /* 0: the tier has no servers */
};

struct fy_lb_shared {
    struct fy_lb_ring tier[2]; /* primaries, backups: backups never take a primary's keys */
    struct fy_lb_point *block; /* owns both rings' points */
};

/* Index of the first point whose hash is >= h, wrapping to 0 past the last. r->npoints > 0. */
uint32_t fy_lb_ring_first(const struct fy_lb_ring *r, uint64_t h);

#endif
