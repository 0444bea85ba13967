/*
 * Fixed-size I/O buffers taken from a per-thread free list. A connection holds a buffer only while
 * it has bytes in flight and gives it back when idle, so an idle keep-alive connection costs no
 * buffer memory. Bytes live in data[start, end); the space after end is free for reading.
 */
#ifndef FY_BUF_H
#define FY_BUF_H

#include <stddef.h>
#include <stdint.h>

#define FY_BUF_SIZE (16 * 1024)
#define FY_BIG_BUF_SIZE (64 * 1024) /* for streaming large bodies */

struct fy_buf {
    uint32_t start; /* first unconsumed byte */
    uint32_t end;   /* one past the last byte */
    uint32_t cap;   /* size of data[] */
    struct fy_buf *next_free;
    char data[];
};

/* Returns an empty buffer with room for at least `size` bytes (FY_BUF_SIZE at least; a size
 * class's capacity when one fits), or NULL when out of memory. The caller owns it until
 * fy_buf_put(). */
struct fy_buf *fy_buf_get(size_t size);

/* Registers a size class (capacity `cap`, at most `max` buffers kept per thread) so buffers of
 * that capacity are recycled. Startup only, before worker threads run. Returns 0 or -1 (full). */
int fy_buf_add_class(size_t cap, unsigned max);

/* Gives the buffer back to this thread's free list (or to malloc when the list is full). NULL ok.
 */
void fy_buf_put(struct fy_buf *b);

/* Frees this thread's free list; called when a worker exits. */
void fy_buf_freelist_release(void);

static inline size_t fy_buf_len(const struct fy_buf *b)
{
    return b->end - b->start;
}

static inline size_t fy_buf_room(const struct fy_buf *b)
{
    return b->cap - b->end;
}

/* Moves the unconsumed bytes to the front so that all free space is after them. */
void fy_buf_compact(struct fy_buf *b);

/* Appends n bytes; the caller has checked the room. */
void fy_buf_append(struct fy_buf *b, const void *p, size_t n);

#endif
