"""Preflight's reading of what a release's compose file needs (pure: the real release trees, no engine)."""

from __future__ import annotations

from scripts.dify.project import ComposeProject
from scripts.host import preflight


def test_compose_needs_follow_the_features_each_release_uses(release_dir):
    needs, feature = preflight.compose_needs(release_dir / "docker-compose.yaml")
    layered = ComposeProject(release_dir).layered
    if layered:  # 1.14+: env_file entries with `required: false`
        assert needs == preflight.ENV_FILE_REQUIRED_COMPOSE and "env_file" in feature
    else:  # 1.11.3: depends_on `required: false`
        assert needs == preflight.REQUIRED_FALSE_COMPOSE and "depends_on" in feature
    assert needs >= preflight.REQUIRED_FALSE_COMPOSE


def test_a_plain_compose_file_needs_any_compose_v2(tmp_path):
    (tmp_path / "docker-compose.yaml").write_text("services:\n  a:\n    image: busybox\n    env_file: [a.env]\n")
    assert preflight.compose_needs(tmp_path / "docker-compose.yaml") == (None, "")
    assert preflight.compose_needs(tmp_path / "missing.yaml") == (None, "")
