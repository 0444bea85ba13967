/*
 * Quick-mode command line: `ferry --listen A --upstream URL [options]`. There is no configuration
 * file yet; when it comes, each option name without its dashes will be its key, so a command line
 * moves to a file unchanged.
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

#include "http/h1_reader.h"
#include "http/tokens.h"

static const char usage_text[] =
    "usage: ferry --upstream http://HOST:PORT [options]\n"
    "\n"
    "An HTTP/1.1 reverse proxy, configured by these options. There is no configuration file\n"
    "yet; when it comes, each option will be a key of the same name (idle-timeout: 60s).\n"
    "\n"
    "  --listen ADDR:PORT            where to accept clients (default 127.0.0.1:8080);\n"
    "                                :PORT = every interface, [IPv6]:PORT in brackets\n"
    "  --upstream http://HOST:PORT   the server to forward to (required)\n"
    "  --workers N                   worker threads (default: one per CPU)\n"
    "  --request-header 'Name: v'    set a field on requests sent upstream (repeatable)\n"
    "  --response-header 'Name: v'   set a field on responses sent to clients (repeatable)\n"
    "  --remove-request-header NAME  remove a request field (repeatable)\n"
    "  --remove-response-header NAME remove a response field (repeatable)\n"
    "                                values may use ${env:NAME} to keep secrets out of argv\n"
    "  --host upstream|preserve|VAL  Host sent upstream (default: upstream's host:port);\n"
    "                                rules cannot set or remove Host: use this\n"
    "  --x-forwarded-for on|off      append the client address (default on)\n"
    "  --x-forwarded-proto on|off    set X-Forwarded-Proto (default on)\n"
    "  --x-forwarded-host on|off     set X-Forwarded-Host to the client's Host (default on)\n"
    "  --via on|off                  add Via: 1.1 ferry (default on)\n"
    "  --upgrade-protocols LIST      Upgrade protocols tunnelled after a 101, comma-separated\n"
    "                                (default websocket; others are forwarded without Upgrade)\n"
    "  --access-log stdout|off|PATH  one line per exchange (default stdout)\n"
    "  --access-log-format combined|json\n"
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
    "  --help, --version\n";

void fy_config_defaults(struct fy_config *c)
{
    memset(c, 0, sizeof(*c));
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    c->workers = cpus > 0 ? (int)cpus : 1;
    c->host_mode = FY_HOST_UPSTREAM;
    c->x_forwarded_for = c->x_forwarded_proto = c->x_forwarded_host = c->via = true;
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
}

static void free_rules(struct fy_header_rules *r)
{
    for (uint32_t i = 0; i < r->n; i++) {
        free(r->items[i].name);
        free(r->items[i].value);
    }
    free(r->items);
    r->items = NULL;
    r->n = 0;
}

void fy_config_free(struct fy_config *c)
{
    free(c->listen_text);
    free(c->upstream_text);
    free(c->upstream_authority);
    free(c->host_value);
    free(c->upgrade_protocols);
    free(c->access_log_path);
    free_rules(&c->request_rules);
    free_rules(&c->response_rules);
}

int fy_parse_duration(const char *s, uint64_t *ms)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*s) && *s != '.')
        return -1; /* also keeps out "nan", "inf", signs and spaces */
    double v = strtod(s, &end);
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

char *fy_expand_env(const char *s, char **missing)
{
    *missing = NULL;
    size_t cap = strlen(s) + 1, len = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    while (*s) {
        const char *add = s;
        size_t n = 1;
        if (!strncmp(s, "${env:", 6)) {
            const char *close = strchr(s + 6, '}');
            if (!close || close == s + 6) {
                free(out);
                return NULL;
            }
            char name[256];
            size_t nl = (size_t)(close - s - 6);
            if (nl >= sizeof(name)) {
                free(out);
                return NULL;
            }
            memcpy(name, s + 6, nl);
            name[nl] = 0;
            add = getenv(name);
            if (!add) {
                *missing = strdup(name);
                free(out);
                return NULL;
            }
            n = strlen(add);
            s = close + 1;
        } else {
            s++;
        }
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            char *grown = realloc(out, cap);
            if (!grown) {
                free(out);
                return NULL;
            }
            out = grown;
        }
        memcpy(out + len, add, n);
        len += n;
    }
    out[len] = 0;
    return out;
}

