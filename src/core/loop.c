/* epoll loop with a run queue and a timer heap; see loop.h. */
#include "core/loop.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

#define MAX_EVENTS 256

static void on_wake(struct fy_pollable *p, uint32_t events)
{
    (void)events;
    struct fy_loop *loop = (struct fy_loop *)((char *)p - offsetof(struct fy_loop, wake));
    uint64_t v;
    while (read(loop->wake_fd, &v, sizeof(v)) > 0)
        ;
}

int fy_loop_init(struct fy_loop *loop)
{
    memset(loop, 0, sizeof(*loop));
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0)
        return -errno;
    loop->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->wake_fd < 0) {
        int err = -errno;
        close(loop->epfd);
        return err;
    }
    loop->wake.on_event = on_wake;
    if (fy_loop_add_read(loop, loop->wake_fd, &loop->wake) < 0) {
        int err = -errno;
        close(loop->wake_fd);
        close(loop->epfd);
        return err;
    }
    fy_loop_update_time(loop);
    return 0;
}

void fy_loop_destroy(struct fy_loop *loop)
{
    close(loop->wake_fd);
    close(loop->epfd);
}

int fy_loop_add(struct fy_loop *loop, int fd, struct fy_pollable *p)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = p};
    return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int fy_loop_mod(struct fy_loop *loop, int fd, struct fy_pollable *p)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = p};
    return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

int fy_loop_add_read(struct fy_loop *loop, int fd, struct fy_pollable *p)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = p};
    return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

void fy_loop_del(struct fy_loop *loop, int fd)
{
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
}

void fy_loop_unqueue(struct fy_loop *loop, struct fy_task *t)
{
    if (!t->queued)
        return;
    struct fy_task **pp = &loop->rq_head, *prev = NULL;
    while (*pp && *pp != t) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = t->next;
        if (loop->rq_tail == t)
            loop->rq_tail = prev;
    }
    t->queued = false;
    t->next = NULL;
}

void fy_loop_update_time(struct fy_loop *loop)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    loop->now_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    loop->now_ms = loop->now_us / 1000u;
}

static void run_queue(struct fy_loop *loop)
{
    while (loop->rq_head) {
        struct fy_task *t = loop->rq_head;
        loop->rq_head = t->next;
        if (!loop->rq_head)
            loop->rq_tail = NULL;
        t->queued = false;
        t->next = NULL;
        t->fn(t);
    }
}

void fy_loop_run_pending(struct fy_loop *loop)
{
    run_queue(loop);
}

void fy_loop_quit(struct fy_loop *loop)
{
    loop->quit = true;
}

void fy_loop_request_stop(struct fy_loop *loop)
{
    if (__atomic_load_n(&loop->stop_requested, __ATOMIC_ACQUIRE))
        return;
    __atomic_store_n(&loop->stop_requested, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    ssize_t w = write(loop->wake_fd, &one, sizeof(one));
    (void)w;
}

void fy_loop_notify(struct fy_loop *loop, unsigned bits)
{
    __atomic_fetch_or(&loop->notify, bits, __ATOMIC_ACQ_REL);
    uint64_t one = 1;
    ssize_t w = write(loop->wake_fd, &one, sizeof(one));
    (void)w;
}

void fy_loop_run(struct fy_loop *loop)
{
    struct epoll_event events[MAX_EVENTS];
    bool stop_seen = false;
    while (!loop->quit) {
        int timeout = loop->rq_head ? 0 : fy_timer_heap_wait_ms(&loop->timers, loop->now_ms);
        int n = epoll_wait(loop->epfd, events, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR) {
            fy_error("epoll_wait failed: %s", strerror(errno));
            break;
        }
        fy_loop_update_time(loop);
        for (int i = 0; i < n; i++) {
            struct fy_pollable *p = events[i].data.ptr;
            p->on_event(p, events[i].events);
        }
        if (!stop_seen && __atomic_load_n(&loop->stop_requested, __ATOMIC_ACQUIRE)) {
            stop_seen = true;
            if (loop->on_stop)
                loop->on_stop(loop);
        }
        if (__atomic_load_n(&loop->notify, __ATOMIC_RELAXED)) {
            unsigned bits = __atomic_exchange_n(&loop->notify, 0, __ATOMIC_ACQ_REL);
            if (bits && loop->on_notify)
                loop->on_notify(loop, bits);
        }
        struct fy_timer *t;
        while ((t = fy_timer_heap_pop_due(&loop->timers, loop->now_ms)) != NULL)
            t->fn(t);
        run_queue(loop);
    }
}
