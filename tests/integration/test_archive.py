"""The bundle as one archive (or archive parts): streamed verify/inspect, safe unpacking."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile

import pytest

from scripts.bundle import archive, manifest
from scripts.core.errors import AirgapError

from ..conftest import DAMAGE_KIND, ROOT, damage_file
from .bundles import build, one_image_project

pytestmark = pytest.mark.integration


@pytest.fixture
def archived(docker_engine, tracker, tmp_path):
    """A bundle written with --archive --chunk-size 1M: directory plus NAME.tar.part-NNN."""
    proj = one_image_project(docker_engine, tracker, tmp_path, "dala")
    out = tmp_path / "out"
    bundle = build(docker_engine, proj, out, chunk_size="1M", archive=True)
    parts = sorted(out.glob(f"{bundle.name}.tar.part-*"))
    return docker_engine, proj, out, bundle, parts


def run_task(*args):
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_archive_is_a_plain_tar_of_the_bundle_with_manifest_first(archived, tmp_path):
    _, _, out, bundle, parts = archived
    assert len(parts) >= 2 and all(p.stat().st_size == 1 << 20 for p in parts[:-1])
    res = subprocess.run(["sha256sum", "-c", "--quiet", f"{bundle.name}.tar.SHA256SUMS"], cwd=out,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    whole = tmp_path / "whole.tar"
    with open(whole, "wb") as fh:
        for part in parts:
            fh.write(part.read_bytes())
    names = subprocess.run(["tar", "-tf", str(whole)], capture_output=True, text=True, check=True).stdout.split()
    data = manifest.load_manifest(bundle)
    assert names[:2] == [f"{bundle.name}/manifest.json", f"{bundle.name}/SHA256SUMS"]
    assert sorted(names[2:]) == sorted(f"{bundle.name}/{e['path']}" for e in data["files"])
    assert archive.verify_archive(parts[0]).ok
    res = run_task("verify", str(parts[0]))
    assert res.returncode == 0 and res.stdout.startswith("OK:"), res.stdout + res.stderr
    res = run_task("inspect", str(parts[0]))
    assert res.returncode == 0 and "Dify 1.11.3 bundle" in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_verify_names_the_damaged_archive_part(archived, damage):
    _, _, _, _, parts = archived
    victim = parts[1]
    damage_file(victim, damage)
    report = archive.verify_archive(parts[0])
    assert not report.ok
    assert report.problems[0].path == victim.name
    assert report.problems[0].kind == DAMAGE_KIND[damage]
    if damage == "flip":  # the stream check also names the file inside and the part holding it
        assert any(victim.name in p.detail and p.path != victim.name for p in report.problems)
    res = run_task("verify", str(parts[0]))
    assert res.returncode == 1 and victim.name in res.stdout


def test_materialize_unpacks_checked_and_reuses(archived, tmp_path):
    _, _, _, bundle, parts = archived
    assert archive.materialize(bundle) == bundle  # a directory is returned as is
    dest = tmp_path / "far-side"
    got = archive.materialize(parts[0], dest)
    assert got == dest / bundle.name and manifest.verify(got).ok
    assert (got / "install.sh").stat().st_mode & 0o111
    subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=got, check=True)
    before = (got / "manifest.json").stat().st_mtime_ns
    assert archive.materialize(parts[0], dest) == got
    assert (got / "manifest.json").stat().st_mtime_ns == before, "an identical unpacked bundle is reused"
    assert not list(dest.glob(".*partial"))


def test_rerun_keeps_an_up_to_date_archive(archived, caplog):
    engine, proj, out, bundle, parts = archived
    before = {p.name: p.stat().st_mtime_ns for p in parts}
    caplog.set_level("INFO", logger="dify_airgap")
    build(engine, proj, out, chunk_size="1M", archive=True)
    assert "archive" in caplog.text and "up to date" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in sorted(out.glob(f"{bundle.name}.tar.part-*"))} == before
    build(engine, proj, out, archive=True)  # without chunks now: one .tar, the old parts are gone
    assert (out / f"{bundle.name}.tar").is_file() and not list(out.glob(f"{bundle.name}.tar.part-*"))
    assert archive.verify_archive(out / f"{bundle.name}.tar").ok


def _evil_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def test_unsafe_members_are_refused(archived, tmp_path):
    _, _, _, bundle, _ = archived
    raw = (bundle / "manifest.json").read_bytes()
    head = tarfile.TarInfo(f"{bundle.name}/manifest.json")
    head.size = len(raw)
    for evil in ("../escape", f"{bundle.name}/../../escape", "/etc/evil"):
        info = tarfile.TarInfo(evil)
        info.size = 1
        path = tmp_path / f"evil-{abs(hash(evil))}.tar"
        _evil_tar(path, [(head, raw), (info, b"x")])
        with pytest.raises(AirgapError, match="unsafe path|outside the bundle"):
            archive.materialize(path, tmp_path / "x")
    link = tarfile.TarInfo(f"{bundle.name}/docker/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    path = tmp_path / "link.tar"
    _evil_tar(path, [(head, raw), (link, None)])
    with pytest.raises(AirgapError, match="link or special file"):
        archive.materialize(path, tmp_path / "y")
    assert not (tmp_path / "escape").exists() and not list((tmp_path / "x").glob("*/docker"))


def test_push_dry_run_plans_from_the_archive_and_changes_nothing(archived, tmp_path):
    _, _, out, bundle, parts = archived
    shutil.rmtree(bundle)  # only the archive is left, as on the far side
    res = run_task("push", str(parts[0]), "--registry", "reg.example:5000/dify", "--runtime", "docker",
                   "--output", str(tmp_path / "map"), "--dry-run")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "reg.example:5000/dify/" in res.stdout and "[dry-run] nothing was loaded, pushed or written" in res.stdout
    assert not (tmp_path / "map").exists() and not bundle.exists(), "a dry run unpacks and writes nothing"
