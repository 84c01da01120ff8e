"""Which .env keys are secrets, the groups that must share one value, and how new secrets are made."""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass

# --- secrets -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretGroup:
    """Keys that must hold ONE value (both ends of a connection). The first key is the primary."""

    keys: tuple[str, ...]
    kind: str = "token"  # token: 48 alphanumerics; password: 32; complex: 32 + a special character
    why: str = ""


# Derived from Dify 1.11.3's .env.example and docker-compose.yaml (which variable feeds which
# container). Generated values are alphanumeric so they survive URLs (CELERY_BROKER_URL), shell
# command lines (redis-server --requirepass, mysqladmin -p...) and compose interpolation.
SECRET_GROUPS: tuple[SecretGroup, ...] = (
    SecretGroup(("SECRET_KEY",), "token", "signs sessions, encrypts model-provider credentials in the DB"),
    SecretGroup(("DB_PASSWORD",), "password", "postgres POSTGRES_PASSWORD / mysql MYSQL_ROOT_PASSWORD, api, "
                                              "plugin daemon"),
    SecretGroup(("REDIS_PASSWORD",), "password", "redis --requirepass; also inside CELERY_BROKER_URL"),
    SecretGroup(("SANDBOX_API_KEY", "CODE_EXECUTION_API_KEY"), "token", "sandbox API_KEY = api's key"),
    SecretGroup(("PLUGIN_DAEMON_KEY",), "token", "api -> plugin daemon (plugin_daemon SERVER_KEY)"),
    SecretGroup(("PLUGIN_DIFY_INNER_API_KEY",), "token", "plugin daemon -> api (INNER_API_KEY_FOR_PLUGIN, "
                                                          "DIFY_INNER_API_KEY)"),
    SecretGroup(("WEAVIATE_API_KEY", "WEAVIATE_AUTHENTICATION_APIKEY_ALLOWED_KEYS"), "token",
                "api's weaviate key = weaviate's allowed key"),
    SecretGroup(("QDRANT_API_KEY",), "token", "api and the qdrant container"),
    SecretGroup(("OCEANBASE_VECTOR_PASSWORD",), "password", "api and oceanbase/seekdb containers"),
    SecretGroup(("COUCHBASE_PASSWORD",), "password", "api and couchbase-server"),
    SecretGroup(("PGVECTOR_PASSWORD", "PGVECTOR_POSTGRES_PASSWORD", "PGVECTO_RS_PASSWORD"), "password",
                "api's pgvector/pgvecto-rs password = the containers' POSTGRES_PASSWORD"),
    SecretGroup(("CHROMA_AUTH_CREDENTIALS", "CHROMA_SERVER_AUTHN_CREDENTIALS"), "token",
                "api's chroma token = chroma's server token"),
    SecretGroup(("OPENSEARCH_PASSWORD", "OPENSEARCH_INITIAL_ADMIN_PASSWORD"), "complex",
                "api logs in as OPENSEARCH_USER=admin; opensearch demands a complex password"),
    SecretGroup(("ELASTICSEARCH_PASSWORD",), "password", "api and elasticsearch ELASTIC_PASSWORD"),
    SecretGroup(("OPENGAUSS_PASSWORD",), "complex", "api and opengauss GS_PASSWORD (complexity enforced)"),
    SecretGroup(("ORACLE_PWD",), "complex", "oracle container's SYS password"),
    # Dify 1.14+ agent services (envs/core-services/dify-agent.env.example; .env.example repeats them)
    SecretGroup(("DIFY_AGENT_SERVER_SECRET_KEY",), "token", "agent_backend's JWE key for Agent Stub tokens; read by "
                                                           "api, worker, api_websocket, agent_backend, plugin_daemon"),
    SecretGroup(("DIFY_AGENT_SHELLCTL_AUTH_TOKEN",), "token", "agent_backend -> local_sandbox SHELLCTL_AUTH_TOKEN"),
    SecretGroup(("DIFY_AGENT_LOCAL_SANDBOX_AUTH_TOKEN",), "token", "agent_backend -> local_sandbox (1.17+; mandatory)"),
    # External services whose example value is Dify's shared default password: a public value must not
    # linger in a production file; sites using these stores supply the real password in their site file.
    SecretGroup(("ALIBABACLOUD_MYSQL_PASSWORD",), "password", "external store; supply the real one"),
    SecretGroup(("RELYT_PASSWORD",), "password", "external store; supply the real one"),
)

