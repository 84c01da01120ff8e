"""`invoke preflight BUNDLE`: can this host run this bundle? Pass / warn / fail per item, before anything changes.

Every item names what was measured and, when it is not a pass, what to do. `invoke install` runs the
same checks first and stops on any fail.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scripts.core.console import human_size, table
from scripts.dify import deployment as dep
from scripts.dify import stack
from scripts.dify.project import FULL, ComposeProject, StackMode
from scripts.engine.client import ComposeProvider, Engine, normalize_arch, version_tuple
from scripts.host.doctor import selinux_mode

PASS, WARN, FAIL = "pass", "warn", "fail"
#: `depends_on: {svc: {required: false}}` (Dify 1.11.3 uses it) needs Compose 2.20.
REQUIRED_FALSE_COMPOSE = (2, 20)
PODMAN_COMPOSE_MIN = (1, 1)
#: `env_file: [{path: ..., required: false}]` (Dify 1.14+): Compose 2.24 and podman-compose 1.1.
ENV_FILE_REQUIRED_COMPOSE = (2, 24)
#: Dify 1.17+'s upstream quick start asks for Compose 2.35 (warned: the toolkit's own runs do not need it).
RECENT_DIFY, RECENT_DIFY_COMPOSE = (1, 17), (2, 35)


@dataclass
class Item:
    name: str
    status: str
    detail: str
    hint: str = ""


@dataclass
class PreflightReport:
    items: list[Item] = field(default_factory=list)

    def add(self, name: str, status: str, detail: str, hint: str = "") -> Item:
        item = Item(name, status, detail, hint)
        self.items.append(item)
        return item

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[Item]:
        return [i for i in self.items if i.status == FAIL]

    def to_dict(self) -> dict:
        return {"ok": self.ok, "items": [asdict(i) for i in self.items]}

    def render(self) -> str:
        rows = [[i.status.upper(), i.name, i.detail + (f"\n-> {i.hint}" if i.hint else "")] for i in self.items]
        verdict = "preflight: OK" if self.ok else f"preflight: {len(self.failures)} item(s) FAIL"
        return table(["result", "check", "detail"], rows) + "\n" + verdict


def _project_env(bundle: Path, prefix: Path, mode: StackMode = FULL) -> Path | None:
    """The env file the install will start from: the deployed .env if any, else the bundle's example
    (middleware mode: middleware.env, else the release's middleware example)."""
    for candidate in (prefix / "docker" / mode.env_name, mode.example(bundle / "docker")):
        if candidate.is_file():
            return candidate
    return None


def compose_needs(compose_file: Path) -> tuple[tuple[int, ...] | None, str]:
    """The Compose version the file's features need (None: any v2) and the feature that needs it."""
    if not compose_file.is_file():
        return None, ""
    project = ComposeProject(compose_file.parent, (compose_file.name,))
    services = project.services()
    if any(isinstance(svc.get("env_file"), list) and any(isinstance(e, dict) and "required" in e
                                                         for e in svc["env_file"]) for svc in services.values()):
        return ENV_FILE_REQUIRED_COMPOSE, "env_file `required: false` (Dify 1.14+ envs/ layout)"
    for body in services.values():
        deps = (body or {}).get("depends_on")
        if isinstance(deps, dict) and any(isinstance(v, dict) and "required" in v for v in deps.values()):
            return REQUIRED_FALSE_COMPOSE, "depends_on `required: false`"
    return None, ""


def port_free(port: int, host: str = "0.0.0.0") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _free_bytes(path: Path) -> tuple[Path, int]:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe, shutil.disk_usage(probe).free


def unprivileged_port_start(path: Path = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 1024


def bundle_key(bundle: Path, manifest: dict) -> str:
    """Identifies a bundle's content: its name and a digest of every file's sha256 (not its date)."""
    files = sorted((f.get("path", ""), f.get("sha256", "")) for f in manifest.get("files", []))
    digest = hashlib.sha256(json.dumps(files).encode()).hexdigest()[:12]
    return f"{Path(bundle).resolve().name}@{digest}"  # resolved: `preflight .` names the bundle, not ""


def run(engine: Engine, bundle: Path, manifest: dict, prefix: Path, *,
        overrides: Mapping[str, str] | None = None, wheels_can_provide_compose: bool = True,
        mode: StackMode = FULL) -> PreflightReport:
    """All checks; never raises for a failed check (each becomes an item). ``mode``: the stack to run."""
    report = PreflightReport()
    overrides = dict(overrides or {})
    compose_file = bundle / "docker" / mode.compose_file
    facts = check_engine(report, engine)
    check_compose(report, engine, compose_file, manifest, wheels_can_provide_compose)
    check_architecture(report, manifest, facts)
    check_disk(report, engine, manifest, prefix, facts)
    existing = _load_existing(prefix)
    check_ports(report, engine, compose_file, _project_env(bundle, prefix, mode), overrides, facts,
                _running_here(engine, existing))
    check_selinux(report, engine)
    check_existing(report, engine, bundle, manifest, prefix, existing, mode)
    return report


def check_engine(report: PreflightReport, engine: Engine) -> dict:
    """Item "engine": installed, answering; returns the engine's facts ({} when it does not answer)."""
    facts = engine.facts() if engine.client_path() else {}
    if not engine.client_path():
        report.add("engine", FAIL, f"`{engine.runtime}` is not installed",
                   f"install {engine.runtime} (Red Hat: dnf install {engine.runtime}) or choose --runtime")
    elif not facts:
        report.add("engine", FAIL, f"{engine.runtime} {engine.version() or ''} does not answer",
                   "start it: systemctl start docker" if not engine.is_podman else "check `podman info`")
    else:
        mode = " (rootless)" if facts.get("rootless") else ""
        report.add("engine", PASS, f"{engine.runtime} {facts.get('server_version')}{mode}, "
                                   f"storage {facts.get('storage_driver')} at {facts.get('data_root')}")
    return facts


def _compose_provider(engine: Engine) -> ComposeProvider | None:
    """The engine's compose provider; for podman, falls back to a podman-compose an earlier install put in the venv."""
    provider = engine.find_compose() if engine.client_path() else None
    venv_compose = Path(sys.executable).parent / "podman-compose"  # put there by an earlier install
    if provider is None and engine.is_podman and venv_compose.exists():
        engine.compose_argv, engine._compose = (str(venv_compose),), None
        provider = engine.find_compose()
    return provider


def check_compose(report: PreflightReport, engine: Engine, compose_file: Path, manifest: dict,
                  wheels_can_provide_compose: bool = True) -> None:
    """Item "compose": a provider exists and is recent enough for the features the compose file uses."""
    provider = _compose_provider(engine)
    needs, feature = compose_needs(compose_file)
    dify = version_tuple(ComposeProject(compose_file.parent).dify_version) if compose_file.is_file() else ()
    if provider is None:
        _no_compose_item(report, engine, manifest, wheels_can_provide_compose)
    elif provider.is_podman_compose:
        _podman_compose_item(report, provider, needs, feature)
    else:
        _docker_compose_item(report, provider, needs, feature, dify)


def _no_compose_item(report: PreflightReport, engine: Engine, manifest: dict, wheels_can_provide_compose: bool) -> None:
    has_wheels = any(w.startswith("podman_compose-") for w in manifest.get("wheels", []))
    if engine.is_podman and has_wheels and wheels_can_provide_compose:
        report.add("compose", WARN, "no podman-compose / podman compose found",
                   "install will add podman-compose from the bundle's wheels into the toolkit's venv")
    else:
        report.add("compose", FAIL, f"no Compose v2 provider for {engine.runtime}",
                   "install the docker-compose-plugin package" if not engine.is_podman
                   else "pip install podman-compose (offline: from the bundle's wheels/)")


def _podman_compose_item(report: PreflightReport, provider: ComposeProvider, needs: tuple[int, ...] | None,
                         feature: str) -> None:
    status = PASS if version_tuple(provider.version) >= PODMAN_COMPOSE_MIN else (FAIL if needs else WARN)
    report.add("compose", status, f"{' '.join(provider.argv)} {provider.version}"
               + ("" if status == PASS or not needs else f": the compose file uses {feature}, which needs "
                  f"podman-compose >= {'.'.join(map(str, PODMAN_COMPOSE_MIN))}"),
               "" if status == PASS else "older than 1.1: use the bundle's podman-compose wheels")


def _docker_compose_item(report: PreflightReport, provider: ComposeProvider, needs: tuple[int, ...] | None,
                         feature: str, dify: tuple[int, ...]) -> None:
    if needs and version_tuple(provider.version) < needs:
        report.add("compose", FAIL, f"{' '.join(provider.argv)} {provider.version}: the compose file uses "
                   f"{feature}, which needs Compose >= {'.'.join(map(str, needs))}",
                   "upgrade the docker-compose-plugin package")
    elif dify >= RECENT_DIFY and version_tuple(provider.version) < RECENT_DIFY_COMPOSE:
        report.add("compose", WARN, f"{' '.join(provider.argv)} {provider.version}: Dify "
                   f"{'.'.join(map(str, dify))}'s quick start asks for Compose >= "
                   f"{'.'.join(map(str, RECENT_DIFY_COMPOSE))}", "upgrade the docker-compose-plugin package")
    else:
        report.add("compose", PASS, f"{' '.join(provider.argv)} {provider.version}")


def check_architecture(report: PreflightReport, manifest: dict, facts: Mapping) -> None:
    """Item "architecture": the engine's (else the host's) architecture is the bundle's platform."""
    _os, want = manifest.get("platform", "linux/amd64").split("/", 1)
    have = facts.get("architecture") or normalize_arch(os.uname().machine)
    if normalize_arch(want) == have:
        report.add("architecture", PASS, f"host {have} = bundle {manifest.get('platform')}")
    else:
        report.add("architecture", FAIL, f"host is {have}, the bundle is {manifest.get('platform')}",
                   f"make the bundle with --platform linux/{have}")


def check_disk(report: PreflightReport, engine: Engine, manifest: dict, prefix: Path, facts: Mapping) -> None:
    """Items "disk (images)" and "disk (install root)".

    The engine's store must hold the unpacked images; podman load buffers the archive too.
    """
    images_size = sum(int(i.get("size") or 0) for i in manifest.get("images", []))
    need = images_size
    if engine.is_podman:
        need += int(manifest.get("image_archive", {}).get("uncompressed_size") or 0)
    root = Path(facts.get("data_root") or "/var/lib")
    where, free = _free_bytes(root)
    status = PASS if free >= need * 1.1 else FAIL
    report.add("disk (images)", status, f"{human_size(free)} free at {where}; images need {human_size(need)}"
               + (" (incl. podman's load buffer)" if engine.is_podman else ""),
               "" if status == PASS else f"free {human_size(need * 1.1 - free)} at {where}")
    project_size = sum(int(f.get("size") or 0) for f in manifest.get("files", [])
                       if f.get("path", "").startswith("docker/"))
    where, free = _free_bytes(prefix)
    status = PASS if free >= project_size + 512 * 1024 * 1024 else WARN
    report.add("disk (install root)", status, f"{human_size(free)} free at {where} for {prefix}",
               "" if status == PASS else "Dify's data (database, storage) grows here: give it room")


def _load_existing(prefix: Path):
    """The deployment recorded at prefix, or None."""
    try:
        return dep.load(prefix)
    except Exception:  # noqa: BLE001 - no deployment is the normal case
        return None


def _running_here(engine: Engine, existing) -> set[str]:
    """The services of the existing deployment that are running (their ports are theirs, not a conflict)."""
    if not (existing and engine.client_path()):
        return set()
    current = stack.states(engine, existing.project_name,
                           compose=lambda args, **kw: existing.compose(engine, args, **kw))
    return {s for s, st in current.items() if st.state == "running"}


def check_ports(report: PreflightReport, engine: Engine, compose_file: Path, env_file: Path | None,
                overrides: Mapping[str, str], facts: Mapping, running_here: set[str]) -> None:
    """Items "port N": every port the stack's active services publish is free (or already ours)."""
    if not (compose_file.is_file() and env_file):
        return
    values = stack.env_values(env_file, overrides)
    specs = stack.load_specs(compose_file.parent, [compose_file.name], values)
    active = stack.active_services(specs, stack.active_profiles(values))
    lowest = unprivileged_port_start()
    for name, spec in sorted(active.items()):
        for published in spec.ports:
            host, _, port_text = published.rpartition(":")
            if port_text.isdigit():
                check_port(report, engine, facts, name, int(port_text), host or "0.0.0.0",
                           running=name in running_here, lowest=lowest)


def check_port(report: PreflightReport, engine: Engine, facts: Mapping, name: str, port: int, host: str, *,
               running: bool, lowest: int) -> None:
    """Item "port N" for service name's published port."""
    label = f"port {port}"
    if running:
        report.add(label, PASS, f"published by {name} of the existing deployment")
    elif not port_free(port, host):
        report.add(label, FAIL, f"port {port} (service {name}) is already in use",
                   f"stop what listens there (ss -ltnp 'sport = :{port}') or set the port in "
                   f".env / --set (e.g. EXPOSE_NGINX_PORT)")
    elif engine.is_podman and facts.get("rootless") and port < lowest:
        report.add(label, FAIL, f"rootless podman cannot publish port {port} (service {name}); "
                   f"ports below {lowest} are privileged",
                   "sysctl net.ipv4.ip_unprivileged_port_start=80, or run podman as root")
    else:
        report.add(label, PASS, f"free (service {name})")


def check_selinux(report: PreflightReport, engine: Engine) -> None:
    """Item "selinux": enforcing is a warning for podman (bind mounts need relabelling)."""
    mode = selinux_mode()
    if mode == "enforcing":
        report.add("selinux", WARN if engine.is_podman else PASS, "enforcing",
                   "bind mounts get the :z relabel (compose-overrides selinux.yaml)" if engine.is_podman else "")
    else:
        report.add("selinux", PASS, mode)


def check_existing(report: PreflightReport, engine: Engine, bundle: Path, manifest: dict, prefix: Path,
                   existing, mode: StackMode = FULL) -> None:
    """Items "existing deployment", "runtime change" and "stack change": what is already installed at prefix."""
    if existing:
        same = existing.bundle == bundle_key(bundle, manifest)
        report.add("existing deployment", PASS if same else WARN,
                   f"{prefix}: Dify {existing.dify_version} on {existing.runtime}, bundle {existing.bundle}",
                   "" if same else f"install will upgrade it to {manifest.get('dify_version')} "
                                   "(.env backed up and merged, old image set noted)")
        if existing.runtime != engine.runtime:
            report.add("runtime change", FAIL, f"{prefix} runs on {existing.runtime}, not {engine.runtime}",
                       f"`invoke down --prefix {prefix}` first, or use --runtime {existing.runtime}")
        if existing.mode != mode.name:
            report.add("stack change", FAIL, f"{prefix} runs the {existing.mode} stack, not the {mode.name} one",
                       f"install the {mode.name} stack under another --prefix (or `invoke down --prefix {prefix}` "
                       f"first: its data stays in {prefix}/docker/volumes)")
    elif (prefix / "docker" / "docker-compose.yaml").exists():
        report.add("existing deployment", WARN, f"{prefix}/docker exists but was not installed by dify-airgap",
                   "its .env and volumes are kept; changed files are backed up before being replaced")
    else:
        report.add("existing deployment", PASS, f"none at {prefix}")
