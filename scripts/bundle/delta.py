"""Delta bundles (#16 item 2): carry only what the air-gapped host lacks, at image AND layer level.

``invoke bundle --against inv.json|OLD_BUNDLE`` reads what the target holds (its inventory, or the bundle it was
installed from) and cuts the save stream:

- image level: an image the target already has under the same name with the same id is not saved at all;
- layer level: in the one ``save`` stream of the other images, the member of a layer the target already has is
  written as a ZERO-BYTE placeholder (the tar header stays, the bytes go). ``docker load`` and ``podman load`` of
  the lab's engines accept that for a layer they hold (tests/integration/test_delta_load.py: the same image id and
  diff-ids come out); with the member left out podman refuses the archive, so placeholders it is.

"Already has" is decided on CHAIN ids, not diff-ids: Docker reuses a layer only when the whole chain below it is
present (``layer store Get(ChainID)``); podman would accept the diff-id alone, the chain is the stricter rule for
both. A layer shared by several images of the bundle is a placeholder only when every chain it sits in is present.

Placeholders are applied to the layer members of the docker-archive forms the lab proved (Docker's
``<v1id>/layer.tar``, hashed as it streams to learn its diff-id; podman's ``<diffid>.tar``); an OCI-layout save
(``blobs/sha256/...``, Docker 25+) is carried whole for the images it saves (image level only), and the build
says so. The manifest's ``delta`` records the base and what the target must hold; ``install`` checks it against
the engine BEFORE changing anything (:func:`missing_on_target`) and compares every loaded id with the manifest.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scripts.bundle.load import image_id, pinned_ids
from scripts.core.errors import AirgapError
from scripts.dify.project import DIFY_API_IMAGE
from scripts.engine.client import Engine
from scripts.engine.images import all_images, local_ref
from scripts.engine.savetap import META_TYPES, _name, _pax_records, _size, hub_short

BLOCK = 512
LEGACY_LAYER = re.compile(r"^(?:\./)?[0-9a-f]{64}/layer\.tar$")      # docker save (classic store)
NAMED_LAYER = re.compile(r"^(?:\./)?([0-9a-f]{64})\.tar$")          # podman save --format docker-archive
COPY_CHUNK = 1 << 20


def bare(image_id: object) -> str:
    """An image id without its ``sha256:`` (podman prints none, docker does)."""
    return str(image_id or "").removeprefix("sha256:")


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """The chain id of every layer of an image, bottom up (OCI image spec: ChainID(L0|L1) = sha256(L0 + " " + L1))."""
    out: list[str] = []
    for diff in diff_ids:
        out.append(diff if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {diff}".encode()).hexdigest())
    return out


@dataclass
class Base:
    """What the target holds, from its inventory or from the bundle it runs."""

    kind: str                 # "inventory" or "bundle"
    source: str               # the path given to --against
    digest: str               # the inventory's sha256 / the old bundle manifest's digest
    dify_version: str         # the Dify the target runs ("" when the inventory has no deployment)
    images: dict[str, set[str]] = field(default_factory=dict)  # short name -> ids (bare hex) it has on the target
    chains: set[str] = field(default_factory=set)              # chain ids the target holds
    unknown_layers: list[str] = field(default_factory=list)    # base images whose layers could not be read

    def to_dict(self) -> dict:
        return {"kind": self.kind, "source": self.source, "digest": self.digest, "dify_version": self.dify_version}


def base_from_inventory(data: Mapping, source: str, digest: str) -> Base:
    """An inventory carried out (already read and trusted by :func:`scripts.host.inventory.read`)."""
    deployment = data.get("deployment") or {}
    base = Base("inventory", source, digest, str(deployment.get("dify_version") or ""))
    for image in data["images"]:
        for name in image["names"]:
            base.images.setdefault(hub_short(name), set()).add(bare(image["id"]))  # podman: no "sha256:"
        base.chains.update(chain_ids(image["layers"]))
    if not base.dify_version:  # no install record given: the one dify-api release the engine holds, if one
        tags = {name.rpartition(":")[2].lstrip("v") for name in base.images
                if name.rpartition(":")[0].endswith(DIFY_API_IMAGE)}
        base.dify_version = tags.pop() if len(tags) == 1 else ""
    base.dify_version = _release(base.dify_version)
    return base


def _release(text: str) -> str:
    """A Dify release as a bundle name may carry it (``1.11.3``); anything else (from a file carried in) is
    "not known", never part of a path."""
    return text if re.fullmatch(r"\d+(?:\.\d+){1,3}", text or "") else ""


def base_from_bundle(engine: Engine, manifest: Mapping, source: str, digest: str) -> Base:
    """The bundle the target was installed from: its images by name and id; their layers from THIS engine when it
    still holds them (the build box that made it), else image level only for those (listed in unknown_layers)."""
    base = Base("bundle", source, digest, _release(str(manifest.get("dify_version") or "")))
    for image in manifest["images"]:
        ids = {i for i in (image.get("id"), image.get("config_id")) if i}
        base.images.setdefault(hub_short(image["ref"]), set()).update(bare(i) for i in ids)
        info = next((engine.inspect_image(i) for i in sorted(ids) if engine.image_exists(i)), None)
        if info is None:
            base.unknown_layers.append(image["ref"])
        else:
            base.chains.update(chain_ids((info.get("RootFS") or {}).get("Layers") or []))
    return base


@dataclass
class DeltaPlan:
    base: Base
    kept: list[str]                       # refs the target has with the same id: not saved
    saved: list[str]                      # refs in the save stream
    placeholders: set[str]                # diff-ids to write as zero-byte members
    layers: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # saved ref -> (diff-id, chain id)
    kept_ids: dict[str, set[str]] = field(default_factory=dict)  # kept ref -> every id the base knows it by

    def required(self, written_empty: Iterable[str]) -> dict[str, list[str]]:
        """ref -> the chain ids the target must hold for it, given the layers actually written empty."""
        empty = set(written_empty)
        found = {ref: [c for d, c in pairs if d in empty] for ref, pairs in sorted(self.layers.items())}
        return {ref: chains for ref, chains in found.items() if chains}

    def render(self) -> str:
        lines = [f"  delta against {self.base.kind} {self.base.source} ({self.base.digest[:19]}..., Dify "
                 f"{self.base.dify_version or 'not recorded'}): {len(self.kept)} image(s) already there, not carried; "
                 f"{len(self.placeholders)} layer(s) already there, written empty"]
        if self.base.unknown_layers:
            lines.append(f"  image level only against {', '.join(self.base.unknown_layers)}: this engine no longer "
                         "holds them, so their layers are unknown (an inventory of the target knows them)")
        return "\n".join(lines)


def plan(engine: Engine, refs: Iterable[str], base: Base) -> DeltaPlan:
    """Which images to leave out and which layers to write empty, from this engine's view of ``refs``."""
    kept, saved, chains_of, kept_ids = [], [], {}, {}
    for ref in refs:
        info = engine.inspect_image(ref)
        if bare(info.get("Id")) in base.images.get(hub_short(ref), set()):
            kept.append(ref)
            kept_ids[ref] = set(base.images[hub_short(ref)])
            continue
        saved.append(ref)
        diffs = list((info.get("RootFS") or {}).get("Layers") or [])
        chains_of[ref] = list(zip(diffs, chain_ids(diffs)))
    occurrences: dict[str, list[str]] = {}
    for pairs in chains_of.values():
        for diff, chain in pairs:
            occurrences.setdefault(diff, []).append(chain)
    placeholders = {d for d, chains in occurrences.items() if all(c in base.chains for c in chains)}
    return DeltaPlan(base, kept, saved, placeholders, chains_of, kept_ids)


