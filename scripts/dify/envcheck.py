"""Validation of a rendered .env against its release: required keys, supported values, hosts, URLs, sizes."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from scripts.dify import external
from scripts.dify.envsecrets import FIXED_DEFAULTS, SECRET_GROUPS, group_keys, is_secret_key
from scripts.dify.envsyntax import Line, referenced, resolve_all

# --- validation data -----------------------------------------------------------------------------

REQUIRED_KEYS = (
    "SECRET_KEY", "DB_TYPE", "DB_USERNAME", "DB_PASSWORD", "DB_HOST", "DB_PORT", "DB_DATABASE",
    "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "CELERY_BROKER_URL", "VECTOR_STORE", "STORAGE_TYPE",
    "CODE_EXECUTION_ENDPOINT", "CODE_EXECUTION_API_KEY", "SANDBOX_API_KEY", "PLUGIN_DAEMON_KEY",
    "PLUGIN_DAEMON_URL", "PLUGIN_DIFY_INNER_API_KEY", "PLUGIN_DIFY_INNER_API_URL", "COMPOSE_PROFILES",
)

# DB_TYPE -> the compose service (host name) that runs it
DB_HOSTS = {"postgresql": "db_postgres", "mysql": "db_mysql", "oceanbase": "oceanbase", "seekdb": "seekdb"}
DB_PORTS = {"postgresql": "5432", "mysql": "3306"}


# Public URLs the browser or external callers use; all derived from one base URL.
PUBLIC_URL_KEYS = ("CONSOLE_API_URL", "CONSOLE_WEB_URL", "SERVICE_API_URL", "TRIGGER_URL", "APP_API_URL",
                   "APP_WEB_URL", "FILES_URL")
ENDPOINT_TEMPLATE_KEY = "ENDPOINT_URL_TEMPLATE"       # plugin endpoints, http://HOST/e/{hook_id}
DEBUG_HOST_KEY = "EXPOSE_PLUGIN_DEBUGGING_HOST"       # shown to plugin developers for remote debugging

# Dify size limits in MiB that go through nginx, and byte limits that do.
UPLOAD_LIMITS_MB = ("UPLOAD_FILE_SIZE_LIMIT", "UPLOAD_IMAGE_FILE_SIZE_LIMIT", "UPLOAD_VIDEO_FILE_SIZE_LIMIT",
                    "UPLOAD_AUDIO_FILE_SIZE_LIMIT", "ATTACHMENT_IMAGE_FILE_SIZE_LIMIT",
                    "ANNOTATION_IMPORT_FILE_SIZE_LIMIT")
UPLOAD_LIMITS_BYTES = ("PLUGIN_MAX_PACKAGE_SIZE", "WEBHOOK_REQUEST_BODY_MAX_SIZE")


def nginx_size(value: str) -> int | None:
    """nginx size syntax (``100M``, ``1g``, ``512k``, ``1048576``) in bytes; 0 means unlimited."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)\s*", value or "")
    if not m:
        return None
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}[m.group(2).lower()]


def supported_values(lines: list[Line], key: str) -> list[str]:
    """The backticked choices of the comment above ``key`` ("Supported values are `a`, `b`")."""
    comment: list[str] = []
    for line in lines:
        if line.key == key:
            text = " ".join(comment)
            m = re.search(r"supported values are (.*)", text, re.IGNORECASE)
            return re.findall(r"`([^`]+)`", m.group(1)) if m else []
        if line.key is None and line.raw.lstrip().startswith("#"):
            comment.append(line.raw)
        elif line.key is not None or not line.raw.strip():
            comment = []
    return []


def suggest(key: str, known: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.8)
    return close[0] if close else None


@dataclass
class Validation:
    """The final values of one render and what is known about them; checks add errors and warnings."""

    lines: list[Line]
    example: Mapping[str, str]
    values: Mapping[str, str]
    extras: Mapping[str, str]
    defaults: set[str]
    middleware: bool
    project_dir: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _secrets(v: Validation) -> None:
    """No public default may remain, and linked keys hold one value."""
    # secrets: no public default may remain, and linked keys hold one value
    for group in SECRET_GROUPS:
        keys = [k for k in group.keys if k in v.values]
        for key in keys:
            if not v.values[key]:
                v.errors.append(f"{key} is empty; it is a secret ({group.why}); drop it from your site file "
                                f"so one is generated, or set a real value")
            elif v.values[key] in v.defaults:
                v.errors.append(f"{key} still holds a public default secret shipped with Dify; remove it from "
                                f"your site file/--set so a strong one is generated ({group.why})")
        if len({v.values[k] for k in keys}) > 1:
            v.errors.append(f"{', '.join(keys)} must hold the same value ({group.why})")
    broker = v.values.get("CELERY_BROKER_URL", "")
    if broker and urlsplit(broker).password in v.defaults:
        v.errors.append("CELERY_BROKER_URL still embeds a public default redis password; let it be derived "
                        "from REDIS_PASSWORD (drop it from your site file)")


