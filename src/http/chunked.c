/* Chunked transfer coding decoder; see chunked.h. */
#include "http/chunked.h"

#include "http/tokens.h"

#include <stdbool.h>

/* Field and extension text: visible ASCII, obs-text, SP and HTAB. */
static bool is_text(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static size_t chunk_error(struct fy_chunked *c, const char *why, size_t at)
{
    c->state = FY_CH_ERROR;
    c->error = why;
    return at;
}

size_t fy_chunked_decode(struct fy_chunked *c, const char *p, size_t n, struct iovec *spans,
                         int *nspans, int max)
{
    size_t i = 0;
    while (i < n) {
        unsigned char ch = (unsigned char)p[i];
        switch (c->state) {
        case FY_CH_SIZE:
        case FY_CH_SIZE_MORE: {
            int v = fy_hex_value(ch);
            if (v >= 0) {
                /* Sizes of 2^63 or more are refused before the shift could overflow. */
                if (c->remaining >> 59)
                    return chunk_error(c, "chunk size too large", i);
                c->remaining = (c->remaining << 4) | (uint64_t)v;
                c->state = FY_CH_SIZE_MORE;
            } else if (c->state == FY_CH_SIZE) {
                return chunk_error(c, "invalid chunk size", i);
            } else if (ch == '\r') {
                c->state = FY_CH_SIZE_LF;
            } else if (ch == ';') {
                c->state = FY_CH_EXT;
            } else if (ch == ' ' || ch == '\t') {
                c->state = FY_CH_SIZE_WS;
            } else {
                return chunk_error(c, "invalid chunk size", i);
            }
            break;
        }
        case FY_CH_SIZE_WS:
            if (ch == ';')
                c->state = FY_CH_EXT;
            else if (ch != ' ' && ch != '\t')
                return chunk_error(c, "invalid chunk size line", i);
            break;
        case FY_CH_EXT:
            if (ch == '\r')
                c->state = FY_CH_SIZE_LF;
            else if (!is_text(ch))
                return chunk_error(c, "invalid chunk extension", i);
            break;
        case FY_CH_SIZE_LF:
            if (ch != '\n')
                return chunk_error(c, "chunk size line not ended by CRLF", i);
            c->line_len = 0;
            c->state = c->remaining ? FY_CH_DATA : FY_CH_TRAILER;
            i++;
            continue;
        case FY_CH_DATA: {
            if (*nspans == max)
                return i;
            size_t take = n - i;
            if (take > c->remaining)
                take = (size_t)c->remaining;
            spans[*nspans].iov_base = (void *)(p + i);
            spans[*nspans].iov_len = take;
            (*nspans)++;
            c->remaining -= take;
            i += take;
            if (c->remaining == 0)
                c->state = FY_CH_DATA_CR;
            continue;
        }
        case FY_CH_DATA_CR:
            if (ch != '\r')
                return chunk_error(c, "chunk data not followed by CRLF", i);
            c->state = FY_CH_DATA_LF;
            break;
        case FY_CH_DATA_LF:
            if (ch != '\n')
                return chunk_error(c, "chunk data not followed by CRLF", i);
            c->state = FY_CH_SIZE;
            c->line_len = 0;
            i++;
            continue;
        case FY_CH_TRAILER:
            if (ch == '\r') {
                c->state = FY_CH_LAST_LF;
            } else if (fy_is_tchar(ch)) {
                c->state = FY_CH_TRAILER_NAME;
            } else {
                return chunk_error(c, "invalid trailer field", i);
            }
            break;
        case FY_CH_TRAILER_NAME:
            if (ch == ':')
                c->state = FY_CH_TRAILER_VALUE;
            else if (!fy_is_tchar(ch))
                return chunk_error(c, "invalid trailer field name", i);
            break;
        case FY_CH_TRAILER_VALUE:
            if (ch == '\r')
                c->state = FY_CH_TRAILER_LF;
            else if (!is_text(ch))
                return chunk_error(c, "invalid trailer field value", i);
            break;
        case FY_CH_TRAILER_LF:
            if (ch != '\n')
                return chunk_error(c, "trailer line not ended by CRLF", i);
            c->state = FY_CH_TRAILER;
            c->line_len = 0;
            i++;
            continue;
        case FY_CH_LAST_LF:
            if (ch != '\n')
                return chunk_error(c, "chunked body not ended by CRLF", i);
            c->state = FY_CH_DONE;
            return i + 1;
        case FY_CH_DONE:
        case FY_CH_ERROR:
            return i;
        }
        /* Only line bytes reach here: bound every line and the trailer section. */
        if (++c->line_len > FY_CHUNKED_MAX_LINE)
            return chunk_error(c, "chunk line too long", i);
        if (c->state >= FY_CH_TRAILER && c->state <= FY_CH_LAST_LF &&
            ++c->trailer_len > FY_CHUNKED_MAX_TRAILERS)
            return chunk_error(c, "trailer section too large", i);
        i++;
    }
    return i;
}
