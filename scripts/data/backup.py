"""`invoke backup` / `invoke restore`: move a whole Dify installation to another host, nothing lost.

A backup is a directory (written as ``.NAME.partial``, renamed when complete, marker ``COMPLETE``)::

    dify-backup-PROJECT-20260101T120000/
      manifest.json            source (runtime, path, versions, DB type, vector store), databases with
                               row counts, archives with their roles, every file's sha256
      SHA256SUMS
      db-dify.sql.zst          pg_dump of each database (mysqldump with DB_TYPE=mysql)
      db-dify_plugin.sql.zst
      volumes-app.tar.zst      app storage (uid 1001 kept: numeric owners, modes)
      volumes-plugin_daemon.tar.zst, volumes-weaviate.tar.zst (the vector store), volumes-redis.tar.zst ...
      project.tar.zst          Dify's docker/ directory WITHOUT volumes/: .env (0600 kept), nginx and
                               squid conf, compose files and overrides: the operator's customisations

Writers (api, worker, worker_beat, plugin_daemon, the vector store, redis) are stopped while the data
is taken and started again afterwards, also on error. Database files are never copied: dumps restore
on another engine, path and OS.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from scripts.core.console import LOG, human_size
from scripts.core.errors import AirgapError
from scripts.core.files import fresh_sibling
from scripts.core.lock import hold, holding_output
from scripts.data import datadir, untrusted
from scripts.data import stackdata as sd
from scripts.data.snapshot import restore_database
from scripts.data.untrusted import OVERRIDES_TARGET
from scripts.engine.client import Engine

KIND = "dify-backup"
#: volumes/ entries that hold database FILES: dumped instead, never archived.
DB_DIRS = ("db", "mysql", "oceanbase", "seekdb", "opengauss", "vastbase", "oracle", "iris", "matrixone",
           "myscale")
#: What each volumes/ entry is, for the report (anything else is archived as "data").
ROLES = {"app": "app storage", "plugin_daemon": "plugin storage", "redis": "redis data",
         "sandbox": "sandbox config", "certbot": "certificates", "ssrf_proxy": "squid data"}
#: VECTOR_STORE -> its compose service and volumes/ entry.
VECTOR_STORES = {"weaviate": ("weaviate", "weaviate"), "qdrant": ("qdrant", "qdrant"), "milvus": ("milvus", "milvus"),
                 "pgvector": ("pgvector", "pgvector"), "chroma": ("chroma", "chroma"),
                 "elasticsearch": ("elasticsearch", "elasticsearch"), "opensearch": ("opensearch", "opensearch"),
                 "pgvecto-rs": ("pgvecto-rs", "pgvecto_rs")}
PROJECT_ARCHIVE = "project.tar.zst"
#: what restore reads from a backup's manifest
BACKUP_SCHEMA = {"archives": [{**datadir.ARCHIVE_SCHEMA, "target": str, "role": str}],
                 "databases": [{**datadir.ARCHIVE_SCHEMA, "name": str, "?type": str, "?row_counts": dict}]}


@dataclass
class BackupPlan:
    stack: sd.Stack
    output: Path
    name: str
    databases: list[str]
    volumes: list[tuple[str, str]]  # (volumes/ entry, role)
    stop: list[str] = field(default_factory=list)  # services stopped while the data is taken

    @property
    def final_dir(self) -> Path:
        return self.output / self.name

    def render(self, engine: Engine) -> str:
        s = self.stack
        lines = [f"backup {self.final_dir}",
                 f"  compose project {s.project_name!r} in {s.project_dir} ({engine.runtime}), DB_TYPE={s.db_type}, "
                 f"VECTOR_STORE={s.setting('VECTOR_STORE', 'weaviate')}",
                 "", "steps:",
                 f"  stop {', '.join(self.stop)} (those running; started again afterwards, also on error)"]
        for db in self.databases:
            lines.append(f"  {engine.runtime} exec <{s.db_service}> "
                         f"{sd.redact_argv(sd.dump_command(s.db_type, db))} | zstd > db-{db}.sql.zst")
        for entry, role in self.volumes:
            lines.append(f"  tar -C {s.project_dir / 'volumes' / entry} -c . | zstd > volumes-{entry}.tar.zst"
                         f"   # {role}")
        lines.append(f"  tar -C {s.project_dir} --exclude ./volumes -c . | zstd > {PROJECT_ARCHIVE}"
                     "   # .env (0600), nginx/squid conf, compose files and overrides")
        return "\n".join(lines)


def make_plan(stack: sd.Stack, output: Path) -> BackupPlan:
    vector = stack.setting("VECTOR_STORE", "weaviate")
    vector_service, vector_dir = VECTOR_STORES.get(vector, (vector, vector))
    volumes_root = stack.project_dir / "volumes"
    volumes = []
    if volumes_root.is_dir():
        for entry in sorted(p.name for p in volumes_root.iterdir() if p.is_dir()):
            if entry in DB_DIRS or entry.startswith("."):
                continue
            role = "vector store" if entry == vector_dir else ROLES.get(entry, "data")
            volumes.append((entry, role))
    if vector_dir not in {v for v, _ in volumes}:
        LOG.warning("VECTOR_STORE=%s but %s does not exist: no vector data to back up", vector,
                    volumes_root / vector_dir)
    databases = [stack.setting("DB_DATABASE", "dify"), stack.setting("DB_PLUGIN_DATABASE", "dify_plugin")]
    stop = [*sd.WRITERS, vector_service, "redis"]
    name = f"dify-backup-{stack.project_name}-{datadir.now_stamp()}"
    return BackupPlan(stack, output, name, databases, volumes, stop)


class StoppedWriters:
    """Stop the writers that run; start exactly those again on exit (also on error or Ctrl-C)."""

    def __init__(self, engine: Engine, stack: sd.Stack, services: list[str]) -> None:
        self.engine, self.stack, self.services = engine, stack, services
        self.stopped: list[str] = []

    def __enter__(self) -> StoppedWriters:
        for service in self.services:
            for cid in sd.containers(self.engine, self.stack, service):
                self.engine.run(["stop", "--time", "30", cid], timeout=120)
                self.stopped.append(cid)
                LOG.info("stopped %s (%s)", service, cid[:12])
        return self

    def __exit__(self, *exc) -> None:
        for cid in reversed(self.stopped):
            res = self.engine.run(["start", cid], check=False, timeout=120)
            if not res.ok:
                LOG.error("could not start %s again: %s -- run `%s start %s`", cid[:12], res.stderr.strip(),
                          self.engine.runtime, cid[:12])
        if self.stopped:
            self._restart_proxies()

    def _restart_proxies(self) -> None:
        """Containers started again may get each other's addresses; nginx resolved api and plugin_daemon once, at
        its start, and would send /console/api to the wrong one (502): restart it so it resolves them again."""
        for cid in sd.containers(self.engine, self.stack, "nginx"):
            res = self.engine.run(["restart", "--time", "10", cid], check=False, timeout=120)
            if res.ok:
                LOG.info("nginx restarted (it resolves the restarted services again)")
            else:
                LOG.error("could not restart nginx: %s -- run `%s restart %s`", res.stderr.strip(),
                          self.engine.runtime, cid[:12])


@holding_output("backup output directory", "invoke backup")
def backup(engine: Engine, plan: BackupPlan) -> Path:
    """Perform the plan; returns the finished backup directory. One run at a time per output directory."""
    stack = plan.stack
    started = time.monotonic()
    db = sd.service_container(engine, stack, stack.db_service)
    databases = []
    with datadir.staging(plan.output, plan.name) as stage:
        archives: list[dict] = []  # files restored by extraction (dumps are in `databases`)
        with StoppedWriters(engine, stack, plan.stop) as stopped:
            for name in plan.databases:
                if not sd.database_exists(engine, db, stack.db_type, name):
                    LOG.warning("database %s does not exist; skipped", name)
                    continue
                counts = sd.row_counts(engine, db, stack.db_type, name)
                dump = datadir.compress_command(sd.exec_argv(engine, db, sd.dump_command(stack.db_type, name)), stage,
                                        f"db-{name}.sql.zst", env=engine.env, what=f"{name} database")
                databases.append({**dump, "type": stack.db_type, "name": name, "row_counts": counts})
            for entry, role in plan.volumes:
                archive = datadir.archive_dir(stack.project_dir / "volumes" / entry, stage, f"volumes-{entry}.tar.zst")
                archives.append({**archive, "target": f"volumes/{entry}", "role": role})
        project = datadir.compress_command(["tar", "--numeric-owner", "-C", str(stack.project_dir), "--exclude",
                                    "./volumes", "-cpf", "-", "."], stage, PROJECT_ARCHIVE, what="configuration")
        archives.append({**project, "target": ".", "role": "configuration"})
        if stack.prefix and (stack.prefix / "compose-overrides").is_dir():
            overrides = datadir.archive_dir(stack.prefix / "compose-overrides", stage, "compose-overrides.tar.zst")
            archives.append({**overrides, "target": OVERRIDES_TARGET, "role": "compose overrides"})
        datadir.write_manifest(stage, {
            "kind": KIND,
            "dify_version": stack.dify_version,
            "runtime": engine.runtime,
            "source": {"project_name": stack.project_name, "project_dir": str(stack.project_dir),
                       "compose_files": stack.files, "host": os.uname().nodename,
                       "stopped": len(stopped.stopped)},
            "db_type": stack.db_type,
            "vector_store": stack.setting("VECTOR_STORE", "weaviate"),
            "databases": databases,
            "archives": archives,
        }, [*archives, *databases])
    LOG.info("backup ready: %s (%s, %.0fs)", plan.final_dir,
             human_size(sum(p.stat().st_size for p in plan.final_dir.iterdir())), time.monotonic() - started)
    return plan.final_dir


def render_restore(result: dict, stack: sd.Stack, engine: Engine) -> str | None:
    """What ``invoke restore`` prints for :func:`restore`'s result (nothing for a dry run)."""
    if result.get("dry_run"):
        return None
    counts = ", ".join(f"{db} ({sum(c.values())} rows)" for db, c in result["row_counts"].items())
    return (f"restored {result['backup']} into {stack.project_dir}; row counts equal the backup's: {counts}\n"
            + ("started" if result["started"] else f"not started: run `{stack.compose_command(engine)} up -d`"))


