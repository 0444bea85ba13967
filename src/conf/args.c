/*
 * The option table and the command line. Every setting is one entry of fy_options (key, kind,
 * field); the argv parser here and the YAML loader (yaml.c) both apply values through
 * fy_option_apply(), so `--idle-timeout 60s` and `idle-timeout: 60s` cannot drift apart.
 * `-c FILE` loads the file first; options on the command line then override its keys.
 */
#include "conf/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "conf/forward.h"
#include "conf/schema.h"
#include "conf/yaml.h"

#include "http/h1_reader.h"
#include "http/tokens.h"
#include "lua/lua_vm.h"
#include "net/tls.h"

static const char usage_text[] =
    "usage: ferry --upstream http[s]://HOST:PORT [options]\n"
    "       ferry --forward [--intercept] [options]  a forward proxy\n"
    "       ferry -c FILE [options]      run with a YAML configuration file\n"
    "       ferry -t -c FILE             check it (each error as FILE:LINE:COLUMN; exit 1)\n"
    "       ferry --print-config [options]  print the command line as a configuration file\n"
    "       ferry -s reload|stop|reopen -c FILE  signal the ferry whose pid-file FILE names\n"
    "                                    (or --pid-file PATH): reload the configuration,\n"
    "                                    drain and stop, reopen the access log\n"
    "\n"
    "An HTTP/1.1 reverse proxy. Every option below is also a top-level key of the\n"
    "configuration file, of the same name without the dashes (idle-timeout: 60s); the\n"
    "repeatable ones take a list (remove-request-header: [Cookie]). Options given with -c\n"
    "override the file's keys (header rules are added after the file's). See docs/config.md.\n"
    "\n"
    "  --listen ADDR:PORT            where to accept clients (default 127.0.0.1:8080);\n"
    "                                :PORT = every interface, [IPv6]:PORT in brackets\n"
    "  --upstream http://HOST:PORT   the server to forward to (required); https://HOST[:PORT]\n"
    "                                speaks TLS to it (port 443 by default), verified against\n"
    "                                the system's CA store\n"
    "  --workers N                   worker threads (default: one per CPU)\n"
    "\n"
    "TLS:\n"
    "  --tls-cert FILE               with --tls-key: --listen accepts TLS clients, with this\n"
    "                                certificate (PEM: the certificate, then its chain)\n"
    "  --tls-key FILE                the certificate's private key (PEM, unencrypted)\n"
    "  --upstream-ca FILE            verify an https:// upstream against these CA certificates\n"
    "                                (PEM) instead of the system's store\n"
    "  --insecure-skip-verify on|off do not verify the https:// upstream's certificate at all\n"
    "                                (default off; for tests only: logged as a warning)\n"
    "\n"
    "Forward proxy (ferry --forward --listen 127.0.0.1:3128; docs/forward-proxy.md):\n"
    "  --forward                     each request goes to its own destination (GET http://h/p,\n"
    "                                CONNECT h:443); no --upstream\n"
    "  --connect-ports 443,8443      ports CONNECT may reach (default 443)\n"
    "  --allow-clients CIDR,...      clients served (default loopback and private ranges)\n"
    "  --htpasswd FILE               ask for Proxy-Authorization (Basic) against FILE (407)\n"
    "  --intercept                   HTTPS interception: CONNECT tunnels are terminated with\n"
    "                                certificates signed by ferry's CA (ferry ca: where it is,\n"
    "                                how to trust it); destinations verified (--upstream-ca)\n"
    "  --ca-cert FILE --ca-key FILE  the interception CA (default: made in --state-dir)\n"
    "  --state-dir DIR               where ferry keeps its CA (default $XDG_STATE_HOME/ferry,\n"
    "                                /var/lib/ferry for root)\n"
    "  --pass-through PATTERN        a host interception leaves alone (repeatable)\n"
    "  --capture FILE                record every exchange as JSON lines (docs/capture.md)\n"
    "  --compress                    compress responses (gzip, br, zstd) for clients that\n"
    "                                accept it (docs/config.md, compress:)\n"
    "  --lua FILE                    run the script's on_request, on_response and on_log\n"
    "                                hooks (docs/lua.md)\n"
    "\n"
    "  --request-header 'Name: v'    set a field on requests sent upstream (repeatable)\n"
    "  --response-header 'Name: v'   set a field on responses sent to clients (repeatable)\n"
    "  --remove-request-header NAME  remove a request field (repeatable)\n"
    "  --remove-response-header NAME remove a response field (repeatable)\n"
    "                                values may use ${env:NAME} or ${file:PATH} to keep\n"
    "                                secrets out of argv (also in every other value)\n"
    "  --host upstream|preserve|VAL  Host sent upstream (default: upstream's host:port);\n"
    "                                rules cannot set or remove Host: use this\n"
    "  --x-forwarded-for on|off      append the client address (default on)\n"
    "  --x-forwarded-proto on|off    set X-Forwarded-Proto (default on)\n"
    "  --x-forwarded-host on|off     set X-Forwarded-Host to the client's Host (default on)\n"
    "  --via on|off                  add Via: 1.1 ferry (default on)\n"
    "  --upgrade-protocols LIST      Upgrade protocols tunnelled after a 101, comma-separated\n"
    "                                (default websocket; others are forwarded without Upgrade)\n"
    "  --abort-on-client-close on|off  a client that hangs up while the upstream has not\n"
    "                                answered abandons the request (default on, 499)\n"
    "  --pid-file PATH               write the process id there (for ferry -s reload|stop)\n"
    "  --trust-request-id on|off     keep the client's X-Request-Id (default off: ferry makes\n"
    "                                one for every request, passes it upstream and logs it)\n"
    "  --splice on|off               move large plain response bodies socket to socket with\n"
    "                                splice(2), not through ferry's buffers (default on)\n"
    "  --splice-min-size 64k         the smallest Content-Length body spliced\n"
    "  --access-log stdout|off|PATH  one line per exchange (default stdout)\n"
    "  --access-log-format combined|json|pretty  (--log-format): pretty is one aligned,\n"
    "                                coloured line per exchange for people; -v adds the\n"
    "                                heads, -vv the bodies (up to 4k each)\n"
    "  --log-level debug|info|warn|error   diagnostics on stderr (default info)\n"
    "\n"
    "timeouts (500ms, 3s, 2m; plain numbers are seconds):\n"
    "  --header-timeout 10s    client must send the request head within this (408)\n"
    "  --idle-timeout 60s      keep-alive client connection idle time\n"
    "  --body-timeout 60s      gap between reads of a client request body\n"
    "  --send-timeout 60s      gap between writes to a client that does not read\n"
    "  --connect-timeout 5s    upstream connect (502)\n"
    "  --upstream-timeout 60s  upstream response head and gaps in its body (504)\n"
    "  --drain-timeout 10s     on SIGTERM, how long in-flight exchanges may finish\n"
    "  --pool-idle-timeout 60s idle upstream connection kept for reuse\n"
    "  --pool-max-idle 1024    idle upstream connections kept per worker\n"
    "\n"
    "limits (sizes: 512, 16k, 1m):\n"
    "  --max-request-line 8k   (414)\n"
    "  --max-header-size 16k   whole request head (431)\n"
    "  --max-headers 100       header fields (431)\n"
    "  --max-body-size 0       request body, 0 = unlimited (413)\n"
    "  --max-connections 16384 client connections per worker\n"
    "\n"
    "name resolution (server names in upstreams:):\n"
    "  --resolvers IP[:PORT],...  DNS servers to ask (default system: /etc/hosts, then\n"
    "                             /etc/resolv.conf); custom servers are asked alone\n"
    "  --resolve-interval 30s     re-resolve server names this often; a changed answer\n"
    "                             reloads the configuration (0 = resolve at start only)\n"
    "  --resolve-timeout 5s       how long one name may take (start fails after it)\n"
    "\n"
    "  -c, --config FILE  -t, --test  --print-config  --help  --version\n"
    "exit codes: 0 ok, 1 invalid configuration file or startup failure, 2 bad command line\n";

