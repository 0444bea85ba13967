/* Unit tests for src/filters/htpasswd.c: the file parser and its errors, every crypt(3) format
 * and {SHA}, Basic credentials parsing, and the per-worker cache (hits, bound, TTL). */
#include <criterion/criterion.h>
#include <crypt.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "filters/htpasswd.h"

static char path[64];
static char err[512];

static void quiet(void)
{
    fy_log_min_level = FY_LOG_ERROR; /* the weak-hash warnings are expected here */
}

static void cleanup(void)
{
    if (path[0])
        unlink(path);
}

TestSuite(htpasswd, .init = quiet, .fini = cleanup);

/* Writes text to a fresh temporary file named in path. */
static void write_file(const char *text)
{
    if (path[0])
        unlink(path);
    strcpy(path, "/tmp/ferry-htpasswd-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    size_t n = strlen(text);
    cr_assert_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
}

static struct fy_htpasswd *load(const char *text)
{
    write_file(text);
    err[0] = 0;
    struct fy_htpasswd *h = fy_htpasswd_load(path, err, sizeof(err));
    cr_assert_not_null(h, "load failed: %s", err);
    return h;
}

/* Expects text to be refused at line `line` with an error containing want. */
static void refused(const char *text, unsigned line, const char *want)
{
    write_file(text);
    err[0] = 0;
    struct fy_htpasswd *h = fy_htpasswd_load(path, err, sizeof(err));
    cr_assert_null(h, "accepted: %s", text);
    char at[96];
    snprintf(at, sizeof(at), "%s:%u: ", path, line);
    cr_assert(!strncmp(err, at, strlen(at)), "error '%s' does not start with '%s'", err, at);
    cr_assert(strstr(err, want), "error '%s' lacks '%s'", err, want);
}

/* A hash of pw made with crypt_gensalt_rn(prefix, count) and crypt_rn, as the tools write them. */
static char *make_hash(const char *prefix, unsigned long count, const char *pw)
{
    static char out[8][CRYPT_OUTPUT_SIZE];
    static unsigned next;
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data cd;
    memset(&cd, 0, sizeof(cd));
    const char *s = prefix;
    if (prefix[0] == '$')
        s = crypt_gensalt_rn(prefix, count, NULL, 0, setting, sizeof(setting));
    cr_assert_not_null(s, "gensalt %s", prefix);
    const char *h = crypt_rn(pw, s, &cd, sizeof(cd));
    cr_assert_not_null(h, "crypt %s", prefix);
    char *o = out[next++ % 8];
    snprintf(o, CRYPT_OUTPUT_SIZE, "%s", h);
    return o;
}

/* "Basic base64(user:pw)" */
static const char *basic(const char *userpass)
{
    static char buf[2048];
    strcpy(buf, "Basic ");
    EVP_EncodeBlock((unsigned char *)buf + 6, (const unsigned char *)userpass,
                    (int)strlen(userpass));
    return buf;
}

static enum fy_auth_result check(const struct fy_htpasswd *h, struct fy_auth_cache *c,
                                 const char *value, char *user)
{
    return fy_htpasswd_check(h, c, value, value ? strlen(value) : 0, user,
                             user ? FY_HTPASSWD_USER_MAX + 1 : 0);
}

Test(htpasswd, every_format)
{
    static const struct {
        const char *user, *prefix;
        unsigned long count;
    } f[] = {
        {"b2y", "$2y$", 4},      {"b2b", "$2b$", 4}, {"b2a", "$2a$", 4}, {"sha512", "$6$", 1000},
        {"sha256", "$5$", 1000}, {"yes", "$y$", 1},  {"md5", "$1$", 0},  {"des", "ab", 0},
    };
    char file[4096] = "# every format crypt(3) verifies, and {SHA}\n";
    char line[512];
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
        snprintf(line, sizeof(line), "%s:%s\n", f[i].user,
                 make_hash(f[i].prefix, f[i].count, "pw-of-user"));
        strcat(file, line);
    }
    /* htpasswd -s: {SHA} + base64(SHA-1("password")) */
    strcat(file, "sha1:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n");
    struct fy_htpasswd *h = load(file);
    cr_assert_eq(fy_htpasswd_count(h), 9);
    char user[FY_HTPASSWD_USER_MAX + 1], up[64];
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
        snprintf(up, sizeof(up), "%s:pw-of-user", f[i].user);
        user[0] = 0;
        cr_assert_eq(check(h, NULL, basic(up), user), FY_AUTH_OK, "%s", f[i].user);
        cr_assert_str_eq(user, f[i].user);
        /* DES reads 8 characters: differ early */
        snprintf(up, sizeof(up), "%s:pX-of-user", f[i].user);
        cr_assert_eq(check(h, NULL, basic(up), user), FY_AUTH_WRONG_PASSWORD, "%s", f[i].user);
    }
    cr_assert_eq(check(h, NULL, basic("sha1:password"), user), FY_AUTH_OK);
    cr_assert_str_eq(user, "sha1");
    cr_assert_eq(check(h, NULL, basic("sha1:Password"), NULL), FY_AUTH_WRONG_PASSWORD);
    fy_htpasswd_unref(h);
}

