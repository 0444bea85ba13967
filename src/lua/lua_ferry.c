/*
 * The global `ferry` table: log, base64, url, mime, is_text (json is lua_json.c), and the
 * sandbox's print. Everything here is pure computation on strings, apart from logging, which
 * goes through core/log.h (one write(2) a line, as the rest of ferry logs).
 *
 *   ferry.log([level,] msg)      level "debug", "info" (default), "warn" or "error"; the line is
 *                                prefixed with the script's FILE:LINE; control bytes become spaces
 *   ferry.base64.encode(s)       standard alphabet, padded
 *   ferry.base64.decode(s)       strict (padding required): the bytes, or nil and a message
 *   ferry.base64.encode_url(s)   base64url without padding (JWT segments)
 *   ferry.base64.decode_url(s)   base64url, padding optional: the bytes, or nil and a message
 *   ferry.url.parse(u)           {scheme, userinfo, host, port, path, query, fragment}: host
 *                                without IPv6 brackets, port an integer, path "/" when an
 *                                authority has none, query without '?'; absent parts nil; a
 *                                relative "/p?q" gives only path and query. nil, message when
 *                                the port is bad.
 *   ferry.url.parse_query(q)     name -> value (decoded, '+' is a space); a repeated name keeps
 *                                its LAST value; the second result maps each name to the list
 *                                of all its values. A leading '?' is skipped.
 *   ferry.url.escape(s)          percent-encodes all but A-Z a-z 0-9 - . _ ~
 *   ferry.url.unescape(s)        decodes %XX; a malformed escape stays as it is; '+' stays
 *   ferry.mime(v)                "text/html", {charset = "utf-8"}: the media type lowercased
 *                                without parameters, parameter names lowercased, values
 *                                unquoted; nil for nil or an empty value
 *   ferry.is_text(ct)            text/..., json, javascript, ecmascript, xml, anything +json or
 *                                +xml (so image/svg+xml)
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "http/tokens.h"
#include "lua/lua_priv.h"

/* ---- log and print ---- */

static void log_line(lua_State *L, enum fy_log_level level, const char *msg, size_t len)
{
    if (level < fy_log_min_level)
        return;
    char clean[900];
    size_t n = len < sizeof(clean) ? len : sizeof(clean);
    for (size_t i = 0; i < n; i++)
        clean[i] = (unsigned char)msg[i] < 0x20 || msg[i] == 0x7f ? ' ' : msg[i];
    lua_Debug ar;
    bool found = false;
    for (int up = 1; !found && lua_getstack(L, up, &ar); up++)
        found = lua_getinfo(L, "Sl", &ar) && ar.currentline > 0;
    if (found)
        fy_log(level, "%s:%d: %.*s%s", ar.short_src, ar.currentline, (int)n, clean,
               n < len ? "..." : "");
    else
        fy_log(level, "%s: %.*s%s", lvm_of(L)->short_src, (int)n, clean, n < len ? "..." : "");
}

static int f_log(lua_State *L)
{
    enum fy_log_level level = FY_LOG_INFO;
    int at = 1;
    if (lua_gettop(L) >= 2) {
        const char *name = luaL_checkstring(L, 1);
        if (fy_log_parse_level(name, &level) < 0)
            return lvm_error(L, 1, "ferry.log: unknown level '%s' (debug, info, warn, error)",
                             name);
        at = 2;
    }
    size_t len;
    const char *msg = luaL_tolstring(L, at, &len);
    log_line(L, level, msg, len);
    return 0;
}

static int f_print(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    log_line(L, FY_LOG_INFO, msg, len);
    return 0;
}

/* ---- base64 ---- */

static int b64_encode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, fy_base64_len(n));
    luaL_pushresultsize(&b, fy_base64_encode(s, n, out));
    return 1;
}

static int b64_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, n / 4 * 3 + 1);
    long r = fy_base64_decode(s, n, out);
    if (r < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "not base64");
        return 2;
    }
    luaL_pushresultsize(&b, (size_t)r);
    return 1;
}

static int b64_encode_url(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, fy_base64_len(n));
    size_t len = fy_base64_encode(s, n, out);
    while (len && out[len - 1] == '=')
        len--;
    for (size_t i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    luaL_pushresultsize(&b, len);
    return 1;
}

static int b64_decode_url(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    while (n && s[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        goto bad;
    size_t padded = (n + 3) / 4 * 4;
    char *tmp = lua_newuserdatauv(L, padded + padded / 4 * 3 + 1, 0);
    char *out = tmp + padded;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+' || c == '/')
            goto bad;
        tmp[i] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    memset(tmp + n, '=', padded - n);
    long r = fy_base64_decode(tmp, padded, out);
    if (r < 0)
        goto bad;
    lua_pushlstring(L, out, (size_t)r);
    return 1;
bad:
    lua_pushnil(L);
    lua_pushliteral(L, "not base64url");
    return 2;
}

/* ---- url ---- */

static void add_unescaped(luaL_Buffer *b, const char *s, size_t n, bool plus_is_space)
{
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = fy_hex_value((unsigned char)s[i + 1])) >= 0 &&
            (lo = fy_hex_value((unsigned char)s[i + 2])) >= 0) {
            luaL_addchar(b, (char)(hi << 4 | lo));
            i += 2;
        } else if (s[i] == '+' && plus_is_space) {
            luaL_addchar(b, ' ');
        } else {
            luaL_addchar(b, s[i]);
        }
    }
}

