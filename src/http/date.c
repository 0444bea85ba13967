/* See date.h. Responses ferry makes are rare next to proxied ones: no cache. */
#include "http/date.h"

#include <time.h>

void fy_http_date(char out[40])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, 40, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}
