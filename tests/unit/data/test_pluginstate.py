"""Plugin files against dify_plugin rows (issue #12 item 4): the pure comparison, the daemon's own filters, and the
wiring into snapshot-daemon / restore-daemon with a scripted engine (no engine, no database)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
from pathlib import Path

import pytest
import zstandard

from scripts.core.errors import AirgapError, BadInput
from scripts.data import datadir, snapshot, stackdata
from scripts.data import pluginstate as ps
from scripts.engine.client import Engine, Result
from tests.conftest import FIXTURES
from tests.support.hostile import tar_dir, tar_file

A = "langgenius/openai:0.2.7@" + "a" * 64
B = "langgenius/ollama:0.1.0@" + "b" * 64
C = "acme/tool:1.0.0-beta@" + "c" * 32


# --- the comparison --------------------------------------------------------------------------------

def test_files_and_rows_that_agree_have_no_disagreement():
    rows = {"plugins": [A, B], "plugin_installations": [A, B, A]}
    assert ps.disagreements(rows, [A, B], [A, B, C]) == {}  # an uploaded, never installed package is fine
    assert ps.disagreements({"plugins": [A], "plugin_installations": []}, [A], [A]) == {}  # installed for nobody


def test_every_disagreement_is_named_by_plugin():
    rows = {"plugins": [A, B], "plugin_installations": [B]}
    found = ps.disagreements(rows, installed=[A, C], packages=[A])
    assert found == {
        B: [f"rows in plugins and plugin_installations but no file plugin/{B}"],
        C: [f"file plugin/{C} but no row in plugins nor plugin_installations",
            f"no package plugin_packages/{C} to start it from"],
    }
    assert list(found) == sorted(found)
    line = ps.describe(found)
    assert "\n" not in line and line.startswith(f"{C}: file plugin/{C}") and f"; {B}: rows in" in line


def test_a_file_with_a_tenant_row_but_no_plugins_row_is_skipped_by_the_daemon():
    found = ps.disagreements({"plugins": [], "plugin_installations": [A]}, [A], [A], "inst", "pkgs")
    assert found == {A: [f"file inst/{A} but no row in plugins"]}


def test_an_installed_plugin_without_its_package_cannot_start():
    found = ps.disagreements({"plugins": [A], "plugin_installations": [A]}, [A], [])
    assert found == {A: [f"no package plugin_packages/{A} to start it from"]}


@pytest.mark.parametrize("name,ok", [
    (A, True), (C, True), ("tool:1.0.0@" + "d" * 32, True),      # the author is optional
    ("langgenius/openai:0.2.7@" + "a" * 31, False),               # checksum too short
    ("langgenius/openai:1@" + "a" * 64, False),                   # one version part
    ("LangGenius/openai:0.2.7@" + "a" * 64, False),               # upper case
    ("langgenius/openai:0.2.7@" + "a" * 64 + "\n", False),
])
def test_identifiers_are_the_daemons(name, ok):
    assert bool(ps.IDENTIFIER.match(name)) is ok


def test_the_storage_is_scanned_like_the_daemons_installed_bucket(tmp_path):
    for rel in (f"plugin/{A}", f"plugin/{C}", "plugin/.partial/x", ".hidden", "plugin/README", f"plugin_packages/{A}"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"pkg")
    assert ps.scan(tmp_path, "plugin") == ([C, A], ["README"])
    assert ps.scan(tmp_path, "plugin_packages") == ([A], [])
    assert ps.scan(tmp_path, "missing") == ([], [])


def test_archive_members_give_the_same_identifiers():
    names = [f"./plugin/{A}", f"./plugin_packages/{B}", "./plugin/.x", f"plugin/{C}", "./cwd/a/b/main.py"]
    assert ps.from_members(names, "plugin") == [C, A]
    assert ps.from_members(names, "plugin_packages") == [B]


@pytest.mark.parametrize("env,want", [
    ({}, ("plugin", "plugin_packages")),
    ({"PLUGIN_STORAGE_TYPE": "local", "PLUGIN_INSTALLED_PATH": "./inst/", "PLUGIN_PACKAGE_CACHE_PATH": "/pk"},
     ("inst", "pk")),
    ({"PLUGIN_STORAGE_TYPE": "s3"}, "PLUGIN_STORAGE_TYPE=s3: the plugin files are not in the volume"),
    ({"PLUGIN_INSTALLED_PATH": "../elsewhere"}, "outside"),
    ({"PLUGIN_INSTALLED_PATH": "/"}, "the storage root"),
])
def test_storage_paths_follow_the_daemon_environment(env, want):
    got = ps.storage_paths(env)
    assert got == want if isinstance(want, tuple) else want in got


def test_rows_query_uses_the_type_columns_and_says_what_is_missing():
    full = {"plugins.plugin_unique_identifier", "plugins.install_type",
            "plugin_installations.plugin_unique_identifier", "plugin_installations.runtime_type"}
    sql, notes = ps.rows_sql(full)
    assert notes == []
    assert sql == ("SELECT CONCAT('plugins ', plugin_unique_identifier) FROM plugins WHERE install_type = 'local' "
                   "UNION ALL SELECT CONCAT('plugin_installations ', plugin_unique_identifier) FROM "
                   "plugin_installations WHERE runtime_type = 'local'")
    sql, notes = ps.rows_sql({"plugins.plugin_unique_identifier"})
    assert sql == "SELECT CONCAT('plugins ', plugin_unique_identifier) FROM plugins"
    assert notes == ["plugins has no install_type column (not a plugin daemon's schema): every row counted",
                     "no table plugin_installations with plugin_unique_identifier in the database: no rows"]
    assert ps.rows_sql(set())[0] is None
    assert ps.parse_rows(f"plugins {B}\nplugins {A}\nplugin_installations {A}\n\nplugins \nnoise\n") == \
        {"plugins": [B, A], "plugin_installations": [A]}  # sorted: ollama before openai
    assert "current_schema()" in ps.columns_sql("postgresql") and "DATABASE()" in ps.columns_sql("mysql")


def test_the_recorded_state_is_checked_before_it_is_believed():
    good = ps.PluginState(rows={"plugins": [A], "plugin_installations": [A]}, installed=[A], packages=[A])
    data = good.to_manifest()
    assert ps.PluginState.from_manifest(json.loads(json.dumps(data)), "s").disagreements() == {}
    with pytest.raises(BadInput, match=r"s: plugin_state: rows\.plugin_installations is missing"):
        ps.PluginState.from_manifest({**data, "rows": {"plugins": [A]}}, "s")
    with pytest.raises(BadInput, match=r"plugin_state: installed must be a list"):
        ps.PluginState.from_manifest({**data, "installed": A}, "s")
    with pytest.raises(BadInput, match=r"names '\.\./\.\./etc/passwd', not a plugin unique identifier"):
        ps.PluginState.from_manifest({**data, "packages": ["../../etc/passwd"]}, "s")
    with pytest.raises(BadInput, match=r"installed_path '\.\./x' is not a plain relative path"):
        ps.PluginState.from_manifest({**data, "installed_path": "../x"}, "s")
    assert ps.PluginState.from_manifest({"skipped": "PLUGIN_STORAGE_TYPE=s3"}, "s").skipped


# --- snapshot-daemon, scripted -------------------------------------------------------------------

ALL_COLUMNS = ("plugins.plugin_unique_identifier\nplugins.install_type\nplugin_installations.plugin_unique_identifier"
               "\nplugin_installations.runtime_type\n")


class FakeStack:
    """A runner answering the engine and database calls snapshot-daemon makes; the commit fails (the test ends
    there when the plugin check let the snapshot go on). Records argv."""

    def __init__(self, columns: str, rows: str) -> None:
        self.columns, self.rows, self.calls = columns, rows, []

    def __call__(self, argv, **kwargs):
        argv = tuple(argv)
        self.calls.append(argv)
        verb = argv[1]
        if verb == "ps":
            service = next(a for a in argv if a.startswith("label=com.docker.compose.service=")).rsplit("=", 1)[1]
            return Result(argv, 0, f"{service}-cid\n", "")
        if argv[1:3] == ("container", "inspect"):
            info = {"Image": "sha256:daemon", "Config": {"Image": "langgenius/dify-plugin-daemon:0.5.2-local",
                                                         "Env": ["PLUGIN_STORAGE_TYPE=local", "SERVER_KEY=x"]}}
            return Result(argv, 0, json.dumps([info]), "")
        if argv[1:3] == ("image", "inspect"):
            found = argv[3] == "sha256:daemon"  # the snapshot's own tag does not exist yet
            return Result(argv, 0 if found else 1, json.dumps([{"Config": {"Env": []}}]) if found else "", "")
        if verb == "exec":
            sql = argv[-1]
            out = ("1" if "pg_database" in sql else self.columns if "information_schema.columns" in sql
                   else self.rows if "CONCAT('plugin" in sql else None)
            assert out is not None, f"unexpected database command {argv}"
            return Result(argv, 0, out, "")
        if verb in ("pause", "unpause"):
            return Result(argv, 0, "", "")
        if verb == "commit":
            return Result(argv, 1, "", "the test stops at the commit")
        raise AssertionError(f"unexpected engine call {argv}")

    def verbs(self) -> list[str]:
        return [c[1] for c in self.calls if c[1] in ("pause", "commit", "unpause")]


def _plan(tmp_path: Path, files: dict[str, bytes]) -> snapshot.SnapshotPlan:
    project = tmp_path / "docker"
    project.mkdir()
    (project / "docker-compose.yaml").write_text((FIXTURES / "docker-compose.yaml").read_text())
    (project / ".env").write_text("DB_PASSWORD=x\n")
    (project / "volumes" / "plugin_daemon" / "cwd").mkdir(parents=True)
    for rel, data in files.items():
        path = project / "volumes" / "plugin_daemon" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return snapshot.make_plan(stackdata.resolve(project_dir=str(project)), tmp_path / "out", tag="t:1")


def _installed(*ids: str) -> dict[str, bytes]:
    return {f"{bucket}/{i}": b"pkg" for i in ids for bucket in ("plugin", "plugin_packages")}


def test_snapshot_refuses_before_the_commit_naming_the_plugin_whose_file_is_gone(tmp_path):
    plan = _plan(tmp_path, _installed(A))
    runner = FakeStack(ALL_COLUMNS, f"plugins {A}\nplugins {B}\nplugin_installations {A}\nplugin_installations {B}\n")
    with pytest.raises(AirgapError, match=r"disagree for 1 plugin\(s\), refusing the snapshot") as refused:
        snapshot.snapshot_daemon(Engine("docker", runner=runner), plan)
    assert f"{B}: rows in plugins and plugin_installations but no file plugin/{B}" in str(refused.value)
    assert A not in str(refused.value) and "reinstall or remove" in refused.value.hint
    assert runner.verbs() == ["pause", "unpause"], "committed, or not unpaused"
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir()), "a refused snapshot left files"
    sql = [c[-1] for c in runner.calls if "CONCAT('plugin" in c[-1]]
    assert len(sql) == 1 and "install_type = 'local'" in sql[0]


def test_snapshot_refuses_installed_files_without_rows_also_without_plugin_tables(tmp_path):
    """A database without the daemon's tables (a stand-in daemon): installed files have no rows."""
    plan = _plan(tmp_path, _installed(A))
    runner = FakeStack("", "")
    with pytest.raises(AirgapError, match=rf"{A}: file plugin/{A} but no row in plugins nor plugin_installations"):
        snapshot.snapshot_daemon(Engine("docker", runner=runner), plan)
    assert runner.verbs() == ["pause", "unpause"]
    assert not [c for c in runner.calls if "CONCAT('plugin" in c[-1]], "queried tables that are not there"


