"""Lab stand-in images named exactly like Dify's, and a local registry seeded with them.

Real Dify images cannot be pulled in the lab (no container registry is reachable). The stand-ins
carry the real names (``langgenius/dify-api:1.11.3``, ``postgres:15-alpine``...) and behave enough
for the REAL docker-compose.yaml to come up: every command, entrypoint and healthcheck the compose
file uses exists and answers. Most are ~2 MB busybox-static images whose tools (``pg_isready``,
``redis-cli``, ``curl``...) are small shell scripts; HTTP services answer through ``nc -ll -e``
with one shell handler per connection. nginx is the REAL nginx binary (Debian's package, with the
libraries it links) so Dify's own nginx templates and entrypoint route the traffic.

Every stand-in carries ``LABEL org.dify-airgap.standin=1`` and a digest of its recipe, so a rebuild
is skipped when nothing changed. Lab only: never ship these images.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from scripts.core.console import LOG, setup_logging
from scripts.core.errors import AirgapError
from scripts.dify import envfile, envsyntax
from scripts.engine.client import Engine, subprocess_runner
from tests.lab import host as lab

DIFY_VERSION = "1.11.3"
LABEL = "org.dify-airgap.standin"
DIGEST_LABEL = "org.dify-airgap.standin.digest"
REPO_ROOT = Path(__file__).resolve().parents[2]
EXTRA_FILES = REPO_ROOT / "tests" / "fixtures" / "dify-1.11.3-extra" / "docker"
#: Bump when the common helpers change in a way the per-image recipe digests would not see.
RECIPE_VERSION = "1"


FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"


def default_fixture(version: str = "1.11.3") -> Path:
    """The real Dify ``docker/`` tree of ``version`` vendored in tests/fixtures (SOURCE.txt says whence)."""
    return FIXTURES_DIR / f"dify-{version}"


#: The images of each vendored release's default profile set, in compose-file order, plus qdrant (the
#: store other tests switch to). tests/unit/lab/test_standins.py checks them against :func:`release_facts`.
RELEASE_IMAGES: dict[str, tuple[str, ...]] = {
    "1.11.3": (
        "langgenius/dify-api:1.11.3", "langgenius/dify-web:1.11.3", "postgres:15-alpine", "redis:6-alpine",
        "langgenius/dify-sandbox:0.2.12", "langgenius/dify-plugin-daemon:0.5.2-local", "ubuntu/squid:latest",
        "nginx:latest", "semitechnologies/weaviate:1.27.0", "busybox:latest", "langgenius/qdrant:v1.8.3",
    ),
    "1.16.0": (
        "langgenius/dify-api:1.16.0", "langgenius/dify-web:1.16.0", "postgres:15-alpine", "redis:6-alpine",
        "langgenius/dify-sandbox:0.2.15", "langgenius/dify-agent-local-sandbox:1.16.0",
        "langgenius/dify-plugin-daemon:0.6.3-local", "langgenius/dify-agent-backend:1.16.0",
        "ubuntu/squid:latest", "nginx:latest", "semitechnologies/weaviate:1.27.0", "busybox:latest",
        "langgenius/qdrant:v1.8.3",
    ),
}


def default_images(version: str = DIFY_VERSION) -> list[str]:
    """The images of ``version``'s default profile set (weaviate, postgresql[, collaboration]) plus qdrant.

    A version with no vendored fixture gets 1.11.3's set with its own dify-api/dify-web tags.
    """
    if version in RELEASE_IMAGES:
        return list(RELEASE_IMAGES[version])
    return [ref.replace(":1.11.3", f":{version}") if ref.startswith(("langgenius/dify-api:", "langgenius/dify-web:"))
            else ref for ref in RELEASE_IMAGES["1.11.3"]]


# --- what a release's compose file runs (read from the vendored fixture) -------------------------

@dataclass(frozen=True)
class ReleaseFacts:
    """What a Dify release's docker-compose.yaml runs with the default profiles of its .env.example."""

    fixture: Path
    env: dict[str, str]             #: .env.example, interpolated as compose reads it
    profiles: tuple[str, ...]       #: COMPOSE_PROFILES, resolved
    services: dict[str, str]        #: active service -> image, in file order
    healthchecked: frozenset[str]   #: active services with a healthcheck that is not disabled
    one_shot: frozenset[str]        #: services others wait for with service_completed_successfully
    published_ports: tuple[str, ...]  #: .env keys holding the host side of a published port
    environment: dict[str, dict[str, str]]  #: service -> its `environment:` interpolated with ``env``

    @property
    def version(self) -> str:
        """The release, from the api service's image tag (what /health reports)."""
        return split_ref(self.services["api"])[1]

    @property
    def images(self) -> list[str]:
        return list(dict.fromkeys(self.services.values()))

    @property
    def sandbox_proxy_port(self) -> int | None:
        """The port on which ssrf_proxy reverse-proxies the sandbox by default (1.11.3: 8194; 1.16: none)."""
        port = self.environment.get("ssrf_proxy", {}).get("REVERSE_PROXY_PORT", "")
        return int(port) if port.isdigit() else None


def _truthy(value) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def published_port_keys(ports: Iterable) -> list[str]:
    """The variables giving the HOST side of compose ``ports`` entries.

    ``"${EXPOSE_NGINX_PORT:-80}:${NGINX_PORT:-80}"`` -> ``["EXPOSE_NGINX_PORT"]``; an optional leading
    host IP is skipped; literal host ports and long-syntax entries name no variable.
    """
    keys = []
    for entry in ports or ():
        m = re.match(r"^(?:[0-9.]+:)?\$\{([A-Za-z_][A-Za-z0-9_]*)(?:[:?+-][^}]*)?\}:", str(entry)) \
            if isinstance(entry, str) else None
        if m:
            keys.append(m.group(1))
    return keys


def release_facts(fixture: Path | str) -> ReleaseFacts:
    """Read a vendored release (``tests/fixtures/dify-VERSION`` or a version string) without an engine."""
    import yaml

    fixture = default_fixture(fixture) if isinstance(fixture, str) else fixture
    env = envsyntax.resolve_all(envfile.read_env(fixture / ".env.example"))
    profiles = tuple(p.strip() for p in env.get("COMPOSE_PROFILES", "").split(",") if p.strip())
    data = yaml.safe_load((fixture / "docker-compose.yaml").read_text(encoding="utf-8")) or {}
    services: dict[str, str] = {}
    healthchecked, one_shot, ports = set(), set(), []
    environment: dict[str, dict[str, str]] = {}
    all_services = data.get("services") or {}
    for name, svc in all_services.items():
        svc = svc or {}
        if svc.get("profiles") and not set(svc["profiles"]) & set(profiles):
            continue
        services[name] = envsyntax.interpolate(str(svc.get("image", "")), env)
        check = svc.get("healthcheck") or {}
        test = check.get("test")
        disabled = _truthy(envsyntax.interpolate(str(check.get("disable", False)), env))
        if test and not disabled and not (isinstance(test, list) and test[:1] == ["NONE"]):
            healthchecked.add(name)
        ports += [key for key in published_port_keys(svc.get("ports")) if key not in ports]
        raw_env = svc.get("environment") or {}
        if isinstance(raw_env, list):
            raw_env = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw_env)
        environment[name] = {k: envsyntax.interpolate(str(v if v is not None else ""), env) for k, v in raw_env.items()}
    for name in services:
        deps = all_services[name].get("depends_on") or {}
        if isinstance(deps, dict):
            one_shot.update(dep for dep, cond in deps.items()
                            if (cond or {}).get("condition") == "service_completed_successfully")
    return ReleaseFacts(fixture=fixture, env=env, profiles=profiles, services=services,
                        healthchecked=frozenset(healthchecked), one_shot=frozenset(one_shot & set(services)),
                        published_ports=tuple(ports), environment=environment)


