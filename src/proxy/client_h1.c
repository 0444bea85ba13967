/*
 * HTTP/1 client connections; see client_h1.h.
 *
 * Phases:  IDLE --first byte--> HEAD --head parsed--> ACTIVE --session done--> IDLE (keep-alive)
 *                                 |                      |                  \-> CLOSING
 *                                 +--error (4xx)---------+----------------------> CLOSING
 * Buffers and the parser are attached only while a request is in progress, so an idle keep-alive
 * connection costs about 200 bytes. The timer means: IDLE idle-timeout, HEAD header-timeout
 * (not extended by trickling bytes: slowloris), ACTIVE body- or send-timeout, CLOSING linger.
 */
#include "proxy/client_h1.h"

#include <errno.h>
#include <stdarg.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/assert.h"
#include "core/macros.h"
#include "core/buf.h"
#include "core/log.h"
#include "http/date.h"
#include "http/status.h"
#include "http/tokens.h"
#include "http/h1_reader.h"
#include "http/h1_writer.h"
#include "net/sock.h"
#include "filters/acl.h"
#include "filters/htpasswd.h"
#include "net/tls.h"
#include "net/tls_sniff.h"
#include "proxy/handshake.h"
#include "proxy/session.h"
#include "proxy/worker.h"

/* P_SNIFF: an intercepted CONNECT was answered 200; the first bytes the client sends into the
 * tunnel decide what it is (TLS to intercept or pass through, plain HTTP, anything else). */
enum phase { P_IDLE, P_HEAD, P_ACTIVE, P_CLOSING, P_SNIFF };

/* Per-request state, attached while a request is in progress. */
struct client_io {
    struct fy_h1_reader rd;
    struct fy_h1_writer wr;
    char max_forwards[24]; /* the decremented Max-Forwards, until the head is owned */
    struct client_io *next_free;
};

struct fy_client {
    struct fy_sock sock;
    struct fy_task task;
    struct fy_timer timer;
    struct fy_worker *w;
    struct fy_wlistener *lsn; /* the socket it came in on */
    struct fy_client *prev, *next;
    struct fy_buf *in;
    struct client_io *io;
    struct fy_session *session;
    uint64_t req_start_us;
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer;
    uint8_t phase;
    uint8_t req_minor;
    bool req_is_head;
    bool close_after; /* no keep-alive after the current response */
    bool tunnel;      /* bytes after a 101 are relayed raw */
    bool want_body;   /* the session waits for request body bytes */
    bool timed_out;
    bool session_done; /* done() was called; finish flushing, then next request */
    bool linger;       /* unread input may remain: half-close and drain before closing */
    bool lingering;
    bool out_blocked;             /* the session waits for our output queue to drain */
    bool head_mark_close;         /* close_after before the final head was queued */
    struct fy_h1w_mark head_mark; /* the queue before the final head (ds_retract_head) */
    bool pipe_blocked;            /* ...or for the socket to take spliced bytes (ds_send_pipe) */
    bool shut_after_flush;        /* tunnel: send FIN once the queued bytes are out */
    bool cut;                     /* the response was cut short: end without TLS close_notify */
    bool head_sent;               /* the session gave us the final response head */
    bool req_is_connect;          /* the request in progress is a CONNECT */
    /* Inside an intercepted CONNECT tunnel: where its requests go (origin-form requests are
     * sent to the tunnel's destination). origin_host is owned; NULL = not a tunnel. */
    char *origin_host;
    char *origin_sni; /* the SNI the client asked the intercepted tunnel for; NULL = none */
    uint16_t origin_port;
    bool origin_tls;
};

static __thread struct client_io *io_free;

static void client_run(struct fy_task *t);
static void end_exchange(struct fy_client *c);

static const char *reason_phrase(int status)
{
    const char *r = fy_http_reason(status);
    return *r ? r : "Unknown"; /* ferry's own error bodies name it */
}

/* Per-request state from this thread's free list. A recycled reader keeps its message storage
 * (header array, string block), so a keep-alive request allocates nothing here. */
static struct client_io *io_get(struct fy_client *c)
{
    if (c->io)
        return c->io;
    struct client_io *io = io_free;
    if (io) {
        io_free = io->next_free;
        io->rd.limits = c->w->req_limits;
    } else {
        if (!(io = malloc(sizeof(*io))))
            return NULL;
        fy_h1r_init(&io->rd, true, &c->w->req_limits);
    }
    fy_h1w_init(&io->wr);
    c->io = io;
    return io;
}

static void io_put(struct fy_client *c)
{
    struct client_io *io = c->io;
    if (!io)
        return;
    c->io = NULL;
    fy_h1w_reset(&io->wr);
#ifdef FY_NO_FREELIST
    fy_h1r_free(&io->rd);
    free(io);
#else
    fy_h1r_next(&io->rd);
    io->next_free = io_free;
    io_free = io;
#endif
}

void fy_client_io_freelist_release(void)
{
    while (io_free) {
        struct client_io *n = io_free->next_free;
        fy_h1r_free(&io_free->rd);
        free(io_free);
        io_free = n;
    }
}

/* Unlinks and frees c and what it holds, except its socket (closed, or moved to another
 * handler, by the caller). */
static void client_free(struct fy_client *c)
{
    struct fy_worker *w = c->w;
    fy_loop_timer_del(&w->loop, &c->timer);
    fy_loop_unqueue(&w->loop, &c->task);
    io_put(c);
    fy_buf_put(c->in);
    free(c->origin_host);
    free(c->origin_sni);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nclients--;
    free(c);
}

static void close_client(struct fy_client *c)
{
    struct fy_worker *w = c->w;
    if (c->session) {
        fy_session_detach(c->session);
        c->session = NULL;
    }
    fy_sock_close(&c->sock);
    client_free(c);
    fy_worker_check_drained(w);
}

/* Closes a connection that is between requests (idle timeout, drain): nothing is owed, so a
 * transport that says goodbye (TLS close_notify) does, as far as the socket takes it at once. */
static void close_idle(struct fy_client *c)
{
    if (c->sock.tp->shutdown_before_close)
        (void)fy_sock_shutdown(&c->sock);
    close_client(c);
}

static void on_timer(struct fy_timer *t)
{
    struct fy_client *c = container_of(t, struct fy_client, timer);
    c->timed_out = true;
    fy_loop_queue(&c->w->loop, &c->task);
}

static struct fy_client *client_new(struct fy_worker *w, struct fy_wlistener *l,
                                    const struct sockaddr *peer, socklen_t len)
{
    struct fy_client *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->w = w; /* TCP_NODELAY comes from the listener (listener.c) */
    c->lsn = l;
    c->task.fn = client_run;
    fy_timer_init(&c->timer, on_timer);
    memcpy(&c->peer, peer, len < sizeof(c->peer) ? len : sizeof(c->peer));
    return c;
}

static void client_link(struct fy_client *c)
{
    struct fy_worker *w = c->w;
    c->next = w->clients;
    if (w->clients)
        w->clients->prev = c;
    w->clients = c;
    w->nclients++;
    c->phase = P_IDLE;
    c->close_after = w->draining;
    fy_loop_timer_set(&w->loop, &c->timer, w->cfg->idle_timeout);
}

void fy_client_accept(struct fy_worker *w, struct fy_wlistener *l, int fd,
                      const struct sockaddr *peer, socklen_t len)
{
    struct fy_client *c = client_new(w, l, peer, len);
    if (!c) {
        close(fd);
        return;
    }
    if (fy_sock_open(&c->sock, &w->loop, fd, &c->task) < 0) {
        free(c);
        return;
    }
    client_link(c);
}

