"""Installed plugins: the files in the plugin daemon's storage against its ``dify_plugin`` rows.

``snapshot-daemon`` refuses to write, and ``restore-daemon`` to restore, a daemon whose plugin files and rows
disagree, naming the plugins: a snapshot that carries one without the other loses plugins silently.

What the daemon keeps, read from langgenius/dify-plugin-daemon at tags 0.5.2, 0.6.3 and 0.6.10 (the same in
all three unless said otherwise; the storage root is ``PLUGIN_STORAGE_LOCAL_ROOT``, ``/app/storage`` =
``./volumes/plugin_daemon`` in Dify's compose file):

- an installed plugin is the FILE ``PLUGIN_INSTALLED_PATH/<plugin_unique_identifier>`` (default ``plugin``,
  internal/types/app/default.go; the identifier's ``author/`` is a sub-directory:
  ``plugin/langgenius/openai:0.2.7@<sha256>``), written by ``InstalledBucket.Save``
  (internal/core/plugin_manager/media_transport/installed_bucket.go:37) and listed by ``InstalledBucket.List``
  (same file, lines 62-87: regular files, names starting with ``.`` skipped, names that are not an identifier
  logged and skipped);
- a plugin is started from its PACKAGE ``PLUGIN_PACKAGE_CACHE_PATH/<identifier>`` (default ``plugin_packages``;
  internal/core/control_panel/builder.go:33 ``packageBucket.Get``), which an uninstall leaves in place;
- its venv and unpacked code live in ``PLUGIN_WORKING_PATH/<author>/<name>-<version>@<checksum>``
  (internal/core/local_runtime/constructor.go ``buildPluginWorkingPath``, ``:`` replaced by ``-``), made from
  the package;
- the rows: table ``plugins`` (one row per installed package: ``plugin_unique_identifier``, ``install_type``
  ``local``/``remote``/``serverless``, ``refers``; internal/types/models/plugin.go:11-15 at 0.5.2, :12-16 at 0.6.x)
  and table ``plugin_installations`` (one row per tenant: ``tenant_id``, ``plugin_unique_identifier``,
  ``runtime_type``; internal/types/models/installation.go:9-10); both created by ``AutoMigrate``
  (internal/db/init.go). Uninstalling the last tenant's installation deletes the ``plugins`` row AND the
  installed file (internal/service/install_plugin.go, ``IsPluginDeleted`` -> ``RemoveLocalPlugin``).

At start and every 30 s the daemon launches every installed file (internal/core/control_panel/server_local.go
``handleNewLocalPlugins``). From 0.6.2 on it first looks the file up in ``plugins`` and SKIPS a file without a
row, logging ``Plugin table missing for existing PLUGIN_INSTALLED_PATH`` (server_local.go:84 at 0.6.3, commit
918ce6fe, #748); 0.5.x starts it without looking at the rows. A row without a file is listed for its tenant but has no
runtime. An install writes and starts the file first and its rows only when that is done
(internal/core/plugin_manager/installer.go:312 ``InstallToLocal``, then internal/tasks/install_plugin.go
``SaveInstallationForTenantsToDB`` on the Done event, 0.6.3), so an install cut off in between leaves a file
without rows. So:

- a ``plugins`` or ``plugin_installations`` row (``local``) without the installed file: broken;
- an installed file without a ``plugins`` row: invisible (skipped by 0.6.2+);
- an installed file with rows but without its package: it cannot start.

Where the database has no such table (a stand-in daemon, or a daemon that never ran) there are no rows: with no
installed file either there is nothing to compare; installed files then have no rows and are refused. A table
without its type column (not a real daemon's schema) has every row counted as ``local``; both are said in a log
line and recorded in the manifest's ``plugin_state.notes``. Storage that is not ``local`` (S3...) is not in the
volume: nothing is compared (``plugin_state.skipped``).
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scripts.core.console import LOG
from scripts.core.errors import AirgapError, BadInput
from scripts.core.inputs import check_shape
from scripts.data import stackdata as sd
from scripts.engine.client import Engine

#: pkg/entities/plugin_entities/identity.go:22 (0.5.2 to 0.6.10): author/name:version@checksum
IDENTIFIER = re.compile(r"^(?:[a-z0-9_-]{1,64}/)?[a-z0-9_-]{1,255}:[0-9]{1,4}(\.[0-9]{1,4}){1,3}(-\w{1,16})?"
                        r"@[a-f0-9]{32,64}\Z", re.ASCII)  # \Z: Go's $ (Python's $ also matches before a "\n")
#: the tables that record an installed plugin, with the column that says local (files) or not (remote debugging)
TABLES = (("plugins", "install_type"), ("plugin_installations", "runtime_type"))
STATE_SCHEMA = {"installed_path": str, "package_path": str,
                "rows": {"plugins": [str], "plugin_installations": [str]},
                "installed": [str], "packages": [str], "?notes": [str]}
SNAPSHOT_HINT = ("in Dify, reinstall or remove each plugin named (Plugins page) and wait until plugin_daemon lists "
                 "it again, then run snapshot-daemon again (docs/snapshot-backup.md#plugin-files-and-rows)")
RESTORE_HINT = ("this snapshot would restore those plugins broken or invisible: make a new one with "
                "`invoke snapshot-daemon` on the online host (docs/snapshot-backup.md#plugin-files-and-rows)")


@dataclass
class PluginState:
    """What a snapshot saw: the identifiers in the rows and in the storage (paths relative to the volume)."""

    installed_path: str = "plugin"
    package_path: str = "plugin_packages"
    rows: dict[str, list[str]] = field(default_factory=lambda: {t: [] for t, _ in TABLES})
    installed: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str = ""  # why nothing was compared

    def disagreements(self) -> dict[str, list[str]]:
        return disagreements(self.rows, self.installed, self.packages, self.installed_path, self.package_path)

    def to_manifest(self) -> dict:
        if self.skipped:
            return {"skipped": self.skipped}
        return {"installed_path": self.installed_path, "package_path": self.package_path,
                "rows": {t: sorted(set(self.rows.get(t, ()))) for t, _ in TABLES},
                "installed": sorted(self.installed), "packages": sorted(self.packages), "notes": self.notes}

    @classmethod
    def from_manifest(cls, data: object, where: str) -> PluginState:
        """The recorded state, its shape and every identifier and path checked (the manifest is not trusted)."""
        fix = "re-copy the snapshot, or make a new one with `invoke snapshot-daemon`"
        if isinstance(data, dict) and "skipped" in data:
            check_shape(data, {"skipped": str}, f"{where}: plugin_state", fix)
            return cls(skipped=data["skipped"])
        check_shape(data, STATE_SCHEMA, f"{where}: plugin_state", fix)
        for key in ("installed_path", "package_path"):
            if _relative(data[key]) != data[key]:
                raise BadInput(f"{where}: plugin_state.{key} {data[key]!r} is not a plain relative path", hint=fix)
        listed = [*data["installed"], *data["packages"], *(i for t, _ in TABLES for i in data["rows"][t])]
        bad = next((i for i in listed if not IDENTIFIER.match(i)), None)
        if bad is not None:
            raise BadInput(f"{where}: plugin_state names {bad[:300]!r}, not a plugin unique identifier", hint=fix)
        return cls(data["installed_path"], data["package_path"], {t: list(data["rows"][t]) for t, _ in TABLES},
                   list(data["installed"]), list(data["packages"]), list(data.get("notes") or []))


def disagreements(rows: Mapping[str, Iterable[str]], installed: Iterable[str], packages: Iterable[str],
                  installed_path: str = "plugin", package_path: str = "plugin_packages") -> dict[str, list[str]]:
    """Plugin identifier -> what is wrong with it, for every plugin whose files and rows disagree (sorted).

    ``rows``: table name (``plugins``, ``plugin_installations``) -> identifiers of its ``local`` rows;
    ``installed``: identifiers of the files under ``installed_path``; ``packages``: under ``package_path``.
    """
    plugins, tenants = set(rows.get("plugins", ())), set(rows.get("plugin_installations", ()))
    installed, packages = set(installed), set(packages)
    found: dict[str, list[str]] = {}
    for ident in sorted(plugins | tenants | installed):
        tables = [t for t, ids in (("plugins", plugins), ("plugin_installations", tenants)) if ident in ids]
        if ident not in installed:
            problems = [f"rows in {' and '.join(tables)} but no file {installed_path}/{ident}"]
        else:
            problems = []
            if ident not in plugins:
                problems.append(f"file {installed_path}/{ident} but no row in plugins"
                                + ("" if tables else " nor plugin_installations"))
            if ident not in packages:
                problems.append(f"no package {package_path}/{ident} to start it from")
        if problems:
            found[ident] = problems
    return found


def describe(found: Mapping[str, list[str]]) -> str:
    """One line: ``ID: problem; ID2: problem``."""
    return "; ".join(f"{ident}: {', '.join(problems)}" for ident, problems in found.items())


# --- the storage ---------------------------------------------------------------------------------

def _relative(value: str) -> str:
    """A daemon storage path as the local storage joins it to its root (Go ``filepath.Join``): "" when it would
    be the root itself or lead out of it."""
    path = posixpath.normpath(value.strip().lstrip("/")) if value.strip().strip("/") else "."
    return "" if path == "." or path == ".." or path.startswith("../") else path


def storage_paths(env: Mapping[str, str]) -> tuple[str, str] | str:
    """(installed path, package path) relative to the volume from the daemon container's environment (the
    daemon's own defaults when unset), or why they cannot be compared (a string)."""
    kind = env.get("PLUGIN_STORAGE_TYPE") or "local"
    if kind != "local":
        return f"PLUGIN_STORAGE_TYPE={kind}: the plugin files are not in the volume"
    installed = _relative(env.get("PLUGIN_INSTALLED_PATH") or "plugin")
    package = _relative(env.get("PLUGIN_PACKAGE_CACHE_PATH") or "plugin_packages")
    if not installed or not package:
        return (f"PLUGIN_INSTALLED_PATH={env.get('PLUGIN_INSTALLED_PATH')!r} / PLUGIN_PACKAGE_CACHE_PATH="
                f"{env.get('PLUGIN_PACKAGE_CACHE_PATH')!r} is the storage root or outside it")
    return installed, package


