"""Repackage Dify plugins (.difypkg) so they install with no network: wheels inside, offline
requirements, optional site signature, and a proof install with networking disabled.

``repackage_many`` is the entry point (``invoke repackage`` and, later, ``invoke bundle --plugins``).
The package format (zip rules, checksum, signature) lives in ``plugin_sign``; docs/plugins.md explains it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlparse

from scripts.core.console import LOG, human_size
from scripts.core.errors import AirgapError
from scripts.dify.project import ComposeProject
from scripts.plugins import sign as plugin_sign

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
DEP_FILES = ("requirements.txt", "pyproject.toml", "uv.lock")
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


# --------------------------------------------------------------------------------------------- target

@dataclass(frozen=True)
class Target:
    """The plugin daemon's runtime: CPython version and CPU architecture (linux, glibc 2.39)."""

    python: str = DEFAULT_PYTHON
    arch: str = DEFAULT_ARCH

    def __post_init__(self) -> None:
        if self.arch not in ARCHES:
            raise PluginError(f"unknown --arch {self.arch!r}; use one of: {', '.join(ARCHES)}")
        if not re.fullmatch(r"3\.\d{1,2}", self.python):
            raise PluginError(f"--python {self.python!r} is not a CPython 3.X version such as 3.12")

    @property
    def machine(self) -> str:
        return ARCHES[self.arch]

    @property
    def py_nodot(self) -> str:
        return self.python.replace(".", "")

    @property
    def uv_platform(self) -> str:
        """uv's --python-platform for the daemon image (glibc 2.39)."""
        return f"{self.machine}-manylinux_2_{MANYLINUX_RANGE[1]}"

    def platforms(self) -> list[str]:
        low, high = MANYLINUX_RANGE
        plats = [f"manylinux_2_{minor}_{self.machine}" for minor in range(high, low - 1, -1)]
        return plats + [f"manylinux2014_{self.machine}"]

    def tags(self) -> list:
        """Wheel tags the daemon accepts, best first: cp3X-cp3X, cp3Y-abi3 (Y<=X), py3-none-any..."""
        from packaging import tags

        version = tuple(int(p) for p in self.python.split("."))
        platforms = self.platforms()
        found = list(tags.cpython_tags(version, abis=[f"cp{self.py_nodot}"], platforms=platforms))
        found += list(tags.compatible_tags(version, f"cp{self.py_nodot}", platforms=platforms))
        return found

    def describe(self) -> str:
        low, high = MANYLINUX_RANGE
        return f"CPython {self.python} linux {self.machine} (manylinux_2_{low}..2_{high})"


def _version(text: str):
    from packaging.version import InvalidVersion, Version

    core = text.strip().lstrip("v").split("-", 1)[0]
    try:
        return Version(core)
    except InvalidVersion:
        raise PluginError(f"daemon version {text!r} is not a version such as 0.5.2; pass --daemon-version") from None


def daemon_version_from_compose(compose_file: str | os.PathLike) -> str:
    """The plugin daemon version from a compose file's ``langgenius/dify-plugin-daemon:X-local`` image."""
    path = Path(compose_file)
    try:
        version = ComposeProject(path.parent, (path.name,)).daemon_version
    except AirgapError as exc:
        raise PluginError(f"{exc}; pass --daemon-version instead") from None
    if not version:
        raise PluginError(f"{path} has no {DAEMON_IMAGE}:VERSION image; pass --daemon-version")
    return version


def daemon_supports_third_party_keys(daemon_version: str) -> bool:
    return _version(daemon_version) >= _version(plugin_sign.THIRD_PARTY_KEYS_SINCE)



# ------------------------------------------------------------------------------ daemon install rules

DAEMON_REPO = "langgenius/dify-plugin-daemon"
DAEMON_SETUP_GO = "internal/core/local_runtime/setup_python_environment.go"
NEWEST_DAEMON_READ = "0.6.10"      # the newest daemon tag whose install code the table below was read from


@dataclass(frozen=True)
class DaemonRule:
    """How one range of plugin daemon versions installs a plugin's Python dependencies.

    Read from ``DAEMON_SETUP_GO`` (``installDependencies``, ``preparePipArgs``, ``prepareSyncArgs``,
    ``detectDependencyFileType``), ``internal/types/app/config.go`` (PIP_* settings) and, for mirror
    auto-detection, ``cmd/server/main.go``, at the tags named in ``source``. At every version the venv is
    ``uv venv .venv --python 3.12`` and the install command gets only VIRTUAL_ENV, PATH, the listed env
    and HTTP_PROXY/HTTPS_PROXY/NO_PROXY (never HOME, UV_* or PIP_* of the daemon)."""

    first: str                     # first daemon tag of the range
    last: str                      # last tag of the range (inclusive)
    source: str                    # file@tag (commit) the row follows
    pyproject: bool = False        # pyproject.toml present -> `uv sync --no-dev` (else requirements.txt only)
    mirror_prefers_requirements: bool = False   # PIP_MIRROR_URL set + requirements.txt -> `uv pip install`
    frozen: bool = False           # uv.lock present -> `uv sync --frozen`
    ignore_lock_setting: bool = False           # PLUGIN_IGNORE_UV_LOCK=true drops --frozen
    offline_when_fresh: bool = False            # 0.5.4: `--offline` for a package uploaded in the last 10 s
    cache: str = ""                # UV_CACHE_DIR: "" (uv's default), "plugin" (<plugin>/.uv-cache),
    #                                "shared" ($PLUGIN_WORKING_PATH/.uv-cache)
    extra_split: str = "space"     # PIP_EXTRA_ARGS split on single spaces ("space") or any whitespace ("fields")
    passes_env: tuple[str, ...] = ()            # daemon env copied to uv when set
    mirror_auto_detect: bool = False            # PIP_MIRROR_AUTO_DETECT (default true) probes mirrors at start

    @property
    def name(self) -> str:
        span = self.first if self.first == self.last else f"{self.first}-{self.last}"
        return f"daemon {span} ({self.source})"

    def covers(self, version: str) -> bool:
        return _version(self.first) <= _version(version) <= _version(self.last)


def _src(tag: str, commit: str, path: str = DAEMON_SETUP_GO) -> str:
    return f"{DAEMON_REPO} {path}@{tag} ({commit})"


