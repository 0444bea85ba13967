/* Header set/remove rules; see hdr_rules.h. */
#include "filters/hdr_rules.h"

#include "http/tokens.h"

int fy_hdr_rules_apply(const struct fy_header_rules *rules, struct fy_msg *m)
{
    for (uint32_t i = 0; i < rules->n; i++) {
        const struct fy_header_rule *r = &rules->items[i];
        if (!r->value)
            fy_msg_remove(m, r->name, r->name_len);
        else if (fy_msg_set(m, r->name, r->name_len, r->value, r->value_len) < 0)
            return -1;
    }
    return 0;
}

fy_tokmask fy_hdr_rules_token_mask(const struct fy_header_rules *rules)
{
    fy_tokmask mask = 0;
    for (uint32_t i = 0; i < rules->n; i++) {
        enum fy_token t = fy_token_lookup(rules->items[i].name, rules->items[i].name_len);
        if (t != FY_TOK_OTHER)
            mask |= fy_tokmask_bit(t);
    }
    return mask;
}
