"""Podman bridges keep ONE MAC address, so containers do not lose their gateway during ``up``.

Linux gives a bridge whose MAC was never set the lowest MAC of its ports, so the MAC changes while
containers start and stop. A container that already resolved the gateway keeps the old MAC; the host
drops its frames (not addressed to the bridge any more) and the container loses the gateway - that
is aardvark-dns, i.e. every service-name lookup, and NAT - until its ARP entry is refreshed, 30-100 s.
Measured in the lab (Podman 4.3, netavark 1.4) during Dify's ``up``: the api container could not
resolve ``plugin_daemon`` for up to ~45 s while the bridge had moved to a new MAC.

netavark 1.9 (and Red Hat's backports to 1.5/1.7, RHEL-14309) fix the MAC when they create the bridge;
Debian 12's netavark 1.4 and unpatched RHEL 9.0-9.2 hosts do not. After ``up`` we do what that fix
does - set the bridge's current MAC explicitly (``ip link set dev BRIDGE address MAC``, which stops
the kernel from changing it) - and announce it with one gratuitous ARP per gateway address, so that
containers that cached an older MAC update at once instead of after their ARP timeout.

Rootful Podman only: a rootless user's bridges live in the rootless network namespace (reported, not
changed). Docker sets its bridges' MACs itself.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scripts.engine.client import Engine, Runner, subprocess_runner

SYS_NET = Path("/sys/class/net")
#: /sys/class/net/IF/addr_assign_type: 3 = NET_ADDR_SET (set explicitly; the kernel keeps it).
ADDR_SET = "3"


@dataclass
class Bridge:
    network: str
    interface: str
    gateways: list[str] = field(default_factory=list)


def bridges(engine: Engine, networks: Sequence[str]) -> list[Bridge]:
    """The bridge interface and IPv4 gateways of each podman network named."""
    if not networks:
        return []
    data = json.loads(engine.run(["network", "inspect", *networks], mutates=False).stdout or "[]")
    out = []
    for net in data:
        iface = net.get("network_interface") or ""
        if net.get("driver") != "bridge" or not iface:
            continue
        gateways = [s["gateway"] for s in net.get("subnets") or () if s.get("gateway") and ":" not in s["gateway"]]
        out.append(Bridge(net.get("name", ""), iface, gateways))
    return out


def project_networks(engine: Engine, project: str) -> list[str]:
    """The networks podman-compose created for ``project`` (by its label)."""
    res = engine.run(["network", "ls", "--format", "{{.Name}}", "--filter",
                      f"label=io.podman.compose.project={project}"], mutates=False)
    return res.stdout.split()


def arp_announcement(mac: str, ip: str) -> bytes:
    """An Ethernet frame saying "IP is at MAC": an ARP request for IP from IP, broadcast (RFC 5227)."""
    hw = bytes.fromhex(mac.replace(":", ""))
    addr = socket.inet_aton(ip)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + hw + addr + b"\0" * 6 + addr
    return (b"\xff" * 6 + hw + struct.pack("!H", 0x0806) + arp).ljust(60, b"\0")


def gratuitous_arp(interface: str, mac: str, ip: str) -> None:
    """Send :func:`arp_announcement` on ``interface`` (needs root: a raw packet socket).

    Linux neighbours that already have an entry for IP take the new MAC from it (state STALE, then
    confirmed on next use); nobody creates a new entry from it.
    """
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((interface, 0))
        sock.send(arp_announcement(mac, ip))


def fix_macs(engine: Engine, networks: Sequence[str], runner: Runner = subprocess_runner,
             sys_net: Path = SYS_NET, announce: Callable[[str, str, str], None] = gratuitous_arp) -> list[str]:
    """Fix the MAC of each network's bridge and announce it; returns one line per bridge (for the log).

    Idempotent: a bridge whose MAC is already set explicitly (netavark >= 1.9, or done before) is left
    as it is. Does nothing for docker, and reports instead of acting for rootless podman.
    """
    if not engine.is_podman or not networks:
        return []
    if os.geteuid() != 0:
        return [f"bridges of {', '.join(networks)}: rootless podman keeps them in its own network namespace; "
                "their MACs are not fixed (see docs/install.md)"]
    lines = []
    for br in bridges(engine, networks):
        path = sys_net / br.interface
        if not path.exists():
            lines.append(f"bridge {br.interface} ({br.network}): not on this host yet (no container started)")
            continue
        if (path / "addr_assign_type").read_text().strip() == ADDR_SET:
            lines.append(f"bridge {br.interface} ({br.network}): MAC already fixed")
            continue
        mac = (path / "address").read_text().strip()
        res = runner(["ip", "link", "set", "dev", br.interface, "address", mac], timeout=30)
        if not res.ok:
            lines.append(f"bridge {br.interface} ({br.network}): could not fix MAC {mac}: {res.stderr.strip()}")
            continue
        for gateway in br.gateways:
            announce(br.interface, mac, gateway)
        lines.append(f"bridge {br.interface} ({br.network}): MAC fixed at {mac}, announced for "
                     f"{', '.join(br.gateways) or 'no IPv4 gateway'}")
    return lines


def fix_project(engine: Engine, project: str) -> list[str]:
    """:func:`fix_macs` for every network of a podman-compose project (call right after ``up``)."""
    if not engine.is_podman:  # no network listing for docker at all
        return []
    return fix_macs(engine, project_networks(engine, project))