Test(htpasswd, file_syntax)
{
    char file[1024];
    const char *hash = make_hash("$2y$", 4, "secret");
    /* comments, blank lines, CRLF, trailing blanks, no final newline */
    snprintf(file, sizeof(file), "# users\r\n\r\n   \n  # indented comment\nalice:%s\r\nbob:%s  \t",
             hash, hash);
    struct fy_htpasswd *h = load(file);
    cr_assert_eq(fy_htpasswd_count(h), 2);
    cr_assert_eq(check(h, NULL, basic("alice:secret"), NULL), FY_AUTH_OK);
    cr_assert_eq(check(h, NULL, basic("bob:secret"), NULL), FY_AUTH_OK);
    fy_htpasswd_unref(h);

    /* an empty file loads (and refuses everyone) */
    h = load("# nobody yet\n");
    cr_assert_eq(fy_htpasswd_count(h), 0);
    cr_assert_eq(check(h, NULL, basic("alice:secret"), NULL), FY_AUTH_UNKNOWN_USER);
    fy_htpasswd_unref(h);
}

Test(htpasswd, file_errors)
{
    char file[2048];
    const char *good = make_hash("$2y$", 4, "x");
    snprintf(file, sizeof(file), "# c\n\nalice\n");
    refused(file, 3, "expected user:hash, found no ':'");
    refused("a:$apr1$xyz$0123456789abcdefghijkl\n", 1,
            "$apr1$ (Apache MD5) is not supported by crypt(3); make the entry with htpasswd -B "
            "(bcrypt)");
    snprintf(file, sizeof(file), "alice:%s\n:%s\n", good, good);
    refused(file, 2, "the user name before ':' is empty");
    snprintf(file, sizeof(file), "alice:%s\nbob:%s\nalice:%s\n", good, good, good);
    refused(file, 3, "user 'alice' is already defined on line 1");
    refused("alice:\n", 1, "user 'alice' has no password hash");
    refused("alice:secret password\n", 1, "not in crypt(3) form");
    refused("alice:{SSHA}abcdefgh\n", 1, "{SSHA} hashes are not supported");
    refused("alice:{SHA}abc=\n", 1, "not 28 base64 characters");
    refused("alice:$9$whatever$xyz\n", 1, "not a format this system's crypt(3) verifies");
    /* a bcrypt hash missing its last characters */
    snprintf(file, sizeof(file), "alice:%.50s\n", good);
    refused(file, 1, "cut short or damaged");
    snprintf(file, sizeof(file), "alice:%.60s\n", make_hash("$6$", 1000, "x"));
    refused(file, 1, "cut short or damaged");
    refused("alice:abcdefghijkl\n", 1, "cut short or damaged"); /* DES is 13 characters */
    char user[300];
    memset(user, 'u', 256);
    user[256] = 0;
    snprintf(file, sizeof(file), "%s:%s\n", user, good);
    refused(file, 1, "longer than 255 bytes");
    snprintf(file, sizeof(file), "al\x01ice:%s\n", good);
    refused(file, 1, "control character");
    char longline[1200];
    memset(longline, 'a', sizeof(longline) - 2);
    longline[sizeof(longline) - 2] = '\n';
    longline[sizeof(longline) - 1] = 0;
    refused(longline, 1, "longer than 1024 bytes");

    err[0] = 0;
    cr_assert_null(fy_htpasswd_load("/nonexistent/users.htpasswd", err, sizeof(err)));
    cr_assert_str_eq(err, "cannot read /nonexistent/users.htpasswd: No such file or directory");
}

