"""`invoke snapshot-daemon` / `invoke restore-daemon`: carry a plugin daemon that already installed every
plugin, with its storage and its database rows, to an air-gapped host.

A snapshot is a directory::

    plugin-daemon-1.11.3-20260101T120000/
      manifest.json          kind, versions, image, archives, database row counts, venv check, files
      SHA256SUMS             every other file (`sha256sum -c SHA256SUMS`)
      image.tar.zst          the committed plugin_daemon container (ONE streamed save, compressed)
      plugin_daemon.tar.zst  ./volumes/plugin_daemon (installed plugins, package cache, cwd with venvs),
                             numeric owners and modes kept
      dify_plugin.sql.zst    the plugin daemon's database (plain SQL dump)
                             (manifest.json ``plugin_state``: the plugin identifiers in its rows and files)
      COMPLETE               written last, just before the rename: no marker, no snapshot

Plugins without their DB rows are invisible and rows without files are broken, so files and rows
are taken while the daemon is paused, together with the commit, and a daemon whose files and rows already
disagree is refused before the commit, naming the plugins (:mod:`scripts.data.pluginstate`); restore-daemon
checks the recorded state and the storage archive against it before it changes anything. Everything is written into
``OUTPUT/.NAME.partial`` and renamed to ``OUTPUT/NAME`` only when complete.

The directory format (staging, manifest, compressed archives, verification) is :mod:`scripts.data.datadir`,
shared with :mod:`scripts.data.backup`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from scripts.bundle.load import load_images
from scripts.bundle.manifest import (
    ENTRY,
    MANIFEST,
    SUMS,
)
from scripts.core.console import LOG, human_size
from scripts.core.errors import AirgapError, BadInput, UsageError
from scripts.core.files import fresh_sibling
from scripts.core.lock import hold, holding_output
from scripts.core.waiting import wait_until
from scripts.data import pluginstate, untrusted
from scripts.data import stackdata as sd
from scripts.data.datadir import (
    ARCHIVE_SCHEMA,
    COMPLETE,
    archive_dir,
    check_archive,
    compress_command,
    decompress_to,
    extract_archive,
    now_stamp,
    staging,
    swap_in,
    verify_dir,
    write_manifest,
)
from scripts.data.venvs import Venv, check_venvs, find_venvs, missing_in_image_argv  # noqa: F401 - re-exported
from scripts.dify import deployment
from scripts.dify.project import COMPOSE_FILE
from scripts.engine.client import Engine
from scripts.engine.images import add_config_ids, save_compressed

KIND = "plugin-daemon-snapshot"
SERVICE = "plugin_daemon"
VOLUME = "volumes/plugin_daemon"
IMAGE_ARCHIVE = "image.tar.zst"
VOLUME_ARCHIVE = "plugin_daemon.tar.zst"
REPO = "localhost/dify-airgap/plugin-daemon-snapshot"
OVERRIDE_NAME = "docker-compose.plugin-daemon-snapshot.yaml"
SNAPSHOT_LABEL = "org.dify-airgap.snapshot"
#: what restore-daemon and bundle --daemon-snapshot read from a snapshot's manifest
SNAPSHOT_SCHEMA = {"images": [{"ref": str}], "image_archive": {"compression": str, "parts": [ENTRY]},
                   "volume": {**ARCHIVE_SCHEMA, "?target": str},
                   "database": {**ARCHIVE_SCHEMA, "name": str, "?type": str, "?row_counts": dict},
                   "?plugin_state": dict}  # its shape: pluginstate.PluginState.from_manifest
#: Inside the daemon container: GET $1 with whatever client the image has (wget, curl or python3); with a
#: second argument, send the container's own $SERVER_KEY as X-Api-Key (the key never leaves the container).
HTTP_GET = r"""url=$1; hdr=${2:+"X-Api-Key: $SERVER_KEY"}
if command -v wget >/dev/null 2>&1; then
  if [ -n "$hdr" ]; then exec wget -q -O - --header "$hdr" "$url"; else exec wget -q -O - "$url"; fi
fi
if command -v curl >/dev/null 2>&1; then
  if [ -n "$hdr" ]; then exec curl -fsS -H "$hdr" "$url"; else exec curl -fsS "$url"; fi
