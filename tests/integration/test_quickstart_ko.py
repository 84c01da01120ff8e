"""The Korean quick start (docs/quickstart.ko.md), run for real: its command lines are extracted and executed.

Every command line after the doc's first ``## `` heading (the lines above it are a diagram) is taken from the
markdown with the docs' own parser (tests/support/doc_commands.py) and RUN as ``python -m invoke ARGS``: ``invoke X``,
``dify-airgap X`` and ``.venv/bin/dify-airgap X`` are one CLI (scripts/cli.py runs tasks.py's collection).
A line whose task changes the host gets ``--dry-run`` (:data:`DRY_RUN_TASKS`); every other line runs as typed.

The workspace W stands for the doc's machines:

- W is the build server's working directory: ``dify-1.16.0/docker`` is the vendored 1.16.0 release, its images
  the lab's stand-ins (in the lab's docker). The doc's own ``bundle`` lines run there for real (the fixture runs
  them first; their tests check the same result) and write W/bundles only. The ``--source`` line's download is
  the one substitution of a URL: the vendored tree packed as GitHub packs the release tarball, so it runs offline.
  No ``--pull never`` is added: the default ``missing`` reuses the stand-ins present. PyPI must answer (wheels for
  ``--target-python 3.9``).
- ``W/opt/dify-bundles/NAME`` is the copy on the closed server (section 2's ``cp -r``): the lines with ``.``
  run there (section 3's ``cd``); in section 12 ``.`` is the middleware bundle (:attr:`Expect.dot`).
- ``W/opt/dify`` is /opt/dify of the Docker server: the fixture installs the doc's bundle there for real (docker,
  free ports, a unique project name), so check, backup, snapshot-daemon and down meet a real deployment; it is
  taken down at the end and nothing of it may be left.
- A line that says ``--runtime podman`` runs on the doc's Podman (RHEL) server: its /opt/dify is W/rhel/opt/dify,
  where nothing is installed (the doc moves a backup from an Ubuntu+Docker server to a RHEL+Podman one). The
  backup its restore line reads is made by the fixture with the doc's backup command, for real, onto W/usb.

:meth:`Workspace.substitutions` maps every host path of the doc into W; a path it does not map fails the line.
:data:`EXPECT` says, per command text, what each line must do; a Korean command line the table does not cover
fails, and so does a table entry the doc no longer has: the doc and this test stay in step.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scripts.bundle import build as bundler
from scripts.dify import deployment as dep
from scripts.dify import stack
from scripts.engine.client import Engine
from scripts.host import install as installer
from tests.lab import standins
from tests.lab.certs import SiteCA
from tests.lab.host import free_port
from tests.support.doc_commands import argv_of, commands

from ..conftest import ROOT, release_fixture, require_engine

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("quickstart_ko")]

DOC = ROOT / "docs" / "quickstart.ko.md"
RELEASE = "1.16.0"
BUNDLE = f"dify-{RELEASE}-airgap-amd64"
MIDDLEWARE_BUNDLE = f"dify-{RELEASE}-middleware-airgap-amd64"
BACKUP = "dify-backup-dify-20260101T120000"  # the name the doc's restore line reads from the USB stick
VLLM_KEY = "sk-quickstart-ko-never-printed"  # the doc's $VLLM_KEY

#: Tasks that change the host and have --dry-run (`invoke --help TASK`): their lines run with it ...
DRY_RUN_TASKS = {"install", "push", "down", "backup", "restore", "snapshot-daemon", "restore-daemon", "inventory",
                 "upgrade", "rollback"}
#: ... except these, run as typed: without a terminal on stdin they are refused before anything changes.
AS_TYPED = {"down --purge-data"}
#: Tasks whose --prefix defaults to /opt/dify: a line without --prefix gets the mapped /opt/dify.
DEFAULT_PREFIX_TASKS = {"check", "down", "preflight", "install", "inventory", "upgrade", "rollback"}


def doc_lines() -> list[tuple[int, list[str]]]:
    """(line number, argv) of every command line after the first ``## `` heading; sketches (``...``) left out."""
    text = DOC.read_text(encoding="utf-8").splitlines()
    first = next(number for number, line in enumerate(text, 1) if line.startswith("## "))
    return [(number, argv) for number, args, _ in commands(DOC) if number > first and (argv := argv_of(args))]


