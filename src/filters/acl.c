/*
 * Forward-proxy access control lists; see acl.h. Parsing runs once per configuration item on the
 * main thread; matching reads immutable arrays and never allocates, so workers share them freely.
 */
#include "filters/acl.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"

#define NONE UINT32_MAX

/* ---- addresses ---- */

/* A matchable address: an IPv4-mapped IPv6 address becomes the IPv4 address it carries, so a
 * dual-stack listener's client, or a resolver's ::ffff:a.b.c.d answer, meets the IPv4 rules. */
struct ip {
    uint8_t family;
    uint8_t a[16];
};

static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void ip_from_v6(struct ip *ip, const uint8_t *a16)
{
    memset(ip, 0, sizeof(*ip));
    if (!memcmp(a16, v4mapped, 12)) {
        ip->family = AF_INET;
        memcpy(ip->a, a16 + 12, 4);
    } else {
        ip->family = AF_INET6;
        memcpy(ip->a, a16, 16);
    }
}

static bool ip_from_sockaddr(struct ip *ip, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        memset(ip, 0, sizeof(*ip));
        ip->family = AF_INET;
        memcpy(ip->a, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        ip_from_v6(ip, ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr);
        return true;
    }
    return false;
}

/* An IP literal host ("10.1.2.3", "::1", "[::1]"), strictly as inet_pton reads it. Other numeric
 * spellings ("2852039166", "0x7f.1") are names here; the address stage sees what they become. */
static bool ip_from_host(struct ip *ip, const char *host, size_t len)
{
    char buf[INET6_ADDRSTRLEN + 2];
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        host++;
        len -= 2;
    }
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, host, len);
    buf[len] = 0;
    uint8_t a[16];
    if (inet_pton(AF_INET, buf, a) == 1) {
        memset(ip, 0, sizeof(*ip));
        ip->family = AF_INET;
        memcpy(ip->a, a, 4);
        return true;
    }
    if (inet_pton(AF_INET6, buf, a) == 1) {
        ip_from_v6(ip, a);
        return true;
    }
    return false;
}

static bool cidr_match(const struct fy_cidr *c, const struct ip *ip)
{
    if (c->family != ip->family)
        return false;
    unsigned full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(c->addr, ip->a, full))
        return false;
    if (!rest)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (ip->a[full] & mask) == c->addr[full];
}

/* The decimal number in exactly n bytes (1 to 5 digits, no sign), or -1. The bytes need not be
 * followed by a NUL: prefixes and ports are parsed out of the middle of an item. */
