"""upgrade/rollback refusals without an engine: nothing installed, another runtime, no or a foreign rollback point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.core.errors import AirgapError
from scripts.dify.deployment import Deployment
from scripts.flows import upgrade as upgrader
from scripts.host import install as installer


def test_an_upgrade_without_an_install_says_to_install(tmp_path):
    with pytest.raises(AirgapError, match="nothing to upgrade at") as info:
        upgrader.upgrade(installer.InstallOptions(bundle=tmp_path / "b", runtime="docker", prefix=tmp_path))
    assert "invoke install" in info.value.hint


def test_an_upgrade_on_another_runtime_is_refused_naming_both(tmp_path):
    Deployment(prefix=tmp_path, runtime="podman", dify_version="1.11.3").save()
    with pytest.raises(AirgapError, match="runs on podman, not docker") as info:
        upgrader.upgrade(installer.InstallOptions(bundle=tmp_path / "b", runtime="docker", prefix=tmp_path))
    assert "--runtime podman" in info.value.hint


def test_a_rollback_without_a_point_says_there_is_nothing_to_roll_back(tmp_path):
    with pytest.raises(AirgapError, match=r"no rollback point at .*rollback\.json") as info:
        upgrader.rollback(tmp_path)
    assert "invoke restore" in info.value.hint


@pytest.mark.parametrize("point, says", [
    ("not json", "rollback point"),
    (json.dumps({"kind": "something-else", "created": "", "from_version": "1.11.3", "to_bundle": "b", "backup": "x",
                 "record": {}}), "is not a rollback point"),
    (json.dumps({"kind": upgrader.KIND}), "rollback point"),
])
def test_a_damaged_or_foreign_rollback_point_is_refused_by_name(tmp_path, point, says):
    path = upgrader.point_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(point)
    with pytest.raises(AirgapError, match=says):
        upgrader.rollback(tmp_path, dry_run=True)
    assert path.read_text() == point and not (Path(tmp_path) / "dify-airgap.json").exists()
