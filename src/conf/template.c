/*
 * Value templates (template.h has the syntax). Compiling splits the raw text into segments:
 * literals (with ${env:}/${file:} already expanded into them) and per-request variables or
 * captures. Every literal's bytes live in one block owned by the template, so rendering is a
 * walk over the segments with memcpy and no allocation.
 */
#include "conf/template.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config.h"
#include "conf/yaml_priv.h"
#include "core/log.h"

static const char *const var_names[] = {
#define X(id, name) name,
    FY_TEMPLATE_VARS(X)
#undef X
};
#define NVARS (sizeof(var_names) / sizeof(var_names[0]))

/* The segments and the literal block while compiling: literal segments hold offsets into the
 * block (it moves as it grows) until finish() turns them into pointers. */
struct build {
    struct fy_tseg *segs;
    uint32_t nsegs, cap;
    char *block;
    size_t len, bcap;
    size_t *offs; /* per segment: its literal's offset in block */
};

static int grow_block(struct build *b, size_t more)
{
    if (b->len + more + 1 <= b->bcap)
        return 0;
    size_t ncap = (b->len + more + 1) * 2;
    char *nb = realloc(b->block, ncap);
    if (!nb)
        return -1;
    b->block = nb;
    b->bcap = ncap;
    return 0;
}

static int add_seg(struct build *b, enum fy_tvar var, int capture)
{
    if (b->nsegs == b->cap) {
        uint32_t ncap = b->cap ? b->cap * 2 : 4;
        struct fy_tseg *ns = realloc(b->segs, ncap * sizeof(*ns));
        if (!ns)
            return -1;
        b->segs = ns;
        size_t *no = realloc(b->offs, ncap * sizeof(*no));
        if (!no)
            return -1;
        b->offs = no;
        b->cap = ncap;
    }
    b->segs[b->nsegs] = (struct fy_tseg){.var = var, .capture = capture};
    b->offs[b->nsegs] = b->len;
    b->nsegs++;
    return 0;
}

/* Appends literal text, merged into the previous segment when that is a literal too. */
static int add_literal(struct build *b, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    if (n > UINT32_MAX - b->len || grow_block(b, n) < 0)
        return -1;
    if (b->nsegs == 0 || b->segs[b->nsegs - 1].var != FY_TV_LITERAL)
        if (add_seg(b, FY_TV_LITERAL, 0) < 0)
            return -1;
    memcpy(b->block + b->len, s, n);
    b->len += n;
    b->block[b->len] = 0;
    b->segs[b->nsegs - 1].len += (uint32_t)n;
    return 0;
}

/* A ${env:NAME} or ${file:PATH} at s, expanded with fy_expand() so the rules (trimming, base
 * directory, size limit) are those of every other value. Returns its length in s, or 0 with err. */
static size_t expand_ref(struct build *b, const char *s, const char *base_dir, char *err,
                         size_t errlen)
{
    const char *close = strchr(s, '}');
    if (!close) {
        fy_errf(err, errlen, "malformed ${env:NAME} or ${file:PATH}: no closing '}'");
        return 0;
    }
    size_t n = (size_t)(close - s) + 1;
    char *ref = strndup(s, n);
    if (!ref) {
        fy_errf(err, errlen, "out of memory");
        return 0;
    }
    enum fy_expand_error e;
    char *what;
    char *v = fy_expand(ref, base_dir, &e, &what);
    free(ref);
    if (!v) {
        if (e == FY_EXPAND_NO_ENV)
            fy_errf(err, errlen, "environment variable %s is not set", what ? what : "?");
        else if (e == FY_EXPAND_NO_FILE)
            fy_errf(err, errlen, "cannot read ${file:...} %s", what ? what : "");
        else if (e == FY_EXPAND_MALFORMED)
            fy_errf(err, errlen, "malformed ${env:NAME} or ${file:PATH} in '%.*s'", (int)n, s);
        else
            fy_errf(err, errlen, "out of memory");
        free(what);
        return 0;
    }
    int rc = add_literal(b, v, strlen(v));
    free(v);
    if (rc < 0) {
        fy_errf(err, errlen, "out of memory");
        return 0;
    }
    return n;
}

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static int unknown_var(const char *name, size_t n, char *err, size_t errlen)
{
    char key[64];
    snprintf(key, sizeof(key), "%.*s", (int)(n < 63 ? n : 63), name);
    const char *near = fy_yaml_suggest(key, var_names + 2, NVARS - 2);
    if (near)
        return fy_errf(err, errlen, "unknown variable $%.*s (did you mean $%s?)", (int)n, name,
                       near);
    return fy_errf(err, errlen,
                   "unknown variable $%.*s (the variables are $host, $scheme, $client_ip, "
                   "$request_id, $method, $path, $query, $request_uri, the $tls_* ones; $$ is "
                   "a literal $)",
                   (int)n, name);
}

/* parse_dollar()'s failure: 0 bytes used. */
static size_t oom(char *err, size_t errlen)
{
    fy_errf(err, errlen, "out of memory");
    return 0;
}

/* A '$' at s (not ${env:}/${file:}): $$, $0..$9, $name or ${name}. Returns the length used, or
 * 0 with err. */
