/*
 * Upstream connections and the per-worker pool of idle ones. A connection is either owned by one
 * session (its socket events wake that session) or idle in the pool (events wake the pool's check,
 * which closes it on EOF or unexpected bytes). Pools are per worker: no locks.
 */
#ifndef FY_CONNPOOL_H
#define FY_CONNPOOL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/loop.h"
#include "http/h1_reader.h"
#include "http/h1_writer.h"
#include "net/addr.h"
#include "net/sock.h"

struct fy_worker;

struct fy_upconn {
    struct fy_sock sock;
    struct fy_task idle_task; /* runs on events while pooled */
    struct fy_timer idle_timer;
    struct fy_connpool *pool;
    struct fy_upconn *prev, *next; /* idle list */
    struct fy_h1_reader rd;        /* responses */
    struct fy_h1_writer wr;        /* requests */
    struct fy_buf *in;
    bool connected;
    bool tls_started; /* the TLS handshake began (https servers) */
    bool secure;      /* connected, and TLS (if any) done: requests may go */
    bool idle;
    /* the exchange in progress (upstream_h1.c) */
    bool head_reported; /* the current message's head was returned as an event */
    bool spans_pending; /* body spans were returned and not yet replaced */
    bool got_bytes;     /* a byte of the response arrived */
    uint8_t full_reads; /* reads that filled the buffer: a large body is coming */
    uint64_t bytes_read;
};

struct fy_connpool {
    struct fy_loop *loop;
    struct fy_addr addr; /* a copy: pools outlive configuration generations */
    /* https: what the connections' TLS was made with ("name|context id"): a pooled connection
     * is only reused under the same settings. NULL for http. Owned. */
    char *tls_key;
    struct fy_tls_session_slot *tls_slot; /* the last session, for resumption; owned */
    const struct fy_h1r_limits *limits;
    struct fy_upconn *head; /* most recently used first */
    struct fy_upconn *tail;
    uint32_t nidle, max_idle;
    uint64_t idle_timeout_ms;
};

void fy_connpool_init(struct fy_connpool *p, struct fy_loop *loop, const struct fy_addr *addr,
                      const struct fy_h1r_limits *limits, uint32_t max_idle, uint64_t idle_ms);

/* What identifies an upstream address's pool: the address, and for https the TLS settings and
 * the name sent and verified (tls NULL for http). */
struct fy_tls_client;
struct fy_pool_key {
    const struct fy_addr *addr;
    const struct fy_tls_client *tls;
    const char *tls_name;
};

/* The TLS part of a pool's identity as text ("name|context id"; "" for http), into out. */
void fy_pool_key_text(const struct fy_pool_key *key, char *out, size_t len);

/* fy_connpool_init() for key, whose fy_pool_key_text() is key_text. 0, or -1 out of memory. */
int fy_connpool_init_key(struct fy_connpool *p, struct fy_loop *loop, const struct fy_pool_key *key,
                         const char *key_text, const struct fy_h1r_limits *limits,
                         uint32_t max_idle, uint64_t idle_ms);

/* Closes the idle connections and frees what init allocated (not p itself). */
void fy_connpool_destroy(struct fy_connpool *p);

/* A worker's pools, one per upstream address, kept across configuration generations (a server
 * that stays in a reload keeps its idle connections). Looked up when a generation is adopted,
 * never per request. */
struct fy_pools {
    struct fy_connpool **items;
    uint32_t n, cap;
};

/* The pool for addr, created (with the given settings) when there is none. NULL: out of memory. */
struct fy_connpool *fy_pools_get(struct fy_pools *ps, struct fy_loop *loop,
                                 const struct fy_pool_key *key, const struct fy_h1r_limits *limits,
                                 uint32_t max_idle, uint64_t idle_ms);

/* Closes every idle connection of every pool and frees the pools. */
void fy_pools_free(struct fy_pools *ps);

/* Frees every pool `keep(p, ctx)` says no generation uses any more, closing its idle
 * connections (a connection in use belongs to a session, whose generation keeps the pool). */
void fy_pools_prune(struct fy_pools *ps, bool (*keep)(const struct fy_connpool *p, void *ctx),
                    void *ctx);

/* Closes every idle connection. */
void fy_connpool_close_all(struct fy_connpool *p);

/* Takes the most recently used idle connection, or NULL. Its events now queue `owner`. */
struct fy_upconn *fy_connpool_get(struct fy_connpool *p, struct fy_task *owner);

/* Opens a new connection (connect in progress). Returns NULL with *err = -errno on failure. */
struct fy_upconn *fy_connpool_connect(struct fy_connpool *p, struct fy_task *owner, int *err);

/* Returns a connection after a complete exchange; it is closed instead if the pool is full. */
void fy_connpool_put(struct fy_connpool *p, struct fy_upconn *c);

/* Closes and frees a connection that is not in the pool. */
void fy_upconn_close(struct fy_upconn *c);

#endif
