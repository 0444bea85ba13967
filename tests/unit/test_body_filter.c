/* Unit tests for src/proxy/body_filter.c: the push chain's flow control (a full sink stops the
 * push with the input partly taken), flags that travel behind the bytes, errors, and bounded
 * memory with a filter that makes more than it takes. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/assert.h"
#include "proxy/body_filter.h"

/* ---- test filters ---- */

/* Copies, or (factor 3) writes each byte three times: output larger than input, so the sink
 * fills in the middle of a push. */
struct repeat_filter {
    struct fy_bfilter f;
    int factor;
    int pending; /* copies of `last` still to write */
    uint8_t last;
    unsigned flushes_seen;
};

static int repeat_push(struct fy_bfilter *f, const uint8_t **in, size_t *len, unsigned flags)
{
    struct repeat_filter *r = (struct repeat_filter *)f;
    for (;;) {
        while (r->pending) {
            size_t avail;
            uint8_t *o = fy_bf_space(f, &avail);
            if (!avail) {
                int rc = fy_bf_pass(f, 0);
                if (rc)
                    return rc;
                continue;
            }
            *o = r->last;
            fy_bf_produced(f, 1);
            r->pending--;
        }
        if (!*len)
            break;
        r->last = **in;
        r->pending = r->factor;
        (*in)++;
        (*len)--;
    }
    if (flags & FY_BF_FLUSH)
        r->flushes_seen++;
    return fy_bf_pass(f, flags);
}

static const struct fy_bf_ops repeat_ops = {"repeat", repeat_push, NULL};

static struct fy_bfilter *repeat_new(int factor)
{
    struct repeat_filter *r = calloc(1, sizeof(*r));
    r->f.ops = &repeat_ops;
    r->factor = factor;
    return &r->f;
}

/* Holds everything until the end, then writes it reversed: a filter that needs the whole body
 * (bounded here by the test's small bodies). */
struct reverse_filter {
    struct fy_bfilter f;
    uint8_t *held;
    size_t n, cap, out_pos;
    bool ending;
};

static int reverse_push(struct fy_bfilter *f, const uint8_t **in, size_t *len, unsigned flags)
{
    struct reverse_filter *r = (struct reverse_filter *)f;
    if (*len) {
        if (r->n + *len > r->cap) {
            r->cap = (r->n + *len) * 2;
            r->held = realloc(r->held, r->cap);
        }
        memcpy(r->held + r->n, *in, *len);
        r->n += *len;
        *in += *len;
        *len = 0;
    }
    if (!(flags & FY_BF_END))
        return fy_bf_pass(f, flags & FY_BF_FLUSH);
    while (r->out_pos < r->n) {
        size_t avail;
        uint8_t *o = fy_bf_space(f, &avail);
        if (!avail) {
            int rc = fy_bf_pass(f, 0);
            if (rc)
                return rc;
            continue;
        }
        size_t k = r->n - r->out_pos < avail ? r->n - r->out_pos : avail;
        for (size_t i = 0; i < k; i++)
            o[i] = r->held[r->n - 1 - r->out_pos - i];
        fy_bf_produced(f, k);
        r->out_pos += k;
    }
    return fy_bf_pass(f, flags);
}

static void reverse_destroy(struct fy_bfilter *f)
{
    free(((struct reverse_filter *)f)->held);
}

static const struct fy_bf_ops reverse_ops = {"reverse", reverse_push, reverse_destroy};

static struct fy_bfilter *reverse_new(void)
{
    struct reverse_filter *r = calloc(1, sizeof(*r));
    r->f.ops = &reverse_ops;
    return &r->f;
}

/* Fails on the byte 'X'. */
static int fail_push(struct fy_bfilter *f, const uint8_t **in, size_t *len, unsigned flags)
{
    if (memchr(*in, 'X', *len))
        return fy_bf_fail(f, "saw an %c", 'X');
    return repeat_push(f, in, len, flags);
}

static const struct fy_bf_ops fail_ops = {"failing", fail_push, NULL};

/* ---- the driver: what the session does ---- */

struct sink_out {
    uint8_t *data;
    size_t len, cap;
    unsigned takes;
    unsigned flushes;
    bool ended;
};

