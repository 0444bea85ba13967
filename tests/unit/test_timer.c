/* Unit tests for src/core/timer.c: the intrusive, lazily re-keyed timer heap, and arming through
 * the loop while every allocation fails. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/loop.h"
#include "core/timer.h"
#include "fail_alloc.h"

static void noop(struct fy_timer *t)
{
    (void)t;
}

/* Walks the tree: parent links, heap order, key <= deadline, and completeness (level-order
 * positions are exactly 1..len). Returns the highest position seen. */
static uint32_t walk(const struct fy_timer *t, const struct fy_timer *parent, uint32_t pos,
                     uint32_t *count)
{
    if (!t)
        return 0;
    cr_assert(t->in_heap);
    cr_assert_eq(t->parent, parent, "parent link at position %u", pos);
    if (parent)
        cr_assert_leq(parent->key, t->key, "heap order at position %u", pos);
    if (t->deadline)
        cr_assert_leq(t->key, t->deadline);
    (*count)++;
    uint32_t l = walk(t->left, t, 2 * pos, count);
    uint32_t r = walk(t->right, t, 2 * pos + 1, count);
    uint32_t max = pos;
    return l > max ? (l > r ? l : r) : (r > max ? r : max);
}

static void check_heap(const struct fy_timer_heap *h)
{
    uint32_t count = 0;
    uint32_t max = walk(h->root, NULL, 1, &count);
    cr_assert_eq(count, h->len);
    cr_assert_eq(max, h->len, "tree is not complete");
}

Test(timer, empty_heap)
{
    struct fy_timer_heap h = {0};
    cr_assert_null(fy_timer_heap_pop_due(&h, 1000));
    cr_assert_eq(fy_timer_heap_wait_ms(&h, 0), -1);
}

Test(timer, pops_in_deadline_order)
{
    struct fy_timer_heap h = {0};
    struct fy_timer t[6];
    const uint64_t dl[6] = {50, 10, 30, 20, 60, 40};
    for (int i = 0; i < 6; i++) {
        fy_timer_init(&t[i], noop);
        cr_assert_not(t[i].in_heap);
        fy_timer_heap_arm(&h, &t[i], dl[i]);
        check_heap(&h);
    }
    cr_assert_eq(fy_timer_heap_wait_ms(&h, 0), 10);
    cr_assert_eq(fy_timer_heap_wait_ms(&h, 5), 5);
    cr_assert_null(fy_timer_heap_pop_due(&h, 9));
    uint64_t last = 0;
    for (int i = 0; i < 6; i++) {
        struct fy_timer *p = fy_timer_heap_pop_due(&h, 100);
        cr_assert_not_null(p);
        cr_assert_eq(p->deadline, 0); /* popped timers are disarmed */
        cr_assert_not(p->in_heap);
        uint64_t d = dl[p - t];
        cr_assert_geq(d, last);
        last = d;
        check_heap(&h);
    }
    cr_assert_null(fy_timer_heap_pop_due(&h, 100));
    cr_assert_eq(h.len, 0);
}

Test(timer, pop_due_only_due)
{
    struct fy_timer_heap h = {0};
    struct fy_timer a, b;
    fy_timer_init(&a, noop);
    fy_timer_init(&b, noop);
    fy_timer_heap_arm(&h, &a, 100);
    fy_timer_heap_arm(&h, &b, 200);
    cr_assert_eq(fy_timer_heap_pop_due(&h, 150), &a);
    cr_assert_null(fy_timer_heap_pop_due(&h, 150));
    cr_assert_eq(fy_timer_heap_wait_ms(&h, 150), 50);
    cr_assert_eq(fy_timer_heap_wait_ms(&h, 250), 0);
    cr_assert_eq(fy_timer_heap_pop_due(&h, 200), &b); /* deadline == now is due */
}

