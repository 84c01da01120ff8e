"""Stand-in planning: names, Docker Hub paths, recipes and the completed project (no engine)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from scripts import standins
from scripts.errors import AirgapError
from tests.conftest import FIXTURES


@pytest.mark.parametrize("ref, expected", [
    ("busybox:latest", "library/busybox:latest"),
    ("postgres:15-alpine", "library/postgres:15-alpine"),
    ("nginx", "library/nginx:latest"),
    ("langgenius/dify-api:1.11.3", "langgenius/dify-api:1.11.3"),
    ("docker.io/ubuntu/squid:latest", "ubuntu/squid:latest"),
    ("docker.io/library/redis:6-alpine", "library/redis:6-alpine"),
])
def test_hub_path(ref, expected):
    assert standins.hub_path(ref) == expected


def test_default_images_cover_the_real_default_profile():
    """The 10 images `config --images` lists for the default profiles, plus qdrant."""
    expected = {
        "langgenius/dify-api:1.11.3", "langgenius/dify-web:1.11.3", "postgres:15-alpine", "redis:6-alpine",
        "langgenius/dify-sandbox:0.2.12", "langgenius/dify-plugin-daemon:0.5.2-local", "ubuntu/squid:latest",
        "nginx:latest", "semitechnologies/weaviate:1.27.0", "busybox:latest",
    }
    images = standins.default_images()
    assert expected <= set(images)
    assert "langgenius/qdrant:v1.8.3" in images
    compose = (FIXTURES / "docker-compose.yaml").read_text()
    for ref in expected:
        assert f"image: {ref}" in compose


def test_every_default_image_has_a_recipe_with_the_label_digest():
    digests = {ref: standins.recipe_digest(ref) for ref in standins.default_images()}
    assert len(set(digests.values())) == len(digests)
    assert standins.recipe_digest("langgenius/dify-api:1.11.3") != standins.recipe_digest("langgenius/dify-api:1.12.0")


def test_unknown_image_has_no_recipe():
    with pytest.raises(AirgapError, match="no stand-in recipe"):
        standins.recipe_for("mysql:8.0")


def test_shell_scripts_parse():
    """Every stand-in script is valid POSIX sh (busybox ash runs them)."""
    for ref in standins.default_images():
        recipe = standins.recipe_for(ref)
        for path, text in standins._all_files(ref, recipe).items():
            if text.startswith("#!/bin/sh"):
                res = subprocess.run(["sh", "-n"], input=text, text=True, capture_output=True)
                assert res.returncode == 0, f"{ref} {path}: {res.stderr}"


def test_complete_project_has_every_bind_source(tmp_path):
    dest = standins.complete_project(tmp_path / "docker", fixture=FIXTURES)
    for rel in ("docker-compose.yaml", ".env.example", "nginx/conf.d/default.conf.template",
                "nginx/docker-entrypoint.sh", "ssrf_proxy/docker-entrypoint.sh", "ssrf_proxy/squid.conf.template",
                "volumes/sandbox/conf/config.yaml", "volumes/sandbox/dependencies/python-requirements.txt"):
        assert (dest / rel).is_file(), rel
    assert os.access(dest / "nginx/docker-entrypoint.sh", os.X_OK)
    assert not (dest / "SOURCE.txt").exists()
    assert (dest / "docker-compose.yaml").read_bytes() == (FIXTURES / "docker-compose.yaml").read_bytes()


def test_default_fixture_is_vendored_with_its_source_note():
    for version in ("1.11.3", "1.16.0"):
        fixture = standins.default_fixture(version)
        assert fixture.is_relative_to(Path(standins.__file__).resolve().parents[1] / "tests" / "fixtures")
        assert (fixture / "docker-compose.yaml").is_file() and (fixture / "SOURCE.txt").is_file()
