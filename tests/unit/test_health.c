/*
 * Unit tests for src/proxy/health.c: the strict status-line parser, expect ranges, the rise/fall
 * counting on the shared server state (transitions, resets, carry-over of a down state), groups
 * without a check, and fy_health_stop with a probe in flight (no fd left open, no timer left in
 * the loop's heap; leaks show under the sanitizer build). Groups are built by hand; the
 * end-to-end behaviour is tests/integration/test_health.py.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/health.c"

static int parse(const char *s, int *status)
{
    *status = -1;
    return parse_status_line(s, strlen(s), status);
}

Test(health, status_line_complete)
{
    int st;
    cr_expect_eq(parse("HTTP/1.1 200 OK\r\n", &st), 1);
    cr_expect_eq(st, 200);
    cr_expect_eq(parse("HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n", &st), 1);
    cr_expect_eq(st, 503);
    cr_expect_eq(parse("HTTP/1.1 204 \r\n", &st), 1); /* empty reason */
    cr_expect_eq(st, 204);
    cr_expect_eq(parse("HTTP/1.1 404\r\n", &st), 1); /* no SP before CRLF: accepted */
    cr_expect_eq(st, 404);
    cr_expect_eq(parse("HTTP/1.1 200 caf\xc3\xa9\tok\r\n", &st), 1); /* obs-text, HTAB */
    cr_expect_eq(st, 200);
}

Test(health, status_line_needs_more)
{
    int st;
    const char *full = "HTTP/1.1 200 OK\r\n";
    /* Every strict prefix waits for more, whatever the split. */
    for (size_t n = 0; n < strlen(full); n++)
        cr_expect_eq(parse_status_line(full, n, &st), 0, "prefix of %zu bytes", n);
}

Test(health, status_line_malformed)
{
    static const char *const bad[] = {
        "HTTP/2.0 200 OK\r\n",     /* not HTTP/1 */
        "HTTP/1.1 2OO OK\r\n",     /* letters in the code */
        "HTTP/1.1 600 No\r\n",     /* out of range */
        "HTTP/1.1 099 No\r\n",     /* out of range */
        "HTTP/1.1  200 OK\r\n",    /* two spaces */
        "HTTP/1.1 2000 OK\r\n",    /* four digits */
        "HTTP/1.1 200 OK\n",       /* bare LF */
        "HTTP/1.1 200 OK\rX",      /* CR without LF */
        "HTTP/1.1 200 O\x01K\r\n", /* a control character in the reason */
        "http/1.1 200 OK\r\n",     /* the version is case-sensitive */
        "ICY 200 OK\r\n",          /* not HTTP */
        "<html>",                  /* an HTTP/0.9-style answer */
    };
    for (size_t i = 0; i < FY_ARRAY_LEN(bad); i++) {
        int st;
        cr_expect_eq(parse(bad[i], &st), -1, "%s", bad[i]);
    }
}

Test(health, expect_ranges)
{
    uint16_t r[2][2] = {{200, 299}, {304, 304}};
    struct fy_health h = {.expect = r, .nexpect = 2};
    cr_expect(status_expected(&h, 200));
    cr_expect(status_expected(&h, 299));
    cr_expect(status_expected(&h, 304));
    cr_expect(!status_expected(&h, 300));
    cr_expect(!status_expected(&h, 199));
    cr_expect(!status_expected(&h, 500));
}

/* One group "app" of n servers (n <= 4) with a check, as fy_conf_build would leave it. */
struct tconf {
    struct fy_conf c;
    struct fy_group g;
    struct fy_server sv[4];
    struct fy_server_state st[4];
    uint16_t expect[1][2];
};

static void tconf_init(struct tconf *t, uint32_t n, uint32_t rise, uint32_t fall)
{
    memset(t, 0, sizeof(*t));
    t->expect[0][0] = 200;
    t->expect[0][1] = 399;
    t->g.name = "app";
    t->g.health = (struct fy_health){.enabled = true,
                                     .path = "/health",
                                     .interval = 1000,
                                     .timeout = 500,
                                     .rise = rise,
                                     .fall = fall,
                                     .expect = t->expect,
                                     .nexpect = 1};
    t->g.servers = t->sv;
    t->g.nservers = t->g.nprimary = n;
    for (uint32_t i = 0; i < n; i++) {
        t->sv[i].index = i;
        t->sv[i].url = "http://127.0.0.1:1";
        t->sv[i].authority = "127.0.0.1:1";
        t->sv[i].group = &t->g;
        t->sv[i].state = &t->st[i];
        t->st[i].refs = 1;
    }
    t->c.groups = &t->g;
    t->c.ngroups = 1;
}

static struct hc_target target_of(struct tconf *t, uint32_t i)
{
    return (struct hc_target){.group = &t->g, .server = &t->sv[i]};
}

