/* Unit tests for src/filters/accept_encoding.c: a table of Accept-Encoding fields, enabled codings
 * and server preferences against the coding picked, then the parser's corner cases and junk. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "filters/accept_encoding.h"

#define B(c) (1u << FY_CODING_##c)
#define ALL (B(GZIP) | B(DEFLATE) | B(BR) | B(ZSTD))

static const uint8_t pref_zbg[] = {FY_CODING_ZSTD, FY_CODING_BR, FY_CODING_GZIP};
static const uint8_t pref_gbz[] = {FY_CODING_GZIP, FY_CODING_BR, FY_CODING_ZSTD};

struct ae_case {
    const char *fields[3]; /* NULL-terminated; none at all = no Accept-Encoding field */
    unsigned enabled;
    const uint8_t *prefer;
    int n;
    enum fy_coding want;
};

#define ZBG pref_zbg, 3
#define GBZ pref_gbz, 3

static const struct ae_case cases[] = {
    /* 0 */ {{"gzip"}, ALL, ZBG, FY_CODING_GZIP},
    {{"gzip, deflate, br, zstd"}, ALL, ZBG, FY_CODING_ZSTD}, /* Chrome's */
    {{"gzip, deflate, br, zstd"}, ALL, GBZ, FY_CODING_GZIP},
    {{"gzip, deflate, br"}, ALL, ZBG, FY_CODING_BR}, /* Firefox's before zstd */
    {{"br;q=0.9, gzip"}, ALL, ZBG, FY_CODING_GZIP},
    /* 5 */ {{"*"}, ALL, ZBG, FY_CODING_ZSTD},
    {{"*"}, ALL, GBZ, FY_CODING_GZIP},
    {{"*;q=0, gzip;q=0"}, ALL, ZBG, FY_CODING_IDENTITY},
    {{"gzip;q=0, *"}, B(GZIP) | B(BR), GBZ, FY_CODING_BR},
    {{"gzip;q=0, *"}, B(GZIP), GBZ, FY_CODING_IDENTITY},
    /* 10 */ {{"identity"}, ALL, ZBG, FY_CODING_IDENTITY},
    {{"identity;q=1, gzip;q=0.5"}, ALL, ZBG, FY_CODING_IDENTITY},
    {{"identity;q=0.5, gzip;q=0.5"}, ALL, ZBG, FY_CODING_GZIP}, /* a coding wins the tie */
    {{"gzip;q=0.501, br;q=0.500"}, ALL, ZBG, FY_CODING_GZIP},   /* three decimals count */
    {{"gzip;q=0.5, br;q=0.500"}, ALL, ZBG, FY_CODING_BR},       /* equal: preference decides */
    /* 15 */ {{"GZIP, BR"}, ALL, ZBG, FY_CODING_BR},
    {{"Gzip;Q=1.000"}, ALL, ZBG, FY_CODING_GZIP},
    {{"  gzip\t;\tq=0.8 ,\t br ;q=0.9  "}, ALL, GBZ, FY_CODING_BR},
    {{",,, gzip ,, ,"}, ALL, ZBG, FY_CODING_GZIP},        /* empty list elements */
    {{"gzip;q=0.1", "br;q=0.2"}, ALL, GBZ, FY_CODING_BR}, /* two fields */
    /* 20 */ {{"gzip", "", "zstd"}, ALL, ZBG, FY_CODING_ZSTD},
    {{"gzip, br, zstd"}, B(GZIP), ZBG, FY_CODING_GZIP}, /* only gzip enabled */
    {{"br, zstd"}, B(GZIP) | B(DEFLATE), ZBG, FY_CODING_IDENTITY},
    {{"gzip, br"}, 0, ZBG, FY_CODING_IDENTITY},         /* nothing enabled */
    {{"br;q=2, gzip;q=0.5"}, ALL, ZBG, FY_CODING_GZIP}, /* q=2 invalid: br ignored */
    /* 25 */ {{"br;q=0.1234, gzip;q=0.5"}, ALL, ZBG, FY_CODING_GZIP},
    {{"br;q=abc, gzip;q=0.5"}, ALL, ZBG, FY_CODING_GZIP},
    {{"br;q=, br;q=.5, br;q=1.001, br;q=-1, gzip"}, ALL, ZBG, FY_CODING_GZIP},
    {{"br;level=5, gzip"}, ALL, ZBG, FY_CODING_GZIP}, /* only q is a parameter */
    {{""}, ALL, ZBG, FY_CODING_IDENTITY},             /* empty: no coding wanted */
    /* 30 */ {{NULL}, ALL, ZBG, FY_CODING_IDENTITY},  /* no field: we do not compress */
    {{"compress, x-compress, sdch"}, ALL, ZBG, FY_CODING_IDENTITY},
    {{"x-gzip"}, ALL, ZBG, FY_CODING_GZIP},
    {{"deflate"}, ALL, ZBG, FY_CODING_DEFLATE},          /* not in prefer: still acceptable */
    {{"deflate, gzip"}, ALL, ZBG, FY_CODING_GZIP},       /* in prefer ranks before not in it */
    /* 35 */ {{"zstd, br"}, ALL, NULL, 0, FY_CODING_BR}, /* no prefer: enum order */
    {{"*;q=0.5, gzip;q=0.4"}, ALL, GBZ, FY_CODING_BR},   /* "*" covers the unlisted */
    {{"*;q=0.3, gzip;q=0.4"}, ALL, ZBG, FY_CODING_GZIP},
    {{"gzip;q=0, gzip"}, ALL, ZBG, FY_CODING_IDENTITY}, /* the first element counts */
    {{"gzip;q=0"}, ALL, ZBG, FY_CODING_IDENTITY},
    /* 40 */ {{"br;q=0.0, gzip;q=0.001"}, ALL, ZBG, FY_CODING_GZIP},
    {{"br;q=1., gzip;q=0.9"}, ALL, ZBG, FY_CODING_BR}, /* "1." is a valid qvalue */
    {{"gzip;q=0.5 ;q=0.6"}, ALL, ZBG, FY_CODING_IDENTITY},
    {{"gzip q=0.5, br"}, ALL, ZBG, FY_CODING_BR},
    {{"gzip;q=\"1\", zstd"}, ALL, ZBG, FY_CODING_ZSTD},
    /* 45 */ {{"identity;q=0, *;q=0"}, ALL, ZBG, FY_CODING_IDENTITY}, /* nothing left: identity */
    {{"zstd, br"}, ALL, (const uint8_t[]){FY_CODING_IDENTITY, 200, FY_CODING_BR}, 3, FY_CODING_BR},
};

