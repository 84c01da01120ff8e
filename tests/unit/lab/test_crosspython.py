"""The arm64 interpreter's lab plumbing that needs no build: the guest library root link and the recipe id."""

from __future__ import annotations

import pytest

from scripts.core.errors import AirgapError
from tests.lab import crosspython


@pytest.fixture
def guest(tmp_path, monkeypatch):
    link = tmp_path / "etc/qemu-binfmt/aarch64"
    monkeypatch.setattr(crosspython, "GUEST_ROOT", link)
    userland = tmp_path / "userland"
    userland.mkdir()
    return link, userland


def test_the_guest_root_is_linked_to_the_userland_once(guest):
    link, userland = guest
    crosspython.ensure_guest_root(userland)
    assert link.is_symlink() and link.resolve() == userland.resolve()
    crosspython.ensure_guest_root(userland)            # again: already the lab's link, nothing to do
    assert link.resolve() == userland.resolve()


@pytest.mark.parametrize("what", ["another link", "a directory"])
def test_a_guest_root_the_lab_did_not_make_is_refused_and_kept(guest, tmp_path, what):
    link, userland = guest
    link.parent.mkdir(parents=True)
    if what == "a directory":
        link.mkdir()
        (link / "site-file").write_text("theirs")
    else:
        link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(AirgapError, match=r"aarch64 exists and is not the lab's link"):
        crosspython.ensure_guest_root(userland)
    if what == "a directory":
        assert (link / "site-file").read_text() == "theirs"
    else:
        assert link.readlink() == tmp_path / "elsewhere"


def test_the_interpreter_path_names_its_recipe():
    """A changed recipe (source, userland packages, modules left out) gets a new prefix, never the old build."""
    assert crosspython.PREFIX.name.endswith(crosspython.RECIPE) and len(crosspython.RECIPE) == 10
    assert crosspython.python_path() == crosspython.PREFIX / "bin" / "python3.12"