static int errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
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
                    bool remove, char *err, size_t errlen)
{
    const char *name = arg, *value = NULL;
    size_t nlen = strlen(arg);
    if (!remove) {
        const char *colon = strchr(arg, ':');
        if (!colon)
            return errf(err, errlen, "%s expects 'Name: value', got '%s'", opt, arg);
        nlen = (size_t)(colon - arg);
        value = colon + 1;
        while (*value == ' ' || *value == '\t')
            value++;
    }
    if (!valid_name(name, nlen))
        return errf(err, errlen, "%s: '%.*s' is not a valid header field name", opt, (int)nlen,
                    name);
    /* Framing and hop-by-hop fields are ferry's to write: a rule could desynchronise framing. */
    enum fy_token tok = fy_token_lookup(name, nlen);
    if (tok == FY_TOK_CONTENT_LENGTH || (fy_token_flags(tok) & FY_TOKF_HOP))
        return errf(err, errlen,
                    "%s: %.*s is managed by ferry (message framing and connection "
                    "fields cannot be set or removed)",
                    opt, (int)nlen, name);
    /* An HTTP/1.1 request must carry exactly one Host (RFC 9112 3.2): --host owns it. */
    if (request && tok == FY_TOK_HOST)
        return errf(err, errlen,
                    "%s: Host is managed by --host (every HTTP/1.1 request needs one): use "
                    "--host VALUE to send another, --host preserve to keep the client's",
                    opt);
    char *expanded = NULL;
    if (value) {
        char *missing;
        expanded = fy_expand_env(value, &missing);
        if (!expanded) {
            if (missing) {
                errf(err, errlen, "%s: environment variable %s is not set", opt, missing);
                free(missing);
                return -1;
            }
            return errf(err, errlen, "%s: malformed ${env:NAME} in '%s'", opt, arg);
        }
        size_t vl = strlen(expanded);
        while (vl && (expanded[vl - 1] == ' ' || expanded[vl - 1] == '\t'))
            expanded[--vl] = 0;
        for (size_t i = 0; i < vl; i++) {
            unsigned char c = (unsigned char)expanded[i];
            if ((c < 0x20 && c != '\t') || c == 0x7f) {
                free(expanded);
                return errf(err, errlen, "%s: value of %.*s contains a control character", opt,
                            (int)nlen, name);
            }
        }
    }
    struct fy_header_rule *items = realloc(rules->items, (rules->n + 1) * sizeof(*items));
    if (!items) {
        free(expanded);
        return errf(err, errlen, "out of memory");
    }
    rules->items = items;
    struct fy_header_rule *r = &items[rules->n++];
    r->name = strndup(name, nlen);
    r->name_len = (uint32_t)nlen;
    r->value = expanded;
    r->value_len = expanded ? (uint32_t)strlen(expanded) : 0;
    return 0;
}

static int parse_upstream(struct fy_config *c, const char *arg, char *err, size_t errlen)
{
    const char *rest = arg;
    if (!strncmp(rest, "http://", 7))
        rest += 7;
    else if (strstr(rest, "://"))
        return errf(err, errlen, "--upstream: only http:// upstreams are supported, got '%s'", arg);
    size_t n = strcspn(rest, "/");
    if (rest[n] && strcmp(rest + n, "/") != 0)
        return errf(err, errlen, "--upstream: a path is not supported yet, got '%s'", arg);
    char auth[300];
    if (n >= sizeof(auth))
        return errf(err, errlen, "--upstream: host too long in '%s'", arg);
    memcpy(auth, rest, n);
    auth[n] = 0;
    /* The authority is also the default Host: it must name a server, with a usable port. */
    if (n == 0 || (auth[0] == ':' && !strchr(auth + 1, ':')) || !strncmp(auth, "[]", 2))
        return errf(err, errlen, "--upstream '%s': missing host (write http://HOST:PORT)", arg);
    /* An unbracketed IPv6 address would be sent as "Host: ::1:9100". The last group may be
     * meant as the port: suggest that reading when it makes an address. */
    const char *last = strrchr(auth, ':');
    if (auth[0] != '[' && last && strchr(auth, ':') != last) {
        char prefix[300];
        struct in6_addr a6;
        snprintf(prefix, sizeof(prefix), "%.*s", (int)(last - auth), auth);
        if (inet_pton(AF_INET6, prefix, &a6) == 1 && last[1] &&
            strspn(last + 1, "0123456789") == strlen(last + 1))
            return errf(err, errlen,
                        "--upstream '%s': an IPv6 address goes in brackets: write http://[%s]:%s",
                        arg, prefix, last + 1);
        return errf(err, errlen,
                    "--upstream '%s': an IPv6 address goes in brackets: write http://[%s]:PORT",
                    arg, auth);
    }
    char hostport[310];
    const char *last_colon = strrchr(auth, ':');
    const char *bracket = strrchr(auth, ']');
    if (!last_colon || (bracket && last_colon < bracket))
        snprintf(hostport, sizeof(hostport), "%s:80", auth); /* no port: http's default */
    else
        snprintf(hostport, sizeof(hostport), "%s", auth);
    char why[200];
    if (fy_addr_parse(hostport, &c->upstream, why, sizeof(why)) < 0)
        return errf(err, errlen, "--upstream '%s': %s", arg, why);
    if (fy_addr_port((const struct sockaddr *)&c->upstream.ss) == 0)
        return errf(err, errlen, "--upstream '%s': port 0 cannot be connected to", arg);
    free(c->upstream_text);
    free(c->upstream_authority);
    c->upstream_text = strdup(arg);
    c->upstream_authority = strdup(auth);
    return 0;
}

