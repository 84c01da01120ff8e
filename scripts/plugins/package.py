"""A .difypkg: where it comes from (marketplace, URL, file), safe extraction, its manifest.yaml."""


import hashlib
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlparse

import requests
import yaml

from scripts.core.console import LOG
from scripts.core.extract import SafeTree, copy_capped
from scripts.core.inputs import shape_problem
from scripts.plugins.common import (
    _MARKET_REF,
    CACHE_ENV,
    DEFAULT_MARKETPLACE_URL,
    MARKETPLACE_ENV,
    MAX_MEMBER_SIZE,
    MAX_TOTAL_SIZE,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    MAX_YAML_SIZE,
    PluginError,
    UnsafeArchive,
    check_members,
)
from scripts.plugins.sign import package_errors

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

def safe_extract(package: str | os.PathLike, dest: str | os.PathLike, max_member: int = MAX_MEMBER_SIZE,
                 max_total: int = MAX_TOTAL_SIZE) -> list[str]:
    """Extract a package into ``dest`` after checking every member (:func:`check_members`); files are created
    new (never replacing or writing through anything), below real directories of ``dest`` only, and sizes are
    enforced on the real decompressed bytes, not only the declared ones. Returns the names."""
    package, dest = Path(package), Path(dest)
    try:
        zf = zipfile.ZipFile(package)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PluginError(f"{package} is not a readable .difypkg (zip): {exc}") from None
    with zf, package_errors(package):
        members = check_members(zf, package.name, max_member, max_total)
        tree = SafeTree(dest, package.name, UnsafeArchive)
        names = []
        for info in members:
            with zf.open(info) as src, tree.open_new(PurePosixPath(info.filename), info.filename) as dst:
                copy_capped(src, dst, min(info.file_size, max_member), info.filename, package.name, UnsafeArchive)
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


class _UntrustedYaml(yaml.YAMLError):
    """Raised by :class:`_StrictLoader`: the document is refused, not merely malformed."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader for an untrusted manifest.yaml: no anchors or aliases (a "billion laughs" alias bomb costs
    nothing to load and explodes when used), at most MAX_YAML_NODES nodes, nested MAX_YAML_DEPTH deep."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self.nodes = self.depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _UntrustedYaml(f"anchor/alias {event.anchor!r} at line {event.start_mark.line + 1}: YAML anchors "
                                 f"and aliases are refused in a plugin manifest (alias bomb)")
        self.nodes, self.depth = self.nodes + 1, self.depth + 1
        if self.nodes > MAX_YAML_NODES or self.depth > MAX_YAML_DEPTH:
            raise _UntrustedYaml(f"more than {MAX_YAML_NODES} nodes or {MAX_YAML_DEPTH} levels at line "
                                 f"{event.start_mark.line + 1}: refused")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def load_untrusted_yaml(path: Path, where: str, max_size: int = MAX_YAML_SIZE):
    """A small YAML file from a package, size-capped BEFORE it is read, parsed by :class:`_StrictLoader`."""
    size = path.stat().st_size
    if size > max_size:
        raise UnsafeArchive(f"{where}: {path.name} is {size} bytes, over the {max_size}-byte limit: refused unread")
    try:
        with open(path, "rb") as fh:
            text = fh.read(max_size + 1).decode("utf-8")
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _UntrustedYaml as exc:
        raise UnsafeArchive(f"{where}: {path.name} refused: {exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PluginError(f"{where}: {path.name} does not parse: {exc}") from None


def read_manifest(workdir: str | os.PathLike, source: str = "") -> Manifest:
    path = Path(workdir) / "manifest.yaml"
    where = source or str(path)
    if not path.is_file():
        raise PluginError(f"{where} has no manifest.yaml at its root; is it a Dify plugin package?")
    raw = load_untrusted_yaml(path, where) or {}
    if not isinstance(raw, dict):
        raise PluginError(f"{where}: manifest.yaml is not a mapping")
    problem = shape_problem(raw, {"?meta": (dict, type(None))}) or shape_problem(
        raw.get("meta") or {}, {"?runner": (dict, type(None)), "?arch": (list, type(None))})
    if problem:
        raise PluginError(f"{where}: manifest.yaml is not a Dify plugin manifest ({problem})")
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


