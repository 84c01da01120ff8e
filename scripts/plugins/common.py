"""Constants, error types and the package member check shared by the plugin modules."""


import re
import stat
import zipfile
from collections.abc import Sequence

from scripts.core.console import human_size
from scripts.core.errors import AirgapError

DEFAULT_PYTHON = "3.12"            # the daemon image runs ubuntu:24.04's Python 3.12
DEFAULT_ARCH = "amd64"
ARCHES = {"amd64": "x86_64", "arm64": "aarch64"}
# Dify 1.11.3's docker-compose.yaml runs langgenius/dify-plugin-daemon:0.5.2-local.
DEFAULT_DAEMON_VERSION = "0.5.2"
DAEMON_IMAGE = "langgenius/dify-plugin-daemon"
DEFAULT_MARKETPLACE_URL = "https://marketplace.dify.ai"
MARKETPLACE_ENV = "DIFY_AIRGAP_MARKETPLACE_URL"
DEFAULT_INDEX_URL = "https://pypi.org/simple"
INDEX_ENV = "DIFY_AIRGAP_INDEX_URL"
CACHE_ENV = "DIFY_AIRGAP_CACHE_DIR"
TARGET_PYTHON_ENV = "DIFY_AIRGAP_TARGET_PYTHON"
# Usable platform tags on the daemon image (glibc 2.39): manylinux_2_17 (manylinux2014) .. manylinux_2_39.
MANYLINUX_RANGE = (17, 39)
# Dify .env defaults (fixtures/dify-1.11.3/.env.example).
DEFAULT_MAX_PACKAGE_SIZE = 52428800
DEFAULT_NGINX_BODY = "100M"
# Limits when reading untrusted packages (zip bombs): per member and in total, uncompressed.
MAX_MEMBER_SIZE = 1 << 30
MAX_TOTAL_SIZE = 4 << 30
MAX_MEMBERS = 100_000
# Limits for a package's manifest.yaml (a real one is a few KB): bytes, nodes, nesting.
MAX_YAML_SIZE = 1 << 20
MAX_YAML_NODES = 20_000
MAX_YAML_DEPTH = 64
DEP_FILES = ("requirements.txt", "pyproject.toml", "uv.lock")
# A package's own resolver/installer configuration: ignored when resolving, never shipped (uv reads uv.toml and
# .python-version(s) from the plugin folder, pip its pip.conf inside a venv; a shipped .venv would be used as is).
RESOLVER_CONFIG = ("uv.toml", ".python-version", ".python-versions", "pip.conf", "pip.ini", ".pip", ".venv",
                   ".uv")
_MARKET_REF = re.compile(r"^(?P<author>[a-z0-9_-]{1,64})/(?P<name>[a-z0-9_-]{1,128}):"
                         r"(?P<version>\d{1,4}(?:\.\d{1,4}){1,3}(?:-\w{1,16})?)(?:@[a-f0-9]{32,64})?$")
_INDEX_OPTION = re.compile(r"^\s*(-i|--index-url|--extra-index-url|--find-links|-f|--no-index|--trusted-host|"
                           r"--only-binary|--no-binary|--prefer-binary)\b")


class PluginError(AirgapError):
    """A plugin could not be fetched, read, or made installable offline."""


class UnsafeArchive(PluginError):
    """A package member would escape the work folder, is a link, or is too large."""


class MissingWheels(PluginError):
    """Some dependencies have no wheel for the target; ``missing`` holds (requirement, reason)."""

    def __init__(self, message: str, missing: Sequence[tuple[str, str]]) -> None:
        self.missing = list(missing)
        super().__init__(message)


class OfflineInstallFailed(PluginError):
    """The proof install, run with networking disabled, did not succeed."""


# ------------------------------------------------------------------------------------ package members

def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    parts = name.rstrip("/").split("/")
    if any(p == ".." for p in parts):
        return "has a '..' component (path traversal)"
    if any(p in ("", ".") for p in parts):
        return "has an empty or '.' path component"
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_ISLNK(mode):
        return "is a symbolic link (links could point outside the plugin folder; the daemon installs plain files)"
    if info.create_system == 3 and mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) and stat.S_IFMT(mode):
        return "is not a regular file"
    return None


def check_members(zf: zipfile.ZipFile, source: str, max_member: int = MAX_MEMBER_SIZE,
                  max_total: int = MAX_TOTAL_SIZE) -> list[zipfile.ZipInfo]:
    """Validate every member before anything is written; returns the file members in archive order."""
    files, seen, total = [], set(), 0
    if len(zf.infolist()) > MAX_MEMBERS:
        raise UnsafeArchive(f"{source}: {len(zf.infolist())} entries (limit {MAX_MEMBERS}); refusing to extract")
    for info in zf.infolist():
        problem = _member_problem(info)
        if problem:
            raise UnsafeArchive(f"{source}: entry {info.filename!r} {problem}; refusing to extract this package")
        if info.is_dir():
            continue
        if info.filename in seen:
            raise UnsafeArchive(f"{source}: entry {info.filename!r} appears twice; refusing to extract")
        seen.add(info.filename)
        if info.file_size > max_member:
            raise UnsafeArchive(f"{source}: entry {info.filename!r} declares {human_size(info.file_size)} "
                                f"uncompressed (limit {human_size(max_member)}); refusing a possible zip bomb")
        total += info.file_size
        if total > max_total:
            raise UnsafeArchive(f"{source}: entries declare more than {human_size(max_total)} uncompressed at "
                                f"{info.filename!r}; refusing a possible zip bomb")
        files.append(info)
    return files
