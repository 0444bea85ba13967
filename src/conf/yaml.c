/*
 * YAML loader (libyaml's document API). The root is a mapping of option keys to values: a scalar
 * for every option, a sequence (or one scalar) for the repeatable header rules. Values go through
 * fy_option_apply(), the setter the command line uses, so both accept exactly the same values;
 * this file only adds positions: every error names FILE:LINE:COLUMN (1-based) of the node it is
 * about, and loading goes on after an error so one run reports them all. The two keys that are
 * not options, listeners: and upstreams:, are compiled by schema*.c into c->listeners and
 * c->groups.
 */
#include "conf/yaml.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <yaml.h>

#include "conf/schema.h"
#include "conf/yaml_priv.h"

/* The top-level keys that are not options: the full schema, compiled by schema*.c. */
enum { ROOT_LISTENERS, ROOT_UPSTREAMS, ROOT__COUNT };
static const char *const schema_keys[ROOT__COUNT] = {"listeners", "upstreams"};

void fy_yaml_report(struct fy_yaml_loader *l, yaml_mark_t m, const char *fmt, ...)
{
    fprintf(l->errs, "%s:%zu:%zu: ", l->path, m.line + 1, m.column + 1);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(l->errs, fmt, ap);
    va_end(ap);
    fputc('\n', l->errs);
    l->n++;
}

const char *fy_yaml_node_kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_SEQUENCE_NODE:
        return "a sequence";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "a scalar";
    }
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 99;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The spelling suggestions compare: no leading dashes, lower case, '-' for '_' and ' '. */
static void normalise(char *out, size_t size, const char *key)
{
    snprintf(out, size, "%s", key[0] == '-' ? key + strspn(key, "-") : key);
    for (char *p = out; *p; p++)
        if (*p == '_' || *p == ' ')
            *p = '-';
        else if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
}

const char *fy_yaml_suggest(const char *key, const char *const *cands, size_t ncands)
{
    char alt[128], cand[128];
    normalise(alt, sizeof(alt), key);
    const char *best = NULL;
    /* Two edits (a transposition) is a typo of a word, not of "db" against "web". */
    size_t best_d = strlen(alt) > 10 ? 3 : strlen(alt) >= 4 ? 2 : 1;
    for (size_t k = 0; k < ncands; k++) {
        normalise(cand, sizeof(cand), cands[k]);
        size_t d = edit_distance(alt, cand);
        if (d <= best_d) {
            best = cands[k];
            best_d = d;
        }
    }
    return best;
}

/* The known top-level key closest to `key`: an option or a schema key. */
static const char *suggest(const char *key)
{
    const char *keys[FY_OPT_SLOTS + ROOT__COUNT];
    size_t n = 0;
    for (size_t k = 0; k < fy_options_count; k++)
        keys[n++] = fy_options[k].key;
    for (size_t k = 0; k < ROOT__COUNT; k++)
        keys[n++] = schema_keys[k];
    return fy_yaml_suggest(key, keys, n);
}

/* A scalar's text, or NULL (reported) when it holds a NUL byte. */
static const char *scalar_text(struct fy_yaml_loader *l, const yaml_node_t *n, const char *key)
{
    const char *s = (const char *)n->data.scalar.value;
    if (strlen(s) != n->data.scalar.length) {
        fy_yaml_report(l, n->start_mark, "%s: a value cannot contain a NUL byte", key);
        return NULL;
    }
    return s;
}

static void apply_scalar(struct fy_yaml_loader *l, const struct fy_option *o, const yaml_node_t *n)
{
    const char *v = scalar_text(l, n, o->key);
    if (!v)
        return;
    char err[512];
    if (fy_option_apply(l->c, o, o->key, v, l->base_dir, err, sizeof(err)) < 0) {
        fy_yaml_report(l, n->start_mark, "%s", err);
        return;
    }
    size_t k = (size_t)(o - fy_options);
    if ((o->flags & FY_OPTF_EARLY) && (l->c->early_given >> k & 1))
        return; /* ignored: the command line's value stays */
    free(l->c->opt_where[k]);
    if (asprintf(&l->c->opt_where[k], "%s:%zu:%zu", l->path, n->start_mark.line + 1,
                 n->start_mark.column + 1) < 0)
        l->c->opt_where[k] = NULL;
}

