/*
 * TLS settings compiled into net/tls.h contexts: a listener's tls: block, an upstream group's
 * tls: block with its https:// servers, and the quick mode's --tls-cert, --tls-key,
 * --upstream-ca and --insecure-skip-verify. Contexts are built at load, on the main thread, so a
 * certificate that cannot be used (unreadable, expired, not matching its key) is an error of the
 * configuration at the key that named it: `ferry -t` finds it and a reload is refused for it.
 * A group's context is built once the whole file is read, because the top-level upstream-ca and
 * insecure-skip-verify are its defaults and may be written after upstreams:. Relative paths are
 * taken from the configuration file's directory, as ${file:PATH} is.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/schema.h"
#include "core/log.h"
#include "net/tls.h"

int fy_conf_tls_init(char *err, size_t errlen)
{
    static bool done; /* main thread only: loading never runs on a worker */
    if (done)
        return 0;
    if (fy_tls_init(err, errlen) < 0)
        return -1;
    done = true;
    return 0;
}

bool fy_sc_is_https(const char *url)
{
    return url && !strncasecmp(url, "https://", 8);
}

/* ---- readers ---- */

char *fy_sc_path(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what)
{
    char *s = fy_sc_string(l, v, what);
    if (!s)
        return NULL;
    if (!*s) {
        fy_yaml_report(l, v->start_mark, "%s expects a file path, got an empty value", what);
        free(s);
        return NULL;
    }
    char *full = fy_conf_path(l->base_dir, s);
    free(s);
    if (!full)
        fy_yaml_report(l, v->start_mark, "out of memory");
    return full;
}

static const char *const versions[] = {"1.0", "1.1", "1.2", "1.3"};

/* min-version: one of `versions` (static storage), or NULL (reported). 1.0 and 1.1 are taken,
 * for old clients or servers one cannot upgrade, but said to be weak: here for upstreams (`warn`),
 * by fy_tls_server_new() for listeners. */
static const char *load_version(struct fy_yaml_loader *l, const yaml_node_t *v, bool warn)
{
    char *s = fy_sc_string(l, v, "min-version");
    if (!s)
        return NULL;
    const char *found = NULL;
    for (size_t i = 0; i < NKEYS(versions) && !found; i++)
        if (!strcmp(s, versions[i]))
            found = versions[i];
    if (!found)
        fy_yaml_report(l, v->start_mark,
                       "min-version expects 1.2 or 1.3 (1.0 and 1.1 are accepted, not advised), "
                       "got '%s'",
                       s);
    else if (warn && (found == versions[0] || found == versions[1]))
        fy_warn("%s:%zu: upstream tls min-version %s: TLS 1.0 and 1.1 are deprecated (RFC 8996); "
                "allow them only for servers that cannot do 1.2",
                l->path, v->start_mark.line + 1, found);
    free(s);
    return found;
}

/* A cipher or group list: the text is checked by OpenSSL when the context is built. */
static char *load_list(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what)
{
    char *s = fy_sc_string(l, v, what);
    if (s && !*s) {
        fy_yaml_report(l, v->start_mark,
                       "%s: the list is empty (leave the key out for the default)", what);
        free(s);
        return NULL;
    }
    return s;
}

char *fy_sc_server_name(struct fy_yaml_loader *l, const yaml_node_t *v, const char *what)
{
    char *s = fy_sc_string(l, v, what);
    if (!s)
        return NULL;
    /* What a certificate names: a DNS name (SNI, RFC 6066: no port, no trailing dot) or an IP
     * address (verified against the certificate's IP SANs; no SNI is sent for it). */
    size_t n = strlen(s);
    struct in6_addr a6;
    bool ok = n > 0 && n <= 253 && s[n - 1] != '.' && s[0] != '.';
    for (size_t i = 0; i < n && ok; i++)
        ok = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
             (s[i] >= '0' && s[i] <= '9') || strchr("-._", s[i]);
    if (!ok && strchr(s, ':'))
        ok = inet_pton(AF_INET6, s, &a6) == 1; /* "host:port" is not one */
    if (!ok) {
        fy_yaml_report(l, v->start_mark,
                       "%s '%s': expected the host name the certificate is for (api.internal) or "
                       "an IP address, without port or brackets",
                       what, s);
        free(s);
        return NULL;
    }
    return s;
}

