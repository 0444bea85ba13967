/*
 * capture: on a listener or a route (docs/capture.md): `capture: flows.jsonl`, or
 *
 *   capture: { file: flows.jsonl, max-body: 1m, redact: [Authorization, Cookie, Set-Cookie] }
 *
 * opened at load (proxy/capture.h), so a file that cannot be written is an error of the
 * configuration, at its line. The same file named twice shares one writer.
 */
#include "conf/schema.h"

#include <stdlib.h>
#include <string.h>

#include "proxy/capture.h"

#define DEFAULT_MAX_BODY (1024 * 1024)
#define MAX_REDACT 64

static const char *const capture_keys[] = {"file", "max-body", "redact"};

struct fy_capture *fy_conf_capture_open(const char *path, uint64_t max_body,
                                        const char *const *redact, uint32_t nredact, char *err,
                                        size_t errlen)
{
    struct fy_capture_opts o = {.max_body = max_body, .redact = redact, .nredact = nredact};
    return fy_capture_open(path, &o, err, errlen);
}

struct fy_capture *fy_schema_load_capture(struct fy_yaml_loader *l, const yaml_node_t *v)
{
    const yaml_node_t *file = v, *n;
    uint64_t max_body = DEFAULT_MAX_BODY;
    char *redact[MAX_REDACT];
    uint32_t nredact = 0;
    struct fy_capture *cap = NULL;
    if (v->type == YAML_MAPPING_NODE) {
        if (!fy_sc_keys(l, v, "capture", capture_keys, 3))
            return NULL;
        if (!(file = fy_sc_get(l, v, "file"))) {
            fy_yaml_report(l, v->start_mark, "capture needs file: where the exchanges go");
            return NULL;
        }
        if ((n = fy_sc_get(l, v, "max-body"))) {
            const char *raw = fy_sc_raw(l, n, "max-body");
            if (raw && fy_parse_size(raw, &max_body) < 0) {
                fy_yaml_report(l, n->start_mark,
                               "max-body expects a size (64k, 1m; 0 keeps no body), got '%s'", raw);
                return NULL;
            }
        }
        if ((n = fy_sc_get(l, v, "redact"))) {
            size_t k = fy_sc_nitems(l, n, "redact");
            if (k > MAX_REDACT) {
                fy_yaml_report(l, n->start_mark, "redact: at most %d field names", MAX_REDACT);
                return NULL;
            }
            for (size_t i = 0; i < k; i++) {
                char *name = fy_sc_string(l, fy_sc_item(l, n, i), "redact");
                if (name)
                    redact[nredact++] = name;
            }
        }
    }
    char *path = fy_sc_path(l, file, "capture file");
    if (path) {
        char err[512];
        cap = fy_conf_capture_open(path, max_body, (const char *const *)redact, nredact, err,
                                   sizeof(err));
        if (!cap)
            fy_yaml_report(l, file->start_mark, "%s", err);
        free(path);
    }
    for (uint32_t i = 0; i < nredact; i++)
        free(redact[i]);
    return cap;
}
