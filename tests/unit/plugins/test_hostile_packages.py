"""Hostile .difypkg inputs: YAML alias bombs, links, and dependency files that would make resolution
build or fetch the plugin's own code, or follow the plugin's own resolver configuration.

Each test asserts the refusal names the entry, line or file AND that a sentinel tree outside the
target is exactly as before (docs/hostile-inputs.md). No network: the index is a file:// directory.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import os
import subprocess
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from scripts.plugins import package, wheels
from scripts.plugins import repackage as plugins
from scripts.plugins.common import MissingWheels, PluginError, UnsafeArchive
from scripts.plugins.daemon import Target
from tests.support import hostile

MANIFEST = b"author: someone\nname: tool\nversion: 0.0.1\n"


def _zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def _alias_bomb(levels: int = 10) -> bytes:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    lines += [f"author: *a{levels - 1}", "name: tool", "version: 0.0.1"]
    return "\n".join(lines).encode() + b"\n"


# --- manifest.yaml --------------------------------------------------------------------------------

def test_yaml_alias_bomb_is_refused_quickly(tmp_path: Path):
    """Loading it is cheap (shared references); using ``author`` would build 9**10 strings. Refused first."""
    guard, before = hostile.sentinel(tmp_path)
    pkg = _zip(tmp_path / "bomb.difypkg", [("manifest.yaml", _alias_bomb())])
    work = tmp_path / "work"
    package.safe_extract(pkg, work)
    started = time.monotonic()
    with pytest.raises(UnsafeArchive, match=r"bomb\.difypkg: manifest\.yaml refused: anchor/alias 'a0' at line 1"):
        package.read_manifest(work, pkg.name)
    assert time.monotonic() - started < 2
    assert hostile.state(guard) == before


def test_oversized_or_deeply_nested_manifest_yaml_is_refused(tmp_path: Path):
    guard, before = hostile.sentinel(tmp_path)
    big = tmp_path / "big.yaml"
    big.write_bytes(MANIFEST + b"#" * 5000 + b"\n")
    with pytest.raises(UnsafeArchive, match=r"pkg: big\.yaml is \d+ bytes, over the 1000-byte limit: refused unread"):
        package.load_untrusted_yaml(big, "pkg", max_size=1000)
    deep = tmp_path / "manifest.yaml"
    deep.write_bytes(MANIFEST + b"x: " + b"[" * 200 + b"]" * 200 + b"\n")
    with pytest.raises(UnsafeArchive, match=r"manifest\.yaml refused: more than .* 64 levels"):
        package.read_manifest(tmp_path, "deep.difypkg")
    assert hostile.state(guard) == before


def test_plain_manifest_still_reads(tmp_path: Path):
    (tmp_path / "manifest.yaml").write_bytes(MANIFEST + b"meta:\n  runner: {language: python, version: '3.12'}\n")
    assert package.read_manifest(tmp_path).ref == "someone/tool:0.0.1"


# --- zip members ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, match", [
    ("../sentinel/secret", r"'\.\./sentinel/secret' has a '\.\.' component"),
    ("/tmp/../sentinel/secret", r"'/tmp/\.\./sentinel/secret' is an absolute path"),
])
def test_zip_names_out_of_the_work_folder_are_refused(tmp_path: Path, name: str, match: str):
    guard, before = hostile.sentinel(tmp_path)
    pkg = _zip(tmp_path / "bad.difypkg", [("manifest.yaml", MANIFEST), (name, b"PWNED\n")])
    with pytest.raises(UnsafeArchive, match=match):
        package.safe_extract(pkg, tmp_path / "work")
    assert hostile.state(guard) == before


def test_zip_symlink_entry_is_refused(tmp_path: Path):
    guard, before = hostile.sentinel(tmp_path)
    info = zipfile.ZipInfo("_assets/link")
    info.create_system, info.external_attr = 3, (0o120777 << 16)
    with zipfile.ZipFile(tmp_path / "link.difypkg", "w") as zf:
        zf.writestr("manifest.yaml", MANIFEST)
        zf.writestr(info, b"../../sentinel/secret")
    with pytest.raises(UnsafeArchive, match=r"'_assets/link' is a symbolic link"):
        package.safe_extract(tmp_path / "link.difypkg", tmp_path / "work")
    assert hostile.state(guard) == before


def test_extraction_never_writes_through_a_link_already_in_the_work_folder(tmp_path: Path):
    guard, before = hostile.sentinel(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "_assets").symlink_to(guard)
    pkg = _zip(tmp_path / "p.difypkg", [("manifest.yaml", MANIFEST), ("_assets/secret", b"PWNED\n")])
    with pytest.raises(UnsafeArchive, match=r"member '_assets/secret' goes through the link '_assets'"):
        package.safe_extract(pkg, work)
    assert hostile.state(guard) == before


# --- dependency resolution ------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    "./evil", "../evil", "/abs/evil", "-e .", "--editable ./evil", "-r /etc/passwd", "-c other.txt",
    "git+https://example.invalid/evil.git", "https://example.invalid/evil-1.0.tar.gz",
    "evil @ file:///tmp/evil", "evil @ git+https://example.invalid/evil.git", "evil-1.0-py3-none-any.whl",
    "evil.tar.gz",
])
def test_local_vcs_and_url_requirements_are_refused_by_name(line: str):
    with pytest.raises(PluginError, match=r"p\.difypkg: requirements\.txt asks for what is not a release on the "
                                          r"package index, refused[^\n]*\n  " + _escaped(line)):
        wheels.check_requirements(f"requests==2.32.3\n{line}\n", "p.difypkg", "requirements.txt")


def _escaped(line: str) -> str:
    return "'" + "".join("\\" + c if c in ".+*?[](){}|^$\\" else c for c in line) + "'"


def test_plain_requirements_pass():
    wheels.check_requirements("requests[socks]>=2.31 ; python_version >= '3.9'  # http\n"
                              "orjson==3.10.0 --hash=sha256:abc \\\n  --hash=sha256:def\n--pre\n\n# c\n",
                              "p", "requirements.txt")


def _evil_project(plugin: Path, sentinel: Path) -> None:
    """A local project whose in-tree build backend writes into the sentinel when it runs."""
    evil = plugin / "evil"
    evil.mkdir(parents=True)
    (evil / "pyproject.toml").write_text('[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                                         'backend-path = ["."]\n[project]\nname = "evil"\nversion = "1.0"\n'
                                         'dynamic = ["dependencies"]\n')
    (evil / "backend.py").write_text(f"open({str(sentinel / 'PWNED')!r}, 'w').write('plugin code ran')\n")


def test_a_local_project_requirement_is_refused_before_any_build(tmp_path: Path):
    guard, before = hostile.sentinel(tmp_path)
    plugin = tmp_path / "plugin"
    _evil_project(plugin, guard)
    (plugin / "requirements.txt").write_text("./evil\n")
    with pytest.raises(PluginError, match=r"'\./evil': a local path"):
        wheels.resolve(plugin, Target("3.12", "amd64"), "evil.difypkg", index_url=(tmp_path / "index").as_uri())
    assert hostile.state(guard) == before


@pytest.mark.parametrize("pyproject, match", [
    ('[project]\nname = "p"\nversion = "1"\ndynamic = ["dependencies"]\n', "declares dynamic dependencies"),
    ('[project]\nname = "p"\nversion = "1"\ndependencies = ["evil"]\n[tool.uv.sources]\nevil = { path = "evil" }\n',
     r"\[tool\.uv\.sources\] points outside the package index, refused: evil = \{'path': 'evil'\}"),
    ('[project]\nname = "p"\nversion = "1"\ndependencies = ["evil @ file:///x"]\n',
     r"pyproject\.toml asks for .*\n  'evil @ file:///x': a direct URL"),
])
def test_pyproject_that_needs_a_build_or_a_local_source_is_refused(tmp_path: Path, pyproject: str, match: str):
    guard, before = hostile.sentinel(tmp_path)
    plugin = tmp_path / "plugin"
    _evil_project(plugin, guard)
    (plugin / "pyproject.toml").write_text(pyproject)
    with pytest.raises(PluginError, match=match):
        wheels.resolve(plugin, Target("3.12", "amd64"), "p.difypkg", index_url=(tmp_path / "index").as_uri())
    assert hostile.state(guard) == before


def _wheel_index(root: Path) -> str:
    """A PEP 503 file:// index holding one pure wheel, tinydep 1.0."""
    name = "tinydep-1.0-py3-none-any.whl"
    files = {"tinydep/__init__.py": b"",
             "tinydep-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinydep\nVersion: 1.0\n",
             "tinydep-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\n"
                                            b"Tag: py3-none-any\n"}
    record = "".join(f"{k},sha256={base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b'=').decode()},"
                     f"{len(v)}\n" for k, v in files.items()) + "tinydep-1.0.dist-info/RECORD,,\n"
    (root / "tinydep").mkdir(parents=True)
    with zipfile.ZipFile(root / "tinydep" / name, "w") as zf:
        for k, v in files.items():
            zf.writestr(k, v)
        zf.writestr("tinydep-1.0.dist-info/RECORD", record)
    (root / "tinydep" / "index.html").write_text(f'<html><body><a href="{name}">{name}</a></body></html>\n')
    return root.as_uri()


