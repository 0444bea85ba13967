/* Unit tests for src/http/path.c: normalisation of request paths for route matching. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "http/path.h"

struct pcase {
    const char *in;
    const char *want; /* NULL: rejected (-1) */
};

static const struct pcase cases[] = {
    {"/", "/"},
    {"/a/b", "/a/b"},
    {"/a/b/", "/a/b/"},
    /* dot segments (RFC 3986 5.2.4 and its examples) */
    {"/a/./b", "/a/b"},
    {"/a/b/..", "/a/"},
    {"/a/b/.", "/a/b/"},
    {"/a/b/../c", "/a/c"},
    {"/a/b/c/./../../g", "/a/g"},
    {"/a/./../b", "/b"},
    {"/..", "/"},
    {"/../..", "/"},
    {"/../a", "/a"},
    {"/.", "/"},
    {"/./", "/"},
    {"/a/..", "/"},
    {"/a/../", "/"},
    {"/a/../admin", "/admin"},
    {"/a/b/./", "/a/b/"},
    {"/.a", "/.a"},
    {"/a/...", "/a/..."},
    {"/a/..b", "/a/..b"},
    {"/a/b..", "/a/b.."},
    /* empty segments merge, as nginx's merge_slashes (the upstream still gets the raw path) */
    {"//", "/"},
    {"/a//b", "/a/b"},
    {"//a/", "/a/"},
    {"///admin/x", "/admin/x"},
    {"/admin//", "/admin/"},
    {"/a//..", "/"},
    {"/a//../b", "/b"},
    {"/.//admin", "/admin"},
    /* unreserved escapes are decoded, others kept with upper-case hex */
    {"/%61dmin", "/admin"},
    {"/%41%7e%2D%5f%2e", "/A~-_."},
    {"/%7Euser", "/~user"},
    {"/%30%39", "/09"},
    {"/%2f", "/%2F"},
    {"/a%2fb", "/a%2Fb"},
    {"/a%2Fb", "/a%2Fb"},
    {"/%c3%a9", "/%C3%A9"},
    {"/%20", "/%20"},
    {"/%00", "/%00"},
    {"/%25", "/%25"},
    {"/%252e", "/%252e"}, /* decoded once only: "%25" then literal "2e" */
    /* encoded dots become dot segments after decoding, since '.' is unreserved */
    {"/%2E%2E/x", "/x"},
    {"/a/%2e%2E", "/"},
    {"/a/b/%2E", "/a/b/"},
    {"/%2e/a", "/a"},
    {"/a/.%2e/b", "/b"},
    /* an encoded slash is not a separator, so no dot segment hides behind it */
    {"/a/..%2F", "/a/..%2F"},
    {"/a/%2E%2E%2Fb", "/a/..%2Fb"},
    /* malformed */
    {"/%", NULL},
    {"/%4", NULL},
    {"/a%", NULL},
    {"/%zz", NULL},
    {"/%4g", NULL},
    {"/%g4", NULL},
    {"", NULL},
    {"a/b", NULL},
    {"*", NULL},
};

static int norm(const char *in, uint32_t len, char *out)
{
    return fy_path_normalize(in, len, out);
}

Test(path, table)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct pcase *c = &cases[i];
        uint32_t len = (uint32_t)strlen(c->in);
        /* A canary past len: the result must fit in the input's length. */
        char out[128];
        memset(out, '#', sizeof(out));
        int n = norm(c->in, len, out);
        cr_assert_eq(out[len], '#', "%s: wrote past len", c->in);
        if (!c->want) {
            cr_expect_eq(n, -1, "%s: expected rejection, got %d", c->in, n);
            continue;
        }
        cr_assert_geq(n, 1, "%s: rejected", c->in);
        cr_expect(n == (int)strlen(c->want) && memcmp(out, c->want, (size_t)n) == 0,
                  "%s: got \"%.*s\", want \"%s\"", c->in, n, out, c->want);
    }
}

Test(path, in_place)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct pcase *c = &cases[i];
        if (!c->want)
            continue;
        char buf[128];
        uint32_t len = (uint32_t)strlen(c->in);
        memcpy(buf, c->in, len);
        int n = fy_path_normalize(buf, len, buf);
        cr_expect(n == (int)strlen(c->want) && memcmp(buf, c->want, (size_t)n) == 0,
                  "%s in place: got \"%.*s\"", c->in, n < 0 ? 0 : n, buf);
    }
}

Test(path, nul_rejected)
{
    char out[8];
    cr_expect_eq(fy_path_normalize("/a\0b", 4, out), -1);
    cr_expect_eq(fy_path_normalize("/\0", 2, out), -1);
    /* The length bounds the input: a '%' just past it is not read as an escape. */
    cr_expect_eq(fy_path_normalize("/a%41", 2, out), 2);
}

/* xorshift64: the same sequence on every libc, so a seed replays anywhere. */
static uint64_t next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* Random paths over the characters that matter: the result is rejected or starts with '/', is
 * never longer, holds no dot segment, and normalising it again changes nothing. */
Test(path, random_properties)
{
    static const char *atoms[] = {"/",   "/",   "/",   ".", "..",  "a",   "b", "%2e", "%2E",
                                  "%2f", "%41", "%7e", "%", "%zz", "%c3", "~", "//"};
    uint64_t seed = 20240611, x = seed;
    fprintf(stderr, "path random_properties: seed %llu\n", (unsigned long long)seed);
    for (int iter = 0; iter < 20000; iter++) {
        char in[128] = "/";
        size_t len = 1;
        int natoms = (int)(next(&x) % 12);
        for (int k = 0; k < natoms; k++) {
            const char *a = atoms[next(&x) % (sizeof(atoms) / sizeof(atoms[0]))];
            memcpy(in + len, a, strlen(a));
            len += strlen(a);
        }
        char out[128], again[128];
        int n = fy_path_normalize(in, (uint32_t)len, out);
        if (n < 0) {
            cr_assert(memchr(in, '%', len), "%.*s rejected without an escape", (int)len, in);
            continue;
        }
        cr_assert_leq((size_t)n, len);
        cr_assert_eq(out[0], '/');
        /* no "." or ".." segment is left */
        for (int s = 0; s < n; s++) {
            if (out[s] != '/')
                continue;
            int e = s + 1;
            while (e < n && out[e] != '/')
                e++;
            bool dot = e - s == 2 && out[s + 1] == '.';
            bool dotdot = e - s == 3 && out[s + 1] == '.' && out[s + 2] == '.';
            cr_assert(!dot && !dotdot, "%.*s -> %.*s keeps a dot segment", (int)len, in, n, out);
        }
        cr_assert_null(memmem(out, (size_t)n, "//", 2), "%.*s -> %.*s keeps an empty segment",
                       (int)len, in, n, out);
        int m = fy_path_normalize(out, (uint32_t)n, again);
        cr_assert(m == n && memcmp(out, again, (size_t)n) == 0, "%.*s -> %.*s -> %.*s", (int)len,
                  in, n, out, m < 0 ? 0 : m, again);
    }
}