Test(htpasswd, credentials_parsing)
{
    char file[512];
    snprintf(file, sizeof(file), "alice:%s\nempty:%s\ncolon:%s\n", make_hash("$1$", 0, "pw"),
             make_hash("$1$", 0, ""), make_hash("$1$", 0, "a:b:c"));
    struct fy_htpasswd *h = load(file);
    char user[FY_HTPASSWD_USER_MAX + 1];
    /* "alice:pw" = YWxpY2U6cHc= */
    cr_assert_eq(check(h, NULL, "Basic YWxpY2U6cHc=", user), FY_AUTH_OK);
    cr_assert_str_eq(user, "alice");
    cr_assert_eq(check(h, NULL, "basic YWxpY2U6cHc=", NULL), FY_AUTH_OK, "scheme case");
    cr_assert_eq(check(h, NULL, "BASIC YWxpY2U6cHc=", NULL), FY_AUTH_OK);
    cr_assert_eq(check(h, NULL, "  Basic   YWxpY2U6cHc=  ", NULL), FY_AUTH_OK, "blanks");
    cr_assert_eq(check(h, NULL, NULL, NULL), FY_AUTH_MISSING);
    cr_assert_eq(check(h, NULL, "", NULL), FY_AUTH_MISSING);
    cr_assert_eq(check(h, NULL, "Bearer abc.def", NULL), FY_AUTH_BAD_SCHEME);
    cr_assert_eq(check(h, NULL, "Basicx YWxpY2U6cHc=", NULL), FY_AUTH_BAD_SCHEME);
    cr_assert_eq(check(h, NULL, "Digest username=\"alice\"", NULL), FY_AUTH_BAD_SCHEME);
    cr_assert_eq(check(h, NULL, "Basic", NULL), FY_AUTH_MALFORMED);
    cr_assert_eq(check(h, NULL, "Basic ", NULL), FY_AUTH_MALFORMED);
    /* strict base64 */
    cr_assert_eq(check(h, NULL, "Basic YWxpY2U6cHc", NULL), FY_AUTH_MALFORMED, "no padding");
    cr_assert_eq(check(h, NULL, "Basic YWxpY2U6cHc==", NULL), FY_AUTH_MALFORMED, "extra '='");
    cr_assert_eq(check(h, NULL, "Basic YWxpY2U6cHd=", NULL), FY_AUTH_MALFORMED, "pad bits");
    cr_assert_eq(check(h, NULL, "Basic YWxp=2U6cHc=", NULL), FY_AUTH_MALFORMED, "inner '='");
    cr_assert_eq(check(h, NULL, "Basic YWxp*2U6cHc=", NULL), FY_AUTH_MALFORMED, "bad char");
    cr_assert_eq(check(h, NULL, "Basic YWxpY2U6 cHc=", NULL), FY_AUTH_MALFORMED, "inner space");
    cr_assert_eq(check(h, NULL, "Basic YWxpY2U6cHc=\r\n", NULL), FY_AUTH_MALFORMED);
    cr_assert_eq(check(h, NULL, "Basic YWxpY2U-cHc=", NULL), FY_AUTH_MALFORMED, "base64url");
    cr_assert_eq(check(h, NULL, "Basic\tYWxpY2U6cHc=", NULL), FY_AUTH_MALFORMED, "1*SP only");
    /* "alice" without ':' */
    cr_assert_eq(check(h, NULL, "Basic YWxpY2U=", NULL), FY_AUTH_MALFORMED);
    /* "alice:p\0w": a NUL would cut the password short in crypt(3) */
    cr_assert_eq(check(h, NULL, "Basic YWxpY2U6cAB3", NULL), FY_AUTH_MALFORMED);
    /* too long: 1 KiB of value */
    char big[1100] = "Basic ";
    memset(big + 6, 'A', 1020);
    big[1026] = 0;
    cr_assert_eq(check(h, NULL, big, NULL), FY_AUTH_MALFORMED);
    /* the first ':' separates: the password may hold more */
    cr_assert_eq(check(h, NULL, basic("colon:a:b:c"), user), FY_AUTH_OK);
    cr_assert_str_eq(user, "colon");
    cr_assert_eq(check(h, NULL, basic("colon:a:b"), NULL), FY_AUTH_WRONG_PASSWORD);
    /* the empty password is a password */
    cr_assert_eq(check(h, NULL, basic("empty:"), user), FY_AUTH_OK);
    cr_assert_eq(check(h, NULL, basic("empty: "), NULL), FY_AUTH_WRONG_PASSWORD);
    cr_assert_eq(check(h, NULL, basic("alice:"), NULL), FY_AUTH_WRONG_PASSWORD);
    /* an unknown user costs a verification too */
    uint64_t before = fy_htpasswd_verify_count();
    cr_assert_eq(check(h, NULL, basic("mallory:pw"), NULL), FY_AUTH_UNKNOWN_USER);
    cr_assert_eq(check(h, NULL, basic(":pw"), NULL), FY_AUTH_UNKNOWN_USER);
    cr_assert_eq(check(h, NULL, basic("Alice:pw"), NULL), FY_AUTH_UNKNOWN_USER, "case matters");
    cr_assert_eq(fy_htpasswd_verify_count() - before, 3);
    fy_htpasswd_unref(h);
}

