/*
 * htpasswd files and Basic credentials; see htpasswd.h. The users are a sorted array searched by
 * binary search; the worker cache is a fixed array of entries on a hash chain and an LRU list,
 * linked by index, so it never allocates after it is made.
 */
#include "filters/htpasswd.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/assert.h"
#include "core/json.h" /* base64 */
#include "core/log.h"

#define NONE UINT32_MAX
#define FILE_MAX (16u << 20) /* bytes; 65536 users of ~100 bytes fit with room to spare */
#define LINE_MAX_LEN 1024
#define SHA1_LEN 20

static uint64_t verify_count; /* atomic */
static uint64_t next_id;      /* atomic: each loaded file's generation */

enum kind { K_CRYPT, K_SHA1 };

struct entry {
    char *user; /* NUL-terminated; the hash follows it in the same allocation */
    const char *hash;
    uint32_t ulen;
    uint32_t line;
    uint8_t kind;
    uint8_t sha1[SHA1_LEN]; /* K_SHA1 */
};

struct fy_htpasswd {
    int refs; /* atomic */
    uint64_t id;
    struct entry *e; /* sorted by user */
    uint32_t n;
    uint32_t dummy; /* the entry an unknown user is verified against, or NONE */
};

/* ---- loading ---- */

/* Reads the whole file (at most FILE_MAX bytes) into a malloc'd, NUL-terminated buffer. */
static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fy_errf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) < 0) {
        fy_errf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        goto fail_close;
    }
    if (st.st_size > (off_t)FILE_MAX) {
        fy_errf(err, errlen, "%s is larger than %u MiB; is it really an htpasswd file?", path,
                FILE_MAX >> 20);
        goto fail_close;
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    if (!(buf = malloc(cap + 1))) {
        fy_errf(err, errlen, "cannot read %s: out of memory", path);
        goto fail_close;
    }
    /* Read to EOF, not to st_size: the file may be growing while it is read; stop at the bound. */
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fy_errf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            goto fail_free;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == cap) {
            if (cap > FILE_MAX) {
                fy_errf(err, errlen, "%s is larger than %u MiB", path, FILE_MAX >> 20);
                goto fail_free;
            }
            char *p = realloc(buf, cap * 2 + 1);
            if (!p) {
                fy_errf(err, errlen, "cannot read %s: out of memory", path);
                goto fail_free;
            }
            buf = p;
            cap *= 2;
        }
    }
    close(fd);
    buf[n] = 0;
    *len = n;
    return buf;
fail_free:
    free(buf);
fail_close:
    close(fd);
    return NULL;
}

static bool crypt_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '/' || c == '$' || c == '=' || c == ',';
}

/* The length the checksum after the last '$' must have, for the formats whose length is fixed
 * (0: not known here, any non-empty checksum). A hash cut short (a line broken by an editor, a
 * copy missing its end) would otherwise load and then refuse every password. */
static size_t checksum_len(const char *hash)
{
    static const struct {
        const char *prefix;
        size_t len;
    } fixed[] = {{"$6$", 86}, {"$5$", 43}, {"$1$", 22}, {"$y$", 43}, {"$gy$", 43}, {"$7$", 43}};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (!strncmp(hash, fixed[i].prefix, strlen(fixed[i].prefix)))
            return fixed[i].len;
    return 0;
}

static const char *weak_format(const char *hash)
{
    if (!strncmp(hash, "$1$", 3))
        return "md5crypt ($1$)";
    if (!strncmp(hash, "$md5", 4))
        return "Sun MD5 ($md5)";
    if (hash[0] == '_')
        return "BSDi DES (_)";
    if (hash[0] != '$')
        return "DES";
    return NULL;
}

#define LINE_ERR(...) (fy_errf(err, errlen, __VA_ARGS__), -1)

