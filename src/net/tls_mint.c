/*
 * Interception's certificates (tls.h): the intercept context (the CA from tls_ca.c, the leaf key
 * every minted certificate shares, the client-facing SSL_CTX) and the per-worker cache of minted
 * leaves.
 *
 * A leaf is minted in the client-hello callback, before OpenSSL picks a certificate: the name is
 * the SNI (read from the raw extension with the sniffer's parser) or the connection's fallback
 * name, the certificate comes from the worker's cache or is signed there and then, and is set on
 * that one SSL with the shared key and the CA as its chain. Everything constant across leaves
 * (the key, its identifiers, the extensions) is built once per context, so a mint is a few
 * small allocations and one ECDSA signature (see legacy_p256() for the key's part).
 *
 * The cache belongs to one worker thread: a hash table (SipHash, keyed per cache, so clients
 * choosing names cannot pile them into one chain) over an LRU list, bounded by count. Each entry
 * holds one reference to its X509; a handshake takes its own (SSL_use_cert_and_key), so an
 * eviction never frees a certificate a connection still uses.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "core/assert.h"
#include "net/tls_priv.h"
#include "net/tls_sniff.h"

#define LEAF_DAYS 397          /* from now; with the day before: 398 days, the CA/B Forum's cap */
#define RENEW_BEFORE_S 86400   /* a cached leaf this close to its notAfter is minted again */
#define MAX_BUCKETS (1u << 20) /* beyond this a bigger cache has longer chains, not more memory */
#define CN_MAX 64              /* ub-common-name (RFC 5280) */
#define MAX_LEAF_EXTS 5

struct fy_tls_intercept {
    int refs;    /* atomic */
    uint64_t id; /* unique per context: a cache filled for another one starts over */
    struct tls_ca ca;
    const EVP_MD *md;    /* the CA's signature digest; NULL for EdDSA keys, which take none */
    time_t ca_not_after; /* no leaf outlives its CA */
    EVP_PKEY *leaf_key;
    STACK_OF(X509) * chain;              /* the CA, sent after each leaf */
    X509_EXTENSION *exts[MAX_LEAF_EXTS]; /* the same in every leaf; each leaf gets copies */
    uint32_t nexts;
    SSL_CTX *ctx;
};

static _Atomic uint64_t next_intercept_id = 1;

/* ---- names ---- */

/* A name to mint for, normalised: the cache key, the CN and the SAN come from it. */
struct leaf_name {
    char text[FY_SNIFF_SNI_CAP]; /* lower-case host name, or the address as inet_ntop writes it */
    size_t len;
    int family; /* 0: a DNS name; AF_INET or AF_INET6: an IP literal */
    unsigned char ip[16];
};

static int parse_name(const char *in, struct leaf_name *n)
{
    char buf[FY_SNIFF_SNI_CAP + 2];
    size_t len = strnlen(in, sizeof(buf));
    if (len == 0 || len >= sizeof(buf))
        return -1;
    bool bracketed = len >= 2 && in[0] == '[' && in[len - 1] == ']';
    if (bracketed)
        memcpy(buf, in + 1, len -= 2);
    else
        memcpy(buf, in, len);
    buf[len] = '\0';
    *n = (struct leaf_name){0};
    if (!bracketed && inet_pton(AF_INET, buf, n->ip) == 1)
        n->family = AF_INET;
    else if (inet_pton(AF_INET6, buf, n->ip) == 1)
        n->family = AF_INET6;
    if (n->family) {
        if (!inet_ntop(n->family, n->ip, n->text, sizeof(n->text)))
            return -1;
        n->len = strlen(n->text);
        return 0;
    }
    if (bracketed)
        return -1; /* brackets hold an IPv6 address or nothing */
    if (len > 1 && buf[len - 1] == '.')
        len--; /* "example.com." is example.com */
    if (len > 253 || !fy_tls_sniff_host_valid(buf, len))
        return -1;
    for (size_t i = 0; i < len; i++)
        n->text[i] = (char)(buf[i] >= 'A' && buf[i] <= 'Z' ? buf[i] + 32 : buf[i]);
    n->text[len] = '\0';
    n->len = len;
    return 0;
}

/* A name from the network, safe to print: printable ASCII, at most 64 bytes. */
static void printable(char *out, size_t cap, const char *in)
{
    size_t i = 0;
    for (; in[i] && i < 64 && i + 1 < cap; i++)
        out[i] = (unsigned char)in[i] < 0x20 || (unsigned char)in[i] > 0x7e ? '?' : in[i];
    out[i] = '\0';
}

