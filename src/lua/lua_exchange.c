/*
 * req, resp and headers objects over the session's view of one exchange; see lua_exchange.h.
 * Invariant: an object reaches the exchange only through live_x(), which refuses an exchange that
 * is over (the pointer was cleared by fy_lua_x_release) or is not the one being called.
 */
#include "lua/lua_exchange.h"

#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "core/log.h"
#include "http/tokens.h"
#include "lua/lua_priv.h"

#define MT_REQ "ferry.req"
#define MT_RESP "ferry.resp"
#define MT_HDRS "ferry.headers"
#define MT_INFO "ferry.info"

#define MAX_NAME 1024
#define MAX_VALUE 65536

enum obj_kind { OBJ_REQ, OBJ_RESP };

static const char *const kind_names[] = {"req", "resp"};

/* req or resp; user value 1 caches its headers object. */
struct xobj {
    struct fy_lua_x *x; /* NULL once the exchange is over */
    enum obj_kind kind;
};

/* A headers object; user value 1 is its owner, which keeps `owner` alive. */
struct xhdrs {
    struct xobj *owner;
};

/* What req:respond() returns; only its address matters. */
static const char respond_sentinel = 0;

/* ---- access checks ---- */

static struct fy_lua_x *live_x(lua_State *L, const struct xobj *o)
{
    if (!o->x)
        lvm_error(L, 1, "the exchange is over: this %s can no longer be used", kind_names[o->kind]);
    if (o->x != lvm_of(L)->cur_x)
        lvm_error(L, 1, "this %s belongs to another exchange", kind_names[o->kind]);
    return o->x;
}

static const char *phase_hook(enum lvm_phase p)
{
    return p == LVM_REQUEST ? "on_request" : "on_response";
}

static void need_phase(lua_State *L, enum lvm_phase p, const char *what)
{
    if (lvm_of(L)->phase != p)
        lvm_error(L, 1, "%s is only possible in %s", what, phase_hook(p));
}

static struct fy_msg *obj_msg(const struct fy_lua_x *x, enum obj_kind kind)
{
    return kind == OBJ_REQ ? x->view->req : x->view->resp;
}

/* Pushes s as a quoted string safe for a log line (control bytes as \xHH), at most 64 bytes. */
static const char *push_printable(lua_State *L, const char *s, size_t n)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addchar(&b, '"');
    for (size_t i = 0; i < n && i < 64; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
            char hex[5];
            static const char digits[] = "0123456789abcdef";
            hex[0] = '\\', hex[1] = 'x', hex[2] = digits[c >> 4], hex[3] = digits[c & 15];
            luaL_addlstring(&b, hex, 4);
        } else {
            luaL_addchar(&b, (char)c);
        }
    }
    luaL_addstring(&b, n > 64 ? "\"..." : "\"");
    luaL_pushresult(&b);
    return lua_tostring(L, -1);
}

/* ---- validation and copies ---- */

static void check_name(lua_State *L, const char *n, size_t len)
{
    if (len == 0)
        lvm_error(L, 1, "header name is empty");
    if (len > MAX_NAME)
        lvm_error(L, 1, "header name longer than %d bytes", MAX_NAME);
    for (size_t i = 0; i < len; i++)
        if (!fy_is_tchar((unsigned char)n[i]))
            lvm_error(L, 1, "header name %s is not a token (byte %d)", push_printable(L, n, len),
                      (int)i + 1);
}

/* Names of the fields ferry keeps for itself; NULL when the script may change this one. */
static const char *reserved_why(const char *n, size_t len)
{
    enum fy_token t = fy_token_lookup(n, len);
    if (t == FY_TOK_CONTENT_LENGTH || (fy_token_flags(t) & FY_TOKF_HOP))
        return "frames the message, which is ferry's job";
    if (t == FY_TOK_EXPECT)
        return "is handled by ferry";
    if (t == FY_TOK_HOST)
        return "routes the request: assign req.host instead";
    return NULL;
}

static void check_writable_name(lua_State *L, const char *n, size_t len)
{
    check_name(L, n, len);
    const char *why = reserved_why(n, len);
    if (why)
        lvm_error(L, 1, "header %s cannot be changed from Lua: it %s", push_printable(L, n, len),
                  why);
}

static void check_value(lua_State *L, const char *name, size_t nlen, const char *v, size_t len)
{
    if (len > MAX_VALUE)
        lvm_error(L, 1, "value of header %s longer than %d bytes", push_printable(L, name, nlen),
                  MAX_VALUE);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            lvm_error(L, 1,
                      "value of header %s has control character %d at byte %d (no CR, LF, "
                      "NUL or other control characters but tab)",
                      push_printable(L, name, nlen), (int)c, (int)i + 1);
    }
}

