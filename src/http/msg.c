/* Message heads; see msg.h. */
#include "http/msg.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/assert.h"

void fy_msg_init(struct fy_msg *m)
{
    memset(m, 0, sizeof(*m));
    m->content_length = -1;
}

void fy_msg_free(struct fy_msg *m)
{
    free(m->hdrs);
    free(m->owned);
    fy_msg_init(m);
}

void fy_msg_reset(struct fy_msg *m)
{
    struct fy_hdr *hdrs = m->hdrs;
    uint32_t cap = m->cap, owned_cap = m->owned_cap;
    char *owned = m->owned;
    fy_msg_init(m);
    m->hdrs = hdrs;
    m->cap = cap;
    m->owned = owned;
    m->owned_cap = owned_cap;
}

void fy_msg_move(struct fy_msg *to, struct fy_msg *from)
{
    FY_ASSERT(to->nhdrs == 0 && !to->owns);
    struct fy_msg spare = *to; /* empty: only its storage matters */
    *to = *from;
    *from = spare;
    fy_msg_reset(from);
}

int fy_msg_add(struct fy_msg *m, const char *name, uint32_t nlen, const char *value, uint32_t vlen,
               enum fy_token tok)
{
    if (m->nhdrs == m->cap) {
        uint32_t cap = m->cap ? m->cap * 2 : 16;
        struct fy_hdr *h = realloc(m->hdrs, cap * sizeof(*h));
        if (!h)
            return -1;
        m->hdrs = h;
        m->cap = cap;
    }
    m->hdrs[m->nhdrs++] = (struct fy_hdr){
        .name = name, .name_len = nlen, .value = value, .value_len = vlen, .tok = (uint8_t)tok};
    return 0;
}

struct fy_hdr *fy_msg_find_tok(struct fy_msg *m, enum fy_token tok)
{
    for (uint32_t i = 0; i < m->nhdrs; i++)
        if (m->hdrs[i].tok == tok && !m->hdrs[i].removed)
            return &m->hdrs[i];
    return NULL;
}

struct fy_hdr *fy_msg_find(struct fy_msg *m, const char *name, uint32_t nlen)
{
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        struct fy_hdr *h = &m->hdrs[i];
        if (!h->removed && fy_name_eq(h->name, h->name_len, name, nlen))
            return h;
    }
    return NULL;
}

int fy_msg_remove(struct fy_msg *m, const char *name, uint32_t nlen)
{
    int n = 0;
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        struct fy_hdr *h = &m->hdrs[i];
        if (!h->removed && fy_name_eq(h->name, h->name_len, name, nlen)) {
            h->removed = true;
            n++;
        }
    }
    return n;
}

int fy_msg_set(struct fy_msg *m, const char *name, uint32_t nlen, const char *value, uint32_t vlen)
{
    fy_msg_remove(m, name, nlen);
    return fy_msg_add(m, name, nlen, value, vlen, fy_token_lookup(name, nlen));
}

