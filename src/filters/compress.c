/*
 * Response compression (compress: on a listener or a route): a response hook that decides for
 * each upstream response whether its body is worth encoding and which coding the client gets,
 * rewrites the head to match, and adds an encoder to the body filter chain. The encoding itself
 * streams (filters/codec_filter.c); the session re-frames the body.
 *
 * A response is compressed when all of these hold (the rules nginx's gzip and Caddy's encode
 * follow, RFC 9110 8.4 and RFC 9111 5.2.2.6):
 *  - it has a body for this client: not HEAD, 1xx, 204 or 304 (the session offers no chain
 *    then), and not 206, whose byte ranges refer to the unencoded representation;
 *  - it is not encoded already (a Content-Encoding other than identity);
 *  - Cache-Control does not say no-transform;
 *  - its media type is in `types`, and a Content-Length, when there is one, is at least min-size.
 * Such a response varies by Accept-Encoding whatever this client asked, so it gets
 * `Vary: Accept-Encoding` even when it goes out unencoded (a cache must not serve the identity
 * body to a client that accepts gzip, nor the reverse). Then the coding is the client's best
 * (filters/accept_encoding.c) among the enabled ones, ties going to `prefer`. An encoded response
 * loses Content-Length (its length is not known before the end), Accept-Ranges (ranges would be
 * of the encoded bytes) and the strength of its ETag: the bytes differ from the upstream's, so a
 * strong validator would lie (RFC 9110 8.8.1); W/ keeps it usable for revalidation.
 */
#include "filters/compress.h"

#include <fnmatch.h>
#include <string.h>

#include "filters/accept_encoding.h"
#include "filters/codec.h"
#include "filters/codec_filter.h"
#include "http/tokens.h"

static const struct fy_compress_conf *conf_for(const struct fy_exchange *x)
{
    const struct fy_compress_conf *c = x->route && x->route->compress ? x->route->compress
                                       : x->listener                  ? x->listener->compress
                                                                      : NULL;
    return c && c->on ? c : NULL;
}

/* The media type of a Content-Type value, lowercase, without parameters ("" when too long). */
static void media_type(const char *v, uint32_t len, char *out, size_t cap)
{
    while (len && (*v == ' ' || *v == '\t'))
        v++, len--;
    size_t n = 0;
    for (uint32_t i = 0; i < len && v[i] != ';' && v[i] != ' ' && v[i] != '\t'; i++) {
        if (n + 1 >= cap) {
            n = 0;
            break;
        }
        char ch = v[i];
        out[n++] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
    }
    out[n] = '\0';
}

bool fy_compress_type_allowed(const struct fy_compress_conf *c, const char *ctype, uint32_t len)
{
    char type[128];
    media_type(ctype, len, type, sizeof(type));
    if (!type[0])
        return false;
    for (uint32_t i = 0; i < c->ntypes; i++)
        if (fnmatch(c->types[i], type, 0) == 0)
            return true;
    return false;
}

static bool field_has(struct fy_msg *m, const char *name, uint32_t nlen, const char *tok)
{
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        const struct fy_hdr *h = &m->hdrs[i];
        if (!h->removed && h->name_len == nlen && strncasecmp(h->name, name, nlen) == 0 &&
            fy_list_has(h->value, h->value_len, tok, (uint32_t)strlen(tok)))
            return true;
    }
    return false;
}

int fy_content_coding(const struct fy_msg *m)
{
    int coding = FY_CODING_IDENTITY;
    bool seen = false;
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        const struct fy_hdr *h = &m->hdrs[i];
        if (h->removed || h->name_len != 16 || strncasecmp(h->name, "Content-Encoding", 16))
            continue;
        const char *v = h->value;
        uint32_t n = h->value_len;
        while (n && (*v == ' ' || *v == '\t'))
            v++, n--;
        while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        if (!n)
            continue;
        if (seen || memchr(v, ',', n))
            return -1; /* codings stacked */
        coding = fy_coding_parse(v, n);
        seen = true;
    }
    return coding;
}

static bool eligible(const struct fy_compress_conf *c, struct fy_msg *m)
{
    if (m->status < 200 || m->status == 204 || m->status == 206 || m->status == 304)
        return false;
    /* Encoded already: any Content-Encoding but identity (stacked or unknown ones too). */
    if (fy_content_coding(m) != FY_CODING_IDENTITY ||
        field_has(m, "Cache-Control", 13, "no-transform"))
        return false;
    const struct fy_hdr *ct = fy_msg_find(m, "Content-Type", 12);
    if (!ct || !fy_compress_type_allowed(c, ct->value, ct->value_len))
        return false;
    return m->content_length < 0 || (uint64_t)m->content_length >= c->min_size;
}

