/*
 * TLS contexts (see tls.h): certificates loaded and checked, SNI selection, the client-side trust
 * settings, and the process-wide session ticket keys.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "core/log.h"
#include "net/tls_priv.h"

int fy_tls_slot_index = -1;

int fy_tls_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    ERR_clear_error();
    return -1;
}

void fy_tls_reason(char *buf, size_t len, const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, len, "%s", r ? r : fallback);
}

/* ---- session ticket keys ---- */

struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
};

/* keys[0] encrypts new tickets; the older ones still decrypt, so a ticket is honoured for
 * FY_TLS_TICKET_KEYS - 1 rotation periods at least (and never beyond its session timeout).
 * Immutable once published; rotation publishes a new ring. */
struct ticket_ring {
    struct ticket_key keys[FY_TLS_TICKET_KEYS];
    uint32_t nkeys;
    struct ticket_ring *older;
};

#define RINGS_KEPT                                                                                 \
    8 /* a retired ring is freed this many rotations later: hours, long after any                  \
         handshake that loaded it ended */

static _Atomic(struct ticket_ring *) ticket_ring;

static int new_key(struct ticket_key *k)
{
    return RAND_bytes(k->name, sizeof(k->name)) == 1 && RAND_bytes(k->aes, sizeof(k->aes)) == 1 &&
                   RAND_bytes(k->hmac, sizeof(k->hmac)) == 1
               ? 0
               : -1;
}

static void free_rings_after(struct ticket_ring *r, int keep)
{
    for (int i = 1; r && i < keep; i++)
        r = r->older;
    if (!r)
        return;
    struct ticket_ring *o = r->older;
    r->older = NULL;
    while (o) {
        struct ticket_ring *n = o->older;
        OPENSSL_cleanse(o, sizeof(*o));
        free(o);
        o = n;
    }
}

void fy_tls_rotate_ticket_keys(void)
{
    struct ticket_ring *cur = atomic_load_explicit(&ticket_ring, memory_order_acquire);
    struct ticket_ring *r = calloc(1, sizeof(*r));
    if (!r || new_key(&r->keys[0]) < 0) {
        free(r);
        fy_warn("TLS: cannot make a new session ticket key; keeping the current one");
        return;
    }
    r->nkeys = 1;
    for (uint32_t i = 0; cur && i < cur->nkeys && r->nkeys < FY_TLS_TICKET_KEYS; i++)
        r->keys[r->nkeys++] = cur->keys[i];
    r->older = cur;
    atomic_store_explicit(&ticket_ring, r, memory_order_release);
    free_rings_after(r, RINGS_KEPT);
}

int fy_tls_ticket_cb(SSL *s, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                     EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc)
{
    (void)s;
    const struct ticket_ring *r = atomic_load_explicit(&ticket_ring, memory_order_acquire);
    const struct ticket_key *k = NULL;
    int rc = 1;
    if (!r)
        return enc ? -1 : 0;
    if (enc) {
        k = &r->keys[0];
        memcpy(key_name, k->name, 16);
        if (RAND_bytes(iv, 16) != 1 ||
            EVP_EncryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1)
            return -1;
    } else {
        for (uint32_t i = 0; i < r->nkeys && !k; i++)
            if (!memcmp(key_name, r->keys[i].name, 16))
                k = &r->keys[i], rc = i == 0 ? 1 : 2; /* 2: valid, but issue a fresh ticket */
        if (!k)
            return 0; /* unknown key: a full handshake */
        if (EVP_DecryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1)
            return -1;
    }
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof(k->hmac)),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(hctx, params) == 1 ? rc : -1;
}

/* ---- process ---- */

static bool initialised;

int fy_tls_init(char *err, size_t errlen)
{
    if (initialised)
        return 0;
    if (OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL) !=
        1)
        return fy_tls_fail(err, errlen, "cannot initialise OpenSSL");
    fy_tls_slot_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    if (fy_tls_slot_index < 0)
        return fy_tls_fail(err, errlen, "cannot initialise OpenSSL (ex_data)");
    fy_tls_rotate_ticket_keys();
    if (!atomic_load(&ticket_ring))
        return fy_tls_fail(err, errlen, "cannot make a session ticket key (no randomness?)");
    initialised = true;
    return 0;
}

