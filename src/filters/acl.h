/*
 * Forward-proxy access control: which clients may use the proxy (CIDR lists), which ports CONNECT
 * may reach (port sets), and which destinations requests may go to (deny and allow rules on host
 * names and addresses). Pure matching, no sockets and no resolving: the session asks the name
 * stage with the requested host, resolves, then asks the address stage for each address before
 * it connects to it.
 *
 * Ownership and lifetime: every list here is built on the main thread by one parser call per
 * configuration item, then never changed. A built list is read by every worker thread without
 * locks (the configuration generation that holds it keeps it alive). A zero-initialised struct is
 * an empty list; the _free functions release what the _add calls allocated and leave an empty
 * list behind. Parsers take a NUL-terminated item, copy what they keep, and on error leave the
 * list as it was and write one sentence to err without a file position (the schema adds
 * FILE:LINE:COL).
 *
 * Bounds: at most FY_ACL_MAX_ITEMS items per list, each at most FY_ACL_MAX_ITEM_LEN bytes.
 */
#ifndef FY_ACL_H
#define FY_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define FY_ACL_MAX_ITEMS 4096
#define FY_ACL_MAX_ITEM_LEN 300

/* ---- CIDR lists (allow-clients) ---- */

/* One network. IPv4 networks keep their address in addr[0..3]. The address is stored masked. */
struct fy_cidr {
    uint8_t family; /* AF_INET or AF_INET6 */
    uint8_t prefix; /* 0..32 or 0..128 */
    uint8_t addr[16];
};

/* Fields are private to acl.c. */
struct fy_cidr_list {
    struct fy_cidr *items;
    uint32_t n, cap;
};

/* Adds "10.0.0.0/8", "fc00::/7", or a bare address ("::1" = /128, "10.1.2.3" = /32). An address
 * with bits set past its prefix ("10.1.2.3/8") is refused rather than masked: it is usually a
 * typo for a narrower network, and silently widening an ACL is the worse failure. An IPv6 entry
 * inside ::ffff:0:0/96 (IPv4-mapped) is stored as the IPv4 network it names. Returns 0, or -1
 * with err set (bad syntax, too long, too many items, out of memory). */
int fy_cidr_list_add(struct fy_cidr_list *l, const char *text, char *err, size_t errlen);

/* Adds the default client list: loopback (127.0.0.0/8, ::1), private IPv4 (10.0.0.0/8,
 * 172.16.0.0/12, 192.168.0.0/16), IPv6 unique local (fc00::/7) and link-local (fe80::/10).
 * Returns 0, or -1 when out of memory. */
int fy_cidr_list_private(struct fy_cidr_list *l);

/* True when sa (AF_INET or AF_INET6; any other family never matches) lies in one of the
 * networks. An IPv4-mapped IPv6 address (::ffff:10.1.2.3, a client of a dual-stack listener) is
 * matched as the IPv4 address it carries, so it matches IPv4 entries only. A linear scan: a few
 * nanoseconds per entry, no allocation. */
bool fy_cidr_list_match(const struct fy_cidr_list *l, const struct sockaddr *sa);

void fy_cidr_list_free(struct fy_cidr_list *l);

/* ---- port sets (connect-ports) ---- */

/* A bitmap of the 65535 ports, allocated (8 KiB) by the first add; fields private to acl.c. An
 * empty set matches no port: the schema supplies the default [443]. */
struct fy_ports {
    uint64_t *bits;
    uint32_t n; /* items added, for the bound */
};

/* Adds "443", a range "8000-8999" (inclusive, low <= high) or "*" (every port). Ports are 1 to
 * 65535. Returns 0, or -1 with err set. */
int fy_ports_add(struct fy_ports *p, const char *text, char *err, size_t errlen);

/* True when port is in the set. O(1). */
bool fy_ports_match(const struct fy_ports *p, unsigned port);

void fy_ports_free(struct fy_ports *p);

/* ---- destination rules (allow, deny) ---- */

/* Each item is HOST-PATTERN[:PORTS] or CIDR[:PORTS]; PORTS is one port, a range or "*" (the
 * default: any port). HOST-PATTERN is an exact name ("api.internal", case-insensitive),
 * "*.example.com" (any subdomain, not example.com itself), ".example.com" (example.com and any
 * subdomain, Squid's dstdomain) or "*" (any host, names and addresses alike). A CIDR
 * ("10.1.0.0/16", "169.254.169.254", "2001:db8::/32") matches the destination's address: an
 * IP-literal host at once, a name only once it is resolved. An IPv6 CIDR followed by a port goes in
 * brackets:
 * "[2001:db8::]/32:443" (also accepted: "[2001:db8::/32]:443", "[::1]:443").
 *
 * Lookup cost: names are indexed in a hash table (FNV-1a, computed right to left over the host,
 * so the hash of every label-aligned suffix falls out of one pass over it): a request costs one
 * probe per label of its host, whatever the number of name rules. "*" and CIDR rules are
 * scanned in order. Fields are private to acl.c. */
