"""Which adapter a CodexModel serves: the newest passing run, promoted through status only."""

from __future__ import annotations

import pytest
from codex_api import CodexModel, parse
from codex_api.model import ServedAdapter
from op_examples import example

from codex_operator.promotion import resolve


def model(**adapter):
    body = example("model.yaml", "CodexModel")
    if adapter:
        body["spec"]["adapter"] = adapter
    return parse(CodexModel, body)


def run(name, phase="Succeeded", passed=True, finished="2026-01-01T01:00:00Z", labels=None, revision=None):
    body = example("run.yaml", "CodexTrainingRun")
    body["metadata"]["name"] = name
    body["metadata"]["labels"] = {"codex.dev/model": "codex-demo"} if labels is None else labels
    body["status"] = {"phase": phase, "completionTime": finished, "gates": {"passed": passed},
                      "artifact": {"claimName": "codex-artifacts", "path": f"/{name}/adapter",
                                   "revision": revision or f"rev-{name}"}}
    return body


# The example model has no baseModel: the run's is served, and recorded in servedAdapter.baseModel.
RUN_BASE = {"embedded": "smollm2-135m-instruct", "trustRemoteCode": False}
CASES = [
    ("nothing-yet", [], None),
    ("only-failed-gates", [run("a", phase="Failed", passed=False)], None),
    ("one-passing", [run("a")], "a"),
    ("newest-passing-wins", [run("a", finished="2026-01-01T01:00:00Z"), run("b", finished="2026-01-01T02:00:00Z")],
     "b"),
    ("newer-but-failed-gates-is-not-promoted", [run("a"), run("b", passed=False, finished="2026-01-02T00:00:00Z")],
     "a"),
    ("still-running-is-not-promoted", [run("a"), run("b", phase="Running", finished=None)], "a"),
    ("other-label-ignored", [run("a", labels={"codex.dev/model": "other"})], None),
]


@pytest.mark.parametrize("runs,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_selector_resolution(runs, expected):
    resolution = resolve(model(), runs)
    served = resolution.served_adapter
    if expected is None:
        assert served is None
        assert "codex.dev/model" in resolution.waiting and resolution.base_model is None
    else:
        assert served.to_wire() == {"source": "trainingRun", "trainingRun": expected, "revision": f"rev-{expected}",
                                    "claimName": "codex-artifacts", "path": f"/{expected}/adapter",
                                    "baseModel": RUN_BASE}
        assert resolution.base_model.embedded == "smollm2-135m-instruct"


def test_by_name_and_hub_artifact():
    hub_run = run("hubbed")
    hub_run["status"]["artifact"] = {"hubRepo": "org/adapter", "commitSha": "c0ffee"}
    served = resolve(model(fromTrainingRun={"name": "hubbed"}), [hub_run, run("other")]).served_adapter
    assert served.to_wire() == {"source": "trainingRun", "trainingRun": "hubbed", "revision": "c0ffee",
                                "repo": "org/adapter", "baseModel": RUN_BASE}


def test_deleted_served_run_keeps_serving_when_the_base_is_known():
    current = ServedAdapter(source="trainingRun", training_run="gone", revision="rev-gone")
    explicit_base = example("model.yaml", "CodexModel")
    explicit_base["spec"]["baseModel"] = {"embedded": "tiny-llama"}
    resolution = resolve(parse(CodexModel, explicit_base), [], current=current)
    assert resolution.served_adapter == current and resolution.base_model.embedded == "tiny-llama"


def test_static_adapters_resolve_without_runs():
    body = example("model.yaml", "CodexModel")
    body["spec"]["baseModel"] = {"embedded": "tiny-llama"}
    body["spec"]["adapter"] = {"hub": {"repoId": "org/a", "revision": "v1"}}
    assert resolve(parse(CodexModel, body), []).served_adapter.to_wire() == {"source": "hub", "repo": "org/a",
                                                                             "revision": "v1"}
    body["spec"]["baseModel"] = {"hub": "Qwen/Qwen2.5-Coder-0.5B-Instruct"}
    body["spec"]["adapter"] = {"pvc": {"claimName": "adapters", "path": "/v3"}}
    resolution = resolve(parse(CodexModel, body), [])
    assert resolution.served_adapter.to_wire() == {"source": "pvc", "claimName": "adapters", "path": "/v3"}
    assert resolution.base_model.hub == "Qwen/Qwen2.5-Coder-0.5B-Instruct"


def test_a_deleted_run_keeps_serving_on_the_base_model_servedadapter_recorded():
    served = resolve(model(), [run("a")]).served_adapter
    kept = resolve(model(), [], current=served)
    assert (kept.served_adapter, kept.base_model.embedded, kept.waiting) == (served, "smollm2-135m-instruct", None)
