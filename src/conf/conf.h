/*
 * A configuration generation: the settings (struct fy_config) plus the listeners, routes and
 * upstream groups compiled from the file, or from the quick-mode command line (which compiles
 * into one listener with one catch-all route to one group of one server: both are one schema).
 *
 * Ownership and lifetime: a generation is immutable once fy_conf_build() returned it, and
 * reference-counted. Whoever holds a reference may read any part of it without locks; every
 * pointer into it (route, group, server, strings, compiled regexes) stays valid while the
 * reference is held. A session holds its generation from its start to its end, so a reload never
 * changes the rules of an exchange in flight. The one mutable part is struct fy_server_state,
 * which is shared with the generations that follow (health carries over) and has its own
 * reference count; its fields are only read and written with atomics.
 */
#ifndef FY_CONF_H
#define FY_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"
#include "http/tokens.h"
#include "net/addr.h"

struct fy_tls_server; /* net/tls.h */
struct fy_tls_client;
struct fy_router;    /* proxy/router.h: the route index of one listener */
struct fy_lb_shared; /* proxy/lb.h: immutable per-group balancer data (the server ids of rendezvous
                        hashing) */
typedef struct pcre2_real_code_8 fy_regex; /* pcre2_code (8-bit) without including pcre2.h */

/* ---- value templates: "Bearer ${env:TOKEN}", "https://$host$1" ---- */

/* What a template segment stands for. ${env:}/${file:} are expanded at load time into literals;
 * these are the per-request variables, written $name (or ${name}); $$ is a literal $. */
#define FY_TEMPLATE_VARS(X)                                                                        \
    X(LITERAL, "")                                                                                 \
    X(CAPTURE, "")            /* $0..$9: a capture of the route's path-regex */                    \
    X(HOST, "host")           /* the request's Host, without the port */                           \
    X(SCHEME, "scheme")       /* http, or https on a TLS listener */                               \
    X(CLIENT_IP, "client_ip") /* the client's address, no port */                                  \
    X(REQUEST_ID, "request_id")                                                                    \
    X(METHOD, "method")                                                                            \
    X(PATH, "path")               /* the path, without the query */                                \
    X(QUERY, "query")             /* the query, without '?' (empty if none) */                     \
    X(REQUEST_URI, "request_uri") /* the target as received: path?query */                         \
    /* TLS listeners (empty on plain ones); the client certificate's after mutual TLS */           \
    X(TLS_VERSION, "tls_version")                       /* TLSv1.3 */                              \
    X(TLS_CIPHER, "tls_cipher")                         /* TLS_AES_128_GCM_SHA256 */               \
    X(TLS_SERVER_NAME, "tls_server_name")               /* the SNI the client sent */              \
    X(TLS_CLIENT_SUBJECT, "tls_client_subject")         /* RFC 2253: CN=alice,O=Example */         \
    X(TLS_CLIENT_FINGERPRINT, "tls_client_fingerprint") /* SHA-256, lower-case hex */              \
    X(TLS_CLIENT_VERIFY, "tls_client_verify")           /* SUCCESS, NONE or FAILED: reason */

enum fy_tvar {
#define X(id, name) FY_TV_##id,
    FY_TEMPLATE_VARS(X)
#undef X
};

struct fy_tseg {
    enum fy_tvar var;
    uint32_t len;     /* FY_TV_LITERAL */
    const char *text; /* FY_TV_LITERAL: points into the template's own block */
    int capture;      /* FY_TV_CAPTURE */
};

struct fy_template {
    struct fy_tseg *segs;
    uint32_t nsegs;
    /* No variable: the whole value, ready to reference (NULL-terminated too). */
    const char *constant;
    uint32_t constant_len;
    char *block;  /* owns every literal's text */
    char *source; /* as written (${env:} unexpanded), for --print-config and messages */
};

/* ---- header rules ---- */

enum fy_rule_op {
    FY_RULE_SET,    /* replace every field of the name with one */
    FY_RULE_ADD,    /* append one more field */
    FY_RULE_REMOVE, /* hide every field of the name */
};

struct fy_hrule {
    enum fy_rule_op op;
    char *name;
    uint32_t name_len;
    enum fy_token tok;        /* FY_TOK_OTHER unless a well-known field */
    struct fy_template value; /* unused for FY_RULE_REMOVE */
};

/* A list of rules applied in order: all removals, then sets, then adds, as in the file. */
struct fy_hrules {
    struct fy_hrule *items;
    uint32_t n;
    fy_tokmask mask; /* well-known fields named, so ferry's own (Host, Via...) step aside */
    bool always;     /* response rules: also on ferry's own error responses */
};

