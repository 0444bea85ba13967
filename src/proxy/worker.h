/*
 * A worker thread: its own loop, SO_REUSEPORT listener, client connections, upstream pool and
 * access-log buffer. Workers share only the read-only config.
 */
#ifndef FY_WORKER_H
#define FY_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf/config.h"
#include "core/loop.h"
#include "http/h1_reader.h"
#include "http/tokens.h"
#include "net/sock.h"
#include "proxy/accesslog.h"
#include "proxy/connpool.h"

struct fy_client;

struct fy_worker {
    struct fy_loop loop;
    const struct fy_config *cfg;
    int id;
    int listen_fd;
    struct fy_sock listener;
    struct fy_task accept_task;
    struct fy_connpool pool;
    struct fy_h1r_limits req_limits, resp_limits;
    fy_tokmask req_rule_mask, resp_rule_mask; /* tokens named by header rules */
    struct fy_accesslog alog;
    struct fy_client *clients; /* all client connections, for draining */
    uint32_t nclients;
    uint32_t nsessions;
    bool draining;
    struct fy_timer drain_timer;
    pthread_t thread;
};

/* Prepares a worker around an already bound listening fd. Returns 0 or -errno. */
int fy_worker_init(struct fy_worker *w, const struct fy_config *cfg, int id, int listen_fd);

/* Thread body: runs the loop until drained. */
void *fy_worker_main(void *arg);

/* Called when the worker may have become idle while draining. */
void fy_worker_check_drained(struct fy_worker *w);

void fy_worker_destroy(struct fy_worker *w);

#endif
