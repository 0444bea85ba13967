/* Unit tests for src/http/h1_writer.c: body framing in the output queue, head fields, flushing. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/assert.h"
#include "core/buf.h"
#include "core/loop.h"
#include "http/h1_writer.h"
#include "net/sock.h"

static struct fy_h1_writer W;

static void setup(void)
{
    fy_h1w_init(&W);
}

static void teardown(void)
{
    fy_h1w_reset(&W);
    fy_buf_freelist_release();
}

/* Concatenates the pending iovecs. */
static size_t queued_bytes(const struct fy_h1_writer *w, char *out, size_t cap)
{
    size_t n = 0;
    for (int i = w->q.first; i < w->q.n; i++) {
        cr_assert_leq(n + w->q.iov[i].iov_len, cap);
        memcpy(out + n, w->q.iov[i].iov_base, w->q.iov[i].iov_len);
        n += w->q.iov[i].iov_len;
    }
    cr_assert_eq(n, fy_h1w_queued(w));
    return n;
}

static void expect_queued(const char *want)
{
    char buf[1 << 16];
    size_t n = queued_bytes(&W, buf, sizeof(buf));
    cr_assert_eq(n, strlen(want), "queued %zu bytes '%.*s', want '%s'", n, (int)n, buf, want);
    cr_assert_arr_eq(buf, want, n);
}

static struct iovec iv(const char *s)
{
    return (struct iovec){(void *)s, strlen(s)};
}

TestSuite(h1_writer, .init = setup, .fini = teardown);

Test(h1_writer, length_framing_is_raw)
{
    W.framing = FY_FRAME_LENGTH;
    struct iovec v[2] = {iv("hel"), iv("lo")};
    cr_assert_eq(fy_h1w_body(&W, v, 2, false), 0);
    cr_assert_not(W.finished);
    struct iovec w2 = iv(" world");
    cr_assert_eq(fy_h1w_body(&W, &w2, 1, true), 0);
    cr_assert(W.finished);
    cr_assert_eq(W.body_sent, 11);
    expect_queued("hello world");
    /* Data is referenced, not copied. */
    cr_assert_eq(W.q.iov[0].iov_base, v[0].iov_base);
}

Test(h1_writer, chunked_single_last)
{
    W.framing = FY_FRAME_CHUNKED;
    struct iovec v = iv("hello");
    cr_assert_eq(fy_h1w_body(&W, &v, 1, true), 0);
    expect_queued("5\r\nhello\r\n0\r\n\r\n");
    cr_assert(W.finished);
    cr_assert_eq(W.body_sent, 5);
}

Test(h1_writer, chunked_multi_iov_then_empty_last)
{
    W.framing = FY_FRAME_CHUNKED;
    struct iovec v[3] = {iv("abc"), iv("defghijklmnop"), iv("q")};
    cr_assert_eq(fy_h1w_body(&W, v, 3, false), 0);
    expect_queued("11\r\nabcdefghijklmnopq\r\n");
    cr_assert_not(W.finished);
    cr_assert_eq(fy_h1w_body(&W, NULL, 0, true), 0);
    expect_queued("11\r\nabcdefghijklmnopq\r\n0\r\n\r\n");
    cr_assert(W.finished);
}

Test(h1_writer, chunked_empty_not_last_queues_nothing)
{
    W.framing = FY_FRAME_CHUNKED;
    struct iovec v = {(void *)"", 0};
    cr_assert_eq(fy_h1w_body(&W, &v, 1, false), 0);
    cr_assert_eq(fy_h1w_queued(&W), 0);
    cr_assert_not(fy_h1w_pending(&W));
    /* an empty chunk would be the terminator: never emitted for empty data */
    cr_assert_eq(fy_h1w_body(&W, NULL, 0, false), 0);
    cr_assert_eq(fy_h1w_queued(&W), 0);
}