void fy_client_adopt(struct fy_worker *w, struct fy_wlistener *l, struct fy_sock *s,
                     const struct sockaddr *peer, socklen_t len)
{
    struct fy_client *c = client_new(w, l, peer, len);
    if (!c) {
        fy_sock_close(s);
        return;
    }
    if (fy_sock_move(&c->sock, s, &c->task) < 0) {
        free(c);
        return;
    }
    client_link(c);
    /* Bytes may have come with the handshake's last flight (and sit decrypted in TLS). */
    fy_loop_queue(&w->loop, &c->task);
}

void fy_client_adopt_tunnel(struct fy_worker *w, struct fy_wlistener *l, struct fy_sock *s,
                            const struct sockaddr *peer, socklen_t len, const char *host,
                            uint16_t port, const char *sni)
{
    struct fy_client *c = client_new(w, l, peer, len);
    if (!c || !(c->origin_host = strdup(host)) || (sni && !(c->origin_sni = strdup(sni)))) {
        if (c)
            free(c->origin_host);
        free(c);
        fy_sock_close(s);
        return;
    }
    c->origin_port = port;
    c->origin_tls = true;
    if (fy_sock_move(&c->sock, s, &c->task) < 0) {
        free(c->origin_host);
        free(c->origin_sni);
        free(c);
        return;
    }
    client_link(c);
    fy_loop_queue(&w->loop, &c->task);
}

struct fy_wlistener *fy_client_listener(const struct fy_client *c)
{
    return c->lsn;
}

struct fy_client *fy_client_next(struct fy_client *c)
{
    return c->next;
}

/* ---- output ---- */

static int flush(struct fy_client *c)
{
    if (!c->io || !fy_h1w_pending(&c->io->wr))
        return 0;
    if (!c->sock.wr_ready)
        return FY_AGAIN;
    int rc = fy_h1w_flush(&c->io->wr, &c->sock);
    if (rc == FY_AGAIN)
        fy_loop_timer_set(&c->w->loop, &c->timer, c->w->cfg->send_timeout);
    return rc;
}

/* The access log line of a request ferry answered itself: whatever was read of it. */
static void log_client_error(struct fy_client *c, int status, int body_bytes)
{
    struct fy_log_entry e = {0};
    e.client = &c->peer.sa;
    e.version_minor = -1;
    struct fy_h1_reader *rd = c->io ? &c->io->rd : NULL;
    struct fy_msg *m = rd ? &rd->msg : NULL;
    if (m && m->method && m->target) {
        e.method = m->method;
        e.method_len = m->method_len;
        e.target = m->target;
        e.target_len = m->target_len;
        e.version_minor = rd->line_minor >= 0 ? rd->line_minor : (int8_t)m->version_minor;
        fy_log_entry_agent(&e, m);
    } else if (rd && rd->err_method_len) {
        e.method = rd->err_method;
        e.method_len = rd->err_method_len;
        e.target = rd->err_target;
        e.target_len = rd->err_target_len;
        e.version_minor = rd->line_minor;
    }
    e.status = status;
    e.bytes_out = body_bytes > 0 ? (uint64_t)body_bytes : 0;
    e.total_us = c->w->loop.now_us - c->req_start_us;
    fy_accesslog_write(&c->w->alog, &e);
}

/* Queues a small complete error response. `close` forces Connection: close; `extra` (may be
 * NULL) holds more fields for the head (a route's `always` response rules, Retry-After). Returns
 * the body length, or -1 when out of memory. */
static int queue_error(struct fy_client *c, int status, const char *text, bool close,
                       const struct fy_msg *extra)
{
    struct client_io *io = io_get(c);
    if (!io)
        return -1;
    char body[256], head[320];
    int blen = snprintf(body, sizeof(body), "%d %s: %s\n", status, reason_phrase(status), text);
    if (blen < 0 || (size_t)blen >= sizeof(body))
        blen = (int)strlen(body);
    if (close)
        c->close_after = true;
    char date[40];
    fy_http_date(date);
    int hlen = snprintf(head, sizeof(head),
                        "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                        "Content-Length: %d\r\nCache-Control: no-store\r\n%s",
                        status, reason_phrase(status), date, blen,
                        c->close_after ? "Connection: close\r\n" : "");
    io->wr.framing = FY_FRAME_LENGTH;
    if (fy_h1w_copy(&io->wr, head, (size_t)hlen) < 0)
        return -1;
    for (uint32_t i = 0; extra && i < extra->nhdrs; i++) {
        const struct fy_hdr *h = &extra->hdrs[i];
        if (h->removed)
            continue;
        if (fy_h1w_copy(&io->wr, h->name, h->name_len) < 0 || fy_h1w_copy(&io->wr, ": ", 2) < 0 ||
            fy_h1w_copy(&io->wr, h->value, h->value_len) < 0 || fy_h1w_copy(&io->wr, "\r\n", 2) < 0)
            return -1;
    }
    if (fy_h1w_copy(&io->wr, "\r\n", 2) < 0 ||
        (!c->req_is_head && fy_h1w_copy(&io->wr, body, (size_t)blen) < 0))
        return -1;
    return c->req_is_head ? 0 : blen;
}

/* Diagnostics about a client connection: "client ADDR "REQUEST LINE": what" (session.c's slog
 * adds the upstream for exchanges). */
