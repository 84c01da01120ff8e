"""`invoke install` / `preflight` / `down` on real engines, from bundles of the REAL Dify projects (1.11.3, 1.16.0).

The bundle holds the stand-in images (named like Dify's). Docker installs into the lab's dockerd
(stand-ins already present: the load is skipped by image id, which is also the re-run path) and, for
the missing-image case, into a throwaway dockerd that has nothing. Podman installs into throwaway
storage, so every image really comes out of the bundle.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from scripts.bundle import build as bundler
from scripts.bundle.manifest import load_manifest
from scripts.core.errors import AirgapError, ImageMissing
from scripts.core.waiting import wait_until
from scripts.dify import deployment as dep
from scripts.dify import plan as compose_plan
from scripts.dify import stack
from scripts.dify.project import MIDDLEWARE
from scripts.engine.client import Engine
from scripts.host import check as checks
from scripts.host import install as installer
from scripts.host import preflight, probes
from tests.integration.dify_stack import PG_ENTRYPOINT, PG_IMAGE
from tests.lab import host as lab
from tests.lab import standins
from tests.lab.certs import NOW, SiteCA
from tests.lab.host import free_port

from ..conftest import RELEASES, ROOT, release_fixture, require_engine

pytestmark = pytest.mark.integration



def port_settings() -> dict[str, str]:
    return {"EXPOSE_NGINX_PORT": str(free_port()), "EXPOSE_NGINX_SSL_PORT": str(free_port()),
            "EXPOSE_PLUGIN_DEBUGGING_PORT": str(free_port())}


@pytest.fixture(scope="module", params=RELEASES)
def standin_bundles(request, tmp_path_factory):
    """(full bundle, bundle without weaviate's image), both of a real release's project with stand-ins."""
    engine = require_engine("docker")
    with standins.present(engine, standins.default_images(request.param)):
        yield _make_bundles(engine, tmp_path_factory.mktemp(f"install-bundles-{request.param}"), request.param)


def _make_bundles(engine: Engine, root: Path, version: str = "1.11.3") -> tuple[Path, Path]:
    project = standins.complete_project(root / "dify" / "docker", fixture=release_fixture(version))
    plan = compose_plan.plan_images(engine, project, project / ".env.example")
    settings = dict(version=plan.dify_version, project_dir=project, platform=bundler.host_platform(),
                    compression="zstd", chunk_size=None, pull="never",
                    target_python=f"{sys.version_info[0]}.{sys.version_info[1]}")
    full = bundler.build(engine, bundler.make_plan(plan, output=root / "full", **settings))
    plan.images = [i for i in plan.images if not i.ref.startswith("semitechnologies/weaviate")]
    partial = bundler.build(engine, bundler.make_plan(plan, output=root / "partial", **settings))
    return full, partial


#: Tests of one behaviour that does not depend on the layout run on the newest vendored release only.
LATEST_ONLY = pytest.mark.parametrize("standin_bundles", [RELEASES[-1]], indirect=True)


def bundle_release(bundle: Path) -> str:
    return load_manifest(bundle)["dify_version"]


def _options(bundle: Path, prefix: Path, runtime: str, **kwargs) -> installer.InstallOptions:
    defaults = dict(bundle=bundle, runtime=runtime, prefix=prefix, server_ip="10.1.2.3",
                    overrides=port_settings(), timeout=240,
                    project_name=f"dalinst{uuid.uuid4().hex[:8]}")
    defaults.update(kwargs)
    return installer.InstallOptions(**defaults)


def _install_engine(runtime: str, request) -> tuple[Engine, dict[str, str]]:
    """(engine, engine env) to install into: the lab's docker, or podman on throwaway storage."""
    if runtime == "docker":
        return require_engine("docker"), {}
    env = request.getfixturevalue("podman_store")
    lab.allow_podman_internal_networks()
    return Engine("podman", env=env), env


def _leftovers(engine: Engine, name: str) -> str:
    label = stack.project_label(engine)
    return engine.run(["ps", "-a", "-q", "--filter", f"label={label}={name}"], mutates=False).stdout.strip()


def _assert_installed_and_rerun_is_a_noop(opts: installer.InstallOptions, engine: Engine) -> None:
    report = installer.install(opts)
    prefix = opts.prefix.resolve()
    assert report.changed
    version = bundle_release(opts.bundle)
    active = set(standins.release_facts(release_fixture(version)).services)
    assert set(report.services) == active
    env = prefix / "docker" / ".env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    text = env.read_text()
    assert "CONSOLE_API_URL=http://10.1.2.3:" in text and "MARKETPLACE_ENABLED=false" in text
    assert f"EXPOSE_NGINX_PORT={opts.overrides['EXPOSE_NGINX_PORT']}" in text
    record = dep.load(prefix)
    assert record.runtime == engine.runtime and record.dify_version == version
    assert any(f.endswith("offline.yaml") for f in record.compose_files)
    assert {i["ref"] for i in record.images} >= {f"langgenius/dify-api:{version}", "busybox:latest"}
    # nginx routes the console API to the api (the real nginx config, the stand-in api)
    import urllib.request

    url = f"http://127.0.0.1:{opts.overrides['EXPOSE_NGINX_PORT']}/console/api/ping"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert json.loads(resp.read()) == {"result": "pong"}

    before = (env.read_bytes(), record.to_json())
    again = installer.install(opts)
    assert not again.changed, again.render()
    assert "nothing changed" in again.render()
    assert (env.read_bytes(), dep.load(prefix).to_json()) == before


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_install_check_rerun_and_down(runtime, standin_bundles, tmp_path, request):
    full, _ = standin_bundles
    engine, env = _install_engine(runtime, request)
    opts = _options(full, tmp_path / "opt-dify", runtime, engine_env=env)
    try:
        _assert_installed_and_rerun_is_a_noop(opts, engine)
        if runtime == "podman":  # every image really came out of the bundle into empty storage
            loaded = engine.run(["images", "--format", "{{.Repository}}:{{.Tag}}"], mutates=False).stdout.split()
            assert f"docker.io/langgenius/dify-api:{bundle_release(full)}" in loaded
        (opts.prefix / "docker" / "volumes" / "app").mkdir(parents=True, exist_ok=True)
        (opts.prefix / "docker" / "volumes" / "app" / "keep.txt").write_text("data")
    finally:
        if (opts.prefix / dep.STATE_FILE).exists():
            installer.down(opts.prefix.resolve())
    assert not _leftovers(engine, opts.project_name)
    assert (opts.prefix / "docker" / "volumes" / "app" / "keep.txt").read_text() == "data", "down must keep data"


@LATEST_ONLY
def test_bundle_missing_an_image_fails_before_anything_starts(standin_bundles, tmp_path):
    _, partial = standin_bundles
    require_engine("docker")
    with lab.Dockerd() as empty:
        opts = _options(partial, tmp_path / "opt-dify", "docker", engine_env=dict(empty.env))
        with pytest.raises(ImageMissing) as info:
            installer.install(opts)
        message = str(info.value)
        assert "semitechnologies/weaviate:1.27.0 (service: weaviate)" in message
        assert "Nothing was started" in message
        assert empty.run(["ps", "-a", "-q"], mutates=False).stdout.strip() == ""
        # the rest of the bundle was loaded, so the message is about exactly one image
        assert empty.image_exists(f"langgenius/dify-api:{bundle_release(partial)}")


@LATEST_ONLY
def test_port_in_use_fails_preflight_naming_it(standin_bundles, tmp_path):
    full, _ = standin_bundles
    engine = require_engine("docker")
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        overrides = {**port_settings(), "EXPOSE_NGINX_PORT": str(port)}
        report = preflight.run(engine, full, load_manifest(full), tmp_path / "opt", overrides=overrides)
        failed = [i for i in report.failures if i.name == f"port {port}"]
        assert failed and "service nginx" in failed[0].detail, report.render()
        assert not report.ok
        with pytest.raises(AirgapError, match="preflight failed"):
            installer.install(_options(full, tmp_path / "opt", "docker", overrides=overrides))
    assert not (tmp_path / "opt").exists(), "a failed preflight must change nothing"


@LATEST_ONLY
def test_dry_run_changes_nothing(standin_bundles, tmp_path, capsys):
    full, _ = standin_bundles
    require_engine("docker")
    installer.install(_options(full, tmp_path / "opt", "docker", dry_run=True))
    out = capsys.readouterr().out
    assert "[dry-run]" in out and "up -d" in out and ".env" in out
    assert not (tmp_path / "opt").exists()


@LATEST_ONLY
def test_install_task_cli_dry_run(standin_bundles, tmp_path):
    """The real `invoke install` command line, help text and dry-run."""
    full, _ = standin_bundles
    require_engine("docker")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "invoke", "--help", "install"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0 and "--prefix" in res.stdout and "--dry-run" in res.stdout
    res = subprocess.run([sys.executable, "-m", "invoke", "install", str(full), "--runtime", "docker",
                          "--prefix", str(tmp_path / "opt"), "--dry-run",
                          *[a for k, v in port_settings().items() for a in ("--set", f"{k}={v}")]],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "nothing was loaded, written or started" in res.stdout
    assert not (tmp_path / "opt").exists()


@LATEST_ONLY
def test_newer_bundle_is_an_upgrade_env_merged_and_backed_up(standin_bundles, tmp_path):
    """Same images, a newer docker/ (a new .env key): .env backed up 0600 and merged, old set noted."""
    full, _ = standin_bundles
    engine = require_engine("docker")
    newer_project = tmp_path / "newer" / "docker"
    shutil.copytree(full / "docker", newer_project)
    example = newer_project / ".env.example"
    example.write_text(example.read_text() + "\n# added by the newer release\nNEW_RELEASE_KEY=from-new\n")
    plan = compose_plan.plan_images(engine, newer_project, example)
    newer = bundler.build(engine, bundler.make_plan(
        plan, version=plan.dify_version, project_dir=newer_project, output=tmp_path / "newer-out",
        platform=bundler.host_platform(), compression="zstd", chunk_size=None, pull="never",
        target_python=f"{sys.version_info[0]}.{sys.version_info[1]}"))

    opts = _options(full, tmp_path / "opt", "docker", start=False)
    installer.install(opts)
    env = opts.prefix / "docker" / ".env"
    text = env.read_text().replace("LOG_LEVEL=INFO", "LOG_LEVEL=DEBUG")  # the operator's own change
    env.write_text(text)
    secret = next(line for line in text.splitlines() if line.startswith("SECRET_KEY="))
    old_key = dep.load(opts.prefix).bundle

    report = installer.install(_options(newer, opts.prefix, "docker", start=False, overrides=opts.overrides,
                                        project_name=opts.project_name))
    rendered = report.render()
    assert f"upgrade from {old_key}" in rendered
    state = opts.prefix / installer.STATE_DIR
    history = list(state.glob("history-*.json"))
    assert len(history) == 1 and json.loads(history[0].read_text())["bundle"] == old_key
    backups = list(state.glob("env-backup-*"))
    assert len(backups) == 1 and stat.S_IMODE(backups[0].stat().st_mode) == 0o600
    assert "LOG_LEVEL=DEBUG" in backups[0].read_text()
    merged = env.read_text()
    assert "LOG_LEVEL=DEBUG" in merged, "the operator's change must survive the upgrade"
    assert "NEW_RELEASE_KEY=from-new" in merged, "the new release's key must arrive"
    assert secret in merged.splitlines(), "secrets are kept across an upgrade"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert dep.load(opts.prefix).bundle != old_key


#: A 1.11.3 site's customisations; 1.16.0 moved most of these keys out of .env.example into envs/**.
SITE_1113 = {"MAIL_TYPE": "smtp", "SMTP_SERVER": "mail.example.internal", "SMTP_PORT": "2525",
             "UPLOAD_FILE_SIZE_LIMIT": "30", "MAIL_DEFAULT_SEND_FROM": "dify@example.internal"}


def _tree_digest(root: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _container_env(engine: Engine, container: str) -> dict[str, str]:
    res = engine.run(["inspect", "--format", "{{json .Config.Env}}", container], mutates=False)
    return dict(item.split("=", 1) for item in json.loads(res.stdout) if "=" in item)


def test_upgrade_across_layouts_1113_to_1160_keeps_settings_secrets_and_data(tmp_path):
    """A running 1.11.3 install with a customised .env, then the 1.16.0 bundle over it: the site's settings
    reach the 1.16.0 containers (most now live in envs/** upstream), secrets and data are kept, check green."""
    from scripts.host import check

    engine = require_engine("docker")
    old_ver, new_ver = RELEASES[0], RELEASES[-1]
    with standins.present(engine, [*standins.default_images(old_ver), *standins.default_images(new_ver)]):
        old_bundle, _ = _make_bundles(engine, tmp_path / "b-old", old_ver)
        new_bundle, _ = _make_bundles(engine, tmp_path / "b-new", new_ver)
        site = tmp_path / "site.env"
        site.write_text("".join(f"{k}={v}\n" for k, v in SITE_1113.items()))
        opts = _options(old_bundle, tmp_path / "opt", "docker", site_file=site)
        try:
            installer.install(opts)
            docker_dir = opts.prefix / "docker"
            env_path = docker_dir / ".env"
            env_path.write_text(env_path.read_text().replace("LOG_LEVEL=INFO", "LOG_LEVEL=WARNING"))
            old_env = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in env_path.read_text().splitlines()
                       if "=" in line and not line.startswith("#")}
            storage = docker_dir / "volumes" / "app" / "storage"
            storage.mkdir(parents=True, exist_ok=True)
            (storage / "upload-1.txt").write_text("a file a user uploaded under 1.11.3\n")
            data_before = {d: _tree_digest(docker_dir / "volumes" / d) for d in ("app", "db")}

            report = installer.install(_options(new_bundle, opts.prefix, "docker", overrides=opts.overrides,
                                                project_name=opts.project_name))
            assert "upgrade from" in report.render()
            record = dep.load(opts.prefix)
            assert record.dify_version == new_ver
            assert set(report.services) == set(standins.release_facts(release_fixture(new_ver)).services)

            states = stack.states(engine, opts.project_name, lambda args, **kw: record.compose(engine, args, **kw))
            api_env = _container_env(engine, states["api"].container)
            for key, value in {**SITE_1113, "LOG_LEVEL": "WARNING"}.items():
                assert api_env.get(key) == value, f"{key} did not reach the running {new_ver} api"
            for key in ("SECRET_KEY", "DB_PASSWORD", "REDIS_PASSWORD", "PLUGIN_DAEMON_KEY"):
                assert api_env[key] == old_env[key], f"{key} changed across the upgrade"
            agent_env = _container_env(engine, states["agent_backend"].container)
            assert agent_env["DIFY_AGENT_SERVER_SECRET_KEY"] != "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"
            assert {d: _tree_digest(docker_dir / "volumes" / d) for d in ("app", "db")} == data_before
            backups = list((opts.prefix / installer.STATE_DIR).glob("env-backup-*"))
            assert backups and "LOG_LEVEL=WARNING" in backups[0].read_text()

            result = check.run_checks(record, engine=engine, wait=150)
            assert result.ok, result.render()
            assert f"Dify {new_ver}" in result.by_name("deployment").detail
        finally:
            if (opts.prefix / dep.STATE_FILE).exists():
                installer.down(opts.prefix.resolve())
    assert not _leftovers(engine, opts.project_name)


def test_https_with_the_sites_own_ca_served_by_nginx_checked_and_renewed(standin_bundles, tmp_path):
    """#15: a certificate of a CA made here (root -> intermediate -> server) goes where the release's nginx reads
    it; nginx serves it over TLS (verified against the root, by name); check sees it; a renewal expiring within
    30 days is served after the re-run (nginx restarted) and check warns. The certbot way is refused offline."""
    full, _ = standin_bundles
    engine = require_engine("docker")
    ca = SiteCA.make()
    names = ("dify.example.local", "10.1.2.3", "127.0.0.1")
    cert, key, chain = ca.write(tmp_path / "pki", ca.server(*names))
    opts = _options(full, tmp_path / "opt-dify", "docker", tls_cert=cert, tls_key=key, tls_chain=chain)
    ssl_port = opts.overrides["EXPOSE_NGINX_SSL_PORT"]
    try:
        report = installer.install(opts)
        installed = opts.prefix / "docker" / "nginx" / "ssl"
        assert any(a.startswith("TLS certificate installed") for a in report.actions), report.render()
        assert stat.S_IMODE((installed / "dify.key").stat().st_mode) == 0o600
        env = (opts.prefix / "docker" / ".env").read_text()
        assert "NGINX_HTTPS_ENABLED=true" in env and f"CONSOLE_API_URL=https://10.1.2.3:{ssl_port}" in env
        (tmp_path / "root.pem").write_bytes(ca.root.cert_pem())
        trusted = ssl.create_default_context(cafile=str(tmp_path / "root.pem"))
        with urllib.request.urlopen(f"https://127.0.0.1:{ssl_port}/console/api/ping", timeout=10,
                                    context=trusted) as resp:  # chain served, name and root verified
            assert json.loads(resp.read()) == {"result": "pong"}
        found = {c.name: c for c in checks.check_deployment(dep.load(opts.prefix.resolve()))}
        assert found["https certificate"].status == probes.PASS, found["https certificate"]
        assert "days left" in found["https certificate"].detail

        soon = ca.server(*names, not_after=NOW + _dt.timedelta(days=10))
        cert.write_bytes(soon.cert_pem())
        key.write_bytes(soon.key_pem())
        again = installer.install(opts)
        assert "nginx restarted to serve the new TLS certificate" in again.actions, again.render()
        found = {c.name: c for c in checks.check_deployment(dep.load(opts.prefix.resolve()))}
        assert found["https certificate"].status == probes.WARN, found["https certificate"]
        assert "expires in 9 days" in found["https certificate"].detail

        with pytest.raises(AirgapError, match="Let's Encrypt over the internet"):
            installer.install(_options(full, opts.prefix, "docker", project_name=opts.project_name,
                                       overrides={**opts.overrides, "NGINX_ENABLE_CERTBOT_CHALLENGE": "true"}))
    finally:
        if (opts.prefix / dep.STATE_FILE).exists():
            installer.down(opts.prefix.resolve())
    assert not _leftovers(engine, opts.project_name)


def _host_address() -> str:
    """This host's address as containers on any bridge reach it (the source address of its default route)."""
    out = subprocess.run(["ip", "-4", "route", "get", "1.1.1.1"], capture_output=True, text=True).stdout
    found = re.search(r"\bsrc (\d+\.\d+\.\d+\.\d+)", out)
    return found.group(1) if found else subprocess.run(["hostname", "-I"], capture_output=True,
                                                       text=True).stdout.split()[0]


def test_an_external_database_is_used_the_local_one_never_starts_and_check_tests_it(standin_bundles, tmp_path,
                                                                                  real_postgres):
    """#15: a site file pointing DB_HOST at a second, REAL PostgreSQL (a container published on this host, playing
    the site's server): the local db_postgres is not started, the site's password is in .env (not a generated
    one), check connects from the api container; with the server stopped check names host and port."""
    full, _ = standin_bundles
    engine = require_engine("docker")
    name, port, password = f"dal-extdb-{uuid.uuid4().hex[:8]}", free_port(), "site-db-Pass-42"
    (tmp_path / "pg-entrypoint.sh").write_text(PG_ENTRYPOINT)
    site = tmp_path / "site.env"
    host = _host_address()
    site.write_text(f"DB_HOST={host}\nDB_PORT={port}\nDB_PASSWORD={password}\n")
    opts = _options(full, tmp_path / "opt-dify", "docker", site_file=site)
    try:
        engine.run(["network", "create", name], timeout=60)  # the lab's dockerd has no default bridge
        engine.run(["run", "-d", "--name", name, "--network", name, "-p", f"{port}:5432",
                    "-e", f"POSTGRES_PASSWORD={password}", "-e", "PGDATA=/var/lib/postgresql/data",
                    "-v", f"{tmp_path / 'pg-entrypoint.sh'}:/lab-pg-entrypoint.sh:ro", "--entrypoint", "/bin/sh",
                    PG_IMAGE, "/lab-pg-entrypoint.sh", "postgres"], timeout=120)

        # over TCP (the init phase listens on none; the published port accepts before postgres does)
        wait_until(lambda: engine.probe(["exec", name, "pg_isready", "-q", "-h", "127.0.0.1"]).ok, timeout=120,
                   what=f"the external postgres {name}", on_timeout=lambda: engine.probe(["logs", name]).stderr[-2000:])

        report = installer.install(opts)
        assert "db_postgres" not in report.services, report.render()
        ps = engine.run(["ps", "-a", "--format", "{{.Names}}", "--filter",
                         f"label={stack.project_label(engine)}={opts.project_name}"], mutates=False).stdout
        assert "db_postgres" not in ps, ps
        env = (opts.prefix / "docker" / ".env").read_text()
        assert f"DB_PASSWORD={password}" in env and f"DB_HOST={host}" in env
        found = {c.name: c for c in checks.check_deployment(dep.load(opts.prefix.resolve()))}
        assert found["external database"].status == probes.PASS, found["external database"]

        engine.run(["rm", "-f", name], timeout=60)
        found = {c.name: c for c in checks.check_deployment(dep.load(opts.prefix.resolve()), timeout=5)}
        failed = found["external database"]
        assert failed.status == probes.FAIL and f"cannot connect to {host}:{port}" in failed.detail, failed
    finally:
        engine.run(["rm", "-f", name], check=False, timeout=60)
        engine.run(["network", "rm", name], check=False, timeout=60)
        if (opts.prefix / dep.STATE_FILE).exists():
            installer.down(opts.prefix.resolve())
    assert not _leftovers(engine, opts.project_name)


# --- middleware mode (docker-compose.middleware.yaml with middleware.env) ------------------------------------

def _middleware_services(project: Path, profiles: set[str]) -> set[str]:
    """The middleware file's services the env's profiles start (a service listing "" starts under none)."""
    services = yaml.safe_load((project / MIDDLEWARE.compose_file).read_text())["services"]
    return {name for name, svc in services.items() if not svc.get("profiles") or set(svc["profiles"]) & profiles}


def _middleware_ports(project: Path) -> dict[str, str]:
    """Every published port of the middleware file on a free one (the example's own and the file's ${...:-N})."""
    services = yaml.safe_load((project / MIDDLEWARE.compose_file).read_text())["services"]
    keys = [key for svc in services.values() for key in standins.published_port_keys(svc.get("ports"))]
    return {key: str(free_port()) for key in keys}


@pytest.fixture(scope="module", params=RELEASES)
def middleware_bundle(request, tmp_path_factory):
    """A middleware bundle of a real release's project (--middleware), made from the stand-ins."""
    engine = require_engine("docker")
    root = tmp_path_factory.mktemp(f"middleware-{request.param}")
    with standins.present(engine, standins.default_images(request.param)):
        project = standins.complete_project(root / "dify" / "docker", fixture=release_fixture(request.param))
        plan = compose_plan.plan_images(engine, project, MIDDLEWARE.example(project), mode=MIDDLEWARE)
        yield bundler.build(engine, bundler.make_plan(
            plan, version=plan.dify_version, project_dir=project, output=root / "out", platform=bundler.host_platform(),
            compression="zstd", chunk_size=None, pull="never",
            target_python=f"{sys.version_info[0]}.{sys.version_info[1]}"))


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_middleware_bundle_installs_the_dev_stack_checks_its_ports_reruns_and_goes_down(runtime, middleware_bundle,
                                                                                      tmp_path, request):
    manifest = load_manifest(middleware_bundle)
    version = manifest["dify_version"]
    assert manifest["mode"] == "middleware" and middleware_bundle.name == f"dify-{version}-middleware-airgap-" \
        f"{bundler.parse_platform(bundler.host_platform())[1]}"
    refs = {i["ref"] for i in manifest["images"]}
    assert not any(r.startswith(("langgenius/dify-api", "langgenius/dify-web", "nginx")) for r in refs), refs
    engine, env = _install_engine(runtime, request)
    project = middleware_bundle / "docker"
    ports = _middleware_ports(project)
    opts = _options(middleware_bundle, tmp_path / "opt-dify", runtime, engine_env=env, overrides=ports)
    prefix = opts.prefix.resolve()
    try:
        report = installer.install(opts)
        expected = _middleware_services(project, {"postgresql", "weaviate"})
        assert {"db_postgres", "redis", "plugin_daemon", "weaviate"} <= expected
        assert set(report.services) == expected, report.render()
        env_file = prefix / "docker" / "middleware.env"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600 and not (prefix / "docker" / ".env").exists()
        text = env_file.read_text()
        assert f"EXPOSE_POSTGRES_PORT={ports['EXPOSE_POSTGRES_PORT']}" in text
        assert f"EXPOSE_WEAVIATE_GRPC_PORT={ports['EXPOSE_WEAVIATE_GRPC_PORT']}" in text  # declared by compose only
        assert "DB_PASSWORD=difyai123456" not in text  # a generated secret, not the public default
        record = dep.load(prefix)
        assert record.mode == "middleware" and record.compose_files[0] == MIDDLEWARE.compose_file
        assert record.env_file == env_file
        result = checks.run_checks(record, engine=engine, wait=120)
        found = {c.name: c for c in result.checks}
        assert result.ok, result.render()
        assert found["plugin daemon /health/check"].status == probes.PASS
        for key in ("EXPOSE_POSTGRES_PORT", "EXPOSE_REDIS_PORT", "EXPOSE_PLUGIN_DAEMON_PORT"):
            assert any(name.startswith(f"port {ports[key]} ") and c.status == probes.PASS for name, c in found.items())
        assert not any("nginx" in name or "api /health" in name for name in found), sorted(found)
        daemon = yaml.safe_load((project / MIDDLEWARE.compose_file).read_text())["services"]["plugin_daemon"]
        for entry in daemon.get("extra_hosts") or []:  # 1.16: host.docker.internal:host-gateway, on podman < 4.7 too
            container = stack.states(engine, record.project_name,
                                     lambda args, **kw: record.compose(engine, args, **kw))["plugin_daemon"].container
            hosts = engine.run(["exec", container, "cat", "/etc/hosts"], mutates=False).stdout
            assert re.search(r"^\d+\.\d+\.\d+\.\d+\s+" + re.escape(entry.split(":")[0]) + r"\b", hosts, re.M), hosts
        before = (env_file.read_bytes(), record.to_json())
        again = installer.install(opts)
        assert not again.changed, again.render()
        assert (env_file.read_bytes(), dep.load(prefix).to_json()) == before
    finally:
        if (prefix / dep.STATE_FILE).exists():
            installer.down(prefix)
    assert not _leftovers(engine, opts.project_name)
