"""The bundle manifest: what a bundle holds, with checksums; and `invoke verify` / `invoke inspect`.

A bundle is a directory::

    dify-1.11.3-airgap-amd64/
      manifest.json          format version, versions, platform, profiles, images, parts, files
      SHA256SUMS             every other file, for `sha256sum -c SHA256SUMS`
      images.tar.zst         ONE `save` of all images, compressed (or images.tar.zst.part-000, ...)
      docker/                the whole Dify docker/ directory of that version
      toolkit/               this toolkit (tasks.py, scripts/, env-templates/, compose-overrides/)
      wheels/                the toolkit's dependencies and podman-compose for the target Python
      install.sh             bootstraps the toolkit offline (python3 -m venv + pip --no-index)
      manifest.json.sig      with `bundle --sign-key`: the detached signature of manifest.json (bundle/signature.py)

:func:`verify` is strict: besides every listed file matching, the directory holds NOTHING the manifest does not
list (a planted file, directory or symlink is named), except the few entries in :data:`OWN_FILES` and the venv
``sh install.sh`` makes (:data:`INSTALL_VENV`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import zstandard

from scripts.core.console import NoProgress, human_size, progress, table
from scripts.core.errors import AirgapError, BadInput
from scripts.core.files import HASH_CHUNK, sha256_file
from scripts.core.inputs import check_shape, read_json

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
SIGNATURE = "manifest.json.sig"
#: What a bundle directory holds beside the files its manifest lists: the manifest, SHA256SUMS (which lists the
#: manifest's own hash) and the detached signature (written after the manifest, so the manifest cannot list it).
#: Inside a directory unpacked by :func:`scripts.bundle.archive.materialize` (written last, never listed): only
#: such a directory is ever replaced by a later unpack.
UNPACKED_MARKER = ".dify-airgap-unpacked"
OWN_FILES = (MANIFEST, SUMS, SIGNATURE, UNPACKED_MARKER)
#: The venv `sh install.sh` makes next to itself (a directory with pyvenv.cfg): made on the air-gapped host AFTER
#: the bundle, so never listed. install.sh re-creates it with --clear, install and push read nothing from it.
INSTALL_VENV = ".venv"
#: Problem kinds that say "not the bundle you trust" rather than "damaged in transit" (bundle/signature.py)
TRUST_PROBLEMS = ("digest", "unsigned", "bad signature", "unreadable")


def manifest_digest(raw: bytes) -> str:
    """THE bundle digest: ``sha256:<hex>`` of the exact manifest.json bytes (which pin every file)."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def file_entry(root: Path, path: Path) -> dict:
    return {"path": path.relative_to(root).as_posix(), "size": path.stat().st_size, "sha256": sha256_file(path)}


