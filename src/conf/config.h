/*
 * ferry's settings after parsing the command line and the configuration file (one schema: every
 * command-line option is a top-level key of the file, see the option table fy_options). Everything
 * is filled in at startup, then read-only and shared by all workers without locks.
 */
#ifndef FY_CONFIG_H
#define FY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/log.h"
#include "net/addr.h"
#include "net/resolver.h"

struct fy_header_rule {
    char *name;
    char *value; /* NULL for a removal */
    uint32_t name_len, value_len;
    char *source; /* as given, ${env:...} unexpanded (for --print-config); may be NULL */
};

struct fy_header_rules {
    struct fy_header_rule *items;
    uint32_t n;
};

enum fy_host_mode { FY_HOST_UPSTREAM, FY_HOST_PRESERVE, FY_HOST_VALUE };
enum fy_log_target { FY_ALOG_STDOUT, FY_ALOG_OFF, FY_ALOG_FILE };
enum fy_log_format { FY_ALOG_COMBINED, FY_ALOG_JSON, FY_ALOG_PRETTY };

struct fy_listener_conf; /* conf/conf.h */
struct fy_group;
struct fy_tls_server; /* net/tls.h */
struct fy_tls_client;

#define FY_OPT_SLOTS 64 /* >= the number of entries of fy_options; <= 64 (early_given) */

struct fy_config {
    char *listen_text;
    struct fy_addr listen;

    char *upstream_text;      /* as given: http://host:port */
    char *upstream_authority; /* host:port, the default Host sent upstream */
    struct fy_addr upstream;

    int workers;

    /* Quick mode TLS: --tls-cert/--tls-key make --listen a TLS listener; --upstream-ca and
     * --insecure-skip-verify apply to an https:// --upstream. NULL/false = not given. With
     * listeners:, upstream-ca and insecure-skip-verify are the defaults of every group with an
     * https:// server (its tls: block overrides them); tls-cert/tls-key are refused. Paths are
     * absolute, or relative to the working directory (a file's relative paths are joined to its
     * directory when read). */
    char *tls_cert, *tls_key;
    char *upstream_ca;
    bool insecure_skip_verify;
    /* Quick mode: the contexts made from the four above by fy_args_parse(), so that -t checks
     * the certificates (one reference each; fy_conf_build() moves them to the listener and the
     * group, fy_config_free() drops what is still here). NULL = plain HTTP. */
    struct fy_tls_server *quick_tls;
    struct fy_tls_client *quick_upstream_tls;
    /* Quick mode with --forward: the forward listener's settings, compiled by fy_args_parse()
     * (conf/forward.h); moved to the listener by fy_conf_build(). */
    struct fy_forward_conf *quick_forward;

    struct fy_header_rules request_rules; /* applied in order: set or remove */
    struct fy_header_rules response_rules;
    enum fy_host_mode host_mode;
    char *host_value;
    bool x_forwarded_for, x_forwarded_proto, x_forwarded_host, via;
    char *upgrade_protocols; /* comma-separated Upgrade protocols tunnelled; NULL = "websocket" */
    bool abort_on_client_close; /* a client hang-up while the upstream thinks abandons it */
    bool trust_request_id;      /* keep a client's X-Request-Id instead of making one */
    char *pid_file;             /* NULL = none */
    /* Large plain-to-plain response bodies move socket to socket through a pipe (splice(2))
     * instead of being copied through ferry's buffers; a Content-Length body qualifies from
     * splice_min_size bytes (docs/internals/splice.md). */
    bool splice;
    uint64_t splice_min_size;

    /* Forward proxy, quick mode (ferry --forward --listen ...); with listeners: each listener's
     * forward: and intercept: blocks say the same (docs/forward-proxy.md). The lists are
     * comma-separated as given (repeating an option appends). NULL/false = not given. */
    bool forward, intercept;
    char *connect_ports; /* "443,8443"; NULL = 443 */
    char *allow_clients; /* CIDRs; NULL = loopback and private ranges */
    char *htpasswd;      /* Proxy-Authorization users */
    char *ca_cert, *ca_key, *state_dir;
    char *pass_through; /* host patterns tunnelled without interception */
    /* Quick mode: capture every exchange to this file (docs/capture.md). */
    char *capture;
    /* Quick mode: compress responses with every default (a listener's compress: block). */
    bool compress;
    /* Quick mode: run this Lua script's hooks (a listener's lua: block). */
    char *lua;

