"""scripts.core.lock: one run at a time per place; a second run is refused at once naming the holder; a lock whose
holder died is taken over. Contention is tested between real processes (flock is per open file, per process)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from scripts.bundle import build as bundler
from scripts.core.errors import Busy
from scripts.core.lock import LOCK_NAME, hold, lock_path, shared_cache
from scripts.core.waiting import wait_until
from scripts.data import backup as bk
from scripts.data import snapshot as snap
from scripts.host import install as installer

ROOT = Path(__file__).resolve().parents[3]
HOLDER = """
import sys
from scripts.core.lock import hold
with hold(sys.argv[1], "test place", "the test's holder"):
    print("held", flush=True)
    sys.stdin.read()          # until the test closes stdin (or kills us)
"""


class Holder:
    """Another process holding DIRECTORY's lock until ``release()`` (or ``kill()``)."""

    def __init__(self, directory: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], cwd=ROOT, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.proc.stdout.readline().strip() == "held"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc.stdin.close()
        self.proc.stdout.close()


@pytest.fixture
def holder(tmp_path):
    made: list[Holder] = []

    def start(directory: Path) -> Holder:
        made.append(Holder(directory))
        return made[-1]

    yield start
    for h in made:
        if h.proc.poll() is None:
            h.kill()


def test_a_second_run_is_refused_at_once_naming_the_pid_and_the_lock(tmp_path, holder):
    other = holder(tmp_path / "place")
    with pytest.raises(Busy) as caught, hold(tmp_path / "place", "install root"):
        pass
    message = str(caught.value)
    assert f"pid {other.pid}" in message and str(tmp_path / "place" / LOCK_NAME) in message
    assert "the test's holder" in message and "install root" in message and caught.value.hint.startswith("wait")
    other.release()
    assert not lock_path(tmp_path / "place").exists()            # released: the file is gone
    with hold(tmp_path / "place", "install root") as path:       # and the place is free again
        assert path.read_text().split("\n")[0] == str(os.getpid())


def test_a_stale_lock_is_taken_over(tmp_path, holder, caplog):
    dead = holder(tmp_path / "place")
    dead.kill()                                                  # killed: its lock file stays, with its pid
    assert lock_path(tmp_path / "place").read_text().startswith(f"{dead.pid}\n")
    with caplog.at_level(logging.INFO, logger="dify_airgap"), hold(tmp_path / "place", "install root"):
        assert lock_path(tmp_path / "place").read_text().startswith(f"{os.getpid()}\n")
    assert f"pid {dead.pid}, which is gone" in caplog.text


def test_reentrant_in_one_process_and_leaves_no_directory_it_made(tmp_path):
    place = tmp_path / "new" / "place"
    with hold(place, "install root"), hold(place, "install root"):   # a step inside a step
        assert lock_path(place).is_file()
    assert not (tmp_path / "new").exists()    # made only for the lock (parents too): removed again
    place.mkdir(parents=True)
    (place / "kept").write_text("x")
    with hold(place, "install root"):
        pass
    assert sorted(p.name for p in place.iterdir()) == ["kept"]


def test_a_link_at_the_lock_path_is_refused(tmp_path):
    (tmp_path / LOCK_NAME).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(Exception, match="cannot take the lock"), hold(tmp_path, "install root"):
        pass
    assert not (tmp_path / "elsewhere").exists()


# --- where the toolkit takes it ----------------------------------------------------------------------

def test_install_and_down_lock_the_install_root(tmp_path, holder):
    other = holder(tmp_path / "prefix")
    opts = installer.InstallOptions(bundle=tmp_path / "no-bundle", runtime="docker", prefix=tmp_path / "prefix")
    with pytest.raises(Busy, match=f"install root .*pid {other.pid}"):
        installer.install(opts)
    (tmp_path / "prefix" / "dify-airgap.json").write_text('{"runtime": "docker"}')
    with pytest.raises(Busy, match=f"pid {other.pid}"):
        installer.down(tmp_path / "prefix")
    opts.dry_run = True                                    # a dry run reads only: it never waits for the lock
    with pytest.raises(Exception, match="does not exist") as caught:
        installer.install(opts)
    assert not isinstance(caught.value, Busy)


