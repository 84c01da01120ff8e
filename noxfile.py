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


@nox.session
def lint(session: nox.Session) -> None:
    """Run ruff over the code."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "scripts", "tests", "tasks.py", "noxfile.py")


@nox.session
def lab(session: nox.Session) -> None:
    """Install and start the lab engines (dockerd, podman, compose v2, registry mirror)."""
    _install(session)
    session.run("python", "-m", "scripts.lab", "up", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests, then integration tests against real docker and podman (lab started first)."""
    _install(session)
    if _lab_possible():
        session.run("python", "-m", "scripts.lab", "up")
    else:
        session.warn("not root on Debian: the lab is not started; integration tests need running engines")
    session.run("pytest", *(session.posargs or ["tests", "-m", "not e2e"]))


@nox.session
def unit(session: nox.Session) -> None:
    """Unit tests only (no engine needed)."""
    _install(session)
    session.run("pytest", "tests", "-m", "not integration and not e2e", *session.posargs)


@nox.session
def standins(session: nox.Session) -> None:
    """Build the lab stand-in images named like Dify's and seed the lab registry (Docker Hub mirror)."""
    _install(session)
    session.run("python", "-m", "scripts.lab", "up")
    session.run("python", "-m", "scripts.standins", "build", "--seed", *session.posargs)
