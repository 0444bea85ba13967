/*
 * The TLS transport (see sock.h for the contract and the readiness rule, tls.h for the API).
 *
 * OpenSSL talks to the fd through its socket BIO: it calls recv/send itself, and we learn
 * that it would block from SSL_ERROR_WANT_READ/WANT_WRITE. Either one clears the flag of the
 * direction the caller asked for (sock.h), and since every epoll event sets both flags, the
 * retry comes on the edge OpenSSL needs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "core/assert.h"
#include "net/sock.h"
#include "net/tls_sniff.h"
#include "net/tls_priv.h"

/* Small spans are gathered into one record (one SSL_write, one send) rather than a record each:
 * a response head and its first body bytes go out together, as writev does for TCP. */
#define COALESCE 16384
static __thread unsigned char gather[COALESCE];

static void set_error(struct tls_conn *t, int ssl_err, const char *during)
{
    t->failed = true;
    if (t->err[0])
        return; /* a callback already said why (interception: the certificate) */
    if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN) {
        if (ssl_err == SSL_ERROR_SYSCALL && errno && errno != EAGAIN)
            snprintf(t->err, sizeof(t->err), "%s: %s", during, strerror(errno));
        else
            snprintf(t->err, sizeof(t->err), "the peer closed the connection %s", during);
        return;
    }
    /* A failed verification is named (expired, unknown CA...): on a server the refused client
     * certificate is not kept, so the result alone tells. */
    long v = SSL_get_verify_result(t->ssl);
    if (v != X509_V_OK) {
        snprintf(t->err, sizeof(t->err), "certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
        return;
    }
    char why[128];
    fy_tls_reason(why, sizeof(why), "TLS error");
    snprintf(t->err, sizeof(t->err), "%s", why);
}

/* SSL_get_error() needs an empty error queue before each call. It is nearly always empty
 * already: looking costs less than clearing it every time (which was 1% of a request). */
static inline void clear_errors(void)
{
    if (ERR_peek_error())
        ERR_clear_error();
}

static ssize_t tls_read(struct fy_sock *s, void *buf, size_t len)
{
    struct tls_conn *t = s->ctx;
    size_t n = 0;
    clear_errors();
    errno = 0;
    if (SSL_read_ex(t->ssl, buf, len, &n) == 1) {
        /* rd_ready stays while OpenSSL holds more bytes or the socket may; a short read(2)
         * emptied the socket, and epoll reports new bytes with a new edge (as for plain TCP,
         * sock.c), which saves the read that would only meet EAGAIN. An end of stream that
         * came with the data gets no edge of its own: eof_pending keeps it readable. */
        if (t->drained && !s->eof_pending && !SSL_has_pending(t->ssl))
            s->rd_ready = false;
        return (ssize_t)n;
    }
    int e = SSL_get_error(t->ssl, 0);
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        s->rd_ready = false;
        return FY_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0; /* close_notify (or, from a client, a bare FIN: IGNORE_UNEXPECTED_EOF) */
    case SSL_ERROR_SYSCALL:
        t->failed = true;
        return errno ? -errno : -ECONNRESET;
    default:
        set_error(t, e, "reading");
        /* From an upstream, a FIN without close_notify may be a truncation attack on a
         * close-delimited body: an error, not an end. */
        return -EPROTO;
    }
}

static ssize_t write_span(struct fy_sock *s, struct tls_conn *t, const void *p, size_t len)
{
    size_t n = 0;
    clear_errors();
    errno = 0;
    if (SSL_write_ex(t->ssl, p, len, &n) == 1)
        return (ssize_t)n;
    int e = SSL_get_error(t->ssl, 0);
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
        s->wr_ready = false;
        return FY_AGAIN;
    }
    if (e == SSL_ERROR_SYSCALL) {
        t->failed = true;
        return errno ? -errno : -EPIPE;
    }
    set_error(t, e, "writing");
    return -EPROTO;
}

