"""Stand-in images on real engines: seeded registry as Docker Hub mirror, the REAL compose file up."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import urllib.request
import uuid
from pathlib import Path

import pytest

from scripts.core.waiting import wait_until
from scripts.engine.client import Engine
from tests.conftest import RELEASES, release_fixture, require_engine
from tests.integration.standin_project import OVERRIDES, all_up, release_project, service_states
from tests.lab import host as lab
from tests.lab import standins
from tests.lab.host import free_port

pytestmark = pytest.mark.integration

def _labels(engine: Engine, ref: str) -> dict:
    res = engine.run(["image", "inspect", "--format", "{{json .Config.Labels}}", ref], mutates=False)
    return json.loads(res.stdout) or {}


def test_standins_are_labelled_and_rebuild_is_skipped(docker_standins):
    engine, refs = docker_standins
    for ref in refs:
        labels = _labels(engine, ref)
        assert labels.get(standins.LABEL) == "1", ref
        assert labels.get(standins.DIGEST_LABEL) == standins.recipe_digest(ref)
    assert standins.build_standins(engine, images=refs) == refs  # up to date: nothing rebuilt
    assert not any(standins.build_standin(engine, ref) for ref in refs)


def test_seeded_registry_serves_docker_hub_names_to_a_mirrored_dockerd(docker_standins):
    engine, refs = docker_standins
    addr = f"127.0.0.1:{free_port()}"
    with lab.registry(addr):
        pushed = standins.seed_registry(engine, refs, addr)
        assert pushed["busybox:latest"] == f"{addr}/library/busybox:latest"
        assert pushed["langgenius/dify-api:1.11.3"] == f"{addr}/langgenius/dify-api:1.11.3"
        local = engine.run(["images", "--format", "{{.Repository}}:{{.Tag}}"], mutates=False).stdout
        assert addr not in local, "temporary registry tags were left behind"
        with lab.Dockerd(extra_args=["--registry-mirror", f"http://{addr}"]) as mirrored:
            for ref in refs:
                mirrored.run(["pull", ref], timeout=300)
                assert _labels(mirrored, ref).get(standins.LABEL) == "1", ref


def test_seeded_registry_serves_docker_hub_names_to_podman_with_a_mirror(docker_standins, tmp_path):
    """podman with a registries.conf mirror, in throwaway storage, pulling from THIS test's registry only.

    Each name also gets a tag no other registry holds (``dal-<random>``): a pull of it can only succeed
    through the registry seeded here, whatever another test or session left on the machine.
    """
    engine, refs = docker_standins
    require_engine("podman")
    addr = f"127.0.0.1:{free_port()}"
    conf, drop_ins = tmp_path / "registries.conf", tmp_path / "registries.conf.d"
    drop_ins.mkdir()
    conf.write_text('unqualified-search-registries = ["docker.io"]\n\n[[registry]]\nprefix = "docker.io"\n'
                    f'location = "docker.io"\n\n[[registry.mirror]]\nlocation = "{addr}"\ninsecure = true\n')
    podman = Engine("podman", env={"CONTAINERS_REGISTRIES_CONF": str(conf),
                                   "CONTAINERS_REGISTRIES_CONF_DIR": str(drop_ins)})
    short = Path(tempfile.mkdtemp(prefix="dalpm-", dir="/tmp"))  # podman wants a runroot under 50 chars
    storage = ["--root", str(short / "root"), "--runroot", str(short / "run")]
    unique = {ref: f"{ref.rsplit(':', 1)[0]}:dal-{uuid.uuid4().hex[:10]}" for ref in refs[:2]}
    try:
        for ref, tagged in unique.items():
            engine.run(["tag", standins.local_ref(engine, ref), tagged])
        with lab.registry(addr):
            standins.seed_registry(engine, [*refs, *unique.values()], addr)
            for ref in [*refs, *unique.values()]:
                podman.run([*storage, "pull", "-q", ref], timeout=300)
                res = podman.run([*storage, "image", "inspect", "--format", "{{json .Config.Labels}}",
                                  f"docker.io/{standins.hub_path(ref)}"], mutates=False)
                assert json.loads(res.stdout).get(standins.LABEL) == "1", ref
    finally:
        for tagged in unique.values():
            engine.run(["image", "rm", tagged], check=False)
        lab.clear_podman_storage(podman, storage)
        subprocess.run(["umount", "-R", str(short / "root" / "overlay")], capture_output=True)
        shutil.rmtree(short, ignore_errors=True)


# --- the REAL compose file -----------------------------------------------------------------------

def _get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()


#: Docker's embedded DNS server, the address Dify 1.16's nginx template hard-codes as ``resolver``.
DOCKER_DNS = "127.0.0.11"


def _nginx_resolver(project: Path) -> str | None:
    """The ``resolver`` of the project's nginx site template (None: upstreams resolved at start only)."""
    m = re.search(r"^\s*resolver\s+([^\s;]+)", (project / "nginx/conf.d/default.conf.template").read_text(), re.M)
    return m.group(1) if m else None


