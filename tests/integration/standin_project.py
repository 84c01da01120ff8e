"""The REAL compose project of a vendored Dify release with stand-ins: its files, and whether it is up.

Shared by the integration tests (test_standins, test_check, dify_stack): ``release_project`` writes the
release's docker/ tree with a ``.env`` whose published ports are free ones, ``service_states`` and
``all_up`` read what the engine runs. Not a test module; the session fixtures are in conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from scripts.core.waiting import GiveUp
from scripts.engine.client import Engine
from tests.lab import standins
from tests.lab.host import free_port

#: What 1.11.3's compose file runs with its default profiles (read from the fixture): the defaults of
#: the helpers below.
FACTS = standins.release_facts(standins.default_fixture(standins.DIFY_VERSION))
#: Services of the default profile set (weaviate, postgresql) with a healthcheck in the real file.
HEALTHCHECKED = FACTS.healthchecked
ONE_SHOT = FACTS.one_shot
#: compose-overrides/ of the checkout (podman.yaml is added on podman).
OVERRIDES = Path(__file__).resolve().parents[2] / "compose-overrides"


def release_project(tmp_path: Path, facts: standins.ReleaseFacts = FACTS) -> tuple[Path, dict[str, int]]:
    """The release's docker/ tree with ``.env`` = .env.example, every published host port a free one.

    Dify 1.14+ requires the ``.env`` (``env_file: ./.env``); without it ``docker compose config`` exits 0
    and prints nothing.
    """
    dest = standins.complete_project(tmp_path / "docker", fixture=facts.fixture)
    ports = {key: free_port() for key in facts.published_ports}
    lines = []
    for line in (dest / ".env.example").read_text().splitlines():
        key = line.split("=", 1)[0]
        lines.append(f"{key}={ports[key]}" if key in ports else line)
    (dest / ".env").write_text("\n".join(lines) + "\n")
    return dest, ports


def service_states(engine: Engine, project: Path, name: str) -> dict[str, dict]:
    """{service: {state, exit_code, health, container}} for the compose project."""
    if engine.is_podman:
        res = engine.run(["ps", "-a", "--filter", f"label=io.podman.compose.project={name}", "--format", "json"],
                         mutates=False)
        out = {}
        for row in json.loads(res.stdout or "[]"):
            labels = row.get("Labels") or {}
            service = labels.get("com.docker.compose.service") or labels.get("io.podman.compose.service")
            status = row.get("Status", "")
            health = "healthy" if "(healthy)" in status else "unhealthy" if "(unhealthy)" in status else ""
            out[service] = {"state": row["State"], "exit_code": row.get("ExitCode"), "health": health,
                            "container": row["Names"][0]}
        return out
    res = engine.compose_run(["ps", "-a", "--format", "json"], project_dir=str(project), project_name=name,
                             mutates=False)
    text = res.stdout.strip()
    rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line]
    return {row["Service"]: {"state": row["State"], "exit_code": row.get("ExitCode"), "health": row.get("Health"),
                             "container": row["Name"]} for row in rows}


def all_up(engine: Engine, project: Path, name: str, services: set[str],
           healthchecked: frozenset[str] | set[str] = HEALTHCHECKED,
           one_shot: frozenset[str] | set[str] = ONE_SHOT) -> bool:
    """Every service running (healthy where ``healthchecked``), every ``one_shot`` exited 0.

    podman-compose starts the others without waiting for the one-shot service (it ignores
    ``service_completed_successfully``) and podman 4.3 runs no healthcheck by itself: both are
    waited for here, and a one-shot service that failed ends the wait at once.
    """
    states = service_states(engine, project, name)
    if set(states) != services:
        return False
    ready = True
    for service, st in states.items():
        if service in one_shot:
            if st["state"] == "exited" and int(st["exit_code"] or 0) != 0:
                raise GiveUp(f"one-shot service {service} exited {st['exit_code']}")
            ready &= st["state"] == "exited"
        elif st["state"] != "running":
            ready = False
        elif service in healthchecked and st["health"] != "healthy":
            if engine.is_podman:  # no systemd: podman 4.3 never runs healthchecks by itself
                engine.run(["healthcheck", "run", st["container"]], check=False)
            ready = False
    return ready