fi
exec python3 -c 'import sys, urllib.request as u
r = u.Request(sys.argv[1])
if sys.argv[2]: r.add_header(*[x.strip() for x in sys.argv[2].split(":", 1)])
sys.stdout.write(u.urlopen(r, timeout=10).read().decode())' "$url" "$hdr"
"""


# --- commit --------------------------------------------------------------------------------------

def scrub_env_changes(container_env: Sequence[str], image_env: Sequence[str]) -> list[str]:
    """``--change ENV`` lines that give the committed image its ORIGINAL environment back.

    A commit stores the container's environment, i.e. everything compose passed in (DB_PASSWORD,
    SERVER_KEY...). Those are blanked (compose sets them again at every start) and changed image
    defaults restored, so the snapshot image carries no secret of this host.
    """
    original = dict(item.split("=", 1) for item in image_env if "=" in item)
    changes = []
    for item in container_env:
        key, _, value = item.partition("=")
        if key in original:
            if value != original[key]:
                changes.append(f"ENV {key}={json.dumps(original[key])}")
        else:
            changes.append(f'ENV {key}=""')
    return changes


def commit_argv(engine: Engine, cid: str, ref: str, changes: Sequence[str]) -> list[str]:
    args = ["commit"]
    if engine.is_podman:
        args += ["--format", "docker", "-q"]  # keep Docker's image config (healthcheck, shell) for both engines
    for change in changes:
        args += ["--change", change]
    return [*args, cid, ref]


def default_tag(dify_version: str, stamp: str) -> str:
    return f"{REPO}:{dify_version or 'unknown'}-{stamp}"


_REF = re.compile(r"^[A-Za-z0-9.-]+(?::\d+)?(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?$")


def full_ref(tag: str) -> str:
    """A tag without a registry part gets ``localhost/``: docker and podman then name it the same."""
    if not _REF.match(tag) or "//" in tag:
        raise UsageError(f"--tag {tag!r} is not an image name[:tag]; write e.g. dify-airgap/plugin-daemon:1.11.3")
    first = tag.split("/", 1)[0]
    if "/" in tag and ("." in first or ":" in first or first == "localhost"):
        return tag
    return f"localhost/{tag}" if ":" in tag.rsplit("/", 1)[-1] else f"localhost/{tag}:latest"


@contextmanager
def paused(engine: Engine, cid: str) -> Iterator[None]:
    """Pause the container; ALWAYS unpause, also on error or Ctrl-C."""
    engine.run(["pause", cid])
    try:
        yield
    finally:
        res = engine.run(["unpause", cid], check=False)
        if not res.ok:
            LOG.error("could not unpause %s: %s -- run `%s unpause %s` by hand", cid[:12], res.stderr.strip(),
                      engine.runtime, cid[:12])


# --- snapshot-daemon -----------------------------------------------------------------------------

@dataclass
class SnapshotPlan:
    stack: sd.Stack
    output: Path
    ref: str
    name: str
    database: str

    @property
    def volume(self) -> Path:
        return self.stack.project_dir / VOLUME

    @property
    def final_dir(self) -> Path:
        return self.output / self.name

    def render(self, engine: Engine) -> str:
        db = self.stack.db_service
        return "\n".join([
            f"snapshot {self.final_dir}",
            f"  compose project {self.stack.project_name!r} in {self.stack.project_dir} ({engine.runtime})",
            f"  service {SERVICE} -> image {self.ref}",
            "",
            "steps:",
            f"  {engine.runtime} pause <{SERVICE}>",
            f"  compare the installed plugin files (plugin/) with the {self.database} rows (plugins, "
            f"plugin_installations); refuse naming the plugins when they disagree",
            f"  {shlex.join([engine.runtime, *commit_argv(engine, '<' + SERVICE + '>', self.ref, ['ENV ...'])])}",
            f"  tar -C {self.volume} -c . | zstd > {VOLUME_ARCHIVE}",
            f"  {engine.runtime} exec <{db}> {sd.redact_argv(sd.dump_command(self.stack.db_type, self.database))}"
            f" | zstd > {self.database}.sql.zst",
            f"  {engine.runtime} unpause <{SERVICE}>   (always)",
            f"  check every plugin venv's interpreter exists in {self.ref}",
            f"  {engine.runtime} save {self.ref} | zstd > {IMAGE_ARCHIVE}",
        ])


def make_plan(stack: sd.Stack, output: Path, tag: str | None = None) -> SnapshotPlan:
    stamp = now_stamp()
    ref = full_ref(tag) if tag else default_tag(stack.dify_version, stamp)
    name = f"plugin-daemon-{stack.dify_version or 'unknown'}-{ref.rsplit(':', 1)[-1] if tag else stamp}"
    return SnapshotPlan(stack, output, ref, name, stack.setting("DB_PLUGIN_DATABASE", "dify_plugin"))


@holding_output("snapshot output directory", "invoke snapshot-daemon")
def snapshot_daemon(engine: Engine, plan: SnapshotPlan) -> Path:
    """Perform the plan; returns the finished snapshot directory. One run at a time per output directory."""
    stack = plan.stack
    started = time.monotonic()
    daemon = sd.service_container(engine, stack, SERVICE)
    db = sd.service_container(engine, stack, stack.db_service)
    if not plan.volume.is_dir():
        raise AirgapError(f"{plan.volume} does not exist: the plugin daemon's storage is not where Dify's compose "
                          f"file puts it (./volumes/plugin_daemon); is --project-dir/--prefix right?")
    if not sd.database_exists(engine, db, stack.db_type, plan.database):
        raise AirgapError(f"database {plan.database} does not exist in {stack.db_service}: the plugin daemon has "
                          f"never run against it (or DB_PLUGIN_DATABASE in {stack.env_file} names another); "
                          f"start {SERVICE} once, install the plugins, then snapshot")
    if engine.image_exists(plan.ref):
        raise AirgapError(f"image {plan.ref} already exists; pass another --tag or remove it "
                          f"(`{engine.runtime} image rm {plan.ref}`)")
    info = sd.inspect_container(engine, daemon)
    source_image = info.get("Config", {}).get("Image") or info.get("ImageName") or ""
    image_env = engine.inspect_image(info["Image"]).get("Config", {}).get("Env") or []
    changes = [*scrub_env_changes(info.get("Config", {}).get("Env") or [], image_env),
               f"LABEL {SNAPSHOT_LABEL}=1", f"LABEL {SNAPSHOT_LABEL}.source={source_image}",
               f"LABEL {SNAPSHOT_LABEL}.created={now_stamp()}"]
    committed = False
    with staging(plan.output, plan.name) as stage:
        try:
            LOG.info("pausing %s (%s) for a consistent commit, storage archive and database dump", SERVICE,
                     daemon[:12])
            with paused(engine, daemon):
                plugins = pluginstate.read_state(engine, db, stack.db_type, plan.database, plan.volume,
                                                 info.get("Config", {}).get("Env") or [])
                pluginstate.refuse_snapshot(plugins, plan.database)  # before the commit; the staging is removed
                engine.run(commit_argv(engine, daemon, plan.ref, changes), timeout=1800)
                committed = True
                volume = archive_dir(plan.volume, stage, VOLUME_ARCHIVE)
                counts = sd.row_counts(engine, db, stack.db_type, plan.database)
                dump = compress_command(sd.exec_argv(engine, db, sd.dump_command(stack.db_type, plan.database)),
                                        stage, f"{plan.database}.sql.zst", env=engine.env,
                                        what=f"{plan.database} database")
            LOG.info("unpaused %s", SERVICE)
            cwd = plan.volume / relative_working_path(stack)
            venvs = find_venvs(cwd, plan.volume)
            broken = check_venvs(engine, plan.ref, venvs)
            if broken:
                raise AirgapError("plugin venvs point at interpreters missing from the committed image (they would "
                                  "fail with \"No module named 'encodings'\"):\n" + "\n".join(
                                      f"  {v.path}: needs {', '.join(v.missing)}" for v in broken)
                                  + f"\nReinstall those plugins in {SERVICE} (or fix the image) and snapshot again.")
            LOG.info("plugin venvs: %d, every interpreter present in %s", len(venvs), plan.ref)
            image = engine.inspect_image(plan.ref)

            archive = save_compressed(engine, [plan.ref], stage, IMAGE_ARCHIVE, "zstd", None,
                                      int(image.get("Size") or 0))
            archive["path"] = IMAGE_ARCHIVE
            records = [{"ref": plan.ref, "id": image.get("Id"), "size": int(image.get("Size") or 0),
                        "services": [SERVICE]}]
            add_config_ids(records, archive.pop("config_ids", {}))
            write_manifest(stage, {
                "kind": KIND,
                "dify_version": stack.dify_version,
                "runtime": engine.runtime,
                "source": {"project_name": stack.project_name, "project_dir": str(stack.project_dir),
                           "image": source_image, "host": os.uname().nodename},
                "images": records,
                "image_archive": archive,
                "volume": {**volume, "target": VOLUME},
                "database": {**dump, "type": stack.db_type, "name": plan.database, "row_counts": counts},
                "plugin_state": plugins.to_manifest(),
                "working_path": relative_working_path(stack),
                "venvs": [v.__dict__ for v in venvs],
            }, [archive, volume, dump])
        except BaseException:
            if committed:
                engine.run(["image", "rm", plan.ref], check=False)
            raise
    LOG.info("snapshot ready: %s (%s, %.0fs)", plan.final_dir, human_size(_dir_size(plan.final_dir)),
             time.monotonic() - started)
    return plan.final_dir


def relative_working_path(stack: sd.Stack) -> str:
    """PLUGIN_WORKING_PATH relative to the storage root the volume is mounted on (default ``cwd``)."""
    root = stack.setting("PLUGIN_STORAGE_LOCAL_ROOT", "/app/storage").rstrip("/")
    working = stack.setting("PLUGIN_WORKING_PATH", f"{root}/cwd")
    return os.path.relpath(working, root) if working.startswith(root + "/") else "cwd"


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


# --- bundle hook ---------------------------------------------------------------------------------

def _verified_snapshot(path: str | os.PathLike, schema: dict = SNAPSHOT_SCHEMA) -> tuple[Path, dict]:
    root, manifest = verify_dir(path, KIND, schema)
    if len(manifest["images"]) != 1:
        raise BadInput(f"{root / MANIFEST}: a snapshot holds exactly one image, not {len(manifest['images'])}",
                       hint="make a new snapshot with `invoke snapshot-daemon`")
    return root, manifest


def add_to_bundle(snapshot_dir: str | os.PathLike, staging_dir: Path) -> dict:
    """Copy a finished snapshot into a bundle being built (``daemon-snapshot/``); returns its manifest entry.

    Called by ``bundle.build`` for ``invoke bundle --daemon-snapshot DIR``: the snapshot is verified first,
    its files are hard-linked when possible, and listed by the bundle's own manifest like every file.
    """
    root, manifest = _verified_snapshot(snapshot_dir, {"images": SNAPSHOT_SCHEMA["images"]})
    dest = staging_dir / "daemon-snapshot"
    dest.mkdir(parents=True, exist_ok=True)
    names = {e["path"] for e in manifest["files"]} | {MANIFEST, SUMS, COMPLETE}  # verified files only, no link
    for path in sorted(root.iterdir()):
        if path.name in names and path.is_file() and not path.is_symlink():
            try:
                os.link(path, dest / path.name)
            except OSError:
                shutil.copy2(path, dest / path.name)
    return {"path": "daemon-snapshot", "name": root.name, "image": manifest["images"][0]["ref"],
            "dify_version": manifest.get("dify_version"), "created": manifest.get("created")}


# --- restore-daemon ------------------------------------------------------------------------------

def override_text(ref: str, snapshot: str) -> str:
    return (f"# Written by dify-airgap restore-daemon from {snapshot}.\n"
            f"# Runs the plugin daemon from the committed snapshot image (every plugin already installed).\n"
            f"# Use it as the LAST -f file; delete it (and this -f) to go back to the stock daemon image.\n"
            f"services:\n  {SERVICE}:\n    image: {ref}\n")


def write_override(stack: sd.Stack, ref: str, snapshot: str, dry_run: bool = False) -> tuple[Path, list[str]]:
    """The override file and the stack's compose files with it appended (recorded for ``--prefix``)."""
    if stack.prefix:
        path = stack.prefix / "compose-overrides" / "plugin-daemon-snapshot.yaml"
        entry = os.path.relpath(path, stack.project_dir)
    else:
        path = stack.project_dir / OVERRIDE_NAME
        entry = OVERRIDE_NAME
    files = list(stack.files) or [COMPOSE_FILE]
    if entry not in files and str(path) not in files:
        files.append(entry)
    if dry_run:
        print(f"[dry-run] write {path}:\n{override_text(ref, snapshot)}")
        return path, files
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(override_text(ref, snapshot))
    if stack.prefix:
        record = deployment.load(stack.prefix)
        record.compose_files = files
        record.save()
    return path, files