# Public defaults that are not generated because the server side is hard-coded upstream
# (changing the client value alone would break the store). Warned about when that store is chosen.
FIXED_DEFAULTS: dict[str, tuple[str, str]] = {
    "VASTBASE_PASSWORD": ("vastbase", "docker-compose.yaml hard-codes VB_PASSWORD=Difyai123456"),
    "MATRIXONE_PASSWORD": ("matrixone", "matrixone's built-in user dump/111"),
    "ORACLE_PASSWORD": ("oracle", "created by Dify's startupscripts/ with password dify"),
    "IRIS_PASSWORD": ("iris", "set by Dify's iris/iris-init.script"),
    "MINIO_ACCESS_KEY": ("milvus", "milvus-standalone gets no MinIO credentials and uses minioadmin"),
    "MINIO_SECRET_KEY": ("milvus", "milvus-standalone gets no MinIO credentials and uses minioadmin"),
}

# Well-known defaults of past and present Dify examples (the example in use is read too).
KNOWN_DEFAULT_SECRETS: frozenset[str] = frozenset({
    "difyai123456",
    "dify-sandbox",
    "sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U",
    "lYkiYYT6owG+71oLerGzA7GXCgOT++6ovaezWAjpCjf+Sjc3ZtU+qUEi",
    "QaHbTe77CtuXmsfyhR7+vRjI/+XbV1AaFy691iy+kGDv2Jvy0/eAh8Y1",
    "WVF5YThaHlkYwhGUSmCRgsX3tD5ngdN8pkih",
    "Qazwsxedc!@#123",
    "Dify@123",
    "Dify123456",
})

_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|_PWD|SECRET|SECRET_KEY|_KEY|API_KEY|TOKEN|CREDENTIALS|"
                          r"KEY_ID|KEY_SECRET|CONNECTION_STRING|_DSN)$")
_NOT_SECRET = re.compile(r"(_FILENAME|_EXPIRE_MINUTES|_EXPIRE_DAYS|MAX_TOKENS|_VERSION)$")


def group_keys() -> set[str]:
    return {k for g in SECRET_GROUPS for k in g.keys}


def is_secret_key(key: str) -> bool:
    """Whether a variable holds a credential (its value is never printed)."""
    if key in group_keys() or key in FIXED_DEFAULTS:
        return True
    if key == "CELERY_BROKER_URL":
        return True
    return bool(_SECRET_NAME.search(key)) and not _NOT_SECRET.search(key)


def known_defaults(example: Mapping[str, str]) -> set[str]:
    """Every public default secret value: the constants plus what this example ships."""
    found = set(KNOWN_DEFAULT_SECRETS)
    for key in group_keys():
        if example.get(key):
            found.add(example[key])
    return found


def generate_secret(kind: str = "token") -> str:
    """A strong random value from ``secrets``: alphanumerics only, plus one ``_`` for 'complex'."""
    alphabet = string.ascii_letters + string.digits
    length = 48 if kind == "token" else 32
    while True:
        value = "".join(secrets.choice(alphabet) for _ in range(length))
        if (any(c.islower() for c in value) and any(c.isupper() for c in value)
                and any(c.isdigit() for c in value) and value[0].isalpha()):
            break
    if kind == "complex":  # opensearch/opengauss/oracle want a special character
        cut = secrets.randbelow(length - 2) + 1
        value = value[:cut] + "_" + value[cut:]
    return value