def _restore_archives(root: Path, manifest: dict, dests: dict[str, Path]) -> list[str]:
    """Check EVERY archive first (nothing written if one is refused), then extract: volumes into a new
    ``.NAME.restoring-TIME`` swapped in (the old data moved aside), the rest in place."""
    stamp = datadir.now_stamp()
    plan = []
    for archive in manifest["archives"]:
        if archive["path"] not in dests:
            LOG.info("%s: no install root (--prefix), kept in %s only", archive["role"], root)
            continue
        dest = dests[archive["path"]]
        tmp = dest.with_name(f".{dest.name}.restoring-{stamp}") if archive["target"].startswith("volumes/") else None
        datadir.check_archive(root, archive, tmp or dest)
        plan.append((archive, dest, tmp))
    for archive, dest, tmp in plan:
        if tmp is not None:
            fresh_sibling(dest, "restoring", stamp)  # the same name: what an interrupted restore left is removed
            try:
                datadir.extract_archive(root, archive, tmp, checked=True)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            datadir.swap_in(tmp, dest, stamp)
        else:
            datadir.extract_archive(root, archive, dest, checked=True)
    return [str(dest) for _, dest, _ in plan]


def restore(engine: Engine, backup_dir: str | os.PathLike, stack: sd.Stack, start: bool = True,
            force: bool = False, timeout: float = 180) -> dict:
    """Verify, restore files (owners, modes, SELinux labels), databases (row counts), then start."""
    root, manifest = datadir.verify_dir(backup_dir, KIND, BACKUP_SCHEMA)
    with nullcontext() if engine.dry_run else hold(stack.prefix or stack.project_dir, "install root",
                                                   "invoke restore"):
        return _restore(engine, root, manifest, stack, start, force, timeout)