Test(h1_writer, chunked_hex_sizes)
{
    W.framing = FY_FRAME_CHUNKED;
    static char big[0x12345];
    memset(big, 'x', sizeof(big));
    struct iovec v = {big, sizeof(big)};
    cr_assert_eq(fy_h1w_body(&W, &v, 1, false), 0);
    cr_assert_eq(W.q.iov[0].iov_len, 7);
    cr_assert_arr_eq(W.q.iov[0].iov_base, "12345\r\n", 7);
    struct iovec v2 = {big, 0x10};
    cr_assert_eq(fy_h1w_body(&W, &v2, 1, true), 0);
    cr_assert_arr_eq(W.q.iov[3].iov_base, "10\r\n", 4);
    cr_assert_eq(W.body_sent, 0x12345 + 0x10);
    cr_assert_eq(fy_h1w_queued(&W), 7 + 0x12345 + 2 + 4 + 0x10 + 7);
}

Test(h1_writer, chunked_scratch_lines_stay_distinct)
{
    W.framing = FY_FRAME_CHUNKED;
    struct iovec a = iv("a"), b = iv("0123456789abcdef0");
    cr_assert_eq(fy_h1w_body(&W, &a, 1, false), 0);
    cr_assert_eq(fy_h1w_body(&W, &b, 1, false), 0);
    cr_assert_eq(fy_h1w_body(&W, &a, 1, true), 0);
    expect_queued("1\r\na\r\n11\r\n0123456789abcdef0\r\n1\r\na\r\n0\r\n\r\n");
}

Test(h1_writer, close_framing_is_raw_no_terminator)
{
    W.framing = FY_FRAME_CLOSE;
    struct iovec v = iv("stream");
    cr_assert_eq(fy_h1w_body(&W, &v, 1, false), 0);
    cr_assert_eq(fy_h1w_body(&W, &v, 1, true), 0);
    expect_queued("streamstream");
    cr_assert(W.finished);
}

Test(h1_writer, none_framing_drops_body)
{
    W.framing = FY_FRAME_NONE;
    struct iovec v = iv("ignored");
    cr_assert_eq(fy_h1w_body(&W, &v, 1, false), 0);
    cr_assert_eq(fy_h1w_queued(&W), 0);
    cr_assert_eq(W.body_sent, 0);
    cr_assert_eq(fy_h1w_body(&W, &v, 1, true), 0);
    cr_assert(W.finished);
    cr_assert_eq(fy_h1w_queued(&W), 0);
}

Test(h1_writer, queue_full_returns_error)
{
    W.framing = FY_FRAME_CHUNKED;
    struct iovec v = iv("x");
    int ok = 0;
    while (fy_h1w_body(&W, &v, 1, false) == 0) {
        ok++;
        cr_assert_leq(W.q.n, FY_OUTQ_IOV);
        cr_assert_lt(ok, 100);
    }
    cr_assert_gt(ok, 0);
    /* What was queued is intact. */
    char buf[1024];
    size_t n = queued_bytes(&W, buf, sizeof(buf));
    cr_assert_eq(n, (size_t)ok * 6);
    for (int i = 0; i < ok; i++)
        cr_assert_arr_eq(buf + i * 6, "1\r\nx\r\n", 6);
    cr_assert_eq(W.body_sent, (uint64_t)ok);
    W.framing = FY_FRAME_LENGTH;
    struct iovec many[FY_OUTQ_IOV];
    for (int i = 0; i < FY_OUTQ_IOV; i++)
        many[i] = v;
    fy_h1w_reset(&W);
    W.framing = FY_FRAME_LENGTH;
    cr_assert_eq(fy_h1w_body(&W, many, FY_OUTQ_IOV, false), -1);
    cr_assert_eq(fy_h1w_queued(&W), 0);
}

Test(h1_writer, put_field_and_head)
{
    struct fy_buf *b = fy_h1w_head_begin(&W, 64);
    cr_assert_not_null(b);
    size_t from = b->end;
    cr_assert(fy_h1w_put(b, "HTTP/1.1 200 OK\r\n", 17));
    cr_assert(fy_h1w_put_field(b, "Content-Type", 12, "text/plain", 10));
    cr_assert(fy_h1w_put_field(b, "X-Empty", 7, "", 0));
    cr_assert(fy_h1w_put(b, "\r\n", 2));
    fy_h1w_head_done(&W, b, from);
    cr_assert(fy_h1w_pending(&W));
    expect_queued("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Empty: \r\n\r\n");
    cr_assert_eq(fy_h1w_head_begin(&W, 64), b); /* unflushed head buffer is reused */
}

