/* The TLS accept stage and the dispatch by ALPN; see handshake.h. */
#include "proxy/handshake.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/assert.h"
#include "core/log.h"
#include "core/macros.h"
#include "net/addr.h"
#include "net/sock.h"
#include "net/tls.h"
#include "proxy/client_h1.h"
#include "proxy/worker.h"

enum hs_phase { HS_FIRST_BYTE, HS_TLS, HS_PLAIN_LINGER };

struct fy_handshake {
    struct fy_sock sock;
    struct fy_task task;
    struct fy_timer timer;
    struct fy_worker *w;
    struct fy_wlistener *lsn;
    struct fy_handshake *prev, *next;
    struct sockaddr_storage peer;
    socklen_t peer_len;
    struct fy_tls_server *tls; /* one reference until the TLS transport holds its own */
    enum hs_phase phase;
    bool timed_out;
    /* An intercepted tunnel (fy_handshake_intercept): where its requests go. NULL = a TLS
     * listener's connection. Owned. */
    char *origin_host, *origin_sni;
    uint16_t origin_port;
};

/* The handlers, by the protocol ALPN selected; a client that offered no ALPN speaks
 * HTTP/1.1. The TLS context offers exactly these (net/tls_context.c). */
static const struct {
    const char *alpn;
    fy_protocol_adopt_fn *adopt;
} protocols[] = {
    {"http/1.1", fy_client_adopt},
};

static void unlink_hs(struct fy_handshake *h)
{
    struct fy_worker *w = h->w;
    if (h->prev)
        h->prev->next = h->next;
    else
        w->handshakes = h->next;
    if (h->next)
        h->next->prev = h->prev;
    fy_loop_timer_del(&w->loop, &h->timer);
    fy_loop_unqueue(&w->loop, &h->task);
    fy_tls_server_unref(h->tls);
    free(h->origin_host);
    free(h->origin_sni);
    w->nclients--;
}

static void hs_close(struct fy_handshake *h)
{
    struct fy_worker *w = h->w;
    fy_sock_close(&h->sock);
    unlink_hs(h);
    free(h);
    fy_worker_check_drained(w);
}

static void hs_log(struct fy_handshake *h, enum fy_log_level level, const char *what)
{
    char addr[64];
    fy_addr_format((const struct sockaddr *)&h->peer, addr, sizeof(addr));
    fy_log(level, "client %s: %s", addr, what);
}

static void dispatch(struct fy_handshake *h)
{
    unsigned len = 0;
    const char *alpn = h->sock.tp->alpn(&h->sock, &len);
    fy_protocol_adopt_fn *adopt = NULL;
    for (size_t i = 0; i < sizeof(protocols) / sizeof(protocols[0]) && !adopt; i++)
        if (!alpn || (strlen(protocols[i].alpn) == len && !memcmp(protocols[i].alpn, alpn, len)))
            adopt = protocols[i].adopt;
    if (!adopt) {
        hs_log(h, FY_LOG_INFO, "ALPN selected a protocol ferry has no handler for; closing");
        hs_close(h);
        return;
    }
    struct fy_worker *w = h->w;
    char *host = h->origin_host, *sni = h->origin_sni;
    h->origin_host = h->origin_sni = NULL;
    unlink_hs(h); /* the handler counts the connection from now on */
    if (host)
        fy_client_adopt_tunnel(w, h->lsn, &h->sock, (const struct sockaddr *)&h->peer, h->peer_len,
                               host, h->origin_port, sni);
    else
        adopt(w, h->lsn, &h->sock, (const struct sockaddr *)&h->peer, h->peer_len);
    free(host);
    free(sni);
    free(h);
}

/* The first byte of a TLS connection is a handshake record (22). Plain HTTP starts with a
 * method: tell the client in clear text, as nginx does, rather than a TLS alert it cannot read. */
static int first_byte(struct fy_handshake *h)
{
    unsigned char b;
    ssize_t n = fy_sock_peek(&h->sock, &b, 1);
    if (n == FY_AGAIN)
        return FY_AGAIN;
    if (n <= 0)
        return -1;
    if (b == 22)
        return 0;
    if (b < 'A' || b > 'Z') {
        hs_log(h, FY_LOG_INFO, "sent bytes that are not TLS to a TLS port; closing");
        return -1;
    }
    static const char body[] = "400 Bad Request: plain HTTP was sent to an HTTPS port\n";
    char resp[256];
    int len = snprintf(resp, sizeof(resp),
                       "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                       "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                       sizeof(body) - 1, body);
    hs_log(h, FY_LOG_INFO, "sent plain HTTP to a TLS port; answered 400 in clear text");
    struct fy_log_entry e = {.client = (const struct sockaddr *)&h->peer,
                             .version_minor = -1,
                             .status = 400,
                             .bytes_out = sizeof(body) - 1};
    fy_accesslog_write(&h->w->alog, &e);
    /* Still the TCP transport: TLS has not started. A fresh socket takes this small answer
     * whole; if it does not, the client is not worth waiting for. */
    struct iovec iov = {resp, (size_t)len};
    if (fy_sock_writev(&h->sock, &iov, 1) != len)
        return -1;
    /* Half-close and drain the request, so the unread bytes do not turn our close into a reset
     * that destroys the answer before the client reads it. */
    fy_sock_shutdown_tcp(&h->sock);
    h->phase = HS_PLAIN_LINGER;
    fy_loop_timer_set(&h->w->loop, &h->timer, 1000);
    return FY_AGAIN;
}

