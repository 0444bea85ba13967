/* Address parsing and formatting; see addr.h. */
#include <stddef.h>
#include "net/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"

static bool is_ipv6(const char *s)
{
    struct in6_addr a;
    return inet_pton(AF_INET6, s, &a) == 1;
}

/* Every interface: dual-stack [::] when IPv6 exists here, else 0.0.0.0. */
static void any_address(unsigned port, struct fy_addr *out)
{
    memset(out, 0, sizeof(*out));
    int probe = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
        close(probe);
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&out->ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_any;
        a->sin6_port = htons((uint16_t)port);
        out->len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&out->ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_ANY);
        a->sin_port = htons((uint16_t)port);
        out->len = sizeof(*a);
    }
}

int fy_addr_parse(const char *text, struct fy_addr *out, char *err, size_t errlen)
{
    char host[256];
    const char *port;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':')
            return fy_errf(err, errlen, "expected [IPv6]:PORT");
        size_t n = (size_t)(close - text - 1);
        if (n >= sizeof(host))
            return fy_errf(err, errlen, "host too long");
        memcpy(host, text + 1, n);
        host[n] = 0;
        if (!is_ipv6(host))
            return fy_errf(err, errlen, "'%s' in brackets is not an IPv6 address", host);
        port = close + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (!colon)
            return fy_errf(err, errlen, "expected HOST:PORT (or :PORT for every interface)");
        size_t n = (size_t)(colon - text);
        if (n >= sizeof(host))
            return fy_errf(err, errlen, "host too long");
        memcpy(host, text, n);
        host[n] = 0;
        if (memchr(host, ':', n)) {
            if (is_ipv6(host))
                return fy_errf(err, errlen, "an IPv6 address goes in brackets: write [%s]:%s", host,
                               colon + 1);
            if (is_ipv6(text))
                return fy_errf(err, errlen,
                               "an IPv6 address goes in brackets, followed by the port: "
                               "write [%s]:PORT",
                               text);
            return fy_errf(err, errlen,
                           "a host cannot contain ':' (an IPv6 address goes in brackets, "
                           "as in [::1]:8080)");
        }
        port = colon + 1;
    }
    size_t plen = strlen(port);
    unsigned long p = 0;
    if (plen == 0 || plen > 5 || strspn(port, "0123456789") != plen ||
        (p = strtoul(port, NULL, 10)) > 65535)
        return fy_errf(err, errlen, "port must be a number from 0 to 65535, got '%s'", port);
    if (!host[0]) {
        any_address((unsigned)p, out);
        return 0;
    }
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || !res) {
        const char *why = rc == EAI_SYSTEM ? strerror(errno) : rc ? gai_strerror(rc) : "no address";
        return fy_errf(err, errlen, "cannot resolve '%s': %s", host, why);
    }
    /* A name like "localhost" may resolve to ::1 first while the server listens on 127.0.0.1
     * only (the common case): prefer an IPv4 address when there is one. */
    struct addrinfo *pick = res;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
    }
    memset(out, 0, sizeof(*out));
    memcpy(&out->ss, pick->ai_addr, pick->ai_addrlen);
    out->len = pick->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* inet_ntop goes through sprintf; this runs once per request for X-Forwarded-For. */
static size_t format_ipv4(const unsigned char *a, char *buf)
{
    char *p = buf;
    for (int i = 0; i < 4; i++) {
        unsigned v = a[i];
        if (v >= 100)
            *p++ = (char)('0' + v / 100);
        if (v >= 10)
            *p++ = (char)('0' + v / 10 % 10);
        *p++ = (char)('0' + v % 10);
        if (i < 3)
            *p++ = '.';
    }
    *p = 0;
    return (size_t)(p - buf);
}

static bool is_v4_mapped(const struct sockaddr *sa)
{
    return sa->sa_family == AF_INET6 &&
           IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
}

size_t fy_addr_format_host(const struct sockaddr *sa, char *buf, size_t size)
{
    if (sa->sa_family == AF_INET && size >= 16)
        return format_ipv4((const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr, buf);
    if (is_v4_mapped(sa) && size >= 16)
        return format_ipv4(((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr + 12, buf);
    const void *src = sa->sa_family == AF_INET6
                          ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                          : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
    if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6) {
        snprintf(buf, size, "unix");
        return strlen(buf);
    }
    if (!inet_ntop(sa->sa_family, src, buf, (socklen_t)size))
        snprintf(buf, size, "?");
    return strlen(buf);
}

unsigned fy_addr_port(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    return 0;
}

bool fy_addr_is_any(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    if (sa->sa_family == AF_INET)
        return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
    return false;
}

/* The IPv4 address of an AF_INET or IPv4-mapped AF_INET6 address (network order). */
static bool v4_of(const struct sockaddr *sa, uint32_t *out)
{
    if (sa->sa_family == AF_INET) {
        *out = ((const struct sockaddr_in *)sa)->sin_addr.s_addr;
        return true;
    }
    if (is_v4_mapped(sa)) {
        memcpy(out, ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr + 12, 4);
        return true;
    }
    return false;
}

bool fy_addr_is_loopback(const struct sockaddr *sa)
{
    uint32_t v4;
    if (v4_of(sa, &v4))
        return (ntohl(v4) >> 24) == 127;
    return sa->sa_family == AF_INET6 &&
           IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
}

bool fy_addr_is_unspecified(const struct sockaddr *sa)
{
    uint32_t v4;
    if (v4_of(sa, &v4))
        return (ntohl(v4) >> 24) == 0;
    return sa->sa_family == AF_INET6 &&
           IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
}

bool fy_addr_is_local(const struct sockaddr *sa)
{
    if (fy_addr_is_loopback(sa) || fy_addr_is_unspecified(sa))
        return true;
    if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)
        return false;
    /* Binding to an address succeeds only where the address is one of this machine's (any
     * interface); the port is 0, so nothing is taken. */
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_storage ss;
    socklen_t len =
        sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    memcpy(&ss, sa, len);
    if (ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&ss)->sin_port = 0;
    else
        ((struct sockaddr_in6 *)&ss)->sin6_port = 0;
    bool local = bind(fd, (struct sockaddr *)&ss, len) == 0;
    close(fd);
    return local;
}

bool fy_addr_same_host(const struct sockaddr *a, const struct sockaddr *b)
{
    uint32_t x = 0, y = 0;
    bool xa = v4_of(a, &x), yb = v4_of(b, &y);
    if (xa || yb)
        return xa && yb && x == y;
    return a->sa_family == AF_INET6 && b->sa_family == AF_INET6 &&
           !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                   &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr));
}

size_t fy_addr_format(const struct sockaddr *sa, char *buf, size_t size)
{
    char host[INET6_ADDRSTRLEN];
    fy_addr_format_host(sa, host, sizeof(host));
    int n =
        snprintf(buf, size, sa->sa_family == AF_INET6 && !is_v4_mapped(sa) ? "[%s]:%u" : "%s:%u",
                 host, fy_addr_port(sa));
    return n < 0 ? 0 : ((size_t)n < size ? (size_t)n : size - 1);
}
