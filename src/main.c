/*
 * ferry's entry point: parse the command line, bind one SO_REUSEPORT listener per worker, start
 * the workers, and turn SIGTERM/SIGINT into a graceful drain. The main thread only waits for
 * signals; all traffic is handled by the workers.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "conf/config.h"
#include "core/buf.h"
#include "core/log.h"
#include "net/listener.h"
#include "proxy/worker.h"

int fy_accesslog_fd = -1;
void fy_client_io_freelist_release(void);

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    struct fy_config cfg;
    fy_config_defaults(&cfg);
    char err[512];
    switch (fy_args_parse(&cfg, argc, argv, err, sizeof(err), stdout)) {
    case FY_ARGS_EXIT_OK:
        fy_config_free(&cfg);
        return 0;
    case FY_ARGS_ERROR:
        fprintf(stderr, "ferry: %s\n", err);
        fy_config_free(&cfg);
        return 2;
    case FY_ARGS_OK:
        break;
    }
    fy_log_min_level = cfg.log_level;
    /* Block the stop signals before anything listens: a SIGTERM that arrives while ferry starts
     * waits for sigwait below and drains cleanly instead of killing the process. Workers inherit
     * this mask, so only the main thread ever takes these signals. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    if (cfg.access_log == FY_ALOG_STDOUT) {
        fy_accesslog_fd = STDOUT_FILENO;
    } else if (cfg.access_log == FY_ALOG_FILE) {
        fy_accesslog_fd =
            open(cfg.access_log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fy_accesslog_fd < 0) {
            fprintf(stderr, "ferry: cannot open access log %s: %s\n", cfg.access_log_path,
                    strerror(errno));
            fy_config_free(&cfg);
            return 1;
        }
    }

    int rc = fy_listener_check_free(&cfg.listen);
    if (rc < 0) {
        fprintf(stderr, "ferry: cannot listen on %s: %s%s\n", cfg.listen_text, strerror(-rc),
                rc == -EADDRINUSE ? " (another program is using it; stop it or pick another "
                                    "port with --listen)"
                                  : "");
        fy_config_free(&cfg);
        return 1;
    }
    struct fy_worker *workers = calloc((size_t)cfg.workers, sizeof(*workers));
    if (!workers) {
        fprintf(stderr, "ferry: out of memory\n");
        return 1;
    }
    for (int i = 0; i < cfg.workers; i++) {
        int fd = fy_listener_open(&cfg.listen);
        if (fd < 0) {
            fprintf(stderr, "ferry: cannot listen on %s: %s\n", cfg.listen_text, strerror(-fd));
            return 1;
        }
        rc = fy_worker_init(&workers[i], &cfg, i, fd);
        if (rc < 0) {
            fprintf(stderr, "ferry: cannot start worker %d: %s\n", i, strerror(-rc));
            return 1;
        }
    }

    for (int i = 0; i < cfg.workers; i++) {
        rc = pthread_create(&workers[i].thread, NULL, fy_worker_main, &workers[i]);
        if (rc != 0) {
            fprintf(stderr, "ferry: cannot start worker thread: %s\n", strerror(rc));
            return 1;
        }
    }
    char addr[80];
    fy_addr_format((struct sockaddr *)&cfg.listen.ss, addr, sizeof(addr));
    fy_info("listening on %s, forwarding to %s (%d worker%s)", addr, cfg.upstream_text, cfg.workers,
            cfg.workers == 1 ? "" : "s");

    int sig = 0;
    sigwait(&set, &sig);
    fy_info("received %s: draining (up to %llu ms)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
            (unsigned long long)cfg.drain_timeout);
    for (int i = 0; i < cfg.workers; i++)
        fy_loop_request_stop(&workers[i].loop);
    for (int i = 0; i < cfg.workers; i++)
        pthread_join(workers[i].thread, NULL);
    for (int i = 0; i < cfg.workers; i++)
        fy_worker_destroy(&workers[i]);
    free(workers);
    fy_buf_freelist_release();
    fy_client_io_freelist_release();
    fy_info("stopped");
    fy_config_free(&cfg);
    return 0;
}
