"""Signed bundles: a detached signature of manifest.json, the bundle digest, and verify/open with a trust policy.

What is signed: ``manifest.json``, byte for byte. It pins every file of the bundle (path, size, sha256) and
:func:`scripts.bundle.manifest.verify` refuses anything in the directory it does not list, so a signature over
the manifest covers the whole bundle. The archive form carries the same two files as its first two members.

Format of ``manifest.json.sig`` (next to ``manifest.json``; ``NAME/manifest.json.sig`` in the archive): the raw
RSA signature, RSASSA-PKCS1-v1_5 with SHA-256 over the exact manifest.json bytes, no encoding, no header
(512 bytes for a 4096-bit key). The same scheme as plugin signatures, deterministic (signing the same manifest
with the same key gives the same bytes, so a re-run changes nothing), and what openssl checks by default::

    openssl rsa -RSAPublicKey_in -in site.public.pem -pubout -out site.spki.pem   # PKCS#1 -> SubjectPublicKeyInfo
    openssl dgst -sha256 -verify site.spki.pem -signature manifest.json.sig manifest.json   # "Verified OK"

Keys: the site's RSA pair from ``invoke plugin-keygen`` (PKCS#1 PEM, loaded by :mod:`scripts.plugins.sign`), one
key per site. A key's fingerprint is ``sha256:<hex>`` of its SubjectPublicKeyInfo DER, what
``openssl rsa -RSAPublicKey_in -in site.public.pem -pubout -outform DER | sha256sum`` prints.

The digest (:func:`scripts.bundle.manifest.manifest_digest`) is ``sha256:<hex>`` of the same manifest bytes:
``invoke bundle`` prints it last, ``invoke verify --expect-digest`` compares it, for either form.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from scripts.bundle import archive
from scripts.bundle.manifest import (
    MANIFEST,
    RECOPY,
    SIGNATURE,
    Problem,
    VerifyReport,
    find_bundle_dir,
    manifest_digest,
)
from scripts.core.console import LOG, table
from scripts.core.errors import AirgapError
from scripts.core.inputs import read_bytes
from scripts.plugins.sign import load_private_key, load_public_key

CONFIG_KEY = "bundle_public_keys"
CONFIG_SETTING = f"invoke.yaml airgap.{CONFIG_KEY}"
_DIGEST = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")


# --- keys, digests --------------------------------------------------------------------------------

def fingerprint(public_key) -> str:
    """``sha256:<hex>`` of the key's SubjectPublicKeyInfo DER (``openssl rsa -pubout -outform DER | sha256sum``)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def signing_key(path: str | os.PathLike):
    """The site's private key (PKCS#1 ``RSA PRIVATE KEY``, as `invoke plugin-keygen` writes it)."""
    return load_private_key(path)


def parse_digest(text: str) -> str:
    """``sha256:HEX`` or a bare 64-digit HEX -> ``sha256:hex`` (lower case)."""
    m = _DIGEST.fullmatch((text or "").strip())
    if not m:
        raise AirgapError(f"--expect-digest {text!r} is not a digest; give it as `invoke bundle` printed it: "
                          f"sha256: and 64 hex digits")
    return "sha256:" + m.group(1).lower()


# --- signing --------------------------------------------------------------------------------------

def sign_manifest(raw: bytes, private_key) -> bytes:
    return private_key.sign(raw, padding.PKCS1v15(), hashes.SHA256())


def sign_bundle(bundle: Path, key_path: str | os.PathLike) -> str:
    """Write ``bundle/manifest.json.sig`` (unchanged when it already holds this signature); returns the
    signer's fingerprint."""
    key = signing_key(key_path)
    signature = sign_manifest((bundle / MANIFEST).read_bytes(), key)
    target = bundle / SIGNATURE
    if target.is_file() and not target.is_symlink() and target.read_bytes() == signature:
        LOG.info("%s already holds this key's signature: unchanged", target)
    else:
        tmp = bundle / f".{SIGNATURE}.tmp"
        tmp.write_bytes(signature)
        tmp.chmod(0o644)
        os.replace(tmp, target)
        LOG.info("signed %s: %s", bundle / MANIFEST, target)
    return fingerprint(key.public_key())


# --- what is trusted --------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrustPolicy:
    """What a site demands of a bundle: signed by one of ``public_keys`` (if any), manifest digest ``expect_digest``."""
    public_keys: tuple[str, ...] = ()
    expect_digest: str | None = None
    keys_from: str = "--public-key"   # where the keys came from, named when a bundle is refused

    @property
    def requires_signature(self) -> bool:
        return bool(self.public_keys)


def policy(public_keys: Sequence[str] = (), expect_digest: str | None = None,
           configured: Sequence[str] | str | None = None) -> TrustPolicy:
    """``--public-key`` beats the site's configured keys (invoke.yaml ``airgap.bundle_public_keys``); any key in
    effect means an unsigned bundle is refused."""
    configured = [configured] if isinstance(configured, str) else list(configured or [])
    keys, source = (list(public_keys), "--public-key") if public_keys else (configured, CONFIG_SETTING)
    return TrustPolicy(tuple(str(k) for k in keys), parse_digest(expect_digest) if expect_digest else None, source)


@dataclass
class Head:
    """The signed part of a bundle in either form: manifest.json's bytes and its signature (None: unsigned)."""
    where: str
    manifest: bytes
    signature: bytes | None

    @property
    def digest(self) -> str:
        return manifest_digest(self.manifest)


