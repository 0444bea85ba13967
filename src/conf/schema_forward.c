/*
 * A listener's forward: and intercept: blocks (docs/forward-proxy.md):
 *
 *   forward:
 *     allow-clients: [10.0.0.0/8]      # default: loopback and private ranges
 *     connect-ports: [443, 8443]       # default: 443
 *     allow: ["*.example.com"]         # destinations (default: any)
 *     deny: ["169.254.169.254"]        # checked first
 *     auth: { htpasswd: users, realm: ferry }
 *     upstream-ca: ca.pem              # verifying https destinations (default: top-level key)
 *     insecure-skip-verify: off
 *   intercept:                         # on a forward listener; `intercept: on` for defaults
 *     ca-cert: ca.pem                  # with ca-key; default: generated in state-dir
 *     ca-key: ca.key
 *     state-dir: /var/lib/ferry
 *     pass-through: ["*.bank.example"]
 *     cert-cache-size: 1000
 *
 * Lists are read item by item, so an error points at its item. The TLS contexts are built once
 * the whole file is read (fy_schema_finish_forward), since the top-level upstream-ca may come
 * after the listeners.
 */
#include "conf/schema.h"

#include <stdlib.h>
#include <string.h>

#include "conf/forward.h"
#include "filters/acl.h"
#include "filters/htpasswd.h"

struct fy_forward_pending {
    struct fy_listener_conf *lc;
    yaml_mark_t mark, ca_mark; /* the blocks' keys (errors about the CA point at intercept:) */
    struct fy_forward_tls t;   /* strings malloc'd */
    bool has_upstream_ca, has_insecure;
};

static const char *const forward_keys[] = {
    "allow-clients", "connect-ports",       "allow", "deny", "auth",
    "upstream-ca",   "insecure-skip-verify"};
static const char *const auth_keys[] = {"htpasswd", "realm"};
static const char *const intercept_keys[] = {"ca-cert", "ca-key", "state-dir", "pass-through",
                                             "cert-cache-size"};

typedef int fy_list_add_fn(void *target, const char *item, char *err, size_t errlen);

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

/* A value or a list of values, each added with `add`; errors at the item. */
static void load_list(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what,
                      void *target, fy_list_add_fn *add)
{
    size_t n = fy_sc_nitems(l, v, what);
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *item = fy_sc_item(l, v, i);
        char *text = fy_sc_string(l, item, what);
        if (!text)
            continue;
        char err[300];
        if (add(target, text, err, sizeof(err)) < 0)
            fy_yaml_report(l, item->start_mark, "%s: %s", what, err);
        free(text);
    }
}

static void load_auth(struct fy_yaml_loader *l, struct fy_forward_conf *fc, const yaml_node_t *v)
{
    if (!fy_sc_keys(l, v, "auth", auth_keys, 2))
        return;
    const yaml_node_t *n = fy_sc_get(l, v, "htpasswd");
    if (!n) {
        fy_yaml_report(l, v->start_mark,
                       "auth needs htpasswd: the file of users (htpasswd -B -c FILE USER)");
        return;
    }
    char *path = fy_sc_path(l, n, "htpasswd");
    if (path) {
        char err[512];
        if (!(fc->auth = fy_htpasswd_load(path, err, sizeof(err))))
            fy_yaml_report(l, n->start_mark, "htpasswd: %s", err);
        free(path);
    }
    if ((n = fy_sc_get(l, v, "realm")))
        fc->realm = fy_sc_string(l, n, "realm");
}

static void load_forward_block(struct fy_yaml_loader *l, struct fy_forward_conf *fc,
                               struct fy_forward_pending *p, const yaml_node_t *v)
{
    if (fy_sc_is_null(v))
        return; /* `forward:` alone: every default */
    if (!fy_sc_keys(l, v, "forward", forward_keys, sizeof(forward_keys) / sizeof(forward_keys[0])))
        return;
    const yaml_node_t *n;
    if ((n = fy_sc_get(l, v, "allow-clients")))
        load_list(l, n, "allow-clients", fc->allow_clients, add_cidr);
    if ((n = fy_sc_get(l, v, "connect-ports")))
        load_list(l, n, "connect-ports", fc->connect_ports, add_port);
    const yaml_node_t *allow = fy_sc_get(l, v, "allow"), *deny = fy_sc_get(l, v, "deny");
    if (allow || deny) {
        if (!(fc->dests = calloc(1, sizeof(*fc->dests)))) {
            fy_yaml_report(l, v->start_mark, "out of memory");
            return;
        }
        if (allow)
            load_list(l, allow, "allow", &fc->dests->allow, add_dest);
        if (deny)
            load_list(l, deny, "deny", &fc->dests->deny, add_dest);
    }
    if ((n = fy_sc_get(l, v, "auth")))
        load_auth(l, fc, n);
    if ((n = fy_sc_get(l, v, "upstream-ca"))) {
        p->t.upstream_ca = fy_sc_path(l, n, "upstream-ca");
        p->has_upstream_ca = true;
    }
    if ((n = fy_sc_get(l, v, "insecure-skip-verify"))) {
        fy_sc_bool(l, n, "insecure-skip-verify", &p->t.insecure_skip_verify);
        p->has_insecure = true;
    }
}

