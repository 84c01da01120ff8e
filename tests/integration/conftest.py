"""Session fixtures of the integration tests, found by name (no test module imports another).

The stand-in images in docker and podman (per release too), and the real PostgreSQL image.
Helpers shared by the tests are in standin_project.py, dify_stack.py, bundles.py and difypkg.py.
"""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from scripts.engine.client import Engine
from tests.conftest import require_engine
from tests.lab import host as lab
from tests.lab import standins


@pytest.fixture(scope="session")
def docker_standins():
    """The stand-ins in the system docker; those this session built are removed at its end."""
    engine = require_engine("docker")
    with standins.present(engine) as refs:
        yield engine, refs


@pytest.fixture(scope="session")
def podman_standins():
    """The stand-ins in podman (docker.io/... names); those this session built are removed at its end."""
    engine = require_engine("podman")
    with standins.present(engine) as refs:
        yield engine, refs


@pytest.fixture(scope="session")
def release_standins():
    """``get(runtime, version)`` -> (engine, refs): that release's stand-ins in that engine.

    Built on first use; those this session built are removed at its end (images another fixture built
    are up to date here, so they are neither rebuilt nor removed by this one).
    """
    with ExitStack() as stack:
        made: dict[tuple[str, str], tuple[Engine, list[str]]] = {}

        def get(runtime: str, version: str) -> tuple[Engine, list[str]]:
            if (runtime, version) not in made:
                engine = require_engine(runtime)
                refs = stack.enter_context(standins.present(engine, standins.default_images(version)))
                made[runtime, version] = (engine, refs)
            return made[runtime, version]

        yield get


@pytest.fixture(scope="session")
def real_postgres():
    """The real PostgreSQL image in each answering engine.

    Kept afterwards as a lab cache image (like the DinD image): concurrent test sessions share it, and
    removing it at one session's end broke the others.
    """
    for runtime in ("docker", "podman"):
        engine = Engine(runtime)
        if engine.client_path() and engine.answers():
            standins.ensure_real_postgres(engine)


@pytest.fixture
def podman_store():
    """Throwaway podman storage (graphroot/runroot), as engine env: nothing of the lab's is visible."""
    require_engine("podman")
    with lab.podman_storage() as env:
        yield env
