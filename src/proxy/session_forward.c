/*
 * The forward proxy's part of the session (see session.h, docs/forward-proxy.md): a forward
 * listener's last route sends each request to its own destination (the absolute-form URL's, a
 * CONNECT's, or an intercepted tunnel's) instead of a group's server. ROUTE checks the name
 * against the listener's deny:/allow: rules; CONNECT resolves the name with the worker's
 * asynchronous resolver, checks each address before using it (the address rules, and that it
 * is not ferry itself), and takes a connection from the worker's destination pools; a CONNECT
 * request becomes a tunnel once TCP is up.
 */
#include "proxy/session_priv.h"

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "filters/acl.h"
#include "net/tls.h"
#include "proxy/fwd_pools.h"

/* "http://host:port", "https://host:port" or "host:port" (CONNECT), for log lines. */
void sess_forward_describe(const struct fy_session *s, char *out, size_t len)
{
    const struct fy_fwd_target *f = &s->fwd;
    bool v6 = memchr(f->host, ':', f->host_len) != NULL;
    snprintf(out, len, "%s%s%.*s%s:%u",
             f->connect ? ""
             : f->tls   ? "https://"
                        : "http://",
             v6 ? "[" : "", (int)f->host_len, f->host, v6 ? "]" : "", f->port);
}

bool sess_forward_route(struct fy_session *s)
{
    const struct fy_forward_conf *fc = s->listener->forward;
    s->x.forward = true;
    if (!s->has_fwd) {
        sess_slog(s, FY_LOG_INFO, "a forward proxy request without an absolute URL");
        sess_fail_exchange(s, 400,
                           "this is a forward proxy: ask for an absolute URL "
                           "(GET http://host/path) or CONNECT host:port");
        return false;
    }
    char why[200];
    if (fc->dests) {
        s->fwd_verdict = fy_dest_policy_check_name(fc->dests, s->fwd.host, s->fwd.host_len,
                                                   s->fwd.port, why, sizeof(why));
        if (s->fwd_verdict == FY_DEST_DENIED) {
            sess_slog(s, FY_LOG_INFO, "destination refused: %s", why);
            sess_fail_exchange(s, 403, why);
            return false;
        }
        /* Inside an intercepted tunnel the client's SNI names the host it means (and is what
         * the destination is asked for): a name the rules deny is refused there too, whatever
         * the CONNECT named, or CONNECT to an allowed address would front for it. */
        const char *sni = s->fwd.sni;
        if (sni && *sni &&
            fy_dest_policy_check_name(fc->dests, sni, strlen(sni), s->fwd.port, why, sizeof(why)) ==
                FY_DEST_DENIED) {
            sess_slog(s, FY_LOG_INFO, "destination refused: the SNI %s: %s", sni, why);
            sess_fail_exchange(s, 403, why);
            return false;
        }
    }
    return true;
}

/* Is addr one of ferry's own listening sockets? Then forwarding there would loop. A wildcard
 * listener (0.0.0.0, ::) is reached through loopback or the unspecified address. */
static bool is_self(const struct fy_session *s, const struct fy_addr *addr)
{
    const struct fy_conf *conf = s->gen->conf;
    uint16_t port = fy_addr_port((const struct sockaddr *)&addr->ss);
    for (uint32_t i = 0; i < conf->nlisteners; i++) {
        const struct fy_listener_conf *l = &conf->listeners[i];
        for (uint32_t k = 0; k < l->naddrs; k++) {
            const struct fy_addr *la = &l->addrs[k];
            if (fy_addr_port((const struct sockaddr *)&la->ss) != port)
                continue;
            const struct sockaddr *ls = (const struct sockaddr *)&la->ss;
            const struct sockaddr *as = (const struct sockaddr *)&addr->ss;
            if (fy_addr_same_host(ls, as))
                return true;
            /* A wildcard listener is reached through every address of the machine. */
            if (fy_addr_is_any(ls) && fy_addr_is_local(as))
                return true;
        }
    }
    return false;
}

