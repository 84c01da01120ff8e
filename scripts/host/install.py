"""`invoke install BUNDLE --runtime docker|podman`: the air-gapped side, safe and idempotent.

Order, and why:

1. verify the bundle (a bad part is named before anything changes: digest and signature against ``--public-key``
   / ``--expect-digest`` / invoke.yaml ``airgap.bundle_public_keys`` first, then every file and nothing
   unlisted, :func:`scripts.bundle.signature.open_verified`) and run preflight;
2. make sure a compose provider exists (podman: podman-compose from the bundle's wheels, into the
   toolkit's own venv, never system Python);
3. load the images streamed from the compressed parts (skipped when the same image ids are present);
4. copy Dify's ``docker/`` into ONE install root (``--prefix``, default /opt/dify); a file that would be
   replaced and differs is backed up first; ``.env`` and ``volumes/`` are never overwritten;
5. render ``.env`` (first install) or merge it three-way with the new release's example (upgrade),
   after a 0600 backup;
6. write the overrides this host needs (offline: ``pull_policy: never``; podman; SELinux ``:z``);
7. prove every image the rendered project needs is present, naming image and service, BEFORE starting;
8. ``compose up -d``, then wait (bounded) for running/healthy services and one-shot services exited 0;
   on failure print the failing services' last log lines. Volumes are never removed.

A re-run with the same bundle changes nothing and says so. ``--dry-run`` prints every command and file
change and does nothing.
"""

from __future__ import annotations

import datetime as _dt
import filecmp
import os
import shutil
import sys
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from scripts.bundle import delta
from scripts.bundle.archive import is_archive, materialize, planning_view
from scripts.bundle.load import load_images
from scripts.bundle.manifest import load_manifest
from scripts.bundle.signature import TrustPolicy, open_verified
from scripts.core.console import LOG
from scripts.core.errors import AirgapError, ImageMissing
from scripts.core.lock import hold
from scripts.core.waiting import WaitTimeout
from scripts.dify import deployment as dep
from scripts.dify import stack
from scripts.dify.envfile import render_env_file, write_atomic
from scripts.dify.envsyntax import read_env
from scripts.dify.project import FULL, MIDDLEWARE, StackMode
from scripts.engine.client import ComposeProvider, Engine
from scripts.engine.images import local_ref
from scripts.host import overrides, preflight, tls
from scripts.host.tls import SiteCertificate

STATE_DIR = ".dify-airgap"           # under the prefix: backups, previous example, history
TMP_SUFFIX = ".dal-tmp"               # a file of docker/ being replaced (renamed over it when complete)


@dataclass
class InstallOptions:
    bundle: Path
    runtime: str
    prefix: Path = Path(dep.DEFAULT_PREFIX)
    server_ip: str | None = None
    base_url: str | None = None
    site_file: Path | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    model_servers: list[str] = field(default_factory=list)  # --model-server: allowed through the SSRF proxy
    timeout: float = 600
    selinux: str = "auto"      # auto (relabel when enforcing), on, off
    start: bool = True
    dry_run: bool = False
    project_name: str = dep.PROJECT_NAME
    engine_env: dict[str, str] = field(default_factory=dict)  # DOCKER_HOST etc., recorded for check/down
    trust: TrustPolicy = field(default_factory=TrustPolicy)  # --public-key / --expect-digest / site keys
    tls_cert: Path | None = None   # --tls-cert / --tls-key / --tls-chain: the site's HTTPS certificate (tls.py)
    tls_key: Path | None = None
    tls_chain: Path | None = None
    middleware: bool = False  # --middleware: the middleware stack (a middleware bundle is installed so anyway)


@dataclass
class InstallReport:
    prefix: Path
    actions: list[str] = field(default_factory=list)   # what changed (or would change in dry-run)
    unchanged: list[str] = field(default_factory=list)
    services: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.actions)

    def render(self) -> str:
        lines = [f"install root: {self.prefix}"]
        lines += [f"  changed: {a}" for a in self.actions] or ["  nothing changed: already installed"]
        lines += [f"  unchanged: {u}" for u in self.unchanged]
        if self.services:
            lines.append("  services: " + ", ".join(f"{k}={v}" for k, v in sorted(self.services.items())))
        return "\n".join(lines)


def open_bundle(path: Path, dry_run: bool = False) -> Path:
    """The bundle directory for PATH (a bundle directory, its manifest, or its single archive)."""
    return materialize(path, dry_run=dry_run)


