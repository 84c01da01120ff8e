"""Where the Dify compose project (its ``docker/`` directory) and its env file are."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import AirgapError

DEFAULT_VERSION = "1.11.3"
PROJECT_ENV_VAR = "DIFY_AIRGAP_PROJECT_DIR"
COMPOSE_FILE = "docker-compose.yaml"


def candidates(version: str = DEFAULT_VERSION) -> list[Path]:
    """Where a Dify ``docker/`` directory is looked for when ``--project-dir`` is not given."""
    found = []
    if os.environ.get(PROJECT_ENV_VAR):
        found.append(Path(os.environ[PROJECT_ENV_VAR]))
    found += [Path(f"dify-{version}/docker"), Path(f"dify-{version}"), Path("dify/docker"), Path("docker")]
    return found


def resolve_project_dir(project_dir: str | os.PathLike | None, version: str = DEFAULT_VERSION) -> Path:
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


def resolve_env_file(project_dir: Path, env_file: str | os.PathLike | None = None) -> Path:
    """``--env-file`` if given, else the project's ``.env`` if present, else its ``.env.example``."""
    if env_file:
        path = Path(env_file).expanduser()
        if not path.is_file():
            raise AirgapError(f"env file {path} does not exist; pass an existing --env-file")
        return path.resolve()
    for name in (".env", ".env.example"):
        if (project_dir / name).is_file():
            return project_dir / name
    raise AirgapError(f"{project_dir} has neither .env nor .env.example; pass --env-file")