static size_t parse_dollar(struct build *b, const char *s, unsigned flags, char *err, size_t errlen)
{
    if (s[1] == '$')
        return add_literal(b, "$", 1) < 0 ? oom(err, errlen) : 2;
    if (s[1] >= '0' && s[1] <= '9') {
        if (!(flags & FY_TPL_CAPTURES) || (flags & FY_TPL_NO_VARS)) {
            fy_errf(err, errlen, "captures like $%c need a path-regex (write $$ for a literal $)",
                    s[1]);
            return 0;
        }
        if (add_seg(b, FY_TV_CAPTURE, s[1] - '0') < 0)
            return oom(err, errlen);
        return 2;
    }
    bool braced = s[1] == '{';
    const char *name = s + 1 + braced;
    size_t n = 0;
    while (name_char(name[n]))
        n++;
    if (n == 0 || (braced && name[n] != '}')) {
        fy_errf(err, errlen,
                "'$' starts a variable ($host, ${host}), a capture ($1) or $$ for a literal $; "
                "got '%.*s'",
                (int)(strlen(s) < 12 ? strlen(s) : 12), s);
        return 0;
    }
    size_t v = 2; /* after LITERAL and CAPTURE */
    while (v < NVARS && (strlen(var_names[v]) != n || memcmp(var_names[v], name, n)))
        v++;
    if (v == NVARS) {
        unknown_var(name, n, err, errlen);
        return 0;
    }
    if (flags & FY_TPL_NO_VARS) {
        fy_errf(err, errlen,
                "$%.*s: variables cannot be used here, only ${env:NAME} and ${file:PATH} (write "
                "$$ for a literal $)",
                (int)n, name);
        return 0;
    }
    if (add_seg(b, (enum fy_tvar)v, 0) < 0)
        return oom(err, errlen);
    return 1 + braced + n + braced;
}

int fy_template_compile(struct fy_template *t, const char *src, unsigned flags,
                        const char *base_dir, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    struct build b = {0};
    if (grow_block(&b, 0) < 0)
        goto fail_oom;
    b.block[0] = 0;
    for (const char *s = src; *s;) {
        if (*s != '$') {
            size_t n = strcspn(s, "$");
            if (add_literal(&b, s, n) < 0)
                goto fail_oom;
            s += n;
            continue;
        }
        size_t used;
        if (!strncmp(s, "${env:", 6) || !strncmp(s, "${file:", 7))
            used = expand_ref(&b, s, base_dir, err, errlen);
        else
            used = parse_dollar(&b, s, flags, err, errlen);
        if (!used)
            goto fail;
        s += used;
    }
    t->source = strdup(src);
    if (!t->source)
        goto fail_oom;
    bool constant = true;
    for (uint32_t i = 0; i < b.nsegs; i++) {
        if (b.segs[i].var == FY_TV_LITERAL)
            b.segs[i].text = b.block + b.offs[i];
        else
            constant = false;
    }
    free(b.offs);
    t->segs = b.segs;
    t->nsegs = b.nsegs;
    t->block = b.block;
    if (constant) {
        t->constant = b.block;
        t->constant_len = (uint32_t)b.len;
    }
    return 0;
fail_oom:
    fy_errf(err, errlen, "out of memory");
fail:
    free(b.segs);
    free(b.offs);
    free(b.block);
    free(t->source);
    memset(t, 0, sizeof(*t));
    return -1;
}

void fy_template_free(struct fy_template *t)
{
    free(t->segs);
    free(t->block);
    free(t->source);
    memset(t, 0, sizeof(*t));
}

/* The bytes a segment stands for in this request (NULL, 0 for an unset capture). */
static const char *seg_value(const struct fy_tseg *s, const struct fy_tctx *c, size_t *len)
{
    switch (s->var) {
    case FY_TV_LITERAL:
        *len = s->len;
        return s->text;
    case FY_TV_CAPTURE: {
        uint32_t i = (uint32_t)s->capture;
        *len = 0;
        if (!c->ovector || i >= c->ncaptures)
            return NULL;
        size_t lo = c->ovector[2 * i], hi = c->ovector[2 * i + 1];
        if (lo == ~(size_t)0 || hi == ~(size_t)0 || hi < lo) /* PCRE2_UNSET: did not match */
            return NULL;
        *len = hi - lo;
        return c->subject + lo;
    }
    case FY_TV_HOST:
        *len = c->host_len;
        return c->host;
    case FY_TV_SCHEME:
        *len = c->scheme_len;
        return c->scheme;
    case FY_TV_CLIENT_IP:
        *len = c->client_ip_len;
        return c->client_ip;
    case FY_TV_REQUEST_ID:
        *len = c->request_id_len;
        return c->request_id;
    case FY_TV_METHOD:
        *len = c->method_len;
        return c->method;
    case FY_TV_PATH:
        *len = c->path_len;
        return c->path;
    case FY_TV_QUERY:
        *len = c->query_len;
        return c->query;
    case FY_TV_REQUEST_URI:
        *len = c->request_uri_len;
        return c->request_uri;
    case FY_TV_TLS_VERSION:
    case FY_TV_TLS_CIPHER:
    case FY_TV_TLS_SERVER_NAME:
    case FY_TV_TLS_CLIENT_SUBJECT:
    case FY_TV_TLS_CLIENT_FINGERPRINT:
    case FY_TV_TLS_CLIENT_VERIFY: {
        uint32_t n = 0;
        const char *v = c->lazy ? c->lazy(c->lazy_arg, s->var, &n) : NULL;
        *len = v ? n : 0;
        return v;
    }
    }
    *len = 0;
    return NULL;
}

size_t fy_template_max_len(const struct fy_template *t, const struct fy_tctx *ctx)
{
    size_t total = 0, len;
    for (uint32_t i = 0; i < t->nsegs; i++) {
        seg_value(&t->segs[i], ctx, &len);
        total += len;
    }
    return total;
}

size_t fy_template_render(const struct fy_template *t, const struct fy_tctx *ctx, char *out)
{
    size_t n = 0, len;
    for (uint32_t i = 0; i < t->nsegs; i++) {
        const char *v = seg_value(&t->segs[i], ctx, &len);
        if (v && len) {
            memcpy(out + n, v, len);
            n += len;
        }
    }
    return n;
}
