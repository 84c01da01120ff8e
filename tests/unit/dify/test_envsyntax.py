""".env round trips: any value, written by `invoke env`/install and rendered again, stays byte-identical and means
the same to compose. Run on both vendored releases (1.11.3: one .env.example; 1.16.0: envs/** layers too).

Bugs these pin: a value needing double quotes gained a ``$`` on every re-render (written ``$$``, read back raw);
a UTF-8 byte order mark hid a site file's first key; ``str.splitlines`` cut a value at ``\\x85``/``\\u2028``.
"""

from __future__ import annotations

import copy
import shutil
import stat
from pathlib import Path

import pytest

from scripts.dify.envfile import render_env_file
from scripts.dify.envsyntax import (
    Raw,
    env_from_lines,
    format_value,
    parse_lines,
    parse_value,
    read_env,
    resolve_all,
    split_lines,
)
from tests.conftest import RELEASES, release_fixture

#: values a site may hold, each a trap for a naive writer/reader
VALUES = [
    "p$ss", "$", "$$", "a$$b", "end$", "it's", 'say "hi"', "it's \"both\" and p$ss", "line1\nline2",
    "back\\slash", "back\\n-not-a-newline", "tab\there", " lead and trail ", "#hash", "a # not a comment", "x=y",
    "`cmd`", "ünïcödé €", "sep\u2028arator", "nel\x85x", "cr\rin", "'", '"', "", "\\", "'quoted'", '"dq"',
    "${NOT_SET:-default}$",
]
SECRET, PLAIN = "REDIS_PASSWORD", "LOG_FILE"   # a secret (quoted, never interpolated) and a free-text key


