"""`invoke check` on real engines: the REAL Dify 1.11.3 compose project up with stand-ins, all green,
then one service stopped -> the check fails naming it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from scripts.core.waiting import wait_until
from scripts.dify import stack
from scripts.dify.deployment import Deployment
from scripts.engine import bridges
from scripts.engine.client import Engine
from scripts.host import check, probes
from scripts.host.probes import PASS
from tests.integration.standin_project import OVERRIDES, all_up, release_project, service_states
from tests.lab import host as lab

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"api", "worker", "worker_beat", "web", "db_postgres", "redis", "sandbox", "plugin_daemon",
            "ssrf_proxy", "nginx", "weaviate", "init_permissions"}


@contextmanager
def standin_deployment(engine: Engine, prefix: Path):
    """The real compose project up with stand-ins under ``prefix`` (a unique project name, free host
    ports), recorded as a Deployment at ``prefix/dify-airgap.json`` like install writes it; torn down
    with its volumes afterwards."""
    project, ports = release_project(prefix)  # prefix/docker, like an install root
    name = f"dalcheck{uuid.uuid4().hex[:8]}"
    files = ["docker-compose.yaml"]
    if engine.is_podman:
        files.append(str(OVERRIDES / "podman.yaml"))
        lab.allow_podman_internal_networks()
    values = stack.env_values(project / ".env")
    specs = stack.active_services(stack.load_specs(project, files, values), stack.active_profiles(values))
    images = [{"ref": ref, "id": "", "services": services} for ref, services in stack.needed_images(specs).items()]
    dep = Deployment(prefix=prefix, runtime=engine.runtime, dify_version="1.11.3", project_name=name,
                     compose_files=files, images=images)
    dep.save()
    try:
        dep.compose(engine, ["up", "-d"], timeout=300)
        # the product's own wait (install's): podman's exited `restart: always` services are started again
        stack.wait_ready(engine, name, specs, 180, lambda args, **kw: dep.compose(engine, args, **kw))
        wait_until(lambda: all_up(engine, project, name, SERVICES), timeout=60,
                   what="every Dify service running/healthy and init_permissions exited 0",
                   on_timeout=lambda: json.dumps(service_states(engine, project, name), indent=1)[-3000:])
        if engine.is_podman:  # the up fixed the project's bridge MACs (scripts/engine/bridges.py)
            ifaces = [b.interface for b in bridges.bridges(engine, bridges.project_networks(engine, name))]
            assert len(ifaces) == 2, ifaces  # default + ssrf_proxy_network
            assert all((bridges.SYS_NET / i / "addr_assign_type").read_text().strip() == bridges.ADDR_SET
                       for i in ifaces)
        base = f"http://127.0.0.1:{ports['EXPOSE_NGINX_PORT']}"
        wait_until(lambda: probes.check_http_json("ping", f"{base}/console/api/ping",
                                                  lambda d: (PASS, "", "")).status == PASS,
                   timeout=60, what="nginx to route /console/api/ping to the api")
        yield dep
    finally:
        down = ["down", "-v"] if engine.is_podman else ["down", "-v", "--remove-orphans", "--timeout", "5"]
        dep.compose(engine, down, check=False, timeout=300)
        shutil.rmtree(project, ignore_errors=True)
    label = "io.podman.compose.project" if engine.is_podman else "com.docker.compose.project"
    left = engine.run(["ps", "-a", "-q", "--filter", f"label={label}={name}"], mutates=False).stdout.strip()
    assert not left, f"containers left behind: {left}"


def _invoke_check(prefix: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "invoke", "check", "--prefix", str(prefix), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_check_all_green_then_names_a_stopped_service(runtime, request, tmp_path):
    engine, _ = request.getfixturevalue(f"{runtime}_standins")
    with standin_deployment(engine, tmp_path / "opt-dify") as dep:
        # --wait as the runbooks use it after install: on the lab's Podman 4.3 the api container's first
        # lookups of service names can go unanswered for up to ~45 s after `up` (measured; see docs/check.md)
        report = check.run_checks(dep, engine=engine, timeout=15, wait=150)
        assert report.ok, report.render()
        assert all(c.status == PASS for c in report.checks), report.render()
        names = {c.name for c in report.checks}
        assert {f"service {s}" for s in SERVICES} <= names
        assert {"images", "dify api /health", "console api via nginx", "web via nginx",
                "plugin daemon /health/check"} <= names
        assert report.by_name("dify api /health").detail.startswith("status ok, version 1.11.3, pid ")
        assert report.by_name("service init_permissions").detail == "one-shot, exited 0"
        assert report.checks[0].name == "deployment" and dep.project_name in report.checks[0].detail

        # the task reads the record install wrote, prints JSON and exits 0
        res = _invoke_check(dep.prefix, "--json", "--wait", "60")
        assert res.returncode == 0, res.stdout + res.stderr
        assert json.loads(res.stdout)["ok"] is True

        # an image the record names but the engine lacks: named with its service
        gone = Deployment(**{**dep.__dict__, "images": dep.images + [
            {"ref": "langgenius/dify-api:0.0.0-gone", "id": "", "services": ["api"]}]})
        images = check.image_check(engine, gone)
        assert images.status == "fail" and "langgenius/dify-api:0.0.0-gone (service: api)" in images.detail

        # one service stopped: the check fails and names it
        daemon = service_states(engine, dep.project_dir, dep.project_name)["plugin_daemon"]["container"]
        engine.run(["stop", "-t", "3", daemon], timeout=120)
        report = check.run_checks(dep, engine=engine, timeout=15)
        assert not report.ok
        failed = {c.name: c for c in report.failed()}
        assert set(failed) == {"service plugin_daemon", "plugin daemon /health/check"}, report.render()
        assert "not running" in failed["service plugin_daemon"].detail
        assert f"logs --tail 50 {daemon}" in failed["service plugin_daemon"].hint
        res = _invoke_check(dep.prefix)
        assert res.returncode == 1
        assert "FAIL    service plugin_daemon" in res.stdout, res.stdout + res.stderr
