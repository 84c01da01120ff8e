"""ComposeProject on every vendored Dify release: versions, env layers, staging (pure: no engine)."""

from __future__ import annotations

import re

import pytest
import yaml

from scripts.core.errors import AirgapError
from scripts.dify.project import (
    FULL,
    MIDDLEWARE,
    ComposeProject,
    load_compose_yaml,
    resolve_env_file,
    stack_mode,
)


def test_versions_come_from_the_compose_files_images(release_dir):
    project = ComposeProject(release_dir)
    text = (release_dir / "docker-compose.yaml").read_text()
    assert f"langgenius/dify-api:{project.dify_version}" in text
    assert release_dir.name == f"dify-{project.dify_version}"
    assert re.search(rf"langgenius/dify-plugin-daemon:{re.escape(project.daemon_version)}-local", text)


def test_env_layers_are_read_in_compose_order(release_dir):
    project = ComposeProject(release_dir)
    refs = project.env_files("api")
    if project.layered:
        assert project.env_examples() and all(p.startswith("envs/") for p in project.env_examples())
        assert refs[-1].path == ".env" and refs[-1].required, "./.env is listed last and required"
        assert all(not r.required for r in refs[:-1])
    else:
        assert not project.env_examples() and not any(r.path.startswith("envs/") for r in refs)


def test_staged_copy_has_the_env_file_as_dotenv_and_leaves_the_project_alone(release_dir, tmp_path):
    project = ComposeProject(release_dir)
    site = tmp_path / "site.env"
    site.write_text("VECTOR_STORE=qdrant\n")
    with project.staged(site) as staged:
        assert (staged / ".env").read_text() == "VECTOR_STORE=qdrant\n"
        assert (staged / "docker-compose.yaml").read_bytes() == (release_dir / "docker-compose.yaml").read_bytes()
        for rel in project.env_examples():
            assert (staged / rel).is_file()
    assert not staged.exists()
    assert not (release_dir / ".env").exists()


def test_a_file_that_is_not_a_compose_mapping_is_refused_by_name(tmp_path):
    (tmp_path / "docker-compose.yaml").write_text("- just\n- a list\n")
    with pytest.raises(AirgapError, match="docker-compose.yaml is not a compose file"):
        ComposeProject(tmp_path).services()


def test_the_middleware_stack_reads_its_own_file_and_example_on_every_release(release_dir, tmp_path):
    """1.11-1.13 keep middleware.env.example beside the compose file, 1.14+ under envs/; both read ./middleware.env."""
    example = MIDDLEWARE.example(release_dir)
    assert example.is_file() and example.name == "middleware.env.example"
    assert resolve_env_file(release_dir, mode=MIDDLEWARE) == example
    project = ComposeProject(release_dir, (MIDDLEWARE.compose_file,))
    assert {ref.path for svc in project.services() for ref in project.env_files(svc)} == {"middleware.env"}
    with project.staged(example) as staged:  # compose needs the required ./middleware.env to read the file
        assert (staged / "middleware.env").read_bytes() == example.read_bytes()
    assert stack_mode(True) == MIDDLEWARE and stack_mode("full") == FULL and stack_mode(None) == FULL
    with pytest.raises(AirgapError, match="unknown stack mode 'dev'"):
        stack_mode("dev")


def test_compose_yaml_understands_compose_merge_tags_and_refuses_any_other_tag():
    text = "services:\n  a:\n    extra_hosts: !override\n      - 'h:10.0.0.1'\n    ports: !reset []\n"
    assert load_compose_yaml(text) == {"services": {"a": {"extra_hosts": ["h:10.0.0.1"], "ports": None}}}
    for hostile in ("a: !!python/object/apply:os.system ['true']\n", "a: !include other.yaml\n"):
        with pytest.raises(yaml.YAMLError):
            load_compose_yaml(hostile)


def test_the_middleware_example_of_envs_wins_over_a_stale_top_level_one(tmp_path):
    """A 1.16 tree installed over a 1.11 one keeps the old top-level middleware.env.example (nothing is deleted)."""
    (tmp_path / "envs").mkdir()
    (tmp_path / "middleware.env.example").write_text("OLD=1\n")
    (tmp_path / "envs" / "middleware.env.example").write_text("NEW=1\n")
    assert MIDDLEWARE.example(tmp_path) == tmp_path / "envs" / "middleware.env.example"
    (tmp_path / "envs" / "middleware.env.example").unlink()
    assert MIDDLEWARE.example(tmp_path) == tmp_path / "middleware.env.example"
