"""The main user path on the embedded cluster: train -> Succeeded -> serve -> answer; a second
passing run rolls the model without downtime; a run that fails its gates promotes nothing;
no Secret value ever lands in the API server or the operator's logs."""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.error
import urllib.request

import pytest
from e2e_support import (condition, events_for, get, sample_data, status_of, tiny_model, tiny_run, wait,
                         wait_phase)

pytestmark = pytest.mark.cluster
# How the operator is installed for this module (see conftest.py).
INSTALL = "helm"

HF_TOKEN = "hf_" + secrets.token_hex(16)
API_KEY = "sk-codex-" + secrets.token_hex(16)
# The tests build on one another (train, serve, roll, ...): one namespace for the module (see conftest.py).
NAMESPACE_SCOPE = "module"
NAMESPACE_OBJECTS = [*sample_data(), {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "codex-secrets"},
                                      "stringData": {"hf-token": HF_TOKEN, "api-key": API_KEY}}]


def complete(url: str, prompt: str, key: str | None = API_KEY, timeout: float = 60) -> tuple[int, dict]:
    body = json.dumps({"model": "codex-demo", "prompt": prompt, "max_tokens": 16, "temperature": 0}).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(f"{url}/v1/completions", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def served_url(cluster, namespace: str) -> str:
    return cluster.service_address(namespace, "codex-demo-server", 8000)


def test_run_trains_then_model_serves_it(cluster, namespace, operator):
    run = tiny_run("codex-demo-1", baseModel={"embedded": "tiny-llama",
                                              "tokenSecretRef": {"name": "codex-secrets", "key": "hf-token"}})
    cluster.apply(run, namespace=namespace)
    model = tiny_model()
    model["spec"]["server"]["apiKeySecretRef"] = {"name": "codex-secrets", "key": "api-key"}
    cluster.apply(model, namespace=namespace)  # before the run finishes: it must wait, not error
    waiting = wait_phase(cluster, namespace, "codex-demo", ("Pending",), kind="codexmodel", timeout=60)
    assert condition(waiting, "Ready")["reason"] == "WaitingForTrainingRun"

    status = wait_phase(cluster, namespace, "codex-demo-1", ("Succeeded", "Failed"), timeout=600)
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["metrics"]["evalLoss"] > 0 and status["metrics"]["perplexity"] > 1
    assert status["gates"]["passed"] is True
    assert status["artifact"]["claimName"] == "codex-artifacts" and status["artifact"]["revision"]
    assert len(status["lineage"]["datasetSha256"]) == 64
    assert (status["attempts"], status["jobName"]) == (1, "codex-demo-1-train")
    assert status["durationSeconds"] > 0 and condition(status, "Ready")["status"] == "True"

    columns = cluster.kubectl("get", "cxrun", "codex-demo-1", "-n", namespace).stdout.split("\n")
    assert columns[0].split() == ["NAME", "PHASE", "PROGRESS", "LOSS", "PERPLEXITY", "GATES", "AGE"]
    assert columns[1].split()[:3] == ["codex-demo-1", "Succeeded", "100"]
    reasons = [e["reason"] for e in events_for(cluster, namespace, "codex-demo-1")]
    assert reasons[-1] == "Succeeded" and len(reasons) >= 2

    served = wait_phase(cluster, namespace, "codex-demo", ("Available",), kind="codexmodel", timeout=240)
    assert served["servedAdapter"]["trainingRun"] == "codex-demo-1"
    assert served["endpoint"] == f"http://codex-demo-server.{namespace}.svc:8000/v1"
    assert served["readyReplicas"] == 1 and condition(served, "Available")["status"] == "True"
    url = served_url(cluster, namespace)
    code, answer = complete(url, "def add(a, b):\n")
    assert code == 200 and isinstance(answer["choices"][0]["text"], str), answer
    assert complete(url, "def add(a, b):\n", key=None)[0] == 401


def test_second_passing_run_rolls_the_model_without_downtime(cluster, namespace, operator):
    before = get(cluster, "deployment", "codex-demo-server", namespace)
    old_pods = {p["metadata"]["name"] for p in cluster.get_json(
        "pods", "-n", namespace, "-l", "codex.dev/codexmodel=codex-demo")["items"]}
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            try:
                code, _ = complete(served_url(cluster, namespace), "def double(x):\n", timeout=30)
                if code == 200:
                    answered[0] += 1
                else:
                    failures.append(f"HTTP {code}")
            except (OSError, LookupError, RuntimeError) as error:
                failures.append(repr(error))
            time.sleep(0.3)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        cluster.apply(tiny_run("codex-demo-2", steps=10), namespace=namespace)
        status = wait_phase(cluster, namespace, "codex-demo-2", ("Succeeded", "Failed"), timeout=600)
        assert status["phase"] == "Succeeded", status.get("message")

        def rolled():
            model = status_of(cluster, "codexmodel", "codex-demo", namespace)
            return model if model.get("phase") == "Available" and \
                model["servedAdapter"]["trainingRun"] == "codex-demo-2" else None
        model = wait(f"the model to roll to codex-demo-2", rolled, 240)
    finally:
        stop.set()
        prober.join(timeout=60)
    assert model["servedAdapter"]["revision"] == status["artifact"]["revision"]
    after = get(cluster, "deployment", "codex-demo-server", namespace)
    annotation = "codex.dev/adapter-revision"
    assert after["spec"]["template"]["metadata"]["annotations"][annotation].startswith("codex-demo-2@")
    assert before["spec"]["template"]["metadata"]["annotations"][annotation].startswith("codex-demo-1@")
    new_pods = {p["metadata"]["name"] for p in cluster.get_json(
        "pods", "-n", namespace, "-l", "codex.dev/codexmodel=codex-demo")["items"] if
        not p["metadata"].get("deletionTimestamp")}
    assert new_pods and not new_pods & old_pods
    assert failures == [] and answered[0] > 0, f"{answered[0]} answered; failures: {failures[:5]}"
    events = [e["reason"] for e in events_for(cluster, namespace, "codex-demo")]
    assert "AdapterPromoted" in events


def test_run_that_fails_its_gates_promotes_nothing(cluster, namespace, operator):
    impossible = {"syntaxOk": 1.0, "logicOk": 1.0, "securityOk": 1.0, "perfOk": 1.0, "maxPerplexity": 1.0001}
    cluster.apply(tiny_run("codex-demo-3", steps=4, thresholds=impossible), namespace=namespace)
    status = wait_phase(cluster, namespace, "codex-demo-3", ("Succeeded", "Failed"), timeout=600)
    assert (status["phase"], condition(status, "Ready")["reason"]) == ("Failed", "GatesNotMet"), status
    assert status["gates"]["passed"] is False and condition(status, "GatesPassed")["status"] == "False"
    assert status["attempts"] == 1  # exit 43 fails the Job at once (podFailurePolicy)
    time.sleep(3)
    model = status_of(cluster, "codexmodel", "codex-demo", namespace)
    assert model["servedAdapter"]["trainingRun"] == "codex-demo-2" and model["phase"] == "Available"
    assert any(e["reason"] == "GatesNotMet" and e["type"] == "Warning"
               for e in events_for(cluster, namespace, "codex-demo-3"))


def test_no_secret_value_reaches_the_api_server_or_the_logs(cluster, namespace, operator):
    dumps = [
        cluster.kubectl("get", "configmaps", "-A", "-o", "json").stdout,
        cluster.kubectl("get", "codextrainingruns,codexmodels", "-A", "-o", "json").stdout,
        cluster.kubectl("get", "events", "-A", "-o", "json").stdout,
        cluster.kubectl("get", "jobs,deployments", "-A", "-o", "json").stdout,
        operator.logs(),
    ]
    for text in dumps:
        assert HF_TOKEN not in text and API_KEY not in text
    # The references are there: the values travel only from the Secret to the pods' env.
    job = get(cluster, "job", "codex-demo-1-train", namespace)
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "codex-secrets", "key": "hf-token"}


