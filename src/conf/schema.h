/*
 * The file's listeners: and upstreams: compiled into struct fy_listener_conf and struct fy_group
 * (conf/conf.h), owned by the struct fy_config being loaded. Private to src/conf: yaml.c calls
 * the entry points, schema_route.c and schema_upstream.c share the node readers below.
 *
 * Every reader reports its own errors at the node's position (fy_yaml_report) and returns a
 * failure the caller only uses to skip dependent checks, so one run reports every mistake. What
 * is compiled is attached to c->listeners / c->groups as soon as it is allocated, so a failed
 * load frees everything through fy_config_free() (fy_listeners_free, fy_groups_free).
 */
#ifndef FY_CONF_SCHEMA_H
#define FY_CONF_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <yaml.h>

#include "conf/conf.h"
#include "conf/yaml_priv.h"

/* listeners: (a sequence of listeners) into l->c->listeners. */
void fy_schema_load_listeners(struct fy_yaml_loader *l, const yaml_node_t *v);

/* upstreams: (a mapping of group names to groups) into l->c->groups. */
void fy_schema_load_upstreams(struct fy_yaml_loader *l, const yaml_node_t *v);

/* After the whole file: points each route's group (and each server's) into the final groups
 * array, reporting unknown names. */
void fy_schema_resolve(struct fy_yaml_loader *l);

/* After the whole file (called by fy_schema_resolve): resolves every server's host with the
 * file's resolver settings (fy_resolve), filling addr, addrs and naddrs; a name that does not
 * resolve is reported at its URL. */
void fy_schema_resolve_servers(struct fy_yaml_loader *l);

/* Frees the loader's bookkeeping (pending names, seen addresses). */
void fy_schema_loader_done(struct fy_yaml_loader *l);

/* The number of entries of a static key table. */
#define NKEYS(a) (sizeof(a) / sizeof(a[0]))

/* ---- node readers (schema.c) ---- */

/* Checks that `map` is a mapping whose keys are all in `keys` (each at most once): an unknown
 * key is reported with the closest known one. `what` names the mapping in messages ("match").
 * Returns false when map is not a mapping (reported). */
bool fy_sc_keys(struct fy_yaml_loader *l, const yaml_node_t *map, const char *what,
                const char *const *keys, size_t nkeys);

/* The value (or key) node of `key` in a mapping, or NULL. */
const yaml_node_t *fy_sc_get(struct fy_yaml_loader *l, const yaml_node_t *map, const char *key);
const yaml_node_t *fy_sc_key(struct fy_yaml_loader *l, const yaml_node_t *map, const char *key);

/* The n-th pair's key and value nodes of a mapping. */
const yaml_node_t *fy_sc_pair(struct fy_yaml_loader *l, const yaml_node_t *map, size_t i,
                              const yaml_node_t **value);
size_t fy_sc_npairs(const yaml_node_t *map);

/* "One or a list": a scalar counts as a list of itself. fy_sc_nitems() is 0 for a mapping (and
 * reports it as "WHAT expects a value or a list of values"). */
size_t fy_sc_nitems(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what);
const yaml_node_t *fy_sc_item(struct fy_yaml_loader *l, const yaml_node_t *v, size_t i);

/* A scalar's text with ${env:}/${file:} expanded (malloc'd), or NULL (reported). */
char *fy_sc_string(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what);

/* A file path, joined to the configuration file's directory when relative (malloc'd), or NULL
 * (reported). */
char *fy_sc_path(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what);

/* A scalar's text as written (points into the document), or NULL (reported). */
const char *fy_sc_raw(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what);

/* Typed scalars; each returns 0, or -1 (reported; *out untouched). */
int fy_sc_duration(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what, uint64_t *out);
int fy_sc_u32(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what, uint32_t min,
              uint32_t max, uint32_t *out);
int fy_sc_bool(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what, bool *out);

/* A template (template.h flags); 0 or -1 (reported). */
int fy_sc_template(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what, unsigned flags,
                   struct fy_template *t);

/* A PCRE2 pattern, compiled and JIT-compiled; NULL when it does not compile (reported with
 * pcre2's message and offset). *src receives the pattern (malloc'd) when src is not NULL. */
fy_regex *fy_sc_regex(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what, char **src);

/* Capturing groups of a compiled pattern. */
uint32_t fy_sc_regex_groups(const fy_regex *re);

/* Reports a template's $N beyond the groups of `re` (the pattern its captures come from). */
void fy_sc_check_captures(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what,
                          const struct fy_template *t, const fy_regex *re);

/* "FILE:LINE" of a node (malloc'd). */
char *fy_sc_where(struct fy_yaml_loader *l, const yaml_node_t *v);

/* `key:` with nothing after it. */
bool fy_sc_is_null(const yaml_node_t *v);

/* A header field name (or cookie name): one or more token characters. */
bool fy_sc_is_token(const char *s, size_t n);

/* ---- the parts (schema_route.c, schema_hdr.c) ---- */

void fy_schema_load_route(struct fy_yaml_loader *l, struct fy_route *rt, const yaml_node_t *v);

/* request-headers / response-headers of a route: { set, add, remove (, always) }. Values may use
 * captures of `re`, the route's path-regex (NULL: no captures). */
