"""The configuration file: `ferry -t -c FILE` (exit 0 / every error as FILE:LINE:COL, exit 1),
running from examples/*.yaml with real requests, `--print-config` round trips (the file behaves
like the command line it came from, secrets stay unexpanded), and flags overriding file keys."""

import os
import tempfile

import pytest

from harness import REPO_ROOT, ResponseReader, connect, run_ferry, simple_request

EXAMPLES = os.path.join(REPO_ROOT, "examples")
MINIMAL = os.path.join(EXAMPLES, "minimal.yaml")
BRIDGE = os.path.join(EXAMPLES, "bridge.yaml")
WEBAPP = os.path.join(EXAMPLES, "webapp.yaml")
GATEWAY = os.path.join(EXAMPLES, "gateway.yaml")


@pytest.fixture
def tmpdir_path():
    d = tempfile.mkdtemp(prefix="ferry-conf-")
    yield d
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)


def _write(d, name, text):
    p = os.path.join(d, name)
    with open(p, "w") as f:
        f.write(text)
    return p


def _get(port, path="/headers", headers=(), host="client.example"):
    s = connect(port)
    try:
        s.sendall(simple_request("GET", path, host=host, headers=headers))
        return ResponseReader(s).read_final()
    finally:
        s.close()


def _err_lines(p):
    return [l for l in p.stderr.decode(errors="replace").splitlines() if l.strip()]


# ---------------------------------------------------------------- -t

