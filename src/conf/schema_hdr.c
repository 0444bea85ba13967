/*
 * A route's header rules: request-headers / response-headers { set, add, remove, always } and
 * respond's headers:, compiled into struct fy_hrules. Whatever the order of the keys in the file,
 * the list is removals, then sets, then adds (so `remove: [X]` with `add: {X: 1}` leaves one X).
 * The fields ferry writes itself are refused as in the global rules: message framing and
 * hop-by-hop fields, and on requests Host (the route's host: key owns it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/schema.h"
#include "conf/template.h"

bool fy_sc_header_value_ok(const struct fy_template *t)
{
    for (uint32_t i = 0; i < t->nsegs; i++) {
        if (t->segs[i].var != FY_TV_LITERAL)
            continue;
        for (uint32_t k = 0; k < t->segs[i].len; k++) {
            unsigned char c = (unsigned char)t->segs[i].text[k];
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return false;
        }
    }
    return true;
}

/* Checks and stores a field name; false (reported) when ferry cannot let a rule touch it. */
static bool take_name(struct fy_yaml_loader *l, struct fy_hrules *r, struct fy_hrule *h,
                      const yaml_node_t *k, const char *what, bool response)
{
    char *name = fy_sc_string(l, k, what);
    if (!name)
        return false;
    h->name = name;
    h->name_len = (uint32_t)strlen(name);
    if (!fy_sc_is_token(name, h->name_len)) {
        fy_yaml_report(l, k->start_mark, "%s: '%s' is not a valid header field name", what, name);
        return false;
    }
    h->tok = fy_token_lookup(name, h->name_len);
    if (h->tok == FY_TOK_CONTENT_LENGTH || (fy_token_flags(h->tok) & FY_TOKF_HOP)) {
        fy_yaml_report(l, k->start_mark,
                       "%s: %s is managed by ferry (message framing and connection fields "
                       "cannot be set or removed)",
                       what, name);
        return false;
    }
    if (!response && h->tok == FY_TOK_HOST) {
        fy_yaml_report(l, k->start_mark,
                       "%s: Host is managed by the route's host: key (host: VALUE sends "
                       "another, host: preserve keeps the client's)",
                       what);
        return false;
    }
    if (h->tok != FY_TOK_OTHER)
        r->mask |= fy_tokmask_bit(h->tok);
    return true;
}

/* The pairs of a { Name: value } mapping as rules of op `op`. */
static void load_pairs(struct fy_yaml_loader *l, struct fy_hrules *r, const yaml_node_t *v,
                       enum fy_rule_op op, const char *what, bool response, const fy_regex *re)
{
    if (v->type != YAML_MAPPING_NODE) {
        fy_yaml_report(l, v->start_mark,
                       "%s expects a mapping of field names to values ({ X-Name: value }), got %s",
                       what, fy_yaml_node_kind(v));
        return;
    }
    size_t n = fy_sc_npairs(v);
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *val;
        const yaml_node_t *k = fy_sc_pair(l, v, i, &val);
        struct fy_hrule *h = &r->items[r->n++];
        h->op = op;
        if (!take_name(l, r, h, k, what, response))
            continue;
        char vwhat[160];
        snprintf(vwhat, sizeof(vwhat), "%s %s", what, h->name);
        if (fy_sc_template(l, val, vwhat, re ? FY_TPL_CAPTURES : 0, &h->value) < 0)
            continue;
        fy_sc_check_captures(l, val, vwhat, &h->value, re);
        if (!fy_sc_header_value_ok(&h->value))
            fy_yaml_report(l, val->start_mark,
                           "%s: a header value cannot contain CR, LF or other control characters",
                           vwhat);
    }
}

static size_t count(const yaml_node_t *v, bool list)
{
    if (!v)
        return 0;
    if (list)
        return v->type == YAML_SCALAR_NODE ? 1
               : v->type == YAML_SEQUENCE_NODE
                   ? (size_t)(v->data.sequence.items.top - v->data.sequence.items.start)
                   : 0;
    return fy_sc_npairs(v);
}

static bool alloc_rules(struct fy_yaml_loader *l, struct fy_hrules *r, const yaml_node_t *v,
                        size_t n)
{
    if (n == 0)
        return true;
    r->items = calloc(n, sizeof(*r->items));
    if (!r->items)
        fy_yaml_report(l, v->start_mark, "out of memory");
    return r->items != NULL;
}

static const char *const req_keys[] = {"set", "add", "remove"};
static const char *const resp_keys[] = {"set", "add", "remove", "always"};

void fy_schema_load_hrules(struct fy_yaml_loader *l, struct fy_hrules *r, const yaml_node_t *v,
                           const char *what, bool response, const fy_regex *re)
{
    if (!fy_sc_keys(l, v, what, response ? resp_keys : req_keys, response ? 4 : 3))
        return;
    const yaml_node_t *set = fy_sc_get(l, v, "set"), *add = fy_sc_get(l, v, "add"),
                      *rm = fy_sc_get(l, v, "remove"), *always = fy_sc_get(l, v, "always");
    if (set && fy_sc_is_null(set))
        set = NULL;
    if (add && fy_sc_is_null(add))
        add = NULL;
    if (rm && fy_sc_is_null(rm))
        rm = NULL;
    if (!alloc_rules(l, r, v, count(set, false) + count(add, false) + count(rm, true)))
        return;
    char sub[64];
    if (rm) {
        snprintf(sub, sizeof(sub), "%s remove", what);
        size_t n = fy_sc_nitems(l, rm, sub);
        for (size_t i = 0; i < n; i++) {
            struct fy_hrule *h = &r->items[r->n++];
            h->op = FY_RULE_REMOVE;
            take_name(l, r, h, fy_sc_item(l, rm, i), sub, response);
        }
    }
    if (set) {
        snprintf(sub, sizeof(sub), "%s set", what);
        load_pairs(l, r, set, FY_RULE_SET, sub, response, re);
    }
    if (add) {
        snprintf(sub, sizeof(sub), "%s add", what);
        load_pairs(l, r, add, FY_RULE_ADD, sub, response, re);
    }
    if (always)
        fy_sc_bool(l, always, "always", &r->always);
}

void fy_schema_load_hsets(struct fy_yaml_loader *l, struct fy_hrules *r, const yaml_node_t *v,
                          const char *what, bool response, const fy_regex *re)
{
    if (!alloc_rules(l, r, v, count(v, false)))
        return;
    load_pairs(l, r, v, FY_RULE_SET, what, response, re);
}

void fy_hrules_free(struct fy_hrules *r)
{
    for (uint32_t i = 0; i < r->n; i++) {
        free(r->items[i].name);
        fy_template_free(&r->items[i].value);
    }
    free(r->items);
    memset(r, 0, sizeof(*r));
}
