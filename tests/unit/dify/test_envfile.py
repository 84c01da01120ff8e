"""invoke env: rendering, secrets, validation and upgrade merge on Dify 1.11.3's real .env.example."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from invoke import Context, Exit

from scripts.core import files
from scripts.core.errors import AirgapError, BadInput
from scripts.core.resources import TEMPLATES_DIR
from scripts.dify import envcheck, envfile, envsecrets
from scripts.dify.envfile import (
    PUBLIC_URL_KEYS,
    SECRET_GROUPS,
    parse_lines,
    read_env,
    render_env_file,
)
from scripts.dify.envmerge import merge_upgrade
from scripts.dify.envsecrets import KNOWN_DEFAULT_SECRETS
from scripts.dify.envsyntax import resolve_value
from scripts.dify.project import middleware_example

ROOT = Path(__file__).resolve().parents[3]
IP = "10.0.0.5"


def secrets_of(env: dict) -> dict[str, str]:
    return {k: env[k] for g in SECRET_GROUPS for k in g.keys if k in env}


def skeleton(path: Path) -> list[str]:
    """The sequence of keys and comment lines: what 'order and comments preserved' means."""
    return [line.key or line.raw for line in parse_lines(path.read_text()) if line.key or line.raw.startswith("#")]


@pytest.fixture
def rendered(fixture_dir, tmp_path) -> tuple[Path, envfile.EnvReport]:
    out = tmp_path / ".env"
    return out, render_env_file(fixture_dir, out, server_ip=IP)


@pytest.fixture
def example(fixture_dir) -> dict[str, str]:
    return read_env(fixture_dir / ".env.example")


def test_every_public_default_secret_is_gone(rendered, example):
    out, report = rendered
    env = read_env(out)
    defaults = envfile.known_defaults(example)
    linked = envsecrets.group_keys()
    # the example really ships these (the list is derived from the file, not assumed)
    assert {"difyai123456", "dify-sandbox", example["PLUGIN_DAEMON_KEY"], example["WEAVIATE_API_KEY"],
            example["SECRET_KEY"], example["PLUGIN_DIFY_INNER_API_KEY"]} <= defaults
    for key, value in env.items():
        if key in envsecrets.FIXED_DEFAULTS:
            continue  # hard-coded server side upstream; reported as a warning when that store is chosen
        if key in linked or key == "CELERY_BROKER_URL":  # not all: 'admin' is also a user name
            assert value not in defaults, key
            assert urlsplit(value).password not in defaults, key
        for default in defaults | KNOWN_DEFAULT_SECRETS:
            if len(default) >= 12:
                assert default not in value, key
    assert set(report.generated) == set(secrets_of(env))
    assert all(len(v) >= 32 for v in secrets_of(env).values())


def test_linked_secrets_are_equal(rendered):
    env = read_env(rendered[0])
    for group in SECRET_GROUPS:  # groups of later releases are absent from older ones
        assert len({env[k] for k in group.keys if k in env}) == (1 if any(k in env for k in group.keys) else 0)
    assert env["SANDBOX_API_KEY"] == env["CODE_EXECUTION_API_KEY"]
    assert env["WEAVIATE_API_KEY"] == env["WEAVIATE_AUTHENTICATION_APIKEY_ALLOWED_KEYS"]
    assert env["CELERY_BROKER_URL"] == f"redis://:{env['REDIS_PASSWORD']}@redis:6379/1"
    assert len({env["SECRET_KEY"], env["DB_PASSWORD"], env["REDIS_PASSWORD"], env["PLUGIN_DAEMON_KEY"]}) == 4


def test_urls_all_on_the_server_ip_and_internal_ones_untouched(rendered, example):
    env = read_env(rendered[0])
    for key in PUBLIC_URL_KEYS:
        assert env[key] == f"http://{IP}", key
    assert env["ENDPOINT_URL_TEMPLATE"] == f"http://{IP}/e/{{hook_id}}"
    assert env["EXPOSE_PLUGIN_DEBUGGING_HOST"] == IP
    for key in ("PLUGIN_DAEMON_URL", "PLUGIN_DIFY_INNER_API_URL", "CODE_EXECUTION_ENDPOINT", "WEAVIATE_ENDPOINT",
                "SSRF_PROXY_HTTP_URL", "INTERNAL_FILES_URL", "QDRANT_URL"):
        assert env[key] == example[key], key


def test_base_url_and_nginx_port(fixture_dir, tmp_path):
    out = tmp_path / ".env"
    render_env_file(fixture_dir, out, base_url="https://dify.example.local/")
    assert read_env(out)["CONSOLE_WEB_URL"] == "https://dify.example.local"
    render_env_file(fixture_dir, out, server_ip=IP, overrides={"EXPOSE_NGINX_PORT": "8080"})
    env = read_env(out)
    assert env["FILES_URL"] == f"http://{IP}:8080" and env["ENDPOINT_URL_TEMPLATE"] == f"http://{IP}:8080/e/{{hook_id}}"
    with pytest.raises(AirgapError, match="not both"):
        render_env_file(fixture_dir, out, server_ip=IP, base_url="http://x")
    with pytest.raises(AirgapError, match="neither an IP"):
        render_env_file(fixture_dir, out, server_ip="10.0.0.5; rm -rf /")


def test_order_and_comments_preserved(rendered, fixture_dir):
    assert skeleton(rendered[0]) == skeleton(fixture_dir / ".env.example")


def test_vector_store_override_lands_in_place(fixture_dir, tmp_path):
    out = tmp_path / ".env"
    render_env_file(fixture_dir, out, server_ip=IP, overrides={"VECTOR_STORE": "qdrant"})
    keys = [line.key for line in parse_lines(out.read_text()) if line.key]
    assert keys.count("VECTOR_STORE") == 1
    assert keys.index("VECTOR_STORE") < keys.index("COMPOSE_PROFILES")
    assert resolve_value(read_env(out), "COMPOSE_PROFILES") == "qdrant,postgresql"


def test_resolve_value_reads_top_to_bottom():
    env = envfile.env_from_lines(parse_lines("COMPOSE_PROFILES=${VECTOR_STORE:-weaviate},${DB_TYPE:-postgresql}\n"
                                             "VECTOR_STORE=qdrant\n"))
    assert resolve_value(env, "COMPOSE_PROFILES") == "weaviate,postgresql"  # appended too late
    env = envfile.env_from_lines(parse_lines("VECTOR_STORE=qdrant\nDB_TYPE=\nA='${VECTOR_STORE}'\n"
                                             "COMPOSE_PROFILES=${VECTOR_STORE:-weaviate},${DB_TYPE:-postgresql}\n"))
    assert resolve_value(env, "COMPOSE_PROFILES") == "qdrant,postgresql"
    assert resolve_value(env, "A") == "${VECTOR_STORE}"  # single quotes: literal
    assert resolve_value(env, "COMPOSE_PROFILES", environ={"VECTOR_STORE": "milvus"}) == "milvus,postgresql"


def test_site_addition_goes_last_and_profile_reference_warns(fixture_dir, tmp_path):
    site = tmp_path / "site.env"
    site.write_text("COMPOSE_PROFILES=${VECTOR_STORE:-weaviate},${DB_TYPE:-postgresql},${EXTRA_PROFILE:-}\n"
                    "EXTRA_PROFILE=unstructured\n")
    out = tmp_path / ".env"
    report = render_env_file(fixture_dir, out, server_ip=IP, site_file=site)
    text = out.read_text()
    assert text.index("# Site additions") < text.index("EXTRA_PROFILE=unstructured")
    assert skeleton(out)[:len(skeleton(fixture_dir / ".env.example"))] == skeleton(fixture_dir / ".env.example")
    assert report.added == ["EXTRA_PROFILE"]
    assert any("EXTRA_PROFILE" in w and "COMPOSE_PROFILES" in w for w in report.warnings)


def test_file_mode_0600_and_no_temp_left(rendered):
    out, _ = rendered
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in out.parent.iterdir()] == [".env"]


def test_second_run_keeps_secrets_regenerate_changes_them(rendered, fixture_dir):
    out, _ = rendered
    first = secrets_of(read_env(out))
    report = render_env_file(fixture_dir, out, server_ip=IP)
    assert secrets_of(read_env(out)) == first
    assert report.generated == [] and set(report.kept) == set(first)
    render_env_file(fixture_dir, out, server_ip=IP, regenerate_secrets=True)
    again = secrets_of(read_env(out))
    assert all(again[k] != first[k] for k in first)


def test_dry_run_writes_nothing(fixture_dir, tmp_path):
    out = tmp_path / ".env"
    report = render_env_file(fixture_dir, out, server_ip=IP, dry_run=True)
    assert not out.exists() and not report.written and "VECTOR_STORE" not in report.changed
    assert "FILES_URL" in report.changed and "SECRET_KEY" in report.changed


def test_typo_is_refused_with_suggestion(fixture_dir, tmp_path):
    out = tmp_path / ".env"
    with pytest.raises(AirgapError, match="VECTOR_STROE.*did you mean VECTOR_STORE"):
        render_env_file(fixture_dir, out, overrides={"VECTOR_STROE": "qdrant"})
    site = tmp_path / "site.env"
    site.write_text("REDIS_PASWORD=abc\n")
    with pytest.raises(AirgapError, match="REDIS_PASWORD.*did you mean REDIS_PASSWORD"):
        render_env_file(fixture_dir, out, site_file=site)
    with pytest.raises(AirgapError, match="VECTOR_STORE=qdrnt.*did you mean qdrant"):
        render_env_file(fixture_dir, out, overrides={"VECTOR_STORE": "qdrnt"})
    assert not out.exists()


@pytest.mark.parametrize("key, value", [
    ("DB_PASSWORD", "difyai123456"),
    ("SANDBOX_API_KEY", "dify-sandbox"),
    ("PLUGIN_DAEMON_KEY", "lYkiYYT6owG+71oLerGzA7GXCgOT++6ovaezWAjpCjf+Sjc3ZtU+qUEi"),
])
def test_default_secret_left_is_refused_naming_the_key(fixture_dir, tmp_path, key, value):
    site = tmp_path / "site.env"
    site.write_text(f"{key}={value}\n")
    with pytest.raises(AirgapError, match=f"{key} still holds a public default"):
        render_env_file(fixture_dir, tmp_path / ".env", site_file=site)


def test_supplied_secret_fills_linked_keys_and_conflicts_are_refused(fixture_dir, tmp_path):
    site = tmp_path / "site.env"
    site.write_text("SANDBOX_API_KEY=our-own-sandbox-key-42\nDB_PASSWORD='pa$s w#rd'\n")
    out = tmp_path / ".env"
    report = render_env_file(fixture_dir, out, site_file=site, overrides={"QDRANT_API_KEY": "cli-qdrant-key-42"})
    env = read_env(out)
    assert env["CODE_EXECUTION_API_KEY"] == env["SANDBOX_API_KEY"] == "our-own-sandbox-key-42"
    assert env["DB_PASSWORD"] == "pa$s w#rd"
    assert resolve_value(env, "DB_PASSWORD") == "pa$s w#rd"  # quoted so compose does not interpolate it
    assert report.status("CODE_EXECUTION_API_KEY") == "from site file"
    assert report.status("QDRANT_API_KEY") == "from command line"
    site.write_text("SANDBOX_API_KEY=one-value-1234\nCODE_EXECUTION_API_KEY=other-value-1234\n")
    with pytest.raises(AirgapError, match="must be equal"):
        render_env_file(fixture_dir, out, site_file=site)


def test_inconsistent_pairs_are_refused(fixture_dir, tmp_path):
    out = tmp_path / ".env"
    with pytest.raises(AirgapError, match="DB_TYPE=mysql but DB_HOST=db_postgres"):
        render_env_file(fixture_dir, out, overrides={"DB_TYPE": "mysql"})
    with pytest.raises(AirgapError, match="VECTOR_STORE=milvus needs MILVUS_URI"):
        render_env_file(fixture_dir, out, overrides={"VECTOR_STORE": "milvus", "MILVUS_URI": ""})
    with pytest.raises(AirgapError, match="PLUGIN_MAX_PACKAGE_SIZE=1073741824 allows more than"):
        render_env_file(fixture_dir, out, overrides={"PLUGIN_MAX_PACKAGE_SIZE": "1073741824"})
    with pytest.raises(AirgapError, match="STORAGE_TYPE is required"):
        render_env_file(fixture_dir, out, overrides={"STORAGE_TYPE": ""})
    render_env_file(fixture_dir, out, overrides={"DB_TYPE": "mysql", "DB_HOST": "db_mysql", "DB_PORT": "3306",
                                                 "DB_USERNAME": "root"})
    assert resolve_value(read_env(out), "COMPOSE_PROFILES") == "weaviate,mysql"


def test_offline_template_sizes_are_consistent(rendered):
    env = read_env(rendered[0])
    assert env["MARKETPLACE_ENABLED"] == "false"
    assert envcheck.nginx_size(env["NGINX_CLIENT_MAX_BODY_SIZE"]) >= int(env["PLUGIN_MAX_PACKAGE_SIZE"]) > 52428800


def _old_example(fixture_dir: Path, tmp_path: Path) -> Path:
    """Dify 'N-1': the real example with a key that N adds removed, a default changed and a key N drops."""
    text = (fixture_dir / ".env.example").read_text()
    assert "INTERNAL_FILES_URL=\n" in text and "SQLALCHEMY_POOL_SIZE=30\n" in text
    text = text.replace("INTERNAL_FILES_URL=\n", "")                          # N adds INTERNAL_FILES_URL
    text = text.replace("SQLALCHEMY_POOL_SIZE=30\n", "SQLALCHEMY_POOL_SIZE=20\n")  # default 20 -> 30
    text = text.replace("SQLALCHEMY_MAX_OVERFLOW=10\n", "SQLALCHEMY_MAX_OVERFLOW=5\n")  # default 5 -> 10
    text = text.replace("VECTOR_STORE=weaviate\n", "VECTOR_STORE=weaviate\nLEGACY_VECTOR_OPTION=on\n"
                        "LEGACY_UNTOUCHED=1\n")                                # N drops these
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    (old_dir / ".env.example").write_text(text)
    return old_dir / ".env.example"


def test_three_way_merge_between_two_example_versions(fixture_dir, tmp_path):
    old_example = _old_example(fixture_dir, tmp_path)
    old_env = tmp_path / "old" / ".env"
    render_env_file(old_example.parent, old_env, server_ip=IP,
                    overrides={"VECTOR_STORE": "qdrant", "LEGACY_VECTOR_OPTION": "off",
                               "SQLALCHEMY_MAX_OVERFLOW": "7", "MY_SITE_KEY": "x"})
    old = read_env(old_env)

    text, report = merge_upgrade(old_env, old_example, fixture_dir / ".env.example")
    merged = envfile.env_from_lines(parse_lines(text))
    assert merged["VECTOR_STORE"] == "qdrant" and merged["FILES_URL"] == f"http://{IP}"
    assert secrets_of(merged) == secrets_of(old)                       # user values kept
    assert "INTERNAL_FILES_URL" in merged and "INTERNAL_FILES_URL" in report.added
    assert "LEGACY_VECTOR_OPTION" in report.removed and "LEGACY_UNTOUCHED" in report.removed
    assert report.removed_customised == ["LEGACY_VECTOR_OPTION"]
    assert "# LEGACY_VECTOR_OPTION=off" in text and "LEGACY_UNTOUCHED" not in merged
    assert {"key": "SQLALCHEMY_POOL_SIZE", "old": "20", "new": "30", "secret": False} in report.default_changed
    assert merged["SQLALCHEMY_POOL_SIZE"] == "30"
    assert [c["key"] for c in report.conflicts] == ["SQLALCHEMY_MAX_OVERFLOW"]
    assert merged["SQLALCHEMY_MAX_OVERFLOW"] == "7"
    assert report.extras == ["MY_SITE_KEY"] and merged["MY_SITE_KEY"] == "x"
    assert all(old[k] not in "\n".join(report.lines()) for k in secrets_of(old))

    # the same through the renderer: secrets of the old install survive, templates still apply
    out = tmp_path / "new.env"
    env_report = render_env_file(fixture_dir, out, upgrade_from=old_env, old_example=old_example)
    new = read_env(out)
    assert secrets_of(new) == secrets_of(old) and env_report.generated == []
    assert new["VECTOR_STORE"] == "qdrant" and new["SQLALCHEMY_POOL_SIZE"] == "30"
    assert env_report.merge is not None and "LEGACY_VECTOR_OPTION" in env_report.merge.removed
    with pytest.raises(AirgapError, match="--old-example"):
        render_env_file(fixture_dir, out, upgrade_from=old_env)


def test_an_upgrade_never_lets_a_changed_upstream_default_undo_a_template(fixture_dir, tmp_path):
    """#15: the user kept the old upstream default (20), upstream changed it (30), the site's offline template says
    50: the template wins, as on a fresh install; the merge report still names the changed default."""
    old_example = _old_example(fixture_dir, tmp_path)
    old_env = tmp_path / "old" / ".env"
    render_env_file(old_example.parent, old_env, server_ip=IP)
    assert read_env(old_env)["SQLALCHEMY_POOL_SIZE"] == "20"
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    (templates / "site-pool.env").write_text("SQLALCHEMY_POOL_SIZE=50\n")
    out = tmp_path / "new.env"
    report = render_env_file(fixture_dir, out, upgrade_from=old_env, old_example=old_example, templates_dir=templates)
    assert read_env(out)["SQLALCHEMY_POOL_SIZE"] == "50"
    assert [d["key"] for d in report.merge.default_changed if d["key"] == "SQLALCHEMY_POOL_SIZE"]


def test_middleware_render(release_dir, tmp_path):
    """Every release: 1.11.x keeps middleware.env.example beside the compose file, 1.14+ under envs/."""
    out = tmp_path / "middleware.env"
    report = render_env_file(release_dir, out, server_ip=IP, middleware=True)
    source = middleware_example(release_dir)
    assert source.is_file() and source.parent.name == ("envs" if (release_dir / "envs").is_dir() else release_dir.name)
    env = read_env(out)
    example = read_env(source)
    defaults = envfile.known_defaults(example)
    assert not any(v in defaults for v in env.values())
    assert env["WEAVIATE_AUTHENTICATION_APIKEY_ALLOWED_KEYS"] not in defaults
    assert env["ENDPOINT_URL_TEMPLATE"] == f"http://{IP}:5002/e/{{hook_id}}"
    assert env["MARKETPLACE_ENABLED"] == "false" and "NGINX_CLIENT_MAX_BODY_SIZE" not in env
    assert skeleton(out) == skeleton(source)
    assert out.read_text().count("PLUGIN_WORKING_PATH=") == source.read_text().count("PLUGIN_WORKING_PATH=")
    assert any("api/.env" in w for w in report.warnings)


def _secret_values(path: Path) -> list[str]:
    return [v for k, v in read_env(path).items() if envfile.is_secret_key(k) and len(v) >= 8]


def test_task_never_prints_secrets(fixture_dir, tmp_path, capsys, caplog):
    from tasks import env as env_task

    out = tmp_path / ".env"
    env_task(Context(), project_dir=str(fixture_dir), out=str(out), server_ip=IP, set_=["VECTOR_STORE=qdrant"])
    env_task(Context(), project_dir=str(fixture_dir), out=str(out), server_ip=IP, json_=True)
    env_task(Context(), project_dir=str(fixture_dir), out=str(out), dry_run=True, regenerate_secrets=True)
    captured = capsys.readouterr()
    printed = captured.out + captured.err + caplog.text
    assert "generated" in printed and "kept" in printed and str(out) in printed
    values = _secret_values(out)
    assert len(values) >= 20
    for value in values:
        assert value not in printed
    with pytest.raises(Exit, match="did you mean VECTOR_STORE"):
        env_task(Context(), project_dir=str(fixture_dir), out=str(out), set_=["VECTOR_STROE=qdrant"])


def test_invoke_env_subprocess(fixture_dir, tmp_path):
    out = tmp_path / "sub" / ".env"
    res = subprocess.run([sys.executable, "-m", "invoke", "env", "--project-dir", str(fixture_dir),
                          "--server-ip", IP, "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    assert read_env(out)["CONSOLE_WEB_URL"] == f"http://{IP}"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    for value in _secret_values(out):
        assert value not in res.stdout + res.stderr


@pytest.mark.parametrize("failure, raised", [(OSError(28, "No space left on device"), BadInput),
                                             (KeyboardInterrupt(), KeyboardInterrupt)])
def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch, failure, raised):
    """A failure mid-write (disk full: a named error; Ctrl-C: re-raised) keeps the old file and no temp file."""
    target = tmp_path / ".env"
    target.write_text("OLD=1\n")

    def fail(fd):
        raise failure
    monkeypatch.setattr(files.os, "fsync", fail)
    with pytest.raises(raised) as err:
        envfile.write_atomic(target, "NEW=2\n")
    if raised is BadInput:
        assert str(target) in str(err.value) and "No space left" in str(err.value)
    assert target.read_text() == "OLD=1\n"
    assert [p.name for p in tmp_path.iterdir()] == [".env"]


def test_store_warnings_and_malformed_set(fixture_dir, tmp_path):
    out = tmp_path / ".env"
    report = render_env_file(fixture_dir, out, server_ip=IP, overrides={"VECTOR_STORE": "lindorm"})
    assert any("LINDORM_PASSWORD" in w and "placeholder" in w for w in report.warnings)
    report = render_env_file(fixture_dir, out, server_ip=IP, overrides={"VECTOR_STORE": "vastbase"})
    assert any("VASTBASE_PASSWORD" in w for w in report.warnings)
    report = render_env_file(fixture_dir, out)
    assert any("public URLs are empty" in w for w in report.warnings)
    with pytest.raises(AirgapError, match="not KEY=VALUE"):
        envfile.parse_overrides(["VECTOR_STORE"])
    assert envfile.parse_overrides(["A=b=c", "B="]) == {"A": "b=c", "B": ""}


def test_model_server_urls_become_the_ssrf_allow_lists():
    got = envfile.model_server_settings(["http://10.0.0.7:11434", "https://llm.corp:8443/v1", "http://10.0.0.7:1"],
                                        {"SSRF_PROXY_ALLOW_PRIVATE_IPS": "10.9.9.9"})
    assert got == {"SSRF_PROXY_ALLOW_PRIVATE_IPS": "10.9.9.9,10.0.0.7",
                   "SSRF_PROXY_ALLOW_PRIVATE_DOMAINS": "llm.corp"}
    for bad in ("10.0.0.7", "ftp://10.0.0.7", "http://"):
        with pytest.raises(AirgapError, match="--model-server .* is not an http\\(s\\) URL"):
            envfile.model_server_settings([bad], {})


def test_public_example_values_of_every_layer_are_never_registered_as_secrets(release_dir, tmp_path):
    """1.16.0's envs/security.env.example has TIDB_ON_QDRANT_API_KEY=dify: registering it redacted every 'dify'
    in the toolkit's output ('***-airgap'). Only values the site or the generator supplied are secrets."""
    from scripts.core import console

    project = tmp_path / "docker"
    shutil.copytree(release_dir, project, copy_function=shutil.copyfile)
    before = set(console._SECRETS)
    render_env_file(project, project / ".env", server_ip=IP)
    added = console._SECRETS - before
    assert added, "generated secrets must be registered"
    assert "dify" not in added and all(len(v) >= 24 for v in added), sorted(len(v) for v in added)
    assert console.redact("dify-airgap install /tmp/dify images.tar") == "dify-airgap install /tmp/dify images.tar"


