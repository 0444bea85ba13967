/*
 * Access log: one line per exchange, combined or JSON, buffered per worker and written with one
 * write(2) per batch (when the buffer fills, a second after the first unflushed line, or at exit).
 * Lines are whole: each worker writes only complete lines with O_APPEND semantics.
 */
#ifndef FY_ACCESSLOG_H
#define FY_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conf/config.h"
#include "core/loop.h"
#include "http/msg.h"

struct fy_log_entry {
    const struct sockaddr *client;
    const char *method;
    uint32_t method_len;
    const char *target;
    uint32_t target_len;
    int8_t version_minor; /* HTTP/1.x; -1 when the request line was not read */
    int status;
    uint64_t bytes_in, bytes_out;
    const struct sockaddr *upstream; /* NULL if none was contacted */
    const char *referer, *user_agent;
    uint32_t referer_len, user_agent_len;
    const char *request_id; /* NUL-terminated; NULL for requests ferry refused before routing */
    uint64_t upstream_us;   /* 0 if none */
    /* TLS clients (NULL for plain ones); NUL-terminated. The JSON format prints them all, the
     * combined one the version and cipher. */
    const char *tls_version, *tls_cipher, *tls_server_name, *tls_client_subject;
    const char *tls_client_sha256; /* the client certificate's fingerprint (with the subject) */
    uint64_t total_us;
    /* The pretty format: the response's Content-Type (may be NULL), and the exchange's record
     * for its heads and bodies (-v, -vv; may be NULL). Read during the call only. */
    const char *content_type;
    uint32_t content_type_len;
    const struct fy_flow *flow;
};

struct fy_flow;

struct fy_accesslog {
    int fd; /* -1 = off */
    enum fy_log_format format;
    unsigned verbose; /* pretty: 1 adds heads, 2 bodies too */
    bool color;       /* pretty on a terminal (and NO_COLOR unset) */
    struct fy_loop *loop;
    struct fy_timer flush_timer;
    char *buf;
    uint32_t len, cap;
    bool immediate; /* a terminal: flush every line */
};

/* Fills e's Referer and User-Agent from a request head (the strings stay the head's). */
void fy_log_entry_agent(struct fy_log_entry *e, struct fy_msg *req);

/* fd is shared by all workers and not owned. */
int fy_accesslog_init(struct fy_accesslog *l, struct fy_loop *loop, int fd,
                      enum fy_log_format format, unsigned verbose);
void fy_accesslog_write(struct fy_accesslog *l, const struct fy_log_entry *e);

/* The pretty format's text for e (accesslog_pretty.c): at most cap bytes, ending in a newline.
 * Returns the length. */
size_t fy_accesslog_pretty(char *buf, size_t cap, const struct fy_log_entry *e, bool color,
                           unsigned verbose);
void fy_accesslog_flush(struct fy_accesslog *l);
void fy_accesslog_destroy(struct fy_accesslog *l);

#endif