static long parse_num(const char *s, size_t n)
{
    if (n == 0 || n > 5)
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* Parses an address or CIDR of n bytes (no brackets) into *out. */
static int parse_cidr(const char *s, size_t n, struct fy_cidr *out, char *err, size_t errlen)
{
    char addr[INET6_ADDRSTRLEN + 1];
    const char *slash = memchr(s, '/', n);
    size_t alen = slash ? (size_t)(slash - s) : n;
    bool v6 = memchr(s, ':', alen) != NULL;
    const char *example = v6 ? "fc00::/7" : "10.0.0.0/8";
    if (alen == 0 || alen >= sizeof(addr))
        return fy_errf(err, errlen, "expected an address or CIDR like %s, got %.*s", example,
                       (int)n, s);
    memcpy(addr, s, alen);
    addr[alen] = 0;
    uint8_t a[16] = {0};
    unsigned max = v6 ? 128 : 32;
    if (inet_pton(v6 ? AF_INET6 : AF_INET, addr, a) != 1)
        return fy_errf(err, errlen, "expected an address or CIDR like %s, got %.*s", example,
                       (int)n, s);
    unsigned prefix = max;
    if (slash) {
        size_t plen = n - alen - 1;
        long v = plen <= 3 ? parse_num(slash + 1, plen) : -1;
        if (v < 0 || v > (long)max)
            return fy_errf(err, errlen, "the prefix length after '/' must be 0 to %u, got %.*s",
                           max, (int)n, s);
        prefix = (unsigned)v;
    }
    for (unsigned bit = prefix; bit < max; bit++) {
        if (a[bit / 8] & (0x80 >> (bit % 8))) {
            /* Show the network the prefix names, so the fix is one copy away. */
            uint8_t m[16];
            memcpy(m, a, sizeof(m));
            for (unsigned b = prefix; b < max; b++)
                m[b / 8] &= (uint8_t) ~(0x80 >> (b % 8));
            char net[INET6_ADDRSTRLEN];
            inet_ntop(v6 ? AF_INET6 : AF_INET, m, net, sizeof(net));
            return fy_errf(err, errlen,
                           "%s has bits set past the /%u prefix; write %s/%u for that network, "
                           "or a longer prefix",
                           addr, prefix, net, prefix);
        }
    }
    memset(out, 0, sizeof(*out));
    if (v6 && prefix >= 96 && !memcmp(a, v4mapped, 12)) {
        out->family = AF_INET;
        out->prefix = (uint8_t)(prefix - 96);
        memcpy(out->addr, a + 12, 4);
    } else {
        out->family = v6 ? AF_INET6 : AF_INET;
        out->prefix = (uint8_t)prefix;
        memcpy(out->addr, a, v6 ? 16 : 4);
    }
    return 0;
}

/* Common checks on an item: present, bounded. */
static int check_item(const char *text, uint32_t count, char *err, size_t errlen)
{
    size_t n = strnlen(text, FY_ACL_MAX_ITEM_LEN + 1);
    if (n == 0)
        return fy_errf(err, errlen, "the item is empty");
    if (n > FY_ACL_MAX_ITEM_LEN)
        return fy_errf(err, errlen, "the item is longer than %d bytes", FY_ACL_MAX_ITEM_LEN);
    if (count >= FY_ACL_MAX_ITEMS)
        return fy_errf(err, errlen, "the list has more than %d items", FY_ACL_MAX_ITEMS);
    return 0;
}

/* Grows *items (elements of size sz) to hold one more. */
static int grow(void **items, uint32_t n, uint32_t *cap, size_t sz)
{
    if (n < *cap)
        return 0;
    uint32_t ncap = *cap ? *cap * 2 : 8;
    void *p = realloc(*items, (size_t)ncap * sz);
    if (!p)
        return -1;
    *items = p;
    *cap = ncap;
    return 0;
}

/* ---- CIDR lists ---- */

int fy_cidr_list_add(struct fy_cidr_list *l, const char *text, char *err, size_t errlen)
{
    if (check_item(text, l->n, err, errlen) < 0)
        return -1;
    struct fy_cidr c;
    if (parse_cidr(text, strlen(text), &c, err, errlen) < 0)
        return -1;
    if (grow((void **)&l->items, l->n, &l->cap, sizeof(c)) < 0)
        return fy_errf(err, errlen, "out of memory");
    l->items[l->n++] = c;
    return 0;
}

int fy_cidr_list_private(struct fy_cidr_list *l)
{
    static const char *const nets[] = {"127.0.0.0/8",    "::1",      "10.0.0.0/8", "172.16.0.0/12",
                                       "192.168.0.0/16", "fc00::/7", "fe80::/10"};
    char err[128];
    for (size_t i = 0; i < sizeof(nets) / sizeof(nets[0]); i++)
        if (fy_cidr_list_add(l, nets[i], err, sizeof(err)) < 0)
            return -1;
    return 0;
}

bool fy_cidr_list_match(const struct fy_cidr_list *l, const struct sockaddr *sa)
{
    struct ip ip;
    if (!ip_from_sockaddr(&ip, sa))
        return false;
    for (uint32_t i = 0; i < l->n; i++)
        if (cidr_match(&l->items[i], &ip))
            return true;
    return false;
}

void fy_cidr_list_free(struct fy_cidr_list *l)
{
    free(l->items);
    memset(l, 0, sizeof(*l));
}

/* ---- ports ---- */

/* "443", "8000-8999" or "*" of n bytes into [lo, hi]. */
static int parse_ports(const char *s, size_t n, unsigned *lo, unsigned *hi, char *err,
                       size_t errlen)
{
    if (n == 0)
        return fy_errf(err, errlen, "expected a port, a range like 8000-8999, or * after ':'");
    if (n == 1 && s[0] == '*') {
        *lo = 1;
        *hi = 65535;
        return 0;
    }
    const char *dash = memchr(s, '-', n);
    size_t n1 = dash ? (size_t)(dash - s) : n;
    size_t n2 = dash ? n - n1 - 1 : 0;
    long a = parse_num(s, n1), b = dash ? parse_num(dash + 1, n2) : a;
    if (a < 1 || a > 65535 || b < 1 || b > 65535)
        return fy_errf(err, errlen,
                       "expected a port (1 to 65535), a range like 8000-8999, or *, got %.*s",
                       (int)n, s);
    if (a > b)
        return fy_errf(err, errlen, "the port range %.*s runs backwards; write %ld-%ld", (int)n, s,
                       b, a);
    *lo = (unsigned)a;
    *hi = (unsigned)b;
    return 0;
}

int fy_ports_add(struct fy_ports *p, const char *text, char *err, size_t errlen)
{
    if (check_item(text, p->n, err, errlen) < 0)
        return -1;
    unsigned lo, hi;
    if (parse_ports(text, strlen(text), &lo, &hi, err, errlen) < 0)
        return -1;
    if (!p->bits && !(p->bits = calloc(65536 / 64, sizeof(uint64_t))))
        return fy_errf(err, errlen, "out of memory");
    for (unsigned i = lo; i <= hi; i++)
        p->bits[i / 64] |= 1ull << (i % 64);
    p->n++;
    return 0;
}

bool fy_ports_match(const struct fy_ports *p, unsigned port)
{
    return p->bits && port >= 1 && port <= 65535 && (p->bits[port / 64] >> (port % 64) & 1);
}

void fy_ports_free(struct fy_ports *p)
{
    free(p->bits);
    memset(p, 0, sizeof(*p));
}

/* ---- destination rules ---- */

enum kind {
    K_EXACT, /* api.internal */
    K_SUB,   /* *.example.com: subdomains only */
    K_APEX,  /* .example.com: the name and its subdomains */
    K_ANY,   /* * */
    K_CIDR,
};

struct fy_dest_rule {
    char *text;       /* as written */
    const char *name; /* lowercase, inside text's allocation (after it); name kinds only */
    uint32_t name_len;
    uint32_t next;   /* the next rule with the same name, or NONE */
    uint16_t lo, hi; /* ports, inclusive */
    uint8_t kind;
    struct fy_cidr cidr; /* K_CIDR */
};

/* One name of the index: the first and last rule written with it. */
struct fy_dest_slot {
    uint64_t hash;
    uint32_t head, tail; /* NONE: empty slot */
};

/* FNV-1a over the lowercase name, last byte first: the value after the byte at i is the hash of
 * the suffix starting at i, which is what lets one pass over a host produce the hash of each of
 * its label-aligned suffixes. */
#define FNV_INIT 0xcbf29ce484222325ull
static inline uint64_t fnv_step(uint64_t h, char c)
{
    unsigned char u = (unsigned char)c;
    if (u >= 'A' && u <= 'Z')
        u = (unsigned char)(u + 32);
    return (h ^ u) * 0x100000001b3ull;
}

static uint64_t name_hash(const char *s, size_t n)
{
    uint64_t h = FNV_INIT;
    while (n)
        h = fnv_step(h, s[--n]);
    return h;
}

/* The slot holding name, or the empty slot where it would go. */
static struct fy_dest_slot *slot_find(const struct fy_dest_rules *r, uint64_t h, const char *name,
                                      size_t n)
{
    uint32_t mask = r->nslots - 1;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        struct fy_dest_slot *s = &r->slots[i];
        if (s->head == NONE)
            return s;
        const struct fy_dest_rule *d = &r->items[s->head];
        if (s->hash == h && d->name_len == n && !strncasecmp(d->name, name, n))
            return s;
    }
}

