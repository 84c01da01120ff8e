"""HTTPS in a closed network: the site's own certificate (from its CA) into Dify's nginx, checked first.

certbot needs Let's Encrypt on the internet, so closed sites bring a certificate of their own CA. What Dify's nginx
reads (its ``docker-entrypoint.sh``, the same in 1.11.x and 1.16+): with ``NGINX_HTTPS_ENABLED=true`` it serves
``/etc/ssl/${NGINX_SSL_CERT_FILENAME}`` and ``/etc/ssl/${NGINX_SSL_CERT_KEY_FILENAME}``, bind-mounted from
``docker/nginx/ssl/``. ``install --tls-cert/--tls-key [--tls-chain]`` checks the pair BEFORE anything changes:

- the key matches the certificate (same public key), and is not encrypted (nginx would ask for its pass phrase);
- the certificate is valid now (not expired, not yet valid), naming the dates;
- its subjectAltName covers the server name or IP the URLs use (CN is not read: browsers stopped in 2017);
- with ``--tls-chain``, the chain's first certificate issued it (signature checked); nginx gets leaf + chain in one
  file, as ``ssl_certificate`` wants.

``check`` then connects to nginx's HTTPS port and compares the certificate served with the one installed, and warns
when it expires within :data:`EXPIRY_WARN_DAYS` days.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress
import shutil
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

from scripts.core.errors import AirgapError, BadInput
from scripts.core.files import write_file_atomic
from scripts.core.inputs import read_bytes

CERT_FILE, KEY_FILE = "dify.crt", "dify.key"  # the release's defaults (NGINX_SSL_CERT_FILENAME / _KEY_FILENAME)
SSL_DIR = Path("nginx") / "ssl"               # under the project (docker/): mounted at /etc/ssl in nginx
EXPIRY_WARN_DAYS = 30
#: what install sets in .env with --tls-cert (a --set contradicting them is refused)
HTTPS_SETTINGS = {"NGINX_HTTPS_ENABLED": "true", "NGINX_SSL_CERT_FILENAME": CERT_FILE,
                  "NGINX_SSL_CERT_KEY_FILENAME": KEY_FILE, "NGINX_ENABLE_CERTBOT_CHALLENGE": "false"}
CERTBOT_OFFLINE = ("certbot gets certificates from Let's Encrypt over the internet, which a closed network cannot "
                   "reach")
REISSUE = "ask your CA for a certificate whose subjectAltName lists that name or address"


@dataclass(frozen=True)
class SiteCertificate:
    """A checked pair: what nginx gets, and what the report says."""
    fullchain: bytes          # leaf first, then the chain (PEM)
    key: bytes                # PEM, unencrypted
    subject: str
    names: tuple[str, ...]    # subjectAltName DNS names and IP addresses
    not_after: _dt.datetime
    fingerprint: str          # sha256 of the leaf's DER, as `openssl x509 -fingerprint -sha256` (colons aside)

    def describe(self, now: _dt.datetime | None = None) -> str:
        days = (self.not_after - (now or _utcnow())).days
        return (f"{self.subject}, names {', '.join(self.names)}, valid until {self.not_after:%Y-%m-%d} "
                f"({days} days)")


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _certificates(path: Path, what: str) -> list[x509.Certificate]:
    data = read_bytes(path, what, "give the PEM file your CA issued")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise BadInput(f"{path} holds no PEM certificate ({what})",
                       hint="give the PEM file (-----BEGIN CERTIFICATE-----); convert a DER file with "
                            "`openssl x509 -inform der -in FILE -out FILE.pem`")
    return certs


def _private_key(path: Path):
    data = read_bytes(path, "the TLS key", "give the key's PEM file")
    try:
        return data, serialization.load_pem_private_key(data, password=None)
    except TypeError:  # "Password was not given but private key is encrypted"
        raise BadInput(f"{path} is an encrypted key: nginx would ask for its pass phrase at every start",
                       hint=f"decrypt it once (`openssl pkey -in {path} -out dify.key`) and keep that file "
                            "readable by root only") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise BadInput(f"{path} is not a PEM private key ({exc})", hint="give the key's PEM file") from None


def _spki(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def san_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return ()
    return tuple([*san.get_values_for_type(x509.DNSName),
                  *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))])


def covers(names: tuple[str, ...], server: str) -> bool:
    """Does a SAN list cover ``server`` (an IP: exactly; a name: exactly or by a ``*.`` wildcard of ONE label)?"""
    try:
        ip = ipaddress.ip_address(server.strip("[]"))
    except ValueError:
        ip = None
    for name in names:
        if ip is not None:
            try:
                if ipaddress.ip_address(name) == ip:
                    return True
            except ValueError:
                continue
            continue
        host, pattern = server.lower().rstrip("."), name.lower().rstrip(".")
        if host == pattern:
            return True
        if pattern.startswith("*.") and "." in host and host.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def load_site_certificate(cert: Path, key: Path, chain: Path | None, server: str,
                          now: _dt.datetime | None = None) -> SiteCertificate:
    """The site's certificate checked for ``server`` (the host name or IP in Dify's URLs); refused naming why."""
    now = now or _utcnow()
    certs = _certificates(cert, "the TLS certificate")
    leaf, rest = certs[0], certs[1:]
    if chain is not None:
        rest = rest + _certificates(chain, "the TLS chain")
    key_pem, private = _private_key(key)
    if _spki(private.public_key()) != _spki(leaf.public_key()):
        raise BadInput(f"the key {key} does not belong to the certificate {cert} (their public keys differ)",
                       hint="give the key that was made with this certificate's request")
    if now < leaf.not_valid_before_utc:
        raise BadInput(f"the certificate {cert} is not valid yet: from {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} "
                       f"UTC (now {now:%Y-%m-%d %H:%M})", hint="check this host's clock (timedatectl), or wait")
    if now > leaf.not_valid_after_utc:
        raise BadInput(f"the certificate {cert} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
                       hint="ask your CA to renew it")
    names = san_names(leaf)
    if not names:
        raise BadInput(f"the certificate {cert} has no subjectAltName (only a CN, which browsers and clients ignore)",
                       hint=f"{REISSUE} ({server})")
    if not covers(names, server):
        raise BadInput(f"the certificate {cert} does not cover {server}: it names {', '.join(names)}",
                       hint=f"{REISSUE}, or install with the --base-url / --server-ip it names")
    if rest:
        try:
            leaf.verify_directly_issued_by(rest[0])
        except (ValueError, TypeError, InvalidSignature):
            raise BadInput(f"the chain does not start with the issuer of {cert}: it was issued by "
                           f"{leaf.issuer.rfc4514_string()}, the chain starts with {rest[0].subject.rfc4514_string()}",
                           hint="give the intermediate CA that signed this certificate first (--tls-chain)") from None
    fullchain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [leaf, *rest])
    # written as nginx needs it and nothing else: text before -----BEGIN (openssl pkcs12's "Bag Attributes",
    # a friendlyName in any script) is dropped
    key_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    return SiteCertificate(fullchain, key_pem, leaf.subject.rfc4514_string(), names, leaf.not_valid_after_utc,
                           hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest())


def checked_for_install(cert: Path, key: Path, chain: Path | None, *, overrides: dict[str, str], base_url: str | None,
                        server_ip: str | None, current: dict[str, str]) -> SiteCertificate:
    """``install --tls-cert``'s pair, checked for the host of the public URLs before anything changes."""
    if str(overrides.get("NGINX_HTTPS_ENABLED", "true")).lower() != "true":
        raise AirgapError("--tls-cert turns HTTPS on; --set NGINX_HTTPS_ENABLED=false contradicts it",
                          hint="drop one of them")
    renamed = [k for k in ("NGINX_SSL_CERT_FILENAME", "NGINX_SSL_CERT_KEY_FILENAME")
               if k in overrides and overrides[k] != HTTPS_SETTINGS[k]]
    if renamed:
        raise AirgapError(f"--tls-cert installs {CERT_FILE} and {KEY_FILE}; --set {' and '.join(renamed)} names "
                          f"other files nginx would look for", hint="drop those --set options")
    if base_url and urlsplit(base_url).scheme != "https":
        raise AirgapError(f"--base-url {base_url} is not https:// while --tls-cert makes nginx serve HTTPS",
                          hint="give the https:// URL users type")
    server = server_name(base_url, server_ip, current)
    checked = load_site_certificate(cert, key, chain, server)
    print(f"TLS certificate for {server}: {checked.describe()}")
    return checked


