/*
 * Unit tests for src/net/tls_ca.c and src/net/tls_mint.c: the generated CA (files, modes, the
 * certificate's fields, reuse, concurrent first starts), given CAs and the ones refused, minted
 * leaves verified by OpenSSL against the CA only (DNS and IP names), the LRU bound, and full
 * handshakes through fy_tls_accept_intercept with an OpenSSL client that trusts only the CA.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "net/sock.h"
#include "net/tls.h"
#include "net/tls_mint.c" /* the struct fy_tls_intercept inside */

static char tmp[64];

static void init(void)
{
    char err[256];
    cr_assert_eq(fy_tls_init(err, sizeof(err)), 0, "%s", err);
    strcpy(tmp, "/tmp/ferry-mint-XXXXXX");
    cr_assert_not_null(mkdtemp(tmp));
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static void fini(void)
{
    nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    fy_tls_shutdown();
}

TestSuite(tls_mint, .init = init, .fini = fini);

static char *path(const char *rel)
{
    static char bufs[4][512];
    static int i;
    char *b = bufs[i++ % 4];
    snprintf(b, sizeof(bufs[0]), "%s/%s", tmp, rel);
    return b;
}

static X509 *load_cert(const char *file)
{
    FILE *f = fopen(file, "r");
    cr_assert_not_null(f, "%s: %s", file, strerror(errno));
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    cr_assert_not_null(x);
    return x;
}

static struct fy_tls_intercept *open_dir(const char *dir)
{
    char err[256] = "";
    struct fy_tls_intercept_opts o = {.state_dir = dir};
    struct fy_tls_intercept *t = fy_tls_intercept_new(&o, err, sizeof(err));
    cr_assert_not_null(t, "%s", err);
    return t;
}

/* ---- the generated CA ---- */

Test(tls_mint, generated_ca_files_modes_and_fields)
{
    const char *dir = path("a/b/state");
    struct fy_tls_intercept *t = open_dir(dir);
    cr_assert_str_eq(fy_tls_intercept_ca_path(t), path("a/b/state/ferry-ca.pem"));
    struct stat st;
    cr_assert_eq(stat(dir, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0700, "the state directory: %o", st.st_mode & 0777);
    cr_assert_eq(stat(path("a"), &st), 0);
    cr_assert_eq(st.st_mode & 0077, 0, "parents are private too");
    cr_assert_eq(stat(path("a/b/state/ferry-ca-key.pem"), &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "the key: %o", st.st_mode & 0777);
    cr_assert_eq(stat(path("a/b/state/ferry-ca.pem"), &st), 0);
    cr_assert_eq(st.st_mode & 0077 & ~0044, 0);
    cr_assert_neq(stat(path("a/b/state/ferry-ca.pem.tmp"), &st), 0, "no temporary left");

    X509 *x = load_cert(fy_tls_intercept_ca_path(t));
    cr_assert_eq(X509_get_version(x), X509_VERSION_3);
    cr_assert_eq(X509_check_issued(x, x), X509_V_OK, "self-signed");
    uint32_t fl = X509_get_extension_flags(x);
    cr_assert(fl & EXFLAG_CA);
    cr_assert_eq(X509_get_pathlen(x), 0);
    cr_assert_eq(X509_get_key_usage(x), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
    int crit = -1;
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
    cr_assert_eq(crit, 1);
    BASIC_CONSTRAINTS_free(bc);
    ASN1_BIT_STRING *ku = X509_get_ext_d2i(x, NID_key_usage, &crit, NULL);
    cr_assert_eq(crit, 1);
    ASN1_BIT_STRING_free(ku);
    cr_assert_not_null(X509_get0_subject_key_id(x));
    char cn[128], o[64];
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_organizationName, o, sizeof(o));
    cr_assert(!strncmp(cn, "ferry interception CA (", 23) && cn[strlen(cn) - 1] == ')', "%s", cn);
    cr_assert_leq(strlen(cn), 64);
    cr_assert_str_eq(o, "ferry");
    BIGNUM *sn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    cr_assert_eq(BN_num_bits(sn), 128);
    cr_assert_not(BN_is_negative(sn));
    BN_free(sn);
    EVP_PKEY *k = X509_get0_pubkey(x);
    char group[32];
    cr_assert_eq(EVP_PKEY_get_base_id(k), EVP_PKEY_EC);
    cr_assert_eq(EVP_PKEY_get_group_name(k, group, sizeof(group), NULL), 1);
    cr_assert_str_eq(group, "prime256v1");
    int days, secs;
    cr_assert_eq(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notBefore(x)), 1);
    cr_assert(days == -1 || (days == 0 && secs <= -86390), "notBefore: now - 1 day (%d)", days);
    cr_assert_eq(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)), 1);
    cr_assert(days >= 3651 && days <= 3653, "ten years: %d days", days);
    X509_free(x);
    fy_tls_intercept_unref(t);
}

Test(tls_mint, the_pair_is_reused)
{
    struct fy_tls_intercept *a = open_dir(path("s"));
    X509 *x = load_cert(fy_tls_intercept_ca_path(a));
    fy_tls_intercept_unref(a);
    struct fy_tls_intercept *b = open_dir(path("s"));
    X509 *y = load_cert(fy_tls_intercept_ca_path(b));
    cr_assert_eq(X509_cmp(x, y), 0, "the second start loads the first one's CA");
    X509_free(x);
    X509_free(y);
    fy_tls_intercept_unref(b);
}

Test(tls_mint, an_orphaned_key_is_replaced)
{
    /* A crash after the key was published and before the certificate was. */
    cr_assert_eq(mkdir(path("orphan"), 0700), 0);
    int fd = open(path("orphan/ferry-ca-key.pem"), O_WRONLY | O_CREAT, 0600);
    cr_assert_eq(write(fd, "junk\n", 5), 5);
    close(fd);
    struct fy_tls_intercept *t = open_dir(path("orphan"));
    fy_tls_intercept_unref(t);
    t = open_dir(path("orphan")); /* loads: the new key matches the new certificate */
    fy_tls_intercept_unref(t);
}

Test(tls_mint, concurrent_first_starts_agree_on_one_pair)
{
    enum { N = 4 };
    int fds[N][2];
    pid_t pids[N];
    const char *dir = path("race");
    for (int i = 0; i < N; i++) {
        cr_assert_eq(pipe(fds[i]), 0);
        pids[i] = fork();
        cr_assert_geq(pids[i], 0);
        if (pids[i] == 0) {
            char err[256];
            struct fy_tls_intercept_opts o = {.state_dir = dir};
            struct fy_tls_intercept *t = fy_tls_intercept_new(&o, err, sizeof(err));
            unsigned char md[32] = {0};
            unsigned len = 0;
            if (t)
                X509_digest(t->ca.cert, EVP_sha256(), md, &len);
            _exit(write(fds[i][1], md, sizeof(md)) == sizeof(md) && t ? 0 : 1);
        }
        close(fds[i][1]);
    }
    unsigned char got[N][32];
    for (int i = 0; i < N; i++) {
        int status;
        cr_assert_eq(read(fds[i][0], got[i], 32), 32);
        close(fds[i][0]);
        cr_assert_eq(waitpid(pids[i], &status, 0), pids[i]);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d failed", i);
    }
    X509 *x = load_cert(path("race/ferry-ca.pem"));
    unsigned char md[32];
    unsigned len;
    X509_digest(x, EVP_sha256(), md, &len);
    X509_free(x);
    for (int i = 0; i < N; i++)
        cr_assert_eq(memcmp(got[i], md, 32), 0, "child %d uses another CA than the file's", i);
    struct fy_tls_intercept *t = open_dir(dir);
    fy_tls_intercept_unref(t);
}

Test(tls_mint, default_state_dir)
{
    char buf[256], err[256];
    setenv("XDG_STATE_HOME", "/x/state", 1);
    cr_assert_eq(fy_tls_state_dir_default(buf, sizeof(buf), err, sizeof(err)), 0);
    cr_assert_str_eq(buf, "/x/state/ferry");
    setenv("XDG_STATE_HOME", "relative", 1); /* invalid per the spec: ignored */
    setenv("HOME", "/home/u", 1);
    cr_assert_eq(fy_tls_state_dir_default(buf, sizeof(buf), err, sizeof(err)), 0);
    cr_assert_str_eq(buf, geteuid() == 0 ? "/var/lib/ferry" : "/home/u/.local/state/ferry");
    unsetenv("XDG_STATE_HOME");
    unsetenv("HOME");
    if (geteuid() != 0) {
        cr_assert_eq(fy_tls_state_dir_default(buf, sizeof(buf), err, sizeof(err)), -1);
        cr_assert(strstr(err, "HOME"), "%s", err);
    }
    cr_assert_eq(fy_tls_state_dir_default(buf, 4, err, sizeof(err)), -1, "too long");
}

/* ---- given CAs ---- */

/* A self-signed certificate: a CA with basicConstraints CA:TRUE (ca), optionally a keyUsage,
 * valid from `from` to `to` days from now. */
static X509 *make_cert(EVP_PKEY *k, bool ca, const char *ku, int from, int to)
{
    X509 *x = X509_new();
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"test CA", -1, -1, 0);
    X509_set_issuer_name(x, n);
    X509_gmtime_adj(X509_getm_notBefore(x), (long)from * 86400);
    X509_gmtime_adj(X509_getm_notAfter(x), (long)to * 86400);
    X509_set_pubkey(x, k);
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *e =
        X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    if (ku) {
        e = X509V3_EXT_conf_nid(NULL, &v3, NID_key_usage, ku);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    e = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_key_identifier, "hash");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    cr_assert_gt(X509_sign(x, k, EVP_sha256()), 0);
    return x;
}

static void write_pem(const char *file, X509 *x, EVP_PKEY *k)
{
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    cr_assert_eq(x ? PEM_write_X509(f, x) : PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL),
                 1);
    fclose(f);
    chmod(file, 0600);
}

static struct fy_tls_intercept *given(const char *cert, const char *key, char *err, size_t len)
{
    struct fy_tls_intercept_opts o = {.ca_cert = cert, .ca_key = key};
    return fy_tls_intercept_new(&o, err, len);
}

Test(tls_mint, a_given_ca_is_loaded)
{
    EVP_PKEY *k = EVP_RSA_gen(2048);
    X509 *x = make_cert(k, true, "critical,keyCertSign,cRLSign", -1, 30);
    write_pem(path("rsa-ca.pem"), x, NULL);
    write_pem(path("rsa-ca.key"), NULL, k);
    char err[256] = "";
    struct fy_tls_intercept *t = given(path("rsa-ca.pem"), path("rsa-ca.key"), err, sizeof(err));
    cr_assert_not_null(t, "%s", err);
    cr_assert_str_eq(fy_tls_intercept_ca_path(t), path("rsa-ca.pem"));
    /* its leaves are signed by it, and never outlive it */
    struct fy_tls_mint *m = fy_tls_mint_new(4);
    X509 *leaf = fy_tls_mint_get(m, t, "given.example", err, sizeof(err));
    cr_assert_not_null(leaf, "%s", err);
    cr_assert_eq(X509_check_issued(x, leaf), X509_V_OK);
    cr_assert_eq(X509_verify(leaf, k), 1);
    cr_assert_eq(ASN1_TIME_compare(X509_get0_notAfter(leaf), X509_get0_notAfter(x)), 0);
    fy_tls_mint_free(m);
    fy_tls_intercept_unref(t);
    X509_free(x);
    EVP_PKEY_free(k);
}

static void refused(const char *cert, const char *key, const char *what, const char *named)
{
    char err[256] = "";
    struct fy_tls_intercept *t = given(cert, key, err, sizeof(err));
    cr_assert_null(t, "accepted: %s", what);
    cr_assert(strstr(err, what), "expected '%s' in: %s", what, err);
    if (named)
        cr_assert(strstr(err, named), "expected the file %s named in: %s", named, err);
}

Test(tls_mint, bad_cas_are_refused_with_the_file_named)
{
    EVP_PKEY *k = EVP_EC_gen("P-256"), *other = EVP_EC_gen("P-256");
    write_pem(path("ca.key"), NULL, k);
    write_pem(path("other.key"), NULL, other);
    X509 *leaf = make_cert(k, false, NULL, -1, 30);
    write_pem(path("leaf.pem"), leaf, NULL);
    X509 *expired = make_cert(k, true, NULL, -30, -1);
    write_pem(path("expired.pem"), expired, NULL);
    X509 *nosign = make_cert(k, true, "critical,digitalSignature", -1, 30);
    write_pem(path("nosign.pem"), nosign, NULL);
    X509 *good = make_cert(k, true, NULL, -1, 30);
    write_pem(path("good.pem"), good, NULL);
    refused(path("leaf.pem"), path("ca.key"), "is not a CA", path("leaf.pem"));
    refused(path("expired.pem"), path("ca.key"), "expired", path("expired.pem"));
    refused(path("nosign.pem"), path("ca.key"), "keyCertSign", path("nosign.pem"));
    refused(path("good.pem"), path("other.key"), "does not match", path("other.key"));
    refused(path("missing.pem"), path("ca.key"), "cannot read the certificate",
            path("missing.pem"));
    refused(path("good.pem"), path("missing.key"), "cannot read the key", path("missing.key"));
    refused(path("ca.key"), path("ca.key"), "no PEM certificate", path("ca.key"));
    refused(path("good.pem"), NULL, "both or neither", NULL);
    /* and the good one is fine */
    char err[256];
    struct fy_tls_intercept *t = given(path("good.pem"), path("ca.key"), err, sizeof(err));
    cr_assert_not_null(t, "%s", err);
    fy_tls_intercept_unref(t);
    X509_free(leaf);
    X509_free(expired);
    X509_free(nosign);
    X509_free(good);
    EVP_PKEY_free(k);
    EVP_PKEY_free(other);
}

/* ---- minted leaves ---- */

/* X509_verify_cert against the CA alone, as a TLS server certificate for host or ip. */
static int verify_leaf(X509 *ca, X509 *leaf, const char *host, const char *ip)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_add_cert(store, ca);
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, store, leaf, NULL);
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
    X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_flags(vp, X509_V_FLAG_X509_STRICT);
    if (host)
        X509_VERIFY_PARAM_set1_host(vp, host, 0);
    if (ip)
        X509_VERIFY_PARAM_set1_ip_asc(vp, ip);
    int ok = X509_verify_cert(ctx);
    int e = X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return ok == 1 ? X509_V_OK : e;
}

static BIGNUM *serial_of(X509 *x)
{
    return ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
}

Test(tls_mint, a_leaf_for_a_dns_name)
{
    struct fy_tls_intercept *t = open_dir(path("s"));
    X509 *ca = load_cert(fy_tls_intercept_ca_path(t));
    struct fy_tls_mint *m = fy_tls_mint_new(8);
    char err[200];
    X509 *x = fy_tls_mint_get(m, t, "Www.Example.COM.", err, sizeof(err));
    cr_assert_not_null(x, "%s", err);
    cr_assert_eq(verify_leaf(ca, x, "www.example.com", NULL), X509_V_OK);
    cr_assert_neq(verify_leaf(ca, x, "other.example.com", NULL), X509_V_OK, "negative control");
    /* the fields */
    char cn[128];
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
    cr_assert_str_eq(cn, "www.example.com");
    cr_assert_eq(X509_NAME_cmp(X509_get_issuer_name(x), X509_get_subject_name(ca)), 0);
    GENERAL_NAMES *san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    cr_assert_eq(sk_GENERAL_NAME_num(san), 1);
    GENERAL_NAME *g = sk_GENERAL_NAME_value(san, 0);
    cr_assert_eq(g->type, GEN_DNS);
    cr_assert_str_eq((const char *)ASN1_STRING_get0_data(g->d.dNSName), "www.example.com");
    GENERAL_NAMES_free(san);
    uint32_t fl = X509_get_extension_flags(x);
    cr_assert_not(fl & EXFLAG_CA);
    cr_assert_eq(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE);
    cr_assert_eq(X509_get_extended_key_usage(x), XKU_SSL_SERVER);
    int crit = -1;
    ASN1_BIT_STRING *ku = X509_get_ext_d2i(x, NID_key_usage, &crit, NULL);
    cr_assert_eq(crit, 1, "keyUsage is critical");
    ASN1_BIT_STRING_free(ku);
    cr_assert_eq(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(x), X509_get0_subject_key_id(ca)),
                 0);
    cr_assert_not_null(X509_get0_subject_key_id(x));
    BIGNUM *sn = serial_of(x);
    cr_assert_eq(BN_num_bits(sn), 128);
    BN_free(sn);
    int days, secs;
    cr_assert_eq(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)), 1);
    cr_assert_eq(days, 398, "now - 1 day to now + 397 days: %d", days);
    cr_assert_eq(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
    char group[32];
    cr_assert_eq(EVP_PKEY_get_group_name(X509_get0_pubkey(x), group, sizeof(group), NULL), 1);
    cr_assert_str_eq(group, "prime256v1");
    /* one key per context: a second leaf has the same public key */
    X509 *y = fy_tls_mint_get(m, t, "b.example", err, sizeof(err));
    cr_assert_eq(EVP_PKEY_eq(X509_get0_pubkey(x), X509_get0_pubkey(y)), 1);
    /* a name in the cache is the same certificate */
    cr_assert_eq(fy_tls_mint_get(m, t, "www.example.com", err, sizeof(err)), x);
    struct fy_tls_mint_stats st;
    fy_tls_mint_stats(m, &st);
    cr_assert_eq(st.minted, 2);
    cr_assert_eq(st.hits, 1);
    cr_assert_eq(st.entries, 2);
    fy_tls_mint_free(m);
    X509_free(ca);
    fy_tls_intercept_unref(t);
}

Test(tls_mint, a_leaf_for_an_ip_literal)
{
    struct fy_tls_intercept *t = open_dir(path("s"));
    X509 *ca = load_cert(fy_tls_intercept_ca_path(t));
    struct fy_tls_mint *m = fy_tls_mint_new(8);
    char err[200];
    static const struct {
        const char *in, *ip;
        int len;
    } cases[] = {{"127.0.0.1", "127.0.0.1", 4},
                 {"::1", "::1", 16},
                 {"[2001:DB8::1]", "2001:db8::1", 16},
                 {"::ffff:10.0.0.1", "::ffff:10.0.0.1", 16}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        X509 *x = fy_tls_mint_get(m, t, cases[i].in, err, sizeof(err));
        cr_assert_not_null(x, "%s", err);
        cr_assert_eq(verify_leaf(ca, x, NULL, cases[i].ip), X509_V_OK, "%s", cases[i].in);
        cr_assert_neq(verify_leaf(ca, x, NULL, "192.0.2.1"), X509_V_OK);
        GENERAL_NAMES *san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
        GENERAL_NAME *g = sk_GENERAL_NAME_value(san, 0);
        cr_assert_eq(g->type, GEN_IPADD);
        cr_assert_eq(ASN1_STRING_length(g->d.iPAddress), cases[i].len);
        GENERAL_NAMES_free(san);
    }
    /* "[::1]" is "::1" */
    X509 *a = fy_tls_mint_get(m, t, "::1", err, sizeof(err));
    cr_assert_eq(fy_tls_mint_get(m, t, "[::1]", err, sizeof(err)), a);
    fy_tls_mint_free(m);
    X509_free(ca);
    fy_tls_intercept_unref(t);
}

Test(tls_mint, bad_names_are_refused)
{
    struct fy_tls_intercept *t = open_dir(path("s"));
    struct fy_tls_mint *m = fy_tls_mint_new(8);
    char long_name[300];
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    for (int i = 60; i < 290; i += 61)
        long_name[i] = '.';
    static const char *bad[] = {"",           "a..b",       "a%41.example", "*.example",
                                "a b",        "[1.2.3.4]",  "[::1",         "fe80::1%eth0",
                                "-a.example", "bad\n.name", "[]",           "."};
    char err[200];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_null(fy_tls_mint_get(m, t, bad[i], err, sizeof(err)), "%s", bad[i]);
        cr_assert(strstr(err, "cannot mint a certificate for"), "%s", err);
        cr_assert_null(strchr(err, '\n'), "the name is printed safely: %s", err);
    }
    /* '_' is not a host name character, but such names are in use and clients accept them */
    cr_assert_not_null(fy_tls_mint_get(m, t, "under_score.example", err, sizeof(err)), "%s", err);
    cr_assert_null(fy_tls_mint_get(m, t, long_name, err, sizeof(err)), "a 299-byte name");
    long_name[253] = '\0';
    cr_assert_not_null(fy_tls_mint_get(m, t, long_name, err, sizeof(err)), "%s", err);
    struct fy_tls_mint_stats st;
    fy_tls_mint_stats(m, &st);
    cr_assert_eq(st.minted, 2);
    fy_tls_mint_free(m);
    fy_tls_intercept_unref(t);
}

