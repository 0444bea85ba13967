/*
 * Capture files and their writer threads; see capture.h.
 *
 * Rings: each producer queue of a file has a ring of (flow, handle) slots. The producer owns
 * `tail`, the writer owns `head`; slots are published by the tail's store and given back by the
 * head's. Waking: after publishing, a producer wakes the writer (one eventfd write) only when
 * the ring was empty as its flow landed, i.e. the writer had taken everything before it. The
 * writer stores head and then re-reads every tail before it sleeps; both sides use sequentially
 * consistent operations for that pair, so either the writer sees the new tail or the producer
 * sees the caught-up head and wakes it: no flow waits for a wake-up that never comes.
 *
 * Lifetimes: handles and files are counted under one registry lock (open, ref, unref: never on
 * the submit path). A file lives until its last handle reference is gone and its writer has
 * drained and ended; its handles live as long as the file, since queued flows point at them.
 * Nothing is queued any more once the references are gone (a producer holds one to submit), so
 * the writer's last drain after it sees `closing` is complete.
 */
#include "proxy/capture.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/assert.h"
#include "core/log.h"

#define BATCH_BYTES (256 * 1024) /* write(2) once this much is buffered */
#define LINE_MAX_BYTES ((size_t)1 << 30)
#define LOG_EVERY_MS 1000

struct slot {
    struct fy_flow *flow;
    struct fy_capture *cap;
};

struct ring {
    _Alignas(64) _Atomic uint64_t head; /* next slot the writer reads */
    _Alignas(64) _Atomic uint64_t tail; /* next slot the producer fills */
    uint64_t mask;
    struct slot slots[];
};

struct cfile {
    char *path;
    int fd, efd;
    dev_t dev;
    ino_t ino;
    uint32_t ring_size;
    pthread_t thread;
    _Atomic(struct ring *) rings[FY_CAPTURE_MAX_QUEUES];
    _Atomic uint32_t nqueues; /* one past the highest queue with a ring */
    _Atomic bool closing;
    _Atomic uint64_t dropped;
    /* under reg_lock */
    uint32_t users; /* references over all handles */
    struct fy_capture *handles;
    struct cfile *next; /* in `live` or `stopped` */
    /* writer thread only */
    struct fy_json_writer out;
    uint64_t logged_drops, last_drop_log_ms, last_error_log_ms, lost;
    uint32_t batch_flows; /* records in `out` */
    bool owe_newline;     /* a failed write left a partial line the next write must end */
};

