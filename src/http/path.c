/*
 * Path normalisation for route matching; see path.h. Two passes over one buffer: escapes are
 * decoded first (so "%2E%2E" is seen as ".." by the second pass), then dot segments are removed.
 * Both passes only shrink the text, so each writes behind where it reads and `out` may be `in`.
 *
 * Empty segments are merged ("//admin" is matched as "/admin"), as nginx's merge_slashes does:
 * most upstreams (nginx, Apache, Tomcat) serve "//admin" as "/admin", so a route that refuses
 * /admin must refuse it too. The upstream still receives the path as the client sent it.
 */
#include "http/path.h"
#include "http/tokens.h"

#include <stdbool.h>
#include <string.h>

/* RFC 3986 2.3: only these may be decoded without changing what the URI identifies. */
static bool is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static int decode_unreserved(const char *in, uint32_t len, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    uint32_t w = 0;
    for (uint32_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == 0)
            return -1;
        if (c != '%') {
            out[w++] = (char)c;
            continue;
        }
        if (len - i < 3)
            return -1;
        int hi = fy_hex_value((unsigned char)in[i + 1]),
            lo = fy_hex_value((unsigned char)in[i + 2]);
        if (hi < 0 || lo < 0)
            return -1;
        unsigned char v = (unsigned char)(hi << 4 | lo);
        i += 2;
        if (is_unreserved(v)) {
            out[w++] = (char)v;
        } else {
            /* One spelling per escape, so a route need not list %2f and %2F. %00 stays encoded:
             * it is not a NUL in the text that gets matched. */
            out[w++] = '%';
            out[w++] = hex[v >> 4];
            out[w++] = hex[v & 15];
        }
    }
    return (int)w;
}

/* RFC 3986 5.2.4, one segment at a time: p[0..w) is the output (segments each starting with
 * '/'), p[r..n) the input still to read, and w <= r throughout. */
static uint32_t remove_dot_segments(char *p, uint32_t n)
{
    uint32_t r = 0, w = 0;
    while (r < n) {
        /* p[r] == '/' here: the input starts with one and each segment ends before the next. */
        uint32_t e = r + 1;
        while (e < n && p[e] != '/')
            e++;
        uint32_t seglen = e - r - 1;
        if (seglen == 0 && e < n) {
            r = e; /* an empty segment: "//" is one separator (a trailing "/" stays) */
            continue;
        }
        bool dot = seglen == 1 && p[r + 1] == '.';
        bool dotdot = seglen == 2 && p[r + 1] == '.' && p[r + 2] == '.';
        if (dotdot) {
            while (w > 0 && p[--w] != '/')
                ;
        }
        if (dot || dotdot) {
            /* "/a/." and "/a/b/.." name a directory: the trailing slash stays (5.2.4 B, C). */
            if (e == n)
                p[w++] = '/';
        } else {
            memmove(p + w, p + r, e - r);
            w += e - r;
        }
        r = e;
    }
    return w;
}

int fy_path_normalize(const char *in, uint32_t len, char *out)
{
    /* Relative text has no dot-segment semantics to agree on with the upstream: refuse it rather
     * than invent a leading slash (which the output could not hold for "" anyway). */
    if (len == 0 || in[0] != '/' || len > INT32_MAX)
        return -1;
    int n = decode_unreserved(in, len, out);
    if (n < 0)
        return -1;
    return (int)remove_dot_segments(out, (uint32_t)n);
}