Test(tls_mint, the_cache_is_bounded_lru)
{
    struct fy_tls_intercept *t = open_dir(path("s"));
    struct fy_tls_mint *m = fy_tls_mint_new(2);
    char err[200];
    X509 *a = fy_tls_mint_get(m, t, "a.example", err, sizeof(err));
    X509_up_ref(a); /* a connection holding it */
    BIGNUM *sa = serial_of(a);
    fy_tls_mint_get(m, t, "b.example", err, sizeof(err));
    cr_assert_eq(fy_tls_mint_get(m, t, "a.example", err, sizeof(err)), a, "a hit");
    fy_tls_mint_get(m, t, "c.example", err, sizeof(err)); /* evicts b, the least recent */
    cr_assert_eq(fy_tls_mint_get(m, t, "a.example", err, sizeof(err)), a, "a stays");
    fy_tls_mint_get(m, t, "b.example", err, sizeof(err)); /* evicts c */
    fy_tls_mint_get(m, t, "c.example", err, sizeof(err)); /* evicts a */
    X509 *a2 = fy_tls_mint_get(m, t, "a.example", err, sizeof(err));
    BIGNUM *sa2 = serial_of(a2);
    cr_assert_neq(BN_cmp(sa, sa2), 0, "a was minted again, with a new serial");
    struct fy_tls_mint_stats st;
    fy_tls_mint_stats(m, &st);
    cr_assert_eq(st.minted, 6);
    cr_assert_eq(st.hits, 2);
    cr_assert_eq(st.evicted, 4);
    cr_assert_eq(st.entries, 2);
    /* the evicted certificate lives on for its holder */
    cr_assert_eq(X509_check_private_key(a, t->leaf_key), 1);
    X509_free(a);
    BN_free(sa);
    BN_free(sa2);
    fy_tls_mint_free(m);
    fy_tls_intercept_unref(t);
}

Test(tls_mint, a_cache_used_with_another_ca_starts_over)
{
    struct fy_tls_intercept *t1 = open_dir(path("one")), *t2 = open_dir(path("two"));
    struct fy_tls_mint *m = fy_tls_mint_new(8);
    char err[200];
    X509 *x1 = fy_tls_mint_get(m, t1, "same.example", err, sizeof(err));
    X509_up_ref(x1); /* dropped from the cache by the switch */
    X509 *x2 = fy_tls_mint_get(m, t2, "same.example", err, sizeof(err));
    cr_assert_eq(X509_check_issued(t2->ca.cert, x2), X509_V_OK);
    cr_assert_neq(X509_check_issued(t2->ca.cert, x1), X509_V_OK);
    struct fy_tls_mint_stats st;
    fy_tls_mint_stats(m, &st);
    cr_assert_eq(st.minted, 2);
    cr_assert_eq(st.entries, 1);
    X509_free(x1);
    fy_tls_mint_free(m);
    fy_tls_intercept_unref(t1);
    fy_tls_intercept_unref(t2);
}

Test(tls_mint, many_names_and_the_cost_of_a_cold_mint)
{
    struct fy_tls_intercept *t = open_dir(path("s"));
    enum { N = 300 };
    struct fy_tls_mint *m = fy_tls_mint_new(N / 3);
    char err[200], name[64];
    struct timespec a, b;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "host-%d.example", i);
        cr_assert_not_null(fy_tls_mint_get(m, t, name, err, sizeof(err)), "%s", err);
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    double us = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / 1e3 / N;
    cr_log_info("a cold mint: %.1f us of CPU (mean of %d)", us, N);
    fprintf(stderr, "tls_mint: a cold mint costs %.1f us of CPU (mean of %d)\n", us, N);
    struct fy_tls_mint_stats st;
    fy_tls_mint_stats(m, &st);
    cr_assert_eq(st.entries, N / 3);
    cr_assert_eq(st.evicted, N - N / 3);
    /* the most recent third is all hits */
    for (int i = N - N / 3; i < N; i++) {
        snprintf(name, sizeof(name), "HOST-%d.example", i);
        cr_assert_not_null(fy_tls_mint_get(m, t, name, err, sizeof(err)));
    }
    fy_tls_mint_stats(m, &st);
    cr_assert_eq(st.hits, N / 3);
    fy_tls_mint_free(m);
    fy_tls_intercept_unref(t);
}

