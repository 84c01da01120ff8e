"""Stand-in planning: names, Docker Hub paths, recipes and the completed project (no engine)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from scripts.core.errors import AirgapError
from tests.conftest import FIXTURES, RELEASES, release_fixture
from tests.lab import standins


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


@pytest.mark.parametrize("version", RELEASES)
def test_default_images_are_exactly_the_fixtures_default_profile_images_plus_qdrant(version):
    facts = standins.release_facts(release_fixture(version))
    images = standins.default_images(version)
    assert len(images) == len(set(images))
    assert set(images) == set(facts.images) | {"langgenius/qdrant:v1.8.3"}
    assert all(standins.recipe_for(ref) for ref in images)


def test_1_16_images_as_shared_lab_md_counts_them():
    """LAB.md: `config --images` on 1.16.0 prints 12 distinct images (dify-api for four services)."""
    facts = standins.release_facts("1.16.0")
    assert len(facts.images) == 12
    assert sum(image == "langgenius/dify-api:1.16.0" for image in facts.services.values()) == 4
    assert {"langgenius/dify-agent-backend:1.16.0", "langgenius/dify-agent-local-sandbox:1.16.0",
            "langgenius/dify-plugin-daemon:0.6.3-local", "langgenius/dify-sandbox:0.2.15"} <= set(facts.images)


def test_unknown_version_gets_1_11_3_shape_with_its_own_api_and_web_tags():
    images = standins.default_images("1.12.0")
    assert "langgenius/dify-api:1.12.0" in images and "langgenius/dify-web:1.12.0" in images
    assert "langgenius/dify-plugin-daemon:0.5.2-local" in images and not any(":1.11.3" in ref for ref in images)


def test_release_facts_1_11_3():
    facts = standins.release_facts(release_fixture("1.11.3"))
    assert facts.version == "1.11.3" and facts.profiles == ("weaviate", "postgresql")
    assert set(facts.services) == {"api", "worker", "worker_beat", "web", "db_postgres", "redis", "sandbox",
                                   "plugin_daemon", "ssrf_proxy", "nginx", "weaviate", "init_permissions"}
    assert facts.healthchecked == {"db_postgres", "redis", "sandbox"}
    assert facts.one_shot == {"init_permissions"}
    assert set(facts.published_ports) == {"EXPOSE_NGINX_PORT", "EXPOSE_NGINX_SSL_PORT", "EXPOSE_PLUGIN_DEBUGGING_PORT"}
    assert facts.sandbox_proxy_port == 8194


def test_release_facts_1_16_0():
    facts = standins.release_facts("1.16.0")
    assert facts.version == "1.16.0" and facts.profiles == ("weaviate", "postgresql", "collaboration")
    assert set(facts.services) == {"init_permissions", "api", "api_websocket", "worker", "worker_beat", "web",
                                   "db_postgres", "redis", "sandbox", "local_sandbox", "plugin_daemon",
                                   "agent_backend", "ssrf_proxy", "nginx", "weaviate"}
    # worker/worker_beat declare one, disabled by COMPOSE_WORKER_HEALTHCHECK_DISABLED=true
    assert facts.healthchecked == {"api", "db_postgres", "redis", "sandbox", "local_sandbox"}
    assert facts.one_shot == {"init_permissions"}
    assert set(facts.published_ports) == {"EXPOSE_NGINX_PORT", "EXPOSE_NGINX_SSL_PORT", "EXPOSE_PLUGIN_DEBUGGING_PORT"}
    assert facts.sandbox_proxy_port is None  # squid reverse-proxies the sandbox only with SSRF_SANDBOX_PROXY_PORT
    agent = facts.environment["agent_backend"]
    assert agent["DIFY_AGENT_REDIS_URL"] == "redis://:difyai123456@redis:6379/2"  # nested default, resolved
    assert agent["DIFY_AGENT_SHELLCTL_ENTRYPOINT"] == "http://local_sandbox:5004"


@pytest.mark.parametrize("ports, keys", [
    (["${EXPOSE_NGINX_PORT:-80}:${NGINX_PORT:-80}"], ["EXPOSE_NGINX_PORT"]),
    (["127.0.0.1:${P-5003}:5003", "${Q}:1"], ["P", "Q"]),
    (["8080:80", {"target": 80, "published": "${X:-1}"}, "5000"], []),
    (None, []),
])
def test_published_port_keys(ports, keys):
    assert standins.published_port_keys(ports) == keys


def test_every_default_image_has_a_recipe_with_the_label_digest():
    for version in RELEASES:
        digests = {ref: standins.recipe_digest(ref) for ref in standins.default_images(version)}
        assert len(set(digests.values())) == len(digests)
    assert standins.recipe_digest("langgenius/dify-api:1.11.3") != standins.recipe_digest("langgenius/dify-api:1.12.0")


def test_unknown_image_has_no_recipe():
    with pytest.raises(AirgapError, match="no stand-in recipe"):
        standins.recipe_for("mysql:8.0")


def test_shell_scripts_parse():
    """Every stand-in script is valid POSIX sh (busybox ash runs them)."""
    for ref in {ref for version in RELEASES for ref in standins.default_images(version)}:
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
        assert fixture.is_relative_to(Path(standins.__file__).resolve().parents[2] / "tests" / "fixtures")
        assert (fixture / "docker-compose.yaml").is_file() and (fixture / "SOURCE.txt").is_file()


def test_complete_project_1_16_0_is_the_fixture_as_is(tmp_path):
    """1.16.0 is a complete tree: nothing of 1.11.3's extras may land on it (entrypoints, squid template)."""
    fixture = release_fixture("1.16.0")
    assert standins.extra_files(fixture) is None
    assert standins.extra_files(FIXTURES) == standins.EXTRA_FILES
    dest = standins.complete_project(tmp_path / "docker", fixture=fixture)
    copied = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    expected = sorted(p.relative_to(fixture).as_posix() for p in fixture.rglob("*") if p.is_file()
                      and p.relative_to(fixture).as_posix() != "SOURCE.txt")
    assert copied == expected
    for rel in copied:
        assert (dest / rel).read_bytes() == (fixture / rel).read_bytes(), rel
    assert not (dest / ".env").exists()  # the caller writes it (1.16 requires one)
    for rel in ("nginx/docker-entrypoint.sh", "ssrf_proxy/docker-entrypoint.sh"):
        assert os.access(dest / rel, os.X_OK), rel