def walk_files(root: Path, skip: tuple[str, ...] = (MANIFEST, SUMS)) -> list[Path]:
    """Every regular file below ``root`` (sorted), except the manifest and SHA256SUMS themselves."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel in skip or path.is_symlink():
                continue
            found.append(path)
    return found


def write_sums(root: Path, entries: list[dict]) -> None:
    """SHA256SUMS in the format `sha256sum -c` reads (two spaces, relative paths)."""
    lines = [f"{e['sha256']}  {e['path']}" for e in entries]
    lines.append(f"{sha256_file(root / MANIFEST)}  {MANIFEST}")
    (root / SUMS).write_text("\n".join(lines) + "\n")


def find_bundle_dir(path: str | os.PathLike) -> Path:
    """The bundle directory from a directory, its manifest, or any file/part inside it."""
    p = Path(path).expanduser()
    if not p.exists():
        raise BadInput(f"{p} does not exist; pass the bundle directory (the one holding {MANIFEST})")
    candidate = p if p.is_dir() else p.parent
    for directory in (candidate, *candidate.parents):
        if (directory / MANIFEST).is_file():
            return directory
        if directory == candidate.parent:
            break
    raise BadInput(f"no {MANIFEST} at {candidate}: this is not a dify-airgap bundle "
                      f"(or its manifest was not copied; re-copy the whole bundle directory)")


ENTRY = {"path": str, "size": int, "sha256": str}
#: what every manifest (bundle, snapshot, backup) holds
BASE_SCHEMA = {"format_version": int, "files": [ENTRY]}
#: a bundle's manifest: what verify, inspect, push, preflight and install read
BUNDLE_SCHEMA = {
    **BASE_SCHEMA, "dify_version": str, "platform": str, "created": str, "toolkit_version": str, "runtime": str,
    "profiles": [str], "vector_stores": [str],
    "images": [{"ref": str, "architecture": str, "size": int, "services": [str], "?id": (str, type(None))}],
    "image_archive": {"compression": str, "size": int, "parts": [ENTRY], "?uncompressed_size": int},
    "?plugins": [{"identifier": str, "size": int}], "?wheels": [str], "?chunk_size": (int, type(None)),
    "?mode": str,  # full (absent in bundles made before it existed) or middleware
    "?delta": {"base": {"kind": str, "source": str, "digest": str, "dify_version": str}, "kept_images": [str],
               "placeholder_layers": [str], "required_chains": dict, "bytes_left_out": int, "layer_level": bool},
}
RECOPY = "re-copy it from the source medium (or re-make it with the toolkit version that made it)"


def check_manifest(data: object, where: str | os.PathLike, schema: dict | None = None) -> dict:
    """``data`` as a manifest of this format with ``schema``'s keys (default: a bundle's); else :class:`BadInput`."""
    check_shape(data, {"format_version": int}, str(where), RECOPY)
    if data["format_version"] != FORMAT_VERSION:
        raise BadInput(f"{where}: format version {data['format_version']!r} is not {FORMAT_VERSION}; use the "
                       f"toolkit version that made it ({data.get('toolkit_version', 'unknown')})")
    schema = BUNDLE_SCHEMA if schema is None else schema
    if schema is BUNDLE_SCHEMA and data.get("kind"):
        raise BadInput(f"{where} belongs to a {data['kind']}, not a bundle",
                       hint="pass the bundle directory (or its archive)")
    check_shape(data, schema, str(where), RECOPY)
    if schema is BUNDLE_SCHEMA and not data["image_archive"]["parts"]:
        raise BadInput(f"{where}: image_archive.parts is empty", hint=RECOPY)
    return data


def load_manifest(bundle: Path, schema: dict | None = None) -> dict:
    """The manifest.json of a bundle (or, with ``schema``, of a snapshot/backup), checked for its shape."""
    path = bundle / MANIFEST
    return check_manifest(read_json(path, "manifest", RECOPY), path, schema)


@dataclass
class Problem:
    path: str
    # missing | truncated | corrupted | unexpected | inconsistent | digest | unsigned | bad signature
    kind: str
    detail: str = ""


@dataclass
class VerifyReport:
    bundle: str
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    digest: str = ""                  # sha256:<hex of manifest.json> (manifest_digest)
    signed: bool = False              # a manifest.json.sig is there
    signer: str | None = None         # fingerprint of the public key it verified with (bundle/signature.py)
    signer_key: str | None = None     # the key file that verified it
    keys: list[str] = field(default_factory=list)     # the public key files tried
    ignored: list[str] = field(default_factory=list)  # unlisted but known entries (INSTALL_VENV)
    delta: str = ""                   # a delta bundle: its base (delta_line)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok}

    def trust_lines(self) -> list[str]:
        """The digest and who signed it, for the operator to compare with what the sender gave them."""
        lines = [f"digest: {self.digest}"] if self.digest else []
        lines += [self.delta] if self.delta else []
        if self.signer:
            lines.append(f"signed: {SIGNATURE} verifies with {self.signer_key} (key {self.signer})")
        elif self.signed and self.keys:
            lines.append(f"signed: {SIGNATURE} present, but it verifies with none of: {', '.join(self.keys)}")
        elif self.signed:
            lines.append(f"signed: {SIGNATURE} present, not checked (pass --public-key SITE.public.pem)")
        elif self.digest:
            lines.append(f"signed: no ({SIGNATURE} absent)")
        return lines

    def render(self) -> str:
        notes = [f"ignored: {i}" for i in self.ignored]
        if self.ok:
            return "\n".join([f"OK: {self.checked} files and parts match {MANIFEST} in {self.bundle}",
                              *self.trust_lines(), *notes])
        rows = [[p.path, p.kind, p.detail] for p in self.problems]
        hint = ("re-copy the named files or parts from the source medium (remove anything unexpected), "
                "then verify again")
        if any(p.kind in TRUST_PROBLEMS for p in self.problems):
            hint = ("do NOT install it: this is not the bundle that was signed or announced. Compare the digest "
                    "and key fingerprint with the sender's (by phone or on paper: docs/security.md)")
        return "\n".join([f"FAILED: {len(self.problems)} problem(s) in {self.bundle}",
                          table(["file", "problem", "detail"], rows), *self.trust_lines(), *notes, hint])


def verify(path: str | os.PathLike, deep: bool = True, allowed: tuple[str, ...] = (),
           schema: dict | None = None) -> VerifyReport:
    """Check every part and file against the manifest, the manifest against itself, and that the directory
    holds nothing else (``allowed``: more top-level names the caller writes after the manifest, e.g. COMPLETE).

    A bundle DIRECTORY (or with ``schema`` a snapshot/backup); :func:`scripts.bundle.archive.verify` also takes
    the archive form.
    """
    bundle = find_bundle_dir(path)
    manifest = load_manifest(bundle, schema)
    report = VerifyReport(str(bundle), digest=manifest_digest((bundle / MANIFEST).read_bytes()),
                          signed=(bundle / SIGNATURE).is_file(),
                          delta=delta_line(manifest["delta"]) if manifest.get("delta") else "")
    entries = list(manifest.get("files", []))
    listed = {e["path"] for e in entries}
    report.problems += consistency(manifest, listed)
    # only a deep verify reads the files (a shallow one stats them: no bar, no heartbeat thread)
    with progress(sum(e.get("size", 0) for e in entries), f"verify {bundle.name}") if deep else NoProgress() as bar:
        for entry in entries:
            report.checked += 1
            problem = _check_file(bundle, entry, deep, bar)
            if problem:
                report.problems.append(problem)
    unexpected, report.ignored = unlisted(bundle, listed, allowed)
    report.problems += unexpected
    return report


def consistency(manifest: dict, listed: set[str]) -> list[Problem]:
    """The manifest against itself: parts listed as files, part sizes adding up, no image twice."""
    problems = []
    archive = manifest.get("image_archive", {})
    parts = archive.get("parts", [])
    for part in parts:
        if part["path"] not in listed:
            problems.append(Problem(part["path"], "inconsistent", "part is not listed in files"))
    if parts and sum(p["size"] for p in parts) != archive.get("size"):
        problems.append(Problem(MANIFEST, "inconsistent", "part sizes do not add up to the archive size"))
    refs = [img["ref"] for img in manifest.get("images", [])]
    if len(refs) != len(set(refs)):
        problems.append(Problem(MANIFEST, "inconsistent", "an image is listed twice"))
    return problems


def _check_file(bundle: Path, entry: dict, deep: bool, bar=None) -> Problem | None:
    target = bundle / entry["path"]
    if target.is_symlink():
        return None  # named by unlisted(): a bundle holds regular files only
    if not target.is_file():
        return Problem(entry["path"], "missing")
    size = target.stat().st_size
    if size != entry["size"]:
        kind = "truncated" if size < entry["size"] else "corrupted"
        return Problem(entry["path"], kind, f"{size} bytes, expected {entry['size']}")
    if deep and sha256_file(target, bar) != entry["sha256"]:
        return Problem(entry["path"], "corrupted", "sha256 differs")
    return None


def unlisted(root: Path, listed: set[str], allowed: tuple[str, ...] = ()) -> tuple[list[Problem], list[str]]:
    """``(problems, ignored)``: every file, directory and symlink below ``root`` the manifest does not list.

    Symlinks are named even when listed (a bundle holds regular files only), an unlisted directory once (not
    its content). Top-level :data:`OWN_FILES` and ``allowed`` are expected; :data:`INSTALL_VENV` is ignored.
    """
    dirs = {parent.as_posix() for rel in listed for parent in PurePosixPath(rel).parents} - {"."}
    own = set(OWN_FILES) | set(allowed)
    problems: list[Problem] = []
    ignored: list[str] = []
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        with os.scandir(root / rel_dir) as scan:
            found = sorted(scan, key=lambda e: e.name)
        for entry in found:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_symlink():
                problems.append(Problem(rel, "unexpected", f"symlink to {os.readlink(entry.path)}: a bundle "
                                                           f"holds regular files only"))
            elif entry.is_dir():
                if rel in dirs:
                    pending.append(rel)
                elif rel == INSTALL_VENV and (Path(entry.path) / "pyvenv.cfg").is_file():
                    ignored.append(f"{rel}/ (the venv install.sh made; nothing is read from it)")
                else:
                    problems.append(Problem(f"{rel}/", "unexpected", f"directory not listed in {MANIFEST}"))
            elif not entry.is_file():
                problems.append(Problem(rel, "unexpected", "a device, FIFO or socket: not listed in " + MANIFEST))
            elif rel not in listed and not (rel_dir == "" and rel in own):
                what = "image part" if rel_dir == "" and rel.startswith("images.") else "file"
                problems.append(Problem(rel, "unexpected", f"{what} not listed in {MANIFEST}"))
    problems.sort(key=lambda p: p.path)
    return problems, ignored


def summary(manifest: dict) -> dict:
    """The manifest without its per-file list (what ``inspect --json`` prints)."""
    return {k: v for k, v in manifest.items() if k != "files"}


def delta_line(data: dict) -> str:
    """What ``inspect`` and ``verify`` say of a delta bundle's base."""
    base = data["base"]
    return (f"DELTA bundle: cut against the {base['kind']} {base['source']} ({base['digest']}, Dify "
            f"{base['dify_version'] or 'not recorded'}); {len(data['kept_images'])} image(s) and "
            f"{len(data['placeholder_layers'])} layer(s) left out: the target must hold them (install checks)")