    enum fy_log_target access_log;
    char *access_log_path;
    enum fy_log_format access_log_format;
    uint32_t verbose; /* the pretty log: 1 (-v) adds heads, 2 (-vv) bodies */
    enum fy_log_level log_level;

    /* milliseconds */
    uint64_t header_timeout, idle_timeout, body_timeout, connect_timeout, upstream_timeout,
        send_timeout, drain_timeout, pool_idle_timeout;
    uint32_t pool_max_idle;

    uint32_t max_request_line, max_header_size, max_headers, max_connections;
    uint64_t max_body_size; /* 0 = unlimited */

    /* resolvers, resolve-interval, resolve-timeout: how server names are resolved at load time
     * and re-resolved while running. servers NULL = the system's (/etc/resolv.conf). */
    struct fy_resolver_conf resolver;

    /* The file's listeners: and upstreams: (conf/schema.c), NULL/0 in quick mode, where
     * fy_conf_build() makes one listener with one catch-all route to one group from listen and
     * upstream. Owned; freed by fy_config_free(). */
    struct fy_listener_conf *listeners;
    uint32_t nlisteners;
    struct fy_group *groups;
    uint32_t ngroups;

    /* Each option's value as given (unexpanded), indexed like fy_options; NULL = default. */
    char *opt_text[FY_OPT_SLOTS];
    /* "FILE:LINE:COL" of the value when it came from the configuration file (NULL: the default
     * or the command line), so that checks made once every option is known (the quick mode's
     * certificates) still point into the file. */
    char *opt_where[FY_OPT_SLOTS];
    /* Bit k: option k (an FY_OPTF_EARLY one) was applied from the command line before the file
     * was loaded; fy_option_apply() then ignores later values, so the command line wins. */
    uint64_t early_given;

    /* What the command line asked for besides settings. */
    char *config_path; /* -c FILE, or NULL */
    bool check_only;   /* -t: validate and exit */
    bool print_config; /* --print-config */
    char *
        file_errors; /* after FY_ARGS_FILE_ERROR: every error, one "FILE:LINE:COL: ..." line each */
    unsigned file_error_count;
};

/* Fills in the documented defaults. */
void fy_config_defaults(struct fy_config *c);
void fy_config_free(struct fy_config *c);

enum fy_args_result { FY_ARGS_OK, FY_ARGS_EXIT_OK, FY_ARGS_ERROR, FY_ARGS_FILE_ERROR };

/* Parses argv: quick-mode options, and `-c FILE` (loaded first; options anywhere on the command
 * line then override its keys), `-t`, `--print-config`. On FY_ARGS_ERROR `err` holds one line
 * saying what was wrong (a bad command line); on FY_ARGS_FILE_ERROR c->file_errors holds every
 * error of the file; on FY_ARGS_EXIT_OK the help, version or --print-config text was printed to
 * `out`. With FY_ARGS_OK and c->check_only, the configuration is valid and ferry should exit. */
enum fy_args_result fy_args_parse(struct fy_config *c, int argc, char **argv, char *err,
                                  size_t errlen, void *out);

/* ---- The option table: one entry per setting, shared by argv and the file ---- */

enum fy_opt_kind {
    FY_OPT_LISTEN,
    FY_OPT_UPSTREAM,
    FY_OPT_WORKERS,
    FY_OPT_RULE, /* repeatable: a sequence in the file */
    FY_OPT_HOST,
    FY_OPT_ONOFF,
    FY_OPT_UPGRADE,
    FY_OPT_ACCESS_LOG,
    FY_OPT_LOG_FORMAT,
    FY_OPT_LOG_LEVEL,
    FY_OPT_DURATION,
    FY_OPT_SIZE,
    FY_OPT_PATH, /* a string: a file path (char * field) */
    FY_OPT_RESOLVERS,
    /* A file ferry reads at load (char * field): a relative path from a configuration file is
     * joined to the file's directory, as ${file:PATH} is. */
    FY_OPT_FILE,
    /* A comma-separated list (char * field): each value given appends; a sequence in the file. */
    FY_OPT_LIST,
};

