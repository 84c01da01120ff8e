"""Output for humans: logging with secret redaction, tables, progress bars."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout

from tqdm import tqdm

LOG = logging.getLogger("dify_airgap")
_SECRETS: set[str] = set()


def register_secret(value: str) -> None:
    """Never print ``value``: every log record that contains it shows ``***`` instead."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


#: ``scheme://NETLOC`` (netloc as urllib.parse splits it: up to / ? # or whitespace)
_URL_NETLOC = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<netloc>[^/?#\s]+)")


def _mask_userinfo(match: re.Match) -> str:
    userinfo, at, host = match["netloc"].rpartition("@")  # the LAST @, as urllib.parse does
    if not at or ":" not in userinfo:
        return match.group(0)
    return f"{match['scheme']}{userinfo.split(':', 1)[0]}:***@{host}"


def mask_url_passwords(text: str) -> str:
    """``https://user:pass@host/`` -> ``https://user:***@host/`` wherever a URL appears (the user is kept: it says
    which account; a mirror, index or marketplace URL's password never is)."""
    return _URL_NETLOC.sub(_mask_userinfo, text) if "://" in text else text


def redact(text: str) -> str:
    """``text`` without any registered secret and without the password of any ``scheme://user:pass@`` URL."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return mask_url_passwords(text)


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        return True


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr, INFO by default, DEBUG with ``verbose``; idempotent."""
    LOG.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not any(getattr(h, "_dify_airgap", False) for h in LOG.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(_RedactingFilter())
        handler._dify_airgap = True  # type: ignore[attr-defined]
        LOG.addHandler(handler)
    LOG.propagate = False


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Render a plain-text table with left-aligned columns: THE table style of every task (headers in capitals, a
    dashed rule, two spaces between columns)."""
    headers = [h.upper() for h in headers]
    rows = [["" if c is None else str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], max((len(x) for x in cell.splitlines()), default=0))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


_RESULTS: list = []  # where emit() writes while a --json task runs with everything else sent to stderr


@contextmanager
def results_only_on_stdout(active: bool) -> Iterator[None]:
    """While a ``--json`` task runs (``active``), whatever it prints (plans, ``[dry-run]`` lines) goes to stderr:
    stdout carries exactly the one document :func:`emit` writes. (Commands the task runs without capturing their
    output write to stderr too: ``core``'s runners never hand them our stdout.)"""
    if not active:
        yield
        return
    _RESULTS.append(sys.stdout)
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        _RESULTS.pop()


def emit(as_json: bool, data: object, text: str | Callable[[], str] | None = None) -> None:
    """THE way a task prints its result on stdout, secrets redacted.

    ``--json``: exactly one JSON document (``data``; paths and other objects as strings). Otherwise ``text``
    (a string, or a function making it, so nothing is rendered that is not shown); ``None`` prints nothing.
    """
    if as_json:
        print(redact(json.dumps(data, indent=2, default=str)), file=_RESULTS[-1] if _RESULTS else sys.stdout)
    elif text is not None:
        print(redact(text() if callable(text) else text))


def warn(warnings: Iterable[str]) -> None:
    """Print warnings on stderr (redacted), one line each."""
    for warning in warnings:
        print(redact(f"warning: {warning}"), file=sys.stderr)


def human_size(num: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(num) < 1024 or unit == "TiB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    return f"{num:.1f} TiB"


PROGRESS_EVERY = 10.0  # seconds between progress lines when stderr is not a terminal


def progress(total: int | None, desc: str, unit: str = "B", every: float = PROGRESS_EVERY):
    """Progress of a long step on stderr: a tqdm bar on a terminal; otherwise (CI logs, nohup, a pipe) a
    :class:`LineProgress` line at least every ``every`` seconds. Both end with the step's duration."""
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, unit_divisor=1024,
                    file=sys.stderr, mininterval=1.0, leave=True)
    return LineProgress(total, desc, unit, every)


class NoProgress:
    """The bar of a step too quick to report (a shallow verify): the same ``update``/``close``, silent."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self, failed: bool | None = None) -> None:
        pass

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc) -> None:
        pass


class Counted:
    """A readable that moves a progress bar by what is read through it."""

    def __init__(self, stream, bar) -> None:
        self.stream, self.bar = stream, bar

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.bar.update(len(data))
        return data


class LineProgress:
    """A progress report for logs: ``DESC: 1.2 GiB of 3.0 GiB (40%), 95.0 MiB/s, about 19 s left`` from a
    heartbeat thread at least every ``every`` seconds, even while nothing moves (a stalled engine shows as the
    same figure again), then ``DESC: done, 3.0 GiB in 32 s``. The same ``update``/``close`` as a tqdm bar."""

    def __init__(self, total: int | None, desc: str, unit: str = "B", every: float = PROGRESS_EVERY) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._run, args=(every,), daemon=True, name=f"progress {desc}")
        self._beat.start()

    def update(self, n: int = 1) -> None:
        self.n += n

    def _amount(self, n: float) -> str:
        return human_size(n) if self.unit == "B" else f"{n:.0f} {self.unit}"

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.n / elapsed
        text = f"{self.desc}: {self._amount(self.n)}"
        if self.total:
            text += f" of {self._amount(self.total)} ({min(100.0, 100.0 * self.n / self.total):.0f}%)"
        if self.unit == "B":
            text += f", {self._amount(rate)}/s"
        if self.total and rate > 0 and self.n < self.total:
            text += f", about {(self.total - self.n) / rate:.0f} s left"
        return text

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            LOG.info("%s", self.line())

    def close(self, failed: bool | None = None) -> None:
        """Stop the heartbeat; a step of a second or more ends with ``done`` and its duration, or with
        ``stopped`` when it ends by an exception (``failed`` None: closed while one propagates, as from a
        ``finally``)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._beat is not threading.current_thread():
            self._beat.join(timeout=5)
        failed = sys.exc_info()[0] is not None if failed is None else failed
        took = time.monotonic() - self.started
        if failed:
            LOG.info("%s: stopped after %s in %.0f s", self.desc, self._amount(self.n), took)
        elif took >= 1.0:  # a long step says how long it took; a quick one stays quiet
            LOG.info("%s: done, %s in %.0f s", self.desc, self._amount(self.n), took)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(failed=exc_type is not None)