def test_operating_what_the_flow_left(cluster, namespace, operator):
    """What operations teams rely on, checked on the objects of the runs above: Argo CD sees no
    drift and the right health, the dashboard's metrics are exported, and the Jobs and
    Deployments the operator generated pass the hardening scan."""
    from operate_checks import (assert_dashboard_metrics_exported, assert_hardened, assert_health,
                                assert_spec_unchanged)

    applied_run = tiny_run("codex-demo-1", baseModel={"embedded": "tiny-llama",
                                                      "tokenSecretRef": {"name": "codex-secrets", "key": "hf-token"}})
    applied_model = tiny_model()
    applied_model["spec"]["server"]["apiKeySecretRef"] = {"name": "codex-secrets", "key": "api-key"}
    assert_spec_unchanged(cluster, namespace, "codextrainingrun", applied_run)
    assert_spec_unchanged(cluster, namespace, "codexmodel", applied_model)

    assert_health(cluster, namespace, "codextrainingrun", "codex-demo-1", "Healthy", capture="run-succeeded")
    assert_health(cluster, namespace, "codextrainingrun", "codex-demo-3", "Degraded", capture="run-gates-not-met")
    assert_health(cluster, namespace, "codexmodel", "codex-demo", "Healthy", capture="model-available")

    assert_dashboard_metrics_exported(cluster, namespace, operator, served_url(cluster, namespace), API_KEY)
    assert_hardened([get(cluster, "job", "codex-demo-1-train", namespace),
                     get(cluster, "deployment", "codex-demo-server", namespace)])
