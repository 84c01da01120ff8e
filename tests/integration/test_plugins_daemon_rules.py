"""Every plugin shape, repackaged for cp312 amd64 AND arm64, installs with the command each plugin daemon
version runs (read from langgenius/dify-plugin-daemon at 0.5.2, 0.6.1, 0.6.3 and 0.6.10), in a venv of the
target's interpreter, inside a network namespace. The commands below are written out by hand from the daemon
source, independently of plugin_daemon.DAEMON_RULES, and run on a fresh extraction of the package. Needs PyPI
(resolution, wheels) and `unshare -n` as root; a Python 3.12 interpreter (pyenv, $DIFY_AIRGAP_TARGET_PYTHON)
and, for arm64, an aarch64 CPython 3.12 under qemu-user (tests/lab/crosspython.py builds it once)."""

from __future__ import annotations

import os
import shlex
import subprocess
import zipfile
from pathlib import Path

import pytest

from scripts.core.errors import AirgapError
from scripts.plugins import repackage as plugins
from scripts.plugins import wheels as plugin_wheels
from scripts.plugins.common import TARGET_PYTHON_ENV, OfflineInstallFailed
from scripts.plugins.daemon import Target

from ..conftest import FIXTURE_ROOT, IN_CI
from ..lab import crosspython
from .difypkg import make_difypkg

#: one worker for the module: its fixtures download and build wheel caches once
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("plugins_daemon_rules")]

# Small wheels: two pure-Python, one binary (cp312 manylinux).
DEPS = ["six==1.17.0", "orjson==3.10.18", "idna==3.10"]
PYPROJECT = ('[project]\nname = "demo-tool"\nversion = "0.0.1"\nrequires-python = ">=3.11"\n'
             f'dependencies = [{", ".join(repr(d).replace(chr(39), chr(34)) for d in DEPS)}]\n\n'
             '[dependency-groups]\ndev = [\n    "pytest>=8",\n]\n')
SHAPES = ("requirements", "pyproject", "pyproject+lock")
VERSIONS = ("0.5.2", "0.6.1", "0.6.3", "0.6.10")
ARCHES = ("amd64", "arm64")
OFFICIAL = FIXTURE_ROOT / "plugins" / "langgenius-agent_0.0.14.difypkg"
MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}
# orjson is a C extension: importing it runs the wheel's machine code on the target's CPU (emulated for arm64)
IMPORTS = "import platform, six, orjson, idna; assert orjson.dumps({'a': 1}) == b'{\"a\":1}'; print(platform.machine())"
REQ_CMD = ["pip", "install", "-r", "requirements.txt", "-vvv"]    # PIP_VERBOSE defaults to true


def expected_command(version: str, shape: str, keep: bool) -> list[str]:
    """By hand from setup_python_environment.go: 0.5.2 reads requirements.txt only; from 0.5.3
    pyproject.toml wins (`uv sync --no-dev`, `-v`), with `--frozen` from 0.5.5 when uv.lock exists."""
    if not keep or shape == "requirements" or version == "0.5.2":
        return REQ_CMD
    return ["sync", "--no-dev", "--frozen", "-v"] if shape == "pyproject+lock" else ["sync", "--no-dev", "-v"]


@pytest.fixture(scope="module", autouse=True)
def _needs_isolation_and_312():
    prefix, label = plugins.isolation_prefix()
    if not prefix or "unshare -n" not in label:
        (pytest.fail if IN_CI else pytest.skip)(f"no network namespace for the offline proof ({label})")


@pytest.fixture(scope="module")
def python312() -> str:
    found = plugins.find_target_python("3.12", "x86_64")
    if not found:
        (pytest.fail if IN_CI else pytest.skip)("no Python 3.12 interpreter (pyenv or $DIFY_AIRGAP_TARGET_PYTHON)")
    return found


@pytest.fixture(scope="module")
def python312_arm64() -> str:
    """The arm64 daemon image's interpreter: aarch64 CPython 3.12 under qemu-user (built once per machine)."""
    try:
        return str(crosspython.ensure_python())
    except AirgapError as exc:
        (pytest.fail if IN_CI else pytest.skip)(f"no aarch64 CPython 3.12 under emulation: {exc}")


@pytest.fixture
def interpreters(request, monkeypatch):
    """arch -> the target interpreter, listed in $DIFY_AIRGAP_TARGET_PYTHON for the repackager to find by
    itself (for arm64 the x86_64 one is listed first: it must pass over it)."""
    def get(arch: str) -> str:
        found = [request.getfixturevalue("python312")]
        if arch == "arm64":
            found.append(request.getfixturevalue("python312_arm64"))
        monkeypatch.setenv(TARGET_PYTHON_ENV, os.pathsep.join(found))
        return found[-1]
    return get


