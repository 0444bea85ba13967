/*
 * HTTP/1 reader: ferry's own head scanner in front of llhttp; see h1_reader.h.
 *
 * Why scan before llhttp: smuggling defences need exact rules (CRLF only, no obs-fold, no NUL,
 * bounded line and head sizes with the right status) and a complete contiguous head lets every
 * field point into the input without copies. llhttp then validates the grammar and does the
 * framing state machine (Content-Length, chunked, trailers) that ferry must not get wrong.
 *
 * Extension methods: llhttp only knows a fixed method list, so the request parser is always fed
 * "GET" followed by the request line from the space on. The method itself is taken from the
 * scanner. The body framing of a request never depends on its method, so nothing is lost.
 */
#include "http/h1_reader.h"

#include <string.h>
#include <strings.h>

#include "core/assert.h"

static const llhttp_settings_t *request_settings(void);
static const llhttp_settings_t *response_settings(void);

static void reader_error(struct fy_h1_reader *r, uint16_t status, const char *text)
{
    if (r->state == FY_H1R_ERROR)
        return;
    r->state = FY_H1R_ERROR;
    r->err_status = r->is_request ? status : 502;
    r->err_text = text;
}

void fy_h1r_init(struct fy_h1_reader *r, bool is_request, const struct fy_h1r_limits *limits)
{
    memset(r, 0, sizeof(*r));
    r->line_minor = -1;
    r->is_request = is_request;
    r->limits = *limits;
    fy_msg_init(&r->msg);
    llhttp_init(&r->llh, is_request ? HTTP_REQUEST : HTTP_RESPONSE,
                is_request ? request_settings() : response_settings());
    r->llh.data = r;
}

void fy_h1r_free(struct fy_h1_reader *r)
{
    fy_msg_free(&r->msg);
}

