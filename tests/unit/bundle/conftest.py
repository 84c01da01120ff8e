"""The ``bundle`` fixture: a tiny valid bundle directory under tmp_path; ``site_keys``/``other_keys``: RSA pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.plugins import sign
from tests.unit.bundle.bundles import build_bundle


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return build_bundle(tmp_path / "src")


@pytest.fixture(scope="session")
def site_keys(tmp_path_factory) -> tuple[Path, Path]:
    """(private, public) PKCS#1 PEM files, as `invoke plugin-keygen` writes them (2048 bits: quick to make)."""
    return sign.write_keypair(tmp_path_factory.mktemp("keys"), name="site", bits=2048)


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory) -> tuple[Path, Path]:
    return sign.write_keypair(tmp_path_factory.mktemp("other-keys"), name="other", bits=2048)
