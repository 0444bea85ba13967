/* The Date field of responses ferry makes itself (RFC 9110 6.6.1). */
#ifndef FY_DATE_H
#define FY_DATE_H

/* The current time as an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") into out. */
void fy_http_date(char out[40]);

#endif
