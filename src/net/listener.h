/*
 * Listening sockets. Every worker owns one SO_REUSEPORT socket bound to the same address, so the
 * kernel spreads new connections without a shared accept lock.
 */
#ifndef FY_LISTENER_H
#define FY_LISTENER_H

#include "net/addr.h"

/* Binds and listens (non-blocking, SO_REUSEPORT, backlog 4096). [::] is dual-stack: it also
 * accepts IPv4 clients (IPV6_V6ONLY off), whatever the system default. Returns the fd or -errno. If
 * the address has port 0, the bound port is written back into *addr so later workers share it. */
int fy_listener_open(struct fy_addr *addr);

/* Returns 0 if nothing listens on addr yet (port 0 always passes), else -errno (-EADDRINUSE). */
int fy_listener_check_free(const struct fy_addr *addr);

#endif
