"""The command lines of the docs: extracted from the markdown's code (fenced or indented) and split as the shell
would (tests/unit/test_doc_commands.py parses them all; tests/integration/test_quickstart_ko.py runs the Korean
quick start's)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

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


def argv_of(args: str) -> list[str] | None:
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