/* Whether `msg` names `path` as a word (not as the tail of a longer path). */
static bool names_file(const char *msg, const char *path)
{
    size_t n = strlen(path);
    for (const char *p = strstr(msg, path); p; p = strstr(p + 1, path)) {
        bool start = p == msg || strchr(" '\"(", p[-1]);
        bool end = !p[n] || strchr(" '\"):,;", p[n]);
        if (start && end)
            return true;
    }
    return false;
}

/* ---- listeners ---- */

static const char *const listener_tls_keys[] = {
    "certificates", "min-version", "ciphers",         "ciphersuites",      "groups",
    "client-ca",    "client-auth", "session-timeout", "session-cache-size"};
static const char *const cert_keys[] = {"cert", "key"};
static const char *const client_auth_names[] = {"none", "optional", "required"};

/* The longest session lifetime a TLS 1.3 ticket may announce (RFC 8446 4.6.1: 7 days). */
#define MAX_SESSION_TIMEOUT_S (7u * 24 * 3600)

static void load_certificates(struct fy_yaml_loader *l, const yaml_node_t *v,
                              struct fy_tls_cert_files *certs, const yaml_node_t **nodes,
                              uint32_t *n)
{
    size_t count = v->type == YAML_SEQUENCE_NODE ? fy_sc_nitems(l, v, "certificates") : 1;
    for (size_t i = 0; i < count; i++) {
        /* One mapping alone is a list of one. */
        const yaml_node_t *it = v->type == YAML_SEQUENCE_NODE ? fy_sc_item(l, v, i) : v;
        if (!fy_sc_keys(l, it, "a certificate", cert_keys, NKEYS(cert_keys)))
            continue;
        const yaml_node_t *cert = fy_sc_get(l, it, "cert"), *key = fy_sc_get(l, it, "key");
        if (!cert || !key) {
            fy_yaml_report(l, it->start_mark,
                           "a certificate needs cert: and key: (the PEM files: { cert: "
                           "site.pem, key: site.key })");
            continue;
        }
        char *c = fy_sc_path(l, cert, "cert"), *k = fy_sc_path(l, key, "key");
        if (!c || !k) {
            free(c);
            free(k);
            continue;
        }
        certs[*n] = (struct fy_tls_cert_files){.cert = c, .key = k};
        nodes[*n] = it;
        (*n)++;
    }
}