void fy_config_defaults(struct fy_config *c)
{
    memset(c, 0, sizeof(*c));
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    c->workers = cpus > 0 ? (int)cpus : 1;
    c->host_mode = FY_HOST_UPSTREAM;
    c->x_forwarded_for = c->x_forwarded_proto = c->x_forwarded_host = c->via = true;
    c->abort_on_client_close = true;
    c->splice = true;
    c->splice_min_size = 64 * 1024;
    c->access_log = FY_ALOG_STDOUT;
    c->access_log_format = FY_ALOG_COMBINED;
    c->log_level = FY_LOG_INFO;
    c->header_timeout = 10000;
    c->idle_timeout = 60000;
    c->body_timeout = 60000;
    c->send_timeout = 60000;
    c->connect_timeout = 5000;
    c->upstream_timeout = 60000;
    c->drain_timeout = 10000;
    c->pool_idle_timeout = 60000;
    c->pool_max_idle = 1024;
    c->max_request_line = 8192;
    c->max_header_size = 16384;
    c->max_headers = 100;
    c->max_connections = 16384;
    c->max_body_size = 0;
    c->resolver.servers = NULL;
    c->resolver.interval_ms = 30000;
    c->resolver.timeout_ms = 5000;
}

static void free_rules(struct fy_header_rules *r)
{
    for (uint32_t i = 0; i < r->n; i++) {
        free(r->items[i].name);
        free(r->items[i].value);
        free(r->items[i].source);
    }
    free(r->items);
    r->items = NULL;
    r->n = 0;
}

void fy_config_free(struct fy_config *c)
{
    for (size_t i = 0; i < FY_OPT_SLOTS; i++) {
        free(c->opt_text[i]);
        free(c->opt_where[i]);
    }
    free(c->config_path);
    free(c->file_errors);
    free(c->listen_text);
    free(c->upstream_text);
    free(c->upstream_authority);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->upstream_ca);
    fy_tls_server_unref(c->quick_tls);
    fy_tls_client_unref(c->quick_upstream_tls);
    c->quick_tls = NULL;
    c->quick_upstream_tls = NULL;
    free(c->host_value);
    free(c->upgrade_protocols);
    free(c->access_log_path);
    free(c->pid_file);
    fy_forward_conf_free(c->quick_forward);
    c->quick_forward = NULL;
    free(c->connect_ports);
    free(c->allow_clients);
    free(c->htpasswd);
    free(c->ca_cert);
    free(c->ca_key);
    free(c->state_dir);
    free(c->pass_through);
    free(c->capture);
    free(c->lua);
    free(c->resolver.servers);
    c->resolver.servers = NULL;
    free_rules(&c->request_rules);
    free_rules(&c->response_rules);
    fy_listeners_free(c->listeners, c->nlisteners);
    fy_groups_free(c->groups, c->ngroups);
    c->listeners = NULL;
    c->groups = NULL;
    c->nlisteners = c->ngroups = 0;
}

int fy_parse_duration(const char *s, uint64_t *ms)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*s))
        return -1; /* also keeps out "nan", "inf", signs, spaces and ".5" */
    /* digits, then at most one '.' followed by digits: strtod alone would take hex (0x10) and
     * exponents (1e3), which no duration is written as */
    const char *p = s;
    while (isdigit((unsigned char)*p))
        p++;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p && *p != 's' && *p != 'm' && *p != 'h')
        return -1;
    double v = strtod(s, &end);
    if (end != p)
        return -1;
    if (end == s || errno || !(v >= 0))
        return -1;
    double mult;
    if (!*end || !strcmp(end, "s"))
        mult = 1000;
    else if (!strcmp(end, "ms"))
        mult = 1;
    else if (!strcmp(end, "m"))
        mult = 60000;
    else if (!strcmp(end, "h"))
        mult = 3600000;
    else
        return -1;
    double r = v * mult;
    if (r > 1e12)
        return -1;
    *ms = (uint64_t)r;
    return 0;
}

int fy_parse_size(const char *s, uint64_t *bytes)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    uint64_t mult = 1;
    if (*end) {
        switch (tolower((unsigned char)*end)) {
        case 'k':
            mult = 1024;
            break;
        case 'm':
            mult = 1024 * 1024;
            break;
        case 'g':
            mult = 1024ull * 1024 * 1024;
            break;
        default:
            return -1;
        }
        end++;
        if (*end == 'b' || *end == 'B')
            end++;
        if (*end)
            return -1;
    }
    if (v > UINT64_MAX / mult)
        return -1;
    *bytes = v * mult;
    return 0;
}

/* Appends n bytes to a growing string. */
static int append(char **out, size_t *len, size_t *cap, const char *add, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t ncap = (*len + n + 1) * 2;
        char *grown = realloc(*out, ncap);
        if (!grown)
            return -1;
        *out = grown;
        *cap = ncap;
    }
    memcpy(*out + *len, add, n);
    *len += n;
    (*out)[*len] = 0;
    return 0;
}

char *fy_conf_path(const char *base_dir, const char *path)
{
    if (path[0] == '/' || !base_dir || !*base_dir)
        return strdup(path);
    char *full;
    if (asprintf(&full, "%s/%s", base_dir, path) < 0)
        return NULL;
    return full;
}

/* The contents of a ${file:PATH}, one trailing newline (LF or CRLF) trimmed. */
static char *read_ref_file(const char *path, const char *base_dir, char **what)
{
    char full[8192];
    int fl;
    if (path[0] != '/' && base_dir && *base_dir)
        fl = snprintf(full, sizeof(full), "%s/%s", base_dir, path);
    else
        fl = snprintf(full, sizeof(full), "%s", path);
    FILE *f = fl > 0 && (size_t)fl < sizeof(full) ? fopen(full, "rb") : NULL;
    if (!f && fl > 0 && (size_t)fl >= sizeof(full))
        errno = ENAMETOOLONG;
    if (!f)
        goto fail;
    char *data = NULL;
    size_t len = 0, cap = 0;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (append(&data, &len, &cap, chunk, n) < 0 || len > (1u << 20)) {
            free(data);
            fclose(f);
            errno = EFBIG;
            goto fail;
        }
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(data);
        errno = EIO;
        goto fail;
    }
    if (!data)
        data = strdup("");
    if (len && data[len - 1] == '\n')
        data[--len] = 0;
    if (len && data[len - 1] == '\r')
        data[--len] = 0;
    return data;
fail:;
    int e = errno;
    if (asprintf(what, "%s: %s", full, strerror(e)) < 0)
        *what = NULL;
    return NULL;
}

