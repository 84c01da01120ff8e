"""The lab's podman check on the REAL podman: names resolve on a netavark network, and a network
without DNS fails in seconds with a named message (instead of stacks timing out minutes later)."""

from __future__ import annotations

import time

import pytest

from scripts.core.errors import AirgapError
from tests.conftest import require_engine
from tests.lab import host as lab

pytestmark = pytest.mark.integration


def _networks(engine) -> set[str]:
    """The DNS check's own networks (tests running in parallel make and remove theirs meanwhile)."""
    names = engine.run(["network", "ls", "--format", "{{.Name}}"], mutates=False).stdout.split()
    return {name for name in names if name.startswith("dal-dnscheck-")}


def test_podman_dns_check_passes_with_netavark_and_fails_fast_without_dns():
    engine = require_engine("podman")
    before = _networks(engine)
    assert lab.check_podman_dns() == "netavark"
    started = time.monotonic()
    with pytest.raises(AirgapError, match="cannot resolve each other's names.*aardvark-dns"):
        lab.check_podman_dns(disable_dns=True)
    assert time.monotonic() - started < 30
    assert _networks(engine) == before, "the check left a network behind"
    left = engine.run(["ps", "-a", "--format", "{{.Names}}"], mutates=False).stdout.split()
    assert not [n for n in left if n.startswith("dal-dnscheck-")], "the check left a container behind"