# --- external services (#15 item 6) ---------------------------------------------------------------------------

def _site(tmp_path: Path, text: str) -> Path:
    site = tmp_path / "site.env"
    site.write_text(text)
    return site


def test_an_external_database_and_redis_keep_the_sites_passwords_and_leave_the_local_db_out(release_dir, tmp_path):
    """Every release: DB_HOST/REDIS_HOST outside the stack -> postgres' profile leaves COMPOSE_PROFILES (the vector
    store's and the others stay, as written), the site's passwords are used as given, celery goes to that redis."""
    site = _site(tmp_path, "DB_HOST=10.0.0.9\nDB_PORT=15432\nDB_PASSWORD=site-db-pass-1\n"
                           "REDIS_HOST=redis.site.local\nREDIS_PASSWORD=site-redis-pass\n")
    out = tmp_path / ".env"
    report = render_env_file(release_dir, out, server_ip=IP, site_file=site)
    env = read_env(out)
    profiles = resolve_value(env, "COMPOSE_PROFILES").split(",")
    assert "postgresql" not in profiles and "weaviate" in profiles, profiles
    assert "${VECTOR_STORE:-weaviate}" in env["COMPOSE_PROFILES"]          # the other items keep their form
    assert env["DB_PASSWORD"] == "site-db-pass-1" and "DB_PASSWORD" not in report.generated
    assert env["REDIS_PASSWORD"] == "site-redis-pass" and "REDIS_PASSWORD" not in report.generated
    broker = urlsplit(env["CELERY_BROKER_URL"])
    assert (broker.hostname, broker.port, broker.password) == ("redis.site.local", 6379, "site-redis-pass")
    assert any("external database at 10.0.0.9:15432" in n and "profile postgresql dropped" in n for n in report.notes)
    assert any("external redis at redis.site.local:6379" in n and "still starts" in n for n in report.notes)
    assert not any("postgresql container will not start" in w for w in report.warnings), report.warnings
    # a re-run without the site file keeps the passwords it was given (they are in .env now)
    again = render_env_file(release_dir, out, server_ip=IP, site_file=_site(tmp_path, "DB_HOST=10.0.0.9\n"))
    assert read_env(out)["DB_PASSWORD"] == "site-db-pass-1" and "DB_PASSWORD" not in again.generated


