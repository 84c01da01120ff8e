"""A RUNNING Dify compose project's data, for snapshot and backup: its containers, database, data dirs.

Found either from an install root (``--prefix``, the record in ``PREFIX/dify-airgap.json``) or from a
plain Dify ``docker/`` directory (``--project-dir``). Containers are found by their compose labels
(``com.docker.compose.project`` for Docker Compose, ``io.podman.compose.project`` for podman-compose;
both set ``com.docker.compose.service``), so docker and podman are driven the same way.

Database commands run INSIDE the db container and read the password from that container's own
environment (``$POSTGRES_PASSWORD`` / ``$MYSQL_ROOT_PASSWORD``): no secret is ever on a command line
or in a log.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scripts.core.console import LOG, redact
from scripts.core.errors import AirgapError
from scripts.core.resources import OVERRIDES_DIR
from scripts.dify import deployment
from scripts.dify.envfile import read_env
from scripts.dify.project import COMPOSE_FILE, ComposeProject, resolve_project_dir
from scripts.engine.client import Engine, compose_args, subprocess_runner

PODMAN_OVERRIDE = OVERRIDES_DIR / "podman.yaml"
DB_SERVICES = {"postgresql": "db_postgres", "mysql": "db_mysql"}
#: Services that write Dify's data; stopped for a consistent backup, started again afterwards.
WRITERS = ("api", "worker", "worker_beat", "plugin_daemon")


@dataclass
class Stack:
    """Where a compose project lives and how compose is called for it."""

    project_dir: Path
    project_name: str
    env_file: Path
    files: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    runtime: str | None = None
    prefix: Path | None = None
    dify_version: str = ""

    @property
    def env(self) -> dict[str, str]:
        """The project's .env values (read, never printed)."""
        return dict(read_env(self.env_file)) if self.env_file.is_file() else {}

    def setting(self, key: str, default: str = "") -> str:
        value = self.env.get(key, "")
        return value if value else default

    @property
    def db_type(self) -> str:
        return self.setting("DB_TYPE", "postgresql")

    @property
    def db_service(self) -> str:
        try:
            return DB_SERVICES[self.db_type]
        except KeyError:
            raise AirgapError(f"DB_TYPE={self.db_type} in {self.env_file} is not supported for snapshot/backup "
                              f"(supported: {', '.join(DB_SERVICES)}); dump that database with its own tools") \
                from None

    def compose(self, engine: Engine, args: Sequence[str], **kwargs):
        return engine.compose_run(list(args), project_dir=str(self.project_dir), files=self.files,
                                  env_file=str(self.env_file) if self.env_file.is_file() else None,
                                  profiles=self.profiles, project_name=self.project_name, **kwargs)

    def compose_command(self, engine: Engine) -> str:
        """The compose command line an operator types for this project (for messages)."""
        provider = engine.compose()
        return shlex.join([*provider.argv, *compose_args(provider, project_dir=str(self.project_dir),
                                                         files=self.files, project_name=self.project_name)])


def default_project_name(project_dir: Path, env: dict[str, str]) -> str:
    """What compose calls the project: COMPOSE_PROJECT_NAME, else the directory name, normalised."""
    name = env.get("COMPOSE_PROJECT_NAME") or project_dir.name
    return re.sub(r"[^a-z0-9_-]", "", name.lower()) or "docker"


def resolve(prefix: str | None = None, project_dir: str | None = None, project_name: str | None = None,
            compose_files: Sequence[str] = (), runtime: str | None = None, new: bool = False) -> Stack:
    """The stack from ``--prefix`` (install record) or ``--project-dir`` (a Dify docker/ directory).

    ``new`` (restore onto a fresh host): the directory may be empty or missing, the record may not exist.
    """
    if prefix and project_dir:
        raise AirgapError("pass either --prefix (an install root) or --project-dir (a docker/ directory), not both")
    fresh_prefix = None
    if new and prefix and not (Path(prefix) / "dify-airgap.json").is_file():
        fresh_prefix = Path(prefix).expanduser().resolve()  # an install root with no install yet
        project_dir = str(fresh_prefix / "docker")
        prefix = None
        project_name = project_name or "dify"
    if new and project_dir and not (Path(project_dir) / "docker-compose.yaml").is_file():
        directory = Path(project_dir).expanduser().resolve()  # created by the restore, not before
        files = list(compose_files)
        if not files and runtime == "podman" and PODMAN_OVERRIDE.is_file():
            files = ["docker-compose.yaml", str(PODMAN_OVERRIDE)]
        return Stack(directory, project_name or default_project_name(directory, {}), directory / ".env", files,
                     runtime=runtime, prefix=fresh_prefix)
    if prefix:
        dep = deployment.load(prefix)
        files = list(compose_files) or list(dep.compose_files)
        return Stack(dep.project_dir, project_name or dep.project_name, dep.env_file, files, list(dep.profiles),
                     runtime=dep.runtime, prefix=Path(prefix), dify_version=dep.dify_version)

    directory = resolve_project_dir(project_dir)
    env_file = directory / ".env"
    env = dict(read_env(env_file)) if env_file.is_file() else {}
    files = list(compose_files)
    if not files and runtime == "podman" and PODMAN_OVERRIDE.is_file():
        files = [COMPOSE_FILE, str(PODMAN_OVERRIDE)]
    return Stack(directory, project_name or default_project_name(directory, env), env_file, files,
                 dify_version=dify_version_from_compose(directory / COMPOSE_FILE))