void fy_schema_load_listener_tls(struct fy_yaml_loader *l, struct fy_listener_conf *lc,
                                 const yaml_node_t *key, const yaml_node_t *v)
{
    if (fy_sc_is_null(v)) {
        fy_yaml_report(l, v->start_mark,
                       "tls: needs certificates: (tls: { certificates: [{ cert: site.pem, key: "
                       "site.key }] })");
        return;
    }
    unsigned before = l->n;
    if (!fy_sc_keys(l, v, "listener tls", listener_tls_keys, NKEYS(listener_tls_keys)))
        return;
    struct fy_tls_server_opts o = {.client_auth = FY_TLS_CLIENT_AUTH_NONE};
    const yaml_node_t *certs_v = fy_sc_get(l, v, "certificates");
    size_t max = 0;
    if (!certs_v || fy_sc_is_null(certs_v))
        fy_yaml_report(l, v->start_mark,
                       "tls: needs certificates: at least one { cert: FILE, key: FILE } (the "
                       "first is for clients that send no server name)");
    else if (certs_v->type == YAML_SEQUENCE_NODE)
        max = fy_sc_nitems(l, certs_v, "certificates");
    else if (certs_v->type == YAML_MAPPING_NODE)
        max = 1;
    else
        fy_yaml_report(l, certs_v->start_mark,
                       "certificates expects a list of { cert: FILE, key: FILE }, got %s",
                       fy_yaml_node_kind(certs_v));
    if (certs_v && certs_v->type == YAML_SEQUENCE_NODE && max == 0)
        fy_yaml_report(l, certs_v->start_mark, "certificates: the list is empty");
    struct fy_tls_cert_files *certs = calloc(max ? max : 1, sizeof(*certs));
    const yaml_node_t **cert_nodes = calloc(max ? max : 1, sizeof(*cert_nodes));
    char *client_ca = NULL, *ciphers = NULL, *ciphersuites = NULL, *groups = NULL;
    if (!certs || !cert_nodes) {
        fy_yaml_report(l, v->start_mark, "out of memory");
        goto done;
    }
    if (max)
        load_certificates(l, certs_v, certs, cert_nodes, &o.ncerts);
    o.certs = certs;

    const yaml_node_t *n, *auth = fy_sc_get(l, v, "client-auth"),
                          *ca = fy_sc_get(l, v, "client-ca");
    if ((n = fy_sc_get(l, v, "min-version")))
        o.min_version = load_version(l, n, false);
    if ((n = fy_sc_get(l, v, "ciphers")))
        o.ciphers = ciphers = load_list(l, n, "ciphers");
    if ((n = fy_sc_get(l, v, "ciphersuites")))
        o.ciphersuites = ciphersuites = load_list(l, n, "ciphersuites");
    if ((n = fy_sc_get(l, v, "groups")))
        o.groups = groups = load_list(l, n, "groups");
    if (ca)
        o.client_ca = client_ca = fy_sc_path(l, ca, "client-ca");
    bool auth_bad = false;
    if (auth) {
        const char *s = fy_sc_raw(l, auth, "client-auth");
        auth_bad = true;
        size_t i = 0;
        while (s && i < NKEYS(client_auth_names) && strcmp(s, client_auth_names[i]))
            i++;
        const char *near =
            s ? fy_yaml_suggest(s, client_auth_names, NKEYS(client_auth_names)) : NULL;
        if (s && i < NKEYS(client_auth_names)) {
            o.client_auth = (enum fy_tls_client_auth)i; /* the enum follows client_auth_names */
            auth_bad = false;
        } else if (s && near)
            fy_yaml_report(l, auth->start_mark, "unknown client-auth '%s' (did you mean %s?)", s,
                           near);
        else if (s)
            fy_yaml_report(l, auth->start_mark,
                           "client-auth expects none, optional or required, got '%s'", s);
    }
    if (o.client_auth != FY_TLS_CLIENT_AUTH_NONE && !ca)
        fy_yaml_report(l, auth->start_mark,
                       "client-auth: %s needs client-ca: the CA certificates (PEM) that client "
                       "certificates are verified against",
                       client_auth_names[o.client_auth]);
    else if (ca && o.client_auth == FY_TLS_CLIENT_AUTH_NONE && !auth_bad)
        fy_yaml_report(l, ca->start_mark,
                       "client-ca without client-auth: optional or required asks no client for a "
                       "certificate");
    if ((n = fy_sc_get(l, v, "session-timeout"))) {
        uint64_t ms;
        if (fy_sc_duration(l, n, "session-timeout", &ms) == 0) {
            if (ms < 1000 || ms / 1000 > MAX_SESSION_TIMEOUT_S)
                fy_yaml_report(l, n->start_mark,
                               "session-timeout must be from 1s to 168h (7 days, the longest a "
                               "TLS 1.3 ticket may live), got '%s'",
                               (const char *)n->data.scalar.value);
            else
                o.session_timeout_s = ms / 1000;
        }
    }
    if ((n = fy_sc_get(l, v, "session-cache-size")))
        fy_sc_u32(l, n, "session-cache-size", 1, 1u << 24, &o.session_cache_size);

    if (l->n != before || o.ncerts == 0)
        goto done; /* the build would only repeat what was reported */
    char err[512];
    if (fy_conf_tls_init(err, sizeof(err)) < 0) {
        fy_yaml_report(l, key->start_mark, "listener tls: %s", err);
        goto done;
    }
    lc->tls = fy_tls_server_new(&o, err, sizeof(err));
    if (!lc->tls) {
        /* At the certificate (or client-ca) the message is about, when it names one. */
        yaml_mark_t at = key->start_mark;
        if (client_ca && names_file(err, client_ca))
            at = ca->start_mark;
        int best = 0; /* "b.key does not match b.pem" is about the entry that has both */
        for (uint32_t i = 0; i < o.ncerts; i++) {
            int score = 2 * names_file(err, certs[i].cert) + names_file(err, certs[i].key);
            if (score > best) {
                best = score;
                at = cert_nodes[i]->start_mark;
            }
        }
        fy_yaml_report(l, at, "listener tls: %s", err);
    }
done:
    for (uint32_t i = 0; certs && i < o.ncerts; i++) {
        free((char *)certs[i].cert);
        free((char *)certs[i].key);
    }
    free(certs);
    free(cert_nodes);
    free(client_ca);
    free(ciphers);
    free(ciphersuites);
    free(groups);
}