void fy_schema_load_hrules(struct fy_yaml_loader *l, struct fy_hrules *r, const yaml_node_t *v,
                           const char *what, bool response, const fy_regex *re);

/* respond: { headers: {Name: value} } (sets). */
void fy_schema_load_hsets(struct fy_yaml_loader *l, struct fy_hrules *r, const yaml_node_t *v,
                          const char *what, bool response, const fy_regex *re);

/* True when a header value's literal text holds no control character but HTAB (variables are
 * request values that the codec already checked). */
bool fy_sc_header_value_ok(const struct fy_template *t);

void fy_route_free(struct fy_route *rt);
void fy_hrules_free(struct fy_hrules *r);

/* ---- lua (schema_lua.c) ---- */

struct fy_lua_conf;
/* A listener's or route's lua: (a file, or { file, on-error, max-... }), its script checked;
 * NULL after a reported error. */
struct fy_lua_conf *fy_schema_load_lua(struct fy_yaml_loader *l, const yaml_node_t *v);
/* A script's settings with the defaults, once fy_lua_check() passed (quick mode's --lua too).
 * NULL with err set ("FILE:LINE: message"). */
struct fy_lua_conf *fy_lua_conf_new(const char *file, const char *where, char *err, size_t errlen);

/* ---- compress (schema_compress.c) ---- */

struct fy_compress_conf;
/* A listener's or route's compress: (on/off, or a mapping); NULL after a reported error. */
struct fy_compress_conf *fy_schema_load_compress(struct fy_yaml_loader *l, const yaml_node_t *v);
/* compress: on with every default (quick mode's --compress). NULL when out of memory. */
struct fy_compress_conf *fy_compress_conf_default(void);

/* ---- capture (schema_capture.c) ---- */

struct fy_capture;
/* A listener's or route's capture: (a file name, or { file, max-body, redact }), opened; NULL
 * when it cannot be (reported). */
struct fy_capture *fy_schema_load_capture(struct fy_yaml_loader *l, const yaml_node_t *v);

/* Opens a capture file with these options (quick mode's --capture too). NULL with err set. */
struct fy_capture *fy_conf_capture_open(const char *path, uint64_t max_body,
                                        const char *const *redact, uint32_t nredact, char *err,
                                        size_t errlen);

/* ---- forward proxy (schema_forward.c) ---- */

/* A listener's forward: and intercept: blocks (key/value nodes; either pair may be NULL) into
 * lc->forward, with the forwarding route appended to its routes. */
void fy_schema_load_forward(struct fy_yaml_loader *l, struct fy_listener_conf *lc,
                            const yaml_node_t *fkey, const yaml_node_t *fwd,
                            const yaml_node_t *ikey, const yaml_node_t *icp);

/* After the whole file (called by fy_schema_resolve): builds each forward listener's contexts
 * with the top-level upstream-ca and insecure-skip-verify as defaults, and frees what the
 * loader kept for it. */
void fy_schema_finish_forward(struct fy_yaml_loader *l);

/* ---- TLS (schema_tls.c) ---- */

/* fy_tls_init() once per process (main thread); later calls return 0 at once. Returns 0, or -1
 * with `err` filled. */
int fy_conf_tls_init(char *err, size_t errlen);

/* A listener's tls: block (`key` is the tls: key node, `v` its value) into lc->tls. */
void fy_schema_load_listener_tls(struct fy_yaml_loader *l, struct fy_listener_conf *lc,
                                 const yaml_node_t *key, const yaml_node_t *v);

/* After a group's servers are loaded: its tls: block (`key`/`v` NULL when it has none), refused
 * without an https:// server; sets every https server's tls_name and, when there is one, queues
 * the group for fy_schema_build_group_tls(). `name_key` is the group's name, for messages. */
void fy_schema_load_group_tls(struct fy_yaml_loader *l, struct fy_group *g,
                              const yaml_node_t *name_key, const yaml_node_t *key,
                              const yaml_node_t *v);

/* After the whole file (called by fy_schema_resolve): builds the queued groups' contexts with
 * the top-level upstream-ca and insecure-skip-verify as defaults, points their https servers at
 * them and warns about every group that does not verify its servers. */
void fy_schema_build_group_tls(struct fy_yaml_loader *l);

/* A server-name: a host name or IP address to send as SNI and verify (malloc'd), or NULL
 * (reported). */
char *fy_sc_server_name(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what);

/* Whether a server URL speaks TLS. */
bool fy_sc_is_https(const char *url);

/* Quick mode, once the file and the command line are applied: checks tls-cert/tls-key (both or
 * neither) and upstream-ca/insecure-skip-verify (an https:// upstream), and builds
 * c->quick_tls and c->quick_upstream_tls. Returns FY_ARGS_OK; FY_ARGS_FILE_ERROR with
 * c->file_errors when the value at fault came from the file (FILE:LINE:COL); FY_ARGS_ERROR with
 * one line in `err` when it came from the command line. */
enum fy_args_result fy_conf_quick_tls(struct fy_config *c, char *err, size_t errlen);

/* The quick-mode error conventions above for option `key`: " needs ..." is appended to the
 * option's name (--key from the command line, FILE:LINE:COL: key from the file). */
enum fy_args_result fy_conf_quick_error(struct fy_config *c, const char *key, char *err,
                                        size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif
