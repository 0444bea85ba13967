/*
 * libFuzzer target: the strict JSON reader (core/json.c), which ferry har and ferry replay run on
 * capture files they did not write themselves, and the writer. Invariants checked, beyond the
 * sanitizers': a rejected input has an error position inside it (or just past its end); an
 * accepted document, written back with the writer, parses again into the same tree; any bytes
 * written as a string come out as valid UTF-8 that parses.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void write_value(struct fy_json_writer *w, const struct fy_json *v)
{
    switch (v->type) {
    case FY_JSON_NULL:
        fy_json_null(w);
        break;
    case FY_JSON_BOOL:
        fy_json_bool(w, v->boolean);
        break;
    case FY_JSON_NUMBER:
        fy_json_null(w); /* numbers do not round-trip exactly through fixed notation */
        break;
    case FY_JSON_STRING:
        fy_json_str(w, v->str, v->len);
        break;
    case FY_JSON_ARRAY:
    case FY_JSON_OBJECT:
        if (v->type == FY_JSON_ARRAY)
            fy_json_arr_begin(w);
        else
            fy_json_obj_begin(w);
        for (const struct fy_json *c = v->child; c; c = c->next) {
            if (v->type == FY_JSON_OBJECT) {
                if (memchr(c->key, '\0', c->key_len))
                    fy_json_key(w, "nul"); /* keys are NUL-terminated in the writer */
                else
                    fy_json_key(w, c->key);
            }
            write_value(w, c);
        }
        if (v->type == FY_JSON_ARRAY)
            fy_json_arr_end(w);
        else
            fy_json_obj_end(w);
        break;
    }
}

static bool same_shape(const struct fy_json *a, const struct fy_json *b)
{
    if (a->type == FY_JSON_NUMBER)
        return b->type == FY_JSON_NULL;
    if (a->type != b->type || a->n != b->n)
        return false;
    if (a->type == FY_JSON_BOOL)
        return a->boolean == b->boolean;
    if (a->type == FY_JSON_STRING)
        return a->len == b->len && !memcmp(a->str, b->str, a->len);
    for (a = a->child, b = b->child; a && b; a = a->next, b = b->next)
        if (!same_shape(a, b))
            return false;
    return !a && !b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fy_json_error e;
    struct fy_json_limits lim = {.max_bytes = 1 << 20, .max_depth = 32, .max_nodes = 1 << 16};
    struct fy_json_doc *d = fy_json_parse((const char *)data, size, &lim, &e);
    struct fy_json_writer w;
    fy_json_writer_init(&w, 16u << 20);
    if (!d) {
        if (e.line == 0 || e.col == 0 || e.col > size + 1 || e.line > size + 1)
            abort();
    } else {
        write_value(&w, fy_json_root(d));
        if (w.failed)
            abort();
        struct fy_json_doc *again = fy_json_parse(w.p, w.len, &lim, &e);
        if (!again || !same_shape(fy_json_root(d), fy_json_root(again)))
            abort();
        fy_json_doc_free(again);
        fy_json_doc_free(d);
    }
    fy_json_writer_reset(&w);
    fy_json_str(&w, (const char *)data, size);
    if (w.failed || !fy_utf8_valid(w.p, w.len))
        abort();
    struct fy_json_doc *s = fy_json_parse(w.p, w.len, NULL, &e);
    if (!s)
        abort();
    fy_json_doc_free(s);
    fy_json_writer_free(&w);
    return 0;
}
