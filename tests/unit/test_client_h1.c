/*
 * Unit tests for the downstream side of src/proxy/client_h1.c: the span contract with the
 * session (session.h). The file under test is included to reach its static functions; a real
 * loop and a socketpair stand in for the worker and the client.
 */
#include "../../src/proxy/client_h1.c"

#include <criterion/criterion.h>
#include <sys/socket.h>

static struct fy_config cfg;
static struct fy_worker w;
static struct fy_client *c;
static int peer = -1;

static void setup(void)
{
    fy_config_defaults(&cfg);
    memset(&w, 0, sizeof(w));
    cr_assert_eq(fy_loop_init(&w.loop), 0);
    w.cfg = &cfg;
    w.req_limits = (struct fy_h1r_limits){
        .max_line = 8192, .max_head = 16384, .max_fields = 100, .max_body = 0};
    w.client_in_size = FY_BUF_SIZE;
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    peer = sv[1];
    c = calloc(1, sizeof(*c));
    c->w = &w;
    c->task.fn = client_run;
    fy_timer_init(&c->timer, on_timer);
    cr_assert_eq(fy_sock_open(&c->sock, &w.loop, sv[0], &c->task), 0);
    cr_assert_not_null(io_get(c));
    c->in = fy_buf_get(FY_BUF_SIZE);
    c->phase = P_ACTIVE;
}

static void teardown(void)
{
    fy_loop_unqueue(&w.loop, &c->task);
    fy_loop_timer_del(&w.loop, &c->timer);
    fy_sock_close(&c->sock);
    io_put(c);
    fy_buf_put(c->in);
    free(c);
    close(peer);
    fy_loop_destroy(&w.loop);
    fy_client_io_freelist_release();
    fy_buf_freelist_release();
}

TestSuite(client_h1, .init = setup, .fini = teardown);

/* Puts a request head and body bytes in the client's input and parses the head. */
static void feed(const char *bytes)
{
    size_t n = strlen(bytes);
    fy_buf_append(c->in, bytes, n);
    size_t used = fy_h1r_execute(&c->io->rd, c->in->data + c->in->start, n);
    c->in->start += (uint32_t)used;
    cr_assert(c->io->rd.state == FY_H1R_BODY || c->io->rd.state == FY_H1R_DONE);
}

/* Regression (defect 5): spans beyond `max` were dropped. */
Test(client_h1, body_read_keeps_spans_beyond_max)
{
    feed("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
         "1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n");
    char got[8] = {0};
    size_t len = 0;
    bool last = false;
    for (int i = 0; i < 10 && !last; i++) {
        struct iovec iov[1];
        int status = 0;
        int n = ds_body_read(c, iov, 1, &last, &status);
        cr_assert_geq(n, 0, "body_read failed: %d", n);
        cr_assert_leq(n, 1);
        if (n == 1) {
            memcpy(got + len, iov[0].iov_base, iov[0].iov_len);
            len += iov[0].iov_len;
        }
    }
    cr_assert(last);
    cr_assert_str_eq(got, "abc");
}

static void fill_queue_blocked(int batches, int spans)
{
    static char data[64];
    struct iovec iov[FY_H1R_MAX_SPANS];
    for (int i = 0; i < spans; i++)
        iov[i] = (struct iovec){data, sizeof(data)};
    c->io->wr.framing = FY_FRAME_LENGTH;
    c->sock.wr_ready = false; /* the client's socket is full */
    for (int b = 0; b < batches; b++)
        cr_assert_eq(ds_send_body(c, iov, spans, false), FY_AGAIN);
}

/* Regression (defect 5): with the queue full, send_body said FY_AGAIN ("queued") without
 * queueing: the spans were lost and the exchange hung. Now it refuses the batch. */
Test(client_h1, send_body_never_claims_a_batch_it_did_not_queue)
{
    fill_queue_blocked(2, FY_H1R_MAX_SPANS);
    size_t queued = fy_h1w_queued(&c->io->wr);
    static char more[8];
    struct iovec iov[FY_H1R_MAX_SPANS];
    for (int i = 0; i < FY_H1R_MAX_SPANS; i++)
        iov[i] = (struct iovec){more, sizeof(more)};
    int rc = ds_send_body(c, iov, FY_H1R_MAX_SPANS, false);
    cr_assert(rc < 0 && rc != FY_AGAIN, "rc %d", rc);
    cr_assert_eq(fy_h1w_queued(&c->io->wr), queued); /* nothing half-queued */
}

/* The leak's fix: done(clean=false) drops every span still queued, so the session may release
 * the memory they point into as soon as done() returns. */
Test(client_h1, unclean_done_drops_queued_spans)
{
    fill_queue_blocked(1, 4);
    cr_assert(fy_h1w_pending(&c->io->wr));
    ds_done(c, false);
    cr_assert_not(fy_h1w_pending(&c->io->wr));
    cr_assert_eq(fy_h1w_queued(&c->io->wr), 0);
    cr_assert(c->close_after);
    cr_assert(c->session_done);
}

/* A partly flushed queue makes room by compacting instead of refusing. */
Test(client_h1, partly_flushed_queue_compacts)
{
    fill_queue_blocked(2, FY_H1R_MAX_SPANS);
    struct fy_outq *q = &c->io->wr.q;
    q->first = (uint8_t)(q->n - 2); /* as if all but two entries were written */
    static char more[8];
    struct iovec iov[FY_H1R_MAX_SPANS];
    for (int i = 0; i < FY_H1R_MAX_SPANS; i++)
        iov[i] = (struct iovec){more, sizeof(more)};
    cr_assert_eq(ds_send_body(c, iov, FY_H1R_MAX_SPANS, false), FY_AGAIN);
    cr_assert_eq(q->first, 0);
    cr_assert_eq(q->n, 2 + FY_H1R_MAX_SPANS);
}
