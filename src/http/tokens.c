/*
 * Header name token table; see tokens.h. Names are grouped by length once at startup (a counting
 * sort into one array), so a lookup compares only the names of its own length, usually one or
 * two. The groups are sized from the table itself: adding a name to FY_TOKENS can never overflow
 * them, and the longest name bounds the lengths worth looking up.
 */
#include "http/tokens.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>

struct token_info {
    const char *name;
    uint8_t len;
    uint8_t flags;
};

static const struct token_info tokens[FY_TOK__COUNT] = {[FY_TOK_OTHER] = {"", 0, 0},
#define FY_TOK_INFO(id, name, flags) [FY_TOK_##id] = {name, sizeof(name) - 1, flags},
                                                        FY_TOKENS(FY_TOK_INFO)
#undef FY_TOK_INFO
};

/* The size of a union of char arrays is its longest member: the longest name, at compile time. */
union token_name_sizes {
#define FY_TOK_SIZE(id, name, flags) char id[sizeof(name)];
    FY_TOKENS(FY_TOK_SIZE)
#undef FY_TOK_SIZE
};
#define TOKEN_MAX_LEN (sizeof(union token_name_sizes) - 1)

_Static_assert(FY_TOK__COUNT <= 256, "token ids must fit the uint8_t index below");
_Static_assert(TOKEN_MAX_LEN <= UINT8_MAX, "token name lengths must fit token_info.len");

/* by_len[group[n]] .. by_len[group[n + 1] - 1] are the tokens whose name is n bytes long. */
static uint8_t by_len[FY_TOK__COUNT];
static uint8_t group[TOKEN_MAX_LEN + 2];

/* Token characters (RFC 9110 5.6.2) as a table: fy_is_tchar() runs for every byte of every method
 * and field name. GNU range designators keep it readable. */
const bool fy_tchar_table[256] = {
    ['a' ... 'z'] = true, ['A' ... 'Z'] = true, ['0' ... '9'] = true, ['!'] = true,  ['#'] = true,
    ['$'] = true,         ['%'] = true,         ['&'] = true,         ['\''] = true, ['*'] = true,
    ['+'] = true,         ['-'] = true,         ['.'] = true,         ['^'] = true,  ['_'] = true,
    ['`'] = true,         ['|'] = true,         ['~'] = true,
};

/* unreserved / sub-delims (RFC 3986 2.2-2.3): the characters of a reg-name besides "%XX". */
static const bool reg_name_table[256] = {
    ['a' ... 'z'] = true, ['A' ... 'Z'] = true, ['0' ... '9'] = true, ['-'] = true, ['.'] = true,
    ['_'] = true,         ['~'] = true,         ['!'] = true,         ['$'] = true, ['&'] = true,
    ['\''] = true,        ['('] = true,         [')'] = true,         ['*'] = true, ['+'] = true,
    [','] = true,         [';'] = true,         ['='] = true,
};

__attribute__((constructor)) static void build_index(void)
{
    /* Counting sort by length: count, prefix sums, place. */
    unsigned count[TOKEN_MAX_LEN + 1] = {0};
    for (int t = 1; t < FY_TOK__COUNT; t++)
        count[tokens[t].len]++;
    unsigned at = 0;
    for (size_t n = 0; n <= TOKEN_MAX_LEN; n++) {
        group[n] = (uint8_t)at;
        at += count[n];
    }
    group[TOKEN_MAX_LEN + 1] = (uint8_t)at;
    uint8_t fill[TOKEN_MAX_LEN + 1];
    memcpy(fill, group, sizeof(fill));
    for (int t = 1; t < FY_TOK__COUNT; t++)
        by_len[fill[tokens[t].len]++] = (uint8_t)t;
}

enum fy_token fy_token_lookup(const char *name, size_t len)
{
    if (len == 0 || len > TOKEN_MAX_LEN)
        return FY_TOK_OTHER;
    char first = (char)(name[0] | 0x20);
    for (unsigned i = group[len]; i < group[len + 1]; i++) {
        const struct token_info *ti = &tokens[by_len[i]];
        if (ti->name[0] == first && strncasecmp(ti->name, name, len) == 0)
            return (enum fy_token)by_len[i];
    }
    return FY_TOK_OTHER;
}

unsigned fy_token_flags(enum fy_token t)
{
    return tokens[t].flags;
}

int fy_name_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && strncasecmp(a, b, alen) == 0;
}

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

static bool is_reg_char(unsigned char c)
{
    return reg_name_table[c];
}

static bool valid_ip_literal(const char *v, size_t n)
{
    if (n == 0)
        return false;
    if ((v[0] | 0x20) == 'v') {
        /* IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ) */
        size_t i = 1;
        while (i < n && is_hex((unsigned char)v[i]))
            i++;
        if (i == 1 || i >= n || v[i] != '.' || i + 1 == n)
            return false;
        for (i++; i < n; i++)
            if (!is_reg_char((unsigned char)v[i]) && v[i] != ':')
                return false;
        return true;
    }
    char text[64];
    struct in6_addr a;
    if (n >= sizeof(text))
        return false;
    memcpy(text, v, n);
    text[n] = 0;
    return inet_pton(AF_INET6, text, &a) == 1;
}

bool fy_valid_host(const char *v, size_t n)
{
    size_t i = 0;
    if (n > 0 && v[0] == '[') {
        const char *close = memchr(v, ']', n);
        if (!close || !valid_ip_literal(v + 1, (size_t)(close - v) - 1))
            return false;
        i = (size_t)(close - v) + 1;
    } else {
        while (i < n && v[i] != ':') {
            unsigned char c = (unsigned char)v[i];
            if (c == '%') {
                if (i + 2 >= n || !is_hex((unsigned char)v[i + 1]) ||
                    !is_hex((unsigned char)v[i + 2]))
                    return false;
                i += 3;
                continue;
            }
            if (!is_reg_char(c))
                return false;
            i++;
        }
    }
    if (i == n)
        return true;
    if (v[i] != ':' || n - i - 1 > 5)
        return false;
    unsigned port = 0;
    for (i++; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        port = port * 10 + (unsigned)(v[i] - '0');
    }
    return port <= 65535;
}
