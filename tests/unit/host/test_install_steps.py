"""The pure steps of `invoke install`: file sync, overrides, image check, report (no container engine)."""

from __future__ import annotations

import os
from contextlib import ExitStack

import pytest
import yaml

from scripts.bundle import archive, signature
from scripts.core.errors import AirgapError, ImageMissing
from scripts.dify import deployment as dep
from scripts.dify.project import FULL, MIDDLEWARE, load_compose_yaml
from scripts.engine.client import ComposeProvider, Engine, Result
from scripts.host import install as installer
from scripts.host import overrides
from scripts.plugins import sign
from tests.unit.bundle.bundles import NAME, build_bundle

COMPOSE = """\
services:
  api:
    image: langgenius/dify-api:1.0.0
    volumes:
      - ./volumes/app/storage:/app/api/storage
      - ./certs:/certs:ro
      - named-data:/data
  db:
    image: postgres:15-alpine
    volumes:
      - ./volumes/db/data:/var/lib/postgresql/data:Z
  redis:
    image: redis:6-alpine
volumes:
  named-data:
"""


class FakeRunner:
    """Answers `image inspect REF` with rc 0 for the refs in ``present``; records every call."""

    def __init__(self, present=()):
        self.present = set(present)
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv, **kwargs) -> Result:
        argv = tuple(argv)
        self.calls.append(argv)
        ok = argv[1:3] == ("image", "inspect") and argv[3] in self.present
        return Result(argv, 0 if ok else 1, "", "" if ok else "No such image")


def _engine(runtime: str = "docker", present=()) -> Engine:
    return Engine(runtime, runner=FakeRunner(present))


def _bundle(tmp_path, *, podman_text="services: {}\n", signing=True):
    bundle = tmp_path / "bundle"
    (bundle / "docker").mkdir(parents=True)
    (bundle / "docker" / "docker-compose.yaml").write_text(COMPOSE)
    (bundle / "compose-overrides").mkdir()
    (bundle / "compose-overrides" / overrides.PODMAN_OVERRIDE).write_text(podman_text)
    if signing:
        (bundle / "compose-overrides" / "plugin-signing.yaml").write_text("# signing\n")
    return bundle


# --- sync_tree ------------------------------------------------------------------------------------

def _tree(root, files: dict[str, str]):
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_sync_tree_copies_new_files_into_an_empty_destination(tmp_path):
    src, dest, backup = tmp_path / "src", tmp_path / "dest", tmp_path / "backup"
    _tree(src, {"docker-compose.yaml": "a\n", "nginx/conf.d/default.conf": "b\n"})
    changed = installer.sync_tree(src, dest, backup, dry_run=False)
    assert changed == ["docker-compose.yaml", "nginx/conf.d/default.conf"]
    assert (dest / "nginx" / "conf.d" / "default.conf").read_text() == "b\n"
    assert not backup.exists()                      # nothing was replaced, nothing backed up
    assert not list(dest.rglob(".*.dal-tmp"))       # the temporary copies are gone


def test_sync_tree_backs_up_a_replaced_file_and_leaves_site_files_alone(tmp_path):
    src, dest, backup = tmp_path / "src", tmp_path / "dest", tmp_path / "backup"
    _tree(src, {"same.txt": "same\n", "changed.txt": "new\n"})
    _tree(dest, {"same.txt": "same\n", "changed.txt": "old\n", "site-only.txt": "mine\n"})
    changed = installer.sync_tree(src, dest, backup, dry_run=False)
    assert changed == ["changed.txt"]
    assert (dest / "changed.txt").read_text() == "new\n"
    assert (backup / "changed.txt").read_text() == "old\n"
    assert not (backup / "same.txt").exists()
    assert (dest / "site-only.txt").read_text() == "mine\n"


def test_sync_tree_never_writes_kept_paths(tmp_path):
    src, dest, backup = tmp_path / "src", tmp_path / "dest", tmp_path / "backup"
    _tree(src, {".env": "NEW=1\n", "volumes/db/x": "new\n", "volumes-extra.txt": "copied\n", "a.txt": "a\n"})
    _tree(dest, {".env": "SITE=1\n", "volumes/db/x": "data\n"})
    changed = installer.sync_tree(src, dest, backup, dry_run=False, keep=(".env", "volumes"))
    assert changed == ["a.txt", "volumes-extra.txt"]   # "volumes" keeps the folder, not a name prefix
    assert (dest / ".env").read_text() == "SITE=1\n"
    assert (dest / "volumes" / "db" / "x").read_text() == "data\n"


