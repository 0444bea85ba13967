/* Unit tests for src/proxy/worker.c: fy_worker_init unwinds everything it set up when a step
 * fails (defect 8), and a worker thread stops at once on request. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conf/conf.h"
#include "conf/config.h"
#include "net/listener.h"
#include "proxy/worker.h"
#include "fail_alloc.h"

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static struct fy_config cfg;
static struct fy_conf *conf;
static struct fy_addr *laddr;

static void setup(void)
{
    fy_config_defaults(&cfg);
    char why[200];
    cr_assert_eq(fy_addr_parse("127.0.0.1:0", &cfg.listen, why, sizeof(why)), 0);
    cr_assert_eq(fy_addr_parse("127.0.0.1:9", &cfg.upstream, why, sizeof(why)), 0);
    cfg.listen_text = strdup("127.0.0.1:0");
    cfg.upstream_text = strdup("http://127.0.0.1:9");
    cfg.upstream_authority = strdup("127.0.0.1:9");
    char berr[600];
    conf = fy_conf_build(&cfg, NULL, berr, sizeof(berr));
    cr_assert_not_null(conf);
    laddr = &conf->listeners[0].addrs[0];
}

static void teardown(void)
{
    fy_conf_unref(conf);
    fy_config_free(&cfg);
}

TestSuite(worker, .init = setup, .fini = teardown);

Test(worker, init_and_destroy_release_every_fd)
{
    int before = count_fds();
    int lfd = fy_listener_open(laddr);
    cr_assert_geq(lfd, 0);
    int alog = open("/dev/null", O_WRONLY | O_CLOEXEC);
    struct fy_worker w;
    cr_assert_eq(fy_worker_init(&w, conf, 0, &lfd, 1, alog), 0);
    fy_worker_destroy(&w);
    close(alog);
    cr_assert_eq(count_fds(), before);
}

#ifndef FY_NO_ALLOC_INJECTION
/* Regression: a failure of the access-log buffer left the loop (epoll fd, eventfd) and the
 * listening socket open. */
Test(worker, init_failure_unwinds)
{
    int before = count_fds();
    int lfd = fy_listener_open(laddr);
    cr_assert_geq(lfd, 0);
    int alog = open("/dev/null", O_WRONLY | O_CLOEXEC);
    struct fy_worker w;
    fail_allocs = 1;
    int rc = fy_worker_init(&w, conf, 0, &lfd, 1, alog);
    fail_allocs = 0;
    cr_assert_lt(rc, 0);
    close(alog);
    cr_assert_eq(count_fds(), before, "fy_worker_init left descriptors open after failing");
}
#endif

/* A bad listening fd: fy_worker_init owns it and must not leave the loop behind either. */
Test(worker, init_failure_on_bad_listener_unwinds)
{
    int before = count_fds();
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* epoll refuses a regular file */
    struct fy_worker w;
    cr_assert_lt(fy_worker_init(&w, conf, 0, &fd, 1, -1), 0);
    cr_assert_eq(count_fds(), before);
}

Test(worker, quit_request_ends_the_thread)
{
    int lfd = fy_listener_open(laddr);
    cr_assert_geq(lfd, 0);
    struct fy_worker w;
    cr_assert_eq(fy_worker_init(&w, conf, 0, &lfd, 1, -1), 0);
    cr_assert_eq(pthread_create(&w.thread, NULL, fy_worker_main, &w), 0);
    fy_worker_request_flush(&w, 7);
    fy_worker_request_quit(&w);
    cr_assert_eq(pthread_join(w.thread, NULL), 0);
    cr_assert(fy_worker_exited(&w));
    cr_assert(fy_worker_flushed(&w, 7));
    cr_assert_eq(w.nclients, 0);
    cr_assert_eq(w.nsessions, 0);
    fy_worker_destroy(&w);
}
