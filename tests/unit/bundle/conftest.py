"""The ``bundle`` fixture: a tiny valid bundle directory under tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.bundle.bundles import build_bundle


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return build_bundle(tmp_path / "src")