/* n bytes of s in the exchange's memory, NUL-terminated. */
static char *xalloc(lua_State *L, const struct fy_lua_xview *v, size_t n)
{
    char *p = v->alloc(v->alloc_ctx, n);
    if (!p)
        lvm_error(L, 1, "out of memory for the exchange");
    return p;
}

static char *xcopy(lua_State *L, const struct fy_lua_xview *v, const char *s, size_t n)
{
    char *p = xalloc(L, v, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ---- headers ---- */

static struct xhdrs *check_hdrs(lua_State *L)
{
    return luaL_checkudata(L, 1, MT_HDRS);
}

/* The head of a headers object, after the access checks; NULL when the view has none. */
static struct fy_msg *hdrs_msg(lua_State *L, struct xhdrs *h, struct fy_lua_x **xp)
{
    struct fy_lua_x *x = live_x(L, h->owner);
    if (xp)
        *xp = x;
    return obj_msg(x, h->owner->kind);
}

/* The head a write goes to: the right phase, and a head to write to. */
static struct fy_msg *hdrs_msg_w(lua_State *L, struct xhdrs *h, struct fy_lua_x **xp)
{
    struct fy_msg *m = hdrs_msg(L, h, xp);
    enum obj_kind k = h->owner->kind;
    need_phase(L, k == OBJ_REQ ? LVM_REQUEST : LVM_RESPONSE,
               k == OBJ_REQ ? "changing req.headers" : "changing resp.headers");
    if (!m)
        lvm_error(L, 1, "there is no %s head", k == OBJ_REQ ? "request" : "response");
    return m;
}

static int hdrs_get(lua_State *L)
{
    struct xhdrs *h = check_hdrs(L);
    size_t nlen;
    const char *name = luaL_checklstring(L, 2, &nlen);
    struct fy_msg *m = hdrs_msg(L, h, NULL);
    struct fy_hdr *f = m ? fy_msg_find(m, name, (uint32_t)(nlen > MAX_NAME ? 0 : nlen)) : NULL;
    if (f && nlen <= MAX_NAME)
        lua_pushlstring(L, f->value, f->value_len);
    else
        lua_pushnil(L);
    return 1;
}

/* set and add: validated name and value, both copied into the exchange's memory. */
static int hdrs_put(lua_State *L, bool replace)
{
    struct xhdrs *h = check_hdrs(L);
    size_t nlen, vlen;
    const char *name = luaL_checklstring(L, 2, &nlen);
    const char *val = luaL_checklstring(L, 3, &vlen);
    struct fy_lua_x *x;
    struct fy_msg *m = hdrs_msg_w(L, h, &x);
    check_writable_name(L, name, nlen);
    check_value(L, name, nlen, val, vlen);
    /* One block for both: the session's allocator may cost a malloc a call. */
    char *n = xalloc(L, x->view, nlen + vlen + 2);
    char *v = n + nlen + 1;
    memcpy(n, name, nlen);
    n[nlen] = 0;
    memcpy(v, val, vlen);
    v[vlen] = 0;
    int rc = replace
                 ? fy_msg_set(m, n, (uint32_t)nlen, v, (uint32_t)vlen)
                 : fy_msg_add(m, n, (uint32_t)nlen, v, (uint32_t)vlen, fy_token_lookup(n, nlen));
    if (rc < 0)
        lvm_error(L, 1, "out of memory for a header");
    return 0;
}

static int hdrs_set(lua_State *L)
{
    return hdrs_put(L, true);
}

static int hdrs_add(lua_State *L)
{
    return hdrs_put(L, false);
}

static int hdrs_remove(lua_State *L)
{
    struct xhdrs *h = check_hdrs(L);
    size_t nlen;
    const char *name = luaL_checklstring(L, 2, &nlen);
    struct fy_msg *m = hdrs_msg_w(L, h, NULL);
    check_writable_name(L, name, nlen);
    lua_pushinteger(L, fy_msg_remove(m, name, (uint32_t)nlen));
    return 1;
}

/* The iterator of each(): upvalues are the headers object and the next index. */
static int hdrs_next(lua_State *L)
{
    struct xhdrs *h = lua_touserdata(L, lua_upvalueindex(1));
    struct fy_msg *m = hdrs_msg(L, h, NULL);
    lua_Integer i = lua_tointeger(L, lua_upvalueindex(2));
    for (; m && i < (lua_Integer)m->nhdrs; i++) {
        const struct fy_hdr *f = &m->hdrs[i];
        if (f->removed)
            continue;
        lua_pushinteger(L, i + 1);
        lua_replace(L, lua_upvalueindex(2));
        lua_pushlstring(L, f->name, f->name_len);
        lua_pushlstring(L, f->value, f->value_len);
        return 2;
    }
    return 0;
}

static int hdrs_each(lua_State *L)
{
    struct xhdrs *h = check_hdrs(L);
    hdrs_msg(L, h, NULL); /* the checks, now rather than at the first step */
    lua_settop(L, 1);
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, hdrs_next, 2);
    return 1;
}

static int hdrs_tostring(lua_State *L)
{
    struct xhdrs *h = check_hdrs(L);
    lua_pushfstring(L, "%s.headers", kind_names[h->owner->kind]);
    return 1;
}

/* Pushes the headers object of the object at index idx, created on first use. */
static void push_hdrs(lua_State *L, int idx, struct xobj *o)
{
    if (lua_getiuservalue(L, idx, 1) == LUA_TUSERDATA)
        return;
    lua_pop(L, 1);
    struct xhdrs *h = lua_newuserdatauv(L, sizeof(*h), 1);
    h->owner = o;
    luaL_setmetatable(L, MT_HDRS);
    lua_pushvalue(L, idx);
    lua_setiuservalue(L, -2, 1);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, idx, 1);
}