/* ---- upstream groups ---- */

static const char *const group_tls_keys[] = {
    "ca",          "cert",    "key",         "server-name", "insecure-skip-verify",
    "min-version", "ciphers", "ciphersuites"};

static void group_tls_free(struct fy_group_tls *t)
{
    free(t->ca);
    free(t->cert);
    free(t->key);
    free(t->ciphers);
    free(t->ciphersuites);
    memset(t, 0, sizeof(*t));
}

/* The block's values into t, and its server-name (malloc'd) into *name. */
static void load_group_block(struct fy_yaml_loader *l, struct fy_group_tls *t, const yaml_node_t *v,
                             char **name)
{
    unsigned before = l->n;
    if (fy_sc_is_null(v) ||
        !fy_sc_keys(l, v, "upstream tls", group_tls_keys, NKEYS(group_tls_keys))) {
        t->bad = l->n != before;
        return;
    }
    const yaml_node_t *n, *cert = fy_sc_get(l, v, "cert"), *key = fy_sc_get(l, v, "key");
    if ((n = fy_sc_get(l, v, "ca"))) {
        t->ca = fy_sc_path(l, n, "ca");
        t->ca_mark = n->start_mark;
    }
    if (cert) {
        t->cert = fy_sc_path(l, cert, "cert");
        t->cert_mark = cert->start_mark;
    }
    if (key) {
        t->key = fy_sc_path(l, key, "key");
        t->key_mark = key->start_mark;
    }
    if (!cert != !key)
        fy_yaml_report(l, (cert ? cert : key)->start_mark,
                       "a client certificate needs both cert: and key: (the certificate and its "
                       "private key, PEM)");
    if ((n = fy_sc_get(l, v, "server-name")))
        *name = fy_sc_server_name(l, n, "server-name");
    if ((n = fy_sc_get(l, v, "insecure-skip-verify"))) {
        bool b;
        if (fy_sc_bool(l, n, "insecure-skip-verify", &b) == 0)
            t->insecure = b;
    }
    if ((n = fy_sc_get(l, v, "min-version")))
        t->min_version = load_version(l, n, true);
    if ((n = fy_sc_get(l, v, "ciphers")))
        t->ciphers = load_list(l, n, "ciphers");
    if ((n = fy_sc_get(l, v, "ciphersuites")))
        t->ciphersuites = load_list(l, n, "ciphersuites");
    t->bad = l->n != before;
}

/* The URL's host as a certificate names it: without the brackets of an IPv6 address. */
static char *default_name(const struct fy_server *s)
{
    const char *h = s->host;
    size_t n = strlen(h);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']')
        return strndup(h + 1, n - 2);
    return strdup(h);
}

