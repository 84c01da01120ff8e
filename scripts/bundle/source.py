"""Where `invoke bundle --source` gets Dify's ``docker/`` directory: a git repository checked out at the
release tag, or the release source tarball (local file or URL).

- git: ``git clone --depth 1 --branch VERSION URL`` (Dify tags look like ``1.11.3``); a local repository
  path works too (cloned through ``file://``).
- tarball: ``https://github.com/langgenius/dify/archive/refs/tags/1.11.3.tar.gz`` or a local
  ``.tar.gz/.tgz/.tar.xz/.tar.bz2/.tar``. Only its ``docker/`` directory is extracted, safely: the
  whole archive is refused if any member has an absolute path or ``..``, a link that resolves outside
  ``docker/`` (physically, through the links already made: a chain of links that each look harmless is
  caught), a member below a link, or is a device or FIFO; sizes are capped (docs/hostile-inputs.md).

Checkouts are cached under ``~/.cache/dify-airgap/sources/`` (keyed by source and version) so a re-run
does not fetch again; ``--dry-run`` uses a temporary directory instead and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import yaml

from scripts.bundle.archive import safe_relpath
from scripts.core.console import LOG, redact, register_secret
from scripts.core.errors import AirgapError
from scripts.core.extract import SafeTree, copy_capped, member_path
from scripts.dify.project import COMPOSE_FILE

TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2", ".tar")
RELEASE_TARBALL = "https://github.com/langgenius/dify/archive/refs/tags/{version}.tar.gz"
DOWNLOAD_RETRIES = 3
READ_CHUNK = 1 << 20
#: Caps for a release tarball: members, one file of docker/, all of docker/ (Dify's is a few MB).
MAX_MEMBERS = 200_000
MAX_MEMBER_SIZE = 256 << 20
MAX_TOTAL_SIZE = 1 << 30


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dify-airgap" / "sources"


def shown(source: str) -> str:
    """The source for logs and the manifest: credentials in a URL (user:token@) are never shown."""
    parts = urllib.parse.urlsplit(source)
    if parts.password:
        register_secret(parts.password)
    if parts.username or parts.password:
        netloc = "***@" + parts.netloc.rsplit("@", 1)[1]
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return source


def is_tarball(source: str) -> bool:
    path = urllib.parse.urlsplit(source).path if "://" in source else source
    return path.lower().endswith(TARBALL_SUFFIXES)


def _is_url(source: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://", source, re.I)) or bool(re.match(r"^[\w.-]+@[\w.-]+:", source))


def _check_version(docker: Path, version: str, source: str) -> None:
    """The checkout's compose file must name dify-api at ``version`` (when it names dify-api at all)."""
    data = yaml.safe_load((docker / COMPOSE_FILE).read_text()) or {}
    tags = {str(s.get("image", "")).rsplit(":", 1)[-1] for s in (data.get("services") or {}).values()
            if str((s or {}).get("image", "")).split(":", 1)[0].endswith("langgenius/dify-api")}
    if tags and version not in tags:
        raise AirgapError(f"{shown(source)} holds Dify {', '.join(sorted(tags))} (dify-api image), not --version "
                          f"{version}: pass the matching --version or the source of release {version}")


# --- git -----------------------------------------------------------------------------------------

