/* Unit tests for src/core/buf.c: buffers, the per-thread free list, compact/append/room. */
#include <criterion/criterion.h>
#include <string.h>

#include "core/buf.h"

Test(buf, get_is_empty_and_sized)
{
    struct fy_buf *b = fy_buf_get(100);
    cr_assert_not_null(b);
    cr_assert_eq(b->cap, FY_BUF_SIZE);
    cr_assert_eq(b->start, 0);
    cr_assert_eq(b->end, 0);
    cr_assert_eq(fy_buf_len(b), 0);
    cr_assert_eq(fy_buf_room(b), FY_BUF_SIZE);
    memset(b->data, 1, b->cap); /* the whole capacity is usable */
    fy_buf_put(b);
    fy_buf_freelist_release();
}

Test(buf, append_room_len)
{
    struct fy_buf *b = fy_buf_get(0);
    fy_buf_append(b, "hello", 5);
    cr_assert_eq(fy_buf_len(b), 5);
    cr_assert_eq(fy_buf_room(b), FY_BUF_SIZE - 5);
    fy_buf_append(b, " world", 6);
    cr_assert_arr_eq(b->data, "hello world", 11);
    b->start = 6;
    cr_assert_eq(fy_buf_len(b), 5);
    cr_assert_eq(fy_buf_room(b), FY_BUF_SIZE - 11); /* room is after end only */
    fy_buf_append(b, "", 0);
    cr_assert_eq(b->end, 11);
    fy_buf_put(b);
    fy_buf_freelist_release();
}

Test(buf, compact)
{
    struct fy_buf *b = fy_buf_get(0);
    fy_buf_append(b, "0123456789", 10);
    fy_buf_compact(b); /* start == 0: nothing to do */
    cr_assert_eq(b->start, 0);
    cr_assert_eq(b->end, 10);
    b->start = 4;
    fy_buf_compact(b);
    cr_assert_eq(b->start, 0);
    cr_assert_eq(b->end, 6);
    cr_assert_arr_eq(b->data, "456789", 6);
    cr_assert_eq(fy_buf_room(b), FY_BUF_SIZE - 6);
    b->start = 6; /* fully consumed */
    fy_buf_compact(b);
    cr_assert_eq(b->start, 0);
    cr_assert_eq(b->end, 0);
    fy_buf_put(b);
    fy_buf_freelist_release();
}

Test(buf, compact_full_buffer)
{
    struct fy_buf *b = fy_buf_get(0);
    for (uint32_t i = 0; i < b->cap; i++)
        b->data[i] = (char)(i * 7);
    b->end = b->cap;
    b->start = 1;
    cr_assert_eq(fy_buf_room(b), 0);
    fy_buf_compact(b);
    cr_assert_eq(fy_buf_room(b), 1);
    for (uint32_t i = 0; i < b->cap - 1; i++)
        cr_assert_eq(b->data[i], (char)((i + 1) * 7));
    fy_buf_put(b);
    fy_buf_freelist_release();
}

#ifndef FY_NO_FREELIST /* these check recycling, which sanitizer builds turn off on purpose */
Test(buf, free_list_reuse_resets)
{
    struct fy_buf *a = fy_buf_get(0);
    struct fy_buf *b = fy_buf_get(0);
    cr_assert_neq(a, b);
    fy_buf_append(b, "xyz", 3);
    b->start = 1;
    fy_buf_put(a);
    fy_buf_put(b);
    /* LIFO: b comes back first, emptied. */
    struct fy_buf *c = fy_buf_get(10);
    cr_assert_eq(c, b);
    cr_assert_eq(c->start, 0);
    cr_assert_eq(c->end, 0);
    cr_assert_eq(c->cap, FY_BUF_SIZE);
    struct fy_buf *d = fy_buf_get(FY_BUF_SIZE);
    cr_assert_eq(d, a);
    fy_buf_put(c);
    fy_buf_put(d);
    fy_buf_freelist_release();
    fy_buf_put(NULL); /* allowed */
}

Test(buf, large_buffer_not_from_free_list)
{
    struct fy_buf *small = fy_buf_get(0);
    fy_buf_put(small);
    struct fy_buf *big = fy_buf_get(FY_BUF_SIZE + 1);
    cr_assert_not_null(big);
    cr_assert_neq(big, small);
    cr_assert_eq(big->cap, FY_BUF_SIZE + 1);
    cr_assert_eq(fy_buf_room(big), FY_BUF_SIZE + 1);
    memset(big->data, 0, big->cap);
    fy_buf_put(big); /* freed, not listed */
    struct fy_buf *again = fy_buf_get(0);
    cr_assert_eq(again, small);
    cr_assert_eq(again->cap, FY_BUF_SIZE);
    fy_buf_put(again);
    fy_buf_freelist_release();
}

Test(buf, added_class_is_recycled)
{
    cr_assert_eq(fy_buf_add_class(FY_BUF_SIZE + 1024, 8), 0);
    cr_assert_eq(fy_buf_add_class(FY_BUF_SIZE + 1024, 8), 0); /* idempotent */
    struct fy_buf *a = fy_buf_get(FY_BUF_SIZE + 1024);
    cr_assert_eq(a->cap, FY_BUF_SIZE + 1024);
    fy_buf_put(a);
    struct fy_buf *b = fy_buf_get(FY_BUF_SIZE + 1000); /* fits the class: same buffer */
    cr_assert_eq(b, a);
    fy_buf_put(b);
    struct fy_buf *big = fy_buf_get(FY_BIG_BUF_SIZE);
    cr_assert_eq(big->cap, FY_BIG_BUF_SIZE);
    fy_buf_put(big);
    cr_assert_eq(fy_buf_get(FY_BIG_BUF_SIZE - 10), big); /* the 64 KiB class */
    fy_buf_put(big);
    fy_buf_freelist_release();
}
#endif

Test(buf, drain_then_get)
{
    for (int i = 0; i < 10; i++)
        fy_buf_put(fy_buf_get(0));
    fy_buf_freelist_release();
    struct fy_buf *b = fy_buf_get(0);
    cr_assert_not_null(b);
    fy_buf_put(b);
    fy_buf_freelist_release();
}
