/*
 * Streaming content codings over zlib, brotli and zstd; see codec.h.
 *
 * Each library is driven through one "step" (a single library call) with the same shape, and two
 * drivers, one for encoders and one for decoders, turn the caller's op into steps. The encoder
 * driver always feeds input with the library's plain "process" operation first, then runs a flush
 * or finish with no input until the library says it is complete: no library then sees its input
 * change in the middle of a flush, which brotli and zstd forbid. A flush that ran out of output
 * space is completed before any new input is taken, whatever op the next call brings.
 */
#include "filters/codec.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ZLIB_CONST
#include <brotli/decode.h>
#include <brotli/encode.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

/* brotli's encoder window, as a log2: 256 KiB. The default (22, 4 MiB) buys a few percent on
 * large bodies for sixteen times the memory per stream; response bodies a proxy compresses on the
 * fly are mostly far smaller than the window anyway. */
#define BR_LGWIN 18

/* zstd decoder window limit, as a log2: 8 MiB. A frame declares its window and the decoder
 * allocates it, so without a limit a hostile upstream could make each stream allocate up to the
 * format's maximum. RFC 9659 caps the window of the "zstd" content coding at 8 MB, so every
 * conforming encoder stays below this. */
#define ZSTD_DEC_WINDOWLOG_MAX 23

/* A ratio limit only counts once this much was decoded: small bodies of repeated bytes are
 * common and harmless. */
#define RATIO_FLOOR (1u << 20)

/* With a ratio limit, a decoder step writes at most this much, so a bomb decoding into a huge
 * output buffer still stops soon after the ratio is crossed. */
#define RATIO_STEP (64u << 10)

enum step_op { STEP_PROCESS, STEP_FLUSH, STEP_FINISH };

/* The caller's buffers during one fy_codec_run. */
struct io {
    const uint8_t *in;
    size_t in_len;
    uint8_t *out;
    size_t out_avail;
};

struct fy_codec {
    enum fy_coding coding;
    int level; /* an encoder's, as asked for (the idle cache matches on it) */
    bool decoder;
    bool failed;
    bool done;      /* encoder: trailer written; decoder: the stream (or gzip member) ended */
    bool flushing;  /* encoder: a flush ran out of output space and is not complete */
    bool finishing; /* encoder: END started */
    bool clean;     /* encoder: nothing consumed since the last complete flush */
    bool drained;   /* decoder: everything decodable from the input so far is out */
    bool sniffed;   /* deflate decoder: zlib-wrapped or raw is decided */
    uint64_t total_in, total_out;
    uint64_t max_out;
    uint32_t max_ratio;
    union {
        z_stream z;
        BrotliEncoderState *be;
        BrotliDecoderState *bd;
        ZSTD_CCtx *zc;
        ZSTD_DCtx *zd;
    } u;
    /* Encoder output taken into the stream when the caller's space is small (see enc_step). */
    uint8_t stage[64];
    uint8_t stage_off, stage_len;
    char err[96];
};

static const char *const names[FY_CODING_COUNT] = {
    [FY_CODING_IDENTITY] = "identity", [FY_CODING_GZIP] = "gzip",
    [FY_CODING_DEFLATE] = "deflate",   [FY_CODING_BR] = "br",
    [FY_CODING_ZSTD] = "zstd",
};

int fy_coding_parse(const char *name, size_t len)
{
    if (len == 6 && !strncasecmp(name, "x-gzip", 6))
        return FY_CODING_GZIP;
    for (int c = 0; c < FY_CODING_COUNT; c++) {
        if (strlen(names[c]) == len && !strncasecmp(name, names[c], len))
            return c;
    }
    return -1;
}

const char *fy_coding_name(enum fy_coding c)
{
    return (unsigned)c < FY_CODING_COUNT ? names[c] : "?";
}

