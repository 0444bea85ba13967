/* Unit tests for src/http/msg.c: field list operations, hop-by-hop stripping, owning strings. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "http/msg.h"

static void add(struct fy_msg *m, const char *name, const char *value)
{
    cr_assert_eq(fy_msg_add(m, name, (uint32_t)strlen(name), value, (uint32_t)strlen(value),
                            fy_token_lookup(name, strlen(name))),
                 0);
}

static bool str_eq(const char *p, uint32_t n, const char *s)
{
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

static const char *value_of(struct fy_msg *m, const char *name, char *buf, size_t cap)
{
    struct fy_hdr *h = fy_msg_find(m, name, (uint32_t)strlen(name));
    if (!h)
        return NULL;
    cr_assert_lt(h->value_len, cap);
    memcpy(buf, h->value, h->value_len);
    buf[h->value_len] = 0;
    return buf;
}

static int visible(struct fy_msg *m)
{
    int n = 0;
    for (uint32_t i = 0; i < m->nhdrs; i++)
        n += !m->hdrs[i].removed;
    return n;
}

Test(msg, init_defaults)
{
    struct fy_msg m;
    memset(&m, 0x5a, sizeof(m));
    fy_msg_init(&m);
    cr_assert_eq(m.content_length, -1);
    cr_assert_eq(m.nhdrs, 0);
    cr_assert_null(m.hdrs);
    cr_assert_null(m.owned);
    cr_assert_null(m.method);
    fy_msg_free(&m);
}

Test(msg, add_find_many)
{
    struct fy_msg m;
    fy_msg_init(&m);
    char names[100][16];
    for (int i = 0; i < 100; i++) {
        snprintf(names[i], sizeof(names[i]), "X-N%d", i);
        add(&m, names[i], names[i]);
    }
    cr_assert_eq(m.nhdrs, 100);
    cr_assert_geq(m.cap, 100);
    char buf[32];
    cr_assert_str_eq(value_of(&m, "x-n57", buf, sizeof(buf)), "X-N57");
    cr_assert_str_eq(value_of(&m, "X-N0", buf, sizeof(buf)), "X-N0");
    cr_assert_null(fy_msg_find(&m, "X-N100", 6));
    cr_assert_null(fy_msg_find(&m, "X-N", 3));
    fy_msg_free(&m);
    cr_assert_eq(m.nhdrs, 0);
    cr_assert_null(m.hdrs);
}

Test(msg, find_first_of_duplicates_and_tok)
{
    struct fy_msg m;
    fy_msg_init(&m);
    add(&m, "Via", "1");
    add(&m, "VIA", "2");
    add(&m, "Host", "h");
    char buf[8];
    cr_assert_str_eq(value_of(&m, "via", buf, sizeof(buf)), "1");
    struct fy_hdr *h = fy_msg_find_tok(&m, FY_TOK_VIA);
    cr_assert_not_null(h);
    cr_assert(str_eq(h->value, h->value_len, "1"));
    cr_assert_eq(fy_msg_find_tok(&m, FY_TOK_HOST), &m.hdrs[2]);
    cr_assert_null(fy_msg_find_tok(&m, FY_TOK_UPGRADE));
    m.hdrs[0].removed = true;
    cr_assert_eq(fy_msg_find_tok(&m, FY_TOK_VIA), &m.hdrs[1]);
    cr_assert_eq(fy_msg_find(&m, "Via", 3), &m.hdrs[1]);
    fy_msg_free(&m);
}

Test(msg, remove_hides_all_and_keeps_pointers)
{
    struct fy_msg m;
    fy_msg_init(&m);
    add(&m, "A", "1");
    add(&m, "B", "2");
    add(&m, "a", "3");
    struct fy_hdr *b = fy_msg_find(&m, "B", 1);
    cr_assert_eq(fy_msg_remove(&m, "A", 1), 2);
    cr_assert_eq(fy_msg_remove(&m, "A", 1), 0);
    cr_assert_eq(fy_msg_remove(&m, "zz", 2), 0);
    cr_assert_null(fy_msg_find(&m, "a", 1));
    cr_assert_eq(m.nhdrs, 3); /* hidden, not deleted */
    cr_assert(m.hdrs[0].removed && m.hdrs[2].removed && !m.hdrs[1].removed);
    cr_assert_eq(fy_msg_find(&m, "b", 1), b);
    fy_msg_free(&m);
}

