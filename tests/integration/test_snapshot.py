"""snapshot-daemon / restore-daemon on real engines: the REAL compose file, stand-ins, a REAL PostgreSQL."""

from __future__ import annotations

import json

import pytest

from scripts.core.errors import AirgapError
from scripts.data import datadir, snapshot
from scripts.engine.client import Engine
from tests.conftest import require_engine
from tests.integration import dify_stack as ds

pytestmark = pytest.mark.integration


def _image_of(engine: Engine, cid: str) -> str:
    info = json.loads(engine.run(["container", "inspect", cid], mutates=False).stdout)[0]
    return info["Config"]["Image"]


@pytest.mark.parametrize("source,target", [("docker", "podman"), ("podman", "docker")])
def test_snapshot_then_restore_on_the_other_engine(source, target, request, tmp_path, real_postgres):
    src = request.getfixturevalue(f"{source}_standins")[0]
    dst = request.getfixturevalue(f"{target}_standins")[0]
    ref = None
    try:
        with ds.running_stack(src, tmp_path / "online", {"plugin_daemon", "db_postgres"}) as online:
            online.wait_up({"plugin_daemon", "db_postgres"})
            volume = online.stack.project_dir / "volumes" / "plugin_daemon"
            planted = ds.plant_plugins(volume)
            ds.plant_rows(online, "dify_plugin", planted["tenant"], planted["ids"])
            ds.python_into_daemon(online)
            before_files = ds.tree_digest(volume)
            before_rows = online.psql("dify_plugin", "SELECT count(*) FROM plugin_installations").strip()

            plan = snapshot.make_plan(online.stack, tmp_path / "snapshots")
            ref = plan.ref
            result = snapshot.snapshot_daemon(src, plan)
            assert result == plan.final_dir and (result / datadir.COMPLETE).is_file()
            assert not list((tmp_path / "snapshots").glob(".*.partial"))
            manifest = json.loads((result / "manifest.json").read_text())
            assert manifest["database"]["row_counts"] == {"plugin_installations": 3, "plugins": 3}
            assert len(manifest["venvs"]) == 3 and not any(v["missing"] for v in manifest["venvs"])
            assert manifest["plugin_state"]["installed"] == sorted(planted["ids"])
            assert manifest["plugin_state"]["rows"]["plugins"] == sorted(planted["ids"])
            # the daemon was unpaused and still answers
            assert json.loads(online.exec("plugin_daemon", "wget", "-q", "-O", "-",
                                          "http://127.0.0.1:5002/health/check"))["status"] == "ok"
            # the committed image carries none of this host's secrets
            env = src.inspect_image(ref)["Config"]["Env"]
            assert not [e for e in env if e.startswith(("DB_PASSWORD=", "SERVER_KEY=")) and not e.endswith("=")]
        src.run(["image", "rm", "--force", ref], check=False)  # the air-gapped side has only the snapshot

        with ds.running_stack(dst, tmp_path / "airgapped", {"db_postgres"}) as offline:
            offline.wait_up({"db_postgres"})
            outcome = snapshot.restore_daemon(dst, result, offline.stack)
            restored = offline.stack.project_dir / "volumes" / "plugin_daemon"
            assert ds.tree_digest(restored) == before_files  # every file: content, mode, owner
            assert offline.psql("dify_plugin", "SELECT count(*) FROM plugin_installations").strip() == before_rows
            assert outcome["row_counts"] == {"plugin_installations": 3, "plugins": 3}
            assert outcome["health"]["status"] == "ok"
            assert outcome["plugins"] == {planted["tenant"]: 3}
            override = offline.stack.project_dir / snapshot.OVERRIDE_NAME
            assert f"image: {ref}" in override.read_text()
            assert outcome["compose_files"][-1] == snapshot.OVERRIDE_NAME
            assert _image_of(dst, offline.container("plugin_daemon")) == ref
    finally:
        if ref:
            for engine in (src, dst):
                engine.run(["image", "rm", "--force", ref], check=False)


@pytest.mark.usefixtures("docker_standins", "real_postgres")
def test_snapshot_refuses_a_venv_whose_interpreter_is_not_in_the_image(tmp_path):
    engine = require_engine("docker")
    with ds.running_stack(engine, tmp_path / "p", {"plugin_daemon", "db_postgres"}) as online:
        online.wait_up({"plugin_daemon", "db_postgres"})
        planted = ds.plant_plugins(online.stack.project_dir / "volumes" / "plugin_daemon", plugins=1)
        ds.plant_rows(online, "dify_plugin", planted["tenant"], planted["ids"])
        plan = snapshot.make_plan(online.stack, tmp_path / "snapshots")
        with pytest.raises(AirgapError, match="python3.12"):
            snapshot.snapshot_daemon(engine, plan)  # no python_into_daemon: /opt/lab-python is missing
        assert not engine.image_exists(plan.ref), "the committed image of a failed snapshot was left behind"
        snaps = tmp_path / "snapshots"  # made for the run's lock only: removed again, or left empty
        assert not snaps.exists() or not list(snaps.iterdir()), "a failed snapshot left files"
        state = engine.run(["container", "inspect", "--format", "{{.State.Status}}",
                            online.container("plugin_daemon")], mutates=False).stdout.strip()
        assert state == "running"  # unpaused also on error


@pytest.mark.usefixtures("docker_standins", "real_postgres")
def test_snapshot_refuses_a_plugin_whose_rows_have_no_file(tmp_path):
    """Rows for two plugins, the installed file of one deleted: refused before the commit, naming it."""
    engine = require_engine("docker")
    with ds.running_stack(engine, tmp_path / "p", {"plugin_daemon", "db_postgres"}) as online:
        online.wait_up({"plugin_daemon", "db_postgres"})
        volume = online.stack.project_dir / "volumes" / "plugin_daemon"
        planted = ds.plant_plugins(volume, plugins=2)
        ds.plant_rows(online, "dify_plugin", planted["tenant"], planted["ids"])
        gone, kept = planted["ids"][1], planted["ids"][0]
        (volume / "plugin" / gone).unlink()
        plan = snapshot.make_plan(online.stack, tmp_path / "snapshots")
        with pytest.raises(AirgapError, match="disagree for 1 plugin") as refused:
            snapshot.snapshot_daemon(engine, plan)
        assert f"{gone}: rows in plugins and plugin_installations but no file plugin/{gone}" in str(refused.value)
        assert kept not in str(refused.value)
        assert not engine.image_exists(plan.ref), "refused before the commit, yet an image was made"
        snaps = tmp_path / "snapshots"
        assert not snaps.exists() or not list(snaps.iterdir()), "a refused snapshot left files"
        state = engine.run(["container", "inspect", "--format", "{{.State.Status}}",
                            online.container("plugin_daemon")], mutates=False).stdout.strip()
        assert state == "running"  # unpaused also on refusal
