/*
 * Strict decoder for the chunked transfer coding (RFC 9112 7.1). ferry decodes chunked bodies
 * itself rather than through llhttp so that every framing decision is explicit: hex sizes without
 * signs, prefixes or overflow, CRLF exactly where required, bounded extensions and trailers.
 * Decoded data is returned as spans into the input; nothing is copied.
 */
#ifndef FY_CHUNKED_H
#define FY_CHUNKED_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

enum fy_chunked_state {
    FY_CH_SIZE,      /* first hex digit of a chunk size */
    FY_CH_SIZE_MORE, /* more hex digits, or what follows them */
    FY_CH_SIZE_WS,   /* whitespace after the size: only ";" may follow */
    FY_CH_EXT,       /* chunk extension, up to CR */
    FY_CH_SIZE_LF,
    FY_CH_DATA,
    FY_CH_DATA_CR,
    FY_CH_DATA_LF,
    FY_CH_TRAILER, /* start of a trailer line or the final CRLF */
    FY_CH_TRAILER_NAME,
    FY_CH_TRAILER_VALUE,
    FY_CH_TRAILER_LF,
    FY_CH_LAST_LF,
    FY_CH_DONE,
    FY_CH_ERROR,
};

struct fy_chunked {
    enum fy_chunked_state state;
    uint64_t remaining;   /* bytes left in the current chunk */
    uint32_t line_len;    /* bytes of the current size or trailer line */
    uint32_t trailer_len; /* bytes of trailer section so far */
    const char *error;
};

#define FY_CHUNKED_MAX_LINE 4096
#define FY_CHUNKED_MAX_TRAILERS 16384

static inline void fy_chunked_init(struct fy_chunked *c)
{
    c->state = FY_CH_SIZE;
    c->remaining = 0;
    c->line_len = c->trailer_len = 0;
    c->error = NULL;
}

/* Decodes p[0, n). Appends data spans to spans[*nspans..max) and returns the bytes consumed; it
 * stops early when the spans are full or the body ends (state FY_CH_DONE). On malformed input the
 * state becomes FY_CH_ERROR with `error` set. */
size_t fy_chunked_decode(struct fy_chunked *c, const char *p, size_t n, struct iovec *spans,
                         int *nspans, int max);

#endif
