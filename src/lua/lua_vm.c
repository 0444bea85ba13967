/*
 * The hook engine's state: allocator with a cap, count hook with a budget, the sandboxed
 * globals, loading the script, and the protected call every entry point goes through; see
 * lua_vm.h. Invariant: vm->phase is LVM_IDLE between calls, so the engine is not re-entered.
 */
#include "lua/lua_vm.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/assert.h"
#include "core/log.h"
#include "lua/lua_priv.h"

static const char *const hook_names[3] = {"on_request", "on_response", "on_log"};

/* ---- memory ---- */

/* Where the refused allocation came from: the nearest Lua function of the main thread (inside a
 * coroutine, the line that resumed it). Only reads debug information, which never allocates. */
static void note_oom(struct fy_lua *vm)
{
    if (vm->oom_seen || !vm->L || vm->phase == LVM_IDLE)
        return;
    vm->oom_seen = true;
    vm->oom_line = 0;
    lua_Debug ar;
    for (int level = 0; lua_getstack(vm->L, level, &ar); level++) {
        if (lua_getinfo(vm->L, "Sl", &ar) && ar.currentline > 0) {
            snprintf(vm->oom_src, sizeof(vm->oom_src), "%s", ar.short_src);
            vm->oom_line = ar.currentline;
            return;
        }
    }
}

/* lua_Alloc with a cap: growing past mem_cap is refused (Lua then collects and retries once,
 * and raises "not enough memory"); shrinking and freeing always succeed. */
static void *cap_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct fy_lua *vm = ud;
    size_t old = ptr ? osize : 0; /* without ptr, osize is a type tag */
    if (nsize == 0) {
        free(ptr);
        vm->mem_used -= old;
        return NULL;
    }
    if (nsize > old && nsize - old > vm->mem_cap - vm->mem_used) {
        note_oom(vm);
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (!p)
        return NULL;
    vm->mem_used = vm->mem_used - old + nsize;
    return p;
}

static int panic(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    fy_error("lua: unprotected error: %s", msg ? msg : "(not a string)");
    abort();
}

/* ---- positions and errors ---- */

/* A frame that has a line: a Lua function (C functions have none). */
static bool user_frame(lua_State *L, lua_Debug *ar)
{
    return lua_getinfo(L, "Sl", ar) && ar->currentline > 0;
}

void lvm_where(lua_State *L, int level)
{
    lua_Debug ar;
    for (; lua_getstack(L, level, &ar); level++) {
        if (user_frame(L, &ar)) {
            lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
            return;
        }
    }
    lua_pushliteral(L, "");
}

int lvm_error(lua_State *L, int level, const char *fmt, ...)
{
    lvm_where(L, level);
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
    return lua_error(L);
}

/* True when msg starts with a position "SRC:LINE:": this script's, a chunk it load()ed, or any
 * source name without spaces (Lua's short names are at most LUA_IDSIZE bytes). */
static bool has_position(const struct fy_lua *vm, const char *msg)
{
    size_t n = strlen(vm->short_src);
    const char *p = NULL;
    if (n && strncmp(msg, vm->short_src, n) == 0 && msg[n] == ':')
        p = msg + n;
    else if (strncmp(msg, "[string \"", 9) == 0 && (p = strstr(msg, "\"]:")))
        p += 2;
    else
        for (const char *c = msg; !p && *c && *c != ' ' && c - msg < LUA_IDSIZE; c++)
            if (*c == ':' && c > msg && c[1] >= '0' && c[1] <= '9')
                p = c;
    if (!p || p[1] < '0' || p[1] > '9')
        return false;
    for (p++; *p >= '0' && *p <= '9';)
        p++;
    return *p == ':';
}

/* Message handler of every protected call: the error as one string with a position. */
static int msgh(lua_State *L)
{
    struct fy_lua *vm = lvm_of(L);
    const char *msg;
    if (lua_type(L, 1) == LUA_TSTRING || lua_type(L, 1) == LUA_TNUMBER)
        msg = lua_tostring(L, 1);
    else if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
        msg = lua_tostring(L, -1);
    else
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    if (has_position(vm, msg))
        return 1;
    lvm_where(L, 1);
    if (!*lua_tostring(L, -1) && vm->short_src[0]) {
        lua_pop(L, 1);
        lua_pushfstring(L, "%s: ", vm->short_src);
    }
    lua_pushstring(L, msg);
    lua_concat(L, 2);
    return 1;
}

/* ---- instruction budget ---- */

