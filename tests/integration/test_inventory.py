"""`invoke inventory` on real engines (#16 item 1): every image with the layer diff-ids the engine reports, an image
of two layers made here among them, written with its digest; read back as the build box reads it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scripts.bundle import signature
from scripts.engine.client import Engine
from scripts.host import inventory
from tests.lab import host as lab

from ..conftest import ROOT, require_engine

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_inventory_lists_every_image_with_its_layers_and_is_read_back(runtime, tracker, tmp_path):
    engine: Engine = require_engine(runtime)
    base = tracker.image(engine, f"localhost/{tracker.name('dal-inv')}-base:1")
    lab.make_busybox_image(engine, base)
    box = tracker.container(engine, tracker.name("dal-inv"))
    engine.run(["run", "--network", "none", "--name", box, base, "sh", "-c", "echo layer-two > /two.txt"], timeout=120)
    two = tracker.image(engine, f"localhost/{tracker.name('dal-inv')}-two:1")
    engine.run(["commit", box, two], timeout=120)
    want = engine.inspect_image(two)

    out = tmp_path / "inv.json"
    res = subprocess.run([sys.executable, "-m", "invoke", "inventory", "--runtime", runtime, "--output", str(out),
                          "--prefix", str(tmp_path / "no-install"), "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(res.stdout)
    data = inventory.read(out, signature.policy(expect_digest=result["digest"]))
    by_id = {image["id"]: image for image in data["images"]}
    mine = by_id[want["Id"]]
    assert len(mine["layers"]) == 2 and mine["layers"] == want["RootFS"]["Layers"]
    assert any(name.endswith(two.split("/", 1)[1]) for name in mine["names"]), mine["names"]
    assert by_id[engine.inspect_image(base)["Id"]]["layers"] == mine["layers"][:1]  # the shared base layer
    assert data["runtime"] == runtime and data["deployment"] is None and result["images"] == len(data["images"])
