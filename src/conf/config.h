/*
 * ferry's settings after parsing (command line today, a YAML file later). Everything is filled in
 * at startup, then read-only and shared by all workers without locks.
 */
#ifndef FY_CONFIG_H
#define FY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/log.h"
#include "net/addr.h"

struct fy_header_rule {
    char *name;
    char *value; /* NULL for a removal */
    uint32_t name_len, value_len;
};

struct fy_header_rules {
    struct fy_header_rule *items;
    uint32_t n;
};

enum fy_host_mode { FY_HOST_UPSTREAM, FY_HOST_PRESERVE, FY_HOST_VALUE };
enum fy_log_target { FY_ALOG_STDOUT, FY_ALOG_OFF, FY_ALOG_FILE };
enum fy_log_format { FY_ALOG_COMBINED, FY_ALOG_JSON };

struct fy_config {
    char *listen_text;
    struct fy_addr listen;

    char *upstream_text;      /* as given: http://host:port */
    char *upstream_authority; /* host:port, the default Host sent upstream */
    struct fy_addr upstream;

    int workers;

    struct fy_header_rules request_rules; /* applied in order: set or remove */
    struct fy_header_rules response_rules;
    enum fy_host_mode host_mode;
    char *host_value;
    bool x_forwarded_for, x_forwarded_proto, x_forwarded_host, via;
    char *upgrade_protocols; /* comma-separated Upgrade protocols tunnelled; NULL = "websocket" */

    enum fy_log_target access_log;
    char *access_log_path;
    enum fy_log_format access_log_format;
    enum fy_log_level log_level;

    /* milliseconds */
    uint64_t header_timeout, idle_timeout, body_timeout, connect_timeout, upstream_timeout,
        send_timeout, drain_timeout, pool_idle_timeout;
    uint32_t pool_max_idle;

    uint32_t max_request_line, max_header_size, max_headers, max_connections;
    uint64_t max_body_size; /* 0 = unlimited */
};

/* Fills in the documented defaults. */
void fy_config_defaults(struct fy_config *c);
void fy_config_free(struct fy_config *c);

enum fy_args_result { FY_ARGS_OK, FY_ARGS_EXIT_OK, FY_ARGS_ERROR };

/* Parses argv (quick mode). On FY_ARGS_ERROR `err` holds one line saying what was wrong; on
 * FY_ARGS_EXIT_OK the help or version text was printed to `out`. */
enum fy_args_result fy_args_parse(struct fy_config *c, int argc, char **argv, char *err,
                                  size_t errlen, void *out);

/* Duration "500ms", "3s", "2m", "1h" or plain seconds -> ms. Returns 0 or -1. */
int fy_parse_duration(const char *s, uint64_t *ms);

/* Size "512", "16k", "1m", "1g" -> bytes. Returns 0 or -1. */
int fy_parse_size(const char *s, uint64_t *bytes);

/* Expands ${env:NAME} references. Returns a malloc'd string, or NULL with `missing` set to the
 * unset variable name (malloc'd) or NULL on a syntax error. */
char *fy_expand_env(const char *s, char **missing);

#define FERRY_VERSION "0.1.0"

#endif