int fy_msg_set_tok(struct fy_msg *m, enum fy_token tok, const char *name, uint32_t nlen,
                   const char *value, uint32_t vlen)
{
    for (uint32_t i = 0; i < m->nhdrs; i++)
        if (m->hdrs[i].tok == tok)
            m->hdrs[i].removed = true;
    return fy_msg_add(m, name, nlen, value, vlen, tok);
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Calls fn for each trimmed, non-empty element of a comma-separated list. Stops when fn is true. */
static bool list_each(const char *v, uint32_t len, bool (*fn)(const char *, uint32_t, void *),
                      void *arg)
{
    uint32_t i = 0;
    while (i < len) {
        while (i < len && (is_ows(v[i]) || v[i] == ','))
            i++;
        uint32_t start = i;
        while (i < len && v[i] != ',')
            i++;
        uint32_t end = i;
        while (end > start && is_ows(v[end - 1]))
            end--;
        if (end > start && fn(v + start, end - start, arg))
            return true;
    }
    return false;
}

struct match_arg {
    const char *tok;
    uint32_t len;
};

static bool match_tok(const char *e, uint32_t n, void *arg)
{
    struct match_arg *a = arg;
    return n == a->len && strncasecmp(e, a->tok, n) == 0;
}

bool fy_list_has(const char *value, uint32_t vlen, const char *tok, uint32_t tlen)
{
    struct match_arg a = {tok, tlen};
    return list_each(value, vlen, match_tok, &a);
}

/* An Upgrade element (protocol-name["/"protocol-version]) the request offered: the same element,
 * or the same name where one side gives no version. */
struct offered_arg {
    const struct fy_msg *req;
    bool any;
};

static bool same_protocol(const char *e, uint32_t n, void *arg)
{
    const struct match_arg *want = arg;
    if (n == want->len && strncasecmp(e, want->tok, n) == 0)
        return true;
    const char *s1 = memchr(e, '/', n), *s2 = memchr(want->tok, '/', want->len);
    if (!s1 == !s2)
        return false; /* both versioned and different, or both bare and different */
    uint32_t n1 = s1 ? (uint32_t)(s1 - e) : n, n2 = s2 ? (uint32_t)(s2 - want->tok) : want->len;
    return n1 == n2 && strncasecmp(e, want->tok, n1) == 0;
}

static bool not_offered(const char *e, uint32_t n, void *arg)
{
    struct offered_arg *a = arg;
    a->any = true;
    struct match_arg want = {e, n};
    for (uint32_t i = 0; i < a->req->nhdrs; i++) {
        const struct fy_hdr *h = &a->req->hdrs[i];
        if (!h->removed && h->tok == FY_TOK_UPGRADE &&
            list_each(h->value, h->value_len, same_protocol, &want))
            return false;
    }
    return true; /* stops the walk: this one was not asked for */
}

bool fy_msg_upgrade_offered(const struct fy_msg *req, const struct fy_msg *resp)
{
    struct offered_arg a = {req, false};
    for (uint32_t i = 0; i < resp->nhdrs; i++) {
        const struct fy_hdr *h = &resp->hdrs[i];
        if (!h->removed && h->tok == FY_TOK_UPGRADE &&
            list_each(h->value, h->value_len, not_offered, &a))
            return false;
    }
    return a.any;
}

static bool hide_named(const char *e, uint32_t n, void *arg)
{
    struct fy_msg *m = arg;
    /* "close"/"keep-alive" are options, not field names; hiding them is harmless either way.
     * Host and Content-Length are never hop-by-hop: "Connection: host" must not strip them. */
    enum fy_token t = fy_token_lookup(e, n);
    if (t == FY_TOK_HOST || t == FY_TOK_CONTENT_LENGTH)
        return false;
    fy_msg_remove(m, e, n);
    return false;
}

void fy_msg_strip_hop_by_hop(struct fy_msg *m)
{
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        struct fy_hdr *h = &m->hdrs[i];
        if (h->removed || h->tok != FY_TOK_CONNECTION)
            continue;
        list_each(h->value, h->value_len, hide_named, m);
    }
    for (uint32_t i = 0; i < m->nhdrs; i++)
        if (fy_token_flags((enum fy_token)m->hdrs[i].tok) & FY_TOKF_HOP)
            m->hdrs[i].removed = true;
}

size_t fy_msg_fields_size(const struct fy_msg *m)
{
    size_t n = 0;
    for (uint32_t i = 0; i < m->nhdrs; i++)
        if (!m->hdrs[i].removed)
            n += (size_t)m->hdrs[i].name_len + m->hdrs[i].value_len + 4;
    return n;
}

static char *own_copy(char **p, const char *s, uint32_t n)
{
    char *d = *p;
    if (n)
        memcpy(d, s, n);
    *p += n;
    return d;
}

int fy_msg_own(struct fy_msg *m)
{
    size_t total = m->method_len + m->target_len + m->reason_len;
    for (uint32_t i = 0; i < m->nhdrs; i++)
        if (!m->hdrs[i].removed)
            total += m->hdrs[i].name_len + m->hdrs[i].value_len;
    /* The kept block is reused when it is large enough (it grows to the largest head seen),
     * unless the strings live in it already: then they are copied out of it into a new one. */
    char *block = m->owned, *old = NULL;
    if (!block || m->owns || m->owned_cap < total) {
        block = malloc(total ? total : 1);
        if (!block)
            return -1;
        old = m->owned;
        m->owned = block;
        m->owned_cap = (uint32_t)(total ? total : 1);
    }
    char *p = block;
    m->method = own_copy(&p, m->method, m->method_len);
    m->target = own_copy(&p, m->target, m->target_len);
    m->reason = own_copy(&p, m->reason, m->reason_len);
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        struct fy_hdr *h = &m->hdrs[i];
        if (h->removed) {
            h->name = h->value = "";
            h->name_len = h->value_len = 0;
            continue;
        }
        h->name = own_copy(&p, h->name, h->name_len);
        h->value = own_copy(&p, h->value, h->value_len);
    }
    free(old);
    m->owns = true;
    return 0;
}