char *fy_expand(const char *s, const char *base_dir, enum fy_expand_error *e, char **what)
{
    *e = FY_EXPAND_OK;
    *what = NULL;
    size_t cap = 0, len = 0;
    char *out = NULL;
    if (append(&out, &len, &cap, "", 0) < 0)
        return NULL;
    while (*s) {
        bool env = !strncmp(s, "${env:", 6), file = !strncmp(s, "${file:", 7);
        if (!env && !file) {
            size_t n = strcspn(s + 1, "$") + 1;
            if (append(&out, &len, &cap, s, n) < 0)
                goto fail;
            s += n;
            continue;
        }
        const char *name = s + (env ? 6 : 7);
        const char *close = strchr(name, '}');
        size_t nl = close ? (size_t)(close - name) : 0;
        char ref[4096];
        if (!close || nl == 0 || nl >= (env ? 256 : sizeof(ref))) {
            *e = FY_EXPAND_MALFORMED;
            goto fail;
        }
        memcpy(ref, name, nl);
        ref[nl] = 0;
        int rc;
        if (env) {
            const char *v = getenv(ref);
            if (!v) {
                *e = FY_EXPAND_NO_ENV;
                *what = strdup(ref);
                goto fail;
            }
            rc = append(&out, &len, &cap, v, strlen(v));
        } else {
            char *v = read_ref_file(ref, base_dir, what);
            if (!v) {
                *e = FY_EXPAND_NO_FILE;
                goto fail;
            }
            rc = append(&out, &len, &cap, v, strlen(v));
            free(v);
        }
        if (rc < 0)
            goto fail;
        s = close + 1;
    }
    return out;
fail:
    free(out);
    return NULL;
}

char *fy_expand_env(const char *s, char **missing)
{
    enum fy_expand_error e;
    char *what;
    char *out = fy_expand(s, NULL, &e, &what);
    if (e == FY_EXPAND_NO_ENV) {
        *missing = what;
    } else {
        free(what);
        *missing = NULL;
    }
    return out;
}

/* Expands `raw` for option `name`; NULL with the message in err. */
static char *expand_value(const char *name, const char *raw, const char *base_dir, char *err,
                          size_t errlen)
{
    enum fy_expand_error e;
    char *what;
    char *v = fy_expand(raw, base_dir, &e, &what);
    if (v)
        return v;
    switch (e) {
    case FY_EXPAND_NO_ENV:
        fy_errf(err, errlen, "%s: environment variable %s is not set", name, what ? what : "?");
        break;
    case FY_EXPAND_NO_FILE:
        fy_errf(err, errlen, "%s: cannot read ${file:...} %s", name, what ? what : "");
        break;
    case FY_EXPAND_MALFORMED:
        fy_errf(err, errlen, "%s: malformed ${env:NAME} or ${file:PATH} in '%s'", name, raw);
        break;
    default:
        fy_errf(err, errlen, "out of memory");
        break;
    }
    free(what);
    return NULL;
}

static bool valid_name(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!fy_is_tchar((unsigned char)s[i]))
            return false;
    return true;
}

static int add_rule(struct fy_header_rules *rules, const char *opt, const char *arg, bool request,
                    bool remove, const char *base_dir, char *err, size_t errlen)
{
    const char *name = arg, *value = NULL;
    size_t nlen = strlen(arg);
    if (!remove) {
        const char *colon = strchr(arg, ':');
        if (!colon)
            return fy_errf(err, errlen, "%s expects 'Name: value', got '%s'", opt, arg);
        nlen = (size_t)(colon - arg);
        value = colon + 1;
        while (*value == ' ' || *value == '\t')
            value++;
    }
    if (!valid_name(name, nlen))
        return fy_errf(err, errlen, "%s: '%.*s' is not a valid header field name", opt, (int)nlen,
                       name);
    /* Framing and hop-by-hop fields are ferry's to write: a rule could desynchronise framing. */
    enum fy_token tok = fy_token_lookup(name, nlen);
    if (tok == FY_TOK_CONTENT_LENGTH || (fy_token_flags(tok) & FY_TOKF_HOP))
        return fy_errf(err, errlen,
                       "%s: %.*s is managed by ferry (message framing and connection "
                       "fields cannot be set or removed)",
                       opt, (int)nlen, name);
    /* An HTTP/1.1 request must carry exactly one Host (RFC 9112 3.2): --host owns it. */
    if (request && tok == FY_TOK_HOST)
        return fy_errf(err, errlen,
                       "%s: Host is managed by --host (every HTTP/1.1 request needs one): use "
                       "--host VALUE to send another, --host preserve to keep the client's",
                       opt);
    char *expanded = NULL;
    if (value) {
        enum fy_expand_error e;
        char *what;
        expanded = fy_expand(value, base_dir, &e, &what);
        if (!expanded) {
            if (e == FY_EXPAND_NO_ENV)
                fy_errf(err, errlen, "%s: environment variable %s is not set", opt,
                        what ? what : "?");
            else if (e == FY_EXPAND_NO_FILE)
                fy_errf(err, errlen, "%s: cannot read ${file:...} %s", opt, what ? what : "");
            else if (e == FY_EXPAND_MALFORMED)
                fy_errf(err, errlen, "%s: malformed ${env:NAME} or ${file:PATH} in '%s'", opt, arg);
            else
                fy_errf(err, errlen, "out of memory");
            free(what);
            return -1;
        }
        size_t vl = strlen(expanded);
        while (vl && (expanded[vl - 1] == ' ' || expanded[vl - 1] == '\t'))
            expanded[--vl] = 0;
        for (size_t i = 0; i < vl; i++) {
            unsigned char c = (unsigned char)expanded[i];
            if ((c < 0x20 && c != '\t') || c == 0x7f) {
                free(expanded);
                return fy_errf(err, errlen, "%s: value of %.*s contains a control character", opt,
                               (int)nlen, name);
            }
        }
    }
    struct fy_header_rule *items = realloc(rules->items, (rules->n + 1) * sizeof(*items));
    if (!items) {
        free(expanded);
        return fy_errf(err, errlen, "out of memory");
    }
    rules->items = items;
    struct fy_header_rule *r = &items[rules->n++];
    r->name = strndup(name, nlen);
    r->name_len = (uint32_t)nlen;
    r->value = expanded;
    r->value_len = expanded ? (uint32_t)strlen(expanded) : 0;
    r->source = strdup(arg);
    return 0;
}

static int parse_upstream(struct fy_config *c, const char *opt, const char *arg, char *err,
                          size_t errlen)
{
    const char *rest = arg;
    bool https = !strncmp(rest, "https://", 8);
    if (https)
        rest += 8;
    else if (!strncmp(rest, "http://", 7))
        rest += 7;
    else if (strstr(rest, "://"))
        return fy_errf(err, errlen,
                       "%s: only http:// and https:// upstreams are supported, got '%s'", opt, arg);
    size_t n = strcspn(rest, "/");
    if (rest[n] && strcmp(rest + n, "/") != 0)
        return fy_errf(err, errlen, "%s: a path is not supported yet, got '%s'", opt, arg);
    char auth[300];
    if (n >= sizeof(auth))
        return fy_errf(err, errlen, "%s: host too long in '%s'", opt, arg);
    memcpy(auth, rest, n);
    auth[n] = 0;
    if (strchr(auth, '@'))
        return fy_errf(err, errlen,
                       "%s '%s': an upstream URL has no user or password (send credentials with "
                       "--request-header 'Authorization: ...')",
                       opt, arg);
    /* The authority is also the default Host: it must name a server, with a usable port. */
    if (n == 0 || (auth[0] == ':' && !strchr(auth + 1, ':')) || !strncmp(auth, "[]", 2))
        return fy_errf(err, errlen, "%s '%s': missing host (write http://HOST:PORT)", opt, arg);
    /* An unbracketed IPv6 address would be sent as "Host: ::1:9100". The last group may be
     * meant as the port: suggest that reading when it makes an address. */
    const char *last = strrchr(auth, ':');
    if (auth[0] != '[' && last && strchr(auth, ':') != last) {
        char prefix[300];
        struct in6_addr a6;
        snprintf(prefix, sizeof(prefix), "%.*s", (int)(last - auth), auth);
        if (inet_pton(AF_INET6, prefix, &a6) == 1 && last[1] &&
            strspn(last + 1, "0123456789") == strlen(last + 1))
            return fy_errf(err, errlen,
                           "%s '%s': an IPv6 address goes in brackets: write http://[%s]:%s", opt,
                           arg, prefix, last + 1);
        return fy_errf(err, errlen,
                       "%s '%s': an IPv6 address goes in brackets: write http://[%s]:PORT", opt,
                       arg, auth);
    }
    char hostport[310];
    const char *last_colon = strrchr(auth, ':');
    const char *bracket = strrchr(auth, ']');
    if (!last_colon || (bracket && last_colon < bracket)) /* no port: the scheme's default */
        snprintf(hostport, sizeof(hostport), "%s:%s", auth, https ? "443" : "80");
    else
        snprintf(hostport, sizeof(hostport), "%s", auth);
    char why[200];
    if (fy_addr_parse(hostport, &c->upstream, why, sizeof(why)) < 0)
        return fy_errf(err, errlen, "%s '%s': %s", opt, arg, why);
    if (fy_addr_port((const struct sockaddr *)&c->upstream.ss) == 0)
        return fy_errf(err, errlen, "%s '%s': port 0 cannot be connected to", opt, arg);
    free(c->upstream_text);
    free(c->upstream_authority);
    c->upstream_text = strdup(arg);
    c->upstream_authority = strdup(auth);
    return 0;
}

