"""scripts.bundle.manifest on a tiny bundle directory made here: sums, walking, verify (no engine, no network)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from scripts.bundle import manifest as mf
from scripts.core.errors import AirgapError
from tests.unit.bundle.bundles import NAME, build_bundle, write_manifest


def _flip_byte(path: Path, offset: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _problems(report: mf.VerifyReport) -> dict[str, str]:
    return {p.path: p.kind for p in report.problems}


# --- walk_files / file_entry / write_sums ------------------------------------------------------------

def test_walk_files_sorted_and_skips_manifest_sums_and_symlinks(bundle: Path):
    (bundle / "docker" / "link.yaml").symlink_to(bundle / "docker" / "docker-compose.yaml")
    rels = [p.relative_to(bundle).as_posix() for p in mf.walk_files(bundle)]
    assert rels == ["images.tar.zst", "install.sh", "docker/.env.example", "docker/docker-compose.yaml"]
    assert mf.MANIFEST not in rels and mf.SUMS not in rels and "docker/link.yaml" not in rels


def test_walk_files_custom_skip(bundle: Path):
    rels = [p.relative_to(bundle).as_posix() for p in mf.walk_files(bundle, skip=("install.sh",))]
    assert "install.sh" not in rels
    assert mf.MANIFEST in rels and mf.SUMS in rels


def test_file_entry_has_relative_path_size_and_sha256(bundle: Path):
    path = bundle / "docker" / ".env.example"
    entry = mf.file_entry(bundle, path)
    assert entry == {"path": "docker/.env.example", "size": len(path.read_bytes()),
                     "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def test_write_sums_is_sha256sum_format_with_the_manifest_last(bundle: Path):
    manifest = json.loads((bundle / mf.MANIFEST).read_text())
    text = (bundle / mf.SUMS).read_text()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == len(manifest["files"]) + 1
    for line in lines:
        digest, rel = line.split("  ", 1)
        assert digest == hashlib.sha256((bundle / rel).read_bytes()).hexdigest(), rel
    assert lines[-1].split("  ", 1)[1] == mf.MANIFEST
    assert [line.split("  ", 1)[1] for line in lines[:-1]] == [e["path"] for e in manifest["files"]]


# --- find_bundle_dir / load_manifest ------------------------------------------------------------------

def test_find_bundle_dir_from_the_directory_a_file_or_a_file_one_level_down(bundle: Path):
    assert mf.find_bundle_dir(bundle) == bundle
    assert mf.find_bundle_dir(bundle / mf.MANIFEST) == bundle
    assert mf.find_bundle_dir(bundle / "docker" / "docker-compose.yaml") == bundle


def test_find_bundle_dir_refuses_missing_path_and_non_bundle(tmp_path: Path):
    with pytest.raises(AirgapError, match="does not exist"):
        mf.find_bundle_dir(tmp_path / "nope")
    with pytest.raises(AirgapError, match="not a dify-airgap bundle"):
        mf.find_bundle_dir(tmp_path)


def test_load_manifest_refuses_bad_json_and_other_format_versions(bundle: Path):
    assert mf.load_manifest(bundle)["format_version"] == mf.FORMAT_VERSION
    (bundle / mf.MANIFEST).write_text("{not json")
    with pytest.raises(AirgapError, match="not valid JSON"):
        mf.load_manifest(bundle)
    (bundle / mf.MANIFEST).write_text(json.dumps({"format_version": 99, "toolkit_version": "9.9"}))
    with pytest.raises(AirgapError, match="format version 99 .*9.9"):
        mf.load_manifest(bundle)


# --- verify -------------------------------------------------------------------------------------------

def test_verify_fresh_bundle_is_ok(bundle: Path):
    report = mf.verify(bundle)
    assert report.ok, report.render()
    assert report.checked == 4
    assert report.render().startswith("OK: 4 files")


def test_verify_changed_byte_names_the_file(bundle: Path):
    _flip_byte(bundle / "images.tar.zst")
    report = mf.verify(bundle)
    assert not report.ok
    assert _problems(report) == {"images.tar.zst": "corrupted"}
    assert "images.tar.zst" in report.render() and report.render().startswith("FAILED: 1 problem")


def test_verify_shallow_does_not_hash(bundle: Path):
    _flip_byte(bundle / "images.tar.zst")
    assert mf.verify(bundle, deep=False).ok


def test_verify_missing_file_is_named(bundle: Path):
    (bundle / "docker" / ".env.example").unlink()
    assert _problems(mf.verify(bundle)) == {"docker/.env.example": "missing"}


def test_verify_size_changes_are_truncated_or_corrupted(bundle: Path):
    compose = bundle / "docker" / "docker-compose.yaml"
    compose.write_bytes(compose.read_bytes()[:5])
    install = bundle / "install.sh"
    install.write_bytes(install.read_bytes() + b"extra\n")
    report = mf.verify(bundle)
    assert _problems(report) == {"docker/docker-compose.yaml": "truncated", "install.sh": "corrupted"}
    assert any("5 bytes, expected" in p.detail for p in report.problems)


def test_verify_stray_image_part_and_any_other_unlisted_file_are_unexpected(bundle: Path):
    (bundle / "images.tar.zst.part-001").write_bytes(b"stray")
    (bundle / "notes.txt").write_bytes(b"not listed either")
    report = mf.verify(bundle)
    assert _problems(report) == {"images.tar.zst.part-001": "unexpected", "notes.txt": "unexpected"}
    assert {p.path: p.detail for p in report.problems}["images.tar.zst.part-001"].startswith("image part")


# --- strict: nothing the manifest does not list -----------------------------------------------------------

def test_verify_names_a_planted_compose_override(bundle: Path):
    (bundle / "docker" / "docker-compose.override.yaml").write_text("services:\n  api:\n    privileged: true\n")
    report = mf.verify(bundle, deep=False)
    assert _problems(report) == {"docker/docker-compose.override.yaml": "unexpected"}
    assert "docker/docker-compose.override.yaml" in report.render()
    assert "not listed in manifest.json" in report.render()


def test_verify_names_a_symlink_even_one_standing_for_a_listed_file(bundle: Path, tmp_path: Path):
    (bundle / "docker" / "passwd").symlink_to("/etc/passwd")
    same = tmp_path / "same.sh"
    same.write_bytes((bundle / "install.sh").read_bytes())  # identical content, but a link is not a file
    (bundle / "install.sh").unlink()
    (bundle / "install.sh").symlink_to(same)
    report = mf.verify(bundle)
    assert _problems(report) == {"docker/passwd": "unexpected", "install.sh": "unexpected"}
    assert "symlink to /etc/passwd" in report.render()


def test_verify_names_an_unlisted_directory_once_and_a_symlinked_one(bundle: Path, tmp_path: Path):
    (bundle / "docker" / "extra" / "deep").mkdir(parents=True)
    (bundle / "docker" / "extra" / "deep" / "a.yaml").write_text("a")
    (bundle / "docker" / "extra" / "b.yaml").write_text("b")
    (bundle / "empty").mkdir()
    (bundle / "etc").symlink_to("/etc", target_is_directory=True)
    assert _problems(mf.verify(bundle)) == {"docker/extra/": "unexpected", "empty/": "unexpected",
                                             "etc": "unexpected"}


def test_verify_names_a_fifo(bundle: Path):
    os.mkfifo(bundle / "docker" / "pipe")
    report = mf.verify(bundle)
    assert _problems(report) == {"docker/pipe": "unexpected"}
    assert "FIFO" in report.render()


def test_verify_expects_its_own_files_and_ignores_the_install_venv(bundle: Path):
    (bundle / mf.SIGNATURE).write_bytes(b"\0" * 256)
    (bundle / ".venv" / "bin").mkdir(parents=True)
    (bundle / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (bundle / ".venv" / "bin" / "python").write_text("")
    report = mf.verify(bundle)
    assert report.ok, report.render()
    assert report.ignored and report.ignored[0].startswith(".venv/")
    assert "ignored: .venv/" in report.render()
    (bundle / ".venv" / "pyvenv.cfg").unlink()  # not a venv: just an unlisted directory
    assert _problems(mf.verify(bundle)) == {".venv/": "unexpected"}


def test_verify_own_and_allowed_names_count_at_the_top_only(bundle: Path):
    (bundle / "COMPLETE").write_text("complete\n")
    (bundle / "docker" / "COMPLETE").write_text("complete\n")
    (bundle / "docker" / mf.SIGNATURE).write_bytes(b"x")
    assert _problems(mf.verify(bundle, allowed=("COMPLETE",))) == {"docker/COMPLETE": "unexpected",
                                                                    f"docker/{mf.SIGNATURE}": "unexpected"}
    assert "COMPLETE" in _problems(mf.verify(bundle))


def test_verify_reports_the_manifest_digest(bundle: Path):
    report = mf.verify(bundle)
    raw = (bundle / mf.MANIFEST).read_bytes()
    assert report.digest == mf.manifest_digest(raw) == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert f"digest: {report.digest}" in report.render() and report.to_dict()["digest"] == report.digest
    assert not report.signed and "signed: no" in report.render()


def test_verify_manifest_inconsistencies(tmp_path: Path):
    root = build_bundle(tmp_path)
    manifest = json.loads((root / mf.MANIFEST).read_text())
    manifest["image_archive"]["parts"].append({"path": "images.tar.zst.part-009", "size": 1, "sha256": "0" * 64})
    manifest["images"].append(dict(manifest["images"][0]))
    write_manifest(root, manifest)
    report = mf.verify(root)
    kinds = [(p.path, p.kind) for p in report.problems]
    assert ("images.tar.zst.part-009", "inconsistent") in kinds
    details = " | ".join(p.detail for p in report.problems if p.path == mf.MANIFEST)
    assert "do not add up" in details
    assert "listed twice" in details


def test_verify_accepts_a_path_inside_the_bundle(bundle: Path):
    report = mf.verify(bundle / "install.sh")
    assert report.ok and report.bundle == str(bundle)


# --- inspect_text / PartsReader -----------------------------------------------------------------------

def test_inspect_text_from_the_manifest_alone(bundle: Path):
    text = mf.inspect_text(mf.load_manifest(bundle))
    assert "Dify 0.0.0 bundle for linux/amd64" in text
    assert "langgenius/dify-api:0.0.0" in text
    assert "1 part(s)" in text
    assert text.rstrip().endswith("files: 4")


def test_parts_reader_reads_the_parts_as_one_stream(tmp_path: Path):
    root = build_bundle(tmp_path, files={"images.tar.zst.part-000": b"abc", "images.tar.zst.part-001": b"",
                                         "images.tar.zst.part-002": b"defg"},
                       parts=("images.tar.zst.part-000", "images.tar.zst.part-001", "images.tar.zst.part-002"))
    parts = mf.load_manifest(root)["image_archive"]["parts"]
    assert [p["path"] for p in parts] == ["images.tar.zst.part-000", "images.tar.zst.part-001",
                                          "images.tar.zst.part-002"]
    reader = mf.PartsReader(root, parts)
    chunks = []
    while block := reader.read(2):
        chunks.append(block)
    reader.close()
    assert b"".join(chunks) == b"abcdefg"
    assert mf.verify(root).ok
    assert root.name == NAME