/* ---- minting ---- */

static GENERAL_NAMES *san_of(const struct leaf_name *n)
{
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_STRING *v = n->family ? ASN1_OCTET_STRING_new() : ASN1_IA5STRING_new();
    if (!gens || !g || !v)
        goto fail;
    if (n->family ? ASN1_OCTET_STRING_set(v, n->ip, n->family == AF_INET ? 4 : 16) != 1
                  : ASN1_STRING_set(v, n->text, (int)n->len) != 1)
        goto fail;
    GENERAL_NAME_set0_value(g, n->family ? GEN_IPADD : GEN_DNS, v);
    v = NULL;
    if (!sk_GENERAL_NAME_push(gens, g))
        goto fail;
    return gens;
fail:
    ASN1_STRING_free(v);
    GENERAL_NAME_free(g);
    sk_GENERAL_NAME_free(gens);
    return NULL;
}

/* A leaf for n, signed by t's CA; *renew_at: when a cache should mint it again. */
static X509 *mint(const struct fy_tls_intercept *t, const struct leaf_name *n, time_t now,
                  time_t *renew_at)
{
    X509 *x = X509_new();
    BIGNUM *serial = BN_new();
    X509_NAME *subject = X509_NAME_new();
    GENERAL_NAMES *san = san_of(n);
    X509 *ca = t->ca.cert;
    if (!x || !serial || !subject || !san || X509_set_version(x, X509_VERSION_3) != 1 ||
        BN_rand(serial, 128, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) != 1 ||
        !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) ||
        X509_set_issuer_name(x, X509_get_subject_name(ca)) != 1 ||
        X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_ASC,
                                   (const unsigned char *)n->text,
                                   (int)(n->len < CN_MAX ? n->len : CN_MAX), -1, 0) != 1 ||
        X509_set_subject_name(x, subject) != 1 ||
        !X509_time_adj_ex(X509_getm_notBefore(x), -1, 0, &now) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), LEAF_DAYS, 0, &now))
        goto fail;
    /* Within the CA's own validity: some verifiers require the nesting. */
    if (ASN1_TIME_compare(X509_get0_notBefore(x), X509_get0_notBefore(ca)) < 0 &&
        X509_set1_notBefore(x, X509_get0_notBefore(ca)) != 1)
        goto fail;
    time_t end = now + (time_t)LEAF_DAYS * 86400;
    if (ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(ca)) > 0) {
        if (X509_set1_notAfter(x, X509_get0_notAfter(ca)) != 1)
            goto fail;
        end = t->ca_not_after;
    }
    if (X509_set_pubkey(x, t->leaf_key) != 1) /* fast: see legacy_p256() */
        goto fail;
    for (uint32_t i = 0; i < t->nexts; i++)
        if (X509_add_ext(x, t->exts[i], -1) != 1)
            goto fail;
    if (X509_add1_ext_i2d(x, NID_subject_alt_name, san, 0, X509V3_ADD_DEFAULT) != 1 ||
        X509_sign(x, t->ca.key, t->md) <= 0)
        goto fail;
    BN_free(serial);
    X509_NAME_free(subject);
    GENERAL_NAMES_free(san);
    *renew_at = end - RENEW_BEFORE_S;
    return x;
fail:
    X509_free(x);
    BN_free(serial);
    X509_NAME_free(subject);
    GENERAL_NAMES_free(san);
    return NULL;
}

/* ---- the cache ---- */

struct lru_link {
    struct lru_link *prev, *next;
};

struct mint_entry {
    struct lru_link lru;               /* first: the entry is found from its link */
    struct mint_entry *hnext, **hprev; /* hash chain; *hprev points at this entry */
    X509 *cert;                        /* one reference */
    time_t renew_at;
    uint64_t hash;
    size_t len;
    char name[]; /* normalised (struct leaf_name.text) */
};

struct fy_tls_mint {
    struct mint_entry **buckets;
    uint64_t mask;
    uint32_t max, count;
    struct lru_link lru; /* lru.next: the most recently used; lru.prev: the next to go */
    uint64_t owner;      /* the intercept context the entries were minted for */
    uint64_t key[2];     /* SipHash key */
    struct fy_tls_mint_stats st;
};

/* SipHash-1-3 (Aumasson and Bernstein; the variant Rust's HashMap uses): a keyed hash, so the
 * chains stay short whatever names clients send. */
