/* Unit tests for src/http/tokens.c: every name in FY_TOKENS looks up to itself, and the token
 * table and token masks stay safe however many names are added. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <string.h>

#include "http/tokens.h"

struct tok {
    enum fy_token id;
    const char *name;
    unsigned flags;
};

static const struct tok all[] = {
#define T(id, name, flags) {FY_TOK_##id, name, flags},
    FY_TOKENS(T)
#undef T
};
#define NTOK (sizeof(all) / sizeof(all[0]))

static void recase(char *dst, const char *src, int mode)
{
    size_t i = 0;
    for (; src[i]; i++) {
        int up = mode == 1 || (mode == 2 && i % 2 == 0) || (mode == 3 && i % 2 == 1);
        dst[i] = (char)(up ? toupper((unsigned char)src[i]) : src[i]);
    }
    dst[i] = 0;
}

Test(tokens, every_token_looks_up_to_itself_in_any_case)
{
    cr_assert_eq(NTOK, FY_TOK__COUNT - 1);
    for (size_t i = 0; i < NTOK; i++) {
        char buf[64];
        size_t n = strlen(all[i].name);
        cr_assert_lt(n, sizeof(buf));
        for (int mode = 0; mode < 4; mode++) {
            recase(buf, all[i].name, mode);
            cr_assert_eq(fy_token_lookup(buf, n), all[i].id, "'%s' did not look up to itself", buf);
        }
        cr_assert_eq(fy_token_flags(all[i].id), all[i].flags);
    }
}

Test(tokens, names_are_lowercase_unique_tokens)
{
    for (size_t i = 0; i < NTOK; i++) {
        const char *s = all[i].name;
        cr_assert_gt(strlen(s), 0);
        for (const char *p = s; *p; p++) {
            cr_assert(fy_is_tchar((unsigned char)*p), "'%s' has a non-token character", s);
            cr_assert_eq(*p, tolower((unsigned char)*p), "'%s' is not lowercase", s);
        }
        for (size_t k = 0; k < i; k++)
            cr_assert_str_neq(all[k].name, s, "'%s' is listed twice", s);
    }
}

Test(tokens, near_misses_are_other)
{
    for (size_t i = 0; i < NTOK; i++) {
        char buf[64];
        size_t n = strlen(all[i].name);
        /* A prefix or an extension never matches: the length is part of the key. */
        cr_assert_eq(fy_token_lookup(all[i].name, n - 1) == all[i].id, false);
        memcpy(buf, all[i].name, n);
        buf[n] = 'x';
        cr_assert_neq(fy_token_lookup(buf, n + 1), all[i].id);
        /* One changed byte at any position. */
        for (size_t k = 0; k < n; k++) {
            memcpy(buf, all[i].name, n);
            buf[k] = buf[k] == '#' ? '!' : '#';
            cr_assert_eq(fy_token_lookup(buf, n), FY_TOK_OTHER, "'%.*s'", (int)n, buf);
        }
    }
    cr_assert_eq(fy_token_lookup("", 0), FY_TOK_OTHER);
    cr_assert_eq(fy_token_lookup("x", 1), FY_TOK_OTHER);
    char longname[300];
    memset(longname, 'a', sizeof(longname));
    cr_assert_eq(fy_token_lookup(longname, sizeof(longname)), FY_TOK_OTHER);
}

Test(tokens, mask_has_one_distinct_bit_per_token)
{
    fy_tokmask seen = 0;
    for (size_t i = 0; i < NTOK; i++) {
        fy_tokmask b = fy_tokmask_bit(all[i].id);
        cr_assert_eq(b & (b - 1), 0, "one bit");
        cr_assert_eq(seen & b, 0, "bit of %s shared", all[i].name);
        seen |= b;
        cr_assert(fy_tokmask_has(seen, all[i].id));
        cr_assert_not(fy_tokmask_has(seen, FY_TOK_OTHER));
    }
    /* The highest token still has its own bit: the mask is wide enough (also a static assert). */
    cr_assert(fy_tokmask_has(fy_tokmask_bit(FY_TOK__COUNT - 1), FY_TOK__COUNT - 1));
    cr_assert_leq(FY_TOK__COUNT, 8 * sizeof(fy_tokmask));
}

/* Host values are RFC 3986 authorities (issue 5, defect 11). */
Test(tokens, valid_host)
{
    const char *good[] = {"",
                          "example.com",
                          "example.com:8080",
                          "EXAMPLE.com:",
                          "127.0.0.1",
                          "127.0.0.1:65535",
                          "[::1]",
                          "[::1]:443",
                          "[2001:db8::7]:80",
                          "[v1.fe80::a+en1]",
                          "ex%41mple.com",
                          "a-b_c~d!$&'()*+,;=.x"};
    const char *bad[] = {"example.com:80a",
                         "example.com:123456",
                         "example.com:65536",
                         "example.com:-1",
                         "[::1",
                         "[::1]x",
                         "[not-ip]",
                         "[::1]:80:90",
                         "ex ample.com",
                         "a@b",
                         "ex%4",
                         "ex%zz",
                         "a/b",
                         "h:1:2",
                         "[]",
                         "[v1.]",
                         "\x7f"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        cr_expect(fy_valid_host(good[i], strlen(good[i])), "rejected %s", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_not(fy_valid_host(bad[i], strlen(bad[i])), "accepted %s", bad[i]);
}