static void count_hook(lua_State *L, lua_Debug *ar)
{
    struct fy_lua *vm = lvm_of(L);
    if (!vm->over_budget) {
        vm->spent += LVM_HOOK_STEP;
        if (vm->spent <= vm->budget)
            return;
        vm->over_budget = true;
    }
    /* From now on this thread raises before every instruction, so a pcall in the script
     * cannot catch the error and go on looping. */
    lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
    if (!vm->budget_msg[0]) {
        char where[LUA_IDSIZE + 16];
        if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
            snprintf(where, sizeof(where), "%s:%d", ar->short_src, ar->currentline);
        else
            snprintf(where, sizeof(where), "%s", vm->short_src);
        snprintf(vm->budget_msg, sizeof(vm->budget_msg), "%s: instruction budget of %llu exceeded",
                 where, (unsigned long long)vm->budget);
    }
    lua_pushstring(L, vm->budget_msg);
    lua_error(L);
}

/* ---- the protected call ---- */

int lvm_run(struct fy_lua *vm, lua_CFunction fn, void *arg, enum lvm_phase phase,
            struct fy_lua_x *x, char *err, size_t errlen)
{
    lua_State *L = vm->L;
    FY_ASSERT(vm->phase == LVM_IDLE); /* hooks never call back into the engine */
    vm->phase = phase;
    vm->cur_x = x;
    vm->spent = 0;
    vm->over_budget = false;
    vm->budget_msg[0] = 0;
    vm->oom_seen = false;
    lua_sethook(L, count_hook, LUA_MASKCOUNT, LVM_HOOK_STEP);
    lua_settop(L, 0);
    lua_pushcfunction(L, msgh);
    lua_pushcfunction(L, fn);
    lua_pushlightuserdata(L, arg);
    int st = lua_pcall(L, 1, 0, 1);
    int rc = 0;
    if (st != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        const char *src = vm->short_src[0] ? vm->short_src : vm->path;
        rc = -1;
        if (vm->over_budget && vm->budget_msg[0])
            snprintf(err, errlen, "%s", vm->budget_msg);
        else if (st == LUA_ERRMEM && vm->oom_seen && vm->oom_line > 0)
            snprintf(err, errlen, "%s:%d: not enough memory (the script's limit is %zu bytes)",
                     vm->oom_src, vm->oom_line, vm->mem_cap);
        else if (st == LUA_ERRMEM)
            snprintf(err, errlen, "%s: not enough memory (the script's limit is %zu bytes)", src,
                     vm->mem_cap);
        else if (st == LUA_ERRERR)
            snprintf(err, errlen, "%s: error while handling an error (%s)", src,
                     msg ? msg : "no message");
        else
            snprintf(err, errlen, "%s", msg ? msg : "error without a message");
        /* The message is the script's text and goes into ferry's log: a newline or an escape
         * sequence in it must not forge a line or reach a terminal (ferry.log does the same). */
        for (char *p = err; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = ' ';
    }
    lua_settop(L, 0);
    vm->phase = LVM_IDLE;
    vm->cur_x = NULL;
    return rc;
}

/* ---- sandbox ---- */

/* load() for text chunks only: the mode argument is forced to "t". */
static int sandbox_load(lua_State *L)
{
    if (lua_gettop(L) > 4)
        lua_settop(L, 4);
    if (lua_gettop(L) < 3)
        lua_settop(L, 3);
    lua_pushliteral(L, "t");
    lua_replace(L, 3);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* collectgarbage() without the options that change how the collector runs. */
static int sandbox_collectgarbage(lua_State *L)
{
    static const char *const allowed[] = {"collect", "step", "count", "isrunning", NULL};
    luaL_checkoption(L, 1, "collect", allowed);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

static void wrap_global(lua_State *L, const char *name, lua_CFunction fn)
{
    lua_getglobal(L, name);
    lua_pushcclosure(L, fn, 1);
    lua_setglobal(L, name);
}

static void open_sandbox(lua_State *L)
{
    static const struct {
        const char *name;
        lua_CFunction open;
    } libs[] = {
        {LUA_GNAME, luaopen_base},       {LUA_STRLIBNAME, luaopen_string},
        {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8}, {LUA_COLIBNAME, luaopen_coroutine},
    };
    for (size_t i = 0; i < sizeof(libs) / sizeof(libs[0]); i++) {
        luaL_requiref(L, libs[i].name, libs[i].open, 1);
        lua_pop(L, 1);
    }
    static const char *const removed[] = {"dofile", "loadfile", "warn"};
    for (size_t i = 0; i < sizeof(removed) / sizeof(removed[0]); i++) {
        lua_pushnil(L);
        lua_setglobal(L, removed[i]);
    }
    wrap_global(L, "load", sandbox_load);
    wrap_global(L, "collectgarbage", sandbox_collectgarbage);

    lua_getglobal(L, LUA_STRLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);

    /* os: only the clock and calendar functions, taken from the full library, which itself
     * stays unreachable. */
    lua_pushcfunction(L, luaopen_os);
    lua_call(L, 0, 1);
    lua_createtable(L, 0, 3);
    static const char *const os_kept[] = {"time", "clock", "date"};
    for (size_t i = 0; i < sizeof(os_kept) / sizeof(os_kept[0]); i++) {
        lua_getfield(L, -2, os_kept[i]);
        lua_setfield(L, -2, os_kept[i]);
    }
    lua_setglobal(L, "os");
    lua_pop(L, 1);

    lvm_open_ferry(L);
    lvm_open_exchange(L);
}

/* The protected part of fy_lua_open: sandbox, script, top level, hook functions. */
static int open_script(lua_State *L)
{
    struct fy_lua *vm = lua_touserdata(L, 1);
    open_sandbox(L);
    if (luaL_loadfilex(L, vm->path, "t") != LUA_OK)
        return lua_error(L);
    lua_Debug ar;
    lua_pushvalue(L, -1);
    lua_getinfo(L, ">S", &ar);
    snprintf(vm->short_src, sizeof(vm->short_src), "%s", ar.short_src);
    lua_call(L, 0, 0);
    for (int i = 0; i < 3; i++) {
        int t = lua_getglobal(L, hook_names[i]);
        if (t == LUA_TFUNCTION) {
            lua_pushvalue(L, -1);
            lua_getinfo(L, ">S", &ar);
            vm->hook_line[i] = ar.linedefined;
            vm->hook_ref[i] = luaL_ref(L, LUA_REGISTRYINDEX);
            vm->hooks |= 1u << i;
        } else if (t != LUA_TNIL) {
            return luaL_error(L, "%s is a %s, not a function", hook_names[i], lua_typename(L, t));
        }
    }
    return 0;
}

struct fy_lua *fy_lua_open(const char *path, const struct fy_lua_limits *lim, char *err,
                           size_t errlen)
{
    struct fy_lua *vm = calloc(1, sizeof(*vm));
    if (!vm)
        goto fail_vm;
    vm->path = strdup(path);
    if (!vm->path)
        goto fail_path;
    vm->mem_cap = lim && lim->memory ? lim->memory : FY_LUA_DEFAULT_MEMORY;
    vm->budget = lim && lim->instructions ? lim->instructions : FY_LUA_DEFAULT_INSTRUCTIONS;
    for (int i = 0; i < 3; i++)
        vm->hook_ref[i] = LUA_NOREF;
    tzset(); /* os.date's local time: the zone file is read now, not during a hook */
    vm->L = lua_newstate(cap_alloc, vm);
    if (!vm->L)
        goto fail_state;
    *(struct fy_lua **)lua_getextraspace(vm->L) = vm;
    lua_atpanic(vm->L, panic);
    if (lvm_run(vm, open_script, vm, LVM_TOPLEVEL, NULL, err, errlen) < 0) {
        fy_lua_close(vm);
        return NULL;
    }
    lua_gc(vm->L, LUA_GCCOLLECT); /* start the exchanges with the top level's garbage gone */
    /* Generational: each exchange makes a few objects that die with it (req, resp, the log's
     * info table), the case Lua 5.4's generational collector is for. */
    lua_gc(vm->L, LUA_GCGEN, 0, 0);
    return vm;

fail_state:
    free(vm->path);
    free(vm);
    fy_errf(err, errlen, "%s: not enough memory for a Lua state", path);
    return NULL;
fail_path:
    free(vm);
fail_vm:
    fy_errf(err, errlen, "%s: out of memory", path);
    return NULL;
}

void fy_lua_close(struct fy_lua *vm)
{
    if (!vm)
        return;
    FY_ASSERT(vm->phase == LVM_IDLE);
    /* Finalizers still run while the state closes: each one fails at its first instruction. */
    vm->closing = true;
    vm->over_budget = true;
    lua_sethook(vm->L, count_hook, LUA_MASKCOUNT, 1);
    lua_close(vm->L);
    free(vm->path);
    free(vm);
}

int fy_lua_check(const char *path, char *err, size_t errlen)
{
    struct fy_lua *vm = fy_lua_open(path, NULL, err, errlen);
    if (!vm)
        return -1;
    fy_lua_close(vm);
    return 0;
}

unsigned fy_lua_hooks(const struct fy_lua *vm)
{
    return vm->hooks;
}

const char *fy_lua_path(const struct fy_lua *vm)
{
    return vm->path;
}

size_t fy_lua_memory(const struct fy_lua *vm)
{
    return vm->mem_used;
}
