/* Header set/add/remove rules; see hdr_rules.h. */
#include "filters/hdr_rules.h"

#include "http/tokens.h"

static int value_of(const struct fy_hrule *r, const struct fy_tctx *vars, fy_scratch_fn *alloc,
                    void *actx, const char **v, uint32_t *vlen)
{
    if (r->value.constant) {
        *v = r->value.constant;
        *vlen = r->value.constant_len;
        return 0;
    }
    char *p = alloc(actx, fy_template_max_len(&r->value, vars) + 1);
    if (!p)
        return -1;
    *vlen = (uint32_t)fy_template_render(&r->value, vars, p);
    fy_field_value_sanitize(p, *vlen);
    *v = p;
    return 0;
}

void fy_field_value_sanitize(char *p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (!fy_is_field_byte((unsigned char)p[i]))
            p[i] = ' ';
}

int fy_hrules_apply(const struct fy_hrules *rules, struct fy_msg *m, const struct fy_tctx *vars,
                    fy_scratch_fn *alloc, void *alloc_ctx)
{
    for (uint32_t i = 0; i < rules->n; i++) {
        const struct fy_hrule *r = &rules->items[i];
        if (r->op == FY_RULE_REMOVE) {
            fy_msg_remove(m, r->name, r->name_len);
            continue;
        }
        const char *v;
        uint32_t vlen;
        if (value_of(r, vars, alloc, alloc_ctx, &v, &vlen) < 0)
            return -1;
        int rc;
        if (r->op == FY_RULE_ADD)
            rc = fy_msg_add(m, r->name, r->name_len, v, vlen, r->tok);
        else if (r->tok != FY_TOK_OTHER)
            rc = fy_msg_set_tok(m, r->tok, r->name, r->name_len, v, vlen);
        else
            rc = fy_msg_set(m, r->name, r->name_len, v, vlen);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static char *exchange_alloc(void *ctx, size_t n)
{
    return fy_exchange_alloc(ctx, n);
}

static enum fy_hook_result apply_both(struct fy_exchange *x, struct fy_msg *m,
                                      const struct fy_hrules *global, const struct fy_hrules *route)
{
    struct fy_tctx v;
    fy_exchange_vars(x, &v);
    if (fy_hrules_apply(global, m, &v, exchange_alloc, x) < 0 ||
        fy_hrules_apply(route, m, &v, exchange_alloc, x) < 0)
        return FY_HOOK_ERROR;
    return FY_HOOK_CONTINUE;
}

static enum fy_hook_result on_upstream_request(struct fy_exchange *x, struct fy_msg *m)
{
    return apply_both(x, m, &x->conf->global_request_rules, &x->route->request_rules);
}

static enum fy_hook_result on_response(struct fy_exchange *x, struct fy_msg *m)
{
    if (!x->route)
        return FY_HOOK_CONTINUE;
    return apply_both(x, m, &x->conf->global_response_rules, &x->route->response_rules);
}

const struct fy_hook fy_hdr_rules_hook = {
    .name = "header-rules",
    .upstream_request = on_upstream_request,
    .response = on_response,
};
