"""dify-airgap tasks. Each task parses its options, calls one function in scripts/, and prints its result
through ONE helper (:func:`_emit`: a table/text, or exactly one JSON document with --json).

Run `invoke --list` for the tasks and `invoke --help TASK` for a task's options.
"""

from __future__ import annotations

import os
import select
import sys
from contextlib import nullcontext
from functools import wraps
from pathlib import Path

import invoke
from invoke import Exit, Task
from invoke.parser import Argument

from scripts import __version__
from scripts.bundle import archive, manifest, signature, transfer
from scripts.bundle import build as bundler
from scripts.bundle import source as sources
from scripts.core.console import LOG, emit, redact, register_secret, results_only_on_stdout, setup_logging, warn
from scripts.core.errors import AirgapError, UsageError
from scripts.core.inputs import http_url
from scripts.data import backup as bk
from scripts.data import snapshot as snap
from scripts.data import stackdata
from scripts.dify import deployment, envfile
from scripts.dify import plan as compose_plan
from scripts.dify.envfile import parse_overrides
from scripts.dify.project import COMPOSE_FILE, resolve_env_file, resolve_project_dir, stack_mode
from scripts.engine.client import Engine, resolve_runtime
from scripts.flows import upgrade as upgrader
from scripts.host import check as checks
from scripts.host import doctor as doc
from scripts.host import install as installer
from scripts.host import inventory as inventories
from scripts.host import preflight as preflights
from scripts.host import push as pusher
from scripts.plugins import daemon as plugin_daemon
from scripts.plugins import repackage as plugins
from scripts.plugins import sign as plugin_sign

#: THE short flags (docs/cli.md): one letter, one meaning, in every task; every other option is long only, and
#: -h is always help. invoke's own choice (the first free letter of each name) gave --runtime -r in five tasks and
#: -u in six, -p for --prefix in one and --project-dir in others, and "--" once it ran out of letters.
SHORT_FLAGS = {"runtime": "r", "prefix": "p", "project_dir": "C", "output": "o", "json_": "j", "dry_run": "n",
               "yes": "y"}


class _Task(Task):
    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        opts["names"] = [opts["names"][0], *([SHORT_FLAGS[name]] if name in SHORT_FLAGS else [])]
        return opts


def task(*args, **kwargs):
    """invoke's ``@task`` with the toolkit's short flags (:data:`SHORT_FLAGS`)."""
    return invoke.task(*args, klass=_Task, **kwargs)


MIDDLEWARE_HELP = ("middleware mode: docker-compose.middleware.yaml with middleware.env (databases, redis, sandbox, "
                   "plugin daemon, SSRF proxy, vector store for a Dify api run outside compose; docs/middleware.md)")
EXPECT_MIDDLEWARE_HELP = ("the deployment at PREFIX must be the middleware stack (install --middleware), else refused; "
                          "optional: the install record knows its stack")
RUNTIME_HELP = "docker or podman (default: invoke.yaml airgap.runtime, then $DIFY_AIRGAP_RUNTIME, then auto-detect)"
TRUST_HELP = {
    "public_key": "the site's bundle public key (PKCS#1 PEM, `invoke plugin-keygen`), repeatable: manifest.json.sig "
                  "must verify with one of them; an unsigned bundle is refused (default: invoke.yaml "
                  "airgap.bundle_public_keys)",
    "expect_digest": "sha256:HEX that `invoke bundle` printed: manifest.json must have exactly this digest",
}


def _fails_cleanly(func):
    """Every failure ends as ``error: REASON`` on stderr (with --json: ONE JSON document ``{"error", "hint"}`` on
    stdout) and an exit code: 2 for a usage error, 1 for any other error, 130 when interrupted. Never a traceback:
    an exception that is not an :class:`AirgapError` is a bug, and says so in one line."""

    @wraps(func)
    def wrapper(c, *args, **kwargs):
        verbose = bool(c.config.get("airgap", {}).get("verbose"))
        setup_logging(verbose=verbose)
        as_json = bool(kwargs.get("json_"))
        try:
            with results_only_on_stdout(as_json):
                return func(c, *args, **kwargs)
        except AirgapError as exc:
            _fail(as_json, str(exc), exc.hint, exc.exit_code)
        except KeyboardInterrupt:
            raise Exit("interrupted; nothing half-written was kept", code=130) from None
        except BrokenPipeError as exc:
            if not _stdout_closed():  # another pipe (a command's stdin): an error like any other
                _fail(as_json, f"unexpected BrokenPipeError: {exc} (this is a bug: please report it with the "
                               f"command line)", None, 1)
            # `invoke inspect ... | head`: the reader stopped reading; stop quietly, like cat
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the final flush must not fail again
            raise Exit(code=141) from None
        except Exit:
            raise
        except Exception as exc:  # the last resort: one line, and findable (tests/unit/test_bad_inputs.py)
            if verbose:
                LOG.debug("the unexpected error, for the report:", exc_info=True)
            message = " ".join(str(exc).split())  # one line
            _fail(as_json, f"unexpected {type(exc).__name__}: {message} (this is a bug: please report it with the "
                           f"command line)", None, 1)

    return wrapper


