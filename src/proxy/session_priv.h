/*
 * What the session's files share (session.c: the state machine, EXCHANGE and TUNNEL, ending;
 * session_route.c: ROUTE and RESPOND, templates, hooks; session_select.c: CONNECT, balancing,
 * the max-conns queue, retries). Only for src/proxy/session*.c.
 */
#ifndef FY_SESSION_PRIV_H
#define FY_SESSION_PRIV_H

#include "proxy/session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/assert.h"
#include "core/macros.h"
#include "core/log.h"
#include "conf/template.h"
#include "filters/hdr_rules.h"
#include "http/date.h"
#include "http/path.h"
#include "net/addr.h"
#include "net/dns.h"
#include "proxy/connpool.h"
#include "proxy/hooks.h"
#include "proxy/lb.h"
#include "proxy/router.h"
#include "proxy/upstream_h1.h"
#include "proxy/worker.h"

#define PATH_INLINE 256   /* normalised paths up to this long need no allocation */
#define FY_MAX_INTERIM 32 /* 1xx responses relayed per exchange before a 502 */

#define FY_SESSION_STATES(X)                                                                       \
    X(ROUTE, "matching the request to a route")                                                    \
    X(RESPOND, "sending a response ferry makes itself")                                            \
    X(CONNECT, "obtaining an upstream connection")                                                 \
    X(EXCHANGE, "sending the request, relaying the response")                                      \
    X(TUNNEL, "relaying upgraded bytes both ways")                                                 \
    X(DONE, "finished")

enum session_state {
#define X(id, text) S_##id,
    FY_SESSION_STATES(X)
#undef X
};

struct fy_flow;
struct fy_capture;

struct scratch {
    struct scratch *next;
    char data[];
};

