"""The inventory file (#16 item 1): written whole with its digest and optional signature; read on the build box only
after its size, digest, signature and shape are checked (no engine: the listing itself is tested on real engines in
tests/integration/test_inventory.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from scripts.bundle import signature
from scripts.core.errors import AirgapError, BadInput
from scripts.dify import deployment as dep
from scripts.host import inventory
from scripts.plugins import sign

LAYER = "sha256:" + "1" * 64
DATA = {"kind": inventory.KIND, "format_version": 1, "created": "2026-12-01T00:00:00+00:00", "runtime": "podman",
        "host": "rhel9", "engine_version": "4.9.4", "deployment": None,
        "images": [{"id": "sha256:" + "a" * 64, "names": ["docker.io/langgenius/dify-api:1.11.3"],
                    "layers": [LAYER, "sha256:" + "2" * 64], "architecture": "amd64", "os": "linux", "size": 10}]}


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    return sign.write_keypair(root, name="site", bits=2048), sign.write_keypair(root, name="other", bits=2048)


def test_written_whole_with_the_digest_of_its_exact_bytes_and_read_back(tmp_path):
    path, digest, signer = inventory.write(DATA, tmp_path / "inv.json")
    raw = path.read_bytes()
    assert digest == "sha256:" + hashlib.sha256(raw).hexdigest() and signer is None
    assert raw == inventory.render(DATA), "sorted keys: the same state gives the same bytes"
    assert inventory.read(path, signature.policy(expect_digest=digest)) == DATA
    assert not list(tmp_path.glob(".*tmp")), "no temporary file left"


def test_signed_then_verified_and_a_changed_byte_or_another_key_is_refused(tmp_path, keys):
    (private, public), (_, other) = keys
    path, digest, signer = inventory.write(DATA, tmp_path / "inv.json", str(private))
    assert signer == signature.fingerprint(sign.load_public_key(public))
    assert inventory.read(path, signature.policy([str(public)]))["runtime"] == "podman"
    with pytest.raises(AirgapError, match=r"inv.json.sig bad signature"):
        inventory.read(path, signature.policy([str(other)]))
    path.write_bytes(path.read_bytes().replace(b"podman", b"docker"))
    with pytest.raises(AirgapError, match="refused") as caught:
        inventory.read(path, signature.policy([str(public)]))
    assert "digest" in caught.value.hint
    # re-written unsigned: the old signature is not left beside it (it would not verify)
    inventory.write(DATA, path)
    assert not (tmp_path / "inv.json.sig").exists()
    with pytest.raises(AirgapError, match="not signed"):
        inventory.read(path, signature.policy([str(public)]))


def test_the_digest_the_air_gapped_side_printed_is_checked(tmp_path):
    path, _, _ = inventory.write(DATA, tmp_path / "inv.json")
    with pytest.raises(AirgapError, match="refused.*expected sha256:0000"):
        inventory.read(path, signature.policy(expect_digest="0" * 64))


@pytest.mark.parametrize("body, says", [
    (b"[]", "must be"),
    (b"not json", "JSON"),
    (json.dumps({**DATA, "kind": "dify-backup"}).encode(), "not a dify-airgap inventory"),
    (json.dumps({**DATA, "images": [{"id": 3}]}).encode(), "id"),
    (b"{" + b" " * (17 << 20) + b"}", "larger than"),
])
def test_a_hostile_or_foreign_file_is_refused_by_name(tmp_path, body, says):
    path = tmp_path / "inv.json"
    path.write_bytes(body)
    with pytest.raises((AirgapError, BadInput), match=says):
        inventory.read(path, signature.policy())


def test_the_installed_deployment_is_listed_from_its_record(tmp_path):
    record = dep.Deployment(prefix=tmp_path, runtime="docker", dify_version="1.11.3",
                            bundle="dify-1.11.3-airgap-amd64@0123456789ab",
                            images=[{"ref": "langgenius/dify-api:1.11.3", "id": "sha256:" + "a" * 64}])
    (tmp_path / dep.STATE_FILE).write_text(record.to_json())
    facts = inventory.deployment_facts(tmp_path)
    assert facts["dify_version"] == "1.11.3" and facts["bundle"].startswith("dify-1.11.3-airgap-amd64@")
    assert facts["images"] == [{"ref": "langgenius/dify-api:1.11.3", "id": "sha256:" + "a" * 64}]
    assert inventory.deployment_facts(tmp_path / "nothing-here") is None
    assert "installed: Dify 1.11.3" in inventory.render_text({**DATA, "deployment": facts}, Path("inv.json"),
                                                              "sha256:x", None)