/* A comma-separated list of protocol names (token characters); "none" allows no upgrade. */
static int parse_upgrade_protocols(struct fy_config *c, const char *opt, const char *v, char *err,
                                   size_t errlen)
{
    const char *p = v;
    bool any = false;
    while (*p) {
        while (*p == ',' || *p == ' ')
            p++;
        const char *start = p;
        while (*p && *p != ',' && *p != ' ') {
            if (!fy_is_tchar((unsigned char)*p))
                return fy_errf(err, errlen,
                               "%s expects protocol names separated by commas "
                               "(e.g. websocket), got '%s'",
                               opt, v);
            p++;
        }
        any |= p > start;
    }
    if (!any)
        return fy_errf(err, errlen, "%s needs at least one name (or none)", opt);
    free(c->upgrade_protocols);
    /* The empty list (from "none") matches nothing; NULL would mean the default. */
    c->upgrade_protocols = strdup(strcmp(v, "none") ? v : "");
    return c->upgrade_protocols ? 0 : fy_errf(err, errlen, "out of memory");
}

static int parse_host(struct fy_config *c, const char *opt, const char *raw, const char *v,
                      char *err, size_t errlen)
{
    free(c->host_value);
    c->host_value = NULL;
    if (!strcmp(v, "upstream")) {
        c->host_mode = FY_HOST_UPSTREAM;
        return 0;
    }
    if (!strcmp(v, "preserve")) {
        c->host_mode = FY_HOST_PRESERVE;
        return 0;
    }
    if (!*raw)
        return fy_errf(err, errlen, "%s expects upstream, preserve or a host name, got ''", opt);
    if (!*v)
        return fy_errf(err, errlen, "%s '%s' expands to an empty value", opt, raw);
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return fy_errf(err, errlen, "%s: '%s' is not a valid host", opt, raw);
    c->host_mode = FY_HOST_VALUE;
    c->host_value = strdup(v);
    return c->host_value ? 0 : fy_errf(err, errlen, "out of memory");
}

static int parse_access_log(struct fy_config *c, const char *opt, const char *v, char *err,
                            size_t errlen)
{
    free(c->access_log_path);
    c->access_log_path = NULL;
    if (!strcmp(v, "stdout")) {
        c->access_log = FY_ALOG_STDOUT;
    } else if (!strcmp(v, "off")) {
        c->access_log = FY_ALOG_OFF;
    } else if (!*v) {
        return fy_errf(err, errlen, "%s expects stdout, off or a file path", opt);
    } else {
        c->access_log = FY_ALOG_FILE;
        c->access_log_path = strdup(v);
    }
    return 0;
}

/* One DNS server of a resolvers list ("IPv4", "IPv4:PORT", "IPv6", "[IPv6]" or "[IPv6]:PORT"),
 * appended to out as c-ares' "IP:PORT" / "[IPv6]:PORT" with the port always written. A name is
 * refused: finding the server would need a resolver. Returns 0 or -1 (err). */
static int add_resolver(const char *opt, const char *item, size_t n, char *out, size_t cap,
                        size_t *len, char *err, size_t errlen)
{
    char ip[INET6_ADDRSTRLEN + 2];
    const char *orig = item, *port = NULL;
    size_t iplen = n, plen = 0;
    bool v6 = false;
    if (n && item[0] == '[') {
        const char *close = memchr(item, ']', n);
        if (!close || (close + 1 < item + n && close[1] != ':'))
            return fy_errf(err, errlen, "%s: expected [IPv6]:PORT, got '%.*s'", opt, (int)n, item);
        item++;
        iplen = (size_t)(close - item);
        v6 = true;
        if (close + 1 < item - 1 + n) {
            port = close + 2;
            plen = (size_t)(item - 1 + n - port);
        }
    } else {
        const char *colon = memchr(item, ':', n);
        const char *second = colon ? memchr(colon + 1, ':', (size_t)(item + n - colon - 1)) : NULL;
        if (second) {
            v6 = true; /* bare IPv6: every group is the address, the port is 53 */
        } else if (colon) {
            iplen = (size_t)(colon - item);
            port = colon + 1;
            plen = (size_t)(item + n - port);
        }
    }
    struct in6_addr a;
    if (iplen == 0 || iplen >= sizeof(ip) - 2)
        goto not_ip;
    memcpy(ip, item, iplen);
    ip[iplen] = 0;
    if (inet_pton(v6 ? AF_INET6 : AF_INET, ip, &a) != 1)
        goto not_ip;
    unsigned long p = 53;
    if (port) {
        char digits[6];
        if (plen == 0 || plen > 5 || strspn(port, "0123456789") < plen)
            return fy_errf(err, errlen, "%s: port must be a number from 1 to 65535, got '%.*s'",
                           opt, (int)plen, port);
        memcpy(digits, port, plen);
        digits[plen] = 0;
        p = strtoul(digits, NULL, 10);
        if (p == 0 || p > 65535)
            return fy_errf(err, errlen, "%s: port must be a number from 1 to 65535, got '%s'", opt,
                           digits);
    }
    int w =
        snprintf(out + *len, cap - *len, v6 ? "%s[%s]:%lu" : "%s%s:%lu", *len ? "," : "", ip, p);
    if (w < 0 || (size_t)w >= cap - *len)
        return fy_errf(err, errlen, "%s: internal error: list too long", opt);
    *len += (size_t)w;
    return 0;
not_ip:
    return fy_errf(err, errlen,
                   "%s: '%.*s' is not an IP address (write DNS servers as IP[:PORT], "
                   "[IPv6]:PORT)",
                   opt, (int)n, orig);
}

