"""Failure paths on the embedded cluster: invalid input, deletion, a crashed trainer, a preempted
trainer, and an operator killed mid-run. Each ends where a user would look: status, events, Jobs."""

from __future__ import annotations

import copy
import json
import re
import signal

import pytest
import yaml
from e2e_support import (REPO_ROOT, condition, events_for, get, kill_container, sample_data, status_of, tiny_run,
                         wait, wait_phase)
from codex_api import SpecError, parse
from good_specs import GOOD_MODEL, GOOD_RUN, with_changes
from malformed_cases import MALFORMED, MALFORMED_IDS

pytestmark = pytest.mark.cluster
# How the operator is installed for this module (see conftest.py).
INSTALL = "kustomize"
NAMESPACE_OBJECTS = sample_data()  # in each test's own namespace (see conftest.py)


def trainer_pods(cluster, namespace: str, run: str) -> list[dict]:
    """The training Job's pods (not the sandbox's or the publish stage's)."""
    pods = cluster.get_json("pods", "-n", namespace, "-l",
                            f"codex.dev/training-run={run},app.kubernetes.io/component=trainer")["items"]
    return sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"])


def checkpoints_on_volume(cluster, namespace: str, run: str) -> list[str]:
    """checkpoint-<step> directories the trainer completed on the run's checkpoint PVC (host side)."""
    claim = get(cluster, "pvc", f"{run}-checkpoints", namespace)
    volume = cluster.agent_dir / "pv" / claim["spec"]["volumeName"]
    return sorted(p.name for p in volume.glob("checkpoint-*") if (p / "codex_state.json").exists())


def resumed_from(cluster, namespace: str, pod: str) -> list[dict]:
    lines = cluster.pod_logs(namespace, pod, "trainer").splitlines()
    events = []
    for line in lines:
        try:
            record = json.loads(line[line.index("{"):])
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == "resume":
            events.append(record)
    return events


def test_invalid_spec_is_refused_with_the_field_named(cluster, namespace):
    bad = tiny_run("bad-sources")
    bad["spec"]["dataset"]["source"]["url"] = "https://example.com/extra.jsonl"
    refused = cluster.apply(bad, namespace=namespace, check=False)
    assert refused.returncode != 0
    assert "spec.dataset.source" in refused.stderr and "exactly one of hub, pvc, url or configMap" in refused.stderr


CODEX_CRDS = sorted((REPO_ROOT / "crds").glob("codex.dev_*.yaml"))
# What the apiserver itself still checks of a name with no schema (a DNS-1123 subdomain).
SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def schemaless(crd: dict) -> dict:
    """A copy of a CRD whose schema checks nothing (x-kubernetes-preserve-unknown-fields): objects reach
    the operator as written, as they would through a CRD of an older release or one edited by hand."""
    crd = copy.deepcopy(crd)
    for version in crd["spec"]["versions"]:
        version["schema"] = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    return crd


def seen_unpruned(cluster, namespace: str, kind: str, attempt: int) -> bool:
    """Whether the operator now reads ``kind`` through the schemaless CRD: a canary with an unknown
    field is flagged naming that field (the apiserver swaps a CRD's handler a moment after the update,
    and the old one prunes unknown fields from what the operator's watch delivers)."""
    canary = {"apiVersion": "codex.dev/v1alpha1", "kind": kind, "metadata": {"name": f"canary-{attempt}"},
              "spec": {"canaryField": True}}
    cluster.apply(canary, namespace=namespace)
    try:
        message = wait(f"{kind} canary-{attempt} flagged", lambda: invalid_spec_message(
            cluster.get_json(f"{kind.lower()}/canary-{attempt}", "-n", namespace)), timeout=30)
    finally:
        cluster.kubectl("delete", kind.lower(), f"canary-{attempt}", "-n", namespace, "--wait=true")
    return "spec.canaryField" in message


@pytest.fixture
def schemaless_crds(cluster, namespace, operator):
    copies = [schemaless(yaml.safe_load(f.read_text())) for f in CODEX_CRDS]
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                    input="---\n".join(yaml.safe_dump(c) for c in copies))
    try:
        for kind in ("CodexTrainingRun", "CodexModel"):
            assert any(seen_unpruned(cluster, namespace, kind, attempt) for attempt in range(10)), kind
        yield
    finally:  # what skipped the schema goes first (read back through the real schema it would be pruned),
        cluster.kubectl("delete", "codextrainingruns,codexmodels", "--all", "-n", namespace, "--wait=true")
        # then the real schema is back, for every test after this one.
        cluster.kubectl("apply", "--server-side", "--force-conflicts", *[f"--filename={f}" for f in CODEX_CRDS])