def ensure_compose(engine: Engine, bundle: Path, manifest: dict) -> tuple[list[str], bool]:
    """(compose argv to record, installed now?). Empty argv: auto-detection works.

    Podman without a provider: podman-compose from the bundle's wheels, into the toolkit's own venv.
    """
    if engine.find_compose():
        return list(engine.compose_argv or []), False
    if not engine.is_podman:
        engine.compose()  # raises ComposeMissing with the fix
    target = Path(sys.executable).parent / "podman-compose"
    installed = False
    if not target.exists():
        outside_venv = sys.prefix == sys.base_prefix
        if engine.dry_run:  # the RHEL case: podman without podman-compose; a dry run plans the install from wheels
            print(f"[dry-run] podman-compose is missing: would install it from {bundle / 'wheels'} into "
                  f"{sys.prefix}" + ("; NOTE: this Python is not a venv: run the real install from the bundle's "
                                     "venv (sh install.sh, then .venv/bin/dify-airgap install ...)"
                                     if outside_venv else ""))
            # what the real run would use from here on (its final `up` is planned with it, not probed)
            wheel = next((w for w in manifest.get("wheels", []) if w.startswith("podman_compose-")), "")
            engine.compose_argv = (str(target),)
            engine._compose = ComposeProvider((str(target),), wheel.split("-")[1] if wheel else "(bundle's wheel)")
            return [str(target)], True
        if outside_venv:
            raise AirgapError("podman-compose is missing and this toolkit does not run from its own venv; bootstrap "
                              "it with the bundle's `sh install.sh` and run `.venv/bin/dify-airgap install ...`")
        argv = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(bundle / "wheels"),
                "podman-compose"]
        LOG.info("podman-compose is missing: installing it from the bundle's wheels into %s", sys.prefix)
        engine.run(argv[1:], argv0=argv[:1], timeout=600)
        installed = True
    engine.compose_argv = (str(target),)
    engine._compose = None
    provider = engine.compose()
    LOG.info("compose provider: %s %s", provider.name, provider.version)
    return [str(target)], installed


# --- files ----------------------------------------------------------------------------------------

def sync_tree(src: Path, dest: Path, backup_dir: Path, *, dry_run: bool, keep: tuple[str, ...] = ()) -> list[str]:
    """Copy every file of ``src`` to ``dest``; a differing existing file is backed up first.

    Files only in ``dest`` (the site's own, runtime data) are left alone; ``keep`` paths are never
    written. Returns the relative paths that changed.
    """
    changed = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_dir() or any(rel.as_posix() == k or rel.as_posix().startswith(k + "/") for k in keep):
            continue
        target = dest / rel
        tmp = target.with_name(f".{target.name}{TMP_SUFFIX}")
        if not dry_run and tmp.is_file():
            tmp.unlink()  # left by a copy that a kill interrupted
        if target.is_file() and filecmp.cmp(path, target, shallow=False):
            continue
        changed.append(rel.as_posix())
        if dry_run:
            print(f"[dry-run] {'replace' if target.exists() else 'create'} {target}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            saved = backup_dir / rel
            saved.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(target, saved)
        shutil.copy2(path, tmp)
        os.replace(tmp, target)
    return changed


def _write_if_changed(path: Path, text: str, dry_run: bool) -> bool:
    if path.is_file() and path.read_text() == text:
        return False
    if dry_run:
        print(f"[dry-run] write {path}")
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, mode=0o644)
    return True


# --- the install ----------------------------------------------------------------------------------

@dataclass
class _Run:
    """One install's shared state: the options, the opened bundle, the engine and the report being built."""
    opts: InstallOptions
    prefix: Path
    report: InstallReport
    engine: Engine
    now: str
    bundle: Path
    manifest: dict
    key: str
    mode: StackMode = FULL
    tls: SiteCertificate | None = None
    tls_changed: bool = False  # a new certificate file: a running nginx must read it again

    @property
    def state_dir(self) -> Path:
        return self.prefix / STATE_DIR

    @property
    def project(self) -> Path:
        return dep.project_dir_for(self.prefix)

    @property
    def env_path(self) -> Path:
        return dep.env_file_for(self.prefix, self.mode)

    @property
    def old_example(self) -> Path:
        """The installed release's example, kept before docker/ is replaced: the base of the three-way merge."""
        return self.state_dir / f"previous.{self.mode.env_name.lstrip('.')}.example"


def install(opts: InstallOptions) -> InstallReport:
    """One install (or down, or restore) at a time per install root: ``PREFIX/.dify-airgap.lock``.

    A dry run of an ARCHIVE plans from its manifest and small files (``planning_view``): no image unpacked."""
    with ExitStack() as cleanup:
        if not opts.dry_run:  # a dry run reads only (and creates nothing, not even the prefix)
            cleanup.enter_context(hold(opts.prefix.resolve(), "install root", "invoke install"))
        return _install(opts, cleanup)


def _install(opts: InstallOptions, cleanup: ExitStack) -> InstallReport:
    run = _open_run(opts, cleanup)
    # 1. verify + preflight
    _verify_and_preflight(run)
    run.tls = _site_certificate(run)  # checked before anything changes
    # 2. compose provider
    compose_argv = _provide_compose(run)
    # 3. images
    _load_bundle_images(run)
    # 4. files
    previous = _previous_deployment(run.prefix)
    _keep_old_example(run)
    _sync_project(run)
    _install_certificate(run)
    # 5. .env
    _env_step(run)
    # 6. overrides
    files = _write_overrides(run)
    # 7. every image the rendered project needs, before anything starts
    active, needed = _check_images(run)
    record = _record_deployment(run, previous, files, needed, compose_argv)
    # 8. start
    if opts.start:
        _up_and_wait(run, record, active)
    return run.report


def _open_run(opts: InstallOptions, cleanup: ExitStack) -> _Run:
    prefix = opts.prefix.resolve()
    report = InstallReport(prefix)
    engine = Engine(opts.runtime, dry_run=opts.dry_run, env=dict(opts.engine_env))
    now = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    bundle = open_verified(opts.bundle, opts.trust, dry_run=opts.dry_run)  # step 1: verified before anything
    if opts.dry_run and not bundle.is_dir() and is_archive(opts.bundle):
        # a dry run unpacks nothing next to the archive (open_verified streamed it through the hashes): it plans
        # from a temporary view holding the manifest and the small files only
        bundle = cleanup.enter_context(planning_view(opts.bundle))
    manifest = load_manifest(bundle)
    key = preflight.bundle_key(bundle, manifest)
    return _Run(opts, prefix, report, engine, now, bundle, manifest, key, _mode(opts, manifest))


def _mode(opts: InstallOptions, manifest: dict) -> StackMode:
    """The stack to run: middleware with ``--middleware`` or for a middleware bundle (it has no api, web, nginx)."""
    mode = MIDDLEWARE if opts.middleware or manifest.get("mode") == MIDDLEWARE.name else FULL
    if mode.middleware and (opts.tls_cert or opts.tls_key):
        raise AirgapError("--tls-cert is for the full stack's nginx; the middleware stack has no nginx",
                          hint="drop --tls-cert/--tls-key, or install the full bundle without --middleware")
    return mode


def _verify_and_preflight(run: _Run) -> None:
    # the bundle was verified when it was opened (_open_run: open_verified, or streamed for a dry-run archive)
    pre = preflight.run(run.engine, run.bundle, run.manifest, run.prefix, overrides=run.opts.overrides, mode=run.mode)
    print(pre.render())
    if not pre.ok:
        raise AirgapError("preflight failed; nothing was changed (fix the FAIL items above)")
    _check_delta_base(run)


def _check_delta_base(run: _Run) -> None:
    """A delta bundle left out what its base holds: the engine must hold it, or nothing is changed."""
    missing = delta.missing_on_target(run.engine, run.manifest)
    if missing:
        base = run.manifest["delta"]["base"]
        raise AirgapError(f"this is an upgrade (delta) bundle cut against the {base['kind']} {base['source']} "
                          f"(Dify {base['dify_version'] or 'not recorded'}, {base['digest']}), and this "
                          f"{run.engine.runtime} lacks what it left out, for {len(missing)} image(s): "
                          f"{'; '.join(missing)}. Nothing was changed.",
                          hint="install it on the host whose inventory it was cut against (after that host's base "
                               "release), or carry a full bundle (invoke bundle without --against)")
    if run.manifest.get("delta"):
        LOG.info("delta bundle: every image and layer it left out is present on %s", run.engine.runtime)