void fy_h1r_next(struct fy_h1_reader *r)
{
    /* A fresh llhttp state per message: nothing (upgrade mode, a "close" state) carries over. */
    llhttp_reset(&r->llh);
    fy_msg_reset(&r->msg);
    r->state = FY_H1R_HEAD;
    r->no_body = r->eof_body = r->trailing = r->own_chunked = false;
    r->err_status = 0;
    r->err_text = NULL;
    r->scanned = r->line_start = r->nlines = r->head_len = r->method_len = 0;
    r->line_target_off = r->line_target_len = 0;
    r->empty_skipped = 0;
    r->line_minor = -1;
    r->err_method_len = r->err_target_len = 0;
    r->fname = r->fvalue = NULL;
    r->fname_len = r->fvalue_len = 0;
    r->host_count = 0;
    r->te_seen = false;
    r->body_bytes = 0;
    r->nspans = 0;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* request-line = method SP request-target SP HTTP-version (RFC 9112 3), checked as soon as the
 * line is complete so a malformed one is answered at once, not when the head timeout fires. */
static int check_request_line(struct fy_h1_reader *r, const char *l, uint32_t n)
{
    uint32_t i = 0;
    while (i < n && fy_is_tchar((unsigned char)l[i]))
        i++;
    if (i == 0 || i >= n || l[i] != ' ')
        return 400;
    uint32_t t = ++i;
    while (i < n && l[i] != ' ' && (unsigned char)l[i] > 0x20 && l[i] != 0x7f)
        i++;
    if (i == t || (i < n && l[i] != ' '))
        return 400;
    if (i == n)
        return 505; /* "GET /": HTTP/0.9 */
    r->line_target_off = t;
    r->line_target_len = i - t;
    const char *v = l + i + 1;
    if (n - i - 1 != 8 || memcmp(v, "HTTP/", 5) != 0 || !is_digit(v[5]) || v[6] != '.' ||
        !is_digit(v[7]))
        return 400;
    if (v[5] != '1')
        return 505; /* HTTP/0.9, 2.0, 3.0...: a version ferry does not speak on this connection */
    r->line_minor = (int8_t)(v[7] - '0');
    return 0; /* 1.2 to 1.9: llhttp refuses them (400) */
}

/* status-line = HTTP-version SP 3DIGIT SP [ reason-phrase ] (RFC 9112 4). */
static bool check_status_line(const char *l, uint32_t n)
{
    return n >= 12 && memcmp(l, "HTTP/", 5) == 0 && is_digit(l[5]) && l[6] == '.' &&
           is_digit(l[7]) && l[8] == ' ' && is_digit(l[9]) && is_digit(l[10]) && is_digit(l[11]) &&
           (n == 12 || l[12] == ' ');
}

/* field-line = field-name ":" OWS field-value OWS, with no whitespace before the colon
 * (RFC 9112 5.1). */
static bool check_field_line(const char *l, uint32_t n)
{
    uint32_t i = 0;
    while (i < n && fy_is_tchar((unsigned char)l[i]))
        i++;
    return i > 0 && i < n && l[i] == ':';
}

/* A line of the head is complete: h[start, start + len). Returns false (after reader_error()) if
 * bad. */
static bool check_line(struct fy_h1_reader *r, const char *h, uint32_t start, uint32_t len)
{
    const char *l = h + start;
    if (r->nlines == 0) {
        int status =
            r->is_request ? check_request_line(r, l, len) : (check_status_line(l, len) ? 0 : 400);
        if (status == 0)
            return true;
        reader_error(r, (uint16_t)status,
                     status == 505   ? "unsupported HTTP version"
                     : r->is_request ? "malformed request line"
                                     : "malformed status line");
        return false;
    }
    if (check_field_line(l, len))
        return true;
    reader_error(r, 400, "malformed field line (no colon, or whitespace before it)");
    return false;
}

/*
 * Scans the head in h[0, n). Returns 1 when complete (head_len set), 0 when more bytes are needed,
 * -1 on error. Only bytes not scanned before are looked at.
 */
static int scan_head(struct fy_h1_reader *r, const char *h, size_t n)
{
    /* Bytes that need a decision; everything else is skipped by a tight loop. */
    static const bool special[256] = {[0] = true, ['\r'] = true, ['\n'] = true};
    const uint32_t max_line = r->limits.max_line, max_head = r->limits.max_head;
    uint32_t i = r->scanned;
    for (;;) {
        if (i < n && i == r->line_start && r->nlines > 0 && (h[i] == ' ' || h[i] == '\t')) {
            reader_error(r, 400, "obsolete line folding or whitespace at line start");
            return -1;
        }
        while (i < n && !special[(unsigned char)h[i]])
            i++;
        /* The line's content so far: a CR just before the LF under i is not part of it. */
        uint32_t content_end =
            (i < n && h[i] == '\n' && i > r->line_start && h[i - 1] == '\r') ? i - 1 : i;
        if (r->nlines == 0 && content_end - r->line_start > max_line) {
            reader_error(r, 414, r->is_request ? "request line too long" : "status line too long");
            return -1;
        }
        if (i >= max_head && (i < n || i > max_head)) {
            /* Byte number max_head + 1 exists: the head is too large, wherever it ends. */
            if (r->nlines == 0)
                reader_error(r, 414,
                             r->is_request ? "request line too long" : "status line too long");
            else
                reader_error(r, 431,
                             r->is_request ? "request header block too large"
                                           : "response header block too large");
            return -1;
        }
        if (i >= n)
            break;
        unsigned char c = (unsigned char)h[i];
        if (c == 0) {
            reader_error(r, 400, "NUL in head");
            return -1;
        }
        if (c == '\r') {
            if (i + 1 == n)
                break; /* need the next byte to know */
            if (h[i + 1] != '\n') {
                reader_error(r, 400, "bare CR in head");
                return -1;
            }
            i++;
            continue;
        }
        /* c == '\n' */
        bool crlf = i > 0 && h[i - 1] == '\r';
        if (!crlf && r->is_request) {
            reader_error(r, 400, "bare LF in request head");
            return -1;
        }
        uint32_t line_len = (crlf ? i - 1 : i) - r->line_start;
        if (line_len == 0) {
            if (r->nlines == 0) {
                reader_error(r, 400, r->is_request ? "empty request line" : "empty status line");
                return -1;
            }
            r->head_len = i + 1;
            r->scanned = i + 1;
            return 1;
        }
        if (r->nlines > r->limits.max_fields) {
            reader_error(r, 431, "too many header fields");
            return -1;
        }
        if (!check_line(r, h, r->line_start, line_len))
            return -1;
        r->nlines++;
        r->line_start = ++i;
    }
    r->scanned = i;
    return 0;
}

static size_t decode_chunked(struct fy_h1_reader *r, const char *p, size_t n)
{
    size_t used = fy_chunked_decode(&r->chunked, p, n, r->spans, &r->nspans, FY_H1R_MAX_SPANS);
    for (int i = 0; i < r->nspans; i++)
        r->body_bytes += r->spans[i].iov_len;
    if (r->chunked.state == FY_CH_ERROR)
        reader_error(r, 400, r->chunked.error);
    else if (r->limits.max_body && r->body_bytes > r->limits.max_body)
        reader_error(r, 413, "request body too large");
    else if (r->chunked.state == FY_CH_DONE)
        r->state = FY_H1R_DONE;
    return used;
}

static size_t run_llhttp(struct fy_h1_reader *r, const char *p, size_t n)
{
    llhttp_errno_t e = llhttp_execute(&r->llh, p, n);
    if (e == HPE_OK)
        return n;
    if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
        const char *pos = llhttp_get_error_pos(&r->llh);
        if (e == HPE_PAUSED)
            llhttp_resume(&r->llh);
        else
            llhttp_resume_after_upgrade(&r->llh);
        return pos ? (size_t)(pos - p) : n;
    }
    if (r->state != FY_H1R_ERROR) {
        const char *reason = llhttp_get_error_reason(&r->llh);
        reader_error(r, 400, reason ? reason : llhttp_errno_name(e));
    }
    return 0;
}