@dataclass(frozen=True)
class Expect:
    """What one command line must do."""

    code: int = 0
    says: tuple[str, ...] = ()  #: regular expressions (multi-line) its stdout + stderr must match; {W}: workspace
    why: str = ""               #: why it fails on purpose
    dot: str = BUNDLE           #: the bundle directory (in W/opt/dify-bundles) that ``.`` means


def ok(*says: str, dot: str = BUNDLE) -> Expect:
    return Expect(0, says, dot=dot)


def fails(code: int, why: str, *says: str) -> Expect:
    return Expect(code, says, why)


DRY_INSTALL = r"^\[dry-run\] nothing was loaded, written or started"
NOT_HERE = ("nothing serves {what} at {where} here: the line fails naming it (refused, timeout, or the HTTP error of "
            "whatever answers on this network), and the rest of the check runs")

#: Keyed by the command as the doc types it (its arguments, without comments and redirections).
EXPECT: dict[str, Expect] = {
    # 1. build server
    "doctor": ok(r"^usable runtimes: .*docker"),
    "images --project-dir dify-1.16.0/docker": ok(r"^dify: 1\.16\.0 ", r"^langgenius/dify-api:1\.16\.0 +api"),
    "bundle --project-dir dify-1.16.0/docker --vector-stores weaviate,qdrant --platform linux/amd64 "
    "--target-python 3.9 --chunk-size 4000M":
        ok(r"^bundle: .*/bundles/dify-1\.16\.0-airgap-amd64$", r"langgenius/qdrant:v1\.8\.3: present",
           r"^digest: sha256:[0-9a-f]{64}$"),
    "verify bundles/dify-1.16.0-airgap-amd64": ok(r"^OK: \d+ files and parts match manifest\.json in bundles/"),
    "inspect bundles/dify-1.16.0-airgap-amd64 --format md":
        ok(r"^# Transfer sheet / 반입 자료 — Dify 1\.16\.0 \(linux/amd64\)$",
           r"^\| Bundle / 번들 \| `dify-1\.16\.0-airgap-amd64`"),
    "inspect bundles/dify-1.16.0-airgap-amd64.tar.part-000 --format cdx": ok(r'"bomFormat": "CycloneDX"'),
    "bundle --source https://github.com/langgenius/dify/archive/refs/tags/1.16.0.tar.gz --version 1.16.0 "
    "--archive --chunk-size 4000M":
        ok(r"^archive: .*/bundles/dify-1\.16\.0-airgap-amd64\.tar\.part-000 ", r"^digest: sha256:[0-9a-f]{64}$"),
    "verify bundles/dify-1.16.0-airgap-amd64.tar.part-000":
        ok(r"^OK: \d+ files and parts match manifest\.json in bundles/dify-1\.16\.0-airgap-amd64\.tar$"),
    # 3. closed server, in the bundle directory
    "verify .": ok(r"^OK: \d+ files and parts match manifest\.json in \.$"),
    "verify . --public-key ~/site-keys/dify-plugin-site.public.pem --expect-digest "
    "sha256:5554be77e56ddf8f579e420e91c8b3988d9ca713d111039438b8156a61b19590":
        fails(1, "the doc's digest is an example, not this bundle's, and the doc's bundle line does not sign: "
                 "both named, and the verdict is not to install",
              r"expected sha256:5554be77e56ddf8f579e420e91c8b3988d9ca713d111039438b8156a61b19590",
              r"the bundle is not signed", r"do NOT install it"),
    "push . --registry harbor.example.local/dify":
        ok(r"harbor\.example\.local/dify/langgenius/dify-api:1\.16\.0",
           r"harbor\.example\.local/dify/library/postgres:15-alpine",  # the doc's mapping examples
           r"^\[dry-run\] nothing was loaded, pushed or written"),
    "push . --registry 10.0.0.5:5000/dify --runtime podman --insecure":
        ok(r"podman push --tls-verify=false 10\.0\.0\.5:5000/dify/langgenius/dify-api:1\.16\.0",
           r"^\[dry-run\] nothing was loaded, pushed or written"),
    # 4. preflight (against the Docker server's deployment of this very bundle)
    "preflight . --runtime docker": ok(r"^preflight: OK"),
    "preflight . --runtime docker --set EXPOSE_NGINX_PORT=8080": ok(r"^PASS +port 8080 ", r"^preflight: OK"),
    # 5. install
    "install . --runtime docker --server-ip 10.0.0.5": ok(r"nothing changed: already installed", DRY_INSTALL),
    "install . --runtime podman --server-ip 10.0.0.5": ok(r"^\[dry-run\] podman-compose ", DRY_INSTALL),
    "install . --runtime podman --base-url https://dify.example.local --tls-cert /root/pki/dify.crt "
    "--tls-key /root/pki/dify.key --tls-chain /root/pki/intermediate.pem --dry-run":
        ok(r"TLS certificate installed: nginx/ssl/dify\.crt, nginx/ssl/dify\.key \(CN=dify\.example\.local",
           DRY_INSTALL),
    # 7. check (the Docker server's deployment)
    "check": ok(r"^PASS +console api via nginx +pong", r"^PASS +plugin daemon /health/check ", r" 0 failed$"),
    "check --prefix /srv/dify --json": ok(r'^  "ok": true,$', r'"name": "dify api /health"'),
    "check --ollama-url http://10.0.0.5:11434 --ollama-model llama3":
        fails(1, NOT_HERE.format(what="Ollama", where="10.0.0.5:11434"),
              r"^FAIL +ollama +.*10\.0\.0\.5:11434", r"^PASS +dify api /health "),
    "check --vllm-url http://10.0.0.6:8000 --vllm-api-key $VLLM_KEY --vllm-model Qwen/Qwen2.5-7B-Instruct":
        fails(1, NOT_HERE.format(what="vLLM", where="10.0.0.6:8000") + "; the key is never printed",
              r"^FAIL +vllm +.*10\.0\.0\.6:8000", r"^PASS +dify api /health "),
    "check --skip-deployment --ollama-url http://10.0.0.5:11434":
        fails(1, NOT_HERE.format(what="Ollama", where="10.0.0.5:11434") + " (the only check here)",
              r"^FAIL +ollama +.*10\.0\.0\.5:11434", r"^0 passed"),
    "check --wait 120": ok(r"^PASS +console api via nginx +pong", r" 0 failed$"),
    # 8. down (dry runs of the real deployment; the purge without --yes is refused)
    "down": ok(r"^\[dry-run\] docker compose .* down --remove-orphans"),
    "down --dry-run": ok(r"^\[dry-run\] docker compose .* down --remove-orphans"),
    "down --purge-data":
        fails(2, "no terminal on stdin: a usage error before anything changes (run as typed, no --dry-run)",
              r"--purge-data deletes the database and storage; add --yes to confirm"),
    "down --purge-data --yes":
        ok(r"^\[dry-run\] docker compose .* down -v ", r"^\[dry-run\] remove {W}/opt/dify/docker/volumes$"),
    # 10. backup / restore, plugin daemon snapshot
    "backup --prefix /opt/dify --output /srv/backups":
        ok(r"^  stop api, worker, worker_beat, plugin_daemon", r"pg_dump",
           r"^\[dry-run\] nothing was stopped, dumped or written"),
    "restore /mnt/usb/dify-backup-dify-20260101T120000 --prefix /opt/dify --runtime podman":
        ok(r"^OK: \d+ files and parts match manifest\.json in {W}/usb/dify-backup-dify-20260101T120000$",
           r"^\[dry-run\] extract volumes-app\.tar\.zst -> {W}/rhel/opt/dify/docker/volumes/app "),
    "snapshot-daemon --prefix /opt/dify --output snapshots":
        ok(r"docker commit ", r"^\[dry-run\] nothing was paused, committed or written"),
    "restore-daemon BUNDLE/daemon-snapshot --prefix /opt/dify --runtime podman":
        fails(1, "it needs a bundle made with --daemon-snapshot (the doc's line before it is a sketch) and a Podman "
                 "deployment at /opt/dify: this test has neither, and the missing deployment is named",
              r"no dify-airgap deployment at {W}/rhel/opt/dify "),
    # 11. upgrade: inventory (the fixture wrote W/inventory.json for real from the Docker server), delta bundle,
    # upgrade (the same bundle again: a dry run plans "nothing changed" and the backup), rollback
    "inventory --output inventory.json --runtime podman --prefix /opt/dify":
        ok(r"^\[dry-run\] would write inventory\.json \(\d+ bytes\): \d+ images; nothing was written"),
    "bundle --project-dir dify-1.16.0/docker --against inventory.json":
        ok(r"^bundle: .*/bundles/dify-1\.16\.0-from-1\.16\.0-airgap-amd64$", r"^digest: sha256:[0-9a-f]{64}$",
           r"delta: \d+ image\(s\) already on the target left out"),
    "upgrade . --prefix /opt/dify --dry-run":
        ok(r"^  verified and planned: ", r"^  backup .*\(planned\)$", r"^\[dry-run\] nothing was backed up"),
    "upgrade . --prefix /opt/dify": ok(r"^  backup .*\(planned\)$", r"^\[dry-run\] nothing was backed up"),
    "rollback --prefix /opt/dify":
        fails(1, "no upgrade ran on the Docker server (the upgrade lines are dry runs): there is no rollback point, "
                 "and rollback says so", r"no rollback point at {W}/opt/dify/\.dify-airgap/rollback\.json"),
    # 12. middleware stack
    "images --project-dir dify-1.16.0/docker --middleware": ok(r"^postgres:15-alpine +db_postgres"),
    "bundle --project-dir dify-1.16.0/docker --middleware --target-python 3.9":
        ok(r"^bundle: .*/bundles/dify-1\.16\.0-middleware-airgap-amd64$", r"^digest: sha256:[0-9a-f]{64}$"),
    "install . --runtime podman --prefix /opt/dify-dev --set EXPOSE_POSTGRES_PORT=15432 --dry-run":
        ok(r"middleware\.env", DRY_INSTALL, dot=MIDDLEWARE_BUNDLE),
    "install . --runtime podman --prefix /opt/dify-dev --set EXPOSE_POSTGRES_PORT=15432":
        ok(r"middleware\.env", DRY_INSTALL, dot=MIDDLEWARE_BUNDLE),
    "check --prefix /opt/dify-dev --middleware":
        fails(1, "the section's install lines run as dry runs here: nothing is installed at /opt/dify-dev, and "
                 "check names the missing deployment", r"no dify-airgap deployment at {W}/dev/opt/dify-dev "),
    "down --prefix /opt/dify-dev --middleware":
        fails(1, "as the check above: nothing is installed at /opt/dify-dev (run with --dry-run)",
              r"no dify-airgap deployment at {W}/dev/opt/dify-dev "),
}