def test_every_bind_source_of_the_default_services_exists(tmp_path):
    """Each relative bind source of an active service is in the completed project (or a data dir compose makes)."""
    import yaml

    for version in RELEASES:
        facts = standins.release_facts(version)
        dest = standins.complete_project(tmp_path / version, fixture=facts.fixture)
        compose = yaml.safe_load((dest / "docker-compose.yaml").read_text())
        for name in facts.services:
            for volume in compose["services"][name].get("volumes") or []:
                source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
                if not source.startswith("./") or source.startswith("./volumes/") and "sandbox/conf" not in source:
                    continue  # named volumes and data directories (created empty by the engine)
                assert (dest / source).exists(), f"{version} {name}: {source}"


# --- the stand-ins' own shell, run on the host (sh + awk) --------------------------------------------

def _root(tmp_path: Path, ref: str) -> Path:
    root = tmp_path / "root"
    for path, text in standins._all_files(ref, standins.recipe_for(ref)).items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


def _exchange(root: Path, routes: str, request: str, **env: str) -> tuple[str, dict[str, str], str]:
    """One HTTP exchange through the stand-in handler (what `nc -e` runs per connection)."""
    res = subprocess.run(["sh", str(root / "usr/local/lib/standin/http")], input=request.encode(),
                         capture_output=True, timeout=30,  # bytes: text mode would turn CRLF into LF
                         env={"PATH": os.environ["PATH"], "STANDIN_ROUTES": str(root / routes), **env})
    head, _, body = res.stdout.decode().partition("\r\n\r\n")
    status, *lines = head.split("\r\n")
    return status, dict(line.split(": ", 1) for line in lines), body


def test_agent_backend_answers_health(tmp_path):
    ref = "langgenius/dify-agent-backend:1.16.0"
    root = _root(tmp_path, ref)
    status, headers, body = _exchange(root, "usr/local/lib/standin/routes-agent", "GET /health HTTP/1.1\r\n\r\n",
                                      DIFY_AGENT_VERSION="1.16.0", STANDIN_IMAGE=ref)
    assert status == "HTTP/1.1 200 OK" and headers["X-Dify-Airgap-Standin"] == ref
    assert json.loads(body) == {"status": "ok", "version": "1.16.0"}
    status, _, _ = _exchange(root, "usr/local/lib/standin/routes-agent", "POST /agent-stub/x HTTP/1.1\r\n\r\n")
    assert status.startswith("HTTP/1.1 401")


