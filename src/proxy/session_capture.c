/*
 * The session's part of capture (docs/capture.md): when the route (or else the listener) has a
 * capture:, the exchange fills a struct fy_flow as it runs: the request head as the client sent
 * it (once routed, before ferry's rules), its body and the response's as they stream (up to
 * max-body each, never more), the response head as sent to the client, addresses, TLS, timing
 * points and, for ferry's own errors, the reason. At the end the flow goes to the capture
 * writer (proxy/capture.h), which never makes the worker wait.
 */
#include "proxy/session_priv.h"

#include <time.h>

#include "http/h1_writer.h"
#include "http/status.h"
#include "net/tls.h"
#include "proxy/capture.h"
#include "proxy/flow.h"

void sess_capture_begin(struct fy_session *s)
{
    const struct fy_capture *cap =
        s->route && s->route->capture ? s->route->capture : s->listener->capture;
    unsigned verbose = s->w->alog.verbose; /* the pretty log shows heads (1) and bodies (2) */
    if ((!cap && !verbose) || s->fwd.connect)
        return; /* a tunnel's bytes are not an HTTP exchange */
    uint64_t max_body = cap ? fy_capture_max_body(cap) : 0;
    if (verbose >= 2 && max_body < FY_PRETTY_BODY_MAX)
        max_body = FY_PRETTY_BODY_MAX;
    struct fy_flow *f = fy_flow_new(max_body);
    if (!f)
        return; /* out of memory: this exchange goes unrecorded */
    s->flow = f;
    s->capture = (struct fy_capture *)cap;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t wall = (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
    uint64_t age = s->w->loop.now_us > s->start_us ? s->w->loop.now_us - s->start_us : 0;
    fy_flow_set_start(f, wall > age ? wall - age : wall, s->start_us);
    fy_flow_set_id(f, s->request_id, strlen(s->request_id));
    fy_flow_set_client(f, (const struct sockaddr *)&s->client);
    if (s->tls && s->client_sock)
        fy_flow_set_tls(f, s->tls_version, s->tls_cipher, fy_tls_server_name(s->client_sock));
    bool https = s->has_fwd ? s->fwd.tls : s->tls;
    fy_flow_set_request(f, &s->req, https ? "https" : "http", s->orig_host ? s->orig_host : "",
                        s->orig_host ? s->orig_host_len : 0);
}

void sess_capture_mark(struct fy_session *s, int point)
{
    if (s->flow)
        fy_flow_mark(s->flow, (enum fy_flow_point)point, s->w->loop.now_us);
}

void sess_capture_req_body(struct fy_session *s, const struct iovec *iov, int n)
{
    if (s->flow)
        fy_flow_req_body(s->flow, iov, n);
}

void sess_capture_response(struct fy_session *s, const struct fy_msg *m)
{
    if (s->w->alog.format == FY_ALOG_PRETTY) { /* the line shows the response's type */
        const struct fy_hdr *h = fy_msg_find((struct fy_msg *)m, "Content-Type", 12);
        size_t n = h ? h->value_len : 0;
        if (n >= sizeof(s->resp_ctype))
            n = sizeof(s->resp_ctype) - 1;
        memcpy(s->resp_ctype, h ? h->value : "", n);
        s->resp_ctype[n] = '\0';
    }
    if (s->flow)
        fy_flow_set_response(s->flow, m);
}

void sess_capture_resp_body(struct fy_session *s, const struct iovec *iov, int n)
{
    if (s->flow)
        fy_flow_resp_body(s->flow, iov, n);
}

void sess_capture_error(struct fy_session *s, int status, const char *text)
{
    strcpy(s->resp_ctype, "text/plain");
    if (!s->flow)
        return;
    fy_flow_set_error(s->flow, text);
    if (!s->flow->resp.set) {
        /* ferry's own error response, as the downstream writes it (client_h1's queue_error):
         * "STATUS REASON: text\n" in text/plain. */
        const char *reason = fy_http_reason(status);
        char body[320], clen[24];
        int blen =
            snprintf(body, sizeof(body), "%d %s: %s\n", status, *reason ? reason : "Unknown", text);
        if (blen < 0 || (size_t)blen >= sizeof(body))
            blen = (int)strlen(body);
        size_t cl = fy_u64_to_dec((uint64_t)blen, clen);
        struct fy_msg m;
        fy_msg_init(&m);
        m.status = (uint16_t)status;
        m.version_minor = 1;
        m.reason = reason;
        m.reason_len = (uint32_t)strlen(reason);
        fy_msg_add(&m, "Content-Type", 12, "text/plain; charset=utf-8", 25, FY_TOK_OTHER);
        fy_msg_add(&m, "Content-Length", 14, clen, (uint32_t)cl, FY_TOK_OTHER);
        fy_msg_add(&m, "Cache-Control", 13, "no-store", 8, FY_TOK_OTHER);
        fy_flow_set_response(s->flow, &m);
        fy_msg_free(&m);
        if (!s->is_head) {
            struct iovec iov = {body, (size_t)blen};
            fy_flow_resp_body(s->flow, &iov, 1);
        }
    }
}

bool sess_capture_wants_body(const struct fy_session *s)
{
    return s->flow && s->flow->resp_body.captured < s->flow->max_body;
}

void sess_capture_end(struct fy_session *s)
{
    struct fy_flow *f = s->flow;
    if (!f)
        return;
    s->flow = NULL;
    fy_flow_mark(f, FY_FLOW_END, s->w->loop.now_us);
    if (s->up_start_us && s->addrs && s->addr_i < s->naddrs)
        fy_flow_set_server(f, (const struct sockaddr *)&s->addrs[s->addr_i].ss);
    if (s->capture)
        fy_capture_submit(s->capture, (unsigned)s->w->id, f);
    else
        fy_flow_free(f); /* it was kept for the pretty log only */
}

void sess_capture_drop(struct fy_session *s)
{
    fy_flow_free(s->flow);
    s->flow = NULL;
}
