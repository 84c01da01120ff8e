"""The directory format backups and snapshots share: a ``.NAME.partial`` staging directory renamed to ``NAME``
with a COMPLETE marker, a manifest.json + SHA256SUMS over every file, zstd-compressed tar archives of
directories and command output (database dumps) written as parts and hashed while written, and their checked
extraction (every member checked by :mod:`scripts.data.untrusted` before tar runs, then ``tar --compare``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import zstandard

from scripts import __version__
from scripts.bundle.manifest import (
    BASE_SCHEMA,
    ENTRY,
    FORMAT_VERSION,
    MANIFEST,
    PartsReader,
    file_entry,
    load_manifest,
    verify,
    walk_files,
    write_sums,
)
from scripts.core.console import LOG, Counted, progress
from scripts.core.errors import AirgapError, BadInput
from scripts.core.files import PartWriter
from scripts.core.inputs import check_shape
from scripts.data import untrusted
from scripts.data.stackdata import redact_argv
from scripts.engine.streams import stream_in, stream_out

COMPLETE = "COMPLETE"
ARCHIVE_SCHEMA = {"path": str, "parts": [ENTRY]}


def now_stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%dT%H%M%S")


def compress_command(argv: Sequence[str], directory: Path, name: str, env: dict | None = None,
                     what: str = "") -> dict:
    """Run ``argv`` and write its stdout zstd-compressed to ``directory/name`` (hashed while written)."""

    LOG.info("+ %s | zstd > %s%s", redact_argv(argv), name, f"   # {what}" if what else "")
    writer = PartWriter(directory, name, None, mode=0o600)  # dumps and .env: owner only
    try:
        with zstandard.ZstdCompressor(level=3, threads=-1).stream_writer(writer, closefd=False) as sink, \
                progress(None, what or name) as bar:
            raw = stream_out(argv, sink, env=env, bar=bar)
    finally:
        writer.close()
    return {"path": name, "compression": "zstd", "size": writer.size, "sha256": writer.total.hexdigest(),
            "uncompressed_size": raw, "parts": writer.parts}


def tar_create_argv(src: Path) -> list[str]:
    """GNU tar of a directory's content to stdout, numeric owners, modes, and the root dir itself."""
    return ["tar", "--numeric-owner", "-C", str(src), "-cpf", "-", "."]


def tar_extract_argv(dest: Path) -> list[str]:
    """Extract as root keeping numeric owners and modes (uid 1001 for Dify's storage stays 1001)."""
    return ["tar", "--numeric-owner", "--same-owner", "-xpf", "-", "-C", str(dest)]


def tar_compare_argv(dest: Path) -> list[str]:
    """``tar --compare``: every file's content, size, mode, owner and mtime against the archive."""
    return ["tar", "--numeric-owner", "--compare", "-f", "-", "-C", str(dest)]


def archive_dir(src: Path, directory: Path, name: str) -> dict:
    """Archive ``src`` (tar streamed into zstd) and count what went in."""
    if not src.is_dir():
        raise AirgapError(f"{src} is not a directory; nothing to archive (is the project directory right?)")
    entry = compress_command(tar_create_argv(src), directory, name, what=str(src))
    files = sum(len(fs) for _, _, fs in os.walk(src))
    entry.update(source_files=files)
    return entry


def open_archive(root: Path, entry: dict):
    """The decompressed stream of an archive listed in a manifest (parts read in order), refused beyond the
    uncompressed size the manifest declares (a decompression bomb)."""
    return untrusted.capped(zstandard.ZstdDecompressor().stream_reader(PartsReader(root, entry["parts"]),
                                                                       read_size=1 << 20), entry)


def check_archive(root: Path, entry: dict, dest: Path, names: list[str] | None = None) -> None:
    """Every member of the archive checked for ``dest`` (:func:`untrusted.check_members`), nothing written; the
    names of its files appended to ``names`` when given."""
    with open_archive(root, entry) as stream:
        untrusted.check_members(stream, dest, entry, names)


def extract_archive(root: Path, entry: dict, dest: Path, compare: bool = True, checked: bool = False) -> None:
    """Check every member (unless ``checked`` already), extract into ``dest`` (created) as root with numeric
    owners, then compare the result with the archive (tar --compare)."""
    if not checked:
        check_archive(root, entry, dest)
    dest.mkdir(parents=True, exist_ok=True)
    LOG.info("+ zstd -dc %s | %s", entry["path"], shlex.join(tar_extract_argv(dest)))
    with open_archive(root, entry) as stream, progress(entry.get("uncompressed_size"), f"restore {dest}") as bar:
        stream_in(tar_extract_argv(dest), Counted(stream, bar))
    if compare:
        with open_archive(root, entry) as stream:
            try:
                stream_in(tar_compare_argv(dest), stream)
            except AirgapError as exc:
                raise AirgapError(f"{dest} differs from {entry['path']} after extraction:\n{exc}") from None
        LOG.info("verified %s: every file equals the archive (content, mode, owner)", dest)