def dify_version_from_compose(compose_file: Path) -> str:
    """The Dify release a compose file runs ("" when unreadable or not Dify's)."""
    try:
        return ComposeProject(compose_file.parent, (compose_file.name,)).dify_version
    except AirgapError:
        return ""


# --- containers ----------------------------------------------------------------------------------

def project_label(engine: Engine) -> str:
    return "io.podman.compose.project" if engine.is_podman else "com.docker.compose.project"


def ps_argv(engine: Engine, project: str, service: str | None = None, all_: bool = False) -> list[str]:
    args = ["ps", "-q", "--no-trunc", "--filter", f"label={project_label(engine)}={project}"]
    if service:
        args += ["--filter", f"label=com.docker.compose.service={service}"]
    return args + (["-a"] if all_ else [])


def containers(engine: Engine, stack: Stack, service: str | None = None, all_: bool = False) -> list[str]:
    """Container ids of the project (or one service), running only unless ``all_`` (read-only)."""
    res = engine.run(ps_argv(engine, stack.project_name, service, all_), mutates=False)
    return res.stdout.split()


def service_container(engine: Engine, stack: Stack, service: str) -> str:
    """The one running container of ``service``; a clear error if it is not running."""
    found = containers(engine, stack, service)
    if not found:
        raise AirgapError(f"service {service} of compose project {stack.project_name!r} is not running "
                          f"(on {engine.runtime}); start it with `{_up_hint(engine, stack, service)}`, "
                          f"or pass the right --project-dir/--prefix/--project-name/--runtime")
    if len(found) > 1:
        LOG.warning("service %s has %d running containers; using the first", service, len(found))
    return found[0]


def _up_hint(engine: Engine, stack: Stack, service: str) -> str:
    compose = "podman-compose" if engine.is_podman else "docker compose"
    return f"cd {stack.project_dir} && {compose} -p {stack.project_name} up -d {service}"


def inspect_container(engine: Engine, cid: str) -> dict:
    data = json.loads(engine.run(["container", "inspect", cid], mutates=False).stdout)
    return data[0] if isinstance(data, list) else data


def exec_argv(engine: Engine, cid: str, command: Sequence[str], interactive: bool = False) -> list[str]:
    return [engine.runtime, "exec", *(["-i"] if interactive else []), cid, *command]


def exec_in(engine: Engine, cid: str, command: Sequence[str], *, input: str | None = None,
            timeout: float | None = 600, check: bool = True, mutates: bool = True):
    return engine.run(exec_argv(engine, cid, command, input is not None)[1:], input=input, timeout=timeout,
                      check=check, mutates=mutates)






# --- the database --------------------------------------------------------------------------------

#: Row count of every table in the public schema, in one query (query_to_xml runs count(*) per table).
PG_ROW_COUNTS = ("SELECT table_name || '=' || (xpath('/row/c/text()', query_to_xml(format("
                 "'select count(*) as c from %I.%I', table_schema, table_name), false, true, '')))[1]::text "
                 "FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' "
                 "ORDER BY table_name")
MYSQL_ROW_COUNTS = ("SELECT CONCAT(table_name, '=', table_rows) FROM information_schema.tables "
                    "WHERE table_schema = DATABASE() ORDER BY table_name")


def _sh(script: str, *args: str) -> list[str]:
    """``sh -c SCRIPT sh ARGS...``: values travel as positional parameters, never inside the script."""
    return ["sh", "-c", script, "sh", *args]