def inspect_text(manifest: dict) -> str:
    """What is inside a bundle, from its manifest alone (nothing is unpacked)."""
    archive = manifest["image_archive"]
    lines = [
        f"Dify {manifest['dify_version']} bundle for {manifest['platform']}, made {manifest['created']} "
        f"by dify-airgap {manifest['toolkit_version']} ({manifest['runtime']})",
        f"profiles: {', '.join(manifest['profiles'])}; vector stores: {', '.join(manifest['vector_stores'])}"
        + (f"; mode {manifest['mode']} (install runs docker-compose.middleware.yaml)"
           if manifest.get("mode", "full") != "full" else ""),
        *([delta_line(manifest["delta"])] if manifest.get("delta") else []),
        f"images: {len(manifest['images'])}, archive {human_size(archive['size'])} ({archive['compression']}, "
        f"{len(archive['parts'])} part(s)), unpacked {human_size(sum(i['size'] for i in manifest['images']))}",
        "",
        table(["image", "arch", "size", "services"],
              [[i["ref"], i["architecture"], human_size(i["size"]), ", ".join(i["services"])]
               for i in manifest["images"]]),
    ]
    if manifest.get("plugins"):
        lines += ["", table(["plugin", "size"], [[p["identifier"], human_size(p["size"])]
                                                 for p in manifest["plugins"]])]
    lines += ["", f"target python for wheels: {manifest.get('target_python')}",
              f"files: {len(manifest['files'])}"]
    return "\n".join(lines)