def pin_kept(records: list[dict], cut: DeltaPlan) -> None:
    """A kept image is not in the save stream, so no ``config_id`` was read for it: pin the id the base knows it by
    (on a build box with Docker's containerd store ``.Id`` is the manifest-list digest, the target's id is not)."""
    for record in records:
        others = sorted(cut.kept_ids.get(record["ref"], set()) - {bare(record.get("id"))})
        if others and not record.get("config_id"):
            record["config_id"] = "sha256:" + others[0]


def summary(cut: DeltaPlan, rewrite: LayerFilter) -> dict:
    """The manifest's ``delta``: the base, what was left out, what the target must hold."""
    return {"base": cut.base.to_dict(), "kept_images": cut.kept, "placeholder_layers": sorted(rewrite.written_empty),
            "required_chains": cut.required(rewrite.written_empty),
            "bytes_left_out": sum(rewrite.written_empty.values()),
            "layer_level": not rewrite.oci,
            **({"note": "OCI-layout save: layers are carried whole (image level only)"} if rewrite.oci else {})}


def render_summary(data: Mapping) -> str:
    return (f"{len(data['kept_images'])} image(s) already on the target left out, {len(data['placeholder_layers'])} "
            f"layer(s) written empty ({data['bytes_left_out']} bytes not carried)"
            + ("" if data["layer_level"] else f"; {data['note']}"))


