"""What a user hands the toolkit: files and directories that may be missing, of the wrong type, damaged, or of the
wrong shape (a JSON list where an object is expected, a key missing). Every helper here raises ONE error type,
:class:`~scripts.core.errors.BadInput`, naming the path and what to do; never an ``OSError``, a
``UnicodeDecodeError`` or a ``KeyError`` three calls later.

Shapes are small schemas (:func:`check_shape`): a type (``str``, ``int``, ``list``...), a tuple of types (any
of them), a dict ``{key: schema}`` (an object with these keys; ``"?key"`` is optional) or a one-item list
``[schema]`` (a list whose items all match).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

from scripts.core.errors import BadInput, UsageError

_NAMES = {str: "a string", int: "a number", float: "a number", bool: "true or false", list: "a list",
          dict: "an object", type(None): "null"}


def os_reason(exc: OSError) -> str:
    """``No such file or directory`` rather than ``[Errno 2] No such file or directory: '/x'``."""
    return exc.strerror or str(exc)


#: the largest manifest, env file, install record or key the toolkit reads whole (real ones are kilobytes; a
#: bundle of 5,000 files has a 1 MiB manifest): a bigger or endless file is refused, never read into memory
MAX_INPUT_SIZE = 16 << 20


def read_bytes(path: str | os.PathLike, what: str, fix: str, limit: int = MAX_INPUT_SIZE) -> bytes:
    """The bytes of the file ``what`` at ``path`` (``fix`` says what to do when it cannot be read), at most
    ``limit`` of them (a larger file, or a device that never ends, is refused by name)."""
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"{what} {path} is a directory, not a file", hint=fix)
    try:
        with open(path, "rb") as stream:
            data = stream.read(limit + 1)
    except OSError as exc:
        raise BadInput(f"cannot read {what} {path}: {os_reason(exc)}", hint=fix) from None
    if len(data) > limit:
        raise BadInput(f"{what} {path} is larger than {limit >> 20} MiB: not one the toolkit wrote; refusing to "
                       f"read it", hint=fix)
    return data


def read_text(path: str | os.PathLike, what: str, fix: str) -> str:
    """The UTF-8 text of a file (a leading byte order mark is dropped)."""
    data = read_bytes(path, what, fix)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{what} {path} is not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); "
                       f"it is binary or damaged", hint=fix) from None


def read_json(path: str | os.PathLike, what: str, fix: str, schema: object = None) -> object:
    """A JSON file, checked against ``schema`` when given."""
    return parse_json(read_bytes(path, what, fix), f"{what} {path}", fix, schema)


def parse_json(raw: bytes | str, where: str, fix: str, schema: object = None) -> object:
    try:
        data = json.loads(raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{where} is not valid JSON ({exc})", hint=fix) from None
    if schema is not None:
        check_shape(data, schema, where, fix)
    return data


def _describe(schema: object) -> str:
    if isinstance(schema, dict):
        return "an object"
    if isinstance(schema, list):
        return "a list"
    if isinstance(schema, tuple):
        return " or ".join(_NAMES.get(t, t.__name__) for t in schema)
    return _NAMES.get(schema, getattr(schema, "__name__", str(schema)))


def _matches_type(value: object, schema: object) -> bool:
    types = schema if isinstance(schema, tuple) else (schema,)
    if isinstance(value, bool) and bool not in types:
        return False  # true is not a number here
    return isinstance(value, types)


def shape_problem(data: object, schema: object, at: str = "") -> str | None:
    """The first place where ``data`` does not match ``schema`` (``files[2].sha256 is missing``), else None."""
    if isinstance(schema, dict):
        if not isinstance(data, dict):
            return f"{at or 'the document'} must be an object, not {_describe(type(data))}"
        for key, sub in schema.items():
            name = key.lstrip("?")
            if name not in data:
                if key.startswith("?"):
                    continue
                return f"{at + '.' if at else ''}{name} is missing"
            found = shape_problem(data[name], sub, f"{at + '.' if at else ''}{name}")
            if found:
                return found
        return None
    if isinstance(schema, list):
        if not isinstance(data, list):
            return f"{at or 'the document'} must be a list, not {_describe(type(data))}"
        for i, item in enumerate(data):
            found = shape_problem(item, schema[0], f"{at}[{i}]")
            if found:
                return found
        return None
    if not _matches_type(data, schema):
        return f"{at or 'the document'} must be {_describe(schema)}, not {_describe(type(data))}"
    return None


def check_shape(data: object, schema: object, where: str, fix: str) -> None:
    """Raise :class:`BadInput` ``WHERE: files[2].sha256 is missing`` when ``data`` does not match ``schema``."""
    problem = shape_problem(data, schema)
    if problem:
        raise BadInput(f"{where}: {problem}", hint=fix)


def output_dir(path: str | os.PathLike, what: str, create: bool = True) -> Path:
    """``path`` as a directory to write into, created when missing (unless ``create`` is false: a dry run or a
    plan only checks); refused when it is a file, a dangling link, under a file, or cannot be created."""
    path = Path(path).expanduser()
    if path.is_symlink() and not path.exists():
        raise BadInput(f"{what} {path} is a dangling symbolic link (to {os.readlink(path)}); remove it or pass "
                       f"another directory")
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == path else f"is under {existing}, which is a file"
        raise BadInput(f"{what} {path} {where}, not a directory; pass a directory (it is created if missing)")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"cannot create {what} {path}: {os_reason(exc)}; pass a directory you can write to") \
                from None
    return path


def output_file(path: str | os.PathLike, what: str, create: bool = True) -> Path:
    """``path`` as a file to (re)write: refused when it is a directory or its directory cannot be created."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise BadInput(f"{what} {path} is a directory; pass a file name")
    output_dir(path.parent, f"the directory of {what}", create)
    return path


def http_url(text: str, option: str) -> str:
    """``text`` when it is an http(s) URL with a host (``http://10.0.0.5:11434``); a usage error naming ``option``
    otherwise (``notaurl`` used to end as "cannot reach notaurl:80")."""
    try:
        parts = urlsplit(text.strip())
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = None, False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise UsageError(f"{option} {text!r} is not an http(s) URL; write it like http://10.0.0.5:11434")
    return text.strip()
