"""Signatures as plugin daemon 0.6 checks them (docs/plugins.md, "Signatures on daemon 0.6").

The daemon's verifying code is one set of files, the same git blobs at tags 0.5.2, 0.6.1, 0.6.3 and 0.6.10 of
langgenius/dify-plugin-daemon (tests/fixtures/plugins/SOURCE.txt): pkg/plugin_packager/decoder/verifier.go
(6a2284b4), decoder/zip.go (d991ccdc), decoder/helper.go (73d4e76f), pkg/utils/encryption/rsa.go (e9551837) and
pkg/license/public_key/PUBLIC_KEY.pem (e849b390). ``daemon_verified`` re-implements it from those files, citing
their lines at 0.6.10, without scripts.plugins.sign and without an RSA library (the PKCS#1 v1.5 check is done
by hand), so the toolkit's signer and `plugin-verify` are checked against an independent reading.

The real official package and key are vendored in tests/fixtures/plugins/ (SOURCE.txt: origin, sha256).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import posixpath
import re
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from scripts.plugins import repackage as plugins
from scripts.plugins import sign as plugin_sign
from scripts.plugins.sign import SignatureError
from tests.conftest import FIXTURE_ROOT

OFFICIAL_PACKAGE = "langgenius-agent_0.0.14.difypkg"
OFFICIAL_KEY = "dify-plugin-daemon-PUBLIC_KEY.pem"
SHA256 = {OFFICIAL_PACKAGE: "a58786359976dbbc96b353c9fc0e9ced05a3f5ee51995424c527934add9d323f",
          OFFICIAL_KEY: "dda2a2a8dc5eb61b7921b86eb573b88fb202909c0a65bb1974ac4be2f6addd68"}
OFFICIAL_SIGNED_AT = 1744632035
def _fixture(name: str) -> Path:
    """A real upstream file, vendored in tests/fixtures/plugins/ (SOURCE.txt), checked by sha256."""
    assert SHA256[name] in (FIXTURE_ROOT / "plugins" / "SOURCE.txt").read_text()
    path = FIXTURE_ROOT / "plugins" / name
    assert path.is_file(), f"{path} is missing (tests/fixtures/plugins/SOURCE.txt says where it comes from)"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256[name], f"{path} is not the upstream file"
    return path


# ------------------------------------------------------ the daemon's check, re-implemented from the Go source

class DaemonError(Exception):
    """Any error the daemon's check returns: the package is then not verified."""


