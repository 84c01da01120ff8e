"""Compose v2 itself accepts what `invoke env` renders (no daemon needed for `compose config`), on every
Dify release: the EFFECTIVE configuration of each active service is what is asserted."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from scripts.dify.envfile import (
    PUBLIC_URL_KEYS,
    is_secret_key,
    read_env,
    render_env_file,
)
from scripts.dify.envsecrets import KNOWN_DEFAULT_SECRETS, group_keys
from scripts.dify.envsyntax import resolve_value
from tests.conftest import compose_config_text, release_fixture, writable_copy

pytestmark = pytest.mark.integration
IP = "10.0.0.5"


@pytest.fixture
def project(release_dir, tmp_path) -> Path:
    """A writable copy of a real Dify release's docker/ directory, with no .env of its own."""
    return writable_copy(release_dir, tmp_path / "docker")


def default_secret_left(project: Path, config: dict) -> list[str]:
    """Secrets of the active services that still hold a public default of the release as shipped: a
    well-known one, the key's own default for a key of a secret group (both ends of a connection), or
    any secret-named default of 24+ characters (a real key, like 1.16's DIFY_AGENT_SERVER_SECRET_KEY;
    short values and 'YOUR-...' are placeholders for external cloud services the stack does not run)."""
    own: dict[str, set[str]] = {}
    long_ones = set(KNOWN_DEFAULT_SECRETS)
    pairs: list[tuple[str, str]] = []
    for example in [project / ".env.example", *project.glob("envs/**/*.env.example")]:
        pairs += list(read_env(example).items())
    text = (project / "docker-compose.yaml").read_text()
    pairs += [(m.group(1), m.group(2)) for m in re.finditer(r"\$\{([A-Za-z_]\w*):?-([^}]+)\}", text)]
    for key, value in pairs:
        if value and is_secret_key(key):
            value = (urlsplit(value).password or "") if "://" in value else value
            own.setdefault(key, set()).add(value)
            if len(value) >= 24 and "your" not in value.lower():
                long_ones.add(value)
    left = []
    for (svc, key), value in effective_secrets(config).items():
        value = value.replace("$$", "$")
        if value in long_ones or (key in group_keys() and value in own.get(key, ())):
            left.append(f"{svc}: {key}")
    return sorted(left)


def effective_secrets(config: dict) -> dict[tuple[str, str], str]:
    """(service, key) -> value for every secret-named variable of every active service."""
    return {(name, key): str(value) for name, svc in config["services"].items()
            for key, value in (svc.get("environment") or {}).items() if value and is_secret_key(key)}


_config = compose_config_text


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


def test_no_default_secret_is_effective_in_any_active_service_and_reruns_keep_them(compose_engine, project):
    env_file = project / ".env"
    report = render_env_file(project, env_file, server_ip=IP)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    config = yaml.safe_load(_config(compose_engine, project, env_file, "--format", "json"))
    secrets = effective_secrets(config)
    assert secrets, "no secret reached any service: the check itself is broken"
    example_config = yaml.safe_load(_config(compose_engine, project, project / ".env.example", "--format", "json"))
    assert "api: SECRET_KEY" in default_secret_left(project, example_config) or \
        "db_postgres: POSTGRES_PASSWORD" in default_secret_left(project, example_config) or \
        "api: DB_PASSWORD" in default_secret_left(project, example_config), "the check finds nothing as shipped"
    left = default_secret_left(project, config)
    assert not left, f"public default secrets still effective: {left}"
    for name, svc in config["services"].items():
        env = svc.get("environment") or {}
        if "CONSOLE_API_URL" in env:
            assert env["CONSOLE_API_URL"] == f"http://{IP}", name
        if "MARKETPLACE_ENABLED" in env:
            assert env["MARKETPLACE_ENABLED"] == "false", name
    assert report.generated
    again = render_env_file(project, env_file, server_ip=IP)
    assert not again.generated and not again.changed
    rerun = yaml.safe_load(_config(compose_engine, project, env_file, "--format", "json"))
    assert effective_secrets(rerun) == secrets


#: A 1.11.3 site's customisations, most of which 1.16.0 moved out of .env.example into envs/**.
SITE_1113 = {"MAIL_TYPE": "smtp", "SMTP_SERVER": "mail.example.internal", "SMTP_PORT": "2525",
             "UPLOAD_FILE_SIZE_LIMIT": "30", "LOG_LEVEL": "WARNING", "MAIL_DEFAULT_SEND_FROM": "dify@example.internal"}


def test_upgrade_from_a_customised_1113_env_reaches_the_1160_services(compose_engine, tmp_path):
    old = writable_copy(release_fixture("1.11.3"), tmp_path / "old")
    site = tmp_path / "site.env"
    site.write_text("".join(f"{k}={v}\n" for k, v in SITE_1113.items()))
    render_env_file(old, old / ".env", server_ip=IP, site_file=site)
    old_env = read_env(old / ".env")
    new = writable_copy(release_fixture("1.16.0"), tmp_path / "new")
    report = render_env_file(new, new / ".env", upgrade_from=old / ".env", old_example=old / ".env.example")
    assert report.merge is not None
    config = yaml.safe_load(_config(compose_engine, new, new / ".env", "--format", "json"))
    api = config["services"]["api"]["environment"]
    for key, value in SITE_1113.items():
        assert api.get(key) == value, f"{key} did not reach the 1.16.0 api (placed: {report.placed.get(key)})"
    for key in ("SECRET_KEY", "DB_PASSWORD", "REDIS_PASSWORD", "PLUGIN_DAEMON_KEY"):
        assert api[key] == old_env[key], f"{key} was not kept across the upgrade"
    assert config["services"]["db_postgres"]["environment"]["POSTGRES_PASSWORD"] == old_env["DB_PASSWORD"]
    assert api["CONSOLE_API_URL"] == f"http://{IP}"
    assert any(key in report.placed for key in SITE_1113), "no key was reported as moved to the envs block"


def test_model_servers_reach_the_ssrf_proxys_allow_list_where_the_release_has_one(compose_engine, project):
    env_file = project / ".env"
    urls = ["http://10.0.0.7:11434", "http://vllm.corp.local:8000/v1", "http://10.0.0.7:8001"]
    report = render_env_file(project, env_file, server_ip=IP, model_servers=urls)
    config = yaml.safe_load(_config(compose_engine, project, env_file, "--format", "json"))
    proxy = config["services"]["ssrf_proxy"]["environment"]
    if "SSRF_PROXY_ALLOW_PRIVATE_IPS" in (project / "docker-compose.yaml").read_text():
        assert proxy["SSRF_PROXY_ALLOW_PRIVATE_IPS"] == "10.0.0.7"
        assert proxy["SSRF_PROXY_ALLOW_PRIVATE_DOMAINS"] == "vllm.corp.local"
        assert report.sources["SSRF_PROXY_ALLOW_PRIVATE_IPS"] == "model server"
    else:  # before 1.15 the proxy denies no private range: nothing to allow, and the operator is told
        assert not any("PRIVATE" in key for key in proxy)
        assert any("--model-server" in w and "nothing to allow" in w for w in report.warnings)
