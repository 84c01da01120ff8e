"""A small real Dify plugin package (.difypkg) as the Dify CLI writes it (not a test module).

Shared by test_plugins_offline, test_plugins_daemon_rules and test_bundle.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

MANIFEST = """version: 0.0.1
type: plugin
author: airgaptest
name: demo_tool
label:
  en_US: Demo tool
description:
  en_US: A test plugin for dify-airgap
icon: icon.svg
resource:
  memory: 268435456
plugins:
  tools:
    - provider/demo.yaml
meta:
  version: 0.0.1
  arch:
    - amd64
    - arm64
  runner:
    language: python
    version: "3.12"
    entrypoint: main
created_at: 2025-01-01T00:00:00Z
"""
PROVIDER = """identity:
  author: airgaptest
  name: demo_tool
  label:
    en_US: Demo tool
  icon: icon.svg
tools: []
"""
MAIN = "from dify_plugin import DifyPluginEnv, Plugin\n\nplugin = Plugin(DifyPluginEnv())\n"
# dify_plugin pulls pydantic-core, gevent, tiktoken... (C extensions); orjson is one more.
REQUIREMENTS = "dify_plugin>=0.4.0\norjson\n"


def make_difypkg(path: Path, requirements: str | None = REQUIREMENTS, extra: dict | None = None) -> Path:
    """A real plugin package as the Dify CLI writes it (files only, deflate)."""
    files = {"manifest.yaml": MANIFEST, "provider/demo.yaml": PROVIDER, "main.py": MAIN,
             "_assets/icon.svg": "<svg xmlns='http://www.w3.org/2000/svg'/>", "README.md": "# demo\n",
             ".difyignore": ".venv\nwheels/\n__pycache__/\n"}
    if requirements is not None:
        files["requirements.txt"] = requirements
    files.update(extra or {})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path
