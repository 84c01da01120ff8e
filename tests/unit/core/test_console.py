"""core.console: the one way a task prints its result."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from scripts.core import console
from scripts.core.waiting import wait_until


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


@pytest.mark.parametrize("text, shown", [
    ("PIP_MIRROR_URL=https://mirror-user:m1rr0r-pw@pypi.example.local/simple",
     "PIP_MIRROR_URL=https://mirror-user:***@pypi.example.local/simple"),
    ("redis://:r3dis-pw@redis:6379/1", "redis://:***@redis:6379/1"),                 # no user: still masked
    ("uv pip compile --index-url 'https://u:p@ss:w0rd@idx/simple' x",                   # an @ in the password
     "uv pip compile --index-url 'https://u:***@idx/simple' x"),
    ('{"url": "https://bob:pw@host:8443/x?next=a@b"}', '{"url": "https://bob:***@host:8443/x?next=a@b"}'),
    ("--marketplace-url HTTPS://Me:Pw@market.local", "--marketplace-url HTTPS://Me:***@market.local"),
    ("two: http://a:1@h1/ and ftp://b:2@h2", "two: http://a:***@h1/ and ftp://b:***@h2"),
])
def test_redact_masks_url_passwords_and_keeps_the_user(text, shown):
    assert console.redact(text) == shown


@pytest.mark.parametrize("text", ["http://user@host:8080/", "http://host:8080/a:b@c", "git@github.com:o/r.git",
                                  "no url: a:b@c", "mailto:x@y"])
def test_redact_leaves_urls_without_a_password(text):
    assert console.redact(text) == text


def test_log_records_are_redacted(capsys):
    for handler in list(console.LOG.handlers):   # bind the handler to this test's captured stderr
        console.LOG.removeHandler(handler)
    console.setup_logging(verbose=True)
    try:
        console.LOG.info("downloading %s", "https://u:l0g-pw@market.local/x.difypkg")
        console.LOG.debug("$ %s", "uv pip compile --index-url https://u:l0g-pw@idx/simple")
    finally:
        for handler in list(console.LOG.handlers):
            console.LOG.removeHandler(handler)
    err = capsys.readouterr().err
    assert "l0g-pw" not in err and err.count("u:***@") == 2
    assert logging.getLogger("dify_airgap") is console.LOG


def pytest_fail(message: str) -> str:
    raise AssertionError(message)


def test_under_json_whatever_a_task_prints_goes_to_stderr_and_emit_alone_to_stdout(capsys):
    with console.results_only_on_stdout(True):
        print("[dry-run] docker compose down")                      # a plan line, printed on the way
        console.emit(True, {"steps": 1})
        print("after")
    out, err = capsys.readouterr()
    assert json.loads(out) == {"steps": 1}
    assert "[dry-run] docker compose down" in err and "after" in err
    with console.results_only_on_stdout(False):                    # text mode: nothing moves
        print("plan")
    assert capsys.readouterr().out == "plan\n"



def test_line_progress_reports_at_least_every_interval_even_when_nothing_moves(caplog):
    """Not on a terminal (CI logs, nohup): a line with amount, percent and ETA from a heartbeat, then the
    duration. Waits on the lines themselves (with a timeout), never on a sleep."""
    with caplog.at_level(logging.INFO, logger="dify_airgap"):
        bar = console.progress(4 << 20, "save", every=0.05)
        assert isinstance(bar, console.LineProgress)              # pytest's stderr is not a terminal
        bar.update(1 << 20)
        # stalled: the same figure again, from the heartbeat
        wait_until(lambda: caplog.text.count("save: 1.0 MiB of 4.0 MiB (25%)") >= 2, 10, "two progress lines")
        assert "left" in caplog.text
        bar.started -= 5                                            # a long step: its duration is printed
        bar.close()
        bar.close()                                                 # closing twice says it once
    assert caplog.text.count("save: done, 1.0 MiB in 5 s") == 1


def test_a_quick_step_stays_quiet(caplog):
    with caplog.at_level(logging.INFO, logger="dify_airgap"), console.progress(10, "verify x") as bar:
        bar.update(10)
    assert "verify x" not in caplog.text


def test_a_step_ended_by_an_error_says_stopped_not_done_and_its_heartbeat_ends(caplog):
    """A failed save must not log "done": closed from a ``finally`` while the error propagates, or as a context
    manager, it says how far it got; the heartbeat thread has ended when close returns."""
    with caplog.at_level(logging.INFO, logger="dify_airgap"):
        bar = console.progress(4 << 20, "load", every=0.05)
        with pytest.raises(OSError):
            try:
                bar.update(1 << 20)
                raise OSError("engine went away")
            finally:
                bar.close()
        assert not bar._beat.is_alive()
        with pytest.raises(ValueError), console.progress(None, "push", unit="images") as other:
            other.update()
            raise ValueError("refused")
    assert "load: stopped after 1.0 MiB in 0 s" in caplog.text and "load: done" not in caplog.text
    assert "push: stopped after 1 images" in caplog.text