Test(msg, set_replaces_all)
{
    struct fy_msg m;
    fy_msg_init(&m);
    add(&m, "X-A", "1");
    add(&m, "Other", "o");
    add(&m, "x-a", "2");
    cr_assert_eq(fy_msg_set(&m, "X-A", 3, "new", 3), 0);
    cr_assert_eq(visible(&m), 2);
    char buf[8];
    cr_assert_str_eq(value_of(&m, "x-a", buf, sizeof(buf)), "new");
    cr_assert_eq(m.hdrs[m.nhdrs - 1].tok, FY_TOK_OTHER);
    /* set of a well-known name carries its token */
    cr_assert_eq(fy_msg_set(&m, "host", 4, "h", 1), 0);
    cr_assert_not_null(fy_msg_find_tok(&m, FY_TOK_HOST));
    /* set of an absent name adds it */
    cr_assert_eq(fy_msg_set(&m, "Fresh", 5, "", 0), 0);
    cr_assert_str_eq(value_of(&m, "fresh", buf, sizeof(buf)), "");
    fy_msg_free(&m);
}

Test(msg, reset_keeps_storage)
{
    struct fy_msg m;
    fy_msg_init(&m);
    for (int i = 0; i < 20; i++)
        add(&m, "X", "y");
    cr_assert_eq(fy_msg_own(&m), 0);
    struct fy_hdr *storage = m.hdrs;
    uint32_t cap = m.cap;
    m.status = 200;
    m.content_length = 5;
    fy_msg_reset(&m);
    cr_assert_eq(m.nhdrs, 0);
    cr_assert_eq(m.hdrs, storage);
    cr_assert_eq(m.cap, cap);
    cr_assert_not(m.owns); /* the block is kept for the next message, no string points into it */
    char *block = m.owned;
    cr_assert_eq(m.status, 0);
    cr_assert_eq(m.content_length, -1);
    add(&m, "Y", "z");
    cr_assert_eq(m.hdrs, storage);
    cr_assert_eq(fy_msg_own(&m), 0);
    cr_assert_eq(m.owned, block); /* large enough: reused, no allocation */
    fy_msg_free(&m);
}

/* A codec and a session trade messages: the taker's old storage goes back to the giver. */
Test(msg, move_trades_storage)
{
    struct fy_msg a, b;
    fy_msg_init(&a);
    fy_msg_init(&b);
    add(&a, "X", "1");
    cr_assert_eq(fy_msg_own(&a), 0);
    fy_msg_move(&b, &a); /* b takes a's message; a keeps b's (empty) storage */
    cr_assert_eq(b.nhdrs, 1);
    cr_assert(b.owns);
    cr_assert_null(a.hdrs);
    struct fy_hdr *bh = b.hdrs;
    char *bo = b.owned;
    fy_msg_reset(&b);
    add(&a, "Y", "2");
    fy_msg_move(&b, &a);
    cr_assert_eq(a.hdrs, bh); /* the first message's storage came back */
    cr_assert_eq(a.owned, bo);
    cr_assert_eq(a.nhdrs, 0);
    cr_assert(str_eq(b.hdrs[0].name, b.hdrs[0].name_len, "Y"));
    fy_msg_free(&a);
    fy_msg_free(&b);
}

