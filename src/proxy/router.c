/*
 * The route index of one listener; see router.h. fy_route_matches() is the meaning of a route;
 * the index only decides which routes are worth asking. It is correct as long as every route
 * that can match a request is among that request's candidates: the winner is then the matching
 * candidate with the lowest index, which is what a linear scan finds.
 *
 * Layout: one array of trie nodes and one array of route pointers for the whole router, built
 * once and never written again (so lookups need no lock). A "list" is a trie root:
 *   - `exact` maps an exact host to the list of routes naming it or a wildcard covering it;
 *   - `wild` maps a wildcard suffix (".example.com") to the routes whose wildcards cover every
 *     host under it;
 *   - `hostless` is the list of routes without a host condition. It is searched for every
 *     request besides the host's own list, instead of being copied into each host's list: that
 *     keeps memory linear in (routes x hosts they name) rather than growing with every host-less
 *     route times every host.
 * Each list's trie holds its routes under their path (exact, at the node where the walk must end)
 * or path-prefix (at the node the walk must pass); the others hang off the root as "always".
 *
 * Per-thread state: one pcre2_match_data and one scratch buffer for decoded query values, made on
 * first use and freed by fy_router_thread_release(), so matching allocates nothing per request.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "proxy/router.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "core/assert.h"
#include "http/tokens.h"

/* Unit tests define it to count the routes a lookup checks. */
#ifndef FY_ROUTER_TOUCH
#define FY_ROUTER_TOUCH() ((void)0)
#endif

#define NONE UINT32_MAX

enum ref_kind { K_PREFIX, K_EXACT, K_ALWAYS }; /* sort order of a node's route ranges */

struct rnode {
    uint32_t child, sibling; /* NONE when absent */
    /* refs[off..]: nprefix path-prefix routes, then nexact path routes, then nalways (roots). */
    uint32_t off, nprefix, nexact, nalways;
    unsigned char byte;
};

struct hslot {
    const char *key; /* NULL: empty slot; points into the routes' host strings */
    uint32_t len;
    uint32_t list; /* root node */
};

struct htab {
    struct hslot *slots;
    uint32_t mask;
    uint32_t count; /* keys: an empty table is never searched */
};

struct fy_router {
    struct rnode *nodes;
    const struct fy_route **refs;
    struct htab exact, wild;
    uint32_t hostless;
};

/* ---- per-thread match state ---- */

static __thread pcre2_match_data *tls_md;
static __thread char *tls_buf;
static __thread size_t tls_cap;

static pcre2_match_data *match_data(void)
{
    if (!tls_md)
        tls_md = pcre2_match_data_create(FY_ROUTE_MAX_CAPTURES, NULL);
    return tls_md;
}

void fy_router_thread_release(void)
{
    pcre2_match_data_free(tls_md);
    tls_md = NULL;
    free(tls_buf);
    tls_buf = NULL;
    tls_cap = 0;
}

/* Runs re over s; returns pcre2_match's count (>= 0) on a match, -1 otherwise. Errors (match or
 * depth limit hit, no match data for want of memory) count as no match: a condition that could
 * not be shown to hold must not select its route. */
static int regex_run(const fy_regex *re, const char *s, size_t len)
{
    pcre2_match_data *md = match_data();
    if (!md || !re)
        return -1;
    int rc = pcre2_match(re, (PCRE2_SPTR)(s ? s : ""), len, 0, 0, md, NULL);
    return rc >= 0 ? rc : -1;
}

int fy_regex_match(const fy_regex *re, const char *subject, size_t len, size_t *ovector,
                   uint32_t max)
{
    int rc = regex_run(re, subject, len);
    if (rc < 0)
        return 0;
    pcre2_match_data *md = match_data();
    /* rc pairs were set; 0 means more groups matched than the match data holds */
    uint32_t n = rc == 0 ? pcre2_get_ovector_count(md) : (uint32_t)rc;
    if (n > max)
        n = max;
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    for (uint32_t i = 0; i < 2 * n; i++)
        ovector[i] = ov[i];
    return n ? (int)n : 1;
}