def clone(source: str, version: str, dest: Path) -> Path:
    """``git clone --depth 1 --branch VERSION`` into ``dest``; returns its docker/ directory."""
    url = source
    if not _is_url(source):
        local = Path(source).expanduser().resolve()
        if not (local / ".git").exists() and not (local / "HEAD").is_file():
            raise AirgapError(f"--source {source}: not a git repository, a URL or a release tarball; for a plain "
                              f"directory use --project-dir {local}/docker")
        url = local.as_uri()  # file:// so that --depth is honoured
    if shutil.which("git") is None:
        raise AirgapError("--source with a git repository needs git: install it (apt-get/dnf install -y git) "
                          "or pass the release tarball URL instead")
    argv = ["git", "-c", "advice.detachedHead=false", "clone", "--quiet", "--depth", "1", "--branch", version,
            url, str(dest)]
    LOG.info("+ %s", redact(" ".join(argv).replace(source, shown(source))))
    res = subprocess.run(argv, capture_output=True, text=True, timeout=1800,
                         env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    if res.returncode:
        err = redact(res.stderr.strip()[-1500:])
        hint = (f"there is no tag or branch {version!r} (Dify release tags look like 1.11.3)"
                if "not found in upstream" in res.stderr or "Remote branch" in res.stderr
                else "check the URL and your access to it")
        raise AirgapError(f"git clone of {shown(source)} at {version} failed: {hint}\n{err}")
    docker = dest / "docker"
    if not (docker / COMPOSE_FILE).is_file():
        raise AirgapError(f"{shown(source)} at {version} has no docker/{COMPOSE_FILE}: is it the Dify repository?")
    return docker


# --- tarballs ------------------------------------------------------------------------------------

def download(url: str, dest: Path, retries: int = DOWNLOAD_RETRIES) -> Path:
    """Stream ``url`` to ``dest`` (via ``dest.partial``), with retries."""
    partial = dest.with_name(dest.name + ".partial")
    for attempt in range(1, retries + 1):
        LOG.info("downloading %s (attempt %d/%d)", shown(url), attempt, retries)
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(partial, "wb") as out:
                for block in iter(lambda: resp.read(READ_CHUNK), b""):
                    out.write(block)
            partial.replace(dest)
            return dest
        except OSError as exc:
            partial.unlink(missing_ok=True)
            if attempt == retries:
                raise AirgapError(f"could not download {shown(url)}: {exc}; check the URL and the proxy, or "
                                  f"download it by hand and pass the local file to --source") from None
            time.sleep(2 ** attempt)  # back off before retrying a flaky server
    raise AssertionError("unreachable")


def _docker_prefix(names: list[str]) -> PurePosixPath:
    for name in names:
        rel = safe_relpath(name)
        if rel.parts[-2:] == ("docker", COMPOSE_FILE) and len(rel.parts) <= 3:
            return PurePosixPath(*rel.parts[:-1])
    raise AirgapError(f"no docker/{COMPOSE_FILE} in the tarball: is it Dify's release source tarball?")


def _members(tar: tarfile.TarFile, tarball: Path) -> list[tarfile.TarInfo]:
    """Every member, checked: the whole archive must be sane, not just the part we take."""
    members = []
    for member in tar:
        members.append(member)
        if len(members) > MAX_MEMBERS:
            raise AirgapError(f"{tarball}: more than {MAX_MEMBERS} members: refusing the archive")
        member_path(member.name, str(tarball))
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise AirgapError(f"{tarball}: {member.name!r} is a device or FIFO: refusing the archive")
        if member.issparse() or member.size > MAX_MEMBER_SIZE:
            raise AirgapError(f"{tarball}: {member.name!r} declares {member.size} bytes"
                              f"{' (sparse)' if member.issparse() else ''}, over the {MAX_MEMBER_SIZE}-byte limit "
                              f"for a file of Dify's docker/ directory: refusing the archive")
    return members


def _inner(name: str, prefix: PurePosixPath, tarball: Path) -> PurePosixPath | None:
    """The path below ``docker/`` of a member name, or None when it is outside docker/ (or docker/ itself)."""
    rel = member_path(name, str(tarball))
    if rel.parts[:len(prefix.parts)] != prefix.parts or rel == prefix:
        return None
    return PurePosixPath(*rel.parts[len(prefix.parts):])


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, tree: SafeTree, inner: PurePosixPath,
                    prefix: PurePosixPath, tarball: Path) -> int:
    """One member below docker/ into ``tree``; returns the bytes written. Links: see :class:`SafeTree`."""
    if member.issym():
        tree.symlink(inner, member.linkname, member.name)
        return 0
    if member.isdir():
        tree.directory(inner, member.name)
        return 0
    if member.islnk():
        source = _inner(member.linkname, prefix, tarball)
        if source is None:
            raise AirgapError(f"{tarball}: link {member.name!r} -> {member.linkname!r} points outside docker/: "
                              f"refusing the archive")
        with open(tree.regular_file(source, member.name), "rb") as src, tree.open_new(inner, member.name) as out:
            return copy_capped(src, out, MAX_MEMBER_SIZE, member.name, str(tarball))
    with tar.extractfile(member) as src, tree.open_new(inner, member.name,
                                                        0o755 if member.mode & 0o111 else 0o644) as out:
        return copy_capped(src, out, member.size, member.name, str(tarball))


