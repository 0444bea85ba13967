/* Unit tests for src/proxy/capture.c with real writer threads: every flow of two producers
 * written in each producer's order, close drains, a full ring drops and logs, files shared by
 * path, lazy queue registration, open errors. The .c is included to look at its files. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proxy/capture.c"

static char DIR_[64];

static void setup(void)
{
    snprintf(DIR_, sizeof(DIR_), "/tmp/ferry-capture-XXXXXX");
    cr_assert_not_null(mkdtemp(DIR_));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", DIR_);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(capture, .init = setup, .fini = teardown);

static char *path_in(const char *name)
{
    static char p[128];
    snprintf(p, sizeof(p), "%s/%s", DIR_, name);
    return p;
}

static struct fy_flow *flow_named(const char *id, size_t body)
{
    struct fy_flow *f = fy_flow_new(body);
    cr_assert_not_null(f);
    fy_flow_set_id(f, id, strlen(id));
    if (body) {
        char *b = malloc(body);
        memset(b, 'x', body);
        struct iovec iov = {b, body};
        fy_flow_resp_body(f, &iov, 1);
        free(b);
    }
    return f;
}

/* Reads the file and returns its lines' ids in order (the caller frees). */
static char **read_ids(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "r");
    cr_assert_not_null(fp);
    size_t cap = 1024;
    char **ids = malloc(cap * sizeof(*ids));
    *n = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, fp)) > 0) {
        struct fy_json_error e;
        struct fy_json_doc *d = fy_json_parse(line, (size_t)len, NULL, &e);
        cr_assert_not_null(d, "line %zu: %u:%u %s", *n + 1, e.line, e.col, e.msg);
        const struct fy_json *id = fy_json_get_type(fy_json_root(d), "id", FY_JSON_STRING);
        cr_assert_not_null(id);
        if (*n == cap)
            ids = realloc(ids, (cap *= 2) * sizeof(*ids));
        ids[(*n)++] = strdup(id->str);
        fy_json_doc_free(d);
    }
    free(line);
    fclose(fp);
    return ids;
}

static void free_ids(char **ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
}

struct producer {
    struct fy_capture *cap;
    unsigned queue;
    int count;
    int accepted;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (int i = 0; i < p->count; i++) {
        char id[32];
        snprintf(id, sizeof(id), "q%u-%06d", p->queue, i);
        p->accepted += fy_capture_submit(p->cap, p->queue, flow_named(id, 0));
    }
    return NULL;
}