void fy_tls_shutdown(void)
{
    struct ticket_ring *r = atomic_exchange(&ticket_ring, NULL);
    if (r) {
        free_rings_after(r, 1);
        OPENSSL_cleanse(r, sizeof(*r));
        free(r);
    }
}

/* ---- shared settings ---- */

static int parse_version(const char *v, int *out)
{
    if (!v)
        v = "1.2";
    if (!strncasecmp(v, "TLSv", 4))
        v += 4;
    static const struct {
        const char *text;
        int version;
    } versions[] = {{"1.0", TLS1_VERSION},
                    {"1", TLS1_VERSION},
                    {"1.1", TLS1_1_VERSION},
                    {"1.2", TLS1_2_VERSION},
                    {"1.3", TLS1_3_VERSION}};
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++)
        if (!strcmp(v, versions[i].text)) {
            *out = versions[i].version;
            return 0;
        }
    return -1;
}

/* Versions and cipher lists, common to both sides. */
static int apply_protocol(SSL_CTX *ctx, const char *min_version, const char *ciphers,
                          const char *ciphersuites, const char *groups, char *err, size_t errlen)
{
    int min;
    if (parse_version(min_version, &min) < 0)
        return fy_tls_fail(err, errlen, "min-version: expected 1.2 or 1.3, got '%s'", min_version);
    if (min < TLS1_2_VERSION)
        SSL_CTX_set_security_level(ctx, 0); /* OpenSSL 3 refuses TLS < 1.2 at level 1 */
    if (SSL_CTX_set_min_proto_version(ctx, min) != 1)
        return fy_tls_fail(err, errlen, "min-version '%s' is not supported", min_version);
    if (SSL_CTX_set_cipher_list(ctx, ciphers ? ciphers : FY_TLS_DEFAULT_CIPHERS) != 1)
        return fy_tls_fail(err, errlen, "ciphers: no usable cipher in '%s'",
                           ciphers ? ciphers : FY_TLS_DEFAULT_CIPHERS);
    if (SSL_CTX_set_ciphersuites(ctx, ciphersuites ? ciphersuites : FY_TLS_DEFAULT_CIPHERSUITES) !=
        1)
        return fy_tls_fail(err, errlen, "ciphersuites: no usable suite in '%s'",
                           ciphersuites ? ciphersuites : FY_TLS_DEFAULT_CIPHERSUITES);
    if (SSL_CTX_set1_groups_list(ctx, groups ? groups : FY_TLS_DEFAULT_GROUPS) != 1)
        return fy_tls_fail(err, errlen, "groups: unknown group in '%s'",
                           groups ? groups : FY_TLS_DEFAULT_GROUPS);
    /* Partial writes and a moving buffer: the transport writes from the output queue, whose
     * first span may move between a WANT_WRITE and the retry (tls.c). */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* One read(2) takes every record the socket holds instead of a header and a body per
     * record: a keep-alive request costs two syscalls fewer each way. Buffered records are
     * returned by the next SSL_read before it asks the socket, and the transport keeps
     * rd_ready after data (tls.c), so nothing waits for an edge that will not come. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    return 0;
}

/* ---- certificates ---- */

static int read_cert(const char *path, X509 **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return fy_tls_fail(err, errlen, "cannot read the certificate %s: %s", path,
                           strerror(errno));
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!x)
        return fy_tls_fail(err, errlen, "%s: no PEM certificate found", path);
    const ASN1_TIME *na = X509_get0_notAfter(x), *nb = X509_get0_notBefore(x);
    char when[64] = "";
    if (X509_cmp_current_time(na) < 0) {
        BIO *b = BIO_new(BIO_s_mem());
        if (b) {
            ASN1_TIME_print(b, na);
            int n = BIO_read(b, when, sizeof(when) - 1);
            when[n > 0 ? n : 0] = '\0';
            BIO_free(b);
        }
        X509_free(x);
        return fy_tls_fail(err, errlen, "%s: the certificate expired (not after %s)", path, when);
    }
    if (X509_cmp_current_time(nb) > 0)
        fy_warn("TLS: the certificate %s is not valid yet (its notBefore is in the future)", path);
    *out = x;
    return 0;
}

