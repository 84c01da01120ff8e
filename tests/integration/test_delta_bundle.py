"""Upgrade (delta) bundles on real engines (#16 item 2): release A (1.11.3 stand-ins) is on the target; the bundle
of release B (1.16.0) cut against the target's inventory carries only what it lacks, loads there with every image
id the manifest pins, and is refused on an EMPTY engine before anything changes, naming what is missing.

The build side is the lab's docker (both releases' stand-ins present). The stand-ins are one layer each, so each
release also runs an "app" image built the way Dify's are: busybox, a shared "python" base layer, and a layer of its
own (``APP:A`` in release A, ``APP:B`` in B): the layer-level cut is measured on those. The target is a throwaway
dockerd, or throwaway podman storage: nothing of the lab's is visible to it.
"""

from __future__ import annotations

import os
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from scripts.bundle import build as bundler
from scripts.bundle import delta
from scripts.bundle.load import check_loaded_ids, load_images
from scripts.bundle.manifest import load_manifest
from scripts.bundle.signature import TrustPolicy
from scripts.core.errors import AirgapError
from scripts.dify import plan as compose_plan
from scripts.dify.plan import PlannedImage
from scripts.engine.client import Engine
from scripts.engine.savetap import hub_short
from scripts.host import install as installer
from scripts.host import inventory
from tests.lab import host as lab
from tests.lab import standins

from ..conftest import release_fixture, require_engine

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("delta_bundle")]

OLD, NEW = "1.11.3", "1.16.0"


def _bundle(engine: Engine, root: Path, version: str, app: str, against: delta.Base | None = None) -> Path:
    project = standins.complete_project(root / f"dify-{version}" / "docker", fixture=release_fixture(version))
    plan = compose_plan.plan_images(engine, project, project / ".env.example")
    plan.images.append(PlannedImage(app, ["app"]))
    return bundler.build(engine, bundler.make_plan(
        plan, version=plan.dify_version, project_dir=project, output=root / "out", platform=bundler.host_platform(),
        compression="zstd", chunk_size=None, pull="never", target_python=f"{sys.version_info[0]}.{sys.version_info[1]}",
        against=against))


def _build(engine: Engine, ref: str, base: str, payload: int, context: Path) -> str:
    context.mkdir(parents=True)
    (context / "payload").write_bytes(os.urandom(payload))
    (context / "Dockerfile").write_text(f"FROM {base}\nCOPY payload /payload-{context.name}\n")
    engine.run(["build", "--network", "none", "-q", "-t", ref, str(context)], timeout=300)
    return ref


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """The build box: full bundles of both releases (stand-ins and the app images in the lab's docker)."""
    engine = require_engine("docker")
    root = tmp_path_factory.mktemp("delta")
    app = f"localhost/dal-delta-{uuid.uuid4().hex[:8]}/app"
    with standins.present(engine, [*standins.default_images(OLD), *standins.default_images(NEW)]):
        try:
            _build(engine, f"{app}-base:1", "busybox:latest", 3 << 20, root / "ctx-base")
            _build(engine, f"{app}:A", f"{app}-base:1", 1 << 20, root / "ctx-a")
            _build(engine, f"{app}:B", f"{app}-base:1", 1 << 20, root / "ctx-b")
            yield engine, root, app, _bundle(engine, root, OLD, f"{app}:A"), _bundle(engine, root, NEW, f"{app}:B")
        finally:
            engine.run(["rmi", "-f", f"{app}:A", f"{app}:B", f"{app}-base:1"], check=False)


@contextmanager
def _target(runtime: str):
    """An empty engine of that runtime."""
    if runtime == "docker":
        with lab.Dockerd() as engine:
            yield engine
    else:
        require_engine("podman")
        with lab.podman_storage() as env:
            yield Engine("podman", env=env)


def _archive_size(bundle: Path) -> int:
    return load_manifest(bundle)["image_archive"]["size"]


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_a_delta_cut_against_the_targets_inventory_loads_there_and_is_refused_on_an_empty_engine(
        runtime, builds, tmp_path):
    build, root, app, old_bundle, new_bundle = builds
    with _target(runtime) as target:
        load_images(target, old_bundle)                       # the target runs release A
        inv, digest, _ = inventory.write(inventory.collect(target, None), tmp_path / "inventory.json")
        base = inventory.against(build, inv, TrustPolicy())  # carried out to the build box
        assert base.kind == "inventory" and base.digest == digest and base.chains
        cut = _bundle(build, root / f"cut-{runtime}", NEW, f"{app}:B", base)
        data = load_manifest(cut)
        info = data["delta"]
        new_refs = {i["ref"] for i in data["images"]}
        old_refs = {i["ref"] for i in load_manifest(old_bundle)["images"]}
        # image level: what both releases run (same name, same id) stays behind
        held = base.images
        same = {r for r in new_refs & old_refs
                if delta.bare(build.inspect_image(r)["Id"]) in held.get(hub_short(r), ())}
        assert set(info["kept_images"]) == same
        assert info["kept_images"] and set(info["kept_images"]) < new_refs
        # layer level: APP:B's busybox and "python" base layers are written empty, its own layer is carried
        layers = build.inspect_image(f"{app}:B")["RootFS"]["Layers"]
        assert info["layer_level"] and set(info["placeholder_layers"]) == set(layers[:-1])
        busybox = build.inspect_image("busybox:latest")["Size"]
        # the layer tars: the files plus a 512-byte header each (the busybox stand-in has hundreds of applet links)
        assert (3 << 20) + busybox <= info["bytes_left_out"] < (3 << 20) + busybox * 3 // 2
        assert info["required_chains"] == {f"{app}:B": delta.chain_ids(layers)[:-1]}
        assert _archive_size(cut) < _archive_size(new_bundle)
        assert cut.name == f"dify-{NEW}-from-{OLD}-airgap-{bundler.parse_platform(bundler.host_platform())[1]}"
        assert delta.missing_on_target(target, data) == []
        loaded = load_images(target, cut, data)
        assert set(loaded) == new_refs
        check_loaded_ids(target, data["images"])               # every B image id is the manifest's
        for ref in new_refs - set(info["kept_images"]):
            got = target.inspect_image(installer.local_ref(target, ref))["RootFS"]["Layers"]
            assert got == build.inspect_image(ref)["RootFS"]["Layers"], ref
    with _target(runtime) as empty:                           # the same delta where nothing of A is
        missing = delta.missing_on_target(empty, data)
        assert any(k in line for k in info["kept_images"] for line in missing)
        prefix = tmp_path / "opt-empty"
        opts = installer.InstallOptions(bundle=cut, runtime=runtime, prefix=prefix, server_ip="10.1.2.3",
                                        engine_env=dict(empty.env), project_name=f"daldelta{uuid.uuid4().hex[:8]}")
        with pytest.raises(AirgapError, match=r"upgrade \(delta\) bundle cut against the inventory") as refused:
            installer.install(opts)
        assert "Nothing was changed" in str(refused.value) and info["kept_images"][0] in str(refused.value)
        assert not (prefix / "docker").exists()
        assert empty.run(["image", "ls", "-q"], mutates=False).stdout.strip() == ""