/* Checks addrs[addr_i] (and the ones after it, until one passes) and takes its pool. */
bool sess_forward_next_addr(struct fy_session *s)
{
    const struct fy_forward_conf *fc = s->listener->forward;
    char why[200] = "";
    for (; s->addr_i < s->naddrs; s->addr_i++) {
        const struct fy_addr *a = &s->addrs[s->addr_i];
        char text[80];
        fy_addr_format((const struct sockaddr *)&a->ss, text, sizeof(text));
        if (is_self(s, a)) {
            snprintf(why, sizeof(why), "%s is this proxy itself (a forwarding loop)", text);
            continue;
        }
        if (fy_addr_is_unspecified((const struct sockaddr *)&a->ss)) {
            /* 0.0.0.0 and :: name no host, and connecting to them reaches this machine: a way
             * around every deny rule for loopback (Squid's to_localhost has them too). */
            snprintf(why, sizeof(why), "%s is not a destination (the unspecified address)", text);
            continue;
        }
        if (fc->dests && !fy_dest_policy_check_addr(fc->dests, (enum fy_dest_verdict)s->fwd_verdict,
                                                    (const struct sockaddr *)&a->ss, s->fwd.port,
                                                    why, sizeof(why)))
            continue;
        if (s->fwd_pool_held) {
            fy_fwd_pools_release(s->w->fwd_pools, s->pool);
            s->fwd_pool_held = false;
        }
        struct fy_pool_key key = {.addr = a, .tls = s->up_tls, .tls_name = s->up_tls_name};
        s->pool = fy_fwd_pools_get(s->w->fwd_pools, &key);
        if (!s->pool) {
            sess_fail_exchange(s, 500, "out of memory");
            return false;
        }
        s->fwd_pool_held = true;
        return true;
    }
    sess_slog(s, FY_LOG_INFO, "destination refused: %s", why);
    sess_fail_exchange(s, 403, why);
    return false;
}

int sess_forward_select(struct fy_session *s)
{
    struct fy_worker *w = s->w;
    if (!s->fwd_resolved) {
        if (!w->dns) {
            sess_slog(s, FY_LOG_ERROR, "no resolver: c-ares could not start in this worker");
            sess_fail_exchange(s, 502, "ferry cannot resolve names (no resolver)");
            return -1;
        }
        if (!s->dns_started) {
            s->dns_started = true;
            int rc =
                fy_dns_lookup(w->dns, &s->dns, s->fwd.host, s->fwd.host_len, s->fwd.port, &s->task);
            if (rc == FY_AGAIN) {
                s->timed_out = false;
                fy_loop_timer_set(&w->loop, &s->timer, s->connect_timeout);
                return 0;
            }
        } else if (fy_dns_req_pending(&s->dns)) {
            if (!s->timed_out)
                return 0;
            s->timed_out = false;
            char dest[300];
            sess_forward_describe(s, dest, sizeof(dest));
            sess_slog(s, FY_LOG_WARN, "resolving %.*s took longer than %llu ms",
                      (int)s->fwd.host_len, s->fwd.host, (unsigned long long)s->connect_timeout);
            sess_fail_exchange(s, 504, "resolving the destination's name timed out");
            return -1;
        }
        fy_loop_timer_stop(&s->timer);
        s->fwd_resolved = true;
        if (s->dns.status < 0) {
            sess_slog(s, FY_LOG_WARN, "cannot resolve %.*s: %s", (int)s->fwd.host_len, s->fwd.host,
                      s->dns.err);
            char text[240];
            snprintf(text, sizeof(text), "cannot resolve %.*s: %s",
                     s->fwd.host_len > 100 ? 100 : (int)s->fwd.host_len, s->fwd.host, s->dns.err);
            sess_fail_exchange(s, 502, text);
            return -1;
        }
        s->addrs = s->dns.addrs;
        s->naddrs = s->dns.naddrs;
        s->addr_i = 0;
        s->up_tls = s->fwd.tls ? s->listener->forward->tls : NULL;
        s->up_tls_name = s->fwd.sni ? s->fwd.sni : s->fwd_host;
        s->attempts = 0;
        if (sess_run_hooks(s, HP_UPSTREAM_SELECT, &s->req) != FY_HOOK_CONTINUE) {
            sess_fail_exchange(s, 500, "internal error in an upstream_select hook");
            return -1;
        }
    }
    return sess_forward_next_addr(s) ? 1 : -1;
}

void sess_forward_tunnel(struct fy_session *s)
{
    struct fy_upconn *up = s->up;
    if (!up->in && !(up->in = fy_buf_get(FY_BUF_SIZE))) {
        sess_fail_exchange(s, 500, "out of memory");
        return;
    }
    s->status = 200;
    s->up_head_us = s->w->loop.now_us;
    if (!s->fwd.answered) {
        struct fy_msg *resp = &s->resp;
        fy_msg_init(resp);
        resp->status = 200;
        resp->version_minor = 1;
        resp->reason = "Connection established";
        resp->reason_len = 22;
        int rc = s->ops->send_head(s->ds, resp);
        if (rc < 0) {
            sess_client_failed(s, 0);
            return;
        }
    }
    s->head_sent = true;
    s->req_done = true;
    fy_uh1_switch_to_tunnel(up);
    s->state = S_TUNNEL;
    s->timed_out = false;
    fy_loop_timer_set(&s->w->loop, &s->timer, s->upstream_timeout);
    fy_loop_queue(&s->w->loop, &s->task);
}

void sess_forward_release(struct fy_session *s)
{
    fy_dns_req_release(&s->dns);
    if (s->fwd_pool_held) {
        fy_fwd_pools_release(s->w->fwd_pools, s->pool);
        s->fwd_pool_held = false;
        s->pool = NULL;
    }
}
