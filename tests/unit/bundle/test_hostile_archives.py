"""Hostile inputs of the bundle package: the `--source` release tarball and the bundle archive.

Each test builds the hostile archive here, runs the extractor, and asserts BOTH the refusal naming the
member or path AND that a sentinel tree outside the target is exactly as before (docs/hostile-inputs.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from scripts.bundle import archive, source
from scripts.bundle import manifest as mf
from scripts.core.errors import AirgapError
from tests.support import hostile
from tests.support.hostile import tar_dir, tar_file, tar_link, tar_sparse, write_tar
from tests.unit.bundle.bundles import NAME

TOP = "dify-1.11.3/docker/"
COMPOSE = tar_file(TOP + "docker-compose.yaml", b"services: {}\n")


def _extract(tmp_path: Path, members) -> tuple[Path, Path, dict]:
    """(tarball, work dir, sentinel state); the sentinel sits beside the extraction target."""
    work = tmp_path / "work"
    work.mkdir()
    guard, before = hostile.sentinel(work)
    tarball = write_tar(tmp_path / "evil.tar.gz", [COMPOSE, *members], "w:gz")
    return tarball, work, before


def _refused(tarball: Path, work: Path, match: str) -> None:
    with pytest.raises(AirgapError, match=match):
        source.extract_docker_dir(tarball, work / "tree")
    assert not (work / "tree" / "docker").exists(), "a refused tarball leaves nothing behind"


# --- the --source release tarball ------------------------------------------------------------------

def test_source_link_chain_that_looks_harmless_link_by_link_is_refused(tmp_path: Path):
    """l -> ../../.. is docker/ itself; m -> l/../.. is lexically a/b but physically two levels ABOVE docker/."""
    tarball, work, before = _extract(tmp_path, [
        tar_link(TOP + "a/b/c/l", "../../.."),
        tar_link(TOP + "a/b/c/m", "l/../.."),
        tar_file(TOP + "a/b/c/m/sentinel/secret", b"PWNED\n"),
    ])
    _refused(tarball, work, r"'dify-1.11.3/docker/a/b/c/m' is a link to 'l/\.\./\.\.', which points outside")
    assert hostile.state(work / "sentinel") == before
    assert sorted(p.name for p in work.iterdir()) == ["sentinel", "tree"]


def test_source_member_written_through_a_link_to_an_inner_dir_is_refused(tmp_path: Path):
    tarball, work, before = _extract(tmp_path, [
        tar_dir(TOP + "nginx"),
        tar_link(TOP + "conf", "nginx"),
        tar_file(TOP + "conf/evil.conf", b"PWNED\n"),
    ])
    _refused(tarball, work, r"'dify-1.11.3/docker/conf/evil.conf' goes through the link 'conf'")
    assert hostile.state(work / "sentinel") == before


def _outward_chain() -> list:
    """a -> b/c/../.. (docker/ while b is missing), then sub/c -> .. and b -> sub turn ``a`` into docker/../.."""
    return [tar_link(TOP + "a", "b/c/../.."), tar_dir(TOP + "sub"), tar_link(TOP + "sub/c", ".."),
            tar_link(TOP + "b", "sub")]


def test_source_link_turned_outward_by_a_later_link_is_refused(tmp_path: Path):
    """a -> b/c/../.. is docker/ when made (b missing); then sub/c -> .. and b -> sub make it docker/../.."""
    tarball, work, before = _extract(tmp_path, _outward_chain())
    _refused(tarball, work, r"member 'a' is a link that now points outside")
    assert hostile.state(work / "sentinel") == before


def test_source_hard_link_never_copies_a_host_file_into_the_tree(tmp_path: Path):
    """The chain of the test above makes ``a`` the work dir; a hard link through it would copy the secret."""
    tarball, work, before = _extract(tmp_path, [*_outward_chain(),
                                                tar_link(TOP + "h", TOP + "a/sentinel/secret", tarfile.LNKTYPE)])
    _refused(tarball, work, r"'dify-1.11.3/docker/h' links to 'a/sentinel/secret', which is below the link 'a'")
    assert hostile.state(work / "sentinel") == before


def test_source_hard_link_through_an_inner_link_is_refused(tmp_path: Path):
    tarball, work, before = _extract(tmp_path, [
        tar_file(TOP + "sub/f", b"inside\n"),
        tar_link(TOP + "up", "sub"),
        tar_link(TOP + "h", TOP + "up/f", tarfile.LNKTYPE),
    ])
    _refused(tarball, work, r"'dify-1.11.3/docker/h' links to 'up/f', which is below the link 'up'")
    assert hostile.state(work / "sentinel") == before


def test_source_file_after_a_link_of_the_same_name_is_not_written_through_it(tmp_path: Path):
    tarball, work, before = _extract(tmp_path, [
        tar_file(TOP + "target.txt", b"inside\n"),
        tar_link(TOP + "env", "target.txt"),
        tar_file(TOP + "env", b"PWNED\n"),
    ])
    _refused(tarball, work, r"'dify-1.11.3/docker/env' already exists")
    assert hostile.state(work / "sentinel") == before


@pytest.mark.parametrize("member, match", [
    (tar_sparse(TOP + "huge.bin", 1 << 40), r"'dify-1.11.3/docker/huge.bin' declares 1099511627776 bytes \(sparse\)"),
    (tar_file(TOP + "big.bin", b"x" * 4096), r"'dify-1.11.3/docker/big.bin' declares 4096 bytes"),
])
def test_source_sparse_or_oversized_members_are_refused_unread(tmp_path: Path, monkeypatch, member, match):
    monkeypatch.setattr(source, "MAX_MEMBER_SIZE", 1024)
    tarball, work, before = _extract(tmp_path, [member])
    _refused(tarball, work, match)
    assert hostile.state(work / "sentinel") == before


def test_source_links_inside_the_tree_still_work(tmp_path: Path):
    tarball, work, before = _extract(tmp_path, [
        tar_file(TOP + "nginx/a.conf", b"conf\n"),
        tar_link(TOP + "b.conf", "nginx/a.conf"),
        tar_link(TOP + "c.conf", TOP + "nginx/a.conf", tarfile.LNKTYPE),
    ])
    docker = source.extract_docker_dir(tarball, work / "tree")
    assert (docker / "b.conf").is_symlink() and (docker / "b.conf").read_text() == "conf\n"
    assert not (docker / "c.conf").is_symlink() and (docker / "c.conf").read_text() == "conf\n"
    assert hostile.state(work / "sentinel") == before


# --- the bundle archive ----------------------------------------------------------------------------

def _bundle_archive(path: Path, files: dict[str, bytes], members) -> Path:
    """An archive whose manifest lists ``files`` but whose members are ``members`` (after the manifest)."""
    files = {**files, "images.tar.zst": b"z"}  # a bundle has an image part (listed, never in ``members``)
    entries = [{"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
               for rel, data in files.items()]
    manifest = {"format_version": mf.FORMAT_VERSION, "toolkit_version": "0.0.0-test", "dify_version": "0.0.0",
                "platform": "linux/amd64", "created": "2026-01-01T00:00:00+00:00", "runtime": "docker",
                "profiles": [], "vector_stores": [], "images": [], "files": entries,
                "image_archive": {"compression": "zstd", "size": 1, "parts": entries[-1:]}}
    raw = json.dumps(manifest).encode()
    return write_tar(path, [tar_file(f"{NAME}/{mf.MANIFEST}", raw), *members])


def test_materialize_never_replaces_a_directory_it_did_not_make(tmp_path: Path, bundle: Path):
    out = tmp_path / "out"
    archive.write_archive(bundle, out)
    existing, before = hostile.sentinel(out, NAME)   # e.g. an install root named like the archive's top folder
    with pytest.raises(AirgapError, match=rf"unpacks into {out / NAME}, which already exists and was not "
                                          r"unpacked by dify-airgap: refusing to replace it"):
        archive.materialize(out / f"{NAME}.tar")
    assert hostile.state(existing) == before
    assert sorted(p.name for p in out.iterdir()) == [NAME, f"{NAME}.tar", f"{NAME}.tar.SHA256SUMS"]


def test_materialize_refuses_a_link_in_place_of_the_bundle_directory(tmp_path: Path, bundle: Path):
    out = tmp_path / "out"
    archive.write_archive(bundle, out)
    guard, before = hostile.sentinel(tmp_path)
    (out / NAME).symlink_to(guard)
    with pytest.raises(AirgapError, match="already exists and was not unpacked by dify-airgap"):
        archive.materialize(out / f"{NAME}.tar")
    assert hostile.state(guard) == before and (out / NAME).is_symlink()


def test_materialize_replaces_only_its_own_earlier_unpack(tmp_path: Path, bundle: Path):
    out = tmp_path / "out"
    archive.write_archive(bundle, out)
    first = archive.materialize(out / f"{NAME}.tar")
    assert (first / archive.UNPACKED_MARKER).is_file()
    (first / "install.sh").write_text("damaged\n")        # not reusable any more: unpacked again, replaced
    again = archive.materialize(out / f"{NAME}.tar")
    assert again == first and mf.verify(again).ok
    assert sorted(p.name for p in out.iterdir()) == [NAME, f"{NAME}.tar", f"{NAME}.tar.SHA256SUMS"]


@pytest.mark.parametrize("member, match", [
    (tar_sparse(f"{NAME}/docker/x", 1 << 40), r"'dify-0\.0\.0-airgap-amd64/docker/x' is a sparse file"),
    (tar_file(f"{NAME}/docker/x", b"y" * 5000), r"'dify-0\.0\.0-airgap-amd64/docker/x' declares 5000 bytes, "
                                                r"the manifest 1"),
])
def test_materialize_refuses_sparse_or_oversized_members_before_writing(tmp_path: Path, member, match):
    out = tmp_path / "out"
    out.mkdir()
    guard, before = hostile.sentinel(out)
    path = _bundle_archive(out / f"{NAME}.tar", {"docker/x": b"y"}, [member])
    with pytest.raises(AirgapError, match=match):
        archive.materialize(path)
    assert hostile.state(guard) == before
    assert sorted(p.name for p in out.iterdir()) == [f"{NAME}.tar", "sentinel"], "staging removed"


def test_materialize_refuses_a_member_twice_and_cleans_its_staging(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    guard, before = hostile.sentinel(out)
    path = _bundle_archive(out / f"{NAME}.tar", {"docker/x": b"y"},
                           [tar_file(f"{NAME}/docker/x", b"y"), tar_file(f"{NAME}/docker/x", b"y")])
    with pytest.raises(AirgapError, match=r"'dify-0\.0\.0-airgap-amd64/docker/x' already exists"):
        archive.materialize(path)
    assert hostile.state(guard) == before
    assert sorted(p.name for p in out.iterdir()) == [f"{NAME}.tar", "sentinel"]


def test_read_manifest_refuses_a_huge_manifest_before_reading_it(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(archive, "MAX_MANIFEST_SIZE", 1000)
    guard, before = hostile.sentinel(tmp_path)
    path = write_tar(tmp_path / f"{NAME}.tar", [tar_file(f"{NAME}/{mf.MANIFEST}", b" " * 5000)])
    with pytest.raises(AirgapError, match=rf"member '{NAME}/manifest.json' declares 5000 bytes, over the "
                                          r"1000-byte limit"):
        archive.read_manifest(path)
    assert hostile.state(guard) == before


def test_planning_view_unpacks_no_image_and_stops_after_docker(tmp_path: Path, bundle: Path):
    out = tmp_path / "out"
    archive.write_archive(bundle, out)
    tar_path = out / f"{NAME}.tar"
    data = tar_path.read_bytes()
    tar_path.write_bytes(data[:data.index(b"\x28\xb5\x2f\xfd")])   # cut inside the images: never read that far
    with archive.planning_view(tar_path) as view:
        files = sorted(p.relative_to(view).as_posix() for p in view.rglob("*") if p.is_file())
        assert files == ["docker/.env.example", "docker/docker-compose.yaml", mf.MANIFEST]
        assert (view / "docker" / "docker-compose.yaml").read_bytes() == \
            (bundle / "docker" / "docker-compose.yaml").read_bytes()
        assert view.name == NAME
    assert not view.exists(), "the view is temporary"
    assert sorted(p.name for p in out.iterdir()) == [f"{NAME}.tar", f"{NAME}.tar.SHA256SUMS"]


def test_planning_view_refuses_a_changed_docker_file(tmp_path: Path, bundle: Path):
    out = tmp_path / "out"
    archive.write_archive(bundle, out)
    tar_path = out / f"{NAME}.tar"
    data = bytearray(tar_path.read_bytes())
    data[data.index(b"EXPOSE_NGINX_PORT")] ^= 0x20
    tar_path.write_bytes(bytes(data))
    with pytest.raises(AirgapError, match=r"docker/\.env\.example sha256 differs"), archive.planning_view(tar_path):
        pass
    assert os.listdir(out) and not (out / NAME).exists()