# --- the stream -------------------------------------------------------------------------------------------------

def _octal_size_header(block: bytes, size: int) -> bytes:
    """``block`` with its size field set (octal) and the header checksum recomputed."""
    head = bytearray(block)
    head[124:136] = f"{size:011o}\0".encode()
    head[148:156] = b" " * 8
    head[148:156] = f"{sum(head):06o}\0 ".encode()
    return bytes(head)


class LayerFilter:
    """Rewrite a docker-archive stream: the members of layers in ``placeholders`` become zero-byte members.

    Feed it the stream in any chunking; it yields the output. Docker's ``<v1id>/layer.tar`` members are spooled to
    ``spool_dir`` while hashed (their name does not tell the diff-id); podman's ``<diffid>.tar`` are decided by name
    and streamed. PAX/GNU headers are held until their member is decided (a PAX size record keeps the member whole).
    """

    def __init__(self, placeholders: set[str], spool_dir: Path) -> None:
        self.placeholders = placeholders
        self.spool_dir = spool_dir
        self.written_empty: dict[str, int] = {}   # diff-id -> bytes left out
        self.oci = False                           # saw an OCI layout (layers under blobs/: carried whole)
        self._buf = bytearray()
        self._pending = bytearray()                # PAX / GNU long-name headers with their data, not yet emitted
        self._pax_size: int | None = None        # a PAX ``size`` record for the next member (>= 8 GiB)
        self._next_name: str | None = None
        self._member: tuple[str, bytes, int] | None = None   # (mode, header, size) of the member being read
        self._left = 0                              # data bytes (with padding) of the current member still to read
        self._spool = None
        self._hash = None

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._buf += data
        while True:
            if self._member is not None:
                if not self._buf:
                    return
                take = min(self._left, len(self._buf))
                chunk, self._buf = bytes(self._buf[:take]), self._buf[take:]
                self._left -= take
                yield from self._member_data(chunk)
                if not self._left:
                    yield from self._member_end()
                continue
            if len(self._buf) < BLOCK:
                return
            block, self._buf = bytes(self._buf[:BLOCK]), self._buf[BLOCK:]
            yield from self._header(block)

    def _header(self, block: bytes) -> Iterator[bytes]:
        if not block.strip(b"\0"):
            yield bytes(self._pending) + block
            self._pending.clear()
            return
        kind = block[156:157]
        size = self._pax_size if self._pax_size is not None and kind not in META_TYPES else _size(block)
        name = self._next_name or _name(block)
        if name.lstrip("./") in ("oci-layout", "index.json") or name.startswith(("blobs/", "./blobs/")):
            self.oci = True
        padded = -(-size // BLOCK) * BLOCK
        if kind in META_TYPES:
            self._member, self._left = ("meta", block, size), padded
            self._pending += block
        else:
            self._next_name = None
            named = NAMED_LAYER.match(name)
            if kind in (b"0", b"\0") and size and self._pax_size is None and (named or LEGACY_LAYER.match(name)):
                mode = ("named:sha256:" + named.group(1)) if named else "spool"
                self._member, self._left = (mode, block, size), padded
                if mode == "spool":
                    self._spool = tempfile.TemporaryFile(dir=self.spool_dir)
                    self._hash = hashlib.sha256()
                elif mode[6:] in self.placeholders:
                    yield bytes(self._pending) + _octal_size_header(block, 0)
                    self._pending.clear()
                    self.written_empty[mode[6:]] = size
                    self._member = ("skip", block, size)
                else:
                    yield bytes(self._pending) + block
                    self._pending.clear()
                    self._member = ("pass", block, size)
            else:
                yield bytes(self._pending) + block
                self._pending.clear()
                self._member, self._left = ("pass", block, size), padded
            self._pax_size = None
        if not self._left:
            yield from self._member_end()

    def _member_data(self, chunk: bytes) -> Iterator[bytes]:
        mode, _block, size = self._member
        if mode == "pass":
            yield chunk
        elif mode == "meta":
            self._pending += chunk
        elif mode == "spool":
            self._spool.write(chunk)
            done = self._spool.tell()
            self._hash.update(chunk[:max(0, len(chunk) - max(0, done - size))])

    def _member_end(self) -> Iterator[bytes]:
        mode, block, size = self._member
        self._member = None
        if mode == "meta":
            padded = -(-size // BLOCK) * BLOCK
            data = bytes(self._pending[len(self._pending) - padded:])[:size]
            if block[156:157] == b"L":
                self._next_name = data.split(b"\0", 1)[0].decode()
            else:
                records = _pax_records(data)
                if b"path" in records:
                    self._next_name = records[b"path"].decode()
                if b"size" in records:  # the member's real size (its ustar field says 0): carried as it is
                    self._pax_size = int(records[b"size"])
            return
        if mode != "spool":
            return
        diff = "sha256:" + self._hash.hexdigest()
        spool, self._spool, self._hash = self._spool, None, None
        with spool:
            if diff in self.placeholders:
                yield bytes(self._pending) + _octal_size_header(block, 0)
                self._pending.clear()
                self.written_empty[diff] = size
                return
            yield bytes(self._pending) + block
            self._pending.clear()
            spool.seek(0)
            yield from iter(lambda: spool.read(COPY_CHUNK), b"")

    def close(self) -> Iterator[bytes]:
        if self._member is not None or self._buf.strip(b"\0"):
            raise AirgapError("the save stream ended inside a tar member: the engine's save was cut short")
        yield bytes(self._pending) + bytes(self._buf)
        self._pending.clear()
        self._buf.clear()


# --- the target side --------------------------------------------------------------------------------------------

def missing_on_target(engine: Engine, manifest: Mapping) -> list[str]:
    """What a delta bundle needs that the engine lacks, one line per image (empty: the base is all there)."""
    delta = manifest.get("delta") or {}
    if not delta:
        return []
    problems = []
    for ref in delta.get("kept_images") or []:
        record = next((i for i in manifest["images"] if i["ref"] == ref), {})
        if image_id(engine, local_ref(engine, ref)) not in pinned_ids(record):
            problems.append(f"{ref} (not carried: the base had it)")
    required = delta.get("required_chains") or {}
    if required:
        held = set()
        for info in all_images(engine):
            held.update(chain_ids((info.get("RootFS") or {}).get("Layers") or []))
        for ref, chains in sorted(required.items()):
            lacking = [c for c in chains if c not in held]
            if lacking:
                problems.append(f"{ref} ({len(lacking)} of its layers were left out as already there)")
    return problems

