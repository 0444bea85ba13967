/*
 * Reload (SIGHUP, ferry -s reload): the main thread reads the configuration again with the same
 * command line, compiles a new generation, opens the listening sockets of new addresses, and
 * hands the generation to every worker (fy_worker_request_reload). Exchanges and connections in
 * flight finish on the generation they started with; listeners that stay keep their sockets;
 * removed ones close and their connections drain. A configuration that does not load, or an
 * address that cannot be bound, refuses the reload with its errors logged: the old generation
 * keeps serving.
 */
#ifndef FY_RELOAD_H
#define FY_RELOAD_H

#include "conf/conf.h"
#include "proxy/worker.h"

struct fy_reload_ctx {
    int argc;
    char **argv;               /* the command line ferry started with */
    struct fy_worker *workers; /* running */
    int nworkers;
    int done_fd;          /* the eventfd workers poke after adopting */
    struct fy_conf *conf; /* the current generation (main's reference; replaced) */
};

/* Returns 0 when every worker serves the new generation, -1 when the reload was refused. */
int fy_reload_run(struct fy_reload_ctx *r);

#endif