static int read_key(const char *path, EVP_PKEY **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return fy_tls_fail(err, errlen, "cannot read the key %s: %s", path, strerror(errno));
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, (void *)"");
    fclose(f);
    if (!k)
        return fy_tls_fail(err, errlen, "%s: no unencrypted PEM private key found", path);
    *out = k;
    return 0;
}

/* The DNS names a certificate is for: its subjectAltName entries, else its CN. Lower case,
 * sorted, joined by ','. */
static char *cert_names(X509 *x)
{
    char *names[64];
    int n = 0;
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && n < 64; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_DNS)
            continue;
        const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
        int len = ASN1_STRING_length(g->d.dNSName);
        if (len > 0 && !memchr(d, '\0', (size_t)len))
            names[n++] = strndup((const char *)d, (size_t)len);
    }
    GENERAL_NAMES_free(sans);
    if (n == 0) {
        char cn[256];
        if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn)) > 0)
            names[n++] = strdup(cn);
    }
    size_t total = 1;
    for (int i = 0; i < n; i++) {
        if (!names[i])
            continue;
        for (char *p = names[i]; *p; p++)
            *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
        total += strlen(names[i]) + 1;
    }
    /* sort (few names) */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && names[j - 1] && names[j] && strcmp(names[j - 1], names[j]) > 0;
             j--) {
            char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    char *out = malloc(total);
    if (out) {
        out[0] = '\0';
        for (int i = 0; i < n; i++) {
            if (!names[i])
                continue;
            if (out[0])
                strcat(out, ",");
            strcat(out, names[i]);
        }
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    return out;
}

static int alpn_select(SSL *s, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg)
{
    (void)s, (void)arg;
    /* The protocols ferry's handlers speak, in preference order (HTTP/2 joins later). */
    static const unsigned char ours[] = "\x08http/1.1";
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        /* The client offered protocols and none is one ferry speaks: RFC 7301 3.2's fatal
         * no_application_protocol (as nginx since 1.21.4, against cross-protocol attacks
         * like ALPACA), rather than HTTP/1.1 to a client that asked for something else. */
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const struct tls_sni_entry *)a)->name, ((const struct tls_sni_entry *)b)->name);
}

static SSL_CTX *lookup(const struct tls_sni_entry *v, uint32_t n, const char *name)
{
    if (n == 0)
        return NULL;
    struct tls_sni_entry key = {.name = (char *)name};
    const struct tls_sni_entry *e = bsearch(&key, v, n, sizeof(*v), cmp_entry);
    return e ? e->ctx : NULL;
}

/* SNI: the exact name, then a wildcard one label up, else the default context stays. */
static int on_servername(SSL *s, int *alert, void *arg)
{
    const struct fy_tls_server *t = arg;
    const char *sni = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
    if (!sni)
        return SSL_TLSEXT_ERR_OK;
    size_t len = strlen(sni);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)sni[i];
        if (ch <= 0x20 || ch >= 0x7f) {
            /* RFC 6066 3: a host name, in ASCII. Control bytes or spaces are an attack on
             * whatever later prints or forwards the name, not a name. */
            *alert = SSL_AD_ILLEGAL_PARAMETER;
            return SSL_TLSEXT_ERR_ALERT_FATAL;
        }
    }
    if (t->nctxs == 1)
        return SSL_TLSEXT_ERR_OK;
    char name[256];
    if (len >= sizeof(name))
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i <= len; i++)
        name[i] = (char)(sni[i] >= 'A' && sni[i] <= 'Z' ? sni[i] + 32 : sni[i]);
    if (len && name[len - 1] == '.')
        name[--len] = '\0';
    SSL_CTX *ctx = lookup(t->exact, t->nexact, name);
    const char *dot = strchr(name, '.');
    if (!ctx && dot && dot[1])
        ctx = lookup(t->wild, t->nwild, dot + 1);
    if (ctx && ctx != SSL_get_SSL_CTX(s))
        SSL_set_SSL_CTX(s, ctx);
    return SSL_TLSEXT_ERR_OK;
}

