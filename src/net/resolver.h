/*
 * Name resolution with c-ares, for the main thread only (never a worker loop). Two uses:
 * fy_resolve() answers a name now, blocking for at most the configured timeout (configuration
 * loading); struct fy_reresolver re-resolves the names the running configuration uses every
 * interval, without blocking, from the main thread's poll() loop, and says when an answer
 * changed so the caller can rebuild the configuration.
 *
 * An answer is every A and AAAA address of the name, IPv4 first, then IPv6, each family sorted
 * by address bytes and deduplicated: the same set of addresses always compares equal whatever
 * order the DNS server returned them in. IP literals and "localhost" never reach DNS.
 */
#ifndef FY_RESOLVER_H
#define FY_RESOLVER_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/addr.h"

struct fy_resolver_conf {
    /* "IP:PORT,IP:PORT" ("[IPv6]:PORT" for IPv6; the port may be left out: 53), or NULL for
     * the system's /etc/resolv.conf (with /etc/hosts first). Custom servers are asked alone:
     * /etc/hosts is not read then. */
    char *servers;
    uint64_t timeout_ms;  /* the whole lookup of one name, both families */
    uint64_t interval_ms; /* re-resolution period; 0 = never re-resolve */
};

/* Resolves `host` (a name, an IP literal, "[IPv6]", or "localhost") and gives every address
 * with `port`, in the order above, waiting at most rc->timeout_ms. On success returns 0 with
 * *addrs a malloc'd array of *naddrs >= 1 entries (the caller frees it). On failure returns -1,
 * *addrs = NULL, *naddrs = 0, and one line in err saying what failed and whom ferry asked:
 * "cannot resolve api.internal: no such name (asked 127.0.0.1:5353)". */
int fy_resolve(const struct fy_resolver_conf *rc, const char *host, uint16_t port,
               struct fy_addr **addrs, uint32_t *naddrs, char *err, size_t errlen);

/* True when host is an IP literal (or "[IPv6]"): its address never changes. */
bool fy_resolver_is_literal(const char *host);

/* True when the two lists hold the same addresses (family, address, port), in any order. */
bool fy_resolver_same(const struct fy_addr *a, uint32_t na, const struct fy_addr *b, uint32_t nb);

/* ---- periodic re-resolution, driven by the caller's poll() ---- */

struct fy_reresolver;

/* A re-resolver with its own copy of rc (rc->servers is copied). The first round starts
 * rc->interval_ms after creation. Returns NULL with one line in err when rc->servers is not a
 * valid server list or memory runs out. */
struct fy_reresolver *fy_reresolver_new(const struct fy_resolver_conf *rc, char *err,
                                        size_t errlen);

/* Cancels a round in progress (its sockets are closed) and frees everything. NULL is fine. */
void fy_reresolver_free(struct fy_reresolver *r);

/* Watches host:port, whose addresses the running configuration uses are current[0..ncurrent)
 * (copied; any order). IP literals are ignored, and so is a host:port already watched. Out of
 * memory is logged and the name is not watched. */
void fy_reresolver_add(struct fy_reresolver *r, const char *host, uint16_t port,
                       const struct fy_addr *current, uint32_t ncurrent);

/* Forgets every watched name (a round in progress is cancelled), so that the caller can add the
 * names of a new configuration. The next round starts interval_ms later. */
void fy_reresolver_clear(struct fy_reresolver *r);

/* Fills out[0..max) with the sockets poll() should watch (the result: how many), and lowers
 * *timeout_ms (a poll() timeout, -1 = none yet) to when the next round or c-ares timer is due.
 * With interval 0 or nothing watched it returns 0 and leaves *timeout_ms as it is. */
int fy_reresolver_pollfds(struct fy_reresolver *r, struct pollfd *out, int max, int *timeout_ms);

/* After poll(): fds[0..n) are the entries fy_reresolver_pollfds() filled (revents set). Reads
 * answers, runs c-ares timers, starts a round when one is due, and returns true (once) when some
 * watched name now resolves to another set than its current one; that name's current set becomes
 * the new answer. A failed lookup (timeout, no such name, no address) is logged with fy_warn and
 * is not a change: the old addresses stay in use. Never blocks. */
bool fy_reresolver_process(struct fy_reresolver *r, const struct pollfd *fds, int n);

#endif
