/*
 * The ClientHello sniffer (see tls_sniff.h). Input comes straight from a client, so every read
 * goes through a cursor that checks the bytes are there first; a length field is trusted only
 * after it was checked against what encloses it (record, message, extension block).
 *
 * The ClientHello may span several handshake records (RFC 8446 5.1): the message is reassembled
 * into a local buffer, which FY_SNIFF_MAX bounds (the record headers count against it), so the
 * sniffer never needs more than one peek of FY_SNIFF_MAX bytes to decide.
 */
#include <stdint.h>
#include <string.h>

#include "net/tls_sniff.h"

#define REC_HANDSHAKE 0x16
#define HS_CLIENT_HELLO 0x01
#define EXT_SERVER_NAME 0x0000
#define NAME_HOST 0x00
#define MAX_FRAGMENT 16384 /* a plaintext record's payload limit (RFC 8446 5.1) */

/* A bounded reader: every get fails rather than read past `len`. */
struct cursor {
    const uint8_t *p;
    size_t len, off;
};

static bool get_u8(struct cursor *c, uint32_t *v)
{
    if (c->len - c->off < 1)
        return false;
    *v = c->p[c->off++];
    return true;
}

static bool get_u16(struct cursor *c, uint32_t *v)
{
    if (c->len - c->off < 2)
        return false;
    *v = (uint32_t)c->p[c->off] << 8 | c->p[c->off + 1];
    c->off += 2;
    return true;
}

/* n bytes as a sub-cursor (or skipped, when sub is NULL). */
static bool get_bytes(struct cursor *c, size_t n, struct cursor *sub)
{
    if (c->len - c->off < n)
        return false;
    if (sub)
        *sub = (struct cursor){.p = c->p + c->off, .len = n, .off = 0};
    c->off += n;
    return true;
}

static size_t left(const struct cursor *c)
{
    return c->len - c->off;
}