/* ---- req ---- */

static void push_view_str(lua_State *L, const char *s, uint32_t n)
{
    if (s)
        lua_pushlstring(L, s, n);
    else
        lua_pushnil(L);
}

static void push_ctx(lua_State *L, struct fy_lua_x *x)
{
    if (x->ctx_ref == LUA_NOREF) {
        lua_newtable(L);
        x->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->ctx_ref);
}

static int req_respond(lua_State *L);
static int req_filter_body(lua_State *L);

static int req_index(lua_State *L)
{
    struct xobj *o = luaL_checkudata(L, 1, MT_REQ);
    const char *k = luaL_checkstring(L, 2);
    struct fy_lua_x *x = live_x(L, o);
    const struct fy_lua_xview *v = x->view;
    if (strcmp(k, "method") == 0)
        push_view_str(L, v->method, v->method_len);
    else if (strcmp(k, "path") == 0)
        push_view_str(L, v->path, v->path_len);
    else if (strcmp(k, "host") == 0)
        push_view_str(L, v->host, v->host_len);
    else if (strcmp(k, "scheme") == 0)
        push_view_str(L, v->scheme, v->scheme_len);
    else if (strcmp(k, "client_ip") == 0)
        push_view_str(L, v->client_ip, v->client_ip_len);
    else if (strcmp(k, "headers") == 0)
        push_hdrs(L, 1, o);
    else if (strcmp(k, "ctx") == 0)
        push_ctx(L, x);
    else if (strcmp(k, "respond") == 0)
        lua_pushcfunction(L, req_respond);
    else if (strcmp(k, "filter_body") == 0)
        lua_pushcfunction(L, req_filter_body);
    else
        return lvm_error(L, 1, "req has no field '%s'", k);
    return 1;
}

static bool path_ok(const char *s, size_t n)
{
    if (n == 0 || s[0] != '/')
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

static bool host_ok(const char *s, size_t n)
{
    if (n == 0 || n > 261)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("-._~:[]", c)))
            return false;
    }
    return true;
}

static bool method_ok(const char *s, size_t n)
{
    if (n == 0 || n > 32)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!fy_is_tchar((unsigned char)s[i]))
            return false;
    return true;
}

static int req_newindex(lua_State *L)
{
    struct xobj *o = luaL_checkudata(L, 1, MT_REQ);
    const char *k = luaL_checkstring(L, 2);
    struct fy_lua_x *x = live_x(L, o);
    struct fy_lua_xview *v = x->view;
    if (strcmp(k, "ctx") == 0) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_pushvalue(L, 3);
        if (x->ctx_ref == LUA_NOREF)
            x->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        else
            lua_rawseti(L, LUA_REGISTRYINDEX, x->ctx_ref);
        return 0;
    }
    bool is_path = strcmp(k, "path") == 0, is_method = strcmp(k, "method") == 0;
    bool is_host = strcmp(k, "host") == 0;
    if (!is_path && !is_method && !is_host)
        return lvm_error(L, 1, "req.%s cannot be assigned (keep your data in req.ctx)", k);
    need_phase(L, LVM_REQUEST, lua_pushfstring(L, "assigning req.%s", k));
    size_t n;
    const char *s = luaL_checklstring(L, 3, &n);
    if (is_path && !path_ok(s, n))
        return lvm_error(L, 1,
                         "req.path %s must start with '/' and hold no spaces or control "
                         "characters",
                         push_printable(L, s, n));
    if (is_method && !method_ok(s, n))
        return lvm_error(L, 1, "req.method %s is not a token", push_printable(L, s, n));
    if (is_method) {
        /* A response to HEAD has no body (RFC 9112 6.3): a client that asked for GET would
         * wait for the body the upstream never sends. (HEAD made GET is fine: the body the
         * upstream then sends is not relayed.) CONNECT is a tunnel, not a request. */
        bool to_head = n == 4 && !memcmp(s, "HEAD", 4);
        bool was_head = v->method_len == 4 && !memcmp(v->method, "HEAD", 4);
        if ((to_head && !was_head) || (n == 7 && !memcmp(s, "CONNECT", 7)))
            return lvm_error(L, 1,
                             "req.method cannot become %s (the client's request was not one: "
                             "the response's framing depends on it)",
                             push_printable(L, s, n));
    }
    if (is_host && !host_ok(s, n))
        return lvm_error(L, 1, "req.host %s is not a host name, address or host:port",
                         push_printable(L, s, n));
    const char *c = xcopy(L, v, s, n);
    if (is_path) {
        v->path = c, v->path_len = (uint32_t)n;
        x->path_changed = true;
    } else if (is_method) {
        v->method = c, v->method_len = (uint32_t)n;
        x->method_changed = true;
    } else {
        v->host = c, v->host_len = (uint32_t)n;
        x->host_changed = true;
    }
    return 0;
}

