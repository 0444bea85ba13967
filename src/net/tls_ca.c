/*
 * The interception CA (tls_priv.h): a user's CA pair loaded and checked, or ferry's own one in a
 * state directory, generated on first use.
 *
 * The generated pair is ferry-ca.pem (certificate, 0644) and ferry-ca-key.pem (key, 0600 from
 * the moment it exists: created with O_EXCL and that mode, never chmod-ed down). The certificate
 * is what makes a pair complete: it is published last, each file written under a temporary name
 * and renamed into place, so a crash leaves either no certificate (the next start generates a
 * fresh pair, replacing an orphaned key) or a whole pair. Concurrent starts agree through an
 * flock on ferry-ca.lock: the first generates while holding it, the others wait, then find the
 * certificate and load it. flock (not an O_EXCL lock file) is released by the kernel when its
 * holder dies, so a crash never leaves a stale lock behind.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "core/log.h"
#include "net/tls_priv.h"

#define CA_DAYS 3652 /* ten years */
#define LOCK_FILE "ferry-ca.lock"

void fy_tls_ca_clear(struct tls_ca *ca)
{
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    free(ca->cert_path);
    free(ca->key_path);
    *ca = (struct tls_ca){0};
}

/* ---- checks ---- */

static int check_ca(const char *cert_path, X509 *x, const char *key_path, EVP_PKEY *k, char *err,
                    size_t errlen)
{
    if (X509_check_private_key(x, k) != 1)
        return fy_tls_fail(err, errlen, "the key %s does not match the certificate %s", key_path,
                           cert_path);
    uint32_t flags = X509_get_extension_flags(x); /* also parses the extensions */
    if (flags & EXFLAG_INVALID)
        return fy_tls_fail(err, errlen, "%s: the certificate has malformed extensions", cert_path);
    if (!(flags & EXFLAG_CA))
        return fy_tls_fail(
            err, errlen,
            "%s: the certificate is not a CA (it lacks basicConstraints CA:TRUE), so it "
            "cannot sign the certificates interception needs",
            cert_path);
    if ((flags & EXFLAG_KUSAGE) && !(X509_get_key_usage(x) & KU_KEY_CERT_SIGN))
        return fy_tls_fail(err, errlen,
                           "%s: the CA certificate may not sign certificates (its keyUsage lacks "
                           "keyCertSign)",
                           cert_path);
    return 0;
}

/* A key others can read: not refused (the user may know why), but said. */
static void warn_key_mode(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 077))
        fy_warn("TLS: the CA key %s is readable by other users (mode %04o); chmod 600 it", path,
                (unsigned)(st.st_mode & 07777));
}

int fy_tls_ca_load(struct tls_ca *ca, const char *cert, const char *key, char *err, size_t errlen)
{
    *ca = (struct tls_ca){0};
    if (fy_tls_read_cert(cert, &ca->cert, err, errlen) < 0)
        return -1;
    if (fy_tls_read_key(key, &ca->key, err, errlen) < 0 ||
        check_ca(cert, ca->cert, key, ca->key, err, errlen) < 0)
        goto fail;
    if (!(ca->cert_path = strdup(cert)) || !(ca->key_path = strdup(key))) {
        fy_tls_fail(err, errlen, "out of memory");
        goto fail;
    }
    warn_key_mode(key);
    return 0;
fail:
    fy_tls_ca_clear(ca);
    return -1;
}

/* ---- the state directory ---- */

int fy_tls_state_dir_default(char *buf, size_t len, char *err, size_t errlen)
{
    const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    int n;
    /* The XDG spec says a relative XDG_STATE_HOME is invalid and must be ignored. */
    if (xdg && xdg[0] == '/')
        n = snprintf(buf, len, "%s/ferry", xdg);
    else if (geteuid() == 0)
        n = snprintf(buf, len, "/var/lib/ferry");
    else if (home && home[0] == '/')
        n = snprintf(buf, len, "%s/.local/state/ferry", home);
    else
        return fy_tls_fail(
            err, errlen,
            "cannot choose a state directory for the interception CA: neither "
            "XDG_STATE_HOME nor HOME is set to an absolute path (give one explicitly)");
    if (n < 0 || (size_t)n >= len)
        return fy_tls_fail(err, errlen, "the state directory path is too long");
    return 0;
}

/* mkdir -p, each directory it creates 0700 (what XDG asks of the state directory). */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
    char p[PATH_MAX];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof(p))
        return fy_tls_fail(err, errlen, "the state directory path '%.80s' is empty or too long",
                           dir);
    memcpy(p, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST)
            return fy_tls_fail(err, errlen, "cannot create the state directory %s: %s", p,
                               strerror(errno));
        p[i] = c;
    }
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
        return fy_tls_fail(err, errlen, "the state directory %s is not a directory", dir);
    return 0;
}

/* ---- generation ---- */

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    int ok = e && X509_add_ext(x, e, -1) == 1;
    X509_EXTENSION_free(e);
    return ok ? 0 : -1;
}

/* "ferry interception CA (host)": the host name, printable and short enough that the CN stays
 * within its 64-byte bound. */