def test_sync_tree_dry_run_changes_nothing_and_says_what_it_would_do(tmp_path, capsys):
    src, dest, backup = tmp_path / "src", tmp_path / "dest", tmp_path / "backup"
    _tree(src, {"new.txt": "n\n", "changed.txt": "new\n"})
    _tree(dest, {"changed.txt": "old\n"})
    changed = installer.sync_tree(src, dest, backup, dry_run=True)
    assert changed == ["changed.txt", "new.txt"]
    assert (dest / "changed.txt").read_text() == "old\n"
    assert not (dest / "new.txt").exists()
    assert not backup.exists()
    out = capsys.readouterr().out.splitlines()
    assert out == [f"[dry-run] replace {dest / 'changed.txt'}", f"[dry-run] create {dest / 'new.txt'}"]


def test_sync_tree_twice_is_a_noop(tmp_path):
    src, dest, backup = tmp_path / "src", tmp_path / "dest", tmp_path / "backup"
    _tree(src, {"a.txt": "a\n", "b/c.txt": "c\n"})
    assert installer.sync_tree(src, dest, backup, dry_run=False)
    assert installer.sync_tree(src, dest, backup, dry_run=False) == []


# --- overrides ------------------------------------------------------------------------------------

def test_offline_override_sets_pull_policy_never_for_every_service(tmp_path):
    bundle = _bundle(tmp_path)
    text = overrides.offline_override(bundle / "docker")
    assert text.startswith("# Generated by dify-airgap install")
    assert yaml.safe_load(text) == {"services": {name: {"pull_policy": "never"} for name in ("api", "db", "redis")}}


def test_selinux_override_adds_z_to_bind_mounts_only(tmp_path):
    bundle = _bundle(tmp_path)
    data = yaml.safe_load(overrides.selinux_override(bundle / "docker"))
    # named volumes are not relabelled; an existing Z is left as it is; options gain ",z"
    assert data == {"services": {"api": {"volumes": ["./volumes/app/storage:/app/api/storage:z",
                                                     "./certs:/certs:ro,z"]}}}


def test_write_if_changed_writes_once_then_reports_no_change(tmp_path):
    path = tmp_path / "overrides" / "offline.yaml"
    assert installer._write_if_changed(path, "x: 1\n", dry_run=False) is True
    assert path.read_text() == "x: 1\n"
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)
    assert installer._write_if_changed(path, "x: 1\n", dry_run=False) is False
    assert installer._write_if_changed(path, "x: 2\n", dry_run=False) is True
    assert path.read_text() == "x: 2\n"


def test_write_if_changed_dry_run_writes_nothing(tmp_path, capsys):
    path = tmp_path / "overrides" / "offline.yaml"
    assert installer._write_if_changed(path, "x: 1\n", dry_run=True) is True
    assert not path.exists()
    assert capsys.readouterr().out == f"[dry-run] write {path}\n"


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_wants_selinux_relabel_on_and_off_are_explicit(runtime, monkeypatch):
    monkeypatch.setattr(overrides, "selinux_mode", lambda: pytest.fail("on/off must not probe SELinux"))
    assert overrides.wants_selinux_relabel("on", _engine(runtime)) is True
    assert overrides.wants_selinux_relabel("off", _engine(runtime)) is False


@pytest.mark.parametrize("runtime, mode, expected", [("podman", "enforcing", True), ("podman", "permissive", False),
                                                     ("docker", "enforcing", False)])
def test_wants_selinux_relabel_auto_means_podman_on_enforcing(runtime, mode, expected, monkeypatch):
    monkeypatch.setattr(overrides, "selinux_mode", lambda: mode)
    assert overrides.wants_selinux_relabel("auto", _engine(runtime)) is expected


def test_wanted_overrides_docker_without_plugin_keys_is_offline_only(tmp_path):
    bundle = _bundle(tmp_path)
    wanted = overrides.wanted(bundle, tmp_path / "opt" / "docker", _engine("docker"), "off")
    assert list(wanted) == ["offline.yaml"]
    assert wanted["offline.yaml"] == overrides.offline_override(bundle / "docker")