def test_bundle_backup_and_snapshot_lock_their_output_directory(tmp_path, holder, monkeypatch):
    other = holder(tmp_path / "out")
    monkeypatch.setattr(bundler, "build_directory", lambda engine, plan: pytest.fail("built while locked"))
    plan = SimpleNamespace(output=tmp_path / "out", name="dify-0.0.0-airgap-amd64", archive=False)
    with pytest.raises(Busy, match=f"bundle output directory .*pid {other.pid}"):
        bundler.build(None, plan)
    # plan has no .stack: a backup or snapshot that ran would fail on it, not with Busy
    with pytest.raises(Busy, match=f"backup output directory .*pid {other.pid}"):
        bk.backup(None, plan)
    with pytest.raises(Busy, match=f"snapshot output directory .*pid {other.pid}"):
        snap.snapshot_daemon(None, plan)


def test_an_interrupted_bundle_run_gets_its_previous_bundle_back(tmp_path):
    plan = SimpleNamespace(output=tmp_path, name="b", final_dir=tmp_path / "b")
    (tmp_path / ".b.old").mkdir()                           # killed between "move old aside" and "move new in"
    (tmp_path / ".b.old" / "manifest.json").write_text("{}")
    bundler.recover_interrupted(plan)
    assert (tmp_path / "b" / "manifest.json").is_file() and not (tmp_path / ".b.old").exists()
    (tmp_path / ".b.old").mkdir()                           # both there: the old one is litter
    bundler.recover_interrupted(plan)
    assert not (tmp_path / ".b.old").exists() and (tmp_path / "b").is_dir()


def test_an_interrupted_file_copy_of_install_is_cleaned(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "a.yaml").write_text("new")
    dest.mkdir()
    (dest / f".a.yaml{installer.TMP_SUFFIX}").write_text("half")   # a kill during the copy left this
    assert installer.sync_tree(src, dest, tmp_path / "backup", dry_run=False) == ["a.yaml"]
    assert sorted(p.name for p in dest.iterdir()) == ["a.yaml"]


def test_restores_lock_the_install_root_they_write(tmp_path, holder, monkeypatch):
    other = holder(tmp_path / "prefix")
    stack = SimpleNamespace(prefix=tmp_path / "prefix", project_dir=tmp_path / "prefix" / "docker")
    engine = SimpleNamespace(dry_run=False)
    monkeypatch.setattr(bk.datadir, "verify_dir", lambda *a: (tmp_path, {}))
    monkeypatch.setattr(bk, "_restore", lambda *a: pytest.fail("restored while locked"))
    with pytest.raises(Busy, match=f"install root .*pid {other.pid}"):
        bk.restore(engine, tmp_path, stack)
    monkeypatch.setattr(snap, "_verified_snapshot", lambda *a: (tmp_path, {}))
    monkeypatch.setattr(snap, "_restore_daemon", lambda *a: pytest.fail("restored while locked"))
    with pytest.raises(Busy, match=f"install root .*pid {other.pid}"):
        snap.restore_daemon(engine, tmp_path, stack)


def test_a_shared_cache_makes_the_second_writer_wait_not_fail(tmp_path, caplog):
    """Two bundles side by side share the wheel cache: the second waits for the first (and says so), never both."""
    order, entered = [], threading.Event()
    release = threading.Event()

    def first():
        with shared_cache(tmp_path / "cache", "the wheel cache"):
            entered.set()
            order.append("first in")
            release.wait(10)
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    assert entered.wait(10)
    with caplog.at_level(logging.INFO, logger="dify_airgap"):
        second = threading.Thread(target=_second_writer, args=(tmp_path, order))
        second.start()
        wait_until(lambda: "waiting for another run writing the wheel cache" in caplog.text, 10, "the wait line")
        release.set()
        thread.join(10)
        second.join(10)
    assert order == ["first in", "first out", "second in"]


def _second_writer(tmp_path, order):
    with shared_cache(tmp_path / "cache", "the wheel cache"):
        order.append("second in")
