"""`invoke push` against the REAL distribution registry from the lab, for docker and podman."""

from __future__ import annotations

import json
import urllib.request

import pytest
import yaml

from scripts.bundle import manifest
from scripts.host import push
from tests.lab import host as lab
from tests.lab.host import free_port

from .bundles import build

pytestmark = pytest.mark.integration


def tags(addr: str, name: str) -> list[str]:
    with urllib.request.urlopen(f"http://{addr}/v2/{name}/tags/list", timeout=10) as resp:
        return json.loads(resp.read())["tags"]


def test_push_loads_tags_pushes_and_writes_the_mapping(engine, tracker, tmp_path):
    tag = tracker.name("dalpush")
    refs = [f"localhost/{tag}/api:1", f"localhost/{tag}/web:2"]
    if not engine.is_podman:  # a Docker Hub short name (podman would keep it as localhost/...)
        refs.append(f"{tag}-db:3")
    for ref in refs:
        tracker.image(engine, ref)
        lab.make_busybox_image(engine, ref, files={"/data/x": ref * 10_000})
    proj = tmp_path / "docker"
    proj.mkdir()
    services = {"api": refs[0], "worker": refs[0], "web": refs[1]} | ({"db": refs[2]} if len(refs) > 2 else {})
    (proj / "docker-compose.yaml").write_text(yaml.safe_dump({"services": {s: {"image": r}
                                                                           for s, r in services.items()}}))
    (proj / ".env.example").write_text("A=1\n")
    bundle = build(engine, proj, tmp_path / "out")
    data = manifest.load_manifest(bundle)
    ids = {i["ref"]: i["id"].removeprefix("sha256:") for i in data["images"]}
    engine.remove_images(refs)  # push must load them from the bundle itself
    addr = f"127.0.0.1:{free_port()}"
    with lab.registry(addr):
        plan = push.make_plan(bundle, data, f"{addr}/dify", insecure=True, output=tmp_path / "map")
        files = push.push(engine, plan, data)
        expected = {refs[0]: f"{addr}/dify/{tag}/api:1", refs[1]: f"{addr}/dify/{tag}/web:2"}
        if len(refs) > 2:
            expected[refs[2]] = f"{addr}/dify/library/{tag}-db:3"
        assert plan.mapping() == expected
        assert tags(addr, f"dify/{tag}/api") == ["1"] and tags(addr, f"dify/{tag}/web") == ["2"]
        if len(refs) > 2:
            assert tags(addr, f"dify/library/{tag}-db") == ["3"]
        local = engine.run(["images", "--format", "{{.Repository}}:{{.Tag}}"], mutates=False).stdout
        assert addr not in local, "temporary registry tags were left behind"
        # pull one back: it is exactly the bundled image
        back = tracker.image(engine, expected[refs[0]])
        engine.run(["pull", *(["--tls-verify=false"] if engine.is_podman else []), back], timeout=300)
        got = engine.run(["image", "inspect", "--format", "{{.Id}}", back], mutates=False).stdout.strip()
        assert got.removeprefix("sha256:") == ids[refs[0]]
    override = yaml.safe_load((tmp_path / "map" / push.COMPOSE_OVERRIDE).read_text())
    assert override["services"]["worker"]["image"] == expected[refs[0]]
    assert set(override["services"]) == set(services)
    values = yaml.safe_load(files[tmp_path / "map" / push.HELM_VALUES])
    assert values["images"]["web"]["repository"] == f"{addr}/dify/{tag}/web"
