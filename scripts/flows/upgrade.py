"""`invoke upgrade BUNDLE` and `invoke rollback` on the air-gapped host (#16 item 3): an upgrade as ONE step.

upgrade: the install record must exist (else: install)  ->
  1. verify and plan: the whole install as a dry run (the bundle verified, preflight, a delta's base present,
     every image the new release needs present or in the bundle, the ``.env`` merge planned): nothing changes yet;
  2. backup (:mod:`scripts.data.backup`: databases dumped, volumes, ``docker/`` with ``.env``, overrides), into
     ``PREFIX/.dify-airgap/upgrades/``;
  3. the rollback point ``PREFIX/.dify-airgap/rollback.json``: the install record as it was, the backup, both
     releases;
  4. install: load, ``docker/`` files (changed ones backed up), ``.env`` three-way merge (across layouts),
     overrides, ``compose up``, wait for healthy;
  5. check (with a bounded wait).
  A failure in 4 or 5 stops with the reason and the exact ``invoke rollback`` to run. Running the upgrade again
  after a failure keeps the rollback point of the first attempt (the way back to the release it started from) and
  takes no second backup of the half-upgraded state; a successful upgrade marks the point completed.

rollback: the rollback point must exist (after a COMPLETED upgrade only with ``--yes``)  ->
  the backup verified, then a SAFETY backup of the new release as it is now (its databases dumped: the restore
  recreates them; its volumes are also moved aside as ``NAME.before-restore-TIME``), stop the new release
  (containers only), put the old install record back, restore the backup (the old ``docker/`` files and ``.env``,
  overrides, volumes, databases), start, check. Nothing of the new release is deleted without a copy. The old
  release's images are still on the engine (an upgrade never removes images).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from scripts.core.console import LOG
from scripts.core.errors import AirgapError
from scripts.core.files import write_file_atomic
from scripts.core.inputs import read_json
from scripts.data import backup as bk
from scripts.data import datadir
from scripts.data import stackdata as sd
from scripts.dify import deployment as dep
from scripts.host import check as checks
from scripts.host import install as installer

POINT = "rollback.json"
UPGRADES = "upgrades"
POINT_SCHEMA = {"kind": str, "created": str, "from_version": str, "to_bundle": str, "backup": str, "record": dict,
                "?completed": str}
KIND = "dify-airgap-rollback-point"


@dataclass
class UpgradeReport:
    prefix: Path
    action: str = "upgrade"  # or "rollback"
    steps: list[str] = field(default_factory=list)
    check: checks.CheckReport | None = None

    def render(self) -> str:
        lines = [f"{self.action} of {self.prefix}:", *(f"  {s}" for s in self.steps)]
        if self.check is not None:
            lines += ["", self.check.render()]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"prefix": str(self.prefix), "action": self.action, "steps": self.steps,
                "check": self.check.to_dict() if self.check is not None else None}


def point_path(prefix: Path) -> Path:
    return Path(prefix) / installer.STATE_DIR / POINT


def _fail(step: str, prefix: Path, exc: BaseException) -> AirgapError:
    return AirgapError(f"upgrade failed at {step}: {exc}",
                       hint=f"the previous release is backed up: return to it with `invoke rollback --prefix "
                            f"{prefix}` (or fix the cause and run the upgrade again: the rollback point is kept)")


def _pending_point(prefix: Path) -> dict | None:
    """The rollback point of an upgrade that did not complete (a re-run keeps it), else None."""
    path = point_path(prefix)
    if not path.is_file():
        return None
    point = read_json(path, "the rollback point", "remove it if no upgrade is under way", POINT_SCHEMA)
    return None if point.get("completed") else point


def upgrade(opts: installer.InstallOptions, check_wait: float = 180) -> UpgradeReport:
    """The whole upgrade (see the module doc). ``opts`` as for install; its runtime must be the installed one."""
    prefix = opts.prefix.resolve()
    try:
        record = dep.load(prefix)
    except AirgapError as exc:
        raise AirgapError(f"nothing to upgrade at {prefix}: {exc}",
                          hint="a first install is `invoke install`") from None
    if record.runtime != opts.runtime:
        raise AirgapError(f"{prefix} runs on {record.runtime}, not {opts.runtime}",
                          hint=f"use --runtime {record.runtime}")
    opts = replace(opts, prefix=prefix, project_name=record.project_name, engine_env=dict(record.engine_env),
                   middleware=record.stack.middleware)
    report = UpgradeReport(prefix)
    pending = _pending_point(prefix)
    LOG.info("upgrade 1/5: verify the bundle and plan the install (nothing changes)")
    plan = installer.install(replace(opts, dry_run=True))
    report.steps.append(f"verified and planned: {len(plan.actions)} change(s) to make")
    engine = record.engine(dry_run=opts.dry_run)
    stack = sd.resolve(prefix=str(prefix))
    backup_plan = bk.make_plan(stack, prefix / installer.STATE_DIR / UPGRADES)
    if pending is not None:
        LOG.info("upgrade 2-3/5: an earlier attempt from Dify %s did not complete: its backup and rollback point "
                 "(%s) are kept", pending["from_version"], pending["backup"])
        report.steps.append(f"rollback point of the attempt from Dify {pending['from_version']} kept "
                            f"({pending['backup']})")
    else:
        LOG.info("upgrade 2/5: back up Dify %s", record.dify_version)
    if opts.dry_run:
        if pending is None:
            print(backup_plan.render(engine))
            print(f"[dry-run] write the rollback point {point_path(prefix)}")
        print("[dry-run] install the bundle (the changes above), wait, then `invoke check`")
        report.steps += ([f"backup {backup_plan.final_dir} (planned)", "rollback point (planned)"]
                         if pending is None else []) + ["install, wait, check (planned)"]
        return report
    point = pending or _backup_and_point(engine, backup_plan, record, opts, report)
    LOG.info("upgrade 4/5: install")
    try:
        installed = installer.install(opts)
    except (AirgapError, OSError) as exc:
        raise _fail("install", prefix, exc) from exc
    report.steps += [f"install: {a}" for a in installed.actions]
    LOG.info("upgrade 5/5: check")
    upgraded = dep.load(prefix)  # the record the install wrote
    report.check = checks.run_checks(upgraded, wait=check_wait)
    if not report.check.ok:
        print(report.check.render())
        raise _fail("check", prefix, AirgapError(f"{len(report.check.failed())} check(s) fail: "
                                                 f"{', '.join(c.name for c in report.check.failed())}"))
    report.steps.append(f"check: Dify {upgraded.dify_version} passes")
    point["completed"] = _now()
    _write_point(prefix, point)  # a later rollback of a completed upgrade asks for --yes
    return report


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _write_point(prefix: Path, point: dict) -> None:
    point_path(prefix).parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(point_path(prefix), (json.dumps(point, indent=2) + "\n").encode())


def _backup_and_point(engine, backup_plan: bk.BackupPlan, record: dep.Deployment, opts: installer.InstallOptions,
                      report: UpgradeReport) -> dict:
    """The backup, then the rollback point naming it (never a point without a finished backup)."""
    done = bk.backup(engine, backup_plan)
    report.steps.append(f"backup {done}")
    point = {"kind": KIND, "created": _now(), "from_version": record.dify_version, "to_bundle": str(opts.bundle),
             "backup": str(done), "record": json.loads(record.to_json())}
    _write_point(record.prefix, point)
    report.steps.append(f"rollback point {point_path(record.prefix)} (Dify {record.dify_version})")
    LOG.info("upgrade 3/5: rollback point written")
    return point


def rollback(prefix: Path, *, dry_run: bool = False, timeout: float = 600, check_wait: float = 180,
             yes: bool = False, safety_backup: bool = True) -> UpgradeReport:
    """Back to the release the last upgrade started from, with its data (see the module doc)."""
    prefix = Path(prefix).resolve()
    path = point_path(prefix)
    if not path.is_file():
        raise AirgapError(f"no rollback point at {path}: nothing to roll back",
                          hint="a rollback follows a failed or unwanted `invoke upgrade`; "
                               "`invoke restore BACKUP --prefix ...` restores any backup")
    point = read_json(path, "the rollback point", "run the upgrade again to write it", POINT_SCHEMA)
    if point["kind"] != KIND:
        raise AirgapError(f"{path} is not a rollback point (kind {point['kind']!r})")
    if point.get("completed") and not (yes or dry_run):
        raise AirgapError(f"the upgrade from Dify {point['from_version']} completed at {point['completed']}: a "
                          f"rollback now restores the backup taken before it (the databases as they were then)",
                          hint="add --yes to roll back anyway (the current databases are backed up first)")
    old = dep.Deployment(**{**{k: v for k, v in point["record"].items() if k in dep.Deployment.__dataclass_fields__},
                            "prefix": prefix})
    report = UpgradeReport(prefix, "rollback")
    engine = old.engine(dry_run=dry_run)
    datadir.verify_dir(point["backup"], bk.KIND, bk.BACKUP_SCHEMA)  # a damaged backup: refused before any change
    current = sd.resolve(prefix=str(prefix)) if (prefix / dep.STATE_FILE).is_file() else None
    safety = bk.make_plan(current, prefix / installer.STATE_DIR / UPGRADES) if current and safety_backup else None
    if dry_run:
        if safety:
            print(safety.render(engine))
        print(f"[dry-run] stop the stack at {prefix} (containers only; volumes kept)")
        print(f"[dry-run] put back the install record of Dify {point['from_version']}")
        bk.restore(engine, point["backup"], sd.resolve(prefix=str(prefix)), start=True, force=True)
        report.steps.append(f"rollback to Dify {point['from_version']} from {point['backup']} (planned)")
        return report
    if safety:
        try:
            report.steps.append(f"safety backup of the release being rolled back: {bk.backup(engine, safety)}")
        except AirgapError as exc:
            raise AirgapError(f"the safety backup before the rollback failed, nothing was changed: {exc}",
                              hint="start the stack's database (compose up -d) and roll back again; or roll back "
                                   "with --no-safety-backup (the current databases are then replaced without a "
                                   "copy)") from exc
    if current is not None:
        report.steps += installer.down(prefix, timeout=timeout)
    old.save()
    report.steps.append(f"install record of Dify {point['from_version']} put back")
    result = bk.restore(engine, point["backup"], sd.resolve(prefix=str(prefix)), start=True, force=True,
                        timeout=timeout)
    report.steps.append(f"restored {result['backup']}: {len(result['restored'])} archive(s), databases "
                        f"{', '.join(result['row_counts'])} (row counts as backed up)")
    report.check = checks.run_checks(dep.load(prefix), wait=check_wait)
    path.rename(path.with_name(f"rollback-done-{_dt.datetime.now():%Y%m%d-%H%M%S}.json"))
    if not report.check.ok:
        raise AirgapError(f"rolled back to Dify {point['from_version']}, but {len(report.check.failed())} check(s) "
                          f"fail:\n{report.check.render()}", hint=f"`invoke check --prefix {prefix} --wait 120`")
    report.steps.append(f"check: Dify {point['from_version']} passes")
    return report