static void take(struct fy_bf_chain *c, struct sink_out *o)
{
    struct iovec iov;
    bool flushed = c->flushed;
    fy_bf_chain_take(c, &iov);
    cr_assert(iov.iov_len <= FY_BF_BUF);
    if (o->len + iov.iov_len > o->cap) {
        o->cap = (o->len + iov.iov_len) * 2 + 64;
        o->data = realloc(o->data, o->cap);
    }
    if (iov.iov_len)
        memcpy(o->data + o->len, iov.iov_base, iov.iov_len);
    o->len += iov.iov_len;
    o->takes++;
    o->flushes += flushed;
    o->ended |= c->ended;
    fy_bf_chain_taken(c);
}

/* Pushes `in` in pieces of `piece` bytes, with a flush after each piece when asked, and the end
 * with the last piece. Returns 0 or the push error. */
static int drive(struct fy_bf_chain *c, const uint8_t *in, size_t n, size_t piece, bool flush_each,
                 struct sink_out *o)
{
    size_t off = 0;
    do {
        size_t k = n - off < piece ? n - off : piece;
        const uint8_t *p = in + off;
        size_t len = k;
        off += k;
        unsigned flags = off == n ? FY_BF_END : flush_each ? FY_BF_FLUSH : 0;
        for (;;) {
            int rc = fy_bf_chain_push(c, &p, &len, flags);
            if (rc == FY_AGAIN) {
                cr_assert(c->sink_len > 0, "FY_AGAIN with an empty sink");
                take(c, o);
                continue;
            }
            if (rc < 0)
                return rc;
            cr_assert_eq(len, 0);
            break;
        }
        if (c->sink_len || c->ended || c->flushed)
            take(c, o);
    } while (off < n);
    return 0;
}

static uint8_t *pattern(size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)('a' + (i * 7 + i / 13) % 26);
    return p;
}

Test(body_filter, copy_through_one_filter_any_piece_size)
{
    size_t sizes[] = {0, 1, 100, FY_BF_BUF - 1, FY_BF_BUF, FY_BF_BUF + 1, 5 * FY_BF_BUF + 17};
    size_t pieces[] = {1, 7, 4096, 1 << 20};
    for (size_t si = 0; si < sizeof(sizes) / sizeof(*sizes); si++)
        for (size_t pi = 0; pi < sizeof(pieces) / sizeof(*pieces); pi++) {
            struct fy_bf_chain c;
            fy_bf_chain_init(&c);
            cr_assert_eq(fy_bf_chain_add(&c, repeat_new(1)), 0);
            uint8_t *in = pattern(sizes[si]);
            struct sink_out o = {0};
            cr_assert_eq(drive(&c, in, sizes[si], pieces[pi], false, &o), 0);
            cr_assert(o.ended);
            cr_assert_eq(o.len, sizes[si]);
            cr_assert(sizes[si] == 0 || memcmp(o.data, in, sizes[si]) == 0);
            cr_assert_eq(c.bytes_in, sizes[si]);
            cr_assert_eq(c.bytes_out, sizes[si]);
            free(in);
            free(o.data);
            fy_bf_chain_free(&c);
        }
}

Test(body_filter, output_larger_than_input_is_flow_controlled)
{
    /* 3x then 3x: 9 times the input through two buffers and the sink, never more than one
     * buffer held in each. */
    size_t n = 3 * FY_BF_BUF + 5;
    uint8_t *in = pattern(n);
    struct fy_bf_chain c;
    fy_bf_chain_init(&c);
    cr_assert_eq(fy_bf_chain_add(&c, repeat_new(3)), 0);
    cr_assert_eq(fy_bf_chain_add(&c, repeat_new(3)), 0);
    struct sink_out o = {0};
    cr_assert_eq(drive(&c, in, n, 1 << 20, false, &o), 0);
    cr_assert_eq(o.len, 9 * n);
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 9; k++)
            cr_assert_eq(o.data[9 * i + (size_t)k], in[i]);
    cr_assert_geq(o.takes, 9 * n / FY_BF_BUF);
    free(in);
    free(o.data);
    fy_bf_chain_free(&c);
}

