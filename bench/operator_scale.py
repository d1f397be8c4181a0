"""How the operator scales: apply 100, then 1000 CodexTrainingRuns, measure how fast their Jobs appear,
and how fast the apiserver alone could have made them (the floor).

Runs against the embedded control plane with trainer pods not run (the node agent skips the
trainer image), so only the control loop is measured. Reports, per batch:

- the time from the first apply until every Job exists, and the p50/p99 apply-to-Job latency;
- the operator's RSS (when every Job exists, settled, and its high-water mark);
- API requests per run, counted by the apiserver itself: the operator authenticates as its
  own ServiceAccount, so its requests are the ones API Priority and Fairness dispatches under
  the "service-accounts" flow schema (the controllers use kube-system accounts, the node its cert);
- the floor: the same runs, and the same child objects from the operator's own builders, created
  by a plain client (``scale_floor.py``) with no operator running, and ``ratio`` = the operator's
  time to all Jobs over the floor's;
- then, after the runs sit idle for two minutes, the requests and writes the operator made.

The operator's batches run first, on a fresh cluster, exactly as before the floor was added (so
their figures compare with earlier runs); then the operator is stopped and the floor's batches
run, each in a fresh namespace, so the two never overlap and the operator never sees the floor's
objects. Every batch starts once the cluster is quiet: kube-controller-manager's Job controller
creates each Job's pod at its client's 20 requests/s, so a 1000-run batch leaves ~2 minutes of
writes behind it. ``--scale 10000`` adds one more operator batch after the idle measurement and
reports its per-run time against the 1000-run batch's (and, unless ``--no-scale-floor``, its floor).
With ``--scale`` the floors run after the big batch, while the Job controller is still creating its
pods (each batch reports whether it started quiet): take the 100/1000 ratios from a run without it.

The floor's concurrency is the operator's: ``--floor-workers`` defaults to the operator's API client
pool (``Limits.api_threads``, 16), the one bound on the requests it has in flight; the runs are
created by the same 8 client threads on both sides. The floor client authenticates with the
operator's ServiceAccount token, so both pass the same authorizer and APF priority level, and the
floor's requests per run are counted the same way.

    python bench/operator_scale.py [--batches 100 1000] [--scale 10000] [--no-floor] [--idle 120]
                                   [--quiet-timeout 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tools"), str(REPO / "api"), str(REPO / "operator")]

import kubernetes  # noqa: E402
from localcluster import LocalCluster, NodeSpec  # noqa: E402
from localcluster.cluster import DEFAULT_CAPACITY  # noqa: E402

from codex_operator import k8s  # noqa: E402
from codex_operator.builders.operator_install import OPERATOR_ENV  # noqa: E402
from codex_operator.config import OperatorConfig  # noqa: E402
from codex_operator.rbac_rules import build_operator_rbac  # noqa: E402
from scale_batch import (RUN_CREATORS, FloorClient, JobWatch, cluster_writes, create_runs, free_port,  # noqa: E402
                         mem_available_mb, process_rss_mb, run_inputs, scrape)
from scale_report import growth, ratio, summary, targets  # noqa: E402

OPERATOR_NS = "codex-system"
TRAINER_IMAGE = "codex-trainer:bench"
FLOW_SCHEMA = "service-accounts"


def api_client_pool_size() -> int:
    """The floor's concurrency. The operator's API client (``k8s.Kube``) sends every request from a
    pool of this many threads, so that is how many it has in flight at most; its run workers
    (1024) and run slots (32) only queue work in front of that pool. Read from the operator's
    config (``Limits.api_threads``), or from ``Kube``'s default where the config has no limits."""
    limits = getattr(OperatorConfig(), "limits", None)
    if limits is not None:
        return limits.api_threads
    return inspect.signature(k8s.Kube.__init__).parameters["workers"].default


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


