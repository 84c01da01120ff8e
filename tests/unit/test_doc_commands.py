"""Every `invoke ...` / `dify-airgap ...` command line in the docs (English and the Korean quick start) is one the CLI
accepts: the task exists and every option is one of its options, parsed by invoke's own parser, as typed.

A doc that keeps an option a task no longer has (or never had) fails here, naming the file, the line and the
option. The commands that change the host are run for real in the integration tests; this keeps the docs honest
about the command lines themselves.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from invoke import Collection, Exit
from invoke.parser import ParseError, Parser, ParserContext

import tasks
from tests.support.doc_commands import argv_of, commands

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md"])
CASES = [pytest.param(path, number, args, after, id=f"{path.name}:{number}") for path in DOCS
         for number, args, after in commands(path)]


def test_the_docs_hold_command_lines_to_check():
    korean = [c for c in CASES if c.values[0].name == "quickstart.ko.md" and argv_of(c.values[2])]
    assert len(korean) >= 20 and len(CASES) >= 100, (len(korean), len(CASES))


@pytest.mark.parametrize("path, number, args, after", CASES)
def test_a_documented_command_line_parses(path: Path, number: int, args: str, after: str):
    argv = argv_of(args)
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
