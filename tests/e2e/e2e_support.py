"""Helpers for the end-to-end tests: install the operator in-cluster, build tiny runs, wait on status."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import yaml


REPO_ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "codex-system"
TRAINER_IMAGE = "codex-trainer:dev"
LABELS = "app.kubernetes.io/name=codex-operator"


def example_docs(filename: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((REPO_ROOT / "examples" / filename).read_text()) if d]


def sample_data() -> list[dict[str, Any]]:
    """The sample ConfigMap and the artifacts PVC from examples/run.yaml."""
    return [d for d in example_docs("run.yaml") if d["kind"] in ("ConfigMap", "PersistentVolumeClaim")]


def tiny_run(name: str, *, steps: int = 8, save_steps: int = 4, thresholds: Optional[dict] = None,
             labels: Optional[dict] = None, **spec_changes: Any) -> dict[str, Any]:
    """examples/run.yaml's run on the tiny embedded model, small enough for a test."""
    run = copy.deepcopy(next(d for d in example_docs("run.yaml") if d["kind"] == "CodexTrainingRun"))
    run["metadata"] = {"name": name, "labels": labels if labels is not None else {"codex.dev/model": "codex-demo"}}
    spec = run["spec"]
    spec["baseModel"] = {"embedded": "tiny-llama"}
    spec["lora"]["targetModules"] = ["all-linear"]
    spec["training"].update(maxSteps=steps, maxSeqLength=128, perDeviceBatchSize=4)
    spec["resources"].update(cpu="1", memory="2Gi")
    spec["checkpointing"] = {"size": "256Mi", "saveSteps": save_steps, "keepLast": 2}
    spec["evaluation"].update(samplesPerTask=1, k=[1], maxNewTokens=24, timeoutSeconds=5,
                              thresholds=thresholds or {"syntaxOk": 0.0, "logicOk": 0.0, "securityOk": 0.0,
                                                        "perfOk": 0.0})
    spec["output"] = {"pvc": {"claimName": "codex-artifacts", "path": f"/{name}"}}
    spec["job"] = {"backoffLimit": 3, "activeDeadlineSeconds": 900}
    spec.update(spec_changes)
    return run


def tiny_model(name: str = "codex-demo", selector: Optional[dict] = None) -> dict[str, Any]:
    model = copy.deepcopy(example_docs("model.yaml")[0])
    model["metadata"] = {"name": name}
    model["spec"]["adapter"] = {"fromTrainingRun": {"selector": selector or {"codex.dev/model": "codex-demo"}}}
    model["spec"]["resources"] = {"cpu": "1", "memory": "1Gi"}
    model["spec"]["server"]["maxNewTokens"] = 32
    return model


def wait(description: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (RuntimeError, LookupError, KeyError, ValueError) as error:
            last = error
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {description}; last: {last!r}")


def get(cluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return cluster.get_json(kind, name, "-n", namespace)


def status_of(cluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return get(cluster, kind, name, namespace).get("status") or {}


def wait_phase(cluster, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 240,
               kind: str = "codextrainingrun") -> dict[str, Any]:
    def reached():
        status = status_of(cluster, kind, name, namespace)
        return status if status.get("phase") in phases else None
    return wait(f"{kind}/{name} phase in {phases}", reached, timeout)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def events_for(cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items = cluster.get_json("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
    return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


@dataclass
class OperatorHandle:
    cluster: Any
    namespace: str = OPERATOR_NAMESPACE

    def pods(self) -> list[dict[str, Any]]:
        return self.cluster.get_json("pods", "-n", self.namespace, "-l", LABELS)["items"]

    def pod_name(self) -> str:
        running = [p for p in self.pods() if p["status"].get("phase") == "Running"
                   and not p["metadata"].get("deletionTimestamp")]
        return running[0]["metadata"]["name"]

    def logs(self) -> str:
        """Everything every operator pod of this session logged (current and earlier pods)."""
        out = []
        for pod_dir in sorted((self.cluster.agent_dir / "pods").glob(f"{self.namespace}_codex-operator-*")):
            for log in sorted((pod_dir / "logs").rglob("*.log")):
                out.append(log.read_text(errors="replace"))
        return "".join(out)

    def restart(self) -> str:
        """Kill the operator pod (SIGTERM) and wait for its replacement to run."""
        old = self.pod_name()
        self.cluster.kubectl("delete", "pod", old, "-n", self.namespace, "--wait=true", "--timeout=60s")
        return wait("a new operator pod", lambda: (self.pod_name() if self.pod_name() != old else None), 90)

    def uninstall(self) -> None:
        self.cluster.kubectl("delete", "deployment", "codex-operator", "-n", self.namespace, "--wait=false",
                             check=False)


def kill_container(cluster, namespace: str, pod: str, container: str, signal_number: int) -> None:
    """Signal a container's process through the node agent's record (a crash: SIGKILL)."""
    import os

    uid = cluster.get_json("pod", pod, "-n", namespace)["metadata"]["uid"]
    record = json.loads((cluster.agent_dir / "running" / f"{uid}-{container}.json").read_text())
    os.kill(record["pid"], signal_number)
