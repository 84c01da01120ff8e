"""scripts.bundle.archive on a tiny bundle made here: safe names, write/verify round trips, parts (no engine)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from scripts.bundle import archive
from scripts.bundle import manifest as mf
from scripts.core.errors import AirgapError
from tests.unit.bundle.bundles import NAME, build_bundle

CHUNK = 1024


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _problems(report: mf.VerifyReport) -> dict[str, str]:
    return {p.path: p.kind for p in report.problems}


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


# --- names ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../x", "a/../../x", "docker/../../etc/passwd", "/etc/passwd", "\\windows",
                                  "C:/x", "c:evil", ""])
def test_safe_relpath_refuses_traversal_and_absolute_paths(name: str):
    with pytest.raises(AirgapError, match="unsafe path"):
        archive.safe_relpath(name)


def test_safe_relpath_keeps_relative_names_and_drops_dots():
    assert archive.safe_relpath("bundle/docker/a.txt") == PurePosixPath("bundle", "docker", "a.txt")
    assert archive.safe_relpath("./bundle/./x") == PurePosixPath("bundle", "x")


def test_archive_name_and_sums_path():
    assert archive.archive_name(NAME) == f"{NAME}.tar"
    assert archive.sums_path(Path("/d") / f"{NAME}.tar") == Path("/d") / f"{NAME}.tar.SHA256SUMS"


def test_is_archive(tmp_path: Path, bundle: Path):
    (tmp_path / "x.tar").write_bytes(b"")
    (tmp_path / "x.tar.part-000").write_bytes(b"")
    (tmp_path / "x.zip").write_bytes(b"")
    (bundle / "inner.tar").write_bytes(b"")
    assert archive.is_archive(tmp_path / "x.tar")
    assert archive.is_archive(tmp_path / "x.tar.part-000")
    assert not archive.is_archive(tmp_path / "x.zip")
    assert not archive.is_archive(bundle)
    assert not archive.is_archive(bundle / "inner.tar")      # a file inside a bundle directory


def test_archive_files_orders_parts_numerically_from_any_part(tmp_path: Path):
    for n in (10, 2, 0, 1):
        (tmp_path / f"b.tar.part-{n:03d}").write_bytes(b"x")
    stem, files = archive.archive_files(tmp_path / "b.tar.part-002")
    assert stem == tmp_path / "b.tar"
    assert [f.name for f in files] == ["b.tar.part-000", "b.tar.part-001", "b.tar.part-002", "b.tar.part-010"]
    (tmp_path / "single.tar").write_bytes(b"x")
    assert archive.archive_files(tmp_path / "single.tar") == (tmp_path / "single.tar", [tmp_path / "single.tar"])
    with pytest.raises(AirgapError, match="does not exist"):
        archive.archive_files(tmp_path / "missing.tar")


def test_chain_reader_reads_across_files_and_names_the_part(tmp_path: Path):
    paths = []
    for i, data in enumerate([b"0123", b"4567", b"89"]):
        paths.append(tmp_path / f"p{i}")
        paths[-1].write_bytes(data)
    reader = archive.ChainReader(paths)
    assert reader.read() + reader.read() + reader.read() + reader.read() == b"0123456789"
    reader.close()
    assert reader.parts_between(0, 4) == ["p0"]
    assert reader.parts_between(3, 5) == ["p0", "p1"]
    assert reader.parts_between(9, 9) == ["p2"]


# --- write + verify, one file ---------------------------------------------------------------------

def test_write_archive_then_verify_round_trip(bundle: Path, out: Path):
    info = archive.write_archive(bundle, out)
    tar_path = out / f"{NAME}.tar"
    assert info["name"] == f"{NAME}.tar" and [p["path"] for p in info["parts"]] == [tar_path.name]
    assert info["size"] == tar_path.stat().st_size
    assert not list(out.glob(".*.partial"))
    sums = (out / f"{NAME}.tar.SHA256SUMS").read_text()
    assert sums == f"{hashlib.sha256(tar_path.read_bytes()).hexdigest()}  {tar_path.name}\n"
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
    manifest = mf.load_manifest(bundle)
    assert names == [f"{NAME}/{rel}" for rel in archive.member_order(bundle, manifest)]
    assert names[:2] == [f"{NAME}/{mf.MANIFEST}", f"{NAME}/{mf.SUMS}"]
    report = archive.verify_archive(tar_path)
    assert report.ok, report.render()
    assert report.checked == 1 + 2 + len(manifest["files"])     # the .tar, manifest, SHA256SUMS, files


def test_read_manifest_reads_the_head_only(bundle: Path, out: Path):
    archive.write_archive(bundle, out)
    data, root, raw = archive.read_manifest(out / f"{NAME}.tar")
    assert root == NAME
    assert raw == (bundle / mf.MANIFEST).read_bytes()
    assert data == mf.load_manifest(bundle)


def test_read_manifest_refuses_a_tar_not_starting_with_the_manifest(tmp_path: Path):
    path = tmp_path / "other.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("x/readme.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(AirgapError, match="does not start with"):
        archive.read_manifest(path)


def test_verify_archive_names_a_changed_member(bundle: Path, out: Path):
    archive.write_archive(bundle, out)
    tar_path = out / f"{NAME}.tar"
    data = tar_path.read_bytes()
    # flip a byte inside install.sh's data ("echo install")
    at = data.index(b"echo install")
    _flip_byte(tar_path, at)
    report = archive.verify_archive(tar_path)
    kinds = _problems(report)
    assert kinds["install.sh"] == "corrupted"
    assert kinds[tar_path.name] == "corrupted"          # the .tar no longer matches its SHA256SUMS
    assert archive.verify_archive(tar_path, deep=False).ok   # shallow: sizes only


def test_verify_archive_refuses_unsafe_member_names(tmp_path: Path, bundle: Path):
    path = tmp_path / "evil.tar"
    raw = (bundle / mf.MANIFEST).read_bytes()  # a well-formed manifest: the member after it is the problem
    with tarfile.open(path, "w") as tar:
        for name, data in ((f"{NAME}/{mf.MANIFEST}", raw), ("../escape.txt", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(AirgapError, match="unsafe path"):
        archive.verify_archive(path)


# --- parts ----------------------------------------------------------------------------------------

def test_write_archive_in_parts(bundle: Path, out: Path):
    info = archive.write_archive(bundle, out, chunk_size=CHUNK)
    names = [p["path"] for p in info["parts"]]
    assert len(names) >= 3
    assert names == [f"{NAME}.tar.part-{i:03d}" for i in range(len(names))]
    assert all((out / n).stat().st_size == CHUNK for n in names[:-1])
    assert 0 < (out / names[-1]).stat().st_size <= CHUNK
    assert not (out / f"{NAME}.tar").exists()
    listed = (out / f"{NAME}.tar.SHA256SUMS").read_text().splitlines()
    assert [line.split("  ", 1)[1] for line in listed] == names
    whole = b"".join((out / n).read_bytes() for n in names)
    assert len(whole) == info["size"]
    report = archive.verify_archive(out / names[1])            # any part names the whole archive
    assert report.ok, report.render()
    assert report.bundle == str(out / f"{NAME}.tar")


def test_verify_names_a_damaged_part(bundle: Path, out: Path):
    names = [p["path"] for p in archive.write_archive(bundle, out, chunk_size=CHUNK)["parts"]]
    whole = b"".join((out / n).read_bytes() for n in names)
    at = whole.index(b"\x28\xb5\x2f\xfd") + 600           # inside images.tar.zst's data
    damaged = names[at // CHUNK]
    assert damaged != names[0]
    _flip_byte(out / damaged, at % CHUNK)
    report = archive.verify_archive(out / names[0])
    kinds = _problems(report)
    assert kinds.get(damaged) == "corrupted"
    assert kinds.get("images.tar.zst") == "corrupted"
    assert damaged in next(p.detail for p in report.problems if p.path == "images.tar.zst")
    assert names[0] not in kinds


def test_verify_names_a_missing_and_a_truncated_part(tmp_path: Path, out: Path):
    bundle = build_bundle(tmp_path / "src", chunk_size=CHUNK)
    names = [p["path"] for p in archive.write_archive(bundle, out, chunk_size=CHUNK)["parts"]]
    (out / names[1]).unlink()
    assert _problems(archive.verify_archive(out / names[0])).get(names[1]) == "missing"
    archive.write_archive(bundle, out, chunk_size=CHUNK)
    cut = names[-2]                     # past the manifest: its chunk_size says how long parts must be
    assert len(names) >= 4
    (out / cut).write_bytes((out / cut).read_bytes()[:100])
    report = archive.verify_archive(out / names[0])
    assert _problems(report).get(cut) == "truncated"
    assert any("100 bytes, expected 1024" in p.detail for p in report.problems)


def test_a_new_archive_replaces_the_old_one(bundle: Path, out: Path):
    archive.write_archive(bundle, out, chunk_size=CHUNK)
    archive.write_archive(bundle, out)
    assert not list(out.glob(f"{NAME}.tar.part-*"))
    assert archive.verify_archive(out / f"{NAME}.tar").ok


def test_archive_up_to_date_and_ensure_archive(bundle: Path, out: Path):
    assert not archive.archive_up_to_date(bundle, out, None)
    first = archive.ensure_archive(bundle, out, CHUNK)
    assert first == out / f"{NAME}.tar.part-000" and first.is_file()
    assert archive.archive_up_to_date(bundle, out, CHUNK)
    assert not archive.archive_up_to_date(bundle, out, None)          # one file wanted, parts there
    assert not archive.archive_up_to_date(bundle, out, CHUNK * 2)     # other chunk size
    mtime = first.stat().st_mtime_ns
    assert archive.ensure_archive(bundle, out, CHUNK) == first
    assert first.stat().st_mtime_ns == mtime                          # not rewritten
    (bundle / mf.MANIFEST).write_text((bundle / mf.MANIFEST).read_text() + "\n")
    assert not archive.archive_up_to_date(bundle, out, CHUNK)         # another manifest


# --- archive.verify and materialize: both forms -----------------------------------------------------

def test_verify_dispatches_on_directory_and_archive(bundle: Path, out: Path):
    archive.write_archive(bundle, out)
    tar_path = out / f"{NAME}.tar"
    as_dir = archive.verify(bundle)
    as_tar = archive.verify(tar_path)
    assert as_dir.ok and as_tar.ok
    assert as_dir.bundle == str(bundle)
    assert as_tar.bundle == str(tar_path)
    assert as_tar.checked == as_dir.checked + 3          # + the .tar, manifest.json, SHA256SUMS
    (bundle / "docker" / ".env.example").unlink()
    assert _problems(archive.verify(bundle)) == {"docker/.env.example": "missing"}
    assert archive.verify(tar_path).ok                   # the archive is unaffected


def test_materialize_unpacks_an_archive_and_passes_a_directory_through(bundle: Path, out: Path, tmp_path: Path):
    assert archive.materialize(bundle) == bundle
    archive.write_archive(bundle, out, chunk_size=CHUNK)
    dest = tmp_path / "unpacked"
    dest.mkdir()
    final = archive.materialize(out / f"{NAME}.tar.part-000", dest)
    assert final == dest / NAME
    for path in mf.walk_files(bundle, skip=()):
        rel = path.relative_to(bundle)
        assert (final / rel).read_bytes() == path.read_bytes(), rel
    assert (final / "install.sh").stat().st_mode & 0o111
    assert mf.verify(final).ok
    assert not list(dest.glob(".*.partial"))


def test_materialize_refuses_a_damaged_archive(bundle: Path, out: Path, tmp_path: Path):
    archive.write_archive(bundle, out)
    tar_path = out / f"{NAME}.tar"
    _flip_byte(tar_path, tar_path.read_bytes().index(b"echo install"))
    with pytest.raises(AirgapError, match="install.sh"):
        archive.materialize(tar_path, tmp_path / "dest")
    assert not (tmp_path / "dest" / NAME).exists()