class PartsReader:
    """Read the image archive's parts as one stream (a file-like ``read``), in order."""

    def __init__(self, bundle: Path, parts: list[dict]) -> None:
        self._paths = [bundle / p["path"] for p in parts]
        self._fh = None

    def read(self, size: int = -1) -> bytes:
        while True:
            if self._fh is None:
                if not self._paths:
                    return b""
                self._fh = open(self._paths.pop(0), "rb")
            data = self._fh.read(size)
            if data or size == 0:
                return data
            self._fh.close()
            self._fh = None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def image_stream(bundle: Path, manifest: dict):
    """The decompressed ``docker-archive`` tar as a readable stream (nothing written to disk)."""
    archive = manifest["image_archive"]
    raw = PartsReader(bundle, archive["parts"])
    if archive["compression"] == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_size=HASH_CHUNK)

    return gzip.GzipFile(fileobj=raw, mode="rb")


def archive_index(bundle: Path, manifest: dict) -> list[dict]:
    """The docker-archive's own index (``manifest.json`` inside the tar): Config and RepoTags per image."""
    with image_stream(bundle, manifest) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.name == "manifest.json":
                return json.loads(tar.extractfile(member).read())
    raise AirgapError(f"the image archive in {bundle} has no manifest.json: it is not a docker-archive")
