/* Unit tests for src/conf/yaml.c: keys, values, positions of every error kind, ${file:},
 * sequences against scalars, duplicate keys; and the option table against docs/config.md. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/config.h"
#include "conf/yaml.h"

#include "yaml_fixture.h"

static void setup(void)
{
    yaml_fixture_setup("/tmp/ferry-yaml-XXXXXX");
}

TestSuite(yaml, .init = setup, .fini = teardown);

Test(yaml, minimal_file)
{
    cr_assert_eq(load("upstream: http://127.0.0.1:9000\n"), 0, "%s", ERRS);
    cr_assert_null(ERRS);
    cr_assert_str_eq(C.upstream_authority, "127.0.0.1:9000");
}

Test(yaml, every_kind_of_value)
{
    setenv("FERRY_YAML_TOKEN", "t0k", 1);
    cr_assert_eq(load("listen: \"[::1]:0\"\n"
                      "upstream: http://127.0.0.1:9000\n"
                      "workers: 3\n"
                      "request-header:\n"
                      "  - \"Authorization: Bearer ${env:FERRY_YAML_TOKEN}\"\n"
                      "  - 'X-Two: 2'\n"
                      "remove-request-header: [Cookie, X-Debug]\n"
                      "response-header: \"Access-Control-Allow-Origin: *\"\n"
                      "remove-response-header: Server\n"
                      "host: api.internal\n"
                      "x-forwarded-for: off\n"
                      "via: off\n"
                      "upgrade-protocols: none\n"
                      "access-log: off\n"
                      "access-log-format: json\n"
                      "log-level: warn\n"
                      "header-timeout: 3s\n"
                      "idle-timeout: 500ms\n"
                      "max-body-size: 10m\n"
                      "max-headers: 50\n"),
                 0, "%s", ERRS);
    cr_assert_eq(C.listen.ss.ss_family, AF_INET6);
    cr_assert_eq(C.workers, 3);
    cr_assert_eq(C.request_rules.n, 4);
    cr_assert_str_eq(C.request_rules.items[0].value, "Bearer t0k");
    cr_assert_str_eq(C.request_rules.items[0].source,
                     "Authorization: Bearer ${env:FERRY_YAML_TOKEN}");
    cr_assert_str_eq(C.request_rules.items[1].value, "2");
    cr_assert_str_eq(C.request_rules.items[2].name, "Cookie");
    cr_assert_null(C.request_rules.items[3].value);
    cr_assert_eq(C.response_rules.n, 2); /* a single scalar is a list of one */
    cr_assert_str_eq(C.response_rules.items[0].value, "*");
    cr_assert_str_eq(C.response_rules.items[1].name, "Server");
    cr_assert_eq(C.host_mode, FY_HOST_VALUE);
    cr_assert_str_eq(C.host_value, "api.internal");
    cr_assert_not(C.x_forwarded_for);
    cr_assert(C.x_forwarded_proto);
    cr_assert_not(C.via);
    cr_assert_str_eq(C.upgrade_protocols, "");
    cr_assert_eq(C.access_log, FY_ALOG_OFF);
    cr_assert_eq(C.access_log_format, FY_ALOG_JSON);
    cr_assert_eq(C.log_level, FY_LOG_WARN);
    cr_assert_eq(C.header_timeout, 3000);
    cr_assert_eq(C.idle_timeout, 500);
    cr_assert_eq(C.max_body_size, 10 << 20);
    cr_assert_eq(C.max_headers, 50);
}

Test(yaml, empty_lists_and_null)
{
    cr_assert_eq(load("upstream: http://127.0.0.1:1\nrequest-header: []\nresponse-header:\n"), 0,
                 "%s", ERRS);
    cr_assert_eq(C.request_rules.n, 0);
    cr_assert_eq(C.response_rules.n, 0);
}

Test(yaml, unknown_key_suggests_the_closest)
{
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\nheader-timout: 3s\n",
                     "2:1: unknown key 'header-timout' (did you mean header-timeout?)");
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\n  \nmax_body_size: 1m\n",
                     "3:1: unknown key 'max_body_size' (did you mean max-body-size?)");
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\n--workers: 2\n",
                     "2:1: unknown key '--workers' (did you mean workers?)");
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\ncolour: blue\n",
                     "2:1: unknown key 'colour' (the keys are listed in docs/config.md)");
}

