"""A non-editable install works: `pip install .` (as a wheel) into a fresh venv, then the `dify-airgap` console
script lists the same tasks as `invoke --list` in the checkout, and finds the data files; no lab code ships."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tasks(output: str) -> set[str]:
    return {line.split()[0] for line in output.splitlines() if line.startswith("  ") and line.strip()}


def test_wheel_install_runs_the_same_tasks_and_ships_no_lab(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(wheels), str(ROOT)], check=True, cwd=tmp_path, timeout=300)
    wheel = next(wheels.glob("dify_airgap-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("tests/") or "/lab/" in n], "lab/test code in the wheel"
    assert any(n.endswith("share/dify-airgap/tasks.py") for n in names)
    assert any(n.endswith("share/dify-airgap/env-templates/offline.env") for n in names)
    assert "scripts/dify/secrets.yaml" in names, "the secret groups (package data) are not in the wheel"

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    # the dependencies (invoke, pyyaml...) from this test's environment, AFTER the venv's own site-packages;
    # a path in a .pth is not scanned for .pth files, so this env's editable install of the checkout stays out
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, cwd=tmp_path, timeout=300)
    where = subprocess.run([str(py), "-c", "import scripts.core.resources as r; print(r.TOOLKIT_ROOT)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(env_dir), f"the installed toolkit reads its data from {where}"
    assert (Path(where) / "compose-overrides" / "podman.yaml").is_file()
    groups = subprocess.run([str(py), "-c", "from scripts.dify.envsecrets import SECRET_GROUPS as g; print(g[0].keys)"],
                            cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert groups == "('SECRET_KEY',)"

    listed = subprocess.run([str(env_dir / "bin" / "dify-airgap"), "--list"], cwd=tmp_path,
                            capture_output=True, text=True, check=True).stdout
    in_checkout = subprocess.run([sys.executable, "-m", "invoke", "--list"], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout
    assert _tasks(listed) == _tasks(in_checkout) and {"bundle", "install", "verify"} <= _tasks(listed)
