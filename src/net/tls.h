/*
 * TLS over a struct fy_sock, with OpenSSL 3. This header and net/tls*.c are the only places that
 * know about OpenSSL: everything above sees a transport (net/sock.h) plus the queries below.
 *
 * Two kinds of context (and interception's, below), built at configuration load (main thread)
 * and then only read:
 *  - struct fy_tls_server: what a TLS listener serves (certificates chosen by SNI, versions,
 *    ciphers, client certificates, ALPN, session tickets and cache). Shared by every worker.
 *  - struct fy_tls_client: how ferry speaks TLS to an upstream group (trust store, client
 *    certificate, versions). The name to send and verify is given per connection.
 * Both are reference-counted: a configuration generation holds one reference, and every TLS
 * connection started from a context holds one until it is closed, so a reload may free a
 * generation while its connections live on.
 *
 * Errors of the build functions are written to `err` as one sentence that names the file and
 * the reason ("cert.pem: the certificate expired on 2026-01-02 (notAfter)"); the caller adds
 * where in the configuration the file was named.
 */
#ifndef FY_TLS_H
#define FY_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fy_sock;

/* Once per process, before any other call (main thread). Returns 0, or -1 with `err` filled. */
int fy_tls_init(char *err, size_t errlen);

/* ---- the TLS server side (listeners) ---- */

struct fy_tls_cert_files {
    const char *cert; /* PEM: the certificate, then its chain */
    const char *key;  /* PEM private key (RSA or EC), unencrypted */
};

enum fy_tls_client_auth {
    FY_TLS_CLIENT_AUTH_NONE,
    FY_TLS_CLIENT_AUTH_OPTIONAL,
    FY_TLS_CLIENT_AUTH_REQUIRED
};

/* Every pointer is borrowed for the duration of the build call only. NULL = the default. */
struct fy_tls_server_opts {
    const struct fy_tls_cert_files *certs; /* at least one; the first is the default */
    uint32_t ncerts;
    const char *min_version;  /* "1.2" (default) or "1.3"; "1.0"/"1.1" allowed but logged */
    const char *ciphers;      /* TLS 1.2 and below, OpenSSL cipher-list syntax */
    const char *ciphersuites; /* TLS 1.3 */
    const char *groups;       /* key exchange groups, "X25519:P-256:P-384" */
    const char *client_ca;    /* PEM bundle; with client_auth != NONE */
    enum fy_tls_client_auth client_auth;
    uint64_t session_timeout_s;  /* ticket and cache lifetime; 0 = 3600 */
    uint32_t session_cache_size; /* entries; 0 = 20480 */
};

/* The documented defaults (docs/security.md). */
#define FY_TLS_DEFAULT_CIPHERS                                                                     \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define FY_TLS_DEFAULT_CIPHERSUITES                                                                \
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define FY_TLS_DEFAULT_GROUPS "X25519:P-256:P-384"

struct fy_tls_server;

/* Loads and checks every certificate and key (readable, key matches, not expired, names taken
 * from the SANs, or the CN when there are none), and builds the contexts. NULL on error. */
struct fy_tls_server *fy_tls_server_new(const struct fy_tls_server_opts *o, char *err,
                                        size_t errlen);
struct fy_tls_server *fy_tls_server_ref(struct fy_tls_server *t);
void fy_tls_server_unref(struct fy_tls_server *t); /* NULL is fine */

/* The names a server context serves, for messages: "a.example, *.b.example" (static storage of
 * the context). */
const char *fy_tls_server_names(const struct fy_tls_server *t);

/* ---- the TLS client side (upstreams) ---- */

struct fy_tls_client_opts {
    const char *ca;   /* PEM bundle to verify against; NULL = the system store */
    const char *cert; /* client certificate (mutual TLS towards the upstream); NULL = none */
    const char *key;
    bool insecure_skip_verify; /* no verification at all (logged loudly by the caller) */
    const char *min_version;   /* default "1.2" */
    const char *ciphers, *ciphersuites;
};

