/* Capture file lines back into records; see capfile.h. */
#include "tools/capfile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int fy_capfile_open(struct fy_capfile *cf, const char *path, char *err, size_t errlen)
{
    memset(cf, 0, sizeof(*cf));
    cf->path = path;
    cf->fp = strcmp(path, "-") ? fopen(path, "r") : stdin;
    if (!cf->fp) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

void fy_capfile_close(struct fy_capfile *cf)
{
    if (cf->fp && cf->fp != stdin)
        fclose(cf->fp);
    cf->fp = NULL;
    free(cf->line);
    cf->line = NULL;
}

/* Reads one line (without its '\n') into cf->line. 1: a line, 0: end of file, -1: too long
 * (the rest of the line is skipped), -2: read error. */
static int read_line(struct fy_capfile *cf)
{
    cf->len = 0;
    bool too_long = false, any = false;
    int c;
    while ((c = getc_unlocked(cf->fp)) != EOF) {
        any = true;
        if (c == '\n')
            break;
        if (too_long)
            continue;
        if (cf->len + 2 > cf->cap) {
            size_t cap = cf->cap ? cf->cap * 2 : 4096;
            if (cap > FY_CAPFILE_MAX_LINE + 2)
                cap = FY_CAPFILE_MAX_LINE + 2;
            char *p = cap > cf->cap ? realloc(cf->line, cap) : NULL;
            if (!p) {
                too_long = true;
                continue;
            }
            cf->line = p;
            cf->cap = cap;
        }
        cf->line[cf->len++] = (char)c;
    }
    if (ferror(cf->fp))
        return -2;
    if (!any)
        return 0;
    cf->lineno++;
    if (cf->line)
        cf->line[cf->len] = '\0';
    return too_long ? -1 : 1;
}

int fy_capfile_next(struct fy_capfile *cf, struct fy_json_doc **doc, char *err, size_t errlen)
{
    *doc = NULL;
    for (;;) {
        int r = read_line(cf);
        if (r == 0)
            return 0;
        if (r == -2) {
            snprintf(err, errlen, "%s:%llu: read error: %s", cf->path,
                     (unsigned long long)cf->lineno + 1, strerror(errno));
            return -1;
        }
        if (r == -1) {
            snprintf(err, errlen, "%s:%llu: line longer than %zu MiB", cf->path,
                     (unsigned long long)cf->lineno, FY_CAPFILE_MAX_LINE >> 20);
            return -1;
        }
        size_t n = cf->len;
        if (n && cf->line[n - 1] == '\r')
            n--;
        size_t ws = 0;
        while (ws < n && (cf->line[ws] == ' ' || cf->line[ws] == '\t'))
            ws++;
        if (ws == n)
            continue; /* blank lines are allowed between records */
        struct fy_json_limits lim = fy_json_default_limits;
        lim.max_bytes = FY_CAPFILE_MAX_LINE;
        struct fy_json_error e;
        struct fy_json_doc *d = fy_json_parse(cf->line, n, &lim, &e);
        if (!d) {
            snprintf(err, errlen, "%s:%llu:%u: %s", cf->path, (unsigned long long)cf->lineno, e.col,
                     e.msg);
            return -1;
        }
        if (fy_json_root(d)->type != FY_JSON_OBJECT) {
            fy_json_doc_free(d);
            snprintf(err, errlen, "%s:%llu:%zu: expected an object (one exchange per line)",
                     cf->path, (unsigned long long)cf->lineno, ws + 1);
            return -1;
        }
        *doc = d;
        return 1;
    }
}

int fy_capfile_body(const struct fy_json *body, struct fy_capbody *out)
{
    memset(out, 0, sizeof(*out));
    out->text = "";
    if (!body || body->type == FY_JSON_NULL)
        return 0;
    double size, captured;
    const struct fy_json *enc = fy_json_get_type(body, "encoding", FY_JSON_STRING);
    const struct fy_json *data = fy_json_get_type(body, "data", FY_JSON_STRING);
    if (body->type != FY_JSON_OBJECT || !fy_json_get_num(body, "size", &size) ||
        !fy_json_get_num(body, "captured", &captured) || size < 0 || captured < 0 ||
        captured > size || size > 9007199254740992.0 /* 2^53: exact, and fits uint64_t */ || !enc ||
        !data)
        return -1;
    if (!strcmp(enc->str, "base64"))
        out->base64 = true;
    else if (strcmp(enc->str, "utf8"))
        return -1;
    out->size = (uint64_t)size;
    out->captured = (uint64_t)captured;
    out->text = data->str;
    out->text_len = data->len;
    return 0;
}

int fy_capfile_body_bytes(const struct fy_capbody *b, char **out, size_t *outlen)
{
    size_t cap = b->base64 ? b->text_len / 4 * 3 : b->text_len;
    char *p = malloc(cap + 1);
    if (!p)
        return -1;
    if (b->base64) {
        long n = fy_base64_decode(b->text, b->text_len, p);
        if (n < 0) {
            free(p);
            return -1;
        }
        *outlen = (size_t)n;
    } else {
        memcpy(p, b->text, b->text_len);
        *outlen = b->text_len;
    }
    *out = p;
    return 0;
}

const struct fy_json *fy_capfile_header(const struct fy_json *headers, const char *name)
{
    if (!headers || headers->type != FY_JSON_ARRAY)
        return NULL;
    for (const struct fy_json *h = headers->child; h; h = h->next)
        if (h->type == FY_JSON_ARRAY && h->n == 2 && h->child->type == FY_JSON_STRING &&
            h->child->next->type == FY_JSON_STRING && !strcasecmp(h->child->str, name))
            return h->child->next;
    return NULL;
}
