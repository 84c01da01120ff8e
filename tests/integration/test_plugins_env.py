"""The plugin daemon settings that keep plugin installs offline reach the plugin_daemon container: the
EFFECTIVE `docker compose config` of Dify 1.16.0 (daemon 0.6.3) after `invoke env`'s rendering."""

from __future__ import annotations

import pytest
import yaml

from scripts.dify.envfile import TEMPLATES_DIR, read_env, render_env_file
from scripts.plugins import daemon as plugin_daemon
from scripts.plugins import repackage as plugins

from ..conftest import compose_config_text, release_fixture, writable_copy

pytestmark = pytest.mark.integration


def daemon_env(engine, project, env_file) -> dict:
    config = yaml.safe_load(compose_config_text(engine, project, env_file, "--format", "json"))
    return config["services"]["plugin_daemon"]["environment"]


def test_offline_template_keeps_signatures_on_and_disables_mirror_detection():
    template = {**read_env(TEMPLATES_DIR / "offline.env"), **read_env(TEMPLATES_DIR / "passthrough.env")}
    assert template["PIP_MIRROR_AUTO_DETECT"] == "false"
    assert template["FORCE_VERIFYING_SIGNATURE"] == "true"
    assert "PIP_EXTRA_ARGS" not in template            # --offline would break a site's internal mirror
    assert plugins.daemon_install("0.6.3", {"requirements.txt"}, template, {}).notes == []


def test_site_setting_reaches_plugin_daemon_on_1_16(compose_engine, tmp_path):
    project = writable_copy(release_fixture("1.16.0"), tmp_path / "docker")
    assert plugin_daemon.daemon_version_from_compose(project / "docker-compose.yaml") == "0.6.3"
    env_file = project / ".env"
    render_env_file(project, env_file, server_ip="10.0.0.5", overrides={"PIP_MIRROR_AUTO_DETECT": "false"})
    env = daemon_env(compose_engine, project, env_file)
    assert env["PIP_MIRROR_AUTO_DETECT"] == "false"
    assert env["FORCE_VERIFYING_SIGNATURE"] == "true" and env["PIP_MIRROR_URL"] == ""
    assert env["PYTHON_ENV_INIT_TIMEOUT"] == "600"        # offline.env: slow disks


def test_offline_templates_alone_set_mirror_detection_off_where_the_daemon_gets_dotenv(compose_engine, tmp_path,
                                                                                      release_dir):
    """PIP_MIRROR_AUTO_DETECT is declared by no example of 1.16.0: env-templates/passthrough.env writes it to .env
    for releases whose services get .env whole (1.14+); on 1.11.3 (interpolation only) it could reach nobody."""
    project = writable_copy(release_dir, tmp_path / "docker")
    env_file = project / ".env"
    report = render_env_file(project, env_file, server_ip="10.0.0.5")
    env = daemon_env(compose_engine, project, env_file)
    if "./.env" in (project / "docker-compose.yaml").read_text():
        assert env.get("PIP_MIRROR_AUTO_DETECT") == "false"
        assert report.sources["PIP_MIRROR_AUTO_DETECT"] == "template passthrough.env"
        assert not any("PIP_MIRROR_AUTO_DETECT" in w for w in report.warnings)
    else:
        assert "PIP_MIRROR_AUTO_DETECT" not in env and "PIP_MIRROR_AUTO_DETECT" not in read_env(env_file)
    assert env["FORCE_VERIFYING_SIGNATURE"] == "true"
