"""The site certificate check of `install --tls-cert` (scripts/host/tls.py), on certificates of a CA made here; the
served-certificate probe against a real TLS server on loopback."""

from __future__ import annotations

import datetime as _dt
import hashlib
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest

from scripts.core.errors import AirgapError, BadInput
from scripts.host import tls
from tests.lab.certs import NOW, SiteCA, issue


@pytest.fixture(scope="module")
def ca() -> SiteCA:
    return SiteCA.make()


def test_a_good_certificate_with_its_chain_becomes_one_fullchain_for_nginx(ca, tmp_path):
    server = ca.server("dify.example.local", "10.1.2.3")
    cert, key, chain = ca.write(tmp_path, server)
    got = tls.load_site_certificate(cert, key, chain, "10.1.2.3")
    assert got.fullchain == server.cert_pem() + ca.intermediate.cert_pem()   # leaf first, as ssl_certificate wants
    assert got.key == key.read_bytes() and got.names == ("dify.example.local", "10.1.2.3")
    assert "until" in got.describe() and got.fingerprint == hashlib.sha256(
        server.cert.public_bytes(tls.serialization.Encoding.DER)).hexdigest()
    assert tls.load_site_certificate(cert, key, None, "dify.example.local").fullchain == server.cert_pem()


@pytest.mark.parametrize("names, server, ok", [
    (("dify.example.local",), "dify.example.local", True),
    (("dify.example.local",), "DIFY.example.local.", True),
    (("*.example.local",), "dify.example.local", True),
    (("*.example.local",), "a.dify.example.local", False),     # a wildcard covers ONE label
    (("*.example.local",), "example.local", False),
    (("10.1.2.3",), "10.1.2.3", True),
    (("10.1.2.3",), "10.1.2.4", False),
    (("dify.example.local",), "10.1.2.3", False),               # an IP is never matched by a name
    (("::1",), "[::1]", True),
])
def test_subject_alt_names_cover(names, server, ok):
    assert tls.covers(names, server) is ok


def _refused(ca: SiteCA, tmp_path: Path, server, server_name: str = "dify.example.local", *, key=None,
             chain=None) -> str:
    cert, key_path, chain_path = ca.write(tmp_path, server)
    if key is not None:
        key_path.write_bytes(key)
    if chain is not None:
        chain_path.write_bytes(chain)
    with pytest.raises(BadInput) as caught:
        tls.load_site_certificate(cert, key_path, chain_path, server_name)
    return f"{caught.value} | {caught.value.hint}"


def test_each_refusal_names_what_is_wrong(ca, tmp_path):
    good = ca.server("dify.example.local")
    other = ca.server("dify.example.local")
    assert "does not belong to the certificate" in _refused(ca, tmp_path, good, key=other.key_pem())
    assert "encrypted key" in _refused(ca, tmp_path, good, key=good.key_pem(b"secret"))
    assert "openssl pkey" in _refused(ca, tmp_path, good, key=good.key_pem(b"secret"))
    expired = ca.server("dify.example.local", not_before=NOW - _dt.timedelta(days=400),
                        not_after=NOW - _dt.timedelta(days=2))
    assert f"expired on {(NOW - _dt.timedelta(days=2)):%Y-%m-%d}" in _refused(ca, tmp_path, expired)
    early = ca.server("dify.example.local", not_before=NOW + _dt.timedelta(days=3))
    assert "not valid yet" in _refused(ca, tmp_path, early) and "clock" in _refused(ca, tmp_path, early)
    assert "no subjectAltName" in _refused(ca, tmp_path, ca.server())
    says = _refused(ca, tmp_path, good, "10.1.2.3")
    assert "does not cover 10.1.2.3: it names dify.example.local" in says
    foreign = SiteCA.make()
    says = _refused(ca, tmp_path, good, chain=foreign.intermediate.cert_pem())
    assert "the chain does not start with the issuer" in says and "Test Intermediate CA" in says
    assert "holds no PEM certificate" in _refused(ca, tmp_path, good, chain=b"not a certificate")


def test_certbot_is_refused_offline_with_the_offline_way():
    for values in ({"NGINX_ENABLE_CERTBOT_CHALLENGE": "true"}, {"COMPOSE_PROFILES": "weaviate,certbot"}):
        with pytest.raises(AirgapError, match="Let's Encrypt over the internet") as caught:
            tls.refuse_certbot(values)
        assert "--tls-cert" in caught.value.hint
    # every release's example names a CERTBOT_DOMAIN (your_domain.com): that alone is not certbot
    tls.refuse_certbot({"NGINX_ENABLE_CERTBOT_CHALLENGE": "false", "CERTBOT_DOMAIN": "your_domain.com",
                        "COMPOSE_PROFILES": "weaviate"})