def split_ref(ref: str) -> tuple[str, str]:
    """``postgres:15-alpine`` -> ``("postgres", "15-alpine")``; the tag defaults to latest."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return name, tag


def hub_path(ref: str) -> str:
    """The Docker Hub repository path: ``busybox:latest`` -> ``library/busybox:latest``."""
    name, tag = split_ref(ref)
    if name.startswith("docker.io/"):
        name = name[len("docker.io/"):]
    if "/" not in name:
        name = f"library/{name}"
    return f"{name}:{tag}"


def local_ref(engine: Engine, ref: str) -> str:
    """The name an engine stores a Docker Hub image under after a pull.

    Docker keeps ``postgres:15-alpine``; podman keeps ``docker.io/library/postgres:15-alpine``
    (an imported unqualified name would become ``localhost/...``, which the compose file's short
    names do not resolve to when docker.io is the search registry).
    """
    return f"docker.io/{hub_path(ref)}" if engine.is_podman else ref


# --- shell pieces shared by the stand-ins ---------------------------------------------------------

#: /bin/bash for busybox images: Dify's entrypoints start with #!/bin/bash but are POSIX sh.
BASH_SHIM = '#!/bin/sh\n# dify-airgap stand-in: busybox sh standing in for bash\nexec /bin/sh "$@"\n'

#: One HTTP/1.x exchange on stdin/stdout; nc -ll -e starts it for each connection.
HTTP_HANDLER = r"""#!/bin/sh
# dify-airgap stand-in: one HTTP exchange (started by `nc -ll -e` per connection).
# Reads the request, then calls route() from $STANDIN_ROUTES with METHOD, REQUEST_PATH, QUERY,
# REQUEST_BODY and the helpers respond/json/text/html set.
CR=$(printf '\r')
IFS=' ' read -r METHOD REQUEST_URI PROTO || exit 0
REQUEST_PATH=${REQUEST_URI%%\?*}
QUERY=${REQUEST_URI#"$REQUEST_PATH"}
CONTENT_LENGTH=0
HEADERS=""
while IFS= read -r line; do
  line=${line%"$CR"}
  [ -z "$line" ] && break
  HEADERS="$HEADERS$line
"
  case "$line" in
    [Cc]ontent-[Ll]ength:*) CONTENT_LENGTH=$(echo "${line#*:}" | tr -d ' ') ;;
  esac
done
REQUEST_BODY=""
if [ "$CONTENT_LENGTH" -gt 0 ] 2>/dev/null; then
  REQUEST_BODY=$(head -c "$CONTENT_LENGTH")
fi
respond() {  # STATUS CONTENT-TYPE BODY
  printf 'HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %s\r\nConnection: close\r\n' \
    "$1" "$2" "${#3}"
  printf 'X-Dify-Airgap-Standin: %s\r\n\r\n%s' "${STANDIN_IMAGE:-unknown}" "$3"
}
json() { respond "${2:-200 OK}" application/json "$1"; }
text() { respond "${2:-200 OK}" "text/plain; charset=utf-8" "$1"; }
html() { respond "${2:-200 OK}" "text/html; charset=utf-8" "$1"; }
not_found() { json '{"code": "not_found", "message": "stand-in: no such route", "status": 404}' "404 NOT FOUND"; }
. "$STANDIN_ROUTES"
route
"""

#: standin-serve ROUTES:PORT...: one listener per pair; exits 0 on SIGTERM/SIGINT.
SERVE = r"""#!/bin/sh
# dify-airgap stand-in: serve HTTP on each PORT with the routes in ROUTES (ROUTES:PORT ...).
pids=""
for pair in "$@"; do
  routes=${pair%%:*}; port=${pair##*:}
  STANDIN_ROUTES=$routes nc -ll -p "$port" -e /usr/local/lib/standin/http &
  pids="$pids $!"
  echo "[stand-in ${STANDIN_IMAGE:-}] listening on :$port ($routes)"
done
trap 'kill $pids 2>/dev/null; exit 0' TERM INT
wait
"""

#: curl -f URL (healthchecks), on busybox wget.
CURL = r"""#!/bin/sh
# dify-airgap stand-in: the curl options healthchecks use (-f -s -S -o -L -m), on busybox wget.
out=- timeout=10 url=""
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift ;;
    -m|--max-time) timeout=$2; shift ;;
    -u|-H|-X|-d) shift ;;
    http://*|https://*) url=$1 ;;
    -*) ;;
    *) url=$1 ;;
  esac
  shift
done
[ -n "$url" ] || { echo "curl: no URL specified" >&2; exit 2; }
# (busybox 1.35's static wget -T segfaults: bound it with timeout instead)
exec timeout "$timeout" wget -q -O "$out" "$url"
"""

#: A TCP service that only accepts and closes (enough for pg_isready-style probes).
ACCEPT_ONLY = "#!/bin/sh\n# dify-airgap stand-in: accept a connection and close it.\nexit 0\n"


def _serve_entry(image: str, script: str) -> str:
    return f"#!/bin/sh\n# dify-airgap stand-in for {image}\nexport STANDIN_IMAGE='{image}'\n{script}"


# --- recipes --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """How to build one stand-in: files on top of busybox, image config, optional real nginx."""

    files: dict[str, str]
    changes: tuple[str, ...]
    nginx: bool = False
    #: Host binaries copied in with their libraries: (host path, image path). Busybox lacks
    #: printenv and its awk rejects the regex in Dify's squid entrypoint; busybox sh runs its own
    #: applets before PATH, so Dify's #!/bin/bash entrypoints there need the real bash.
    host_binaries: tuple[tuple[str, str], ...] = ()
    links: dict[str, str] = field(default_factory=dict)


def _api(ref: str) -> Recipe:
    _, version = split_ref(ref)
    routes = r"""# dify-api stand-in routes (Dify's JSON shapes)