struct fy_session {
    struct fy_exchange x;         /* what hooks see (hooks.h) */
    struct fy_session *next_free; /* on the free list */
    struct fy_task task;
    struct fy_timer timer;
    struct fy_worker *w;
    struct fy_wgen *gen;         /* the generation this exchange runs on, from start to end */
    const struct fy_config *cfg; /* &gen->conf->settings: a reload does not change them */
    const struct fy_listener_conf *listener;
    const struct fy_route *route;
    const struct fy_group *group;
    struct fy_server *server; /* picked for the current attempt (counted by the balancer) */
    const struct fy_server *last_server; /* the one used last: for the log */
    struct fy_connpool *pool;            /* the worker's pool for server */
    /* The current attempt's addresses and TLS: the server's (select_server), or the forward
     * destination's (session_forward.c). addr_i indexes addrs. */
    const struct fy_addr *addrs;
    uint32_t naddrs;
    struct fy_tls_client *up_tls; /* NULL: plain TCP */
    const char *up_tls_name;      /* the name sent as SNI and verified */
    /* forward proxy (session_forward.c) */
    struct fy_fwd_target fwd; /* host points into fwd_host */
    bool has_fwd;
    bool fwd_resolved;
    bool dns_started;
    uint8_t fwd_verdict; /* enum fy_dest_verdict of the name (filters/acl.h) */
    bool fwd_pool_held;  /* s->pool is a reference on a destination pool (fy_fwd_pools) */
    char fwd_host[256];
    char fwd_sni[256];
    char tls_fail[160]; /* why the last TLS handshake with the upstream failed ("" = none) */
    struct fy_dns_req dns;
    /* capture (session_capture.c): the record being filled, and where it goes */
    struct fy_flow *flow;
    struct fy_capture *capture; /* NULL: the flow is for the pretty log only */
    char resp_ctype[64];        /* the pretty log: the response's Content-Type */
    uint32_t tried[FY_LB_MAX_TRIED];
    uint32_t ntried;
    uint32_t addr_i;                  /* which of the server's addresses the attempt uses */
    struct fy_session *qprev, *qnext; /* in its group's queue (gen->queues) */
    bool queued;
    uint64_t queue_deadline_us;
    /* hooks */
    uint8_t route_step; /* enum route_step */
    unsigned hook_next; /* the hook of the current point to run next */
    bool hook_waiting;  /* a hook returned WAIT: until fy_exchange_resume() */
    int hook_status;    /* fy_exchange_respond() */
    const char *hook_body;
    uint32_t hook_body_len;
    struct fy_msg hook_fields; /* fy_exchange_respond_with(): the answer's fields */
    const struct fy_downstream_ops *ops;
    void *ds;
    struct fy_msg req;
    const char *orig_target; /* the target as received (for the log), owned by req */
    uint32_t orig_target_len;
    const char *path; /* normalised path, no query (path_inline or scratch) */
    uint32_t path_len;
    const char *query; /* after '?', in req's target as received; NULL if none */
    uint32_t query_len;
    const char *host; /* the client's Host without port, as received; NULL if none */
    uint32_t host_len;
    struct fy_route_result match;
    struct fy_msg resp; /* RESPOND: the response ferry makes */
    char date[40], clen[24];
    uint64_t connect_timeout, upstream_timeout;
    char request_id[33];
    struct sockaddr_storage client;
    char client_ip[64];    /* the client's address as text (X-Forwarded-For, $client_ip); lazy */
    const char *orig_host; /* the client's Host value, owned by req; NULL if none */
    uint32_t orig_host_len;
    struct fy_upconn *up;
    struct scratch *scratch;
    enum session_state state;
    int status;
    int attempts;
    bool reused;
    bool is_head;
    bool timed_out;
    bool detached;
    bool server_failed; /* the current attempt failed on the server's side (passive health) */
    bool set_sticky;    /* the response carries the sticky cookie of the server used */
    bool abort_on_close;
    bool tls;                             /* the client came over TLS */
    const char *tls_version, *tls_cipher; /* static strings (OpenSSL's tables); NULL: plain */
    const struct fy_sock *client_sock;    /* while attached */
    struct tls_vars *tls_vars;            /* $tls_* computed once, on first use (scratch) */
    /* request side */
    bool req_last_queued, req_done, req_spans_out, req_body_started, sent_continue;
    bool req_starved; /* waiting for the client's body bytes */
    /* response side */
    bool got_response_bytes, head_sent, resp_spans_out, ds_blocked, resp_last_sent;
    /* splicing the response body (session_splice.c) */
    struct fy_pipe *pipe; /* owned while splicing; held bytes are in flight to the client */
    bool splicing;        /* the body goes upstream socket -> pipe -> client socket */
    bool splice_tried;    /* the switch was decided once for this response */
    /* response body filters (session_body.c): the chain, and how far the current batch of
     * upstream body spans got through it */
    struct fy_bf_chain bf;
    struct fy_timer bf_timer; /* the upstream paused with bytes in the chain: flush soon */
    uint32_t bf_span;         /* the span of rd->spans being pushed, and the offset in it */
    size_t bf_off;
    bool bf_batch;     /* rd->spans is a batch not yet fully pushed */
    bool bf_dirty;     /* bytes went in since the last flush */
    bool bf_flush_due; /* bf_timer fired: push a flush */
    /* request body filters (session_body.c): the client's batch being pushed */
    struct fy_bf_chain rbf;
    struct iovec rbf_iov[FY_H1R_MAX_SPANS];
    int rbf_n;
    uint32_t rbf_span;
    size_t rbf_off;
    bool rbf_have;       /* rbf_iov holds a client batch not yet fully pushed */
    bool rbf_last;       /* ... the body's last */
    bool rbf_end_pushed; /* the end went into the chain */
    bool rbf_sent;       /* the sink's span is queued on the upstream writer */
    /* tunnel */
    bool up_eof, client_eof;
    bool up_write_failed; /* a request write failed (reset): an upstream EOF is not a clean end */
    int up_write_err;     /* that write's error, reported if no response follows */
    uint16_t ninterim;    /* 1xx responses relayed so far (at most FY_MAX_INTERIM) */
    uint64_t bytes_in, bytes_out;
    uint64_t start_us, up_start_us, up_head_us;
    uint64_t up_ready_us; /* the upstream connection was ready for the request (connected, TLS) */
    char path_inline[PATH_INLINE];
};

enum route_step { RS_START, RS_REQUEST_HOOKS, RS_UPSTREAM_HOOKS };
enum hook_point { HP_REQUEST, HP_UPSTREAM_REQUEST, HP_UPSTREAM_SELECT, HP_RESPONSE };

