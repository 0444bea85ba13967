/* Unit tests for src/lua/: the sandboxed state and its limits, error positions, the exchange
 * objects (req, resp, headers, respond, filter_body), the ferry helpers, and the scripts in
 * examples/lua/, all through the C API. Scripts are written to a temporary directory; the
 * examples are read from the source tree (the tests run from the source directory). */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/json.h"
#include "core/log.h"
#include "lua/lua_exchange.h"
#include "lua/lua_priv.h" /* struct fy_lua: a test reads the script's globals */
#include "lua/lua_vm.h"

/* ---- memory for the exchange, freed by each test's fini ---- */

struct block {
    struct block *next;
    size_t n;
    char data[];
};
static struct block *blocks;

static char *scratch(void *ctx, size_t n)
{
    (void)ctx;
    struct block *b = malloc(sizeof(*b) + n);
    if (!b)
        return NULL;
    b->next = blocks;
    b->n = n;
    blocks = b;
    return b->data;
}

static char *sdup(const char *s, size_t n)
{
    char *p = scratch(NULL, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ---- scripts in a temporary directory ---- */

static char dir[64];
static char paths[8][128];
static int npaths;

static const char *script_at(const char *name, const char *text)
{
    if (!dir[0]) {
        strcpy(dir, "/tmp/ferry-lua-XXXXXX");
        cr_assert_not_null(mkdtemp(dir));
    }
    cr_assert_lt(npaths, 8);
    char *p = paths[npaths++];
    snprintf(p, 128, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static const char *script(const char *text)
{
    static char name[16];
    snprintf(name, sizeof(name), "t%d.lua", npaths);
    return script_at(name, text);
}

static void cleanup(void)
{
    while (blocks) {
        struct block *b = blocks;
        blocks = b->next;
        free(b);
    }
    for (int i = 0; i < npaths; i++)
        unlink(paths[i]);
    if (dir[0])
        rmdir(dir);
}

TestSuite(lua, .fini = cleanup);

static char err[512];

static struct fy_lua *open_lim(const char *path, uint64_t instructions, size_t memory)
{
    struct fy_lua_limits lim = {.instructions = instructions, .memory = memory};
    err[0] = 0;
    struct fy_lua *vm = fy_lua_open(path, &lim, err, sizeof(err));
    cr_assert_not_null(vm, "%s: %s", path, err);
    return vm;
}

static struct fy_lua *open_text(const char *text)
{
    return open_lim(script(text), 0, 0);
}

/* ---- one exchange ---- */

struct ex {
    struct fy_msg req, resp;
    struct fy_lua_xview v;
    struct fy_lua_x x;
};

static void add(struct fy_msg *m, const char *name, const char *value)
{
    cr_assert_eq(fy_msg_add(m, name, (uint32_t)strlen(name), value, (uint32_t)strlen(value),
                            fy_token_lookup(name, strlen(name))),
                 0);
}

static void ex_init(struct ex *e, const char *method, const char *path)
{
    memset(e, 0, sizeof(*e));
    fy_msg_init(&e->req);
    fy_msg_init(&e->resp);
    e->req.method = method;
    e->req.method_len = (uint32_t)strlen(method);
    e->req.target = path;
    e->req.target_len = (uint32_t)strlen(path);
    add(&e->req, "Host", "example.com");
    add(&e->req, "User-Agent", "test/1");
    add(&e->req, "Accept", "*/*");
    e->v = (struct fy_lua_xview){
        .method = method,
        .method_len = (uint32_t)strlen(method),
        .scheme = "https",
        .scheme_len = 5,
        .host = "example.com",
        .host_len = 11,
        .path = path,
        .path_len = (uint32_t)strlen(path),
        .client_ip = "192.0.2.7",
        .client_ip_len = 9,
        .req = &e->req,
        .alloc = scratch,
    };
    fy_lua_x_init(&e->x);
}

static void ex_response(struct ex *e, int status, const char *content_type)
{
    e->resp.status = (uint16_t)status;
    if (content_type)
        add(&e->resp, "Content-Type", content_type);
    add(&e->resp, "Server", "upstream");
    e->v.resp = &e->resp;
}

static void ex_free(struct fy_lua *vm, struct ex *e)
{
    fy_lua_x_release(vm, &e->x);
    fy_msg_free(&e->req);
    fy_msg_free(&e->resp);
}

/* The first visible value of a field as a C string (scratch memory), or NULL. */
static const char *hdr(struct fy_msg *m, const char *name)
{
    struct fy_hdr *h = fy_msg_find(m, name, (uint32_t)strlen(name));
    return h ? sdup(h->value, h->value_len) : NULL;
}

static int count_visible(struct fy_msg *m, const char *name)
{
    int n = 0;
    for (uint32_t i = 0; i < m->nhdrs; i++)
        if (!m->hdrs[i].removed &&
            fy_name_eq(m->hdrs[i].name, m->hdrs[i].name_len, name, strlen(name)))
            n++;
    return n;
}

/* Runs on_request for one request; the exchange is left for the caller to inspect and free. */
static enum fy_lua_rc request(struct fy_lua *vm, struct ex *e, const char *method, const char *path)
{
    ex_init(e, method, path);
    return fy_lua_on_request(vm, &e->x, &e->v);
}

/* A string global of the script (scratch copy), or NULL. Reading never allocates in the state. */
static const char *global_str(struct fy_lua *vm, const char *name)
{
    const char *r = NULL;
    if (lua_getglobal(vm->L, name) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(vm->L, -1, &n);
        r = sdup(s, n);
    }
    lua_pop(vm->L, 1);
    return r;
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ---- an evaluator for the helpers: on_request runs the X-Code field's chunk and puts what it
 * returns into X-Out ---- */

static const char *EVAL = "function on_request(r)\n"
                          "    req = r\n"
                          "    local f = assert(load(r.headers:get('X-Code'), '=code'))\n"
                          "    r.headers:set('X-Out', tostring(f()))\n"
                          "end\n";

/* What the chunk returned, or "ERROR: message". */
static const char *eval(struct fy_lua *vm, const char *code)
{
    struct ex e;
    ex_init(&e, "GET", "/");
    add(&e.req, "X-Code", code);
    enum fy_lua_rc rc = fy_lua_on_request(vm, &e.x, &e.v);
    const char *out;
    if (rc == FY_LUA_ERROR) {
        char *p = scratch(NULL, strlen(e.x.err) + 8);
        sprintf(p, "ERROR: %s", e.x.err);
        out = p;
    } else {
        cr_assert_eq(rc, FY_LUA_CONTINUE);
        out = hdr(&e.req, "X-Out");
    }
    ex_free(vm, &e);
    return out;
}

static void eval_is(struct fy_lua *vm, const char *code, const char *want)
{
    const char *got = eval(vm, code);
    cr_assert_str_eq(got, want, "%s", code);
}

static void eval_err(struct fy_lua *vm, const char *code, const char *want)
{
    const char *got = eval(vm, code);
    cr_assert(starts_with(got, "ERROR: ") && strstr(got, want), "%s: got '%s', want '%s'", code,
              got, want);
}

/* ---- stderr capture, for the log ---- */

static int saved_fd = -1;
static char log_path[128];

static void capture_begin(void)
{
    if (!dir[0]) {
        strcpy(dir, "/tmp/ferry-lua-XXXXXX");
        cr_assert_not_null(mkdtemp(dir));
    }
    snprintf(log_path, sizeof(log_path), "%s/log.txt", dir);
    fflush(stderr);
    int fd = open(log_path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    cr_assert_geq(fd, 0);
    saved_fd = dup(2);
    dup2(fd, 2);
    close(fd);
}

static const char *capture_end(void)
{
    fflush(stderr);
    dup2(saved_fd, 2);
    close(saved_fd);
    static char buf[4096];
    FILE *f = fopen(log_path, "r");
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    fclose(f);
    unlink(log_path);
    return buf;
}

/* ---- fy_lua_check and fy_lua_open ---- */

Test(lua, check_accepts_a_good_script)
{
    const char *p = script("local n = 0\nfunction on_request(req) n = n + 1 end\n"
                           "function on_log(req, resp, info) end\n");
    cr_assert_eq(fy_lua_check(p, err, sizeof(err)), 0, "%s", err);
    struct fy_lua *vm = open_lim(p, 0, 0);
    cr_assert_eq(fy_lua_hooks(vm), FY_LUA_ON_REQUEST | FY_LUA_ON_LOG);
    cr_assert_str_eq(fy_lua_path(vm), p);
    cr_assert_gt(fy_lua_memory(vm), 0);
    fy_lua_close(vm);
}

static void check_fails(const char *text, int line, const char *want)
{
    const char *p = script(text);
    char prefix[160];
    if (line)
        snprintf(prefix, sizeof(prefix), "%s:%d: ", p, line);
    else
        snprintf(prefix, sizeof(prefix), "%s: ", p);
    err[0] = 0;
    cr_assert_eq(fy_lua_check(p, err, sizeof(err)), -1, "%s accepted", text);
    cr_assert(starts_with(err, prefix), "'%s' does not start with '%s'", err, prefix);
    cr_assert(strstr(err, want), "'%s' lacks '%s'", err, want);
    err[0] = 0;
    cr_assert_null(fy_lua_open(p, NULL, err, sizeof(err)));
    cr_assert(starts_with(err, prefix), "open: '%s'", err);
}

Test(lua, check_reports_file_and_line)
{
    check_fails("function on_request(req)\n  local x = = 1\nend\n", 2, "unexpected symbol");
    check_fails("local a = 1\nlocal b = nil\nprint(b.c)\n", 3, "attempt to index a nil value");
    check_fails("\n\nerror({})\n", 3, "(error object is a table value)");
    check_fails("\nerror('plain', 0)\n", 2, "plain");
    check_fails("on_response = 'x'\n", 0, "on_response is a string, not a function");
    check_fails("local x = 0\nwhile true do x = x + 1 end\n", 2, "instruction budget of");
    check_fails("x = io.open('/etc/passwd')\n", 1, "attempt to index a nil value (global 'io')");
}

Test(lua, check_missing_file)
{
    cr_assert_eq(fy_lua_check("/nonexistent/x.lua", err, sizeof(err)), -1);
    cr_assert(strstr(err, "cannot open /nonexistent/x.lua"), "%s", err);
}

Test(lua, open_with_too_little_memory)
{
    const char *p = script("function on_request(req) end\n");
    struct fy_lua_limits lim = {.memory = 8 * 1024};
    cr_assert_null(fy_lua_open(p, &lim, err, sizeof(err)));
    cr_assert(strstr(err, "not enough memory"), "%s", err);
}

/* ---- hooks and errors ---- */

Test(lua, runtime_error_in_hook_has_file_and_line)
{
    const char *p = script("function on_request(req)\n"
                           "    if req.path == '/nil' then local t = nil; return t.x end\n"
                           "    if req.path == '/c' then req.headers:set('Bad Name', 'v') end\n"
                           "    if req.path == '/plain' then error('plain', 0) end\n"
                           "    if req.path == '/obj' then error(setmetatable({}, {__tostring = "
                           "function() return 'custom' end})) end\n"
                           "    if req.path == '/field' then return req.pth end\n"
                           "    if req.path == '/ret' then return 42 end\n"
                           "end\n");
    struct fy_lua *vm = open_lim(p, 0, 0);
    static const struct {
        const char *path;
        int line;
        const char *want;
    } cases[] = {
        {"/nil", 2, "attempt to index a nil value (local 't')"},
        {"/c", 3, "header name \"Bad Name\" is not a token"},
        {"/plain", 4, "plain"},
        {"/obj", 5, "custom"},
        {"/field", 6, "req has no field 'pth'"},
        {"/ret", 1, "on_request returned number"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ex e;
        cr_assert_eq(request(vm, &e, "GET", cases[i].path), FY_LUA_ERROR, "%s", cases[i].path);
        char prefix[160];
        snprintf(prefix, sizeof(prefix), "%s:%d: ", p, cases[i].line);
        cr_assert(starts_with(e.x.err, prefix), "%s: '%s' lacks '%s'", cases[i].path, e.x.err,
                  prefix);
        cr_assert(strstr(e.x.err, cases[i].want), "%s: '%s'", cases[i].path, e.x.err);
        ex_free(vm, &e);
    }
    struct ex e;
    cr_assert_eq(request(vm, &e, "GET", "/fine"), FY_LUA_CONTINUE);
    ex_free(vm, &e);
    fy_lua_close(vm);
}

Test(lua, instruction_budget)
{
    const char *p =
        script("function on_request(req)\n"
               "    if req.path == '/loop' then while true do end end\n"
               "    if req.path == '/pcall' then\n"
               "        while true do pcall(function() while true do end end) end\n"
               "    end\n"
               "    if req.path == '/co' then\n"
               "        while true do pcall(coroutine.wrap(function() while true do end end)) end\n"
               "    end\n"
               "    if req.path == '/close' then\n"
               "        local c <close> = setmetatable({}, {__close = function() error('x') end})\n"
               "        while true do end\n"
               "    end\n"
               "    local n = 0\n"
               "    for i = 1, 20000 do n = n + i end\n"
               "    req.headers:set('X-Sum', tostring(n))\n"
               "end\n");
    struct fy_lua *vm = open_lim(p, 100000, 0);
    const char *paths[] = {"/loop", "/pcall", "/co", "/close"};
    for (int i = 0; i < 4; i++) {
        struct ex e;
        cr_assert_eq(request(vm, &e, "GET", paths[i]), FY_LUA_ERROR, "%s", paths[i]);
        cr_assert(starts_with(e.x.err, p), "%s", e.x.err);
        cr_assert(strstr(e.x.err, "instruction budget of 100000 exceeded"), "%s", e.x.err);
        if (i == 0) {
            char want[200];
            snprintf(want, sizeof(want), "%s:2: instruction budget of 100000 exceeded", p);
            cr_assert_str_eq(e.x.err, want);
        }
        ex_free(vm, &e);
        /* The state still works, with a fresh budget. */
        cr_assert_eq(request(vm, &e, "GET", "/ok"), FY_LUA_CONTINUE, "%s", e.x.err);
        cr_assert_str_eq(hdr(&e.req, "X-Sum"), "200010000");
        ex_free(vm, &e);
    }
    fy_lua_close(vm);
}

Test(lua, memory_cap)
{
    const char *p = script("function on_request(req)\n"
                           "    if req.path == '/hog' then\n"
                           "        local t = {}\n"
                           "        for i = 1, 1e9 do t[i] = string.rep('x', 64) .. i end\n"
                           "    end\n"
                           "    if req.path == '/rep' then return #string.rep('x', 1 << 30) end\n"
                           "    if req.path == '/caught' then\n"
                           "        local ok, e = pcall(string.rep, 'x', 1 << 30)\n"
                           "        req.headers:set('X-Caught', tostring(e))\n"
                           "    end\n"
                           "    req.headers:set('X-Ok', string.rep('y', 10))\n"
                           "end\n");
    struct fy_lua *vm = open_lim(p, 0, 4 << 20);
    static const struct {
        const char *path;
        int line;
    } cases[] = {{"/hog", 4}, {"/rep", 6}};
    for (int i = 0; i < 2; i++) {
        struct ex e;
        cr_assert_eq(request(vm, &e, "GET", cases[i].path), FY_LUA_ERROR);
        char want[200];
        snprintf(want, sizeof(want), "%s:%d: not enough memory", p, cases[i].line);
        cr_assert(starts_with(e.x.err, want), "'%s', want '%s'", e.x.err, want);
        ex_free(vm, &e);
        cr_assert_leq(fy_lua_memory(vm), (size_t)4 << 20);
        cr_assert_eq(request(vm, &e, "GET", "/ok"), FY_LUA_CONTINUE, "%s", e.x.err);
        cr_assert_str_eq(hdr(&e.req, "X-Ok"), "yyyyyyyyyy");
        ex_free(vm, &e);
    }
    struct ex e;
    cr_assert_eq(request(vm, &e, "GET", "/caught"), FY_LUA_CONTINUE, "%s", e.x.err);
    cr_assert_str_eq(hdr(&e.req, "X-Caught"), "not enough memory");
    ex_free(vm, &e);
    fy_lua_close(vm);
}

Test(lua, sandbox)
{
    struct fy_lua *vm = open_text(EVAL);
    const char *absent[] = {"io",        "require",    "dofile",      "loadfile",  "debug",
                            "package",   "os.execute", "os.exit",     "os.getenv", "os.remove",
                            "os.rename", "os.tmpname", "string.dump", "warn",      "module"};
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++) {
        char code[128];
        const char *dot = strchr(absent[i], '.');
        if (dot)
            snprintf(code, sizeof(code), "return type(%.*s['%s'])", (int)(dot - absent[i]),
                     absent[i], dot + 1);
        else
            snprintf(code, sizeof(code), "return type(_G['%s'])", absent[i]);
        eval_is(vm, code, "nil");
    }
    eval_is(vm, "return type(os.time()) .. type(os.clock()) .. type(os.date('%Y'))",
            "numbernumberstring");
    eval_is(vm, "return load('return 1 + 1')()", "2");
    eval_is(vm, "return select(2, load('\\27Lua binary'))",
            "attempt to load a binary chunk (mode is 't')");
    eval_is(vm, "return select(2, load('\\27Lua', 'x', 'b'))",
            "attempt to load a binary chunk (mode is 't')");
    eval_is(vm, "return math.type(collectgarbage('count'))", "float");
    eval_err(vm, "collectgarbage('stop')", "invalid option 'stop'");
    eval_is(vm, "return coroutine.wrap(function() coroutine.yield(7) end)()", "7");
    eval_is(vm, "return utf8.char(233) .. string.format('%03d', 7) .. table.concat({1, 2}, ',')",
            "\xc3\xa9"
            "007"
            "1,2");
    eval_is(vm, "return getmetatable(req)", "ferry");
    fy_lua_close(vm);
}

/* ---- the exchange objects ---- */

Test(lua, request_fields_and_headers)
{
    struct fy_lua *vm = open_text(
        "function on_request(req)\n"
        "    local h = req.headers\n"
        "    assert(h == req.headers, 'one headers object')\n"
        "    h:set('X-Fields', table.concat({req.method, req.scheme, req.host, req.path,\n"
        "        req.client_ip}, ' '))\n"
        "    h:set('X-Get', tostring(h:get('user-agent')) .. ' ' .. tostring(h:get('X-None')))\n"
        "    h:add('X-Multi', 'a')\n"
        "    h:add('x-multi', 'b')\n"
        "    h:set('Accept', 'text/html')\n"
        "    h:set('X-Num', 42)\n"
        "    h:set('X-Empty', '')\n"
        "    h:set('X-Tab', 'a\\tb')\n"
        "    local removed = h:remove('user-agent')\n"
        "    local seen = {}\n"
        "    for name, value in h:each() do seen[#seen + 1] = name .. '=' .. value end\n"
        "    h:set('X-Each', table.concat(seen, ';'))\n"
        "    h:set('X-Removed', tostring(removed))\n"
        "end\n");
    struct ex e;
    cr_assert_eq(request(vm, &e, "GET", "/a/b?x=1"), FY_LUA_CONTINUE, "%s", e.x.err);
    cr_assert_str_eq(hdr(&e.req, "X-Fields"), "GET https example.com /a/b?x=1 192.0.2.7");
    cr_assert_str_eq(hdr(&e.req, "X-Get"), "test/1 nil");
    cr_assert_eq(count_visible(&e.req, "X-Multi"), 2);
    cr_assert_str_eq(hdr(&e.req, "Accept"), "text/html");
    cr_assert_eq(count_visible(&e.req, "Accept"), 1);
    cr_assert_str_eq(hdr(&e.req, "X-Num"), "42");
    cr_assert_str_eq(hdr(&e.req, "X-Empty"), "");
    cr_assert_str_eq(hdr(&e.req, "X-Tab"), "a\tb");
    cr_assert_null(hdr(&e.req, "User-Agent"));
    cr_assert_str_eq(hdr(&e.req, "X-Removed"), "1");
    cr_assert_str_eq(hdr(&e.req, "X-Each"),
                     "Host=example.com;X-Fields=GET https example.com /a/b?x=1 192.0.2.7;"
                     "X-Get=test/1 nil;X-Multi=a;x-multi=b;Accept=text/html;X-Num=42;X-Empty=;"
                     "X-Tab=a\tb");
    /* Every string the script put into the head lives in the exchange's memory. */
    struct fy_hdr *h = fy_msg_find(&e.req, "X-Num", 5);
    bool found = false;
    for (struct block *b = blocks; b; b = b->next)
        found |= h->value >= b->data && h->value + h->value_len <= b->data + b->n &&
                 h->name >= b->data && h->name + h->name_len <= b->data + b->n;
    cr_assert(found, "value not copied with the view's allocator");
    ex_free(vm, &e);
    fy_lua_close(vm);
}

Test(lua, refused_header_names_and_values)
{
    struct fy_lua *vm = open_text(EVAL);
    eval_err(vm, "req.headers:set('Content-Length', '5')",
             "header \"Content-Length\" cannot be changed from Lua: it frames the message");
    eval_err(vm, "req.headers:add('transfer-encoding', 'chunked')", "cannot be changed from Lua");
    eval_err(vm, "req.headers:set('Connection', 'close')", "cannot be changed from Lua");
    eval_err(vm, "req.headers:remove('Connection')", "cannot be changed from Lua");
    eval_err(vm, "req.headers:set('Upgrade', 'h2c')", "cannot be changed from Lua");
    eval_err(vm, "req.headers:set('Keep-Alive', '1')", "cannot be changed from Lua");
    eval_err(vm, "req.headers:set('Host', 'x')", "assign req.host instead");
    eval_err(vm, "req.headers:set('X-A', 'a\\r\\nX-Injected: 1')",
             "value of header \"X-A\" has control character 13 at byte 2");
    eval_err(vm, "req.headers:set('X-A', 'a\\nb')", "control character 10");
    eval_err(vm, "req.headers:set('X-A', 'a\\0b')", "control character 0");
    eval_err(vm, "req.headers:set('X A', 'v')", "header name \"X A\" is not a token (byte 2)");
    eval_err(vm, "req.headers:set('X:A', 'v')", "is not a token");
    eval_err(vm, "req.headers:set('X\\nA', 'v')", "header name \"X\\x0aA\" is not a token");
    eval_err(vm, "req.headers:set('', 'v')", "header name is empty");
    eval_err(vm, "req.headers:set('X-A')",
             "bad argument #2 to 'set' (string expected, got no value)");
    eval_err(vm, "req.headers:set('X-A', {})", "bad argument #2 to 'set'");
    eval_err(vm, "req.headers.set(nil, 'X-A', 'v')", "bad argument #1 to 'set'");
    eval_is(vm, "return req.headers:get('Content-Length')", "nil");
    fy_lua_close(vm);
}

Test(lua, ctx_status_and_rewrites_across_hooks)
{
    struct fy_lua *vm = open_text(
        "function on_request(req)\n"
        "    req.ctx.seen = 'request'\n"
        "    req.path = '/new?x=1'\n"
        "    req.method = 'POST'\n"
        "    req.host = 'backend.internal:8080'\n"
        "    req.headers:set('X-Path', req.path)\n"
        "    saved = req\n"
        "end\n"
        "function on_response(req, resp)\n"
        "    assert(req == saved, 'the same req object')\n"
        "    resp.headers:set('X-Seen', req.ctx.seen .. ' ' .. resp.status)\n"
        "    req.ctx.status = resp.status\n"
        "    resp.status = 404\n"
        "    resp.headers:remove('Server')\n"
        "    saved_resp = resp\n"
        "end\n"
        "function on_log(req, resp, info)\n"
        "    assert(resp == saved_resp, 'the same resp object')\n"
        "    logged = table.concat({req.ctx.seen, req.ctx.status, resp.status, info.status,\n"
        "        info.duration_us, info.duration_ms, info.bytes_in, info.bytes_out,\n"
        "        info.upstream, tostring(info.tls_version), tostring(info.tls_sni),\n"
        "        info.request_id, info.route, info.upstream_connect_us,\n"
        "        info.upstream_first_byte_us}, ' ')\n"
        "end\n");
    cr_assert_eq(fy_lua_hooks(vm), 7);
    struct ex e;
    cr_assert_eq(request(vm, &e, "GET", "/old"), FY_LUA_CONTINUE, "%s", e.x.err);
    cr_assert(e.x.path_changed && e.x.method_changed && e.x.host_changed);
    cr_assert_eq(e.v.path_len, 8);
    cr_assert_eq(memcmp(e.v.path, "/new?x=1", 8), 0);
    cr_assert_eq(memcmp(e.v.method, "POST", 4), 0);
    cr_assert_eq(memcmp(e.v.host, "backend.internal:8080", 21), 0);
    cr_assert_str_eq(hdr(&e.req, "X-Path"), "/new?x=1");
    ex_response(&e, 200, "text/plain");
    e.resp.reason = "OK";
    e.resp.reason_len = 2;
    cr_assert_eq(fy_lua_on_response(vm, &e.x, &e.v), FY_LUA_CONTINUE, "%s", e.x.err);
    cr_assert_eq(e.resp.status, 404);
    cr_assert_null(e.resp.reason);
    cr_assert_str_eq(hdr(&e.resp, "X-Seen"), "request 200");
    cr_assert_null(hdr(&e.resp, "Server"));
    cr_assert_not(fy_lua_wants_body(&e.x));
    struct fy_lua_log_info info = {.status = 404,
                                   .duration_us = 1500,
                                   .upstream_connect_us = 100,
                                   .upstream_first_byte_us = 900,
                                   .bytes_in = 10,
                                   .bytes_out = 20,
                                   .upstream = "10.0.0.1:80",
                                   .request_id = "rid1",
                                   .route = "api"};
    fy_lua_on_log(vm, &e.x, &e.v, &info);
    ex_free(vm, &e);
    cr_assert_str_eq(global_str(vm, "logged"), "request 200 404 404 1500 1.5 10 20 10.0.0.1:80 "
                                               "nil nil rid1 api 100 900");
    fy_lua_close(vm);
}

Test(lua, log_info_with_tls_and_no_response)
{
    struct fy_lua *vm =
        open_text("function on_log(req, resp, info)\n"
                  "    logged = tostring(resp) .. ' ' .. info.tls_version .. ' ' ..\n"
                  "        info.tls_sni .. ' ' .. tostring(info.upstream)\n"
                  "end\n");
    struct ex e;
    ex_init(&e, "GET", "/");
    cr_assert_eq(fy_lua_on_request(vm, &e.x, &e.v), FY_LUA_CONTINUE); /* no on_request: no-op */
    struct fy_lua_log_info info = {.status = 502, .tls_version = "TLSv1.3", .tls_sni = "a.test"};
    fy_lua_on_log(vm, &e.x, &e.v, &info);
    ex_free(vm, &e);
    cr_assert_str_eq(global_str(vm, "logged"), "nil TLSv1.3 a.test nil");
    fy_lua_close(vm);
}

Test(lua, respond)
{
    struct fy_lua *vm =
        open_text("function on_request(req)\n"
                  "    local p = req.path\n"
                  "    if p == '/r' then\n"
                  "        return req:respond(403, {['Content-Type'] = 'text/plain',\n"
                  "            ['X-Multi'] = {'a', 'b'}}, 'nope')\n"
                  "    end\n"
                  "    if p == '/empty' then return req:respond(204) end\n"
                  "    if p == '/1xx' then return req:respond(101) end\n"
                  "    if p == '/600' then return req:respond(600) end\n"
                  "    if p == '/cl' then return req:respond(200, {['Content-Length'] = '5'}) end\n"
                  "    if p == '/badval' then return req:respond(200, {['X-A'] = 'a\\nb'}) end\n"
                  "    if p == '/badname' then return req:respond(200, {[1] = 'x'}) end\n"
                  "    if p == '/badtype' then return req:respond(200, {['X-A'] = true}) end\n"
                  "    if p == '/noreturn' then req:respond(200, nil, 'x') end\n"
                  "    if p == '/stale' then kept_answer = req:respond(200) end\n"
                  "end\n");
    struct ex e;
    cr_assert_eq(request(vm, &e, "GET", "/r"), FY_LUA_RESPONDED, "%s", e.x.err);
    cr_assert(e.x.responded);
    cr_assert_eq(e.x.respond_status, 403);
    cr_assert_eq(e.x.respond_body_len, 4);
    cr_assert_eq(memcmp(e.x.respond_body, "nope", 4), 0);
    struct fy_msg m;
    fy_msg_init(&m);
    cr_assert_eq(fy_lua_respond_fields(vm, &e.x, &e.v, &m), 0);
    cr_assert_str_eq(hdr(&m, "Content-Type"), "text/plain");
    cr_assert_eq(count_visible(&m, "X-Multi"), 2);
    cr_assert_eq(m.nhdrs, 3);
    fy_msg_free(&m);
    ex_free(vm, &e);

    cr_assert_eq(request(vm, &e, "GET", "/empty"), FY_LUA_RESPONDED, "%s", e.x.err);
    cr_assert_eq(e.x.respond_status, 204);
    cr_assert_null(e.x.respond_body);
    fy_msg_init(&m);
    cr_assert_eq(fy_lua_respond_fields(vm, &e.x, &e.v, &m), 0);
    cr_assert_eq(m.nhdrs, 0);
    fy_msg_free(&m);
    ex_free(vm, &e);

    static const struct {
        const char *path, *want;
    } bad[] = {
        {"/1xx", "status 101 is not in 200-599"},
        {"/600", "status 600 is not in 200-599"},
        {"/cl", "header \"Content-Length\" cannot be changed from Lua"},
        {"/badval", "control character 10"},
        {"/badname", "header names must be strings, not number"},
        {"/badtype", "the value of header \"X-A\" is a boolean, not a string"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(request(vm, &e, "GET", bad[i].path), FY_LUA_ERROR, "%s", bad[i].path);
        cr_assert(strstr(e.x.err, bad[i].want), "%s: %s", bad[i].path, e.x.err);
        ex_free(vm, &e);
    }
    /* respond() without returning its value does not answer */
    cr_assert_eq(request(vm, &e, "GET", "/noreturn"), FY_LUA_CONTINUE, "%s", e.x.err);
    cr_assert_not(e.x.responded);
    ex_free(vm, &e);
    fy_lua_close(vm);
}

Test(lua, respond_sentinel_of_another_request)
{
    struct fy_lua *vm = open_text("function on_request(req)\n"
                                  "    if req.path == '/keep' then kept = req:respond(200) end\n"
                                  "    if req.path == '/use' then return kept end\n"
                                  "end\n");
    struct ex e;
    cr_assert_eq(request(vm, &e, "GET", "/keep"), FY_LUA_CONTINUE, "%s", e.x.err);
    ex_free(vm, &e);
    cr_assert_eq(request(vm, &e, "GET", "/use"), FY_LUA_ERROR);
    cr_assert(strstr(e.x.err, "on_request returned another request's answer"), "%s", e.x.err);
    ex_free(vm, &e);
    fy_lua_close(vm);
}

Test(lua, what_each_hook_may_change)
{
    struct fy_lua *vm = open_text(
        "function on_request(req)\n"
        "    local p = req.path\n"
        "    if p == '/path' then req.path = 'no-slash' end\n"
        "    if p == '/path2' then req.path = '/a b' end\n"
        "    if p == '/method' then req.method = 'GE T' end\n"
        "    if p == '/host' then req.host = 'a/b' end\n"
        "    if p == '/field' then req.scheme = 'http' end\n"
        "    if p == '/ctx' then req.ctx = {a = 1}; req.headers:set('X-A', req.ctx.a) end\n"
        "end\n"
        "function on_response(req, resp)\n"
        "    local p = req.path\n"
        "    if p == '/reqhdr' then req.headers:set('X-A', '1') end\n"
        "    if p == '/respond' then return req:respond(200) end\n"
        "    if p == '/reqpath' then req.path = '/x' end\n"
        "    if p == '/status' then resp.status = 99 end\n"
        "    if p == '/status2' then resp.status = '200' end\n"
        "    if p == '/rfield' then resp.reason = 'x' end\n"
        "    if p == '/filter' then resp:filter_body(function() end) end\n"
        "end\n"
        "function on_log(req, resp, info)\n"
        "    resp.headers:set('X-Late', '1')\n"
        "end\n");
    static const struct {
        const char *path, *want;
        bool in_response;
    } cases[] = {
        {"/path", "req.path \"no-slash\" must start with '/'", false},
        {"/path2", "req.path \"/a b\" must start with '/'", false},
        {"/method", "req.method \"GE T\" is not a token", false},
        {"/host", "req.host \"a/b\" is not a host name", false},
        {"/field", "req.scheme cannot be assigned", false},
        {"/reqhdr", "changing req.headers is only possible in on_request", true},
        {"/respond", "req:respond() is only possible in on_request", true},
        {"/reqpath", "assigning req.path is only possible in on_request", true},
        {"/status", "resp.status 99 is not in 200-599", true},
        {"/status2", "resp.status must be an integer, not string", true},
        {"/rfield", "resp.reason cannot be assigned", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ex e;
        enum fy_lua_rc rc = request(vm, &e, "GET", cases[i].path);
        if (cases[i].in_response) {
            cr_assert_eq(rc, FY_LUA_CONTINUE, "%s: %s", cases[i].path, e.x.err);
            ex_response(&e, 200, "text/plain");
            rc = fy_lua_on_response(vm, &e.x, &e.v);
        }
        cr_assert_eq(rc, FY_LUA_ERROR, "%s", cases[i].path);
        cr_assert(strstr(e.x.err, cases[i].want), "%s: %s", cases[i].path, e.x.err);
        ex_free(vm, &e);
    }
    struct ex e;
    cr_assert_eq(request(vm, &e, "GET", "/ctx"), FY_LUA_CONTINUE, "%s", e.x.err);
    cr_assert_str_eq(hdr(&e.req, "X-A"), "1");
    ex_response(&e, 200, NULL);
    cr_assert_eq(fy_lua_on_response(vm, &e.x, &e.v), FY_LUA_CONTINUE);
    /* on_log cannot change the response any more: the error is only logged */
    capture_begin();
    struct fy_lua_log_info info = {.status = 200};
    fy_lua_on_log(vm, &e.x, &e.v, &info);
    const char *log = capture_end();
    cr_assert(strstr(log, "warn ferry: lua: on_log: "), "%s", log);
    cr_assert(strstr(log, "changing resp.headers is only possible in on_response"), "%s", log);
    cr_assert_null(hdr(&e.resp, "X-Late"));
    ex_free(vm, &e);
    fy_lua_close(vm);
}

Test(lua, kept_objects_after_release)
{
    struct fy_lua *vm = open_text(
        "function on_request(req)\n"
        "    local p = req.path\n"
        "    if p == '/keep' then kept, kept_h, kept_it = req, req.headers, req.headers:each()\n"
        "        return end\n"
        "    if p == '/path' then return kept.path end\n"
        "    if p == '/hdr' then return kept_h:get('Host') end\n"
        "    if p == '/it' then return kept_it() end\n"
        "    if p == '/set' then kept_h:set('X-A', 'b') end\n"
        "    if p == '/ctx' then return kept.ctx end\n"
        "    if p == '/resp' then return kept_resp.status end\n"
        "    if p == '/filter' then kept_filter('x', true) end\n"
        "end\n"
        "function on_response(req, resp)\n"
        "    kept_resp = resp\n"
        "    resp:filter_body(function(chunk, last) return req.path .. chunk end)\n"
        "end\n");
    struct ex e1;
    cr_assert_eq(request(vm, &e1, "GET", "/keep"), FY_LUA_CONTINUE, "%s", e1.x.err);
    ex_response(&e1, 200, NULL);
    cr_assert_eq(fy_lua_on_response(vm, &e1.x, &e1.v), FY_LUA_CONTINUE, "%s", e1.x.err);
    /* While e1 is alive, another exchange cannot use its objects. */
    struct ex e2;
    cr_assert_eq(request(vm, &e2, "GET", "/path"), FY_LUA_ERROR);
    cr_assert(strstr(e2.x.err, "this req belongs to another exchange"), "%s", e2.x.err);
    ex_free(vm, &e2);
    /* e1's body filter still sees e1. */
    const char *out;
    size_t out_len;
    cr_assert_eq(fy_lua_filter(vm, &e1.x, "!", 1, true, &out, &out_len), FY_LUA_CONTINUE, "%s",
                 e1.x.err);
    cr_assert_eq(out_len, 6);
    cr_assert_eq(memcmp(out, "/keep!", 6), 0);
    ex_free(vm, &e1);

    static const struct {
        const char *path, *want;
    } cases[] = {
        {"/path", "the exchange is over: this req can no longer be used"},
        {"/hdr", "the exchange is over"},
        {"/it", "the exchange is over"},
        {"/set", "the exchange is over"},
        {"/ctx", "the exchange is over"},
        {"/resp", "the exchange is over: this resp can no longer be used"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_assert_eq(request(vm, &e2, "GET", cases[i].path), FY_LUA_ERROR, "%s", cases[i].path);
        cr_assert(strstr(e2.x.err, cases[i].want), "%s: %s", cases[i].path, e2.x.err);
        ex_free(vm, &e2);
    }
    /* Releasing twice, or an exchange that never ran a hook, is harmless. */
    fy_lua_x_release(vm, &e2.x);
    struct fy_lua_x idle;
    fy_lua_x_init(&idle);
    fy_lua_x_release(vm, &idle);
    fy_lua_close(vm);
}

Test(lua, body_filter)
{
    struct fy_lua *vm =
        open_text("function on_response(req, resp)\n"
                  "    local p = req.path\n"
                  "    if p == '/upper' then resp:filter_body(function(c, last)\n"
                  "        return c:upper() .. (last and '.' or '') end) end\n"
                  "    if p == '/nil' then resp:filter_body(function(c, last) end) end\n"
                  "    if p == '/num' then resp:filter_body(function(c, last) return 1 end) end\n"
                  "    if p == '/err' then resp:filter_body(function(c, last)\n"
                  "        if last then error('boom') end end) end\n"
                  "end\n");
    struct ex e;
    const char *out;
    size_t len;
    cr_assert_eq(request(vm, &e, "GET", "/upper"), FY_LUA_CONTINUE);
    cr_assert_not(fy_lua_wants_body(&e.x));
    ex_response(&e, 200, "text/plain");
    cr_assert_eq(fy_lua_on_response(vm, &e.x, &e.v), FY_LUA_CONTINUE, "%s", e.x.err);
    cr_assert(fy_lua_wants_body(&e.x));
    cr_assert_eq(fy_lua_filter(vm, &e.x, "ab", 2, false, &out, &len), FY_LUA_CONTINUE);
    cr_assert(len == 2 && memcmp(out, "AB", 2) == 0);
    cr_assert_eq(fy_lua_filter(vm, &e.x, "c\0d", 3, true, &out, &len), FY_LUA_CONTINUE);
    cr_assert(len == 4 && memcmp(out, "C\0D.", 4) == 0);
    ex_free(vm, &e);

    static const char chunk[] = "same bytes";
    cr_assert_eq(request(vm, &e, "GET", "/nil"), FY_LUA_CONTINUE);
    ex_response(&e, 200, NULL);
    cr_assert_eq(fy_lua_on_response(vm, &e.x, &e.v), FY_LUA_CONTINUE);
    cr_assert_eq(fy_lua_filter(vm, &e.x, chunk, 10, true, &out, &len), FY_LUA_CONTINUE);
    cr_assert(out == chunk && len == 10);
    ex_free(vm, &e);

    cr_assert_eq(request(vm, &e, "GET", "/num"), FY_LUA_CONTINUE);
    ex_response(&e, 200, NULL);
    cr_assert_eq(fy_lua_on_response(vm, &e.x, &e.v), FY_LUA_CONTINUE);
    cr_assert_eq(fy_lua_filter(vm, &e.x, chunk, 10, false, &out, &len), FY_LUA_ERROR);
    cr_assert(strstr(e.x.err, ":6: the body filter returned a number: return a string or nil"),
              "%s", e.x.err);
    ex_free(vm, &e);

    cr_assert_eq(request(vm, &e, "GET", "/err"), FY_LUA_CONTINUE);
    ex_response(&e, 200, NULL);
    cr_assert_eq(fy_lua_on_response(vm, &e.x, &e.v), FY_LUA_CONTINUE);
    cr_assert_eq(fy_lua_filter(vm, &e.x, "a", 1, false, &out, &len), FY_LUA_CONTINUE);
    cr_assert_eq(fy_lua_filter(vm, &e.x, "", 0, true, &out, &len), FY_LUA_ERROR);
    cr_assert(strstr(e.x.err, ":8: boom"), "%s", e.x.err);
    ex_free(vm, &e);
    fy_lua_close(vm);
}

/* Starts a request whose on_request sets up the request body filter; asserts it did. */
static void request_filtered(struct fy_lua *vm, struct ex *e, const char *path)
{
    cr_assert_eq(request(vm, e, "POST", path), FY_LUA_CONTINUE, "%s: %s", path, e->x.err);
    cr_assert(fy_lua_wants_request_body(&e->x), "%s", path);
    cr_assert_not(fy_lua_wants_body(&e->x), "%s", path);
}

Test(lua, request_body_filter)
{
    const char *p =
        script("function on_request(req)\n"
               "    local p = req.path\n"
               "    if p == '/upper' then req:filter_body(function(c, last)\n"
               "        return c:upper() .. (last and '.' or '') end) end\n"
               "    if p == '/nil' then req:filter_body(function(c, last) end) end\n"
               "    local held = {}\n"
               "    if p == '/hold' then req:filter_body(function(c, last)\n"
               "        held[#held + 1] = c\n"
               "        if last then return table.concat(held) end\n"
               "        return '' end) end\n"
               "    if p == '/err' then req:filter_body(function(c, last)\n"
               "        if last then error('boom') end end) end\n"
               "    if p == '/num' then req:filter_body(function(c, last) return 1 end) end\n"
               "end\n");
    struct fy_lua *vm = open_lim(p, 0, 0);
    struct ex e;
    const char *out;
    size_t len;
    cr_assert_eq(request(vm, &e, "GET", "/none"), FY_LUA_CONTINUE);
    cr_assert_not(fy_lua_wants_request_body(&e.x));
    /* no filter: the chunk unchanged, at no cost */
    cr_assert_eq(fy_lua_filter_request(vm, &e.x, "ab", 2, true, &out, &len), FY_LUA_CONTINUE);
    cr_assert(out != NULL && len == 2 && memcmp(out, "ab", 2) == 0);
    ex_free(vm, &e);

    request_filtered(vm, &e, "/upper");
    cr_assert_eq(fy_lua_filter_request(vm, &e.x, "ab", 2, false, &out, &len), FY_LUA_CONTINUE);
    cr_assert(len == 2 && memcmp(out, "AB", 2) == 0);
    cr_assert_eq(fy_lua_filter_request(vm, &e.x, "c\0d", 3, true, &out, &len), FY_LUA_CONTINUE);
    cr_assert(len == 4 && memcmp(out, "C\0D.", 4) == 0);
    ex_free(vm, &e);

    static const char chunk[] = "same bytes";
    request_filtered(vm, &e, "/nil");
    cr_assert_eq(fy_lua_filter_request(vm, &e.x, chunk, 10, false, &out, &len), FY_LUA_CONTINUE);
    cr_assert(out == chunk && len == 10);
    cr_assert_eq(fy_lua_filter_request(vm, &e.x, "", 0, true, &out, &len), FY_LUA_CONTINUE);
    cr_assert_eq(len, 0);
    ex_free(vm, &e);

    request_filtered(vm, &e, "/hold");
    cr_assert_eq(fy_lua_filter_request(vm, &e.x, "one ", 4, false, &out, &len), FY_LUA_CONTINUE);
    cr_assert_eq(len, 0);
    cr_assert_eq(fy_lua_filter_request(vm, &e.x, "two", 3, false, &out, &len), FY_LUA_CONTINUE);
    cr_assert_eq(len, 0);
    cr_assert_eq(fy_lua_filter_request(vm, &e.x, "", 0, true, &out, &len), FY_LUA_CONTINUE);
    cr_assert(len == 7 && memcmp(out, "one two", 7) == 0);
    ex_free(vm, &e);

    char want[200];
    request_filtered(vm, &e, "/err");
    cr_assert_eq(fy_lua_filter_request(vm, &e.x, "a", 1, false, &out, &len), FY_LUA_CONTINUE);
    cr_assert_eq(fy_lua_filter_request(vm, &e.x, "", 0, true, &out, &len), FY_LUA_ERROR);
    snprintf(want, sizeof(want), "%s:12: boom", p);
    cr_assert_str_eq(e.x.err, want);
    ex_free(vm, &e);

    request_filtered(vm, &e, "/num");
    cr_assert_eq(fy_lua_filter_request(vm, &e.x, chunk, 10, false, &out, &len), FY_LUA_ERROR);
    snprintf(want, sizeof(want), "%s:13: the body filter returned a number: return a string or nil",
             p);
    cr_assert_str_eq(e.x.err, want);
    ex_free(vm, &e);
    fy_lua_close(vm);
}

Test(lua, request_body_filter_only_in_on_request)
{
    struct fy_lua *vm =
        open_text("function on_request(req)\n"
                  "    if req.path == '/inner' then\n"
                  "        req:filter_body(function(c, last) req:filter_body(function() end) end)\n"
                  "    end\n"
                  "    if req.path == '/notfn' then req:filter_body('x') end\n"
                  "end\n"
                  "function on_response(req, resp)\n"
                  "    if req.path == '/resp' then req:filter_body(function() end) end\n"
                  "    if req.path == '/rbody' then\n"
                  "        resp:filter_body(function() req:filter_body(function() end) end)\n"
                  "    end\n"
                  "end\n"
                  "function on_log(req, resp, info)\n"
                  "    req:filter_body(function() end)\n"
                  "end\n");
    const char *want = "req:filter_body() is only possible in on_request";
    struct ex e;
    const char *out;
    size_t len;
    cr_assert_eq(request(vm, &e, "POST", "/notfn"), FY_LUA_ERROR);
    cr_assert(strstr(e.x.err, ":5: bad argument #1 to 'filter_body' (function expected"), "%s",
              e.x.err);
    ex_free(vm, &e);

    cr_assert_eq(request(vm, &e, "POST", "/resp"), FY_LUA_CONTINUE);
    ex_response(&e, 200, NULL);
    cr_assert_eq(fy_lua_on_response(vm, &e.x, &e.v), FY_LUA_ERROR);
    cr_assert(strstr(e.x.err, ":8: ") && strstr(e.x.err, want), "%s", e.x.err);
    cr_assert_not(fy_lua_wants_request_body(&e.x));
    ex_free(vm, &e);

    cr_assert_eq(request(vm, &e, "POST", "/rbody"), FY_LUA_CONTINUE);
    ex_response(&e, 200, NULL);
    cr_assert_eq(fy_lua_on_response(vm, &e.x, &e.v), FY_LUA_CONTINUE, "%s", e.x.err);
    cr_assert_eq(fy_lua_filter(vm, &e.x, "a", 1, true, &out, &len), FY_LUA_ERROR);
    cr_assert(strstr(e.x.err, ":10: ") && strstr(e.x.err, want), "%s", e.x.err);
    ex_free(vm, &e);

    /* inside its own filter too */
    request_filtered(vm, &e, "/inner");
    cr_assert_eq(fy_lua_filter_request(vm, &e.x, "a", 1, true, &out, &len), FY_LUA_ERROR);
    cr_assert(strstr(e.x.err, ":3: ") && strstr(e.x.err, want), "%s", e.x.err);
    ex_free(vm, &e);

    cr_assert_eq(request(vm, &e, "POST", "/log"), FY_LUA_CONTINUE);
    capture_begin();
    struct fy_lua_log_info info = {.status = 200};
    fy_lua_on_log(vm, &e.x, &e.v, &info);
    const char *log = capture_end();
    cr_assert(strstr(log, "warn ferry: lua: on_log: ") && strstr(log, want), "%s", log);
    cr_assert_not(fy_lua_wants_request_body(&e.x));
    ex_free(vm, &e);
    fy_lua_close(vm);
}

Test(lua, request_and_response_filters_are_independent)
{
    struct fy_lua *vm = open_text("function on_request(req)\n"
                                  "    req:filter_body(function(c, last) return 'q:' .. c end)\n"
                                  "end\n"
                                  "function on_response(req, resp)\n"
                                  "    resp:filter_body(function(c, last) return 'r:' .. c end)\n"
                                  "end\n");
    struct ex e;
    request_filtered(vm, &e, "/both");
    const char *qout, *rout;
    size_t qlen, rlen;
    cr_assert_eq(fy_lua_filter_request(vm, &e.x, "one", 3, false, &qout, &qlen), FY_LUA_CONTINUE,
                 "%s", e.x.err);
    cr_assert(qlen == 5 && memcmp(qout, "q:one", 5) == 0);
    ex_response(&e, 200, "text/plain");
    cr_assert_eq(fy_lua_on_response(vm, &e.x, &e.v), FY_LUA_CONTINUE, "%s", e.x.err);
    cr_assert(fy_lua_wants_body(&e.x) && fy_lua_wants_request_body(&e.x));
    cr_assert_eq(fy_lua_filter(vm, &e.x, "two", 3, false, &rout, &rlen), FY_LUA_CONTINUE, "%s",
                 e.x.err);
    cr_assert(rlen == 5 && memcmp(rout, "r:two", 5) == 0);
    /* Collect garbage hard: an output only the other filter's reference kept would be freed. */
    lua_gc(vm->L, LUA_GCCOLLECT);
    lua_gc(vm->L, LUA_GCCOLLECT);
    cr_assert(qlen == 5 && memcmp(qout, "q:one", 5) == 0, "the request output was clobbered");
    /* and the response filter's output survives a request filter call */
    cr_assert_eq(fy_lua_filter_request(vm, &e.x, "three", 5, true, &qout, &qlen), FY_LUA_CONTINUE,
                 "%s", e.x.err);
    lua_gc(vm->L, LUA_GCCOLLECT);
    cr_assert(qlen == 7 && memcmp(qout, "q:three", 7) == 0);
    cr_assert(rlen == 5 && memcmp(rout, "r:two", 5) == 0, "the response output was clobbered");
    cr_assert_eq(fy_lua_filter(vm, &e.x, "", 0, true, &rout, &rlen), FY_LUA_CONTINUE);
    cr_assert(rlen == 2 && memcmp(rout, "r:", 2) == 0);
    ex_free(vm, &e);
    fy_lua_close(vm);
}

Test(lua, request_body_filter_budget)
{
    const char *p = script("function on_request(req)\n"
                           "    req:filter_body(function(c, last)\n"
                           "        if c == 'loop' then while true do end end\n"
                           "        local n = 0\n"
                           "        for i = 1, 20000 do n = n + i end\n"
                           "        return tostring(n)\n"
                           "    end)\n"
                           "end\n");
    struct fy_lua *vm = open_lim(p, 100000, 0);
    struct ex e;
    const char *out;
    size_t len;
    request_filtered(vm, &e, "/");
    /* each call has its own budget: many calls under it in total over it are fine */
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(fy_lua_filter_request(vm, &e.x, "x", 1, false, &out, &len), FY_LUA_CONTINUE,
                     "%s", e.x.err);
        cr_assert(len == 9 && memcmp(out, "200010000", 9) == 0);
    }
    cr_assert_eq(fy_lua_filter_request(vm, &e.x, "loop", 4, false, &out, &len), FY_LUA_ERROR);
    char want[200];
    snprintf(want, sizeof(want), "%s:3: instruction budget of 100000 exceeded", p);
    cr_assert_str_eq(e.x.err, want);
    ex_free(vm, &e);
    /* the state still works */
    request_filtered(vm, &e, "/");
    cr_assert_eq(fy_lua_filter_request(vm, &e.x, "x", 1, true, &out, &len), FY_LUA_CONTINUE, "%s",
                 e.x.err);
    cr_assert(len == 9 && memcmp(out, "200010000", 9) == 0);
    ex_free(vm, &e);
    fy_lua_close(vm);
}

/* ---- ferry helpers ---- */

Test(lua, ferry_log_and_print)
{
    const char *p = script("function on_request(req)\n"
                           "    ferry.log('hello ' .. req.path)\n"
                           "    ferry.log('warn', 'careful\\nnew line')\n"
                           "    ferry.log('debug', 'hidden')\n"
                           "    print('printed', 1, nil)\n"
                           "    if req.path == '/bad' then ferry.log('loud', 'x') end\n"
                           "end\n");
    struct fy_lua *vm = open_lim(p, 0, 0);
    struct ex e;
    capture_begin();
    enum fy_lua_rc rc = request(vm, &e, "GET", "/x");
    const char *log = capture_end();
    cr_assert_eq(rc, FY_LUA_CONTINUE, "%s", e.x.err);
    char want[512];
    /* print's tabs are control bytes too: they become spaces */
    snprintf(want, sizeof(want),
             "info ferry: %s:2: hello /x\nwarn ferry: %s:3: careful new line\n"
             "info ferry: %s:5: printed 1 nil\n",
             p, p, p);
    cr_assert_str_eq(log, want);
    ex_free(vm, &e);
    capture_begin();
    rc = request(vm, &e, "GET", "/bad");
    capture_end();
    cr_assert_eq(rc, FY_LUA_ERROR);
    cr_assert(strstr(e.x.err, ":6: ferry.log: unknown level 'loud'"), "%s", e.x.err);
    ex_free(vm, &e);
    fy_lua_close(vm);
}

Test(lua, json)
{
    struct fy_lua *vm = open_text(EVAL);
    const char *J = "local j = ferry.json; ";
    char code[512];
#define JS(expr, want)                                                                             \
    do {                                                                                           \
        snprintf(code, sizeof(code), "%s%s", J, expr);                                             \
        eval_is(vm, code, want);                                                                   \
    } while (0)
#define JE(expr, want)                                                                             \
    do {                                                                                           \
        snprintf(code, sizeof(code), "%s%s", J, expr);                                             \
        eval_err(vm, code, want);                                                                  \
    } while (0)
    JS("return j.encode(j.decode('{\"a\":[1,2.5,\"x\",true,false,null,{},[],-3e-7]}'))",
       "{\"a\":[1,2.5,\"x\",true,false,null,{},[],-3e-07]}");
    JS("return j.encode(j.decode(' \"caf\\\\u00e9 \\\\ud83d\\\\ude00 \\\\n\" '))",
       "\"caf\xc3\xa9 \xf0\x9f\x98\x80 \\n\"");
    JS("return j.encode({1, 2, 3})", "[1,2,3]");
    JS("return j.encode({})", "{}");
    JS("return j.encode(setmetatable({}, j.array))", "[]");
    JS("return j.encode({x = {y = {z = 'deep'}}})", "{\"x\":{\"y\":{\"z\":\"deep\"}}}");
    JS("return j.encode(0.1) .. ' ' .. j.encode(1e300) .. ' ' .. j.encode(2^53) .. ' ' .. "
       "j.encode(-7)",
       "0.1 1e+300 9007199254740992 -7");
    JS("return j.encode('q\"\\\\/\\1')", "\"q\\\"\\\\/\\u0001\"");
    JS("return j.encode(nil) .. j.encode(j.null) .. j.encode({j.null, 1})", "nullnull[null,1]");
    JS("return j.decode('null') == j.null", "true");
    JS("return tostring(j.null)", "ferry.json.null");
    JS("return math.type(j.decode('12345678901')) .. math.type(j.decode('1.5'))", "integerfloat");
    JS("return j.decode('{\"a\":{\"b\":[10,20]}}').a.b[2]", "20");
    JS("return #j.decode('[1,2,3]')", "3");
    JS("local s = string.rep('[', 64) .. string.rep(']', 64); return j.encode(j.decode(s)) == s",
       "true");
    JE("return j.decode('{\"a\":1,}')",
       "ferry.json.decode: line 1, column 8: expected a string (the name of a member)");
    JE("return j.decode('{\\n  \"a\": tru\\n}')", "line 2, column 8: expected a value");
    JE("return j.decode('[1] x')", "unexpected characters after the value");
    JE("return j.decode('\"\\255\"')", "ferry.json.decode: line 1");
    JE("return j.decode('NaN')", "expected a value");
    JE("return j.decode(string.rep('[', 65) .. string.rep(']', 65))",
       "nesting deeper than 64 levels");
    JE("return j.encode(print)", "ferry.json.encode: cannot encode a function");
    JE("return j.encode(0/0)", "cannot encode NaN");
    JE("return j.encode(math.huge)", "cannot encode an infinite number");
    JE("return j.encode({1, x = 2})", "object keys must be strings, not number");
    JE("return j.encode({[true] = 1})", "object keys must be strings, not boolean");
    JE("local t = {}; t.t = t; return j.encode(t)", "nesting deeper than 64 levels (a cycle?)");
    JE("return j.encode('\\255')", "string is not valid UTF-8");
    /* An error in a helper has the position of the script's call. */
    JE("return j.encode(print)", "code:1: ferry.json.encode");
    JS("local ok, e = pcall(j.decode, '[') return e",
       "code:1: ferry.json.decode: line 1, column 2: unexpected end of input (expected a value)");
#undef JS
#undef JE
    fy_lua_close(vm);
}

Test(lua, base64_and_url)
{
    struct fy_lua *vm = open_text(EVAL);
    eval_is(vm, "return ferry.base64.encode('hello')", "aGVsbG8=");
    eval_is(vm, "return ferry.base64.encode('')", "");
    eval_is(vm, "return ferry.base64.decode('aGVsbG8=')", "hello");
    eval_is(vm, "return select(2, ferry.base64.decode('aGVsbG8'))", "not base64");
    eval_is(vm, "return select(2, ferry.base64.decode('aGVs*G8='))", "not base64");
    eval_is(vm, "return ferry.base64.encode_url('\\251\\255\\254')", "-__-");
    eval_is(vm, "return ferry.base64.encode_url('\\251\\255')", "-_8");
    eval_is(vm, "return ferry.base64.decode_url('-_8') == '\\251\\255'", "true");
    eval_is(vm, "return ferry.base64.decode_url('-_8=') == '\\251\\255'", "true");
    eval_is(vm, "return ferry.base64.decode_url('aGVsbG8')", "hello");
    eval_is(vm, "return select(2, ferry.base64.decode_url('a'))", "not base64url");
    eval_is(vm, "return select(2, ferry.base64.decode_url('+/8'))", "not base64url");
    eval_is(vm,
            "local u = ferry.url.parse('HTTPS://user:pw@Example.com:8443/a/b?x=1&y=2#frag')\n"
            "return table.concat({u.scheme, u.userinfo, u.host, u.port, u.path, u.query, "
            "u.fragment}, ' ')",
            "https user:pw Example.com 8443 /a/b x=1&y=2 frag");
    eval_is(vm,
            "local u = ferry.url.parse('http://[::1]:8080')\n"
            "return u.host .. ' ' .. u.port .. ' ' .. u.path .. ' ' .. tostring(u.query)",
            "::1 8080 / nil");
    eval_is(vm,
            "local u = ferry.url.parse('/p/q?a=1')\n"
            "return tostring(u.scheme) .. ' ' .. tostring(u.host) .. ' ' .. u.path .. ' ' .. "
            "u.query",
            "nil nil /p/q a=1");
    eval_is(vm, "return ferry.url.parse('http://h.test').path", "/");
    eval_is(vm, "return select(2, ferry.url.parse('http://h.test:8x/'))", "bad port");
    eval_is(vm, "return select(2, ferry.url.parse('http://h:99999/'))", "bad port");
    eval_is(vm, "return select(2, ferry.url.parse('http://[::1/'))", "unterminated IPv6 address");
    eval_is(vm,
            "local q, all = ferry.url.parse_query('?a=1&b=x%20y+z&a=2&c&d=%zz&&e=')\n"
            "return table.concat({q.a, q.b, q.c, q.d, q.e, #all.a, all.a[1], all.a[2]}, '|')",
            "2|x y z||%zz||2|1|2");
    eval_is(vm, "return ferry.url.escape('a b/\\195\\188~-._')", "a%20b%2F%C3%BC~-._");
    eval_is(vm, "return ferry.url.unescape('a%20b%2f+%zz%4')", "a b/+%zz%4");
    eval_is(
        vm,
        "local t, p = ferry.mime('Text/HTML; Charset=\"utf-8\"; q = 1 ; flag; x=\"a;b\\\\\"c\"')"
        "\nreturn table.concat({t, p.charset, p.q, tostring(p.flag), p.x}, '|')",
        "text/html|utf-8|1|nil|a;b\"c");
    eval_is(vm, "return ferry.mime('application/json')", "application/json");
    eval_is(vm, "return tostring(ferry.mime(nil)) .. tostring(ferry.mime('  '))", "nilnil");
    const char *text[] = {"text/html; charset=utf-8", "TEXT/CSS",
                          "application/json",         "application/problem+json",
                          "application/javascript",   "text/javascript",
                          "application/xml",          "image/svg+xml",
                          "application/atom+xml"};
    const char *binary[] = {
        "image/png", "application/octet-stream", "application/jsonx", "video/mp4", "", "textual"};
    char code[200];
    for (size_t i = 0; i < sizeof(text) / sizeof(text[0]); i++) {
        snprintf(code, sizeof(code), "return ferry.is_text('%s')", text[i]);
        eval_is(vm, code, "true");
    }
    for (size_t i = 0; i < sizeof(binary) / sizeof(binary[0]); i++) {
        snprintf(code, sizeof(code), "return ferry.is_text('%s')", binary[i]);
        eval_is(vm, code, "false");
    }
    eval_is(vm, "return ferry.is_text(nil)", "false");
    fy_lua_close(vm);
}

/* ---- the examples ---- */

struct body {
    char *p;
    size_t len;
};

static void body_add(struct body *b, const char *s, size_t n)
{
    b->p = realloc(b->p, b->len + n + 1);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

/* Runs a response with this Content-Type through the script's body filter, cut at the offsets
 * in cuts (ascending, ncuts of them); `empty_last`: the last call has no bytes. Returns the
 * output (malloc'd), or NULL when the script did not filter the body. */
static char *filter_body(struct fy_lua *vm, const char *ctype, const char *in, const size_t *cuts,
                         int ncuts, bool empty_last)
{
    struct ex e;
    cr_assert_eq(request(vm, &e, "GET", "/page"), FY_LUA_CONTINUE, "%s", e.x.err);
    ex_response(&e, 200, ctype);
    cr_assert_eq(fy_lua_on_response(vm, &e.x, &e.v), FY_LUA_CONTINUE, "%s", e.x.err);
    if (!fy_lua_wants_body(&e.x)) {
        ex_free(vm, &e);
        return NULL;
    }
    struct body out = {0};
    body_add(&out, "", 0);
    size_t len = strlen(in), at = 0;
    for (int i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        bool last = i == ncuts && !empty_last;
        const char *o;
        size_t olen;
        cr_assert_eq(fy_lua_filter(vm, &e.x, in + at, end - at, last, &o, &olen), FY_LUA_CONTINUE,
                     "%s", e.x.err);
        body_add(&out, o, olen);
        at = end;
    }
    if (empty_last) {
        const char *o;
        size_t olen;
        cr_assert_eq(fy_lua_filter(vm, &e.x, "", 0, true, &o, &olen), FY_LUA_CONTINUE, "%s",
                     e.x.err);
        body_add(&out, o, olen);
    }
    ex_free(vm, &e);
    return out.p;
}

#define TAG "<script src=\"/__ferry/inject.js\"></script>"

static void inject_all_splits(struct fy_lua *vm, const char *in, const char *want)
{
    size_t len = strlen(in);
    /* one cut anywhere */
    for (size_t k = 0; k <= len; k++) {
        for (int empty_last = 0; empty_last < 2; empty_last++) {
            char *out = filter_body(vm, "text/html; charset=utf-8", in, &k, 1, empty_last);
            cr_assert_str_eq(out, want, "cut at %zu", k);
            free(out);
        }
    }
    /* two cuts, both around the </body> */
    const char *close = strcasestr(in, "</body>");
    size_t from = close ? (size_t)(close - in) : 0;
    size_t to = close ? from + 7 : len;
    from = from >= 8 ? from - 8 : 0;
    to = to + 8 <= len ? to + 8 : len;
    for (size_t a = from; a <= to; a++) {
        for (size_t b = a; b <= to; b++) {
            size_t cuts[2] = {a, b};
            char *out = filter_body(vm, "text/html", in, cuts, 2, false);
            cr_assert_str_eq(out, want, "cuts at %zu and %zu", a, b);
            free(out);
        }
    }
    /* one byte at a time */
    size_t *cuts = malloc(len * sizeof(*cuts));
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    char *out = filter_body(vm, "text/html", in, cuts, (int)len, true);
    cr_assert_str_eq(out, want, "1-byte chunks");
    free(out);
    free(cuts);
}

Test(lua, example_inject_script)
{
    struct fy_lua *vm = open_lim("examples/lua/inject_script.lua", 0, 0);
    inject_all_splits(vm, "<html><body><p>hi</p></body></html>\n",
                      "<html><body><p>hi</p>" TAG "</body></html>\n");
    /* any case; only the first </body>; a near miss before it */
    inject_all_splits(vm, "<p></bod></BODY> </body>", "<p></bod>" TAG "</BODY> </body>");
    inject_all_splits(vm, "</body>", TAG "</body>");
    /* no </body>: unchanged, including a tail that looks like its start */
    inject_all_splits(vm, "<p>no end</bo", "<p>no end</bo");
    inject_all_splits(vm, "", "");
    /* not HTML: the body is not filtered at all */
    size_t k = 3;
    cr_assert_null(filter_body(vm, "application/json", "</body>", &k, 1, false));
    cr_assert_null(filter_body(vm, NULL, "</body>", &k, 1, false));
    fy_lua_close(vm);
}

Test(lua, example_redact_json)
{
    struct fy_lua *vm = open_lim("examples/lua/redact_json.lua", 0, 0);
    const char *in = "{\"user\":{\"name\":\"ada\",\"password\":\"p1\",\"keys\":[{\"api_key\":\"k\","
                     "\"Token\":{\"nested\":\"t\"}},{\"other\":[1,2]}]},\"secret\":\"s\","
                     "\"list\":[],\"n\":null}";
    size_t cuts[] = {1, 10, 11, 40, 77};
    char *out = filter_body(vm, "application/json; charset=utf-8", in, cuts, 5, true);
    cr_assert_not_null(out);
    struct fy_json_error jerr;
    struct fy_json_doc *doc = fy_json_parse(out, strlen(out), NULL, &jerr);
    cr_assert_not_null(doc, "%s: %s", out, jerr.msg);
    const struct fy_json *root = fy_json_root(doc);
    const struct fy_json *user = fy_json_get(root, "user");
    cr_assert_str_eq(fy_json_get(user, "name")->str, "ada");
    cr_assert_str_eq(fy_json_get(user, "password")->str, "[redacted]");
    const struct fy_json *keys = fy_json_get(user, "keys");
    cr_assert_eq(keys->type, FY_JSON_ARRAY);
    cr_assert_str_eq(fy_json_get(keys->child, "api_key")->str, "[redacted]");
    cr_assert_str_eq(fy_json_get(keys->child, "Token")->str, "[redacted]");
    cr_assert_eq(fy_json_get(keys->child->next, "other")->n, 2);
    cr_assert_str_eq(fy_json_get(root, "secret")->str, "[redacted]");
    cr_assert_eq(fy_json_get(root, "list")->type, FY_JSON_ARRAY);
    cr_assert_eq(fy_json_get(root, "n")->type, FY_JSON_NULL);
    cr_assert_null(strstr(out, "p1"));
    fy_json_doc_free(doc);
    free(out);
    /* Not JSON: passed unchanged (with a warning). */
    capture_begin();
    out = filter_body(vm, "application/json", "{not json", cuts, 1, false);
    const char *log = capture_end();
    cr_assert_str_eq(out, "{not json");
    cr_assert(strstr(log, "redact_json: passed unchanged"), "%s", log);
    free(out);
    cr_assert_null(filter_body(vm, "text/html", "{}", cuts, 0, false));
    fy_lua_close(vm);
}

Test(lua, example_mock)
{
    struct fy_lua *vm = open_lim("examples/lua/mock.lua", 0, 0);
    struct ex e;
    cr_assert_eq(request(vm, &e, "GET", "/mock/users?page=1"), FY_LUA_RESPONDED, "%s", e.x.err);
    cr_assert_eq(e.x.respond_status, 200);
    struct fy_msg m;
    fy_msg_init(&m);
    cr_assert_eq(fy_lua_respond_fields(vm, &e.x, &e.v, &m), 0);
    cr_assert_str_eq(hdr(&m, "Content-Type"), "application/json");
    fy_msg_free(&m);
    struct fy_json_error jerr;
    struct fy_json_doc *doc = fy_json_parse(e.x.respond_body, e.x.respond_body_len, NULL, &jerr);
    cr_assert_not_null(doc, "%s", jerr.msg);
    const struct fy_json *users = fy_json_get(fy_json_root(doc), "users");
    cr_assert_eq(users->n, 2);
    cr_assert_str_eq(fy_json_get(users->child, "name")->str, "Ada Lovelace");
    cr_assert_eq(fy_json_get(users->child->next, "roles")->type, FY_JSON_ARRAY);
    double count;
    cr_assert(fy_json_get_num(fy_json_root(doc), "count", &count) && count == 2);
    fy_json_doc_free(doc);
    ex_free(vm, &e);
    cr_assert_eq(request(vm, &e, "POST", "/mock/users"), FY_LUA_CONTINUE);
    ex_free(vm, &e);
    cr_assert_eq(request(vm, &e, "GET", "/mock/users/1"), FY_LUA_CONTINUE);
    ex_free(vm, &e);
    fy_lua_close(vm);
}

static const char *b64url(const char *s)
{
    size_t n = strlen(s);
    char *o = scratch(NULL, fy_base64_len(n) + 1);
    size_t len = fy_base64_encode(s, n, o);
    while (len && o[len - 1] == '=')
        len--;
    for (size_t i = 0; i < len; i++)
        o[i] = o[i] == '+' ? '-' : o[i] == '/' ? '_' : o[i];
    o[len] = 0;
    return o;
}

static const char *jwt_user(struct fy_lua *vm, const char *authorization)
{
    struct ex e;
    ex_init(&e, "GET", "/");
    add(&e.req, "X-User", "forged-by-client");
    if (authorization)
        add(&e.req, "Authorization", authorization);
    cr_assert_eq(fy_lua_on_request(vm, &e.x, &e.v), FY_LUA_CONTINUE, "%s", e.x.err);
    cr_assert_leq(count_visible(&e.req, "X-User"), 1);
    const char *u = hdr(&e.req, "X-User");
    ex_free(vm, &e);
    return u;
}

Test(lua, example_jwt_header)
{
    struct fy_lua *vm = open_lim("examples/lua/jwt_header.lua", 0, 0);
    char auth[512];
    const char *head = b64url("{\"alg\":\"HS256\",\"typ\":\"JWT\"}");
    snprintf(auth, sizeof(auth), "Bearer %s.%s.c2lnbmF0dXJl", head,
             b64url("{\"sub\":\"ada@example.com\",\"exp\":1700000000,\"n\":\"\xc3\xa9?>\"}"));
    cr_assert_str_eq(jwt_user(vm, auth), "ada@example.com");
    snprintf(auth, sizeof(auth), "bearer %s.%s.", head, b64url("{\"sub\":\"u-1\"}"));
    cr_assert_str_eq(jwt_user(vm, auth), "u-1");
    /* no token, a bad token, a sub that is not a plain name: no X-User at all */
    cr_assert_null(jwt_user(vm, NULL));
    cr_assert_null(jwt_user(vm, "Basic YTpi"));
    cr_assert_null(jwt_user(vm, "Bearer not-a-jwt"));
    cr_assert_null(jwt_user(vm, "Bearer a.!!!.b"));
    snprintf(auth, sizeof(auth), "Bearer %s.%s.x", head, b64url("not json"));
    cr_assert_null(jwt_user(vm, auth));
    snprintf(auth, sizeof(auth), "Bearer %s.%s.x", head, b64url("{\"sub\":\"a\\r\\nb\"}"));
    cr_assert_null(jwt_user(vm, auth));
    snprintf(auth, sizeof(auth), "Bearer %s.%s.x", head, b64url("{\"sub\":42}"));
    cr_assert_null(jwt_user(vm, auth));
    fy_lua_close(vm);
}

Test(lua, example_log_user_from_query)
{
    struct fy_lua *vm = open_lim("examples/lua/log_user_from_query.lua", 0, 0);
    struct ex e;
    cr_assert_eq(request(vm, &e, "GET", "/x?user=ada%20l&y=1"), FY_LUA_CONTINUE, "%s", e.x.err);
    ex_response(&e, 200, NULL);
    struct fy_lua_log_info info = {.status = 200, .duration_us = 1500};
    capture_begin();
    fy_lua_on_log(vm, &e.x, &e.v, &info);
    const char *log = capture_end();
    ex_free(vm, &e);
    cr_assert_str_eq(log, "info ferry: examples/lua/log_user_from_query.lua:18: GET "
                          "/x?user=ada%20l&y=1 200 1.5ms user=ada l\n");
    cr_assert_eq(request(vm, &e, "GET", "/plain"), FY_LUA_CONTINUE, "%s", e.x.err);
    info.status = 404;
    capture_begin();
    fy_lua_on_log(vm, &e.x, &e.v, &info);
    log = capture_end();
    ex_free(vm, &e);
    cr_assert(strstr(log, "GET /plain 404 1.5ms user=-\n"), "%s", log);
    fy_lua_close(vm);
}

/* Runs a POST with this Content-Type and body through log_json_field.lua: the request body cut
 * at the offsets in cuts (ascending, ncuts of them), `empty_last` as filter_body above; asserts
 * the body reaches the upstream unchanged. Returns the line on_log wrote (scratch memory), or
 * NULL when the script did not filter the body. */
static const char *json_field_log(struct fy_lua *vm, const char *ctype, const char *in, size_t len,
                                  const size_t *cuts, int ncuts, bool empty_last)
{
    struct ex e;
    ex_init(&e, "POST", "/graphql");
    if (ctype)
        add(&e.req, "Content-Type", ctype);
    cr_assert_eq(fy_lua_on_request(vm, &e.x, &e.v), FY_LUA_CONTINUE, "%s", e.x.err);
    if (!fy_lua_wants_request_body(&e.x)) {
        ex_free(vm, &e);
        return NULL;
    }
    struct body out = {0};
    body_add(&out, "", 0);
    size_t at = 0;
    for (int i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        bool last = i == ncuts && !empty_last;
        const char *o;
        size_t olen;
        cr_assert_eq(fy_lua_filter_request(vm, &e.x, in + at, end - at, last, &o, &olen),
                     FY_LUA_CONTINUE, "%s", e.x.err);
        cr_assert(o == in + at && olen == end - at, "chunk %d was changed", i);
        body_add(&out, o, olen);
        at = end;
    }
    if (empty_last) {
        const char *o;
        size_t olen;
        cr_assert_eq(fy_lua_filter_request(vm, &e.x, "", 0, true, &o, &olen), FY_LUA_CONTINUE, "%s",
                     e.x.err);
        cr_assert_eq(olen, 0);
    }
    cr_assert(out.len == len && memcmp(out.p, in, len) == 0, "the body was changed");
    free(out.p);
    ex_response(&e, 200, "application/json");
    struct fy_lua_log_info info = {.status = 200, .duration_us = 1500};
    capture_begin();
    fy_lua_on_log(vm, &e.x, &e.v, &info);
    const char *log = capture_end();
    ex_free(vm, &e);
    return sdup(log, strlen(log));
}

static void json_field_is(struct fy_lua *vm, const char *in, const char *op)
{
    char want[160];
    snprintf(want, sizeof(want), ": POST /graphql 200 1.5ms op=%s\n", op);
    size_t k = strlen(in) / 2;
    const char *log = json_field_log(vm, "application/json", in, strlen(in), &k, 1, false);
    cr_assert_not_null(log, "%s: not filtered", in);
    cr_assert(strstr(log, want), "%s: got '%s', want '%s'", in, log, want);
}

Test(lua, example_log_json_field)
{
    struct fy_lua *vm = open_lim("examples/lua/log_json_field.lua", 0, 0);
    const char *in = "{\"query\":\"query GetUser($id: ID!) { user(id: $id) { name } }\","
                     "\"operationName\":\"GetUser\",\"variables\":{\"id\":\"\xc3\xa9-1\"}}";
    size_t len = strlen(in);
    const char *want = "info ferry: examples/lua/log_json_field.lua:61: POST /graphql 200 1.5ms "
                       "op=GetUser\n";
    /* one cut anywhere, with and without an empty last chunk */
    for (size_t k = 0; k <= len; k++) {
        for (int empty_last = 0; empty_last < 2; empty_last++) {
            const char *log =
                json_field_log(vm, "application/json; charset=utf-8", in, len, &k, 1, empty_last);
            cr_assert_not_null(log);
            cr_assert_str_eq(log, want, "cut at %zu", k);
        }
    }
    /* one byte at a time */
    size_t *cuts = malloc(len * sizeof(*cuts));
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    cr_assert_str_eq(json_field_log(vm, "application/json", in, len, cuts, (int)len, true), want);
    cr_assert_str_eq(json_field_log(vm, "application/json", in, len, cuts, (int)len - 1, false),
                     want);
    free(cuts);

    /* the fallback, and what gives no field */
    json_field_is(vm, "{\"action\":\"user.create\",\"id\":1}", "user.create");
    json_field_is(vm, "{\"operationName\":null,\"action\":\"ping\"}", "ping");
    json_field_is(vm, "{\"operationName\":\"A\",\"action\":\"B\"}", "A");
    json_field_is(vm, "{\"operationName\":\"two words\"}", "-");
    json_field_is(vm, "{\"operationName\":42}", "-");
    json_field_is(vm, "{\"nested\":{\"operationName\":\"X\"}}", "-");
    json_field_is(vm, "[{\"operationName\":\"X\"}]", "-");
    json_field_is(vm, "\"operationName\"", "-");
    json_field_is(vm, "", "-");
    /* invalid JSON: no field, and no error (nothing in the log but the line) */
    const char *bad = "{\"operationName\":\"GetUser\"";
    size_t k = 5;
    const char *log = json_field_log(vm, "application/json", bad, strlen(bad), &k, 1, false);
    cr_assert(starts_with(log, "info ferry: ") && strstr(log, "op=-\n") &&
                  strchr(log, '\n') == log + strlen(log) - 1,
              "%s", log);

    /* 64 KiB: decoded; one byte more: passed on whole, not decoded, however it is cut */
    size_t big = 64 * 1024 + 1;
    char *b = malloc(big + 1);
    const char *head = "{\"operationName\":\"Big\",\"pad\":\"";
    memset(b, 'x', big);
    memcpy(b, head, strlen(head));
    memcpy(b + big - 3, "\"}\n", 3); /* the newline is JSON whitespace */
    b[big] = 0;
    size_t bcuts[] = {1, 100, 4096, 65535, 65536};
    log = json_field_log(vm, "application/json", b, big - 1, bcuts, 3, false);
    cr_assert(strstr(log, "op=Big\n"), "64 KiB: %s", log);
    log = json_field_log(vm, "application/json", b, big, bcuts, 5, false);
    cr_assert(strstr(log, "op=-\n"), "64 KiB + 1: %s", log);
    log = json_field_log(vm, "application/json", b, big, bcuts, 4, true);
    cr_assert(strstr(log, "op=-\n"), "64 KiB + 1: %s", log);
    free(b);

    /* not JSON: the body is not filtered at all */
    cr_assert_null(json_field_log(vm, "text/plain", in, len, NULL, 0, false));
    cr_assert_null(json_field_log(vm, "application/problem+json", in, len, NULL, 0, false));
    cr_assert_null(json_field_log(vm, NULL, in, len, NULL, 0, false));
    fy_lua_close(vm);
}
