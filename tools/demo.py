"""`make demo`: the whole flow on the embedded cluster, on CPU, in one command.

1. (the Makefile installed the venv)
2. start the embedded control plane and node agent;
3. install the CRDs and run the operator in-cluster (a Deployment the node agent runs) with its
   own ServiceAccount and least-privilege RBAC;
4. kubectl apply -f examples/run.yaml;
5. kubectl get cxrun -w until the run Succeeds (SmolLM2-135M-Instruct, or the tiny model with --tiny), then
   print pass@k and every gate for the base model, the tuned adapter and their difference;
6. kubectl apply -f examples/model.yaml;
7. wait until the CodexModel is Available;
8. send a completion request to the served endpoint and print the answer;
9. tear everything down.

    python tools/demo.py [--tiny] [--keep] [--namespace demo]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tools"), str(REPO / "operator")]

from localcluster import LocalCluster, NodeSpec  # noqa: E402
from localcluster.controlplane import WaitAborted  # noqa: E402

from codex_operator.builders.operator_install import build_operator_deployment  # noqa: E402
from codex_operator.rbac_rules import build_operator_rbac  # noqa: E402

OPERATOR_NAMESPACE = "codex-system"
# Pods run as uid 1000: the embedded models must sit where that user can read them.
MODELS_DIR = Path(os.environ.get("CODEX_DEMO_MODELS_DIR", "/var/tmp/codex-operator-models"))
PROMPT = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"


class Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last = self.started

    def step(self, number: int, text: str) -> None:
        now = time.monotonic()
        print(f"\n==> [{number}/9] {text}   (t={now - self.started:5.1f}s)", flush=True)
        self.last = now


def prepare_models() -> None:
    """Materialise the embedded models once (about 30 s the first time), readable by every pod."""
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    MODELS_DIR.chmod(0o755)
    subprocess.run([sys.executable, "-m", "codex_trainer.cli", "prepare-embedded", "--models-dir", str(MODELS_DIR)],
                   check=True, stdout=subprocess.DEVNULL)
    for path in MODELS_DIR.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def manifests(filename: str, tiny: bool) -> str:
    docs = [d for d in yaml.safe_load_all((REPO / "examples" / filename).read_text()) if d]
    if tiny:
        for doc in docs:
            if doc["kind"] == "CodexTrainingRun":
                # The tiny model is a smoke test: it cannot write code, so its gates are opened.
                doc["spec"]["baseModel"] = {"embedded": "tiny-llama"}
                doc["spec"]["evaluation"]["thresholds"] = {"syntaxOk": 0, "logicOk": 0, "securityOk": 0, "perfOk": 0}
    return yaml.safe_dump_all(docs, sort_keys=False)


def install_operator(cluster: LocalCluster) -> None:
    for crd in sorted((REPO / "crds").glob("*.yaml")):
        cluster.kubectl("apply", "-f", str(crd))
    for crd in ("codextrainingruns.codex.dev", "codexmodels.codex.dev"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    cluster.create_namespace(OPERATOR_NAMESPACE)
    objects = build_operator_rbac("codex-operator", OPERATOR_NAMESPACE) + [build_operator_deployment(
        OPERATOR_NAMESPACE, "codex-operator:dev", "codex-operator", args=["--all-namespaces"],
        env={"CODEX_TRAINER_IMAGE": "codex-trainer:dev"})]
    cluster.apply(*objects)
    cluster.wait_for("the operator Deployment to be Available", lambda: available(
        cluster.get_json("deployment/codex-operator", "-n", OPERATOR_NAMESPACE)), timeout=180, interval=1,
        alive=lambda: cluster.pod_trouble(OPERATOR_NAMESPACE, "app.kubernetes.io/name=codex-operator"))
    print(cluster.kubectl("get", "deployment,serviceaccount,clusterrole", "-l", "app.kubernetes.io/name=codex-operator",
                          "-A").stdout)


def available(deployment: dict) -> bool:
    status = deployment.get("status") or {}
    return any(c["type"] == "Available" and c["status"] == "True" for c in status.get("conditions") or []) and \
        status.get("updatedReplicas") == deployment["spec"].get("replicas", 1)


def phase(cluster: LocalCluster, kind: str, name: str, namespace: str) -> dict:
    return cluster.get_json(kind, name, "-n", namespace).get("status") or {}


def watch_run(cluster: LocalCluster, namespace: str, timeout: float) -> dict:
    """Stream `kubectl get cxrun -w` until the run ends."""
    kubectl = Path(cluster.state["bin_dir"]) / "kubectl"
    watcher = subprocess.Popen([str(kubectl), f"--kubeconfig={cluster.kubeconfig}", "get", "cxrun", "-n", namespace,
                                "-w"], stdout=subprocess.PIPE, text=True)
    printer = threading.Thread(target=lambda: [print("    " + line, end="", flush=True) for line in watcher.stdout],
                               daemon=True)
    printer.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            status = phase(cluster, "cxrun", "codex-demo", namespace)
            if status.get("phase") in ("Succeeded", "Failed"):
                time.sleep(1)
                return status
            trouble = cluster.pod_trouble(namespace, "codex.dev/training-run=codex-demo")
            if trouble:
                raise WaitAborted(f"the run to finish: {trouble}")
            time.sleep(2)
        raise TimeoutError(f"the run did not finish within {timeout:.0f}s")
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)


def _cell(value: float | None, signed: bool = False) -> str:
    return "-" if value is None else f"{value:+.3f}" if signed else f"{value:.3f}"


def comparison_table(status: dict) -> str:
    """Base model vs tuned adapter, from the run's status: pass@k from metrics, then each measured gate."""
    metrics, gates = status.get("metrics") or {}, status.get("gates") or {}
    base, delta = metrics.get("basePassAtK") or {}, metrics.get("passAtKDelta") or {}
    rows = [(name, _cell(base.get(name)), _cell(value), _cell(delta.get(name), signed=True), "")
            for name, value in (metrics.get("passAtK") or {}).items()]
    rows += [(f"gate {name}", _cell(gate.get("base")), _cell(gate["value"], signed=name == "minImprovement"),
              _cell(gate.get("delta"), signed=True), "ok" if gate["passed"] else "FAILED")
             for name, gate in gates.items() if isinstance(gate, dict)]
    if not rows:
        return "    no pass@k or gates were measured (spec.evaluation.tasks is unset)"
    header = ("", "base", "tuned", "delta", "gate")
    width = max(len(row[0]) for row in rows + [header])
    return "\n".join("    " + name.ljust(width) + "".join(cell.rjust(9) for cell in cells).rstrip()
                     for name, *cells in [header, *rows])


