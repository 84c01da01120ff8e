"""Small compose projects with fresh local images and bundles built from them (real engines; not a test module).

Shared by test_bundle, test_archive and test_push.
"""

from __future__ import annotations

from scripts.bundle import build as bundler
from scripts.dify import plan as compose_plan
from tests.lab import host as lab


def one_image_project(engine, tracker, tmp_path, prefix, extra_services=""):
    """A compose project with one fresh busybox image (service ``x``) plus ``extra_services`` YAML."""
    ref = tracker.image(engine, f"localhost/{tracker.name(prefix)}:1")
    lab.make_busybox_image(engine, ref, files={"/data/x": "payload" * 200_000})
    proj = tmp_path / "docker"
    proj.mkdir()
    (proj / "docker-compose.yaml").write_text(f"services:\n  x:\n    image: {ref}\n{extra_services}")
    (proj / ".env.example").write_text("A=1\n")
    return proj


def build(engine, proj, out, **kwargs):
    image_plan = compose_plan.plan_images(engine, proj, proj / ".env.example")
    settings = dict(version="1.11.3", project_dir=proj, output=out, platform=bundler.host_platform(),
                    compression="zstd", chunk_size=None, pull="never", target_python="3.9")
    settings.update(kwargs)
    return bundler.build(engine, bundler.make_plan(image_plan, **settings))
