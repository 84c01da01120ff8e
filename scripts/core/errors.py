"""The few exception types every module raises; tasks turn them into ``invoke.Exit``.

Every failure a user can meet is ONE of these, with a one-line reason and what to do (``hint``, optional, is the
"what to do" when it is kept apart from the reason: ``--json`` prints it as its own field). ``tasks._fails_cleanly``
prints ``error: REASON`` and exits with ``exit_code``: 2 for a usage error (options that do not go together, a
value out of its choices), 1 for everything else. Any other exception type reaching a task is a bug.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence


class AirgapError(Exception):
    """A failure the user can act on. The message says what went wrong and what to do next."""

    exit_code = 1

    def __init__(self, message: str = "", *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(AirgapError):
    """The command line is wrong: options that do not go together, a missing companion option, a bad choice."""

    exit_code = 2


class BadInput(AirgapError):
    """An input path is missing, unreadable, of the wrong type (a directory for a file...), damaged, or of the
    wrong shape (a JSON list where an object is expected, keys missing): named, with what to do."""


class Busy(AirgapError):
    """Another run holds the lock of the same bundle output, install root or backup/snapshot output."""


class EngineError(AirgapError):
    """A container-engine command failed. Carries the command, its exit code and stderr."""

    def __init__(self, message: str, argv: Sequence[str] = (), returncode: int | None = None,
                 stderr: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        detail = []
        if self.argv:
            detail.append(f"command: {shlex.join(self.argv)}")
        if returncode is not None:
            detail.append(f"exit code: {returncode}")
        if stderr.strip():
            detail.append("stderr: " + _tail(stderr))
        super().__init__(message + ("\n  " + "\n  ".join(detail) if detail else ""))
        self.summary = message


class EngineMissing(EngineError):
    """The engine client is not installed, or its daemon/service does not answer."""


class ComposeMissing(EngineError):
    """No usable Compose v2 provider was found for the runtime."""


class ImageMissing(EngineError):
    """An image is not present locally (docker: "No such image", podman: "image not known")."""

    def __init__(self, message: str, image: str = "", **kwargs) -> None:
        self.image = image
        super().__init__(message, **kwargs)


class CommandFailed(EngineError):
    """Any other non-zero exit of an engine or compose command."""


def _tail(text: str, lines: int = 12) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n    ".join(kept)