@pytest.fixture(scope="module")
def wheel_cache(tmp_path_factory) -> Path:
    cache = os.environ.get("DIFY_AIRGAP_TEST_CACHE")
    return Path(cache) if cache else tmp_path_factory.mktemp("rules-cache")


@pytest.fixture(scope="module")
def pypi_lock(tmp_path_factory) -> str:
    """A uv.lock as the official plugins ship it: locked online, every source on pypi.org."""
    d = tmp_path_factory.mktemp("lock")
    (d / "pyproject.toml").write_text(PYPROJECT)
    proc = subprocess.run([plugins.uv_bin(), "lock", "--index-url", plugin_wheels.index_base()], cwd=d,
                          capture_output=True, text=True, env=plugin_wheels._uv_env())
    assert proc.returncode == 0, proc.stderr
    text = (d / "uv.lock").read_text()
    assert plugins.lock_remote_sources(text), "the online lock should point at an index"
    return text


def make_shape(path: Path, shape: str, lock: str) -> Path:
    if shape == "requirements":
        return make_difypkg(path, "\n".join(DEPS) + "\n")
    extra = {"pyproject.toml": PYPROJECT} | ({"uv.lock": lock} if shape == "pyproject+lock" else {})
    return make_difypkg(path, None, extra)


def run_netless(argv: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-n", "--", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def install_like_the_daemon(package: Path, work: Path, argv: list[str], python312: str,
                            settings_env: dict | None = None, machine: str = "x86_64",
                            imports: str = IMPORTS) -> subprocess.CompletedProcess:
    """Extract, `uv venv .venv --python 3.12`, then the daemon's command with the daemon's scrubbed env
    (VIRTUAL_ENV, PATH, UV_CACHE_DIR under the working path; no HOME, UV_*, PIP_*), all with no network."""
    plugin = work / "cwd" / "plugin"
    with zipfile.ZipFile(package) as zf:
        zf.extractall(plugin)
    uv = plugins.uv_bin()
    path = os.pathsep.join([str(Path(uv).parent), "/usr/bin", "/bin"])
    venv = run_netless([uv, "venv", ".venv", "--python", python312], plugin,
                       {"PATH": path, "UV_PYTHON_DOWNLOADS": "never", "UV_CACHE_DIR": str(work / "c0")})
    assert venv.returncode == 0, venv.stderr
    env = {"VIRTUAL_ENV": str(plugin / ".venv"), "PATH": path, "UV_CACHE_DIR": str(work / "cwd" / ".uv-cache"),
           **(settings_env or {})}
    proc = run_netless([uv, *argv], plugin, env)
    if proc.returncode == 0:
        check = run_netless([str(plugin / ".venv/bin/python"), "-c", imports], plugin, {"PATH": path})
        assert check.returncode == 0, check.stderr
        assert check.stdout.split() == [machine], check.stdout
    return proc


CASES = [(a, v, s, k) for a in ARCHES for v in VERSIONS for s in SHAPES
         for k in ((False,) if s == "requirements" else (False, True))]


@pytest.mark.parametrize("arch, version, shape, keep", CASES,
                         ids=[f"{a}-{v}-{s}-{'keep' if k else 'universal'}" for a, v, s, k in CASES])