@pytest.mark.parametrize("columns,rows,files", [
    (ALL_COLUMNS, f"plugins {A}\nplugin_installations {A}\n", _installed(A)),
    ("", "", {}),                                                          # no tables, nothing installed
    (ALL_COLUMNS, f"plugins {A}\nplugin_installations {A}\n", {**_installed(A), "plugin/README": b"x"}),
])
def test_snapshot_goes_on_to_the_commit_when_files_and_rows_agree(tmp_path, columns, rows, files, caplog):
    plan = _plan(tmp_path, files)
    runner = FakeStack(columns, rows)
    with caplog.at_level(logging.INFO, logger="dify_airgap"), pytest.raises(AirgapError) as stopped:
        snapshot.snapshot_daemon(Engine("docker", runner=runner), plan)
    assert "the test stops at the commit" in str(stopped.value) and "disagree" not in str(stopped.value)
    assert runner.verbs() == ["pause", "commit", "unpause"]
    assert f"plugin files and dify_plugin rows agree: {len(files) and 1} installed plugin(s)" in caplog.text
    assert ("the daemon ignores them too): README" in caplog.text) is ("plugin/README" in files)


# --- restore-daemon ------------------------------------------------------------------------------

class Reached(Exception):
    """The restore got past every check to its first engine call (loading the image)."""


