"""A snapshot or backup comes from another host: its manifest and archives are checked before anything
is read through them or written from them (docs/hostile-inputs.md).

- every file the manifest lists is a plain file name in the snapshot/backup directory (no ``/``, no ``..``,
  no absolute path), a regular file and not a link, so nothing outside it is hashed, read or copied;
- every archive and dump names only listed files, and declares its uncompressed size (the stream is cut there);
- a restore target is ``.``, ``volumes/NAME`` (one plain name) or ``../compose-overrides`` with an install
  root, and resolves physically inside the project directory (or install root);
- an archive's members are checked BEFORE GNU tar extracts it as root (:func:`scripts.core.extract.
  check_tar_members`): no device, FIFO, sparse or setuid/setgid file, nothing below a link, no ``..``.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from scripts.core.errors import AirgapError
from scripts.core.extract import CappedReader, check_tar_members, inside

OVERRIDES_TARGET = "../compose-overrides"
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def check_manifest_files(root: Path, manifest: dict, kind: str) -> None:
    """Listed files are plain names of regular files in ``root``; archives and dumps name listed files."""
    listed = set()
    for entry in manifest.get("files") or []:
        name = str(entry.get("path", ""))
        if not _PLAIN_NAME.match(name):
            raise AirgapError(f"{kind} {root}: manifest lists {name!r}, not a plain file name of the {kind} "
                              f"(absolute, with '/' or '..'): refusing it")
        st = os.lstat(root / name) if os.path.lexists(root / name) else None
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise AirgapError(f"{kind} {root}: {name!r} is a link or special file, not a regular file: refusing it")
        listed.add(name)
    for archive in _archives(manifest):
        names = [archive.get("path"), *(p.get("path") for p in archive.get("parts") or [])]
        unlisted = [n for n in names if n not in listed]
        if unlisted:
            raise AirgapError(f"{kind} {root}: archive {archive.get('path')!r} names {unlisted}, not files listed "
                              f"by its manifest: refusing it")
        if not isinstance(archive.get("uncompressed_size"), int) or archive["uncompressed_size"] < 0:
            raise AirgapError(f"{kind} {root}: archive {archive.get('path')!r} does not declare its uncompressed "
                              f"size: refusing it (made by another tool?)")


def _archives(manifest: dict) -> list[dict]:
    """Every archive or dump a restore decompresses (backup: archives + databases; snapshot: volume + database)."""
    found = [*(manifest.get("archives") or []), *(manifest.get("databases") or [])]
    found += [manifest[k] for k in ("volume", "database") if isinstance(manifest.get(k), dict)]
    return found


def restore_target(project_dir: Path, prefix: Path | None, target: str, what: str) -> Path:
    """Where an archive with manifest ``target`` is restored, refusing anything else than the known shapes
    and anything that resolves (physically) outside the project directory / install root."""
    parts = target.split("/")
    if target == ".":
        dest, base = project_dir, project_dir
    elif len(parts) == 2 and parts[0] == "volumes" and _PLAIN_NAME.match(parts[1]):
        dest, base = project_dir / "volumes" / parts[1], project_dir
    elif target == OVERRIDES_TARGET and prefix is not None:
        dest, base = prefix / "compose-overrides", prefix
    else:
        raise AirgapError(f"{what}: restore target {target!r} is not '.', 'volumes/NAME' or "
                          f"{OVERRIDES_TARGET!r} (with --prefix): refusing it")
    real_base = os.path.realpath(base)
    if not inside(real_base, os.path.realpath(dest)):
        raise AirgapError(f"{what}: restore target {target!r} resolves to {os.path.realpath(dest)}, outside "
                          f"{real_base} (through a link): refusing it")
    return dest


def capped(stream, entry: dict) -> CappedReader:
    """The decompressed stream of ``entry``, cut (refused) beyond its declared uncompressed size."""
    return CappedReader(stream, int(entry["uncompressed_size"]), entry["path"])


def check_members(stream, dest: Path, entry: dict, names: list[str] | None = None) -> int:
    """Read the archive's tar headers (nothing written) and refuse what must not be extracted as root; the
    names of its files (regular files and hard links) are appended to ``names`` when given."""
    where = entry["path"]
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            members = tar if names is None else _recording(tar, names)
            return check_tar_members(members, dest, where, int(entry["uncompressed_size"]))
    except tarfile.TarError as exc:
        raise AirgapError(f"{where} is not a readable tar archive ({exc}): refusing it") from None


def _recording(members: Iterable[tarfile.TarInfo], names: list[str]) -> Iterator[tarfile.TarInfo]:
    for member in members:
        if member.isfile() or member.islnk():
            names.append(member.name)
        yield member
