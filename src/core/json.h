/*
 * JSON, both ways, for the exchange capture (proxy/capture.h) and the tools that read it back
 * (ferry har, ferry replay). The writer appends to one growing buffer and places the commas
 * itself; it always produces valid UTF-8 (invalid input bytes become U+FFFD) and never grows
 * past the limit it was given. The reader is strict RFC 8259 (no comments, no trailing commas,
 * no NaN, valid UTF-8 only) into a small DOM held in one arena, bounded in input size, depth
 * and node count, and reports the line and column of the first error.
 */
#ifndef FY_JSON_H
#define FY_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- writing ---- */

#define FY_JSON_MAX_DEPTH 64 /* nesting the writer tracks (its comma state is one bit a level) */

/* A caller that streams may write p[0, len) out and set len to 0 between any two calls: the
 * comma state is kept, so one document can be produced in pieces. */
struct fy_json_writer {
    char *p; /* malloc'd text, not NUL-terminated; owned by the writer */
    size_t len, cap;
    size_t max;  /* p never grows past this many bytes */
    bool failed; /* out of memory or past max: the text is incomplete and must not be used */
    uint32_t depth;
    uint64_t used; /* bit d: the container open at depth d already has a member */
    bool after_key;
};

/* An empty writer that will hold at most `max` bytes (nothing is allocated yet). */
void fy_json_writer_init(struct fy_json_writer *w, size_t max);

/* Empties the text (and clears `failed`) but keeps the storage for the next document. */
void fy_json_writer_reset(struct fy_json_writer *w);

/* Cuts the text back to `len` bytes, a length taken between two top-level documents, and clears
 * `failed`: drops a document that did not fit while keeping the ones before it. */
void fy_json_writer_truncate(struct fy_json_writer *w, size_t len);

/* Frees the storage; the writer may be initialised again. */
void fy_json_writer_free(struct fy_json_writer *w);

/* Containers. Every begin needs its end; keys only inside objects, each followed by one value.
 * Misuse (a value without a key in an object, more than FY_JSON_MAX_DEPTH levels) sets
 * `failed`. */
void fy_json_obj_begin(struct fy_json_writer *w);
void fy_json_obj_end(struct fy_json_writer *w);
void fy_json_arr_begin(struct fy_json_writer *w);
void fy_json_arr_end(struct fy_json_writer *w);
void fy_json_key(struct fy_json_writer *w, const char *key); /* NUL-terminated, escaped */

/* Values. Strings are escaped (quotes, backslash, control characters) and invalid UTF-8 is
 * replaced with U+FFFD; fy_json_cstr writes null for a NULL string. fy_json_fixed writes a
 * number with `decimals` digits after the point (trailing zeros trimmed); NaN and infinities
 * are written as null. */
void fy_json_str(struct fy_json_writer *w, const char *s, size_t n);
void fy_json_cstr(struct fy_json_writer *w, const char *s);
void fy_json_int(struct fy_json_writer *w, int64_t v);
void fy_json_fixed(struct fy_json_writer *w, double v, int decimals);
void fy_json_bool(struct fy_json_writer *w, bool v);
void fy_json_null(struct fy_json_writer *w);
void fy_json_base64(struct fy_json_writer *w, const void *data, size_t n); /* as a string */

/* Appends bytes as they are, outside the comma logic (a newline between documents). */
void fy_json_raw(struct fy_json_writer *w, const char *s, size_t n);

/* ---- helpers ---- */

/* True when s[0, n) is well-formed UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF). */
bool fy_utf8_valid(const char *s, size_t n);

/* Length of the base64 text (with padding) for n bytes. */
static inline size_t fy_base64_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

/* Writes base64 (standard alphabet, padded) of in[0, n) to out, which has room for
 * fy_base64_len(n) bytes. Returns the length written. */
size_t fy_base64_encode(const void *in, size_t n, char *out);

/* Decodes standard base64 (padding required, only at the end, no whitespace; the bits the
 * padding leaves over must be zero, so each byte string has exactly one accepted encoding) into
 * out, which has room for n / 4 * 3 bytes. Returns the decoded length, or -1 when the text is not
 * base64. */
long fy_base64_decode(const char *in, size_t n, void *out);

/* ---- reading ---- */

enum fy_json_type {
    FY_JSON_NULL,
    FY_JSON_BOOL,
    FY_JSON_NUMBER,
    FY_JSON_STRING,
    FY_JSON_ARRAY,
    FY_JSON_OBJECT
};

/* A value. Everything points into the document's arena: valid until fy_json_doc_free(). */
struct fy_json {
    enum fy_json_type type;
    bool boolean;
    double number;
    const char *str; /* STRING: decoded, NUL-terminated (may also hold NULs: use len) */
    size_t len;
    const char *key; /* a member of an object: its name, decoded, NUL-terminated */
    size_t key_len;
    struct fy_json *child; /* ARRAY, OBJECT: the first item or member, in input order */
    struct fy_json *next;  /* the next item or member of the parent */
    uint32_t n;            /* ARRAY, OBJECT: how many children */
};

struct fy_json_limits {
    size_t max_bytes;   /* longest input accepted */
    uint32_t max_depth; /* nested arrays and objects */
    uint32_t max_nodes; /* values in the whole document */
};

/* The defaults: 64 MiB, depth 32, 4 million values. */
extern const struct fy_json_limits fy_json_default_limits;

struct fy_json_error {
    uint32_t line, col; /* 1-based; col counts bytes from the start of the line */
    char msg[120];      /* "expected ',' or '}'" */
};

struct fy_json_doc;

/* Parses exactly one value (surrounded by optional whitespace) from s[0, n). On success returns
 * a document the caller frees with fy_json_doc_free(); on failure NULL with `err` filled (the
 * position of the offending byte, or of the end for a truncated input; "out of memory" at
 * 0:0). */
struct fy_json_doc *fy_json_parse(const char *s, size_t n, const struct fy_json_limits *lim,
                                  struct fy_json_error *err);

/* The top-level value. */
const struct fy_json *fy_json_root(const struct fy_json_doc *doc);

void fy_json_doc_free(struct fy_json_doc *doc); /* NULL is fine */

/* The first member named `key` of an object; NULL when v is NULL, not an object, or has no
 * such member. */
const struct fy_json *fy_json_get(const struct fy_json *v, const char *key);

/* Typed getters for "optional member of this type": NULL/false when missing or another type. */
const struct fy_json *fy_json_get_type(const struct fy_json *v, const char *key,
                                       enum fy_json_type type);
bool fy_json_get_num(const struct fy_json *v, const char *key, double *out);

#endif
