/* Lazy-rekeyed binary min-heap of timers; see timer.h for the invariant key <= deadline. */
#include "core/timer.h"

#include <stdlib.h>

static void heap_set(struct fy_timer_heap *h, uint32_t i, struct fy_timer *t)
{
    h->items[i] = t;
    t->heap_idx = (int32_t)i;
}

static void sift_up(struct fy_timer_heap *h, uint32_t i)
{
    struct fy_timer *t = h->items[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (h->items[parent]->key <= t->key)
            break;
        heap_set(h, i, h->items[parent]);
        i = parent;
    }
    heap_set(h, i, t);
}

static void sift_down(struct fy_timer_heap *h, uint32_t i)
{
    struct fy_timer *t = h->items[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= h->len)
            break;
        if (child + 1 < h->len && h->items[child + 1]->key < h->items[child]->key)
            child++;
        if (t->key <= h->items[child]->key)
            break;
        heap_set(h, i, h->items[child]);
        i = child;
    }
    heap_set(h, i, t);
}

static int heap_push(struct fy_timer_heap *h, struct fy_timer *t)
{
    if (h->len == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 256;
        struct fy_timer **items = realloc(h->items, cap * sizeof(*items));
        if (!items)
            return -1;
        h->items = items;
        h->cap = cap;
    }
    heap_set(h, h->len++, t);
    sift_up(h, h->len - 1);
    return 0;
}

int fy_timer_heap_arm(struct fy_timer_heap *h, struct fy_timer *t, uint64_t deadline)
{
    if (deadline == 0)
        deadline = 1;
    t->deadline = deadline;
    if (t->heap_idx < 0) {
        t->key = deadline;
        if (heap_push(h, t) < 0) {
            t->deadline = 0;
            return -1;
        }
    } else if (deadline < t->key) {
        t->key = deadline;
        sift_up(h, (uint32_t)t->heap_idx);
    }
    /* A later deadline keeps the early key: the timer is re-keyed when it surfaces. */
    return 0;
}

void fy_timer_heap_remove(struct fy_timer_heap *h, struct fy_timer *t)
{
    t->deadline = 0;
    if (t->heap_idx < 0)
        return;
    uint32_t i = (uint32_t)t->heap_idx;
    t->heap_idx = -1;
    h->len--;
    if (i == h->len)
        return;
    struct fy_timer *last = h->items[h->len];
    heap_set(h, i, last);
    if (i > 0 && h->items[(i - 1) / 2]->key > last->key)
        sift_up(h, i);
    else
        sift_down(h, i);
}

struct fy_timer *fy_timer_heap_pop_due(struct fy_timer_heap *h, uint64_t now)
{
    while (h->len > 0 && h->items[0]->key <= now) {
        struct fy_timer *t = h->items[0];
        if (t->deadline == 0) {
            fy_timer_heap_remove(h, t);
            continue;
        }
        if (t->deadline > now) {
            /* Moved later since it was keyed: push it back down. */
            t->key = t->deadline;
            sift_down(h, 0);
            continue;
        }
        fy_timer_heap_remove(h, t);
        return t;
    }
    return NULL;
}

int fy_timer_heap_wait_ms(const struct fy_timer_heap *h, uint64_t now)
{
    if (h->len == 0)
        return -1;
    uint64_t key = h->items[0]->key;
    if (key <= now)
        return 0;
    uint64_t d = key - now;
    return d > 60000 ? 60000 : (int)d;
}

void fy_timer_heap_free(struct fy_timer_heap *h)
{
    free(h->items);
    h->items = NULL;
    h->len = h->cap = 0;
}