Test(timer, rearm_later_is_lazy)
{
    struct fy_timer_heap h = {0};
    struct fy_timer a, b;
    fy_timer_init(&a, noop);
    fy_timer_init(&b, noop);
    fy_timer_heap_arm(&h, &a, 100);
    fy_timer_heap_arm(&h, &b, 150);
    fy_timer_heap_arm(&h, &a, 300); /* later: key stays 100 */
    cr_assert_eq(a.key, 100);
    cr_assert_eq(a.deadline, 300);
    check_heap(&h);
    cr_assert_eq(fy_timer_heap_wait_ms(&h, 0), 100); /* may wake early, never late */
    /* At 120 nothing is due: a surfaces, is re-keyed to 300 and pushed down. */
    cr_assert_null(fy_timer_heap_pop_due(&h, 120));
    cr_assert_eq(a.key, 300);
    check_heap(&h);
    cr_assert_eq(fy_timer_heap_wait_ms(&h, 120), 30);
    cr_assert_eq(fy_timer_heap_pop_due(&h, 200), &b);
    cr_assert_null(fy_timer_heap_pop_due(&h, 299));
    cr_assert_eq(fy_timer_heap_pop_due(&h, 300), &a);
    cr_assert_eq(h.len, 0);
}

Test(timer, rearm_earlier_sifts_up)
{
    struct fy_timer_heap h = {0};
    struct fy_timer t[4];
    for (int i = 0; i < 4; i++) {
        fy_timer_init(&t[i], noop);
        fy_timer_heap_arm(&h, &t[i], 100 + (uint64_t)i * 10);
    }
    fy_timer_heap_arm(&h, &t[3], 5);
    cr_assert_eq(t[3].key, 5);
    check_heap(&h);
    cr_assert_eq(h.root, &t[3]);
    cr_assert_eq(fy_timer_heap_pop_due(&h, 5), &t[3]);
    cr_assert_eq(h.len, 3);
}

Test(timer, remove_and_stop)
{
    struct fy_timer_heap h = {0};
    struct fy_timer t[5];
    for (int i = 0; i < 5; i++) {
        fy_timer_init(&t[i], noop);
        fy_timer_heap_arm(&h, &t[i], 10 + (uint64_t)i);
    }
    fy_timer_heap_remove(&h, &t[0]); /* the root */
    fy_timer_heap_remove(&h, &t[4]); /* the last */
    fy_timer_heap_remove(&h, &t[2]); /* the middle */
    fy_timer_heap_remove(&h, &t[2]); /* twice is safe */
    check_heap(&h);
    cr_assert_eq(h.len, 2);
    cr_assert_not(t[0].in_heap);
    cr_assert_eq(t[0].deadline, 0);
    /* Lazy stop (deadline = 0, left in the heap) is skipped by pop_due. */
    t[1].deadline = 0;
    cr_assert_eq(fy_timer_heap_pop_due(&h, 100), &t[3]);
    cr_assert_not(t[1].in_heap);
    cr_assert_null(fy_timer_heap_pop_due(&h, 100));
    cr_assert_eq(h.len, 0);
    /* Removing a never-armed timer is safe. */
    struct fy_timer u;
    fy_timer_init(&u, noop);
    fy_timer_heap_remove(&h, &u);
}

Test(timer, deadline_zero_is_armed)
{
    struct fy_timer_heap h = {0};
    struct fy_timer a;
    fy_timer_init(&a, noop);
    fy_timer_heap_arm(&h, &a, 0);
    cr_assert_neq(a.deadline, 0);
    cr_assert_eq(fy_timer_heap_pop_due(&h, 1), &a);
}

Test(timer, stopped_then_rearmed)
{
    struct fy_timer_heap h = {0};
    struct fy_timer a;
    fy_timer_init(&a, noop);
    fy_timer_heap_arm(&h, &a, 50);
    a.deadline = 0; /* fy_loop_timer_stop */
    fy_timer_heap_arm(&h, &a, 80);
    cr_assert_null(fy_timer_heap_pop_due(&h, 60));
    cr_assert_eq(fy_timer_heap_pop_due(&h, 80), &a);
}

Test(timer, wait_ms_capped)
{
    struct fy_timer_heap h = {0};
    struct fy_timer a;
    fy_timer_init(&a, noop);
    fy_timer_heap_arm(&h, &a, 10000000);
    cr_assert_eq(fy_timer_heap_wait_ms(&h, 0), 60000);
}

/* Randomised operations against a reference model: the set of armed deadlines. */
#define NT 200

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

