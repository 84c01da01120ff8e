"""snapshot/backup planning and command construction: no engine, real inputs, no mocks of our own code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from scripts.core.errors import AirgapError
from scripts.data import backup, datadir, snapshot, stackdata
from scripts.engine.client import Engine, Result
from tests.conftest import FIXTURES

SECRET = "s3cr3t-Pa55word"


def _project(tmp_path: Path, extra_env: str = "") -> Path:
    project = tmp_path / "docker"
    project.mkdir()
    (project / "docker-compose.yaml").write_text((FIXTURES / "docker-compose.yaml").read_text())
    (project / ".env").write_text(f"DB_PASSWORD={SECRET}\nVECTOR_STORE=weaviate\n{extra_env}")
    for d in ("app/storage", "plugin_daemon/cwd", "weaviate", "redis/data", "db/data", "sandbox/conf"):
        (project / "volumes" / d).mkdir(parents=True)
    return project


@pytest.mark.parametrize("db_type,tool", [("postgresql", "pg_dump"), ("mysql", "mysqldump")])
def test_database_commands_never_carry_a_secret_and_pass_names_as_arguments(db_type, tool):
    dump = stackdata.dump_command(db_type, "dify_plugin")
    assert dump[:2] == ["sh", "-c"] and tool in dump[2] and dump[3:] == ["sh", "dify_plugin"]
    for command in (dump, stackdata.load_command(db_type, "x"), stackdata.recreate_command(db_type, "x"),
                    stackdata.row_counts_command(db_type, "x"), stackdata.exists_command(db_type, "x")):
        joined = " ".join(command)
        assert SECRET not in joined and "difyai123456" not in joined
        assert "$POSTGRES_PASSWORD" in joined or "$MYSQL_ROOT_PASSWORD" in joined  # read inside the container


def test_row_counts_are_parsed_from_psql_output():
    assert stackdata.parse_row_counts("accounts=42\napps=2\n\nnoise\nplugins=0\n") == \
        {"accounts": 42, "apps": 2, "plugins": 0}


@pytest.mark.parametrize("runtime,label", [("docker", "com.docker.compose.project"),
                                           ("podman", "io.podman.compose.project")])
def test_containers_are_found_by_compose_labels(runtime, label):
    argv = stackdata.ps_argv(Engine(runtime), "dify", "plugin_daemon")
    assert argv == ["ps", "-q", "--no-trunc", "--filter", f"label={label}=dify",
                    "--filter", "label=com.docker.compose.service=plugin_daemon"]


def test_commit_gives_back_the_image_environment_without_this_hosts_secrets():
    image_env = ["PATH=/usr/bin", "LANG=C.UTF-8"]
    container_env = ["PATH=/usr/bin", "LANG=en_US", f"DB_PASSWORD={SECRET}", "SERVER_KEY=abc"]
    changes = snapshot.scrub_env_changes(container_env, image_env)
    assert changes == ['ENV LANG="C.UTF-8"', 'ENV DB_PASSWORD=""', 'ENV SERVER_KEY=""']
    docker = snapshot.commit_argv(Engine("docker"), "cid", "localhost/x:1", changes[:1])
    podman = snapshot.commit_argv(Engine("podman"), "cid", "localhost/x:1", changes[:1])
    assert docker == ["commit", "--change", 'ENV LANG="C.UTF-8"', "cid", "localhost/x:1"]
    assert podman == ["commit", "--format", "docker", "-q", "--change", 'ENV LANG="C.UTF-8"', "cid", "localhost/x:1"]


@pytest.mark.parametrize("tag,ref", [("mysnap:1", "localhost/mysnap:1"), ("acme/daemon:2", "localhost/acme/daemon:2"),
                                     ("registry.local:5000/d:3", "registry.local:5000/d:3"),
                                     ("localhost/d:4", "localhost/d:4"), ("plain", "localhost/plain:latest")])
def test_tags_get_localhost_so_docker_and_podman_name_them_alike(tag, ref):
    assert snapshot.full_ref(tag) == ref


def test_default_tag_is_derived_from_the_dify_version_and_date(tmp_path):
    stack = stackdata.resolve(project_dir=str(_project(tmp_path)))
    assert stack.dify_version == "1.11.3" and stack.project_name == "docker"
    plan = snapshot.make_plan(stack, tmp_path / "out")
    assert plan.ref.startswith(f"{snapshot.REPO}:1.11.3-20") and plan.name.startswith("plugin-daemon-1.11.3-")
    assert plan.database == "dify_plugin"


def test_snapshot_plan_prints_the_commands_without_secrets(tmp_path):
    from scripts.core.console import register_secret

    register_secret(SECRET)
    stack = stackdata.resolve(project_dir=str(_project(tmp_path)))
    text = snapshot.make_plan(stack, tmp_path / "out", tag="t:1").render(Engine("podman", dry_run=True))
    assert "podman pause <plugin_daemon>" in text and "--format docker" in text and "pg_dump" in text
    assert "unpause" in text and SECRET not in text and not (tmp_path / "out").exists()


def test_podman_gets_the_podman_override_by_default(tmp_path):
    stack = stackdata.resolve(project_dir=str(_project(tmp_path)), runtime="podman")
    assert stack.files[0] == "docker-compose.yaml" and stack.files[1].endswith("compose-overrides/podman.yaml")
    assert stackdata.resolve(project_dir=str(tmp_path / "docker"), runtime="docker").files == []


def test_venvs_name_the_interpreters_they_need(tmp_path):
    volume = tmp_path / "plugin_daemon"
    venv = volume / "cwd" / "langgenius" / "openai-0.2.7" / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\nimplementation = CPython\nversion_info = 3.12.3\n")
    (venv / "bin" / "python").symlink_to("/usr/bin/python3.12")
    (venv / "lib" / "python3.12" / "site-packages" / "x" / ".venv").mkdir(parents=True)  # never walked into
    old = volume / "cwd" / "a" / "b" / ".venv"
    old.mkdir(parents=True)
    (old / "pyvenv.cfg").write_text("home = /usr/local/bin\nversion = 3.11.4\n")
    found = {v.path: v.interpreters for v in snapshot.find_venvs(volume / "cwd", volume)}
    assert found == {"cwd/langgenius/openai-0.2.7/.venv": ["/usr/bin/python3.12"],
                     "cwd/a/b/.venv": ["/usr/local/bin/python3.11"]}
    argv = snapshot.missing_in_image_argv(Engine("podman"), "img", ["/usr/bin/python3.12"])
    assert argv[:7] == ["run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", "img"]
    assert argv[-1] == "/usr/bin/python3.12"


def _fake_snapshot(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "data.bin").write_bytes(os.urandom(3000))
    datadir.write_manifest(root, {"kind": snapshot.KIND}, [])
    (root / datadir.COMPLETE).write_text("complete\n")
    return root


def test_verify_refuses_unfinished_incomplete_damaged_or_other_kinds(tmp_path):
    root = _fake_snapshot(tmp_path / "snap")
    assert datadir.verify_dir(root, snapshot.KIND)[0] == root
    with pytest.raises(AirgapError, match="holds a plugin-daemon-snapshot, not a dify-backup"):
        datadir.verify_dir(root, backup.KIND)
    partial = tmp_path / ".snap.partial"
    root.rename(partial)
    with pytest.raises(AirgapError, match="UNFINISHED"):
        datadir.verify_dir(partial, snapshot.KIND)
    partial.rename(root)
    (root / datadir.COMPLETE).unlink()
    with pytest.raises(AirgapError, match="no COMPLETE marker"):
        datadir.verify_dir(root, snapshot.KIND)
    (root / datadir.COMPLETE).write_text("complete\n")
    (root / "data.bin").write_bytes(b"x" * 3000)
    with pytest.raises(AirgapError, match=r"data\.bin\s+corrupted"):
        datadir.verify_dir(root, snapshot.KIND)


def test_verify_expects_the_complete_marker_but_names_anything_else_unlisted(tmp_path):
    root = _fake_snapshot(tmp_path / "snap")
    (root / "planted.sql").write_text("DROP TABLE plugins;\n")
    with pytest.raises(AirgapError, match=r"planted\.sql\s+unexpected"):
        datadir.verify_dir(root, snapshot.KIND)


def test_staging_is_renamed_only_when_complete(tmp_path):
    with pytest.raises(KeyboardInterrupt), datadir.staging(tmp_path, "s1") as stage:
        (stage / "half").write_text("x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with datadir.staging(tmp_path, "s2") as stage:
        datadir.write_manifest(stage, {"kind": "k"}, [])
    assert [p.name for p in tmp_path.iterdir()] == ["s2"] and (tmp_path / "s2" / datadir.COMPLETE).is_file()
    with pytest.raises(AirgapError, match="already exists"), datadir.staging(tmp_path, "s2"):
        pass


def test_backup_plan_dumps_databases_and_archives_everything_else(tmp_path):
    stack = stackdata.resolve(project_dir=str(_project(tmp_path, "DB_PLUGIN_DATABASE=plugins_db\n")))
    plan = backup.make_plan(stack, tmp_path / "out")
    assert plan.databases == ["dify", "plugins_db"]
    assert plan.volumes == [("app", "app storage"), ("plugin_daemon", "plugin storage"), ("redis", "redis data"),
                            ("sandbox", "sandbox config"), ("weaviate", "vector store")]
    assert plan.stop == ["api", "worker", "worker_beat", "plugin_daemon", "weaviate", "redis"]
    text = plan.render(Engine("docker", dry_run=True))
    assert "volumes/db" not in text and "--exclude ./volumes" in text and SECRET not in text


def test_backup_plan_follows_the_vector_store_and_db_type(tmp_path):
    project = _project(tmp_path, "DB_TYPE=mysql\n")
    (project / ".env").write_text((project / ".env").read_text().replace("VECTOR_STORE=weaviate",
                                                                          "VECTOR_STORE=qdrant"))
    (project / "volumes" / "qdrant").mkdir()
    (project / "volumes" / "mysql").mkdir()
    plan = backup.make_plan(stackdata.resolve(project_dir=str(project)), tmp_path / "out")
    assert ("qdrant", "vector store") in plan.volumes and "qdrant" in plan.stop
    assert "mysql" not in {v for v, _ in plan.volumes}
    assert plan.stack.db_service == "db_mysql" and "mysqldump" in plan.render(Engine("docker"))


def test_selinux_relabel_only_where_enforcing(tmp_path):
    def runner(answer):
        return lambda argv, **kw: Result(tuple(argv), 0, answer, "")

    assert stackdata.selinux_enforcing(runner("Enforcing\n"))
    assert not stackdata.selinux_enforcing(runner("Permissive\n"))
    assert not stackdata.selinux_enforcing(lambda argv, **kw: Result(tuple(argv), 127, "", "not found"))
    assert stackdata.relabel_argv([tmp_path]) == ["chcon", "-R", "-t", "container_file_t", str(tmp_path)]


def test_restore_target_may_be_a_new_directory(tmp_path):
    stack = stackdata.resolve(project_dir=str(tmp_path / "new" / "docker"), runtime="podman", new=True)
    assert not stack.project_dir.exists() and stack.files[-1].endswith("podman.yaml")  # made by the restore
    fresh = stackdata.resolve(prefix=str(tmp_path / "opt"), new=True)
    assert fresh.project_dir == (tmp_path / "opt" / "docker").resolve() and fresh.project_name == "dify"
    assert fresh.prefix == (tmp_path / "opt").resolve()  # PREFIX/compose-overrides is restored too


def test_override_points_the_daemon_at_the_snapshot_image(tmp_path):
    stack = stackdata.resolve(project_dir=str(_project(tmp_path)), runtime="podman")
    path, files = snapshot.write_override(stack, "localhost/dify-airgap/plugin-daemon-snapshot:1", "snap")
    assert path == stack.project_dir / snapshot.OVERRIDE_NAME and files[-1] == snapshot.OVERRIDE_NAME
    assert "  plugin_daemon:\n    image: localhost/dify-airgap/plugin-daemon-snapshot:1\n" in path.read_text()


def test_a_snapshot_goes_into_a_bundle_verified(tmp_path):
    root = _fake_snapshot(tmp_path / "snap")
    data = json.loads((root / "manifest.json").read_text())
    data["images"] = [{"ref": "localhost/dify-airgap/plugin-daemon-snapshot:1"}]
    (root / "manifest.json").write_text(json.dumps(data))
    from scripts.bundle.manifest import write_sums
    from scripts.core.files import sha256_file

    write_sums(root, data["files"])
    staging = tmp_path / "bundle.partial"
    entry = snapshot.add_to_bundle(root, staging)
    assert entry["path"] == "daemon-snapshot" and entry["image"].endswith("snapshot:1")
    assert sha256_file(staging / "daemon-snapshot" / "data.bin") == sha256_file(root / "data.bin")
    assert (staging / "daemon-snapshot" / datadir.COMPLETE).is_file()
    (root / "data.bin").write_bytes(b"damaged")
    with pytest.raises(AirgapError, match="data.bin"):
        snapshot.add_to_bundle(root, tmp_path / "other")