/* Appends one validated field (name at nidx, value at the top) to the list at lidx. */
static void respond_add(lua_State *L, int lidx, int nidx, const char *name, size_t nlen)
{
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) {
        const char *type = luaL_typename(L, -1); /* before push_printable moves the top */
        lvm_error(L, 1, "req:respond(): the value of header %s is a %s, not a string",
                  push_printable(L, name, nlen), type);
    }
    size_t vlen;
    const char *val = lua_tolstring(L, -1, &vlen);
    check_value(L, name, nlen, val, vlen);
    lua_Integer n = (lua_Integer)lua_rawlen(L, lidx);
    lua_pushvalue(L, nidx);
    lua_rawseti(L, lidx, n + 1);
    lua_pushvalue(L, -1);
    lua_rawseti(L, lidx, n + 2);
}

/* req:respond(status, headers, body): records the answer and returns the sentinel that makes
 * on_request's caller send it. headers: {name = value or {values...}}. */
static int req_respond(lua_State *L)
{
    struct xobj *o = luaL_checkudata(L, 1, MT_REQ);
    struct fy_lua_x *x = live_x(L, o);
    need_phase(L, LVM_REQUEST, "req:respond()");
    lua_Integer status = luaL_checkinteger(L, 2);
    if (status < 200 || status > 599)
        return lvm_error(L, 1, "req:respond(): status %I is not in 200-599", status);
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TTABLE);
    size_t blen = 0;
    const char *body = luaL_optlstring(L, 4, NULL, &blen);
    if (blen > UINT32_MAX)
        return lvm_error(L, 1, "req:respond(): body too large");
    lua_settop(L, 4);
    lua_newtable(L); /* 5: the list */
    if (!lua_isnil(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            if (lua_type(L, -2) != LUA_TSTRING)
                return lvm_error(L, 1, "req:respond(): header names must be strings, not %s",
                                 luaL_typename(L, -2));
            size_t nlen;
            const char *name = lua_tolstring(L, -2, &nlen);
            check_writable_name(L, name, nlen);
            if (lua_type(L, -1) == LUA_TTABLE) {
                int vals = lua_gettop(L);
                for (lua_Integer i = 1; lua_rawgeti(L, vals, i) != LUA_TNIL; i++) {
                    respond_add(L, 5, vals - 1, name, nlen);
                    lua_pop(L, 1);
                }
                lua_pop(L, 1);
            } else {
                respond_add(L, 5, lua_gettop(L) - 1, name, nlen);
            }
            lua_pop(L, 1);
        }
    }
    x->respond_body = body ? xcopy(L, x->view, body, blen) : NULL;
    x->respond_body_len = (uint32_t)blen;
    x->respond_status = (int)status;
    if (x->respond_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, x->respond_ref);
    x->respond_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, (void *)&respond_sentinel);
    return 1;
}

static int obj_tostring(lua_State *L)
{
    struct xobj *o = lua_touserdata(L, 1);
    lua_pushstring(L, kind_names[o->kind]);
    return 1;
}

/* Keeps the function at index 2 in *ref (a later call replaces it). */
static void set_filter(lua_State *L, int *ref)
{
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    if (*ref == LUA_NOREF)
        *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    else
        lua_rawseti(L, LUA_REGISTRYINDEX, *ref);
}

