"""Stand-in images on real engines: seeded registry as Docker Hub mirror, the REAL compose file up."""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.request
import uuid
from pathlib import Path

import pytest

from scripts import lab, standins
from scripts.engine import Engine
from scripts.lab import free_port
from scripts.waiting import wait_until
from tests.conftest import FIXTURES, require_engine

pytestmark = pytest.mark.integration

#: Services of the default profile set (weaviate, postgresql) with a healthcheck in the real file.
HEALTHCHECKED = {"db_postgres", "redis", "sandbox"}
ONE_SHOT = {"init_permissions"}



@pytest.fixture(scope="session")
def docker_standins():
    """The stand-ins in the system docker; those this session built are removed at its end."""
    engine = require_engine("docker")
    with standins.present(engine) as refs:
        yield engine, refs


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
        podman.run([*storage, "system", "reset", "--force"], check=False, timeout=120)
        shutil.rmtree(short, ignore_errors=True)


# --- the REAL compose file -----------------------------------------------------------------------

def _project(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    dest = standins.complete_project(tmp_path / "docker", fixture=FIXTURES)
    ports = {"EXPOSE_NGINX_PORT": free_port(), "EXPOSE_NGINX_SSL_PORT": free_port(),
             "EXPOSE_PLUGIN_DEBUGGING_PORT": free_port()}
    lines = []
    for line in (dest / ".env.example").read_text().splitlines():
        key = line.split("=", 1)[0]
        lines.append(f"{key}={ports[key]}" if key in ports else line)
    (dest / ".env").write_text("\n".join(lines) + "\n")
    return dest, ports


OVERRIDES = Path(__file__).resolve().parents[2] / "compose-overrides"


@pytest.fixture(scope="session")
def podman_standins():
    """The stand-ins in podman (docker.io/... names); those this session built are removed at its end."""
    engine = require_engine("podman")
    with standins.present(engine) as refs:
        yield engine, refs


def _states(engine: Engine, project: Path, name: str) -> dict[str, dict]:
    """{service: {state, exit_code, health, container}} for the compose project."""
    if engine.is_podman:
        res = engine.run(["ps", "-a", "--filter", f"label=io.podman.compose.project={name}", "--format", "json"],
                         mutates=False)
        out = {}
        for row in json.loads(res.stdout or "[]"):
            labels = row.get("Labels") or {}
            service = labels.get("com.docker.compose.service") or labels.get("io.podman.compose.service")
            status = row.get("Status", "")
            health = "healthy" if "(healthy)" in status else "unhealthy" if "(unhealthy)" in status else ""
            out[service] = {"state": row["State"], "exit_code": row.get("ExitCode"), "health": health,
                            "container": row["Names"][0]}
        return out
    res = engine.compose_run(["ps", "-a", "--format", "json"], project_dir=str(project), project_name=name,
                             mutates=False)
    text = res.stdout.strip()
    rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line]
    return {row["Service"]: {"state": row["State"], "exit_code": row.get("ExitCode"), "health": row.get("Health"),
                             "container": row["Name"]} for row in rows}


def _all_up(engine: Engine, project: Path, name: str, services: set[str]) -> bool:
    states = _states(engine, project, name)
    if set(states) != services:
        return False
    ready = True
    for service, st in states.items():
        if service in ONE_SHOT:
            ready &= st["state"] == "exited" and int(st["exit_code"] or 0) == 0
        elif st["state"] != "running":
            ready = False
        elif service in HEALTHCHECKED and st["health"] != "healthy":
            if engine.is_podman:  # no systemd: podman 4.3 never runs healthchecks by itself
                engine.run(["healthcheck", "run", st["container"]], check=False)
            ready = False
    return ready


def _get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_real_compose_file_comes_up(runtime, request, tmp_path):
    engine, _ = request.getfixturevalue(f"{runtime}_standins")
    project, ports = _project(tmp_path)
    name = f"dalstandin{uuid.uuid4().hex[:8]}"
    files: list[str] = []
    if engine.is_podman:
        files = ["docker-compose.yaml", str(OVERRIDES / "podman.yaml")]
        lab.allow_podman_internal_networks()  # docker on the same host would drop internal-bridge traffic

    def compose(args: list[str], **kwargs):
        return engine.compose_run(args, project_dir=str(project), project_name=name, files=files, **kwargs)

    services = {"api", "worker", "worker_beat", "web", "db_postgres", "redis", "sandbox", "plugin_daemon",
                "ssrf_proxy", "nginx", "weaviate", "init_permissions"}
    if not engine.is_podman:
        assert set(compose(["config", "--services"], mutates=False).stdout.split()) == services
    try:
        compose(["up", "-d"], timeout=300)
        wait_until(lambda: _all_up(engine, project, name, services), timeout=180,
                   what="every Dify service running/healthy and init_permissions exited 0",
                   on_timeout=lambda: json.dumps(_states(engine, project, name), indent=1)[-3000:])

        base = f"http://127.0.0.1:{ports['EXPOSE_NGINX_PORT']}"
        status, ctype, body = wait_until(lambda: _get(f"{base}/console/api/ping"), timeout=60,
                                         what="nginx to route /console/api/ping to the api")
        assert status == 200 and ctype.startswith("application/json")
        assert json.loads(body) == {"result": "pong"}
        status, ctype, body = _get(f"{base}/")
        assert status == 200 and "<title>Dify</title>" in body and "stand-in" in body

        api = _states(engine, project, name)["api"]["container"]

        def api_get(url: str) -> str:
            return engine.run(["exec", api, "wget", "-q", "-O", "-", url], mutates=False, timeout=60).stdout

        health = json.loads(api_get("http://localhost:5001/health"))
        assert set(health) == {"pid", "status", "version"}
        assert isinstance(health["pid"], int) and health["status"] == "ok" and health["version"] == "1.11.3"
        assert json.loads(api_get("http://plugin_daemon:5002/health/check"))["status"] == "ok"
        # the sandbox sits on the internal network only: directly, and through squid's reverse proxy
        assert json.loads(api_get("http://sandbox:8194/health")) == "ok"
        assert json.loads(api_get("http://ssrf_proxy:8194/health")) == "ok"
    finally:
        down = ["down", "-v"] if engine.is_podman else ["down", "-v", "--remove-orphans", "--timeout", "5"]
        compose(down, check=False, timeout=300)
        shutil.rmtree(project, ignore_errors=True)
    label = "io.podman.compose.project" if engine.is_podman else "com.docker.compose.project"
    left = engine.run(["ps", "-a", "-q", "--filter", f"label={label}={name}"], mutates=False).stdout.strip()
    assert not left, f"containers left behind: {left}"
    networks = engine.run(["network", "ls", "--format", "{{.Name}}"], mutates=False).stdout.split()
    assert not [n for n in networks if n.startswith(name)], "networks left behind"
