"""A running compose project as data: what each service's container is doing, and waiting for it.

Docker Compose answers ``ps -a --format json``; for podman-compose we ask podman itself by the
project label. Podman 4.3 without systemd never runs healthchecks by itself, so :func:`wait_ready`
runs ``podman healthcheck run`` for every service that has one and is not healthy yet.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts.core.console import LOG
from scripts.core.waiting import GiveUp, wait_until
from scripts.dify.envsyntax import interpolate, read_env, resolve_all
from scripts.dify.project import load_compose_yaml
from scripts.engine.client import Engine


@dataclass
class ServiceState:
    service: str
    container: str
    state: str            # running, exited, created, restarting...
    exit_code: int | None
    health: str           # healthy, unhealthy, starting, "" (no healthcheck)


@dataclass
class ServiceSpec:
    name: str
    image: str
    profiles: list[str]
    healthcheck: bool
    one_shot: bool
    ports: list[str]      # host ports as published ("80", "127.0.0.1:5003"...)


def project_label(engine: Engine) -> str:
    return "io.podman.compose.project" if engine.is_podman else "com.docker.compose.project"


def states(engine: Engine, project_name: str, compose=None) -> dict[str, ServiceState]:
    """{service: state} for every container of the project (read-only; runs in dry-run).

    Docker: ``compose`` is a callable running compose args for the project (``compose ps`` knows
    the health). Podman: asked directly by label, podman-compose's ``ps`` has no JSON output.
    """
    if engine.is_podman:
        res = engine.run(["ps", "-a", "--filter", f"label={project_label(engine)}={project_name}",
                          "--format", "json"], mutates=False, check=False)
        out: dict[str, ServiceState] = {}
        for row in json.loads(res.stdout or "[]") if res.ok else []:
            labels = row.get("Labels") or {}
            service = labels.get("com.docker.compose.service") or labels.get("io.podman.compose.service")
            status = row.get("Status", "")
            health = ("healthy" if "(healthy)" in status else "unhealthy" if "(unhealthy)" in status
                      else "starting" if "(starting)" in status else "")
            out[service] = ServiceState(service, row["Names"][0], row["State"], row.get("ExitCode"), health)
        return out
    res = compose(["ps", "-a", "--format", "json"], mutates=False)
    text = res.stdout.strip()
    rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line]
    return {row["Service"]: ServiceState(row["Service"], row["Name"], row["State"], row.get("ExitCode"),
                                         row.get("Health") or "") for row in rows}


def env_values(env_file: Path | None, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The env file's values as compose sees them (interpolated), with ``overrides`` on top."""
    raw = dict(read_env(env_file)) if env_file and Path(env_file).is_file() else {}
    raw.update(overrides or {})
    return resolve_all(raw)


def load_specs(project_dir: Path, files: Sequence[str], values: Mapping[str, str]) -> dict[str, ServiceSpec]:
    """The services of the compose files (merged by name, later files win per key), interpolated
    with ``values`` (see :func:`env_values`).

    Runtime-independent on purpose: a Red Hat host with podman only has no ``docker compose config``.
    """
    merged: dict[str, dict] = {}
    for name in files:
        path = Path(name) if Path(name).is_absolute() else project_dir / name
        data = load_compose_yaml(path.read_text()) or {}
        for service, body in (data.get("services") or {}).items():
            merged.setdefault(service, {}).update(body or {})
    specs = {}
    for service, body in merged.items():
        restart = str(body.get("restart", "no")).strip('"')
        health = body.get("healthcheck") or {}
        ports = []
        for port in body.get("ports") or []:
            text = interpolate(str(port if not isinstance(port, dict) else port.get("published", "")), values)
            ports.append(text.rsplit(":", 1)[0] if ":" in text else text)
        specs[service] = ServiceSpec(
            name=service, image=interpolate(str(body.get("image", "")), values),
            profiles=list(body.get("profiles") or []),
            healthcheck=bool(health) and not health.get("disable"),
            one_shot=restart == "no" and not body.get("healthcheck"),
            ports=[p for p in ports if p])
    return specs


def active_profiles(values: Mapping[str, str]) -> list[str]:
    return [p.strip() for p in values.get("COMPOSE_PROFILES", "").split(",") if p.strip()]


def active_services(specs: Mapping[str, ServiceSpec], profiles: Sequence[str]) -> dict[str, ServiceSpec]:
    return {name: s for name, s in specs.items() if not s.profiles or set(s.profiles) & set(profiles)}