Test(timer, randomized_against_model)
{
    struct fy_timer_heap h = {0};
    static struct fy_timer t[NT];
    uint64_t model[NT]; /* 0 = not armed */
    for (int i = 0; i < NT; i++) {
        fy_timer_init(&t[i], noop);
        model[i] = 0;
    }
    uint64_t now = 1;
    for (int step = 0; step < 200000; step++) {
        int i = (int)(rnd() % NT);
        unsigned op = (unsigned)(rnd() % 100);
        if (op < 45) {
            uint64_t d = now + rnd() % 1000;
            fy_timer_heap_arm(&h, &t[i], d);
            model[i] = d ? d : 1;
        } else if (op < 55) {
            fy_timer_heap_remove(&h, &t[i]);
            model[i] = 0;
        } else if (op < 62) {
            t[i].deadline = 0; /* lazy stop */
            model[i] = 0;
        } else {
            now += rnd() % 20;
            /* Every wait bound is no later than the earliest armed deadline. */
            uint64_t min = 0;
            for (int k = 0; k < NT; k++)
                if (model[k] && (!min || model[k] < min))
                    min = model[k];
            int w = fy_timer_heap_wait_ms(&h, now);
            if (min) {
                cr_assert_geq(w, 0);
                cr_assert_leq(now + (uint64_t)w, min > now ? min : now);
            }
            bool popped[NT] = {0};
            struct fy_timer *p;
            while ((p = fy_timer_heap_pop_due(&h, now))) {
                int k = (int)(p - t);
                cr_assert(k >= 0 && k < NT);
                cr_assert(!popped[k], "timer %d popped twice", k);
                cr_assert_neq(model[k], 0, "step %d: disarmed timer %d fired", step, k);
                cr_assert_leq(model[k], now, "step %d: timer %d fired early", step, k);
                cr_assert_eq(p->deadline, 0);
                popped[k] = true;
                model[k] = 0;
            }
            for (int k = 0; k < NT; k++)
                cr_assert(model[k] == 0 || model[k] > now, "step %d: timer %d (due %llu) missed",
                          step, k, (unsigned long long)model[k]);
            check_heap(&h);
        }
        for (int k = 0; k < NT; k++)
            cr_assert_eq(t[k].deadline, model[k]);
    }
}

/* Allocation failures are injected (fail_alloc.h) while timers are armed. */
#define NARM 20000

/* Regression (defect 7): arming used to grow an array and drop the timer when that failed,
 * leaving a connection without a timeout. Arming no longer allocates at all. */
Test(timer, arming_survives_allocation_failure)
{
    struct fy_loop loop;
    cr_assert_eq(fy_loop_init(&loop), 0);
    struct fy_timer *t = malloc(NARM * sizeof(*t));
    cr_assert_not_null(t);
    for (int i = 0; i < NARM; i++)
        fy_timer_init(&t[i], noop);
    fail_allocs = 1;
    for (int i = 0; i < NARM; i++)
        fy_loop_timer_set(&loop, &t[i], (uint64_t)((i * 7919) % NARM) + 1);
    fail_allocs = 0;
#ifndef FY_NO_ALLOC_INJECTION
    cr_assert_eq(failed_allocs, 0, "arming tried to allocate %u time(s)", failed_allocs);
    /* The injection itself works. */
    void *(*volatile alloc)(size_t) = malloc;
    fail_allocs = 1;
    void *x = alloc(16);
    fail_allocs = 0;
    cr_assert_null(x);
    cr_assert_eq(failed_allocs, 1);
#endif
    cr_assert_eq(loop.timers.len, NARM);
    for (int i = 0; i < NARM; i++)
        cr_assert_neq(t[i].deadline, 0, "timer %d lost its deadline", i);
    /* Every timer fires, in deadline order. */
    uint64_t last = 0;
    int fired = 0;
    struct fy_timer *p;
    while ((p = fy_timer_heap_pop_due(&loop.timers, loop.now_ms + NARM + 1))) {
        uint64_t d = (uint64_t)(((p - t) * 7919) % NARM) + 1;
        cr_assert_geq(d, last);
        last = d;
        fired++;
    }
    cr_assert_eq(fired, NARM);
    free(t);
    fy_loop_destroy(&loop);
}
