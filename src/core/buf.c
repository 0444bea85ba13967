/*
 * Per-thread free list of I/O buffers. Only the owning worker touches its list, so there are no
 * locks; the list is capped so that a burst does not pin memory forever.
 */
#include "core/buf.h"

#include <stdlib.h>
#include <string.h>

#define FREELIST_MAX 4096

#define BIG_FREELIST_MAX 64

static __thread struct fy_buf *free_head, *big_free_head;
static __thread unsigned free_count, big_free_count;

struct fy_buf *fy_buf_get(size_t size)
{
    struct fy_buf *b;
    if (size <= FY_BUF_SIZE && free_head) {
        b = free_head;
        free_head = b->next_free;
        free_count--;
    } else if (size == FY_BIG_BUF_SIZE && big_free_head) {
        b = big_free_head;
        big_free_head = b->next_free;
        big_free_count--;
    } else {
        size_t cap = size > FY_BUF_SIZE ? size : FY_BUF_SIZE;
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
#ifdef FY_NO_FREELIST
    /* Sanitizer builds: every release is a real free, so a use-after-free is reported instead of
     * reading a buffer that another exchange now owns. */
    free(b);
    return;
#endif
    if (b->cap == FY_BIG_BUF_SIZE && big_free_count < BIG_FREELIST_MAX) {
        b->next_free = big_free_head;
        big_free_head = b;
        big_free_count++;
        return;
    }
    if (b->cap != FY_BUF_SIZE || free_count >= FREELIST_MAX) {
        free(b);
        return;
    }
    b->next_free = free_head;
    free_head = b;
    free_count++;
}

void fy_buf_freelist_release(void)
{
    while (free_head) {
        struct fy_buf *b = free_head;
        free_head = b->next_free;
        free(b);
    }
    free_count = 0;
    while (big_free_head) {
        struct fy_buf *b = big_free_head;
        big_free_head = b->next_free;
        free(b);
    }
    big_free_count = 0;
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