/* ---- conditions ---- */

static unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c | 0x20) : c;
}

static bool ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return false;
    return true;
}

static bool bytes_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static bool is_wildcard(const char *h)
{
    return h[0] == '*' && h[1] == '.';
}

/* "*.example.com" covers a.example.com and a.b.example.com, not example.com: the host must be
 * longer than ".example.com" and end with it. */
static bool host_entry_matches(const char *e, const char *h, uint32_t hlen)
{
    size_t elen = strlen(e);
    if (is_wildcard(e)) {
        size_t slen = elen - 1;
        return hlen > slen && ieq(h + hlen - slen, e + 1, slen);
    }
    return elen == hlen && ieq(h, e, hlen);
}

static bool value_holds(const struct fy_kv_match *kv, const char *v, uint32_t vlen)
{
    switch (kv->kind) {
    case FY_VM_PRESENT:
        return true;
    case FY_VM_EQUALS:
        return bytes_eq(v, vlen, kv->value, kv->value_len);
    case FY_VM_REGEX:
        return regex_run(kv->re, v, vlen) >= 0;
    }
    return false;
}

static bool header_holds(const struct fy_kv_match *kv, const struct fy_msg *m)
{
    if (!m)
        return false;
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        const struct fy_hdr *h = &m->hdrs[i];
        if (!h->removed && fy_name_eq(h->name, h->name_len, kv->name, kv->name_len) &&
            value_holds(kv, h->value, h->value_len))
            return true;
    }
    return false;
}

/* One decoded byte of a query component at s[*i], advancing *i. A '%' not followed by two hex
 * digits stands for itself, as browsers and most frameworks read it. */
static unsigned char qbyte(const char *s, uint32_t n, uint32_t *i, bool plus_space)
{
    unsigned char c = (unsigned char)s[(*i)++];
    if (c == '+' && plus_space)
        return ' ';
    if (c == '%' && n - *i >= 2) {
        int hi = fy_hex_value((unsigned char)s[*i]), lo = fy_hex_value((unsigned char)s[*i + 1]);
        if (hi >= 0 && lo >= 0) {
            *i += 2;
            return (unsigned char)(hi << 4 | lo);
        }
    }
    return c;
}

static bool qdecoded_eq(const char *s, uint32_t n, bool plus_space, const char *want, uint32_t wlen)
{
    uint32_t i = 0, k = 0;
    while (i < n) {
        if (k == wlen || qbyte(s, n, &i, plus_space) != (unsigned char)want[k])
            return false;
        k++;
    }
    return k == wlen;
}

/* A regex sees the decoded value; values that need no decoding are matched where they lie. */
static bool qvalue_regex(const fy_regex *re, const char *v, uint32_t vlen)
{
    if (!memchr(v, '%', vlen) && !memchr(v, '+', vlen))
        return regex_run(re, v, vlen) >= 0;
    if (tls_cap < vlen) {
        /* Grows to the longest value seen and stays: one allocation per thread, not per request.
         * Without memory the condition does not hold (see regex_run). */
        size_t cap = tls_cap ? tls_cap : 256;
        while (cap < vlen)
            cap *= 2;
        char *p = realloc(tls_buf, cap);
        if (!p)
            return false;
        tls_buf = p;
        tls_cap = cap;
    }
    uint32_t i = 0, n = 0;
    while (i < vlen)
        tls_buf[n++] = (char)qbyte(v, vlen, &i, true);
    return regex_run(re, tls_buf, n) >= 0;
}

/* Parameters are split on '&' only (';' is data, per the WHATWG URL standard); a parameter
 * without '=' has an empty value. Names are percent-decoded; values also read '+' as a space. */
