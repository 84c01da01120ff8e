"""The bench's images: realistic, partly compressible data (random bytes, base64 text, log lines) as a shared base
layer and per-release app layers built FROM it (tests/lab/bench.py, tests/lab/bench_upgrade.py)."""

from __future__ import annotations

import base64
import os
import random
import shutil
from pathlib import Path

from scripts.core.console import LOG
from scripts.engine.client import Engine
from tests.lab import host as lab

MIB = 1 << 20
DERIVED = (("api", 0.50), ("web", 0.33), ("plugin", 0.17))
PREFIX = "dal-bench"


# --- realistic data ------------------------------------------------------------------------------

_WORDS = ("request", "response", "user", "tenant", "workflow", "node", "model", "token", "embedding", "dataset",
          "document", "segment", "index", "vector", "chunk", "provider", "openai", "plugin", "daemon", "redis",
          "postgres", "celery", "task", "queue", "retry", "timeout", "status", "ok", "error", "warning", "info",
          "debug", "GET", "POST", "/console/api", "/v1/chat-messages", "/files/upload", "app_id", "conversation")


def _line_pool(rng: random.Random, n: int = 65536) -> list[bytes]:
    pool = []
    for _ in range(n):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 12)))
        pool.append(f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
                     f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} {rng.choice(_WORDS).upper()} "
                     f"{words} id={rng.getrandbits(64):016x} took={rng.randint(1, 9999)}ms\n".encode())
    return pool


def write_blob(path: Path, nbytes: int, rng: random.Random, pool: list[bytes]) -> None:
    """Per MiB: 1/4 random bytes, 1/4 base64 text, 1/2 log lines (compresses roughly like a real image)."""
    with open(path, "wb") as fh:
        left = nbytes
        while left > 0:
            block = bytearray(os.urandom(MIB // 4))
            block += base64.b64encode(os.urandom(MIB * 3 // 16))
            text = b"".join(rng.choices(pool, k=MIB // 64))
            block += text[: MIB - len(block)]
            fh.write(block[:left])
            left -= len(block)


def make_images(engine: Engine, size_mb: int, workdir: Path, seed: int = 4, tag: str = "1") -> list[str]:
    """The base image (imported; once: a second release reuses it) and the derived images (``docker build FROM
    base``, one COPY layer each, tagged ``tag``: another tag and seed make another release's app layers)."""
    rng = random.Random(seed)
    pool = _line_pool(rng)
    blob = 16 * MIB
    base = f"{PREFIX}/base:1"
    if not engine.image_exists(base):
        root = lab.busybox_rootfs(workdir / "base-root")
        (root / "opt" / "base").mkdir(parents=True)
        for i in range(max(1, size_mb * MIB // blob)):
            write_blob(root / "opt" / "base" / f"lib-{i:03d}.so", blob, rng, pool)
        LOG.info("bench: importing %s (%d MB)", base, size_mb)
        lab.import_rootfs(engine, root, base, ['CMD ["/bin/sh"]'])
        shutil.rmtree(root)
    builder = Engine("docker", env={**engine.env, "DOCKER_BUILDKIT": "0"})
    refs = []
    for name, frac in DERIVED:
        ctx = workdir / f"ctx-{name}-{tag}"
        (ctx / "layer").mkdir(parents=True)
        for i in range(max(1, int(size_mb * frac) * MIB // blob)):
            write_blob(ctx / "layer" / f"site-packages-{i:03d}.py", blob, rng, pool)
        (ctx / "Dockerfile").write_text(f"FROM {base}\nCOPY layer /opt/{name}\n")
        ref = f"{PREFIX}/{name}:{tag}"
        LOG.info("bench: building %s (+%d MB)", ref, int(size_mb * frac))
        builder.run(["build", "--network", "none", "-q", "-t", ref, str(ctx)], timeout=1800)
        shutil.rmtree(ctx)
        refs.append(ref)
    return refs