# --- the workspace ------------------------------------------------------------------------------------------------

def _podman(argv: list[str]) -> bool:
    return any(a in ("--runtime", "-r") and b == "podman" for a, b in zip(argv, argv[1:]))


@dataclass
class Workspace:
    root: Path  #: W: the build server's working directory
    project_name: str
    results: dict[str, subprocess.CompletedProcess] = field(default_factory=dict)
    inventory: bytes = b""  #: W/inventory.json as the fixture wrote it (the dry-run line must not rewrite it)

    def bundle(self, name: str = BUNDLE) -> Path:
        """A bundle on the closed server (section 2: copied to /opt/dify-bundles/)."""
        return self.root / "opt" / "dify-bundles" / name

    @property
    def prefix(self) -> Path:
        """/opt/dify of the Docker server: installed for real by the fixture."""
        return self.root / "opt" / "dify"

    @property
    def rhel_prefix(self) -> Path:
        """/opt/dify of the Podman (RHEL) server of the lines with --runtime podman: nothing installed there."""
        return self.root / "rhel" / "opt" / "dify"

    def substitutions(self, podman: bool) -> list[tuple[str, str]]:
        """The doc's host paths (and its one download) -> W. An entry matches an argument that is the path or
        starts with it and a /; the first match wins."""
        w = self.root
        return [
            # the release tarball: the vendored 1.16.0 tree packed as GitHub packs it (dify-1.16.0/docker/...), so
            # the line runs offline; everything else about it is the doc's
            (f"https://github.com/langgenius/dify/archive/refs/tags/{RELEASE}.tar.gz",
             str(w / "src" / f"{RELEASE}.tar.gz")),
            ("~/site-keys", str(w / "site-keys")),                     # made by `invoke plugin-keygen`
            ("/root/pki/dify.crt", str(w / "pki" / "dify.crt")),       # tests/lab/certs.py SiteCA: dify.example.local
            ("/root/pki/dify.key", str(w / "pki" / "dify.key")),
            ("/root/pki/intermediate.pem", str(w / "pki" / "intermediate.pem")),
            ("/mnt/usb", str(w / "usb")),                              # holds a real backup of W/opt/dify
            ("/srv/dify", str(self.prefix)),                           # "another install root": the one installed here
            ("/srv/backups", str(w / "srv" / "backups")),
            ("BUNDLE", str(self.bundle())),                            # restore-daemon's placeholder
            ("/opt/dify-dev", str(w / "dev" / "opt" / "dify-dev")),    # section 12's dev server: nothing installed
            ("/opt/dify", str(self.rhel_prefix if podman else self.prefix)),
        ]

    def command(self, argv: list[str]) -> tuple[list[str], Path]:
        """(the argv to run, its working directory): paths mapped, $VLLM_KEY expanded as the shell would, the
        default prefix and --dry-run added."""
        key, podman = " ".join(argv), _podman(argv)
        out = []
        for arg in argv:
            for old, new in self.substitutions(podman):
                if arg == old or arg.startswith(old + "/"):
                    arg = new + arg[len(old):]
                    break
            out.append(re.sub(r"\$(\w+)", lambda m: {"VLLM_KEY": VLLM_KEY}[m.group(1)], arg))
        if argv[0] in DEFAULT_PREFIX_TASKS and not {"--prefix", "-p"} & set(argv):
            out += ["--prefix", str(self.rhel_prefix if podman else self.prefix)]
        if argv[0] in DRY_RUN_TASKS and key not in AS_TYPED and not {"--dry-run", "-n"} & set(argv):
            out.append("--dry-run")
        strays = [a for a in out if a.startswith(("/", "~")) and not a.startswith(str(self.root))]
        assert not strays, f"`{key}`: host paths the substitution table does not map into W: {strays}"
        return out, (self.bundle(EXPECT[key].dot) if "." in argv else self.root)

    def run(self, argv: list[str]) -> subprocess.CompletedProcess:
        """Run a doc line once (the fixture runs the bundle lines first; their tests read the same result)."""
        key = " ".join(argv)
        if key not in self.results:
            args, cwd = self.command(argv)
            self.results[key] = invoke(args, cwd, self.root)
        return self.results[key]


