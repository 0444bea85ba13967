/*
 * Per-thread free lists of I/O buffers, one per size class. Only the owning worker touches its
 * lists, so there are no locks; each list is capped so that a burst does not pin memory forever.
 */
#include "core/buf.h"

#include <stdlib.h>
#include <string.h>

/*
 * Size classes: a buffer whose capacity is a class's goes back to that class's list. The two
 * built-in classes serve connections and streaming; fy_buf_add_class() adds the client input
 * size the configuration asks for, so that buffer is recycled too instead of malloc'd per request.
 */
#define MAX_CLASSES 4

struct buf_class {
    uint32_t cap;
    unsigned max; /* buffers kept per thread */
};

static struct buf_class classes[MAX_CLASSES] = {
    {FY_BUF_SIZE, 4096},
    {FY_BIG_BUF_SIZE, 64},
};
static unsigned nclasses = 2;

struct buf_list {
    struct fy_buf *head;
    unsigned count;
};

static __thread struct buf_list lists[MAX_CLASSES];

int fy_buf_add_class(size_t cap, unsigned max)
{
    for (unsigned i = 0; i < nclasses; i++)
        if (classes[i].cap == cap)
            return 0;
    if (nclasses == MAX_CLASSES || cap > UINT32_MAX)
        return -1;
    classes[nclasses++] = (struct buf_class){(uint32_t)cap, max};
    return 0;
}

/* The smallest class that holds `size` without wasting more than half of it, or -1. */
static int class_for(size_t size)
{
    if (size <= FY_BUF_SIZE)
        return 0; /* classes[0]: the common case, no search */
    int best = -1;
    for (unsigned i = 0; i < nclasses; i++) {
        size_t cap = classes[i].cap;
        if (cap >= size && (cap <= FY_BUF_SIZE || cap / 2 < size) &&
            (best < 0 || cap < classes[best].cap))
            best = (int)i;
    }
    return best;
}

static __attribute__((unused)) int class_of(uint32_t cap)
{
    for (unsigned i = 0; i < nclasses; i++)
        if (classes[i].cap == cap)
            return (int)i;
    return -1;
}

struct fy_buf *fy_buf_get(size_t size)
{
    int k = class_for(size);
    struct fy_buf *b = NULL;
#ifndef FY_NO_FREELIST
    if (k >= 0 && lists[k].head) {
        b = lists[k].head;
        lists[k].head = b->next_free;
        lists[k].count--;
    }
#endif
    if (!b) {
        size_t cap = k >= 0 ? classes[k].cap : size;
        b = malloc(sizeof(*b) + cap);
        if (!b)
            return NULL;
        b->cap = (uint32_t)cap;
    }
    b->start = b->end = 0;
    b->next_free = NULL;
    return b;
}

void fy_buf_put(struct fy_buf *b)
{
    if (!b)
        return;
#ifndef FY_NO_FREELIST
    int k = class_of(b->cap);
    if (k >= 0 && lists[k].count < classes[k].max) {
        b->next_free = lists[k].head;
        lists[k].head = b;
        lists[k].count++;
        return;
    }
#endif
    /* Sanitizer builds (FY_NO_FREELIST): every release is a real free, so a use-after-free is
     * reported instead of reading a buffer that another exchange now owns. */
    free(b);
}

void fy_buf_freelist_release(void)
{
    for (unsigned k = 0; k < MAX_CLASSES; k++) {
        while (lists[k].head) {
            struct fy_buf *b = lists[k].head;
            lists[k].head = b->next_free;
            free(b);
        }
        lists[k].count = 0;
    }
}

void fy_buf_compact(struct fy_buf *b)
{
    if (b->start == 0)
        return;
    size_t n = b->end - b->start;
    if (n)
        memmove(b->data, b->data + b->start, n);
    b->start = 0;
    b->end = (uint32_t)n;
}

void fy_buf_append(struct fy_buf *b, const void *p, size_t n)
{
    memcpy(b->data + b->end, p, n);
    b->end += (uint32_t)n;
}