def _der(buf: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    if pos + 2 > len(buf) or buf[pos] != tag:
        raise DaemonError("DER: unexpected tag")
    length, pos = buf[pos + 1], pos + 2
    if length & 0x80:
        count = length & 0x7F
        length, pos = int.from_bytes(buf[pos:pos + count], "big"), pos + count
    if pos + length > len(buf):
        raise DaemonError("DER: truncated")
    return buf[pos:pos + length], pos + length


def go_load_public_key(data: bytes) -> tuple[int, int]:
    """encryption.LoadPublicKey (rsa.go L89-105): pem.Decode, type "RSA PUBLIC KEY", nothing left after the
    block (``len(rest) != 0`` -> "extra data"), x509.ParsePKCS1PublicKey (SEQUENCE {INTEGER n, INTEGER e})."""
    begin = re.search(rb"(?:\A|\n)-----BEGIN ([^\n]*)-----[ \t]*\r?\n", data)
    end = re.search(rb"\n-----END RSA PUBLIC KEY-----[ \t]*(\r?\n|\Z)", data)
    if not begin or begin.group(1) != b"RSA PUBLIC KEY" or not end:
        raise DaemonError("failed to decode PEM block containing public key")
    if data[end.end():]:
        raise DaemonError("extra data included in the PEM block")
    der = base64.b64decode(re.sub(rb"\s", b"", data[begin.end():end.start()]))
    body, rest = _der(der, 0, 0x30)
    n, pos = _der(body, 0, 0x02)
    e, pos = _der(body, pos, 0x02)
    if rest != len(der) or pos != len(body):
        raise DaemonError("x509: trailing data")
    return int.from_bytes(n, "big"), int.from_bytes(e, "big")


SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def go_verify_sign(key: tuple[int, int], data: bytes, sig: bytes) -> None:
    """encryption.VerifySign (rsa.go L21-24): rsa.VerifyPKCS1v15(pub, crypto.SHA256, sha256(data), sig),
    worked out by hand (RFC 8017 8.2.2; Go rejects keys under 1024 bits)."""
    n, e = key
    k = (n.bit_length() + 7) // 8
    c = int.from_bytes(sig, "big")
    if n.bit_length() < 1024 or len(sig) != k or c >= n:
        raise DaemonError("crypto/rsa: verification error")
    t = SHA256_DIGEST_INFO + hashlib.sha256(data).digest()
    if pow(c, e, n).to_bytes(k, "big") != b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t:
        raise DaemonError("crypto/rsa: verification error")


def _valid_name(name: str) -> str:
    """archive/zip toValidName: backslashes to '/', path.Clean, no leading '/', no leading '../'."""
    p = posixpath.normpath(name.replace("\\", "/")) if name else "."
    p = p.lstrip("/") if p.startswith("/") else p
    while p.startswith("../"):
        p = p[3:]
    return p


def go_read_file(zf: zipfile.ZipFile, name: str) -> bytes:
    """ZipPluginDecoder.ReadFile (zip.go L141-159) -> zip.Reader.Open: fs.ValidPath, then the FIRST entry whose
    valid name matches (initFileList); a directory opens but its Read fails ("is a directory")."""
    if name != "." and any(part in ("", ".", "..") for part in name.split("/")):
        raise DaemonError(f"open {name}: invalid argument")
    for info in zf.infolist():
        if _valid_name(info.filename) == name:
            if info.filename.endswith("/"):
                raise DaemonError(f"read {name}: is a directory")
            return zf.read(info)
    if name == "." or any(_valid_name(i.filename).startswith(name + "/") for i in zf.infolist()):
        raise DaemonError(f"read {name}: is a directory")
    raise DaemonError(f"open {name}: file does not exist")


def go_decode(zf: zipfile.ZipFile) -> tuple[str, int]:
    """ZipPluginDecoder.decode (zip.go L182-225): the comment as {signature string, time int64} (encoding/json:
    keys case-insensitive), then .verification.dify.json must parse when present."""
    try:
        doc = json.loads(zf.comment.decode("utf-8", "replace"), object_pairs_hook=lambda kv: ("object", kv))
    except ValueError as exc:
        raise DaemonError(f"comment: {exc}") from None
    if doc is not None and not (isinstance(doc, tuple) and doc[0] == "object"):
        raise DaemonError("comment: json: cannot unmarshal into a struct")
    fields = {"signature": "", "time": 0}
    for key, value in doc[1] if doc else []:
        if key.lower() in fields and value is not None:
            if not isinstance(value, type(fields[key.lower()])) or isinstance(value, bool):
                raise DaemonError(f"comment: {key} has the wrong type")
            fields[key.lower()] = value
    try:
        verification = go_read_file(zf, ".verification.dify.json")
    except DaemonError as exc:
        if "does not exist" not in str(exc):
            raise
    else:
        try:
            json.loads(verification)
        except ValueError as exc:
            raise DaemonError(f"verification: {exc}") from None
    return fields["signature"], fields["time"]


def daemon_verify(pkg: bytes, public_keys: list[tuple[int, int]]) -> None:
    """VerifyPluginWithPublicKeys (verifier.go L64-115), on the bytes newZipPluginDecoder gets (zip.go L40-65)."""
    zf = zipfile.ZipFile(io.BytesIO(pkg))
    data = b""
    for info in zf.infolist():                                    # Walk (zip.go L121-135): path.Split
        directory, filename = info.filename.rpartition("/")[0::2]
        joined = posixpath.normpath(posixpath.join(directory, filename)) if info.filename else ""
        data += hashlib.sha256(go_read_file(zf, joined)).digest()  # L67-80
    signature, created_at = go_decode(zf)                          # L87-96 (Signature(), CreateTime())
    data += str(created_at).encode()                               # L99 strconv.FormatInt(createdAt, 10)
    try:
        sig = base64.b64decode(signature.replace("\r", "").replace("\n", ""), validate=True)   # L101
    except ValueError as exc:
        raise DaemonError(f"base64: {exc}") from None
    last: Exception = DaemonError("no keys")
    for key in public_keys:                                        # L107-114: any key verifying is enough
        try:
            return go_verify_sign(key, data, sig)
        except DaemonError as exc:
            last = exc
    raise last


def daemon_verified(pkg: Path | bytes, official_pem: bytes, *, enabled: bool = False,
                    key_paths: tuple[str, ...] = ()) -> bool:
    """PluginDecoderHelper.verified (helper.go L497-520): VerifyPluginWithPublicKeyPaths (verifier.go L35-60:
    the official key, then every THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS path, trimmed; one unreadable
    key is an error) when THIRD_PARTY_SIGNATURE_VERIFICATION_ENABLED and the list is not empty, else
    VerifyPlugin (L19-31, the official key only). Any error means "not verified"."""
    data = pkg.read_bytes() if isinstance(pkg, Path) else pkg
    try:
        keys = [go_load_public_key(official_pem)]
        if enabled and key_paths:
            for path in key_paths:
                try:
                    keys.append(go_load_public_key(Path(path.strip()).read_bytes()))
                except OSError as exc:
                    raise DaemonError(str(exc)) from None
        daemon_verify(data, keys)
    except (DaemonError, zipfile.BadZipFile):
        return False
    return True


# ------------------------------------------------------------------------------------------ keys, helpers

@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    """A site pair and a stand-in for the official key (2048 bits: fast)."""
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("site", "standin"):
        private, public = plugin_sign.generate_keypair(2048)
        (d / f"{name}.private.pem").write_bytes(private)
        (d / f"{name}.public.pem").write_bytes(public)
        out[name], out[f"{name}-private"] = d / f"{name}.public.pem", d / f"{name}.private.pem"
    return out


def _rewrite(src: Path, dst: Path, *, change: str | None = None, comment: bytes | None = None,
             append: tuple[str, bytes] | None = None, reverse: bool = False) -> Path:
    """Copy a package entry by entry (original comment unless given), optionally altering it."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        infos = zin.infolist()[::-1] if reverse else zin.infolist()
        for info in infos:
            data = bytearray(zin.read(info))
            if info.filename == change:
                data[len(data) // 2] ^= 0x01
            zout.writestr(info, bytes(data))
        if append:
            zout.writestr(*append)
        zout.comment = zin.comment if comment is None else comment
    return dst


TAMPERING = {
    "one byte of main.py": {"change": "main.py"},
    "one byte of manifest.yaml": {"change": "manifest.yaml"},
    "one byte of requirements.txt": {"change": "requirements.txt"},
    "an entry added": {"append": ("extra.py", b"import os\n")},
    "entries reordered": {"reverse": True},
}


def _with_time(src: Path, seconds: int) -> bytes:
    with zipfile.ZipFile(src) as zf:
        doc = json.loads(zf.comment)
    return json.dumps({"signature": doc["signature"], "time": seconds}, separators=(",", ":")).encode()


# ------------------------------------------------------------------- (a) the real official package and key

def test_official_package_verifies_with_the_official_key_only(tmp_path, keys):
    package, official = _fixture(OFFICIAL_PACKAGE), _fixture(OFFICIAL_KEY)
    assert daemon_verified(package, official.read_bytes())                 # the re-implementation agrees
    ours = plugin_sign.verify_package(package, [official])
    assert (ours.signed, ours.verified, ours.signed_at, ours.key) == (True, True, OFFICIAL_SIGNED_AT, official)
    assert ours.category == "langgenius"          # no .verification.dify.json: DefaultVerification (packages.go L63-65)
    assert ours.checksum == plugin_sign.package_checksum(package)
    refused = plugin_sign.verify_package(package, [keys["site"]])
    assert refused.signed and not refused.verified and "does not verify" in refused.reason
    assert plugin_sign.verify_package(package, [keys["site"], official]).verified   # any listed key is enough


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_official_package_is_refused_after_tampering(tmp_path, how):
    package, official = _fixture(OFFICIAL_PACKAGE), _fixture(OFFICIAL_KEY)
    tampered = _rewrite(package, tmp_path / "t.difypkg", **TAMPERING[how])
    assert not daemon_verified(tampered, official.read_bytes())
    assert not plugin_sign.verify_package(tampered, [official]).verified
    untouched = _rewrite(package, tmp_path / "u.difypkg")        # rewritten entry by entry, nothing changed
    assert daemon_verified(untouched, official.read_bytes())
    assert plugin_sign.verify_package(untouched, [official]).verified


def test_official_package_is_refused_with_another_time_or_one_flipped_signature_byte(tmp_path):
    package, official = _fixture(OFFICIAL_PACKAGE), _fixture(OFFICIAL_KEY)
    later = _rewrite(package, tmp_path / "later.difypkg", comment=_with_time(package, OFFICIAL_SIGNED_AT + 1))
    raw = bytearray(package.read_bytes())
    at = raw.rindex(b'"signature":"') + len('"signature":"') + 10     # the comment is the file's tail
    raw[at] = ord("A") if raw[at] != ord("A") else ord("B")
    flipped = tmp_path / "flip.difypkg"
    flipped.write_bytes(bytes(raw))
    for bad in (later, flipped):
        assert not daemon_verified(bad, official.read_bytes())
        assert not plugin_sign.verify_package(bad, [official]).verified


def test_site_key_next_to_the_official_key_as_the_daemon_loads_them(tmp_path, keys):
    """Acceptance (#12): with the site key configured, the official package still verifies; a site key file the
    daemon cannot load (a blank line after END) turns verification off for every package, and we refuse it."""
    package, official = _fixture(OFFICIAL_PACKAGE), _fixture(OFFICIAL_KEY)
    site = str(keys["site"])
    assert daemon_verified(package, official.read_bytes(), enabled=True, key_paths=(f" {site} ",))
    broken = tmp_path / "broken.public.pem"
    broken.write_bytes(keys["site"].read_bytes() + b"\n")
    assert not daemon_verified(package, official.read_bytes(), enabled=True, key_paths=(site, str(broken)))
    assert not daemon_verified(package, official.read_bytes(), enabled=True, key_paths=(site, ""))   # trailing comma
    assert daemon_verified(package, official.read_bytes(), enabled=False, key_paths=(str(broken),))  # not enabled
    with pytest.raises(SignatureError, match="data after its END line"):
        plugin_sign.load_public_key(broken)
    with pytest.raises(SignatureError, match="data after its END line"):
        plugin_sign.verify_package(package, [official, broken])


@pytest.mark.parametrize("tail, daemon_loads", [(b"", True), (b"\n", True), (b"  \r\n", True), (b"\n\n", False),
                                                (b"\n# site key\n", False), (b"\r", False)])
def test_public_key_file_endings_match_the_daemon(tmp_path, keys, tail, daemon_loads):
    body = keys["site"].read_bytes().rstrip(b"\n")
    path = tmp_path / "k.pem"
    path.write_bytes(body + tail)
    try:
        go_load_public_key(path.read_bytes())
        loaded = True
    except DaemonError:
        loaded = False
    assert loaded == daemon_loads
    if daemon_loads:
        plugin_sign.load_public_key(path)
    else:
        with pytest.raises(SignatureError):
            plugin_sign.load_public_key(path)


def test_official_package_shape_and_the_daemon_rule_per_version(tmp_path):
    """(c) What our code reads from the official package: requirements.txt only (no pyproject.toml, no uv.lock),
    so 0.5.2 and 0.6.3 both run `uv pip install -r requirements.txt`, under different DAEMON_RULES rows."""
    package = _fixture(OFFICIAL_PACKAGE)
    work = tmp_path / "plugin"
    plugins.safe_extract(package, work)
    manifest = plugins.read_manifest(work, package.name)
    assert (manifest.author, manifest.name, manifest.version) == ("langgenius", "agent", "0.0.14")
    files = plugins.daemon_files(work)
    assert files == {"requirements.txt"}
    old, new = plugins.daemon_install("0.5.2", files, {}, environ={}), plugins.daemon_install("0.6.3", files, {}, {})
    assert (old.file, old.argv) == (new.file, new.argv) == ("requirements.txt",
                                                             ["pip", "install", "-r", "requirements.txt", "-vvv"])
    assert old.rule.first == "0.0.0" and new.rule.first == "0.6.3" and old.rule != new.rule


# ----------------------------------------- (b) what our signer writes verifies with the site key, as 0.6 does

def _site_signed(kind: str, tmp_path: Path, keys) -> Path:
    if kind == "written":
        files = [("manifest.yaml", b"author: airgap\nname: demo\nversion: 0.0.1\n"), ("main.py", b"print('hi')\n"),
                 ("requirements.txt", b"--no-index\n--find-links ./wheels/\ndify_plugin\n")]
        key = plugin_sign.load_private_key(keys["site-private"])
        return plugin_sign.write_package(tmp_path / "written.difypkg", files, sign_key=key).path
    # the repackage path for an official plugin: re-signed with the site key (sign_package)
    return plugin_sign.sign_package(_fixture(OFFICIAL_PACKAGE), keys["site-private"],
                                    out=tmp_path / "resigned.difypkg").path


@pytest.mark.parametrize("kind", ["written", "official-resigned"])
def test_site_signed_package_verifies_with_the_site_key_by_the_daemon_algorithm(tmp_path, keys, kind):
    signed = _site_signed(kind, tmp_path, keys)
    official = _fixture(OFFICIAL_KEY).read_bytes() if kind == "official-resigned" else keys["standin"].read_bytes()
    site = (str(keys["site"]),)
    assert daemon_verified(signed, official, enabled=True, key_paths=site)
    assert not daemon_verified(signed, official)                          # official key only: refused
    assert not daemon_verified(signed, official, enabled=True, key_paths=(str(keys["standin"]),))
    ours = plugin_sign.verify_package(signed, [keys["site"]])
    assert ours.verified and ours.category == "community"
    with zipfile.ZipFile(signed) as zf:
        assert zf.namelist()[-1] == ".verification.dify.json" and not any(n.endswith("/") for n in zf.namelist())
    for how, change in TAMPERING.items():
        tampered = _rewrite(signed, tmp_path / "t.difypkg", **change)
        assert not daemon_verified(tampered, official, enabled=True, key_paths=site), how
        assert not plugin_sign.verify_package(tampered, [keys["site"]]).verified, how
    later = _rewrite(signed, tmp_path / "later.difypkg", comment=_with_time(signed, 1))
    assert not daemon_verified(later, official, enabled=True, key_paths=site)
    assert not plugin_sign.verify_package(later, [keys["site"]]).verified


# --------------------------------------------- zip corner cases: plugin-verify reads entries as the daemon does

def _signed_zip(path: Path, members: list[tuple[str, bytes]], key_path: Path, hashed: list[bytes],
                comment: dict | None = None) -> Path:
    """A package whose signature covers ``hashed`` (the contents whose sha256 make the message)."""
    key = plugin_sign.load_private_key(key_path)
    message = b"".join(hashlib.sha256(h).digest() for h in hashed) + b"1700000000"
    sig = base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
        # "<sig>" (not base64) in ``comment`` stands for the signature
        zf.comment = json.dumps(comment or {"signature": "<sig>", "time": 1700000000}).replace("<sig>", sig).encode()
    return path


def test_directory_entry_makes_a_package_unverifiable_in_both(tmp_path, keys):
    members = [("manifest.yaml", b"name: x\n"), ("tools/", b""), ("tools/a.py", b"a\n")]
    pkg = _signed_zip(tmp_path / "d.difypkg", members, keys["site-private"], [m[1] for m in members])
    assert not daemon_verified(pkg, keys["standin"].read_bytes(), enabled=True, key_paths=(str(keys["site"]),))
    result = plugin_sign.verify_package(pkg, [keys["site"]])
    assert not result.verified and "'tools/' is a directory" in result.reason


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_duplicate_names_hash_the_first_entry_in_both(tmp_path, keys):
    members = [("manifest.yaml", b"name: x\n"), ("main.py", b"first\n"), ("main.py", b"second\n")]
    site = (str(keys["site"]),)
    as_daemon = _signed_zip(tmp_path / "a.difypkg", members, keys["site-private"],
                            [b"name: x\n", b"first\n", b"first\n"])
    naive = _signed_zip(tmp_path / "b.difypkg", members, keys["site-private"], [m[1] for m in members])
    assert daemon_verified(as_daemon, keys["standin"].read_bytes(), enabled=True, key_paths=site)
    assert plugin_sign.verify_package(as_daemon, [keys["site"]]).verified
    assert not daemon_verified(naive, keys["standin"].read_bytes(), enabled=True, key_paths=site)
    assert not plugin_sign.verify_package(naive, [keys["site"]]).verified


def test_comment_is_read_like_go_json(tmp_path, keys):
    """encoding/json matches keys case-insensitively; Go's base64 skips line breaks; a bool is no int64."""
    members = [("manifest.yaml", b"name: x\n")]
    site = (str(keys["site"]),)
    upper = _signed_zip(tmp_path / "u.difypkg", members, keys["site-private"], [members[0][1]],
                        {"Signature": "<sig>", "TIME": 1700000000})
    assert daemon_verified(upper, keys["standin"].read_bytes(), enabled=True, key_paths=site)
    assert plugin_sign.verify_package(upper, [keys["site"]]).verified
    boolean = _signed_zip(tmp_path / "b.difypkg", members, keys["site-private"], [members[0][1]],
                          {"signature": "<sig>", "time": True})
    assert not daemon_verified(boolean, keys["standin"].read_bytes(), enabled=True, key_paths=site)
    with pytest.raises(SignatureError, match="not a Dify signature"):
        plugin_sign.verify_package(boolean, [keys["site"]])
