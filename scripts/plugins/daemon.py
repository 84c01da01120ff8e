"""The plugin daemon: its runtime (Target) and how each daemon version installs a plugin's dependencies."""


import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging import tags
from packaging.version import InvalidVersion, Version

from scripts.core.errors import AirgapError
from scripts.dify.project import ComposeProject
from scripts.plugins import sign as plugin_sign
from scripts.plugins.common import ARCHES, DAEMON_IMAGE, DEFAULT_ARCH, DEFAULT_PYTHON, MANYLINUX_RANGE, PluginError

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
        version = tuple(int(p) for p in self.python.split("."))
        platforms = self.platforms()
        found = list(tags.cpython_tags(version, abis=[f"cp{self.py_nodot}"], platforms=platforms))
        found += list(tags.compatible_tags(version, f"cp{self.py_nodot}", platforms=platforms))
        return found

    def describe(self) -> str:
        low, high = MANYLINUX_RANGE
        return f"CPython {self.python} linux {self.machine} (manylinux_2_{low}..2_{high})"


def _version(text: str):
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