static void client_log(struct fy_client *c, enum fy_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void client_log(struct fy_client *c, enum fy_log_level level, const char *fmt, ...)
{
    if (level < fy_log_min_level)
        return;
    char what[512], addr[64], line[300] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    fy_addr_format(&c->peer.sa, addr, sizeof(addr));
    struct fy_h1_reader *rd = c->io ? &c->io->rd : NULL;
    const char *mth = NULL, *tgt = NULL;
    uint32_t ml = 0, tl = 0;
    if (rd && rd->msg.method && rd->msg.target) {
        mth = rd->msg.method, ml = rd->msg.method_len, tgt = rd->msg.target;
        tl = rd->msg.target_len;
    } else if (rd && rd->err_method_len) {
        mth = rd->err_method, ml = rd->err_method_len, tgt = rd->err_target;
        tl = rd->err_target_len;
    }
    if (mth)
        snprintf(line, sizeof(line), " \"%.*s %.*s%s\"", (int)ml, mth, tl > 200 ? 200 : (int)tl,
                 tgt, tl > 200 ? "..." : "");
    fy_log(level, "client %s%s: %s", addr, line, what);
}

static bool trace_hides(const struct fy_hdr *h)
{
    return fy_name_eq(h->name, h->name_len, "Authorization", 13) ||
           fy_name_eq(h->name, h->name_len, "Proxy-Authorization", 19) ||
           fy_name_eq(h->name, h->name_len, "Cookie", 6);
}

/* A request that never became an exchange: answer, log, and close after flushing. */
static void reject_with(struct fy_client *c, int status, const char *why,
                        const struct fy_msg *extra)
{
    if (c->io && c->in && c->io->rd.state == FY_H1R_HEAD) /* e.g. the header timeout */
        fy_h1r_keep_request_line(&c->io->rd, c->in->data + c->in->start);
    client_log(c, FY_LOG_INFO, "rejected with %d: %s", status, why);
    c->linger = true;
    c->phase = P_CLOSING;
    int body = queue_error(c, status, why, true, extra);
    log_client_error(c, status, body);
    if (body < 0) {
        close_client(c);
        return;
    }
    fy_loop_timer_set(&c->w->loop, &c->timer, c->w->cfg->send_timeout);
    fy_loop_queue(&c->w->loop, &c->task);
}

static void reject(struct fy_client *c, int status, const char *why)
{
    reject_with(c, status, why, NULL);
}

/*
 * ferry is the final recipient of an OPTIONS or TRACE with Max-Forwards: 0. OPTIONS gets the
 * methods ferry forwards; TRACE gets the request as received, in message/http, without the
 * fields that carry credentials (RFC 9110 9.3.8). The connection stays open unless the request
 * has a body (never read) or asked to close.
 */
static void answer_max_forwards(struct fy_client *c, struct fy_msg *m, bool trace)
{
    struct client_io *io = c->io;
    bool has_body = m->chunked || m->content_length > 0;
    if (has_body) {
        c->close_after = true;
        c->linger = true;
    }
    char date[40];
    fy_http_date(date);
    size_t body_len = 0;
    if (trace) {
        body_len = m->method_len + 1 + m->target_len + 11 + 2;
        for (uint32_t i = 0; i < m->nhdrs; i++) {
            const struct fy_hdr *h = &m->hdrs[i];
            if (!h->removed && !trace_hides(h))
                body_len += h->name_len + h->value_len + 4;
        }
    }
    char head[512];
    int hlen = snprintf(head, sizeof(head),
                        "HTTP/1.1 200 OK\r\nDate: %s\r\n%sContent-Length: %zu\r\n%s\r\n", date,
                        trace ? "Content-Type: message/http\r\n"
                              : "Allow: GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH\r\n",
                        body_len, c->close_after ? "Connection: close\r\n" : "");
    struct fy_buf *b = fy_h1w_head_begin(&io->wr, (size_t)hlen + body_len);
    if (!b) {
        close_client(c);
        return;
    }
    size_t from = b->end;
    fy_h1w_put(b, head, (size_t)hlen);
    if (trace && !c->req_is_head) {
        fy_h1w_put(b, m->method, m->method_len);
        fy_h1w_put(b, " ", 1);
        fy_h1w_put(b, m->target, m->target_len);
        fy_h1w_put(b, m->version_minor ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n", 11);
        for (uint32_t i = 0; i < m->nhdrs; i++) {
            const struct fy_hdr *h = &m->hdrs[i];
            if (!h->removed && !trace_hides(h))
                fy_h1w_put_field(b, h->name, h->name_len, h->value, h->value_len);
        }
        fy_h1w_put(b, "\r\n", 2);
    }
    fy_h1w_head_done(&io->wr, b, from);
    io->wr.framing = FY_FRAME_LENGTH;
    log_client_error(c, 200, (int)body_len);
    /* Served like an exchange that just ended: flush, then the next request (or close). */
    fy_loop_timer_set(&c->w->loop, &c->timer, c->w->cfg->send_timeout);
    c->phase = P_ACTIVE;
    c->session = NULL;
    c->session_done = true;
    fy_loop_queue(&c->w->loop, &c->task);
}

/* Reads from the client into the free space of c->in (making room first). Returns what the
 * transport returned: bytes read, 0 at end of stream, FY_AGAIN or -errno. */
static ssize_t read_more(struct fy_client *c)
{
    struct fy_buf *in = c->in;
    if (in->start == in->end)
        in->start = in->end = 0;
    else if (fy_buf_room(in) == 0)
        fy_buf_compact(in);
    if (fy_buf_room(in) == 0)
        return -ENOBUFS; /* cannot happen with the limits in force; never read 0 as EOF */
    ssize_t r = fy_sock_read(&c->sock, in->data + in->end, fy_buf_room(in));
    if (r > 0)
        in->end += (uint32_t)r;
    return r;
}

/* ---- downstream interface for the session ---- */

static int ds_body_read(void *ds, struct iovec *iov, int max, bool *last, int *status)
{
    struct fy_client *c = ds;
    struct client_io *io = c->io;
    struct fy_h1_reader *rd = &io->rd;
    struct fy_buf *in = c->in;
    *last = false;
    *status = 0;
    for (;;) {
        if (c->tunnel) {
            if (in->start < in->end) {
                iov[0].iov_base = in->data + in->start;
                iov[0].iov_len = in->end - in->start;
                in->start = in->end;
                c->want_body = false;
                return 1;
            }
        } else {
            if (rd->nspans > 0) {
                /* Spans beyond `max` stay for the next call, in order. */
                int n = rd->nspans < max ? rd->nspans : max;
                memcpy(iov, rd->spans, (size_t)n * sizeof(*iov));
                rd->nspans -= n;
                memmove(rd->spans, rd->spans + n, (size_t)rd->nspans * sizeof(*iov));
                *last = rd->state == FY_H1R_DONE && rd->nspans == 0;
                c->want_body = false;
                return n;
            }
            if (rd->state == FY_H1R_DONE) {
                *last = true;
                return 0;
            }
            if (rd->state == FY_H1R_ERROR) {
                *status = rd->err_status;
                client_log(c, FY_LOG_INFO, "bad request body: %s", rd->err_text);
                return -1;
            }
            if (in->start < in->end) {
                size_t n = fy_h1r_execute(rd, in->data + in->start, in->end - in->start);
                in->start += (uint32_t)n;
                if (rd->nspans > 0 || rd->state != FY_H1R_BODY)
                    continue;
            }
        }
        if (c->timed_out) {
            *status = 408;
            return -1;
        }
        if (!c->sock.rd_ready) {
            c->want_body = true;
            fy_loop_timer_set(&c->w->loop, &c->timer, c->w->cfg->body_timeout);
            return FY_AGAIN;
        }
        ssize_t r = read_more(c);
        if (r > 0 || r == FY_AGAIN)
            continue;
        if (c->tunnel) {
            *last = true;
            return 0;
        }
        c->close_after = true;
        return -1; /* the client went away mid-body */
    }
}

static void ds_body_consumed(void *ds)
{
    (void)ds; /* consumed bytes sit before in->start and are reused on the next read */
}

/* The response's visible fields. Content-Length is left out of a 1xx and a 204, which must not
 * carry one (RFC 9110 8.6): a lenient client honouring it on a 103 would take bytes of the final
 * response as that interim's body. (A 304's Content-Length describes the selected
 * representation and stays.) */
static int put_fields(struct fy_buf *b, const struct fy_msg *m)
{
    bool no_length = m->status < 200 || m->status == 204;
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        const struct fy_hdr *h = &m->hdrs[i];
        if (h->removed || (no_length && h->tok == FY_TOK_CONTENT_LENGTH))
            continue;
        if (!fy_h1w_put_field(b, h->name, h->name_len, h->value, h->value_len))
            return -1;
    }
    return 0;
}

/* reason-phrase = *( HTAB / SP / VCHAR / obs-text ) (RFC 9112 4). An upstream's phrase with
 * other bytes (ESC sequences for a terminal, DEL) is replaced by the standard one: the reason is
 * advisory, and a client must not get what a field value would have been refused for. */
static bool reason_valid(const char *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!fy_is_field_byte((unsigned char)r[i]))
            return false;
    return true;
}

static int put_status_line(struct fy_buf *b, const struct fy_msg *m)
{
    unsigned st = m->status;
    char line[13] = {'H',
                     'T',
                     'T',
                     'P',
                     '/',
                     '1',
                     '.',
                     '1',
                     ' ',
                     (char)('0' + st / 100 % 10),
                     (char)('0' + st / 10 % 10),
                     (char)('0' + st % 10),
                     ' '};
    if (!fy_h1w_put(b, line, sizeof(line)))
        return -1;
    bool own = m->reason_len && reason_valid(m->reason, m->reason_len);
    const char *reason = own ? m->reason : fy_http_reason(m->status);
    size_t rlen = own ? m->reason_len : strlen(reason);
    return fy_h1w_put(b, reason, rlen) && fy_h1w_put(b, "\r\n", 2) ? 0 : -1;
}

/* Upper bound of the serialised head: status line, fields, and the fields ferry adds. */
static size_t head_size(const struct fy_msg *m)
{
    size_t reason = m->reason_len ? m->reason_len : 40;
    return 13 + reason + 2 + fy_msg_fields_size(m) + 28 + 24 + 2;
}

