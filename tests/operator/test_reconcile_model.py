"""reconcile_model against a recording fake client and in-memory views: the exact calls it makes.

A model owns a Deployment, a Service and, with spec.autoscaling, an HPA, all named
``codex-demo-server`` and server-side applied (ssa.py): a child missing from the index is read
first, then created by apply; an indexed one is applied only when the desired object is not in it.
"""

from __future__ import annotations

import asyncio
import copy

import pytest
from fake_kube import FakeKube, make_state, views
from op_examples import MODEL_UID, example

from codex_api import paths
from codex_operator import names
from codex_operator.k8s import FIELD_MANAGER, ApiError
from codex_operator.ssa import applied_fields
from codex_operator.status import reasons
from codex_operator.sync_models import model_key, reconcile_model
from codex_operator.workqueue import Requeue

NS, NAME, SERVER = "team-a", "codex-demo", "codex-demo-server"
KEY = model_key(NS, NAME)
DEP, SVC, HPA = ("Deployment", SERVER), ("Service", SERVER), ("HorizontalPodAutoscaler", SERVER)
MODEL = ("CodexModel", NAME)
STATUS = ("patch/status", *MODEL)
EVENT = ("create", "Event")
HUB = {"hub": {"repoId": "org/adapter", "revision": "v1"}}
PVC = {"pvc": {"claimName": "adapters", "path": "/v3"}}
AUTOSCALING = {"maxReplicas": 4}
ENDPOINT = f"http://{SERVER}.{NS}.svc:8000/v1"


def model_body(filename="model.yaml", adapter=None, **spec):
    """The example model named ``codex-demo``, with ``spec`` fields replaced; with ``adapter`` (a static
    one), an embedded base model unless the file names one (a run's adapter brings its run's)."""
    body = example(filename, "CodexModel")
    body["metadata"].update(name=NAME, resourceVersion="10")
    if adapter is not None:
        body["spec"]["adapter"] = adapter
        body["spec"].setdefault("baseModel", {"embedded": "tiny-llama"})
    body["spec"].update(spec)
    return body


def run_body(name, revision, finished, passed=True):
    """A finished run the example model's selector picks: Succeeded, its adapter on the artifacts PVC."""
    body = example("run.yaml", "CodexTrainingRun")
    body["metadata"].update(name=name, labels={"codex.dev/model": NAME}, uid=f"uid-{name}")
    body["status"] = {"phase": "Succeeded", "completionTime": finished, "gates": {"passed": passed},
                      "artifact": {"claimName": "codex-artifacts", "path": f"/{name}/adapter", "revision": revision}}
    return body


def fake(*objs):
    """A fake apiserver holding ``objs`` (the model among them, so its status patch lands)."""
    kube = FakeKube()
    kube.plant(*objs)
    return kube


def reconcile(kube, view, state=None):
    """Run one reconcile and the Events it posted, with a fresh operator state or ``state`` (what an
    earlier reconcile remembered) reading ``view``; returns the calls without the Events' names."""
    async def go():
        current = make_state(kube, view) if state is None else state
        current.views = view
        await reconcile_model(current, KEY)
        await asyncio.gather(*current.posting)
        return current
    done = asyncio.run(go())
    return [call if call[1] != "Event" else call[:2] for call in kube.calls], done


def live_views(kube, model, runs=()):
    """Views holding ``model``, ``runs`` and the model's children the fake apiserver holds, indexed as the
    watches index them."""
    held = {kind: [kube.store[kind, SERVER]] if kube.has(kind, SERVER) else [] for kind, _ in (DEP, SVC, HPA)}
    return views(models=[model], runs=runs, deployments=held["Deployment"], services=held["Service"],
                 hpas=held["HorizontalPodAutoscaler"])


def watched(kube, **spec):
    """The model as the watch delivers it after the last write (its status as written, a newer
    resourceVersion); with ``spec``, the next generation with those spec fields set (None: removed)."""
    model = copy.deepcopy(kube.store[MODEL])
    model["metadata"]["resourceVersion"] = str(int(model["metadata"]["resourceVersion"]) + 1)
    if spec:
        model["metadata"]["generation"] += 1
        model["spec"].update(spec)
        model["spec"] = {k: v for k, v in model["spec"].items() if v is not None}
    return model