/* ---- handshakes ---- */

struct hs {
    struct fy_sock s; /* ferry's side */
    SSL_CTX *cctx;
    SSL *c; /* the client */
    int cfd;
    int server_rc;
};

/* ferry's side through fy_tls_accept_intercept + fy_sock_handshake, the client an OpenSSL one
 * trusting only the CA; both non-blocking over a socketpair, stepped in turn until neither
 * moves (no sleeps: each step either progresses or waits for the other). */
static void handshake(struct hs *h, struct fy_tls_intercept *t, struct fy_tls_mint *m,
                      const char *sni, const char *fallback, int max_version, const char *host,
                      const char *ip)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    memset(h, 0, sizeof(*h));
    h->s.fd = sv[0];
    h->s.tp = &fy_plain_transport;
    h->cfd = sv[1];
    cr_assert_eq(fy_tls_accept_intercept(&h->s, t, m, fallback), 0);
    h->cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_max_proto_version(h->cctx, max_version);
    SSL_CTX_set_verify(h->cctx, SSL_VERIFY_PEER, NULL);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(h->cctx), t->ca.cert);
    SSL_CTX_set_alpn_protos(h->cctx, (const unsigned char *)"\x02h2\x08http/1.1", 12);
    h->c = SSL_new(h->cctx);
    SSL_set_fd(h->c, h->cfd);
    SSL_set_connect_state(h->c);
    if (sni)
        SSL_set_tlsext_host_name(h->c, sni);
    X509_VERIFY_PARAM *vp = SSL_get0_param(h->c);
    if (host)
        X509_VERIFY_PARAM_set1_host(vp, host, 0);
    if (ip)
        X509_VERIFY_PARAM_set1_ip_asc(vp, ip);
    int crc = 0;
    h->server_rc = FY_AGAIN;
    for (int i = 0; i < 100 && (h->server_rc == FY_AGAIN || crc != 1); i++) {
        if (crc != 1) {
            crc = SSL_do_handshake(h->c);
            if (crc != 1) {
                int e = SSL_get_error(h->c, crc);
                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                    break;
            }
        }
        if (h->server_rc == FY_AGAIN)
            h->server_rc = fy_sock_handshake(&h->s);
        if (h->server_rc != 0 && h->server_rc != FY_AGAIN) {
            SSL_do_handshake(h->c); /* reads the alert */
            break;
        }
    }
}

static void hs_done(struct hs *h)
{
    SSL_free(h->c);
    SSL_CTX_free(h->cctx);
    close(h->cfd);
    h->s.tp->close(&h->s);
}

static void check_ok(struct hs *h, int san_type, const char *san)
{
    cr_assert_eq(h->server_rc, 0, "server: %s", fy_tls_error(&h->s));
    cr_assert_eq(SSL_is_init_finished(h->c), 1);
    cr_assert_eq(SSL_get_verify_result(h->c), X509_V_OK);
    X509 *peer = SSL_get0_peer_certificate(h->c);
    cr_assert_not_null(peer);
    GENERAL_NAMES *gens = X509_get_ext_d2i(peer, NID_subject_alt_name, NULL, NULL);
    GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, 0);
    cr_assert_eq(g->type, san_type);
    if (san_type == GEN_DNS)
        cr_assert_str_eq((const char *)ASN1_STRING_get0_data(g->d.dNSName), san);
    else
        cr_assert_eq(ASN1_STRING_length(g->d.iPAddress), (int)strlen(san));
    GENERAL_NAMES_free(gens);
    cr_assert_eq(sk_X509_num(SSL_get_peer_cert_chain(h->c)), 2, "leaf and CA sent");
    const unsigned char *alpn;
    unsigned alen;
    SSL_get0_alpn_selected(h->c, &alpn, &alen);
    cr_assert(alen == 8 && !memcmp(alpn, "http/1.1", 8), "ALPN http/1.1 only");
    /* application data both ways */
    struct iovec iov = {.iov_base = "ping", .iov_len = 4};
    cr_assert_eq(fy_sock_writev(&h->s, &iov, 1), 4);
    char buf[8];
    cr_assert_eq(SSL_read(h->c, buf, sizeof(buf)), 4);
    cr_assert_eq(memcmp(buf, "ping", 4), 0);
}