static enum fy_codec_rc fail(struct fy_codec *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static enum fy_codec_rc fail(struct fy_codec *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
    c->failed = true;
    return FY_CODEC_ERROR;
}

static int clamp(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static uInt zlen(size_t n)
{
    return n > UINT_MAX ? UINT_MAX : (uInt)n;
}

/* ---- creation ---- */

static struct fy_codec *codec_alloc(enum fy_coding coding, bool decoder)
{
    if ((unsigned)coding >= FY_CODING_COUNT)
        return NULL;
    struct fy_codec *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->coding = coding;
    c->decoder = decoder;
    c->clean = true;
    c->drained = true;
    return c;
}

/*
 * Idle encoders, per thread, for the next body. deflateInit2 and ZSTD_createCCtx allocate a few
 * hundred KiB of state each time (which the kernel then zeroes, page by page), a noticeable part
 * of compressing a 100 KB page; a reset keeps the memory and the parameters. brotli's encoder has
 * no reset and is not kept. FY_NO_FREELIST (the sanitizer builds) frees for real, so a stream
 * used after its free is reported. The list is freed when its thread exits.
 */
#define IDLE_ENCODERS 8

struct idle_encoders {
    struct fy_codec *c[IDLE_ENCODERS];
    unsigned n;
};

static pthread_key_t idle_key;
static pthread_once_t idle_once = PTHREAD_ONCE_INIT;

static void codec_destroy(struct fy_codec *c);

static void idle_free(void *p)
{
    struct idle_encoders *l = p;
    for (unsigned i = 0; i < l->n; i++)
        codec_destroy(l->c[i]);
    free(l);
}

static void idle_key_make(void)
{
    pthread_key_create(&idle_key, idle_free);
}

static struct idle_encoders *idle_list(bool create)
{
    pthread_once(&idle_once, idle_key_make);
    struct idle_encoders *l = pthread_getspecific(idle_key);
    if (!l && create && (l = calloc(1, sizeof(*l))) && pthread_setspecific(idle_key, l) != 0) {
        free(l);
        l = NULL;
    }
    return l;
}

static bool reusable(const struct fy_codec *c)
{
#ifdef FY_NO_FREELIST
    (void)c;
    return false;
#else
    return !c->decoder && (c->coding == FY_CODING_GZIP || c->coding == FY_CODING_DEFLATE ||
                           c->coding == FY_CODING_ZSTD);
#endif
}

/* An idle encoder for this coding and level, as good as new; NULL when there is none. */
static struct fy_codec *idle_take(enum fy_coding coding, int level)
{
    struct idle_encoders *l = idle_list(false);
    for (unsigned i = 0; l && i < l->n; i++) {
        struct fy_codec *c = l->c[i];
        if (c->coding != coding || c->level != level)
            continue;
        l->c[i] = l->c[--l->n];
        typeof(c->u) u = c->u;
        memset(c, 0, sizeof(*c));
        c->u = u;
        c->coding = coding;
        c->level = level;
        c->clean = true;
        c->drained = true;
        return c;
    }
    return NULL;
}

/* Keeps an encoder for the next body, reset. Returns false when it is not kept. */
static bool idle_put(struct fy_codec *c)
{
    if (!reusable(c))
        return false;
    struct idle_encoders *l = idle_list(true);
    if (!l || l->n == IDLE_ENCODERS)
        return false;
    if (c->coding == FY_CODING_ZSTD) {
        if (ZSTD_isError(ZSTD_CCtx_reset(c->u.zc, ZSTD_reset_session_only)))
            return false;
    } else if (deflateReset(&c->u.z) != Z_OK) {
        return false;
    }
    l->c[l->n++] = c;
    return true;
}

struct fy_codec *fy_encoder_new(enum fy_coding coding, int level)
{
    struct fy_codec *c = idle_take(coding, level);
    if (c)
        return c;
    c = codec_alloc(coding, false);
    if (!c)
        return NULL;
    switch (coding) {
    case FY_CODING_IDENTITY:
        break;
    case FY_CODING_GZIP:
    case FY_CODING_DEFLATE:
        /* windowBits 15 + 16 writes the gzip wrapper, plain 15 the zlib one (RFC 1950), which is
         * what the "deflate" content coding means. */
        if (deflateInit2(&c->u.z, clamp(level, 1, 9), Z_DEFLATED,
                         coding == FY_CODING_GZIP ? 15 + 16 : 15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            goto fail_codec;
        break;
    case FY_CODING_BR:
        c->u.be = BrotliEncoderCreateInstance(NULL, NULL, NULL);
        if (!c->u.be)
            goto fail_codec;
        if (!BrotliEncoderSetParameter(c->u.be, BROTLI_PARAM_QUALITY,
                                       (uint32_t)clamp(level, 0, 11)) ||
            !BrotliEncoderSetParameter(c->u.be, BROTLI_PARAM_LGWIN, BR_LGWIN) ||
            !BrotliEncoderSetParameter(c->u.be, BROTLI_PARAM_SIZE_HINT, 0))
            goto fail_br;
        break;
    case FY_CODING_ZSTD:
        c->u.zc = ZSTD_createCCtx();
        if (!c->u.zc)
            goto fail_codec;
        /* The checksum (4 bytes a frame) lets the receiving decoder tell a damaged body. */
        if (ZSTD_isError(
                ZSTD_CCtx_setParameter(c->u.zc, ZSTD_c_compressionLevel, clamp(level, 1, 19))) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(c->u.zc, ZSTD_c_checksumFlag, 1)))
            goto fail_zstd;
        break;
    default:
        goto fail_codec;
    }
    c->level = level;
    return c;

fail_zstd:
    ZSTD_freeCCtx(c->u.zc);
    goto fail_codec;
fail_br:
    BrotliEncoderDestroyInstance(c->u.be);
fail_codec:
    free(c);
    return NULL;
}

struct fy_codec *fy_decoder_new(enum fy_coding coding, uint64_t max_out, uint32_t max_ratio)
{
    struct fy_codec *c = codec_alloc(coding, true);
    if (!c)
        return NULL;
    c->max_out = max_out;
    c->max_ratio = max_ratio;
    switch (coding) {
    case FY_CODING_IDENTITY:
        break;
    case FY_CODING_GZIP:
    case FY_CODING_DEFLATE:
        /* deflate starts as zlib-wrapped; the first input byte may switch it to raw (sniff). */
        if (inflateInit2(&c->u.z, coding == FY_CODING_GZIP ? 15 + 16 : 15) != Z_OK)
            goto fail_codec;
        break;
    case FY_CODING_BR:
        c->u.bd = BrotliDecoderCreateInstance(NULL, NULL, NULL);
        if (!c->u.bd)
            goto fail_codec;
        break;
    case FY_CODING_ZSTD:
        c->u.zd = ZSTD_createDCtx();
        if (!c->u.zd)
            goto fail_codec;
        if (ZSTD_isError(
                ZSTD_DCtx_setParameter(c->u.zd, ZSTD_d_windowLogMax, ZSTD_DEC_WINDOWLOG_MAX)))
            goto fail_zstd;
        break;
    default:
        goto fail_codec;
    }
    return c;

fail_zstd:
    ZSTD_freeDCtx(c->u.zd);
fail_codec:
    free(c);
    return NULL;
}

void fy_codec_free(struct fy_codec *c)
{
    if (c && !idle_put(c))
        codec_destroy(c);
}

static void codec_destroy(struct fy_codec *c)
{
    switch (c->coding) {
    case FY_CODING_GZIP:
    case FY_CODING_DEFLATE:
        if (c->decoder)
            inflateEnd(&c->u.z);
        else
            deflateEnd(&c->u.z);
        break;
    case FY_CODING_BR:
        if (c->decoder)
            BrotliDecoderDestroyInstance(c->u.bd);
        else
            BrotliEncoderDestroyInstance(c->u.be);
        break;
    case FY_CODING_ZSTD:
        if (c->decoder)
            ZSTD_freeDCtx(c->u.zd);
        else
            ZSTD_freeCCtx(c->u.zc);
        break;
    default:
        break;
    }
    free(c);
}

const char *fy_codec_error(const struct fy_codec *c)
{
    return c->err;
}

uint64_t fy_codec_total_in(const struct fy_codec *c)
{
    return c->total_in;
}

uint64_t fy_codec_total_out(const struct fy_codec *c)
{
    return c->total_out;
}

/* Moves n bytes of input to consumed and m bytes of output to written. */
static void io_advance(struct io *io, size_t n, size_t m)
{
    /* Only when non-zero: the caller may pass NULL with a zero length, and NULL + 0 is UB. */
    if (n) {
        io->in += n;
        io->in_len -= n;
    }
    if (m) {
        io->out += m;
        io->out_avail -= m;
    }
}

/* ---- encoders ---- */

/*
 * One library call of the encoder on io. Sets *complete when op is FLUSH or FINISH and the
 * library has written everything the op asks for. Returns 0, or -1 with the error set.
 */
static int enc_lib(struct fy_codec *c, struct io *io, enum step_op op, bool *complete)
{
    switch (c->coding) {
    case FY_CODING_IDENTITY: {
        size_t n = io->in_len < io->out_avail ? io->in_len : io->out_avail;
        if (n)
            memcpy(io->out, io->in, n);
        io_advance(io, n, n);
        *complete = io->in_len == 0;
        return 0;
    }
    case FY_CODING_GZIP:
    case FY_CODING_DEFLATE: {
        z_stream *z = &c->u.z;
        z->next_in = io->in;
        z->avail_in = zlen(io->in_len);
        z->next_out = io->out;
        z->avail_out = zlen(io->out_avail);
        uInt in0 = z->avail_in, out0 = z->avail_out;
        int flush = op == STEP_PROCESS ? Z_NO_FLUSH : op == STEP_FLUSH ? Z_SYNC_FLUSH : Z_FINISH;
        int rc = deflate(z, flush);
        io_advance(io, in0 - z->avail_in, out0 - z->avail_out);
        if (rc == Z_STREAM_END) {
            *complete = true;
            return 0;
        }
        /* Z_BUF_ERROR is zlib's "nothing to do": for a flush with no input, it is complete. */
        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            fail(c, "%s encoder failed (zlib error %d)", names[c->coding], rc);
            return -1;
        }
        /* zlib's own rule: a flush is complete when it returns with output space left. */
        *complete = op == STEP_FLUSH && io->in_len == 0 && z->avail_out != 0;
        return 0;
    }
    case FY_CODING_BR: {
        static const BrotliEncoderOperation ops[] = {
            BROTLI_OPERATION_PROCESS, BROTLI_OPERATION_FLUSH, BROTLI_OPERATION_FINISH};
        size_t ai = io->in_len, ao = io->out_avail;
        const uint8_t *ni = io->in;
        uint8_t *no = io->out;
        if (!BrotliEncoderCompressStream(c->u.be, ops[op], &ai, &ni, &ao, &no, NULL)) {
            fail(c, "br encoder failed");
            return -1;
        }
        io_advance(io, io->in_len - ai, io->out_avail - ao);
        if (op == STEP_FLUSH)
            *complete = ai == 0 && !BrotliEncoderHasMoreOutput(c->u.be);
        else if (op == STEP_FINISH)
            *complete = BrotliEncoderIsFinished(c->u.be);
        return 0;
    }
    case FY_CODING_ZSTD: {
        static const ZSTD_EndDirective ops[] = {ZSTD_e_continue, ZSTD_e_flush, ZSTD_e_end};
        ZSTD_inBuffer ib = {io->in, io->in_len, 0};
        ZSTD_outBuffer ob = {io->out, io->out_avail, 0};
        size_t r = ZSTD_compressStream2(c->u.zc, &ob, &ib, ops[op]);
        if (ZSTD_isError(r)) {
            fail(c, "zstd encoder failed: %s", ZSTD_getErrorName(r));
            return -1;
        }
        io_advance(io, ib.pos, ob.pos);
        /* For flush and end, the return value is what is still to be written. */
        *complete = op != STEP_PROCESS && r == 0 && io->in_len == 0;
        return 0;
    }
    default:
        fail(c, "unknown coding");
        return -1;
    }
}

/* Copies staged encoder output to the caller. True while some is left over. */
static bool stage_drain(struct fy_codec *c, struct io *io)
{
    size_t n = (size_t)(c->stage_len - c->stage_off);
    if (n > io->out_avail)
        n = io->out_avail;
    if (n) {
        memcpy(io->out, c->stage + c->stage_off, n);
        io_advance(io, 0, n);
        c->total_out += n;
        c->stage_off = (uint8_t)(c->stage_off + n);
    }
    if (c->stage_off < c->stage_len)
        return true;
    c->stage_off = c->stage_len = 0;
    return false;
}

/*
 * One encoder step. When the caller's space is smaller than the stage, the library writes into
 * the stage instead: zlib, handed a one-byte buffer, can end every call of a flush with that byte
 * filled and start a new empty sync block on the next call, forever. With 64 bytes it cannot (the
 * block is 5 bytes), and no library is called with less. Returns 0 or -1.
 */
static int enc_step(struct fy_codec *c, struct io *io, enum step_op op, bool *complete)
{
    bool staged = io->out_avail < sizeof(c->stage);
    struct io t = *io;
    if (staged) {
        t.out = c->stage;
        t.out_avail = sizeof(c->stage);
    }
    size_t in0 = t.in_len, out0 = t.out_avail;
    if (enc_lib(c, &t, op, complete) < 0)
        return -1;
    size_t used = in0 - t.in_len, made = out0 - t.out_avail;
    if (used == 0 && made == 0 && !*complete) {
        fail(c, "%s encoder made no progress", names[c->coding]);
        return -1;
    }
    if (used)
        c->clean = false;
    c->total_in += used;
    io_advance(io, used, 0);
    if (staged) {
        c->stage_len = (uint8_t)made;
    } else {
        io_advance(io, 0, made);
        c->total_out += made;
    }
    return 0;
}

static enum fy_codec_rc encode(struct fy_codec *c, struct io *io, enum fy_codec_op op)
{
    for (;;) {
        if (stage_drain(c, io))
            return FY_CODEC_MORE;
        if (c->done) {
            if (io->in_len)
                return fail(c, "input after the end of the %s stream", names[c->coding]);
            return FY_CODEC_DONE;
        }
        if (c->finishing && io->in_len)
            return fail(c, "input after the end of the %s stream", names[c->coding]);
        enum step_op s;
        if (c->flushing)
            s = STEP_FLUSH; /* complete it before taking new input */
        else if (io->in_len)
            s = STEP_PROCESS;
        else if (op == FY_CODEC_RUN)
            return FY_CODEC_MORE;
        else if (op == FY_CODEC_FLUSH && c->clean)
            return FY_CODEC_FLUSHED;
        else
            s = op == FY_CODEC_END ? STEP_FINISH : STEP_FLUSH;
        if (io->out_avail == 0)
            return FY_CODEC_MORE;
        bool complete = false;
        if (enc_step(c, io, s, &complete) < 0)
            return FY_CODEC_ERROR;
        if (s == STEP_FLUSH) {
            c->flushing = !complete;
            c->clean = complete;
        } else if (s == STEP_FINISH) {
            c->finishing = true;
            c->done = complete;
        }
    }
}

/* ---- decoders ---- */

/* Whether the first bytes of a deflate body are a zlib header (RFC 1950 2.2): method 8, a window
 * of at most 32 KiB, and the check bits. With one byte only, method and window decide: a raw
 * deflate stream starting like that would be a stored block with non-zero padding bits, which no
 * encoder writes. */
static bool looks_zlib(const uint8_t *p, size_t n)
{
    if ((p[0] & 0x0f) != 8 || (p[0] >> 4) > 7)
        return false;
    return n < 2 || ((unsigned)p[0] << 8 | p[1]) % 31 == 0;
}

/*
 * One library call of the decoder on io. Sets c->done when the stream ends and c->drained when
 * all output the input so far gives is out. Returns 0, or -1 with the error set.
 */
static int dec_lib(struct fy_codec *c, struct io *io)
{
    const char *name = names[c->coding];
    switch (c->coding) {
    case FY_CODING_IDENTITY: {
        size_t n = io->in_len < io->out_avail ? io->in_len : io->out_avail;
        if (n)
            memcpy(io->out, io->in, n);
        io_advance(io, n, n);
        c->drained = true;
        return 0;
    }
    case FY_CODING_GZIP:
    case FY_CODING_DEFLATE: {
        z_stream *z = &c->u.z;
        if (c->coding == FY_CODING_DEFLATE && !c->sniffed && io->in_len) {
            c->sniffed = true;
            if (!looks_zlib(io->in, io->in_len) && inflateReset2(z, -15) != Z_OK) {
                fail(c, "deflate decoder failed");
                return -1;
            }
        }
        z->next_in = io->in;
        z->avail_in = zlen(io->in_len);
        z->next_out = io->out;
        z->avail_out = zlen(io->out_avail);
        uInt in0 = z->avail_in, out0 = z->avail_out;
        int rc = inflate(z, Z_NO_FLUSH);
        io_advance(io, in0 - z->avail_in, out0 - z->avail_out);
        switch (rc) {
        case Z_STREAM_END:
            c->done = true;
            c->drained = true;
            return 0;
        case Z_OK:
        case Z_BUF_ERROR:
            /* inflate goes as far as it can: space left over means nothing is pending. */
            c->drained = z->avail_out != 0;
            return 0;
        case Z_MEM_ERROR:
            fail(c, "%s decoder out of memory", name);
            return -1;
        case Z_NEED_DICT:
            fail(c, "corrupt %s data: a preset dictionary is required", name);
            return -1;
        default:
            if (z->msg)
                fail(c, "corrupt %s data: %s", name, z->msg);
            else
                fail(c, "corrupt %s data", name);
            return -1;
        }
    }
    case FY_CODING_BR: {
        size_t ai = io->in_len, ao = io->out_avail;
        const uint8_t *ni = io->in;
        uint8_t *no = io->out;
        BrotliDecoderResult r = BrotliDecoderDecompressStream(c->u.bd, &ai, &ni, &ao, &no, NULL);
        io_advance(io, io->in_len - ai, io->out_avail - ao);
        switch (r) {
        case BROTLI_DECODER_RESULT_SUCCESS:
            c->done = true;
            c->drained = true;
            return 0;
        case BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT:
        case BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT:
            c->drained = !BrotliDecoderHasMoreOutput(c->u.bd) && ao != 0;
            return 0;
        default: {
            BrotliDecoderErrorCode e = BrotliDecoderGetErrorCode(c->u.bd);
            if (e <= BROTLI_DECODER_ERROR_ALLOC_CONTEXT_MODES &&
                e >= BROTLI_DECODER_ERROR_ALLOC_BLOCK_TYPE_TREES)
                fail(c, "br decoder out of memory");
            else
                fail(c, "corrupt br data: %s", BrotliDecoderErrorString(e));
            return -1;
        }
        }
    }
    case FY_CODING_ZSTD: {
        ZSTD_inBuffer ib = {io->in, io->in_len, 0};
        ZSTD_outBuffer ob = {io->out, io->out_avail, 0};
        size_t r = ZSTD_decompressStream(c->u.zd, &ob, &ib);
        io_advance(io, ib.pos, ob.pos);
        if (ZSTD_isError(r)) {
            ZSTD_ErrorCode e = ZSTD_getErrorCode(r);
            if (e == ZSTD_error_frameParameter_windowTooLarge)
                fail(c, "zstd window larger than %u MiB", 1u << (ZSTD_DEC_WINDOWLOG_MAX - 20));
            else if (e == ZSTD_error_prefix_unknown && c->total_in)
                fail(c, "data after the end of the zstd stream");
            else if (e == ZSTD_error_memory_allocation)
                fail(c, "zstd decoder out of memory");
            else
                fail(c, "corrupt zstd data: %s", ZSTD_getErrorName(r));
            return -1;
        }
        /* 0: a frame is complete and all of it is out. Otherwise, a full output buffer means
         * the decoder may hold more. */
        c->done = r == 0;
        c->drained = r == 0 || ob.pos < ob.size;
        return 0;
    }
    default:
        fail(c, "unknown coding");
        return -1;
    }
}

/* Whether out > ratio * in, without overflow. */
static bool ratio_above(uint64_t out, uint64_t in, uint32_t ratio)
{
    if (in > UINT64_MAX / ratio)
        return false;
    return out > in * ratio;
}

/* One decoder step: the library call within the limits, then the limit checks. Returns 0 or -1. */
static int dec_step(struct fy_codec *c, struct io *io)
{
    struct io t = *io;
    /* Never give the library room for more than one byte past max_out: crossing it by one byte
     * is how we learn the body is too large, and producing more would be wasted work. */
    if (c->max_out && t.out_avail > c->max_out - c->total_out + 1)
        t.out_avail = (size_t)(c->max_out - c->total_out + 1);
    if (c->max_ratio && t.out_avail > RATIO_STEP)
        t.out_avail = RATIO_STEP;
    size_t in0 = t.in_len, out0 = t.out_avail;
    bool was_done = c->done;
    if (dec_lib(c, &t) < 0)
        return -1;
    size_t used = in0 - t.in_len, made = out0 - t.out_avail;
    io_advance(io, used, made);
    c->total_in += used;
    c->total_out += made;
    if (used == 0 && made == 0 && c->done == was_done) {
        /* A library that takes nothing and gives nothing while it has both would be called
         * again with the same buffers: fail rather than spin. */
        if (io->in_len && io->out_avail) {
            fail(c, "%s decoder made no progress", names[c->coding]);
            return -1;
        }
        c->drained = true;
    }
    if (c->max_out && c->total_out > c->max_out) {
        fail(c, "decoded body larger than %llu bytes", (unsigned long long)c->max_out);
        return -1;
    }
    if (c->max_ratio && c->total_out > RATIO_FLOOR &&
        ratio_above(c->total_out, c->total_in, c->max_ratio)) {
        fail(c, "compression ratio above %u:1", (unsigned)c->max_ratio);
        return -1;
    }
    return 0;
}

static enum fy_codec_rc decode(struct fy_codec *c, struct io *io, enum fy_codec_op op)
{
    for (;;) {
        if (c->done) {
            if (io->in_len == 0)
                return FY_CODEC_DONE;
            /* Another gzip member (RFC 1952 2.2) or zstd frame (RFC 8878 3.1) may follow. A
             * zstd decoder starts the next frame by itself and tells a bad magic number. */
            if (c->coding == FY_CODING_GZIP && io->in[0] == 0x1f) {
                if (inflateReset(&c->u.z) != Z_OK)
                    return fail(c, "gzip decoder failed");
            } else if (c->coding != FY_CODING_ZSTD) {
                return fail(c, "data after the end of the %s stream", names[c->coding]);
            }
            c->done = false;
        }
        if (io->in_len == 0 && c->drained) {
            if (op == FY_CODEC_RUN)
                return FY_CODEC_MORE;
            if (op == FY_CODEC_FLUSH)
                return FY_CODEC_FLUSHED;
            if (c->coding == FY_CODING_IDENTITY || c->total_in == 0) {
                c->done = true;
                return FY_CODEC_DONE;
            }
            return fail(c, "truncated %s data", names[c->coding]);
        }
        if (io->out_avail == 0)
            return FY_CODEC_MORE;
        if (dec_step(c, io) < 0)
            return FY_CODEC_ERROR;
    }
}

enum fy_codec_rc fy_codec_run(struct fy_codec *c, const uint8_t **in, size_t *in_len, uint8_t **out,
                              size_t *out_avail, enum fy_codec_op op)
{
    if (c->failed)
        return FY_CODEC_ERROR;
    struct io io = {*in, *in_len, *out, *out_avail};
    enum fy_codec_rc rc = c->decoder ? decode(c, &io, op) : encode(c, &io, op);
    *in = io.in;
    *in_len = io.in_len;
    *out = io.out;
    *out_avail = io.out_avail;
    return rc;
}