/* A comma-separated list of protocol names (token characters); "none" allows no upgrade. */
static int parse_upgrade_protocols(struct fy_config *c, const char *v, char *err, size_t errlen)
{
    const char *p = v;
    bool any = false;
    while (*p) {
        while (*p == ',' || *p == ' ')
            p++;
        const char *start = p;
        while (*p && *p != ',' && *p != ' ') {
            if (!fy_is_tchar((unsigned char)*p))
                return errf(err, errlen,
                            "--upgrade-protocols expects protocol names separated by commas "
                            "(e.g. websocket), got '%s'",
                            v);
            p++;
        }
        any |= p > start;
    }
    if (!any)
        return errf(err, errlen, "--upgrade-protocols needs at least one name (or none)");
    free(c->upgrade_protocols);
    /* The empty list (from "none") matches nothing; NULL would mean the default. */
    c->upgrade_protocols = strdup(strcmp(v, "none") ? v : "");
    return c->upgrade_protocols ? 0 : errf(err, errlen, "out of memory");
}

static int parse_onoff(const char *opt, const char *v, bool *out, char *err, size_t errlen)
{
    if (!strcmp(v, "on"))
        *out = true;
    else if (!strcmp(v, "off"))
        *out = false;
    else
        return errf(err, errlen, "%s expects on or off, got '%s'", opt, v);
    return 0;
}

struct duration_opt {
    const char *name;
    size_t offset;
};

static const struct duration_opt duration_opts[] = {
    {"--header-timeout", offsetof(struct fy_config, header_timeout)},
    {"--idle-timeout", offsetof(struct fy_config, idle_timeout)},
    {"--body-timeout", offsetof(struct fy_config, body_timeout)},
    {"--send-timeout", offsetof(struct fy_config, send_timeout)},
    {"--connect-timeout", offsetof(struct fy_config, connect_timeout)},
    {"--upstream-timeout", offsetof(struct fy_config, upstream_timeout)},
    {"--drain-timeout", offsetof(struct fy_config, drain_timeout)},
    {"--pool-idle-timeout", offsetof(struct fy_config, pool_idle_timeout)},
};

struct size_opt {
    const char *name;
    size_t offset;
    bool is_u64;
    uint64_t min, max;
};

static const struct size_opt size_opts[] = {
    {"--max-request-line", offsetof(struct fy_config, max_request_line), false, 64, 1 << 20},
    {"--max-header-size", offsetof(struct fy_config, max_header_size), false, 256, 1 << 20},
    {"--max-headers", offsetof(struct fy_config, max_headers), false, 1, 10000},
    {"--max-connections", offsetof(struct fy_config, max_connections), false, 1, 1 << 24},
    {"--pool-max-idle", offsetof(struct fy_config, pool_max_idle), false, 0, 1 << 20},
    {"--max-body-size", offsetof(struct fy_config, max_body_size), true, 0, UINT64_MAX},
};

