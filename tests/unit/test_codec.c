/* Unit tests for src/filters/codec.c: round trips through every coding in awkward piece and
 * buffer sizes, flushes, interoperability with the libraries' own one-shot encoders and decoders,
 * and the decoder's errors and limits (corrupt, truncated, trailing data, size and ratio bombs). */
#include <brotli/decode.h>
#include <brotli/encode.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "filters/codec.h"

/* ---- helpers ---- */

struct bytes {
    uint8_t *p;
    size_t n, cap;
};

static void put(struct bytes *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        cr_assert(b->p);
    }
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
}

static uint64_t rng = 88172645463325252ull;

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static uint8_t *random_data(size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    cr_assert(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)next_rand();
    return p;
}

/* Pseudo-English: compressible, but not trivially. */
static uint8_t *text_data(size_t n)
{
    static const char *const words[] = {
        "the",    "proxy", "streams",  "a",      "body",   "through", "gzip", "and",
        "brotli", "while", "upstream", "server", "sends",  "chunks",  "of",   "HTML,",
        "JSON",   "or",    "events.",  "Every",  "client", "asks",    "for",  "less\n"};
    uint8_t *p = malloc(n ? n : 1);
    cr_assert(p);
    size_t i = 0;
    while (i < n) {
        const char *w = words[next_rand() % (sizeof(words) / sizeof(words[0]))];
        for (size_t k = 0; w[k] && i < n; k++)
            p[i++] = (uint8_t)w[k];
        if (i < n)
            p[i++] = ' ';
    }
    return p;
}

/* Calls before a test decides the codec spins. */
#define GUARD 20000000L

/*
 * Pushes all of in through c in pieces of `piece` bytes, with output buffers of `outsz` bytes,
 * the last piece with op `last` (the others with RUN), appending the output to *out. Returns the
 * last result: DONE, FLUSHED, MORE (last == RUN) or ERROR.
 */
static enum fy_codec_rc pump(struct fy_codec *c, const uint8_t *in, size_t len, size_t piece,
                             size_t outsz, enum fy_codec_op last, struct bytes *out)
{
    uint8_t *buf = malloc(outsz);
    cr_assert(buf);
    size_t off = 0;
    long guard = 0;
    enum fy_codec_rc rc;
    do {
        size_t n = len - off < piece ? len - off : piece;
        const uint8_t *p = in ? in + off : NULL;
        enum fy_codec_op op = off + n == len ? last : FY_CODEC_RUN;
        for (;;) {
            uint8_t *o = buf;
            size_t avail = outsz, n0 = n;
            rc = fy_codec_run(c, &p, &n, &o, &avail, op);
            cr_assert_eq(o, buf + (outsz - avail));
            if (in)
                cr_assert_eq(p - (in + off), (ptrdiff_t)(n0 - n));
            put(out, buf, outsz - avail);
            off += n0 - n;
            cr_assert_lt(++guard, GUARD, "%s: no end in sight", fy_codec_error(c));
            if (rc == FY_CODEC_ERROR || rc == FY_CODEC_DONE || rc == FY_CODEC_FLUSHED)
                break;
            if (n > 0 || avail == 0)
                continue; /* MORE: wants more space, or input is left */
            cr_assert_eq(op, FY_CODEC_RUN, "MORE with input used up and space left on op %d", op);
            break;
        }
        if (rc == FY_CODEC_ERROR)
            break;
    } while (off < len);
    free(buf);
    return rc;
}

/* Decodes with the library's own one-shot or plain streaming decoder; want_len bounds the size. */
static uint8_t *lib_decode(enum fy_coding cd, const uint8_t *z, size_t zn, size_t want_len,
                           size_t *outn)
{
    size_t cap = want_len + 16;
    uint8_t *out = malloc(cap);
    cr_assert(out);
    switch (cd) {
    case FY_CODING_IDENTITY:
        cr_assert_leq(zn, cap);
        if (zn)
            memcpy(out, z, zn);
        *outn = zn;
        break;
    case FY_CODING_GZIP:
    case FY_CODING_DEFLATE: {
        z_stream s = {0};
        cr_assert_eq(inflateInit2(&s, cd == FY_CODING_GZIP ? 31 : 15), Z_OK);
        s.next_in = (Bytef *)z;
        s.avail_in = (uInt)zn;
        s.next_out = out;
        s.avail_out = (uInt)cap;
        cr_assert_eq(inflate(&s, Z_FINISH), Z_STREAM_END, "zlib: %s", s.msg ? s.msg : "?");
        cr_assert_eq(s.avail_in, 0);
        *outn = cap - s.avail_out;
        inflateEnd(&s);
        break;
    }
    case FY_CODING_BR: {
        size_t n = cap;
        cr_assert_eq(BrotliDecoderDecompress(zn, z, &n, out), BROTLI_DECODER_RESULT_SUCCESS);
        *outn = n;
        break;
    }
    case FY_CODING_ZSTD: {
        size_t r = ZSTD_decompress(out, cap, z, zn);
        cr_assert_not(ZSTD_isError(r), "zstd: %s", ZSTD_getErrorName(r));
        *outn = r;
        break;
    }
    default:
        cr_assert_fail();
    }
    return out;
}