Test(h1_writer, put_field_overflow)
{
    struct fy_buf *b = fy_h1w_head_begin(&W, 64);
    b->end = b->cap - 10;
    uint32_t end = b->end;
    cr_assert_not(fy_h1w_put_field(b, "Name", 4, "vv", 3)); /* 4+3+4 = 11 > 10 */
    cr_assert_eq(b->end, end);
    cr_assert(fy_h1w_put_field(b, "Name", 4, "vv", 2)); /* exactly fits */
    cr_assert_eq(b->end, b->cap);
    cr_assert_arr_eq(b->data + end, "Name: vv\r\n", 10);
    cr_assert_not(fy_h1w_put(b, "x", 1));
    cr_assert(fy_h1w_put(b, "", 0));
}

Test(h1_writer, copy_merges_with_head)
{
    struct fy_buf *b = fy_h1w_head_begin(&W, 64);
    size_t from = b->end;
    fy_h1w_put(b, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    fy_h1w_head_done(&W, b, from);
    cr_assert_eq(fy_h1w_copy(&W, "HTTP/1.1 413 x\r\n\r\n", 18), 0);
    cr_assert_eq(W.q.n, 1); /* adjacent in the head buffer: one iovec */
    expect_queued("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 x\r\n\r\n");
    W.framing = FY_FRAME_LENGTH;
    struct iovec v = iv("body");
    fy_h1w_body(&W, &v, 1, true);
    cr_assert_eq(fy_h1w_copy(&W, "tail", 4), 0);
    cr_assert_eq(W.q.n, 3);
    expect_queued("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 x\r\n\r\nbodytail");
}

/* A head queued after a mark (merged into the previous one's buffer, with chunked body bytes
 * after it) is taken back whole while nothing was written; what came before stays. */
Test(h1_writer, rewind_takes_back_what_followed_the_mark)
{
    cr_assert_eq(fy_h1w_copy(&W, "HTTP/1.1 100 Continue\r\n\r\n", 25), 0);
    struct fy_h1w_mark m;
    fy_h1w_mark(&W, &m);
    cr_assert_eq(fy_h1w_copy(&W, "HTTP/1.1 200 OK\r\n\r\n", 19), 0);
    W.framing = FY_FRAME_CHUNKED;
    struct iovec v = iv("body");
    cr_assert_eq(fy_h1w_body(&W, &v, 1, false), 0);
    cr_assert(fy_h1w_rewind(&W, &m));
    expect_queued("HTTP/1.1 100 Continue\r\n\r\n");
    cr_assert_eq(W.framing, FY_FRAME_NONE);
    cr_assert_eq(W.q.nscratch, 0);
    cr_assert_eq(fy_h1w_copy(&W, "HTTP/1.1 502 x\r\n\r\n", 18), 0);
    expect_queued("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 502 x\r\n\r\n");
}

Test(h1_writer, copy_too_big)
{
    static char big[FY_BUF_SIZE + 1];
    cr_assert_eq(fy_h1w_copy(&W, big, sizeof(big)), -1);
    cr_assert_eq(fy_h1w_queued(&W), 0);
}

/* ---- flushing through a socketpair ---- */

static int sv[2] = {-1, -1};

static void sock_setup(void)
{
    fy_h1w_init(&W);
    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
}

static void sock_teardown(void)
{
    fy_h1w_reset(&W);
    fy_buf_freelist_release();
    for (int i = 0; i < 2; i++)
        if (sv[i] >= 0)
            close(sv[i]);
    sv[0] = sv[1] = -1;
}

static struct fy_sock plain_sock(int fd)
{
    struct fy_sock s;
    memset(&s, 0, sizeof(s));
    s.fd = fd;
    s.tp = &fy_plain_transport;
    s.wr_ready = true;
    return s;
}

static size_t read_all(int fd, char *out, size_t cap)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, out + n, cap - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    return n;
}

TestSuite(h1_writer_flush, .init = sock_setup, .fini = sock_teardown);