def read_head(path: str | os.PathLike) -> Head:
    """The manifest and signature of a bundle directory, or of an archive (its first two members only)."""
    if archive.is_archive(path):
        stem, files = archive.archive_files(path)
        _, _, raw, signature = archive.read_head(files[0])
        return Head(str(stem), raw, signature)
    bundle = find_bundle_dir(path)
    sig = bundle / SIGNATURE
    signature = read_bytes(sig, "the signature", RECOPY) if sig.is_file() and not sig.is_symlink() else None
    return Head(str(bundle), read_bytes(bundle / MANIFEST, "the manifest", RECOPY), signature)


def bundle_digest(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of the bundle's manifest.json, the same for its directory and its archive."""
    return read_head(path).digest


@dataclass
class Trust:
    digest: str
    signed: bool
    signer: str | None = None        # fingerprint of the key that verified the signature
    signer_key: str | None = None    # that key's file
    problems: list[Problem] = field(default_factory=list)


def _verifying_key(head: Head, keys: list[tuple[str, object]]) -> tuple[str, object] | None:
    for path, key in keys:
        try:
            key.verify(head.signature, head.manifest, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return path, key
    return None


def check(head: Head, trust: TrustPolicy) -> Trust:
    """The digest and the signature of ``head`` against the policy; a problem names what does not match."""
    result = Trust(head.digest, head.signature is not None)
    if trust.expect_digest and head.digest != trust.expect_digest:
        result.problems.append(Problem(MANIFEST, "digest", f"is {head.digest}, expected {trust.expect_digest}"))
    keys = [(path, load_public_key(Path(path).expanduser())) for path in trust.public_keys]
    tried = ", ".join(path for path, _ in keys)
    if keys and head.signature is None:
        result.problems.append(Problem(SIGNATURE, "unsigned", f"the bundle is not signed, but {trust.keys_from} "
                                                              f"demands a signature by {tried}"))
    elif keys:
        found = _verifying_key(head, keys)
        if found is None:
            result.problems.append(Problem(SIGNATURE, "bad signature",
                                           f"does not verify with {tried} ({trust.keys_from}): manifest.json "
                                           f"changed after signing, or another key signed it"))
        else:
            result.signer_key, result.signer = found[0], fingerprint(found[1])
    return result


def verify(path: str | os.PathLike, deep: bool = True, trust: TrustPolicy | None = None) -> VerifyReport:
    """`invoke verify`: every file (either form, :func:`scripts.bundle.archive.verify`), then digest and signature."""
    trust = trust or TrustPolicy()
    report = archive.verify(path, deep)
    try:
        head = read_head(path)
    except AirgapError as exc:  # an archive whose head is damaged: already a problem of the report
        if trust.requires_signature or trust.expect_digest:
            report.problems.insert(0, Problem(MANIFEST, "unreadable", f"cannot check digest or signature: {exc}"))
        return report
    found = check(head, trust)
    report.digest, report.signed, report.signer, report.signer_key = (found.digest, found.signed, found.signer,
                                                                     found.signer_key)
    report.keys = list(trust.public_keys)
    report.problems[:0] = found.problems
    return report


def open_verified(path: str | os.PathLike, trust: TrustPolicy, *, dry_run: bool = False) -> Path:
    """The bundle DIRECTORY for ``path``, verified before anything uses it (install, push).

    First the digest and signature from the head (an archive is not unpacked when they fail), then the archive
    unpacked (:func:`scripts.bundle.archive.materialize`, every file hashed), then every file of the directory
    and nothing else (:func:`verify`). A dry run of an archive that is not unpacked beside it yet (a directory
    there from ANOTHER bundle of the same name counts as not) unpacks nothing: the archive is verified as a
    stream and the ARCHIVE path is returned, not a directory; plan from :func:`archive.planning_view`.
    """
    head = read_head(path)
    found = check(head, trust)
    if found.problems:
        raise AirgapError(f"{head.where} is refused; nothing was unpacked or changed:\n"
                          f"{render_problems(found.problems)}")
    if dry_run and archive.is_archive(path) and archive.unpacked_beside(path) is None:
        archive.materialize(path, dry_run=True)  # says where it would unpack; refuses a directory it may not replace
        # nothing unpacked: every member (the image parts too) is hashed as it streams by
        LOG.info("verifying %s (streamed; the images are not unpacked in a dry run)", path)
        streamed = archive.verify(path, deep=True)
        if not streamed.ok:
            raise AirgapError(f"the bundle does not verify; nothing was changed:\n{streamed.render()}")
        return Path(path)
    bundle = archive.materialize(path, dry_run=dry_run)
    LOG.info("verifying %s", bundle)
    report = verify(bundle, deep=True, trust=trust)
    if not report.ok:
        raise AirgapError(f"the bundle does not verify; nothing was changed:\n{report.render()}")
    LOG.info("%s", "; ".join(report.trust_lines()))
    return bundle


def render_problems(problems: list[Problem]) -> str:
    return table(["file", "problem", "detail"], [[p.path, p.kind, p.detail] for p in problems])


def signer_line(key_path: str | os.PathLike) -> str:
    """What `invoke bundle --sign-key` prints: the signature file and the key's fingerprint to hand over."""
    return f"signed: {SIGNATURE} (key {fingerprint(signing_key(key_path).public_key())})"