static int index_grow(struct fy_dest_rules *r)
{
    if ((r->nnames + 1) * 2 <= r->nslots)
        return 0;
    uint32_t n = r->nslots ? r->nslots * 2 : 16;
    struct fy_dest_slot *old = r->slots;
    uint32_t oldn = r->nslots;
    r->slots = malloc((size_t)n * sizeof(*r->slots));
    if (!r->slots) {
        r->slots = old;
        return -1;
    }
    r->nslots = n;
    for (uint32_t i = 0; i < n; i++)
        r->slots[i].head = r->slots[i].tail = NONE;
    for (uint32_t i = 0; i < oldn; i++) {
        if (old[i].head == NONE)
            continue;
        const struct fy_dest_rule *d = &r->items[old[i].head];
        *slot_find(r, old[i].hash, d->name, d->name_len) = old[i];
    }
    free(old);
    return 0;
}

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Checks a DNS name of n bytes: labels of 1 to 63 name characters, 253 bytes in all. */
static int check_name(const char *s, size_t n, const char *item, char *err, size_t errlen)
{
    if (n == 0 || n > 253)
        return fy_errf(err, errlen, "expected a host name of 1 to 253 bytes in %s", item);
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (label == 0)
                return fy_errf(err, errlen, "%s has an empty label (two dots in a row?)", item);
            label = 0;
            continue;
        }
        if (s[i] == '*')
            return fy_errf(err, errlen,
                           "in %s, '*' may only stand alone or start a pattern as '*.'", item);
        if (!name_char(s[i]))
            return fy_errf(err, errlen,
                           "%s is not a host name (letters, digits, '-', '_' and dots; write "
                           "international names in their xn-- form)",
                           item);
        if (++label > 63)
            return fy_errf(err, errlen, "%s has a label longer than 63 bytes", item);
    }
    if (label == 0)
        return fy_errf(err, errlen, "%s has an empty label", item);
    return 0;
}

