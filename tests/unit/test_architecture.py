"""tests/architecture.py: the rule holds on the tree, and each kind of breach is named."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests import architecture


def test_the_tree_keeps_the_rule():
    assert architecture.violations() == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in {"tasks.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_each_breach_is_named_with_file_and_line(tmp_path):
    long_body = "\n".join(f"    x{i} = {i}" for i in range(90))
    root = _tree(tmp_path, {
        "scripts/core/low.py": "from scripts.host import install\n",
        "scripts/host/install.py": "from scripts.data import backup\n",
        "scripts/engine/client.py": "def f():\n    import json\n    return json\n",
        "scripts/dify/big.py": f"def g():\n{long_body}\n",
        "scripts/plugins/lab.py": "from tests.lab import host\n",
        "tests/helper.py": "from tests.test_something import thing\n",
        "tests/test_something.py": "thing = 1\n",
    })
    problems = "\n".join(architecture.violations(root))
    assert "scripts/core/low.py:1: core imports scripts.host" in problems
    assert "scripts/host/install.py:1: host imports its sibling data" in problems
    assert "scripts/engine/client.py:2: function-level import (import json)" in problems
    assert "scripts/dify/big.py:1: g is 91 lines" in problems
    assert "scripts/plugins/lab.py:1: imports the lab/tests" in problems
    assert "tests/helper.py:1" in problems and "test_something" in problems


def test_a_commented_local_import_and_a_marked_long_function_pass(tmp_path):
    long_body = "\n".join(f"    x{i} = {i}" for i in range(90))
    root = _tree(tmp_path, {
        "scripts/engine/client.py": "def f():\n    import json  # lazy: only the dry run needs it\n    return json\n",
        "scripts/dify/big.py": f"def g():  # long: one table of settings\n{long_body}\n",
        "scripts/plugins/opt.py": ("def h():\n    try:  # optional dependency\n        import uv\n"
                                   "    except ImportError:\n        uv = None\n    return uv\n"),
    })
    assert architecture.violations(root) == []
