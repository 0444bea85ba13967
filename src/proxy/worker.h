/*
 * A worker thread: its own loop, SO_REUSEPORT listening sockets (one per listener address),
 * client connections, upstream pools and access-log buffer. Workers share only the read-only
 * configuration generations (and the atomics of server states).
 *
 * Generations: the worker holds one reference on the current struct fy_conf, wrapped in a
 * struct fy_wgen with this worker's runtime for it (balancers, the pool of each server).
 * Sessions count themselves on the wgen with a plain counter (worker-local), so a request
 * touches no atomic; an old wgen is freed, and its conf reference dropped, when its last
 * session ends.
 */
#ifndef FY_WORKER_H
#define FY_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf/conf.h"
#include "core/loop.h"
#include "http/h1_reader.h"
#include "http/tokens.h"
#include "net/sock.h"
#include "proxy/accesslog.h"
#include "proxy/connpool.h"
#include "proxy/hooks.h"

struct fy_client;
struct fy_dns;
struct fy_fwd_pools;
struct fy_auth_cache;
struct fy_tls_mint;
struct fy_handshake;
struct fy_health_checker;
struct fy_lb;
struct fy_worker;

/* Sessions of one group waiting for a server below max-conns, oldest first. */
struct fy_wqueue {
    struct fy_session *head, *tail;
    uint32_t n;
};

/* A generation as one worker uses it. */
struct fy_wgen {
    struct fy_wqueue *queues;     /* per group */
    struct fy_conf *conf;         /* one reference */
    struct fy_lb *lbs;            /* per group, like conf->groups */
    struct fy_connpool ***pools;  /* [group][server->pool_slot + address]: the worker's pools */
    unsigned users;               /* sessions using it; worker-local */
    void *hook_gen[FY_MAX_HOOKS]; /* each hook's gen_open() result (hooks.h), by hook index */
    struct fy_wgen *next_retired; /* replaced, waiting for its last session */
};

/* One listening socket of a worker. Allocated on its own so its address stays put (epoll and
 * the clients it accepted point to it); a listener a reload removed is closed but kept until the
 * worker exits, marked FY_LSN_GONE, because clients it accepted may still point to it. */
struct fy_wlistener {
    struct fy_worker *w;
    int fd; /* -1 once closed */
    struct fy_sock sock;
    struct fy_task accept_task;
    /* Out of descriptors: accepting resumes on this timer, since the edge-triggered listener
     * reports nothing more for connections already queued in the kernel. */
    struct fy_timer retry;
    uint64_t warned_ms; /* when the last "cannot accept" warning was logged */
    struct fy_addr addr;
    uint32_t listener; /* index in the current generation's listeners, or FY_LSN_GONE */
    struct fy_wlistener *next_gone;
};
#define FY_LSN_GONE UINT32_MAX

/* A new generation for a worker (the main thread's reload): `conf` is a reference the worker
 * takes over; fds[i] is the listening socket for the i-th address of conf's listeners
 * (listener-major), or -1 when the worker keeps the one it has for that address. */
struct fy_worker_reload {
    struct fy_conf *conf;
    int *fds;
    uint32_t nfds;
};

struct fy_worker {
    struct fy_loop loop;
    struct fy_wgen *gen;         /* current generation */
    const struct fy_config *cfg; /* &gen->conf->settings */
    struct fy_wgen *retired;     /* older generations still used by sessions */
    int id;
    struct fy_wlistener **lsn; /* in the order of the current generation's addresses */
    uint32_t nlsn;
    struct fy_wlistener *gone_lsn; /* removed by reloads */
    struct fy_pools pools;
    /* The forward proxy: the resolver of destinations (NULL when c-ares could not start) and
     * the destinations' pools. */
    struct fy_dns *dns;
    struct fy_fwd_pools *fwd_pools;
    struct fy_auth_cache *auth_cache; /* Proxy-Authorization checks that passed */
    struct fy_tls_mint *mint; /* interception's certificates, made on first use (net/tls.h) */
    struct fy_h1r_limits req_limits, resp_limits;
    uint32_t client_in_size; /* capacity of a client connection's input buffer */
    uint64_t rng;            /* request ids, balancer seeds */
    /* retry budget: requests and retries in the current and the previous window */
    uint64_t budget_window;
    uint32_t budget_requests[2], budget_retries[2];
    struct fy_accesslog alog;
    struct fy_client *clients;       /* all client connections, for draining */
    struct fy_handshake *handshakes; /* TLS connections before their handler (handshake.c) */
    uint32_t nclients;               /* both kinds */
    uint32_t nsessions;
    bool draining;
    struct fy_timer drain_timer;
    struct fy_health_checker *health; /* worker 0 only: the active checks (NULL: none) */
    pthread_t thread;
    /* Shared with the main thread, accessed atomically only (see fy_worker_request_*). */
    unsigned flush_req, flush_done; /* access-log flush generations asked for / carried out */
    bool exited;                    /* fy_worker_main has finished */
    struct fy_worker_reload *pending_reload; /* handed over by fy_worker_request_reload */
    unsigned reload_done;                    /* generation number last adopted */
    int notify_fd; /* eventfd the worker pokes after a flush and when it exits; -1 = none */
};

/* fy_loop_notify() bits of a worker's loop. */
#define FY_WORKER_FLUSH 1u  /* write out the buffered access-log lines */
#define FY_WORKER_QUIT 2u   /* stop at once: cut the exchanges in progress */
#define FY_WORKER_RELOAD 4u /* adopt pending_reload */

/* Prepares a worker for generation `conf` (takes its own reference) around already bound
 * listening fds, one per listener address in conf order (listener-major), which it owns from now
 * on (also on failure: then they are closed and nothing else is left allocated). `alog_fd` is
 * the access log, shared by every worker and not owned (-1 = off). Returns 0 or -errno. */
int fy_worker_init(struct fy_worker *w, struct fy_conf *conf, int id, const int *fds, uint32_t nfds,
                   int alog_fd);

/* A session starts on the current generation: counts it and returns it. */
struct fy_wgen *fy_worker_gen_acquire(struct fy_worker *w);

/* The session using gen has ended. */
void fy_worker_gen_release(struct fy_worker *w, struct fy_wgen *gen);

/* May this exchange retry (the worker's retry budget: retries stay under a fifth of recent
 * requests, with a floor of a few per second)? Counts the retry when it may. */
bool fy_worker_retry_allowed(struct fy_worker *w);

/* Counts a request towards the retry budget. */
void fy_worker_count_request(struct fy_worker *w);

/* A random 64-bit number from the worker's generator. */
uint64_t fy_worker_random(struct fy_worker *w);

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

/* Thread-safe (main thread): hands the worker a new generation (r and everything in it is the
 * worker's from now on; it frees r). The worker adopts it within one loop iteration: new
 * exchanges use it, exchanges in flight finish on theirs, and listening sockets follow r. Only
 * one reload may be pending: wait for fy_worker_reloaded() before the next. */
void fy_worker_request_reload(struct fy_worker *w, struct fy_worker_reload *r);

/* Thread-safe: the worker serves generation `generation` (or has exited). */
bool fy_worker_reloaded(const struct fy_worker *w, unsigned generation);

/* Thread-safe: fy_worker_main has finished (the thread may still need joining). */
bool fy_worker_exited(const struct fy_worker *w);

/* Releases what fy_worker_init set up; the thread must have ended (or never started). */
void fy_worker_destroy(struct fy_worker *w);

/* Frees the calling thread's free list of client parser/writer state (defined in client_h1.c):
 * each worker calls it as its thread ends. */
void fy_client_io_freelist_release(void);

#endif
