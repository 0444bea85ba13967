"""TLS in the configuration: `ferry -t` loads every certificate and key a file names (a listener's
tls:, an upstream group's tls:, the quick mode's tls-cert/tls-key/upstream-ca) and reports one
that cannot be used as FILE:LINE:COL of the key that named it, with the file and the reason
(exit 1; exit 2 with one line when the value came from the command line). A valid TLS
configuration passes -t. Certificates are made for each test by certs.py."""

import os
import re

import pytest

from certs import CA
from harness import run_ferry


class Pki:
    """A CA (ca.pem) and certificates in the test's own directory, where its configuration goes
    too: NAME.pem and NAME.key for site, other, expired (ended yesterday) and client (a client
    certificate); junk.pem holds no PEM."""

    def __init__(self, d):
        self.dir = str(d)
        ca = CA(self.dir)
        os.rename(ca.pem, self.path("ca.pem"))
        ca.issue("site.test", "127.0.0.1", file="site")
        ca.issue("other.test", kind="rsa", file="other")
        ca.issue("old.test", start_days=-10, days=-1, file="expired")
        ca.issue(client=True, cn="client.test", file="client")
        with open(self.path("junk.pem"), "w") as f:
            f.write("not a certificate\n")

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, text, name="ferry.yaml"):
        p = self.path(name)
        with open(p, "w") as f:
            f.write(text)
        return p


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path)


def _lines(p):
    return [l for l in p.stderr.decode(errors="replace").splitlines() if l.strip()]


def _listener(certs, extra=""):
    """A file whose listener's tls: key is at 3:5 and whose first certificate entry is at
    5:11."""
    return ("listeners:\n"
            "  - listen: 127.0.0.1:0\n"
            "    tls:\n"
            "      certificates:\n"
            + "".join("        - { cert: %s, key: %s }\n" % c for c in certs)
            + extra +
            "    routes: [{ upstream: api }]\n"
            "upstreams:\n"
            "  api: { servers: [http://127.0.0.1:9] }\n")


def _one_error(p, path, positions, *fragments):
    """Exit 1 and one line "PATH:LINE:COL: ..." at one of `positions`, holding each of
    `fragments` (regexes, case-insensitive). Returns the line."""
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert p.stdout == b""
    lines = _lines(p)
    assert len(lines) == 1, lines
    line = lines[0]
    assert re.match(r"%s:(%s): " % (re.escape(path), "|".join(positions)), line), line
    for frag in fragments:
        assert re.search(frag, line, re.I), "%r lacks %r" % (line, frag)
    return line


# ---------------------------------------------------------------- valid

