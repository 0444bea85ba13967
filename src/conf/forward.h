/*
 * A forward listener's settings (struct fy_forward_conf, conf.h) built from the quick-mode
 * options (ferry --forward ...) or from a listener's forward: and intercept: blocks
 * (schema_forward.c): the same defaults either way, Squid's stock ACLs in spirit: clients from
 * loopback and private ranges only, CONNECT to port 443 only, any destination, no credentials.
 * Private to src/conf.
 */
#ifndef FY_CONF_FORWARD_H
#define FY_CONF_FORWARD_H

#include <stdbool.h>
#include <stddef.h>

#include "conf/conf.h"

/* An empty forward configuration (its lists allocated and empty). NULL when out of memory. */
struct fy_forward_conf *fy_forward_conf_new(void);

/* What fy_forward_conf_finish() builds contexts from; pointers borrowed for the call. */
struct fy_forward_tls {
    const char *upstream_ca;   /* verify https destinations against it; NULL = system store */
    bool insecure_skip_verify; /* do not verify them at all (logged) */
    bool intercept;            /* terminate CONNECT tunnels with minted certificates */
    const char *ca_cert, *ca_key, *state_dir;
    uint32_t cert_cache_size; /* 0 = the default */
};

/* Fills the defaults of the lists left empty, makes the Proxy-Authenticate value, and builds
 * the TLS contexts. Returns 0, or -1 with one sentence in err (the file and reason for a bad
 * CA or upstream-ca). */
int fy_forward_conf_finish(struct fy_forward_conf *fc, const struct fy_forward_tls *t, char *err,
                           size_t errlen);

/* Appends the forwarding route (FY_ACT_FORWARD) to l, which has l->forward: after the routes
 * written for it, so those may answer or redirect some requests themselves. 0, or -1 when out
 * of memory. */
int fy_forward_add_route(struct fy_listener_conf *l);

/* Frees fc and everything it holds. NULL is fine. */
void fy_forward_conf_free(struct fy_forward_conf *fc);

/* Quick mode with --forward, once the command line and file are applied: compiles connect-ports,
 * allow-clients, htpasswd, intercept, ca-cert, ca-key, state-dir and pass-through into
 * c->quick_forward (so -t checks them). Same result conventions as fy_conf_quick_tls(). */
enum fy_args_result fy_conf_quick_forward(struct fy_config *c, char *err, size_t errlen);

#endif
