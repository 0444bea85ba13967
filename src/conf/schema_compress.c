/*
 * compress: on a listener or a route (filters/compress.c applies it; docs/config.md):
 *
 *   compress: on                     every default (off on a route turns the listener's off)
 *   compress:
 *     types: [text/html, application/json]  media types to compress, '*' matching any run of
 *                                           characters (default: every text type, JSON,
 *                                           JavaScript, XML, SVG, WebAssembly, like Caddy)
 *     min-size: 1k                          a Content-Length below this is sent as it is
 *     gzip: { level: 6 }                    naming any coding enables only the ones named
 *     brotli: { level: 4 }
 *     zstd: { level: 3 }
 *     prefer: [zstd, br, gzip]              ties between codings the client accepts equally
 */
#include "conf/schema.h"

#include <stdlib.h>
#include <string.h>

#include "filters/codec.h"

static const char *const default_types[] = {
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/xml",
    "application/*+xml",
    "application/wasm",
    "image/svg+xml",
};

/* The preference when none is given: zstd and brotli make smaller bodies than gzip for the same
 * CPU at their default levels; gzip is for the clients that know nothing else. */
static const uint8_t default_prefer[FY_COMPRESS_CODINGS] = {FY_CODING_ZSTD, FY_CODING_BR,
                                                            FY_CODING_GZIP};

#define DEFAULT_MIN_SIZE 1024

struct coding_key {
    const char *key;
    uint8_t coding;
    uint8_t min, max, def;
};
static const struct coding_key coding_keys[FY_COMPRESS_CODINGS] = {
    {"gzip", FY_CODING_GZIP, 1, 9, 6},
    {"brotli", FY_CODING_BR, 0, 11, 4},
    {"zstd", FY_CODING_ZSTD, 1, 19, 3},
};

void fy_compress_conf_free(struct fy_compress_conf *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; i < c->ntypes; i++)
        free(c->types[i]);
    free(c->types);
    free(c);
}

static struct fy_compress_conf *new_conf(bool on)
{
    struct fy_compress_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->on = on;
    memcpy(c->prefer, default_prefer, sizeof(default_prefer));
    c->nprefer = FY_COMPRESS_CODINGS;
    for (size_t i = 0; i < FY_COMPRESS_CODINGS; i++)
        c->level[coding_keys[i].coding] = coding_keys[i].def;
    c->min_size = DEFAULT_MIN_SIZE;
    return c;
}

static int set_types(struct fy_compress_conf *c, const char *const *types, uint32_t n)
{
    c->types = calloc(n ? n : 1, sizeof(*c->types));
    if (!c->types)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        c->types[i] = strdup(types[i]);
        if (!c->types[i])
            return -1;
        for (char *p = c->types[i]; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        c->ntypes = i + 1;
    }
    return 0;
}

struct fy_compress_conf *fy_compress_conf_default(void)
{
    struct fy_compress_conf *c = new_conf(true);
    if (c && set_types(c, default_types, NKEYS(default_types)) < 0) {
        fy_compress_conf_free(c);
        return NULL;
    }
    return c;
}

/* A media type pattern: type/subtype, where either part may hold one '*'. */
static bool type_pattern_ok(const char *t)
{
    const char *slash = strchr(t, '/');
    if (!slash || slash == t || !slash[1] || strchr(slash + 1, '/'))
        return false;
    for (const char *p = t; *p; p++)
        if (*p != '/' && *p != '*' && *p != '+' && *p != '.' && *p != '-' && !fy_sc_is_token(p, 1))
            return false;
    return true;
}

static void load_types(struct fy_yaml_loader *l, struct fy_compress_conf *c, const yaml_node_t *v)
{
    size_t n = fy_sc_nitems(l, v, "types");
    char **types = calloc(n ? n : 1, sizeof(*types));
    if (!types) {
        fy_yaml_report(l, v->start_mark, "out of memory");
        return;
    }
    uint32_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *item = fy_sc_item(l, v, i);
        char *t = fy_sc_string(l, item, "types");
        if (!t)
            continue;
        if (!type_pattern_ok(t)) {
            fy_yaml_report(l, item->start_mark,
                           "types expects media types such as text/html, application/json or "
                           "text/*, got '%s'",
                           t);
            free(t);
            continue;
        }
        types[k++] = t;
    }
    if (set_types(c, (const char *const *)types, k) < 0)
        fy_yaml_report(l, v->start_mark, "out of memory");
    for (uint32_t i = 0; i < k; i++)
        free(types[i]);
    free(types);
}

/* gzip: { level: N } (or on/off). Returns 1 when the coding is enabled, 0 when off, -1 on error. */
static int load_coding(struct fy_yaml_loader *l, struct fy_compress_conf *c,
                       const struct coding_key *ck, const yaml_node_t *v)
{
    bool b;
    if (v->type == YAML_SCALAR_NODE || fy_sc_is_null(v)) {
        if (fy_sc_is_null(v))
            return 1;
        return fy_sc_bool(l, v, ck->key, &b) < 0 ? -1 : b;
    }
    static const char *const keys[] = {"level"};
    if (!fy_sc_keys(l, v, ck->key, keys, 1))
        return -1;
    const yaml_node_t *n = fy_sc_get(l, v, "level");
    if (n) {
        uint32_t level;
        char what[32];
        snprintf(what, sizeof(what), "%s level", ck->key);
        if (fy_sc_u32(l, n, what, ck->min, ck->max, &level) < 0)
            return -1;
        c->level[ck->coding] = (uint8_t)level;
    }
    return 1;
}

