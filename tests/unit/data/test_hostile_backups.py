"""Hostile backups and snapshots: crafted manifests (paths, targets) and tar members, refused by name
before anything is written, with a sentinel outside the install root checked byte for byte.

No engine: the backups have no database dump, so `restore` only verifies, checks and extracts (GNU tar,
as root where the test runs as root).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from scripts.bundle.manifest import write_sums
from scripts.core.errors import AirgapError
from scripts.data import backup, datadir, snapshot, stackdata
from scripts.engine.client import Engine
from tests.support import hostile
from tests.support.hostile import tar_dir, tar_file, tar_link, tar_sparse, tar_special

AS_ROOT = os.geteuid() == 0


def _tar_zst(members, declared: int | None = None) -> tuple[bytes, int]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.uid = info.gid = os.geteuid()
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    data = raw.getvalue()
    return zstandard.ZstdCompressor().compress(data), declared if declared is not None else len(data)


def _backup(root: Path, archives: list[tuple[str, str, list]], declared: dict[str, int] | None = None) -> Path:
    """A complete (verifying) backup directory: ``archives`` are (file name, target, tar members)."""
    root.mkdir(parents=True)
    entries = []
    for name, target, members in archives:
        blob, size = _tar_zst(members, (declared or {}).get(name))
        (root / name).write_bytes(blob)
        part = {"path": name, "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
        entries.append({**part, "compression": "zstd", "uncompressed_size": size, "parts": [part],
                        "target": target, "role": "data"})
    datadir.write_manifest(root, {"kind": backup.KIND, "databases": [], "archives": entries}, entries)
    (root / datadir.COMPLETE).write_text("complete\n")
    return root


def _install(tmp_path: Path) -> tuple[stackdata.Stack, Path, dict]:
    """A fresh install root (tmp/opt) and a sentinel beside it."""
    guard, before = hostile.sentinel(tmp_path)
    return stackdata.resolve(prefix=str(tmp_path / "opt"), new=True), guard, before


def _restore(root: Path, stack: stackdata.Stack):
    return backup.restore(Engine("docker"), root, stack, start=False)


# --- manifest paths and targets --------------------------------------------------------------------

@pytest.mark.parametrize("target", ["volumes/../../../sentinel", "/tmp/x", "../../sentinel", "volumes/a/b",
                                    "volumes/..", "volumes/"])
def test_restore_targets_outside_the_project_are_refused(tmp_path: Path, target: str):
    stack, guard, before = _install(tmp_path)
    root = _backup(tmp_path / "bk", [("volumes-x.tar.zst", target, [tar_file("./secret", b"PWNED\n")])])
    with pytest.raises(AirgapError, match=rf"archive 'volumes-x\.tar\.zst'.*restore target '{target}' is not"):
        _restore(root, stack)
    assert hostile.state(guard) == before and not (tmp_path / "opt").exists()


def test_restore_target_through_a_link_is_refused(tmp_path: Path):
    stack, guard, before = _install(tmp_path)
    (stack.project_dir / "volumes").mkdir(parents=True)
    (stack.project_dir / "volumes" / "app").symlink_to(guard)
    root = _backup(tmp_path / "bk", [("volumes-app.tar.zst", "volumes/app", [tar_file("./secret", b"PWNED\n")])])
    with pytest.raises(AirgapError, match=r"restore target 'volumes/app' resolves to .*sentinel, outside"):
        _restore(root, stack)
    assert hostile.state(guard) == before


def test_manifest_paths_outside_the_backup_are_refused_unread(tmp_path: Path):
    """An absolute listed path with the right sha256 verified before: the host file was then 'the archive'."""
    guard, before = hostile.sentinel(tmp_path)
    root = _backup(tmp_path / "bk", [])
    data = json.loads((root / "manifest.json").read_text())
    secret = guard / "secret"
    data["files"] = [{"path": str(secret), "size": secret.stat().st_size,
                      "sha256": hashlib.sha256(secret.read_bytes()).hexdigest()}]
    (root / "manifest.json").write_text(json.dumps(data))
    write_sums(root, data["files"])
    with pytest.raises(AirgapError, match=rf"manifest lists '{secret}', not a plain file name"):
        datadir.verify_dir(root, backup.KIND)
    assert hostile.state(guard) == before


def test_a_listed_file_that_is_a_link_is_refused(tmp_path: Path):
    guard, before = hostile.sentinel(tmp_path)
    root = _backup(tmp_path / "bk", [("volumes-app.tar.zst", "volumes/app", [tar_file("./a", b"a")])])
    blob = root / "volumes-app.tar.zst"
    real = guard.parent / "elsewhere.zst"
    blob.rename(real)
    blob.symlink_to(real)
    with pytest.raises(AirgapError, match=r"'volumes-app\.tar\.zst' is a link or special file"):
        datadir.verify_dir(root, backup.KIND)
    assert hostile.state(guard) == before


# --- tar members -------------------------------------------------------------------------------------

@pytest.mark.parametrize("members, match", [
    ([tar_special("./sda", tarfile.BLKTYPE)], r"member '\./sda' is a device, FIFO"),
    ([tar_special("./tty", tarfile.CHRTYPE)], r"member '\./tty' is a device, FIFO"),
    ([tar_special("./fifo", tarfile.FIFOTYPE)], r"member '\./fifo' is a device, FIFO"),
    ([tar_file("./su", b"#!/bin/sh\n", 0o4755)], r"member '\./su' has the setuid/setgid bit \(mode 4755\)"),
    ([tar_file("./sg", b"#!/bin/sh\n", 0o2755)], r"member '\./sg' has the setuid/setgid bit \(mode 2755\)"),
    ([tar_sparse("./huge", 1 << 40)], r"member '\./huge' is a sparse file"),
    ([tar_file("../sentinel/secret", b"PWNED")], r"unsafe path '\.\./sentinel/secret'"),
    ([tar_link("./storage", "/")], r"member 'storage' is a link to '/', outside the restored tree"),
    ([tar_link("./storage", "../../../sentinel")],
     r"member 'storage' is a link to '\.\./\.\./\.\./sentinel', which leads out"),
    ([tar_dir("./d"), tar_dir("./d/e"), tar_link("./d/e/l", "../.."), tar_link("./d/e/m", "l/../..")],
     r"member 'd/e/m' is a link to 'l/\.\./\.\.', which leads out"),
    ([tar_link("./up", ".."), tar_file("./up/sentinel/secret", b"PWNED")],
     r"member '\./up/sentinel/secret' is below the link 'up'"),
    ([tar_link("./h", "sentinel/secret", tarfile.LNKTYPE)],
     r"member '\./h' is a hard link to 'sentinel/secret', which is not an earlier regular file"),
])
def test_dangerous_members_are_refused_before_tar_runs(tmp_path: Path, members, match):
    stack, guard, before = _install(tmp_path)
    root = _backup(tmp_path / "bk", [("volumes-app.tar.zst", "volumes/app", members)])
    with pytest.raises(AirgapError, match=r"volumes-app\.tar\.zst: " + match):
        _restore(root, stack)
    assert hostile.state(guard) == before
    assert not (tmp_path / "opt").exists(), "nothing written, not even the staging directory"


def test_a_decompression_bomb_is_cut_at_the_declared_size(tmp_path: Path):
    stack, guard, before = _install(tmp_path)
    root = _backup(tmp_path / "bk", [("volumes-app.tar.zst", "volumes/app", [tar_file("./zeros", b"\0" * 200_000)])],
                   declared={"volumes-app.tar.zst": 10_000})
    with pytest.raises(AirgapError, match=r"volumes-app\.tar\.zst decompresses to more than the 10000 bytes"):
        _restore(root, stack)
    assert hostile.state(guard) == before and not (tmp_path / "opt").exists()


def test_config_written_through_a_link_of_the_host_is_refused_and_no_volume_changed(tmp_path: Path):
    """Every archive is checked before the first is extracted: a bad project archive leaves the volumes alone."""
    stack, guard, before = _install(tmp_path)
    project = stack.project_dir
    (project / "volumes" / "app").mkdir(parents=True)
    (project / "volumes" / "app" / "old").write_text("kept\n")
    (project / "nginx").symlink_to(guard)
    installed = hostile.state(tmp_path / "opt")
    root = _backup(tmp_path / "bk", [("volumes-app.tar.zst", "volumes/app", [tar_file("./new", b"new\n")]),
                                     ("project.tar.zst", ".", [tar_file("./nginx/etc/passwd", b"PWNED\n")])])
    with pytest.raises(AirgapError, match=r"project\.tar\.zst: member '\./nginx/etc/passwd' would be written through "
                                          r".*/nginx, a link on this host"):
        backup.restore(Engine("docker"), root, stack, start=False, force=True)
    assert hostile.state(guard) == before
    assert hostile.state(tmp_path / "opt") == installed


@pytest.mark.skipif(not AS_ROOT, reason="GNU tar --same-owner needs root")
def test_a_clean_backup_with_venv_links_restores(tmp_path: Path):
    stack, guard, before = _install(tmp_path)
    members = [tar_dir("."), tar_dir("./cwd"), tar_dir("./cwd/.venv"), tar_dir("./cwd/.venv/bin"),
               tar_link("./cwd/.venv/bin/python", "/usr/local/bin/python3.12"),
               tar_link("./cwd/.venv/bin/python3", "python"), tar_file("./cwd/.venv/pyvenv.cfg", b"home = /x\n")]
    root = _backup(tmp_path / "bk", [("volumes-plugin_daemon.tar.zst", "volumes/plugin_daemon", members),
                                     ("project.tar.zst", ".", [tar_file("./.env", b"SECRET_KEY=x\n", 0o600)])])
    result = _restore(root, stack)
    volume = stack.project_dir / "volumes" / "plugin_daemon"
    assert result["restored"] == [str(volume), str(stack.project_dir)]
    assert os.readlink(volume / "cwd" / ".venv" / "bin" / "python") == "/usr/local/bin/python3.12"
    assert stat.S_IMODE((stack.project_dir / ".env").stat().st_mode) == 0o600
    assert hostile.state(guard) == before


# --- restore-daemon: the same member checks before the image is loaded or the daemon stopped -------------

def _engine_must_not_run(argv, **kwargs):
    raise AssertionError(f"restore-daemon ran {argv} before refusing a hostile snapshot")


def _snapshot(root: Path, members: list) -> Path:
    """A complete (verifying) daemon snapshot whose storage archive holds ``members``."""
    root.mkdir(parents=True)
    entries = {}
    for key, name, raw in [("image_archive", snapshot.IMAGE_ARCHIVE, None),
                           ("volume", snapshot.VOLUME_ARCHIVE, members), ("database", "dify_plugin.sql.zst", None)]:
        blob, size = _tar_zst(raw) if raw is not None else (zstandard.ZstdCompressor().compress(b"x"), 1)
        (root / name).write_bytes(blob)
        part = {"path": name, "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
        entries[key] = {**part, "compression": "zstd", "uncompressed_size": size, "parts": [part]}
    entries["volume"]["target"] = snapshot.VOLUME
    entries["database"].update(name="dify_plugin", type="postgresql")
    datadir.write_manifest(root, {"kind": snapshot.KIND, "images": [{"ref": f"{snapshot.REPO}:t"}], **entries},
                           list(entries.values()))
    (root / datadir.COMPLETE).write_text("complete\n")
    return root


@pytest.mark.parametrize("members, match", [
    ([tar_link("./plugin", "/")], r"member 'plugin' is a link to '/', outside the restored tree"),
    ([tar_file("../../sentinel/secret", b"PWNED")], r"unsafe path '\.\./\.\./sentinel/secret'"),
    ([tar_file("./cwd/su", b"#!/bin/sh\n", 0o4755)], r"member '\./cwd/su' has the setuid/setgid bit"),
    ([tar_link("./up", ".."), tar_file("./up/x", b"PWNED")], r"member '\./up/x' is below the link 'up'"),
])
def test_restore_daemon_refuses_hostile_storage_before_loading_or_stopping_anything(tmp_path: Path, members, match):
    stack, guard, before = _install(tmp_path)
    root = _snapshot(tmp_path / "snap", members)
    with pytest.raises(AirgapError, match=r"plugin_daemon\.tar\.zst: " + match):
        snapshot.restore_daemon(Engine("docker", runner=_engine_must_not_run), root, stack)
    assert hostile.state(guard) == before
    assert not (tmp_path / "opt").exists(), "nothing written, not even the staging directory"


# --- what a backup or snapshot writes ---------------------------------------------------------------

def test_dumps_and_manifests_are_written_0600_in_a_0700_directory(tmp_path: Path):
    with datadir.staging(tmp_path, "bk") as stage:
        dump = datadir.compress_command(["printf", "CREATE TABLE secrets;"], stage, "db-dify.sql.zst")
        datadir.write_manifest(stage, {"kind": backup.KIND, "databases": [dump], "archives": []}, [dump])
    final = tmp_path / "bk"
    assert stat.S_IMODE(final.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in final.iterdir()}
    assert modes == {"db-dify.sql.zst": 0o600, "manifest.json": 0o600, "SHA256SUMS": 0o600, "COMPLETE": 0o600}
