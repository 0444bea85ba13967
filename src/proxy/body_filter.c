/* See body_filter.h. */
#include "proxy/body_filter.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/assert.h"

void fy_bf_chain_init(struct fy_bf_chain *c)
{
    memset(c, 0, sizeof(*c));
}

static void filter_free(struct fy_bfilter *f)
{
    uint8_t *out = f->out;
    if (f->ops->destroy)
        f->ops->destroy(f);
    free(f);
    free(out);
}

int fy_bf_chain_add(struct fy_bf_chain *c, struct fy_bfilter *f)
{
    if (!c->sink)
        c->sink = malloc(FY_BF_BUF);
    f->out = malloc(FY_BF_BUF);
    f->out_start = f->out_end = 0;
    f->next = NULL;
    f->chain = c;
    if (!c->sink || !f->out || c->n == FY_BF_MAX_FILTERS) {
        filter_free(f);
        return -1;
    }
    if (c->n)
        c->filters[c->n - 1]->next = f;
    c->filters[c->n++] = f;
    return 0;
}

/* The sink: copies while there is room and the downstream does not hold its bytes. */
static int sink_push(struct fy_bf_chain *c, const uint8_t **in, size_t *len, unsigned flags)
{
    if (c->sink_busy)
        return *len || flags ? FY_AGAIN : 0;
    if (*len) {
        size_t n = FY_BF_BUF - c->sink_len;
        if (n > *len)
            n = *len;
        memcpy(c->sink + c->sink_len, *in, n);
        c->sink_len += n;
        *in += n;
        *len -= n;
        if (*len)
            return FY_AGAIN;
    }
    if (flags & FY_BF_FLUSH)
        c->flushed = true;
    if (flags & FY_BF_END)
        c->ended = true;
    return 0;
}

int fy_bf_chain_push(struct fy_bf_chain *c, const uint8_t **in, size_t *len, unsigned flags)
{
    FY_ASSERT(c->n > 0);
    size_t before = *len;
    int rc = c->filters[0]->ops->push(c->filters[0], in, len, flags);
    c->bytes_in += before - *len;
    return rc;
}

void fy_bf_chain_take(struct fy_bf_chain *c, struct iovec *iov)
{
    iov->iov_base = c->sink;
    iov->iov_len = c->sink_len;
    c->sink_busy = true;
    c->flushed = false;
    c->bytes_out += c->sink_len;
}

void fy_bf_chain_taken(struct fy_bf_chain *c)
{
    c->sink_busy = false;
    c->sink_len = 0;
}

void fy_bf_chain_free(struct fy_bf_chain *c)
{
    for (unsigned i = 0; i < c->n; i++)
        filter_free(c->filters[i]);
    free(c->sink);
    fy_bf_chain_init(c);
}

uint8_t *fy_bf_space(struct fy_bfilter *f, size_t *avail)
{
    if (f->out_start == f->out_end)
        f->out_start = f->out_end = 0;
    *avail = FY_BF_BUF - f->out_end;
    return f->out + f->out_end;
}

void fy_bf_produced(struct fy_bfilter *f, size_t n)
{
    FY_ASSERT(f->out_end + n <= FY_BF_BUF);
    f->out_end += n;
}

int fy_bf_pass(struct fy_bfilter *f, unsigned flags)
{
    const uint8_t *p = f->out + f->out_start;
    size_t len = f->out_end - f->out_start;
    int rc = f->next ? f->next->ops->push(f->next, &p, &len, flags)
                     : sink_push(f->chain, &p, &len, flags);
    f->out_start = f->out_end - len;
    if (f->out_start == f->out_end)
        f->out_start = f->out_end = 0;
    return rc;
}

int fy_bf_fail(struct fy_bfilter *f, const char *fmt, ...)
{
    struct fy_bf_chain *c = f->chain;
    if (!c->err_status)
        c->err_status = 502;
    int n = snprintf(c->err, sizeof(c->err), "%s: ", f->name ? f->name : f->ops->name);
    if (n < 0 || (size_t)n >= sizeof(c->err))
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err + n, sizeof(c->err) - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}