def extract_docker_dir(tarball: Path, dest: Path) -> Path:
    """Extract only ``[TOP/]docker/`` of ``tarball`` into ``dest/docker`` (a new directory), refusing unsafe
    members by name: paths resolved physically, nothing written through a link, no link out of docker/,
    sizes capped. On a refusal nothing of ``dest/docker`` is left."""
    try:
        tar = tarfile.open(tarball, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise AirgapError(f"{tarball} is not a readable tar archive ({exc}); re-download it") from None
    root = dest / "docker"
    with tar:
        members = _members(tar, tarball)
        prefix = _docker_prefix([m.name for m in members])
        root.mkdir(parents=True)  # new: an existing directory is never written into
        try:
            tree, total = SafeTree(root, str(tarball)), 0
            for member in members:
                inner = _inner(member.name, prefix, tarball)
                if inner is not None:
                    total += _extract_member(tar, member, tree, inner, prefix, tarball)
                if total > MAX_TOTAL_SIZE:
                    raise AirgapError(f"{tarball}: docker/ holds more than {MAX_TOTAL_SIZE} bytes: refusing it")
            tree.check_links()
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
    return root


# --- the entry point -----------------------------------------------------------------------------

def fetch(source: str, version: str, workdir: Path) -> Path:
    """Dify's docker/ directory of ``version`` from ``source``, made under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    if is_tarball(source):
        if _is_url(source):
            name = Path(urllib.parse.urlsplit(source).path).name or "source.tar.gz"
            tarball = download(source, workdir / name)
        else:
            tarball = Path(source).expanduser()
            if not tarball.is_file():
                raise AirgapError(f"--source {source}: no such file; pass the release tarball's path or URL")
        docker = extract_docker_dir(tarball, workdir / "tree")
        if _is_url(source):
            tarball.unlink()
    else:
        docker = clone(source, version, workdir / "tree")
        shutil.rmtree(docker.parent / ".git", ignore_errors=True)
    _check_version(docker, version, source)
    return docker


@contextmanager
def checkout(source: str, version: str, *, dry_run: bool = False, cache: Path | None = None) -> Iterator[Path]:
    """The docker/ directory of ``version`` from ``source``: cached, or in a temporary directory for dry runs."""
    if dry_run:
        with tempfile.TemporaryDirectory(prefix="dal-src-") as tmp:
            LOG.info("dry run: fetching %s into a temporary directory (removed afterwards)", shown(source))
            yield fetch(source, version, Path(tmp))
        return
    key = hashlib.sha256(f"{source}\0{version}".encode()).hexdigest()[:16]
    final = (cache or cache_root()) / f"dify-{version}-{key}"
    record = final / "source.json"
    if record.is_file() and (final / "tree" / "docker" / COMPOSE_FILE).is_file():
        LOG.info("source %s at %s already fetched: %s", shown(source), version, final / "tree" / "docker")
        yield final / "tree" / "docker"
        return
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        fetch(source, version, partial)
        (partial / "source.json").write_text(json.dumps({"source": shown(source), "version": version}) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    yield final / "tree" / "docker"
