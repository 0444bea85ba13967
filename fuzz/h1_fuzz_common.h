/*
 * Shared driver for the fy_h1_reader fuzz targets. The first two input bytes choose the split
 * points and the limits; the rest is fed to a reader in pieces exactly as a connection would:
 * while the head is incomplete the same start is passed again with more bytes, after DONE the
 * reader is reset with fy_h1r_next() for the pipelined message that follows.
 *
 * The input is copied into one exact-size heap block, so ASan catches any read past its end. The
 * pieces are windows into that block (bytes stay in place as the reader's contract requires).
 */
#ifndef FY_H1_FUZZ_COMMON_H
#define FY_H1_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/h1_reader.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static uint32_t fz_rng;

static uint32_t fz_next(void)
{
    fz_rng = fz_rng * 1103515245u + 12345u;
    return fz_rng >> 8;
}

static size_t fz_piece(uint8_t mode)
{
    switch (mode & 3) {
    case 0:
        return 1; /* byte by byte */
    case 1:
        return 1 + fz_next() % 8; /* small reads */
    case 2:
        return 1 + fz_next() % 128; /* medium reads */
    default:
        return (size_t)-1 / 2; /* everything at once */
    }
}

static bool fz_within(const void *p, size_t n, const char *lo, const char *hi)
{
    const char *c = p;
    return n == 0 || (c >= lo && c + n <= hi && c + n >= c);
}

/* Checks a parsed head: every string points into the input. */
static void fz_check_msg(const struct fy_h1_reader *r, const char *lo, const char *hi)
{
    const struct fy_msg *m = &r->msg;
    CHECK(m->version_minor <= 1);
    CHECK(m->content_length >= -1);
    CHECK(!(m->chunked && m->content_length >= 0));
    CHECK(m->nhdrs <= r->limits.max_fields);
    if (r->is_request) {
        CHECK(m->method_len > 0);
        CHECK(fz_within(m->method, m->method_len, lo, hi));
        for (uint32_t i = 0; i < m->method_len; i++)
            CHECK(fy_is_tchar((unsigned char)m->method[i]));
        CHECK(fz_within(m->target, m->target_len, lo, hi));
        if (r->limits.max_body && m->content_length > 0)
            CHECK((uint64_t)m->content_length <= r->limits.max_body);
        if (m->version_minor == 1)
            CHECK(fy_msg_find_tok((struct fy_msg *)m, FY_TOK_HOST) != NULL);
    } else {
        CHECK(m->status >= 100 && m->status <= 999);
        CHECK(fz_within(m->reason, m->reason_len, lo, hi));
    }
    uint32_t hosts = 0, cls = 0, tes = 0;
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        const struct fy_hdr *h = &m->hdrs[i];
        CHECK(h->name_len > 0);
        CHECK(fz_within(h->name, h->name_len, lo, hi));
        CHECK(fz_within(h->value, h->value_len, lo, hi));
        for (uint32_t k = 0; k < h->name_len; k++)
            CHECK(fy_is_tchar((unsigned char)h->name[k]));
        for (uint32_t k = 0; k < h->value_len; k++) {
            unsigned char c = (unsigned char)h->value[k];
            CHECK(c >= 0x20 || c == '\t');
            CHECK(c != 0x7f);
        }
        CHECK(h->tok == fy_token_lookup(h->name, h->name_len));
        hosts += h->tok == FY_TOK_HOST;
        cls += h->tok == FY_TOK_CONTENT_LENGTH;
        tes += h->tok == FY_TOK_TRANSFER_ENCODING;
    }
    if (r->is_request)
        CHECK(hosts <= 1);
    CHECK(cls <= 1);
    CHECK(tes <= 1);
    CHECK(!(cls && tes));
    CHECK(m->chunked == (tes == 1));
}

static void fz_check_error(const struct fy_h1_reader *r)
{
    CHECK(r->err_text != NULL);
    if (r->is_request)
        CHECK(r->err_status == 400 || r->err_status == 413 || r->err_status == 414 ||
              r->err_status == 431 || r->err_status == 505);
    else
        CHECK(r->err_status == 502);
}