/* What every server context has, a listener's and the interception one alike (tls_mint.c). */
static SSL_CTX *server_ctx_common(const char *min_version, const char *ciphers,
                                  const char *ciphersuites, const char *groups,
                                  uint64_t session_timeout_s, uint32_t session_cache_size,
                                  char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        fy_tls_fail(err, errlen, "cannot create a TLS context (out of memory)");
        return NULL;
    }
    if (apply_protocol(ctx, min_version, ciphers, ciphersuites, groups, err, errlen) < 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* Our cipher order (all AEAD, forward secret), ChaCha20 first for clients that prefer it
     * (no AES hardware). A client closing without close_notify ends its request stream; that
     * is not an attack on what the client sends us. */
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"ferry", 5);
    SSL_CTX_set_timeout(ctx, (long)(session_timeout_s ? session_timeout_s : 3600));
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, session_cache_size ? session_cache_size : 20480);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, fy_tls_ticket_cb);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    return ctx;
}

static SSL_CTX *server_ctx(struct fy_tls_server *t, const struct fy_tls_server_opts *o, char *err,
                           size_t errlen)
{
    SSL_CTX *ctx = server_ctx_common(o->min_version, o->ciphers, o->ciphersuites, o->groups,
                                     o->session_timeout_s, o->session_cache_size, err, errlen);
    if (!ctx)
        return NULL;
    /* A listener's clients are many and mostly idle between requests: their connections give
     * their buffers back then (an idle TLS keep-alive connection costs little memory). Upstream
     * and intercepted connections are fewer and busier, and keep theirs: freeing and
     * allocating two 16 KiB buffers per record was a few per cent of an intercepted request's
     * CPU. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, t);
    if (o->client_auth != FY_TLS_CLIENT_AUTH_NONE) {
        if (!o->client_ca) {
            fy_tls_fail(err, errlen,
                        "client-auth needs client-ca (the CA that signs client certificates)");
            goto fail;
        }
        FILE *f = fopen(o->client_ca, "r");
        if (!f) {
            fy_tls_fail(err, errlen, "cannot read the client CA file %s: %s", o->client_ca,
                        strerror(errno));
            goto fail;
        }
        fclose(f);
        if (SSL_CTX_load_verify_locations(ctx, o->client_ca, NULL) != 1) {
            fy_tls_fail(err, errlen, "%s: no PEM CA certificate found", o->client_ca);
            goto fail;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->client_ca);
        if (names)
            SSL_CTX_set_client_CA_list(ctx, names);
        int mode = SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE;
        if (o->client_auth == FY_TLS_CLIENT_AUTH_REQUIRED)
            mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(ctx, mode, NULL);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static int add_name(struct tls_sni_entry **v, uint32_t *n, const char *name, SSL_CTX *ctx)
{
    for (uint32_t i = 0; i < *n; i++)
        if (!strcmp((*v)[i].name, name))
            return 0; /* an earlier certificate has this name already: it wins */
    struct tls_sni_entry *nv = realloc(*v, (*n + 1) * sizeof(**v));
    if (!nv)
        return -1;
    *v = nv;
    if (!(nv[*n].name = strdup(name)))
        return -1;
    nv[*n].ctx = ctx;
    (*n)++;
    return 0;
}

static int digest_file(EVP_MD_CTX *md, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    unsigned char buf[4096];
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(buf, 1, sizeof(buf), f)) > 0)
        rc = EVP_DigestUpdate(md, buf, n) == 1 ? 0 : -1;
    if (ferror(f))
        rc = -1;
    fclose(f);
    return rc;
}