static bool query_holds(const struct fy_kv_match *kv, const char *q, uint32_t qlen)
{
    if (!q)
        return false;
    uint32_t i = 0;
    while (i <= qlen) {
        const char *p = q + i;
        const char *amp = memchr(p, '&', qlen - i);
        uint32_t plen = amp ? (uint32_t)(amp - p) : qlen - i;
        i += plen + 1;
        if (plen == 0)
            continue;
        const char *eq = memchr(p, '=', plen);
        uint32_t nlen = eq ? (uint32_t)(eq - p) : plen;
        const char *v = eq ? eq + 1 : p + plen;
        uint32_t vlen = eq ? plen - nlen - 1 : 0;
        if (!qdecoded_eq(p, nlen, false, kv->name, kv->name_len))
            continue;
        bool ok = false;
        switch (kv->kind) {
        case FY_VM_PRESENT:
            ok = true;
            break;
        case FY_VM_EQUALS:
            ok = qdecoded_eq(v, vlen, true, kv->value, kv->value_len);
            break;
        case FY_VM_REGEX:
            ok = kv->re && qvalue_regex(kv->re, v, vlen);
            break;
        }
        if (ok)
            return true;
    }
    return false;
}

static bool method_holds(const struct fy_match *m, const struct fy_msg *msg)
{
    if (!msg || !msg->method)
        return false;
    for (uint32_t i = 0; i < m->nmethods; i++)
        if (bytes_eq(msg->method, msg->method_len, m->methods[i], strlen(m->methods[i])))
            return true;
    return false;
}

/* host_proven: the route was found through the host table, which only lists routes whose host
 * condition holds for this host: no need to compare the names again. */
static bool conditions_hold(const struct fy_match *m, const struct fy_route_req *req,
                            bool host_proven)
{
    if (m->nhosts && !host_proven) {
        if (!req->host)
            return false;
        uint32_t i = 0;
        while (i < m->nhosts && !host_entry_matches(m->hosts[i], req->host, req->host_len))
            i++;
        if (i == m->nhosts)
            return false;
    }
    if (m->path && !bytes_eq(req->path, req->path_len, m->path, strlen(m->path)))
        return false;
    if (m->path_prefix) {
        /* A byte prefix, not a segment prefix: "/v1/" does not match "/v1", and "/v1" matches
         * "/v1beta". Configurations say which they mean by the trailing slash. */
        size_t n = strlen(m->path_prefix);
        if (n > req->path_len || (n && memcmp(req->path, m->path_prefix, n) != 0))
            return false;
    }
    if (m->nmethods && !method_holds(m, req->msg))
        return false;
    for (uint32_t i = 0; i < m->nheaders; i++)
        if (!header_holds(&m->headers[i], req->msg))
            return false;
    for (uint32_t i = 0; i < m->nquery; i++)
        if (!query_holds(&m->query[i], req->query, req->query_len))
            return false;
    return true;
}

static bool route_matches(const struct fy_route *rt, const struct fy_route_req *req,
                          struct fy_route_result *out, bool host_proven)
{
    out->route = NULL;
    out->ncaptures = 0;
    if (rt->has_match && !conditions_hold(&rt->match, req, host_proven))
        return false;
    uint32_t n = 0;
    /* Last, as the dearest test; and the header regexes share its match data. */
    if (rt->has_match && rt->match.path_regex) {
        int rc = regex_run(rt->match.path_regex, req->path, req->path_len);
        if (rc < 0)
            return false;
        /* 0: more groups than the ovector holds, which is then full. */
        n = rc == 0 ? FY_ROUTE_MAX_CAPTURES : (uint32_t)rc;
        memcpy(out->ovector, pcre2_get_ovector_pointer(tls_md), 2 * n * sizeof(size_t));
    }
    /* pcre2 leaves pairs past the pattern's groups as they were: never let stale ones out. */
    for (uint32_t i = 2 * n; i < 2 * FY_ROUTE_MAX_CAPTURES; i++)
        out->ovector[i] = PCRE2_UNSET;
    out->ncaptures = n;
    out->route = rt;
    return true;
}

