/* Unit tests for src/conf/args.c: command line options, durations, sizes, ${env:NAME}. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config.h"
#include "net/addr.h"
#include "net/tls.h"

static struct fy_config C;
static char ERR[512];
static char *OUT;
static size_t OUT_LEN;

static void setup(void)
{
    fy_config_defaults(&C);
    ERR[0] = 0;
    OUT = NULL;
    OUT_LEN = 0;
}

static void teardown(void)
{
    fy_config_free(&C);
    free(OUT);
}

/* Parses a NULL-terminated list of arguments (argv[0] is added). */
static enum fy_args_result parse_v(const char **args)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = (char *)"ferry";
    for (; *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    free(OUT);
    OUT = NULL;
    FILE *out = open_memstream(&OUT, &OUT_LEN);
    enum fy_args_result r = fy_args_parse(&C, argc, argv, ERR, sizeof(ERR), out);
    fclose(out);
    return r;
}

#define PARSE(...) parse_v((const char *[]){__VA_ARGS__, NULL})

/* Expects an error whose message contains `frag`. */
#define EXPECT_ERR(frag, ...)                                                                      \
    do {                                                                                           \
        fy_config_free(&C);                                                                        \
        fy_config_defaults(&C);                                                                    \
        ERR[0] = 0;                                                                                \
        cr_assert_eq(PARSE(__VA_ARGS__), FY_ARGS_ERROR, "accepted: %s", #__VA_ARGS__);             \
        cr_assert_not_null(strstr(ERR, frag), "error '%s' lacks '%s'", ERR, frag);                 \
        cr_assert_null(strchr(ERR, '\n'), "error is one line: '%s'", ERR);                         \
    } while (0)

TestSuite(args, .init = setup, .fini = teardown);

Test(args, defaults)
{
    cr_assert_geq(C.workers, 1);
    cr_assert_eq(C.host_mode, FY_HOST_UPSTREAM);
    cr_assert(C.x_forwarded_for && C.x_forwarded_proto && C.x_forwarded_host && C.via);
    cr_assert_eq(C.access_log, FY_ALOG_STDOUT);
    cr_assert_eq(C.access_log_format, FY_ALOG_COMBINED);
    cr_assert_eq(C.log_level, FY_LOG_INFO);
    cr_assert_eq(C.header_timeout, 10000);
    cr_assert_eq(C.idle_timeout, 60000);
    cr_assert_eq(C.body_timeout, 60000);
    cr_assert_eq(C.send_timeout, 60000);
    cr_assert_eq(C.connect_timeout, 5000);
    cr_assert_eq(C.upstream_timeout, 60000);
    cr_assert_eq(C.drain_timeout, 10000);
    cr_assert_eq(C.pool_idle_timeout, 60000);
    cr_assert_eq(C.pool_max_idle, 1024);
    cr_assert_eq(C.max_request_line, 8192);
    cr_assert_eq(C.max_header_size, 16384);
    cr_assert_eq(C.max_headers, 100);
    cr_assert_eq(C.max_connections, 16384);
    cr_assert_eq(C.max_body_size, 0);
}

Test(args, minimal)
{
    cr_assert_eq(PARSE("--upstream", "http://127.0.0.1:9000"), FY_ARGS_OK, "%s", ERR);
    cr_assert_str_eq(C.upstream_text, "http://127.0.0.1:9000");
    cr_assert_str_eq(C.upstream_authority, "127.0.0.1:9000");
    cr_assert_str_eq(C.listen_text, "127.0.0.1:8080"); /* default listen */
    cr_assert_eq(C.listen.ss.ss_family, AF_INET);
    cr_assert_eq(C.upstream.ss.ss_family, AF_INET);
}

Test(args, all_options)
{
    cr_assert_eq(PARSE("--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:9000/",
                       "--workers", "3", "--request-header", "X-Req: a b", "--response-header",
                       "X-Resp:\tv ", "--remove-request-header", "Cookie",
                       "--remove-response-header", "Server", "--host", "preserve",
                       "--x-forwarded-for", "off", "--x-forwarded-proto", "off",
                       "--x-forwarded-host", "off", "--via", "off", "--access-log", "off",
                       "--access-log-format", "json", "--log-level", "debug", "--header-timeout",
                       "500ms", "--idle-timeout", "2m", "--body-timeout", "3", "--send-timeout",
                       "1.5s", "--connect-timeout", "1h", "--upstream-timeout", "7s",
                       "--drain-timeout", "0", "--pool-idle-timeout", "250ms", "--pool-max-idle",
                       "0", "--max-request-line", "1k", "--max-header-size", "32k", "--max-headers",
                       "50", "--max-body-size", "1m", "--max-connections", "100"),
                 FY_ARGS_OK, "%s", ERR);
    cr_assert_str_eq(C.listen_text, "127.0.0.1:0");
    cr_assert_str_eq(C.upstream_authority, "127.0.0.1:9000");
    cr_assert_eq(C.workers, 3);
    cr_assert_eq(C.request_rules.n, 2);
    cr_assert_str_eq(C.request_rules.items[0].name, "X-Req");
    cr_assert_eq(C.request_rules.items[0].name_len, 5);
    cr_assert_str_eq(C.request_rules.items[0].value, "a b");
    cr_assert_eq(C.request_rules.items[0].value_len, 3);
    cr_assert_str_eq(C.request_rules.items[1].name, "Cookie");
    cr_assert_null(C.request_rules.items[1].value);
    cr_assert_eq(C.response_rules.n, 2);
    cr_assert_str_eq(C.response_rules.items[0].value, "v"); /* OWS trimmed both sides */
    cr_assert_null(C.response_rules.items[1].value);
    cr_assert_eq(C.host_mode, FY_HOST_PRESERVE);
    cr_assert_not(C.x_forwarded_for || C.x_forwarded_proto || C.x_forwarded_host || C.via);
    cr_assert_eq(C.access_log, FY_ALOG_OFF);
    cr_assert_eq(C.access_log_format, FY_ALOG_JSON);
    cr_assert_eq(C.log_level, FY_LOG_DEBUG);
    cr_assert_eq(C.header_timeout, 500);
    cr_assert_eq(C.idle_timeout, 120000);
    cr_assert_eq(C.body_timeout, 3000);
    cr_assert_eq(C.send_timeout, 1500);
    cr_assert_eq(C.connect_timeout, 3600000);
    cr_assert_eq(C.upstream_timeout, 7000);
    cr_assert_eq(C.drain_timeout, 0);
    cr_assert_eq(C.pool_idle_timeout, 250);
    cr_assert_eq(C.pool_max_idle, 0);
    cr_assert_eq(C.max_request_line, 1024);
    cr_assert_eq(C.max_header_size, 32768);
    cr_assert_eq(C.max_headers, 50);
    cr_assert_eq(C.max_body_size, 1 << 20);
    cr_assert_eq(C.max_connections, 100);
}

Test(args, inline_values)
{
    cr_assert_eq(PARSE("--upstream=http://127.0.0.1:1", "--workers=2", "--host=backend.example",
                       "--request-header=X-A: 1=2"),
                 FY_ARGS_OK, "%s", ERR);
    cr_assert_eq(C.workers, 2);
    cr_assert_eq(C.host_mode, FY_HOST_VALUE);
    cr_assert_str_eq(C.host_value, "backend.example");
    cr_assert_str_eq(C.request_rules.items[0].value, "1=2");
}

Test(args, later_options_override)
{
    cr_assert_eq(PARSE("--upstream", "http://127.0.0.1:1", "--host", "a.example", "--host",
                       "upstream", "--access-log", "/tmp/x.log", "--access-log", "stdout",
                       "--upstream", "http://127.0.0.2:2"),
                 FY_ARGS_OK, "%s", ERR);
    cr_assert_eq(C.host_mode, FY_HOST_UPSTREAM);
    cr_assert_null(C.host_value);
    cr_assert_eq(C.access_log, FY_ALOG_STDOUT);
    cr_assert_null(C.access_log_path);
    cr_assert_str_eq(C.upstream_authority, "127.0.0.2:2");
}

Test(args, access_log_path)
{
    cr_assert_eq(PARSE("--upstream", "http://127.0.0.1:1", "--access-log", "/var/log/f.log"),
                 FY_ARGS_OK);
    cr_assert_eq(C.access_log, FY_ALOG_FILE);
    cr_assert_str_eq(C.access_log_path, "/var/log/f.log");
}

Test(args, upstream_default_port_and_ipv6)
{
    cr_assert_eq(PARSE("--upstream", "http://127.0.0.1"), FY_ARGS_OK, "%s", ERR);
    cr_assert_str_eq(C.upstream_authority, "127.0.0.1");
    fy_config_free(&C);
    fy_config_defaults(&C);
    cr_assert_eq(PARSE("--upstream", "http://[::1]:81"), FY_ARGS_OK, "%s", ERR);
    cr_assert_str_eq(C.upstream_authority, "[::1]:81");
    cr_assert_eq(C.upstream.ss.ss_family, AF_INET6);
    fy_config_free(&C);
    fy_config_defaults(&C);
    cr_assert_eq(PARSE("--upstream", "http://[::1]"), FY_ARGS_OK, "%s", ERR);
    cr_assert_eq(C.upstream.ss.ss_family, AF_INET6);
    fy_config_free(&C);
    fy_config_defaults(&C);
    cr_assert_eq(PARSE("--upstream", "127.0.0.1:9"), FY_ARGS_OK, "%s", ERR); /* no scheme */
    cr_assert_str_eq(C.upstream_authority, "127.0.0.1:9");
}

Test(args, request_line_clamped_to_header_size)
{
    cr_assert_eq(PARSE("--upstream", "http://127.0.0.1:1", "--max-header-size", "1k"), FY_ARGS_OK,
                 "%s", ERR);
    cr_assert_eq(C.max_header_size, 1024);
    cr_assert_eq(C.max_request_line, 1024);
}

Test(args, help_and_version)
{
    cr_assert_eq(PARSE("--help"), FY_ARGS_EXIT_OK);
    cr_assert_not_null(strstr(OUT, "usage: ferry"));
    cr_assert_not_null(strstr(OUT, "--max-body-size"));
    free(OUT);
    OUT = NULL;
    cr_assert_eq(PARSE("-h"), FY_ARGS_EXIT_OK);
    free(OUT);
    OUT = NULL;
    cr_assert_eq(PARSE("--version"), FY_ARGS_EXIT_OK);
    cr_assert_str_eq(OUT, "ferry " FERRY_VERSION "\n");
    free(OUT);
    OUT = NULL;
    cr_assert_eq(PARSE("-V"), FY_ARGS_EXIT_OK);
    free(OUT);
    OUT = NULL;
    /* --help wins even after other options and without --upstream */
    cr_assert_eq(PARSE("--workers", "2", "--help"), FY_ARGS_EXIT_OK);
}

Test(args, errors)
{
    EXPECT_ERR("--upstream http://HOST:PORT is required", "--workers", "2");
    EXPECT_ERR("unknown option '--bogus'", "--upstream", "http://127.0.0.1:1", "--bogus", "1");
    EXPECT_ERR("unexpected argument 'stray'", "stray");
    EXPECT_ERR("--workers needs a value", "--upstream", "http://127.0.0.1:1", "--workers");
    EXPECT_ERR("--workers expects a number from 1 to 256, got '0'", "--upstream",
               "http://127.0.0.1:1", "--workers", "0");
    EXPECT_ERR("--workers expects a number from 1 to 256, got '257'", "--upstream",
               "http://127.0.0.1:1", "--workers", "257");
    EXPECT_ERR("--workers expects", "--upstream", "http://127.0.0.1:1", "--workers", "2x");
    EXPECT_ERR("only http:// and https:// upstreams are supported, got 'ftp://127.0.0.1:1'",
               "--upstream", "ftp://127.0.0.1:1");
    EXPECT_ERR("a path is not supported yet", "--upstream", "http://127.0.0.1:1/api");
    EXPECT_ERR("missing host", "--upstream", "http://");
    EXPECT_ERR("port must be a number", "--upstream", "http://127.0.0.1:99999");
    EXPECT_ERR("--listen '127.0.0.1'", "--upstream", "http://127.0.0.1:1", "--listen", "127.0.0.1");
    EXPECT_ERR("--request-header expects 'Name: value', got 'NoColon'", "--upstream",
               "http://127.0.0.1:1", "--request-header", "NoColon");
    EXPECT_ERR("'Bad Name' is not a valid header field name", "--upstream", "http://127.0.0.1:1",
               "--response-header", "Bad Name: v");
    EXPECT_ERR("is not a valid header field name", "--upstream", "http://127.0.0.1:1",
               "--request-header", ": v");
    EXPECT_ERR("--remove-request-header: 'X-A: 1' is not a valid header field name", "--upstream",
               "http://127.0.0.1:1", "--remove-request-header", "X-A: 1");
    EXPECT_ERR("contains a control character", "--upstream", "http://127.0.0.1:1",
               "--request-header", "X-A: a\r\nInjected: 1");
    EXPECT_ERR("--x-forwarded-for expects on or off, got 'yes'", "--upstream", "http://127.0.0.1:1",
               "--x-forwarded-for", "yes");
    EXPECT_ERR("--via expects on or off", "--upstream", "http://127.0.0.1:1", "--via", "ON");
    EXPECT_ERR("--access-log expects stdout, off or a file path", "--upstream",
               "http://127.0.0.1:1", "--access-log", "");
    EXPECT_ERR("--access-log-format expects combined, json or pretty, got 'xml'", "--upstream",
               "http://127.0.0.1:1", "--access-log-format", "xml");
    EXPECT_ERR("--log-level expects debug, info, warn or error, got 'loud'", "--upstream",
               "http://127.0.0.1:1", "--log-level", "loud");
    EXPECT_ERR("--idle-timeout expects a duration like 500ms, 10s or 2m, got '5x'", "--upstream",
               "http://127.0.0.1:1", "--idle-timeout", "5x");
    EXPECT_ERR("--max-headers expects a size from 1 to 10000 (e.g. 16k), got '0'", "--upstream",
               "http://127.0.0.1:1", "--max-headers", "0");
    EXPECT_ERR("--max-request-line expects a size from 64 to 1048576", "--upstream",
               "http://127.0.0.1:1", "--max-request-line", "63");
    EXPECT_ERR("--max-header-size expects", "--upstream", "http://127.0.0.1:1", "--max-header-size",
               "2m");
    EXPECT_ERR("--max-body-size expects", "--upstream", "http://127.0.0.1:1", "--max-body-size",
               "lots");
    EXPECT_ERR("--host: '", "--upstream", "http://127.0.0.1:1", "--host", "a b");
}

Test(args, tls_options)
{
    cr_assert_eq(PARSE("--upstream", "https://127.0.0.1"), FY_ARGS_OK, "%s", ERR);
    cr_assert_str_eq(C.upstream_authority, "127.0.0.1", "no port written: none in the Host");
    cr_assert_eq(fy_addr_port((const struct sockaddr *)&C.upstream.ss), 443);
    cr_assert_not_null(C.quick_upstream_tls, "verified against the system's store");
    cr_assert_not(fy_tls_client_insecure(C.quick_upstream_tls));
    cr_assert_null(C.quick_tls);
    fy_config_free(&C);
    fy_config_defaults(&C);
    cr_assert_eq(PARSE("--upstream", "https://[::1]:8443", "--insecure-skip-verify", "on"),
                 FY_ARGS_OK, "%s", ERR);
    cr_assert(C.insecure_skip_verify);
    cr_assert(fy_tls_client_insecure(C.quick_upstream_tls));
    fy_config_free(&C);
    fy_config_defaults(&C);
    cr_assert_eq(PARSE("--upstream", "http://127.0.0.1:1"), FY_ARGS_OK, "%s", ERR);
    cr_assert_null(C.quick_upstream_tls, "http: no context");

    EXPECT_ERR("--tls-cert needs --tls-key too: the certificate's private key", "--upstream",
               "http://127.0.0.1:1", "--tls-cert", "site.pem");
    EXPECT_ERR("--tls-key needs --tls-cert too", "--upstream", "http://127.0.0.1:1", "--tls-key",
               "site.key");
    EXPECT_ERR("--upstream-ca applies to an https:// upstream, and http://127.0.0.1:1 is not one",
               "--upstream", "http://127.0.0.1:1", "--upstream-ca", "ca.pem");
    EXPECT_ERR("--insecure-skip-verify applies to an https:// upstream", "--upstream",
               "http://127.0.0.1:1", "--insecure-skip-verify", "on");
    EXPECT_ERR("--insecure-skip-verify expects on or off, got 'yes'", "--upstream",
               "https://127.0.0.1:1", "--insecure-skip-verify", "yes");
}

Test(args, env_expansion)
{
    setenv("FERRY_TEST_TOKEN", "s3cret", 1);
    setenv("FERRY_TEST_HOST", "internal.example", 1);
    cr_assert_eq(PARSE("--upstream", "http://127.0.0.1:1", "--request-header",
                       "Authorization: Bearer ${env:FERRY_TEST_TOKEN}", "--host",
                       "${env:FERRY_TEST_HOST}"),
                 FY_ARGS_OK, "%s", ERR);
    cr_assert_str_eq(C.request_rules.items[0].value, "Bearer s3cret");
    cr_assert_eq(C.request_rules.items[0].value_len, 13);
    cr_assert_str_eq(C.host_value, "internal.example");
    cr_assert_eq(C.host_mode, FY_HOST_VALUE);
}

Test(args, env_unset_names_variable)
{
    unsetenv("FERRY_TEST_UNSET_VAR");
    EXPECT_ERR("--request-header: environment variable FERRY_TEST_UNSET_VAR is not set",
               "--upstream", "http://127.0.0.1:1", "--request-header",
               "X-A: ${env:FERRY_TEST_UNSET_VAR}");
    EXPECT_ERR("--host: environment variable FERRY_TEST_UNSET_VAR is not set", "--upstream",
               "http://127.0.0.1:1", "--host", "${env:FERRY_TEST_UNSET_VAR}");
    EXPECT_ERR("malformed ${env:NAME}", "--upstream", "http://127.0.0.1:1", "--response-header",
               "X-A: ${env:OOPS");
}

Test(args, env_value_with_control_rejected)
{
    setenv("FERRY_TEST_CRLF", "a\r\nX-Injected: 1", 1);
    EXPECT_ERR("contains a control character", "--upstream", "http://127.0.0.1:1",
               "--request-header", "X-A: ${env:FERRY_TEST_CRLF}");
}

/* ---- fy_parse_duration ---- */

Test(parse, duration)
{
    struct {
        const char *s;
        uint64_t ms;
    } ok[] = {{"0", 0},        {"10", 10000},  {"3s", 3000}, {"500ms", 500}, {"2m", 120000},
              {"1h", 3600000}, {"1.5s", 1500}, {"0.5", 500}, {"0ms", 0}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint64_t ms = 12345;
        cr_assert_eq(fy_parse_duration(ok[i].s, &ms), 0, "%s", ok[i].s);
        cr_assert_eq(ms, ok[i].ms, "%s -> %llu", ok[i].s, (unsigned long long)ms);
    }
    const char *bad[] = {"",    "s",    "-1",  "-1s",  "5x",  "5 s", "5sec", "1d",   "5S",
                         "inf", "1e13", "ms5", "0x10", "1e3", "5.",  ".5s",  "1.2.3"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t ms = 777;
        cr_assert_eq(fy_parse_duration(bad[i], &ms), -1, "accepted '%s'", bad[i]);
        cr_assert_eq(ms, 777, "'%s' wrote the output", bad[i]);
    }
}

/*
 * Regression (fixed in ba8376c): fy_parse_duration("nan") succeeded: strtod() accepts "nan", `v <
 * 0` and `r > 1e12` are both false for NaN, and (uint64_t)NaN is undefined behaviour. `ferry
 * --idle-timeout nan` (or "NaNs") was accepted with a garbage timeout instead of the "expects a
 * duration" error.
 */
Test(parse, duration_nan_rejected)
{
    const char *bad[] = {"nan", "NaN", "nans", "-nan"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t ms = 777;
        cr_expect_eq(fy_parse_duration(bad[i], &ms), -1, "accepted '%s'", bad[i]);
    }
}

Test(parse, size)
{
    struct {
        const char *s;
        uint64_t n;
    } ok[] = {{"0", 0},
              {"512", 512},
              {"16k", 16384},
              {"16K", 16384},
              {"16kb", 16384},
              {"16KB", 16384},
              {"1m", 1048576},
              {"1M", 1048576},
              {"1mb", 1048576},
              {"2g", 2147483648ull},
              {"18446744073709551615", UINT64_MAX},
              {"17179869183g", 17179869183ull << 30}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint64_t n = 12345;
        cr_assert_eq(fy_parse_size(ok[i].s, &n), 0, "%s", ok[i].s);
        cr_assert_eq(n, ok[i].n, "%s -> %llu", ok[i].s, (unsigned long long)n);
    }
    const char *bad[] = {"",
                         "k",
                         "-1",
                         "+1",
                         " 1",
                         "1t",
                         "1 k",
                         "1kk",
                         "1kbb",
                         "1.5k",
                         "18446744073709551616",
                         "17179869184g",
                         "0x10"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t n = 777;
        cr_assert_eq(fy_parse_size(bad[i], &n), -1, "accepted '%s'", bad[i]);
        cr_assert_eq(n, 777);
    }
}

/* ---- fy_expand_env ---- */

static void expect_expand(const char *in, const char *want)
{
    char *missing = (char *)"unset";
    char *out = fy_expand_env(in, &missing);
    cr_assert_not_null(out, "'%s' failed", in);
    cr_assert_null(missing);
    cr_assert_str_eq(out, want);
    free(out);
}

Test(parse, expand_env)
{
    setenv("FY_A", "alpha", 1);
    setenv("FY_EMPTY", "", 1);
    setenv("FY_LONG", "0123456789012345678901234567890123456789012345678901234567890123456789", 1);
    expect_expand("", "");
    expect_expand("plain", "plain");
    expect_expand("${env:FY_A}", "alpha");
    expect_expand("x${env:FY_A}y${env:FY_A}z", "xalphayalphaz");
    expect_expand("a${env:FY_EMPTY}b", "ab");
    expect_expand("${env:FY_LONG}${env:FY_LONG}",
                  "0123456789012345678901234567890123456789012345678901234567890123456789"
                  "0123456789012345678901234567890123456789012345678901234567890123456789");
    expect_expand("$env:FY_A", "$env:FY_A");
    expect_expand("${FY_A}", "${FY_A}");
    expect_expand("$${env:FY_A}}", "$alpha}");
}

Test(parse, expand_env_errors)
{
    unsetenv("FY_NOPE");
    char *missing = NULL;
    cr_assert_null(fy_expand_env("a${env:FY_NOPE}b", &missing));
    cr_assert_str_eq(missing, "FY_NOPE");
    free(missing);
    missing = (char *)"x";
    cr_assert_null(fy_expand_env("${env:}", &missing));
    cr_assert_null(missing);
    missing = (char *)"x";
    cr_assert_null(fy_expand_env("${env:FY_A", &missing));
    cr_assert_null(missing);
    char longname[400];
    strcpy(longname, "${env:");
    memset(longname + 6, 'N', 300);
    strcpy(longname + 306, "}");
    missing = (char *)"x";
    cr_assert_null(fy_expand_env(longname, &missing));
    cr_assert_null(missing);
}

/* Defect 9: Host is --host's. A rule that removes it would send HTTP/1.1 without Host; one that
 * sets it would fight --host. Response rules may still name it. */
Test(args, host_rules_refused_on_requests)
{
    EXPECT_ERR("--remove-request-header: Host is managed by --host", "--upstream",
               "http://127.0.0.1:1", "--remove-request-header", "Host");
    EXPECT_ERR("--remove-request-header: Host is managed by --host", "--upstream",
               "http://127.0.0.1:1", "--remove-request-header", "hOST");
    EXPECT_ERR("--request-header: Host is managed by --host", "--upstream", "http://127.0.0.1:1",
               "--request-header", "Host: other.example");
    EXPECT_ERR("use --host VALUE", "--upstream", "http://127.0.0.1:1", "--request-header",
               "host:x");
    fy_config_free(&C);
    fy_config_defaults(&C);
    cr_assert_eq(PARSE("--upstream", "http://127.0.0.1:1", "--remove-response-header", "Host"),
                 FY_ARGS_OK, "%s", ERR);
    cr_assert_eq(C.response_rules.n, 1);
}

Test(args, upstream_must_name_a_reachable_server)
{
    EXPECT_ERR("--upstream 'http://:9100': missing host", "--upstream", "http://:9100");
    EXPECT_ERR("missing host", "--upstream", ":9100");
    EXPECT_ERR("missing host", "--upstream", "http://[]:9100");
    EXPECT_ERR("write http://[::1]:9100", "--upstream", "http://::1:9100");
    EXPECT_ERR("write http://[::1]:PORT", "--upstream", "http://::1");
    EXPECT_ERR("write http://[fe80::1]:PORT", "--upstream", "http://fe80::1");
    EXPECT_ERR("--upstream 'http://127.0.0.1:0': port 0", "--upstream", "http://127.0.0.1:0");
    EXPECT_ERR("port 0", "--upstream", "http://[::1]:0");
    EXPECT_ERR("port must be a number from 0 to 65535, got ''", "--upstream", "http://127.0.0.1:");
    EXPECT_ERR("port must be a number", "--upstream", "http://127.0.0.1:+80");
    EXPECT_ERR("port must be a number", "--upstream", "http://127.0.0.1: 80");
    EXPECT_ERR("'nope' in brackets is not an IPv6 address", "--upstream", "http://[nope]:80");
}

Test(args, resolution_failure_says_why)
{
    EXPECT_ERR("--upstream 'http://no-such-host.invalid:80': cannot resolve "
               "'no-such-host.invalid': ",
               "--upstream", "http://no-such-host.invalid:80");
    /* The resolver's own reason follows the colon. */
    cr_assert_gt(strlen(strstr(ERR, "invalid': ") + 10), 0, "no reason in '%s'", ERR);
    EXPECT_ERR("--listen 'no-such-host.invalid:80': cannot resolve", "--upstream",
               "http://127.0.0.1:1", "--listen", "no-such-host.invalid:80");
}

Test(args, host_value_must_not_be_empty)
{
    EXPECT_ERR("--host expects upstream, preserve or a host name, got ''", "--upstream",
               "http://127.0.0.1:1", "--host", "");
    setenv("FERRY_TEST_EMPTY_HOST", "", 1);
    EXPECT_ERR("expands to an empty value", "--upstream", "http://127.0.0.1:1", "--host",
               "${env:FERRY_TEST_EMPTY_HOST}");
    unsetenv("FERRY_TEST_EMPTY_HOST");
}

static bool is_any(const struct fy_addr *a)
{
    return fy_addr_is_any((const struct sockaddr *)&a->ss);
}

/* ":PORT" is every interface (Go, Caddy): dual-stack [::] where IPv6 exists, else 0.0.0.0. */
Test(args, listen_port_only_means_every_interface)
{
    cr_assert_eq(PARSE("--upstream", "http://127.0.0.1:1", "--listen", ":8080"), FY_ARGS_OK, "%s",
                 ERR);
    cr_assert(is_any(&C.listen));
    cr_assert_eq(fy_addr_port((const struct sockaddr *)&C.listen.ss), 8080);
    cr_assert(C.listen.ss.ss_family == AF_INET6 || C.listen.ss.ss_family == AF_INET);
    cr_assert_str_eq(C.listen_text, ":8080");
    fy_config_free(&C);
    fy_config_defaults(&C);
    cr_assert_eq(PARSE("--upstream", "http://127.0.0.1:1"), FY_ARGS_OK, "%s", ERR);
    cr_assert_not(is_any(&C.listen), "the default stays 127.0.0.1:8080");
    fy_config_free(&C);
    fy_config_defaults(&C);
    cr_assert_eq(PARSE("--upstream", "http://127.0.0.1:1", "--listen", "0.0.0.0:80"), FY_ARGS_OK);
    cr_assert_eq(C.listen.ss.ss_family, AF_INET);
    cr_assert(is_any(&C.listen));
}

Test(args, listen_ipv6_needs_brackets)
{
    EXPECT_ERR("--listen '::1:8080': an IPv6 address goes in brackets: write [::1]:8080",
               "--upstream", "http://127.0.0.1:1", "--listen", "::1:8080");
    EXPECT_ERR("write [::]:8080", "--upstream", "http://127.0.0.1:1", "--listen", ":::8080");
    fy_config_free(&C);
    fy_config_defaults(&C);
    cr_assert_eq(PARSE("--upstream", "http://127.0.0.1:1", "--listen", "[::1]:8080"), FY_ARGS_OK,
                 "%s", ERR);
    cr_assert_eq(C.listen.ss.ss_family, AF_INET6);
}

Test(addr, format_shows_v4_mapped_clients_as_ipv4)
{
    char why[200], buf[64];
    struct fy_addr a;
    cr_assert_eq(fy_addr_parse("[::ffff:10.1.2.3]:443", &a, why, sizeof(why)), 0, "%s", why);
    fy_addr_format_host((const struct sockaddr *)&a.ss, buf, sizeof(buf));
    cr_assert_str_eq(buf, "10.1.2.3");
    fy_addr_format((const struct sockaddr *)&a.ss, buf, sizeof(buf));
    cr_assert_str_eq(buf, "10.1.2.3:443");
    cr_assert_eq(fy_addr_parse("[2001:db8::1]:80", &a, why, sizeof(why)), 0, "%s", why);
    fy_addr_format((const struct sockaddr *)&a.ss, buf, sizeof(buf));
    cr_assert_str_eq(buf, "[2001:db8::1]:80");
}
