"""scripts/engine/bridges.py without an engine: which bridges, the exact `ip` command, the ARP frame, when to act."""

from __future__ import annotations

import json
import socket
import struct

import pytest

from scripts.engine import bridges
from scripts.engine.client import Engine, Result

NETWORKS = [
    {"name": "dify_default", "driver": "bridge", "network_interface": "podman6",
     "subnets": [{"subnet": "10.89.5.0/24", "gateway": "10.89.5.1"},
                 {"subnet": "fd00::/64", "gateway": "fd00::1"}]},
    {"name": "dify_ssrf_proxy_network", "driver": "bridge", "network_interface": "podman7", "internal": True,
     "subnets": [{"subnet": "10.89.6.0/24", "gateway": "10.89.6.1"}]},
    {"name": "mac_vlan", "driver": "macvlan", "network_interface": "eth0", "subnets": []},
]


class Recorder:
    def __init__(self, ip_rc: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.ip_rc = ip_rc

    def __call__(self, argv, **kwargs) -> Result:
        argv = list(argv)
        self.calls.append(argv)
        if argv[:3] == ["podman", "network", "inspect"]:
            return Result(tuple(argv), 0, json.dumps(NETWORKS))
        if argv[:3] == ["podman", "network", "ls"]:
            return Result(tuple(argv), 0, "dify_default\ndify_ssrf_proxy_network\n")
        if argv[0] == "ip":
            err = "RTNETLINK answers: Operation not permitted" if self.ip_rc else ""
            return Result(tuple(argv), self.ip_rc, "", err)
        raise AssertionError(f"unexpected command {argv}")


def _sys(tmp_path, iface: str, mac: str, assign: str) -> None:
    d = tmp_path / iface
    d.mkdir()
    (d / "address").write_text(mac + "\n")
    (d / "addr_assign_type").write_text(assign + "\n")


@pytest.fixture
def root(monkeypatch):
    monkeypatch.setattr(bridges.os, "geteuid", lambda: 0)


def test_fixes_the_current_mac_and_announces_each_ipv4_gateway(tmp_path, root):
    _sys(tmp_path, "podman6", "0a:ec:c3:1e:ed:d5", "1")
    _sys(tmp_path, "podman7", "32:4a:a2:40:52:76", "3")
    rec, said = Recorder(), []
    engine = Engine("podman", runner=rec)
    lines = bridges.fix_macs(engine, ["dify_default", "dify_ssrf_proxy_network", "mac_vlan"], runner=rec,
                             sys_net=tmp_path, announce=lambda *a: said.append(a))
    assert ["ip", "link", "set", "dev", "podman6", "address", "0a:ec:c3:1e:ed:d5"] in rec.calls
    assert not any(c[0] == "ip" and "podman7" in c for c in rec.calls)  # already set explicitly
    assert said == [("podman6", "0a:ec:c3:1e:ed:d5", "10.89.5.1")]  # IPv4 only; not for podman7
    assert lines == ["bridge podman6 (dify_default): MAC fixed at 0a:ec:c3:1e:ed:d5, announced for 10.89.5.1",
                     "bridge podman7 (dify_ssrf_proxy_network): MAC already fixed"]


def test_project_networks_by_the_podman_compose_label(tmp_path, root):
    rec = Recorder()
    assert bridges.project_networks(Engine("podman", runner=rec), "dify") == ["dify_default",
                                                                             "dify_ssrf_proxy_network"]
    assert rec.calls[0][-2:] == ["--filter", "label=io.podman.compose.project=dify"]


def test_bridge_not_created_yet_and_ip_failure_are_reported(tmp_path, root):
    _sys(tmp_path, "podman6", "0a:ec:c3:1e:ed:d5", "1")
    rec, said = Recorder(ip_rc=2), []
    lines = bridges.fix_macs(Engine("podman", runner=rec), ["dify_default", "dify_ssrf_proxy_network"],
                             runner=rec, sys_net=tmp_path, announce=lambda *a: said.append(a))
    assert lines[0] == ("bridge podman6 (dify_default): could not fix MAC 0a:ec:c3:1e:ed:d5: "
                        "RTNETLINK answers: Operation not permitted")
    assert lines[1] == "bridge podman7 (dify_ssrf_proxy_network): not on this host yet (no container started)"
    assert said == []


def test_docker_and_rootless_podman_are_not_touched(tmp_path, monkeypatch):
    rec = Recorder()
    assert bridges.fix_macs(Engine("docker", runner=rec), ["bridge"], runner=rec, sys_net=tmp_path) == []
    monkeypatch.setattr(bridges.os, "geteuid", lambda: 1000)
    lines = bridges.fix_macs(Engine("podman", runner=rec), ["dify_default"], runner=rec, sys_net=tmp_path)
    assert len(lines) == 1 and "rootless podman" in lines[0] and "dify_default" in lines[0]
    assert rec.calls == []


def test_arp_announcement_frame():
    frame = bridges.arp_announcement("0a:ec:c3:1e:ed:d5", "10.89.5.1")
    mac, ip = bytes.fromhex("0aecc31eedd5"), socket.inet_aton("10.89.5.1")
    assert len(frame) == 60
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac and frame[12:14] == b"\x08\x06"
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)  # Ethernet/IPv4 request
    assert frame[22:28] == mac and frame[28:32] == ip  # sender: the gateway at its MAC
    assert frame[32:38] == b"\0" * 6 and frame[38:42] == ip  # target: the same IP (gratuitous)
    assert frame[42:] == b"\0" * 18


def test_compose_up_with_a_fake_or_remote_runner_leaves_bridges_alone(monkeypatch):
    called = []
    monkeypatch.setattr(bridges, "fix_project", lambda engine, project: called.append(project) or [])

    def runner(argv, **kwargs):
        return Result(tuple(argv), 0, "podman-compose version 1.6.0\npodman version 4.3.1\n")

    # this host's /sys is not the engine's when commands run elsewhere (DinD exec, a test double)
    Engine("podman", runner=runner, compose_argv=("podman-compose",)).compose_run(
        ["up", "-d"], project_dir="/x", project_name="dify")
    assert called == []