void fy_h1r_keep_request_line(struct fy_h1_reader *r, const char *h)
{
    if (!r->is_request || r->nlines == 0 || r->err_method_len)
        return; /* no complete, valid request line, or already kept */
    const char *sp = memchr(h, ' ', r->line_target_off);
    uint32_t mlen = sp ? (uint32_t)(sp - h) : 0;
    r->err_method_len = mlen < sizeof(r->err_method) ? mlen : (uint32_t)sizeof(r->err_method);
    memcpy(r->err_method, h, r->err_method_len);
    uint32_t tlen = r->line_target_len;
    r->err_target_len = tlen < sizeof(r->err_target) ? tlen : (uint32_t)sizeof(r->err_target);
    memcpy(r->err_target, h + r->line_target_off, r->err_target_len);
}

size_t fy_h1r_execute(struct fy_h1_reader *r, const char *data, size_t len)
{
    r->nspans = 0;
    if (r->state == FY_H1R_DONE || r->state == FY_H1R_ERROR)
        return 0;
    if (r->state != FY_H1R_HEAD)
        return r->own_chunked ? decode_chunked(r, data, len) : run_llhttp(r, data, len);

    size_t skipped = 0;
    if (r->is_request && r->scanned == 0) {
        /* RFC 9112 2.2: ignore empty lines before a request line (old clients add CRLF). */
        /* At most 8 in all, however the client splits them across reads. */
        while (skipped + 1 < len && r->empty_skipped + skipped < 16 && data[skipped] == '\r' &&
               data[skipped + 1] == '\n')
            skipped += 2;
        r->empty_skipped = (uint8_t)(r->empty_skipped + skipped);
        data += skipped;
        len -= skipped;
    }
    int rc = scan_head(r, data, len);
    if (rc < 0 && r->is_request)
        fy_h1r_keep_request_line(r, data);
    if (rc <= 0)
        return skipped;

    size_t used;
    if (r->is_request) {
        /* check_request_line() accepted the line: a token method, one SP, the target. */
        FY_ASSERT(r->line_target_off >= 2 && data[r->line_target_off - 1] == ' ');
        r->method_len = r->line_target_off - 1;
        const char *sp = data + r->method_len;
        r->msg.method = data;
        r->msg.method_len = r->method_len;
        /* CONNECT keeps its name: its authority-form target is only valid for CONNECT. */
        bool connect = r->method_len == 7 && !memcmp(data, "CONNECT", 7);
        if (llhttp_execute(&r->llh, connect ? "CONNECT" : "GET", connect ? 7 : 3) != HPE_OK) {
            reader_error(r, 400, "malformed request line");
            return skipped;
        }
        used = r->method_len + run_llhttp(r, sp, len - r->method_len);
    } else {
        used = run_llhttp(r, data, len);
    }
    if (r->state == FY_H1R_HEAD)
        reader_error(r, 400, "incomplete head"); /* scanner and llhttp disagree: refuse */
    if (r->state == FY_H1R_ERROR && r->is_request)
        fy_h1r_keep_request_line(r, data); /* llhttp refused it: the log still shows the line */
    if (r->state == FY_H1R_BODY && r->own_chunked)
        used += decode_chunked(r, data + used, len - used);
    return skipped + used;
}

uint64_t fy_h1r_body_left(const struct fy_h1_reader *r)
{
    if (r->state != FY_H1R_BODY || r->own_chunked || r->msg.upgrade)
        return 0;
    if (r->eof_body)
        return UINT64_MAX;
    if (r->msg.content_length < 0 || (uint64_t)r->msg.content_length <= r->body_bytes)
        return 0;
    return (uint64_t)r->msg.content_length - r->body_bytes;
}