static int ds_send_interim(void *ds, const struct fy_msg *m)
{
    struct fy_client *c = ds;
    if (c->req_minor == 0)
        return 0; /* RFC 9110 15.2: no 1xx to HTTP/1.0 clients */
    size_t need = head_size(m);
    struct fy_buf *b = fy_h1w_head_begin(&c->io->wr, need < FY_BUF_SIZE ? need : FY_BUF_SIZE);
    if (!b)
        return -1;
    size_t from = b->end;
    if (put_status_line(b, m) < 0 || put_fields(b, m) < 0 || !fy_h1w_put(b, "\r\n", 2)) {
        b->end = (uint32_t)from;
        return -ENOSPC;
    }
    fy_h1w_head_done(&c->io->wr, b, from);
    int rc = flush(c);
    return rc == FY_AGAIN ? 0 : rc;
}

static int ds_send_head(void *ds, struct fy_msg *m)
{
    struct fy_client *c = ds;
    struct fy_h1_writer *wr = &c->io->wr;
    enum fy_framing framing;
    if (c->req_is_connect && m->status / 100 == 2) {
        /* The tunnel is open: a status line, no framing fields, then the destination's bytes
         * (RFC 9110 9.3.6). */
        struct fy_buf *b = fy_h1w_head_begin(wr, 64);
        if (!b)
            return -1;
        size_t from = b->end;
        if (put_status_line(b, m) < 0 || !fy_h1w_put(b, "\r\n", 2)) {
            b->end = (uint32_t)from;
            return -ENOSPC;
        }
        fy_h1w_head_done(wr, b, from);
        wr->framing = FY_FRAME_TUNNEL;
        c->close_after = true;
        c->head_sent = true;
        c->tunnel = true;
        fy_loop_queue(&c->w->loop, &c->task);
        return 0;
    }
    if (m->status == 101) {
        framing = FY_FRAME_TUNNEL;
        c->close_after = true;
    } else if (c->req_is_head || m->status < 200 || m->status == 204 || m->status == 304) {
        framing = FY_FRAME_NONE;
    } else if (m->content_length >= 0 && !m->chunked) {
        framing = m->content_length ? FY_FRAME_LENGTH : FY_FRAME_NONE;
    } else if (c->req_minor == 1) {
        framing = FY_FRAME_CHUNKED;
    } else {
        framing = FY_FRAME_CLOSE;
        c->close_after = true;
    }
    if (c->w->draining)
        c->close_after = true;
    fy_h1w_mark(wr, &c->head_mark);
    c->head_mark_close = c->close_after;
    /* A head that does not fit one buffer (FY_BUF_SIZE bytes) once rewritten is refused whole
     * (the session answers 502): nothing is queued, so the client still gets a whole response.
     * The buffer asked for has room for the estimate, capped at the limit, so exactly the heads
     * over the limit fail. */
    size_t need = head_size(m);
    struct fy_buf *b = fy_h1w_head_begin(wr, need < FY_BUF_SIZE ? need : FY_BUF_SIZE);
    if (!b)
        return -1;
    size_t from = b->end;
    if (put_status_line(b, m) < 0 || put_fields(b, m) < 0) {
        b->end = (uint32_t)from;
        return -ENOSPC;
    }
    bool ok = true;
    if (framing == FY_FRAME_CHUNKED)
        ok = fy_h1w_put(b, "Transfer-Encoding: chunked\r\n", 28);
    if (m->status == 101)
        ok = ok && fy_h1w_put(b, "Connection: upgrade\r\n", 21);
    else if (c->close_after)
        ok = ok && fy_h1w_put(b, "Connection: close\r\n", 19);
    else if (c->req_minor == 0)
        ok = ok && fy_h1w_put(b, "Connection: keep-alive\r\n", 24);
    if (!ok || !fy_h1w_put(b, "\r\n", 2)) {
        b->end = (uint32_t)from;
        return -ENOSPC;
    }
    fy_h1w_head_done(wr, b, from);
    wr->framing = framing;
    c->head_sent = true;
    if (m->status == 101)
        c->tunnel = true;
    /* Sent with the first body bytes when they follow right away, else by the client task. */
    fy_loop_queue(&c->w->loop, &c->task);
    return 0;
}

static int ds_send_body(void *ds, const struct iovec *iov, int n, bool last)
{
    struct fy_client *c = ds;
    struct fy_h1_writer *wr = &c->io->wr;
    if (c->tunnel && last) {
        /* Upstream finished its direction: pass the half-close on after pending bytes. */
        int rc = flush(c);
        if (rc == 0)
            rc = fy_sock_shutdown(&c->sock);
        if (rc == FY_AGAIN)
            c->shut_after_flush = true;
        return rc == FY_AGAIN ? 0 : rc;
    }
    /* The session keeps one batch out at a time, which always fits the queue: a refusal here
     * is a bug, and failing the exchange beats pretending the spans were queued. */
    if (fy_h1w_body(wr, iov, n, last) < 0) {
        client_log(c, FY_LOG_ERROR, "output queue full (%d spans); closing the connection", n);
        return -ENOBUFS;
    }
    int rc = flush(c);
    c->out_blocked = rc == FY_AGAIN;
    return rc;
}

/* Spliced body bytes: the queue (head, copied bytes, the framing of a direct chunk) goes first,
 * then the pipe's bytes go straight to the socket. */
static ssize_t ds_send_pipe(void *ds, int pipe_rd, size_t len)
{
    struct fy_client *c = ds;
    struct fy_h1_writer *wr = &c->io->wr;
    FY_ASSERT(fy_sock_can_splice(&c->sock) && !c->tunnel);
    int64_t may = fy_h1w_direct_begin(wr, len);
    if (may < 0) {
        client_log(c, FY_LOG_ERROR, "output queue full before spliced bytes; closing");
        return -ENOBUFS;
    }
    int rc = flush(c);
    if (rc == 0 && !c->sock.wr_ready)
        rc = FY_AGAIN;
    if (rc == 0) {
        ssize_t n = fy_sock_splice_out(&c->sock, pipe_rd, (size_t)may);
        if (n > 0) {
            c->pipe_blocked = false;
            fy_h1w_direct_done(wr, (uint64_t)n);
            return n;
        }
        if (n != FY_AGAIN)
            return n < 0 ? n : -EIO; /* 0: the pipe was empty, the session's count is wrong */
        c->pipe_blocked = true;
        fy_loop_timer_set(&c->w->loop, &c->timer, c->w->cfg->send_timeout);
        rc = FY_AGAIN;
    }
    if (rc == FY_AGAIN)
        c->out_blocked = true;
    return rc;
}

static int ds_send_error(void *ds, int status, const char *text, const struct fy_msg *extra)
{
    struct fy_client *c = ds;
    /* Keep-alive survives an error only if the request was read to its end. A failed CONNECT
     * closes too: its client may already be sending tunnel bytes (a ClientHello), which must
     * never be read as the next request. */
    bool body_pending = c->io->rd.state != FY_H1R_DONE;
    /* A malformed request closes the connection whatever its framing (as nginx does, and as
     * ferry's own reader rejections do): its client is not one to trust with another. */
    bool malformed =
        status == 400 || status == 408 || status == 413 || status == 414 || status == 431;
    bool close = body_pending || c->req_is_connect || malformed;
    if (close)
        c->linger = true;
    int body = queue_error(c, status, text, close, extra);
    if (body < 0)
        c->close_after = true;
    return body;
}

static bool ds_retract_head(void *ds)
{
    struct fy_client *c = ds;
    if (!c->head_sent || c->tunnel || c->out_blocked || !fy_h1w_rewind(&c->io->wr, &c->head_mark))
        return false;
    c->head_sent = false;
    c->close_after = c->head_mark_close;
    return true;
}