static void load_key(struct fy_yaml_loader *l, const struct fy_option *o, const yaml_node_t *v)
{
    if (o->kind != FY_OPT_RULE && o->kind != FY_OPT_LIST) {
        if (v->type != YAML_SCALAR_NODE)
            fy_yaml_report(l, v->start_mark, "%s expects a single value, got %s", o->key,
                           fy_yaml_node_kind(v));
        else
            apply_scalar(l, o, v);
        return;
    }
    if (v->type == YAML_SCALAR_NODE) {
        /* `key:` with nothing after it (null) is an empty list; one string is a list of one. */
        if (v->data.scalar.length == 0 && v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
            return;
        apply_scalar(l, o, v);
        return;
    }
    if (v->type != YAML_SEQUENCE_NODE) {
        fy_yaml_report(l, v->start_mark, "%s expects a list of %s, got %s", o->key,
                       o->kind == FY_OPT_LIST        ? "values"
                       : (o->flags & FY_OPTF_REMOVE) ? "field names"
                                                     : "'Name: value' strings",
                       fy_yaml_node_kind(v));
        return;
    }
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++) {
        const yaml_node_t *item = yaml_document_get_node(&l->doc, *it);
        if (item->type != YAML_SCALAR_NODE)
            fy_yaml_report(l, item->start_mark, "%s: each item is one %s, got %s", o->key,
                           o->kind == FY_OPT_LIST        ? "value"
                           : (o->flags & FY_OPTF_REMOVE) ? "field name"
                                                         : "'Name: value' string",
                           fy_yaml_node_kind(item));
        else
            apply_scalar(l, o, item);
    }
}

static void load_root(struct fy_yaml_loader *l, const yaml_node_t *root, bool upstream_given)
{
    if (root->type != YAML_MAPPING_NODE) {
        fy_yaml_report(l, root->start_mark,
                       "expected a mapping of keys (upstream: http://HOST:PORT), "
                       "got %s",
                       fy_yaml_node_kind(root));
        return;
    }
    /* With listeners: the quick-mode listen/upstream keys would make a second, implicit
     * listener, and upstreams: means nothing without routes: both are refused where they are. */
    bool has_listeners = false;
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = yaml_document_get_node(&l->doc, p->key);
        has_listeners |= k->type == YAML_SCALAR_NODE &&
                         !strcmp((const char *)k->data.scalar.value, schema_keys[ROOT_LISTENERS]);
    }
    const struct fy_option *up = fy_option_find("upstream");
    size_t first_line[FY_OPT_SLOTS] = {0}; /* 1-based line of each key's first occurrence */
    size_t schema_line[ROOT__COUNT] = {0};
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = yaml_document_get_node(&l->doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(&l->doc, p->value);
        if (k->type != YAML_SCALAR_NODE) {
            fy_yaml_report(l, k->start_mark, "expected a key name, got %s", fy_yaml_node_kind(k));
            continue;
        }
        const char *key = (const char *)k->data.scalar.value;
        size_t r = 0;
        while (r < ROOT__COUNT && strcmp(key, schema_keys[r]))
            r++;
        if (r < ROOT__COUNT) {
            if (schema_line[r]) {
                fy_yaml_report(l, k->start_mark, "duplicate key '%s' (first given at line %zu)",
                               key, schema_line[r]);
                continue;
            }
            schema_line[r] = k->start_mark.line + 1;
            if (r == ROOT_LISTENERS)
                fy_schema_load_listeners(l, v);
            else if (has_listeners)
                fy_schema_load_upstreams(l, v);
            else
                fy_yaml_report(l, k->start_mark,
                               "upstreams: need listeners: that route to them (or use "
                               "upstream: for one server)");
            continue;
        }
        const struct fy_option *o = fy_option_find(key);
        if (!o) {
            const char *near = suggest(key);
            if (near)
                fy_yaml_report(l, k->start_mark, "unknown key '%s' (did you mean %s?)", key, near);
            else
                fy_yaml_report(l, k->start_mark,
                               "unknown key '%s' (the keys are listed in docs/config.md)", key);
            continue;
        }
        if (has_listeners && (o->flags & FY_OPTF_QUICK)) {
            if (o->kind == FY_OPT_FILE)
                fy_yaml_report(l, k->start_mark,
                               "tls-cert/tls-key are the one-listener shorthand; with listeners: "
                               "put the certificate in a listener's tls: block");
            else
                fy_yaml_report(l, k->start_mark,
                               "listen/upstream are the one-listener shorthand; with listeners: "
                               "put the address in a listener");
            continue;
        }
        size_t idx = (size_t)(o - fy_options);
        if (first_line[idx]) {
            fy_yaml_report(l, k->start_mark, "duplicate key '%s' (first given at line %zu)", key,
                           first_line[idx]);
            continue;
        }
        first_line[idx] = k->start_mark.line + 1;
        load_key(l, o, v);
    }
    if (has_listeners)
        fy_schema_resolve(l); /* routes' upstream names, now that every group is known */
    else if (!upstream_given && !first_line[up - fy_options] && !l->c->upstream_text)
        fy_yaml_report(l, root->start_mark,
                       "missing key upstream: the server to forward to "
                       "(upstream: http://HOST:PORT)");
}

