"""bundle.load planning without an engine: what is skipped, what a dry run prints, podman's names.

A stand-in engine records commands (command construction only; loading itself is tested on real engines
in tests/integration/test_install.py and test_bundle.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scripts.bundle.load import _qualify_podman_names, check_loaded_ids, load_images
from scripts.core.errors import AirgapError


@dataclass
class _Res:
    ok: bool
    stdout: str = ""


@dataclass
class RecordingEngine:
    runtime: str = "docker"
    images: dict[str, str] = field(default_factory=dict)  # local ref -> image id
    dry_run: bool = False
    env: dict = field(default_factory=dict)
    ran: list[list[str]] = field(default_factory=list)

    @property
    def is_podman(self) -> bool:
        return self.runtime == "podman"

    def probe(self, argv):
        ref = argv[-1]
        return _Res(ref in self.images, f"sha256:{self.images.get(ref, '')}\n")

    def image_exists(self, ref: str) -> bool:
        return ref in self.images

    def run(self, argv, check=True, **_):
        self.ran.append(list(argv))
        if argv[0] == "tag":
            self.images[argv[2]] = self.images[argv[1]]
        return _Res(True)


MANIFEST = {"images": [{"ref": "langgenius/dify-api:1.16.0", "id": "sha256:aaa"},
                       {"ref": "busybox:latest", "id": "sha256:bbb"}],
            "image_archive": {"compression": "zstd", "uncompressed_size": 3 << 20,
                              "parts": [{"path": "images.tar.zst.part-000"}]}}


def test_every_image_present_with_the_manifests_id_loads_nothing(tmp_path: Path):
    engine = RecordingEngine(images={"langgenius/dify-api:1.16.0": "aaa", "busybox:latest": "bbb"})
    assert load_images(engine, tmp_path, MANIFEST) == []
    assert engine.ran == []


def test_an_image_with_another_id_makes_it_load_and_a_dry_run_only_prints(tmp_path: Path, capsys):
    engine = RecordingEngine(images={"langgenius/dify-api:1.16.0": "OTHER", "busybox:latest": "bbb"},
                             dry_run=True)
    assert load_images(engine, tmp_path, MANIFEST) == ["langgenius/dify-api:1.16.0", "busybox:latest"]
    out = capsys.readouterr().out
    assert "[dry-run] docker load --quiet < images.tar.zst.part-000" in out and "3.0 MiB uncompressed" in out
    assert engine.ran == []


def test_podman_short_names_are_checked_under_their_docker_hub_name(tmp_path: Path):
    engine = RecordingEngine(runtime="podman", images={"docker.io/langgenius/dify-api:1.16.0": "aaa",
                                                       "docker.io/library/busybox:latest": "bbb"})
    assert load_images(engine, tmp_path, MANIFEST) == []


def test_podman_localhost_names_are_retagged_to_the_docker_hub_name():
    engine = RecordingEngine(runtime="podman", images={"localhost/busybox:latest": "bbb",
                                                       "docker.io/langgenius/dify-api:1.16.0": "aaa"})
    _qualify_podman_names(engine, MANIFEST["images"])
    assert engine.ran == [["tag", "localhost/busybox:latest", "docker.io/library/busybox:latest"],
                          ["untag", "localhost/busybox:latest", "localhost/busybox:latest"]]


def test_podman_retags_over_an_older_image_of_the_same_name_only_to_the_manifests_id():
    engine = RecordingEngine(runtime="podman", images={"docker.io/library/busybox:latest": "OLD",
                                                       "localhost/busybox:latest": "bbb",
                                                       "docker.io/langgenius/dify-api:1.16.0": "OLD2",
                                                       "localhost/langgenius/dify-api:1.16.0": "NOT-THE-PIN"})
    _qualify_podman_names(engine, MANIFEST["images"])
    assert engine.images["docker.io/library/busybox:latest"] == "bbb"          # ours, loaded as localhost/
    assert engine.images["docker.io/langgenius/dify-api:1.16.0"] == "OLD2"     # a localhost/ image not pinned: left
    with pytest.raises(AirgapError, match=r"langgenius/dify-api:1.16.0 is OLD2, the manifest pins aaa") as caught:
        check_loaded_ids(engine, MANIFEST["images"])
    assert "busybox" not in str(caught.value) and "rmi" in caught.value.hint


def test_after_loading_every_name_must_hold_the_pinned_id():
    engine = RecordingEngine(images={"langgenius/dify-api:1.16.0": "aaa", "busybox:latest": "bbb"})
    check_loaded_ids(engine, MANIFEST["images"])                                  # all as pinned: passes
    engine.images["busybox:latest"] = "ccc"
    with pytest.raises(AirgapError, match=r"1 image name\(s\).*busybox:latest is ccc, the manifest pins bbb"):
        check_loaded_ids(engine, MANIFEST["images"])
    del engine.images["busybox:latest"]
    with pytest.raises(AirgapError, match=r"busybox:latest is absent"):
        check_loaded_ids(engine, MANIFEST["images"])
    check_loaded_ids(engine, [{"ref": "busybox:latest"}, MANIFEST["images"][0]])  # no id pinned: nothing to compare


def test_a_build_host_on_dockers_containerd_store_pins_the_config_digest_too():
    """Docker's containerd image store calls an image by its manifest-list digest (``.Id`` at bundle time);
    podman and Docker's classic store call the loaded image by its config digest (``config_id``, read from the
    saved stream): either is the manifest's image, anything else is refused naming both."""
    images = [{"ref": "busybox:latest", "id": "sha256:index", "config_id": "sha256:config"}]
    for loaded_as in ("config", "index"):
        engine = RecordingEngine(images={"busybox:latest": loaded_as})
        check_loaded_ids(engine, images)
        assert load_images(engine, Path("/nonexistent"), {**MANIFEST, "images": images}) == []  # present: no load
    engine = RecordingEngine(images={"busybox:latest": "other"})
    with pytest.raises(AirgapError, match=r"busybox:latest is other, the manifest pins config or index"):
        check_loaded_ids(engine, images)
