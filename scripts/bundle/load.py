"""Load a bundle's images into docker or podman, streamed from the compressed parts.

The parts are read in order, decompressed in this process (zstd or gzip, no ``zstd`` binary needed)
and piped into ``docker load`` / ``podman load``: no uncompressed copy of the archive is written by
us. (``podman load`` buffers stdin to a temporary file itself; that is podman's, not ours.)
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from scripts.bundle.manifest import image_stream, load_manifest
from scripts.core.console import LOG, human_size, progress
from scripts.core.errors import ImageMissing
from scripts.engine.client import Engine
from scripts.engine.images import load_argv, local_ref, missing_images
from scripts.engine.streams import stream_in


def load_images(engine: Engine, bundle: Path, manifest: dict | None = None, *,
                skip_present: bool = True) -> list[str]:
    """Load the bundle's images; returns the refs that were loaded (empty if all were present).

    With ``skip_present`` an engine that already has every image with the manifest's image id is
    left alone (a re-run of install does nothing). In dry-run the command is printed only.
    """
    manifest = manifest or load_manifest(bundle)
    images = manifest["images"]
    refs = [img["ref"] for img in images]
    if skip_present and all(_has_same_image(engine, img) for img in images):
        LOG.info("all %d images of the bundle are already loaded (same image ids): nothing to load", len(refs))
        return []
    argv = load_argv(engine)
    archive = manifest["image_archive"]
    if engine.dry_run:
        print(f"[dry-run] {shlex.join(argv)} < {archive['parts'][0]['path']}... "
              f"({archive['compression']}, {human_size(archive.get('uncompressed_size') or 0)} uncompressed)")
        return refs
    LOG.info("loading %d images (%s) from %s", len(refs), human_size(archive.get("uncompressed_size") or 0), bundle)
    LOG.info("+ %s < decompress(%s)", shlex.join(argv), archive["parts"][0]["path"])

    bar = progress(archive.get("uncompressed_size") or None, "load")
    try:
        with image_stream(bundle, manifest) as stream:
            stdout = stream_in(argv, _Counted(stream, bar), env=engine.env)
    finally:
        bar.close()
    LOG.debug("%s", stdout.strip())
    if engine.is_podman:
        _qualify_podman_names(engine, refs)
    still = missing_images(engine, [local_ref(engine, r) for r in refs])
    if still:
        raise ImageMissing(f"after loading, the engine still lacks: {', '.join(still)}", image=still[0])
    return refs


class _Counted:
    """A readable that moves a progress bar by what is read through it."""

    def __init__(self, stream, bar) -> None:
        self.stream, self.bar = stream, bar

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.bar.update(len(data))
        return data


def _qualify_podman_names(engine: Engine, refs: Sequence[str]) -> None:
    """Podman < 4.4 loads a docker-archive's ``busybox:latest`` as ``localhost/busybox:latest``; compose's
    ``image: busybox:latest`` means ``docker.io/library/busybox:latest``. Re-tag to the Docker Hub name."""
    for ref in refs:
        want = local_ref(engine, ref)
        if engine.image_exists(want):
            continue
        short = f"localhost/{ref}"
        if engine.image_exists(short):
            engine.run(["tag", short, want])
            engine.run(["untag", short, short], check=False)
            LOG.debug("podman loaded %s as %s: tagged %s", ref, short, want)


def _has_same_image(engine: Engine, image: dict) -> bool:
    res = engine.probe(["image", "inspect", "--format", "{{.Id}}", local_ref(engine, image["ref"])])
    if not res.ok:
        return False
    have = res.stdout.strip().removeprefix("sha256:")
    want = str(image.get("id") or "").removeprefix("sha256:")
    return not want or have == want






