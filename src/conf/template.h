/*
 * Value templates (struct fy_template, conf/conf.h): compiled once when the configuration loads,
 * rendered per request. Syntax: ${env:NAME} and ${file:PATH} are expanded at load time (their
 * text is never scanned for variables, so a secret containing '$' stays intact); $name or ${name}
 * is a per-request variable (FY_TEMPLATE_VARS); $0..$9 a capture of the route's path-regex; $$ a
 * literal '$'. A '$' followed by anything else is an error, so a typo cannot go out silently.
 */
#ifndef FY_TEMPLATE_H
#define FY_TEMPLATE_H

#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"

enum fy_template_flags {
    FY_TPL_NO_VARS = 1u,  /* only ${env:}/${file:} allowed (e.g. a Host value) */
    FY_TPL_CAPTURES = 2u, /* $0..$9 allowed (the route has a path-regex or rewrite regex) */
};

/* Compiles `src` into t. base_dir: where a relative ${file:} is taken from (NULL: the working
 * directory). Returns 0, or -1 with one line in err saying what was wrong ("unknown variable
 * $hots (did you mean $host?)", "environment variable API_TOKEN is not set"). */
int fy_template_compile(struct fy_template *t, const char *src, unsigned flags,
                        const char *base_dir, char *err, size_t errlen);

void fy_template_free(struct fy_template *t);

/* What a template's variables stand for in one request. Strings are not NUL-terminated and are
 * only read during fy_template_render(). */
struct fy_tctx {
    const char *host, *scheme, *client_ip, *request_id, *method, *path, *query, *request_uri;
    uint32_t host_len, scheme_len, client_ip_len, request_id_len, method_len, path_len, query_len,
        request_uri_len;
    /* Variables that cost something to compute (TLS ones): asked for only when a template uses
     * them; the answer stays valid while the context does. NULL = all empty. */
    const char *(*lazy)(void *arg, enum fy_tvar var, uint32_t *len);
    void *lazy_arg;
    const char *subject;   /* what the regex ran on (captures index into it) */
    const size_t *ovector; /* pcre2 ovector pairs; NULL = no captures */
    uint32_t ncaptures;    /* pairs in ovector */
};

/* Bytes the rendering takes at most (so the caller can size one allocation). */
size_t fy_template_max_len(const struct fy_template *t, const struct fy_tctx *ctx);

/* Renders t into out (at least fy_template_max_len() bytes); returns the length. A capture that
 * did not participate renders empty. */
size_t fy_template_render(const struct fy_template *t, const struct fy_tctx *ctx, char *out);

#endif