/* libyaml's own position and text for a syntax (or encoding) error. */
static void report_syntax(struct fy_yaml_loader *l, const yaml_parser_t *parser)
{
    yaml_mark_t m = parser->problem_mark;
    const char *problem = parser->problem ? parser->problem : "invalid YAML";
    if (parser->error == YAML_READER_ERROR) {
        /* libyaml's reader gives a byte offset only: the line and column come from the file */
        size_t line = 1, col = 1;
        FILE *f = fopen(l->path, "rb");
        for (size_t i = 0; f && i < parser->problem_offset; i++) {
            int ch = fgetc(f);
            if (ch == EOF)
                break;
            if (ch == '\n') {
                line++;
                col = 1;
            } else if ((ch & 0xC0) != 0x80) {
                col++; /* columns count characters: a UTF-8 continuation byte is not one */
            }
        }
        if (f)
            fclose(f);
        fprintf(l->errs, "%s:%zu:%zu: %s (byte %zu of the file; it must be UTF-8 text)\n", l->path,
                line, col, problem, parser->problem_offset);
    } else if (parser->context)
        fprintf(l->errs, "%s:%zu:%zu: %s (%s at line %zu, column %zu)\n", l->path, m.line + 1,
                m.column + 1, problem, parser->context, parser->context_mark.line + 1,
                parser->context_mark.column + 1);
    else
        fprintf(l->errs, "%s:%zu:%zu: %s\n", l->path, m.line + 1, m.column + 1, problem);
    l->n++;
}

int fy_yaml_load(struct fy_config *c, const char *path, bool upstream_given, char **errors,
                 unsigned *count)
{
    struct fy_yaml_loader l = {.c = c, .path = path};
    char *text = NULL;
    size_t text_len = 0;
    *errors = NULL;
    *count = 0;
    l.errs = open_memstream(&text, &text_len);
    if (!l.errs)
        return 1;
    const char *slash = strrchr(path, '/');
    if (slash)
        l.base_dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));

    yaml_parser_t parser;
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (f && fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f); /* fopen() accepts a directory; reading it would be libyaml's "input error" */
        f = NULL;
        errno = EISDIR;
    }
    if (!f) {
        fprintf(l.errs, "%s: cannot open the configuration file: %m\n", path);
        l.n++;
        goto done;
    }
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &l.doc)) {
        report_syntax(&l, &parser);
    } else {
        const yaml_node_t *root = yaml_document_get_root_node(&l.doc);
        if (!root) {
            yaml_mark_t start = {0};
            if (!upstream_given && !c->upstream_text)
                fy_yaml_report(&l, start,
                               "the file is empty: expected at least upstream: http://HOST:PORT");
        } else {
            load_root(&l, root, upstream_given);
            yaml_document_t next;
            if (!yaml_parser_load(&parser, &next)) {
                report_syntax(&l, &parser);
            } else {
                const yaml_node_t *r2 = yaml_document_get_root_node(&next);
                if (r2)
                    fy_yaml_report(&l, r2->start_mark,
                                   "a second YAML document: the configuration is one "
                                   "mapping (remove the '---' line)");
                yaml_document_delete(&next);
            }
        }
        yaml_document_delete(&l.doc);
    }
    yaml_parser_delete(&parser);
    fclose(f);
done:
    fy_schema_loader_done(&l);
    fclose(l.errs);
    free(l.base_dir);
    if (l.n) {
        *errors = text;
        *count = l.n;
    } else {
        free(text);
    }
    return (int)l.n;
}
