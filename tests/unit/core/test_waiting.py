"""core.waiting: a bounded wait that says, in a log nobody watches live, that it is still waiting."""

from __future__ import annotations

import logging
import time

import pytest

from scripts.core import waiting
from scripts.core.waiting import WaitTimeout, wait_until


def test_a_long_wait_logs_that_it_is_still_waiting_then_how_long_it_took(monkeypatch, caplog):
    monkeypatch.setattr(waiting, "PROGRESS_EVERY", 0.05)
    ready_at = time.monotonic() + 0.3
    with caplog.at_level(logging.INFO, logger="dify_airgap"):
        assert wait_until(lambda: time.monotonic() >= ready_at, 10, "api healthy", interval=0.01) is True
    assert "still waiting for api healthy: 0 s of 10 s" in caplog.text
    assert "api healthy: ready after 0 s" in caplog.text


def test_a_timeout_names_what_was_awaited(monkeypatch):
    monkeypatch.setattr(waiting, "PROGRESS_EVERY", 0.05)
    with pytest.raises(WaitTimeout, match="timed out after 0s waiting for db answers"):
        wait_until(lambda: False, 0.2, "db answers", interval=0.01)
