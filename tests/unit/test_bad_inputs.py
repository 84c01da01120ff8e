"""No traceback, ever, on bad input: EVERY task of tasks.py over a table of bad paths and files.

The tasks are enumerated from tasks.py's invoke collection, so a new task is covered without editing this file;
each path-like option (positional or flag) is classified by name into a role (a bundle, a .difypkg, a key, an env
file, a project dir, an install root, a snapshot, a backup, an output dir...). A new option must be classified
(``ROLES``) or declared not a path (``NOT_PATHS``): ``test_every_option_is_classified`` says which.

Each case runs the task in-process through invoke's ``Program`` (the very thing ``dify-airgap`` runs) and fails on
a traceback, on the last-resort "unexpected" error of ``tasks._fails_cleanly`` (a bug that escaped as a foreign
exception type) and on exit code 0 for an input that is bad. No container engine is used: ``docker``,
``podman`` and the compose providers on PATH are stand-ins that answer like an engine whose daemon is down, so a
task that needs an engine before reading its input fails cleanly too, and nothing can start a container.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import traceback
import zipfile
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
from invoke import Collection, Program
from invoke import task as invoke_task

import tasks
from scripts import __version__
from scripts.core.console import LOG
from scripts.plugins import sign as plugin_sign
from tests.unit.bundle.bundles import build_bundle

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "dify-1.11.3"
COLLECTION = Collection.from_module(tasks)

#: option name -> the role of its value (task-specific first: ``(task, option)``)
ROLES: dict[object, str] = {
    "path": "bundle", "package": "difypkg", "pkg": "difypkg", "plugins": "difypkg",
    "public_key": "pubkey", "sign_key": "privkey", "plugin_sign_key": "privkey",
    "site_file": "envfile", "env_file": "envfile", "upgrade_from": "envfile", "old_example": "envfile",
    "project_dir": "project", "prefix": "prefix", "snapshot": "snapshot", "daemon_snapshot": "snapshot",
    "backup": "backup", "output": "outdir", "out": "outdir", "cache_dir": "outdir", "wheelhouse": "indir",
    "source": "source", "compose_file": "composefile", "tls_cert": "pem", "tls_key": "pem",
    "tls_chain": "pem",
    ("env", "out"): "outfile", ("inventory", "output"): "outfile", ("bundle", "against"): "bundle",
}
#: options whose value is not a path (a new option must be added here or to ROLES)
NOT_PATHS = {
    "json_", "runtime", "dry_run", "version", "profiles", "all_profiles", "vector_stores", "db_type", "platform",
    "compression", "chunk_size", "pull", "target_python", "archive", "quick", "registry", "insecure", "set_",
    "server_ip", "base_url", "model_server", "timeout", "selinux", "no_start", "purge_data", "yes", "ollama_url",
    "ollama_model", "vllm_url", "vllm_api_key", "vllm_model", "wait", "skip_deployment", "regenerate_secrets",
    "middleware", "python", "arch", "daemon_version", "marketplace_url", "keep_pyproject", "name", "bits", "force",
    "project_name", "tag", "expect_digest", "format", "safety_backup",
}


# --------------------------------------------------------------------------------------------- inputs

def _random(path: Path, size: int = 4096) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def _empty(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _dangling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(path.parent / "nowhere")
    return path


def _tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:max(1, int(len(data) * keep))])
    return path


def _bundle_archive(tmp: Path) -> Path:
    bundle = build_bundle(tmp / "arch-src")
    archive = tmp / f"{bundle.name}.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for rel in ["manifest.json", "SHA256SUMS",
                    *(e["path"] for e in json.loads((bundle / "manifest.json").read_text())["files"])]:
            tar.add(bundle / rel, arcname=f"{bundle.name}/{rel}")
    shutil.rmtree(tmp / "arch-src")
    return archive


def _bundle_with_manifest(tmp: Path, manifest: object) -> Path:
    bundle = build_bundle(tmp / "bad-manifest")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def _archive_with_manifest(tmp: Path, manifest: object) -> Path:
    return _tar(tmp / "dify-0.0.0-airgap-amd64.tar",
                {"dify-0.0.0-airgap-amd64/manifest.json": json.dumps(manifest).encode()})


MANIFEST_WITHOUT_FILES = {"format_version": 1, "dify_version": "0.0.0"}
MANIFEST_WRONG_TYPES = {"format_version": 1, "files": "x", "image_archive": [], "images": {"a": 1}}

PLUGIN_MANIFEST = ("version: 0.0.1\ntype: plugin\nauthor: test\nname: demo\nlabel: {en_US: Demo}\n"
                   "created_at: 2024-01-01T00:00:00Z\nresource: {memory: 1048576}\n"
                   "meta: {version: 0.0.1, arch: [amd64], runner: {language: python, version: '3.12', "
                   "entrypoint: main}}\nplugins: {tools: []}\n")


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _good_difypkg(path: Path) -> Path:
    return _zip(path, {"manifest.yaml": PLUGIN_MANIFEST.encode(), "main.py": b"print('hi')\n",
                       "requirements.txt": b""})


def _corrupt_member(path: Path) -> Path:
    """A well-formed ZIP whose deflated member data is damaged (its CRC no longer matches)."""
    _zip(path, {"manifest.yaml": PLUGIN_MANIFEST.encode() * 20, "main.py": b"print('hi')\n" * 200})
    data = bytearray(path.read_bytes())
    for i in range(60, 90):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _split_archive_without_head(tmp: Path) -> Path:
    archive = _bundle_archive(tmp)
    data = archive.read_bytes()
    archive.unlink()
    (tmp / f"{archive.name}.part-001").write_bytes(data[len(data) // 2:])
    return tmp / f"{archive.name}.part-001"


def _snapshot_dir(tmp: Path, manifest: object, complete: bool = True) -> Path:
    root = _dir(tmp / "plugin-daemon-0.0.0-20240101T000000")
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "SHA256SUMS").write_text("")
    if complete:
        (root / "COMPLETE").write_text("complete\n")
    return root


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path], Path | str]
    bad: bool = True  # False: a legitimate input for this role (only "no traceback" is asserted)
    ok_for: tuple[str, ...] = ()  # tasks for which this input is legitimate


COMMON = [
    Case("missing", lambda t: t / "missing"),
    Case("empty-file", lambda t: _empty(t / "empty")),
    Case("random-bytes", lambda t: _random(t / "random.bin")),
    Case("directory", lambda t: _dir(t / "a-directory")),
    Case("dangling-symlink", lambda t: _dangling(t / "dangling")),
]
CASES: dict[str, list[Case]] = {
    "bundle": [
        *COMMON,
        Case("empty-archive", lambda t: _empty(t / "x.tar")),
        Case("random-archive", lambda t: _random(t / "x.tar")),
        Case("random-part", lambda t: _random(t / "x.tar.part-000")),
        # inspect reads the manifest (the first member) only: a cut tail is verify's business
        Case("truncated-archive", lambda t: _truncate(_bundle_archive(t)), ok_for=("inspect",)),
        Case("truncated-archive-head", lambda t: _truncate(_bundle_archive(t), keep=0.02)),
        Case("hostile-archive", lambda t: _tar(t / "evil.tar", {"../evil/manifest.json": b"{}"})),
        Case("symlink-archive", lambda t: _tar(t / "link.tar", {}, {"dify/manifest.json": "/etc/passwd"})),
        Case("manifest-list", lambda t: _bundle_with_manifest(t, [1, 2])),
        Case("manifest-missing-keys", lambda t: _bundle_with_manifest(t, MANIFEST_WITHOUT_FILES)),
        Case("manifest-wrong-types", lambda t: _bundle_with_manifest(t, MANIFEST_WRONG_TYPES)),
        Case("manifest-truncated", lambda t: _truncate(build_bundle(t / "tr") / "manifest.json") and t / "tr"),
        Case("manifest-not-utf8", lambda t: _random(build_bundle(t / "nu") / "manifest.json").parent),
        Case("manifest-is-dir", lambda t: _dir(_dir(t / "md") / "manifest.json").parent),
        Case("archive-manifest-list", lambda t: _archive_with_manifest(t, [1])),
        Case("split-archive-without-head", _split_archive_without_head),
        Case("archive-manifest-missing-keys", lambda t: _archive_with_manifest(t, MANIFEST_WITHOUT_FILES)),
    ],
    "difypkg": [
        *COMMON,
        Case("empty-package", lambda t: _empty(t / "p.difypkg")),
        Case("random-package", lambda t: _random(t / "p.difypkg")),
        Case("truncated-package", lambda t: _truncate(_good_difypkg(t / "p.difypkg"))),
        Case("hostile-package", lambda t: _zip(t / "p.difypkg", {"../evil.py": b"x", "manifest.yaml": b"a: 1"})),
        Case("manifest-yaml-list", lambda t: _zip(t / "p.difypkg", {"manifest.yaml": b"- 1\n- 2\n"})),
        Case("manifest-yaml-missing-keys", lambda t: _zip(t / "p.difypkg", {"manifest.yaml": b"name: x\n"})),
        Case("manifest-yaml-broken", lambda t: _zip(t / "p.difypkg", {"manifest.yaml": b"a: [1\n"})),
        Case("no-manifest-yaml", lambda t: _zip(t / "p.difypkg", {"main.py": b"x"})),
        Case("corrupt-member", lambda t: _corrupt_member(t / "p.difypkg")),
    ],
    "pubkey": [*COMMON, Case("private-key", lambda t: t / "keys" / "k.private.pem")],
    "privkey": [*COMMON, Case("public-key", lambda t: t / "keys" / "k.public.pem")],
    "envfile": [
        *[c for c in COMMON if c.name != "empty-file"],
        Case("empty-file", lambda t: _empty(t / "empty.env"), bad=False),
        Case("bom-crlf", lambda t: (t / "bom.env").write_bytes(b"\xef\xbb\xbfA=1\r\nB='x'\r\n") and t / "bom.env",
             bad=False),
    ],
    "project": [
        *COMMON,
        Case("compose-list", lambda t: _text(t / "p" / "docker-compose.yaml", "- 1\n- 2\n").parent),
        Case("compose-random", lambda t: _random(t / "p" / "docker-compose.yaml").parent),
        Case("compose-broken-yaml", lambda t: _text(t / "p" / "docker-compose.yaml", "services: [\n").parent),
        Case("compose-is-dir", lambda t: _dir(t / "p" / "docker-compose.yaml").parent),
    ],
    "prefix": [
        Case("missing", lambda t: t / "missing", bad=False),  # install/preflight: a fresh root
        Case("a-file", lambda t: _random(t / "prefix-file")),
        Case("record-list", lambda t: _text(t / "pr" / "dify-airgap.json", "[1, 2]").parent),
        Case("record-missing-keys", lambda t: _text(t / "pr" / "dify-airgap.json", "{}").parent),
        Case("record-wrong-types", lambda t: _text(t / "pr" / "dify-airgap.json",
                                                   json.dumps({"runtime": 5, "compose_files": "x"})).parent),
        Case("record-random", lambda t: _random(t / "pr" / "dify-airgap.json").parent),
        Case("record-is-dir", lambda t: _dir(t / "pr" / "dify-airgap.json").parent),
    ],
    "snapshot": [
        *COMMON,
        Case("manifest-list", lambda t: _snapshot_dir(t, [1])),
        Case("manifest-missing-keys", lambda t: _snapshot_dir(t, {"format_version": 1,
                                                                  "kind": "plugin-daemon-snapshot", "files": []})),
        Case("no-complete-marker", lambda t: _snapshot_dir(t, {"format_version": 1}, complete=False)),
        Case("partial", lambda t: _dir(t / ".x.partial")),
    ],
    "backup": [
        *COMMON,
        Case("manifest-list", lambda t: _snapshot_dir(t, [1])),
        Case("manifest-missing-keys", lambda t: _snapshot_dir(t, {"format_version": 1, "kind": "dify-backup",
                                                                  "files": []})),
        Case("manifest-wrong-types", lambda t: _snapshot_dir(t, {"format_version": 1, "kind": "dify-backup",
                                                                 "files": [], "archives": 3, "databases": "x"})),
    ],
    "outdir": [
        Case("a-file", lambda t: _random(t / "out-file")),
        Case("under-a-file", lambda t: _random(t / "out-file") / "sub"),
        Case("dangling-symlink", lambda t: _dangling(t / "out-link"), bad=False),
    ],
    "outfile": [
        Case("a-directory", lambda t: _dir(t / "out-dir")),
        Case("under-a-file", lambda t: _random(t / "out-file") / ".env"),
    ],
    "indir": [*COMMON],
    "pem": [*COMMON, Case("not-pem", lambda t: _random(t / "x.pem"))],
    "source": [
        *COMMON,
        Case("random-tarball", lambda t: _random(t / "src.tar.gz")),
        Case("empty-tarball", lambda t: _empty(t / "src.tar.gz")),
        Case("hostile-tarball", lambda t: _tar(t / "src.tar", {"dify-1.11.3/docker/../../../evil": b"x"})),
        Case("no-docker-tarball", lambda t: _tar(t / "src.tar", {"dify-1.11.3/README": b"x"})),
    ],
    "composefile": [Case("missing", lambda t: "no-such-file.yaml"), Case("outside", lambda t: "../../../etc/passwd")],
}


#: bad values of options that are not paths, by option name (every task with the option gets them)
BAD_VALUES: dict[str, tuple[str, ...]] = {
    "timeout": ("abc", "-5"), "wait": ("abc",),
    "expect_digest": ("sha256:xyz", "0" * 63), "bits": ("abc", "512"), "name": ("../../escape", ""),
    "set_": ("NOEQUALS", "=x"), "tag": ("Bad Tag",), "registry": ("bad reg", ""), "runtime": ("rocket",),
    "selinux": ("maybe",), "chunk_size": ("4Q",), "server_ip": ("a b",), "base_url": ("ftp://x",),
    "model_server": ("notaurl",), "arch": ("sparc",), "python": ("2",), "daemon_version": ("x.y",),
    "compression": ("lz4",), "pull": ("sometimes",), "platform": ("foo/bar",), "db_type": ("oracle9",),
    "marketplace_url": ("notaurl",), "target_python": ("abc",),
}


# ------------------------------------------------------------------------------------- good companions

def _good_project(tmp: Path) -> Path:
    project = _dir(tmp / "good-project")
    for name in ("docker-compose.yaml", ".env.example"):
        shutil.copy(FIXTURE / name, project / name)
    return project


def _good_prefix(tmp: Path) -> Path:
    prefix = _dir(tmp / "good-prefix")
    shutil.copytree(_good_project(tmp), prefix / "docker")
    (prefix / "dify-airgap.json").write_text(json.dumps({"prefix": str(prefix), "runtime": "docker",
                                                         "compose_files": ["docker-compose.yaml"]}))
    return prefix


GOOD: dict[str, Callable[[Path], Path | str]] = {
    "bundle": lambda t: build_bundle(t / "good"),
    "difypkg": lambda t: _good_difypkg(t / "good.difypkg"),
    "pubkey": lambda t: t / "keys" / "k.public.pem",
    "privkey": lambda t: t / "keys" / "k.private.pem",
    "project": _good_project,
    "prefix": _good_prefix,
    "snapshot": lambda t: t / "no-snapshot",
    "backup": lambda t: t / "no-backup",
    "outdir": lambda t: t / "out",
    "outfile": lambda t: t / "out" / ".env",
}
#: what a task needs besides the option under test (role -> option), so the bad value is what it trips on
COMPANIONS: dict[str, tuple[str, ...]] = {
    "push": ("output",), "plugin-verify": ("public_key",), "env": ("project_dir", "out"),
    "images": ("project_dir",), "bundle": ("project_dir", "output"), "install": ("prefix",),
    "preflight": ("prefix",), "check": ("prefix",), "down": ("prefix",), "plugin-keygen": ("out",),
    "repackage": ("out", "cache_dir"), "backup": ("project_dir", "output"),
    "snapshot-daemon": ("project_dir", "output"),
    "restore": ("project_dir",), "restore-daemon": ("project_dir",),
}
EXTRA_ARGS: dict[str, list[str]] = {
    "push": ["127.0.0.1:9/dify"],     # registry (positional after path)
    "plugin-keygen": ["--bits", "1024"],
}


def _arguments(task_name: str) -> dict[str, object]:
    return {a.name: a for a in COLLECTION[task_name].get_arguments()}


def _role(task_name: str, option: str) -> str | None:
    return ROLES.get((task_name, option)) or ROLES.get(option)


def _cases() -> list[tuple[str, str, Case]]:
    found = []
    for task_name in sorted(COLLECTION.task_names):
        for option in _arguments(task_name):
            role = _role(task_name, option)
            for case in CASES.get(role, []):
                found.append(pytest.param(task_name, option, case, id=f"{task_name}-{option}-{case.name}"))
    return found


def _flag(option: str) -> str:
    return "--" + option.rstrip("_").replace("_", "-")


def _argv(task_name: str, option: str, value: str, tmp: Path) -> list[str]:
    args = _arguments(task_name)
    positional: dict[str, str] = {}
    flags: list[str] = []

    def put(name: str, val: str) -> None:
        if args[name].positional:
            positional[name] = val
        else:
            flags.extend([_flag(name), val])

    put(option, value)
    for name, arg in args.items():  # a positional of the same role gets the bad value too (repackage X --pkg X)
        if arg.positional and name != option and _role(task_name, name) == _role(task_name, option):
            positional[name] = value
    for name in COMPANIONS.get(task_name, ()):
        if name != option and name in args and not (name == "project_dir" and option == "prefix"):
            put(name, str(GOOD[_role(task_name, name)](tmp)))
    for name, arg in args.items():
        if arg.positional and name not in positional and _role(task_name, name):
            positional[name] = str(GOOD[_role(task_name, name)](tmp))
    if "runtime" in args:
        flags += ["--runtime", "docker"]
    if option == "source":
        flags += ["--version", "1.11.3"]
    ordered = [positional[a.name] for a in args.values() if a.positional and a.name in positional]
    return [task_name, *ordered, *EXTRA_ARGS.get(task_name, []), *flags]


# ------------------------------------------------------------------------------------------- running

@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("keys")
    plugin_sign.write_keypair(out, name="k", bits=1024)
    return out


@pytest.fixture
def offline(tmp_path, monkeypatch, keys):
    """No engine, no network, no write outside tmp_path: stand-in engines on PATH, unreachable indexes."""
    fake = _dir(tmp_path / "fakebin")
    for name, says in (("docker", "Cannot connect to the Docker daemon at unix:///nowhere. Is the docker daemon "
                                  "running?"),
                       ("podman", "Cannot connect to Podman. unable to connect to Podman socket"),
                       ("docker-compose", "Cannot connect to the Docker daemon"),
                       ("podman-compose", "No module named podman_compose")):
        (fake / name).write_text(f"#!/bin/sh\necho '{says}' >&2\nexit 1\n")
        (fake / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(_dir(tmp_path / "home")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home" / ".cache"))
    for var, value in (("DIFY_AIRGAP_RUNTIME", "docker"), ("DIFY_AIRGAP_CACHE_DIR", str(tmp_path / "cache")),
                       ("DIFY_AIRGAP_MARKETPLACE_URL", "http://127.0.0.1:9"),
                       ("DIFY_AIRGAP_INDEX_URL", "http://127.0.0.1:9/simple"),
                       ("UV_INDEX_URL", "http://127.0.0.1:9/simple"), ("UV_OFFLINE", "1"),
                       ("PIP_INDEX_URL", "http://127.0.0.1:9/simple"), ("PIP_NO_INDEX", "1")):
        monkeypatch.setenv(var, value)
    for var in ("DIFY_AIRGAP_PROJECT_DIR", "DIFY_AIRGAP_COMPOSE", "DOCKER_HOST", "CONTAINER_HOST"):
        monkeypatch.delenv(var, raising=False)
    work = _dir(tmp_path / "cwd")
    shutil.copytree(keys, tmp_path / "keys")
    monkeypatch.chdir(work)
    return tmp_path


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_task(argv: list[str], namespace: Collection = COLLECTION) -> Ran:
    """Run ``dify-airgap ARGV`` in-process, as the console script does. An exception escaping invoke's Program
    is what the user would see as a traceback: it is reported in ``stderr`` with exit code 99."""
    out, err = io.StringIO(), io.StringIO()
    for handler in list(LOG.handlers):  # setup_logging binds sys.stderr: let it bind the captured one
        LOG.removeHandler(handler)
    program = Program(namespace=namespace, version=__version__, name="dify-airgap", binary="dify-airgap")
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            program.run(["dify-airgap", *argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - what the user would see as a traceback
            code = 99
            err.write("Traceback (escaped the task):\n" + traceback.format_exc())
        finally:
            for handler in list(LOG.handlers):
                LOG.removeHandler(handler)
    return Ran(code, out.getvalue(), err.getvalue())


def assert_clean(argv: list[str], ran: Ran, bad: bool = True) -> None:
    code, output = ran.code, ran.output
    shown = f"dify-airgap {' '.join(argv)}\nexit {code}\n{output}"
    assert "Traceback" not in output, shown
    assert "error: unexpected" not in output and "this is a bug" not in output, shown
    if bad:
        assert code in (1, 2), shown


# --------------------------------------------------------------------------------------------- tests

def test_every_option_is_classified():
    unknown = [f"{t} --{o}" for t in sorted(COLLECTION.task_names) for o in _arguments(t)
               if not _role(t, o) and o not in NOT_PATHS]
    assert not unknown, f"classify these options in ROLES (a path: which role) or NOT_PATHS: {unknown}"


def test_every_option_has_help_and_the_one_short_flag_convention():
    """`invoke X --help` explains every option; a short flag exists only for the options of tasks.SHORT_FLAGS and is
    the same letter in every task (docs/cli.md); -h is never an option's. Read in a fresh process: invoke pops each
    help text off its task the first time it lists the arguments."""
    dump = ("import json, tasks; from invoke import Collection; c = Collection.from_module(tasks); "
            "print(json.dumps({t: [[a.name, sorted(a.names), a.help] for a in c[t].get_arguments()] "
            "for t in c.task_names}))")
    listed = json.loads(subprocess.run([sys.executable, "-c", dump], cwd=ROOT, capture_output=True, text=True,
                                       check=True, timeout=60).stdout)
    assert set(listed) == set(COLLECTION.task_names)
    bad = []
    for t, args in sorted(listed.items()):
        for name, names, text in args:
            shorts = [n for n in names if len(n) == 1]
            want = [tasks.SHORT_FLAGS[name]] if name in tasks.SHORT_FLAGS else []
            if not text:
                bad.append(f"invoke {t} --{name}: no help text")
            if shorts != want or "h" in shorts:
                bad.append(f"invoke {t} --{name}: short flag {shorts}, the convention says {want}")
    assert not bad, bad
    assert len(set(tasks.SHORT_FLAGS.values())) == len(tasks.SHORT_FLAGS), "one letter, one meaning"


def test_every_task_with_inputs_has_cases():
    tasks_with_cases = {p.values[0] for p in _cases()}
    without = {"version", "doctor"}  # no path or file input at all
    assert tasks_with_cases == set(COLLECTION.task_names) - without


@pytest.mark.parametrize("task_name, option, case", _cases())
def test_bad_input_fails_cleanly(offline, task_name, option, case):
    value = str(case.make(offline))
    argv = _argv(task_name, option, value, offline)
    assert_clean(argv, run_task(argv), bad=case.bad and task_name not in case.ok_for)


def _value_cases() -> list:
    return [pytest.param(t, o, v, id=f"{t}-{o}={v}") for t in sorted(COLLECTION.task_names) for o in _arguments(t)
            for v in BAD_VALUES.get(o, ())]


@pytest.mark.parametrize("task_name, option, value", _value_cases())
def test_bad_value_fails_cleanly(offline, task_name, option, value):
    argv = _argv(task_name, option, value, offline)
    assert_clean(argv, run_task(argv))


@pytest.mark.parametrize("task_name", sorted(t for t in COLLECTION.task_names if "json_" in _arguments(t)))
def test_bad_input_json_is_one_document(offline, task_name):
    """With --json a failure is ONE JSON document on stdout, ``{"error": ..., "hint": ...}``, and nothing else."""
    option = next((o for o in _arguments(task_name) if _role(task_name, o) in ("bundle", "difypkg", "prefix",
                                                                                 "snapshot", "backup", "project")),
                  None)
    if option is None:
        pytest.skip(f"{task_name} takes no input path")
    argv = [*_argv(task_name, option, str(offline / "missing-input"), offline), "--json"]
    ran = run_task(argv)
    assert_clean(argv, ran)
    doc = json.loads(ran.stdout)
    assert set(doc) <= {"error", "hint"} and doc["error"] and not doc["error"].startswith("error:"), ran.output
    assert "error:" not in ran.stderr, ran.output


def test_every_task_has_json():
    """#15: every task reports something, so every task takes --json (docs/cli.md)."""
    assert [t for t in sorted(COLLECTION.task_names) if "json_" not in _arguments(t)] == []


