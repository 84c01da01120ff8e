"""The plugin venvs inside a plugin daemon's working directory (``pyvenv.cfg``), and whether the interpreters
they point at exist in an image: :mod:`scripts.data.snapshot` refuses a snapshot whose venvs would break."""

from __future__ import annotations

import configparser
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scripts.core.errors import AirgapError
from scripts.engine.client import Engine


@dataclass
class Venv:
    path: str  # relative to the volume
    home: str
    version: str
    interpreters: list[str] = field(default_factory=list)  # absolute paths that must exist in the image
    missing: list[str] = field(default_factory=list)


def find_venvs(cwd: Path, volume: Path) -> list[Venv]:
    """Every plugin venv (a ``pyvenv.cfg``) below the daemon's working dir, with what it needs."""
    found = []
    if not cwd.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(cwd):
        if "pyvenv.cfg" in filenames:
            dirnames[:] = []  # never walk into a venv's site-packages
            venv = Path(dirpath)
            parser = configparser.ConfigParser()
            parser.read_string("[venv]\n" + (venv / "pyvenv.cfg").read_text(errors="replace"))
            cfg = parser["venv"]
            home = cfg.get("home", "").strip()
            version = (cfg.get("version_info") or cfg.get("version") or "").strip()
            needs = []
            if home:
                major_minor = ".".join(version.split(".")[:2])
                needs.append(f"{home.rstrip('/')}/python{major_minor or '3'}")
            link = venv / "bin" / "python"
            if link.is_symlink() and os.readlink(link).startswith("/"):
                needs.append(os.readlink(link))
            found.append(Venv(venv.relative_to(volume).as_posix(), home, version, list(dict.fromkeys(needs))))
        else:
            dirnames[:] = [d for d in dirnames if d not in ("site-packages", "node_modules", "__pycache__")]
    return found


def missing_in_image_argv(engine: Engine, image: str, paths: Sequence[str]) -> list[str]:
    """Print which of ``paths`` do not exist in ``image`` (a throwaway container, no network)."""
    script = 'for p in "$@"; do [ -e "$p" ] || echo "$p"; done'
    return ["run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image, "-c", script, "sh", *paths]


def check_venvs(engine: Engine, image: str, venvs: list[Venv]) -> list[Venv]:
    """Fill ``missing`` per venv; returns the broken ones (their interpreter is not in the image)."""
    paths = sorted({p for v in venvs for p in v.interpreters})
    if not paths:
        return []
    res = engine.run(missing_in_image_argv(engine, image, paths), timeout=300, check=False)
    if not res.ok:
        raise AirgapError(f"could not look inside {image} for the venvs' interpreters (needs /bin/sh in the "
                          f"image): {res.stderr.strip()[-500:]}")
    missing = set(res.stdout.split())
    for venv in venvs:
        venv.missing = [p for p in venv.interpreters if p in missing]
    return [v for v in venvs if v.missing]
