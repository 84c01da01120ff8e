"""A Dify release's env layers (1.14+: ``envs/**/*.env.example``) beyond ``.env.example``.

:func:`release_layers` reads which keys the layer examples declare, which services read which envs file and
which keys compose interpolates (:class:`ReleaseLayers`); :func:`render_layer_file` writes one ``envs/X.env``
for a service that reads it without ``.env``. :mod:`scripts.dify.envfile` renders ``.env`` on top of them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scripts.dify.envcheck import compose_text
from scripts.dify.envsyntax import _read_text, env_from_lines, parse_lines, read_env, render_text, write_atomic
from scripts.dify.project import ComposeProject


@dataclass
class ReleaseLayers:
    """The keys a release declares in ``envs/**/*.env.example`` but not in ``.env.example``.

    ``defaults``: key -> the example's value (first file wins); ``origin``: key -> the file(s) naming it;
    ``own_files``: envs files some service reads WITHOUT also reading ``.env`` (a value for one of their
    keys must be written into that file itself, e.g. 1.16's local-sandbox.env).
    """

    defaults: dict[str, str] = field(default_factory=dict)
    origin: dict[str, list[str]] = field(default_factory=dict)
    own_files: set[str] = field(default_factory=set)
    interpolated: set[str] = field(default_factory=set)
    dotenv_readers: set[str] = field(default_factory=set)  #: services given ./.env whole (env_file)

    def files_for(self, key: str) -> list[str]:
        """Where a value for ``key`` must be written besides ``.env`` (empty: .env alone reaches every reader)."""
        if key in self.interpolated:
            return []
        return [f for f in self.origin.get(key, []) if f in self.own_files]


def release_layers(project_dir: Path, example: Mapping[str, str]) -> ReleaseLayers:
    """Read the release's ``envs/**`` layer examples and which services read which file (see ReleaseLayers)."""
    project = ComposeProject(Path(project_dir))
    layers = ReleaseLayers()
    examples = project.env_examples()
    if not examples:
        return layers
    for rel in examples:
        for key, value in read_env(project_dir / rel).items():
            if key in example:
                continue
            layers.defaults.setdefault(key, value)
            layers.origin.setdefault(key, []).append(rel[: -len(".example")])
    for name in project.services():
        files = [ref.path for ref in project.env_files(name)]
        if ".env" in files:
            layers.dotenv_readers.add(name)
        if files and ".env" not in files:
            layers.own_files.update(f for f in files if f.startswith("envs/"))
    text = compose_text(project_dir, False)
    layers.interpolated = {k for k in layers.defaults if re.search(r"\$\{?" + re.escape(k) + r"\b", text)}
    return layers


#: ``${KEY}``, ``${KEY:-default}``, ``${KEY-default}`` in a compose file (``$${...}`` is an escaped dollar)
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def middleware_layers(project_dir: Path, example: Mapping[str, str]) -> ReleaseLayers:
    """The keys the middleware compose file interpolates that its example does not declare (e.g.
    ``EXPOSE_WEAVIATE_GRPC_PORT``), with the file's own default: settable, written to middleware.env only
    when set (compose reads that file for interpolation)."""
    from_compose = compose_text(project_dir, True)
    layers = ReleaseLayers()
    for m in INTERPOLATION.finditer(from_compose):
        key = m.group(1)
        if key not in example and key not in layers.defaults:
            layers.defaults[key] = m.group(2) or ""
            layers.origin[key] = ["docker-compose.middleware.yaml"]
            layers.interpolated.add(key)
    return layers


def render_layer_file(project_dir: Path, rel: str, values: Mapping[str, str], dry_run: bool) -> bool:
    """Write ``envs/X.env`` from ``envs/X.env.example`` with ``values`` in place (0600); True if changed."""
    example = project_dir / f"{rel}.example"
    lines = parse_lines(_read_text(example))
    known = env_from_lines(lines)
    text = render_text(lines, {k: v for k, v in values.items() if k in known})
    out = project_dir / rel
    if out.is_file() and _read_text(out) == text:
        return False
    if not dry_run:
        write_atomic(out, text)
    return True
