/*
 * ferry.json: encode and decode on core/json.h's strict writer and reader (no lua-cjson). JSON
 * null is the ferry.json.null sentinel; decoded arrays carry the ferry.json.array metatable, so
 * an empty array survives a round trip; encode writes a table as an array when it has that
 * metatable or is a non-empty sequence (keys exactly 1..n), else as an object whose keys must all
 * be strings (members in table traversal order). Nesting is bounded by FY_JSON_MAX_DEPTH both
 * ways (a cycle is refused as too deep). Strings must be valid UTF-8; numbers must be finite.
 * Integral numbers up to 2^53 decode as Lua integers. The writer's and the DOM's memory is
 * malloc'd outside the state's cap, so both run in an inner protected call that frees it on any
 * error.
 */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "lua/lua_priv.h"

#define REG_NULL "ferry.json.null"
#define REG_ARRAY "ferry.json.array"

struct enc {
    struct fy_json_writer w;
    int null_idx, array_idx; /* stack slots of the sentinel and the array metatable */
};

/* A double in the shortest of %.15g..%.17g that reads back the same. The writer has no call
 * for this, so a null is written for the comma bookkeeping and replaced. */
static void put_double(struct fy_json_writer *w, double d)
{
    char b[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(b, sizeof(b), "%.*g", prec, d);
        if (strtod(b, NULL) == d)
            break;
    }
    fy_json_null(w);
    if (!w->failed) {
        w->len -= 4;
        fy_json_raw(w, b, strlen(b));
    }
}

static void enc_value(lua_State *L, struct enc *e, int idx, int depth);

static void enc_table(lua_State *L, struct enc *e, int idx, int depth)
{
    if (depth >= FY_JSON_MAX_DEPTH)
        luaL_error(L, "nesting deeper than %d levels (a cycle?)", FY_JSON_MAX_DEPTH);
    luaL_checkstack(L, 6, "JSON nesting");
    bool marked = false, array;
    lua_Integer n = 0, max = 0;
    if (lua_getmetatable(L, idx)) {
        marked = lua_rawequal(L, -1, e->array_idx);
        lua_pop(L, 1);
    }
    if (marked) {
        array = true;
        max = (lua_Integer)lua_rawlen(L, idx);
    } else {
        bool ints = true;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            n++;
            if (ints && lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0) {
                if (lua_tointeger(L, -1) > max)
                    max = lua_tointeger(L, -1);
            } else {
                ints = false;
            }
        }
        array = ints && n > 0 && max == n;
    }
    if (array) {
        fy_json_arr_begin(&e->w);
        for (lua_Integer i = 1; i <= max; i++) {
            lua_rawgeti(L, idx, i);
            enc_value(L, e, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
        }
        fy_json_arr_end(&e->w);
        return;
    }
    fy_json_obj_begin(&e->w);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L,
                       "object keys must be strings, not %s (and a table with keys 1..n is an "
                       "array)",
                       luaL_typename(L, -2));
        size_t klen;
        const char *k = lua_tolstring(L, -2, &klen);
        if (strlen(k) != klen)
            luaL_error(L, "object key holds a NUL byte");
        if (!fy_utf8_valid(k, klen))
            luaL_error(L, "object key is not valid UTF-8");
        fy_json_key(&e->w, k);
        enc_value(L, e, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
    }
    fy_json_obj_end(&e->w);
}

static void enc_value(lua_State *L, struct enc *e, int idx, int depth)
{
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        fy_json_null(&e->w);
        break;
    case LUA_TBOOLEAN:
        fy_json_bool(&e->w, lua_toboolean(L, idx));
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            fy_json_int(&e->w, (int64_t)lua_tointeger(L, idx));
        } else {
            double d = (double)lua_tonumber(L, idx);
            if (!isfinite(d))
                luaL_error(L, "cannot encode %s", isnan(d) ? "NaN" : "an infinite number");
            put_double(&e->w, d);
        }
        break;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        if (!fy_utf8_valid(s, n))
            luaL_error(L, "string is not valid UTF-8 (base64 binary data first)");
        fy_json_str(&e->w, s, n);
        break;
    }
    case LUA_TTABLE:
        enc_table(L, e, idx, depth);
        break;
    default:
        if (lua_rawequal(L, idx, e->null_idx)) {
            fy_json_null(&e->w);
            break;
        }
        luaL_error(L, "cannot encode a %s", luaL_typename(L, idx));
    }
}