#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1, v1 = ROTL(v1, 13), v1 ^= v0, v0 = ROTL(v0, 32);                                  \
        v2 += v3, v3 = ROTL(v3, 16), v3 ^= v2;                                                     \
        v0 += v3, v3 = ROTL(v3, 21), v3 ^= v0;                                                     \
        v2 += v1, v1 = ROTL(v1, 17), v1 ^= v2, v2 = ROTL(v2, 32);                                  \
    } while (0)

static uint64_t siphash13(const uint64_t key[2], const char *p, size_t len)
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ key[0], v1 = 0x646f72616e646f6dULL ^ key[1];
    uint64_t v2 = 0x6c7967656e657261ULL ^ key[0], v3 = 0x7465646279746573ULL ^ key[1];
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t m;
        memcpy(&m, p + i, 8); /* little-endian hosts only matter for the value, not the spread */
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t j = 0; i + j < len; j++)
        b |= (uint64_t)(unsigned char)p[i + j] << (8 * j);
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

struct fy_tls_mint *fy_tls_mint_new(uint32_t max_entries)
{
    struct fy_tls_mint *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->max = max_entries ? max_entries : 1;
    uint64_t nb = 16;
    while (nb < m->max && nb < MAX_BUCKETS)
        nb <<= 1;
    m->mask = nb - 1;
    m->lru.prev = m->lru.next = &m->lru;
    if (!(m->buckets = calloc(nb, sizeof(*m->buckets))) ||
        RAND_bytes((unsigned char *)m->key, sizeof(m->key)) != 1) {
        free(m->buckets);
        free(m);
        return NULL;
    }
    return m;
}

static void lru_unlink(struct lru_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
}

static void lru_push_front(struct fy_tls_mint *m, struct lru_link *l)
{
    l->prev = &m->lru;
    l->next = m->lru.next;
    m->lru.next->prev = l;
    m->lru.next = l;
}

static void entry_drop(struct fy_tls_mint *m, struct mint_entry *e)
{
    lru_unlink(&e->lru);
    *e->hprev = e->hnext;
    if (e->hnext)
        e->hnext->hprev = e->hprev;
    X509_free(e->cert);
    free(e);
    m->count--;
}

static void drop_all(struct fy_tls_mint *m)
{
    while (m->lru.next != &m->lru)
        entry_drop(m, (struct mint_entry *)m->lru.next);
}

void fy_tls_mint_free(struct fy_tls_mint *m)
{
    if (!m)
        return;
    drop_all(m);
    free(m->buckets);
    free(m);
}

void fy_tls_mint_stats(const struct fy_tls_mint *m, struct fy_tls_mint_stats *out)
{
    *out = m->st;
    out->entries = m->count;
}

X509 *fy_tls_mint_get(struct fy_tls_mint *m, struct fy_tls_intercept *t, const char *name,
                      char *err, size_t errlen)
{
    struct leaf_name n;
    if (parse_name(name, &n) < 0) {
        char shown[65];
        printable(shown, sizeof(shown), name);
        snprintf(err, errlen,
                 "cannot mint a certificate for '%s': not a host name or an IP address", shown);
        return NULL;
    }
    if (m->owner != t->id) { /* filled for another context (another CA, another key) */
        drop_all(m);
        m->owner = t->id;
    }
    time_t now = time(NULL);
    uint64_t h = siphash13(m->key, n.text, n.len);
    struct mint_entry **bucket = &m->buckets[h & m->mask];
    for (struct mint_entry *e = *bucket; e; e = e->hnext) {
        if (e->hash != h || e->len != n.len || memcmp(e->name, n.text, n.len))
            continue;
        if (now >= e->renew_at) {
            entry_drop(m, e); /* close to its end: a fresh one below */
            break;
        }
        lru_unlink(&e->lru);
        lru_push_front(m, &e->lru);
        m->st.hits++;
        return e->cert;
    }
    struct mint_entry *e = malloc(sizeof(*e) + n.len + 1);
    if (!e || !(e->cert = mint(t, &n, now, &e->renew_at))) {
        char why[120];
        fy_tls_reason(why, sizeof(why), "out of memory");
        ERR_clear_error();
        free(e);
        char shown[65];
        printable(shown, sizeof(shown), n.text);
        snprintf(err, errlen, "cannot mint a certificate for %s: %s", shown, why);
        return NULL;
    }
    m->st.minted++;
    if (m->count >= m->max) {
        entry_drop(m, (struct mint_entry *)m->lru.prev);
        m->st.evicted++;
    }
    e->hash = h;
    e->len = n.len;
    memcpy(e->name, n.text, n.len + 1);
    e->hnext = *bucket;
    if (e->hnext)
        e->hnext->hprev = &e->hnext;
    e->hprev = bucket;
    *bucket = e;
    lru_push_front(m, &e->lru);
    m->count++;
    return e->cert;
}