def _site_certificate(run: _Run) -> SiteCertificate | None:
    """``--tls-cert``: the pair checked for the server name the URLs use; the certbot way refused offline."""
    opts = run.opts
    site = read_env(opts.site_file) if opts.site_file else {}
    current = read_env(run.env_path) if run.env_path.is_file() else {}
    # --tls-cert itself turns the certbot challenge off: only what remains after it is refused
    tls.refuse_certbot({**current, **site, **(tls.HTTPS_SETTINGS if opts.tls_cert else {}), **opts.overrides})
    if opts.tls_cert is None:
        return None
    return tls.checked_for_install(opts.tls_cert, opts.tls_key, opts.tls_chain, overrides=opts.overrides,
                                   base_url=opts.base_url, server_ip=opts.server_ip, current=current)


def _install_certificate(run: _Run) -> None:
    if run.tls is None:
        return
    changed = tls.install_files(run.tls, run.project, run.state_dir / f"backup-{run.now}" / "docker",
                                dry_run=run.opts.dry_run)
    run.tls_changed = bool(changed)
    if changed:
        run.report.actions.append(f"TLS certificate installed: {', '.join(str(tls.SSL_DIR / n) for n in changed)} "
                                  f"({run.tls.subject}, until {run.tls.not_after:%Y-%m-%d})")
    else:
        run.report.unchanged.append("TLS certificate")


def _provide_compose(run: _Run) -> list[str]:
    compose_argv, compose_installed = ensure_compose(run.engine, run.bundle, run.manifest)
    if compose_installed:
        run.report.actions.append(f"podman-compose installed from the bundle's wheels: {compose_argv[0]}")
    return compose_argv


def _load_bundle_images(run: _Run) -> None:
    loaded = load_images(run.engine, run.bundle, run.manifest)
    if loaded:
        run.report.actions.append(f"loaded {len(loaded)} images")
    else:
        run.report.unchanged.append("images (same image ids already present)")


def _previous_deployment(prefix: Path) -> dep.Deployment | None:
    try:
        return dep.load(prefix)
    except AirgapError:
        return None


def _keep_old_example(run: _Run) -> None:
    """Save the installed ``.env.example`` before it is replaced: the base of the three-way ``.env`` merge."""
    installed, new = run.mode.example(run.project), run.mode.example(run.bundle / "docker")
    if (run.env_path.is_file() and installed.is_file() and not run.opts.dry_run
            and not filecmp.cmp(installed, new, shallow=False)):
        run.state_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(installed, run.old_example)


def _sync_project(run: _Run) -> None:
    if not run.opts.dry_run:
        run.prefix.mkdir(parents=True, exist_ok=True)
    changed = sync_tree(run.bundle / "docker", run.project, run.state_dir / f"backup-{run.now}" / "docker",
                        dry_run=run.opts.dry_run, keep=(".env", "middleware.env", "volumes"))
    if changed:
        run.report.actions.append(f"{len(changed)} file(s) of docker/ written (changed ones backed up in "
                                  f"{STATE_DIR}/backup-{run.now})")
    else:
        run.report.unchanged.append("docker/ files")


def _env_step(run: _Run) -> None:
    report = run.report
    report.actions += _env(run.opts, run.bundle, run.project, run.env_path, run.old_example, run.state_dir, run.now,
                           run.mode)
    if not any(a.startswith(run.mode.env_name) for a in report.actions):
        report.unchanged.append(run.mode.env_name)


def _write_overrides(run: _Run) -> list[str]:
    """Write the wanted overrides; returns the compose files (-f order) of the deployment."""
    overrides_dir = run.prefix / "compose-overrides"
    files = [run.mode.compose_file]
    for name, text in overrides.wanted(run.bundle, run.project, run.engine, run.opts.selinux, run.mode).items():
        if _write_if_changed(overrides_dir / name, text, run.opts.dry_run):
            run.report.actions.append(f"compose override {name} written")
        files.append(str(overrides_dir / name))
    return files


def _missing_images(engine: Engine, needed: dict[str, list[str]], in_bundle: set[str],
                   dry_run: bool) -> list[tuple[str, list[str]]]:
    """(ref, services) of every needed image the engine lacks; a dry run counts the bundle's images as present."""
    return [(ref, services) for ref, services in needed.items()
            if not (dry_run and ref in in_bundle) and not engine.image_exists(local_ref(engine, ref))]


def _images_missing_error(missing: list[tuple[str, list[str]]]) -> ImageMissing:
    names = "; ".join(f"{ref} (service{'s' if len(s) > 1 else ''}: {', '.join(s)})" for ref, s in missing)
    return ImageMissing(f"{len(missing)} image(s) the project needs are not present and not in the bundle: "
                        f"{names}. Nothing was started. Make the bundle with these profiles / vector stores "
                        f"(invoke bundle --vector-stores ... / --profiles ...).", image=missing[0][0])


