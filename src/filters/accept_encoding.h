/*
 * Content negotiation on Accept-Encoding (RFC 9110 12.5.3): which content coding, if any, a
 * response should be sent with. Pure: the caller feeds the request's Accept-Encoding field values
 * one by one, then asks which of the codings it is willing to produce the client prefers.
 *
 * A struct fy_accept_enc is plain data (no allocation, nothing to free), filled by fy_ae_init and
 * fy_ae_add and only read by fy_ae_pick. Parsing never fails: an element that does not follow the
 * grammar (coding [ OWS ";" OWS "q=" qvalue ], names case-insensitive) is skipped and the rest of
 * the field still counts, so junk from a client costs it its own preference, nothing more.
 */
#ifndef FY_ACCEPT_ENCODING_H
#define FY_ACCEPT_ENCODING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filters/codec.h"

/* Fields are private to accept_encoding.c (read them in tests only). */
struct fy_accept_enc {
    uint16_t q[FY_CODING_COUNT]; /* q-value in thousandths (0-1000) where listed */
    uint16_t star_q;             /* the q of "*", where star */
    uint8_t listed;              /* bit 1u << coding: the coding had a valid element */
    bool star;                   /* "*" had a valid element */
    bool present;                /* fy_ae_add was called at least once */
};

/* An empty negotiation: as if the request had no Accept-Encoding field. */
void fy_ae_init(struct fy_accept_enc *ae);

/* Adds one Accept-Encoding field value of len bytes (not NUL-terminated; a request may carry
 * several fields, add each). Elements are comma-separated, empty ones allowed; "x-gzip" is gzip;
 * q=0 means "not acceptable". An element with an unknown coding, a parameter other than q or an
 * invalid qvalue (q=2, q=0.1234, q=abc) is ignored. When a coding is listed twice, the first
 * valid element counts. An empty value (present but nothing listed) asks for no coding. */
void fy_ae_add(struct fy_accept_enc *ae, const char *value, size_t len);

/*
 * The coding to use among `enabled` (bitmask of 1u << enum fy_coding), or FY_CODING_IDENTITY.
 * Highest q wins. A coding not listed gets the "*" q if "*" was listed, else is not acceptable;
 * q=0 means not acceptable. Ties are broken by `prefer` (codings in server preference order, n
 * entries; codings not in prefer rank after those in it, in enum order). identity competes only
 * with the q the client gave it ("identity;q=1, gzip;q=0.5": identity) or "*"'s, and loses ties.
 * No Accept-Encoding field at all (fy_ae_add never called) = identity: we do not compress for
 * clients that did not ask. Identity is also the answer when the client refused it too
 * ("identity;q=0"): sending it anyway is what servers do rather than a 406.
 */
enum fy_coding fy_ae_pick(const struct fy_accept_enc *ae, unsigned enabled, const uint8_t *prefer,
                          int n);

#endif
