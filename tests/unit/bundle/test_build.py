"""scripts.bundle.build's pure parts around signing and the strict tree: plan, copy, prune, install.sh (no engine)."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from scripts.bundle import build
from scripts.bundle import manifest as mf
from scripts.core.errors import AirgapError
from scripts.dify.plan import ImagePlan, PlannedImage
from scripts.engine.client import Engine
from scripts.plugins import sign


def _plan(tmp_path: Path, **options) -> build.BundlePlan:
    images = ImagePlan(str(tmp_path), ".env", ["core"], ["weaviate"],
                       [PlannedImage("langgenius/dify-api:0.0.0", ["api"], ["core"])], dify_version="0.0.0")
    return build.make_plan(images, version="0.0.0", project_dir=tmp_path, output=tmp_path / "out",
                           platform="linux/amd64", compression="zstd", chunk_size=None, pull="never",
                           target_python="3.9", **options)


def test_a_wrong_sign_key_fails_when_planning_before_any_pull(tmp_path: Path, site_keys):
    with pytest.raises(sign.SignatureError, match="RSA PRIVATE KEY"):
        _plan(tmp_path, sign_key=str(site_keys[1]))
    plan = _plan(tmp_path, sign_key=str(site_keys[0]))
    assert plan.sign_key == str(site_keys[0])
    assert f"sign {plan.final_dir / mf.MANIFEST} with {site_keys[0]} > {mf.SIGNATURE}" in plan.render(Engine("docker"))


def test_prune_empty_dirs_leaves_only_directories_holding_files(tmp_path: Path):
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "keep" / "sub").mkdir(parents=True)
    (tmp_path / "keep" / "sub" / "f").write_text("x")
    (tmp_path / "keep" / "empty").mkdir()
    build.prune_empty_dirs(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == \
        ["keep", "keep/sub", "keep/sub/f"]
    assert tmp_path.is_dir()


def test_copy_tree_leaves_symlinks_out_and_says_so(tmp_path: Path, caplog):
    src = tmp_path / "docker"
    src.mkdir()
    (src / "docker-compose.yaml").write_text("services: {}\n")
    (src / "passwd").symlink_to("/etc/passwd")
    (src / "etc").symlink_to("/etc", target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="dify_airgap"):
        build.copy_tree(src, tmp_path / "copy")
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["docker-compose.yaml"]
    assert "passwd is a symlink: not copied" in caplog.text and "etc is a symlink" in caplog.text


def test_install_sh_keeps_bytecode_out_of_the_bundle_and_makes_its_default_venv_afresh(tmp_path: Path):
    script = tmp_path / "install.sh"
    script.write_text(build.INSTALL_SH.replace("@TARGET_PYTHON@", "3.9"))
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert 'export PYTHONPYCACHEPREFIX="$VENV/pycache"' in text  # in the dify-airgap wrapper it writes
    assert 'if [ -z "${DIFY_AIRGAP_VENV:-}" ]; then CLEAR=--clear' in text
    assert '"$PY" -m venv $CLEAR "$VENV"' in text


@pytest.mark.parametrize("text, size", [("700M", 700 << 20), ("4000M", 4000 << 20), ("1.5g", 3 << 29), (None, None)])
def test_chunk_sizes(text, size):
    assert build.parse_chunk_size(text) == size


def test_a_chunk_of_4g_is_warned_about_fat32_and_a_tiny_one_refused(caplog):
    with caplog.at_level(logging.WARNING, logger="dify_airgap"):
        assert build.parse_chunk_size("4G") == 4 << 30
    assert "do not fit FAT32" in caplog.text and "use 4000M" in caplog.text
    with pytest.raises(AirgapError, match="below 1 MiB"):
        build.parse_chunk_size("10k")


def test_the_site_env_files_of_the_build_box_never_enter_a_bundle(tmp_path):
    """.env, middleware.env (Dify's dev setup has developers make it) and envs/**/*.env hold the build box's
    secrets: left out; their examples go in."""
    src = tmp_path / "docker"
    for rel in (".env", "middleware.env", "envs/middleware.env", "envs/middleware.env.example", ".env.example",
                "docker-compose.yaml"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("DB_PASSWORD=buildbox-secret\n")
    build.copy_tree(src, tmp_path / "out", build.PROJECT_EXCLUDES)
    copied = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert copied == [".env.example", "docker-compose.yaml", "envs/middleware.env.example"]