Test(msg, list_has)
{
    const char *v = "keep-alive, Upgrade ,\tclose\t, ,x";
    uint32_t n = (uint32_t)strlen(v);
    cr_assert(fy_list_has(v, n, "keep-alive", 10));
    cr_assert(fy_list_has(v, n, "upgrade", 7));
    cr_assert(fy_list_has(v, n, "CLOSE", 5));
    cr_assert(fy_list_has(v, n, "x", 1));
    cr_assert_not(fy_list_has(v, n, "keep", 4));
    cr_assert_not(fy_list_has(v, n, "alive", 5));
    cr_assert_not(fy_list_has(v, n, "", 0));
    cr_assert_not(fy_list_has("", 0, "close", 5));
    cr_assert_not(fy_list_has(",,, ,", 5, "close", 5));
    cr_assert_not(fy_list_has("closed", 6, "close", 5));
    cr_assert_not(fy_list_has("close", 4, "close", 5)); /* length bound respected */
    cr_assert(fy_list_has("close", 5, "close", 5));
    cr_assert_not(fy_list_has("clo se", 6, "close", 5));
}

Test(msg, strip_hop_by_hop)
{
    struct fy_msg m;
    fy_msg_init(&m);
    add(&m, "Host", "h");
    add(&m, "Connection", "close, X-Secret ,x-other");
    add(&m, "X-Secret", "s");
    add(&m, "Keep-Alive", "timeout=5");
    add(&m, "Proxy-Connection", "keep-alive");
    add(&m, "TE", "trailers");
    add(&m, "Trailer", "X-T");
    add(&m, "Upgrade", "websocket");
    add(&m, "Transfer-Encoding", "chunked");
    add(&m, "Content-Length", "5");
    add(&m, "X-OTHER", "o");
    add(&m, "connection", "X-Third");
    add(&m, "x-third", "3");
    add(&m, "X-Kept", "k");
    add(&m, "Via", "1.1 a");
    fy_msg_strip_hop_by_hop(&m);
    const char *kept[] = {"Host", "Content-Length", "X-Kept", "Via"};
    const char *gone[] = {"Connection", "X-Secret", "Keep-Alive", "Proxy-Connection",
                          "TE",         "Trailer",  "Upgrade",    "Transfer-Encoding",
                          "X-Other",    "X-Third"};
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
        cr_assert_not_null(fy_msg_find(&m, kept[i], (uint32_t)strlen(kept[i])), "%s", kept[i]);
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
        cr_assert_null(fy_msg_find(&m, gone[i], (uint32_t)strlen(gone[i])), "%s", gone[i]);
    cr_assert_eq(visible(&m), 4);
    fy_msg_free(&m);
}

Test(msg, own_survives_source_overwrite)
{
    char src[] = "PURGE/pathOKName1Value1Name2Value2Gone1GoneV";
    struct fy_msg m;
    fy_msg_init(&m);
    m.method = src;
    m.method_len = 5;
    m.target = src + 5;
    m.target_len = 5;
    m.reason = src + 10;
    m.reason_len = 2;
    cr_assert_eq(fy_msg_add(&m, src + 12, 5, src + 17, 6, FY_TOK_OTHER), 0);
    cr_assert_eq(fy_msg_add(&m, src + 23, 5, src + 28, 6, FY_TOK_OTHER), 0);
    cr_assert_eq(fy_msg_add(&m, src + 34, 5, src + 39, 5, FY_TOK_OTHER), 0);
    m.hdrs[2].removed = true;
    cr_assert_eq(fy_msg_own(&m), 0);
    cr_assert_not_null(m.owned);
    memset(src, '#', sizeof(src) - 1);
    cr_assert(str_eq(m.method, m.method_len, "PURGE"));
    cr_assert(str_eq(m.target, m.target_len, "/path"));
    cr_assert(str_eq(m.reason, m.reason_len, "OK"));
    cr_assert(str_eq(m.hdrs[0].name, m.hdrs[0].name_len, "Name1"));
    cr_assert(str_eq(m.hdrs[0].value, m.hdrs[0].value_len, "Value1"));
    cr_assert(str_eq(m.hdrs[1].name, m.hdrs[1].name_len, "Name2"));
    cr_assert(str_eq(m.hdrs[1].value, m.hdrs[1].value_len, "Value2"));
    cr_assert_eq(m.hdrs[2].name_len, 0); /* removed fields are not copied */
    cr_assert(m.hdrs[2].removed);
    /* Owning twice copies from the owned block itself. */
    cr_assert_eq(fy_msg_own(&m), 0);
    cr_assert(str_eq(m.hdrs[1].value, m.hdrs[1].value_len, "Value2"));
    cr_assert(str_eq(m.method, m.method_len, "PURGE"));
    fy_msg_free(&m);
}

