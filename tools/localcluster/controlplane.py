"""Command lines and health checks of etcd, kube-apiserver, kube-controller-manager and kube-scheduler.

Every component listens on ports picked at random at ``up`` time, so several
clusters can run side by side: etcd and the health ports on 127.0.0.1, the
apiserver on the network's ``api_host`` (the host's address on the cluster's
underlay, where pods and nodes reach it; 127.0.0.1 in loopback mode). The flags
follow controller-runtime's envtest, plus what envtest leaves out: the
controller manager (garbage collection, Jobs, Deployments, ServiceAccount tokens,
and node podCIDRs on the real network), the scheduler, and an explicit
``--advertise-address`` (these sandboxes may have no default route, without
which the apiserver refuses to start).
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from pathlib import Path

from .netplan import ClusterNetwork, NetPlan
from .pki import Pki


def free_ports(count: int) -> list[int]:
    """``count`` distinct free 127.0.0.1 ports from the kernel (bound together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """One free 127.0.0.1 port, for a server that a test or a benchmark starts."""
    return free_ports(1)[0]


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kubelet: int

    @classmethod
    def pick(cls) -> "Ports":
        """Distinct free ports, one a component."""
        return cls(*free_ports(len(fields(cls))))


def etcd_args(binary: Path, data_dir: Path, ports: Ports) -> list[str]:
    client = f"http://127.0.0.1:{ports.etcd_client}"
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    return [
        str(binary), "--name=default", f"--data-dir={data_dir}",
        f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}", "--initial-cluster-state=new",
        # Tests throw the data away: skipping fsync makes every write a memory write.
        "--unsafe-no-fsync", "--log-level=warn", "--quota-backend-bytes=4294967296",
    ]


def apiserver_args(binary: Path, pki: Pki, ports: Ports, cert_dir: Path, network: ClusterNetwork) -> list[str]:
    host = network.api_host
    return [
        str(binary),
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        f"--bind-address={host}", f"--advertise-address={host}", f"--secure-port={ports.apiserver}",
        f"--cert-dir={cert_dir}", f"--tls-cert-file={pki.apiserver_crt}", f"--tls-private-key-file={pki.apiserver_key}",
        f"--client-ca-file={pki.ca_crt}", f"--token-auth-file={pki.tokens_csv}",
        # No aggregated API servers here; a request-header CA only keeps the components' logs quiet.
        f"--requestheader-client-ca-file={pki.ca_crt}", "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
        "--authorization-mode=Node,RBAC", "--anonymous-auth=false",
        f"--service-account-issuer=https://{host}:{ports.apiserver}",
        f"--service-account-key-file={pki.sa_pub}", f"--service-account-signing-key-file={pki.sa_key}",
        f"--service-cluster-ip-range={network.service_cidr}", "--allow-privileged=true",
        # PodSecurity, ServiceAccount, DefaultStorageClass, ... are on by default in 1.34; these add to them.
        "--enable-admission-plugins=NodeRestriction,PodSecurity,ServiceAccount,DefaultStorageClass,ResourceQuota",
        # `kubectl logs/exec` reach the node agent's kubelet API over TLS with a client certificate.
        f"--kubelet-client-certificate={pki.kubelet_client_crt}", f"--kubelet-client-key={pki.kubelet_client_key}",
        f"--kubelet-certificate-authority={pki.ca_crt}", "--kubelet-preferred-address-types=InternalIP",
        # On the real network the `kubernetes` Service's endpoint is the apiserver's underlay address.
        # On loopback it would be 127.0.0.1, which validation refuses: pods there reach the apiserver
        # through KUBERNETES_SERVICE_HOST=127.0.0.1 instead.
        *([] if network.real else ["--endpoint-reconciler-type=none"]),
        "--profiling=false", "--v=1",
    ]


def _component_common(kubeconfig: Path, port: int) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}", "--bind-address=127.0.0.1", f"--secure-port={port}",
        "--leader-elect=false", "--profiling=false", "--v=1",
    ]


def controller_manager_args(binary: Path, pki: Pki, ports: Ports, kubeconfig: Path,
                            network: ClusterNetwork) -> list[str]:
    # On the real network the node IPAM controller gives each Node a /24 of the pod range (spec.podCIDR),
    # which the agent's CNI config hands out.
    ipam = [f"--cluster-cidr={network.cluster_cidr}", "--allocate-node-cidrs=true",
            f"--node-cidr-mask-size={NetPlan.NODE_CIDR_MASK}"] if network.real else []
    return [
        str(binary), *_component_common(kubeconfig, ports.controller_manager),
        f"--service-account-private-key-file={pki.sa_key}", f"--root-ca-file={pki.ca_crt}",
        "--use-service-account-credentials=true",
        # Every default controller: jobs, deployments, replicasets, garbage collector, namespaces,
        # serviceaccount(-token), endpoints(lices), horizontal pod autoscaling, the PV binder, ...
        "--controllers=*", f"--service-cluster-ip-range={network.service_cidr}", *ipam,
    ]


def scheduler_args(binary: Path, ports: Ports, kubeconfig: Path) -> list[str]:
    return [str(binary), *_component_common(kubeconfig, ports.scheduler)]


def write_kubeconfig(path: Path, server: str, ca: Path, token: str, name: str = "codex-local") -> None:
    """A kubeconfig in JSON (valid YAML) holding the admin token."""
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": "admin", "namespace": "default"}}],
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)


def http_ok(url: str, ca: Path | None = None, token: str | None = None, timeout: float = 2.0) -> tuple[bool, str]:
    """GET ``url``; (True, body) on 2xx. ``ca=None`` with https skips verification (self-signed health ports)."""
    context = None
    if url.startswith("https"):
        context = ssl.create_default_context(cafile=str(ca)) if ca else ssl._create_unverified_context()
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return 200 <= response.status < 300, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return False, f"HTTP {err.code}: {err.read().decode(errors='replace')[:500]}"
    except (OSError, ssl.SSLError) as err:
        return False, str(err)


class WaitAborted(RuntimeError):
    """A wait stopped early: what it waited on cannot happen (``alive()`` said why)."""


def wait_until(description: str, check, timeout: float, alive=None, interval: float = 0.1):
    """Call ``check()`` until it returns a truthy value; ``alive()`` failing aborts early with its message."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if alive is not None:
            problem = alive()
            if problem:
                raise WaitAborted(f"{description}: {problem}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {description}")
        time.sleep(interval)
