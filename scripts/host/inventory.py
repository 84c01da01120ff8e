"""`invoke inventory`: what an air-gapped host already holds, written to carry OUT to the build box (#16).

The build box cuts an upgrade bundle that carries only what the target lacks; it needs to know what the target
has. The inventory lists every image of the engine (id, names, the layer diff-ids of its root filesystem, platform,
size) and the installed Dify (version, bundle, images) when ``--prefix`` holds a deployment. It is small plain JSON
(sorted keys: the same host state gives the same bytes, apart from ``created``), with its digest printed like a
bundle's (``sha256`` of the exact bytes, to write on the transfer form) and, with ``--sign-key``, a detached
signature ``FILE.sig`` made with the site key (PKCS#1 v1.5 over SHA-256, as bundles).

:func:`read` is the build box's side: size-capped, schema-checked, digest and signature checked against a
:class:`scripts.bundle.signature.TrustPolicy` before anything is used.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from scripts.bundle import archive, delta, manifest, signature
from scripts.core.errors import AirgapError
from scripts.core.files import write_file_atomic
from scripts.core.inputs import output_file, parse_json, read_bytes
from scripts.dify import deployment as dep
from scripts.engine.client import Engine
from scripts.engine.images import all_images

KIND = "dify-airgap-inventory"
FORMAT_VERSION = 1
SIG_SUFFIX = ".sig"
SCHEMA = {"kind": str, "format_version": int, "created": str, "runtime": str, "?host": str, "?engine_version": str,
          "?deployment": (dict, type(None)),
          "images": [{"id": str, "names": [str], "layers": [str], "?architecture": str, "?os": str, "?size": int}]}
RECOPY = "carry the inventory out again (invoke inventory on the air-gapped host writes it)"


def _image_entry(info: dict) -> dict:
    return {"id": str(info.get("Id", "")), "names": sorted(str(t) for t in info.get("RepoTags") or []),
            "layers": [str(layer) for layer in (info.get("RootFS") or {}).get("Layers") or []],
            "architecture": str(info.get("Architecture", "")), "os": str(info.get("Os", "")),
            "size": int(info.get("Size") or 0)}


def images(engine: Engine) -> list[dict]:
    """Every image of the engine with its layer diff-ids, by id (read-only: list, then inspect in batches)."""
    return sorted((_image_entry(info) for info in all_images(engine)), key=lambda image: image["id"])


def deployment_facts(prefix: Path | None) -> dict | None:
    """The installed Dify under ``prefix`` (None when there is no install record)."""
    if prefix is None or not (Path(prefix) / dep.STATE_FILE).is_file():
        return None
    record = dep.load(prefix)
    return {"prefix": str(record.prefix), "dify_version": record.dify_version, "bundle": record.bundle,
            "runtime": record.runtime, "project_name": record.project_name,
            "images": [{"ref": i.get("ref"), "id": i.get("config_id") or i.get("id")} for i in record.images]}


def collect(engine: Engine, prefix: Path | None) -> dict:
    version = engine.probe(["version", "--format", "{{.Server.Version}}" if not engine.is_podman else
                            "{{.Version}}"])
    return {"kind": KIND, "format_version": FORMAT_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "host": os.uname().nodename, "runtime": engine.runtime,
            "engine_version": version.stdout.strip() if version.ok else "",
            "deployment": deployment_facts(prefix), "images": images(engine)}


def render(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def write(data: dict, output: Path, sign_key: str | None = None) -> tuple[Path, str, str | None]:
    """``output`` (and ``output.sig`` with a key), each written whole or not at all; (path, digest, signer)."""
    path = output_file(output, "the inventory")
    raw = render(data)
    signer, sig = None, None
    if sign_key:
        key = signature.signing_key(sign_key)
        sig, signer = signature.sign_manifest(raw, key), signature.fingerprint(key.public_key())
    for target, body in ((path, raw), *(((path.with_name(path.name + SIG_SUFFIX), sig),) if sig else ())):
        write_file_atomic(target, body)
    stale = path.with_name(path.name + SIG_SUFFIX)
    if not sig and stale.is_file() and not stale.is_symlink():
        stale.unlink()  # a signature of an earlier inventory would not verify: never leave one beside
    return path, signature.manifest_digest(raw), signer


def read(path: str | os.PathLike, trust: signature.TrustPolicy) -> dict:
    """An inventory carried in to the build box: capped, digest and signature checked, then its shape."""
    path = Path(path)
    raw = read_bytes(path, "the inventory", RECOPY)
    sig_path = path.with_name(path.name + SIG_SUFFIX)
    sig = read_bytes(sig_path, "the inventory's signature", RECOPY) if sig_path.is_file() else None
    found = signature.check(signature.Head(str(path), raw, sig), trust)
    if found.problems:
        raise AirgapError(f"the inventory {path} is refused: "
                          + "; ".join(f"{p.path} {p.kind}: {p.detail}" for p in found.problems).replace(
                              signature.MANIFEST, path.name),
                          hint="compare the digest with the one `invoke inventory` printed on the air-gapped host")
    data = parse_json(raw, f"the inventory {path}", RECOPY, SCHEMA)
    if data.get("kind") != KIND or data.get("format_version") != FORMAT_VERSION:
        raise AirgapError(f"{path} is not a dify-airgap inventory (kind {data.get('kind')!r}, format "
                          f"{data.get('format_version')!r})", hint=RECOPY)
    return data


def render_text(data: dict, path: Path, digest: str, signer: str | None) -> str:
    deployment = data.get("deployment")
    layers = {layer for image in data["images"] for layer in image["layers"]}
    lines = [f"inventory: {path} ({data['runtime']} {data.get('engine_version') or ''} on {data.get('host')})",
             f"images: {len(data['images'])}, distinct layers: {len(layers)}",
             f"installed: Dify {deployment['dify_version']} from {deployment['bundle']}" if deployment
             else "installed: no deployment at the given --prefix",
             f"signed: {path.name}{SIG_SUFFIX} (key {signer})" if signer else "signed: no",
             f"digest: {digest}"]
    return "\n".join(lines)


def against(engine: Engine, path: str | os.PathLike, trust: signature.TrustPolicy) -> delta.Base:
    """``bundle --against PATH``: an inventory carried out (trusted like a bundle: digest, signature), or the
    bundle the target was installed from (a directory, its manifest, or its archive)."""
    path = Path(path)
    if path.is_file() and not archive.is_archive(path) and path.name != signature.MANIFEST:
        data = read(path, trust)
        return delta.base_from_inventory(data, str(path), signature.manifest_digest(path.read_bytes()))
    if not path.exists():
        raise AirgapError(f"--against {path} does not exist",
                          hint="give the target's inventory (invoke inventory there) or the bundle it runs")
    head = signature.read_head(path)
    found = signature.check(head, trust)  # the same trust as verify: signed by a site key when keys are set
    if found.problems:
        raise AirgapError(f"--against {path} is refused: " + "; ".join(f"{p.path} {p.kind}: {p.detail}"
                                                                       for p in found.problems),
                          hint="verify it (invoke verify --public-key ...), or cut against the host's inventory")
    if archive.is_archive(path):
        data, _name, _ = archive.read_manifest(path)
    else:
        data = manifest.load_manifest(manifest.find_bundle_dir(path))
    return delta.base_from_bundle(engine, data, str(path), head.digest)