Test(body_filter, flags_reach_the_sink_after_the_bytes)
{
    uint8_t *in = pattern(1000);
    struct fy_bf_chain c;
    fy_bf_chain_init(&c);
    struct fy_bfilter *a = repeat_new(1);
    cr_assert_eq(fy_bf_chain_add(&c, a), 0);
    cr_assert_eq(fy_bf_chain_add(&c, repeat_new(2)), 0);
    struct sink_out o = {0};
    cr_assert_eq(drive(&c, in, 1000, 100, true, &o), 0);
    cr_assert_eq(o.len, 2000);
    cr_assert_eq(o.flushes, 9, "each flush but the last piece's (which ends) reached the sink");
    cr_assert_eq(((struct repeat_filter *)a)->flushes_seen, 9);
    cr_assert(o.ended);
    free(in);
    free(o.data);
    fy_bf_chain_free(&c);
}

Test(body_filter, a_filter_holding_the_body_until_the_end)
{
    size_t n = 4 * FY_BF_BUF + 3;
    uint8_t *in = pattern(n);
    struct fy_bf_chain c;
    fy_bf_chain_init(&c);
    cr_assert_eq(fy_bf_chain_add(&c, reverse_new()), 0);
    cr_assert_eq(fy_bf_chain_add(&c, repeat_new(1)), 0);
    struct sink_out o = {0};
    cr_assert_eq(drive(&c, in, n, 4000, false, &o), 0);
    cr_assert_eq(o.len, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(o.data[i], in[n - 1 - i]);
    free(in);
    free(o.data);
    fy_bf_chain_free(&c);
}

Test(body_filter, a_busy_sink_takes_nothing)
{
    struct fy_bf_chain c;
    fy_bf_chain_init(&c);
    cr_assert_eq(fy_bf_chain_add(&c, repeat_new(1)), 0);
    const uint8_t *p = (const uint8_t *)"hello";
    size_t len = 5;
    cr_assert_eq(fy_bf_chain_push(&c, &p, &len, 0), 0);
    struct iovec iov;
    fy_bf_chain_take(&c, &iov);
    cr_assert_eq(iov.iov_len, 5);
    /* While the downstream holds the span, its bytes stay as they are. */
    const uint8_t *q = (const uint8_t *)"world";
    len = 5;
    cr_assert_eq(fy_bf_chain_push(&c, &q, &len, 0), FY_AGAIN);
    cr_assert_eq(memcmp(iov.iov_base, "hello", 5), 0);
    cr_assert_eq(len, 0, "the filter took the bytes into its own buffer");
    fy_bf_chain_taken(&c);
    cr_assert_eq(fy_bf_chain_push(&c, &q, &len, FY_BF_END), 0);
    fy_bf_chain_take(&c, &iov);
    cr_assert_eq(iov.iov_len, 5);
    cr_assert_eq(memcmp(iov.iov_base, "world", 5), 0);
    cr_assert(c.ended);
    fy_bf_chain_free(&c);
}

Test(body_filter, an_error_names_the_filter)
{
    struct fy_bf_chain c;
    fy_bf_chain_init(&c);
    struct repeat_filter *r = calloc(1, sizeof(*r));
    r->f.ops = &fail_ops;
    r->factor = 1;
    cr_assert_eq(fy_bf_chain_add(&c, &r->f), 0);
    struct sink_out o = {0};
    cr_assert_lt(drive(&c, (const uint8_t *)"abcXdef", 7, 2, false, &o), 0);
    cr_assert_str_eq(c.err, "failing: saw an X");
    free(o.data);
    fy_bf_chain_free(&c);
}

Test(body_filter, the_chain_is_bounded)
{
    struct fy_bf_chain c;
    fy_bf_chain_init(&c);
    for (int i = 0; i < FY_BF_MAX_FILTERS; i++)
        cr_assert_eq(fy_bf_chain_add(&c, repeat_new(1)), 0);
    cr_assert_eq(fy_bf_chain_add(&c, repeat_new(1)), -1, "a fifth filter is refused (and freed)");
    cr_assert_eq(c.n, FY_BF_MAX_FILTERS);
    fy_bf_chain_free(&c);
    cr_assert(!fy_bf_chain_active(&c));
}