static void hs_run(struct fy_task *t)
{
    struct fy_handshake *h = container_of(t, struct fy_handshake, task);
    if (h->phase == HS_PLAIN_LINGER) {
        char sink[2048];
        for (;;) {
            ssize_t n = fy_sock_read(&h->sock, sink, sizeof(sink));
            if (n == FY_AGAIN && !h->timed_out)
                return;
            if (n <= 0)
                break;
        }
        hs_close(h);
        return;
    }
    if (h->timed_out) {
        char what[128];
        snprintf(what, sizeof(what), "the TLS handshake did not complete within %llu ms; closing",
                 (unsigned long long)h->w->cfg->header_timeout);
        hs_log(h, FY_LOG_INFO, what);
        hs_close(h);
        return;
    }
    if (h->phase == HS_FIRST_BYTE) {
        if (!h->sock.rd_ready)
            return;
        int rc = first_byte(h);
        if (rc == FY_AGAIN)
            return;
        if (rc < 0) {
            hs_close(h);
            return;
        }
        if (fy_tls_accept(&h->sock, h->tls) < 0) {
            hs_log(h, FY_LOG_WARN, "out of memory for a TLS connection; closing");
            hs_close(h);
            return;
        }
        fy_tls_server_unref(h->tls);
        h->tls = NULL;
        h->phase = HS_TLS;
    }
    int rc = fy_sock_handshake(&h->sock);
    if (rc == FY_AGAIN)
        return;
    if (rc < 0) {
        char what[220];
        snprintf(what, sizeof(what), "TLS handshake failed: %s", fy_tls_error(&h->sock));
        hs_log(h, FY_LOG_INFO, what);
        hs_close(h);
        return;
    }
    dispatch(h);
}

static void on_timer(struct fy_timer *t)
{
    struct fy_handshake *h = container_of(t, struct fy_handshake, timer);
    h->timed_out = true;
    fy_loop_queue(&h->w->loop, &h->task);
}

void fy_handshake_start(struct fy_worker *w, struct fy_wlistener *l, int fd,
                        const struct sockaddr *peer, socklen_t len, struct fy_tls_server *tls)
{
    struct fy_handshake *h = calloc(1, sizeof(*h));
    if (!h) {
        close(fd);
        return;
    }
    h->w = w;
    h->lsn = l;
    h->task.fn = hs_run;
    fy_timer_init(&h->timer, on_timer);
    h->peer_len = len < sizeof(h->peer) ? len : sizeof(h->peer);
    memcpy(&h->peer, peer, h->peer_len);
    if (fy_sock_open(&h->sock, &w->loop, fd, &h->task) < 0) {
        free(h);
        return;
    }
    h->tls = fy_tls_server_ref(tls);
    h->next = w->handshakes;
    if (w->handshakes)
        w->handshakes->prev = h;
    w->handshakes = h;
    w->nclients++;
    fy_loop_timer_set(&w->loop, &h->timer, w->cfg->header_timeout);
}

void fy_handshake_intercept(struct fy_worker *w, struct fy_wlistener *l, struct fy_sock *from,
                            const struct sockaddr *peer, socklen_t len,
                            const struct fy_tunnel_origin *o)
{
    struct fy_handshake *h = calloc(1, sizeof(*h));
    if (!h || !(h->origin_host = strdup(o->host)) ||
        (o->sni && !(h->origin_sni = strdup(o->sni)))) {
        if (h)
            free(h->origin_host);
        free(h);
        fy_sock_close(from);
        return;
    }
    h->w = w;
    h->lsn = l;
    h->task.fn = hs_run;
    h->origin_port = o->port;
    fy_timer_init(&h->timer, on_timer);
    h->peer_len = len < sizeof(h->peer) ? len : sizeof(h->peer);
    memcpy(&h->peer, peer, h->peer_len);
    if (fy_sock_move(&h->sock, from, &h->task) < 0) {
        free(h->origin_host);
        free(h->origin_sni);
        free(h);
        return;
    }
    h->next = w->handshakes;
    if (w->handshakes)
        w->handshakes->prev = h;
    w->handshakes = h;
    w->nclients++;
    h->phase = HS_TLS;
    if (fy_tls_accept_intercept(&h->sock, o->tls, w->mint, o->host) < 0) {
        hs_log(h, FY_LOG_WARN, "out of memory for an intercepted TLS connection; closing");
        hs_close(h);
        return;
    }
    fy_loop_timer_set(&w->loop, &h->timer, w->cfg->header_timeout);
    fy_loop_queue(&w->loop, &h->task);
}

void fy_handshake_close_all(struct fy_worker *w)
{
    while (w->handshakes)
        hs_close(w->handshakes);
}