def test_shape_installs_offline_with_the_daemon_command(arch, version, shape, keep, tmp_path, wheel_cache, pypi_lock,
                                                        interpreters):
    python = interpreters(arch)
    src = make_shape(tmp_path / "src.difypkg", shape, pypi_lock)
    [r] = plugins.repackage_many([str(src)], tmp_path / "out", python="3.12", arch=arch, daemon_version=version,
                                 keep_pyproject=keep, cache_dir=wheel_cache)
    want = expected_command(version, shape, keep)
    # the repackager's own proof ran the same command, exactly, in a venv of the target's interpreter, in a
    # namespace
    assert r.proof.exact and r.proof.mode == "venv" and "unshare -n" in r.proof.isolation
    assert r.proof.commands[0].endswith(f"--python {python}"), r.proof.commands
    assert r.proof.daemon_command == shlex.join(["uv", *want])
    assert r.proof.packages == r.wheels == 3 and r.proof.commands[1].endswith(shlex.join(want))
    assert r.proof.rule in [n for n in r.notes if n.startswith(f"daemon {version} reads")][0]
    with zipfile.ZipFile(r.path) as zf:
        names = set(zf.namelist())
        lock = zf.read("uv.lock").decode() if "uv.lock" in names else None
        pyproject = zf.read("pyproject.toml").decode() if "pyproject.toml" in names else None
    wheels = [n for n in names if n.startswith("wheels/")]
    assert "requirements.txt" in names and len(wheels) == 3
    other = MACHINE["arm64" if arch == "amd64" else "amd64"]
    assert any("cp312-manylinux" in w and MACHINE[arch] in w for w in wheels), wheels    # orjson's binary wheel
    assert not any(other in w for w in wheels), wheels
    if keep and shape != "requirements":
        assert "no-index = true" in pyproject and "pytest" not in pyproject
        if shape == "pyproject+lock":
            assert lock and plugins.lock_remote_sources(lock) == [] and 'registry = "wheels"' in lock
            assert "pytest" not in lock and any(n.startswith("uv.lock re-locked offline") for n in r.notes)
    else:
        assert pyproject is None and lock is None
        for dropped in {"requirements": [], "pyproject": ["pyproject.toml"],
                        "pyproject+lock": ["pyproject.toml", "uv.lock"]}[shape]:
            assert any(n.startswith(f"removed {dropped}") for n in r.notes)
    # independently: a fresh extraction, the hand-written daemon command in a venv of the target's
    # interpreter, no network; then the wheels' code runs on the target's machine
    proc = install_like_the_daemon(r.path, tmp_path / "daemon", want, python, machine=MACHINE[arch])
    assert proc.returncode == 0, f"{shlex.join(want)}:\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("arch", ARCHES)
def test_the_official_agent_plugin_installs_offline_on_both_architectures(arch, tmp_path, wheel_cache, interpreters):
    """A real plugin as the marketplace ships it (langgenius-agent 0.0.14, signed by Dify, vendored from the
    daemon's testdata; dify_plugin pulls ~38 packages, several with C/Rust extensions) for Dify 1.16.0's daemon
    0.6.3: the proof is exact on both architectures, and the hand-written daemon command in a fresh venv of the
    target's interpreter, with no network, gives a venv where the plugin SDK and tiktoken's Rust core import."""
    python = interpreters(arch)
    [r] = plugins.repackage_many([str(OFFICIAL)], tmp_path / "out", python="3.12", arch=arch, daemon_version="0.6.3",
                                 cache_dir=wheel_cache)
    assert r.proof.exact and r.proof.mode == "venv" and r.proof.packages == r.wheels >= 30
    with zipfile.ZipFile(r.path) as zf:
        binary = [n for n in zf.namelist() if n.startswith("wheels/") and "-cp312-" in n]
    other = MACHINE["arm64" if arch == "amd64" else "amd64"]
    assert binary and all(MACHINE[arch] in w and other not in w for w in binary), binary
    proc = install_like_the_daemon(r.path, tmp_path / "daemon", REQ_CMD, python, machine=MACHINE[arch],
                                   imports="import platform, dify_plugin, tiktoken; print(platform.machine())")
    assert proc.returncode == 0, proc.stderr[-3000:]


#: the pyproject.toml of the official SDK plugins (e.g. dify-official-plugins agent-strategies/cot_agent): the
#: SDK alone, Python 3.12+, an empty dev group; they ship requirements.txt AND pyproject.toml + uv.lock
SDK_PYPROJECT = ('[project]\nname = "sdk_tool"\nversion = "0.1.0"\nrequires-python = ">=3.12"\n'
                 'dependencies = [\n    "dify_plugin>=0.5.0",\n]\n\n[dependency-groups]\ndev = []\n')


@pytest.fixture(scope="module")
def sdk_plugin(tmp_path_factory, python312) -> Path:
    """A package shaped like the official SDK plugins, its uv.lock made online as theirs are (every platform's
    wheels listed, every source on pypi.org)."""
    d = tmp_path_factory.mktemp("sdk")
    (d / "pyproject.toml").write_text(SDK_PYPROJECT)
    proc = subprocess.run([plugins.uv_bin(), "lock", "--python", python312, "--index-url", plugin_wheels.index_base()],
                          cwd=d,
                          capture_output=True, text=True, env=plugin_wheels._uv_env())
    assert proc.returncode == 0, proc.stderr
    lock = (d / "uv.lock").read_text()
    assert plugins.lock_remote_sources(lock) and "aarch64" in lock and "x86_64" in lock
    return make_difypkg(d / "sdk_tool.difypkg", "dify_plugin>=0.5.0\n",
                        {"pyproject.toml": SDK_PYPROJECT, "uv.lock": lock})