static bool is_known_option(const char *opt)
{
    static const char *const plain[] = {"--listen",
                                        "--upstream",
                                        "--workers",
                                        "--request-header",
                                        "--response-header",
                                        "--remove-request-header",
                                        "--remove-response-header",
                                        "--host",
                                        "--x-forwarded-for",
                                        "--x-forwarded-proto",
                                        "--x-forwarded-host",
                                        "--via",
                                        "--upgrade-protocols",
                                        "--access-log",
                                        "--access-log-format",
                                        "--log-level"};
    for (size_t k = 0; k < sizeof(plain) / sizeof(plain[0]); k++)
        if (!strcmp(opt, plain[k]))
            return true;
    for (size_t k = 0; k < sizeof(duration_opts) / sizeof(duration_opts[0]); k++)
        if (!strcmp(opt, duration_opts[k].name))
            return true;
    for (size_t k = 0; k < sizeof(size_opts) / sizeof(size_opts[0]); k++)
        if (!strcmp(opt, size_opts[k].name))
            return true;
    return false;
}

enum fy_args_result fy_args_parse(struct fy_config *c, int argc, char **argv, char *err,
                                  size_t errlen, void *out_stream)
{
    FILE *out = out_stream;
    bool have_upstream = false;
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        char *inline_val = NULL;
        char optbuf[64];
        const char *eq = strchr(opt, '=');
        if (!strncmp(opt, "--", 2) && eq && (size_t)(eq - opt) < sizeof(optbuf)) {
            memcpy(optbuf, opt, (size_t)(eq - opt));
            optbuf[eq - opt] = 0;
            inline_val = (char *)eq + 1;
            opt = optbuf;
        }
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            fputs(usage_text, out);
            return FY_ARGS_EXIT_OK;
        }
        if (!strcmp(opt, "--version") || !strcmp(opt, "-V")) {
            fprintf(out, "ferry %s\n", FERRY_VERSION);
            return FY_ARGS_EXIT_OK;
        }
        if (strncmp(opt, "--", 2) != 0) {
            errf(err, errlen, "unexpected argument '%s' (see ferry --help)", opt);
            return FY_ARGS_ERROR;
        }
        if (!is_known_option(opt)) {
            errf(err, errlen, "unknown option '%s' (see ferry --help)", opt);
            return FY_ARGS_ERROR;
        }
        const char *v = inline_val;
        if (!v) {
            if (i + 1 >= argc) {
                errf(err, errlen, "%s needs a value (see ferry --help)", opt);
                return FY_ARGS_ERROR;
            }
            v = argv[++i];
        }
        int rc = 0;
        bool known = true;
        if (!strcmp(opt, "--listen")) {
            char why[200];
            if (fy_addr_parse(v, &c->listen, why, sizeof(why)) < 0)
                rc = errf(err, errlen, "--listen '%s': %s", v, why);
            free(c->listen_text);
            c->listen_text = strdup(v);
        } else if (!strcmp(opt, "--upstream")) {
            rc = parse_upstream(c, v, err, errlen);
            have_upstream = rc == 0;
        } else if (!strcmp(opt, "--workers")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > 256)
                rc = errf(err, errlen, "--workers expects a number from 1 to 256, got '%s'", v);
            else
                c->workers = (int)n;
        } else if (!strcmp(opt, "--request-header")) {
            rc = add_rule(&c->request_rules, opt, v, true, false, err, errlen);
        } else if (!strcmp(opt, "--response-header")) {
            rc = add_rule(&c->response_rules, opt, v, false, false, err, errlen);
        } else if (!strcmp(opt, "--remove-request-header")) {
            rc = add_rule(&c->request_rules, opt, v, true, true, err, errlen);
        } else if (!strcmp(opt, "--remove-response-header")) {
            rc = add_rule(&c->response_rules, opt, v, false, true, err, errlen);
        } else if (!strcmp(opt, "--host")) {
            free(c->host_value);
            c->host_value = NULL;
            if (!strcmp(v, "upstream")) {
                c->host_mode = FY_HOST_UPSTREAM;
            } else if (!strcmp(v, "preserve")) {
                c->host_mode = FY_HOST_PRESERVE;
            } else if (!*v) {
                rc = errf(err, errlen, "--host expects upstream, preserve or a host name, got ''");
            } else {
                char *missing;
                c->host_value = fy_expand_env(v, &missing);
                c->host_mode = FY_HOST_VALUE;
                if (!c->host_value) {
                    rc = errf(err, errlen, "--host: environment variable %s is not set",
                              missing ? missing : "(malformed)");
                    free(missing);
                } else if (!c->host_value[0]) {
                    rc = errf(err, errlen, "--host '%s' expands to an empty value", v);
                } else {
                    for (const char *p = c->host_value; *p; p++)
                        if ((unsigned char)*p <= ' ' || *p == 0x7f)
                            rc = errf(err, errlen, "--host: '%s' is not a valid host", v);
                }
            }
        } else if (!strcmp(opt, "--x-forwarded-for")) {
            rc = parse_onoff(opt, v, &c->x_forwarded_for, err, errlen);
        } else if (!strcmp(opt, "--x-forwarded-proto")) {
            rc = parse_onoff(opt, v, &c->x_forwarded_proto, err, errlen);
        } else if (!strcmp(opt, "--x-forwarded-host")) {
            rc = parse_onoff(opt, v, &c->x_forwarded_host, err, errlen);
        } else if (!strcmp(opt, "--via")) {
            rc = parse_onoff(opt, v, &c->via, err, errlen);
        } else if (!strcmp(opt, "--upgrade-protocols")) {
            rc = parse_upgrade_protocols(c, v, err, errlen);
        } else if (!strcmp(opt, "--access-log")) {
            free(c->access_log_path);
            c->access_log_path = NULL;
            if (!strcmp(v, "stdout")) {
                c->access_log = FY_ALOG_STDOUT;
            } else if (!strcmp(v, "off")) {
                c->access_log = FY_ALOG_OFF;
            } else if (!*v) {
                rc = errf(err, errlen, "--access-log expects stdout, off or a file path");
            } else {
                c->access_log = FY_ALOG_FILE;
                c->access_log_path = strdup(v);
            }
        } else if (!strcmp(opt, "--access-log-format")) {
            if (!strcmp(v, "combined"))
                c->access_log_format = FY_ALOG_COMBINED;
            else if (!strcmp(v, "json"))
                c->access_log_format = FY_ALOG_JSON;
            else
                rc = errf(err, errlen, "--access-log-format expects combined or json, got '%s'", v);
        } else if (!strcmp(opt, "--log-level")) {
            if (fy_log_parse_level(v, &c->log_level) < 0)
                rc = errf(err, errlen, "--log-level expects debug, info, warn or error, got '%s'",
                          v);
        } else {
            known = false;
            for (size_t k = 0; k < sizeof(duration_opts) / sizeof(duration_opts[0]); k++) {
                if (strcmp(opt, duration_opts[k].name))
                    continue;
                known = true;
                uint64_t ms;
                if (fy_parse_duration(v, &ms) < 0)
                    rc = errf(err, errlen, "%s expects a duration like 500ms, 10s or 2m, got '%s'",
                              opt, v);
                else
                    *(uint64_t *)((char *)c + duration_opts[k].offset) = ms;
            }
            for (size_t k = 0; k < sizeof(size_opts) / sizeof(size_opts[0]); k++) {
                const struct size_opt *so = &size_opts[k];
                if (strcmp(opt, so->name))
                    continue;
                known = true;
                uint64_t n;
                if (fy_parse_size(v, &n) < 0 || n < so->min || n > so->max)
                    rc = errf(err, errlen,
                              "%s expects a size from %llu to %llu (e.g. 16k), got '%s'", opt,
                              (unsigned long long)so->min, (unsigned long long)so->max, v);
                else if (so->is_u64)
                    *(uint64_t *)((char *)c + so->offset) = n;
                else
                    *(uint32_t *)((char *)c + so->offset) = (uint32_t)n;
            }
        }
        if (!known) {
            errf(err, errlen, "unknown option '%s' (see ferry --help)", opt);
            return FY_ARGS_ERROR;
        }
        if (rc < 0)
            return FY_ARGS_ERROR;
    }
    if (!have_upstream) {
        errf(err, errlen, "--upstream http://HOST:PORT is required (see ferry --help)");
        return FY_ARGS_ERROR;
    }
    if (!c->listen_text) {
        char why[200];
        c->listen_text = strdup("127.0.0.1:8080");
        fy_addr_parse(c->listen_text, &c->listen, why, sizeof(why));
    }
    if (c->max_request_line > c->max_header_size)
        c->max_request_line = c->max_header_size;
    return FY_ARGS_OK;
}
