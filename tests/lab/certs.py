"""A site CA made in the test: root -> intermediate -> server certificates, as a closed network's CA issues them.

Used by the TLS unit tests and by the HTTPS install test on real engines (nginx serves what this makes).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = _dt.datetime.now(_dt.timezone.utc)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dify-airgap test CA"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, password: bytes | None = None) -> bytes:
        crypt = (serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption())
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, crypt)


def issue(common: str, issuer: Issued | None = None, *, sans: list[str] | None = None, ca: bool = False,
          not_before: _dt.datetime | None = None, not_after: _dt.datetime | None = None) -> Issued:
    """A certificate for ``common`` signed by ``issuer`` (self-signed without), SANs as DNS names or IPs."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(_name(common))
               .issuer_name(issuer.cert.subject if issuer else _name(common))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before or NOW - _dt.timedelta(days=1))
               .not_valid_after(not_after or NOW + _dt.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        entries: list[x509.GeneralName] = []
        for san in sans:
            try:
                entries.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                entries.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    cert = builder.sign((issuer or Issued(None, key)).key, hashes.SHA256())  # type: ignore[arg-type]
    return Issued(cert, key)


@dataclass
class SiteCA:
    root: Issued
    intermediate: Issued

    @classmethod
    def make(cls) -> SiteCA:
        root = issue("Test Root CA", ca=True)
        return cls(root, issue("Test Intermediate CA", root, ca=True))

    def server(self, *sans: str, **kw) -> Issued:
        return issue(sans[0] if sans else "no-san.example", self.intermediate, sans=list(sans) or None, **kw)

    def write(self, directory: Path, server: Issued, name: str = "site") -> tuple[Path, Path, Path]:
        """(certificate, key, chain) PEM files of ``server`` in ``directory``; the chain is the intermediate."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = (directory / f"{name}.crt", directory / f"{name}.key", directory / "chain.pem")
        paths[0].write_bytes(server.cert_pem())
        paths[1].write_bytes(server.key_pem())
        paths[2].write_bytes(self.intermediate.cert_pem())
        return paths
