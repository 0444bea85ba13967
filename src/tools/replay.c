/*
 * `ferry replay FILE [--to URL] [--filter EXPR] [--upstream-ca FILE] [--insecure-skip-verify]
 * [--timeout 10s]`: sends the captured requests of a capture file (docs/capture.md) again, in
 * file order, one connection each (Connection: close), and prints one aligned line per request:
 * the captured and the new status and whether the response body changed.
 *
 * A request goes to its own URL, or with scheme and authority replaced by --to's (Host then
 * names --to's authority). Its headers are the captured ones minus hop-by-hop fields and
 * Expect, with Content-Length set from the body; a request whose body was not captured whole is
 * skipped with a note. Responses are read with the proxy's own HTTP/1 reader. This is a
 * command-line tool, not a worker: blocking sockets with timeouts, OpenSSL used directly.
 *
 * Exit status: 0 when every selected request was sent and answered, 1 on a usage or file
 * error, 2 when any request could not be sent or its answer not read.
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pcre2.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "http/h1_reader.h"
#include "http/tokens.h"
#include "tools/capfile.h"
#include "tools/tools.h"

#define URL_COLUMN_MAX 60
#define READ_CHUNK 65536
#define SEND_HEAD_MAX (1 << 20)

struct opts {
    const char *file, *to, *filter, *ca;
    bool insecure;
    int timeout_ms;
    pcre2_code *re;
    pcre2_match_data *md;
    SSL_CTX *tls;
};

struct url {
    bool https;
    char host[256];      /* without brackets */
    char authority[300]; /* as written: "host:port", "[::1]:8443" */
    uint16_t port;
    const char *path; /* "/p?q" (points into the parsed string); "?q" or "" when path_empty */
    size_t path_len;
    bool path_empty; /* no path: the request sends "/" before it ("*" for a bare OPTIONS) */
};

/* scheme://authority[/path][?query][#fragment]; only http and https. -1 with err on others. */
static int parse_url(const char *s, struct url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof(*u));
    const char *rest;
    if (!strncasecmp(s, "http://", 7)) {
        rest = s + 7;
    } else if (!strncasecmp(s, "https://", 8)) {
        u->https = true;
        rest = s + 8;
    } else {
        snprintf(err, errlen, "not an http:// or https:// URL: %.200s", s);
        return -1;
    }
    size_t alen = strcspn(rest, "/?#");
    if (!alen || alen >= sizeof(u->authority)) {
        snprintf(err, errlen, "no host in the URL %.200s", s);
        return -1;
    }
    memcpy(u->authority, rest, alen);
    u->authority[alen] = '\0';
    const char *port = NULL;
    if (u->authority[0] == '[') {
        const char *close = strchr(u->authority, ']');
        if (!close || (close[1] && close[1] != ':')) {
            snprintf(err, errlen, "bad IPv6 address in the URL %.200s", s);
            return -1;
        }
        snprintf(u->host, sizeof(u->host), "%.*s", (int)(close - u->authority - 1),
                 u->authority + 1);
        port = close[1] == ':' ? close + 2 : NULL;
    } else {
        const char *colon = strrchr(u->authority, ':');
        snprintf(u->host, sizeof(u->host), "%.*s",
                 (int)(colon ? (size_t)(colon - u->authority) : alen), u->authority);
        port = colon ? colon + 1 : NULL;
    }
    u->port = u->https ? 443 : 80;
    if (port) {
        char *end;
        long p = strtol(port, &end, 10);
        if (!*port || *end || p < 1 || p > 65535) {
            snprintf(err, errlen, "bad port in the URL %.200s", s);
            return -1;
        }
        u->port = (uint16_t)p;
    }
    const char *path = rest + alen;
    size_t plen = strcspn(path, "#");
    /* "http://h" and "http://h?q" have an empty path: the request sends "/" (or "*" for
     * OPTIONS without a query: RFC 9112 3.2.4, and how ferry captures OPTIONS *) */
    u->path_empty = !plen || path[0] != '/';
    u->path = path[0] == '?' ? path : u->path_empty ? "" : path;
    u->path_len = path[0] == '?' || !u->path_empty ? plen : 0;
    return 0;
}