static void load_prefer(struct fy_yaml_loader *l, struct fy_compress_conf *c, const yaml_node_t *v,
                        const bool *enabled)
{
    uint8_t prefer[FY_COMPRESS_CODINGS];
    uint8_t n = 0;
    size_t k = fy_sc_nitems(l, v, "prefer");
    for (size_t i = 0; i < k; i++) {
        const yaml_node_t *item = fy_sc_item(l, v, i);
        const char *name = fy_sc_raw(l, item, "prefer");
        if (!name)
            continue;
        int coding =
            strcmp(name, "brotli") == 0 ? FY_CODING_BR : fy_coding_parse(name, strlen(name));
        bool known = coding == FY_CODING_GZIP || coding == FY_CODING_BR || coding == FY_CODING_ZSTD;
        if (!known) {
            fy_yaml_report(l, item->start_mark,
                           "prefer expects codings among gzip, br and zstd, "
                           "got '%s'",
                           name);
            continue;
        }
        bool dup = false;
        for (uint8_t j = 0; j < n; j++)
            dup |= prefer[j] == coding;
        if (dup) {
            fy_yaml_report(l, item->start_mark, "prefer names %s twice", name);
            continue;
        }
        prefer[n++] = (uint8_t)coding;
    }
    /* Enabled codings the list does not name come after it, in the default order. */
    for (size_t i = 0; i < FY_COMPRESS_CODINGS; i++) {
        bool listed = false;
        for (uint8_t j = 0; j < n; j++)
            listed |= prefer[j] == default_prefer[i];
        if (!listed && n < FY_COMPRESS_CODINGS)
            prefer[n++] = default_prefer[i];
    }
    c->nprefer = 0;
    for (uint8_t j = 0; j < n; j++)
        for (size_t i = 0; i < FY_COMPRESS_CODINGS; i++)
            if (coding_keys[i].coding == prefer[j] && enabled[i])
                c->prefer[c->nprefer++] = prefer[j];
}

static const char *const compress_keys[] = {"types",  "min-size", "gzip",
                                            "brotli", "zstd",     "prefer"};

struct fy_compress_conf *fy_schema_load_compress(struct fy_yaml_loader *l, const yaml_node_t *v)
{
    if (v->type == YAML_SCALAR_NODE && !fy_sc_is_null(v)) {
        bool on;
        if (fy_sc_bool(l, v, "compress", &on) < 0)
            return NULL;
        struct fy_compress_conf *c = on ? fy_compress_conf_default() : new_conf(false);
        if (!c)
            fy_yaml_report(l, v->start_mark, "out of memory");
        return c;
    }
    if (fy_sc_is_null(v))
        return fy_compress_conf_default();
    if (!fy_sc_keys(l, v, "compress", compress_keys, NKEYS(compress_keys)))
        return NULL;
    struct fy_compress_conf *c = new_conf(true);
    if (!c) {
        fy_yaml_report(l, v->start_mark, "out of memory");
        return NULL;
    }
    const yaml_node_t *n;
    if ((n = fy_sc_get(l, v, "types")))
        load_types(l, c, n);
    else if (set_types(c, default_types, NKEYS(default_types)) < 0)
        fy_yaml_report(l, v->start_mark, "out of memory");
    if ((n = fy_sc_get(l, v, "min-size"))) {
        const char *raw = fy_sc_raw(l, n, "min-size");
        if (raw && fy_parse_size(raw, &c->min_size) < 0)
            fy_yaml_report(l, n->start_mark, "min-size expects a size (512, 1k, 64k), got '%s'",
                           raw);
    }
    bool named = false, enabled[FY_COMPRESS_CODINGS];
    for (size_t i = 0; i < FY_COMPRESS_CODINGS; i++)
        named |= fy_sc_get(l, v, coding_keys[i].key) != NULL;
    for (size_t i = 0; i < FY_COMPRESS_CODINGS; i++) {
        n = fy_sc_get(l, v, coding_keys[i].key);
        enabled[i] = !named || (n && load_coding(l, c, &coding_keys[i], n) == 1);
    }
    bool any = false;
    for (size_t i = 0; i < FY_COMPRESS_CODINGS; i++)
        any |= enabled[i];
    if (!any)
        fy_yaml_report(l, v->start_mark,
                       "compress: every coding is off (use compress: off to turn it off)");
    if ((n = fy_sc_get(l, v, "prefer")))
        load_prefer(l, c, n, enabled);
    else {
        c->nprefer = 0;
        for (size_t j = 0; j < FY_COMPRESS_CODINGS; j++)
            for (size_t i = 0; i < FY_COMPRESS_CODINGS; i++)
                if (coding_keys[i].coding == default_prefer[j] && enabled[i])
                    c->prefer[c->nprefer++] = default_prefer[j];
    }
    return c;
}
