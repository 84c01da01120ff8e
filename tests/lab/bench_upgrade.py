"""`nox -s bench`, the upgrade case (#16 item 4): what an upgrade from release A to release B carries and how long
its load takes on a host that holds A, for four ways of cutting it, measured side by side IN ONE RUN:

- full bundle: every image of B (what an upgrade carried before delta bundles);
- image-level delta: the images of B the target does not have by name and id (Zarf's ``--differential``);
- ours, layer-level delta (``bundle --against``): those images, with the layers whose whole chain the target holds
  written as zero-byte members (scripts/bundle/delta.py);
- ideal: the layers B needs that the target lacks, each compressed alone with the same zstd level (no tar
  headers, configs or manifest).

Built the way Dify's releases share layers, in a throwaway dockerd (the build box): a base of ``--size-mb`` MB,
api/web/plugin layers of 50/33/17 % of it per release (``:1`` for A, ``:2`` for B, other bytes), and a small image
both releases run unchanged (like redis). The target is a second throwaway dockerd holding A. Sizes are exact;
times are one run on warm caches: compare the ratios.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import zstandard

from scripts.bundle import delta
from scripts.bundle.load import check_loaded_ids, load_images
from scripts.core.console import LOG, human_size, table
from scripts.core.errors import AirgapError
from scripts.engine.client import Engine
from scripts.engine.images import save_argv, save_compressed
from scripts.host import inventory
from tests.lab import host as lab
from tests.lab.benchdata import PREFIX, make_images

LAYER_LEVEL_TARGET = 1.05  # ours <= 1.05 x ideal (issue #16)


@dataclass
class Cut:
    name: str
    refs: list[str]               # the images saved
    nbytes: int = 0               # what is carried (compressed)
    seconds: float = 0.0          # the save (cut) time
    load_seconds: float | None = None


def _save(engine: Engine, refs: Sequence[str], out: Path, rewrite=None) -> tuple[int, float, dict]:
    out.mkdir(parents=True)
    start = time.monotonic()
    archive = save_compressed(engine, refs, out, "images.tar.zst", "zstd", None, 0, rewrite)
    return archive["size"], time.monotonic() - start, archive


def _ideal(engine: Engine, refs: Sequence[str], have: set[str]) -> int:
    """Sum of the zstd-compressed sizes of the distinct layers of ``refs`` not in ``have`` (diff-ids)."""
    total, seen = 0, set()
    with subprocess.Popen(save_argv(engine, refs), stdout=subprocess.PIPE, env={**engine.env, "PATH": "/usr/bin:/bin"}
                          ) as proc, tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for member in tar:
            if not (member.isfile() and member.name.endswith("layer.tar")):
                continue
            digest, size = hashlib.sha256(), 0
            cctx = zstandard.ZstdCompressor(level=3, threads=-1).compressobj()
            reader = tar.extractfile(member)
            while chunk := reader.read(1 << 20):
                digest.update(chunk)
                size += len(cctx.compress(chunk))
            size += len(cctx.flush())
            diff = "sha256:" + digest.hexdigest()
            if diff not in have and diff not in seen:
                seen.add(diff)
                total += size
    if proc.returncode:
        raise AirgapError("bench: the save for the ideal size failed")
    return total


def _release(build: Engine, size_mb: int, work: Path, seed: int, tag: str, common: str) -> list[str]:
    return [*make_images(build, size_mb, work, seed=seed, tag=tag), common]


def run(size_mb: int, workdir: Path | None = None) -> tuple[list[Cut], int, dict]:
    work = Path(tempfile.mkdtemp(prefix="dal-bench-up-", dir=workdir))
    try:
        with lab.Dockerd() as build, lab.Dockerd() as target:
            common = lab.make_busybox_image(build, f"{PREFIX}/redis:6")
            refs_a = _release(build, size_mb, work / "a", 4, "1", common)
            refs_b = _release(build, size_mb, work / "b", 5, "2", common)
            ids_b = {r: build.inspect_image(r)["Id"] for r in refs_b}
            _size, _sec, archive = _save(build, refs_a, work / "release-a")
            a_images = [{"ref": r, "id": build.inspect_image(r)["Id"]} for r in refs_a]
            load_images(target, work / "release-a", {"images": a_images, "image_archive": archive})
            base = delta.base_from_inventory(inventory.collect(target, None), "target", "sha256:-")
            cut = delta.plan(build, refs_b, base)
            if cut.kept != [common] or not cut.placeholders:
                raise AirgapError(f"bench: unexpected cut (kept {cut.kept}, {len(cut.placeholders)} layers)")
            have = {d for d in {d for pairs in cut.layers.values() for d, _ in pairs} if d in cut.placeholders}
            cuts = [Cut("full bundle (every image of B)", refs_b), Cut("image-level delta", cut.saved),
                    Cut("ours: layer-level delta", cut.saved)]
            for c in cuts:
                out = work / c.name.split()[0].strip(":")
                rewrite = delta.LayerFilter(cut.placeholders, work) if c.name.startswith("ours") else None
                c.nbytes, c.seconds, archive = _save(build, c.refs, out, rewrite)
                images = [{"ref": r, "id": ids_b[r]} for r in refs_b]
                target.run(["rmi", *[r for r in refs_b if r != common]], check=False)  # back to A alone
                start = time.monotonic()
                load_images(target, out, {"images": images, "image_archive": archive})
                c.load_seconds = time.monotonic() - start
                check_loaded_ids(target, images)
                LOG.info("bench: %s: %s, load %.1f s", c.name, human_size(c.nbytes), c.load_seconds)
            ideal = _ideal(build, cut.saved, have)
            facts = {"layers_left_out": len(cut.placeholders), "kept": cut.kept,
                     "engine": build.facts().get("server_version")}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return cuts, ideal, facts


def report(cuts: list[Cut], ideal: int, facts: dict, size_mb: int) -> str:
    full, image_level, ours = cuts
    rows = [[c.name, human_size(c.nbytes), f"{c.nbytes / full.nbytes:.3f}", f"{c.nbytes / ideal:.3f}",
             f"{c.seconds:.1f} s", f"{c.load_seconds:.1f} s"] for c in cuts]
    rows.append(["ideal (missing layers, zstd -3 each)", human_size(ideal), f"{ideal / full.nbytes:.3f}", "1.000",
                 "-", "-"])
    checks = [
        ("ours / ideal (bytes)", ours.nbytes / ideal, f"<= {LAYER_LEVEL_TARGET}",
         ours.nbytes / ideal <= LAYER_LEVEL_TARGET),
        ("ours / image-level delta (bytes)", ours.nbytes / image_level.nbytes, "well below 1 (reference)", None),
        ("ours / full bundle (bytes)", ours.nbytes / full.nbytes, "(reference)", None),
        ("our load / full bundle load (time)", ours.load_seconds / full.load_seconds, "(reference)", None),
    ]
    return "\n".join([
        f"bench (upgrade A -> B): base {size_mb} MB shared; api/web/plugin layers new in B; {facts['kept'][0]} "
        f"unchanged; target = a throwaway dockerd holding A ({facts['engine']}); "
        f"{facts['layers_left_out']} layer(s) left out by ours", "",
        table(["cut", "carried", "/ full", "/ ideal", "cut time", "load on A"], rows), "",
        table(["ratio", "value", "target", "result"],
              [[n, f"{v:.3f}", t, "-" if ok is None else "PASS" if ok else "FAIL"] for n, v, t, ok in checks]), "",
        "already-compressed layers: not measured here: the lab's engines (Docker "
        f"{facts['engine']}, podman 4.3) save layers uncompressed; a Docker 25+ OCI save keeps delta at image level "
        "(scripts/bundle/delta.py)"])
