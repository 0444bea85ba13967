/* Reload: a new configuration generation for running workers; see reload.h. */
#include "proxy/reload.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "net/listener.h"

/* How long the main thread waits for every worker to adopt a generation (a worker does it within
 * one loop iteration; this only bounds a stuck one). */
#define RELOAD_ADOPT_WAIT_MS 5000

static void log_file_errors(const char *text)
{
    const char *p = text;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        int len = nl ? (int)(nl - p) : (int)strlen(p);
        if (len)
            fy_error("reload refused: %.*s", len, p);
        p = nl ? nl + 1 : NULL;
    }
}

/* Settings a running ferry cannot change: the new value is reported and the old one kept. */
static void keep_restart_only(struct fy_config *n, const struct fy_config *old)
{
    if (n->workers != old->workers) {
        fy_warn("reload: workers %d -> %d takes a restart; keeping %d", old->workers, n->workers,
                old->workers);
        n->workers = old->workers;
    }
    bool alog_same =
        n->access_log == old->access_log && n->access_log_format == old->access_log_format &&
        (n->access_log != FY_ALOG_FILE || !strcmp(n->access_log_path, old->access_log_path));
    if (!alog_same)
        fy_warn("reload: access-log and access-log-format take a restart; the access log stays "
                "as it is (SIGUSR1 reopens its file)");
    if (n->log_level != old->log_level)
        fy_warn("reload: log-level takes a restart; it stays as it is");
    if (n->max_header_size != old->max_header_size)
        fy_warn("reload: a larger max-header-size than at startup takes a restart (client "
                "buffers keep their size)");
}

static bool conf_has_addr(const struct fy_conf *c, const struct fy_addr *a)
{
    for (uint32_t li = 0; li < c->nlisteners; li++)
        for (uint32_t k = 0; k < c->listeners[li].naddrs; k++) {
            const struct fy_addr *b = &c->listeners[li].addrs[k];
            if (a->len == b->len && !memcmp(&a->ss, &b->ss, a->len))
                return true;
        }
    return false;
}

/* An address written with port 0 ("any free port") that the running generation also has, as
 * written, stays on the port it got at startup: a reload must not move it. */
static void keep_bound_ports(struct fy_conf *c, const struct fy_conf *old)
{
    for (uint32_t li = 0; li < c->nlisteners; li++) {
        struct fy_listener_conf *l = &c->listeners[li];
        for (uint32_t a = 0; a < l->naddrs; a++) {
            if (fy_addr_port((const struct sockaddr *)&l->addrs[a].ss) != 0)
                continue;
            for (uint32_t oi = 0; oi < old->nlisteners; oi++) {
                const struct fy_listener_conf *ol = &old->listeners[oi];
                for (uint32_t k = 0; k < ol->naddrs; k++)
                    if (!strcmp(ol->addr_texts[k], l->addr_texts[a]))
                        l->addrs[a] = ol->addrs[k];
            }
        }
    }
}

static void close_all(int **fds, int nworkers, uint32_t naddrs)
{
    for (int i = 0; i < nworkers; i++) {
        if (!fds[i])
            continue;
        for (uint32_t k = 0; k < naddrs; k++)
            if (fds[i][k] >= 0)
                close(fds[i][k]);
        free(fds[i]);
        fds[i] = NULL;
    }
}

/* One fd array per worker: -1 for an address the old generation listens on (the worker keeps
 * its socket), a new SO_REUSEPORT socket for a new address. Returns 0, or -1 with the reason
 * logged and nothing left open. */
static int open_new_addresses(struct fy_reload_ctx *r, struct fy_conf *c, int **fds,
                              uint32_t *naddrs_out)
{
    uint32_t naddrs = 0;
    for (uint32_t li = 0; li < c->nlisteners; li++)
        naddrs += c->listeners[li].naddrs;
    *naddrs_out = naddrs;
    for (int i = 0; i < r->nworkers; i++) {
        fds[i] = malloc((naddrs ? naddrs : 1) * sizeof(int));
        if (!fds[i]) {
            fy_error("reload refused: out of memory");
            close_all(fds, r->nworkers, naddrs);
            return -1;
        }
        for (uint32_t k = 0; k < naddrs; k++)
            fds[i][k] = -1;
    }
    uint32_t k = 0;
    for (uint32_t li = 0; li < c->nlisteners; li++) {
        struct fy_listener_conf *l = &c->listeners[li];
        for (uint32_t a = 0; a < l->naddrs; a++, k++) {
            if (conf_has_addr(r->conf, &l->addrs[a]))
                continue;
            int rc = fy_listener_check_free(&l->addrs[a]);
            for (int i = 0; rc >= 0 && i < r->nworkers; i++) {
                rc = fy_listener_open(&l->addrs[a]);
                if (rc >= 0)
                    fds[i][k] = rc;
            }
            if (rc < 0) {
                fy_error("reload refused: cannot listen on %s: %s", l->addr_texts[a],
                         strerror(-rc));
                close_all(fds, r->nworkers, naddrs);
                return -1;
            }
        }
    }
    return 0;
}

