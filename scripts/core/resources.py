"""Where the toolkit's data files are: tasks.py, env-templates/, compose-overrides/, requirements files.

One answer for every module, from a checkout, an editable install, a bundle's ``toolkit/`` (all three hold them
beside the ``scripts`` package) and a wheel install (``pip install .``: ``PREFIX/share/dify-airgap/``, see the
data-files table in pyproject.toml).
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]          # the ``scripts`` package itself
DATA_NAME = "share/dify-airgap"


def toolkit_root() -> Path:
    """The directory holding tasks.py and the data directories."""
    beside = PACKAGE_DIR.parent
    if (beside / "tasks.py").is_file() and (beside / "env-templates").is_dir():
        return beside
    user_scheme = "posix_user" if "posix_user" in sysconfig.get_scheme_names() else None
    bases = [sysconfig.get_path("data"), sys.prefix]
    if user_scheme:
        bases.append(sysconfig.get_path("data", user_scheme))
    for base in bases:
        if base and (Path(base) / DATA_NAME / "tasks.py").is_file():
            return Path(base) / DATA_NAME
    return beside   # a broken install: callers name the file they miss


TOOLKIT_ROOT = toolkit_root()
TEMPLATES_DIR = TOOLKIT_ROOT / "env-templates"
OVERRIDES_DIR = TOOLKIT_ROOT / "compose-overrides"
TASKS_FILE = TOOLKIT_ROOT / "tasks.py"