struct fy_capture {
    struct cfile *file;
    uint32_t refs; /* under reg_lock */
    uint64_t max_body;
    char **redact;
    uint32_t nredact;
    struct fy_capture *next; /* in file->handles */
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cfile *live;    /* files with references */
static struct cfile *stopped; /* files whose last reference is gone, writer not joined yet */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- writer thread ---- */

static bool write_all(int fd, const char *p, size_t len, size_t *done, int *err)
{
    *done = 0;
    while (*done < len) {
        ssize_t n = write(fd, p + *done, len - *done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *err = n < 0 ? errno : ENOSPC;
            return false;
        }
        *done += (size_t)n;
    }
    return true;
}

/* Writes the batch. A failure (a full disk) must not stop the writer: its records are lost,
 * said once a second, and a record cut half-way is taken back (the file is cut to where the
 * batch began), or, where that cannot be done (a pipe), ended with a newline before the next
 * write, so every line of the file stays one record or a clearly broken one. */
static void flush_out(struct cfile *f)
{
    size_t done = 0;
    int err = 0;
    if (f->owe_newline) {
        if (!write_all(f->fd, "\n", 1, &done, &err))
            goto failed;
        f->owe_newline = false;
    }
    off_t start = lseek(f->fd, 0, SEEK_END); /* O_APPEND: where this batch's bytes begin */
    if (write_all(f->fd, f->out.p, f->out.len, &done, &err))
        goto out;
    if (done > 0 && (start < 0 || ftruncate(f->fd, start) < 0))
        f->owe_newline = true;
failed:;
    uint64_t now = now_ms();
    if (now - f->last_error_log_ms >= LOG_EVERY_MS || !f->last_error_log_ms) {
        fy_error("capture %s: cannot write: %s (exchanges are lost)", f->path, strerror(err));
        f->last_error_log_ms = now;
    }
    f->lost += f->batch_flows;
out:
    f->batch_flows = 0;
    fy_json_writer_reset(&f->out);
}

static void write_flow(struct cfile *f, struct fy_flow *fl, const struct fy_capture *c)
{
    size_t mark = f->out.len;
    if (fy_flow_to_json(fl, (const char *const *)c->redact, c->nredact, &f->out) < 0) {
        fy_json_writer_truncate(&f->out, mark);
        atomic_fetch_add_explicit(&f->dropped, 1, memory_order_relaxed);
    } else {
        f->batch_flows++;
    }
    fy_flow_free(fl);
    if (f->out.len >= BATCH_BYTES)
        flush_out(f);
}

/* Takes everything queued in every ring; returns how many flows that was. */
static size_t drain(struct cfile *f)
{
    size_t taken = 0;
    uint32_t nq = atomic_load(&f->nqueues);
    for (uint32_t q = 0; q < nq; q++) {
        struct ring *r = atomic_load_explicit(&f->rings[q], memory_order_acquire);
        if (!r)
            continue;
        uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
        uint64_t t = atomic_load(&r->tail);
        while (h != t) {
            struct slot s = r->slots[h & r->mask];
            atomic_store(&r->head, ++h); /* the slot is the producer's again */
            write_flow(f, s.flow, s.cap);
            taken++;
            if (h == t)
                t = atomic_load(&r->tail);
        }
    }
    return taken;
}

/* Logs drops at most once a second; returns the poll timeout until the next log is due (-1:
 * none pending). `final` logs whatever is left. */
static int log_drops(struct cfile *f, bool final)
{
    uint64_t d = atomic_load_explicit(&f->dropped, memory_order_relaxed);
    if (d == f->logged_drops)
        return -1;
    uint64_t now = now_ms();
    uint64_t since = now - f->last_drop_log_ms;
    if (!final && f->last_drop_log_ms && since < LOG_EVERY_MS)
        return (int)(LOG_EVERY_MS - since);
    fy_warn("capture %s: dropped %llu exchange%s (the writer could not keep up)", f->path,
            (unsigned long long)(d - f->logged_drops), d - f->logged_drops == 1 ? "" : "s");
    f->logged_drops = d;
    f->last_drop_log_ms = now;
    return -1;
}

static void *writer_main(void *arg)
{
    struct cfile *f = arg;
    for (;;) {
        bool closing = atomic_load_explicit(&f->closing, memory_order_acquire);
        size_t n = drain(f);
        if (f->out.len)
            flush_out(f);
        int timeout = log_drops(f, false);
        if (n)
            continue; /* more may have come while writing */
        if (closing)
            break; /* closing was seen before a drain that found nothing: nothing is left */
        struct pollfd p = {.fd = f->efd, .events = POLLIN};
        if (poll(&p, 1, timeout) > 0) {
            uint64_t v;
            ssize_t r = read(f->efd, &v, sizeof(v));
            (void)r;
        }
    }
    log_drops(f, true);
    return NULL;
}

static void wake(struct cfile *f)
{
    uint64_t one = 1;
    ssize_t r = write(f->efd, &one, sizeof(one));
    (void)r; /* the counter can only overflow after 2^64 wakes */
}

/* ---- files and handles ---- */

static void file_free(struct cfile *f)
{
    for (uint32_t q = 0; q < FY_CAPTURE_MAX_QUEUES; q++)
        free(atomic_load(&f->rings[q]));
    struct fy_capture *c = f->handles;
    while (c) {
        struct fy_capture *next = c->next;
        for (uint32_t i = 0; i < c->nredact; i++)
            free(c->redact[i]);
        free(c->redact);
        free(c);
        c = next;
    }
    fy_json_writer_free(&f->out);
    if (f->fd >= 0)
        close(f->fd);
    if (f->efd >= 0)
        close(f->efd);
    free(f->path);
    free(f);
}

static void file_join(struct cfile *f)
{
    pthread_join(f->thread, NULL);
    file_free(f);
}

static void unlink_from(struct cfile **list, struct cfile *f)
{
    for (struct cfile **p = list; *p; p = &(*p)->next)
        if (*p == f) {
            *p = f->next;
            return;
        }
}

/* Under reg_lock: the file lost its last reference. */
static void file_stop_locked(struct cfile *f)
{
    unlink_from(&live, f);
    f->next = stopped;
    stopped = f;
    atomic_store_explicit(&f->closing, true, memory_order_release);
    wake(f);
}

static const char *dir_of(const char *path, char *buf, size_t size)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return ".";
    if (slash == path)
        return "/";
    snprintf(buf, size, "%.*s", (int)(slash - path), path);
    return buf;
}

