/*
 * The Lua 5.4 hook engine's state: one lua_State per worker thread per script, never shared
 * between threads. A script defines any of three global functions, a fixed public API:
 *
 *   on_request(req)            before routing; may `return req:respond(status, headers, body)`
 *                              or call req:filter_body(fn) (the request body, to the upstream)
 *   on_response(req, resp)     the response head; may call resp:filter_body(fn)
 *   on_log(req, resp, info)    after the exchange
 *
 * The exchange side (req, resp, headers objects) is lua/lua_exchange.h; the `ferry` helpers table
 * (log, json, base64, url, mime, is_text) is built in lua_ferry.c and lua_json.c.
 *
 * Sandbox: a hook runs on the worker's event loop, so nothing that does I/O or blocks is
 * reachable. The state has the base library without dofile, loadfile and warn (`load` accepts
 * text chunks only; `print` goes to ferry's log like ferry.log; collectgarbage accepts only
 * "collect", "step", "count" and "isrunning"), string (without string.dump), table, math, utf8,
 * coroutine, and an `os` table holding only time, clock and date. There is no io, package,
 * require or debug. JSON: ferry.json binds ferry's own strict reader and writer (core/json.h)
 * rather than adding lua-cjson as a runtime dependency.
 *
 * Limits: every call into the script (a hook, a body filter, the chunk's top level) has an
 * instruction budget, counted by a count hook every 1000 VM instructions; past it the call fails
 * with "FILE:LINE: instruction budget of N exceeded", and the failure is sticky for the rest of
 * that call (a script's pcall cannot swallow it: once over, every further instruction raises).
 * The state's memory is capped by its allocator: an allocation past the cap fails, Lua raises
 * "not enough memory" inside the call, and the state stays usable (memory the script still
 * references, e.g. from a global, stays used). Known gap: a single C library call is not
 * interrupted by the count hook, so a pathological string.find/match/gsub pattern can take long;
 * memory-hungry ones (string.rep, table.concat) are bounded by the memory cap.
 *
 * Errors are reported as "FILE:LINE: message": Lua's own position, or for an error raised in a C
 * helper (or a non-string error value) the position of the nearest Lua caller. FILE is Lua's
 * short source name (a path longer than 60 bytes is shortened to "...its tail").
 */
#ifndef FY_LUA_VM_H
#define FY_LUA_VM_H

#include <stddef.h>
#include <stdint.h>

struct fy_lua;

struct fy_lua_limits {
    uint64_t instructions; /* per hook call, 0 = default 10M */
    size_t memory;         /* per state, 0 = default 64 MiB */
};

#define FY_LUA_DEFAULT_INSTRUCTIONS 10000000u
#define FY_LUA_DEFAULT_MEMORY ((size_t)64 << 20)

enum fy_lua_hook_bits {
    FY_LUA_ON_REQUEST = 1u,
    FY_LUA_ON_RESPONSE = 2u,
    FY_LUA_ON_LOG = 4u,
};

/* Compiles the script without running hooks (for `ferry -t`): runs the chunk's top level in a
 * fresh sandboxed state with the default limits (so a top-level error is caught too) and checks
 * that on_request/on_response/on_log, when defined, are functions. Returns 0, or -1 with
 * "FILE:LINE: message" in err (a file that cannot be read: "cannot open FILE ..."). */
int fy_lua_check(const char *path, char *err, size_t errlen);

/* Loads the script into a new sandboxed state and runs its top level (under the limits; lim NULL
 * = defaults). Returns the state, or NULL with the error in err (as fy_lua_check). Call from the
 * thread that will use the state; the file is read here, never during a hook. */
struct fy_lua *fy_lua_open(const char *path, const struct fy_lua_limits *lim, char *err,
                           size_t errlen);

/* Closes the state. Every exchange (struct fy_lua_x) must have been released first. NULL is
 * fine. */
void fy_lua_close(struct fy_lua *vm);

/* Bitmask of FY_LUA_ON_* for the hook functions the script defined (found after its top level
 * ran; later reassignments of the globals are not seen). */
unsigned fy_lua_hooks(const struct fy_lua *vm);

/* The path the state was opened with (owned by the state). */
const char *fy_lua_path(const struct fy_lua *vm);

/* Bytes the state's allocator holds now (for stats and tests). */
size_t fy_lua_memory(const struct fy_lua *vm);

#endif
