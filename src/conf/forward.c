/* A forward listener's settings, from the command line or a file; see forward.h. */
#include "conf/forward.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/schema.h"
#include "core/log.h"
#include "filters/acl.h"
#include "filters/htpasswd.h"
#include "net/tls.h"

#define DEFAULT_CERT_CACHE 1000

struct fy_forward_conf *fy_forward_conf_new(void)
{
    struct fy_forward_conf *fc = calloc(1, sizeof(*fc));
    if (!fc)
        return NULL;
    fc->allow_clients = calloc(1, sizeof(*fc->allow_clients));
    fc->connect_ports = calloc(1, sizeof(*fc->connect_ports));
    if (!fc->allow_clients || !fc->connect_ports) {
        fy_forward_conf_free(fc);
        return NULL;
    }
    return fc;
}

static void intercept_free(struct fy_intercept_conf *ic)
{
    if (!ic)
        return;
    fy_tls_intercept_unref(ic->tls);
    if (ic->pass_through) {
        fy_dest_rules_free(ic->pass_through);
        free(ic->pass_through);
    }
    free(ic);
}

void fy_forward_conf_free(struct fy_forward_conf *fc)
{
    if (!fc)
        return;
    if (fc->allow_clients) {
        fy_cidr_list_free(fc->allow_clients);
        free(fc->allow_clients);
    }
    if (fc->connect_ports) {
        fy_ports_free(fc->connect_ports);
        free(fc->connect_ports);
    }
    if (fc->dests) {
        fy_dest_policy_free(fc->dests);
        free(fc->dests);
    }
    fy_htpasswd_unref(fc->auth);
    free(fc->realm);
    free(fc->auth_header);
    fy_tls_client_unref(fc->tls);
    intercept_free(fc->intercept);
    free(fc->where);
    free(fc);
}

int fy_forward_conf_finish(struct fy_forward_conf *fc, const struct fy_forward_tls *t, char *err,
                           size_t errlen)
{
    if (fc->allow_clients->n == 0 && fy_cidr_list_private(fc->allow_clients) < 0)
        return fy_errf(err, errlen, "out of memory");
    if (fc->connect_ports->n == 0 && fy_ports_add(fc->connect_ports, "443", err, errlen) < 0)
        return -1;
    if (fc->auth) {
        const char *realm = fc->realm ? fc->realm : "ferry";
        if (asprintf(&fc->auth_header, "Basic realm=\"%s\", charset=\"UTF-8\"", realm) < 0) {
            fc->auth_header = NULL;
            return fy_errf(err, errlen, "out of memory");
        }
    }
    char why[512];
    if (fy_conf_tls_init(why, sizeof(why)) < 0)
        return fy_errf(err, errlen, "%s", why);
    struct fy_tls_client_opts o = {.ca = t->upstream_ca,
                                   .insecure_skip_verify = t->insecure_skip_verify};
    if (!(fc->tls = fy_tls_client_new(&o, why, sizeof(why))))
        return fy_errf(err, errlen, "upstream-ca: %s", why);
    if (t->insecure_skip_verify)
        fy_warn("the forward proxy does not verify the certificates of https destinations "
                "(insecure-skip-verify): anyone between ferry and them can read and change "
                "the traffic");
    if (!t->intercept)
        return 0;
    if (!fc->intercept && !(fc->intercept = calloc(1, sizeof(*fc->intercept))))
        return fy_errf(err, errlen, "out of memory");
    struct fy_intercept_conf *ic = fc->intercept;
    ic->cert_cache_size = t->cert_cache_size ? t->cert_cache_size : DEFAULT_CERT_CACHE;
    struct fy_tls_intercept_opts io = {
        .ca_cert = t->ca_cert, .ca_key = t->ca_key, .state_dir = t->state_dir};
    if (!(ic->tls = fy_tls_intercept_new(&io, why, sizeof(why))))
        return fy_errf(err, errlen, "%s", why);
    return 0;
}

/* A forward listener's last route: to each request's own destination (routes written before it
 * go first, so a forward proxy can answer or redirect some requests itself). */
int fy_forward_add_route(struct fy_listener_conf *l)
{
    struct fy_route *routes = realloc(l->routes, (l->nroutes + 1) * sizeof(*routes));
    if (!routes)
        return -1;
    l->routes = routes;
    struct fy_route *r = &routes[l->nroutes];
    memset(r, 0, sizeof(*r));
    r->index = l->nroutes++;
    r->where = strdup(l->forward->where ? l->forward->where : "forward");
    r->action = FY_ACT_FORWARD;
    r->host_mode = FY_HOST_PRESERVE;
    r->limits.abort_on_client_close = -1;
    return r->where ? 0 : -1;
}

