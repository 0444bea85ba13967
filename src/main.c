/*
 * ferry's entry point: parse the command line (and the configuration file it names), bind one
 * SO_REUSEPORT listener per worker, start the workers, and handle signals. The main thread only
 * waits for signals and for the workers to end; all traffic is handled by the workers.
 *
 * Signals (blocked in every thread, read by the main thread from a signalfd):
 *   SIGTERM, SIGINT  graceful drain; a second one during the drain stops at once
 *   SIGUSR1          reopen the access log file (after logrotate moved it)
 *   SIGHUP           reload the configuration (proxy/reload.h)
 * `ferry -s reload|stop|reopen` sends them to the ferry named by the pid file.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "conf/conf.h"
#include "conf/config.h"
#include "core/buf.h"
#include "core/log.h"
#include "filters/builtin.h"
#include "net/pipe.h"
#include "net/listener.h"
#include "net/resolver.h"
#include "net/tls.h"
#include "proxy/reload.h"
#include "proxy/router.h"
#include "proxy/session.h"
#include "proxy/capture.h"
#include "proxy/worker.h"
#include "tools/ca_cmd.h"
#include "tools/tools.h"

/* How long a SIGUSR1 waits for the workers to write out their buffered lines before the file is
 * switched anyway (a worker answers within one loop iteration; this only bounds a stuck one). */
#define REOPEN_FLUSH_WAIT_MS 2000

struct ferry {
    struct fy_config cfg; /* as parsed; moved into conf at startup (then only defaults) */
    struct fy_conf *conf; /* the current generation (one reference) */
    int alog_fd; /* shared by the workers; SIGUSR1 replaces the file behind the same number */
    struct fy_worker *workers;
    int nworkers; /* initialised */
    int nthreads; /* started */
    int sig_fd;   /* signalfd for the signals below */
    int done_fd;  /* eventfd the workers poke after a flush and on exit */
    unsigned flush_gen;
    bool draining;
    int argc;
    char **argv;
    struct fy_reresolver *rr; /* re-resolves the servers' names; NULL: off */
    bool rr_rearmed;          /* watch_names() ran since the last poll */
};

/* One line per listener: where it listens and where it sends requests. */
static void log_listening(const struct fy_conf *c)
{
    for (uint32_t li = 0; li < c->nlisteners; li++) {
        const struct fy_listener_conf *l = &c->listeners[li];
        char addrs[512];
        size_t n = 0;
        addrs[0] = '\0';
        for (uint32_t a = 0; a < l->naddrs && n < sizeof(addrs) - 80; a++) {
            if (a)
                n += (size_t)snprintf(addrs + n, sizeof(addrs) - n, ", ");
            n += fy_addr_format((const struct sockaddr *)&l->addrs[a].ss, addrs + n,
                                sizeof(addrs) - n);
        }
        if (l->tls)
            snprintf(addrs + n, sizeof(addrs) - n, " (TLS: %.300s)", fy_tls_server_names(l->tls));
        if (l->nroutes == 1 && !l->routes[0].has_match && l->routes[0].action == FY_ACT_PROXY &&
            l->routes[0].group->nservers == 1)
            fy_info("listening on %s, forwarding to %s (%d worker%s)", addrs,
                    l->routes[0].group->servers[0].url, c->settings.workers,
                    c->settings.workers == 1 ? "" : "s");
        else
            fy_info("listening on %s: %u route%s (%d worker%s)", addrs, l->nroutes,
                    l->nroutes == 1 ? "" : "s", c->settings.workers,
                    c->settings.workers == 1 ? "" : "s");
    }
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int open_access_log(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

static bool all_exited(const struct ferry *f)
{
    for (int i = 0; i < f->nthreads; i++)
        if (!fy_worker_exited(&f->workers[i]))
            return false;
    return true;
}

static void drain_done_fd(const struct ferry *f)
{
    uint64_t n;
    ssize_t r = read(f->done_fd, &n, sizeof(n));
    (void)r;
}

/* SIGUSR1: the workers write out the lines they buffered (to the old file), then the new file
 * takes the old one's descriptor number with dup3(), so the workers keep writing to the same fd
 * without locks or a handshake. */
static void reopen_access_log(struct ferry *f)
{
    if (f->conf->settings.access_log != FY_ALOG_FILE) {
        fy_info("received SIGUSR1: the access log is not a file, nothing to reopen");
        return;
    }
    f->flush_gen++;
    for (int i = 0; i < f->nthreads; i++)
        fy_worker_request_flush(&f->workers[i], f->flush_gen);
    for (int waited = 0;;) {
        bool flushed = true;
        for (int i = 0; i < f->nthreads; i++)
            flushed = flushed && fy_worker_flushed(&f->workers[i], f->flush_gen);
        if (flushed)
            break;
        if (waited >= REOPEN_FLUSH_WAIT_MS) {
            fy_warn("SIGUSR1: a worker did not write out its access log lines within %d ms; "
                    "reopening anyway (those lines go to the new file)",
                    REOPEN_FLUSH_WAIT_MS);
            break;
        }
        struct pollfd p = {.fd = f->done_fd, .events = POLLIN};
        if (poll(&p, 1, 100) > 0)
            drain_done_fd(f);
        waited += 100; /* coarse: only bounds the wait */
    }
    int fd = open_access_log(f->conf->settings.access_log_path);
    if (fd < 0) {
        fy_warn("SIGUSR1: cannot reopen access log %s: %s (still writing to the old file)",
                f->conf->settings.access_log_path, strerror(errno));
        return;
    }
    if (dup3(fd, f->alog_fd, O_CLOEXEC) < 0)
        fy_warn("SIGUSR1: cannot reopen access log %s: dup3: %s (still writing to the old file)",
                f->conf->settings.access_log_path, strerror(errno));
    else
        fy_info("received SIGUSR1: reopened access log %s", f->conf->settings.access_log_path);
    close(fd);
}

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGTERM:
        return "SIGTERM";
    case SIGINT:
        return "SIGINT";
    case SIGHUP:
        return "SIGHUP";
    case SIGUSR1:
        return "SIGUSR1";
    default:
        return "a signal";
    }
}