/* ---- one connection ---- */

struct conn {
    int fd;
    SSL *ssl;
};

static int connect_to(const struct url *u, int timeout_ms, struct conn *c, char *err, size_t errlen)
{
    c->fd = -1;
    c->ssl = NULL;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%u", u->port);
    int rc = getaddrinfo(u->host, port, &hints, &res);
    if (rc) {
        snprintf(err, errlen, "cannot resolve %s: %s", u->host, gai_strerror(rc));
        return -1;
    }
    int last = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            last = errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) < 0 && errno != EINPROGRESS) {
            last = errno;
            close(fd);
            continue;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int n = poll(&p, 1, timeout_ms);
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (n <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
            last = n == 0 ? ETIMEDOUT : soerr ? soerr : errno;
            close(fd);
            continue;
        }
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        c->fd = fd;
        break;
    }
    freeaddrinfo(res);
    if (c->fd < 0) {
        snprintf(err, errlen, "cannot connect to %s: %s", u->authority,
                 last == ETIMEDOUT ? "no answer in time" : strerror(last));
        return -1;
    }
    return 0;
}

static int tls_start(struct conn *c, SSL_CTX *ctx, const struct url *u, char *err, size_t errlen)
{
    c->ssl = SSL_new(ctx);
    if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) {
        snprintf(err, errlen, "TLS to %s: out of memory", u->authority);
        return -1;
    }
    unsigned char ip[16];
    bool literal = inet_pton(AF_INET, u->host, ip) == 1 || inet_pton(AF_INET6, u->host, ip) == 1;
    X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
    if (literal) {
        X509_VERIFY_PARAM_set1_ip_asc(vp, u->host);
    } else {
        SSL_set_tlsext_host_name(c->ssl, u->host);
        X509_VERIFY_PARAM_set1_host(vp, u->host, 0);
    }
    ERR_clear_error();
    if (SSL_connect(c->ssl) != 1) {
        long v = SSL_get_verify_result(c->ssl);
        unsigned long e = ERR_peek_last_error();
        if (v != X509_V_OK)
            snprintf(err, errlen, "TLS to %s: certificate verify failed: %s", u->authority,
                     X509_verify_cert_error_string(v));
        else if (e)
            snprintf(err, errlen, "TLS to %s: %s", u->authority, ERR_reason_error_string(e));
        else
            snprintf(err, errlen, "TLS to %s: the handshake failed (%s)", u->authority,
                     errno == EAGAIN ? "no answer in time" : "connection closed");
        return -1;
    }
    return 0;
}

static void conn_close(struct conn *c)
{
    if (c->ssl)
        SSL_free(c->ssl);
    if (c->fd >= 0)
        close(c->fd);
}

