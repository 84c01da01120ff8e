"""Real repackaging: wheels from PyPI for cp312 manylinux, proof installs inside a network namespace,
a marketplace served on 127.0.0.1. Needs PyPI and (as root) `unshare -n`; in CI a missing one fails."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import zipfile
from pathlib import Path

import pytest

from scripts.plugins import common as plugin_common
from scripts.plugins import repackage as plugins
from scripts.plugins import sign as plugin_sign
from scripts.plugins.common import MissingWheels, OfflineInstallFailed, PluginError
from scripts.plugins.daemon import Target

from ..conftest import IN_CI
from .difypkg import make_difypkg

#: one worker for the module: its fixtures download and build wheel caches once
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("plugins_offline")]

@pytest.fixture(scope="session", autouse=True)
def _needs_isolation():
    prefix, label = plugins.isolation_prefix()
    if not prefix:
        reason = f"no network namespace for the offline proof ({label})"
        if IN_CI:
            pytest.fail(f"CI: {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def wheel_cache(tmp_path_factory) -> Path:
    """One download cache for the whole session (dify_plugin's closure is ~12 MB from PyPI)."""
    return tmp_path_factory.mktemp("plugin-cache")


@pytest.fixture(scope="session")
def keypair(tmp_path_factory) -> tuple[Path, Path]:
    return plugin_sign.write_keypair(tmp_path_factory.mktemp("keys"), bits=2048)


@pytest.fixture(scope="session")
def repacked(tmp_path_factory, wheel_cache) -> plugins.RepackResult:
    """The demo plugin repackaged for cp312 manylinux x86_64 on this cp311 machine, proven in
    target mode (uv --python-version 3.12 --python-platform, no 3.12 interpreter used)."""
    src = make_difypkg(tmp_path_factory.mktemp("src") / "demo.difypkg")
    out = tmp_path_factory.mktemp("out")
    [result] = plugins.repackage_many([str(src)], out, python="3.12", arch="amd64", cache_dir=wheel_cache,
                                      proof_python=False)
    return result


def test_repackage_for_cp312_manylinux_x86_64(repacked):
    r = repacked
    assert r.path.is_file() and r.path.name == "airgaptest-demo_tool_0.0.1-offline-py312-amd64.difypkg"
    assert r.proof.mode == "target" and "unshare" in r.proof.isolation
    assert r.proof.packages == r.wheels > 10
    assert r.identifier == f"airgaptest/demo_tool:0.0.1@{plugin_sign.package_checksum(r.path)}"
    with zipfile.ZipFile(r.path) as zf:
        names = zf.namelist()
        infos = zf.infolist()
        requirements = zf.read("requirements.txt").decode().splitlines()
        ignore = zf.read(".difyignore").decode()
    assert not any(i.is_dir() for i in infos) and {i.compress_type for i in infos} == {zipfile.ZIP_DEFLATED}
    assert names[:6] == ["manifest.yaml", "provider/demo.yaml", "main.py", "_assets/icon.svg", "README.md",
                         ".difyignore"]
    wheels = [n for n in names if n.startswith("wheels/")]
    assert len(wheels) == r.wheels
    assert any(n.startswith("wheels/dify_plugin-") and n.endswith("-py3-none-any.whl") for n in wheels)
    core = [n for n in wheels if n.startswith("wheels/pydantic_core-")]
    assert core and "cp312-cp312" in core[0] and "x86_64" in core[0]
    assert any(n.startswith("wheels/orjson-") and "cp312" in n and "x86_64" in n for n in wheels)
    assert requirements[:2] == ["--no-index", "--find-links ./wheels/"]
    assert any(line.startswith("dify-plugin==") for line in requirements)
    assert "wheels/" not in ignore and ".venv" in ignore
    assert sum(i.file_size for i in infos) == r.uncompressed_size
    assert r.uncompressed_size < plugins.DEFAULT_MAX_PACKAGE_SIZE and r.advice == []
    print(f"\nmeasured: {r.wheels} wheels, {r.wheels_size / 2**20:.1f} MiB of wheels; package "
          f"{r.compressed_size / 2**20:.1f} MiB zip / {r.uncompressed_size / 2**20:.1f} MiB unpacked "
          f"(limit {plugins.DEFAULT_MAX_PACKAGE_SIZE / 2**20:.0f} MiB)")


def _without(src: Path, dst: Path, drop_prefix: str) -> str:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        dropped = [n for n in zin.namelist() if n.startswith(drop_prefix)]
        for info in zin.infolist():
            if info.filename not in dropped:
                zout.writestr(info, zin.read(info))
    assert len(dropped) == 1
    return dropped[0]


def test_offline_proof_fails_when_a_wheel_is_missing(repacked, tmp_path):
    broken = tmp_path / "broken.difypkg"
    dropped = _without(repacked.path, broken, "wheels/pydantic_core-")
    with pytest.raises(OfflineInstallFailed, match="offline install failed") as err:
        plugins.prove_offline(broken, Target("3.12", "amd64"), python_exe=False)
    assert "pydantic-core" in str(err.value) or "pydantic_core" in str(err.value), dropped
    # the intact package still proves
    assert plugins.prove_offline(repacked.path, Target("3.12", "amd64"), python_exe=False).packages == \
        repacked.wheels


def test_offline_proof_with_a_real_312_interpreter_like_the_daemon(repacked):
    python = plugins.find_target_python("3.12")
    if not python:
        pytest.skip("no Python 3.12 interpreter here; the target-tag proof above covers the install")
    proof = plugins.prove_offline(repacked.path, Target("3.12", "amd64"))
    assert proof.mode == "venv" and proof.packages == repacked.wheels
    # the daemon's own command (0.5.2, PIP_VERBOSE defaults to true) in the venv it creates
    assert proof.daemon_command == "uv pip install -r requirements.txt -vvv" and proof.exact
    assert proof.commands[1].endswith(" pip install -r requirements.txt -vvv")


def test_signed_arm64_with_pyproject_and_lock_removed(tmp_path, wheel_cache, keypair):
    src = make_difypkg(tmp_path / "p.difypkg", extra={
        "pyproject.toml": '[project]\nname = "demo"\nversion = "0.0.1"\nrequires-python = ">=3.11"\n'
                          'dependencies = ["dify_plugin>=0.4.0", "orjson"]\n',
        "uv.lock": "version = 1\n", ".verification.dify.json": '{"authorized_category":"langgenius"}'})
    [r] = plugins.repackage_many([str(src)], tmp_path / "out", arch="arm64", sign_key=keypair[0],
                                 cache_dir=wheel_cache)
    assert r.signed and r.proof.mode == "target"                       # no arm64 interpreter here
    with zipfile.ZipFile(r.path) as zf:
        names = zf.namelist()
    assert "pyproject.toml" not in names and "uv.lock" not in names
    assert names[-1] == ".verification.dify.json" and names.count(".verification.dify.json") == 1
    assert any("pydantic_core-" in n and "aarch64" in n for n in names)
    result = plugin_sign.verify_package(r.path, [keypair[1]])
    assert result.verified and result.category == "community"
    assert any("removed pyproject.toml" in n for n in r.notes)


def test_signing_for_a_daemon_without_third_party_keys_warns(tmp_path, wheel_cache, keypair):
    src = make_difypkg(tmp_path / "p.difypkg")
    [r] = plugins.repackage_many([str(src)], tmp_path / "out", daemon_version="0.0.6", sign_key=keypair[0],
                                 cache_dir=wheel_cache, prove=False)
    assert r.signed and r.proof is None
    assert any("cannot verify third-party signatures" in n and "FORCE_VERIFYING_SIGNATURE=false" in n
               for n in r.notes)


def test_keep_pyproject_for_daemon_053(tmp_path, wheel_cache):
    src = make_difypkg(tmp_path / "p.difypkg", requirements=None, extra={
        "pyproject.toml": '[project]\nname = "demo"\nversion = "0.0.1"\nrequires-python = ">=3.11"\n'
                          'dependencies = ["dify_plugin>=0.4.0", "orjson"]\n'})
    [r] = plugins.repackage_many([str(src)], tmp_path / "out", daemon_version="0.5.3", keep_pyproject=True,
                                 cache_dir=wheel_cache, proof_python=False)
    with zipfile.ZipFile(r.path) as zf:
        pyproject = zf.read("pyproject.toml").decode()
        requirements = zf.read("requirements.txt").decode()
    assert "no-index = true" in pyproject and requirements.startswith("--no-index\n")
    assert (r.proof.file, r.proof.daemon_command) == ("pyproject.toml", "uv sync --no-dev -v")
    assert "0.5.3" in r.proof.rule and not r.proof.exact              # target mode: uv read [tool.uv] offline


def test_dependency_without_usable_wheel_is_named_with_reason(tmp_path, wheel_cache):
    # PyYAML 5.4.1 has wheels only up to cp39; docopt 0.6.2 was only ever an sdist.
    src = make_difypkg(tmp_path / "bad.difypkg", requirements="pyyaml==5.4.1\ndocopt==0.6.2\n")
    with pytest.raises(MissingWheels) as err:
        plugins.repackage_many([str(src)], tmp_path / "out", cache_dir=wheel_cache)
    missing = dict(err.value.missing)
    assert missing["docopt==0.6.2"] == "sdist only (no wheels published)"
    assert missing["pyyaml==5.4.1"].startswith("no wheel for Python 3.12 (cp312)")
    assert "docopt==0.6.2" in str(err.value) and not (tmp_path / "out").exists()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - the stdlib's signature
        pass


class _Marketplace:
    """http.server on 127.0.0.1 serving DIR at /api/v1/plugins/AUTHOR/NAME/VERSION/download."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Marketplace:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_marketplace_reference_downloads_from_configured_url(tmp_path, wheel_cache, monkeypatch):
    served = tmp_path / "site" / "api/v1/plugins/airgaptest/demo_tool/0.0.1"
    served.mkdir(parents=True)
    make_difypkg(served / "download")
    monkeypatch.setenv(plugin_common.MARKETPLACE_ENV, "http://127.0.0.1:9")     # the option must win over env
    with _Marketplace(tmp_path / "site") as market:
        [r] = plugins.repackage_many(["airgaptest/demo_tool:0.0.1"], tmp_path / "out", cache_dir=wheel_cache,
                                     marketplace_url=market.url, proof_python=False)
        with pytest.raises(PluginError, match="HTTP 404"):
            plugins.repackage_many(["airgaptest/other:1.0.0"], tmp_path / "out", cache_dir=wheel_cache,
                                   marketplace_url=market.url)
    assert r.source == "airgaptest/demo_tool:0.0.1" and r.wheels > 10
    assert (wheel_cache / "packages" / "airgaptest-demo_tool_0.0.1.difypkg").is_file()
    assert r.path.parent == tmp_path / "out"
    shutil.rmtree(tmp_path / "site")