static void ds_done(void *ds, bool clean)
{
    struct fy_client *c = ds;
    c->session = NULL;
    c->session_done = true;
    if (clean) {
        /* Every body span was flushed before a clean end (session.h). */
        FY_ASSERT(!c->out_blocked);
    } else {
        /* The queue may still reference the session's buffers, which are released as soon as we
         * return: drop all of it. The response is cut short anyway; the connection closes. */
        fy_h1w_reset(&c->io->wr);
        c->out_blocked = false;
        c->pipe_blocked = false;
        c->shut_after_flush = false;
        c->close_after = true;
        c->linger = !c->tunnel;
        c->cut = true;
    }
    fy_loop_queue(&c->w->loop, &c->task);
}

static void ds_limit_body(void *ds, uint64_t max)
{
    struct fy_client *c = ds;
    c->io->rd.limits.max_body = max;
}

static const struct fy_sock *ds_transport(void *ds)
{
    return &((struct fy_client *)ds)->sock;
}

static const struct fy_downstream_ops client_ops = {
    .transport = ds_transport,
    .limit_body = ds_limit_body,
    .body_read = ds_body_read,
    .body_consumed = ds_body_consumed,
    .send_interim = ds_send_interim,
    .send_head = ds_send_head,
    .send_body = ds_send_body,
    .send_pipe = ds_send_pipe,
    .send_error = ds_send_error,
    .retract_head = ds_retract_head,
    .done = ds_done,
};

/* ---- request intake ---- */

/* absolute-form (RFC 9112 3.2.2): the target's authority replaces Host; forward origin-form. */
static int absolute_form(struct fy_msg *m)
{
    const char *t = m->target;
    uint32_t len = m->target_len, skip;
    if (len >= 7 && !strncasecmp(t, "http://", 7))
        skip = 7;
    else if (len >= 8 && !strncasecmp(t, "https://", 8))
        skip = 8;
    else
        return 0;
    const char *auth = t + skip;
    uint32_t alen = 0;
    while (skip + alen < len && auth[alen] != '/' && auth[alen] != '?')
        alen++;
    if (alen == 0 || memchr(auth, '@', alen) || !fy_valid_host(auth, alen))
        return -1;
    uint32_t rest = len - skip - alen;
    if (rest > 0 && auth[alen] == '?') {
        /* "http://h?q": the origin-form is "/?q" (RFC 9112 3.2.1). The scheme's bytes are no
         * longer needed, so the authority moves one byte left, in the client's input buffer
         * (ours to write), and the freed byte becomes the '/'. */
        char *a = (char *)auth;
        memmove(a - 1, a, alen);
        a[alen - 1] = '/';
        auth--;
        rest++;
    }
    if (fy_msg_set(m, "Host", 4, auth, alen) < 0)
        return -1;
    m->target = auth + alen;
    m->target_len = rest;
    if (m->target_len == 0) {
        /* "http://h": the path is "/" (RFC 9110 4.2.3), but "*" for OPTIONS: an empty path there
         * asks about the server as a whole (RFC 9112 3.2.4). */
        bool options = m->method_len == 7 && !memcmp(m->method, "OPTIONS", 7);
        m->target = options ? "*" : "/";
        m->target_len = 1;
    }
    return 0;
}

/* Accepts origin-form, absolute-form (rewritten to origin-form) and "*" for OPTIONS. */
static bool normalize_target(struct fy_msg *m)
{
    /* A fragment is never part of a request-target (RFC 9112 3.2); hops disagree on it. */
    if (m->target_len == 0 || memchr(m->target, '#', m->target_len))
        return false;
    if (m->target[0] == '/')
        return true;
    if (m->target[0] == '*')
        return m->target_len == 1 && m->method_len == 7 && !memcmp(m->method, "OPTIONS", 7);
    return absolute_form(m) == 0 && (m->target[0] == '/' || m->target[0] == '*');
}

/* Every protocol the client asks to upgrade to (all Upgrade fields) is on the allowlist
 * (--upgrade-protocols, "websocket" by default). */
static bool upgrade_allowed(struct fy_client *c, struct fy_msg *m)
{
    const char *allow = c->w->cfg->upgrade_protocols ? c->w->cfg->upgrade_protocols : "websocket";
    bool any = false;
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        const struct fy_hdr *h = &m->hdrs[i];
        if (h->removed || h->tok != FY_TOK_UPGRADE)
            continue;
        const char *v = h->value, *end = v + h->value_len;
        while (v < end) {
            while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
                v++;
            const char *p = v;
            while (v < end && *v != ',')
                v++;
            const char *e = v;
            while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            if (e == p)
                continue;
            const char *slash = memchr(p, '/', (size_t)(e - p));
            uint32_t name_len = (uint32_t)((slash ? slash : e) - p);
            if (!fy_list_has(allow, (uint32_t)strlen(allow), p, name_len))
                return false;
            any = true;
        }
    }
    return any;
}

/*
 * Max-Forwards on OPTIONS and TRACE (RFC 9110 7.6.2): at 0 ferry is the final recipient and
 * answers itself; otherwise the value goes upstream decremented. Other methods ignore it.
 * Returns 0 to forward, 1 when answered, -1 for an invalid value.
 */
static int max_forwards(struct fy_client *c, struct fy_msg *m)
{
    bool options = m->method_len == 7 && !memcmp(m->method, "OPTIONS", 7);
    bool trace = m->method_len == 5 && !memcmp(m->method, "TRACE", 5);
    if (!options && !trace)
        return 0;
    struct fy_hdr *h = NULL;
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        if (m->hdrs[i].removed || m->hdrs[i].tok != FY_TOK_MAX_FORWARDS)
            continue;
        if (h)
            return -1; /* two fields are a list (RFC 9110 5.3), and the value is one number */
        h = &m->hdrs[i];
    }
    if (!h)
        return 0;
    if (h->value_len == 0)
        return -1;
    /* 1*DIGIT, of any length: a value past 10^18 is as good as infinite (clamped). */
    uint64_t n = 0;
    for (uint32_t i = 0; i < h->value_len; i++) {
        if (h->value[i] < '0' || h->value[i] > '9')
            return -1;
        if (n < 1000000000000000000ull)
            n = n * 10 + (uint64_t)(h->value[i] - '0');
    }
    if (n > 0) {
        /* The decremented value lives in the client until fy_msg_own() copies it. */
        size_t len = fy_u64_to_dec(n - 1, c->io->max_forwards);
        return fy_msg_set_tok(m, FY_TOK_MAX_FORWARDS, "Max-Forwards", 12, c->io->max_forwards,
                              (uint32_t)len) < 0
                   ? -1
                   : 0;
    }
    answer_max_forwards(c, m, trace);
    return 1;
}

/* ---- forward proxy intake ---- */

/* "host:port", "[v6]:port", or a host alone when def_port is not 0, into t (pointing into a).
 * False when malformed. */