def server_name(base_url: str | None, server_ip: str | None, current: dict[str, str]) -> str:
    """The host of Dify's public URLs: --base-url's, --server-ip, else the installed .env's APP_WEB_URL."""
    url = base_url or (f"http://{server_ip}" if server_ip else current.get("APP_WEB_URL", ""))
    host = urlsplit(url if "://" in url else f"http://{url}").hostname if url else None
    if not host:
        raise AirgapError("--tls-cert needs the server's name to check the certificate against",
                          hint="add --server-ip HOST_OR_IP or --base-url https://NAME (what users type)")
    return host


def install_files(cert: SiteCertificate, project: Path, backup_root: Path, *, dry_run: bool) -> list[str]:
    """The checked pair into PROJECT/nginx/ssl/ (the key 0600); a differing file there is first copied under
    ``backup_root``. Returns the names written (none: both already there, identical)."""
    ssl_dir = project / SSL_DIR
    changed = []
    for name, data, mode in ((CERT_FILE, cert.fullchain, 0o644), (KEY_FILE, cert.key, 0o600)):
        target = ssl_dir / name
        if target.is_file() and target.read_bytes() == data:
            continue
        changed.append(name)
        if dry_run:
            print(f"[dry-run] write {target} (mode {mode:o})")
            continue
        if target.exists():
            (backup_root / SSL_DIR).mkdir(parents=True, exist_ok=True)
            shutil.copy2(target, backup_root / SSL_DIR / name)
        ssl_dir.mkdir(parents=True, exist_ok=True)
        write_file_atomic(target, data, mode)
    return changed


def refuse_certbot(values: dict[str, str]) -> None:
    """The certbot profile / ACME challenge asked for offline: refused, with the offline way."""
    # CERTBOT_DOMAIN alone is not asking for certbot: every release's example sets it (your_domain.com)
    if str(values.get("NGINX_ENABLE_CERTBOT_CHALLENGE", "")).lower() == "true" \
            or "certbot" in str(values.get("COMPOSE_PROFILES", "")).split(","):
        raise AirgapError(f"the certbot settings are on (NGINX_ENABLE_CERTBOT_CHALLENGE=true or the certbot "
                          f"profile in COMPOSE_PROFILES): {CERTBOT_OFFLINE}",
                          hint="install your CA's certificate instead: --tls-cert CERT --tls-key KEY [--tls-chain CA]"
                               " (docs/install.md, HTTPS), and drop the certbot settings")


def served_certificate(host: str, port: int, server_name: str, timeout: float) -> bytes:
    """The DER certificate nginx presents on ``host:port`` for SNI ``server_name`` (not verified: compared)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # noqa: S501 - compared with the installed file below, not trusted
    sni = None
    try:
        ipaddress.ip_address(server_name.strip("[]"))
    except ValueError:
        sni = server_name or None
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname=sni) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("no certificate presented")
    return der


def installed_leaf(path: Path) -> x509.Certificate:
    return _certificates(path, "the installed certificate")[0]
