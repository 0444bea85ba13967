/* Unit tests for src/filters/hdr_rules.c: ordered set/add/remove rules with template values. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "conf/template.h"
#include "filters/hdr_rules.h"

/* A constant value, as the configuration compiles one without variables. */
static struct fy_hrule mk(enum fy_rule_op op, const char *name, const char *value)
{
    struct fy_hrule r = {.op = op, .name = (char *)name, .name_len = (uint32_t)strlen(name)};
    r.tok = fy_token_lookup(name, r.name_len);
    if (value) {
        r.value.constant = value;
        r.value.constant_len = (uint32_t)strlen(value);
    }
    return r;
}
#define SET(n, v) mk(FY_RULE_SET, n, v)
#define ADD(n, v) mk(FY_RULE_ADD, n, v)
#define DEL(n) mk(FY_RULE_REMOVE, n, NULL)

static char *arena_alloc(void *ctx, size_t n)
{
    (void)ctx;
    static char mem[4096];
    static size_t used;
    if (used + n > sizeof(mem))
        used = 0;
    char *p = mem + used;
    used += n;
    return p;
}

static int apply(struct fy_hrule *items, uint32_t n, struct fy_msg *m)
{
    struct fy_hrules rules = {.items = items, .n = n};
    struct fy_tctx vars = {0};
    return fy_hrules_apply(&rules, m, &vars, arena_alloc, NULL);
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
    struct fy_msg m;
    fy_msg_init(&m);
    add(&m, "A", "1");
    cr_assert_eq(apply(NULL, 0, &m), 0);
    cr_assert(has_value(&m, "A", "1"));
    fy_msg_free(&m);
}

Test(hdr_rules, set_replaces_every_instance)
{
    struct fy_hrule items[] = {SET("X-Env", "prod")};
    struct fy_msg m;
    fy_msg_init(&m);
    add(&m, "x-env", "a");
    add(&m, "Other", "o");
    add(&m, "X-ENV", "b");
    cr_assert_eq(apply(items, sizeof(items) / sizeof(items[0]), &m), 0);
    cr_assert_eq(count(&m, "X-Env"), 1);
    cr_assert(has_value(&m, "x-env", "prod"));
    cr_assert(has_value(&m, "Other", "o"));
    fy_msg_free(&m);
}

Test(hdr_rules, remove_all_instances_and_absent_ok)
{
    struct fy_hrule items[] = {DEL("Server"), DEL("X-Absent")};
    struct fy_msg m;
    fy_msg_init(&m);
    add(&m, "Server", "a");
    add(&m, "server", "b");
    add(&m, "Date", "d");
    cr_assert_eq(apply(items, sizeof(items) / sizeof(items[0]), &m), 0);
    cr_assert_eq(count(&m, "Server"), 0);
    cr_assert_eq(count(&m, "Date"), 1);
    fy_msg_free(&m);
}

Test(hdr_rules, order_set_then_remove)
{
    struct fy_hrule items[] = {SET("X-A", "1"), DEL("x-a")};
    struct fy_msg m;
    fy_msg_init(&m);
    add(&m, "X-A", "orig");
    cr_assert_eq(apply(items, sizeof(items) / sizeof(items[0]), &m), 0);
    cr_assert_eq(count(&m, "X-A"), 0);
    fy_msg_free(&m);
}

Test(hdr_rules, order_remove_then_set)
{
    struct fy_hrule items[] = {DEL("x-a"), SET("X-A", "2")};
    struct fy_msg m;
    fy_msg_init(&m);
    add(&m, "X-A", "orig");
    cr_assert_eq(apply(items, sizeof(items) / sizeof(items[0]), &m), 0);
    cr_assert_eq(count(&m, "X-A"), 1);
    cr_assert(has_value(&m, "X-A", "2"));
    fy_msg_free(&m);
}

Test(hdr_rules, set_twice_last_wins)
{
    struct fy_hrule items[] = {SET("X-A", "1"), SET("x-a", "2")};
    struct fy_msg m;
    fy_msg_init(&m);
    cr_assert_eq(apply(items, sizeof(items) / sizeof(items[0]), &m), 0);
    cr_assert_eq(count(&m, "X-A"), 1);
    cr_assert(has_value(&m, "X-A", "2"));
    fy_msg_free(&m);
}

Test(hdr_rules, set_well_known_gets_token)
{
    struct fy_hrule items[] = {SET("Host", "backend.local"), SET("Via", "")};
    struct fy_msg m;
    fy_msg_init(&m);
    add(&m, "host", "client.example");
    cr_assert_eq(apply(items, sizeof(items) / sizeof(items[0]), &m), 0);
    struct fy_hdr *h = fy_msg_find_tok(&m, FY_TOK_HOST);
    cr_assert_not_null(h);
    cr_assert_eq(h->value_len, 13);
    cr_assert_arr_eq(h->value, "backend.local", 13);
    h = fy_msg_find_tok(&m, FY_TOK_VIA);
    cr_assert_not_null(h);
    cr_assert_eq(h->value_len, 0);
    fy_msg_free(&m);
}

Test(hdr_rules, add_appends_without_replacing)
{
    struct fy_hrule items[] = {ADD("Vary", "Origin"), ADD("X-New", "n")};
    struct fy_msg m;
    fy_msg_init(&m);
    add(&m, "Vary", "Accept-Encoding");
    cr_assert_eq(apply(items, 2, &m), 0);
    cr_assert_eq(count(&m, "Vary"), 2);
    cr_assert(has_value(&m, "Vary", "Accept-Encoding")); /* the first one stays first */
    cr_assert(has_value(&m, "X-New", "n"));
    fy_msg_free(&m);
}

Test(hdr_rules, variables_are_rendered_per_request)
{
    struct fy_hrule r = mk(FY_RULE_SET, "X-Client", NULL);
    char err[200];
    cr_assert_eq(
        fy_template_compile(&r.value, "ip=$client_ip id=${request_id}", 0, NULL, err, sizeof(err)),
        0, "%s", err);
    struct fy_hrules rules = {.items = &r, .n = 1};
    struct fy_tctx vars = {
        .client_ip = "10.1.2.3", .client_ip_len = 8, .request_id = "abc", .request_id_len = 3};
    struct fy_msg m;
    fy_msg_init(&m);
    cr_assert_eq(fy_hrules_apply(&rules, &m, &vars, arena_alloc, NULL), 0);
    cr_assert(has_value(&m, "X-Client", "ip=10.1.2.3 id=abc"));
    fy_msg_free(&m);
    fy_template_free(&r.value);
}