/* Encodes with zlib's deflate at windowBits wb (31 gzip, 15 zlib, -15 raw), settings unlike
 * ours: memLevel 9 and the filtered strategy. */
static struct bytes zlib_encode(int wb, int level, const uint8_t *p, size_t n)
{
    z_stream s = {0};
    cr_assert_eq(deflateInit2(&s, level, Z_DEFLATED, wb, 9, Z_FILTERED), Z_OK);
    struct bytes b = {0};
    b.cap = deflateBound(&s, n) + 64;
    b.p = malloc(b.cap);
    s.next_in = (Bytef *)p;
    s.avail_in = (uInt)n;
    s.next_out = b.p;
    s.avail_out = (uInt)b.cap;
    cr_assert_eq(deflate(&s, Z_FINISH), Z_STREAM_END);
    b.n = b.cap - s.avail_out;
    deflateEnd(&s);
    return b;
}

static const int levels[FY_CODING_COUNT][3] = {
    [FY_CODING_IDENTITY] = {0, 0, 0}, [FY_CODING_GZIP] = {1, 6, 9},
    [FY_CODING_DEFLATE] = {1, 6, 9},  [FY_CODING_BR] = {0, 5, 11},
    [FY_CODING_ZSTD] = {1, 3, 19},
};

/* Encodes with ours, checks the library decodes it, decodes with ours, checks both. */
static void roundtrip(enum fy_coding cd, int level, const uint8_t *data, size_t len, size_t piece,
                      size_t outsz)
{
    struct fy_codec *enc = fy_encoder_new(cd, level);
    cr_assert(enc);
    struct bytes z = {0};
    enum fy_codec_rc rc = pump(enc, data, len, piece, outsz, FY_CODEC_END, &z);
    cr_assert_eq(rc, FY_CODEC_DONE, "%s level %d len %zu piece %zu out %zu: %s", fy_coding_name(cd),
                 level, len, piece, outsz, fy_codec_error(enc));
    cr_assert_eq(fy_codec_total_in(enc), len);
    cr_assert_eq(fy_codec_total_out(enc), z.n);
    fy_codec_free(enc);

    size_t ln;
    uint8_t *l = lib_decode(cd, z.p, z.n, len, &ln);
    cr_assert_eq(ln, len, "%s level %d len %zu: library decoded %zu", fy_coding_name(cd), level,
                 len, ln);
    cr_assert_eq(memcmp(l, data, len), 0);
    free(l);

    struct fy_codec *dec = fy_decoder_new(cd, 0, 0);
    cr_assert(dec);
    struct bytes d = {0};
    rc = pump(dec, z.p, z.n, piece, outsz, FY_CODEC_END, &d);
    cr_assert_eq(rc, FY_CODEC_DONE, "%s level %d len %zu piece %zu out %zu: %s", fy_coding_name(cd),
                 level, len, piece, outsz, fy_codec_error(dec));
    cr_assert_eq(d.n, len);
    cr_assert(len == 0 || memcmp(d.p, data, len) == 0);
    cr_assert_eq(fy_codec_total_in(dec), z.n);
    cr_assert_eq(fy_codec_total_out(dec), len);
    fy_codec_free(dec);
    free(z.p);
    free(d.p);
}

static const size_t pieces[] = {1, 7, 4096};
static const size_t outs[] = {1, 13, 16384};

/* Every piece size with every output size on 0 B, 1 B and 100 KB of text and random data, at
 * the middle level; every level with 4 KiB / 16 KiB pieces; 5 MB at two levels. */
