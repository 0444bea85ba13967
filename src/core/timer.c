/*
 * Intrusive, lazily re-keyed binary min-heap of timers; see timer.h for the invariant
 * key <= deadline. The tree is complete: node number n (1-based, in level order) is reached from
 * the root by the bits of n below its leading one (0 = left, 1 = right), so the last node and
 * the next free place are found in O(log n) without an array.
 */
#include "core/timer.h"

#include "core/assert.h"

/* The node at level-order position n (1 <= n <= len). */
static struct fy_timer *node_at(const struct fy_timer_heap *h, uint32_t n)
{
    struct fy_timer *t = h->root;
    for (int bit = 30 - __builtin_clz(n); bit >= 0; bit--)
        t = (n >> bit) & 1 ? t->right : t->left;
    return t;
}

/* Replaces old by new in old's parent (or as the root). */
static void replace_child(struct fy_timer_heap *h, struct fy_timer *old, struct fy_timer *new)
{
    struct fy_timer *p = new->parent;
    if (!p)
        h->root = new;
    else if (p->left == old)
        p->left = new;
    else
        p->right = new;
}

/* Swaps c with its parent p: c takes p's place in the tree and p takes c's. */
static void swap_with_parent(struct fy_timer_heap *h, struct fy_timer *c)
{
    struct fy_timer *p = c->parent;
    struct fy_timer *cl = c->left, *cr = c->right;
    struct fy_timer *sibling;
    if (p->left == c) {
        sibling = p->right;
        c->left = p;
        c->right = sibling;
    } else {
        sibling = p->left;
        c->left = sibling;
        c->right = p;
    }
    if (sibling)
        sibling->parent = c;
    c->parent = p->parent;
    replace_child(h, p, c);
    p->parent = c;
    p->left = cl;
    p->right = cr;
    if (cl)
        cl->parent = p;
    if (cr)
        cr->parent = p;
}

static void sift_up(struct fy_timer_heap *h, struct fy_timer *t)
{
    while (t->parent && t->key < t->parent->key)
        swap_with_parent(h, t);
}

static void sift_down(struct fy_timer_heap *h, struct fy_timer *t)
{
    for (;;) {
        struct fy_timer *c = t->left;
        if (!c)
            break;
        if (t->right && t->right->key < c->key)
            c = t->right;
        if (t->key <= c->key)
            break;
        swap_with_parent(h, c);
    }
}

static void heap_insert(struct fy_timer_heap *h, struct fy_timer *t)
{
    t->left = t->right = NULL;
    t->in_heap = true;
    uint32_t n = ++h->len;
    if (n == 1) {
        t->parent = NULL;
        h->root = t;
        return;
    }
    struct fy_timer *p = node_at(h, n / 2);
    t->parent = p;
    if (n & 1)
        p->right = t;
    else
        p->left = t;
    sift_up(h, t);
}

void fy_timer_heap_arm(struct fy_timer_heap *h, struct fy_timer *t, uint64_t deadline)
{
    if (deadline == 0)
        deadline = 1;
    t->deadline = deadline;
    if (!t->in_heap) {
        t->key = deadline;
        heap_insert(h, t);
    } else if (deadline < t->key) {
        t->key = deadline;
        sift_up(h, t);
    }
    /* A later deadline keeps the early key: the timer is re-keyed when it surfaces. */
}

void fy_timer_heap_remove(struct fy_timer_heap *h, struct fy_timer *t)
{
    t->deadline = 0;
    if (!t->in_heap)
        return;
    FY_ASSERT(h->len > 0);
    /* Unhook the last node, then let it fill t's place. */
    struct fy_timer *last = node_at(h, h->len);
    if (last->parent) {
        if (last->parent->left == last)
            last->parent->left = NULL;
        else
            last->parent->right = NULL;
    } else {
        h->root = NULL;
    }
    h->len--;
    t->in_heap = false;
    if (last != t) {
        last->parent = t->parent;
        last->left = t->left;
        last->right = t->right;
        replace_child(h, t, last);
        if (last->left)
            last->left->parent = last;
        if (last->right)
            last->right->parent = last;
        if (last->parent && last->key < last->parent->key)
            sift_up(h, last);
        else
            sift_down(h, last);
    }
    t->parent = t->left = t->right = NULL;
}

struct fy_timer *fy_timer_heap_pop_due(struct fy_timer_heap *h, uint64_t now)
{
    while (h->root && h->root->key <= now) {
        struct fy_timer *t = h->root;
        if (t->deadline == 0) {
            fy_timer_heap_remove(h, t);
            continue;
        }
        if (t->deadline > now) {
            /* Moved later since it was keyed: push it back down. */
            t->key = t->deadline;
            sift_down(h, t);
            continue;
        }
        fy_timer_heap_remove(h, t);
        return t;
    }
    return NULL;
}

int fy_timer_heap_wait_ms(const struct fy_timer_heap *h, uint64_t now)
{
    if (!h->root)
        return -1;
    uint64_t key = h->root->key;
    if (key <= now)
        return 0;
    uint64_t d = key - now;
    return d > 60000 ? 60000 : (int)d;
}