struct fy_dest_rule;
struct fy_dest_slot;
struct fy_dest_rules {
    struct fy_dest_rule *items; /* in the order written */
    uint32_t n, cap;
    struct fy_dest_slot *slots; /* open addressing, a power of two, at most half full */
    uint32_t nslots, nnames;
    uint32_t *scan; /* rule numbers of "*" and CIDR rules, in order */
    uint32_t nscan, scancap;
};

/* Parses one item and appends it. Returns 0, or -1 with err set. */
int fy_dest_rules_add(struct fy_dest_rules *r, const char *text, char *err, size_t errlen);

enum fy_acl_verdict {
    FY_ACL_NO_MATCH,
    FY_ACL_MATCH,
    FY_ACL_NEED_ADDR, /* no rule matched the name, but a CIDR rule (for this port) still may once
                         the name is resolved */
};

/* Matches the requested host and port. host (not NUL-terminated) is a name, an IPv4 literal or
 * an IPv6 literal with or without its brackets; one trailing dot is ignored ("example.com." is
 * example.com), and so is case. An IP literal is matched against the CIDR rules at once, so the
 * answer for it is never NEED_ADDR. A host that is neither a literal nor matched by a name rule
 * gives NEED_ADDR when a CIDR rule covers the port. On MATCH, *rule (when not NULL) is the
 * 0-based number of the first matching rule. Allocates nothing. */
enum fy_acl_verdict fy_dest_rules_check_name(const struct fy_dest_rules *r, const char *host,
                                             size_t host_len, unsigned port, uint32_t *rule);

/* Matches an address (AF_INET or AF_INET6, IPv4-mapped taken as IPv4) and port against the CIDR
 * and "*" rules; name rules never match here. On MATCH, *rule as above. */
enum fy_acl_verdict fy_dest_rules_check_addr(const struct fy_dest_rules *r,
                                             const struct sockaddr *sa, unsigned port,
                                             uint32_t *rule);

/* The item as written (for log lines), valid while r is. */
const char *fy_dest_rules_text(const struct fy_dest_rules *r, uint32_t rule);

void fy_dest_rules_free(struct fy_dest_rules *r);

/* ---- destination policy: deny first, then allow ---- */

/* Empty allow rules admit every destination the deny rules do not refuse. */
struct fy_dest_policy {
    struct fy_dest_rules deny;
    struct fy_dest_rules allow;
};

enum fy_dest_verdict {
    FY_DEST_DENIED,    /* refused; why names the rule */
    FY_DEST_ALLOWED,   /* the allow rules admit the name: each address still must not be denied */
    FY_DEST_NEED_ADDR, /* only an allow CIDR can admit it: each address must match one */
};

/* The name stage, before resolving. DENIED when a deny rule matches the host (a name pattern,
 * or for an IP literal a CIDR), or when no allow rule matches it and no allow CIDR could once
 * it is resolved. Otherwise ALLOWED or NEED_ADDR, to hand to the address stage. Deny CIDRs
 * cannot refuse a name here (the address is not known yet): that is the address stage's job.
 * why (NUL-terminated, may be truncated) is set when DENIED: "denied by deny rule 2
 * (*.corp.example)" or "not matched by any allow rule". Rules are numbered from 1 in why. */
enum fy_dest_verdict fy_dest_policy_check_name(const struct fy_dest_policy *p, const char *host,
                                               size_t host_len, unsigned port, char *why,
                                               size_t whylen);

/* The address stage: call it for every address, just before connecting to it, whatever the name
 * stage said other than DENIED (an IP-literal host included: it costs one more scan). The
 * address connected to must not match a deny CIDR, and with name_verdict NEED_ADDR must match an
 * allow CIDR (or "*"). This is where spellings the name stage cannot see through ("2852039166",
 * a name whose A record is 169.254.169.254, an AAAA of ::ffff:169.254.169.254) are caught, so
 * deny addresses by CIDR, not by name. Returns true when the connection may go ahead; otherwise
 * why is set: "address 169.254.169.254 denied by deny rule 1 (169.254.169.254)". */
bool fy_dest_policy_check_addr(const struct fy_dest_policy *p, enum fy_dest_verdict name_verdict,
                               const struct sockaddr *sa, unsigned port, char *why, size_t whylen);

void fy_dest_policy_free(struct fy_dest_policy *p);

#endif
