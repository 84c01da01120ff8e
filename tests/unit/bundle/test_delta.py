"""The delta cut without an engine: chain ids, the plan's image/layer decisions, and the stream rewrite on tar
streams shaped like Docker's and podman's saves (fed in odd chunks)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

import pytest

from scripts.bundle import delta
from scripts.core.errors import AirgapError


def _diff(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _stream(members: list[tuple[str, bytes | None]], fmt=tarfile.USTAR_FORMAT, link: dict | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, (link or {}).get(name, "../x/layer.tar")
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _run(raw: bytes, placeholders: set[str], tmp_path, chunk: int = 777) -> tuple[bytes, delta.LayerFilter]:
    rewrite = delta.LayerFilter(placeholders, tmp_path)
    out = b"".join(part for i in range(0, len(raw), chunk) for part in rewrite.feed(raw[i:i + chunk]))
    return out + b"".join(rewrite.close()), rewrite


def _members(raw: bytes) -> dict[str, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}


def test_chain_ids_follow_the_oci_rule():
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert delta.chain_ids([a, b]) == [a, "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()]
    assert delta.chain_ids([]) == []


@pytest.mark.parametrize("chunk", [1, 511, 512, 777, 1 << 20])
def test_docker_layers_the_target_has_become_empty_members_and_the_rest_is_byte_identical(tmp_path, chunk):
    base, own = os.urandom(5000), os.urandom(3000)
    v1a, v1b, v1c = "1" * 64, "2" * 64, "3" * 64
    raw = _stream([(f"{v1a}/VERSION", b"1.0"), (f"{v1a}/layer.tar", base), (f"{v1b}/layer.tar", own),
                   (f"{v1c}/layer.tar", None), ("manifest.json", b"[]")],
                  link={f"{v1c}/layer.tar": f"../{v1a}/layer.tar"})
    out, rewrite = _run(raw, {_diff(base)}, tmp_path, chunk)
    got, want = _members(out), _members(raw)
    assert got[f"{v1a}/layer.tar"] == b"" and got[f"{v1b}/layer.tar"] == own
    assert {k: v for k, v in got.items() if k != f"{v1a}/layer.tar"} == \
        {k: v for k, v in want.items() if k != f"{v1a}/layer.tar"}
    assert rewrite.written_empty == {_diff(base): 5000} and not rewrite.oci
    assert len(out) < len(raw) and not list(tmp_path.iterdir()), "spool files left behind"


def test_podman_layers_are_decided_by_their_digest_name(tmp_path):
    base, own = os.urandom(4000), os.urandom(100)
    raw = _stream([(_diff(base)[7:] + ".tar", base), (_diff(own)[7:] + ".tar", own), ("manifest.json", b"[]")])
    out, rewrite = _run(raw, {_diff(base)}, tmp_path)
    got = _members(out)
    assert got[_diff(base)[7:] + ".tar"] == b"" and got[_diff(own)[7:] + ".tar"] == own
    assert rewrite.written_empty == {_diff(base): 4000}


def test_long_names_pass_with_their_member_and_an_oci_layout_is_carried_whole(tmp_path):
    layer = os.urandom(2000)
    long_dir = "d" * 64
    raw = _stream([(f"{long_dir}/layer.tar", layer), ("blobs/sha256/" + _diff(layer)[7:], layer),
                   ("oci-layout", b"{}"), ("x" * 150, b"long")], fmt=tarfile.PAX_FORMAT)
    out, rewrite = _run(raw, {_diff(layer)}, tmp_path, 300)
    got = _members(out)
    assert got[f"{long_dir}/layer.tar"] == b"" and got["x" * 150] == b"long"
    assert got["blobs/sha256/" + _diff(layer)[7:]] == layer    # never a placeholder under blobs/
    assert rewrite.oci


def test_a_stream_cut_inside_a_member_is_an_error(tmp_path):
    raw = _stream([("1" * 64 + "/layer.tar", os.urandom(3000))])
    rewrite = delta.LayerFilter(set(), tmp_path)
    list(rewrite.feed(raw[:1500]))
    with pytest.raises(AirgapError, match="ended inside a tar member"):
        list(rewrite.close())


class _Engine:
    """inspect_image from a table (the build box's images)."""

    def __init__(self, images: dict[str, dict]):
        self.images = images

    def inspect_image(self, ref: str) -> dict:
        return self.images[ref]


def test_plan_keeps_same_id_images_and_empties_layers_only_where_every_chain_is_on_the_target():
    l0, l1, l2, l3 = ("sha256:" + c * 64 for c in "0123")
    engine = _Engine({
        "redis:6": {"Id": "sha256:" + "e" * 64, "RootFS": {"Layers": [l0]}},
        "api:2": {"Id": "sha256:" + "f" * 64, "RootFS": {"Layers": [l0, l1, l2]}},
        "other:1": {"Id": "sha256:" + "9" * 64, "RootFS": {"Layers": [l3, l1]}},   # l1 on another chain
    })
    base = delta.Base("inventory", "inv.json", "sha256:x", "1.11.3", images={"redis:6": {"e" * 64}},
                      chains=set(delta.chain_ids([l0, l1])))
    cut = delta.plan(engine, ["redis:6", "api:2", "other:1"], base)
    assert cut.kept == ["redis:6"] and cut.saved == ["api:2", "other:1"]
    assert cut.placeholders == {l0}, "l1 also sits on a chain the target lacks: carried"
    assert cut.required([l0]) == {"api:2": delta.chain_ids([l0])}


def _pax_sized(name: str, data: bytes) -> bytes:
    """A member as Go writes one of 8 GiB and more: a PAX ``size`` record, 0 in the ustar size field."""
    record = f"size={len(data)}\n"
    length = len(record) + 1
    length += len(str(length + len(record)))
    pax = f"{length} {record}".encode()
    head = tarfile.TarInfo("./PaxHeaders/x")
    head.type, head.size = tarfile.XHDTYPE, len(pax)
    member = tarfile.TarInfo(name)
    member.size = 0
    blocks = head.tobuf(tarfile.USTAR_FORMAT) + pax + bytes(-len(pax) % 512) + member.tobuf(tarfile.USTAR_FORMAT)
    return blocks + data + bytes(-len(data) % 512)


def test_a_member_sized_by_a_pax_record_is_carried_whole_not_parsed(tmp_path):
    layer = os.urandom(3000)
    raw = _pax_sized("4" * 64 + "/layer.tar", layer) + _stream([("manifest.json", b"[]")])
    out, rewrite = _run(raw, {_diff(layer)}, tmp_path, 700)
    assert out == raw and rewrite.written_empty == {}
    assert _members(out)["4" * 64 + "/layer.tar"] == layer


def test_kept_images_are_pinned_by_the_id_the_base_knows_them_by():
    cut = delta.DeltaPlan(delta.Base("bundle", "old", "sha256:x", "1.11.3"), ["redis:6"], [], set(),
                          kept_ids={"redis:6": {"c" * 64, "m" * 64}})
    records = [{"ref": "redis:6", "id": "sha256:" + "m" * 64}, {"ref": "api:2", "id": "sha256:" + "f" * 64}]
    delta.pin_kept(records, cut)
    assert records[0]["config_id"] == "sha256:" + "c" * 64 and "config_id" not in records[1]


@pytest.mark.parametrize("version, shown", [("1.11.3", "1.11.3"), ("1.11.3/../../x", ""), ("latest", ""), ("", "")])
def test_the_bases_release_is_a_version_or_not_known(version, shown):
    data = {"deployment": {"dify_version": version}, "images": []}
    assert delta.base_from_inventory(data, "inv.json", "sha256:x").dify_version == shown