def as_kubectl_sends(value):
    """``value`` as kubectl sends it: a float with no fractional part becomes an integer (2.0 is 2)."""
    if isinstance(value, dict):
        return {k: as_kubectl_sends(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_kubectl_sends(v) for v in value]
    return int(value) if isinstance(value, float) and value.is_integer() else value


def hostile_objects() -> list[tuple[dict, str]]:
    """(object, what its InvalidSpec message says) for every malformed case the apiserver would now store,
    and a few no schema would let through either: a spec that is a string, a list, or missing."""
    cases = []
    for index, ((kind, good, path, value, message), case_id) in enumerate(zip(MALFORMED, MALFORMED_IDS)):
        obj = as_kubectl_sends(with_changes(good, {path: value}))
        try:
            parse(kind, obj)
            continue  # malformed only before kubectl wrote it out (a float read by a rule)
        except SpecError:
            pass
        if not path.startswith("metadata"):
            obj["metadata"] = {"name": f"{case_id[:40]}-{index}".lower().strip("-")}
        name = obj["metadata"].get("name") or ""
        if len(name) <= 253 and SUBDOMAIN.fullmatch(name):
            cases.append((obj, message))
    for good in (GOOD_RUN, GOOD_MODEL):
        stem = good["kind"].lower()
        cases += [(with_changes(good, {"metadata.name": f"{stem}-spec-string", "spec": "train please"}),
                   "spec: Input should be a valid dictionary"),
                  (with_changes(good, {"metadata.name": f"{stem}-spec-list", "spec": [1, 2]}),
                   "spec: Input should be a valid dictionary"),
                  ({k: v for k, v in with_changes(good, {"metadata.name": f"{stem}-no-spec"}).items() if k != "spec"},
                   "spec: Field required")]
    return cases


def invalid_spec_message(obj: dict) -> str | None:
    """The InvalidSpec message status shows, None until it does."""
    status = obj.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return status.get("message") if ready.get("reason") == "InvalidSpec" else None


def test_objects_that_skipped_the_schema_are_flagged_invalid_spec_and_get_no_children(
        cluster, namespace, operator, schemaless_crds):
    cases = hostile_objects()
    restarts = sum(c.get("restartCount", 0) for p in operator.pods() for c in p["status"].get("containerStatuses", []))
    cluster.apply(*[obj for obj, _ in cases], namespace=namespace)

    seen: dict = {}

    def flagged():
        stored = cluster.get_json("codextrainingruns,codexmodels", "-n", namespace)["items"]
        seen.update({(o["kind"], o["metadata"]["name"]): o.get("status") for o in stored})
        messages = {(o["kind"], o["metadata"]["name"]): invalid_spec_message(o) for o in stored}
        return messages if len(messages) == len(cases) and all(messages.values()) else None
    try:
        messages = wait("every object flagged InvalidSpec", flagged, timeout=120)
    except AssertionError as error:
        unflagged = {key: status for key, status in seen.items() if not invalid_spec_message({"status": status})}
        raise AssertionError(f"{len(unflagged)} of {len(cases)} not flagged: {str(unflagged)[:3000]}") from error
    for obj, expected in cases:
        said = messages[obj["kind"], obj["metadata"]["name"]]
        assert expected in said, (obj["metadata"]["name"], said)
    # An Event says it too, naming the field.
    event = next(e for e in events_for(cluster, namespace, cases[0][0]["metadata"]["name"]) if e["type"] == "Warning")
    assert cases[0][1] in event["message"]
    # Nothing was built for any of them, and the operator never went down.
    for kind in ("jobs", "deployments", "services", "serviceaccounts", "persistentvolumeclaims"):
        owned = [o["metadata"]["name"] for o in cluster.get_json(kind, "-n", namespace)["items"]
                 if o["metadata"].get("ownerReferences")]
        assert owned == [], (kind, owned)
    configmaps = [c["metadata"]["name"] for c in cluster.get_json("configmaps", "-n", namespace)["items"]]
    assert sorted(configmaps) == sorted(["kube-root-ca.crt", *[o["metadata"]["name"] for o in sample_data()
                                                                if o["kind"] == "ConfigMap"]])
    after = sum(c.get("restartCount", 0) for p in operator.pods() for c in p["status"].get("containerStatuses", []))
    assert after == restarts


def test_invalid_data_fails_once_and_names_the_line(cluster, namespace):
    broken = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "broken-data"},
              "data": {"train.jsonl": '{"prompt": "a", "completion": "b"}\nnot json at all\n'}}
    run = tiny_run("bad-data")
    run["spec"]["dataset"]["source"] = {"configMap": {"name": "broken-data", "key": "train.jsonl"}}
    cluster.apply(broken, run, namespace=namespace)
    status = wait_phase(cluster, namespace, "bad-data", ("Succeeded", "Failed"), timeout=240)
    assert status["phase"] == "Failed" and condition(status, "Ready")["reason"] in ("InvalidData", "InvalidSpec")
    assert "line 2" in status["message"], status["message"]
    assert status["attempts"] == 1  # exit 42: podFailurePolicy fails the Job without retrying