/*
 * A session (by id or ticket) resumes only where it was made: OpenSSL refuses one whose session
 * id context differs. One fixed context for every listener would let a session from a listener
 * without client certificates resume on one that requires them, and carry one listener's
 * verified client identity to another (nginx's CVE-2014-3616). The context is a hash of what
 * authenticates both sides here: the certificates, the client-auth mode, its CA, the minimum
 * version. Listeners alike in all of these may share sessions; a reload that changes them
 * starts afresh. Every SNI context of the listener gets the same one, since the session is
 * looked up before SNI picks a context.
 */
static int set_session_context(struct fy_tls_server *t, const struct fy_tls_server_opts *o,
                               char *err, size_t errlen)
{
    unsigned char sid[EVP_MAX_MD_SIZE];
    unsigned int sid_len = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int mode = (int)o->client_auth;
    const char *minv = o->min_version ? o->min_version : "";
    bool ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
              EVP_DigestUpdate(md, "ferry session context 1", 23) == 1 &&
              EVP_DigestUpdate(md, &mode, sizeof(mode)) == 1 &&
              EVP_DigestUpdate(md, minv, strlen(minv) + 1) == 1;
    for (uint32_t i = 0; ok && i < o->ncerts; i++)
        ok = digest_file(md, o->certs[i].cert) == 0;
    if (ok && o->client_auth != FY_TLS_CLIENT_AUTH_NONE && o->client_ca)
        ok = digest_file(md, o->client_ca) == 0;
    ok = ok && EVP_DigestFinal_ex(md, sid, &sid_len) == 1;
    EVP_MD_CTX_free(md);
    if (sid_len > SSL_MAX_SID_CTX_LENGTH)
        sid_len = SSL_MAX_SID_CTX_LENGTH;
    for (uint32_t c = 0; ok && c < t->nctxs; c++)
        ok = SSL_CTX_set_session_id_context(t->ctxs[c], sid, sid_len) == 1;
    return ok ? 0 : fy_tls_fail(err, errlen, "cannot set the TLS session context");
}