/* Applies `add` to each comma-separated item of list. */
typedef int fy_item_add_fn(void *target, const char *item, char *err, size_t errlen);

static int each_item(const char *list, void *target, fy_item_add_fn *add, char *err, size_t errlen)
{
    const char *p = list;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        while (n && (*p == ' ' || *p == '\t'))
            p++, n--;
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n) {
            char item[FY_ACL_MAX_ITEM_LEN + 1];
            if (n > FY_ACL_MAX_ITEM_LEN)
                return fy_errf(err, errlen, "'%.40s...' is longer than %d bytes", p,
                               FY_ACL_MAX_ITEM_LEN);
            memcpy(item, p, n);
            item[n] = '\0';
            if (add(target, item, err, errlen) < 0)
                return -1;
        }
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

static int add_cidr(void *t, const char *item, char *err, size_t errlen)
{
    return fy_cidr_list_add(t, item, err, errlen);
}

static int add_port(void *t, const char *item, char *err, size_t errlen)
{
    return fy_ports_add(t, item, err, errlen);
}

static int add_dest(void *t, const char *item, char *err, size_t errlen)
{
    return fy_dest_rules_add(t, item, err, errlen);
}

enum fy_args_result fy_conf_quick_forward(struct fy_config *c, char *err, size_t errlen)
{
    char why[600];
    fy_forward_conf_free(c->quick_forward);
    struct fy_forward_conf *fc = c->quick_forward = fy_forward_conf_new();
    if (!fc)
        return fy_errf(err, errlen, "out of memory"), FY_ARGS_ERROR;
    if (each_item(c->allow_clients, fc->allow_clients, add_cidr, why, sizeof(why)) < 0)
        return fy_conf_quick_error(c, "allow-clients", err, errlen, ": %s", why);
    if (each_item(c->connect_ports, fc->connect_ports, add_port, why, sizeof(why)) < 0)
        return fy_conf_quick_error(c, "connect-ports", err, errlen, ": %s", why);
    if (c->htpasswd && !(fc->auth = fy_htpasswd_load(c->htpasswd, why, sizeof(why))))
        return fy_conf_quick_error(c, "htpasswd", err, errlen, ": %s", why);
    if (c->pass_through) {
        if (!c->intercept)
            return fy_conf_quick_error(c, "pass-through", err, errlen,
                                       " names hosts that interception leaves alone: add "
                                       "--intercept");
        if (!(fc->intercept = calloc(1, sizeof(*fc->intercept))) ||
            !(fc->intercept->pass_through = calloc(1, sizeof(*fc->intercept->pass_through))))
            return fy_errf(err, errlen, "out of memory"), FY_ARGS_ERROR;
        if (each_item(c->pass_through, fc->intercept->pass_through, add_dest, why, sizeof(why)) < 0)
            return fy_conf_quick_error(c, "pass-through", err, errlen, ": %s", why);
    }
    if (!c->intercept && (c->ca_cert || c->ca_key))
        return fy_conf_quick_error(c, c->ca_cert ? "ca-cert" : "ca-key", err, errlen,
                                   " is the interception CA: add --intercept");
    if (!c->ca_cert != !c->ca_key)
        return fy_conf_quick_error(c, c->ca_cert ? "ca-cert" : "ca-key", err, errlen,
                                   " needs --%s too", c->ca_cert ? "ca-key" : "ca-cert");
    struct fy_forward_tls t = {.upstream_ca = c->upstream_ca,
                               .insecure_skip_verify = c->insecure_skip_verify,
                               .intercept = c->intercept,
                               .ca_cert = c->ca_cert,
                               .ca_key = c->ca_key,
                               .state_dir = c->state_dir};
    if (fy_forward_conf_finish(fc, &t, why, sizeof(why)) < 0)
        return fy_conf_quick_error(c,
                                   strstr(why, "upstream-ca") ? "upstream-ca"
                                   : c->ca_cert               ? "ca-cert"
                                                              : "intercept",
                                   err, errlen, ": %s", why);
    if (!(fc->where = strdup("command line")))
        return fy_errf(err, errlen, "out of memory"), FY_ARGS_ERROR;
    return FY_ARGS_OK;
}