bool fy_route_matches(const struct fy_route *rt, const struct fy_route_req *req,
                      struct fy_route_result *out)
{
    return route_matches(rt, req, out, false);
}

/* ---- lookup ---- */

static uint32_t hash_host(const char *s, uint32_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a, over lower case to agree with host_entry_matches */
    for (uint32_t i = 0; i < n; i++)
        h = (h ^ lower((unsigned char)s[i])) * 16777619u;
    return h;
}

static const struct hslot *htab_find(const struct htab *t, const char *k, uint32_t n)
{
    for (uint32_t i = hash_host(k, n) & t->mask;; i = (i + 1) & t->mask) {
        const struct hslot *s = &t->slots[i];
        if (!s->key)
            return NULL;
        if (s->len == n && ieq(s->key, k, n))
            return s;
    }
}

struct search {
    const struct fy_route_req *req;
    struct fy_route_result *out;
    uint32_t best;    /* index of the best match so far, NONE before one */
    bool host_proven; /* searching a host table's list */
};

/* A range is in index order, so once its next route cannot beat the best, neither can the rest:
 * taking the lowest first match over every range equals merging them and stopping at the first
 * match. */
static void scan(const struct fy_router *r, uint32_t off, uint32_t n, struct search *s)
{
    for (uint32_t k = off; k < off + n; k++) {
        const struct fy_route *rt = r->refs[k];
        if (rt->index >= s->best)
            return;
        FY_ROUTER_TOUCH();
        struct fy_route_result res;
        if (route_matches(rt, s->req, &res, s->host_proven)) {
            s->best = rt->index;
            *s->out = res;
            return;
        }
    }
}

static void search_list(const struct fy_router *r, uint32_t root, struct search *s)
{
    const struct rnode *rootn = &r->nodes[root], *nd = rootn;
    scan(r, nd->off, nd->nprefix, s);
    uint32_t i = 0;
    for (; i < s->req->path_len; i++) {
        unsigned char want = (unsigned char)s->req->path[i];
        uint32_t c = nd->child;
        while (c != NONE && r->nodes[c].byte != want)
            c = r->nodes[c].sibling;
        if (c == NONE)
            break; /* routes below need more of the path than there is */
        nd = &r->nodes[c];
        scan(r, nd->off, nd->nprefix, s);
    }
    if (i == s->req->path_len)
        scan(r, nd->off + nd->nprefix, nd->nexact, s);
    /* Last: these are regexes and catch-alls, dear or late in the file, and a match found above
     * with a lower index spares running them at all. */
    scan(r, rootn->off + rootn->nprefix + rootn->nexact, rootn->nalways, s);
}

bool fy_router_match(const struct fy_router *r, const struct fy_route_req *req,
                     struct fy_route_result *out)
{
    struct search s = {.req = req, .out = out, .best = NONE};
    out->route = NULL;
    out->ncaptures = 0;
    if (req->host && (r->exact.count || r->wild.count)) {
        const struct hslot *slot =
            r->exact.count ? htab_find(&r->exact, req->host, req->host_len) : NULL;
        /* Not a named host: the longest wildcard suffix; dots from the left, and not at 0, since
         * a wildcard never covers its own apex. */
        for (uint32_t p = 1; !slot && r->wild.count && p < req->host_len; p++)
            if (req->host[p] == '.')
                slot = htab_find(&r->wild, req->host + p, req->host_len - p);
        if (slot) {
            s.host_proven = true;
            search_list(r, slot->list, &s);
            s.host_proven = false;
        }
    }
    search_list(r, r->hostless, &s);
    return s.best != NONE;
}

