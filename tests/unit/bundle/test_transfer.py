"""The transfer sheet (TRANSFER.md, its JSON, the CycloneDX SBOM) of a tiny bundle, through `invoke inspect`, in both
bundle forms; the SBOM checked with cyclonedx-python-lib's own schema validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from invoke import Config, Context, Exit

from scripts.bundle import archive, build, signature, transfer
from scripts.bundle import manifest as mf
from scripts.plugins import sign
from tests.unit.bundle.bundles import NAME, build_bundle, write_manifest

WHEEL = "cyclonedx_python_lib-11.12.0-py3-none-any.whl"
PLUGIN = "plugins/langgenius-ollama_0.0.3-offline.difypkg"
CONFIG = "c" * 64


def _bundle(parent: Path) -> Path:
    """The tiny bundle with a wheel, a plugin and two images (one from Docker Hub's library) in its manifest."""
    root = build_bundle(parent, files={"images.tar.zst": b"\x28\xb5\x2f\xfd" + bytes(range(256)) * 8,
                                       f"wheels/{WHEEL}": b"wheel bytes", PLUGIN: b"plugin bytes",
                                       "docker/docker-compose.yaml": b"services: {}\n"})
    data = json.loads((root / mf.MANIFEST).read_text())
    data["wheels"] = [WHEEL]
    data["plugins"] = [{"path": PLUGIN, "identifier": "langgenius/ollama:0.0.3@" + "d" * 64, "size": 12,
                        "sha256": mf.file_entry(root, root / PLUGIN)["sha256"], "signed": True}]
    data["images"] = [{"ref": "langgenius/dify-api:1.16.0", "id": "sha256:" + "a" * 64,
                       "config_id": f"sha256:{CONFIG}", "repo_digest": "langgenius/dify-api@sha256:" + "b" * 64,
                       "size": 1 << 30, "architecture": "amd64", "os": "linux", "services": ["api", "worker"]},
                      {"ref": "postgres:15-alpine", "id": "sha256:" + "e" * 64, "size": 1 << 20,
                       "architecture": "amd64", "services": ["db_postgres"]}]
    write_manifest(root, data)
    return root


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    return _bundle(tmp_path / "media")


def _inspect(path: Path, capsys, fmt: str, keys: list[str] | None = None, stream: str = "out") -> str:
    import tasks  # local: tasks.py is the top of the layers, imported only by the tests of its tasks

    tasks.inspect(Context(Config()), str(path), format=fmt, public_key=keys)
    return getattr(capsys.readouterr(), stream)


@pytest.mark.parametrize("form", ["directory", "archive"])
def test_every_component_with_its_hash_in_all_three_formats_of_both_forms(bundle: Path, tmp_path: Path, capsys,
                                                                           form: str):
    path = bundle
    if form == "archive":
        path = tmp_path / "out" / archive.write_archive(bundle, tmp_path / "out")["parts"][0]["path"]
    digest = signature.bundle_digest(bundle)
    files = {e["path"]: e for e in json.loads((bundle / mf.MANIFEST).read_text())["files"]}

    data = json.loads(_inspect(path, capsys, "json"))
    assert data["bundle"] == NAME and data["digest"] == digest and not data["signed"]
    assert [(w["name"], w["version"], w["sha256"]) for w in data["wheels"]] == [
        ("cyclonedx-python-lib", "11.12.0", files[f"wheels/{WHEEL}"]["sha256"])]
    assert data["images"][0]["config_id"] == f"sha256:{CONFIG}"
    assert data["images"][1]["config_id"] == "sha256:" + "e" * 64       # no config_id recorded: the id

    md = _inspect(path, capsys, "md")
    assert f"invoke verify {path.name} --expect-digest {digest}" in md   # what crosses the gap, as carried
    assert ("tar.SHA256SUMS" in md) is (form == "archive")
    for needle in (digest, files[f"wheels/{WHEEL}"]["sha256"], files[PLUGIN]["sha256"],
                   files["images.tar.zst"]["sha256"], CONFIG, "b" * 64, "postgres:15-alpine", "반입 자료",
                   "컨테이너 이미지", f"--expect-digest {digest}"):
        assert needle in md, needle

    cdx = _inspect(path, capsys, "cdx")
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(cdx) is None
    bom = json.loads(cdx)
    by_ref = {c["bom-ref"]: c for c in bom["components"]}
    api = by_ref["image:langgenius/dify-api:1.16.0"]
    assert api["type"] == "container" and api["hashes"] == [{"alg": "SHA-256", "content": CONFIG}]
    assert api["purl"] == "pkg:docker/langgenius/dify-api@1.16.0?repository_url=docker.io"
    assert by_ref["image:postgres:15-alpine"]["purl"] == "pkg:docker/postgres@15-alpine?repository_url=docker.io"
    assert by_ref[f"wheel:{WHEEL}"]["purl"] == "pkg:pypi/cyclonedx-python-lib@11.12.0"
    assert by_ref["plugin:langgenius/ollama:0.0.3@" + "d" * 64]["version"] == "0.0.3"
    assert bom["metadata"]["component"]["hashes"][0]["content"] == digest.removeprefix("sha256:")
    assert _inspect(path, capsys, "cdx") == cdx, "the SBOM of one bundle is the same every time"


def test_the_signer_is_named_when_a_key_verifies_and_a_wrong_key_is_warned_not_refused(bundle: Path, tmp_path: Path,
                                                                                    capsys):
    private, public = sign.write_keypair(tmp_path / "keys", name="site", bits=2048)
    _, other = sign.write_keypair(tmp_path / "other", name="other", bits=2048)
    signature.sign_bundle(bundle, private)
    fingerprint = signature.fingerprint(sign.load_public_key(public))
    assert json.loads(_inspect(bundle, capsys, "json", [str(public)]))["signer"] == fingerprint
    assert f"key / 키 `{fingerprint}`" in _inspect(bundle, capsys, "md", [str(public)])
    data = json.loads(_inspect(bundle, capsys, "json", [str(other)]))
    assert data["signed"] and data["signer"] is None
    assert "warning: manifest.json.sig: does not verify with" in _inspect(bundle, capsys, "md", [str(other)], "err")
    assert "signed: yes (signer not checked" in _inspect(bundle, capsys, "text")


def test_bundle_writes_the_sheet_beside_the_bundle_not_inside(bundle: Path, tmp_path: Path):
    private, _ = sign.write_keypair(tmp_path / "keys", name="site", bits=2048)
    signature.sign_bundle(bundle, private)
    plan = type("Plan", (), {"sign_key": str(private), "archive": False, "chunk_size": None})()
    written = build.write_transfer_sheet(bundle, plan)
    assert written == [bundle.parent / f"{NAME}.TRANSFER.md", bundle.parent / f"{NAME}.sbom.cdx.json"]
    assert f"key / 키 `{signature.fingerprint(sign.load_private_key(private).public_key())}`" in written[0].read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(written[1].read_text()) is None
    assert signature.verify(bundle).ok, "the bundle itself is unchanged: nothing unlisted was added inside"


def test_format_is_checked_and_json_is_not_mixed_with_a_sheet(bundle: Path, capsys):
    import tasks  # local: tasks.py is the top of the layers, imported only by the tests of its tasks

    with pytest.raises(Exit, match="--format takes one of text, md, json, cdx") as caught:
        tasks.inspect(Context(Config()), str(bundle), format="pdf")
    assert caught.value.code == 2
    with pytest.raises(Exit):
        tasks.inspect(Context(Config()), str(bundle), format="md", json_=True)
    assert json.loads(capsys.readouterr().out)["error"].startswith("--json prints the manifest")


def test_a_reader_that_stops_early_ends_the_output_quietly(bundle: Path):
    """`invoke inspect ... --format md | head`: no traceback and no "unexpected error" line when the pipe closes
    (exit 141 as a Unix tool killed by SIGPIPE)."""
    data = json.loads((bundle / mf.MANIFEST).read_text())
    data["wheels"] = [f"pkg{i}-1.0-py3-none-any.whl" for i in range(3000)]  # a sheet far larger than a pipe
    write_manifest(bundle, data)
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "inspect", str(bundle), "--format", "md"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.stdout.readline().startswith(b"# Transfer sheet")
    proc.stdout.close()                                   # the reader is gone, as `head -1` exits
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "error" not in err, err


@pytest.mark.parametrize("ref, purl", [
    ("nginx@sha256:" + "a" * 64, "pkg:docker/nginx@sha256:" + "a" * 64 + "?repository_url=docker.io"),
    ("localhost:5000/site/dify-api:1.16.0", "pkg:docker/site/dify-api@1.16.0?repository_url=localhost:5000"),
    ("busybox", "pkg:docker/busybox@latest?repository_url=docker.io"),
])
def test_image_package_urls(ref, purl):
    assert transfer._image_purl(ref).to_string() == purl
