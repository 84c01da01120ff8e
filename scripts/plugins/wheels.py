"""A plugin's dependencies: resolution to binary wheels for the daemon's Python, and the offline files."""


import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import requests
from packaging.markers import InvalidMarker, Marker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from scripts.core.console import LOG, human_size
from scripts.plugins import sign as plugin_sign
from scripts.plugins.common import (
    _INDEX_OPTION,
    DEFAULT_INDEX_URL,
    DEFAULT_PYTHON,
    DEP_FILES,
    INDEX_ENV,
    MANYLINUX_RANGE,
    MissingWheels,
    PluginError,
)
from scripts.plugins.daemon import Target
from scripts.plugins.package import _download

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
    try:  # the `uv` wheel is optional at run time: a bundle's toolkit may use uv from PATH
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


_REQ_INCLUDE = re.compile(r"^\s*(-e|--editable|-r|--requirement|-c|--constraint)(\s|=|$)")
_ARCHIVE_NAME = re.compile(r"\.(whl|zip|tar|tgz|tbz2|txz|tar\.gz|tar\.bz2|tar\.xz)$", re.I)


def _logical_lines(text: str) -> list[str]:
    """A requirements file's lines with ``\\`` continuations joined and comments removed."""
    joined = re.sub(r"\\\r?\n", " ", text)
    return [re.sub(r"(^|\s)#.*$", "", line).strip() for line in joined.splitlines()]


def requirement_problem(line: str) -> str | None:
    """Why a requirement line would make the resolver fetch or BUILD something that is not an index release
    (None: a plain ``name[extras] specifier ; marker``, resolved to wheels from the index only)."""
    if _REQ_INCLUDE.match(line):
        return "an editable install or an include of another file"
    text = re.split(r"\s+--?[a-z]", line, maxsplit=1)[0].strip()   # per-requirement options (--hash=...)
    try:
        req = Requirement(text)
    except InvalidRequirement:
        return "a local path, VCS or direct URL (not a name from the package index)"
    if req.url:
        return f"a direct URL ({req.url})"
    if _ARCHIVE_NAME.search(req.name) or "/" in text.split(";")[0] or "\\" in text:
        return "a local file or directory"
    return None


def check_requirements(text: str, source: str, where: str) -> None:
    """Refuse, naming it, any requirement that is not a plain index requirement: building or fetching it
    would run the plugin's code (a local project's build backend) or reach outside the index."""
    bad = []
    for line in _logical_lines(text):
        if line and not (line.startswith("-") and not _REQ_INCLUDE.match(line)):
            problem = requirement_problem(line)
            if problem:
                bad.append(f"{line!r}: {problem}")
    if bad:
        raise PluginError(f"{source}: {where} asks for what is not a release on the package index, refused (it "
                          f"would be built or fetched from elsewhere):\n  " + "\n  ".join(bad)
                          + f"\nPublish those as wheels on an index (${INDEX_ENV}) and require them by name.")


def _load_toml(text: str) -> dict:
    try:  # conditional: tomllib is stdlib only from Python 3.11
        import tomllib
    except ImportError:                     # Python < 3.11
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PluginError(f"does not parse ({exc})") from None


def check_pyproject(text: str, source: str) -> None:
    """pyproject.toml: no dynamic dependencies (they need a build), no [tool.uv.sources] path/git/url, and
    every dependency a plain index requirement (:func:`check_requirements`)."""
    try:
        data = _load_toml(text)
    except PluginError as exc:
        raise PluginError(f"{source}: pyproject.toml {exc}") from None
    project = data.get("project") or {}
    dynamic = [d for d in project.get("dynamic") or [] if d in ("dependencies", "optional-dependencies")]
    if dynamic:
        raise PluginError(f"{source}: pyproject.toml declares dynamic {', '.join(dynamic)}: computing them runs "
                          f"the plugin's build backend, refused; list the dependencies statically")
    sources = ((data.get("tool") or {}).get("uv") or {}).get("sources") or {}
    local = [f"{name} = {entry}" for name, entry in sources.items()
             if any(k in (entry if isinstance(entry, dict) else {}) for k in ("path", "git", "url", "workspace"))
             or not isinstance(entry, dict)]
    if local:
        raise PluginError(f"{source}: pyproject.toml [tool.uv.sources] points outside the package index, "
                          f"refused: {'; '.join(local)}")
    deps = [*(project.get("dependencies") or []),
            *(d for group in (project.get("optional-dependencies") or {}).values() for d in group)]
    check_requirements("\n".join(str(d) for d in deps), source, "pyproject.toml")