/* ---- the intercept context ---- */

/* The certificate for this connection, chosen before anything else in the handshake. */
static int on_client_hello(SSL *s, int *alert, void *arg)
{
    struct fy_tls_intercept *t = arg;
    struct tls_conn *c = SSL_get_app_data(s);
    FY_ASSERT(c && c->intercept == t && c->mint);
    char sni[FY_SNIFF_SNI_CAP];
    const unsigned char *ext;
    size_t len;
    const char *name = c->fallback_name;
    if (SSL_client_hello_get0_ext(s, TLSEXT_TYPE_server_name, &ext, &len) == 1) {
        if (fy_tls_sniff_server_name_ext(ext, len, sni, sizeof(sni)) != FY_SNIFF_TLS) {
            snprintf(c->err, sizeof(c->err),
                     "cannot mint a certificate: the server name the client sent (SNI) is not a "
                     "valid host name");
            *alert = SSL_AD_UNRECOGNIZED_NAME;
            return SSL_CLIENT_HELLO_ERROR;
        }
        name = sni;
    }
    if (!name) {
        snprintf(c->err, sizeof(c->err),
                 "cannot mint a certificate: the client sent no server name (SNI) and the "
                 "connection has no fallback name");
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_CLIENT_HELLO_ERROR;
    }
    X509 *x = fy_tls_mint_get(c->mint, t, name, c->err, sizeof(c->err));
    if (!x) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    if (SSL_use_cert_and_key(s, x, t->leaf_key, t->chain, 1) != 1) {
        char why[60], shown[65]; /* both fit c->err */
        fy_tls_reason(why, sizeof(why), "unusable");
        printable(shown, sizeof(shown), name);
        snprintf(c->err, sizeof(c->err), "cannot mint a certificate for %s: %s", shown, why);
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

/*
 * The leaf key, ECDSA P-256, as an EC_KEY-backed ("legacy") EVP_PKEY, on purpose. OpenSSL 3.0
 * encodes a provider-native key for a certificate through its encoder framework and decodes the
 * result again: 185 us per X509_set_pubkey (as much for X509_dup or d2i of a certificate), five
 * times the cost of the whole rest of a mint, signature included (Debian 12's OpenSSL 3.0.x;
 * later versions cache their decoders). A legacy key takes the old pub_encode path, 6 us, and
 * the certificate keeps a reference to this very key. Handshakes use it through the providers as
 * any key (exported once, cached in the key). The only deprecated calls in ferry, kept here.
 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static EVP_PKEY *legacy_p256(void)
{
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    EVP_PKEY *k = EVP_PKEY_new();
    if (!ec || !k || EC_KEY_generate_key(ec) != 1 || EVP_PKEY_assign_EC_KEY(k, ec) != 1) {
        EC_KEY_free(ec);
        EVP_PKEY_free(k);
        return NULL;
    }
    return k; /* owns ec */
}
#pragma GCC diagnostic pop

static int add_leaf_ext(struct fy_tls_intercept *t, int nid, int crit, void *value)
{
    X509_EXTENSION *e = value ? X509V3_EXT_i2d(nid, crit, value) : NULL;
    if (!e)
        return -1;
    FY_ASSERT(t->nexts < MAX_LEAF_EXTS);
    t->exts[t->nexts++] = e;
    return 0;
}

/* basicConstraints CA:FALSE, keyUsage digitalSignature (ECDHE key exchange only needs a
 * signature), extendedKeyUsage serverAuth, the identifiers of the leaf key and of the CA's. */
static int leaf_exts(struct fy_tls_intercept *t)
{
    int rc = -1;
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
    ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
    EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
    ASN1_OCTET_STRING *ski = ASN1_OCTET_STRING_new();
    AUTHORITY_KEYID *aki = NULL;
    X509_PUBKEY *pub = NULL;
    const unsigned char *bits;
    int nbits;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen;
    if (!bc || !ku || !eku || !ski || ASN1_BIT_STRING_set_bit(ku, 0, 1) != 1 ||
        !sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth)))
        goto out;
    bc->ca = 0;
    /* RFC 5280 4.2.1.2, method 1: SHA-1 of the subjectPublicKey bits. */
    if (X509_PUBKEY_set(&pub, t->leaf_key) != 1 ||
        X509_PUBKEY_get0_param(NULL, &bits, &nbits, NULL, pub) != 1 ||
        EVP_Digest(bits, (size_t)nbits, md, &mdlen, EVP_sha1(), NULL) != 1 ||
        ASN1_OCTET_STRING_set(ski, md, (int)mdlen) != 1)
        goto out;
    /* Without the CA's subjectKeyIdentifier there is nothing to point at: no AKI then. */
    const ASN1_OCTET_STRING *ca_ski = X509_get0_subject_key_id(t->ca.cert);
    if (ca_ski && (!(aki = AUTHORITY_KEYID_new()) || !(aki->keyid = ASN1_OCTET_STRING_dup(ca_ski))))
        goto out;
    if (add_leaf_ext(t, NID_basic_constraints, 1, bc) < 0 ||
        add_leaf_ext(t, NID_key_usage, 1, ku) < 0 ||
        add_leaf_ext(t, NID_ext_key_usage, 0, eku) < 0 ||
        add_leaf_ext(t, NID_subject_key_identifier, 0, ski) < 0 ||
        (aki && add_leaf_ext(t, NID_authority_key_identifier, 0, aki) < 0))
        goto out;
    rc = 0;