def restore_database(engine: Engine, stack: sd.Stack, root: Path, entry: dict, timeout: float = 120) -> dict:
    """Recreate the database, load the dump, compare row counts with the manifest's."""
    db = _running_db(engine, stack, timeout)
    name, db_type = entry["name"], entry.get("type", stack.db_type)
    sd.db_exec(engine, db, sd.recreate_command(db_type, name), timeout=timeout, what=f"recreating database {name}")
    decompress_to(root, entry, sd.exec_argv(engine, db, sd.load_command(db_type, name), interactive=True))
    counts = sd.row_counts(engine, db, db_type, name)
    want = entry.get("row_counts") or {}
    diff = {t: (n, counts.get(t)) for t, n in want.items() if counts.get(t) != n}
    if diff:
        raise AirgapError(f"database {name}: row counts differ after restore (table: expected, found): "
                          + ", ".join(f"{t}: {a}, {b}" for t, (a, b) in sorted(diff.items())))
    LOG.info("database %s restored: %d tables, %d rows, counts equal the snapshot's", name, len(counts),
             sum(counts.values()))
    return counts


def _running_db(engine: Engine, stack: sd.Stack, timeout: float) -> str:
    service = stack.db_service
    if not sd.containers(engine, stack, service):
        LOG.info("starting %s to restore the database", service)
        stack.compose(engine, ["up", "-d", service], timeout=600)
    db = sd.service_container(engine, stack, service)
    sd.wait_db(engine, db, stack.db_type, timeout)
    return db