/* Checks the hash of one line and fills e's kind (and sha1). */
static int check_hash(const char *path, uint32_t line, const char *user, const char *hash,
                      struct entry *e, char *err, size_t errlen)
{
    const char *fix = "make the entry with htpasswd -B (bcrypt)";
    size_t n = strlen(hash);
    if (n == 0)
        return LINE_ERR("%s:%u: user '%s' has no password hash; %s", path, line, user, fix);
    if (!strncmp(hash, "$apr1$", 6))
        return LINE_ERR("%s:%u: $apr1$ (Apache MD5) is not supported by crypt(3); %s", path, line,
                        fix);
    if (!strncmp(hash, "{SHA}", 5)) {
        unsigned char d[32];
        if (n - 5 > 28 || fy_base64_decode(hash + 5, n - 5, d) != SHA1_LEN)
            return LINE_ERR("%s:%u: the {SHA} hash of '%s' is not 28 base64 characters; %s", path,
                            line, user, fix);
        e->kind = K_SHA1;
        memcpy(e->sha1, d, SHA1_LEN);
        fy_warn("%s:%u: user '%s': {SHA} is one unsalted SHA-1, a weak hash; %s", path, line, user,
                fix);
        return 0;
    }
    if (hash[0] == '{')
        return LINE_ERR("%s:%u: %.*s hashes are not supported; %s", path, line,
                        (int)(strcspn(hash, "}") < 16 ? strcspn(hash, "}") + 1 : 16), hash, fix);
    for (size_t i = 0; i < n; i++)
        if (!crypt_char(hash[i]))
            return LINE_ERR("%s:%u: the hash of '%s' is not in crypt(3) form (a '%c' at column "
                            "%zu; a plain-text password?); %s",
                            path, line, user, hash[i], i + 1, fix);
    int cs = crypt_checksalt(hash);
    if (cs != CRYPT_SALT_OK && cs != CRYPT_SALT_METHOD_LEGACY)
        return LINE_ERR("%s:%u: the hash of '%s' (%.*s...) is not a format this system's crypt(3) "
                        "verifies; %s",
                        path, line, user, (int)(n < 4 ? n : 4), hash, fix);
    const char *last = strrchr(hash, '$');
    size_t want = checksum_len(hash);
    bool bcrypt = !strncmp(hash, "$2", 2);
    if ((bcrypt && n != 60) || (!bcrypt && hash[0] != '$' && hash[0] != '_' && n != 13) ||
        (hash[0] == '_' && n != 20) ||
        (hash[0] == '$' && !bcrypt && (!last[1] || (want && strlen(last + 1) != want))))
        return LINE_ERR("%s:%u: the hash of '%s' is cut short or damaged (its length is wrong for "
                        "its format); %s",
                        path, line, user, fix);
    const char *weak = weak_format(hash);
    if (weak)
        fy_warn("%s:%u: user '%s': %s is a weak hash; %s", path, line, user, weak, fix);
    e->kind = K_CRYPT;
    return 0;
}

static int cmp_entry(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    int c = strcmp(x->user, y->user);
    return c ? c : (x->line > y->line) - (x->line < y->line);
}

static void entries_free(struct entry *e, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        free(e[i].user);
    free(e);
}

