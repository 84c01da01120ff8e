"""The .env file syntax as Compose reads it: parse, interpolate, format and write values byte-stably.

:func:`render_text` puts new values into an example's lines (the rest byte-identical) and appends the
blocks ``invoke env`` adds at the end; rendering ``.env``, an upgrade merge and an ``envs/**`` file all use it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from scripts.core.errors import AirgapError
from scripts.core.files import write_file_atomic
from scripts.core.inputs import output_file, read_text
from scripts.dify.envsecrets import is_secret_key

# --- parsing -------------------------------------------------------------------------------------

_ASSIGN = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")


@dataclass
class Line:
    raw: str
    key: str | None = None
    value: str | None = None
    literal: bool = False  # single-quoted (or only $$ escapes): compose does not interpolate it


class Raw(str):
    """A value read from a file that remembers how it was written there (``token``, the text after ``=``):
    :func:`format_value` writes it back byte for byte, so a value read and written again never changes (a
    re-quoted or re-escaped value drifts: ``$`` doubled, quotes changed) and keeps what compose saw."""

    token: str

    def __new__(cls, value: str, token: str) -> Raw:
        obj = super().__new__(cls, value)
        obj.token = token
        return obj

    def __getnewargs__(self) -> tuple[str, str]:  # copy/deepcopy (dataclasses.asdict) and pickle keep the token
        return str(self), self.token


class EnvDict(dict):
    """An ordered ``{key: value}`` that remembers which values were single-quoted (literal)."""

    literal: set[str]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.literal = set()


def _dollars(text: str) -> tuple[str, bool]:
    """Compose interpolates unquoted and double-quoted values: ``$$`` is a literal ``$``, any other ``$`` starts a
    reference. A value whose only ``$`` are ``$$`` pairs is decoded to its literal text (literal=True); one with a
    reference stays raw (``resolve_all`` interpolates it, ``$$`` included)."""
    if "$" not in text or "$" in text.replace("$$", ""):
        return text, False
    return text.replace("$$", "$"), True


def parse_value(raw: str) -> tuple[str, bool]:
    """Unquote a dotenv value as compose does. Returns (value, literal)."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == "'" and text.find("'", 1) > 0:
        return text[1:text.find("'", 1)], True
    if len(text) >= 2 and text[0] == '"':
        out, i = [], 1
        while i < len(text):
            ch = text[i]
            if ch == "\\" and i + 1 < len(text):
                nxt = text[i + 1]
                out.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}.get(nxt, "\\" + nxt))
                i += 2
                continue
            if ch == '"':
                break
            out.append(ch)
            i += 1
        return _dollars("".join(out))
    cut = re.search(r"\s#", text)
    if cut:
        text = text[:cut.start()]
    return _dollars(text.strip())


def split_lines(text: str) -> list[str]:
    """Lines as compose splits them: at ``\n`` (a ``\r`` before it dropped), never at the other characters
    ``str.splitlines`` breaks at (``\x0b``, ``\x85``, ``\u2028``...), which a value may hold."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def parse_lines(text: str) -> list[Line]:
    lines = []
    for raw in split_lines(text):
        m = _ASSIGN.match(raw)
        if m and not raw.lstrip().startswith("#"):
            value, literal = parse_value(m.group(2))
            lines.append(Line(raw, m.group(1), Raw(value, m.group(2)), literal))
        else:
            lines.append(Line(raw))
    return lines


def _read_text(path: Path) -> str:
    """The file's text; a UTF-8 byte order mark (Windows editors) is dropped, never taken as part of the first key."""
    return read_text(path, "env file", "pass an existing UTF-8 KEY=VALUE file")


def env_from_lines(lines: Iterable[Line]) -> EnvDict:
    env = EnvDict()
    for line in lines:
        if line.key is not None:
            env.pop(line.key, None)  # a repeated key moves to its last place; the last value wins
            env[line.key] = line.value or ""
            if line.literal:
                env.literal.add(line.key)
            else:
                env.literal.discard(line.key)
    return env


def read_env(path: str | os.PathLike) -> EnvDict:
    """The file's ``{key: value}`` in file order, unquoted, with NO interpolation applied."""
    return env_from_lines(parse_lines(_read_text(Path(path))))


