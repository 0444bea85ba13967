/*
 * libFuzzer target: request-path normalisation (http/path.c) and value templates
 * (conf/template.c), the two parsers routing runs on text it does not control: a path from any
 * client, a template from a configuration file. Invariants checked, beyond the sanitizers':
 * a normalised path starts with '/', is never longer than its input, has no dot segment left and
 * is a fixed point; a template renders within fy_template_max_len() with any captures.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf/template.h"
#include "http/path.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_path(const char *in, uint32_t len)
{
    char *out = malloc(len + 1), *again = malloc(len + 1);
    int n = fy_path_normalize(in, len, out);
    if (n >= 0) {
        if (n == 0 || out[0] != '/' || (uint32_t)n > len)
            abort();
        int m = fy_path_normalize(out, (uint32_t)n, again);
        if (m != n || memcmp(out, again, (size_t)n))
            abort(); /* normalising twice changes nothing */
        for (int i = 0; i + 1 < n; i++)
            if (out[i] == '/' && out[i + 1] == '.' &&
                (i + 2 == n || out[i + 2] == '/' ||
                 (out[i + 2] == '.' && (i + 3 == n || out[i + 3] == '/'))))
                abort(); /* a dot segment survived */
    }
    free(out);
    free(again);
}

static void check_template(const char *src, const char *subject, size_t slen)
{
    struct fy_template t;
    char err[256];
    if (fy_template_compile(&t, src, FY_TPL_CAPTURES, NULL, err, sizeof(err)) < 0)
        return;
    /* captures: pairs inside the subject, one unset */
    size_t ov[20];
    for (int i = 0; i < 20; i += 2) {
        ov[i] = slen ? (size_t)i % slen : 0;
        ov[i + 1] = slen;
    }
    ov[6] = ov[7] = ~(size_t)0;
    struct fy_tctx v = {.host = "h.test",
                        .host_len = 6,
                        .path = subject,
                        .path_len = (uint32_t)slen,
                        .subject = subject,
                        .ovector = ov,
                        .ncaptures = 10,
                        .method = "GET",
                        .method_len = 3};
    size_t max = fy_template_max_len(&t, &v);
    char *out = malloc(max + 1);
    size_t n = fy_template_render(&t, &v, out);
    if (n > max)
        abort();
    free(out);
    fy_template_free(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The input is a path; its first half (NUL-terminated) is also a template with ${env:...}
     * left alone (no such variable is set in the fuzzer). */
    check_path((const char *)data, (uint32_t)size);
    size_t half = size / 2;
    char *src = malloc(half + 1);
    memcpy(src, data, half);
    src[half] = '\0';
    if (!strstr(src, "${file:"))
        check_template(src, (const char *)data + half, size - half);
    free(src);
    return 0;
}