/* Splits an item into its host part and its PORTS, and parses the host part into d. */
static int parse_dest(const char *text, struct fy_dest_rule *d, size_t *name_off, char *err,
                      size_t errlen)
{
    size_t n = strlen(text);
    const char *host = text, *ports = NULL;
    size_t hlen = n, plen = 0;
    const char *cidr_text = NULL;
    size_t cidr_len = 0;
    bool bare_v6 = false;
    char joined[INET6_ADDRSTRLEN + 8];
    if (text[0] == '[') {
        const char *close = memchr(text, ']', n);
        if (!close)
            return fy_errf(err, errlen, "%s opens a '[' it does not close", text);
        const char *in = text + 1, *after = close + 1;
        size_t inlen = (size_t)(close - in);
        /* [2001:db8::]/32 puts the prefix after the bracket; move it inside. */
        size_t pre = 0;
        if (*after == '/') {
            pre = 1 + strspn(after + 1, "0123456789");
            after += pre;
        }
        if (inlen + pre >= sizeof(joined) || !memchr(in, ':', inlen))
            return fy_errf(err, errlen,
                           "brackets hold an IPv6 address or CIDR, as in [2001:db8::]/32:443; "
                           "got %s",
                           text);
        memcpy(joined, in, inlen);
        memcpy(joined + inlen, close + 1, pre);
        cidr_text = joined;
        cidr_len = inlen + pre;
        if (*after == ':') {
            ports = after + 1;
            plen = strlen(ports);
        } else if (*after) {
            return fy_errf(err, errlen, "expected ':PORTS' or nothing after the ']' in %s", text);
        }
    } else {
        const char *c1 = memchr(text, ':', n);
        if (c1 && memchr(c1 + 1, ':', n - (size_t)(c1 - text) - 1)) {
            /* Two colons or more: an IPv6 address, which may carry no port outside brackets. */
            cidr_text = text;
            cidr_len = n;
            bare_v6 = true;
        } else if (c1) {
            hlen = (size_t)(c1 - text);
            ports = c1 + 1;
            plen = n - hlen - 1;
        }
        if (!cidr_text && hlen > 0 && strspn(host, "0123456789./") >= hlen) {
            cidr_text = host;
            cidr_len = hlen;
        }
    }
    unsigned lo = 1, hi = 65535;
    if (ports && parse_ports(ports, plen, &lo, &hi, err, errlen) < 0)
        return -1;
    d->lo = (uint16_t)lo;
    d->hi = (uint16_t)hi;
    if (cidr_text) {
        d->kind = K_CIDR;
        const char *slash = bare_v6 ? strchr(text, '/') : NULL;
        if (slash && strchr(slash, ':'))
            return fy_errf(err, errlen,
                           "an IPv6 CIDR followed by a port goes in brackets, as in "
                           "[2001:db8::]/32:443; got %s",
                           text);
        return parse_cidr(cidr_text, cidr_len, &d->cidr, err, errlen);
    }
    if (hlen == 1 && host[0] == '*') {
        d->kind = K_ANY;
        return 0;
    }
    size_t off = 0;
    d->kind = K_EXACT;
    if (hlen >= 2 && host[0] == '*' && host[1] == '.') {
        d->kind = K_SUB;
        off = 2;
    } else if (hlen >= 1 && host[0] == '.') {
        d->kind = K_APEX;
        off = 1;
    }
    size_t nlen = hlen - off;
    /* The name matched is the host without a trailing dot; so is the pattern. */
    if (nlen > 1 && host[off + nlen - 1] == '.')
        nlen--;
    char item[FY_ACL_MAX_ITEM_LEN + 1];
    snprintf(item, sizeof(item), "%.*s", (int)hlen, host);
    if (memchr(host, '/', hlen))
        return fy_errf(err, errlen, "expected a host name pattern or a CIDR, got %s", item);
    if (check_name(host + off, nlen, item, err, errlen) < 0)
        return -1;
    *name_off = off;
    d->name_len = (uint32_t)nlen;
    return 0;
}

