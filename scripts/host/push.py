"""`invoke push`: put a bundle's images into a private registry (Harbor, Nexus, distribution).

For sites that run Dify on several machines or on Kubernetes. The images are loaded from the bundle
(streamed, :func:`scripts.bundle.load.load_images`), tagged ``REGISTRY/PREFIX/<Docker Hub path>``, pushed with
retries, and the temporary tags are removed again. The Docker Hub path is kept, ``library/`` included::

    langgenius/dify-api:1.11.3  ->  reg.example:5000/dify/langgenius/dify-api:1.11.3
    postgres:15-alpine          ->  reg.example:5000/dify/library/postgres:15-alpine
    ghcr.io/org/tool:2          ->  reg.example:5000/dify/org/tool:2   (the source registry host is dropped)

so two images never collide and a reader sees where each came from. The mapping is printed and
written as a compose override (``image:`` per service) and as a Helm-values-style YAML.

Plan, then act: :func:`make_plan` is data (``--dry-run`` prints it with the exact commands);
:func:`push` performs it. Credentials are the engine's own (``docker login`` / ``podman login``
beforehand): this module never sees a password.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scripts.bundle import archive, signature
from scripts.bundle.load import image_id, load_images, pinned_ids
from scripts.bundle.manifest import load_manifest
from scripts.core.console import LOG, progress, table
from scripts.core.errors import AirgapError, CommandFailed
from scripts.core.inputs import output_dir
from scripts.engine.client import Engine
from scripts.engine.images import local_ref

PUSH_RETRIES = 3
COMPOSE_OVERRIDE = "registry-images.compose.yaml"
HELM_VALUES = "registry-images.values.yaml"
_REGISTRY = re.compile(r"(?P<host>[A-Za-z0-9.-]+(?::\d{1,5})?)(?:/(?P<prefix>[a-z0-9._/-]*))?")
_PATH_PART = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


def parse_registry(text: str) -> tuple[str, str]:
    """``reg:5000/dify`` -> ``("reg:5000", "dify")``; the prefix may be empty or several levels deep."""
    value = (text or "").strip()
    value = re.sub(r"^[a-z]+://", "", value).rstrip("/")
    m = _REGISTRY.fullmatch(value)
    if not m or "." not in m.group("host") and ":" not in m.group("host") and m.group("host") != "localhost":
        raise AirgapError(f"--registry {text!r} is not HOST[:PORT]/PREFIX; write e.g. harbor.example.local/dify "
                          f"or 10.0.0.5:5000/dify (the host needs a dot, a port or be localhost)")
    prefix = (m.group("prefix") or "").strip("/")
    for part in filter(None, prefix.split("/")):
        if not _PATH_PART.fullmatch(part):
            raise AirgapError(f"--registry prefix {prefix!r}: {part!r} is not a valid repository path component "
                              f"(lowercase letters, digits, '.', '_', '-')")
    return m.group("host"), prefix


def split_ref(ref: str) -> tuple[str | None, str, str]:
    """``ghcr.io/org/x:1`` -> ``("ghcr.io", "org/x", "1")``; Docker Hub gets host None and ``library/``."""
    name = ref.split("@", 1)[0]
    tag = "latest"
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    host = None
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, name = first, rest
    if host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        host = None
    if "/" not in name and host is None:
        name = f"library/{name}"
    return host, name, tag


def target_ref(ref: str, registry: str) -> str:
    """Where ``ref`` goes in ``registry`` (``HOST[:PORT]/PREFIX``), keeping its Docker Hub path."""
    host, prefix = parse_registry(registry)
    _, path, tag = split_ref(ref)
    return "/".join(filter(None, (host, prefix, path))) + f":{tag}"


def open_bundle(path: str | Path, trust: signature.TrustPolicy, *, dry_run: bool = False) -> tuple[Path, dict]:
    """(bundle directory, manifest), verified first (digest, signature, every file: ``signature.open_verified``).

    A dry run of an archive is verified as a stream (every member hashed) and plans from its manifest: nothing is
    unpacked.
    """
    bundle = signature.open_verified(path, trust, dry_run=dry_run)
    if dry_run and not bundle.is_dir():  # an archive verified as a stream: nothing unpacked
        return bundle, archive.read_manifest(path)[0]
    return bundle, load_manifest(bundle)


@dataclass
class PushItem:
    ref: str
    image_id: str
    target: str
    services: list[str] = field(default_factory=list)
    pinned: tuple[str, ...] = ()  # every id the manifest pins (load.pinned_ids: the build host's and the config's)


@dataclass
class PushPlan:
    bundle: Path
    registry: str
    insecure: bool
    items: list[PushItem]
    output: Path

    def mapping(self) -> dict[str, str]:
        return {item.ref: item.target for item in self.items}

    def render(self, engine: Engine) -> str:
        lines = [f"push {len(self.items)} images of {self.bundle} to {self.registry}", "",
                 table(["image", "in the registry", "services"],
                       [[i.ref, i.target, ", ".join(i.services)] for i in self.items]), "", "commands:",
                 f"  {engine.runtime} load < {self.bundle} (only images not already loaded)"]
        for item in self.items:
            lines += [f"  {shlex.join([engine.runtime, 'tag', source_name(engine, item), item.target])}",
                      f"  {shlex.join(push_argv(engine, item.target, self.insecure))}",
                      f"  {shlex.join([engine.runtime, 'image', 'rm', item.target])}"]
        lines += ["", f"files: {self.output / COMPOSE_OVERRIDE}, {self.output / HELM_VALUES}"]
        return "\n".join(lines)


def make_plan(bundle: Path, manifest: dict, registry: str, *, insecure: bool = False,
              output: Path | None = None) -> PushPlan:
    parse_registry(registry)
    items, seen = [], {}
    for image in manifest["images"]:
        target = target_ref(image["ref"], registry)
        if target in seen:
            raise AirgapError(f"{image['ref']} and {seen[target]} would both be pushed as {target}; "
                              f"push them to different --registry prefixes")
        seen[target] = image["ref"]
        items.append(PushItem(image["ref"], str(image.get("id") or ""), target, list(image.get("services") or []),
                              tuple(sorted(pinned_ids(image)))))
    output = output_dir(output or Path.cwd(), "--output", create=False)
    return PushPlan(bundle=bundle, registry=registry.strip().rstrip("/"), insecure=insecure, items=items,
                    output=output.resolve())


def push_argv(engine: Engine, target: str, insecure: bool) -> list[str]:
    """docker reads insecure registries from its daemon.json; podman takes the flag per command."""
    if engine.is_podman:
        return ["podman", "push", f"--tls-verify={'false' if insecure else 'true'}", target]
    return ["docker", "push", target]


def source_name(engine: Engine, item: PushItem) -> str:
    """Tag by image id when the bundle recorded one: the pushed image is then exactly the bundled one. The id is
    the one the engine gives the loaded image, among those the manifest pins (a build host on Docker's containerd
    store pins its manifest-list digest AND the config digest podman and Docker's classic store load it as)."""
    if not item.pinned:
        return local_ref(engine, item.ref)
    have = image_id(engine, local_ref(engine, item.ref))
    return have if have in item.pinned else item.pinned[0]


def push_one(engine: Engine, item: PushItem, insecure: bool, retries: int = PUSH_RETRIES) -> None:
    engine.run(["tag", source_name(engine, item), item.target], image=item.ref)
    try:
        argv = push_argv(engine, item.target, insecure)
        for attempt in range(1, retries + 1):
            LOG.info("pushing %s (attempt %d/%d)", item.target, attempt, retries)
            res = engine.run(argv[1:], check=False, timeout=3600)
            if res.ok:
                return
            if attempt == retries:
                hint = ""
                if "server gave HTTP response to HTTPS client" in res.stderr:
                    hint = (" The registry speaks plain HTTP: add it to \"insecure-registries\" in "
                            "/etc/docker/daemon.json (docker) or pass --insecure (podman).")
                elif re.search(r"unauthorized|authentication required|denied", res.stderr, re.I):
                    hint = f" Log in first: {engine.runtime} login {item.target.split('/', 1)[0]}."
                raise CommandFailed(f"could not push {item.target} after {retries} attempts.{hint}",
                                    argv=res.argv, returncode=res.returncode, stderr=res.stderr)
            time.sleep(2 ** attempt)  # back off before retrying a flaky registry
    finally:
        engine.run(["image", "rm", item.target], check=False)


def compose_override(plan: PushPlan) -> dict:
    services = {s: {"image": item.target} for item in plan.items for s in item.services}
    return {"services": dict(sorted(services.items()))}


def helm_values(plan: PushPlan) -> dict:
    host, prefix = parse_registry(plan.registry)
    images = {}
    for item in plan.items:
        repository, _, tag = item.target.rpartition(":")
        for service in item.services or [split_ref(item.ref)[1].rsplit("/", 1)[-1]]:
            images[service] = {"repository": repository, "tag": tag, "source": item.ref}
    return {"global": {"imageRegistry": host, "imagePrefix": prefix},
            "images": dict(sorted(images.items()))}


def render_done(plan: PushPlan) -> str:
    """What ``invoke push`` prints at the end."""
    return (f"\npushed {len(plan.items)} images; wrote {plan.output / COMPOSE_OVERRIDE} "
            f"and {plan.output / HELM_VALUES}")


def render_files(plan: PushPlan) -> dict[Path, str]:
    head = f"# written by `invoke push` for {plan.registry}; images of {plan.bundle.name}\n"
    usage = ("# use: docker compose -f docker-compose.yaml -f " + COMPOSE_OVERRIDE + " up -d\n")
    return {plan.output / COMPOSE_OVERRIDE: head + usage + yaml.safe_dump(compose_override(plan), sort_keys=False),
            plan.output / HELM_VALUES: head + yaml.safe_dump(helm_values(plan), sort_keys=False)}


def push(engine: Engine, plan: PushPlan, manifest: dict) -> dict[Path, str]:
    """Load, tag, push, untag; write the mapping files. Returns {file: content} (not written in dry-run)."""
    files = render_files(plan)
    if engine.dry_run:
        for path, text in files.items():
            print(f"[dry-run] would write {path}:\n{text}")
        return files
    load_images(engine, plan.bundle, manifest)
    with progress(len(plan.items), "push", unit="images") as bar:
        for i, item in enumerate(plan.items, 1):
            LOG.info("[%d/%d] %s -> %s", i, len(plan.items), item.ref, item.target)
            push_one(engine, item, plan.insecure)
            bar.update(1)
    plan.output.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_text(text)
        tmp.replace(path)
    return files
