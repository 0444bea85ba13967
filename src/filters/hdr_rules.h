/*
 * Header rules: the configured "set" and "remove" operations on a request or response head, in
 * order. A set replaces every field of that name with one; values point into the config.
 */
#ifndef FY_HDR_RULES_H
#define FY_HDR_RULES_H

#include <stdint.h>

#include "conf/config.h"
#include "http/msg.h"
#include "http/tokens.h"

/* Applies the rules to m. Returns 0, or -1 when out of memory. */
int fy_hdr_rules_apply(const struct fy_header_rules *rules, struct fy_msg *m);

/* The well-known fields a rule list names, so ferry's own fields (Host, X-Forwarded-*, Via) can
 * step aside when the user configured them explicitly. Test a field with fy_tokmask_has(). */
fy_tokmask fy_hdr_rules_token_mask(const struct fy_header_rules *rules);

#endif
