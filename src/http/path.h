/*
 * Request path normalisation for matching (RFC 3986 6.2.2): percent-encoded unreserved
 * characters are decoded (%41 -> A, %7E -> ~), other escapes are kept with upper-case hex digits
 * (%2f -> %2F, so an encoded slash never becomes a separator), dot segments are removed
 * (5.2.4), and empty segments are merged ("//a" -> "/a", as nginx's merge_slashes). The result
 * always starts with '/'.
 */
#ifndef FY_PATH_H
#define FY_PATH_H

#include <stddef.h>
#include <stdint.h>

/* Normalises the path `in` (no query; starts with '/') into out, which has room for len bytes
 * (the result is never longer; out may be in). Returns the length, or -1 when the path has a
 * malformed escape ('%' not followed by two hex digits) or a NUL, or does not start with '/'. */
int fy_path_normalize(const char *in, uint32_t len, char *out);

#endif