/* ---- routes ---- */

enum fy_value_match { FY_VM_PRESENT, FY_VM_EQUALS, FY_VM_REGEX };

/* A header (or query parameter) condition: present, equal to a value (headers: exact, case
 * sensitive; any field of the name may match), or matching a regex. */
struct fy_kv_match {
    char *name; /* headers: compared case-insensitively */
    uint32_t name_len;
    enum fy_value_match kind;
    char *value;
    uint32_t value_len;
    fy_regex *re;
};

struct fy_match {
    char **hosts; /* lower case, no port; "*.example.com" matches any subdomain (not the apex) */
    uint32_t nhosts;
    char *path; /* exact */
    char *path_prefix;
    fy_regex *path_regex; /* JIT-compiled; its captures feed $1..$9 */
    char *path_regex_src;
    char **methods; /* upper case as written; NULL = any */
    uint32_t nmethods;
    struct fy_kv_match *headers;
    uint32_t nheaders;
    struct fy_kv_match *query;
    uint32_t nquery;
};

/* FY_ACT_FORWARD: to the request's own destination (a forward listener's last route, added by
 * the configuration; never written in a file). */
enum fy_route_action { FY_ACT_PROXY, FY_ACT_REDIRECT, FY_ACT_RESPOND, FY_ACT_FORWARD };

enum fy_rewrite_kind { FY_RW_NONE, FY_RW_STRIP_PREFIX, FY_RW_REPLACE_PREFIX, FY_RW_REGEX };

struct fy_path_rewrite {
    enum fy_rewrite_kind kind;
    char *prefix; /* strip-prefix, replace-prefix: the prefix taken off */
    char *with;   /* replace-prefix: what goes in its place */
    fy_regex *re; /* regex */
    struct fy_template replacement;
};

/* compress: on a listener or a route (filters/compress.c, docs/config.md). */
#define FY_COMPRESS_CODINGS 3 /* gzip, br, zstd */
struct fy_compress_conf {
    bool on; /* false: `compress: off` (a route turning its listener's compression off) */
    /* The codings ferry may use (enum fy_coding values, filters/codec.h), the server's
     * preference first: it breaks ties between codings the client accepts equally. */
    uint8_t prefer[FY_COMPRESS_CODINGS];
    uint8_t nprefer;
    uint8_t level[8];  /* by enum fy_coding */
    uint64_t min_size; /* a body with a Content-Length below this is sent as it is */
    char **types;      /* media type patterns, '*' matching any run of characters; lowercase */
    uint32_t ntypes;
};
void fy_compress_conf_free(struct fy_compress_conf *c);

/* lua: on a listener or a route (filters/lua_hook.c, docs/lua.md). */
struct fy_lua_conf {
    char *file;         /* the script, joined to the configuration's directory */
    char *where;        /* "ferry.yaml:12", for log lines */
    bool on_error_pass; /* on-error: pass (else fail: 500, or a cut connection mid-body) */
    uint64_t max_memory, max_instructions;
    uint64_t max_decoded; /* a body filter's decoded body, at most */
    uint32_t max_ratio;   /* ... and at most this many times its encoded size (past 1 MiB) */
    uint32_t slot;        /* among the generation's scripts (fy_conf.nlua) */
};
void fy_lua_conf_free(struct fy_lua_conf *c);

/* Per-route overrides of the global settings; 0 (or -1 for tri-states) = the global value. */
struct fy_route_limits {
    uint64_t connect_timeout, upstream_timeout; /* ms */
    uint64_t max_body_size;                     /* bytes; UINT64_MAX = unlimited */
    int abort_on_client_close;                  /* -1 inherit, 0 off, 1 on */
};

struct fy_route {
    uint32_t index; /* in its listener, file order: the first match wins */
    char *where;    /* "ferry.yaml:12" (or "command line"), for logs */
    bool has_match; /* false: matches everything */
    struct fy_match match;
    enum fy_route_action action;
    struct fy_group *group; /* FY_ACT_PROXY */
    struct fy_path_rewrite rewrite;
    enum fy_host_mode host_mode; /* Host sent upstream */
    struct fy_template host_value;
    struct fy_hrules request_rules, response_rules;
    /* redirect / respond */
    int status;
    struct fy_template location; /* redirect */
    struct fy_template body;     /* respond */
    char *content_type;          /* respond; NULL = text/plain; charset=utf-8 */
    struct fy_route_limits limits;
    struct fy_hrules respond_headers;  /* respond: its headers: (FY_RULE_SET each, file order) */
    struct fy_capture *capture;        /* capture: its exchanges (one reference); NULL = the
                                        * listener's */
    struct fy_compress_conf *compress; /* owned; NULL = the listener's */
    struct fy_lua_conf *lua;           /* owned; NULL = the listener's */
};

