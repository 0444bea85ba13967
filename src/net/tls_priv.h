/*
 * What net/tls.c (connections) and net/tls_context.c (contexts, certificates, tickets) share.
 * Only for src/net/tls*.c: OpenSSL stays inside these files.
 */
#ifndef FY_TLS_PRIV_H
#define FY_TLS_PRIV_H

#include <openssl/ssl.h>

#include "net/tls.h"

/* One SSL_CTX per set of names: a certificate entry's names (its SANs) select it by SNI, and an
 * RSA and an ECDSA certificate with the same names share it (OpenSSL then picks the one the
 * client's signature algorithms allow). */
struct tls_sni_entry {
    char *name; /* lower case; a wildcard is stored without its "*." */
    SSL_CTX *ctx;
};

struct fy_tls_server {
    int refs;       /* atomic */
    SSL_CTX *def;   /* the first certificate's context: clients without (or with unknown) SNI; its
                       session cache serves the listener whatever context SNI switched to */
    SSL_CTX **ctxs; /* every context, def first (each holds one reference) */
    uint32_t nctxs;
    struct tls_sni_entry *exact, *wild; /* sorted by name */
    uint32_t nexact, nwild;
    char *names; /* for messages */
};

struct fy_tls_client {
    int refs; /* atomic */
    SSL_CTX *ctx;
    bool insecure;
    char *id;
};

struct fy_tls_session_slot {
    SSL_SESSION *sess; /* one reference, or NULL */
};

/* Per connection (struct fy_sock.ctx). */
struct tls_conn {
    SSL *ssl;
    struct fy_tls_server *server;       /* one reference: accepted connections */
    struct fy_tls_client *client;       /* one reference: connections to upstreams */
    struct fy_tls_intercept *intercept; /* one reference: intercepted connections (tls_mint.c) */
    struct fy_tls_mint *mint;           /* borrowed, intercepted: the worker's cache */
    char *fallback_name;                /* owned, intercepted: the name without SNI, or NULL */
    bool handshake_done;
    bool failed;    /* a fatal error: no close_notify is possible */
    bool shut_sent; /* close_notify went out */
    bool drained;   /* the last read(2) returned less than asked: the socket was emptied */
    char err[160];
};

/* SSL ex_data index: the connection's struct fy_tls_session_slot (client side). */
extern int fy_tls_slot_index;

/* The ticket-key callback every server context installs (tls_context.c). */
int fy_tls_ticket_cb(SSL *s, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                     EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc);

/* Writes the message to err, drops OpenSSL's queued errors, and returns -1 (the build
 * functions' failure). */
int fy_tls_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes OpenSSL's most recent error reason (or `fallback`) to buf. */
void fy_tls_reason(char *buf, size_t len, const char *fallback);

/* ---- shared by tls_context.c with tls_ca.c and tls_mint.c (interception) ---- */

/* Reads one PEM certificate (refused when expired) or an unencrypted PEM key; errors as
 * fy_tls_server_new's ("cannot read the certificate F: ...", "F: the certificate expired ...").
 * 0 with *out owned by the caller, or -1 with err filled. */
int fy_tls_read_cert(const char *path, X509 **out, char *err, size_t errlen);
int fy_tls_read_key(const char *path, EVP_PKEY **out, char *err, size_t errlen);

/* A server SSL_CTX with a listener's defaults: TLS 1.2+, the default ciphers, suites and
 * groups, no renegotiation or compression, server preference, session tickets with the
 * process-wide keys, a server session cache of session_cache_size (0 = 20480), ALPN http/1.1.
 * No certificate. NULL with err filled. The caller owns the context. */
SSL_CTX *fy_tls_server_ctx_default(uint32_t session_cache_size, char *err, size_t errlen);

/* The interception CA (tls_ca.c): a certificate allowed to sign others, and its key. */
struct tls_ca {
    X509 *cert;
    EVP_PKEY *key;
    char *cert_path, *key_path; /* as loaded or written; for messages */
};

/* Loads a given pair and checks it: readable, not expired, the key matches, a CA
 * (basicConstraints CA:TRUE; keyCertSign when keyUsage is present). 0, or -1 with err one
 * sentence naming the file. On success ca owns what it holds: fy_tls_ca_clear(). */
int fy_tls_ca_load(struct tls_ca *ca, const char *cert, const char *key, char *err, size_t errlen);

/* The CA of a state directory (NULL = fy_tls_state_dir_default()): ferry-ca.pem and
 * ferry-ca-key.pem there, loaded and checked as above, or generated first when there is no
 * certificate yet (see tls_ca.c for how concurrent starts agree). 0 or -1 with err filled. */
int fy_tls_ca_open(struct tls_ca *ca, const char *state_dir, char *err, size_t errlen);

void fy_tls_ca_clear(struct tls_ca *ca);

/* The client-facing context of an intercept context (tls_mint.c); its client-hello callback
 * finds the connection's struct tls_conn with SSL_get_app_data(). */
SSL_CTX *fy_tls_intercept_ssl_ctx(struct fy_tls_intercept *t);

/* The certificate for `name` (a host name or IP literal), from m or minted on a miss for t's CA
 * and leaf key. Borrowed: m holds it until it is evicted, so take a reference (X509_up_ref, as
 * SSL_use_certificate does) before the next call on m. NULL with err "cannot mint a certificate
 * for NAME: reason". */
X509 *fy_tls_mint_get(struct fy_tls_mint *m, struct fy_tls_intercept *t, const char *name,
                      char *err, size_t errlen);

#endif
