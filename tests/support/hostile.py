"""Helpers for the hostile-input tests: a sentinel tree outside the target, and its exact state.

A hostile archive test builds the archive in tmp_path, puts a sentinel directory (and a "host secret"
file) where an escape would land, runs the extractor, and asserts the refusal names the member AND
that :func:`state` of the sentinel is the same before and after (byte for byte, modes, links).
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

SECRET = b"HOST SECRET: must never be read into an archive or bundle\n"


def state(root: Path) -> dict[str, tuple]:
    """Every entry below ``root`` (and root itself): kind, mode, and content or link target."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ["", *dirnames, *filenames]:
            path = Path(dirpath) / name if name else Path(dirpath)
            if not name and path != root:
                continue
            rel = path.relative_to(root).as_posix()
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return out


def sentinel(parent: Path, name: str = "sentinel") -> tuple[Path, dict[str, tuple]]:
    """A directory with a secret file and a subdirectory; returns it and its state."""
    root = parent / name
    (root / "etc").mkdir(parents=True)
    (root / "secret").write_bytes(SECRET)
    (root / "etc" / "passwd").write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    return root, state(root)


def tar_file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def tar_link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def tar_dir(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, None


def tar_special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = kind, 8, 0
    return info, None


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> Path:
    """A tar of exactly ``members`` (PAX format, so sparse and long names work); ``mode`` "w:gz" etc."""
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def tar_sparse(name: str, declared: int) -> tuple[tarfile.TarInfo, bytes]:
    """A PAX (GNU 0.0) sparse member: 1 byte in the archive, ``declared`` bytes once extracted."""
    info = tarfile.TarInfo(name)
    info.size = 1
    info.pax_headers = {"GNU.sparse.size": str(declared), "GNU.sparse.numblocks": "1", "GNU.sparse.offset": "0",
                        "GNU.sparse.numbytes": "1"}
    return info, b"x"