static void roundtrips(enum fy_coding cd)
{
    size_t sizes[] = {0, 1, 100000};
    for (int kind = 0; kind < 2; kind++) {
        for (size_t s = 0; s < 3; s++) {
            uint8_t *data = kind ? random_data(sizes[s]) : text_data(sizes[s]);
            for (size_t i = 0; i < 3; i++)
                for (size_t o = 0; o < 3; o++)
                    roundtrip(cd, levels[cd][1], data, sizes[s], pieces[i], outs[o]);
            roundtrip(cd, levels[cd][0], data, sizes[s], 4096, 16384);
            roundtrip(cd, levels[cd][2], data, sizes[s], 4096, 16384);
            free(data);
        }
        size_t big = 5000000;
        uint8_t *data = kind ? random_data(big) : text_data(big);
        roundtrip(cd, levels[cd][0], data, big, 4096, 16384);
        roundtrip(cd, levels[cd][1], data, big, 65536, 13);
        free(data);
    }
}

Test(roundtrip, identity)
{
    roundtrips(FY_CODING_IDENTITY);
}

Test(roundtrip, gzip)
{
    roundtrips(FY_CODING_GZIP);
}

Test(roundtrip, deflate)
{
    roundtrips(FY_CODING_DEFLATE);
}

Test(roundtrip, br)
{
    roundtrips(FY_CODING_BR);
}

Test(roundtrip, zstd)
{
    roundtrips(FY_CODING_ZSTD);
}

/* zstd level 19: its window (8 MiB) is still within what our decoder accepts. */
Test(roundtrip, zstd_max_level_window)
{
    uint8_t *data = text_data(1000000);
    roundtrip(FY_CODING_ZSTD, 19, data, 1000000, 1 << 20, 1 << 20);
    roundtrip(FY_CODING_ZSTD, 99, data, 1000000, 1 << 20, 1 << 20); /* clamped to 19 */
    free(data);
}

Test(roundtrip, levels_clamped)
{
    uint8_t *data = text_data(3000);
    for (int cd = 0; cd < FY_CODING_COUNT; cd++) {
        roundtrip(cd, -5, data, 3000, 100, 100);
        roundtrip(cd, 1000, data, 3000, 100, 100);
    }
    free(data);
    cr_assert_null(fy_encoder_new(FY_CODING_COUNT, 1));
    cr_assert_null(fy_decoder_new((enum fy_coding) - 1, 0, 0));
}

/* ---- flush ---- */

/* Decodes all of z with a fresh decoder and op FLUSH: it must say FLUSHED (the stream is not over
 * yet) and give back exactly want. */
static void decodes_so_far(enum fy_coding cd, const struct bytes *z, const struct bytes *want)
{
    struct fy_codec *dec = fy_decoder_new(cd, 0, 0);
    struct bytes d = {0};
    enum fy_codec_rc rc = pump(dec, z->p, z->n, 4096, 13, FY_CODEC_FLUSH, &d);
    cr_assert_eq(rc, FY_CODEC_FLUSHED, "%s: %d %s", fy_coding_name(cd), rc, fy_codec_error(dec));
    cr_assert_eq(d.n, want->n, "%s: decoded %zu of %zu", fy_coding_name(cd), d.n, want->n);
    cr_assert_eq(memcmp(d.p, want->p, d.n), 0);
    fy_codec_free(dec);
    free(d.p);
}

static void flushes(enum fy_coding cd, size_t outsz)
{
    struct fy_codec *enc = fy_encoder_new(cd, levels[cd][1]);
    struct bytes z = {0}, pushed = {0};
    uint8_t *big = random_data(100000);
    for (int round = 0; round < 4; round++) {
        char ev[64];
        int n = snprintf(ev, sizeof(ev), "event: tick\ndata: %d\n\n", round);
        put(&pushed, ev, (size_t)n);
        cr_assert_eq(pump(enc, (const uint8_t *)ev, (size_t)n, 5, outsz, FY_CODEC_RUN, &z),
                     FY_CODEC_MORE);
        if (round == 2) {
            put(&pushed, big, 100000);
            cr_assert_eq(pump(enc, big, 100000, 4096, outsz, FY_CODEC_RUN, &z), FY_CODEC_MORE);
        }
        cr_assert_eq(pump(enc, NULL, 0, 1, outsz, FY_CODEC_FLUSH, &z), FY_CODEC_FLUSHED, "%s: %s",
                     fy_coding_name(cd), fy_codec_error(enc));
        decodes_so_far(cd, &z, &pushed);
        /* a second flush with nothing new adds nothing */
        size_t before = z.n;
        cr_assert_eq(pump(enc, NULL, 0, 1, outsz, FY_CODEC_FLUSH, &z), FY_CODEC_FLUSHED);
        cr_assert_eq(z.n, before);
    }
    /* a flush with input in the same call */
    put(&pushed, "last", 4);
    cr_assert_eq(pump(enc, (const uint8_t *)"last", 4, 4, outsz, FY_CODEC_FLUSH, &z),
                 FY_CODEC_FLUSHED);
    decodes_so_far(cd, &z, &pushed);
    cr_assert_eq(pump(enc, NULL, 0, 1, outsz, FY_CODEC_END, &z), FY_CODEC_DONE);
    size_t ln;
    uint8_t *l = lib_decode(cd, z.p, z.n, pushed.n, &ln);
    cr_assert_eq(ln, pushed.n);
    cr_assert_eq(memcmp(l, pushed.p, ln), 0);
    free(l);
    fy_codec_free(enc);
    free(z.p);
    free(pushed.p);
    free(big);
}