void fy_h1r_body_skipped(struct fy_h1_reader *r, uint64_t n)
{
    FY_ASSERT(n <= fy_h1r_body_left(r));
    r->nspans = 0;
    r->body_bytes += n;
    /* llhttp still counts down the bytes it never saw; it is reset before the next message
     * (fy_h1r_next), and nothing feeds it this message's body any more. */
    if (!r->eof_body && (uint64_t)r->msg.content_length == r->body_bytes)
        r->state = FY_H1R_DONE;
}

bool fy_h1r_eof(struct fy_h1_reader *r)
{
    if (r->state == FY_H1R_BODY && r->eof_body) {
        llhttp_finish(&r->llh);
        r->state = FY_H1R_DONE;
        return true;
    }
    if (r->state != FY_H1R_DONE)
        reader_error(r, 400, "connection closed in the middle of a message");
    return r->state == FY_H1R_DONE;
}

/* ---- llhttp callbacks ---- */

static struct fy_h1_reader *R(llhttp_t *p)
{
    return p->data;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct fy_h1_reader *r = R(p);
    if (!r->msg.target)
        r->msg.target = at;
    r->msg.target_len += (uint32_t)len;
    return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
    struct fy_h1_reader *r = R(p);
    if (!r->msg.reason)
        r->msg.reason = at;
    r->msg.reason_len += (uint32_t)len;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct fy_h1_reader *r = R(p);
    if (!r->fname)
        r->fname = at;
    r->fname_len += (uint32_t)len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct fy_h1_reader *r = R(p);
    if (!r->fvalue)
        r->fvalue = at;
    r->fvalue_len += (uint32_t)len;
    return 0;
}

static bool parse_length(const char *v, uint32_t n, int64_t *out)
{
    if (n == 0 || n > 18)
        return false;
    int64_t x = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        x = x * 10 + (v[i] - '0');
    }
    *out = x;
    return true;
}