def dump_command(db_type: str, database: str) -> list[str]:
    """The command, run in the db container, that writes a plain SQL dump of ``database`` to stdout."""
    if db_type == "mysql":
        return _sh('MYSQL_PWD="$MYSQL_ROOT_PASSWORD" exec mysqldump -uroot --single-transaction --routines '
                   '--triggers --databases "$1"', database)
    return _sh('PGPASSWORD="$POSTGRES_PASSWORD" exec pg_dump -U "${POSTGRES_USER:-postgres}" --no-owner '
               '--no-privileges --dbname="$1"', database)


def recreate_command(db_type: str, database: str) -> list[str]:
    """Drop and create ``database`` empty (the dump is loaded into it next)."""
    if db_type == "mysql":
        return _sh('MYSQL_PWD="$MYSQL_ROOT_PASSWORD" exec mysql -uroot -e '
                   '"DROP DATABASE IF EXISTS \\`$1\\`; CREATE DATABASE \\`$1\\`"', database)
    return _sh('export PGPASSWORD="$POSTGRES_PASSWORD"; u="${POSTGRES_USER:-postgres}"; '
               'psql -v ON_ERROR_STOP=1 -q -U "$u" -d postgres -c "DROP DATABASE IF EXISTS \\"$1\\" WITH (FORCE)" '
               '&& psql -v ON_ERROR_STOP=1 -q -U "$u" -d postgres -c "CREATE DATABASE \\"$1\\""', database)


def load_command(db_type: str, database: str) -> list[str]:
    """Load a plain SQL dump from stdin into ``database``, stopping at the first error."""
    if db_type == "mysql":
        return _sh('MYSQL_PWD="$MYSQL_ROOT_PASSWORD" exec mysql -uroot "$1"', database)
    return _sh('PGPASSWORD="$POSTGRES_PASSWORD" exec psql -v ON_ERROR_STOP=1 -q -U "${POSTGRES_USER:-postgres}" '
               '--dbname="$1"', database)


def query_command(db_type: str, database: str, sql: str) -> list[str]:
    """One query in ``database``, rows as plain text; name and SQL travel as "$1" and "$2", never in the script."""
    if db_type == "mysql":
        return _sh('MYSQL_PWD="$MYSQL_ROOT_PASSWORD" exec mysql -uroot -N -B -D "$1" -e "$2"', database, sql)
    return _sh('PGPASSWORD="$POSTGRES_PASSWORD" exec psql -X -A -t -q -U "${POSTGRES_USER:-postgres}" '
               '--dbname="$1" -c "$2"', database, sql)


def row_counts_command(db_type: str, database: str) -> list[str]:
    return query_command(db_type, database, MYSQL_ROW_COUNTS if db_type == "mysql" else PG_ROW_COUNTS)


def parse_row_counts(text: str) -> dict[str, int]:
    counts = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and value.strip().isdigit():
            counts[name] = int(value)
    return counts


def exists_command(db_type: str, database: str) -> list[str]:
    """1 when ``database`` exists, else 0 (asked in the server's own catalogue database)."""
    name = database.replace("'", "''")
    if db_type == "mysql":
        return query_command(db_type, "information_schema",
                             f"SELECT COUNT(*) FROM schemata WHERE schema_name = '{name}'")
    return query_command(db_type, "postgres", f"SELECT count(*) FROM pg_database WHERE datname = '{name}'")


#: What a database server says while it cannot take a query YET (the official postgres image starts a
#: temporary server for its init scripts, stops it, then starts the real one): retried, never final.
TRANSIENT_DB_STATES = (
    ("the database system is starting up", "starting up"),
    ("the database system is not yet accepting connections", "starting up"),
    ("the database system is shutting down", "shutting down"),
    ("the database system is in recovery mode", "recovering"),
    ("terminating connection due to administrator command", "shutting down"),
    ("could not connect to server", "not listening yet"),
    ("connection refused", "not listening yet"),
    ("no such file or directory", "not listening yet"),  # psql's unix socket not there yet
    ("can't connect to", "not listening yet"),  # mysql
    ("server has gone away", "restarting"),
    ("is restarting", "restarting"),  # engine exec into a container that is restarting
    ("is not running", "not running"),
)
#: Checked first: messages that no amount of waiting changes.
FINAL_DB_ERRORS = ("password authentication failed", "access denied", "permission denied", "role \"")


def transient_state(output: str) -> str | None:
    """The transient state named in a failed database command's output, or None (a real failure)."""
    low = output.lower()
    if any(marker in low for marker in FINAL_DB_ERRORS):
        return None
    return next((state for marker, state in TRANSIENT_DB_STATES if marker in low), None)


