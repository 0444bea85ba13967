/*
 * JSON writer and strict reader; see json.h. The writer keeps one bit of comma state per open
 * container so callers never place separators. The reader is a recursive descent whose depth is
 * bounded by the limits (so the C stack is too); every node and decoded string lives in one
 * arena of large blocks, freed at once.
 */
#include "core/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- writer ---- */

void fy_json_writer_init(struct fy_json_writer *w, size_t max)
{
    memset(w, 0, sizeof(*w));
    w->max = max;
}

void fy_json_writer_reset(struct fy_json_writer *w)
{
    w->len = 0;
    w->failed = false;
    w->depth = 0;
    w->used = 0;
    w->after_key = false;
}

void fy_json_writer_truncate(struct fy_json_writer *w, size_t len)
{
    size_t keep = len < w->len ? len : w->len;
    fy_json_writer_reset(w);
    w->len = keep;
}

void fy_json_writer_free(struct fy_json_writer *w)
{
    free(w->p);
    w->p = NULL;
    w->len = w->cap = 0;
}

/* Room for n more bytes, or false (and `failed`) when memory or the limit runs out. */
static bool reserve(struct fy_json_writer *w, size_t n)
{
    if (w->failed)
        return false;
    if (n > w->max - w->len) {
        w->failed = true;
        return false;
    }
    if (w->len + n <= w->cap)
        return true;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < w->len + n)
        cap = cap > w->max / 2 ? w->max : cap * 2;
    char *p = realloc(w->p, cap);
    if (!p) {
        w->failed = true;
        return false;
    }
    w->p = p;
    w->cap = cap;
    return true;
}

static void put(struct fy_json_writer *w, const char *s, size_t n)
{
    if (reserve(w, n)) {
        memcpy(w->p + w->len, s, n);
        w->len += n;
    }
}

static void putc_(struct fy_json_writer *w, char c)
{
    put(w, &c, 1);
}

/* Before any value or key: the comma that separates it from the previous member. */
static void before_value(struct fy_json_writer *w)
{
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    if (!w->depth)
        return;
    uint64_t bit = 1ull << (w->depth - 1);
    if (w->used & bit)
        putc_(w, ',');
    w->used |= bit;
}

void fy_json_raw(struct fy_json_writer *w, const char *s, size_t n)
{
    put(w, s, n);
}

static void open_(struct fy_json_writer *w, char c)
{
    before_value(w);
    if (w->depth >= FY_JSON_MAX_DEPTH) {
        w->failed = true;
        return;
    }
    putc_(w, c);
    w->depth++;
    w->used &= ~(1ull << (w->depth - 1));
}

static void close_(struct fy_json_writer *w, char c)
{
    if (!w->depth || w->after_key) {
        w->failed = true;
        return;
    }
    w->depth--;
    putc_(w, c);
}

void fy_json_obj_begin(struct fy_json_writer *w)
{
    open_(w, '{');
}

void fy_json_obj_end(struct fy_json_writer *w)
{
    close_(w, '}');
}

void fy_json_arr_begin(struct fy_json_writer *w)
{
    open_(w, '[');
}

void fy_json_arr_end(struct fy_json_writer *w)
{
    close_(w, ']');
}

/* Length of the well-formed UTF-8 sequence at s[0, n), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* past U+10FFFF */
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

bool fy_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t l = utf8_seq(u + i, n - i);
        if (!l)
            return false;
        i += l;
    }
    return true;
}

static void put_escaped(struct fy_json_writer *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    putc_(w, '"');
    size_t i = 0, run = 0; /* bytes [i - run, i) are plain and not yet copied */
    while (i < n) {
        unsigned char c = u[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++;
            run++;
            continue;
        }
        if (c >= 0x80) {
            size_t l = utf8_seq(u + i, n - i);
            if (l) {
                i += l;
                run += l;
                continue;
            }
        }
        put(w, s + i - run, run);
        run = 0;
        char esc[6] = {'\\', 0};
        size_t el = 2;
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        default:
            if (c >= 0x80) {
                put(w, "\xEF\xBF\xBD", 3); /* U+FFFD for each byte that starts no sequence */
                el = 0;
            } else {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                el = 6;
            }
        }
        put(w, esc, el);
        i++;
    }
    put(w, s + i - run, run);
    putc_(w, '"');
}

void fy_json_key(struct fy_json_writer *w, const char *key)
{
    if (!w->depth || w->after_key) {
        w->failed = true;
        return;
    }
    before_value(w);
    put_escaped(w, key, strlen(key));
    putc_(w, ':');
    w->after_key = true;
}

