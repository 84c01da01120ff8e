"""The REAL Dify compose project (1.11.3 by default) up on a real engine, with stand-ins and a REAL PostgreSQL.

Shared by the snapshot and backup integration tests. The stand-in postgres only fakes pg_dump/psql,
so ``db_postgres`` runs Debian's real PostgreSQL 15 here (a debootstrap root with ``postgresql``,
cached by the lab) behind the official image's env contract (POSTGRES_USER/PASSWORD/DB, PGDATA),
through one extra compose file. Everything else is the stand-ins of tests/integration/standin_project.py,
whose project and readiness helpers are reused as they are. ``version`` picks another vendored release
(tests/fixtures/dify-VERSION); its services, healthchecks and one-shot services come from its compose file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from scripts.core.waiting import wait_until
from scripts.data.stackdata import Stack
from scripts.engine.client import Engine
from tests.integration.standin_project import FACTS, OVERRIDES, all_up, release_project, service_states
from tests.lab import host as lab
from tests.lab import standins

PG_IMAGE = standins.PG_IMAGE
PG_OVERRIDE = "docker-compose.lab-postgres.yaml"
PG_ENTRYPOINT = standins.PG_ENTRYPOINT
PG_OVERRIDE_TEXT = f"""# dify-airgap lab: db_postgres runs a REAL PostgreSQL 15 (not the stand-in).
services:
  db_postgres:
    image: {PG_IMAGE}
    entrypoint: ["/bin/sh", "/lab-pg-entrypoint.sh"]
    volumes:
      - ./lab-pg-entrypoint.sh:/lab-pg-entrypoint.sh:ro
"""
#: 1.11.3's default-profile services (read from its compose file); ``RunningStack.services`` for others.
ALL_SERVICES = set(FACTS.services)


@dataclass
class RunningStack:
    engine: Engine
    stack: Stack
    ports: dict[str, int] = field(default_factory=dict)
    facts: standins.ReleaseFacts = FACTS

    @property
    def services(self) -> set[str]:
        """Every service of the release's default profile set."""
        return set(self.facts.services)

    def compose(self, args, **kwargs):
        return self.stack.compose(self.engine, args, **kwargs)

    def container(self, service: str) -> str:
        return service_states(self.engine, self.stack.project_dir, self.stack.project_name)[service]["container"]

    def exec(self, service: str, *argv: str, input: str | None = None) -> str:
        interactive = ["-i"] if input is not None else []
        return self.engine.run(["exec", *interactive, self.container(service), *argv], input=input,
                               timeout=120).stdout

    def psql(self, database: str, sql: str) -> str:
        return self.exec("db_postgres", "psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-U", "postgres",
                         "-d", database, "-c", sql)

    def wait_up(self, services: set[str], timeout: float = 240) -> None:
        wait_until(lambda: all_up(self.engine, self.stack.project_dir, self.stack.project_name, services,
                                   self.facts.healthchecked, self.facts.one_shot),
                   timeout=timeout, what=f"{sorted(services)} running (healthy where checked)",
                   on_timeout=lambda: json.dumps(service_states(self.engine, self.stack.project_dir,
                                                         self.stack.project_name), indent=1)[-3000:])

    def down(self) -> None:
        down = ["down", "-v"] if self.engine.is_podman else ["down", "-v", "--remove-orphans", "--timeout", "5"]
        self.compose(down, check=False, timeout=300)
        # containers of services outside the active profile set, if any test started them
        label = "io.podman.compose.project" if self.engine.is_podman else "com.docker.compose.project"
        left = self.engine.run(["ps", "-a", "-q", "--filter", f"label={label}={self.stack.project_name}"],
                               mutates=False).stdout.split()
        if left:
            self.engine.run(["rm", "--force", *left], check=False)


def make_project(engine: Engine, directory: Path, name: str,
                 facts: standins.ReleaseFacts = FACTS) -> tuple[Stack, dict[str, int]]:
    """A complete Dify docker/ directory (with .env) with free ports and the real-postgres override."""
    project, ports = release_project(directory, facts)
    (project / PG_OVERRIDE).write_text(PG_OVERRIDE_TEXT)
    (project / "lab-pg-entrypoint.sh").write_text(PG_ENTRYPOINT)
    files = ["docker-compose.yaml", PG_OVERRIDE]
    if engine.is_podman:
        files.append(str(OVERRIDES / "podman.yaml"))
    return Stack(project, name, project / ".env", files, runtime=engine.runtime, dify_version=facts.version), ports


