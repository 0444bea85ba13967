/* Unit tests for src/core/json.c: the writer's commas and escaping, base64, the strict reader and
 * its error positions. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"

static struct fy_json_writer W;

static void start(void)
{
    fy_json_writer_init(&W, 1 << 20);
}

static void done(void)
{
    fy_json_writer_free(&W);
}

static void expect_text(const char *want)
{
    cr_assert(!W.failed);
    cr_assert_eq(W.len, strlen(want), "got %.*s, want %s", (int)W.len, W.p, want);
    cr_assert(!memcmp(W.p, want, W.len), "got %.*s, want %s", (int)W.len, W.p, want);
}

TestSuite(json_writer, .init = start, .fini = done);

Test(json_writer, commas_are_placed_by_the_writer)
{
    fy_json_obj_begin(&W);
    fy_json_key(&W, "a");
    fy_json_int(&W, 1);
    fy_json_key(&W, "b");
    fy_json_arr_begin(&W);
    fy_json_int(&W, -2);
    fy_json_null(&W);
    fy_json_bool(&W, true);
    fy_json_arr_begin(&W);
    fy_json_arr_end(&W);
    fy_json_obj_begin(&W);
    fy_json_obj_end(&W);
    fy_json_arr_end(&W);
    fy_json_key(&W, "c");
    fy_json_cstr(&W, NULL);
    fy_json_obj_end(&W);
    expect_text("{\"a\":1,\"b\":[-2,null,true,[],{}],\"c\":null}");
}

Test(json_writer, strings_escape_quotes_backslashes_and_control_characters)
{
    fy_json_str(&W, "a\"b\\c\n\r\t\b\f\x01\x1f\x7f/", 14);
    expect_text("\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0001\\u001f\x7f/\"");
}

Test(json_writer, nul_bytes_are_escaped)
{
    fy_json_str(&W, "a\0b", 3);
    expect_text("\"a\\u0000b\"");
}

Test(json_writer, valid_utf8_is_kept_and_invalid_bytes_become_replacement_characters)
{
    fy_json_str(&W, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9); /* é € 😀 */
    expect_text("\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
    fy_json_writer_reset(&W);
    /* a lone continuation byte, an overlong '/', a surrogate, a truncated sequence at the end */
    fy_json_str(&W,
                "a\x80"
                "b\xc0\xaf"
                "c\xed\xa0\x80"
                "d\xe2\x82",
                12);
    expect_text("\"a\xef\xbf\xbd"
                "b\xef\xbf\xbd\xef\xbf\xbd"
                "c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                "d\xef\xbf\xbd\xef\xbf\xbd\"");
    cr_assert(fy_utf8_valid(W.p, W.len));
}

Test(json_writer, fixed_numbers_trim_trailing_zeros)
{
    fy_json_arr_begin(&W);
    fy_json_fixed(&W, 1.5, 3);
    fy_json_fixed(&W, 2.0, 3);
    fy_json_fixed(&W, 0.4204, 3);
    fy_json_fixed(&W, -1, 3);
    fy_json_fixed(&W, -0.0001, 3);
    fy_json_fixed(&W, 0.0 / 0.0, 3);
    fy_json_arr_end(&W);
    expect_text("[1.5,2,0.42,-1,0,null]");
}

Test(json_writer, limit_sets_failed_instead_of_growing)
{
    fy_json_writer_free(&W);
    fy_json_writer_init(&W, 8);
    fy_json_str(&W, "123456", 6);
    cr_assert(!W.failed);
    fy_json_str(&W, "x", 1);
    cr_assert(W.failed);
    cr_assert_leq(W.len, 8);
}

Test(json_writer, misuse_sets_failed)
{
    fy_json_obj_end(&W);
    cr_assert(W.failed);
    fy_json_writer_reset(&W);
    fy_json_obj_begin(&W);
    fy_json_key(&W, "a");
    fy_json_obj_end(&W); /* a key without its value */
    cr_assert(W.failed);
}

Test(json_writer, base64_value)
{
    fy_json_base64(&W, "\x00\xff\x10", 3);
    expect_text("\"AP8Q\"");
}

