"""upgrade/rollback refusals without an engine: nothing installed, another runtime, no or a foreign rollback point."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

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


class _Fakes:
    """The install, backup and stack of an upgrade, faked: the install fails after the dry run."""

    def __init__(self, monkeypatch, tmp_path):
        self.backups: list[Path] = []
        monkeypatch.setattr(upgrader.installer, "install", self.install)
        monkeypatch.setattr(upgrader.sd, "resolve", lambda prefix: SimpleNamespace(prefix=prefix))
        monkeypatch.setattr(upgrader.bk, "make_plan", lambda stack, out: SimpleNamespace(
            final_dir=out / "dify-backup-x", render=lambda engine: "backup plan"))
        monkeypatch.setattr(upgrader.bk, "backup", self.backup)
        self.root = tmp_path

    def install(self, opts):
        if opts.dry_run:
            return installer.InstallReport(opts.prefix, actions=["planned"])
        raise AirgapError("the sandbox never got healthy")

    def backup(self, engine, plan):
        made = self.root / f"backup-{len(self.backups)}"
        made.mkdir()
        self.backups.append(made)
        return made


def test_a_rerun_after_a_failed_upgrade_keeps_the_first_rollback_point(tmp_path, monkeypatch):
    fakes = _Fakes(monkeypatch, tmp_path)
    Deployment(prefix=tmp_path, runtime="docker", dify_version="1.11.3").save()
    opts = installer.InstallOptions(bundle=tmp_path / "new", runtime="docker", prefix=tmp_path)
    with pytest.raises(AirgapError, match="upgrade failed at install"):
        upgrader.upgrade(opts)
    Deployment(prefix=tmp_path, runtime="docker", dify_version="1.16.0").save()  # what the failed install recorded
    with pytest.raises(AirgapError, match="upgrade failed at install") as again:
        upgrader.upgrade(opts)
    point = json.loads(upgrader.point_path(tmp_path).read_text())
    assert len(fakes.backups) == 1 and point["backup"] == str(fakes.backups[0])
    assert point["from_version"] == "1.11.3" and point["record"]["dify_version"] == "1.11.3"
    assert "rollback point is kept" in again.value.hint


def test_no_rollback_point_without_a_finished_backup(tmp_path, monkeypatch):
    _Fakes(monkeypatch, tmp_path)
    monkeypatch.setattr(upgrader.bk, "backup", lambda engine, plan: (_ for _ in ()).throw(AirgapError("disk full")))
    Deployment(prefix=tmp_path, runtime="docker", dify_version="1.11.3").save()
    with pytest.raises(AirgapError, match="disk full"):
        upgrader.upgrade(installer.InstallOptions(bundle=tmp_path / "new", runtime="docker", prefix=tmp_path))
    assert not upgrader.point_path(tmp_path).exists()


def test_rolling_back_a_completed_upgrade_needs_yes_and_a_damaged_backup_changes_nothing(tmp_path):
    record = Deployment(prefix=tmp_path, runtime="docker", dify_version="1.16.0")
    record.save()
    point = {"kind": upgrader.KIND, "created": "2026-12-01T10:00:00+00:00", "from_version": "1.11.3",
             "to_bundle": "b", "backup": str(tmp_path / "no-such-backup"), "record": {"runtime": "docker"},
             "completed": "2026-12-01T10:05:00+00:00"}
    path = upgrader.point_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(point))
    with pytest.raises(AirgapError, match="completed at 2026-12-01T10:05:00") as info:
        upgrader.rollback(tmp_path)
    assert "--yes" in info.value.hint
    before = (tmp_path / "dify-airgap.json").read_bytes()
    with pytest.raises(AirgapError, match="no-such-backup"):
        upgrader.rollback(tmp_path, yes=True)
    assert (tmp_path / "dify-airgap.json").read_bytes() == before and path.exists()