def settle(body, runs=()):
    """Reconcile a new model once; the fake apiserver afterwards, with its calls cleared."""
    kube = fake(body)
    reconcile(kube, views(models=[body], runs=runs))
    kube.calls.clear()
    kube.bodies.clear()
    return kube


def status(kube):
    """The model's status as the fake apiserver holds it (None: never written)."""
    return kube.store[MODEL].get("status")


def condition(kube, type_):
    """The model's ``type_`` condition as written."""
    return next(c for c in status(kube)["conditions"] if c["type"] == type_)


def events(kube):
    """(type, reason, message) of the Events posted, in order."""
    return [(e["type"], e["reason"], e["message"]) for (kind, _), e in kube.store.items() if kind == "Event"]


def applied(kube, kind):
    """The body of the last apply of the model's ``kind``."""
    return kube.bodies[("apply", kind, SERVER)]


def arg(deployment, flag):
    """The value of a codex-serve flag in ``deployment``'s server container."""
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args[args.index(flag) + 1]


def applies(*children):
    """The calls that create children missing from the index: each read first, then applied."""
    return [call for kind, name in children for call in (("get", kind, name), ("apply", kind, name))]


# adapter, status.servedAdapter, codex-serve --adapter, the AdapterPromoted message
NEW_MODELS = [
    ("hub", HUB, {"source": "hub", "repo": "org/adapter", "revision": "v1"}, "hub:org/adapter@v1",
     "serving org/adapter revision v1"),
    ("pvc", PVC, {"source": "pvc", "claimName": "adapters", "path": "/v3"}, f"{paths.pvc_dir('adapters')}/v3",
     "serving adapters revision unknown"),
]


@pytest.mark.parametrize("adapter,served,adapter_arg,promoted", [c[1:] for c in NEW_MODELS],
                         ids=[c[0] for c in NEW_MODELS])
def test_a_new_model_gets_its_children_by_apply_then_one_status_write(adapter, served, adapter_arg, promoted):
    body = model_body(adapter=adapter)
    kube = fake(body)
    calls, _ = reconcile(kube, views(models=[body]))
    assert calls == applies(DEP, SVC) + [STATUS, EVENT, EVENT]  # no HPA without autoscaling
    deployment = applied(kube, "Deployment")
    assert (arg(deployment, "--adapter"), arg(deployment, "--base-model")) == (adapter_arg, "embedded:tiny-llama")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["metadata"]["ownerReferences"] == [{
        "controller": True, "blockOwnerDeletion": True, "apiVersion": "codex.dev/v1alpha1", "kind": "CodexModel",
        "name": NAME, "uid": MODEL_UID}]
    written = status(kube)
    assert (written["phase"], written["servedAdapter"], written["deploymentName"], written["endpoint"],
            written["observedGeneration"]) == ("Progressing", served, SERVER, ENDPOINT, 1)
    assert events(kube) == [("Normal", "Progressing", "0 of 1 replicas run the new template"),
                            ("Normal", "AdapterPromoted", promoted)]
    assert applied_fields(kube.store[DEP])["f:spec"]["f:replicas"] == {}  # recorded as the operator's


def test_a_creation_cut_short_finds_the_deployment_and_creates_the_service():
    body = model_body(adapter=HUB)
    deployment = settle(body).store[DEP]  # the operator died after applying the Deployment
    kube = fake(body, deployment)
    calls, _ = reconcile(kube, views(models=[body], deployments=[deployment]))
    assert calls == applies(SVC) + [STATUS, EVENT, EVENT]  # the indexed Deployment is current: not applied
    assert kube.store[DEP] == deployment
    assert kube.store[SVC]["spec"]["ports"][0]["port"] == 8000


# the broken spec field, its value, the field the message names, the fixed value
INVALID_SPECS = [
    ("schema", "model.yaml", "replicas", -1, "spec.replicas", 1),
    ("runtime-rule", "model-hub-vllm.yaml", "resources", {"gpus": 0, "cpu": "8", "memory": "32Gi"},
     "spec.resources.gpus", {"gpus": 1, "cpu": "8", "memory": "32Gi"}),
]


