/*
 * One exchange's record for the capture file (proxy/capture.h) and the pretty log: request and
 * response heads, the first max-body bytes of each body, addresses, TLS, timing points and an
 * error. The session that runs the exchange fills it with the builders below as the exchange
 * goes, then hands it (moves it) to the capture writer, which writes its JSON line
 * (docs/capture.md) and frees it. A flow belongs to one thread at a time: no locks inside.
 *
 * Memory is bounded: each head is copied once into one allocation (its strings and field array
 * together), and each body keeps at most max_body bytes, grown as bytes arrive; the bytes past
 * it are only counted. Every string the session passes in is copied: nothing it points to needs
 * to outlive the call.
 *
 * Consumers (the capture writer, a text formatter) read the fields directly and treat every one
 * as read-only; strings are not NUL-terminated unless said so.
 */
#ifndef FY_FLOW_H
#define FY_FLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "core/json.h"
#include "http/msg.h"

struct fy_flow_field {
    const char *name, *value;
    uint32_t name_len, value_len;
};

/* A request or response head as the flow keeps it. Unset (`set` false) until its builder ran. */
struct fy_flow_head {
    bool set;
    uint8_t version_minor; /* HTTP/1.x */
    uint16_t status;       /* responses */
    const char *method;    /* requests */
    uint32_t method_len;
    const char *url; /* requests: the full URL, "https://host:port/path?q" (see the builder) */
    uint32_t url_len;
    const char *reason; /* responses */
    uint32_t reason_len;
    struct fy_flow_field *fields; /* in the order they were sent */
    uint32_t nfields;
    char *block; /* the one allocation holding the above; owned by the flow */
};

struct fy_flow_body {
    uint64_t size;     /* every body byte seen (after de-chunking) */
    uint64_t captured; /* bytes in data: min(size, the flow's max_body) */
    uint64_t cap;      /* allocated size of data */
    char *data;        /* owned by the flow; NULL while nothing was captured */
    bool stopped;      /* bytes went by unseen (spliced): data stays a prefix, the rest counted */
};

/* Timing points: absolute monotonic microseconds (the loop's now_us), 0 = not reached. */
enum fy_flow_point {
    FY_FLOW_START,         /* the request's first byte arrived (the exchange began) */
    FY_FLOW_CONNECT_START, /* a new upstream connection was started (none for a pooled one) */
    FY_FLOW_CONNECTED,     /* its TCP connect completed */
    FY_FLOW_TLS_DONE,      /* its TLS handshake completed (https upstreams) */
    FY_FLOW_SEND_START,    /* the request began going upstream (a pooled connection: taken) */
    FY_FLOW_SENT,          /* the whole request (head and body) was written upstream */
    FY_FLOW_FIRST_BYTE,    /* the response's first byte arrived */
    FY_FLOW_END,           /* the response's last byte went to the client (or the exchange ended) */
    FY_FLOW_NPOINTS
};

struct fy_flow {
    char id[33];            /* the request id, NUL-terminated; "" when unknown */
    uint64_t wall_start_us; /* CLOCK_REALTIME microseconds at FY_FLOW_START; 0 = unknown */
    uint64_t t[FY_FLOW_NPOINTS];
    uint64_t max_body; /* bytes kept of each body */
    struct sockaddr_storage client, server;
    bool has_client, has_server; /* has_server: an upstream was contacted */
    bool tls; /* the client spoke TLS; the three strings below are NUL-terminated, maybe "" */
    char tls_version[16], tls_cipher[64], tls_sni[256];
    struct fy_flow_head req, resp;
    struct fy_flow_body req_body, resp_body;
    char *error; /* NUL-terminated sentence, owned by the flow; NULL when none */
};

/* A new, empty flow that keeps at most max_body bytes of each body. NULL when out of memory.
 * The caller owns it until fy_flow_free() or a hand-over (fy_capture_submit). */
struct fy_flow *fy_flow_new(uint64_t max_body);

void fy_flow_free(struct fy_flow *f); /* NULL is fine */

/* The request id (at most 32 characters are kept) and the start: wall clock and monotonic
 * microseconds of the same moment (sets FY_FLOW_START). */
void fy_flow_set_id(struct fy_flow *f, const char *id, size_t len);
void fy_flow_set_start(struct fy_flow *f, uint64_t wall_us, uint64_t mono_us);

/* Records a timing point (see enum fy_flow_point); a later call for the same point wins. */
void fy_flow_mark(struct fy_flow *f, enum fy_flow_point p, uint64_t mono_us);

/* Copies the request head: method, version and the visible fields of m, and the full URL made
 * from scheme ("http"/"https") and authority (the Host the client asked for) with m's target:
 * an origin-form target "/p?q" becomes "scheme://authority/p?q" with the scheme's default
 * port left out; an absolute-form target (a forward proxy's) is kept as it is; "*" becomes
 * "scheme://authority". Returns 0, or -1 when out of memory (the flow keeps no request head).
 * Calling it again replaces the head. */
int fy_flow_set_request(struct fy_flow *f, const struct fy_msg *m, const char *scheme,
                        const char *authority, size_t authority_len);

/* Copies the response head: status, reason, version and the visible fields of m. 0 or -1. */
int fy_flow_set_response(struct fy_flow *f, const struct fy_msg *m);

/* Body bytes as they stream (after de-chunking): copies what still fits under max_body and
 * counts all. Never fails loudly: out of memory stops the copy, the count goes on. */
void fy_flow_req_body(struct fy_flow *f, const struct iovec *iov, int n);
void fy_flow_resp_body(struct fy_flow *f, const struct iovec *iov, int n);

/* n body bytes that went by without passing through ferry's memory (spliced socket to socket):
 * counted in size, and the capture of that body stops there, so data stays an exact prefix. */
void fy_flow_req_body_skipped(struct fy_flow *f, uint64_t n);
void fy_flow_resp_body_skipped(struct fy_flow *f, uint64_t n);

/* Addresses: the client's (the peer of the accepted connection) and the upstream server's
 * (copied). */
void fy_flow_set_client(struct fy_flow *f, const struct sockaddr *sa);
void fy_flow_set_server(struct fy_flow *f, const struct sockaddr *sa);

/* The client side's TLS (NULL strings are stored as ""). */
void fy_flow_set_tls(struct fy_flow *f, const char *version, const char *cipher, const char *sni);

/* What went wrong, as a sentence for people ("the upstream server did not answer in time");
 * copied, at most 512 bytes kept. A later call replaces it. */
void fy_flow_set_error(struct fy_flow *f, const char *sentence);

/* True when name[0, len) is one of names[0, n) in any case: its value is written "[redacted]". */
bool fy_flow_redacted(const char *name, size_t len, const char *const *names, uint32_t n);

/* Appends the flow's JSON line (docs/capture.md, with the final '\n') to w. The values of
 * fields named in redact[0, nredact) are written as "[redacted]" in both heads. Returns 0, or
 * -1 when w failed (out of memory or its limit), in which case w's text must be discarded. */
int fy_flow_to_json(const struct fy_flow *f, const char *const *redact, uint32_t nredact,
                    struct fy_json_writer *w);

#endif