@pytest.fixture(params=RELEASES)
def project(request, tmp_path) -> Path:
    """A writable copy of a vendored release's docker/ directory (the fixtures are read-only)."""
    dest = tmp_path / f"dify-{request.param}"
    shutil.copytree(release_fixture(request.param), dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return dest


def _render(project: Path, out: Path, **kwargs) -> bytes:
    render_env_file(project, out, templates_dir=Path("/nonexistent"), **kwargs)
    return out.read_bytes()


def _rerender(project: Path, out: Path) -> bytes:
    """What install does on a re-run: merge the existing .env (as the old env) into the release's example."""
    old = out.with_name("previous.env")
    shutil.copyfile(out, old)
    return _render(project, out, upgrade_from=old, old_example=project / ".env.example")


def test_every_value_round_trips_byte_stable(project, tmp_path):
    """Every value at once, as site additions named like secrets (quoted, never interpolated) and like plain
    settings: rendered, rendered again, then merged from the .env itself (install's re-run), twice."""
    sets = {**{f"DAL_RT_PASSWORD_{i}": v for i, v in enumerate(VALUES)},
            **{f"DAL_RT_TEXT_{i}": v for i, v in enumerate(VALUES)}}
    out = tmp_path / ".env"
    first = _render(project, out, overrides=sets)
    env = read_env(out)
    for key, value in sets.items():
        assert env[key] == value or ("TEXT" in key and "${" in value), key   # a plain ${...} stays a template
    assert _render(project, out, overrides=sets) == first                    # the same command again
    assert _rerender(project, out) == first                                  # install's re-run, from .env
    assert _rerender(project, out) == first                                  # ... and again: no drift


@pytest.mark.parametrize("value", ["it's \"both\" and p$ss", "line1\nline2 sep\u2028ar"], ids=repr)
def test_a_value_in_place_round_trips_byte_stable(project, tmp_path, value):
    """The same for keys of the release, changed in place (a secret and a plain setting)."""
    out = tmp_path / ".env"
    first = _render(project, out, overrides={SECRET: value, PLAIN: value})
    assert read_env(out)[SECRET] == value and read_env(out)[PLAIN] == value
    assert _rerender(project, out) == first


def test_site_file_values_round_trip(project, tmp_path):
    values = {f"DAL_RT_PASSWORD_{i}": v for i, v in enumerate(VALUES)}
    site = tmp_path / "site.env"
    site.write_text("".join(f"{k}={format_value(k, v)}\n" for k, v in values.items()) + f"{SECRET}='p$ss'\n")
    out = tmp_path / ".env"
    first = _render(project, out, site_file=site)
    env = read_env(out)
    assert env[SECRET] == "p$ss" and all(env[k] == v for k, v in values.items())
    assert _render(project, out, site_file=site) == first
    assert _rerender(project, out) == first


def test_a_bom_and_crlf_site_file_keeps_its_first_key(project, tmp_path):
    site = tmp_path / "site.env"
    site.write_bytes(b"\xef\xbb\xbf" + f"{PLAIN}=/var/log/dify.log\r\n{SECRET}='p$ss'\r\n".encode())
    out = tmp_path / ".env"
    first = _render(project, out, site_file=site)
    env = read_env(out)
    assert env[PLAIN] == "/var/log/dify.log" and env[SECRET] == "p$ss"     # the BOM used to hide the first key
    assert b"\r" not in first and b"\xef\xbb\xbf" not in first
    assert _rerender(project, out) == first


def test_a_crlf_and_bom_env_is_merged_and_then_stable(project, tmp_path):
    out = tmp_path / ".env"
    first = _render(project, out, overrides={SECRET: "it's p$ss"})
    out.write_bytes(b"\xef\xbb\xbf" + first.replace(b"\n", b"\r\n"))        # edited on Windows
    merged = _rerender(project, out)
    assert read_env(out)[SECRET] == "it's p$ss" and merged == first


def test_hand_quoted_values_of_the_old_env_are_kept_as_written(project, tmp_path):
    """A value of the .env being carried over keeps its own quoting: compose keeps seeing what it saw."""
    out = tmp_path / ".env"
    _render(project, out)
    text = out.read_text()
    tokens = {PLAIN: '"it\'s p$$ss"', "DB_USERNAME": "p$ss", "DB_DATABASE": "'single'", "LOG_LEVEL": '"a\\nb"'}
    for key, token in tokens.items():
        text = text.replace(f"\n{key}=", f"\n{key}={token}\n# was: ", 1)
    out.write_text(text)
    merged = _rerender(project, out)
    for key, token in tokens.items():
        assert f"\n{key}={token}\n".encode() in merged, key
    assert _rerender(project, out) == merged


# --- the syntax itself -------------------------------------------------------------------------------

@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_format_then_parse_is_the_identity(value):
    for key in (SECRET, PLAIN):
        token = format_value(key, value)
        (line,) = parse_lines(f"{key}={token}\n")
        if key == PLAIN and "${" in value:
            assert line.value == value and not line.literal                 # a template, interpolated later
            continue
        assert line.value == value, token
        assert format_value(key, line.value) == token                       # and written back unchanged


def test_double_quoted_dollars_follow_compose():
    assert parse_value('"p$$ss"') == ("p$ss", True)           # $$ is a literal $
    assert parse_value("p$$ss") == ("p$ss", True)
    assert parse_value('"a$$b ${X}"') == ("a$$b ${X}", False)  # a reference: left for interpolation
    env = read_env_text('X=1\nA="a$$b ${X}"\nB="p$$ss"\n')
    assert resolve_all(env) == {"X": "1", "A": "a$b 1", "B": "p$ss"}


def read_env_text(text: str):
    return env_from_lines(parse_lines(text))


def test_split_lines_only_at_newlines():
    assert split_lines("A=1\r\nB='x\u2028y\x85z'\nC=\x0b\n") == ["A=1", "B='x\u2028y\x85z'", "C=\x0b"]
    assert split_lines("A=1") == ["A=1"] and split_lines("") == []


def test_raw_survives_copies():
    raw = parse_lines("A='x'\n")[0].value
    assert isinstance(raw, Raw) and copy.deepcopy(raw).token == "'x'" and type(str(raw)) is str
