/* Worker threads: accept, drain on shutdown; see worker.h. */
#include "proxy/worker.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/assert.h"
#include "core/buf.h"
#include "core/macros.h"
#include "core/log.h"
#include "filters/hdr_rules.h"
#include "proxy/client_h1.h"
#include "proxy/session.h"

static void on_accept(struct fy_task *t)
{
    struct fy_worker *w = container_of(t, struct fy_worker, accept_task);
    if (w->draining)
        return;
    /* Bounded per wakeup so one busy listener cannot starve established connections. */
    for (int i = 0; i < 256; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        int fd =
            accept4(w->listen_fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN) {
                w->listener.rd_ready = false;
                return;
            }
            if (errno == EMFILE || errno == ENFILE)
                fy_warn("cannot accept: %s (raise the open files limit)", strerror(errno));
            else
                fy_warn("accept failed: %s", strerror(errno));
            return;
        }
        if (w->nclients >= w->cfg->max_connections) {
            /* Over the limit: refuse this one, keep serving the others. */
            close(fd);
            continue;
        }
        fy_client_accept(w, fd, (struct sockaddr *)&peer, len);
    }
    fy_loop_queue(&w->loop, &w->accept_task);
}

void fy_worker_check_drained(struct fy_worker *w)
{
    if (w->draining && w->nclients == 0 && w->nsessions == 0)
        fy_loop_quit(&w->loop);
}

static void on_drain_timeout(struct fy_timer *t)
{
    struct fy_worker *w = container_of(t, struct fy_worker, drain_timer);
    if (w->nclients)
        fy_warn("drain timeout: closing %u connection(s) still in progress", w->nclients);
    while (w->clients)
        fy_client_kill(w->clients);
    fy_worker_check_drained(w);
    if (w->nsessions == 0)
        fy_loop_quit(&w->loop);
}

static void on_stop(struct fy_loop *loop)
{
    struct fy_worker *w = loop->owner;
    w->draining = true;
    /* Stop accepting first so the kernel refuses new connections on this socket. */
    if (w->listen_fd >= 0) {
        fy_sock_close(&w->listener);
        w->listen_fd = -1;
    }
    struct fy_client *c = w->clients;
    while (c) {
        struct fy_client *next = fy_client_next(c);
        fy_client_drain(c);
        c = next;
    }
    fy_loop_timer_set(loop, &w->drain_timer, w->cfg->drain_timeout);
    fy_worker_check_drained(w);
}

static void poke_main(struct fy_worker *w)
{
    if (w->notify_fd < 0)
        return;
    uint64_t one = 1;
    ssize_t n = write(w->notify_fd, &one, sizeof(one));
    (void)n;
}

static void on_notify(struct fy_loop *loop, unsigned bits)
{
    struct fy_worker *w = loop->owner;
    if (bits & FY_WORKER_FLUSH) {
        unsigned gen = __atomic_load_n(&w->flush_req, __ATOMIC_ACQUIRE);
        fy_accesslog_flush(&w->alog);
        __atomic_store_n(&w->flush_done, gen, __ATOMIC_RELEASE);
        poke_main(w);
    }
    if (bits & FY_WORKER_QUIT) {
        /* fy_worker_main closes what is left once the loop has returned. */
        fy_loop_quit(loop);
    }
}

void fy_worker_request_flush(struct fy_worker *w, unsigned gen)
{
    __atomic_store_n(&w->flush_req, gen, __ATOMIC_RELEASE);
    fy_loop_notify(&w->loop, FY_WORKER_FLUSH);
}

bool fy_worker_flushed(const struct fy_worker *w, unsigned gen)
{
    return __atomic_load_n(&w->flush_done, __ATOMIC_ACQUIRE) == gen ||
           __atomic_load_n(&w->exited, __ATOMIC_ACQUIRE);
}

void fy_worker_request_quit(struct fy_worker *w)
{
    fy_loop_notify(&w->loop, FY_WORKER_QUIT);
}

