"""PodManager: turn pod watch events into PodWorkers, and hand out GPUs; the pod network gives the sandboxes."""

from __future__ import annotations

import logging
import threading

from .config import AgentConfig
from .container import install_shim
from .worker import TERMINAL, PodWorker

log = logging.getLogger(__name__)


class PodManager:
    def __init__(self, kube, config: AgentConfig, network):
        self.kube = kube
        self.config = config
        self.network = network  # a podnetwork.RealNetwork or LoopbackNetwork
        self.lock = threading.Lock()
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()  # pods whose worker is done: only their deletion is left
        self.shim = install_shim(config.state_dir)
        self.free_gpus = {n["name"]: list(range(int(n["capacity"].get("nvidia.com/gpu", 0))))
                          for n in config.nodes}

    def on_list(self, pods: list[dict]) -> None:
        listed = {p["metadata"]["uid"] for p in pods}
        for pod in pods:
            ip = (pod.get("status") or {}).get("podIP")
            if ip:
                self.network.adopt(ip)
        with self.lock:
            vanished = [w for uid, w in self.workers.items() if uid not in listed]
        for worker in vanished:
            worker.vanish()
        for pod in pods:
            self.on_event("ADDED", pod)

    def on_event(self, event_type: str, pod: dict) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        if spec.get("nodeName") not in self.config.node_names:
            return
        uid = meta["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if event_type == "DELETED":
                self.finished.discard(uid)
                if worker:
                    worker.vanish()
                return
            if worker:
                worker.update(pod)
                return
            phase = (pod.get("status") or {}).get("phase")
            if uid in self.finished or phase in TERMINAL:
                if meta.get("deletionTimestamp"):
                    self.kube.delete_pod_now(meta["namespace"], meta["name"], uid)
                return
            worker = PodWorker(pod, self, self._take_gpus(pod))
            self.workers[uid] = worker
        log.info("pod %s/%s: starting on %s", meta["namespace"], meta["name"], spec["nodeName"])
        worker.start()

    def _take_gpus(self, pod: dict) -> list[int]:
        wanted = max((int(((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", 0) or 0)
                      for c in pod["spec"]["containers"]), default=0)
        free = self.free_gpus.get(pod["spec"]["nodeName"], [])
        taken, free[:] = free[:wanted], free[wanted:]
        return taken

    def worker_finished(self, worker: PodWorker) -> None:
        # Every container has stopped: the sandbox goes, as kubelet removes a finished pod's.
        self.network.release(worker.uid, worker.node, worker.sandbox)
        with self.lock:
            self.workers.pop(worker.uid, None)
            self.free_gpus.setdefault(worker.node, []).extend(worker.gpus)
            self.free_gpus[worker.node].sort()
            if not worker.gone:
                self.finished.add(worker.uid)
            pod = worker.pod
        # Deleted while (or after) it finished: complete the deletion (repeating one is harmless).
        if pod["metadata"].get("deletionTimestamp") and not worker.gone and not worker.shutting_down:
            self.kube.delete_pod_now(worker.namespace, worker.pod_name, worker.uid)

    def shutdown(self, timeout: float = 15.0) -> None:
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.shutdown()
        for worker in workers:
            worker.join(timeout)