class Bench:
    def __init__(self, workdir: Path, pods: int):
        capacity = {**DEFAULT_CAPACITY, "pods": str(pods), "cpu": "2000", "memory": "4000Gi"}
        # Loopback pod addresses: the pods run nothing, and a real pod network would give each of them
        # a network namespace through the CNI plugins (a few exec'd binaries per pod), node work on the
        # same 2 cores that measured the operator 3-5x slower than the control loop alone.
        self.cluster = LocalCluster(workdir, nodes=[NodeSpec(capacity=capacity)], skip_image_prefixes=(TRAINER_IMAGE,),
                                    network="loopback")
        self.operator: subprocess.Popen | None = None
        self.metrics_port = free_port()
        self.operator_env: dict[str, str] = {}

    # --- setup ---------------------------------------------------------------------------
    def up(self) -> None:
        """The control plane, the CRDs and the operator's least-privilege RBAC, as an install has them."""
        self.cluster.up()
        for crd in sorted((REPO / "crds").glob("*.yaml")):
            self.cluster.kubectl("apply", "-f", str(crd))
        for crd in ("codextrainingruns.codex.dev", "codexmodels.codex.dev"):
            self.cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        self.cluster.create_namespace(OPERATOR_NS)
        self.cluster.apply(*build_operator_rbac("codex-operator", OPERATOR_NS))
        kubernetes.config.load_kube_config(str(self.cluster.kubeconfig))
        self.api = kubernetes.client.CustomObjectsApi()
        self.operator_env = {**os.environ, "KUBECONFIG": str(self.operator_kubeconfig()),
                             "CODEX_TRAINER_IMAGE": TRAINER_IMAGE, "CODEX_METRICS_PORT": str(self.metrics_port),
                             "POD_IP": "127.0.0.1",
                             # As in the operator's Deployment (builders/operator_install.py).
                             **OPERATOR_ENV}

    def operator_kubeconfig(self) -> Path:
        """A kubeconfig holding the operator ServiceAccount's token: its requests are counted apart,
        and the floor client uses it too, so both pass the same authorizer and APF priority level."""
        token = self.cluster.kubectl("create", "token", "codex-operator", "-n", OPERATOR_NS,
                                     "--duration=6h").stdout.strip()
        admin = json.loads(self.cluster.kubeconfig.read_text())
        admin["users"] = [{"name": "codex-operator", "user": {"token": token}}]
        admin["contexts"][0]["context"]["user"] = "codex-operator"
        path = self.cluster.workdir / "operator-kubeconfig"
        path.write_text(json.dumps(admin))
        return path

    def start_operator(self, python_args: tuple[str, ...] = ("-m", "codex_operator.main")) -> None:
        """The operator as its own process, as in a pod; returns once it serves /metrics."""
        log = open(self.cluster.workdir / "operator.log", "w")
        self.operator = subprocess.Popen(
            [sys.executable, *python_args, "--all-namespaces", "--quiet",
             "--liveness-port", str(free_port())], env=self.operator_env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.operator_metrics()
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("the operator did not start; see operator.log")

    def stop_operator(self) -> None:
        if self.operator is not None and self.operator.poll() is None:
            self.operator.send_signal(signal.SIGTERM)
            try:
                self.operator.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.operator.kill()

    def stop(self) -> None:
        self.stop_operator()
        self.cluster.down()

    def prepare(self, namespace: str) -> None:
        self.cluster.create_namespace(namespace)
        self.cluster.apply(*run_inputs(), namespace=namespace)

    # --- measurements --------------------------------------------------------------------
    def operator_metrics(self) -> str:
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
        return process_rss_mb(self.operator.pid, field)

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

    def wait_quiet(self, timeout: float, quiet_seconds: float = 6) -> dict:
        """Wait until nobody has written to the cluster for ``quiet_seconds`` (the Job controller done with
        the last batch's pods), or ``timeout``; how long it took and the write rate when it ended."""
        started = time.monotonic()
        history = [(started, cluster_writes(self.cluster.kubectl("get", "--raw", "/metrics").stdout))]
        while time.monotonic() - started < timeout:
            time.sleep(2)
            history.append((time.monotonic(), cluster_writes(self.cluster.kubectl("get", "--raw", "/metrics").stdout)))
            window = [w for t, w in history if t >= history[-1][0] - quiet_seconds]
            if history[-1][0] - started >= quiet_seconds and window[0] == window[-1]:
                return {"waited_s": round(time.monotonic() - started, 1), "quiet": True, "writes_per_s": 0.0}
        (t0, w0), (t1, w1) = history[max(0, len(history) - 4)], history[-1]
        return {"waited_s": round(t1 - started, 1), "quiet": False, "writes_per_s": round((w1 - w0) / (t1 - t0), 1)}

    def footprint(self) -> dict:
        """What the control plane holds: objects stored, etcd's database, each daemon's RSS, the machine's
        free memory. Tells whether the embedded cluster (4 GiB etcd quota, 24 GiB machine) has room."""
        text = self.cluster.kubectl("get", "--raw", "/metrics").stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{self.cluster.state['ports']['etcd_client']}/metrics",
                                    timeout=5) as response:
            etcd = response.read().decode()
        rss = {f"{p['name']}_rss_mb": process_rss_mb(p["pid"]) for p in self.cluster.state["processes"]
               if p["name"] in ("etcd", "kube-apiserver", "kube-controller-manager", "agent")}
        return {"objects_stored": int(scrape(text, "apiserver_storage_objects")),
                "etcd_db_mb": round(scrape(etcd, "etcd_mvcc_db_total_size_in_bytes") / 2**20, 1),
                "etcd_db_in_use_mb": round(scrape(etcd, "etcd_mvcc_db_total_size_in_use_in_bytes") / 2**20, 1),
                **rss, "mem_available_mb": mem_available_mb()}

    # --- one batch -----------------------------------------------------------------------
    def floor_batch(self, count: int, namespace: str, workers: int) -> dict:
        """The same runs, their children sent by the floor client as each run is created; no operator."""
        self.prepare(namespace)
        client = FloorClient(self.cluster.workdir / "operator-kubeconfig", workers, TRAINER_IMAGE,
                             self.operator_env, self.cluster.workdir / "floor.log")
        watch = JobWatch(namespace, count)
        load_before, requests_before = os.getloadavg(), self.operator_requests()
        timeline = create_runs(self.api, namespace, count, on_created=client.send)
        timeline.seen = watch.wait(jobs_timeout(count))
        sent = client.finish(4 * jobs_timeout(count))  # and the RBAC after the Jobs
        requests = self.operator_requests() - requests_before
        return {"runs": count, **timeline.figures(),
                "all_children_seconds": round(time.monotonic() - timeline.started, 1),
                "requests_per_run": round(requests / count, 1), "client": sent,
                "load_average": [load_before, os.getloadavg()]}

    def operator_batch(self, count: int, namespace: str) -> dict:
        """The runs, their children made by the operator: the figures issue 12 tracks, then its memory
        after one trim round (what a burst leaves behind, not just its peak)."""
        self.prepare(namespace)
        watch = JobWatch(namespace, count)
        load_before = os.getloadavg()
        requests_before, writes_before, cpu_before = self.operator_requests(), self.own_writes(), self.cpu_seconds()
        timeline = create_runs(self.api, namespace, count)
        timeline.seen = watch.wait(jobs_timeout(count))
        cpu_to_jobs, rss_at_jobs = self.cpu_seconds() - cpu_before, self.rss_mb()
        self.settle()
        requests = self.operator_requests() - requests_before
        writes = self.own_writes() - writes_before
        load_after = os.getloadavg()
        time.sleep(35)  # one memory.trim_periodically() round after the burst
        text = self.operator_metrics()
        children_s = scrape(text, "codex_operator_run_children_seconds_sum")
        children_n = scrape(text, "codex_operator_run_children_seconds_count") or 1
        return {
            "runs": count, **timeline.figures(),
            "operator_cpu_s_until_all_jobs": round(cpu_to_jobs, 1),
            # Cumulative over the batches so far: the mean time a new run's children take to create.
            "mean_children_api_s": round(children_s / children_n, 3),
            "rss_at_all_jobs_mb": round(rss_at_jobs, 1),
            "rss_settled_mb": round(self.rss_mb(), 1),
            # The most the operator has held at any moment since it started (this batch and before).
            "rss_peak_mb": round(self.rss_mb("VmHWM"), 1),
            "requests_per_run": round(requests / count, 1),
            "own_writes_per_run": round(writes / count, 1),
            "load_average": [load_before, load_after],
        }

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


