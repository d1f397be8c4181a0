"""How the operator scales: apply 100, then 1000 CodexTrainingRuns, measure how fast their Jobs appear.

Runs against the embedded control plane with trainer pods not run (the node agent skips the
trainer image), so only the control loop is measured. Reports, per batch:

- the time from the first apply until every Job exists, and the p50/p99 apply-to-Job latency;
- the operator's RSS;
- API requests per run, counted by the apiserver itself: the operator authenticates as its
  own ServiceAccount, so its requests are the ones API Priority and Fairness dispatches under
  the "service-accounts" flow schema (the controllers use kube-system accounts, the node its cert);
- then, after the runs sit idle for two minutes, the requests and writes the operator made.

    python bench/operator_scale.py [--batches 100 1000] [--idle 120] [--json out.json]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tools"), str(REPO / "operator")]

import kubernetes  # noqa: E402
from localcluster import LocalCluster, NodeSpec  # noqa: E402
from localcluster.cluster import DEFAULT_CAPACITY  # noqa: E402

from codex_operator.builders.operator_install import OPERATOR_ENV  # noqa: E402
from codex_operator.rbac_rules import build_operator_rbac  # noqa: E402

OPERATOR_NS = "codex-system"
TRAINER_IMAGE = "codex-trainer:bench"
FLOW_SCHEMA = "service-accounts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def scrape(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Bench:
    def __init__(self, workdir: Path):
        self.cluster = LocalCluster(workdir, nodes=[NodeSpec(capacity={**DEFAULT_CAPACITY, "pods": "5000",
                                                                       "cpu": "2000", "memory": "4000Gi"})],
                                    skip_image_prefixes=(TRAINER_IMAGE,))
        self.operator: subprocess.Popen | None = None
        self.metrics_port = free_port()

    # --- setup ---------------------------------------------------------------------------
    def up(self) -> None:
        self.cluster.up()
        for crd in sorted((REPO / "crds").glob("*.yaml")):
            self.cluster.kubectl("apply", "-f", str(crd))
        for crd in ("codextrainingruns.codex.dev", "codexmodels.codex.dev"):
            self.cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        self.cluster.create_namespace(OPERATOR_NS)
        self.cluster.apply(*build_operator_rbac("codex-operator", OPERATOR_NS))
        kubernetes.config.load_kube_config(str(self.cluster.kubeconfig))
        self.api = kubernetes.client.CustomObjectsApi()

    def operator_kubeconfig(self) -> Path:
        """A kubeconfig holding the operator ServiceAccount's token: its requests are counted apart."""
        token = self.cluster.kubectl("create", "token", "codex-operator", "-n", OPERATOR_NS,
                                     "--duration=6h").stdout.strip()
        admin = json.loads(self.cluster.kubeconfig.read_text())
        admin["users"] = [{"name": "codex-operator", "user": {"token": token}}]
        admin["contexts"][0]["context"]["user"] = "codex-operator"
        path = self.cluster.workdir / "operator-kubeconfig"
        path.write_text(json.dumps(admin))
        return path

    def start_operator(self, python_args: tuple[str, ...] = ("-m", "codex_operator.main")) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.operator_kubeconfig()), "CODEX_TRAINER_IMAGE": TRAINER_IMAGE,
               "CODEX_METRICS_PORT": str(self.metrics_port), "POD_IP": "127.0.0.1",
               # As in the operator's Deployment (builders/operator_install.py).
               **OPERATOR_ENV}
        log = open(self.cluster.workdir / "operator.log", "w")
        self.operator = subprocess.Popen(
            [sys.executable, *python_args, "--all-namespaces", "--quiet",
             "--liveness-port", str(free_port())], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.operator_metrics()
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("the operator did not start; see operator.log")

    def stop(self) -> None:
        if self.operator is not None and self.operator.poll() is None:
            self.operator.send_signal(signal.SIGTERM)
            try:
                self.operator.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.operator.kill()
        self.cluster.down()

    # --- measurements --------------------------------------------------------------------
    def operator_metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def operator_requests(self) -> float:
        """Requests the apiserver dispatched for the operator's ServiceAccount (APF flow schema)."""
        text = self.cluster.kubectl("get", "--raw", "/metrics").stdout
        return scrape(text, "apiserver_flowcontrol_dispatched_requests_total", flow_schema=FLOW_SCHEMA)

    def own_writes(self) -> float:
        text = self.operator_metrics()
        return sum(scrape(text, "codex_operator_api_requests_total", verb=verb) for verb in ("post", "patch", "delete"))

    def cpu_seconds(self) -> float:
        """User+system CPU the operator process has used."""
        fields = Path(f"/proc/{self.operator.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self, field: str = "VmRSS") -> float:
        """The operator's resident memory now, or its high-water mark so far (``VmHWM``)."""
        for line in Path(f"/proc/{self.operator.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def settle(self, quiet_seconds: float = 10, timeout: float = 300) -> None:
        """Wait until the operator has sent no request for ``quiet_seconds``."""
        last, since = self.operator_requests(), time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(2)
            now = self.operator_requests()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_seconds:
                return

    # --- one batch -----------------------------------------------------------------------
    def batch(self, count: int, namespace: str) -> dict:
        self.cluster.create_namespace(namespace)
        data = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "codex-sample-data"},
                "data": {"code_pairs.jsonl": '{"prompt": "a", "completion": "b"}\n'}}
        claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "codex-artifacts"},
                 "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
        self.cluster.apply(data, claim, namespace=namespace)
        seen: dict[str, float] = {}
        done = threading.Event()
        watcher = threading.Thread(target=self._watch_jobs, args=(namespace, count, seen, done), daemon=True)
        watcher.start()
        time.sleep(1)
        requests_before, writes_before = self.operator_requests(), self.own_writes()
        applied: dict[str, float] = {}
        cpu_before = self.cpu_seconds()
        started = time.monotonic()

        def create(index: int) -> None:
            name = f"run-{index:04d}"
            self.api.create_namespaced_custom_object("codex.dev", "v1alpha1", namespace, "codextrainingruns",
                                                     bench_run(name))
            applied[f"{name}-train"] = time.monotonic()

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(create, range(count)))
        apply_seconds = time.monotonic() - started
        if not done.wait(timeout=600):
            raise RuntimeError(f"only {len(seen)} of {count} Jobs appeared")
        all_jobs = max(seen.values()) - started
        cpu_to_jobs = self.cpu_seconds() - cpu_before
        rss_at_jobs = self.rss_mb()
        self.settle()
        requests = self.operator_requests() - requests_before
        writes = self.own_writes() - writes_before
        time.sleep(35)  # one memory.trim_periodically() round after the burst
        latencies = sorted(max(0.0, seen[job] - applied[job]) for job in applied)
        text = self.operator_metrics()
        children_s = scrape(text, "codex_operator_run_children_seconds_sum")
        children_n = scrape(text, "codex_operator_run_children_seconds_count") or 1
        return {
            "runs": count,
            "apply_seconds": round(apply_seconds, 1),
            "all_jobs_seconds": round(all_jobs, 1),
            "p50_apply_to_job_s": round(statistics.median(latencies), 3),
            "p99_apply_to_job_s": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3),
            "operator_cpu_s_until_all_jobs": round(cpu_to_jobs, 1),
            # Cumulative over the batches so far: the mean time a new run's children take to create.
            "mean_children_api_s": round(children_s / children_n, 3),
            "rss_at_all_jobs_mb": round(rss_at_jobs, 1),
            "rss_settled_mb": round(self.rss_mb(), 1),
            # The most the operator has held at any moment since it started (this batch and before).
            "rss_peak_mb": round(self.rss_mb("VmHWM"), 1),
            "requests_per_run": round(requests / count, 1),
            "own_writes_per_run": round(writes / count, 1),
        }

    def _watch_jobs(self, namespace: str, count: int, seen: dict, done: threading.Event) -> None:
        """First-seen time of every Job; the watch is reopened when the server ends it."""
        batch = kubernetes.client.BatchV1Api()
        while not done.is_set():
            watch = kubernetes.watch.Watch()
            try:
                for event in watch.stream(batch.list_namespaced_job, namespace, timeout_seconds=60):
                    seen.setdefault(event["object"].metadata.name, time.monotonic())
                    if len(seen) >= count:
                        done.set()
                        watch.stop()
            except Exception:  # a dropped watch under load: list and watch again
                time.sleep(0.2)

    def apiserver_writes(self) -> float:
        """Every write the apiserver served on the kinds the operator writes, whoever sent it."""
        text = self.cluster.kubectl("get", "--raw", "/metrics").stdout
        return sum(scrape(text, "apiserver_request_total", verb=verb, resource=resource)
                   for verb in ("POST", "PATCH", "PUT", "DELETE")
                   for resource in ("codextrainingruns", "jobs", "configmaps", "events", "serviceaccounts", "roles",
                                    "rolebindings", "persistentvolumeclaims"))

    def idle(self, seconds: float) -> dict:
        requests, writes, all_writes = self.operator_requests(), self.own_writes(), self.apiserver_writes()
        time.sleep(seconds)
        return {"idle_seconds": seconds, "idle_operator_requests": self.operator_requests() - requests,
                "idle_operator_writes": self.own_writes() - writes,
                "idle_apiserver_writes_on_operator_kinds": self.apiserver_writes() - all_writes,
                "operator_rss_mb": round(self.rss_mb(), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--idle", type=float, default=120.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="codex-operator-scale-"))
    workdir.chmod(0o755)
    bench = Bench(workdir)
    results: dict = {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(), "batches": []}
    try:
        bench.up()
        bench.start_operator()
        for index, count in enumerate(args.batches):
            result = bench.batch(count, f"scale-{index}")
            print(json.dumps(result), flush=True)
            results["batches"].append(result)
        results["idle"] = bench.idle(args.idle)
        results["load_average_at_end"] = os.getloadavg()
        print(json.dumps(results["idle"]), flush=True)
    finally:
        bench.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
