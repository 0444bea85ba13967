/*
 * A client connection speaking HTTP/1.x: reads requests, hands each one to a session through the
 * downstream interface, writes the session's response, and decides keep-alive, pipelining and
 * closing. Requests on one connection are served strictly one after another, in order.
 */
#ifndef FY_CLIENT_H1_H
#define FY_CLIENT_H1_H

#include <stdint.h>
#include <sys/socket.h>

struct fy_worker;
struct fy_wlistener;
struct fy_client;

/* Takes ownership of an accepted, non-blocking fd that came in on listening socket l. On failure
 * the fd is closed. */
void fy_client_accept(struct fy_worker *w, struct fy_wlistener *l, int fd,
                      const struct sockaddr *peer, socklen_t len);

/* Takes over a socket after its TLS handshake (a handler of handshake.h: fy_protocol_adopt_fn).
 * On failure the socket is closed. */
struct fy_sock;
void fy_client_adopt(struct fy_worker *w, struct fy_wlistener *l, struct fy_sock *s,
                     const struct sockaddr *peer, socklen_t len);

/* Draining: closes the connection now if it is between requests, else after this response. */
/* fy_client_adopt() for the TLS side of an intercepted tunnel: its requests go to host:port over
 * TLS, verified for sni (else host). Strings are copied. */
void fy_client_adopt_tunnel(struct fy_worker *w, struct fy_wlistener *l, struct fy_sock *s,
                            const struct sockaddr *peer, socklen_t len, const char *host,
                            uint16_t port, const char *sni);

void fy_client_drain(struct fy_client *c);

/* Closes the connection immediately (drain timeout, worker exit). */
void fy_client_kill(struct fy_client *c);

struct fy_client *fy_client_next(struct fy_client *c);

/* The listening socket the connection came in on. */
struct fy_wlistener *fy_client_listener(const struct fy_client *c);

#endif