def remove_service_containers(engine: Engine, stack: sd.Stack, service: str) -> None:
    ids = sd.containers(engine, stack, service, all_=True)
    if ids:
        engine.run(["rm", "--force", *ids], timeout=300)


def http_get_argv(url: str, api_key: bool = False) -> list[str]:
    """``sh -c`` that GETs ``url`` inside the daemon container (with its own key when ``api_key``)."""
    return ["sh", "-c", HTTP_GET, "sh", url, *(["key"] if api_key else [])]


def check_daemon(engine: Engine, stack: sd.Stack, timeout: float = 180) -> dict:
    """``/health/check`` answers ok, and the daemon lists as many plugins per tenant as the DB holds."""
    port = stack.setting("PLUGIN_DAEMON_PORT", "5002")

    def health() -> dict | None:
        cid = sd.service_container(engine, stack, SERVICE)
        res = sd.exec_in(engine, cid, http_get_argv(f"http://127.0.0.1:{port}/health/check"), check=False,
                         mutates=False, timeout=30)
        data = json.loads(res.stdout) if res.ok and res.stdout.strip() else None
        return data if data and data.get("status") == "ok" else None

    result = {"health": wait_until(health, timeout, what=f"{SERVICE} /health/check to answer status ok")}
    result["plugins"] = check_plugin_list(engine, stack, port)
    return result