/*
 * Writes all of iov, or up to where OpenSSL would block. A retry after WANT_WRITE must offer at
 * least the bytes OpenSSL already took into its pending record, from the same position: it does,
 * because the caller retries from where we said we stopped, the bytes there do not change, and
 * a span is gathered or written directly by a rule that only depends on what follows that
 * position (a gathered record only grows when more was queued meanwhile).
 */
static ssize_t tls_writev(struct fy_sock *s, const struct iovec *iov, int iovcnt)
{
    struct tls_conn *t = s->ctx;
    size_t total = 0, skip = 0; /* skip: bytes of iov[i] already written */
    int i = 0;
    while (i < iovcnt) {
        size_t first = iov[i].iov_len - skip;
        if (first == 0) {
            i++, skip = 0;
            continue;
        }
        const void *p;
        size_t len;
        if (first >= COALESCE || i + 1 == iovcnt) {
            p = (const char *)iov[i].iov_base + skip;
            len = first;
        } else {
            len = 0;
            for (int j = i; j < iovcnt && len < COALESCE; j++) {
                size_t off = j == i ? skip : 0;
                size_t take = iov[j].iov_len - off;
                if (take > COALESCE - len)
                    take = COALESCE - len;
                memcpy(gather + len, (const char *)iov[j].iov_base + off, take);
                len += take;
            }
            p = gather;
        }
        ssize_t n = write_span(s, t, p, len);
        if (n < 0)
            return total ? (ssize_t)total : n;
        total += (size_t)n;
        /* advance over n bytes */
        size_t left = (size_t)n;
        while (i < iovcnt && left >= iov[i].iov_len - skip) {
            left -= iov[i].iov_len - skip;
            i++, skip = 0;
        }
        skip += left;
    }
    return (ssize_t)total;
}

static int tls_shutdown(struct fy_sock *s)
{
    struct tls_conn *t = s->ctx;
    if (!t->shut_sent && !t->failed && t->handshake_done) {
        clear_errors();
        int rc = SSL_shutdown(t->ssl);
        if (rc < 0) {
            int e = SSL_get_error(t->ssl, rc);
            if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                s->wr_ready = false;
                return FY_AGAIN;
            }
            t->failed = true;
        }
        t->shut_sent = true;
    }
    return shutdown(s->fd, SHUT_WR) < 0 && errno != ENOTCONN ? -errno : 0;
}

static int tls_handshake(struct fy_sock *s)
{
    struct tls_conn *t = s->ctx;
    if (t->handshake_done)
        return 0;
    if (t->failed)
        return FY_ETLS;
    clear_errors();
    errno = 0;
    int rc = SSL_do_handshake(t->ssl);
    if (rc == 1) {
        t->handshake_done = true;
        return 0;
    }
    int e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) {
        s->rd_ready = false;
        return FY_AGAIN;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        s->wr_ready = false;
        return FY_AGAIN;
    }
    set_error(t, e, "during the handshake");
    return FY_ETLS;
}

static const char *tls_alpn(const struct fy_sock *s, unsigned *len)
{
    const struct tls_conn *t = s->ctx;
    const unsigned char *p = NULL;
    SSL_get0_alpn_selected(t->ssl, &p, len);
    return *len ? (const char *)p : NULL;
}

/* A hang-up may be hidden behind a close_notify alert the kernel holds: look through OpenSSL
 * (SSL_peek decrypts into its own buffer; nothing is lost for a later read). */
static bool tls_peer_gone(struct fy_sock *s)
{
    struct tls_conn *t = s->ctx;
    if (fy_sock_tcp_peer_gone(s))
        return true;
    char byte;
    size_t n;
    clear_errors();
    if (SSL_peek_ex(t->ssl, &byte, 1, &n) == 1)
        return false;
    int e = SSL_get_error(t->ssl, 0);
    return e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE;
}