Test(h1_writer_flush, head_and_chunked_body)
{
    struct fy_sock s = plain_sock(sv[0]);
    struct fy_buf *b = fy_h1w_head_begin(&W, 64);
    size_t from = b->end;
    fy_h1w_put(b, "POST / HTTP/1.1\r\n", 17);
    fy_h1w_put_field(b, "Transfer-Encoding", 17, "chunked", 7);
    fy_h1w_put(b, "\r\n", 2);
    fy_h1w_head_done(&W, b, from);
    W.framing = FY_FRAME_CHUNKED;
    struct iovec v[2] = {iv("hello "), iv("world")};
    cr_assert_eq(fy_h1w_body(&W, v, 2, true), 0);
    cr_assert_eq(fy_h1w_flush(&W, &s), 0);
    cr_assert_not(fy_h1w_pending(&W));
    cr_assert_eq(fy_h1w_queued(&W), 0);
    cr_assert_null(W.q.head); /* released once flushed */
    cr_assert_eq(W.q.n, 0);
    cr_assert_eq(W.q.nscratch, 0);
    char got[256];
    size_t n = read_all(sv[1], got, sizeof(got));
    const char *want = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n"
                       "0\r\n\r\n";
    cr_assert_eq(n, strlen(want));
    cr_assert_arr_eq(got, want, n);
    /* Flushing an empty queue is a no-op. */
    cr_assert_eq(fy_h1w_flush(&W, &s), 0);
}

Test(h1_writer_flush, partial_writes_resume)
{
    int sz = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    struct fy_sock s = plain_sock(sv[0]);
    size_t total = 1 << 20;
    char *data = malloc(total);
    for (size_t i = 0; i < total; i++)
        data[i] = (char)(i * 31 + (i >> 9));
    W.framing = FY_FRAME_CHUNKED;
    /* 8 pieces of 128k queued as 8 chunks. */
    for (int i = 0; i < 8; i++) {
        struct iovec v = {data + (size_t)i * (total / 8), total / 8};
        cr_assert_eq(fy_h1w_body(&W, &v, 1, i == 7), 0);
    }
    size_t expect_len = fy_h1w_queued(&W);
    char *got = malloc(expect_len + 1);
    size_t n = 0;
    int agains = 0;
    for (;;) {
        int rc = fy_h1w_flush(&W, &s);
        if (rc == 0)
            break;
        cr_assert_eq(rc, FY_AGAIN);
        cr_assert_not(s.wr_ready);
        agains++;
        ssize_t r;
        while ((r = read(sv[1], got + n, expect_len + 1 - n)) > 0)
            n += (size_t)r;
        s.wr_ready = true;
    }
    n += read_all(sv[1], got + n, expect_len + 1 - n);
    cr_assert_gt(agains, 0);
    cr_assert_eq(n, expect_len);
    /* De-chunk and compare. */
    size_t p = 0, out = 0;
    for (int i = 0; i < 8; i++) {
        cr_assert_arr_eq(got + p, "20000\r\n", 7);
        p += 7;
        cr_assert_arr_eq(got + p, data + out, total / 8);
        p += total / 8;
        out += total / 8;
        cr_assert_arr_eq(got + p, i == 7 ? "\r\n0\r\n\r\n" : "\r\n", i == 7 ? 7 : 2);
        p += i == 7 ? 7 : 2;
    }
    cr_assert_eq(p, expect_len);
    free(got);
    free(data);
}

Test(h1_writer_flush, rewind_refused_once_bytes_were_written)
{
    struct fy_sock s = plain_sock(sv[0]);
    struct fy_h1w_mark m;
    fy_h1w_mark(&W, &m);
    cr_assert_eq(fy_h1w_copy(&W, "HTTP/1.1 200 OK\r\n\r\n", 19), 0);
    cr_assert_eq(fy_h1w_flush(&W, &s), 0);
    cr_assert_not(fy_h1w_rewind(&W, &m));
    char got[64];
    cr_assert_eq(read_all(sv[1], got, sizeof(got)), 19);
}

Test(h1_writer_flush, peer_closed_is_error)
{
    struct fy_sock s = plain_sock(sv[0]);
    close(sv[1]);
    sv[1] = -1;
    W.framing = FY_FRAME_LENGTH;
    struct iovec v = iv("data");
    fy_h1w_body(&W, &v, 1, true);
    int rc = fy_h1w_flush(&W, &s);
    cr_assert_eq(rc, -EPIPE);
    cr_assert(fy_h1w_pending(&W));
}

