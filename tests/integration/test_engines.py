"""The engine adapter and lab helpers against REAL docker and podman."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from scripts.core.errors import ImageMissing
from scripts.core.waiting import wait_until
from scripts.engine.client import Engine
from scripts.host import doctor
from tests.lab import host as lab
from tests.lab.host import free_port

from ..conftest import ROOT, require_engine

pytestmark = pytest.mark.integration



def test_run_container(engine, tracker):
    image = tracker.image(engine, f"localhost/{tracker.name()}:1")
    lab.make_busybox_image(engine, image)
    # --network none: the sandbox's default docker0 bridge can vanish (shared/LAB.md); nothing here needs it
    res = engine.run(["run", "--rm", "--network", "none", image, "sh", "-c", "echo hello-$((6*7))"])
    assert res.stdout.strip() == "hello-42"


def test_missing_image_maps_for_both_engines(engine):
    with pytest.raises(ImageMissing) as info:
        engine.inspect_image("localhost/dal-does-not-exist:0")
    assert info.value.image == "localhost/dal-does-not-exist:0"
    assert info.value.argv[0] == engine.runtime


def test_compose_provider_up_with_published_port(engine, tracker, tmp_path):
    image = tracker.image(engine, f"localhost/{tracker.name()}:1")
    lab.make_busybox_image(engine, image, files={"/var/www/index.html": f"served-by-{engine.runtime}\n"})
    port = free_port()
    (tmp_path / "docker-compose.yaml").write_text(textwrap.dedent(f"""\
        services:
          web:
            image: {image}
            command: ["httpd", "-f", "-p", "8080", "-h", "/var/www"]
            ports: ["127.0.0.1:{port}:8080"]
        """))
    provider = engine.compose()
    assert provider.version
    project = tracker.name("dalproj")
    try:
        engine.compose_run(["up", "-d"], project_dir=str(tmp_path), project_name=project, timeout=180)

        def body():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                return resp.read().decode()

        assert wait_until(body, timeout=60, what="httpd via compose") == f"served-by-{engine.runtime}\n"
    finally:
        engine.compose_run(["down", "-v"], project_dir=str(tmp_path), project_name=project,
                           check=False, timeout=180)
    leftover = engine.run(["ps", "-a", "--format", "{{.Names}}"]).stdout
    assert project not in leftover


def test_doctor_reports_both_engines():
    for rt in ("docker", "podman"):
        require_engine(rt)
    report = doctor.diagnose()
    assert report["usable"] == ["docker", "podman"]
    for rt in ("docker", "podman"):
        entry = report["runtimes"][rt]
        assert entry["daemon_answers"] and entry["compose_version"] and entry["storage_driver"]
        assert entry["architecture"] == report["host"]["architecture"]
        assert entry["free_disk_bytes"] > 0
    assert report["missing"] == []


def test_invoke_doctor_json_and_no_engine(tmp_path):
    require_engine("docker")
    env = dict(os.environ)
    res = subprocess.run([sys.executable, "-m", "invoke", "doctor", "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "docker" in json.loads(res.stdout)["usable"]
    # With neither client on PATH: non-zero exit and the install command is named.
    env["PATH"] = str(Path(sys.executable).parent)
    (tmp_path / "bin").mkdir()
    res = subprocess.run([sys.executable, "-m", "invoke", "doctor"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "docker is not installed" in res.stdout and "apt-get install -y docker.io" in res.stdout
    assert "no container engine answers" in res.stderr


def test_throwaway_dockerd_starts_and_is_removed():
    require_engine("docker")
    daemon = lab.Dockerd()
    with daemon as engine:
        assert engine.env["DOCKER_HOST"].startswith("unix:///tmp/dal-d-")
        facts = engine.facts()
        assert facts["storage_driver"] and facts["data_root"].startswith(str(daemon.root))
        assert engine.run(["images", "-q"]).stdout.strip() == ""
        pid = daemon.proc.pid
    assert not daemon.root.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_dind_without_network(docker_engine, tracker):
    image = tracker.image(docker_engine, f"localhost/{tracker.name()}:1")
    lab.make_busybox_image(docker_engine, image)
    lab.ensure_dind_image(docker_engine)
    with lab.DindContainer(docker_engine) as dind:
        links = dind.exec(["ip", "-o", "link"]).stdout if dind.exec(["which", "ip"]).ok else \
            dind.exec(["cat", "/proc/net/dev"]).stdout
        assert "lo" in links and "eth0" not in links, links
        dind.load_images([image])
        res = dind.inner.run(["run", "--rm", "--network", "none", image, "echo", "inside"])
        assert res.stdout.strip() == "inside"
        name = dind.name
    assert name not in docker_engine.run(["ps", "-a", "--format", "{{.Names}}"]).stdout


def test_podman_and_docker_are_independent(docker_engine, podman_engine, tracker):
    ref = f"localhost/{tracker.name()}:1"
    tracker.image(docker_engine, ref)
    lab.make_busybox_image(docker_engine, ref)
    assert docker_engine.image_exists(ref)
    assert not podman_engine.image_exists(ref)
    assert isinstance(Engine("podman").facts()["rootless"], bool)