Test(base64, round_trips_every_length_and_rejects_garbage)
{
    unsigned char in[64], back[64];
    char text[100];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (unsigned char)(i * 37 + 11);
    for (size_t n = 0; n <= sizeof(in); n++) {
        size_t t = fy_base64_encode(in, n, text);
        cr_assert_eq(t, fy_base64_len(n));
        cr_assert_eq(fy_base64_decode(text, t, back), (long)n);
        cr_assert(!memcmp(in, back, n));
    }
    cr_assert_eq(fy_base64_encode("foobar", 6, text), 8);
    cr_assert(!memcmp(text, "Zm9vYmFy", 8));
    cr_assert_eq(fy_base64_encode("fo", 2, text), 4);
    cr_assert(!memcmp(text, "Zm8=", 4));
    cr_assert_eq(fy_base64_decode("Zm8", 3, back), -1);
    cr_assert_eq(fy_base64_decode("Zm=8", 4, back), -1);
    cr_assert_eq(fy_base64_decode("Zm8=Zm8=", 8, back), -1);
    cr_assert_eq(fy_base64_decode("Z!8=", 4, back), -1);
}

/* ---- reader ---- */

static struct fy_json_doc *parse(const char *s, struct fy_json_error *e)
{
    return fy_json_parse(s, strlen(s), NULL, e);
}

static void expect_error(const char *s, uint32_t line, uint32_t col, const char *msg)
{
    struct fy_json_error e;
    struct fy_json_doc *d = parse(s, &e);
    cr_assert_null(d, "parsed %s", s);
    cr_assert_eq(e.line, line, "%s: line %u, want %u (%s)", s, e.line, line, e.msg);
    cr_assert_eq(e.col, col, "%s: col %u, want %u (%s)", s, e.col, col, e.msg);
    cr_assert_str_eq(e.msg, msg, "%s", s);
}

Test(json_reader, builds_the_dom_in_input_order)
{
    struct fy_json_error e;
    struct fy_json_doc *d =
        parse(" {\"a\": [1, -2.5e2, true, false, null], \"s\": \"x\\u00e9\\ud83d\\ude00\\n\","
              " \"o\": {}} ",
              &e);
    cr_assert_not_null(d, "%u:%u %s", e.line, e.col, e.msg);
    const struct fy_json *r = fy_json_root(d);
    cr_assert_eq(r->type, FY_JSON_OBJECT);
    cr_assert_eq(r->n, 3);
    const struct fy_json *a = fy_json_get_type(r, "a", FY_JSON_ARRAY);
    cr_assert_not_null(a);
    cr_assert_eq(a->n, 5);
    const struct fy_json *c = a->child;
    cr_assert_eq(c->number, 1);
    c = c->next;
    cr_assert_eq(c->number, -250);
    c = c->next;
    cr_assert(c->type == FY_JSON_BOOL && c->boolean);
    c = c->next;
    cr_assert(c->type == FY_JSON_BOOL && !c->boolean);
    c = c->next;
    cr_assert_eq(c->type, FY_JSON_NULL);
    cr_assert_null(c->next);
    const struct fy_json *s = fy_json_get_type(r, "s", FY_JSON_STRING);
    cr_assert_str_eq(s->str, "x\xc3\xa9\xf0\x9f\x98\x80\n");
    cr_assert_eq(s->len, 8);
    cr_assert_eq(fy_json_get(r, "o")->type, FY_JSON_OBJECT);
    cr_assert_null(fy_json_get(r, "missing"));
    cr_assert_null(fy_json_get_type(r, "s", FY_JSON_NUMBER));
    fy_json_doc_free(d);
}

Test(json_reader, escaped_nul_keeps_its_length)
{
    struct fy_json_error e;
    struct fy_json_doc *d = parse("\"a\\u0000b\"", &e);
    cr_assert_not_null(d);
    cr_assert_eq(fy_json_root(d)->len, 3);
    cr_assert(!memcmp(fy_json_root(d)->str, "a\0b", 3));
    fy_json_doc_free(d);
}