@pytest.mark.parametrize("path", [MINIMAL, BRIDGE, WEBAPP, GATEWAY], ids=os.path.basename)
def test_check_examples_ok(path):
    p = run_ferry("-t", "-c", path, env={"API_TOKEN": "t"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == "ferry: %s: configuration OK\n" % path
    assert p.stderr == b""


def test_check_reports_every_error_with_position(tmpdir_path):
    path = _write(tmpdir_path, "bad.yaml",
                  "header-timout: 3s\n"
                  "workers: [1, 2]\n"
                  "request-header: [\"Authorization: Bearer ${env:FERRY_CONF_UNSET}\"]\n"
                  "max-body-size: lots\n"
                  "listen: \"::1:8080\"\n"
                  "upstreams: {}\n"
                  "via: on\n"
                  "via: off\n")
    assert "FERRY_CONF_UNSET" not in os.environ
    p = run_ferry("-t", "-c", path)
    assert p.returncode == 1, p.stderr
    assert p.stdout == b""
    assert _err_lines(p) == [path + ":" + l for l in [
        "1:1: unknown key 'header-timout' (did you mean header-timeout?)",
        "2:10: workers expects a single value, got a sequence",
        "3:18: request-header: environment variable FERRY_CONF_UNSET is not set",
        "4:16: max-body-size expects a size from 0 to 18446744073709551615 (e.g. 16k), "
        "got 'lots'",
        "5:9: listen '::1:8080': an IPv6 address goes in brackets: write [::1]:8080",
        "6:1: upstreams: need listeners: that route to them (or use upstream: for one server)",
        "8:1: duplicate key 'via' (first given at line 7)",
        "1:1: missing key upstream: the server to forward to (upstream: http://HOST:PORT)",
    ]]


def test_running_an_invalid_file_exits_1_with_the_same_errors(tmpdir_path):
    path = _write(tmpdir_path, "bad.yaml", "upstream: http://127.0.0.1:9\nidle-timeout: soon\n")
    for args in (["-c", path], ["-t", "-c", path]):
        p = run_ferry(*args)
        assert p.returncode == 1, (args, p.stderr)
        assert _err_lines(p) == [
            path + ":2:15: idle-timeout expects a duration like 500ms, 10s or 2m, got 'soon'"]
        assert b"listening on" not in p.stderr


def test_syntax_error_gives_libyaml_position(tmpdir_path):
    path = _write(tmpdir_path, "syntax.yaml", "upstream: http://127.0.0.1:9\n  workers: 2\n")
    p = run_ferry("-t", "-c", path)
    assert p.returncode == 1
    assert _err_lines(p) == [path + ":2:10: mapping values are not allowed in this context"]


def test_an_encoding_error_gives_line_and_column(tmpdir_path):
    """libyaml's reader reports a byte offset only: ferry turns it into FILE:LINE:COLUMN."""
    path = os.path.join(tmpdir_path, "latin1.yaml")
    with open(path, "wb") as f:
        f.write(b"upstream: http://127.0.0.1:9\nworkers: 2 # caf\xe9\n")
    p = run_ferry("-t", "-c", path)
    assert p.returncode == 1
    lines = _err_lines(p)
    assert len(lines) == 1 and lines[0].startswith(path + ":2:17: "), lines


@pytest.mark.parametrize("value", ["0x10", "1e3", ".5s", "5."])
def test_durations_are_plain_decimals(tmpdir_path, value):
    path = _write(tmpdir_path, "d.yaml", "upstream: http://127.0.0.1:9\nidle-timeout: %s\n" % value)
    p = run_ferry("-t", "-c", path)
    assert p.returncode == 1 and "duration" in p.stderr.decode(), p.stderr


def test_a_server_url_with_credentials_is_refused(tmpdir_path):
    path = _write(tmpdir_path, "u.yaml", "upstream: http://user:pw@127.0.0.1:9\n")
    p = run_ferry("-t", "-c", path)
    assert p.returncode == 1 and "no user or password" in p.stderr.decode(), p.stderr


def test_listeners_file_errors_with_positions(tmpdir_path):
    path = _write(tmpdir_path, "routes.yaml",
                  "listeners:\n"
                  "  - listen: 127.0.0.1:0\n"
                  "    routes:\n"
                  "      - match: { pth: /x }\n"
                  "        upstream: apii\n"
                  "      - redirect: { status: 305, location: /y }\n"
                  "upstreams:\n"
                  "  api:\n"
                  "    servers: [ftp://127.0.0.1:9]\n")
    p = run_ferry("-t", "-c", path)
    assert p.returncode == 1, p.stderr
    assert _err_lines(p) == [path + ":" + l for l in [
        "4:18: unknown key 'pth' in match (did you mean path?)",
        "6:29: redirect status must be 301, 302, 303, 307 or 308, got 305",
        "9:15: server 'ftp://127.0.0.1:9': expected a URL like http://10.0.0.1:3000 or "
        "https://api.internal",
        "5:19: unknown upstream 'apii' (did you mean api? defined: api)",
    ]]


def test_listeners_file_refuses_the_shorthand_flags(tmpdir_path):
    path = _write(tmpdir_path, "routes.yaml",
                  "listeners:\n  - listen: 127.0.0.1:0\n")
    assert run_ferry("-t", "-c", path).returncode == 0
    p = run_ferry("-t", "-c", path, "--upstream", "http://127.0.0.1:9")
    assert p.returncode == 2
    assert _err_lines(p) == ["ferry: --upstream: listen/upstream are the one-listener shorthand; "
                             "with listeners: put the address in a listener of " + path]


def test_print_config_with_listeners_points_at_the_file():
    p = run_ferry("--print-config", "-c", WEBAPP)
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert "\nworkers: 2\n" in out
    assert "\nlisten:" not in out and "\nupstream:" not in out
    assert out.endswith("# listeners: and upstreams: are printed as written in %s\n" % WEBAPP)


def test_missing_file_exit_1():
    p = run_ferry("-t", "-c", "/nonexistent/ferry.yaml")
    assert p.returncode == 1
    assert _err_lines(p) == ["/nonexistent/ferry.yaml: cannot open the configuration file: "
                             "No such file or directory"]


@pytest.mark.parametrize("args,fragment", [
    (["-c"], "-c needs a file path"),
    (["-c", MINIMAL, "--workers", "0"], "--workers expects a number from 1 to 256, got '0'"),
    (["-c", MINIMAL, "--bogus", "1"], "unknown option '--bogus'"),
], ids=["no path", "bad flag value", "unknown flag"])
def test_bad_command_line_with_a_file_exit_2_one_line(args, fragment):
    p = run_ferry(*args)
    assert p.returncode == 2, p.stderr
    lines = _err_lines(p)
    assert len(lines) == 1 and fragment in lines[0], lines


def test_upstream_on_the_command_line_completes_a_file(tmpdir_path):
    path = _write(tmpdir_path, "noup.yaml", "workers: 1\n")
    assert run_ferry("-t", "-c", path).returncode == 1
    p = run_ferry("-t", "-c", path, "--upstream", "http://127.0.0.1:9")
    assert p.returncode == 0, p.stderr


# ---------------------------------------------------------------- running from a file

def test_file_upstream_and_rules_apply(ferry_factory, upstream, tmpdir_path):
    _write(tmpdir_path, "token", "from-a-file\n")
    path = _write(tmpdir_path, "ferry.yaml",
                  "upstream: %s\n"
                  "request-header:\n"
                  "  - \"X-Token: ${file:token}\"\n"
                  "remove-request-header: Cookie\n"
                  "x-forwarded-host: off\n" % upstream.url)
    f = ferry_factory(None, "-c", path)
    assert _get(f.port, headers=[("Cookie", "a=b")]).status == 200
    got = upstream.last
    assert got.header_all("X-Token") == ["from-a-file"]
    assert got.header("Cookie") is None
    assert got.header("X-Forwarded-Host") is None
    assert got.header("Host") == upstream.url.split("//", 1)[1]


def test_examples_minimal_runs(ferry_factory, upstream):
    # the file's upstream is replaced by the test's, its listen by 127.0.0.1:0 (harness)
    f = ferry_factory(None, "-c", MINIMAL, "--upstream", upstream.url)
    r = _get(f.port, path="/x")
    assert r.status == 200
    assert upstream.last.path == "/x"
    assert f.access_log_lines() == []  # access-log: off in the file


def test_examples_bridge_runs(ferry_factory, upstream):
    def route(h, req):
        h.send_simple(200, b"api\n", headers=[("Server", "leaky/1.0")])
    upstream.route("/api", route)
    f = ferry_factory(None, "-c", BRIDGE, "--upstream", upstream.url,
                      env={"API_TOKEN": "s3cr3t-from-env"})
    r = _get(f.port, path="/api", headers=[("Cookie", "session=1"),
                                           ("Authorization", "Basic client")])
    assert r.status == 200 and r.body == b"api\n"
    got = upstream.last
    assert got.header_all("Host") == ["api.internal"]
    assert got.header_all("Authorization") == ["Bearer s3cr3t-from-env"]
    assert got.header("Cookie") is None
    assert r.header("Access-Control-Allow-Origin") == "https://app.example.com"
    assert r.header("Strict-Transport-Security") == "max-age=31536000"
    assert r.header("X-Content-Type-Options") == "nosniff"
    assert r.header("Server") is None
    assert "s3cr3t-from-env" not in " ".join(f.argv())


def test_examples_bridge_without_token_is_refused():
    if os.environ.get("API_TOKEN") is not None:
        pytest.skip("API_TOKEN is set in this environment")
    p = run_ferry("-c", BRIDGE)
    assert p.returncode == 1
    assert _err_lines(p) == [BRIDGE + ":9:5: request-header: environment variable API_TOKEN "
                             "is not set"]


# ---------------------------------------------------------------- flags over the file

def test_flags_override_file_keys(ferry_factory, upstream, tmpdir_path):
    path = _write(tmpdir_path, "ferry.yaml",
                  "upstream: http://127.0.0.1:9\n"   # replaced by --upstream below
                  "x-forwarded-for: off\n"
                  "request-header: [\"X-A: from-file\", \"X-B: file\"]\n")
    # flags before and after -c both win over the file
    f = ferry_factory(upstream.url, "--x-forwarded-for", "on", "-c", path,
                      "--request-header", "X-A: from-flag")
    assert _get(f.port).status == 200
    got = upstream.last
    assert got.header("X-Forwarded-For") == "127.0.0.1"
    assert got.header_all("X-A") == ["from-flag"]
    assert got.header_all("X-B") == ["file"]


def test_print_config_of_file_and_flags_merges(tmpdir_path):
    path = _write(tmpdir_path, "ferry.yaml", "upstream: http://127.0.0.1:9\nworkers: 3\n"
                  "idle-timeout: 30s\n")
    p = run_ferry("--print-config", "-c", path, "--workers", "1")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert "\nworkers: 1\n" in out
    assert "\nidle-timeout: 30s\n" in out
    assert "\nupstream: http://127.0.0.1:9\n" in out


# ---------------------------------------------------------------- --print-config round trip

ROUND_TRIP_FLAGS = [
    "--host", "backend.internal",
    "--request-header", "Authorization: Bearer ${env:FERRY_RT_TOKEN}",
    "--request-header", "X-Quoted: a \"b\" #c",
    "--remove-request-header", "Cookie",
    "--response-header", "Access-Control-Allow-Origin: *",
    "--remove-response-header", "X-Internal",
    "--via", "off",
    "--x-forwarded-proto", "off",
    "--header-timeout", "3s",
    "--idle-timeout", "1.5s",
    "--max-body-size", "1m",
    "--max-headers", "50",
    "--access-log-format", "json",
]


def test_print_config_round_trip(ferry_factory, upstream, tmpdir_path):
    env = {"FERRY_RT_TOKEN": "rt-secret"}
    flags = ["--upstream", upstream.url, "--workers", "1"] + ROUND_TRIP_FLAGS
    p = run_ferry("--print-config", *flags, env=env)
    assert p.returncode == 0, p.stderr
    text = p.stdout.decode()
    assert text.startswith("#")
    assert "rt-secret" not in text
    assert "${env:FERRY_RT_TOKEN}" in text
    path = _write(tmpdir_path, "printed.yaml", text)
    check = run_ferry("-t", "-c", path, env=env)
    assert check.returncode == 0, check.stderr
    # The file says what the flags say: printing it again gives the same text.
    again = run_ferry("--print-config", "-c", path, env=env)
    assert again.stdout.decode() == text

    def route(h, req):
        h.send_simple(200, b"ok\n", headers=[("X-Internal", "1")])
    upstream.route("/rt", route)
    seen = []
    for args in (flags, ["-c", path]):
        f = ferry_factory(None, *args, env=env)
        r = _get(f.port, path="/rt", headers=[("Cookie", "c=1"), ("X-Forwarded-Proto", "https")])
        assert r.status == 200
        got = upstream.last
        req_headers = [(k.lower(), v) for k, v in got.headers
                       if k.lower() not in ("x-forwarded-for", "x-request-id")]
        resp_headers = [(k.lower(), v) for k, v in r.headers if k.lower() != "date"]
        lines = f.wait_access_log(1)
        seen.append((req_headers, resp_headers, lines[-1].startswith("{")))
        f.stop()
    assert seen[0] == seen[1]
    req_headers = dict(seen[0][0])
    assert req_headers["authorization"] == "Bearer rt-secret"
    assert req_headers["x-quoted"] == "a \"b\" #c"
    assert req_headers["host"] == "backend.internal"
    assert "cookie" not in req_headers and "via" not in req_headers
    assert seen[0][2], "json access log"


def test_print_config_defaults_are_complete():
    p = run_ferry("--print-config", "--upstream", "http://127.0.0.1:9")
    assert p.returncode == 0
    keys = [l.split(":", 1)[0] for l in p.stdout.decode().splitlines()
            if l and not l.startswith("#")]
    assert keys[:3] == ["listen", "upstream", "workers"]
    assert "header-timeout" in keys and "max-connections" == keys[-1]
    assert len(keys) == len(set(keys)) >= 33
    assert "trust-request-id" in keys and "pid-file" in keys