int fy_dest_rules_add(struct fy_dest_rules *r, const char *text, char *err, size_t errlen)
{
    if (check_item(text, r->n, err, errlen) < 0)
        return -1;
    struct fy_dest_rule d = {.next = NONE};
    size_t off = 0;
    if (parse_dest(text, &d, &off, err, errlen) < 0)
        return -1;
    size_t tlen = strlen(text);
    bool named = d.kind == K_EXACT || d.kind == K_SUB || d.kind == K_APEX;
    /* One allocation: the text, then the lowercase name. */
    d.text = malloc(tlen + 1 + (named ? d.name_len + 1 : 0));
    if (!d.text)
        return fy_errf(err, errlen, "out of memory");
    memcpy(d.text, text, tlen + 1);
    if (named) {
        char *nm = d.text + tlen + 1;
        for (uint32_t i = 0; i < d.name_len; i++) {
            char c = text[off + i];
            nm[i] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
        }
        nm[d.name_len] = 0;
        d.name = nm;
    }
    if (grow((void **)&r->items, r->n, &r->cap, sizeof(d)) < 0 || (named && index_grow(r) < 0) ||
        (!named && grow((void **)&r->scan, r->nscan, &r->scancap, sizeof(uint32_t))))
        goto fail_oom;
    uint32_t idx = r->n;
    r->items[r->n++] = d;
    if (named) {
        uint64_t h = name_hash(d.name, d.name_len);
        struct fy_dest_slot *s = slot_find(r, h, d.name, d.name_len);
        if (s->head == NONE) {
            s->hash = h;
            s->head = idx;
            r->nnames++;
        } else {
            r->items[s->tail].next = idx;
        }
        s->tail = idx;
    } else {
        r->scan[r->nscan++] = idx;
    }
    return 0;
fail_oom:
    free(d.text);
    return fy_errf(err, errlen, "out of memory");
}

static bool port_in(const struct fy_dest_rule *d, unsigned port)
{
    return port >= d->lo && port <= d->hi;
}

/* The first rule in the chain at s of the wanted kinds covering port, or NONE. */
static uint32_t chain_first(const struct fy_dest_rules *r, const struct fy_dest_slot *s, bool whole,
                            unsigned port)
{
    for (uint32_t i = s->head; i != NONE; i = r->items[i].next) {
        const struct fy_dest_rule *d = &r->items[i];
        bool kind_ok = d->kind == K_APEX || (whole ? d->kind == K_EXACT : d->kind == K_SUB);
        if (kind_ok && port_in(d, port))
            return i;
    }
    return NONE;
}

/* The first name rule matching host (no trailing dot), or NONE. */
static uint32_t match_names(const struct fy_dest_rules *r, const char *host, size_t len,
                            unsigned port)
{
    if (!r->nnames || len == 0)
        return NONE;
    uint32_t best = NONE;
    uint64_t h = FNV_INIT;
    for (size_t i = len; i-- > 0;) {
        h = fnv_step(h, host[i]);
        bool whole = i == 0;
        if (!whole && host[i - 1] != '.')
            continue;
        const struct fy_dest_slot *s = slot_find(r, h, host + i, len - i);
        if (s->head == NONE)
            continue;
        uint32_t m = chain_first(r, s, whole, port);
        if (m < best)
            best = m;
    }
    return best;
}

/* Scans the "*" and CIDR rules, in order, up to before. ip is NULL for a name not resolved yet:
 * then *need tells whether a CIDR rule covers port. */
static uint32_t match_scan(const struct fy_dest_rules *r, const struct ip *ip, unsigned port,
                           uint32_t before, bool *need)
{
    for (uint32_t k = 0; k < r->nscan && r->scan[k] < before; k++) {
        const struct fy_dest_rule *d = &r->items[r->scan[k]];
        if (!port_in(d, port))
            continue;
        if (d->kind == K_ANY)
            return r->scan[k];
        if (ip && cidr_match(&d->cidr, ip))
            return r->scan[k];
        if (!ip)
            *need = true;
    }
    return NONE;
}