Test(flush, every_coding_every_buffer)
{
    for (int cd = 0; cd < FY_CODING_COUNT; cd++)
        for (size_t o = 0; o < 3; o++)
            flushes(cd, outs[o]);
}

/* A flush cut short by output space is completed by the next call, even a RUN with new input. */
Test(flush, interrupted_then_run)
{
    for (int cd = FY_CODING_GZIP; cd < FY_CODING_COUNT; cd++) {
        struct fy_codec *enc = fy_encoder_new(cd, 5);
        uint8_t *data = text_data(20000);
        struct bytes z = {0};
        const uint8_t *p = data;
        size_t n = 20000;
        uint8_t buf[8];
        uint8_t *o = buf;
        size_t avail = sizeof(buf);
        cr_assert_eq(fy_codec_run(enc, &p, &n, &o, &avail, FY_CODEC_FLUSH), FY_CODEC_MORE);
        cr_assert_eq(avail, 0);
        put(&z, buf, sizeof(buf));
        const uint8_t *more = (const uint8_t *)"and more";
        cr_assert_eq(pump(enc, p, n, 4096, 16384, FY_CODEC_RUN, &z), FY_CODEC_MORE);
        cr_assert_eq(pump(enc, more, 8, 8, 16384, FY_CODEC_END, &z), FY_CODEC_DONE);
        size_t ln;
        uint8_t *l = lib_decode(cd, z.p, z.n, 20008, &ln);
        cr_assert_eq(ln, 20008);
        cr_assert_eq(memcmp(l, data, 20000), 0);
        cr_assert_eq(memcmp(l + 20000, more, 8), 0);
        free(l);
        free(z.p);
        free(data);
        fy_codec_free(enc);
    }
}

/* ---- other encoders into our decoders ---- */

static void decodes_to(enum fy_coding cd, const struct bytes *z, const uint8_t *want, size_t n)
{
    for (size_t i = 0; i < 3; i++) {
        for (size_t o = 1; o < 3; o++) {
            struct fy_codec *dec = fy_decoder_new(cd, 0, 0);
            struct bytes d = {0};
            enum fy_codec_rc rc = pump(dec, z->p, z->n, pieces[i], outs[o], FY_CODEC_END, &d);
            cr_assert_eq(rc, FY_CODEC_DONE, "%s piece %zu: %s", fy_coding_name(cd), pieces[i],
                         fy_codec_error(dec));
            cr_assert_eq(d.n, n);
            cr_assert_eq(memcmp(d.p, want, n), 0);
            fy_codec_free(dec);
            free(d.p);
        }
    }
}

Test(interop, zlib_gzip_deflate_raw)
{
    size_t n = 50000;
    uint8_t *data = text_data(n);
    struct bytes gz = zlib_encode(31, 2, data, n);
    decodes_to(FY_CODING_GZIP, &gz, data, n);
    struct bytes zl = zlib_encode(15, 9, data, n);
    decodes_to(FY_CODING_DEFLATE, &zl, data, n);
    struct bytes raw = zlib_encode(-15, 4, data, n);
    decodes_to(FY_CODING_DEFLATE, &raw, data, n);
    /* a raw stored block (level 0): its first byte is 0x01 */
    struct bytes stored = zlib_encode(-15, 0, data, 1000);
    cr_assert_eq(stored.p[0], 0x01);
    decodes_to(FY_CODING_DEFLATE, &stored, data, 1000);
    /* compress2(), the zlib format at another level */
    struct bytes c2 = {.cap = compressBound(n)};
    c2.p = malloc(c2.cap);
    uLongf dl = c2.cap;
    cr_assert_eq(compress2(c2.p, &dl, data, n, 3), Z_OK);
    c2.n = dl;
    decodes_to(FY_CODING_DEFLATE, &c2, data, n);
    free(gz.p);
    free(zl.p);
    free(raw.p);
    free(stored.p);
    free(c2.p);
    free(data);
}