def _required(v: Validation) -> None:
    """Required keys are set."""
    for key in REQUIRED_KEYS:
        if key in v.example and not v.values.get(key, "").strip():
            v.errors.append(f"{key} is required and empty")


def _choices(v: Validation) -> None:
    """Values among the choices the example's comments list."""
    # choices listed in the example's own comments
    for key in ("DB_TYPE", "VECTOR_STORE"):
        choices = supported_values(v.lines, key)
        value = v.values.get(key, "")
        if choices and value and value not in choices:
            close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else f"; one of: {', '.join(choices)}"
            v.errors.append(f"{key}={value} is not supported by this Dify release{hint}")


def _database(v: Validation) -> None:
    """The database type, host and port agree."""
    warn = v.warnings.append
    db_type = v.values.get("DB_TYPE", "")
    db_host = v.values.get("DB_HOST", "")
    if db_type in DB_HOSTS and db_host in DB_HOSTS.values() and db_host != DB_HOSTS[db_type]:
        v.errors.append(f"DB_TYPE={db_type} but DB_HOST={db_host} (the {db_host} container runs another "
                        f"database); set DB_HOST={DB_HOSTS[db_type]} or an external host")
    if db_type in DB_PORTS and db_host == DB_HOSTS.get(db_type) and v.values.get("DB_PORT") \
            and v.values["DB_PORT"] != DB_PORTS[db_type]:
        v.errors.append(f"DB_TYPE={db_type} on the bundled {db_host} listens on {DB_PORTS[db_type]}, "
                        f"but DB_PORT={v.values['DB_PORT']}")
    if db_type == "mysql" and v.values.get("DB_USERNAME", "root") != "root":
        warn("DB_TYPE=mysql: Dify's example says only the root user is supported (DB_USERNAME=root)")


def _vector_store(v: Validation) -> None:
    """The vector store's endpoint and credentials."""
    warn = v.warnings.append
    store = v.values.get("VECTOR_STORE", "")
    endpoint_key = external.STORE_ENDPOINTS.get(store)
    if endpoint_key and endpoint_key in v.example and not v.values.get(endpoint_key, "").strip():
        v.errors.append(f"VECTOR_STORE={store} needs {endpoint_key} (where the store is); it is empty")
    if endpoint_key:  # an external store's credentials are placeholders until the site supplies them
        prefix = endpoint_key.rsplit("_", 1)[0] + "_"
        for key in v.example:
            if key.startswith(prefix) and is_secret_key(key) and key not in group_keys() \
                    and key not in FIXED_DEFAULTS and v.example[key] and v.values.get(key) == v.example[key]:
                warn(f"VECTOR_STORE={store}: {key} still holds the example's placeholder; set the real one "
                     f"in your site file")
    for key, (fixed_store, why) in FIXED_DEFAULTS.items():
        if store == fixed_store and key in v.values and v.values[key] == v.example.get(key):
            warn(f"{key} keeps Dify's public default because {why}; keep that store off any reachable port")


def _interpolation(v: Validation) -> None:
    """References compose can resolve, reading top to bottom."""
    warn = v.warnings.append
    # compose reads top to bottom: a reference to a key defined below (or in the extras) is unset
    order = {line.key: i for i, line in enumerate(v.lines) if line.key}
    for i, line in enumerate(v.lines):
        if line.key is None:
            continue
        for name in referenced(v.values.get(line.key, "")):
            if name in v.extras:
                warn(f"{line.key} interpolates ${{{name}}}, which is only defined in the site-additions block "
                     f"at the end: compose will use the default instead; add {name} above {line.key}")
            elif name in order and order[name] > i:
                warn(f"{line.key} interpolates ${{{name}}}, defined further down: compose will not see it")


def _profiles(v: Validation) -> None:
    """Profiles that start the chosen stores; site additions compose uses."""
    warn = v.warnings.append
    resolved = resolve_all({**v.values, **v.extras})
    profiles = compose_profiles(v.project_dir, v.middleware)
    active = set(resolved.get("COMPOSE_PROFILES", "").split(","))
    outside = {e.profile for e in external.find(resolved, compose_services(v.project_dir, v.middleware))}
    for key in ("VECTOR_STORE", "DB_TYPE"):
        value = resolved.get(key, "")
        if value in profiles and "COMPOSE_PROFILES" in v.values and value not in active and value not in outside:
            warn(f"{key}={value} but COMPOSE_PROFILES resolves to {resolved['COMPOSE_PROFILES']!r}: "
                 f"the {value} container will not start")
    compose = compose_text(v.project_dir, v.middleware)
    for key in v.extras:
        if compose and not re.search(r"\$\{?" + re.escape(key) + r"\b", compose):
            warn(f"{key} (site addition) is not referenced by the compose file: no container will see it")