bool fy_tls_sniff_host_valid(const char *name, size_t len)
{
    if (len == 0 || len > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        if (ch == '.') {
            if (label == 0 || name[i - 1] == '-')
                return false; /* empty label, or one ending with '-' */
            label = 0;
            continue;
        }
        /* Letters, digits and '-' (RFC 1123), and '_': not a host name character, but names
         * with one are in real use (service labels, some internal hosts), resolve, and
         * OpenSSL, browsers and Squid accept them in an SNI and a certificate. */
        bool ldh = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                   (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
        if (!ldh || (ch == '-' && label == 0) || ++label > 63)
            return false;
    }
    return label > 0 && name[len - 1] != '-';
}

/* One host_name (RFC 6066 3): checked, lower-cased into sni. */
static enum fy_sniff copy_host(const struct cursor *name, char *sni, size_t sni_cap)
{
    const char *h = (const char *)name->p;
    size_t n = name->len;
    if (n > 1 && h[n - 1] == '.')
        n--; /* RFC 6066 says no trailing dot; some clients send one anyway: the same name */
    if (!fy_tls_sniff_host_valid(h, n) || n >= sni_cap)
        return FY_SNIFF_BAD;
    for (size_t i = 0; i < n; i++)
        sni[i] = (char)(h[i] >= 'A' && h[i] <= 'Z' ? h[i] + 32 : h[i]);
    sni[n] = '\0';
    return FY_SNIFF_TLS;
}

/* The caller's copy of a checked name; none when sni is NULL. */
static enum fy_sniff give_name(const char *name, char *sni, size_t sni_cap)
{
    size_t n = strlen(name);
    if (!sni)
        return FY_SNIFF_TLS;
    if (n >= sni_cap)
        return FY_SNIFF_BAD;
    memcpy(sni, name, n + 1);
    return FY_SNIFF_TLS;
}

/* The ServerNameList. Like OpenSSL (which terminates the handshake anyway), exactly one entry,
 * of type host_name: RFC 6066 forbids two of one type and defines no other. */
static enum fy_sniff server_name_list(struct cursor *ext, char *name, size_t cap)
{
    uint32_t list_len, type, name_len;
    struct cursor list, host;
    if (!get_u16(ext, &list_len) || list_len != left(ext) || !get_bytes(ext, list_len, &list))
        return FY_SNIFF_BAD;
    if (!get_u8(&list, &type) || type != NAME_HOST || !get_u16(&list, &name_len) || name_len == 0 ||
        name_len != left(&list) || !get_bytes(&list, name_len, &host))
        return FY_SNIFF_BAD;
    return copy_host(&host, name, cap);
}

enum fy_sniff fy_tls_sniff_server_name_ext(const void *ext, size_t len, char *sni, size_t sni_cap)
{
    char name[FY_SNIFF_SNI_CAP];
    struct cursor c = {.p = ext, .len = len};
    if (sni && sni_cap)
        sni[0] = '\0';
    enum fy_sniff r = server_name_list(&c, name, sizeof(name));
    if (r != FY_SNIFF_TLS)
        return r;
    return give_name(name, sni, sni_cap);
}

/* The ClientHello's body (RFC 8446 4.1.2, the same layout for TLS 1.0 to 1.2). */
static enum fy_sniff client_hello(struct cursor *c, char *name, size_t cap)
{
    uint32_t version, sid_len, cs_len, comp_len, ext_len;
    name[0] = '\0';
    if (!get_u16(c, &version) || version >> 8 != 3 || !get_bytes(c, 32, NULL) ||
        !get_u8(c, &sid_len) || sid_len > 32 || !get_bytes(c, sid_len, NULL) ||
        !get_u16(c, &cs_len) || cs_len < 2 || cs_len % 2 || !get_bytes(c, cs_len, NULL) ||
        !get_u8(c, &comp_len) || comp_len < 1 || !get_bytes(c, comp_len, NULL))
        return FY_SNIFF_BAD;
    if (left(c) == 0)
        return FY_SNIFF_TLS; /* no extensions at all (an old client): no SNI */
    struct cursor exts;
    if (!get_u16(c, &ext_len) || ext_len != left(c) || !get_bytes(c, ext_len, &exts))
        return FY_SNIFF_BAD;
    bool seen = false;
    while (left(&exts)) {
        uint32_t type, len;
        struct cursor ext;
        if (!get_u16(&exts, &type) || !get_u16(&exts, &len) || !get_bytes(&exts, len, &ext))
            return FY_SNIFF_BAD;
        if (type != EXT_SERVER_NAME)
            continue;
        if (seen) /* an extension appears at most once (RFC 8446 4.2) */
            return FY_SNIFF_BAD;
        seen = true;
        if (server_name_list(&ext, name, cap) != FY_SNIFF_TLS)
            return FY_SNIFF_BAD;
    }
    return FY_SNIFF_TLS;
}

enum fy_sniff fy_tls_sniff_client_hello(const void *buf, size_t len, char *sni, size_t sni_cap)
{
    const uint8_t *b = buf;
    uint8_t msg[MAX_FRAGMENT]; /* the handshake message, reassembled */
    size_t have = 0, want = 4; /* bytes of msg gathered; needed: its header, then all of it */
    bool want_known = false;
    if (sni && sni_cap)
        sni[0] = '\0';
    if (len > FY_SNIFF_MAX)
        len = FY_SNIFF_MAX; /* what lies beyond is never needed */
    for (size_t o = 0;;) {
        /* A record header at o. The first one decides TLS or not; a later one that is not a
         * handshake record interrupts the ClientHello, which TLS forbids. */
        enum fy_sniff wrong = o == 0 ? FY_SNIFF_NOT_TLS : FY_SNIFF_BAD;
        if (o > 0 && o + 6 > FY_SNIFF_MAX)
            return FY_SNIFF_BAD; /* no room for another record with a byte in it */
        if (o >= len)
            return FY_SNIFF_NEED_MORE;
        if (b[o] != REC_HANDSHAKE || (len - o >= 2 && b[o + 1] != 3))
            return wrong;
        if (len - o < 5)
            return FY_SNIFF_NEED_MORE;
        size_t rl = (size_t)b[o + 3] << 8 | b[o + 4];
        if (rl == 0 || rl > MAX_FRAGMENT)
            return FY_SNIFF_BAD;
        size_t k = 0; /* payload bytes of this record taken */
        while (k < rl && have < want) {
            /* Every byte the message still needs must lie within FY_SNIFF_MAX (later records
             * only add headers). */
            if (want_known && o + 5 + k + (want - have) > FY_SNIFF_MAX)
                return FY_SNIFF_BAD;
            if (o + 5 + k >= len)
                return FY_SNIFF_NEED_MORE;
            size_t take = rl - k;
            if (take > want - have)
                take = want - have;
            if (take > len - (o + 5 + k))
                take = len - (o + 5 + k);
            memcpy(msg + have, b + o + 5 + k, take);
            have += take, k += take;
            if (!want_known && have == 4) {
                if (msg[0] != HS_CLIENT_HELLO)
                    return FY_SNIFF_NOT_TLS; /* some other handshake message comes first */
                size_t body = (size_t)msg[1] << 16 | (size_t)msg[2] << 8 | msg[3];
                if (body > sizeof(msg) - 4)
                    return FY_SNIFF_BAD;
                want = 4 + body, want_known = true;
            }
        }
        if (want_known && have == want)
            break;
        o += 5 + rl; /* this record is used up; the message goes on in the next */
    }
    char name[FY_SNIFF_SNI_CAP];
    struct cursor c = {.p = msg + 4, .len = want - 4};
    enum fy_sniff r = client_hello(&c, name, sizeof(name));
    if (r != FY_SNIFF_TLS)
        return r;
    return give_name(name, sni, sni_cap);
}