def decompress_to(root: Path, entry: dict, argv: Sequence[str]) -> str:
    with open_archive(root, entry) as stream:
        return stream_in(argv, stream)


@contextmanager
def staging(output: Path, name: str) -> Iterator[Path]:
    """A ``.NAME.partial`` directory renamed to ``NAME`` (with a COMPLETE marker) only on success."""
    final, partial = output / name, output / f".{name}.partial"
    if final.exists():
        raise AirgapError(f"{final} already exists; pass another --output or --tag, or remove it")
    output.mkdir(parents=True, exist_ok=True)
    if partial.exists():
        LOG.info("removing an unfinished earlier attempt: %s", partial)
        shutil.rmtree(partial)
    partial.mkdir(mode=0o700)
    partial.chmod(0o700)  # database dumps and .env inside: the owner only
    try:
        yield partial
        if not (partial / MANIFEST).is_file():
            raise AirgapError(f"internal: no {MANIFEST} written in {partial}")
        (partial / COMPLETE).write_text(f"complete {_dt.datetime.now(_dt.timezone.utc).isoformat()}\n")
        for path in partial.iterdir():
            path.chmod(0o600)
        partial.rename(final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def write_manifest(root: Path, data: dict, archives: Sequence[dict]) -> dict:
    """manifest.json + SHA256SUMS; archive part hashes are reused, other files hashed now."""
    known = {p["path"]: p for a in archives for p in a["parts"]}
    entries = []
    for path in walk_files(root, skip=(MANIFEST, "SHA256SUMS", COMPLETE)):
        rel = path.relative_to(root).as_posix()
        entries.append({k: known[rel][k] for k in ("path", "size", "sha256")} if rel in known
                       else file_entry(root, path))
    manifest = {"format_version": FORMAT_VERSION, "toolkit_version": __version__,
                "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
                **data, "files": entries}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    write_sums(root, entries)
    return manifest


def verify_dir(path: str | os.PathLike, kind: str, schema: dict | None = None) -> tuple[Path, dict]:
    """A finished snapshot/backup: COMPLETE marker, right kind and shape (``schema``), every file's size and
    sha256."""
    root = Path(path).expanduser().resolve()
    if root.name.endswith(".partial"):
        raise AirgapError(f"{root} is an UNFINISHED {kind} (interrupted while it was written); never use it. "
                          f"Make a new one.")
    if not root.is_dir():
        raise BadInput(f"{root} {'is not a directory' if root.exists() else 'does not exist'}: pass the {kind} "
                       f"directory the command printed")
    if not (root / MANIFEST).is_file():
        raise AirgapError(f"{root} is not a {kind}: it has no {MANIFEST}. Pass the directory the command printed.")
    if not (root / COMPLETE).is_file():
        raise AirgapError(f"{root} has no {COMPLETE} marker: it did not finish or was copied incompletely; "
                          f"re-copy it, or make a new one")
    manifest = load_manifest(root, {**BASE_SCHEMA, "?kind": str})
    if manifest.get("kind") != kind:
        raise BadInput(f"{root} holds a {manifest.get('kind') or 'bundle'}, not a {kind}")
    schema = {**BASE_SCHEMA, "kind": str, **(schema or {})}
    check_shape(manifest, schema, str(root / MANIFEST), f"re-copy the {kind}, or make a new one")
    untrusted.check_manifest_files(root, manifest, kind)  # before a listed path is hashed or read
    report = verify(root, deep=True, allowed=(COMPLETE,), schema=schema)  # the marker staging() writes last
    if not report.ok:
        raise AirgapError(f"{kind} {root} is damaged, refusing to restore it:\n{report.render()}")
    LOG.info("%s", report.render())
    return root, manifest


def swap_in(restored: Path, target: Path, stamp: str) -> Path | None:
    """Move ``target`` aside (never deleted) and put ``restored`` in its place; returns the old copy."""
    old = None
    if target.exists() and any(target.iterdir()):
        old = target.with_name(f"{target.name}.before-restore-{stamp}")
        target.rename(old)
        LOG.info("kept the previous %s as %s", target, old)
    elif target.exists():
        target.rmdir()
    restored.rename(target)
    return old