@pytest.mark.parametrize("argv", [
    lambda t: ["version"],
    lambda t: ["plugin-keygen", "--out", str(t / "keys-json"), "--bits", "1024"],
], ids=["version", "plugin-keygen"])
def test_json_success_is_one_document_and_the_rest_goes_to_stderr(offline, argv):
    """Under --json stdout is exactly the one document (the redirect itself: tests/unit/core/test_console.py)."""
    args = [*argv(offline), "--json"]
    ran = run_task(args)
    assert_clean(args, ran, bad=False)
    assert ran.code == 0, ran.output
    doc = json.loads(ran.stdout)
    assert isinstance(doc, dict) and "error" not in doc, ran.output
    if args[0] == "plugin-keygen":
        assert doc["fingerprint"].startswith("sha256:") and Path(doc["public_key"]).is_file()


def test_usage_error_exits_2_and_json(offline):
    ran = run_task(["check", "--ollama-model", "llama3"])
    assert ran.code == 2 and "error: --ollama-model needs --ollama-url" in ran.stderr, ran.output
    ran = run_task(["check", "--ollama-model", "llama3", "--json"])
    assert ran.code == 2 and json.loads(ran.stdout) == {"error": "--ollama-model needs --ollama-url"}, ran.output


def test_hint_is_its_own_json_field(offline):
    ran = run_task(["inspect", str(_empty(offline / "x.tar")), "--json"])
    doc = json.loads(ran.stdout)
    assert ran.code == 1 and "not a readable tar archive" in doc["error"] and "re-copy" in doc["hint"], ran.output
    ran = run_task(["inspect", str(offline / "x.tar")])
    assert "not a readable tar archive" in ran.stderr and "; re-copy it" in ran.stderr, ran.output