def _check_images(run: _Run) -> tuple[dict[str, stack.ServiceSpec], dict[str, list[str]]]:
    """(active services, needed image -> services); raises ImageMissing before anything starts."""
    opts = run.opts
    env_for_check = run.env_path if run.env_path.is_file() else run.mode.example(run.bundle / "docker")
    values = stack.env_values(env_for_check, opts.overrides if opts.dry_run else None)
    specs = stack.load_specs(run.bundle / "docker" if opts.dry_run else run.project, [run.mode.compose_file], values)
    active = stack.active_services(specs, stack.active_profiles(values))
    needed = stack.needed_images(active)
    in_bundle = {i["ref"] for i in run.manifest["images"]}
    missing = _missing_images(run.engine, needed, in_bundle, opts.dry_run)
    if missing:
        raise _images_missing_error(missing)
    return active, needed


def _installed_at(previous: dep.Deployment | None, key: str) -> str:
    """The first install time of this bundle: kept on a re-run, now (UTC) for a new bundle."""
    if previous and previous.bundle == key:
        return previous.installed_at
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _image_record(manifest: dict, ref: str, services: list[str]) -> dict:
    """An image of the deployment as the record keeps it: with the ids the bundle pins (inventory, check)."""
    pinned = next((i for i in manifest.get("images", []) if i.get("ref") == ref), {})
    return {"ref": ref, "services": services,
            **{key: pinned[key] for key in ("id", "config_id") if pinned.get(key)}}


def _record_deployment(run: _Run, previous: dep.Deployment | None, files: list[str],
                       needed: dict[str, list[str]], compose_argv: list[str]) -> dep.Deployment:
    # record the deployment before starting, so `invoke down` works even if start-up fails
    opts, key = run.opts, run.key
    record = dep.Deployment(prefix=run.prefix, runtime=run.engine.runtime, project_name=opts.project_name,
                            engine_env=dict(opts.engine_env), dify_version=run.manifest.get("dify_version", ""),
                            bundle=key, compose_files=files, profiles=[], mode=run.mode.name,
                            images=[_image_record(run.manifest, r, s) for r, s in needed.items()],
                            installed_at=_installed_at(previous, key),
                            compose_argv=compose_argv or (previous.compose_argv if previous else []))
    if previous and previous.bundle != key and not opts.dry_run:
        history = run.state_dir / f"history-{run.now}.json"
        history.write_text(previous.to_json())
        run.report.actions.append(f"upgrade from {previous.bundle}: old image set noted in {STATE_DIR}/{history.name}")
    if not opts.dry_run and (previous is None or previous.to_json() != record.to_json()):
        record.save()
    return record


def _up_and_wait(run: _Run, record: dep.Deployment, active: dict[str, stack.ServiceSpec]) -> None:
    opts, report = run.opts, run.report
    engine_c = record.engine(dry_run=opts.dry_run) if record.compose_argv else run.engine

    def compose(args, **kwargs):
        return record.compose(engine_c, args, **kwargs)

    if opts.dry_run:
        compose(["up", "-d"], timeout=opts.timeout)
        if run.tls_changed:
            print("[dry-run] restart nginx if it was running (it reads the certificate at start)")
        return
    current = stack.states(engine_c, record.project_name, compose)
    ready, _problems = stack.readiness(engine_c, active, current)
    if ready and not report.changed:
        LOG.info("every service is already running and healthy: nothing to do")
        report.services = {name: "ready" for name in active}
        return
    LOG.info("starting the stack (compose up -d)")
    compose(["up", "-d"], timeout=max(opts.timeout, 300), capture=False)
    report.actions.append("compose up -d")
    nginx = current.get("nginx")
    if run.tls_changed and nginx is not None and nginx.state == "running":
        # `up` keeps a container whose settings did not change; the certificate is a mounted file it read at start
        compose(["restart", "nginx"], timeout=120)
        report.actions.append("nginx restarted to serve the new TLS certificate")
    try:
        final = stack.wait_ready(engine_c, record.project_name, active, opts.timeout, compose)
    except (WaitTimeout, stack.StackFailed) as exc:
        raise _not_ready_error(engine_c, record, active, compose, opts.timeout, run.prefix) from exc
    report.services = {name: "ready" for name in final if name in active}


