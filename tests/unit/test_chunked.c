/* Unit tests for src/http/chunked.c: the strict chunked transfer-coding decoder. */
#include <criterion/criterion.h>
#include <string.h>

#include "http/chunked.h"

/* Decodes `in` fed in pieces of `step` bytes; returns the decoded data in out (NUL-terminated)
 * and the final state. */
static enum fy_chunked_state decode(const char *in, size_t step, char *out, size_t outlen,
                                    size_t *consumed)
{
    struct fy_chunked c;
    fy_chunked_init(&c);
    size_t len = strlen(in), off = 0, o = 0;
    while (off < len && c.state != FY_CH_DONE && c.state != FY_CH_ERROR) {
        size_t n = len - off < step ? len - off : step;
        struct iovec spans[4];
        int nspans = 0;
        size_t used = fy_chunked_decode(&c, in + off, n, spans, &nspans, 4);
        for (int i = 0; i < nspans; i++) {
            cr_assert_leq(o + spans[i].iov_len, outlen);
            memcpy(out + o, spans[i].iov_base, spans[i].iov_len);
            o += spans[i].iov_len;
        }
        off += used;
        if (used == 0 && c.state != FY_CH_DONE && c.state != FY_CH_ERROR)
            cr_assert_fail("no progress at offset %zu", off);
    }
    out[o] = 0;
    if (consumed)
        *consumed = off;
    return c.state;
}

Test(chunked, simple_and_byte_by_byte)
{
    const char *in = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    for (size_t step = 1; step <= strlen(in); step++) {
        char out[64];
        size_t used;
        cr_assert_eq(decode(in, step, out, sizeof(out), &used), FY_CH_DONE, "step %zu", step);
        cr_assert_str_eq(out, "hello world");
        cr_assert_eq(used, strlen(in));
    }
}

Test(chunked, stops_at_end_of_body)
{
    const char *in = "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    char out[16];
    size_t used;
    cr_assert_eq(decode(in, 100, out, sizeof(out), &used), FY_CH_DONE);
    cr_assert_eq(used, strlen("3\r\nabc\r\n0\r\n\r\n"), "the next message is not consumed");
}

Test(chunked, extensions_trailers_hex_case_leading_zeros)
{
    char out[64];
    cr_assert_eq(decode("A;a=b;c=\"d e\";flag\r\n0123456789\r\n0\r\n\r\n", 7, out, 64, NULL),
                 FY_CH_DONE);
    cr_assert_str_eq(out, "0123456789");
    cr_assert_eq(decode("0003 ;x\r\nabc\r\n00\r\nX-Sum: 1\r\nY: \r\n\r\n", 3, out, 64, NULL),
                 FY_CH_DONE);
    cr_assert_str_eq(out, "abc");
    cr_assert_eq(decode("a\r\n0123456789\r\n0\r\n\r\n", 64, out, 64, NULL), FY_CH_DONE);
}

Test(chunked, rejects_malformed)
{
    static const char *const bad[] = {
        "",                          /* placeholder, skipped */
        "zz\r\nab\r\n0\r\n\r\n",     /* not hex */
        "0x5\r\nhello\r\n0\r\n\r\n", /* prefix */
        "-5\r\nhello\r\n0\r\n\r\n",  /* sign */
        "+5\r\nhello\r\n0\r\n\r\n",
        " 5\r\nhello\r\n0\r\n\r\n",     /* leading space */
        "5 \r\nhello\r\n0\r\n\r\n",     /* whitespace not followed by ';' */
        "5\nhello\r\n0\r\n\r\n",        /* bare LF after size */
        "5\rhello\r\n0\r\n\r\n",        /* CR without LF */
        "5\r\nhelloX\r\n0\r\n\r\n",     /* data longer than its size */
        "5\r\nhello\n0\r\n\r\n",        /* bare LF after data */
        "5;a\nb\r\nhello\r\n0\r\n\r\n", /* LF inside an extension */
        "5;\x01\r\nhello\r\n0\r\n\r\n", /* control byte in an extension */
        "fffffffffffffffff\r\n",        /* overflow */
        "0\r\nBad Name: x\r\n\r\n",     /* invalid trailer name */
        "0\r\nX: a\nb\r\n\r\n",         /* bare LF in a trailer */
        "0\r\n\n",                      /* bare LF at the end */
    };
    for (size_t i = 1; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (size_t step = 1; step <= 64; step *= 4) {
            char out[64];
            cr_expect_eq(decode(bad[i], step, out, sizeof(out), NULL), FY_CH_ERROR,
                         "accepted %zu: %s (step %zu)", i, bad[i], step);
        }
    }
}

Test(chunked, long_lines_bounded)
{
    static char in[FY_CHUNKED_MAX_LINE + 64];
    memset(in, 0, sizeof(in));
    strcpy(in, "1;");
    memset(in + 2, 'a', FY_CHUNKED_MAX_LINE + 8);
    char out[8];
    cr_assert_eq(decode(in, 1000, out, sizeof(out), NULL), FY_CH_ERROR);
}

Test(chunked, spans_point_into_input_and_respect_max)
{
    const char *in = "2\r\nab\r\n2\r\ncd\r\n2\r\nef\r\n0\r\n\r\n";
    struct fy_chunked c;
    fy_chunked_init(&c);
    struct iovec spans[2];
    int n = 0;
    size_t used = fy_chunked_decode(&c, in, strlen(in), spans, &n, 2);
    cr_assert_eq(n, 2);
    cr_assert(used < strlen(in), "stops when the spans are full");
    cr_assert_eq((const char *)spans[0].iov_base, in + 3);
    cr_assert_eq((const char *)spans[1].iov_base, in + 10);
    n = 0;
    used += fy_chunked_decode(&c, in + used, strlen(in) - used, spans, &n, 2);
    cr_assert_eq(n, 1);
    cr_assert_eq(c.state, FY_CH_DONE);
    cr_assert_eq(used, strlen(in));
}