def test_wanted_overrides_podman_with_plugin_key_and_selinux_in_order(tmp_path):
    bundle = _bundle(tmp_path, podman_text="# podman\n")
    project = tmp_path / "opt" / "docker"
    (project / "plugin-keys").mkdir(parents=True)
    (project / "plugin-keys" / "site.public.pem").write_text("KEY\n")
    wanted = overrides.wanted(bundle, project, _engine("podman"), "on")
    assert list(wanted) == ["offline.yaml", overrides.PODMAN_OVERRIDE, "plugin-signing.yaml", "selinux.yaml"]
    assert wanted[overrides.PODMAN_OVERRIDE] == "# podman\n"
    assert wanted["plugin-signing.yaml"] == "# signing\n"


def test_wanted_overrides_plugin_key_without_the_bundle_override_adds_nothing(tmp_path):
    bundle = _bundle(tmp_path, signing=False)
    project = tmp_path / "opt" / "docker"
    (project / "plugin-keys").mkdir(parents=True)
    (project / "plugin-keys" / "site.public.pem").write_text("KEY\n")
    assert "plugin-signing.yaml" not in overrides.wanted(bundle, project, _engine("docker"), "off")


# --- images ---------------------------------------------------------------------------------------

NEEDED = {"langgenius/dify-api:1.0.0": ["api", "worker"], "redis:6-alpine": ["redis"]}


def test_missing_images_asks_the_engine_by_its_local_name():
    engine = _engine("podman", present={"docker.io/library/redis:6-alpine"})
    missing = installer._missing_images(engine, NEEDED, set(), dry_run=False)
    assert missing == [("langgenius/dify-api:1.0.0", ["api", "worker"])]
    assert ("podman", "image", "inspect", "docker.io/langgenius/dify-api:1.0.0") in engine.runner.calls


def test_missing_images_dry_run_counts_bundle_images_as_present():
    engine = _engine("docker")
    in_bundle = {"langgenius/dify-api:1.0.0"}
    assert installer._missing_images(engine, NEEDED, in_bundle, dry_run=True) == [("redis:6-alpine", ["redis"])]
    # a real run asks the engine even for bundle images (they were loaded just before)
    assert len(installer._missing_images(engine, NEEDED, in_bundle, dry_run=False)) == 2


def test_images_missing_error_names_image_and_services():
    err = installer._images_missing_error([("a:1", ["api", "worker"]), ("b:2", ["db"])])
    assert isinstance(err, ImageMissing)
    assert err.image == "a:1"
    assert "2 image(s) the project needs are not present" in str(err)
    assert "a:1 (services: api, worker); b:2 (service: db)" in str(err)


# --- deployment record ----------------------------------------------------------------------------

def test_installed_at_is_kept_for_the_same_bundle_and_new_for_another(tmp_path):
    previous = dep.Deployment(prefix=tmp_path, runtime="docker", bundle="k1", installed_at="2020-01-01T00:00:00+00:00")
    assert installer._installed_at(previous, "k1") == "2020-01-01T00:00:00+00:00"
    fresh = installer._installed_at(previous, "k2")
    assert fresh != previous.installed_at and fresh.endswith("+00:00")
    assert installer._installed_at(None, "k1").endswith("+00:00")


def test_previous_deployment_is_none_without_a_record(tmp_path):
    assert installer._previous_deployment(tmp_path) is None


# --- report ---------------------------------------------------------------------------------------

def test_report_render_and_summary_json(tmp_path):
    report = installer.InstallReport(tmp_path)
    assert not report.changed
    assert "nothing changed: already installed" in report.render()
    report.actions.append("loaded 2 images")
    report.unchanged.append(".env")
    report.services = {"web": "ready", "api": "ready"}
    assert report.changed
    assert report.render().splitlines() == [f"install root: {tmp_path}", "  changed: loaded 2 images",
                                            "  unchanged: .env", "  services: api=ready, web=ready"]
    assert installer.summary(report) == {
        "prefix": str(tmp_path), "changed": True, "actions": ["loaded 2 images"], "unchanged": [".env"],
        "services": {"web": "ready", "api": "ready"}}


# --- step 1: the bundle is trusted before anything else -------------------------------------------------------