def test_an_external_server_without_its_password_is_refused_naming_key_and_server(release_dir, tmp_path):
    site = _site(tmp_path, "DB_HOST=db.site.local\nREDIS_HOST=10.0.0.10\nREDIS_PASSWORD=site-redis-pass\n")
    with pytest.raises(AirgapError) as caught:
        render_env_file(release_dir, tmp_path / ".env", server_ip=IP, site_file=site)
    message = str(caught.value)
    assert "DB_PASSWORD: the database is external (db.site.local:5432)" in message
    assert "REDIS_PASSWORD" not in message            # the site gave that one
    assert not (tmp_path / ".env").exists()


def test_an_external_vector_store_drops_its_profile(release_dir, tmp_path):
    site = _site(tmp_path, "VECTOR_STORE=qdrant\nQDRANT_URL=http://10.0.0.11:6333\n")
    out = tmp_path / ".env"
    report = render_env_file(release_dir, out, server_ip=IP, site_file=site)
    profiles = resolve_value(read_env(out), "COMPOSE_PROFILES").split(",")
    assert "qdrant" not in profiles and "postgresql" in profiles, profiles
    assert any("external vector store qdrant at 10.0.0.11:6333" in n for n in report.notes)


def test_the_stacks_own_services_are_not_external(release_dir, tmp_path):
    out = tmp_path / ".env"
    report = render_env_file(release_dir, out, server_ip=IP,
                             site_file=_site(tmp_path, "VECTOR_STORE=qdrant\nDB_HOST=db_postgres\n"))
    assert report.notes == [] and "qdrant" in resolve_value(read_env(out), "COMPOSE_PROFILES").split(",")


