"""What `docker load` and `podman load` need for a layer they already have (#16 item 2, the engines' contract the
layer-level delta bundle is built on), measured on the lab's engines:

- a ``docker save`` archive whose member for a present layer is a ZERO-BYTE placeholder loads on both engines into
  the same image (same id, same diff-ids) that runs;
- with the member left out entirely, docker loads it but podman refuses the archive ("Some layer tarfiles are
  missing in the tarball", containers/image's docker-archive reader).

So the delta format is one docker-archive with placeholders for what the target holds.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from scripts.engine.client import Engine
from tests.lab import host as lab

from ..conftest import require_engine

pytestmark = pytest.mark.integration


def _cut(full: Path, out: Path, present: set[str], placeholder: bool) -> int:
    """``full`` rewritten to ``out`` without the bytes of layers in ``present`` (their members zero-byte, or gone);
    returns the bytes left out."""
    left_out = 0
    with tarfile.open(full) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if data is not None and "sha256:" + hashlib.sha256(data).hexdigest() in present:
                left_out += len(data)
                if placeholder:
                    empty = tarfile.TarInfo(member.name)
                    empty.mode = member.mode
                    dst.addfile(empty, io.BytesIO(b""))
                continue
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    return left_out


@pytest.mark.parametrize("placeholder", [True, False], ids=["zero-byte-member", "member-left-out"])
@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_load_of_an_archive_without_the_layers_the_engine_has(runtime, placeholder, tracker, tmp_path):
    engine: Engine = require_engine(runtime)
    base = tracker.image(engine, f"localhost/{tracker.name('dal-delta')}-base:1")
    lab.make_busybox_image(engine, base)
    box = tracker.container(engine, tracker.name("dal-delta"))
    engine.run(["run", "--network", "none", "--name", box, base, "sh", "-c",
                "head -c 300000 /dev/urandom > /new"], timeout=120)
    new = tracker.image(engine, f"localhost/{tracker.name('dal-delta')}-new:1")
    engine.run(["commit", box, new], timeout=120)
    want = engine.inspect_image(new)
    base_layers = set(engine.inspect_image(base)["RootFS"]["Layers"])
    full = tmp_path / "full.tar"
    engine.run(["save", "-o", str(full), *(["--format", "docker-archive"] if engine.is_podman else []), new],
               timeout=300)
    delta = tmp_path / "delta.tar"
    assert _cut(full, delta, base_layers, placeholder) > 0
    assert delta.stat().st_size < full.stat().st_size
    engine.run(["rm", "-f", box], timeout=60)
    engine.run(["image", "rm", new], timeout=60)            # the target holds the base only
    res = engine.run(["load", "-i", str(delta)], check=False, timeout=300)
    if runtime == "podman" and not placeholder:
        assert not res.ok and "missing in the tarball" in res.stderr, res.stderr
        return
    assert res.ok, res.stderr
    got = engine.inspect_image(new)
    assert (got["Id"], got["RootFS"]["Layers"]) == (want["Id"], want["RootFS"]["Layers"])
    ran = engine.run(["run", "--rm", "--network", "none", new, "sh", "-c", "wc -c < /new"], timeout=120)
    assert ran.stdout.strip() == "300000"
    assert json.loads(engine.run(["image", "inspect", new], mutates=False).stdout)[0]["Id"] == want["Id"]
