/* Unit tests for src/filters/hdr_rules.c: ordered set/remove rules and the token mask. */
#include <criterion/criterion.h>
#include <string.h>

#include "filters/hdr_rules.h"

#define SET(n, v)                                                                                  \
    {                                                                                              \
        (char *)(n), (char *)(v), sizeof(n) - 1, sizeof(v) - 1, NULL                               \
    }
#define DEL(n)                                                                                     \
    {                                                                                              \
        (char *)(n), NULL, sizeof(n) - 1, 0, NULL                                                  \
    }

static void add(struct fy_msg *m, const char *name, const char *value)
{
    cr_assert_eq(fy_msg_add(m, name, (uint32_t)strlen(name), value, (uint32_t)strlen(value),
                            fy_token_lookup(name, strlen(name))),
                 0);
}

static int count(struct fy_msg *m, const char *name)
{
    int n = 0;
    for (uint32_t i = 0; i < m->nhdrs; i++)
        n += !m->hdrs[i].removed &&
             fy_name_eq(m->hdrs[i].name, m->hdrs[i].name_len, name, strlen(name));
    return n;
}

static bool has_value(struct fy_msg *m, const char *name, const char *value)
{
    struct fy_hdr *h = fy_msg_find(m, name, (uint32_t)strlen(name));
    return h && h->value_len == strlen(value) && memcmp(h->value, value, h->value_len) == 0;
}

Test(hdr_rules, empty_rules_noop)
{
    struct fy_header_rules rules = {NULL, 0};
    struct fy_msg m;
    fy_msg_init(&m);
    add(&m, "A", "1");
    cr_assert_eq(fy_hdr_rules_apply(&rules, &m), 0);
    cr_assert(has_value(&m, "A", "1"));
    cr_assert_eq(fy_hdr_rules_token_mask(&rules), 0);
    fy_msg_free(&m);
}

Test(hdr_rules, set_replaces_every_instance)
{
    struct fy_header_rule items[] = {SET("X-Env", "prod")};
    struct fy_header_rules rules = {items, 1};
    struct fy_msg m;
    fy_msg_init(&m);
    add(&m, "x-env", "a");
    add(&m, "Other", "o");
    add(&m, "X-ENV", "b");
    cr_assert_eq(fy_hdr_rules_apply(&rules, &m), 0);
    cr_assert_eq(count(&m, "X-Env"), 1);
    cr_assert(has_value(&m, "x-env", "prod"));
    cr_assert(has_value(&m, "Other", "o"));
    fy_msg_free(&m);
}

Test(hdr_rules, remove_all_instances_and_absent_ok)
{
    struct fy_header_rule items[] = {DEL("Server"), DEL("X-Absent")};
    struct fy_header_rules rules = {items, 2};
    struct fy_msg m;
    fy_msg_init(&m);
    add(&m, "Server", "a");
    add(&m, "server", "b");
    add(&m, "Date", "d");
    cr_assert_eq(fy_hdr_rules_apply(&rules, &m), 0);
    cr_assert_eq(count(&m, "Server"), 0);
    cr_assert_eq(count(&m, "Date"), 1);
    fy_msg_free(&m);
}

Test(hdr_rules, order_set_then_remove)
{
    struct fy_header_rule items[] = {SET("X-A", "1"), DEL("x-a")};
    struct fy_header_rules rules = {items, 2};
    struct fy_msg m;
    fy_msg_init(&m);
    add(&m, "X-A", "orig");
    cr_assert_eq(fy_hdr_rules_apply(&rules, &m), 0);
    cr_assert_eq(count(&m, "X-A"), 0);
    fy_msg_free(&m);
}

Test(hdr_rules, order_remove_then_set)
{
    struct fy_header_rule items[] = {DEL("x-a"), SET("X-A", "2")};
    struct fy_header_rules rules = {items, 2};
    struct fy_msg m;
    fy_msg_init(&m);
    add(&m, "X-A", "orig");
    cr_assert_eq(fy_hdr_rules_apply(&rules, &m), 0);
    cr_assert_eq(count(&m, "X-A"), 1);
    cr_assert(has_value(&m, "X-A", "2"));
    fy_msg_free(&m);
}

Test(hdr_rules, set_twice_last_wins)
{
    struct fy_header_rule items[] = {SET("X-A", "1"), SET("x-a", "2")};
    struct fy_header_rules rules = {items, 2};
    struct fy_msg m;
    fy_msg_init(&m);
    cr_assert_eq(fy_hdr_rules_apply(&rules, &m), 0);
    cr_assert_eq(count(&m, "X-A"), 1);
    cr_assert(has_value(&m, "X-A", "2"));
    fy_msg_free(&m);
}

Test(hdr_rules, set_well_known_gets_token)
{
    struct fy_header_rule items[] = {SET("Host", "backend.local"), SET("Via", "")};
    struct fy_header_rules rules = {items, 2};
    struct fy_msg m;
    fy_msg_init(&m);
    add(&m, "host", "client.example");
    cr_assert_eq(fy_hdr_rules_apply(&rules, &m), 0);
    struct fy_hdr *h = fy_msg_find_tok(&m, FY_TOK_HOST);
    cr_assert_not_null(h);
    cr_assert_eq(h->value_len, 13);
    cr_assert_arr_eq(h->value, "backend.local", 13);
    h = fy_msg_find_tok(&m, FY_TOK_VIA);
    cr_assert_not_null(h);
    cr_assert_eq(h->value_len, 0);
    fy_msg_free(&m);
}

Test(hdr_rules, token_mask)
{
    struct fy_header_rule items[] = {SET("HOST", "h"), DEL("x-forwarded-for"), SET("X-Custom", "c"),
                                     DEL("Via"), SET("x-forwarded-proto", "https")};
    struct fy_header_rules rules = {items, 5};
    fy_tokmask want = fy_tokmask_bit(FY_TOK_HOST) | fy_tokmask_bit(FY_TOK_X_FORWARDED_FOR) |
                      fy_tokmask_bit(FY_TOK_VIA) | fy_tokmask_bit(FY_TOK_X_FORWARDED_PROTO);
    fy_tokmask got = fy_hdr_rules_token_mask(&rules);
    cr_assert_eq(got, want);
    cr_assert(fy_tokmask_has(got, FY_TOK_HOST));
    cr_assert(fy_tokmask_has(got, FY_TOK_VIA));
    cr_assert_not(fy_tokmask_has(got, FY_TOK_X_FORWARDED_HOST));
    cr_assert_not(fy_tokmask_has(got, FY_TOK_OTHER));
}
