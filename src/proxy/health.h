/*
 * Active health checks of upstream servers (HAProxy's `check`, nginx plus `health_check`). For
 * every server of every group whose `health:` is enabled, one worker's loop sends
 * `GET path HTTP/1.1` on a new connection every interval and reads the status line: `fall`
 * failed checks in a row set the server's shared state->down, `rise` good ones clear it again.
 *
 * Invariants: everything runs on the one loop given to fy_health_start (no locks). What matters
 * beyond an in-flight probe lives in struct fy_server_state (down, hc_ok, hc_fail), which the
 * next configuration generation shares for unchanged servers: a checker started for that
 * generation continues where this one stopped, so a reload neither resets a down server to up
 * nor restarts its count. Balancers only read state->down (fy_lb_usable).
 */
#ifndef FY_HEALTH_H
#define FY_HEALTH_H

#include "conf/conf.h"
#include "core/loop.h"

/* The running checks of one generation (struct fy_health in conf.h is a group's settings). */
struct fy_health_checker;

/* Starts checking every server of every group of `conf` with health enabled, on `loop` (from
 * the loop's own thread). Servers whose group has no check but whose carried-over state says
 * down are set up again, since nothing would ever clear it. `conf` is not referenced: the caller
 * keeps it alive until fy_health_stop. Returns NULL when no group has health enabled, or when
 * out of memory (logged; no server is then checked). */
struct fy_health_checker *fy_health_start(struct fy_loop *loop, struct fy_conf *conf);

/* Stops every check: closes probe connections in flight (their outcome is dropped, the counts
 * keep the results of finished checks), cancels timers and tasks, and frees the checker. Call
 * from the loop's thread, never from inside a check (it is no callback's caller). NULL is
 * ignored. */
void fy_health_stop(struct fy_health_checker *hc);

#endif
