"""Where the Dify compose project (its ``docker/`` directory) and its env file are."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scripts.core.errors import AirgapError, BadInput

PROJECT_ENV_VAR = "DIFY_AIRGAP_PROJECT_DIR"
COMPOSE_FILE = "docker-compose.yaml"
MIDDLEWARE_COMPOSE = "docker-compose.middleware.yaml"
MIDDLEWARE_EXAMPLE = "middleware.env.example"


@dataclass(frozen=True)
class StackMode:
    """Which of the release's two compose stacks: the full Dify (``docker-compose.yaml`` with ``.env``), or
    the middleware a developer's api runs against (``docker-compose.middleware.yaml`` with ``middleware.env``:
    databases, redis, sandbox, plugin daemon, SSRF proxy, vector store; no api, web or nginx)."""

    name: str
    compose_file: str
    env_name: str

    @property
    def middleware(self) -> bool:
        return self.name == "middleware"

    def example(self, project_dir: Path) -> Path:
        """The env example of this stack in ``project_dir`` (the middleware one moved to ``envs/`` in 1.14)."""
        return middleware_example(project_dir) if self.middleware else Path(project_dir) / ".env.example"


FULL = StackMode("full", COMPOSE_FILE, ".env")
MIDDLEWARE = StackMode("middleware", MIDDLEWARE_COMPOSE, "middleware.env")
MODES = {m.name: m for m in (FULL, MIDDLEWARE)}


def stack_mode(middleware: bool | str | None) -> StackMode:
    """``True`` / ``"middleware"`` -> MIDDLEWARE; ``False`` / ``None`` / ``"full"`` / ``""`` -> FULL."""
    if isinstance(middleware, str) and middleware:
        if middleware not in MODES:
            raise BadInput(f"unknown stack mode {middleware!r} (known: {', '.join(MODES)})")
        return MODES[middleware]
    return MIDDLEWARE if middleware is True else FULL


def middleware_example(project_dir: Path) -> Path:
    """The middleware (dev compose) example: ``middleware.env.example`` up to 1.13, ``envs/middleware.env.example``
    from 1.14 (the compose file reads ``./middleware.env`` in both)."""
    # envs/ first: a 1.14+ tree installed over a 1.11 one still holds the old top-level file (nothing is deleted)
    for candidate in (Path(project_dir) / "envs" / MIDDLEWARE_EXAMPLE, Path(project_dir) / MIDDLEWARE_EXAMPLE):
        if candidate.is_file():
            return candidate
    return Path(project_dir) / MIDDLEWARE_EXAMPLE  # missing: the caller names it


def candidates(version: str | None = None) -> list[Path]:
    """Where a Dify ``docker/`` directory is looked for when ``--project-dir`` is not given."""
    found = []
    if os.environ.get(PROJECT_ENV_VAR):
        found.append(Path(os.environ[PROJECT_ENV_VAR]))
    if version:
        found += [Path(f"dify-{version}/docker"), Path(f"dify-{version}")]
    return [*found, Path("dify/docker"), Path("docker")]


def resolve_project_dir(project_dir: str | os.PathLike | None, version: str | None = None) -> Path:
    """The compose project directory: ``--project-dir``, else $DIFY_AIRGAP_PROJECT_DIR, else a known place."""
    if project_dir:
        path = Path(project_dir).expanduser()
        if not (path / COMPOSE_FILE).is_file():
            raise AirgapError(f"{path} has no {COMPOSE_FILE}; pass --project-dir pointing at Dify's docker/ "
                              f"directory (it holds docker-compose.yaml and .env.example)")
        return path.resolve()
    for path in candidates(version):
        if (path / COMPOSE_FILE).is_file():
            return path.resolve()
    tried = ", ".join(str(p) for p in candidates(version))
    raise AirgapError(f"no Dify compose project found (looked in: {tried}); pass --project-dir DIR "
                      f"or set ${PROJECT_ENV_VAR}")


def resolve_env_file(project_dir: Path, env_file: str | os.PathLike | None = None, mode: StackMode = FULL) -> Path:
    """``--env-file`` if given, else the project's ``.env`` if present, else its ``.env.example``
    (middleware mode: ``middleware.env``, else the release's middleware example)."""
    if env_file:
        path = Path(env_file).expanduser()
        if not path.is_file():
            raise AirgapError(f"env file {path} does not exist; pass an existing --env-file")
        return path.resolve()
    for path in (project_dir / mode.env_name, mode.example(project_dir)):
        if path.is_file():
            return path
    raise AirgapError(f"{project_dir} has neither {mode.env_name} nor {mode.example(project_dir).name}; "
                      f"pass --env-file")


# --- the compose project as data ------------------------------------------------------------------

class _ComposeLoader(yaml.SafeLoader):
    """The safe loader plus compose's merge tags (``!override``, ``!reset``): their value as written
    (``!reset``: nothing). Our own overrides use ``!override`` (install.host_gateway_override)."""


def _merge_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node):
    if suffix == "reset":
        return None
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_ComposeLoader.add_multi_constructor("!", lambda loader, suffix, node:
                                     _merge_tag(loader, suffix, node) if suffix in ("override", "reset")
                                     else loader.construct_undefined(node))


def load_compose_yaml(text: str):
    """A compose file's YAML (safe; compose's ``!override`` / ``!reset`` understood, any other tag refused)."""
    return yaml.load(text, Loader=_ComposeLoader)  # noqa: S506 - a SafeLoader subclass