static int req_filter_body(lua_State *L)
{
    struct xobj *o = luaL_checkudata(L, 1, MT_REQ);
    struct fy_lua_x *x = live_x(L, o);
    need_phase(L, LVM_REQUEST, "req:filter_body()");
    set_filter(L, &x->req_filter_ref);
    return 0;
}

/* ---- resp ---- */

static int resp_filter_body(lua_State *L)
{
    struct xobj *o = luaL_checkudata(L, 1, MT_RESP);
    struct fy_lua_x *x = live_x(L, o);
    need_phase(L, LVM_RESPONSE, "resp:filter_body()");
    set_filter(L, &x->filter_ref);
    return 0;
}

static int resp_index(lua_State *L)
{
    struct xobj *o = luaL_checkudata(L, 1, MT_RESP);
    const char *k = luaL_checkstring(L, 2);
    struct fy_lua_x *x = live_x(L, o);
    const struct fy_msg *m = x->view->resp;
    if (strcmp(k, "status") == 0) {
        if (m)
            lua_pushinteger(L, m->status);
        else
            lua_pushnil(L);
    } else if (strcmp(k, "headers") == 0) {
        push_hdrs(L, 1, o);
    } else if (strcmp(k, "filter_body") == 0) {
        lua_pushcfunction(L, resp_filter_body);
    } else {
        return lvm_error(L, 1, "resp has no field '%s'", k);
    }
    return 1;
}

static int resp_newindex(lua_State *L)
{
    struct xobj *o = luaL_checkudata(L, 1, MT_RESP);
    const char *k = luaL_checkstring(L, 2);
    struct fy_lua_x *x = live_x(L, o);
    if (strcmp(k, "status") != 0)
        return lvm_error(L, 1, "resp.%s cannot be assigned", k);
    need_phase(L, LVM_RESPONSE, "assigning resp.status");
    if (!lua_isinteger(L, 3))
        return lvm_error(L, 1, "resp.status must be an integer, not %s", luaL_typename(L, 3));
    lua_Integer st = lua_tointeger(L, 3);
    if (st < 200 || st > 599)
        return lvm_error(L, 1, "resp.status %I is not in 200-599", st);
    struct fy_msg *m = x->view->resp;
    if (!m)
        return lvm_error(L, 1, "there is no response head");
    m->status = (uint16_t)st;
    m->reason = NULL;
    m->reason_len = 0;
    return 0;
}

/* ---- on_log's info: one object per state, its fields read from the C struct on access ----
 *
 * Building a table of twelve fields (four of them new strings) for every exchange was most of
 * what a no-op on_log cost; a field is now made only when the script reads it. The object is
 * the state's one `info`, valid during on_log only: kept and used later, it raises instead of
 * reading a struct that is gone. */

static const char info_key = 0; /* the registry key of the state's info object */

struct info_obj {
    const struct fy_lua_log_info *info; /* NULL outside on_log */
};

static void push_opt_str(lua_State *L, const char *s)
{
    if (s)
        lua_pushstring(L, s);
    else
        lua_pushnil(L);
}

static int info_index(lua_State *L)
{
    struct info_obj *o = luaL_checkudata(L, 1, MT_INFO);
    const char *k = luaL_checkstring(L, 2);
    const struct fy_lua_log_info *in = o->info;
    if (!in)
        return lvm_error(L, 1, "info is only valid during on_log");
    if (strcmp(k, "status") == 0)
        lua_pushinteger(L, in->status);
    else if (strcmp(k, "duration_us") == 0)
        lua_pushinteger(L, (lua_Integer)in->duration_us);
    else if (strcmp(k, "duration_ms") == 0)
        lua_pushnumber(L, (lua_Number)in->duration_us / 1000.0);
    else if (strcmp(k, "upstream_connect_us") == 0)
        lua_pushinteger(L, (lua_Integer)in->upstream_connect_us);
    else if (strcmp(k, "upstream_first_byte_us") == 0)
        lua_pushinteger(L, (lua_Integer)in->upstream_first_byte_us);
    else if (strcmp(k, "bytes_in") == 0)
        lua_pushinteger(L, (lua_Integer)in->bytes_in);
    else if (strcmp(k, "bytes_out") == 0)
        lua_pushinteger(L, (lua_Integer)in->bytes_out);
    else if (strcmp(k, "upstream") == 0)
        push_opt_str(L, in->upstream);
    else if (strcmp(k, "tls_version") == 0)
        push_opt_str(L, in->tls_version);
    else if (strcmp(k, "tls_sni") == 0)
        push_opt_str(L, in->tls_sni);
    else if (strcmp(k, "request_id") == 0)
        push_opt_str(L, in->request_id);
    else if (strcmp(k, "route") == 0)
        push_opt_str(L, in->route);
    else
        return lvm_error(L, 1, "info has no field '%s'", k);
    return 1;
}