def needed_images(specs: Mapping[str, ServiceSpec]) -> dict[str, list[str]]:
    """{image ref: [services]} of the given (active) services."""
    out: dict[str, list[str]] = {}
    for name, spec in sorted(specs.items()):
        if spec.image:
            out.setdefault(spec.image, []).append(name)
    return out


def readiness(engine: Engine, specs: Mapping[str, ServiceSpec], current: Mapping[str, ServiceState]
              ) -> tuple[bool, list[str]]:
    """(all ready?, problems) for the active services; problems name service and state."""
    problems = []
    for name, spec in sorted(specs.items()):
        st = current.get(name)
        if st is None:
            problems.append(f"{name}: no container")
        elif spec.one_shot:
            if st.state != "exited":
                problems.append(f"{name}: {st.state} (one-shot, should exit 0)")
            elif int(st.exit_code or 0) != 0:
                problems.append(f"{name}: exited {st.exit_code} (FAILED)")
        elif st.state != "running":
            problems.append(f"{name}: {st.state}" + (f" (exit {st.exit_code})" if st.exit_code else ""))
        elif spec.healthcheck and st.health != "healthy":
            problems.append(f"{name}: {st.health or 'health unknown'}")
    return not problems, problems


def failed_for_good(specs: Mapping[str, ServiceSpec], current: Mapping[str, ServiceState]) -> list[str]:
    """Services that cannot become ready by waiting: a one-shot that exited non-zero."""
    return [name for name, spec in specs.items()
            if spec.one_shot and name in current and current[name].state == "exited"
            and int(current[name].exit_code or 0) != 0]


def wait_ready(engine: Engine, project_name: str, specs: Mapping[str, ServiceSpec], timeout: float,
               compose=None) -> dict[str, ServiceState]:
    """Wait until every active service is running (healthy where it has a healthcheck) and one-shot
    services exited 0. Raises WaitTimeout listing what is not ready; returns the final states."""
    last: dict = {"problems": []}
    restarted: dict[str, int] = {}

    def ready():
        current = states(engine, project_name, compose)
        ok, problems = readiness(engine, specs, current)
        last["problems"] = problems
        if failed_for_good(specs, current):
            raise StackFailed(failed_for_good(specs, current), problems)
        if not ok and engine.is_podman:
            _start_exited_again(engine, specs, current, restarted)
        if not ok and engine.is_podman:  # no systemd: podman 4.3 never runs healthchecks by itself
            for name, spec in specs.items():
                st = current.get(name)
                if spec.healthcheck and st and st.state == "running" and st.health != "healthy":
                    engine.run(["healthcheck", "run", st.container], check=False, mutates=False, timeout=60)
        return current if ok else None

    return wait_until(ready, timeout=timeout, what=f"every service of {project_name} to be ready",
                      interval=2.0, on_timeout=lambda: "not ready: " + "; ".join(last["problems"]))


#: how often a long-running service that exited is started again while waiting (podman), as `restart:` would
RESTARTS = 3


def _start_exited_again(engine: Engine, specs: Mapping[str, ServiceSpec], current: Mapping[str, ServiceState],
                        restarted: dict[str, int]) -> None:
    """podman (4.3, no systemd) was seen leaving a `restart: always` service stopped when it exited at start-up
    (nginx: "host not found in upstream" while aardvark-dns did not answer for a container started the same
    second): what Docker's restart policy does, done here, at most :data:`RESTARTS` times per service."""
    for name, spec in specs.items():
        st = current.get(name)
        if spec.one_shot or st is None or st.state not in ("exited", "stopped"):
            continue
        if restarted.get(name, 0) >= RESTARTS:
            continue
        restarted[name] = restarted.get(name, 0) + 1
        LOG.info("%s exited (code %s) and podman did not restart it: starting it again (%d/%d)", name,
                 st.exit_code, restarted[name], RESTARTS)
        engine.run(["start", st.container], check=False, timeout=120)


class StackFailed(GiveUp):
    def __init__(self, services: list[str], problems: list[str]) -> None:
        self.services, self.problems = services, problems
        super().__init__("; ".join(problems))


def logs_tail(engine: Engine, current: Mapping[str, ServiceState], services: Sequence[str], lines: int = 40) -> str:
    out = []
    for name in services:
        st = current.get(name)
        if not st:
            continue
        res = engine.run(["logs", "--tail", str(lines), st.container], check=False, mutates=False, timeout=60)
        out.append(f"--- last {lines} log lines of {name} ({st.container}) ---\n{(res.stdout + res.stderr).rstrip()}")
    return "\n".join(out)
