"""dify-airgap tasks. Each task parses its options, calls one function in scripts/, and prints.

Run `invoke --list` for the tasks and `invoke --help TASK` for a task's options.
"""

from __future__ import annotations

import json
import sys
from functools import wraps

from invoke import Exit, task

from scripts import __version__
from scripts.console import setup_logging
from scripts.engine import Engine, resolve_runtime
from scripts.errors import AirgapError

RUNTIME_HELP = "docker or podman (default: invoke.yaml airgap.runtime, then $DIFY_AIRGAP_RUNTIME, then auto-detect)"


def _fails_cleanly(func):
    """Turn our errors into `invoke.Exit` with the message, never a bare traceback."""

    @wraps(func)
    def wrapper(c, *args, **kwargs):
        setup_logging(verbose=bool(c.config.get("airgap", {}).get("verbose")))
        try:
            return func(c, *args, **kwargs)
        except AirgapError as exc:
            raise Exit(f"error: {exc}", code=1) from None
        except KeyboardInterrupt:
            raise Exit("interrupted; nothing half-written was kept", code=130) from None

    return wrapper


def engine_for(c, runtime: str | None, dry_run: bool = False) -> Engine:
    """The engine chosen by --runtime > invoke.yaml > $DIFY_AIRGAP_RUNTIME > auto-detection."""
    config = c.config.get("airgap", {}) or {}
    name, source = resolve_runtime(runtime, config.get("runtime"))
    compose = config.get("compose")
    engine = Engine(name, dry_run=dry_run, compose_argv=tuple(compose.split()) if compose else None)
    print(f"runtime: {name} ({source})", file=sys.stderr)
    return engine


@task(help={"json": "print the report as JSON", "runtime": "check only this runtime (docker or podman)"})
@_fails_cleanly
def doctor(c, json_=False, runtime=None):
    """Report engines, compose providers, versions, SELinux, disk, and what is missing."""
    from scripts import doctor as doc

    runtimes = (runtime,) if runtime else ("docker", "podman")
    report = doc.diagnose(runtimes)
    print(json.dumps(report, indent=2) if json_ else doc.render(report))
    if not report["usable"]:
        raise Exit("no container engine answers; install one with the fix shown above", code=1)


@task
def version(c):
    """Print the toolkit version."""
    print(f"dify-airgap {__version__}")


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
    "version": "Dify version, used to find the project directory (default 1.11.3)",
    "runtime": RUNTIME_HELP,
    "json": "print the plan as JSON",
})
@_fails_cleanly
def images(c, project_dir=None, env_file=None, profiles="", all_profiles=False, vector_stores="",
           db_type=None, version="1.11.3", runtime=None, json_=False):
    """List the exact images the Dify compose project needs, with the services needing each."""
    from scripts import compose_plan
    from scripts.project import resolve_env_file, resolve_project_dir

    project = resolve_project_dir(project_dir, version)
    plan = compose_plan.plan_images(engine_for(c, runtime), project, resolve_env_file(project, env_file),
                                    profiles=_split(profiles), vector_stores=_split(vector_stores),
                                    all_profiles=all_profiles, db_type=db_type)
    print(compose_plan.images_json(plan) if json_ else plan.render())


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
    "old_example": "the .env.example your --upgrade-from file was made from (required with --upgrade-from)",
    "middleware": "render middleware.env from middleware.env.example (middleware/dev compose mode)",
    "dry_run": "show which keys would change (never secret values) and write nothing",
    "json": "print the report as JSON (no secret values)",
}, iterable=["set_"])
@_fails_cleanly
def env(c, project_dir=None, out=None, server_ip=None, base_url=None, site_file=None, set_=None,
        regenerate_secrets=False, upgrade_from=None, old_example=None, middleware=False, dry_run=False,
        json_=False):
    """Write Dify's .env for this site: offline settings, server URLs, strong secrets (mode 0600)."""
    from pathlib import Path

    from scripts import envfile
    from scripts.console import redact, table
    from scripts.project import resolve_project_dir

    project = resolve_project_dir(project_dir)
    target = Path(out) if out else project / ("middleware.env" if middleware else ".env")
    report = envfile.render_env_file(
        project, target, server_ip=server_ip, base_url=base_url,
        site_file=Path(site_file) if site_file else None, overrides=envfile.parse_overrides(set_ or []),
        regenerate_secrets=regenerate_secrets, middleware=middleware, dry_run=dry_run,
        upgrade_from=Path(upgrade_from) if upgrade_from else None,
        old_example=Path(old_example) if old_example else None)
    if json_:
        print(redact(json.dumps(report.to_dict(), indent=2)))
        return
    keys = list(dict.fromkeys(list(report.sources) + report.changed))
    rows = [(k, report.status(k), "changed" if k in report.changed else "same",
             "(secret)" if envfile.is_secret_key(k) else report.values.get(k, "")) for k in keys]
    print(redact(table(["KEY", "FROM", "VS CURRENT", "VALUE"], rows)))
    if report.merge:
        print("\nupgrade merge:")
        print(redact("\n".join(f"  {line}" for line in report.merge.lines()) or "  nothing to report"))
    for warning in report.warnings:
        print(redact(f"warning: {warning}"), file=sys.stderr)
    counts = (f"{len(report.changed)} key(s) differ from the "
              f"{'current file' if target.exists() else 'example'}, {len(report.generated)} secret(s) generated, "
              f"{len(report.kept)} kept, {len(report.supplied)} supplied")
    if report.written:
        print(f"\nwrote {target} (mode 0600): {counts}")
    else:
        print(f"\ndry run: nothing written; {target} would get: {counts}")
