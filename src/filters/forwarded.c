/* Forwarding fields as hooks; see forwarded.h. */
#include "filters/forwarded.h"

#include <string.h>

/* Whether the header rules (global or the route's) own field t: then ferry's own value steps
 * aside, so `request-header: "Host: x"` means exactly x. */
static bool rules_own(const struct fy_hrules *route_rules, const struct fy_hrules *global,
                      enum fy_token t)
{
    return fy_tokmask_has(route_rules->mask | global->mask, t);
}

static bool request_rules_own(const struct fy_exchange *x, enum fy_token t)
{
    return rules_own(&x->route->request_rules, &x->conf->global_request_rules, t);
}

/*
 * Sets the list field `tok` to its current elements followed by `value`: several fields of one
 * name form one comma-separated list (RFC 9110 5.3), so all of them are joined, in order, with one
 * copy into exchange memory (linear in the total length, however many fields there are).
 */
static int append_to_list(struct fy_exchange *x, struct fy_msg *m, enum fy_token tok,
                          const char *name, uint32_t nlen, const char *value, uint32_t vlen)
{
    size_t total = vlen;
    uint32_t count = 0;
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        const struct fy_hdr *h = &m->hdrs[i];
        if (!h->removed && h->tok == tok) {
            total += h->value_len + 2;
            count++;
        }
    }
    if (count == 0)
        return fy_msg_set_tok(m, tok, name, nlen, value, vlen);
    char *p = fy_exchange_alloc(x, total), *out = p;
    if (!p)
        return -1;
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        const struct fy_hdr *h = &m->hdrs[i];
        if (h->removed || h->tok != tok)
            continue;
        memcpy(out, h->value, h->value_len);
        out += h->value_len;
        *out++ = ',';
        *out++ = ' ';
    }
    memcpy(out, value, vlen);
    return fy_msg_set_tok(m, tok, name, nlen, p, (uint32_t)total);
}

static int add_via(struct fy_exchange *x, struct fy_msg *m)
{
    return append_to_list(x, m, FY_TOK_VIA, "Via", 3, m->version_minor ? "1.1 ferry" : "1.0 ferry",
                          9);
}

static enum fy_hook_result on_upstream_request(struct fy_exchange *x, struct fy_msg *m)
{
    const struct fy_config *cfg = x->cfg;
    if (x->forward) /* a forward proxy tells the world nothing about its clients but Via */
        return cfg->via && !request_rules_own(x, FY_TOK_VIA) && add_via(x, m) < 0
                   ? FY_HOOK_ERROR
                   : FY_HOOK_CONTINUE;
    if (cfg->x_forwarded_for && !request_rules_own(x, FY_TOK_X_FORWARDED_FOR) &&
        append_to_list(x, m, FY_TOK_X_FORWARDED_FOR, "X-Forwarded-For", 15, x->client_ip,
                       x->client_ip_len) < 0)
        return FY_HOOK_ERROR;
    if (cfg->x_forwarded_proto && !request_rules_own(x, FY_TOK_X_FORWARDED_PROTO) &&
        fy_msg_set_tok(m, FY_TOK_X_FORWARDED_PROTO, "X-Forwarded-Proto", 17,
                       x->tls ? "https" : "http", x->tls ? 5 : 4) < 0)
        return FY_HOOK_ERROR;
    if (cfg->x_forwarded_host && !request_rules_own(x, FY_TOK_X_FORWARDED_HOST) && x->orig_host &&
        fy_msg_set_tok(m, FY_TOK_X_FORWARDED_HOST, "X-Forwarded-Host", 16, x->orig_host,
                       x->orig_host_len) < 0)
        return FY_HOOK_ERROR;
    if (cfg->via && !request_rules_own(x, FY_TOK_VIA) && add_via(x, m) < 0)
        return FY_HOOK_ERROR;
    return FY_HOOK_CONTINUE;
}

/* The Host of each attempt: a retry may go to a server with another name. */
static enum fy_hook_result on_upstream_select(struct fy_exchange *x, struct fy_msg *m)
{
    const struct fy_route *r = x->route;
    if (x->forward || request_rules_own(x, FY_TOK_HOST))
        return FY_HOOK_CONTINUE; /* forwarding: the Host of the URL asked for */
    const char *h = x->server->authority;
    uint32_t hl = (uint32_t)strlen(h);
    if (r->host_mode == FY_HOST_VALUE) {
        const struct fy_template *t = &r->host_value;
        if (t->constant) {
            h = t->constant;
            hl = t->constant_len;
        } else {
            struct fy_tctx v;
            fy_exchange_vars(x, &v);
            char *p = fy_exchange_alloc(x, fy_template_max_len(t, &v) + 1);
            if (!p)
                return FY_HOOK_ERROR;
            hl = (uint32_t)fy_template_render(t, &v, p);
            h = p;
        }
    } else if (r->host_mode == FY_HOST_PRESERVE && x->orig_host) {
        h = x->orig_host;
        hl = x->orig_host_len;
    }
    return fy_msg_set_tok(m, FY_TOK_HOST, "Host", 4, h, hl) < 0 ? FY_HOOK_ERROR : FY_HOOK_CONTINUE;
}

static enum fy_hook_result on_response(struct fy_exchange *x, struct fy_msg *m)
{
    /* Via names the proxies a message passed; ferry's own responses did not pass it. */
    if (!x->route || (!x->server && !x->forward) || !x->cfg->via ||
        rules_own(&x->route->response_rules, &x->conf->global_response_rules, FY_TOK_VIA))
        return FY_HOOK_CONTINUE;
    return add_via(x, m) < 0 ? FY_HOOK_ERROR : FY_HOOK_CONTINUE;
}

const struct fy_hook fy_forwarded_hook = {
    .name = "forwarded",
    .upstream_request = on_upstream_request,
    .upstream_select = on_upstream_select,
    .response = on_response,
};