def test_served_certificate_is_what_a_tls_server_presents(ca, tmp_path):
    """A real TLS server on loopback (Python's ssl with the site pair): the probe gets its certificate back."""
    server = ca.server("dify.example.local", "127.0.0.1")
    cert, key, chain = ca.write(tmp_path, server)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls_conn:
            tls_conn.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        der = tls.served_certificate("127.0.0.1", port, "dify.example.local", timeout=10)
    finally:
        thread.join(timeout=10)
        listener.close()
    assert der == server.cert.public_bytes(tls.serialization.Encoding.DER)
    assert tls.installed_leaf(cert).public_bytes(tls.serialization.Encoding.DER) == der


def test_a_self_signed_certificate_without_chain_is_taken_as_is(tmp_path):
    alone = issue("dify.example.local", sans=["dify.example.local"])
    (tmp_path / "c.pem").write_bytes(alone.cert_pem())
    (tmp_path / "k.pem").write_bytes(alone.key_pem())
    got = tls.load_site_certificate(tmp_path / "c.pem", tmp_path / "k.pem", None, "dify.example.local")
    assert got.fullchain == alone.cert_pem()


def test_install_files_writes_the_pair_backs_up_what_differs_and_a_rerun_writes_nothing(ca, tmp_path):
    server = ca.server("dify.example.local")
    cert, key, chain = ca.write(tmp_path / "pki", server)
    checked = tls.load_site_certificate(cert, key, chain, "dify.example.local")
    project, backup = tmp_path / "docker", tmp_path / "backup"
    (project / tls.SSL_DIR).mkdir(parents=True)
    (project / tls.SSL_DIR / tls.CERT_FILE).write_bytes(b"the site's older certificate")
    assert tls.install_files(checked, project, backup, dry_run=True) == [tls.CERT_FILE, tls.KEY_FILE]
    assert (project / tls.SSL_DIR / tls.CERT_FILE).read_bytes() == b"the site's older certificate"  # dry run
    assert tls.install_files(checked, project, backup, dry_run=False) == [tls.CERT_FILE, tls.KEY_FILE]
    assert (project / tls.SSL_DIR / tls.CERT_FILE).read_bytes() == checked.fullchain
    assert (backup / tls.SSL_DIR / tls.CERT_FILE).read_bytes() == b"the site's older certificate"
    assert stat.S_IMODE((project / tls.SSL_DIR / tls.KEY_FILE).stat().st_mode) == 0o600
    assert tls.install_files(checked, project, backup, dry_run=False) == []


@pytest.mark.parametrize("kwargs, says", [
    (dict(overrides={"NGINX_HTTPS_ENABLED": "false"}), "contradicts"),
    (dict(overrides={"NGINX_SSL_CERT_FILENAME": "site.crt"}, server_ip="dify.example.local"), "names other files"),
    (dict(base_url="http://dify.example.local"), "is not https://"),
    (dict(), "needs the server's name"),
])
def test_install_refuses_contradicting_options_before_reading_the_pair(ca, tmp_path, kwargs, says):
    cert, key, chain = ca.write(tmp_path, ca.server("dify.example.local"))
    args = {"overrides": {}, "base_url": None, "server_ip": None, "current": {}, **kwargs}
    with pytest.raises(AirgapError, match=says):
        tls.checked_for_install(cert, key, chain, **args)
    # the installed .env's URL names the server on a re-run without --server-ip
    assert tls.server_name(None, None, {"APP_WEB_URL": "https://dify.example.local:8443"}) == "dify.example.local"


def test_a_key_exported_with_bag_attributes_in_any_script_is_written_as_plain_pem(ca, tmp_path):
    """`openssl pkcs12 -nodes` writes "Bag Attributes" (a friendlyName may be Korean) before the key: nginx gets the
    key alone, and the write never fails on the text around it."""
    server = ca.server("dify.example.local")
    cert, key, chain = ca.write(tmp_path / "pki", server)
    key.write_bytes("Bag Attributes\n    friendlyName: 디파이 서버\n".encode() + server.key_pem())
    checked = tls.load_site_certificate(cert, key, chain, "dify.example.local")
    written = tls.install_files(checked, tmp_path / "docker", tmp_path / "backup", dry_run=False)
    assert written == [tls.CERT_FILE, tls.KEY_FILE]
    text = (tmp_path / "docker" / tls.SSL_DIR / tls.KEY_FILE).read_text(encoding="ascii")
    assert text.startswith("-----BEGIN PRIVATE KEY-----")
    assert tls.load_site_certificate(cert, tmp_path / "docker" / tls.SSL_DIR / tls.KEY_FILE, None,
                                     "dify.example.local").fingerprint == checked.fingerprint