Test(json_reader, errors_name_line_column_and_what_was_expected)
{
    expect_error("{\"a\":1 \"b\":2}", 1, 8, "expected ',' or '}'");
    expect_error("[1,\n 2\n 3]", 3, 2, "expected ',' or ']'");
    expect_error("{\"a\" 1}", 1, 6, "expected ':'");
    expect_error("{a:1}", 1, 2, "expected a string (the name of a member)");
    expect_error("[1,]", 1, 4, "expected a value");
    expect_error("{\"a\":1,}", 1, 8, "expected a string (the name of a member)");
    expect_error("[1", 1, 3, "expected ',' or ']'");
    expect_error("", 1, 1, "unexpected end of input (expected a value)");
    expect_error("\"abc", 1, 5, "unterminated string");
    expect_error("\"a\tb\"", 1, 3, "control character in a string (must be escaped)");
    expect_error("\"\\x\"", 1, 2, "invalid escape in a string");
    expect_error("\"\\u12\"", 1, 2, "invalid \\u escape (expected 4 hex digits)");
    expect_error("\"\\udc00\"", 1, 2, "invalid \\u escape (a lone low surrogate)");
    expect_error("\"\\ud800x\"", 1, 2, "invalid \\u escape (a high surrogate without its pair)");
    expect_error("\"\xc0\xaf\"", 1, 2, "invalid UTF-8 in a string");
    expect_error("01", 1, 2, "unexpected characters after the value");
    expect_error("1.", 1, 3, "invalid number (expected a digit after '.')");
    expect_error("1e", 1, 3, "invalid number (expected a digit in the exponent)");
    expect_error("-", 1, 2, "invalid number");
    expect_error("tru", 1, 1, "expected a value");
    expect_error("NaN", 1, 1, "expected a value");
    expect_error("1 2", 1, 3, "unexpected characters after the value");
    expect_error("// c\n1", 1, 1, "expected a value");
}

Test(json_reader, limits_bound_depth_size_and_nodes)
{
    struct fy_json_error e;
    struct fy_json_limits lim = {.max_bytes = 100, .max_depth = 3, .max_nodes = 5};
    struct fy_json_doc *d = fy_json_parse("[[[1]]]", 7, &lim, &e);
    cr_assert_not_null(d);
    fy_json_doc_free(d);
    cr_assert_null(fy_json_parse("[[[[1]]]]", 9, &lim, &e));
    cr_assert_str_eq(e.msg, "nesting deeper than 3 levels");
    cr_assert_eq(e.col, 4);
    cr_assert_null(fy_json_parse("[1,2,3,4,5]", 11, &lim, &e));
    cr_assert_str_eq(e.msg, "too many values in one document");
    char big[101];
    memset(big, ' ', sizeof(big));
    big[0] = '1';
    cr_assert_null(fy_json_parse(big, sizeof(big), &lim, &e));
    cr_assert_str_eq(e.msg, "longer than 100 bytes");
}

Test(json_reader, reads_back_what_the_writer_wrote, .init = start, .fini = done)
{
    char bytes[256];
    for (int i = 0; i < 256; i++)
        bytes[i] = (char)i;
    fy_json_arr_begin(&W);
    fy_json_str(&W, bytes, 128);       /* ASCII incl. every control character */
    fy_json_str(&W, bytes + 128, 128); /* all invalid: 128 replacement characters */
    fy_json_fixed(&W, 12.345, 3);
    fy_json_arr_end(&W);
    struct fy_json_error e;
    struct fy_json_doc *d = fy_json_parse(W.p, W.len, NULL, &e);
    cr_assert_not_null(d, "%s", e.msg);
    const struct fy_json *a = fy_json_root(d)->child;
    cr_assert_eq(a->len, 128);
    cr_assert(!memcmp(a->str, bytes, 128));
    cr_assert_eq(a->next->len, 128 * 3);
    cr_assert_float_eq(a->next->next->number, 12.345, 1e-9);
    fy_json_doc_free(d);
}
