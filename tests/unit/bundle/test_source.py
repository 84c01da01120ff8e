"""`invoke bundle --source`: git checkout at the release tag, release tarball (file or URL), safe extraction.

No network: the git repository and the tarballs are built in tmp from the real Dify fixture, and the
URL is served from 127.0.0.1.
"""

from __future__ import annotations

import functools
import http.server
import io
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from scripts.bundle import source
from scripts.core.errors import AirgapError
from tests.conftest import FIXTURES
from tests.lab import standins

VERSION = "1.11.3"


@pytest.fixture(scope="module")
def dify_tree(tmp_path_factory) -> Path:
    """A Dify source tree: docker/ (fixture + bind-mounted files) and a bit of the rest."""
    root = tmp_path_factory.mktemp("src") / f"dify-{VERSION}"
    standins.complete_project(root / "docker", fixture=FIXTURES)
    (root / "api").mkdir()
    (root / "api" / "app.py").write_text("print('not needed by the bundle')\n")
    return root


def git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def repo(dify_tree, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("repo") / "dify"
    subprocess.run(["cp", "-a", str(dify_tree), str(path)], check=True)
    git("init", "-q", "-b", "main", cwd=path)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "release", cwd=path)
    git("tag", VERSION, cwd=path)
    (path / "docker" / "docker-compose.yaml").write_text("services: {}\n")  # main moves on after the tag
    git("commit", "-q", "-am", "later work", cwd=path)
    return path


@pytest.fixture(scope="module")
def tarball(dify_tree, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tgz") / f"{VERSION}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(dify_tree, arcname=dify_tree.name)
    return path


def test_git_checkout_at_the_release_tag_is_cached(repo, tmp_path):
    with source.checkout(str(repo), VERSION, cache=tmp_path / "cache") as docker:
        text = (docker / "docker-compose.yaml").read_text()
        assert f"langgenius/dify-api:{VERSION}" in text, "the tag, not main's later commit"
        assert (docker / ".env.example").is_file() and not (docker.parent / ".git").exists()
        first = docker
    with source.checkout(str(repo), VERSION, cache=tmp_path / "cache") as again:
        assert again == first
    assert not list((tmp_path / "cache").glob("*.partial"))


def test_git_without_the_tag_names_it(repo, tmp_path):
    with pytest.raises(AirgapError, match="no tag or branch '9.9.9'"), \
            source.checkout(str(repo), "9.9.9", cache=tmp_path / "cache"):
        pass
    assert not list((tmp_path / "cache").iterdir())


def test_plain_directory_is_sent_to_project_dir(dify_tree, tmp_path):
    with pytest.raises(AirgapError, match="--project-dir"), source.checkout(str(dify_tree), VERSION,
                                                                            cache=tmp_path / "c"):
        pass


def test_local_tarball_gives_only_docker_dir(tarball, tmp_path):
    with source.checkout(str(tarball), VERSION, cache=tmp_path / "cache") as docker:
        assert (docker / "docker-compose.yaml").is_file()
        assert (docker / "nginx" / "docker-entrypoint.sh").stat().st_mode & 0o111
        assert not (docker.parent / "api").exists()


def test_version_mismatch_is_refused(tarball, tmp_path):
    with pytest.raises(AirgapError, match="holds Dify 1.11.3.*not --version 1.10.0"), \
            source.checkout(str(tarball), "1.10.0", cache=tmp_path / "cache"):
        pass


def test_dry_run_leaves_nothing(tarball, tmp_path):
    with source.checkout(str(tarball), VERSION, dry_run=True, cache=tmp_path / "cache") as docker:
        assert (docker / "docker-compose.yaml").is_file()
    assert not docker.exists() and not (tmp_path / "cache").exists()


def test_tarball_url_is_downloaded(tarball, tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tarball.parent))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://user:s3cret-token@127.0.0.1:{server.server_port}/{tarball.name}"
        assert source.shown(url) == f"http://***@127.0.0.1:{server.server_port}/{tarball.name}"
        with source.checkout(url.replace("user:s3cret-token@", ""), VERSION, cache=tmp_path / "cache") as docker:
            assert (docker / "docker-compose.yaml").is_file()
            assert not list(docker.parent.parent.glob("*.tar.gz")), "the download is not kept"
        with pytest.raises(AirgapError, match="could not download"):
            source.download(f"http://127.0.0.1:{server.server_port}/missing.tar.gz", tmp_path / "x.tgz", retries=1)
    finally:
        server.shutdown()
        server.server_close()


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        compose = tarfile.TarInfo("dify-1.11.3/docker/docker-compose.yaml")
        compose.size = len(b"services: {}\n")
        tar.addfile(compose, io.BytesIO(b"services: {}\n"))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info, b"x"


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("member, message", [
    (_file("dify-1.11.3/docker/../../escape"), "unsafe path"),
    (_file("/etc/cron.d/evil"), "unsafe path"),
    (_link("dify-1.11.3/docker/passwd", "/etc/passwd"), "points outside"),
    (_link("dify-1.11.3/docker/nginx/up", "../../api/app.py"), "points outside"),
    (_link("dify-1.11.3/docker/hard", "dify-1.11.3/api/app.py", tarfile.LNKTYPE), "points outside docker/"),
])
def test_unsafe_tarballs_are_refused(tmp_path, member, message):
    bad = _tar(tmp_path / "bad.tar.gz", [member])
    with pytest.raises(AirgapError, match=message), source.checkout(str(bad), VERSION, cache=tmp_path / "c"):
        pass
    assert not (tmp_path / "escape").exists()


def test_links_inside_docker_dir_are_kept(tmp_path):
    ok = _tar(tmp_path / "ok.tar.gz", [_file("dify-1.11.3/docker/nginx/a.conf"),
                                       _link("dify-1.11.3/docker/b.conf", "nginx/a.conf")])
    with source.checkout(str(ok), VERSION, cache=tmp_path / "c") as docker:
        assert (docker / "b.conf").is_symlink() and (docker / "b.conf").read_text() == "x"


def test_release_tarball_of_every_layout_gives_its_whole_docker_dir(release_dir, tmp_path):
    """1.14+ trees carry envs/**: extracted with the rest; the version check reads the same dify-api tag."""
    from scripts.dify.project import ComposeProject

    version = ComposeProject(release_dir).dify_version
    tree = tmp_path / f"dify-{version}"
    standins.complete_project(tree / "docker", fixture=release_dir)
    path = tmp_path / f"{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tree, arcname=tree.name)
    docker = source.fetch(str(path), version, tmp_path / "work")
    want = sorted(p.relative_to(tree / "docker") for p in (tree / "docker").rglob("*") if p.is_file())
    assert sorted(p.relative_to(docker) for p in docker.rglob("*") if p.is_file()) == want
    assert ComposeProject(docker).env_examples() == ComposeProject(release_dir).env_examples()
    with pytest.raises(AirgapError, match=f"holds Dify {version}"):
        source.fetch(str(path), "0.0.1", tmp_path / "work2")