uint32_t fy_route_host_key(const char *host, uint32_t len, char *out)
{
    uint32_t n = len;
    /* An IPv6 literal has colons of its own: the port can only follow the bracket. */
    const char *end = len && host[0] == '[' ? memchr(host, ']', len) : NULL;
    if (end)
        n = (uint32_t)(end - host) + 1;
    else if (len && host[0] != '[' && (end = memchr(host, ':', len)))
        n = (uint32_t)(end - host);
    /* "a.example." is the same name as "a.example" (a fully qualified one): a route for the
     * one must not be missed by the other, as nginx drops the dot before server_name too. */
    if (n > 1 && host[n - 1] == '.' && host[0] != '[')
        n--;
    for (uint32_t i = 0; i < n; i++)
        out[i] = (char)lower((unsigned char)host[i]);
    return n;
}

/* ---- build ---- */

struct rvec {
    const struct fy_route **v;
    uint32_t n, cap;
};

struct pending {
    uint32_t node;
    enum ref_kind kind;
    const struct fy_route *rt;
};

struct builder {
    struct fy_router *r;
    uint32_t nnodes, nodes_cap;
    struct pending *pend;
    uint32_t npend, pend_cap;
    struct rvec *exact_direct, *wild_direct; /* per slot: routes naming that key */
    struct rvec tmp;
};

/* Doubles *cap until n more fit; 0 or -1. */
static int grow(void **p, uint32_t *cap, uint32_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    uint32_t cap2 = *cap ? *cap : 8;
    while (cap2 < need)
        cap2 *= 2;
    void *q = realloc(*p, (size_t)cap2 * size);
    if (!q)
        return -1;
    *p = q;
    *cap = cap2;
    return 0;
}

static int rvec_push(struct rvec *v, const struct fy_route *rt)
{
    if (grow((void **)&v->v, &v->cap, v->n + 1, sizeof(*v->v)) < 0)
        return -1;
    v->v[v->n++] = rt;
    return 0;
}

static int rvec_append(struct rvec *v, const struct rvec *from)
{
    for (uint32_t i = 0; i < from->n; i++)
        if (rvec_push(v, from->v[i]) < 0)
            return -1;
    return 0;
}

static int by_index(const void *a, const void *b)
{
    const struct fy_route *x = *(const struct fy_route *const *)a;
    const struct fy_route *y = *(const struct fy_route *const *)b;
    return (x->index > y->index) - (x->index < y->index);
}

/* A route naming both a.example.com and *.example.com reaches a.example.com's list twice. */
static void rvec_sort_unique(struct rvec *v)
{
    if (v->n > 1)
        qsort(v->v, v->n, sizeof(*v->v), by_index);
    uint32_t w = 0;
    for (uint32_t i = 0; i < v->n; i++)
        if (w == 0 || v->v[w - 1] != v->v[i])
            v->v[w++] = v->v[i];
    v->n = w;
}

static int htab_init(struct htab *t, uint32_t n)
{
    uint32_t cap = 2;
    while (cap < 2 * n) /* at most half full, so probes stay short and always end */
        cap *= 2;
    t->slots = calloc(cap, sizeof(*t->slots));
    t->mask = cap - 1;
    return t->slots ? 0 : -1;
}

static uint32_t htab_insert(struct htab *t, const char *k, uint32_t n)
{
    uint32_t i = hash_host(k, n) & t->mask;
    while (t->slots[i].key && !(t->slots[i].len == n && ieq(t->slots[i].key, k, n)))
        i = (i + 1) & t->mask;
    if (!t->slots[i].key) {
        t->slots[i] = (struct hslot){.key = k, .len = n, .list = NONE};
        t->count++;
    }
    return i;
}

static uint32_t new_node(struct builder *b, unsigned char byte)
{
    if (grow((void **)&b->r->nodes, &b->nodes_cap, b->nnodes + 1, sizeof(struct rnode)) < 0)
        return NONE;
    b->r->nodes[b->nnodes] = (struct rnode){.child = NONE, .sibling = NONE, .byte = byte};
    return b->nnodes++;
}

