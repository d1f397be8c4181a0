"""The pod network's address plan, and its underlay on the host: set up, reachable, torn down to nothing."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
import threading

import pytest

from localcluster import netplan, underlay
from localcluster.netplan import NetPlan

UNAVAILABLE = underlay.unavailable_reason()


def test_every_block_is_inside_the_shared_address_space_and_disjoint():
    blocks = [NetPlan(i).block for i in range(netplan.BLOCKS)]
    assert all(b.subnet_of(netplan.SUPERNET) for b in blocks)
    assert len(set(blocks)) == netplan.BLOCKS == 64


def test_a_plan_keeps_its_ranges_apart_inside_its_block():
    plan = NetPlan(63)
    ranges = [plan.underlay, plan.service_cidr, plan.cluster_cidr]
    assert all(r.subnet_of(plan.block) for r in ranges)
    assert not any(a.overlaps(b) for i, a in enumerate(ranges) for b in ranges[i + 1:])
    assert plan.host_address in plan.underlay and plan.node_address(199) in plan.underlay
    assert plan.dns_service_ip in plan.service_cidr and plan.apiserver_service_ip == plan.service_cidr[1]
    assert len(plan.node_veth(199)) <= netplan.IFNAMSIZ and plan.owns(plan.node_netns(3))
    with pytest.raises(ValueError):
        plan.node_address(200)
    with pytest.raises(ValueError):
        NetPlan(64)


def test_claimed_blocks_differ_until_released(tmp_path, monkeypatch):
    monkeypatch.setattr(netplan, "MARKERS", tmp_path)
    first, second = netplan.claim("a"), netplan.claim("b")
    assert first.index != second.index
    netplan.release(first)
    assert not (tmp_path / str(first.index)).exists() and (tmp_path / str(second.index)).exists()


def _serve_once(host: str) -> tuple[int, threading.Thread]:
    """A TCP listener on the host that answers one connection with b'ok'."""
    server = socket.create_server((host, 0))

    def answer():
        with server:
            connection, _ = server.accept()
            with connection:
                connection.sendall(b"ok")
    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return server.getsockname()[1], thread


def _connect_from(netns: str, host: str, port: int) -> str:
    code = f"import socket; s = socket.create_connection(({host!r}, {port}), timeout=5); print(s.recv(2).decode())"
    return subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=20).stdout.strip()


@pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")
def test_the_underlay_connects_host_and_nodes_and_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(netplan, "MARKERS", tmp_path)
    plan = netplan.claim(str(tmp_path))
    try:
        underlay.up(plan, nodes=2)
        underlay.up(plan, nodes=2)  # again: nothing doubles, nothing fails
        port, served = _serve_once(str(plan.host_address))
        assert _connect_from(plan.node_netns(1), str(plan.host_address), port) == "ok"
        served.join(5)
        # An address of the block that nothing holds is refused on the host, never routed out.
        stray = str(plan.cluster_cidr[77])
        route = subprocess.run(["ip", "route", "get", stray], capture_output=True, text=True)
        assert route.returncode != 0 or "unreachable" in route.stdout, route.stdout
        pods = list(plan.cluster_cidr.subnets(new_prefix=plan.NODE_CIDR_MASK))[1]
        underlay.route_pods(plan, 1, str(pods))
        via = subprocess.run(["ip", "route", "get", str(pods[5])], capture_output=True, text=True, check=True).stdout
        assert f"via {plan.node_address(1)} dev {plan.bridge}" in via, via
    finally:
        underlay.down(plan)
        netplan.release(plan)
    assert underlay.leftovers(plan) == []
    underlay.down(plan)  # again, on nothing: no error


def _listen_in(netns: str, host: str) -> subprocess.Popen:
    """A one-connection TCP server on ``host``:8080 inside ``netns``, answering b'ok'."""
    code = ("import socket; s = socket.create_server((%r, 8080)); print('ready', flush=True); "
            "c, _ = s.accept(); c.sendall(b'ok'); c.close()" % host)
    server = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", code], stdout=subprocess.PIPE,
                              text=True)
    assert server.stdout.readline().strip() == "ready"
    return server


@pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")
def test_a_pod_sandbox_gets_its_address_from_the_cni_plugins_and_gives_it_back(tmp_path, monkeypatch):
    from localcluster import build, cni
    cni_path = build.build_network(tuple(build.CNI_PLUGINS)) / "cni"
    monkeypatch.setattr(netplan, "MARKERS", tmp_path / "markers")
    plan = netplan.claim(str(tmp_path))
    pod_cidr = str(list(plan.cluster_cidr.subnets(new_prefix=plan.NODE_CIDR_MASK))[0])
    runtime = cni.Cni(cni_path, plan.node_netns(0), cni.node_conflist(plan, pod_cidr, tmp_path / "ipam"),
                      tmp_path / "results")
    sandbox = plan.pod_netns("0123-uid")
    try:
        underlay.up(plan, nodes=1)
        underlay.route_pods(plan, 0, pod_cidr)
        subprocess.run(["ip", "netns", "add", sandbox], check=True)
        address = cni.pod_ip(runtime.add("0123-uid", sandbox))
        assert ipaddress.ip_address(address) in ipaddress.ip_network(pod_cidr)
        server = _listen_in(sandbox, address)
        with socket.create_connection((address, 8080), timeout=5) as connection:  # host -> node -> pod
            assert connection.recv(2) == b"ok"
        server.wait(5)
        runtime.delete("0123-uid", sandbox)
        runtime.delete("0123-uid", sandbox)  # a second DEL is no error
        assert list((tmp_path / "ipam" / cni.NETWORK_NAME).glob("1*")) == []  # the address is given back
    finally:
        subprocess.run(["ip", "netns", "del", sandbox], capture_output=True)
        underlay.down(plan)
        netplan.release(plan)
    assert underlay.leftovers(plan) == []


def test_an_agent_that_is_not_root_is_told_why_it_gets_the_loopback_network(monkeypatch):
    monkeypatch.setattr(underlay.os, "geteuid", lambda: 1000)
    assert underlay.unavailable_reason() == "the node agent is not root, so it cannot create network namespaces"
    monkeypatch.setattr(underlay.shutil, "which", lambda name: None)
    monkeypatch.setattr(underlay.os, "geteuid", lambda: 0)
    assert "iproute2" in underlay.unavailable_reason()


def test_asking_for_the_real_network_where_there_is_none_fails_naming_the_reason(tmp_path, monkeypatch):
    from localcluster.cluster import LocalCluster, NetworkModeError

    monkeypatch.setattr(underlay, "unavailable_reason", lambda: "ip netns add failed: Operation not permitted")
    with pytest.raises(NetworkModeError, match="real pod network is unavailable: ip netns add failed"):
        LocalCluster(tmp_path, network="real").up()
