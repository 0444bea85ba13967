/* Unit tests for src/filters/acl.c: client CIDR lists, port sets, destination rules and the
 * two-stage destination policy. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "filters/acl.h"

/* The address as a sockaddr, in a ring of static buffers (a test uses a few at a time). */
static const struct sockaddr *SA(const char *ip)
{
    static struct sockaddr_storage ring[4];
    static unsigned next;
    struct sockaddr_storage *ss = &ring[next++ % 4];
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1)
        a4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1)
        a6->sin6_family = AF_INET6;
    else
        cr_assert_fail("test address %s", ip);
    return (const struct sockaddr *)ss;
}

static char err[256];

/* ---- CIDR lists ---- */

static void cidr_add(struct fy_cidr_list *l, const char *t)
{
    err[0] = 0;
    cr_assert_eq(fy_cidr_list_add(l, t, err, sizeof(err)), 0, "%s: %s", t, err);
}

static void cidr_refused(const char *t, const char *want)
{
    struct fy_cidr_list l = {0};
    err[0] = 0;
    cr_assert_eq(fy_cidr_list_add(&l, t, err, sizeof(err)), -1, "%s accepted", t);
    cr_assert_eq(l.n, 0);
    cr_assert(strstr(err, want), "%s: error '%s' lacks '%s'", t, err, want);
    fy_cidr_list_free(&l);
}

Test(cidr, parse_and_match)
{
    struct fy_cidr_list l = {0};
    cidr_add(&l, "10.0.0.0/8");
    cidr_add(&l, "192.168.1.7");
    cidr_add(&l, "2001:db8::/32");
    cidr_add(&l, "::1");
    cidr_add(&l, "172.16.0.0/12");
    cr_assert(fy_cidr_list_match(&l, SA("10.0.0.0")));
    cr_assert(fy_cidr_list_match(&l, SA("10.255.255.255")));
    cr_assert_not(fy_cidr_list_match(&l, SA("11.0.0.0")));
    cr_assert_not(fy_cidr_list_match(&l, SA("9.255.255.255")));
    cr_assert(fy_cidr_list_match(&l, SA("192.168.1.7")));
    cr_assert_not(fy_cidr_list_match(&l, SA("192.168.1.8")));
    cr_assert(fy_cidr_list_match(&l, SA("172.31.255.255")));
    cr_assert_not(fy_cidr_list_match(&l, SA("172.32.0.0")));
    cr_assert_not(fy_cidr_list_match(&l, SA("172.15.255.255")));
    cr_assert(fy_cidr_list_match(&l, SA("2001:db8:ffff::1")));
    cr_assert_not(fy_cidr_list_match(&l, SA("2001:db9::1")));
    cr_assert(fy_cidr_list_match(&l, SA("::1")));
    cr_assert_not(fy_cidr_list_match(&l, SA("::2")));
    /* A dual-stack listener's IPv4 client arrives as ::ffff:a.b.c.d. */
    cr_assert(fy_cidr_list_match(&l, SA("::ffff:10.1.2.3")));
    cr_assert_not(fy_cidr_list_match(&l, SA("::ffff:11.1.2.3")));
    /* Other families never match. */
    struct sockaddr un = {.sa_family = AF_UNIX};
    cr_assert_not(fy_cidr_list_match(&l, &un));
    fy_cidr_list_free(&l);
    cr_assert_eq(l.n, 0);
    cr_assert_null(l.items);
}