out:
    BASIC_CONSTRAINTS_free(bc);
    ASN1_BIT_STRING_free(ku);
    sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
    ASN1_OCTET_STRING_free(ski);
    AUTHORITY_KEYID_free(aki);
    X509_PUBKEY_free(pub);
    return rc;
}

struct fy_tls_intercept *fy_tls_intercept_new(const struct fy_tls_intercept_opts *o, char *err,
                                              size_t errlen)
{
    if (!o->ca_cert != !o->ca_key) {
        snprintf(err, errlen, "ca-cert and ca-key go together: give both or neither");
        return NULL;
    }
    struct fy_tls_intercept *t = calloc(1, sizeof(*t));
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->refs = 1;
    t->id = atomic_fetch_add(&next_intercept_id, 1);
    if ((o->ca_cert ? fy_tls_ca_load(&t->ca, o->ca_cert, o->ca_key, err, errlen)
                    : fy_tls_ca_open(&t->ca, o->state_dir, err, errlen)) < 0) {
        free(t);
        return NULL;
    }
    int type = EVP_PKEY_get_base_id(t->ca.key);
    t->md = type == EVP_PKEY_ED25519 || type == EVP_PKEY_ED448 ? NULL : EVP_sha256();
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(t->ca.cert), &tm) != 1) {
        snprintf(err, errlen, "%s: the certificate's notAfter cannot be read", t->ca.cert_path);
        goto fail;
    }
    t->ca_not_after = timegm(&tm);
    bool chained = (t->chain = sk_X509_new_null()) && sk_X509_push(t->chain, t->ca.cert);
    if (chained)
        X509_up_ref(t->ca.cert); /* the chain's reference */
    if (!chained || !(t->leaf_key = legacy_p256()) || leaf_exts(t) < 0) {
        char why[120];
        fy_tls_reason(why, sizeof(why), "out of memory");
        snprintf(err, errlen, "cannot make the key for minted certificates: %s", why);
        goto fail;
    }
    if (!(t->ctx = fy_tls_server_ctx_default(0, err, errlen)))
        goto fail;
    /* Its own sessions: never resumed on a listener's context, nor a listener's here. */
    SSL_CTX_set_session_id_context(t->ctx, (const unsigned char *)"ferry-intercept", 15);
    SSL_CTX_set_client_hello_cb(t->ctx, on_client_hello, t);
    ERR_clear_error();
    return t;
fail:
    ERR_clear_error();
    fy_tls_intercept_unref(t);
    return NULL;
}

struct fy_tls_intercept *fy_tls_intercept_ref(struct fy_tls_intercept *t)
{
    __atomic_fetch_add(&t->refs, 1, __ATOMIC_RELAXED);
    return t;
}

void fy_tls_intercept_unref(struct fy_tls_intercept *t)
{
    if (!t || __atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    SSL_CTX_free(t->ctx);
    for (uint32_t i = 0; i < t->nexts; i++)
        X509_EXTENSION_free(t->exts[i]);
    sk_X509_pop_free(t->chain, X509_free);
    EVP_PKEY_free(t->leaf_key);
    fy_tls_ca_clear(&t->ca);
    free(t);
}

const char *fy_tls_intercept_ca_path(const struct fy_tls_intercept *t)
{
    return t->ca.cert_path;
}

SSL_CTX *fy_tls_intercept_ssl_ctx(struct fy_tls_intercept *t)
{
    return t->ctx;
}
