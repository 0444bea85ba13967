/* Worker threads: accept, drain on shutdown; see worker.h. */
#include "proxy/worker.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/macros.h"
#include "core/log.h"
#include "filters/hdr_rules.h"
#include "proxy/client_h1.h"

extern int fy_accesslog_fd;
void fy_client_io_freelist_release(void);

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

int fy_worker_init(struct fy_worker *w, const struct fy_config *cfg, int id, int listen_fd)
{
    memset(w, 0, sizeof(*w));
    int rc = fy_loop_init(&w->loop);
    if (rc < 0)
        return rc;
    w->loop.owner = w;
    w->loop.on_stop = on_stop;
    w->cfg = cfg;
    w->id = id;
    w->listen_fd = listen_fd;
    w->req_limits = (struct fy_h1r_limits){
        .max_line = cfg->max_request_line,
        .max_head = cfg->max_header_size,
        .max_fields = cfg->max_headers,
        .max_body = cfg->max_body_size,
    };
    /* Upstream heads get the buffer size as their limit; a larger one is a 502. */
    w->resp_limits = (struct fy_h1r_limits){
        .max_line = FY_BUF_SIZE, .max_head = FY_BUF_SIZE - 1, .max_fields = 1000, .max_body = 0};
    w->req_rule_mask = fy_hdr_rules_token_mask(&cfg->request_rules);
    w->resp_rule_mask = fy_hdr_rules_token_mask(&cfg->response_rules);
    fy_connpool_init(&w->pool, &w->loop, &cfg->upstream, &w->resp_limits, cfg->pool_max_idle,
                     cfg->pool_idle_timeout);
    fy_timer_init(&w->drain_timer, on_drain_timeout);
    w->accept_task.fn = on_accept;
    if (fy_accesslog_init(&w->alog, &w->loop, fy_accesslog_fd, cfg->access_log_format) < 0)
        return -ENOMEM;
    rc = fy_sock_open(&w->listener, &w->loop, listen_fd, &w->accept_task);
    return rc;
}

void *fy_worker_main(void *arg)
{
    struct fy_worker *w = arg;
    fy_loop_queue(&w->loop, &w->accept_task);
    fy_loop_run(&w->loop);
    while (w->clients)
        fy_client_kill(w->clients);
    fy_connpool_close_all(&w->pool);
    fy_accesslog_flush(&w->alog);
    /* The free lists are per thread: give their memory back before the thread ends. */
    fy_buf_freelist_release();
    fy_client_io_freelist_release();
    return NULL;
}

void fy_worker_destroy(struct fy_worker *w)
{
    fy_accesslog_destroy(&w->alog);
    if (w->listen_fd >= 0)
        fy_sock_close(&w->listener);
    fy_loop_destroy(&w->loop);
}
