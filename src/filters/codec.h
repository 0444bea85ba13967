/*
 * Streaming content codings (RFC 9110 8.4.1): one encoder or decoder stream per body, for gzip
 * (RFC 1952), deflate (the zlib format, RFC 1950), br (RFC 7932) and zstd (RFC 8878), plus
 * identity as a plain copy. The proxy pushes a body through in pieces as it arrives and pulls the
 * output into whatever space it has; nothing here knows about sockets, messages or sessions.
 *
 * Ownership: a stream owns its library state and nothing else. fy_codec_run reads the caller's
 * input and writes the caller's output only during the call: no pointer to either is kept after it
 * returns, so the caller may move, reuse or free its buffers between calls. Output the library has
 * ready but the caller had no room for stays inside the stream until the next call.
 *
 * Limits: a decoder is handed bytes from an upstream we do not control, and a few kilobytes of
 * deflate can expand to gigabytes. fy_decoder_new takes a bound on the decoded size and on the
 * expansion ratio; a decoder stops with an error as soon as either is crossed, so a "zip bomb"
 * costs one output buffer of work, not its full expansion. Decoder memory is bounded too: zlib's
 * window is 32 KiB; zstd frames asking for a window above 8 MiB are refused (RFC 9659 caps the
 * "zstd" content coding's window at 8 MB); brotli's window is what the stream declares, at most 16
 * MiB (large windows are off). Encoders use bounded windows: brotli 256 KiB (lgwin 18), zstd the
 * level's own (8 MiB at most for levels up to 19), zlib 32 KiB.
 */
#ifndef FY_CODEC_H
#define FY_CODEC_H

#include <stddef.h>
#include <stdint.h>

enum fy_coding {
    FY_CODING_IDENTITY,
    FY_CODING_GZIP,
    FY_CODING_DEFLATE,
    FY_CODING_BR,
    FY_CODING_ZSTD,
    FY_CODING_COUNT
};

/* The coding a Content-Encoding / Accept-Encoding token names (case-insensitive; "x-gzip" is
 * gzip), or -1. name need not be NUL-terminated. "*" is not a coding here (-1). */
int fy_coding_parse(const char *name, size_t len);

/* "identity", "gzip", "deflate", "br" or "zstd" (a static string); "?" for a value out of range. */
const char *fy_coding_name(enum fy_coding c);

/* Opaque: one encoder or decoder stream. */
struct fy_codec;

/* An encoder. level: gzip/deflate 1-9, br 0-11, zstd 1-19, clamped into that range (identity
 * ignores it). Returns NULL when out of memory or for a coding out of range. */
struct fy_codec *fy_encoder_new(enum fy_coding c, int level);

/* A decoder. max_out: the run fails once more than this many bytes were produced (0 = no limit).
 * max_ratio: the run fails once output > max_ratio * input consumed AND output > 1 MiB (0 = no
 * ratio limit). Either way the decoder stops as soon as the limit is crossed: it never produces
 * more than max_out + 1 bytes, nor more than one output buffer past the ratio limit. Returns NULL
 * when out of memory or for a coding out of range. */
struct fy_codec *fy_decoder_new(enum fy_coding c, uint64_t max_out, uint32_t max_ratio);

enum fy_codec_op { FY_CODEC_RUN, FY_CODEC_FLUSH, FY_CODEC_END };
enum fy_codec_rc { FY_CODEC_MORE, FY_CODEC_FLUSHED, FY_CODEC_DONE, FY_CODEC_ERROR };

/*
 * Consumes input from *in (advancing *in, decreasing *in_len) and writes output at *out (advancing
 * *out, decreasing *out_avail). *in may be NULL when *in_len is 0, *out when *out_avail is 0.
 *  RUN:   take as much input as fits; returns MORE (call again with more input, or with more
 *         output space when *out_avail hit 0).
 *  FLUSH: all input so far must come out (zlib Z_SYNC_FLUSH, BROTLI_OPERATION_FLUSH,
 *         ZSTD_e_flush) so a paused stream (server-sent events) reaches the client; returns
 *         FLUSHED once every byte is out, MORE if output space ran out first (call again with
 *         FLUSH and more space). A FLUSH with no input since the last FLUSHED adds no bytes.
 *  END:   no input after this; returns DONE once the trailer is written (encoder), MORE if output
 *         space ran out. Input given after END started is an ERROR.
 * Decoders: RUN/FLUSH decode what is there (FLUSHED when all input is consumed and no output is
 * pending); DONE as soon as the compressed stream ends (even with op RUN). Input after the end of
 * the stream, a corrupt stream, a stream truncated at END, or a crossed limit returns ERROR. Two
 * exceptions, both allowed by the formats: gzip may continue with another member and zstd with
 * another frame after DONE (the next call takes it). A body that is empty at END (no input ever)
 * decodes to an empty body, as browsers do.
 * ERROR is final (every later call returns it); fy_codec_error() says why.
 */
enum fy_codec_rc fy_codec_run(struct fy_codec *c, const uint8_t **in, size_t *in_len, uint8_t **out,
                              size_t *out_avail, enum fy_codec_op op);

/* Why the stream failed, in words ("corrupt gzip data: invalid distance too far back", "decoded
 * body larger than 1000 bytes", "compression ratio above 100:1", ...); "" while it has not. Valid
 * until fy_codec_free. */
const char *fy_codec_error(const struct fy_codec *c);

/* Bytes consumed from the caller's input and written to the caller's output so far. */
uint64_t fy_codec_total_in(const struct fy_codec *c);
uint64_t fy_codec_total_out(const struct fy_codec *c);

/* Releases the stream and its library state. NULL is fine. */
void fy_codec_free(struct fy_codec *c);

#endif