static int field_error(struct fy_h1_reader *r, const char *text)
{
    reader_error(r, 400, text);
    return -1;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct fy_h1_reader *r = R(p);
    const char *name = r->fname, *value = r->fvalue ? r->fvalue : "";
    uint32_t nlen = r->fname_len, vlen = r->fvalue_len;
    r->fname = r->fvalue = NULL;
    r->fname_len = r->fvalue_len = 0;

    /* The scanner checked the name (check_field_line: token characters up to the colon). */
    if (nlen == 0)
        return field_error(r, "empty field name");
    while (vlen > 0 && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t'))
        vlen--;
    for (uint32_t i = 0; i < vlen; i++) {
        unsigned char c = (unsigned char)value[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return field_error(r, "invalid character in field value");
    }
    if (r->trailing)
        return 0; /* trailers are validated and dropped */

    enum fy_token tok = fy_token_lookup(name, nlen);
    switch (tok) {
    case FY_TOK_CONTENT_LENGTH: {
        int64_t cl;
        if (!parse_length(value, vlen, &cl))
            return field_error(r, "invalid Content-Length");
        if (r->msg.content_length >= 0)
            return field_error(r, "duplicate Content-Length");
        r->msg.content_length = cl;
        break;
    }
    case FY_TOK_TRANSFER_ENCODING:
        /* Only "chunked" alone is accepted: any other coding list is a smuggling vector. */
        if (r->te_seen || vlen != 7 || strncasecmp(value, "chunked", 7) != 0)
            return field_error(r, "unsupported Transfer-Encoding");
        r->te_seen = true;
        break;
    case FY_TOK_HOST:
        if (++r->host_count > 1)
            return field_error(r, "duplicate Host");
        if (r->is_request && !fy_valid_host(value, vlen))
            return field_error(r, "invalid Host");
        break;
    default:
        break;
    }
    if (fy_msg_add(&r->msg, name, nlen, value, vlen, tok) < 0)
        return field_error(r, "out of memory");
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct fy_h1_reader *r = R(p);
    struct fy_msg *m = &r->msg;
    if (p->http_major != 1 || p->http_minor > 1) {
        reader_error(r, 505, "unsupported HTTP version");
        return -1;
    }
    m->version_minor = p->http_minor;
    if (r->te_seen && m->content_length >= 0) {
        reader_error(r, 400, "both Content-Length and Transfer-Encoding");
        return -1;
    }
    if (r->te_seen && m->version_minor == 0) {
        reader_error(r, 400, "Transfer-Encoding in an HTTP/1.0 message");
        return -1;
    }
    m->chunked = r->te_seen;

    bool close = false, keep = false, conn_upgrade = false;
    for (uint32_t i = 0; i < m->nhdrs; i++) {
        struct fy_hdr *h = &m->hdrs[i];
        if (h->tok == FY_TOK_CONNECTION) {
            close |= fy_list_has(h->value, h->value_len, "close", 5);
            keep |= fy_list_has(h->value, h->value_len, "keep-alive", 10);
            conn_upgrade |= fy_list_has(h->value, h->value_len, "upgrade", 7);
        } else if (h->tok == FY_TOK_EXPECT && m->version_minor == 1) {
            m->expect_continue |= h->value_len == 12 && !strncasecmp(h->value, "100-continue", 12);
        }
    }
    m->keep_alive = !close && (m->version_minor == 1 || keep);

    if (r->is_request) {
        if (m->version_minor == 1 && r->host_count == 0) {
            reader_error(r, 400, "missing Host");
            return -1;
        }
        /* CONNECT turns the connection into a tunnel after the head, like an upgrade: llhttp
         * treats what follows as tunnel bytes, never as a body, whatever Content-Length says. */
        /* An HTTP/1.0 request's Upgrade is ignored (RFC 9110 7.8): its client could not take
         * the 101 (no 1xx to HTTP/1.0, 15.2); it goes on as a plain request. */
        m->upgrade =
            (conn_upgrade && m->version_minor == 1 && fy_msg_find_tok(m, FY_TOK_UPGRADE) != NULL) ||
            p->method == HTTP_CONNECT;
        if (r->limits.max_body && m->content_length > 0 &&
            (uint64_t)m->content_length > r->limits.max_body) {
            reader_error(r, 413, "request body too large");
            return -1;
        }
        r->state = FY_H1R_BODY;
        if (m->chunked) {
            /* ferry decodes chunked bodies itself (http/chunked.c); llhttp stops here. */
            r->own_chunked = true;
            fy_chunked_init(&r->chunked);
            return 1;
        }
        /* An upgrade request without body: llhttp pauses for the upgrade after the message. */
        return 0;
    }

    m->status = (uint16_t)p->status_code;
    if (m->status < 100 || m->status > 999) {
        reader_error(r, 502, "invalid status code");
        return -1;
    }
    m->upgrade = m->status == 101;
    r->state = FY_H1R_BODY;
    if (m->status == 101)
        return 2;
    /* RFC 9112 6.3: these never have a body, whatever Content-Length says. */
    if (r->no_body || m->status < 200 || m->status == 204 || m->status == 304)
        return 1;
    if (m->chunked) {
        r->own_chunked = true;
        fy_chunked_init(&r->chunked);
        return 1;
    }
    if (m->content_length < 0)
        r->eof_body = true;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct fy_h1_reader *r = R(p);
    if (r->limits.max_body && r->body_bytes + len > r->limits.max_body) {
        reader_error(r, 413, "request body too large");
        return -1;
    }
    r->body_bytes += len;
    r->spans[r->nspans].iov_base = (void *)at;
    r->spans[r->nspans].iov_len = len;
    if (++r->nspans == FY_H1R_MAX_SPANS)
        return HPE_PAUSED;
    return 0;
}

static int on_chunk_header(llhttp_t *p)
{
    /* After the last (zero-size) chunk come the trailer fields, which are not forwarded. */
    R(p)->trailing = p->content_length == 0;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct fy_h1_reader *r = R(p);
    /* With a chunked body llhttp was told "no body": the head ends here, the body follows. */
    if (!r->own_chunked)
        r->state = FY_H1R_DONE;
    return HPE_PAUSED;
}

static void settings_common(llhttp_settings_t *s)
{
    llhttp_settings_init(s);
    s->on_url = on_url;
    s->on_status = on_status;
    s->on_header_field = on_header_field;
    s->on_header_value = on_header_value;
    s->on_header_value_complete = on_header_value_complete;
    s->on_headers_complete = on_headers_complete;
    s->on_body = on_body;
    s->on_chunk_header = on_chunk_header;
    s->on_message_complete = on_message_complete;
}

static llhttp_settings_t req_settings, resp_settings;

__attribute__((constructor)) static void init_settings(void)
{
    settings_common(&req_settings);
    settings_common(&resp_settings);
}

static const llhttp_settings_t *request_settings(void)
{
    return &req_settings;
}

static const llhttp_settings_t *response_settings(void)
{
    return &resp_settings;
}
