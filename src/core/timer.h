/*
 * Timers for one loop: a binary min-heap keyed by deadline (milliseconds on the loop's monotonic
 * clock). Re-arming to a later deadline is O(1): the heap key stays early and the timer is pushed
 * back when it surfaces. That keeps the hot "reset the idle timer on every read" path cheap.
 */
#ifndef FY_TIMER_H
#define FY_TIMER_H

#include <stdint.h>

struct fy_timer;
typedef void fy_timer_fn(struct fy_timer *t);

struct fy_timer {
    uint64_t deadline; /* 0 = disarmed */
    uint64_t key;      /* deadline the heap orders by; <= deadline while armed */
    int32_t heap_idx;  /* -1 when not in the heap */
    fy_timer_fn *fn;
};

struct fy_timer_heap {
    struct fy_timer **items;
    uint32_t len, cap;
};

static inline void fy_timer_init(struct fy_timer *t, fy_timer_fn *fn)
{
    t->deadline = t->key = 0;
    t->heap_idx = -1;
    t->fn = fn;
}

/* Arms t to fire at `deadline`. Returns 0, or -1 if the heap cannot grow (the timer stays off). */
int fy_timer_heap_arm(struct fy_timer_heap *h, struct fy_timer *t, uint64_t deadline);

/* Disarms t and removes it from the heap; safe on a disarmed timer. Call before freeing t. */
void fy_timer_heap_remove(struct fy_timer_heap *h, struct fy_timer *t);

/* Pops and returns one timer due at `now`, or NULL. The returned timer is disarmed. */
struct fy_timer *fy_timer_heap_pop_due(struct fy_timer_heap *h, uint64_t now);

/* Milliseconds until the earliest heap key, -1 if empty, 0 if already due. */
int fy_timer_heap_wait_ms(const struct fy_timer_heap *h, uint64_t now);

void fy_timer_heap_free(struct fy_timer_heap *h);

#endif
