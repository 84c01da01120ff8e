"""The toolkit's layer rule, checked from the source (stdlib only: `nox -s lint` runs it, a unit test too).

    core  <-  engine  <-  dify  <-  plugins  <-  bundle  <-  {data, host}  <-  flows  <-  tasks.py

A module may import its own package and any package to its left, never one to its right and never the lab
(tests/). Function-level imports count: they must also be marked with a comment saying why they are local.
Any other function-level import (stdlib, third party) in the toolkit needs a comment too, on its line or on the
`try:` that makes it optional; a function over MAX_FUNCTION lines needs a `# long: why` comment on its def line.
No module at all (toolkit, lab, tests, tasks.py, noxfile.py) imports a test module (a file named test_*.py):
shared fixtures go in a conftest.py, shared helpers in a module that is not a test module.
Exit status 1 and one line per violation when the rule is broken.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS: tuple[tuple[str, ...], ...] = (("core",), ("engine",), ("dify",), ("plugins",), ("bundle",),
                                       ("data", "host"), ("flows",))
RANK = {pkg: i for i, group in enumerate(LAYERS) for pkg in group}
MAX_LINES = 700      # a module over this is more than one concern (the issue's ~500, with room for docstrings)
MAX_FUNCTION = 80    # lines of one function (def to last line)
#: what the no-test-module-imports rule reads (tests/fixtures holds vendored Dify trees, not our code)
CHECKED = ("scripts", "tests", "tasks.py", "noxfile.py")
SKIPPED = ("tests/fixtures",)


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


def _module_name(rel: Path) -> str:
    parts = rel.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute_imports(tree: ast.AST, rel: Path) -> list[tuple[str, int]]:
    """(module, line) for every import, relative ones resolved; ``from pkg import name`` also gives pkg.name."""
    package = (_module_name(rel) if rel.name == "__init__.py" else _module_name(rel).rpartition(".")[0]).split(".")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            out.append((module, node.lineno))
            out.extend((f"{module}.{a.name}", node.lineno) for a in node.names if a.name != "*")
    return out


def _is_test_module(root: Path, module: str) -> bool:
    path = root.joinpath(*module.split("."))
    return path.name.startswith("test_") and path.with_suffix(".py").is_file()


def _checked_files(root: Path) -> list[Path]:
    files = []
    for name in CHECKED:
        path = root / name
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else [])
    return [f for f in files if not any(f.relative_to(root).as_posix().startswith(s + "/") for s in SKIPPED)]


def imports_of_test_modules(root: Path = ROOT) -> list[str]:
    """One line per import of a test module: no module imports another test module (fixtures live in conftest)."""
    problems = []
    for path in _checked_files(root):
        rel = path.relative_to(root)
        for module, lineno in _absolute_imports(ast.parse(path.read_text()), rel):
            if _is_test_module(root, module):
                problems.append(f"{rel}:{lineno}: imports the test module {module}: move what it shares into "
                                f"a conftest.py (fixtures) or a helper module (not named test_*)")
    return problems


def unexplained(tree: ast.AST, lines: list[str], rel: Path) -> list[str]:
    """Function-level imports of anything without a comment saying why; functions over MAX_FUNCTION lines."""
    top = {id(node) for node in getattr(tree, "body", [])}
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION and "# long:" not in lines[node.lineno - 1]:
                problems.append(f"{rel}:{node.lineno}: {node.name} is {length} lines (over {MAX_FUNCTION}): split "
                                f"it into named steps, or say why not in a '# long:' comment on its def line")
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in top or _in_type_checking(tree, node):
            continue
        above = next((line for line in reversed(lines[:node.lineno - 1]) if line.strip()), "")
        if "#" not in lines[node.lineno - 1] and not (above.strip().startswith(("try:", "except")) and "#" in above):
            problems.append(f"{rel}:{node.lineno}: function-level import ({lines[node.lineno - 1].strip()}) "
                            f"without a comment saying why: import it at the top")
    return problems


def violations(root: Path = ROOT) -> list[str]:
    problems = imports_of_test_modules(root)
    for path in [*sorted((root / "scripts").rglob("*.py")), root / "tasks.py"]:
        text = path.read_text()
        problems += unexplained(ast.parse(text), text.splitlines(), path.relative_to(root))
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
    print(f"architecture: {len(problems)} violation(s)" if problems
          else "architecture: layers respected, no test module imported")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
