/*
 * One exchange as a Lua script sees it: the req and resp objects handed to the hooks of
 * lua/lua_vm.h, their headers, req:respond(), req:filter_body() and resp:filter_body(). The
 * session fills a view
 * (struct fy_lua_xview) and embeds a struct fy_lua_x; this module never touches sockets.
 *
 * Objects: req and resp are userdata created once per exchange (on_request, on_response and
 * on_log see the same objects, so req.ctx, a table, persists). They hold a pointer to the
 * exchange that fy_lua_x_release() clears, so an object a script kept raises "the exchange is
 * over" instead of reaching freed memory; used during another exchange's call it raises too.
 * What a call may change: req.headers, req.method, req.path, req.host, req:respond() and
 * req:filter_body() in on_request; resp.headers, resp.status and resp:filter_body() in
 * on_response; nothing in a body filter or on_log; everything else is read-only (req.ctx is
 * always writable). The request and response body filters are separate: a script may set both,
 * each has its own function and output. Header writes are validated as HTTP does (a token
 * for the name; no CR, LF, NUL or other control characters but HTAB in the value), and the fields
 * that frame or route a message (Content-Length, Transfer-Encoding, Connection, the other
 * hop-by-hop fields, Expect, Host) cannot be set or removed: framing is ferry's job.
 */
#ifndef FY_LUA_EXCHANGE_H
#define FY_LUA_EXCHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filters/hdr_rules.h" /* fy_scratch_fn */
#include "http/msg.h"
#include "lua/lua_vm.h"

/* Filled by the session before the first call; the strings stay valid for the whole exchange.
 * The view must stay at the same address until fy_lua_x_release() (body filters use the one
 * given to the last hook). req and resp are read at every access: keep them pointing to the
 * current heads, or NULL (a NULL head reads as having no fields). */
struct fy_lua_xview {
    const char *method, *scheme, *host, *path, *client_ip;
    uint32_t method_len, scheme_len, host_len, path_len, client_ip_len;
    struct fy_msg *req;  /* the request head: req.headers (modifiable in on_request) */
    struct fy_msg *resp; /* the response head, from on_response on (NULL before) */
    /* Memory that lives as long as the exchange: every string put into a fy_msg (which
     * references, not copies) and every new method/path/host is copied there. */
    fy_scratch_fn *alloc;
    void *alloc_ctx;
};

/* The Lua side of one exchange, embedded in the session; initialise with fy_lua_x_init. */
struct fy_lua_x {
    int req_ref, resp_ref, ctx_ref, filter_ref, out_ref; /* registry references or LUA_NOREF */
    int req_filter_ref, req_out_ref; /* req:filter_body()'s function and its last output */
    int respond_ref;           /* the fields given to req:respond(), a {name, value, ...} list */
    struct fy_lua_xview *view; /* the view of the last hook call */
    /* results for the session */
    bool responded; /* on_request returned req:respond(...) */
    int respond_status;
    const char *respond_body; /* copied with alloc; NULL when no body was given */
    uint32_t respond_body_len;
    bool path_changed, method_changed, host_changed; /* new values in the view (alloc'd copies) */
    char err[256];                                   /* the last error, "FILE:LINE: message" */
};

enum fy_lua_rc { FY_LUA_CONTINUE, FY_LUA_RESPONDED, FY_LUA_ERROR };

void fy_lua_x_init(struct fy_lua_x *x);

/* Calls on_request(req) when the script has one (CONTINUE otherwise, at no cost). RESPONDED:
 * the hook returned req:respond(...): respond_status/respond_body hold the answer and
 * fy_lua_respond_fields() its fields (a request body filter it set is then moot). CONTINUE: go
 * on (path/method/host may have changed, see the *_changed flags; req.headers changes are
 * already in v->req; fy_lua_wants_request_body() says whether the body is filtered). ERROR:
 * x->err says why; fail the request (500). */
enum fy_lua_rc fy_lua_on_request(struct fy_lua *vm, struct fy_lua_x *x, struct fy_lua_xview *v);

/* Adds the fields the script gave req:respond() to m (strings copied with v->alloc). No
 * Content-Length is added: the session frames respond_body. Returns 0 or -1 (out of memory, or
 * a memory error in the state). */
int fy_lua_respond_fields(struct fy_lua *vm, struct fy_lua_x *x, struct fy_lua_xview *v,
                          struct fy_msg *m);

/* Calls on_response(req, resp) when the script has one, v->resp set. resp.status may be
 * assigned (200-599): written to v->resp->status, and v->resp->reason cleared so the writer
 * uses the standard phrase. Returns CONTINUE or ERROR (x->err); never RESPONDED. */
enum fy_lua_rc fy_lua_on_response(struct fy_lua *vm, struct fy_lua_x *x, struct fy_lua_xview *v);

/* True when on_response called resp:filter_body(): the session must then pass the decoded body
 * through fy_lua_filter() and drop the upstream's Content-Length (the length may change). */
bool fy_lua_wants_body(const struct fy_lua_x *x);

/* Calls the body filter function with (chunk, last); `last` once, at the end (len may be 0).
 * On CONTINUE *out and *out_len hold what it returned (nil: the chunk unchanged, *out =
 * chunk); the bytes stay valid until the next fy_lua_filter call or fy_lua_x_release. ERROR:
 * x->err; the response cannot be completed (abort it). Cost: the chunk is copied into a Lua
 * string. */
enum fy_lua_rc fy_lua_filter(struct fy_lua *vm, struct fy_lua_x *x, const char *chunk, size_t len,
                             bool last, const char **out, size_t *out_len);

/* True when on_request called req:filter_body(): the session then passes the request body through
 * fy_lua_filter_request() (and sends it upstream chunked: its length may change). */
bool fy_lua_wants_request_body(const struct fy_lua_x *x);

/* As fy_lua_filter, for the request body's function: its own output reference, so the two
 * filters' outputs do not invalidate each other. *out stays valid until the next
 * fy_lua_filter_request call or fy_lua_x_release. ERROR: the request cannot be completed (abort
 * it towards the upstream). */
enum fy_lua_rc fy_lua_filter_request(struct fy_lua *vm, struct fy_lua_x *x, const char *chunk,
                                     size_t len, bool last, const char **out, size_t *out_len);

/* What on_log's info object shows, under the same names (plus duration_ms, a float; absent
 * strings are nil). Fields are read from this struct when the script reads them, during the call
 * only (the object raises once on_log returned). Strings NUL-terminated. */
struct fy_lua_log_info {
    int status;
    uint64_t duration_us, upstream_connect_us, upstream_first_byte_us;
    uint64_t bytes_in, bytes_out;
    const char *upstream;              /* "addr:port" or NULL */
    const char *tls_version, *tls_sni; /* NULL: plain */
    const char *request_id;
    const char *route;
};

/* Calls on_log(req, resp, info) when the script has one; resp is nil when v->resp is NULL.
 * Errors are only logged (warn). */
void fy_lua_on_log(struct fy_lua *vm, struct fy_lua_x *x, struct fy_lua_xview *v,
                   const struct fy_lua_log_info *info);

/* The exchange is over: drops its references; req/resp objects a script kept (e.g. in a global)
 * now raise "the exchange is over" when used. x may be initialised again afterwards. */
void fy_lua_x_release(struct fy_lua *vm, struct fy_lua_x *x);

#endif