def test_install_refuses_an_unsigned_bundle_when_the_site_configured_keys(tmp_path):
    _, public = sign.write_keypair(tmp_path / "keys", name="site", bits=2048)
    bundle = build_bundle(tmp_path / "media")
    opts = installer.InstallOptions(bundle=bundle, runtime="docker", prefix=tmp_path / "opt" / "dify",
                                    trust=signature.policy([], None, [str(public)]))
    with pytest.raises(AirgapError, match="invoke.yaml airgap.bundle_public_keys") as err:
        installer.install(opts)
    assert "not signed" in str(err.value) and str(public) in str(err.value)
    assert not (tmp_path / "opt").exists()  # nothing was written


def test_install_refuses_a_planted_file_before_copying_anything(tmp_path):
    bundle = build_bundle(tmp_path / "media")
    (bundle / "docker" / "docker-compose.override.yaml").write_text("services: {}\n")
    opts = installer.InstallOptions(bundle=bundle, runtime="docker", prefix=tmp_path / "opt" / "dify")
    with pytest.raises(AirgapError, match="docker/docker-compose.override.yaml"):
        installer.install(opts)
    assert not (tmp_path / "opt").exists()


def test_dry_run_on_an_archive_plans_from_it_and_unpacks_nothing(tmp_path):
    """`install --dry-run NAME.tar` used to read NAME/manifest.json next to the archive, which a dry run never
    unpacks (FileNotFoundError): it now plans from a temporary copy without the image parts, verified."""
    out = tmp_path / "out"
    archive.write_archive(build_bundle(tmp_path / "src"), out)
    opts = installer.InstallOptions(bundle=out / f"{NAME}.tar", runtime="docker", prefix=tmp_path / "prefix",
                                    dry_run=True)
    with ExitStack() as cleanup:
        run = installer._open_run(opts, cleanup)
        assert run.bundle.name == NAME and (run.bundle / "docker" / ".env.example").is_file()
        assert run.key.startswith(f"{NAME}@")
    assert not run.bundle.exists()                                   # the temporary copy is gone
    assert sorted(p.name for p in out.iterdir()) == [f"{NAME}.tar", f"{NAME}.tar.SHA256SUMS"]
    assert not (tmp_path / "prefix").exists()


@pytest.mark.parametrize("in_venv", [True, False])
def test_a_dry_run_on_podman_without_podman_compose_plans_its_install(tmp_path, monkeypatch, capsys, in_venv):
    """#15: `install --dry-run --runtime podman` on a Red Hat host without podman-compose (the headline case)
    plans the install from the bundle's wheels instead of failing; outside a venv it says where to run it."""
    monkeypatch.setattr(installer.sys, "executable", str(tmp_path / "py" / "bin" / "python3"))
    monkeypatch.setattr(installer.sys, "prefix", str(tmp_path / "py"))
    monkeypatch.setattr(installer.sys, "base_prefix", str(tmp_path / ("py" if not in_venv else "system")))
    engine = Engine("podman", dry_run=True, runner=FakeRunner())
    monkeypatch.setattr(engine, "find_compose", lambda: engine._compose)  # nothing found on the host
    wheels = {"wheels": ["invoke-2.2.0-py3-none-any.whl", "podman_compose-1.5.0-py2.py3-none-any.whl"]}
    argv, installed = installer.ensure_compose(engine, tmp_path / "bundle", wheels)
    assert argv == [str(tmp_path / "py" / "bin" / "podman-compose")] and installed
    # the rest of the dry run (its final `up`) plans with the provider the real run installs
    assert engine.compose() == ComposeProvider(tuple(argv), "1.5.0") and engine.compose().is_podman_compose
    out = capsys.readouterr().out
    assert f"[dry-run] podman-compose is missing: would install it from {tmp_path / 'bundle' / 'wheels'}" in out
    assert ("this Python is not a venv" in out) is (not in_venv)
    assert engine.runner.calls == []                                  # nothing ran


# --- middleware mode: the overrides follow the stack's compose file ---------------------------------------------

MIDDLEWARE_COMPOSE = """\
services:
  db_postgres:
    image: postgres:15-alpine
    volumes:
      - ./volumes/db/data:/var/lib/postgresql/data
  plugin_daemon:
    image: langgenius/dify-plugin-daemon:0.6.3-local
    extra_hosts:
      - "host.docker.internal:host-gateway"
      - "mirror.local:10.0.0.7"
"""
PODMAN_TEXT = "# podman\nnetworks:\n  default: {}\nservices:\n  nginx:\n    entrypoint: [sh]\n"


