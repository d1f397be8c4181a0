"""python -m localcluster.agent --kubeconfig FILE --state-dir DIR --config FILE"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from kubernetes import config as kube_config

from .config import AgentConfig
from .informer import run_informer
from .kube import Kube
from .kubeletapi import serve
from .manager import PodManager
from .nodes import NodeKeeper
from .podnetwork import LoopbackNetwork, RealNetwork, listen_in
from .provisioner import Provisioner

log = logging.getLogger("localcluster.agent")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster.agent")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s")
    logging.getLogger("kubernetes").setLevel(logging.WARNING)

    config = AgentConfig.load(args.config, args.state_dir.resolve())
    kube = Kube(kube_config.new_client_from_config(config_file=args.kubeconfig))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    names = [n["name"] for n in config.nodes]
    network = (RealNetwork(config.network, names, Path(config.cni_bin), config.state_dir) if config.network.real
               else LoopbackNetwork(config.network))
    if config.kubelet_port:
        # The apiserver reaches each node's kubelet API at the node's InternalIP, inside the node.
        for listening in ([listen_in(network.node_netns(n), network.node_address(n), config.kubelet_port)
                           for n in names] if network.real else [None]):
            serve(config.state_dir, config.kubelet_port, config.kubelet_cert, config.kubelet_key, config.ca_file,
                  listening)
    nodes = NodeKeeper(kube, config.nodes, config.kubelet_port, network)
    nodes.register()
    nodes.set_up_network(stop)
    provisioner = Provisioner(kube, config.state_dir)
    provisioner.ensure_storage_class()
    pods = PodManager(kube, config, network)
    threads = [
        threading.Thread(target=nodes.heartbeat_forever, args=(stop,), name="heartbeat", daemon=True),
        threading.Thread(target=run_informer, name="pvc-informer", daemon=True, args=(
            "pvcs", kube.core.list_persistent_volume_claim_for_all_namespaces, provisioner.on_list,
            provisioner.on_event, stop)),
        # Only pods bound to a node; the manager keeps those bound to ours.
        threading.Thread(target=run_informer, name="pod-informer", daemon=True, args=(
            "pods", kube.core.list_pod_for_all_namespaces, pods.on_list, pods.on_event, stop),
            kwargs={"field_selector": "spec.nodeName!="}),
    ]
    for thread in threads:
        thread.start()
    log.info("node agent ready: nodes %s, runnable images %s", sorted(config.node_names),
             config.runnable_image_prefixes)
    while not stop.wait(1.0):
        pass
    log.info("stopping: terminating every pod process")
    pods.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
