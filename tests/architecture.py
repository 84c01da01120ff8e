"""The toolkit's layer rule, checked from the source (stdlib only: `nox -s lint` runs it, a unit test too).

    core  <-  engine  <-  dify  <-  plugins  <-  bundle  <-  {data, host}  <-  tasks.py

A module may import its own package and any package to its left, never one to its right and never the lab
(tests/). Function-level imports count: they must also be marked with a comment saying why they are local.
Exit status 1 and one line per violation when the rule is broken.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS: tuple[tuple[str, ...], ...] = (("core",), ("engine",), ("dify",), ("plugins",), ("bundle",),
                                       ("data", "host"))
RANK = {pkg: i for i, group in enumerate(LAYERS) for pkg in group}
MAX_LINES = 700      # a module over this is more than one concern (the issue's ~500, with room for docstrings)


def _imports(tree: ast.AST) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level?) for every import of the toolkit or the lab."""
    top = {id(node) for node in getattr(tree, "body", [])}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("scripts", "tests"):
                out.append((name, node.lineno, id(node) in top or _in_type_checking(tree, node)))
    return out


def _in_type_checking(tree: ast.AST, target: ast.AST) -> bool:
    for node in getattr(tree, "body", []):
        if (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                and any(child is target for child in ast.walk(node))):
            return True
    return False


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "scripts" and parts[1] in RANK else None


def violations(root: Path = ROOT) -> list[str]:
    problems = []
    for path in sorted((root / "scripts").rglob("*.py")):
        rel = path.relative_to(root)
        text = path.read_text()
        lines = text.splitlines()
        if len(lines) > MAX_LINES:
            problems.append(f"{rel}: {len(lines)} lines (over {MAX_LINES}): split it by concern")
        own = _package(".".join(rel.with_suffix("").parts))
        for name, lineno, top_level in _imports(ast.parse(text)):
            if name.startswith("tests"):
                problems.append(f"{rel}:{lineno}: imports the lab/tests ({name}): the product never does")
                continue
            target = _package(name)
            if own and target and RANK[target] > RANK[own]:
                problems.append(f"{rel}:{lineno}: {own} imports {name}: {target} is above {own} in the layers")
            elif own and target and RANK[target] == RANK[own] and target != own:
                problems.append(f"{rel}:{lineno}: {own} imports its sibling {target} ({name})")
            if not top_level and "# local:" not in lines[lineno - 1]:
                problems.append(f"{rel}:{lineno}: function-level import of {name} without a '# local: why' comment")
    return problems


def main() -> int:
    problems = violations()
    for line in problems:
        print(line)
    print(f"architecture: {len(problems)} violation(s)" if problems else "architecture: layers respected")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