static struct cfile *file_new(const char *path, int fd, const struct stat *st, uint32_t ring,
                              char *err, size_t errlen)
{
    struct cfile *f = calloc(1, sizeof(*f));
    if (!f) {
        close(fd);
        fy_errf(err, errlen, "capture file %s: out of memory", path);
        return NULL;
    }
    f->fd = fd;
    f->efd = eventfd(0, EFD_CLOEXEC);
    f->path = strdup(path);
    f->dev = st->st_dev;
    f->ino = st->st_ino;
    uint32_t size = 1;
    while (size < (ring ? ring : FY_CAPTURE_RING) && size < (1u << 24))
        size <<= 1;
    f->ring_size = size;
    fy_json_writer_init(&f->out, LINE_MAX_BYTES);
    if (f->efd < 0 || !f->path) {
        fy_errf(err, errlen, "capture file %s: cannot create the writer: %s", path,
                f->efd < 0 ? strerror(errno) : "out of memory");
        file_free(f);
        return NULL;
    }
    /* The writer must not take the signals main() reads from its signalfd. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&f->thread, NULL, writer_main, f);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        fy_errf(err, errlen, "capture file %s: cannot start the writer thread: %s", path,
                strerror(rc));
        file_free(f);
        return NULL;
    }
    pthread_setname_np(f->thread, "ferry-capture");
    return f;
}

static bool same_opts(const struct fy_capture *c, const struct fy_capture_opts *o)
{
    if (c->max_body != o->max_body || c->nredact != o->nredact)
        return false;
    for (uint32_t i = 0; i < o->nredact; i++)
        if (strcasecmp(c->redact[i], o->redact[i]))
            return false;
    return true;
}

static struct fy_capture *handle_new(struct cfile *f, const struct fy_capture_opts *o)
{
    struct fy_capture *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->file = f;
    c->max_body = o->max_body;
    if (o->nredact) {
        c->redact = calloc(o->nredact, sizeof(*c->redact));
        if (!c->redact) {
            free(c);
            return NULL;
        }
        for (uint32_t i = 0; i < o->nredact; i++) {
            if (!(c->redact[i] = strdup(o->redact[i]))) {
                for (uint32_t k = 0; k < i; k++)
                    free(c->redact[k]);
                free(c->redact);
                free(c);
                return NULL;
            }
        }
        c->nredact = o->nredact;
    }
    return c;
}

struct fy_capture *fy_capture_open(const char *path, const struct fy_capture_opts *o, char *err,
                                   size_t errlen)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0600);
    if (fd < 0) {
        char dbuf[4096];
        const char *dir = dir_of(path, dbuf, sizeof(dbuf));
        struct stat ds;
        if (errno == ENOENT && stat(dir, &ds) < 0)
            fy_errf(err, errlen, "cannot open capture file %s: the directory %s does not exist",
                    path, dir);
        else if (errno == ENXIO)
            fy_errf(err, errlen, "cannot open capture file %s: it is a FIFO nobody reads", path);
        else
            fy_errf(err, errlen, "cannot open capture file %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 ||
        !(S_ISREG(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode))) {
        close(fd);
        fy_errf(err, errlen,
                "cannot open capture file %s: it is not a regular file, FIFO or device", path);
        return NULL;
    }
    /* O_NONBLOCK only kept open() from waiting on a FIFO; the writer's own thread may block. */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);

    pthread_mutex_lock(&reg_lock);
    struct cfile *f = live;
    while (f && !(f->dev == st.st_dev && f->ino == st.st_ino))
        f = f->next;
    bool fresh = !f;
    if (f)
        close(fd); /* the writer already has the file open */
    else if (!(f = file_new(path, fd, &st, o->ring_size, err, errlen))) {
        pthread_mutex_unlock(&reg_lock);
        return NULL;
    }
    struct fy_capture *c = f->handles;
    while (c && !same_opts(c, o))
        c = c->next;
    if (!c && (c = handle_new(f, o))) {
        c->next = f->handles;
        f->handles = c;
    }
    if (!c) {
        fy_errf(err, errlen, "capture file %s: out of memory", path);
        if (fresh) {
            atomic_store(&f->closing, true);
            wake(f);
            pthread_mutex_unlock(&reg_lock);
            file_join(f);
            return NULL;
        }
        pthread_mutex_unlock(&reg_lock);
        return NULL;
    }
    c->refs++;
    f->users++;
    if (fresh) {
        f->next = live;
        live = f;
    }
    pthread_mutex_unlock(&reg_lock);
    return c;
}