/* The names the running generation's servers use, for the re-resolver; a new one when the
 * resolver settings changed. */
static void watch_names(struct ferry *f)
{
    const struct fy_resolver_conf *rc = &f->conf->settings.resolver;
    if (f->rr && rc->interval_ms == 0) {
        fy_reresolver_free(f->rr);
        f->rr = NULL;
    }
    if (rc->interval_ms == 0)
        return;
    if (!f->rr) {
        char err[256];
        f->rr = fy_reresolver_new(rc, err, sizeof(err));
        if (!f->rr) {
            fy_warn("names will not be re-resolved: %s", err);
            return;
        }
    }
    fy_reresolver_clear(f->rr);
    f->rr_rearmed = true;
    for (uint32_t g = 0; g < f->conf->ngroups; g++)
        for (uint32_t i = 0; i < f->conf->groups[g].nservers; i++) {
            const struct fy_server *sv = &f->conf->groups[g].servers[i];
            fy_reresolver_add(f->rr, sv->host, sv->port, sv->addrs, sv->naddrs);
        }
}

static void reload(struct ferry *f, const char *why)
{
    fy_info("%s: reloading the configuration", why);
    /* A copy: the reload frees the old generation and the strings in it. */
    struct fy_resolver_conf old = f->conf->settings.resolver;
    old.servers = old.servers ? strdup(old.servers) : NULL;
    struct fy_reload_ctx r = {.argc = f->argc,
                              .argv = f->argv,
                              .workers = f->workers,
                              .nworkers = f->nthreads,
                              .done_fd = f->done_fd,
                              .conf = f->conf};
    fy_reload_run(&r);
    f->conf = r.conf;
    const struct fy_resolver_conf *now = &f->conf->settings.resolver;
    bool same = old.timeout_ms == now->timeout_ms && old.interval_ms == now->interval_ms &&
                ((!old.servers && !now->servers) ||
                 (old.servers && now->servers && !strcmp(old.servers, now->servers)));
    free(old.servers);
    if (!same && f->rr) {
        fy_reresolver_free(f->rr);
        f->rr = NULL;
    }
    /* Always: after a refused reload the old addresses are watched again, so the change is
     * noticed (and the reload retried) at the next round. */
    watch_names(f);
}

static void on_signal(struct ferry *f, int sig)
{
    switch (sig) {
    case SIGUSR1:
        reopen_access_log(f);
        break;
    case SIGHUP:
        if (f->draining) {
            fy_warn("received SIGHUP while draining: not reloading");
            break;
        }
        reload(f, "received SIGHUP");
        break;
    case SIGTERM:
    case SIGINT:
        if (!f->draining) {
            f->draining = true;
            fy_info("received %s: draining (up to %llu ms; send it again to stop at once)",
                    signal_name(sig), (unsigned long long)f->conf->settings.drain_timeout);
            for (int i = 0; i < f->nthreads; i++)
                fy_loop_request_stop(&f->workers[i].loop);
        } else {
            fy_warn("received %s during the drain: stopping now", signal_name(sig));
            for (int i = 0; i < f->nthreads; i++)
                fy_worker_request_quit(&f->workers[i]);
        }
        break;
    }
}