void fy_json_str(struct fy_json_writer *w, const char *s, size_t n)
{
    before_value(w);
    put_escaped(w, s, n);
}

void fy_json_cstr(struct fy_json_writer *w, const char *s)
{
    if (s)
        fy_json_str(w, s, strlen(s));
    else
        fy_json_null(w);
}

void fy_json_int(struct fy_json_writer *w, int64_t v)
{
    char b[24];
    int n = snprintf(b, sizeof(b), "%lld", (long long)v);
    before_value(w);
    put(w, b, (size_t)n);
}

void fy_json_fixed(struct fy_json_writer *w, double v, int decimals)
{
    if (!isfinite(v)) {
        fy_json_null(w);
        return;
    }
    if (decimals < 0)
        decimals = 0;
    if (decimals > 9)
        decimals = 9;
    char b[64];
    int n = snprintf(b, sizeof(b), "%.*f", decimals, v);
    if (n < 0 || (size_t)n >= sizeof(b)) {
        n = snprintf(b, sizeof(b), "%.17g", v); /* huge magnitudes: still valid JSON */
    } else if (decimals) {
        while (b[n - 1] == '0')
            n--;
        if (b[n - 1] == '.')
            n--;
    }
    if (n == 2 && b[0] == '-' && b[1] == '0')
        b[0] = '0', n = 1; /* "-0" from rounding a tiny negative */
    before_value(w);
    put(w, b, (size_t)n);
}

void fy_json_bool(struct fy_json_writer *w, bool v)
{
    before_value(w);
    put(w, v ? "true" : "false", v ? 4 : 5);
}

void fy_json_null(struct fy_json_writer *w)
{
    before_value(w);
    put(w, "null", 4);
}

void fy_json_base64(struct fy_json_writer *w, const void *data, size_t n)
{
    before_value(w);
    size_t len = fy_base64_len(n);
    if (!reserve(w, len + 2))
        return;
    w->p[w->len++] = '"';
    w->len += fy_base64_encode(data, n, w->p + w->len);
    w->p[w->len++] = '"';
}

/* ---- base64 ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t fy_base64_encode(const void *in, size_t n, char *out)
{
    const unsigned char *s = in;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
        out[o++] = b64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    return o;
}

static int b64_val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long fy_base64_decode(const char *in, size_t n, void *out)
{
    unsigned char *d = out;
    size_t o = 0;
    if (n % 4)
        return -1;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            if (in[i + k] == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad || (v[k] = b64_val(in[i + k])) < 0) {
                return -1; /* '=' only at the end, and nothing after it */
            }
        }
        uint32_t x =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        if ((pad == 2 && (x & 0xffff)) || (pad == 1 && (x & 0xff)))
            return -1; /* bits the padding leaves over are zero: one encoding per byte string */
        d[o++] = (unsigned char)(x >> 16);
        if (pad < 2)
            d[o++] = (unsigned char)(x >> 8);
        if (pad < 1)
            d[o++] = (unsigned char)x;
    }
    return (long)o;
}

/* ---- reader ---- */

const struct fy_json_limits fy_json_default_limits = {
    .max_bytes = 64u << 20, .max_depth = 32, .max_nodes = 4u << 20};

#define ARENA_BLOCK (64 * 1024)

struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    char data[];
};

struct fy_json_doc {
    struct arena_block *blocks;
    struct fy_json *root;
};

struct parser {
    const char *s, *end, *p;
    uint32_t depth, nodes;
    const struct fy_json_limits *lim;
    struct fy_json_doc *doc;
    struct fy_json_error *err;
    bool oom;
};

static void *arena_alloc(struct parser *ps, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    struct arena_block *b = ps->doc->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
        b = malloc(sizeof(*b) + cap);
        if (!b) {
            ps->oom = true;
            return NULL;
        }
        b->used = 0;
        b->cap = cap;
        b->next = ps->doc->blocks;
        ps->doc->blocks = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

/* Records the first error at `at` and returns -1. */
static int fail(struct parser *ps, const char *at, const char *msg)
{
    if (ps->oom) {
        ps->err->line = ps->err->col = 0;
        snprintf(ps->err->msg, sizeof(ps->err->msg), "out of memory");
        return -1;
    }
    uint32_t line = 1;
    const char *ls = ps->s;
    for (const char *q = ps->s; q < at; q++)
        if (*q == '\n') {
            line++;
            ls = q + 1;
        }
    ps->err->line = line;
    ps->err->col = (uint32_t)(at - ls) + 1;
    snprintf(ps->err->msg, sizeof(ps->err->msg), "%s", msg);
    return -1;
}

static void skip_ws(struct parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int hex4(const char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 63));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 63));
        o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63));
    o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

