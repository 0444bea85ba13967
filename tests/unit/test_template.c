/* Unit tests for src/conf/template.c: segments, merging of literals, ${env:}/${file:} expanded
 * once and never re-scanned, every variable and capture rendered, and each error message. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/template.h"

static struct fy_template T;
static char ERR[512];

static void fini(void)
{
    fy_template_free(&T);
}

TestSuite(template, .fini = fini);

static int compile(const char *src, unsigned flags)
{
    fy_template_free(&T);
    ERR[0] = 0;
    return fy_template_compile(&T, src, flags, NULL, ERR, sizeof(ERR));
}

/* Renders T with ctx into a static buffer sized by fy_template_max_len(). */
static const char *render(const struct fy_tctx *ctx)
{
    static char buf[1024];
    size_t max = fy_template_max_len(&T, ctx);
    cr_assert_lt(max, sizeof(buf));
    memset(buf, '#', sizeof(buf));
    size_t n = fy_template_render(&T, ctx, buf);
    cr_assert_leq(n, max);
    buf[n] = 0;
    return buf;
}

#define S(field, v) .field = v, .field##_len = sizeof(v) - 1

static const struct fy_tctx CTX = {
    S(host, "api.example.com"), S(scheme, "http"),
    S(client_ip, "192.0.2.7"),  S(request_id, "r-42"),
    S(method, "DELETE"),        S(path, "/u/alice"),
    S(query, "a=1&b=2"),        S(request_uri, "/u/alice?a=1&b=2"),
};

Test(template, plain_text_is_a_constant)
{
    cr_assert_eq(compile("Bearer abc", 0), 0, "%s", ERR);
    cr_assert_eq(T.nsegs, 1);
    cr_assert_eq(T.segs[0].var, FY_TV_LITERAL);
    cr_assert_str_eq(T.constant, "Bearer abc");
    cr_assert_eq(T.constant_len, 10);
    cr_assert_str_eq(T.source, "Bearer abc");
    cr_assert_str_eq(render(&CTX), "Bearer abc");
}

Test(template, empty_is_a_constant_too)
{
    cr_assert_eq(compile("", 0), 0, "%s", ERR);
    cr_assert_eq(T.nsegs, 0);
    cr_assert_not_null(T.constant);
    cr_assert_str_eq(T.constant, "");
    cr_assert_eq(T.constant_len, 0);
    cr_assert_str_eq(render(&CTX), "");
}

Test(template, every_variable)
{
    cr_assert_eq(compile("$host|${scheme}|$client_ip|$request_id|$method|$path|$query|"
                         "$request_uri",
                         0),
                 0, "%s", ERR);
    cr_assert_null(T.constant);
    cr_assert_eq(T.nsegs, 15);
    cr_assert_eq(T.segs[0].var, FY_TV_HOST);
    cr_assert_eq(T.segs[2].var, FY_TV_SCHEME);
    cr_assert_eq(T.segs[14].var, FY_TV_REQUEST_URI);
    cr_assert_str_eq(render(&CTX), "api.example.com|http|192.0.2.7|r-42|DELETE|/u/alice|a=1&b=2|"
                                   "/u/alice?a=1&b=2");
}

Test(template, a_name_ends_at_the_first_non_name_character)
{
    cr_assert_eq(compile("https://$host.cdn/$path-x", 0), 0, "%s", ERR);
    cr_assert_str_eq(render(&CTX), "https://api.example.com.cdn//u/alice-x");
    /* braces glue a name to letters */
    cr_assert_eq(compile("${method}s", 0), 0, "%s", ERR);
    cr_assert_str_eq(render(&CTX), "DELETEs");
}

Test(template, dollar_dollar_is_a_literal_and_literals_merge)
{
    cr_assert_eq(compile("a$$b$$", 0), 0, "%s", ERR);
    cr_assert_eq(T.nsegs, 1, "adjacent literals are one segment");
    cr_assert_str_eq(T.constant, "a$b$");
    cr_assert_eq(compile("x$$y$host$$", 0), 0, "%s", ERR);
    cr_assert_eq(T.nsegs, 3);
    cr_assert_eq(T.segs[0].len, 3);
    cr_assert_eq(memcmp(T.segs[0].text, "x$y", 3), 0);
    cr_assert_str_eq(render(&CTX), "x$yapi.example.com$");
}

Test(template, env_and_file_are_expanded_once_and_not_rescanned)
{
    setenv("FERRY_TPL_SECRET", "p$ss${host}$1", 1);
    cr_assert_eq(compile("Bearer ${env:FERRY_TPL_SECRET}!", 0), 0, "%s", ERR);
    cr_assert_str_eq(T.constant, "Bearer p$ss${host}$1!", "a '$' in a secret stays");
    cr_assert_eq(T.nsegs, 1);
    cr_assert_str_eq(T.source, "Bearer ${env:FERRY_TPL_SECRET}!");

    char dir[] = "/tmp/ferry-tpl-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char p[128];
    snprintf(p, sizeof(p), "%s/key", dir);
    FILE *f = fopen(p, "w");
    fputs("k$y\n", f);
    fclose(f);
    fy_template_free(&T);
    cr_assert_eq(fy_template_compile(&T, "${file:key}-$host", 0, dir, ERR, sizeof(ERR)), 0, "%s",
                 ERR);
    cr_assert_str_eq(render(&CTX), "k$y-api.example.com", "relative to base_dir, newline trimmed");
    unlink(p);
    rmdir(dir);
}

