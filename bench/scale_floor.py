"""The floor: the operator's child objects created straight through the API, with no operator.

``bench/operator_scale.py`` starts this as its own process (as the operator is one) and pipes
it every CodexTrainingRun the moment the apiserver has created it, one JSON object a line.
For each run it builds the children with the operator's own pure builders (so the objects
cannot drift from what the operator sends), adds the owner reference kopf would, and POSTs
them in the operator's order: the Job's path (ConfigMap, ServiceAccount, ...; then the Job)
before any Role or RoleBinding, through ``--workers`` threads over plain HTTP.

Nothing here watches, lists or reads back: a run is known the instant it exists, so what is
left is the apiserver's own cost of those writes at the operator's concurrency. On end of
input it finishes the RBAC still queued and prints one JSON line of counts.

    python bench/scale_floor.py --kubeconfig K --workers 16 --trainer-image IMAGE < runs.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "api"), str(REPO / "operator")]

import kopf  # noqa: E402
import urllib3  # noqa: E402
from codex_api import CodexTrainingRun, parse  # noqa: E402

from codex_operator.config import OperatorConfig  # noqa: E402
from codex_operator.sync_runs import build_run_children  # noqa: E402

# As the operator's API client: the Job's path goes before the RBAC under a burst (k8s.URGENT).
JOB_PATH, RBAC = 0, 1
RETRIED = {429, 500, 502, 503, 504}
ATTEMPTS = 10


def operator_config(trainer_image: str) -> OperatorConfig:
    """What the benched operator runs with: the trainer image set, everything else default."""
    return OperatorConfig(trainer_image=trainer_image)


def children_of(run_obj: dict[str, Any], cfg: OperatorConfig) -> dict[str, list[list[dict[str, Any]]]]:
    """The run's chains of creation waves, from the operator's builders, owned by the created run."""
    spec = {k: run_obj[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in run_obj}
    chains = build_run_children(parse(CodexTrainingRun, spec), cfg)
    kopf.append_owner_reference([c for chain in chains.values() for wave in chain for c in wave], owner=run_obj)
    return chains


def collection_path(obj: dict[str, Any]) -> str:
    """Where to POST ``obj``: every kind the operator creates pluralises as lowercase + 's'."""
    api_version, namespace = obj["apiVersion"], obj["metadata"]["namespace"]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{obj['kind'].lower()}s"


class Http:
    """POST JSON with the kubeconfig's bearer token over one pool of ``workers`` connections."""

    def __init__(self, kubeconfig: Path, workers: int):
        config = json.loads(kubeconfig.read_text())
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        self.server = cluster["server"]
        self.pool = urllib3.PoolManager(num_pools=1, maxsize=workers, cert_reqs="CERT_REQUIRED",
                                        ca_certs=cluster["certificate-authority"],
                                        timeout=urllib3.Timeout(connect=5, read=30))
        self.headers = {"Authorization": f"Bearer {user['token']}", "Content-Type": "application/json",
                        "Accept": "application/json"}

    def post(self, obj: dict[str, Any]) -> int:
        response = self.pool.request("POST", self.server + collection_path(obj), body=json.dumps(obj).encode(),
                                     headers=self.headers, retries=False)
        return response.status


class Chain:
    """One run's chain of waves: a wave's objects are created side by side, the next once they exist."""

    def __init__(self, waves: list[list[dict[str, Any]]], priority: int, on_done: Callable[[], None]):
        self.waves, self.priority, self.on_done = list(waves), priority, on_done
        self.pending = 0
        self.lock = threading.Lock()

    def next_wave(self) -> list[dict[str, Any]]:
        """The objects to create now; [] once the chain is over (``on_done`` then called)."""
        if not self.waves:
            self.on_done()
            return []
        wave = self.waves.pop(0)
        self.pending = len(wave)
        return wave

    def created_one(self) -> list[dict[str, Any]]:
        with self.lock:
            self.pending -= 1
            return self.next_wave() if self.pending == 0 else []


class Floor:
    """A priority queue of single POSTs and the threads that send them."""

    def __init__(self, http: Http, cfg: OperatorConfig, workers: int):
        self.http, self.cfg = http, cfg
        self.queue: queue.PriorityQueue = queue.PriorityQueue()
        self.order = itertools.count()
        self.done = threading.Condition()
        self.runs_added = self.runs_finished = 0
        self.counts = {"posts": 0, "retries": 0, "conflicts": 0, "failures": 0}
        self.counting = threading.Lock()
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]
        for thread in self.threads:
            thread.start()

    def add(self, run_obj: dict[str, Any]) -> None:
        chains = children_of(run_obj, self.cfg)
        self.runs_added += 1
        rbac = Chain(chains["rbac"], RBAC, self._run_finished)
        job = Chain(chains["job"], JOB_PATH, lambda: self._submit(rbac, rbac.next_wave()))
        self._submit(job, job.next_wave())

    def _submit(self, chain: Chain, wave: list[dict[str, Any]]) -> None:
        for obj in wave:
            self.queue.put((chain.priority, next(self.order), obj, chain))

    def _run_finished(self) -> None:
        with self.done:
            self.runs_finished += 1
            self.done.notify_all()

    def _work(self) -> None:
        while True:
            _, _, obj, chain = self.queue.get()
            if obj is None:
                return
            self._create(obj)
            self._submit(chain, chain.created_one())

    def _create(self, obj: dict[str, Any]) -> None:
        """POST, retrying what an overloaded apiserver answers (the operator's queue retries those too)."""
        for attempt in range(ATTEMPTS):
            status = self._post(obj)
            if status is not None and status not in RETRIED:
                break
            self._count("retries")
            time.sleep(0.1 * (attempt + 1))
        self._count("posts")
        if status == 409:
            self._count("conflicts")
        elif status is None or not 200 <= status < 300:
            self._count("failures")
            print(f"floor: {obj['kind']} {obj['metadata']['name']}: HTTP {status}", file=sys.stderr, flush=True)

    def _count(self, what: str) -> None:
        with self.counting:
            self.counts[what] += 1

    def _post(self, obj: dict[str, Any]) -> Optional[int]:
        try:
            return self.http.post(obj)
        except urllib3.exceptions.HTTPError:
            return None

    def join(self) -> dict[str, Any]:
        """Wait until every run added has all its children, then stop the threads."""
        with self.done:
            self.done.wait_for(lambda: self.runs_finished >= self.runs_added)
        for _ in self.threads:
            self.queue.put((float("inf"), next(self.order), None, None))
        return {"runs": self.runs_added, **self.counts}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--trainer-image", required=True)
    args = parser.parse_args(argv)
    floor = Floor(Http(args.kubeconfig, args.workers), operator_config(args.trainer_image), args.workers)
    print("ready", flush=True)
    for line in sys.stdin:
        floor.add(json.loads(line))
    print(json.dumps(floor.join()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
