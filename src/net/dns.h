/*
 * The workers' name resolution: one struct fy_dns per worker drives one c-ares channel from the
 * worker's loop and never blocks it, and keeps a bounded cache of answers. A lookup is answered
 * at once from the cache (or for an IP literal and "localhost", which never reach DNS), or later
 * through the caller's task; lookups of one name share one query. Answers are those of
 * net/resolver.h (every A and AAAA address, IPv4 first, sorted, deduplicated) with the caller's
 * port. Single-threaded: everything here belongs to the loop's thread, nothing is shared between
 * workers.
 *
 * Cache: name (lower case) -> answer, kept for the answer's TTL clamped to [1 s, 300 s]; a failed
 * lookup (no such name, no address, a server failure, a timeout) is kept 5 s, so a flood of
 * requests for a bad name costs one lookup. At most FY_DNS_CACHE_MAX names, the least recently
 * used dropped first (never one with a lookup in flight). An answer handed out stays valid while
 * its request holds it, even if the cache drops or refreshes the name meanwhile.
 */
#ifndef FY_DNS_H
#define FY_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/loop.h"
#include "net/addr.h"
#include "net/resolver.h"

#define FY_DNS_CACHE_MAX 4096   /* names cached per worker */
#define FY_DNS_MAX_INFLIGHT 256 /* queries in flight per worker */
#define FY_DNS_NAME_MAX 253     /* bytes of a host name, without a trailing dot */
#define FY_DNS_MAX_ADDRS 16     /* addresses kept per name (both families kept if both answer) */

struct fy_dns;
struct fy_dns_entry;  /* private: a cached name */
struct fy_dns_answer; /* private: reference-counted addresses with one port */

/* One lookup, embedded in the caller's object (a session). Zero it once before its first use. */
struct fy_dns_req {
    /* Valid once answered: 0, or -EINVAL (not a valid host name), -ENOENT (no such name, or no
     * IPv4 or IPv6 address), -ETIMEDOUT (no answer within timeout_ms), -EIO (the DNS server
     * failed, refused, or cannot be reached), -EBUSY (too many lookups in flight), -ENOMEM. */
    int status;
    /* status 0: naddrs >= 1 addresses with the port asked for, in the answer order; owned by
     * the req and valid until fy_dns_req_release (also after fy_dns_free). */
    const struct fy_addr *addrs;
    uint32_t naddrs;
    /* status < 0: why, for people, without the name: "no such name (asked 127.0.0.1:53)",
     * "no answer (timed out after 5s) (asked 127.0.0.1:53)". */
    char err[160];

    /* private */
    struct fy_dns_entry *entry;     /* pending: the name whose answer it waits for */
    struct fy_dns_req *prev, *next; /* pending: the entry's waiters */
    struct fy_dns_answer *held;     /* answered: what addrs points into (one reference) */
    struct fy_task *wake;
    uint16_t port;
};

/* A resolver for the loop's thread with rc's settings (rc->servers NULL: /etc/resolv.conf's
 * servers, /etc/hosts first; otherwise those servers alone; rc->timeout_ms bounds each lookup;
 * rc->interval_ms is not used). rc is only read during the call. Returns NULL with one line in
 * err when the server list is invalid or memory runs out. */
struct fy_dns *fy_dns_new(struct fy_loop *loop, const struct fy_resolver_conf *rc, char *err,
                          size_t errlen);

/* Cancels every query, closes the sockets and frees the cache. Pending requests are forgotten:
 * their wake task is never queued, and fy_dns_req_release on them (still required) only detaches
 * them; answered requests keep their addresses until released. NULL is fine. */
void fy_dns_free(struct fy_dns *d);

/* Looks host[0..host_len) up (a name, an IP literal, "[IPv6]", or "localhost"; not
 * NUL-terminated) for `port`. req is released first (it may be reused). Returns 0 when req is
 * answered now (a cache hit, a literal, a cached failure, a refused name: check req->status), or
 * FY_AGAIN when a query is in flight: `wake` is then queued with fy_loop_queue once req is
 * answered, never called inline and never queued after fy_dns_req_release. Never blocks. */
int fy_dns_lookup(struct fy_dns *d, struct fy_dns_req *req, const char *host, uint32_t host_len,
                  uint16_t port, struct fy_task *wake);

/* After FY_AGAIN: the lookup has not been answered yet (the task it wakes may run for other
 * reasons, such as a timer, before then). */
static inline bool fy_dns_req_pending(const struct fy_dns_req *req)
{
    return req->entry != NULL;
}

/* The caller is done with req, answered or still pending (a pending one is withdrawn: its query
 * goes on and fills the cache). Always call it, also on teardown; a wake task queued by the
 * answer stays queued (it is the caller's: unqueue it when freeing its owner, as for any task).
 * Idempotent, and a no-op on a zeroed req. */
void fy_dns_req_release(struct fy_dns_req *req);

#endif
