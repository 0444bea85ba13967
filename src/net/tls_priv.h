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
    struct fy_tls_server *server; /* one reference: accepted connections */
    struct fy_tls_client *client; /* one reference: connections to upstreams */
    bool handshake_done;
    bool failed;    /* a fatal error: no close_notify is possible */
    bool shut_sent; /* close_notify went out */
    char err[160];
};

/* SSL ex_data index: the connection's struct fy_tls_session_slot (client side). */
extern int fy_tls_slot_index;

/* The ticket-key callback every server context installs (tls_context.c). */
int fy_tls_ticket_cb(SSL *s, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                     EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc);

/* Writes OpenSSL's most recent error reason (or `fallback`) to buf. */
void fy_tls_reason(char *buf, size_t len, const char *fallback);

#endif