static int info_newindex(lua_State *L)
{
    return lvm_error(L, 1, "info is read-only");
}

static int info_tostring(lua_State *L)
{
    lua_pushliteral(L, "ferry info");
    return 1;
}

/* Points the state's info object at `in` (NULL: on_log is over). Never allocates. */
static void set_info(lua_State *L, const struct fy_lua_log_info *in)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &info_key);
    struct info_obj *o = lua_touserdata(L, -1);
    if (o)
        o->info = in;
    lua_pop(L, 1);
}

/* ---- metatables ---- */

static void new_mt(lua_State *L, const char *name, const luaL_Reg *fns)
{
    luaL_newmetatable(L, name);
    luaL_setfuncs(L, fns, 0);
    lua_pushliteral(L, "ferry");
    lua_setfield(L, -2, "__metatable"); /* getmetatable() sees a string; no changes */
}

void lvm_open_exchange(lua_State *L)
{
    static const luaL_Reg req_fns[] = {{"__index", req_index},
                                       {"__newindex", req_newindex},
                                       {"__tostring", obj_tostring},
                                       {NULL, NULL}};
    static const luaL_Reg resp_fns[] = {{"__index", resp_index},
                                        {"__newindex", resp_newindex},
                                        {"__tostring", obj_tostring},
                                        {NULL, NULL}};
    static const luaL_Reg hdrs_fns[] = {{"__tostring", hdrs_tostring}, {NULL, NULL}};
    static const luaL_Reg hdrs_methods[] = {{"get", hdrs_get},   {"set", hdrs_set},
                                            {"add", hdrs_add},   {"remove", hdrs_remove},
                                            {"each", hdrs_each}, {NULL, NULL}};
    static const luaL_Reg info_fns[] = {{"__index", info_index},
                                        {"__newindex", info_newindex},
                                        {"__tostring", info_tostring},
                                        {NULL, NULL}};
    new_mt(L, MT_REQ, req_fns);
    new_mt(L, MT_RESP, resp_fns);
    new_mt(L, MT_HDRS, hdrs_fns);
    luaL_newlib(L, hdrs_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 3);
    new_mt(L, MT_INFO, info_fns);
    lua_pop(L, 1);
    struct info_obj *o = lua_newuserdatauv(L, sizeof(*o), 0);
    o->info = NULL;
    luaL_setmetatable(L, MT_INFO);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &info_key);
}

/* ---- entry points ---- */

struct call {
    struct fy_lua *vm;
    struct fy_lua_x *x;
    enum fy_lua_rc rc;
    /* fy_lua_filter, fy_lua_filter_request: the function and the reference keeping its output */
    int *filter_ref, *out_ref;
    const char *chunk, *out;
    size_t len, out_len;
    bool last;
    /* fy_lua_on_log */
    const struct fy_lua_log_info *info;
    /* fy_lua_respond_fields */
    struct fy_msg *m;
    int result;
};

void fy_lua_x_init(struct fy_lua_x *x)
{
    memset(x, 0, sizeof(*x));
    x->req_ref = x->resp_ref = x->ctx_ref = x->filter_ref = x->out_ref = LUA_NOREF;
    x->respond_ref = x->req_filter_ref = x->req_out_ref = LUA_NOREF;
}

/* Pushes the exchange's req or resp object, created on first use. */
static void push_obj(lua_State *L, struct fy_lua_x *x, enum obj_kind kind)
{
    int *ref = kind == OBJ_REQ ? &x->req_ref : &x->resp_ref;
    if (*ref == LUA_NOREF) {
        struct xobj *o = lua_newuserdatauv(L, sizeof(*o), 1);
        o->x = x;
        o->kind = kind;
        luaL_setmetatable(L, kind == OBJ_REQ ? MT_REQ : MT_RESP);
        *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, *ref);
}

/* Pushes hook function i; returns the line it was defined on, for errors about what it
 * returned (found once, when the script was opened). */
static int push_hook(lua_State *L, const struct fy_lua *vm, int i)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->hook_ref[i]);
    return vm->hook_line[i];
}

static int call_request(lua_State *L)
{
    struct call *c = lua_touserdata(L, 1);
    int line = push_hook(L, c->vm, 0);
    push_obj(L, c->x, OBJ_REQ);
    lua_call(L, 1, 1);
    if (lua_isnil(L, -1)) {
        c->rc = FY_LUA_CONTINUE;
    } else if (lua_touserdata(L, -1) == &respond_sentinel && c->x->respond_status) {
        c->rc = FY_LUA_RESPONDED;
        c->x->responded = true;
    } else {
        return luaL_error(L,
                          "%s:%d: on_request returned %s: return nothing, or the value of "
                          "req:respond(...)",
                          c->vm->short_src, line,
                          lua_touserdata(L, -1) == &respond_sentinel ? "another request's answer"
                                                                     : luaL_typename(L, -1));
    }
    return 0;
}

