"""core.console: the one way a task prints its result."""

from __future__ import annotations

import json
from pathlib import Path

from scripts.core import console


def test_emit_json_is_exactly_one_document_with_paths_as_strings_and_secrets_redacted(capsys):
    console.register_secret("s3cr3t-value")
    console.emit(True, {"path": Path("/opt/dify"), "url": "http://u:s3cr3t-value@h/"},
                 lambda: pytest_fail("text must not be rendered under --json"))
    out = capsys.readouterr().out
    assert json.loads(out) == {"path": "/opt/dify", "url": "http://u:***@h/"}


def test_emit_text_renders_lazily_and_none_prints_nothing(capsys):
    calls = []
    console.emit(False, {"ignored": 1}, lambda: calls.append(1) or "rendered")
    console.emit(False, {"ignored": 1}, None)
    assert capsys.readouterr().out == "rendered\n" and calls == [1]


def test_warn_goes_to_stderr_redacted(capsys):
    console.register_secret("another-secret")
    console.warn(["key another-secret leaked", "second"])
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "warning: key *** leaked\nwarning: second\n"


def pytest_fail(message: str) -> str:
    raise AssertionError(message)