static void tls_close(struct fy_sock *s)
{
    struct tls_conn *t = s->ctx;
    if (t) {
        /* OpenSSL drops a session from the cache when its connection ends without a shutdown;
         * one that merely ended (the peer left, or we close without close_notify) should stay
         * resumable, as nginx keeps it. Marking it shut down sends nothing. */
        if (!t->failed && t->handshake_done)
            SSL_set_shutdown(t->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_free(t->ssl); /* no close_notify: see sock.h */
        fy_tls_server_unref(t->server);
        fy_tls_client_unref(t->client);
        fy_tls_intercept_unref(t->intercept);
        free(t->fallback_name);
        free(t);
    }
    close(s->fd);
}

static const struct fy_transport tls_transport = {
    .name = "tls",
    .shutdown_before_close = true,
    .read = tls_read,
    .writev = tls_writev,
    .shutdown = tls_shutdown,
    .handshake = tls_handshake,
    .alpn = tls_alpn,
    .peer_gone = tls_peer_gone,
    .splice_in = NULL,
    .splice_out = NULL,
    .close = tls_close,
};

/* Watches the socket BIO's reads (OpenSSL calls read(2) itself): whether the last one got less
 * than it asked for, which means the socket was empty after it. */
static long on_bio(BIO *b, int oper, const char *argp, size_t len, int argi, long argl, int ret,
                   size_t *processed)
{
    (void)argp;
    (void)argi;
    (void)argl;
    if (oper == (BIO_CB_READ | BIO_CB_RETURN)) {
        struct tls_conn *t = (struct tls_conn *)BIO_get_callback_arg(b);
        t->drained = ret > 0 && processed && *processed < len;
    }
    return ret;
}

static struct tls_conn *conn_new(struct fy_sock *s, SSL_CTX *ctx)
{
    struct tls_conn *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    if (!(t->ssl = SSL_new(ctx)) || SSL_set_fd(t->ssl, s->fd) != 1) {
        SSL_free(t->ssl);
        free(t);
        return NULL;
    }
    BIO *rb = SSL_get_rbio(t->ssl);
    BIO_set_callback_arg(rb, (char *)t);
    BIO_set_callback_ex(rb, on_bio);
    return t;
}

int fy_tls_accept(struct fy_sock *s, struct fy_tls_server *srv)
{
    struct tls_conn *t = conn_new(s, srv->def);
    if (!t)
        return -ENOMEM;
    t->server = fy_tls_server_ref(srv);
    SSL_set_accept_state(t->ssl);
    s->ctx = t;
    s->tp = &tls_transport;
    return 0;
}

int fy_tls_accept_intercept(struct fy_sock *s, struct fy_tls_intercept *icpt, struct fy_tls_mint *m,
                            const char *fallback_name)
{
    FY_ASSERT(m);
    struct tls_conn *t = conn_new(s, fy_tls_intercept_ssl_ctx(icpt));
    if (!t)
        return -ENOMEM;
    if (fallback_name && !(t->fallback_name = strdup(fallback_name))) {
        SSL_free(t->ssl);
        free(t);
        return -ENOMEM;
    }
    t->intercept = fy_tls_intercept_ref(icpt);
    t->mint = m;
    SSL_set_app_data(t->ssl, t); /* for the client-hello callback (tls_mint.c) */
    SSL_set_accept_state(t->ssl);
    s->ctx = t;
    s->tp = &tls_transport;
    return 0;
}

static bool is_ip_literal(const char *name)
{
    return strchr(name, ':') || strspn(name, "0123456789.") == strlen(name);
}

int fy_tls_connect(struct fy_sock *s, struct fy_tls_client *cl, const char *name,
                   struct fy_tls_session_slot *slot)
{
    struct tls_conn *t = conn_new(s, cl->ctx);
    if (!t)
        return -ENOMEM;
    t->client = fy_tls_client_ref(cl);
    SSL *ssl = t->ssl;
    SSL_set_connect_state(ssl);
    bool ip = is_ip_literal(name);
    if (!ip)
        SSL_set_tlsext_host_name(ssl, name);
    if (!cl->insecure) {
        /* The name checked in the certificate: a DNS SAN, or an IP SAN for an address. */
        X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, name) != 1 : SSL_set1_host(ssl, name) != 1)
            goto fail;
    }
    if (slot) {
        SSL_set_ex_data(ssl, fy_tls_slot_index, slot);
        if (slot->sess && SSL_set_session(ssl, slot->sess) != 1)
            goto fail;
    }
    s->ctx = t;
    s->tp = &tls_transport;
    return 0;
