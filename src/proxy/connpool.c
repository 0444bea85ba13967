/* Per-worker upstream connection pool; see connpool.h. */
#include "proxy/connpool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/assert.h"
#include "core/macros.h"
#include "core/log.h"
#include "net/tls.h"

void fy_connpool_init(struct fy_connpool *p, struct fy_loop *loop, const struct fy_addr *addr,
                      const struct fy_h1r_limits *limits, uint32_t max_idle, uint64_t idle_ms)
{
    memset(p, 0, sizeof(*p));
    p->loop = loop;
    p->addr = *addr;
    p->limits = limits;
    p->max_idle = max_idle;
    p->idle_timeout_ms = idle_ms;
}

static void unlink_idle(struct fy_connpool *p, struct fy_upconn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        p->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        p->tail = c->prev;
    c->prev = c->next = NULL;
    c->idle = false;
    p->nidle--;
}

void fy_upconn_close(struct fy_upconn *c)
{
    struct fy_loop *loop = c->pool->loop;
    FY_ASSERT(!c->idle);
    fy_loop_timer_del(loop, &c->idle_timer);
    fy_loop_unqueue(loop, &c->idle_task);
    fy_sock_close(&c->sock);
    fy_h1r_free(&c->rd);
    fy_h1w_reset(&c->wr);
    fy_buf_put(c->in);
    free(c);
}

static void drop_idle(struct fy_upconn *c)
{
    unlink_idle(c->pool, c);
    fy_upconn_close(c);
}

/* Events on an idle connection: the upstream closed it or sent bytes nobody asked for. Either way
 * it can no longer carry a request safely. */
static void on_idle_event(struct fy_task *t)
{
    struct fy_upconn *c = container_of(t, struct fy_upconn, idle_task);
    if (!c->idle || !c->sock.rd_ready)
        return;
    char byte;
    ssize_t n = fy_sock_read(&c->sock, &byte, 1);
    if (n == FY_AGAIN)
        return;
    fy_debug("idle upstream connection closed by the upstream");
    drop_idle(c);
}

static void on_idle_timeout(struct fy_timer *t)
{
    struct fy_upconn *c = container_of(t, struct fy_upconn, idle_timer);
    if (c->idle)
        drop_idle(c);
}

void fy_connpool_close_all(struct fy_connpool *p)
{
    while (p->head)
        drop_idle(p->head);
}

/* Nothing arrived on an idle connection: no EOF, no byte nobody asked for. Only asks the socket
 * when an event came (rd_ready) and the idle task may not have looked yet: a request pipelined
 * behind the previous exchange can run before that task does, and a response the upstream sent
 * unasked (bytes after the last body, which a spliced body leaves in the socket) would then be
 * taken for the answer to the next request. */
static bool idle_clean(struct fy_upconn *c)
{
    if (!c->sock.rd_ready)
        return true;
    char byte;
    return fy_sock_read(&c->sock, &byte, 1) == FY_AGAIN;
}

struct fy_upconn *fy_connpool_get(struct fy_connpool *p, struct fy_task *owner)
{
    struct fy_upconn *c;
    while ((c = p->head)) {
        unlink_idle(p, c);
        fy_loop_timer_stop(&c->idle_timer);
        fy_loop_unqueue(p->loop, &c->idle_task);
        if (idle_clean(c))
            break;
        fy_debug("idle upstream connection closed by the upstream or sent unasked bytes");
        fy_upconn_close(c);
    }
    if (c)
        c->sock.owner = owner;
    return c;
}

struct fy_upconn *fy_connpool_connect(struct fy_connpool *p, struct fy_task *owner, int *err)
{
    struct fy_upconn *c = calloc(1, sizeof(*c));
    if (!c) {
        *err = -ENOMEM;
        return NULL;
    }
    c->pool = p;
    c->idle_task.fn = on_idle_event;
    fy_timer_init(&c->idle_timer, on_idle_timeout);
    fy_h1r_init(&c->rd, false, p->limits);
    fy_h1w_init(&c->wr);
    int fd = fy_sock_connect_start((const struct sockaddr *)&p->addr.ss, p->addr.len);
    if (fd < 0) {
        *err = fd;
        goto fail_conn;
    }
    int rc = fy_sock_open(&c->sock, p->loop, fd, owner); /* closes fd on failure */
    if (rc < 0) {
        *err = rc;
        goto fail_conn;
    }
    return c;

fail_conn:
    fy_h1r_free(&c->rd);
    free(c);
    return NULL;
}