static bool parse_authority(const char *a, uint32_t len, uint16_t def_port, struct fy_fwd_target *t)
{
    if (len == 0 || !fy_valid_host(a, len))
        return false;
    const char *host = a, *port = NULL;
    uint32_t hl = len, pl = 0;
    if (a[0] == '[') {
        const char *rb = memchr(a, ']', len);
        if (!rb)
            return false;
        host = a + 1;
        hl = (uint32_t)(rb - a) - 1;
        /* An IP literal here is an IPv6 address: an IPvFuture one names nothing ferry can
         * reach, and must not be taken for a DNS name. */
        char text[INET6_ADDRSTRLEN];
        struct in6_addr a6;
        if (hl == 0 || hl >= sizeof(text))
            return false;
        memcpy(text, host, hl);
        text[hl] = 0;
        if (inet_pton(AF_INET6, text, &a6) != 1)
            return false;
        uint32_t used = (uint32_t)(rb - a) + 1;
        if (used < len) {
            port = rb + 2;
            pl = len - used - 1;
        }
    } else {
        const char *colon = memrchr(a, ':', len);
        if (colon) {
            hl = (uint32_t)(colon - a);
            port = colon + 1;
            pl = len - hl - 1;
        }
    }
    if (hl == 0 || hl > 253)
        return false;
    uint32_t p = def_port;
    if (port && pl == 0 && def_port) {
        /* "http://h:/": an empty port is the scheme's default (RFC 3986 3.2.3). */
    } else if (port) {
        if (pl == 0 || pl > 5)
            return false;
        p = 0;
        for (uint32_t i = 0; i < pl; i++)
            p = p * 10 + (uint32_t)(port[i] - '0'); /* digits: fy_valid_host checked them */
        if (p == 0 || p > 65535)
            return false;
    } else if (!def_port) {
        return false;
    }
    t->host = host;
    t->host_len = hl;
    t->port = (uint16_t)p;
    return true;
}

/* A response ferry makes itself, after which the connection carries on (a 407 the client will
 * answer with credentials, typically on the same connection). */
static void answer_keepalive(struct fy_client *c, int status, const char *why,
                             const struct fy_msg *extra)
{
    struct fy_msg *m = &c->io->rd.msg;
    bool has_body = m->chunked || m->content_length > 0;
    if (has_body) {
        c->close_after = true;
        c->linger = true;
    }
    client_log(c, FY_LOG_INFO, "answered %d: %s", status, why);
    int body = queue_error(c, status, why, has_body, extra);
    log_client_error(c, status, body);
    if (body < 0) {
        close_client(c);
        return;
    }
    fy_loop_timer_set(&c->w->loop, &c->timer, c->w->cfg->send_timeout);
    c->phase = P_ACTIVE;
    c->session = NULL;
    c->session_done = true;
    fy_loop_queue(&c->w->loop, &c->task);
}

/*
 * A forward listener's checks before anything else (Squid's order): the client's address
 * (allow-clients), then its credentials (407 until they are right). Proxy-Authorization is for
 * ferry alone and never goes further. Returns true to go on, false when answered.
 */
static bool forward_admit(struct fy_client *c, const struct fy_forward_conf *fc, struct fy_msg *m)
{
    if (c->origin_host)
        goto strip; /* inside a tunnel its CONNECT opened: that request was admitted */
    if (!fy_cidr_list_match(fc->allow_clients, &c->peer.sa)) {
        char addr[64], why[160];
        fy_addr_format_host(&c->peer.sa, addr, sizeof(addr));
        snprintf(why, sizeof(why), "this proxy does not serve clients from %s (allow-clients)",
                 addr);
        reject(c, 403, why);
        return false;
    }
    if (fc->auth) {
        struct fy_hdr *h = fy_msg_find(m, "Proxy-Authorization", 19);
        char user[256];
        enum fy_auth_result r = fy_htpasswd_check(fc->auth, c->w->auth_cache, h ? h->value : NULL,
                                                  h ? h->value_len : 0, user, sizeof(user));
        if (r != FY_AUTH_OK) {
            struct fy_msg extra;
            fy_msg_init(&extra);
            fy_msg_add(&extra, "Proxy-Authenticate", 18, fc->auth_header,
                       (uint32_t)strlen(fc->auth_header), FY_TOK_OTHER);
            char why[200];
            snprintf(why, sizeof(why), "proxy authentication required (%s)", fy_auth_result_str(r));
            answer_keepalive(c, 407, why, &extra);
            fy_msg_free(&extra);
            return false;
        }
    }
strip:
    for (uint32_t i = 0; i < m->nhdrs; i++)
        if (fy_name_eq(m->hdrs[i].name, m->hdrs[i].name_len, "Proxy-Authorization", 19))
            m->hdrs[i].removed = true;
    return true;
}

/* Where a forward listener's request goes, from the owned head: CONNECT's authority, the
 * tunnel's destination for a request inside an intercepted one, or the absolute-form URL's
 * authority (now the Host field: absolute_form() put it there). False: none (origin-form). */
static bool forward_target(struct fy_client *c, struct fy_msg *m, bool absolute, bool https,
                           struct fy_fwd_target *t)
{
    memset(t, 0, sizeof(*t));
    if (c->req_is_connect) {
        t->connect = true;
        return parse_authority(m->target, m->target_len, 0, t);
    }
    if (c->origin_host) {
        t->host = c->origin_host;
        t->host_len = (uint32_t)strlen(c->origin_host);
        t->port = c->origin_port;
        t->tls = c->origin_tls;
        t->sni = c->origin_sni;
        t->intercepted = true;
        return true;
    }
    if (!absolute)
        return false;
    struct fy_hdr *h = fy_msg_find_tok(m, FY_TOK_HOST);
    t->tls = https;
    return h && parse_authority(h->value, h->value_len, https ? 443 : 80, t);
}

/* ---- intercepted CONNECT tunnels ---- */

static void read_request(struct fy_client *c);

/* Answers an intercepted CONNECT itself (200) and waits for the tunnel's first bytes. */
static void intercept_answer(struct fy_client *c, const struct fy_fwd_target *t)
{
    struct client_io *io = c->io;
    free(c->origin_host);
    c->origin_host = strndup(t->host, t->host_len);
    c->origin_port = t->port;
    static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
    if (!c->origin_host || fy_h1w_copy(&io->wr, ok, sizeof(ok) - 1) < 0) {
        close_client(c);
        return;
    }
    io->wr.framing = FY_FRAME_TUNNEL;
    log_client_error(c, 200, 0);
    c->phase = P_SNIFF;
    c->close_after = true;
    fy_loop_timer_set(&c->w->loop, &c->timer, c->w->cfg->header_timeout);
    fy_loop_queue(&c->w->loop, &c->task);
}

/* The tunnel is relayed untouched: a CONNECT session whose 200 was already sent. */
static void tunnel_untouched(struct fy_client *c, const char *why)
{
    struct fy_worker *w = c->w;
    struct fy_msg *m = &c->io->rd.msg;
    client_log(c, FY_LOG_DEBUG, "tunnel relayed untouched: %s", why);
    struct fy_fwd_target t = {.host = c->origin_host,
                              .host_len = (uint32_t)strlen(c->origin_host),
                              .port = c->origin_port,
                              .connect = true,
                              .answered = true};
    fy_loop_timer_stop(&c->timer);
    c->timed_out = false;
    c->phase = P_ACTIVE;
    c->tunnel = true;
    c->head_sent = true;
    c->session_done = false;
    c->session =
        fy_session_start(w, &client_ops, c, m, &c->peer.sa, c->req_start_us, c->lsn->listener, &t);
    if (!c->session)
        close_client(c);
}

/* An HTTP request line starts with a method: an upper-case token and a space. */
static bool looks_like_http(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n && i < 16 && p[i] >= 'A' && p[i] <= 'Z')
        i++;
    return i > 0 && (i == n || p[i] == ' ');
}