Test(cidr, prefix_edges)
{
    struct fy_cidr_list l = {0};
    cr_assert_not(fy_cidr_list_match(&l, SA("1.2.3.4")), "an empty list matches nothing");
    cidr_add(&l, "0.0.0.0/0");
    cr_assert(fy_cidr_list_match(&l, SA("1.2.3.4")));
    cr_assert_not(fy_cidr_list_match(&l, SA("2001:db8::1")), "an IPv4 /0 is not IPv6");
    fy_cidr_list_free(&l);
    cidr_add(&l, "::/0");
    cr_assert(fy_cidr_list_match(&l, SA("2001:db8::1")));
    cr_assert_not(fy_cidr_list_match(&l, SA("1.2.3.4")));
    fy_cidr_list_free(&l);
    cidr_add(&l, "10.1.2.128/25");
    cr_assert(fy_cidr_list_match(&l, SA("10.1.2.200")));
    cr_assert_not(fy_cidr_list_match(&l, SA("10.1.2.127")));
    cidr_add(&l, "fe80::/10");
    cr_assert(fy_cidr_list_match(&l, SA("febf::1")));
    cr_assert_not(fy_cidr_list_match(&l, SA("fec0::1")));
    fy_cidr_list_free(&l);
    /* An IPv4-mapped entry is the IPv4 network it names. */
    cidr_add(&l, "::ffff:10.0.0.0/104");
    cr_assert(fy_cidr_list_match(&l, SA("10.9.9.9")));
    cr_assert(fy_cidr_list_match(&l, SA("::ffff:10.9.9.9")));
    cr_assert_not(fy_cidr_list_match(&l, SA("11.9.9.9")));
    fy_cidr_list_free(&l);
}

