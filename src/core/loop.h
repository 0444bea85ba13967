/*
 * One event loop per worker thread: epoll (edge-triggered), timers and a run queue. I/O callbacks
 * only record readiness and queue the owning task; tasks run after the events of one wakeup are
 * collected, so a task may free objects without pulling the rug from under an event handler.
 * Nothing here is shared between threads except the wakeup eventfd.
 */
#ifndef FY_LOOP_H
#define FY_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/timer.h"

struct fy_loop;
struct fy_task;
typedef void fy_task_fn(struct fy_task *task);

/* A unit of deferred work; embedded in the object it runs for. */
struct fy_task {
    fy_task_fn *fn;
    struct fy_task *next;
    bool queued;
};

/* Something registered with epoll. `on_event` runs inside event dispatch: it must only record
 * state and queue tasks. */
struct fy_pollable;
typedef void fy_event_fn(struct fy_pollable *p, uint32_t events);
struct fy_pollable {
    fy_event_fn *on_event;
};

typedef void fy_loop_stop_fn(struct fy_loop *loop);
typedef void fy_loop_notify_fn(struct fy_loop *loop, unsigned bits);

struct fy_loop {
    int epfd;
    int wake_fd; /* eventfd: other threads poke it to make the loop look at `stop` */
    struct fy_pollable wake;
    int stop_requested; /* set by other threads; accessed atomically only */
    unsigned notify;    /* fy_loop_notify() bits not yet handled; accessed atomically only */
    bool quit;          /* fy_loop_quit(): leave fy_loop_run (loop thread only) */
    uint64_t now_ms;    /* monotonic, refreshed after every wakeup */
    uint64_t now_us;
    struct fy_task *rq_head, *rq_tail;
    struct fy_timer_heap timers;
    fy_loop_stop_fn *on_stop;     /* runs once when a stop is first seen */
    fy_loop_notify_fn *on_notify; /* runs in the loop thread with the bits of fy_loop_notify() */
    void *owner;
};

/* Creates the epoll instance and wakeup eventfd. Returns 0 or -errno. */
int fy_loop_init(struct fy_loop *loop);
void fy_loop_destroy(struct fy_loop *loop);

/* Registers fd edge-triggered for reading and writing (never modified afterwards). */
int fy_loop_add(struct fy_loop *loop, int fd, struct fy_pollable *p);
int fy_loop_add_read(struct fy_loop *loop, int fd, struct fy_pollable *p);
/* Points a registered fd (added with fy_loop_add) at another pollable; re-arms its edges. */
int fy_loop_mod(struct fy_loop *loop, int fd, struct fy_pollable *p);
void fy_loop_del(struct fy_loop *loop, int fd);

/* Queues a task to run in this iteration (at most once until it runs). */
static inline void fy_loop_queue(struct fy_loop *loop, struct fy_task *t)
{
    if (t->queued)
        return;
    t->queued = true;
    t->next = NULL;
    if (loop->rq_tail)
        loop->rq_tail->next = t;
    else
        loop->rq_head = t;
    loop->rq_tail = t;
}

/* Queues a task to run next, ahead of the others (work that just became possible and is on a
 * request's critical path, such as forwarding a freshly parsed request). */
static inline void fy_loop_queue_front(struct fy_loop *loop, struct fy_task *t)
{
    if (t->queued)
        return;
    t->queued = true;
    t->next = loop->rq_head;
    loop->rq_head = t;
    if (!loop->rq_tail)
        loop->rq_tail = t;
}

/* Removes a queued task (used before freeing its owner). */
void fy_loop_unqueue(struct fy_loop *loop, struct fy_task *t);

/* Timers: arm `ms` milliseconds from now; stop is lazy and O(1); del must precede freeing.
 * Arming cannot fail: the heap is intrusive (timer.h), so a connection or session that exists
 * always has its timeout, and no allocation happens on the hot path. */
static inline void fy_loop_timer_set(struct fy_loop *loop, struct fy_timer *t, uint64_t ms)
{
    fy_timer_heap_arm(&loop->timers, t, loop->now_ms + ms);
}
static inline void fy_loop_timer_stop(struct fy_timer *t)
{
    t->deadline = 0;
}
static inline void fy_loop_timer_del(struct fy_loop *loop, struct fy_timer *t)
{
    fy_timer_heap_remove(&loop->timers, t);
}

/* Refreshes now_ms/now_us from CLOCK_MONOTONIC. */
void fy_loop_update_time(struct fy_loop *loop);

/* Runs until fy_loop_quit() has been called from a task. */
void fy_loop_run(struct fy_loop *loop);

/* Runs the queued tasks, and those they queue, until the run queue is empty, without waiting for
 * events or timers. For teardown after fy_loop_run returned: objects detached at exit (sessions
 * of killed clients) finish and free themselves in their own task. Tasks must not wait on I/O. */
void fy_loop_run_pending(struct fy_loop *loop);
void fy_loop_quit(struct fy_loop *loop);

/* Thread-safe: asks the loop to start stopping (runs on_stop in the loop's thread). */
void fy_loop_request_stop(struct fy_loop *loop);

/* Thread-safe: sets `bits` (owner-defined, non-zero) and wakes the loop. After the events of its
 * next wakeup the loop thread calls on_notify once with every bit set since the previous call;
 * requests of the same kind made in between merge into one. */
void fy_loop_notify(struct fy_loop *loop, unsigned bits);

#endif
