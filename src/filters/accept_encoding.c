/* Accept-Encoding negotiation; see accept_encoding.h. One pass over each field value, no
 * allocation; an element is parsed between two commas and either counts whole or not at all. */
#include "filters/accept_encoding.h"

#include <string.h>

#include "http/tokens.h"

void fy_ae_init(struct fy_accept_enc *ae)
{
    memset(ae, 0, sizeof(*ae));
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* A qvalue (RFC 9110 12.4.2): "0" [ "." 0*3DIGIT ] / "1" [ "." 0*3"0" ], in thousandths, or -1. */
static int parse_qvalue(const char *s, size_t n)
{
    if (n == 0 || (s[0] != '0' && s[0] != '1'))
        return -1;
    int q = (s[0] - '0') * 1000;
    if (n == 1)
        return q;
    if (s[1] != '.' || n > 5)
        return -1;
    int scale = 100;
    for (size_t i = 2; i < n; i++, scale /= 10) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        q += (s[i] - '0') * scale;
    }
    return q > 1000 ? -1 : q;
}

/* One list element, already trimmed of OWS and not empty. */
static void add_element(struct fy_accept_enc *ae, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && fy_is_tchar((unsigned char)s[i]))
        i++;
    size_t name_len = i;
    if (name_len == 0)
        return;
    int q = 1000;
    while (i < n && is_ows(s[i]))
        i++;
    if (i < n) {
        if (s[i] != ';')
            return;
        i++;
        while (i < n && is_ows(s[i]))
            i++;
        if (n - i < 2 || (s[i] != 'q' && s[i] != 'Q') || s[i + 1] != '=')
            return;
        /* the element is trimmed, so the qvalue runs to its end */
        q = parse_qvalue(s + i + 2, n - i - 2);
        if (q < 0)
            return;
    }
    if (name_len == 1 && s[0] == '*') {
        if (!ae->star) {
            ae->star = true;
            ae->star_q = (uint16_t)q;
        }
        return;
    }
    int c = fy_coding_parse(s, name_len);
    if (c < 0 || (ae->listed & (1u << c)))
        return;
    ae->listed |= (uint8_t)(1u << c);
    ae->q[c] = (uint16_t)q;
}

void fy_ae_add(struct fy_accept_enc *ae, const char *value, size_t len)
{
    ae->present = true;
    size_t i = 0;
    while (i < len) {
        const char *comma = memchr(value + i, ',', len - i);
        size_t end = comma ? (size_t)(comma - value) : len;
        size_t a = i, b = end;
        while (a < b && is_ows(value[a]))
            a++;
        while (b > a && is_ows(value[b - 1]))
            b--;
        if (a < b)
            add_element(ae, value + a, b - a);
        i = end + 1;
    }
}

/* The q the client gives coding c: its own, else "*"'s, else -1 (not mentioned at all). */
static int q_of(const struct fy_accept_enc *ae, int c)
{
    if (ae->listed & (1u << c))
        return ae->q[c];
    return ae->star ? ae->star_q : -1;
}

enum fy_coding fy_ae_pick(const struct fy_accept_enc *ae, unsigned enabled, const uint8_t *prefer,
                          int n)
{
    if (!ae->present)
        return FY_CODING_IDENTITY;
    enum fy_coding best = FY_CODING_IDENTITY;
    int best_q = q_of(ae, FY_CODING_IDENTITY), best_rank = 0;
    for (int c = FY_CODING_IDENTITY + 1; c < FY_CODING_COUNT; c++) {
        int q = q_of(ae, c);
        if (!(enabled & (1u << c)) || q <= 0)
            continue;
        int rank = n + c;
        for (int k = 0; k < n; k++) {
            if (prefer[k] == c) {
                rank = k;
                break;
            }
        }
        /* a coding beats identity on a tie: the client accepts both and compressing saves */
        if (q > best_q || (q == best_q && (best == FY_CODING_IDENTITY || rank < best_rank))) {
            best = c;
            best_q = q;
            best_rank = rank;
        }
    }
    return best;
}