def check_plugin_list(engine: Engine, stack: sd.Stack, port: str) -> dict:
    db = sd.service_container(engine, stack, stack.db_service)
    database = stack.setting("DB_PLUGIN_DATABASE", "dify_plugin")
    query = "SELECT tenant_id || '=' || count(*) FROM plugin_installations GROUP BY tenant_id"
    res = sd.exec_in(engine, db, sd._sh('PGPASSWORD="$POSTGRES_PASSWORD" exec psql -X -A -t -q -U '
                                        '"${POSTGRES_USER:-postgres}" --dbname="$1" -c "$2"', database, query),
                     check=False, mutates=False)
    if stack.db_type != "postgresql" or not res.ok:
        LOG.warning("could not read plugin_installations from %s; plugin list not checked", database)
        return {}
    expected = sd.parse_row_counts(res.stdout)
    daemon = sd.service_container(engine, stack, SERVICE)
    listed = {}
    for tenant, rows in expected.items():
        url = f"http://127.0.0.1:{port}/plugin/{tenant}/management/list?page=1&page_size=256"
        out = sd.exec_in(engine, daemon, http_get_argv(url, api_key=True), check=False,
                         mutates=False, timeout=30)
        try:
            data = json.loads(out.stdout).get("data")
        except ValueError:
            data = None
        if not out.ok or data is None:
            raise AirgapError(f"{SERVICE} did not list the plugins of tenant {tenant} ({out.stderr.strip()[-300:]})")
        count = data.get("total", len(data.get("list") or [])) if isinstance(data, dict) else len(data)
        if count != rows:
            raise AirgapError(f"{SERVICE} lists {count} plugin(s) for tenant {tenant}, the database holds {rows}")
        listed[tenant] = count
    LOG.info("plugins listed by %s per tenant equal the database's: %s", SERVICE, listed or "none installed")
    return listed


