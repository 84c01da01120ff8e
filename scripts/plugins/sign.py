"""The `.difypkg` container: writing, checksum/identifier, RSA signatures the plugin daemon verifies.

Everything here follows docs/plugins.md and the format notes it cites (dify-plugin-daemon 0.5.2); the
verifying side (pkg/plugin_packager/decoder/{verifier,zip,helper}.go, pkg/utils/encryption/rsa.go, the
official key) is the same file, byte for byte, at 0.5.2, 0.6.1, 0.6.3 and 0.6.10:

- entries are clean relative names, deflated, with no directory entries;
- the checksum (identifier suffix) hashes sorted ``sha256(name) + sha256(content)`` pairs;
- the signature is RSA PKCS#1 v1.5 / SHA-256 over the entries' sha256 in central-directory order
  followed by the decimal signing time, stored as compact JSON in the ZIP comment;
- ``.verification.dify.json`` is written last, and keys are PKCS#1 PEM (``RSA PUBLIC KEY``).

Verification reads each entry as the daemon does (``ZipPluginDecoder.Walk`` + ``ReadFile``: Go's
``zip.Reader.Open`` by cleaned name), so a duplicate name hashes the first such entry and a directory entry
makes the package unverifiable, exactly as in the daemon.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import posixpath
import re
import tempfile
import time as _time
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from scripts.core.errors import AirgapError, BadInput, UsageError
from scripts.core.extract import copy_capped
from scripts.core.files import sha256_file
from scripts.core.inputs import os_reason, output_dir
from scripts.plugins.common import UnsafeArchive, check_members

VERIFICATION_FILE = ".verification.dify.json"
MAX_VERIFICATION_FILE = 16 << 20     # read whole, like every file the toolkit reads whole (#13)
DEFAULT_KEY_BITS = 4096
MIN_KEY_BITS = 1024
DEFAULT_CATEGORY = "community"
CATEGORIES = ("langgenius", "partner", "community")
# Third-party keys (THIRD_PARTY_SIGNATURE_VERIFICATION_*) first shipped in plugin daemon 0.0.7.
THIRD_PARTY_KEYS_SINCE = "0.0.7"
# Fixed entry timestamp so that the same content gives the same bytes (the checksum ignores it anyway).
ZIP_DATE = (2000, 1, 1, 0, 0, 0)
_CHUNK = 1 << 20
IDENTIFIER_RE = re.compile(
    r"^(?:([a-z0-9_-]{1,64})\/)?([a-z0-9_-]{1,255}):([0-9]{1,4})(\.[0-9]{1,4}){1,3}(-\w{1,16})?@[a-f0-9]{32,64}$")

Source = Union[Path, bytes]


class SignatureError(AirgapError):
    """A key or signature problem: wrong key format, unreadable key, bad or missing signature."""


# ---------------------------------------------------------------------------------------------- keys

def generate_keypair(bits: int = DEFAULT_KEY_BITS) -> tuple[bytes, bytes]:
    """A new RSA key pair as (private PEM ``RSA PRIVATE KEY``, public PEM ``RSA PUBLIC KEY``), both PKCS#1."""
    if bits < MIN_KEY_BITS:
        raise SignatureError(f"a {bits}-bit key is too small: the plugin daemon rejects keys under "
                             f"{MIN_KEY_BITS} bits; use the default {DEFAULT_KEY_BITS}")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    return private, public