static uint32_t trie_insert(struct builder *b, uint32_t root, const char *s)
{
    uint32_t cur = root;
    for (; *s; s++) {
        uint32_t c = b->r->nodes[cur].child;
        while (c != NONE && b->r->nodes[c].byte != (unsigned char)*s)
            c = b->r->nodes[c].sibling;
        if (c == NONE) {
            if ((c = new_node(b, (unsigned char)*s)) == NONE)
                return NONE;
            b->r->nodes[c].sibling = b->r->nodes[cur].child;
            b->r->nodes[cur].child = c;
        }
        cur = c;
    }
    return cur;
}

/* A new list over v (in index order); returns its root or NONE. */
static uint32_t build_list(struct builder *b, const struct rvec *v)
{
    uint32_t root = new_node(b, 0);
    if (root == NONE)
        return NONE;
    for (uint32_t i = 0; i < v->n; i++) {
        const struct fy_route *rt = v->v[i];
        const struct fy_match *m = &rt->match;
        uint32_t node = root;
        enum ref_kind kind = K_ALWAYS;
        /* With both path and path-prefix, the exact path is the stronger condition: the prefix
         * can only hold as well if it is a prefix of it, which fy_route_matches checks. */
        if (rt->has_match && m->path) {
            kind = K_EXACT;
            node = trie_insert(b, root, m->path);
        } else if (rt->has_match && m->path_prefix) {
            kind = K_PREFIX;
            node = trie_insert(b, root, m->path_prefix);
        }
        if (node == NONE || grow((void **)&b->pend, &b->pend_cap, b->npend + 1, sizeof(*b->pend)))
            return NONE;
        b->pend[b->npend++] = (struct pending){.node = node, .kind = kind, .rt = rt};
    }
    return root;
}

static int by_node_kind_index(const void *a, const void *b)
{
    const struct pending *x = a, *y = b;
    if (x->node != y->node)
        return x->node < y->node ? -1 : 1;
    if (x->kind != y->kind)
        return x->kind < y->kind ? -1 : 1;
    return (x->rt->index > y->rt->index) - (x->rt->index < y->rt->index);
}

/* Lays each node's routes out contiguously in refs, grouped by kind, each group in index order. */
static int finish(struct builder *b)
{
    struct fy_router *r = b->r;
    if (b->npend > 1) /* qsort wants an array even for none */
        qsort(b->pend, b->npend, sizeof(*b->pend), by_node_kind_index);
    r->refs = malloc((b->npend ? b->npend : 1) * sizeof(*r->refs));
    if (!r->refs)
        return -1;
    for (uint32_t k = 0; k < b->npend; k++) {
        struct rnode *nd = &r->nodes[b->pend[k].node];
        if (k == 0 || b->pend[k - 1].node != b->pend[k].node)
            nd->off = k;
        r->refs[k] = b->pend[k].rt;
        if (b->pend[k].kind == K_PREFIX)
            nd->nprefix++;
        else if (b->pend[k].kind == K_EXACT)
            nd->nexact++;
        else
            nd->nalways++;
    }
    return 0;
}

/* Routes naming each host, and each wildcard, straight from the file. */
static int collect_hosts(struct builder *b, const struct rvec *order)
{
    struct fy_router *r = b->r;
    for (uint32_t i = 0; i < order->n; i++) {
        const struct fy_route *rt = order->v[i];
        if (!rt->has_match)
            continue;
        for (uint32_t h = 0; h < rt->match.nhosts; h++) {
            const char *name = rt->match.hosts[h];
            bool wild = is_wildcard(name);
            struct htab *t = wild ? &r->wild : &r->exact;
            const char *key = wild ? name + 1 : name;
            uint32_t slot = htab_insert(t, key, (uint32_t)strlen(key));
            struct rvec *v = &(wild ? b->wild_direct : b->exact_direct)[slot];
            /* Routes come in index order, so a repeat can only be the last one pushed. */
            if ((v->n == 0 || v->v[v->n - 1] != rt) && rvec_push(v, rt) < 0)
                return -1;
        }
    }
    return 0;
}