/* "system", or a comma-separated list of DNS servers. */
static int parse_resolvers(struct fy_config *c, const char *opt, const char *v, char *err,
                           size_t errlen)
{
    if (!strcmp(v, "system")) {
        free(c->resolver.servers);
        c->resolver.servers = NULL;
        return 0;
    }
    /* An item of k >= 2 characters ("::" is the shortest) becomes at most k + 6: ",[" "]:53". */
    size_t cap = strlen(v) * 4 + 16;
    char *out = malloc(cap);
    if (!out)
        return fy_errf(err, errlen, "out of memory");
    size_t len = 0;
    out[0] = 0;
    for (const char *p = v; *p;) {
        p += strspn(p, " ,");
        size_t n = strcspn(p, " ,");
        if (n && add_resolver(opt, p, n, out, cap, &len, err, errlen) < 0) {
            free(out);
            return -1;
        }
        p += n;
    }
    if (!len) {
        free(out);
        return fy_errf(err, errlen,
                       "%s expects DNS servers as IP[:PORT] separated by commas, or system", opt);
    }
    free(c->resolver.servers);
    c->resolver.servers = out;
    return 0;
}

/* The table. Its order is the order of --help, of --print-config and of docs/config.md. */
#define CFG_OFF(field) offsetof(struct fy_config, field)
const struct fy_option fy_options[] = {
    {"listen", FY_OPT_LISTEN, 0, 0, 0, FY_OPTF_QUICK},
    {"upstream", FY_OPT_UPSTREAM, 0, 0, 0, FY_OPTF_QUICK},
    {"workers", FY_OPT_WORKERS, 0, 1, 256, 0},
    {"tls-cert", FY_OPT_FILE, CFG_OFF(tls_cert), 0, 0, FY_OPTF_QUICK},
    {"tls-key", FY_OPT_FILE, CFG_OFF(tls_key), 0, 0, FY_OPTF_QUICK},
    /* Early: with listeners: they are the groups' defaults, needed when the file's groups are
     * compiled. */
    {"upstream-ca", FY_OPT_FILE, CFG_OFF(upstream_ca), 0, 0, FY_OPTF_EARLY},
    {"insecure-skip-verify", FY_OPT_ONOFF, CFG_OFF(insecure_skip_verify), 0, 0, FY_OPTF_EARLY},
    {"resolvers", FY_OPT_RESOLVERS, 0, 0, 0, FY_OPTF_EARLY},
    {"resolve-interval", FY_OPT_DURATION, CFG_OFF(resolver.interval_ms), 0, 0, 0},
    {"resolve-timeout", FY_OPT_DURATION, CFG_OFF(resolver.timeout_ms), 1, 0, FY_OPTF_EARLY},
    {"request-header", FY_OPT_RULE, CFG_OFF(request_rules), 0, 0, FY_OPTF_REQUEST},
    {"response-header", FY_OPT_RULE, CFG_OFF(response_rules), 0, 0, 0},
    {"remove-request-header", FY_OPT_RULE, CFG_OFF(request_rules), 0, 0,
     FY_OPTF_REQUEST | FY_OPTF_REMOVE},
    {"remove-response-header", FY_OPT_RULE, CFG_OFF(response_rules), 0, 0, FY_OPTF_REMOVE},
    {"host", FY_OPT_HOST, 0, 0, 0, 0},
    {"x-forwarded-for", FY_OPT_ONOFF, CFG_OFF(x_forwarded_for), 0, 0, 0},
    {"x-forwarded-proto", FY_OPT_ONOFF, CFG_OFF(x_forwarded_proto), 0, 0, 0},
    {"x-forwarded-host", FY_OPT_ONOFF, CFG_OFF(x_forwarded_host), 0, 0, 0},
    {"via", FY_OPT_ONOFF, CFG_OFF(via), 0, 0, 0},
    {"upgrade-protocols", FY_OPT_UPGRADE, 0, 0, 0, 0},
    {"abort-on-client-close", FY_OPT_ONOFF, CFG_OFF(abort_on_client_close), 0, 0, 0},
    {"trust-request-id", FY_OPT_ONOFF, CFG_OFF(trust_request_id), 0, 0, 0},
    {"splice", FY_OPT_ONOFF, CFG_OFF(splice), 0, 0, 0},
    {"splice-min-size", FY_OPT_SIZE, CFG_OFF(splice_min_size), 0, UINT64_MAX, FY_OPTF_U64},
    {"pid-file", FY_OPT_PATH, CFG_OFF(pid_file), 0, 0, 0},
    {"access-log", FY_OPT_ACCESS_LOG, 0, 0, 0, 0},
    {"access-log-format", FY_OPT_LOG_FORMAT, 0, 0, 0, 0},
    {"verbose", FY_OPT_SIZE, CFG_OFF(verbose), 0, 2, FY_OPTF_COUNT},
    {"log-level", FY_OPT_LOG_LEVEL, 0, 0, 0, 0},
    /* The forward proxy's shorthand (a file says it in a listener's forward: block). */
    {"forward", FY_OPT_ONOFF, CFG_OFF(forward), 0, 0, FY_OPTF_QUICK | FY_OPTF_BARE},
    {"connect-ports", FY_OPT_LIST, CFG_OFF(connect_ports), 0, 0, FY_OPTF_QUICK},
    {"allow-clients", FY_OPT_LIST, CFG_OFF(allow_clients), 0, 0, FY_OPTF_QUICK},
    {"htpasswd", FY_OPT_FILE, CFG_OFF(htpasswd), 0, 0, FY_OPTF_QUICK},
    {"intercept", FY_OPT_ONOFF, CFG_OFF(intercept), 0, 0, FY_OPTF_QUICK | FY_OPTF_BARE},
    {"ca-cert", FY_OPT_FILE, CFG_OFF(ca_cert), 0, 0, FY_OPTF_QUICK},
    {"ca-key", FY_OPT_FILE, CFG_OFF(ca_key), 0, 0, FY_OPTF_QUICK},
    {"state-dir", FY_OPT_PATH, CFG_OFF(state_dir), 0, 0, 0},
    {"pass-through", FY_OPT_LIST, CFG_OFF(pass_through), 0, 0, FY_OPTF_QUICK},
    {"capture", FY_OPT_PATH, CFG_OFF(capture), 0, 0, FY_OPTF_QUICK},
    {"compress", FY_OPT_ONOFF, CFG_OFF(compress), 0, 0, FY_OPTF_QUICK | FY_OPTF_BARE},
    {"lua", FY_OPT_PATH, CFG_OFF(lua), 0, 0, FY_OPTF_QUICK},
    {"header-timeout", FY_OPT_DURATION, CFG_OFF(header_timeout), 0, 0, 0},
    {"idle-timeout", FY_OPT_DURATION, CFG_OFF(idle_timeout), 0, 0, 0},
    {"body-timeout", FY_OPT_DURATION, CFG_OFF(body_timeout), 0, 0, 0},
    {"send-timeout", FY_OPT_DURATION, CFG_OFF(send_timeout), 0, 0, 0},
    {"connect-timeout", FY_OPT_DURATION, CFG_OFF(connect_timeout), 0, 0, 0},
    {"upstream-timeout", FY_OPT_DURATION, CFG_OFF(upstream_timeout), 0, 0, 0},
    {"drain-timeout", FY_OPT_DURATION, CFG_OFF(drain_timeout), 0, 0, 0},
    {"pool-idle-timeout", FY_OPT_DURATION, CFG_OFF(pool_idle_timeout), 0, 0, 0},
    {"pool-max-idle", FY_OPT_SIZE, CFG_OFF(pool_max_idle), 0, 1 << 20, FY_OPTF_COUNT},
    {"max-request-line", FY_OPT_SIZE, CFG_OFF(max_request_line), 64, 1 << 20, 0},
    {"max-header-size", FY_OPT_SIZE, CFG_OFF(max_header_size), 256, 1 << 20, 0},
    {"max-headers", FY_OPT_SIZE, CFG_OFF(max_headers), 1, 10000, FY_OPTF_COUNT},
    {"max-body-size", FY_OPT_SIZE, CFG_OFF(max_body_size), 0, UINT64_MAX, FY_OPTF_U64},
    {"max-connections", FY_OPT_SIZE, CFG_OFF(max_connections), 1, 1 << 24, FY_OPTF_COUNT},
};
const size_t fy_options_count = sizeof(fy_options) / sizeof(fy_options[0]);
_Static_assert(sizeof(fy_options) / sizeof(fy_options[0]) <= FY_OPT_SLOTS, "raise FY_OPT_SLOTS");
_Static_assert(FY_OPT_SLOTS <= 64, "early_given is a 64-bit mask");

