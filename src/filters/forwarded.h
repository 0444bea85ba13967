/*
 * The forwarding fields: Host towards the upstream (the route's host policy), X-Forwarded-For,
 * X-Forwarded-Proto, X-Forwarded-Host and Via (RFC 9110 7.6.3) on requests, Via on responses.
 * A field a header rule names is left to the rule. The first users of the hook points.
 */
#ifndef FY_FORWARDED_H
#define FY_FORWARDED_H

#include "proxy/hooks.h"

extern const struct fy_hook fy_forwarded_hook;

#endif