/* A string starting at the opening quote; the decoded text goes into the arena. A decoded
 * string is never longer than its source (an escape of 6 or 12 bytes yields at most 4). */
static int parse_string(struct parser *ps, const char **out, size_t *outlen)
{
    const char *start = ++ps->p;
    const char *q = start;
    while (q < ps->end && *q != '"') {
        if (*q == '\\' && q + 1 < ps->end)
            q++;
        q++;
    }
    if (q >= ps->end)
        return fail(ps, ps->end, "unterminated string");
    char *o = arena_alloc(ps, (size_t)(q - start) + 1);
    if (!o)
        return fail(ps, ps->p, "out of memory");
    size_t n = 0;
    const char *p = start;
    while (p < q) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20)
            return fail(ps, p, "control character in a string (must be escaped)");
        if (c >= 0x80) {
            size_t l = utf8_seq((const unsigned char *)p, (size_t)(q - p));
            if (!l)
                return fail(ps, p, "invalid UTF-8 in a string");
            memcpy(o + n, p, l);
            n += l;
            p += l;
            continue;
        }
        if (c != '\\') {
            o[n++] = (char)c;
            p++;
            continue;
        }
        const char *esc = p++;
        switch (*p) {
        case '"':
        case '\\':
        case '/':
            o[n++] = *p;
            break;
        case 'b':
            o[n++] = '\b';
            break;
        case 'f':
            o[n++] = '\f';
            break;
        case 'n':
            o[n++] = '\n';
            break;
        case 'r':
            o[n++] = '\r';
            break;
        case 't':
            o[n++] = '\t';
            break;
        case 'u': {
            uint32_t cp;
            if (q - p < 5 || hex4(p + 1, &cp) < 0)
                return fail(ps, esc, "invalid \\u escape (expected 4 hex digits)");
            p += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return fail(ps, esc, "invalid \\u escape (a lone low surrogate)");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (q - p < 7 || p[1] != '\\' || p[2] != 'u' || hex4(p + 3, &lo) < 0 ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return fail(ps, esc, "invalid \\u escape (a high surrogate without its pair)");
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            n += put_utf8(o + n, cp);
            break;
        }
        default:
            return fail(ps, esc, "invalid escape in a string");
        }
        p++;
    }
    o[n] = '\0';
    *out = o;
    *outlen = n;
    ps->p = q + 1;
    return 0;
}

static int parse_number(struct parser *ps, double *out)
{
    const char *p = ps->p, *start = p;
    if (p < ps->end && *p == '-')
        p++;
    if (p < ps->end && *p == '0')
        p++;
    else if (p < ps->end && *p >= '1' && *p <= '9')
        while (p < ps->end && *p >= '0' && *p <= '9')
            p++;
    else
        return fail(ps, p, "invalid number");
    if (p < ps->end && *p == '.') {
        p++;
        if (p >= ps->end || *p < '0' || *p > '9')
            return fail(ps, p, "invalid number (expected a digit after '.')");
        while (p < ps->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < ps->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < ps->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= ps->end || *p < '0' || *p > '9')
            return fail(ps, p, "invalid number (expected a digit in the exponent)");
        while (p < ps->end && *p >= '0' && *p <= '9')
            p++;
    }
    char buf[128];
    size_t len = (size_t)(p - start);
    if (len >= sizeof(buf))
        return fail(ps, start, "number too long (more than 127 characters)");
    memcpy(buf, start, len);
    buf[len] = '\0';
    *out = strtod(buf, NULL);
    ps->p = p;
    return 0;
}

static int parse_value(struct parser *ps, struct fy_json *v);

static bool literal(struct parser *ps, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n))
        return false;
    ps->p += n;
    return true;
}

static struct fy_json *new_node(struct parser *ps)
{
    if (++ps->nodes > ps->lim->max_nodes) {
        fail(ps, ps->p, "too many values in one document");
        return NULL;
    }
    struct fy_json *v = arena_alloc(ps, sizeof(*v));
    if (!v) {
        fail(ps, ps->p, "out of memory");
        return NULL;
    }
    memset(v, 0, sizeof(*v));
    return v;
}

