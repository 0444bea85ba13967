/*
 * What the YAML loader (yaml.c) shares with the schema compilers (schema*.c) and templates: the
 * loader's state, error reporting at a node's position, and the did-you-mean suggestion. Private
 * to src/conf.
 */
#ifndef FY_CONF_YAML_PRIV_H
#define FY_CONF_YAML_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <yaml.h>

#include "conf/config.h"

struct fy_route;

/* A route's `upstream: NAME`, resolved once the whole file is read (upstreams: may come after
 * listeners:). */
struct fy_upstream_ref {
    struct fy_route *route;
    char *name;
    yaml_mark_t mark;
};

/* A server whose name is resolved once the whole file is read (resolvers: and resolve-timeout:
 * may come after upstreams:). `server` points into its group's final servers array. */
struct fy_server_ref {
    struct fy_server *server;
    const yaml_node_t *node; /* its URL, for the error position */
};

/* A listener address already taken, for "duplicate listener address" messages. */
struct fy_seen_addr {
    struct fy_addr addr;
    size_t line;
};

/* An upstream group with an https:// server: its tls: settings (malloc'd; NULL = not given),
 * built into a context once the whole file is read (fy_schema_build_group_tls), since the
 * top-level upstream-ca and insecure-skip-verify are its defaults and may come after
 * upstreams:. Marks are where a failure of the build is reported. */
struct fy_group_tls {
    struct fy_group *group;
    yaml_mark_t mark; /* the tls: key, or the group's name when it has no tls: */
    char *ca, *cert, *key;
    yaml_mark_t ca_mark, cert_mark, key_mark;
    const char *min_version; /* static */
    char *ciphers, *ciphersuites;
    int insecure; /* insecure-skip-verify: -1 not given, 0 false, 1 true */
    bool bad;     /* the block has errors (reported): no context is built */
};

struct fy_yaml_loader {
    struct fy_config *c;
    const char *path;
    char *base_dir; /* NULL: the working directory */
    yaml_document_t doc;
    FILE *errs;
    unsigned n; /* errors reported */

    struct fy_upstream_ref *refs;
    size_t nrefs;
    struct fy_seen_addr *seen;
    size_t nseen;
    struct fy_server_ref *servers;
    size_t nservers;
    struct fy_group_tls *gtls;
    size_t ngtls;
    struct fy_forward_pending *fwds; /* schema_forward.c: finished once the file is read */
    size_t nfwds;
};

/* Reports one error at mark as "PATH:LINE:COLUMN: message" and counts it. */
void fy_yaml_report(struct fy_yaml_loader *l, yaml_mark_t m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "a sequence", "a mapping" or "a scalar", for "expected X, got Y" messages. */
const char *fy_yaml_node_kind(const yaml_node_t *n);

/* The candidate closest to `key` when it is close enough to be a typo, else NULL. Case, '_'
 * against '-' and leading dashes are ignored. */
const char *fy_yaml_suggest(const char *key, const char *const *cands, size_t ncands);

#endif