DAEMON_RULES: tuple[DaemonRule, ...] = (
    DaemonRule("0.0.0", "0.5.2", _src("0.5.2", "bf9e6e9b")),
    DaemonRule("0.5.3", "0.5.3", _src("0.5.3", "91c5db64"), pyproject=True),
    DaemonRule("0.5.4", "0.5.4", _src("0.5.4", "c100de86"), pyproject=True, offline_when_fresh=True,
               cache="plugin"),
    DaemonRule("0.5.5", "0.5.7", _src("0.5.5", "778fb254"), pyproject=True, frozen=True, cache="plugin",
               extra_split="fields"),
    DaemonRule("0.5.8", "0.5.8", _src("0.5.8", "81c6393f"), pyproject=True, frozen=True,
               ignore_lock_setting=True, cache="plugin", extra_split="fields"),
    DaemonRule("0.5.9", "0.6.2", _src("0.6.1", "6b151081"), pyproject=True, frozen=True,
               ignore_lock_setting=True, cache="shared", extra_split="fields"),
    DaemonRule("0.6.3", "0.6.3", _src("0.6.3", "54432d8a") + " + cmd/server/main.go", pyproject=True,
               mirror_prefers_requirements=True, frozen=True, ignore_lock_setting=True, cache="shared",
               extra_split="fields", mirror_auto_detect=True),
    DaemonRule("0.6.4", NEWEST_DAEMON_READ, _src(NEWEST_DAEMON_READ, "1310a18b"), pyproject=True,
               mirror_prefers_requirements=True, frozen=True, ignore_lock_setting=True, cache="shared",
               extra_split="fields", mirror_auto_detect=True,
               passes_env=("UV_INDEX_NEXUS_USERNAME", "UV_INDEX_NEXUS_PASSWORD", "SSL_CERT_FILE",
                           "REQUESTS_CA_BUNDLE")),
)
# The daemon settings that shape the install command (Dify passes PIP_MIRROR_URL in docker-compose.yaml;
# the others reach the daemon only through an env_file, i.e. `.env` on Dify 1.14+).
DAEMON_SETTINGS = ("PIP_MIRROR_URL", "PIP_VERBOSE", "PIP_EXTRA_ARGS", "PLUGIN_IGNORE_UV_LOCK",
                   "PIP_MIRROR_AUTO_DETECT")


def daemon_rule(daemon_version: str) -> DaemonRule:
    """The install rule of a daemon version; versions newer than the newest tag read get its rule."""
    for rule in DAEMON_RULES:
        if rule.covers(daemon_version):
            return rule
    if _version(daemon_version) > _version(DAEMON_RULES[-1].last):
        return DAEMON_RULES[-1]
    raise PluginError(f"no install rule for plugin daemon {daemon_version}")


def _truthy(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "t", "yes", "y", "on")


@dataclass
class DaemonInstall:
    """What one daemon does with one extracted plugin: the file it reads and the uv command it runs."""

    rule: DaemonRule
    daemon_version: str
    file: str                      # requirements.txt or pyproject.toml
    method: str                    # "uv pip install" or "uv sync"
    argv: list[str]                # uv's arguments, exactly as the daemon builds them (no uv path)
    env: dict[str, str]            # env beyond VIRTUAL_ENV/PATH: UV_CACHE_DIR (relative to the plugin/working
    #                                path, see ``cache``) and passed-through variables
    cache: str                     # "", "plugin" or "shared"
    frozen: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        return shlex.join(["uv", *self.argv])

    def describe(self) -> str:
        newer = "" if self.rule.covers(self.daemon_version) else \
            f" (newer than {NEWEST_DAEMON_READ}, the newest tag read: assumed unchanged)"
        return (f"daemon {self.daemon_version}{newer} reads {self.file} and runs `{self.command}`; "
                f"rule: {self.rule.name}")


def daemon_install(daemon_version: str, files: Sequence[str] | set[str],
                   settings: dict | None = None, environ: dict | None = None) -> DaemonInstall:
    """The daemon's install for a plugin holding ``files`` (names at its root), with the daemon settings
    ``settings`` (PIP_MIRROR_URL, PIP_VERBOSE, PIP_EXTRA_ARGS, PLUGIN_IGNORE_UV_LOCK; Dify .env values) and
    ``environ`` (the daemon's process env, for the variables a rule passes through)."""
    rule = daemon_rule(daemon_version)
    settings = settings or {}
    files = set(files)
    mirror = (settings.get("PIP_MIRROR_URL") or "").strip()
    verbose = _truthy(settings.get("PIP_VERBOSE"), True)
    extra_text = settings.get("PIP_EXTRA_ARGS") or ""
    extra = (extra_text.split(" ") if rule.extra_split == "space" else extra_text.split()) if extra_text else []
    notes = []
    if rule.mirror_auto_detect and not mirror and _truthy(settings.get("PIP_MIRROR_AUTO_DETECT"), True):
        notes.append("PIP_MIRROR_AUTO_DETECT is on (default): at start the daemon probes pypi.org and mirror "
                     "candidates; offline none answers and PIP_MIRROR_URL stays empty (set "
                     "PIP_MIRROR_AUTO_DETECT=false to skip the probe)")
    has_req, has_pyproject = "requirements.txt" in files, "pyproject.toml" in files
    if rule.mirror_prefers_requirements and mirror and has_req:
        file = "requirements.txt"
    elif rule.pyproject and has_pyproject:
        file = "pyproject.toml"
    elif has_req:
        file = "requirements.txt"
    else:
        wanted = "requirements.txt or pyproject.toml" if rule.pyproject else "requirements.txt"
        raise PluginError(f"daemon {daemon_version} needs {wanted} in the plugin (rule: {rule.name})")
    frozen = False
    if file == "requirements.txt":
        argv = ["pip", "install"] + (["-i", mirror] if mirror else []) + ["-r", "requirements.txt"]
        argv += (["-vvv"] if verbose else []) + extra
        method = "uv pip install"
    else:
        frozen = rule.frozen and "uv.lock" in files
        if frozen and rule.ignore_lock_setting and _truthy(settings.get("PLUGIN_IGNORE_UV_LOCK"), False):
            frozen = False
            notes.append("PLUGIN_IGNORE_UV_LOCK=true: uv.lock is not used with --frozen; uv re-locks at install")
        argv = ["sync", "--no-dev"] + (["--frozen"] if frozen else []) + (["-i", mirror] if mirror else [])
        argv += (["-v"] if verbose else []) + ([a for a in extra if a != "--frozen"] if frozen else extra)
        method = "uv sync"
        if rule.offline_when_fresh:
            notes.append("daemon 0.5.4 adds --offline to `uv sync` for a package uploaded in the last 10 s; "
                         "the proof runs without it (the stricter case)")
    env = {}
    environ = os.environ if environ is None else environ
    for name in rule.passes_env:
        if name in environ:
            env[name] = environ[name]
    return DaemonInstall(rule, daemon_version, file, method, argv, env, rule.cache, frozen, notes)


def daemon_reads_pyproject(daemon_version: str) -> bool:
    return daemon_rule(daemon_version).pyproject


# -------------------------------------------------------------------------------------------- sources

@dataclass(frozen=True)
class PackageRef:
    """Where a plugin comes from: a local file, a marketplace ``author/name:version``, or a URL."""

    kind: str          # "file" | "marketplace" | "url"
    value: str
    author: str = ""
    name: str = ""
    version: str = ""

    def download_url(self, marketplace_url: str | None = None) -> str | None:
        if self.kind == "marketplace":
            base = marketplace_base(marketplace_url)
            return (f"{base}/api/v1/plugins/{quote(self.author)}/{quote(self.name)}/"
                    f"{quote(self.version)}/download")
        return self.value if self.kind == "url" else None

    def cache_name(self) -> str:
        if self.kind == "marketplace":
            return f"{self.author}-{self.name}_{self.version}.difypkg"
        base = os.path.basename(urlparse(self.value).path) or "plugin.difypkg"
        digest = hashlib.sha256(self.value.encode()).hexdigest()[:8]
        return f"{digest}-{base}"


def marketplace_base(url: str | None = None) -> str:
    """--marketplace-url > $DIFY_AIRGAP_MARKETPLACE_URL > https://marketplace.dify.ai."""
    return (url or os.environ.get(MARKETPLACE_ENV) or DEFAULT_MARKETPLACE_URL).rstrip("/")