@pytest.mark.parametrize("filename,field,bad,named,fixed", [c[1:] for c in INVALID_SPECS],
                         ids=[c[0] for c in INVALID_SPECS])
def test_a_spec_fixed_after_it_was_reported_invalid_creates_the_children(filename, field, bad, named, fixed):
    body = model_body(filename, adapter=HUB, **{field: bad})
    kube = fake(body)
    calls, _ = reconcile(kube, views(models=[body]))
    assert calls == [STATUS, EVENT]  # no child
    ready = condition(kube, "Ready")
    assert (status(kube)["phase"], ready["reason"], ready["message"].split(":")[0]) == (
        "Degraded", reasons.INVALID_SPEC, named)
    assert events(kube)[0][:2] == ("Warning", "Degraded")
    kube.calls.clear()
    fixed_body = watched(kube, **{field: fixed})
    calls, _ = reconcile(kube, views(models=[fixed_body]))
    assert calls == applies(DEP, SVC) + [STATUS, EVENT, EVENT]
    assert (status(kube)["phase"], status(kube)["observedGeneration"]) == ("Progressing", 2)
    assert condition(kube, "Degraded")["reason"] == reasons.AS_EXPECTED


def test_a_deleted_service_is_created_again_and_the_rest_left_alone():
    kube = settle(model_body(adapter=HUB))
    deployment = copy.deepcopy(kube.store[DEP])
    del kube.store[SVC]  # deleted by hand: gone from the store and, once the watch saw it, the index
    calls, _ = reconcile(kube, live_views(kube, watched(kube)))
    assert calls == applies(SVC)  # the status is unchanged: not written
    assert kube.has(*SVC) and kube.store[DEP] == deployment