def render_restore(result: dict, snapshot: str | os.PathLike) -> str | None:
    """What ``invoke restore-daemon`` prints for :func:`restore_daemon`'s result (nothing for a dry run)."""
    if result.get("dry_run"):
        return None
    lines = [f"plugin daemon restored from {snapshot}: image {result['image']}, health "
             f"{result['health'].get('status')}, plugins per tenant {result['plugins'] or 'none'}",
             f"compose override: {result['override']} (keep it as the last -f file: "
             f"-f {' -f '.join(result['compose_files'])})"]
    if result.get("previous_volume"):
        lines.append(f"previous plugin storage kept at {result['previous_volume']}")
    return "\n".join(lines)


def restore_daemon(engine: Engine, snapshot: str | os.PathLike, stack: sd.Stack, timeout: float = 180) -> dict:
    """Verify, load the image, restore storage and DB rows, point compose at the image, restart, check."""
    root, manifest = _verified_snapshot(snapshot)
    with nullcontext() if engine.dry_run else hold(stack.prefix or stack.project_dir, "install root",
                                                   "invoke restore-daemon"):
        return _restore_daemon(engine, root, manifest, stack, timeout)


def _restore_daemon(engine: Engine, root: Path, manifest: dict, stack: sd.Stack, timeout: float) -> dict:
    ref = manifest["images"][0]["ref"]
    recorded = pluginstate.recorded_state(manifest, f"snapshot {root}")  # refused here: nothing changed yet
    volume_target = untrusted.restore_target(stack.project_dir, stack.prefix, manifest["volume"].get("target", VOLUME),
                                             f"snapshot {root}")
    if engine.dry_run:
        print(f"[dry-run] load {ref} from {root / IMAGE_ARCHIVE}; stop and remove {SERVICE}; restore "
              f"{volume_target} and database {manifest['database']['name']}; restart {SERVICE}")
        write_override(stack, ref, root.name, dry_run=True)
        return {"image": ref, "dry_run": True}

    stamp = now_stamp()
    restoring = volume_target.with_name(f".{volume_target.name}.restoring-{stamp}")
    names: list[str] = []
    check_archive(root, manifest["volume"], restoring, names)  # refused before anything is loaded or stopped
    if recorded is not None:
        pluginstate.check_members(recorded, names, f"snapshot {root}")
    load_images(engine, root, manifest)
    LOG.info("stopping %s", SERVICE)
    remove_service_containers(engine, stack, SERVICE)
    fresh_sibling(volume_target, "restoring", stamp)  # the same name: what an interrupted restore left is removed
    try:
        extract_archive(root, manifest["volume"], restoring, checked=True)
    except BaseException:
        shutil.rmtree(restoring, ignore_errors=True)
        raise
    kept = swap_in(restoring, volume_target, stamp)
    if sd.selinux_enforcing():
        engine.run(sd.relabel_argv([volume_target]), argv0=())
    counts = restore_database(engine, stack, root, manifest["database"])
    override, files = write_override(stack, ref, root.name)
    stack.files = files
    LOG.info("starting %s from %s (override %s)", SERVICE, ref, override)
    stack.compose(engine, ["up", "-d", "--no-deps", SERVICE], timeout=600)
    checked = check_daemon(engine, stack, timeout)
    return {"image": ref, "volume": str(volume_target), "previous_volume": str(kept) if kept else None,
            "database": manifest["database"]["name"], "row_counts": counts, "override": str(override),
            "compose_files": files, **checked}
