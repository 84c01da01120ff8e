"""The bundle as ONE file: ``dify-<ver>-airgap-<arch>.tar`` (or ``.tar.part-NNN`` parts), and back.

Design: a plain (uncompressed) POSIX tar whose members are the bundle's files, in this order:
``NAME/manifest.json`` first, then ``NAME/manifest.json.sig`` when the bundle is signed, then
``NAME/SHA256SUMS``, then the small files a preflight reads (``docker/``, ``env-templates/``,
``compose-overrides/``), then every other file the manifest lists, in the manifest's order. The images inside are
already compressed, so the tar adds nothing but headers. Because the manifest (and its signature:
:func:`read_head`) comes first, the archive is checked and inspected as a STREAM, member by member
(sha256 against the manifest), without unpacking anything. With ``--chunk-size`` the tar itself is
cut into ``NAME.tar.part-000, -001, ...`` (``cat NAME.tar.part-* > NAME.tar`` gives the plain tar back),
and ``NAME.tar.SHA256SUMS`` next to it lists every archive file for ``sha256sum -c``, so a bad part
is named and can be re-copied alone.

:func:`materialize` turns an archive into a bundle directory (safe extraction: no absolute paths,
no ``..``, no links or devices, declared sizes checked against the manifest, every file hashed against the
manifest while it is written; an existing directory it did not make is never replaced), or returns the
directory itself when given one. Install and push call it. :func:`planning_view` gives the small files
(manifest, ``docker/``, env-templates, compose-overrides) of an archive for a preflight or a dry run, in a
temporary directory, without unpacking the images.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from scripts.bundle.manifest import (
    MANIFEST,
    SIGNATURE,
    SUMS,
    UNPACKED_MARKER,
    Problem,
    VerifyReport,
    check_manifest,
    delta_line,
    find_bundle_dir,
    load_manifest,
    manifest_digest,
)
from scripts.bundle.manifest import verify as verify_directory
from scripts.core.console import LOG, human_size
from scripts.core.errors import AirgapError, BadInput
from scripts.core.extract import SafeTree
from scripts.core.files import PartWriter, sha256_file
from scripts.core.inputs import parse_json

SUFFIX = ".tar"
SUMS_SUFFIX = ".SHA256SUMS"
_PART = re.compile(r"^(?P<stem>.+\.tar)\.part-(?P<n>\d{3,})$")
READ_CHUNK = 1 << 20
SIGNATURE_MAX = 16384  # a 4096-bit RSA signature is 512 bytes: anything much larger is not one
#: A manifest larger than this is refused before it is read (a real one is a few hundred KB).
MAX_MANIFEST_SIZE = 16 << 20
#: What a preflight or a dry-run install reads from a bundle besides its manifest (small files); the archive
#: holds them right after the manifest (and its signature), so reading them never reaches the images.
PLAN_DIRS = ("docker/", "env-templates/", "compose-overrides/")


# --- names ---------------------------------------------------------------------------------------

def archive_name(bundle_name: str) -> str:
    return f"{bundle_name}{SUFFIX}"


def is_archive(path: str | os.PathLike) -> bool:
    """A ``NAME.tar`` or ``NAME.tar.part-NNN`` file that is not itself a file inside a bundle directory."""
    p = Path(path)
    if p.is_dir() or (p.parent / MANIFEST).is_file():
        return False
    return p.name.endswith(SUFFIX) or bool(_PART.match(p.name))


def archive_files(path: str | os.PathLike) -> tuple[Path, list[Path]]:
    """``(stem, files)``: ``X.tar`` -> ``(X.tar, [X.tar])``; ``X.tar.part-001`` -> ``(X.tar, [all parts])``."""
    p = Path(path).expanduser()
    m = _PART.match(p.name)
    if not m:
        if not p.is_file():
            raise AirgapError(f"{p} does not exist; pass the bundle directory or its archive (first part)")
        return p, [p]
    stem = p.with_name(m.group("stem"))
    parts = sorted(stem.parent.glob(f"{stem.name}.part-*"), key=lambda q: int(q.name.rsplit("-", 1)[1]))
    if not parts:
        raise AirgapError(f"no {stem.name}.part-* files next to {p}; copy every part into one directory")
    return stem, parts


def sums_path(stem: Path) -> Path:
    return stem.with_name(stem.name + SUMS_SUFFIX)


def safe_relpath(name: str) -> PurePosixPath:
    """A member name as a relative path, refusing absolute paths and ``..`` (path traversal)."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or name.startswith(("/", "\\")) or ".." in path.parts \
            or re.match(r"^[A-Za-z]:", name):
        raise AirgapError(f"unsafe path {name!r} in the archive (absolute or with '..'): refusing to unpack it; "
                          f"the archive was not made by dify-airgap or was tampered with")
    return PurePosixPath(*[p for p in path.parts if p != "."])