/* ---- forward proxy (a listener's forward: and intercept: blocks) ---- */

struct fy_cidr_list;     /* filters/acl.h */
struct fy_ports;         /* filters/acl.h */
struct fy_dest_policy;   /* filters/acl.h */
struct fy_dest_rules;    /* filters/acl.h */
struct fy_htpasswd;      /* filters/htpasswd.h */
struct fy_tls_intercept; /* net/tls.h */
struct fy_capture;       /* proxy/capture.h */

/* HTTPS interception of CONNECT tunnels: ferry answers the tunnel itself, terminates the
 * client's TLS with a certificate minted for the name asked for, and proxies the requests inside
 * like any other (docs/forward-proxy.md). */
struct fy_intercept_conf {
    struct fy_tls_intercept *tls;       /* the CA and the client-facing context (one reference) */
    struct fy_dest_rules *pass_through; /* host patterns tunnelled untouched; NULL = none */
    uint32_t cert_cache_size;           /* minted certificates kept per worker */
};

struct fy_forward_conf {
    struct fy_cidr_list *allow_clients; /* who may use the proxy (default: loopback, private) */
    struct fy_ports *connect_ports;     /* the ports CONNECT may reach (default: 443) */
    struct fy_dest_policy *dests;       /* allow:/deny: destinations; NULL = any */
    struct fy_htpasswd *auth;           /* Proxy-Authorization users; NULL = none asked */
    char *realm;                        /* Proxy-Authenticate's realm */
    char *auth_header;                  /* the whole Proxy-Authenticate value, made once */
    /* How https destinations are reached (an absolute https:// URL, an intercepted tunnel): the
     * system store or upstream-ca, or insecure-skip-verify. One reference. */
    struct fy_tls_client *tls;
    struct fy_intercept_conf *intercept; /* NULL: CONNECT makes a plain tunnel */
    char *where;                         /* "ferry.yaml:3" of the forward: block */
};

struct fy_listener_conf {
    struct fy_addr *addrs;
    char **addr_texts; /* as written */
    uint32_t naddrs;
    struct fy_route *routes;
    uint32_t nroutes;
    struct fy_router *router; /* the index over routes (built with the generation) */
    char *where;
    /* tls: terminate TLS with these certificates (one reference, dropped by
     * fy_listeners_free); NULL = plain HTTP. */
    struct fy_tls_server *tls;
    /* forward: this listener is a forward proxy (its routes, then forwarding); NULL = a reverse
     * proxy listener. Owned (fy_listeners_free). */
    struct fy_forward_conf *forward;
    struct fy_capture *capture;        /* capture: every exchange (one reference); NULL = none */
    struct fy_compress_conf *compress; /* compress: (owned); NULL = none */
    struct fy_lua_conf *lua;           /* lua: (owned); NULL = none */
};

/* ---- upstream groups ---- */

enum fy_balance { FY_LB_ROUND_ROBIN, FY_LB_LEAST_CONN, FY_LB_P2C, FY_LB_HASH, FY_LB_STICKY };
enum fy_hash_key { FY_HK_CLIENT_IP, FY_HK_HEADER, FY_HK_COOKIE, FY_HK_PATH };

/* A server's state shared by every worker and carried from one generation to the next while the
 * server stays (same group name and URL). Atomics only. */
struct fy_server_state {
    int refs;                  /* generations using it */
    unsigned active;           /* connections in use (max-conns, least-conn) */
    bool down;                 /* the active health check says down */
    unsigned fails;            /* consecutive failed exchanges (passive ejection) */
    unsigned ejections;        /* consecutive ejections: the backoff grows with them */
    uint64_t ejected_until_ms; /* passive ejection: not picked before this (monotonic ms) */
    /* Active check (proxy/health.c, one thread): consecutive passes, counted towards `rise`
     * while down, and consecutive failures, counted towards `fall` while up. */
    unsigned hc_ok;
    unsigned hc_fail;
};