const struct fy_option *fy_option_find(const char *key)
{
    if (!strcmp(key, "log-format")) /* the short name the forward proxy's users type */
        key = "access-log-format";
    for (size_t k = 0; k < fy_options_count; k++)
        if (!strcmp(key, fy_options[k].key))
            return &fy_options[k];
    return NULL;
}

static int apply_value(struct fy_config *c, const struct fy_option *o, const char *opt,
                       const char *raw, const char *v, char *err, size_t errlen)
{
    char *field = (char *)c + o->offset;
    switch (o->kind) {
    case FY_OPT_LISTEN: {
        char why[200];
        int rc = 0;
        if (fy_addr_parse(v, &c->listen, why, sizeof(why)) < 0)
            rc = fy_errf(err, errlen, "%s '%s': %s", opt, raw, why);
        free(c->listen_text);
        c->listen_text = strdup(v);
        return rc;
    }
    case FY_OPT_UPSTREAM:
        return parse_upstream(c, opt, v, err, errlen);
    case FY_OPT_WORKERS: {
        char *end;
        long n = strtol(v, &end, 10);
        if (!*v || *end || n < (long)o->min || n > (long)o->max)
            return fy_errf(err, errlen, "%s expects a number from %llu to %llu, got '%s'", opt,
                           (unsigned long long)o->min, (unsigned long long)o->max, raw);
        c->workers = (int)n;
        return 0;
    }
    case FY_OPT_HOST:
        return parse_host(c, opt, raw, v, err, errlen);
    case FY_OPT_ONOFF:
        if (!strcmp(v, "on"))
            *(bool *)field = true;
        else if (!strcmp(v, "off"))
            *(bool *)field = false;
        else
            return fy_errf(err, errlen, "%s expects on or off, got '%s'", opt, raw);
        return 0;
    case FY_OPT_UPGRADE:
        return parse_upgrade_protocols(c, opt, v, err, errlen);
    case FY_OPT_ACCESS_LOG:
        return parse_access_log(c, opt, v, err, errlen);
    case FY_OPT_LOG_FORMAT:
        if (!strcmp(v, "combined"))
            c->access_log_format = FY_ALOG_COMBINED;
        else if (!strcmp(v, "json"))
            c->access_log_format = FY_ALOG_JSON;
        else if (!strcmp(v, "pretty"))
            c->access_log_format = FY_ALOG_PRETTY;
        else
            return fy_errf(err, errlen, "%s expects combined, json or pretty, got '%s'", opt, raw);
        return 0;
    case FY_OPT_LOG_LEVEL:
        if (fy_log_parse_level(v, &c->log_level) < 0)
            return fy_errf(err, errlen, "%s expects debug, info, warn or error, got '%s'", opt,
                           raw);
        return 0;
    case FY_OPT_DURATION: {
        uint64_t ms;
        if (fy_parse_duration(v, &ms) < 0)
            return fy_errf(err, errlen, "%s expects a duration like 500ms, 10s or 2m, got '%s'",
                           opt, raw);
        if (ms < o->min)
            return fy_errf(err, errlen, "%s must be more than 0, got '%s'", opt, raw);
        *(uint64_t *)field = ms;
        return 0;
    }
    case FY_OPT_SIZE: {
        uint64_t n;
        if (fy_parse_size(v, &n) < 0 || n < o->min || n > o->max)
            return fy_errf(err, errlen, "%s expects a size from %llu to %llu (e.g. 16k), got '%s'",
                           opt, (unsigned long long)o->min, (unsigned long long)o->max, raw);
        if (o->flags & FY_OPTF_U64)
            *(uint64_t *)field = n;
        else
            *(uint32_t *)field = (uint32_t)n;
        return 0;
    }
    case FY_OPT_PATH:
    case FY_OPT_FILE: /* fy_option_apply() joined a FY_OPT_FILE to the file's directory */
        free(*(char **)field);
        *(char **)field = *v ? strdup(v) : NULL; /* "" is the default: none */
        return 0;
    case FY_OPT_RESOLVERS:
        return parse_resolvers(c, opt, v, err, errlen);
    case FY_OPT_LIST: {
        char **list = (char **)field;
        if (!*v)
            return 0;
        char *joined = NULL;
        if (asprintf(&joined, "%s%s%s", *list ? *list : "", *list ? "," : "", v) < 0)
            return fy_errf(err, errlen, "out of memory");
        free(*list);
        *list = joined;
        return 0;
    }
    case FY_OPT_RULE:
        break;
    }
    return fy_errf(err, errlen, "internal error: option %s", opt);
}

int fy_option_apply(struct fy_config *c, const struct fy_option *o, const char *name,
                    const char *raw, const char *base_dir, char *err, size_t errlen)
{
    size_t k = (size_t)(o - fy_options);
    if ((o->flags & FY_OPTF_EARLY) && (c->early_given >> k & 1))
        return 0;               /* the command line's value, applied before the file, stays */
    if (o->kind == FY_OPT_RULE) /* expands the value part only: names are checked as given */
        return add_rule((struct fy_header_rules *)((char *)c + o->offset), name, raw,
                        o->flags & FY_OPTF_REQUEST, o->flags & FY_OPTF_REMOVE, base_dir, err,
                        errlen);
    char *v = expand_value(name, raw, base_dir, err, errlen);
    if (!v)
        return -1;
    if (o->kind == FY_OPT_FILE && *v) {
        char *full = fy_conf_path(base_dir, v);
        free(v);
        if (!(v = full))
            return fy_errf(err, errlen, "out of memory");
    }
    int rc = apply_value(c, o, name, raw, v, err, errlen);
    free(v);
    if (rc == 0) {
        free(c->opt_text[k]);
        c->opt_text[k] = strdup(raw);
        free(c->opt_where[k]); /* the file's loader sets it again when the value is its own */
        c->opt_where[k] = NULL;
    }
    return rc;
}

/* ---- --print-config ---- */

