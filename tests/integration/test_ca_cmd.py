"""`ferry ca`: the interception CA generated in a state directory (files, modes, fields), reused
on the next run, found through XDG_STATE_HOME, given files loaded, and bad ones refused with one
sentence naming the file."""

import os
import stat

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import certs
from harness import run_ferry


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def _stdout_path(p):
    first = p.stdout.decode().splitlines()[0]
    assert first.startswith("CA certificate: "), p.stdout
    return first[len("CA certificate: "):]


def _one_line(p):
    lines = [l for l in p.stderr.decode(errors="replace").splitlines() if l.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_generates_the_ca_in_the_state_dir(tmp_path):
    d = tmp_path / "state" / "sub"
    p = run_ferry("ca", "--state-dir", d)
    assert p.returncode == 0, p.stderr
    cert, key = d / "ferry-ca.pem", d / "ferry-ca-key.pem"
    assert _stdout_path(p) == str(cert)
    out = p.stdout.decode()
    for hint in ("curl --cacert %s" % cert, "REQUESTS_CA_BUNDLE=%s" % cert, 'verify="%s"' % cert,
                 "cp %s /usr/local/share/ca-certificates/ferry.crt" % cert,
                 "update-ca-certificates",
                 "certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n ferry -i %s" % cert):
        assert hint in out, (hint, out)
    assert _mode(key) == 0o600
    assert _mode(d) == 0o700
    assert _mode(tmp_path / "state") == 0o700
    assert not [f for f in os.listdir(d) if f.endswith(".tmp")]

    c = x509.load_pem_x509_certificate(cert.read_bytes())
    bc = c.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = c.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cn = c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn.startswith("ferry interception CA (") and cn.endswith(")"), cn
    assert c.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "ferry"
    assert c.issuer == c.subject
    assert isinstance(c.public_key(), ec.EllipticCurvePublicKey)
    assert c.public_key().curve.name == "secp256r1"
    assert c.serial_number.bit_length() == 128
    years = (c.not_valid_after - c.not_valid_before).days / 365.25
    assert 9.9 < years < 10.1, years
    k = serialization.load_pem_private_key(key.read_bytes(), None)
    assert k.public_key().public_numbers() == c.public_key().public_numbers()


def test_a_second_run_reuses_the_ca(tmp_path):
    d = tmp_path / "s"
    assert run_ferry("ca", "--state-dir", d).returncode == 0
    first = (d / "ferry-ca.pem").read_bytes(), (d / "ferry-ca-key.pem").read_bytes()
    p = run_ferry("ca", "--state-dir=%s" % d)
    assert p.returncode == 0, p.stderr
    assert _stdout_path(p) == str(d / "ferry-ca.pem")
    assert ((d / "ferry-ca.pem").read_bytes(), (d / "ferry-ca-key.pem").read_bytes()) == first


def test_xdg_state_home_is_the_default(tmp_path):
    p = run_ferry("ca", env={"XDG_STATE_HOME": str(tmp_path)})
    assert p.returncode == 0, p.stderr
    assert _stdout_path(p) == str(tmp_path / "ferry" / "ferry-ca.pem")
    assert _mode(tmp_path / "ferry" / "ferry-ca-key.pem") == 0o600


def _given_ca(tmp_path):
    ca = certs.CA(str(tmp_path), name="given CA")
    key = tmp_path / "given-ca.key"
    key.write_bytes(certs._key_pem(ca.key))
    key.chmod(0o600)
    return ca, str(key)


def test_given_files_are_used_and_nothing_is_generated(tmp_path):
    ca, key = _given_ca(tmp_path)
    xdg = tmp_path / "xdg"
    p = run_ferry("ca", "--ca-cert", ca.pem, "--ca-key", key, env={"XDG_STATE_HOME": str(xdg)})
    assert p.returncode == 0, p.stderr
    assert _stdout_path(p) == ca.pem
    assert not xdg.exists()


def test_a_key_that_does_not_match_is_refused(tmp_path):
    ca, _ = _given_ca(tmp_path)
    other = certs.CA(str(tmp_path), name="other CA")
    bad = tmp_path / "other.key"
    bad.write_bytes(certs._key_pem(other.key))
    p = run_ferry("ca", "--ca-cert", ca.pem, "--ca-key", bad)
    assert p.returncode == 1
    line = _one_line(p)
    assert line.startswith("ferry ca: ") and "does not match" in line and str(bad) in line, line
    assert p.stdout == b""


def test_a_leaf_certificate_is_not_a_ca(tmp_path):
    ca, _ = _given_ca(tmp_path)
    leaf = ca.issue("leaf.example")
    p = run_ferry("ca", "--ca-cert", leaf.cert, "--ca-key", leaf.key)
    assert p.returncode == 1
    line = _one_line(p)
    assert "is not a CA" in line and leaf.cert in line, line


def test_a_missing_file_is_named(tmp_path):
    p = run_ferry("ca", "--ca-cert", tmp_path / "nope.pem", "--ca-key", tmp_path / "nope.key")
    assert p.returncode == 1
    line = _one_line(p)
    assert "cannot read the certificate" in line and str(tmp_path / "nope.pem") in line, line


def test_an_unusable_state_dir(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    p = run_ferry("ca", "--state-dir", f / "sub")
    assert p.returncode == 1
    assert "cannot create the state directory" in _one_line(p)


def test_bad_command_lines_exit_2(tmp_path):
    for args in (["--ca-cert", "x.pem"], ["--bogus"], ["--state-dir"]):
        p = run_ferry("ca", *args)
        assert p.returncode == 2, (args, p.returncode)
        assert _one_line(p).startswith("ferry ca: ")
    p = run_ferry("ca", "--help")
    assert p.returncode == 0 and b"usage: ferry ca" in p.stdout