/* A gzip file as gzwrite() writes it, at level 3. */
Test(interop, zlib_gzwrite)
{
    size_t n = 70000;
    uint8_t *data = text_data(n);
    FILE *f = tmpfile();
    cr_assert(f);
    gzFile g = gzdopen(dup(fileno(f)), "wb3");
    cr_assert(g);
    cr_assert_eq(gzwrite(g, data, (unsigned)n), (int)n);
    cr_assert_eq(gzclose(g), Z_OK);
    struct bytes z = {0};
    rewind(f);
    uint8_t buf[4096];
    size_t r;
    while ((r = fread(buf, 1, sizeof(buf), f)) > 0)
        put(&z, buf, r);
    fclose(f);
    cr_assert_eq(z.p[0], 0x1f);
    decodes_to(FY_CODING_GZIP, &z, data, n);
    free(z.p);
    free(data);
}

Test(interop, brotli_zstd_one_shot)
{
    size_t n = 300000;
    uint8_t *data = text_data(n);
    struct bytes br = {.cap = BrotliEncoderMaxCompressedSize(n)};
    br.p = malloc(br.cap);
    br.n = br.cap;
    cr_assert(BrotliEncoderCompress(9, 22, BROTLI_MODE_TEXT, n, data, &br.n, br.p));
    decodes_to(FY_CODING_BR, &br, data, n);
    struct bytes zs = {.cap = ZSTD_compressBound(n)};
    zs.p = malloc(zs.cap);
    zs.n = ZSTD_compress(zs.p, zs.cap, data, n, 5);
    cr_assert_not(ZSTD_isError(zs.n));
    decodes_to(FY_CODING_ZSTD, &zs, data, n);
    /* two zstd frames back to back are one body (RFC 8878 3.1) */
    struct bytes two = {0};
    put(&two, zs.p, zs.n);
    put(&two, zs.p, zs.n);
    uint8_t *twice = malloc(2 * n);
    memcpy(twice, data, n);
    memcpy(twice + n, data, n);
    decodes_to(FY_CODING_ZSTD, &two, twice, 2 * n);
    free(twice);
    free(two.p);
    free(br.p);
    free(zs.p);
    free(data);
}

/* Our encoder's gzip, then zlib's, as one body (RFC 1952 2.2), in one piece and split anywhere. */
Test(interop, gzip_members)
{
    struct fy_codec *enc = fy_encoder_new(FY_CODING_GZIP, 6);
    struct bytes z = {0};
    cr_assert_eq(pump(enc, (const uint8_t *)"hello ", 6, 6, 100, FY_CODEC_END, &z), FY_CODEC_DONE);
    fy_codec_free(enc);
    size_t first = z.n;
    struct bytes m2 = zlib_encode(31, 9, (const uint8_t *)"world", 5);
    put(&z, m2.p, m2.n);
    decodes_to(FY_CODING_GZIP, &z, (const uint8_t *)"hello world", 11);

    /* a call that ends on the member boundary says DONE; the next member is still taken */
    struct fy_codec *dec = fy_decoder_new(FY_CODING_GZIP, 0, 0);
    struct bytes d = {0};
    cr_assert_eq(pump(dec, z.p, first, 4096, 100, FY_CODEC_RUN, &d), FY_CODEC_DONE);
    cr_assert_eq(pump(dec, z.p + first, z.n - first, 4096, 100, FY_CODEC_END, &d), FY_CODEC_DONE);
    cr_assert_eq(d.n, 11);
    cr_assert_eq(memcmp(d.p, "hello world", 11), 0);
    fy_codec_free(dec);
    free(d.p);
    free(m2.p);
    free(z.p);
}

/* ---- decoder errors ---- */

