"""Each preflight item on its own (pure: a fake engine and monkeypatched probes, no container engine)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from scripts.core.console import human_size
from scripts.dify.project import FULL, MIDDLEWARE
from scripts.engine.client import ComposeProvider, normalize_arch
from scripts.host import preflight
from scripts.host.preflight import FAIL, PASS, WARN, PreflightReport

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "dify-1.11.3"
GIB = 1024 ** 3


class FakeEngine:
    """Just what preflight asks of an Engine."""

    def __init__(self, runtime: str = "docker", *, installed: bool = True, facts: dict | None = None,
                 provider: ComposeProvider | None = None) -> None:
        self.runtime, self.installed, self._facts, self.provider = runtime, installed, facts or {}, provider
        self.compose_argv: tuple[str, ...] | None = None
        self._compose = None

    @property
    def is_podman(self) -> bool:
        return self.runtime == "podman"

    def client_path(self) -> str | None:
        return f"/usr/bin/{self.runtime}" if self.installed else None

    def facts(self) -> dict:
        return dict(self._facts)

    def version(self) -> str:
        return "27.1.0"

    def find_compose(self) -> ComposeProvider | None:
        if self.compose_argv:
            return ComposeProvider(self.compose_argv, "1.3.0")
        return self.provider


def only(report: PreflightReport):
    assert len(report.items) == 1, report.items
    return report.items[0]


# --- engine --------------------------------------------------------------------------------------

def test_engine_not_installed_fails_and_says_how_to_install():
    report = PreflightReport()
    assert preflight.check_engine(report, FakeEngine("podman", installed=False)) == {}
    item = only(report)
    assert (item.name, item.status) == ("engine", FAIL)
    assert "`podman` is not installed" in item.detail and "dnf install podman" in item.hint


def test_engine_that_does_not_answer_fails():
    report = PreflightReport()
    preflight.check_engine(report, FakeEngine("docker", facts={}))
    item = only(report)
    assert item.status == FAIL and "does not answer" in item.detail and "systemctl start docker" in item.hint


def test_answering_engine_passes_and_returns_its_facts():
    facts = {"server_version": "5.2", "storage_driver": "overlay", "data_root": "/store", "rootless": True}
    report = PreflightReport()
    assert preflight.check_engine(report, FakeEngine("podman", facts=facts)) == facts
    item = only(report)
    assert item.status == PASS and item.detail == "podman 5.2 (rootless), storage overlay at /store"


# --- compose -------------------------------------------------------------------------------------

def test_no_compose_for_docker_fails(tmp_path):
    report = PreflightReport()
    preflight.check_compose(report, FakeEngine("docker"), tmp_path / "docker-compose.yaml", {})
    item = only(report)
    assert (item.name, item.status) == ("compose", FAIL) and "docker-compose-plugin" in item.hint


def test_no_podman_compose_warns_when_the_bundle_ships_its_wheels(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))  # no venv podman-compose next to it
    manifest = {"wheels": ["podman_compose-1.3.0-py3-none-any.whl"]}
    report = PreflightReport()
    preflight.check_compose(report, FakeEngine("podman"), tmp_path / "docker-compose.yaml", manifest)
    assert only(report).status == WARN
    report = PreflightReport()
    preflight.check_compose(report, FakeEngine("podman"), tmp_path / "docker-compose.yaml", manifest,
                            wheels_can_provide_compose=False)
    assert only(report).status == FAIL


def test_podman_compose_from_an_earlier_install_is_found_in_the_venv(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    (tmp_path / "podman-compose").write_text("#!/bin/sh\n")
    engine = FakeEngine("podman")
    report = PreflightReport()
    preflight.check_compose(report, engine, tmp_path / "docker-compose.yaml", {})
    assert engine.compose_argv == (str(tmp_path / "podman-compose"),)
    assert only(report).status == PASS and only(report).detail == f"{tmp_path / 'podman-compose'} 1.3.0"


def test_compose_older_than_the_file_needs_fails_naming_the_feature_and_version():
    provider = ComposeProvider(("docker", "compose"), "2.19.1")
    report = PreflightReport()
    preflight.check_compose(report, FakeEngine(provider=provider), FIXTURE / "docker-compose.yaml", {})
    item = only(report)
    assert item.status == FAIL
    assert "docker compose 2.19.1" in item.detail and "depends_on" in item.detail and ">= 2.20" in item.detail


def test_compose_recent_enough_passes():
    provider = ComposeProvider(("docker", "compose"), "2.30.0")
    report = PreflightReport()
    preflight.check_compose(report, FakeEngine(provider=provider), FIXTURE / "docker-compose.yaml", {})
    assert (only(report).status, only(report).detail) == (PASS, "docker compose 2.30.0")


def test_recent_dify_with_older_compose_warns():
    report = PreflightReport()
    preflight._docker_compose_item(report, ComposeProvider(("docker", "compose"), "2.30.0"), None, "", (1, 17, 0))
    item = only(report)
    assert item.status == WARN and "Dify 1.17.0" in item.detail and ">= 2.35" in item.detail


@pytest.mark.parametrize(("version", "needs", "status"), [("1.0.6", (2, 20), FAIL), ("1.0.6", None, WARN),
                                                          ("1.1.0", (2, 24), PASS)])
def test_old_podman_compose_fails_only_when_the_file_needs_newer(version, needs, status):
    report = PreflightReport()
    preflight._podman_compose_item(report, ComposeProvider(("podman-compose",), version), needs, "env_file")
    item = only(report)
    assert item.status == status
    assert ("needs podman-compose >= 1.1" in item.detail) == (status == FAIL)


# --- architecture --------------------------------------------------------------------------------

def test_architecture_mismatch_fails_naming_both():
    report = PreflightReport()
    preflight.check_architecture(report, {"platform": "linux/arm64"}, {"architecture": "amd64"})
    item = only(report)
    assert item.status == FAIL and "host is amd64" in item.detail and "linux/arm64" in item.detail
    assert item.hint == "make the bundle with --platform linux/amd64"


def test_architecture_match_passes():
    report = PreflightReport()
    preflight.check_architecture(report, {"platform": "linux/x86_64"}, {"architecture": "amd64"})
    assert only(report).status == PASS


# --- disk ----------------------------------------------------------------------------------------

def test_too_little_disk_for_images_fails_with_the_sizes(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "_free_bytes", lambda path: (path, 1 * GIB))
    manifest = {"images": [{"size": 3 * GIB}, {"size": 1 * GIB}], "image_archive": {"uncompressed_size": GIB}}
    report = PreflightReport()
    preflight.check_disk(report, FakeEngine("docker"), manifest, tmp_path, {"data_root": "/var/lib/docker"})
    images, root = report.items
    assert (images.name, images.status) == ("disk (images)", FAIL)
    assert images.detail == f"1.0 GiB free at /var/lib/docker; images need {human_size(4 * GIB)}"
    assert images.hint == f"free {human_size(4 * GIB * 1.1 - GIB)} at /var/lib/docker"
    assert (root.name, root.status) == ("disk (install root)", PASS)


def test_podman_needs_room_for_its_load_buffer_too(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "_free_bytes", lambda path: (path, 5 * GIB))
    manifest = {"images": [{"size": 4 * GIB}], "image_archive": {"uncompressed_size": 4 * GIB}}
    report = PreflightReport()
    preflight.check_disk(report, FakeEngine("docker"), manifest, tmp_path, {})
    assert report.items[0].status == PASS
    report = PreflightReport()
    preflight.check_disk(report, FakeEngine("podman"), manifest, tmp_path, {})
    assert report.items[0].status == FAIL and "8.0 GiB (incl. podman's load buffer)" in report.items[0].detail


def test_small_install_root_warns(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "_free_bytes", lambda path: (path, 100 * 1024 * 1024))
    report = PreflightReport()
    preflight.check_disk(report, FakeEngine(), {}, tmp_path, {})
    root = report.items[1]
    assert root.status == WARN and f"for {tmp_path}" in root.detail and "grows here" in root.hint


# --- ports ---------------------------------------------------------------------------------------

def test_port_in_use_fails_naming_the_port_and_service(monkeypatch):
    monkeypatch.setattr(preflight, "port_free", lambda port, host="0.0.0.0": port != 8080)
    report = PreflightReport()
    preflight.check_port(report, FakeEngine(), {}, "nginx", 8080, "0.0.0.0", running=False, lowest=1024)
    item = only(report)
    assert (item.name, item.status) == ("port 8080", FAIL)
    assert "port 8080 (service nginx) is already in use" in item.detail and "sport = :8080" in item.hint


def test_port_of_the_running_deployment_passes_without_probing(monkeypatch):
    monkeypatch.setattr(preflight, "port_free", lambda *a, **k: pytest.fail("probed a port that is ours"))
    report = PreflightReport()
    preflight.check_port(report, FakeEngine(), {}, "nginx", 80, "0.0.0.0", running=True, lowest=1024)
    assert only(report).status == PASS and "existing deployment" in only(report).detail


def test_rootless_podman_cannot_publish_a_privileged_port(monkeypatch):
    monkeypatch.setattr(preflight, "port_free", lambda *a, **k: True)
    report = PreflightReport()
    preflight.check_port(report, FakeEngine("podman"), {"rootless": True}, "nginx", 80, "0.0.0.0",
                         running=False, lowest=1024)
    item = only(report)
    assert item.status == FAIL and "rootless podman cannot publish port 80" in item.detail
    assert "ports below 1024 are privileged" in item.detail
    report = PreflightReport()  # rootful podman or docker: fine
    preflight.check_port(report, FakeEngine("docker"), {"rootless": True}, "nginx", 80, "0.0.0.0",
                         running=False, lowest=1024)
    assert only(report).status == PASS


def test_ports_of_the_release_are_each_checked_in_order(monkeypatch):
    probed = []
    monkeypatch.setattr(preflight, "port_free", lambda port, host="0.0.0.0": probed.append((port, host)) or port != 443)
    monkeypatch.setattr(preflight, "unprivileged_port_start", lambda: 1024)
    report = PreflightReport()
    preflight.check_ports(report, FakeEngine(), FIXTURE / "docker-compose.yaml", FIXTURE / ".env.example",
                          {"EXPOSE_NGINX_PORT": "8088"}, {}, set())
    statuses = {i.name: i.status for i in report.items}
    assert statuses["port 8088"] == PASS and statuses["port 443"] == FAIL and "port 80" not in statuses
    assert all(host == "0.0.0.0" for _, host in probed)


def test_no_env_file_means_no_port_items(monkeypatch):
    monkeypatch.setattr(preflight, "port_free", lambda *a, **k: pytest.fail("probed"))
    report = PreflightReport()
    preflight.check_ports(report, FakeEngine(), FIXTURE / "docker-compose.yaml", None, {}, {}, set())
    assert report.items == []


# --- SELinux -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("runtime", "mode", "status"), [("podman", "enforcing", WARN), ("docker", "enforcing", PASS),
                                                         ("podman", "permissive", PASS)])
def test_selinux_enforcing_warns_for_podman_only(monkeypatch, runtime, mode, status):
    monkeypatch.setattr(preflight, "selinux_mode", lambda: mode)
    report = PreflightReport()
    preflight.check_selinux(report, FakeEngine(runtime))
    item = only(report)
    assert (item.name, item.status, item.detail) == ("selinux", status, mode)
    assert (":z relabel" in item.hint) == (status == WARN)


# --- existing deployment -------------------------------------------------------------------------

def existing(bundle: str, runtime: str = "docker", mode: str = "full"):
    return SimpleNamespace(bundle=bundle, runtime=runtime, dify_version="1.11.3", project_name="dify", mode=mode)


def test_same_bundle_already_installed_passes(tmp_path):
    manifest = {"files": [{"path": "docker/a", "sha256": "ab"}]}
    key = preflight.bundle_key(tmp_path, manifest)
    report = PreflightReport()
    preflight.check_existing(report, FakeEngine(), tmp_path, manifest, tmp_path / "opt", existing(key))
    assert only(report).status == PASS


@pytest.mark.parametrize("installed, wanted", [("full", MIDDLEWARE), ("middleware", FULL)])
def test_a_stack_change_at_the_same_prefix_fails_naming_both(tmp_path, installed, wanted):
    manifest = {"files": [{"path": "docker/a", "sha256": "ab"}]}
    key = preflight.bundle_key(tmp_path, manifest)
    report = PreflightReport()
    preflight.check_existing(report, FakeEngine(), tmp_path, manifest, tmp_path / "opt", existing(key, mode=installed),
                             wanted)
    item = next(i for i in report.items if i.name == "stack change")
    assert item.status == FAIL and f"runs the {installed} stack, not the {wanted.name}" in item.detail
    assert "another --prefix" in item.hint


def test_other_bundle_warns_of_an_upgrade_and_a_runtime_change_fails(tmp_path):
    report = PreflightReport()
    preflight.check_existing(report, FakeEngine("docker"), tmp_path, {"dify_version": "1.16.0"}, tmp_path / "opt",
                             existing("old@123", runtime="podman"))
    upgrade, change = report.items
    assert upgrade.status == WARN and "upgrade it to 1.16.0" in upgrade.hint
    assert (change.name, change.status) == ("runtime change", FAIL)
    assert "runs on podman, not docker" in change.detail and "--runtime podman" in change.hint


def test_foreign_docker_dir_warns_and_nothing_passes(tmp_path):
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "docker-compose.yaml").write_text("services: {}\n")
    report = PreflightReport()
    preflight.check_existing(report, FakeEngine(), tmp_path, {}, tmp_path, None)
    assert only(report).status == WARN and "not installed by dify-airgap" in only(report).detail
    report = PreflightReport()
    preflight.check_existing(report, FakeEngine(), tmp_path, {}, tmp_path / "empty", None)
    assert (only(report).status, only(report).detail) == (PASS, f"none at {tmp_path / 'empty'}")


# --- run: the items, in order --------------------------------------------------------------------

def test_run_reports_every_item_in_order(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "_free_bytes", lambda path: (path, 100 * GIB))
    monkeypatch.setattr(preflight, "selinux_mode", lambda: "disabled")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    manifest = {"platform": f"linux/{normalize_arch(os.uname().machine)}"}
    report = preflight.run(FakeEngine("docker", installed=False), tmp_path / "bundle", manifest, tmp_path / "opt")
    assert [i.name for i in report.items] == ["engine", "compose", "architecture", "disk (images)",
                                              "disk (install root)", "selinux", "existing deployment"]
    assert not report.ok and [i.name for i in report.failures] == ["engine", "compose"]


def test_the_bundle_key_names_the_bundle_also_when_given_as_dot(tmp_path, monkeypatch):
    bundle = tmp_path / "dify-1.16.0-airgap-amd64"
    bundle.mkdir()
    manifest = {"files": [{"path": "docker/a", "sha256": "ab"}]}
    monkeypatch.chdir(bundle)
    assert preflight.bundle_key(Path("."), manifest) == preflight.bundle_key(bundle, manifest)
    assert preflight.bundle_key(Path("."), manifest).startswith("dify-1.16.0-airgap-amd64@")