class VersionRunner(FakeRunner):
    def __init__(self, version: str):
        super().__init__()
        self.version = version

    def __call__(self, argv, **kwargs) -> Result:
        if tuple(argv[1:3]) == ("version", "--format"):
            return Result(tuple(argv), 0, self.version + "\n", "")
        return super().__call__(argv, **kwargs)


def _middleware_bundle(tmp_path):
    bundle = _bundle(tmp_path, podman_text=PODMAN_TEXT, signing=False)
    (bundle / "docker" / MIDDLEWARE.compose_file).write_text(MIDDLEWARE_COMPOSE)
    return bundle


def test_middleware_overrides_cover_the_middleware_services_and_drop_podmans_nginx(tmp_path, monkeypatch):
    monkeypatch.setattr(overrides, "host_address", lambda: "10.9.8.7")
    bundle = _middleware_bundle(tmp_path)
    engine = Engine("podman", runner=VersionRunner("4.3.1"))
    wanted = overrides.wanted(bundle, tmp_path / "opt" / "docker", engine, "on", MIDDLEWARE)
    assert list(wanted) == ["offline.yaml", overrides.PODMAN_OVERRIDE, "podman-host-gateway.yaml", "selinux.yaml"]
    assert set(yaml.safe_load(wanted["offline.yaml"])["services"]) == {"db_postgres", "plugin_daemon"}
    podman = yaml.safe_load(wanted[overrides.PODMAN_OVERRIDE])
    assert podman == {"networks": {"default": {}}} and "nginx left out" in wanted[overrides.PODMAN_OVERRIDE]
    assert set(yaml.safe_load(wanted["selinux.yaml"])["services"]) == {"db_postgres"}
    gateway = load_compose_yaml(wanted["podman-host-gateway.yaml"])
    assert gateway == {"services": {"plugin_daemon": {"extra_hosts": ["host.docker.internal:10.9.8.7",
                                                                      "mirror.local:10.0.0.7"]}}}
    assert "extra_hosts: !override" in wanted["podman-host-gateway.yaml"]


@pytest.mark.parametrize("runtime, version", [("podman", "4.7.0"), ("podman", "5.2.2"), ("docker", "20.10.24")])
def test_host_gateway_is_left_to_engines_that_resolve_it(tmp_path, runtime, version):
    bundle = _middleware_bundle(tmp_path)
    engine = Engine(runtime, runner=VersionRunner(version))
    assert overrides.host_gateway_override(bundle / "docker" / MIDDLEWARE.compose_file, engine) is None


def test_host_gateway_without_a_host_address_is_refused_naming_the_service(tmp_path, monkeypatch):
    monkeypatch.setattr(overrides, "host_address", lambda: None)
    bundle = _middleware_bundle(tmp_path)
    with pytest.raises(AirgapError, match="plugin_daemon of docker-compose.middleware.yaml map a name to host-gateway"):
        overrides.host_gateway_override(bundle / "docker" / MIDDLEWARE.compose_file,
                                        Engine("podman", runner=VersionRunner("4.3.1")))


def test_only_services_of_keeps_an_override_whose_services_all_exist(tmp_path):
    bundle = _bundle(tmp_path)
    text = "# keep me\nservices:\n  api:\n    pull_policy: never\n"
    assert overrides.only_services_of(text, bundle / "docker" / "docker-compose.yaml") == text


def test_host_address_is_an_ipv4_address_not_loopback():
    address = overrides.host_address()
    assert address is None or (address.count(".") == 3 and not address.startswith("127."))


def test_a_middleware_bundle_refuses_tls_options(tmp_path):
    opts = installer.InstallOptions(bundle=tmp_path, runtime="docker", tls_cert=tmp_path / "c.pem",
                                    tls_key=tmp_path / "k.pem")
    with pytest.raises(AirgapError, match="middleware stack has no nginx"):
        installer._mode(opts, {"mode": "middleware"})
    assert installer._mode(installer.InstallOptions(bundle=tmp_path, runtime="docker"), {}) == FULL
    flagged = installer.InstallOptions(bundle=tmp_path, runtime="docker", middleware=True)
    assert installer._mode(flagged, {}) == MIDDLEWARE