static int url_unescape(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    add_unescaped(&b, s, n, false);
    luaL_pushresult(&b);
    return 1;
}

static int url_escape(lua_State *L)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            luaL_addchar(&b, (char)c);
        } else {
            luaL_addchar(&b, '%');
            luaL_addchar(&b, hex[c >> 4]);
            luaL_addchar(&b, hex[c & 15]);
        }
    }
    luaL_pushresult(&b);
    return 1;
}

static void set_lstr(lua_State *L, const char *k, const char *s, size_t n)
{
    lua_pushlstring(L, s, n);
    lua_setfield(L, -2, k);
}

static int url_parse(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *p = s, *end = s + n;
    lua_createtable(L, 0, 7);
    /* scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) "://" */
    const char *q = p;
    if (q < end && ((*q | 0x20) >= 'a' && (*q | 0x20) <= 'z')) {
        while (q < end && (((*q | 0x20) >= 'a' && (*q | 0x20) <= 'z') || (*q >= '0' && *q <= '9') ||
                           *q == '+' || *q == '-' || *q == '.'))
            q++;
        if (end - q >= 3 && memcmp(q, "://", 3) == 0) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (const char *c = p; c < q; c++)
                luaL_addchar(&b, (char)(*c | 0x20));
            luaL_pushresult(&b);
            lua_setfield(L, -2, "scheme");
            p = q + 1; /* at "//" */
        }
    }
    bool authority = end - p >= 2 && p[0] == '/' && p[1] == '/';
    if (authority) {
        p += 2;
        const char *a = p;
        while (p < end && *p != '/' && *p != '?' && *p != '#')
            p++;
        const char *ae = p, *at = NULL;
        for (const char *c = a; c < ae; c++)
            if (*c == '@')
                at = c;
        if (at) {
            set_lstr(L, "userinfo", a, (size_t)(at - a));
            a = at + 1;
        }
        const char *h = a, *he, *colon = NULL;
        if (a < ae && *a == '[') {
            const char *rb = memchr(a, ']', (size_t)(ae - a));
            if (!rb) {
                lua_pushnil(L);
                lua_pushliteral(L, "unterminated IPv6 address");
                return 2;
            }
            h = a + 1;
            he = rb;
            if (rb + 1 < ae) {
                if (rb[1] != ':') {
                    lua_pushnil(L);
                    lua_pushliteral(L, "bad characters after the IPv6 address");
                    return 2;
                }
                colon = rb + 1;
            }
        } else {
            colon = memchr(a, ':', (size_t)(ae - a));
            he = colon ? colon : ae;
        }
        set_lstr(L, "host", h, (size_t)(he - h));
        if (colon && colon + 1 < ae) {
            lua_Integer port = 0;
            for (const char *c = colon + 1; c < ae; c++) {
                if (*c < '0' || *c > '9' || (port = port * 10 + (*c - '0')) > 65535) {
                    lua_pushnil(L);
                    lua_pushliteral(L, "bad port");
                    return 2;
                }
            }
            if (port == 0) {
                lua_pushnil(L);
                lua_pushliteral(L, "bad port");
                return 2;
            }
            lua_pushinteger(L, port);
            lua_setfield(L, -2, "port");
        }
    }
    const char *path = p;
    while (p < end && *p != '?' && *p != '#')
        p++;
    if (p > path)
        set_lstr(L, "path", path, (size_t)(p - path));
    else if (authority)
        set_lstr(L, "path", "/", 1);
    if (p < end && *p == '?') {
        const char *qs = ++p;
        while (p < end && *p != '#')
            p++;
        set_lstr(L, "query", qs, (size_t)(p - qs));
    }
    if (p < end && *p == '#')
        set_lstr(L, "fragment", p + 1, (size_t)(end - p - 1));
    return 1;
}

static void push_unescaped(lua_State *L, const char *s, size_t n)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    add_unescaped(&b, s, n, true);
    luaL_pushresult(&b);
}

static int url_parse_query(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *p = s, *end = s + n;
    if (p < end && *p == '?')
        p++;
    lua_settop(L, 1);
    lua_newtable(L); /* 2: last values */
    lua_newtable(L); /* 3: lists */
    while (p < end) {
        const char *e = memchr(p, '&', (size_t)(end - p));
        if (!e)
            e = end;
        if (e > p) {
            const char *eq = memchr(p, '=', (size_t)(e - p));
            const char *ke = eq ? eq : e;
            push_unescaped(L, p, (size_t)(ke - p));                            /* 4: name */
            push_unescaped(L, eq ? eq + 1 : e, eq ? (size_t)(e - eq - 1) : 0); /* 5: value */
            lua_pushvalue(L, 4);
            lua_pushvalue(L, 5);
            lua_rawset(L, 2);
            lua_pushvalue(L, 4);
            if (lua_rawget(L, 3) == LUA_TNIL) {
                lua_pop(L, 1);
                lua_newtable(L);
                lua_pushvalue(L, 4);
                lua_pushvalue(L, -2);
                lua_rawset(L, 3);
            }
            lua_pushvalue(L, 5);
            lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
            lua_settop(L, 3);
        }
        p = e + 1;
    }
    return 2;
}

