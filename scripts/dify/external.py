"""External services: a site's own database, Redis or vector store instead of the containers Dify starts.

Sites point ``DB_HOST`` (or ``REDIS_HOST``, ``QDRANT_URL``...) at a server of theirs in a site file. Then:

- the local container of that service is not started: its profile leaves ``COMPOSE_PROFILES`` (the database's is
  ``DB_TYPE``'s value, a vector store's ``VECTOR_STORE``'s). Redis has no profile in any release and the api
  REQUIRES it in compose (``depends_on: redis``), so the local redis still starts, idle, and says so;
- its password is the SITE's: never generated (a generated one is not the server's). Missing, the render stops
  naming the key and the server;
- ``check`` opens a TCP connection to it from the api container (scripts/host/check.py), naming host and port.

What is local is read from the release: a host that is one of the compose file's service names is local.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

# VECTOR_STORE -> the key that says where it is (envcheck checks it is set; here: is it outside the stack?)
STORE_ENDPOINTS = {
    "weaviate": "WEAVIATE_ENDPOINT", "qdrant": "QDRANT_URL", "milvus": "MILVUS_URI", "myscale": "MYSCALE_HOST",
    "relyt": "RELYT_HOST", "pgvector": "PGVECTOR_HOST", "pgvecto-rs": "PGVECTO_RS_HOST",
    "chroma": "CHROMA_HOST", "opensearch": "OPENSEARCH_HOST", "oracle": "ORACLE_DSN",
    "tencent": "TENCENT_VECTOR_DB_URL", "elasticsearch": "ELASTICSEARCH_HOST",
    "elasticsearch-ja": "ELASTICSEARCH_HOST", "analyticdb": "ANALYTICDB_HOST",
    "couchbase": "COUCHBASE_CONNECTION_STRING", "vikingdb": "VIKINGDB_HOST", "opengauss": "OPENGAUSS_HOST",
    "tablestore": "TABLESTORE_ENDPOINT", "vastbase": "VASTBASE_HOST", "tidb": "TIDB_VECTOR_HOST",
    "tidb_on_qdrant": "TIDB_ON_QDRANT_URL", "baidu": "BAIDU_VECTOR_DB_ENDPOINT", "lindorm": "LINDORM_URL",
    "huawei_cloud": "HUAWEI_CLOUD_HOSTS", "upstash": "UPSTASH_VECTOR_URL", "matrixone": "MATRIXONE_HOST",
    "oceanbase": "OCEANBASE_VECTOR_HOST", "seekdb": "OCEANBASE_VECTOR_HOST", "iris": "IRIS_HOST",
    "alibabacloud_mysql": "ALIBABACLOUD_MYSQL_HOST",
}
#: the ports of the stores run as a container of the stack (an external one elsewhere: its URL's or _PORT key's)
DEFAULT_PORTS = {"weaviate": 8080, "qdrant": 6333, "milvus": 19530, "chroma": 8000, "elasticsearch": 9200,
                 "opensearch": 9200, "pgvector": 5432, "pgvecto-rs": 5432, "couchbase": 8091, "matrixone": 6001,
                 "oceanbase": 2881, "seekdb": 2881, "opengauss": 6600, "vastbase": 5432, "iris": 1972,
                 "myscale": 8123}
#: the local redis cannot be left out (api depends on it in every release's compose file)
REDIS_NOTE = "the local redis container still starts (the release's api requires it in compose) and stays idle"


@dataclass(frozen=True)
class External:
    """One service the site runs itself."""
    what: str                 # "database", "redis", "vector store qdrant"
    host_key: str             # the key naming the server (DB_HOST, REDIS_HOST, QDRANT_URL...)
    host: str
    port: int
    profile: str | None       # the compose profile its local container has (None: redis)
    secrets: tuple[str, ...]  # the keys holding its password: the site's, never generated (a store's key is
                              # left to envcheck's placeholder warning: many run without authentication)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _port(value: object, default: int) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        return default


def _resolved(values: Mapping[str, str], key: str) -> str:
    """A value with compose's ``${NAME:-default}`` taken as its default (the keys read here rarely interpolate)."""
    value = str(values.get(key, ""))
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: str(values.get(m.group(1)) or m.group(2) or ""), value)


def find(values: Mapping[str, str], local_names: set[str]) -> list[External]:
    """The services ``values`` (the rendered env) point outside the stack; ``local_names``: the compose services
    (none known, e.g. no compose file beside the example: nothing is judged external)."""
    if not local_names:
        return []
    # the releases' own examples point some stores at the Docker host (MILVUS_URI=http://host.docker.internal:19530,
    # ELASTICSEARCH_HOST=0.0.0.0): that is the stack's container published there, not a site server
    local = {n.lower() for n in local_names} | {"localhost", "127.0.0.1", "0.0.0.0", "host.docker.internal",
                                                 "host.containers.internal"}
    found = []
    db_host = _resolved(values, "DB_HOST").strip()
    if db_host and db_host.lower() not in local:
        db_type = _resolved(values, "DB_TYPE") or "postgresql"
        found.append(External("database", "DB_HOST", db_host, _port(_resolved(values, "DB_PORT"), 5432), db_type,
                              ("DB_PASSWORD",)))
    redis_host = _resolved(values, "REDIS_HOST").strip()
    if redis_host and redis_host.lower() not in local:
        found.append(External("redis", "REDIS_HOST", redis_host, _port(_resolved(values, "REDIS_PORT"), 6379), None,
                              ("REDIS_PASSWORD",)))
    store = _resolved(values, "VECTOR_STORE").strip()
    key = STORE_ENDPOINTS.get(store)
    raw = _resolved(values, key).strip().split(",")[0] if key else ""
    parts = urlsplit(raw if "://" in raw else f"http://{raw}") if raw else None
    host = parts.hostname if parts else None
    if host and host.lower() not in local and store in DEFAULT_PORTS:
        try:
            given = parts.port
        except ValueError:  # a port that is no number: envcheck and the store's client say so; not judged here
            return found
        fallback = 443 if raw.startswith("https://") else DEFAULT_PORTS[store]
        port = given or _port(_resolved(values, key.replace("_HOST", "_PORT")), fallback)
        found.append(External(f"vector store {store}", key, host, port, store, ()))
    return found


def profiles_without(raw: str, values: Mapping[str, str], dropped: set[str]) -> str:
    """``COMPOSE_PROFILES`` (as written, with its ``${VECTOR_STORE:-weaviate}`` items) without the items that
    resolve to a ``dropped`` profile; the others keep their form."""
    kept = [item for item in raw.split(",")
            if item.strip() and _resolved({**values, "_": item.strip()}, "_") not in dropped]
    return ",".join(kept)


def missing_secrets(externals: list[External], explicit: set[str], known: set[str],
                    before: Mapping[str, str]) -> list[str]:
    """One line per external service whose password the site did not give (it would be generated). A password in
    the installed env (``before``) counts only when that env already pointed at the same server: moving a local
    database outside must not send the generated password to the site's server."""
    lines = []
    for ext in externals:
        same_server = str(before.get(ext.host_key, "")).strip() == ext.host
        for key in ext.secrets:
            if key in known and key not in explicit and not (same_server and key in before):
                lines.append(f"{key}: the {ext.what} is external ({ext.address}); give its password in the site "
                             f"file or with --set {key}=... (a generated one would not be the server's)")
    return lines