struct fy_tls_server *fy_tls_server_new(const struct fy_tls_server_opts *o, char *err,
                                        size_t errlen)
{
    if (o->ncerts == 0) {
        fy_tls_fail(err, errlen, "no certificate given");
        return NULL;
    }
    struct fy_tls_server *t = calloc(1, sizeof(*t));
    char **set_names = calloc(o->ncerts, sizeof(*set_names));   /* per context */
    int *key_types = calloc(o->ncerts * 2, sizeof(*key_types)); /* per context: RSA, EC used */
    if (!t || !set_names || !key_types || !(t->ctxs = calloc(o->ncerts, sizeof(*t->ctxs)))) {
        fy_tls_fail(err, errlen, "out of memory");
        goto fail;
    }
    t->refs = 1;
    size_t names_len = 1;
    for (uint32_t i = 0; i < o->ncerts; i++) {
        const struct fy_tls_cert_files *cf = &o->certs[i];
        X509 *x = NULL;
        EVP_PKEY *k = NULL;
        if (read_cert(cf->cert, &x, err, errlen) < 0)
            goto fail;
        if (read_key(cf->key, &k, err, errlen) < 0) {
            X509_free(x);
            goto fail;
        }
        if (X509_check_private_key(x, k) != 1) {
            X509_free(x);
            EVP_PKEY_free(k);
            fy_tls_fail(err, errlen, "the key %s does not match the certificate %s", cf->key,
                        cf->cert);
            goto fail;
        }
        int type = EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA ? 0 : 1;
        char *names = cert_names(x);
        X509_free(x);
        if (!names) {
            EVP_PKEY_free(k);
            fy_tls_fail(err, errlen, "out of memory");
            goto fail;
        }
        /* The context for these names with no certificate of this key type yet, or a new one. */
        uint32_t c = 0;
        while (c < t->nctxs && (strcmp(set_names[c], names) || key_types[c * 2 + type]))
            c++;
        if (c == t->nctxs) {
            SSL_CTX *ctx = server_ctx(t, o, err, errlen);
            if (!ctx) {
                free(names);
                EVP_PKEY_free(k);
                goto fail;
            }
            t->ctxs[t->nctxs++] = ctx;
            set_names[c] = names;
            names_len += strlen(names) + 2;
            char *save = NULL;
            char *copy = strdup(names);
            for (char *nm = copy ? strtok_r(copy, ",", &save) : NULL; nm;
                 nm = strtok_r(NULL, ",", &save)) {
                int rc = !strncmp(nm, "*.", 2) ? add_name(&t->wild, &t->nwild, nm + 2, ctx)
                                               : add_name(&t->exact, &t->nexact, nm, ctx);
                if (rc < 0) {
                    free(copy);
                    EVP_PKEY_free(k);
                    fy_tls_fail(err, errlen, "out of memory");
                    goto fail;
                }
            }
            free(copy);
        } else {
            free(names);
        }
        key_types[c * 2 + type] = 1;
        SSL_CTX *ctx = t->ctxs[c];
        int ok = SSL_CTX_use_certificate_chain_file(ctx, cf->cert) == 1 &&
                 SSL_CTX_use_PrivateKey(ctx, k) == 1 && SSL_CTX_check_private_key(ctx) == 1;
        EVP_PKEY_free(k);
        if (!ok) {
            char why[120];
            fy_tls_reason(why, sizeof(why), "unusable");
            fy_tls_fail(err, errlen, "%s: %s", cf->cert, why);
            goto fail;
        }
    }
    if (set_session_context(t, o, err, errlen) < 0)
        goto fail;
    t->def = t->ctxs[0];
    if (t->nexact)
        qsort(t->exact, t->nexact, sizeof(*t->exact), cmp_entry);
    if (t->nwild)
        qsort(t->wild, t->nwild, sizeof(*t->wild), cmp_entry);
    if ((t->names = malloc(names_len))) {
        t->names[0] = '\0';
        for (uint32_t c = 0; c < t->nctxs; c++) {
            if (c)
                strcat(t->names, "; ");
            strcat(t->names, set_names[c]);
        }
    }
    for (uint32_t c = 0; c < t->nctxs; c++)
        free(set_names[c]);
    free(set_names);
    free(key_types);
    int min = TLS1_2_VERSION;
    parse_version(o->min_version, &min);
    if (min < TLS1_2_VERSION)
        fy_warn("TLS: min-version %s allows protocol versions with known weaknesses",
                o->min_version);
    return t;
fail:
    if (set_names)
        for (uint32_t c = 0; t && c < t->nctxs; c++)
            free(set_names[c]);
    free(set_names);
    free(key_types);
    fy_tls_server_unref(t);
    return NULL;
}

struct fy_tls_server *fy_tls_server_ref(struct fy_tls_server *t)
{
    __atomic_fetch_add(&t->refs, 1, __ATOMIC_RELAXED);
    return t;
}