def _restore(engine: Engine, root: Path, manifest: dict, stack: sd.Stack, start: bool, force: bool,
             timeout: float) -> dict:
    target = stack.project_dir
    # every target checked before anything is written: '.', 'volumes/NAME', '../compose-overrides' (--prefix)
    dests = {a["path"]: untrusted.restore_target(target, stack.prefix, a["target"], f"backup {root}: archive "
                                                                                    f"{a['path']!r}")
             for a in manifest["archives"] if a["target"] != OVERRIDES_TARGET or stack.prefix is not None}
    volume_archives = [a for a in manifest["archives"] if a["target"].startswith("volumes/")]
    busy = [a["target"] for a in volume_archives
            if (target / a["target"]).is_dir() and any((target / a["target"]).iterdir())]
    if busy and not force:
        raise AirgapError(f"{target} already holds data in {', '.join(busy)}; restore into an empty project "
                          f"directory, or pass --force to move that data aside (kept as NAME.before-restore-TIME)")
    if engine.dry_run:
        for a in manifest["archives"]:
            print(f"[dry-run] extract {a['path']} -> {dests.get(a['path'], 'skipped: no --prefix')}   # {a['role']}")
        for d in manifest["databases"]:
            print(f"[dry-run] recreate database {d['name']} and load {d['path']}, then compare row counts")
        return {"dry_run": True}
    restored = _restore_archives(root, manifest, dests)
    if sd.selinux_enforcing():
        LOG.info("SELinux is enforcing: labelling restored data container_file_t")
        engine.run(sd.relabel_argv([target / "volumes"]), argv0=())
    counts = {d["name"]: restore_database(engine, stack, root, d, timeout) for d in manifest["databases"]}
    if start:
        stack.compose(engine, ["up", "-d"], timeout=900)
    return {"backup": str(root), "restored": restored, "row_counts": counts, "started": start}