static void sniff_tunnel(struct fy_client *c)
{
    int rc = flush(c);
    if (rc < 0 && rc != FY_AGAIN) {
        close_client(c);
        return;
    }
    if (c->timed_out) {
        client_log(c, FY_LOG_INFO, "sent nothing into the tunnel within %llu ms; closing",
                   (unsigned long long)c->w->cfg->header_timeout);
        close_client(c);
        return;
    }
    if (rc == FY_AGAIN)
        return;
    const struct fy_forward_conf *fc = c->w->gen->conf->listeners[c->lsn->listener].forward;
    if (!fc || !fc->intercept) { /* a reload turned interception off meanwhile */
        tunnel_untouched(c, "interception is off");
        return;
    }
    /* Bytes that came with the CONNECT were read already: TLS in them cannot be given to
     * OpenSSL any more, so only plain HTTP is looked into. */
    if (c->in && c->in->start < c->in->end) {
        const unsigned char *p = (const unsigned char *)c->in->data + c->in->start;
        if (!looks_like_http(p, c->in->end - c->in->start)) {
            tunnel_untouched(c, "the client sent bytes before the tunnel was answered");
            return;
        }
    } else {
        if (!c->sock.rd_ready)
            return;
        unsigned char buf[FY_SNIFF_MAX];
        ssize_t n = fy_sock_peek(&c->sock, buf, sizeof(buf));
        if (n == FY_AGAIN)
            return;
        if (n <= 0) {
            close_client(c);
            return;
        }
        char sni[FY_SNIFF_SNI_CAP];
        switch (fy_tls_sniff_client_hello(buf, (size_t)n, sni, sizeof(sni))) {
        case FY_SNIFF_NEED_MORE:
            c->sock.rd_ready = false; /* the rest of the ClientHello comes with a new edge */
            return;
        case FY_SNIFF_BAD:
            client_log(c, FY_LOG_INFO, "sent a malformed TLS ClientHello into the tunnel; closing");
            close_client(c);
            return;
        case FY_SNIFF_TLS: {
            if (sni[0] && fc->intercept->pass_through &&
                fy_dest_rules_check_name(fc->intercept->pass_through, sni, strlen(sni),
                                         c->origin_port, NULL) == FY_ACL_MATCH) {
                tunnel_untouched(c, "pass-through");
                return;
            }
            struct fy_worker *w = c->w;
            if (!w->mint && !(w->mint = fy_tls_mint_new(fc->intercept->cert_cache_size))) {
                close_client(c);
                return;
            }
            struct fy_tunnel_origin o = {.host = c->origin_host,
                                         .port = c->origin_port,
                                         .sni = sni[0] ? sni : NULL,
                                         .tls = fc->intercept->tls};
            socklen_t plen =
                c->peer.sa.sa_family == AF_INET6 ? sizeof(c->peer.in6) : sizeof(c->peer.in4);
            /* The TLS stage takes the socket (and copies o); this connection object goes. */
            fy_handshake_intercept(w, c->lsn, &c->sock, &c->peer.sa, plen, &o);
            client_free(c); /* its socket went to the TLS stage */
            return;
        }
        case FY_SNIFF_NOT_TLS:
            if (!looks_like_http(buf, (size_t)n)) {
                tunnel_untouched(c, "neither TLS nor HTTP");
                return;
            }
            break;
        }
    }
    /* Plain HTTP inside the tunnel: requests go to the tunnel's destination. */
    c->origin_tls = false;
    c->phase = P_IDLE;
    c->close_after = c->w->draining;
    c->req_is_connect = false;
    fy_h1r_next(&c->io->rd);
    fy_h1w_reset(&c->io->wr);
    fy_loop_timer_set(&c->w->loop, &c->timer, c->w->cfg->idle_timeout);
    read_request(c);
}

static void start_exchange(struct fy_client *c)
{
    struct fy_worker *w = c->w;
    struct fy_msg *m = &c->io->rd.msg;
    c->req_minor = m->version_minor;
    c->req_is_head = m->method_len == 4 && !memcmp(m->method, "HEAD", 4);
    c->close_after = !m->keep_alive || w->draining;
    c->req_is_connect = m->method_len == 7 && !memcmp(m->method, "CONNECT", 7);
    if (c->lsn->listener == FY_LSN_GONE) {
        /* A reload removed the listener this connection came in on: its routes are gone. */
        reject(c, 503, "this listener was removed by a configuration reload");
        return;
    }
    const struct fy_forward_conf *fc = w->gen->conf->listeners[c->lsn->listener].forward;
    bool absolute =
        m->target_len > 0 && m->target[0] != '/' && m->target[0] != '*' && !c->req_is_connect;
    bool https = m->target_len >= 8 && !strncasecmp(m->target, "https://", 8);
    if (fc) {
        /* Proxy-Connection is not standard, but old clients send it to a proxy in place of
         * Connection; its "close" is honoured as Squid does (it never goes further). */
        struct fy_hdr *pc = fy_msg_find_tok(m, FY_TOK_PROXY_CONNECTION);
        if (pc && fy_list_has(pc->value, pc->value_len, "close", 5))
            c->close_after = true;
    }
    if (fc && !forward_admit(c, fc, m))
        return;
    if (c->req_is_connect) {
        if (!fc) {
            /* A 405 names what is allowed (RFC 9110 15.5.6): every method but CONNECT is
             * forwarded; these are the standard ones. */
            static const char allow[] = "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH";
            struct fy_msg extra;
            fy_msg_init(&extra);
            fy_msg_add(&extra, "Allow", 5, allow, sizeof(allow) - 1, FY_TOK_OTHER);
            reject_with(c, 405, "CONNECT is not supported by this reverse proxy", &extra);
            fy_msg_free(&extra);
            return;
        }
        struct fy_fwd_target t;
        if (c->origin_host) {
            reject(c, 400, "CONNECT inside a tunnel is not supported");
            return;
        }
        if (m->chunked || m->content_length > 0) {
            /* A CONNECT has no content (RFC 9110 9.3.6): what follows its head is the tunnel's.
             * Framing fields on one would have ferry and the destination disagree on where
             * the tunnel starts. (Content-Length: 0, which some clients send, is harmless.) */
            reject(c, 400,
                   "a CONNECT request has no content (Content-Length or "
                   "Transfer-Encoding given)");
            return;
        }
        if (!parse_authority(m->target, m->target_len, 0, &t)) {
            reject(c, 400, "CONNECT needs a host:port target (a port from 1 to 65535)");
            return;
        }
        if (!fy_ports_match(fc->connect_ports, t.port)) {
            char why[120];
            snprintf(why, sizeof(why), "CONNECT to port %u is not allowed (connect-ports)", t.port);
            reject(c, 403, why);
            return;
        }
    } else if (!normalize_target(m)) {
        reject(c, 400, "invalid request target");
        return;
    }
    struct fy_hdr *upgrade = m->upgrade ? fy_msg_find_tok(m, FY_TOK_UPGRADE) : NULL;
    if (upgrade && !upgrade_allowed(c, m)) {
        /* Forwarded as a plain request (Upgrade is hop-by-hop): never a raw tunnel for a
         * protocol ferry does not vouch for, such as h2c (h2c smuggling). An upstream that
         * switches anyway gets a 502. */
        m->upgrade = false;
        upgrade = NULL;
    }
    fy_msg_strip_hop_by_hop(m);
    if (upgrade)
        upgrade->removed = false;
    switch (max_forwards(c, m)) {
    case 0:
        break;
    case 1:
        return; /* answered by ferry */
    default:
        reject(c, 400, "invalid Max-Forwards");
        return;
    }
    if (fy_msg_own(m) < 0) {
        reject(c, 500, "out of memory");
        return;
    }
    struct fy_fwd_target fwd;
    bool has_fwd = fc && forward_target(c, m, absolute, https, &fwd);
    if (fc && absolute && !has_fwd && !c->origin_host) {
        reject(c, 400, "the URL's host or port is not valid (a port from 1 to 65535)");
        return;
    }
    if (c->req_is_connect && fc->intercept && fc->intercept->tls &&
        !(fc->intercept->pass_through &&
          fy_dest_rules_check_name(fc->intercept->pass_through, fwd.host, fwd.host_len, fwd.port,
                                   NULL) == FY_ACL_MATCH)) {
        intercept_answer(c, &fwd);
        return;
    }
    fy_loop_timer_stop(&c->timer);
    c->timed_out = false;
    c->phase = P_ACTIVE;
    c->session_done = false;
    c->session = fy_session_start(w, &client_ops, c, m, &c->peer.sa, c->req_start_us,
                                  c->lsn->listener, has_fwd ? &fwd : NULL);
    if (!c->session)
        reject(c, 500, "out of memory");
}

