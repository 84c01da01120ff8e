"""A tiny, valid bundle directory (no real images, no engine): the input of the bundle unit tests."""

from __future__ import annotations

import json
from pathlib import Path

from scripts.bundle import manifest as mf

NAME = "dify-0.0.0-airgap-amd64"


def build_bundle(parent: Path, files: dict[str, bytes] | None = None,
                 parts: tuple[str, ...] = ("images.tar.zst",), **extra) -> Path:
    """``parent/NAME`` with ``files`` (``parts`` of them the image archive), manifest.json and SHA256SUMS.
    ``extra`` adds manifest keys (``chunk_size=...`` as the builder records it)."""
    files = files if files is not None else {
        "images.tar.zst": b"\x28\xb5\x2f\xfd" + bytes(range(256)) * 8,
        "docker/docker-compose.yaml": b"services:\n  api:\n    image: langgenius/dify-api:0.0.0\n",
        "docker/.env.example": b"EXPOSE_NGINX_PORT=80\n",
        "install.sh": b"#!/bin/sh\necho install\n",
    }
    root = parent / NAME
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if (root / "install.sh").is_file():
        (root / "install.sh").chmod(0o755)
    entries = [mf.file_entry(root, p) for p in mf.walk_files(root)]
    part_entries = [e for e in entries if e["path"] in parts]
    manifest = {
        "format_version": mf.FORMAT_VERSION, "toolkit_version": "0.0.0-test", "dify_version": "0.0.0",
        "platform": "linux/amd64", "created": "2024-01-01T00:00:00Z", "runtime": "docker",
        "profiles": ["core"], "vector_stores": ["weaviate"], "target_python": "3.12",
        "images": [{"ref": "langgenius/dify-api:0.0.0", "architecture": "amd64", "size": 1234,
                    "services": ["api"]}],
        "image_archive": {"compression": "zstd", "size": sum(e["size"] for e in part_entries),
                          "parts": part_entries},
        "files": entries,
        **extra,
    }
    write_manifest(root, manifest)
    return root


def write_manifest(root: Path, manifest: dict) -> None:
    """manifest.json then SHA256SUMS (which lists the manifest's own hash), as the builder does."""
    (root / mf.MANIFEST).write_text(json.dumps(manifest, indent=2))
    mf.write_sums(root, manifest["files"])


def forge(root: Path, rel: str, data: bytes) -> None:
    """What a forger does: replace ``rel``, then recompute manifest.json and SHA256SUMS so that every hash matches
    again (a signature already there is left as it was)."""
    (root / rel).write_bytes(data)
    manifest = json.loads((root / mf.MANIFEST).read_text())
    fresh = mf.file_entry(root, root / rel)
    manifest["files"] = [fresh if e["path"] == rel else e for e in manifest["files"]]
    parts = manifest["image_archive"]["parts"]
    manifest["image_archive"]["parts"] = [fresh if p["path"] == rel else p for p in parts]
    manifest["image_archive"]["size"] = sum(p["size"] for p in manifest["image_archive"]["parts"])
    write_manifest(root, manifest)