_REF = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+?])((?:[^{}]|\{[^{}]*\})*))?\}"
                  r"|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: str, known: Mapping[str, str]) -> str:
    """Compose-style ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:+alt}``, ``$$``."""

    def sub(m: re.Match) -> str:
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        op, arg = m.group(3), m.group(4) or ""
        present = name in known
        val = known.get(name, "")
        if op == ":-":
            return val if val else interpolate(arg, known)
        if op == "-":
            return val if present else interpolate(arg, known)
        if op == ":+":
            return interpolate(arg, known) if val else ""
        if op == "+":
            return interpolate(arg, known) if present else ""
        if op in (":?", "?") and (not present or (op == ":?" and not val)):
            raise AirgapError(f"${{{name}}} is required: {arg or 'not set'}")
        return val

    return _REF.sub(sub, value)


def referenced(value: str) -> list[str]:
    """Variable names a value interpolates (including those inside defaults)."""
    return re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", value.replace("$$", ""))


def resolve_all(env: Mapping[str, str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every value interpolated as compose reads a ``.env``: top to bottom, each line seeing only the
    lines above it. ``environ`` (the shell environment) beats the file, as in compose."""
    literal = getattr(env, "literal", set())
    done: dict[str, str] = {}
    for key, raw in env.items():
        if environ is not None and key in environ:
            done[key] = environ[key]
        else:
            done[key] = raw if key in literal else interpolate(raw, {**done, **(environ or {})})
    return done


def resolve_value(env: Mapping[str, str], key: str, environ: Mapping[str, str] | None = None) -> str:
    """``env[key]`` interpolated as compose would (e.g. ``COMPOSE_PROFILES`` -> ``qdrant,postgresql``)."""
    resolved = resolve_all(env, environ)
    if key not in resolved:
        raise AirgapError(f"{key} is not set in the env file")
    return resolved[key]


# --- formatting and writing ----------------------------------------------------------------------





def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` whole or not at all (``write_file_atomic``), refusing a path that is not a
    file we may write (``output_file``)."""
    write_file_atomic(output_file(path, "env file"), text.encode("utf-8"), mode)


_PLAIN = re.compile(r"^[^\s'\"#\\`$]*(?:[ ][^\s'\"#\\`$]+)*$")


def format_value(key: str, value: str) -> str:
    """A value as a dotenv literal. Secrets are quoted so compose never interpolates them. A value read from a
    file (:class:`Raw`) is written as it was written there."""
    if isinstance(value, Raw):
        return value.token
    if _PLAIN.match(value) or (not is_secret_key(key) and "${" in value and "\n" not in value
                               and not re.search(r"['\"#\\`]", value)):
        return value
    if "'" not in value and "\n" not in value:
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("$", "$$")
    return f'"{escaped}"'


# --- rendering an example with values ------------------------------------------------------------

EXTRA_HEADER = (
    "# ------------------------------",
    "# Site additions (dify-airgap): keys that are not in the .env.example of this Dify release.",
    "# Compose reads .env top to bottom: nothing above this block can interpolate these keys,",
    "# and containers only see them when docker-compose.yaml passes them on.",
    "# ------------------------------",
)
REMOVED_HEADER = (
    "# ------------------------------",
    "# Removed upstream (dify-airgap upgrade): your values of keys the new .env.example dropped,",
    "# kept here as comments so nothing is lost. Delete this block once reviewed.",
    "# ------------------------------",
)

LAYERED_HEADER = (
    "# ------------------------------------------------------------------",
    "# dify-airgap: settings this Dify release declares in envs/**/*.env.example (named after each key).",
    "# Compose lists ./.env LAST in every env_file list and interpolates ${...} from .env only, so a value",
    "# here reaches every service that reads that envs file, and wins over it. Managed by `invoke env`.",
    "# ------------------------------------------------------------------",
)


def render_text(lines: list[Line], values: Mapping[str, str], extras: Mapping[str, str] = (),
                removed: Mapping[str, str] = (), layered: Mapping[str, tuple[str, str]] = ()) -> str:
    """The example's lines with ``values`` put in place; ``layered`` ({key: (value, envs file)}),
    ``extras`` and ``removed`` appended."""
    out = []
    for line in lines:
        if line.key is None:
            out.append(line.raw)
        elif values.get(line.key, line.value) == line.value:
            out.append(line.raw)  # untouched: byte-identical to the example
        else:
            out.append(f"{line.key}={format_value(line.key, values[line.key])}")
    if layered:
        out += ["", *LAYERED_HEADER]
        for key, (value, origin) in dict(layered).items():
            out += [f"# {origin}", f"{key}={format_value(key, value)}"]
    if extras:
        out += ["", *EXTRA_HEADER]
        out += [f"{k}={format_value(k, v)}" for k, v in dict(extras).items()]
    if removed:
        out += ["", *REMOVED_HEADER]
        out += [f"# {k}={format_value(k, v)}" for k, v in dict(removed).items()]
    return "\n".join(out) + "\n"