/* Our encoding of n bytes of text. */
static struct bytes encoded(enum fy_coding cd, const uint8_t *data, size_t n)
{
    struct fy_codec *enc = fy_encoder_new(cd, levels[cd][1]);
    struct bytes z = {0};
    cr_assert_eq(pump(enc, data, n, 65536, 65536, FY_CODEC_END, &z), FY_CODEC_DONE);
    fy_codec_free(enc);
    return z;
}

/* Decodes in with limits; asserts ERROR with an error containing want. */
static struct fy_codec *fails(enum fy_coding cd, const uint8_t *in, size_t n, size_t piece,
                              size_t outsz, uint64_t max_out, uint32_t ratio, const char *want)
{
    struct fy_codec *dec = fy_decoder_new(cd, max_out, ratio);
    struct bytes d = {0};
    enum fy_codec_rc rc = pump(dec, in, n, piece, outsz, FY_CODEC_END, &d);
    cr_assert_eq(rc, FY_CODEC_ERROR, "%s: %d", fy_coding_name(cd), rc);
    cr_assert(strstr(fy_codec_error(dec), want), "%s: error '%s' lacks '%s'", fy_coding_name(cd),
              fy_codec_error(dec), want);
    cr_assert_eq(fy_codec_total_out(dec), d.n);
    /* ERROR is final */
    const uint8_t *p = in;
    size_t len = n;
    uint8_t buf[16], *o = buf;
    size_t avail = sizeof(buf);
    cr_assert_eq(fy_codec_run(dec, &p, &len, &o, &avail, FY_CODEC_RUN), FY_CODEC_ERROR);
    cr_assert_eq(len, n);
    cr_assert_eq(avail, sizeof(buf));
    free(d.p);
    return dec;
}

Test(errors, corrupt_truncated_trailing)
{
    size_t n = 200000;
    uint8_t *data = text_data(n);
    for (int cd = FY_CODING_GZIP; cd < FY_CODING_COUNT; cd++) {
        struct bytes z = encoded(cd, data, n);
        const char *name = fy_coding_name(cd);
        char want[64];

        /* damage near the start: a bad header or code */
        struct bytes bad = {0};
        put(&bad, z.p, z.n);
        for (size_t i = 2; i < 18; i++)
            bad.p[i] ^= 0x5a;
        snprintf(want, sizeof(want), "corrupt %s data", name);
        fy_codec_free(fails(cd, bad.p, bad.n, 4096, 16384, 0, 0, want));
        /* damage in the middle: a bad code, or a checksum that does not match; brotli has no
         * checksum, so there the stream may also just end too early */
        memcpy(bad.p, z.p, z.n);
        for (size_t i = bad.n / 2; i < bad.n / 2 + 16; i++)
            bad.p[i] ^= 0x5a;
        snprintf(want, sizeof(want), "%s %s data", cd == FY_CODING_BR ? "" : "corrupt", name);
        fy_codec_free(fails(cd, bad.p, bad.n, 4096, 16384, 0, 0, want));
        /* not compressed at all */
        const char *plain = "<html>this is not compressed, whatever the header says</html>";
        fy_codec_free(fails(cd, (const uint8_t *)plain, strlen(plain), 7, 13, 0, 0, name));

        /* truncated: fine until END */
        snprintf(want, sizeof(want), "truncated %s data", name);
        fy_codec_free(fails(cd, z.p, z.n - 3, 4096, 16384, 0, 0, want));
        fy_codec_free(fails(cd, z.p, z.n / 2, 1, 13, 0, 0, want));

        /* trailing data, in the same piece or the next */
        snprintf(want, sizeof(want), "data after the end of the %s stream", name);
        put(&z, "xyz!", 4);
        fy_codec_free(fails(cd, z.p, z.n, 65536, 16384, 0, 0, want));
        fy_codec_free(fails(cd, z.p, z.n, 1, 13, 0, 0, want));

        free(bad.p);
        free(z.p);
    }
    /* gzip: a next member that is not a gzip header after all */
    struct bytes z = encoded(FY_CODING_GZIP, data, 100);
    put(&z, "\x1f\x00\x00\x00", 4);
    fy_codec_free(fails(FY_CODING_GZIP, z.p, z.n, 4096, 100, 0, 0, "corrupt gzip data"));
    free(z.p);
    free(data);
}