@pytest.mark.parametrize("arch", ARCHES)
def test_an_sdk_plugin_with_its_lock_syncs_frozen_offline(arch, tmp_path, wheel_cache, interpreters, sdk_plugin):
    """The official plugins' shape kept for daemon 0.6.10 (Dify 1.19's line): uv.lock re-locked against the
    bundled wheels of the target's platform only, then the daemon's `uv sync --no-dev --frozen -v` in a fresh
    venv of the target's interpreter with no network, and the SDK imported there."""
    python = interpreters(arch)
    [r] = plugins.repackage_many([str(sdk_plugin)], tmp_path / "out", python="3.12", arch=arch,
                                 daemon_version="0.6.10", keep_pyproject=True, cache_dir=wheel_cache)
    want = ["sync", "--no-dev", "--frozen", "-v"]
    assert r.proof.exact and r.proof.daemon_command == shlex.join(["uv", *want]) and r.proof.packages >= 30
    with zipfile.ZipFile(r.path) as zf:
        lock = zf.read("uv.lock").decode()
    assert plugins.lock_remote_sources(lock) == [] and 'registry = "wheels"' in lock
    other = MACHINE["arm64" if arch == "amd64" else "amd64"]
    assert MACHINE[arch] in lock and other not in lock    # the re-lock names the bundled wheels only
    proc = install_like_the_daemon(r.path, tmp_path / "daemon", want, python, machine=MACHINE[arch],
                                   imports="import platform, dify_plugin; print(platform.machine())")
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_063_with_a_mirror_set_prefers_requirements_and_stays_offline(tmp_path, wheel_cache, pypi_lock, python312):
    """0.6.3+: PIP_MIRROR_URL set (here a dead local port) -> `uv pip install -i MIRROR -r requirements.txt`
    even when pyproject.toml and uv.lock are kept; the file's --no-index wins over -i."""
    src = make_shape(tmp_path / "src.difypkg", "pyproject+lock", pypi_lock)
    mirror = "http://127.0.0.1:9/simple"
    [r] = plugins.repackage_many([str(src)], tmp_path / "out", daemon_version="0.6.3", keep_pyproject=True,
                                 cache_dir=wheel_cache, env={"PIP_MIRROR_URL": mirror, "PIP_EXTRA_ARGS": "--offline"})
    want = ["pip", "install", "-i", mirror, "-r", "requirements.txt", "-vvv", "--offline"]
    assert r.proof.daemon_command == shlex.join(["uv", *want]) and r.proof.file == "requirements.txt"
    assert install_like_the_daemon(r.path, tmp_path / "d", want, python312).returncode == 0


def test_the_namespace_blocks_a_pypi_lock(tmp_path, pypi_lock, python312):
    """Control: the official shape as shipped (PyPI-sourced uv.lock, no wheels) cannot install there, and
    the proof refuses it before running anything."""
    src = make_shape(tmp_path / "src.difypkg", "pyproject+lock", pypi_lock)
    proc = install_like_the_daemon(src, tmp_path / "d", ["sync", "--no-dev", "--frozen", "-v"], python312)
    assert proc.returncode != 0
    assert any(w in proc.stderr for w in ("Failed to fetch", "dns error", "Network is unreachable", "error sending"))
    with pytest.raises(OfflineInstallFailed, match=r"uv.lock fetches from the network: .*pypi"):
        plugins.prove_offline(src, Target("3.12", "amd64"), daemon_version="0.6.10")


def test_proof_fails_for_a_relocked_package_missing_a_wheel(tmp_path, wheel_cache, pypi_lock):
    src = make_shape(tmp_path / "src.difypkg", "pyproject+lock", pypi_lock)
    [r] = plugins.repackage_many([str(src)], tmp_path / "out", daemon_version="0.6.10", keep_pyproject=True,
                                 cache_dir=wheel_cache, prove=False)
    broken = tmp_path / "broken.difypkg"
    with zipfile.ZipFile(r.path) as zin, zipfile.ZipFile(broken, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if not info.filename.startswith("wheels/orjson-"):
                zout.writestr(info, zin.read(info))
    with pytest.raises(OfflineInstallFailed, match=r"uv sync --no-dev --frozen -v") as err:
        plugins.prove_offline(broken, Target("3.12", "amd64"), daemon_version="0.6.10")
    assert "orjson" in str(err.value)