Test(cidr, refused)
{
    cidr_refused("10.0.0.300", "expected an address or CIDR like 10.0.0.0/8, got 10.0.0.300");
    cidr_refused("10.1.2.3/8", "10.1.2.3 has bits set past the /8 prefix; write 10.0.0.0/8");
    cidr_refused("2001:db8::1/32", "write 2001:db8::/32");
    cidr_refused("10.0.0.0/33", "0 to 32");
    cidr_refused("::/129", "0 to 128");
    cidr_refused("10.0.0.0/", "prefix");
    cidr_refused("10.0.0.0/+8", "prefix");
    cidr_refused("10.0.0.0/08x", "prefix");
    cidr_refused("example.com", "expected an address");
    cidr_refused("", "empty");
    cidr_refused("10.0.0", "expected an address");
    cidr_refused("/8", "expected an address");
    char big[400];
    memset(big, '1', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    cidr_refused(big, "longer than 300 bytes");
}

Test(cidr, bounded_items)
{
    struct fy_cidr_list l = {0};
    char t[32];
    for (int i = 0; i < FY_ACL_MAX_ITEMS; i++) {
        snprintf(t, sizeof(t), "10.%d.%d.0/24", i / 256, i % 256);
        cidr_add(&l, t);
    }
    cr_assert_eq(fy_cidr_list_add(&l, "192.0.2.1", err, sizeof(err)), -1);
    cr_assert(strstr(err, "more than 4096 items"), "%s", err);
    cr_assert(fy_cidr_list_match(&l, SA("10.15.255.1")));
    cr_assert_not(fy_cidr_list_match(&l, SA("10.16.0.1")));
    fy_cidr_list_free(&l);
}

Test(cidr, private_default)
{
    struct fy_cidr_list l = {0};
    cr_assert_eq(fy_cidr_list_private(&l), 0);
    const char *in[] = {"127.0.0.1",      "127.255.0.1", "::1",     "10.2.3.4", "172.16.0.1",
                        "172.31.9.9",     "192.168.0.1", "fc00::1", "fd12::1",  "fe80::1",
                        "::ffff:10.0.0.1"};
    const char *out[] = {"8.8.8.8", "172.32.0.1", "192.169.0.1",   "2001:db8::1",
                         "fe00::1", "::2",        "::ffff:8.8.8.8"};
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
        cr_assert(fy_cidr_list_match(&l, SA(in[i])), "%s", in[i]);
    for (size_t i = 0; i < sizeof(out) / sizeof(out[0]); i++)
        cr_assert_not(fy_cidr_list_match(&l, SA(out[i])), "%s", out[i]);
    fy_cidr_list_free(&l);
}

/* ---- ports ---- */

Test(ports, add_match)
{
    struct fy_ports p = {0};
    cr_assert_not(fy_ports_match(&p, 443), "an empty set matches nothing");
    cr_assert_eq(fy_ports_add(&p, "443", err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(fy_ports_add(&p, "8000-8999", err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(fy_ports_add(&p, "65535", err, sizeof(err)), 0, "%s", err);
    cr_assert(fy_ports_match(&p, 443));
    cr_assert_not(fy_ports_match(&p, 444));
    cr_assert_not(fy_ports_match(&p, 80));
    cr_assert(fy_ports_match(&p, 8000));
    cr_assert(fy_ports_match(&p, 8999));
    cr_assert_not(fy_ports_match(&p, 7999));
    cr_assert_not(fy_ports_match(&p, 9000));
    cr_assert(fy_ports_match(&p, 65535));
    cr_assert_not(fy_ports_match(&p, 0));
    cr_assert_not(fy_ports_match(&p, 65536));
    fy_ports_free(&p);
    cr_assert_eq(fy_ports_add(&p, "*", err, sizeof(err)), 0, "%s", err);
    cr_assert(fy_ports_match(&p, 1));
    cr_assert(fy_ports_match(&p, 25));
    fy_ports_free(&p);
}

Test(ports, refused)
{
    const char *bad[] = {"0",     "65536", "abc",  "443-",     "-443", "1-2-3",
                         "99999", " 443",  "443 ", "00000443", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct fy_ports p = {0};
        cr_assert_eq(fy_ports_add(&p, bad[i], err, sizeof(err)), -1, "'%s' accepted", bad[i]);
        fy_ports_free(&p);
    }
    struct fy_ports p = {0};
    cr_assert_eq(fy_ports_add(&p, "9000-8000", err, sizeof(err)), -1);
    cr_assert(strstr(err, "write 8000-9000"), "%s", err);
    cr_assert_eq(fy_ports_add(&p, "x", err, sizeof(err)), -1);
    cr_assert(strstr(err, "expected a port (1 to 65535), a range like 8000-8999, or *, got x"),
              "%s", err);
    fy_ports_free(&p);
}

/* ---- destination rules ---- */

static void rules_of(struct fy_dest_rules *r, const char *const *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        err[0] = 0;
        cr_assert_eq(fy_dest_rules_add(r, items[i], err, sizeof(err)), 0, "%s: %s", items[i], err);
    }
}
#define RULES(r, ...)                                                                              \
    rules_of(r, (const char *const[]){__VA_ARGS__},                                                \
             sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

static enum fy_acl_verdict name(const struct fy_dest_rules *r, const char *host, unsigned port,
                                uint32_t *rule)
{
    return fy_dest_rules_check_name(r, host, strlen(host), port, rule);
}

Test(dest, name_patterns)
{
    struct fy_dest_rules r = {0};
    RULES(&r, "api.internal", "*.example.com", ".example.org", "Mixed.CASE.net:8443");
    uint32_t rule = 99;
    cr_assert_eq(name(&r, "api.internal", 80, &rule), FY_ACL_MATCH);
    cr_assert_eq(rule, 0);
    cr_assert_eq(name(&r, "API.Internal", 80, NULL), FY_ACL_MATCH);
    cr_assert_eq(name(&r, "api.internal.", 80, NULL), FY_ACL_MATCH, "trailing dot");
    cr_assert_eq(name(&r, "x.api.internal", 80, NULL), FY_ACL_NO_MATCH, "exact is exact");
    cr_assert_eq(name(&r, "api.internals", 80, NULL), FY_ACL_NO_MATCH);
    cr_assert_eq(name(&r, "pi.internal", 80, NULL), FY_ACL_NO_MATCH);
    /* *.example.com: subdomains only */
    cr_assert_eq(name(&r, "www.example.com", 443, &rule), FY_ACL_MATCH);
    cr_assert_eq(rule, 1);
    cr_assert_eq(name(&r, "a.b.c.example.com", 443, NULL), FY_ACL_MATCH);
    cr_assert_eq(name(&r, "example.com", 443, NULL), FY_ACL_NO_MATCH, "not the apex");
    cr_assert_eq(name(&r, "badexample.com", 443, NULL), FY_ACL_NO_MATCH, "label-aligned");
    cr_assert_eq(name(&r, "www.example.com.evil", 443, NULL), FY_ACL_NO_MATCH);
    cr_assert_eq(name(&r, "WWW.EXAMPLE.COM.", 443, NULL), FY_ACL_MATCH);
    /* .example.org: apex and subdomains */
    cr_assert_eq(name(&r, "example.org", 80, &rule), FY_ACL_MATCH);
    cr_assert_eq(rule, 2);
    cr_assert_eq(name(&r, "deep.sub.example.org", 80, NULL), FY_ACL_MATCH);
    cr_assert_eq(name(&r, "notexample.org", 80, NULL), FY_ACL_NO_MATCH);
    /* ports */
    cr_assert_eq(name(&r, "mixed.case.net", 8443, NULL), FY_ACL_MATCH);
    cr_assert_eq(name(&r, "mixed.case.net", 443, NULL), FY_ACL_NO_MATCH);
    /* No CIDR rule: names never need an address. */
    cr_assert_eq(name(&r, "other.test", 80, NULL), FY_ACL_NO_MATCH);
    cr_assert_eq(name(&r, "", 80, NULL), FY_ACL_NO_MATCH);
    cr_assert_eq(name(&r, ".", 80, NULL), FY_ACL_NO_MATCH);
    cr_assert_str_eq(fy_dest_rules_text(&r, 3), "Mixed.CASE.net:8443");
    fy_dest_rules_free(&r);
}

Test(dest, first_rule_wins_and_ports)
{
    struct fy_dest_rules r = {0};
    RULES(&r, "example.org:25", "*.example.org:8000-8999", ".example.org:587", "example.org:*",
          "*");
    uint32_t rule;
    cr_assert_eq(name(&r, "example.org", 25, &rule), FY_ACL_MATCH);
    cr_assert_eq(rule, 0);
    cr_assert_eq(name(&r, "example.org", 587, &rule), FY_ACL_MATCH);
    cr_assert_eq(rule, 2);
    cr_assert_eq(name(&r, "example.org", 80, &rule), FY_ACL_MATCH);
    cr_assert_eq(rule, 3);
    cr_assert_eq(name(&r, "a.example.org", 8080, &rule), FY_ACL_MATCH);
    cr_assert_eq(rule, 1);
    cr_assert_eq(name(&r, "a.example.org", 80, &rule), FY_ACL_MATCH);
    cr_assert_eq(rule, 4, "only * is left");
    cr_assert_eq(name(&r, "10.1.2.3", 80, &rule), FY_ACL_MATCH);
    cr_assert_eq(rule, 4, "* matches literals too");
    fy_dest_rules_free(&r);
}

Test(dest, cidr_rules)
{
    struct fy_dest_rules r = {0};
    RULES(&r, "10.1.0.0/16", "[2001:db8::]/32:443", "169.254.169.254", "2001:db8:1::/48",
          "[::1]:8080", "[2001:db8:2::/48]:22", "192.0.2.0/24:80");
    uint32_t rule;
    /* IP literal hosts are decided at once. */
    cr_assert_eq(name(&r, "10.1.9.9", 80, &rule), FY_ACL_MATCH);
    cr_assert_eq(rule, 0);
    cr_assert_eq(name(&r, "10.2.0.1", 80, NULL), FY_ACL_NO_MATCH);
    cr_assert_eq(name(&r, "[2001:db8::5]", 443, &rule), FY_ACL_MATCH);
    cr_assert_eq(rule, 1);
    cr_assert_eq(name(&r, "2001:db8::5", 443, &rule), FY_ACL_MATCH, "unbracketed literal");
    cr_assert_eq(name(&r, "[2001:db8::5]", 80, NULL), FY_ACL_NO_MATCH);
    cr_assert_eq(name(&r, "[2001:db8:1::5]", 80, &rule), FY_ACL_MATCH);
    cr_assert_eq(rule, 3);
    cr_assert_eq(name(&r, "[::ffff:169.254.169.254]", 80, &rule), FY_ACL_MATCH);
    cr_assert_eq(rule, 2);
    cr_assert_eq(name(&r, "[::1]", 8080, &rule), FY_ACL_MATCH);
    cr_assert_eq(name(&r, "[::1]", 8081, &rule), FY_ACL_NO_MATCH);
    cr_assert_eq(name(&r, "[2001:db8:2::1]", 22, &rule), FY_ACL_MATCH);
    cr_assert_eq(rule, 5);
    /* A name: only its address can tell. */
    cr_assert_eq(name(&r, "host.test", 80, NULL), FY_ACL_NEED_ADDR);
    cr_assert_eq(name(&r, "2852039166", 80, NULL), FY_ACL_NEED_ADDR, "not a literal");
    /* The address stage. */
    cr_assert_eq(fy_dest_rules_check_addr(&r, SA("10.1.2.3"), 80, &rule), FY_ACL_MATCH);
    cr_assert_eq(rule, 0);
    cr_assert_eq(fy_dest_rules_check_addr(&r, SA("::ffff:169.254.169.254"), 1, &rule),
                 FY_ACL_MATCH);
    cr_assert_eq(rule, 2);
    cr_assert_eq(fy_dest_rules_check_addr(&r, SA("192.0.2.9"), 80, &rule), FY_ACL_MATCH);
    cr_assert_eq(fy_dest_rules_check_addr(&r, SA("192.0.2.9"), 443, &rule), FY_ACL_NO_MATCH);
    cr_assert_eq(fy_dest_rules_check_addr(&r, SA("8.8.8.8"), 80, NULL), FY_ACL_NO_MATCH);
    fy_dest_rules_free(&r);

    /* Only port-restricted CIDRs: a name needs its address only for those ports. */
    RULES(&r, "example.com", "10.0.0.0/8:443");
    cr_assert_eq(name(&r, "host.test", 443, NULL), FY_ACL_NEED_ADDR);
    cr_assert_eq(name(&r, "host.test", 80, NULL), FY_ACL_NO_MATCH);
    cr_assert_eq(fy_dest_rules_check_addr(&r, SA("10.0.0.1"), 443, NULL), FY_ACL_MATCH);
    cr_assert_eq(fy_dest_rules_check_addr(&r, SA("10.0.0.1"), 80, NULL), FY_ACL_NO_MATCH);
    fy_dest_rules_free(&r);
}

static void dest_refused(const char *t, const char *want)
{
    struct fy_dest_rules r = {0};
    err[0] = 0;
    cr_assert_eq(fy_dest_rules_add(&r, t, err, sizeof(err)), -1, "'%s' accepted", t);
    cr_assert_eq(r.n, 0);
    cr_assert(strstr(err, want), "%s: error '%s' lacks '%s'", t, err, want);
    fy_dest_rules_free(&r);
}

Test(dest, refused)
{
    dest_refused("10.0.0.300", "expected an address or CIDR like 10.0.0.0/8, got 10.0.0.300");
    dest_refused("10.0.0.300:443", "got 10.0.0.300");
    dest_refused("10.1.0.0/8", "write 10.0.0.0/8");
    dest_refused("2001:db8::/32:443", "goes in brackets");
    dest_refused("[10.0.0.1]:443", "brackets hold an IPv6");
    dest_refused("[2001:db8::1", "does not close");
    dest_refused("[2001:db8::1]x", "after the ']'");
    dest_refused("[2001:db8::1]:0", "expected a port");
    dest_refused("example.com:", "after ':'");
    dest_refused("example.com:http", "expected a port");
    dest_refused("example.com:99999", "expected a port");
    dest_refused("a.*.example.com", "'*' may only stand alone or start a pattern");
    dest_refused("*example.com", "'*' may only");
    dest_refused("**", "'*' may only");
    dest_refused("a..b", "empty label");
    dest_refused("*.", "host name");
    dest_refused("..example.com", "empty label");
    dest_refused("exa mple.com", "is not a host name");
    dest_refused("ex/ample.com", "expected a host name pattern or a CIDR");
    dest_refused("bücher.example", "xn--");
    dest_refused("", "empty");
    char lab[80];
    memset(lab, 'a', 64);
    strcpy(lab + 64, ".com");
    dest_refused(lab, "longer than 63");
    char big[320];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    dest_refused(big, "longer than 300 bytes");
}

/* 4096 name rules: the matches are the ones written, whatever the table's collisions. */
Test(dest, many_names)
{
    struct fy_dest_rules r = {0};
    char t[64];
    for (int i = 0; i < FY_ACL_MAX_ITEMS; i++) {
        snprintf(t, sizeof(t), i % 2 ? "*.s%d.example" : "h%d.example", i);
        cr_assert_eq(fy_dest_rules_add(&r, t, err, sizeof(err)), 0, "%s", err);
    }
    cr_assert_eq(fy_dest_rules_add(&r, "one.more", err, sizeof(err)), -1);
    cr_assert(strstr(err, "more than 4096"), "%s", err);
    uint32_t rule;
    for (int i = 0; i < FY_ACL_MAX_ITEMS; i++) {
        snprintf(t, sizeof(t), i % 2 ? "x.s%d.example" : "H%d.Example", i);
        cr_assert_eq(name(&r, t, 443, &rule), FY_ACL_MATCH, "%s", t);
        cr_assert_eq(rule, (uint32_t)i);
        snprintf(t, sizeof(t), i % 2 ? "s%d.example" : "x.h%d.example", i);
        cr_assert_eq(name(&r, t, 443, NULL), FY_ACL_NO_MATCH, "%s", t);
    }
    fy_dest_rules_free(&r);
}

/* A host far longer than any pattern still meets suffix rules (no bounded copy to truncate). */
Test(dest, long_host)
{
    struct fy_dest_rules r = {0};
    RULES(&r, "*.corp.example");
    char host[2048];
    memset(host, 'a', 1500);
    strcpy(host + 1500, ".corp.example");
    cr_assert_eq(name(&r, host, 443, NULL), FY_ACL_MATCH);
    fy_dest_rules_free(&r);
}

/* ---- policy ---- */

static struct fy_dest_policy example_policy(void)
{
    struct fy_dest_policy p = {0};
    RULES(&p.allow, "*.example.com", "api.internal:8443", "10.1.0.0/16", "[2001:db8::]/32:443");
    RULES(&p.deny, "169.254.169.254", "*.corp.example", "example.org:25", "bad.example.com");
    return p;
}

static char why[128];

static enum fy_dest_verdict pname(const struct fy_dest_policy *p, const char *host, unsigned port)
{
    why[0] = 0;
    return fy_dest_policy_check_name(p, host, strlen(host), port, why, sizeof(why));
}

static bool paddr(const struct fy_dest_policy *p, enum fy_dest_verdict v, const char *ip,
                  unsigned port)
{
    why[0] = 0;
    return fy_dest_policy_check_addr(p, v, SA(ip), port, why, sizeof(why));
}

Test(policy, stages)
{
    struct fy_dest_policy p = example_policy();
    /* allowed by name; the address still must not be denied */
    cr_assert_eq(pname(&p, "www.example.com", 443), FY_DEST_ALLOWED);
    cr_assert(paddr(&p, FY_DEST_ALLOWED, "93.184.216.34", 443));
    cr_assert_not(paddr(&p, FY_DEST_ALLOWED, "169.254.169.254", 443));
    cr_assert_str_eq(why, "address 169.254.169.254 denied by deny rule 1 (169.254.169.254)");
    cr_assert_not(paddr(&p, FY_DEST_ALLOWED, "::ffff:169.254.169.254", 443));
    cr_assert_str_eq(why, "address 169.254.169.254 denied by deny rule 1 (169.254.169.254)");
    /* deny by name comes first */
    cr_assert_eq(pname(&p, "bad.example.com", 443), FY_DEST_DENIED);
    cr_assert_str_eq(why, "denied by deny rule 4 (bad.example.com)");
    cr_assert_eq(pname(&p, "git.corp.example", 443), FY_DEST_DENIED);
    cr_assert_str_eq(why, "denied by deny rule 2 (*.corp.example)");
    cr_assert_eq(pname(&p, "GIT.corp.example.", 443), FY_DEST_DENIED);
    /* port-specific rules */
    cr_assert_eq(pname(&p, "api.internal", 8443), FY_DEST_ALLOWED);
    cr_assert_eq(pname(&p, "api.internal", 443), FY_DEST_NEED_ADDR, "the CIDR allow rules");
    cr_assert_eq(pname(&p, "api.internal", 80), FY_DEST_NEED_ADDR, "10.1.0.0/16 is any port");
    /* a name only an allow CIDR can admit */
    cr_assert_eq(pname(&p, "db.test", 5432), FY_DEST_NEED_ADDR);
    cr_assert(paddr(&p, FY_DEST_NEED_ADDR, "10.1.3.4", 5432));
    cr_assert_not(paddr(&p, FY_DEST_NEED_ADDR, "10.2.3.4", 5432));
    cr_assert_str_eq(why, "address 10.2.3.4 not matched by any allow rule");
    cr_assert(paddr(&p, FY_DEST_NEED_ADDR, "2001:db8::7", 443));
    cr_assert_not(paddr(&p, FY_DEST_NEED_ADDR, "2001:db8::7", 80));
    /* IP literals */
    cr_assert_eq(pname(&p, "169.254.169.254", 80), FY_DEST_DENIED);
    cr_assert_str_eq(why, "denied by deny rule 1 (169.254.169.254)");
    cr_assert_eq(pname(&p, "[::ffff:169.254.169.254]", 80), FY_DEST_DENIED);
    cr_assert_eq(pname(&p, "10.1.0.1", 80), FY_DEST_ALLOWED);
    cr_assert_eq(pname(&p, "10.3.0.1", 80), FY_DEST_DENIED);
    cr_assert_str_eq(why, "not matched by any allow rule");
    /* a name no allow rule can admit: ports no CIDR covers are refused at the name stage */
    struct fy_dest_policy q = {0};
    RULES(&q.allow, "*.example.com", "10.0.0.0/8:443");
    cr_assert_eq(pname(&q, "db.test", 80), FY_DEST_DENIED);
    cr_assert_str_eq(why, "not matched by any allow rule");
    cr_assert_eq(pname(&q, "db.test", 443), FY_DEST_NEED_ADDR);
    fy_dest_policy_free(&q);
    /* a denied name never gets through the address stage */
    cr_assert_not(paddr(&p, FY_DEST_DENIED, "10.1.0.1", 80));
    fy_dest_policy_free(&p);
}

Test(policy, empty_allow_means_any)
{
    struct fy_dest_policy p = {0};
    RULES(&p.deny, "169.254.0.0/16", "example.org:25");
    cr_assert_eq(pname(&p, "anything.test", 80), FY_DEST_ALLOWED);
    cr_assert(paddr(&p, FY_DEST_ALLOWED, "8.8.8.8", 80));
    cr_assert_not(paddr(&p, FY_DEST_ALLOWED, "169.254.1.1", 80));
    cr_assert_eq(pname(&p, "example.org", 25), FY_DEST_DENIED);
    cr_assert_str_eq(why, "denied by deny rule 2 (example.org:25)");
    cr_assert_eq(pname(&p, "example.org", 443), FY_DEST_ALLOWED);
    /* a small why buffer is truncated, not overrun */
    char small[8];
    cr_assert_eq(fy_dest_policy_check_name(&p, "example.org", 11, 25, small, sizeof(small)),
                 FY_DEST_DENIED);
    cr_assert_str_eq(small, "denied ");
    cr_assert_eq(fy_dest_policy_check_name(&p, "example.org", 11, 25, NULL, 0), FY_DEST_DENIED);
    fy_dest_policy_free(&p);

    struct fy_dest_policy none = {0};
    cr_assert_eq(pname(&none, "x.test", 1), FY_DEST_ALLOWED);
    cr_assert(paddr(&none, FY_DEST_ALLOWED, "127.0.0.1", 1));
}