static int send_all(struct conn *c, const char *p, size_t n)
{
    while (n) {
        ssize_t w;
        if (c->ssl) {
            int r = SSL_write(c->ssl, p, n > (1u << 30) ? 1 << 30 : (int)n);
            w = r > 0 ? r : -1;
        } else {
            w = send(c->fd, p, n, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
        }
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* > 0 bytes, 0 end of stream, -1 error (errno EAGAIN: timeout). */
static ssize_t recv_some(struct conn *c, char *p, size_t n)
{
    if (c->ssl) {
        int r = SSL_read(c->ssl, p, (int)n);
        if (r > 0)
            return r;
        int e = SSL_get_error(c->ssl, r);
        /* An upstream that closes without close_notify still ended its close-delimited
         * body; treat it as the end of the stream, as browsers do. */
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0) ||
            (e == SSL_ERROR_SSL &&
             ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING))
            return 0;
        return -1;
    }
    for (;;) {
        ssize_t r = recv(c->fd, p, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        return r;
    }
}

/* ---- one request ---- */

struct outcome {
    int status;         /* 0 = none */
    uint64_t body_size; /* every byte of the new body */
    char *body;         /* its first `keep` bytes */
    size_t body_len;
    char err[300];
};

static bool hop_by_hop(const char *name)
{
    static const char *const names[] = {
        "connection", "keep-alive", "te",     "transfer-encoding", "upgrade", "content-length",
        "expect",     "host",       "trailer"};
    if (!strncasecmp(name, "proxy-", 6))
        return true;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (!strcasecmp(name, names[i]))
            return true;
    return false;
}

static int append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n > SEND_HEAD_MAX)
        return -1;
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 1024;
        while (c < *len + n)
            c *= 2;
        char *p = realloc(*buf, c);
        if (!p)
            return -1;
        *buf = p;
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    return 0;
}

static bool is_token(const char *p, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!fy_is_tchar((unsigned char)p[i]))
            return false;
    return true;
}

/* field-value bytes (RFC 9110 5.5): no CTL but HTAB, no DEL. */
static bool is_field_value(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!fy_is_field_byte((unsigned char)p[i]))
            return false;
    return true;
}

/* What a request target may hold: visible ASCII, no spaces (RFC 9112 3.2). */
static bool is_target(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c <= 0x20 || c >= 0x7f)
            return false;
    }
    return n > 0;
}