/* session.c */
void sess_slog(struct fy_session *s, enum fy_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Memory that lives as long as the session (freed with it). */
char *sess_scratch_alloc(struct fy_session *s, size_t n);
char *sess_scratch_fn(void *ctx, size_t n); /* fy_scratch_fn over the session */
int sess_queue_request_head(struct fy_session *s);
void sess_release_upstream(struct fy_session *s, bool reusable);
void sess_finish(struct fy_session *s, bool upstream_reusable, bool client_clean);
void sess_fail_exchange(struct fy_session *s, int status, const char *text);
void sess_client_failed(struct fy_session *s, int status);
void sess_upstream_failed(struct fy_session *s, int err, const char *what);
/* pump_request's parts, shared with session_body.c's filtered request path. */
/* Up to FY_H1R_MAX_SPANS spans of the client's body (counted and captured): their number,
 * FY_AGAIN, or -1 when the client failed (the session ended). */
int sess_read_request_body(struct fy_session *s, struct iovec *iov, bool *last);
int sess_request_write_failed(struct fy_session *s, int rc);

/* session_splice.c */
bool sess_can_splice(const struct fy_session *s);
bool sess_splice_start(struct fy_session *s);
int sess_pump_splice(struct fy_session *s);
void sess_splice_release(struct fy_session *s);

/* session_route.c */
void sess_template_vars(struct fy_session *s, struct fy_tctx *v);
enum fy_hook_result sess_run_hooks(struct fy_session *s, enum hook_point p, struct fy_msg *m);
bool sess_has_request_body(const struct fy_msg *m);
void sess_step_route(struct fy_session *s);
void sess_step_respond(struct fy_session *s);

/* session_capture.c: each does nothing without a capture (or the pretty log's -v) */
#define FY_PRETTY_BODY_MAX 4096 /* -vv shows this much of each body */
void sess_capture_begin(struct fy_session *s);
void sess_capture_mark(struct fy_session *s, int point); /* enum fy_flow_point */
void sess_capture_req_body(struct fy_session *s, const struct iovec *iov, int n);
void sess_capture_response(struct fy_session *s, const struct fy_msg *m);
void sess_capture_resp_body(struct fy_session *s, const struct iovec *iov, int n);
void sess_capture_error(struct fy_session *s, int status, const char *text);
bool sess_capture_wants_body(const struct fy_session *s); /* the response body is still wanted */
void sess_capture_end(struct fy_session *s);              /* submits it */
void sess_capture_drop(struct fy_session *s);

/* session_body.c: the response body through the filter chain */
void sess_bf_init(struct fy_session *s);
/* After the response hooks: re-frames the head for a filtered body and sends it. Same results as
 * the downstream's send_head. */
int sess_bf_send_head(struct fy_session *s, struct fy_msg *m);
/* Pushes the current batch (and a due flush, and the end) through the chain, handing the sink's
 * bytes to the client. Returns 0 when the batch is through, 1 when the client holds the sink's
 * bytes (fy_session_output_flushed() follows), -1 when the session ended (failed). */
int sess_bf_pump(struct fy_session *s);
/* EXCHANGE's request side when the request body is filtered (pump_request's results). */
int sess_rbf_pump(struct fy_session *s);
/* After the request hooks: a filtered request body goes upstream chunked. */
void sess_rbf_frame(struct fy_session *s);
/* The upstream has nothing more for now: arms the flush timer if bytes wait in the chain. */
void sess_bf_paused(struct fy_session *s);
void sess_bf_free(struct fy_session *s);

/* session_forward.c */
/* "http://host:port", "https://host:port" or "host:port" (CONNECT), for log lines. */
void sess_forward_describe(const struct fy_session *s, char *out, size_t len);
/* FY_ACT_FORWARD's part of ROUTE: the destination's name checks; false when refused (answered). */
bool sess_forward_route(struct fy_session *s);
/* The forward destination's addresses and pool for the next attempt. Returns 1 when ready
 * (s->pool, s->addrs set), 0 while resolving (the task is woken), -1 when failed (answered). */
int sess_forward_select(struct fy_session *s);
/* The next address of the destination was picked: check it, and switch pools. */
bool sess_forward_next_addr(struct fy_session *s);
/* CONNECT's tunnel is up: answer 200 (unless answered) and relay. */
void sess_forward_tunnel(struct fy_session *s);
void sess_forward_release(struct fy_session *s);

/* session_select.c */
void sess_step_connect(struct fy_session *s);
void sess_release_server(struct fy_session *s);
bool sess_retry_elsewhere(struct fy_session *s, const char *why);
void sess_queue_remove(struct fy_session *s);

#endif
