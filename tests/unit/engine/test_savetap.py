"""The save-stream tap: manifest.json's config digests out of a tar stream fed in blocks of any size."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from scripts.engine.savetap import SaveTap, hub_short

A, B = "a" * 64, "b" * 64


def _save_stream(fmt: int, manifest: list[dict], *, config_style: str = "oci", long_layer: bool = False) -> bytes:
    """A tar laid out like ``docker save`` (layers first, manifest.json last; Docker 25+ ``blobs/sha256/``) or
    ``podman save`` (``HEX.json`` configs), in the given tarfile format."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        layer = "blobs/sha256/" + ("l" * 64) if config_style == "oci" else f"{'l' * 64}/layer.tar"
        if long_layer:
            layer = "deep/" * 40 + "layer.tar"  # over 100 (and 155 + 100) characters: GNU/PAX long names
        add(layer, bytes(range(256)) * 4099)  # not a multiple of 512: padding is skipped too
        add("manifest.jsonX", b"not this one")
        add("repositories", b"{}")
        add("manifest.json", json.dumps(manifest).encode())
    return buf.getvalue()


MANIFEST = [{"Config": f"blobs/sha256/{A}", "RepoTags": ["busybox:latest", "docker.io/library/busybox:1"]},
            {"Config": f"{B}.json", "RepoTags": ["docker.io/langgenius/dify-api:1.16.0"]},
            {"Config": "not-a-digest", "RepoTags": ["ignored:1"]}]
EXPECTED = {"busybox:latest": f"sha256:{A}", "busybox:1": f"sha256:{A}", "langgenius/dify-api:1.16.0": f"sha256:{B}"}


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("chunk", [1, 7, 511, 512, 513, 1 << 20])
def test_config_ids_out_of_a_save_stream_fed_in_any_block_size(fmt, chunk):
    stream = _save_stream(fmt, MANIFEST, long_layer=fmt != tarfile.USTAR_FORMAT)
    tap = SaveTap()
    for i in range(0, len(stream), chunk):
        tap.feed(stream[i:i + chunk])
    assert tap.config_ids() == EXPECTED


def test_a_long_name_record_ending_in_manifest_json_is_the_member_it_names():
    """The GNU/PAX long name, not the truncated ustar name field, says which member is manifest.json."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("x" * 150 + "/manifest.json", b"[]"), ("manifest.json", json.dumps(MANIFEST).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tap = SaveTap()
    tap.feed(buf.getvalue())
    assert tap.config_ids() == EXPECTED


@pytest.mark.parametrize("stream", [b"", b"\0" * 4096, b"garbage" * 1000, b"manifest.json" + b"\xff" * 600])
def test_what_is_not_a_save_stream_gives_no_ids_and_no_error(stream):
    tap = SaveTap()
    tap.feed(stream)
    assert tap.config_ids() == {}


def test_a_manifest_that_is_not_json_gives_no_ids():
    stream = _save_stream(tarfile.PAX_FORMAT, MANIFEST).replace(b'[{"Config"', b'[{"Config'.ljust(10, b"!"))
    tap = SaveTap()
    tap.feed(stream)
    assert tap.config_ids() == {}


@pytest.mark.parametrize("ref, short", [("docker.io/library/busybox:latest", "busybox:latest"),
                                        ("docker.io/langgenius/dify-api:1", "langgenius/dify-api:1"),
                                        ("localhost/x:1", "localhost/x:1"), ("busybox", "busybox")])
def test_hub_short(ref, short):
    assert hub_short(ref) == short