Test(yaml, wrong_types)
{
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\nworkers: [1, 2]\n",
                     "2:10: workers expects a single value, got a sequence");
    EXPECT_ONE_ERROR("upstream:\n  url: http://127.0.0.1:1\n",
                     "2:3: upstream expects a single value, got a mapping");
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\nrequest-header: {X-A: 1}\n",
                     "2:17: request-header expects a list of 'Name: value' strings, got a mapping");
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\nremove-request-header:\n  - [Cookie]\n",
                     "3:5: remove-request-header: each item is one field name, got a sequence");
    EXPECT_ONE_ERROR("- upstream: http://127.0.0.1:1\n",
                     "1:1: expected a mapping of keys (upstream: http://HOST:PORT), got a "
                     "sequence");
}

Test(yaml, bad_values_name_their_position)
{
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\nidle-timeout: soon\n",
                     "2:15: idle-timeout expects a duration like 500ms, 10s or 2m, got 'soon'");
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\nmax-header-size: 12q\n",
                     "2:18: max-header-size expects a size from 256 to 1048576 (e.g. 16k), got "
                     "'12q'");
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\nlisten: \"::1:8080\"\n",
                     "2:9: listen '::1:8080': an IPv6 address goes in brackets: write [::1]:8080");
    EXPECT_ONE_ERROR("upstream: ftp://127.0.0.1:1\n",
                     "1:11: upstream: only http:// and https:// upstreams are supported, got "
                     "'ftp://127.0.0.1:1'");
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\nvia: true\n",
                     "2:6: via expects on or off, got 'true'");
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\nrequest-header:\n  - NoColon\n",
                     "3:5: request-header expects 'Name: value', got 'NoColon'");
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\nremove-request-header: [Host]\n",
                     "2:25: remove-request-header: Host is managed by --host (every HTTP/1.1 "
                     "request needs one): use --host VALUE to send another, --host preserve to "
                     "keep the client's");
}

Test(yaml, missing_upstream)
{
    EXPECT_ONE_ERROR("workers: 2\n",
                     "1:1: missing key upstream: the server to forward to (upstream: "
                     "http://HOST:PORT)");
    EXPECT_ONE_ERROR("", "1:1: the file is empty: expected at least upstream: http://HOST:PORT");
    /* --upstream on the command line stands in for the key. */
    free(ERRS);
    write_file("ferry.yaml", "workers: 2\n");
    cr_assert_eq(fy_yaml_load(&C, PATH_, true, &ERRS, &NERR), 0);
    cr_assert_null(ERRS);
}

Test(yaml, duplicate_key)
{
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\nworkers: 2\n\nworkers: 3\n",
                     "4:1: duplicate key 'workers' (first given at line 2)");
    cr_assert_eq(C.workers, 2, "the first value stays");
}

/* listeners: and upstreams: are the full schema (tests/unit/test_schema.c); here only how they
 * sit with the quick-mode keys. */
Test(yaml, schema_keys_and_the_shorthand)
{
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\nlisteners:\n  - listen: 127.0.0.1:8080\n",
                     "1:1: listen/upstream are the one-listener shorthand; with listeners: put "
                     "the address in a listener");
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\nupstreams: {}\n",
                     "2:1: upstreams: need listeners: that route to them (or use upstream: for "
                     "one server)");
    cr_assert_eq(load("listeners:\n  - listen: 127.0.0.1:0\n"), 0, "%s", ERRS);
    cr_assert_eq(C.nlisteners, 1);
}

Test(yaml, every_error_is_reported)
{
    cr_assert_eq(load("header-timout: 3s\n"
                      "workers: 0\n"
                      "via: maybe\n"
                      "workers: 2\n"),
                 5);
    cr_assert_str_eq(errors(), "1:1: unknown key 'header-timout' (did you mean header-timeout?)\n"
                               "2:10: workers expects a number from 1 to 256, got '0'\n"
                               "3:6: via expects on or off, got 'maybe'\n"
                               "4:1: duplicate key 'workers' (first given at line 2)\n"
                               "1:1: missing key upstream: the server to forward to (upstream: "
                               "http://HOST:PORT)\n");
    cr_assert_eq(NERR, 5);
}

Test(yaml, syntax_error_gives_libyaml_position)
{
    EXPECT_ONE_ERROR("upstream: [a\nworkers: 2\n",
                     "2:8: did not find expected ',' or ']' (while parsing a flow sequence at "
                     "line 1, column 11)");
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\n  workers: 2\n",
                     "2:10: mapping values are not allowed in this context");
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\n---\nworkers: 2\n",
                     "3:1: a second YAML document: the configuration is one mapping (remove the "
                     "'---' line)");
}

