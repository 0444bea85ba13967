"""ferry -t on forward proxy settings: each mistake of the forward: and intercept: blocks named
with FILE:LINE:COL and what was expected; the command line's forward options checked the same
way; a valid forward configuration passes."""

import pytest

from harness import run_ferry, write_config


def check(text):
    p = run_ferry("-t", "-c", write_config(text))
    return p.returncode, p.stderr.decode() + p.stdout.decode()


HEAD = "listeners:\n  - listen: 127.0.0.1:0\n"


@pytest.mark.parametrize("block,where,what", [
    ("    forward: { allow-client: [10.0.0.0/8] }\n", ":3:16:", "did you mean allow-clients"),
    ("    forward:\n      allow-clients: [10.0.0.300]\n", ":4:23:", "10.0.0.300"),
    ("    forward:\n      connect-ports: [443, 70000]\n", ":4:28:", "70000"),
    ("    forward:\n      deny: [\"bad host name!\"]\n", ":4:14:", "bad host name"),
    ("    intercept: on\n", ":3:5:", "add forward:"),
    ("    forward: {}\n    intercept: { ca-cert: x.pem }\n", ":4:27:", "ca-key too"),
    ("    forward: { auth: { htpasswd: /nonexistent/users } }\n", ":3:34:", "/nonexistent/users"),
    ("    forward: { auth: { realm: x } }\n", ":3:22:", "needs htpasswd"),
])
def test_forward_block_errors(block, where, what):
    rc, out = check(HEAD + block)
    assert rc == 1, out
    assert where in out and what in out, out


def test_valid_forward_configuration(tmp_path):
    users = tmp_path / "users"
    users.write_text("alice:$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/\n")
    rc, out = check(HEAD + """    forward:
      allow-clients: [127.0.0.0/8, "::1"]
      connect-ports: [443, 8000-8999]
      deny: ["169.254.169.254", "*.corp.test"]
      allow: [".example.com", "10.0.0.0/8:443"]
      auth: { htpasswd: %s, realm: "proxy" }
    intercept:
      state-dir: %s
      pass-through: ["*.bank.test"]
      cert-cache-size: 10
""" % (users, tmp_path / "state"))
    assert rc == 0, out


@pytest.mark.parametrize("args,what", [
    (["--upstream", "http://127.0.0.1:1", "--connect-ports", "443"], "add --forward"),
    (["--connect-ports", "443"], "or --forward"),
    (["--forward", "--upstream", "http://127.0.0.1:1"], "takes no"),
    (["--forward", "--connect-ports", "x"], "--connect-ports"),
    (["--forward", "--pass-through", "a.test"], "add --intercept"),
    (["--forward", "--intercept", "--ca-cert", "/nonexistent.pem"], "--ca-key too"),
    (["--forward", "--allow-clients", "10.1.2.3/8"], "--allow-clients"),
])
def test_quick_forward_errors(args, what):
    p = run_ferry("-t", *args)
    assert p.returncode != 0
    assert what in p.stderr.decode(), p.stderr.decode()