Test(capture, two_producers_every_flow_written_in_each_producers_order)
{
    enum { N = 5000 };
    char err[256];
    struct fy_capture_opts o = {.max_body = 0, .ring_size = 8192};
    struct fy_capture *c = fy_capture_open(path_in("flows.jsonl"), &o, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    struct producer p[2] = {{c, 0, N, 0}, {c, 1, N, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, produce, &p[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(p[0].accepted, N, "a ring of 8192 never fills with 5000 flows");
    cr_assert_eq(p[1].accepted, N);
    cr_assert_eq(fy_capture_dropped(c), 0);
    fy_capture_close(c);

    size_t n;
    char **ids = read_ids(path_in("flows.jsonl"), &n);
    cr_assert_eq(n, 2 * N);
    int next[2] = {0, 0};
    for (size_t i = 0; i < n; i++) {
        unsigned q;
        int k;
        cr_assert_eq(sscanf(ids[i], "q%u-%d", &q, &k), 2);
        cr_assert_lt(q, 2);
        cr_assert_eq(k, next[q], "producer %u: flow %d came where %d was due", q, k, next[q]);
        next[q]++;
    }
    free_ids(ids, n);
    struct stat st;
    cr_assert_eq(stat(path_in("flows.jsonl"), &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
}

Test(capture, close_drains_what_is_queued)
{
    char err[256];
    struct fy_capture_opts o = {.ring_size = 4096};
    struct fy_capture *c = fy_capture_open(path_in("a.jsonl"), &o, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    for (int i = 0; i < 3000; i++) {
        char id[16];
        snprintf(id, sizeof(id), "%d", i);
        cr_assert(fy_capture_submit(c, 7, flow_named(id, 100)), "lazy registration of queue 7");
    }
    fy_capture_close(c);
    size_t n;
    char **ids = read_ids(path_in("a.jsonl"), &n);
    cr_assert_eq(n, 3000);
    cr_assert_str_eq(ids[2999], "2999");
    free_ids(ids, n);
}

struct fifo_reader {
    int fd;
    size_t lines;
};

static void *read_fifo(void *arg)
{
    struct fifo_reader *r = arg;
    fcntl(r->fd, F_SETFL, fcntl(r->fd, F_GETFL) & ~O_NONBLOCK);
    char buf[65536];
    ssize_t n;
    while ((n = read(r->fd, buf, sizeof(buf))) > 0)
        for (ssize_t i = 0; i < n; i++)
            r->lines += buf[i] == '\n';
    return NULL;
}

Test(capture, full_ring_drops_counts_and_logs)
{
    /* The writer blocks on a FIFO nobody reads yet, so the producer's ring of 4 fills up. */
    char *fifo = path_in("pipe");
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    struct fifo_reader rd = {.fd = open(fifo, O_RDONLY | O_NONBLOCK)};
    cr_assert_geq(rd.fd, 0);
    char logpath[128];
    snprintf(logpath, sizeof(logpath), "%s/stderr", DIR_);
    int logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int saved = dup(2);
    dup2(logfd, 2);

    char err[256];
    struct fy_capture_opts o = {.max_body = 16384, .ring_size = 4};
    struct fy_capture *c = fy_capture_open(fifo, &o, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    int accepted = 0, dropped = 0;
    for (int i = 0; i < 100000 && dropped < 10; i++) {
        if (fy_capture_submit(c, 0, flow_named("big", 16384)))
            accepted++;
        else
            dropped++;
    }
    cr_assert_eq(dropped, 10, "the ring filled while the writer was blocked");
    cr_assert_eq(fy_capture_dropped(c), 10);

    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, read_fifo, &rd), 0);
    fy_capture_close(c); /* drains into the FIFO, closes it: the reader sees EOF */
    pthread_join(t, NULL);
    close(rd.fd);
    dup2(saved, 2);
    close(saved);
    close(logfd);
    cr_assert_eq(rd.lines, (size_t)accepted);

    FILE *fp = fopen(logpath, "r");
    char text[4096] = "";
    size_t n = fread(text, 1, sizeof(text) - 1, fp);
    text[n] = '\0';
    fclose(fp);
    /* one line or a few (at most one a second), adding up to 10 */
    unsigned total = 0;
    for (char *p = text; (p = strstr(p, "dropped ")); p++) {
        unsigned k;
        char tail[64];
        cr_assert_eq(sscanf(p, "dropped %u exchange%*[s] (the writer could %[^)])", &k, tail), 2,
                     "%s", text);
        cr_assert_str_eq(tail, "not keep up");
        total += k;
    }
    cr_assert_eq(total, 10, "%s", text);
    cr_assert(strstr(text, "warn ferry: capture "), "%s", text);
    cr_assert(strstr(text, "/pipe: dropped"), "%s", text);
}

Test(capture, the_same_file_is_shared_and_the_same_options_share_a_handle)
{
    char err[256];
    const char *r1[] = {"Cookie"};
    const char *r2[] = {"cookie"};
    struct fy_capture_opts o1 = {.max_body = 10, .redact = r1, .nredact = 1};
    struct fy_capture_opts o2 = {.max_body = 10, .redact = r2, .nredact = 1};
    struct fy_capture_opts o3 = {.max_body = 99};
    struct fy_capture *a = fy_capture_open(path_in("s.jsonl"), &o1, err, sizeof(err));
    cr_assert_not_null(a, "%s", err);
    char rel[160];
    snprintf(rel, sizeof(rel), "%s/./s.jsonl", DIR_);
    struct fy_capture *b = fy_capture_open(rel, &o2, err, sizeof(err));
    struct fy_capture *d = fy_capture_open(path_in("s.jsonl"), &o3, err, sizeof(err));
    cr_assert_eq(a, b, "same file and options: one handle");
    cr_assert_neq(a, d);
    cr_assert_eq(a->file, d->file, "same file: one writer");
    cr_assert_eq(a->file->users, 3);
    cr_assert_eq(fy_capture_max_body(d), 99);

    /* a reload: the old generation lets go, the new one keeps the file */
    fy_capture_unref(a);
    fy_capture_unref(b);
    cr_assert(fy_capture_submit(d, 0, flow_named("after", 0)));
    struct fy_capture *e = fy_capture_ref(d);
    fy_capture_unref(d);
    fy_capture_close(e);
    size_t n;
    char **ids = read_ids(path_in("s.jsonl"), &n);
    cr_assert_eq(n, 1);
    free_ids(ids, n);
    cr_assert_null(live);
    cr_assert_null(stopped);
}

Test(capture, unref_on_another_thread_then_shutdown_joins)
{
    char err[256];
    struct fy_capture_opts o = {0};
    struct fy_capture *c = fy_capture_open(path_in("u.jsonl"), &o, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    for (int i = 0; i < 100; i++)
        fy_capture_submit(c, 3, flow_named("u", 0));
    fy_capture_unref(c); /* as a worker freeing the last generation would */
    fy_capture_shutdown();
    size_t n;
    char **ids = read_ids(path_in("u.jsonl"), &n);
    cr_assert_eq(n, 100);
    free_ids(ids, n);
}

Test(capture, submit_to_a_bad_queue_drops)
{
    char err[256];
    struct fy_capture_opts o = {0};
    struct fy_capture *c = fy_capture_open(path_in("q.jsonl"), &o, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    cr_assert(!fy_capture_submit(c, FY_CAPTURE_MAX_QUEUES, flow_named("x", 0)));
    cr_assert_eq(fy_capture_dropped(c), 1);
    int saved = dup(2), null = open("/dev/null", O_WRONLY);
    dup2(null, 2); /* the drop warning */
    fy_capture_close(c);
    dup2(saved, 2);
    close(saved);
    close(null);
}

Test(capture, open_errors_name_the_file)
{
    char err[256], want[256];
    struct fy_capture_opts o = {0};
    cr_assert_null(fy_capture_open(path_in("nodir/f.jsonl"), &o, err, sizeof(err)));
    snprintf(want, sizeof(want),
             "cannot open capture file %s/nodir/f.jsonl: the directory %s/nodir does not exist",
             DIR_, DIR_);
    cr_assert_str_eq(err, want);
    cr_assert_null(fy_capture_open(DIR_, &o, err, sizeof(err)));
    snprintf(want, sizeof(want), "cannot open capture file %s: Is a directory", DIR_);
    cr_assert_str_eq(err, want);
    char *fifo = path_in("nobody");
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    cr_assert_null(fy_capture_open(fifo, &o, err, sizeof(err)));
    cr_assert(strstr(err, "it is a FIFO nobody reads"), "%s", err);
}