/* A body that is empty at END decodes to nothing; one byte of it is a truncated stream. */
Test(errors, empty_body)
{
    for (int cd = 0; cd < FY_CODING_COUNT; cd++) {
        struct fy_codec *dec = fy_decoder_new(cd, 0, 0);
        struct bytes d = {0};
        cr_assert_eq(pump(dec, NULL, 0, 1, 16, FY_CODEC_END, &d), FY_CODEC_DONE);
        cr_assert_eq(d.n, 0);
        fy_codec_free(dec);
    }
    fy_codec_free(fails(FY_CODING_GZIP, (const uint8_t *)"\x1f", 1, 1, 16, 0, 0, "truncated"));
}

Test(errors, input_after_encoder_end)
{
    for (int cd = 0; cd < FY_CODING_COUNT; cd++) {
        struct fy_codec *enc = fy_encoder_new(cd, 1);
        struct bytes z = {0};
        cr_assert_eq(pump(enc, (const uint8_t *)"abc", 3, 3, 100, FY_CODEC_END, &z), FY_CODEC_DONE);
        /* calling again with nothing is still DONE */
        cr_assert_eq(pump(enc, NULL, 0, 1, 100, FY_CODEC_END, &z), FY_CODEC_DONE);
        cr_assert_eq(pump(enc, (const uint8_t *)"d", 1, 1, 100, FY_CODEC_RUN, &z), FY_CODEC_ERROR);
        cr_assert(strstr(fy_codec_error(enc), "input after the end"));
        fy_codec_free(enc);
        free(z.p);
    }
}

Test(limits, max_out)
{
    size_t n = 1000000;
    uint8_t *data = text_data(n);
    for (int cd = 0; cd < FY_CODING_COUNT; cd++) {
        struct bytes z = encoded(cd, data, n);
        struct fy_codec *dec =
            fails(cd, z.p, z.n, 4096, 16384, 100000, 0, "decoded body larger than 100000 bytes");
        cr_assert_eq(fy_codec_total_out(dec), 100001);
        fy_codec_free(dec);
        /* exactly at the limit is fine */
        dec = fy_decoder_new(cd, n, 0);
        struct bytes d = {0};
        cr_assert_eq(pump(dec, z.p, z.n, 4096, 16384, FY_CODEC_END, &d), FY_CODEC_DONE);
        cr_assert_eq(d.n, n);
        fy_codec_free(dec);
        free(d.p);
        free(z.p);
    }
    free(data);
}

/* 100 MB of zeros, compressed by our encoder from a 1 MiB buffer pushed 100 times. */
static struct bytes bomb(enum fy_coding cd)
{
    uint8_t *zeros = calloc(1, 1 << 20);
    struct fy_codec *enc = fy_encoder_new(cd, cd == FY_CODING_ZSTD ? 3 : 1);
    struct bytes z = {0};
    for (int i = 0; i < 100; i++)
        cr_assert_eq(
            pump(enc, zeros, 1 << 20, 1 << 20, 65536, i == 99 ? FY_CODEC_END : FY_CODEC_RUN, &z),
            i == 99 ? FY_CODEC_DONE : FY_CODEC_MORE);
    fy_codec_free(enc);
    free(zeros);
    return z;
}

Test(limits, bombs)
{
    for (int cd = FY_CODING_GZIP; cd < FY_CODING_COUNT; cd++) {
        struct bytes z = bomb(cd);
        cr_assert_lt(z.n, 1000000, "%s bomb is %zu bytes", fy_coding_name(cd), z.n);
        /* the ratio limit stops it just past 1 MiB of output */
        struct fy_codec *dec = fails(cd, z.p, z.n, 4096, 16384, 0, 100, "ratio above 100:1");
        cr_assert_leq(fy_codec_total_out(dec), (1u << 20) + 16384, "%s: %llu", fy_coding_name(cd),
                      (unsigned long long)fy_codec_total_out(dec));
        fy_codec_free(dec);
        /* also when the caller offers a huge output buffer */
        dec = fails(cd, z.p, z.n, z.n, 8u << 20, 0, 100, "ratio above 100:1");
        cr_assert_leq(fy_codec_total_out(dec), (1u << 20) + (64u << 10));
        fy_codec_free(dec);
        /* the size limit stops it at one byte past the limit */
        dec = fails(cd, z.p, z.n, 4096, 1 << 20, 5000000, 0, "larger than 5000000 bytes");
        cr_assert_eq(fy_codec_total_out(dec), 5000001);
        fy_codec_free(dec);
        /* with no limits, it really is 100 MB */
        dec = fy_decoder_new(cd, 0, 0);
        const uint8_t *p = z.p;
        size_t left = z.n;
        uint8_t *buf = malloc(1 << 20);
        enum fy_codec_rc rc;
        do {
            uint8_t *o = buf;
            size_t avail = 1 << 20;
            rc = fy_codec_run(dec, &p, &left, &o, &avail, FY_CODEC_END);
        } while (rc == FY_CODEC_MORE);
        cr_assert_eq(rc, FY_CODEC_DONE);
        cr_assert_eq(fy_codec_total_out(dec), 100u << 20);
        free(buf);
        fy_codec_free(dec);
        free(z.p);
    }
}

