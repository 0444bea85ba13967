/* Address parsing and formatting; see addr.h. */
#include <stddef.h>
#include "net/addr.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fy_addr_parse(const char *text, struct fy_addr *out, const char **why)
{
    char host[256];
    const char *port;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':') {
            *why = "expected [IPv6]:PORT";
            return -1;
        }
        size_t n = (size_t)(close - text - 1);
        if (n >= sizeof(host)) {
            *why = "host too long";
            return -1;
        }
        memcpy(host, text + 1, n);
        host[n] = 0;
        port = close + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (!colon) {
            *why = "expected HOST:PORT";
            return -1;
        }
        size_t n = (size_t)(colon - text);
        if (n >= sizeof(host)) {
            *why = "host too long";
            return -1;
        }
        memcpy(host, text, n);
        host[n] = 0;
        port = colon + 1;
    }
    char *end;
    long p = strtol(port, &end, 10);
    if (!*port || *end || p < 0 || p > 65535) {
        *why = "port must be a number from 0 to 65535";
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (rc != 0 || !res) {
        *why = "cannot resolve host";
        return -1;
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

size_t fy_addr_format_host(const struct sockaddr *sa, char *buf, size_t size)
{
    if (sa->sa_family == AF_INET && size >= 16)
        return format_ipv4((const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr, buf);
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

size_t fy_addr_format(const struct sockaddr *sa, char *buf, size_t size)
{
    char host[INET6_ADDRSTRLEN];
    fy_addr_format_host(sa, host, sizeof(host));
    int n = snprintf(buf, size, sa->sa_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host,
                     fy_addr_port(sa));
    return n < 0 ? 0 : ((size_t)n < size ? (size_t)n : size - 1);
}