/* Sends the request and reads the answer into o (the body: at most `keep` bytes kept). */
static int exchange(const struct opts *op, const char *method, const struct url *u,
                    const char *host, const struct fy_json *headers, const char *body,
                    size_t body_len, size_t keep, struct outcome *o)
{
    char *head = NULL;
    size_t hl = 0, hc = 0;
    int bad = 0;
    bad |= append(&head, &hl, &hc, method, strlen(method));
    bad |= append(&head, &hl, &hc, " ", 1);
    if (u->path_empty)
        bad |= append(&head, &hl, &hc, !u->path_len && !strcmp(method, "OPTIONS") ? "*" : "/", 1);
    bad |= append(&head, &hl, &hc, u->path, u->path_len);
    bad |= append(&head, &hl, &hc, " HTTP/1.1\r\nHost: ", 17);
    bad |= append(&head, &hl, &hc, host, strlen(host));
    bad |= append(&head, &hl, &hc, "\r\n", 2);
    if (headers && headers->type == FY_JSON_ARRAY)
        for (const struct fy_json *h = headers->child; h; h = h->next) {
            if (h->type != FY_JSON_ARRAY || h->n != 2 || h->child->type != FY_JSON_STRING ||
                h->child->next->type != FY_JSON_STRING || hop_by_hop(h->child->str))
                continue;
            const struct fy_json *v = h->child->next;
            if (!is_token(h->child->str, h->child->len) || !is_field_value(v->str, v->len))
                continue; /* never let a capture file inject lines or bytes a field cannot hold */
            bad |= append(&head, &hl, &hc, h->child->str, h->child->len);
            bad |= append(&head, &hl, &hc, ": ", 2);
            bad |= append(&head, &hl, &hc, v->str, v->len);
            bad |= append(&head, &hl, &hc, "\r\n", 2);
        }
    bool wants_length =
        body_len || !strcmp(method, "POST") || !strcmp(method, "PUT") || !strcmp(method, "PATCH");
    if (wants_length) {
        char cl[40];
        int n = snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", body_len);
        bad |= append(&head, &hl, &hc, cl, (size_t)n);
    }
    bad |= append(&head, &hl, &hc, "Connection: close\r\n\r\n", 21);
    if (bad) {
        free(head);
        snprintf(o->err, sizeof(o->err), "the request head is too large or memory ran out");
        return -1;
    }

    struct conn c;
    int rc = -1;
    if (connect_to(u, op->timeout_ms, &c, o->err, sizeof(o->err)) < 0) {
        free(head);
        return -1;
    }
    if (u->https && tls_start(&c, op->tls, u, o->err, sizeof(o->err)) < 0)
        goto out;
    if (send_all(&c, head, hl) < 0 || (body_len && send_all(&c, body, body_len) < 0)) {
        snprintf(o->err, sizeof(o->err), "cannot send the request to %s: %s", u->authority,
                 errno == EAGAIN ? "no progress in time" : strerror(errno));
        goto out;
    }

    struct fy_h1r_limits lim = {
        .max_line = 8192, .max_head = 65536, .max_fields = 256, .max_body = 0};
    struct fy_h1_reader rd;
    fy_h1r_init(&rd, false, &lim);
    rd.no_body = !strcmp(method, "HEAD");
    char *buf = malloc(READ_CHUNK * 2);
    size_t off = 0, len = 0;
    o->body = malloc(keep ? keep : 1);
    if (!buf || !o->body) {
        snprintf(o->err, sizeof(o->err), "out of memory");
        goto out_reader;
    }
    for (;;) {
        if (off < len) {
            size_t n = fy_h1r_execute(&rd, buf + off, len - off);
            off += n;
            for (int i = 0; i < rd.nspans; i++) {
                size_t sl = rd.spans[i].iov_len;
                size_t room = keep - o->body_len;
                memcpy(o->body + o->body_len, rd.spans[i].iov_base, sl < room ? sl : room);
                o->body_len += sl < room ? sl : room;
                o->body_size += sl;
            }
            if (rd.state == FY_H1R_ERROR) {
                snprintf(o->err, sizeof(o->err), "%s sent an invalid response: %s", u->authority,
                         rd.err_text ? rd.err_text : "malformed");
                break;
            }
            if (rd.state == FY_H1R_DONE) {
                if (rd.msg.status >= 100 && rd.msg.status < 200 && rd.msg.status != 101) {
                    fy_h1r_next(&rd); /* an interim answer: the final one follows */
                    rd.no_body = !strcmp(method, "HEAD");
                    continue;
                }
                o->status = rd.msg.status;
                rc = 0;
                break;
            }
            if (n && off < len)
                continue;
        }
        if (rd.state == FY_H1R_HEAD) {
            /* The head is incomplete: keep its bytes in place, read more after them. */
            if (off) {
                memmove(buf, buf + off, len - off);
                len -= off;
                off = 0;
            }
            if (len >= READ_CHUNK * 2) {
                snprintf(o->err, sizeof(o->err), "%s sent a response head over 64 KiB",
                         u->authority);
                break;
            }
        } else {
            off = len = 0; /* body spans were copied out */
        }
        ssize_t n = recv_some(&c, buf + len, READ_CHUNK * 2 - len);
        if (n > 0) {
            len += (size_t)n;
            continue;
        }
        if (n == 0 && fy_h1r_eof(&rd)) {
            o->status = rd.msg.status;
            rc = 0;
        } else if (n == 0) {
            snprintf(o->err, sizeof(o->err), "%s closed the connection before a whole response",
                     u->authority);
        } else {
            snprintf(o->err, sizeof(o->err), "reading the response from %s: %s", u->authority,
                     errno == EAGAIN ? "no answer in time" : strerror(errno));
        }
        break;
    }
out_reader:
    free(buf);
    fy_h1r_free(&rd);
out:
    conn_close(&c);
    free(head);
    return rc;
}

/* ---- the command ---- */

static int usage(void)
{
    fprintf(stderr,
            "usage: ferry replay FILE [--to URL] [--filter METHOD|URL-REGEX] [--upstream-ca FILE]\n"
            "                         [--insecure-skip-verify] [--timeout 10s]\n"
            "  sends the requests of a capture file again and compares the answers\n");
    return 1;
}

