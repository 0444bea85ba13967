/*
 * lua: on a listener or a route (filters/lua_hook.c runs it; docs/lua.md):
 *
 *   lua: hooks.lua
 *   lua:
 *     file: hooks.lua
 *     on-error: fail          fail (500, or a cut connection mid-body) or pass (as if no script)
 *     max-memory: 64m         the Lua state's memory, per worker
 *     max-instructions: 10000000   per call of a hook or a body filter
 *     max-decoded-size: 64m   a body filter's decoded body, at most
 *     max-ratio: 100          ... and at most this many times its encoded size (past 1 MiB)
 *
 * The script is compiled and its top level run here, in a sandboxed state of its own, so a
 * syntax or top-level error is the configuration's, with the script's FILE:LINE (ferry -t,
 * reload).
 */
#include "conf/schema.h"

#include <stdlib.h>
#include <string.h>

#include "lua/lua_vm.h"

#define DEFAULT_MAX_DECODED ((uint64_t)64 << 20)
#define DEFAULT_MAX_RATIO 100

void fy_lua_conf_free(struct fy_lua_conf *c)
{
    if (!c)
        return;
    free(c->file);
    free(c->where);
    free(c);
}

struct fy_lua_conf *fy_lua_conf_new(const char *file, const char *where, char *err, size_t errlen)
{
    if (fy_lua_check(file, err, errlen) < 0)
        return NULL;
    struct fy_lua_conf *c = calloc(1, sizeof(*c));
    if (!c || !(c->file = strdup(file)) || !(c->where = strdup(where))) {
        fy_lua_conf_free(c);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->max_memory = FY_LUA_DEFAULT_MEMORY;
    c->max_instructions = FY_LUA_DEFAULT_INSTRUCTIONS;
    c->max_decoded = DEFAULT_MAX_DECODED;
    c->max_ratio = DEFAULT_MAX_RATIO;
    return c;
}

static int load_size(struct fy_yaml_loader *l, const yaml_node_t *n, const char *what,
                     uint64_t *out)
{
    const char *raw = fy_sc_raw(l, n, what);
    if (!raw)
        return -1;
    uint64_t v;
    if (fy_parse_size(raw, &v) < 0 || v == 0) {
        fy_yaml_report(l, n->start_mark, "%s expects a size (16m, 1g), got '%s'", what, raw);
        return -1;
    }
    *out = v;
    return 0;
}

static const char *const lua_keys[] = {
    "file", "on-error", "max-memory", "max-instructions", "max-decoded-size", "max-ratio"};

struct fy_lua_conf *fy_schema_load_lua(struct fy_yaml_loader *l, const yaml_node_t *v)
{
    const yaml_node_t *file = v, *n;
    if (v->type == YAML_MAPPING_NODE) {
        if (!fy_sc_keys(l, v, "lua", lua_keys, NKEYS(lua_keys)))
            return NULL;
        if (!(file = fy_sc_get(l, v, "file"))) {
            fy_yaml_report(l, v->start_mark, "lua needs file: the script to run");
            return NULL;
        }
    }
    char *path = fy_sc_path(l, file, "lua file");
    char *where = fy_sc_where(l, v);
    char err[512];
    struct fy_lua_conf *c = path && where ? fy_lua_conf_new(path, where, err, sizeof(err)) : NULL;
    if (!c && path && where)
        fy_yaml_report(l, file->start_mark, "%s", err);
    free(path);
    free(where);
    if (!c || v->type != YAML_MAPPING_NODE)
        return c;
    if ((n = fy_sc_get(l, v, "on-error"))) {
        const char *raw = fy_sc_raw(l, n, "on-error");
        if (raw && strcmp(raw, "pass") == 0)
            c->on_error_pass = true;
        else if (raw && strcmp(raw, "fail") != 0)
            fy_yaml_report(l, n->start_mark, "on-error expects fail or pass, got '%s'", raw);
    }
    if ((n = fy_sc_get(l, v, "max-memory")))
        load_size(l, n, "max-memory", &c->max_memory);
    if ((n = fy_sc_get(l, v, "max-decoded-size")))
        load_size(l, n, "max-decoded-size", &c->max_decoded);
    uint32_t u;
    if ((n = fy_sc_get(l, v, "max-instructions")) &&
        fy_sc_u32(l, n, "max-instructions", 1000, UINT32_MAX, &u) == 0)
        c->max_instructions = u;
    if ((n = fy_sc_get(l, v, "max-ratio")) && fy_sc_u32(l, n, "max-ratio", 2, 100000, &u) == 0)
        c->max_ratio = u;
    return c;
}
