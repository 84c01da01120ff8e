"""Planned images equal what `docker compose config --images` prints, on every real Dify release.

The project copies hold NO ``.env`` (as a fresh checkout or release download): the plan must work from
``.env.example`` alone, while the reference ``compose config`` gets ``.env.example`` copied to ``.env``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from scripts.core.errors import AirgapError
from scripts.dify.plan import plan_images
from scripts.dify.project import MIDDLEWARE, ComposeProject
from scripts.engine.client import Engine

from ..conftest import ROOT

pytestmark = pytest.mark.integration


def project_with(tmp_path, release_dir, **settings):
    """A copy of the real project (no .env) whose .env.example has ``settings`` replaced in place."""
    dest = tmp_path / "docker"
    shutil.copytree(release_dir, dest)
    lines = (dest / ".env.example").read_text().splitlines()
    for i, line in enumerate(lines):
        key = line.split("=", 1)[0]
        if key in settings:
            lines[i] = f"{key}={settings[key]}"
    (dest / ".env.example").write_text("\n".join(lines) + "\n")
    assert not (dest / ".env").exists()
    return dest


def compose_images(engine: Engine, project, profiles=None) -> set[str]:
    """The reference: compose itself on a throwaway copy with .env = .env.example."""
    ref = project.parent / f"{project.name}-reference"
    shutil.copytree(project, ref)
    shutil.copyfile(ref / ".env.example", ref / ".env")
    res = engine.compose_run(["config", "--images"], project_dir=str(ref), env_file=str(ref / ".env"),
                             profiles=profiles or [], mutates=False)
    shutil.rmtree(ref)
    assert res.stdout.strip(), f"compose printed no image: {res.stderr}"
    return set(res.stdout.split())


@pytest.mark.parametrize("settings", [
    {},
    {"VECTOR_STORE": "qdrant"},
    {"VECTOR_STORE": "milvus"},
    {"DB_TYPE": "mysql"},
    {"VECTOR_STORE": "pgvector", "DB_TYPE": "mysql"},
])
def test_plan_equals_compose_config_images(compose_engine, tmp_path, release_dir, settings):
    project = project_with(tmp_path, release_dir, **settings)
    plan = plan_images(compose_engine, project, project / ".env.example")
    assert set(plan.refs) == compose_images(compose_engine, project)
    assert len(plan.refs) == len(set(plan.refs))
    assert not (project / ".env").exists(), "planning wrote into the project"


def test_plan_names_the_release_and_its_daemon(compose_engine, release_dir):
    plan = plan_images(compose_engine, release_dir, release_dir / ".env.example")
    version = ComposeProject(release_dir).dify_version
    assert plan.dify_version == version and release_dir.name == f"dify-{version}"
    assert plan.services_for(f"langgenius/dify-api:{version}")[:1] == ["api"]
    assert {"worker", "worker_beat"} <= set(plan.services_for(f"langgenius/dify-api:{version}"))
    assert plan.daemon_version and f"langgenius/dify-plugin-daemon:{plan.daemon_version}-local" in plan.refs


def test_several_vector_stores_is_the_union(compose_engine, tmp_path, release_dir):
    union: set[str] = set()
    for store in ("weaviate", "qdrant", "milvus"):
        union |= compose_images(compose_engine, project_with(tmp_path / store, release_dir, VECTOR_STORE=store))
    plan = plan_images(compose_engine, release_dir, release_dir / ".env.example",
                       vector_stores=["qdrant", "milvus"])
    assert set(plan.refs) == union


def test_all_profiles_drops_build_only_service(compose_engine, tmp_path, release_dir):
    plan = plan_images(compose_engine, release_dir, release_dir / ".env.example", all_profiles=True)
    everything = compose_images(compose_engine, project_with(tmp_path, release_dir), profiles=["*"])
    assert plan.dropped_services == ["couchbase-server"]
    assert any("couchbase-server" in w and "build-only" in w for w in plan.warnings)
    built = everything - set(plan.refs)
    assert len(built) == 1 and "couchbase" in built.pop()


@pytest.mark.parametrize(("settings", "message"), [
    ({"DB_TYPE": "postgress"}, r"DB_TYPE='postgress' matches no database profile.*'postgresql'"),
    ({"VECTOR_STORE": "weavaite"}, r"VECTOR_STORE='weavaite' is not a vector store Dify knows.*'weaviate'"),
])
def test_a_store_name_with_no_profile_is_refused_with_the_valid_names(compose_engine, tmp_path, release_dir,
                                                                      settings, message):
    project = project_with(tmp_path, release_dir, **settings)
    with pytest.raises(AirgapError, match=message):
        plan_images(compose_engine, project, project / ".env.example")


def test_a_compose_error_is_named_never_an_empty_plan(compose_engine, tmp_path, release_dir):
    project = project_with(tmp_path, release_dir)
    text = (project / "docker-compose.yaml").read_text()
    (project / "docker-compose.yaml").write_text(text.replace("services:", "services:\n  broken: {image: [1, 2]}", 1))
    with pytest.raises(AirgapError, match="compose could not read the project|lists no service"):
        plan_images(compose_engine, project, project / ".env.example")


def _invoke(*args):
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_invoke_images_json_and_version_check(release_dir):
    res = _invoke("images", "--project-dir", str(release_dir), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["dify_version"] == release_dir.name.removeprefix("dify-")
    assert data["images"] and "postgresql" in data["profiles"]
    wrong = "0.0.1"
    res = _invoke("images", "--project-dir", str(release_dir), "--version", wrong)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"--version {wrong} does not match" in res.stderr and data["dify_version"] in res.stderr


def test_bundle_dry_run_names_the_release_the_compose_file_runs(release_dir, tmp_path):
    res = _invoke("bundle", "--project-dir", str(release_dir), "--dry-run", "--output", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    version = release_dir.name.removeprefix("dify-")
    assert f"dify-{version}-airgap-" in res.stdout and f"langgenius/dify-api:{version}" in res.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("db_type", ["postgresql", "mysql"])
def test_middleware_plan_equals_compose_config_of_the_middleware_file(compose_engine, tmp_path, release_dir, db_type):
    """--middleware plans docker-compose.middleware.yaml with the release's middleware example (envs/ on 1.14+):
    the same images compose itself lists for that file, the release still read from docker-compose.yaml."""
    project = tmp_path / "docker"
    shutil.copytree(release_dir, project)
    example = MIDDLEWARE.example(project)
    example.write_text(example.read_text().replace("DB_TYPE=postgresql", f"DB_TYPE={db_type}"))
    plan = plan_images(compose_engine, project, example, mode=MIDDLEWARE)
    ref = tmp_path / "reference"
    shutil.copytree(project, ref)
    shutil.copyfile(MIDDLEWARE.example(ref), ref / "middleware.env")
    res = compose_engine.compose_run(["config", "--images"], project_dir=str(ref), env_file=str(ref / "middleware.env"),
                                     files=[MIDDLEWARE.compose_file], mutates=False)
    assert set(plan.refs) == set(res.stdout.split()) and plan.refs
    assert plan.mode == "middleware" and plan.dify_version == ComposeProject(release_dir).dify_version
    assert not any(r.startswith(("langgenius/dify-api", "langgenius/dify-web", "nginx")) for r in plan.refs)
    assert any(r.startswith("mysql" if db_type == "mysql" else "postgres") for r in plan.refs)
    assert not (project / "middleware.env").exists(), "planning wrote into the project"