route() {
  case "$REQUEST_PATH" in
    /health) json "{\"pid\": $$, \"status\": \"ok\", \"version\": \"$DIFY_VERSION\"}" ;;
    /console/api/ping) json '{"result": "pong"}' ;;
    /socket.io/*)  # collaboration (api_websocket): an Engine.IO polling handshake, no session behind it
      text '0{"sid": "dify-airgap-standin", "upgrades": [], "pingInterval": 25000, "pingTimeout": 20000}' ;;
    /console/api/setup) json '{"step": "not_started"}' ;;
    /console/api/version)
      json "{\"version\": \"$DIFY_VERSION\", \"release_notes\": \"\", \"can_auto_update\": false}" ;;
    /v1|/v1/*|/api|/api/*)
      json '{"code": "unauthorized", "message": "Access token is invalid", "status": 401}' "401 UNAUTHORIZED" ;;
    *) not_found ;;
  esac
}
"""
    entry = _serve_entry(ref, r"""# MODE selects the process like the real image: api (default), worker, beat, job.
export DIFY_VERSION
echo "[stand-in] dify-api $DIFY_VERSION MODE=${MODE:-api}"
if [ "${MIGRATION_ENABLED:-true}" = "true" ] && [ "${MODE:-api}" = "api" ] && [ -n "${DB_HOST:-}" ]; then
  i=0
  until echo | nc "$DB_HOST" "${DB_PORT:-5432}" >/dev/null 2>&1; do
    i=$((i + 1)); [ "$i" -gt 120 ] && { echo "[stand-in] database $DB_HOST unreachable" >&2; exit 1; }
    sleep 1
  done
  echo "[stand-in] database $DB_HOST:${DB_PORT:-5432} reachable; migrations: nothing to do"
fi
case "${MODE:-api}" in
  worker|beat)
    echo "[stand-in] celery ${MODE} ready (does nothing)"
    echo $$ > /tmp/standin-celery.pid  # for the celery stub (worker healthcheck)
    trap 'rm -f /tmp/standin-celery.pid; exit 0' TERM INT
    while :; do sleep 3600 & wait $!; done ;;
  job)
    exec flask "$@" ;;
  *)
    exec standin-serve /usr/local/lib/standin/routes-api:"${DIFY_PORT:-5001}" ;;
esac
""")
    flask = "#!/bin/sh\n# dify-airgap stand-in: Dify's flask CLI (db upgrade, reset-password...) does nothing.\n" \
            'echo "[stand-in] flask $*: nothing to do"\n'
    celery = r"""#!/bin/sh
# dify-airgap stand-in: `celery -A celery_healthcheck.celery inspect ping` (the compose healthcheck of
# worker and worker_beat) answers for the stand-in celery process of this container; nothing else.
case " $* " in
  *" inspect ping "*)
    if pid=$(cat "${STANDIN_CELERY_PIDFILE:-/tmp/standin-celery.pid}" 2>/dev/null) && kill -0 "$pid" 2>/dev/null; then
      printf -- '->  celery@%s: OK\n        pong\n\n1 node online.\n' "$(hostname)"; exit 0
    fi
    echo "Error: No nodes replied within time constraint" >&2; exit 69 ;;
esac
echo "[stand-in] celery $*: not implemented" >&2; exit 64
"""
    return Recipe(
        files={"/entrypoint.sh": entry, "/usr/local/lib/standin/routes-api": routes,
               "/usr/local/bin/flask": flask, "/usr/local/bin/celery": celery, "/usr/local/bin/curl": CURL,
               "/app/api/storage/.keep": ""},
        changes=(f"ENV DIFY_VERSION={version}", "ENV DIFY_PORT=5001", "WORKDIR /app/api",
                 "EXPOSE 5001", 'ENTRYPOINT ["/bin/bash", "/entrypoint.sh"]'))


def _web(ref: str) -> Recipe:
    _, version = split_ref(ref)
    routes = r"""# dify-web stand-in routes: one page for every path
route() {
  html "<!DOCTYPE html><html><head><title>Dify</title></head><body><h1>Dify $DIFY_VERSION</h1>
<p>dify-airgap stand-in for $STANDIN_IMAGE (not the real web UI)</p><p>path: $REQUEST_PATH</p></body></html>"
}
"""
    entry = _serve_entry(ref, 'export DIFY_VERSION\n'
                              'exec standin-serve /usr/local/lib/standin/routes-web:"${PORT:-3000}"\n')
    return Recipe(files={"/app/web/entrypoint.sh": entry, "/usr/local/lib/standin/routes-web": routes},
                  changes=(f"ENV DIFY_VERSION={version}", "ENV PORT=3000", "WORKDIR /app/web", "EXPOSE 3000",
                           'ENTRYPOINT ["/bin/sh", "./entrypoint.sh"]'))


def _postgres(ref: str) -> Recipe:
    entry = _serve_entry(ref, r"""set -e
if [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi
if [ "$1" = "postgres" ]; then
  : "${PGDATA:=/var/lib/postgresql/data}"
  mkdir -p "$PGDATA"
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "[stand-in] initdb: ${POSTGRES_USER:-postgres}/${POSTGRES_DB:-${POSTGRES_USER:-postgres}} in $PGDATA"
    echo 15 > "$PGDATA/PG_VERSION"
    echo "dify-airgap stand-in cluster: user=${POSTGRES_USER:-postgres} db=${POSTGRES_DB:-postgres}" \
      > "$PGDATA/standin.txt"
  fi
  chmod 700 "$PGDATA"
fi
exec "$@"
""")
    server = _serve_entry(ref, r"""# postgres -c name=value ...: accepts connections on 5432, stores nothing.
echo "[stand-in] postgres $*"
echo "LOG:  database system is ready to accept connections"
trap 'echo "LOG:  database system is shut down"; kill $pid 2>/dev/null; exit 0' TERM INT
nc -ll -p "${PGPORT:-5432}" -e /usr/local/lib/standin/accept &
pid=$!
wait
""")
    isready = r"""#!/bin/sh
# dify-airgap stand-in: pg_isready [-h HOST] [-p PORT] [-U USER] [-d DB] [-t SEC] [-q]
host=${PGHOST:-127.0.0.1} port=${PGPORT:-5432} t=3 quiet=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--host) host=$2; shift ;;
    -p|--port) port=$2; shift ;;
    -t|--timeout) t=$2; shift ;;
    -U|--username|-d|--dbname) shift ;;
    -q|--quiet) quiet=1 ;;
  esac
  shift
done
if echo | timeout "$t" nc "$host" "$port" >/dev/null 2>&1; then
  [ -n "$quiet" ] || echo "$host:$port - accepting connections"; exit 0
fi
[ -n "$quiet" ] || echo "$host:$port - no response"; exit 2
"""
    dump = r"""#!/bin/sh
# dify-airgap stand-in: pg_dump / pg_dumpall print a marker dump of the stand-in cluster.
echo "-- dify-airgap stand-in dump ($(basename "$0") $*)"
cat "${PGDATA:-/var/lib/postgresql/data}/standin.txt" 2>/dev/null | sed 's/^/-- /'
"""
    psql = r"""#!/bin/sh
# dify-airgap stand-in: psql keeps what it is fed (-f FILE or stdin) next to the data.
file=""
while [ $# -gt 0 ]; do case "$1" in -f) file=$2; shift ;; esac; shift; done
dest=${PGDATA:-/var/lib/postgresql/data}/standin-restored.sql
if [ -n "$file" ]; then cat "$file" >> "$dest"; elif [ ! -t 0 ]; then cat >> "$dest"; fi
"""
    return Recipe(
        files={"/usr/local/bin/docker-entrypoint.sh": entry, "/usr/local/bin/postgres": server,
               "/usr/local/bin/pg_isready": isready, "/usr/local/bin/pg_dump": dump,
               "/usr/local/bin/pg_dumpall": dump, "/usr/local/bin/psql": psql,
               "/usr/local/lib/standin/accept": ACCEPT_ONLY},
        changes=("ENV PGDATA=/var/lib/postgresql/data", "EXPOSE 5432",
                 'ENTRYPOINT ["docker-entrypoint.sh"]', 'CMD ["postgres"]'))


def _redis(ref: str) -> Recipe:
    entry = _serve_entry(ref, 'if [ "${1#-}" != "$1" ]; then set -- redis-server "$@"; fi\nexec "$@"\n')
    server = _serve_entry(ref, r"""# redis-server [--requirepass PASS] [--port N]: PING/AUTH/QUIT, stores nothing.
port=6379
while [ $# -gt 0 ]; do
  case "$1" in
    --requirepass) export REDIS_REQUIREPASS=$2; shift ;;
    --port) port=$2; shift ;;
  esac
  shift
done
echo "[stand-in] Ready to accept connections tcp (port $port)"
trap 'kill $pid 2>/dev/null; exit 0' TERM INT
nc -ll -p "$port" -e /usr/local/lib/standin/redis-conn &
pid=$!
wait
""")
    conn = r"""#!/bin/sh
# dify-airgap stand-in: one redis client connection (inline and RESP commands).
CR=$(printf '\r')
authed=1
[ -n "${REDIS_REQUIREPASS:-}" ] && authed=0
reply() { printf '%s\r\n' "$1"; }
while IFS= read -r line; do
  line=${line%"$CR"}
  case "$line" in
    \**)
      n=${line#\*}; args=""; i=0
      while [ "$i" -lt "$n" ]; do
        IFS= read -r _len; IFS= read -r arg; args="$args ${arg%"$CR"}"; i=$((i + 1))
      done
      set -- $args ;;
    *) set -- $line ;;
  esac
  [ $# -eq 0 ] && continue
  cmd=$(echo "$1" | tr 'a-z' 'A-Z')
  case "$cmd" in
    AUTH)
      pass=$2; [ $# -ge 3 ] && pass=$3
      if [ "$pass" = "${REDIS_REQUIREPASS:-}" ]; then authed=1; reply +OK
      else reply "-WRONGPASS invalid username-password pair or user is disabled."; fi ;;
    QUIT) reply +OK; exit 0 ;;
    *)
      if [ "$authed" = 0 ]; then reply "-NOAUTH Authentication required."; continue; fi
      case "$cmd" in
        PING) reply +PONG ;;
        *) reply "-ERR stand-in redis does not implement '$1'" ;;
      esac ;;
  esac
done
"""
    cli = r"""#!/bin/sh
# dify-airgap stand-in: redis-cli [-h HOST] [-p PORT] [-a PASS] [--no-auth-warning] CMD ARGS...
host=127.0.0.1 port=6379 pass=${REDISCLI_AUTH:-}
while [ $# -gt 0 ]; do
  case "$1" in
    -h) host=$2; shift 2 ;;
    -p) port=$2; shift 2 ;;
    -a) pass=$2; shift 2
        echo "Warning: Using a password with '-a' or '-u' option on the command line interface may not be safe." >&2 ;;
    --no-auth-warning) shift ;;
    *) break ;;
  esac
done
[ $# -eq 0 ] && set -- PING
out=$({ [ -n "$pass" ] && printf 'AUTH %s\r\n' "$pass"; printf '%s\r\nQUIT\r\n' "$*"; } \
      | timeout 5 nc "$host" "$port" 2>/dev/null | tr -d '\r')
if [ -z "$out" ]; then
  echo "Could not connect to Redis at $host:$port: Connection refused" >&2; exit 1
fi
[ -n "$pass" ] && out=$(echo "$out" | sed 1d)
line=$(echo "$out" | sed -n 1p)
case "$line" in
  +*) echo "${line#+}" ;;
  -*) echo "(error) ${line#-}" ;;
  *) echo "$line" ;;
esac
"""
    return Recipe(
        files={"/usr/local/bin/docker-entrypoint.sh": entry, "/usr/local/bin/redis-server": server,
               "/usr/local/bin/redis-cli": cli, "/usr/local/lib/standin/redis-conn": conn, "/data/.keep": ""},
        changes=("WORKDIR /data", "EXPOSE 6379", 'ENTRYPOINT ["docker-entrypoint.sh"]', 'CMD ["redis-server"]'))


def _sandbox(ref: str) -> Recipe:
    routes = r"""# dify-sandbox stand-in routes
route() {
  case "$REQUEST_PATH" in
    /health) json '"ok"' ;;
    /v1/sandbox/run)
      json '{"code": 0, "message": "success", "data": {"error": "", "stdout": "stand-in: code not run\n"}}' ;;
    /v1/sandbox/dependencies) json '{"code": 0, "message": "success", "data": {"dependencies": []}}' ;;
    *) not_found ;;
  esac
}
"""
    main = _serve_entry(ref, 'echo "[stand-in] dify-sandbox config: $(ls /conf 2>/dev/null | tr "\\n" " ")"\n'
                             'exec standin-serve /usr/local/lib/standin/routes-sandbox:"${SANDBOX_PORT:-8194}"\n')
    return Recipe(files={"/main": main, "/usr/local/lib/standin/routes-sandbox": routes,
                         "/usr/local/bin/curl": CURL, "/conf/.keep": "", "/dependencies/.keep": ""},
                  changes=("EXPOSE 8194", 'ENTRYPOINT ["/main"]'))


def _plugin_daemon(ref: str) -> Recipe:
    _, version = split_ref(ref)
    routes = r"""# dify-plugin-daemon stand-in routes
route() {
  case "$REQUEST_PATH" in
    /health/check) json "{\"status\": \"ok\", \"pool_status\": \"idle\", \"version\": \"$PLUGIN_DAEMON_VERSION\"}" ;;
    /plugin/*/management/list)  # needs X-Api-Key; total = plugin dirs in the working path (cwd/AUTHOR/NAME)
      case "$HEADERS" in
        *[Xx]-[Aa]pi-[Kk]ey:*)
          n=$(ls -d "${PLUGIN_WORKING_PATH:-/app/storage/cwd}"/*/* 2>/dev/null | wc -l)
          json "{\"code\": 0, \"message\": \"success\", \"data\": {\"list\": [], \"total\": $n}}" ;;
        *) json '{"code": -401, "message": "stand-in: X-Api-Key required", "data": null}' "401 Unauthorized" ;;
      esac ;;
    *) json '{"code": -404, "message": "stand-in: no such route", "data": null}' "404 Not Found" ;;
  esac
}
"""
    entry = _serve_entry(ref, r"""export PLUGIN_DAEMON_VERSION
mkdir -p "${PLUGIN_WORKING_PATH:-/app/storage/cwd}"
exec standin-serve /usr/local/lib/standin/routes-plugin:"${SERVER_PORT:-5002}" \
  /usr/local/lib/standin/routes-plugin:"${PLUGIN_REMOTE_INSTALLING_PORT:-5003}"
""")
    return Recipe(files={"/app/entrypoint.sh": entry, "/usr/local/lib/standin/routes-plugin": routes,
                         "/usr/local/bin/curl": CURL, "/app/storage/.keep": ""},
                  changes=(f"ENV PLUGIN_DAEMON_VERSION={version}", "WORKDIR /app", "EXPOSE 5002", "EXPOSE 5003",
                           'ENTRYPOINT ["/bin/bash", "-c", "/app/entrypoint.sh"]'))


def _squid(ref: str) -> Recipe:
    forward = r"""# squid stand-in: forward proxy for plain-HTTP GETs (absolute URIs); CONNECT is refused.
route() {
  case "$REQUEST_URI" in
    http://*)
      if body=$(timeout 20 wget -q -O - "$REQUEST_URI" 2>/dev/null); then text "$body"
      else text "stand-in squid: could not fetch $REQUEST_URI" "502 Bad Gateway"; fi ;;
    *) text "stand-in squid: access denied" "403 Forbidden" ;;
  esac
}
"""
    accel = r"""# squid stand-in: reverse proxy (accel) to the cache_peer, GET only.
route() {
  if body=$(timeout 20 wget -q -O - "http://$STANDIN_PEER$REQUEST_URI" 2>/dev/null); then text "$body"
  else text "stand-in squid: peer $STANDIN_PEER did not answer" "502 Bad Gateway"; fi
}
"""
    squid = _serve_entry(ref, r"""# squid -Nz | squid -f CONF -NYC [1]: reads http_port/cache_peer from CONF.
conf=/etc/squid/squid.conf
while [ $# -gt 0 ]; do
  case "$1" in
    -z|-Nz) echo "[stand-in] squid: cache directories ready"; exit 0 ;;
    -f) conf=$2; shift ;;
    -v) echo "Squid Cache: Version 6.1 (dify-airgap stand-in)"; exit 0 ;;
  esac
  shift
done
[ -f "$conf" ] || { echo "FATAL: Unable to open configuration file: $conf" >&2; exit 1; }
# the configuration with its `include FILE` lines replaced by the files (Dify 1.16 generates two)
flat=$(awk '$1 == "include" { while ((getline line < $2) > 0) print line; close($2); next } { print }' "$conf")
set --
peer=$(echo "$flat" | awk '$1 == "cache_peer" { print $2 ":" $4; exit }')
for port in $(echo "$flat" | awk '$1 == "http_port" && $3 != "accel" { print $2 }'); do
  set -- "$@" /usr/local/lib/standin/squid-forward:"$port"
done
for port in $(echo "$flat" | awk '$1 == "http_port" && $3 == "accel" { print $2 }'); do
  set -- "$@" /usr/local/lib/standin/squid-accel:"$port"
done
[ $# -gt 0 ] || { echo "FATAL: no http_port in $conf" >&2; exit 1; }
mkdir -p /var/log/squid
export STANDIN_PEER=$peer
exec standin-serve "$@"
""")
    entry = "#!/bin/sh\n# dify-airgap stand-in for ubuntu/squid's entrypoint\nexec /usr/sbin/squid \"$@\"\n"
    return Recipe(files={"/usr/sbin/squid": squid, "/usr/local/lib/standin/squid-forward": forward,
                         "/usr/local/lib/standin/squid-accel": accel, "/usr/local/bin/entrypoint.sh": entry,
                         "/etc/squid/conf.d/.keep": "", "/var/spool/squid/.keep": "", "/var/log/squid/.keep": ""},
                  changes=("EXPOSE 3128", 'ENTRYPOINT ["entrypoint.sh"]',
                           'CMD ["-f", "/etc/squid/squid.conf", "-NYC"]'),
                  host_binaries=(("/bin/bash", "/bin/bash"), ("/usr/bin/mawk", "/usr/bin/mawk")),
                  links={"/usr/bin/awk": "mawk"})


def _nginx(ref: str) -> Recipe:
    entry = "#!/bin/sh\n# dify-airgap stand-in for nginx's docker-entrypoint.sh (real nginx binary)\nexec \"$@\"\n"
    return Recipe(
        files={"/docker-entrypoint.sh": entry, "/usr/share/nginx/html/index.html":
               "<!DOCTYPE html><html><head><title>Welcome to nginx!</title></head>"
               "<body><p>dify-airgap stand-in (real nginx binary)</p></body></html>\n",
               "/etc/nginx/conf.d/.keep": ""},
        changes=("EXPOSE 80", 'ENTRYPOINT ["/docker-entrypoint.sh"]',
                 'CMD ["nginx", "-g", "daemon off;"]'),
        nginx=True, host_binaries=(("/bin/bash", "/bin/bash"), ("/usr/bin/printenv", "/usr/bin/printenv")))


def _weaviate(ref: str) -> Recipe:
    _, version = split_ref(ref)
    routes = r"""# weaviate stand-in routes
route() {
  case "$REQUEST_PATH" in
    /v1/.well-known/ready|/v1/.well-known/live) respond "200 OK" application/json "" ;;
    /v1/meta) json "{\"hostname\": \"http://[::]:8080\", \"modules\": {}, \"version\": \"$WEAVIATE_VERSION\"}" ;;
    /v1/schema) json '{"classes": []}' ;;
    *) not_found ;;
  esac
}
"""
    main = _serve_entry(ref, r"""port=8080
while [ $# -gt 0 ]; do case "$1" in --port) port=$2; shift ;; esac; shift; done
mkdir -p "${PERSISTENCE_DATA_PATH:-/var/lib/weaviate}"
export WEAVIATE_VERSION
exec standin-serve /usr/local/lib/standin/routes-weaviate:"$port" /usr/local/lib/standin/routes-weaviate:50051
""")
    return Recipe(files={"/bin/weaviate": main, "/usr/local/lib/standin/routes-weaviate": routes},
                  changes=(f"ENV WEAVIATE_VERSION={version.lstrip('v')}", "EXPOSE 8080", "EXPOSE 50051",
                           'ENTRYPOINT ["/bin/weaviate"]',
                           'CMD ["--host", "0.0.0.0", "--port", "8080", "--scheme", "http"]'))


def _qdrant(ref: str) -> Recipe:
    _, version = split_ref(ref)
    routes = r"""# qdrant stand-in routes
route() {
  case "$REQUEST_PATH" in
    /) json "{\"title\": \"qdrant - vector search engine\", \"version\": \"$QDRANT_VERSION\"}" ;;
    /healthz|/livez|/readyz) text "healthz check passed" ;;
    /collections) json '{"result": {"collections": []}, "status": "ok", "time": 0.0}' ;;
    *) not_found ;;
  esac
}
"""
    entry = _serve_entry(ref, 'export QDRANT_VERSION\nmkdir -p /qdrant/storage\n'
                              'exec standin-serve /usr/local/lib/standin/routes-qdrant:6333 '
                              '/usr/local/lib/standin/routes-qdrant:6334\n')
    return Recipe(files={"/qdrant/entrypoint.sh": entry, "/usr/local/lib/standin/routes-qdrant": routes},
                  changes=(f"ENV QDRANT_VERSION={version.lstrip('v')}", "WORKDIR /qdrant", "EXPOSE 6333", "EXPOSE 6334",
                           'ENTRYPOINT ["./entrypoint.sh"]'))


def _agent_backend(ref: str) -> Recipe:
    _, version = split_ref(ref)
    routes = r"""# dify-agent-backend stand-in routes
route() {
  case "$REQUEST_PATH" in
    /health|/healthz) json "{\"status\": \"ok\", \"version\": \"$DIFY_AGENT_VERSION\"}" ;;
    /agent-stub|/agent-stub/*)
      json '{"code": "unauthorized", "message": "stand-in: agent stub token required", "status": 401}' \
        "401 UNAUTHORIZED" ;;
    *) not_found ;;
  esac
}
"""
    entry = _serve_entry(ref, r"""# Like the real backend, refuse to start without the settings compose derives for it.
missing=""
for key in DIFY_AGENT_REDIS_URL DIFY_AGENT_PLUGIN_DAEMON_URL DIFY_AGENT_PLUGIN_DAEMON_API_KEY \
           DIFY_AGENT_INNER_API_URL DIFY_AGENT_INNER_API_KEY DIFY_AGENT_SHELLCTL_ENTRYPOINT \
           DIFY_AGENT_SERVER_SECRET_KEY; do
  eval "value=\${$key:-}"
  [ -n "$value" ] || missing="$missing $key"
done
[ -z "$missing" ] || { echo "[stand-in] dify-agent: missing settings:$missing" >&2; exit 1; }
case "$DIFY_AGENT_REDIS_URL" in
  redis://*|rediss://*) ;;
  *) echo "[stand-in] dify-agent: DIFY_AGENT_REDIS_URL is not a redis:// URL: $DIFY_AGENT_REDIS_URL" >&2; exit 1 ;;
esac
export DIFY_AGENT_VERSION
echo "[stand-in] dify-agent backend $DIFY_AGENT_VERSION" \
  "(plugin daemon $DIFY_AGENT_PLUGIN_DAEMON_URL, shell $DIFY_AGENT_SHELLCTL_ENTRYPOINT)"
exec standin-serve /usr/local/lib/standin/routes-agent:"${DIFY_AGENT_PORT:-5050}"
""")
    return Recipe(files={"/app/entrypoint.sh": entry, "/usr/local/lib/standin/routes-agent": routes,
                         "/usr/local/bin/curl": CURL},
                  changes=(f"ENV DIFY_AGENT_VERSION={version}", "ENV DIFY_AGENT_PORT=5050", "WORKDIR /app",
                           "EXPOSE 5050", 'ENTRYPOINT ["/bin/sh", "/app/entrypoint.sh"]'))


def _local_sandbox(ref: str) -> Recipe:
    _, version = split_ref(ref)
    routes = r"""# dify-agent-local-sandbox (shellctl) stand-in routes: /healthz open, the rest needs the token if set
route() {
  case "$REQUEST_PATH" in
    /healthz) json "{\"status\": \"ok\", \"version\": \"$SHELLCTL_VERSION\"}" ;;
    *)
      if [ -n "${SHELLCTL_AUTH_TOKEN:-}" ]; then
        case "$HEADERS" in
          *"Bearer $SHELLCTL_AUTH_TOKEN"*) ;;
          *) json '{"error": "unauthorized"}' "401 Unauthorized"; return ;;
        esac
      fi
      json '{"error": "stand-in: shell commands are not run"}' "501 Not Implemented" ;;
  esac
}
"""
    entry = _serve_entry(ref, r"""export SHELLCTL_VERSION
exec standin-serve /usr/local/lib/standin/routes-shellctl:"${SHELLCTL_PORT:-5004}"
""")
    return Recipe(files={"/usr/local/bin/shellctl-server": entry, "/usr/local/lib/standin/routes-shellctl": routes,
                         "/usr/local/bin/curl": CURL},
                  changes=(f"ENV SHELLCTL_VERSION={version}", "ENV SHELLCTL_PORT=5004", "EXPOSE 5004",
                           'ENTRYPOINT ["/usr/local/bin/shellctl-server"]'))


def _busybox(ref: str) -> Recipe:
    return Recipe(files={}, changes=('CMD ["sh"]',))


#: Repository name -> recipe builder. Tags are free: the ref's tag becomes the version shown.
RECIPES = {
    "langgenius/dify-api": _api,
    "langgenius/dify-web": _web,
    "postgres": _postgres,
    "redis": _redis,
    "langgenius/dify-sandbox": _sandbox,
    "langgenius/dify-plugin-daemon": _plugin_daemon,
    "ubuntu/squid": _squid,
    "nginx": _nginx,
    "semitechnologies/weaviate": _weaviate,
    "langgenius/qdrant": _qdrant,
    "langgenius/dify-agent-backend": _agent_backend,
    "langgenius/dify-agent-local-sandbox": _local_sandbox,
    "busybox": _busybox,
}


def recipe_for(ref: str) -> Recipe:
    name, _ = split_ref(ref)
    name = name[len("docker.io/"):] if name.startswith("docker.io/") else name
    name = name[len("library/"):] if name.startswith("library/") else name
    builder = RECIPES.get(name)
    if builder is None:
        raise AirgapError(f"no stand-in recipe for {ref}; known: {', '.join(sorted(RECIPES))}")
    return builder(ref)


def _all_files(ref: str, recipe: Recipe) -> dict[str, str]:
    files = {"/usr/local/lib/standin/http": HTTP_HANDLER,
             "/usr/local/bin/standin-serve": SERVE,
             "/etc/dify-airgap-standin": f"{ref}\nA dify-airgap lab stand-in, NOT the real image.\n"}
    if "/bin/bash" not in {image_path for _, image_path in recipe.host_binaries}:
        files["/bin/bash"] = BASH_SHIM
    files.update(recipe.files)
    return files


def recipe_digest(ref: str, recipe: Recipe | None = None) -> str:
    """A digest of everything that goes into the stand-in (files, config, helpers)."""
    recipe = recipe or recipe_for(ref)
    payload = {"v": RECIPE_VERSION, "ref": ref, "files": _all_files(ref, recipe),
               "changes": list(recipe.changes), "nginx": recipe.nginx,
               "host_binaries": [list(b) for b in recipe.host_binaries], "links": recipe.links}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


# --- building -------------------------------------------------------------------------------------

def _image_labels(engine: Engine, ref: str) -> dict[str, str] | None:
    res = engine.probe(["image", "inspect", "--format", "{{json .Config.Labels}}", local_ref(engine, ref)])
    if not res.ok:
        return None
    try:
        return json.loads(res.stdout.strip() or "null") or {}
    except ValueError:
        return {}


def is_standin(engine: Engine, ref: str) -> bool:
    labels = _image_labels(engine, ref)
    return bool(labels) and labels.get(LABEL) == "1"


def _write_files(root: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():  # a busybox applet link: replace it, never write through it
            target.unlink()
        target.write_text(text)
        target.chmod(0o755 if text.startswith("#!") else 0o644)


def _add_user(root: Path, line_passwd: str, line_group: str) -> None:
    with open(root / "etc" / "passwd", "a") as f:
        f.write(line_passwd + "\n")
    with open(root / "etc" / "group", "a") as f:
        f.write(line_group + "\n")


def _deb_cache() -> Path:
    return lab.LAB_ROOT / "debs"


def _download_debs(packages: Sequence[str]) -> list[Path]:
    """Debian packages (no install) into the lab cache, with ``apt-get download``."""
    cache = _deb_cache()
    cache.mkdir(parents=True, exist_ok=True)
    found = {pkg: sorted(cache.glob(f"{pkg}_*.deb")) for pkg in packages}
    missing = [pkg for pkg, debs in found.items() if not debs]
    if missing:
        res = subprocess_runner(["apt-get", "download", *missing], cwd=str(cache), timeout=300)
        if not res.ok:
            lab._sh(["apt-get", "update", "-q"], timeout=600)
            lab._sh(["apt-get", "download", *missing], cwd=str(cache), timeout=300)
        found = {pkg: sorted(cache.glob(f"{pkg}_*.deb")) for pkg in packages}
    return [found[pkg][-1] for pkg in packages]


def _copy_with_libs(binary: Path, dest_root: Path, dest_path: str) -> None:
    """Copy an ELF binary to ``dest_root/dest_path`` with the shared libraries ``ldd`` resolves."""
    target = dest_root / dest_path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, target)
    res = subprocess_runner(["ldd", str(binary)])
    if not res.ok:
        raise AirgapError(f"ldd {binary} failed: {res.stderr.strip()}")
    for line in res.stdout.splitlines():
        parts = line.split()
        if "not found" in line:
            raise AirgapError(f"{binary.name} needs a library missing on this host: {line.strip()}")
        lib = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if not lib.startswith("/"):
            continue  # linux-vdso
        lib_target = dest_root / lib.lstrip("/")
        lib_target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), lib_target)


def _add_real_nginx(root: Path) -> None:
    """Debian's nginx binary, mime.types and envsubst, with their libraries, into a busybox root."""
    debs = _download_debs(["nginx", "nginx-common", "gettext-base"])
    (root / "etc/nginx/conf.d").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dal-deb-x-") as tmp:
        unpacked = Path(tmp)
        for deb in debs:
            lab._sh(["dpkg-deb", "-x", str(deb), str(unpacked)])
        _copy_with_libs(unpacked / "usr/sbin/nginx", root, "/usr/sbin/nginx")
        _copy_with_libs(unpacked / "usr/bin/envsubst", root, "/usr/bin/envsubst")
        for conf in ("mime.types", "fastcgi_params", "scgi_params", "uwsgi_params"):
            shutil.copy2(unpacked / "etc/nginx" / conf, root / "etc/nginx" / conf)
    for d in ("var/log/nginx", "var/lib/nginx", "var/cache/nginx", "run", "etc/ssl", "var/www/html",
              "etc/letsencrypt"):
        (root / d).mkdir(parents=True, exist_ok=True)
    if not (root / "var/run").exists():
        (root / "var/run").symlink_to("/run")
    (root / "var/log/nginx/access.log").symlink_to("/dev/stdout")
    (root / "var/log/nginx/error.log").symlink_to("/dev/stderr")
    _add_user(root, "nginx:x:101:101:nginx user:/nonexistent:/bin/false", "nginx:x:101:")
    _add_user(root, "www-data:x:33:33:www-data:/var/www:/bin/false", "www-data:x:33:")


def build_standin(engine: Engine, ref: str, force: bool = False) -> bool:
    """Build one stand-in unless an image with the same recipe digest exists; True if built."""
    recipe = recipe_for(ref)
    digest = recipe_digest(ref, recipe)
    labels = _image_labels(engine, ref)
    if labels is not None and not force:
        if labels.get(DIGEST_LABEL) == digest:
            LOG.info("stand-in %s is up to date", ref)
            return False
        if labels.get(LABEL) != "1":
            raise AirgapError(f"{ref} exists and is not a stand-in; refusing to replace it "
                              f"(remove it first if you really want a stand-in)")
    with tempfile.TemporaryDirectory(prefix="dal-standin-") as tmp:
        root = lab.busybox_rootfs(Path(tmp) / "root")
        if recipe.nginx:
            _add_real_nginx(root)
        for host_path, image_path in recipe.host_binaries:
            _copy_with_libs(Path(host_path), root, image_path)
        for link, target in recipe.links.items():
            (root / link.lstrip("/")).symlink_to(target)
        _write_files(root, _all_files(ref, recipe))
        changes = [f"LABEL {LABEL}=1", f"LABEL {DIGEST_LABEL}={digest}",
                   f'LABEL org.opencontainers.image.description="dify-airgap lab stand-in for {ref}"',
                   "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   *recipe.changes]
        name = local_ref(engine, ref)
        old_id = engine.probe(["image", "inspect", "--format", "{{.Id}}", name]).stdout.strip()
        lab.import_rootfs(engine, root, name, changes)
    if old_id:  # the replaced stand-in, now untagged; kept only if a container still uses it
        engine.run(["image", "rm", old_id], check=False)
    LOG.info("built stand-in %s (%s)", ref, digest)
    return True


#: Debian's REAL PostgreSQL 15 (a debootstrap root with ``postgresql``) for the data tests' db_postgres: the
#: stand-in postgres only fakes pg_dump/psql. A lab cache image like the DinD image: kept between sessions.
PG_IMAGE = "localhost/dify-airgap-lab/postgres:15-bookworm"
PG_PACKAGES = ("postgresql",)
#: The postgres image's env contract (POSTGRES_USER/PASSWORD/DB, PGDATA) over Debian's REAL PostgreSQL 15 of PG_IMAGE.
PG_ENTRYPOINT = r"""#!/bin/sh
# dify-airgap lab: Debian's REAL PostgreSQL 15 behind the postgres image's env contract.
set -e
: "${PGDATA:=/var/lib/postgresql/data}" "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
mkdir -p "$PGDATA" /var/run/postgresql
chown -R postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pw=$(mktemp); printf '%s' "${POSTGRES_PASSWORD:-}" > "$pw"; chown postgres "$pw"
  as_pg initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pw" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pw"
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  as_pg pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  [ "$POSTGRES_DB" = postgres ] || as_pg psql -q -U "$POSTGRES_USER" -d postgres -c "CREATE DATABASE \"$POSTGRES_DB\""
  as_pg pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
if [ "$1" = postgres ]; then exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"; fi
exec "$@"
"""


def real_postgres_as(engine: Engine, ref: str, workdir: Path) -> str:
    """``ref`` (e.g. ``postgres:15-alpine``) as a REAL PostgreSQL answering Dify's compose file as the official image
    does (entrypoint, ``postgres -c ...``, ``pg_isready``): for a throwaway build box only, never the lab's engines
    (their ``postgres:15-alpine`` is the stand-in other tests use)."""
    ensure_real_postgres(engine)
    ctx = workdir / "real-postgres"
    ctx.mkdir(parents=True)
    (ctx / "docker-entrypoint.sh").write_text(PG_ENTRYPOINT)
    (ctx / "Dockerfile").write_text(f"FROM {PG_IMAGE}\nCOPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh\n"
                                    'ENTRYPOINT ["/bin/sh", "/usr/local/bin/docker-entrypoint.sh"]\nCMD ["postgres"]\n')
    engine.run(["build", "--network", "none", "-q", "-t", ref, str(ctx)], timeout=600)
    return ref


def ensure_real_postgres(engine: Engine) -> bool:
    """The real PostgreSQL image in ``engine``; True if it was imported now."""
    if engine.image_exists(PG_IMAGE):
        return False
    tar = lab.debian_rootfs_tar(PG_PACKAGES)
    engine.run(["import", "--change", "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:"
                "/usr/sbin:/usr/bin:/sbin:/bin", "--change", 'CMD ["postgres"]', str(tar), PG_IMAGE], timeout=900)
    return True


def warm(runtimes: Iterable[str]) -> dict[str, list[str]]:
    """Every image the integration and e2e tests run, in each engine, built BEFORE they start.

    The stand-ins of every vendored release, the real PostgreSQL image and (docker) the DinD images of the
    tests and of the air-gapped container. Tests running in parallel then build nothing and remove nothing
    that another test uses (``present`` removes only what it built). On a fresh machine the debootstrap roots
    are made side by side first (downloads and dpkg: mostly waiting).
    """
    from tests.lab import e2e  # local: e2e imports this module

    runtimes = list(runtimes)
    gap = list(e2e.gap_images().values()) if "docker" in runtimes else []
    roots = [(PG_PACKAGES, "bookworm"), ((), "bookworm"),  # the fresh Debian of tests/integration/test_readme.py
             *(((lab.DIND_PACKAGES, "bookworm"),) if "docker" in runtimes else ()),
             *((packages, suite) for _, packages, suite in gap)]
    roots = list(dict.fromkeys((tuple(packages), suite) for packages, suite in roots))
    with ThreadPoolExecutor(max_workers=len(roots)) as pool:
        list(pool.map(lambda root: lab.debian_rootfs_tar(root[0], suite=root[1]), roots))
    done: dict[str, list[str]] = {}
    for runtime in runtimes:
        engine = Engine(runtime)
        refs = list(dict.fromkeys(ref for version in RELEASE_IMAGES for ref in default_images(version)))
        build_standins(engine, images=refs)
        ensure_real_postgres(engine)
        done[runtime] = [*refs, PG_IMAGE]
        if runtime == "docker":  # the Docker-in-Docker images: the tests' and the air-gapped container's
            done[runtime].append(lab.ensure_dind_image(engine))
            done[runtime] += [lab.ensure_dind_image(engine, image, packages, suite=suite)
                              for image, packages, suite in gap]
    return done


def build_standins(engine: Engine, version: str = DIFY_VERSION, images: Iterable[str] | None = None,
                   force: bool = False) -> list[str]:
    """Build (or keep) the stand-ins for ``images`` (default: Dify ``version``'s default set)."""
    refs = list(images) if images is not None else default_images(version)
    for ref in refs:
        build_standin(engine, ref, force=force)
    return refs


def remove_standins(engine: Engine, refs: Iterable[str]) -> None:
    """Remove the given images, but only those that are stand-ins."""
    engine.remove_images([local_ref(engine, ref) for ref in refs if is_standin(engine, ref)])


# --- registry seeding -----------------------------------------------------------------------------

@contextmanager
def present(engine: Engine, refs: Iterable[str] | None = None) -> Iterator[list[str]]:
    """The stand-ins exist in ``engine`` inside the block; those built here are removed after it."""
    refs = list(refs) if refs is not None else default_images()
    built = [ref for ref in refs if build_standin(engine, ref)]
    try:
        yield refs
    finally:
        remove_standins(engine, built)


def seed_registry(engine: Engine, refs: Iterable[str], registry_addr: str) -> dict[str, str]:
    """Push each image to ``registry_addr`` under its Docker Hub path; returns {ref: pushed ref}.

    ``busybox:latest`` goes to ``ADDR/library/busybox:latest``, so an engine using the registry as
    Docker Hub mirror pulls the plain names. The temporary ``ADDR/...`` tags are removed afterwards.
    """
    pushed: dict[str, str] = {}
    for ref in refs:
        target = f"{registry_addr}/{hub_path(ref)}"
        engine.run(["tag", local_ref(engine, ref), target], image=ref)
        try:
            push = ["push", "--tls-verify=false", target] if engine.is_podman else ["push", target]
            engine.run(push, timeout=600)
        finally:
            engine.run(["image", "rm", target], check=False)
        pushed[ref] = target
        LOG.info("pushed %s -> %s", ref, target)
    return pushed


# --- a complete Dify docker/ directory ------------------------------------------------------------

def extra_files(fixture: Path) -> Path | None:
    """The bind-mounted files a PARTIAL fixture lacks: ``tests/fixtures/<fixture name>-extra/docker``.

    Only 1.11.3's tree is partial; a complete tree (1.16.0) has none, and must not get 1.11.3's
    entrypoints and squid template copied over its own.
    """
    extra = fixture.parent / f"{fixture.name}-extra" / "docker"
    return extra if extra.is_dir() else None


def complete_project(dest: Path, fixture: Path | None = None, extra: Path | None = None) -> Path:
    """Copy the real Dify compose fixture, plus the files it bind-mounts if it lacks them, into ``dest``.

    The 1.11.3 fixture holds only the compose files, env examples and nginx templates; the compose
    file also mounts nginx/docker-entrypoint.sh, ssrf_proxy/*, volumes/sandbox/*, which come from
    :func:`extra_files` (or ``extra``). A missing bind source would become an empty directory and
    break the services' ``cp`` entrypoints. The 1.16.0 fixture is a complete docker/ tree. The
    fixture's own SOURCE.txt is left out; ``.env`` is never written here (Dify 1.14+ requires one:
    the caller copies .env.example with its own values).
    """
    fixture = fixture or default_fixture()
    if not (fixture / "docker-compose.yaml").exists():
        raise AirgapError(f"no Dify fixture at {fixture} (tests/fixtures/dify-VERSION)")
    extra = extra if extra is not None else extra_files(fixture)
    dest.mkdir(parents=True, exist_ok=True)
    for source in (fixture, extra):
        if source is None:
            continue
        for path in sorted(source.rglob("*")):
            if path.name == "SOURCE.txt" and path.parent == source:
                continue
            target = dest / path.relative_to(source)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            target.chmod(0o755 if os.access(path, os.X_OK) or path.suffix == ".sh" else 0o644)
    return dest


def images_size(engine: Engine, refs: Iterable[str]) -> int:
    """Total size in bytes of the given local images (shared layers counted per image)."""
    total = 0
    for ref in refs:
        res = engine.probe(["image", "inspect", "--format", "{{.Size}}", local_ref(engine, ref)])
        if res.ok and res.stdout.strip().isdigit():
            total += int(res.stdout.strip())
    return total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.standins", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_build = sub.add_parser("build", help="build the stand-in images (skips those already up to date)")
    p_build.add_argument("--runtime", default="docker", choices=("docker", "podman"),
                         help="engine to build into (default: docker)")
    p_build.add_argument("--version", default=DIFY_VERSION, help="Dify version for the dify-api/web tags")
    p_build.add_argument("--image", action="append", dest="images",
                         help="build only this image (repeatable); default: --version's default profile set + qdrant")
    p_build.add_argument("--force", action="store_true", help="rebuild even when up to date")
    p_build.add_argument("--seed", action="store_true", help="then push them to the lab registry (Docker Hub mirror)")
    p_build.add_argument("--registry", default=lab.REGISTRY_ADDR,
                         help=f"registry address for --seed (default: {lab.REGISTRY_ADDR})")
    p_warm = sub.add_parser("warm", help="build every image the integration tests run (all releases' stand-ins "
                                         "and the real PostgreSQL), so parallel tests build and remove nothing")
    p_warm.add_argument("--runtime", action="append", dest="runtimes", choices=("docker", "podman"),
                        help="engine to warm (repeatable; default: docker and podman)")
    p_project = sub.add_parser("project", help="write a complete Dify docker/ directory (fixture + bind-mounted files)")
    p_project.add_argument("dest", type=Path, help="destination directory")
    p_project.add_argument("--version", default=DIFY_VERSION, help="the vendored release to copy (tests/fixtures)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        if args.cmd == "project":
            print(complete_project(args.dest, fixture=default_fixture(args.version)))
            return 0
        if args.cmd == "warm":
            print(json.dumps(warm(args.runtimes or ("docker", "podman")), indent=2))
            return 0
        engine = Engine(args.runtime)
        refs = build_standins(engine, args.version, args.images, force=args.force)
        result: dict = {"images": refs, "size_bytes": images_size(engine, refs)}
        if args.seed:
            if not lab.registry_answers(args.registry):
                raise AirgapError(f"no registry answers on {args.registry}; run `python -m tests.lab.host up` first")
            result["seeded"] = seed_registry(engine, refs, args.registry)
    except (AirgapError, subprocess.SubprocessError) as exc:
        print(f"standins: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