def test_unexpected_exception_is_one_line_not_a_traceback(offline, monkeypatch):
    def boom(*args, **kwargs):
        raise ZeroDivisionError("the toolkit divided by zero")

    monkeypatch.setattr(tasks.archive, "verify", boom)
    ran = run_task(["verify", str(offline)])
    assert ran.code == 1 and "Traceback" not in ran.output
    assert ran.stderr.strip() == ("error: unexpected ZeroDivisionError: the toolkit divided by zero (this is a bug: "
                                  "please report it with the command line)")
    with pytest.raises(AssertionError, match="error: unexpected"):  # ... and the bad-input test would catch it
        assert_clean(["verify", str(offline)], ran)
    ran = run_task(["verify", str(offline), "--json"])
    assert ran.code == 1 and json.loads(ran.stdout)["error"].startswith("unexpected ZeroDivisionError")


def test_run_task_sees_a_traceback():
    """The harness itself: an exception escaping a task without the wrapper (every real task has it) is reported."""
    @invoke_task
    def boom(c):
        raise ZeroDivisionError("escaped")

    ran = run_task(["boom"], namespace=Collection(boom))
    assert ran.code == 99 and "Traceback" in ran.stderr
    with pytest.raises(AssertionError, match="Traceback"):
        assert_clean(["boom"], ran)


def test_purge_data_not_confirmed_is_an_error_like_any_other(offline, monkeypatch):
    """`down --purge-data` answered wrong on a terminal: exit 1 and, with --json, ONE document naming it."""
    monkeypatch.setattr(tasks.sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt="": "/not/the/prefix")
    ran = run_task(["down", "--prefix", str(offline / "opt"), "--purge-data", "--json"])
    doc = json.loads(ran.stdout)
    assert ran.code == 1 and doc["error"] == "not confirmed; nothing was changed" and "--yes" in doc["hint"], ran.output
    ran = run_task(["down", "--prefix", str(offline / "opt"), "--purge-data"])
    assert ran.code == 1 and ran.stderr.strip().startswith("error: not confirmed; nothing was changed"), ran.output


def test_a_broken_pipe_that_is_not_our_stdout_is_an_error_not_silence(offline, monkeypatch):
    """Only a reader closing OUR stdout (`| head`) ends a task quietly; a pipe to a command dying is reported."""
    def boom(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(tasks.archive, "verify", boom)
    ran = run_task(["verify", str(offline)])
    assert ran.code == 1 and "error: unexpected BrokenPipeError" in ran.stderr, ran.output