def parse_ref(text: str) -> PackageRef:
    text = text.strip()
    if re.match(r"^https?://", text):
        return PackageRef("url", text)
    m = _MARKET_REF.match(text)
    if m and not Path(text).exists():
        return PackageRef("marketplace", text, m["author"], m["name"], m["version"])
    path = Path(text).expanduser()
    if path.is_file():
        return PackageRef("file", str(path.resolve()))
    raise PluginError(f"{text!r} is neither an existing .difypkg file, a marketplace reference "
                      f"author/name:version (e.g. langgenius/openai:0.2.7), nor an http(s) URL")


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dify-airgap"


def _download(url: str, dest: Path, what: str, expected_sha256: str | None = None) -> Path:
    import requests

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".partial-{os.getpid()}-{dest.name}")
    try:
        with requests.get(url, stream=True, timeout=(15, 120)) as resp:
            if resp.status_code != 200:
                raise PluginError(f"downloading {what} from {url} failed: HTTP {resp.status_code}; check the "
                                  f"name/version and the URL (--marketplace-url / ${MARKETPLACE_ENV})")
            digest = hashlib.sha256()
            with open(tmp, "wb") as fh:
                for chunk in resp.iter_content(1 << 20):
                    fh.write(chunk)
                    digest.update(chunk)
        if expected_sha256 and digest.hexdigest() != expected_sha256:
            raise PluginError(f"{what} from {url} has sha256 {digest.hexdigest()}, expected {expected_sha256}; "
                              f"the download is corrupt or was altered, retry it")
        os.replace(tmp, dest)
    except requests.RequestException as exc:
        raise PluginError(f"cannot download {what} from {url}: {exc}; check the network or proxy "
                          f"(HTTPS_PROXY) of this build machine") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fetch(ref: PackageRef, cache_dir: Path, marketplace_url: str | None = None) -> Path:
    """A local path for the package: the file itself, or a download into ``cache_dir/packages``."""
    if ref.kind == "file":
        return Path(ref.value)
    url = ref.download_url(marketplace_url)
    dest = cache_dir / "packages" / ref.cache_name()
    LOG.info("downloading %s", url)
    return _download(url, dest, f"plugin {ref.value}")


# ------------------------------------------------------------------------------------ safe extraction

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


