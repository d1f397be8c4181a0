"""LocalCluster: start, use and stop one embedded control plane plus its node agent.

    cluster = LocalCluster(workdir, nodes=[NodeSpec("gpu-node", capacity={"nvidia.com/gpu": "2"})])
    cluster.up()
    cluster.kubectl("get", "nodes")
    cluster.down()

``up`` returns once the apiserver is ready, the scheduler and the controller
manager answer their health checks, every Node is Ready and the ``default``
ServiceAccount exists. Every daemon is detached (its own session) and recorded
in ``state.json``; ``down`` stops them by those records.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from . import (build, clusternet, controlplane, layout, netplan, pki as pki_module, podnet, podtrouble, procs, underlay,
               vllmenv)
from .netplan import ClusterNetwork

TOOLS_DIR = Path(__file__).resolve().parent.parent
DEFAULT_RUNNABLE = ("codex-operator", "codex-trainer", "codex-serve")
DEFAULT_CAPACITY = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"}
# Stop order: the agent first (it stops the pods' processes), etcd last.
_STOP_ORDER = ("agent", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")
_GENERATED = ("state.json", "kubeconfig", "pki", "etcd", "logs", "agent", "apiserver-certs", "kube-proxy")
NETWORK_MODES = ("auto", "real", "loopback")


class NetworkModeError(RuntimeError):
    """The real network was asked for and this host cannot give it."""


@dataclass(frozen=True)
class NodeSpec:
    """One Node the agent registers: its name, labels and capacity (allocatable equals capacity)."""

    name: str = "local-node"
    labels: Mapping[str, str] = field(default_factory=dict)
    capacity: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_CAPACITY))

    def to_dict(self) -> dict:
        return {"name": self.name, "labels": dict(self.labels), "capacity": {**DEFAULT_CAPACITY, **self.capacity}}


def default_workdir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime and os.access(runtime, os.W_OK) else Path("/tmp")
    return base / f"codex-localcluster-{os.getuid()}"


def vllm_image() -> dict[str, list[str]]:
    """vllm/vllm-openai at the pinned release -> vLLM's server in the cached vLLM environment, once that is installed
    (``python -m localcluster build --vllm``); without it the image stays not runnable, and says so."""
    return {vllmenv.IMAGE: vllmenv.server_command()} if vllmenv.ready() else {}


class LocalCluster:
    def __init__(self, workdir: Path | str | None = None, nodes: Sequence[NodeSpec] = (NodeSpec(),),
                 runnable_image_prefixes: Sequence[str] = DEFAULT_RUNNABLE,
                 skip_image_prefixes: Sequence[str] = (), host_env: Sequence[str] = (),
                 network: str | None = None):
        self.workdir = Path(workdir or default_workdir()).resolve()
        # real: pods in network namespaces (CNI, kube-proxy, CoreDNS); loopback: pods on 127.X addresses
        # of the host's namespace; auto: real where the host allows it. $LOCALCLUSTER_NETWORK by default.
        self.network_mode = network or os.environ.get("LOCALCLUSTER_NETWORK") or "auto"
        if self.network_mode not in NETWORK_MODES:
            raise ValueError(f"network mode {self.network_mode!r} is not one of {', '.join(NETWORK_MODES)}")
        self.nodes = tuple(nodes)
        self.runnable_image_prefixes = tuple(runnable_image_prefixes)
        self.skip_image_prefixes = tuple(skip_image_prefixes)
        # Host environment variables copied into every container (e.g. HF_HOME for a shared model cache).
        self.host_env = tuple(host_env)
        self.state: dict = {}

    # ----- paths and state -------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.workdir / "state.json"

    @property
    def agent_dir(self) -> Path:
        return self.workdir / "agent"

    @property
    def network(self) -> ClusterNetwork:
        return ClusterNetwork(**self.state["network"])

    @property
    def server(self) -> str:
        return f"https://{self.network.api_host}:{self.state['ports']['apiserver']}"

    @property
    def pki(self) -> pki_module.Pki:
        return pki_module.Pki(self.workdir / "pki")

    @classmethod
    def attach(cls, workdir: Path | str | None = None) -> "LocalCluster":
        """A handle on a cluster that an earlier ``up`` (maybe in another process) started."""
        cluster = cls(workdir)
        if not cluster.state_file.exists():
            raise FileNotFoundError(f"no cluster state in {cluster.workdir} (run `python -m localcluster up`)")
        cluster.state = json.loads(cluster.state_file.read_text())
        cluster.nodes = tuple(NodeSpec(**n) for n in cluster.state.get("nodes", []))
        return cluster

    def _save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2) + "\n")
        os.replace(tmp, self.state_file)

    def _records(self) -> list[procs.ProcessRecord]:
        return [procs.ProcessRecord(**r) for r in self.state.get("processes", [])]

    def is_running(self) -> bool:
        return any(procs.is_alive(r) for r in self._records())

    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)}

    # ----- lifecycle --------------------------------------------------------------------------
    def up(self, timeout: float = 120.0) -> "LocalCluster":
        if self.state_file.exists() and LocalCluster.attach(self.workdir).is_running():
            raise RuntimeError(f"a cluster is already running in {self.workdir}: run `down` first")
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in _GENERATED:  # never wipe the whole workdir: it may be a directory the user chose
            path = self.workdir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        reason = underlay.unavailable_reason() if self.network_mode != "loopback" else None
        if reason and self.network_mode == "real":
            raise NetworkModeError(f"the real pod network is unavailable: {reason}")
        bin_dir = build.build()
        net_dir = build.build_network() if self.network_mode != "loopback" and not reason else None
        ports = controlplane.Ports.pick()
        self.state = {"ports": asdict(ports), "bin_dir": str(bin_dir), "net_dir": str(net_dir or ""),
                      "processes": [], "network": None, "nodes": [n.to_dict() for n in self.nodes]}
        self._save()
        try:
            if net_dir is None:
                network = ClusterNetwork("loopback", loopback_block=podnet.claim_block(str(self.workdir)))
                if self.network_mode == "auto":
                    print(f"localcluster: loopback network (no Service routing, no DNS): {reason}", file=sys.stderr)
            else:
                network = ClusterNetwork("real", index=netplan.claim(str(self.workdir)).index)
            self.state["network"] = network.to_dict()
            self._save()
            if network.real:
                underlay.up(network.plan, len(self.nodes))
                underlay.route_services(network.plan, network.plan.service_cidr)
            node_ips = [str(network.plan.node_address(i)) for i in range(len(self.nodes))] if network.real else []
            pki = pki_module.create(self.workdir / "pki", api_ips=(network.api_host, network.apiserver_service_ip),
                                    node_ips=tuple(node_ips))
            controlplane.write_kubeconfig(self.kubeconfig, self.server, pki.ca_crt, pki.admin_token)
            self._start_all(bin_dir, ports, pki, timeout)
        except BaseException:
            self.down()
            raise
        self.state["up_seconds"] = round(time.monotonic() - started, 1)
        self._save()
        return self

    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> procs.ProcessRecord:
        record, _ = procs.spawn(name, argv, self.workdir / "logs" / f"{name}.log", env=env)
        self.state["processes"].append(record.to_dict())
        self._save()
        return record

    def _exited(self, record: procs.ProcessRecord):
        def check() -> str | None:
            if procs.is_alive(record):
                return None
            tail = Path(record.log).read_text(errors="replace")[-3000:]
            return f"{record.name} exited; last log lines:\n{tail}"
        return check

    def _start_all(self, bin_dir: Path, ports: controlplane.Ports, pki: pki_module.Pki, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        remaining = lambda: max(1.0, deadline - time.monotonic())  # noqa: E731
        etcd = self._spawn("etcd", controlplane.etcd_args(bin_dir / "etcd", self.workdir / "etcd", ports))
        controlplane.wait_until("etcd health", lambda: controlplane.http_ok(
            f"http://127.0.0.1:{ports.etcd_client}/health")[0], remaining(), self._exited(etcd))
        network = self.network
        apiserver = self._spawn("kube-apiserver", controlplane.apiserver_args(
            bin_dir / "kube-apiserver", pki, ports, self.workdir / "apiserver-certs", network))
        controlplane.wait_until("kube-apiserver /readyz", lambda: controlplane.http_ok(
            f"{self.server}/readyz", pki.ca_crt, pki.admin_token)[0], remaining(), self._exited(apiserver))
        kcm = self._spawn("kube-controller-manager", controlplane.controller_manager_args(
            bin_dir / "kube-controller-manager", pki, ports, self.kubeconfig, network))
        scheduler = self._spawn("kube-scheduler", controlplane.scheduler_args(
            bin_dir / "kube-scheduler", ports, self.kubeconfig))
        agent = self._spawn("agent", self._agent_argv(ports), env=self._agent_env())
        proxies = [self._spawn_kube_proxy(bin_dir, i, node.name) for i, node in enumerate(self.nodes)] \
            if network.real else []
        for record, port in ((kcm, ports.controller_manager), (scheduler, ports.scheduler)):
            controlplane.wait_until(f"{record.name} /healthz", lambda p=port: controlplane.http_ok(
                f"https://127.0.0.1:{p}/healthz")[0], remaining(), self._exited(record))
        controlplane.wait_until("every node Ready", self._nodes_ready, remaining(), self._exited(agent))
        controlplane.wait_until("ServiceAccount kube-system/default", lambda: self._api_get(
            "/api/v1/namespaces/kube-system/serviceaccounts/default") is not None, remaining(), self._exited(kcm))
        if not network.real:
            return
        for index, node in enumerate(self.nodes):  # NetworkPolicy: kube-router reads the Nodes it serves
            self._spawn(f"kube-router-{node.name}", clusternet.kube_router_argv(
                Path(self.state["net_dir"]) / "kube-router", network.plan.node_netns(index), self.kubeconfig,
                node.name, network))
        self.apply(*clusternet.coredns_manifests(network))
        vip = f"https://{network.apiserver_service_ip}/readyz"
        for proxy in proxies:
            controlplane.wait_until(f"the kubernetes Service at {vip} through {proxy.name}", lambda: controlplane.http_ok(
                vip, pki.ca_crt, pki.admin_token)[0], remaining(), self._exited(proxy))
        controlplane.wait_until(f"CoreDNS answering for kubernetes.default.svc at {network.dns_ip}",
                                self._dns_answers, remaining(), self._exited(agent))
        controlplane.wait_until("ServiceAccount default/default", lambda: self._api_get(
            "/api/v1/namespaces/default/serviceaccounts/default") is not None, remaining(), self._exited(kcm))

    def _spawn_kube_proxy(self, bin_dir: Path, index: int, node: str) -> procs.ProcessRecord:
        """kube-proxy for ``node``, inside the node's network namespace (its rules are the node's)."""
        directory = self.workdir / "kube-proxy"
        directory.mkdir(exist_ok=True)
        config = directory / f"{node}.json"
        config.write_text(json.dumps(clusternet.kube_proxy_config(
            self.network, node, self.kubeconfig, clusternet.proxy_mode()), indent=2) + "\n")
        return self._spawn(f"kube-proxy-{node}", clusternet.kube_proxy_argv(
            bin_dir / "kube-proxy", self.network.plan.node_netns(index), config))

    def _dns_answers(self) -> bool:
        try:
            return bool(clusternet.dns_query(self.network.dns_ip, "kubernetes.default.svc.cluster.local", 0.5))
        except (OSError, clusternet.DnsError):
            return False

    def _agent_argv(self, ports: controlplane.Ports) -> list[str]:
        self.agent_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "nodes": self.state["nodes"],
            "runnable_image_prefixes": list(self.runnable_image_prefixes) + (
                [clusternet.COREDNS_IMAGE_REPOSITORY] if self.state["net_dir"] else []) + list(vllm_image()),
            "skip_image_prefixes": list(self.skip_image_prefixes),
            "host_env": {name: os.environ[name] for name in self.host_env if name in os.environ},
            "network": self.state["network"],
            "cni_bin": str(Path(self.state["net_dir"]) / "cni") if self.state["net_dir"] else "",
            "image_entrypoints": {**({clusternet.COREDNS_IMAGE_REPOSITORY: [
                str(Path(self.state["net_dir"]) / "coredns")]} if self.state["net_dir"] else {}),
                **vllm_image()},
            "image_bin_dirs": {vllmenv.IMAGE: str(vllmenv.python().parent)} if vllmenv.ready() else {},
            "apiserver_port": ports.apiserver,
            "kubelet_port": ports.kubelet,
            "ca_file": str(self.pki.ca_crt),
            "kubelet_cert": str(self.pki.kubelet_crt),
            "kubelet_key": str(self.pki.kubelet_key),
        }
        (self.agent_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        return [sys.executable, "-m", "localcluster.agent", "--kubeconfig", str(self.kubeconfig),
                "--state-dir", str(self.agent_dir), "--config", str(self.agent_dir / "config.json")]

    def _agent_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TOOLS_DIR), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _api_get(self, path: str) -> dict | None:
        ok, body = controlplane.http_ok(self.server + path, self.pki.ca_crt, self.pki.admin_token)
        return json.loads(body) if ok else None

    def _nodes_ready(self) -> bool:
        listed = self._api_get("/api/v1/nodes") or {"items": []}
        ready = {n["metadata"]["name"] for n in listed["items"]
                 if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
                 and not any(t["key"] == "node.kubernetes.io/not-ready" for t in n.get("spec", {}).get("taints", []))}
        return {n["name"] for n in self.state["nodes"]} <= ready

    def down(self) -> None:
        """Stop every recorded process (SIGTERM, then SIGKILL) and sweep leftover container processes."""
        if not self.state and self.state_file.exists():
            self.state = json.loads(self.state_file.read_text())
        records = self._records()
        for name in _STOP_ORDER:
            for record in (r for r in records if r.name == name):
                procs.stop(record, grace=20.0 if name == "agent" else 10.0)
        for record in records:  # anything not in the stop order
            procs.stop(record)
        for leftover in sorted((self.agent_dir / "running").glob("*.json")):
            try:
                procs.stop(procs.ProcessRecord(**json.loads(leftover.read_text())), grace=2.0)
            except (OSError, ValueError, TypeError):
                pass
            leftover.unlink(missing_ok=True)
        network = self.state.get("network")
        if network:
            network = ClusterNetwork(**network)
            if network.real:
                underlay.down(network.plan)
                netplan.release(network.plan)
            else:
                podnet.release_block(network.loopback_block)
        if self.state:
            self.state["processes"] = []
            self._save()

    # ----- using the cluster ------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run the built kubectl against this cluster; ``check`` raises with kubectl's stderr on failure."""
        kubectl = Path(self.state.get("bin_dir") or build.bin_dir()) / "kubectl"
        proc = subprocess.run([str(kubectl), f"--kubeconfig={self.kubeconfig}", *args], input=input,
                              capture_output=True, text=True, timeout=timeout, env={**os.environ, **self.env()})
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def get_json(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", "-o", "json", *args).stdout)

    def apply(self, *manifests: dict, namespace: str | None = None, check: bool = True,
              extra: Sequence[str] = ()) -> subprocess.CompletedProcess:
        """``kubectl apply`` of manifests given as dicts (one v1 List), optionally into ``namespace``."""
        body = {"apiVersion": "v1", "kind": "List", "items": list(manifests)}
        args = ["apply", "-f", "-", *extra] + (["-n", namespace] if namespace else [])
        return self.kubectl(*args, input=json.dumps(body), check=check)

    def wait_for(self, description: str, check, timeout: float = 60.0, interval: float = 0.25, alive=None):
        """Poll ``check()`` until it returns something truthy, and return that; ``alive()`` returning a
        message (say :meth:`pod_trouble`) stops the wait at once with it."""
        return controlplane.wait_until(description, check, timeout, alive=alive, interval=interval)

    def pod_logs(self, namespace: str, pod: str, container: str | None = None, previous: bool = False) -> str:
        return layout.read_logs(self.agent_dir, namespace, pod, container, previous)

    def service_address(self, namespace: str, service: str, port: int | str) -> str:
        """``http://<ClusterIP>:<port>`` of a Service port (a number or a port name): kube-proxy on the
        nodes carries it to a ready endpoint, from the host as from pods. Needs the real network."""
        if not self.network.real:
            raise LookupError(f"service {namespace}/{service}: the loopback network routes no Service "
                              "(start the cluster with the real network)")
        svc = self.get_json("service", service, "-n", namespace)
        wanted = next((p for p in svc["spec"].get("ports", []) if port in (p.get("port"), p.get("name"))), None)
        if wanted is None:
            raise LookupError(f"service {namespace}/{service} has no port {port!r}")
        if svc["spec"].get("clusterIP") in (None, "", "None"):
            raise LookupError(f"service {namespace}/{service} is headless: it has no ClusterIP")
        return f"http://{svc['spec']['clusterIP']}:{wanted['port']}"

    def pod_trouble(self, namespace: str, selector: str) -> str | None:
        """A report on the first pod matching ``selector`` that cannot start on its own (unschedulable,
        crash-looping, a command that cannot exec): the reason, its last log lines and its events.
        None while every such pod is fine or only slow. Pass it as ``alive`` to :meth:`wait_for`."""
        for pod in self.get_json("pods", "-n", namespace, "-l", selector)["items"]:
            problem = podtrouble.pod_problem(pod)
            if problem:
                name = pod["metadata"]["name"]
                events = self.get_json("events", "-n", namespace, "--field-selector",
                                       f"involvedObject.kind=Pod,involvedObject.name={name}")["items"]
                return podtrouble.report(pod, problem, lambda c: self.pod_logs(namespace, name, c) or self.pod_logs(
                    namespace, name, c, previous=True), events)
        return None

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None,
                         timeout: float = 30.0) -> str:
        """Create a namespace and wait for its ``default`` ServiceAccount (pods are refused before it exists)."""
        manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels or {})}}
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        controlplane.wait_until(f"ServiceAccount {name}/default", lambda: self._api_get(
            f"/api/v1/namespaces/{name}/serviceaccounts/default") is not None, timeout)
        return name

    @contextmanager
    def temporary_namespace(self, stem: str, labels: Mapping[str, str] | None = None) -> Iterator[str]:
        """A fresh namespace ``<stem>-<5 hex>`` (``stem`` made a DNS label, a test's name say),
        deleted without waiting when the block ends."""
        label = re.sub(r"[^a-z0-9]+", "-", stem.lower())[:40].strip("-")
        name = self.create_namespace(f"{label}-{uuid.uuid4().hex[:5]}", labels)
        try:
            yield name
        finally:
            self.kubectl("delete", "namespace", name, "--wait=false", check=False)