def _fake_serve(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "standin-serve").write_text('#!/bin/sh\necho "serve $*"\n')
    (bin_dir / "standin-serve").chmod(0o755)
    return bin_dir


def test_agent_backend_refuses_to_start_without_what_compose_derives(tmp_path):
    root = _root(tmp_path, "langgenius/dify-agent-backend:1.16.0")
    facts = standins.release_facts("1.16.0")
    env = {"PATH": f"{_fake_serve(tmp_path)}:{os.environ['PATH']}", **facts.environment["agent_backend"]}
    ok = subprocess.run(["sh", str(root / "app/entrypoint.sh")], env=env, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "serve /usr/local/lib/standin/routes-agent:5050" in ok.stdout, ok.stderr
    env.pop("DIFY_AGENT_SERVER_SECRET_KEY")
    env["DIFY_AGENT_REDIS_URL"] = "redis:6379"
    bad = subprocess.run(["sh", str(root / "app/entrypoint.sh")], env=env, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "DIFY_AGENT_SERVER_SECRET_KEY" in bad.stderr


def test_local_sandbox_health_is_open_and_the_rest_needs_the_token(tmp_path):
    ref = "langgenius/dify-agent-local-sandbox:1.16.0"
    root = _root(tmp_path, ref)
    routes = "usr/local/lib/standin/routes-shellctl"
    status, _, body = _exchange(root, routes, "GET /healthz HTTP/1.1\r\n\r\n", SHELLCTL_AUTH_TOKEN="s3cret",
                                SHELLCTL_VERSION="1.16.0")
    assert status == "HTTP/1.1 200 OK" and json.loads(body)["status"] == "ok"
    status, _, _ = _exchange(root, routes, "POST /exec HTTP/1.1\r\n\r\n", SHELLCTL_AUTH_TOKEN="s3cret")
    assert status.startswith("HTTP/1.1 401")
    status, _, _ = _exchange(root, routes, "POST /exec HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n",
                             SHELLCTL_AUTH_TOKEN="s3cret")
    assert status.startswith("HTTP/1.1 501")


def test_api_answers_the_socket_io_handshake(tmp_path):
    root = _root(tmp_path, "langgenius/dify-api:1.16.0")
    status, _, body = _exchange(root, "usr/local/lib/standin/routes-api",
                                "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n\r\n")
    assert status == "HTTP/1.1 200 OK" and body.startswith("0{") and json.loads(body[1:])["sid"]


def test_squid_follows_includes_like_dify_1_16s_generated_files(tmp_path):
    """1.16's entrypoint writes the sandbox reverse proxy into an included file (SSRF_SANDBOX_PROXY_PORT)."""
    root = _root(tmp_path, "ubuntu/squid:latest")
    conf, included = tmp_path / "squid.conf", tmp_path / "dify_sandbox_proxy.conf"
    included.write_text("# generated\nhttp_port 8194 accel vhost\n"
                        "cache_peer sandbox parent 8194 0 no-query originserver name=dify_sandbox\n")
    conf.write_text(f"http_port 3128\ninclude {included}\ninclude {tmp_path / 'absent.conf'}\nhttp_access deny all\n")
    res = subprocess.run(["sh", str(root / "usr/sbin/squid"), "-f", str(conf), "-NYC", "1"], capture_output=True,
                         text=True, timeout=30, env={"PATH": f"{_fake_serve(tmp_path)}:{os.environ['PATH']}"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ("serve /usr/local/lib/standin/squid-forward:3128 "
                                  "/usr/local/lib/standin/squid-accel:8194")


def test_celery_healthcheck_answers_only_for_a_live_worker(tmp_path):
    root = _root(tmp_path, "langgenius/dify-api:1.16.0")
    celery = str(root / "usr/local/bin/celery")
    pidfile = tmp_path / "celery.pid"
    env = {"PATH": os.environ["PATH"], "STANDIN_CELERY_PIDFILE": str(pidfile)}
    argv = ["sh", celery, "-A", "celery_healthcheck.celery", "inspect", "ping"]
    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode != 0
    pidfile.write_text(f"{os.getpid()}\n")
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "pong" in res.stdout