def _sizes(v: Validation) -> None:
    """Nginx lets through what Dify says it accepts (nginx answers 413 otherwise)."""
    # sizes: nginx must let through what Dify says it accepts (nginx answers 413 otherwise)
    if not v.middleware and "NGINX_CLIENT_MAX_BODY_SIZE" in v.values:
        body = nginx_size(v.values["NGINX_CLIENT_MAX_BODY_SIZE"])
        if body is None:
            v.errors.append(f"NGINX_CLIENT_MAX_BODY_SIZE={v.values['NGINX_CLIENT_MAX_BODY_SIZE']!r} is not an nginx "
                            f"size (examples: 100M, 512M, 1G)")
        elif body:
            limits = {k: int(v.values[k]) * 1024 * 1024 for k in UPLOAD_LIMITS_MB if v.values.get(k, "").isdigit()}
            limits.update({k: int(v.values[k]) for k in UPLOAD_LIMITS_BYTES if v.values.get(k, "").isdigit()})
            for key, size in limits.items():
                if size > body:
                    v.errors.append(f"{key}={v.values[key]} allows more than NGINX_CLIENT_MAX_BODY_SIZE="
                                    f"{v.values['NGINX_CLIENT_MAX_BODY_SIZE']} lets through; raise the nginx size "
                                    f"to at least {-(-size // 1024 ** 2)}M")


def _middleware(v: Validation) -> None:
    """Middleware mode: what must be copied by hand."""
    warn = v.warnings.append
    if v.middleware:
        linked = [k for k in ("DB_PASSWORD", "REDIS_PASSWORD", "SANDBOX_API_KEY", "PLUGIN_DAEMON_KEY",
                              "PLUGIN_DIFY_INNER_API_KEY") if k in v.values]
        warn("middleware mode: the api runs outside compose; copy these values into api/.env by hand "
             f"(SANDBOX_API_KEY goes to CODE_EXECUTION_API_KEY there): {', '.join(linked)}")


def _airgap(v: Validation) -> None:
    """Air-gap sanity (warnings: the site may have an internal mirror of these)."""
    warn = v.warnings.append
    # air-gap sanity (warnings: the site may have an internal mirror of these)
    if v.values.get("MARKETPLACE_ENABLED", "").lower() == "true":
        warn("MARKETPLACE_ENABLED=true: the marketplace is on the internet; install plugins from files")
    if not v.middleware and any(k in v.example for k in PUBLIC_URL_KEYS) \
            and not any(v.values.get(k) for k in PUBLIC_URL_KEYS if k != "TRIGGER_URL"):
        warn("public URLs are empty (FILES_URL too, which file-processing plugins need); pass --server-ip "
             "or --base-url")
    for key in v.extras:
        close = suggest(key, v.example)
        if close:
            warn(f"{key} kept as a site addition; the known key {close} looks similar")


CHECKS = (_secrets, _required, _choices, _database, _vector_store, _interpolation, _profiles, _sizes, _middleware,
          _airgap)


def validate(lines: list[Line], example: Mapping[str, str], values: Mapping[str, str], extras: Mapping[str, str],
             defaults: set[str], middleware: bool, project_dir: Path) -> tuple[list[str], list[str]]:
    """Errors and warnings about the final values of a render, every check in :data:`CHECKS` in order."""
    v = Validation(lines, example, values, extras, defaults, middleware, project_dir)
    for check in CHECKS:
        check(v)
    return v.errors, v.warnings


def _compose_services(project_dir: Path, middleware: bool) -> dict:
    name = "docker-compose.middleware.yaml" if middleware else "docker-compose.yaml"
    try:
        data = yaml.safe_load((project_dir / name).read_text(encoding="utf-8")) or {}
    except Exception:  # unreadable or invalid compose file: other tasks report it
        return {}
    services = data.get("services") if isinstance(data, dict) else None
    return services if isinstance(services, dict) else {}


def compose_profiles(project_dir: Path, middleware: bool) -> set[str]:
    """Profile names declared in the project's compose file (empty if it cannot be read)."""
    found: set[str] = set()
    for service in _compose_services(project_dir, middleware).values():
        found.update((service or {}).get("profiles") or [])
    return found


def compose_services(project_dir: Path, middleware: bool) -> set[str]:
    """The service names of the project's compose file: the hosts inside the stack (empty if unreadable)."""
    return set(_compose_services(project_dir, middleware))


def compose_text(project_dir: Path, middleware: bool) -> str:
    name = "docker-compose.middleware.yaml" if middleware else "docker-compose.yaml"
    try:
        return (project_dir / name).read_text(encoding="utf-8")
    except OSError:
        return ""
