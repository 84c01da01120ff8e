"""scripts/engine/bridges.py on the REAL rootful podman: a bridge's MAC moves when the port it wears leaves;
fixed + announced, it stays, the containers keep their gateway."""

from __future__ import annotations

import pytest

from scripts.core.waiting import wait_until
from scripts.engine import bridges
from scripts.engine.client import Engine

pytestmark = pytest.mark.integration


def _mac(iface: str) -> str:
    return (bridges.SYS_NET / iface / "address").read_text().strip()


def _start(engine: Engine, tracker, image: str, network: str) -> str:
    name = tracker.container(engine, tracker.name("dal-br"))
    engine.run(["run", "-d", "--name", name, "--network", network, "--cap-add", "NET_RAW", image,
                "sleep", "600"], timeout=120)
    return name


def _host_veth_mac(engine: Engine, container: str) -> str:
    """The MAC of the host end of ``container``'s eth0 (a port of the bridge)."""
    index = engine.run(["exec", container, "cat", "/sys/class/net/eth0/iflink"], mutates=False).stdout.strip()
    [iface] = [p.name for p in bridges.SYS_NET.iterdir() if (p / "ifindex").read_text().strip() == index]
    return _mac(iface)


def _pings(engine: Engine, container: str, ip: str) -> bool:
    return engine.probe(["exec", container, "ping", "-c", "1", "-W", "1", ip], timeout=30).ok


def test_fixed_and_announced_bridge_mac_keeps_the_gateway(podman_engine, tracker):
    from tests.lab import host as lab

    engine = podman_engine
    image = tracker.image(engine, f"localhost/{tracker.name('dal-br')}:1")
    lab.make_busybox_image(engine, image)
    network = tracker.network(engine, tracker.name("dal-br-net"))
    engine.run(["network", "create", network])
    trio = [_start(engine, tracker, image, network) for _ in range(3)]
    [bridge] = bridges.bridges(engine, [network])
    assert bridge.network == network and len(bridge.gateways) == 1
    gateway, iface = bridge.gateways[0], bridge.interface
    if (bridges.SYS_NET / iface / "addr_assign_type").read_text().strip() == bridges.ADDR_SET:
        # netavark >= 1.9 sets the MAC itself: the move cannot be shown here. fix_macs' handling of that
        # case ("already fixed") and of the moving case is covered by tests/unit/engine/test_bridges.py.
        pytest.skip("this netavark fixes bridge MACs itself: nothing to show on this host")

    # the precondition of the bug: the bridge wears the lowest port MAC, so it moves when that container
    # leaves (as Dify's one-shot init_permissions does during `up`)
    cached = _mac(iface)
    [owner] = [c for c in trio if _host_veth_mac(engine, c) == cached]
    engine.run(["rm", "--force", owner], timeout=120)
    assert _mac(iface) != cached, "the bridge MAC did not move when its port left"
    first = next(c for c in trio if c != owner)

    # Whether a move leaves a container cut off depends on timing (the kernel announces some moves
    # itself); the lab's repro loop caught it in about one Dify `up` in five. Asserted here: the parts
    # that do not depend on timing.
    victim = first
    lines = bridges.fix_macs(engine, [network])
    moved = _mac(iface)
    assert lines == [f"bridge {iface} ({network}): MAC fixed at {moved}, announced for {gateway}"]
    assert (bridges.SYS_NET / iface / "addr_assign_type").read_text().strip() == bridges.ADDR_SET
    wait_until(lambda: _pings(engine, victim, gateway), timeout=5, what=f"{victim} to reach {gateway} again")

    # and the MAC no longer moves while containers come and go, also when its own port leaves
    other = next(c for c in trio if c not in (owner, victim))
    engine.run(["rm", "--force", other], timeout=120)  # the port whose MAC the bridge wears, or the other
    assert _mac(iface) == moved
    for _ in range(3):
        engine.run(["rm", "--force", _start(engine, tracker, image, network)], timeout=120)
        assert _mac(iface) == moved
    assert _pings(engine, victim, gateway)

    # idempotent
    assert bridges.fix_macs(engine, [network]) == [f"bridge {iface} ({network}): MAC already fixed"]


def test_docker_is_left_alone_it_fixes_its_bridge_macs_itself(docker_engine, tracker):
    network = tracker.network(docker_engine, tracker.name("dal-br-net"))
    docker_engine.run(["network", "create", network])
    assert bridges.fix_macs(docker_engine, [network]) == []
    net_id = docker_engine.run(["network", "inspect", "-f", "{{.Id}}", network], mutates=False).stdout.strip()
    assert (bridges.SYS_NET / f"br-{net_id[:12]}" / "addr_assign_type").read_text().strip() == bridges.ADDR_SET
