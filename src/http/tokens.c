/* Header name token table; see tokens.h. A length switch keeps lookups to one or two compares. */
#include "http/tokens.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

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

/* Tokens bucketed by name length, built once: a lookup compares at most two names. */
static uint8_t by_len[18][3];

/* Token characters as a table: this runs for every byte of every method and field name. */
static bool tchar_table[256];

__attribute__((constructor)) static void build_index(void)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    for (int i = 0; i < 256; i++)
        tchar_table[i] = (i >= 'a' && i <= 'z') || (i >= 'A' && i <= 'Z') ||
                         (i >= '0' && i <= '9') || (i && strchr(extra, i));
    for (int t = 1; t < FY_TOK__COUNT; t++) {
        uint8_t *slot = by_len[tokens[t].len];
        while (*slot)
            slot++;
        *slot = (uint8_t)t;
    }
}

enum fy_token fy_token_lookup(const char *name, size_t len)
{
    if (len < 2 || len > 17)
        return FY_TOK_OTHER;
    char first = (char)(name[0] | 0x20);
    for (const uint8_t *t = by_len[len]; *t; t++) {
        if (tokens[*t].name[0] == first && strncasecmp(tokens[*t].name, name, len) == 0)
            return (enum fy_token) * t;
    }
    return FY_TOK_OTHER;
}

unsigned fy_token_flags(enum fy_token t)
{
    return tokens[t].flags;
}

bool fy_is_tchar(unsigned char c)
{
    return tchar_table[c];
}

int fy_name_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && strncasecmp(a, b, alen) == 0;
}
