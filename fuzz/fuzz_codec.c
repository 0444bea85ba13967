/*
 * libFuzzer target: the content-coding decoders (filters/codec.c), which a script's body filter
 * runs on bodies from upstreams ferry does not control, and Accept-Encoding negotiation
 * (filters/accept_encoding.c), which runs on every request to a compressing route. The first
 * bytes choose the coding, the limit and how the input and output are cut. Invariants checked,
 * beyond the sanitizers': a decoder never produces more than its limit plus one byte; it always
 * makes progress or stops (no call returns MORE having taken and written nothing while it had
 * input and room); ERROR is final; a round trip through our encoder and decoder returns the
 * input; negotiation only ever picks an enabled coding or identity.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filters/accept_encoding.h"
#include "filters/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const enum fy_coding codings[] = {FY_CODING_GZIP, FY_CODING_DEFLATE, FY_CODING_BR,
                                         FY_CODING_ZSTD, FY_CODING_IDENTITY};

/* Decodes in[0, n) in pieces of `piece` bytes into buffers of `room` bytes. Returns the bytes
 * produced (the output itself is kept in out, up to cap). */
static size_t decode(enum fy_coding c, const uint8_t *in, size_t n, size_t piece, size_t room,
                     uint64_t max_out, uint8_t *out, size_t cap)
{
    struct fy_codec *d = fy_decoder_new(c, max_out, 100);
    if (!d)
        return 0;
    uint8_t buf[4096];
    size_t total = 0, off = 0;
    enum fy_codec_rc rc;
    for (;;) {
        size_t k = n - off < piece ? n - off : piece;
        bool end = off + k == n;
        const uint8_t *p = in + off;
        size_t len = k;
        uint8_t *o = buf;
        size_t avail = room;
        rc = fy_codec_run(d, &p, &len, &o, &avail, end ? FY_CODEC_END : FY_CODEC_RUN);
        size_t made = (size_t)(o - buf), took = k - len;
        if (rc == FY_CODEC_MORE && !made && !took && avail == room && (k || end))
            abort(); /* no progress with input (or the end) and room */
        if (total < cap) {
            size_t m = made < cap - total ? made : cap - total;
            memcpy(out + total, buf, m);
        }
        total += made;
        if (max_out && total > max_out + 1)
            abort(); /* ran past its limit */
        off += took;
        if (rc == FY_CODEC_ERROR || (rc == FY_CODEC_DONE && off == n))
            break;
    }
    if (rc == FY_CODEC_ERROR) {
        const uint8_t *p = in;
        size_t len = n ? 1 : 0;
        uint8_t *o = buf;
        size_t avail = sizeof(buf);
        if (fy_codec_run(d, &p, &len, &o, &avail, FY_CODEC_RUN) != FY_CODEC_ERROR)
            abort(); /* ERROR is final */
    }
    fy_codec_free(d);
    return total;
}

static void round_trip(enum fy_coding c, const uint8_t *in, size_t n, size_t piece)
{
    struct fy_codec *e = fy_encoder_new(c, 1);
    if (!e)
        return;
    /* Output can outgrow the input: brotli at its lowest qualities emits a small meta-block for
     * every call, so 1-byte pieces cost several bytes each. The buffer grows as needed. */
    size_t cap = n * 2 + 1024, len_out = 0;
    uint8_t *enc = malloc(cap);
    size_t off = 0;
    enum fy_codec_rc rc;
    do {
        if (cap - len_out < 64) {
            cap *= 2;
            enc = realloc(enc, cap);
        }
        size_t k = n - off < piece ? n - off : piece;
        const uint8_t *p = in + off;
        size_t len = k;
        uint8_t *o = enc + len_out;
        size_t avail = cap - len_out;
        rc = fy_codec_run(e, &p, &len, &o, &avail, off + k == n ? FY_CODEC_END : FY_CODEC_RUN);
        len_out = (size_t)(o - enc);
        off += k - len;
        if (rc == FY_CODEC_ERROR)
            abort(); /* our own encoder fails on no input */
    } while (rc != FY_CODEC_DONE);
    fy_codec_free(e);
    uint8_t *dec = malloc(n + 1);
    size_t got = decode(c, enc, len_out, piece, 4096, 0, dec, n + 1);
    if (got != n || memcmp(dec, in, n) != 0)
        abort();
    free(dec);
    free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    enum fy_coding c = codings[data[0] % 5];
    size_t piece = 1 + data[1] % 64 * 67;
    size_t room = 1 + data[2] % 16 * 256;
    const uint8_t *in = data + 3;
    size_t n = size - 3;

    uint8_t out[1024];
    decode(c, in, n, piece, room, 64 * 1024, out, sizeof(out));
    if (n <= 64 * 1024)
        round_trip(c, in, n, piece);

    struct fy_accept_enc ae;
    fy_ae_init(&ae);
    fy_ae_add(&ae, (const char *)in, n < 4096 ? n : 4096);
    unsigned enabled = data[1] & 0x1e; /* some of gzip, deflate, br, zstd */
    uint8_t prefer[] = {FY_CODING_ZSTD, FY_CODING_BR, FY_CODING_GZIP};
    enum fy_coding pick = fy_ae_pick(&ae, enabled, prefer, 3);
    if (pick != FY_CODING_IDENTITY && !(enabled & (1u << pick)))
        abort();
    return 0;
}
