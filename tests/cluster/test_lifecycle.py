"""`up` and `down` themselves: a second cluster beside the session one, a warm start, no orphans."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from localcluster import LocalCluster, NodeSpec, underlay
from localcluster.procs import ProcessRecord, is_alive, pids_with

pytestmark = pytest.mark.cluster

TOOLS_DIR = Path(__file__).resolve().parents[2] / "tools"
WARM_UP_SECONDS = 30  # the bound, with CoreDNS and kube-proxy in it


def _cli(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localcluster", "--workdir", str(workdir), *args],
                          capture_output=True, text=True, timeout=180, cwd=TOOLS_DIR)


def test_second_cluster_side_by_side_starts_warm_and_stops_clean(cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("second-cluster")
    workdir.chmod(0o755)
    up = _cli(workdir, "up", "--node", "side-node", "--gpu", "1")
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"KUBECONFIG={workdir / 'kubeconfig'}"
    second = LocalCluster.attach(workdir)
    try:
        assert second.state["up_seconds"] < WARM_UP_SECONDS, second.state["up_seconds"]
        assert second.state["ports"]["apiserver"] != cluster.state["ports"]["apiserver"]
        assert second.state["network"] != cluster.state["network"]
        assert _cli(workdir, "env").stdout.strip() == f"KUBECONFIG={workdir / 'kubeconfig'}"

        nodes = [n["metadata"]["name"] for n in second.get_json("nodes")["items"]]
        assert nodes == ["side-node"]
        assert second.get_json("node/side-node")["status"]["allocatable"]["nvidia.com/gpu"] == "1"
        # The container leaves a grandchild of its own: `down` must not leave it behind either.
        marker = f"grandchild-of-{workdir.name}"
        script = (f"import subprocess, time; subprocess.Popen(['python', '-c', 'import time; time.sleep(600)', "
                  f"'{marker}']); print('on', flush=True); time.sleep(600)")
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "long", "namespace": "default"},
               "spec": {"containers": [{"name": "main", "image": "codex-operator:dev",
                                        "command": ["python", "-c", script]}]}}
        second.apply(pod)
        second.wait_for("the pod to run", lambda: "on" in _logs(second, "long"), timeout=60)
        assert _cli(workdir, "logs", "default", "long").stdout == "on\n"
        uid = second.get_json("pod/long")["metadata"]["uid"]
        containers = [ProcessRecord(**json.loads(p.read_text()))
                      for p in (workdir / "agent" / "running").glob("*.json")]
        assert len([c for c in containers if c.name.startswith(uid)]) == 1 and all(map(is_alive, containers))
        daemons = [ProcessRecord(**r) for r in second.state["processes"]]
        assert sorted(r.name for r in daemons) == sorted(
            ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "agent"]
            + (["kube-proxy-side-node", "kube-router-side-node"] if second.network.real else []))
        second.wait_for("the grandchild to start", lambda: pids_with(marker), timeout=30)
        # The worst case: the agent dies without cleaning up. Its container dies with it (parent-death
        # signal); the grandchild is left to `down`, which kills the container's recorded process group.
        agent = next(r for r in daemons if r.name == "agent")
        os.kill(agent.pid, signal.SIGKILL)
    finally:
        down = _cli(workdir, "down")
    assert down.returncode == 0, down.stderr
    assert not [r.name for r in daemons + containers if is_alive(r)]
    assert not pids_with(marker)
    if second.network.real:  # every namespace, link and route of its block is gone
        assert underlay.leftovers(second.network.plan) == []
    else:
        assert second.network.loopback_block not in subprocess.run(["ip", "route", "show", "table", "local"],
                                                                   capture_output=True, text=True).stdout
    # The session cluster is untouched.
    assert cluster.is_running()
    assert cluster.kubectl("get", "node", "local-node", "-o", "name").stdout.strip() == "node/local-node"


def _logs(cluster: LocalCluster, pod: str) -> str:
    try:
        return cluster.pod_logs("default", pod)
    except LookupError:
        return ""


def test_node_spec_capacity_defaults_are_merged():
    spec = NodeSpec("n", capacity={"nvidia.com/gpu": "4"}).to_dict()
    assert spec["capacity"]["nvidia.com/gpu"] == "4" and spec["capacity"]["pods"] == "110"


def test_the_loopback_network_is_the_fallback_and_says_so(tmp_path_factory):
    """Where network namespaces cannot be had, pods run on loopback addresses; asked for it, the
    cluster runs that way too, and `up` says which network it has."""
    workdir = tmp_path_factory.mktemp("loopback-cluster")
    workdir.chmod(0o755)
    up = _cli(workdir, "up", "--node", "lo-node", "--network", "loopback")
    assert up.returncode == 0, up.stderr
    cluster = LocalCluster.attach(workdir)
    try:
        assert cluster.network.mode == "loopback" and cluster.server.startswith("https://127.0.0.1:")
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lo", "namespace": "default"},
               "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "codex-operator:dev",
                                                                  "command": ["python", "-c", "print('up')"]}]}}
        cluster.apply(pod)
        cluster.wait_for("the pod to succeed", lambda: cluster.get_json("pod/lo")["status"].get("phase") == "Succeeded",
                         timeout=60)
        ip = cluster.get_json("pod/lo")["status"]["podIP"]
        assert ip.startswith("127.") and ipaddress.ip_address(ip) in ipaddress.ip_network(cluster.network.loopback_block)
        with pytest.raises(LookupError, match="loopback network routes no Service"):
            cluster.service_address("default", "kubernetes", 443)
    finally:
        assert _cli(workdir, "down").returncode == 0
