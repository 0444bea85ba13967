/*
 * Socket addresses: parse "host:port", "[v6]:port" or ":port" (numeric or resolvable names,
 * resolved once at startup) and format them for logs.
 */
#ifndef FY_ADDR_H
#define FY_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct fy_addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

/* Parses and resolves "host:port", "[IPv6]:port" or ":port". The port is 0 to 65535, digits only.
 * An empty host means every interface: [::] (IPv4 and IPv6 on one socket, see listener.h) when
 * the kernel supports IPv6, else 0.0.0.0. A name is resolved now, an IPv4 address preferred. An
 * IPv6 address without brackets ("::1:8080") is refused, since its last group could be the port.
 * Returns 0, or -1 with one line in err saying why (resolution failures carry the resolver's
 * reason). */
int fy_addr_parse(const char *text, struct fy_addr *out, char *err, size_t errlen);

/* Formats as "1.2.3.4:80" or "[::1]:80" into buf (NUL-terminated); returns the length. An
 * IPv4-mapped IPv6 address (a client of a dual-stack listener) is shown as IPv4. */
size_t fy_addr_format(const struct sockaddr *sa, char *buf, size_t size);

/* Same without the port. */
size_t fy_addr_format_host(const struct sockaddr *sa, char *buf, size_t size);

unsigned fy_addr_port(const struct sockaddr *sa);

/* True for 0.0.0.0 and [::]. */
bool fy_addr_is_any(const struct sockaddr *sa);

/* True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. */
bool fy_addr_is_loopback(const struct sockaddr *sa);

/* 0.0.0.0/8 (RFC 1122's "this host"), ::, or an IPv4-mapped form of those: not a destination
 * anywhere, but Linux connects a socket to 0.0.0.0 or :: on this machine itself. */
bool fy_addr_is_unspecified(const struct sockaddr *sa);

/* One of this machine's own addresses: loopback, unspecified, or any interface's (a bind(2)
 * test: a socket and two system calls, for the rare checks that need it). */
bool fy_addr_is_local(const struct sockaddr *sa);

/* The same host address (ports ignored); an IPv4-mapped IPv6 address equals its IPv4 one. */
bool fy_addr_same_host(const struct sockaddr *a, const struct sockaddr *b);

#endif
