/*
 * Microbenchmark of the HTTP/1 request reader (ferry's head scanner + llhttp + field tokens) on
 * typical heads, and of the chunked decoder. Prints ns per message; compare runs of the same
 * machine only. Build and run: make bench-parser
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "http/h1_reader.h"

static const char curl_get[] = "GET /small HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
                               "User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";

static const char browser_get[] =
    "GET /app/assets/index-3f9a2c.js?v=42 HTTP/1.1\r\nHost: www.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
    "Accept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
    "Referer: https://www.example.com/app/\r\nConnection: keep-alive\r\n"
    "Cookie: session=4f1c2d9e8b7a6f5e4d3c2b1a0f9e8d7c; theme=dark; consent=yes\r\n"
    "Sec-Fetch-Dest: script\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Site: same-origin\r\n"
    "If-None-Match: \"5f2b-18c3a\"\r\n\r\n";

static const char chunked_post[] =
    "POST /upload HTTP/1.1\r\nHost: api\r\n"
    "Transfer-Encoding: chunked\r\n\r\n"
    "400\r\n"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "\r\n0\r\n\r\n";

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void run(const char *name, const char *msg, int iterations)
{
    struct fy_h1r_limits limits = {8192, 16384, 100, 0};
    struct fy_h1_reader r;
    fy_h1r_init(&r, true, &limits);
    size_t len = strlen(msg);
    size_t body = 0;
    double t0 = now_ns();
    for (int i = 0; i < iterations; i++) {
        size_t off = 0;
        while (r.state != FY_H1R_DONE && r.state != FY_H1R_ERROR && off < len) {
            off += fy_h1r_execute(&r, msg + off, len - off);
            for (int k = 0; k < r.nspans; k++)
                body += r.spans[k].iov_len;
        }
        if (r.state != FY_H1R_DONE) {
            fprintf(stderr, "%s: parse failed: %s\n", name, r.err_text ? r.err_text : "?");
            return;
        }
        fy_h1r_next(&r);
    }
    double ns = (now_ns() - t0) / iterations;
    printf("%-14s %5zu bytes  %8.1f ns/message  %7.1f MB/s\n", name, len, ns, len / ns * 1e3);
    fy_h1r_free(&r);
    (void)body;
}

int main(void)
{
    for (int round = 0; round < 2; round++) { /* the first round warms caches */
        if (round)
            printf("--\n");
        run("curl GET", curl_get, 1000000);
        run("browser GET", browser_get, 500000);
        run("chunked POST", chunked_post, 500000);
    }
    return 0;
}