Test(tls_mint, handshake_with_sni_tls13_and_tls12)
{
    struct fy_tls_intercept *t = open_dir(path("s"));
    struct fy_tls_mint *m = fy_tls_mint_new(8);
    struct hs h;
    handshake(&h, t, m, "sni.example", "fallback.example", TLS1_3_VERSION, "sni.example", NULL);
    check_ok(&h, GEN_DNS, "sni.example");
    cr_assert_str_eq(fy_tls_version(&h.s), "TLSv1.3");
    cr_assert_str_eq(fy_tls_server_name(&h.s), "sni.example");
    hs_done(&h);
    handshake(&h, t, m, "SNI.example", NULL, TLS1_2_VERSION, "sni.example", NULL);
    check_ok(&h, GEN_DNS, "sni.example");
    cr_assert_str_eq(fy_tls_version(&h.s), "TLSv1.2");
    hs_done(&h);
    struct fy_tls_mint_stats st;
    fy_tls_mint_stats(m, &st);
    cr_assert_eq(st.minted, 1);
    cr_assert_eq(st.hits, 1);
    fy_tls_mint_free(m);
    fy_tls_intercept_unref(t);
}

Test(tls_mint, handshake_without_sni_uses_the_fallback_name)
{
    struct fy_tls_intercept *t = open_dir(path("s"));
    struct fy_tls_mint *m = fy_tls_mint_new(8);
    struct hs h;
    handshake(&h, t, m, NULL, "fallback.example", TLS1_3_VERSION, "fallback.example", NULL);
    check_ok(&h, GEN_DNS, "fallback.example");
    cr_assert_null(fy_tls_server_name(&h.s));
    hs_done(&h);
    handshake(&h, t, m, NULL, "10.1.2.3", TLS1_3_VERSION, NULL, "10.1.2.3");
    check_ok(&h, GEN_IPADD, "1234");
    hs_done(&h);
    handshake(&h, t, m, NULL, "[::1]", TLS1_2_VERSION, NULL, "::1");
    check_ok(&h, GEN_IPADD, "0123456789abcdef");
    hs_done(&h);
    fy_tls_mint_free(m);
    fy_tls_intercept_unref(t);
}

static void check_fails(struct hs *h, const char *why)
{
    cr_assert_eq(h->server_rc, FY_ETLS);
    cr_assert(strstr(fy_tls_error(&h->s), why), "expected '%s' in: %s", why, fy_tls_error(&h->s));
    cr_assert_neq(SSL_is_init_finished(h->c), 1);
}

Test(tls_mint, handshakes_that_cannot_mint_fail_with_a_reason)
{
    struct fy_tls_intercept *t = open_dir(path("s"));
    struct fy_tls_mint *m = fy_tls_mint_new(8);
    struct hs h;
    handshake(&h, t, m, NULL, NULL, TLS1_3_VERSION, NULL, NULL);
    check_fails(&h, "cannot mint a certificate: the client sent no server name");
    hs_done(&h);
    handshake(&h, t, m, NULL, "not valid!", TLS1_3_VERSION, NULL, NULL);
    check_fails(&h, "cannot mint a certificate for 'not valid!'");
    hs_done(&h);
    handshake(&h, t, m, "per%cent.example", "ok.example", TLS1_3_VERSION, NULL, NULL);
    check_fails(&h, "(SNI) is not a valid host name");
    hs_done(&h);
    /* the client verifies the name: a fallback that is not what it asked for fails there */
    handshake(&h, t, m, NULL, "fallback.example", TLS1_3_VERSION, "other.example", NULL);
    cr_assert_neq(SSL_is_init_finished(h.c), 1);
    cr_assert_eq(SSL_get_verify_result(h.c), X509_V_ERR_HOSTNAME_MISMATCH);
    hs_done(&h);
    fy_tls_mint_free(m);
    fy_tls_intercept_unref(t);
}
