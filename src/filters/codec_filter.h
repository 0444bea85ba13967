/*
 * A content coding as a body filter (proxy/body_filter.h): an encoder that compresses the body
 * for the client, or a decoder that gives a later filter (a script) the plain body. Both stream:
 * they hold no more than the codec's own state and one output buffer.
 */
#ifndef FY_CODEC_FILTER_H
#define FY_CODEC_FILTER_H

#include <stdint.h>

#include "filters/codec.h"
#include "proxy/body_filter.h"

/* An encoder for coding c at `level`; NULL when out of memory. Add it with fy_bf_chain_add. */
struct fy_bfilter *fy_encode_filter_new(enum fy_coding c, int level);

/* A decoder for coding c with the decoder's limits (filters/codec.h): crossing one fails the
 * body, with the reason in the chain's err. NULL when out of memory. */
struct fy_bfilter *fy_decode_filter_new(enum fy_coding c, uint64_t max_out, uint32_t max_ratio);

#endif