def _not_ready_error(engine: Engine, record: dep.Deployment, active: dict[str, stack.ServiceSpec], compose,
                     timeout: float,
                     prefix: Path) -> AirgapError:
    """The failing services and their last log lines; says that volumes and data are untouched."""
    current = stack.states(engine, record.project_name, compose)
    _ok, problems = stack.readiness(engine, active, current)
    failing = [p.split(":", 1)[0] for p in problems]
    return AirgapError(f"the stack did not become ready within {timeout:.0f}s: {'; '.join(problems)}\n"
                       + stack.logs_tail(engine, current, failing)
                       + "\nVolumes and data are untouched; fix the cause and re-run install, or "
                         f"`invoke down --prefix {prefix}`.")


def _env(opts: InstallOptions, bundle: Path, project: Path, env_path: Path, old_example: Path,
         state_dir: Path, now: str, mode: StackMode = FULL) -> list[str]:
    templates = bundle / "env-templates"
    overrides = {**tls.HTTPS_SETTINGS, **opts.overrides} if opts.tls_cert else opts.overrides
    server_ip = opts.server_ip
    if opts.tls_cert and not (server_ip or opts.base_url) and env_path.is_file():
        # a re-run adding HTTPS: every public URL is derived again, https:// on the host it had
        server_ip = tls.server_name(None, None, read_env(env_path))
    common = dict(server_ip=server_ip, base_url=opts.base_url, site_file=opts.site_file, middleware=mode.middleware,
                  overrides=overrides, templates_dir=templates, model_servers=opts.model_servers)
    source_dir = project if mode.example(project).is_file() else bundle / "docker"
    name = mode.env_name
    if not env_path.is_file():
        report = render_env_file(source_dir, env_path, dry_run=opts.dry_run, **common)
        if opts.dry_run:
            print(f"[dry-run] write {env_path} (mode 0600): {len(report.generated)} secrets generated")
            return [f"{name} rendered ({len(report.generated)} secrets generated)"]
        return [f"{name} rendered, mode 0600 ({len(report.generated)} secrets generated)"]
    base = old_example if old_example.is_file() else mode.example(source_dir)
    trial = render_env_file(source_dir, env_path, dry_run=True, upgrade_from=env_path, old_example=base, **common)
    if not trial.changed:
        return []
    if opts.dry_run:
        print(f"[dry-run] back up {env_path}; merge: {', '.join(trial.changed)} would change")
        return [f"{name} merged ({len(trial.changed)} keys)"]
    saved = state_dir / f"env-backup-{now}"
    state_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(saved, env_path.read_text(), mode=0o600)
    render_env_file(source_dir, env_path, upgrade_from=env_path, old_example=base, **common)
    if old_example.is_file():
        old_example.unlink()
    return [f"{name} merged ({len(trial.changed)} keys: {', '.join(trial.changed)}); backup {saved}"]


# --- down -----------------------------------------------------------------------------------------

def down(prefix: Path, *, purge_data: bool = False, dry_run: bool = False, timeout: float = 300) -> list[str]:
    """Stop and remove the stack's containers; volumes and data stay unless ``purge_data``."""
    record = dep.load(prefix)
    with nullcontext() if dry_run else hold(Path(prefix).resolve(), "install root", "invoke down"):
        return _down(record, purge_data=purge_data, dry_run=dry_run, timeout=timeout)


def _down(record: dep.Deployment, *, purge_data: bool, dry_run: bool, timeout: float) -> list[str]:
    engine = record.engine(dry_run=dry_run)
    args = ["down"]
    if purge_data:
        args.append("-v")
    if not engine.is_podman or not (engine.find_compose() and engine.find_compose().is_podman_compose):
        args += ["--remove-orphans", "--timeout", "30"]
    record.compose(engine, args, timeout=timeout, check=True)
    done = [f"{'would stop' if dry_run else 'stopped'} {record.project_name} ({' '.join(args)})"]
    if purge_data:
        volumes = record.project_dir / "volumes"
        if dry_run:
            print(f"[dry-run] remove {volumes}")
        elif volumes.exists():
            if engine.is_podman and engine.facts().get("rootless"):
                # rootless: the data belongs to the user's sub-uids; only inside the user namespace can we delete it
                engine.run(["unshare", "rm", "-rf", str(volumes)], timeout=timeout)
            else:
                shutil.rmtree(volumes)
            done.append(f"removed {volumes}")
    return done


def summary(report: InstallReport) -> dict:
    """What ``install --json`` prints."""
    return {"prefix": str(report.prefix), "changed": report.changed, "actions": report.actions,
            "unchanged": report.unchanged, "services": report.services}
