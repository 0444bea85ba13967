/*
 * Timers for one loop: an intrusive binary min-heap keyed by deadline (milliseconds on the loop's
 * monotonic clock). The heap links live in struct fy_timer itself, so arming a timer never
 * allocates and cannot fail: whoever owns a timer (a connection, a session) paid for its heap
 * node when it allocated itself, and a failure there fails that object only.
 *
 * Re-arming to a later deadline is O(1): the heap key stays early and the timer is pushed back
 * when it surfaces. That keeps the hot "reset the idle timer on every read" path cheap.
 */
#ifndef FY_TIMER_H
#define FY_TIMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fy_timer;
typedef void fy_timer_fn(struct fy_timer *t);

struct fy_timer {
    uint64_t deadline; /* 0 = disarmed */
    uint64_t key;      /* deadline the heap orders by; <= deadline while armed */
    struct fy_timer *parent, *left, *right; /* heap links, valid while in_heap */
    fy_timer_fn *fn;
    bool in_heap;
};

struct fy_timer_heap {
    struct fy_timer *root;
    uint32_t len;
};

static inline void fy_timer_init(struct fy_timer *t, fy_timer_fn *fn)
{
    t->deadline = t->key = 0;
    t->parent = t->left = t->right = NULL;
    t->in_heap = false;
    t->fn = fn;
}

/* Arms t to fire at `deadline` (0 is taken as 1). Never fails and never allocates. */
void fy_timer_heap_arm(struct fy_timer_heap *h, struct fy_timer *t, uint64_t deadline);

/* Disarms t and removes it from the heap; safe on a disarmed timer. Call before freeing t. */
void fy_timer_heap_remove(struct fy_timer_heap *h, struct fy_timer *t);

/* Pops and returns one timer due at `now`, or NULL. The returned timer is disarmed. */
struct fy_timer *fy_timer_heap_pop_due(struct fy_timer_heap *h, uint64_t now);

/* Milliseconds until the earliest heap key, -1 if empty, 0 if already due. */
int fy_timer_heap_wait_ms(const struct fy_timer_heap *h, uint64_t now);

#endif
