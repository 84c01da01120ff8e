"""Every `invoke ...` / `dify-airgap ...` command line in the docs (English and the Korean quick start) is one the CLI
accepts: the task exists and every option is one of its options, parsed by invoke's own parser, as typed.

A doc that keeps an option a task no longer has (or never had) fails here, naming the file, the line and the
option. The commands that change the host are run for real in the integration tests; this keeps the docs honest
about the command lines themselves.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from invoke import Collection, Exit
from invoke.parser import ParseError, Parser, ParserContext

import tasks

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md"])
COMMAND = re.compile(r"^\s*(?:\$ )?(invoke|dify-airgap|\.venv/bin/dify-airgap|\.venv/bin/invoke) (?P<args>.+)$")


def commands(path: Path) -> list[tuple[int, str, str]]:
    """(line number, the command's arguments, the two lines after it) of the command lines in ``path``'s code
    (fenced or indented)."""
    found, fenced, pending, start = [], False, "", 0
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or line.startswith("    ")):
            continue
        if pending:
            pending += " " + line.strip()
        else:
            m = COMMAND.match(line)
            if not m:
                continue
            pending, start = m.group("args"), number
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        found.append((start, pending, "\n".join(lines[number:number + 2])))
        pending = ""
    return found


def _argv(args: str) -> list[str] | None:
    """The arguments as the shell would split them, without comments, pipes and redirections; None when the line
    is a sketch (``...``) or text, not a command."""
    for cut in (" | ", " > ", " && ", ";", "  # ", " # "):
        args = args.split(cut, 1)[0]
    try:
        argv = shlex.split(args, comments=True)
    except ValueError:
        return None
    sketch = ("..." in argv or any(a.startswith(("[", "(", "…")) or not a.isascii() for a in argv)
              or not re.fullmatch(r"[a-z][a-z0-9-]*", argv[0] if argv else ""))
    return None if not argv or sketch else argv


CASES = [pytest.param(path, number, args, after, id=f"{path.name}:{number}") for path in DOCS
         for number, args, after in commands(path)]


def test_the_docs_hold_command_lines_to_check():
    korean = [c for c in CASES if c.values[0].name == "quickstart.ko.md" and _argv(c.values[2])]
    assert len(korean) >= 20 and len(CASES) >= 100, (len(korean), len(CASES))


@pytest.mark.parametrize("path, number, args, after", CASES)
def test_a_documented_command_line_parses(path: Path, number: int, args: str, after: str):
    argv = _argv(args)
    if argv is None:
        pytest.skip("a sketch (synopsis, diagram), not one command line")
    collection = Collection.from_module(tasks)
    parser = Parser(initial=ParserContext(), contexts=collection.to_contexts(), ignore_unknown=False)
    try:
        parsed = parser.parse_argv(argv)
    except ParseError as exc:
        pytest.fail(f"{path.relative_to(ROOT)}:{number}: `{args}` does not parse: {exc}")
    except Exit as exc:  # a value invoke's cast refuses: only where the doc shows that usage error on purpose
        assert "exit 2" in after, f"{path.relative_to(ROOT)}:{number}: `{args}` is a usage error: {exc}"
        return
    assert [c.name for c in parsed[1:]], f"{path.relative_to(ROOT)}:{number}: no task in `{args}`"