Test(health, fall_then_rise)
{
    struct tconf t;
    tconf_init(&t, 1, 2, 3);
    struct hc_target tg = target_of(&t, 0);
    struct fy_server_state *st = &t.st[0];
    record(&tg, false, "x");
    record(&tg, false, "x");
    cr_expect(!st->down, "two failures of fall 3");
    record(&tg, true, "ok"); /* a pass starts the failure count again */
    record(&tg, false, "x");
    record(&tg, false, "x");
    cr_expect(!st->down);
    record(&tg, false, "x");
    cr_expect(st->down, "three failures in a row");
    cr_expect_eq(st->hc_fail, 3);
    record(&tg, false, "x");
    cr_expect(st->down);
    record(&tg, true, "ok");
    cr_expect(st->down, "one pass of rise 2");
    record(&tg, false, "x"); /* a failure starts the pass count again */
    record(&tg, true, "ok");
    cr_expect(st->down);
    record(&tg, true, "ok");
    cr_expect(!st->down, "two passes in a row");
    cr_expect_eq(st->hc_ok, 2);
    cr_expect_eq(st->hc_fail, 0);
}

Test(health, fall_one_rise_one)
{
    struct tconf t;
    tconf_init(&t, 1, 1, 1);
    struct hc_target tg = target_of(&t, 0);
    record(&tg, false, "x");
    cr_expect(t.st[0].down);
    record(&tg, true, "ok");
    cr_expect(!t.st[0].down);
}

Test(health, counts_carry_over_in_the_state)
{
    /* A reload shares the state: a new checker (a new target) continues the count. */
    struct tconf t;
    tconf_init(&t, 1, 2, 2);
    struct hc_target old = target_of(&t, 0);
    record(&old, false, "x");
    record(&old, false, "x");
    cr_expect(t.st[0].down);
    record(&old, true, "ok");
    struct hc_target next = target_of(&t, 0);
    record(&next, true, "ok");
    cr_expect(!t.st[0].down, "the pass before the reload counted");
}

Test(health, no_group_checked_gives_null_and_frees_a_down_server)
{
    struct tconf t;
    tconf_init(&t, 2, 2, 2);
    t.g.health.enabled = false;
    t.st[1].down = true; /* left by a previous generation's check */
    t.st[1].hc_fail = 5;
    struct fy_loop loop;
    cr_assert_eq(fy_loop_init(&loop), 0);
    cr_expect_null(fy_health_start(&loop, &t.c));
    cr_expect(!t.st[0].down && !t.st[1].down);
    cr_expect_eq(t.st[1].hc_fail, 0);
    cr_expect_eq(loop.timers.len, 0);
    fy_loop_destroy(&loop);
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

struct watch {
    struct fy_timer timer;
    struct fy_loop *loop;
    struct fy_health_checker *hc;
    int rounds;
};

/* Quits the loop once every target's probe waits for its status line (or after ~5 s). */
static void on_watch(struct fy_timer *timer)
{
    struct watch *w = container_of(timer, struct watch, timer);
    bool all = true;
    for (uint32_t i = 0; i < w->hc->ntargets; i++)
        all = all && w->hc->targets[i].phase == HC_READING;
    if (all || ++w->rounds > 1000) {
        fy_loop_quit(w->loop);
        return;
    }
    fy_loop_timer_set(w->loop, timer, 5);
}

Test(health, stop_with_probes_in_flight_leaves_nothing)
{
    /* A listener that never accepts: the kernel completes the connects from its backlog and
     * takes the requests, no answer ever comes, so the probes stay in flight. */
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(lfd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    cr_assert_eq(listen(lfd, 16), 0);
    socklen_t len = sizeof(sin);
    cr_assert_eq(getsockname(lfd, (struct sockaddr *)&sin, &len), 0);

    struct tconf t;
    tconf_init(&t, 3, 2, 2);
    t.g.health.interval = 10000;
    t.g.health.timeout = 9000;
    for (uint32_t i = 0; i < 3; i++) {
        memcpy(&t.sv[i].addr.ss, &sin, sizeof(sin));
        t.sv[i].addr.len = sizeof(sin);
    }
    struct fy_loop loop;
    cr_assert_eq(fy_loop_init(&loop), 0);
    int before = count_fds();
    struct fy_health_checker *hc = fy_health_start(&loop, &t.c);
    cr_assert_not_null(hc);
    cr_assert_eq(hc->ntargets, 3);
    struct watch w = {.loop = &loop, .hc = hc};
    fy_timer_init(&w.timer, on_watch);
    fy_loop_timer_set(&loop, &w.timer, 5);
    fy_loop_run(&loop);
    for (uint32_t i = 0; i < 3; i++)
        cr_assert_eq(hc->targets[i].phase, HC_READING, "probe %u in flight", i);
    cr_expect_eq(count_fds(), before + 3, "one connection per probe");
    fy_health_stop(hc);
    cr_expect_eq(count_fds(), before, "every probe connection closed");
    cr_expect_eq(loop.timers.len, 0, "no timer left in the loop");
    cr_expect_null(loop.rq_head, "no task left queued");
    for (uint32_t i = 0; i < 3; i++)
        cr_expect(!t.st[i].down && t.st[i].hc_fail == 0, "an aborted probe is not counted");
    fy_loop_destroy(&loop);
    close(lfd);
}
