"""One run at a time per place: a bundle output directory, an install root, a backup/snapshot output directory.

``with hold(directory, "install root"):`` takes ``DIRECTORY/.dify-airgap.lock`` with ``fcntl.flock`` (exclusive,
non-blocking) and writes this process's pid into it (the directory is created for it, and removed again at the end
when the run left it empty). A second run on the same place is refused AT ONCE with
:class:`~scripts.core.errors.Busy`, naming the holder's pid and the lock file. The kernel drops a flock when its
holder dies (killed, crashed, power cut), so a lock whose holder is gone is simply taken over (logged, with the
old pid). The file is removed on release; it never needs to be deleted by hand. The descriptor is not inherited
by child processes (engines, compose), so a lock never outlives its run.

flock is local to one host: two hosts writing to one NFS directory are not serialised by it.
"""

from __future__ import annotations

import fcntl
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from scripts.core.console import LOG
from scripts.core.errors import AirgapError, Busy
from scripts.core.inputs import os_reason, output_dir

LOCK_NAME = ".dify-airgap.lock"
_HELD: set[Path] = set()  # locks this process holds: taking one again (a step inside a step) is a no-op


def lock_path(directory: str | os.PathLike) -> Path:
    return Path(directory) / LOCK_NAME


def _holder(fd: int) -> tuple[int | None, str]:
    """(pid, what) written by the holder, (None, "") when the file is empty or not ours."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace")
    first, _, rest = text.partition("\n")
    return (int(first), rest.strip()) if first.strip().isdigit() else (None, "")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _busy(path: Path, fd: int, what: str, directory: Path) -> Busy:
    pid, doing = _holder(fd)
    who = f"pid {pid}" if pid else "another process"
    if pid and not _alive(pid):
        who += " (exited; the lock is still held by a process it started)"
    return Busy(f"{what} {directory} is in use by another dify-airgap run: {who}{f' ({doing})' if doing else ''} "
                f"holds {path}", hint="wait for it to finish (or stop it), then run this again")


def _acquire(path: Path, what: str, directory: Path) -> int:
    """An open descriptor on ``path`` holding its flock (retried when the file was replaced meanwhile)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise AirgapError(f"cannot take the lock {path}: {os_reason(exc)}",
                              hint=f"check that you may write to {directory} (and that the lock is not a link)") \
                from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            error = _busy(path, fd, what, directory)
            os.close(fd)
            raise error from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False  # the previous holder removed it between our open and our flock: take the new one
        if same:
            return fd
        os.close(fd)


@contextmanager
def hold(directory: str | os.PathLike, what: str, doing: str = "") -> Iterator[Path]:
    """Hold ``directory``'s lock for the block (the directory is created when missing).

    ``what`` names the place in messages ("install root", "bundle output directory"); ``doing`` (e.g.
    ``invoke install``) is written next to the pid so a refused run can say what holds it.
    """
    created = []  # the directories made for the lock (innermost first): removed again when left empty
    missing = Path(directory).expanduser().absolute()
    while not missing.exists() and missing != missing.parent:
        created.append(missing)
        missing = missing.parent
    directory = output_dir(directory, what)
    path = lock_path(directory.resolve())
    if path in _HELD:
        yield path
        return
    fd = _acquire(path, what, directory)
    _HELD.add(path)
    try:
        stale, _ = _holder(fd)
        if stale and stale != os.getpid():
            LOG.info("took over the lock %s of pid %s, which is gone (interrupted run)", path, stale)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n{doing}\n".encode())
        yield path
    finally:
        _HELD.discard(path)
        with suppress(OSError):
            os.unlink(path)  # while still holding it: a waiting opener then retries on a fresh file
        os.close(fd)  # closing releases the flock
        for made in created:  # made only for the lock and still empty: a failed first run leaves nothing
            with suppress(OSError):
                made.rmdir()


def holding_output(what: str, doing: str) -> Callable:
    """Decorator for ``step(engine, plan)``: the step runs holding the lock on ``plan.output`` (``what`` names the
    place in the refusal, ``doing`` the command the holder runs)."""
    def wrap(step: Callable) -> Callable:
        @functools.wraps(step)
        def held(engine, plan):
            with hold(plan.output, what, doing):
                return step(engine, plan)
        return held
    return wrap


@contextmanager
def shared_cache(directory: Path, what: str) -> Iterator[None]:
    """One writer at a time in a cache that concurrent runs share (the wheel cache of two bundles made side by
    side): the second WAITS for the first (a cache is not an output to refuse), saying so once."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".dify-airgap-cache.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            LOG.info("waiting for another run writing %s (%s)", what, directory)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock

