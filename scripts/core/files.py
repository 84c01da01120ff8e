"""Files: hashing, and a writer that splits one stream into numbered, hashed parts."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from scripts.core.errors import BadInput
from scripts.core.inputs import os_reason

HASH_CHUNK = 1 << 20


class PartWriter:
    """A write-only stream that splits into numbered parts and hashes each one as it is written."""

    def __init__(self, directory: Path, name: str, chunk_size: int | None, mode: int = 0o644) -> None:
        self.directory, self.name, self.chunk_size, self.mode = directory, name, chunk_size, mode
        self.parts: list[dict] = []
        # one part: its hash IS the archive's hash (hashing twice costs ~1 s per 400 MB on a small box)
        self._total = hashlib.sha256() if chunk_size else None
        self.size = 0
        self._fh: BinaryIO | None = None
        self._hash = None
        self._written = 0

    def _open_next(self) -> None:
        self._close_current()
        suffix = f".part-{len(self.parts):03d}" if self.chunk_size else ""
        path = self.directory / f"{self.name}{suffix}"
        self._fh = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, self.mode), "wb")
        self._hash = hashlib.sha256()
        self._written = 0
        self.parts.append({"path": path.name, "size": 0, "sha256": ""})

    def _close_current(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self.parts[-1].update(size=self._written, sha256=self._hash.hexdigest())
            self._fh = None

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if self._fh is None or (self.chunk_size and self._written >= self.chunk_size):
                self._open_next()
            room = len(view) if not self.chunk_size else min(len(view), self.chunk_size - self._written)
            piece = view[:room]
            self._fh.write(piece)
            self._hash.update(piece)
            if self._total is not None:
                self._total.update(piece)
            self._written += room
            self.size += room
            view = view[room:]
        return len(data)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is None and not self.parts:
            self._open_next()
        self._close_current()

    @property
    def total(self):
        """The hash of the whole stream (with one part, that part's own hash object)."""
        return self._total if self._total is not None else self._hash

    @property
    def sha256(self) -> str:
        """The whole stream's sha256 (after :meth:`close`)."""
        return self.total.hexdigest()


def sha256_file(path: Path, bar=None) -> str:
    """The hex sha256 of a file, read in blocks (``bar``: a progress bar moved by what was read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(HASH_CHUNK), b""):
            digest.update(block)
            if bar is not None:
                bar.update(len(block))
    return digest.hexdigest()


def fresh_sibling(target: Path, tag: str, stamp: str) -> Path:
    """``.NAME.TAG-STAMP`` next to ``target`` for work that is renamed over it when complete; siblings left by an
    interrupted earlier run (``.NAME.TAG-*``) are removed first (callers hold the place's lock: none is live)."""
    for stale in target.parent.glob(f".{target.name}.{tag}-*") if target.parent.is_dir() else ():
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    return target.with_name(f".{target.name}.{tag}-{stamp}")


def write_file_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """``data`` to ``path`` whole or not at all: a new temporary file beside it (mkstemp: never a name planted in
    advance, never through a link), chmod, fsync, rename. An OSError is a BadInput naming the file."""
    try:
        fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {os_reason(exc)}", hint="pass a file in a directory you can write to") \
            from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:    # interrupted too: no temporary file left behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if not isinstance(exc, OSError):
            raise
        raise BadInput(f"cannot write {path}: {os_reason(exc)}", hint="free space or fix the permissions, then "
                                                                      "run this again") from None