static enum fy_lua_rc run(struct fy_lua *vm, struct fy_lua_x *x, lua_CFunction fn, struct call *c,
                          enum lvm_phase phase)
{
    c->vm = vm;
    c->x = x;
    if (lvm_run(vm, fn, c, phase, x, x->err, sizeof(x->err)) < 0)
        return FY_LUA_ERROR;
    return c->rc;
}

enum fy_lua_rc fy_lua_on_request(struct fy_lua *vm, struct fy_lua_x *x, struct fy_lua_xview *v)
{
    x->view = v;
    if (!(vm->hooks & FY_LUA_ON_REQUEST))
        return FY_LUA_CONTINUE;
    x->responded = false;
    x->respond_status = 0;
    x->respond_body = NULL;
    x->respond_body_len = 0;
    struct call c = {0};
    return run(vm, x, call_request, &c, LVM_REQUEST);
}

static int call_respond_fields(lua_State *L)
{
    struct call *c = lua_touserdata(L, 1);
    const struct fy_lua_xview *v = c->x->view;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->x->respond_ref);
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i + 1 <= n; i += 2) {
        size_t nlen, vlen;
        lua_rawgeti(L, -1, i);
        lua_rawgeti(L, -2, i + 1);
        const char *name = lua_tolstring(L, -2, &nlen);
        const char *val = lua_tolstring(L, -1, &vlen);
        char *cn = v->alloc(v->alloc_ctx, nlen + vlen + 2);
        if (!cn) {
            c->result = -1;
            return 0;
        }
        memcpy(cn, name, nlen);
        cn[nlen] = 0;
        char *cv = cn + nlen + 1;
        memcpy(cv, val, vlen);
        cv[vlen] = 0;
        if (fy_msg_add(c->m, cn, (uint32_t)nlen, cv, (uint32_t)vlen, fy_token_lookup(cn, nlen)) <
            0) {
            c->result = -1;
            return 0;
        }
        lua_pop(L, 2);
    }
    return 0;
}

int fy_lua_respond_fields(struct fy_lua *vm, struct fy_lua_x *x, struct fy_lua_xview *v,
                          struct fy_msg *m)
{
    if (x->respond_ref == LUA_NOREF)
        return 0;
    x->view = v;
    struct call c = {.m = m};
    if (run(vm, x, call_respond_fields, &c, LVM_GLUE) == FY_LUA_ERROR)
        return -1;
    return c.result;
}

static int call_response(lua_State *L)
{
    struct call *c = lua_touserdata(L, 1);
    push_hook(L, c->vm, 1);
    push_obj(L, c->x, OBJ_REQ);
    push_obj(L, c->x, OBJ_RESP);
    lua_call(L, 2, 0);
    c->rc = FY_LUA_CONTINUE;
    return 0;
}

enum fy_lua_rc fy_lua_on_response(struct fy_lua *vm, struct fy_lua_x *x, struct fy_lua_xview *v)
{
    x->view = v;
    if (!(vm->hooks & FY_LUA_ON_RESPONSE))
        return FY_LUA_CONTINUE;
    struct call c = {0};
    return run(vm, x, call_response, &c, LVM_RESPONSE);
}

bool fy_lua_wants_body(const struct fy_lua_x *x)
{
    return x->filter_ref != LUA_NOREF;
}

bool fy_lua_wants_request_body(const struct fy_lua_x *x)
{
    return x->req_filter_ref != LUA_NOREF;
}

/* One call of a body filter, the request's or the response's (c->filter_ref, c->out_ref). */
static int call_filter(lua_State *L)
{
    struct call *c = lua_touserdata(L, 1);
    if (*c->out_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, *c->out_ref);
        *c->out_ref = LUA_NOREF;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, *c->filter_ref);
    lua_Debug ar;
    lua_pushvalue(L, -1);
    lua_getinfo(L, ">S", &ar);
    lua_pushlstring(L, c->chunk, c->len);
    lua_pushboolean(L, c->last);
    lua_call(L, 2, 1);
    if (lua_type(L, -1) == LUA_TSTRING) {
        c->out = lua_tolstring(L, -1, &c->out_len);
        *c->out_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* keeps c->out alive */
    } else if (lua_isnil(L, -1)) {
        c->out = c->chunk;
        c->out_len = c->len;
    } else {
        return luaL_error(L, "%s:%d: the body filter returned a %s: return a string or nil",
                          ar.short_src, ar.linedefined, luaL_typename(L, -1));
    }
    c->rc = FY_LUA_CONTINUE;
    return 0;
}