def write_keypair(out_dir: str | os.PathLike, name: str = "dify-plugin-site", bits: int = DEFAULT_KEY_BITS,
                  force: bool = False) -> tuple[Path, Path]:
    """Write ``NAME.private.pem`` (mode 0600) and ``NAME.public.pem`` into ``out_dir``; never overwrite silently,
    never write through a symbolic link (a dangling one would create the private key wherever it points)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise UsageError(f"--name {name!r} must be a plain file name stem (letters, digits, '.', '_', '-'): the keys "
                         f"are written as NAME.private.pem and NAME.public.pem inside --out")
    out = output_dir(out_dir, "key directory (--out)")
    private_path, public_path = out / f"{name}.private.pem", out / f"{name}.public.pem"
    for path in (private_path, public_path):
        if path.is_symlink():
            raise SignatureError(f"{path} is a symbolic link (to {os.readlink(path)}); refusing to write a key "
                                 f"through it: remove the link or pass another --out/--name")
        if path.exists() and (not force or not path.is_file()):
            raise SignatureError(f"{path} already exists; keep the existing key pair (packages signed with it "
                                 f"verify only with it) or pass --force to replace it" if path.is_file() else
                                 f"{path} exists and is not a file; pass another --out/--name")
    private, public = generate_keypair(bits)
    _write_key(private_path, private, 0o600, force)
    _write_key(public_path, public, 0o644, force)
    return private_path, public_path


def _write_key(path: Path, data: bytes, mode: int, replace: bool) -> None:
    """Create ``path`` with ``mode`` (O_NOFOLLOW: a link planted meanwhile is refused, not followed)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if replace else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except OSError as exc:
        raise SignatureError(f"cannot write {path}: {exc.strerror}; remove it (a link or a file appeared there) "
                             f"or pass another --out") from None
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), mode)
        fh.write(data)


