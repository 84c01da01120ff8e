"""`invoke bundle` / `verify` / `inspect` with real engines on a small compose project."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap

import pytest

from scripts.bundle import build as bundler
from scripts.bundle import manifest, signature
from scripts.core.errors import AirgapError, Busy, ImageMissing
from scripts.core.lock import lock_path
from scripts.core.waiting import wait_until
from scripts.engine.savetap import hub_short
from scripts.plugins import sign
from tests.lab import e2e
from tests.lab import host as lab
from tests.unit.bundle.bundles import forge

from ..conftest import DAMAGE_KIND, ROOT, damage_file
from .bundles import build, one_image_project
from .difypkg import make_difypkg

pytestmark = pytest.mark.integration


@pytest.fixture
def project(engine, tracker, tmp_path):
    """Two local images (one shared by two services, one behind a profile) and a compose file."""
    tag = tracker.name("dalb")
    refs = [f"localhost/{tag}/a:1", f"localhost/{tag}/b:1"]
    for ref, char in zip(refs, "ab"):
        tracker.image(engine, ref)
        lab.make_busybox_image(engine, ref, files={f"/data/{char}": char * 300_000})
    proj = tmp_path / "docker"
    proj.mkdir()
    (proj / "docker-compose.yaml").write_text(textwrap.dedent(f"""\
        services:
          a:
            image: {refs[0]}
          a2:
            image: {refs[0]}
          b:
            image: {refs[1]}
            profiles: ["bee"]
          c:
            image: localhost/{tag}/c:1
            profiles: ["never-enabled"]
        """))
    (proj / ".env.example").write_text("COMPOSE_PROFILES=${WHICH:-bee}\n")
    (proj / ".env").write_text("SECRET_KEY=must-not-be-shipped\n")
    return engine, proj, refs


def test_bundle_is_complete_and_verifies(project, tmp_path):
    engine, proj, refs = project
    bundle = build(engine, proj, tmp_path / "out")
    data = manifest.load_manifest(bundle)
    assert sorted(i["ref"] for i in data["images"]) == sorted(refs)
    assert {i["ref"]: i["services"] for i in data["images"]}[refs[0]] == ["a", "a2"]
    assert data["runtime"] == engine.runtime and data["platform"] == bundler.host_platform()
    assert not (bundle / "docker" / ".env").exists(), ".env with secrets must never be bundled"
    for path in ("docker/docker-compose.yaml", "toolkit/tasks.py", "toolkit/scripts/engine/client.py", "install.sh"):
        assert (bundle / path).is_file(), path
    assert any(w.startswith("invoke-") for w in data["wheels"])
    assert any(w.startswith("podman_compose-") for w in data["wheels"])
    res = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert manifest.verify(bundle).ok
    index = manifest.archive_index(bundle, data)
    tags = sorted(t for entry in index for t in entry["RepoTags"])
    assert [t.replace("localhost/", "") for t in tags] == sorted(r.replace("localhost/", "") for r in refs)
    # the config digests picked out of the save stream while it was compressed are the archive's own
    configs = {hub_short(t): "sha256:" + e["Config"].rsplit("/", 1)[-1].removesuffix(".json")
               for e in index for t in e["RepoTags"]}
    assert {i["ref"]: i.get("config_id") for i in data["images"]} == {r: configs[hub_short(r)] for r in refs}
    # the transfer sheet beside it (its checks: tests/lab/e2e.check_transfer_sheet, run here on a real bundle)
    assert "valid CycloneDX 1.6" in e2e.check_transfer_sheet(bundle)
    assert not list((tmp_path / "out").glob(".*partial")), "no staging directory may remain"


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_verify_names_damaged_part(docker_engine, tracker, tmp_path, damage):
    engine = docker_engine
    proj = one_image_project(engine, tracker, tmp_path, "dalv")
    bundle = build(engine, proj, tmp_path / "out", chunk_size="1M")
    parts = manifest.load_manifest(bundle)["image_archive"]["parts"]
    assert len(parts) >= 2
    victim = bundle / parts[1]["path"]
    damage_file(victim, damage)
    report = manifest.verify(bundle)
    assert not report.ok
    assert [p.path for p in report.problems] == [parts[1]["path"]]
    assert report.problems[0].kind == DAMAGE_KIND[damage]
    res = subprocess.run([sys.executable, "-m", "invoke", "verify", str(bundle / parts[0]["path"])], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and parts[1]["path"] in res.stdout


def test_chunked_and_unchunked_hold_same_images_and_rerun_reuses(project, tmp_path, caplog):
    engine, proj, refs = project
    whole = build(engine, proj, tmp_path / "whole")
    parts = build(engine, proj, tmp_path / "parts", chunk_size="1M")
    m_whole, m_parts = manifest.load_manifest(whole), manifest.load_manifest(parts)
    assert len(m_whole["image_archive"]["parts"]) == 1 and len(m_parts["image_archive"]["parts"]) > 1
    assert m_whole["images"] == m_parts["images"]
    def images_in(bundle, data):  # image config (= image id) and tags, as the archive itself records them
        return sorted((e["Config"].split("/")[-1].replace(".json", ""), sorted(e["RepoTags"]))
                      for e in manifest.archive_index(bundle, data))

    assert images_in(whole, m_whole) == images_in(parts, m_parts)
    assert len(images_in(whole, m_whole)) == len(refs)
    before = {p.name: p.stat().st_mtime_ns for p in parts.iterdir()}
    caplog.set_level("INFO", logger="dify_airgap")
    assert build(engine, proj, tmp_path / "parts", chunk_size="1M") == parts
    assert "up to date" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in parts.iterdir()} == before


def test_failure_after_save_leaves_no_bundle(project, tmp_path):
    engine, proj, _ = project
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    with pytest.raises(AirgapError, match="could not get wheels"):
        build(engine, proj, tmp_path / "out", wheelhouse=str(empty))
    # the output dir was made for this run's lock only: removed again, or left empty
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_missing_image_fails_before_saving(project, tmp_path):
    engine, proj, refs = project
    engine.remove_images([refs[1]])
    with pytest.raises(ImageMissing, match=r"b:1 \(services: b\)"):
        build(engine, proj, tmp_path / "out")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_install_sh_bootstraps_toolkit_without_network(docker_engine, tracker, tmp_path):
    engine = docker_engine
    proj = one_image_project(engine, tracker, tmp_path, "dali")
    image = lab.ensure_dind_image(docker_engine)
    wrong = build(engine, proj, tmp_path / "py39", target_python="3.9")
    res = docker_engine.run(["run", "--rm", "--network", "none", "-v", f"{wrong}:/bundle:ro", image,
                             "sh", "/bundle/install.sh"], check=False, timeout=300)
    assert res.returncode == 1 and "wheels are for Python 3.9 but python3 is 3.11" in res.stderr
    bundle = build(engine, proj, tmp_path / "out", target_python="3.11")
    res = docker_engine.run(["run", "--rm", "--network", "none", "-v", f"{bundle}:/bundle:ro",
                             "-e", "DIFY_AIRGAP_VENV=/opt/venv", image, "sh", "-c",
                             "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' ';"
                             " echo; sh /bundle/install.sh && /opt/venv/bin/dify-airgap --list"
                             " && /opt/venv/bin/dify-airgap verify /bundle"], check=False, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines()[0].strip() == "lo"
    assert "bundle" in res.stdout and "verify" in res.stdout and "OK:" in res.stdout


def test_bundle_with_plugins_lists_them(docker_engine, tracker, tmp_path):
    engine = docker_engine
    # the daemon version (0.5.2) is read from the plugin_daemon image, as in the real Dify file
    proj = one_image_project(engine, tracker, tmp_path, "dalp", extra_services=(
        "  plugin_daemon:\n    image: langgenius/dify-plugin-daemon:0.5.2-local\n    profiles: [never]\n"))
    pkg = make_difypkg(tmp_path / "demo.difypkg", requirements="orjson\n")
    bundle = build(engine, proj, tmp_path / "out", plugins=[str(pkg)])
    data = manifest.load_manifest(bundle)
    assert len(data["plugins"]) == 1
    entry = data["plugins"][0]
    assert entry["identifier"].startswith("airgaptest/demo_tool:0.0.1@") and entry["daemon_version"] == "0.5.2"
    assert (bundle / entry["path"]).is_file() and entry["path"].startswith("plugins/")
    assert manifest.verify(bundle).ok
    assert "airgaptest/demo_tool" in manifest.inspect_text(data)


def _bundle_in_child(engine, proj, out, results, gate=None, **kwargs):
    """Child process body: build a bundle (waiting for ``gate`` to exist first, holding the output lock, when
    given) and report "ok" or the refusal."""
    if gate is not None:
        inner = bundler.build_directory

        def held_back(engine, plan):
            wait_until(gate.exists, 300, f"the test's go-ahead {gate}")
            return inner(engine, plan)
        bundler.build_directory = held_back  # this child's copy only
    try:
        build(engine, proj, out, **kwargs)
        results.put("ok")
    except Busy as exc:
        results.put(f"busy: {exc}")
    except Exception as exc:  # noqa: BLE001 - reported to the test, which names it
        results.put(f"error: {exc!r}")


def test_two_bundles_into_one_directory_one_refused_the_other_signed_and_verifies(docker_engine, tracker, tmp_path):
    """#13: two `bundle` runs into one output directory: the second is refused at once naming the first's pid;
    the first (signed with a site key) finishes, and `invoke verify` accepts it with the public key and the
    digest — and refuses it once a part and the manifest are forged."""
    engine = docker_engine
    proj = one_image_project(engine, tracker, tmp_path, "dalc")
    out, gate = tmp_path / "out", tmp_path / "go"
    private, public = sign.write_keypair(tmp_path / "keys", name="site", bits=2048)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    first = ctx.Process(target=_bundle_in_child, args=(engine, proj, out, results, gate), kwargs={"sign_key": private})
    first.start()
    try:
        wait_until(lambda: lock_path(out).is_file() and lock_path(out).read_text().startswith(str(first.pid)),
                   60, "the first bundle run to hold the output lock")
        second = ctx.Process(target=_bundle_in_child, args=(engine, proj, out, results))
        second.start()
        second.join(timeout=120)
        refused = results.get(timeout=10)
        assert refused.startswith("busy:") and f"pid {first.pid}" in refused, refused
    finally:
        gate.touch()
        first.join(timeout=600)
    assert results.get(timeout=10) == "ok"
    bundle = next(p for p in out.iterdir() if p.is_dir())
    digest = signature.bundle_digest(bundle)
    cli = [sys.executable, "-m", "invoke", "verify", str(bundle), "--public-key", str(public), "--expect-digest"]
    ok = subprocess.run([*cli, digest], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    part = manifest.load_manifest(bundle)["image_archive"]["parts"][0]["path"]
    forge(bundle, part, (bundle / part).read_bytes()[:-1] + b"x")
    forged = subprocess.run([*cli, digest], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert forged.returncode != 0 and "Traceback" not in forged.stderr
    assert "signature" in (forged.stdout + forged.stderr).lower(), forged.stdout + forged.stderr
