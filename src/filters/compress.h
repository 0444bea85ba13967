/*
 * Response compression (compress: on a listener or a route, docs/config.md): the response hook
 * that picks a coding per response and adds an encoder to the body filter chain. See compress.c
 * for the rules.
 */
#ifndef FY_COMPRESS_H
#define FY_COMPRESS_H

#include <stdbool.h>
#include <stdint.h>

#include "conf/conf.h"
#include "proxy/hooks.h"

extern const struct fy_hook fy_compress_hook;

/* Adds Vary: Accept-Encoding unless the response varies by it (or by everything) already.
 * Returns 0 or -1 (out of memory). */
int fy_compress_vary(struct fy_msg *m);

/* The client's Accept-Encoding as it sent it (before any rule or script changed the request). */
struct fy_accept_enc;
void fy_compress_client_ae(const struct fy_exchange *x, struct fy_accept_enc *ae);

/* The one content coding of a message's body: FY_CODING_IDENTITY when it has none (or says
 * identity), -1 when it cannot be decoded (codings stacked, or one ferry does not know). */
int fy_content_coding(const struct fy_msg *m);

/* Is this Content-Type value's media type one of c's types? */
bool fy_compress_type_allowed(const struct fy_compress_conf *c, const char *ctype, uint32_t len);

#endif