DIFY_API_IMAGE = "langgenius/dify-api"
DAEMON_IMAGE = "langgenius/dify-plugin-daemon"
ENVS_DIR = "envs"
#: The largest compose file read (Dify's is ~75 KB); YAML is parsed with the safe loader only.
MAX_COMPOSE_BYTES = 4 << 20


@dataclass(frozen=True)
class EnvFileRef:
    """One ``env_file`` entry of a service: ``path`` relative to the project, ``required`` as compose reads it."""

    path: str
    required: bool = True


@dataclass
class ComposeProject:
    """A Dify ``docker/`` directory read as data: services, images, env layers, versions, layout.

    Works on every release layout: one ``.env`` (1.11-1.13) and ``.env`` plus ``envs/**`` (1.14+,
    where several services list ``env_file: ./.env`` as required and optional ``envs/...`` files).
    Nothing here runs compose; :meth:`staged` gives a copy compose can read when ``.env`` is missing.
    """

    directory: Path
    files: tuple[str, ...] = (COMPOSE_FILE,)
    _docs: list[dict] | None = field(default=None, init=False, repr=False)

    def documents(self) -> list[dict]:
        if self._docs is None:
            docs = []
            for name in self.files:
                path = self.directory / name
                try:
                    if path.stat().st_size > MAX_COMPOSE_BYTES:
                        raise AirgapError(f"{path} is larger than {MAX_COMPOSE_BYTES >> 20} MiB: not a compose file")
                    doc = load_compose_yaml(path.read_text(encoding="utf-8")) or {}
                except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not UTF-8
                    raise BadInput(f"cannot read compose file {path}: {exc}",
                                   hint="pass Dify's docker/ directory of a release") from None
                services = doc.get("services") if isinstance(doc, dict) else None
                if not isinstance(doc, dict) or not isinstance(services or {}, dict) \
                        or not all(isinstance(svc or {}, dict) for svc in (services or {}).values()):
                    raise BadInput(f"{path} is not a compose file (its top level or its services are not a mapping)",
                                   hint="pass Dify's docker/ directory of a release")
                docs.append(doc)
            self._docs = docs
        return self._docs

    def services(self) -> dict[str, dict]:
        """Services as written (later files override earlier ones key by key, as compose merges)."""
        merged: dict[str, dict] = {}
        for doc in self.documents():
            for name, svc in (doc.get("services") or {}).items():
                merged[name] = {**merged.get(name, {}), **(svc or {})}
        return merged

    def image_tag(self, repository: str) -> str:
        """The tag of the first service image from ``repository`` ("" when none)."""
        for svc in self.services().values():
            image = str(svc.get("image") or "")
            name, _, tag = image.rpartition(":")
            if tag and (name == repository or name.endswith("/" + repository)):
                return tag
        return ""

    @property
    def dify_version(self) -> str:
        """The Dify release the compose file runs: the ``langgenius/dify-api`` tag (``v`` dropped)."""
        return self.image_tag(DIFY_API_IMAGE).lstrip("v")

    @property
    def daemon_version(self) -> str:
        """The plugin daemon version: ``langgenius/dify-plugin-daemon:0.6.3-local`` -> ``0.6.3``."""
        m = re.match(r"v?(\d+(?:\.\d+){1,3})", self.image_tag(DAEMON_IMAGE))
        return m.group(1) if m else ""

    def env_files(self, service: str) -> list[EnvFileRef]:
        """The service's ``env_file`` entries in compose's order (later ones win), paths normalised."""
        raw = (self.services().get(service) or {}).get("env_file") or []
        entries = [raw] if isinstance(raw, (str, dict)) else raw
        refs = []
        for entry in entries:
            path, required = (entry, True) if isinstance(entry, str) else (entry.get("path", ""),
                                                                             entry.get("required", True) is not False)
            refs.append(EnvFileRef(os.path.normpath(path), bool(required)))
        return refs

    @property
    def layered(self) -> bool:
        """True for the 1.14+ layout: settings split into ``envs/**`` files that services read."""
        return any(ref.path.startswith(ENVS_DIR + os.sep) for svc in self.services()
                   for ref in self.env_files(svc))

    def env_examples(self) -> list[str]:
        """``envs/**/*.env.example`` relative paths, sorted (empty before 1.14)."""
        root = self.directory / ENVS_DIR
        if not root.is_dir():
            return []
        return sorted(str(p.relative_to(self.directory)) for p in root.rglob("*.env.example") if p.is_file())

    @contextmanager
    def staged(self, env_file: Path) -> Iterator[Path]:
        """A throwaway copy compose can read: the compose files, ``envs/`` and ``env_file`` as ``.env``.

        Since 1.14 ``compose config`` fails without ``.env`` (``--env-file`` does not count), which is
        how every fresh checkout and release download looks; the project itself is never written.
        """
        with tempfile.TemporaryDirectory(prefix="dal-plan-") as tmp:
            root = Path(tmp)
            for name in self.files:
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.directory / name, root / name)
            for rel in self.env_examples():
                for candidate in (rel, rel[: -len(".example")]):
                    if (self.directory / candidate).is_file():
                        (root / candidate).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(self.directory / candidate, root / candidate)
            shutil.copyfile(env_file, root / ".env")
            if MIDDLEWARE_COMPOSE in self.files:  # its services list ./middleware.env as a required env_file
                shutil.copyfile(env_file, root / MIDDLEWARE.env_name)
            yield root
