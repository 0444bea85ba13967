"""A real browser through HTTPS interception: headless Chromium (Debian's `chromium`, installed
by scripts/setup.sh) uses ferry as its proxy (--proxy-server, and --proxy-bypass-list=<-loopback>
so loopback goes through it too) and loads a page with several assets (CSS, a script that
changes the DOM, a PNG, a fetch() of JSON) from a local https origin.

The origin's certificate comes from a test CA that only ferry knows (--upstream-ca); Chromium
trusts nothing but ferry's CA, added with `certutil` to the NSS database of a throwaway HOME.
So a page that loads proves every asset went through ferry's interception, and the negative
control (the same run with an empty NSS database) proves the trust path is what made it work.

Checked: the DOM Chromium dumps (the script ran, the stylesheet applied, the image decoded, the
fetch result inserted); ferry's capture (one https line per asset with status 200, its content
type, its TLS SNI, the body the origin sent), which `ferry har` turns into HAR that
har-validator accepts; what the origin saw; ferry's log (no errors, no warnings).

Chromium makes requests of its own (component updates, accounts.google.com) even with the
background-networking switches. The listener's `allow:` rule names the origin only, so ferry
refuses those with 403 before resolving anything: nothing leaves the machine, with or without a
network, and the test checks that every other line of the capture is such a refusal.
"""

import base64
import json
import os
import shutil
import signal
import ssl
import struct
import subprocess
import time
import zlib

import pytest

from certs import CA
from harness import UpstreamServer, free_port, run_ferry, wait_for, write_config
from test_har_replay import validate_har

CHROMIUM = shutil.which("chromium")
CHROMIUM_TIMEOUT = 60  # seconds for one Chromium run, then its process group is killed

# Only a missing browser skips (scripts/setup.sh installs it, so CI never does); a missing
# certutil fails.
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="chromium not installed: run scripts/setup.sh")


def png_1x1() -> bytes:
    """A valid 1x1 opaque PNG (8-bit RGB), made here so the fixture is the bytes we check."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00\x10\x20\x30")  # filter 0, one RGB pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>ferry chromium test</title>
<link rel="stylesheet" href="/style.css">
<script src="/app.js"></script>
</head><body>
<p id="js">script did not run</p>
<p id="css">-</p>
<img id="img" src="/pixel.png" alt="pixel">
<p id="imgsize">-</p>
<p id="data">fetch pending</p>
</body></html>
"""

CSS = b"#css { color: rgb(1, 2, 3); }\n"

# Everything the page reports is written by this script; --virtual-time-budget makes Chromium
# wait for the network to go idle (the fetch included) before dumping the DOM.
JS = b"""document.addEventListener('DOMContentLoaded', function () {
  document.getElementById('js').textContent = 'script ran';
  var css = document.getElementById('css');
  css.textContent = 'css color ' + getComputedStyle(css).color;
  fetch('/data.json').then(function (r) { return r.json(); }).then(function (d) {
    document.getElementById('data').textContent = 'fetched answer=' + d.answer + ' via ' + d.via;
  }, function (e) { document.getElementById('data').textContent = 'fetch failed ' + e; });
});
window.addEventListener('load', function () {
  var img = document.getElementById('img');
  document.getElementById('imgsize').textContent =
    'img ' + img.naturalWidth + 'x' + img.naturalHeight;
});
"""

DATA = b'{"answer": 42, "via": "json"}'