def invoke(args: list[str], cwd: Path, root: Path) -> subprocess.CompletedProcess:
    """``python -m invoke ARGS`` in ``cwd``, the doc's working directory (relative paths are the doc's), so
    tasks.py is found with --search-root ROOT instead of cwd=ROOT; no terminal on stdin."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLLM_KEY": VLLM_KEY,
           "DIFY_AIRGAP_RUNTIME": "docker",  # the build server and the Docker server; the podman lines say so
           "XDG_CACHE_HOME": str(root / "cache")}  # source checkouts stay in W (the wheel cache is linked in)
    return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(ROOT), *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)


def _doc_line(key: str) -> list[str]:
    found = [argv for _, argv in doc_lines() if " ".join(argv) == key]
    assert found, f"{DOC.name} no longer has `{key}`, which the fixture runs"
    return found[0]


def _ok(res: subprocess.CompletedProcess, what: str) -> None:
    assert res.returncode == 0 and "Traceback" not in res.stdout + res.stderr, \
        f"{what}: exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"


def _leftovers(engine: Engine, name: str) -> str:
    label = f"label={stack.project_label(engine)}={name}"
    return (engine.run(["ps", "-a", "-q", "--filter", label], mutates=False).stdout
            + engine.run(["network", "ls", "-q", "--filter", label], mutates=False).stdout).strip()


#: The bundle lines the fixture runs, in this order: the archive line first, so that the main line's bundle
#: replaces the directory (not the archive beside it) and is the one carried to the closed server.
PRODUCERS = (
    "bundle --source https://github.com/langgenius/dify/archive/refs/tags/1.16.0.tar.gz --version 1.16.0 "
    "--archive --chunk-size 4000M",
    "bundle --project-dir dify-1.16.0/docker --vector-stores weaviate,qdrant --platform linux/amd64 "
    "--target-python 3.9 --chunk-size 4000M",
    "bundle --project-dir dify-1.16.0/docker --middleware --target-python 3.9",
)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    docker = require_engine("docker")
    require_engine("podman")  # the doc's podman lines (install/push/restore/inventory) ask it
    assert bundler.host_platform() == "linux/amd64", "the doc bundles for linux/amd64: the stand-ins must be amd64"
    w = tmp_path_factory.mktemp("quickstart-ko")
    ws = Workspace(w, project_name=f"dalko{uuid.uuid4().hex[:8]}")
    project = standins.complete_project(w / f"dify-{RELEASE}" / "docker", fixture=release_fixture(RELEASE))
    (w / "src").mkdir()
    with tarfile.open(w / "src" / f"{RELEASE}.tar.gz", "w:gz") as tar:
        tar.add(project, arcname=f"dify-{RELEASE}/docker")
    wheels = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dify-airgap" / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    (w / "cache" / "dify-airgap").mkdir(parents=True)
    (w / "cache" / "dify-airgap" / "wheels").symlink_to(wheels)
    ca = SiteCA.make()
    server = ca.server("dify.example.local")
    (w / "pki").mkdir()
    (w / "pki" / "dify.crt").write_bytes(server.cert_pem())
    (w / "pki" / "dify.key").write_bytes(server.key_pem())
    (w / "pki" / "intermediate.pem").write_bytes(ca.intermediate.cert_pem())
    _ok(invoke(["plugin-keygen", "--out", str(w / "site-keys"), "--bits", "2048"], w, w), "plugin-keygen")

    with standins.present(docker, standins.default_images(RELEASE)):  # qdrant's stand-in included
        for key in PRODUCERS:
            _ok(ws.run(_doc_line(key)), key)
        for name in (BUNDLE, MIDDLEWARE_BUNDLE):  # section 2: cp -r ... /opt/dify-bundles/
            shutil.copytree(w / "bundles" / name, ws.bundle(name), symlinks=True)
        opts = installer.InstallOptions(
            bundle=ws.bundle(), runtime="docker", prefix=ws.prefix, server_ip="10.0.0.5", timeout=240,
            overrides={"EXPOSE_NGINX_PORT": str(free_port()), "EXPOSE_NGINX_SSL_PORT": str(free_port()),
                       "EXPOSE_PLUGIN_DEBUGGING_PORT": str(free_port())},
            project_name=ws.project_name)
        try:
            installer.install(opts)
            # the backup the doc's restore line reads: the doc's backup command for real, onto the "USB stick"
            _ok(invoke(["backup", "--prefix", str(ws.prefix), "--output", str(w / "usb")], w, w), "backup")
            made, = (w / "usb").glob("dify-backup-*")
            made.rename(w / "usb" / BACKUP)
            # the backup stopped and started the writers: ready again before the doc's check lines
            _ok(invoke(["check", "--prefix", str(ws.prefix), "--wait", "120"], w, w), "check after the backup")
            # the inventory the doc's `bundle --against inventory.json` reads: the Docker server's, for real (the
            # doc's own inventory line is a podman server's and runs as a dry run)
            _ok(invoke(["inventory", "--output", "inventory.json", "--runtime", "docker", "--prefix", str(ws.prefix)],
                       w, w), "inventory")
            ws.inventory = (w / "inventory.json").read_bytes()
            yield ws
        finally:
            if (ws.prefix / dep.STATE_FILE).exists():
                installer.down(ws.prefix)
    assert not _leftovers(docker, ws.project_name), "the quick start's deployment left containers or networks"


LINES = [pytest.param(argv, id=f"{DOC.name}:{number}") for number, argv in doc_lines()]


def test_the_table_covers_the_doc_and_nothing_else():
    keys = [" ".join(argv) for _, argv in doc_lines()]
    assert len(keys) >= 30, keys
    stale = sorted(set(EXPECT) - set(keys))
    assert not stale, f"EXPECT has commands {DOC.name} no longer has: {stale}"
    assert set(keys) >= AS_TYPED and all(k in keys for k in PRODUCERS)


@pytest.mark.parametrize("argv", LINES)
def test_a_korean_command_line_runs(argv, quickstart):
    key = " ".join(argv)
    assert key in EXPECT, f"`{key}` is a command line of {DOC.name} this test's table does not cover: add it to EXPECT"
    expect = EXPECT[key]
    res = quickstart.run(argv)
    args, cwd = quickstart.command(argv)
    out = res.stdout + res.stderr
    shown = (f"`{' '.join(args)}` in {cwd}: exit {res.returncode}\n--- stdout\n{res.stdout[-5000:]}\n"
             f"--- stderr\n{res.stderr[-3000:]}")
    assert "Traceback" not in out, shown
    assert VLLM_KEY not in out, f"the vLLM key was printed: {shown}"
    assert res.returncode == expect.code, f"expected exit {expect.code} ({expect.why or 'success'}): {shown}"
    for pattern in expect.says:
        assert re.search(pattern.replace("{W}", re.escape(str(quickstart.root))), out, re.M), f"no /{pattern}/: {shown}"


def test_the_dry_runs_changed_nothing(quickstart):
    """After every line: nothing written where the dry runs would write, the deployment still up with its data."""
    w = quickstart.root
    assert (w / "inventory.json").read_bytes() == quickstart.inventory
    assert not (quickstart.prefix / ".dify-airgap" / "rollback.json").exists()
    written = [p for p in (w / "rhel", w / "dev", w / "srv", w / "snapshots",
                           *(quickstart.bundle(n) / f"registry-images.{k}.yaml" for n in (BUNDLE, MIDDLEWARE_BUNDLE)
                             for k in ("compose", "values"))) if p.exists()]
    assert not written, written
    assert (quickstart.prefix / "docker" / "volumes").is_dir()
    res = invoke(["check", "--prefix", str(quickstart.prefix)], w, w)
    assert res.returncode == 0, res.stdout + res.stderr