def identifiers(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """(identifiers, other names) of file names relative to a bucket, filtered as ``InstalledBucket.List``
    does: hidden names skipped, names that are not an identifier set aside."""
    found, other = [], []
    for name in names:
        if name.startswith("."):
            continue
        (found if IDENTIFIER.match(name) else other).append(name)
    return sorted(found), sorted(other)


def scan(volume: Path, rel: str) -> tuple[list[str], list[str]]:
    """:func:`identifiers` of the files below ``volume/rel`` (none when it does not exist)."""
    base = volume / rel
    names: list[str] = []
    if not base.is_dir():
        return [], []

    def fail(exc: OSError) -> None:
        raise AirgapError(f"cannot read {exc.filename}: {exc.strerror}; run snapshot-daemon as root") from None

    for dirpath, _, filenames in os.walk(base, onerror=fail):
        names += [(Path(dirpath) / f).relative_to(base).as_posix() for f in filenames]
    return identifiers(names)


def from_members(names: Iterable[str], rel: str) -> list[str]:
    """Identifiers of an archive's file members below ``rel`` (``./plugin/a/b:1.0.0@...``)."""
    prefix = rel.rstrip("/") + "/"
    plain = (n[2:] if n.startswith("./") else n for n in names)
    return identifiers(n[len(prefix):] for n in plain if n.startswith(prefix))[0]


# --- the rows ------------------------------------------------------------------------------------

def columns_sql(db_type: str) -> str:
    """``table.column`` of the columns :func:`rows_sql` may use, where the daemon's tables are."""
    schema = "DATABASE()" if db_type == "mysql" else "current_schema()"
    return ("SELECT CONCAT(table_name, '.', column_name) FROM information_schema.columns "
            f"WHERE table_schema = {schema} AND table_name IN ('plugins', 'plugin_installations') "
            "AND column_name IN ('plugin_unique_identifier', 'install_type', 'runtime_type')")


def rows_sql(columns: Iterable[str]) -> tuple[str | None, list[str]]:
    """One query for the ``local`` rows of both tables (``TABLE IDENTIFIER`` per line; CONCAT and UNION ALL work
    in PostgreSQL and MySQL), and notes for what is missing. None when neither table is there.

    Columns: plugins.plugin_unique_identifier / install_type (internal/types/models/plugin.go:11,15 at 0.5.2;
    :12,16 at 0.6.3 and 0.6.10), plugin_installations.plugin_unique_identifier / runtime_type
    (internal/types/models/installation.go:9-10 at 0.5.2, 0.6.3, 0.6.10)."""
    columns, parts, notes = set(columns), [], []
    for table, kind in TABLES:
        if f"{table}.plugin_unique_identifier" not in columns:
            notes.append(f"no table {table} with plugin_unique_identifier in the database: no rows")
            continue
        where = f" WHERE {kind} = 'local'"
        if f"{table}.{kind}" not in columns:
            notes.append(f"{table} has no {kind} column (not a plugin daemon's schema): every row counted")
            where = ""
        parts.append(f"SELECT CONCAT('{table} ', plugin_unique_identifier) FROM {table}{where}")
    return (" UNION ALL ".join(parts) or None), notes


def parse_rows(text: str) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {t: [] for t, _ in TABLES}
    for line in text.splitlines():
        table, _, ident = line.strip().partition(" ")
        if table in rows and ident.strip():
            rows[table].append(ident.strip())
    return {t: sorted(set(ids)) for t, ids in rows.items()}


def read_rows(engine: Engine, db: str, db_type: str, database: str) -> tuple[dict[str, list[str]], list[str]]:
    """The ``local`` rows of both tables in ``database`` (read-only), and notes for what the schema lacks."""
    res = sd.db_exec(engine, db, sd.query_command(db_type, database, columns_sql(db_type)), mutates=False,
                     what=f"reading the plugin tables' columns of {database}")
    sql, notes = rows_sql(res.stdout.split())
    if sql is None:
        return {t: [] for t, _ in TABLES}, notes
    res = sd.db_exec(engine, db, sd.query_command(db_type, database, sql), mutates=False,
                     what=f"reading the installed plugins of {database}")
    return parse_rows(res.stdout), notes


# --- snapshot and restore ------------------------------------------------------------------------

def read_state(engine: Engine, db: str, db_type: str, database: str, volume: Path,
               container_env: Iterable[str]) -> PluginState:
    """Rows and files now (the daemon paused): what :func:`refuse_snapshot` checks and the manifest records."""
    env = dict(item.split("=", 1) for item in container_env if "=" in item)
    paths = storage_paths(env)
    if isinstance(paths, str):
        LOG.warning("plugin files and %s rows not compared: %s", database, paths)
        return PluginState(skipped=paths)
    installed, other = scan(volume, paths[0])
    if other:
        LOG.warning("files in %s that are no plugin identifier (the daemon ignores them too): %s",
                    volume / paths[0], ", ".join(other[:10]))
    rows, notes = read_rows(engine, db, db_type, database)
    for note in notes:
        LOG.warning("%s: %s", database, note)
    return PluginState(paths[0], paths[1], rows, installed, scan(volume, paths[1])[0], notes)


def refuse_snapshot(state: PluginState, database: str) -> None:
    """Raise naming every plugin whose files and rows disagree; log what agrees."""
    if state.skipped:
        return
    found = state.disagreements()
    if found:
        raise AirgapError(f"plugin files and {database} rows disagree for {len(found)} plugin(s), refusing the "
                          f"snapshot: {describe(found)}", hint=SNAPSHOT_HINT)
    LOG.info("plugin files and %s rows agree: %d installed plugin(s)", database, len(state.installed))


def recorded_state(manifest: dict, where: str) -> PluginState | None:
    """The snapshot's recorded state, refused when its rows and files disagree; None (said in a log line) for
    a snapshot that recorded none (made before this check) or skipped it."""
    data = manifest.get("plugin_state")
    if data is None:
        LOG.warning("%s records no plugin state (made by dify-airgap before plugin files and rows were compared): "
                    "restoring it without that check", where)
        return None
    state = PluginState.from_manifest(data, where)
    if state.skipped:
        LOG.warning("%s: plugin files and rows were not compared when it was made (%s)", where, state.skipped)
        return None
    found = state.disagreements()
    if found:
        raise BadInput(f"{where}: its plugin files and dify_plugin rows disagree for {len(found)} plugin(s), "
                       f"refusing to restore it: {describe(found)}", hint=RESTORE_HINT)
    return state


def check_members(state: PluginState, names: Iterable[str], where: str) -> None:
    """The storage archive's own files against the recorded rows (before anything is restored)."""
    names = list(names)
    found = disagreements(state.rows, from_members(names, state.installed_path),
                          from_members(names, state.package_path), state.installed_path, state.package_path)
    if found:
        raise BadInput(f"{where}: its storage archive and its recorded dify_plugin rows disagree for {len(found)} "
                       f"plugin(s), refusing to restore it: {describe(found)}", hint=RESTORE_HINT)
    LOG.info("%s: plugin files in the storage archive agree with the recorded rows (%d plugin(s))", where,
             len(state.installed))