def complete(url: str) -> str:
    body = json.dumps({"model": "codex-demo", "prompt": PROMPT, "max_tokens": 64, "temperature": 0}).encode()
    request = urllib.request.Request(f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["choices"][0]["text"]


def answered(url: str) -> list[str] | None:
    """[the completion], or None while kube-proxy has not yet picked up the new endpoint (refused)."""
    try:
        return [complete(url)]
    except urllib.error.URLError as error:
        if isinstance(error, urllib.error.HTTPError) or "refused" not in str(error.reason):
            raise
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="train the tiny embedded model instead of SmolLM2-135M")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running (KUBECONFIG is printed)")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed for training")
    args = parser.parse_args(argv)
    clock = Clock()
    namespace = args.namespace
    os.environ["CODEX_MODELS_DIR"] = str(MODELS_DIR)
    workdir = Path(tempfile.mkdtemp(prefix="codex-demo-"))
    workdir.chmod(0o755)
    # The real pod network: the completion below goes through the model's Service, as a client's would.
    cluster = LocalCluster(workdir, nodes=[NodeSpec(labels={"codex.dev/demo": "true"})],
                           host_env=("CODEX_MODELS_DIR",), network="real")
    ok = False
    try:
        clock.step(2, "embedded control plane + node agent")
        prepare_models()
        cluster.up()
        print(f"    cluster up in {cluster.state.get('up_seconds')}s; KUBECONFIG={cluster.kubeconfig}")
        clock.step(3, "CRDs + operator in-cluster (own ServiceAccount, least-privilege ClusterRole)")
        install_operator(cluster)
        if namespace != "default":
            cluster.create_namespace(namespace)
        clock.step(4, f"kubectl apply -f examples/run.yaml{'  (tiny model)' if args.tiny else ''}")
        print(cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifests("run.yaml", args.tiny)).stdout)
        clock.step(5, "kubectl get cxrun -w")
        status = watch_run(cluster, namespace, args.timeout)
        print(f"\n    phase={status['phase']}  {status.get('message', '')}")
        print("    stages: " + "  ".join(f"{s['name']}={s['phase']} ({s.get('jobName')})" for s in status.get("stages") or []))
        print(f"    metrics={json.dumps(status.get('metrics'))}")
        print(f"    gates passed={status.get('gates', {}).get('passed')}  artifact={json.dumps(status.get('artifact'))}")
        if status["phase"] == "Succeeded":
            print("\n    base model vs tuned adapter (status.metrics, status.gates):\n" + comparison_table(status))
        if status["phase"] != "Succeeded":
            print(cluster.kubectl("describe", "cxrun", "codex-demo", "-n", namespace).stdout)
            for pod in cluster.get_json("pods", "-n", namespace, "-l", "codex.dev/training-run=codex-demo")["items"]:
                print(f"--- logs of {pod['metadata']['name']} (tail)")
                print(cluster.pod_logs(namespace, pod["metadata"]["name"], "trainer")[-3000:])
            return 1
        clock.step(6, "kubectl apply -f examples/model.yaml")
        print(cluster.kubectl("apply", "-n", namespace, "-f", str(REPO / "examples" / "model.yaml")).stdout)
        clock.step(7, "waiting for the CodexModel to be Available")
        cluster.wait_for("the CodexModel to be Available", lambda: phase(
            cluster, "cxmodel", "codex-demo", namespace).get("phase") == "Available", timeout=600, interval=1,
            alive=lambda: cluster.pod_trouble(namespace, "codex.dev/codexmodel=codex-demo"))
        print(cluster.kubectl("get", "cxmodel", "-n", namespace, "-o", "wide").stdout)
        clock.step(8, "a completion from the served endpoint")
        url = cluster.service_address(namespace, "codex-demo-server", 8000)
        print(f"    POST {url}/v1/completions  (Service codex-demo-server's ClusterIP; in-cluster: "
              f"{phase(cluster, 'cxmodel', 'codex-demo', namespace).get('endpoint')})")
        print("    prompt:\n" + "\n".join("      " + line for line in PROMPT.splitlines()))
        answer = cluster.wait_for("the Service to answer", lambda: answered(url), timeout=60, interval=0.5)[0]
        shown = answer.rstrip() if answer.strip() else repr(answer)
        print("    answer:\n" + "\n".join("      " + line for line in shown.splitlines()))
        ok = True
        return 0
    except WaitAborted as stopped:  # a pod that cannot start: say why now, not at the timeout
        print(f"\n    stopped waiting for {stopped}", flush=True)
        return 1
    finally:
        if args.keep and ok:
            print(f"\n    cluster kept: export KUBECONFIG={cluster.kubeconfig}; stop it with "
                  f"`python -m localcluster --workdir {workdir} down`")
        else:
            clock.step(9, "tear down")
            cluster.down()
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"\n{'demo finished' if ok else 'demo FAILED'} in {time.monotonic() - clock.started:.0f}s")


if __name__ == "__main__":
    raise SystemExit(main())
