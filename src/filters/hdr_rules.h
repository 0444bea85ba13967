/*
 * Header rules: a route's set / add / remove operations on a request or response head, applied
 * in order. Values are templates (conf/template.h): a constant one is referenced from the
 * configuration (valid while the session holds its generation), one with variables is rendered
 * into memory from the caller's allocator, which must outlive the message's use.
 */
#ifndef FY_HDR_RULES_H
#define FY_HDR_RULES_H

#include <stddef.h>

#include "conf/conf.h"
#include "conf/template.h"
#include "http/msg.h"
#include "proxy/hooks.h"

/* Memory for rendered values: n bytes that stay valid as long as the message is used. */
typedef char *fy_scratch_fn(void *ctx, size_t n);

/* Applies the rules to m. Returns 0, or -1 when out of memory. */
int fy_hrules_apply(const struct fy_hrules *rules, struct fy_msg *m, const struct fy_tctx *vars,
                    fy_scratch_fn *alloc, void *alloc_ctx);

/* The hook that applies the global rules, then the route's, to the request towards the upstream
 * and to the response (upstream's or ferry's own). */
extern const struct fy_hook fy_hdr_rules_hook;

/* A rendered field value keeps no CR, LF, NUL or other control byte (each becomes a space):
 * what a variable brings from a request (a TLS name, a capture) can never end the field and
 * start another. Constants are checked when the configuration loads. */
void fy_field_value_sanitize(char *p, uint32_t n);

#endif