/* Parses one line (NUL-terminated, CR and trailing blanks removed) into *e. */
static int parse_line(const char *path, uint32_t line, char *s, struct entry *e, char *err,
                      size_t errlen)
{
    char *colon = strchr(s, ':');
    if (!colon)
        return LINE_ERR("%s:%u: expected user:hash, found no ':'", path, line);
    size_t ulen = (size_t)(colon - s);
    if (ulen == 0)
        return LINE_ERR("%s:%u: the user name before ':' is empty", path, line);
    if (ulen > FY_HTPASSWD_USER_MAX)
        return LINE_ERR("%s:%u: the user name is longer than %d bytes", path, line,
                        FY_HTPASSWD_USER_MAX);
    for (size_t i = 0; i < ulen; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return LINE_ERR("%s:%u: the user name contains a control character", path, line);
    *colon = 0;
    const char *hash = colon + 1;
    size_t hlen = strlen(hash);
    memset(e, 0, sizeof(*e));
    if (check_hash(path, line, s, hash, e, err, errlen) < 0)
        return -1;
    if (!(e->user = malloc(ulen + 1 + hlen + 1)))
        return LINE_ERR("%s:%u: out of memory", path, line);
    memcpy(e->user, s, ulen + 1);
    memcpy(e->user + ulen + 1, hash, hlen + 1);
    e->hash = e->user + ulen + 1;
    e->ulen = (uint32_t)ulen;
    e->line = line;
    return 0;
}

struct fy_htpasswd *fy_htpasswd_load(const char *path, char *err, size_t errlen)
{
    size_t len;
    char *buf = read_file(path, &len, err, errlen);
    if (!buf)
        return NULL;
    struct entry *e = NULL;
    uint32_t n = 0, cap = 0, line = 0;
    struct fy_htpasswd *h = NULL;
    for (char *p = buf, *end = buf + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *eol = nl ? nl : end;
        char *next = nl ? nl + 1 : end;
        line++;
        if (memchr(p, 0, (size_t)(eol - p))) {
            fy_errf(err, errlen, "%s:%u: a NUL byte; is this an htpasswd file?", path, line);
            goto fail;
        }
        if ((size_t)(eol - p) > LINE_MAX_LEN) {
            fy_errf(err, errlen, "%s:%u: the line is longer than %d bytes", path, line,
                    LINE_MAX_LEN);
            goto fail;
        }
        while (eol > p && (eol[-1] == '\r' || eol[-1] == ' ' || eol[-1] == '\t'))
            eol--;
        *eol = 0;
        char *s = p + strspn(p, " \t");
        p = next;
        if (!*s || *s == '#')
            continue;
        if (n == FY_HTPASSWD_MAX_USERS) {
            fy_errf(err, errlen, "%s:%u: more than %d users", path, line, FY_HTPASSWD_MAX_USERS);
            goto fail;
        }
        if (n == cap) {
            uint32_t ncap = cap ? cap * 2 : 16;
            struct entry *ne = realloc(e, (size_t)ncap * sizeof(*e));
            if (!ne) {
                fy_errf(err, errlen, "%s: out of memory", path);
                goto fail;
            }
            e = ne;
            cap = ncap;
        }
        if (parse_line(path, line, s, &e[n], err, errlen) < 0)
            goto fail;
        n++;
    }
    if (n > 1)
        qsort(e, n, sizeof(*e), cmp_entry);
    for (uint32_t i = 1; i < n; i++) {
        if (!strcmp(e[i - 1].user, e[i].user)) {
            fy_errf(err, errlen, "%s:%u: user '%s' is already defined on line %u", path, e[i].line,
                    e[i].user, e[i - 1].line);
            goto fail;
        }
    }
    if (!(h = calloc(1, sizeof(*h)))) {
        fy_errf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    if (n == 0)
        fy_warn("%s: no users: every request will be refused", path);
    h->refs = 1;
    h->id = __atomic_add_fetch(&next_id, 1, __ATOMIC_RELAXED);
    h->e = e;
    h->n = n;
    /* An unknown user is verified against the file's first crypt(3) entry: the same algorithm
     * and cost as a real user in the usual one-format file. */
    h->dummy = NONE;
    for (uint32_t i = 0; i < n; i++)
        if (e[i].kind == K_CRYPT && (h->dummy == NONE || e[i].line < e[h->dummy].line))
            h->dummy = i;
    if (h->dummy == NONE && n)
        h->dummy = 0;
    free(buf);
    return h;
fail:
    entries_free(e, n);
    free(buf);
    return NULL;
}

struct fy_htpasswd *fy_htpasswd_ref(struct fy_htpasswd *h)
{
    __atomic_fetch_add(&h->refs, 1, __ATOMIC_RELAXED);
    return h;
}

void fy_htpasswd_unref(struct fy_htpasswd *h)
{
    if (!h || __atomic_sub_fetch(&h->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    entries_free(h->e, h->n);
    free(h);
}

size_t fy_htpasswd_count(const struct fy_htpasswd *h)
{
    return h->n;
}

static const struct entry *find_user(const struct fy_htpasswd *h, const char *user)
{
    size_t lo = 0, hi = h->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(user, h->e[mid].user);
        if (c == 0)
            return &h->e[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* ---- the cache ---- */

struct cache_entry {
    uint8_t key[32];
    uint64_t expires_ms;
    uint64_t gen;        /* the htpasswd's id, checked again on a hit */
    uint32_t user;       /* index in that htpasswd's sorted entries */
    uint32_t prev, next; /* LRU: head is the most recent; free entries use next only */
    uint32_t chain;      /* next entry in the same bucket */
};

struct fy_auth_cache {
    struct cache_entry *e;
    uint32_t cap, used;
    uint32_t *buckets; /* a power of two, at least 2 * cap */
    uint32_t nbuckets;
    uint32_t head, tail, free_list;
    uint32_t ttl_ms;
    fy_auth_clock_fn *clock;
    void *clock_ctx;
    struct crypt_data *cd; /* crypt_rn's scratch, kept so a check does not allocate 32 KiB */
};

static uint64_t monotonic_ms(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct fy_auth_cache *fy_auth_cache_new(uint32_t capacity, uint32_t ttl_ms, fy_auth_clock_fn *clock,
                                        void *clock_ctx)
{
    struct fy_auth_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->cap = capacity ? capacity : FY_AUTH_CACHE_ENTRIES;
    c->ttl_ms = ttl_ms ? ttl_ms : FY_AUTH_CACHE_TTL_MS;
    c->clock = clock ? clock : monotonic_ms;
    c->clock_ctx = clock_ctx;
    c->nbuckets = 1;
    while (c->nbuckets < c->cap * 2)
        c->nbuckets *= 2;
    c->e = calloc(c->cap, sizeof(*c->e));
    c->buckets = malloc(c->nbuckets * sizeof(*c->buckets));
    c->cd = calloc(1, sizeof(*c->cd));
    if (!c->e || !c->buckets || !c->cd) {
        fy_auth_cache_free(c);
        return NULL;
    }
    for (uint32_t i = 0; i < c->nbuckets; i++)
        c->buckets[i] = NONE;
    c->head = c->tail = NONE;
    c->free_list = 0;
    for (uint32_t i = 0; i < c->cap; i++)
        c->e[i].next = i + 1 < c->cap ? i + 1 : NONE;
    return c;
}

void fy_auth_cache_free(struct fy_auth_cache *c)
{
    if (!c)
        return;
    free(c->e);
    free(c->buckets);
    free(c->cd);
    free(c);
}

uint32_t fy_auth_cache_size(const struct fy_auth_cache *c)
{
    return c->used;
}

static uint32_t *bucket_of(struct fy_auth_cache *c, const uint8_t *key)
{
    uint32_t b;
    memcpy(&b, key, sizeof(b));
    return &c->buckets[b & (c->nbuckets - 1)];
}

static void lru_unlink(struct fy_auth_cache *c, uint32_t i)
{
    struct cache_entry *x = &c->e[i];
    if (x->prev != NONE)
        c->e[x->prev].next = x->next;
    else
        c->head = x->next;
    if (x->next != NONE)
        c->e[x->next].prev = x->prev;
    else
        c->tail = x->prev;
}

static void lru_push_front(struct fy_auth_cache *c, uint32_t i)
{
    struct cache_entry *x = &c->e[i];
    x->prev = NONE;
    x->next = c->head;
    if (c->head != NONE)
        c->e[c->head].prev = i;
    c->head = i;
    if (c->tail == NONE)
        c->tail = i;
}

static void cache_remove(struct fy_auth_cache *c, uint32_t i)
{
    for (uint32_t *p = bucket_of(c, c->e[i].key); *p != NONE; p = &c->e[*p].chain) {
        if (*p == i) {
            *p = c->e[i].chain;
            break;
        }
    }
    lru_unlink(c, i);
    c->e[i].next = c->free_list;
    c->free_list = i;
    c->used--;
}

/* The live entry for key, made the most recent; an expired one is dropped on the way. */
static struct cache_entry *cache_find(struct fy_auth_cache *c, const uint8_t *key, uint64_t now)
{
    for (uint32_t i = *bucket_of(c, key); i != NONE; i = c->e[i].chain) {
        if (memcmp(c->e[i].key, key, 32))
            continue;
        if (now >= c->e[i].expires_ms) {
            cache_remove(c, i);
            return NULL;
        }
        lru_unlink(c, i);
        lru_push_front(c, i);
        return &c->e[i];
    }
    return NULL;
}

static void cache_put(struct fy_auth_cache *c, const uint8_t *key, uint64_t gen, uint32_t user,
                      uint64_t now)
{
    if (c->free_list == NONE)
        cache_remove(c, c->tail);
    uint32_t i = c->free_list;
    struct cache_entry *x = &c->e[i];
    c->free_list = x->next;
    memcpy(x->key, key, 32);
    x->gen = gen;
    x->user = user;
    x->expires_ms = now + c->ttl_ms;
    uint32_t *b = bucket_of(c, key);
    x->chain = *b;
    *b = i;
    lru_push_front(c, i);
    c->used++;
}

/* ---- checking ---- */

static const char *const result_text[] = {
#define FY_AUTH_TEXT(name, text) text,
    FY_AUTH_RESULTS(FY_AUTH_TEXT)
#undef FY_AUTH_TEXT
};

const char *fy_auth_result_str(enum fy_auth_result r)
{
    return (unsigned)r < sizeof(result_text) / sizeof(result_text[0]) ? result_text[r] : "?";
}

uint64_t fy_htpasswd_verify_count(void)
{
    return __atomic_load_n(&verify_count, __ATOMIC_RELAXED);
}

/* 1: the password matches e; 0: it does not; -1: crypt(3) failed. */
static int verify(const struct entry *e, const char *pw, size_t pwlen, struct crypt_data *cd)
{
    __atomic_fetch_add(&verify_count, 1, __ATOMIC_RELAXED);
    if (e->kind == K_SHA1) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        if (!EVP_Digest(pw, pwlen, md, &mdlen, EVP_sha1(), NULL) || mdlen != SHA1_LEN)
            return -1;
        return CRYPTO_memcmp(md, e->sha1, SHA1_LEN) == 0;
    }
    /* crypt_rn, unlike crypt_r, returns NULL on failure instead of a "*0" string that a careless
     * comparison might take for a hash. */
    const char *out = crypt_rn(pw, e->hash, cd, (int)sizeof(*cd));
    if (!out)
        return errno == ERANGE || errno == EINVAL ? 0 : -1; /* a passphrase crypt refuses */
    size_t n = strlen(e->hash);
    return strlen(out) == n && CRYPTO_memcmp(out, e->hash, n) == 0;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

enum fy_auth_result fy_htpasswd_check(const struct fy_htpasswd *h, struct fy_auth_cache *cache,
                                      const char *value, size_t value_len, char *user_out,
                                      size_t user_cap)
{
    FY_ASSERT(!user_out || user_cap > FY_HTPASSWD_USER_MAX);
    if (!value)
        return FY_AUTH_MISSING;
    const char *p = value, *end = value + value_len;
    while (p < end && is_blank(*p))
        p++;
    while (end > p && is_blank(end[-1]))
        end--;
    const char *sp = p;
    while (sp < end && !is_blank(*sp))
        sp++;
    if (p == end)
        return FY_AUTH_MISSING;
    if (sp - p != 5 || strncasecmp(p, "basic", 5))
        return FY_AUTH_BAD_SCHEME;
    if (value_len > FY_AUTH_VALUE_MAX || sp == end)
        return FY_AUTH_MALFORMED;
    const char *b = sp;
    while (b < end && *b == ' ')
        b++;
    unsigned char cred[FY_AUTH_VALUE_MAX / 4 * 3 + 1];
    long n = end > b ? fy_base64_decode(b, (size_t)(end - b), cred) : -1;
    if (n < 0 || memchr(cred, 0, (size_t)n))
        return FY_AUTH_MALFORMED;
    cred[n] = 0;
    char *colon = memchr(cred, ':', (size_t)n);
    if (!colon)
        return FY_AUTH_MALFORMED;
    *colon = 0;
    const char *user = (const char *)cred, *pw = colon + 1;
    size_t ulen = (size_t)(colon - (char *)cred), pwlen = (size_t)n - ulen - 1;

    uint8_t key[32];
    uint64_t now = 0;
    if (cache) {
        /* The generation comes first so the same value checked against another load (a
         * reload that changed a password) is another key. */
        unsigned char in[sizeof(h->id) + FY_AUTH_VALUE_MAX];
        memcpy(in, &h->id, sizeof(h->id));
        memcpy(in + sizeof(h->id), value, value_len);
        unsigned klen = 0;
        if (!EVP_Digest(in, sizeof(h->id) + value_len, key, &klen, EVP_sha256(), NULL))
            return FY_AUTH_ERROR;
        now = cache->clock(cache->clock_ctx);
        const struct cache_entry *hit = cache_find(cache, key, now);
        if (hit && hit->gen == h->id && hit->user < h->n) {
            OPENSSL_cleanse(cred, sizeof(cred));
            if (user_out)
                memcpy(user_out, h->e[hit->user].user, h->e[hit->user].ulen + 1);
            return FY_AUTH_OK;
        }
    }
    struct crypt_data *cd = cache ? cache->cd : calloc(1, sizeof(*cd));
    if (!cd)
        return FY_AUTH_ERROR;
    const struct entry *e = ulen <= FY_HTPASSWD_USER_MAX ? find_user(h, user) : NULL;
    enum fy_auth_result r;
    if (!e) {
        /* Spend what a wrong password would, then say no. */
        if (h->dummy != NONE)
            verify(&h->e[h->dummy], pw, pwlen, cd);
        r = FY_AUTH_UNKNOWN_USER;
    } else {
        int v = verify(e, pw, pwlen, cd);
        r = v < 0 ? FY_AUTH_ERROR : v ? FY_AUTH_OK : FY_AUTH_WRONG_PASSWORD;
    }
    OPENSSL_cleanse(cred, sizeof(cred));
    if (!cache) {
        OPENSSL_cleanse(cd, sizeof(*cd));
        free(cd);
    }
    if (r == FY_AUTH_OK) {
        if (cache)
            cache_put(cache, key, h->id, (uint32_t)(e - h->e), now);
        if (user_out)
            memcpy(user_out, e->user, e->ulen + 1);
    }
    return r;
}