void fy_connpool_put(struct fy_connpool *p, struct fy_upconn *c)
{
    FY_ASSERT(!c->idle);
    if (p->nidle >= p->max_idle || (c->in && fy_buf_len(c->in) > 0)) {
        fy_upconn_close(c);
        return;
    }
    /* Idle connections keep no I/O buffers (about 1.9 KB each remain: parser and queue state). */
    fy_buf_put(c->in);
    c->in = NULL;
    fy_h1w_reset(&c->wr);
    fy_h1r_next(&c->rd);
    c->sock.owner = &c->idle_task;
    c->idle = true;
    c->prev = NULL;
    c->next = p->head;
    if (p->head)
        p->head->prev = c;
    else
        p->tail = c;
    p->head = c;
    p->nidle++;
    fy_loop_timer_set(p->loop, &c->idle_timer, p->idle_timeout_ms);
    /* An EOF that arrived while the connection was busy must not be missed. */
    if (c->sock.rd_ready)
        fy_loop_queue(p->loop, &c->idle_task);
}

void fy_connpool_destroy(struct fy_connpool *p)
{
    fy_connpool_close_all(p);
    fy_tls_session_slot_free(p->tls_slot);
    free(p->tls_key);
    p->tls_slot = NULL;
    p->tls_key = NULL;
}

static void pool_free(struct fy_connpool *p)
{
    fy_connpool_destroy(p);
    free(p);
}

void fy_pool_key_text(const struct fy_pool_key *key, char *out, size_t len)
{
    out[0] = '\0';
    if (key->tls)
        snprintf(out, len, "%s|%s", key->tls_name ? key->tls_name : "", fy_tls_client_id(key->tls));
}

int fy_connpool_init_key(struct fy_connpool *p, struct fy_loop *loop, const struct fy_pool_key *key,
                         const char *key_text, const struct fy_h1r_limits *limits,
                         uint32_t max_idle, uint64_t idle_ms)
{
    fy_connpool_init(p, loop, key->addr, limits, max_idle, idle_ms);
    if (key->tls &&
        (!(p->tls_key = strdup(key_text)) || !(p->tls_slot = fy_tls_session_slot_new()))) {
        fy_connpool_destroy(p);
        return -1;
    }
    return 0;
}

struct fy_connpool *fy_pools_get(struct fy_pools *ps, struct fy_loop *loop,
                                 const struct fy_pool_key *key, const struct fy_h1r_limits *limits,
                                 uint32_t max_idle, uint64_t idle_ms)
{
    const struct fy_addr *addr = key->addr;
    char tls_key[1400];
    fy_pool_key_text(key, tls_key, sizeof(tls_key));
    for (uint32_t i = 0; i < ps->n; i++) {
        struct fy_connpool *p = ps->items[i];
        if (p->addr.len == addr->len && !memcmp(&p->addr.ss, &addr->ss, addr->len) &&
            !strcmp(p->tls_key ? p->tls_key : "", tls_key))
            return p;
    }
    if (ps->n == ps->cap) {
        uint32_t cap = ps->cap ? ps->cap * 2 : 8;
        struct fy_connpool **items = realloc(ps->items, cap * sizeof(*items));
        if (!items)
            return NULL;
        ps->items = items;
        ps->cap = cap;
    }
    struct fy_connpool *p = malloc(sizeof(*p));
    if (!p || fy_connpool_init_key(p, loop, key, tls_key, limits, max_idle, idle_ms) < 0) {
        free(p);
        return NULL;
    }
    ps->items[ps->n++] = p;
    return p;
}

void fy_pools_free(struct fy_pools *ps)
{
    for (uint32_t i = 0; i < ps->n; i++)
        pool_free(ps->items[i]);
    free(ps->items);
    memset(ps, 0, sizeof(*ps));
}

void fy_pools_prune(struct fy_pools *ps, bool (*keep)(const struct fy_connpool *p, void *ctx),
                    void *ctx)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < ps->n; i++) {
        struct fy_connpool *p = ps->items[i];
        if (keep(p, ctx)) {
            ps->items[n++] = p;
            continue;
        }
        pool_free(p);
    }
    ps->n = n;
}