@contextmanager
def _sdist_index(root: Path, sentinel: Path) -> Iterator[str]:
    """An HTTP simple index (PEP 503, the layout PyPI serves) whose only project, ``evil 1.0``, is an sdist
    with an in-tree build backend that writes into the sentinel the moment any build step imports it."""
    src = root / "src" / "evil-1.0"
    src.mkdir(parents=True)
    (src / "pyproject.toml").write_text('[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                                        'backend-path = ["."]\n[project]\nname = "evil"\nversion = "1.0"\n'
                                        'dynamic = ["dependencies"]\n')  # uv must ask the backend
    (src / "backend.py").write_text(f"open({str(sentinel / 'PWNED')!r}, 'w').write('sdist code ran')\n")
    (root / "simple" / "evil").mkdir(parents=True)
    with tarfile.open(root / "simple" / "evil" / "evil-1.0.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="evil-1.0")
    (root / "simple" / "evil" / "index.html").write_text(
        '<html><body><a href="evil-1.0.tar.gz">evil-1.0.tar.gz</a></body></html>\n')
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - the stdlib's signature
        pass


def test_an_sdist_only_dependency_is_named_and_never_built(tmp_path: Path):
    """#13: a plain-name requirement that exists only as an sdist whose build runs code: named as "sdist only",
    the build code never runs (the control run, an ordinary resolution, shows that it would have)."""
    guard, before = hostile.sentinel(tmp_path)
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "requirements.txt").write_text("evil==1.0\n")
    with _sdist_index(tmp_path / "index", guard) as index:
        with pytest.raises(MissingWheels, match=r"evil==1\.0: sdist only") as caught:
            wheels.resolve(plugin, Target("3.12", "amd64"), "evil.difypkg", index_url=index)
        assert dict(caught.value.missing) == {"evil==1.0": "sdist only (no wheels published)"}
        assert hostile.state(guard) == before, "the sdist's build code ran"
        control = subprocess.run([wheels.uv_bin(), "pip", "compile", str(plugin / "requirements.txt"), "--index-url",
                                  index, "--no-cache", "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                                 env={**os.environ, "UV_NO_CONFIG": "1", "UV_PYTHON_DOWNLOADS": "never"}, timeout=120)
    assert (guard / "PWNED").is_file(), f"control: an ordinary resolution builds the sdist\n{control.stderr}"


def test_the_plugins_own_uv_config_is_ignored_when_resolving(tmp_path: Path, monkeypatch):
    """Run in the plugin folder, uv honoured its uv.toml (here: a cache dir inside the sentinel)."""
    monkeypatch.delenv("UV_CACHE_DIR", raising=False)
    monkeypatch.delenv("UV_NO_CONFIG", raising=False)
    guard, before = hostile.sentinel(tmp_path)
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "requirements.txt").write_text("tinydep\n")
    (plugin / "uv.toml").write_text(f'cache-dir = "{guard / "cache"}"\nindex-url = "http://127.0.0.1:9/simple"\n')
    (plugin / ".python-version").write_text("3.7\n")
    pins = wheels.resolve(plugin, Target("3.12", "amd64"), "p.difypkg", index_url=_wheel_index(tmp_path / "index"))
    assert [p.line for p in pins] == ["tinydep==1.0"]
    assert hostile.state(guard) == before


def test_the_plugins_own_resolver_config_is_not_shipped(tmp_path: Path):
    pkg = _zip(tmp_path / "p.difypkg", [("manifest.yaml", MANIFEST), ("main.py", b"x"), ("uv.toml", b"x"),
                                        (".python-version", b"3.7\n"), ("pip.conf", b"[global]\n"),
                                        (".venv/pip.conf", b"[global]\n"), ("requirements.txt", b"tinydep\n")])
    work = tmp_path / "work"
    original = package.safe_extract(pkg, work)
    notes = plugins.drop_resolver_config(work)
    assert [n.split(":")[0] for n in notes] == ["removed uv.toml", "removed .python-version", "removed pip.conf",
                                                "removed .venv"]
    shipped = [name for name, _ in plugins._entries_in_order(work, original, set())]
    assert shipped == ["manifest.yaml", "main.py", "requirements.txt"]
    assert sorted(os.listdir(work)) == ["main.py", "manifest.yaml", "requirements.txt"]