def test_a_deployment_controlled_by_something_else_is_left_alone_and_the_model_waits():
    body = model_body(adapter=HUB)
    foreign = copy.deepcopy(settle(body).store[DEP])
    # A model of the same name, deleted and created again before its Deployment was collected.
    foreign["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    kube = fake(body, foreign)
    with pytest.raises(Requeue, match=f"Deployment {NS}/{SERVER} exists and is not controlled") as raised:
        reconcile(kube, views(models=[body], deployments=[foreign]))
    assert raised.value.delay == 30
    assert kube.calls == [("get", *DEP)]
    assert kube.store[DEP] == foreign  # not taken over
    assert not kube.has(*SVC) and status(kube) is None


REFUSED_SERVICE = ApiError(422, "Invalid", 'Service "codex-demo-server" is invalid: spec.ports[0].nodePort: '
                           'Invalid value: 8000: provided port is not in the valid range')


def test_a_refused_child_removes_what_this_pass_created_and_reports_invalid_spec():
    body = model_body(adapter=HUB)
    kube = fake(body)
    kube.failures[("apply", *SVC)] = REFUSED_SERVICE
    calls, state = reconcile(kube, views(models=[body]))
    assert calls == applies(DEP, SVC) + [("delete", *DEP), STATUS, EVENT]
    assert not kube.has(*DEP) and not kube.has(*SVC)
    ready = condition(kube, "Ready")
    assert (status(kube)["phase"], ready["reason"], ready["message"].split(":")[0]) == (
        "Degraded", reasons.INVALID_SPEC, "spec.service.port")
    assert events(kube)[0][:2] == ("Warning", "Degraded")
    kube.calls.clear()  # the same generation again: nothing is tried, status already says it
    calls, _ = reconcile(kube, views(models=[watched(kube)]), state)
    assert calls == []


def test_a_refused_edit_keeps_serving_the_spec_before_it():
    kube = settle(model_body(adapter=HUB))
    deployment = copy.deepcopy(kube.store[DEP])
    edited = watched(kube, replicas=2)
    kube.failures[("apply", *DEP)] = ApiError(422, "Invalid", 'Deployment.apps "codex-demo-server" is invalid: '
                                              'spec.replicas: Invalid value: 2: quota')
    calls, _ = reconcile(kube, live_views(kube, edited))
    assert ("delete", *DEP) not in calls and kube.store[DEP] == deployment
    assert condition(kube, "Ready")["message"].startswith("spec.replicas: the apiserver refused")


def test_a_409_on_an_apply_fails_the_reconcile_for_a_retry_and_writes_no_status():
    body = model_body(adapter=HUB)
    kube = fake(body)
    kube.failures[("apply", *DEP)] = ApiError(409, "Conflict", "the object has been modified")
    with pytest.raises(ApiError, match="409 Conflict"):
        reconcile(kube, views(models=[body]))
    assert kube.calls == applies(DEP)
    assert not kube.has(*DEP) and not kube.has(*SVC) and status(kube) is None


STABLE = [("static", {}), ("autoscaled", {"autoscaling": AUTOSCALING})]


@pytest.mark.parametrize("spec", [c[1] for c in STABLE], ids=[c[0] for c in STABLE])
def test_a_stable_model_costs_no_call(spec):
    kube = settle(model_body(adapter=HUB, **spec))
    calls, _ = reconcile(kube, live_views(kube, watched(kube)))
    assert calls == []
    assert kube.has(*HPA) == bool(spec)


def test_a_child_event_before_the_models_own_costs_no_call():
    body = model_body(adapter=HUB)
    kube = fake(body)
    _, state = reconcile(kube, views(models=[body]))
    state.tracked[KEY].written.resource_version = 11  # the apiserver's answer to the status write
    kube.calls.clear()
    # The Deployment's watch event queues the model before the model's: its index still holds rv 10.
    calls, _ = reconcile(kube, live_views(kube, body), state)
    assert calls == []
    assert state.tracked[KEY].written is not None  # kept until the watch catches up


def test_a_new_autoscaled_model_leaves_the_replicas_to_its_hpa():
    body = model_body(adapter=HUB, autoscaling=AUTOSCALING)
    kube = fake(body)
    calls, _ = reconcile(kube, views(models=[body]))
    assert calls == applies(DEP, SVC, HPA) + [STATUS, EVENT, EVENT]
    assert "replicas" not in applied(kube, "Deployment")["spec"]
    hpa = applied(kube, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["scaleTargetRef"]["name"], hpa["minReplicas"], hpa["maxReplicas"]) == (SERVER, 1, 4)


def test_autoscaling_turned_on_gives_up_the_replicas_and_adds_the_hpa():
    kube = settle(model_body(adapter=HUB))
    calls, _ = reconcile(kube, live_views(kube, watched(kube, autoscaling=AUTOSCALING)))
    # The Deployment's desired object is in the live one, but the operator owns a field it left out.
    assert calls == [("apply", *DEP), *applies(HPA), STATUS]
    assert "replicas" not in applied(kube, "Deployment")["spec"]
    assert "replicas" not in kube.store[DEP]["spec"]  # the apply that left it out removed it
    assert status(kube)["observedGeneration"] == 2


def test_autoscaling_turned_off_deletes_the_hpa_and_sets_the_replicas_again():
    kube = settle(model_body(adapter=HUB, autoscaling=AUTOSCALING))
    kube.store[DEP]["spec"]["replicas"] = 3  # as the HPA scaled it
    calls, _ = reconcile(kube, live_views(kube, watched(kube, autoscaling=None)))
    assert calls == [("apply", *DEP), ("delete", *HPA), STATUS]
    assert not kube.has(*HPA)
    assert applied(kube, "Deployment")["spec"]["replicas"] == kube.store[DEP]["spec"]["replicas"] == 1


def test_a_model_waits_for_a_passing_run_then_serves_its_adapter():
    body = model_body()  # fromTrainingRun: the newest passing run labelled codex.dev/model=codex-demo
    failed_gates = run_body("gates-failed", "r0", "2026-01-01T01:00:00Z", passed=False)
    kube = fake(body)
    calls, _ = reconcile(kube, views(models=[body], runs=[failed_gates]))
    assert calls == [STATUS, EVENT]  # no child
    waiting = "waiting for a run matching {'codex.dev/model': 'codex-demo'} to succeed with its gates passed"
    assert (status(kube)["phase"], status(kube)["message"], condition(kube, "Ready")["reason"]) == (
        "Pending", waiting, reasons.WAITING_FOR_TRAINING_RUN)
    assert status(kube).get("servedAdapter") is None
    kube.calls.clear()
    passing = run_body("good", "r1", "2026-01-01T02:00:00Z")
    calls, _ = reconcile(kube, views(models=[watched(kube)], runs=[failed_gates, passing]))
    assert calls == applies(DEP, SVC) + [STATUS, EVENT, EVENT]
    deployment = applied(kube, "Deployment")
    assert arg(deployment, "--adapter") == f"{paths.pvc_dir('codex-artifacts')}/good/adapter"
    assert arg(deployment, "--base-model") == "embedded:smollm2-135m-instruct"  # the run's
    assert deployment["spec"]["template"]["metadata"]["annotations"][names.ANNOTATION_ADAPTER_REVISION] == "good@r1"
    assert status(kube)["servedAdapter"] == {"source": "trainingRun", "trainingRun": "good", "revision": "r1",
                                             "claimName": "codex-artifacts", "path": "/good/adapter",
                                             "baseModel": {"embedded": "smollm2-135m-instruct",
                                                           "trustRemoteCode": False}}
    assert events(kube)[1:] == [("Normal", "Progressing", "0 of 1 replicas run the new template"),
                                ("Normal", "AdapterPromoted", "serving good revision r1")]


def test_a_newer_passing_run_rolls_the_deployment_to_its_adapter():
    first = run_body("first", "r1", "2026-01-01T01:00:00Z")
    kube = settle(model_body(), runs=[first])
    newer = run_body("second", "r2", "2026-01-01T02:00:00Z")
    calls, _ = reconcile(kube, live_views(kube, watched(kube), runs=[first, newer]))
    assert calls == [("apply", *DEP), STATUS, EVENT]  # the Service is unchanged; the phase too
    template = applied(kube, "Deployment")["spec"]["template"]
    assert template["metadata"]["annotations"][names.ANNOTATION_ADAPTER_REVISION] == "second@r2"
    assert events(kube)[-1] == ("Normal", "AdapterPromoted", "serving second revision r2")


def test_a_deleted_served_run_leaves_the_status_saying_what_the_deployment_serves():
    served = run_body("first", "r1", "2026-01-01T01:00:00Z")
    kube = settle(model_body(), runs=[served])  # baseModel left out: taken from the run
    before = copy.deepcopy(status(kube))
    calls, _ = reconcile(kube, live_views(kube, watched(kube), runs=[]))  # the run deleted
    assert ("delete", *DEP) not in calls  # nothing torn down: the Deployment still serves the adapter
    assert kube.has(*DEP) and arg(kube.store[DEP], "--adapter").endswith("/first/adapter")
    assert (status(kube)["servedAdapter"], status(kube)["deploymentName"], status(kube)["endpoint"]) == (
        before["servedAdapter"], SERVER, ENDPOINT)


GONE = [("not-indexed", None), ("being-deleted", "2026-01-02T00:00:00Z")]


@pytest.mark.parametrize("deleted", [c[1] for c in GONE], ids=[c[0] for c in GONE])
def test_a_model_gone_or_being_deleted_costs_no_call(deleted):
    body = model_body(adapter=HUB)
    body["metadata"]["deletionTimestamp"] = deleted
    kube = fake(body)
    calls, _ = reconcile(kube, views(models=[body] if deleted else []))
    assert calls == [] and not kube.has(*DEP)


def test_the_operators_applies_are_recorded_as_its_managed_fields():
    kube = settle(model_body(adapter=HUB))
    entries = kube.store[DEP]["metadata"]["managedFields"]
    assert [(e["manager"], e["operation"]) for e in entries] == [(FIELD_MANAGER, "Apply")]
    fields = applied_fields(kube.store[DEP])
    assert 'k:{"name":"server"}' in fields["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert set(fields["f:metadata"]) == {"f:labels", "f:ownerReferences"}