void fy_schema_load_group_tls(struct fy_yaml_loader *l, struct fy_group *g,
                              const yaml_node_t *name_key, const yaml_node_t *key,
                              const yaml_node_t *v)
{
    const char *gname = g->name ? g->name : "?";
    bool any = false;
    for (uint32_t i = 0; i < g->nservers && !any; i++)
        any = fy_sc_is_https(g->servers[i].url);
    if (!any) {
        /* Servers that did not load are not known to be http: say nothing on their behalf. */
        bool all_loaded = g->nservers > 0;
        for (uint32_t i = 0; i < g->nservers; i++)
            all_loaded &= g->servers[i].host != NULL;
        if (key && all_loaded)
            fy_yaml_report(l, key->start_mark,
                           "tls: needs an https:// server: upstream %s has only http:// servers "
                           "(write https://HOST[:PORT] to speak TLS to them)",
                           gname);
        return;
    }
    struct fy_group_tls t = {.group = g, .insecure = -1};
    t.mark = key ? key->start_mark : name_key->start_mark;
    char *name = NULL;
    if (v)
        load_group_block(l, &t, v, &name);
    for (uint32_t i = 0; i < g->nservers; i++) {
        struct fy_server *s = &g->servers[i];
        if (!fy_sc_is_https(s->url) || s->tls_name || !s->host)
            continue; /* http, its own server-name, or a URL that did not parse */
        s->tls_name = name ? strdup(name) : default_name(s);
        if (!s->tls_name)
            fy_yaml_report(l, t.mark, "out of memory");
    }
    free(name);
    struct fy_group_tls *q = realloc(l->gtls, (l->ngtls + 1) * sizeof(*q));
    if (!q) {
        fy_yaml_report(l, t.mark, "out of memory");
        group_tls_free(&t);
        return;
    }
    l->gtls = q;
    q[l->ngtls++] = t;
}

void fy_schema_build_group_tls(struct fy_yaml_loader *l)
{
    const struct fy_config *c = l->c;
    for (size_t i = 0; i < l->ngtls; i++) {
        struct fy_group_tls *t = &l->gtls[i];
        struct fy_group *g = t->group;
        const char *gname = g->name ? g->name : "?";
        bool insecure = t->insecure >= 0 ? t->insecure == 1 : c->insecure_skip_verify;
        struct fy_tls_client_opts o = {
            .ca = t->ca ? t->ca : c->upstream_ca,
            .cert = t->cert,
            .key = t->key,
            .insecure_skip_verify = insecure,
            .min_version = t->min_version,
            .ciphers = t->ciphers,
            .ciphersuites = t->ciphersuites,
        };
        char err[512];
        if (t->bad) {
            /* its mistakes are reported: a build would only repeat them */
        } else if (fy_conf_tls_init(err, sizeof(err)) < 0) {
            fy_yaml_report(l, t->mark, "upstream %s tls: %s", gname, err);
        } else {
            g->tls = fy_tls_client_new(&o, err, sizeof(err));
            if (!g->tls) {
                yaml_mark_t at = t->mark;
                if (t->ca && names_file(err, t->ca))
                    at = t->ca_mark;
                else if (t->cert && names_file(err, t->cert))
                    at = t->cert_mark;
                else if (t->key && names_file(err, t->key))
                    at = t->key_mark;
                fy_yaml_report(l, at, "upstream %s tls: %s", gname, err);
            } else if (insecure && l->n == 0) { /* a file with errors is refused: no warning */
                fy_warn("upstream %s (%s): insecure-skip-verify: the certificates of its https:// "
                        "servers are not verified, so anyone between ferry and them can read and "
                        "change the traffic",
                        gname, g->where ? g->where : "?");
            }
        }
        for (uint32_t s = 0; s < g->nservers; s++)
            if (fy_sc_is_https(g->servers[s].url))
                g->servers[s].tls = g->tls; /* borrowed: the group holds the reference */
        group_tls_free(t);
    }
    free(l->gtls);
    l->gtls = NULL;
    l->ngtls = 0;
}