static void ca_common_name(char *cn, size_t len)
{
    char host[256] = "";
    if (gethostname(host, sizeof(host) - 1) < 0 || !host[0])
        snprintf(host, sizeof(host), "unknown host");
    host[40] = '\0';
    for (char *p = host; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
    snprintf(cn, len, "ferry interception CA (%s)", host);
}

static int generate(struct tls_ca *ca, char *err, size_t errlen)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    BIGNUM *serial = BN_new();
    X509_NAME *name = X509_NAME_new();
    char cn[80];
    ca_common_name(cn, sizeof(cn));
    X509V3_CTX v3;
    if (!k || !x || !serial || !name || X509_set_version(x, X509_VERSION_3) != 1 ||
        BN_rand(serial, 128, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) != 1 ||
        !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) ||
        X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8, (unsigned char *)cn, -1, -1,
                                   0) != 1 ||
        X509_NAME_add_entry_by_NID(name, NID_organizationName, MBSTRING_UTF8,
                                   (unsigned char *)"ferry", -1, -1, 0) != 1 ||
        X509_set_subject_name(x, name) != 1 || X509_set_issuer_name(x, name) != 1 ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -86400) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), CA_DAYS, 0, NULL) || X509_set_pubkey(x, k) != 1)
        goto fail;
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    if (add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
        add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
        add_ext(x, &v3, NID_subject_key_identifier, "hash") < 0 ||
        X509_sign(x, k, EVP_sha256()) <= 0)
        goto fail;
    BN_free(serial);
    X509_NAME_free(name);
    ca->cert = x;
    ca->key = k;
    return 0;
fail:;
    char why[120];
    fy_tls_reason(why, sizeof(why), "out of memory");
    EVP_PKEY_free(k);
    X509_free(x);
    BN_free(serial);
    X509_NAME_free(name);
    return fy_tls_fail(err, errlen, "cannot generate the interception CA: %s", why);
}

/* Writes one file at `path` by way of path.tmp (mode `mode` from its creation) and renames it.
 * Called under the lock, so the temporary name is ours: one a crash left behind is removed. */
static int publish(const char *path, mode_t mode, X509 *x, EVP_PKEY *k, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return fy_tls_fail(err, errlen, "the path %s is too long", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return fy_tls_fail(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        unlink(tmp);
        return fy_tls_fail(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
    }
    int ok = x ? PEM_write_X509(f, x) : PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    ok = ok == 1 && fflush(f) == 0 && fsync(fd) == 0;
    int saved = errno;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok) {
        unlink(tmp);
        return fy_tls_fail(err, errlen, "cannot write %s: %s", tmp, strerror(saved ? saved : EIO));
    }
    if (rename(tmp, path) < 0) {
        saved = errno;
        unlink(tmp);
        return fy_tls_fail(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(saved));
    }
    return 0;
}

static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd); /* the renames reach the disk too */
        close(fd);
    }
}

int fy_tls_ca_open(struct tls_ca *ca, const char *state_dir, char *err, size_t errlen)
{
    char dir[PATH_MAX], cert[PATH_MAX], key[PATH_MAX], lock[PATH_MAX];
    *ca = (struct tls_ca){0};
    if (!state_dir) {
        if (fy_tls_state_dir_default(dir, sizeof(dir), err, errlen) < 0)
            return -1;
        state_dir = dir;
    }
    if (snprintf(cert, sizeof(cert), "%s/" FY_TLS_CA_CERT_FILE, state_dir) >= (int)sizeof(cert) ||
        snprintf(key, sizeof(key), "%s/" FY_TLS_CA_KEY_FILE, state_dir) >= (int)sizeof(key) ||
        snprintf(lock, sizeof(lock), "%s/" LOCK_FILE, state_dir) >= (int)sizeof(lock))
        return fy_tls_fail(err, errlen, "the state directory path %.80s... is too long", state_dir);
    if (access(cert, F_OK) == 0)
        return fy_tls_ca_load(ca, cert, key, err, errlen); /* the common case: no lock needed */
    if (make_dirs(state_dir, err, errlen) < 0)
        return -1;
    int lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lfd < 0)
        return fy_tls_fail(err, errlen, "cannot create the lock file %s: %s", lock,
                           strerror(errno));
    int rc;
    while ((rc = flock(lfd, LOCK_EX)) < 0 && errno == EINTR)
        ;
    if (rc < 0) {
        rc = fy_tls_fail(err, errlen, "cannot lock %s: %s", lock, strerror(errno));
        goto out;
    }
    if (access(cert, F_OK) == 0) { /* another ferry generated it while we waited */
        rc = fy_tls_ca_load(ca, cert, key, err, errlen);
        goto out;
    }
    /* The key first: a certificate on disk always has its key beside it. */
    if ((rc = generate(ca, err, errlen)) < 0 ||
        (rc = publish(key, 0600, NULL, ca->key, err, errlen)) < 0 ||
        (rc = publish(cert, 0644, ca->cert, NULL, err, errlen)) < 0)
        goto out;
    sync_dir(state_dir);
    if (!(ca->cert_path = strdup(cert)) || !(ca->key_path = strdup(key)))
        rc = fy_tls_fail(err, errlen, "out of memory");
    else
        fy_info("TLS: generated the interception CA %s (trust it in clients: `ferry ca`)", cert);
out:
    close(lfd); /* releases the lock */
    if (rc < 0)
        fy_tls_ca_clear(ca);
    return rc;
}