/* Waits for signals, the re-resolver's rounds and the session ticket key rotation until every
 * worker has ended. */
#define RR_MAX_FDS 16
static void serve(struct ferry *f)
{
    watch_names(f);
    struct pollfd p[2 + RR_MAX_FDS];
    uint64_t rotate_at = fy_conf_now_ms() + FY_TLS_TICKET_ROTATE_S * 1000ull;
    while (!all_exited(f)) {
        p[0] = (struct pollfd){.fd = f->sig_fd, .events = POLLIN};
        p[1] = (struct pollfd){.fd = f->done_fd, .events = POLLIN};
        int timeout = -1, nrr = 0;
        if (f->rr && !f->draining)
            nrr = fy_reresolver_pollfds(f->rr, p + 2, RR_MAX_FDS, &timeout);
        uint64_t now = fy_conf_now_ms();
        if (now >= rotate_at) {
            fy_tls_rotate_ticket_keys();
            rotate_at = now + FY_TLS_TICKET_ROTATE_S * 1000ull;
        }
        if (timeout < 0 || (uint64_t)timeout > rotate_at - now)
            timeout = (int)(rotate_at - now);
        if (poll(p, (nfds_t)(2 + nrr), timeout) < 0) {
            if (errno == EINTR)
                continue;
            fy_error("poll failed: %s", strerror(errno));
            break;
        }
        if (p[1].revents)
            drain_done_fd(f);
        struct fy_reresolver *rr = f->rr;
        if (p[0].revents) {
            struct signalfd_siginfo si;
            if (read(f->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
                on_signal(f, (int)si.ssi_signo);
        }
        /* A reload just now re-armed (or replaced) the re-resolver: these fds are stale. */
        bool fresh = rr == f->rr && !f->rr_rearmed;
        f->rr_rearmed = false;
        if (f->rr && fresh && !f->draining && fy_reresolver_process(f->rr, p + 2, nrr))
            reload(f, "a server name resolves to other addresses");
    }
}

/* Stops the started threads and releases the workers; safe at any point of startup. */
static void stop_workers(struct ferry *f)
{
    for (int i = 0; i < f->nthreads; i++)
        fy_loop_request_stop(&f->workers[i].loop);
    for (int i = 0; i < f->nthreads; i++)
        pthread_join(f->workers[i].thread, NULL);
    for (int i = 0; i < f->nworkers; i++)
        fy_worker_destroy(&f->workers[i]);
    free(f->workers);
    f->workers = NULL;
    f->nworkers = f->nthreads = 0;
}

/* The pid file's process, if it is a running ferry; else 0 with the reason printed. */
static pid_t read_pid_file(const char *path)
{
    FILE *pf = fopen(path, "r");
    if (!pf) {
        fprintf(stderr, "ferry: cannot read the pid file %s: %s (is ferry running?)\n", path,
                strerror(errno));
        return 0;
    }
    long pid = 0;
    int n = fscanf(pf, "%ld", &pid);
    fclose(pf);
    if (n != 1 || pid <= 1) {
        fprintf(stderr, "ferry: the pid file %s holds no process id\n", path);
        return 0;
    }
    char comm_path[64], comm[32] = "";
    snprintf(comm_path, sizeof(comm_path), "/proc/%ld/comm", pid);
    FILE *cf = fopen(comm_path, "r");
    if (cf) {
        if (!fgets(comm, sizeof(comm), cf))
            comm[0] = '\0';
        fclose(cf);
    }
    if (strncmp(comm, "ferry", 5) != 0) {
        fprintf(stderr, "ferry: process %ld from %s is not a running ferry (stale pid file?)\n",
                pid, path);
        return 0;
    }
    return (pid_t)pid;
}

/* ferry -s reload|stop|reopen [options]: the options name the pid file (--pid-file, or the
 * pid-file key of -c FILE). Returns the exit status. */
static int send_control(int argc, char **argv, const char *action)
{
    int sig = !strcmp(action, "reload")   ? SIGHUP
              : !strcmp(action, "stop")   ? SIGTERM
              : !strcmp(action, "reopen") ? SIGUSR1
                                          : 0;
    if (!sig) {
        fprintf(stderr, "ferry: -s expects reload, stop or reopen, got '%s'\n", action);
        return 2;
    }
    struct fy_config c;
    fy_config_defaults(&c);
    char err[512];
    FILE *sink = fopen("/dev/null", "w");
    enum fy_args_result r = fy_args_parse(&c, argc, argv, err, sizeof(err), sink);
    if (sink)
        fclose(sink);
    int rc = 1;
    if (r == FY_ARGS_FILE_ERROR && sig == SIGHUP) {
        /* A reload would be refused: say why here instead of only in the server's log. */
        fputs(c.file_errors ? c.file_errors : "ferry: invalid configuration file\n", stderr);
    } else if (r == FY_ARGS_ERROR && !c.pid_file) {
        fprintf(stderr, "ferry: %s\n", err);
    } else if (!c.pid_file) {
        fprintf(stderr,
                "ferry: -s %s needs the pid file: give --pid-file PATH, or -c FILE with "
                "pid-file: in it\n",
                action);
    } else {
        pid_t pid = read_pid_file(c.pid_file);
        if (pid && kill(pid, sig) < 0)
            fprintf(stderr, "ferry: cannot signal process %ld: %s\n", (long)pid, strerror(errno));
        else if (pid)
            rc = 0;
    }
    fy_config_free(&c);
    return rc;
}

static int write_pid_file(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *pf = fopen(tmp, "w");
    if (!pf || fprintf(pf, "%ld\n", (long)getpid()) < 0 || fclose(pf) != 0 ||
        rename(tmp, path) < 0) {
        fprintf(stderr, "ferry: cannot write the pid file %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "ca"))
        return fy_cmd_ca(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "har"))
        return fy_cmd_har(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "replay"))
        return fy_cmd_replay(argc - 1, argv + 1);
    struct ferry f = {.alog_fd = -1, .sig_fd = -1, .done_fd = -1};
    char tls_err[256];
    if (fy_tls_init(tls_err, sizeof(tls_err)) < 0) {
        fprintf(stderr, "ferry: %s\n", tls_err);
        return 1;
    }
    /* -s ACTION anywhere: signal a running ferry (the other options only locate it). */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-s") || !strcmp(argv[i], "--signal")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "ferry: -s needs reload, stop or reopen\n");
                return 2;
            }
            const char *action = argv[i + 1];
            char **rest = calloc((size_t)argc, sizeof(*rest));
            int n = 0;
            for (int k = 0; k < argc; k++)
                if (k != i && k != i + 1)
                    rest[n++] = argv[k];
            int rc = send_control(n, rest, action);
            free(rest);
            return rc;
        }
    }
    f.argc = argc;
    f.argv = argv;
    fy_filters_register_builtin();
    fy_config_defaults(&f.cfg);
    char err[512];
    switch (fy_args_parse(&f.cfg, argc, argv, err, sizeof(err), stdout)) {
    case FY_ARGS_EXIT_OK:
        fy_config_free(&f.cfg);
        return 0;
    case FY_ARGS_ERROR: /* the command line: one line, exit 2 */
        fprintf(stderr, "ferry: %s\n", err);
        fy_config_free(&f.cfg);
        return 2;
    case FY_ARGS_FILE_ERROR: /* the file: every error, one FILE:LINE:COLUMN line each, exit 1 */
        fputs(f.cfg.file_errors ? f.cfg.file_errors : "ferry: invalid configuration file\n",
              stderr);
        fy_config_free(&f.cfg);
        return 1;
    case FY_ARGS_OK:
        break;
    }
    if (f.cfg.check_only) {
        printf("ferry: %s: configuration OK\n",
               f.cfg.config_path ? f.cfg.config_path : "command line");
        fy_config_free(&f.cfg);
        return 0;
    }
    fy_log_min_level = f.cfg.log_level;
    /* Block the handled signals before anything listens: a SIGTERM that arrives while ferry
     * starts waits in the signalfd and drains cleanly instead of killing the process. Workers
     * inherit this mask, so only the main thread ever takes these signals. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    /* A shell starts background jobs with SIGINT ignored, and nohup ignores SIGHUP: an ignored
     * signal never reaches the signalfd. These are handled, so take them back (still blocked). */
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGUSR1, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    f.sig_fd = signalfd(-1, &set, SFD_CLOEXEC);
    f.done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (f.sig_fd < 0 || f.done_fd < 0) {
        fprintf(stderr, "ferry: cannot set up signal handling: %s\n", strerror(errno));
        goto fail_fds;
    }

    if (f.cfg.access_log == FY_ALOG_STDOUT) {
        f.alog_fd = STDOUT_FILENO;
    } else if (f.cfg.access_log == FY_ALOG_FILE) {
        f.alog_fd = open_access_log(f.cfg.access_log_path);
        if (f.alog_fd < 0) {
            fprintf(stderr, "ferry: cannot open access log %s: %s\n", f.cfg.access_log_path,
                    strerror(errno));
            goto fail_fds;
        }
    }

    char build_err[600];
    f.conf = fy_conf_build(&f.cfg, NULL, build_err, sizeof(build_err));
    if (!f.conf) {
        fprintf(stderr, "ferry: %s\n", build_err);
        goto fail_alog;
    }
    struct fy_conf *conf = f.conf;
    uint32_t naddrs = 0;
    for (uint32_t li = 0; li < conf->nlisteners; li++) {
        struct fy_listener_conf *l = &conf->listeners[li];
        for (uint32_t a = 0; a < l->naddrs; a++, naddrs++) {
            int rc = fy_listener_check_free(&l->addrs[a]);
            if (rc < 0) {
                fprintf(stderr, "ferry: cannot listen on %s: %s%s\n", l->addr_texts[a],
                        strerror(-rc),
                        rc == -EADDRINUSE ? " (another program is using it; stop it or pick "
                                            "another port)"
                                          : "");
                goto fail_alog;
            }
        }
    }
    int nworkers = conf->settings.workers;
    f.workers = calloc((size_t)nworkers, sizeof(*f.workers));
    int *fds = calloc(naddrs ? naddrs : 1, sizeof(*fds));
    if (!f.workers || !fds) {
        free(fds);
        fprintf(stderr, "ferry: out of memory\n");
        goto fail_alog;
    }
    for (int i = 0; i < nworkers; i++) {
        uint32_t k = 0;
        int rc = 0;
        for (uint32_t li = 0; li < conf->nlisteners && rc >= 0; li++) {
            struct fy_listener_conf *l = &conf->listeners[li];
            for (uint32_t a = 0; a < l->naddrs; a++) {
                /* Port 0 is written back by the first open, so every worker shares the port. */
                rc = fy_listener_open(&l->addrs[a]);
                if (rc < 0) {
                    fprintf(stderr, "ferry: cannot listen on %s: %s\n", l->addr_texts[a],
                            strerror(-rc));
                    break;
                }
                fds[k++] = rc;
            }
        }
        if (rc < 0) {
            for (uint32_t j = 0; j < k; j++)
                close(fds[j]);
            free(fds);
            goto fail_workers;
        }
        rc = fy_worker_init(&f.workers[i], conf, i, fds, k, f.alog_fd);
        if (rc < 0) {
            free(fds);
            fprintf(stderr, "ferry: cannot start worker %d: %s\n", i, strerror(-rc));
            goto fail_workers;
        }
        f.workers[i].notify_fd = f.done_fd;
        f.nworkers++;
    }
    free(fds);
    for (int i = 0; i < nworkers; i++) {
        int rc = pthread_create(&f.workers[i].thread, NULL, fy_worker_main, &f.workers[i]);
        if (rc != 0) {
            fprintf(stderr, "ferry: cannot start worker thread: %s\n", strerror(rc));
            goto fail_workers;
        }
        f.nthreads++;
    }
    log_listening(conf);
    if (conf->settings.pid_file && write_pid_file(conf->settings.pid_file) < 0)
        goto fail_workers;
    serve(&f);

    stop_workers(&f);
    if (f.conf->settings.pid_file)
        unlink(f.conf->settings.pid_file);
    /* The main thread's own free lists (normally empty: traffic runs on the workers). */
    fy_buf_freelist_release();
    fy_client_io_freelist_release();
    fy_session_freelist_release();
    fy_pipe_pool_release();
    fy_router_thread_release();
    fy_info("stopped");
    if (f.alog_fd > STDERR_FILENO)
        close(f.alog_fd);
    close(f.done_fd);
    close(f.sig_fd);
    fy_reresolver_free(f.rr);
    fy_conf_unref(f.conf);
    fy_config_free(&f.cfg);
    fy_capture_shutdown(); /* every captured exchange is in its file */
    fy_tls_shutdown();
    return 0;

fail_workers:
    stop_workers(&f);
fail_alog:
    if (f.alog_fd > STDERR_FILENO)
        close(f.alog_fd);
fail_fds:
    if (f.done_fd >= 0)
        close(f.done_fd);
    if (f.sig_fd >= 0)
        close(f.sig_fd);
    fy_conf_unref(f.conf);
    fy_config_free(&f.cfg);
    fy_capture_shutdown();
    return 1;
}