Test(msg, own_empty_message)
{
    struct fy_msg m;
    fy_msg_init(&m);
    cr_assert_eq(fy_msg_own(&m), 0);
    cr_assert_not_null(m.owned);
    fy_msg_free(&m);
}

Test(tokens, lookup_and_flags)
{
    cr_assert_eq(fy_token_lookup("HOST", 4), FY_TOK_HOST);
    cr_assert_eq(fy_token_lookup("Content-Length", 14), FY_TOK_CONTENT_LENGTH);
    cr_assert_eq(fy_token_lookup("transfer-encodinG", 17), FY_TOK_TRANSFER_ENCODING);
    cr_assert_eq(fy_token_lookup("te", 2), FY_TOK_TE);
    cr_assert_eq(fy_token_lookup("hostx", 4), FY_TOK_HOST);
    cr_assert_eq(fy_token_lookup("hos", 3), FY_TOK_OTHER);
    cr_assert_eq(fy_token_lookup("t", 1), FY_TOK_OTHER);
    cr_assert_eq(fy_token_lookup("x-forwarded-fox", 15), FY_TOK_OTHER);
    cr_assert(fy_token_flags(FY_TOK_CONNECTION) & FY_TOKF_HOP);
    cr_assert_not(fy_token_flags(FY_TOK_HOST) & FY_TOKF_HOP);
    cr_assert_eq(fy_token_lookup("VIA", 3), FY_TOK_VIA);
    cr_assert_eq(fy_token_lookup("X-Forwarded-Proto", 17), FY_TOK_X_FORWARDED_PROTO);
}

/* A 101 may only switch to a protocol the request offered (RFC 9110 7.8). */
Test(msg, upgrade_offered)
{
    struct fy_msg req, resp;
    fy_msg_init(&req);
    fy_msg_init(&resp);
    add(&req, "Upgrade", "websocket, foo/2");
    cr_assert_not(fy_msg_upgrade_offered(&req, &resp)); /* a 101 without Upgrade */
    add(&resp, "Upgrade", "WebSocket");
    cr_assert(fy_msg_upgrade_offered(&req, &resp));
    fy_msg_reset(&resp);
    add(&resp, "Upgrade", "websocket/13"); /* a version where the offer had none */
    cr_assert(fy_msg_upgrade_offered(&req, &resp));
    fy_msg_reset(&resp);
    add(&resp, "Upgrade", "foo/3"); /* both versioned, and different */
    cr_assert_not(fy_msg_upgrade_offered(&req, &resp));
    fy_msg_reset(&resp);
    add(&resp, "Upgrade", "foo");
    cr_assert(fy_msg_upgrade_offered(&req, &resp));
    fy_msg_reset(&resp);
    add(&resp, "Upgrade", "websocket, h2c"); /* one not offered */
    cr_assert_not(fy_msg_upgrade_offered(&req, &resp));
    fy_msg_reset(&resp);
    add(&resp, "Upgrade", "h2c");
    cr_assert_not(fy_msg_upgrade_offered(&req, &resp));
    req.hdrs[0].removed = true; /* what was not sent upstream was not offered */
    fy_msg_reset(&resp);
    add(&resp, "Upgrade", "websocket");
    cr_assert_not(fy_msg_upgrade_offered(&req, &resp));
    fy_msg_free(&req);
    fy_msg_free(&resp);
}