struct fy_capture *fy_capture_ref(struct fy_capture *c)
{
    pthread_mutex_lock(&reg_lock);
    c->refs++;
    c->file->users++;
    pthread_mutex_unlock(&reg_lock);
    return c;
}

/* Drops one reference; returns the file when that was its last one (it is now stopping). */
static struct cfile *release(struct fy_capture *c)
{
    struct cfile *f = c->file, *gone = NULL;
    pthread_mutex_lock(&reg_lock);
    FY_ASSERT(c->refs > 0);
    c->refs--;
    if (--f->users == 0) {
        file_stop_locked(f);
        gone = f;
    }
    pthread_mutex_unlock(&reg_lock);
    return gone;
}

void fy_capture_unref(struct fy_capture *c)
{
    if (c)
        release(c);
}

void fy_capture_close(struct fy_capture *c)
{
    if (!c)
        return;
    struct cfile *f = release(c);
    if (!f)
        return;
    pthread_mutex_lock(&reg_lock);
    unlink_from(&stopped, f);
    pthread_mutex_unlock(&reg_lock);
    file_join(f);
}

void fy_capture_shutdown(void)
{
    pthread_mutex_lock(&reg_lock);
    while (live) {
        fy_error("capture %s: still referenced at exit (a leak); closing it", live->path);
        file_stop_locked(live);
    }
    struct cfile *f = stopped;
    stopped = NULL;
    pthread_mutex_unlock(&reg_lock);
    while (f) {
        struct cfile *next = f->next;
        file_join(f);
        f = next;
    }
}

/* ---- producers ---- */

static struct ring *ring_for(struct cfile *f, unsigned q)
{
    struct ring *r = atomic_load_explicit(&f->rings[q], memory_order_acquire);
    if (r)
        return r;
    /* Only this queue's producer ever stores into rings[q], so registering needs no lock; the
     * release store publishes the zeroed ring to the writer. */
    r = calloc(1, sizeof(*r) + f->ring_size * sizeof(struct slot));
    if (!r)
        return NULL;
    r->mask = f->ring_size - 1;
    atomic_store_explicit(&f->rings[q], r, memory_order_release);
    uint32_t n = atomic_load(&f->nqueues);
    while (n < q + 1 && !atomic_compare_exchange_weak(&f->nqueues, &n, q + 1))
        ;
    return r;
}

bool fy_capture_submit(struct fy_capture *c, unsigned queue, struct fy_flow *fl)
{
    struct cfile *f = c->file;
    struct ring *r = queue < FY_CAPTURE_MAX_QUEUES ? ring_for(f, queue) : NULL;
    if (!r)
        goto drop;
    uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    if (t - h > r->mask)
        goto drop;
    r->slots[t & r->mask] = (struct slot){fl, c};
    atomic_store(&r->tail, t + 1);
    if (atomic_load(&r->head) == t)
        wake(f); /* the writer had caught up: it may be asleep */
    return true;

drop:
    fy_flow_free(fl);
    atomic_fetch_add_explicit(&f->dropped, 1, memory_order_relaxed);
    {
        /* The writer counts the drops when it can (it may be stuck on a full pipe or disk for
         * a long time): the worker says at once that they happen, every 10 s at most. */
        static __thread uint64_t warned_ms;
        uint64_t now = now_ms();
        if (!warned_ms || now - warned_ms >= 10 * LOG_EVERY_MS) {
            warned_ms = now;
            fy_warn("capture %s: its queue is full (the writer is behind or blocked); dropping "
                    "exchanges",
                    f->path);
        }
    }
    return false;
}

uint64_t fy_capture_max_body(const struct fy_capture *c)
{
    return c->max_body;
}

uint64_t fy_capture_dropped(const struct fy_capture *c)
{
    return atomic_load_explicit(&c->file->dropped, memory_order_relaxed);
}

const char *fy_capture_path(const struct fy_capture *c)
{
    return c->file->path;
}