Test(template, captures)
{
    cr_assert_eq(compile("/users/$1/$2$0", FY_TPL_CAPTURES), 0, "%s", ERR);
    cr_assert_eq(T.nsegs, 5);
    cr_assert_eq(T.segs[1].var, FY_TV_CAPTURE);
    cr_assert_eq(T.segs[1].capture, 1);
    const char *subject = "/u/alice";
    /* $0 = whole match, $1 = "alice", $2 did not participate */
    size_t ov[6] = {0, 8, 3, 8, ~(size_t)0, ~(size_t)0};
    struct fy_tctx c = CTX;
    c.subject = subject;
    c.ovector = ov;
    c.ncaptures = 3;
    cr_assert_str_eq(render(&c), "/users/alice//u/alice");
    c.ncaptures = 1; /* $1 beyond the pairs: empty */
    cr_assert_str_eq(render(&c), "/users///u/alice");
    c.ovector = NULL;
    cr_assert_str_eq(render(&c), "/users//");
}

Test(template, errors)
{
    cr_assert_eq(compile("$hots", 0), -1);
    cr_assert_str_eq(ERR, "unknown variable $hots (did you mean $host?)");
    cr_assert_eq(compile("${client-ip}", 0), -1);
    cr_assert_str_eq(ERR, "'$' starts a variable ($host, ${host}), a capture ($1) or $$ for a "
                          "literal $; got '${client-ip}'");
    cr_assert_eq(compile("$clientip", 0), -1);
    cr_assert_str_eq(ERR, "unknown variable $clientip (did you mean $client_ip?)");
    cr_assert_eq(compile("price: $5", 0), -1);
    cr_assert_str_eq(ERR, "captures like $5 need a path-regex (write $$ for a literal $)");
    cr_assert_eq(compile("a $ b", 0), -1);
    cr_assert_str_eq(ERR, "'$' starts a variable ($host, ${host}), a capture ($1) or $$ for a "
                          "literal $; got '$ b'");
    cr_assert_eq(compile("end$", 0), -1);
    cr_assert_eq(compile("${host", 0), -1);
    cr_assert_eq(compile("$zzzzzz", 0), -1);
    cr_assert_str_eq(ERR, "unknown variable $zzzzzz (the variables are $host, $scheme, "
                          "$client_ip, $request_id, $method, $path, $query, $request_uri, the "
                          "$tls_* ones; $$ is a literal $)");
    cr_assert_eq(compile("$tls_client_subjet", 0), -1);
    cr_assert_str_eq(ERR,
                     "unknown variable $tls_client_subjet (did you mean $tls_client_subject?)");
    cr_assert_eq(compile("X $tls_client_subject", 0), 0);
    cr_assert_eq(compile("$host", FY_TPL_NO_VARS), -1);
    cr_assert_str_eq(ERR, "$host: variables cannot be used here, only ${env:NAME} and "
                          "${file:PATH} (write $$ for a literal $)");
    unsetenv("FERRY_TPL_UNSET");
    cr_assert_eq(compile("Bearer ${env:FERRY_TPL_UNSET}", 0), -1);
    cr_assert_str_eq(ERR, "environment variable FERRY_TPL_UNSET is not set");
    cr_assert_eq(compile("${file:/nonexistent/ferry-key}", 0), -1);
    cr_assert_str_eq(ERR, "cannot read ${file:...} /nonexistent/ferry-key: No such file or "
                          "directory");
    cr_assert_eq(compile("${env:}", 0), -1);
    cr_assert_str_eq(ERR, "malformed ${env:NAME} or ${file:PATH} in '${env:}'");
    cr_assert_eq(compile("${env:X", 0), -1);
    cr_assert_str_eq(ERR, "malformed ${env:NAME} or ${file:PATH}: no closing '}'");
    /* a failed compile leaves nothing to free and a zeroed template */
    cr_assert_null(T.segs);
    cr_assert_null(T.block);
    cr_assert_null(T.source);
}

Test(template, no_vars_still_expands_env)
{
    setenv("FERRY_TPL_HOST", "backend.internal", 1);
    cr_assert_eq(compile("${env:FERRY_TPL_HOST}", FY_TPL_NO_VARS), 0, "%s", ERR);
    cr_assert_str_eq(T.constant, "backend.internal");
}

Test(template, free_is_idempotent)
{
    cr_assert_eq(compile("$host", 0), 0);
    fy_template_free(&T);
    fy_template_free(&T);
    struct fy_template zero = {0};
    fy_template_free(&zero);
}
