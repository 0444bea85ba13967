/*
 * Hook points of an exchange, where filters (C today, Lua later) attach without the session
 * knowing them. The session runs every registered hook of a point in registration order:
 *
 *   request           the client's head as received, before routing
 *   upstream_request  the head towards the upstream, once, after routing and before a server is
 *                     picked (so a hook's answer or error never takes a pooled connection)
 *   upstream_select   once per attempt, after a server was picked (fields that depend on it)
 *   response          the response head going to the client: the upstream's or ferry's own
 *                     (a redirect or fixed response; not its bare error responses)
 *   log               after the exchange, once the client has its response (or is gone) and
 *                     before the upstream connection is released; always runs, once, so a
 *                     hook's per-exchange state is released there
 *
 * A hook returns CONTINUE (next hook), DONE (it answered: fy_exchange_respond() was called; the
 * remaining hooks and the upstream are skipped), WAIT (it will call fy_exchange_resume() later;
 * the session waits and then runs the same hook again) or ERROR (the exchange fails with 500).
 *
 * Ownership: a hook may modify the message; strings it adds must live as long as the exchange:
 * the configuration's, or memory from fy_exchange_alloc(). The struct fy_exchange is valid
 * during the call only (and until the exchange ends for a hook that returned WAIT).
 */
#ifndef FY_HOOKS_H
#define FY_HOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conf/conf.h"
#include "conf/template.h"
#include "http/msg.h"
#include "proxy/body_filter.h"

#define FY_MAX_HOOKS 16
#define FY_MAX_ACCEPT_ENCODING 4

enum fy_hook_result { FY_HOOK_CONTINUE, FY_HOOK_DONE, FY_HOOK_WAIT, FY_HOOK_ERROR };

/* What hooks see of one exchange (embedded in the session). Read-only for hooks. */
struct fy_exchange {
    const struct fy_config *cfg;    /* the settings of the exchange's generation */
    const struct fy_conf *conf;     /* its generation */
    const struct fy_route *route;   /* from upstream_request on */
    const struct fy_server *server; /* the current attempt's: upstream_select, response */
    const struct sockaddr *client;
    const char *client_ip; /* text, no port */
    uint32_t client_ip_len;
    const char *orig_host; /* the client's Host as received; NULL if none */
    uint32_t orig_host_len;
    const char *request_id;
    bool tls; /* the client came over TLS */
    /* A forward proxy's exchange: to the request's own destination, not to a group's server
     * (no X-Forwarded-* fields: a forward proxy does not tell the world its clients'
     * addresses). */
    bool forward;
    /* The client connection's transport, for fy_tls_* queries; NULL once the client is gone. */
    const struct fy_sock *client_sock;
    const struct fy_listener_conf *listener; /* the listener the request came in on */
    const struct fy_msg *req; /* the request as the upstream got it (response hooks: its head) */
    /* The client's Accept-Encoding fields as it sent them (the first FY_MAX_ACCEPT_ENCODING):
     * they point into the request's own strings, so they stay valid when a rule or a script
     * removes or replaces the field for the upstream. Compression negotiates with these. */
    struct {
        const char *value;
        uint32_t len;
    } accept_encoding[FY_MAX_ACCEPT_ENCODING];
    uint8_t n_accept_encoding;
    /* Response hooks on an upstream's response: the chain its body will go through; a hook adds
     * a filter with fy_bf_chain_add() (the session then re-frames the body: no Content-Length,
     * chunked or close). NULL where the body cannot be filtered (ferry's own responses). */
    struct fy_bf_chain *body_filters;
    /* Request and upstream_request hooks of a request with a body: the chain the request body
     * will go through on its way upstream (it is then sent chunked). NULL otherwise. */
    struct fy_bf_chain *request_body_filters;
    /* A request hook changed the target or the Host field: the session works out the path,
     * query and host again before routing (the access log keeps the target as received). */
    bool retarget;
    /* Each registered hook's data (by its index in fy_hooks): gen_data[i] is what its gen_open
     * made for this worker and generation; data[i] is the hook's own, for this exchange. */
    void *const *gen_data;
    void *data[FY_MAX_HOOKS];
};

/* What the log hooks see of a finished exchange (valid during the call only). */
struct fy_exchange_log {
    const struct fy_msg *req;  /* as sent upstream (or answered by ferry) */
    const struct fy_msg *resp; /* the response head the client got; NULL for ferry's errors */
    int status;
    uint64_t duration_us, upstream_connect_us, upstream_first_byte_us;
    uint64_t bytes_in, bytes_out;
    const struct sockaddr *upstream; /* the server used, or NULL */
    const char *tls_version;         /* the client's TLS, NULL: plain */
    const char *tls_sni;
    const char *request_id;
    const char *route; /* "ferry.yaml:12", NULL when none matched */
};

typedef enum fy_hook_result fy_hook_fn(struct fy_exchange *x, struct fy_msg *m);
typedef void fy_log_hook_fn(struct fy_exchange *x, const struct fy_exchange_log *info);
/* Per-generation state of a hook in one worker (a script's Lua state): made when the worker
 * starts using generation c (in the worker's thread, or at startup before it runs), freed when
 * the worker's last exchange on it has ended. NULL from gen_open: none (not an error). */
typedef void *fy_hook_gen_open_fn(const struct fy_conf *c);
typedef void fy_hook_gen_close_fn(void *data);

struct fy_hook {
    const char *name;
    fy_hook_fn *request;
    fy_hook_fn *upstream_request;
    fy_hook_fn *upstream_select;
    fy_hook_fn *response;
    fy_log_hook_fn *log;
    fy_hook_gen_open_fn *gen_open;
    fy_hook_gen_close_fn *gen_close;
};

/* Adds a hook (a static object) after the ones already registered. Only at startup, before any
 * worker runs; returns 0, or -1 when FY_MAX_HOOKS are registered. */
int fy_hooks_register(const struct fy_hook *h);

/* The registered hooks, in order. */
extern const struct fy_hook *fy_hooks[FY_MAX_HOOKS];
extern unsigned fy_nhooks;

/* h's index in fy_hooks (h must be registered). */
unsigned fy_hook_index(const struct fy_hook *h);

/* Memory that lives as long as the exchange (for values a hook adds). NULL: out of memory. */
char *fy_exchange_alloc(struct fy_exchange *x, size_t n);

/* The template variables of this exchange (for rendering a route's values). */
void fy_exchange_vars(struct fy_exchange *x, struct fy_tctx *out);

/* From a request or upstream_request hook that returns DONE: answer with a response ferry makes
 * (status, a text body; the route's response rules still apply). Returns 0 or -1. */
int fy_exchange_respond(struct fy_exchange *x, int status, const char *body);

/* Like fy_exchange_respond with a body of `len` bytes (copied) and fields: returns the message
 * whose fields the response gets (the session's, emptied; add to it with fy_msg_add, strings
 * from fy_exchange_alloc), or NULL when out of memory. A Content-Type among them replaces
 * ferry's default. */
struct fy_msg *fy_exchange_respond_with(struct fy_exchange *x, int status, const char *body,
                                        size_t len);

/* A hook that returned WAIT is done waiting: the session runs again (never inline). */
void fy_exchange_resume(struct fy_exchange *x);

#endif
