"""`invoke images`: the exact image set a compose project needs, from the compose provider itself.

Profiles follow Dify's rule: ``COMPOSE_PROFILES`` as the env file defines it
(``${VECTOR_STORE:-weaviate},${DB_TYPE:-postgresql}``), plus extras the user names. Several vector
stores can be planned at once so a site can switch ``VECTOR_STORE`` later without a new bundle.
The provider's ``config`` output (JSON) is the source of truth; we only de-duplicate, drop build-only
services with a warning, and record which service and profile needs each image.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from scripts.core.console import LOG, table
from scripts.core.errors import AirgapError
from scripts.dify.envsyntax import interpolate, read_env
from scripts.dify.project import COMPOSE_FILE, FULL, ComposeProject, StackMode
from scripts.engine.client import Engine

ALL = "*"
MIDDLEWARE_NOTE = "docker-compose.middleware.yaml with middleware.env, no api/web/nginx"


@dataclass
class PlannedImage:
    ref: str
    services: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)  # empty: needed whatever the profiles


@dataclass
class ImagePlan:
    project_dir: str
    env_file: str
    profiles: list[str]
    vector_stores: list[str]
    images: list[PlannedImage]
    warnings: list[str] = field(default_factory=list)
    dropped_services: list[str] = field(default_factory=list)
    dify_version: str = ""  # the langgenius/dify-api tag of the compose file
    daemon_version: str = ""  # the plugin daemon's version (its image tag)
    mode: str = FULL.name  # full, or middleware (docker-compose.middleware.yaml: project.StackMode)

    @property
    def refs(self) -> list[str]:
        return [img.ref for img in self.images]

    def services_for(self, ref: str) -> list[str]:
        return next((img.services for img in self.images if img.ref == ref), [])

    def to_dict(self) -> dict:
        return asdict(self)

    def render(self) -> str:
        rows = [[img.ref, ", ".join(img.services), ", ".join(img.profiles) or "(always)"]
                for img in self.images]
        lines = [f"project: {self.project_dir}", f"dify: {self.dify_version or 'unknown'} "
                 f"(plugin daemon {self.daemon_version or 'unknown'})", f"env file: {self.env_file}",
                 f"profiles: {', '.join(self.profiles) or '(none)'}"
                 + (f" (mode {self.mode}: {MIDDLEWARE_NOTE})" if self.mode != FULL.name else ""), "",
                 table(["image", "services", "profiles"], rows), "",
                 f"{len(self.images)} distinct images"]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def declared_profiles(project_dir: Path | ComposeProject, files: Sequence[str] = (COMPOSE_FILE,)) -> list[str]:
    """Every profile any service declares, read from the compose file(s) as YAML."""
    project = project_dir if isinstance(project_dir, ComposeProject) else ComposeProject(project_dir, tuple(files))
    found: list[str] = []
    for doc in project.documents():
        for service in (doc.get("services") or {}).values():
            for profile in (service or {}).get("profiles") or []:
                if profile and profile not in found:  # the middleware file lists "" (no --profile names it)
                    found.append(profile)
    return found


def env_profiles(env_file: Path, overrides: dict[str, str] | None = None) -> list[str]:
    """``COMPOSE_PROFILES`` as compose computes it from the env file (with ``${VAR:-default}``)."""
    values = dict(read_env(env_file))
    values.update(overrides or {})
    raw = values.get("COMPOSE_PROFILES") or ""
    resolved = _interpolate(raw, values)
    return [p.strip() for p in resolved.split(",") if p.strip()]


def _interpolate(value: str, env: dict[str, str | None]) -> str:
    """Compose-style interpolation (envfile's); keys listed without a value count as unset."""
    return interpolate(value, {k: v for k, v in env.items() if v is not None})


def choose_profiles(env_file: Path, declared: Sequence[str], *, profiles: Iterable[str] = (),
                    vector_stores: Iterable[str] = (), all_profiles: bool = False,
                    db_type: str | None = None) -> tuple[list[str], list[str], list[str]]:
    """The profiles to enable, the vector stores covered, and warnings.

    Base: COMPOSE_PROFILES from the env file. ``vector_stores`` adds more vector store profiles to
    the env file's own; ``profiles`` adds extras (certbot, unstructured...).
    """
    warnings: list[str] = []
    if all_profiles:
        return list(declared), [], warnings
    values = dict(read_env(env_file))
    overrides: dict[str, str] = {}
    if db_type:
        overrides["DB_TYPE"] = db_type
    env_vs = _interpolate("${VECTOR_STORE:-weaviate}", {**values, **overrides})
    # The env file's own store stays covered: it is what the far side runs unless told otherwise.
    stores = list(dict.fromkeys([env_vs, *(v.strip() for v in vector_stores if v.strip())]))
    chosen: list[str] = []
    for profile in env_profiles(env_file, overrides):
        if profile == env_vs:
            continue  # replaced by the vector store list below
        chosen.append(profile)
    for store in stores:
        if store not in declared:
            warnings.append(f"vector store {store!r} has no service in the compose file "
                            f"(an external service?): no image planned for it")
        chosen.append(store)
    for extra in profiles:
        extra = extra.strip()
        if not extra:
            continue
        if extra not in declared:
            hint = difflib.get_close_matches(extra, declared, n=1)
            raise AirgapError(f"profile {extra!r} is not declared by any service"
                              + (f"; did you mean {hint[0]!r}?" if hint else
                                 f"; declared profiles: {', '.join(declared)}"))
        chosen.append(extra)
    unique = list(dict.fromkeys(chosen))
    return unique, stores, warnings


#: DB_TYPE values Dify supports (1.11.3's .env.example comment; 1.16.0 keeps the same profiles).
DB_TYPES = ("postgresql", "mysql", "oceanbase", "seekdb")
#: VECTOR_STORE values Dify supports (1.11.3's .env.example comment). Those without a compose service
#: are external (cloud) stores: no image is planned for them; anything else is a typo and refused.
VECTOR_STORES = ("weaviate", "oceanbase", "seekdb", "qdrant", "milvus", "myscale", "relyt", "pgvector", "pgvecto-rs",
                 "chroma", "opensearch", "oracle", "tencent", "elasticsearch", "elasticsearch-ja", "analyticdb",
                 "couchbase", "vikingdb", "opengauss", "tablestore", "vastbase", "tidb", "tidb_on_qdrant", "baidu",
                 "lindorm", "huawei_cloud", "upstash", "matrixone", "clickzetta", "alibabacloud_mysql", "iris")


def check_store_names(env_file: Path, declared: Sequence[str], db_type: str | None,
                      vector_stores: Iterable[str]) -> None:
    """Refuse a DB_TYPE / VECTOR_STORE that matches no profile (nor, for stores, a known external one)."""
    values = dict(read_env(env_file))
    db = db_type or _interpolate("${DB_TYPE:-postgresql}", values)
    db_profiles = [p for p in declared if p in DB_TYPES]
    if db_profiles and db not in db_profiles:  # no database profile at all: an external DB or not Dify's file
        hint = difflib.get_close_matches(db, db_profiles, n=1)
        raise AirgapError(f"DB_TYPE={db!r} matches no database profile of the compose file"
                          + (f"; did you mean {hint[0]!r}?" if hint else "")
                          + f" (valid: {', '.join(db_profiles)})")
    known = [*dict.fromkeys([*(p for p in declared if p in VECTOR_STORES), *VECTOR_STORES])]
    for store in [_interpolate("${VECTOR_STORE:-weaviate}", values), *vector_stores]:
        store = store.strip()
        if store and store not in declared and store not in VECTOR_STORES:
            hint = difflib.get_close_matches(store, known, n=1)
            raise AirgapError(f"VECTOR_STORE={store!r} is not a vector store Dify knows"
                              + (f"; did you mean {hint[0]!r}?" if hint else "")
                              + f" (with a service here: {', '.join(p for p in declared if p in VECTOR_STORES)};"
                              f" external: {', '.join(s for s in VECTOR_STORES if s not in declared)})")


def compose_config(engine: Engine, project_dir: Path, env_file: Path, profiles: Sequence[str],
                   files: Sequence[str] = ()) -> dict:
    """The provider's resolved project (``config``), parsed. Read-only: runs even in dry-run.

    Runs on a staged copy (:meth:`ComposeProject.staged`) whose ``.env`` is ``env_file``: Dify 1.14+
    requires ``.env``, and Compose then EXITS 0 WITH EMPTY OUTPUT when it is missing. An empty or
    service-less result is an error naming what compose said, never an empty plan.

    ``config`` needs no daemon, so a Compose v2 binary is preferred when present, whatever the
    runtime: podman-compose 1.x cannot parse Dify's file unaided ("missing networks: default").
    """
    if engine.is_podman:
        docker_side = Engine("docker", runner=engine.runner)
        if docker_side.find_compose():
            engine = docker_side
    provider = engine.compose()
    args = ["config"] if provider.is_podman_compose else ["config", "--format", "json"]
    project = ComposeProject(project_dir, tuple(files) or (COMPOSE_FILE,))
    with project.staged(env_file) as staged:
        res = engine.compose_run(args, project_dir=str(staged), env_file=str(staged / ".env"), files=files,
                                 profiles=profiles, mutates=False, timeout=120, check=False)
    said = " ".join((res.stderr.strip() or res.stdout.strip()).split())[-600:].replace(str(staged), str(project_dir))
    if not res.ok:
        raise AirgapError(f"compose could not read the project {project_dir} (exit {res.returncode}): {said}")
    try:
        config = yaml.safe_load(res.stdout) or {}
    except yaml.YAMLError as exc:
        raise AirgapError(f"compose config of {project_dir} printed something that is not YAML/JSON: {exc}") from None
    if not isinstance(config, dict) or not config.get("services"):
        raise AirgapError(f"compose config of {project_dir} lists no service (profiles: {', '.join(profiles)})"
                          + (f": {said}" if said else "") + "; is the env file complete?")
    return config


def plan_images(engine: Engine, project_dir: Path, env_file: Path, *, profiles: Iterable[str] = (),
                vector_stores: Iterable[str] = (), all_profiles: bool = False, db_type: str | None = None,
                files: Sequence[str] = (), mode: StackMode = FULL) -> ImagePlan:
    """The de-duplicated image set with the services and profiles that need each image.

    ``mode``: the full stack, or the middleware one (its compose file; the release is still read from
    ``docker-compose.yaml``, the file that runs the dify-api image)."""
    files = list(files) or [mode.compose_file]
    project = ComposeProject(project_dir, tuple(files))  # the YAML is read once for the whole plan
    release = project if mode == FULL else ComposeProject(project_dir)
    declared = declared_profiles(project)
    if not all_profiles:
        check_store_names(env_file, declared, db_type, vector_stores)
    chosen, stores, warnings = choose_profiles(env_file, declared, profiles=profiles,
                                               vector_stores=vector_stores, all_profiles=all_profiles,
                                               db_type=db_type)
    config = compose_config(engine, project_dir, env_file, chosen, files)
    images: dict[str, PlannedImage] = {}
    dropped: list[str] = []
    for name, service in sorted((config.get("services") or {}).items()):
        ref = service.get("image")
        if service.get("build") and not _declares_image(project, name):
            dropped.append(name)
            warnings.append(f"service {name!r} is built locally (build-only, image {ref!r}): "
                            f"it is not bundled; build it on the far side or drop its profile")
            continue
        if not ref:
            warnings.append(f"service {name!r} has no image: skipped")
            continue
        entry = images.setdefault(ref, PlannedImage(ref))
        entry.services.append(name)
        for profile in service.get("profiles") or []:
            if profile in chosen and profile not in entry.profiles:
                entry.profiles.append(profile)
    for entry in images.values():
        if any(not (config["services"][s].get("profiles")) for s in entry.services):
            entry.profiles = []  # at least one service needs it always
    if not images:
        raise AirgapError(f"the plan for {project_dir} holds no image (services: "
                          f"{', '.join(config.get('services') or {}) or 'none'}); nothing to bundle")
    for w in warnings:
        LOG.warning("warning: %s", w)
    return ImagePlan(project_dir=str(project_dir), env_file=str(env_file), profiles=chosen,
                     vector_stores=stores, images=sorted(images.values(), key=lambda i: i.ref),
                     warnings=warnings, dropped_services=dropped, dify_version=release.dify_version,
                     daemon_version=project.daemon_version or release.daemon_version, mode=mode.name)


def check_version(plan: ImagePlan, expected: str | None) -> None:
    """The compose file must name its release (the dify-api tag); ``--version`` must agree when given."""
    if not plan.dify_version:
        raise AirgapError(f"{plan.project_dir}: no langgenius/dify-api image in the compose file, so the Dify "
                          f"release is unknown; is this Dify's docker/ directory?")
    if expected and expected.lstrip("v") != plan.dify_version:
        raise AirgapError(f"--version {expected} does not match the project: {plan.project_dir} runs Dify "
                          f"{plan.dify_version} (langgenius/dify-api:{plan.dify_version}); drop --version or "
                          f"point --project-dir at the {expected} release")


def _declares_image(project: ComposeProject, service: str) -> bool:
    """Does the compose source (not the resolved config) give this service an ``image:``?"""
    return any(((doc.get("services") or {}).get(service) or {}).get("image") for doc in project.documents())