#: What the api container can reach, per service of the release (probed only when the release runs it):
#: service -> (the .env key of its base URL as Dify's services use it, health path, expected JSON).
#: ``{version}`` in an expectation is the release's version.
PROBES = {
    "plugin_daemon": ("PLUGIN_DAEMON_URL", "/health/check", {"status": "ok"}),
    "sandbox": ("CODE_EXECUTION_ENDPOINT", "/health", "ok"),
    "agent_backend": ("AGENT_BACKEND_BASE_URL", "/health", {"status": "ok", "version": "{version}"}),
    "local_sandbox": ("DIFY_AGENT_SHELLCTL_ENTRYPOINT", "/healthz", {"status": "ok", "version": "{version}"}),
}


def _expected(value, version: str):
    if isinstance(value, dict):
        return {k: _expected(v, version) for k, v in value.items()}
    return value.replace("{version}", version) if isinstance(value, str) else value


@pytest.mark.parametrize("runtime", ["docker", "podman"])
@pytest.mark.parametrize("version", RELEASES)
def test_real_compose_file_comes_up(version, runtime, release_standins, tmp_path):
    engine, _ = release_standins(runtime, version)
    facts = standins.release_facts(release_fixture(version))
    project, ports = release_project(tmp_path, facts)
    name = f"dalstandin{uuid.uuid4().hex[:8]}"
    files: list[str] = []
    if engine.is_podman:
        files = ["docker-compose.yaml", str(OVERRIDES / "podman.yaml")]
        lab.allow_podman_internal_networks()  # docker on the same host would drop internal-bridge traffic

    def compose(args: list[str], **kwargs):
        return engine.compose_run(args, project_dir=str(project), project_name=name, files=files, **kwargs)

    services = set(facts.services)
    assert {"api", "nginx", "web"} <= services
    if not engine.is_podman:  # (an empty answer would mean compose read no .env: never trust one)
        configured = set(compose(["config", "--services"], mutates=False).stdout.split())
        assert configured == services
    try:
        compose(["up", "-d"], timeout=300)
        wait_until(lambda: all_up(engine, project, name, services, facts.healthchecked, facts.one_shot),
                   timeout=240, what=f"every Dify {version} service running (healthy where checked), "
                                     f"{sorted(facts.one_shot)} exited 0",
                   on_timeout=lambda: json.dumps(service_states(engine, project, name), indent=1)[-3000:])

        base = f"http://127.0.0.1:{ports['EXPOSE_NGINX_PORT']}"
        status, ctype, body = wait_until(lambda: _get(f"{base}/console/api/ping"), timeout=60,
                                         what="nginx to route /console/api/ping to the api")
        assert status == 200 and ctype.startswith("application/json")
        assert json.loads(body) == {"result": "pong"}
        status, ctype, body = _get(f"{base}/")
        assert status == 200 and "<title>Dify</title>" in body and "stand-in" in body

        api = service_states(engine, project, name)["api"]["container"]

        def api_get(url: str) -> str:
            return engine.run(["exec", api, "wget", "-q", "-O", "-", url], mutates=False, timeout=60).stdout

        health = json.loads(api_get(f"http://localhost:{facts.env['DIFY_PORT']}/health"))
        assert set(health) == {"pid", "status", "version"}
        assert isinstance(health["pid"], int) and health["status"] == "ok" and health["version"] == facts.version
        for service, (url_key, path, expected) in PROBES.items():
            if service in services:
                got = json.loads(api_get(facts.env[url_key].rstrip("/") + path))
                want = _expected(expected, facts.version)
                assert (got if not isinstance(want, dict) else {k: got.get(k) for k in want}) == want, service
        if facts.sandbox_proxy_port:  # the sandbox sits on the internal network only: through squid's reverse proxy
            assert json.loads(api_get(f"http://ssrf_proxy:{facts.sandbox_proxy_port}/health")) == "ok"
        if "api_websocket" in services:
            websocket = json.loads(api_get(f"http://api_websocket:{facts.env['DIFY_PORT']}/health"))
            assert websocket["version"] == facts.version
            # nginx -> $socket_io_upstream, resolved at request time through the template's resolver (on podman
            # compose-overrides/podman.yaml points it at aardvark-dns instead of Docker's 127.0.0.11)
            assert _nginx_resolver(project) == DOCKER_DNS
            status, _, body = _get(f"{base}/socket.io/?EIO=4&transport=polling")
            assert status == 200 and body.startswith("0{"), body
    finally:
        down = ["down", "-v"] if engine.is_podman else ["down", "-v", "--remove-orphans", "--timeout", "5"]
        compose(down, check=False, timeout=300)
        shutil.rmtree(project, ignore_errors=True)
    label = "io.podman.compose.project" if engine.is_podman else "com.docker.compose.project"
    left = engine.run(["ps", "-a", "-q", "--filter", f"label={label}={name}"], mutates=False).stdout.strip()
    assert not left, f"containers left behind: {left}"
    networks = engine.run(["network", "ls", "--format", "{{.Name}}"], mutates=False).stdout.split()
    assert not [n for n in networks if n.startswith(name)], "networks left behind"