/* ---- media types ---- */

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* The media type of a Content-Type value: s[0, *len) trimmed, up to the first ';'. */
static const char *media_type(const char *s, size_t n, size_t *len)
{
    const char *p = s, *end = s + n;
    while (p < end && is_ows(*p))
        p++;
    const char *e = p;
    while (e < end && *e != ';')
        e++;
    while (e > p && is_ows(e[-1]))
        e--;
    *len = (size_t)(e - p);
    return p;
}

static void push_lower(lua_State *L, const char *s, size_t n)
{
    luaL_Buffer b;
    char *o = luaL_buffinitsize(L, &b, n);
    for (size_t i = 0; i < n; i++)
        o[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] | 0x20) : s[i];
    luaL_pushresultsize(&b, n);
}

static int f_mime(lua_State *L)
{
    size_t n = 0, tlen = 0;
    const char *s = lua_isnoneornil(L, 1) ? NULL : luaL_checklstring(L, 1, &n);
    const char *t = s ? media_type(s, n, &tlen) : NULL;
    if (!tlen) {
        lua_pushnil(L);
        return 1;
    }
    push_lower(L, t, tlen);
    lua_newtable(L);
    const char *p = t + tlen, *end = s + n;
    while (p < end) {
        while (p < end && (*p == ';' || is_ows(*p)))
            p++;
        const char *name = p;
        while (p < end && *p != '=' && *p != ';')
            p++;
        const char *ne = p;
        while (ne > name && is_ows(ne[-1]))
            ne--;
        if (p >= end || *p != '=') {
            continue; /* a parameter without a value: skipped */
        }
        p++;
        while (p < end && is_ows(*p))
            p++;
        luaL_Buffer b;
        push_lower(L, name, (size_t)(ne - name));
        luaL_buffinit(L, &b);
        if (p < end && *p == '"') {
            for (p++; p < end && *p != '"'; p++) {
                if (*p == '\\' && p + 1 < end)
                    p++;
                luaL_addchar(&b, *p);
            }
            if (p < end)
                p++;
            while (p < end && *p != ';')
                p++;
        } else {
            const char *v = p;
            while (p < end && *p != ';')
                p++;
            const char *ve = p;
            while (ve > v && is_ows(ve[-1]))
                ve--;
            luaL_addlstring(&b, v, (size_t)(ve - v));
        }
        luaL_pushresult(&b);
        if (ne > name)
            lua_rawset(L, -3);
        else
            lua_pop(L, 2);
    }
    return 2;
}

static bool ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && fy_name_eq(s + n - k, k, suffix, k);
}

static int f_is_text(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING) {
        lua_pushboolean(L, 0);
        return 1;
    }
    size_t n, tlen;
    const char *s = lua_tolstring(L, 1, &n);
    const char *t = media_type(s, n, &tlen);
    const char *slash = memchr(t, '/', tlen);
    bool text = false;
    if (slash) {
        const char *sub = slash + 1;
        size_t sublen = tlen - (size_t)(sub - t);
        static const char *const subtypes[] = {"json", "javascript", "x-javascript", "ecmascript",
                                               "xml"};
        text = fy_name_eq(t, (size_t)(slash - t), "text", 4) || ends_with(sub, sublen, "+json") ||
               ends_with(sub, sublen, "+xml");
        for (size_t i = 0; !text && i < sizeof(subtypes) / sizeof(subtypes[0]); i++)
            text = fy_name_eq(sub, sublen, subtypes[i], strlen(subtypes[i]));
    }
    lua_pushboolean(L, text);
    return 1;
}

/* ---- the table ---- */

void lvm_open_ferry(lua_State *L)
{
    static const luaL_Reg ferry_fns[] = {
        {"log", f_log}, {"mime", f_mime}, {"is_text", f_is_text}, {NULL, NULL}};
    static const luaL_Reg b64_fns[] = {{"encode", b64_encode},
                                       {"decode", b64_decode},
                                       {"encode_url", b64_encode_url},
                                       {"decode_url", b64_decode_url},
                                       {NULL, NULL}};
    static const luaL_Reg url_fns[] = {{"parse", url_parse},
                                       {"parse_query", url_parse_query},
                                       {"escape", url_escape},
                                       {"unescape", url_unescape},
                                       {NULL, NULL}};
    luaL_newlib(L, ferry_fns);
    luaL_newlib(L, b64_fns);
    lua_setfield(L, -2, "base64");
    luaL_newlib(L, url_fns);
    lua_setfield(L, -2, "url");
    lvm_open_json(L);
    lua_setfield(L, -2, "json");
    lua_setglobal(L, "ferry");
    lua_pushcfunction(L, f_print);
    lua_setglobal(L, "print");
}