static void fz_run(const uint8_t *in, size_t size, bool is_request)
{
    if (size < 3)
        return;
    uint8_t mode = in[0], lim = in[1], flags = in[2];
    fz_rng = (uint32_t)mode * 2654435761u + lim;
    in += 3;
    size -= 3;

    struct fy_h1r_limits limits = {
        .max_line = 32 + (lim & 15) * 16,
        .max_head = 128 + ((lim >> 4) & 15) * 64,
        .max_fields = 2 + (lim & 7) * 3,
        .max_body = (flags & 1) ? 1 + (flags >> 1) * 8 : 0,
    };
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return;
    memcpy(buf, in, size);
    const char *lo = buf, *hi = buf + size;

    struct fy_h1_reader r;
    fy_h1r_init(&r, is_request, &limits);
    r.no_body = !is_request && (flags & 2);

    size_t off = 0, end = 0, msg_start = 0;
    uint64_t body = 0;
    int messages = 0;
    end = off + fz_piece(mode >> 2);
    if (end > size || end < off)
        end = size;
    for (int guard = 0; guard < 1000000; guard++) {
        enum fy_h1r_state before = r.state;
        size_t len = end - off;
        size_t n = fy_h1r_execute(&r, buf + off, len);
        CHECK(n <= len);
        CHECK(r.nspans >= 0 && r.nspans <= FY_H1R_MAX_SPANS);
        const char *prev = buf + off;
        for (int i = 0; i < r.nspans; i++) {
            const char *p = r.spans[i].iov_base;
            CHECK(r.spans[i].iov_len > 0);
            CHECK(p >= prev); /* in order, not overlapping */
            CHECK(p + r.spans[i].iov_len <= buf + off + n);
            prev = p + r.spans[i].iov_len;
            body += r.spans[i].iov_len;
        }
        if (r.is_request && limits.max_body && r.state != FY_H1R_ERROR)
            CHECK(body <= limits.max_body);
        switch (r.state) {
        case FY_H1R_HEAD:
            CHECK(before == FY_H1R_HEAD);
            CHECK(r.nspans == 0);
            /* only skipped empty lines can be consumed before the head is complete */
            CHECK(n <= 16 && n % 2 == 0);
            CHECK(r.scanned <= len - n);
            break;
        case FY_H1R_BODY:
            CHECK(before == FY_H1R_HEAD || before == FY_H1R_BODY);
            CHECK(len == 0 || n > 0);
            fz_check_msg(&r, lo, hi);
            break;
        case FY_H1R_DONE:
            CHECK(before != FY_H1R_ERROR);
            if (before == FY_H1R_DONE)
                CHECK(n == 0 && r.nspans == 0);
            fz_check_msg(&r, lo, hi);
            if (r.is_request && r.msg.content_length >= 0 && !r.msg.upgrade)
                CHECK(body == (uint64_t)r.msg.content_length);
            if (!r.is_request &&
                (r.no_body || r.msg.status == 204 || r.msg.status == 304 || r.msg.status < 200))
                CHECK(body == 0);
            break;
        case FY_H1R_ERROR:
            fz_check_error(&r);
            break;
        }
        if (r.state == FY_H1R_ERROR)
            break;
        off += n;
        CHECK(off >= msg_start);
        if (r.state == FY_H1R_DONE) {
            if (r.msg.upgrade || ++messages > 64)
                break; /* the rest is another protocol */
            fy_h1r_next(&r);
            CHECK(r.state == FY_H1R_HEAD && r.msg.nhdrs == 0 && r.nspans == 0);
            r.no_body = !is_request && ((flags >> (2 + messages % 6)) & 1);
            msg_start = off;
            body = 0;
            if (end < off)
                end = off;
            if (off == size)
                break;
            if (end == off) {
                end = off + fz_piece(mode >> 2);
                if (end > size || end < off)
                    end = size;
            }
            continue;
        }
        if (n < len && r.state == FY_H1R_BODY)
            continue; /* paused on the span limit: call again with the rest */
        if (end == size) {
            if (r.state != FY_H1R_HEAD || n == 0)
                break;
            continue;
        }
        size_t more = fz_piece(mode >> 2);
        end = (end + more > size || end + more < end) ? size : end + more;
    }
    /* The connection ends here. */
    enum fy_h1r_state before = r.state;
    bool eof_body = r.eof_body;
    bool done = fy_h1r_eof(&r);
    if (before == FY_H1R_DONE || (before == FY_H1R_BODY && eof_body))
        CHECK(done && r.state == FY_H1R_DONE);
    else
        CHECK(!done && r.state == FY_H1R_ERROR);
    fy_h1r_free(&r);
    free(buf);
}

#endif
