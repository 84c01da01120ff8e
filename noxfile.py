"""Nox sessions: lint, unit and integration tests against real engines (see README)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
ROOT = Path(__file__).parent


def _lab_possible() -> bool:
    return os.geteuid() == 0 and Path("/etc/debian_version").exists() and sys.platform == "linux"


def _install(session: nox.Session) -> None:
    session.install("-e", ".[dev]")


def _install_and_start_lab(session: nox.Session, *args: str) -> None:
    """The project into the session's venv, then the lab's engines started (where this host may run the lab)."""
    _install(session)
    if _lab_possible():
        session.run("python", "-m", "tests.lab.host", "up", *args)
    else:
        session.warn("not root on Debian: the lab is not started; integration tests need running engines")


@nox.session
def lint(session: nox.Session) -> None:
    """Run ruff over the code (complexity budget included) and check the layer rule (tests/architecture.py)."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "scripts", "tests", "tasks.py", "noxfile.py")
    session.run("python", "tests/architecture.py")


@nox.session
def lab(session: nox.Session) -> None:
    """Install and start the lab engines (dockerd, podman, compose v2, registry mirror): root on Debian only."""
    if not _lab_possible():
        session.error("the lab installs packages and starts engines: run `nox -s lab` as root on Debian/Ubuntu "
                      "(a throwaway machine, never a production server)")
    _install_and_start_lab(session, *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests, then integration AND end-to-end tests against real docker and podman (lab started first)."""
    _install_and_start_lab(session)
    if session.posargs:
        session.run("pytest", *session.posargs)
        return
    # coverage of the unit run (no engine), reported in the CI output
    session.run("pytest", "tests", "-q", "-m", "not integration and not e2e", "-n", "2", "--cov=scripts",
                "--cov-report=term:skip-covered")
    if _lab_possible():  # every image the tests run, built once before they start: parallel tests share them
        session.run("python", "-m", "tests.lab.standins", "warm")
    # Integration AND end-to-end tests mostly WAIT (stacks starting, health checks): they run N at a time on
    # separate workers (each test has its own names, ports, storage, registry and DinD container); a module
    # whose tests share a costly fixture keeps them on one worker (xdist_group). --durations: where CI time goes
    # (budget: the whole .ci/run under 30 min on a fresh machine). DIFY_AIRGAP_TEST_WORKERS=1: one by one.
    workers = os.environ.get("DIFY_AIRGAP_TEST_WORKERS", "3")  # 4 overloads 2 cores: stacks miss 240 s waits
    session.run("pytest", "tests", "-m", "integration", "--durations=15",
                *(["-n", workers, "--dist", "loadgroup"] if workers != "1" else []))


@nox.session
def unit(session: nox.Session) -> None:
    """Unit tests only (no engine needed)."""
    _install(session)
    session.run("pytest", "tests", "-m", "not integration and not e2e", *session.posargs)


@nox.session
def standins(session: nox.Session) -> None:
    """Build the lab stand-in images named like Dify's and seed the lab registry (Docker Hub mirror)."""
    _install_and_start_lab(session)
    session.run("python", "-m", "tests.lab.standins", "build", "--seed", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Measure raw save, save|gzip, our bundle and both loads side by side (not part of `tests`); --size-mb N."""
    _install_and_start_lab(session)
    session.run("python", "-m", "tests.lab.bench", *session.posargs)


def _e2e(session: nox.Session, runtime: str) -> None:
    _install_and_start_lab(session)
    # -s: the transcript (network interfaces of the air-gapped container, install and check output) is shown
    session.run("pytest", "-s", "-m", "e2e", "tests/e2e", "-k", runtime, *session.posargs)


@nox.session
def rehearse(session: nox.Session) -> None:
    """Prove a bundle before the transfer: install + check it in a --network none container (lab code, not shipped).

    nox -s rehearse -- BUNDLE [--runtime podman] [--timeout 600]
    """
    if not session.posargs:
        session.error("usage: nox -s rehearse -- BUNDLE [--runtime docker|podman] [--timeout SECONDS]")
    _install_and_start_lab(session)
    bundle, *rest = session.posargs
    session.run("python", "-m", "tests.lab.e2e", "--rehearse", bundle, *rest)


@nox.session(name="e2e-docker")
def e2e_docker(session: nox.Session) -> None:
    """Online bundle through a registry mirror, then install + check on docker in a --network none container."""
    _e2e(session, "docker")


@nox.session(name="e2e-podman")
def e2e_podman(session: nox.Session) -> None:
    """The same with podman (and no podman-compose preinstalled: the bundle's wheels provide it)."""
    _e2e(session, "podman")
