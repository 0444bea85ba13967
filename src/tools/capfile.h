/*
 * Reading a capture file (docs/capture.md) back, for ferry har and ferry replay: one JSON line
 * at a time, each line bounded, parsed with the strict reader, with the accessors both tools
 * need for the parts of a record. Bad lines are reported as "FILE:LINE:COL: message" and
 * skipped by the callers.
 */
#ifndef FY_CAPFILE_H
#define FY_CAPFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/json.h"

#define FY_CAPFILE_MAX_LINE ((size_t)256 << 20) /* longer lines are reported and skipped */

struct fy_capfile {
    const char *path; /* borrowed, for messages */
    FILE *fp;         /* owned */
    char *line;       /* owned; the current line, NUL-terminated */
    size_t len, cap;
    uint64_t lineno;
};

/* Opens path for reading ("-" is stdin). Returns 0, or -1 with a sentence in err naming the
 * file. */
int fy_capfile_open(struct fy_capfile *cf, const char *path, char *err, size_t errlen);
void fy_capfile_close(struct fy_capfile *cf);

/* The next non-empty line's record. Returns 1 with *doc set (the caller frees it; its root is
 * an object), 0 at the end of the file, or -1 for a line that is not a record, with err holding
 * "FILE:LINE:COL: why" (the caller may go on reading). A read error ends the file with -1
 * too, and err says so. */
int fy_capfile_next(struct fy_capfile *cf, struct fy_json_doc **doc, char *err, size_t errlen);

/* A captured body: size (every byte), captured (bytes in data), and the bytes themselves
 * decoded from "utf8" or "base64" into a malloc'd buffer (*data, the caller frees it; NULL when
 * nothing was captured). text/text_len point at the JSON string as written (for HAR, which
 * keeps base64 as text). Returns 0, or -1 when the object is malformed. */
struct fy_capbody {
    uint64_t size, captured;
    bool base64;
    const char *text;
    size_t text_len;
};
int fy_capfile_body(const struct fy_json *body, struct fy_capbody *out);

/* Decodes b's bytes into a malloc'd buffer (*out, *outlen; the caller frees *out). -1 when the
 * base64 text is invalid or memory runs out. */
int fy_capfile_body_bytes(const struct fy_capbody *b, char **out, size_t *outlen);

/* The value of the first header named `name` (any case) in a "headers" array of [name, value]
 * pairs, or NULL. */
const struct fy_json *fy_capfile_header(const struct fy_json *headers, const char *name);

#endif