def _stdout_closed() -> bool:
    """Is our stdout the pipe whose reader went away (poll says POLLERR on its write end)?"""
    try:
        poller = select.poll()
        poller.register(sys.__stdout__.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _fd, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _fail(as_json: bool, reason: str, hint: str | None, code: int) -> None:
    """Exit with ``code`` after saying why: ``error: REASON; HINT``, or with --json ``{"error", "hint"}``."""
    if as_json:
        emit(True, {"error": reason, **({"hint": hint} if hint else {})})
        raise Exit(code=code) from None
    raise Exit(redact(f"error: {reason}" + (f"; {hint}" if hint else "")), code=code) from None


def _cast_errors_are_usage_errors() -> None:
    """invoke casts ``--timeout abc`` with ``int()`` while it parses and lets the ValueError escape as a traceback:
    make it a usage error (exit 2) like ours. Patched once, when this collection is loaded (invoke or dify-airgap)."""
    original = Argument.set_value
    if getattr(original, "dify_airgap", False):
        return

    def set_value(self, value, cast=True):
        try:
            original(self, value, cast)
        except (TypeError, ValueError):
            kind = {int: "a whole number", float: "a number"}.get(self.kind, f"a {self.kind.__name__}")
            raise Exit(redact(f"error: --{self.name.replace('_', '-').strip('-')} takes {kind}, not {value!r}"),
                       code=2) from None

    set_value.dify_airgap = True
    Argument.set_value = set_value


_cast_errors_are_usage_errors()


def _path_or_none(value: str | None) -> Path | None:
    return Path(value) if value else None


def _with_scheme(url: str) -> str:
    return url if "://" in url else f"http://{url.strip()}"


def _emit(json_: bool, data, text=None, ok: bool = True) -> None:
    """Print the result (``text`` or, with --json, ``data`` as one JSON document); exit 1 when not ``ok``."""
    emit(json_, data, text)
    if not ok:
        raise Exit(code=1)


def _trust(c, public_key, expect_digest) -> signature.TrustPolicy:
    """--public-key (else the site's invoke.yaml airgap.bundle_public_keys) and --expect-digest."""
    configured = (c.config.get("airgap", {}) or {}).get(signature.CONFIG_KEY)
    return signature.policy(_split(public_key or []), expect_digest, configured)


def engine_for(c, runtime: str | None, dry_run: bool = False, prefix: str | None = None) -> Engine:
    """THE way every task builds its engine.

    Runtime: --runtime > the install record under --prefix > invoke.yaml > $DIFY_AIRGAP_RUNTIME > auto-detection.
    The install record's engine environment (DOCKER_HOST, CONTAINERS_STORAGE_CONF...) and compose provider are
    kept when its runtime is the one used; invoke.yaml's airgap.compose beats the recorded provider.
    """
    config = c.config.get("airgap", {}) or {}
    record = deployment.load(prefix) if prefix and (Path(prefix) / deployment.STATE_FILE).is_file() else None
    if runtime is None and record is not None:
        name, source = record.runtime, f"install record {Path(prefix) / deployment.STATE_FILE}"
    else:
        name, source = resolve_runtime(runtime, config.get("runtime"))
    same = record is not None and record.runtime == name
    compose = config.get("compose")
    compose_argv = tuple(compose.split()) if compose else (tuple(record.compose_argv) if same else None)
    engine = Engine(name, dry_run=dry_run, env=dict(record.engine_env) if same else {},
                    compose_argv=compose_argv or None)
    print(f"runtime: {name} ({source})", file=sys.stderr)
    return engine


@task(help={"json": "print the report as JSON", "runtime": "check only this runtime (docker or podman)"})
@_fails_cleanly
def doctor(c, json_=False, runtime=None):
    """Report engines, compose providers, versions, SELinux, disk, and what is missing."""
    runtimes = (runtime,) if runtime else ("docker", "podman")
    report = doc.diagnose(runtimes)
    _emit(json_, report, lambda: doc.render(report))
    if not report["usable"]:
        raise Exit("no container engine answers; install one with the fix shown above", code=1)


@task(help={"json": "print the version as JSON"})
@_fails_cleanly
def version(c, json_=False):
    """Print the toolkit version."""
    _emit(json_, {"version": __version__}, f"dify-airgap {__version__}")


def _split(value) -> list[str]:
    """Options that take lists accept "a,b" and repeated flags."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [part.strip() for item in items if item for part in str(item).split(",") if part.strip()]


@task(help={
    "project_dir": "Dify's docker/ directory (default: $DIFY_AIRGAP_PROJECT_DIR, ./dify-VERSION/docker, ./dify/docker)",
    "env_file": "env file to read COMPOSE_PROFILES from (default: PROJECT_DIR/.env, else .env.example)",
    "profiles": "extra compose profiles to include, comma-separated (e.g. certbot,unstructured)",
    "all_profiles": "include every profile the compose file declares",
    "vector_stores": "also cover these vector stores, comma-separated (e.g. weaviate,qdrant,milvus)",
    "db_type": "override DB_TYPE (postgresql or mysql) for planning",
    "version": "expected Dify version: refused unless the compose file runs it (also finds ./dify-VERSION/docker)",
    "runtime": RUNTIME_HELP,
    "middleware": MIDDLEWARE_HELP,
    "json": "print the plan as JSON",
})
@_fails_cleanly
def images(c, project_dir=None, env_file=None, profiles="", all_profiles=False, vector_stores="",
           db_type=None, version=None, runtime=None, middleware=False, json_=False):
    """List the exact images the Dify compose project needs, with the services needing each."""
    project, mode = resolve_project_dir(project_dir, version), stack_mode(middleware)
    plan = compose_plan.plan_images(engine_for(c, runtime), project, resolve_env_file(project, env_file, mode),
                                    profiles=_split(profiles), vector_stores=_split(vector_stores),
                                    all_profiles=all_profiles, db_type=db_type, mode=mode)
    compose_plan.check_version(plan, version)
    _emit(json_, plan.to_dict(), plan.render)


@task(help={
    "version": "Dify release: the tag to fetch with --source; otherwise a check (refused unless the compose "
               "file runs it). The bundle's version is always read from the compose file",
    "project_dir": "Dify's docker/ directory of that version (default: $DIFY_AIRGAP_PROJECT_DIR, "
                   "./dify-VERSION/docker)",
    "env_file": "env file whose COMPOSE_PROFILES decides the profiles (default: PROJECT_DIR/.env, else .env.example)",
    "output": "where the bundle directory is written (default: ./bundles)",
    "runtime": RUNTIME_HELP,
    "profiles": "extra compose profiles, comma-separated (e.g. certbot,unstructured)",
    "vector_stores": "also cover these vector stores, comma-separated (e.g. weaviate,qdrant,milvus)",
    "all_profiles": "bundle every profile's images (large)",
    "platform": "image platform, linux/amd64 or linux/arm64 (default: this host's)",
    "compression": "zstd (default, fast, multi-threaded) or gzip (for sites without zstd)",
    "chunk_size": "split the image archive into parts of this size for transfer media, e.g. 4000M (fits FAT32) or 700M",
    "pull": "always, missing (default: reuse images already present) or never",
    "target_python": "Python version of the AIR-GAPPED host, for the wheels (default 3.9 = Red Hat 9)",
    "wheelhouse": "take wheels from this directory instead of downloading them from PyPI",
    "plugins": "plugins to repackage offline into the bundle's plugins/ (.difypkg, author/name:version or URL; "
               "comma-separated or repeated)",
    "plugin_sign_key": "sign the bundled plugins with this PKCS#1 private key (invoke plugin-keygen)",
    "daemon_snapshot": "a snapshot directory from `invoke snapshot-daemon`, verified and copied into the bundle's "
                       "daemon-snapshot/ (restore it with `invoke restore-daemon BUNDLE/daemon-snapshot`)",
    "source": "instead of --project-dir: a git URL/path (cloned at tag VERSION) or the release source tarball "
              "(path or URL, e.g. https://github.com/langgenius/dify/archive/refs/tags/1.11.3.tar.gz)",
    "archive": "also write OUTPUT/dify-VERSION-airgap-ARCH.tar (split into .tar.part-NNN with --chunk-size): "
               "the whole bundle as one file to carry",
    "sign_key": "sign the bundle's manifest.json with the site's PKCS#1 private key (invoke plugin-keygen): "
                "writes manifest.json.sig, checked by verify/install/push --public-key (docs/security.md)",
    "dry_run": "print the plan and the exact commands; change nothing",
    "middleware": MIDDLEWARE_HELP,
    "against": "cut an UPGRADE (delta) bundle: only what the air-gapped host lacks. The host's inventory "
               "(invoke inventory there; its digest/signature checked with --public-key or the site keys) or the "
               "bundle it runs (directory or archive); docs/upgrade.md",
    "public_key": "with --against INVENTORY: a site public key that may have signed it (repeatable)",
    "json": "print the result as ONE JSON document on stdout (everything else goes to stderr)",
}, iterable=["plugins", "public_key"])
@_fails_cleanly
def bundle(c, version=None, project_dir=None, env_file=None, output="bundles", runtime=None, profiles="",
           vector_stores="", all_profiles=False, platform=None, compression="zstd", chunk_size=None,
           pull="missing", target_python="3.9", wheelhouse=None, plugins=None, plugin_sign_key=None,
           source=None, archive=False, dry_run=False, daemon_snapshot=None, sign_key=None, middleware=False,
           against=None, public_key=None, json_=False):
    """Make the offline bundle: images, Dify's docker/ dir, toolkit and wheels, with checksums."""

    if source and project_dir:
        raise UsageError("give --source or --project-dir, not both")
    if source and not version:
        raise UsageError("--source needs --version (the release tag to fetch, e.g. 1.16.0)")
    engine = engine_for(c, runtime, dry_run=dry_run)
    base = inventories.against(engine, against, _trust(c, public_key, None)) if against else None
    checkout = sources.checkout(source, version, dry_run=dry_run) if source else \
        nullcontext(resolve_project_dir(project_dir, version))
    mode = stack_mode(middleware)
    with checkout as project:
        image_plan = compose_plan.plan_images(engine, project, resolve_env_file(project, env_file, mode),
                                              profiles=_split(profiles), vector_stores=_split(vector_stores),
                                              all_profiles=all_profiles, mode=mode)
        compose_plan.check_version(image_plan, version)
        plan = bundler.make_plan(image_plan, version=image_plan.dify_version, project_dir=project, output=Path(output),
                                 platform=platform or bundler.host_platform(), compression=compression,
                                 chunk_size=chunk_size, pull=pull, target_python=target_python,
                                 wheelhouse=wheelhouse, plugins=_split(plugins or []),
                                 plugin_sign_key=plugin_sign_key, archive=archive,
                                 source=sources.shown(source) if source else None,
                                 daemon_snapshot=daemon_snapshot, add_snapshot=snap.add_to_bundle,
                                 sign_key=sign_key, against=base)
        print(plan.render(engine))
        if dry_run:
            _emit(json_, {"dry_run": True, **plan.to_dict()}, "\n[dry-run] nothing was pulled, saved or written")
            return
        final = bundler.build(engine, plan)
    done = bundler.done_dict(final, plan)
    _emit(json_, done, bundler.render_done(done))


@task(help={"path": "the bundle directory (or any file inside it), or its archive NAME.tar / NAME.tar.part-000",
            "quick": "compare sizes only, skip sha256 (fast pre-check)",
            **TRUST_HELP,
            "json": "print the report as JSON"}, iterable=["public_key"])
@_fails_cleanly
def verify(c, path, quick=False, public_key=None, expect_digest=None, json_=False):
    """Check a bundle: every file against its manifest, nothing unlisted, and its signature and digest."""

    report = signature.verify(path, deep=not quick, trust=_trust(c, public_key, expect_digest))
    _emit(json_, report.to_dict(), report.render, ok=report.ok)


@task(help={"path": "the bundle directory (or its manifest.json), or its archive NAME.tar / first part",
            "format": "text (default), or the transfer sheet: md (TRANSFER.md, English/Korean), json (its data), "
                      "cdx (CycloneDX SBOM)",
            "public_key": "a key that may have signed the bundle: the sheet then names the signer (repeatable; "
                          "default: the site's airgap.bundle_public_keys)",
            "json": "print the manifest (without its file list) as JSON"}, iterable=["public_key"])
@_fails_cleanly
def inspect(c, path, format="text", public_key=None, json_=False):
    """Show what a bundle holds (images, sizes, platform, profiles, plugins) without unpacking it."""
    if format not in transfer.FORMATS:
        raise UsageError(f"--format takes one of {', '.join(transfer.FORMATS)}, not {format!r}")
    if json_ and format != "text":
        raise UsageError("--json prints the manifest; for the transfer sheet use --format json|md|cdx alone")
    if archive.is_archive(path):  # read the first member only: nothing is unpacked
        data, name, _ = archive.read_manifest(path)
    else:
        bundle_dir = manifest.find_bundle_dir(path)
        data, name = manifest.load_manifest(bundle_dir), bundle_dir.name
    head = signature.read_head(path)  # an archive: its first two members only
    trust = signature.check(head, _trust(c, public_key, None))
    warn(f"{p.path}: {p.detail}" for p in trust.problems)  # shown, not refused: inspect reads, verify judges
    sheet = transfer.sheet(data, name, head.digest, head.signature is not None, trust.signer,
                           Path(path).name if archive.is_archive(path) else name)
    if format == "text":
        _emit(json_, manifest.summary(data), lambda: manifest.inspect_text(data) + "\n" + transfer.render_head(sheet))
        return
    render = {"md": transfer.render_md, "cdx": transfer.render_cdx}.get(format)
    emit(False, None, render(sheet).rstrip("\n")) if render else emit(True, sheet)


@task(help={
    "path": "the bundle directory (or its archive / first part: unpacked next to it first)",
    "registry": "the private registry as HOST[:PORT]/PREFIX, e.g. harbor.example.local/dify or 10.0.0.5:5000/dify",
    "runtime": RUNTIME_HELP,
    "insecure": "registry speaks plain HTTP or has a self-signed certificate: podman push --tls-verify=false "
                "(docker: list it under insecure-registries in /etc/docker/daemon.json instead)",
    "output": "directory for registry-images.compose.yaml and registry-images.values.yaml (default: .)",
    **TRUST_HELP,
    "dry_run": "print the mapping and the exact commands; load, push and write nothing",
    "json": "print the result as ONE JSON document on stdout (everything else goes to stderr)",
}, iterable=["public_key"])
@_fails_cleanly
def push(c, path, registry, runtime=None, insecure=False, output=".", public_key=None, expect_digest=None,
         dry_run=False, json_=False):
    """Push a bundle's images to a private registry; write the mapping as compose override and Helm values."""

    engine = engine_for(c, runtime, dry_run=dry_run)
    bundle_dir, data = pusher.open_bundle(path, _trust(c, public_key, expect_digest), dry_run=dry_run)
    plan = pusher.make_plan(bundle_dir, data, registry, insecure=insecure, output=Path(output))
    print(plan.render(engine))
    pusher.push(engine, plan, data)
    result = {"dry_run": dry_run, "registry": plan.registry, "mapping": plan.mapping(),
              "files": [str(p) for p in pusher.render_files(plan)]}
    _emit(json_, result, "\n[dry-run] nothing was loaded, pushed or written" if dry_run else pusher.render_done(plan))


PREFIX_HELP = "the install root holding docker/ and dify-airgap.json (default /opt/dify)"


@task(help={
    "path": "the bundle directory (or its archive / first part)",
    "runtime": RUNTIME_HELP,
    "prefix": PREFIX_HELP,
    "set": "KEY=VALUE the install will put in .env (e.g. EXPOSE_NGINX_PORT=8080), repeatable: ports are "
           "checked with it",
    "json": "print the report as JSON",
}, iterable=["set_"])
@_fails_cleanly
def preflight(c, path, runtime=None, prefix="/opt/dify", set_=None, json_=False):
    """Can this host run this bundle? Disk, ports, engine, compose, architecture, SELinux: pass/warn/fail."""

    engine = engine_for(c, runtime)
    with archive.planning_view(Path(path)) as bundle_dir:  # an archive: its manifest and docker/, no images
        report = preflights.run(engine, bundle_dir, manifest.load_manifest(bundle_dir), Path(prefix),
                                overrides=parse_overrides(set_ or []))
    _emit(json_, report.to_dict(), report.render, ok=report.ok)


@task(help={
    "path": "the bundle directory (or its archive / first part)",
    "runtime": RUNTIME_HELP,
    "prefix": PREFIX_HELP,
    "server_ip": "this server's IP or host name: fills every public URL in .env (first install or change)",
    "base_url": "public base URL instead of --server-ip, e.g. https://dify.example.local",
    "site_file": "your site's KEY=VALUE file for .env (storage, external DB, internal PyPI mirror...)",
    "set": "KEY=VALUE for .env, repeatable; beats every other layer",
    "model_server": "URL of a model server on the site network (Ollama, vLLM...), repeatable: allowed through "
                    "Dify 1.15+'s SSRF proxy (SSRF_PROXY_ALLOW_PRIVATE_IPS/_DOMAINS)",
    "timeout": "seconds to wait for every service to be running/healthy (default 600)",
    "selinux": "relabel bind mounts with :z: auto (when podman runs with SELinux enforcing), on, off",
    "no_start": "install everything but do not start the stack",
    "tls_cert": "HTTPS: your CA's certificate (PEM) for this server; checked (key pair, dates, names) then put where "
                "Dify's nginx reads it, and NGINX_HTTPS_ENABLED=true",
    "tls_key": "HTTPS: the certificate's private key (PEM, unencrypted), installed mode 0600",
    "tls_chain": "HTTPS: the intermediate CA certificate(s) (PEM), served after the certificate",
    **TRUST_HELP,
    "middleware": MIDDLEWARE_HELP + "; a bundle made with --middleware is installed so without it",
    "json": "print the result as JSON",
    "dry_run": "print every command and file change; change nothing",
}, iterable=["set_", "model_server", "public_key"])
@_fails_cleanly
def install(c, path, runtime=None, prefix="/opt/dify", server_ip=None, base_url=None, site_file=None, set_=None,
            timeout=600, selinux="auto", no_start=False, json_=False, dry_run=False, model_server=None,
            public_key=None, expect_digest=None, tls_cert=None, tls_key=None, tls_chain=None, middleware=False):
    """Install a bundle on this (air-gapped) host and start Dify: verify, load, .env, overrides, up, wait."""

    if selinux not in ("auto", "on", "off"):
        raise UsageError(f"--selinux must be auto, on or off, not {selinux!r}")
    if bool(tls_cert) != bool(tls_key) or (tls_chain and not tls_cert):
        raise UsageError("--tls-cert and --tls-key go together (and --tls-chain needs them)")
    if middleware and tls_cert:
        raise UsageError("--tls-cert is for the full stack's nginx; the middleware stack has no nginx")
    engine = engine_for(c, runtime, dry_run=dry_run)
    opts = installer.InstallOptions(bundle=Path(path), runtime=engine.runtime, prefix=Path(prefix),
                                    server_ip=server_ip, base_url=base_url,
                                    site_file=_path_or_none(site_file),
                                    overrides=parse_overrides(set_ or []), model_servers=list(model_server or []),
                                    timeout=float(timeout),
                                    selinux=selinux, start=not no_start, dry_run=dry_run,
                                    trust=_trust(c, public_key, expect_digest),
                                    tls_cert=_path_or_none(tls_cert), tls_key=_path_or_none(tls_key),
                                    tls_chain=_path_or_none(tls_chain), middleware=middleware)
    report = installer.install(opts)
    _emit(json_, installer.summary(report), report.render)
    if dry_run:
        print("\n[dry-run] nothing was loaded, written or started")


@task(help={
    "path": "the NEW release's bundle (directory or archive; a delta bundle from `bundle --against` too)",
    "runtime": RUNTIME_HELP + "; must be the installed one",
    "prefix": PREFIX_HELP,
    "site_file": "your site's KEY=VALUE file for .env (as install)",
    "set": "KEY=VALUE for .env, repeatable (as install)",
    "timeout": "seconds to wait for every service to be running/healthy (default 600)",
    "wait": "seconds `check` may retry after the install (default 180)",
    "selinux": "relabel bind mounts with :z: auto (when podman runs with SELinux enforcing), on, off",
    **TRUST_HELP,
    "dry_run": "verify, plan the install and print the backup plan and every step; change nothing",
    "json": "print the result as ONE JSON document on stdout (everything else goes to stderr)",
}, iterable=["set_", "public_key"])
@_fails_cleanly
def upgrade(c, path, runtime=None, prefix="/opt/dify", site_file=None, set_=None, timeout=600, wait=180,
            selinux="auto", public_key=None, expect_digest=None, dry_run=False, json_=False):
    """Upgrade the installed Dify to a new bundle: verify, plan, backup, rollback point, install, wait, check."""
    if selinux not in ("auto", "on", "off"):
        raise UsageError(f"--selinux must be auto, on or off, not {selinux!r}")
    record = deployment.load(prefix)
    engine = engine_for(c, runtime or record.runtime, dry_run=dry_run)
    opts = installer.InstallOptions(bundle=Path(path), runtime=engine.runtime, prefix=Path(prefix),
                                    site_file=_path_or_none(site_file), overrides=parse_overrides(set_ or []),
                                    timeout=float(timeout), selinux=selinux, dry_run=dry_run,
                                    trust=_trust(c, public_key, expect_digest))
    report = upgrader.upgrade(opts, check_wait=float(wait))
    _emit(json_, report.to_dict(), report.render)
    if dry_run:
        print("\n[dry-run] nothing was backed up, loaded, written or started")


@task(help={
    "prefix": PREFIX_HELP,
    "timeout": "seconds each restore step may take (default 600)",
    "wait": "seconds `check` may retry after the restart (default 180)",
    "yes": "roll back also an upgrade that COMPLETED (its databases then return to the backup before it)",
    "safety_backup": "back up the release being rolled back first (default; --no-safety-backup when its database "
                     "cannot run: its databases are then replaced without a copy)",
    "dry_run": "print every step of the rollback; change nothing",
    "json": "print the result as ONE JSON document on stdout (everything else goes to stderr)",
})
@_fails_cleanly
def rollback(c, prefix="/opt/dify", timeout=600, wait=180, yes=False, safety_backup=True, dry_run=False,
             json_=False):
    """Return to the release the last `invoke upgrade` started from, with its backup and .env; nothing deleted."""
    report = upgrader.rollback(Path(prefix), dry_run=dry_run, timeout=float(timeout), check_wait=float(wait),
                               yes=yes, safety_backup=safety_backup)
    _emit(json_, report.to_dict(), report.render)


@task(help={
    "prefix": PREFIX_HELP,
    "purge_data": "ALSO delete the volumes and docker/volumes (database, storage): asks for confirmation",
    "yes": "with --purge-data: do not ask (for scripts)",
    "middleware": EXPECT_MIDDLEWARE_HELP,
    "dry_run": "print the commands; change nothing",
    "json": "print the result as ONE JSON document on stdout (everything else goes to stderr)",
})
@_fails_cleanly
def down(c, prefix="/opt/dify", purge_data=False, yes=False, dry_run=False, middleware=False, json_=False):
    """Stop the stack and remove its containers; data is kept unless --purge-data."""
    if middleware:
        deployment.expect_mode(prefix, middleware)

    if purge_data and not yes and not dry_run:
        if not sys.stdin.isatty():
            raise UsageError("--purge-data deletes the database and storage; add --yes to confirm "
                             "(no terminal to ask on)")
        answer = input(f"Delete ALL Dify data under {prefix}/docker/volumes? Type the prefix to confirm: ")
        if answer.strip() != str(prefix):
            raise AirgapError("not confirmed; nothing was changed",
                              hint=f"type the prefix exactly as given ({prefix}), or add --yes in scripts")
    steps = []
    for line in installer.down(Path(prefix), purge_data=purge_data, dry_run=dry_run):
        steps.append(line)
        print(line)  # as it happens (on stderr under --json)
    _emit(json_, {"prefix": str(prefix), "dry_run": dry_run, "purge_data": purge_data, "steps": steps})


@task(help={
    "prefix": PREFIX_HELP,
    "ollama_url": "also check an Ollama server, e.g. http://10.0.0.5:11434 (GET /api/tags)",
    "ollama_model": "with --ollama-url: this model must be there (llama3 or llama3:latest)",
    "vllm_url": "also check a vLLM (OpenAI-compatible) server, e.g. http://10.0.0.6:8000 (GET /v1/models)",
    "vllm_api_key": "with --vllm-url: the key vLLM was started with (sent as a Bearer token, never printed)",
    "vllm_model": "with --vllm-url: this model id must be served",
    "timeout": "seconds each request may take (default 10)",
    "wait": "re-check every 5 s while anything fails, for up to this many seconds (right after install "
            "or a reboot; default 0 = check once)",
    "skip_deployment": "check only --ollama-url/--vllm-url, no Dify deployment needed (e.g. before install)",
    "middleware": EXPECT_MIDDLEWARE_HELP,
    "json": "print the report as JSON",
})
@_fails_cleanly
def check(c, prefix="/opt/dify", ollama_url=None, ollama_model=None, vllm_url=None, vllm_api_key=None,
          vllm_model=None, timeout=10, wait=0, skip_deployment=False, middleware=False, json_=False):
    """Is Dify up? Containers, images, API health, console via nginx, plugin daemon, model servers."""
    register_secret(vllm_api_key or "")
    # HOST:PORT means http://HOST:PORT (docs/check.md); anything else must be an http(s) URL
    ollama_url = http_url(_with_scheme(ollama_url), "--ollama-url") if ollama_url else None
    vllm_url = http_url(_with_scheme(vllm_url), "--vllm-url") if vllm_url else None
    if ollama_model and not ollama_url:
        raise UsageError("--ollama-model needs --ollama-url")
    if (vllm_model or vllm_api_key) and not vllm_url:
        raise UsageError("--vllm-model and --vllm-api-key need --vllm-url")
    if skip_deployment and not (ollama_url or vllm_url):
        raise UsageError("--skip-deployment checks only model servers: give --ollama-url or --vllm-url")
    if skip_deployment and middleware:
        raise UsageError("--middleware names the deployment to check; --skip-deployment checks none")
    dep = engine = None
    if not skip_deployment:
        dep = deployment.expect_mode(prefix, middleware)
        engine = engine_for(c, None, prefix=prefix)  # the runtime, engine env and compose provider install recorded
    report = checks.run_checks(dep, engine=engine, ollama_url=ollama_url, ollama_model=ollama_model,
                               vllm_url=vllm_url, vllm_api_key=vllm_api_key, vllm_model=vllm_model,
                               timeout=float(timeout), wait=float(wait))
    _emit(json_, report.to_dict(), report.render, ok=report.ok)


@task(help={
    "project_dir": "Dify's docker/ directory, holding docker-compose.yaml and .env.example "
                   "(default: $DIFY_AIRGAP_PROJECT_DIR or a known place)",
    "out": "file to write (default: PROJECT_DIR/.env, or PROJECT_DIR/middleware.env with --middleware)",
    "server_ip": "this server's IP address or host name; fills every public URL (CONSOLE_WEB_URL, FILES_URL, ...)",
    "base_url": "public base URL instead of --server-ip, e.g. https://dify.example.local",
    "site_file": "your site's KEY=VALUE file; beats env-templates/*.env, loses to --set",
    "set": "KEY=VALUE, repeatable; beats every other layer",
    "regenerate_secrets": "make new secrets instead of keeping those of the existing output file "
                          "(breaks an installed Dify: database passwords are fixed at first start)",
    "upgrade_from": "your .env of the previous Dify release: three-way merge into this release's .env.example",
    "model_server": "URL of a model server on the site network (Ollama, vLLM...), repeatable: Dify 1.15+'s SSRF "
                    "proxy denies private addresses unless allowed (SSRF_PROXY_ALLOW_PRIVATE_IPS/_DOMAINS)",
    "old_example": "the .env.example your --upgrade-from file was made from (required with --upgrade-from)",
    "middleware": "render middleware.env from middleware.env.example (envs/ on 1.14+; middleware/dev compose mode)",
    "dry_run": "show which keys would change (never secret values) and write nothing",
    "json": "print the report as JSON (no secret values)",
}, iterable=["set_", "model_server"])
@_fails_cleanly
def env(c, project_dir=None, out=None, server_ip=None, base_url=None, site_file=None, set_=None,
        regenerate_secrets=False, upgrade_from=None, old_example=None, middleware=False, dry_run=False,
        json_=False, model_server=None):
    """Write Dify's .env for this site: offline settings, server URLs, strong secrets (mode 0600)."""

    project = resolve_project_dir(project_dir)
    target = Path(out) if out else project / ("middleware.env" if middleware else ".env")
    report = envfile.render_env_file(
        project, target, server_ip=server_ip, base_url=base_url,
        site_file=_path_or_none(site_file), overrides=envfile.parse_overrides(set_ or []),
        regenerate_secrets=regenerate_secrets, middleware=middleware, dry_run=dry_run,
        upgrade_from=Path(upgrade_from) if upgrade_from else None,
        old_example=Path(old_example) if old_example else None, model_servers=model_server or [])
    warn(report.warnings)
    _emit(json_, report.to_dict(), report.render)


@task(positional=["package"], iterable=["pkg"], help={
    "package": "plugin(s) to repackage: a .difypkg file, a marketplace reference author/name:version, or an "
               "http(s) URL (e.g. a GitHub release asset); several may be given comma-separated",
    "pkg": "one more plugin (repeatable: --pkg a.difypkg --pkg langgenius/openai:0.2.7)",
    "out": "directory for the offline packages (default: ./plugins-offline)",
    "python": "Python version of the plugin daemon (default 3.12, what the daemon image runs)",
    "arch": "CPU architecture of the air-gapped servers: amd64 or arm64 (default amd64)",
    "daemon_version": "target plugin daemon version (default: from --project-dir's compose file, else 0.5.2 "
                      "as in Dify 1.11.3)",
    "project_dir": "Dify's docker/ directory: the daemon version and size limits are read from it",
    "sign_key": "sign with this site private key (PKCS#1 PEM from `invoke plugin-keygen`)",
    "marketplace_url": "marketplace base URL for author/name:version (default: $DIFY_AIRGAP_MARKETPLACE_URL, "
                       "else https://marketplace.dify.ai)",
    "cache_dir": "download cache shared by all plugins (default: $DIFY_AIRGAP_CACHE_DIR, ~/.cache/dify-airgap)",
    "keep_pyproject": "keep pyproject.toml (with an offline [tool.uv] table) for daemons 0.5.3+ instead of the "
                      "universal requirements.txt-only recipe",
    "dry_run": "print what would be downloaded, run and written; change nothing",
    "json": "print the results as JSON",
})
@_fails_cleanly
def repackage(c, package, pkg=None, out="plugins-offline", python="3.12", arch="amd64", daemon_version=None,
              project_dir=None, sign_key=None, marketplace_url=None, cache_dir=None, keep_pyproject=False,
              dry_run=False, json_=False):
    """Make Dify plugins install offline: bundle their wheels, rewrite requirements, optionally sign."""
    pkgs = _split(package) + _split(pkg or [])
    if project_dir and not daemon_version:
        daemon_version = plugin_daemon.daemon_version_from_compose(resolve_project_dir(project_dir) / COMPOSE_FILE)
    daemon_version = daemon_version or plugins.DEFAULT_DAEMON_VERSION
    options = dict(python=python, arch=arch, daemon_version=daemon_version, sign_key=sign_key,
                   cache_dir=cache_dir, marketplace_url=marketplace_url)
    if dry_run:
        _emit(True, plugins.plan(pkgs, out, **options))  # the dry run's plan is JSON in both modes
        print("\ndry run: nothing downloaded or written", file=sys.stderr)
        return
    results = plugins.repackage_many(pkgs, out, keep_pyproject=keep_pyproject,
                                     env=plugins.project_limits(project_dir), **options)
    _emit(json_, [r.as_dict() for r in results], lambda: plugins.render_results(results))
    warn(plugins.unsigned_hint(results))


@task(help={
    "out": "directory for the key pair (default: ./plugin-keys)",
    "name": "file name stem: NAME.private.pem and NAME.public.pem (default dify-plugin-site)",
    "bits": "RSA key size (default 4096, like the Dify CLI; the daemon rejects < 1024)",
    "force": "replace an existing key pair",
    "daemon_version": "target plugin daemon version, to print the matching env (default 0.5.2)",
    "json": "print the result as ONE JSON document on stdout (everything else goes to stderr)",
})
@_fails_cleanly
def plugin_keygen(c, out="plugin-keys", name="dify-plugin-site", bits=4096, force=False, daemon_version=None,
                  json_=False):
    """Create the site key pair that signs repackaged plugins, and print the daemon settings."""
    private, public = plugin_sign.write_keypair(out, name=name, bits=int(bits), force=force)
    env, warnings = plugins.signing_env(daemon_version or plugins.DEFAULT_DAEMON_VERSION,
                                        f"/app/keys/{public.name}")
    warn(warnings)
    _emit(json_, {"private_key": str(private), "public_key": str(public),
                  "fingerprint": signature.fingerprint(plugin_sign.load_public_key(public)), "env": env,
                  "warnings": warnings}, plugins.render_keygen(private, public, env))


@task(positional=["package"], iterable=["public_key"], help={
    "package": "the .difypkg to check",
    "public_key": "site public key, PKCS#1 PEM (repeatable; any one verifying is enough, as in the daemon)",
    "json": "print the result as JSON",
})
@_fails_cleanly
def plugin_verify(c, package, public_key=None, json_=False):
    """Check a plugin package's signature with site public keys, as the plugin daemon would."""
    keys = _split(public_key or [])
    if not keys:
        raise UsageError("pass --public-key PEM (the site public key from `invoke plugin-keygen`)")
    result = plugin_sign.verify_package(package, keys)
    _emit(json_, result.to_dict(), result.render, ok=result.verified)


# --- snapshot-daemon / restore-daemon / backup / restore (scripts/data/snapshot.py, scripts/data/backup.py) ---------

STACK_HELP = {
    "project_dir": "Dify's docker/ directory of the RUNNING compose project (default: $DIFY_AIRGAP_PROJECT_DIR "
                   "or a known place); or use --prefix",
    "prefix": "an install root made by `invoke install` (holds docker/ and dify-airgap.json); instead of "
              "--project-dir",
    "project_name": "compose project name (default: from the install record, else COMPOSE_PROJECT_NAME in .env, "
                    "else the directory name)",
    "compose_file": "compose files in -f order, relative to the project dir (repeatable; default: the install "
                    "record's, else docker-compose.yaml, plus compose-overrides/podman.yaml for podman)",
    "runtime": RUNTIME_HELP + "; with --prefix the install record's runtime",
}


def _stack_engine(c, prefix, project_dir, project_name, compose_file, runtime, dry_run=False, new=False):
    """The engine and the compose project the data commands work on."""
    engine = engine_for(c, runtime, dry_run=dry_run, prefix=prefix)
    stack = stackdata.resolve(prefix, project_dir, project_name, _split(compose_file or []), engine.runtime, new=new)
    return engine, stack


@task(help={**STACK_HELP,
            "tag": "name:tag for the committed image (default localhost/dify-airgap/plugin-daemon-snapshot:"
                   "DIFYVERSION-DATE); a name without a registry gets localhost/",
            "output": "where the snapshot directory is written (default: ./snapshots)",
            "dry_run": "print the plan and the exact commands; pause, commit and write nothing",
            "json": "print the result as ONE JSON document on stdout (everything else goes to stderr)"},
      iterable=["compose_file"])
@_fails_cleanly
def snapshot_daemon(c, project_dir=None, prefix=None, project_name=None, compose_file=None, runtime=None,
                    tag=None, output="snapshots", dry_run=False, json_=False):
    """Snapshot the plugin daemon with every plugin installed: image, storage, DB rows, checksums."""

    engine, stack = _stack_engine(c, prefix, project_dir, project_name, compose_file, runtime, dry_run)
    plan = snap.make_plan(stack, Path(output), tag)
    print(plan.render(engine))
    if dry_run:
        _emit(json_, {"dry_run": True, "snapshot": str(plan.final_dir), "image": plan.ref},
              "\n[dry-run] nothing was paused, committed or written")
        return
    done = snap.snapshot_daemon(engine, plan)
    _emit(json_, {"dry_run": False, "snapshot": str(done), "image": plan.ref}, f"\nsnapshot: {done}")


@task(positional=["snapshot"], help={**STACK_HELP,
                                     "snapshot": "the snapshot directory made by `invoke snapshot-daemon`",
                                     "timeout": "seconds to wait for the database and /health/check (default 180)",
                                     "dry_run": "verify the snapshot and print what would be done; change nothing",
                                     "json": "print the result as JSON"},
      iterable=["compose_file"])
@_fails_cleanly
def restore_daemon(c, snapshot, project_dir=None, prefix=None, project_name=None, compose_file=None, runtime=None,
                   timeout=180, dry_run=False, json_=False):
    """Restore a plugin daemon snapshot here: image, storage, DB rows, compose override, health check."""
    engine, stack = _stack_engine(c, prefix, project_dir, project_name, compose_file, runtime, dry_run)
    result = snap.restore_daemon(engine, snapshot, stack, timeout=float(timeout))
    _emit(json_, result, snap.render_restore(result, snapshot))


@task(name="backup", help={**STACK_HELP,
                           "output": "where the backup directory is written (default: ./backups)",
                           "dry_run": "print the plan and the exact commands; stop and write nothing",
                           "json": "print the result as ONE JSON document on stdout (everything else goes to stderr)"},
      iterable=["compose_file"])
@_fails_cleanly
def backup_(c, project_dir=None, prefix=None, project_name=None, compose_file=None, runtime=None, output="backups",
            dry_run=False, json_=False):
    """Back up a Dify installation: databases, storage, vector store, redis, .env, customised files."""

    engine, stack = _stack_engine(c, prefix, project_dir, project_name, compose_file, runtime, dry_run)
    plan = bk.make_plan(stack, Path(output))
    print(plan.render(engine))
    if dry_run:
        _emit(json_, {"dry_run": True, "backup": str(plan.final_dir)},
              "\n[dry-run] nothing was stopped, dumped or written")
        return
    done = bk.backup(engine, plan)
    _emit(json_, {"dry_run": False, "backup": str(done)}, f"\nbackup: {done}")


@task(name="restore", positional=["backup"], help={
    **STACK_HELP,
    "backup": "the backup directory made by `invoke backup`",
    "project_dir": "the docker/ directory to restore into (created if missing; may be another path than the "
                   "source's); or use --prefix",
    "prefix": "the install root to restore into (PREFIX/docker)",
    "no_start": "restore files and databases but do not start the stack",
    "force": "restore over existing data: it is moved aside as NAME.before-restore-TIME, never deleted",
    "timeout": "seconds to wait for the database (default 180)",
    "dry_run": "verify the backup and print what would be restored where; change nothing",
    "json": "print the result as JSON",
}, iterable=["compose_file"])
@_fails_cleanly
def restore_(c, backup, project_dir=None, prefix=None, project_name=None, compose_file=None, runtime=None,
             no_start=False, force=False, timeout=180, dry_run=False, json_=False):
    """Restore a backup on this host (any runtime, any path): files with owners, databases, row counts."""
    engine, stack = _stack_engine(c, prefix, project_dir, project_name, compose_file, runtime, dry_run, new=True)
    result = bk.restore(engine, backup, stack, start=not no_start, force=force, timeout=float(timeout))
    _emit(json_, result, bk.render_restore(result, stack, engine))


@task(help={
    "output": "the inventory file to write (default inventory.json); with --sign-key also OUTPUT.sig",
    "runtime": RUNTIME_HELP,
    "prefix": "the install root whose deployment is listed too (default /opt/dify; none there: images only)",
    "sign_key": "sign the inventory with the site's PKCS#1 private key (invoke plugin-keygen): OUTPUT.sig",
    "dry_run": "list and print the summary; write nothing",
    "json": "print the result as ONE JSON document on stdout (everything else goes to stderr)",
})
@_fails_cleanly
def inventory(c, output="inventory.json", runtime=None, prefix="/opt/dify", sign_key=None, dry_run=False,
              json_=False):
    """List what this (air-gapped) host holds: images with their layers, the installed Dify; carry it out."""
    engine = engine_for(c, runtime, prefix=prefix)
    data = inventories.collect(engine, Path(prefix))
    if dry_run:
        raw = inventories.render(data)
        result = {"dry_run": True, "output": output, "images": len(data["images"]),
                  "deployment": data["deployment"], "digest": signature.manifest_digest(raw)}
        _emit(json_, result, f"[dry-run] would write {output} ({len(raw)} bytes): {len(data['images'])} images; "
                             f"nothing was written")
        return
    path, digest, signer = inventories.write(data, Path(output), sign_key)
    result = {"dry_run": False, "output": str(path), "images": len(data["images"]), "deployment": data["deployment"],
              "signer": signer, "digest": digest}
    _emit(json_, result, lambda: inventories.render_text(data, path, digest, signer))

