/*
 * Basic authentication against an htpasswd file: the users and their crypt(3) hashes, loaded once
 * per configuration generation, and the check of a Proxy-Authorization (or Authorization) field
 * value against them, with a per-worker cache of recent successes.
 *
 * Threads: a loaded struct fy_htpasswd is immutable and reference-counted; every worker reads it
 * without locks (a configuration generation holds one reference, so an exchange keeps the users
 * it started with across a reload). A struct fy_auth_cache belongs to one worker thread.
 *
 * Cost: the check runs crypt(3) on the worker's event loop, as nginx's auth_basic does: bcrypt
 * takes ~1-100 ms by design, and the loop's other connections wait that long. So a success is
 * remembered in the worker's cache, keyed by a SHA-256 of (the loaded file's generation, the
 * exact field value): a keep-alive client's next requests cost a hash and a table lookup. The
 * cache holds no credential text, only that digest. Failures are never cached (a wrong guess must
 * cost the guesser a crypt each time), which also means each failed attempt costs the worker one
 * crypt: limit failed attempts per client above this module.
 */
#ifndef FY_HTPASSWD_H
#define FY_HTPASSWD_H

#include <stddef.h>
#include <stdint.h>

#define FY_HTPASSWD_USER_MAX 255 /* bytes in a user name */
#define FY_HTPASSWD_MAX_USERS 65536
#define FY_AUTH_VALUE_MAX 1024     /* bytes in a field value; longer ones are MALFORMED */
#define FY_AUTH_CACHE_ENTRIES 1024 /* fy_auth_cache_new() defaults */
#define FY_AUTH_CACHE_TTL_MS (5 * 60 * 1000)

struct fy_htpasswd;
struct fy_auth_cache;

/* Loads path: lines "user:hash"; blank lines and lines starting with '#' are skipped; CRLF and
 * trailing blanks are tolerated. User names are 1 to FY_HTPASSWD_USER_MAX bytes without ':' or
 * control characters, each defined once. A hash is anything this system's crypt(3) (libxcrypt)
 * verifies: bcrypt ($2y$, $2b$, $2a$: htpasswd -B), yescrypt ($y$), sha512crypt ($6$),
 * sha256crypt ($5$), md5crypt ($1$), DES; or Apache's {SHA} (htpasswd -s). Each is checked at
 * load by crypt_checksalt() and its length, without running it (that would cost a bcrypt per
 * user at every reload). Weak formats (DES, md5crypt, {SHA}) are accepted with a warning naming
 * the line. Returns a new object holding one reference, or NULL with err set to one line
 * "PATH:LINE: what is wrong and what to do" (or "cannot read PATH: reason"). */
struct fy_htpasswd *fy_htpasswd_load(const char *path, char *err, size_t errlen);

/* Takes one more reference (any thread); returns h. */
struct fy_htpasswd *fy_htpasswd_ref(struct fy_htpasswd *h);

/* Drops one reference (any thread); the last one frees h. NULL is ignored. */
void fy_htpasswd_unref(struct fy_htpasswd *h);

/* The number of users loaded. */
size_t fy_htpasswd_count(const struct fy_htpasswd *h);

#define FY_AUTH_RESULTS(X)                                                                         \
    X(OK, "authenticated")                                                                         \
    X(MISSING, "no credentials")                                                                   \
    X(BAD_SCHEME, "not Basic credentials")                                                         \
    X(MALFORMED, "malformed Basic credentials")                                                    \
    X(UNKNOWN_USER, "unknown user")                                                                \
    X(WRONG_PASSWORD, "wrong password")                                                            \
    X(ERROR, "internal error")

enum fy_auth_result {
#define FY_AUTH_ENUM(name, text) FY_AUTH_##name,
    FY_AUTH_RESULTS(FY_AUTH_ENUM)
#undef FY_AUTH_ENUM
};

/* A short lowercase phrase for log lines ("wrong password"); static storage. */
const char *fy_auth_result_str(enum fy_auth_result r);

/* Checks a field value, value_len bytes, not NUL-terminated; value NULL means the field is
 * absent (MISSING). The value is "Basic <base64 of user:password>": the scheme case-insensitive,
 * blanks around the value ignored, strict base64 (padding required, no stray characters), the
 * user ending at the first ':', no NUL byte, at most FY_AUTH_VALUE_MAX bytes (else MALFORMED).
 * Another scheme is BAD_SCHEME. An unknown user costs a crypt with the file's first crypt(3)
 * hash, as much as a wrong password, so the reply time does not tell which user names exist;
 * hashes are compared in constant time. On OK the user name is copied to user_out
 * (NUL-terminated; user_cap must be more than FY_HTPASSWD_USER_MAX) unless user_out is NULL.
 * cache may be NULL (no caching: each call costs a crypt and a 32 KiB allocation). ERROR: out of
 * memory, or crypt(3) failed. */
enum fy_auth_result fy_htpasswd_check(const struct fy_htpasswd *h, struct fy_auth_cache *cache,
                                      const char *value, size_t value_len, char *user_out,
                                      size_t user_cap);

/* Milliseconds from a monotonic clock. */
typedef uint64_t fy_auth_clock_fn(void *ctx);

/* A cache for one worker thread: at most capacity successes (0: FY_AUTH_CACHE_ENTRIES), each
 * trusted for ttl_ms from its check (0: FY_AUTH_CACHE_TTL_MS; a hit does not extend it), the
 * least recently used evicted first. clock NULL reads CLOCK_MONOTONIC; tests inject theirs. Also
 * holds the worker's crypt(3) scratch memory (32 KiB). Entries of an old htpasswd generation are
 * never hits for a new one; they age out. Returns NULL when out of memory. */
struct fy_auth_cache *fy_auth_cache_new(uint32_t capacity, uint32_t ttl_ms, fy_auth_clock_fn *clock,
                                        void *clock_ctx);

void fy_auth_cache_free(struct fy_auth_cache *c);

/* Entries held now (expired ones included until they are looked up or evicted). */
uint32_t fy_auth_cache_size(const struct fy_auth_cache *c);

/* Password verifications (crypt(3) or {SHA}) run by this process so far, dummy ones included;
 * for tests and statistics. */
uint64_t fy_htpasswd_verify_count(void);

#endif
