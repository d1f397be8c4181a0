"""One batch of CodexTrainingRuns, driven and timed the same way whether the operator or the floor
client makes their children: the same runs, created by the same 8 client threads, and the same
watch noting when each Job first exists. Only who creates the children differs, so the two
timings divide into a ratio that means something.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import kubernetes

# Client threads creating the runs (both sides pay for them; the time to all Jobs includes them).
RUN_CREATORS = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def bench_run(name: str) -> dict:
    """A small valid run; it never trains (the agent skips its image)."""
    return {
        "apiVersion": "codex.dev/v1alpha1", "kind": "CodexTrainingRun", "metadata": {"name": name},
        "spec": {
            "baseModel": {"embedded": "tiny-llama"},
            "dataset": {"source": {"configMap": {"name": "codex-sample-data", "key": "code_pairs.jsonl"}}},
            "training": {"maxSteps": 4},
            "resources": {"gpusPerNode": 0, "cpu": "100m", "memory": "128Mi"},
            "output": {"pvc": {"claimName": "codex-artifacts", "path": f"/{name}"}},
        },
    }


def run_inputs() -> list[dict]:
    """What every run of a batch reads: the dataset ConfigMap and the output claim."""
    data = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "codex-sample-data"},
            "data": {"code_pairs.jsonl": '{"prompt": "a", "completion": "b"}\n'}}
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "codex-artifacts"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
    return [data, claim]


def job_name(run_name: str) -> str:
    return f"{run_name}-train"


@dataclass
class Timeline:
    """When the first run was sent, when each run's create returned, when each Job was first seen."""

    started: float
    applied: dict[str, float]  # Job name -> its run's creation time
    apply_seconds: float
    seen: dict[str, float] = field(default_factory=dict)

    def figures(self) -> dict[str, float]:
        latencies = sorted(max(0.0, self.seen[job] - at) for job, at in self.applied.items())
        return {
            "apply_seconds": round(self.apply_seconds, 1),
            "all_jobs_seconds": round(max(self.seen.values()) - self.started, 1),
            "p50_apply_to_job_s": round(statistics.median(latencies), 3),
            "p99_apply_to_job_s": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3),
        }


def create_runs(api: kubernetes.client.CustomObjectsApi, namespace: str, count: int,
                on_created: Optional[Callable[[dict], None]] = None) -> Timeline:
    """Create ``count`` runs from :data:`RUN_CREATORS` threads; ``on_created`` gets each created object."""
    applied: dict[str, float] = {}

    def create(index: int) -> None:
        name = f"run-{index:05d}"
        created = api.create_namespaced_custom_object("codex.dev", "v1alpha1", namespace, "codextrainingruns",
                                                      bench_run(name))
        applied[job_name(name)] = time.monotonic()
        if on_created is not None:
            on_created(created)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=RUN_CREATORS) as pool:
        list(pool.map(create, range(count)))
    return Timeline(started, applied, time.monotonic() - started)


class JobWatch:
    """First-seen time of every Job in a namespace, from a watch that resumes when the server ends it.

    Events stay plain dicts (``deserialize=False`` skips the client's model classes): the bench
    shares the CPU with what it measures.
    """

    def __init__(self, namespace: str, count: int):
        self.namespace, self.count = namespace, count
        self.seen: dict[str, float] = {}
        self.done = threading.Event()
        self.batch = kubernetes.client.BatchV1Api()
        threading.Thread(target=self._watch, daemon=True).start()
        time.sleep(1)  # the watch is open before the first run is created

    def _watch(self) -> None:
        """Resume from the last resourceVersion seen, so a reopened watch does not list every Job again."""
        resource_version = None
        while not self.done.is_set():
            watch = kubernetes.watch.Watch()
            try:
                for event in watch.stream(self.batch.list_namespaced_job, self.namespace, timeout_seconds=120,
                                          resource_version=resource_version, deserialize=False):
                    if event["type"] == "ERROR":  # 410 Gone: start again from a fresh list
                        resource_version = None
                        break
                    meta = event["object"]["metadata"]
                    resource_version = meta.get("resourceVersion")
                    self.seen.setdefault(meta["name"], time.monotonic())
                    if len(self.seen) >= self.count:
                        self.done.set()
                        watch.stop()
            except Exception:  # a dropped watch under load: list and watch again
                resource_version = None
                time.sleep(0.2)

    def wait(self, timeout: float) -> dict[str, float]:
        if not self.done.wait(timeout=timeout):
            self.done.set()
            raise RuntimeError(f"only {len(self.seen)} of {self.count} Jobs appeared in {timeout:.0f} s")
        return self.seen


def process_rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    """A process's resident memory now, or its high-water mark so far (``VmHWM``)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return float("nan")


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


class FloorClient:
    """``bench/scale_floor.py`` in its own process (as the operator runs in its own), fed each
    created run on a line of its stdin by the run creators."""

    def __init__(self, kubeconfig: Path, workers: int, trainer_image: str, env: dict[str, str], log: Path):
        self.log = open(log, "a")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("scale_floor.py")), "--kubeconfig", str(kubeconfig),
             "--workers", str(workers), "--trainer-image", trainer_image],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.lock = threading.Lock()
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the floor client did not start; see {log}")

    def send(self, run: dict) -> None:
        line = json.dumps(run) + "\n"
        with self.lock:
            self.process.stdin.write(line)
            self.process.stdin.flush()

    def finish(self, timeout: float) -> dict[str, Any]:
        """End the input, wait for the RBAC still queued; the client's counts."""
        out, _ = self.process.communicate(timeout=timeout)  # closes stdin: the client's end of input
        self.log.close()
        if self.process.returncode != 0:
            raise RuntimeError(f"the floor client exited {self.process.returncode}; see {self.log.name}")
        return json.loads(out.strip().splitlines()[-1])


# Writes that never stop on a live cluster: the node's heartbeat and the components' auth checks.
BACKGROUND = ("leases", "nodes", "tokenreviews", "subjectaccessreviews")
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


def cluster_writes(metrics_text: str) -> float:
    """Every write the apiserver has served, by anyone, but the background ones (apiserver_request_total)."""
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        inside = line[line.index("{") + 1:line.rindex("}")]
        labels = {k: v.strip('"') for k, _, v in (part.partition("=") for part in inside.split(","))}
        if labels.get("verb") in WRITE_VERBS and labels.get("resource") not in BACKGROUND:
            total += float(line.rsplit(" ", 1)[1])
    return total