static int parse_timeout(const char *s, int *ms)
{
    char *end;
    double v = strtod(s, &end);
    double mult = !strcmp(end, "ms")             ? 1
                  : (!*end || !strcmp(end, "s")) ? 1000
                  : !strcmp(end, "m")            ? 60000
                                                 : -1;
    if (end == s || mult < 0 || v <= 0 || v * mult > 3600000)
        return -1;
    *ms = (int)(v * mult);
    return *ms > 0 ? 0 : -1;
}

static bool selected(const struct opts *op, const char *method, const char *url)
{
    if (!op->filter)
        return true;
    if (!strcmp(method, op->filter))
        return true;
    return pcre2_match(op->re, (PCRE2_SPTR)url, PCRE2_ZERO_TERMINATED, 0, 0, op->md, NULL) >= 0;
}

struct counts {
    unsigned sent, same, status_changed, body_differs, skipped, failed, bad_lines;
};

static int setup(struct opts *op)
{
    if (op->filter) {
        int ec;
        PCRE2_SIZE eo;
        op->re = pcre2_compile((PCRE2_SPTR)op->filter, PCRE2_ZERO_TERMINATED, 0, &ec, &eo, NULL);
        if (!op->re) {
            PCRE2_UCHAR msg[200];
            pcre2_get_error_message(ec, msg, sizeof(msg));
            fprintf(stderr, "ferry replay: --filter %s: %s at offset %zu\n", op->filter,
                    (char *)msg, (size_t)eo);
            return -1;
        }
        op->md = pcre2_match_data_create_from_pattern(op->re, NULL);
    }
    op->tls = SSL_CTX_new(TLS_client_method());
    if (!op->tls) {
        fprintf(stderr, "ferry replay: cannot set up TLS\n");
        return -1;
    }
    SSL_CTX_set_min_proto_version(op->tls, TLS1_2_VERSION);
    if (op->insecure) {
        SSL_CTX_set_verify(op->tls, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(op->tls, SSL_VERIFY_PEER, NULL);
        if (op->ca ? SSL_CTX_load_verify_locations(op->tls, op->ca, NULL) != 1
                   : SSL_CTX_set_default_verify_paths(op->tls) != 1) {
            fprintf(stderr, "ferry replay: --upstream-ca %s: %s\n", op->ca ? op->ca : "(system)",
                    ERR_reason_error_string(ERR_peek_last_error()));
            return -1;
        }
    }
    return 0;
}

/* First pass: the width of the URL column. */
static int url_width(const char *path, const struct opts *op)
{
    char err[512];
    struct fy_capfile cf;
    int width = 10;
    if (fy_capfile_open(&cf, path, err, sizeof(err)) < 0)
        return width;
    struct fy_json_doc *d;
    int r;
    while ((r = fy_capfile_next(&cf, &d, err, sizeof(err))) != 0) {
        if (r < 0) {
            if (ferror(cf.fp))
                break; /* the second pass says why */
            continue;
        }
        const struct fy_json *rq = fy_json_get_type(fy_json_root(d), "request", FY_JSON_OBJECT);
        const struct fy_json *m = fy_json_get_type(rq, "method", FY_JSON_STRING);
        const struct fy_json *u = fy_json_get_type(rq, "url", FY_JSON_STRING);
        if (m && u && selected(op, m->str, u->str) && (int)u->len > width)
            width = (int)u->len;
        fy_json_doc_free(d);
    }
    fy_capfile_close(&cf);
    return width > URL_COLUMN_MAX ? URL_COLUMN_MAX : width;
}

static void replay_one(const struct opts *op, const struct fy_json *rec, int width,
                       struct counts *n)
{
    const struct fy_json *rq = fy_json_get_type(rec, "request", FY_JSON_OBJECT);
    const struct fy_json *mj = fy_json_get_type(rq, "method", FY_JSON_STRING);
    const struct fy_json *uj = fy_json_get_type(rq, "url", FY_JSON_STRING);
    const char *method = mj->str, *url = uj->str;
    const struct fy_json *rs = fy_json_get_type(rec, "response", FY_JSON_OBJECT);
    double cst = 0;
    bool has_status = rs && fy_json_get_num(rs, "status", &cst) && cst >= 0 && cst <= 999;
    char captured[16] = "-";
    if (has_status)
        snprintf(captured, sizeof(captured), "%d", (int)cst);
    /* The record is data from a file: what is printed and sent is checked first. */
    bool method_ok = is_token(mj->str, mj->len), url_ok = is_target(uj->str, uj->len);
    printf("%-7s %-*s  captured %-3s  ", method_ok ? method : "?", width,
           url_ok ? url : "(a URL with bytes a request cannot hold)", captured);
    if (!method_ok || !url_ok) {
        printf("skipped: the %s is not valid in a request\n", method_ok ? "URL" : "method");
        n->skipped++;
        return;
    }

    char err[300];
    struct url u, to;
    if (parse_url(url, &u, err, sizeof(err)) < 0) {
        printf("skipped: %s\n", err);
        n->skipped++;
        return;
    }
    const struct fy_json *hj = fy_capfile_header(fy_json_get(rq, "headers"), "host");
    const char *host = hj ? hj->str : u.authority;
    if (hj && !fy_valid_host(hj->str, hj->len)) {
        printf("skipped: the captured Host is not a valid host\n");
        n->skipped++;
        return;
    }
    if (op->to) {
        parse_url(op->to, &to, err, sizeof(err)); /* checked at startup */
        u.https = to.https;
        u.port = to.port;
        memcpy(u.host, to.host, sizeof(u.host));
        memcpy(u.authority, to.authority, sizeof(u.authority));
        host = u.authority;
    }
    struct fy_capbody rb;
    char *body = NULL;
    size_t body_len = 0;
    if (fy_capfile_body(fy_json_get(rq, "body"), &rb) < 0 ||
        fy_capfile_body_bytes(&rb, &body, &body_len) < 0) {
        printf("skipped: the request body in the capture is malformed\n");
        n->skipped++;
        return;
    }
    if (rb.captured < rb.size || body_len != rb.captured) {
        printf("skipped: the request body was not captured whole (%llu of %llu bytes)\n",
               (unsigned long long)rb.captured, (unsigned long long)rb.size);
        free(body);
        n->skipped++;
        return;
    }

    /* The captured response body, to compare against. */
    struct fy_capbody cb;
    char *cbody = NULL;
    size_t cbody_len = 0;
    bool have_cb = rs && fy_capfile_body(fy_json_get(rs, "body"), &cb) == 0 &&
                   fy_capfile_body_bytes(&cb, &cbody, &cbody_len) == 0;
    size_t keep = have_cb ? cbody_len : 0;

    struct outcome o = {0};
    if (exchange(op, method, &u, host, fy_json_get(rq, "headers"), body, body_len, keep, &o) < 0) {
        printf("now -    failed: %s\n", o.err);
        n->failed++;
    } else {
        n->sent++;
        printf("now %-3d  ", o.status);
        bool status_same = has_status && (int)cst == o.status;
        if (!have_cb) {
            printf("body not captured\n");
        } else if (cb.captured < cb.size) {
            /* only a prefix was captured: compare that and the total size */
            bool same = o.body_size == cb.size && o.body_len == cbody_len &&
                        !memcmp(o.body, cbody, cbody_len);
            if (same)
                printf("body same (first %zu bytes compared)\n", cbody_len);
            else
                printf("body differs (%llu -> %llu bytes)\n", (unsigned long long)cb.size,
                       (unsigned long long)o.body_size);
            n->body_differs += !same;
            n->same += same && status_same;
        } else {
            bool same = o.body_size == cbody_len && !memcmp(o.body, cbody, cbody_len);
            if (same)
                printf("body same\n");
            else
                printf("body differs (%zu -> %llu bytes)\n", cbody_len,
                       (unsigned long long)o.body_size);
            n->body_differs += !same;
            n->same += same && status_same;
        }
        n->status_changed += !status_same;
    }
    fflush(stdout);
    free(o.body);
    free(cbody);
    free(body);
}

int fy_cmd_replay(int argc, char **argv)
{
    struct opts op = {.timeout_ms = 10000};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool takes = !strcmp(a, "--to") || !strcmp(a, "--filter") || !strcmp(a, "--upstream-ca") ||
                     !strcmp(a, "--timeout");
        if (takes && i + 1 >= argc) {
            fprintf(stderr, "ferry replay: %s needs a value\n", a);
            return usage();
        }
        if (!strcmp(a, "--to")) {
            op.to = argv[++i];
        } else if (!strcmp(a, "--filter")) {
            op.filter = argv[++i];
        } else if (!strcmp(a, "--upstream-ca")) {
            op.ca = argv[++i];
        } else if (!strcmp(a, "--timeout")) {
            if (parse_timeout(argv[++i], &op.timeout_ms) < 0) {
                fprintf(stderr,
                        "ferry replay: --timeout expects a duration like 10s or 500ms, "
                        "got '%s'\n",
                        argv[i]);
                return usage();
            }
        } else if (!strcmp(a, "--insecure-skip-verify")) {
            op.insecure = true;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "ferry replay: unknown option %s\n", a);
            return usage();
        } else if (op.file) {
            fprintf(stderr, "ferry replay: one capture file only (got %s and %s)\n", op.file, a);
            return usage();
        } else {
            op.file = a;
        }
    }
    if (!op.file)
        return usage();
    char err[512];
    struct url to;
    if (op.to && parse_url(op.to, &to, err, sizeof(err)) < 0) {
        fprintf(stderr, "ferry replay: --to: %s\n", err);
        return 1;
    }
    int rc = 1;
    struct fy_capfile cf;
    if (fy_capfile_open(&cf, op.file, err, sizeof(err)) < 0) {
        fprintf(stderr, "ferry replay: %s\n", err);
        return 1;
    }
    if (setup(&op) < 0)
        goto out;
    int width = strcmp(op.file, "-") ? url_width(op.file, &op) : URL_COLUMN_MAX;

    struct counts n = {0};
    struct fy_json_doc *d;
    int r;
    while ((r = fy_capfile_next(&cf, &d, err, sizeof(err))) != 0) {
        if (r < 0) {
            fflush(stdout);
            if (ferror(cf.fp)) {
                fprintf(stderr, "ferry replay: %s\n", err);
                rc = 1;
                goto out;
            }
            fprintf(stderr, "ferry replay: %s (line skipped)\n", err);
            n.bad_lines++;
            continue;
        }
        const struct fy_json *rec = fy_json_root(d);
        const struct fy_json *rq = fy_json_get_type(rec, "request", FY_JSON_OBJECT);
        const struct fy_json *m = fy_json_get_type(rq, "method", FY_JSON_STRING);
        const struct fy_json *u = fy_json_get_type(rq, "url", FY_JSON_STRING);
        if (m && u && selected(&op, m->str, u->str))
            replay_one(&op, rec, width, &n);
        fy_json_doc_free(d);
    }
    printf("%u sent: %u same, %u with another status, %u with another body; %u skipped, "
           "%u failed\n",
           n.sent, n.same, n.status_changed, n.body_differs, n.skipped, n.failed);
    if (n.bad_lines)
        fprintf(stderr, "ferry replay: %u bad line%s skipped\n", n.bad_lines,
                n.bad_lines == 1 ? "" : "s");
    rc = n.failed ? 2 : 0;
out:
    fy_capfile_close(&cf);
    pcre2_match_data_free(op.md);
    pcre2_code_free(op.re);
    SSL_CTX_free(op.tls);
    return rc;
}
