"""Shared fixtures. Integration fixtures give real engines; in CI a missing engine is a failure."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from scripts.engine import Engine

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
    reason = (f"{runtime} engine does not answer (run `python -m scripts.lab up` as root, "
              f"or `nox -s tests`)")
    if IN_CI:
        pytest.fail(f"CI: {reason}", pytrace=False)
    pytest.skip(reason)


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
