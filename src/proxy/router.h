/*
 * Route matching for one listener. Semantics (docs/config.md, "Routes"): routes are tried in file
 * order and the first whose every condition holds wins. The index only skips routes that cannot
 * match, it never changes which one wins:
 *   1. the Host (lower-cased, port removed) is looked up in a hash of the exact host names; a
 *      host not in it is looked up by its suffixes in a hash of the wildcard (*.example.com)
 *      names, longest first; each entry holds the ordered list of routes that can match such a
 *      host (exact ones and wildcards that cover it); the routes without a host condition form
 *      one more list, searched for every request (and alone when there is no Host or no entry);
 *   2. within that list, a path trie over `path` and `path-prefix` conditions yields the routes
 *      whose path condition holds; routes with only a path-regex or no path condition are
 *      always candidates;
 *   3. candidates are checked in file order for method, headers, query and path-regex (PCRE2
 *      JIT), so a regex only runs on requests whose host and path could match.
 * Paths are matched normalised (fy_path_normalize): percent-encoded unreserved characters
 * decoded, dot segments removed, so /a/../admin and /%61dmin both match /admin.
 *
 * Ownership: the router points into its listener's routes (same generation) and is built and
 * freed with it. Matching allocates nothing per request and is safe from any thread: each thread
 * keeps its own PCRE2 match data (and a buffer for decoded query values), made on first use and
 * freed by fy_router_thread_release(). Should making them fail, the regex condition in question
 * does not hold (the request falls to a later route), as does one that hits PCRE2's match limit.
 */
#ifndef FY_ROUTER_H
#define FY_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "http/msg.h"

#define FY_ROUTE_MAX_CAPTURES 10 /* $0..$9 */

/* What matching needs from a request. */
struct fy_route_req {
    const char *host; /* lower case, no port (NULL when absent) */
    uint32_t host_len;
    const char *path; /* normalised path, no query */
    uint32_t path_len;
    const char *query; /* after '?', or NULL */
    uint32_t query_len;
    struct fy_msg *msg; /* for method and header conditions */
};

struct fy_route_result {
    const struct fy_route *route;
    /* path-regex captures as pcre2 ovector pairs over req.path: [2i], [2i+1]; unset pairs are
     * PCRE2_UNSET (~(size_t)0). */
    size_t ovector[2 * FY_ROUTE_MAX_CAPTURES];
    uint32_t ncaptures; /* 0 when the route has no path-regex */
};

/* Builds the index over l->routes (which must stay put). Returns NULL when out of memory. */
struct fy_router *fy_router_build(const struct fy_listener_conf *l);
void fy_router_free(struct fy_router *r);

/* The first route that matches, or false when none does. */
bool fy_router_match(const struct fy_router *r, const struct fy_route_req *req,
                     struct fy_route_result *out);

/* Does route `rt` alone match req (the reference semantics the index must agree with)? Fills out
 * like fy_router_match. */
bool fy_route_matches(const struct fy_route *rt, const struct fy_route_req *req,
                      struct fy_route_result *out);

/* Runs a route regex on subject with this thread's match data: returns the number of ovector
 * pairs set (>= 1) on a match, copied into ovector (room for max pairs; unset pairs are
 * PCRE2_UNSET), 0 when it does not match, or <0 on a matching error (treated as no match). */
int fy_regex_match(const fy_regex *re, const char *subject, size_t len, size_t *ovector,
                   uint32_t max);

/* Frees the calling thread's match state (a no-op if it has none). Each thread that matched
 * calls it before it exits; matching again afterwards makes the state anew. */
void fy_router_thread_release(void);

/* Lower-cases the Host value's host part into out (size >= len), dropping a :port; returns the
 * length. "[::1]:80" -> "[::1]". */
uint32_t fy_route_host_key(const char *host, uint32_t len, char *out);

#endif
