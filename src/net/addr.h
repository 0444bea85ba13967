/*
 * Socket addresses: parse "host:port" / "[v6]:port" (numeric or resolvable names, resolved once at
 * startup) and format them for logs.
 */
#ifndef FY_ADDR_H
#define FY_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

struct fy_addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

/* Parses and resolves "host:port". Returns 0, or -1 with a reason in *why (static string). */
int fy_addr_parse(const char *text, struct fy_addr *out, const char **why);

/* Formats as "1.2.3.4:80" or "[::1]:80" into buf (NUL-terminated); returns the length. */
size_t fy_addr_format(const struct sockaddr *sa, char *buf, size_t size);

/* Same without the port. */
size_t fy_addr_format_host(const struct sockaddr *sa, char *buf, size_t size);

unsigned fy_addr_port(const struct sockaddr *sa);

#endif
