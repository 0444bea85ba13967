/*
 * The accept stage of a TLS listener's connections: the TLS handshake, bounded by the header
 * timeout, and then the dispatch, where the ALPN result picks the protocol handler that takes
 * the connection over (HTTP/1.1 today: client_h1.c; h2 joins later). A plain listener's
 * connections skip this stage and go to client_h1 directly.
 *
 * Also answers what nginx does when plain HTTP arrives on a TLS port: a clear-text 400 that
 * says so, then a close. Every failure is logged with the client's address and the reason.
 */
#ifndef FY_HANDSHAKE_H
#define FY_HANDSHAKE_H

#include <stdint.h>
#include <sys/socket.h>

struct fy_worker;
struct fy_wlistener;
struct fy_tls_server;
struct fy_handshake;
struct fy_sock;

/* Takes ownership of an accepted, non-blocking fd; counts it in w->nclients until a handler
 * takes it or it closes. On failure the fd is closed. */
void fy_handshake_start(struct fy_worker *w, struct fy_wlistener *l, int fd,
                        const struct sockaddr *peer, socklen_t len, struct fy_tls_server *tls);

/* Closes every connection still in its handshake (drain, worker exit): none carries a request. */
void fy_handshake_close_all(struct fy_worker *w);

/* An intercepted CONNECT tunnel whose client starts TLS (docs/forward-proxy.md). */
struct fy_tls_intercept;
struct fy_tunnel_origin {
    const char *host; /* the CONNECT's host: where the tunnel's requests go */
    uint16_t port;
    const char *sni;              /* what the client asked for; NULL = none (host is used) */
    struct fy_tls_intercept *tls; /* the CA and context minting the certificate */
};

/* Takes the socket `from` (fy_sock_move: the caller must not use it afterwards) for the TLS
 * handshake with a certificate minted for o->sni (else o->host), under header-timeout; then
 * client_h1 serves the tunnel's requests, sent to o->host:o->port over TLS. `o` is copied. */
void fy_handshake_intercept(struct fy_worker *w, struct fy_wlistener *l, struct fy_sock *from,
                            const struct sockaddr *peer, socklen_t len,
                            const struct fy_tunnel_origin *o);

/* The protocol handler a connection goes to: it takes over the socket (fy_sock_move). */
struct fy_sock;
typedef void fy_protocol_adopt_fn(struct fy_worker *w, struct fy_wlistener *l, struct fy_sock *s,
                                  const struct sockaddr *peer, socklen_t len);

#endif
