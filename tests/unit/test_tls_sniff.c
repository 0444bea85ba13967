/*
 * Unit tests for src/net/tls_sniff.c: real ClientHellos (captured from OpenSSL's client on a
 * memory BIO: TLS 1.3 and 1.2, with and without SNI) are recognised at once and NEED_MORE at
 * every shorter prefix, also when split over records of any size; synthetic hellos cover each
 * malformation (lengths that do not add up, bad or repeated SNI, oversized messages).
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include "net/tls_sniff.h"

struct bytes {
    uint8_t *p;
    size_t len;
};

/* The first flight of OpenSSL's client: its ClientHello record(s). */
static struct bytes capture(const char *sni, int max_version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    cr_assert_not_null(ctx);
    cr_assert_eq(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
    SSL *s = SSL_new(ctx);
    BIO *rd = BIO_new(BIO_s_mem()), *wr = BIO_new(BIO_s_mem());
    SSL_set_bio(s, rd, wr);
    if (sni)
        cr_assert_eq(SSL_set_tlsext_host_name(s, sni), 1);
    cr_assert_eq(SSL_connect(s), -1);
    cr_assert_eq(SSL_get_error(s, -1), SSL_ERROR_WANT_READ);
    char *data;
    long n = BIO_get_mem_data(wr, &data);
    cr_assert_gt(n, 5);
    struct bytes b = {.p = malloc((size_t)n), .len = (size_t)n};
    memcpy(b.p, data, b.len);
    SSL_free(s);
    SSL_CTX_free(ctx);
    return b;
}

/* The same handshake bytes re-cut into records of at most `frag` payload bytes each. */
static struct bytes refragment(struct bytes rec, size_t frag)
{
    size_t body = (size_t)rec.p[3] << 8 | rec.p[4];
    cr_assert_eq(body + 5, rec.len, "one record expected");
    size_t nrec = (body + frag - 1) / frag;
    struct bytes out = {.p = malloc(body + nrec * 5), .len = 0};
    for (size_t off = 0; off < body; off += frag) {
        size_t n = body - off < frag ? body - off : frag;
        memcpy(out.p + out.len, rec.p, 3);
        out.p[out.len + 3] = (uint8_t)(n >> 8);
        out.p[out.len + 4] = (uint8_t)n;
        memcpy(out.p + out.len + 5, rec.p + 5 + off, n);
        out.len += 5 + n;
    }
    return out;
}

static enum fy_sniff sniff(const struct bytes *b, size_t len, char *sni)
{
    return fy_tls_sniff_client_hello(b->p, len, sni, FY_SNIFF_SNI_CAP);
}

/* Every prefix is NEED_MORE, the whole is TLS with `want` as SNI. */
static void check_all_prefixes(const struct bytes *b, const char *want)
{
    char sni[FY_SNIFF_SNI_CAP];
    for (size_t i = 0; i < b->len; i++) {
        enum fy_sniff r = sniff(b, i, sni);
        cr_assert_eq(r, FY_SNIFF_NEED_MORE, "prefix of %zu of %zu bytes: %d", i, b->len, r);
        cr_assert_str_empty(sni);
    }
    cr_assert_eq(sniff(b, b->len, sni), FY_SNIFF_TLS);
    cr_assert_str_eq(sni, want);
}

Test(sniff, tls13_with_sni)
{
    struct bytes b = capture("Www.Example.COM", TLS1_3_VERSION);
    check_all_prefixes(&b, "www.example.com");
    free(b.p);
}

Test(sniff, tls13_without_sni)
{
    struct bytes b = capture(NULL, TLS1_3_VERSION);
    check_all_prefixes(&b, "");
    free(b.p);
}

Test(sniff, tls12_with_and_without_sni)
{
    struct bytes b = capture("a-b.example", TLS1_2_VERSION);
    check_all_prefixes(&b, "a-b.example");
    free(b.p);
    b = capture(NULL, TLS1_2_VERSION);
    check_all_prefixes(&b, "");
    free(b.p);
}

Test(sniff, split_over_records_of_every_size)
{
    struct bytes b = capture("split.example", TLS1_3_VERSION);
    static const size_t frags[] = {1, 2, 3, 4, 5, 7, 64, 100, 511};
    for (size_t i = 0; i < sizeof(frags) / sizeof(frags[0]); i++) {
        struct bytes f = refragment(b, frags[i]);
        check_all_prefixes(&f, "split.example");
        free(f.p);
    }
    free(b.p);
}

Test(sniff, bytes_after_the_hello_are_ignored)
{
    struct bytes b = capture("x.example", TLS1_3_VERSION);
    uint8_t *p = malloc(b.len + 10);
    memcpy(p, b.p, b.len);
    memcpy(p + b.len, "\x17\x03\x03\x00\x05hello", 10); /* early data, say */
    char sni[FY_SNIFF_SNI_CAP];
    cr_assert_eq(fy_tls_sniff_client_hello(p, b.len + 10, sni, sizeof(sni)), FY_SNIFF_TLS);
    cr_assert_str_eq(sni, "x.example");
    free(p);
    free(b.p);
}

Test(sniff, not_tls)
{
    char sni[FY_SNIFF_SNI_CAP];
    cr_assert_eq(fy_tls_sniff_client_hello("", 0, sni, sizeof(sni)), FY_SNIFF_NEED_MORE);
    cr_assert_eq(fy_tls_sniff_client_hello("\x16", 1, sni, sizeof(sni)), FY_SNIFF_NEED_MORE);
    cr_assert_eq(fy_tls_sniff_client_hello("GET / HTTP/1.1\r\n", 16, sni, sizeof(sni)),
                 FY_SNIFF_NOT_TLS);
    cr_assert_eq(fy_tls_sniff_client_hello("G", 1, sni, sizeof(sni)), FY_SNIFF_NOT_TLS);
    /* SSL 2 framing, a non-3 major version, an alert record, a ServerHello */
    cr_assert_eq(fy_tls_sniff_client_hello("\x80\x2e\x01\x03\x01", 5, sni, sizeof(sni)),
                 FY_SNIFF_NOT_TLS);
    cr_assert_eq(fy_tls_sniff_client_hello("\x16\x02", 2, sni, sizeof(sni)), FY_SNIFF_NOT_TLS);
    cr_assert_eq(fy_tls_sniff_client_hello("\x15\x03\x01\x00\x02\x02\x28", 7, sni, sizeof(sni)),
                 FY_SNIFF_NOT_TLS);
    cr_assert_eq(
        fy_tls_sniff_client_hello("\x16\x03\x03\x00\x04\x02\x00\x00\x00", 9, sni, sizeof(sni)),
        FY_SNIFF_NOT_TLS);
    cr_assert_eq(fy_tls_sniff_client_hello("\x16\x03\x01\x00\x00", 5, sni, sizeof(sni)),
                 FY_SNIFF_BAD, "a zero-length handshake record");
}

/* ---- synthetic hellos ---- */

struct builder {
    uint8_t p[40000];
    size_t len;
};

static void put(struct builder *b, const void *d, size_t n)
{
    cr_assert_leq(b->len + n, sizeof(b->p));
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void put8(struct builder *b, uint32_t v)
{
    uint8_t c = (uint8_t)v;
    put(b, &c, 1);
}

static void put16(struct builder *b, uint32_t v)
{
    put8(b, v >> 8);
    put8(b, v);
}

static void put24(struct builder *b, uint32_t v)
{
    put8(b, v >> 16);
    put16(b, v);
}

/* What a synthetic hello looks like; each field can be broken on its own. */
struct spec {
    const char *sni;   /* NULL: no server_name extension */
    int sni_count;     /* server_name extensions (1 when sni is set and this is 0) */
    int host_entries;  /* host_name entries in the list (default 1) */
    uint32_t pad;      /* bytes of a padding extension (0: none) */
    bool no_ext_block; /* the body ends after the compression methods */
    int sid_len;       /* 0: 32, -1: none */
    int cs_len;        /* default 4 */
    int ext_len_delta, list_len_delta, name_len_delta, hs_len_delta, rec_len_delta;
};

static struct bytes build(const struct spec *s)
{
    static struct builder body, exts;
    body.len = exts.len = 0;
    put16(&body, 0x0303);
    uint8_t zero[64] = {0};
    put(&body, zero, 32); /* random */
    int sid = s->sid_len == 0 ? 32 : s->sid_len < 0 ? 0 : s->sid_len;
    put8(&body, (uint32_t)sid);
    put(&body, zero, (size_t)(sid > 32 ? 33 : sid));
    int cs = s->cs_len ? s->cs_len : 4;
    put16(&body, (uint32_t)cs);
    put(&body, "\x13\x01\x13\x02\x13\x03", (size_t)cs);
    put8(&body, 1);
    put8(&body, 0);
    int count = s->sni ? (s->sni_count ? s->sni_count : 1) : 0;
    put16(&exts, 0x002b); /* supported_versions: 1.3 */
    put16(&exts, 3);
    put(&exts, "\x02\x03\x04", 3);
    for (int i = 0; i < count; i++) {
        size_t n = strlen(s->sni);
        int entries = s->host_entries ? s->host_entries : 1;
        size_t list = (size_t)entries * (3 + n);
        put16(&exts, 0);
        put16(&exts, (uint32_t)(2 + list));
        put16(&exts, (uint32_t)((int)list + s->list_len_delta));
        for (int e = 0; e < entries; e++) {
            put8(&exts, 0);
            put16(&exts, (uint32_t)((int)n + s->name_len_delta));
            put(&exts, s->sni, n);
        }
    }
    if (s->pad) {
        put16(&exts, 21);
        put16(&exts, s->pad);
        for (uint32_t i = 0; i < s->pad; i++)
            put8(&exts, 0);
    }
    if (!s->no_ext_block) {
        put16(&body, (uint32_t)((int)exts.len + s->ext_len_delta));
        put(&body, exts.p, exts.len);
    }
    static struct builder rec;
    rec.len = 0;
    size_t hs = 4 + body.len;
    put8(&rec, 0x16);
    put16(&rec, 0x0301);
    put16(&rec, (uint32_t)((int)hs + s->rec_len_delta) & 0xffff);
    put8(&rec, 1);
    put24(&rec, (uint32_t)((int)body.len + s->hs_len_delta));
    put(&rec, body.p, body.len);
    struct bytes out = {.p = malloc(rec.len), .len = rec.len};
    memcpy(out.p, rec.p, rec.len);
    return out;
}

static enum fy_sniff sniff_spec(const struct spec *s, char *sni)
{
    struct bytes b = build(s);
    enum fy_sniff r = fy_tls_sniff_client_hello(b.p, b.len, sni, FY_SNIFF_SNI_CAP);
    free(b.p);
    return r;
}

Test(sniff, synthetic_hellos_are_well_formed)
{
    char sni[FY_SNIFF_SNI_CAP];
    cr_assert_eq(sniff_spec(&(struct spec){.sni = "syn.example"}, sni), FY_SNIFF_TLS);
    cr_assert_str_eq(sni, "syn.example");
    cr_assert_eq(sniff_spec(&(struct spec){.sni = "dot.example."}, sni), FY_SNIFF_TLS);
    cr_assert_str_eq(sni, "dot.example", "a trailing dot names the same host");
    cr_assert_eq(sniff_spec(&(struct spec){0}, sni), FY_SNIFF_TLS);
    cr_assert_str_empty(sni);
    cr_assert_eq(sniff_spec(&(struct spec){.no_ext_block = true}, sni), FY_SNIFF_TLS);
    cr_assert_str_empty(sni);
    cr_assert_eq(sniff_spec(&(struct spec){.sid_len = -1, .sni = "1.2.3.4"}, sni), FY_SNIFF_TLS);
    /* the biggest hello one record holds */
    struct spec big = {.sni = "big.example"};
    struct bytes b = build(&big);
    big.pad = (uint32_t)(16384 - (b.len - 5) - 4);
    free(b.p);
    b = build(&big);
    cr_assert_eq(b.len, FY_SNIFF_MAX);
    cr_assert_eq(sniff(&b, b.len, sni), FY_SNIFF_TLS);
    cr_assert_str_eq(sni, "big.example");
    cr_assert_eq(sniff(&b, b.len - 1, sni), FY_SNIFF_NEED_MORE);
    free(b.p);
}

Test(sniff, malformed_lengths_are_bad)
{
    char sni[FY_SNIFF_SNI_CAP];
    const char *n = "bad.example";
    static const struct spec bad[] = {
        {.sni = "bad.example", .ext_len_delta = 1},   {.sni = "bad.example", .ext_len_delta = -1},
        {.sni = "bad.example", .list_len_delta = 1},  {.sni = "bad.example", .list_len_delta = -1},
        {.sni = "bad.example", .name_len_delta = -1}, {.sni = "bad.example", .name_len_delta = 1},
        {.sni = "bad.example", .hs_len_delta = -1},   {.sni = "bad.example", .sid_len = 33},
        {.sni = "bad.example", .cs_len = 3},          {.sni = "bad.example", .sni_count = 2},
        {.sni = "bad.example", .host_entries = 2},
    };
    (void)n;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(sniff_spec(&bad[i], sni), FY_SNIFF_BAD, "case %zu", i);
    /* A message longer than its record is waiting for the next record: truncation, not BAD;
     * and a record longer than the message holds what follows it. */
    cr_assert_eq(sniff_spec(&(struct spec){.sni = n, .hs_len_delta = 1}, sni), FY_SNIFF_NEED_MORE);
    cr_assert_eq(sniff_spec(&(struct spec){.sni = n, .rec_len_delta = 1}, sni), FY_SNIFF_TLS);
}

Test(sniff, bad_server_names_are_bad)
{
    char sni[FY_SNIFF_SNI_CAP];
    static const char *names[] = {"per%cent.example", "a..b", ".a",        "-a.example",
                                  "a-.example",       "a b",  "*.example", "a.example..",
                                  "\xc3\xa9.example", "."};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        cr_assert_eq(sniff_spec(&(struct spec){.sni = names[i]}, sni), FY_SNIFF_BAD, "%s",
                     names[i]);
    char long_label[80];
    memset(long_label, 'a', 64);
    strcpy(long_label + 64, ".example");
    cr_assert_eq(sniff_spec(&(struct spec){.sni = long_label}, sni), FY_SNIFF_BAD);
    long_label[1] = '.'; /* labels of 1 and 62 */
    cr_assert_eq(sniff_spec(&(struct spec){.sni = long_label}, sni), FY_SNIFF_TLS);
    char name[300];
    for (int i = 0; i < 127; i++)
        memcpy(name + i * 2, "a.", 2);
    name[253] = '\0'; /* 253 bytes, ends with a label */
    cr_assert_eq(sniff_spec(&(struct spec){.sni = name}, sni), FY_SNIFF_TLS);
    cr_assert_eq(strlen(sni), 253);
    memcpy(name + 253, ".a", 3); /* 255 */
    cr_assert_eq(sniff_spec(&(struct spec){.sni = name}, sni), FY_SNIFF_BAD);
    /* a NUL inside the name */
    struct spec nul = {.sni = "ab.example"};
    struct bytes b = build(&nul);
    uint8_t *at = memmem(b.p, b.len, "ab.example", 10);
    at[1] = '\0';
    cr_assert_eq(fy_tls_sniff_client_hello(b.p, b.len, sni, sizeof(sni)), FY_SNIFF_BAD);
    free(b.p);
}

Test(sniff, small_sni_buffer_and_no_buffer)
{
    struct bytes b = build(&(struct spec){.sni = "abcdef.example"});
    char small[8];
    cr_assert_eq(fy_tls_sniff_client_hello(b.p, b.len, small, sizeof(small)), FY_SNIFF_BAD);
    cr_assert_eq(fy_tls_sniff_client_hello(b.p, b.len, NULL, 0), FY_SNIFF_TLS);
    free(b.p);
}

Test(sniff, records_are_checked)
{
    char sni[FY_SNIFF_SNI_CAP];
    struct bytes b = capture("rec.example", TLS1_3_VERSION);
    struct bytes f = refragment(b, 50);
    /* an alert between two fragments of the hello */
    f.p[55] = 0x15;
    cr_assert_eq(sniff(&f, f.len, sni), FY_SNIFF_BAD);
    f.p[55] = 0x16;
    f.p[56] = 0x02;
    cr_assert_eq(sniff(&f, f.len, sni), FY_SNIFF_BAD);
    f.p[56] = 0x03;
    f.p[58] = 0; /* a zero-length fragment */
    f.p[59] = 0;
    cr_assert_eq(sniff(&f, f.len, sni), FY_SNIFF_BAD);
    free(f.p);
    b.p[3] = 0x40; /* 16385 bytes */
    b.p[4] = 0x01;
    cr_assert_eq(sniff(&b, b.len, sni), FY_SNIFF_BAD);
    free(b.p);
}

Test(sniff, too_big_or_too_fragmented_is_bad_early)
{
    char sni[FY_SNIFF_SNI_CAP];
    /* A message that cannot fit one record's worth: BAD as soon as its header is seen. */
    struct bytes b = build(&(struct spec){.sni = "x.example", .hs_len_delta = 20000});
    cr_assert_eq(sniff(&b, 9, sni), FY_SNIFF_BAD);
    free(b.p);
    /* 16 000 bytes in 100-byte records: the headers push the end past FY_SNIFF_MAX. */
    b = build(&(struct spec){.sni = "x.example", .pad = 16000});
    struct bytes f = refragment(b, 100);
    cr_assert_gt(f.len, FY_SNIFF_MAX);
    enum fy_sniff r = FY_SNIFF_NEED_MORE;
    size_t at = 0;
    for (size_t i = 0; i <= FY_SNIFF_MAX && r == FY_SNIFF_NEED_MORE; i++)
        r = sniff(&f, i, sni), at = i;
    cr_assert_eq(r, FY_SNIFF_BAD);
    cr_assert_leq(at, FY_SNIFF_MAX);
    /* in two records it fits */
    free(f.p);
    f = refragment(b, 8100);
    cr_assert_eq(sniff(&f, f.len, sni), FY_SNIFF_TLS);
    cr_assert_str_eq(sni, "x.example");
    free(f.p);
    free(b.p);
}

Test(sniff, every_byte_garbled_stays_in_bounds)
{
    /* Under ASan: no read outside the buffer whatever one byte becomes. */
    struct bytes b = capture("garble.example", TLS1_3_VERSION);
    char sni[FY_SNIFF_SNI_CAP];
    for (size_t i = 0; i < b.len; i++) {
        uint8_t *p = malloc(b.len);
        memcpy(p, b.p, b.len);
        static const uint8_t vals[] = {0x00, 0x01, 0x7f, 0xff};
        for (size_t v = 0; v < sizeof(vals); v++) {
            p[i] = vals[v] == b.p[i] ? (uint8_t)~vals[v] : vals[v];
            enum fy_sniff r = fy_tls_sniff_client_hello(p, b.len, sni, sizeof(sni));
            if (r == FY_SNIFF_TLS)
                cr_assert_leq(strlen(sni), 253);
            else
                cr_assert_str_empty(sni);
        }
        free(p);
    }
    free(b.p);
}

Test(sniff, server_name_extension_alone)
{
    char sni[FY_SNIFF_SNI_CAP];
    cr_assert_eq(fy_tls_sniff_server_name_ext("\x00\x06\x00\x00\x03"
                                              "A.b",
                                              8, sni, sizeof(sni)),
                 FY_SNIFF_TLS);
    cr_assert_str_eq(sni, "a.b");
    cr_assert_eq(fy_tls_sniff_server_name_ext("\x00\x06\x00\x00\x03"
                                              "a.b",
                                              7, sni, sizeof(sni)),
                 FY_SNIFF_BAD);
    cr_assert_eq(fy_tls_sniff_server_name_ext("\x00\x06\x01\x00\x03"
                                              "a.b",
                                              8, sni, sizeof(sni)),
                 FY_SNIFF_BAD, "not a host_name");
    cr_assert_eq(fy_tls_sniff_server_name_ext("\x00\x00", 2, sni, sizeof(sni)), FY_SNIFF_BAD);
    cr_assert_eq(fy_tls_sniff_server_name_ext("", 0, sni, sizeof(sni)), FY_SNIFF_BAD);
}

Test(sniff, host_names)
{
    cr_assert(fy_tls_sniff_host_valid("a", 1));
    cr_assert(fy_tls_sniff_host_valid("xn--bcher-kva.example", 21));
    cr_assert(fy_tls_sniff_host_valid("127.0.0.1", 9));
    cr_assert(fy_tls_sniff_host_valid("_svc.under_score.example", 24));
    cr_assert_not(fy_tls_sniff_host_valid("a%41.example", 12));
    cr_assert_not(fy_tls_sniff_host_valid("", 0));
    cr_assert_not(fy_tls_sniff_host_valid("a.", 2));
    cr_assert_not(fy_tls_sniff_host_valid("::1", 3));
    cr_assert_not(fy_tls_sniff_host_valid("[::1]", 5));
    cr_assert_not(fy_tls_sniff_host_valid("a-", 2));
}