def test_the_demo_stops_at_once_on_a_trainer_pod_no_node_fits(cluster, namespace):
    """``make demo`` waiting on a run whose trainer pod is unschedulable says so, with the pod's
    events, instead of waiting out its timeout."""
    import demo
    from localcluster.controlplane import WaitAborted

    run = tiny_run("codex-demo")
    run["spec"]["resources"]["nodeSelector"] = {"codex.dev/no-such-pool": "gpu"}
    cluster.apply(run, namespace=namespace)
    with pytest.raises(WaitAborted) as stopped:
        demo.watch_run(cluster, namespace, timeout=600)
    report = str(stopped.value)
    assert report.startswith("the run to finish: pod ") and "cannot start: Unschedulable: 0/" in report
    assert "didn't match Pod's node affinity/selector" in report and "Warning FailedScheduling" in report


def test_deleting_a_run_removes_its_children(cluster, namespace):
    run = tiny_run("doomed")
    run["spec"]["job"]["suspend"] = True  # nothing needs to train for this
    cluster.apply(run, namespace=namespace)
    status = wait_phase(cluster, namespace, "doomed", ("Pending",), timeout=60)
    wait("the suspended Job", lambda: condition(status_of(cluster, "cxrun", "doomed", namespace), "Ready").get(
        "reason") == "Suspended", 60)
    children = ["job/doomed-train", "configmap/doomed-spec", "pvc/doomed-checkpoints", "serviceaccount/doomed-trainer",
                "role/doomed-trainer", "rolebinding/doomed-trainer"]
    for child in children:
        owner = cluster.get_json(child, "-n", namespace)["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("CodexTrainingRun", "doomed", True)
    cluster.kubectl("delete", "cxrun", "doomed", "-n", namespace)

    def gone():
        left = cluster.kubectl("get", *children, "-n", namespace, "--ignore-not-found", "-o", "name").stdout
        return not left.strip()
    wait("garbage collection of the run's children", gone, 90)


def test_crashed_trainer_is_retried_and_resumes_from_its_checkpoint(cluster, namespace):
    cluster.apply(tiny_run("crashy", steps=100, save_steps=10), namespace=namespace)
    wait("a first checkpoint", lambda: checkpoints_on_volume(cluster, namespace, "crashy"), 240, interval=0.2)
    first = trainer_pods(cluster, namespace, "crashy")[0]["metadata"]["name"]
    kill_container(cluster, namespace, first, "trainer", signal.SIGKILL)
    status = wait_phase(cluster, namespace, "crashy", ("Succeeded", "Failed"), timeout=600)
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["attempts"] == 2
    pods = trainer_pods(cluster, namespace, "crashy")
    assert pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137
    resumes = resumed_from(cluster, namespace, pods[-1]["metadata"]["name"])
    assert resumes and resumes[0]["step"] > 0
    assert "Retrying" in [e["reason"] for e in events_for(cluster, namespace, "crashy")]


def test_preempted_trainer_checkpoints_on_sigterm_and_resumes(cluster, namespace):
    cluster.apply(tiny_run("preempted", steps=100, save_steps=50), namespace=namespace)

    def training():
        pods = trainer_pods(cluster, namespace, "preempted")
        logs = cluster.pod_logs(namespace, pods[0]["metadata"]["name"], "trainer") if pods else ""
        return pods[0]["metadata"]["name"] if '"event": "step"' in logs or '"stage": "train"' in logs else None
    first = wait("training to start", training, 240, interval=0.2)
    cluster.kubectl("delete", "pod", first, "-n", namespace, "--wait=false")  # SIGTERM, as a drain would send
    status = wait_phase(cluster, namespace, "preempted", ("Succeeded", "Failed"), timeout=600)
    assert status["phase"] == "Succeeded", status.get("message")
    # The drained pod is gone from the API (deleted); its replacement resumed and finished.
    pods = trainer_pods(cluster, namespace, "preempted")
    assert [p["metadata"]["name"] for p in pods] != [first]
    # The Job counts the drained pod once its finalizer is processed; attempts follows it.
    wait("attempts to count the drained pod",
         lambda: status_of(cluster, "codextrainingrun", "preempted", namespace).get("attempts") == 2, 90)
    assert resumed_from(cluster, namespace, pods[-1]["metadata"]["name"])


def test_operator_killed_mid_run_creates_no_duplicate_job(cluster, namespace, operator):
    cluster.apply(tiny_run("survivor", steps=60, save_steps=20), namespace=namespace)
    wait_phase(cluster, namespace, "survivor", ("Running", "Pending", "Evaluating"), timeout=120)
    wait("the Job", lambda: cluster.kubectl("get", "job", "survivor-train", "-n", namespace, check=False)
         .returncode == 0, 60)
    job_uid = get(cluster, "job", "survivor-train", namespace)["metadata"]["uid"]
    operator.restart()
    status = wait_phase(cluster, namespace, "survivor", ("Succeeded", "Failed"), timeout=600)
    assert status["phase"] == "Succeeded", status.get("message")
    jobs = {j["metadata"]["name"]: j["metadata"]["uid"] for j in cluster.get_json("jobs", "-n", namespace)["items"]}
    # One Job per stage, and the training Job is the one created before the restart.
    assert sorted(jobs) == ["survivor-publish", "survivor-sandbox", "survivor-train"]
    assert jobs["survivor-train"] == job_uid
