/*
 * The capture writer: one thread per capture file turns the flows (proxy/flow.h) that workers
 * hand it into JSON lines (docs/capture.md) and appends them to the file. A worker never waits
 * for it and never takes a lock to hand over a flow: each worker has its own bounded
 * single-producer/single-consumer ring to each file, created on its first submit; a flow that
 * finds its ring full is dropped and counted, and the writer logs the count at most once a
 * second. Serialising happens in the writer thread.
 *
 * A handle (struct fy_capture) is one configured use of a file: the file plus the options that
 * apply to the flows submitted through it (max-body, redacted fields). Handles are
 * reference-counted and found by file: opening a file that is already open (the same inode)
 * shares its writer, so a reload that keeps the file keeps the writer, its rings and its order;
 * opening it again with the same options even returns the same handle. A file's writer stops
 * when the last handle on it is released.
 */
#ifndef FY_CAPTURE_H
#define FY_CAPTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/flow.h"

#define FY_CAPTURE_MAX_QUEUES 256 /* producers per file: one per worker (workers <= 256) */
#define FY_CAPTURE_RING 1024      /* flows in flight per producer, by default */

struct fy_capture_opts {
    uint64_t max_body;         /* bytes kept of each body (fy_capture_max_body) */
    const char *const *redact; /* field names whose values are written "[redacted]"; copied */
    uint32_t nredact;
    uint32_t ring_size; /* per producer, 0 = FY_CAPTURE_RING; rounded up to a power of
                           two; only the open that starts the file's writer sets it */
};

struct fy_capture;

/* Opens `path` for appending (O_APPEND|O_CREAT, mode 0600; it must be a regular file, a FIFO or
 * a character device, and its directory must exist) and starts its writer thread, or shares
 * the writer of the same file opened before. Returns a handle with one reference, or NULL with
 * one sentence in err that names the file ("cannot open capture file /x/f.jsonl: the directory
 * /x does not exist"). Main thread (configuration load). */
struct fy_capture *fy_capture_open(const char *path, const struct fy_capture_opts *o, char *err,
                                   size_t errlen);

/* A new reference to c (for another generation that keeps it). Any thread. */
struct fy_capture *fy_capture_ref(struct fy_capture *c);

/* Drops a reference. When it was the last one on its file, the writer finishes what is queued
 * and stops on its own; fy_capture_shutdown() joins it. Any thread (a configuration generation
 * may be freed on a worker); takes a short internal lock, never waits. NULL is fine. */
void fy_capture_unref(struct fy_capture *c);

/* Drops a reference like fy_capture_unref(), and when it was the last one on its file, waits
 * until every flow submitted to the file is written and its thread has ended. Main thread. */
void fy_capture_close(struct fy_capture *c);

/* At exit, after every producer has stopped submitting: drains and joins every writer whose
 * last reference is gone, and stops any still referenced (a leak, logged), so everything
 * submitted is in its file when it returns. Main thread. */
void fy_capture_shutdown(void);

/* Hands flow f (ownership moves, always) to the writer through producer queue `queue` (the
 * worker's index, < FY_CAPTURE_MAX_QUEUES; one thread per index at a time). Never blocks and
 * takes no lock; the first submit of a queue allocates its ring. Returns true when queued,
 * false when dropped (ring full, out of memory, bad queue): f was freed and counted. The
 * caller holds a reference to c. */
bool fy_capture_submit(struct fy_capture *c, unsigned queue, struct fy_flow *f);

/* The max-body of c's options: what the session passes to fy_flow_new(). */
uint64_t fy_capture_max_body(const struct fy_capture *c);

/* Flows dropped so far on c's file (all handles). Any thread; a snapshot. */
uint64_t fy_capture_dropped(const struct fy_capture *c);

/* The path as it was opened (for messages); valid while c is referenced. */
const char *fy_capture_path(const struct fy_capture *c);

#endif