fail:
    SSL_free(ssl);
    fy_tls_client_unref(t->client);
    free(t);
    return -EINVAL;
}

bool fy_tls_active(const struct fy_sock *s)
{
    return s->tp == &tls_transport;
}

const char *fy_tls_error(const struct fy_sock *s)
{
    return fy_tls_active(s) ? ((const struct tls_conn *)s->ctx)->err : "";
}

static SSL *ssl_of(const struct fy_sock *s)
{
    return fy_tls_active(s) ? ((const struct tls_conn *)s->ctx)->ssl : NULL;
}

const char *fy_tls_version(const struct fy_sock *s)
{
    SSL *ssl = ssl_of(s);
    return ssl ? SSL_get_version(ssl) : NULL;
}

const char *fy_tls_cipher(const struct fy_sock *s)
{
    SSL *ssl = ssl_of(s);
    return ssl ? SSL_get_cipher_name(ssl) : NULL;
}

const char *fy_tls_server_name(const struct fy_sock *s)
{
    SSL *ssl = ssl_of(s);
    const char *name = ssl ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL;
    /* Only a host name (RFC 6066 3) is given out: it goes into logs, captures and header
     * templates ($tls_server_name), where anything else could split a line. */
    if (!name)
        return NULL;
    size_t n = strlen(name);
    if (n > 1 && name[n - 1] == '.')
        n--; /* a fully qualified name: valid as the name without its dot */
    return fy_tls_sniff_host_valid(name, n) ? name : NULL;
}

bool fy_tls_resumed(const struct fy_sock *s)
{
    SSL *ssl = ssl_of(s);
    return ssl && SSL_session_reused(ssl);
}

size_t fy_tls_peer_subject(const struct fy_sock *s, char *buf, size_t len)
{
    SSL *ssl = ssl_of(s);
    X509 *x = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    if (!x || len == 0)
        return 0;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return 0;
    X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    int n = BIO_read(b, buf, (int)len - 1);
    BIO_free(b);
    n = n > 0 ? n : 0;
    buf[n] = '\0';
    /* A field value must not carry control bytes (an injected CR/LF would split the head). */
    for (int i = 0; i < n; i++)
        if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
            buf[i] = '?';
    return (size_t)n;
}

size_t fy_tls_peer_fingerprint(const struct fy_sock *s, char *buf, size_t len)
{
    SSL *ssl = ssl_of(s);
    X509 *x = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!x || len < 65 || X509_digest(x, EVP_sha256(), md, &mdlen) != 1)
        return 0;
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < mdlen && i < 32; i++) {
        buf[i * 2] = hex[md[i] >> 4];
        buf[i * 2 + 1] = hex[md[i] & 15];
    }
    buf[64] = '\0';
    return 64;
}

const char *fy_tls_peer_verify(const struct fy_sock *s, char *buf, size_t len)
{
    SSL *ssl = ssl_of(s);
    if (!ssl || !SSL_get0_peer_certificate(ssl))
        return "NONE";
    long v = SSL_get_verify_result(ssl);
    if (v == X509_V_OK)
        return "SUCCESS";
    snprintf(buf, len, "FAILED: %s", X509_verify_cert_error_string(v));
    return buf;
}
