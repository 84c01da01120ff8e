"""`invoke upgrade` / `invoke rollback` on real engines (#16 item 3), from bundles of the REAL 1.11.3 and 1.16.0
projects with stand-ins: 1.11.3 installed with data; an upgrade to a BROKEN 1.16.0 (its sandbox never gets
healthy) fails and says how to roll back; the rollback returns 1.11.3 with its .env and data and check passes;
then the upgrade to the real 1.16.0 passes check with the data unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import pytest

from scripts.core.errors import AirgapError
from scripts.dify import deployment as dep
from scripts.engine.client import Engine
from scripts.flows import upgrade as upgrader
from scripts.host import install as installer
from tests.lab import e2e, standins
from tests.lab import host as lab
from tests.lab.host import free_port

from ..conftest import RELEASES, require_engine

pytestmark = pytest.mark.integration

OLD, NEW = RELEASES[0], RELEASES[-1]


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_a_failed_upgrade_rolls_back_with_its_data_then_the_real_upgrade_passes(runtime, tmp_path, request):
    build = require_engine("docker")
    env = {} if runtime == "docker" else request.getfixturevalue("podman_store")
    if runtime == "podman":
        lab.allow_podman_internal_networks()
    engine = Engine(runtime, env=env)
    with standins.present(build, [*standins.default_images(OLD), *standins.default_images(NEW)]):
        old = e2e.standin_bundle(build, tmp_path / "old", OLD)
        broken = e2e.standin_bundle(build, tmp_path / "broken", NEW, broken=True)  # its sandbox never gets healthy
        new = e2e.standin_bundle(build, tmp_path / "new", NEW)
    ports = {"EXPOSE_NGINX_PORT": str(free_port()), "EXPOSE_NGINX_SSL_PORT": str(free_port()),
             "EXPOSE_PLUGIN_DEBUGGING_PORT": str(free_port())}
    prefix = (tmp_path / "opt-dify").resolve()
    opts = installer.InstallOptions(bundle=old, runtime=runtime, prefix=prefix, server_ip="10.1.2.3", overrides=ports,
                                    timeout=240, project_name=f"dalupg{uuid.uuid4().hex[:8]}", engine_env=env)
    try:
        installer.install(opts)
        storage = prefix / "docker" / "volumes" / "app" / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        (storage / "upload-1.txt").write_bytes(os.urandom(4096))
        data = _files(prefix / "docker" / "volumes" / "app")
        env_before = (prefix / "docker" / ".env").read_bytes()

        plan = upgrader.upgrade(installer.InstallOptions(bundle=new, runtime=runtime, prefix=prefix, dry_run=True))
        assert any("backup" in s and "planned" in s for s in plan.steps)
        assert dep.load(prefix).dify_version == OLD and not upgrader.point_path(prefix).exists(), "a dry run changed"

        with pytest.raises(AirgapError, match="upgrade failed at install") as failed:
            upgrader.upgrade(installer.InstallOptions(bundle=broken, runtime=runtime, prefix=prefix, timeout=60),
                             check_wait=30)
        assert "sandbox" in str(failed.value) and f"invoke rollback --prefix {prefix}" in failed.value.hint
        point = json.loads(upgrader.point_path(prefix).read_text())
        assert point["from_version"] == OLD and Path(point["backup"]).is_dir()

        back = upgrader.rollback(prefix, check_wait=150)
        assert back.check is not None and back.check.ok, back.render()
        assert dep.load(prefix).dify_version == OLD and f"Dify {OLD}" in back.check.by_name("deployment").detail
        assert (prefix / "docker" / ".env").read_bytes() == env_before
        assert _files(prefix / "docker" / "volumes" / "app") == data
        assert not upgrader.point_path(prefix).exists()

        done = upgrader.upgrade(installer.InstallOptions(bundle=new, runtime=runtime, prefix=prefix, timeout=240))
        assert done.check is not None and done.check.ok, done.render()
        assert dep.load(prefix).dify_version == NEW
        assert _files(prefix / "docker" / "volumes" / "app") == data
    finally:
        if (prefix / dep.STATE_FILE).exists():
            installer.down(prefix)
    label = "io.podman.compose.project" if engine.is_podman else "com.docker.compose.project"
    assert not engine.run(["ps", "-a", "-q", "--filter", f"label={label}={opts.project_name}"],
                          mutates=False).stdout.strip()