enum fy_acl_verdict fy_dest_rules_check_name(const struct fy_dest_rules *r, const char *host,
                                             size_t host_len, unsigned port, uint32_t *rule)
{
    struct ip ip;
    bool literal = ip_from_host(&ip, host, host_len);
    uint32_t best = NONE;
    if (!literal) {
        size_t len = host_len;
        if (len > 1 && host[len - 1] == '.')
            len--;
        best = match_names(r, host, len, port);
    }
    bool need = false;
    uint32_t m = match_scan(r, literal ? &ip : NULL, port, best, &need);
    if (m < best)
        best = m;
    if (best != NONE) {
        if (rule)
            *rule = best;
        return FY_ACL_MATCH;
    }
    return need ? FY_ACL_NEED_ADDR : FY_ACL_NO_MATCH;
}

enum fy_acl_verdict fy_dest_rules_check_addr(const struct fy_dest_rules *r,
                                             const struct sockaddr *sa, unsigned port,
                                             uint32_t *rule)
{
    struct ip ip;
    if (!ip_from_sockaddr(&ip, sa))
        return FY_ACL_NO_MATCH;
    bool need = false;
    uint32_t m = match_scan(r, &ip, port, NONE, &need);
    if (m == NONE)
        return FY_ACL_NO_MATCH;
    if (rule)
        *rule = m;
    return FY_ACL_MATCH;
}

const char *fy_dest_rules_text(const struct fy_dest_rules *r, uint32_t rule)
{
    return rule < r->n ? r->items[rule].text : "";
}

void fy_dest_rules_free(struct fy_dest_rules *r)
{
    for (uint32_t i = 0; i < r->n; i++)
        free(r->items[i].text);
    free(r->items);
    free(r->slots);
    free(r->scan);
    memset(r, 0, sizeof(*r));
}

/* ---- policy ---- */

static void why_set(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void why_set(char *why, size_t whylen, const char *fmt, ...)
{
    if (!why || !whylen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

enum fy_dest_verdict fy_dest_policy_check_name(const struct fy_dest_policy *p, const char *host,
                                               size_t host_len, unsigned port, char *why,
                                               size_t whylen)
{
    uint32_t rule;
    if (fy_dest_rules_check_name(&p->deny, host, host_len, port, &rule) == FY_ACL_MATCH) {
        why_set(why, whylen, "denied by deny rule %u (%s)", rule + 1, p->deny.items[rule].text);
        return FY_DEST_DENIED;
    }
    if (!p->allow.n)
        return FY_DEST_ALLOWED;
    switch (fy_dest_rules_check_name(&p->allow, host, host_len, port, NULL)) {
    case FY_ACL_MATCH:
        return FY_DEST_ALLOWED;
    case FY_ACL_NEED_ADDR:
        return FY_DEST_NEED_ADDR;
    case FY_ACL_NO_MATCH:
        break;
    }
    why_set(why, whylen, "not matched by any allow rule");
    return FY_DEST_DENIED;
}

bool fy_dest_policy_check_addr(const struct fy_dest_policy *p, enum fy_dest_verdict name_verdict,
                               const struct sockaddr *sa, unsigned port, char *why, size_t whylen)
{
    char a[INET6_ADDRSTRLEN];
    uint32_t rule;
    if (name_verdict == FY_DEST_DENIED) {
        why_set(why, whylen, "denied by the name stage");
        return false;
    }
    if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6) {
        why_set(why, whylen, "not an IP address");
        return false;
    }
    if (fy_dest_rules_check_addr(&p->deny, sa, port, &rule) == FY_ACL_MATCH) {
        struct ip ip;
        ip_from_sockaddr(&ip, sa);
        inet_ntop(ip.family, ip.a, a, sizeof(a));
        why_set(why, whylen, "address %s denied by deny rule %u (%s)", a, rule + 1,
                p->deny.items[rule].text);
        return false;
    }
    if (name_verdict == FY_DEST_ALLOWED)
        return true;
    if (fy_dest_rules_check_addr(&p->allow, sa, port, NULL) == FY_ACL_MATCH)
        return true;
    struct ip ip;
    ip_from_sockaddr(&ip, sa);
    inet_ntop(ip.family, ip.a, a, sizeof(a));
    why_set(why, whylen, "address %s not matched by any allow rule", a);
    return false;
}

void fy_dest_policy_free(struct fy_dest_policy *p)
{
    fy_dest_rules_free(&p->deny);
    fy_dest_rules_free(&p->allow);
}