static bool all_adopted(const struct fy_reload_ctx *r, unsigned generation)
{
    for (int i = 0; i < r->nworkers; i++)
        if (!fy_worker_reloaded(&r->workers[i], generation))
            return false;
    return true;
}

static void wait_adopted(struct fy_reload_ctx *r, unsigned generation)
{
    for (int waited = 0; !all_adopted(r, generation);) {
        if (waited >= RELOAD_ADOPT_WAIT_MS) {
            fy_warn("reload: a worker did not take generation %u within %d ms", generation,
                    RELOAD_ADOPT_WAIT_MS);
            return;
        }
        struct pollfd p = {.fd = r->done_fd, .events = POLLIN};
        if (poll(&p, 1, 50) > 0) {
            uint64_t n;
            ssize_t got = read(r->done_fd, &n, sizeof(n));
            (void)got;
        }
        waited += 50; /* coarse: only bounds the wait */
    }
}

int fy_reload_run(struct fy_reload_ctx *r)
{
    uint64_t t0 = fy_conf_now_ms();
    struct fy_config nc;
    fy_config_defaults(&nc);
    char err[512] = "";
    FILE *sink = fopen("/dev/null", "w");
    enum fy_args_result ar = fy_args_parse(&nc, r->argc, r->argv, err, sizeof(err), sink);
    if (sink)
        fclose(sink);
    if (ar != FY_ARGS_OK) {
        if (ar == FY_ARGS_FILE_ERROR)
            log_file_errors(nc.file_errors);
        else
            fy_error("reload refused: %s", ar == FY_ARGS_ERROR ? err : "nothing to run");
        fy_error("reload refused: still serving generation %u", r->conf->generation);
        fy_config_free(&nc);
        return -1;
    }
    keep_restart_only(&nc, &r->conf->settings);
    char build_err[600];
    struct fy_conf *c = fy_conf_build(&nc, r->conf, build_err, sizeof(build_err));
    fy_config_free(&nc);
    if (!c) {
        fy_error("reload refused: %s; still serving generation %u", build_err, r->conf->generation);
        return -1;
    }
    keep_bound_ports(c, r->conf);
    int **fds = calloc((size_t)r->nworkers, sizeof(*fds));
    uint32_t naddrs = 0;
    if (!fds || open_new_addresses(r, c, fds, &naddrs) < 0) {
        free(fds);
        fy_error("reload refused: still serving generation %u", r->conf->generation);
        fy_conf_unref(c);
        return -1;
    }
    for (int i = 0; i < r->nworkers; i++) {
        struct fy_worker_reload *wr = malloc(sizeof(*wr));
        if (!wr) {
            /* This worker stays on the old generation; the others move. */
            fy_error("reload: out of memory handing generation %u to worker %d", c->generation, i);
            for (uint32_t k = 0; k < naddrs; k++)
                if (fds[i][k] >= 0)
                    close(fds[i][k]);
            free(fds[i]);
            continue;
        }
        wr->conf = fy_conf_ref(c);
        wr->fds = fds[i];
        wr->nfds = naddrs;
        fy_worker_request_reload(&r->workers[i], wr);
    }
    free(fds);
    wait_adopted(r, c->generation);
    unsigned nroutes = 0;
    for (uint32_t li = 0; li < c->nlisteners; li++)
        nroutes += c->listeners[li].nroutes;
    fy_info("reload: generation %u serving (%u listener%s, %u route%s, %u upstream group%s) "
            "%llu ms after the signal",
            c->generation, c->nlisteners, c->nlisteners == 1 ? "" : "s", nroutes,
            nroutes == 1 ? "" : "s", c->ngroups, c->ngroups == 1 ? "" : "s",
            (unsigned long long)(fy_conf_now_ms() - t0));
    fy_conf_unref(r->conf);
    r->conf = c;
    return 0;
}