/* Plain YAML scalars that read back as the same string; anything else is double-quoted. */
static void print_scalar(FILE *out, const char *s)
{
    bool plain = *s && (isalnum((unsigned char)*s) || *s == '/' || *s == '.');
    for (const char *p = s; *p && plain; p++)
        plain = isalnum((unsigned char)*p) || strchr("._/-:,@+", *p);
    if (plain && strstr(s, ": ") == NULL) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(out, "\\x%02x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

static void print_duration(FILE *out, uint64_t ms)
{
    if (ms && ms % 3600000 == 0)
        fprintf(out, "%lluh", (unsigned long long)(ms / 3600000));
    else if (ms && ms % 60000 == 0)
        fprintf(out, "%llum", (unsigned long long)(ms / 60000));
    else if (ms % 1000 == 0)
        fprintf(out, "%llus", (unsigned long long)(ms / 1000));
    else
        fprintf(out, "%llums", (unsigned long long)ms);
}

static void print_size(FILE *out, uint64_t n)
{
    if (n && n % (1024ull * 1024 * 1024) == 0)
        fprintf(out, "%llug", (unsigned long long)(n >> 30));
    else if (n && n % (1024 * 1024) == 0)
        fprintf(out, "%llum", (unsigned long long)(n >> 20));
    else if (n && n % 1024 == 0)
        fprintf(out, "%lluk", (unsigned long long)(n >> 10));
    else
        fprintf(out, "%llu", (unsigned long long)n);
}

/* Whether rule i of the list is the last one naming its field. Only the last rule for a name
 * decides what happens to that field (a set replaces every field of the name, a removal removes
 * them all), so printing sets and removals as two lists keeps the behaviour. */
static bool last_for_name(const struct fy_header_rules *r, uint32_t i)
{
    for (uint32_t j = i + 1; j < r->n; j++)
        if (r->items[j].name_len == r->items[i].name_len &&
            !strncasecmp(r->items[j].name, r->items[i].name, r->items[i].name_len))
            return false;
    return true;
}

static void print_rules(FILE *out, const struct fy_header_rules *r, bool remove)
{
    bool any = false;
    for (uint32_t i = 0; i < r->n; i++) {
        if ((r->items[i].value == NULL) != remove || !last_for_name(r, i))
            continue;
        fputs(any ? ", " : "[", out);
        print_scalar(out, r->items[i].source ? r->items[i].source : r->items[i].name);
        any = true;
    }
    fputs(any ? "]" : "[]", out);
}

void fy_config_print_yaml(const struct fy_config *c, void *out_stream)
{
    FILE *out = out_stream;
    fputs("# ferry configuration (ferry --print-config): every key with its value, defaults\n"
          "# included. Run it with ferry -c FILE; keys are documented in docs/config.md.\n",
          out);
    for (size_t k = 0; k < fy_options_count; k++) {
        const struct fy_option *o = &fy_options[k];
        const char *field = (const char *)c + o->offset;
        /* The one-listener shorthand (listen, upstream, tls-cert, tls-key) is refused with
         * listeners:. */
        if (c->nlisteners && (o->flags & FY_OPTF_QUICK))
            continue;
        fprintf(out, "%s: ", o->key);
        if (o->kind == FY_OPT_RULE) {
            print_rules(out, (const struct fy_header_rules *)field, o->flags & FY_OPTF_REMOVE);
            fputc('\n', out);
            continue;
        }
        if (c->opt_text[k]) {
            print_scalar(out, c->opt_text[k]);
            fputc('\n', out);
            continue;
        }
        static const char *const levels[] = {"debug", "info", "warn", "error"};
        switch (o->kind) {
        case FY_OPT_LISTEN:
            print_scalar(out, c->listen_text ? c->listen_text : "127.0.0.1:8080");
            break;
        case FY_OPT_UPSTREAM:
            print_scalar(out, c->upstream_text ? c->upstream_text : "");
            break;
        case FY_OPT_WORKERS:
            fprintf(out, "%d", c->workers);
            break;
        case FY_OPT_HOST:
            print_scalar(out, c->host_mode == FY_HOST_PRESERVE ? "preserve"
                              : c->host_mode == FY_HOST_VALUE  ? c->host_value
                                                               : "upstream");
            break;
        case FY_OPT_ONOFF:
            fputs(*(const bool *)field ? "on" : "off", out);
            break;
        case FY_OPT_UPGRADE:
            print_scalar(out, !c->upgrade_protocols    ? "websocket"
                              : !*c->upgrade_protocols ? "none"
                                                       : c->upgrade_protocols);
            break;
        case FY_OPT_ACCESS_LOG:
            print_scalar(out, c->access_log == FY_ALOG_OFF    ? "off"
                              : c->access_log == FY_ALOG_FILE ? c->access_log_path
                                                              : "stdout");
            break;
        case FY_OPT_LOG_FORMAT:
            fputs(c->access_log_format == FY_ALOG_JSON     ? "json"
                  : c->access_log_format == FY_ALOG_PRETTY ? "pretty"
                                                           : "combined",
                  out);
            break;
        case FY_OPT_LOG_LEVEL:
            fputs(levels[c->log_level], out);
            break;
        case FY_OPT_DURATION:
            print_duration(out, *(const uint64_t *)field);
            break;
        case FY_OPT_SIZE: {
            uint64_t n =
                o->flags & FY_OPTF_U64 ? *(const uint64_t *)field : *(const uint32_t *)field;
            if (o->flags & FY_OPTF_COUNT)
                fprintf(out, "%llu", (unsigned long long)n);
            else
                print_size(out, n);
            break;
        }
        case FY_OPT_PATH:
        case FY_OPT_FILE:
        case FY_OPT_LIST:
            print_scalar(out, *(char *const *)field ? *(char *const *)field : "");
            break;
        case FY_OPT_RESOLVERS:
            print_scalar(out, c->resolver.servers ? c->resolver.servers : "system");
            break;
        case FY_OPT_RULE:
            break;
        }
        fputc('\n', out);
    }
    /* Re-emitting the compiled routes would lose how they were written (${env:}, order of keys,
     * short forms): point at the file instead. */
    if (c->nlisteners)
        fprintf(out, "# listeners: and upstreams: are printed as written in %s\n",
                c->config_path ? c->config_path : "the configuration file");
}

/* ---- argv ---- */

static bool is_help(const char *a)
{
    return !strcmp(a, "--help") || !strcmp(a, "-h") || !strcmp(a, "--version") || !strcmp(a, "-V");
}

static bool is_config_opt(const char *a)
{
    return !strcmp(a, "-c") || !strcmp(a, "--config");
}

/* The option name of `arg` ("--x" of "--x=v") into buf, and its inline value or NULL. */
static const char *split_inline(const char *arg, char *buf, size_t buflen, const char **inline_val)
{
    *inline_val = NULL;
    const char *eq = strchr(arg, '=');
    if (!strncmp(arg, "--", 2) && eq && (size_t)(eq - arg) < buflen) {
        memcpy(buf, arg, (size_t)(eq - arg));
        buf[eq - arg] = 0;
        *inline_val = eq + 1;
        return buf;
    }
    return arg;
}

/* A flag that may stand alone (--forward): true when argv[i] has no value after it, so "on" is
 * meant and nothing is consumed. */
static bool bare_flag(const struct fy_option *o, int argc, char **argv, int i)
{
    if (!(o->flags & FY_OPTF_BARE))
        return false;
    return i + 1 >= argc || (strcmp(argv[i + 1], "on") && strcmp(argv[i + 1], "off"));
}

/* First pass: -c FILE, the first option of the one-listener shorthand (--listen, --upstream,
 * --tls-cert, --tls-key) on the command line, whether --upstream is one of them, and
 * --help/--version (which win over the file). Values of known options are skipped, as the second
 * pass will. */
static void prescan(int argc, char **argv, const char **config, const struct fy_option **quick,
                    bool *upstream, bool *help)
{
    *config = NULL;
    *quick = NULL;
    *upstream = *help = false;
    for (int i = 1; i < argc; i++) {
        char buf[64];
        const char *iv;
        const char *opt = split_inline(argv[i], buf, sizeof(buf), &iv);
        if (is_help(opt)) {
            *help = true;
            return;
        }
        if (is_config_opt(opt)) {
            if (iv)
                *config = iv;
            else if (i + 1 < argc)
                *config = argv[++i];
            continue;
        }
        const struct fy_option *o = strncmp(opt, "--", 2) ? NULL : fy_option_find(opt + 2);
        if (!o)
            continue;
        if (o->kind == FY_OPT_UPSTREAM)
            *upstream = true;
        if ((o->flags & FY_OPTF_QUICK) && !*quick)
            *quick = o;
        if (!iv && !bare_flag(o, argc, argv, i))
            i++;
    }
}

/* Applies the command line's FY_OPTF_EARLY options (the resolver settings) before the file is
 * loaded, since loading resolves the file's server names with them; the file's values of those
 * keys are then ignored, as for any option given on the command line. Arguments are walked as
 * fy_args_parse() walks them; anything it would refuse is left for it to report. */
static int apply_early(struct fy_config *c, int argc, char **argv, char *err, size_t errlen)
{
    uint64_t given = 0;
    for (int i = 1; i < argc; i++) {
        char buf[64];
        const char *iv;
        const char *opt = split_inline(argv[i], buf, sizeof(buf), &iv);
        if (is_config_opt(opt)) {
            i += !iv;
            continue;
        }
        const struct fy_option *o = strncmp(opt, "--", 2) ? NULL : fy_option_find(opt + 2);
        if (!o)
            continue;
        const char *v = iv;
        if (!v && bare_flag(o, argc, argv, i))
            v = "on";
        if (!v) {
            if (i + 1 >= argc)
                break;
            v = argv[++i];
        }
        if (!(o->flags & FY_OPTF_EARLY))
            continue;
        if (fy_option_apply(c, o, opt, v, NULL, err, errlen) < 0)
            return -1;
        given |= 1ull << (o - fy_options);
    }
    c->early_given |= given;
    return 0;
}

static int finish(struct fy_config *c, char *err, size_t errlen)
{
    /* With listeners: the file says where to listen and where to forward. */
    if (!c->upstream_text && !c->nlisteners && !c->forward)
        return fy_errf(err, errlen,
                       "--upstream http://HOST:PORT is required, or --forward for a forward "
                       "proxy (see ferry --help)");
    if (c->forward && c->upstream_text && !c->nlisteners)
        return fy_errf(err, errlen,
                       "--forward sends each request to its own destination: it takes no "
                       "--upstream");
    if (!c->forward && !c->nlisteners) {
        const struct {
            const char *key;
            bool given;
        } fwd_only[] = {{"connect-ports", c->connect_ports},
                        {"allow-clients", c->allow_clients},
                        {"htpasswd", c->htpasswd},
                        {"intercept", c->intercept},
                        {"ca-cert", c->ca_cert},
                        {"ca-key", c->ca_key},
                        {"pass-through", c->pass_through}};
        for (size_t k = 0; k < sizeof(fwd_only) / sizeof(fwd_only[0]); k++)
            if (fwd_only[k].given)
                return fy_errf(err, errlen, "--%s is a forward proxy setting: add --forward",
                               fwd_only[k].key);
    }
    if (!c->listen_text && !c->nlisteners) {
        char why[200];
        c->listen_text = strdup("127.0.0.1:8080");
        fy_addr_parse(c->listen_text, &c->listen, why, sizeof(why));
    }
    if (c->max_request_line > c->max_header_size)
        c->max_request_line = c->max_header_size;
    return 0;
}

enum fy_args_result fy_args_parse(struct fy_config *c, int argc, char **argv, char *err,
                                  size_t errlen, void *out_stream)
{
    FILE *out = out_stream;
    const char *config;
    const struct fy_option *quick;
    bool upstream_given, help;
    prescan(argc, argv, &config, &quick, &upstream_given, &help);
    if (!help && fy_conf_tls_init(err, errlen) < 0)
        return FY_ARGS_ERROR;
    if (!help && apply_early(c, argc, argv, err, errlen) < 0)
        return FY_ARGS_ERROR;
    if (config && !help) {
        free(c->config_path);
        c->config_path = strdup(config);
        if (fy_yaml_load(c, config, upstream_given, &c->file_errors, &c->file_error_count) > 0)
            return FY_ARGS_FILE_ERROR;
        if (c->nlisteners && quick && quick->kind == FY_OPT_FILE) {
            fy_errf(err, errlen,
                    "--%s: tls-cert/tls-key are the one-listener shorthand; with listeners: put "
                    "the certificate in the tls: block of a listener of %s",
                    quick->key, config);
            return FY_ARGS_ERROR;
        }
        if (c->nlisteners && quick) {
            fy_errf(err, errlen,
                    "--%s: listen/upstream are the one-listener shorthand; with listeners: put the "
                    "address in a listener of %s",
                    quick->key, config);
            return FY_ARGS_ERROR;
        }
    }
    for (int i = 1; i < argc; i++) {
        char optbuf[64];
        const char *inline_val;
        const char *opt = split_inline(argv[i], optbuf, sizeof(optbuf), &inline_val);
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            fputs(usage_text, out);
            return FY_ARGS_EXIT_OK;
        }
        if (!strcmp(opt, "--version") || !strcmp(opt, "-V")) {
            fprintf(out, "ferry %s\n", FERRY_VERSION);
            return FY_ARGS_EXIT_OK;
        }
        if (!strcmp(opt, "-t") || !strcmp(opt, "--test")) {
            c->check_only = true;
            continue;
        }
        if (!strcmp(opt, "--print-config")) {
            c->print_config = true;
            continue;
        }
        if (!strcmp(opt, "-v") || !strcmp(opt, "-vv")) {
            /* The pretty log's detail: -v heads, -vv bodies too. */
            c->verbose += opt[2] ? 2 : 1;
            if (c->verbose > 2)
                c->verbose = 2;
            continue;
        }
        if (is_config_opt(opt)) {
            if (!inline_val && i + 1 >= argc) {
                fy_errf(err, errlen, "%s needs a file path (see ferry --help)", opt);
                return FY_ARGS_ERROR;
            }
            if (!inline_val)
                i++;
            continue;
        }
        if (strncmp(opt, "--", 2) != 0) {
            fy_errf(err, errlen, "unexpected argument '%s' (see ferry --help)", opt);
            return FY_ARGS_ERROR;
        }
        const struct fy_option *o = fy_option_find(opt + 2);
        if (!o) {
            fy_errf(err, errlen, "unknown option '%s' (see ferry --help)", opt);
            return FY_ARGS_ERROR;
        }
        const char *v = inline_val;
        if (!v && bare_flag(o, argc, argv, i))
            v = "on";
        if (!v) {
            if (i + 1 >= argc) {
                fy_errf(err, errlen, "%s needs a value (see ferry --help)", opt);
                return FY_ARGS_ERROR;
            }
            v = argv[++i];
        }
        if (fy_option_apply(c, o, opt, v, NULL, err, errlen) < 0)
            return FY_ARGS_ERROR;
    }
    if (finish(c, err, errlen) < 0)
        return FY_ARGS_ERROR;
    /* Quick mode's certificates: now that the file and the command line are both applied. */
    if (!c->nlisteners && !c->print_config) {
        enum fy_args_result r = fy_conf_quick_tls(c, err, errlen);
        if (r == FY_ARGS_OK && c->forward)
            r = fy_conf_quick_forward(c, err, errlen);
        if (r != FY_ARGS_OK)
            return r;
        /* --lua: the script's syntax and top level, FILE:LINE in the message (ferry -t). */
        if (c->lua && fy_lua_check(c->lua, err, errlen) < 0)
            return FY_ARGS_ERROR;
    }
    if (c->print_config) {
        fy_config_print_yaml(c, out);
        return FY_ARGS_EXIT_OK;
    }
    return FY_ARGS_OK;
}