def test_the_examples_own_docker_host_endpoints_are_not_external(release_dir, tmp_path):
    """MILVUS_URI=http://host.docker.internal:19530 and ELASTICSEARCH_HOST=0.0.0.0 are the release's defaults: the
    stack's own container published on the Docker host, whose profile must stay."""
    for store in ("milvus", "elasticsearch"):
        out = tmp_path / f"{store}.env"
        report = render_env_file(release_dir, out, server_ip=IP, overrides={"VECTOR_STORE": store})
        assert store in resolve_value(read_env(out), "COMPOSE_PROFILES").split(","), store
        assert report.notes == []


def test_moving_a_local_database_outside_needs_the_sites_password_again(release_dir, tmp_path):
    """The .env of a local install holds a GENERATED DB_PASSWORD: pointing DB_HOST outside later must not send it."""
    out = tmp_path / ".env"
    render_env_file(release_dir, out, server_ip=IP)
    with pytest.raises(AirgapError, match=r"DB_PASSWORD: the database is external \(10\.0\.0\.9:5432\)"):
        render_env_file(release_dir, out, server_ip=IP, site_file=_site(tmp_path, "DB_HOST=10.0.0.9\n"))


def test_an_ipv6_external_redis_and_an_https_vector_store(release_dir, tmp_path):
    out = tmp_path / ".env"
    report = render_env_file(release_dir, out, server_ip=IP, site_file=_site(
        tmp_path, "REDIS_HOST=fd00::5\nREDIS_PASSWORD=site-redis-pass\nVECTOR_STORE=qdrant\n"
                  "QDRANT_URL=https://qdrant.site.local\n"))
    broker = urlsplit(read_env(out)["CELERY_BROKER_URL"])
    assert (broker.hostname, broker.port) == ("fd00::5", 6379)
    assert any("external vector store qdrant at qdrant.site.local:443" in n for n in report.notes), report.notes


def test_middleware_keys_only_its_compose_file_reads_can_be_set_and_land_in_middleware_env(release_dir, tmp_path):
    """EXPOSE_WEAVIATE_GRPC_PORT is interpolated by docker-compose.middleware.yaml but not in its example."""
    out = tmp_path / "middleware.env"
    render_env_file(release_dir, out, middleware=True, overrides={"EXPOSE_WEAVIATE_GRPC_PORT": "15051"})
    values = read_env(out)
    assert values["EXPOSE_WEAVIATE_GRPC_PORT"] == "15051"
    assert "EXPOSE_WEAVIATE_GRPC_PORT" not in read_env(middleware_example(release_dir))
    with pytest.raises(AirgapError, match="EXPOSE_WEAVIATE_GRPC_PROT .*did you mean EXPOSE_WEAVIATE_GRPC_PORT"):
        render_env_file(release_dir, tmp_path / "typo.env", middleware=True,
                        overrides={"EXPOSE_WEAVIATE_GRPC_PROT": "1"})