/* A ratio limit does not trip on small, very compressible bodies (below 1 MiB decoded). */
Test(limits, ratio_floor)
{
    uint8_t *zeros = calloc(1, 1000000);
    for (int cd = FY_CODING_GZIP; cd < FY_CODING_COUNT; cd++) {
        struct bytes z = encoded(cd, zeros, 1000000);
        struct fy_codec *dec = fy_decoder_new(cd, 0, 2);
        struct bytes d = {0};
        cr_assert_eq(pump(dec, z.p, z.n, 4096, 16384, FY_CODEC_END, &d), FY_CODEC_DONE);
        cr_assert_eq(d.n, 1000000);
        fy_codec_free(dec);
        free(d.p);
        free(z.p);
    }
    free(zeros);
}

/* zstd frames asking for a window above 8 MiB are refused before any allocation. */
Test(limits, zstd_window)
{
    size_t n = 100000;
    uint8_t *data = random_data(n);
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cc, ZSTD_c_windowLog, 27);
    struct bytes z = {0};
    /* no pledged size (the first call is not ZSTD_e_end): the frame declares its 128 MiB
     * window */
    z.cap = ZSTD_compressBound(n) + 64;
    z.p = malloc(z.cap);
    ZSTD_inBuffer ib = {data, n, 0}, none = {NULL, 0, 0};
    ZSTD_outBuffer ob = {z.p, z.cap, 0};
    cr_assert_not(ZSTD_isError(ZSTD_compressStream2(cc, &ob, &ib, ZSTD_e_continue)));
    cr_assert_eq(ib.pos, n);
    size_t r;
    do
        r = ZSTD_compressStream2(cc, &ob, &none, ZSTD_e_end);
    while (r != 0 && !ZSTD_isError(r));
    cr_assert_eq(r, 0);
    z.n = ob.pos;
    struct fy_codec *dec =
        fails(FY_CODING_ZSTD, z.p, z.n, 4096, 16384, 0, 0, "zstd window larger than 8 MiB");
    cr_assert_eq(fy_codec_total_out(dec), 0);
    fy_codec_free(dec);
    free(z.p);
    free(data);
    ZSTD_freeCCtx(cc);
}

/* ---- names ---- */

Test(names, parse_table)
{
    static const struct {
        const char *s;
        int want;
    } t[] = {
        {"gzip", FY_CODING_GZIP},
        {"GZIP", FY_CODING_GZIP},
        {"x-gzip", FY_CODING_GZIP},
        {"X-GZIP", FY_CODING_GZIP},
        {"deflate", FY_CODING_DEFLATE},
        {"Deflate", FY_CODING_DEFLATE},
        {"br", FY_CODING_BR},
        {"BR", FY_CODING_BR},
        {"zstd", FY_CODING_ZSTD},
        {"ZStd", FY_CODING_ZSTD},
        {"identity", FY_CODING_IDENTITY},
        {"IDENTITY", FY_CODING_IDENTITY},
        {"compress", -1},
        {"x-compress", -1},
        {"", -1},
        {"*", -1},
        {"gzip2", -1},
        {"gzi", -1},
        {"b", -1},
        {"brotli", -1},
        {"x-deflate", -1},
        {"gzip ", -1},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        cr_assert_eq(fy_coding_parse(t[i].s, strlen(t[i].s)), t[i].want, "%s", t[i].s);
    /* the length counts, not a NUL */
    cr_assert_eq(fy_coding_parse("brotli", 2), FY_CODING_BR);
    cr_assert_eq(fy_coding_parse("gzip;q=1", 4), FY_CODING_GZIP);
    for (int c = 0; c < FY_CODING_COUNT; c++) {
        const char *name = fy_coding_name(c);
        cr_assert_eq(fy_coding_parse(name, strlen(name)), c);
    }
    cr_assert_str_eq(fy_coding_name(FY_CODING_BR), "br");
    cr_assert_str_eq(fy_coding_name(FY_CODING_COUNT), "?");
}
