"""Images on an engine: the save and load command lines, local names, what is missing; the compressed save."""

from __future__ import annotations

import gzip
import json
import os
import shlex
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import zstandard

from scripts.core.console import LOG, progress
from scripts.core.files import PartWriter
from scripts.engine.client import Engine, classify
from scripts.engine.savetap import SaveTap, hub_short


def load_argv(engine: Engine) -> list[str]:
    # docker and podman both read the archive from stdin when no --input is given; -q keeps their own
    # per-layer output out of ours (we show one progress bar over the whole stream).
    return [engine.runtime, "load", "-q"] if engine.is_podman else [engine.runtime, "load", "--quiet"]


def local_ref(engine: Engine, ref: str) -> str:
    """How the engine names ``ref`` after a load: podman prefixes short Docker Hub names."""
    if not engine.is_podman:
        return ref
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"docker.io/{ref}" if "/" in ref else f"docker.io/library/{ref}"


def missing_images(engine: Engine, refs: Sequence[str]) -> list[str]:
    """The refs the engine does not have (checked one by one, read-only)."""
    return [ref for ref in refs if not engine.image_exists(ref)]


INSPECT_BATCH = 50


def all_images(engine: Engine) -> list[dict]:
    """``image inspect`` of every image the engine holds, each once (read-only: list, then inspect in batches)."""
    listed = engine.run(["image", "ls", "-q", "--no-trunc"], mutates=False, timeout=120).stdout.split()
    ids = list(dict.fromkeys(listed))
    found: list[dict] = []
    for start in range(0, len(ids), INSPECT_BATCH):
        res = engine.run(["image", "inspect", *ids[start:start + INSPECT_BATCH]], mutates=False, timeout=300)
        found += json.loads(res.stdout or "[]")
    return found


READ_CHUNK = 1 << 20


def save_argv(engine: Engine, refs: Sequence[str]) -> list[str]:
    """ONE save of all images, to stdout (podman: a multi-image docker-archive)."""
    if engine.is_podman:
        return ["podman", "save", "--format", "docker-archive", "--multi-image-archive", *refs]
    return ["docker", "save", *refs]


class StreamFilter(Protocol):
    """Rewrites the save stream on its way to the compressor (bundle.delta.LayerFilter)."""

    def feed(self, data: bytes) -> Iterable[bytes]: ...

    def close(self) -> Iterable[bytes]: ...


def save_compressed(engine: Engine, refs: Sequence[str], directory: Path, name: str, compression: str,
                    chunk_size: int | None, estimate: int, rewrite: StreamFilter | None = None) -> dict:
    """``save`` all refs in one stream, compress on the fly into (parts of) ``directory/name``.

    ``config_ids`` in the answer: each image's config digest, read from the stream's manifest.json. ``rewrite``
    sees the stream before the compressor (``uncompressed_size`` counts what it let through). No refs: an empty
    tar (a delta bundle whose every image is already on the target)."""
    argv = save_argv(engine, refs) if refs else ["true"]
    tap = SaveTap()
    LOG.info("+ %s | %s", shlex.join(argv) if refs else "(no image to save: an empty archive)", compression)
    writer = PartWriter(directory, name, chunk_size)
    env = {**os.environ, **engine.env}
    raw = 0
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        bar = progress(estimate or None, f"save+{compression}")
        try:
            if compression == "zstd":
                cctx = zstandard.ZstdCompressor(level=3, threads=-1)
                sink = cctx.stream_writer(writer, closefd=False)
            else:
                sink = gzip.GzipFile(fileobj=writer, mode="wb", compresslevel=6, mtime=0)
            with sink:
                def put(out: bytes) -> None:
                    nonlocal raw
                    sink.write(out)
                    tap.feed(out)
                    raw += len(out)
                try:
                    for block in iter(lambda: proc.stdout.read(READ_CHUNK), b""):
                        for out in (rewrite.feed(block) if rewrite else (block,)):
                            put(out)
                        bar.update(len(block))
                    for out in (rewrite.close() if rewrite else ()):
                        put(out)
                    if not refs:
                        put(bytes(1024))  # the end-of-archive blocks of an empty tar
                except BaseException:
                    proc.kill()  # the save blocks on a full pipe nobody reads: its stderr below would never end
                    raise
        finally:
            bar.close()
            stderr = proc.stderr.read().decode(errors="replace")
            proc.wait()
            writer.close()
    if proc.returncode:
        raise classify(argv, proc.returncode, stderr)
    return {"format": "docker-archive", "compression": compression, "size": writer.size,
            "sha256": writer.sha256, "uncompressed_size": raw, "parts": writer.parts,
            "config_ids": tap.config_ids()}


def add_config_ids(records: list[dict], config_ids: dict[str, str]) -> None:
    """Each image record's ``config_id``, the digest another engine calls it after ``load`` (see
    :mod:`scripts.engine.savetap`); records the save stream did not name keep ``id`` only."""
    for record in records:
        config = config_ids.get(hub_short(record["ref"]))
        if config:
            record["config_id"] = config
