"""Registry mapping and the files `invoke push` writes (no engine needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scripts.bundle import archive, signature
from scripts.core.errors import AirgapError
from scripts.engine.client import Engine, Result
from scripts.host import push
from scripts.plugins import sign
from tests.unit.bundle.bundles import NAME, build_bundle


@pytest.mark.parametrize("ref, expected", [
    ("langgenius/dify-api:1.11.3", "reg:5000/dify/langgenius/dify-api:1.11.3"),
    ("postgres:15-alpine", "reg:5000/dify/library/postgres:15-alpine"),
    ("docker.io/library/redis:6-alpine", "reg:5000/dify/library/redis:6-alpine"),
    ("nginx", "reg:5000/dify/library/nginx:latest"),
    ("ghcr.io/org/tool:2", "reg:5000/dify/org/tool:2"),
    ("localhost:5000/x/y:3@sha256:" + "a" * 64, "reg:5000/dify/x/y:3"),
    ("localhost/dal/a:1", "reg:5000/dify/dal/a:1"),
])
def test_target_ref_keeps_docker_hub_path(ref, expected):
    assert push.target_ref(ref, "reg:5000/dify") == expected


@pytest.mark.parametrize("registry, parsed", [
    ("reg:5000/dify", ("reg:5000", "dify")),
    ("harbor.example.local/team/dify/", ("harbor.example.local", "team/dify")),
    ("https://10.0.0.5:5000", ("10.0.0.5:5000", "")),
    ("localhost/dify", ("localhost", "dify")),
])
def test_parse_registry(registry, parsed):
    assert push.parse_registry(registry) == parsed


@pytest.mark.parametrize("bad", ["", "dify", "reg:5000/Dify", "reg:5000/a//b/UPPER"])
def test_parse_registry_rejects_with_a_fix(bad):
    with pytest.raises(AirgapError, match="--registry"):
        push.parse_registry(bad)


MANIFEST = {"images": [
    {"ref": "langgenius/dify-api:1.11.3", "id": "sha256:" + "1" * 64, "services": ["api", "worker", "worker_beat"]},
    {"ref": "postgres:15-alpine", "id": "sha256:" + "2" * 64, "services": ["db_postgres"]},
]}


def test_plan_files_and_dry_run(tmp_path, capsys):
    plan = push.make_plan(tmp_path / "b", MANIFEST, "reg:5000/dify", insecure=True, output=tmp_path / "out")
    engine = Engine("podman", dry_run=True)
    text = plan.render(engine)
    assert "podman push --tls-verify=false reg:5000/dify/library/postgres:15-alpine" in text
    assert f"podman tag {'1' * 64} reg:5000/dify/langgenius/dify-api:1.11.3" in text
    files = push.push(engine, plan, MANIFEST)
    assert not (tmp_path / "out").exists(), "dry-run writes nothing"
    override = yaml.safe_load(files[tmp_path / "out" / push.COMPOSE_OVERRIDE])
    assert override == {"services": {
        "api": {"image": "reg:5000/dify/langgenius/dify-api:1.11.3"},
        "db_postgres": {"image": "reg:5000/dify/library/postgres:15-alpine"},
        "worker": {"image": "reg:5000/dify/langgenius/dify-api:1.11.3"},
        "worker_beat": {"image": "reg:5000/dify/langgenius/dify-api:1.11.3"}}}
    values = yaml.safe_load(files[tmp_path / "out" / push.HELM_VALUES])
    assert values["global"] == {"imageRegistry": "reg:5000", "imagePrefix": "dify"}
    assert values["images"]["api"] == {"repository": "reg:5000/dify/langgenius/dify-api", "tag": "1.11.3",
                                       "source": "langgenius/dify-api:1.11.3"}
    assert "would write" in capsys.readouterr().out


def test_colliding_targets_are_refused(tmp_path):
    data = {"images": [{"ref": "ghcr.io/a/x:1", "services": ["s"]}, {"ref": "quay.io/a/x:1", "services": ["t"]}]}
    with pytest.raises(AirgapError, match="would both be pushed"):
        push.make_plan(Path(tmp_path), data, "reg:5000/dify")


def test_docker_push_takes_no_tls_flag():
    assert push.push_argv(Engine("docker"), "r:1/x:1", insecure=True) == ["docker", "push", "r:1/x:1"]


# --- open_bundle: verified first -----------------------------------------------------------------------------

def test_open_bundle_verifies_first_and_a_dry_run_of_an_archive_unpacks_nothing(tmp_path):
    private, public = sign.write_keypair(tmp_path / "keys", name="site", bits=2048)
    bundle = build_bundle(tmp_path / "media")
    trust = signature.policy([str(public)])
    with pytest.raises(AirgapError, match="not signed"):
        push.open_bundle(bundle, trust)
    signature.sign_bundle(bundle, private)
    got, data = push.open_bundle(bundle, trust)
    assert got == bundle and data["images"][0]["ref"] == "langgenius/dify-api:0.0.0"
    out = tmp_path / "out"
    out.mkdir()
    archive.write_archive(bundle, out)
    got, data = push.open_bundle(out / f"{NAME}.tar", trust, dry_run=True)
    assert got == out / f"{NAME}.tar" and not (out / NAME).exists() and data["dify_version"] == "0.0.0"
    with pytest.raises(AirgapError, match="digest"):
        push.open_bundle(out / f"{NAME}.tar", signature.policy(expect_digest="0" * 64), dry_run=True)


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_damaged_archive_is_refused_before_any_engine_call_dry_run_or_not(tmp_path, monkeypatch, dry_run):
    """#13: push (and its dry run) hashes every member of an archive before the engine is touched: a flipped byte
    in the image part is named; nothing is unpacked beside the archive."""
    bundle = build_bundle(tmp_path / "media")
    out = tmp_path / "out"
    out.mkdir()
    archive.write_archive(bundle, out)
    tar = out / f"{NAME}.tar"
    data = bytearray(tar.read_bytes())
    data[-2048 - 700] ^= 0xFF                                  # inside the last member (the image part)
    tar.write_bytes(bytes(data))
    monkeypatch.setattr(Engine, "run", lambda *a, **k: pytest.fail(f"engine called: {a}"))
    with pytest.raises(AirgapError, match=r"images\.tar\.zst +corrupted +sha256 differs"):
        push.open_bundle(tar, signature.policy(), dry_run=dry_run)
    assert [p.name for p in out.iterdir() if p.is_dir()] == [], "nothing may be unpacked beside the archive"


def test_push_tags_the_id_the_engine_loaded_the_image_as_among_the_pinned_ones():
    """A bundle from Docker's containerd store pins its manifest-list digest (id) and the config digest (config_id):
    podman loads it as the config digest, and `tag` must use that one (the other is unknown to podman)."""
    loaded = {"docker.io/library/busybox:latest": "sha256:" + "c" * 64}

    def runner(argv, **kwargs):
        ref = argv[-1]
        return Result(tuple(argv), 0, loaded[ref] + "\n", "") if ref in loaded else Result(tuple(argv), 1, "", "no")

    engine = Engine("podman", runner=runner)
    item = push.PushItem("busybox:latest", "sha256:" + "i" * 64, "reg/busybox:latest",
                         pinned=("c" * 64, "i" * 64))
    assert push.source_name(engine, item) == "c" * 64
    loaded.clear()                                     # not loaded under that name: the first pinned id
    assert push.source_name(engine, item) == "c" * 64
    assert push.source_name(engine, push.PushItem("busybox:latest", "", "reg/busybox:latest")) == \
        "docker.io/library/busybox:latest"