def _export_lock(workdir: Path, source: str, tmp: Path) -> str:
    """uv.lock as requirements, exported from a copy of pyproject.toml + uv.lock alone (no plugin config)."""
    project = tmp / "project"
    project.mkdir()
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copyfile(workdir / name, project / name)
    # `--no-dev`, not the Dify CLI's `--no-group dev`: that one fails when no dev group is defined.
    proc = _run([uv_bin(), "export", "--frozen", "--no-build", "--format", "requirements.txt", "--no-dev",
                 "--no-emit-project", "--no-hashes", "--no-header", "--no-annotate"], cwd=project,
                env=_resolver_env())
    if proc.returncode != 0:
        raise PluginError(f"{source}: `uv export` from uv.lock failed:\n    {_tail(proc.stderr)}")
    return proc.stdout


def requirements_input(workdir: Path, source: str, tmp: Path, with_pyproject: bool = False) -> list[Path]:
    """The plugin's dependency list as uv compile inputs, copied into ``tmp``: requirements.txt, else uv.lock
    (exported the way the Dify CLI does), else pyproject.toml; plus pyproject.toml when it is kept for `uv
    sync`. Anything but plain index requirements is refused first (:func:`check_requirements`)."""
    req, pyproject, lock = (workdir / name for name in DEP_FILES)
    if pyproject.is_file() and (with_pyproject or not req.is_file()):
        check_pyproject(pyproject.read_text(encoding="utf-8"), source)
        shutil.copyfile(pyproject, tmp / "pyproject.toml")
    if req.is_file():
        text, where = req.read_text(encoding="utf-8"), "requirements.txt"
    elif pyproject.is_file() and lock.is_file():
        text, where = _export_lock(workdir, source, tmp), "uv.lock"
    elif pyproject.is_file():
        return [tmp / "pyproject.toml"]
    else:
        raise PluginError(f"{source} has neither requirements.txt nor pyproject.toml; the plugin daemon needs one")
    text = strip_index_options(text)
    check_requirements(text, source, where)
    infile = tmp / "requirements.in"
    infile.write_text(text, encoding="utf-8")
    return [infile, *([tmp / "pyproject.toml"] if with_pyproject and pyproject.is_file() else [])]


def _resolver_env() -> dict:
    """uv for resolution: no configuration file discovered (a plugin's uv.toml / [tool.uv] is ignored)."""
    return _uv_env(UV_NO_CONFIG="1")


def _uv_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    env.update(extra)
    return env


# name[extras]==version [; marker]
_PIN_LINE = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)(\s*;.*)?")


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
        m = _PIN_LINE.fullmatch(line)
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
        # never build: a build runs code (the plugin's own backend for a local project, or an sdist's)
        proc = _run(base + ["--only-binary", ":all:"], cwd=Path(tmp), env=_resolver_env())
        if proc.returncode == 0:
            return _parse_pins(proc.stdout, source)
        LOG.info("%s: no wheel-only resolution for %s; finding which packages lack wheels", source, target.describe())
        loose = _run(base + ["--no-build"], cwd=Path(tmp), env=_resolver_env())
        # uv cannot read an sdist-only release's metadata without building it: then the exact pins the
        # plugin lists are what can be checked one by one
        pins = _parse_pins(loose.stdout, source) if loose.returncode == 0 else _exact_pins(inputs[0], target)
    missing = []
    for pin in pins:
        try:
            select_wheel(pin, target, index_url)
        except MissingWheels as exc:
            missing.extend(exc.missing)
    if not missing and loose.returncode != 0:
        raise PluginError(f"{source}: dependencies do not resolve for {target.describe()}:\n    "
                          f"{_tail(proc.stderr)}")
    if not missing:
        raise PluginError(f"{source}: uv found no wheel-only resolution for {target.describe()}:\n    "
                          f"{_tail(proc.stderr)}")
    raise missing_wheels_error(source, target, missing)