struct fy_tls_client;

struct fy_tls_client *fy_tls_client_new(const struct fy_tls_client_opts *o, char *err,
                                        size_t errlen);
struct fy_tls_client *fy_tls_client_ref(struct fy_tls_client *t);
void fy_tls_client_unref(struct fy_tls_client *t);

/* What makes two contexts interchangeable for a pooled connection: the files and settings, as
 * text (static storage of the context). Pools are keyed by it and the server name. */
const char *fy_tls_client_id(const struct fy_tls_client *t);
bool fy_tls_client_insecure(const struct fy_tls_client *t);

/* A slot that keeps the last TLS session of one upstream address, so a new connection resumes
 * it (per worker, in the connection pool: no locks). Owned by whoever made it. */
struct fy_tls_session_slot;
struct fy_tls_session_slot *fy_tls_session_slot_new(void);
void fy_tls_session_slot_free(struct fy_tls_session_slot *slot);

/* ---- connections ---- */

/* Switches a connected socket (just accepted) to TLS as the server. The handshake then runs
 * with fy_sock_handshake(). Returns 0 or -ENOMEM. */
int fy_tls_accept(struct fy_sock *s, struct fy_tls_server *t);

/* Switches a socket whose TCP connect completed to TLS as the client, sending `name` as SNI
 * (unless it is an IP literal) and verifying the certificate against it. `slot` (may be NULL)
 * offers the last session for resumption and receives the new ones; it must outlive the
 * connection. Returns 0 or -ENOMEM. */
int fy_tls_connect(struct fy_sock *s, struct fy_tls_client *t, const char *name,
                   struct fy_tls_session_slot *slot);

/* Whether the socket speaks TLS. */
bool fy_tls_active(const struct fy_sock *s);

/* After a failed handshake: why, for a person ("certificate verify failed: certificate has
 * expired", "wrong version number", "peer did not return a certificate"). Static storage of
 * the connection; empty if nothing is known. */
const char *fy_tls_error(const struct fy_sock *s);

/* After the handshake. NULL/0/false for a plain socket. */
const char *fy_tls_version(const struct fy_sock *s);     /* "TLSv1.3" */
const char *fy_tls_cipher(const struct fy_sock *s);      /* "TLS_AES_128_GCM_SHA256" */
const char *fy_tls_server_name(const struct fy_sock *s); /* SNI the client sent, or NULL */
bool fy_tls_resumed(const struct fy_sock *s);
/* The verified client certificate (mutual TLS). Subject as an RFC 2253 string, SHA-256
 * fingerprint as 64 lower-case hex digits. Return the length written (0: no certificate). */
size_t fy_tls_peer_subject(const struct fy_sock *s, char *buf, size_t len);
size_t fy_tls_peer_fingerprint(const struct fy_sock *s, char *buf, size_t len);
/* "SUCCESS" (a verified certificate), "NONE" (none sent), or "FAILED: reason". */
const char *fy_tls_peer_verify(const struct fy_sock *s, char *buf, size_t len);

/* ---- HTTPS interception (tls_ca.c, tls_mint.c) ---- */

/*
 * A forward proxy that intercepts a CONNECT tunnel terminates the client's TLS itself, with a
 * leaf certificate minted on the fly for the name the client asked for and signed by a CA the
 * client was told to trust: the user's (ca_cert/ca_key) or ferry's own, generated on first use
 * in a state directory.
 */

/* The state directory's default: $XDG_STATE_HOME/ferry when that is set (absolute), else
 * /var/lib/ferry for root, else $HOME/.local/state/ferry. Writes it to buf; 0, or -1 with err
 * filled (no usable variable, or longer than len). */
int fy_tls_state_dir_default(char *buf, size_t len, char *err, size_t errlen);

/* The generated CA's files in the state directory (the key is mode 0600). */
#define FY_TLS_CA_CERT_FILE "ferry-ca.pem"
#define FY_TLS_CA_KEY_FILE "ferry-ca-key.pem"