/* Reads and parses until a request head is complete (starting a session) or input runs dry. */
static void read_request(struct fy_client *c)
{
    const struct fy_config *cfg = c->w->cfg;
    for (;;) {
        if (c->in && c->in->start < c->in->end) {
            struct client_io *io = io_get(c);
            if (!io) {
                close_client(c);
                return;
            }
            if (c->phase == P_IDLE) {
                c->phase = P_HEAD;
                c->req_start_us = c->w->loop.now_us;
                fy_loop_timer_set(&c->w->loop, &c->timer, cfg->header_timeout);
            }
            struct fy_buf *in = c->in;
            size_t n = fy_h1r_execute(&io->rd, in->data + in->start, in->end - in->start);
            in->start += (uint32_t)n;
            if (io->rd.state == FY_H1R_ERROR) {
                reject(c, io->rd.err_status, io->rd.err_text);
                return;
            }
            if (io->rd.state != FY_H1R_HEAD) {
                start_exchange(c);
                return;
            }
        }
        if (c->timed_out) {
            if (c->phase == P_HEAD) {
                reject(c, 408, "the request head did not arrive in time");
                return;
            }
            close_idle(c);
            return;
        }
        if (!c->sock.rd_ready)
            break;
        if (!c->in) {
            if (!(c->in = fy_buf_get(c->w->client_in_size))) {
                close_client(c);
                return;
            }
        }
        ssize_t r = read_more(c);
        if (r > 0)
            continue;
        if (r == FY_AGAIN)
            break;
        /* EOF or error between or inside request heads: nothing to answer. One inside a head
         * is still logged (as nginx does, a 400 of 0 bytes): a client that hangs up half-way
         * through a request should show in the access log. */
        if (r == 0 && c->phase == P_HEAD && c->io && c->in && c->in->start < c->in->end) {
            fy_h1r_keep_request_line(&c->io->rd, c->in->data + c->in->start);
            client_log(c, FY_LOG_INFO, "closed the connection inside a request head");
            log_client_error(c, 400, 0);
        }
        close_client(c);
        return;
    }
    /* Waiting for bytes: an idle connection gives its buffers back. */
    if (c->phase == P_IDLE && c->in && c->in->start == c->in->end) {
        fy_buf_put(c->in);
        c->in = NULL;
        io_put(c);
    }
}

/* The exchange finished and its output is flushed: next request, or close. */
static void end_exchange(struct fy_client *c)
{
    c->session_done = false;
    c->timed_out = false;
    c->out_blocked = false;
    c->pipe_blocked = false;
    c->tunnel = false;
    c->head_sent = false;
    if (c->close_after) {
        c->phase = P_CLOSING;
        fy_loop_queue(&c->w->loop, &c->task);
        return;
    }
    fy_h1r_next(&c->io->rd);
    c->io->rd.limits.max_body = c->w->req_limits.max_body; /* a route may have changed it */
    fy_h1w_reset(&c->io->wr);
    c->phase = P_IDLE;
    c->req_is_head = false;
    fy_loop_timer_set(&c->w->loop, &c->timer, c->w->cfg->idle_timeout);
    read_request(c);
}

/* Ends the connection: flush what is queued, then close. A graceful end says so first where the
 * transport has a way (TLS close_notify); a response cut short must not, so the client can tell.
 * With unread input (linger), half-close and drain what the client still sends, so unread
 * request bytes do not make the kernel reset the connection before the client reads our answer. */
static void closing(struct fy_client *c)
{
    if (!c->lingering) {
        int rc = flush(c);
        if (rc == FY_AGAIN && !c->timed_out)
            return;
        if (rc < 0 || c->timed_out) {
            close_client(c);
            return;
        }
        if (c->cut) {
            if (!c->linger) {
                close_client(c);
                return;
            }
            fy_sock_shutdown_tcp(&c->sock);
        } else if (c->linger || c->sock.tp->shutdown_before_close) {
            rc = fy_sock_shutdown(&c->sock);
            if (rc == FY_AGAIN) {
                fy_loop_timer_set(&c->w->loop, &c->timer, c->w->cfg->send_timeout);
                return;
            }
            if (rc < 0 || !c->linger) {
                close_client(c);
                return;
            }
        } else {
            close_client(c);
            return;
        }
        c->lingering = true;
        fy_loop_timer_set(&c->w->loop, &c->timer, 2000);
    } else if (c->timed_out) {
        close_client(c);
        return;
    }
    char sink[4096];
    for (;;) {
        ssize_t r = fy_sock_read(&c->sock, sink, sizeof(sink));
        if (r == FY_AGAIN)
            return;
        if (r <= 0)
            break;
    }
    close_client(c);
}

static void client_run(struct fy_task *t)
{
    struct fy_client *c = container_of(t, struct fy_client, task);
    switch (c->phase) {
    case P_IDLE:
    case P_HEAD:
        read_request(c);
        return;
    case P_CLOSING:
        closing(c);
        return;
    case P_SNIFF:
        sniff_tunnel(c);
        return;
    case P_ACTIVE:
        break;
    }
    int rc = flush(c);
    if (rc == 0 && c->pipe_blocked) {
        /* A splice waits for the socket, not the queue: only an event (wr_ready) unblocks it. */
        if (c->sock.wr_ready)
            c->pipe_blocked = false;
        else
            rc = FY_AGAIN;
    }
    if (rc < 0 && rc != FY_AGAIN) {
        close_client(c);
        return;
    }
    if (c->timed_out && rc == FY_AGAIN) {
        client_log(c, FY_LOG_INFO, "stopped reading the response for %llu ms; closing",
                   (unsigned long long)c->w->cfg->send_timeout);
        close_client(c);
        return;
    }
    if (c->session_done) {
        if (rc == 0)
            end_exchange(c);
        return;
    }
    if (!c->session)
        return;
    /* A client that hangs up while ferry waits on the upstream (the request is read, so nobody
     * reads this socket) would otherwise sit in CLOSE-WAIT and keep the upstream busy until its
     * timeout: abandon the exchange now, like nginx (logged 499). Unread bytes (a request body
     * still to come, a pipelined request) mean the client is still there. Once the response has
     * started, a half-closed client still gets all of it (a reset fails the writes).
     * --abort-on-client-close off waits for the response instead (HAProxy's default). */
    if (c->sock.eof_pending && !c->want_body && !c->head_sent &&
        fy_session_abort_on_client_close(c->session) && fy_sock_peer_gone(&c->sock)) {
        client_log(c, FY_LOG_INFO,
                   "closed the connection before the response was complete; "
                   "abandoning the exchange");
        close_client(c);
        return;
    }
    if (rc == 0 && c->shut_after_flush) {
        rc = fy_sock_shutdown(&c->sock);
        if (rc < 0 && rc != FY_AGAIN) {
            close_client(c);
            return;
        }
        c->shut_after_flush = rc == FY_AGAIN;
        rc = 0;
    }
    if (rc == 0 && c->out_blocked) {
        c->out_blocked = false;
        fy_loop_timer_stop(&c->timer);
        fy_session_output_flushed(c->session);
    }
    if (c->want_body && (c->sock.rd_ready || c->timed_out))
        fy_session_wake(c->session);
    else if (c->timed_out) {
        c->timed_out = false;
    }
}

void fy_client_drain(struct fy_client *c)
{
    c->close_after = true;
    if (c->phase == P_IDLE && !c->session)
        close_idle(c);
}

void fy_client_kill(struct fy_client *c)
{
    close_client(c);
}