static int parse_container(struct parser *ps, struct fy_json *v, bool object)
{
    char close = object ? '}' : ']';
    if (++ps->depth > ps->lim->max_depth) {
        char m[64];
        snprintf(m, sizeof(m), "nesting deeper than %u levels", ps->lim->max_depth);
        return fail(ps, ps->p, m);
    }
    v->type = object ? FY_JSON_OBJECT : FY_JSON_ARRAY;
    ps->p++;
    skip_ws(ps);
    struct fy_json **tail = &v->child;
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        ps->depth--;
        return 0;
    }
    for (;;) {
        struct fy_json *c = new_node(ps);
        if (!c)
            return -1;
        if (object) {
            if (ps->p >= ps->end || *ps->p != '"')
                return fail(ps, ps->p, "expected a string (the name of a member)");
            if (parse_string(ps, &c->key, &c->key_len) < 0)
                return -1;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':')
                return fail(ps, ps->p, "expected ':'");
            ps->p++;
            skip_ws(ps);
        }
        if (parse_value(ps, c) < 0)
            return -1;
        *tail = c;
        tail = &c->next;
        v->n++;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            skip_ws(ps);
            continue;
        }
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            ps->depth--;
            return 0;
        }
        return fail(ps, ps->p, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int parse_value(struct parser *ps, struct fy_json *v)
{
    if (ps->p >= ps->end)
        return fail(ps, ps->p, "unexpected end of input (expected a value)");
    switch (*ps->p) {
    case '{':
        return parse_container(ps, v, true);
    case '[':
        return parse_container(ps, v, false);
    case '"':
        v->type = FY_JSON_STRING;
        return parse_string(ps, &v->str, &v->len);
    case 't':
    case 'f':
    case 'n':
        if (literal(ps, "true") || literal(ps, "false")) {
            v->type = FY_JSON_BOOL;
            v->boolean = ps->p[-4] == 't';
            return 0;
        }
        if (literal(ps, "null")) {
            v->type = FY_JSON_NULL;
            return 0;
        }
        return fail(ps, ps->p, "expected a value");
    default:
        if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9')) {
            v->type = FY_JSON_NUMBER;
            return parse_number(ps, &v->number);
        }
        return fail(ps, ps->p, "expected a value");
    }
}

struct fy_json_doc *fy_json_parse(const char *s, size_t n, const struct fy_json_limits *lim,
                                  struct fy_json_error *err)
{
    if (!lim)
        lim = &fy_json_default_limits;
    struct fy_json_doc *doc = calloc(1, sizeof(*doc));
    struct parser ps = {.s = s, .end = s + n, .p = s, .lim = lim, .doc = doc, .err = err};
    if (!doc) {
        ps.oom = true;
        fail(&ps, s, "out of memory");
        return NULL;
    }
    if (n > lim->max_bytes) {
        char m[80];
        snprintf(m, sizeof(m), "longer than %zu bytes", lim->max_bytes);
        fail(&ps, s, m);
        goto fail_doc;
    }
    skip_ws(&ps);
    if (!(doc->root = new_node(&ps)) || parse_value(&ps, doc->root) < 0)
        goto fail_doc;
    skip_ws(&ps);
    if (ps.p != ps.end) {
        fail(&ps, ps.p, "unexpected characters after the value");
        goto fail_doc;
    }
    return doc;

fail_doc:
    fy_json_doc_free(doc);
    return NULL;
}

const struct fy_json *fy_json_root(const struct fy_json_doc *doc)
{
    return doc->root;
}

void fy_json_doc_free(struct fy_json_doc *doc)
{
    if (!doc)
        return;
    struct arena_block *b = doc->blocks;
    while (b) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
    free(doc);
}

const struct fy_json *fy_json_get(const struct fy_json *v, const char *key)
{
    if (!v || v->type != FY_JSON_OBJECT)
        return NULL;
    size_t kl = strlen(key);
    for (const struct fy_json *c = v->child; c; c = c->next)
        if (c->key_len == kl && !memcmp(c->key, key, kl))
            return c;
    return NULL;
}

const struct fy_json *fy_json_get_type(const struct fy_json *v, const char *key,
                                       enum fy_json_type type)
{
    const struct fy_json *c = fy_json_get(v, key);
    return c && c->type == type ? c : NULL;
}

bool fy_json_get_num(const struct fy_json *v, const char *key, double *out)
{
    const struct fy_json *c = fy_json_get_type(v, key, FY_JSON_NUMBER);
    if (c)
        *out = c->number;
    return c != NULL;
}
