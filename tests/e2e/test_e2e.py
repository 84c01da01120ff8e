"""The whole flow in throwaway containers: online bundle -> air-gapped install + check (nox -s e2e-*)."""

from __future__ import annotations

import re

import pytest

from scripts.bundle.manifest import load_manifest
from scripts.core.errors import AirgapError
from scripts.engine.client import Engine
from tests.lab import e2e, standins

from ..conftest import RELEASES, require_engine

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_bundle_then_airgapped_install_and_check(runtime, release):
    require_engine("docker")  # the outer engine that runs the throwaway containers
    transcript = e2e.run(runtime, version=release)
    print(transcript)
    assert "network interfaces: lo\n" in transcript
    assert "DNS lookup of pypi.org inside: FAILS" in transcript
    assert "sha256sum -c: OK" in transcript
    assert re.search(r"sbom.cdx.json: valid CycloneDX 1.6, \d+ components", transcript)  # beside the bundle
    assert "nothing changed" in transcript  # the second install
    # check's first row: the install recorded the release its compose file runs
    assert re.search(rf"compose project \S+, Dify {re.escape(release)}\b", transcript)
    if runtime == "podman":
        assert "podman-compose preinstalled: no" in transcript
        assert "podman-compose installed from the bundle's wheels" in transcript


def test_bundle_missing_an_image_fails_at_the_missing_image_check_docker():
    require_engine("docker")
    with pytest.raises(AirgapError) as info:
        e2e.run("docker", drop_image="semitechnologies/weaviate:1.27.0")
    message = str(info.value)
    print(message[-3000:])
    assert "semitechnologies/weaviate:1.27.0 (service: weaviate)" in message
    assert "Nothing was started" in message


def test_network_use_on_the_airgapped_side_fails_docker():
    """Negative: the air-gapped container really has no way out (pip, registry pull, DNS all fail)."""
    outer = require_engine("docker")
    with e2e.GapContainer(outer, "docker") as gap:
        assert gap.interfaces() == ["lo"]
        assert gap.run(["python3", "-m", "venv", "/tmp/v"], timeout=120).ok
        pip = gap.run(["/tmp/v/bin/pip", "download", "--no-cache-dir", "--retries", "0", "--timeout", "5",
                       "-d", "/tmp/x", "invoke"], timeout=180)
        assert not pip.ok and "invoke" in pip.stdout + pip.stderr
        pull = gap.inner.run(["pull", "busybox:latest"], check=False, timeout=120)
        assert not pull.ok and pull.stderr
        dns = gap.run(["python3", "-c", "import socket; socket.getaddrinfo('registry-1.docker.io', 443)"])
        assert not dns.ok and "gaierror" in dns.stderr
    assert not Engine("docker").probe(["inspect", gap.name]).ok, "the air-gapped container was not removed"


def test_upgrade_that_fails_rolls_back_then_the_upgrade_passes_in_the_airgapped_container(tmp_path):
    """#16: 1.11.3 installed with data (a file; rows in a REAL PostgreSQL) in a --network none container;
    `dify-airgap upgrade` to a 1.16.0 whose sandbox never gets healthy fails and names the rollback; `dify-airgap
    rollback` returns 1.11.3 with its data; the upgrade to the real 1.16.0 passes check with the data unchanged.
    Both 1.16.0 bundles are upgrade (delta) bundles cut against the 1.11.3 one."""
    outer = require_engine("docker")
    old, new = RELEASES[0], RELEASES[-1]
    with standins.present(outer, [*standins.default_images(old), *standins.default_images(new)]), \
            e2e.upgrade_build_box(outer, [old, new], tmp_path) as box:
        first = e2e.standin_bundle(box, tmp_path / "old", old)
        bundles = [first, *(e2e.standin_bundle(box, tmp_path / name, new, broken=name == "broken", against=first)
                            for name in ("broken", "new"))]
    assert all(load_manifest(b)["delta"]["kept_images"] for b in bundles[1:])  # postgres, redis... not carried
    transcript = e2e.upgrade_airgapped(outer, *bundles)
    print(transcript)
    assert "network interfaces: lo\n" in transcript
    parts = transcript.split("$ ")
    checks = [p for p in parts if p.startswith(f"{e2e.VENV}/bin/dify-airgap check")]
    assert len(checks) == 2
    assert f"Dify {old}" in checks[0] and "upload-1.bin: OK" in checks[0] and "rows: 100" in checks[0]
    assert f"Dify {new}" in checks[1] and "upload-1.bin: OK" in checks[1] and "rows: 100" in checks[1]