def _no_engine(argv, **kwargs):
    raise Reached(" ".join(argv))


def _zst_entry(root: Path, name: str, raw: bytes) -> dict:
    blob = zstandard.ZstdCompressor().compress(raw)
    (root / name).write_bytes(blob)
    part = {"path": name, "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    return {**part, "compression": "zstd", "uncompressed_size": len(raw), "parts": [part]}


def _snapshot(root: Path, members: list[str], state: dict | None) -> Path:
    """A complete, verifying snapshot whose storage archive holds ``members`` (files below ./)."""
    root.mkdir(parents=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in [tar_dir("."), *(tar_file(f"./{m}", b"pkg") for m in members)]:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    volume = {**_zst_entry(root, snapshot.VOLUME_ARCHIVE, raw.getvalue()), "target": snapshot.VOLUME}
    dump = {**_zst_entry(root, "dify_plugin.sql.zst", b"SELECT 1;\n"), "name": "dify_plugin", "type": "postgresql"}
    image = _zst_entry(root, snapshot.IMAGE_ARCHIVE, b"not an image")
    data = {"kind": snapshot.KIND, "images": [{"ref": "localhost/dify-airgap/plugin-daemon-snapshot:t"}],
            "image_archive": image, "volume": volume, "database": dump}
    if state is not None:
        data["plugin_state"] = state
    datadir.write_manifest(root, data, [image, volume, dump])
    (root / datadir.COMPLETE).write_text("complete\n")
    return root


def _restore(tmp_path: Path, root: Path):
    stack = stackdata.resolve(project_dir=str(tmp_path / "new" / "docker"), runtime="docker", new=True)
    return snapshot.restore_daemon(Engine("docker", runner=_no_engine), root, stack)


STATE = ps.PluginState(rows={"plugins": [A, B], "plugin_installations": [A, B]}, installed=[A, B],
                       packages=[A, B])


def test_restore_refuses_a_snapshot_whose_recorded_files_and_rows_disagree(tmp_path):
    state = {**STATE.to_manifest(), "installed": [A]}
    root = _snapshot(tmp_path / "snap", [f"plugin/{A}", f"plugin_packages/{A}"], state)
    with pytest.raises(BadInput, match=r"its plugin files and dify_plugin rows disagree for 1 plugin\(s\), refusing "
                                       rf"to restore it: {B}: rows in plugins and plugin_installations but no file"):
        _restore(tmp_path, root)
    assert not (tmp_path / "new").exists(), "something was written before the refusal"


def test_restore_refuses_a_storage_archive_without_the_recorded_plugin_file(tmp_path):
    members = [f"plugin/{A}", f"plugin_packages/{A}", f"plugin_packages/{B}"]  # plugin/B is not in the archive
    root = _snapshot(tmp_path / "snap", members, STATE.to_manifest())
    with pytest.raises(BadInput, match=rf"storage archive and its recorded dify_plugin rows disagree .*{B}: rows in "
                                       rf"plugins and plugin_installations but no file plugin/{B}"):
        _restore(tmp_path, root)
    assert not (tmp_path / "new").exists()


def test_restore_goes_on_when_the_archive_agrees_with_the_rows(tmp_path, caplog):
    members = [f"plugin/{A}", f"plugin_packages/{A}", f"plugin/{B}", f"plugin_packages/{B}", "cwd/x/main.py"]
    root = _snapshot(tmp_path / "snap", members, STATE.to_manifest())
    with caplog.at_level(logging.INFO, logger="dify_airgap"), pytest.raises(Reached):
        _restore(tmp_path, root)
    assert "plugin files in the storage archive agree with the recorded rows (2 plugin(s))" in caplog.text


def test_an_old_snapshot_without_plugin_state_still_restores_and_says_so(tmp_path, caplog):
    root = _snapshot(tmp_path / "snap", [f"plugin/{A}"], None)
    with caplog.at_level(logging.INFO, logger="dify_airgap"), pytest.raises(Reached):
        _restore(tmp_path, root)
    assert "records no plugin state" in caplog.text and "without that check" in caplog.text


def test_restore_refuses_a_plugin_state_of_the_wrong_shape(tmp_path):
    root = _snapshot(tmp_path / "snap", [], {**STATE.to_manifest(), "rows": [A]})
    with pytest.raises(BadInput, match=r"plugin_state: rows must be an object"):
        _restore(tmp_path, root)
