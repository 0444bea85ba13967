/* Unit tests for src/net/resolver.c, against a DNS responder thread on 127.0.0.1 (no network):
 * IP literals and localhost without DNS, the order and deduplication of answers, the error
 * messages (no such name, no address, a server that never answers), the re-resolver driven by
 * poll() (a changed answer is reported once, a failed lookup never), and the configuration file's
 * server names resolved with the file's resolvers: (naddrs, FILE:LINE:COL errors). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "dns_responder.h"
#include "net/resolver.h"

/* ---- the test DNS server (dns_responder.h) ---- */

static struct fy_resolver_conf RC;

static void resolver_start(void)
{
    dns_start();
    RC = (struct fy_resolver_conf){.servers = D.servers, .timeout_ms = 2000, .interval_ms = 100};
}

TestSuite(resolver, .init = resolver_start, .fini = dns_stop, .timeout = 60);

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *fmt(const struct fy_addr *a)
{
    static char buf[4][64];
    static int k;
    char *b = buf[k++ % 4];
    fy_addr_format((const struct sockaddr *)&a->ss, b, 64);
    return b;
}

/* ---- fy_resolve ---- */

Test(resolver, ip_literals_need_no_dns)
{
    struct fy_addr *a;
    uint32_t n;
    char err[256];
    cr_assert_eq(fy_resolve(&RC, "10.1.2.3", 80, &a, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(fmt(&a[0]), "10.1.2.3:80");
    cr_assert_eq(a[0].len, sizeof(struct sockaddr_in));
    free(a);
    cr_assert_eq(fy_resolve(&RC, "[::1]", 8080, &a, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(fmt(&a[0]), "[::1]:8080");
    free(a);
    cr_assert_eq(fy_resolve(&RC, "2001:db8::5", 1, &a, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(fmt(&a[0]), "[2001:db8::5]:1");
    free(a);
    cr_assert(fy_resolver_is_literal("10.1.2.3"));
    cr_assert(fy_resolver_is_literal("[::1]"));
    cr_assert_not(fy_resolver_is_literal("app.test"));
    cr_assert_not(fy_resolver_is_literal("localhost"));
    cr_assert_eq(atomic_load(&D.queries), 0, "no DNS query for a literal");
}

Test(resolver, localhost_needs_no_dns)
{
    struct fy_addr *a;
    uint32_t n;
    char err[256];
    cr_assert_eq(fy_resolve(&RC, "LocalHost", 9000, &a, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(fmt(&a[0]), "127.0.0.1:9000", "IPv4 first");
    cr_assert_str_eq(fmt(&a[1]), "[::1]:9000");
    free(a);
    cr_assert_eq(atomic_load(&D.queries), 0);
}

Test(resolver, every_address_ipv4_first_sorted_deduplicated)
{
    dns_set("multi.test", "10.0.0.2", "::2", "10.0.0.1");
    struct fy_addr *a;
    uint32_t n;
    char err[256];
    cr_assert_eq(fy_resolve(&RC, "multi.test", 3000, &a, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(fmt(&a[0]), "10.0.0.1:3000");
    cr_assert_str_eq(fmt(&a[1]), "10.0.0.2:3000");
    cr_assert_str_eq(fmt(&a[2]), "[::2]:3000");
    free(a);
    dns_set("dup.test", "127.0.0.2", "127.0.0.1", "127.0.0.2");
    cr_assert_eq(fy_resolve(&RC, "dup.test", 80, &a, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 2, "duplicates dropped");
    cr_assert_str_eq(fmt(&a[0]), "127.0.0.1:80");
    cr_assert_str_eq(fmt(&a[1]), "127.0.0.2:80");
    /* The same set in another order compares equal. */
    struct fy_addr swapped[2] = {a[1], a[0]};
    cr_assert(fy_resolver_same(a, 2, swapped, 2));
    cr_assert_not(fy_resolver_same(a, 2, swapped, 1));
    free(a);
}

Test(resolver, no_such_name)
{
    struct fy_addr *a = (struct fy_addr *)&a;
    uint32_t n = 7;
    char err[256], want[256];
    cr_assert_eq(fy_resolve(&RC, "api.internal", 80, &a, &n, err, sizeof(err)), -1);
    cr_assert_null(a);
    cr_assert_eq(n, 0);
    snprintf(want, sizeof(want), "cannot resolve api.internal: no such name (asked %s)", D.servers);
    cr_assert_str_eq(err, want);
}

Test(resolver, a_name_without_address)
{
    dns_set("empty.test", NULL, NULL, NULL);
    struct fy_addr *a;
    uint32_t n;
    char err[256], want[256];
    cr_assert_eq(fy_resolve(&RC, "empty.test", 80, &a, &n, err, sizeof(err)), -1);
    snprintf(want, sizeof(want),
             "cannot resolve empty.test: the name has no IPv4 or IPv6 address (asked %s)",
             D.servers);
    cr_assert_str_eq(err, want);
}

Test(resolver, a_server_that_never_answers_times_out)
{
    atomic_store(&D.silent, true);
    RC.timeout_ms = 300;
    struct fy_addr *a;
    uint32_t n;
    char err[256], want[256];
    uint64_t t0 = mono_ms();
    cr_assert_eq(fy_resolve(&RC, "app.test", 80, &a, &n, err, sizeof(err)), -1);
    uint64_t took = mono_ms() - t0;
    snprintf(want, sizeof(want),
             "cannot resolve app.test: no answer (timed out after 300ms) (asked %s)", D.servers);
    cr_assert_str_eq(err, want);
    cr_assert_geq(took, 250, "waited %llu ms", (unsigned long long)took);
    cr_assert_lt(took, 1500, "bounded by resolve-timeout: took %llu ms", (unsigned long long)took);
}

Test(resolver, bad_server_list)
{
    RC.servers = (char *)"not-an-ip";
    struct fy_addr *a;
    uint32_t n;
    char err[256];
    cr_assert_eq(fy_resolve(&RC, "app.test", 80, &a, &n, err, sizeof(err)), -1);
    cr_assert(strstr(err, "resolvers 'not-an-ip'"), "%s", err);
    cr_assert_null(fy_reresolver_new(&RC, err, sizeof(err)));
}

/* ---- the re-resolver ---- */

/* Drives r like the main loop would, for at most ms; returns how many times process() said
 * "changed". Stops at the first change when stop_on_change. */
static int drive(struct fy_reresolver *r, uint64_t ms, bool stop_on_change)
{
    int changes = 0;
    uint64_t end = mono_ms() + ms;
    while (mono_ms() < end) {
        struct pollfd fds[16];
        int timeout = 50; /* the main loop's own timers */
        int n = fy_reresolver_pollfds(r, fds, 16, &timeout);
        cr_assert_leq(timeout, 50);
        cr_assert_geq(timeout, 0);
        int rc = poll(fds, (nfds_t)n, timeout);
        cr_assert_geq(rc, 0);
        if (fy_reresolver_process(r, fds, n)) {
            changes++;
            if (stop_on_change)
                break;
        }
    }
    return changes;
}

/* Runs fn with stderr going to a file; returns what was logged (malloc'd). */
static char *capture_stderr(void (*fn)(void *), void *arg)
{
    char path[] = "/tmp/ferry-resolver-log-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    fn(arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    off_t len = lseek(fd, 0, SEEK_END);
    char *text = calloc(1, (size_t)len + 1);
    cr_assert_eq(pread(fd, text, (size_t)len, 0), len);
    close(fd);
    unlink(path);
    return text;
}

struct failing_run {
    struct fy_reresolver *r;
    int changes;
};

static void run_failing(void *arg)
{
    struct failing_run *f = arg;
    f->changes = drive(f->r, 1200, false);
}

Test(resolver, reresolver_reports_a_changed_answer_once_and_failures_never)
{
    dns_set("app.test", "127.0.0.1", NULL, NULL);
    RC.timeout_ms = 300;
    char err[256];
    struct fy_reresolver *r = fy_reresolver_new(&RC, err, sizeof(err));
    cr_assert_not_null(r, "%s", err);

    struct fy_addr *cur;
    uint32_t ncur;
    cr_assert_eq(fy_resolve(&RC, "app.test", 8080, &cur, &ncur, err, sizeof(err)), 0, "%s", err);
    fy_reresolver_add(r, "app.test", 8080, cur, ncur);
    fy_reresolver_add(r, "APP.test", 8080, cur, ncur);  /* the same name: watched once */
    fy_reresolver_add(r, "127.0.0.9", 8080, cur, ncur); /* a literal: ignored */

    /* Several rounds (interval 100ms) of the same answer: no change. */
    int before = atomic_load(&D.queries);
    cr_assert_eq(drive(r, 450, false), 0);
    int asked = atomic_load(&D.queries) - before;
    cr_assert_geq(asked, 4, "rounds ran: %d queries", asked);
    cr_assert_leq(asked, 2 * 6, "one name watched, A and AAAA per round: %d queries", asked);

    /* A second address appears: reported, once. */
    dns_set("app.test", "127.0.0.2", "127.0.0.1", NULL);
    cr_assert_eq(drive(r, 2000, true), 1, "the change is seen");
    cr_assert_eq(drive(r, 400, false), 0, "and reported once");

    /* No such name, then no answer at all: warnings, never a change. */
    D.nnames = 0;
    struct failing_run f = {.r = r};
    char *log = capture_stderr(run_failing, &f);
    cr_assert_eq(f.changes, 0);
    cr_assert(strstr(log, "re-resolving app.test: no such name"), "%s", log);
    cr_assert(strstr(log, "still using 127.0.0.1:8080, 127.0.0.2:8080"), "%s", log);
    free(log);
    atomic_store(&D.silent, true);
    log = capture_stderr(run_failing, &f);
    cr_assert_eq(f.changes, 0);
    cr_assert(strstr(log, "re-resolving app.test: no answer (timed out after 300ms)"), "%s", log);
    free(log);

    /* Back to the first answer: a change again (from the last good one). */
    atomic_store(&D.silent, false);
    dns_set("app.test", "127.0.0.1", NULL, NULL);
    cr_assert_eq(drive(r, 2000, true), 1);

    /* clear() forgets every name, mid-round or not; nothing is polled then. */
    fy_reresolver_clear(r);
    struct pollfd fds[4];
    int timeout = -1;
    cr_assert_eq(fy_reresolver_pollfds(r, fds, 4, &timeout), 0);
    cr_assert_eq(timeout, -1, "nothing watched: the caller's timeout stays");
    cr_assert_not(fy_reresolver_process(r, fds, 0));
    free(cur);
    fy_reresolver_free(r);
}

Test(resolver, reresolver_free_mid_round)
{
    atomic_store(&D.silent, true); /* the round never ends by itself */
    RC.interval_ms = 10;
    char err[256];
    struct fy_reresolver *r = fy_reresolver_new(&RC, err, sizeof(err));
    cr_assert_not_null(r, "%s", err);
    fy_reresolver_add(r, "app.test", 80, NULL, 0);
    uint64_t end = mono_ms() + 2000;
    while (atomic_load(&D.queries) == 0 && mono_ms() < end) {
        struct pollfd fds[16];
        int timeout = 20;
        int n = fy_reresolver_pollfds(r, fds, 16, &timeout);
        poll(fds, (nfds_t)n, timeout);
        fy_reresolver_process(r, fds, n);
    }
    cr_assert_gt(atomic_load(&D.queries), 0);
    fy_reresolver_free(r); /* LeakSanitizer: the channel and its lookups go */
}

Test(resolver, interval_zero_never_polls)
{
    RC.interval_ms = 0;
    char err[256];
    struct fy_reresolver *r = fy_reresolver_new(&RC, err, sizeof(err));
    cr_assert_not_null(r, "%s", err);
    fy_reresolver_add(r, "app.test", 80, NULL, 0);
    struct pollfd fds[4];
    int timeout = 1000;
    cr_assert_eq(fy_reresolver_pollfds(r, fds, 4, &timeout), 0);
    cr_assert_eq(timeout, 1000);
    cr_assert_not(fy_reresolver_process(r, fds, 0));
    fy_reresolver_free(r);
}

/* ---- server names in a configuration file ---- */

static char DIR_[64], PATH_[128];

static enum fy_args_result load_file(struct fy_config *c, const char *text, const char *extra1,
                                     const char *extra2, char *err, size_t errlen)
{
    strcpy(DIR_, "/tmp/ferry-resolver-XXXXXX");
    cr_assert_not_null(mkdtemp(DIR_));
    snprintf(PATH_, sizeof(PATH_), "%s/ferry.yaml", DIR_);
    FILE *f = fopen(PATH_, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    char *argv[6] = {(char *)"ferry", (char *)"-c", PATH_};
    int argc = 3;
    if (extra1)
        argv[argc++] = (char *)extra1;
    if (extra2)
        argv[argc++] = (char *)extra2;
    fy_config_defaults(c);
    enum fy_args_result res = fy_args_parse(c, argc, argv, err, errlen, stdout);
    unlink(PATH_);
    rmdir(DIR_);
    return res;
}

/* upstreams: before resolvers: in the file: the second pass still uses the file's resolvers. */
static const char *FILE_FMT = "listeners:\n"
                              "  - listen: 127.0.0.1:0\n"
                              "    routes: [{ upstream: app }]\n"
                              "upstreams:\n"
                              "  app:\n"
                              "    servers: [http://two.test:8080, http://127.0.0.1:9,\n"
                              "              \"http://%s:81\"]\n"
                              "resolvers: \"%s\"\n"
                              "resolve-timeout: 300ms\n"
                              "resolve-interval: 10s\n";

Test(resolver, file_servers_resolved_with_the_files_resolvers)
{
    dns_set("two.test", "127.0.0.2", "127.0.0.1", NULL);
    char text[1024], err[256];
    snprintf(text, sizeof(text), FILE_FMT, "two.test", D.servers);
    struct fy_config c;
    cr_assert_eq(load_file(&c, text, NULL, NULL, err, sizeof(err)), FY_ARGS_OK, "%s %s", err,
                 c.file_errors ? c.file_errors : "");
    cr_assert_str_eq(c.resolver.servers, D.servers);
    cr_assert_eq(c.resolver.timeout_ms, 300);
    cr_assert_eq(c.resolver.interval_ms, 10000);
    cr_assert_eq(c.ngroups, 1);
    const struct fy_server *s = c.groups[0].servers;
    cr_assert_eq(s[0].naddrs, 2);
    cr_assert_str_eq(fmt(&s[0].addrs[0]), "127.0.0.1:8080");
    cr_assert_str_eq(fmt(&s[0].addrs[1]), "127.0.0.2:8080");
    cr_assert_str_eq(fmt(&s[0].addr), "127.0.0.1:8080", "addr is the first address");
    cr_assert_eq(s[1].naddrs, 1);
    cr_assert_str_eq(fmt(&s[1].addr), "127.0.0.1:9");
    cr_assert_eq(s[2].naddrs, 2, "the same name again: its answer with this port");
    cr_assert_str_eq(fmt(&s[2].addrs[1]), "127.0.0.2:81");
    cr_assert_eq(atomic_load(&D.queries), 2, "two.test asked once (A and AAAA)");
    fy_config_free(&c);
}

Test(resolver, file_unknown_name_is_reported_at_its_url)
{
    char text[1024], err[256], want[512];
    snprintf(text, sizeof(text), FILE_FMT, "nope.test", D.servers);
    struct fy_config c;
    dns_set("two.test", "127.0.0.2", NULL, NULL);
    cr_assert_eq(load_file(&c, text, NULL, NULL, err, sizeof(err)), FY_ARGS_FILE_ERROR);
    snprintf(want, sizeof(want),
             "%s:7:15: server 'http://nope.test:81': cannot resolve nope.test: no such name "
             "(asked %s)\n",
             PATH_, D.servers);
    cr_assert_str_eq(c.file_errors, want);
    fy_config_free(&c);
}

Test(resolver, command_line_resolvers_win_over_the_files)
{
    dns_set("two.test", "127.0.0.2", NULL, NULL);
    char text[1024], err[256];
    /* The file names a server that does not exist: the command line's must be the one asked. */
    snprintf(text, sizeof(text), FILE_FMT, "two.test", "127.0.0.1:9");
    struct fy_config c;
    cr_assert_eq(load_file(&c, text, "--resolvers", D.servers, err, sizeof(err)), FY_ARGS_OK,
                 "%s %s", err, c.file_errors ? c.file_errors : "");
    cr_assert_str_eq(c.resolver.servers, D.servers);
    cr_assert_eq(c.groups[0].servers[0].naddrs, 1);
    cr_assert_str_eq(c.opt_text[fy_option_find("resolvers") - fy_options], D.servers);
    fy_config_free(&c);
}

Test(resolver, resolvers_option_values)
{
    struct fy_config c;
    fy_config_defaults(&c);
    const struct fy_option *o = fy_option_find("resolvers");
    char err[256];
    cr_assert_eq(fy_option_apply(&c, o, "resolvers", "10.0.0.2, 10.0.0.3:5353,[fd00::53]:54,::1",
                                 NULL, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_str_eq(c.resolver.servers, "10.0.0.2:53,10.0.0.3:5353,[fd00::53]:54,[::1]:53");
    cr_assert_eq(fy_option_apply(&c, o, "resolvers", "system", NULL, err, sizeof(err)), 0);
    cr_assert_null(c.resolver.servers);
    cr_assert_eq(fy_option_apply(&c, o, "resolvers", "dns.local", NULL, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "resolvers: 'dns.local' is not an IP address (write DNS servers as "
                          "IP[:PORT], [IPv6]:PORT)");
    cr_assert_eq(fy_option_apply(&c, o, "resolvers", "10.0.0.1:0", NULL, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "resolvers: port must be a number from 1 to 65535, got '0'");
    cr_assert_eq(fy_option_apply(&c, o, "resolvers", " , ", NULL, err, sizeof(err)), -1);
    cr_assert_eq(fy_option_apply(&c, fy_option_find("resolve-timeout"), "--resolve-timeout", "0",
                                 NULL, err, sizeof(err)),
                 -1);
    cr_assert_str_eq(err, "--resolve-timeout must be more than 0, got '0'");
    cr_assert_eq(fy_option_apply(&c, fy_option_find("resolve-interval"), "resolve-interval", "0",
                                 NULL, err, sizeof(err)),
                 0);
    cr_assert_eq(c.resolver.interval_ms, 0);
    fy_config_free(&c);
}