/* Borrowed for the duration of fy_tls_intercept_new only. */
struct fy_tls_intercept_opts {
    const char *ca_cert, *ca_key; /* PEM; both or neither (then the state directory's CA) */
    const char *state_dir;        /* NULL = fy_tls_state_dir_default() */
};

/* The CA, the leaf key every minted certificate shares (ECDSA P-256, made here, one per
 * context as mitmproxy does) and the client-facing SSL_CTX (the listeners' TLS defaults, ALPN
 * http/1.1). Reference-counted like fy_tls_server: the caller holds one reference, and each
 * intercepted connection one until it is closed. */
struct fy_tls_intercept;

/* Loads and checks the given CA (readable, key matches, a CA allowed to sign certificates, not
 * expired), or opens the state directory's, generating it when there is none (the directory is
 * created 0700; concurrent starts end with one pair). Needs fy_tls_init(). NULL on error, with
 * err one sentence naming the file and the reason. Main thread (it may block on disk and on a
 * lock another ferry holds while it generates the CA). */
struct fy_tls_intercept *fy_tls_intercept_new(const struct fy_tls_intercept_opts *o, char *err,
                                              size_t errlen);
struct fy_tls_intercept *fy_tls_intercept_ref(struct fy_tls_intercept *t);
void fy_tls_intercept_unref(struct fy_tls_intercept *t); /* NULL is fine */

/* The CA certificate's path (for messages and `ferry ca`); storage of the context. */
const char *fy_tls_intercept_ca_path(const struct fy_tls_intercept *t);

/* A cache of minted certificates, name -> certificate, for one worker: used by one thread only
 * (no lock), bounded to max_entries (0 is taken as 1), least recently used out first. A
 * connection keeps its own reference to its certificate, so eviction never pulls one from under
 * a handshake. Filled for one intercept context at a time: used with another (a reload with a
 * new CA), it starts over. Owned by its creator; NULL when out of memory. */
struct fy_tls_mint;
struct fy_tls_mint *fy_tls_mint_new(uint32_t max_entries);
void fy_tls_mint_free(struct fy_tls_mint *m); /* NULL is fine */

struct fy_tls_mint_stats {
    uint64_t minted;  /* certificates signed (misses, and entries near their expiry) */
    uint64_t hits;    /* certificates served from the cache */
    uint64_t evicted; /* entries dropped to stay within the bound */
    uint32_t entries; /* held now */
};
void fy_tls_mint_stats(const struct fy_tls_mint *m, struct fy_tls_mint_stats *out);

/* Switches an accepted (or tunnelled) socket to TLS as the server, with a certificate minted for
 * the SNI the client sends or, when it sends none, for fallback_name (the CONNECT host; copied;
 * NULL: a client without SNI fails the handshake). Names: a host name, or an IPv4/IPv6 literal
 * (also "[::1]"), which gets an IP SAN. m must stay valid until the handshake ends. Then
 * fy_sock_handshake() as usual; a certificate that cannot be minted fails it with
 * fy_tls_error() "cannot mint a certificate for NAME: reason". Returns 0 or -ENOMEM. */
int fy_tls_accept_intercept(struct fy_sock *s, struct fy_tls_intercept *t, struct fy_tls_mint *m,
                            const char *fallback_name);

/* ---- session tickets ---- */

/* Ticket keys are process-wide, so every worker (and every generation) decrypts what any other
 * issued. Rotation (main thread, every FY_TLS_TICKET_ROTATE_S): a new key encrypts, the previous
 * FY_TLS_TICKET_KEYS - 1 still decrypt, so a ticket is honoured for 24 hours at least (within
 * its session timeout), and a key stolen from memory opens at most a day of past sessions. */
#define FY_TLS_TICKET_ROTATE_S 3600
#define FY_TLS_TICKET_KEYS 25
void fy_tls_rotate_ticket_keys(void);

/* Frees the process-wide state (at exit, for the leak checkers). */
void fy_tls_shutdown(void);

#endif
