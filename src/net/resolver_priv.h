/*
 * What net/resolver.c (the main thread's blocking and periodic resolution) and net/dns.c (the
 * workers' asynchronous resolver with its cache) share, so that both give the same answer for a
 * name and say the same words when it fails. Only for src/net/resolver.c and src/net/dns.c:
 * c-ares stays inside these two files.
 */
#ifndef FY_RESOLVER_PRIV_H
#define FY_RESOLVER_PRIV_H

#include <ares.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/addr.h"
#include "net/resolver.h"

/* Every lookup asks for A and AAAA and sorts the answer itself (c-ares' RFC 6724 sort would
 * connect() a UDP socket per address). */
extern const struct ares_addrinfo_hints fy_resolver_hints;

/* Sorts a[0..n) into the answer order (IPv4 first, then IPv6, each by address bytes, then port)
 * and drops duplicates, in place; returns the new count. */
uint32_t fy_resolver_normalize(struct fy_addr *a, uint32_t n);

/* c-ares' answer as a normalized malloc'd list with `port` set in each address (the caller frees
 * *out); 0 entries and *out NULL when it holds no usable address, or when memory ran out (then
 * *oom is true). res is only read. */
uint32_t fy_resolver_from_ares(const struct ares_addrinfo *res, uint16_t port, struct fy_addr **out,
                               bool *oom);

/* Sets the port of an IPv4 or IPv6 address (anything else is left alone). */
void fy_resolver_set_port(struct fy_addr *a, uint16_t port);

/* host without the brackets of "[IPv6]", copied into buf; NULL when empty or not shorter than
 * size. */
const char *fy_resolver_bare_host(const char *host, char *buf, size_t size);

/* Parses an IP literal (an IPv6 one may carry a scope: fe80::1%eth0) without any lookup. Returns
 * 0 and fills *a with `port`, or -1 when host is not a literal. */
int fy_resolver_parse_literal(const char *host, uint16_t port, struct fy_addr *a);

/* True for "localhost" and "localhost." in any case: this machine by definition (RFC 6761). */
bool fy_resolver_is_localhost(const char *host);

/* localhost's answer: out[0] = 127.0.0.1, out[1] = ::1, both with `port`. */
void fy_resolver_localhost(struct fy_addr out[2], uint16_t port);

/* Opens a channel asking rc's servers (or the system's, /etc/hosts first) with rc's timeout split
 * into tries. `extra` (may be NULL) adds options under `extra_mask` (a socket state callback);
 * the lookup settings above always win. Initialises the c-ares library once per process first:
 * safe from any thread. Returns 0, or -1 with one line in err (a bad server list names it).
 * Close with ares_destroy(). */
int fy_resolver_channel_open(const struct fy_resolver_conf *rc, const struct ares_options *extra,
                             int extra_mask, ares_channel *ch, char *err, size_t errlen);

/* "127.0.0.1:5353, [::1]:53" (with "/etc/hosts, " first for the system resolver): who a channel
 * asks, for error messages. Always terminates buf. */
void fy_resolver_describe_servers(ares_channel ch, bool custom, char *buf, size_t size);

/* What a failed lookup's c-ares status means, in the words of ferry's messages ("no such name",
 * "no answer (timed out after 5s)"). The result is a constant or buf. */
const char *fy_resolver_why(int status, uint64_t timeout_ms, char *buf, size_t size);

#endif