def project_name(prefix: str = "dalsnap") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@contextmanager
def running_stack(engine: Engine, directory: Path, services: set[str] | None = None,
                  name: str | None = None, version: str | None = None) -> Iterator[RunningStack]:
    """Bring the project up (``services`` and their deps, default all) and always tear it down.

    ``version``: a vendored release other than 1.11.3 (its stand-ins must be present, e.g.
    ``standins.present(engine, standins.default_images(version))``).
    """
    if engine.is_podman:
        lab.allow_podman_internal_networks()
    facts = standins.release_facts(version) if version else FACTS
    stack, ports = make_project(engine, directory, name or project_name(), facts)
    running = RunningStack(engine, stack, ports, facts)
    try:
        running.compose(["up", "-d", *sorted(services or ())], timeout=600)
        yield running
    finally:
        running.down()


def tree_digest(root: Path) -> dict[str, tuple]:
    """Every file, dir and link below ``root``: (kind, sha256 or target, mode, uid, gid)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path), st.st_uid, st.st_gid)
            elif path.is_dir():
                out[rel] = ("dir", oct(st.st_mode & 0o7777), st.st_uid, st.st_gid)
            else:
                out[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), oct(st.st_mode & 0o7777),
                            st.st_uid, st.st_gid)
    return out


def plant_plugins(root: Path, tenant: str = "7e1ed6a2-0000-4000-8000-00000000c0de", plugins: int = 3) -> dict:
    """Files like an installed plugin daemon's, into ``volumes/plugin_daemon`` (through the host path): the
    package ``plugin_packages/ID`` and the installed copy ``plugin/ID`` where the daemon keeps them (ID =
    author/name:version@checksum, so ``author/`` is a directory; scripts/data/pluginstate.py), the working dir."""
    ids = []
    for i in range(plugins):
        ident = f"langgenius/tool{i}:0.0.{i}@{hashlib.sha256(str(i).encode()).hexdigest()}"
        ids.append(ident)
        package = os.urandom(2048 + i)
        for bucket in ("plugin_packages", "plugin"):
            path = root / bucket / ident
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(package)
        work = root / "cwd" / "langgenius" / f"tool{i}-0.0.{i}"
        (work / ".venv" / "bin").mkdir(parents=True, exist_ok=True)
        (work / "main.py").write_text(f"print('tool {i}')\n")
        (work / ".venv" / "pyvenv.cfg").write_text("home = /opt/lab-python/bin\nimplementation = CPython\n"
                                                  "version_info = 3.12.3\ninclude-system-site-packages = false\n")
        (work / ".venv" / "bin" / "python").symlink_to("/opt/lab-python/bin/python3.12")
        secret = work / "config.secret"
        secret.write_text("only the daemon reads this\n")
        secret.chmod(0o600)
        os.chown(work / "main.py", 1001, 1001)
    return {"tenant": tenant, "ids": ids}


def plant_rows(running: RunningStack, database: str, tenant: str, ids: list[str]) -> None:
    """The daemon's plugin tables (the real names, fewer columns: the identifier and the runtime type the
    snapshot's plugin check reads) with rows, in the real PostgreSQL."""
    exists = running.psql("postgres", f"SELECT count(*) FROM pg_database WHERE datname = '{database}'").strip()
    if exists == "0":
        running.psql("postgres", f'CREATE DATABASE "{database}"')
    values = ", ".join(f"('{tenant}', '{ident}')" for ident in ids)
    running.psql(database, "CREATE TABLE plugin_installations (id serial PRIMARY KEY, tenant_id text NOT NULL, "
                           "plugin_unique_identifier text NOT NULL, runtime_type varchar(127) DEFAULT 'local', "
                           "created_at timestamptz DEFAULT now()); "
                           "CREATE TABLE plugins (id serial PRIMARY KEY, plugin_unique_identifier text UNIQUE, "
                           "install_type varchar(127) DEFAULT 'local', refers integer DEFAULT 1); "
                           f"INSERT INTO plugin_installations (tenant_id, plugin_unique_identifier) VALUES {values}; "
                           "INSERT INTO plugins (plugin_unique_identifier) "
                           "SELECT plugin_unique_identifier FROM plugin_installations;")


def python_into_daemon(running: RunningStack) -> None:
    """Give the running daemon container the interpreter the planted venvs point at (committed with it)."""
    running.exec("plugin_daemon", "sh", "-c", "mkdir -p /opt/lab-python/bin && "
                 "cp /bin/busybox /opt/lab-python/bin/python3.12")


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
