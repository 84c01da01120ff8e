"""scripts/bridges.py on the REAL rootful podman: a bridge whose MAC moves blackholes the gateway for the
containers that cached the old one; fixing + announcing the MAC gives them the gateway back at once and
keeps it from moving again."""

from __future__ import annotations

import pytest

from scripts import bridges
from scripts.engine import Engine
from scripts.waiting import wait_until

pytestmark = pytest.mark.integration


def _mac(iface: str) -> str:
    return (bridges.SYS_NET / iface / "address").read_text().strip()


def _start(engine: Engine, tracker, image: str, network: str) -> str:
    name = tracker.container(engine, tracker.name("dal-br"))
    engine.run(["run", "-d", "--name", name, "--network", network, "--cap-add", "NET_RAW", image,
                "sleep", "600"], timeout=120)
    return name


def _pings(engine: Engine, container: str, ip: str) -> bool:
    return engine.probe(["exec", container, "ping", "-c", "1", "-W", "1", ip], timeout=30).ok


def test_fixed_and_announced_bridge_mac_keeps_the_gateway(podman_engine, tracker):
    from scripts import lab

    engine = podman_engine
    image = tracker.image(engine, f"localhost/{tracker.name('dal-br')}:1")
    lab.make_busybox_image(engine, image)
    network = tracker.network(engine, tracker.name("dal-br-net"))
    engine.run(["network", "create", network])
    pair = [_start(engine, tracker, image, network), _start(engine, tracker, image, network)]
    [bridge] = bridges.bridges(engine, [network])
    assert bridge.network == network and len(bridge.gateways) == 1
    gateway, iface = bridge.gateways[0], bridge.interface
    assert (bridges.SYS_NET / iface / "addr_assign_type").read_text().strip() != bridges.ADDR_SET, \
        "this netavark fixes bridge MACs itself: the test has nothing to show on this host"
    # both cache the bridge's MAC, which is the host-side veth MAC of one of them (the lower)
    assert all(_pings(engine, c, gateway) for c in pair)

    # the kernel moves the bridge to the lowest port MAC: start containers until a new veth is lower
    cached = _mac(iface)
    for _ in range(24):  # a new random veth MAC is the lowest with p = 1/(ports+1); 24 tries ~never miss
        _start(engine, tracker, image, network)
        if _mac(iface) != cached:
            break
    assert _mac(iface) != cached, "the bridge MAC never moved"
    # the bug: the container whose own veth is NOT the old MAC still sends to it; the host drops that
    # (frames to another port's MAC are not for the host); the other one is saved by its own veth
    reach = [_pings(engine, c, gateway) for c in pair]
    assert reach.count(False) == 1, f"expected exactly one of the pair cut off from {gateway}: {reach}"

    lines = bridges.fix_macs(engine, [network])
    moved = _mac(iface)
    assert lines == [f"bridge {iface} ({network}): MAC fixed at {moved}, announced for {gateway}"]
    assert (bridges.SYS_NET / iface / "addr_assign_type").read_text().strip() == bridges.ADDR_SET
    # the gratuitous ARP updates the cut-off container at once (not after its ARP timeout, 30-100 s)
    wait_until(lambda: all(_pings(engine, c, gateway) for c in pair), timeout=5,
               what=f"both containers to reach {gateway} again")

    # and the MAC no longer moves while containers come and go
    for _ in range(3):
        engine.run(["rm", "--force", _start(engine, tracker, image, network)], timeout=120)
        assert _mac(iface) == moved
    assert all(_pings(engine, c, gateway) for c in pair)

    # idempotent
    assert bridges.fix_macs(engine, [network]) == [f"bridge {iface} ({network}): MAC already fixed"]


def test_docker_is_left_alone_it_fixes_its_bridge_macs_itself(docker_engine, tracker):
    network = tracker.network(docker_engine, tracker.name("dal-br-net"))
    docker_engine.run(["network", "create", network])
    assert bridges.fix_macs(docker_engine, [network]) == []
    net_id = docker_engine.run(["network", "inspect", "-f", "{{.Id}}", network], mutates=False).stdout.strip()
    assert (bridges.SYS_NET / f"br-{net_id[:12]}" / "addr_assign_type").read_text().strip() == bridges.ADDR_SET