Test(htpasswd, result_text)
{
    cr_assert_str_eq(fy_auth_result_str(FY_AUTH_OK), "authenticated");
    cr_assert_str_eq(fy_auth_result_str(FY_AUTH_WRONG_PASSWORD), "wrong password");
    cr_assert_str_eq(fy_auth_result_str(FY_AUTH_UNKNOWN_USER), "unknown user");
    cr_assert_str_eq(fy_auth_result_str(FY_AUTH_MISSING), "no credentials");
    cr_assert_str_eq(fy_auth_result_str((enum fy_auth_result)99), "?");
}

static uint64_t fake_now;
static uint64_t fake_clock(void *ctx)
{
    (void)ctx;
    return fake_now;
}

Test(htpasswd, cache_hits_and_failures)
{
    char file[512];
    snprintf(file, sizeof(file), "alice:%s\nbob:%s\n", make_hash("$2y$", 4, "pw"),
             make_hash("$2y$", 4, "pw2"));
    struct fy_htpasswd *h = load(file);
    fake_now = 1000;
    struct fy_auth_cache *c = fy_auth_cache_new(0, 0, fake_clock, NULL);
    cr_assert_not_null(c);
    char user[FY_HTPASSWD_USER_MAX + 1];
    uint64_t n0 = fy_htpasswd_verify_count();
    cr_assert_eq(check(h, c, basic("alice:pw"), user), FY_AUTH_OK);
    cr_assert_eq(fy_htpasswd_verify_count() - n0, 1);
    for (int i = 0; i < 5; i++) {
        user[0] = 0;
        cr_assert_eq(check(h, c, basic("alice:pw"), user), FY_AUTH_OK);
        cr_assert_str_eq(user, "alice", "a hit fills the user name");
    }
    cr_assert_eq(fy_htpasswd_verify_count() - n0, 1, "hits run no crypt");
    cr_assert_eq(fy_auth_cache_size(c), 1);
    /* failures are never cached */
    for (int i = 0; i < 3; i++)
        cr_assert_eq(check(h, c, basic("alice:wrong"), NULL), FY_AUTH_WRONG_PASSWORD);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(check(h, c, basic("nobody:pw"), NULL), FY_AUTH_UNKNOWN_USER);
    cr_assert_eq(fy_htpasswd_verify_count() - n0, 6);
    cr_assert_eq(fy_auth_cache_size(c), 1);
    /* a reloaded file is another generation: the same value is checked again */
    struct fy_htpasswd *h2 = fy_htpasswd_load(path, err, sizeof(err));
    cr_assert_not_null(h2, "%s", err);
    cr_assert_eq(check(h2, c, basic("alice:pw"), NULL), FY_AUTH_OK);
    cr_assert_eq(fy_htpasswd_verify_count() - n0, 7);
    /* references: the second one keeps the object alive */
    fy_htpasswd_ref(h2);
    fy_htpasswd_unref(h2);
    cr_assert_eq(check(h2, c, basic("alice:pw"), NULL), FY_AUTH_OK);
    cr_assert_eq(fy_htpasswd_verify_count() - n0, 7);
    fy_htpasswd_unref(h2);
    fy_htpasswd_unref(h);
    fy_auth_cache_free(c);
}

