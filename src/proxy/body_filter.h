/*
 * Body filters: a push chain (H2O's ostream, Varnish's VDP) that a response body goes through
 * between the upstream and the client once a hook asked for it (compression, a script):
 *
 *   upstream spans --fy_bf_chain_push()--> filter 1 --> filter 2 --> ... --> sink --> send_body()
 *
 * A filter takes bytes with its push op and hands what it makes to the next one through its own
 * output buffer (fy_bf_space, fy_bf_produced, fy_bf_pass). Memory is bounded: a filter holds at
 * most one buffer of output the next one has not taken, and the sink at most one buffer of bytes
 * for the client. When the sink is full, or its bytes are still with the client, a push returns
 * FY_AGAIN with its input partly taken, and the session reads nothing more from the upstream
 * until the client has taken the sink's bytes: a slow client slows the upstream. A filter that
 * needs more input before it can produce (a compressor filling a block) simply takes what it is
 * given and produces nothing yet.
 *
 * Flags travel with the bytes: FY_BF_FLUSH (the upstream paused: everything pushed so far should
 * reach the client, e.g. a server-sent event) and FY_BF_END (the body ends after these bytes). A
 * filter passes a flag on only after everything it holds, so when the flag reaches the sink the
 * sink holds every byte the flag covers.
 *
 * Ownership: the chain copies what it takes, so the caller may reuse input bytes as soon as a
 * push returned (for those it took). The filters, their buffers and the sink belong to the
 * chain, freed by fy_bf_chain_free(). The sink's bytes go to the downstream as one span
 * (fy_bf_chain_take) and stay valid, untouched, until fy_bf_chain_taken(): no push reaches the
 * sink in between (it answers FY_AGAIN).
 */
#ifndef FY_BODY_FILTER_H
#define FY_BODY_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define FY_BF_BUF 16384     /* each filter's output buffer, and the sink */
#define FY_BF_MAX_FILTERS 4 /* decode, script, encode, and one spare */

enum fy_bf_flags { FY_BF_FLUSH = 1, FY_BF_END = 2 };

struct fy_bfilter;
struct fy_bf_chain;

/* Takes bytes: *in and *len advance past what it took. Returns 0 once it took everything and, with
 * a flag, passed on everything it holds with that flag; FY_AGAIN when the next stage is full (the
 * caller calls again later with what is left and the same flags); <0 on error, after
 * fy_bf_fail() said why. */
typedef int fy_bf_push_fn(struct fy_bfilter *f, const uint8_t **in, size_t *len, unsigned flags);
/* Frees the filter's own state (the chain frees the struct's buffers). */
typedef void fy_bf_destroy_fn(struct fy_bfilter *f);

struct fy_bf_ops {
    const char *name; /* for log lines: "gzip encoder" */
    fy_bf_push_fn *push;
    fy_bf_destroy_fn *destroy;
};

/* Embedded first in each filter's own struct (allocated by the filter's maker, freed through
 * destroy, then free()). */
struct fy_bfilter {
    const struct fy_bf_ops *ops;
    const char *name;        /* for log lines; NULL = ops->name */
    struct fy_bfilter *next; /* NULL: the sink is next */
    struct fy_bf_chain *chain;
    uint8_t *out;              /* FY_BF_BUF bytes, allocated by fy_bf_chain_add */
    size_t out_start, out_end; /* out[out_start, out_end): made, not yet taken by next */
};

struct fy_bf_chain {
    struct fy_bfilter *filters[FY_BF_MAX_FILTERS];
    unsigned n;
    uint8_t *sink;
    size_t sink_len;
    bool sink_busy; /* the sink's bytes are with the downstream (fy_bf_chain_take) */
    bool flushed;   /* a FLUSH reached the sink: send what it holds now */
    bool ended;     /* END reached the sink: the body ends after its bytes */
    uint64_t bytes_in, bytes_out;
    char err[160]; /* why a push failed: "gzip encoder: out of memory" */
    /* The status for the client when the failure comes before any of the body went out: 502
     * (what the upstream sent cannot be processed) unless a filter set another first (a
     * script's error is a 500). */
    int err_status;
};

/* An empty chain (nothing allocated until the first filter). */
void fy_bf_chain_init(struct fy_bf_chain *c);

/* Appends a filter after the ones already in the chain; the chain owns it from now on (also
 * when this fails). Returns 0 or -1 (full, or out of memory). */
int fy_bf_chain_add(struct fy_bf_chain *c, struct fy_bfilter *f);

static inline bool fy_bf_chain_active(const struct fy_bf_chain *c)
{
    return c->n > 0;
}

/* Pushes body bytes into the first filter: see fy_bf_push_fn. */
int fy_bf_chain_push(struct fy_bf_chain *c, const uint8_t **in, size_t *len, unsigned flags);

/* The sink's bytes as one span for the downstream (iov_len 0 when empty); the sink is busy until
 * fy_bf_chain_taken(). */
void fy_bf_chain_take(struct fy_bf_chain *c, struct iovec *iov);
/* The downstream flushed the span: the sink is empty and open again. */
void fy_bf_chain_taken(struct fy_bf_chain *c);

/* Frees every filter and buffer; the chain is empty (initialised) again. */
void fy_bf_chain_free(struct fy_bf_chain *c);

/* ---- for filters ---- */

/* Where the filter may write output now (*avail bytes; 0 while its buffer is full). */
uint8_t *fy_bf_space(struct fy_bfilter *f, size_t *avail);
/* n bytes were written at fy_bf_space(). */
void fy_bf_produced(struct fy_bfilter *f, size_t n);
/* Hands the filter's output to the next stage, with `flags` once all of it was taken. Returns
 * 0 (all taken), FY_AGAIN (some left: the next stage is full) or <0. */
int fy_bf_pass(struct fy_bfilter *f, unsigned flags);
/* Records why the chain failed (printf-style, prefixed with the filter's name); returns -1. */
int fy_bf_fail(struct fy_bfilter *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
