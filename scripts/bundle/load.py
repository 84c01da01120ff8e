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
from scripts.core.console import LOG, Counted, human_size, progress
from scripts.core.errors import AirgapError, ImageMissing
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
            stdout = stream_in(argv, Counted(stream, bar), env=engine.env)
    finally:
        bar.close()
    LOG.debug("%s", stdout.strip())
    if engine.is_podman:
        _qualify_podman_names(engine, images)
    still = missing_images(engine, [local_ref(engine, r) for r in refs])
    if still:
        raise ImageMissing(f"after loading, the engine still lacks: {', '.join(still)}", image=still[0])
    check_loaded_ids(engine, images)
    return refs


def check_loaded_ids(engine: Engine, images: Sequence[dict]) -> None:
    """Every image name now resolves to the image id the (verified) manifest pins: a name that still points at
    another image (an older podman keeps its own ``docker.io/...`` name and loads ours as ``localhost/...``; an
    archive that does not hold what its manifest says) is refused, naming both ids."""
    wrong = []
    for img in images:
        want = pinned_ids(img)
        have = image_id(engine, local_ref(engine, img["ref"]))
        if want and have not in want:
            wrong.append(f"{img['ref']} is {have[:12] or 'absent'}, the manifest pins "
                         f"{' or '.join(sorted(w[:12] for w in want))}")
    if wrong:
        raise AirgapError(f"after loading, {len(wrong)} image name(s) do not hold the bundle's image: "
                          f"{'; '.join(wrong)}",
                          hint=f"remove the other image ({engine.runtime} rmi NAME) and run this again; if it "
                               f"repeats, run `invoke verify` on the bundle")


def _qualify_podman_names(engine: Engine, images: Sequence[dict]) -> None:
    """Podman < 4.4 loads a docker-archive's ``busybox:latest`` as ``localhost/busybox:latest``; compose's
    ``image: busybox:latest`` means ``docker.io/library/busybox:latest``. Re-tag to the Docker Hub name when that
    name is absent or holds another image than the manifest's (while the ``localhost/`` one holds it)."""
    for img in images:
        ref, pinned = img["ref"], pinned_ids(img)
        want, short = local_ref(engine, ref), f"localhost/{ref}"
        have = image_id(engine, want)
        if have and (not pinned or have in pinned):
            continue
        loaded = image_id(engine, short)
        if loaded and (not pinned or loaded in pinned):
            engine.run(["tag", short, want])
            engine.run(["untag", short, short], check=False)
            LOG.debug("podman loaded %s as %s: tagged %s", ref, short, want)


def pinned_ids(image: dict) -> set[str]:
    """The ids (no ``sha256:``) an engine may give the manifest's image after a load: the build host's ``.Id``
    and the config digest of the saved archive (they differ when the build host is Docker with the containerd
    image store, where ``.Id`` is the manifest-list digest). Empty: the manifest pins nothing."""
    return {bare for bare in (_bare_id(image.get("id")), _bare_id(image.get("config_id"))) if bare}


def _bare_id(image_id: object) -> str:
    return str(image_id or "").removeprefix("sha256:")


def image_id(engine: Engine, ref: str) -> str:
    """The engine's image id for ``ref`` (without ``sha256:``), "" when it has no such image."""
    res = engine.probe(["image", "inspect", "--format", "{{.Id}}", ref])
    return _bare_id(res.stdout.strip()) if res.ok else ""


def _has_same_image(engine: Engine, image: dict) -> bool:
    have, want = image_id(engine, local_ref(engine, image["ref"])), pinned_ids(image)
    return bool(have) and (not want or have in want)






