/*
 * Lua hooks (lua: on a listener or a route, quick --lua; docs/lua.md): runs a script's
 * on_request, on_response and on_log on the session's hook points, and its resp:filter_body()
 * function as a body filter. See lua_hook.c.
 */
#ifndef FY_LUA_HOOK_H
#define FY_LUA_HOOK_H

#include "proxy/hooks.h"

extern const struct fy_hook fy_lua_hook;

#endif