ASSETS = {  # path -> (content type, body)
    "/": ("text/html; charset=utf-8", PAGE),
    "/style.css": ("text/css", CSS),
    "/app.js": ("text/javascript", JS),
    "/pixel.png": ("image/png", png_1x1()),
    "/data.json": ("application/json", DATA),
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    ca = CA(d, "chromium test origin CA")
    return {"ca": ca, "origin": ca.issue("localhost", "127.0.0.1", file="origin")}


@pytest.fixture
def origin(pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["origin"].cert, pki["origin"].key)
    u = UpstreamServer(tls=ctx)
    for path, (ctype, data) in ASSETS.items():
        u.route(path, lambda h, req, ctype=ctype, data=data:
                h.send_simple(200, data, content_type=ctype))
    u.route("/favicon.ico", lambda h, req: h.send_simple(404, b"no icon\n"))
    u.start()
    yield u
    u.stop()


def start_ferry(ferry_factory, pki, origin, state, flows, lua=None):
    """ferry --forward --intercept --connect-ports 443,ORIGIN --upstream-ca TEST_CA --capture,
    as a configuration file so that `allow:` can keep Chromium's own requests on the machine;
    `lua`: a script on the listener."""
    cfg = write_config("""
listeners:
  - listen: 127.0.0.1:%d
    forward:
      connect-ports: [443, %d]
      upstream-ca: %s
      allow: ["localhost:%d"]
    intercept:
      state-dir: %s
    capture: { file: %s, max-body: 1m }
""" % (free_port(), origin.port, pki["ca"].pem, origin.port, state, flows)
                       + ("    lua: %s\n" % lua if lua else ""))
    return ferry_factory(None, "-c", cfg, listen=None)


def nss_home(base, ca_pem=None):
    """A throwaway HOME whose NSS database (~/.pki/nssdb, where Chromium on Linux looks) trusts
    ca_pem for TLS servers, or nothing at all."""
    if shutil.which("certutil") is None:
        pytest.fail("certutil not found: install libnss3-tools (scripts/setup.sh)")
    home = os.path.join(base, "home")
    db = "sql:" + os.path.join(home, ".pki", "nssdb")
    os.makedirs(os.path.join(home, ".pki", "nssdb"))
    subprocess.run(["certutil", "-d", db, "-N", "--empty-password"], check=True,
                   capture_output=True, timeout=30)
    if ca_pem is not None:
        subprocess.run(["certutil", "-d", db, "-A", "-t", "C,,", "-n", "ferry", "-i", ca_pem],
                       check=True, capture_output=True, timeout=30)
        listed = subprocess.run(["certutil", "-d", db, "-L"], check=True, capture_output=True,
                                timeout=30).stdout.decode()
        assert "ferry" in listed, listed
    return home


def run_chromium(base, home, proxy_port, url):
    """chromium --headless=new --dump-dom URL through the proxy, bounded: on timeout its whole
    process group is killed. No certificate-error switch is ever passed. Returns
    (exit code, DOM on stdout, stderr)."""
    argv = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage",
            "--user-data-dir=" + os.path.join(base, "profile"),
            "--proxy-server=http://127.0.0.1:%d" % proxy_port,
            "--proxy-bypass-list=<-loopback>",
            # fewer requests of Chromium's own (the allow: rule refuses those that remain)
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-default-apps",
            "--disable-extensions", "--disable-client-side-phishing-detection",
            "--disable-domain-reliability", "--no-pings", "--disable-breakpad",
            "--metrics-recording-only", "--password-store=basic",
            "--disable-features=NetworkTimeServiceQuerying,Translate,MediaRouter,"
            "OptimizationHints",
            "--virtual-time-budget=10000",
            "--dump-dom", url]
    for a in argv:
        assert "ignore-certificate" not in a and "allow-insecure" not in a, a
    env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"),
               XDG_CACHE_HOME=os.path.join(home, ".cache"))
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY",
              "all_proxy", "ALL_PROXY"):
        env.pop(k, None)
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        out, err = p.communicate(timeout=CHROMIUM_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail("chromium did not finish within %ds\nstderr:\n%s"
                    % (CHROMIUM_TIMEOUT, err.decode("utf-8", "replace")[-4000:]))
    finally:
        # the renderer, GPU and utility processes share its process group
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def read_capture(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def header(headers, name):
    vals = [v for k, v in headers if k.lower() == name.lower()]
    return vals[0] if vals else None


def body_bytes(b):
    return base64.b64decode(b["data"]) if b["encoding"] == "base64" else b["data"].encode()


def test_chromium_loads_a_page_through_interception(ferry_factory, pki, origin, tmp_path):
    t0 = time.monotonic()
    state = str(tmp_path / "state")
    flows = str(tmp_path / "flows.jsonl")
    f = start_ferry(ferry_factory, pki, origin, state, flows)
    ca_pem = os.path.join(state, "ferry-ca.pem")
    assert os.path.exists(ca_pem)
    url = "https://localhost:%d/" % origin.port

    # trusted: ferry's CA in the NSS database, and nothing else
    trusted = str(tmp_path / "trusted")
    rc, dom, err = run_chromium(trusted, nss_home(trusted, ca_pem), f.port, url)
    assert rc == 0, err[-4000:]
    assert "<title>ferry chromium test</title>" in dom, (dom, err[-4000:])
    assert '<p id="js">script ran</p>' in dom, dom
    assert '<p id="css">css color rgb(1, 2, 3)</p>' in dom, dom
    assert '<p id="imgsize">img 1x1</p>' in dom, dom
    assert '<p id="data">fetched answer=42 via json</p>' in dom, dom

    # the origin saw each asset once, through ferry (Via), over one TLS connection or more
    reqs = origin.wait_requests(len(ASSETS))
    paths = [r.path for r in reqs]
    for p in ASSETS:
        assert paths.count(p) == 1, paths
    assert set(paths) <= set(ASSETS) | {"/favicon.ico"}, paths
    for r in reqs:
        assert r.method == "GET"
        assert r.header("Host") == "localhost:%d" % origin.port, r.headers
        assert r.header("Via") == "1.1 ferry", r.headers
        assert "HeadlessChrome" in (r.header("User-Agent") or ""), r.headers

    # the capture: one line per exchange, written when it ends
    want = len(reqs)
    lines = wait_for(lambda: (lambda l: l if sum(
        1 for e in l if e["request"]["url"].startswith(url)) >= want else None)(
        read_capture(flows)), 10, what="%d capture lines for the origin" % want)
    mine = [e for e in lines if e["request"]["url"].startswith(url)]
    others = [e for e in lines if not e["request"]["url"].startswith(url)]
    for e in others:  # Chromium's own requests: refused by allow:, never sent anywhere
        assert e["response"]["status"] == 403, e
        assert e["server"] is None, e
    by_path = {}
    for e in mine:
        path = e["request"]["url"][len(url) - 1:]
        assert path not in by_path, "two capture lines for %s" % path
        by_path[path] = e
    assert set(ASSETS) <= set(by_path), sorted(by_path)
    for path, (ctype, data) in ASSETS.items():
        e = by_path[path]
        assert e["error"] is None, e
        assert e["request"]["method"] == "GET"
        assert e["tls"] is not None and e["tls"]["sni"] == "localhost", e["tls"]
        assert e["tls"]["version"] in ("TLSv1.2", "TLSv1.3"), e["tls"]
        assert e["server"] == {"ip": "127.0.0.1", "port": origin.port}, e["server"]
        assert e["response"]["status"] == 200, (path, e["response"])
        assert header(e["response"]["headers"], "Content-Type") == ctype, e["response"]
        b = e["response"]["body"]
        assert b["size"] == len(data) and b["captured"] == len(data), (path, b)
        assert body_bytes(b) == data, path
        assert "HeadlessChrome" in header(e["request"]["headers"], "User-Agent")
    assert by_path["/pixel.png"]["response"]["body"]["encoding"] == "base64"
    fetched = by_path["/data.json"]["request"]["headers"]
    assert header(fetched, "Sec-Fetch-Mode") == "cors", fetched  # it was the fetch()

    # HAR 1.2 that har-validator accepts, one entry per capture line
    har_path = str(tmp_path / "flows.har")
    run_ferry("har", flows, "-o", har_path)
    validate_har(har_path)
    with open(har_path) as fh:
        har = json.load(fh)
    entries = har["log"]["entries"]
    assert len(entries) == len(lines)
    har_urls = [x["request"]["url"] for x in entries]
    for path in ASSETS:
        assert url[:-1] + path in har_urls, har_urls

    # ferry's log: no error and no warning
    f.stop()
    f.assert_no_unexpected_errors()
    assert time.monotonic() - t0 < 60, "took %.1fs" % (time.monotonic() - t0)


def test_chromium_without_ferrys_ca_gets_a_certificate_error(ferry_factory, pki, origin,
                                                              tmp_path):
    """The negative control: the same run with an empty NSS database. Chromium refuses ferry's
    minted certificate (the page is its certificate-error page), nothing reaches the origin,
    and ferry logs the client's alert at info level only."""
    state = str(tmp_path / "state")
    flows = str(tmp_path / "flows.jsonl")
    f = start_ferry(ferry_factory, pki, origin, state, flows)
    url = "https://localhost:%d/" % origin.port
    base = str(tmp_path / "untrusted")
    rc, dom, err = run_chromium(base, nss_home(base), f.port, url)
    assert "ferry chromium test" not in dom and "script ran" not in dom, dom
    assert "ERR_CERT_AUTHORITY_INVALID" in dom + err, (rc, dom[-2000:], err[-4000:])
    wait_for(lambda: "TLS handshake failed: sslv3 alert certificate unknown" in f.stderr_text(),
             5, what="ferry to log the client's certificate alert")
    assert origin.requests == []
    if os.path.exists(flows):
        assert not [e for e in read_capture(flows) if e["request"]["url"].startswith(url)]
    f.stop()
    f.assert_no_unexpected_errors()


# ---- seed 002: a script that rewrites pages on the fly, through interception ----

INJECT_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>ferry inject test</title></head><body>
<p id="page">served by the origin</p>
<img id="img" src="/pixel.png" alt="pixel">
<p id="data">fetch pending</p>
<script>fetch('/data.json').then(function (r) { return r.json(); }).then(function (d) {
  document.getElementById('data').textContent = 'fetched answer=' + d.answer; });</script>
</body></html>
"""


@pytest.fixture
def gzip_origin(pki):
    """The origin compresses its HTML itself (Content-Encoding: gzip), as most sites do."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["origin"].cert, pki["origin"].key)
    u = UpstreamServer(tls=ctx)
    page_gz = gzip_bytes(INJECT_PAGE)
    u.route("/", lambda h, req: h.send_simple(
        200, page_gz, content_type="text/html; charset=utf-8",
        headers=[("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")]))
    u.route("/pixel.png", lambda h, req: h.send_simple(200, ASSETS["/pixel.png"][1],
                                                       content_type="image/png"))
    u.route("/data.json", lambda h, req: h.send_simple(200, b'{"answer": 42}',
                                                       content_type="application/json"))
    u.route("/favicon.ico", lambda h, req: h.send_simple(404, b"no icon\n"))
    u.start()
    yield u
    u.stop()


def gzip_bytes(data):
    import gzip
    return gzip.compress(data)


def test_chromium_runs_a_script_ferry_injected(ferry_factory, pki, gzip_origin, tmp_path):
    """Headless Chromium through the intercepting forward proxy with examples/lua/
    inject_script.lua: the gzip page is decoded, gets the <script> tag before </body>, and is
    encoded again for Chromium; the tag's script (answered by the hook itself) runs in the page
    and marks the DOM. The image and the JSON reach Chromium byte for byte, and the origin never
    sees the injected script's path."""
    origin = gzip_origin
    state = str(tmp_path / "state")
    flows = str(tmp_path / "flows.jsonl")
    script = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "lua",
                          "inject_script.lua")
    f = start_ferry(ferry_factory, pki, origin, state, flows, lua=os.path.abspath(script))
    ca_pem = os.path.join(state, "ferry-ca.pem")
    url = "https://localhost:%d/" % origin.port
    base = str(tmp_path / "trusted")
    rc, dom, err = run_chromium(base, nss_home(base, ca_pem), f.port, url)
    assert rc == 0, err[-4000:]
    assert "<title>ferry inject test</title>" in dom, (dom, err[-4000:])
    assert 'data-ferry="injected"' in dom, dom
    assert '<div id="ferry-injected">injected by ferry</div>' in dom, dom
    assert '<p id="data">fetched answer=42</p>' in dom, dom
    assert '<script src="/__ferry/inject.js"></script></body>' not in dom  # the DOM, not text
    paths = [r.path for r in origin.requests]
    assert "/__ferry/inject.js" not in paths, paths
    assert {"/", "/pixel.png", "/data.json"} <= set(paths), paths
    lines = wait_for(lambda: (lambda l: l if sum(
        1 for e in l if e["request"]["url"].startswith(url)) >= 4 else None)(
        read_capture(flows)), 10, what="capture lines for the page, its script and assets")
    by_path = {e["request"]["url"][len(url) - 1:]: e for e in lines
               if e["request"]["url"].startswith(url)}
    page = by_path["/"]["response"]
    assert header(page["headers"], "Content-Encoding") in ("gzip", "br", "zstd"), page["headers"]
    assert header(page["headers"], "Content-Length") is None
    png = by_path["/pixel.png"]["response"]
    assert body_bytes(png["body"]) == ASSETS["/pixel.png"][1]
    assert header(png["headers"], "Content-Length") == str(len(ASSETS["/pixel.png"][1]))
    data = by_path["/data.json"]["response"]
    assert body_bytes(data["body"]) == b'{"answer": 42}'
    js = by_path["/__ferry/inject.js"]["response"]
    assert js["status"] == 200 and by_path["/__ferry/inject.js"]["server"] is None
    f.stop()
    f.assert_no_unexpected_errors()