int fy_compress_vary(struct fy_msg *m)
{
    if (field_has(m, "Vary", 4, "accept-encoding") || field_has(m, "Vary", 4, "*"))
        return 0;
    return fy_msg_add(m, "Vary", 4, "Accept-Encoding", 15, FY_TOK_OTHER);
}

void fy_compress_client_ae(const struct fy_exchange *x, struct fy_accept_enc *ae)
{
    fy_ae_init(ae);
    for (uint8_t i = 0; i < x->n_accept_encoding; i++)
        fy_ae_add(ae, x->accept_encoding[i].value, x->accept_encoding[i].len);
}

static enum fy_coding pick(const struct fy_compress_conf *c, const struct fy_exchange *x)
{
    struct fy_accept_enc ae;
    fy_compress_client_ae(x, &ae);
    unsigned enabled = 0;
    for (uint8_t i = 0; i < c->nprefer; i++)
        enabled |= 1u << c->prefer[i];
    return fy_ae_pick(&ae, enabled, c->prefer, c->nprefer);
}

/* ETag: "x" becomes W/"x"; a weak one stays. */
static int weaken_etag(struct fy_exchange *x, struct fy_msg *m)
{
    struct fy_hdr *h = fy_msg_find(m, "ETag", 4);
    if (!h || h->value_len == 0 || h->value[0] != '"')
        return 0;
    char *v = fy_exchange_alloc(x, h->value_len + 2);
    if (!v)
        return -1;
    memcpy(v, "W/", 2);
    memcpy(v + 2, h->value, h->value_len);
    h->value = v;
    h->value_len += 2;
    return 0;
}

/* A 304 stands for the 200 the client has (RFC 9110 15.4.5): if that one was compressed, the
 * client revalidates with its weakened tag, and the 304 must carry the same W/"x" (a cache
 * matches the 304 to its stored response by it) and the same Vary. The 304 has no Content-Type
 * to judge by, so the client's own If-None-Match tells: it names W/"x" where the upstream's tag
 * is "x". */
static int revalidated(struct fy_exchange *x, struct fy_msg *m)
{
    const struct fy_hdr *etag = fy_msg_find(m, "ETag", 4);
    if (!x->req || !etag || etag->value_len < 2 || etag->value[0] != '"' || etag->value_len > 250)
        return 0;
    char weak[256];
    memcpy(weak, "W/", 2);
    memcpy(weak + 2, etag->value, etag->value_len);
    bool named = false;
    for (uint32_t i = 0; i < x->req->nhdrs && !named; i++) {
        const struct fy_hdr *h = &x->req->hdrs[i];
        named = !h->removed && fy_name_eq(h->name, h->name_len, "If-None-Match", 13) &&
                fy_list_has(h->value, h->value_len, weak, etag->value_len + 2);
    }
    if (!named)
        return 0;
    return weaken_etag(x, m) < 0 || fy_compress_vary(m) < 0 ? -1 : 0;
}

static enum fy_hook_result compress_response(struct fy_exchange *x, struct fy_msg *m)
{
    const struct fy_compress_conf *c = conf_for(x);
    if (c && m->status == 304)
        return revalidated(x, m) < 0 ? FY_HOOK_ERROR : FY_HOOK_CONTINUE;
    if (!c || !x->body_filters || !eligible(c, m))
        return FY_HOOK_CONTINUE;
    if (fy_compress_vary(m) < 0)
        return FY_HOOK_ERROR;
    enum fy_coding coding = pick(c, x);
    if (coding == FY_CODING_IDENTITY)
        return FY_HOOK_CONTINUE;
    struct fy_bfilter *f = fy_encode_filter_new(coding, c->level[coding]);
    if (!f || fy_bf_chain_add(x->body_filters, f) < 0)
        return FY_HOOK_CONTINUE; /* out of memory: the body goes out as it is */
    const char *name = fy_coding_name(coding);
    if (fy_msg_set(m, "Content-Encoding", 16, name, (uint32_t)strlen(name)) < 0 ||
        weaken_etag(x, m) < 0)
        return FY_HOOK_ERROR;
    fy_msg_remove(m, "Accept-Ranges", 13);
    return FY_HOOK_CONTINUE;
}

const struct fy_hook fy_compress_hook = {
    .name = "compress",
    .response = compress_response,
};