def _one_pem_block(path: Path, label: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read key {path}: {exc.strerror}; pass an existing PEM file") from None
    blocks = re.findall(rb"-----BEGIN ([A-Z0-9 ]+)-----", data)
    if len(blocks) != 1:
        raise SignatureError(f"{path} holds {len(blocks)} PEM blocks; the plugin daemon needs exactly one "
                             f"'{label}' block per file")
    found = blocks[0].decode()
    if found != label:
        hint = ""
        if label == "RSA PUBLIC KEY" and found == "PUBLIC KEY":
            hint = (f"; convert it with `openssl rsa -pubin -in {path} -RSAPublicKey_out -out KEY.pem` "
                    f"or make a new pair with `invoke plugin-keygen`")
        elif label == "RSA PRIVATE KEY":
            hint = (f"; convert it with `openssl rsa -in {path} -traditional -out KEY.pem` (unencrypted) "
                    f"or make a new pair with `invoke plugin-keygen`")
        raise SignatureError(f"{path} is a '{found}' PEM, but the plugin daemon accepts only PKCS#1 '{label}'{hint}")
    if label == "RSA PUBLIC KEY" and not re.search(rb"-----END RSA PUBLIC KEY-----[ \t]*(?:\r?\n)?\Z", data):
        # encryption.LoadPublicKey: anything Go's pem.Decode leaves after the END line's line break is "extra
        # data included in the PEM block"; one such third-party key leaves EVERY package unverified.
        raise SignatureError(f"{path} has data after its END line (a blank line counts); the plugin daemon refuses "
                             f"such a key file, and then verifies no package at all (not even Dify's own): end the "
                             f"file right after '-----END RSA PUBLIC KEY-----' and one line break")
    return data


def _load_rsa_key(path: str | os.PathLike, private: bool):
    """One PKCS#1 RSA key of at least MIN_KEY_BITS from a PEM file, as the daemon loads it."""
    path = Path(path)
    data = _one_pem_block(path, "RSA PRIVATE KEY" if private else "RSA PUBLIC KEY")
    try:
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except (ValueError, TypeError) as exc:
        what = "unencrypted RSA private key" if private else "RSA public key"
        raise SignatureError(f"{path} is not a usable {what} ({exc})"
                             + ("; make one with `invoke plugin-keygen`" if private else "")) from None
    if not isinstance(key, rsa.RSAPrivateKey if private else rsa.RSAPublicKey) or key.key_size < MIN_KEY_BITS:
        raise SignatureError(f"{path} must be an RSA key of at least {MIN_KEY_BITS} bits")
    return key


def load_private_key(path: str | os.PathLike):
    """An unencrypted PKCS#1 RSA private key (``RSA PRIVATE KEY``) of at least 1024 bits."""
    return _load_rsa_key(path, private=True)


def load_public_key(path: str | os.PathLike):
    """A PKCS#1 RSA public key (``RSA PUBLIC KEY``) of at least 1024 bits, as the daemon loads it."""
    return _load_rsa_key(path, private=False)


# ------------------------------------------------------------------------------------ hashing/checksum

def _sha256_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    digest = hashlib.sha256()
    with zf.open(info) as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.digest()


def clean_name(name: str) -> str:
    """Go's ``path.Clean`` of an entry name, which the daemon uses as the checksum key."""
    cleaned = posixpath.normpath(name) if name else "."
    return cleaned[1:] if cleaned.startswith("//") else cleaned


class UnreadableEntry(SignatureError):
    """An entry the daemon's zip reader cannot read as a file: its checksum and signature check both fail."""


def _go_valid_name(name: str) -> str:
    """Go ``archive/zip`` ``toValidName``: the name an entry is found under by ``Reader.Open``."""
    cleaned = clean_name(name.replace("\\", "/"))
    cleaned = cleaned[1:] if cleaned.startswith("/") else cleaned
    while cleaned.startswith("../"):
        cleaned = cleaned[3:]
    return cleaned


def _fs_valid_path(name: str) -> bool:
    """Go ``io/fs.ValidPath``, which ``Reader.Open`` requires of the name it is given."""
    return name == "." or all(part not in ("", ".", "..") for part in name.split("/"))


def daemon_read_plan(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """For each entry in central-directory order, the entry whose bytes the daemon hashes for it.

    ``ZipPluginDecoder.Walk`` visits every entry and ``ReadFile(path.Join(dir, name))`` opens it through Go's
    ``zip.Reader.Open``: by cleaned name, the FIRST entry of a name wins (initFileList), and a name that is a
    directory (a ``name/`` entry, or the parent of another entry) cannot be read. Raises
    :class:`UnreadableEntry` where the daemon's read fails, which makes checksum and verification fail."""
    table: dict[str, zipfile.ZipInfo | None] = {}         # None: a directory
    parents: set[str] = set()
    for info in zf.infolist():
        valid = _go_valid_name(info.filename)
        if valid and valid not in table:
            table[valid] = None if info.filename.endswith("/") else info
            parent = posixpath.dirname(valid)
            while parent:
                parents.add(parent)
                parent = posixpath.dirname(parent)
    plan = []
    for info in zf.infolist():
        name = clean_name(info.filename) if info.filename else ""
        if not _fs_valid_path(name):
            raise UnreadableEntry(f"entry {info.filename!r} is not a path the plugin daemon's zip reader opens")
        target = None if name == "." else table.get(name)            # "." is the root directory
        if target is None:
            what = "a directory" if name == "." or name in table or name in parents else "not found by its name"
            raise UnreadableEntry(f"entry {info.filename!r} is {what} for the plugin daemon's zip reader, which "
                                  f"then fails to read the package (rebuild it without directory entries)")
        plan.append(target)
    return plan


def daemon_digests(zf: zipfile.ZipFile, plan: Sequence[zipfile.ZipInfo] | None = None) -> list[tuple[str, bytes]]:
    """(name, sha256 of what the daemon reads for it) per entry, in central-directory order."""
    cache: dict[int, bytes] = {}
    out = []
    for info, target in zip(zf.infolist(), daemon_read_plan(zf) if plan is None else plan):
        if id(target) not in cache:
            cache[id(target)] = _sha256_member(zf, target)
        out.append((info.filename, cache[id(target)]))
    return out


def checksum_from_digests(digests: Iterable[tuple[str, bytes]]) -> str:
    """The daemon's package checksum (decoder/checksum.go) from (name, content sha256) pairs; a later duplicate
    name wins, and from :func:`daemon_digests` every duplicate carries the first entry's content, as in the daemon."""
    table: dict[bytes, bytes] = {}
    for name, digest in digests:
        table[clean_name(name).encode("utf-8")] = digest
    buffer = b"".join(hashlib.sha256(key).digest() + table[key] for key in sorted(table))
    return hashlib.sha256(buffer).hexdigest()


def open_package(path: str | os.PathLike) -> zipfile.ZipFile:
    """A `.difypkg` opened for reading; a missing, unreadable or non-ZIP file is a :class:`BadInput` naming it."""
    path = Path(path)
    fix = "pass the .difypkg file itself (re-download or re-copy it if it is damaged)"
    if path.is_dir():
        raise BadInput(f"plugin package {path} is a directory, not a .difypkg file", hint=fix)
    try:
        return zipfile.ZipFile(path)
    except OSError as exc:
        raise BadInput(f"cannot read plugin package {path}: {os_reason(exc)}", hint=fix) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise BadInput(f"{path} is not a plugin package: not a readable ZIP archive ({exc}); it is empty, "
                       f"truncated or another kind of file", hint=fix) from None


@contextmanager
def package_errors(path: str | os.PathLike) -> Iterator[None]:
    """A damaged member (bad CRC, truncated deflate stream) read inside the block is a :class:`BadInput`."""
    try:
        yield
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise BadInput(f"{path} is damaged: a member cannot be read ({exc})",
                       hint="re-download or re-copy the package") from None


def package_checksum(path: str | os.PathLike) -> str:
    """The checksum of a `.difypkg` (over all entries, including the verification file, not the comment)."""
    with open_package(path) as zf, package_errors(path):
        try:
            return checksum_from_digests(daemon_digests(zf))
        except UnreadableEntry as exc:
            raise BadInput(f"{path}: {exc}", hint="repackage it with `invoke repackage`") from None


def identifier(author: str, name: str, version: str, checksum: str) -> str:
    """``author/name:version@checksum`` (or ``name:version@checksum`` without author), as the daemon builds it."""
    ident = f"{author}/{name}:{version}@{checksum}" if author else f"{name}:{version}@{checksum}"
    if not IDENTIFIER_RE.match(ident):
        raise AirgapError(f"plugin identifier {ident!r} is not accepted by the plugin daemon; check manifest.yaml "
                          f"author ([a-z0-9_-]), name ([a-z0-9_-]) and version (x.y.z[-suffix])")
    return ident


def signing_message(digests: Sequence[bytes], signed_at: int) -> bytes:
    """Concatenated entry sha256 digests (central-directory order), then the decimal time."""
    return b"".join(digests) + str(int(signed_at)).encode("ascii")


# ------------------------------------------------------------------------------------------ writing

@dataclass
class WrittenPackage:
    path: Path
    checksum: str
    sha256: str
    compressed_size: int
    uncompressed_size: int
    entries: int
    signed: bool
    signed_at: int | None = None


def _category_json(category: str) -> bytes:
    if category not in CATEGORIES:
        raise SignatureError(f"authorized category {category!r} is not one of {', '.join(CATEGORIES)}")
    return json.dumps({"authorized_category": category}, separators=(",", ":")).encode()


def file_sha256(path: Path) -> str:

    return sha256_file(path)


def write_package(out_path: str | os.PathLike, entries: Iterable[tuple[str, Source]], *, sign_key=None,
                  category: str = DEFAULT_CATEGORY, signed_at: int | None = None) -> WrittenPackage:
    """Write a `.difypkg`: deflated files, no directory entries, then (when signing) the verification file
    last and the signature comment. ``entries`` are (name, file path or bytes); an old verification file
    among them is dropped. The file appears at ``out_path`` only when complete."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    entries = [(name, src) for name, src in entries if name != VERIFICATION_FILE]
    if sign_key is not None:
        entries.append((VERIFICATION_FILE, _category_json(category)))
    seen: set[str] = set()
    digests: list[tuple[str, bytes]] = []
    uncompressed = 0
    fd, tmp_name = tempfile.mkstemp(prefix=".partial-", suffix=".difypkg", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for name, src in entries:
                if name.endswith("/") or clean_name(name) != name or name.startswith(("/", "../")) or "\\" in name:
                    raise AirgapError(f"refusing to write entry {name!r}: package entries must be clean relative "
                                      f"file paths")
                if name in seen:
                    raise AirgapError(f"refusing to write entry {name!r} twice")
                seen.add(name)
                info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (0o100644 << 16)
                info.create_system = 3
                digest = hashlib.sha256()
                with zf.open(info, "w") as dst:
                    if isinstance(src, (bytes, bytearray)):
                        dst.write(src)
                        digest.update(src)
                        uncompressed += len(src)
                    else:
                        with open(src, "rb") as fh:
                            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                                dst.write(chunk)
                                digest.update(chunk)
                                uncompressed += len(chunk)
                digests.append((name, digest.digest()))
            signed_time = None
            if sign_key is not None:
                signed_time = int(_time.time()) if signed_at is None else int(signed_at)
                message = signing_message([d for _, d in digests], signed_time)
                signature = sign_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
                zf.comment = json.dumps({"signature": base64.b64encode(signature).decode("ascii"),
                                         "time": signed_time}, separators=(",", ":")).encode()
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return WrittenPackage(path=out_path, checksum=checksum_from_digests(digests), sha256=file_sha256(out_path),
                          compressed_size=out_path.stat().st_size, uncompressed_size=uncompressed,
                          entries=len(digests), signed=sign_key is not None, signed_at=signed_time)


def sign_package(path: str | os.PathLike, key_path: str | os.PathLike, out: str | os.PathLike | None = None, *,
                 category: str = DEFAULT_CATEGORY, signed_at: int | None = None) -> WrittenPackage:
    """(Re-)sign an existing `.difypkg` with a site key: entries are rewritten in order, an old
    verification file is replaced by a new one written last."""
    key = load_private_key(key_path)
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="dal-sign-") as tmp, open_package(path) as zf, package_errors(path):
        entries: list[tuple[str, Source]] = []
        for i, info in enumerate(check_members(zf, path.name)):  # names, links, declared sizes
            target = Path(tmp) / f"{i:06d}"
            with zf.open(info) as src, open(target, "xb") as dst:
                copy_capped(src, dst, info.file_size, info.filename, path.name, UnsafeArchive)  # actual sizes
            entries.append((info.filename, target))
        return write_package(out or path, entries, sign_key=key, category=category, signed_at=signed_at)


# -------------------------------------------------------------------------------------- verification

@dataclass
class Verification:
    path: Path
    signed: bool
    verified: bool
    reason: str
    signed_at: int | None = None
    category: str | None = None
    key: Path | None = None
    checksum: str = ""

    def to_dict(self) -> dict:
        return {k: str(v) if v is not None else None for k, v in self.__dict__.items()}

    def render(self) -> str:
        line = f"{self.path}: {'VERIFIED' if self.verified else 'NOT VERIFIED'}: {self.reason}"
        if self.verified:
            line += f"\n  signed at {self.signed_at}, category {self.category}, checksum {self.checksum}"
        return line


class _Pairs(list):
    """A JSON object as its (key, value) pairs, in order (duplicate keys kept)."""


def _go_json(data: bytes, fields: dict[str, type], what: str) -> dict:
    """``data`` decoded as Go's ``json.Unmarshal`` fills a struct with ``fields``: keys match
    case-insensitively, the last match wins, null or a missing key leaves the zero value, invalid UTF-8 is
    replaced, a value of another type is an error (``ValueError``)."""
    doc = json.loads(data.decode("utf-8", "replace"), object_pairs_hook=_Pairs)
    values = {name: kind() for name, kind in fields.items()}
    if doc is None:
        return values
    if not isinstance(doc, _Pairs):
        raise ValueError(f"{what} is not a JSON object")
    for key, value in doc:
        name = next((n for n in fields if key.casefold() == n), None)
        if name is None or value is None:
            continue
        kind = fields[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{what}: {key!r} is not a {kind.__name__}")
        if kind is int and not -(1 << 63) <= value < (1 << 63):
            raise ValueError(f"{what}: {key!r} does not fit an int64")
        values[name] = value
    return values


def read_signature(zf: zipfile.ZipFile, path: Path) -> tuple[bytes, int] | None:
    """(signature bytes, time) from the ZIP comment, None when unsigned; decoded as ``ZipPluginDecoder.decode``
    does (a missing time is 0, a missing signature is empty and verifies with no key)."""
    if not zf.comment:
        return None
    try:
        doc = _go_json(zf.comment, {"signature": str, "time": int}, "the comment")
        # Go's base64.StdEncoding skips \r and \n; anything else outside the alphabet is an error.
        signature = base64.b64decode(doc["signature"].replace("\r", "").replace("\n", ""), validate=True)
    except (ValueError, RecursionError) as exc:
        raise SignatureError(f"{path}: the ZIP comment is not a Dify signature ({exc}); re-sign the package "
                             f"with `invoke repackage --sign-key`") from None
    return signature, doc["time"]


def _category(zf: zipfile.ZipFile, plan: Sequence[zipfile.ZipInfo]) -> str:
    """The authorized category, as the daemon reads it: no verification file means "langgenius"
    (PreparePackage's DefaultVerification); a malformed one fails decode(), hence verification (ValueError)."""
    entry = next((info for info in plan if _go_valid_name(info.filename) == VERIFICATION_FILE), None)
    if entry is None:
        return "langgenius"
    with zf.open(entry) as fh:
        data = fh.read(MAX_VERIFICATION_FILE + 1)      # the daemon reads it whole; a real one is ~40 bytes
    if len(data) > MAX_VERIFICATION_FILE:
        raise ValueError(f"larger than {MAX_VERIFICATION_FILE} bytes")
    return _go_json(data, {"authorized_category": str}, VERIFICATION_FILE)["authorized_category"]


def verify_package(path: str | os.PathLike, public_keys: Sequence[str | os.PathLike]) -> Verification:
    """Verify a package against the given public keys the way the daemon does (any key verifying is enough):
    ``VerifyPluginWithPublicKeys`` (pkg/plugin_packager/decoder/verifier.go, same at 0.5.2 and 0.6.x)."""
    path = Path(path)
    keys = [(Path(k), load_public_key(k)) for k in public_keys]
    with open_package(path) as zf, package_errors(path):
        found = read_signature(zf, path)
        try:
            plan = daemon_read_plan(zf)
        except UnreadableEntry as exc:
            return Verification(path, found is not None, False, str(exc), found[1] if found else None)
        digests = daemon_digests(zf, plan)
        checksum = checksum_from_digests(digests)
        if found is None:
            return Verification(path, False, False, "unsigned: the ZIP comment is empty", checksum=checksum)
        signature, signed_at = found
        message = signing_message([d for _, d in digests], signed_at)
        for key_path, key in keys:
            try:
                key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                continue
            try:   # the daemon parses it before checking any key (decode()); the outcome is the same
                category = _category(zf, plan)
            except (ValueError, RecursionError) as exc:
                return Verification(path, True, False, f"{VERIFICATION_FILE} is malformed ({exc}): the daemon "
                                    f"then verifies nothing", signed_at, checksum=checksum)
            return Verification(path, True, True, f"signature verifies with {key_path}", signed_at, category,
                                key_path, checksum)
    names = ", ".join(str(k) for k, _ in keys) or "no keys given"
    return Verification(path, True, False, f"signature does not verify with {names} (content changed after "
                        f"signing, or signed with another key)", signed_at, checksum=checksum)