def jobs_timeout(count: int) -> float:
    return max(600.0, 0.2 * count)


def run_operator(bench: Bench, counts: list[int], first_index: int, args: argparse.Namespace, results: dict) -> None:
    """Operator batches, each once the cluster is quiet, in namespaces scale-<index>."""
    for index, count in enumerate(counts, start=first_index):
        before = bench.wait_quiet(args.quiet_timeout)
        result = {**bench.operator_batch(count, f"scale-{index}"), "cluster_before": before}
        print(json.dumps(result), flush=True)
        results["batches"].append(result)
        results["cluster"][f"scale-{index} ({count} runs, operator)"] = bench.footprint()


def run_floors(bench: Bench, indexes: list[int], args: argparse.Namespace, results: dict) -> None:
    """The floor of the batches at ``indexes``, the operator stopped; each beside its operator batch."""
    for index in indexes:
        batch = results["batches"][index]
        before = bench.wait_quiet(args.quiet_timeout)
        floor = {**bench.floor_batch(batch["runs"], f"floor-{index}", args.floor_workers), "cluster_before": before}
        print(json.dumps({"floor": True, **floor}), flush=True)
        batch["floor"] = floor
        batch["ratio"] = ratio(batch["all_jobs_seconds"], floor["all_jobs_seconds"])
        results["cluster"][f"floor-{index} ({batch['runs']} runs, floor)"] = bench.footprint()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The batches default to issue 12's 100 and 1000 runs; the floor is on unless asked off."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--scale", type=int, default=None,
                        help="one more batch of this many runs (e.g. 10000): its per-run time against the 1000-run "
                             "batch's, and the operator's RSS there")
    parser.add_argument("--floor", action=argparse.BooleanOptionalAction, default=True,
                        help="measure the floor for every batch (--no-floor: the operator only)")
    parser.add_argument("--scale-floor", action=argparse.BooleanOptionalAction, default=True,
                        help="measure the floor for the --scale batch too")
    parser.add_argument("--floor-workers", type=int, default=api_client_pool_size(),
                        help="parallel creators of the floor (default: the operator's API client pool)")
    parser.add_argument("--idle", type=float, default=120.0)
    parser.add_argument("--quiet-timeout", type=float, default=300.0,
                        help="longest wait for the cluster to be quiet before a batch (then it starts anyway, and the "
                             "write rate it started under is reported)")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The operator's batches, idle, the --scale batch; then the operator stopped and the floors. A batch
    that fails (a limit of the cluster hit at 10,000 runs, say) ends the run, but what was measured
    before it is still written out."""
    args = parse_args(argv)
    scale = [args.scale] if args.scale else []
    floor_indexes = [i for i in range(len(args.batches) + len(scale))
                     if args.floor and (args.scale_floor or i < len(args.batches))]
    workdir = Path(tempfile.mkdtemp(prefix="codex-operator-scale-"))
    workdir.chmod(0o755)
    # Room on the node for every pod of every batch (the scheduler keeps retrying unschedulable pods).
    bench = Bench(workdir, pods=max(5000, 2 * sum(args.batches + scale) + 1000))
    results: dict = {"cpus": os.cpu_count(), "uptime_at_start": uptime(), "load_average_at_start": os.getloadavg(),
                     "floor_workers": args.floor_workers, "run_creators": RUN_CREATORS, "batches": [], "cluster": {}}
    try:
        bench.up()
        bench.start_operator()
        run_operator(bench, args.batches, 0, args, results)
        before_idle = bench.wait_quiet(args.quiet_timeout)
        results["idle"] = {**bench.idle(args.idle), "cluster_before": before_idle}
        print(json.dumps(results["idle"]), flush=True)
        run_operator(bench, scale, len(args.batches), args, results)
        bench.stop_operator()
        run_floors(bench, floor_indexes, args, results)
    except Exception as error:  # noqa: BLE001  (reported with the figures; the exit status says it)
        results["error"] = f"{type(error).__name__}: {error}"
    finally:
        results["uptime_at_end"], results["load_average_at_end"] = uptime(), os.getloadavg()
        bench.stop()
    results["growth"] = growth(results["batches"], args.scale) if args.scale else None
    results["targets"] = targets(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results))
    return 1 if "error" in results else 0


if __name__ == "__main__":
    raise SystemExit(main())
