/* Reason phrases for the status codes RFC 9110 (section 15) defines. */
#ifndef FY_STATUS_H
#define FY_STATUS_H

/* The phrase for status, or "" for a code without one (a reason phrase may be empty, RFC 9112
 * 4: clients ignore it). */
const char *fy_http_reason(int status);

#endif