def _exact_pins(infile: Path, target: Target) -> list[Pin]:
    """The ``name==version`` lines of a requirements input that apply to ``target`` (their environment marker,
    if any, evaluated for the daemon's Linux CPython); other lines are not checkable one by one."""
    if infile.suffix == ".toml":
        return []
    found = []
    for raw in infile.read_text(encoding="utf-8").splitlines():
        m = _PIN_LINE.fullmatch(raw.split("#", 1)[0].strip())
        if m and _applies(m.group(4), target):
            found.append(Pin(m.group(1), m.group(3)))
    return found


def _applies(marker: str | None, target: Target) -> bool:
    """Does ``; MARKER`` hold on the daemon (linux, CPython ``target.python``, ``target.machine``)? A marker
    that does not parse is kept: checking a pin too many is better than one too few."""
    if not marker or not marker.strip().lstrip(";").strip():
        return True
    try:
        parsed = Marker(marker.strip().lstrip(";").strip())
    except InvalidMarker:
        return True
    try:
        return _evaluate(parsed, target)
    except (UndefinedComparison, UndefinedEnvironmentName):  # `python_version ~= "3"`: not decidable here
        return True


def _evaluate(parsed: Marker, target: Target) -> bool:
    return parsed.evaluate({
        "python_version": target.python, "python_full_version": f"{target.python}.0",
        "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
        "platform_machine": target.machine, "implementation_name": "cpython",
        "platform_python_implementation": "CPython", "extra": ""})


def missing_wheels_error(source: str, target: Target, missing: Sequence[tuple[str, str]]) -> MissingWheels:
    lines = "\n".join(f"  - {req}: {reason}" for req, reason in missing)
    return MissingWheels(f"{source}: {len(missing)} dependenc{'y has' if len(missing) == 1 else 'ies have'} no "
                         f"wheel for {target.describe()}:\n{lines}\nThe daemon cannot build sdists offline: pin a "
                         f"version that ships such wheels, or build the wheels (e.g. `pip wheel` on a matching "
                         f"machine) and serve them from an index given by ${INDEX_ENV}.", missing)


_LISTINGS: dict[tuple[str, str], list[dict]] = {}


def _project_files(name: str, index_url: str | None) -> list[dict]:
    """All files of a project from the simple index (PEP 691 JSON, else PEP 503 HTML), memoised."""
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
        lock = _load_toml(lock_text)
    except PluginError as exc:
        return [f"uv.lock {exc}"]
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


def relock_offline(workdir: Path, source: str, python: str | None = None) -> int:
    """Rewrite uv.lock against ./wheels only, with no network (the pyproject already has our [tool.uv]).
    ``python``: an interpreter of the daemon's version for uv to run (the plugin's requires-python is often
    ">=3.12"; left to uv, it takes the first python3.12 on PATH, and a broken one -- a pyenv shim of a version
    not enabled -- fails the lock). Returns the number of locked packages; fails if any source is still remote."""
    prefix, _label = isolation_prefix()
    with tempfile.TemporaryDirectory(prefix="dal-lock-") as tmp:
        env = _uv_env(UV_CACHE_DIR=tmp, UV_OFFLINE="1")
        (workdir / "uv.lock").unlink(missing_ok=True)
        argv = [uv_bin(), "lock", "--no-build", *(["--python", python] if python else [])]  # never a build
        proc = _run(prefix + argv, cwd=workdir, env=env)
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


_UV_LOG = re.compile(r"^\s*(\d+(\.\d+)?m?s\s+)*(DEBUG|TRACE|INFO)\b|^\s*(uv|uv_\w+)::|^\s+\d+(\.\d+)?m?s\s")


def _uv_error(text: str, lines: int = 12) -> str:
    """uv's own error lines from verbose output (-v/-vvv floods stderr with DEBUG lines)."""
    kept = [line for line in text.splitlines() if line.strip() and not _UV_LOG.search(line)]
    return _tail("\n".join(kept) if kept else text, lines)
