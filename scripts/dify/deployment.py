"""What `invoke install` deployed, recorded at ``PREFIX/dify-airgap.json`` for check/down/backup.

One install root (``--prefix``, default ``/opt/dify``)::

    PREFIX/docker/               Dify's docker/ directory from the bundle (compose runs here; volumes/ live here)
    PREFIX/docker/.env           rendered once, then kept and merged (mode 0600); middleware mode: middleware.env
    PREFIX/compose-overrides/    the overrides chosen for this host (offline, podman, selinux)
    PREFIX/dify-airgap.json      this record
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scripts.core.errors import BadInput
from scripts.core.inputs import read_json
from scripts.dify.project import MODES, StackMode, stack_mode
from scripts.engine.client import RUNTIMES, Engine

DEFAULT_PREFIX = "/opt/dify"
STATE_FILE = "dify-airgap.json"
PROJECT_NAME = "dify"


@dataclass
class Deployment:
    prefix: Path
    runtime: str
    dify_version: str = ""
    bundle: str = ""
    project_name: str = PROJECT_NAME
    compose_files: list[str] = field(default_factory=list)  # relative to project_dir, in -f order
    profiles: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)  # {"ref", "id", "services"} from the bundle manifest
    installed_at: str = ""
    compose_argv: list[str] = field(default_factory=list)  # e.g. the venv's podman-compose; empty: detect
    engine_env: dict[str, str] = field(default_factory=dict)  # e.g. DOCKER_HOST, CONTAINERS_STORAGE_CONF
    mode: str = "full"  # or "middleware": docker-compose.middleware.yaml with middleware.env (project.StackMode)

    @property
    def stack(self) -> StackMode:
        return stack_mode(self.mode)

    @property
    def project_dir(self) -> Path:
        return project_dir_for(self.prefix)

    @property
    def env_file(self) -> Path:
        return env_file_for(self.prefix, self.stack)

    @property
    def state_path(self) -> Path:
        return self.prefix / STATE_FILE

    def engine(self, dry_run: bool = False) -> Engine:
        return Engine(self.runtime, dry_run=dry_run, env=dict(self.engine_env),
                      compose_argv=tuple(self.compose_argv) or None)

    def compose(self, engine: Engine, args, **kwargs):
        """Run ``compose ARGS`` for this deployment (its files, env file, profiles, project name)."""
        return engine.compose_run(list(args), project_dir=str(self.project_dir), files=self.compose_files,
                                  env_file=str(self.env_file), profiles=self.profiles,
                                  project_name=self.project_name, **kwargs)

    def to_json(self) -> str:
        data = asdict(self)
        data["prefix"] = str(self.prefix)
        return json.dumps(data, indent=2) + "\n"

    def save(self) -> None:
        tmp = self.state_path.with_name(f".{STATE_FILE}.tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, self.state_path)


def project_dir_for(prefix: Path) -> Path:
    """Where an install under PREFIX keeps Dify's docker/ directory."""
    return Path(prefix) / "docker"


def env_file_for(prefix: Path, mode: StackMode | None = None) -> Path:
    """The .env (middleware mode: middleware.env) an install under PREFIX renders (mode 0600)."""
    return project_dir_for(prefix) / (mode.env_name if mode else ".env")


#: what check, down, backup and the data commands read from the record
RECORD_SCHEMA = {"runtime": str, "?prefix": (str, type(None)), "?dify_version": str, "?bundle": str,
                 "?project_name": str, "?compose_files": [str], "?profiles": [str], "?images": [dict],
                 "?installed_at": str, "?compose_argv": [str], "?engine_env": dict,
                 "?mode": str}


def load(prefix: str | os.PathLike = DEFAULT_PREFIX) -> Deployment:
    path = Path(prefix) / STATE_FILE
    if Path(prefix).exists() and not Path(prefix).is_dir():
        raise BadInput(f"--prefix {prefix} is a file, not an install root (a directory holding {STATE_FILE})")
    if not path.exists():
        raise BadInput(f"no dify-airgap deployment at {prefix} ({path} is missing); "
                       "run `invoke install BUNDLE --prefix ...` first, or pass the right --prefix")
    fix = "re-run `invoke install BUNDLE --prefix ...` to rewrite it"
    data = read_json(path, "the install record", fix, RECORD_SCHEMA)
    if data["runtime"] not in RUNTIMES:
        raise BadInput(f"{path}: runtime {data['runtime']!r} is not one of {', '.join(RUNTIMES)}", hint=fix)
    if data.get("mode", "full") not in MODES:
        raise BadInput(f"{path}: mode {data['mode']!r} is not one of {', '.join(MODES)}", hint=fix)
    data["prefix"] = Path(data.get("prefix") or prefix)
    known = set(Deployment.__dataclass_fields__)
    return Deployment(**{k: v for k, v in data.items() if k in known})


def expect_mode(prefix: str | os.PathLike, middleware: bool) -> Deployment:
    """The deployment at PREFIX; with ``middleware`` it must be the middleware stack (a script's guard)."""
    record = load(prefix)
    if middleware and not record.stack.middleware:
        raise BadInput(f"{prefix} runs the {record.mode} Dify stack, not the middleware one (--middleware)",
                       hint="drop --middleware, or pass the --prefix the middleware stack was installed under")
    return record
