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
    uint32_t client_in_size;                  /* capacity of a client connection's input buffer */
    fy_tokmask req_rule_mask, resp_rule_mask; /* tokens named by header rules */
    struct fy_accesslog alog;
    struct fy_client *clients; /* all client connections, for draining */
    uint32_t nclients;
    uint32_t nsessions;
    bool draining;
    struct fy_timer drain_timer;
    pthread_t thread;
    /* Shared with the main thread, accessed atomically only (see fy_worker_request_*). */
    unsigned flush_req, flush_done; /* access-log flush generations asked for / carried out */
    bool exited;                    /* fy_worker_main has finished */
    int notify_fd; /* eventfd the worker pokes after a flush and when it exits; -1 = none */
};

/* fy_loop_notify() bits of a worker's loop. */
#define FY_WORKER_FLUSH 1u /* write out the buffered access-log lines */
#define FY_WORKER_QUIT 2u  /* stop at once: cut the exchanges in progress */

/* Prepares a worker around an already bound listening fd, which it owns from now on (also on
 * failure: then the fd is closed and nothing else is left allocated). `alog_fd` is the access
 * log, shared by every worker and not owned (-1 = off). Returns 0 or -errno. */
int fy_worker_init(struct fy_worker *w, const struct fy_config *cfg, int id, int listen_fd,
                   int alog_fd);

/* Thread body: runs the loop until drained, then closes what is left (clients, the sessions they
 * detach, idle upstream connections), flushes the access log and releases the thread's free
 * lists. Returns with nclients == nsessions == 0. */
void *fy_worker_main(void *arg);

/* Called when the worker may have become idle while draining. */
void fy_worker_check_drained(struct fy_worker *w);

/* Thread-safe (main thread): asks the worker to write out its buffered access-log lines and to
 * record generation `gen` once done; fy_worker_flushed() then holds and notify_fd is poked. */
void fy_worker_request_flush(struct fy_worker *w, unsigned gen);

/* Thread-safe: the flush of generation `gen` is done, or the worker has exited (it flushes on its
 * way out), so no line it buffered before the request is still unwritten. */
bool fy_worker_flushed(const struct fy_worker *w, unsigned gen);

/* Thread-safe: makes the worker stop at once (a second SIGTERM during the drain). Exchanges in
 * progress are cut and logged (499), connections closed; the thread then ends as after a drain. */
void fy_worker_request_quit(struct fy_worker *w);

/* Thread-safe: fy_worker_main has finished (the thread may still need joining). */
bool fy_worker_exited(const struct fy_worker *w);

/* Releases what fy_worker_init set up; the thread must have ended (or never started). */
void fy_worker_destroy(struct fy_worker *w);

/* Frees the calling thread's free list of client parser/writer state (defined in client_h1.c):
 * each worker calls it as its thread ends. */
void fy_client_io_freelist_release(void);

#endif
