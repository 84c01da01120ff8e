"""backup / restore on real engines: the whole REAL compose project (stand-ins, a REAL PostgreSQL) is backed up
on one engine and restored into another directory on the other engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from scripts.core.errors import AirgapError
from scripts.core.waiting import wait_until
from scripts.data import backup, datadir, snapshot
from scripts.data.stackdata import Stack
from scripts.engine.client import Engine
from tests.conftest import RELEASES, ROOT, require_engine
from tests.integration import dify_stack as ds
from tests.integration.standin_project import OVERRIDES, service_states
from tests.lab import standins

pytestmark = pytest.mark.integration

LAYER_FILE = "envs/core-services/api.env"
WRITERS = {"api", "worker", "worker_beat", "plugin_daemon", "weaviate", "redis"}


def _plant(running: ds.RunningStack) -> None:
    volumes = running.stack.project_dir / "volumes"
    storage = volumes / "app" / "storage"
    (storage / "upload_files" / "tenant").mkdir(parents=True, exist_ok=True)
    for i in range(5):
        f = storage / "upload_files" / "tenant" / f"doc{i}.pdf"
        f.write_bytes(os.urandom(4096 * (i + 1)))
        os.chown(f, 1001, 1001)
    os.chown(storage / "upload_files", 1001, 1001)
    weaviate = volumes / "weaviate" / "collections"
    weaviate.mkdir(parents=True, exist_ok=True)
    (weaviate / "segment-1.db").write_bytes(os.urandom(8192))
    (volumes / "redis" / "data").mkdir(parents=True, exist_ok=True)
    (volumes / "redis" / "data" / "dump.rdb").write_bytes(b"REDIS0009" + os.urandom(100))
    ds.plant_plugins(volumes / "plugin_daemon", plugins=2)
    nginx = running.stack.project_dir / "nginx" / "conf.d" / "site-extra.conf"
    nginx.write_text("# the operator's own nginx change (kept by backup/restore)\n")
    env = running.stack.project_dir / ".env"
    env.write_text(env.read_text() + "SECRET_KEY=operator-secret-kept-0600\n")
    env.chmod(0o600)
    if (running.stack.project_dir / "envs").is_dir():  # 1.14+: a rendered env layer holds site settings too
        layer = running.stack.project_dir / LAYER_FILE
        layer.write_text("MAIL_TYPE=smtp\nSMTP_SERVER=mail.example.internal\n")
        layer.chmod(0o600)
    running.psql("dify", "CREATE TABLE accounts (id serial PRIMARY KEY, name text); "
                         "INSERT INTO accounts (name) SELECT 'user' || g FROM generate_series(1, 42) g; "
                         "CREATE TABLE apps (id serial PRIMARY KEY, title text); "
                         "INSERT INTO apps (title) VALUES ('chat'), ('workflow');")
    ds.plant_rows(running, "dify_plugin", "7e1ed6a2-0000-4000-8000-00000000c0de", ["a/b:0.0.1@" + "0" * 64])


def _running(engine, stack: Stack) -> set[str]:
    return {s for s, st in service_states(engine, stack.project_dir, stack.project_name).items()
            if st["state"] == "running"}


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("source,target", [("docker", "podman")])
def test_backup_on_one_engine_restore_on_the_other(source, target, release, release_standins,
                                                   tmp_path, real_postgres):
    src = release_standins(source, release)[0]
    dst = release_standins(target, release)[0]
    with ds.running_stack(src, tmp_path / "ubuntu", version=release) as online:
        online.wait_up(online.services)
        _plant(online)
        volumes = online.stack.project_dir / "volumes"
        before = {name: ds.tree_digest(volumes / name) for name in ("app", "plugin_daemon", "weaviate", "redis")}
        env_before = (online.stack.project_dir / ".env").read_bytes()
        plan = backup.make_plan(online.stack, tmp_path / "backups")
        assert {"api", "worker", "worker_beat", "plugin_daemon", "weaviate", "redis"} <= set(plan.stop)
        assert ("weaviate", "vector store") in plan.volumes and ("app", "app storage") in plan.volumes
        assert not [v for v, _ in plan.volumes if v == "db"], "database files must be dumped, not copied"
        result = backup.backup(src, plan)
        assert (result / datadir.COMPLETE).is_file()
        assert _running(src, online.stack) >= WRITERS, "writers were not started again"
        manifest = json.loads((result / "manifest.json").read_text())
        counts = {d["name"]: d["row_counts"] for d in manifest["databases"]}
        assert counts["dify"] == {"accounts": 42, "apps": 2}
        assert counts["dify_plugin"] == {"plugin_installations": 1, "plugins": 1}
        assert "operator-secret" not in (result / "manifest.json").read_text()

    target_dir = tmp_path / "rhel" / "opt-dify" / "docker"  # another path, another runtime
    target_dir.mkdir(parents=True)
    files = ["docker-compose.yaml", ds.PG_OVERRIDE, str(OVERRIDES / "podman.yaml")] if dst.is_podman \
        else ["docker-compose.yaml", ds.PG_OVERRIDE]
    stack = Stack(target_dir, ds.project_name("dalrest"), target_dir / ".env", files, runtime=dst.runtime)
    restored = ds.RunningStack(dst, stack, facts=standins.release_facts(release))
    try:
        outcome = backup.restore(dst, result, stack)
        for name, digest in before.items():
            assert ds.tree_digest(target_dir / "volumes" / name) == digest, name  # content, mode, uid 1001
        env = target_dir / ".env"
        assert env.read_bytes() == env_before and (env.stat().st_mode & 0o777) == 0o600
        if (target_dir / "envs").is_dir():
            layer = target_dir / LAYER_FILE
            assert layer.read_text().startswith("MAIL_TYPE=smtp") and (layer.stat().st_mode & 0o777) == 0o600
        assert (target_dir / "nginx" / "conf.d" / "site-extra.conf").read_text().startswith("# the operator")
        assert outcome["row_counts"]["dify"] == {"accounts": 42, "apps": 2}
        restored.wait_up(restored.services)
        assert restored.psql("dify", "SELECT count(*) FROM accounts").strip() == "42"
        with pytest.raises(AirgapError, match="already holds data"):
            backup.restore(dst, result, stack)  # never over live data without --force
    finally:
        restored.down()


def test_a_truncated_archive_is_refused_naming_the_file(tmp_path):
    root = tmp_path / "snap"
    root.mkdir()
    (root / "data.bin").write_bytes(os.urandom(5000))
    datadir.write_manifest(root, {"kind": snapshot.KIND}, [])
    (root / datadir.COMPLETE).write_text("complete\n")
    datadir.verify_dir(root, snapshot.KIND)  # intact: accepted
    with open(root / "data.bin", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(AirgapError, match=r"data\.bin\s+truncated"):
        datadir.verify_dir(root, snapshot.KIND)
    # restore-daemon checks first: it refuses before touching any engine or stack (its stricter manifest shape
    # check may speak first: this hand-made manifest has no images list)
    with pytest.raises(AirgapError, match=r"data\.bin\s+truncated|manifest\.json: images is missing"):
        snapshot.restore_daemon(Engine("docker", runner=_no_engine_calls), root, stack=None)


def _no_engine_calls(argv, **kwargs):
    raise AssertionError(f"restore ran {argv} on a snapshot that does not verify")


@pytest.mark.usefixtures("docker_standins", "real_postgres")
def test_an_interrupted_backup_is_never_used(tmp_path, monkeypatch):
    """Raise mid-backup (in-process) and kill -9 it (a real process): nothing looks finished."""
    engine = require_engine("docker")
    with ds.running_stack(engine, tmp_path / "p", {"api", "plugin_daemon", "db_postgres", "redis"}) as online:
        online.wait_up({"api", "plugin_daemon", "db_postgres", "redis", "init_permissions"})
        (online.stack.project_dir / "volumes" / "app" / "storage" / "big.bin").write_bytes(os.urandom(1 << 20))
        out = tmp_path / "backups"

        calls = []

        def explode(*args, **kwargs):
            calls.append(args)
            raise KeyboardInterrupt

        monkeypatch.setattr(backup.datadir, "archive_dir", explode)
        with pytest.raises(KeyboardInterrupt):
            backup.backup(engine, backup.make_plan(online.stack, out))
        monkeypatch.undo()
        assert calls and (not out.exists() or not list(out.iterdir())), "an interrupted backup left a directory"
        assert {"api", "plugin_daemon", "redis"} <= _running(engine, online.stack)

        # a real process killed with SIGKILL mid-way: the .partial stays, is never renamed, restore refuses it
        proc = subprocess.Popen([sys.executable, "-c", _KILLED_BACKUP, str(online.stack.project_dir),
                                 online.stack.project_name, *online.stack.files, "--", str(out)], cwd=ROOT,
                                start_new_session=True)
        try:
            partial = wait_until(lambda: next((p for p in out.glob(".*.partial") if any(p.glob("db-*.sql.zst"))),
                                              None), timeout=120, what="the backup to start writing")
            os.killpg(proc.pid, signal.SIGKILL)  # the backup and the tar it started
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert partial.exists() and not [p for p in out.iterdir() if not p.name.startswith(".")]
        assert not (partial / datadir.COMPLETE).exists()
        with pytest.raises(AirgapError, match="UNFINISHED"):
            backup.restore(engine, partial, online.stack)


#: A backup that takes long enough to be killed: its storage archive is slowed down on purpose.
_KILLED_BACKUP = r"""
import sys
from pathlib import Path
from scripts.data import backup
from scripts.data import datadir
from scripts.data import stackdata
from scripts.engine.client import Engine
args = sys.argv[1:]
sep = args.index("--")
project, name, files, out = Path(args[0]), args[1], args[2:sep], Path(args[sep + 1])
stack = stackdata.Stack(project, name, project / ".env", files)
real = datadir.compress_command
def slow(argv, *a, **k):
    if argv[0] == "tar":
        argv = ["sh", "-c", "sleep 60; exec \"$@\"", "sh", *argv]
    return real(argv, *a, **k)
datadir.compress_command = slow
backup.backup(Engine("docker"), backup.make_plan(stack, out))
"""
