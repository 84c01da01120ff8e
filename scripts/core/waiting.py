"""Wait on a condition with a timeout, never sleep-and-hope."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from scripts.core.console import LOG, PROGRESS_EVERY
from scripts.core.errors import AirgapError

T = TypeVar("T")


class WaitTimeout(AirgapError):
    """A condition did not become true in time."""


class GiveUp(AirgapError):
    """Raised by a predicate when waiting longer cannot help (e.g. a one-shot service failed)."""


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.25,
               on_timeout: Callable[[], str] | None = None) -> T:
    """Poll ``predicate`` until it returns something truthy, which is returned.

    Raises :class:`WaitTimeout` naming ``what`` after ``timeout`` seconds; ``on_timeout`` may add
    detail (a log tail) to the message. Exceptions from the predicate count as "not yet", except
    :class:`GiveUp`, which ends the wait at once.
    """
    started = time.monotonic()
    deadline, heard = started + timeout, started
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                if time.monotonic() - started >= PROGRESS_EVERY:
                    LOG.info("%s: ready after %.0f s", what, time.monotonic() - started)
                return value
        except Exception as exc:  # noqa: BLE001 - a probe that raises is "not ready yet"
            last_error = exc
        if time.monotonic() >= deadline:
            detail = on_timeout() if on_timeout else ""
            if last_error is not None:
                detail = f"last error: {last_error}\n{detail}"
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}"
                              + (f"\n{detail.strip()}" if detail.strip() else ""))
        if time.monotonic() - heard >= PROGRESS_EVERY:  # a line at least every 10 s in a log nobody watches live
            heard = time.monotonic()
            LOG.info("still waiting for %s: %.0f s of %.0f s", what, heard - started, timeout)
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, 2.0)