Test(h1_writer_flush, through_loop_registered_sock)
{
    struct fy_loop loop;
    cr_assert_eq(fy_loop_init(&loop), 0);
    struct fy_sock s;
    memset(&s, 0, sizeof(s));
    cr_assert_eq(fy_sock_open(&s, &loop, sv[0], NULL), 0);
    sv[0] = -1; /* owned by s */
    s.wr_ready = true;
    cr_assert_eq(fy_h1w_copy(&W, "HTTP/1.1 204 No Content\r\n\r\n", 27), 0);
    cr_assert_eq(fy_h1w_flush(&W, &s), 0);
    char got[64];
    size_t n = read_all(sv[1], got, sizeof(got));
    cr_assert_eq(n, 27);
    cr_assert_arr_eq(got, "HTTP/1.1 204 No Content\r\n\r\n", 27);
    fy_sock_close(&s);
    fy_sock_close(&s); /* twice is safe */
    fy_loop_destroy(&loop);
}

/* A head that does not fit the current head buffer goes to a new one chained to it: iovecs into
 * the first stay valid, and both are released once flushed (or on reset). */
Test(h1_writer, head_buffers_chain)
{
    struct fy_buf *a = fy_h1w_head_begin(&W, 64);
    size_t from = a->end;
    fy_h1w_put(a, "HTTP/1.1 103 Early Hints\r\n\r\n", 28);
    fy_h1w_head_done(&W, a, from);
    struct fy_buf *b = fy_h1w_head_begin(&W, FY_BUF_SIZE);
    cr_assert_neq(a, b); /* a has less than FY_BUF_SIZE left */
    cr_assert_geq(fy_buf_room(b), FY_BUF_SIZE);
    from = b->end;
    fy_h1w_put(b, "HTTP/1.1 200 OK\r\n\r\n", 19);
    fy_h1w_head_done(&W, b, from);
    expect_queued("HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\n\r\n");
    struct fy_buf *big = fy_h1w_head_begin(&W, 3 * FY_BUF_SIZE);
    cr_assert_geq(fy_buf_room(big), 3 * FY_BUF_SIZE);
    fy_h1w_reset(&W); /* frees all three (ASan would report a leak otherwise) */
    cr_assert_null(W.q.head);
}

Test(h1_writer, direct_bytes_length_framing_need_no_framing)
{
    W.framing = FY_FRAME_LENGTH;
    cr_assert_eq(fy_h1w_direct_begin(&W, 1000), 1000);
    expect_queued("");
    fy_h1w_direct_done(&W, 600);
    cr_assert_eq(fy_h1w_direct_begin(&W, 400), 400);
    fy_h1w_direct_done(&W, 400);
    expect_queued("");
    cr_assert_eq(W.body_sent, 1000);
    cr_assert_eq(fy_h1w_body(&W, NULL, 0, true), 0);
    expect_queued("");
}

Test(h1_writer, direct_chunk_is_framed_around_the_bytes)
{
    W.framing = FY_FRAME_CHUNKED;
    /* 0x1234 bytes ready: a chunk of exactly that size opens. */
    cr_assert_eq(fy_h1w_direct_begin(&W, 0x1234), 0x1234);
    expect_queued("1234\r\n");
    W.q.first = W.q.n = W.q.nscratch = 0; /* flushed */
    fy_h1w_direct_done(&W, 0x1000);
    expect_queued("");
    /* More bytes arrived meanwhile: only the rest of the open chunk may go. */
    cr_assert_eq(fy_h1w_direct_begin(&W, 0x2000), 0x234);
    expect_queued("");
    fy_h1w_direct_done(&W, 0x234);
    expect_queued("\r\n");
    /* The next batch opens the next chunk behind the CRLF. */
    cr_assert_eq(fy_h1w_direct_begin(&W, 0x10), 0x10);
    expect_queued("\r\n10\r\n");
    W.q.first = W.q.n = W.q.nscratch = 0;
    fy_h1w_direct_done(&W, 0x10);
    cr_assert_eq(fy_h1w_body(&W, NULL, 0, true), 0);
    expect_queued("\r\n0\r\n\r\n");
    cr_assert_eq(W.body_sent, 0x1244);
}
