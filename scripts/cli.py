"""``dify-airgap``: the console script of an installed toolkit, the same tasks as ``invoke X`` in a checkout.

Its namespace is the very collection tasks.py exposes (found by :mod:`scripts.core.resources`), so
``dify-airgap bundle ...`` and ``invoke bundle ...`` are one command with one set of options.
"""

from __future__ import annotations

import importlib.util
import sys

from invoke import Collection, Program

from scripts import __version__
from scripts.core.resources import TASKS_FILE


def namespace() -> Collection:
    if not TASKS_FILE.is_file():
        sys.exit(f"error: the toolkit's tasks.py is missing ({TASKS_FILE}); reinstall dify-airgap")
    spec = importlib.util.spec_from_file_location("dify_airgap_tasks", TASKS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Collection.from_module(module)


def main() -> None:
    Program(namespace=namespace(), version=__version__, name="dify-airgap", binary="dify-airgap").run()


if __name__ == "__main__":
    main()