bool fy_worker_exited(const struct fy_worker *w)
{
    return __atomic_load_n(&w->exited, __ATOMIC_ACQUIRE);
}

int fy_worker_init(struct fy_worker *w, const struct fy_config *cfg, int id, int listen_fd,
                   int alog_fd)
{
    memset(w, 0, sizeof(*w));
    w->listen_fd = -1;
    w->notify_fd = -1;
    int rc = fy_loop_init(&w->loop);
    if (rc < 0)
        goto fail_fd;
    w->loop.owner = w;
    w->loop.on_stop = on_stop;
    w->loop.on_notify = on_notify;
    w->cfg = cfg;
    w->id = id;
    w->req_limits = (struct fy_h1r_limits){
        .max_line = cfg->max_request_line,
        .max_head = cfg->max_header_size,
        .max_fields = cfg->max_headers,
        .max_body = cfg->max_body_size,
    };
    /* A client's input buffer holds a whole head (plus the first body bytes): its size is a
     * buffer class so keep-alive requests recycle it instead of malloc'ing one each. */
    w->client_in_size =
        cfg->max_header_size + 1024 > FY_BUF_SIZE ? cfg->max_header_size + 1024 : FY_BUF_SIZE;
    fy_buf_add_class(w->client_in_size, 4096);
    /* Upstream heads get the buffer size as their limit; a larger one is a 502. */
    w->resp_limits = (struct fy_h1r_limits){
        .max_line = FY_BUF_SIZE, .max_head = FY_BUF_SIZE - 1, .max_fields = 1000, .max_body = 0};
    w->req_rule_mask = fy_hdr_rules_token_mask(&cfg->request_rules);
    w->resp_rule_mask = fy_hdr_rules_token_mask(&cfg->response_rules);
    fy_connpool_init(&w->pool, &w->loop, &cfg->upstream, &w->resp_limits, cfg->pool_max_idle,
                     cfg->pool_idle_timeout);
    fy_timer_init(&w->drain_timer, on_drain_timeout);
    w->accept_task.fn = on_accept;
    if (fy_accesslog_init(&w->alog, &w->loop, alog_fd, cfg->access_log_format) < 0) {
        rc = -ENOMEM;
        goto fail_alog;
    }
    rc = fy_sock_open(&w->listener, &w->loop, listen_fd, &w->accept_task);
    if (rc < 0) {
        listen_fd = -1; /* fy_sock_open closed it */
        goto fail_alog;
    }
    w->listen_fd = listen_fd;
    return 0;

fail_alog:
    fy_accesslog_destroy(&w->alog);
    fy_loop_destroy(&w->loop);
fail_fd:
    if (listen_fd >= 0)
        close(listen_fd);
    return rc;
}

void *fy_worker_main(void *arg)
{
    struct fy_worker *w = arg;
    fy_loop_queue(&w->loop, &w->accept_task);
    fy_loop_run(&w->loop);
    /* The loop has ended (drained, drain timeout, or a loop failure). Killing a client detaches
     * its session, which finishes and frees itself in its own task: run those tasks here, since
     * the loop no longer does, before the pool and the free lists go. */
    if (w->nclients)
        fy_warn("stopping now: closing %u connection(s) still in progress", w->nclients);
    while (w->clients)
        fy_client_kill(w->clients);
    fy_loop_run_pending(&w->loop);
    FY_ASSERT(w->nclients == 0 && w->nsessions == 0);
    fy_connpool_close_all(&w->pool);
    fy_accesslog_flush(&w->alog);
    /* The free lists are per thread: give their memory back before the thread ends. */
    fy_buf_freelist_release();
    fy_client_io_freelist_release();
    fy_session_freelist_release();
    __atomic_store_n(&w->exited, true, __ATOMIC_RELEASE);
    poke_main(w);
    return NULL;
}

void fy_worker_destroy(struct fy_worker *w)
{
    fy_accesslog_destroy(&w->alog);
    if (w->listen_fd >= 0)
        fy_sock_close(&w->listener);
    fy_loop_destroy(&w->loop);
}
