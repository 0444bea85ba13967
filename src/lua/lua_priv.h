/*
 * Shared only inside src/lua/: the state behind struct fy_lua and the protected-call helper that
 * every entry point uses. Invariant: no Lua API function that can raise an error (allocate, call
 * a metamethod) runs outside lvm_run(), so a memory error never reaches the panic handler.
 */
#ifndef FY_LUA_PRIV_H
#define FY_LUA_PRIV_H

#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lua/lua_vm.h"

struct fy_lua_x;

/* The phase of the call in progress: what the objects of the current exchange allow. */
enum lvm_phase {
    LVM_IDLE,     /* no call in progress */
    LVM_TOPLEVEL, /* the chunk's top level, in fy_lua_open */
    LVM_REQUEST,  /* on_request */
    LVM_RESPONSE, /* on_response */
    LVM_BODY,     /* the body filter */
    LVM_LOG,      /* on_log */
    LVM_GLUE,     /* ferry's own work on the state, no script code (respond fields, release) */
};

struct fy_lua {
    lua_State *L;
    char *path;
    char short_src[LUA_IDSIZE]; /* Lua's name for the script in positions */
    unsigned hooks;             /* FY_LUA_ON_* */
    int hook_ref[3];            /* registry references of the hook functions */
    int hook_line[3];           /* the lines they were defined on (for errors about them) */
    /* memory */
    size_t mem_used, mem_cap;
    bool oom_seen; /* an allocation was refused during this call: oom_src/oom_line say where */
    char oom_src[LUA_IDSIZE];
    int oom_line;
    /* instruction budget of the call in progress */
    uint64_t budget, spent;
    bool over_budget;
    char budget_msg[LUA_IDSIZE + 64]; /* where it ran out: the call's error, whatever else the
                                         script raised while unwinding */
    bool closing;
    /* the call in progress */
    enum lvm_phase phase;
    struct fy_lua_x *cur_x;
};

#define LVM_HOOK_STEP 1000 /* instructions between two count hooks */

/* The state a lua_State belongs to (kept in its extra space). */
static inline struct fy_lua *lvm_of(lua_State *L)
{
    return *(struct fy_lua **)lua_getextraspace(L);
}

/* Runs fn(arg) as a protected call with a fresh budget and phase/x as the call in progress.
 * Returns 0, or -1 with "FILE:LINE: message" in err. Leaves the stack empty. */
int lvm_run(struct fy_lua *vm, lua_CFunction fn, void *arg, enum lvm_phase phase,
            struct fy_lua_x *x, char *err, size_t errlen);

/* Raises "FILE:LINE: <message>" with the position of the Lua function at `level` (1: the caller
 * of the running C function) or the nearest Lua function above it. */
int lvm_error(lua_State *L, int level, const char *fmt, ...);

/* Pushes "FILE:LINE:" of the nearest Lua function from `level` up ("" when there is none). */
void lvm_where(lua_State *L, int level);

/* Builds the global `ferry` table (lua_ferry.c) and its `json` member (lua_json.c). */
void lvm_open_ferry(lua_State *L);
void lvm_open_json(lua_State *L); /* pushes the ferry.json table */

/* Creates the metatables of the exchange objects (lua_exchange.c). */
void lvm_open_exchange(lua_State *L);

#endif
