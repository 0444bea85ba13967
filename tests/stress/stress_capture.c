/*
 * Threaded stress test of the capture writer (src/proxy/capture.c), for the builds Criterion
 * cannot run in (TSan) as well as the others: four producers submit to small rings while a
 * "main thread" keeps reopening the file with changing options and dropping the old handles on
 * producer threads, as reloads do. Checks: written + dropped == submitted, every producer's
 * flows appear in its order, and every line is valid JSON. Bounded: a fixed number of flows.
 * Exit status 0 on success; prints what failed otherwise.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/json.h"
#include "proxy/capture.h"

#define PRODUCERS 4
#define FLOWS 20000
#define RELOADS 50

static struct fy_capture *_Atomic current;
static pthread_mutex_t cur_lock = PTHREAD_MUTEX_INITIALIZER; /* the test's own "generation" */
static char path[128];
static atomic_int accepted, dropped;

static struct fy_capture *take_current(void)
{
    pthread_mutex_lock(&cur_lock);
    struct fy_capture *c = fy_capture_ref(atomic_load(&current));
    pthread_mutex_unlock(&cur_lock);
    return c;
}

static void *producer(void *arg)
{
    unsigned q = (unsigned)(uintptr_t)arg;
    for (int i = 0; i < FLOWS; i++) {
        struct fy_capture *c = take_current();
        struct fy_flow *f = fy_flow_new(fy_capture_max_body(c));
        char id[32];
        int n = snprintf(id, sizeof(id), "%u-%d", q, i);
        fy_flow_set_id(f, id, (size_t)n);
        struct iovec iov = {id, (size_t)n};
        fy_flow_req_body(f, &iov, 1);
        if (fy_capture_submit(c, q, f))
            atomic_fetch_add(&accepted, 1);
        else {
            atomic_fetch_add(&dropped, 1);
            sched_yield(); /* let the writer catch up, so both paths run */
        }
        fy_capture_unref(c); /* a producer may drop the last reference of an old "generation" */
    }
    return NULL;
}

int main(void)
{
    snprintf(path, sizeof(path), "/tmp/ferry-stress-capture-%d.jsonl", (int)getpid());
    unlink(path);
    char err[256];
    struct fy_capture_opts o = {.max_body = 64, .ring_size = 64};
    struct fy_capture *first = fy_capture_open(path, &o, err, sizeof(err));
    if (!first) {
        fprintf(stderr, "stress_capture: %s\n", err);
        return 1;
    }
    atomic_store(&current, first);
    pthread_t t[PRODUCERS];
    for (uintptr_t i = 0; i < PRODUCERS; i++)
        pthread_create(&t[i], NULL, producer, (void *)i);
    for (int r = 0; r < RELOADS; r++) {
        const char *names[] = {"Cookie"};
        struct fy_capture_opts ro = {
            .max_body = (uint64_t)(r % 3) * 8, .redact = names, .nredact = (uint32_t)(r & 1)};
        struct fy_capture *n = fy_capture_open(path, &ro, err, sizeof(err));
        if (!n) {
            fprintf(stderr, "stress_capture: reload: %s\n", err);
            return 1;
        }
        pthread_mutex_lock(&cur_lock);
        struct fy_capture *old = atomic_exchange(&current, n);
        pthread_mutex_unlock(&cur_lock);
        fy_capture_unref(old);
        sched_yield();
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(t[i], NULL);
    uint64_t counted = fy_capture_dropped(atomic_load(&current));
    fy_capture_close(atomic_load(&current));
    fy_capture_shutdown();

    FILE *fp = fopen(path, "r");
    int next[PRODUCERS] = {0};
    int lines = 0, bad = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, fp)) > 0) {
        struct fy_json_error e;
        struct fy_json_doc *d = fy_json_parse(line, (size_t)len, NULL, &e);
        const struct fy_json *id =
            d ? fy_json_get_type(fy_json_root(d), "id", FY_JSON_STRING) : NULL;
        unsigned q;
        int k;
        if (!id || sscanf(id->str, "%u-%d", &q, &k) != 2 || q >= PRODUCERS || k < next[q]) {
            if (bad++ < 5)
                fprintf(stderr, "stress_capture: line %d out of order or invalid: %s", lines + 1,
                        line);
        } else {
            next[q] = k + 1;
        }
        fy_json_doc_free(d);
        lines++;
    }
    free(line);
    fclose(fp);
    unlink(path);
    int acc = atomic_load(&accepted), drp = atomic_load(&dropped);
    printf("stress_capture: %d submitted, %d written, %d dropped (%llu counted by the file)\n",
           PRODUCERS * FLOWS, lines, drp, (unsigned long long)counted);
    if (bad || lines != acc || acc + drp != PRODUCERS * FLOWS || (uint64_t)drp != counted) {
        fprintf(stderr, "stress_capture: FAILED\n");
        return 1;
    }
    return 0;
}
