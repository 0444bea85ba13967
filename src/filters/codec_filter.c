/* See codec_filter.h. */
#include "filters/codec_filter.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/assert.h"

struct codec_filter {
    struct fy_bfilter f; /* first: the chain's view */
    struct fy_codec *codec;
    char name[24];    /* "gzip encoder" */
    bool op_complete; /* the codec finished the flush or end asked for: pass the flag on */
    bool stream_done; /* the codec's stream is over (encoder: trailer written; decoder: the
                       * compressed stream ended) */
};

static int codec_push(struct fy_bfilter *f, const uint8_t **in, size_t *len, unsigned flags)
{
    struct codec_filter *cf = (struct codec_filter *)f;
    for (;;) {
        /* What was made goes first: nothing more is made while the next stage holds back. Once
         * the codec completed the flag's work and the input is used up, the flag goes along. */
        bool complete = cf->op_complete && *len == 0;
        if (f->out_end > f->out_start || complete) {
            int rc = fy_bf_pass(f, complete ? flags : 0);
            if (rc != 0)
                return rc;
            if (complete) {
                cf->op_complete = false;
                return 0;
            }
        }
        if (*len == 0 && !flags)
            return 0;
        if (cf->stream_done) {
            if (*len)
                return fy_bf_fail(f, "data after the end of the compressed body");
            cf->op_complete = true;
            continue;
        }
        enum fy_codec_op op = flags & FY_BF_END     ? FY_CODEC_END
                              : flags & FY_BF_FLUSH ? FY_CODEC_FLUSH
                                                    : FY_CODEC_RUN;
        size_t avail;
        uint8_t *out = fy_bf_space(f, &avail);
        uint8_t *start = out;
        FY_ASSERT(avail > 0); /* the buffer was passed on above */
        enum fy_codec_rc rc = fy_codec_run(cf->codec, in, len, &out, &avail, op);
        fy_bf_produced(f, (size_t)(out - start));
        switch (rc) {
        case FY_CODEC_ERROR:
            return fy_bf_fail(f, "%s", fy_codec_error(cf->codec));
        case FY_CODEC_DONE:
            cf->stream_done = true;
            cf->op_complete = *len == 0;
            if (*len)
                return fy_bf_fail(f, "data after the end of the compressed body");
            break;
        case FY_CODEC_FLUSHED:
            if (op != FY_CODEC_RUN)
                cf->op_complete = op == FY_CODEC_FLUSH;
            break;
        case FY_CODEC_MORE:
            break;
        }
        /* A codec that made no progress with room and input left would loop forever. */
        if (rc == FY_CODEC_MORE && out == start && avail && (*len || op != FY_CODEC_RUN))
            return fy_bf_fail(f, "the codec made no progress");
    }
}

static void codec_destroy(struct fy_bfilter *f)
{
    fy_codec_free(((struct codec_filter *)f)->codec);
}

static struct fy_bfilter *wrap(struct fy_codec *codec, enum fy_coding c, const char *what,
                               const struct fy_bf_ops *ops)
{
    struct codec_filter *cf = calloc(1, sizeof(*cf));
    if (!codec || !cf) {
        fy_codec_free(codec);
        free(cf);
        return NULL;
    }
    cf->codec = codec;
    snprintf(cf->name, sizeof(cf->name), "%s %s", fy_coding_name(c), what);
    cf->f.ops = ops;
    cf->f.name = cf->name;
    return &cf->f;
}

static const struct fy_bf_ops encoder_ops = {"encoder", codec_push, codec_destroy};
static const struct fy_bf_ops decoder_ops = {"decoder", codec_push, codec_destroy};

struct fy_bfilter *fy_encode_filter_new(enum fy_coding c, int level)
{
    return wrap(fy_encoder_new(c, level), c, "encoder", &encoder_ops);
}

struct fy_bfilter *fy_decode_filter_new(enum fy_coding c, uint64_t max_out, uint32_t max_ratio)
{
    return wrap(fy_decoder_new(c, max_out, max_ratio), c, "decoder", &decoder_ops);
}