def ready_command(db_type: str) -> list[str]:
    """A real query over TCP on the container's loopback: the postgres image's init-time server does not
    listen on TCP, so this cannot succeed against a server that is about to be stopped."""
    if db_type == "mysql":
        return _sh('MYSQL_PWD="$MYSQL_ROOT_PASSWORD" exec mysql -uroot -h 127.0.0.1 -N -B -e "SELECT 1"')
    return _sh('PGPASSWORD="$POSTGRES_PASSWORD" exec psql -X -A -t -q -h 127.0.0.1 -U "${POSTGRES_USER:-postgres}" '
               '-d postgres -c "SELECT 1"')


def db_exec(engine: Engine, cid: str, command: Sequence[str], *, timeout: float = 120, what: str = "",
            mutates: bool = True, interval: float = 1.0):
    """Run a database command in the db container, retrying while the server is in a transient state.

    A failure that is not transient raises at once with the command's message; after ``timeout`` seconds
    of transient states it raises naming the last state seen. Returns the successful result.
    """
    deadline = time.monotonic() + timeout
    what = what or "the database command"
    while True:
        res = exec_in(engine, cid, command, check=False, mutates=mutates, timeout=min(600, max(30.0, timeout)))
        if res.ok:
            return res
        output = (res.stderr + res.stdout).strip()
        state = transient_state(output)
        if state is None:
            raise AirgapError(f"{what} failed in container {cid[:12]}: {output[-500:] or f'exit {res.returncode}'}")
        if time.monotonic() >= deadline:
            raise AirgapError(f"{what}: the database in container {cid[:12]} was still {state} after {timeout:.0f}s "
                              f"({output[-300:]}); check `{engine.runtime} logs {cid[:12]}` and retry")
        LOG.info("database %s; retrying %s", state, what)
        time.sleep(interval)


def row_counts(engine: Engine, cid: str, db_type: str, database: str, timeout: float = 120) -> dict[str, int]:
    res = db_exec(engine, cid, row_counts_command(db_type, database), mutates=False, timeout=timeout,
                  what=f"counting the rows of {database}")
    return parse_row_counts(res.stdout)


def database_exists(engine: Engine, cid: str, db_type: str, database: str, timeout: float = 120) -> bool:
    res = db_exec(engine, cid, exists_command(db_type, database), mutates=False, timeout=timeout,
                  what=f"looking up database {database}")
    return res.stdout.strip() not in ("", "0")


def wait_db(engine: Engine, cid: str, db_type: str, timeout: float = 120, settle: float = 2.0) -> None:
    """Wait until the database answers a real query, twice, ``settle`` seconds apart (not one lucky probe).

    Transient states (starting up, shutting down, recovering) are waited out; when the time is up the
    error names the last state seen. A failure that is not transient (bad password...) raises at once.
    """
    deadline = time.monotonic() + timeout
    first_ok: float | None = None
    state = "not answering"
    while True:
        res = exec_in(engine, cid, ready_command(db_type), check=False, mutates=False, timeout=30)
        now = time.monotonic()
        if res.ok:
            if first_ok is not None and now - first_ok >= settle:
                return
            first_ok = first_ok if first_ok is not None else now
        else:
            first_ok = None
            output = (res.stderr + res.stdout).strip()
            state = transient_state(output) or ""
            if not state:
                raise AirgapError(f"the database in container {cid[:12]} refuses a query: {output[-500:]}")
        if now >= deadline:
            raise AirgapError(f"timed out after {timeout:.0f}s waiting for the database in container {cid[:12]} to "
                              f"accept queries (last state: {state}); check `{engine.runtime} logs {cid[:12]}`")
        time.sleep(0.5)


# --- SELinux -------------------------------------------------------------------------------------

def selinux_enforcing(runner=None) -> bool:
    """True when getenforce says Enforcing (Red Hat); False where SELinux is absent or permissive."""
    res = (runner or subprocess_runner)(["getenforce"])
    return res.ok and res.stdout.strip().lower() == "enforcing"


def relabel_argv(paths: Sequence[Path]) -> list[str]:
    """What `:z` on a bind mount would do: the shared container file type, recursively."""
    return ["chcon", "-R", "-t", "container_file_t", *(str(p) for p in paths)]


def redact_argv(argv: Sequence[str]) -> str:
    """``shlex.join`` with registered secrets hidden (for logs and dry-run output)."""
    return redact(shlex.join(list(argv)))