/* Appends the routes of every wildcard covering key (suffixes at a '.' from position `from`). */
static int add_covering(struct builder *b, const char *key, uint32_t len, uint32_t from)
{
    for (uint32_t p = from; p < len; p++) {
        if (key[p] != '.')
            continue;
        const struct hslot *s = htab_find(&b->r->wild, key + p, len - p);
        if (s && rvec_append(&b->tmp, &b->wild_direct[s - b->r->wild.slots]) < 0)
            return -1;
    }
    return 0;
}

/* Builds the list of every used slot of t: its own routes (exact hosts) plus the wildcards that
 * cover it. A wildcard key covers itself (from 0); an exact host is not covered by a wildcard
 * equal to it, only by shorter ones (from 1). */
static int build_host_lists(struct builder *b, struct htab *t, const struct rvec *direct,
                            uint32_t from)
{
    for (uint32_t i = 0; i <= t->mask; i++) {
        struct hslot *s = &t->slots[i];
        if (!s->key)
            continue;
        b->tmp.n = 0;
        if (direct && rvec_append(&b->tmp, &direct[i]) < 0)
            return -1;
        if (add_covering(b, s->key, s->len, from) < 0)
            return -1;
        rvec_sort_unique(&b->tmp);
        if ((s->list = build_list(b, &b->tmp)) == NONE)
            return -1;
    }
    return 0;
}

static void builder_free(struct builder *b)
{
    for (uint32_t i = 0; b->exact_direct && i <= b->r->exact.mask; i++)
        free(b->exact_direct[i].v);
    for (uint32_t i = 0; b->wild_direct && i <= b->r->wild.mask; i++)
        free(b->wild_direct[i].v);
    free(b->exact_direct);
    free(b->wild_direct);
    free(b->pend);
    free(b->tmp.v);
}

struct fy_router *fy_router_build(const struct fy_listener_conf *l)
{
    struct fy_router *r = calloc(1, sizeof(*r));
    struct builder b = {.r = r};
    struct rvec order = {0};
    if (!r)
        return NULL;
    uint32_t nhosts = 0;
    for (uint32_t i = 0; i < l->nroutes; i++) {
        if (rvec_push(&order, &l->routes[i]) < 0)
            goto fail;
        if (l->routes[i].has_match)
            nhosts += l->routes[i].match.nhosts;
    }
    if (order.n > 1)
        qsort(order.v, order.n, sizeof(*order.v), by_index);
    for (uint32_t i = 1; i < order.n; i++)
        FY_ASSERT(order.v[i - 1]->index < order.v[i]->index); /* "first" must mean one route */
    if (htab_init(&r->exact, nhosts) < 0 || htab_init(&r->wild, nhosts) < 0)
        goto fail;
    b.exact_direct = calloc(r->exact.mask + 1, sizeof(*b.exact_direct));
    b.wild_direct = calloc(r->wild.mask + 1, sizeof(*b.wild_direct));
    if (!b.exact_direct || !b.wild_direct || collect_hosts(&b, &order) < 0)
        goto fail;
    for (uint32_t i = 0; i < order.n; i++) {
        const struct fy_route *rt = order.v[i];
        if ((!rt->has_match || rt->match.nhosts == 0) && rvec_push(&b.tmp, rt) < 0)
            goto fail;
    }
    if ((r->hostless = build_list(&b, &b.tmp)) == NONE)
        goto fail;
    if (build_host_lists(&b, &r->exact, b.exact_direct, 1) < 0 ||
        build_host_lists(&b, &r->wild, NULL, 0) < 0 || finish(&b) < 0)
        goto fail;
    builder_free(&b);
    free(order.v);
    return r;
fail:
    builder_free(&b);
    free(order.v);
    fy_router_free(r);
    return NULL;
}

void fy_router_free(struct fy_router *r)
{
    if (!r)
        return;
    free(r->nodes);
    free(r->refs);
    free(r->exact.slots);
    free(r->wild.slots);
    free(r);
}
