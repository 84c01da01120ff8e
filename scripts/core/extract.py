"""Safe extraction, shared by every extractor: a release tarball's ``docker/``, a bundle archive, a
``.difypkg``, a backup's or snapshot's tar archives (docs/hostile-inputs.md).

The rules, whatever the format:

- a member name is a relative path: no absolute path, no ``..``, no drive letter or backslash;
- paths are resolved PHYSICALLY (``os.path.realpath`` of what is on disk now, links already created
  included), never only lexically; nothing is ever written through a symbolic link: every parent of a
  member must be a real directory below the root;
- a symbolic link may only point inside the root (when the format allows links at all), checked when it is
  created AND once more at the end, since a later link can change what an earlier one resolves to;
- a file is created with ``O_EXCL | O_NOFOLLOW``: nothing existing is replaced or written through;
- sizes are capped: the declared size before a byte is read, and the bytes actually written.

Every refusal names the member and the archive (``where``) and raises ``error`` (an :class:`AirgapError`
subclass chosen by the caller).
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
from collections.abc import Container, Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from scripts.core.errors import AirgapError

READ_CHUNK = 1 << 20


def member_path(name: str, where: str, error: type[AirgapError] = AirgapError) -> PurePosixPath:
    """``name`` as a relative path without ``.`` parts; refuses absolute names, ``..``, drive letters."""
    path = PurePosixPath(name)
    if (not name or "\x00" in name or path.is_absolute() or name.startswith(("/", "\\"))
            or re.match(r"^[A-Za-z]:", name) or ".." in path.parts or ".." in name.split("\\")):
        raise error(f"{where}: unsafe path {name!r} in the archive (absolute or with '..'): refusing the "
                    f"archive")
    return PurePosixPath(*[p for p in path.parts if p != "."])


def inside(root: str, path: str) -> bool:
    """Is ``path`` (physical, absolute) ``root`` or below it?"""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class SafeTree:
    """Writes below ``root`` only. ``root`` is created when missing; everything else is created new."""

    def __init__(self, root: Path, where: str, error: type[AirgapError] = AirgapError) -> None:
        Path(root).mkdir(parents=True, exist_ok=True)
        self.root = Path(os.path.realpath(root))
        self.where, self.error = where, error

    def _refuse(self, name: str, why: str) -> AirgapError:
        return self.error(f"{self.where}: member {name!r} {why}: refusing the archive")

    def directory(self, rel: PurePosixPath, name: str) -> Path:
        """The real directory ``root/rel``, created when missing; never through or onto a link."""
        current = self.root
        for part in rel.parts:
            current = current / part
            if current.is_symlink():
                raise self._refuse(name, f"goes through the link {current.relative_to(self.root).as_posix()!r}"
                                         " (nothing is written through a link)")
            if not os.path.lexists(current):
                current.mkdir(mode=0o755)
            elif not current.is_dir():
                raise self._refuse(name, f"needs {current.relative_to(self.root).as_posix()!r} to be a "
                                         f"directory, it is a file")
        if not inside(str(self.root), os.path.realpath(current)):
            raise self._refuse(name, f"resolves to {os.path.realpath(current)}, outside {self.root}")
        return current

    def open_new(self, rel: PurePosixPath, name: str, mode: int = 0o644) -> BinaryIO:
        """A NEW regular file ``root/rel`` opened for writing (an existing name is refused, never replaced)."""
        if not rel.parts:
            raise self._refuse(name, "names the root itself")
        parent = self.directory(rel.parent, name)
        try:
            fd = os.open(parent / rel.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         mode)
        except FileExistsError:
            raise self._refuse(name, "already exists (it appears twice, or after a link or directory of the "
                                     "same name)") from None
        return os.fdopen(fd, "wb")

    def symlink(self, rel: PurePosixPath, linkname: str, name: str) -> None:
        """A link ``root/rel -> linkname``: relative, and resolving (physically) inside the root."""
        if not rel.parts:
            raise self._refuse(name, "names the root itself")
        if not linkname or linkname.startswith(("/", "\\")) or "\x00" in linkname:
            raise self._refuse(name, f"is a link to the absolute path {linkname!r}: it points outside {self.root}")
        parent = self.directory(rel.parent, name)
        resolved = os.path.realpath(parent / linkname)
        if not inside(str(self.root), resolved):
            raise self._refuse(name, f"is a link to {linkname!r}, which points outside {self.root} (it resolves "
                                     f"to {resolved})")
        try:
            os.symlink(linkname, parent / rel.name)
        except FileExistsError:
            raise self._refuse(name, "already exists (it appears twice)") from None

    def regular_file(self, rel: PurePosixPath, name: str) -> Path:
        """An existing regular file ``root/rel`` reached through real directories only (a hard link's source)."""
        path = self.root.joinpath(*rel.parts)
        for parent in [*reversed(rel.parents)][1:]:
            if self.root.joinpath(*parent.parts).is_symlink():
                raise self._refuse(name, f"links to {rel.as_posix()!r}, which is below the link {parent.as_posix()!r}")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise self._refuse(name, f"links to {rel.as_posix()!r}, which is not (yet) in the archive") from None
        if not stat.S_ISREG(st.st_mode):
            raise self._refuse(name, f"links to {rel.as_posix()!r}, which is not a regular file")
        return path

    def check_links(self) -> None:
        """Every link below the root still resolves inside it (a later link may have changed an earlier one)."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            for entry in (*dirnames, *filenames):
                path = Path(dirpath) / entry
                if path.is_symlink() and not inside(str(self.root), os.path.realpath(path)):
                    rel = path.relative_to(self.root).as_posix()
                    raise self._refuse(rel, f"is a link that now points outside {self.root} (through other links "
                                            f"it resolves to {os.path.realpath(path)})")


def copy_capped(src: BinaryIO, dst: BinaryIO, limit: int, name: str, where: str,
                error: type[AirgapError] = AirgapError) -> int:
    """Copy at most ``limit`` bytes; more is refused (a member inflating beyond what was declared)."""
    written = 0
    for block in iter(lambda: src.read(READ_CHUNK), b""):
        written += len(block)
        if written > limit:
            raise error(f"{where}: member {name!r} holds more than {limit} bytes (its declared or allowed size): "
                        f"refusing the archive")
        dst.write(block)
    return written


class CappedReader:
    """A readable that refuses to give more than ``limit`` bytes of ``stream`` (a decompression bomb)."""

    def __init__(self, stream, limit: int, what: str, error: type[AirgapError] = AirgapError) -> None:
        self.stream, self.limit, self.what, self.error = stream, limit, what, error
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        if self.count > self.limit:
            raise self.error(f"{self.what} decompresses to more than the {self.limit} bytes its manifest declares: "
                             f"refusing it")
        return data

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> CappedReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- tar archives restored by GNU tar (backups, snapshots) ------------------------------------------

def _checked_parents(rel: PurePosixPath, dest: Path, links: Container[PurePosixPath], seen_dirs: set[PurePosixPath],
                     name: str, where: str) -> None:
    """No parent of ``rel`` is a link of the archive, nor a link on disk below ``dest`` (existing tree)."""
    for parent in [*reversed(rel.parents)][1:]:
        if parent in links:
            raise AirgapError(f"{where}: member {name!r} is below the link {parent.as_posix()!r} of the archive "
                              f"(nothing is written through a link): refusing it")
        if parent in seen_dirs:
            continue
        on_disk = dest.joinpath(*parent.parts)
        if on_disk.is_symlink():
            raise AirgapError(f"{where}: member {name!r} would be written through {on_disk}, a link on this host: "
                              f"refusing it (replace the link by a directory, or restore elsewhere)")
        seen_dirs.add(parent)


def check_tar_members(members: Iterable[tarfile.TarInfo], dest: Path, where: str, max_total: int) -> int:
    """Refuse, by name, what GNU tar would otherwise extract as root: devices and FIFOs, sparse files,
    setuid/setgid files, absolute names or ``..``, members below a link, hard links to anything but an
    earlier regular file, declared sizes beyond ``max_total``, and links that lead out of ``dest``.
    Returns the member count.

    A link out of the tree is refused (a bind-mount source such as ``volumes/app/storage -> /`` would hand
    the host to a container), except an ABSOLUTE one inside a ``bin/`` directory: a plugin venv's
    ``bin/python -> /usr/local/bin/python3.12`` is meant for the container. Links are resolved at the end,
    all together, the way they will be on disk (through each other and through links already in ``dest``).
    """
    links: dict[PurePosixPath, str] = {}
    files: set[PurePosixPath] = set()
    seen_dirs: set[PurePosixPath] = set()
    total = count = 0
    for member in members:
        count += 1
        rel = member_path(member.name, where)
        problem = _tar_member_problem(member, max_total - total)
        if problem:
            raise AirgapError(f"{where}: member {member.name!r} {problem}: refusing it")
        _checked_parents(rel, dest, links, seen_dirs, member.name, where)
        if rel in links:
            raise AirgapError(f"{where}: member {member.name!r} replaces the link of the same name: refusing it")
        if member.islnk() and member_path(member.linkname, where) not in files:
            raise AirgapError(f"{where}: member {member.name!r} is a hard link to {member.linkname!r}, which is "
                              f"not an earlier regular file of the archive: refusing it")
        if member.issym():
            links[rel] = member.linkname
        elif member.isdir():
            seen_dirs.add(rel)
        else:
            files.add(rel)
        total += member.size
    for rel, linkname in links.items():
        way_out = _resolve_link(rel, links, dest)
        if way_out == "..":
            raise AirgapError(f"{where}: member {rel.as_posix()!r} is a link to {linkname!r}, which leads out of "
                              f"the restored tree: refusing it")
        if way_out == "/" and rel.parent.name != "bin":
            raise AirgapError(f"{where}: member {rel.as_posix()!r} is a link to {linkname!r}, outside the restored "
                              f"tree (only a venv's bin/ may link to absolute paths): refusing it")
    return count


def _resolve_link(rel: PurePosixPath, links: dict[PurePosixPath, str], dest: Path) -> str:
    """How link ``rel`` resolves: "" inside the tree, "/" through an absolute link, ".." above the root."""
    todo = [*reversed(PurePosixPath(links[rel]).parts)]
    if todo and todo[-1] == "/":
        return "/"
    current = list(rel.parent.parts)
    for _ in range(4096):  # components and link expansions: a loop of links ends here
        if not todo:
            return ""
        part = todo.pop()
        if part == "..":
            if not current:
                return ".."
            current.pop()
            continue
        if part in (".", ""):
            continue
        current.append(part)
        here = PurePosixPath(*current)
        target = links.get(here)
        if target is None and (dest.joinpath(*current)).is_symlink():
            target = os.readlink(dest.joinpath(*current))
        if target is not None:
            if target.startswith("/"):
                return "/"
            current.pop()
            todo.extend(reversed(PurePosixPath(target).parts))
    return ".."


def _tar_member_problem(member: tarfile.TarInfo, room: int) -> str | None:
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return "is a device, FIFO or other special file"
    if member.issparse():
        return "is a sparse file (its declared size is not backed by the archive)"
    if member.mode & stat.S_ISUID or (member.mode & stat.S_ISGID and not member.isdir()):
        return f"has the setuid/setgid bit (mode {member.mode:o})"
    if member.size > room:
        return f"declares {member.size} bytes, more than the archive's declared size allows"
    return None