Test(yaml, env_and_file_references)
{
    unsetenv("FERRY_YAML_UNSET");
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\nhost: \"${env:FERRY_YAML_UNSET}\"\n",
                     "2:7: host: environment variable FERRY_YAML_UNSET is not set");
    write_file("token", "s3cr3t\n");
    cr_assert_eq(load("upstream: http://127.0.0.1:1\n"
                      "request-header: [\"Authorization: Bearer ${file:token}\"]\n"),
                 0, "%s", ERRS);
    cr_assert_str_eq(C.request_rules.items[0].value, "Bearer s3cr3t", "relative to the file");
    cr_assert_eq(load("upstream: http://127.0.0.1:1\nrequest-header: [\"X-A: ${file:nope}\"]\n"),
                 1);
    char want[512];
    snprintf(want, sizeof(want),
             "2:18: request-header: cannot read ${file:...} %s/nope: No such file or directory\n",
             DIR_);
    cr_assert_str_eq(errors(), want);
    /* A file of two lines is a control character in a header value. */
    write_file("two", "a\nb\n");
    EXPECT_ONE_ERROR("upstream: http://127.0.0.1:1\nrequest-header: [\"X-A: ${file:two}\"]\n",
                     "2:18: request-header: value of X-A contains a control character");
    /* ${file:} in any string: the upstream itself. */
    write_file("up", "http://127.0.0.1:7\n");
    cr_assert_eq(load("upstream: ${file:up}\n"), 0, "%s", ERRS);
    cr_assert_str_eq(C.upstream_authority, "127.0.0.1:7");
    cr_assert_str_eq(C.opt_text[1], "${file:up}");
}

Test(yaml, unreadable_file)
{
    char *errs = NULL;
    unsigned n = 0;
    cr_assert_eq(fy_yaml_load(&C, "/nonexistent/ferry.yaml", false, &errs, &n), 1);
    cr_assert_str_eq(errs, "/nonexistent/ferry.yaml: cannot open the configuration file: No such "
                           "file or directory\n");
    free(errs);
}

/* The option table and the command line: every key is a flag, every flag is documented. */
Test(yaml, every_option_is_documented_in_config_md)
{
    FILE *f = fopen("docs/config.md", "r");
    cr_assert_not_null(f, "run from the repository root");
    static char doc[1 << 17];
    size_t n = fread(doc, 1, sizeof(doc) - 1, f);
    fclose(f);
    doc[n] = 0;
    for (size_t k = 0; k < fy_options_count; k++) {
        char want[96];
        snprintf(want, sizeof(want), "| `%s` |", fy_options[k].key);
        cr_assert_not_null(strstr(doc, want), "docs/config.md has no row for %s",
                           fy_options[k].key);
    }
}

Test(yaml, print_config_reads_back)
{
    setenv("FERRY_YAML_SECRET", "hidden", 1);
    char *argv[] = {(char *)"ferry",
                    (char *)"--print-config",
                    (char *)"--upstream",
                    (char *)"http://127.0.0.1:9",
                    (char *)"--request-header",
                    (char *)"Authorization: Bearer ${env:FERRY_YAML_SECRET}",
                    (char *)"--remove-request-header",
                    (char *)"X-A",
                    (char *)"--request-header",
                    (char *)"X-A: \"quoted\" \\ back",
                    (char *)"--idle-timeout",
                    (char *)"1.5s",
                    (char *)"--listen",
                    (char *)"[::1]:0",
                    NULL};
    char *out = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&out, &len);
    char err[512];
    cr_assert_eq(fy_args_parse(&C, 14, argv, err, sizeof(err), mem), FY_ARGS_EXIT_OK, "%s", err);
    fclose(mem);
    cr_assert_null(strstr(out, "hidden"), "a secret was printed:\n%s", out);
    cr_assert_not_null(strstr(out, "${env:FERRY_YAML_SECRET}"));
    cr_assert_eq(out[0], '#');
    cr_assert_eq(load(out), 0, "%s\n%s", ERRS, out);
    free(out);
    cr_assert_eq(C.request_rules.n, 2, "the overridden removal of X-A is not printed");
    cr_assert_str_eq(C.request_rules.items[0].value, "Bearer hidden");
    cr_assert_str_eq(C.request_rules.items[1].value, "\"quoted\" \\ back");
    cr_assert_eq(C.idle_timeout, 1500);
    cr_assert_eq(C.listen.ss.ss_family, AF_INET6);
}