Test(accept_encoding, table)
{
    cr_assert_geq(sizeof(cases) / sizeof(cases[0]), 25);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct ae_case *t = &cases[i];
        struct fy_accept_enc ae;
        fy_ae_init(&ae);
        for (int k = 0; k < 3 && t->fields[k]; k++)
            fy_ae_add(&ae, t->fields[k], strlen(t->fields[k]));
        enum fy_coding got = fy_ae_pick(&ae, t->enabled, t->prefer, t->n);
        cr_assert_eq(got, t->want, "case %zu (\"%s\"): got %s, want %s", i,
                     t->fields[0] ? t->fields[0] : "(none)", fy_coding_name(got),
                     fy_coding_name(t->want));
    }
}

Test(accept_encoding, qvalues_in_thousandths)
{
    struct fy_accept_enc ae;
    fy_ae_init(&ae);
    const char *v = "gzip;q=0.5, br;q=0.123, zstd;q=1.000, deflate;q=0, identity;q=0.05, *;q=0.7";
    fy_ae_add(&ae, v, strlen(v));
    cr_assert(ae.present);
    cr_assert_eq(ae.q[FY_CODING_GZIP], 500);
    cr_assert_eq(ae.q[FY_CODING_BR], 123);
    cr_assert_eq(ae.q[FY_CODING_ZSTD], 1000);
    cr_assert_eq(ae.q[FY_CODING_DEFLATE], 0);
    cr_assert_eq(ae.q[FY_CODING_IDENTITY], 50);
    cr_assert_eq(ae.listed, 0x1f);
    cr_assert(ae.star);
    cr_assert_eq(ae.star_q, 700);
}

/* The length counts, not a NUL: a value cut out of a larger buffer. */
Test(accept_encoding, length_bounded)
{
    struct fy_accept_enc ae;
    fy_ae_init(&ae);
    const char *v = "gzip;q=0.5, br";
    fy_ae_add(&ae, v, 10); /* "gzip;q=0.5" */
    cr_assert_eq(fy_ae_pick(&ae, ALL, pref_zbg, 3), FY_CODING_GZIP);
    fy_ae_init(&ae);
    fy_ae_add(&ae, v, 8); /* "gzip;q=0": refused */
    cr_assert_eq(fy_ae_pick(&ae, ALL, pref_zbg, 3), FY_CODING_IDENTITY);
}

/* Junk never crashes and never reads past the value (ASan would see it: each value sits in its
 * own exact-size allocation). */
Test(accept_encoding, junk)
{
    uint64_t r = 0x9e3779b97f4a7c15ull;
    static const char alphabet[] = "gzipbrzstd;q=0.1, \t*\"\\\x01\xff";
    for (int round = 0; round < 200; round++) {
        size_t n = 10240;
        char *v = malloc(n);
        for (size_t i = 0; i < n; i++) {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            v[i] = round % 2 ? (char)r : alphabet[r % (sizeof(alphabet) - 1)];
        }
        struct fy_accept_enc ae;
        fy_ae_init(&ae);
        fy_ae_add(&ae, v, n);
        enum fy_coding c = fy_ae_pick(&ae, ALL, pref_zbg, 3);
        cr_assert_lt((int)c, FY_CODING_COUNT);
        for (int k = 0; k < FY_CODING_COUNT; k++)
            cr_assert_leq(ae.q[k], 1000);
        free(v);
    }
    /* 10 KB of one repeated valid element, and of separators only */
    char *v = malloc(10240);
    for (size_t i = 0; i < 10240; i++)
        v[i] = "br, "[i % 4];
    struct fy_accept_enc ae;
    fy_ae_init(&ae);
    fy_ae_add(&ae, v, 10240);
    cr_assert_eq(fy_ae_pick(&ae, ALL, pref_zbg, 3), FY_CODING_BR);
    memset(v, ',', 10240);
    fy_ae_init(&ae);
    fy_ae_add(&ae, v, 10240);
    cr_assert_eq(fy_ae_pick(&ae, ALL, pref_zbg, 3), FY_CODING_IDENTITY);
    free(v);
    /* a zero-length value at a NULL pointer */
    fy_ae_init(&ae);
    fy_ae_add(&ae, NULL, 0);
    cr_assert(ae.present);
    cr_assert_eq(fy_ae_pick(&ae, ALL, pref_zbg, 3), FY_CODING_IDENTITY);
}
