"""Certificates for the TLS tests, made with python3-cryptography (a dependency of python3-trustme).

A CA signs leaf certificates for servers and clients; every file is PEM in a directory the test
owns. Key types (RSA 2048, ECDSA P-256), validity and names are the test's choice, so expired and
not-yet-valid certificates, wrong names and unknown CAs are one call each.
"""

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Pem:
    cert: str  # path of the certificate (leaf first, then the chain)
    key: str  # path of the unencrypted private key
    sha256: str  # fingerprint of the certificate, lower-case hex


def _key(kind: str):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: str, data: bytes, mode: int = 0o644) -> str:
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CA:
    """A certificate authority in directory `d`: ca.pem (its certificate) and its key in memory."""

    _serial = 1000

    def __init__(self, d: str, name: str = "ferry test CA"):
        self.dir = d
        self.key = _key("ec")
        now = datetime.datetime.now(datetime.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(True, False, False, False, False, True, True,
                                                  False, False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        safe = name.replace(" ", "_")
        self.pem = _write(os.path.join(d, f"{safe}.pem"),
                          self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, *names: str, kind: str = "ec", client: bool = False, cn: str | None = None,
              days: float = 10, start_days: float = -1, file: str | None = None) -> Pem:
        """A leaf certificate for DNS names / IP literals (`names`), signed by this CA.
        `start_days`/`days`: validity relative to now (negative end: already expired)."""
        key = _key(kind)
        now = datetime.datetime.now(datetime.timezone.utc)
        cn = cn or (names[0] if names else "client")
        sans = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ferry tests")]))
             .issuer_name(self.cert.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now + datetime.timedelta(days=start_days))
             .not_valid_after(now + datetime.timedelta(days=days))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage(
                 [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                 critical=False))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        CA._serial += 1
        base = os.path.join(self.dir, file or f"leaf{CA._serial}-{kind}")
        return Pem(cert=_write(base + ".pem", cert.public_bytes(serialization.Encoding.PEM)),
                   key=_write(base + ".key", _key_pem(key), 0o600),
                   sha256=cert.fingerprint(hashes.SHA256()).hex())
