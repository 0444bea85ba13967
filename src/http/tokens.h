/*
 * Well-known header field names. The codecs tag each parsed field with a token so later steps
 * compare integers instead of strings; FY_TOKF_HOP marks hop-by-hop fields (RFC 9110 7.6.1) that a
 * proxy never forwards.
 */
#ifndef FY_TOKENS_H
#define FY_TOKENS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FY_TOKENS(X)                                                                               \
    X(HOST, "host", 0)                                                                             \
    X(CONTENT_LENGTH, "content-length", 0)                                                         \
    X(TRANSFER_ENCODING, "transfer-encoding", FY_TOKF_HOP)                                         \
    X(CONNECTION, "connection", FY_TOKF_HOP)                                                       \
    X(KEEP_ALIVE, "keep-alive", FY_TOKF_HOP)                                                       \
    X(PROXY_CONNECTION, "proxy-connection", FY_TOKF_HOP)                                           \
    X(TE, "te", FY_TOKF_HOP)                                                                       \
    X(TRAILER, "trailer", FY_TOKF_HOP)                                                             \
    X(UPGRADE, "upgrade", FY_TOKF_HOP)                                                             \
    X(EXPECT, "expect", 0)                                                                         \
    X(X_FORWARDED_FOR, "x-forwarded-for", 0)                                                       \
    X(X_FORWARDED_PROTO, "x-forwarded-proto", 0)                                                   \
    X(X_FORWARDED_HOST, "x-forwarded-host", 0)                                                     \
    X(VIA, "via", 0)                                                                               \
    X(MAX_FORWARDS, "max-forwards", 0)                                                             \
    X(HTTP2_SETTINGS, "http2-settings", FY_TOKF_HOP) /* only meaningful with Upgrade: h2c */       \
    X(USER_AGENT, "user-agent", 0)                                                                 \
    X(REFERER, "referer", 0)

#define FY_TOKF_HOP 1

enum fy_token {
    FY_TOK_OTHER = 0,
#define FY_TOK_ENUM(id, name, flags) FY_TOK_##id,
    FY_TOKENS(FY_TOK_ENUM)
#undef FY_TOK_ENUM
        FY_TOK__COUNT
};

/* A set of tokens, one bit per token (bit FY_TOK_OTHER is never set by ferry). The assertion
 * makes a token that does not fit a build error instead of an undefined shift. */
typedef uint64_t fy_tokmask;
_Static_assert(FY_TOK__COUNT <= 64, "more tokens than fy_tokmask bits: widen fy_tokmask");

static inline fy_tokmask fy_tokmask_bit(enum fy_token t)
{
    return (fy_tokmask)1 << t;
}

static inline bool fy_tokmask_has(fy_tokmask m, enum fy_token t)
{
    return (m >> t) & 1;
}

/* Maps a field name (any case) to its token, FY_TOK_OTHER if not well known. Names in FY_TOKENS
 * must be lowercase and unique (tests/unit/test_tokens.c checks both). */
enum fy_token fy_token_lookup(const char *name, size_t len);

/* Flags (FY_TOKF_*) of a token. */
unsigned fy_token_flags(enum fy_token t);

/* True for a token character (RFC 9110 5.6.2): what methods and field names are made of. Inline:
 * it runs for every byte of every method and field name. */
extern const bool fy_tchar_table[256];
static inline bool fy_is_tchar(unsigned char c)
{
    return fy_tchar_table[c];
}

/* The value of a hexadecimal digit (either case), or -1: chunk sizes, %-escapes. */
/* A byte a field value (and a reason phrase) may hold: HTAB, SP, VCHAR or obs-text (RFC 9110
 * 5.5, RFC 9112 4); no other control byte, no DEL. */
static inline bool fy_is_field_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static inline int fy_hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* True for a Host value: uri-host [ ":" port ] (RFC 9110 7.2, RFC 3986 3.2.2-3.2.3): a reg-name
 * (unreserved, pct-encoded, sub-delims), an IPv4 address, or an IPv6 or IPvFuture literal in
 * brackets, then an optional numeric port up to 65535. The empty value is valid (RFC 9110 7.2). */
bool fy_valid_host(const char *v, size_t n);

/* Case-insensitive comparison of two field names. */
int fy_name_eq(const char *a, size_t alen, const char *b, size_t blen);

#endif
