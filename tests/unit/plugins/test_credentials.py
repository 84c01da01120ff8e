"""Credentials around plugins: a password in a marketplace/index/mirror URL is never printed nor written into a
bundle's manifest; `plugin-keygen` never writes a key through a symbolic link."""

from __future__ import annotations

import os
import stat
import sys
from types import SimpleNamespace

import pytest
from invoke import Context, Exit

import tasks
from scripts.bundle import build as bundler
from scripts.core import console
from scripts.core.errors import UsageError
from scripts.plugins import sign as plugin_sign
from scripts.plugins import wheels as plugin_wheels
from scripts.plugins.sign import SignatureError

PASSWORD = "s3cret-in-url"


@pytest.fixture
def stderr_log(capsys):
    """The toolkit's log handler bound to this test's captured stderr, verbose (DEBUG shows commands)."""
    for handler in list(console.LOG.handlers):
        console.LOG.removeHandler(handler)
    console.setup_logging(verbose=True)
    yield capsys
    for handler in list(console.LOG.handlers):
        console.LOG.removeHandler(handler)


def test_a_download_url_password_is_never_printed(tmp_path, stderr_log):
    url = f"http://mirror-user:{PASSWORD}@127.0.0.1:9/plugins/x.difypkg"   # nothing listens on port 9
    with pytest.raises(Exit) as caught:
        tasks.repackage(Context(), url, out=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    printed = str(caught.value.message) + "".join(stderr_log.readouterr())
    assert "cannot download" in printed and "mirror-user:***@127.0.0.1:9" in printed
    assert PASSWORD not in printed


def test_a_marketplace_url_password_is_never_printed(tmp_path, stderr_log):
    with pytest.raises(Exit) as caught:
        tasks.repackage(Context(), "langgenius/openai:0.2.7", out=str(tmp_path / "out"),
                        cache_dir=str(tmp_path / "cache"), marketplace_url=f"http://me:{PASSWORD}@127.0.0.1:9")
    printed = str(caught.value.message) + "".join(stderr_log.readouterr())
    assert "me:***@127.0.0.1:9" in printed and PASSWORD not in printed
    tasks.repackage(Context(), "langgenius/openai:0.2.7", out=str(tmp_path / "out"), dry_run=True,
                    marketplace_url=f"http://me:{PASSWORD}@127.0.0.1:9")           # the dry run's plan too
    assert PASSWORD not in "".join(stderr_log.readouterr())


def test_uv_commands_are_logged_without_the_index_password(tmp_path, stderr_log):
    argv = [sys.executable, "-c", "pass", "--index-url", f"https://idx-user:{PASSWORD}@pypi.example.local/simple"]
    assert plugin_wheels._run(argv, cwd=tmp_path).returncode == 0
    err = stderr_log.readouterr().err
    assert "idx-user:***@pypi.example.local" in err and PASSWORD not in err


def test_a_bundle_manifest_never_holds_a_plugin_url_password(tmp_path, monkeypatch):
    result = SimpleNamespace(path=tmp_path / "plugins" / "x.difypkg", identifier="a/x:1@0", compressed_size=1,
                             uncompressed_size=2, sha256="0", signed=False, daemon_version="0.5.2",
                             source=f"https://u:{PASSWORD}@plugins.example.local/x.difypkg")
    monkeypatch.setattr(bundler.plugins, "repackage_many", lambda *a, **k: [result])
    monkeypatch.setattr(bundler.plugin_daemon, "daemon_version_from_compose", lambda path: "0.5.2")
    plan = SimpleNamespace(project_dir=tmp_path, plugins=["x"], platform="linux/amd64", plugin_sign_key=None)
    (entry,) = bundler.bundle_plugins(plan, tmp_path / "plugins")
    assert entry["source"] == "https://u:***@plugins.example.local/x.difypkg"


# --- plugin-keygen and links ---------------------------------------------------------------------------

def test_keygen_refuses_a_dangling_link_at_the_key_path(tmp_path):
    out = tmp_path / "keys"
    out.mkdir()
    target = tmp_path / "elsewhere" / "planted.pem"
    (out / "site.private.pem").symlink_to(target)
    for force in (False, True):
        with pytest.raises(SignatureError, match=r"site\.private\.pem is a symbolic link .*planted\.pem"):
            plugin_sign.write_keypair(out, name="site", bits=1024, force=force)
    assert not target.exists() and not target.parent.exists()        # nothing was written where it pointed
    assert sorted(p.name for p in out.iterdir()) == ["site.private.pem"]


def test_keygen_refuses_a_link_to_an_existing_file_even_with_force(tmp_path):
    out = tmp_path / "keys"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "site.public.pem").symlink_to(victim)
    with pytest.raises(SignatureError, match="symbolic link"):
        plugin_sign.write_keypair(out, name="site", bits=1024, force=True)
    assert victim.read_text() == "keep me"


def test_keygen_force_replaces_real_files_only_and_keeps_0600(tmp_path):
    private, public = plugin_sign.write_keypair(tmp_path / "keys", name="site", bits=1024)
    old = private.read_bytes()
    private2, _ = plugin_sign.write_keypair(tmp_path / "keys", name="site", bits=1024, force=True)
    assert private2.read_bytes() != old and stat.S_IMODE(private2.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    (tmp_path / "keys" / "dir.private.pem").mkdir()
    with pytest.raises(SignatureError, match="exists and is not a file"):
        plugin_sign.write_keypair(tmp_path / "keys", name="dir", bits=1024, force=True)


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 101])
def test_keygen_name_is_a_plain_stem(tmp_path, name):
    with pytest.raises(UsageError, match="plain file name stem"):
        plugin_sign.write_keypair(tmp_path / "keys", name=name, bits=1024)
    assert not (tmp_path / "escape.private.pem").exists() and not os.listdir(tmp_path)


def test_keygen_task_names_the_link(tmp_path):
    (tmp_path / "dify-plugin-site.private.pem").symlink_to(tmp_path / "nowhere")
    with pytest.raises(Exit, match="is a symbolic link") as caught:
        tasks.plugin_keygen(Context(), out=str(tmp_path), bits=1024)
    assert caught.value.code == 1