/* Inner protected part of encode: (enc, value) -> text. */
static int encode_inner(lua_State *L)
{
    struct enc *e = lua_touserdata(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, REG_NULL);
    e->null_idx = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, REG_ARRAY);
    e->array_idx = lua_gettop(L);
    enc_value(L, e, 2, 0);
    if (e->w.failed)
        return luaL_error(L, "the text is too large");
    lua_pushlstring(L, e->w.p ? e->w.p : "", e->w.len);
    return 1;
}

/* Runs inner(arg, value at 1) protected; frees with cleanup(arg) whatever happens; rethrows an
 * error with the position of the script's call. */
static int run_inner(lua_State *L, const char *what, lua_CFunction inner, void *arg,
                     void (*cleanup)(void *))
{
    lua_settop(L, 1);
    lua_pushcfunction(L, inner);
    lua_pushlightuserdata(L, arg);
    lua_pushvalue(L, 1);
    int st = lua_pcall(L, 2, 1, 0);
    cleanup(arg);
    if (st != LUA_OK)
        return lvm_error(L, 1, "%s: %s", what,
                         lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error");
    return 1;
}

static void enc_cleanup(void *arg)
{
    fy_json_writer_free(&((struct enc *)arg)->w);
}

static int json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    struct enc e;
    fy_json_writer_init(&e.w, lvm_of(L)->mem_cap);
    return run_inner(L, "ferry.json.encode", encode_inner, &e, enc_cleanup);
}

struct dec {
    struct fy_json_doc *doc;
    int null_idx, array_idx;
};

static void build(lua_State *L, const struct dec *d, const struct fy_json *v)
{
    luaL_checkstack(L, 4, "JSON nesting");
    switch (v->type) {
    case FY_JSON_NULL:
        lua_pushvalue(L, d->null_idx);
        break;
    case FY_JSON_BOOL:
        lua_pushboolean(L, v->boolean);
        break;
    case FY_JSON_NUMBER:
        if (v->number == floor(v->number) && fabs(v->number) <= 9007199254740992.0)
            lua_pushinteger(L, (lua_Integer)v->number);
        else
            lua_pushnumber(L, (lua_Number)v->number);
        break;
    case FY_JSON_STRING:
        lua_pushlstring(L, v->str, v->len);
        break;
    case FY_JSON_ARRAY: {
        lua_createtable(L, (int)v->n, 0);
        lua_Integer i = 1;
        for (const struct fy_json *c = v->child; c; c = c->next) {
            build(L, d, c);
            lua_rawseti(L, -2, i++);
        }
        lua_pushvalue(L, d->array_idx);
        lua_setmetatable(L, -2);
        break;
    }
    case FY_JSON_OBJECT:
        lua_createtable(L, 0, (int)v->n);
        for (const struct fy_json *c = v->child; c; c = c->next) {
            lua_pushlstring(L, c->key, c->key_len);
            build(L, d, c);
            lua_rawset(L, -3);
        }
        break;
    }
}

static int decode_inner(lua_State *L)
{
    struct dec *d = lua_touserdata(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, REG_NULL);
    d->null_idx = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, REG_ARRAY);
    d->array_idx = lua_gettop(L);
    build(L, d, fy_json_root(d->doc));
    return 1;
}

static void dec_cleanup(void *arg)
{
    fy_json_doc_free(((struct dec *)arg)->doc);
}

static int json_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    size_t cap = lvm_of(L)->mem_cap;
    /* Each value becomes at least a table slot in the state, so more values than this could
     * not be built anyway; the bound keeps the DOM, which the cap does not see, in proportion. */
    struct fy_json_limits lim = {.max_bytes = cap,
                                 .max_depth = FY_JSON_MAX_DEPTH,
                                 .max_nodes =
                                     cap / 16 < (4u << 20) ? (uint32_t)(cap / 16) : (4u << 20)};
    struct fy_json_error err;
    struct dec d = {.doc = fy_json_parse(s, n, &lim, &err)};
    if (!d.doc)
        return lvm_error(L, 1, "ferry.json.decode: line %d, column %d: %s", (int)err.line,
                         (int)err.col, err.msg);
    return run_inner(L, "ferry.json.decode", decode_inner, &d, dec_cleanup);
}

static int null_tostring(lua_State *L)
{
    lua_pushliteral(L, "ferry.json.null");
    return 1;
}

void lvm_open_json(lua_State *L)
{
    static const luaL_Reg fns[] = {{"encode", json_encode}, {"decode", json_decode}, {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_newuserdatauv(L, 0, 0);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, null_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "ferry");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, REG_NULL);
    lua_setfield(L, -2, "null");
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "ferry.json.array");
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, REG_ARRAY);
    lua_setfield(L, -2, "array");
}
