/*
 * HTTP/1 message reader on llhttp: turns bytes into a fy_msg head and body spans.
 *
 * The head is first scanned by ferry itself (line endings, obs-fold, NUL, line and size limits)
 * and handed to llhttp only when complete, so llhttp always sees a well-formed block and every
 * field pointer is into one contiguous region. Body data is returned as spans pointing into the
 * caller's bytes; de-chunking happens here, re-framing is the writer's job.
 *
 * Usage: call fy_h1r_execute() with the unconsumed input (the same bytes again, plus more, while
 * the head is incomplete); it returns how many bytes it consumed. Consumed head bytes must stay in
 * place until the caller has used or owned the msg; consumed body bytes until the spans are used.
 */
#ifndef FY_H1_READER_H
#define FY_H1_READER_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "http/chunked.h"
#include "http/msg.h"

#define FY_H1R_MAX_SPANS 16

enum fy_h1r_state {
    FY_H1R_HEAD,  /* waiting for a complete head */
    FY_H1R_BODY,  /* head parsed (msg valid), body in progress */
    FY_H1R_DONE,  /* message complete; the rest of the input belongs to the next message */
    FY_H1R_ERROR, /* err_status/err_text say why; the connection must be closed */
};

struct fy_h1r_limits {
    uint32_t max_line;   /* request or status line */
    uint32_t max_head;   /* whole head including the final CRLF */
    uint32_t max_fields; /* header fields */
    uint64_t max_body;   /* 0 = unlimited (requests only) */
};

struct fy_h1_reader {
    llhttp_t llh;
    struct fy_msg msg;
    enum fy_h1r_state state;
    bool is_request;
    bool no_body;     /* response to HEAD, or body otherwise known to be absent */
    bool eof_body;    /* response body delimited by connection close */
    bool trailing;    /* parsing trailer fields */
    bool own_chunked; /* body decoded by fy_chunked, not llhttp */
    struct fy_chunked chunked;
    uint16_t err_status; /* 400, 413, 414, 431 for requests; 502 for responses */
    const char *err_text;
    struct fy_h1r_limits limits;
    /* head scanner state, offsets relative to the start of the head */
    uint32_t scanned;
    uint32_t line_start;
    uint32_t nlines;
    uint32_t head_len; /* set when the head is complete */
    uint32_t method_len;
    /* The start line, checked as soon as it is complete (offsets from the head's start). A
     * rejected request is still logged with what was read of it. */
    uint32_t line_target_off, line_target_len;
    int8_t line_minor;     /* HTTP/1.x of the request line, -1 until it was read */
    uint8_t empty_skipped; /* bytes of empty lines skipped before this request line (<= 16) */
    char err_method[32], err_target[256];
    uint32_t err_method_len, err_target_len;
    /* field under construction */
    const char *fname, *fvalue;
    uint32_t fname_len, fvalue_len;
    uint32_t host_count;
    bool te_seen;
    uint64_t body_bytes;
    /* body spans produced by the last execute */
    int nspans;
    struct iovec spans[FY_H1R_MAX_SPANS];
};

void fy_h1r_init(struct fy_h1_reader *r, bool is_request, const struct fy_h1r_limits *limits);
void fy_h1r_free(struct fy_h1_reader *r);

/* Prepares for the next message on the same connection (keeps allocations). */
void fy_h1r_next(struct fy_h1_reader *r);

/* Parses bytes; see the file comment. Returns the number of bytes consumed. Afterwards check
 * r->state and r->nspans (spans must be used before the next call, which clears them). */
size_t fy_h1r_execute(struct fy_h1_reader *r, const char *data, size_t len);

/* A request is rejected while its head is incomplete (a timeout, an error): copies what is known
 * of the request line into err_method/err_target for the log. `head` is where the unconsumed head
 * starts (the bytes given to the last fy_h1r_execute). Done by the reader itself on its own
 * errors; no-op without a complete request line. */
void fy_h1r_keep_request_line(struct fy_h1_reader *r, const char *head);

/*
 * A body moved past the reader (spliced from socket to socket), for bodies whose end the reader
 * can tell without seeing the bytes. fy_h1r_body_left() is how many more body bytes may be moved
 * that way now: what a Content-Length body still lacks, UINT64_MAX for a close-delimited body
 * (fy_h1r_eof() ends it), 0 otherwise (no body in progress, a chunked body). Only meaningful
 * once the spans of the last execute were used and every byte given to it was consumed: the
 * bytes moved come after those. fy_h1r_body_skipped() records n <= fy_h1r_body_left() bytes
 * moved (and clears the spans): a Content-Length
 * body that got its last byte is complete (FY_H1R_DONE), and what follows it in the stream
 * belongs to the next message.
 */
uint64_t fy_h1r_body_left(const struct fy_h1_reader *r);
void fy_h1r_body_skipped(struct fy_h1_reader *r, uint64_t n);

/* The connection ended: for a close-delimited body this completes the message; anywhere else it
 * is an error (truncated message). Returns true if the message is now complete. */
bool fy_h1r_eof(struct fy_h1_reader *r);

#endif
