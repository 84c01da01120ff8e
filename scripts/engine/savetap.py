"""Read ``manifest.json`` out of a ``docker save`` / ``podman save`` tar stream as it flows past.

The save stream is compressed into the bundle on the fly and never written uncompressed, so the image
config digests it names (``"Config": "blobs/sha256/HEX"`` or ``"HEX.json"``) are picked out of the stream
itself: only tar headers are parsed, the layers are skipped by size. Those digests are what another engine
calls the image after ``load`` (podman; Docker's classic store), where Docker's containerd image store names
the image by its manifest-list digest instead (``docker image inspect .Id`` on the build host); the
manifest records both and ``load`` accepts either.

A stream that is not a tar as expected makes the tap give up quietly (no digests recorded): it never breaks
the save it watches.
"""

from __future__ import annotations

import json

BLOCK = 512
#: what is captured at most: a save's manifest.json is a few KiB per image; PAX/GNU long-name records less
CAPTURE_CAP = 16 << 20
META_TYPES = (b"x", b"L")  # a PAX extended header / a GNU long name for the NEXT member


class SaveTap:
    """Feed it every block of a save stream; :meth:`config_ids` then maps image names to config digests."""

    def __init__(self, wanted: str = "manifest.json") -> None:
        self.wanted = wanted
        self.captured: bytes | None = None
        self.broken = False
        self._header = bytearray()
        self._skip = 0  # bytes of the current member (with its padding) still to pass
        self._keep = 0  # of those, how many to keep
        self._kept: bytearray | None = None
        self._kind = b""  # what is being kept: META_TYPES or b"0" for the wanted file
        self._next_name: str | None = None
        self._next_size: int | None = None

    def feed(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            self._feed(memoryview(data))
        except (ValueError, UnicodeDecodeError):
            self.broken = True

    def _feed(self, data: memoryview) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._skip:
                take = min(self._skip, n - i)
                if self._kept is not None and self._keep:
                    keep = min(self._keep, take)
                    self._kept += data[i:i + keep]
                    self._keep -= keep
                i += take
                self._skip -= take
                if not self._skip:
                    self._member_done()
                continue
            take = min(BLOCK - len(self._header), n - i)
            self._header += data[i:i + take]
            i += take
            if len(self._header) == BLOCK:
                self._on_header(bytes(self._header))
                self._header.clear()

    def _on_header(self, block: bytes) -> None:
        if not block.strip(b"\0"):
            return  # the end-of-archive blocks
        kind = block[156:157]
        size = _size(block) if self._next_size is None or kind in META_TYPES else self._next_size
        name = self._next_name or _name(block)
        if kind not in META_TYPES:
            self._next_name = self._next_size = None
        self._skip = -(-size // BLOCK) * BLOCK
        self._kept, self._keep, self._kind = None, 0, kind
        if size <= CAPTURE_CAP and (kind in META_TYPES or (name.lstrip("./") == self.wanted
                                                          and kind in (b"0", b"\0"))):
            self._kept, self._keep = bytearray(), size
        if not self._skip:
            self._member_done()

    def _member_done(self) -> None:
        kept, self._kept = self._kept, None
        if kept is None:
            return
        if self._kind == b"L":
            self._next_name = bytes(kept).split(b"\0", 1)[0].decode()
        elif self._kind == b"x":
            records = _pax_records(bytes(kept))
            if b"path" in records:
                self._next_name = records[b"path"].decode()
            if b"size" in records:
                self._next_size = int(records[b"size"])
        else:
            self.captured = bytes(kept)

    def config_ids(self) -> dict[str, str]:
        """``{image name as the save named it, Docker Hub prefixes dropped: "sha256:HEX"}``; empty when unread."""
        if self.broken or self.captured is None:
            return {}
        try:
            entries = json.loads(self.captured)
        except ValueError:
            return {}
        out: dict[str, str] = {}
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            digest = _config_digest(str(entry.get("Config") or ""))
            for tag in entry.get("RepoTags") or []:
                if digest and isinstance(tag, str):
                    out[hub_short(tag)] = digest
        return out


def hub_short(ref: str) -> str:
    """``docker.io/library/busybox:latest`` -> ``busybox:latest`` (how compose files and manifests name it)."""
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/", "index.docker.io/"):
        if ref.startswith(prefix):
            return ref[len(prefix):]
    return ref


def _config_digest(config: str) -> str:
    hexpart = config.rsplit("/", 1)[-1].removesuffix(".json")
    if len(hexpart) == 64 and all(c in "0123456789abcdef" for c in hexpart):
        return f"sha256:{hexpart}"
    return ""


def _size(block: bytes) -> int:
    field = block[124:136]
    if field[0] & 0x80:  # base-256 (GNU) for members of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    text = field.rstrip(b"\0 ").lstrip(b" ")
    return int(text, 8) if text else 0


def _name(block: bytes) -> str:
    name = block[0:100].split(b"\0", 1)[0].decode()
    if block[257:262] == b"ustar":
        prefix = block[345:500].split(b"\0", 1)[0].decode()
        if prefix:
            name = f"{prefix}/{name}"
    return name


def _pax_records(records: bytes) -> dict[bytes, bytes]:
    """A PAX header's ``LEN key=value\\n`` records."""
    i, out = 0, {}
    while i < len(records) and records[i:i + 1] != b"\0":
        space = records.index(b" ", i)
        length = int(records[i:space])
        if length <= space - i:
            raise ValueError("a PAX record shorter than its length field")
        key, _, value = records[space + 1:i + length - 1].partition(b"=")
        out[key] = value
        i += length
    return out