static void load_intercept_block(struct fy_yaml_loader *l, struct fy_forward_conf *fc,
                                 struct fy_forward_pending *p, const yaml_node_t *v)
{
    if (v->type == YAML_SCALAR_NODE) { /* intercept: on | off (or nothing: on) */
        bool on = true;
        if (!fy_sc_is_null(v) && fy_sc_bool(l, v, "intercept", &on) < 0)
            return;
        p->t.intercept = on;
        return;
    }
    if (!fy_sc_keys(l, v, "intercept", intercept_keys,
                    sizeof(intercept_keys) / sizeof(intercept_keys[0])))
        return;
    p->t.intercept = true;
    const yaml_node_t *n, *cert = fy_sc_get(l, v, "ca-cert"), *key = fy_sc_get(l, v, "ca-key");
    if (!cert != !key)
        fy_yaml_report(l, (cert ? cert : key)->start_mark,
                       "intercept: %s needs %s too (the CA's certificate and its key)",
                       cert ? "ca-cert" : "ca-key", cert ? "ca-key" : "ca-cert");
    if (cert) {
        p->t.ca_cert = fy_sc_path(l, cert, "ca-cert");
        p->ca_mark = cert->start_mark;
    }
    if (key)
        p->t.ca_key = fy_sc_path(l, key, "ca-key");
    if ((n = fy_sc_get(l, v, "state-dir")))
        p->t.state_dir = fy_sc_path(l, n, "state-dir");
    if ((n = fy_sc_get(l, v, "cert-cache-size")))
        fy_sc_u32(l, n, "cert-cache-size", 1, 1u << 20, &p->t.cert_cache_size);
    if ((n = fy_sc_get(l, v, "pass-through"))) {
        if (!(fc->intercept = calloc(1, sizeof(*fc->intercept))) ||
            !(fc->intercept->pass_through = calloc(1, sizeof(*fc->intercept->pass_through)))) {
            fy_yaml_report(l, n->start_mark, "out of memory");
            return;
        }
        load_list(l, n, "pass-through", fc->intercept->pass_through, add_dest);
    }
}

void fy_schema_load_forward(struct fy_yaml_loader *l, struct fy_listener_conf *lc,
                            const yaml_node_t *fkey, const yaml_node_t *fwd,
                            const yaml_node_t *ikey, const yaml_node_t *icp)
{
    if (!fwd) {
        fy_yaml_report(l, ikey->start_mark,
                       "intercept: works on a forward proxy listener: add forward: to it");
        return;
    }
    struct fy_forward_pending *ps = realloc(l->fwds, (l->nfwds + 1) * sizeof(*ps));
    if (!ps || !(lc->forward = fy_forward_conf_new())) {
        if (ps)
            l->fwds = ps;
        fy_yaml_report(l, fkey->start_mark, "out of memory");
        return;
    }
    l->fwds = ps;
    struct fy_forward_pending *p = &ps[l->nfwds++];
    memset(p, 0, sizeof(*p));
    p->lc = lc;
    p->mark = fkey->start_mark;
    p->ca_mark = ikey ? ikey->start_mark : fkey->start_mark;
    lc->forward->where = fy_sc_where(l, fkey);
    load_forward_block(l, lc->forward, p, fwd);
    if (icp)
        load_intercept_block(l, lc->forward, p, icp);
    if (lc->tls)
        fy_yaml_report(l, fkey->start_mark,
                       "a forward proxy listener cannot also have tls: (clients speak plain HTTP "
                       "to a proxy, and CONNECT carries their TLS)");
    if (fy_forward_add_route(lc) < 0)
        fy_yaml_report(l, fkey->start_mark, "out of memory");
}

void fy_schema_finish_forward(struct fy_yaml_loader *l)
{
    for (size_t i = 0; i < l->nfwds; i++) {
        struct fy_forward_pending *p = &l->fwds[i];
        struct fy_forward_conf *fc = p->lc->forward;
        if (!p->has_upstream_ca && l->c->upstream_ca &&
            !(p->t.upstream_ca = strdup(l->c->upstream_ca)))
            fy_yaml_report(l, p->mark, "out of memory");
        if (!p->has_insecure)
            p->t.insecure_skip_verify = l->c->insecure_skip_verify;
        if (!p->t.state_dir && l->c->state_dir && !(p->t.state_dir = strdup(l->c->state_dir)))
            fy_yaml_report(l, p->mark, "out of memory");
        if (l->n == 0) {
            char err[600];
            if (fy_forward_conf_finish(fc, &p->t, err, sizeof(err)) < 0)
                fy_yaml_report(l, strstr(err, "upstream-ca") ? p->mark : p->ca_mark, "%s", err);
        }
        free((char *)p->t.upstream_ca);
        free((char *)p->t.ca_cert);
        free((char *)p->t.ca_key);
        free((char *)p->t.state_dir);
    }
    free(l->fwds);
    l->fwds = NULL;
    l->nfwds = 0;
}
