"""The three-way merge of a Dify upgrade: the old release's example, the user's old env, the new example.

:func:`three_way_merge` decides key by key (kept, new default, conflict, removed, site addition) and says what
it did in a :class:`MergeReport` (key names, never a secret value); :func:`merge_upgrade` renders the result in
the new example's layout. ``invoke env --upgrade-from`` (:mod:`scripts.dify.envfile`) uses the same merge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scripts.core.console import register_secret
from scripts.dify.envsecrets import is_secret_key
from scripts.dify.envsyntax import _read_text, env_from_lines, parse_lines, read_env, render_text


@dataclass
class MergeReport:
    """What a three-way merge (old example, user's old env, new example) did. No secret values."""

    kept: list[str] = field(default_factory=list)            # user-customised values carried over
    added: list[str] = field(default_factory=list)           # new keys, with the new default
    removed: list[str] = field(default_factory=list)         # gone from the new example
    removed_customised: list[str] = field(default_factory=list)  # ... and the user had changed them
    default_changed: list[dict] = field(default_factory=list)  # user had the old default; new default taken
    conflicts: list[dict] = field(default_factory=list)      # user changed it AND the default changed
    missing: list[str] = field(default_factory=list)         # in the old example, absent from the old env
    extras: list[str] = field(default_factory=list)          # in neither example (site additions)

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        out = []
        out += [f"kept your value: {k}" for k in self.kept]
        out += [f"new key (new default): {k}" for k in self.added]
        out += [f"removed upstream: {k}" + (" (your value kept as a comment at the end)"
                                            if k in self.removed_customised else "") for k in self.removed]
        for d in self.default_changed:
            shown = "" if d.get("secret") else f": {d['old']!r} -> {d['new']!r}"
            out.append(f"default changed, you had the old default, took the new one: {d['key']}{shown}")
        for d in self.conflicts:
            shown = "" if d.get("secret") else f": {d['old']!r} -> {d['new']!r}"
            out.append(f"default changed, kept YOUR value, review it: {d['key']}{shown}")
        out += [f"missing from your old env, took the new default: {k}" for k in self.missing]
        out += [f"site addition carried over: {k}" for k in self.extras]
        return out


def three_way_merge(old_env: Mapping[str, str], base: Mapping[str, str], new: Mapping[str, str]
           ) -> tuple[dict[str, str], dict[str, str], dict[str, str], dict[str, str], MergeReport]:
    """Returns (values for new keys, user customisations, extras, removed-customised, report)."""
    report = MergeReport()
    values = dict(new)
    custom: dict[str, str] = {}
    for key, new_default in new.items():
        if key not in old_env:
            if key in base:
                report.missing.append(key)
            else:
                report.added.append(key)
            continue
        mine = old_env[key]
        if key not in base:  # the user had it as an addition; now upstream knows it
            values[key] = custom[key] = mine
            report.kept.append(key)
        elif mine != base[key]:
            values[key] = custom[key] = mine
            report.kept.append(key)
            if new_default != base[key]:
                report.conflicts.append({"key": key, "old": base[key], "new": new_default,
                                         "secret": is_secret_key(key)})
        elif new_default != base[key]:
            report.default_changed.append({"key": key, "old": base[key], "new": new_default,
                                           "secret": is_secret_key(key)})
    extras = {k: v for k, v in old_env.items() if k not in new and k not in base}
    report.extras = list(extras)
    removed: dict[str, str] = {}
    for key in base:
        if key not in new:
            report.removed.append(key)
            if key in old_env and old_env[key] != base[key]:
                removed[key] = old_env[key]
                report.removed_customised.append(key)
    for d in report.default_changed + report.conflicts:
        if d["secret"]:
            d["old"] = d["new"] = "***"
    return values, custom, extras, removed, report


def merge_upgrade(old_env: Path, old_example: Path, new_example: Path) -> tuple[str, MergeReport]:
    """Three-way merge for a Dify upgrade: the new example's layout, the user's changes kept, new
    keys with their new defaults, removed keys reported (customised ones kept as comments)."""
    lines = parse_lines(_read_text(Path(new_example)))
    mine, base = read_env(old_env), read_env(old_example)
    for key, value in mine.items():  # the caller may log the text: hide the user's secrets
        if is_secret_key(key) and value and value != base.get(key):
            register_secret(value)
    values, _custom, extras, removed, report = three_way_merge(mine, base, env_from_lines(lines))
    return render_text(lines, values, extras, removed), report
