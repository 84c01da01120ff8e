"""Where the toolkit's data files are: env-templates/, compose-overrides/, tasks.py and the requirements files.

One place for every module: a checkout, an editable install and a bundle's toolkit/ all hold them beside the
``scripts`` package.
"""

from __future__ import annotations

from pathlib import Path

TOOLKIT_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = TOOLKIT_ROOT / "env-templates"
OVERRIDES_DIR = TOOLKIT_ROOT / "compose-overrides"