struct fy_server {
    uint32_t index;  /* in its group */
    char *url;       /* as written: http://host:port */
    char *authority; /* host:port: the default Host sent upstream */
    char *host;
    uint16_t port;
    struct fy_addr addr;
    uint32_t weight; /* >= 1 */
    bool backup;
    uint32_t max_conns; /* 0 = unlimited */
    char cookie_id[17]; /* sticky: this server's cookie value (hex of a hash of its URL) */
    struct fy_group *group;
    struct fy_server_state *state;
    /* Every address host resolved to (IPv4 first, then IPv6, sorted: net/resolver.h); addr is
     * addrs[0]. The others are alternatives, to try when a connect is refused. Owned. */
    struct fy_addr *addrs;
    uint32_t naddrs;
    /* Where this server's addresses start among its group's pool slots (fy_conf_build): a
     * worker keeps one connection pool per slot. */
    uint32_t pool_slot;
    /* https:// servers: the group's TLS context (borrowed from group->tls) and the name sent as
     * SNI and verified in the certificate (server-name, else the URL's host). NULL = http. */
    struct fy_tls_client *tls;
    char *tls_name;
};

struct fy_health {
    bool enabled;
    char *path;
    uint64_t interval, timeout; /* ms */
    uint32_t rise, fall;
    /* expected statuses: ranges lo..hi */
    uint16_t (*expect)[2];
    uint32_t nexpect;
};

struct fy_group {
    uint32_t index;
    char *name;
    char *where;
    struct fy_server *servers;
    uint32_t nservers, nprimary; /* primaries first, backups after them */
    enum fy_balance balance;
    enum fy_hash_key hash_key;
    char *hash_name; /* header or cookie name */
    uint32_t hash_name_len;
    char *sticky_cookie; /* FY_LB_STICKY */
    uint32_t retries;    /* further servers tried after the first */
    /* Passive ejection: max_fails consecutive failures take a server out for fail_timeout,
     * doubling with each consecutive ejection (capped at FY_LB_MAX_EJECT_MS). 0 = off. */
    uint32_t max_fails;
    uint64_t fail_timeout; /* ms */
    /* When every usable server is at max-conns, up to max_queue requests per worker wait for a
     * connection to end, at most queue_timeout ms (then 503). */
    uint32_t max_queue;
    uint64_t queue_timeout; /* ms */
    struct fy_health health;
    struct fy_lb_shared *lb; /* built with the generation */
    uint32_t npool_slots;    /* the addresses of all its servers */
    /* The group's tls: settings as a context, built when any server is https:// (one reference,
     * dropped by fy_groups_free); NULL otherwise. */
    struct fy_tls_client *tls;
};

/* Free what conf/schema*.c compiled (arrays of n, the array itself too; NULL/0 is fine). Neither
 * touches l->router, g->lb or server states: those belong to the generation (fy_conf_build). */
void fy_listeners_free(struct fy_listener_conf *ls, uint32_t n);
void fy_groups_free(struct fy_group *gs, uint32_t n);

/* ---- the generation ---- */

struct fy_conf {
    int refs; /* atomic */
    unsigned generation;
    struct fy_config settings; /* the globals (and how ferry was invoked) */
    struct fy_listener_conf *listeners;
    uint32_t nlisteners;
    struct fy_group *groups;
    uint32_t ngroups;
    /* The top-level request-header/response-header... options of a file with listeners: applied
     * before every route's own rules (quick mode folds them into its one route instead). */
    struct fy_hrules global_request_rules, global_response_rules;
    uint32_t nlua; /* scripts (lua: blocks), each with its slot */
};

/* Compiles parsed settings into a generation with one reference. `settings` is moved in (left
 * reset to the defaults, safe to free); quick mode (no listeners) becomes one listener, one
 * catch-all route and one group "default". Server states of servers that `prev` also has (same
 * group name and URL) are shared, so health carries over a reload. NULL on failure, with err
 * saying why (out of memory, or a quick-mode file that cannot be opened: --capture, --lua). */
struct fy_conf *fy_conf_build(struct fy_config *settings, const struct fy_conf *prev, char *err,
                              size_t errlen);

/* A new reference. */
struct fy_conf *fy_conf_ref(struct fy_conf *c);

/* Drops a reference; the last one frees the generation (and server states no other generation
 * shares). NULL is ignored. */
void fy_conf_unref(struct fy_conf *c);

/* The group named `name`, or NULL. */
struct fy_group *fy_conf_group(const struct fy_conf *c, const char *name);

/* Monotonic milliseconds (for ejection deadlines shared across threads). */
uint64_t fy_conf_now_ms(void);

#endif