def safe_extract(package: str | os.PathLike, dest: str | os.PathLike, max_member: int = MAX_MEMBER_SIZE,
                 max_total: int = MAX_TOTAL_SIZE) -> list[str]:
    """Extract a package into ``dest`` (which must be empty or missing) after checking every member;
    sizes are enforced on the real decompressed bytes, not only the declared ones. Returns the names."""
    package, dest = Path(package), Path(dest)
    try:
        zf = zipfile.ZipFile(package)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PluginError(f"{package} is not a readable .difypkg (zip): {exc}") from None
    with zf:
        members = check_members(zf, package.name, max_member, max_total)
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        names = []
        for info in members:
            target = (root / info.filename).resolve()
            if root not in target.parents:
                raise UnsafeArchive(f"{package.name}: entry {info.filename!r} resolves outside the work folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            limit = min(info.file_size, max_member)
            with zf.open(info) as src, open(target, "xb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    written += len(chunk)
                    if written > limit:
                        raise UnsafeArchive(f"{package.name}: entry {info.filename!r} inflates beyond its declared "
                                            f"size; refusing a possible zip bomb")
                    dst.write(chunk)
            os.chmod(target, 0o644)
            names.append(info.filename)
    return names


# ------------------------------------------------------------------------------------------- manifest

@dataclass
class Manifest:
    author: str
    name: str
    version: str
    language: str
    runner_version: str
    entrypoint: str
    arch: list[str]
    raw: dict = field(repr=False, default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.author}/{self.name}:{self.version}" if self.author else f"{self.name}:{self.version}"


def read_manifest(workdir: str | os.PathLike, source: str = "") -> Manifest:
    import yaml

    path = Path(workdir) / "manifest.yaml"
    where = source or str(path)
    if not path.is_file():
        raise PluginError(f"{where} has no manifest.yaml at its root; is it a Dify plugin package?")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PluginError(f"{where}: manifest.yaml does not parse: {exc}") from None
    meta = raw.get("meta") or {}
    runner = meta.get("runner") or {}
    manifest = Manifest(author=str(raw.get("author") or ""), name=str(raw.get("name") or ""),
                        version=str(raw.get("version") or ""), language=str(runner.get("language") or ""),
                        runner_version=str(runner.get("version") or ""),
                        entrypoint=str(runner.get("entrypoint") or ""),
                        arch=[str(a) for a in meta.get("arch") or []], raw=raw)
    if manifest.author and not re.fullmatch(r"[a-z0-9_-]{1,64}", manifest.author):
        raise PluginError(f"{where}: manifest author {manifest.author!r} must match [a-z0-9_-]{{1,64}}")
    if not re.fullmatch(r"[a-z0-9_-]{1,128}", manifest.name):
        raise PluginError(f"{where}: manifest name {manifest.name!r} must match [a-z0-9_-]{{1,128}}")
    if not re.fullmatch(r"\d{1,4}(\.\d{1,4}){1,3}(-\w{1,16})?", manifest.version):
        raise PluginError(f"{where}: manifest version {manifest.version!r} is not x.y.z[-suffix]")
    if manifest.language and manifest.language != "python":
        raise PluginError(f"{where}: runner language {manifest.language!r} is not python; only Python plugins "
                          f"have dependencies to bundle")
    return manifest


# --------------------------------------------------------------------------------------- dependencies

def _run(argv: Sequence[str], *, cwd: Path | None = None, env: dict | None = None,
         timeout: int = 900) -> subprocess.CompletedProcess:
    LOG.debug("$ %s", shlex.join(argv))
    try:
        return subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise PluginError(f"{argv[0]} is not installed; run `pip install uv` (it is a dependency of dify-airgap)") \
            from None
    except subprocess.TimeoutExpired:
        raise PluginError(f"`{shlex.join(argv)}` did not finish in {timeout}s") from None


def uv_bin() -> str:
    """The uv executable: the one from the `uv` PyPI package, else uv on PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if not found:
            raise PluginError("uv is not installed; run `pip install uv` (dify-airgap needs it to resolve and "
                              "prove plugin dependencies)") from None
        return found


def index_base(url: str | None = None) -> str:
    """The simple index wheels come from: ``index_url`` > $DIFY_AIRGAP_INDEX_URL > PyPI."""
    return (url or os.environ.get(INDEX_ENV) or DEFAULT_INDEX_URL).rstrip("/")


def _tail(text: str, lines: int = 15) -> str:
    return "\n    ".join(text.strip().splitlines()[-lines:])


def strip_index_options(text: str) -> str:
    """A requirements file without index/find-links/binary options (those are ours to set)."""
    return "".join(line for line in text.splitlines(keepends=True) if not _INDEX_OPTION.match(line))


def requirements_input(workdir: Path, source: str, tmp: Path, with_pyproject: bool = False) -> list[Path]:
    """The plugin's dependency list as uv compile inputs: requirements.txt, else uv.lock (exported the
    way the Dify CLI does), else pyproject.toml; plus pyproject.toml when it is kept for `uv sync`."""
    req, pyproject, lock = (workdir / name for name in DEP_FILES)
    inputs = []
    if req.is_file():
        text = req.read_text(encoding="utf-8")
    elif pyproject.is_file() and lock.is_file():
        # `--no-dev`, not the Dify CLI's `--no-group dev`: that one fails when no dev group is defined.
        proc = _run([uv_bin(), "export", "--frozen", "--format", "requirements.txt", "--no-dev",
                     "--no-emit-project", "--no-hashes", "--no-header", "--no-annotate"], cwd=workdir,
                    env=_uv_env())
        if proc.returncode != 0:
            raise PluginError(f"{source}: `uv export` from uv.lock failed:\n    {_tail(proc.stderr)}")
        text = proc.stdout
    elif pyproject.is_file():
        return [pyproject]
    else:
        raise PluginError(f"{source} has neither requirements.txt nor pyproject.toml; the plugin daemon needs one")
    infile = tmp / "requirements.in"
    infile.write_text(strip_index_options(text), encoding="utf-8")
    inputs.append(infile)
    if with_pyproject and pyproject.is_file():
        inputs.append(pyproject)
    return inputs


def _uv_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    env.update(extra)
    return env


@dataclass(frozen=True)
class Pin:
    name: str
    version: str

    @property
    def line(self) -> str:
        return f"{self.name}=={self.version}"


def _parse_pins(text: str, source: str) -> list[Pin]:
    pins, odd = [], []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)(\s*;.*)?", line)
        if m:
            pins.append(Pin(m.group(1), m.group(3)))
        else:
            odd.append(line)
    if odd:
        raise MissingWheels(f"{source}: these requirements are not PyPI releases, so no wheel can be fetched: "
                            f"{', '.join(odd)}; build wheels for them and publish them to an index",
                            [(o, "direct URL / VCS / local requirement") for o in odd])
    return pins


def resolve(workdir: Path, target: Target, source: str, index_url: str | None = None,
            with_pyproject: bool = False) -> list[Pin]:
    """The pinned closure for the target, wheels only. On failure, name the packages without a usable
    wheel and why (sdist only / no wheel for this Python / no wheel for this architecture)."""
    with tempfile.TemporaryDirectory(prefix="dal-req-") as tmp:
        inputs = requirements_input(workdir, source, Path(tmp), with_pyproject)
        base = [uv_bin(), "pip", "compile", *map(str, inputs), "--python-version", target.python,
                "--python-platform", target.uv_platform, "--index-url", index_base(index_url),
                "--no-header", "--no-annotate", "--quiet"]
        proc = _run(base + ["--only-binary", ":all:"], cwd=workdir, env=_uv_env())
        if proc.returncode == 0:
            return _parse_pins(proc.stdout, source)
        LOG.info("%s: no wheel-only resolution for %s; finding which packages lack wheels", source, target.describe())
        loose = _run(base, cwd=workdir, env=_uv_env())
        if loose.returncode != 0:
            raise PluginError(f"{source}: dependencies do not resolve for {target.describe()}:\n    "
                              f"{_tail(proc.stderr)}")
    pins = _parse_pins(loose.stdout, source)
    missing = []
    for pin in pins:
        try:
            select_wheel(pin, target, index_url)
        except MissingWheels as exc:
            missing.extend(exc.missing)
    if not missing:
        raise PluginError(f"{source}: uv found no wheel-only resolution for {target.describe()}:\n    "
                          f"{_tail(proc.stderr)}")
    raise missing_wheels_error(source, target, missing)


def missing_wheels_error(source: str, target: Target, missing: Sequence[tuple[str, str]]) -> MissingWheels:
    lines = "\n".join(f"  - {req}: {reason}" for req, reason in missing)
    return MissingWheels(f"{source}: {len(missing)} dependenc{'y has' if len(missing) == 1 else 'ies have'} no "
                         f"wheel for {target.describe()}:\n{lines}\nThe daemon cannot build sdists offline: pin a "
                         f"version that ships such wheels, or build the wheels (e.g. `pip wheel` on a matching "
                         f"machine) and serve them from an index given by ${INDEX_ENV}.", missing)


_LISTINGS: dict[tuple[str, str], list[dict]] = {}


def _project_files(name: str, index_url: str | None) -> list[dict]:
    """All files of a project from the simple index (PEP 691 JSON, else PEP 503 HTML), memoised."""
    import requests
    from packaging.utils import canonicalize_name

    base = index_base(index_url)
    key = (base, canonicalize_name(name))
    if key in _LISTINGS:
        return _LISTINGS[key]
    url = f"{base}/{key[1]}/"
    try:
        resp = requests.get(url, timeout=(15, 60), headers={
            "Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    except requests.RequestException as exc:
        raise PluginError(f"cannot reach the package index for {name} ({url}): {exc}") from None
    if resp.status_code == 404:
        files: list[dict] = []
    elif resp.status_code != 200:
        raise PluginError(f"package index answered HTTP {resp.status_code} for {url}; retry or set ${INDEX_ENV}")
    elif "json" in resp.headers.get("Content-Type", ""):
        files = [{"filename": f["filename"], "url": requests.compat.urljoin(url, f["url"]),
                  "sha256": (f.get("hashes") or {}).get("sha256", ""), "size": f.get("size") or 0}
                 for f in resp.json().get("files", [])]
    else:
        files = []
        for href, filename in re.findall(r'<a[^>]*href="([^"]+)"[^>]*>([^<]+)</a>', resp.text):
            href = href.replace("&amp;", "&")
            link, _, frag = href.partition("#")
            sha = frag.split("=", 1)[1] if frag.startswith("sha256=") else ""
            files.append({"filename": filename.strip(), "url": requests.compat.urljoin(url, link), "sha256": sha,
                          "size": 0})
    _LISTINGS[key] = files
    return files


def _release_files(pin: Pin, index_url: str | None) -> list[dict]:
    """The files of one release (wheels and sdists of exactly ``pin.version``)."""
    from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename
    from packaging.version import Version

    wanted = Version(pin.version)
    found = []
    for f in _project_files(pin.name, index_url):
        try:
            if f["filename"].endswith(".whl"):
                version = parse_wheel_filename(f["filename"])[1]
            else:
                version = parse_sdist_filename(f["filename"])[1]
        except (InvalidWheelFilename, InvalidSdistFilename):
            continue
        if version == wanted:
            found.append(f)
    if not found:
        raise MissingWheels(f"{pin.line} is not on {index_base(index_url)}",
                            [(pin.line, f"not found on the package index {index_base(index_url)}")])
    return found


@dataclass(frozen=True)
class WheelFile:
    filename: str
    url: str
    sha256: str
    size: int


def choose_wheel(filenames: Sequence[str], target: Target) -> str | None:
    """The best-ranked filename for the target's tags (None when no wheel fits)."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    rank = {tag: i for i, tag in enumerate(target.tags())}
    best, best_rank = None, None
    for filename in filenames:
        if not filename.endswith(".whl"):
            continue
        try:
            wheel_tags = parse_wheel_filename(filename)[3]
        except InvalidWheelFilename:
            continue
        ranks = [rank[t] for t in wheel_tags if t in rank]
        if ranks and (best_rank is None or min(ranks) < best_rank):
            best, best_rank = filename, min(ranks)
    return best


def why_no_wheel(filenames: Sequence[str], target: Target) -> str:
    """Why none of ``filenames`` fits the target: sdist only / no wheel for this Python / this arch."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    wheels = [f for f in filenames if f.endswith(".whl")]
    if not wheels:
        return "sdist only (no wheels published)"
    interp_abi = {(t.interpreter, t.abi) for t in target.tags()}
    python_ok, plats, pythons = False, set(), set()
    for filename in wheels:
        try:
            wheel_tags = parse_wheel_filename(filename)[3]
        except InvalidWheelFilename:
            continue
        for t in wheel_tags:
            pythons.add(f"{t.interpreter}-{t.abi}")
            if (t.interpreter, t.abi) in interp_abi:
                python_ok = True
                plats.add(t.platform)
    if not python_ok:
        return (f"no wheel for Python {target.python} (cp{target.py_nodot}); wheels exist for "
                f"{', '.join(sorted(pythons))}")
    shown = ", ".join(sorted(plats)[:6]) + (" ..." if len(plats) > 6 else "")
    return (f"no wheel for linux {target.machine} ({target.arch}, manylinux_2_{MANYLINUX_RANGE[0]}.."
            f"2_{MANYLINUX_RANGE[1]}, glibc); Python {target.python} wheels exist for: {shown}")


def select_wheel(pin: Pin, target: Target, index_url: str | None = None) -> WheelFile:
    by_name = {f["filename"]: f for f in _release_files(pin, index_url)}
    chosen = choose_wheel(list(by_name), target)
    if chosen is None:
        raise MissingWheels(f"{pin.line}: no usable wheel", [(pin.line, why_no_wheel(list(by_name), target))])
    f = by_name[chosen]
    return WheelFile(chosen, f["url"], f["sha256"], int(f["size"]))


def download_wheels(pins: Sequence[Pin], target: Target, cache_dir: Path, source: str,
                    index_url: str | None = None) -> list[Path]:
    """Fetch one wheel per pin into the shared cache (``cache_dir/wheels``), verifying sha256."""
    wheel_dir = cache_dir / "wheels"
    chosen, missing = [], []
    for pin in pins:
        try:
            chosen.append(select_wheel(pin, target, index_url))
        except MissingWheels as exc:
            missing.extend(exc.missing)
    if missing:
        raise missing_wheels_error(source, target, missing)
    paths = []
    for wheel in chosen:
        dest = wheel_dir / wheel.filename
        if not (dest.is_file() and (not wheel.sha256 or plugin_sign.file_sha256(dest) == wheel.sha256)):
            LOG.info("  wheel %s (%s)", wheel.filename, human_size(wheel.size))
            _download(wheel.url, dest, f"wheel {wheel.filename}", wheel.sha256 or None)
        paths.append(dest)
    return paths


# ------------------------------------------------------------------------------------ file rewriting

def offline_requirements(pins: Sequence[Pin], target: Target) -> str:
    """requirements.txt for every daemon version: starts with --no-index / --find-links ./wheels/."""
    lines = ["--no-index", "--find-links ./wheels/",
             "# Offline install for the Dify plugin daemon, written by dify-airgap repackage.",
             f"# Wheels for {target.describe()} are in ./wheels/; no network is needed."]
    lines += [pin.line for pin in pins]
    return "\n".join(lines) + "\n"


PYPROJECT_UV_BLOCK = """
[tool.uv]
# Written by dify-airgap repackage: install only from the bundled ./wheels (no network), for the daemon's
# Python only (its wheels are the only ones bundled).
no-index = true
find-links = ["./wheels"]
environments = ["sys_platform == 'linux' and python_version == '{python}'"]
package = false
"""
_DEP_GROUPS = re.compile(r"^\[dependency-groups\][ \t]*(?:#[^\n]*)?\n(?:(?!\[)[^\n]*\n?)*", re.M)


def strip_dependency_groups(text: str) -> tuple[str, bool]:
    """pyproject.toml without its [dependency-groups] table: the daemon runs `uv sync --no-dev`, but a
    lock covers every group, so dev tools (pytest...) would need wheels too."""
    new = _DEP_GROUPS.sub("", text)
    return new, new != text


def offline_pyproject(text: str, source: str = "pyproject.toml", python: str = DEFAULT_PYTHON) -> str:
    """pyproject.toml with a [tool.uv] table that installs from ./wheels only (daemon 0.5.3+ uses
    `uv sync`). Refuses a file that already configures uv: merging it safely needs a TOML editor."""
    if re.search(r"^\s*\[\[?tool\.uv(\.|\])", text, re.M):
        raise PluginError(f"{source} already has [tool.uv] settings; repackage without --keep-pyproject (the "
                          f"universal recipe removes pyproject.toml and uv.lock and installs from requirements.txt)")
    m = re.search(r"^\s*requires-python\s*=\s*[\"']([^\"']*)[\"']", text, re.M)
    if m:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        try:
            ok = SpecifierSet(m.group(1)).contains(f"{python}.0", prereleases=True)
        except InvalidSpecifier:
            ok = True
        if not ok:
            raise PluginError(f"{source}: requires-python {m.group(1)!r} excludes Python {python}, which "
                              f"the plugin daemon runs; fix requires-python")
    return text.rstrip("\n") + "\n" + PYPROJECT_UV_BLOCK.format(python=python)


def lock_remote_sources(lock_text: str) -> list[str]:
    """Packages of a uv.lock that would be fetched from somewhere else than the plugin folder: a registry
    given by URL, a git/url source, or any http(s) URL of an sdist/wheel. Empty = installs from ./wheels."""
    try:
        import tomllib
    except ImportError:                     # Python < 3.11
        import tomli as tomllib

    try:
        lock = tomllib.loads(lock_text)
    except tomllib.TOMLDecodeError as exc:
        return [f"uv.lock does not parse ({exc})"]
    remote = []
    for pkg in lock.get("package", []):
        name = f"{pkg.get('name')}=={pkg.get('version')}"
        src = pkg.get("source", {})
        registry = src.get("registry", "")
        if any(k in src for k in ("git", "url")) or "://" in str(registry):
            remote.append(f"{name} ({', '.join(f'{k}={v}' for k, v in src.items())})")
            continue
        urls = [d.get("url", "") for d in [pkg.get("sdist") or {}, *pkg.get("wheels", [])]]
        if any("://" in u for u in urls):
            remote.append(f"{name} (files at {next(u for u in urls if '://' in u)})")
    return remote


def relock_offline(workdir: Path, source: str) -> int:
    """Rewrite uv.lock against ./wheels only, with no network (the pyproject already has our [tool.uv]).
    Returns the number of locked packages; fails if any source is still remote."""
    prefix, _label = isolation_prefix()
    with tempfile.TemporaryDirectory(prefix="dal-lock-") as tmp:
        env = _uv_env(UV_CACHE_DIR=tmp, UV_OFFLINE="1")
        (workdir / "uv.lock").unlink(missing_ok=True)
        proc = _run(prefix + [uv_bin(), "lock"], cwd=workdir, env=env)
    if proc.returncode != 0:
        raise PluginError(f"{source}: re-locking uv.lock against the bundled wheels failed:\n    "
                          f"{_uv_error(proc.stderr)}")
    text = (workdir / "uv.lock").read_text(encoding="utf-8")
    remote = lock_remote_sources(text)
    if remote:
        raise PluginError(f"{source}: the re-locked uv.lock still has remote sources: {'; '.join(remote)}")
    return text.count("[[package]]")


def _ignores_wheels(pattern: str) -> bool:
    p = pattern.strip()
    if not p or p.startswith(("#", "!")):
        return False
    core = p.lstrip("/")
    for suffix in ("/**", "/*", "/"):
        if core.endswith(suffix):
            core = core[: -len(suffix)]
            break
    return core in ("wheels", "**/wheels", "*.whl", "**/*.whl", "wheels/*.whl", "wheels/**/*.whl")


def clean_ignore_file(text: str) -> tuple[str, list[str]]:
    """An ignore file without patterns that exclude wheels/ (negations never re-include in the Dify CLI,
    so the lines must go). Returns the new text and the removed lines."""
    kept, removed = [], []
    for line in text.splitlines(keepends=True):
        (removed if _ignores_wheels(line) else kept).append(line)
    return "".join(kept), [r.strip() for r in removed]


# --------------------------------------------------------------------------------------------- proof

def isolation_prefix() -> tuple[list[str], str]:
    """How to run a command with no network: `unshare -n` (root), `unshare -rn` (user namespace), or
    nothing (then uv's own offline mode is forced and the report says so)."""
    unshare = shutil.which("unshare")
    if unshare:
        for prefix, label in (([unshare, "-n", "--"], "network namespace (unshare -n)"),
                              ([unshare, "-r", "-n", "--"], "user+network namespace (unshare -rn)")):
            probe = subprocess.run(prefix + ["true"], capture_output=True)
            if probe.returncode == 0:
                return prefix, label
    return [], "UV_OFFLINE=1 only (no network namespace available: run as root for a real proof)"


def find_target_python(version: str) -> str | None:
    """A working interpreter of the target version: $DIFY_AIRGAP_TARGET_PYTHON, pythonX.Y on PATH, pyenv."""
    candidates = [os.environ.get(TARGET_PYTHON_ENV, "")]
    candidates.append(shutil.which(f"python{version}") or "")
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates += [str(p) for p in sorted((pyenv_root / "versions").glob(f"{version}.*/bin/python{version}"))]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


@dataclass
class Proof:
    mode: str          # "venv" (target interpreter: the daemon's own command) or "target" (uv for the target tags)
    isolation: str
    commands: list[str]
    packages: int
    rule: str = ""                 # the DaemonRule followed
    daemon_command: str = ""       # the uv command the daemon runs for this package
    file: str = ""                 # the dependency file the daemon reads
    env: dict = field(default_factory=dict)   # the install command's environment (paths in the proof folder)
    exact: bool = True             # False: no target interpreter here; uv installed for the target tags


def proof_commands(target: Target, python_exe: str | None, uv: str,
                   install: DaemonInstall) -> tuple[str, list[list[str]]]:
    """The commands of the proof. With a target interpreter: the daemon's venv, then its install command
    exactly (``install.argv``), then `uv pip check`. Without one (another Python or architecture here):
    uv installs for the target tags into a folder; `uv sync` is replaced by what it does: lock/export the
    project (honouring --frozen) and install the result."""
    if python_exe:
        return "venv", [[uv, "venv", ".venv", "--python", python_exe], [uv, *install.argv], [uv, "pip", "check"]]
    for_target = ["--python-version", target.python, "--python-platform", target.uv_platform,
                  "--target", ".proof-target"]
    if install.method == "uv pip install":
        return "target", [[uv, *install.argv, *for_target]]
    export = [uv, "export", "--no-dev", "--no-emit-project", "--no-hashes", "--format", "requirements.txt",
              "-o", ".proof-requirements.txt"] + (["--frozen"] if install.frozen else [])
    return "target", [export, [uv, "pip", "install", "-r", ".proof-requirements.txt", *for_target]]


_UV_LOG = re.compile(r"^\s*(\d+(\.\d+)?m?s\s+)*(DEBUG|TRACE|INFO)\b|^\s*(uv|uv_\w+)::|^\s+\d+(\.\d+)?m?s\s")


def _uv_error(text: str, lines: int = 12) -> str:
    """uv's own error lines from verbose output (-v/-vvv floods stderr with DEBUG lines)."""
    kept = [line for line in text.splitlines() if line.strip() and not _UV_LOG.search(line)]
    return _tail("\n".join(kept) if kept else text, lines)


def daemon_files(workdir: Path) -> set[str]:
    return {name for name in DEP_FILES if (workdir / name).is_file()}


def prove_offline(package: str | os.PathLike, target: Target, *, python_exe: str | None | bool = None,
                  daemon_version: str = DEFAULT_DAEMON_VERSION, settings: dict | None = None) -> Proof:
    """Install the package's dependencies the way the target daemon does, with networking disabled.

    The package is extracted into a fresh folder; the daemon's rule (``daemon_install``: file chosen,
    `uv pip install` / `uv sync [--frozen]`, -i/-v/extra args from ``settings``) gives the command, run
    with the daemon's scrubbed environment (PATH, VIRTUAL_ENV, its UV_CACHE_DIR, fresh and empty) inside
    a network namespace. With an interpreter of the target version on a matching machine (``python_exe``
    None = look for one, False = don't) this is exactly the daemon's install; otherwise uv installs for the
    target tags into a folder (``Proof.exact`` False)."""
    package = Path(package)
    host_machine = os.uname().machine
    if python_exe is None and host_machine == target.machine:
        python_exe = find_target_python(target.python)
    python_exe = python_exe or None
    uv = uv_bin()
    prefix, isolation = isolation_prefix()
    with tempfile.TemporaryDirectory(prefix="dal-proof-") as tmp:
        working_path = Path(tmp) / "cwd"          # stands for $PLUGIN_WORKING_PATH
        workdir = working_path / "plugin"
        safe_extract(package, workdir)
        install = daemon_install(daemon_version, daemon_files(workdir), settings, environ={})
        if install.method == "uv sync" and (workdir / "uv.lock").is_file() and install.frozen:
            remote = lock_remote_sources((workdir / "uv.lock").read_text(encoding="utf-8"))
            if remote:
                raise OfflineInstallFailed(
                    f"{package.name}: the daemon runs `{install.command}` and uv.lock fetches from the network: "
                    f"{'; '.join(remote[:5])}{' ...' if len(remote) > 5 else ''}")
        mode, commands = proof_commands(target, python_exe, uv, install)
        cache = {"plugin": workdir / ".uv-cache", "shared": working_path / ".uv-cache"}.get(
            install.cache, Path(tmp) / "uv-cache")   # "": uv's default cache in the daemon; fresh here
        env = {"PATH": os.pathsep.join([str(Path(uv).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
               "VIRTUAL_ENV": str(workdir / ".venv"), "UV_CACHE_DIR": str(cache), **install.env}
        if not prefix:
            env["UV_OFFLINE"] = "1"
        if mode == "target":
            env.pop("VIRTUAL_ENV")
            env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
            env["UV_PYTHON_DOWNLOADS"] = "never"
        for i, argv in enumerate(commands):
            # the venv is made with the daemon's full env; only the install command gets the scrubbed one
            run_env = {**env, "UV_PYTHON_DOWNLOADS": "never"} if mode == "venv" and i == 0 else env
            proc = _run(prefix + argv, cwd=workdir, env=run_env, timeout=600)
            if proc.returncode != 0:
                raise OfflineInstallFailed(
                    f"{package.name}: the offline install failed ({isolation}), so the daemon would need the "
                    f"network:\n  {install.describe()}\n  command: {shlex.join(argv)}\n  exit code: "
                    f"{proc.returncode}\n    {_uv_error(proc.stderr or proc.stdout)}\nA wheel is missing from "
                    f"wheels/, or the dependency file asks for something else; rerun `invoke repackage` on the "
                    f"original package.")
        installed = workdir / (".proof-target" if mode == "target" else ".venv")
        count = len(list(installed.rglob("*.dist-info")))
        shown_env = {k: v.replace(str(working_path), "$PLUGIN_WORKING_PATH") for k, v in env.items()
                     if k != "PATH"}
    return Proof(mode, isolation, [shlex.join(a) for a in commands], count, rule=install.rule.name,
                 daemon_command=install.command, file=install.file, env=shown_env, exact=mode == "venv")


# ---------------------------------------------------------------------------------------------- sizes

def parse_size(text: str) -> int:
    """nginx-style size (100M, 1g, 512k, 2048) in bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)\s*", str(text))
    if not m:
        raise PluginError(f"size {text!r} is not a number with an optional k/m/g suffix")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


def size_advice(uncompressed: int, compressed: int, env: dict | None = None) -> list[str]:
    """What to raise in Dify's .env for a package of these sizes (empty when the defaults suffice).

    PLUGIN_MAX_PACKAGE_SIZE goes to the api (upload check) and, as MAX_PLUGIN_PACKAGE_SIZE, to the plugin
    daemon, which checks both the compressed upload and the declared uncompressed total. The upload also
    passes nginx, limited by NGINX_CLIENT_MAX_BODY_SIZE."""
    env = env or {}
    limit = int(env.get("PLUGIN_MAX_PACKAGE_SIZE") or DEFAULT_MAX_PACKAGE_SIZE)
    body = parse_size(env.get("NGINX_CLIENT_MAX_BODY_SIZE") or DEFAULT_NGINX_BODY)
    advice = []
    need = max(uncompressed, compressed)
    if need > limit:
        mib = -(-need // (1 << 20)) + 1
        advice.append(f"PLUGIN_MAX_PACKAGE_SIZE={mib << 20}  # now {limit}: the daemon checks the uncompressed "
                      f"total ({uncompressed} bytes) and the upload ({compressed} bytes) against it")
    if compressed + (1 << 20) > body:
        mib = -(-compressed // (1 << 20)) + 2
        now = env.get("NGINX_CLIENT_MAX_BODY_SIZE") or DEFAULT_NGINX_BODY
        advice.append(f"NGINX_CLIENT_MAX_BODY_SIZE={mib}M  # now {now}: nginx rejects larger uploads with HTTP 413")
    return advice


def read_env(project_dir: str | os.PathLike | None) -> dict:
    """PLUGIN_MAX_PACKAGE_SIZE etc. from the project's .env (else .env.example); {} without a project."""
    if not project_dir:
        return {}
    from dotenv import dotenv_values

    for name in (".env", ".env.example"):
        path = Path(project_dir) / name
        if path.is_file():
            return {k: v for k, v in dotenv_values(path).items() if v is not None}
    return {}


# ------------------------------------------------------------------------------------------ repackage

@dataclass
class RepackResult:
    source: str
    path: Path
    identifier: str
    checksum: str
    sha256: str
    compressed_size: int
    uncompressed_size: int
    wheels: int
    wheels_size: int
    signed: bool
    daemon_version: str
    target: str
    proof: Proof | None = None
    advice: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("source", "identifier", "checksum", "sha256", "compressed_size",
                                             "uncompressed_size", "wheels", "wheels_size", "signed",
                                             "daemon_version", "target", "advice", "notes")}
        out["path"] = str(self.path)
        out["proof"] = self.proof.__dict__ if self.proof else None
        return out


def output_name(manifest: Manifest, target: Target) -> str:
    stem = f"{manifest.author}-{manifest.name}" if manifest.author else manifest.name
    return f"{stem}_{manifest.version}-offline-py{target.py_nodot}-{target.arch}.difypkg"


def _entries_in_order(workdir: Path, original: Sequence[str], drop: set[str]) -> list[tuple[str, Path]]:
    """Original members in their order (minus ``drop``), then files we added (wheels/ sorted)."""
    entries = [(n, workdir / n) for n in original if n not in drop and (workdir / n).is_file()]
    known = {n for n, _ in entries} | drop
    extra = sorted(p.relative_to(workdir).as_posix() for p in workdir.rglob("*") if p.is_file())
    entries += [(n, workdir / n) for n in extra if n not in known]
    return entries


def repackage(pkg: str, out_dir: str | os.PathLike, *, python: str = DEFAULT_PYTHON, arch: str = DEFAULT_ARCH,
              daemon_version: str = DEFAULT_DAEMON_VERSION, sign_key: str | os.PathLike | None = None,
              cache_dir: str | os.PathLike | None = None, marketplace_url: str | None = None,
              keep_pyproject: bool = False, prove: bool = True, proof_python: str | None | bool = None,
              index_url: str | None = None, env: dict | None = None) -> RepackResult:
    """Make one plugin package installable offline. See ``repackage_many``."""
    target = Target(python, arch)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    key = plugin_sign.load_private_key(sign_key) if sign_key else None   # fail fast on a bad key
    ref = parse_ref(pkg)
    source = fetch(ref, cache, marketplace_url)
    notes: list[str] = []
    settings = {k: v for k, v in (env or {}).items() if k in DAEMON_SETTINGS}
    if key is not None:
        for warning in signing_env(daemon_version, "")[1]:
            LOG.warning("warning: %s", warning)
            notes.append(warning)
    with tempfile.TemporaryDirectory(prefix="dal-repack-") as tmp:
        workdir = Path(tmp) / "plugin"
        original = safe_extract(source, workdir)
        manifest = read_manifest(workdir, source.name)
        if ref.kind == "marketplace" and (manifest.author, manifest.name, manifest.version) != \
                (ref.author, ref.name, ref.version):
            notes.append(f"marketplace returned {manifest.ref} for {ref.value}")
        if manifest.arch and arch not in manifest.arch:
            notes.append(f"manifest meta.arch {manifest.arch} does not list {arch}; the plugin may not run there")
        if manifest.runner_version and manifest.runner_version != python:
            notes.append(f"manifest runner version {manifest.runner_version}; the daemon runs Python {python} "
                         f"regardless, wheels are for {python}")
        LOG.info("%s: %s, resolving dependencies for %s", source.name, manifest.ref, target.describe())
        pyproject = workdir / "pyproject.toml"
        keep_pyproject = keep_pyproject and pyproject.is_file()
        pins = resolve(workdir, target, source.name, index_url, with_pyproject=keep_pyproject)
        wheels = download_wheels(pins, target, cache, source.name, index_url)

        wheel_dir = workdir / "wheels"
        if wheel_dir.exists():
            shutil.rmtree(wheel_dir)   # stale wheels from an earlier repackage
        wheel_dir.mkdir()
        for wheel in wheels:
            shutil.copyfile(wheel, wheel_dir / wheel.name)
        (workdir / "requirements.txt").write_text(offline_requirements(pins, target), encoding="utf-8")

        drop = {plugin_sign.VERIFICATION_FILE}
        rule = daemon_rule(daemon_version)
        if keep_pyproject:
            if not rule.pyproject:
                notes.append(f"daemon {daemon_version} reads only requirements.txt (rule: {rule.name}); "
                             f"pyproject.toml is kept but unused")
            text, stripped = strip_dependency_groups(pyproject.read_text(encoding="utf-8"))
            if stripped:
                notes.append("pyproject.toml: removed [dependency-groups] (the daemon installs with --no-dev; "
                             "a lock of dev tools would need their wheels)")
            pyproject.write_text(offline_pyproject(text, source.name, target.python), encoding="utf-8")
            if (workdir / "uv.lock").is_file():
                locked = relock_offline(workdir, source.name)
                notes.append(f"uv.lock re-locked offline against the bundled wheels ({locked} packages, every "
                             f"source ./wheels): `uv sync --frozen` installs it with no network")
        else:
            for name in ("pyproject.toml", "uv.lock"):
                if (workdir / name).is_file():
                    drop.add(name)
                    notes.append(f"removed {name} (universal offline recipe: every daemon version then runs "
                                 f"`uv pip install -r requirements.txt`; --keep-pyproject keeps it, re-locked)")
        install = daemon_install(daemon_version, daemon_files(workdir) - drop, settings, environ={})
        notes.append(install.describe())
        notes.extend(install.notes)
        for name in (".difyignore", ".gitignore"):
            path = workdir / name
            if path.is_file():
                text, removed = clean_ignore_file(path.read_text(encoding="utf-8", errors="replace"))
                if removed:
                    path.write_text(text, encoding="utf-8")
                    notes.append(f"{name}: removed {', '.join(removed)} so a CLI re-package keeps wheels/")

        out = Path(out_dir) / output_name(manifest, target)
        staged = Path(tmp) / out.name
        written = plugin_sign.write_package(staged, _entries_in_order(workdir, original, drop), sign_key=key)
        proof = (prove_offline(staged, target, python_exe=proof_python, daemon_version=daemon_version,
                               settings=settings) if prove else None)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(out))
    written.path = out
    result = RepackResult(
        source=pkg, path=out,
        identifier=plugin_sign.identifier(manifest.author, manifest.name, manifest.version, written.checksum),
        checksum=written.checksum, sha256=written.sha256, compressed_size=written.compressed_size,
        uncompressed_size=written.uncompressed_size, wheels=len(wheels),
        wheels_size=sum(w.stat().st_size for w in wheels), signed=written.signed, daemon_version=daemon_version,
        target=target.describe(), proof=proof, notes=notes)
    result.advice = size_advice(written.uncompressed_size, written.compressed_size, env)
    return result


def repackage_many(pkgs: Sequence[str], out_dir: str | os.PathLike, *, python: str = DEFAULT_PYTHON,
                   arch: str = DEFAULT_ARCH, daemon_version: str = DEFAULT_DAEMON_VERSION,
                   sign_key: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                   marketplace_url: str | None = None, keep_pyproject: bool = False, prove: bool = True,
                   proof_python: str | None | bool = None, index_url: str | None = None,
                   env: dict | None = None) -> list[RepackResult]:
    """Repackage plugins for offline install; they share one download cache (``cache_dir``, default
    ``~/.cache/dify-airgap``). Each result has the output path, identifier, sizes, sha256 and signed flag.

    ``pkgs``: local .difypkg paths, marketplace references ``author/name:version``, or http(s) URLs.
    ``daemon_version``: the target plugin daemon (see ``daemon_version_from_compose``).
    ``sign_key``: PKCS#1 PEM private key; the package is then signed for third-party verification.
    ``prove``: install the dependencies with networking disabled and fail if that needs the network.
    ``env``: Dify .env values, to say which size limits must be raised."""
    if not pkgs:
        raise PluginError("no plugin given; pass a .difypkg path, author/name:version, or a URL")
    results = []
    for pkg in pkgs:
        results.append(repackage(pkg, out_dir, python=python, arch=arch, daemon_version=daemon_version,
                                 sign_key=sign_key, cache_dir=cache_dir, marketplace_url=marketplace_url,
                                 keep_pyproject=keep_pyproject, prove=prove, proof_python=proof_python,
                                 index_url=index_url, env=env))
    return results


def plan(pkgs: Sequence[str], out_dir: str | os.PathLike, *, python: str = DEFAULT_PYTHON,
         arch: str = DEFAULT_ARCH, daemon_version: str = DEFAULT_DAEMON_VERSION,
         sign_key: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
         marketplace_url: str | None = None) -> list[dict]:
    """What ``repackage_many`` would do, without downloading or writing anything (for --dry-run)."""
    target = Target(python, arch)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    install = daemon_install(daemon_version, {"requirements.txt"})   # what repackage writes by default
    mode, commands = proof_commands(target, None, "uv", install)
    rows = []
    for pkg in pkgs:
        ref = parse_ref(pkg)
        url = ref.download_url(marketplace_url)
        rows.append({
            "source": pkg, "kind": ref.kind, "download": url,
            "download_to": str(cache / "packages" / ref.cache_name()) if url else None,
            "resolve": shlex.join(["uv", "pip", "compile", "requirements.in", "--python-version", target.python,
                                   "--python-platform", target.uv_platform, "--only-binary", ":all:"]),
            "wheel_cache": str(cache / "wheels"), "target": target.describe(), "daemon_version": daemon_version,
            "signed_with": str(sign_key) if sign_key else None,
            "out_dir": str(Path(out_dir)),
            "daemon_rule": install.rule.name, "daemon_command": install.command,
            "proof": [shlex.join(["unshare", "-n", "--", *c]) for c in commands],
        })
    return rows


def signing_env(daemon_version: str, key_in_container: str) -> tuple[dict, list[str]]:
    """The plugin_daemon env that keeps signature verification ON with the site key, plus warnings.
    Daemons before 0.0.7 cannot use third-party keys: then FORCE_VERIFYING_SIGNATURE=false, warned."""
    if daemon_supports_third_party_keys(daemon_version):
        return ({"THIRD_PARTY_SIGNATURE_VERIFICATION_ENABLED": "true",
                 "THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS": key_in_container,
                 "FORCE_VERIFYING_SIGNATURE": "true"}, [])
    return ({"FORCE_VERIFYING_SIGNATURE": "false"},
            [f"plugin daemon {daemon_version} cannot verify third-party signatures (added in "
             f"{plugin_sign.THIRD_PARTY_KEYS_SINCE}); the only way to install these packages is "
             f"FORCE_VERIFYING_SIGNATURE=false, which accepts ANY unsigned package: upgrade the daemon "
             f"(Dify 1.x ships 0.5.x) to keep verification on"])


def results_json(results: Sequence[RepackResult]) -> str:
    return json.dumps([r.as_dict() for r in results], indent=2, default=str)