struct fy_option {
    const char *key; /* "header-timeout": the flag without its dashes, and the file key */
    enum fy_opt_kind kind;
    size_t offset;     /* the field, for the kinds that share a setter */
    uint64_t min, max; /* FY_OPT_SIZE; FY_OPT_DURATION: min only (ms) */
    unsigned flags;    /* FY_OPTF_* */
};

#define FY_OPTF_REQUEST 1u /* FY_OPT_RULE: request rules (else response) */
#define FY_OPTF_REMOVE 2u  /* FY_OPT_RULE: a removal (else a set) */
#define FY_OPTF_U64 4u     /* FY_OPT_SIZE: a uint64_t field (else uint32_t) */
#define FY_OPTF_COUNT 8u   /* FY_OPT_SIZE: a count, printed without k/m/g */
/* Needed while the file loads (resolving its server names): the command line's value is applied
 * before the file, and the file's own value of the key is then ignored. */
#define FY_OPTF_EARLY 16u
/* Part of the one-listener shorthand (listen, upstream, tls-cert, tls-key): refused in a file
 * with listeners: and on a command line with such a file, left out of --print-config there. */
#define FY_OPTF_QUICK 32u
/* FY_OPT_ONOFF: on the command line the flag alone means on (--forward). */
#define FY_OPTF_BARE 64u

extern const struct fy_option fy_options[];
extern const size_t fy_options_count;

/* The entry for `key` (without dashes), or NULL. */
const struct fy_option *fy_option_find(const char *key);

/* Applies one value of option `o` to c. `name` is how messages call the option ("--workers" or
 * "workers"); ${env:NAME} and ${file:PATH} in `raw` are expanded, PATH relative to `base_dir`
 * (NULL: the working directory). Returns 0, or -1 with one line in `err`. */
int fy_option_apply(struct fy_config *c, const struct fy_option *o, const char *name,
                    const char *raw, const char *base_dir, char *err, size_t errlen);

/* Writes the YAML equivalent of c (every key with its value as given or its effective default,
 * in table order) to `out`, a FILE *. */
void fy_config_print_yaml(const struct fy_config *c, void *out);

/* Duration "500ms", "3s", "2m", "1h" or plain seconds -> ms. Returns 0 or -1. */
int fy_parse_duration(const char *s, uint64_t *ms);

/* Size "512", "16k", "1m", "1g" -> bytes. Returns 0 or -1. */
int fy_parse_size(const char *s, uint64_t *bytes);

/* fy_expand() from the working directory, for callers that only report a missing variable:
 * returns a malloc'd string, or NULL with `missing` set to the unset variable's name (malloc'd),
 * or to NULL for any other failure (syntax, an unreadable ${file:}). */
char *fy_expand_env(const char *s, char **missing);

enum fy_expand_error { FY_EXPAND_OK, FY_EXPAND_MALFORMED, FY_EXPAND_NO_ENV, FY_EXPAND_NO_FILE };

/* Expands ${env:NAME} and ${file:PATH} (the file's contents, one trailing newline trimmed; a
 * relative PATH is taken from base_dir, or the working directory when NULL). Returns a malloc'd
 * string, or NULL with *e set and *what (malloc'd, may be NULL) naming the variable, or the file
 * and why it could not be read. */
char *fy_expand(const char *s, const char *base_dir, enum fy_expand_error *e, char **what);

/* `path` as it is to be opened: joined to base_dir when relative and base_dir is not NULL.
 * Returns a malloc'd string, or NULL when out of memory. */
char *fy_conf_path(const char *base_dir, const char *path);

#define FERRY_VERSION "0.1.0"

#endif