static enum fy_lua_rc filter(struct fy_lua *vm, struct fy_lua_x *x, int *filter_ref, int *out_ref,
                             const char *chunk, size_t len, bool last, const char **out,
                             size_t *out_len)
{
    *out = chunk;
    *out_len = len;
    if (*filter_ref == LUA_NOREF)
        return FY_LUA_CONTINUE;
    struct call c = {
        .filter_ref = filter_ref, .out_ref = out_ref, .chunk = chunk, .len = len, .last = last};
    enum fy_lua_rc rc = run(vm, x, call_filter, &c, LVM_BODY);
    if (rc == FY_LUA_CONTINUE) {
        *out = c.out;
        *out_len = c.out_len;
    }
    return rc;
}

enum fy_lua_rc fy_lua_filter(struct fy_lua *vm, struct fy_lua_x *x, const char *chunk, size_t len,
                             bool last, const char **out, size_t *out_len)
{
    return filter(vm, x, &x->filter_ref, &x->out_ref, chunk, len, last, out, out_len);
}

enum fy_lua_rc fy_lua_filter_request(struct fy_lua *vm, struct fy_lua_x *x, const char *chunk,
                                     size_t len, bool last, const char **out, size_t *out_len)
{
    return filter(vm, x, &x->req_filter_ref, &x->req_out_ref, chunk, len, last, out, out_len);
}

static int call_log(lua_State *L)
{
    struct call *c = lua_touserdata(L, 1);
    const struct fy_lua_log_info *in = c->info;
    push_hook(L, c->vm, 2);
    push_obj(L, c->x, OBJ_REQ);
    if (c->x->view->resp)
        push_obj(L, c->x, OBJ_RESP);
    else
        lua_pushnil(L);
    set_info(L, in);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &info_key);
    lua_call(L, 3, 0);
    c->rc = FY_LUA_CONTINUE;
    return 0;
}

void fy_lua_on_log(struct fy_lua *vm, struct fy_lua_x *x, struct fy_lua_xview *v,
                   const struct fy_lua_log_info *info)
{
    x->view = v;
    if (!(vm->hooks & FY_LUA_ON_LOG))
        return;
    struct call c = {.info = info};
    enum fy_lua_rc rc = run(vm, x, call_log, &c, LVM_LOG);
    set_info(vm->L, NULL); /* also after an error: the struct is the caller's */
    if (rc == FY_LUA_ERROR)
        fy_warn("lua: on_log: %s (client %.*s, request %s)", x->err,
                v->client_ip ? (int)v->client_ip_len : 1, v->client_ip ? v->client_ip : "-",
                info && info->request_id ? info->request_id : "-");
}

static int call_release(lua_State *L)
{
    struct call *c = lua_touserdata(L, 1);
    struct fy_lua_x *x = c->x;
    int *refs[] = {&x->req_ref, &x->resp_ref,    &x->ctx_ref,        &x->filter_ref,
                   &x->out_ref, &x->respond_ref, &x->req_filter_ref, &x->req_out_ref};
    for (size_t i = 0; i < sizeof(refs) / sizeof(refs[0]); i++) {
        luaL_unref(L, LUA_REGISTRYINDEX, *refs[i]);
        *refs[i] = LUA_NOREF;
    }
    c->rc = FY_LUA_CONTINUE;
    return 0;
}

void fy_lua_x_release(struct fy_lua *vm, struct fy_lua_x *x)
{
    lua_State *L = vm->L;
    /* Cut the objects off first: reading the registry never allocates, so this cannot fail
     * even if dropping the references below did. */
    int refs[2] = {x->req_ref, x->resp_ref};
    for (int i = 0; i < 2; i++) {
        if (refs[i] == LUA_NOREF)
            continue;
        lua_rawgeti(L, LUA_REGISTRYINDEX, refs[i]);
        struct xobj *o = lua_touserdata(L, -1);
        if (o)
            o->x = NULL;
        lua_pop(L, 1);
    }
    bool any = x->req_ref != LUA_NOREF || x->resp_ref != LUA_NOREF || x->ctx_ref != LUA_NOREF ||
               x->filter_ref != LUA_NOREF || x->out_ref != LUA_NOREF ||
               x->respond_ref != LUA_NOREF || x->req_filter_ref != LUA_NOREF ||
               x->req_out_ref != LUA_NOREF;
    struct call c = {0};
    if (any && run(vm, x, call_release, &c, LVM_GLUE) == FY_LUA_ERROR)
        fy_warn("lua: releasing an exchange: %s", x->err);
    x->view = NULL;
}