def test_valid_tls_configuration_passes_check(pki):
    path = pki.write(
        "listeners:\n"
        "  - listen: 127.0.0.1:0\n"
        "    tls:\n"
        "      certificates:\n"
        "        - { cert: site.pem, key: site.key }\n"
        "        - cert: " + pki.path("other.pem") + "\n"
        "          key: other.key\n"
        "      min-version: \"1.2\"\n"
        "      ciphers: \"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256\"\n"
        "      ciphersuites: \"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384\"\n"
        "      groups: \"X25519:P-256\"\n"
        "      client-ca: ca.pem\n"
        "      client-auth: required\n"
        "      session-timeout: 2h\n"
        "      session-cache-size: 1000\n"
        "    routes: [{ upstream: api }]\n"
        "  - listen: 127.0.0.1:0\n"
        "    routes:\n"
        "      - redirect: { status: 308, location: \"https://$host$request_uri\" }\n"
        "upstreams:\n"
        "  api:\n"
        "    servers:\n"
        "      - https://127.0.0.1:9443\n"
        "      - { url: https://127.0.0.1:9444, server-name: site.test }\n"
        "      - http://127.0.0.1:9\n"
        "    tls:\n"
        "      ca: ca.pem\n"
        "      cert: client.pem\n"
        "      key: client.key\n"
        "      min-version: \"1.3\"\n"
        "  system: { servers: [https://127.0.0.1:9445] }\n")
    # From another directory: relative paths are the file's.
    p = run_ferry("-t", "-c", path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == "ferry: %s: configuration OK\n" % path
    assert p.stderr == b""


def test_quick_mode_tls_passes_check(pki):
    p = run_ferry("-t", "--listen", "127.0.0.1:0", "--upstream", "https://127.0.0.1:9443",
                  "--tls-cert", pki.path("site.pem"), "--tls-key", pki.path("site.key"),
                  "--upstream-ca", pki.path("ca.pem"))
    assert p.returncode == 0, p.stderr
    assert p.stderr == b""
    path = pki.write("listen: 127.0.0.1:0\n"
                     "upstream: https://127.0.0.1:9443\n"
                     "tls-cert: site.pem\n"
                     "tls-key: site.key\n"
                     "upstream-ca: ca.pem\n")
    p = run_ferry("-t", "-c", path)
    assert p.returncode == 0, p.stderr
    assert p.stderr == b""


def test_insecure_skip_verify_is_a_warning(pki):
    path = pki.write(_listener([("site.pem", "site.key")]).replace(
        "  api: { servers: [http://127.0.0.1:9] }\n",
        "  api:\n"
        "    servers: [https://127.0.0.1:9443]\n"
        "    tls: { insecure-skip-verify: true }\n"))
    p = run_ferry("-t", "-c", path)
    assert p.returncode == 0, p.stderr
    err = p.stderr.decode()
    assert re.search(r"^warn ferry: upstream api \(%s:\d+\): insecure-skip-verify: "
                     % re.escape(path), err, re.M), err
    p = run_ferry("-t", "--upstream", "https://127.0.0.1:9443", "--insecure-skip-verify", "on")
    assert p.returncode == 0, p.stderr
    assert "warn ferry: TLS verification of the upstream is disabled" in p.stderr.decode()


# ---------------------------------------------------------------- listener certificates

def test_key_not_matching_the_certificate(pki):
    path = pki.write(_listener([("site.pem", "other.key")]))
    line = _one_error(run_ferry("-t", "-c", path), path, ["5:11", "3:5"], r"listener tls: ",
                      r"match")
    assert "other.key" in line or "site.pem" in line, line


def test_missing_certificate_file(pki):
    path = pki.write(_listener([("site.pem", "site.key"), ("nope.pem", "site.key")]))
    _one_error(run_ferry("-t", "-c", path), path, ["6:11", "3:5"], r"listener tls: .*nope\.pem",
               r"no such file|not found|does not exist")


def test_missing_key_file(pki):
    path = pki.write(_listener([("site.pem", "nope.key")]))
    _one_error(run_ferry("-t", "-c", path), path, ["5:11", "3:5"], r"listener tls: .*nope\.key",
               r"no such file|not found|does not exist")


def test_expired_certificate(pki):
    path = pki.write(_listener([("expired.pem", "expired.key")]))
    _one_error(run_ferry("-t", "-c", path), path, ["5:11", "3:5"],
               r"listener tls: .*expired\.pem", r"expire")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_unreadable_key_file(pki):
    os.chmod(pki.path("site.key"), 0)
    path = pki.write(_listener([("site.pem", "site.key")]))
    _one_error(run_ferry("-t", "-c", path), path, ["5:11", "3:5"], r"listener tls: .*site\.key",
               r"permission denied")


def test_file_that_is_not_pem(pki):
    path = pki.write(_listener([("junk.pem", "site.key")]))
    _one_error(run_ferry("-t", "-c", path), path, ["5:11", "3:5"], r"listener tls: .*junk\.pem")


def test_directory_instead_of_a_key(pki):
    os.mkdir(pki.path("keys"))
    path = pki.write(_listener([("site.pem", "keys")]))
    _one_error(run_ferry("-t", "-c", path), path, ["5:11", "3:5"],
               r"listener tls: .*%s" % re.escape(pki.path("keys")))


def test_missing_client_ca(pki):
    path = pki.write(_listener([("site.pem", "site.key")],
                               "      client-ca: nope-ca.pem\n"
                               "      client-auth: optional\n"))
    _one_error(run_ferry("-t", "-c", path), path, ["6:18", "3:5"],
               r"listener tls: .*nope-ca\.pem", r"no such file|not found|does not exist")


# ---------------------------------------------------------------- upstream groups

def _group(tls):
    return ("listeners:\n"
            "  - listen: 127.0.0.1:0\n"
            "    routes: [{ upstream: api }]\n"
            "upstreams:\n"
            "  api:\n"
            "    servers: [https://127.0.0.1:9443]\n"
            "    tls:\n" + tls)


def test_upstream_ca_missing(pki):
    path = pki.write(_group("      ca: nope-ca.pem\n"))
    _one_error(run_ferry("-t", "-c", path), path, ["8:11", "7:5"],
               r"upstream api tls: .*nope-ca\.pem", r"no such file|not found|does not exist")


def test_upstream_client_certificate_not_matching_its_key(pki):
    path = pki.write(_group("      cert: client.pem\n      key: other.key\n"))
    line = _one_error(run_ferry("-t", "-c", path), path, ["8:13", "9:12", "7:5"],
                      r"upstream api tls: ", r"match")
    assert "client.pem" in line or "other.key" in line, line


def test_upstream_client_certificate_expired(pki):
    path = pki.write(_group("      cert: expired.pem\n      key: expired.key\n"))
    _one_error(run_ferry("-t", "-c", path), path, ["8:13", "9:12", "7:5"],
               r"upstream api tls: .*expired\.(pem|key)", r"expire")


# ---------------------------------------------------------------- quick mode

def test_quick_mode_key_not_matching_in_a_file(pki):
    path = pki.write("listen: 127.0.0.1:0\n"
                     "upstream: http://127.0.0.1:9\n"
                     "tls-cert: site.pem\n"
                     "tls-key: other.key\n")
    _one_error(run_ferry("-t", "-c", path), path, ["3:11", "4:10"], r"tls-(cert|key): ",
               r"match")


def test_quick_mode_expired_certificate_on_the_command_line(pki):
    p = run_ferry("-t", "--upstream", "http://127.0.0.1:9",
                  "--tls-cert", pki.path("expired.pem"), "--tls-key", pki.path("expired.key"))
    assert p.returncode == 2, p.stderr
    lines = _lines(p)
    assert len(lines) == 1, lines
    assert re.match(r"ferry: --tls-(cert|key): .*expired\.(pem|key).*expire", lines[0], re.I), \
        lines


def test_quick_mode_missing_upstream_ca(pki):
    path = pki.write("upstream: https://127.0.0.1:9443\nupstream-ca: nope-ca.pem\n")
    _one_error(run_ferry("-t", "-c", path), path, ["2:14"], r"upstream-ca: .*nope-ca\.pem",
               r"no such file|not found|does not exist")


def test_quick_mode_tls_cert_needs_tls_key(pki):
    path = pki.write("upstream: http://127.0.0.1:9\ntls-cert: site.pem\n")
    line = _one_error(run_ferry("-t", "-c", path), path, ["2:11"])
    assert line.endswith("tls-cert needs tls-key too: the certificate's private key"), line
    p = run_ferry("-t", "--upstream", "http://127.0.0.1:9", "--tls-key", pki.path("site.key"))
    assert p.returncode == 2
    assert _lines(p) == ["ferry: --tls-key needs --tls-cert too: the certificate that goes "
                         "with the key"]