# --- a readable stream over several files, knowing where each byte came from -------------------

class ChainReader:
    """``read`` across files in order; ``part_at(offset)`` names the file holding a byte offset."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.bounds: list[tuple[int, int, Path]] = []
        start = 0
        for path in paths:
            size = path.stat().st_size if path.exists() else 0
            self.bounds.append((start, start + size, path))
            start += size
        self._index = 0
        self._fh = None

    def read(self, size: int = -1) -> bytes:
        while self._index < len(self.paths):
            if self._fh is None:
                self._fh = open(self.paths[self._index], "rb")
            data = self._fh.read(size)
            if data or size == 0:
                return data
            self._fh.close()
            self._fh = None
            self._index += 1
        return b""

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def parts_between(self, start: int, end: int) -> list[str]:
        names = [p.name for lo, hi, p in self.bounds if lo < max(end, start + 1) and hi > start]
        return names or [self.bounds[-1][2].name] if self.bounds else []


def _members(stem: Path, files: list[Path]) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo, ChainReader]]:
    reader = ChainReader(files)
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                yield tar, member, reader
    finally:
        reader.close()


def _split_member(member: tarfile.TarInfo, root: str | None) -> tuple[str, str]:
    rel = safe_relpath(member.name)
    if len(rel.parts) < 1 or (root is not None and rel.parts[0] != root):
        raise AirgapError(f"member {member.name!r} is outside the bundle directory {root!r} in the archive")
    return rel.parts[0], PurePosixPath(*rel.parts[1:]).as_posix() if len(rel.parts) > 1 else ""


def read_manifest(path: str | os.PathLike) -> tuple[dict, str, bytes]:
    """The manifest (first member) of an archive: ``(manifest, bundle name, raw bytes)``; reads only the head."""
    stem, files = archive_files(path)
    try:
        for tar, member, _ in _members(stem, files):
            root, rel = _split_member(member, None)
            if rel != MANIFEST or not member.isfile():
                break
            if member.size > MAX_MANIFEST_SIZE:
                raise BadInput(f"{stem}: member {member.name!r} declares {member.size} bytes, over the "
                               f"{MAX_MANIFEST_SIZE}-byte limit of a manifest: refusing the archive")
            raw = tar.extractfile(member).read(MAX_MANIFEST_SIZE + 1)
            data = parse_json(raw, f"{stem}: the manifest inside", "re-copy the archive")
            return check_manifest(data, f"{stem}: {root}/{MANIFEST}"), root, raw
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BadInput(f"{stem} is not a readable tar archive ({exc or type(exc).__name__}): empty, truncated or "
                       f"not a dify-airgap bundle archive", hint=f"re-copy it (sha256sum -c {sums_path(stem).name} "
                                                                 f"names a damaged part)") from None
    raise BadInput(f"{stem} does not start with NAME/{MANIFEST}: it is not a dify-airgap bundle archive "
                   f"(or its first part is damaged; run sha256sum -c {sums_path(stem).name})")


def read_head(path: str | os.PathLike) -> tuple[dict, str, bytes, bytes | None]:
    """``(manifest, bundle name, manifest bytes, signature bytes or None)``: the archive's first two members only.

    The signature is ``NAME/manifest.json.sig`` as the SECOND member (an unsigned archive has SHA256SUMS there).
    """
    stem, files = archive_files(path)
    data, root, raw = read_manifest(files[0])
    try:
        for index, (tar, member, _) in enumerate(_members(stem, files)):
            if index == 0:
                continue
            if PurePosixPath(member.name).parts != (root, SIGNATURE):  # unsafe names are left to _walk to refuse
                return data, root, raw, None
            if not member.isfile() or member.size > SIGNATURE_MAX:
                raise AirgapError(f"{member.name!r} in {stem.name} is not a signature (a link or special file, or "
                                  f"{member.size} bytes): the archive was tampered with")
            return data, root, raw, tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BadInput(f"{stem} is damaged after its manifest ({exc or type(exc).__name__})",
                       hint=f"re-copy it (sha256sum -c {sums_path(stem).name} names a damaged part)") from None
    return data, root, raw, None


# --- writing -------------------------------------------------------------------------------------

def _tarinfo(path: Path, arcname: str) -> tarfile.TarInfo:
    st = path.stat()
    info = tarfile.TarInfo(arcname)
    info.size, info.mtime = st.st_size, int(st.st_mtime)
    info.mode = 0o755 if st.st_mode & 0o111 else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def member_order(bundle: Path, manifest: dict) -> list[str]:
    """manifest.json, its signature (when signed: read by :func:`read_head`), SHA256SUMS, the small files a
    preflight reads (PLAN_DIRS), then the rest in manifest order: :func:`planning_view` stops before the images."""
    signature = [SIGNATURE] if (bundle / SIGNATURE).is_file() else []
    paths = [e["path"] for e in manifest["files"]]
    return [MANIFEST, *signature, SUMS, *(p for p in paths if p.startswith(PLAN_DIRS)),
            *(p for p in paths if not p.startswith(PLAN_DIRS))]


def write_archive(bundle: Path, output: Path, chunk_size: int | None = None) -> dict:
    """Write ``output/NAME.tar`` (or its parts) and ``NAME.tar.SHA256SUMS``; nothing looks done until done."""

    manifest = load_manifest(bundle)
    name = archive_name(bundle.name)
    staging = output / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        writer = PartWriter(staging, name, chunk_size)
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for rel in member_order(bundle, manifest):
                path = bundle / rel
                with open(path, "rb") as fh:
                    tar.addfile(_tarinfo(path, f"{bundle.name}/{rel}"), fh)
        writer.close()
        (staging / (name + SUMS_SUFFIX)).write_text("".join(f"{p['sha256']}  {p['path']}\n" for p in writer.parts))
        _publish(staging, output, name, [p["path"] for p in writer.parts])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    LOG.info("archive: %s (%s, %d file(s))", output / writer.parts[0]["path"], human_size(writer.size),
             len(writer.parts))
    return {"name": name, "size": writer.size, "parts": writer.parts}


def _publish(staging: Path, output: Path, name: str, parts: list[str]) -> None:
    """Replace an older archive: remove it, move the new parts, its SHA256SUMS, and the FIRST part last."""
    for old in [output / name, *output.glob(f"{name}.part-*"), output / (name + SUMS_SUFFIX)]:
        if old.is_file():
            old.unlink()
    for part in parts[1:]:
        os.replace(staging / part, output / part)
    os.replace(staging / (name + SUMS_SUFFIX), output / (name + SUMS_SUFFIX))
    os.replace(staging / parts[0], output / parts[0])


def archive_up_to_date(bundle: Path, output: Path, chunk_size: int | None) -> bool:
    """Is there a complete archive (sizes, naming) of exactly this bundle (same manifest and signature bytes)?"""
    name = archive_name(bundle.name)
    sums = output / (name + SUMS_SUFFIX)
    if not sums.is_file():
        return False
    listed = [line.split("  ", 1)[1] for line in sums.read_text().splitlines() if "  " in line]
    if not listed or any(not (output / n).is_file() for n in listed):
        return False
    if bool(chunk_size) != listed[0].endswith(".part-000"):
        return False
    if chunk_size and any((output / n).stat().st_size != chunk_size for n in listed[:-1]):
        return False
    try:
        _, _, raw, signature = read_head(output / listed[0])
    except AirgapError:
        return False
    signed = (bundle / SIGNATURE).read_bytes() if (bundle / SIGNATURE).is_file() else None
    return raw == (bundle / MANIFEST).read_bytes() and signature == signed


def ensure_archive(bundle: Path, output: Path, chunk_size: int | None = None) -> Path:
    """The archive of ``bundle`` in ``output``, written unless an identical one is already there."""
    name = archive_name(bundle.name)
    first = output / (f"{name}.part-000" if chunk_size else name)
    if archive_up_to_date(bundle, output, chunk_size):
        LOG.info("archive %s is up to date (same manifest and signature, all parts present): nothing to do",
                 first)
        return first
    write_archive(bundle, output, chunk_size)
    return first


# --- checking and unpacking, as a stream -----------------------------------------------------------

def _check_parts(stem: Path, files: list[Path], report: VerifyReport, deep: bool, chunk_size: int | None) -> bool:
    """Archive files against NAME.tar.SHA256SUMS; returns False when the stream cannot be read whole."""
    whole = True
    numbers = [int(f.name.rsplit("-", 1)[1]) for f in files if _PART.match(f.name)]
    for n in sorted(set(range(max(numbers) + 1)) - set(numbers)) if numbers else []:
        report.problems.append(Problem(f"{stem.name}.part-{n:03d}", "missing"))
        whole = False
    sums = sums_path(stem)
    if not sums.is_file():
        LOG.warning("%s is missing: archive parts are checked through the manifest only", sums.name)
        return whole
    listed = [line.split("  ", 1) for line in sums.read_text().splitlines() if "  " in line]
    present = {f.name for f in files}
    for i, (digest, name) in enumerate(listed):
        report.checked += 1
        target = stem.parent / name
        if name not in present and not target.is_file():
            if not any(p.path == name for p in report.problems):
                report.problems.append(Problem(name, "missing"))
            whole = False
            continue
        size = target.stat().st_size
        if chunk_size and i < len(listed) - 1 and size != chunk_size:
            report.problems.append(Problem(name, "truncated" if size < chunk_size else "corrupted",
                                           f"{size} bytes, expected {chunk_size}"))
            whole = False
        elif deep and sha256_file(target) != digest:
            report.problems.append(Problem(name, "corrupted", "sha256 differs"))
    for extra in sorted(present - {n for _, n in listed}):
        report.problems.append(Problem(extra, "unexpected", f"not listed in {sums.name}"))
    return whole


def _walk(path: str | os.PathLike, on_file) -> tuple[dict, str, VerifyReport]:
    """Stream the archive; ``on_file(rel, member, data_chunks)`` sees each listed file's bytes."""
    stem, files = archive_files(path)
    manifest, root, raw, signature = read_head(files[0])
    report = VerifyReport(str(stem), digest=manifest_digest(raw), signed=signature is not None,
                          delta=delta_line(manifest["delta"]) if manifest.get("delta") else "")
    entries = {e["path"]: e for e in manifest["files"]}
    entries[MANIFEST] = {"path": MANIFEST, "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    if signature is not None:  # the head's signature: checked against keys by bundle/signature.py
        entries[SIGNATURE] = {"path": SIGNATURE, "size": len(signature),
                              "sha256": hashlib.sha256(signature).hexdigest()}
    seen: set[str] = set()
    try:
        for tar, member, reader in _members(stem, files):
            _, rel = _split_member(member, root)
            if member.isdir() and rel == "":
                continue
            if not member.isfile():
                raise AirgapError(f"{member.name!r} in {stem.name} is a link or special file: refusing it "
                                  f"(a dify-airgap archive holds regular files only)")
            where = ", ".join(reader.parts_between(member.offset_data, member.offset_data + member.size))
            entry = entries.get(rel)
            if rel == SUMS:
                sums_text = "".join(f"{e['sha256']}  {e['path']}\n" for e in manifest["files"])
                sums_text += f"{entries[MANIFEST]['sha256']}  {MANIFEST}\n"
                entry = {"path": SUMS, "size": len(sums_text.encode()),
                         "sha256": hashlib.sha256(sums_text.encode()).hexdigest()}
            if entry is None:
                report.problems.append(Problem(rel, "unexpected", f"in {where}, not listed in {MANIFEST}"))
                continue
            seen.add(rel)
            report.checked += 1
            declared = _declared_problem(member, rel, entry, where)
            if declared:
                report.problems.append(declared)
                continue
            digest = hashlib.sha256()
            size = 0
            for block in on_file(rel, member, _chunks(tar, member), entry, where, report):
                digest.update(block)
                size += len(block)
            if size != entry["size"]:
                report.problems.append(Problem(rel, "truncated" if size < entry["size"] else "corrupted",
                                               f"{size} bytes, expected {entry['size']} (in {where})"))
            elif digest.hexdigest() != entry["sha256"]:
                report.problems.append(Problem(rel, "corrupted", f"sha256 differs (in {where})"))
    except (tarfile.TarError, EOFError, OSError) as exc:
        report.problems.append(Problem(files[-1].name if files else str(stem), "truncated",
                                       f"the archive stream ends early or is damaged: {exc}"))
        return manifest, root, report
    for rel in entries:
        if rel not in seen:
            report.problems.append(Problem(rel, "missing", f"not in {stem.name}"))
    return manifest, root, report


def _declared_problem(member: tarfile.TarInfo, rel: str, entry: dict, where: str) -> Problem | None:
    """A member whose header already disagrees with the manifest: nothing of it is read or written."""
    if member.issparse():
        return Problem(rel, "unexpected", f"{member.name!r} is a sparse file in {where}: a dify-airgap archive "
                                          f"holds none (refused unread)")
    if member.size != entry["size"]:
        return Problem(rel, "truncated" if member.size < entry["size"] else "corrupted",
                       f"{member.name!r} declares {member.size} bytes, the manifest {entry['size']} (in {where}; "
                       f"refused unread)")
    return None


def _chunks(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[bytes]:
    fh = tar.extractfile(member)
    return iter(lambda: fh.read(READ_CHUNK), b"")


def verify_archive(path: str | os.PathLike, deep: bool = True) -> VerifyReport:
    """Check the archive's files and every member against the manifest, streaming (nothing unpacked)."""
    stem, files = archive_files(path)
    report = VerifyReport(str(stem))
    try:
        head, _, raw, signature = read_head(files[0])
        chunk_size = head.get("chunk_size")
        report.digest, report.signed = manifest_digest(raw), signature is not None
    except AirgapError as exc:
        head, chunk_size = None, None
        report.problems.append(Problem(files[0].name, "corrupted", str(exc)))
    whole = _check_parts(stem, files, report, deep, chunk_size)
    if head is None or not whole or not deep:
        return report
    _, _, members = _walk(path, lambda rel, member, chunks, entry, where, rep: chunks)
    members.checked += report.checked
    members.problems = report.problems + [p for p in members.problems
                                          if not any(q.path == p.path for q in report.problems)]
    return members


def _reusable(final: Path, raw: bytes) -> bool:
    """Is ``final`` already this bundle, unpacked and complete (same manifest bytes, every file there)?"""
    return (not final.is_symlink() and (final / MANIFEST).is_file() and (final / MANIFEST).read_bytes() == raw
            and verify_directory(final, deep=False).ok)


def unpacked_beside(path: str | os.PathLike) -> Path | None:
    """The directory an earlier unpack of THIS archive left beside it (same manifest, complete), else None."""
    stem, files = archive_files(path)
    _, root, raw = read_manifest(files[0])
    return stem.parent / root if _reusable(stem.parent / root, raw) else None


def _check_replaceable(final: Path, stem: Path) -> None:
    """Only a directory an earlier :func:`materialize` made (its marker inside) may be replaced."""
    if os.path.lexists(final) and (final.is_symlink() or not (final / UNPACKED_MARKER).is_file()):
        raise AirgapError(f"{stem.name} unpacks into {final}, which already exists and was not unpacked by "
                          f"dify-airgap: refusing to replace it. Move it away, or unpack elsewhere (copy the "
                          f"archive into another directory)")


def _unpack(path: str | os.PathLike, stem: Path, staging: Path) -> None:
    """Every listed file into ``staging`` (new files only), hashed against the manifest while written."""
    tree = SafeTree(staging, stem.name)

    def write(rel, member, chunks, entry, where, report):
        mode = 0o755 if member.mode & 0o111 else 0o644
        with tree.open_new(PurePosixPath(rel), member.name, mode) as out:
            for block in chunks:
                out.write(block)
                yield block

    _, _, report = _walk(path, lambda *a: write(*a))
    if not report.ok:
        raise AirgapError(f"cannot unpack {stem.name}:\n{report.render()}")
    (staging / UNPACKED_MARKER).write_text(f"unpacked from {stem.name} by dify-airgap\n")
    staging.chmod(0o755)  # mkdtemp made it 0700; a bundle directory is readable like any other


def _swap_in(staging: Path, final: Path) -> None:
    """``staging`` becomes ``final``; an earlier unpack of ours there is moved aside, then removed."""
    if not os.path.lexists(final):
        staging.rename(final)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
    final.rename(old)  # onto the new, empty directory: atomic on Linux
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def materialize(path: str | os.PathLike, dest_parent: str | os.PathLike | None = None, *,
                dry_run: bool = False) -> Path:
    """A bundle DIRECTORY for ``path``: the directory itself, or the archive unpacked into ``dest_parent``.

    Unpacking is safe (regular files only, no absolute paths or ``..``, nothing written through a link,
    declared sizes checked against the manifest before a byte is written) and checked: every file is hashed
    against the manifest as it is written, into a new ``.NAME.*.partial`` directory renamed only when all
    match, and removed on any failure. An identical bundle already unpacked there (same manifest) is reused;
    an existing ``NAME`` is replaced only if an earlier unpack made it (docs/hostile-inputs.md).
    """
    if not is_archive(path):
        return find_bundle_dir(path)
    stem, files = archive_files(path)
    manifest, root, raw = read_manifest(files[0])
    parent = Path(dest_parent).expanduser() if dest_parent else stem.parent
    final = parent / root
    if _reusable(final, raw):
        LOG.info("%s is already unpacked at %s: reused", stem.name, final)
        return final
    _check_replaceable(final, stem)
    if dry_run:
        print(f"[dry-run] would unpack {stem} into {final}")
        return final
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root}.", suffix=".partial", dir=parent))
    LOG.info("unpacking %s into %s", stem.name, final)
    try:
        _unpack(path, stem, staging)
        _check_replaceable(final, stem)
        _swap_in(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    load_manifest(final)
    return final


def _unpack_small(stem: Path, files: list[Path], manifest: dict, raw: bytes, view: Path) -> None:
    """The manifest and the files under PLAN_DIRS into ``view``, each checked; stops after the last one."""
    tree = SafeTree(view, stem.name)
    with tree.open_new(PurePosixPath(MANIFEST), MANIFEST) as out:
        out.write(raw)
    wanted = {e["path"]: e for e in manifest["files"] if e["path"].startswith(PLAN_DIRS)}
    root = view.name
    for tar, member, _ in _members(stem, files) if wanted else ():
        _, rel = _split_member(member, root)
        entry = wanted.pop(rel, None)
        if entry is None:
            continue
        problem = _declared_problem(member, rel, entry, stem.name) if member.isfile() else \
            Problem(rel, "unexpected", "not a regular file")
        digest = hashlib.sha256()
        if problem is None:
            with tree.open_new(PurePosixPath(rel), member.name) as out:
                for block in _chunks(tar, member):
                    digest.update(block)
                    out.write(block)
        if problem or digest.hexdigest() != entry["sha256"]:
            raise AirgapError(f"{stem.name}: {rel} {problem.detail if problem else 'sha256 differs'}; run "
                              f"`invoke verify {stem}` and re-copy the archive")
        if not wanted:
            break  # the images (and wheels) come later: never read
    if wanted:
        raise AirgapError(f"{stem.name}: {', '.join(sorted(wanted)[:5])} missing from the archive; run "
                          f"`invoke verify {stem}`")


@contextmanager
def planning_view(path: str | os.PathLike) -> Iterator[Path]:
    """A bundle directory to PLAN from (preflight, dry-run install), never unpacking the images.

    A directory is itself; an archive already unpacked beside it (same manifest) is that directory; any other
    archive gives a temporary ``NAME/`` holding its manifest and the files under PLAN_DIRS (docker/,
    env-templates/, compose-overrides/), each hashed against the manifest, removed afterwards. The archive is
    read only up to the last of those files (:func:`member_order` puts them first; an archive made before
    that is read through, but still nothing else is written).
    """
    if not is_archive(path):
        yield find_bundle_dir(path)
        return
    stem, files = archive_files(path)
    manifest, root, raw = read_manifest(files[0])
    if _reusable(stem.parent / root, raw):
        yield stem.parent / root
        return
    with tempfile.TemporaryDirectory(prefix="dal-plan-") as tmp:
        view = Path(tmp) / root
        try:
            _unpack_small(stem, files, manifest, raw, view)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BadInput(f"{stem} is damaged after its manifest ({exc or type(exc).__name__})",
                           hint=f"run `invoke verify {stem}`; re-copy it (sha256sum -c {sums_path(stem).name} "
                                f"names a damaged part)") from None
        yield view


def verify(path: str | os.PathLike, deep: bool = True) -> VerifyReport:
    """A bundle in either form: its directory, or its archive (``NAME.tar`` or its first part, read as a stream)."""
    return verify_archive(path, deep) if is_archive(path) else verify_directory(path, deep)
