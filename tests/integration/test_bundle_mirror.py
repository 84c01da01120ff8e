"""Acceptance of issue #4 in the lab: `invoke bundle` against the REAL Dify 1.11.3 compose file, pulling
through a registry mirror seeded with stand-ins, into a throwaway dockerd that has none of them."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile

import pytest

from scripts.bundle import archive, manifest
from scripts.bundle import build as bundler
from scripts.dify import plan as compose_plan
from tests.lab import host as lab
from tests.lab import standins
from tests.lab.host import free_port

from ..conftest import FIXTURES, ROOT

pytestmark = pytest.mark.integration


def images_in(bundle, data):
    """(image id, tags) per image, as the docker-archive inside the bundle records them."""
    return sorted((e["Config"].split("/")[-1].replace(".json", ""), sorted(e["RepoTags"]))
                  for e in manifest.archive_index(bundle, data))


def test_bundle_pulls_through_the_mirror_and_lists_exactly_the_planned_images(docker_standins, tmp_path):  # noqa: F811
    engine, refs = docker_standins
    release = tmp_path / "release"
    standins.complete_project(release / "dify-1.11.3" / "docker", fixture=FIXTURES)
    tarball = tmp_path / "1.11.3.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(release / "dify-1.11.3", arcname="dify-1.11.3")
    project = standins.complete_project(tmp_path / "docker", fixture=FIXTURES)
    addr = f"127.0.0.1:{free_port()}"
    with lab.registry(addr):
        standins.seed_registry(engine, refs, addr)
        with lab.Dockerd(config={"registry-mirrors": [f"http://{addr}"], "insecure-registries": [addr]}) as mirrored:
            assert not mirrored.run(["images", "-q"], mutates=False).stdout.strip(), "the daemon starts empty"
            planned = compose_plan.plan_images(mirrored, project, project / ".env.example")
            assert len(planned.refs) == 10
            out = tmp_path / "out"
            # the CLI, as a user runs it: the tasks' engine reaches the throwaway daemon through DOCKER_HOST
            res = subprocess.run([sys.executable, "-m", "invoke", "bundle", "--source", str(tarball),
                                  "--version", "1.11.3", "--runtime", "docker", "--pull", "missing", "--archive",
                                  "--output", str(out)],
                                 cwd=ROOT, capture_output=True, text=True, timeout=1800,
                                 env={**os.environ, **mirrored.env})
            assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
            bundle = out / bundler.bundle_name("1.11.3", bundler.host_platform())
            data = manifest.load_manifest(bundle)
            assert sorted(i["ref"] for i in data["images"]) == sorted(planned.refs)
            assert {i["ref"]: i["services"] for i in data["images"]} == {p.ref: p.services for p in planned.images}
            assert {i["ref"]: i["services"] for i in data["images"]}["langgenius/dify-api:1.11.3"] == \
                ["api", "worker", "worker_beat"]
            assert data["source"] == str(tarball)
            sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True)
            assert sums.returncode == 0, sums.stdout[-2000:] + sums.stderr
            assert manifest.verify(bundle).ok
            assert archive.verify_archive(out / f"{bundle.name}.tar").ok
            # every image is a pulled stand-in of the right name, and the archive holds exactly them
            for ref in planned.refs:
                labels = mirrored.inspect_image(ref)["Config"]["Labels"] or {}
                assert labels.get(standins.LABEL) == "1", ref
            whole = images_in(bundle, data)
            assert sorted(t for _, tags in whole for t in tags) == sorted(planned.refs)

            # the same images with --chunk-size (scripts API this time), parts and all
            plan = bundler.make_plan(planned, version="1.11.3", project_dir=project, output=tmp_path / "chunked",
                                     platform=bundler.host_platform(), compression="zstd", chunk_size="1M",
                                     pull="never", target_python="3.9")
            chunked = bundler.build(mirrored, plan)
            m_chunked = manifest.load_manifest(chunked)
            assert len(m_chunked["image_archive"]["parts"]) > 1
            assert [(i["ref"], i["id"]) for i in m_chunked["images"]] == [(i["ref"], i["id"]) for i in data["images"]]
            assert images_in(chunked, m_chunked) == whole