/* ---- quick mode ---- */

/* One error about option `key`: at its place in the file when the value came from there, else
 * as a command-line error. */
enum fy_args_result fy_conf_quick_error(struct fy_config *c, const char *key, char *err,
                                        size_t errlen, const char *fmt, ...)
{
    const struct fy_option *o = fy_option_find(key);
    const char *where = o ? c->opt_where[o - fy_options] : NULL;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!where) {
        fy_errf(err, errlen, "--%s%s", key, msg);
        return FY_ARGS_ERROR;
    }
    free(c->file_errors);
    if (asprintf(&c->file_errors, "%s: %s%s\n", where, key, msg) < 0)
        c->file_errors = NULL;
    c->file_error_count = 1;
    return FY_ARGS_FILE_ERROR;
}

static bool from_file(const struct fy_config *c, const char *key)
{
    const struct fy_option *o = fy_option_find(key);
    return o && c->opt_where[o - fy_options];
}

enum fy_args_result fy_conf_quick_tls(struct fy_config *c, char *err, size_t errlen)
{
    char tls_err[512];
    if (!c->tls_cert != !c->tls_key) {
        const char *given = c->tls_cert ? "tls-cert" : "tls-key";
        return fy_conf_quick_error(c, given, err, errlen, " needs %s%s too: %s",
                                   from_file(c, given) ? "" : "--",
                                   c->tls_cert ? "tls-key" : "tls-cert",
                                   c->tls_cert ? "the certificate's private key"
                                               : "the certificate that goes with the key");
    }
    bool https = fy_sc_is_https(c->upstream_text);
    if (!https && !c->forward && (c->upstream_ca || c->insecure_skip_verify))
        return fy_conf_quick_error(c, c->upstream_ca ? "upstream-ca" : "insecure-skip-verify", err,
                                   errlen, " applies to an https:// upstream, and %s is not one",
                                   c->upstream_text ? c->upstream_text : "the upstream");
    if (fy_conf_tls_init(tls_err, sizeof(tls_err)) < 0)
        return fy_conf_quick_error(c, c->tls_cert ? "tls-cert" : "upstream", err, errlen, ": %s",
                                   tls_err);
    fy_tls_server_unref(c->quick_tls);
    fy_tls_client_unref(c->quick_upstream_tls);
    c->quick_tls = NULL;
    c->quick_upstream_tls = NULL;
    if (c->tls_cert) {
        struct fy_tls_cert_files cert = {.cert = c->tls_cert, .key = c->tls_key};
        struct fy_tls_server_opts o = {.certs = &cert, .ncerts = 1};
        c->quick_tls = fy_tls_server_new(&o, tls_err, sizeof(tls_err));
        if (!c->quick_tls) {
            bool key = names_file(tls_err, c->tls_key) && !names_file(tls_err, c->tls_cert);
            return fy_conf_quick_error(c, key ? "tls-key" : "tls-cert", err, errlen, ": %s",
                                       tls_err);
        }
    }
    if (https) {
        struct fy_tls_client_opts o = {.ca = c->upstream_ca,
                                       .insecure_skip_verify = c->insecure_skip_verify};
        c->quick_upstream_tls = fy_tls_client_new(&o, tls_err, sizeof(tls_err));
        if (!c->quick_upstream_tls)
            return fy_conf_quick_error(c, c->upstream_ca ? "upstream-ca" : "upstream", err, errlen,
                                       ": %s", tls_err);
        if (c->insecure_skip_verify)
            fy_warn("TLS verification of the upstream is disabled (insecure-skip-verify): the "
                    "certificate of %s is not checked, so anyone between ferry and it can read "
                    "and change the traffic",
                    c->upstream_text);
    }
    return FY_ARGS_OK;
}