Test(htpasswd, cache_ttl)
{
    char file[256];
    snprintf(file, sizeof(file), "alice:%s\n", make_hash("$1$", 0, "pw"));
    struct fy_htpasswd *h = load(file);
    fake_now = 50;
    struct fy_auth_cache *c = fy_auth_cache_new(8, 1000, fake_clock, NULL);
    uint64_t n0 = fy_htpasswd_verify_count();
    cr_assert_eq(check(h, c, basic("alice:pw"), NULL), FY_AUTH_OK);
    fake_now = 1049; /* 999 ms later: still trusted */
    cr_assert_eq(check(h, c, basic("alice:pw"), NULL), FY_AUTH_OK);
    cr_assert_eq(fy_htpasswd_verify_count() - n0, 1);
    fake_now = 1050; /* the TTL has passed: checked again, and cached again from now */
    cr_assert_eq(check(h, c, basic("alice:pw"), NULL), FY_AUTH_OK);
    cr_assert_eq(fy_htpasswd_verify_count() - n0, 2);
    cr_assert_eq(fy_auth_cache_size(c), 1);
    fake_now = 2049;
    cr_assert_eq(check(h, c, basic("alice:pw"), NULL), FY_AUTH_OK);
    cr_assert_eq(fy_htpasswd_verify_count() - n0, 2, "a hit does not extend the TTL...");
    fake_now = 2050;
    cr_assert_eq(check(h, c, basic("alice:pw"), NULL), FY_AUTH_OK);
    cr_assert_eq(fy_htpasswd_verify_count() - n0, 3, "...so it ends 1000 ms after the check");
    fy_auth_cache_free(c);
    fy_htpasswd_unref(h);
}

Test(htpasswd, cache_bound_lru)
{
    char file[1024] = "", line[128];
    const char *hash = make_hash("$1$", 0, "pw");
    for (int i = 0; i < 5; i++) {
        snprintf(line, sizeof(line), "u%d:%s\n", i, hash);
        strcat(file, line);
    }
    struct fy_htpasswd *h = load(file);
    fake_now = 0;
    struct fy_auth_cache *c = fy_auth_cache_new(3, 0, fake_clock, NULL);
    char up[16];
    uint64_t n0 = fy_htpasswd_verify_count();
#define AUTH(i)                                                                                    \
    do {                                                                                           \
        snprintf(up, sizeof(up), "u%d:pw", i);                                                     \
        cr_assert_eq(check(h, c, basic(up), NULL), FY_AUTH_OK);                                    \
    } while (0)
    AUTH(0);
    AUTH(1);
    AUTH(2);
    cr_assert_eq(fy_htpasswd_verify_count() - n0, 3);
    AUTH(0); /* a hit: u0 is now the most recent, u1 the least */
    cr_assert_eq(fy_htpasswd_verify_count() - n0, 3);
    AUTH(3); /* full: evicts u1 */
    cr_assert_eq(fy_htpasswd_verify_count() - n0, 4);
    cr_assert_eq(fy_auth_cache_size(c), 3);
    AUTH(0);
    AUTH(2);
    AUTH(3);
    cr_assert_eq(fy_htpasswd_verify_count() - n0, 4, "u0, u2, u3 stayed");
    AUTH(1);
    cr_assert_eq(fy_htpasswd_verify_count() - n0, 5, "u1 was evicted");
    cr_assert_eq(fy_auth_cache_size(c), 3);
    /* churn through many more users than the capacity: the bound holds */
    for (int r = 0; r < 20; r++)
        for (int i = 0; i < 5; i++)
            AUTH(i);
    cr_assert_eq(fy_auth_cache_size(c), 3);
#undef AUTH
    fy_auth_cache_free(c);
    fy_htpasswd_unref(h);
}