void fy_tls_server_unref(struct fy_tls_server *t)
{
    if (!t || __atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (uint32_t c = 0; c < t->nctxs; c++)
        SSL_CTX_free(t->ctxs[c]);
    for (uint32_t i = 0; i < t->nexact; i++)
        free(t->exact[i].name);
    for (uint32_t i = 0; i < t->nwild; i++)
        free(t->wild[i].name);
    free(t->exact);
    free(t->wild);
    free(t->ctxs);
    free(t->names);
    free(t);
}

const char *fy_tls_server_names(const struct fy_tls_server *t)
{
    return t->names ? t->names : "";
}

/* ---- the client side ---- */

/* A new session for a connection to an upstream: kept in the connection's slot, so the next
 * connection to the same address resumes it (TLS 1.3 sends it after the handshake). */
static int on_new_session(SSL *s, SSL_SESSION *sess)
{
    struct fy_tls_session_slot *slot = SSL_get_ex_data(s, fy_tls_slot_index);
    if (!slot)
        return 0;
    SSL_SESSION_free(slot->sess);
    slot->sess = sess;
    return 1; /* we keep the reference */
}

struct fy_tls_client *fy_tls_client_new(const struct fy_tls_client_opts *o, char *err,
                                        size_t errlen)
{
    struct fy_tls_client *t = calloc(1, sizeof(*t));
    if (!t || !(t->ctx = SSL_CTX_new(TLS_client_method()))) {
        free(t);
        fy_tls_fail(err, errlen, "cannot create a TLS context (out of memory)");
        return NULL;
    }
    t->refs = 1;
    t->insecure = o->insecure_skip_verify;
    SSL_CTX *ctx = t->ctx;
    if (apply_protocol(ctx, o->min_version, o->ciphers, o->ciphersuites, NULL, err, errlen) < 0)
        goto fail;
    if (o->insecure_skip_verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (o->ca) {
            FILE *f = fopen(o->ca, "r");
            if (!f) {
                fy_tls_fail(err, errlen, "cannot read the CA file %s: %s", o->ca, strerror(errno));
                goto fail;
            }
            fclose(f);
            if (SSL_CTX_load_verify_locations(ctx, o->ca, NULL) != 1) {
                fy_tls_fail(err, errlen, "%s: no PEM CA certificate found", o->ca);
                goto fail;
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            fy_tls_fail(err, errlen,
                        "cannot load the system's CA certificates (install ca-certificates)");
            goto fail;
        }
    }
    if (o->cert || o->key) {
        X509 *x = NULL;
        EVP_PKEY *k = NULL;
        if (!o->cert || !o->key) {
            fy_tls_fail(err, errlen, "a client certificate needs both cert and key");
            goto fail;
        }
        if (read_cert(o->cert, &x, err, errlen) < 0)
            goto fail;
        X509_free(x);
        if (read_key(o->key, &k, err, errlen) < 0)
            goto fail;
        int ok = SSL_CTX_use_certificate_chain_file(ctx, o->cert) == 1 &&
                 SSL_CTX_use_PrivateKey(ctx, k) == 1;
        EVP_PKEY_free(k);
        if (!ok || SSL_CTX_check_private_key(ctx) != 1) {
            fy_tls_fail(err, errlen, "the key %s does not match the certificate %s", o->key,
                        o->cert);
            goto fail;
        }
    }
    SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x08http/1.1", 9);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    char id[1024];
    snprintf(id, sizeof(id), "ca=%s;cert=%s;key=%s;verify=%d;min=%s;c=%s;cs=%s",
             o->ca ? o->ca : "(system)", o->cert ? o->cert : "", o->key ? o->key : "",
             !o->insecure_skip_verify, o->min_version ? o->min_version : "",
             o->ciphers ? o->ciphers : "", o->ciphersuites ? o->ciphersuites : "");
    if (!(t->id = strdup(id))) {
        fy_tls_fail(err, errlen, "out of memory");
        goto fail;
    }
    return t;
fail:
    fy_tls_client_unref(t);
    return NULL;
}

struct fy_tls_client *fy_tls_client_ref(struct fy_tls_client *t)
{
    __atomic_fetch_add(&t->refs, 1, __ATOMIC_RELAXED);
    return t;
}

void fy_tls_client_unref(struct fy_tls_client *t)
{
    if (!t || __atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    SSL_CTX_free(t->ctx);
    free(t->id);
    free(t);
}

const char *fy_tls_client_id(const struct fy_tls_client *t)
{
    return t->id;
}

bool fy_tls_client_insecure(const struct fy_tls_client *t)
{
    return t->insecure;
}

struct fy_tls_session_slot *fy_tls_session_slot_new(void)
{
    return calloc(1, sizeof(struct fy_tls_session_slot));
}

void fy_tls_session_slot_free(struct fy_tls_session_slot *slot)
{
    if (!slot)
        return;
    SSL_SESSION_free(slot->sess);
    free(slot);
}

/* ---- shared with tls_ca.c and tls_mint.c (tls_priv.h) ---- */

int fy_tls_read_cert(const char *path, X509 **out, char *err, size_t errlen)
{
    return read_cert(path, out, err, errlen);
}

int fy_tls_read_key(const char *path, EVP_PKEY **out, char *err, size_t errlen)
{
    return read_key(path, out, err, errlen);
}

SSL_CTX *fy_tls_server_ctx_default(uint32_t session_cache_size, char *err, size_t errlen)
{
    return server_ctx_common(NULL, NULL, NULL, NULL, 0, session_cache_size, err, errlen);
}
